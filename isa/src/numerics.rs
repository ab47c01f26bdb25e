//! Element-type numerics: how each [`DType`] is stored and how the hardware converts to and from
//! f32, the vector unit's compute type.
//!
//! Conversions to a narrower float round to nearest, ties to even (bf16, f16 and f8e4m3 alike);
//! f8e4m3 ("FN": no infinities) saturates to ±448 and keeps NaN. Conversions to integers round to
//! nearest even and saturate to the type's range; NaN becomes 0. These are the rules the emulator
//! applies and the compiler's reference comparisons assume.
//!
//! Every type is a *storage* type: a load widens to f32 and a store narrows from f32. Two
//! consequences are part of the architecture, not emulator shortcuts:
//! - f64 is demoted: a load rounds it to the nearest f32 (ties to even) and a store widens that f32
//!   exactly, so f64 tensors are computed with f32 precision and range (the demotion IREE applies to
//!   f64 by default);
//! - integers of magnitude above 2^24 are not all representable in f32: a load of such an i32, u32,
//!   i64 or u64 rounds it to the nearest f32, so values beyond ±16,777,216 are exact only when they
//!   are multiples of the f32 spacing there.

use crate::fields::DType;
use half::{bf16, f16};

/// Largest finite f8e4m3fn value.
pub const F8E4M3_MAX: f32 = 448.0;

/// The magnitude up to which f8e4m3fn rounding still lands on a finite value: halfway between 448
/// and the next step (480, which the format spends on NaN), a tie that rounds to even, i.e. to 448.
/// A non-saturating conversion turns every larger magnitude (infinities included) into NaN.
pub const F8E4M3_ROUNDS_FINITE: f32 = 464.0;

/// Rounds f32 to f8e4m3fn bits (round to nearest even, saturating, NaN kept).
pub fn f32_to_f8e4m3(x: f32) -> u8 {
    let sign = if x.is_sign_negative() { 0x80u8 } else { 0 };
    if x.is_nan() {
        return sign | 0x7f;
    }
    let a = x.abs();
    if a > F8E4M3_MAX {
        return sign | 0x7e;
    }
    const MIN_NORMAL: f32 = 1.0 / 64.0;
    if a < MIN_NORMAL {
        let q = (a * 512.0).round_ties_even() as u8;
        return sign | q;
    }
    let e = ((a.to_bits() >> 23) & 0xff) as i32 - 127;
    let m = a / 2f32.powi(e);
    let mut q = ((m - 1.0) * 8.0).round_ties_even() as i32;
    let mut e = e;
    if q == 8 {
        q = 0;
        e += 1;
    }
    let biased = e + 7;
    if biased > 15 || (biased == 15 && q == 7) {
        return sign | 0x7e;
    }
    sign | ((biased as u8) << 3) | q as u8
}

/// Widens f8e4m3fn bits to f32 (exact).
pub fn f8e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = ((b >> 3) & 0xf) as i32;
    let man = (b & 7) as f32;
    if exp == 15 && b & 7 == 7 {
        return f32::NAN;
    }
    if exp == 0 {
        sign * man / 512.0
    } else {
        sign * (1.0 + man / 8.0) * 2f32.powi(exp - 7)
    }
}

fn to_int_saturating(x: f32, min: f64, max: f64) -> i64 {
    if x.is_nan() {
        return 0;
    }
    (x as f64).round_ties_even().clamp(min, max) as i64
}

/// `x` rounded to nearest even and saturated to `0..=u64::MAX`; NaN becomes 0.
fn to_u64_saturating(x: f32) -> u64 {
    if x.is_nan() {
        return 0;
    }
    // `as` saturates: negative values become 0, values past the range u64::MAX.
    (x as f64).round_ties_even() as u64
}

/// Reads `out.len()` elements of type `dt` from little-endian `bytes` as f32.
pub fn load_f32(dt: DType, bytes: &[u8], out: &mut [f32]) {
    let n = out.len();
    let sz = dt.size() as usize;
    debug_assert!(bytes.len() >= n * sz);
    match dt {
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        DType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        DType::F8E4M3 => {
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = f8e4m3_to_f32(b);
            }
        }
        DType::I8 => {
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = b as i8 as f32;
            }
        }
        DType::U8 => {
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = b as f32;
            }
        }
        DType::I32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32;
            }
        }
        DType::I64 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                *o = i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32;
            }
        }
        DType::I16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = i16::from_le_bytes([c[0], c[1]]) as f32;
            }
        }
        DType::U16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = u16::from_le_bytes([c[0], c[1]]) as f32;
            }
        }
        DType::U32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32;
            }
        }
        DType::U64 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                *o = u64::from_le_bytes(c.try_into().expect("8 bytes")) as f32;
            }
        }
        DType::F64 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                *o = f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32;
            }
        }
    }
}

