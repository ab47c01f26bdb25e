//! Reading and writing NumPy `.npy` files (format versions 1.0, 2.0 and 3.0) through the
//! [`npyz`] crate: it parses and writes the header (magic, version, the Python-literal dict); the
//! data bytes are the tensor's little-endian bytes, taken and written as they are.
//!
//! Element types map as follows (little-endian only; `|` is accepted as the byte order of
//! one-byte types):
//!
//! | DType | descr written | descr accepted |
//! |---|---|---|
//! | f32 | `<f4` | `<f4` |
//! | f16 | `<f2` | `<f2` |
//! | bf16 | `<V2` | `<V2`, `|V2` — NumPy has no bfloat16; the raw 2-byte pattern is kept |
//! | f8e4m3 | `|V1` | `|V1`, `<V1` — likewise raw bytes |
//! | i8 | `|i1` | `|i1`, `<i1` |
//! | u8 | `|u1` | `|u1`, `<u1` |
//! | bool | — | `|b1` (read as u8 0/1, the machine's `i1` storage) |
//! | i32 | `<i4` | `<i4` |
//! | i64 | `<i8` | `<i8` |
//! | i16 | `<i2` | `<i2` |
//! | u16 | `<u2` | `<u2` |
//! | u32 | `<u4` | `<u4` |
//! | u64 | `<u8` | `<u8` |
//! | f64 | `<f8` | `<f8` |
//!
//! Only C order (`fortran_order: False`) is supported. Every malformed input is an [`NpyError`];
//! nothing here panics (the header's declared length is checked against the file before
//! `npyz` reads it). Writing picks version 1.0 unless the header needs more than 65535 bytes.

use crate::tensor::{Tensor, elements_of};
use llmpu_isa::DType;
use npyz::WriterBuilder;
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

/// Why a `.npy` file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("not a .npy file (bad magic)")]
    BadMagic,
    #[error("unsupported .npy version {0}.{1}")]
    BadVersion(u8, u8),
    #[error("file truncated: {0}")]
    Truncated(&'static str),
    #[error("bad .npy header: {0}")]
    BadHeader(String),
    #[error(
        "unsupported dtype `{0}` (supported: <f8 <f4 <f2 <V2(bf16) |V1(f8e4m3) |i1 |u1 |b1 <i2 <u2 <i4 <u4 <i8 <u8)"
    )]
    UnsupportedDtype(String),
    #[error("Fortran-order arrays are not supported; save with np.ascontiguousarray")]
    FortranOrder,
    #[error("data has {got} bytes but the header says {want}")]
    SizeMismatch { want: u64, got: u64 },
}

/// The `descr` string written for `dt`.
pub fn descr_of(dt: DType) -> &'static str {
    match dt {
        DType::F32 => "<f4",
        DType::F16 => "<f2",
        DType::BF16 => "<V2",
        DType::F8E4M3 => "|V1",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::I16 => "<i2",
        DType::U16 => "<u2",
        DType::U32 => "<u4",
        DType::U64 => "<u8",
        DType::F64 => "<f8",
    }
}

/// The DType a `descr` string names, if supported (`|b1`, NumPy's bool, reads as u8).
pub fn dtype_of(descr: &str) -> Option<DType> {
    let ts: npyz::TypeStr = descr.parse().ok()?;
    use npyz::{Endianness, TypeChar};
    let dt = match (ts.type_char(), ts.size_field()) {
        (TypeChar::Float, 4) => DType::F32,
        (TypeChar::Float, 2) => DType::F16,
        (TypeChar::RawData, 2) => DType::BF16,
        (TypeChar::RawData, 1) => DType::F8E4M3,
        (TypeChar::Int, 1) => DType::I8,
        (TypeChar::Uint, 1) | (TypeChar::Bool, 1) => DType::U8,
        (TypeChar::Int, 4) => DType::I32,
        (TypeChar::Int, 8) => DType::I64,
        (TypeChar::Int, 2) => DType::I16,
        (TypeChar::Uint, 2) => DType::U16,
        (TypeChar::Uint, 4) => DType::U32,
        (TypeChar::Uint, 8) => DType::U64,
        (TypeChar::Float, 8) => DType::F64,
        _ => return None,
    };
    if ts.endianness() == Endianness::Big && dt.size() > 1 {
        return None;
    }
    Some(dt)
}

