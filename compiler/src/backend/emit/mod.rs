//! The instruction emitter the kernels write through: one straight-line stream per core, a register
//! cache, on-chip buffer allocation and **automatic synchronization**.
//!
//! Kernels are written as if every instruction ran to completion before the next one started; the
//! emitter makes that true on the decoupled machine. It knows every register value at compile time
//! (the code is straight-line), so it knows the exact on-chip byte range (the bounding range, as
//! the emulator's race check computes it) every DMA, matrix and vector instruction touches. When a
//! new instruction on unit Y conflicts (read-after-write, write-after-read or write-after-write) with
//! an earlier instruction J on another unit X that Y has not yet waited for, the emitter places an
//! `X.signal s(X→Y)` directly after J in X's program order and a `Y.wait s(X→Y), 1` directly before
//! the new instruction. Each ordered unit pair has its own counting semaphore; signals are placed
//! in increasing X order and waits consumed in increasing Y order, so the k-th wait is released by
//! the k-th signal. Instructions of the same unit need nothing: the hardware interlocks them.
//! Overlap (double buffering) therefore follows from the kernels alternating buffers: a DMA into
//! buffer B does not conflict with compute on buffer A, so nothing orders them.
//!
//! Invariants: every wait refers to a signal placed earlier in the stream, so the program cannot
//! deadlock; `barrier` drains all units, after which no earlier instruction can conflict, so the
//! histories are cleared. Register `r0` is never written.
//!
//! Files: this one holds the streams, the instructions and their synchronization; `alloc.rs` the
//! on-chip buffer arenas, `regs.rs` the register cache and run-time registers, `roll.rs` the
//! rolling of uniform iterations into counted loops.

use std::collections::BTreeMap;
use std::sync::Arc;

use llmpu_isa::{BranchTarget, Inst, Reg, Sem, Target, Unit};

mod alloc;
mod regs;
mod roll;
pub use alloc::Arena;
pub use roll::{Repeat, Sweep};

/// An on-chip memory space, as the emitter tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mem {
    Sram,
    Acc,
}

/// A byte range touched by an instruction.
#[derive(Clone, Copy, Debug)]
pub struct Touch {
    pub mem: Mem,
    pub lo: u64,
    pub hi: u64,
    pub write: bool,
}

impl Touch {
    pub fn read(mem: Mem, lo: u64, hi: u64) -> Touch {
        Touch {
            mem,
            lo,
            hi,
            write: false,
        }
    }
    pub fn write(mem: Mem, lo: u64, hi: u64) -> Touch {
        Touch {
            mem,
            lo,
            hi,
            write: true,
        }
    }
    fn conflicts(&self, o: &Touch) -> bool {
        self.mem == o.mem && (self.write || o.write) && self.lo < o.hi && o.lo < self.hi
    }
}

