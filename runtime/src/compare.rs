//! Comparing an output with its reference — the one place the toolchain's tolerances live.
//!
//! An element passes when `|got − expected| ≤ atol + rtol·|expected|`, where
//! `atol = scale_atol · max|expected|` (so the absolute slack follows the output's scale); NaN
//! matches NaN and infinities must match exactly. A tolerance may also demand a minimum cosine
//! similarity over the whole tensor. Every comparison prints the tolerance it used.
//!
//! When both tensors have integer element types (i8, u8 — also used for booleans —, i32, i64) they
//! are compared exactly as i64: any difference is a mismatch (going through f32 would hide
//! differences above 2²⁴).

use crate::Tensor;
use std::fmt;

/// How close an output must be to its reference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub name: &'static str,
    pub rtol: f64,
    pub scale_atol: f64,
    pub min_cosine: Option<f64>,
}

impl Tolerance {
    /// f32 storage and arithmetic: results match the reference to about 1e-5.
    pub const FP32: Tolerance = Tolerance {
        name: "fp32",
        rtol: 1e-5,
        scale_atol: 1e-5,
        min_cosine: None,
    };
    /// bf16 storage with f32 accumulation.
    pub const BF16: Tolerance = Tolerance {
        name: "bf16",
        rtol: 2e-2,
        scale_atol: 2e-2,
        min_cosine: Some(0.999),
    };
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: |d| <= {:e}*max|ref| + {:e}*|ref|",
            self.name, self.scale_atol, self.rtol
        )?;
        if let Some(c) = self.min_cosine {
            write!(f, ", cosine >= {c}")?;
        }
        Ok(())
    }
}

/// The outcome of comparing one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub name: String,
    pub elements: u64,
    pub max_abs: f64,
    pub max_rel: f64,
    pub cosine: f64,
    pub mismatches: u64,
    /// Multi-index, value and reference of the element furthest outside (or closest to) tolerance.
    pub worst_index: Vec<u64>,
    pub worst_got: f64,
    pub worst_expected: f64,
    pub tolerance: Tolerance,
    pub pass: bool,
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {} elements, max abs {:.3e}, max rel {:.3e}, cosine {:.6}",
            if self.pass { "ok  " } else { "FAIL" },
            self.name,
            self.elements,
            self.max_abs,
            self.max_rel,
            self.cosine
        )?;
        if !self.pass {
            write!(
                f,
                ", {} outside; worst at {:?}: got {} expected {}",
                self.mismatches,
                self.worst_index,
                value(self.worst_got),
                value(self.worst_expected)
            )?;
        }
        write!(f, " [{}]", self.tolerance)
    }
}

fn unravel(mut i: u64, shape: &[u64]) -> Vec<u64> {
    let mut idx = vec![0; shape.len()];
    for (d, &n) in shape.iter().enumerate().rev() {
        if n > 0 {
            idx[d] = i % n;
            i /= n;
        }
    }
    idx
}

