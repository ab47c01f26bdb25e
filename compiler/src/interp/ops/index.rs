//! Reference evaluation of the indexing ops: Gather, GatherElements, GatherND, ScatterND, TopK
//! and OneHot. An index outside its axis is an error (ONNX leaves it undefined).

use super::*;

pub(super) fn gather(x: &Tensor, idx: &Tensor, ax: i64) -> R<Tensor> {
    let ax = axis(ax, x.rank())?;
    let (outer, n, inner) = split3(&x.shape, ax);
    let ind = idx.to_i64_vec();
    let mut shape = x.shape[..ax].to_vec();
    shape.extend_from_slice(&idx.shape);
    shape.extend_from_slice(&x.shape[ax + 1..]);
    let mut src = Vec::with_capacity(outer * ind.len() * inner);
    for o in 0..outer {
        for &i in &ind {
            let i = if i < 0 { i + n as i64 } else { i };
            if i < 0 || i >= n as i64 {
                return Err(format!("index {i} is out of range for extent {n}"));
            }
            let b = o * n * inner + i as usize * inner;
            src.extend(b..b + inner);
        }
    }
    Ok(take(x, shape, &src))
}

/// TopK along `axis`: values and i64 indices, the `k` largest (smallest) first, equal values by
/// lower index (ONNX's order).
pub(super) fn top_k(x: &Tensor, k: i64, axis: i64, largest: bool) -> R<Vec<Tensor>> {
    let a = crate::dialects::normalize_axis(axis, x.rank())?;
    let n = x.shape[a];
    if k < 0 || k as usize > n {
        return Err(format!("k = {k} is outside 0..={n}"));
    }
    let k = k as usize;
    let outer: usize = x.shape[..a].iter().product();
    let inner: usize = x.shape[a + 1..].iter().product();
    let v = x.to_f64_vec();
    let mut shape = x.shape.clone();
    shape[a] = k;
    let mut src = vec![0usize; outer * k * inner];
    let mut idx = vec![0i64; outer * k * inner];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * n + j) * inner + i;
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&p, &q| {
                let (vp, vq) = (v[at(p)], v[at(q)]);
                let c = if largest {
                    vq.total_cmp(&vp)
                } else {
                    vp.total_cmp(&vq)
                };
                c.then(p.cmp(&q))
            });
            for (r, &j) in order.iter().take(k).enumerate() {
                let dst = (o * k + r) * inner + i;
                src[dst] = at(j);
                idx[dst] = j as i64;
            }
        }
    }
    Ok(vec![take(x, shape.clone(), &src), Tensor::new(shape, idx)])
}

pub(super) fn one_hot(idx: &Tensor, depth: &Tensor, values: &Tensor, axis: i64) -> R<Tensor> {
    let d = depth.to_f64_vec();
    let [d] = d[..] else {
        return Err("depth must hold one value".into());
    };
    if values.len() != 2 || d < 1.0 {
        return Err("values must hold [off, on] and depth be at least 1".into());
    }
    let d = d as usize;
    let a = crate::dialects::normalize_axis(axis, idx.rank() + 1)?;
    let mut shape = idx.shape.clone();
    shape.insert(a, d);
    let outer: usize = idx.shape[..a].iter().product();
    let inner: usize = idx.shape[a..].iter().product();
    let iv = idx.to_i64_vec();
    let mut src = vec![0usize; outer * d * inner];
    for o in 0..outer {
        for j in 0..d {
            for i in 0..inner {
                let mut x = iv[o * inner + i];
                if x < 0 {
                    x += d as i64;
                }
                src[(o * d + j) * inner + i] = usize::from(x == j as i64);
            }
        }
    }
    Ok(take(values, shape, &src))
}

/// The element offsets ScatterND writes, in update order: for each index tuple, the `inner`
/// elements of its slice (`inner` is the data's size past the tuple's `k` dims).
pub fn scatter_nd_offsets(shape: &[usize], idx: &[i64], k: usize) -> R<Vec<usize>> {
    if k == 0 || k > shape.len() {
        return Err(format!(
            "index tuples of {k} components for data of rank {}",
            shape.len()
        ));
    }
    let st = strides(shape);
    let inner: usize = shape[k..].iter().product();
    let mut out = Vec::with_capacity(idx.len() / k * inner);
    for tuple in idx.chunks(k) {
        let mut off = 0;
        for (d, &v) in tuple.iter().enumerate() {
            let n = shape[d] as i64;
            let v = if v < 0 { v + n } else { v };
            if v < 0 || v >= n {
                return Err(format!("index {v} is out of range for extent {n}"));
            }
            off += v as usize * st[d];
        }
        out.extend(off..off + inner);
    }
    Ok(out)
}

