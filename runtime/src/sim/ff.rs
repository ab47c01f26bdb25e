//! Exact fast-forwarding of periodic loops in timing-only runs.
//!
//! A timing-only run of a compiled program spends nearly all of its time in counted loops whose
//! iterations the machine executes identically, only later and at other addresses. This module
//! finds such a periodic steady state of the **whole machine** (every core, the shared HBM
//! channel, semaphores, queues and everything in flight), proves that the next periods repeat
//! the one it watched, and jumps over them: every clock, register, queued instruction and
//! in-flight access moves by its per-period increment times the number of periods skipped, and
//! every counter of the report grows by its per-period increment the same number of times. The
//! result is the state the step-by-step simulation reaches — same cycles, same report, same trace
//! and timeline (replayed event by event) — not an approximation. `RunOptions::fast_forward`
//! (default on; off when the environment variable `LLMPU_NO_FAST_FORWARD` is set, or with
//! `llmpu run --no-fast-forward`) turns it off; functional runs never fast-forward.
//!
//! # What the timing of the model depends on
//!
//! The simulation (`sim`, rules in `lib.rs`) is a deterministic function of its state. Its
//! decisions depend on
//! - **differences of times** only: every start is a `max` of stored times plus costs, and time is
//!   only ever compared with other times (`completion > now`, the smallest next agent, the
//!   smallest semaphore increment). Nothing depends on absolute time except the `max_cycles`
//!   limit (and the timeline's bin width, an output replayed exactly, see below);
//! - **costs**, which `isa::cost` computes from the instruction word alone (sizes are immediates,
//!   never registers);
//! - **register values**, through (a) branches and `slt`/`seq`/`min`/`max`, (b) the byte ranges
//!   (spans) of every access: bounds checks, the same-unit interlock, the race check, the
//!   high-water marks and whether a DMA reads the control region, and (c) scalar `ld` addresses;
//! - **memory contents**, in a timing-only run only through `ld` and the index vectors of
//!   `dma.gather`/`dma.scatter` (data is not moved: only `st` and control-region DMA loads
//!   write memory);
//! - semaphore counts, queue contents, dispatcher states and the set of accesses in flight
//!   (with the race check's summaries of them: each core's last HBM completion and the list of
//!   HBM writers).
//!
//! # The argument
//!
//! *Anchors.* Each time the anchor core takes a backward branch (`bne`/`blt`/… or `jmp` to an
//! earlier pc) its dispatcher returns to the main loop — which takes it again at once, so this
//! changes nothing — and the main loop takes the machine's state `S` at `T` = the earliest
//! pending event (every later action happens at `T` or after). The anchor core is core 0 at
//! first; when it halts, or takes no backward branch while the other cores take [`QUIET`] per
//! core, the anchor moves (to the lowest running core, or to the core that just branched) and
//! the search starts over. Which core anchors only decides where periods are looked for, never
//! what is accepted. Stored times below `T` behave exactly like `T` (each is only
//! ever `max`ed with, or compared by `>` with, times `≥ T`), so times are compared as
//! `max(t, T) − T`. The *shape* of `S` is everything except register-derived numbers, with times
//! relative: pcs, dispatcher states, semaphore counts, pending semaphore increments, every queue's
//! entries, unit clocks, interlock state, the accesses still in flight (their sizes, strides and
//! relative completions) and the HBM channel's relative free time. Its *values* are the registers
//! of every core, the registers queued instructions captured (those they read as addresses or
//! strides), and the start address of every span the state holds.
//!
//! *Candidate.* A cheap hash of part of the shape, repeated at anchors `j < i`, proposes a period
//! of `p = i − j` anchors. The full state is taken at anchor `A`, again `p` anchors later (`B`):
//! equal shapes give the candidate increments `Δ = values(B) − values(A)` and `ΔT = T_B − T_A`.
//!
//! *Proof.* The period from `B` to `C` (`p` anchors on) is simulated normally while a shadow
//! tracks, for every value, its per-period slope as an affine function of the period index `k`
//! (starting from `Δ`): `S(k)` = `B` with every value moved by `k·Δ` and every time by `k·ΔT`.
//! `add`, `sub`, `addi`, `mul`/`muli`/`shl`/`shli` by a constant, `li`, `cid` keep values affine;
//! `min`/`max`/`slt`/`seq` and every branch record the condition that their outcome is the same for
//! all `k` up to a bound (an affine difference keeps its sign, or stays zero / non-zero); every
//! other operation on a varying value, and any use of such a value in a decision, an address, a
//! stride or an `st`, makes the candidate fail. Each varying value must stay inside `i64` (so
//! wrapping arithmetic equals the affine one) and each span inside its memory. A span drifts by
//! the slope of its base register; stride registers must not vary. Two spans compared by the
//! interlock or the race check keep their outcome if they drift alike (both checks compare only
//! differences of addresses, so a common shift changes nothing) or if their bounding ranges are
//! disjoint and stay so up to the bound (otherwise the candidate fails). A period must not write
//! memory (`st`, control-region loads) and `ld`/gather indices must not move, so every byte a
//! period reads is the same in every period. When `C` is reached, its shape must equal `B`'s, its
//! values must be `values(B) + Δ` with every shadow slope still `Δ` and nothing non-affine left,
//! and the report counters and `ΔT` must have grown as from `A` to `B`. Then by induction on `k`
//! the simulation maps `S(k)` to `S(k+1)` by the very same sequence of actions (same decisions,
//! same costs, same order of events) for every `k` up to the bound `K`, and from `C = S(1)` the
//! machine reaches `S(K+1)`.
//!
//! *Jump.* `K` is further limited so that `max_instructions` and `max_cycles` cannot be reached
//! inside the skipped periods (the limit errors then fire where they would have). The state
//! becomes `S(K+1)`; additive counters (busy cycles and instructions per unit and per location,
//! HBM/SRAM/accumulator bytes, MACs, vector operations, executed instructions) grow by `K` times
//! their per-period increment (saturating, as the step-by-step sums do); maxima (cycles, each
//! core's end, each location's last end, high-water marks) take the last skipped period's values;
//! a requested trace or timeline gets the period's events again, shifted, in order.
//!
//! The progress callback (`RunOptions::progress`, a display) is called once after each jump
//! instead of at every multiple of `PROGRESS_EVERY` the skipped periods cross.
//!
//! Why the whole machine: cores interact through the HBM channel (grant order and `hbm_free`),
//! multicasts, semaphores set by other cores and barriers, so a core's period is only a period
//! of the machine when every other core and the channel repeat with it; checking the global
//! state makes this a theorem, not an assumption. Skipping one core's loop while simulating the
//! others would need the channel's grants to be independent of that core's phase, which they are
//! not.
//!
//! # What stays slow (and why)
//!
//! - Loops whose cores drift apart (causal attention: each core's key loop has its own trip
//!   count) are rarely periodic as a whole machine; only windows where every core is in step are
//!   skipped.
//! - Loops that read data-dependent addresses (`ld` of a moving block-table entry) or compute
//!   addresses with non-affine arithmetic (`div`, `rem`, `and`, … of a varying value) are
//!   simulated step by step.
//! - Around every loop's entry and exit the machine is not periodic: the dispatchers run up to
//!   `latency.queue_depth` instructions ahead of their units, so the units enter a loop several
//!   iterations after the dispatchers and the dispatchers leave it several iterations before the
//!   units. Each loop instance therefore costs a few iterations of step-by-step simulation
//!   before the first skip (the transient, one period to confirm, one to verify) and after the
//!   last; straight-line code between loops is always simulated.
//!
//! Cost: when no candidate is being checked the anchor only hashes `O(cores)` words; a check
//! takes full snapshots (`O(state)`) and tracks slopes through one period.
//!
//! Diagnostics: `RunResult::fast_forwarded` counts the instructions skipped; with the
//! environment variable `LLMPU_FF_STATS` set, a run prints its anchors, candidates, jumps and
//! the reasons candidates failed to standard error.

