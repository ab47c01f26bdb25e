//! The LLMPU machine description: the instruction set as one table ([`inst`]), operand field types
//! ([`fields`]), machine configurations ([`target`]), the per-instruction cost model ([`cost`]),
//! element-type numerics ([`numerics`]), programs ([`program`]) and their ELF container ([`binary`]).
//!
//! Everything downstream — assembler, emulator, compiler back end and the generated `spec/isa.md` —
//! derives from the table in [`inst`]; nothing else lists instructions.

pub mod binary;
pub mod cost;
pub mod fields;
pub mod inst;
pub mod limits;
pub mod numerics;
pub mod program;
pub mod spec;
pub mod suggest;
pub mod target;

pub use binary::BinaryError;
pub use cost::{Cost, cost};
pub use fields::{
    AccMode, Bcast, DType, Field, FieldKind, Layout, Reg, Sem, Space, Target as BranchTarget,
    TileRef,
};
pub use inst::{
    CostClass, DecodeError, EncodeError, FieldDesc, INST_BYTES, INSTRUCTIONS, Inst, InstDesc,
    Opcode, Unit,
};
pub use program::{
    DataSegment, DebugLoc, IndexBound, IoDir, IoTensor, KvRegion, KvSlot, Label, Program,
    ProgramError,
};
pub use target::Target;
