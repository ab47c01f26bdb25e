//! The instruction set, as one table.
//!
//! Each row of the [`isa!`] invocation below is one instruction: its variant name, opcode, assembly
//! mnemonic, executing [`Unit`], [`CostClass`], a one-line description and its operand fields with
//! their bit widths. From that single table the macro derives the typed [`Inst`] enum, the
//! [`Opcode`] enum, the encoder ([`Inst::encode`]), the decoder ([`Inst::decode`]), a generic raw-field
//! view used by the assembler ([`Inst::raw_fields`], [`Inst::from_raw`]) and the static descriptor
//! table [`INSTRUCTIONS`] from which the printer and `spec/isa.md` are produced.
//!
//! Encoding invariants: every instruction is [`INST_BYTES`] bytes, little-endian, bit 0 first; bits
//! 0–7 hold the opcode, fields follow in table order from bit 8 with no gaps, and every bit above the
//! last field is zero (the decoder rejects anything else). Opcode `0x00` is never assigned, so zeroed
//! memory never decodes.

use crate::fields::{
    AccMode, Bcast, DType, Field, FieldError, FieldKind, Layout, Reg, Sem, Target, TileRef, mask,
};
use std::fmt;

/// Size of every encoded instruction, in bytes.
pub const INST_BYTES: usize = 16;

/// The unit of a core whose in-order queue executes an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    /// Scalar unit: registers, control flow, dispatch of everything else, barriers.
    Scalar,
    /// DMA engine: HBM ⇄ SRAM.
    Dma,
    /// Matrix engine: systolic array writing the accumulator.
    Mxu,
    /// Vector unit: elementwise, transcendental, reductions, conversions.
    Vpu,
}

impl Unit {
    pub const ALL: [Unit; 4] = [Unit::Scalar, Unit::Dma, Unit::Mxu, Unit::Vpu];

