//! Reference evaluation of the linear-algebra ops: MatMul (batched, broadcasting), Gemm, the
//! fused `matmul_epilogue` and MatMulInteger, on f64 (f32 inputs through an f32 GEMM that rounds
//! as onnxruntime's does).

use super::*;

/// f32/f64 GEMM on contiguous row-major matrices: `c[m×n] = a[m×k] · b[k×n]` with strides.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_f64(
    m: usize,
    k: usize,
    n: usize,
    a: &[f64],
    rsa: isize,
    csa: isize,
    b: &[f64],
    rsb: isize,
    csb: isize,
    c: &mut [f64],
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    // SAFETY: the slices hold at least the strided extents described (checked by callers building them
    // from the tensor shapes); `c` is exactly m×n row-major.
    unsafe {
        matrixmultiply::dgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_f32(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    rsa: isize,
    csa: isize,
    b: &[f32],
    rsb: isize,
    csb: isize,
    c: &mut [f32],
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    // SAFETY: as in `gemm_f64`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Batched matmul in f32 (f32 inputs) or f64 (everything else) with NumPy promotion of 1-D operands.
pub(super) fn matmul(a: &Tensor, b: &Tensor) -> R<Tensor> {
    if a.rank() == 0 || b.rank() == 0 {
        return Err("matmul operands must have rank >= 1".into());
    }
    if a.dtype() != b.dtype() {
        return Err("operand element types differ".into());
    }
    let mut ash = a.shape.clone();
    let mut bsh = b.shape.clone();
    let (a1, b1) = (ash.len() == 1, bsh.len() == 1);
    if a1 {
        ash.insert(0, 1);
    }
    if b1 {
        bsh.push(1);
    }
    let (m, k) = (ash[ash.len() - 2], ash[ash.len() - 1]);
    let (k2, n) = (bsh[bsh.len() - 2], bsh[bsh.len() - 1]);
    if k != k2 {
        return Err(format!("inner dimensions do not match: {k} vs {k2}"));
    }
    let batch = bcast_shape(&ash[..ash.len() - 2], &bsh[..bsh.len() - 2])?;
    let oa = offsets(&ash[..ash.len() - 2], &batch);
    let ob = offsets(&bsh[..bsh.len() - 2], &batch);
    let mut out_shape = batch.clone();
    if !a1 {
        out_shape.push(m);
    }
    if !b1 {
        out_shape.push(n);
    }
    let nb = oa.len();
    if a.dtype() == ScalarType::F32 {
        let (x, y) = (
            a.as_slice::<f32>().unwrap_or(&[]),
            b.as_slice::<f32>().unwrap_or(&[]),
        );
        let mut out = vec![0f32; nb * m * n];
        for i in 0..nb {
            let (xa, yb) = (&x[oa[i] * m * k..], &y[ob[i] * k * n..]);
            gemm_f32(
                m,
                k,
                n,
                xa,
                k as isize,
                1,
                yb,
                n as isize,
                1,
                &mut out[i * m * n..(i + 1) * m * n],
            );
        }
        return Ok(Tensor::new(out_shape, out));
    }
    if a.dtype().is_float() {
        let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
        let mut out = vec![0f64; nb * m * n];
        for i in 0..nb {
            let (xa, yb) = (&x[oa[i] * m * k..], &y[ob[i] * k * n..]);
            gemm_f64(
                m,
                k,
                n,
                xa,
                k as isize,
                1,
                yb,
                n as isize,
                1,
                &mut out[i * m * n..(i + 1) * m * n],
            );
        }
        return Ok(Tensor::from_f64_fn(a.dtype(), out_shape, out.len(), |i| {
            out[i]
        }));
    }
    let mut out = vec![0i128; nb * m * n];
    for bi in 0..nb {
        for i in 0..m {
            for j in 0..n {
                let mut s: i128 = 0;
                for p in 0..k {
                    s = s.wrapping_add(
                        a.get_i128(oa[bi] * m * k + i * k + p)
                            .wrapping_mul(b.get_i128(ob[bi] * k * n + p * n + j)),
                    );
                }
                out[bi * m * n + i * n + j] = s;
            }
        }
    }
    let z = crate::interp::tensor::zeros(a.dtype(), vec![]);
    let data = map_data!(&z.data, _v => out.iter().map(|&x| Elem::from_i128(x)).collect());
    Ok(Tensor {
        shape: out_shape,
        data,
    })
}

pub(super) fn gemm(c: &OpCtx) -> R<Tensor> {
    let (a, b) = (c.req(0)?, c.req(1)?);
    if a.rank() != 2 || b.rank() != 2 {
        return Err("Gemm operands must be 2-D".into());
    }
    let (ta, tb) = (c.int("transA", 0) != 0, c.int("transB", 0) != 0);
    let (m, k) = if ta {
        (a.shape[1], a.shape[0])
    } else {
        (a.shape[0], a.shape[1])
    };
    let (k2, n) = if tb {
        (b.shape[1], b.shape[0])
    } else {
        (b.shape[0], b.shape[1])
    };
    if k != k2 {
        return Err(format!("inner dimensions do not match: {k} vs {k2}"));
    }
    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    let alpha = c.float("alpha").unwrap_or(1.0);
    let beta = c.float("beta").unwrap_or(1.0);
    let mut acc = vec![0f64; m * n];
    let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
    if a.dtype().is_float() {
        gemm_f64(m, k, n, &x, rsa, csa, &y, rsb, csb, &mut acc);
    } else {
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for p in 0..k {
                    s += x[i * rsa as usize + p * csa as usize]
                        * y[p * rsb as usize + j * csb as usize];
                }
                acc[i * n + j] = s;
            }
        }
    }
    let shape = vec![m, n];
    let bias = match c.input(2) {
        Some(t) => {
            let o = offsets(&t.shape, &bcast_shape(&t.shape, &shape)?);
            if o.len() != m * n {
                return Err("Gemm C does not broadcast to [M, N]".into());
            }
            Some((t.to_f64_vec(), o))
        }
        None => None,
    };
    Ok(Tensor::from_f64_fn(a.dtype(), shape, m * n, |i| {
        let mut v = alpha * acc[i];
        if let Some((bv, o)) = &bias {
            v += beta * bv[o[i]];
        }
        v
    }))
}

