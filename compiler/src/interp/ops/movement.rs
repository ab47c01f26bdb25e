//! Reference evaluation of the data-movement ops: Reshape, Transpose, Concat, Split, Slice, Range,
//! Trilu and Pad (every mode). Each builds a source-index list once and copies elements of any
//! type through it.

use super::*;

pub(super) fn reshape(c: &OpCtx) -> R<Tensor> {
    let x = c.req(0)?;
    let shape: Vec<usize> = match c.input(1) {
        Some(s) => {
            let s = s.to_i64_vec();
            let allowzero = c.int("allowzero", 0) != 0;
            let mut out = Vec::with_capacity(s.len());
            let mut infer = None;
            for (i, &d) in s.iter().enumerate() {
                out.push(match d {
                    -1 => {
                        if infer.replace(i).is_some() {
                            return Err("more than one -1 in the shape".into());
                        }
                        1
                    }
                    0 if !allowzero => {
                        *x.shape.get(i).ok_or("0 in the shape past the input rank")?
                    }
                    d if d < 0 => return Err(format!("invalid extent {d}")),
                    d => d as usize,
                });
            }
            if let Some(i) = infer {
                let known: usize = out
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, &d)| d)
                    .product();
                if known == 0 || x.len() % known != 0 {
                    return Err(format!("cannot reshape {:?} into {s:?}", x.shape));
                }
                out[i] = x.len() / known;
            }
            out
        }
        None => {
            let r = c.m.op(c.op).results[0];
            let t =
                c.m.value_type(r)
                    .as_tensor()
                    .ok_or("result is not a tensor")?;
            t.static_shape()
                .ok_or("reshape without a shape operand needs a static result type")?
                .iter()
                .map(|&d| d as usize)
                .collect()
        }
    };
    if numel(&shape) != Some(x.len()) {
        return Err(format!("cannot reshape {:?} into {shape:?}", x.shape));
    }
    Ok(x.clone().reshaped(shape))
}

pub(super) fn transpose(t: &Tensor, perm: &[usize]) -> R<Tensor> {
    let mut seen = vec![false; t.rank()];
    if perm.len() != t.rank()
        || perm
            .iter()
            .any(|&p| p >= t.rank() || std::mem::replace(&mut seen[p], true))
    {
        return Err(format!(
            "perm {perm:?} is not a permutation of 0..{}",
            t.rank()
        ));
    }
    let shape: Vec<usize> = perm.iter().map(|&p| t.shape[p]).collect();
    let ist = strides(&t.shape);
    let pst: Vec<usize> = perm.iter().map(|&p| ist[p]).collect();
    let idx = strided_indices(&shape, &pst, 0);
    Ok(take(t, shape, &idx))
}

/// Linear source indices for iterating `shape` with per-dim source strides (isize allows negative
/// steps) from `base`.
pub(super) fn strided_indices(shape: &[usize], st: &[usize], base: usize) -> Vec<usize> {
    let st: Vec<isize> = st.iter().map(|&s| s as isize).collect();
    strided_indices_signed(shape, &st, base as isize)
}

pub(super) fn strided_indices_signed(shape: &[usize], st: &[isize], base: isize) -> Vec<usize> {
    let n = numel(shape).unwrap_or(0);
    let mut res = Vec::with_capacity(n);
    if n == 0 {
        return res;
    }
    let r = shape.len();
    let mut idx = vec![0usize; r];
    let mut off = base;
    for _ in 0..n {
        res.push(off as usize);
        for d in (0..r).rev() {
            idx[d] += 1;
            off += st[d];
            if idx[d] < shape[d] {
                break;
            }
            off -= st[d] * idx[d] as isize;
            idx[d] = 0;
        }
    }
    res
}