/// Bounding byte range `[lo, hi)` (clamped at 0) of `size`-byte elements at
/// `base + Σ i_k·stride_k·size`, every `n_k ≥ 1`.
fn hbm_extent(base: i64, size: u64, dims: &[(u64, i64)]) -> (u64, u64) {
    let (mut lo, mut hi) = (base as i128, base as i128);
    for &(n, s) in dims {
        let span = (n as i128 - 1) * s as i128 * size as i128;
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    let clamp = |x: i128| x.clamp(0, u64::MAX as i128) as u64;
    (clamp(lo), clamp(hi + size as i128))
}

/// One emitted instruction with its source location.
#[derive(Clone, Debug)]
pub struct Item {
    pub inst: Inst,
    pub loc: Arc<str>,
}

const UNITS: usize = 4;
/// DMAs with at most this many contiguous runs have their HBM bytes recorded run by run (more:
/// by bounding range).
const EXACT_RUNS: u64 = 64;
/// The same for stores, which are what makes ops conflict: a column tile of a matmul split over
/// cores by columns is one strided store of up to this many rows, and other cores' interleaved
/// rows must not count as conflicts (else the next op waits for a barrier before its prologue).
const EXACT_WRITE_RUNS: u64 = 4096;
/// How far back the conflict scan looks before it synchronizes conservatively.
const SCAN_LIMIT: usize = 256;

fn unit_index(u: Unit) -> usize {
    u.index()
}

/// Semaphore used for "X has reached here" signals consumed by Y.
fn sem_for(x: usize, y: usize) -> Sem {
    Sem((1 + x * UNITS + y) as u8)
}

/// The stream of one core under construction.
#[derive(Clone, Debug, Default)]
struct Stream {
    items: Vec<Item>,
    /// Signals to insert after item index `i` (in emission order).
    after: BTreeMap<usize, Vec<Item>>,
    /// Waits to insert before item index `i`.
    before: BTreeMap<usize, Vec<Item>>,
    /// Per unit: (item index, touches) of instructions since the last barrier.
    hist: [Vec<(usize, Vec<Touch>)>; UNITS],
    /// `synced[y][x]`: Y has waited for every X instruction with item index < this.
    synced: [[usize; UNITS]; UNITS],
    /// Register contents known at compile time, with a use stamp for LRU replacement.
    regs: [Option<i64>; 32],
    stamp: [u64; 32],
    clock: u64,
    /// Forward branches: (item index of the branch, label id).
    branches: Vec<(usize, usize)>,
    /// Label id → item index it marks.
    labels: BTreeMap<usize, usize>,
    /// Counted loops rolled from repeated copies ([`roll`]).
    rolled: Vec<roll::Rolled>,
    /// First item of a rolled body → indices of the loops starting there.
    loop_at: BTreeMap<usize, Vec<usize>>,
    /// End of a rolled body → end of the dead copies after it.
    dead_at: BTreeMap<usize, usize>,
    /// Instructions replaced (or removed) by rolling: `li` of an induction becomes `addi`.
    subst: std::collections::HashMap<roll::Src, Option<Inst>>,
    /// HBM extents noted while a repeat is open, in emission order (`(lo, hi, write)`).
    ext: Vec<(u64, u64, bool)>,
}

/// Registers kept clear of values inside loops (the top ones): loop nest depth `d` counts its
/// trips in register `31 − d`, so a loop's code is the same wherever the loops around it are.
pub(super) const LOOP_REGS: usize = 3;

/// Merged byte intervals `[lo, hi)`.
#[derive(Clone, Debug, Default)]
struct Ranges(BTreeMap<u64, u64>);

impl Ranges {
    fn insert(&mut self, lo: u64, hi: u64) {
        if lo >= hi {
            return;
        }
        let (mut lo, mut hi) = (lo, hi);
        // Merge with every interval that overlaps or touches [lo, hi).
        let touching: Vec<(u64, u64)> = self
            .0
            .range(..=hi)
            .rev()
            .take_while(|(_, h)| **h >= lo)
            .map(|(l, h)| (*l, *h))
            .collect();
        for (l, h) in touching {
            self.0.remove(&l);
            lo = lo.min(l);
            hi = hi.max(h);
        }
        self.0.insert(lo, hi);
    }

    fn overlaps(&self, lo: u64, hi: u64) -> bool {
        lo < hi && self.0.range(..hi).next_back().is_some_and(|(_, h)| *h > lo)
    }

    fn overlaps_any(&self, o: &Ranges) -> bool {
        let (small, big) = if self.0.len() <= o.0.len() {
            (self, o)
        } else {
            (o, self)
        };
        small.0.iter().any(|(l, h)| big.overlaps(*l, *h))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The HBM bytes one core's DMAs touched (bounding range of each DMA).
#[derive(Clone, Debug, Default)]
struct HbmSet {
    reads: Ranges,
    writes: Ranges,
    /// Some DMA's addresses are only known at run time (paged KV, gather indices).
    unknown: bool,
}

impl HbmSet {
    fn is_empty(&self) -> bool {
        self.reads.is_empty() && self.writes.is_empty() && !self.unknown
    }
    /// Ordering `self` after `o` on different cores needs a barrier.
    fn conflicts(&self, o: &HbmSet) -> bool {
        if self.is_empty() || o.is_empty() {
            return false;
        }
        self.unknown
            || o.unknown
            || self.writes.overlaps_any(&o.writes)
            || self.writes.overlaps_any(&o.reads)
            || self.reads.overlaps_any(&o.writes)
    }
    fn merge(&mut self, o: HbmSet) {
        for (l, h) in o.reads.0 {
            self.reads.insert(l, h);
        }
        for (l, h) in o.writes.0 {
            self.writes.insert(l, h);
        }
        self.unknown |= o.unknown;
    }
}

/// Errors of code generation (the kernel or node is named by the caller).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EmitError {
    #[error("{what} needs {need} bytes of {mem} but only {free} of {size} are free")]
    NoSpace {
        what: String,
        mem: &'static str,
        need: u64,
        free: u64,
        size: u64,
    },
    #[error("{0}")]
    Unsupported(String),
}

/// Builds the per-core instruction streams of a program.
#[derive(Clone)]
pub struct Emitter {
    pub target: Target,
    streams: Vec<Stream>,
    cur: usize,
    loc: Arc<str>,
    pub sram: Arena,
    pub acc: Arena,
    /// Registers that must not be replaced while the current instruction is being built.
    locked: Vec<u8>,
    /// Registers holding run-time values (block addresses read from a block table) that must
    /// survive until [`Emitter::unpin`].
    pinned: Vec<u8>,
    /// Per core: HBM touched since the last barrier by ops before the open one.
    epoch: Vec<HbmSet>,
    /// Per core: HBM touched by the open op (since [`Emitter::begin_op`] or a barrier in it).
    open: Vec<HbmSet>,
    /// Per core: the item index where the open op began.
    op_start: Option<Vec<usize>>,
    /// Per core: where the open op's body began ([`Emitter::sync_point`]).
    body_start: Vec<Option<usize>>,
    /// Per core: HBM touched by the open op's prologue.
    pro: Vec<HbmSet>,
    /// The open op's accesses before one of its own barriers conflicted with the epoch.
    start_barrier: bool,
    /// ... or its body's with its prologue.
    body_barrier: bool,
    /// A multicast round was emitted since the last explicit barrier.
    mcast_round: bool,
    /// Repeats currently open ([`Emitter::repeat`]).
    looping: usize,
    /// Register choices of the open repeats, innermost last.
    frames: Vec<roll::Frame>,
    /// Roll repeated copies into loops (else everything stays straight-line).
    pub roll: bool,
    /// A rolled loop could not be completed (reported by [`Emitter::finish`]).
    roll_error: Option<String>,
}

/// The semaphore multicast arrivals are counted on ([`Emitter::can_multicast`]); the automatic
/// unit-pair semaphores use 1..=16.
pub const MULTICAST_SEM: Sem = Sem(31);

impl Emitter {
    /// An emitter for `cores` cores of `target`.
    pub fn new(target: Target, cores: usize) -> Emitter {
        let sram = Arena::new(target.sram.size_bytes);
        let acc = Arena::new(target.accumulator.size_bytes);
        Emitter {
            target,
            streams: vec![Stream::default(); cores.max(1)],
            cur: 0,
            loc: "".into(),
            sram,
            acc,
            locked: vec![],
            pinned: vec![],
            epoch: vec![HbmSet::default(); cores.max(1)],
            open: vec![HbmSet::default(); cores.max(1)],
            op_start: None,
            body_start: vec![None; cores.max(1)],
            pro: vec![HbmSet::default(); cores.max(1)],
            start_barrier: false,
            body_barrier: false,
            mcast_round: false,
            looping: 0,
            frames: vec![],
            roll: true,
            roll_error: None,
        }
    }

    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.streams.len()
    }

    /// Selects the core following instructions go to.
    pub fn core(&mut self, c: usize) {
        self.cur = c.min(self.streams.len() - 1);
    }

    /// Sets the location attached to following instructions.
    pub fn set_loc(&mut self, loc: &str) {
        self.loc = loc.into();
    }

    // ----- instructions -----

    fn push_raw(&mut self, inst: Inst) {
        let loc = self.loc.clone();
        self.streams[self.cur].items.push(Item { inst, loc });
    }

    /// Appends a scalar instruction that touches no memory.
    pub fn scalar(&mut self, inst: Inst) {
        self.push_raw(inst);
        self.locked.clear();
    }

    /// Appends a DMA, matrix or vector instruction (or a scalar memory access) that touches the
    /// given on-chip ranges, inserting the semaphore waits and signals it needs.
    pub fn op(&mut self, inst: Inst, touches: Vec<Touch>) {
        self.note_hbm(&inst);
        let y = unit_index(inst.unit());
        let loc = self.loc.clone();
        let s = &mut self.streams[self.cur];
        let pos = s.items.len();
        for x in 0..UNITS {
            if x == y || x == unit_index(Unit::Scalar) {
                continue;
            }
            let from = s.synced[y][x];
            let h = &s.hist[x];
            let mut need: Option<usize> = None;
            for (n, (ix, t)) in h.iter().rev().enumerate() {
                if *ix < from {
                    break;
                }
                if n >= SCAN_LIMIT {
                    need = h.last().map(|l| l.0);
                    break;
                }
                if t.iter().any(|a| touches.iter().any(|b| a.conflicts(b))) {
                    need = Some(*ix);
                    break;
                }
            }
            if let Some(j) = need {
                let sem = sem_for(x, y);
                let sig = match x {
                    1 => Inst::DmaSignal { sem },
                    2 => Inst::MxuSignal { sem },
                    _ => Inst::VpuSignal { sem },
                };
                let wait = match y {
                    0 => Inst::Wait { sem, count: 1 },
                    1 => Inst::DmaWait { sem, count: 1 },
                    2 => Inst::MxuWait { sem, count: 1 },
                    _ => Inst::VpuWait { sem, count: 1 },
                };
                let sloc = s.items[j].loc.clone();
                s.after.entry(j).or_default().push(Item {
                    inst: sig,
                    loc: sloc,
                });
                s.before.entry(pos).or_default().push(Item {
                    inst: wait,
                    loc: loc.clone(),
                });
                s.synced[y][x] = j + 1;
            }
        }
        if y != unit_index(Unit::Scalar) {
            s.hist[y].push((pos, touches));
        }
        s.items.push(Item { inst, loc });
        self.locked.clear();
    }

    /// The compile-time value of `r` (`None` for a value known only at run time).
    fn known(&self, r: Reg) -> Option<i64> {
        if r.0 == 0 {
            Some(0)
        } else {
            self.streams[self.cur].regs[r.0 as usize & 31]
        }
    }

    /// Records the HBM bytes a DMA touches (its bounding range, as the emulator computes it) in
    /// the open op's set for the current core.
    fn note_hbm(&mut self, inst: &Inst) {
        if let Some((load, _, _)) = inst.multicast() {
            return self.note_hbm(&load);
        }
        let c = self.cur;
        match *inst {
            Inst::DmaLoad {
                hbm,
                n0,
                n1,
                n2,
                hs1,
                hs2,
                dt,
                layout,
                ..
            }
            | Inst::DmaStore {
                hbm,
                n0,
                n1,
                n2,
                hs1,
                hs2,
                dt,
                layout,
                ..
            } => {
                let load = matches!(inst, Inst::DmaLoad { .. });
                let (Some(base), Some(s1), Some(s2)) =
                    (self.known(hbm), self.known(hs1), self.known(hs2))
                else {
                    self.open[c].unknown = true;
                    return;
                };
                let (n0, n1, n2) = (n0 as u64, n1 as u64, n2 as u64);
                // The contiguous run and the two dimensions that repeat it.
                let (run, outer) = if !load && layout == llmpu_isa::Layout::Trans {
                    (n1, [(n0, s1), (n2, s2)])
                } else {
                    (n0, [(n1, s1), (n2, s2)])
                };
                if run == 0 || outer.iter().any(|d| d.0 == 0) {
                    return;
                }
                let looping = self.looping > 0;
                let s = &mut self.streams[c];
                let set = &mut self.open[c];
                let ranges = if load {
                    &mut set.reads
                } else {
                    &mut set.writes
                };
                let mut note = |lo: u64, hi: u64| {
                    ranges.insert(lo, hi);
                    if looping {
                        s.ext.push((lo, hi, !load));
                    }
                };
                let size = dt.size();
                let exact = if load { EXACT_RUNS } else { EXACT_WRITE_RUNS };
                if outer[0].0 * outer[1].0 <= exact {
                    // Few runs (e.g. the rows of a column tile): record each, so that other
                    // cores' interleaved rows do not count as conflicts.
                    for i2 in 0..outer[1].0 as i64 {
                        for i1 in 0..outer[0].0 as i64 {
                            let at = base as i128
                                + (i1 as i128 * outer[0].1 as i128
                                    + i2 as i128 * outer[1].1 as i128)
                                    * size as i128;
                            let (lo, hi) =
                                hbm_extent(at.clamp(0, i64::MAX as i128) as i64, size, &[(run, 1)]);
                            note(lo, hi);
                        }
                    }
                } else {
                    let dims = [(run, 1), outer[0], outer[1]];
                    let dims = if !load && layout == llmpu_isa::Layout::Trans {
                        [(n0, s1), (n1, 1), (n2, s2)]
                    } else {
                        dims
                    };
                    let (lo, hi) = hbm_extent(base, size, &dims);
                    note(lo, hi);
                }
            }
            Inst::DmaGather { .. } | Inst::DmaScatter { .. } => self.open[c].unknown = true,
            _ => {}
        }
    }

    /// Opens an op: its HBM accesses are collected so that [`Emitter::end_op`] can tell whether
    /// it must be separated from the ops since the last barrier.
    pub fn begin_op(&mut self) {
        let n = self.streams.len();
        self.op_start = Some(self.streams.iter().map(|s| s.items.len()).collect());
        self.body_start = vec![None; n];
        self.pro = vec![HbmSet::default(); n];
        self.start_barrier = false;
        self.body_barrier = false;
    }

    /// Ends the current core's prologue of the open op: what was emitted on this core since
    /// [`Emitter::begin_op`] may run before the barrier (if any) that orders the rest of the op
    /// after the ops since the last barrier. A kernel puts there the loads that do not depend on
    /// those ops (weights, whose HBM no core has written since the last barrier, see
    /// [`Emitter::hbm_unwritten`]) and the previous op's deferred tail, so that the loads stream
    /// while the previous op drains.
    pub fn sync_point(&mut self) {
        let c = self.cur;
        if self.op_start.is_none() || self.body_start[c].is_some() {
            return;
        }
        self.body_start[c] = Some(self.streams[c].items.len());
        let o = std::mem::take(&mut self.open[c]);
        self.pro[c].merge(o);
    }

    /// True when no DMA since the last barrier (any core, run-time addresses included) may have
    /// written HBM bytes in `[lo, hi)`: loads of them need not wait for anything.
    pub fn hbm_unwritten(&self, lo: u64, hi: u64) -> bool {
        [&self.epoch, &self.pro, &self.open]
            .iter()
            .flat_map(|v| v.iter())
            .all(|s| !s.unknown && !s.writes.overlaps(lo, hi))
    }

    /// True when a multicast round may write SRAM `[lo, hi)` of every core now: the target has
    /// the multicast DMA (`hbm.multicast`), there are several cores, no instruction of any core since the last barrier touched those bytes (so no core
    /// still uses them), and no other round since then counts on [`MULTICAST_SEM`] (one round's
    /// arrivals could satisfy another's wait). A kernel that multicasts then waits on every
    /// destination core for all of the round's arrivals ([`Emitter::multicast_wait`]).
    pub fn can_multicast(&self, lo: u64, hi: u64) -> bool {
        let probe = Touch::write(Mem::Sram, lo, hi);
        self.target.hbm.multicast
            && self.streams.len() > 1
            && !self.mcast_round
            && self.streams.iter().all(|s| {
                s.hist
                    .iter()
                    .flatten()
                    .all(|(_, t)| !t.iter().any(|x| x.conflicts(&probe)))
            })
    }

    /// On the current core, makes the matrix unit wait for `arrivals` multicasts into SRAM
    /// `[lo, hi)`; later instructions of other units that touch those bytes are ordered after it.
    pub fn multicast_wait(&mut self, arrivals: u32, lo: u64, hi: u64) {
        self.mcast_round = true;
        let mut left = arrivals;
        while left > 0 {
            let count = left.min(255);
            left -= count;
            let inst = Inst::MxuWait {
                sem: MULTICAST_SEM,
                count,
            };
            self.op(inst, vec![Touch::write(Mem::Sram, lo, hi)]);
        }
    }

    /// Bytes of `mem` the current kernel has allocated.
    pub fn used(&self, mem: Mem) -> u64 {
        let a = match mem {
            Mem::Sram => &self.sram,
            Mem::Acc => &self.acc,
        };
        if a.down { a.size - a.hi } else { a.lo }
    }

    /// Any core's `a` conflicts with another core's `b`.
    fn cross(a: &[HbmSet], b: &[HbmSet]) -> bool {
        (0..a.len()).any(|c| (0..b.len()).any(|o| o != c && a[c].conflicts(&b[o])))
    }

    /// Places a `barrier` on every core before item `at[c]`, as if it had been emitted there.
    fn insert_barrier(&mut self, at: &[usize]) {
        for (s, &p) in self.streams.iter_mut().zip(at) {
            let loc = s
                .items
                .get(p)
                .or(s.items.last())
                .map(|i| i.loc.clone())
                .unwrap_or_else(|| "".into());
            s.before.entry(p).or_default().insert(
                0,
                Item {
                    inst: Inst::Barrier {},
                    loc,
                },
            );
            // Everything before the barrier has completed when anything after it starts.
            for h in s.hist.iter_mut() {
                h.retain(|(ix, _)| *ix >= p);
            }
            for row in s.synced.iter_mut() {
                for x in row.iter_mut() {
                    *x = (*x).max(p);
                }
            }
        }
    }

    /// Closes the op opened by [`Emitter::begin_op`]. On several cores, a `barrier` is placed
    /// before the op's body (where each core called [`Emitter::sync_point`], else where the op
    /// began) when the body's DMAs conflict — in HBM bounding range, one side writing, or either
    /// side's addresses known only at run time — with DMAs another core issued since the last
    /// barrier (prologues included), and before the whole op when its prologue conflicts; an op
    /// with no such conflict runs on without a barrier, overlapping its predecessors. Same-core
    /// conflicts need nothing: one core's DMAs are ordered by the interlock. Returns whether a
    /// barrier was placed.
    pub fn end_op(&mut self) -> bool {
        let Some(start) = self.op_start.take() else {
            return false;
        };
        let n = self.streams.len();
        let need_start = self.start_barrier || Self::cross(&self.pro, &self.epoch);
        let need_body = self.body_barrier
            || Self::cross(&self.open, &self.pro)
            || (!need_start && Self::cross(&self.open, &self.epoch));
        let pro = std::mem::replace(&mut self.pro, vec![HbmSet::default(); n]);
        let body = std::mem::replace(&mut self.open, vec![HbmSet::default(); n]);
        let body_at: Vec<usize> = (0..n)
            .map(|c| self.body_start[c].unwrap_or(start[c]))
            .collect();
        if n > 1 && need_start {
            self.insert_barrier(&start);
            self.epoch = vec![HbmSet::default(); n];
        }
        if n > 1 && need_body {
            self.insert_barrier(&body_at);
            self.epoch = body;
        } else {
            for ((e, p), b) in self.epoch.iter_mut().zip(pro).zip(body) {
                e.merge(p);
                e.merge(b);
            }
        }
        n > 1 && (need_start || need_body)
    }

    /// Synchronizes all cores: every unit of every core drains, then all cores continue.
    pub fn barrier(&mut self) {
        let n = self.streams.len();
        if self.op_start.is_some() {
            // The op's accesses so far are ordered by this barrier; what came before the op
            // must still be separated from them, conservatively at the op's start.
            let mut so_far = self.pro.clone();
            for (p, o) in so_far.iter_mut().zip(&self.open) {
                p.merge(o.clone());
            }
            self.start_barrier |= Self::cross(&so_far, &self.epoch);
            self.body_barrier |= Self::cross(&self.open, &self.pro);
            self.pro = vec![HbmSet::default(); n];
        }
        self.epoch = vec![HbmSet::default(); n];
        self.open = vec![HbmSet::default(); n];
        self.mcast_round = false;
        let cur = self.cur;
        for c in 0..self.streams.len() {
            self.cur = c;
            self.push_raw(Inst::Barrier {});
            let s = &mut self.streams[c];
            let n = s.items.len();
            for h in s.hist.iter_mut() {
                h.clear();
            }
            s.synced = [[n; UNITS]; UNITS];
        }
        self.cur = cur;
    }

    /// The internal error of a loop that could not be rolled soundly, if one was found (the
    /// program is then unusable: stop rather than emit the rest straight-line).
    pub fn roll_error(&self) -> Option<&str> {
        self.roll_error.as_deref()
    }

    /// Ends every stream with `halt` and returns them with the signals and waits in place and
    /// the rolled loops in their final form; an error when a loop could not be rolled soundly.
    pub fn finish(mut self) -> Result<Vec<Vec<Item>>, EmitError> {
        if let Some(e) = self.roll_error.take() {
            return Err(EmitError::Unsupported(e));
        }
        for c in 0..self.streams.len() {
            self.cur = c;
            self.loc = "epilogue".into();
            self.push_raw(Inst::Halt {});
        }
        Ok(self
            .streams
            .into_iter()
            .map(|s| {
                let flat = s.flatten(0, s.items.len());
                // Final position of each item (its waits come first; a label marks the position
                // before any of them, and before the preamble of a loop starting there).
                let mut start: Vec<Option<usize>> = vec![None; s.items.len() + 1];
                let mut pos: Vec<Option<usize>> = vec![None; s.items.len()];
                for (q, (src, _)) in flat.iter().enumerate() {
                    match *src {
                        roll::Src::Pre(l, _) => {
                            start[s.rolled[l].start].get_or_insert(q);
                        }
                        roll::Src::Before(i, _) => {
                            start[i].get_or_insert(q);
                        }
                        roll::Src::Item(i) => {
                            start[i].get_or_insert(q);
                            pos[i] = Some(q);
                        }
                        _ => {}
                    }
                }
                let mut out: Vec<Item> = flat.into_iter().map(|x| x.1).collect();
                for (b, l) in &s.branches {
                    if let (Some(&at), Some(Some(from))) = (s.labels.get(l), pos.get(*b)) {
                        let to = start.get(at).copied().flatten().unwrap_or(out.len());
                        if let Inst::Bge { target, .. } = &mut out[*from].inst {
                            *target = BranchTarget((to as i64 - *from as i64) as i32);
                        }
                    }
                }
                out
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmpu_isa::{Bcast, DType, Layout, Space, TileRef};

    /// A contiguous DMA of 16 f32 between SRAM `sram` and HBM `hbm` on the current core.
    fn dma(e: &mut Emitter, load: bool, sram: u64, hbm: u64) {
        let (s, h) = (e.reg(sram as i64), e.reg(hbm as i64));
        let (n0, n1, n2) = (16, 1, 1);
        let (hs1, hs2, ss1, ss2) = (Reg(0), Reg(0), Reg(0), Reg(0));
        let (dt, layout) = (DType::F32, Layout::Rows);
        let inst = if load {
            Inst::DmaLoad {
                sram: s,
                hbm: h,
                n0,
                n1,
                n2,
                hs1,
                hs2,
                ss1,
                ss2,
                dt,
                layout,
            }
        } else {
            Inst::DmaStore {
                sram: s,
                hbm: h,
                n0,
                n1,
                n2,
                hs1,
                hs2,
                ss1,
                ss2,
                dt,
                layout,
            }
        };
        let t = if load {
            Touch::write(Mem::Sram, sram, sram + 64)
        } else {
            Touch::read(Mem::Sram, sram, sram + 64)
        };
        e.op(inst, vec![t]);
    }

    /// A store of a `rows × 16` f32 column tile with row stride `stride` elements.
    fn col_store(e: &mut Emitter, sram: u64, hbm: u64, rows: u32, stride: i64) {
        let (s, h, hs1, ss1) = (
            e.reg(sram as i64),
            e.reg(hbm as i64),
            e.reg(stride),
            e.reg(16),
        );
        let inst = Inst::DmaStore {
            sram: s,
            hbm: h,
            n0: 16,
            n1: rows,
            n2: 1,
            hs1,
            hs2: Reg(0),
            ss1,
            ss2: Reg(0),
            dt: DType::F32,
            layout: Layout::Rows,
        };
        let t = Touch::read(Mem::Sram, sram, sram + 64 * rows as u64);
        e.op(inst, vec![t]);
    }

    #[test]
    fn interleaved_column_tiles_of_other_cores_need_no_barrier() {
        let t = Target::preset("datacenter").unwrap();
        let mut e = Emitter::new(t, 2);
        // Op 1: each core stores its own 16 columns of a 512 × 32 matrix (more rows than the
        // loads' exact-run limit, so only run-by-run recording tells the cores apart).
        e.begin_op();
        for c in 0..2 {
            e.core(c);
            col_store(&mut e, 0, 64 * c as u64, 512, 32);
        }
        assert!(!e.end_op());
        // Op 2: each core rewrites only its own columns: no other core touched them.
        e.begin_op();
        for c in 0..2 {
            e.core(c);
            col_store(&mut e, 1 << 16, 64 * c as u64, 512, 32);
        }
        assert!(
            !e.end_op(),
            "interleaved rows of another core's column tile"
        );
        // Op 3: core 0 stores core 1's columns: a barrier.
        e.begin_op();
        e.core(0);
        col_store(&mut e, 0, 64, 512, 32);
        assert!(e.end_op());
    }

    fn barriers(s: &[Item]) -> Vec<usize> {
        s.iter()
            .enumerate()
            .filter(|(_, i)| matches!(i.inst, Inst::Barrier {}))
            .map(|(n, _)| n)
            .collect()
    }

    #[test]
    fn ops_are_separated_by_a_barrier_only_when_another_core_touched_their_hbm() {
        let t = Target::preset("datacenter").unwrap();
        let mut e = Emitter::new(t, 2);
        // Op 1: each core writes its own 64 bytes.
        e.begin_op();
        for c in 0..2 {
            e.core(c);
            dma(&mut e, false, 0, 64 * c as u64);
        }
        assert!(!e.end_op(), "nothing before op 1");
        // Op 2: core 0 reads unrelated bytes, core 1 writes others: no barrier.
        e.begin_op();
        e.core(0);
        dma(&mut e, true, 4096, 1024);
        e.core(1);
        dma(&mut e, false, 4096, 2048);
        assert!(!e.end_op(), "independent of op 1");
        // Op 3: core 1 reads what core 0 wrote in op 1: barrier before op 3.
        e.begin_op();
        e.core(1);
        dma(&mut e, true, 8192, 0);
        assert!(e.end_op(), "reads another core's result");
        // Ops 4 and 5: core 0 reads what core 0 itself wrote: its DMA queue orders them.
        e.begin_op();
        e.core(0);
        dma(&mut e, false, 0, 1 << 16);
        assert!(!e.end_op());
        e.begin_op();
        e.core(0);
        dma(&mut e, true, 8192, 1 << 16);
        assert!(!e.end_op(), "same core");
        let s = e.finish().unwrap();
        for c in &s {
            assert_eq!(barriers(c).len(), 1);
        }
        // The barrier precedes op 3's load on core 1.
        let load = s[1]
            .iter()
            .rposition(|i| matches!(i.inst, Inst::DmaLoad { .. }))
            .unwrap();
        assert!(barriers(&s[1])[0] < load);
    }

    #[test]
    fn a_prologue_runs_before_the_barrier_that_orders_the_body() {
        let t = Target::preset("datacenter").unwrap();
        let mut e = Emitter::new(t, 2);
        e.begin_op();
        e.core(0);
        dma(&mut e, false, 0, 0);
        e.end_op();
        e.begin_op();
        for c in 0..2 {
            e.core(c);
            // Weights nobody wrote: allowed before the barrier.
            assert!(e.hbm_unwritten(1 << 20, (1 << 20) + 64));
            dma(&mut e, true, 4096, 1 << 20);
            e.sync_point();
            // The activation core 0 wrote.
            assert!(!e.hbm_unwritten(0, 64));
            dma(&mut e, true, 8192, 0);
        }
        assert!(e.end_op());
        for s in e.finish().unwrap() {
            let b = barriers(&s);
            assert_eq!(b.len(), 1);
            let loads: Vec<usize> = s
                .iter()
                .enumerate()
                .filter(|(_, i)| matches!(i.inst, Inst::DmaLoad { .. }))
                .map(|(n, _)| n)
                .collect();
            assert!(loads[0] < b[0] && b[0] < loads[1], "{loads:?} {b:?}");
        }
    }

    #[test]
    fn consecutive_kernels_allocate_from_opposite_ends() {
        let t = Target::preset("edge").unwrap();
        let size = t.sram.size_bytes;
        let mut e = Emitter::new(t, 1);
        assert_eq!(e.alloc(Mem::Sram, 100, "a").unwrap(), 0);
        e.reset_alloc();
        assert_eq!(e.alloc(Mem::Sram, 100, "b").unwrap(), size - 128);
        // Strict: the next kernel may not reach into the still-open one's buffers.
        e.reset_alloc();
        assert_eq!(e.alloc(Mem::Sram, 64, "c").unwrap(), 0);
        e.reset_alloc();
        e.strict_alloc(true);
        assert_eq!(e.free(Mem::Sram), size - 64);
        assert!(e.alloc(Mem::Sram, size, "d").is_err());
        e.strict_alloc(false);
        assert_eq!(e.free(Mem::Sram), size);
    }

    #[test]
    fn forward_branch_lands_on_the_drain_at_its_label() {
        let t = Target::preset("edge").unwrap();
        let mut e = Emitter::new(t, 1);
        let l = e.new_label();
        e.drain_core();
        e.branch_ge(Reg(1), Reg(2), l);
        e.scalar(Inst::Nop {});
        e.scalar(Inst::Nop {});
        e.bind_label(l);
        let s = e.finish().unwrap().remove(0);
        let b = s
            .iter()
            .position(|it| matches!(it.inst, Inst::Bge { .. }))
            .unwrap();
        let Inst::Bge { target, .. } = s[b].inst else {
            unreachable!()
        };
        // Two nops skipped; the target is the first signal of the drain at the label.
        assert_eq!(target.0, 3);
        assert!(matches!(s[b + 3].inst, Inst::DmaSignal { .. }));
    }

    #[test]
    fn consumer_on_another_unit_waits_for_the_producing_load_only() {
        let t = Target::preset("edge").unwrap();
        let mut e = Emitter::new(t, 1);
        let (a, b) = (0u64, 4096u64);
        for (addr, n) in [(a, 0), (b, 1)] {
            let inst = Inst::DmaLoad {
                sram: e.reg(addr as i64),
                hbm: e.reg(n * 4096),
                n0: 16,
                n1: 1,
                n2: 1,
                hs1: Reg(0),
                hs2: Reg(0),
                ss1: Reg(0),
                ss2: Reg(0),
                dt: DType::F32,
                layout: Layout::Rows,
            };
            e.op(inst, vec![Touch::write(Mem::Sram, addr, addr + 64)]);
        }
        let ra = e.reg(a as i64);
        let ld = e.reg(16);
        let tile = TileRef {
            space: Space::Sram,
            dtype: DType::F32,
            addr: ra,
            ld,
        };
        e.op(
            Inst::VpuExp {
                dst: tile,
                a: tile,
                rows: 1,
                cols: 16,
                bcast: Bcast::Full,
            },
            vec![
                Touch::read(Mem::Sram, a, a + 64),
                Touch::write(Mem::Sram, a, a + 64),
            ],
        );
        let s = e.finish().unwrap();
        let text: Vec<String> = s[0].iter().map(|i| i.inst.to_string()).collect();
        let sig = text
            .iter()
            .position(|t| t.starts_with("dma.signal"))
            .unwrap();
        let second = text
            .iter()
            .rposition(|t| t.starts_with("dma.load"))
            .unwrap();
        assert!(sig < second, "signal right after the first load: {text:?}");
        let wait = text.iter().position(|t| t.starts_with("vpu.wait")).unwrap();
        let exp = text.iter().position(|t| t.starts_with("vpu.exp")).unwrap();
        assert_eq!(wait + 1, exp);
    }
}
