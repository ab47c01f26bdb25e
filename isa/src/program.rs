//! A linked LLMPU program: one instruction stream per core, constant data placed in HBM, the I/O
//! tensor descriptors, the target it was built for, labels and the debug map.
//!
//! This is what the assembler produces, what the binary container stores and what the emulator
//! loads. [`Program::validate`] states the invariants every consumer may rely on: at least one core
//! and no more than the target has; branch targets inside their stream; data and I/O tensors inside
//! HBM, aligned and not overlapping one another; labels and debug entries pointing at instructions.

use crate::fields::DType;
use crate::inst::Inst;
use crate::target::Target;

/// Alignment of constant data and I/O tensors in HBM, in bytes.
pub const HBM_ALIGN: u64 = 64;

/// Constant data placed in HBM before the program starts (weights).
#[derive(Clone, Debug, PartialEq)]
pub struct DataSegment {
    pub name: String,
    pub hbm_addr: u64,
    pub bytes: Vec<u8>,
}

/// Whether an I/O tensor is written by the host before the run or read after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoDir {
    Input,
    Output,
}

impl IoDir {
    pub fn name(self) -> &'static str {
        match self {
            IoDir::Input => "input",
            IoDir::Output => "output",
        }
    }
}

/// A tensor the host exchanges with the program through HBM (row-major, dense).
#[derive(Clone, Debug, PartialEq)]
pub struct IoTensor {
    pub name: String,
    pub dir: IoDir,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub hbm_addr: u64,
}

impl IoTensor {
    /// Number of elements, or `None` if it does not fit in 64 bits. A shape with a zero dimension
    /// has zero elements however large the other dimensions are.
    pub fn elements(&self) -> Option<u64> {
        if self.shape.contains(&0) {
            return Some(0);
        }
        self.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
    }

    /// Size in bytes, or `None` if it does not fit in 64 bits.
    pub fn bytes(&self) -> Option<u64> {
        self.elements()?.checked_mul(self.dtype.size())
    }
}

/// One cache tensor (one layer's keys or values) inside the paged KV region
/// (`spec/kv-cache.md`). Block `p` of this slot's pool starts at
/// `pool_addr + p · heads · block_tokens · head_dim · size` and holds `[heads, block_tokens,
/// head_dim]` elements, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvSlot {
    /// Graph input holding the dense past `[batch, heads, past_len, head_dim]`.
    pub past: String,
    /// Graph output holding the dense present `[batch, heads, past_len + new_tokens, head_dim]`.
    pub present: String,
    /// Position of `past` among the graph's inputs.
    pub past_index: u32,
    /// Position of `present` among the graph's outputs.
    pub present_index: u32,
    pub heads: u64,
    pub head_dim: u64,
    /// HBM address of this slot's block pool (`num_blocks` blocks).
    pub pool_addr: u64,
}

/// The persistent, paged KV-cache region of a decode program: a header at `table_addr` — the
/// block table (`i32 [batch, max_blocks]`, physical block per logical block of each sequence) and
/// the cached length of each sequence (`i32 [batch]`, a run-time value) — and one block pool per
/// slot. The host keeps the region in HBM between runs; a run appends `new_tokens` tokens at
/// positions `length .. length + new_tokens` of each sequence, in place. `past_len` is the
/// compiled past extent (the capacity the graph sees), not the run-time length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvRegion {
    pub hbm_addr: u64,
    pub bytes: u64,
    pub dtype: DType,
    pub block_tokens: u64,
    pub batch: u64,
    /// Block-table entries per sequence.
    pub max_blocks: u64,
    /// Physical blocks in every slot's pool.
    pub num_blocks: u64,
    /// Tokens cached before the run.
    pub past_len: u64,
    /// Tokens one run appends.
    pub new_tokens: u64,
    pub table_addr: u64,
    pub slots: Vec<KvSlot>,
}

impl KvRegion {
    /// Bytes of one physical block of `slot`, or `None` on overflow.
    pub fn block_bytes(&self, slot: &KvSlot) -> Option<u64> {
        slot.heads
            .checked_mul(self.block_tokens)?
            .checked_mul(slot.head_dim)?
            .checked_mul(self.dtype.size())
    }

    /// Bytes of the region header: the block table (`i32 [batch, max_blocks]`) followed by the
    /// cached length of every sequence (`i32 [batch]`), or `None` on overflow.
    pub fn table_bytes(&self) -> Option<u64> {
        self.batch
            .checked_mul(self.max_blocks.checked_add(1)?)?
            .checked_mul(4)
    }