use super::{Captured, Disp, NONE, Sim, local_part};
use crate::error::MemSpace;
use crate::exec::{self, Regs, Sizes};
use crate::memory::{Span, Spans};
use crate::trace::TraceEvent;
use llmpu_isa::fields::FieldKind;
use llmpu_isa::{Inst, Reg};
use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{HashMap, VecDeque};

/// Longest candidate period, in anchors.
const MAX_PERIOD: u64 = 4096;

/// Backward branches per core of the other cores after which a quiet anchor core hands the
/// anchor over.
const QUIET: u64 = 8;

/// Per-register slopes (per-period increments) and the registers whose value is not an affine
/// function of the period index.
#[derive(Clone, Copy)]
pub(super) struct Syms {
    s: [i64; 32],
    poison: u32,
}

impl Syms {
    const ZERO: Syms = Syms {
        s: [0; 32],
        poison: 0,
    };

    fn get(&self, r: Reg) -> (i64, bool) {
        let i = (r.0 & 31) as usize;
        (self.s[i], self.poison >> i & 1 == 1)
    }

    fn set(&mut self, r: Reg, slope: Option<i64>) {
        let i = (r.0 & 31) as usize;
        if i == 0 {
            return;
        }
        match slope {
            Some(s) => {
                self.s[i] = s;
                self.poison &= !(1 << i);
            }
            None => {
                self.s[i] = 0;
                self.poison |= 1 << i;
            }
        }
    }
}

/// The slopes of the registers a queued instruction captured, in the order of its [`Roles`].
#[derive(Clone, Copy)]
struct OpSyms {
    s: [i64; 8],
    poison: u8,
}

impl OpSyms {
    const ZERO: OpSyms = OpSyms {
        s: [0; 8],
        poison: 0,
    };

    fn get(&self, i: usize) -> (i64, bool) {
        (self.s[i], self.poison >> i & 1 == 1)
    }
}

/// A condition on an affine quantity `d(k) = d0 + k·ds` that held at `k = 0` and must keep
/// holding.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pred {
    Eq,
    Ne,
    Lt,
    Le,
    Ge,
}

/// The largest `K` such that `pred(d0 + k·ds)` holds for every `0 ≤ k ≤ K` (`u64::MAX`:
/// always), or `None` if it does not hold at `k = 0`.
fn keeps(d0: i128, ds: i128, pred: Pred) -> Option<u64> {
    let holds = match pred {
        Pred::Eq => d0 == 0,
        Pred::Ne => d0 != 0,
        Pred::Lt => d0 < 0,
        Pred::Le => d0 <= 0,
        Pred::Ge => d0 >= 0,
    };
    if !holds {
        return None;
    }
    let clamp = |k: i128| u64::try_from(k.max(0)).unwrap_or(u64::MAX);
    Some(match pred {
        _ if ds == 0 => u64::MAX,
        Pred::Eq => 0,
        Pred::Ne if (-d0) % ds == 0 && (-d0) / ds > 0 => clamp((-d0) / ds - 1),
        Pred::Lt if ds > 0 => clamp((-d0 - 1) / ds),
        Pred::Le if ds > 0 => clamp((-d0) / ds),
        Pred::Ge if ds < 0 => clamp(d0 / -ds),
        _ => u64::MAX,
    })
}

/// How a queued instruction uses a register it reads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// A base address: it only moves the instruction's byte ranges.
    Base,
    /// A stride or index-vector address: it shapes the ranges (or selects the bytes read).
    Shape,
    /// Only a computed value (the causal mask's offsets): no effect on timing.
    Free,
}

/// The registers an instruction reads as operands of its byte ranges (at most eight: four tile
/// operands of a vector instruction), with their roles.
#[derive(Clone, Copy)]
pub(super) struct Roles {
    n: u8,
    r: [(Reg, Role); 8],
}

impl Roles {
    pub(super) fn iter(&self) -> impl Iterator<Item = (Reg, Role)> + '_ {
        self.r[..self.n as usize].iter().copied()
    }
}

/// The registers a DMA, matrix or vector instruction reads, with their roles, from the ISA
/// table's field names and kinds.
pub(super) fn roles(inst: &Inst) -> Roles {
    let d = inst.desc();
    let mut out = Roles {
        n: 0,
        r: [(Reg(0), Role::Free); 8],
    };
    let mut put = |r: Reg, role: Role| {
        if r.0 & 31 == 0 {
            return;
        }
        let n = out.n as usize;
        match out.r[..n].iter_mut().find(|(x, _)| x.0 & 31 == r.0 & 31) {
            // A register used in several roles takes the strictest (Shape > Base > Free).
            Some((_, old)) => {
                if role == Role::Shape || (role == Role::Base && *old == Role::Free) {
                    *old = role;
                }
            }
            None if n < 8 => {
                out.r[n] = (r, role);
                out.n += 1;
            }
            // Unreachable with the ISA's operand counts; a further register is a stride then.
            None => {
                for x in out.r.iter_mut().filter(|x| x.1 == Role::Base) {
                    x.1 = Role::Shape;
                }
            }
        }
    };
    for (fd, raw) in d.fields.iter().zip(inst.raw_field_results()) {
        let Ok(raw) = raw else { continue };
        match fd.kind {
            FieldKind::Reg => {
                let role = match fd.name {
                    "sram" | "hbm" | "acc" | "a" | "b" => Role::Base,
                    "qoff" | "koff" => Role::Free,
                    _ => Role::Shape,
                };
                put(Reg(raw as u8), role);
            }
            FieldKind::TileRef => {
                put(Reg((raw & 31) as u8), Role::Base);
                put(Reg(((raw >> 5) & 31) as u8), Role::Shape);
            }
            _ => {}
        }
    }
    out
}