/// Writes `vals` as type `dt` into little-endian `bytes`, rounding as the hardware does.
pub fn store_f32(dt: DType, vals: &[f32], bytes: &mut [u8]) {
    match dt {
        DType::F32 => {
            for (v, c) in vals.iter().zip(bytes.chunks_exact_mut(4)) {
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        DType::F16 => {
            for (v, c) in vals.iter().zip(bytes.chunks_exact_mut(2)) {
                c.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
            }
        }
        DType::BF16 => {
            for (v, c) in vals.iter().zip(bytes.chunks_exact_mut(2)) {
                c.copy_from_slice(&bf16::from_f32(*v).to_le_bytes());
            }
        }
        DType::F8E4M3 => {
            for (v, b) in vals.iter().zip(bytes.iter_mut()) {
                *b = f32_to_f8e4m3(*v);
            }
        }
        DType::I8 => {
            for (v, b) in vals.iter().zip(bytes.iter_mut()) {
                *b = to_int_saturating(*v, -128.0, 127.0) as i8 as u8;
            }
        }
        DType::U8 => {
            for (v, b) in vals.iter().zip(bytes.iter_mut()) {
                *b = to_int_saturating(*v, 0.0, 255.0) as u8;
            }
        }
        DType::I32 => {
            for (v, c) in vals.iter().zip(bytes.chunks_exact_mut(4)) {
                let i = to_int_saturating(*v, i32::MIN as f64, i32::MAX as f64) as i32;
                c.copy_from_slice(&i.to_le_bytes());
            }
        }
        DType::I64 => {
            for (v, c) in vals.iter().zip(bytes.chunks_exact_mut(8)) {
                let i = to_int_saturating(*v, i64::MIN as f64, i64::MAX as f64);
                c.copy_from_slice(&i.to_le_bytes());
            }
        }
        DType::I16 => {
            for (v, c) in vals.iter().zip(bytes.chunks_exact_mut(2)) {
                let i = to_int_saturating(*v, i16::MIN as f64, i16::MAX as f64) as i16;
                c.copy_from_slice(&i.to_le_bytes());
            }
        }
        DType::U16 => {
            for (v, c) in vals.iter().zip(bytes.chunks_exact_mut(2)) {
                let i = to_int_saturating(*v, 0.0, u16::MAX as f64) as u16;
                c.copy_from_slice(&i.to_le_bytes());
            }
        }
        DType::U32 => {
            for (v, c) in vals.iter().zip(bytes.chunks_exact_mut(4)) {
                let i = to_int_saturating(*v, 0.0, u32::MAX as f64) as u32;
                c.copy_from_slice(&i.to_le_bytes());
            }
        }
        DType::U64 => {
            for (v, c) in vals.iter().zip(bytes.chunks_exact_mut(8)) {
                c.copy_from_slice(&to_u64_saturating(*v).to_le_bytes());
            }
        }
        DType::F64 => {
            for (v, c) in vals.iter().zip(bytes.chunks_exact_mut(8)) {
                c.copy_from_slice(&(*v as f64).to_le_bytes());
            }
        }
    }
}

/// Rounds an f32 to the nearest value representable in `dt` (the value a store then load gives).
pub fn round_to(dt: DType, x: f32) -> f32 {
    let mut b = [0u8; 8];
    store_f32(dt, &[x], &mut b);
    let mut o = [0f32];
    load_f32(dt, &b, &mut o);
    o[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f8e4m3_decodes_every_pattern_and_re_encodes_it() {
        for b in 0..=255u8 {
            let v = f8e4m3_to_f32(b);
            if v.is_nan() {
                assert_eq!(b & 0x7f, 0x7f);
                continue;
            }
            let back = f32_to_f8e4m3(v);
            if v == 0.0 {
                assert_eq!(back & 0x7f, 0);
            } else {
                assert_eq!(back, b, "pattern {b:#04x} value {v}");
            }
        }
        assert_eq!(f8e4m3_to_f32(0x7e), 448.0);
        assert_eq!(f8e4m3_to_f32(0x01), 1.0 / 512.0);
    }

    #[test]
    fn f8e4m3_rounds_ties_to_even_and_saturates() {
        assert_eq!(f8e4m3_to_f32(f32_to_f8e4m3(1.0625)), 1.0);
        assert_eq!(f8e4m3_to_f32(f32_to_f8e4m3(1.1875)), 1.25);
        assert_eq!(f8e4m3_to_f32(f32_to_f8e4m3(1e9)), 448.0);
        assert_eq!(f8e4m3_to_f32(f32_to_f8e4m3(f32::NEG_INFINITY)), -448.0);
        assert!(f8e4m3_to_f32(f32_to_f8e4m3(f32::NAN)).is_nan());
        assert_eq!(
            f8e4m3_to_f32(f32_to_f8e4m3(0.0009765625 * 1.5)),
            0.001953125
        );
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        let x = f32::from_bits(0x3f80_8000);
        assert_eq!(round_to(DType::BF16, x).to_bits(), 0x3f80_0000);
        let y = f32::from_bits(0x3f81_8000);
        assert_eq!(round_to(DType::BF16, y).to_bits(), 0x3f82_0000);
    }

    #[test]
    fn integers_round_half_even_and_saturate() {
        assert_eq!(round_to(DType::I8, 2.5), 2.0);
        assert_eq!(round_to(DType::I8, -3.5), -4.0);
        assert_eq!(round_to(DType::I8, 300.0), 127.0);
        assert_eq!(round_to(DType::U8, -5.0), 0.0);
        assert_eq!(round_to(DType::I32, f32::NAN), 0.0);
    }

    /// Bytes of `x` stored as `dt`.
    fn stored(dt: DType, x: f32) -> Vec<u8> {
        let mut b = vec![0u8; dt.size() as usize];
        store_f32(dt, &[x], &mut b);
        b
    }

    #[test]
    fn sixteen_bit_integers_round_half_even_saturate_and_load_exactly() {
        assert_eq!(round_to(DType::I16, 2.5), 2.0);
        assert_eq!(round_to(DType::I16, -2.5), -2.0);
        assert_eq!(round_to(DType::I16, -3.5), -4.0);
        assert_eq!(round_to(DType::I16, 40000.0), 32767.0);
        assert_eq!(round_to(DType::I16, -40000.0), -32768.0);
        assert_eq!(round_to(DType::U16, 70000.0), 65535.0);
        assert_eq!(round_to(DType::U16, -1.0), 0.0);
        assert_eq!(round_to(DType::U16, 0.5), 0.0);
        assert_eq!(round_to(DType::U16, 1.5), 2.0);
        assert_eq!(stored(DType::I16, -2.0), (-2i16).to_le_bytes());
        assert_eq!(stored(DType::U16, 65535.0), 65535u16.to_le_bytes());
        let mut o = [0f32; 2];
        load_f32(DType::I16, &[0x00, 0x80, 0xff, 0x7f], &mut o);
        assert_eq!(o, [-32768.0, 32767.0]);
        load_f32(DType::U16, &[0xff, 0xff, 0x01, 0x00], &mut o);
        assert_eq!(o, [65535.0, 1.0]);
    }

    #[test]
    fn unsigned_wide_integers_saturate_and_round_beyond_two_to_the_24() {
        assert_eq!(round_to(DType::U32, -7.0), 0.0);
        assert_eq!(round_to(DType::U32, 1e10), u32::MAX as f32);
        assert_eq!(stored(DType::U32, 1e10), u32::MAX.to_le_bytes());
        assert_eq!(stored(DType::U32, 3.5), 4u32.to_le_bytes());
        assert_eq!(stored(DType::U64, -1.0), 0u64.to_le_bytes());
        assert_eq!(stored(DType::U64, f32::INFINITY), u64::MAX.to_le_bytes());
        assert_eq!(stored(DType::U64, f32::NAN), 0u64.to_le_bytes());
        assert_eq!(stored(DType::U64, 4.5), 4u64.to_le_bytes());
        let mut o = [0f32; 1];
        // 2^24 + 1 is not an f32: the load rounds it (ties to even) to 2^24.
        load_f32(DType::U32, &16_777_217u32.to_le_bytes(), &mut o);
        assert_eq!(o[0], 16_777_216.0);
        load_f32(DType::U64, &u64::MAX.to_le_bytes(), &mut o);
        assert_eq!(o[0], 18_446_744_073_709_551_616.0);
    }

    #[test]
    fn f64_is_demoted_to_f32_on_load_and_widened_exactly_on_store() {
        let mut o = [0f32; 1];
        load_f32(DType::F64, &0.1f64.to_le_bytes(), &mut o);
        assert_eq!(o[0], 0.1f32);
        load_f32(DType::F64, &1e300f64.to_le_bytes(), &mut o);
        assert_eq!(o[0], f32::INFINITY);
        assert_eq!(stored(DType::F64, 0.1), (0.1f32 as f64).to_le_bytes());
        assert_eq!(stored(DType::F64, -0.0), (-0.0f64).to_le_bytes());
        assert!(round_to(DType::F64, f32::NAN).is_nan());
    }
}
