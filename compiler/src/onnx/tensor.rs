//! ONNX `TensorProto` ⇄ bytes / interpreter tensors, element-type mapping, and external data.
//!
//! Data comes from `raw_data` (little-endian), the typed fields (`float_data`, `int32_data` holding
//! 8/16-bit values and f16/bf16/f8 bit patterns, `int64_data`, `uint64_data`, `double_data`) or an
//! external file. External files are resolved relative to the model's folder and memory-mapped; a
//! location that is absolute, has a `..` component or resolves (through symlinks) outside the folder is
//! refused, and offsets/lengths are bounds-checked.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::proto::{TensorProto, data_location, data_type as dt};
use crate::interp::Tensor;
use crate::ir::ScalarType;

/// Maps an ONNX data type code to an IR element type, or explains why it is not supported.
pub fn elem_type(code: i32) -> Result<ScalarType, String> {
    Ok(match code {
        dt::FLOAT => ScalarType::F32,
        dt::DOUBLE => ScalarType::F64,
        dt::FLOAT16 => ScalarType::F16,
        dt::BFLOAT16 => ScalarType::BF16,
        dt::FLOAT8E4M3FN => ScalarType::F8E4M3FN,
        dt::INT8 => ScalarType::I8,
        dt::INT16 => ScalarType::I16,
        dt::INT32 => ScalarType::I32,
        dt::INT64 => ScalarType::I64,
        dt::UINT8 => ScalarType::UI8,
        dt::UINT16 => ScalarType::UI16,
        dt::UINT32 => ScalarType::UI32,
        dt::UINT64 => ScalarType::UI64,
        dt::BOOL => ScalarType::I1,
        dt::FLOAT8E4M3FNUZ | dt::FLOAT8E5M2 | dt::FLOAT8E5M2FNUZ | dt::FLOAT8E8M0 => {
            return Err(format!(
                "element type {} is not supported (the only 8-bit float is FLOAT8E4M3FN)",
                dt::name(code)
            ));
        }
        dt::FLOAT4E2M1 | dt::INT4 | dt::UINT4 | dt::INT2 | dt::UINT2 => {
            return Err(format!(
                "element type {} is not supported (sub-byte types are not supported)",
                dt::name(code)
            ));
        }
        dt::STRING => return Err("element type STRING is not supported (string tensors)".into()),
        dt::COMPLEX64 | dt::COMPLEX128 => {
            return Err(format!(
                "element type {} is not supported (complex numbers)",
                dt::name(code)
            ));
        }
        dt::UNDEFINED => return Err("element type is UNDEFINED".into()),
        c => return Err(format!("unknown element type code {c}")),
    })
}

/// The ONNX data type code of an element type.
pub fn onnx_code(t: ScalarType) -> i32 {
    match t {
        ScalarType::F32 => dt::FLOAT,
        ScalarType::F64 => dt::DOUBLE,
        ScalarType::F16 => dt::FLOAT16,
        ScalarType::BF16 => dt::BFLOAT16,
        ScalarType::F8E4M3FN => dt::FLOAT8E4M3FN,
        ScalarType::I8 => dt::INT8,
        ScalarType::I16 => dt::INT16,
        ScalarType::I32 => dt::INT32,
        ScalarType::I64 => dt::INT64,
        ScalarType::UI8 => dt::UINT8,
        ScalarType::UI16 => dt::UINT16,
        ScalarType::UI32 => dt::UINT32,
        ScalarType::UI64 => dt::UINT64,
        ScalarType::I1 => dt::BOOL,
    }
}

/// Memory-mapped external data files of one model, keyed by canonical path.
#[derive(Default)]
pub struct ExternalData {
    base: Option<PathBuf>,
    maps: HashMap<PathBuf, Arc<memmap2::Mmap>>,
}

impl ExternalData {
    /// External data resolved relative to `base` (the model's folder); `None` refuses all external data.
    pub fn new(base: Option<&Path>) -> Self {
        ExternalData {
            base: base.map(Path::to_path_buf),
            maps: HashMap::new(),
        }
    }

    /// Reads `length` bytes at `offset` (or the rest of the file) of `location`.
    pub fn read(
        &mut self,
        location: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<&[u8], String> {
        let base = self
            .base
            .as_ref()
            .ok_or("external data needs the model's folder (import from a file)")?;
        let rel = Path::new(location);
        if location.is_empty() {
            return Err("external data has an empty location".into());
        }
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(format!(
                "external data location '{location}' escapes the model folder"
            ));
        }
        let base_c = base
            .canonicalize()
            .map_err(|e| format!("cannot resolve the model folder {}: {e}", base.display()))?;
        let path = base.join(rel);
        let canon = path
            .canonicalize()
            .map_err(|e| format!("cannot open external data '{location}': {e}"))?;
        if !canon.starts_with(&base_c) {
            return Err(format!(
                "external data location '{location}' escapes the model folder (through a symlink)"
            ));
        }
        if !self.maps.contains_key(&canon) {
            // A regular file only, opened without blocking: a FIFO or device named as the
            // location is refused instead of stalling the import.
            let (f, _) = llmpu_isa::limits::open_regular(&canon)
                .map_err(|e| format!("cannot open external data '{location}': {e}"))?;
            // SAFETY: the file is mapped read-only; like every mmap reader we rely on it not being
            // truncated while the import runs (the bytes are copied into the module right away).
            let map = unsafe { memmap2::Mmap::map(&f) }
                .map_err(|e| format!("cannot map external data '{location}': {e}"))?;
            self.maps.insert(canon.clone(), Arc::new(map));
        }
        let map = &self.maps[&canon];
        let len = map.len() as u64;
        let length = length.unwrap_or(len.saturating_sub(offset));
        let end = offset
            .checked_add(length)
            .filter(|&e| e <= len)
            .ok_or_else(|| format!("external data '{location}': offset {offset} + length {length} exceeds the file size {len}"))?;
        Ok(&map[offset as usize..end as usize])
    }
}

