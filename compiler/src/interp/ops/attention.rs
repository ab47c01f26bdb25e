//! Reference evaluation of the attention ops: ONNX Attention (GQA, masks, caches, soft-capping,
//! the `qk_matmul_output` modes), RotaryEmbedding and the fused `graph.rope`.

use super::*;

/// [B, S, H*D] → [B, H, S, D] (as f64 values).
pub(super) fn heads_first(t: &Tensor, h: usize) -> R<(Vec<f64>, [usize; 4])> {
    match t.rank() {
        4 => Ok((
            t.to_f64_vec(),
            [t.shape[0], t.shape[1], t.shape[2], t.shape[3]],
        )),
        3 => {
            let (b, s, hd) = (t.shape[0], t.shape[1], t.shape[2]);
            if h == 0 || hd % h != 0 {
                return Err(format!("hidden size {hd} is not divisible by {h} heads"));
            }
            let d = hd / h;
            let r = t.clone().reshaped(vec![b, s, h, d]);
            let tr = transpose(&r, &[0, 2, 1, 3])?;
            Ok((tr.to_f64_vec(), [b, h, s, d]))
        }
        r => Err(format!("attention inputs must be 3-D or 4-D, got rank {r}")),
    }
}

pub(super) fn attention(c: &OpCtx) -> R<Vec<Tensor>> {
    let (q, k, v) = (c.req(0)?, c.req(1)?, c.req(2)?);
    let dtype = q.dtype();
    let (qv, [b, hq, sq, d]) = heads_first(q, c.int("q_num_heads", 0).max(0) as usize)?;
    let (mut kv, [_, hkv, skv, dk]) = heads_first(k, c.int("kv_num_heads", 0).max(0) as usize)?;
    let (mut vv, [_, hv, _, dv]) = heads_first(v, c.int("kv_num_heads", 0).max(0) as usize)?;
    if dk != d {
        return Err(format!("q head size {d} differs from k head size {dk}"));
    }
    if k.shape[0] != b || v.shape[0] != b || vv.len() != b * hv * skv * dv {
        return Err("K and V must have Q's batch size and the same sequence length".into());
    }
    let mut total = skv;
    let past_len = c.input(4).map(|p| p.shape.get(2).copied().unwrap_or(0));
    if let (Some(pk), Some(pv)) = (c.input(4), c.input(5)) {
        let cat = |p: &Tensor, cur: Vec<f64>, dd: usize| -> R<Vec<f64>> {
            if p.rank() != 4 || p.shape[0] != b || p.shape[1] != hkv || p.shape[3] != dd {
                return Err(format!("past shape {:?} does not fit", p.shape));
            }
            let pl = p.shape[2];
            let pvv = p.to_f64_vec();
            let h = p.shape[1];
            let mut out = Vec::with_capacity(pvv.len() + cur.len());
            for bh in 0..b * h {
                out.extend_from_slice(&pvv[bh * pl * dd..(bh + 1) * pl * dd]);
                out.extend_from_slice(&cur[bh * skv * dd..(bh + 1) * skv * dd]);
            }
            Ok(out)
        };
        kv = cat(pk, kv, d)?;
        vv = cat(pv, vv, dv)?;
        total = skv + pk.shape[2];
    }
    let scale = c.float("scale").unwrap_or(1.0 / (d as f64).sqrt());
    let softcap = c.float("softcap").unwrap_or(0.0);
    let causal = c.int("is_causal", 0) != 0;
    let mode = c.int("qk_matmul_output_mode", 0);
    // Bias [B, Hq, Sq, total] built from mask, causal and padding rules.
    let nel = b * hq * sq * total;
    let mut bias = vec![0f64; nel];
    if let Some(mask) = c.input(3) {
        let ml = *mask.shape.last().ok_or("mask must have rank >= 1")?;
        let mut mshape = mask.shape.clone();
        let lastd = mshape.len() - 1;
        mshape[lastd] = total;
        let full = bcast_shape(&mshape, &[b, hq, sq, total])?;
        if full != [b, hq, sq, total] {
            return Err(format!(
                "mask shape {:?} does not broadcast to the scores",
                mask.shape
            ));
        }
        let o = offsets(&mshape, &full);
        let mv = mask.to_f64_vec();
        let is_bool = mask.dtype() == ScalarType::I1;
        for (i, bv) in bias.iter_mut().enumerate() {
            // Map the padded index back to the mask's own last extent.
            let col = i % total;
            let lin = o[i];
            let row = lin / total;
            *bv = if col >= ml {
                f64::NEG_INFINITY
            } else {
                let val = mv[row * ml + col];
                if is_bool {
                    if val != 0.0 { 0.0 } else { f64::NEG_INFINITY }
                } else {
                    val
                }
            };
        }
    }
    let nonpad = c.input(6).map(Tensor::to_i64_vec);
    if causal {
        for bi in 0..b {
            let offset: i64 = match (past_len, &nonpad) {
                (Some(p), _) => p as i64,
                (None, Some(np)) => np.get(bi).copied().unwrap_or(0) - sq as i64,
                (None, None) => 0,
            };
            for h in 0..hq {
                for i in 0..sq {
                    for j in 0..total {
                        if j as i64 > i as i64 + offset {
                            bias[((bi * hq + h) * sq + i) * total + j] = f64::NEG_INFINITY;
                        }
                    }
                }
            }
        }
    }
    if let Some(np) = &nonpad {
        for bi in 0..b {
            let lim = np.get(bi).copied().unwrap_or(total as i64);
            for h in 0..hq {
                for i in 0..sq {
                    for j in 0..total {
                        if j as i64 >= lim {
                            bias[((bi * hq + h) * sq + i) * total + j] = f64::NEG_INFINITY;
                        }
                    }
                }
            }
        }
    }
    if hkv == 0 || hq % hkv != 0 || hv != hkv {
        return Err(format!(
            "{hq} query heads cannot share {hkv} key/value heads"
        ));
    }
    let group = hq / hkv;
    let s = scale.sqrt();
    let mut qk = vec![0f64; nel];
    // The scaled product before the soft-cap (`qk_matmul_output_mode = 0`).
    let mut raw = vec![0f64; nel];
    let mut qkb = vec![0f64; nel];
    let mut probs = vec![0f64; nel];
    let mut y = vec![0f64; b * hq * sq * dv];
    let qs: Vec<f64> = qv.iter().map(|&x| round_to(dtype, x * s)).collect();
    let ks: Vec<f64> = kv.iter().map(|&x| round_to(dtype, x * s)).collect();
    for bi in 0..b {
        for h in 0..hq {
            let kh = h / group;
            let qoff = (bi * hq + h) * sq * d;
            let koff = (bi * hkv + kh) * total * d;
            let voff = (bi * hkv + kh) * total * dv;
            let soff = (bi * hq + h) * sq * total;
            gemm_f64(
                sq,
                d,
                total,
                &qs[qoff..],
                d as isize,
                1,
                &ks[koff..],
                1,
                d as isize,
                &mut qk[soff..soff + sq * total],
            );
            for i in 0..sq {
                let row = soff + i * total;
                for j in 0..total {
                    let mut x = round_to(dtype, qk[row + j]);
                    raw[row + j] = x;
                    if softcap > 0.0 {
                        x = softcap * (x / softcap).tanh();
                    }
                    qk[row + j] = x;
                    qkb[row + j] = x + bias[row + j];
                }
                let mx = qkb[row..row + total]
                    .iter()
                    .fold(f64::NEG_INFINITY, |a, &b| a.max(b));
                if mx == f64::NEG_INFINITY {
                    // A fully masked row attends to nothing: zero probabilities, zero output.
                    probs[row..row + total].iter_mut().for_each(|p| *p = 0.0);
                    continue;
                }
                let mut sum = 0.0;
                for j in 0..total {
                    let e = (qkb[row + j] - mx).exp();
                    probs[row + j] = e;
                    sum += e;
                }
                for j in 0..total {
                    probs[row + j] /= sum;
                }
            }
            let yoff = (bi * hq + h) * sq * dv;
            gemm_f64(
                sq,
                total,
                dv,
                &probs[soff..],
                total as isize,
                1,
                &vv[voff..],
                dv as isize,
                1,
                &mut y[yoff..yoff + sq * dv],
            );
        }
    }
    let mut out = Tensor::from_f64_fn(dtype, vec![b, hq, sq, dv], y.len(), |i| y[i]);
    if q.rank() == 3 {
        out = transpose(&out, &[0, 2, 1, 3])?.reshaped(vec![b, sq, hq * dv]);
    }
    let mut res = vec![out];
    let n = c.nresults();
    if n > 1 {
        res.push(Tensor::from_f64_fn(
            c.result_elem(1)?,
            vec![b, hkv, total, d],
            kv.len(),
            |i| kv[i],
        ));
    }
    if n > 2 {
        res.push(Tensor::from_f64_fn(
            c.result_elem(2)?,
            vec![b, hkv, total, dv],
            vv.len(),
            |i| vv[i],
        ));
    }
    if n > 3 {
        let src = match mode {
            0 => &raw,
            2 => &qkb,
            3 => &probs,
            _ => &qk,
        };
        res.push(Tensor::from_f64_fn(
            c.result_elem(3)?,
            vec![b, hq, sq, total],
            nel,
            |i| src[i],
        ));
    }
    Ok(res)
}