/// The shadow of a period being verified: slopes of everything register-derived, the bound on
/// the number of periods the recorded conditions allow, and what the skipped periods would add to
/// the report's maxima, trace and timeline.
pub(super) struct Verify {
    /// Per core: its registers' slopes.
    regs: Vec<Syms>,
    /// Per core and unit: the slopes of the registers each queued entry captured.
    entries: Vec<[VecDeque<OpSyms>; 4]>,
    /// The largest `k` every recorded condition allows.
    kmax: Cell<u64>,
    /// Why the candidate failed, if it did.
    failed: Cell<Option<&'static str>>,
    /// The period may execute this many instructions in all (the watched period's count).
    pub exec_limit: u64,
    /// The latest time the period selected an agent at.
    pub max_time: u64,
    end: u64,
    core_end: Vec<u64>,
    loc_end: HashMap<u32, u64>,
    /// On-chip spans that drift upwards: (core, space, end, slope).
    hw: Vec<(usize, MemSpace, u64, i64)>,
    /// Trace events and timeline intervals of the period, in order (when requested).
    pub trace: Vec<TraceEvent>,
    pub timeline: Vec<(usize, u32, u64, u64)>,
}

impl Verify {
    fn fail(&self, why: &'static str) {
        if self.failed.get().is_none() {
            self.failed.set(Some(why));
        }
        self.kmax.set(0);
    }

    fn bound(&self, k: u64) {
        self.kmax.set(self.kmax.get().min(k));
    }

    fn keep(&self, d0: i128, ds: i128, pred: Pred, why: &'static str) {
        match keeps(d0, ds, pred) {
            Some(k) => self.bound(k),
            None => self.fail(why),
        }
    }

    /// `lo ≤ v0 + k·s ≤ hi` for every period `k` up to the bound.
    fn range(&self, v0: i128, s: i128, lo: i128, hi: i128) {
        if s != 0 {
            self.keep(v0 - lo, s, Pred::Ge, "a value leaves its range");
            self.keep(v0 - hi, s, Pred::Le, "a value leaves its range");
        }
    }

    /// Two spans the interlock or the race check compares, drifting by `sa` and `sb` per period:
    /// the comparison's outcome must not change.
    pub fn pair(&self, a: &Span, sa: i64, b: &Span, sb: i64) {
        if sa == sb || a.space != b.space || !(a.write || b.write) {
            return;
        }
        let d0 = a.lo as i128 - b.lo as i128;
        let ds = sa as i128 - sb as i128;
        let (la, lb) = ((a.hi - a.lo) as i128, (b.hi - b.lo) as i128);
        if d0 >= lb {
            self.keep(d0 - lb, ds, Pred::Ge, "two accesses drift into each other");
        } else if d0 <= -la {
            self.keep(d0 + la, ds, Pred::Le, "two accesses drift into each other");
        } else {
            self.fail("overlapping accesses drift apart");
        }
    }

    /// The per-period drift of each of `s0`, the spans the head of core `c`'s unit `u` computed
    /// from `regs`: checks the roles of the registers it reads and records the bounds checks.
    #[allow(clippy::too_many_arguments)]
    pub fn span_slopes(
        &self,
        c: usize,
        u: usize,
        (inst, roles): (&Inst, &Roles),
        regs: &Regs,
        sizes: &Sizes,
        sram: &[u8],
        s0: &Spans,
        local: bool,
    ) -> [i64; 4] {
        let mut out = [0i64; 4];
        let Some(sy) = self.entries[c][u].front() else {
            self.fail("queue shadow out of step");
            return out;
        };
        let mut regs1 = *regs;
        let mut moves = false;
        for (i, (r, role)) in roles.iter().enumerate() {
            let (s, p) = sy.get(i);
            match role {
                Role::Free => {}
                Role::Shape if s != 0 || p => {
                    self.fail("a stride or index address varies");
                    return out;
                }
                Role::Shape => {}
                Role::Base if p => {
                    self.fail("an address is not affine");
                    return out;
                }
                Role::Base => {
                    let i = (r.0 & 31) as usize;
                    regs1[i] = regs1[i].wrapping_add(s);
                    moves |= s != 0;
                }
            }
        }
        if !moves {
            return out;
        }
        let s1 = match exec::spans(inst, &regs1, sizes, sram) {
            Ok(s) if local => local_part(&s),
            Ok(s) => s,
            Err(_) => {
                self.fail("the next period traps");
                return out;
            }
        };
        if s1.n != s0.n {
            self.fail("spans change shape");
            return out;
        }
        for (i, (a, b)) in s0.as_slice().iter().zip(s1.as_slice()).enumerate() {
            let d = b.lo as i128 - a.lo as i128;
            let same = a.space == b.space
                && a.write == b.write
                && b.hi as i128 - a.hi as i128 == d
                && match (&a.runs, &b.runs) {
                    (None, None) => true,
                    (Some(x), Some(y)) => {
                        x.len == y.len && x.outer == y.outer && y.base as i128 - x.base as i128 == d
                    }
                    _ => false,
                };
            let Ok(d) = i64::try_from(d) else {
                self.fail("spans change shape");
                return out;
            };
            if !same {
                self.fail("spans change shape");
                return out;
            }
            out[i] = d;
            let size = match a.space {
                MemSpace::Sram => sizes.sram,
                MemSpace::Acc => sizes.acc,
                MemSpace::Hbm => sizes.hbm,
            };
            self.range(
                a.lo as i128,
                d as i128,
                0,
                size as i128 - (a.hi - a.lo) as i128,
            );
        }
        out
    }

    /// Core `c` dispatched an instruction reading `ops` into unit `u`: the entry captures those
    /// registers' slopes.
    pub fn dispatched(&mut self, c: usize, u: usize, ops: &Roles) {
        let sy = &self.regs[c];
        let mut e = OpSyms::ZERO;
        for (i, (r, _)) in ops.iter().enumerate() {
            let (s, p) = sy.get(r);
            e.s[i] = s;
            e.poison |= (p as u8) << i;
        }
        self.entries[c][u].push_back(e);
    }

    /// The head of core `c`'s unit `u` starts with `spans` drifting by `slopes`.
    #[allow(clippy::too_many_arguments)]
    pub fn started(
        &mut self,
        c: usize,
        u: usize,
        (inst, roles): (&Inst, &Roles),
        spans: &Spans,
        slopes: &[i64; 4],
        control: bool,
        region: Option<(u64, u64)>,
    ) {
        let Some(sy) = self.entries[c][u].pop_front() else {
            self.fail("queue shadow out of step");
            return;
        };
        for (i, (_, role)) in roles.iter().enumerate() {
            let (s, p) = sy.get(i);
            if (role == Role::Shape && (s != 0 || p)) || (role == Role::Base && p) {
                self.fail("a stride or index address varies");
            }
        }
        if control {
            self.fail("a period moves control data");
        }
        if let Some((lo, hi)) = region
            && matches!(inst, Inst::DmaLoad { .. } | Inst::DmaMcast { .. })
        {
            let ctl = Span {
                space: MemSpace::Hbm,
                lo,
                hi,
                write: true,
                runs: None,
            };
            for (s, &sl) in spans.as_slice().iter().zip(slopes) {
                if s.space == MemSpace::Hbm && sl != 0 {
                    self.pair(s, sl, &ctl, 0);
                }
            }
        }
    }