/// `x` as its shortest round-trip spelling, in exponent form past 1e16 (an f64 reference can
/// be 1e300).
fn value(x: f64) -> String {
    if x.is_finite() && x.abs() >= 1e16 {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// Compares `got` with `expected` (same shape; element types may differ: both are read as f64,
/// so an f64 reference past f32's range is not rounded to an infinity that hides a mismatch).
pub fn compare(
    name: &str,
    got: &Tensor,
    expected: &Tensor,
    tol: Tolerance,
) -> Result<Comparison, String> {
    if got.shape != expected.shape {
        return Err(format!(
            "{name}: shape {:?} does not match the reference's {:?}",
            got.shape, expected.shape
        ));
    }
    if let (Some(g), Some(e)) = (got.to_i128(), expected.to_i128()) {
        return Ok(compare_ints(name, &got.shape, &g, &e, tol));
    }
    let g = got.to_f64();
    let e = expected.to_f64();
    let scale = e
        .iter()
        .filter(|v| v.is_finite())
        .fold(0f64, |m, v| m.max(v.abs()));
    let atol = tol.scale_atol * scale;
    let (mut max_abs, mut max_rel, mut mismatches) = (0f64, 0f64, 0u64);
    let (mut dot, mut ng, mut ne) = (0f64, 0f64, 0f64);
    let (mut worst, mut worst_excess) = (0usize, f64::NEG_INFINITY);
    let mut unmatched_special = false;
    for (i, (&a, &b)) in g.iter().zip(&e).enumerate() {
        let ok_special = (a.is_nan() && b.is_nan()) || (a.is_infinite() && a == b);
        let d = if ok_special { 0.0 } else { (a - b).abs() };
        let d = if d.is_nan() { f64::INFINITY } else { d };
        let allowed = atol + tol.rtol * b.abs();
        if d > allowed {
            mismatches += 1;
        }
        if d - allowed > worst_excess {
            worst_excess = d - allowed;
            worst = i;
        }
        max_abs = max_abs.max(d);
        if b != 0.0 {
            max_rel = max_rel.max(d / b.abs());
        }
        if a.is_finite() && b.is_finite() {
            dot += a * b;
            ng += a * a;
            ne += b * b;
        } else if !ok_special {
            unmatched_special = true;
        }
    }
    // A NaN or infinity the reference does not have leaves the cosine undefined (NaN), never 1.
    let cosine = if unmatched_special {
        f64::NAN
    } else if ng == 0.0 && ne == 0.0 {
        1.0
    } else if ng == 0.0 || ne == 0.0 {
        0.0
    } else {
        dot / (ng.sqrt() * ne.sqrt())
    };
    let pass = mismatches == 0 && tol.min_cosine.is_none_or(|c| cosine >= c);
    Ok(Comparison {
        name: name.into(),
        elements: g.len() as u64,
        max_abs,
        max_rel,
        cosine,
        mismatches,
        worst_index: unravel(worst as u64, &got.shape),
        worst_got: g.get(worst).copied().unwrap_or(0.0),
        worst_expected: e.get(worst).copied().unwrap_or(0.0),
        tolerance: tol,
        pass,
    })
}

/// Exact comparison of integer tensors.
fn compare_ints(name: &str, shape: &[u64], g: &[i128], e: &[i128], tol: Tolerance) -> Comparison {
    let (mut max_abs, mut max_rel, mut mismatches) = (0f64, 0f64, 0u64);
    let (mut dot, mut ng, mut ne) = (0f64, 0f64, 0f64);
    let (mut worst, mut worst_d) = (0usize, 0i128);
    for (i, (&a, &b)) in g.iter().zip(e).enumerate() {
        let d = (a - b).abs();
        if d != 0 {
            mismatches += 1;
        }
        if d > worst_d {
            worst_d = d;
            worst = i;
        }
        max_abs = max_abs.max(d as f64);
        if b != 0 {
            max_rel = max_rel.max(d as f64 / (b as f64).abs());
        }
        let (a, b) = (a as f64, b as f64);
        dot += a * b;
        ng += a * a;
        ne += b * b;
    }
    let cosine = if ng == 0.0 && ne == 0.0 {
        1.0
    } else if ng == 0.0 || ne == 0.0 {
        0.0
    } else {
        dot / (ng.sqrt() * ne.sqrt())
    };
    Comparison {
        name: name.into(),
        elements: g.len() as u64,
        max_abs,
        max_rel,
        cosine,
        mismatches,
        worst_index: unravel(worst as u64, shape),
        worst_got: g.get(worst).copied().unwrap_or(0) as f64,
        worst_expected: e.get(worst).copied().unwrap_or(0) as f64,
        tolerance: tol,
        pass: mismatches == 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmpu_isa::DType;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_f32(DType::F32, vec![v.len() as u64], v).unwrap()
    }

    #[test]
    fn an_f64_reference_past_f32_range_is_not_rounded_to_the_infinity_it_is_compared_with() {
        let f64t = |v: &[f64]| {
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            Tensor::new(DType::F64, vec![v.len() as u64], bytes).unwrap()
        };
        let c = compare(
            "y",
            &f64t(&[f64::INFINITY, 2.0]),
            &f64t(&[1e40, 2.0]),
            Tolerance::FP32,
        )
        .unwrap();
        assert!(!c.pass && c.mismatches == 1, "{c}");
        assert!(c.to_string().contains("got inf expected 1e40"), "{c}");
    }

    #[test]
    fn equal_tensors_pass_with_zero_error() {
        let c = compare(
            "x",
            &t(&[1.0, -2.0, f32::NAN]),
            &t(&[1.0, -2.0, f32::NAN]),
            Tolerance::FP32,
        )
        .unwrap();
        assert!(c.pass);
        assert_eq!(c.max_abs, 0.0);
    }

    #[test]
    fn a_nan_the_reference_lacks_leaves_the_cosine_undefined() {
        let c = compare(
            "x",
            &t(&[f32::NAN, f32::NAN]),
            &t(&[1.0, -2.0]),
            Tolerance::BF16,
        )
        .unwrap();
        assert!(!c.pass && c.cosine.is_nan(), "{c}");
    }

    #[test]
    fn an_error_beyond_tolerance_fails_and_names_the_worst_element() {
        let c = compare(
            "x",
            &t(&[1.0, 2.1, 3.0]),
            &t(&[1.0, 2.0, 3.0]),
            Tolerance::FP32,
        )
        .unwrap();
        assert!(!c.pass);
        assert_eq!(c.worst_index, vec![1]);
        assert_eq!(c.mismatches, 1);
        assert!(c.to_string().contains("FAIL"));
    }

    #[test]
    fn slack_follows_the_output_scale() {
        let c = compare(
            "x",
            &t(&[1000.0, 0.005]),
            &t(&[1000.0, 0.0]),
            Tolerance::FP32,
        )
        .unwrap();
        assert!(c.pass, "{c}");
    }

    #[test]
    fn integer_outputs_are_compared_exactly() {
        let i64s = |v: &[i64]| Tensor {
            dtype: DType::I64,
            shape: vec![v.len() as u64],
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        // 2^24 + 1 and 2^24 are the same f32; they are different integers.
        let c = compare(
            "x",
            &i64s(&[1 << 24, 7]),
            &i64s(&[(1 << 24) + 1, 7]),
            Tolerance::BF16,
        )
        .unwrap();
        assert!(!c.pass, "{c}");
        assert_eq!(c.mismatches, 1);
        assert_eq!(c.worst_index, vec![0]);
        let big = compare(
            "x",
            &i64s(&[i64::MAX, i64::MIN]),
            &i64s(&[i64::MAX - 1, i64::MIN]),
            Tolerance::FP32,
        )
        .unwrap();
        assert!(!big.pass);
        assert!(
            compare("x", &i64s(&[3, -4]), &i64s(&[3, -4]), Tolerance::FP32)
                .unwrap()
                .pass
        );
        // Booleans as u8: exact too.
        let b = |v: &[u8]| Tensor {
            dtype: DType::U8,
            shape: vec![v.len() as u64],
            data: v.to_vec(),
        };
        assert!(
            !compare("m", &b(&[1, 0]), &b(&[1, 1]), Tolerance::BF16)
                .unwrap()
                .pass
        );
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let a = Tensor::from_f32(DType::F32, vec![2, 1], &[1.0, 2.0]).unwrap();
        assert!(compare("x", &a, &t(&[1.0, 2.0]), Tolerance::FP32).is_err());
    }
}