    pub fn name(self) -> &'static str {
        match self {
            Unit::Scalar => "scalar",
            Unit::Dma => "dma",
            Unit::Mxu => "mxu",
            Unit::Vpu => "vpu",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which timing formula of `cost.rs` prices an instruction (documented in `spec/cost-model.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CostClass {
    /// Register arithmetic: `latency.scalar` cycles.
    Scalar,
    /// Branches and jumps: `latency.branch` cycles.
    Branch,
    /// Scalar load/store to SRAM: `latency.scalar_mem` cycles.
    ScalarMem,
    /// Strided DMA move.
    DmaCopy,
    /// Indexed DMA (gather/scatter of rows).
    DmaIndexed,
    /// Tile matmul on the systolic array.
    Matmul,
    /// Vector op at one lane-group per `latency.vpu_simple` cycles.
    VecSimple,
    /// Vector op through the special-function pipe (`latency.vpu_special` cycles per lane-group).
    VecSpecial,
    /// Row reduction.
    VecReduce,
    /// Semaphore signal/wait: `latency.sync` cycles once the wait is satisfied.
    Sync,
    /// Cross-core barrier: `latency.barrier` cycles after the last core arrives.
    Barrier,
    /// Halt: drains the core's queues.
    Halt,
}

/// Static description of one operand field.
#[derive(Clone, Copy, Debug)]
pub struct FieldDesc {
    pub name: &'static str,
    pub width: u32,
    /// Bit offset of the field's least significant bit within the instruction word.
    pub offset: u32,
    pub kind: FieldKind,
}

/// Static description of one instruction: a row of the table.
#[derive(Clone, Copy, Debug)]
pub struct InstDesc {
    pub opcode: Opcode,
    pub mnemonic: &'static str,
    pub unit: Unit,
    pub cost: CostClass,
    pub summary: &'static str,
    pub fields: &'static [FieldDesc],
}

impl InstDesc {
    /// Bits used by opcode and fields; the rest of the word is reserved (zero).
    pub fn used_bits(&self) -> u32 {
        self.fields.last().map(|f| f.offset + f.width).unwrap_or(8)
    }
}

/// Errors from encoding an instruction.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EncodeError {
    #[error("`{mnemonic}` field `{field}`: {source}")]
    Field {
        mnemonic: &'static str,
        field: &'static str,
        source: FieldError,
    },
    #[error("`{mnemonic}` takes {expected} operands, got {got}")]
    Arity {
        mnemonic: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
}

/// Errors from decoding an instruction word.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    #[error("`{mnemonic}` field `{field}`: {source}")]
    Field {
        mnemonic: &'static str,
        field: &'static str,
        source: FieldError,
    },
    #[error("`{mnemonic}` has non-zero reserved bits above bit {used}")]
    ReservedBits { mnemonic: &'static str, used: u32 },
    #[error("instruction stream length {0} is not a multiple of {INST_BYTES}")]
    Truncated(usize),
}

fn word_get(word: u128, offset: u32, width: u32) -> u64 {
    ((word >> offset) as u64) & mask(width)
}

const fn field_offsets<const N: usize>(widths: [u32; N]) -> [u32; N] {
    let mut out = [0u32; N];
    let mut i = 0;
    let mut at = 8;
    while i < N {
        out[i] = at;
        at += widths[i];
        i += 1;
    }
    out
}

const fn total_bits(widths: &[u32]) -> u32 {
    let mut i = 0;
    let mut at = 8;
    while i < widths.len() {
        at += widths[i];
        i += 1;
    }
    at
}

macro_rules! count {
    () => { 0usize };
    ($head:ident $($tail:ident)*) => { 1usize + count!($($tail)*) };
}

macro_rules! isa {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident = $opcode:literal, $mnem:literal, $unit:ident, $cost:ident
            { $($field:ident : $fty:ty = $width:literal),* $(,)? };
    )*) => {
        /// One decoded instruction. Variant fields are the operand fields of the table row.
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub enum Inst {
            $( $(#[doc = $doc])* $variant { $($field: $fty),* }, )*
        }

        /// Opcode byte of each instruction.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Opcode {
            $( $variant = $opcode, )*
        }

        impl Opcode {
            /// Every opcode in table order.
            pub const ALL: &'static [Opcode] = &[$(Opcode::$variant),*];

            /// The opcode for a byte, if assigned.
            pub fn from_byte(b: u8) -> Option<Opcode> {
                match b { $( $opcode => Some(Opcode::$variant), )* _ => None }
            }

            /// The table row of this opcode.
            pub fn desc(self) -> &'static InstDesc {
                match self { $( Opcode::$variant => &descs::$variant, )* }
            }
        }

        #[allow(non_upper_case_globals)]
        mod descs {
            use super::*;
            $(
                pub static $variant: InstDesc = {
                    const WIDTHS: [u32; count!($($field)*)] = [$($width),*];
                    #[allow(dead_code)]
                    const OFFSETS: [u32; count!($($field)*)] = field_offsets(WIDTHS);
                    const _: () = assert!(total_bits(&WIDTHS) <= (INST_BYTES as u32) * 8);
                    #[allow(unused_mut, unused_variables, unused_assignments)]
                    const FIELDS: [FieldDesc; count!($($field)*)] = {
                        let mut i = 0usize;
                        [$({
                            let d = FieldDesc {
                                name: stringify!($field),
                                width: $width,
                                offset: OFFSETS[i],
                                kind: <$fty as Field>::KIND,
                            };
                            i += 1;
                            d
                        }),*]
                    };
                    InstDesc {
                        opcode: Opcode::$variant,
                        mnemonic: $mnem,
                        unit: Unit::$unit,
                        cost: CostClass::$cost,
                        summary: concat!($($doc),*),
                        fields: &FIELDS,
                    }
                };
            )*
        }

        /// The instruction table, in opcode order.
        pub static INSTRUCTIONS: &[&InstDesc] = &[$(&descs::$variant),*];

        impl Inst {
            /// The opcode of this instruction.
            pub fn opcode(&self) -> Opcode {
                match self { $( Inst::$variant { .. } => Opcode::$variant, )* }
            }

            /// Raw field bits in table order, each checked against its width: a value that does
            /// not fit its field (`Reg(40)` in a 5-bit field) is an error, never silently another
            /// value.
            #[allow(unused_variables)]
            pub fn raw_field_results(&self) -> Vec<Result<u64, FieldError>> {
                let d = self.desc();
                match *self {
                    $( Inst::$variant { $($field),* } => {
                        let mut _i = 0usize;
                        vec![$({
                            let w = d.fields[_i].width;
                            _i += 1;
                            <$fty as Field>::to_bits($field, w)
                        }),*]
                    } )*
                }
            }

            /// Assembly text of each field in table order, of the real value even when it does
            /// not fit its field.
            #[allow(unused_variables)]
            pub fn field_texts(&self) -> Vec<String> {
                let d = self.desc();
                match *self {
                    $( Inst::$variant { $($field),* } => {
                        let mut _i = 0usize;
                        vec![$({
                            let w = d.fields[_i].width;
                            _i += 1;
                            match <$fty as Field>::to_bits($field, w) {
                                Ok(bits) => <$fty as Field>::KIND.format(bits, w),
                                Err(_) => <$fty as Field>::text(&$field),
                            }
                        }),*]
                    } )*
                }
            }

            /// Builds an instruction from an opcode and raw field bits in table order.
            #[allow(unused_variables, unused_mut)]
            pub fn from_raw(opcode: Opcode, raw: &[u64]) -> Result<Inst, EncodeError> {
                let d = opcode.desc();
                if raw.len() != d.fields.len() {
                    return Err(EncodeError::Arity { mnemonic: d.mnemonic, expected: d.fields.len(), got: raw.len() });
                }
                match opcode {
                    $( Opcode::$variant => {
                        let mut it = d.fields.iter().zip(raw.iter());
                        $(
                            let (fd, &r) = it.next().expect("arity checked");
                            if r & !mask(fd.width) != 0 {
                                return Err(EncodeError::Field {
                                    mnemonic: d.mnemonic,
                                    field: fd.name,
                                    source: FieldError::OutOfRange { value: r as i128, width: fd.width, min: 0, max: mask(fd.width) as i128 },
                                });
                            }
                            let $field = <$fty as Field>::from_bits(r, fd.width)
                                .map_err(|source| EncodeError::Field { mnemonic: d.mnemonic, field: fd.name, source })?;
                        )*
                        Ok(Inst::$variant { $($field),* })
                    } )*
                }
            }

            /// Encodes to the fixed-width little-endian word, checking every field's range.
            #[allow(unused_variables, unused_mut)]
            pub fn encode(&self) -> Result<[u8; INST_BYTES], EncodeError> {
                let d = self.desc();
                let mut word: u128 = d.opcode as u8 as u128;
                match *self {
                    $( Inst::$variant { $($field),* } => {
                        let mut it = d.fields.iter();
                        $(
                            let fd = it.next().expect("table row");
                            let bits = <$fty as Field>::to_bits($field, fd.width)
                                .map_err(|source| EncodeError::Field { mnemonic: d.mnemonic, field: fd.name, source })?;
                            word |= (bits as u128) << fd.offset;
                        )*
                    } )*
                }
                Ok(word.to_le_bytes())
            }
        }
    };
}

impl Inst {
    /// The table row of this instruction.
    pub fn desc(&self) -> &'static InstDesc {
        self.opcode().desc()
    }

    /// The unit whose queue executes this instruction.
    pub fn unit(&self) -> Unit {
        self.desc().unit
    }

    /// Raw field bits in table order (what the assembler prints and parses); an error names the
    /// first field whose value does not fit.
    pub fn raw_fields(&self) -> Result<Vec<u64>, EncodeError> {
        let d = self.desc();
        d.fields
            .iter()
            .zip(self.raw_field_results())
            .map(|(fd, r)| {
                r.map_err(|source| EncodeError::Field {
                    mnemonic: d.mnemonic,
                    field: fd.name,
                    source,
                })
            })
            .collect()
    }

    /// Decodes one instruction word.
    pub fn decode(bytes: &[u8; INST_BYTES]) -> Result<Inst, DecodeError> {
        let word = u128::from_le_bytes(*bytes);
        let op = Opcode::from_byte(bytes[0]).ok_or(DecodeError::UnknownOpcode(bytes[0]))?;
        let d = op.desc();
        let used = d.used_bits();
        if used < 128 && (word >> used) != 0 {
            return Err(DecodeError::ReservedBits {
                mnemonic: d.mnemonic,
                used,
            });
        }
        let raw: Vec<u64> = d
            .fields
            .iter()
            .map(|f| word_get(word, f.offset, f.width))
            .collect();
        Inst::from_raw(op, &raw).map_err(|e| match e {
            EncodeError::Field {
                mnemonic,
                field,
                source,
            } => DecodeError::Field {
                mnemonic,
                field,
                source,
            },
            EncodeError::Arity { .. } | EncodeError::UnknownOpcode(_) => {
                DecodeError::UnknownOpcode(bytes[0])
            }
        })
    }

    /// Decodes a whole instruction stream.
    pub fn decode_stream(bytes: &[u8]) -> Result<Vec<Inst>, (usize, DecodeError)> {
        if !bytes.len().is_multiple_of(INST_BYTES) {
            return Err((
                bytes.len() / INST_BYTES,
                DecodeError::Truncated(bytes.len()),
            ));
        }
        bytes
            .chunks_exact(INST_BYTES)
            .enumerate()
            .map(|(pc, c)| Inst::decode(c.try_into().expect("exact chunk")).map_err(|e| (pc, e)))
            .collect()
    }

    /// The scalar registers this instruction reads (register fields other than `rd`, and the
    /// address and stride registers of its tile operands), derived from the table.
    pub fn regs_read(&self) -> Vec<Reg> {
        let d = self.desc();
        let mut out = vec![];
        for (fd, raw) in d.fields.iter().zip(self.raw_field_results()) {
            let Ok(raw) = raw else { continue };
            match fd.kind {
                FieldKind::Reg if fd.name != "rd" => out.push(Reg(raw as u8)),
                FieldKind::TileRef => {
                    out.push(Reg((raw & 31) as u8));
                    out.push(Reg(((raw >> 5) & 31) as u8));
                }
                _ => {}
            }
        }
        out
    }

    /// The scalar register this instruction writes (its `rd` field), derived from the table.
    pub fn reg_written(&self) -> Option<Reg> {
        let d = self.desc();
        d.fields
            .iter()
            .zip(self.raw_field_results())
            .find(|(fd, _)| fd.kind == FieldKind::Reg && fd.name == "rd")
            .and_then(|(_, raw)| raw.ok())
            .map(|raw| Reg(raw as u8))
    }

    /// The branch target offset of a control-flow instruction, if it has one.
    pub fn branch_offset(&self) -> Option<i32> {
        match *self {
            Inst::Beq { target, .. }
            | Inst::Bne { target, .. }
            | Inst::Blt { target, .. }
            | Inst::Bge { target, .. }
            | Inst::Jmp { target } => Some(target.0),
            _ => None,
        }
    }
}

impl fmt::Display for Inst {
    /// Assembly text with branch targets as `.+N` offsets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.desc();
        f.write_str(d.mnemonic)?;
        for (i, text) in self.field_texts().iter().enumerate() {
            f.write_str(if i == 0 { " " } else { ", " })?;
            f.write_str(text)?;
        }
        Ok(())
    }
}

isa! {
    /// Does nothing for one scalar cycle.
    Nop = 0x01, "nop", Scalar, Scalar {};
    /// Ends this core's program once every unit's queue has drained.
    Halt = 0x02, "halt", Scalar, Halt {};
    /// `rd = sext(imm)`.
    Li = 0x03, "li", Scalar, Scalar { rd: Reg = 5, imm: i32 = 32 };
    /// `rd = (imm << 32) | (rd & 0xffff_ffff)`: sets the upper half, for 64-bit constants after `li`.
    Lih = 0x04, "lih", Scalar, Scalar { rd: Reg = 5, imm: u32 = 32 };
    /// `rd = rs1 + rs2` (wrapping).
    Add = 0x05, "add", Scalar, Scalar { rd: Reg = 5, rs1: Reg = 5, rs2: Reg = 5 };
    /// `rd = rs1 - rs2` (wrapping).
    Sub = 0x06, "sub", Scalar, Scalar { rd: Reg = 5, rs1: Reg = 5, rs2: Reg = 5 };
    /// `rd = rs1 * rs2` (wrapping).
    Mul = 0x07, "mul", Scalar, Scalar { rd: Reg = 5, rs1: Reg = 5, rs2: Reg = 5 };
    /// `rd = rs1 / rs2`, signed, truncating; division by zero traps.
    Div = 0x08, "div", Scalar, Scalar { rd: Reg = 5, rs1: Reg = 5, rs2: Reg = 5 };
    /// `rd = rs1 % rs2`, signed; division by zero traps.
    Rem = 0x09, "rem", Scalar, Scalar { rd: Reg = 5, rs1: Reg = 5, rs2: Reg = 5 };
    /// `rd = min(rs1, rs2)`, signed.
    Min = 0x0a, "min", Scalar, Scalar { rd: Reg = 5, rs1: Reg = 5, rs2: Reg = 5 };
    /// `rd = max(rs1, rs2)`, signed.
    Max = 0x0b, "max", Scalar, Scalar { rd: Reg = 5, rs1: Reg = 5, rs2: Reg = 5 };
    /// `rd = rs1 & rs2`.
    And = 0x0c, "and", Scalar, Scalar { rd: Reg = 5, rs1: Reg = 5, rs2: Reg = 5 };
    /// `rd = rs1 | rs2`.
    Or = 0x0d, "or", Scalar, Scalar { rd: Reg = 5, rs1: Reg = 5, rs2: Reg = 5 };
    /// `rd = rs1 ^ rs2`.
    Xor = 0x0e, "xor", Scalar, Scalar { rd: Reg = 5, rs1: Reg = 5, rs2: Reg = 5 };
    /// `rd = rs1 << (rs2 & 63)`.
    Shl = 0x0f, "shl", Scalar, Scalar { rd: Reg = 5, rs1: Reg = 5, rs2: Reg = 5 };
    /// `rd = rs1 >> (rs2 & 63)`, logical.
    Shr = 0x10, "shr", Scalar, Scalar { rd: Reg = 5, rs1: Reg = 5, rs2: Reg = 5 };
    /// `rd = (rs1 < rs2) as i64`, signed.
    Slt = 0x11, "slt", Scalar, Scalar { rd: Reg = 5, rs1: Reg = 5, rs2: Reg = 5 };
    /// `rd = (rs1 == rs2) as i64`.
    Seq = 0x12, "seq", Scalar, Scalar { rd: Reg = 5, rs1: Reg = 5, rs2: Reg = 5 };
    /// `rd = rs1 + sext(imm)`.
    Addi = 0x13, "addi", Scalar, Scalar { rd: Reg = 5, rs1: Reg = 5, imm: i32 = 32 };
    /// `rd = rs1 * sext(imm)`.
    Muli = 0x14, "muli", Scalar, Scalar { rd: Reg = 5, rs1: Reg = 5, imm: i32 = 32 };
    /// `rd = rs1 << sh`.
    Shli = 0x15, "shli", Scalar, Scalar { rd: Reg = 5, rs1: Reg = 5, sh: u32 = 6 };
    /// `rd = rs1 >> sh`, logical.
    Shri = 0x16, "shri", Scalar, Scalar { rd: Reg = 5, rs1: Reg = 5, sh: u32 = 6 };
    /// `rd = rs1 & sext(imm)`.
    Andi = 0x17, "andi", Scalar, Scalar { rd: Reg = 5, rs1: Reg = 5, imm: i32 = 32 };
    /// Branch to `target` if `rs1 == rs2`.
    Beq = 0x18, "beq", Scalar, Branch { rs1: Reg = 5, rs2: Reg = 5, target: Target = 32 };
    /// Branch to `target` if `rs1 != rs2`.
    Bne = 0x19, "bne", Scalar, Branch { rs1: Reg = 5, rs2: Reg = 5, target: Target = 32 };
    /// Branch to `target` if `rs1 < rs2`, signed.
    Blt = 0x1a, "blt", Scalar, Branch { rs1: Reg = 5, rs2: Reg = 5, target: Target = 32 };
    /// Branch to `target` if `rs1 >= rs2`, signed.
    Bge = 0x1b, "bge", Scalar, Branch { rs1: Reg = 5, rs2: Reg = 5, target: Target = 32 };
    /// Jump to `target`.
    Jmp = 0x1c, "jmp", Scalar, Branch { target: Target = 32 };
    /// `rd = i64 at SRAM[rs1 + off]` (little-endian, 8-byte aligned).
    Ld = 0x1d, "ld", Scalar, ScalarMem { rd: Reg = 5, rs1: Reg = 5, off: i32 = 32 };
    /// `rd = sext(i32 at SRAM[rs1 + off])` (4-byte aligned).
    Ld32 = 0x1e, "ld32", Scalar, ScalarMem { rd: Reg = 5, rs1: Reg = 5, off: i32 = 32 };
    /// `i64 at SRAM[rs1 + off] = rs` (8-byte aligned).
    St = 0x1f, "st", Scalar, ScalarMem { rs: Reg = 5, rs1: Reg = 5, off: i32 = 32 };
    /// Waits until every unit of this core has drained and every core has reached a barrier.
    Barrier = 0x20, "barrier", Scalar, Barrier {};
    /// Scalar unit (dispatch) waits until semaphore `sem >= count`, then subtracts `count`.
    Wait = 0x21, "wait", Scalar, Sync { sem: Sem = 5, count: u32 = 8 };
    /// Scalar unit adds one to semaphore `sem`.
    Signal = 0x22, "signal", Scalar, Sync { sem: Sem = 5 };
    /// `rd = ` the index of the executing core, so one stream can serve several cores.
    Cid = 0x23, "cid", Scalar, Scalar { rd: Reg = 5 };

    /// Strided HBM→SRAM move of `n2 × n1 × n0` elements of `dt`: source element `(i2, i1, i0)` at
    /// `hbm + (i2·hs2 + i1·hs1 + i0)·size` goes to `sram + (i2·ss2 + i1·ss1 + i0)·size`, or with
    /// `trans` to `sram + (i2·ss2 + i0·ss1 + i1)·size`. Strides are in elements.
    DmaLoad = 0x30, "dma.load", Dma, DmaCopy {
        sram: Reg = 5, hbm: Reg = 5, n0: u32 = 16, n1: u32 = 16, n2: u32 = 16,
        hs1: Reg = 5, hs2: Reg = 5, ss1: Reg = 5, ss2: Reg = 5, dt: DType = 4, layout: Layout = 1,
    };
    /// Strided SRAM→HBM move: source element `(i2, i1, i0)` at `sram + (i2·ss2 + i1·ss1 + i0)·size`
    /// goes to `hbm + (i2·hs2 + i1·hs1 + i0)·size`, or with `trans` to `hbm + (i2·hs2 + i0·hs1 + i1)·size`.
    DmaStore = 0x31, "dma.store", Dma, DmaCopy {
        sram: Reg = 5, hbm: Reg = 5, n0: u32 = 16, n1: u32 = 16, n2: u32 = 16,
        hs1: Reg = 5, hs2: Reg = 5, ss1: Reg = 5, ss2: Reg = 5, dt: DType = 4, layout: Layout = 1,
    };
    /// Row gather: for `r < count`, `rowlen` elements at `hbm + idx[r]·hs·size` go to
    /// `sram + r·ss·size`; `idx` is a vector of `idt` (i32 or i64) at SRAM address `idx`. An index
    /// outside `0..limit` traps (the table's rows; `limit = 0` checks nothing). Embedding lookups
    /// and paged-KV block reads through a block table.
    DmaGather = 0x32, "dma.gather", Dma, DmaIndexed {
        sram: Reg = 5, hbm: Reg = 5, idx: Reg = 5, count: u32 = 16, rowlen: u32 = 16,
        hs: Reg = 5, ss: Reg = 5, dt: DType = 4, idt: DType = 4, limit: u32 = 32,
    };
    /// Row scatter: for `r < count`, `rowlen` elements at `sram + r·ss·size` go to
    /// `hbm + idx[r]·hs·size`; an index outside `0..limit` traps (`0`: unchecked). Paged-KV
    /// appends in place.
    DmaScatter = 0x33, "dma.scatter", Dma, DmaIndexed {
        sram: Reg = 5, hbm: Reg = 5, idx: Reg = 5, count: u32 = 16, rowlen: u32 = 16,
        hs: Reg = 5, ss: Reg = 5, dt: DType = 4, idt: DType = 4, limit: u32 = 32,
    };
    /// DMA queue waits until semaphore `sem >= count`, then subtracts `count`.
    DmaWait = 0x34, "dma.wait", Dma, Sync { sem: Sem = 5, count: u32 = 8 };
    /// DMA queue adds one to `sem` once every earlier DMA instruction has completed.
    DmaSignal = 0x35, "dma.signal", Dma, Sync { sem: Sem = 5 };
    /// Multicast HBM→SRAM move: the `dma.load` of the same fields, read from HBM once and written
    /// at `sram` into the scratchpad of each of the `ncores` cores from `core0` (the issuing core
    /// need not be one of them). When the data has arrived, semaphore `sem` of each destination
    /// core gets one increment: a consumer waits there (`X.wait sem, n` after `n` multicasts), not
    /// on the issuing queue. Writing another core's scratchpad while that core still uses the bytes
    /// is a race. Traps on a target without it (`hbm.multicast = false`).
    DmaMcast = 0x36, "dma.mcast", Dma, DmaCopy {
        sram: Reg = 5, hbm: Reg = 5, n0: u32 = 16, n1: u32 = 16, n2: u32 = 16,
        hs1: Reg = 5, hs2: Reg = 5, ss1: Reg = 5, ss2: Reg = 5, dt: DType = 4, layout: Layout = 1,
        core0: u32 = 8, ncores: u32 = 9, sem: Sem = 5,
    };

    /// Tile matmul `C[m×n] (=|+=) A[m×k] · B[k×n]`: A and B are `dt` in SRAM at `a`, `b` with row
    /// strides `lda`, `ldb` (elements); C is f32 (i32 for i8/u8 inputs) in the accumulator at `acc`
    /// with row stride `ldc`. f32 and f64 inputs run at the reduced rate. Inputs are read as f32
    /// as the vector unit loads them (narrower floats widen exactly, f64 and wide integers round
    /// to nearest) and each element of C is computed on its own: the `k` products in increasing `p`, in
    /// chunks of 256; within a chunk a partial sum starts at `+0.0` and takes each product with one
    /// fused multiply-add (rounded to f32 once); the first chunk's sum is stored (`set`) or added
    /// to C (`acc`), each later chunk's sum is added to C. With `k = 0`, `set` writes zeros and
    /// `acc` leaves C unchanged. If rows of C overlap (`m > 1`, `|ldc| < n`), every row is computed
    /// from C as it was before the instruction and rows are written in order. i8/u8 inputs
    /// accumulate in wrapping i32.
    MxuMatmul = 0x40, "mxu.matmul", Mxu, Matmul {
        acc: Reg = 5, a: Reg = 5, b: Reg = 5, m: u32 = 16, k: u32 = 16, n: u32 = 16,
        lda: Reg = 5, ldb: Reg = 5, ldc: Reg = 5, dt: DType = 4, mode: AccMode = 1,
    };
    /// Matrix queue waits until semaphore `sem >= count`, then subtracts `count`.
    MxuWait = 0x44, "mxu.wait", Mxu, Sync { sem: Sem = 5, count: u32 = 8 };
    /// Matrix queue adds one to `sem` once every earlier matmul has completed.
    MxuSignal = 0x45, "mxu.signal", Mxu, Sync { sem: Sem = 5 };

    /// `dst = a + b` over `rows × cols`; `b` read per `bcast`. Computed in f32, rounded to `dst`'s type.
    VpuAdd = 0x50, "vpu.add", Vpu, VecSimple { dst: TileRef = 14, a: TileRef = 14, b: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = a - b`.
    VpuSub = 0x51, "vpu.sub", Vpu, VecSimple { dst: TileRef = 14, a: TileRef = 14, b: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = a * b`.
    VpuMul = 0x52, "vpu.mul", Vpu, VecSimple { dst: TileRef = 14, a: TileRef = 14, b: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = a / b` (IEEE division).
    VpuDiv = 0x53, "vpu.div", Vpu, VecSpecial { dst: TileRef = 14, a: TileRef = 14, b: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = max(a, b)`; NaN if either is NaN.
    VpuMax = 0x54, "vpu.max", Vpu, VecSimple { dst: TileRef = 14, a: TileRef = 14, b: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = min(a, b)`; NaN if either is NaN.
    VpuMin = 0x55, "vpu.min", Vpu, VecSimple { dst: TileRef = 14, a: TileRef = 14, b: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = (a == b) ? 1 : 0`.
    VpuEq = 0x56, "vpu.eq", Vpu, VecSimple { dst: TileRef = 14, a: TileRef = 14, b: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = (a < b) ? 1 : 0`.
    VpuLt = 0x57, "vpu.lt", Vpu, VecSimple { dst: TileRef = 14, a: TileRef = 14, b: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = (a <= b) ? 1 : 0`.
    VpuLe = 0x58, "vpu.le", Vpu, VecSimple { dst: TileRef = 14, a: TileRef = 14, b: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = (c != 0) ? a : b`, all full tiles.
    VpuSel = 0x59, "vpu.sel", Vpu, VecSimple { dst: TileRef = 14, c: TileRef = 14, a: TileRef = 14, b: TileRef = 14, rows: u32 = 16, cols: u32 = 16 };

    /// `dst = a + imm`.
    VpuAdds = 0x60, "vpu.adds", Vpu, VecSimple { dst: TileRef = 14, a: TileRef = 14, imm: f32 = 32, rows: u32 = 16, cols: u32 = 16 };
    /// `dst = a - imm`.
    VpuSubs = 0x61, "vpu.subs", Vpu, VecSimple { dst: TileRef = 14, a: TileRef = 14, imm: f32 = 32, rows: u32 = 16, cols: u32 = 16 };
    /// `dst = imm - a`.
    VpuRsubs = 0x62, "vpu.rsubs", Vpu, VecSimple { dst: TileRef = 14, a: TileRef = 14, imm: f32 = 32, rows: u32 = 16, cols: u32 = 16 };
    /// `dst = a * imm`.
    VpuMuls = 0x63, "vpu.muls", Vpu, VecSimple { dst: TileRef = 14, a: TileRef = 14, imm: f32 = 32, rows: u32 = 16, cols: u32 = 16 };
    /// `dst = a / imm`.
    VpuDivs = 0x64, "vpu.divs", Vpu, VecSpecial { dst: TileRef = 14, a: TileRef = 14, imm: f32 = 32, rows: u32 = 16, cols: u32 = 16 };
    /// `dst = max(a, imm)`.
    VpuMaxs = 0x65, "vpu.maxs", Vpu, VecSimple { dst: TileRef = 14, a: TileRef = 14, imm: f32 = 32, rows: u32 = 16, cols: u32 = 16 };
    /// `dst = min(a, imm)`.
    VpuMins = 0x66, "vpu.mins", Vpu, VecSimple { dst: TileRef = 14, a: TileRef = 14, imm: f32 = 32, rows: u32 = 16, cols: u32 = 16 };
    /// `dst = pow(a, imm)`.
    VpuPows = 0x67, "vpu.pows", Vpu, VecSpecial { dst: TileRef = 14, a: TileRef = 14, imm: f32 = 32, rows: u32 = 16, cols: u32 = 16 };

    /// `dst = a`, converting the element type (round to nearest even; integers saturate). With
    /// `row`/`col` broadcast it replicates a row or a column.
    VpuCopy = 0x70, "vpu.copy", Vpu, VecSimple { dst: TileRef = 14, a: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = exp(a)`.
    VpuExp = 0x71, "vpu.exp", Vpu, VecSpecial { dst: TileRef = 14, a: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = ln(a)`.
    VpuLog = 0x72, "vpu.log", Vpu, VecSpecial { dst: TileRef = 14, a: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = sqrt(a)`.
    VpuSqrt = 0x73, "vpu.sqrt", Vpu, VecSpecial { dst: TileRef = 14, a: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = 1 / sqrt(a)`.
    VpuRsqrt = 0x74, "vpu.rsqrt", Vpu, VecSpecial { dst: TileRef = 14, a: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = 1 / a`.
    VpuRecip = 0x75, "vpu.recip", Vpu, VecSpecial { dst: TileRef = 14, a: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = tanh(a)`.
    VpuTanh = 0x76, "vpu.tanh", Vpu, VecSpecial { dst: TileRef = 14, a: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = erf(a)`.
    VpuErf = 0x77, "vpu.erf", Vpu, VecSpecial { dst: TileRef = 14, a: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = 1 / (1 + exp(-a))`.
    VpuSigmoid = 0x78, "vpu.sigmoid", Vpu, VecSpecial { dst: TileRef = 14, a: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = -a`.
    VpuNeg = 0x79, "vpu.neg", Vpu, VecSimple { dst: TileRef = 14, a: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = |a|`.
    VpuAbs = 0x7a, "vpu.abs", Vpu, VecSimple { dst: TileRef = 14, a: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = sin(a)`.
    VpuSin = 0x7b, "vpu.sin", Vpu, VecSpecial { dst: TileRef = 14, a: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = cos(a)`.
    VpuCos = 0x7c, "vpu.cos", Vpu, VecSpecial { dst: TileRef = 14, a: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };

    /// `dst[i] = Σ_j a[i, j]`: one value per row, written at `dst + i·ld`.
    VpuRsum = 0x80, "vpu.rsum", Vpu, VecReduce { dst: TileRef = 14, a: TileRef = 14, rows: u32 = 16, cols: u32 = 16 };
    /// `dst[i] = max_j a[i, j]`.
    VpuRmax = 0x81, "vpu.rmax", Vpu, VecReduce { dst: TileRef = 14, a: TileRef = 14, rows: u32 = 16, cols: u32 = 16 };
    /// `dst[i] = min_j a[i, j]`.
    VpuRmin = 0x82, "vpu.rmin", Vpu, VecReduce { dst: TileRef = 14, a: TileRef = 14, rows: u32 = 16, cols: u32 = 16 };
    /// Scale-and-accumulate, the online-softmax rescale: `dst[i, j] = dst[i, j] · s[i] + b[i, j]`.
    VpuSacc = 0x84, "vpu.sacc", Vpu, VecSimple { dst: TileRef = 14, s: TileRef = 14, b: TileRef = 14, rows: u32 = 16, cols: u32 = 16 };
    /// `dst[i, j] = imm`.
    VpuFill = 0x85, "vpu.fill", Vpu, VecSimple { dst: TileRef = 14, imm: f32 = 32, rows: u32 = 16, cols: u32 = 16 };
    /// Causal mask: `dst[i, j] = imm` where `koff + j > qoff + i`; other elements unchanged.
    VpuCausal = 0x86, "vpu.causal", Vpu, VecSimple { dst: TileRef = 14, qoff: Reg = 5, koff: Reg = 5, imm: f32 = 32, rows: u32 = 16, cols: u32 = 16 };
    /// Softmax numerator and row sum in one pass of the special-function pipe:
    /// `dst[i, j] = exp((a[i, j] - m[i]) · imm)`, `sum[i] = Σ_j` of those values in f32 (before
    /// `dst`'s rounding). `m` and `sum` are columns (one element per row at `base + i·ld`). Priced
    /// as one special-function pass; `sum` is visible `⌈log2 L⌉` cycles after `dst` (the adder tree).
    VpuExpsum = 0x87, "vpu.expsum", Vpu, VecSpecial { dst: TileRef = 14, a: TileRef = 14, m: TileRef = 14, sum: TileRef = 14, imm: f32 = 32, rows: u32 = 16, cols: u32 = 16 };
    /// Vector queue waits until semaphore `sem >= count`, then subtracts `count`.
    VpuWait = 0x8e, "vpu.wait", Vpu, Sync { sem: Sem = 5, count: u32 = 8 };
    /// Vector queue adds one to `sem` once every earlier vector instruction has completed.
    VpuSignal = 0x8f, "vpu.signal", Vpu, Sync { sem: Sem = 5 };

    /// `dst = ⌊a⌋`: the largest integer not above `a` (±0, ±inf and NaN unchanged).
    VpuFloor = 0x90, "vpu.floor", Vpu, VecSimple { dst: TileRef = 14, a: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = ⌈a⌉`: the smallest integer not below `a` (±0, ±inf and NaN unchanged; `-0.5` gives `-0`).
    VpuCeil = 0x91, "vpu.ceil", Vpu, VecSimple { dst: TileRef = 14, a: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = trunc(a)`: `a` rounded toward zero (the sign of a zero result is `a`'s).
    VpuTrunc = 0x92, "vpu.trunc", Vpu, VecSimple { dst: TileRef = 14, a: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
    /// `dst = round(a)`: `a` rounded to the nearest integer, ties to even (`2.5` gives `2`, `-3.5` gives `-4`).
    VpuRound = 0x93, "vpu.round", Vpu, VecSimple { dst: TileRef = 14, a: TileRef = 14, rows: u32 = 16, cols: u32 = 16, bcast: Bcast = 2 };
}

impl Inst {
    /// For `dma.load`: the `dma.mcast` of the same move to cores `cores`, signalling `sem`.
    pub fn to_multicast(&self, cores: std::ops::Range<u32>, sem: Sem) -> Option<Inst> {
        match *self {
            Inst::DmaLoad {
                sram,
                hbm,
                n0,
                n1,
                n2,
                hs1,
                hs2,
                ss1,
                ss2,
                dt,
                layout,
            } => Some(Inst::DmaMcast {
                sram,
                hbm,
                n0,
                n1,
                n2,
                hs1,
                hs2,
                ss1,
                ss2,
                dt,
                layout,
                core0: cores.start,
                ncores: cores.end.saturating_sub(cores.start),
                sem,
            }),
            _ => None,
        }
    }

    /// For `dma.mcast`: the `dma.load` it performs on each destination core, the destination
    /// cores `core0 .. core0 + ncores` and the semaphore they are signalled on.
    pub fn multicast(&self) -> Option<(Inst, std::ops::Range<u32>, Sem)> {
        match *self {
            Inst::DmaMcast {
                sram,
                hbm,
                n0,
                n1,
                n2,
                hs1,
                hs2,
                ss1,
                ss2,
                dt,
                layout,
                core0,
                ncores,
                sem,
            } => Some((
                Inst::DmaLoad {
                    sram,
                    hbm,
                    n0,
                    n1,
                    n2,
                    hs1,
                    hs2,
                    ss1,
                    ss2,
                    dt,
                    layout,
                },
                core0..core0.saturating_add(ncores),
                sem,
            )),
            _ => None,
        }
    }
}

/// Looks an instruction up by mnemonic.
pub fn by_mnemonic(mnemonic: &str) -> Option<&'static InstDesc> {
    INSTRUCTIONS
        .iter()
        .copied()
        .find(|d| d.mnemonic == mnemonic)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::Space;

    #[test]
    fn an_unencodable_field_prints_its_real_value_and_raw_fields_reject_it() {
        let i = Inst::Add {
            rd: Reg(40),
            rs1: Reg(1),
            rs2: Reg(2),
        };
        assert_eq!(i.to_string(), "add r40, r1, r2");
        assert!(matches!(
            i.raw_fields(),
            Err(EncodeError::Field { field: "rd", .. })
        ));
        assert!(i.encode().is_err());
        let ok = Inst::Add {
            rd: Reg(3),
            rs1: Reg(1),
            rs2: Reg(2),
        };
        assert_eq!(ok.raw_fields().unwrap(), vec![3, 1, 2]);
    }

    #[test]
    fn opcodes_and_mnemonics_are_unique() {
        let mut ops: Vec<u8> = INSTRUCTIONS.iter().map(|d| d.opcode as u8).collect();
        ops.sort();
        ops.dedup();
        assert_eq!(ops.len(), INSTRUCTIONS.len());
        let mut names: Vec<&str> = INSTRUCTIONS.iter().map(|d| d.mnemonic).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), INSTRUCTIONS.len());
        assert!(Opcode::from_byte(0).is_none());
    }

    #[test]
    fn every_row_fits_the_word() {
        for d in INSTRUCTIONS {
            assert!(d.used_bits() <= 128, "{}", d.mnemonic);
        }
    }

    #[test]
    fn encode_decode_round_trips_a_matmul() {
        let i = Inst::MxuMatmul {
            acc: Reg(1),
            a: Reg(2),
            b: Reg(3),
            m: 128,
            k: 64,
            n: 65535,
            lda: Reg(4),
            ldb: Reg(5),
            ldc: Reg(31),
            dt: DType::BF16,
            mode: AccMode::Acc,
        };
        let bytes = i.encode().unwrap();
        assert_eq!(bytes[0], 0x40);
        assert_eq!(Inst::decode(&bytes).unwrap(), i);
        assert_eq!(
            i.to_string(),
            "mxu.matmul r1, r2, r3, 128, 64, 65535, r4, r5, r31, bf16, acc"
        );
    }

    #[test]
    fn decode_rejects_reserved_bits_and_unknown_opcodes() {
        let mut bytes = Inst::Nop {}.encode().unwrap();
        bytes[15] = 1;
        assert!(matches!(
            Inst::decode(&bytes),
            Err(DecodeError::ReservedBits { .. })
        ));
        assert_eq!(
            Inst::decode(&[0; INST_BYTES]),
            Err(DecodeError::UnknownOpcode(0))
        );
    }

    #[test]
    fn encode_rejects_out_of_range_fields() {
        let i = Inst::Li {
            rd: Reg(32),
            imm: 0,
        };
        assert!(matches!(
            i.encode(),
            Err(EncodeError::Field { field: "rd", .. })
        ));
    }

    #[test]
    fn vector_ops_print_tile_operands() {
        let t = |space, addr| TileRef {
            space,
            dtype: DType::F32,
            addr: Reg(addr),
            ld: Reg(9),
        };
        let i = Inst::VpuAdd {
            dst: t(Space::Sram, 1),
            a: t(Space::Acc, 2),
            b: t(Space::Sram, 3),
            rows: 8,
            cols: 16,
            bcast: Bcast::Row,
        };
        assert_eq!(
            i.to_string(),
            "vpu.add sram.f32[r1, r9], acc.f32[r2, r9], sram.f32[r3, r9], 8, 16, row"
        );
        assert_eq!(Inst::decode(&i.encode().unwrap()).unwrap(), i);
    }
}
