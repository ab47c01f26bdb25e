//! The interpreter's host tensor: an element type, a shape and a typed, row-major data vector.
//!
//! Invariants: `data.len() == shape.iter().product()`; the dtype is the data variant's (see
//! [`Tensor::dtype`]). `f8E4M3FN` elements are stored as their bit patterns ([`F8E4M3`]); `i1` as `bool`.
//! Conversions: [`Tensor::from_le_bytes`] / [`Tensor::to_le_bytes`] (the IR's blob layout, splats
//! accepted), [`Tensor::cast`] (ONNX `Cast` semantics), and per-element access through the [`Elem`]
//! trait that the kernels are generic over.

use half::{bf16, f16};

use crate::ir::ScalarType;
use crate::ir::print::f8e4m3fn_to_f64;

/// An `f8E4M3FN` value (its bit pattern): 4 exponent bits (bias 7), 3 mantissa bits, no infinities,
/// `0x7F`/`0xFF` are NaN, the largest finite magnitude is 448.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct F8E4M3(pub u8);

impl F8E4M3 {
    /// Decodes to f32.
    pub fn to_f32(self) -> f32 {
        f8e4m3fn_to_f64(self.0) as f32
    }

    /// Encodes with round-to-nearest-even. Out-of-range values (and infinities) become ±448 when
    /// `saturate`, NaN otherwise (the format has no infinity).
    pub fn from_f64(x: f64, saturate: bool) -> F8E4M3 {
        let sign = if x.is_sign_negative() { 0x80u8 } else { 0 };
        if x.is_nan() {
            return F8E4M3(0x7F | sign);
        }
        let a = x.abs();
        let over = if saturate { 0x7E | sign } else { 0x7F | sign };
        if a.is_infinite() {
            return F8E4M3(over);
        }
        if a == 0.0 {
            return F8E4M3(sign);
        }
        let e = (a.log2().floor() as i32).max(-6);
        let step = 2f64.powi(e - 3);
        let q = (a / step).round_ties_even() * step;
        if q > 448.0 {
            return F8E4M3(over);
        }
        if q == 0.0 {
            return F8E4M3(sign);
        }
        let qe = q.log2().floor() as i32;
        let bits = if qe < -6 {
            (q / 2f64.powi(-9)).round() as u8
        } else {
            let man = ((q / 2f64.powi(qe) - 1.0) * 8.0).round() as u8;
            (((qe + 7) as u8) << 3) | man
        };
        F8E4M3(bits | sign)
    }
}