    /// HBM address of the per-sequence cached lengths (right after the block table).
    pub fn lengths_addr(&self) -> u64 {
        self.table_addr + self.batch * self.max_blocks * 4
    }

    /// Checks that the table and every pool lie inside the region without overlapping, and that
    /// the cached plus appended tokens fit the block table.
    pub fn validate(&self) -> Result<(), String> {
        let end = self
            .hbm_addr
            .checked_add(self.bytes)
            .ok_or("region end overflows")?;
        if self.block_tokens == 0 {
            return Err("block_tokens is 0".into());
        }
        let cap = self
            .max_blocks
            .checked_mul(self.block_tokens)
            .ok_or("capacity overflows")?;
        if self
            .past_len
            .checked_add(self.new_tokens)
            .is_none_or(|t| t > cap)
        {
            return Err(format!(
                "{} cached + {} new tokens exceed {} blocks of {} tokens",
                self.past_len, self.new_tokens, self.max_blocks, self.block_tokens
            ));
        }
        if self.num_blocks < self.max_blocks {
            return Err(format!(
                "{} physical blocks cannot back {} blocks of one sequence",
                self.num_blocks, self.max_blocks
            ));
        }
        let mut spans = vec![(
            self.table_addr,
            self.table_bytes().ok_or("table size overflows")?,
            "block table".to_string(),
        )];
        for s in &self.slots {
            let b = self
                .block_bytes(s)
                .and_then(|b| b.checked_mul(self.num_blocks))
                .ok_or_else(|| format!("slot `{}`: pool size overflows", s.past))?;
            spans.push((s.pool_addr, b, format!("pool of `{}`", s.past)));
        }
        for (a, n, what) in &spans {
            if *a < self.hbm_addr || a.checked_add(*n).is_none_or(|e| e > end) {
                return Err(format!("{what} lies outside the region"));
            }
            if a % HBM_ALIGN != 0 {
                return Err(format!("{what} is not {HBM_ALIGN}-byte aligned"));
            }
        }
        spans.sort();
        for w in spans.windows(2) {
            if w[1].0 < w[0].0 + w[0].1 {
                return Err(format!("{} overlaps {}", w[0].2, w[1].2));
            }
        }
        Ok(())
    }
}

/// A named instruction position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    pub core: u32,
    pub pc: u32,
    pub name: String,
}

/// A source location that applies to the instructions of `core` from `pc` up to the next entry of
/// the same core. Entries are sorted by `(core, pc)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugLoc {
    pub core: u32,
    pub pc: u32,
    pub loc: String,
}

/// The values an integer input may hold: every element of `input` must lie in `[lo, hi)`,
/// because it indexes rows of a table (op `loc`, e.g. token ids into an embedding: `[-rows,
/// rows)` as ONNX Gather allows). The host checks inputs against it before a run, so an
/// out-of-range id is an error rather than a read past the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexBound {
    pub input: String,
    pub lo: i64,
    pub hi: i64,
    pub loc: String,
}

/// A whole program.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    pub target: Target,
    /// Instruction streams, indexed by core.
    pub cores: Vec<Vec<Inst>>,
    pub data: Vec<DataSegment>,
    pub io: Vec<IoTensor>,
    pub labels: Vec<Label>,
    pub debug: Vec<DebugLoc>,
    /// The paged KV-cache region of a decode program (`spec/kv-cache.md`).
    pub kv: Option<KvRegion>,
    /// Value ranges of integer inputs that index tables.
    pub bounds: Vec<IndexBound>,
    /// The storage precision the compiler used (`fp32` or `bf16`; `None` for assembly): it picks
    /// the tolerance `llmpu run --expect` compares with.
    pub precision: Option<String>,
}