    /// An instruction of core `c` (at location `loc`, if it has one) completes at `at`.
    pub fn ended(&mut self, c: usize, loc: Option<u32>, at: u64) {
        self.end = self.end.max(at);
        self.core_end[c] = self.core_end[c].max(at);
        self.max_time = self.max_time.max(at);
        if let Some(l) = loc {
            let e = self.loc_end.entry(l).or_insert(0);
            *e = (*e).max(at);
        }
    }

    /// Core `c`'s high-water marks saw `s`, drifting by `slope`.
    pub fn high_water(&mut self, c: usize, s: &Span, slope: i64) {
        if slope > 0 && s.space != MemSpace::Hbm {
            self.hw.push((c, s.space, s.hi, slope));
        }
    }
}

/// The fast-forward state of a run.
pub(super) struct Ff {
    /// The core whose backward branches are the anchors.
    pub anchor: usize,
    /// Backward branches of other cores since the anchor core's last one.
    quiet: u64,
    /// Anchors so far, counting those inside skipped periods.
    index: u64,
    /// Last anchor index of each light hash.
    seen: HashMap<u64, u64>,
    /// Failed candidates per light hash (each failure doubles the wait before the next).
    backoff: HashMap<u64, (u32, u64)>,
    phase: Phase,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    anchors: u64,
    candidates: u64,
    verified: u64,
    jumps: u64,
    periods: u64,
    instructions: u64,
    fails: HashMap<&'static str, u64>,
}

enum Phase {
    Idle,
    Confirm {
        at: u64,
        p: u64,
        hash: u64,
        a: Snap,
    },
    Verify {
        at: u64,
        p: u64,
        hash: u64,
        a: Snap,
        b: Snap,
        delta: Vec<i64>,
    },
}

/// The machine's state at an anchor: shape (relative), values, counters.
struct Snap {
    t: u64,
    shape: Vec<u64>,
    vals: Vec<i64>,
    counters: Vec<u64>,
}

impl Ff {
    pub fn new() -> Ff {
        Ff {
            anchor: 0,
            quiet: 0,
            index: 0,
            seen: HashMap::new(),
            backoff: HashMap::new(),
            phase: Phase::Idle,
            stats: Stats::default(),
        }
    }

    /// Core `c` took a backward branch. Returns whether this is an anchor; the anchor moves to
    /// `c` when the anchor core has taken none while the other cores took [`QUIET`] per core
    /// (it is outside loops, or in a much longer one), and the search starts over.
    fn back_edge(&mut self, c: usize, cores: usize) -> bool {
        if c == self.anchor {
            self.quiet = 0;
            return true;
        }
        self.quiet += 1;
        if self.quiet < QUIET * cores as u64 {
            return false;
        }
        self.anchor = c;
        self.quiet = 0;
        self.phase = Phase::Idle;
        self.seen.clear();
        true
    }

    /// Core `c` halted: the anchor moves to the lowest core still running and the search
    /// starts over. Returns whether it moved (a period being verified is then dropped).
    pub fn core_done(&mut self, c: usize, cores: &[super::Core]) -> bool {
        if c != self.anchor {
            return false;
        }
        if let Some(n) = cores.iter().position(|k| k.disp != Disp::Done) {
            self.anchor = n;
        }
        self.phase = Phase::Idle;
        self.seen.clear();
        true
    }

    /// Instructions skipped so far.
    pub fn skipped(&self) -> u64 {
        self.stats.instructions
    }

    /// The period being verified ran past the watched period's length: it is dropped.
    pub fn abandon(&mut self) {
        self.phase = Phase::Idle;
        *self.stats.fails.entry("the period ran longer").or_insert(0) += 1;
    }
}

impl Drop for Ff {
    fn drop(&mut self) {
        if std::env::var_os("LLMPU_FF_STATS").is_some() {
            let s = &self.stats;
            eprintln!(
                "fast-forward: {} anchors, {} candidates, {} verified, {} jumps over {} periods \
                 ({} instructions); failures {:?}",
                s.anchors, s.candidates, s.verified, s.jumps, s.periods, s.instructions, s.fails
            );
        }
    }
}

fn disp_code(d: Disp) -> u64 {
    match d {
        Disp::Run => 0,
        Disp::WaitSem => 1,
        Disp::QueueFull(u) => 2 + u as u64,
        Disp::Drain { halt } => 10 + halt as u64,
        Disp::AtBarrier => 12,
        Disp::Done => 13,
    }
}

/// A visitor of the state in one fixed order (see [`walk`]).
trait Walker {
    fn shape(&mut self, x: u64);
    fn time(&mut self, t: &mut u64);
    fn val(&mut self, v: &mut i64, slope: &mut i64, poison: bool);
    fn span(&mut self, s: &mut Span, slope: &mut i64);
}

/// Visits the machine's state at anchor time `t`: the HBM channel, pending semaphore increments,
/// and per core its dispatcher, semaphores, registers, queues (entries, head spans, accesses in
/// flight) and the multicasts in flight into its scratchpad. Accesses completed by `t` are left
/// out (they can no longer affect anything).
fn walk(sim: &mut Sim, t: u64, w: &mut impl Walker) {
    let Sim {
        cores,
        verify,
        hbm_free,
        hbm_writers,
        sem_events,
        ..
    } = sim;
    w.time(hbm_free);
    let live = hbm_writers.iter().filter(|x| x.0 > t).count();
    w.shape(live as u64);
    for x in hbm_writers.iter_mut().filter(|x| x.0 > t) {
        w.time(&mut x.0);
        w.shape(x.1 as u64);
    }
    let mut ev: Vec<(u64, u32, u8)> = std::mem::take(sem_events)
        .into_iter()
        .map(|r| r.0)
        .collect();
    ev.sort_unstable();
    w.shape(ev.len() as u64);
    for e in ev.iter_mut() {
        w.time(&mut e.0);
        w.shape(e.1 as u64);
        w.shape(e.2 as u64);
    }
    *sem_events = ev.into_iter().map(Reverse).collect();
    let mut dummy = Syms::ZERO;
    let mut dummy_e = OpSyms::ZERO;
    for (c, core) in cores.iter_mut().enumerate() {
        w.shape(core.pc as u64);
        w.shape(disp_code(core.disp));
        w.time(&mut core.t);
        w.time(&mut core.arrival);
        w.time(&mut core.hbm_until);
        for &s in &core.sems {
            w.shape(s);
        }
        let sy = match verify.as_deref_mut() {
            Some(v) => &mut v.regs[c],
            None => &mut dummy,
        };
        for i in 1..32 {
            let p = sy.poison >> i & 1 == 1;
            w.val(&mut core.regs[i], &mut sy.s[i], p);
        }
        for (u, q) in core.units.iter_mut().enumerate() {
            w.time(&mut q.free);
            w.time(&mut q.last_completion);
            w.time(&mut q.wake);
            w.shape(q.blocked as u64);
            w.shape(q.queue.len() as u64);
            for (i, e) in q.queue.iter_mut().enumerate() {
                w.shape(e.pc as u64);
                w.time(&mut e.ready);
                let es = match verify.as_deref_mut() {
                    Some(v) => match v.entries[c][u].get_mut(i) {
                        Some(s) => s,
                        None => &mut dummy_e,
                    },
                    None => &mut dummy_e,
                };
                let Captured { ops, v } = &mut e.regs;
                for (i, ((_, role), x)) in ops.iter().zip(v.iter_mut()).enumerate() {
                    if role != Role::Free {
                        let p = es.poison >> i & 1 == 1;
                        w.val(x, &mut es.s[i], p);
                    }
                }
            }
            match &mut q.head_spans {
                None => w.shape(0),
                Some(s) => {
                    w.shape(1 + s.n as u64);
                    for i in 0..s.n as usize {
                        w.span(&mut s.s[i], &mut q.head_slope[i]);
                    }
                }
            }
            let live = q.inflight.iter().filter(|f| f.completion > t).count();
            w.shape(live as u64);
            for f in q.inflight.iter_mut().filter(|f| f.completion > t) {
                w.shape(f.pc as u64);
                w.time(&mut f.completion);
                w.shape(f.spans.n as u64);
                for i in 0..f.spans.n as usize {
                    w.span(&mut f.spans.s[i], &mut f.slope[i]);
                }
            }
        }
        let live = core.remote.iter().filter(|r| r.completion > t).count();
        w.shape(live as u64);
        for r in core.remote.iter_mut().filter(|r| r.completion > t) {
            w.shape(r.from as u64);
            w.shape(r.pc as u64);
            w.time(&mut r.completion);
            w.span(&mut r.span, &mut r.slope);
        }
    }
}