/// Typed element storage of a [`Tensor`].
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F64(Vec<f64>),
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    F8E4M3FN(Vec<F8E4M3>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I16(Vec<i16>),
    I8(Vec<i8>),
    U64(Vec<u64>),
    U32(Vec<u32>),
    U16(Vec<u16>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
}

/// Applies a generic expression to the vector inside a [`Data`], producing a value of any type.
/// `with_data!(d, v => expr)`.
macro_rules! with_data {
    ($d:expr, $v:ident => $e:expr) => {
        match $d {
            $crate::interp::tensor::Data::F64($v) => $e,
            $crate::interp::tensor::Data::F32($v) => $e,
            $crate::interp::tensor::Data::F16($v) => $e,
            $crate::interp::tensor::Data::BF16($v) => $e,
            $crate::interp::tensor::Data::F8E4M3FN($v) => $e,
            $crate::interp::tensor::Data::I64($v) => $e,
            $crate::interp::tensor::Data::I32($v) => $e,
            $crate::interp::tensor::Data::I16($v) => $e,
            $crate::interp::tensor::Data::I8($v) => $e,
            $crate::interp::tensor::Data::U64($v) => $e,
            $crate::interp::tensor::Data::U32($v) => $e,
            $crate::interp::tensor::Data::U16($v) => $e,
            $crate::interp::tensor::Data::U8($v) => $e,
            $crate::interp::tensor::Data::Bool($v) => $e,
        }
    };
}

/// Maps the vector inside a [`Data`] to a new vector of the same element type:
/// `map_data!(d, v => expr_returning_vec)`.
macro_rules! map_data {
    ($d:expr, $v:ident => $e:expr) => {
        match $d {
            $crate::interp::tensor::Data::F64($v) => $crate::interp::tensor::Data::F64($e),
            $crate::interp::tensor::Data::F32($v) => $crate::interp::tensor::Data::F32($e),
            $crate::interp::tensor::Data::F16($v) => $crate::interp::tensor::Data::F16($e),
            $crate::interp::tensor::Data::BF16($v) => $crate::interp::tensor::Data::BF16($e),
            $crate::interp::tensor::Data::F8E4M3FN($v) => {
                $crate::interp::tensor::Data::F8E4M3FN($e)
            }
            $crate::interp::tensor::Data::I64($v) => $crate::interp::tensor::Data::I64($e),
            $crate::interp::tensor::Data::I32($v) => $crate::interp::tensor::Data::I32($e),
            $crate::interp::tensor::Data::I16($v) => $crate::interp::tensor::Data::I16($e),
            $crate::interp::tensor::Data::I8($v) => $crate::interp::tensor::Data::I8($e),
            $crate::interp::tensor::Data::U64($v) => $crate::interp::tensor::Data::U64($e),
            $crate::interp::tensor::Data::U32($v) => $crate::interp::tensor::Data::U32($e),
            $crate::interp::tensor::Data::U16($v) => $crate::interp::tensor::Data::U16($e),
            $crate::interp::tensor::Data::U8($v) => $crate::interp::tensor::Data::U8($e),
            $crate::interp::tensor::Data::Bool($v) => $crate::interp::tensor::Data::Bool($e),
        }
    };
}
pub(crate) use map_data;

/// One element type the kernels are generic over.
pub trait Elem: Copy + Default + PartialEq + std::fmt::Debug + 'static {
    /// The IR element type.
    const DTYPE: ScalarType;
    /// True for floating-point types.
    const FLOAT: bool;
    /// The value as f64 (bools are 0/1).
    fn to_f64(self) -> f64;
    /// From f64: floats round to nearest even (f8 saturates); integers truncate toward zero and
    /// saturate; bools are `v != 0`.
    fn from_f64(v: f64) -> Self;
    /// The value as an integer (floats truncate toward zero, saturating).
    fn to_i128(self) -> i128;
    /// From an integer: integers wrap (two's complement); floats round; bools are `v != 0`.
    fn from_i128(v: i128) -> Self;
    /// Wraps a vector into [`Data`].
    fn wrap(v: Vec<Self>) -> Data;
    /// The vector inside `d` if it holds this type.
    fn slice(d: &Data) -> Option<&[Self]>;
}