/// Checks the fixed preamble (magic, version, header length) against `bytes`, so that `npyz`
/// only ever reads a header that is there.
fn check_preamble(bytes: &[u8]) -> Result<(), NpyError> {
    if bytes.len() < 8 {
        return Err(NpyError::Truncated("magic"));
    }
    if &bytes[..6] != MAGIC {
        return Err(NpyError::BadMagic);
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (hlen, hstart) = match major {
        1 => {
            let b = bytes
                .get(8..10)
                .ok_or(NpyError::Truncated("header length"))?;
            (u16::from_le_bytes([b[0], b[1]]) as usize, 10usize)
        }
        2 | 3 => {
            let b = bytes
                .get(8..12)
                .ok_or(NpyError::Truncated("header length"))?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        _ => return Err(NpyError::BadVersion(major, minor)),
    };
    if minor != 0 {
        return Err(NpyError::BadVersion(major, minor));
    }
    if hstart.checked_add(hlen).is_none_or(|end| end > bytes.len()) {
        return Err(NpyError::Truncated("header"));
    }
    Ok(())
}

/// Parses a whole `.npy` file.
pub fn from_bytes(bytes: &[u8]) -> Result<Tensor, NpyError> {
    check_preamble(bytes)?;
    let mut rest = bytes;
    let header =
        npyz::NpyHeader::from_reader(&mut rest).map_err(|e| NpyError::BadHeader(e.to_string()))?;
    if header.order() == npyz::Order::Fortran {
        return Err(NpyError::FortranOrder);
    }
    let dtype = match header.dtype() {
        npyz::DType::Plain(ts) => {
            let descr = ts.to_string();
            dtype_of(&descr).ok_or(NpyError::UnsupportedDtype(descr))?
        }
        other => return Err(NpyError::UnsupportedDtype(other.descr())),
    };
    let shape = header.shape().to_vec();
    let want = elements_of(&shape)
        .and_then(|e| e.checked_mul(dtype.size()))
        .ok_or_else(|| NpyError::BadHeader(format!("shape {shape:?} is too large")))?;
    if want != rest.len() as u64 {
        return Err(NpyError::SizeMismatch {
            want,
            got: rest.len() as u64,
        });
    }
    Ok(Tensor {
        dtype,
        shape,
        data: rest.to_vec(),
    })
}

/// Serializes a tensor as a `.npy` file.
pub fn to_bytes(t: &Tensor) -> Vec<u8> {
    let ts: npyz::TypeStr = descr_of(t.dtype).parse().expect("our descrs parse");
    let mut out = Vec::with_capacity(128 + t.data.len());
    npyz::WriteOptions::new_header_only()
        .dtype(npyz::DType::Plain(ts))
        .shape(&t.shape)
        .writer(&mut out)
        .write_header_only()
        .expect("writing to memory cannot fail");
    out.extend_from_slice(&t.data);
    out
}

/// Reads a `.npy` file.
pub fn read_file(path: impl AsRef<Path>) -> Result<Tensor, NpyError> {
    let path = path.as_ref();
    let bytes = llmpu_isa::limits::read_file(path).map_err(|e| NpyError::Io {
        path: path.display().to_string(),
        source: e.into(),
    })?;
    from_bytes(&bytes)
}

/// Writes a `.npy` file.
pub fn write_file(path: impl AsRef<Path>, t: &Tensor) -> Result<(), NpyError> {
    let path = path.as_ref();
    std::fs::write(path, to_bytes(t)).map_err(|source| NpyError::Io {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_dtypes() -> [DType; 13] {
        DType::ALL.try_into().expect("every dtype")
    }

    #[test]
    fn round_trips_every_dtype_and_rank() {
        for dt in all_dtypes() {
            for shape in [vec![], vec![5], vec![2, 3], vec![2, 0, 4]] {
                let n = elements_of(&shape).unwrap() * dt.size();
                let data: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
                let t = Tensor::new(dt, shape.clone(), data).unwrap();
                let bytes = to_bytes(&t);
                assert_eq!((bytes.len() - t.data.len()) % 64, 0);
                assert_eq!(from_bytes(&bytes).unwrap(), t, "{dt} {shape:?}");
            }
        }
    }

    #[test]
    fn reads_a_numpy_written_header_and_versions_2_and_3() {
        let mut f = b"\x93NUMPY\x01\x00".to_vec();
        let h = "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }          \n";
        f.extend_from_slice(&(h.len() as u16).to_le_bytes());
        f.extend_from_slice(h.as_bytes());
        f.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
        let t = from_bytes(&f).unwrap();
        assert_eq!((t.dtype, t.shape.clone()), (DType::I32, vec![2]));
        for major in [2u8, 3] {
            let mut g = b"\x93NUMPY".to_vec();
            g.extend_from_slice(&[major, 0]);
            g.extend_from_slice(&(h.len() as u32).to_le_bytes());
            g.extend_from_slice(h.as_bytes());
            g.extend_from_slice(&t.data);
            assert_eq!(from_bytes(&g).unwrap(), t);
        }
    }

    #[test]
    fn malformed_files_are_errors() {
        let good = to_bytes(&Tensor::from_f32(DType::F32, vec![2, 2], &[1.0; 4]).unwrap());
        for cut in 0..good.len() {
            assert!(from_bytes(&good[..cut]).is_err(), "cut {cut}");
        }
        let replace = |from: &[u8], to: &[u8]| -> Vec<u8> {
            let i = good.windows(from.len()).position(|w| w == from).unwrap();
            let mut b = good.clone();
            b[i..i + to.len()].copy_from_slice(to);
            b
        };
        assert!(matches!(
            from_bytes(&replace(b"False", b"True ")),
            Err(NpyError::FortranOrder)
        ));
        assert!(matches!(
            from_bytes(&replace(b"<f4", b"<c8")),
            Err(NpyError::UnsupportedDtype(_))
        ));
        assert!(from_bytes(&replace(b"<f4", b">f4")).is_err());
        let mut bad = good.clone();
        bad[6] = 9;
        assert!(matches!(from_bytes(&bad), Err(NpyError::BadVersion(9, 0))));
        assert!(matches!(
            from_bytes(b"PK\x03\x04xxxxxx"),
            Err(NpyError::BadMagic)
        ));
    }

    #[test]
    fn a_huge_shape_with_a_zero_dim_is_empty_not_too_large() {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (9223372036854775808, 9223372036854775808, 0), }";
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(h.len() as u16).to_le_bytes());
        bytes.extend_from_slice(h.as_bytes());
        let t = from_bytes(&bytes).unwrap();
        assert_eq!(t.shape, vec![1 << 63, 1 << 63, 0]);
        assert_eq!(t.elements(), 0);
        assert!(t.data.is_empty());
    }

    #[test]
    fn numpy_bool_arrays_read_as_bytes() {
        let mut f = b"\x93NUMPY\x01\x00".to_vec();
        let h = "{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }            \n";
        f.extend_from_slice(&(h.len() as u16).to_le_bytes());
        f.extend_from_slice(h.as_bytes());
        f.extend_from_slice(&[1, 0, 1]);
        let t = from_bytes(&f).unwrap();
        assert_eq!(
            (t.dtype, t.shape.clone(), t.data.clone()),
            (DType::U8, vec![3], vec![1, 0, 1])
        );
    }

    #[test]
    fn a_header_longer_than_the_file_is_truncated_not_allocated() {
        let mut f = b"\x93NUMPY\x02\x00".to_vec();
        f.extend_from_slice(&u32::MAX.to_le_bytes());
        f.extend_from_slice(b"{'descr': '<f4'");
        assert!(matches!(from_bytes(&f), Err(NpyError::Truncated("header"))));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let base = to_bytes(&Tensor::from_f32(DType::F16, vec![3], &[1.0; 3]).unwrap());
        for _ in 0..2000 {
            let mut b = base.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % b.len();
                b[i] = (x >> 32) as u8;
            }
            let _ = from_bytes(&b);
        }
    }
}