pub(super) fn rotary(c: &OpCtx) -> R<Tensor> {
    let x = c.req(0)?;
    let (cos, sin) = (c.req(1)?, c.req(2)?);
    let pos = c.input(3).map(Tensor::to_i64_vec);
    let interleaved = c.int("interleaved", 0) != 0;
    let nh = c.int("num_heads", 0).max(0) as usize;
    // Work in [B, S, H, D].
    let t4 = match x.rank() {
        4 => transpose(x, &[0, 2, 1, 3])?,
        3 => {
            let (b, s, hd) = (x.shape[0], x.shape[1], x.shape[2]);
            if nh == 0 || hd % nh != 0 {
                return Err("3-D input needs num_heads dividing the hidden size".into());
            }
            x.clone().reshaped(vec![b, s, nh, hd / nh])
        }
        r => return Err(format!("input must be 3-D or 4-D, got rank {r}")),
    };
    let [b, s, h, d] = [t4.shape[0], t4.shape[1], t4.shape[2], t4.shape[3]];
    let rd = match c.int("rotary_embedding_dim", 0) {
        0 => d,
        r => r as usize,
    };
    let half = rd / 2;
    if rd > d || rd % 2 != 0 {
        return Err(format!(
            "rotary_embedding_dim {rd} must be even and at most the head size {d}"
        ));
    }
    let v = t4.to_f64_vec();
    let (cv, sv) = (cos.to_f64_vec(), sin.to_f64_vec());
    if cv.len() != sv.len() {
        return Err("cos and sin caches differ in size".into());
    }
    let cache_row = |bi: usize, si: usize| -> R<usize> {
        match &pos {
            Some(p) => {
                let pi = *p
                    .get(bi * s + si)
                    .or_else(|| p.get(si))
                    .ok_or("position_ids too short")?;
                if pi < 0 || (pi as usize + 1) * half > cv.len() {
                    return Err(format!("position id {pi} is out of range"));
                }
                Ok(pi as usize * half)
            }
            None => {
                let r = (bi * s + si) * half;
                if r + half > cv.len() {
                    return Err("cos/sin caches are too small".into());
                }
                Ok(r)
            }
        }
    };
    let mut out = v.clone();
    for bi in 0..b {
        for si in 0..s {
            let row = cache_row(bi, si)?;
            for hi in 0..h {
                let base = ((bi * s + si) * h + hi) * d;
                for j in 0..half {
                    let (i1, i2) = if interleaved {
                        (base + 2 * j, base + 2 * j + 1)
                    } else {
                        (base + j, base + j + half)
                    };
                    let (x1, x2) = (v[i1], v[i2]);
                    let (co, si_) = (cv[row + j], sv[row + j]);
                    out[i1] = round_to(x.dtype(), co * x1) - round_to(x.dtype(), si_ * x2);
                    out[i2] = round_to(x.dtype(), si_ * x1) + round_to(x.dtype(), co * x2);
                }
            }
        }
    }
    let r = Tensor::from_f64_fn(x.dtype(), t4.shape.clone(), out.len(), |i| out[i]);
    Ok(if x.rank() == 4 {
        transpose(&r, &[0, 2, 1, 3])?
    } else {
        r.reshaped(x.shape.clone())
    })
}