macro_rules! int_elem {
    ($t:ty, $st:ident, $var:ident) => {
        impl Elem for $t {
            const DTYPE: ScalarType = ScalarType::$st;
            const FLOAT: bool = false;
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_i128(self) -> i128 {
                self as i128
            }
            fn from_i128(v: i128) -> Self {
                v as $t
            }
            fn wrap(v: Vec<Self>) -> Data {
                Data::$var(v)
            }
            fn slice(d: &Data) -> Option<&[Self]> {
                match d {
                    Data::$var(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
int_elem!(i64, I64, I64);
int_elem!(i32, I32, I32);
int_elem!(i16, I16, I16);
int_elem!(i8, I8, I8);
int_elem!(u64, UI64, U64);
int_elem!(u32, UI32, U32);
int_elem!(u16, UI16, U16);
int_elem!(u8, UI8, U8);

macro_rules! float_elem {
    ($t:ty, $st:ident, $var:ident, $to:expr, $from:expr) => {
        impl Elem for $t {
            const DTYPE: ScalarType = ScalarType::$st;
            const FLOAT: bool = true;
            fn to_f64(self) -> f64 {
                ($to)(self)
            }
            fn from_f64(v: f64) -> Self {
                ($from)(v)
            }
            fn to_i128(self) -> i128 {
                <Self as Elem>::to_f64(self) as i128
            }
            fn from_i128(v: i128) -> Self {
                <Self as Elem>::from_f64(v as f64)
            }
            fn wrap(v: Vec<Self>) -> Data {
                Data::$var(v)
            }
            fn slice(d: &Data) -> Option<&[Self]> {
                match d {
                    Data::$var(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
float_elem!(f64, F64, F64, |x: f64| x, |v: f64| v);
float_elem!(f32, F32, F32, |x: f32| x as f64, |v: f64| v as f32);
float_elem!(f16, F16, F16, |x: f16| x.to_f64(), |v: f64| f16::from_f32(
    round_f64_to_f32_odd(v)
));
float_elem!(bf16, BF16, BF16, |x: bf16| x.to_f64(), |v: f64| {
    bf16::from_f32(round_f64_to_f32_odd(v))
});
float_elem!(
    F8E4M3,
    F8E4M3FN,
    F8E4M3FN,
    |x: F8E4M3| x.to_f32() as f64,
    |v: f64| F8E4M3::from_f64(v, true)
);

/// f64 → f32 with round-to-odd, so that a later rounding to a narrower format (f16, bf16) rounds the
/// original f64 value correctly (no double-rounding error).
fn round_f64_to_f32_odd(v: f64) -> f32 {
    let f = v as f32;
    if !f.is_finite() || f as f64 == v {
        return f;
    }
    // `as` rounded to nearest; step back toward v if it overshot, then set the sticky bit.
    let mut t = f;
    if (t as f64).abs() > v.abs() {
        t = f32::from_bits(t.to_bits() - 1);
    }
    f32::from_bits(t.to_bits() | 1)
}

impl Elem for bool {
    const DTYPE: ScalarType = ScalarType::I1;
    const FLOAT: bool = false;
    fn to_f64(self) -> f64 {
        if self { 1.0 } else { 0.0 }
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    fn to_i128(self) -> i128 {
        self as i128
    }
    fn from_i128(v: i128) -> Self {
        v != 0
    }
    fn wrap(v: Vec<Self>) -> Data {
        Data::Bool(v)
    }
    fn slice(d: &Data) -> Option<&[Self]> {
        match d {
            Data::Bool(v) => Some(v),
            _ => None,
        }
    }
}

/// A host tensor: shape plus typed row-major data.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Data,
}

/// Errors building tensors from raw data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    #[error("{got} bytes of data for a {dtype} tensor of shape {shape:?} (needs {need})")]
    Size {
        dtype: ScalarType,
        shape: Vec<usize>,
        got: usize,
        need: usize,
    },
    #[error("tensor shape {0:?} has too many elements")]
    TooLarge(Vec<usize>),
}

/// Number of elements of a shape, `None` on overflow.
pub fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

impl Tensor {
    /// A tensor from a typed vector (panics never; a length mismatch is the caller's bug and is caught
    /// by [`Tensor::check`]).
    pub fn new<T: Elem>(shape: Vec<usize>, v: Vec<T>) -> Tensor {
        Tensor {
            shape,
            data: T::wrap(v),
        }
    }

    /// A rank-0 tensor.
    pub fn scalar<T: Elem>(v: T) -> Tensor {
        Tensor::new(vec![], vec![v])
    }

    /// Checks the data length against the shape.
    pub fn check(&self) -> bool {
        numel(&self.shape) == Some(self.len())
    }

    /// The element type.
    pub fn dtype(&self) -> ScalarType {
        match &self.data {
            Data::F64(_) => ScalarType::F64,
            Data::F32(_) => ScalarType::F32,
            Data::F16(_) => ScalarType::F16,
            Data::BF16(_) => ScalarType::BF16,
            Data::F8E4M3FN(_) => ScalarType::F8E4M3FN,
            Data::I64(_) => ScalarType::I64,
            Data::I32(_) => ScalarType::I32,
            Data::I16(_) => ScalarType::I16,
            Data::I8(_) => ScalarType::I8,
            Data::U64(_) => ScalarType::UI64,
            Data::U32(_) => ScalarType::UI32,
            Data::U16(_) => ScalarType::UI16,
            Data::U8(_) => ScalarType::UI8,
            Data::Bool(_) => ScalarType::I1,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_data!(&self.data, v => v.len())
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The data as a typed slice, if the dtype matches.
    pub fn as_slice<T: Elem>(&self) -> Option<&[T]> {
        T::slice(&self.data)
    }

    /// Element `i` as f64.
    pub fn get_f64(&self, i: usize) -> f64 {
        with_data!(&self.data, v => v[i].to_f64())
    }

    /// Element `i` as i128 (floats truncate).
    pub fn get_i128(&self, i: usize) -> i128 {
        with_data!(&self.data, v => v[i].to_i128())
    }

    /// All elements as f64.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        with_data!(&self.data, v => v.iter().map(|x| x.to_f64()).collect())
    }

    /// All elements as i64 (for shapes, axes, indices; floats truncate, u64 wraps).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        with_data!(&self.data, v => v.iter().map(|x| x.to_i128() as i64).collect())
    }

    /// A tensor of `dtype` with every element `f(i)` computed in f64 (rounded per `from_f64`).
    pub fn from_f64_fn(
        dtype: ScalarType,
        shape: Vec<usize>,
        n: usize,
        f: impl Fn(usize) -> f64,
    ) -> Tensor {
        let data = dispatch_dtype(dtype, DataBuilder { n, f: &f });
        Tensor { shape, data }
    }

    /// Decodes little-endian bytes (the IR blob layout: `i1` one byte per element). A buffer holding
    /// exactly one element for a larger shape is a splat.
    pub fn from_le_bytes(
        dtype: ScalarType,
        shape: Vec<usize>,
        bytes: &[u8],
    ) -> Result<Tensor, TensorError> {
        let n = numel(&shape)
            .filter(|&n| n <= crate::interp::ops::MAX_ELEMENTS)
            .ok_or_else(|| TensorError::TooLarge(shape.clone()))?;
        let es = dtype.byte_size();
        let splat = bytes.len() == es && n != 1;
        let need = n
            .checked_mul(es)
            .ok_or_else(|| TensorError::TooLarge(shape.clone()))?;
        if !splat && bytes.len() != need {
            return Err(TensorError::Size {
                dtype,
                shape,
                got: bytes.len(),
                need,
            });
        }
        let count = if splat { 1 } else { n };
        let mut t = decode_le(dtype, bytes, count);
        if splat {
            t = with_data_ret_data(&t, n);
        }
        Ok(Tensor { shape, data: t })
    }

    /// Encodes as little-endian bytes (`i1` one byte per element).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * self.dtype().byte_size());
        match &self.data {
            Data::F64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::F32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::F16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::BF16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::F8E4M3FN(v) => v.iter().for_each(|x| out.push(x.0)),
            Data::I64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::I32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::I16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::I8(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::U64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::U32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::U16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::U8(v) => out.extend_from_slice(v),
            Data::Bool(v) => v.iter().for_each(|&x| out.push(x as u8)),
        }
        out
    }

    /// ONNX `Cast` to `to` (floats → ints truncate toward zero, saturating; → bool is `!= 0`; float
    /// narrowing rounds to nearest even; `saturate` applies to f8 targets only).
    pub fn cast(&self, to: ScalarType, saturate: bool) -> Tensor {
        if to == self.dtype() {
            return self.clone();
        }
        let from_float = self.dtype().is_float();
        let data = if to == ScalarType::F8E4M3FN {
            Data::F8E4M3FN(
                (0..self.len())
                    .map(|i| F8E4M3::from_f64(self.get_f64(i), saturate))
                    .collect(),
            )
        } else if from_float || to.is_float() || to == ScalarType::I1 {
            let src = &self.data;
            let f = |i: usize| with_data!(src, v => v[i].to_f64());
            dispatch_dtype(
                to,
                DataBuilder {
                    n: self.len(),
                    f: &f,
                },
            )
        } else {
            let src = &self.data;
            let f = |i: usize| with_data!(src, v => v[i].to_i128());
            dispatch_dtype_int(to, self.len(), &f)
        };
        Tensor {
            shape: self.shape.clone(),
            data,
        }
    }

    /// Same data, new shape (element counts must agree; checked by callers).
    pub fn reshaped(mut self, shape: Vec<usize>) -> Tensor {
        self.shape = shape;
        self
    }
}

struct DataBuilder<'a> {
    n: usize,
    f: &'a dyn Fn(usize) -> f64,
}

fn dispatch_dtype(dtype: ScalarType, b: DataBuilder<'_>) -> Data {
    fn build<T: Elem>(b: &DataBuilder<'_>) -> Vec<T> {
        (0..b.n).map(|i| T::from_f64((b.f)(i))).collect()
    }
    match dtype {
        ScalarType::F64 => Data::F64(build(&b)),
        ScalarType::F32 => Data::F32(build(&b)),
        ScalarType::F16 => Data::F16(build(&b)),
        ScalarType::BF16 => Data::BF16(build(&b)),
        ScalarType::F8E4M3FN => Data::F8E4M3FN(build(&b)),
        ScalarType::I64 => Data::I64(build(&b)),
        ScalarType::I32 => Data::I32(build(&b)),
        ScalarType::I16 => Data::I16(build(&b)),
        ScalarType::I8 => Data::I8(build(&b)),
        ScalarType::UI64 => Data::U64(build(&b)),
        ScalarType::UI32 => Data::U32(build(&b)),
        ScalarType::UI16 => Data::U16(build(&b)),
        ScalarType::UI8 => Data::U8(build(&b)),
        ScalarType::I1 => Data::Bool(build(&b)),
    }
}

fn dispatch_dtype_int(dtype: ScalarType, n: usize, f: &dyn Fn(usize) -> i128) -> Data {
    fn build<T: Elem>(n: usize, f: &dyn Fn(usize) -> i128) -> Vec<T> {
        (0..n).map(|i| T::from_i128(f(i))).collect()
    }
    match dtype {
        ScalarType::F64 => Data::F64(build(n, f)),
        ScalarType::F32 => Data::F32(build(n, f)),
        ScalarType::F16 => Data::F16(build(n, f)),
        ScalarType::BF16 => Data::BF16(build(n, f)),
        ScalarType::F8E4M3FN => Data::F8E4M3FN(build(n, f)),
        ScalarType::I64 => Data::I64(build(n, f)),
        ScalarType::I32 => Data::I32(build(n, f)),
        ScalarType::I16 => Data::I16(build(n, f)),
        ScalarType::I8 => Data::I8(build(n, f)),
        ScalarType::UI64 => Data::U64(build(n, f)),
        ScalarType::UI32 => Data::U32(build(n, f)),
        ScalarType::UI16 => Data::U16(build(n, f)),
        ScalarType::UI8 => Data::U8(build(n, f)),
        ScalarType::I1 => Data::Bool(build(n, f)),
    }
}

/// An all-zero (false) tensor of a dtype.
pub fn zeros(dtype: ScalarType, shape: Vec<usize>) -> Tensor {
    let n = numel(&shape).unwrap_or(0);
    Tensor::from_f64_fn(dtype, shape, n, |_| 0.0)
}

fn with_data_ret_data(d: &Data, n: usize) -> Data {
    map_data!(d, v => vec![v[0]; n])
}

fn decode_le(dtype: ScalarType, b: &[u8], n: usize) -> Data {
    macro_rules! le {
        ($t:ty, $s:expr) => {
            (0..n)
                .map(|i| {
                    let mut a = [0u8; $s];
                    a.copy_from_slice(&b[i * $s..(i + 1) * $s]);
                    <$t>::from_le_bytes(a)
                })
                .collect()
        };
    }
    match dtype {
        ScalarType::F64 => Data::F64(le!(f64, 8)),
        ScalarType::F32 => Data::F32(le!(f32, 4)),
        ScalarType::F16 => Data::F16(le!(f16, 2)),
        ScalarType::BF16 => Data::BF16(le!(bf16, 2)),
        ScalarType::F8E4M3FN => Data::F8E4M3FN(b[..n].iter().map(|&x| F8E4M3(x)).collect()),
        ScalarType::I64 => Data::I64(le!(i64, 8)),
        ScalarType::I32 => Data::I32(le!(i32, 4)),
        ScalarType::I16 => Data::I16(le!(i16, 2)),
        ScalarType::I8 => Data::I8(b[..n].iter().map(|&x| x as i8).collect()),
        ScalarType::UI64 => Data::U64(le!(u64, 8)),
        ScalarType::UI32 => Data::U32(le!(u32, 4)),
        ScalarType::UI16 => Data::U16(le!(u16, 2)),
        ScalarType::UI8 => Data::U8(b[..n].to_vec()),
        ScalarType::I1 => Data::Bool(b[..n].iter().map(|&x| x != 0).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f8_round_trips_every_finite_pattern() {
        for b in 0u8..=255 {
            if b & 0x7F == 0x7F {
                continue;
            }
            let x = F8E4M3(b).to_f32() as f64;
            assert_eq!(F8E4M3::from_f64(x, false).0, b, "pattern {b:#x} ({x})");
        }
        assert_eq!(F8E4M3::from_f64(1e6, true).0, 0x7E);
        assert_eq!(F8E4M3::from_f64(-1e6, false).0, 0xFF);
    }

    #[test]
    fn bytes_round_trip_and_splats_expand() {
        let t = Tensor::new(vec![2], vec![1.5f32, -2.0]);
        let b = t.to_le_bytes();
        assert_eq!(
            Tensor::from_le_bytes(ScalarType::F32, vec![2], &b).unwrap(),
            t
        );
        let s = Tensor::from_le_bytes(ScalarType::I64, vec![3], &7i64.to_le_bytes()).unwrap();
        assert_eq!(s.to_i64_vec(), vec![7, 7, 7]);
    }

    #[test]
    fn cast_follows_onnx_rules() {
        let t = Tensor::new(vec![3], vec![-1.7f32, 2.5, 0.0]);
        assert_eq!(t.cast(ScalarType::I32, true).to_i64_vec(), vec![-1, 2, 0]);
        assert_eq!(
            t.cast(ScalarType::I1, true).as_slice::<bool>().unwrap(),
            &[true, true, false]
        );
        let i = Tensor::new(vec![1], vec![300i64]);
        assert_eq!(i.cast(ScalarType::UI8, true).to_i64_vec(), vec![44]);
    }
}