pub(super) fn scatter_nd(x: &Tensor, idx: &Tensor, u: &Tensor, reduction: &str) -> R<Tensor> {
    let k = *idx.shape.last().ok_or("indices must have rank >= 1")?;
    let offs = scatter_nd_offsets(&x.shape, &idx.to_i64_vec(), k)?;
    if offs.len() != u.len() {
        return Err(format!(
            "updates have {} elements, the indexed slices {}",
            u.len(),
            offs.len()
        ));
    }
    if reduction == "none" {
        // Exact for every type: each element from the data or from its last update.
        let n = x.len();
        let mut src: Vec<usize> = (0..n).collect();
        for (j, &o) in offs.iter().enumerate() {
            src[o] = n + j;
        }
        let flat = |t: &Tensor| Tensor {
            shape: vec![t.len()],
            data: t.data.clone(),
        };
        let both = concat(&[&flat(x), &flat(u)], 0)?;
        return Ok(take(&both, x.shape.clone(), &src));
    }
    let combine: fn(f64, f64) -> f64 = match reduction {
        "add" => |a, b| a + b,
        "mul" => |a, b| a * b,
        "max" => f64::max,
        "min" => f64::min,
        r => {
            return Err(format!(
                "reduction `{r}` is not one of none, add, mul, max, min"
            ));
        }
    };
    let mut vals = x.to_f64_vec();
    let uv = u.to_f64_vec();
    for (&o, &b) in offs.iter().zip(&uv) {
        vals[o] = combine(vals[o], b);
    }
    Ok(Tensor::from_f64_fn(
        x.dtype(),
        x.shape.clone(),
        vals.len(),
        |i| vals[i],
    ))
}

pub(super) fn gather_elements(x: &Tensor, idx: &Tensor, axis: i64) -> R<Tensor> {
    if idx.rank() != x.rank() {
        return Err("indices must have the data's rank".into());
    }
    let r = x.rank() as i64;
    if axis < -r || axis >= r {
        return Err(format!("axis {axis} is out of range for rank {r}"));
    }
    let a = if axis < 0 { axis + r } else { axis } as usize;
    let (xs, is) = (strides(&x.shape), strides(&idx.shape));
    let n = x.shape[a] as i64;
    let mut src = Vec::with_capacity(idx.len());
    for (flat, v) in idx.to_i64_vec().into_iter().enumerate() {
        let v = if v < 0 { v + n } else { v };
        if v < 0 || v >= n {
            return Err(format!("index {v} is out of range for extent {n}"));
        }
        let mut off = 0;
        for d in 0..idx.rank() {
            let c = if d == a {
                v as usize
            } else {
                flat / is[d] % idx.shape[d]
            };
            if d != a && c >= x.shape[d] {
                return Err(format!(
                    "indices dim {d} ({}) is past the data's ({})",
                    idx.shape[d], x.shape[d]
                ));
            }
            off += c * xs[d];
        }
        src.push(off);
    }
    Ok(take(x, idx.shape.clone(), &src))
}

pub(super) fn gather_nd(x: &Tensor, idx: &Tensor, b: i64) -> R<Tensor> {
    let b = b.max(0) as usize;
    let q = *idx.shape.last().ok_or("indices must have rank >= 1")?;
    if b + q > x.rank() || b > idx.rank() {
        return Err("indices are deeper than the data".into());
    }
    if idx.rank() < b + 1 || idx.shape[..b] != x.shape[..b] {
        return Err("indices batch dims must equal the data's".into());
    }
    let ind = idx.to_i64_vec();
    let st = strides(&x.shape);
    let batch: usize = x.shape[..b].iter().product();
    let inner: usize = x.shape[b + q..].iter().product();
    let per_batch_idx: usize = idx.shape[b..idx.rank() - 1].iter().product();
    let mut shape = idx.shape[..idx.rank() - 1].to_vec();
    shape.extend_from_slice(&x.shape[b + q..]);
    let batch_stride: usize = x.shape[b..].iter().product();
    let mut src = vec![];
    for bi in 0..batch {
        for j in 0..per_batch_idx {
            let tuple = &ind[(bi * per_batch_idx + j) * q..(bi * per_batch_idx + j + 1) * q];
            let mut off = bi * batch_stride;
            for (k, &v) in tuple.iter().enumerate() {
                let n = x.shape[b + k] as i64;
                let v = if v < 0 { v + n } else { v };
                if v < 0 || v >= n {
                    return Err(format!("index {v} is out of range for extent {n}"));
                }
                off += v as usize * st[b + k];
            }
            src.extend(off..off + inner);
        }
    }
    Ok(take(x, shape, &src))
}