/// `graph.rope`: `x·cos + rotate_half(x)·sin` (last axis), rounded like its decomposition.
pub(super) fn rope(c: &OpCtx) -> R<Tensor> {
    let x = c.req(0)?;
    let d = *x.shape.last().ok_or("rope needs a tensor of rank >= 1")?;
    let r = c.int("rotary_dim", d as i64);
    if r <= 0 || r as usize > d || r % 2 != 0 {
        return Err(format!("rope needs an even rotary_dim in 1..={d}, got {r}"));
    }
    let r = r as usize;
    if r == d {
        return rope_full(x, c.req(1)?, c.req(2)?);
    }
    // Partial rotary: the first `r` of every row rotate, the rest pass through.
    let rows = x.len() / d.max(1);
    let mut shape = x.shape.clone();
    if let Some(l) = shape.last_mut() {
        *l = r;
    }
    let head: Vec<usize> = (0..rows)
        .flat_map(|i| (0..r).map(move |j| i * d + j))
        .collect();
    let y = rope_full(&take(x, shape, &head), c.req(1)?, c.req(2)?)?;
    let (xv, yv) = (x.to_f64_vec(), y.to_f64_vec());
    Ok(Tensor::from_f64_fn(
        x.dtype(),
        x.shape.clone(),
        xv.len(),
        |i| {
            let (row, j) = (i / d, i % d);
            if j < r { yv[row * r + j] } else { xv[i] }
        },
    ))
}

/// `x·cos + rotate_half(x)·sin` over the whole last axis.
pub(super) fn rope_full(x: &Tensor, cos: &Tensor, sin: &Tensor) -> R<Tensor> {
    let d = *x.shape.last().ok_or("rope needs a tensor of rank >= 1")?;
    if d % 2 != 0 {
        return Err(format!("rope needs an even last dimension, got {d}"));
    }
    let h = d / 2;
    let v = x.to_f64_vec();
    let rot = Tensor::from_f64_fn(x.dtype(), x.shape.clone(), v.len(), |i| {
        let (row, j) = (i - i % d, i % d);
        if j < h {
            -v[row + j + h]
        } else {
            v[row + j - h]
        }
    });
    let add = |a: f64, b: f64| a + b;
    let mul = |a: f64, b: f64| a * b;
    let imul = |a: i128, b: i128| a.wrapping_mul(b);
    let p1 = arith(x, cos, mul, imul)?;
    let p2 = arith(&rot, sin, mul, imul)?;
    arith(&p1, &p2, add, |a, b| a.wrapping_add(b))
}