/// Takes the shape and values.
struct SnapW {
    t: u64,
    shape: Vec<u64>,
    vals: Vec<i64>,
}

impl Walker for SnapW {
    fn shape(&mut self, x: u64) {
        self.shape.push(x);
    }
    fn time(&mut self, t: &mut u64) {
        self.shape.push((*t).max(self.t) - self.t);
    }
    fn val(&mut self, v: &mut i64, _: &mut i64, _: bool) {
        self.vals.push(*v);
    }
    fn span(&mut self, s: &mut Span, _: &mut i64) {
        self.shape.push(s.space as u64);
        self.shape.push(s.write as u64);
        self.shape.push(s.hi - s.lo);
        match &s.runs {
            None => self.shape.push(0),
            Some(r) => {
                self.shape.push(1);
                self.shape.push(r.len);
                for (n, st) in r.outer {
                    self.shape.push(n);
                    self.shape.push(st as u64);
                }
                self.shape.push(r.base.wrapping_sub(s.lo as i64) as u64);
            }
        }
        self.vals.push(s.lo as i64);
    }
}

/// Sets every slope from the candidate increments and records the range conditions of the
/// family of states (up to one period past the bound: the state jumped to must be valid too).
struct InitW<'a> {
    delta: &'a [i64],
    i: usize,
    sizes: Sizes,
    kmax: u64,
}

impl InitW<'_> {
    fn bound(&mut self, v0: i128, s: i128, lo: i128, hi: i128) {
        if s == 0 {
            return;
        }
        let k = keeps(v0 - lo, s, Pred::Ge)
            .zip(keeps(v0 - hi, s, Pred::Le))
            .map_or(0, |(a, b)| a.min(b));
        self.kmax = self.kmax.min(k.saturating_sub(1));
    }
}

impl Walker for InitW<'_> {
    fn shape(&mut self, _: u64) {}
    fn time(&mut self, _: &mut u64) {}
    fn val(&mut self, v: &mut i64, slope: &mut i64, _: bool) {
        *slope = self.delta.get(self.i).copied().unwrap_or(0);
        self.i += 1;
        self.bound(
            *v as i128,
            *slope as i128,
            i64::MIN as i128,
            i64::MAX as i128,
        );
    }
    fn span(&mut self, s: &mut Span, slope: &mut i64) {
        *slope = self.delta.get(self.i).copied().unwrap_or(0);
        self.i += 1;
        let size = match s.space {
            MemSpace::Sram => self.sizes.sram,
            MemSpace::Acc => self.sizes.acc,
            MemSpace::Hbm => self.sizes.hbm,
        };
        self.bound(
            s.lo as i128,
            *slope as i128,
            0,
            size as i128 - (s.hi - s.lo) as i128,
        );
    }
}

/// Checks that every slope is still the candidate increment and nothing is non-affine.
struct EndW<'a> {
    delta: &'a [i64],
    i: usize,
    ok: bool,
}

impl Walker for EndW<'_> {
    fn shape(&mut self, _: u64) {}
    fn time(&mut self, _: &mut u64) {}
    fn val(&mut self, _: &mut i64, slope: &mut i64, poison: bool) {
        self.ok &= !poison && Some(&*slope) == self.delta.get(self.i);
        self.i += 1;
    }
    fn span(&mut self, _: &mut Span, slope: &mut i64) {
        self.ok &= Some(&*slope) == self.delta.get(self.i);
        self.i += 1;
    }
}

/// Moves the state `k` periods on.
struct JumpW<'a> {
    delta: &'a [i64],
    i: usize,
    k: i128,
    dt: u64,
}

impl JumpW<'_> {
    fn next(&mut self) -> i128 {
        let d = self.delta.get(self.i).copied().unwrap_or(0) as i128 * self.k;
        self.i += 1;
        d
    }
}

impl Walker for JumpW<'_> {
    fn shape(&mut self, _: u64) {}
    fn time(&mut self, t: &mut u64) {
        *t = t.saturating_add(self.dt);
    }
    fn val(&mut self, v: &mut i64, _: &mut i64, _: bool) {
        let d = self.next();
        *v = (*v as i128 + d) as i64;
    }
    fn span(&mut self, s: &mut Span, _: &mut i64) {
        let d = self.next();
        s.lo = (s.lo as i128 + d) as u64;
        s.hi = (s.hi as i128 + d) as u64;
        if let Some(r) = &mut s.runs {
            r.base = (r.base as i128 + d) as i64;
        }
    }
}

