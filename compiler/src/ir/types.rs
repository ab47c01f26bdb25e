//! IR types: scalars, `index`, ranked tensors (static / symbolic / dynamic dims), buffers (memref-like with
//! an address space) and function types.
//!
//! Invariants: a [`Type`] is a plain value (cheap to clone, compared structurally). Its text spelling is
//! MLIR's (`tensor<?x64xbf16, #graph.dims<"seq", 64>>`, `memref<16x64xbf16, "sram">`, `f8E4M3FN`,
//! `ui8`, `index`), produced by `Display` and accepted back by the parser.

use std::fmt;
use std::sync::Arc;

/// Element / scalar types. Spellings follow MLIR (`f8E4M3FN`, `ui8`, `i1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScalarType {
    F64,
    F32,
    F16,
    BF16,
    F8E4M3FN,
    I64,
    I32,
    I16,
    I8,
    I1,
    UI64,
    UI32,
    UI16,
    UI8,
}

impl ScalarType {
    /// All scalar types, in spelling order.
    pub const ALL: [ScalarType; 14] = [
        ScalarType::F64,
        ScalarType::F32,
        ScalarType::F16,
        ScalarType::BF16,
        ScalarType::F8E4M3FN,
        ScalarType::I64,
        ScalarType::I32,
        ScalarType::I16,
        ScalarType::I8,
        ScalarType::I1,
        ScalarType::UI64,
        ScalarType::UI32,
        ScalarType::UI16,
        ScalarType::UI8,
    ];

    /// MLIR spelling.
    pub fn name(self) -> &'static str {
        match self {
            ScalarType::F64 => "f64",
            ScalarType::F32 => "f32",
            ScalarType::F16 => "f16",
            ScalarType::BF16 => "bf16",
            ScalarType::F8E4M3FN => "f8E4M3FN",
            ScalarType::I64 => "i64",
            ScalarType::I32 => "i32",
            ScalarType::I16 => "i16",
            ScalarType::I8 => "i8",
            ScalarType::I1 => "i1",
            ScalarType::UI64 => "ui64",
            ScalarType::UI32 => "ui32",
            ScalarType::UI16 => "ui16",
            ScalarType::UI8 => "ui8",
        }
    }

    /// Parses an MLIR spelling (`bf16`, `ui8`, ...).
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }

    /// True for floating-point types.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            ScalarType::F64
                | ScalarType::F32
                | ScalarType::F16
                | ScalarType::BF16
                | ScalarType::F8E4M3FN
        )
    }

    /// True for (signless or unsigned) integer types, including `i1`.
    pub fn is_int(self) -> bool {
        !self.is_float()
    }

    /// True for unsigned integer types.
    pub fn is_unsigned(self) -> bool {
        matches!(
            self,
            ScalarType::UI64 | ScalarType::UI32 | ScalarType::UI16 | ScalarType::UI8
        )
    }

    /// Storage size of one element in bytes (`i1` is stored as one byte).
    pub fn byte_size(self) -> usize {
        match self {
            ScalarType::F64 | ScalarType::I64 | ScalarType::UI64 => 8,
            ScalarType::F32 | ScalarType::I32 | ScalarType::UI32 => 4,
            ScalarType::F16 | ScalarType::BF16 | ScalarType::I16 | ScalarType::UI16 => 2,
            ScalarType::F8E4M3FN | ScalarType::I8 | ScalarType::UI8 | ScalarType::I1 => 1,
        }
    }

    /// Bit width as MLIR counts it (`i1` is 1).
    pub fn bit_width(self) -> u32 {
        if self == ScalarType::I1 {
            1
        } else {
            self.byte_size() as u32 * 8
        }
    }
}

impl fmt::Display for ScalarType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor dimension.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A known extent.
    Static(u64),
    /// A named symbolic extent (an ONNX `dim_param`, e.g. `"sequence_length"`).
    Symbolic(Arc<str>),
    /// An unknown, unnamed extent.
    Dynamic,
}

impl Dim {
    /// The static extent, if known.
    pub fn as_static(&self) -> Option<u64> {
        match self {
            Dim::Static(n) => Some(*n),
            _ => None,
        }
    }
}

/// A ranked tensor type `tensor<d0 x d1 x elem>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dims: Vec<Dim>,
    pub elem: ScalarType,
}

impl TensorType {
    /// A tensor with all-static dims.
    pub fn new(shape: &[u64], elem: ScalarType) -> Self {
        TensorType {
            dims: shape.iter().map(|&d| Dim::Static(d)).collect(),
            elem,
        }
    }

    /// Rank (number of dims).
    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    /// The static shape if every dim is static.
    pub fn static_shape(&self) -> Option<Vec<u64>> {
        self.dims.iter().map(Dim::as_static).collect()
    }

    /// Number of elements if static.
    pub fn num_elements(&self) -> Option<u64> {
        self.static_shape().and_then(|s| checked_product(&s))
    }

    /// The size policy for types: rank at most [`MAX_RANK`], every extent and the element count
    /// of the static dims at most `i64::MAX` (MLIR's `int64_t` extents). A type past them is an
    /// error, never a wrapped count.
    pub fn check_limits(&self) -> Result<(), String> {
        if self.rank() > MAX_RANK {
            return Err(format!(
                "a tensor of rank {} exceeds the maximum rank {MAX_RANK}",
                self.rank()
            ));
        }
        let statics: Vec<u64> = self.dims.iter().filter_map(Dim::as_static).collect();
        match checked_product(&statics) {
            Some(n) if n <= i64::MAX as u64 => Ok(()),
            _ => Err(format!(
                "tensor<{}x{}> has more than 2^63 - 1 elements",
                statics
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join("x"),
                self.elem
            )),
        }
    }
}

