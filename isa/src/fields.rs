//! Operand field types of the instruction table.
//!
//! Every operand of every instruction is one of the types here. Each implements [`Field`]: it knows
//! its [`FieldKind`] (used by the spec generator, the generic printer and the assembler's parser) and
//! how to pack itself into, and unpack itself from, a bit field of the width the table gives it.
//! Invariant: `from_bits(to_bits(x, w)?, w) == Ok(x)` for every value that fits in `w` bits, and
//! `from_bits` rejects every bit pattern that does not name a value (unknown enum tags).

use std::fmt;

/// Error raised when a value does not fit its field or a bit pattern names no value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("value {value} does not fit in {width} bits (allowed {min}..={max})")]
    OutOfRange {
        value: i128,
        width: u32,
        min: i128,
        max: i128,
    },
    #[error("bit pattern {raw:#x} is not a valid {kind}")]
    BadPattern { raw: u64, kind: &'static str },
    #[error("the accumulator holds only f32 and i32 tiles, not {dtype}")]
    AccType { dtype: &'static str },
}

/// How a field is spelled in assembly and documented in the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// Scalar register `r0`..`r31`; `r0` always reads zero.
    Reg,
    /// Semaphore index `s0`..`s31` of the issuing core.
    Sem,
    /// Unsigned immediate, decimal or `0x` hex.
    Uimm,
    /// Signed immediate, two's complement.
    Simm,
    /// IEEE-754 binary32 immediate (bit-exact).
    F32,
    /// Branch target: a signed instruction offset from this instruction, written as a label.
    Target,
    /// One of a fixed list of names; the field holds the index into the list.
    Enum(&'static str, &'static [&'static str]),
    /// A vector-unit tile operand: memory space, element type, base address register and row-stride
    /// register, spelled `sram.bf16[r3, r4]`.
    TileRef,
}

impl FieldKind {
    /// Short name used in the spec tables.
    pub fn name(&self) -> &'static str {
        match self {
            FieldKind::Reg => "reg",
            FieldKind::Sem => "sem",
            FieldKind::Uimm => "uimm",
            FieldKind::Simm => "simm",
            FieldKind::F32 => "f32",
            FieldKind::Target => "target",
            FieldKind::Enum(name, _) => name,
            FieldKind::TileRef => "tile",
        }
    }

    /// Formats raw field bits as assembly text. `Target` prints as `.+N` / `.-N` (instruction offset);
    /// the disassembler substitutes label names.
    pub fn format(&self, raw: u64, width: u32) -> String {
        match self {
            FieldKind::Reg => format!("r{raw}"),
            FieldKind::Sem => format!("s{raw}"),
            FieldKind::Uimm => raw.to_string(),
            FieldKind::Simm => sign_extend(raw, width).to_string(),
            FieldKind::F32 => format_f32(f32::from_bits(raw as u32)),
            FieldKind::Target => {
                let off = sign_extend(raw, width);
                if off >= 0 {
                    format!(".+{off}")
                } else {
                    format!(".{off}")
                }
            }
            FieldKind::Enum(_, names) => {
                names.get(raw as usize).copied().unwrap_or("?").to_string()
            }
            FieldKind::TileRef => match TileRef::from_bits(raw, width) {
                Ok(t) => t.to_string(),
                Err(_) => "?".into(),
            },
        }
    }
}

/// Formats an f32 so that parsing the text gives back the same bits (`inf`, `-inf`, `nan` and
/// `nan(0x…)` for non-canonical NaNs).
pub fn format_f32(v: f32) -> String {
    if v.is_nan() {
        if v.to_bits() == f32::NAN.to_bits() {
            "nan".into()
        } else {
            format!("nan(0x{:08x})", v.to_bits())
        }
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        let s = format!("{v:?}");
        s
    }
}

/// Sign-extends the low `width` bits of `raw`.
pub fn sign_extend(raw: u64, width: u32) -> i64 {
    let shift = 64 - width;
    ((raw << shift) as i64) >> shift
}

/// A value that occupies a bit field of an instruction.
pub trait Field: Copy + Sized {
    const KIND: FieldKind;
    /// Packs the value into `width` bits, or says why it does not fit.
    fn to_bits(self, width: u32) -> Result<u64, FieldError>;
    /// Unpacks `width` bits (upper bits of `raw` are zero).
    fn from_bits(raw: u64, width: u32) -> Result<Self, FieldError>;
    /// Assembly text of the value itself, whether or not it fits a field (for printing).
    fn text(&self) -> String;
}

fn check_unsigned(value: u64, width: u32) -> Result<u64, FieldError> {
    let max = if width >= 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    };
    if value > max {
        return Err(FieldError::OutOfRange {
            value: value as i128,
            width,
            min: 0,
            max: max as i128,
        });
    }
    Ok(value)
}