pub(super) fn concat(ins: &[&Tensor], ax: i64) -> R<Tensor> {
    let first = *ins.first().ok_or("needs operands")?;
    let ax = axis(ax, first.rank())?;
    let mut shape = first.shape.clone();
    shape[ax] = 0;
    for t in ins {
        if t.rank() != first.rank() || t.dtype() != first.dtype() {
            return Err("operands differ in rank or element type".into());
        }
        for d in 0..t.rank() {
            if d != ax && t.shape[d] != first.shape[d] {
                return Err(format!(
                    "operand shapes {:?} and {:?} differ off the axis",
                    t.shape, first.shape
                ));
            }
        }
        shape[ax] += t.shape[ax];
    }
    let outer: usize = shape[..ax].iter().product();
    let inner: usize = shape[ax + 1..].iter().product();
    fn go<T: Elem>(ins: &[&Tensor], outer: usize, inner: usize, ax: usize) -> Vec<T> {
        let mut out = Vec::new();
        for o in 0..outer {
            for t in ins {
                let v = t.as_slice::<T>().unwrap_or(&[]);
                let chunk = t.shape[ax] * inner;
                out.extend_from_slice(&v[o * chunk..(o + 1) * chunk]);
            }
        }
        out
    }
    let data = map_data!(&first.data, _v => go(ins, outer, inner, ax));
    Ok(Tensor { shape, data })
}

pub(super) fn split(c: &OpCtx) -> R<Vec<Tensor>> {
    let x = c.req(0)?;
    let ax = axis(c.int("axis", 0), x.rank())?;
    let n = c.nresults();
    let total = x.shape[ax];
    let sizes: Vec<usize> = match c.ints_or_input("split", 1) {
        Some(s) => s.iter().map(|&v| v.max(0) as usize).collect(),
        None => {
            let chunk = total.div_ceil(n.max(1));
            (0..n)
                .map(|i| chunk.min(total.saturating_sub(i * chunk)))
                .collect()
        }
    };
    if sizes.len() != n || sizes.iter().sum::<usize>() != total {
        return Err(format!(
            "split sizes {sizes:?} do not cover extent {total} in {n} parts"
        ));
    }
    let st = strides(&x.shape);
    let mut start = 0;
    let mut out = vec![];
    for s in sizes {
        let mut shape = x.shape.clone();
        shape[ax] = s;
        let idx = strided_indices(&shape, &st, start * st[ax]);
        out.push(take(x, shape, &idx));
        start += s;
    }
    Ok(out)
}

pub(super) fn slice(c: &OpCtx) -> R<Tensor> {
    let x = c.req(0)?;
    let starts = c.req(1)?.to_i64_vec();
    let ends = c.req(2)?.to_i64_vec();
    let axes = c
        .input(3)
        .map(Tensor::to_i64_vec)
        .unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = c
        .input(4)
        .map(Tensor::to_i64_vec)
        .unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts/ends/axes/steps lengths differ".into());
    }
    let st = strides(&x.shape);
    let mut shape = x.shape.clone();
    let mut sst: Vec<isize> = st.iter().map(|&s| s as isize).collect();
    let mut base: isize = 0;
    for i in 0..starts.len() {
        let a = axis(axes[i], x.rank())?;
        let n = x.shape[a] as i64;
        let len = crate::passes::shape_inference::slice_len(n, starts[i], ends[i], steps[i])?;
        let (s, _) = crate::passes::shape_inference::slice_bounds(n, starts[i], ends[i], steps[i])?;
        shape[a] = len as usize;
        if len > 0 {
            base += s as isize * st[a] as isize;
        }
        sst[a] = st[a] as isize * steps[i] as isize;
    }
    let idx = strided_indices_signed(&shape, &sst, base);
    Ok(take(x, shape, &idx))
}

pub(super) fn range(s: &Tensor, l: &Tensor, d: &Tensor) -> R<Tensor> {
    if s.len() != 1 || l.len() != 1 || d.len() != 1 {
        return Err("range operands must be scalars".into());
    }
    if s.dtype().is_float() {
        let (a, b, dl) = (s.get_f64(0), l.get_f64(0), d.get_f64(0));
        if dl == 0.0 {
            return Err("delta is zero".into());
        }
        let n = ((b - a) / dl).ceil().max(0.0) as usize;
        check_numel(&[n])?;
        return Ok(Tensor::from_f64_fn(s.dtype(), vec![n], n, |i| {
            a + i as f64 * dl
        }));
    }
    let (a, b, dl) = (s.get_i128(0), l.get_i128(0), d.get_i128(0));
    if dl == 0 {
        return Err("delta is zero".into());
    }
    let diff = b - a;
    let n = (diff / dl
        + if diff % dl != 0 && (diff > 0) == (dl > 0) {
            1
        } else {
            0
        })
    .max(0) as usize;
    check_numel(&[n])?;
    let z = crate::interp::tensor::zeros(s.dtype(), vec![]);
    let data =
        map_data!(&z.data, _v => (0..n).map(|i| Elem::from_i128(a + i as i128 * dl)).collect());
    Ok(Tensor {
        shape: vec![n],
        data,
    })
}