/// Largest tensor rank the IR accepts (NumPy's limit).
pub const MAX_RANK: usize = 64;

/// Product of extents, `None` on overflow.
pub fn checked_product(dims: &[u64]) -> Option<u64> {
    dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
}

/// Address space of a buffer (memory level of the LLMPU machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressSpace {
    /// The per-core scratchpad SRAM.
    Sram,
    /// The per-core accumulator SRAM.
    Acc,
    /// Off-chip high-bandwidth memory shared by the cores.
    Hbm,
}

impl AddressSpace {
    /// Spelling used as the memref memory space string.
    pub fn name(self) -> &'static str {
        match self {
            AddressSpace::Sram => "sram",
            AddressSpace::Acc => "acc",
            AddressSpace::Hbm => "hbm",
        }
    }

    /// Parses `sram` / `acc` / `hbm`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "sram" => Some(AddressSpace::Sram),
            "acc" => Some(AddressSpace::Acc),
            "hbm" => Some(AddressSpace::Hbm),
            _ => None,
        }
    }
}

/// A buffer type `memref<16x64xbf16, "sram">` (static shape, explicit address space).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BufferType {
    pub shape: Vec<u64>,
    pub elem: ScalarType,
    pub space: AddressSpace,
}

impl BufferType {
    /// Total size in bytes (saturating on absurd shapes).
    pub fn byte_size(&self) -> u64 {
        checked_product(&self.shape)
            .and_then(|n| n.checked_mul(self.elem.byte_size() as u64))
            .unwrap_or(u64::MAX)
    }
}

/// Any IR type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    Scalar(ScalarType),
    Index,
    Tensor(TensorType),
    Buffer(BufferType),
    /// `(inputs) -> results`, used by `func.func`'s `function_type`.
    Function(Vec<Type>, Vec<Type>),
}

impl Type {
    /// Shorthand for a static tensor type.
    pub fn tensor(shape: &[u64], elem: ScalarType) -> Type {
        Type::Tensor(TensorType::new(shape, elem))
    }

    /// The tensor type, if this is one.
    pub fn as_tensor(&self) -> Option<&TensorType> {
        match self {
            Type::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// The buffer type, if this is one.
    pub fn as_buffer(&self) -> Option<&BufferType> {
        match self {
            Type::Buffer(b) => Some(b),
            _ => None,
        }
    }

    /// Element type of a tensor/buffer, or the scalar itself.
    pub fn elem(&self) -> Option<ScalarType> {
        match self {
            Type::Scalar(s) => Some(*s),
            Type::Tensor(t) => Some(t.elem),
            Type::Buffer(b) => Some(b.elem),
            _ => None,
        }
    }
}

fn write_dims(f: &mut fmt::Formatter<'_>, dims: impl Iterator<Item = Option<u64>>) -> fmt::Result {
    for d in dims {
        match d {
            Some(n) => write!(f, "{n}x")?,
            None => f.write_str("?x")?,
        }
    }
    Ok(())
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tensor<")?;
        write_dims(f, self.dims.iter().map(Dim::as_static))?;
        write!(f, "{}", self.elem)?;
        if self.dims.iter().any(|d| matches!(d, Dim::Symbolic(_))) {
            f.write_str(", #graph.dims<")?;
            for (i, d) in self.dims.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                match d {
                    Dim::Static(n) => write!(f, "{n}")?,
                    Dim::Symbolic(s) => crate::ir::print::write_string_literal(f, s)?,
                    Dim::Dynamic => f.write_str("?")?,
                }
            }
            f.write_str(">")?;
        }
        f.write_str(">")
    }
}

impl fmt::Display for BufferType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("memref<")?;
        write_dims(f, self.shape.iter().map(|&d| Some(d)))?;
        write!(f, "{}, \"{}\">", self.elem, self.space.name())
    }
}

fn write_type_list(f: &mut fmt::Formatter<'_>, tys: &[Type]) -> fmt::Result {
    for (i, t) in tys.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{t}")?;
    }
    Ok(())
}

/// Writes a function-type result list: a single non-function type bare, otherwise parenthesized.
pub(crate) fn write_results(f: &mut fmt::Formatter<'_>, tys: &[Type]) -> fmt::Result {
    if tys.len() == 1 && !matches!(tys[0], Type::Function(..)) {
        write!(f, "{}", tys[0])
    } else {
        f.write_str("(")?;
        write_type_list(f, tys)?;
        f.write_str(")")
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Scalar(s) => write!(f, "{s}"),
            Type::Index => f.write_str("index"),
            Type::Tensor(t) => write!(f, "{t}"),
            Type::Buffer(b) => write!(f, "{b}"),
            Type::Function(ins, outs) => {
                f.write_str("(")?;
                write_type_list(f, ins)?;
                f.write_str(") -> ")?;
                write_results(f, outs)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolic_dims_print_as_question_mark_with_names_in_encoding() {
        let t = TensorType {
            dims: vec![Dim::Symbolic("sequence_length".into()), Dim::Static(64)],
            elem: ScalarType::F32,
        };
        assert_eq!(
            t.to_string(),
            "tensor<?x64xf32, #graph.dims<\"sequence_length\", 64>>"
        );
    }

    #[test]
    fn buffer_prints_address_space_as_memref_memory_space() {
        let b = BufferType {
            shape: vec![16, 64],
            elem: ScalarType::BF16,
            space: AddressSpace::Sram,
        };
        assert_eq!(b.to_string(), "memref<16x64xbf16, \"sram\">");
    }

    #[test]
    fn scalar_names_round_trip() {
        for s in ScalarType::ALL {
            assert_eq!(ScalarType::from_name(s.name()), Some(s));
        }
    }
}
