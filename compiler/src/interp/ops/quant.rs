//! Reference evaluation of QuantizeLinear / DequantizeLinear: per tensor, per axis and blocked,
//! rounding half to even, saturating (or NaN for non-saturating f8).

use super::*;

/// For every element of `x`, the index into a scale/zero-point tensor (scalar, per-axis or blocked).
pub(super) fn quant_index(x: &Tensor, sc: &Tensor, ax: i64, block: i64) -> R<Vec<usize>> {
    let n = x.len();
    if sc.len() == 1 {
        return Ok(vec![0; n]);
    }
    let a = axis(ax, x.rank())?;
    let st = strides(&x.shape);
    if sc.rank() == 1 && block <= 0 {
        if sc.shape[0] != x.shape[a] {
            return Err("per-axis scale length does not match the axis".into());
        }
        return Ok((0..n).map(|i| (i / st[a]) % x.shape[a]).collect());
    }
    if sc.rank() != x.rank() || block <= 0 {
        return Err("scale shape does not fit the input".into());
    }
    let sst = strides(&sc.shape);
    Ok((0..n)
        .map(|i| {
            (0..x.rank())
                .map(|dd| {
                    let c = (i / st[dd]) % x.shape[dd];
                    let c = if dd == a { c / block as usize } else { c };
                    c.min(sc.shape[dd].saturating_sub(1)) * sst[dd]
                })
                .sum()
        })
        .collect())
}

pub(super) fn quantize(c: &OpCtx) -> R<Tensor> {
    let (x, sc) = (c.req(0)?, c.req(1)?);
    let zp = c.input(2);
    let to = c.result_elem(0)?;
    let idx = quant_index(x, sc, c.int("axis", 1), c.int("block_size", 0))?;
    let (xv, sv) = (x.to_f64_vec(), sc.to_f64_vec());
    let zv = zp.map(Tensor::to_f64_vec);
    if zv.as_ref().is_some_and(|z| z.len() != sv.len()) {
        return Err("zero point and scale differ in size".into());
    }
    let sat = c.int("saturate", 1) != 0;
    if to == ScalarType::F8E4M3FN {
        let v: Vec<F8E4M3> = (0..xv.len())
            .map(|i| {
                let s = round_to(ScalarType::F32, xv[i] / sv[idx[i]]);
                let z = zv.as_ref().map_or(0.0, |z| z[idx[i]]);
                F8E4M3::from_f64(s + z, sat)
            })
            .collect();
        return Ok(Tensor::new(x.shape.clone(), v));
    }
    let (lo, hi) = match to {
        ScalarType::I8 => (-128.0, 127.0),
        ScalarType::UI8 => (0.0, 255.0),
        ScalarType::I16 => (-32768.0, 32767.0),
        ScalarType::UI16 => (0.0, 65535.0),
        ScalarType::I32 => (i32::MIN as f64, i32::MAX as f64),
        t => return Err(format!("unsupported quantized type {t}")),
    };
    Ok(Tensor::from_f64_fn(to, x.shape.clone(), xv.len(), |i| {
        let q = round_to(ScalarType::F32, xv[i] / sv[idx[i]]).round_ties_even();
        (q + zv.as_ref().map_or(0.0, |z| z[idx[i]])).clamp(lo, hi)
    }))
}

pub(super) fn dequantize(c: &OpCtx) -> R<Tensor> {
    let (x, sc) = (c.req(0)?, c.req(1)?);
    let to = c.result_elem(0)?;
    let idx = quant_index(x, sc, c.int("axis", 1), c.int("block_size", 0))?;
    let (xv, sv) = (x.to_f64_vec(), sc.to_f64_vec());
    let zv = c.input(2).map(Tensor::to_f64_vec);
    if zv.as_ref().is_some_and(|z| z.len() != sv.len()) {
        return Err("zero point and scale differ in size".into());
    }
    Ok(Tensor::from_f64_fn(to, x.shape.clone(), xv.len(), |i| {
        round_to(to, xv[i] - zv.as_ref().map_or(0.0, |z| z[idx[i]])) * sv[idx[i]]
    }))
}