impl Sim<'_> {
    /// The earliest time anything can happen next.
    fn anchor_time(&self) -> u64 {
        let te = self.sem_events.peek().map(|r| r.0.0).unwrap_or(NONE);
        self.next.min().min(te)
    }

    /// A hash of part of the shape at anchor time `t` (equal shapes give equal hashes).
    fn light_hash(&self, t: u64) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut mix = |x: u64| {
            h = (h ^ x).wrapping_mul(0x0000_0100_0000_01b3);
            h ^= h >> 29;
        };
        mix(self.hbm_free.max(t) - t);
        mix(self.sem_events.len() as u64);
        for core in &self.cores {
            mix(core.pc as u64);
            mix(disp_code(core.disp));
        }
        for &x in self.next.times() {
            mix(if x == NONE { NONE } else { x.max(t) - t });
        }
        h
    }

    /// The report's additive counters, in a fixed order.
    fn counters(&self) -> Vec<u64> {
        let tt = &self.totals;
        let mut v = vec![
            self.executed,
            self.work,
            tt.hbm_read,
            tt.hbm_write,
            tt.sram_bytes,
            tt.acc_bytes,
            tt.vector_ops,
            tt.macs[0],
            tt.macs[1],
            tt.macs[2],
        ];
        for c in &self.cores {
            for u in &c.report.units {
                v.push(u.busy_cycles);
                v.push(u.instructions);
            }
        }
        for l in &self.locs {
            v.extend_from_slice(&l.busy_cycles);
            v.extend_from_slice(&[l.instructions, l.hbm_bytes, l.macs, l.vector_ops]);
        }
        v
    }

    /// Adds `k` times `d` to the counters of [`Sim::counters`] (saturating).
    fn add_counters(&mut self, d: &[u64], k: u64) {
        let mut it = d.iter().map(|&x| x.saturating_mul(k));
        let mut add = |x: &mut u64| *x = x.saturating_add(it.next().unwrap_or(0));
        add(&mut self.executed);
        add(&mut self.work);
        let tt = &mut self.totals;
        add(&mut tt.hbm_read);
        add(&mut tt.hbm_write);
        add(&mut tt.sram_bytes);
        add(&mut tt.acc_bytes);
        add(&mut tt.vector_ops);
        for m in tt.macs.iter_mut() {
            add(m);
        }
        for c in self.cores.iter_mut() {
            for u in c.report.units.iter_mut() {
                add(&mut u.busy_cycles);
                add(&mut u.instructions);
            }
        }
        for l in self.locs.iter_mut() {
            for b in l.busy_cycles.iter_mut() {
                add(b);
            }
            add(&mut l.instructions);
            add(&mut l.hbm_bytes);
            add(&mut l.macs);
            add(&mut l.vector_ops);
        }
    }

    fn snapshot(&mut self, t: u64) -> Snap {
        let mut w = SnapW {
            t,
            shape: Vec::new(),
            vals: Vec::new(),
        };
        walk(self, t, &mut w);
        Snap {
            t,
            shape: w.shape,
            vals: w.vals,
            counters: self.counters(),
        }
    }

    /// Core `c` took a backward branch: an anchor if it is the anchor core (or becomes it).
    pub(super) fn ff_back_edge(&mut self, c: usize) {
        let n = self.cores.len();
        if let Some(f) = &mut self.ff {
            let moved = c != f.anchor;
            if f.back_edge(c, n) {
                self.ff_pending = true;
                if moved {
                    self.verify = None;
                }
            }
        }
    }

    /// The anchor core took a backward branch: advance the candidate search (see the module
    /// documentation).
    pub(super) fn ff_anchor(&mut self) {
        let Some(mut ff) = self.ff.take() else { return };
        ff.index += 1;
        ff.stats.anchors += 1;
        let t = self.anchor_time();
        if t != NONE {
            self.ff_step(&mut ff, t);
        }
        self.ff = Some(ff);
    }

    fn ff_step(&mut self, ff: &mut Ff, t: u64) {
        let idx = ff.index;
        let hash = self.light_hash(t);
        let prev = ff.seen.insert(hash, idx);
        match std::mem::replace(&mut ff.phase, Phase::Idle) {
            Phase::Idle => {
                let Some(j) = prev else { return };
                let p = idx - j;
                if p == 0 || p > MAX_PERIOD {
                    return;
                }
                if let Some(&(_, until)) = ff.backoff.get(&hash)
                    && idx < until
                {
                    return;
                }
                ff.stats.candidates += 1;
                let a = self.snapshot(t);
                ff.phase = Phase::Confirm {
                    at: idx + p,
                    p,
                    hash,
                    a,
                };
            }
            Phase::Confirm { at, p, hash: h, a } if idx >= at => {
                let b = self.snapshot(t);
                let delta = (idx == at && b.shape == a.shape && b.vals.len() == a.vals.len())
                    .then(|| {
                        b.vals
                            .iter()
                            .zip(&a.vals)
                            .map(|(&x, &y)| i64::try_from(x as i128 - y as i128).ok())
                            .collect::<Option<Vec<i64>>>()
                    })
                    .flatten();
                match delta {
                    Some(delta) => {
                        self.start_verify(&delta, &a, &b, t);
                        ff.phase = Phase::Verify {
                            at: idx + p,
                            p,
                            hash: h,
                            a,
                            b,
                            delta,
                        };
                    }
                    None => Self::ff_failed(ff, h, idx, "the state did not repeat"),
                }
            }
            Phase::Verify {
                at,
                p,
                hash: h,
                a,
                b,
                delta,
            } if idx >= at
                || self
                    .verify
                    .as_ref()
                    .is_some_and(|v| v.failed.get().is_some()) =>
            {
                let v = self.verify.take();
                match v {
                    Some(v) if idx == at && v.failed.get().is_none() => {
                        match self.finish(v, &delta, &a, &b, t) {
                            Ok((k, n)) => {
                                ff.stats.verified += 1;
                                if k > 0 {
                                    ff.stats.jumps += 1;
                                    ff.stats.periods += k;
                                    ff.stats.instructions += n;
                                    ff.index += k * p;
                                    ff.backoff.remove(&h);
                                }
                            }
                            Err(why) => Self::ff_failed(ff, h, idx, why),
                        }
                    }
                    Some(v) => {
                        let why = v.failed.get().unwrap_or("the period ran longer");
                        Self::ff_failed(ff, h, idx, why)
                    }
                    None => Self::ff_failed(ff, h, idx, "no shadow"),
                }
            }
            other => ff.phase = other,
        }
    }

    fn ff_failed(ff: &mut Ff, hash: u64, idx: u64, why: &'static str) {
        *ff.stats.fails.entry(why).or_insert(0) += 1;
        let e = ff.backoff.entry(hash).or_insert((0, 0));
        e.0 = (e.0 + 1).min(16);
        e.1 = idx + (1u64 << e.0);
    }

    /// Starts tracking slopes at `b` with the candidate increments `delta`.
    fn start_verify(&mut self, delta: &[i64], a: &Snap, b: &Snap, t: u64) {
        let n = self.cores.len();
        let entries = self
            .cores
            .iter()
            .map(|c| {
                std::array::from_fn(|u| VecDeque::from(vec![OpSyms::ZERO; c.units[u].queue.len()]))
            })
            .collect();
        let v = Verify {
            regs: vec![Syms::ZERO; n],
            entries,
            kmax: Cell::new(u64::MAX),
            failed: Cell::new(None),
            exec_limit: self
                .executed
                .saturating_add(b.counters[0].saturating_sub(a.counters[0])),
            max_time: t,
            end: 0,
            core_end: vec![0; n],
            loc_end: HashMap::new(),
            hw: Vec::new(),
            trace: Vec::new(),
            timeline: Vec::new(),
        };
        self.verify = Some(Box::new(v));
        let mut w = InitW {
            delta,
            i: 0,
            sizes: self.sizes,
            kmax: u64::MAX,
        };
        walk(self, t, &mut w);
        if let Some(v) = &self.verify {
            v.bound(w.kmax);
        }
    }

    /// The verified period ended at anchor time `t` (state `c`): checks it against the
    /// candidate and jumps. Returns the number of periods and instructions skipped.
    fn finish(
        &mut self,
        v: Box<Verify>,
        delta: &[i64],
        a: &Snap,
        b: &Snap,
        t: u64,
    ) -> Result<(u64, u64), &'static str> {
        let c = self.snapshot(t);
        // Same shape: the walk below visits the values in the order of `delta`.
        if c.shape != b.shape || c.vals.len() != delta.len() {
            return Err("the verified period ended elsewhere");
        }
        self.verify = Some(v);
        let mut ew = EndW {
            delta,
            i: 0,
            ok: true,
        };
        walk(self, t, &mut ew);
        let v = self.verify.take().ok_or("no shadow")?;
        let dt = t - b.t;
        if b.t - a.t != dt {
            return Err("periods of different lengths");
        }
        let same_vals = c
            .vals
            .iter()
            .zip(&b.vals)
            .zip(delta)
            .all(|((&x, &y), &d)| x as i128 - y as i128 == d as i128);
        if !same_vals || !ew.ok {
            return Err("values are not affine");
        }
        let inc: Vec<u64> = c
            .counters
            .iter()
            .zip(&b.counters)
            .map(|(&x, &y)| x.wrapping_sub(y))
            .collect();
        let same_inc = b
            .counters
            .iter()
            .zip(&a.counters)
            .zip(&inc)
            .all(|((&x, &y), &d)| x.wrapping_sub(y) == d);
        if !same_inc || c.counters.contains(&u64::MAX) {
            return Err("counters grew differently");
        }
        if inc[1] != 0 {
            return Err("a period does functional work");
        }
        let mut k = v.kmax.get();
        let dexec = inc[0];
        if dexec == 0 {
            return Err("a period executes nothing");
        }
        k = k.min(self.opts.max_instructions.saturating_sub(self.executed) / dexec);
        if let Some(n) = self.max_cycles.saturating_sub(v.max_time).checked_div(dt) {
            k = k.min(n);
        }
        if k == 0 {
            return Ok((0, 0));
        }
        self.jump(&v, delta, &inc, k, dt, t);
        Ok((k, dexec * k))
    }

    /// Moves the machine `k` periods of `dt` cycles on.
    fn jump(&mut self, v: &Verify, delta: &[i64], inc: &[u64], k: u64, dt: u64, t: u64) {
        let shift = k * dt;
        let mut w = JumpW {
            delta,
            i: 0,
            k: k as i128,
            dt: shift,
        };
        walk(self, t, &mut w);
        self.add_counters(inc, k);
        self.now = self.now.saturating_add(shift);
        if v.end > 0 {
            self.end = self.end.max(v.end + shift);
        }
        for (c, &e) in v.core_end.iter().enumerate() {
            if e > 0 {
                let r = &mut self.cores[c].report;
                r.end_cycle = r.end_cycle.max(e + shift);
            }
        }
        for (&l, &e) in &v.loc_end {
            if let Some(loc) = self.locs.get_mut(l as usize) {
                loc.last_end = loc.last_end.max(e + shift);
            }
        }
        for &(c, space, hi, slope) in &v.hw {
            let top = hi.saturating_add((slope as u64).saturating_mul(k));
            let r = &mut self.cores[c].report;
            match space {
                MemSpace::Sram => r.sram_high_water = r.sram_high_water.max(top),
                MemSpace::Acc => r.acc_high_water = r.acc_high_water.max(top),
                MemSpace::Hbm => {}
            }
        }
        if let Some(tr) = &mut self.trace {
            for i in 1..=k {
                let s = i * dt;
                tr.extend(v.trace.iter().map(|e| TraceEvent {
                    start: e.start + s,
                    free: e.free + s,
                    completion: e.completion + s,
                    ..*e
                }));
            }
        }
        if let Some(tl) = &mut self.timeline {
            for i in 1..=k {
                let s = i * dt;
                for &(lane, loc, a, b) in &v.timeline {
                    tl.add(lane, loc, a + s, b + s);
                }
            }
        }
        if let Some(p) = &self.opts.progress {
            (p.0)(self.executed, self.now);
        }
        for c in 0..self.cores.len() {
            self.refresh(c);
        }
    }

    /// Updates the shadow for scalar instruction `inst` of core `c`, before it executes.
    pub(super) fn sym_scalar(&mut self, c: usize, inst: &Inst) {
        let Some(v) = self.verify.as_deref_mut() else {
            return;
        };
        let regs = &self.cores[c].regs;
        let sy = v.regs[c];
        let g = |r: Reg| {
            let (s, p) = sy.get(r);
            (regs[(r.0 & 31) as usize], s, p)
        };
        // Result: the destination and its slope (None: not affine), with its value at k = 0.
        let lin = |s: Option<i128>, val: i64| -> Option<(i64, i64)> {
            s.and_then(|s| i64::try_from(s).ok()).map(|s| (s, val))
        };
        let cmp = |v: &Verify, a: (i64, i64, bool), b: (i64, i64, bool), pred: Pred| {
            if a.2 || b.2 {
                v.fail("a decision reads a non-affine value");
            } else {
                let d0 = a.0 as i128 - b.0 as i128;
                v.keep(d0, a.1 as i128 - b.1 as i128, pred, "a decision changes");
            }
        };
        let out: Option<(Reg, Option<(i64, i64)>)> = match *inst {
            Inst::Cid { rd } | Inst::Li { rd, .. } => Some((rd, Some((0, 0)))),
            Inst::Lih { rd, .. } => {
                let (_, s, p) = g(rd);
                Some((rd, (s == 0 && !p).then_some((0, 0))))
            }
            Inst::Add { rd, rs1, rs2 } | Inst::Sub { rd, rs1, rs2 } => {
                let (a, b) = (g(rs1), g(rs2));
                let add = matches!(inst, Inst::Add { .. });
                let r = if a.2 || b.2 {
                    None
                } else if add {
                    lin(Some(a.1 as i128 + b.1 as i128), a.0.wrapping_add(b.0))
                } else {
                    lin(Some(a.1 as i128 - b.1 as i128), a.0.wrapping_sub(b.0))
                };
                Some((rd, r))
            }
            Inst::Mul { rd, rs1, rs2 } => {
                let (a, b) = (g(rs1), g(rs2));
                let val = a.0.wrapping_mul(b.0);
                let r = if a.2 || b.2 {
                    None
                } else if b.1 == 0 {
                    lin(Some(a.1 as i128 * b.0 as i128), val)
                } else if a.1 == 0 {
                    lin(Some(b.1 as i128 * a.0 as i128), val)
                } else {
                    None
                };
                Some((rd, r))
            }
            Inst::Addi { rd, rs1, imm } => {
                let a = g(rs1);
                Some((rd, (!a.2).then_some((a.1, a.0.wrapping_add(imm as i64)))))
            }
            Inst::Muli { rd, rs1, imm } => {
                let a = g(rs1);
                let val = a.0.wrapping_mul(imm as i64);
                Some((
                    rd,
                    if a.2 {
                        None
                    } else {
                        lin(Some(a.1 as i128 * imm as i128), val)
                    },
                ))
            }
            Inst::Shli { rd, rs1, sh } => {
                let a = g(rs1);
                let sh = sh & 63;
                let val = a.0.wrapping_shl(sh);
                Some((
                    rd,
                    if a.2 {
                        None
                    } else {
                        lin(Some((a.1 as i128) << sh), val)
                    },
                ))
            }
            Inst::Shl { rd, rs1, rs2 } => {
                // Affine only by a constant shift.
                let (a, b) = (g(rs1), g(rs2));
                let sh = (b.0 & 63) as u32;
                let val = a.0.wrapping_shl(sh);
                Some((
                    rd,
                    if a.2 || b.2 || b.1 != 0 {
                        None
                    } else {
                        lin(Some((a.1 as i128) << sh), val)
                    },
                ))
            }
            Inst::Min { rd, rs1, rs2 } | Inst::Max { rd, rs1, rs2 } => {
                let (a, b) = (g(rs1), g(rs2));
                if a.2 || b.2 {
                    Some((rd, None))
                } else {
                    let d0 = a.0 as i128 - b.0 as i128;
                    let ds = a.1 as i128 - b.1 as i128;
                    let min = matches!(inst, Inst::Min { .. });
                    // Does `a` win (min: a ≤ b; max: a ≥ b) for every k?
                    let a_wins = if min {
                        d0 < 0 || (d0 == 0 && ds <= 0)
                    } else {
                        d0 > 0 || (d0 == 0 && ds >= 0)
                    };
                    let pred = if a_wins == min { Pred::Le } else { Pred::Ge };
                    v.keep(d0, ds, pred, "a decision changes");
                    let w = if a_wins { a } else { b };
                    Some((rd, Some((w.1, w.0))))
                }
            }
            Inst::Slt { rd, rs1, rs2 } | Inst::Seq { rd, rs1, rs2 } => {
                let (a, b) = (g(rs1), g(rs2));
                let pred = match inst {
                    Inst::Slt { .. } if a.0 < b.0 => Pred::Lt,
                    Inst::Slt { .. } => Pred::Ge,
                    _ if a.0 == b.0 => Pred::Eq,
                    _ => Pred::Ne,
                };
                cmp(v, a, b, pred);
                Some((rd, Some((0, 0))))
            }
            Inst::Div { rd, rs1, rs2 }
            | Inst::Rem { rd, rs1, rs2 }
            | Inst::And { rd, rs1, rs2 }
            | Inst::Or { rd, rs1, rs2 }
            | Inst::Xor { rd, rs1, rs2 }
            | Inst::Shr { rd, rs1, rs2 } => {
                let (a, b) = (g(rs1), g(rs2));
                let fixed = !a.2 && !b.2 && a.1 == 0 && b.1 == 0;
                Some((rd, fixed.then_some((0, 0))))
            }
            Inst::Shri { rd, rs1, .. } | Inst::Andi { rd, rs1, .. } => {
                let a = g(rs1);
                Some((rd, (!a.2 && a.1 == 0).then_some((0, 0))))
            }
            Inst::Beq { rs1, rs2, .. }
            | Inst::Bne { rs1, rs2, .. }
            | Inst::Blt { rs1, rs2, .. }
            | Inst::Bge { rs1, rs2, .. } => {
                let (a, b) = (g(rs1), g(rs2));
                let pred = match inst {
                    Inst::Beq { .. } | Inst::Bne { .. } if a.0 == b.0 => Pred::Eq,
                    Inst::Beq { .. } | Inst::Bne { .. } => Pred::Ne,
                    _ if a.0 < b.0 => Pred::Lt,
                    _ => Pred::Ge,
                };
                cmp(v, a, b, pred);
                None
            }
            Inst::Ld { rd, rs1, .. } | Inst::Ld32 { rd, rs1, .. } => {
                let a = g(rs1);
                if a.2 || a.1 != 0 {
                    v.fail("a load address varies");
                }
                Some((rd, Some((0, 0))))
            }
            Inst::St { .. } => {
                v.fail("a period stores");
                None
            }
            _ => None,
        };
        if let Some((rd, r)) = out {
            if let Some((s, val)) = r {
                v.range(val as i128, s as i128, i64::MIN as i128, i64::MAX as i128);
            }
            v.regs[c].set(rd, r.map(|x| x.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_gives_the_last_period_a_condition_holds() {
        // A trip counter at 5 falling by 1: `!= 0` holds for k = 0..=4.
        assert_eq!(keeps(5, -1, Pred::Ne), Some(4));
        // Never reaching zero.
        assert_eq!(keeps(5, 2, Pred::Ne), Some(u64::MAX));
        assert_eq!(keeps(5, -2, Pred::Ne), Some(u64::MAX));
        assert_eq!(keeps(0, 0, Pred::Eq), Some(u64::MAX));
        assert_eq!(keeps(0, 3, Pred::Eq), Some(0));
        // -7 + 2k < 0 for k ≤ 3.
        assert_eq!(keeps(-7, 2, Pred::Lt), Some(3));
        // -6 + 2k ≤ 0 for k ≤ 3.
        assert_eq!(keeps(-6, 2, Pred::Le), Some(3));
        // 7 - 2k ≥ 0 for k ≤ 3.
        assert_eq!(keeps(7, -2, Pred::Ge), Some(3));
        assert_eq!(keeps(6, -2, Pred::Ge), Some(3));
        assert_eq!(keeps(1, 0, Pred::Lt), None);
    }

    #[test]
    fn roles_tell_base_addresses_from_strides() {
        let i = Inst::DmaLoad {
            sram: Reg(1),
            hbm: Reg(2),
            n0: 4,
            n1: 4,
            n2: 1,
            hs1: Reg(3),
            hs2: Reg(0),
            ss1: Reg(4),
            ss2: Reg(0),
            dt: llmpu_isa::DType::BF16,
            layout: llmpu_isa::fields::Layout::Rows,
        };
        let r: Vec<(Reg, Role)> = roles(&i).iter().collect();
        assert!(r.contains(&(Reg(1), Role::Base)));
        assert!(r.contains(&(Reg(2), Role::Base)));
        assert!(r.contains(&(Reg(3), Role::Shape)));
        assert!(r.contains(&(Reg(4), Role::Shape)));
        assert_eq!(r.len(), 4);
    }
}