pub(super) fn trilu(x: &Tensor, k: Option<&Tensor>, upper: bool) -> R<Tensor> {
    if x.rank() < 2 {
        return Err("input rank must be >= 2".into());
    }
    let k = k
        .map(|t| t.to_i64_vec().first().copied().unwrap_or(0))
        .unwrap_or(0);
    let (rows, cols) = (x.shape[x.rank() - 2], x.shape[x.rank() - 1]);
    let keep = |i: usize| {
        let (r, c) = (((i / cols) % rows.max(1)) as i64, (i % cols.max(1)) as i64);
        if upper { c - r >= k } else { c - r <= k }
    };
    fn go<T: Elem>(v: &[T], keep: &dyn Fn(usize) -> bool) -> Vec<T> {
        v.iter()
            .enumerate()
            .map(|(i, &a)| if keep(i) { a } else { T::default() })
            .collect()
    }
    Ok(Tensor {
        shape: x.shape.clone(),
        data: map_data!(&x.data, v => go(v, &keep)),
    })
}

pub(super) fn pad(c: &OpCtx) -> R<Tensor> {
    let x = c.req(0)?;
    let pads = c.req(1)?.to_i64_vec();
    let axes: Vec<usize> = match c.input(3) {
        Some(a) => a
            .to_i64_vec()
            .iter()
            .map(|&v| axis(v, x.rank()))
            .collect::<R<_>>()?,
        None => (0..x.rank()).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err("'pads' must hold a begin and an end count per axis".into());
    }
    let mut begin = vec![0i64; x.rank()];
    let mut shape = x.shape.clone();
    for (i, &a) in axes.iter().enumerate() {
        begin[a] = pads[i];
        let n = x.shape[a] as i64 + pads[i] + pads[i + axes.len()];
        if n < 0 {
            return Err("pads crop more than the extent".into());
        }
        shape[a] = n as usize;
    }
    let fill = match c.input(2) {
        Some(v) if v.len() == 1 => v.clone(),
        _ => crate::interp::tensor::zeros(x.dtype(), vec![]),
    };
    if fill.dtype() != x.dtype() {
        return Err("pad value type differs from the input".into());
    }
    let mode = c
        .attr("mode")
        .and_then(Attribute::as_str)
        .unwrap_or("constant");
    if !graph::PAD_MODES.contains(&mode) {
        return Err(format!("unknown pad mode '{mode}'"));
    }
    // Per axis, the kept (cropped) input range `lo..lo + kept`.
    let mut lo = vec![0i64; x.rank()];
    let mut kept = vec![0i64; x.rank()];
    for d in 0..x.rank() {
        lo[d] = (-begin[d]).max(0);
        let n = x.shape[d] as i64;
        let end = shape[d] as i64 - n - begin[d];
        kept[d] = n - lo[d] - (-end).max(0);
        if mode != "constant" && kept[d] <= 0 && shape[d] > 0 {
            return Err(format!("{mode} padding of an axis with no element"));
        }
    }
    let st = strides(&x.shape);
    let n = check_numel(&shape)?;
    let ost = strides(&shape);
    let mut src: Vec<Option<usize>> = Vec::with_capacity(n);
    for o in 0..n {
        let mut off = 0usize;
        let mut inside = true;
        for d in 0..shape.len() {
            let out = ((o / ost[d]) % shape[d].max(1)) as i64;
            let at = out - begin[d].max(0);
            match graph::pad_source(mode, at, kept[d]) {
                Some(j) => off += (lo[d] + j) as usize * st[d],
                None => {
                    inside = false;
                    break;
                }
            }
        }
        src.push(inside.then_some(off));
    }
    fn go<T: Elem>(v: &[T], f: T, src: &[Option<usize>]) -> Vec<T> {
        src.iter().map(|s| s.map_or(f, |i| v[i])).collect()
    }
    let data = zip_same!(&x.data, &fill.data, v, f => go(v, f[0], &src));
    Ok(Tensor { shape, data })
}