fn check_signed(value: i64, width: u32) -> Result<u64, FieldError> {
    let min = -(1i128 << (width - 1));
    let max = (1i128 << (width - 1)) - 1;
    let v = value as i128;
    if v < min || v > max {
        return Err(FieldError::OutOfRange {
            value: v,
            width,
            min,
            max,
        });
    }
    Ok((value as u64) & mask(width))
}

/// The low `width` bits set.
pub fn mask(width: u32) -> u64 {
    if width >= 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    }
}

/// A scalar register, `r0`..`r31`. `r0` reads as zero and ignores writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reg(pub u8);

impl Reg {
    pub const ZERO: Reg = Reg(0);
    pub const COUNT: usize = 32;
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

impl Field for Reg {
    const KIND: FieldKind = FieldKind::Reg;
    fn to_bits(self, width: u32) -> Result<u64, FieldError> {
        check_unsigned(self.0 as u64, width)
    }
    fn from_bits(raw: u64, _width: u32) -> Result<Self, FieldError> {
        Ok(Reg(raw as u8))
    }
    fn text(&self) -> String {
        self.to_string()
    }
}

/// A semaphore of the issuing core, `s0`..`s31`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sem(pub u8);

impl Sem {
    pub const COUNT: usize = 32;
}

impl fmt::Display for Sem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

impl Field for Sem {
    const KIND: FieldKind = FieldKind::Sem;
    fn to_bits(self, width: u32) -> Result<u64, FieldError> {
        check_unsigned(self.0 as u64, width)
    }
    fn from_bits(raw: u64, _width: u32) -> Result<Self, FieldError> {
        Ok(Sem(raw as u8))
    }
    fn text(&self) -> String {
        self.to_string()
    }
}

impl Field for u32 {
    const KIND: FieldKind = FieldKind::Uimm;
    fn to_bits(self, width: u32) -> Result<u64, FieldError> {
        check_unsigned(self as u64, width)
    }
    fn from_bits(raw: u64, _width: u32) -> Result<Self, FieldError> {
        Ok(raw as u32)
    }
    fn text(&self) -> String {
        self.to_string()
    }
}

impl Field for i32 {
    const KIND: FieldKind = FieldKind::Simm;
    fn to_bits(self, width: u32) -> Result<u64, FieldError> {
        check_signed(self as i64, width)
    }
    fn from_bits(raw: u64, width: u32) -> Result<Self, FieldError> {
        Ok(sign_extend(raw, width) as i32)
    }
    fn text(&self) -> String {
        self.to_string()
    }
}

impl Field for f32 {
    const KIND: FieldKind = FieldKind::F32;
    fn to_bits(self, width: u32) -> Result<u64, FieldError> {
        check_unsigned(self.to_bits() as u64, width)
    }
    fn from_bits(raw: u64, _width: u32) -> Result<Self, FieldError> {
        Ok(f32::from_bits(raw as u32))
    }
    fn text(&self) -> String {
        format_f32(*self)
    }
}

/// A branch target: signed offset in instructions from the branch itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Target(pub i32);

impl Field for Target {
    const KIND: FieldKind = FieldKind::Target;
    fn to_bits(self, width: u32) -> Result<u64, FieldError> {
        check_signed(self.0 as i64, width)
    }
    fn from_bits(raw: u64, width: u32) -> Result<Self, FieldError> {
        Ok(Target(sign_extend(raw, width) as i32))
    }
    fn text(&self) -> String {
        if self.0 >= 0 {
            format!(".+{}", self.0)
        } else {
            format!(".{}", self.0)
        }
    }
}

macro_rules! enum_field {
    ($(#[doc = $doc:literal])* $name:ident, $kind:literal, { $($(#[doc = $vdoc:literal])* $variant:ident = $text:literal),* $(,)? }) => {
        $(#[doc = $doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[doc = $vdoc])* $variant),* }

        impl $name {
            /// Every value, in encoding order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
            /// Assembly spellings, in encoding order.
            pub const NAMES: &'static [&'static str] = &[$($text),*];
            /// The assembly spelling.
            pub fn name(self) -> &'static str { Self::NAMES[self as usize] }
            /// Looks a value up by its assembly spelling.
            pub fn from_name(s: &str) -> Option<Self> {
                Self::NAMES.iter().position(|n| *n == s).map(|i| Self::ALL[i])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.name()) }
        }

        impl Field for $name {
            const KIND: FieldKind = FieldKind::Enum($kind, $name::NAMES);
            fn to_bits(self, width: u32) -> Result<u64, FieldError> { check_unsigned(self as u64, width) }
            fn from_bits(raw: u64, _width: u32) -> Result<Self, FieldError> {
                Self::ALL.get(raw as usize).copied().ok_or(FieldError::BadPattern { raw, kind: $kind })
            }
            fn text(&self) -> String { self.name().to_string() }
        }
    };
}

enum_field!(
    /// Element type of data in memory.
    DType, "dtype", {
    /// IEEE binary32.
    F32 = "f32",
    /// IEEE binary16.
    F16 = "f16",
    /// bfloat16 (8-bit exponent, 7-bit mantissa).
    BF16 = "bf16",
    /// OCP float8 E4M3 "FN": no infinities, max 448, one NaN pattern per sign.
    F8E4M3 = "f8e4m3",
    /// Signed 8-bit integer.
    I8 = "i8",
    /// Unsigned 8-bit integer.
    U8 = "u8",
    /// Signed 32-bit integer.
    I32 = "i32",
    /// Signed 64-bit integer.
    I64 = "i64",
    /// Signed 16-bit integer.
    I16 = "i16",
    /// Unsigned 16-bit integer.
    U16 = "u16",
    /// Unsigned 32-bit integer.
    U32 = "u32",
    /// Unsigned 64-bit integer.
    U64 = "u64",
    /// IEEE binary64: a storage type only; the vector unit computes in f32 (see `numerics`).
    F64 = "f64",
});

impl DType {
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::F8E4M3 | DType::I8 | DType::U8 => 1,
            DType::I64 | DType::U64 | DType::F64 => 8,
        }
    }

    /// True for the floating-point types.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::F32 | DType::F16 | DType::BF16 | DType::F8E4M3 | DType::F64
        )
    }
}