/// A violated program invariant.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    #[error("program has no cores")]
    NoCores,
    #[error("program uses {used} cores but target `{target}` has {available}")]
    TooManyCores {
        used: usize,
        available: u32,
        target: String,
    },
    #[error(
        "core {core} pc {pc}: `{inst}` branches to {dest}, outside the stream of {len} instructions"
    )]
    BranchOutOfRange {
        core: usize,
        pc: usize,
        inst: String,
        dest: i64,
        len: usize,
    },
    #[error("{what} `{name}` at HBM {addr:#x}+{len:#x} is outside HBM ({size:#x} bytes)")]
    OutsideHbm {
        what: &'static str,
        name: String,
        addr: u64,
        len: u64,
        size: u64,
    },
    #[error("{what} `{name}` at HBM {addr:#x} is not {HBM_ALIGN}-byte aligned")]
    Misaligned {
        what: &'static str,
        name: String,
        addr: u64,
    },
    #[error("`{a}` and `{b}` overlap in HBM")]
    Overlap { a: String, b: String },
    #[error("duplicate name `{0}`")]
    DuplicateName(String),
    #[error("index bound [{lo}, {hi}) of `{input}`: empty, or not a program input")]
    BadBound { input: String, lo: i64, hi: i64 },
    #[error("{what} at core {core} pc {pc} points past the end of the stream")]
    BadPosition {
        what: &'static str,
        core: u32,
        pc: u32,
    },
    #[error("KV region: {0}")]
    BadKv(String),
    #[error("debug map is not sorted at core {core} pc {pc}")]
    UnsortedDebug { core: u32, pc: u32 },
    #[error("{what} `{name}` is too large (its byte size overflows 64 bits)")]
    TensorTooLarge { what: &'static str, name: String },
}

impl Program {
    /// An empty program for `target` with `cores` empty streams.
    pub fn new(target: Target, cores: usize) -> Program {
        Program {
            target,
            cores: vec![Vec::new(); cores],
            data: Vec::new(),
            io: Vec::new(),
            labels: Vec::new(),
            debug: Vec::new(),
            kv: None,
            bounds: Vec::new(),
            precision: None,
        }
    }

    /// The I/O tensor of this name.
    pub fn io(&self, name: &str) -> Option<&IoTensor> {
        self.io.iter().find(|t| t.name == name)
    }

    /// The source location of `core`'s instruction at `pc`, if the debug map has one.
    pub fn loc_of(&self, core: u32, pc: u32) -> Option<&str> {
        let i = self.debug.partition_point(|d| (d.core, d.pc) <= (core, pc));
        let d = self.debug.get(i.checked_sub(1)?)?;
        (d.core == core).then_some(d.loc.as_str())
    }