/// `graph.matmul_epilogue`: `act(a · b + bias) + res` as the kernel computes it — the product
/// accumulated in f32 (16-bit inputs widened to f32), bias, activation and residual added in
/// f64, one rounding to the result type.
pub(super) fn matmul_epilogue(c: &OpCtx) -> R<Tensor> {
    let to = c.result_elem(0)?;
    let residual = c.attr("residual").and_then(Attribute::as_bool) == Some(true);
    let ins = c.ins;
    let (bias, res) = match (residual, ins.len()) {
        (false, 2) => (None, None),
        (false, 3) => (Some(ins[2]), None),
        (true, 3) => (None, Some(ins[2])),
        (true, 4) => (Some(ins[2]), Some(ins[3])),
        (_, n) => return Err(format!("matmul_epilogue takes 2 to 4 operands, got {n}")),
    };
    let (a, b) = (c.req(0)?, c.req(1)?);
    if !a.dtype().is_float() {
        return Err(format!(
            "matmul_epilogue needs float operands, got {}",
            a.dtype()
        ));
    }
    let f32s = |t: &Tensor| match t.dtype() {
        ScalarType::F32 | ScalarType::F64 => t.clone(),
        _ => t.cast(ScalarType::F32, false),
    };
    let wide = |t: &Tensor| t.cast(ScalarType::F64, false);
    let mut y = wide(&matmul(&f32s(a), &f32s(b))?);
    let add = |x: &Tensor, o: &Tensor| arith(x, &wide(o), |p, q| p + q, |p, q| p + q);
    if let Some(bias) = bias {
        y = add(&y, bias)?;
    }
    let act: fn(f64) -> f64 = match c.attr("activation").and_then(Attribute::as_str) {
        None | Some("none") => |v| v,
        Some("relu") => |v| if v > 0.0 || v.is_nan() { v } else { 0.0 },
        Some("gelu") => |v| 0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2)),
        Some("gelu_tanh") => |v| {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * v * (1.0 + (k * (v + 0.044715 * v * v * v)).tanh())
        },
        Some("silu") => |v| v * sigmoid(v),
        Some(other) => return Err(format!("unknown activation {other:?}")),
    };
    y = unary(&y, act, |v| v);
    if let Some(res) = res {
        y = add(&y, res)?;
    }
    Ok(y.cast(to, false))
}

pub(super) fn matmul_integer(c: &OpCtx) -> R<Tensor> {
    let (a, b) = (c.req(0)?, c.req(1)?);
    let zp = |t: Option<&Tensor>| t.map(|z| z.to_i64_vec()).unwrap_or_else(|| vec![0]);
    let (za, zb) = (zp(c.input(2)), zp(c.input(3)));
    let k = *a.shape.last().ok_or("rank-0 operand")?;
    let n = *b.shape.last().ok_or("rank-0 operand")?;
    let rows = a.len() / k.max(1);
    let av: Vec<i64> = a
        .to_i64_vec()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            v - if za.len() == 1 {
                za[0]
            } else {
                za[(i / k.max(1)) % za.len().max(1)]
            }
        })
        .collect();
    let _ = rows;
    let bv: Vec<i64> = b
        .to_i64_vec()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            v - if zb.len() == 1 {
                zb[0]
            } else {
                zb[(i % n.max(1)) % zb.len().max(1)]
            }
        })
        .collect();
    let (ta, tb) = (
        Tensor::new(a.shape.clone(), av),
        Tensor::new(b.shape.clone(), bv),
    );
    let r = matmul(&ta, &tb)?;
    Ok(r.cast(ScalarType::I32, false))
}