/// The shape of a tensor proto (negative dims are an error).
pub fn proto_shape(t: &TensorProto) -> Result<Vec<usize>, String> {
    if t.dims.len() > crate::ir::types::MAX_RANK {
        return Err(format!(
            "rank {} exceeds the maximum rank {}",
            t.dims.len(),
            crate::ir::types::MAX_RANK
        ));
    }
    t.dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect()
}

/// Decodes a tensor proto into little-endian bytes in the IR blob layout, with its element type and shape.
pub fn proto_bytes(
    t: &TensorProto,
    ext: &mut ExternalData,
) -> Result<(ScalarType, Vec<usize>, Vec<u8>), String> {
    let elem = elem_type(t.data_type)?;
    let shape = proto_shape(t)?;
    if t.segment.is_some() {
        return Err("segmented tensors are not supported".into());
    }
    let n = crate::interp::tensor::numel(&shape).ok_or("tensor has too many elements")?;
    let es = elem.byte_size();
    let need = n.checked_mul(es).ok_or("tensor is too large")?;
    let mut bytes: Vec<u8> = if t.data_location == data_location::EXTERNAL {
        let mut location = None;
        let mut offset = 0u64;
        let mut length = None;
        for e in &t.external_data {
            match e.key.as_str() {
                "location" => location = Some(e.value.clone()),
                "offset" => {
                    offset = e
                        .value
                        .parse()
                        .map_err(|_| format!("bad external data offset '{}'", e.value))?
                }
                "length" => {
                    length = Some(
                        e.value
                            .parse()
                            .map_err(|_| format!("bad external data length '{}'", e.value))?,
                    )
                }
                _ => {}
            }
        }
        let location = location.ok_or("external data has no location")?;
        ext.read(&location, offset, length)?.to_vec()
    } else if !t.raw_data.is_empty() {
        t.raw_data.clone()
    } else {
        let have = match elem {
            ScalarType::F32 => t.float_data.len(),
            ScalarType::F64 => t.double_data.len(),
            ScalarType::I64 => t.int64_data.len(),
            ScalarType::UI64 | ScalarType::UI32 => t.uint64_data.len(),
            _ => t.int32_data.len(),
        };
        if have != n {
            return Err(format!(
                "tensor holds {have} values but shape {shape:?} needs {n}"
            ));
        }
        let mut out = Vec::with_capacity(need);
        match elem {
            ScalarType::F32 => t
                .float_data
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            ScalarType::F64 => t
                .double_data
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            ScalarType::I64 => t
                .int64_data
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            ScalarType::UI64 => t
                .uint64_data
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            ScalarType::UI32 => t
                .uint64_data
                .iter()
                .for_each(|&v| out.extend_from_slice(&(v as u32).to_le_bytes())),
            _ => t
                .int32_data
                .iter()
                .for_each(|&v| out.extend_from_slice(&(v as u32).to_le_bytes()[..es])),
        }
        out
    };
    if bytes.len() != need {
        return Err(format!(
            "tensor data holds {} bytes but {} {elem} elements of shape {shape:?} need {need}",
            bytes.len(),
            n
        ));
    }
    if elem == ScalarType::I1 {
        bytes.iter_mut().for_each(|b| *b = (*b != 0) as u8);
    }
    Ok((elem, shape, bytes))
}

/// Decodes a tensor proto into an interpreter tensor.
pub fn tensor_from_proto(t: &TensorProto, ext: &mut ExternalData) -> Result<Tensor, String> {
    let (elem, shape, bytes) = proto_bytes(t, ext)?;
    Tensor::from_le_bytes(elem, shape, &bytes).map_err(|e| e.to_string())
}

/// Encodes an interpreter tensor as a tensor proto (`raw_data`).
pub fn tensor_to_proto(name: &str, t: &Tensor) -> TensorProto {
    TensorProto {
        dims: t.shape.iter().map(|&d| d as i64).collect(),
        data_type: onnx_code(t.dtype()),
        name: name.to_string(),
        raw_data: t.to_le_bytes(),
        ..Default::default()
    }
}
