//! Host tensors: a dtype, a shape and the row-major little-endian bytes.
//!
//! Invariant (checked by [`Tensor::new`], relied on by the emulator and `npy`): `data.len()` equals
//! the product of `shape` times the element size. An empty shape is a scalar (one element).

use llmpu_isa::DType;
use llmpu_isa::numerics::{load_f32, store_f32};

/// A dense host tensor, row-major, little-endian elements of `dtype`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}

/// Number of elements of `shape`, or `None` on overflow.
/// A shape with a zero dimension has zero elements however large the other dimensions are.
pub fn elements_of(shape: &[u64]) -> Option<u64> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
}

/// Formats a dtype and shape like `f32[2, 3]`.
pub fn describe(dtype: DType, shape: &[u64]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("{}[{}]", dtype, dims.join(", "))
}

impl Tensor {
    /// A tensor from raw bytes; errors if the byte count does not match the shape.
    pub fn new(dtype: DType, shape: Vec<u64>, data: Vec<u8>) -> Result<Tensor, String> {
        let want = elements_of(&shape)
            .and_then(|e| e.checked_mul(dtype.size()))
            .ok_or_else(|| format!("shape {shape:?} is too large"))?;
        if want != data.len() as u64 {
            return Err(format!(
                "{} needs {want} bytes, got {}",
                describe(dtype, &shape),
                data.len()
            ));
        }
        Ok(Tensor { dtype, shape, data })
    }

    /// A zero-filled tensor.
    pub fn zeros(dtype: DType, shape: Vec<u64>) -> Tensor {
        let n = elements_of(&shape).unwrap_or(0) * dtype.size();
        Tensor {
            dtype,
            shape,
            data: vec![0; n as usize],
        }
    }

    /// A tensor of `dtype` from f32 values, rounded as the hardware does (see `isa::numerics`).
    pub fn from_f32(dtype: DType, shape: Vec<u64>, values: &[f32]) -> Result<Tensor, String> {
        let n = elements_of(&shape).ok_or("shape too large")?;
        if n != values.len() as u64 {
            return Err(format!(
                "{} has {n} elements, got {} values",
                describe(dtype, &shape),
                values.len()
            ));
        }
        let mut data = vec![0u8; values.len() * dtype.size() as usize];
        store_f32(dtype, values, &mut data);
        Ok(Tensor { dtype, shape, data })
    }

    /// An integer tensor (`i64` or `i32`, the element types of token ids, masks and positions)
    /// from `values`.
    pub fn from_ints(dtype: DType, shape: Vec<u64>, values: &[i64]) -> Result<Tensor, String> {
        let data = match dtype {
            DType::I64 => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
            DType::I32 => values
                .iter()
                .flat_map(|&x| (x as i32).to_le_bytes())
                .collect(),
            d => return Err(format!("an integer tensor of element type {}", d.name())),
        };
        Tensor::new(dtype, shape, data)
    }

    /// Number of elements.
    pub fn elements(&self) -> u64 {
        elements_of(&self.shape).unwrap_or(0)
    }

    /// The elements widened (or rounded, for 32/64-bit integers and f64) to f32.
    pub fn to_f32(&self) -> Vec<f32> {
        let n = self.data.len() / self.dtype.size() as usize;
        let mut out = vec![0f32; n];
        load_f32(self.dtype, &self.data, &mut out);
        out
    }

    /// The elements as f64: exact for f64 (a value past f32's range stays finite), every other
    /// type through [`Tensor::to_f32`].
    pub fn to_f64(&self) -> Vec<f64> {
        if self.dtype == DType::F64 {
            return self
                .data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")))
                .collect();
        }
        self.to_f32().into_iter().map(f64::from).collect()
    }

    /// The elements as i128, exactly, if the element type is an integer type (`None` for floats);
    /// i128 holds every value of every integer type, u64 included.
    pub fn to_i128(&self) -> Option<Vec<i128>> {
        fn ints<const N: usize>(d: &[u8], f: impl Fn([u8; N]) -> i128) -> Vec<i128> {
            d.chunks_exact(N)
                .map(|c| f(c.try_into().expect("N-byte chunk")))
                .collect()
        }
        let d = &self.data;
        Some(match self.dtype {
            DType::I8 => ints(d, |c: [u8; 1]| i8::from_le_bytes(c) as i128),
            DType::U8 => ints(d, |c: [u8; 1]| u8::from_le_bytes(c) as i128),
            DType::I16 => ints(d, |c: [u8; 2]| i16::from_le_bytes(c) as i128),
            DType::U16 => ints(d, |c: [u8; 2]| u16::from_le_bytes(c) as i128),
            DType::I32 => ints(d, |c: [u8; 4]| i32::from_le_bytes(c) as i128),
            DType::U32 => ints(d, |c: [u8; 4]| u32::from_le_bytes(c) as i128),
            DType::I64 => ints(d, |c: [u8; 8]| i64::from_le_bytes(c) as i128),
            DType::U64 => ints(d, |c: [u8; 8]| u64::from_le_bytes(c) as i128),
            DType::F32 | DType::F16 | DType::BF16 | DType::F8E4M3 | DType::F64 => return None,
        })
    }

    /// `f32[2, 3]`-style description.
    pub fn describe(&self) -> String {
        describe(self.dtype, &self.shape)
    }
}

/// The index of the largest value of `row` (the first one on ties; 0 for an empty row): a greedy
/// token choice from a row of logits.
pub fn argmax(row: &[f32]) -> i64 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as i64
}