enum_field!(
    /// On-core memory a vector operand lives in.
    Space, "space", {
    /// The scratchpad SRAM.
    Sram = "sram",
    /// The accumulator SRAM written by the matrix engine.
    Acc = "acc",
});

enum_field!(
    /// Whether a matrix-engine result overwrites or accumulates into the accumulator.
    AccMode, "accmode", {
    /// `C = A·B`.
    Set = "set",
    /// `C += A·B`.
    Acc = "acc",
});

enum_field!(
    /// How a DMA lays the innermost two dimensions down at its destination.
    Layout, "layout", {
    /// Element `(i1, i0)` goes to `(i1, i0)`.
    Rows = "rows",
    /// Element `(i1, i0)` goes to `(i0, i1)`: the 2-D slab is transposed on the way.
    Trans = "trans",
});

enum_field!(
    /// How the last source operand of a vector instruction is read.
    Bcast, "bcast", {
    /// A full `rows × cols` tile.
    Full = "full",
    /// One row of `cols` elements, reused for every row.
    Row = "row",
    /// One column of `rows` elements (one per row, at the row stride), reused across the row.
    Col = "col",
});

/// A vector-unit tile operand: `space.dtype[addr, ld]` — base byte address in `addr`, row stride in
/// elements in `ld`. Bit layout (LSB first): addr 5, ld 5, type code 4.
///
/// The type code names the memory space and the element type together ([`TileRef::type_code`]):
/// codes `0..=12` are the scratchpad holding the [`DType`] of that index, `13` and `14` the
/// accumulator holding f32 and i32 (the only types the matrix engine writes there), `15` is
/// reserved. A separate space bit beside a 4-bit element type would not fit: `vpu.expsum`'s four
/// tiles, f32 immediate and two 16-bit counts fill the 128-bit instruction word exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileRef {
    pub space: Space,
    pub dtype: DType,
    pub addr: Reg,
    pub ld: Reg,
}

impl TileRef {
    pub const WIDTH: u32 = 14;
    /// Element types a tile in the accumulator may have, in type-code order after the scratchpad's.
    pub const ACC_TYPES: [DType; 2] = [DType::F32, DType::I32];