    /// Checks every invariant listed in the module documentation.
    pub fn validate(&self) -> Result<(), ProgramError> {
        if self.cores.is_empty() {
            return Err(ProgramError::NoCores);
        }
        if self.cores.len() > self.target.cores as usize {
            return Err(ProgramError::TooManyCores {
                used: self.cores.len(),
                available: self.target.cores,
                target: self.target.name.clone(),
            });
        }
        for (core, stream) in self.cores.iter().enumerate() {
            for (pc, inst) in stream.iter().enumerate() {
                if let Some(off) = inst.branch_offset() {
                    let dest = pc as i64 + off as i64;
                    if dest < 0 || dest >= stream.len() as i64 {
                        return Err(ProgramError::BranchOutOfRange {
                            core,
                            pc,
                            inst: inst.to_string(),
                            dest,
                            len: stream.len(),
                        });
                    }
                }
            }
        }
        let size = self.target.hbm.size_bytes;
        let mut spans: Vec<(u64, u64, &str)> = Vec::new();
        let mut names = std::collections::HashSet::new();
        let regions = self
            .data
            .iter()
            .map(|d| ("data", &d.name, d.hbm_addr, Some(d.bytes.len() as u64)))
            .chain(
                self.io
                    .iter()
                    .map(|t| (t.dir.name(), &t.name, t.hbm_addr, t.bytes())),
            );
        for (what, name, addr, len) in regions {
            if !names.insert(name.as_str()) {
                return Err(ProgramError::DuplicateName(name.clone()));
            }
            let Some(len) = len else {
                return Err(ProgramError::TensorTooLarge {
                    what,
                    name: name.clone(),
                });
            };
            if addr.checked_add(len).is_none_or(|end| end > size) {
                return Err(ProgramError::OutsideHbm {
                    what,
                    name: name.clone(),
                    addr,
                    len,
                    size,
                });
            }
            if addr % HBM_ALIGN != 0 {
                return Err(ProgramError::Misaligned {
                    what,
                    name: name.clone(),
                    addr,
                });
            }
            if len > 0 {
                spans.push((addr, addr + len, name));
            }
        }
        if let Some(kv) = &self.kv {
            kv.validate().map_err(ProgramError::BadKv)?;
            for s in &kv.slots {
                for n in [&s.past, &s.present] {
                    if !names.insert(n.as_str()) {
                        return Err(ProgramError::DuplicateName(n.clone()));
                    }
                }
            }
            if kv.hbm_addr.checked_add(kv.bytes).is_none_or(|e| e > size) {
                return Err(ProgramError::OutsideHbm {
                    what: "kv",
                    name: "kv region".into(),
                    addr: kv.hbm_addr,
                    len: kv.bytes,
                    size,
                });
            }
            if kv.bytes > 0 {
                spans.push((kv.hbm_addr, kv.hbm_addr + kv.bytes, "kv region"));
            }
        }
        for b in &self.bounds {
            if b.lo >= b.hi || self.io(&b.input).is_none_or(|t| t.dir != IoDir::Input) {
                return Err(ProgramError::BadBound {
                    input: b.input.clone(),
                    lo: b.lo,
                    hi: b.hi,
                });
            }
        }
        spans.sort();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(ProgramError::Overlap {
                    a: w[0].2.into(),
                    b: w[1].2.into(),
                });
            }
        }
        let in_stream = |core: u32, pc: u32| {
            self.cores
                .get(core as usize)
                .is_some_and(|s| (pc as usize) < s.len().max(1))
        };
        for l in &self.labels {
            let ok = self
                .cores
                .get(l.core as usize)
                .is_some_and(|s| l.pc as usize <= s.len());
            if !ok {
                return Err(ProgramError::BadPosition {
                    what: "label",
                    core: l.core,
                    pc: l.pc,
                });
            }
        }
        for (i, d) in self.debug.iter().enumerate() {
            if !in_stream(d.core, d.pc) {
                return Err(ProgramError::BadPosition {
                    what: "debug entry",
                    core: d.core,
                    pc: d.pc,
                });
            }
            if i > 0 && (self.debug[i - 1].core, self.debug[i - 1].pc) >= (d.core, d.pc) {
                return Err(ProgramError::UnsortedDebug {
                    core: d.core,
                    pc: d.pc,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::Target as BranchTarget;

    fn prog() -> Program {
        let mut p = Program::new(Target::default_target(), 1);
        p.cores[0] = vec![Inst::Nop {}, Inst::Halt {}];
        p
    }

    #[test]
    fn branches_outside_the_stream_are_rejected() {
        let mut p = prog();
        p.cores[0].insert(
            0,
            Inst::Jmp {
                target: BranchTarget(5),
            },
        );
        assert!(matches!(
            p.validate(),
            Err(ProgramError::BranchOutOfRange { dest: 5, .. })
        ));
    }

    #[test]
    fn overlapping_and_misaligned_regions_are_rejected() {
        let mut p = prog();
        p.data.push(DataSegment {
            name: "w".into(),
            hbm_addr: 0,
            bytes: vec![0; 128],
        });
        p.io.push(IoTensor {
            name: "x".into(),
            dir: IoDir::Input,
            dtype: DType::F32,
            shape: vec![4],
            hbm_addr: 64,
        });
        assert!(matches!(p.validate(), Err(ProgramError::Overlap { .. })));
        p.io[0].hbm_addr = 130;
        assert!(matches!(p.validate(), Err(ProgramError::Misaligned { .. })));
        p.io[0].hbm_addr = 128;
        p.validate().unwrap();
    }

    #[test]
    fn io_tensor_sizes_are_checked_and_a_zero_dim_means_empty() {
        let mut t = IoTensor {
            name: "x".into(),
            dir: IoDir::Output,
            dtype: DType::F32,
            shape: vec![1 << 62, 4],
            hbm_addr: 0,
        };
        assert_eq!(t.elements(), None);
        assert_eq!(t.bytes(), None);
        t.shape = vec![1 << 61, 4];
        assert_eq!(t.elements(), Some(1 << 63));
        assert_eq!(t.bytes(), None);
        t.shape = vec![1 << 63, 1 << 63, 0];
        assert_eq!(t.elements(), Some(0));
        assert_eq!(t.bytes(), Some(0));
        t.shape = vec![1 << 40, 1 << 40];
        assert_eq!(t.elements(), None);
        let mut p = prog();
        p.io.push(t);
        assert!(matches!(
            p.validate(),
            Err(ProgramError::TensorTooLarge { .. })
        ));
    }

    #[test]
    fn debug_locations_apply_until_the_next_entry() {
        let mut p = prog();
        p.cores[0].push(Inst::Nop {});
        p.debug = vec![
            DebugLoc {
                core: 0,
                pc: 0,
                loc: "a".into(),
            },
            DebugLoc {
                core: 0,
                pc: 2,
                loc: "b".into(),
            },
        ];
        p.validate().unwrap();
        assert_eq!(p.loc_of(0, 1), Some("a"));
        assert_eq!(p.loc_of(0, 2), Some("b"));
        assert_eq!(p.loc_of(1, 0), None);
    }
}
