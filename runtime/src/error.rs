//! Errors of the emulator: every way a run can stop early.
//!
//! Invariants: every error that comes from executing an instruction names the core, the pc and the
//! instruction's assembly text; every memory error also names the memory space, the address range
//! and the size of the space. Addresses are kept as `i128` so that negative or overflowing register
//! arithmetic is reported as computed, never wrapped.

use crate::npy::NpyError;
use llmpu_isa::{DType, ProgramError};
use std::fmt;

/// A memory space of the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemSpace {
    /// Shared off-chip memory.
    Hbm,
    /// A core's scratchpad SRAM.
    Sram,
    /// A core's accumulator SRAM.
    Acc,
}

impl MemSpace {
    /// Upper-case name used in messages (`HBM`, `SRAM`, `ACC`).
    pub fn name(self) -> &'static str {
        match self {
            MemSpace::Hbm => "HBM",
            MemSpace::Sram => "SRAM",
            MemSpace::Acc => "ACC",
        }
    }
}

impl fmt::Display for MemSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Formats `[lo, hi)` in hex, with a sign for negative addresses.
pub(crate) fn hex_range(lo: i128, hi: i128) -> String {
    format!("[{}, {})", hex(lo), hex(hi))
}

/// Formats an address in hex, with a sign when negative.
pub(crate) fn hex(v: i128) -> String {
    if v < 0 {
        format!("-{:#x}", v.unsigned_abs())
    } else {
        format!("{v:#x}")
    }
}

/// What went wrong inside one instruction.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TrapKind {
    #[error("{space} access {} is out of bounds ({space} size {size:#x})", hex_range(*lo, *hi))]
    OutOfBounds {
        space: MemSpace,
        lo: i128,
        hi: i128,
        size: u64,
    },
    #[error("{space} address {} is not {align}-byte aligned", hex(*addr))]
    Misaligned {
        space: MemSpace,
        addr: i128,
        align: u64,
    },
    #[error("division by zero")]
    DivByZero,
    #[error(
        "index {position} (value {value}) addresses HBM {} outside HBM (size {size:#x})",
        hex_range(*lo, *hi)
    )]
    BadIndex {
        position: u64,
        value: i64,
        lo: i128,
        hi: i128,
        size: u64,
    },
    #[error("index {value} at position {position} is outside the table's rows 0..{limit}")]
    IndexPastTable {
        position: u64,
        value: i64,
        limit: u32,
    },
    #[error("index vector type {0} is not i32 or i64")]
    BadIndexType(DType),
    #[error("operand of {elements} elements exceeds the emulator's staging limit of {limit}")]
    TooLarge { elements: u64, limit: u64 },
    #[error(
        "multicast to cores {first}..{} is not a non-empty range of the machine's {cores} cores",
        *first as u64 + *count as u64
    )]
    BadCores {
        first: u32,
        count: u32,
        cores: usize,
    },
    #[error("the target `{0}` has no multicast DMA (`hbm.multicast = false`)")]
    NoMulticast(String),
    /// A read of bytes never written (`--check-uninit`).
    #[error(
        "reads {count} never-written byte(s) of {space} {} (first at {}) — uninitialized memory (--check-uninit)",
        hex_range(*lo as i128, *hi as i128), hex(*first as i128)
    )]
    Uninit {
        space: MemSpace,
        lo: u64,
        hi: u64,
        first: u64,
        count: u64,
    },
}

/// One side of a data race: an instruction and what it does to the range.
#[derive(Clone, Debug, PartialEq)]
pub struct RaceSide {
    pub core: usize,
    pub unit: &'static str,
    pub pc: u32,
    pub inst: String,
    pub write: bool,
}

/// An error that stops a run.
#[derive(Debug, thiserror::Error)]
pub enum EmuError {
    #[error("invalid program: {0}")]
    Program(#[from] ProgramError),
    #[error("input `{0}` is required by the program but was not given")]
    MissingInput(String),
    #[error("input `{0}` is not an input of the program (inputs: {1})")]
    UnknownInput(String, String),
    #[error("input `{0}` was given twice")]
    DuplicateInput(String),
    #[error("input `{name}`: expected {expected}, got {got}")]
    InputMismatch {
        name: String,
        expected: String,
        got: String,
    },
    #[error("tensor `{name}`: {message}")]
    BadTensor { name: String, message: String },
    #[error("core {core} pc {pc} (`{inst}`): {kind}")]
    Trap {
        core: usize,
        pc: u32,
        inst: String,
        kind: TrapKind,
    },
    #[error(
        "data race: core {} {} pc {} ({}) {} {space} {} while core {} {} pc {} ({}) {} it until cycle {until} — add a semaphore",
        first.core, first.unit, first.pc, first.inst, if first.write { "writes" } else { "reads" },
        hex_range(*lo as i128, *hi as i128),
        second.core, second.unit, second.pc, second.inst, if second.write { "writes" } else { "reads" }
    )]
    Race {
        first: Box<RaceSide>,
        second: Box<RaceSide>,
        space: MemSpace,
        lo: u64,
        hi: u64,
        until: u64,
    },
    #[error(
        "instruction limit of {limit} reached at core {core} pc {pc} (cycle {cycle}); raise it with --max-instructions"
    )]
    InstructionLimit {
        limit: u64,
        core: usize,
        pc: u32,
        cycle: u64,
    },
    #[error(
        "cycle limit of {limit} reached at core {core} pc {pc} (`{inst}` would run until cycle {cycle})"
    )]
    CycleLimit {
        limit: u64,
        core: usize,
        pc: u32,
        inst: String,
        cycle: u64,
    },
    #[error(
        "work limit of {limit} reached at core {core} pc {pc} (`{inst}` would do {work} element operations after {done}); raise it with --max-work or run with --timing-only"
    )]
    WorkLimit {
        limit: u64,
        done: u64,
        core: usize,
        pc: u32,
        inst: String,
        work: u64,
    },
    #[error("core {core} ran past the end of its {len}-instruction stream without `halt`")]
    MissingHalt { core: usize, len: usize },
    #[error("deadlock at cycle {cycle}: every unit is blocked:\n  {}", blocked.join("\n  "))]
    Deadlock { cycle: u64, blocked: Vec<String> },
    #[error("target not supported by the emulator: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Npy(#[from] NpyError),
}