    /// The 4-bit code of this tile's space and element type, or `None` for an accumulator tile of a
    /// type other than [`TileRef::ACC_TYPES`].
    pub fn type_code(space: Space, dtype: DType) -> Option<u64> {
        match space {
            Space::Sram => Some(dtype as u64),
            Space::Acc => Self::ACC_TYPES
                .iter()
                .position(|&d| d == dtype)
                .map(|i| (DType::ALL.len() + i) as u64),
        }
    }

    /// The space and element type a type code names, if any.
    pub fn from_type_code(code: u64) -> Option<(Space, DType)> {
        let n = DType::ALL.len() as u64;
        if code < n {
            Some((Space::Sram, DType::ALL[code as usize]))
        } else {
            Self::ACC_TYPES
                .get((code - n) as usize)
                .map(|&d| (Space::Acc, d))
        }
    }
}

impl fmt::Display for TileRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}[{}, {}]",
            self.space, self.dtype, self.addr, self.ld
        )
    }
}

impl Field for TileRef {
    const KIND: FieldKind = FieldKind::TileRef;
    fn to_bits(self, width: u32) -> Result<u64, FieldError> {
        if self.addr.0 > 31 || self.ld.0 > 31 {
            return Err(FieldError::OutOfRange {
                value: self.addr.0.max(self.ld.0) as i128,
                width: 5,
                min: 0,
                max: 31,
            });
        }
        let code = Self::type_code(self.space, self.dtype).ok_or(FieldError::AccType {
            dtype: self.dtype.name(),
        })?;
        let raw = (self.addr.0 as u64 & 31) | ((self.ld.0 as u64 & 31) << 5) | (code << 10);
        check_unsigned(raw, width)
    }
    fn from_bits(raw: u64, _width: u32) -> Result<Self, FieldError> {
        let (space, dtype) =
            Self::from_type_code((raw >> 10) & 15).ok_or(FieldError::BadPattern {
                raw: (raw >> 10) & 15,
                kind: "tile type code",
            })?;
        Ok(TileRef {
            addr: Reg((raw & 31) as u8),
            ld: Reg(((raw >> 5) & 31) as u8),
            space,
            dtype,
        })
    }
    fn text(&self) -> String {
        self.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_fields_round_trip_at_their_limits() {
        for v in [-(1 << 15), -1, 0, 1, (1 << 15) - 1] {
            let bits = v.to_bits(16).unwrap();
            assert_eq!(i32::from_bits(bits, 16).unwrap(), v);
        }
        assert!(matches!(
            (1i32 << 15).to_bits(16),
            Err(FieldError::OutOfRange { .. })
        ));
    }

    #[test]
    fn tile_ref_round_trips_and_prints() {
        let t = TileRef {
            space: Space::Acc,
            dtype: DType::I32,
            addr: Reg(31),
            ld: Reg(7),
        };
        let bits = t.to_bits(TileRef::WIDTH).unwrap();
        assert_eq!(TileRef::from_bits(bits, TileRef::WIDTH).unwrap(), t);
        assert_eq!(t.to_string(), "acc.i32[r31, r7]");
        assert_eq!(
            FieldKind::TileRef.format(bits, TileRef::WIDTH),
            "acc.i32[r31, r7]"
        );
    }

    #[test]
    fn every_scratchpad_type_and_both_accumulator_types_have_a_tile_code() {
        for &dtype in DType::ALL {
            for space in [Space::Sram, Space::Acc] {
                let t = TileRef {
                    space,
                    dtype,
                    addr: Reg(3),
                    ld: Reg(4),
                };
                match t.to_bits(TileRef::WIDTH) {
                    Ok(bits) => assert_eq!(TileRef::from_bits(bits, TileRef::WIDTH).unwrap(), t),
                    Err(e) => {
                        assert_eq!(space, Space::Acc);
                        assert!(!TileRef::ACC_TYPES.contains(&dtype));
                        assert_eq!(
                            e,
                            FieldError::AccType {
                                dtype: dtype.name()
                            }
                        );
                    }
                }
            }
        }
        assert!(TileRef::from_bits(15 << 10, TileRef::WIDTH).is_err());
    }

    #[test]
    fn unknown_enum_patterns_are_rejected() {
        assert!(Bcast::from_bits(3, 2).is_err());
        assert_eq!(Bcast::from_bits(2, 2).unwrap(), Bcast::Col);
    }

    #[test]
    fn f32_text_is_bit_exact() {
        for v in [
            0.0f32,
            -0.0,
            1.5,
            f32::MIN_POSITIVE,
            1e-45,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ] {
            let s = format_f32(v);
            let back: f32 = s.parse().unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{s}");
        }
    }
}
