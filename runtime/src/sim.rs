//! The discrete-event simulation: dispatchers, unit queues, semaphores, barriers, the shared HBM
//! channel, the race check and the statistics. The timing rules are stated in the crate
//! documentation (`lib.rs`); this module implements them.
//!
//! Agents: per core the dispatcher (agent `4c`) and the DMA, MXU and VPU queues (agents
//! `4c + Unit::index()`). Each agent has a "next" time, the earliest cycle at which it can act
//! (`u64::MAX` while blocked). The loop repeatedly takes the pending semaphore increment or the agent
//! with the smallest time (ties: semaphore increments first, then lower core, then unit order) and
//! lets it act; every action happens at a time no earlier than the previous one, so functional
//! execution, semaphore effects and race checks see one global time order. A dispatcher runs a
//! burst of scalar instructions while it stays strictly ahead of every other agent. The next
//! times live in a tournament tree over the cores ([`NextTimes`]), so picking an agent does not
//! scan every core.
//!
//! The race check compares an access with the accesses in flight on this core's other units and,
//! for HBM, on the cores that can conflict: those with an HBM write in flight (the list
//! `hbm_writers`) for a read, those with any HBM access in flight (`Core::hbm_until`) for a
//! write; the cores skipped have nothing that could conflict, so the first race found is the
//! same. Queue entries hold only the registers their instruction reads ([`Captured`]).
//!
//! Timing-only runs fast-forward the repeated periods of loops exactly (submodule `ff`).

use crate::RunOptions;
use crate::error::{EmuError, MemSpace, RaceSide, TrapKind};
use crate::exec::{self, Mem, Regs, Sizes};
use crate::memory::{Hbm, InitMap, Span, Spans, conflicts_exact};
use crate::report::{CoreReport, EnergyReport, LocReport, Report};
use crate::timeline::Timeline;
use crate::trace::{Trace, TraceEvent};
use llmpu_isa::cost::{Cost, MacKind, cost};
use llmpu_isa::{Inst, Program, Target, Unit};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

mod ff;

const NONE: u64 = u64::MAX;
/// The largest effective `max_cycles`: every time stays far below `NONE`, and a saturated time
/// (`u64::MAX`) is always past the limit.
const CYCLE_CAP: u64 = 1 << 62;
/// Scratchpad plus accumulator bytes the emulator allocates over all cores.
pub(crate) const MAX_ONCHIP_TOTAL: u64 = 1 << 36;

struct Entry {
    pc: u32,
    inst: Inst,
    regs: Captured,
    ready: u64,
}

/// The values of the registers a queued instruction reads ([`ff::Roles`]: its register fields
/// and the address and stride registers of its tile operands, at most eight), captured at
/// dispatch: a queue entry holds these, not the whole register file, so entries stay small.
#[derive(Clone, Copy)]
struct Captured {
    ops: ff::Roles,
    v: [i64; 8],
}

impl Captured {
    fn capture(ops: ff::Roles, regs: &Regs) -> Captured {
        let mut v = [0; 8];
        for (x, (r, _)) in v.iter_mut().zip(ops.iter()) {
            *x = regs[(r.0 & 31) as usize];
        }
        Captured { ops, v }
    }

    /// A register file holding the captured values (every other register reads 0; the
    /// instruction reads none of them).
    fn regs(&self) -> Regs {
        let mut r = [0; 32];
        for ((id, _), &x) in self.ops.iter().zip(&self.v) {
            r[(id.0 & 31) as usize] = x;
        }
        r
    }
}

struct InFlight {
    pc: u32,
    completion: u64,
    spans: Spans,
    /// Per-period drift of each span's bytes while a period is verified (`ff`); stale otherwise.
    slope: [i64; 4],
}

/// A multicast's write into this core's scratchpad, issued by another core, while in flight.
struct Remote {
    from: usize,
    pc: u32,
    completion: u64,
    span: Span,
    /// Per-period drift of `span` while a period is verified (`ff`); stale otherwise.
    slope: i64,
}

#[derive(Default)]
struct Queue {
    queue: VecDeque<Entry>,
    free: u64,
    last_completion: u64,
    wake: u64,
    blocked: bool,
    head_spans: Option<Spans>,
    /// Per-period drift of `head_spans` while a period is verified (`ff`); stale otherwise.
    head_slope: [i64; 4],
    inflight: VecDeque<InFlight>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Disp {
    Run,
    WaitSem,
    QueueFull(usize),
    Drain { halt: bool },
    AtBarrier,
    Done,
}

struct Core {
    regs: Regs,
    pc: u32,
    t: u64,
    disp: Disp,
    units: [Queue; 4],
    sems: [u64; 32],
    sram: Vec<u8>,
    acc: Vec<u8>,
    /// Other cores' multicasts into this scratchpad (the race check's view of them).
    remote: VecDeque<Remote>,
    /// The latest completion of an instruction in flight here with an HBM span: another core's
    /// HBM write need not look at this core when it is past.
    hbm_until: u64,
    arrival: u64,
    report: CoreReport,
    /// With `--check-uninit` (functional runs): the bytes of SRAM and ACC written so far.
    init: Option<[InitMap; 2]>,
}

impl Core {
    /// `--check-uninit`: traps if `inst` reads on-chip bytes never written; otherwise records
    /// the bytes it writes. Called before the instruction executes (its reads come first).
    fn check_uninit(
        &mut self,
        inst: &Inst,
        regs: &Regs,
        core: usize,
        pc: u32,
    ) -> Result<(), EmuError> {
        let Some(init) = self.init.as_mut() else {
            return Ok(());
        };
        let accesses = exec::onchip_accesses(inst, regs);
        let slot = |s: MemSpace| usize::from(s == MemSpace::Acc);
        for a in accesses.iter().filter(|a| !a.write) {
            let map = &init[slot(a.space)];
            let mut bad: Option<(u64, u64, u64, u64)> = None;
            a.for_each_run(&mut |lo, hi| {
                if let Some((first, count)) = map.unwritten(lo, hi) {
                    let b = bad.get_or_insert((lo, hi, first, 0));
                    b.0 = b.0.min(lo);
                    b.1 = b.1.max(hi);
                    b.3 += count;
                }
            });
            if let Some((lo, hi, first, count)) = bad {
                return Err(trap(
                    core,
                    pc,
                    inst,
                    TrapKind::Uninit {
                        space: a.space,
                        lo,
                        hi,
                        first,
                        count,
                    },
                ));
            }
        }
        for a in accesses.iter().filter(|a| a.write) {
            let map = &mut init[slot(a.space)];
            a.for_each_run(&mut |lo, hi| map.set(lo, hi));
        }
        Ok(())
    }
}

/// The agents' next times (four per core: dispatcher, DMA, MXU, VPU) with a tournament tree
/// over the cores: the earliest agent (the lowest index among equal times, as a scan in index
/// order finds it) in O(1), the earliest time of all the others and an update in O(log cores).
/// A core's four times are one leaf, so updating all of them costs one walk up the tree.
struct NextTimes {
    times: Vec<u64>,
    /// Leaves (a power of two): core `c` is node `leaves + c`; each node holds the earliest
    /// (time, agent) below it.
    leaves: usize,
    node: Vec<(u64, u32)>,
}

impl NextTimes {
    fn new(cores: usize) -> NextTimes {
        let leaves = cores.next_power_of_two().max(2);
        let mut node = vec![(NONE, 0u32); 2 * leaves];
        for (c, x) in node[leaves..].iter_mut().enumerate() {
            x.1 = 4 * c as u32;
        }
        for k in (1..leaves).rev() {
            node[k] = node[2 * k];
        }
        NextTimes {
            times: vec![NONE; 4 * cores],
            leaves,
            node,
        }
    }

    fn get(&self, i: usize) -> u64 {
        self.times[i]
    }

    /// Sets agent `i`'s time.
    fn set(&mut self, i: usize, t: u64) {
        if self.times[i] != t {
            self.times[i] = t;
            self.update(i / 4);
        }
    }

    /// Sets core `c`'s four times.
    fn set_core(&mut self, c: usize, t: [u64; 4]) {
        if self.times[4 * c..4 * c + 4] != t {
            self.times[4 * c..4 * c + 4].copy_from_slice(&t);
            self.update(c);
        }
    }

    fn core_min(&self, c: usize) -> (u64, u32) {
        let mut m = (self.times[4 * c], 4 * c as u32);
        for u in 1..4 {
            let t = self.times[4 * c + u];
            if t < m.0 {
                m = (t, (4 * c + u) as u32);
            }
        }
        m
    }

    fn update(&mut self, c: usize) {
        let mut k = self.leaves + c;
        let m = self.core_min(c);
        if self.node[k] == m {
            return;
        }
        self.node[k] = m;
        while k > 1 {
            k /= 2;
            let (a, b) = (self.node[2 * k], self.node[2 * k + 1]);
            let m = if b.0 < a.0 { b } else { a };
            if self.node[k] == m {
                break;
            }
            self.node[k] = m;
        }
    }

    /// The earliest agent and its time.
    fn best(&self) -> (usize, u64) {
        let (t, i) = self.node[1];
        (i as usize, t)
    }

    /// The earliest time of every agent but `i`.
    fn others(&self, i: usize) -> u64 {
        let c = i / 4;
        let mut m = (4 * c..4 * c + 4)
            .filter(|&j| j != i)
            .map(|j| self.times[j])
            .fold(NONE, u64::min);
        let mut k = self.leaves + c;
        while k > 1 {
            m = m.min(self.node[k ^ 1].0);
            k /= 2;
        }
        m
    }

    /// The earliest time of all agents.
    fn min(&self) -> u64 {
        self.node[1].0
    }

    /// Every agent's time, in agent order.
    fn times(&self) -> &[u64] {
        &self.times
    }
}

#[derive(Default)]
struct Totals {
    hbm_read: u64,
    hbm_write: u64,
    sram_bytes: u64,
    acc_bytes: u64,
    vector_ops: u64,
    macs: [u64; 3],
}

pub(crate) struct Sim<'p> {
    prog: &'p Program,
    t: &'p Target,
    opts: &'p RunOptions,
    cores: Vec<Core>,
    pub hbm: Hbm<'p>,
    hbm_free: u64,
    /// (completion, core) of the instructions that write HBM, in start order, including some
    /// already complete: an HBM read need only be checked against the cores with one still in
    /// flight.
    hbm_writers: Vec<(u64, u32)>,
    /// In timing-only runs, the HBM bytes of the KV region header (block table and cached
    /// lengths): control data that DMA loads still move, so paged attention sees the real
    /// lengths and skips the same blocks as a functional run.
    control: Option<(u64, u64)>,
    sem_events: BinaryHeap<Reverse<(u64, u32, u8)>>,
    next: NextTimes,
    executed: u64,
    now: u64,
    end: u64,
    sizes: Sizes,
    loc_of: Vec<Vec<u32>>,
    loc_names: Vec<String>,
    locs: Vec<LocReport>,
    totals: Totals,
    trace: Option<Vec<TraceEvent>>,
    timeline: Option<Timeline>,
    max_cycles: u64,
    work: u64,
    /// Fast-forwarding of periodic loops (timing-only runs with `RunOptions::fast_forward`).
    ff: Option<Box<ff::Ff>>,
    /// Set when the fast-forward anchor core takes a backward branch; handled by the main loop.
    ff_pending: bool,
    /// The shadow state of a period being verified for fast-forwarding.
    verify: Option<Box<ff::Verify>>,
    /// Per core and pc, the registers a dispatched instruction captures (filled on first use).
    operands: Vec<Vec<Option<ff::Roles>>>,
}

/// A zeroed buffer, or `Unsupported` if the host cannot provide it (never an abort). The pages
/// come zeroed from the allocator, so untouched memory costs no host RAM.
fn alloc(bytes: u64, what: &str) -> Result<Vec<u8>, EmuError> {
    let fail = || {
        EmuError::Unsupported(format!(
            "cannot allocate {what} of {bytes} bytes on this host"
        ))
    };
    if bytes == 0 {
        return Ok(Vec::new());
    }
    if bytes > llmpu_isa::target::MAX_ONCHIP_BYTES {
        return Err(EmuError::Unsupported(format!(
            "{what} of {bytes} bytes exceeds the emulator's limit of {} bytes",
            llmpu_isa::target::MAX_ONCHIP_BYTES
        )));
    }
    let n = usize::try_from(bytes).map_err(|_| fail())?;
    let layout = std::alloc::Layout::array::<u8>(n).map_err(|_| fail())?;
    // SAFETY: `layout` has a non-zero size; a non-null result is `n` zeroed bytes allocated by
    // the global allocator with the layout of `[u8; n]`, which is what `Vec<u8>` with capacity
    // `n` owns and frees.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout);
        if p.is_null() {
            return Err(fail());
        }
        Ok(Vec::from_raw_parts(p, n, n))
    }
}

/// The spans of a multicast on an issuing core that is not a destination: its HBM side.
fn local_part(s: &Spans) -> Spans {
    let mut o = Spans::EMPTY;
    for x in s.as_slice().iter().filter(|x| x.space == MemSpace::Hbm) {
        o.push(*x);
    }
    o
}

/// Whether two accesses can conflict at all (same memory, one writes): the cheap test before
/// the range comparison and the fast-forward's pair check (both answer "no" otherwise).
#[inline]
fn may_conflict(a: &Span, b: &Span) -> bool {
    a.space == b.space && (a.write || b.write)
}

fn trap(core: usize, pc: u32, inst: &Inst, kind: TrapKind) -> EmuError {
    EmuError::Trap {
        core,
        pc,
        inst: inst.to_string(),
        kind,
    }
}

impl<'p> Sim<'p> {
    pub fn new(prog: &'p Program, opts: &'p RunOptions) -> Result<Sim<'p>, EmuError> {
        let t = &prog.target;
        let per_core = t.sram.size_bytes.saturating_add(t.accumulator.size_bytes);
        let total = per_core.saturating_mul(prog.cores.len() as u64);
        if total > MAX_ONCHIP_TOTAL {
            return Err(EmuError::Unsupported(format!(
                "{} cores × ({} bytes SRAM + {} bytes accumulator) = {total} bytes of on-chip \
                 memory exceeds the emulator's total limit of {MAX_ONCHIP_TOTAL} bytes",
                prog.cores.len(),
                t.sram.size_bytes,
                t.accumulator.size_bytes
            )));
        }
        let mut cores = Vec::with_capacity(prog.cores.len());
        for _ in 0..prog.cores.len() {
            cores.push(Core {
                regs: [0; 32],
                pc: 0,
                t: 0,
                disp: Disp::Run,
                units: Default::default(),
                sems: [0; 32],
                sram: alloc(t.sram.size_bytes, "scratchpad SRAM")?,
                acc: alloc(t.accumulator.size_bytes, "accumulator SRAM")?,
                remote: VecDeque::new(),
                hbm_until: 0,
                arrival: 0,
                report: CoreReport::default(),
                init: (opts.check_uninit && !opts.timing_only).then(|| {
                    [
                        InitMap::new(t.sram.size_bytes as usize),
                        InitMap::new(t.accumulator.size_bytes as usize),
                    ]
                }),
            });
        }
        let mut loc_names = vec!["(no location)".to_string()];
        let mut ids: HashMap<&str, u32> = HashMap::new();
        let mut loc_of = Vec::with_capacity(prog.cores.len());
        for (c, stream) in prog.cores.iter().enumerate() {
            let mut v = vec![0u32; stream.len()];
            let entries: Vec<_> = prog.debug.iter().filter(|d| d.core as usize == c).collect();
            for (i, d) in entries.iter().enumerate() {
                let id = *ids.entry(d.loc.as_str()).or_insert_with(|| {
                    loc_names.push(d.loc.clone());
                    (loc_names.len() - 1) as u32
                });
                let end = entries
                    .get(i + 1)
                    .map(|n| n.pc as usize)
                    .unwrap_or(stream.len())
                    .min(stream.len());
                for slot in v.iter_mut().take(end).skip(d.pc as usize) {
                    *slot = id;
                }
            }
            loc_of.push(v);
        }
        let locs = loc_names
            .iter()
            .map(|n| LocReport {
                loc: n.clone(),
                ..Default::default()
            })
            .collect();
        let n = cores.len();
        Ok(Sim {
            prog,
            t,
            opts,
            cores,
            hbm: Hbm::new(t.hbm.size_bytes)?,
            hbm_free: 0,
            hbm_writers: Vec::new(),
            control: prog
                .kv
                .as_ref()
                .filter(|_| opts.timing_only)
                .and_then(|kv| {
                    Some((kv.table_addr, kv.table_addr.checked_add(kv.table_bytes()?)?))
                }),
            sem_events: BinaryHeap::new(),
            next: NextTimes::new(n),
            executed: 0,
            now: 0,
            end: 0,
            sizes: Sizes {
                hbm: t.hbm.size_bytes,
                sram: t.sram.size_bytes,
                acc: t.accumulator.size_bytes,
            },
            loc_of,
            locs,
            totals: Totals::default(),
            trace: opts.trace.then(Vec::new),
            timeline: opts.timeline.then(|| Timeline::new(n, loc_names.clone())),
            max_cycles: opts.max_cycles.min(CYCLE_CAP),
            work: 0,
            loc_names,
            ff: (opts.timing_only && opts.fast_forward).then(|| Box::new(ff::Ff::new())),
            ff_pending: false,
            verify: None,
            operands: vec![Vec::new(); n],
        })
    }

    /// Updates the next times of core `c`'s dispatcher and units.
    fn refresh(&mut self, c: usize) {
        let t = [
            self.disp_time(c),
            self.unit_time(c, 1),
            self.unit_time(c, 2),
            self.unit_time(c, 3),
        ];
        self.next.set_core(c, t);
    }

    fn disp_time(&self, c: usize) -> u64 {
        let core = &self.cores[c];
        match core.disp {
            Disp::Run => core.t,
            Disp::Drain { .. } => {
                if core.units[1..].iter().all(|q| q.queue.is_empty()) {
                    core.units[1..]
                        .iter()
                        .map(|q| q.last_completion)
                        .fold(core.t, u64::max)
                } else {
                    NONE
                }
            }
            _ => NONE,
        }
    }

    /// The registers instruction `pc` of core `c` reads, with their roles, computed once.
    fn operands(&mut self, c: usize, pc: u32, inst: &Inst) -> ff::Roles {
        let row = &mut self.operands[c];
        if row.is_empty() {
            row.resize(self.prog.cores[c].len(), None);
        }
        match row.get_mut(pc as usize) {
            Some(slot) => *slot.get_or_insert_with(|| ff::roles(inst)),
            None => ff::roles(inst),
        }
    }

    /// Updates the next time of core `c`'s unit `u` only.
    fn refresh_unit(&mut self, c: usize, u: usize) {
        let t = self.unit_time(c, u);
        self.next.set(4 * c + u, t);
    }

    /// The next time of core `c`'s unit `u`. A queue whose head waits for a semaphore that is
    /// short now is marked blocked at once instead of being picked at its time only to find
    /// that out: an increment unblocks it no earlier than that time, so it starts when it
    /// would have. Picking it also moved the clock, which only the deadlock error shows
    /// ([`Sim::deadlock`] takes it into account), and may hit the cycle limit: a head due
    /// after `max_cycles` is left to be picked.
    fn unit_time(&mut self, c: usize, u: usize) -> u64 {
        let max_cycles = self.max_cycles;
        let core = &mut self.cores[c];
        let q = &mut core.units[u];
        match q.queue.front() {
            Some(e) if !q.blocked => {
                let t = q.free.max(e.ready).max(q.wake);
                if let Inst::DmaWait { sem, count }
                | Inst::MxuWait { sem, count }
                | Inst::VpuWait { sem, count } = e.inst
                    && core.sems[(sem.0 & 31) as usize] < count as u64
                    && t <= max_cycles
                {
                    q.blocked = true;
                    return NONE;
                }
                t
            }
            _ => NONE,
        }
    }

    /// Runs the program to completion.
    pub fn run(&mut self) -> Result<(), EmuError> {
        for c in 0..self.cores.len() {
            self.refresh(c);
        }
        loop {
            if self.ff_pending {
                self.ff_pending = false;
                self.ff_anchor();
            }
            let (best, bt) = self.next.best();
            let te = self.sem_events.peek().map(|r| r.0.0).unwrap_or(NONE);
            if te != NONE && te <= bt {
                self.sem_event();
                continue;
            }
            if bt == NONE {
                if self.cores.iter().all(|c| c.disp == Disp::Done) {
                    return Ok(());
                }
                return Err(self.deadlock());
            }
            let (c, u) = (best / 4, best % 4);
            if bt > self.max_cycles {
                let (pc, inst) = self.agent_pc(c, u);
                return Err(EmuError::CycleLimit {
                    limit: self.opts.max_cycles,
                    core: c,
                    pc,
                    inst,
                    cycle: bt,
                });
            }
            self.now = bt;
            if let Some(v) = &mut self.verify {
                v.max_time = v.max_time.max(bt);
            }
            if u == 0 {
                let second = self.next.others(best);
                let limit = second.min(te).min(self.max_cycles.saturating_add(1));
                self.dispatch(c, limit)?;
            } else {
                self.unit_step(c, u)?;
            }
        }
    }

    fn agent_pc(&self, c: usize, u: usize) -> (u32, String) {
        let core = &self.cores[c];
        let pc = if u == 0 {
            core.pc
        } else {
            core.units[u].queue.front().map(|e| e.pc).unwrap_or(0)
        };
        let inst = self.prog.cores[c]
            .get(pc as usize)
            .map(|i| i.to_string())
            .unwrap_or_default();
        (pc, inst)
    }

    fn sem_event(&mut self) {
        let Some(Reverse((time, c, s))) = self.sem_events.pop() else {
            return;
        };
        let c = c as usize;
        let core = &mut self.cores[c];
        core.sems[s as usize] = core.sems[s as usize].saturating_add(1);
        if core.disp == Disp::WaitSem {
            core.disp = Disp::Run;
            core.t = core.t.max(time);
        }
        for q in core.units[1..].iter_mut() {
            if q.blocked {
                q.blocked = false;
                q.wake = q.wake.max(time);
            }
        }
        self.refresh(c);
    }

    fn count(&mut self, c: usize, pc: u32) -> Result<(), EmuError> {
        self.executed += 1;
        if let Some(v) = &self.verify
            && self.executed > v.exec_limit
        {
            // Longer than the watched period: not the same period; stop tracking slopes.
            self.verify = None;
            if let Some(f) = &mut self.ff {
                f.abandon();
            }
        }
        if self.executed.is_multiple_of(crate::PROGRESS_EVERY)
            && let Some(p) = &self.opts.progress
        {
            (p.0)(self.executed, self.now);
        }
        if self.executed > self.opts.max_instructions {
            return Err(EmuError::InstructionLimit {
                limit: self.opts.max_instructions,
                core: c,
                pc,
                cycle: self.now,
            });
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        c: usize,
        unit: Unit,
        pc: u32,
        inst: &Inst,
        start: u64,
        free: u64,
        completion: u64,
        cst: &Cost,
    ) {
        let ui = unit.index();
        let busy = free.saturating_sub(start);
        let core = &mut self.cores[c];
        let us = &mut core.report.units[ui];
        us.busy_cycles = us.busy_cycles.saturating_add(busy);
        us.instructions += 1;
        core.report.end_cycle = core.report.end_cycle.max(completion);
        self.end = self.end.max(completion);
        let loc = self.loc_of[c].get(pc as usize).copied().unwrap_or(0);
        if let Some(v) = &mut self.verify {
            v.ended(c, Some(loc), completion);
        }
        if let Some(l) = self.locs.get_mut(loc as usize) {
            l.busy_cycles[ui] = l.busy_cycles[ui].saturating_add(busy);
            l.instructions += 1;
            l.hbm_bytes = l
                .hbm_bytes
                .saturating_add(cst.hbm_read.saturating_add(cst.hbm_write));
            l.macs = l.macs.saturating_add(cst.macs);
            l.vector_ops = l.vector_ops.saturating_add(cst.vector_ops);
            if l.instructions == 1 {
                l.first_start = start;
            }
            l.first_start = l.first_start.min(start);
            l.last_end = l.last_end.max(completion);
        }
        let tt = &mut self.totals;
        tt.hbm_read = tt.hbm_read.saturating_add(cst.hbm_read);
        tt.hbm_write = tt.hbm_write.saturating_add(cst.hbm_write);
        tt.sram_bytes = tt
            .sram_bytes
            .saturating_add(cst.sram_read.saturating_add(cst.sram_write));
        tt.acc_bytes = tt
            .acc_bytes
            .saturating_add(cst.acc_read.saturating_add(cst.acc_write));
        tt.vector_ops = tt.vector_ops.saturating_add(cst.vector_ops);
        let k = match cst.mac_kind {
            MacKind::Low => 0,
            MacKind::Fp32 => 1,
            MacKind::Int8 => 2,
        };
        tt.macs[k] = tt.macs[k].saturating_add(cst.macs);
        if let Some(tl) = &mut self.timeline {
            tl.add(4 * c + ui, loc, start, free);
            if let Some(v) = &mut self.verify {
                v.timeline.push((4 * c + ui, loc, start, free));
            }
        }
        if let Some(tr) = &mut self.trace {
            let ev = TraceEvent::instruction(
                c as u32,
                unit,
                pc,
                inst.desc().mnemonic,
                (loc != 0).then_some(loc),
                (start, free, completion),
            );
            if let Some(v) = &mut self.verify {
                v.trace.push(ev);
            }
            tr.push(ev);
        }
    }

    fn high_water(core: &mut Core, spans: &Spans) {
        for s in spans.as_slice() {
            match s.space {
                MemSpace::Sram => {
                    core.report.sram_high_water = core.report.sram_high_water.max(s.hi)
                }
                MemSpace::Acc => core.report.acc_high_water = core.report.acc_high_water.max(s.hi),
                MemSpace::Hbm => {}
            }
        }
    }

    /// The data race between instruction `pc` (`inst`, on core `c`'s unit `u`, accessing `a`)
    /// and instruction `pc2` of core `c2`'s unit `u2` (accessing `b` until `until`).
    fn race(
        &self,
        (c, u, pc, inst, a): (usize, usize, u32, &Inst, &Span),
        (c2, u2, pc2, b): (usize, usize, u32, &Span),
        until: u64,
    ) -> EmuError {
        let side = |core: usize, unit: usize, pc: u32, inst: String, write: bool| {
            Box::new(RaceSide {
                core,
                unit: Unit::ALL[unit].name(),
                pc,
                inst,
                write,
            })
        };
        let other = self.prog.cores[c2]
            .get(pc2 as usize)
            .map(|i| i.to_string())
            .unwrap_or_default();
        EmuError::Race {
            first: side(c, u, pc, inst.to_string(), a.write),
            second: side(c2, u2, pc2, other, b.write),
            space: a.space,
            lo: a.lo.max(b.lo),
            hi: a.hi.min(b.hi),
            until,
        }
    }

    /// `slopes`: the per-period drift of each of `spans` while a period is verified (`ff`).
    fn race_check(
        &self,
        c: usize,
        u: usize,
        pc: u32,
        inst: &Inst,
        spans: &Spans,
        slopes: &[i64; 4],
    ) -> Result<(), EmuError> {
        let now = self.now;
        let hbm = spans.has_hbm();
        let hbm_write = spans
            .as_slice()
            .iter()
            .any(|s| s.space == MemSpace::Hbm && s.write);
        // The cores to look at, in order: this one; others only through HBM — for an HBM write
        // those with any HBM access in flight, for an HBM read those with an HBM write in
        // flight (nothing else there can conflict).
        let mut scan = [0u64; 4];
        let mut mark = |i: usize| scan[i / 64] |= 1 << (i % 64);
        mark(c);
        if hbm_write {
            for (ci, core) in self.cores.iter().enumerate() {
                if core.hbm_until > now {
                    mark(ci);
                }
            }
        } else if hbm {
            for &(until, ci) in &self.hbm_writers {
                if until > now {
                    mark(ci as usize);
                }
            }
        }
        let verify = self.verify.as_deref();
        // The marked cores in increasing order.
        let order = scan.into_iter().enumerate().flat_map(|(w, mut bits)| {
            std::iter::from_fn(move || {
                let b = bits.trailing_zeros();
                (b < 64).then(|| {
                    bits &= bits - 1;
                    64 * w + b as usize
                })
            })
        });
        for ci in order {
            let core = &self.cores[ci];
            for (ui, q) in core.units.iter().enumerate() {
                if ci == c && ui == u {
                    continue;
                }
                for f in q.inflight.iter().filter(|f| f.completion > now) {
                    for (a, &sa) in spans.as_slice().iter().zip(slopes) {
                        if ci != c && a.space != MemSpace::Hbm {
                            continue;
                        }
                        for (b, &sb) in f.spans.as_slice().iter().zip(&f.slope) {
                            if !may_conflict(a, b) {
                                continue;
                            }
                            if let Some(v) = verify {
                                v.pair(a, sa, b, sb);
                            }
                            if conflicts_exact(a, b) {
                                let first = (c, u, pc, inst, a);
                                return Err(self.race(first, (ci, ui, f.pc, b), f.completion));
                            }
                        }
                    }
                }
            }
        }
        self.race_check_remote(c, u, pc, inst, c, spans.as_slice(), slopes)
    }

    /// Checks `spans` (accesses of instruction `pc` on core `c`'s unit `u`, drifting by `slopes`
    /// per period while one is verified) against what is in flight in core `j`'s scratchpad: its
    /// own units' accesses when `j != c` (a multicast writing there), and other cores' multicasts
    /// into it.
    #[allow(clippy::too_many_arguments)]
    fn race_check_remote(
        &self,
        c: usize,
        u: usize,
        pc: u32,
        inst: &Inst,
        j: usize,
        spans: &[Span],
        slopes: &[i64],
    ) -> Result<(), EmuError> {
        let now = self.now;
        let Some(core) = self.cores.get(j) else {
            return Ok(());
        };
        if j == c && core.remote.is_empty() {
            return Ok(());
        }
        let dma = Unit::Dma.index();
        let verify = self.verify.as_deref();
        for (a, &sa) in spans
            .iter()
            .zip(slopes)
            .filter(|(a, _)| a.space != MemSpace::Hbm)
        {
            let first = (c, u, pc, inst, a);
            if j != c {
                for (ui, q) in core.units.iter().enumerate() {
                    for f in q.inflight.iter().filter(|f| f.completion > now) {
                        for (b, &sb) in f.spans.as_slice().iter().zip(&f.slope) {
                            if !may_conflict(a, b) {
                                continue;
                            }
                            if let Some(v) = verify {
                                v.pair(a, sa, b, sb);
                            }
                            if conflicts_exact(a, b) {
                                return Err(self.race(first, (j, ui, f.pc, b), f.completion));
                            }
                        }
                    }
                }
            }
            for r in core.remote.iter().filter(|r| r.completion > now) {
                if let Some(v) = verify {
                    v.pair(a, sa, &r.span, r.slope);
                }
                if conflicts_exact(a, &r.span) {
                    return Err(self.race(first, (r.from, dma, r.pc, &r.span), r.completion));
                }
            }
        }
        Ok(())
    }

    fn push_inflight(
        q: &mut Queue,
        now: u64,
        pc: u32,
        completion: u64,
        spans: Spans,
        slope: [i64; 4],
    ) {
        if spans.n == 0 {
            return;
        }
        // Completed accesses can no longer conflict: drop them (those at the front at once,
        // the rest when the queue grows).
        while q.inflight.front().is_some_and(|f| f.completion <= now) {
            q.inflight.pop_front();
        }
        if q.inflight.len() >= 8 {
            q.inflight.retain(|f| f.completion > now);
        }
        q.inflight.push_back(InFlight {
            pc,
            completion,
            spans,
            slope,
        });
    }

    /// Runs dispatcher `c` from `self.now` while it stays before `limit`.
    fn dispatch(&mut self, c: usize, mut limit: u64) -> Result<(), EmuError> {
        let lat_scalar = self.t.latency.scalar;
        let depth = self.t.latency.queue_depth as usize;
        loop {
            let disp = self.cores[c].disp;
            match disp {
                Disp::Run => {}
                Disp::Drain { halt } => {
                    let at = self.next.get(4 * c);
                    if let Some(v) = &mut self.verify {
                        v.ended(c, None, at);
                    }
                    let core = &mut self.cores[c];
                    core.report.end_cycle = core.report.end_cycle.max(at);
                    self.end = self.end.max(at);
                    if halt {
                        core.disp = Disp::Done;
                        if let Some(f) = &mut self.ff
                            && f.core_done(c, &self.cores)
                        {
                            self.verify = None;
                        }
                    } else {
                        core.disp = Disp::AtBarrier;
                        core.arrival = at;
                        self.try_release();
                    }
                    self.refresh(c);
                    return Ok(());
                }
                _ => {
                    self.refresh(c);
                    return Ok(());
                }
            }
            let pc = self.cores[c].pc;
            let Some(&inst) = self.prog.cores[c].get(pc as usize) else {
                return Err(EmuError::MissingHalt {
                    core: c,
                    len: self.prog.cores[c].len(),
                });
            };
            let unit = inst.unit();
            if unit != Unit::Scalar {
                let ui = unit.index();
                let ops = self.operands(c, pc, &inst);
                let launch = self.launch(c, pc);
                let core = &mut self.cores[c];
                if core.units[ui].queue.len() >= depth {
                    core.disp = Disp::QueueFull(ui);
                    self.refresh(c);
                    return Ok(());
                }
                let t0 = core.t;
                let disp_busy = lat_scalar.saturating_add(launch);
                let ready = t0.saturating_add(disp_busy);
                core.units[ui].queue.push_back(Entry {
                    pc,
                    inst,
                    regs: Captured::capture(ops, &core.regs),
                    ready,
                });
                core.t = ready;
                core.pc = pc + 1;
                let us = &mut core.report.units[0];
                us.busy_cycles = us.busy_cycles.saturating_add(disp_busy);
                let loc = self.loc_of[c].get(pc as usize).copied().unwrap_or(0);
                if let Some(l) = self.locs.get_mut(loc as usize) {
                    l.busy_cycles[0] = l.busy_cycles[0].saturating_add(disp_busy);
                }
                if let Some(v) = &mut self.verify {
                    v.dispatched(c, ui, &ops);
                }
                if let Some(tl) = &mut self.timeline {
                    tl.add(4 * c, loc, t0, ready);
                    if let Some(v) = &mut self.verify {
                        v.timeline.push((4 * c, loc, t0, ready));
                    }
                }
                // Only this unit's time matters within the burst; the dispatcher's own is set
                // when the burst ends.
                self.refresh_unit(c, ui);
                limit = limit.min(self.next.get(4 * c + ui));
            } else {
                self.now = self.cores[c].t;
                self.scalar(c, pc, &inst)?;
                if self.ff_pending {
                    // Back to the main loop, which takes this dispatcher again at once (it is
                    // strictly before every other agent): the burst's end changes nothing.
                    self.refresh(c);
                    return Ok(());
                }
                if let Some(r) = self.sem_events.peek() {
                    limit = limit.min(r.0.0);
                }
            }
            let core = &self.cores[c];
            if core.disp != Disp::Run || core.t >= limit {
                self.refresh(c);
                return Ok(());
            }
        }
    }

    /// The op-launch cycles (`latency.op_launch`) the dispatcher pays before instruction `pc` of
    /// core `c`: at the first instruction of every located op's code, i.e. where the location
    /// differs from the previous instruction's in program order (a function of `pc` alone, so
    /// loops stay periodic for fast-forwarding).
    fn launch(&self, c: usize, pc: u32) -> u64 {
        let cycles = self.t.latency.op_launch;
        if cycles == 0 {
            return 0;
        }
        let locs = &self.loc_of[c];
        let at = |i: usize| locs.get(i).copied().unwrap_or(0);
        let (pc, loc) = (pc as usize, at(pc as usize));
        if loc != 0 && (pc == 0 || at(pc - 1) != loc) {
            cycles
        } else {
            0
        }
    }

    fn try_release(&mut self) {
        if !self.cores.iter().all(|c| c.disp == Disp::AtBarrier) {
            return;
        }
        let lat = self.t.latency.barrier;
        let release = self
            .cores
            .iter()
            .map(|c| c.arrival)
            .max()
            .unwrap_or(0)
            .saturating_add(lat);
        for c in 0..self.cores.len() {
            let pc = self.cores[c].pc;
            let inst = Inst::Barrier {};
            let cst = Cost {
                occupancy: lat,
                ..Default::default()
            };
            self.record(
                c,
                Unit::Scalar,
                pc,
                &inst,
                release.saturating_sub(lat),
                release,
                release,
                &cst,
            );
            let core = &mut self.cores[c];
            core.disp = Disp::Run;
            core.t = release;
            core.pc = pc + 1;
            self.refresh(c);
        }
    }

    fn scalar(&mut self, c: usize, pc: u32, inst: &Inst) -> Result<(), EmuError> {
        if self.verify.is_some() {
            self.sym_scalar(c, inst);
        }
        let cst = cost(inst, self.t);
        let occ = cst.occupancy.saturating_add(self.launch(c, pc));
        let start = self.cores[c].t;
        let end = start.saturating_add(occ);
        let mut next_pc = pc + 1;
        let mut spans = Spans::EMPTY;
        {
            let r = &self.cores[c].regs;
            let g = |x: llmpu_isa::Reg| r[(x.0 & 31) as usize];
            let mut set = None;
            match *inst {
                Inst::Nop {} => {}
                Inst::Cid { rd } => set = Some((rd, c as i64)),
                Inst::Li { rd, imm } => set = Some((rd, imm as i64)),
                Inst::Lih { rd, imm } => {
                    set = Some((rd, ((imm as i64) << 32) | (g(rd) & 0xffff_ffff)))
                }
                Inst::Add { rd, rs1, rs2 } => set = Some((rd, g(rs1).wrapping_add(g(rs2)))),
                Inst::Sub { rd, rs1, rs2 } => set = Some((rd, g(rs1).wrapping_sub(g(rs2)))),
                Inst::Mul { rd, rs1, rs2 } => set = Some((rd, g(rs1).wrapping_mul(g(rs2)))),
                Inst::Div { rd, rs1, rs2 } | Inst::Rem { rd, rs1, rs2 } => {
                    let (a, b) = (g(rs1), g(rs2));
                    if b == 0 {
                        return Err(trap(c, pc, inst, TrapKind::DivByZero));
                    }
                    let v = if matches!(inst, Inst::Div { .. }) {
                        a.wrapping_div(b)
                    } else {
                        a.wrapping_rem(b)
                    };
                    set = Some((rd, v));
                }
                Inst::Min { rd, rs1, rs2 } => set = Some((rd, g(rs1).min(g(rs2)))),
                Inst::Max { rd, rs1, rs2 } => set = Some((rd, g(rs1).max(g(rs2)))),
                Inst::And { rd, rs1, rs2 } => set = Some((rd, g(rs1) & g(rs2))),
                Inst::Or { rd, rs1, rs2 } => set = Some((rd, g(rs1) | g(rs2))),
                Inst::Xor { rd, rs1, rs2 } => set = Some((rd, g(rs1) ^ g(rs2))),
                Inst::Shl { rd, rs1, rs2 } => {
                    set = Some((rd, g(rs1).wrapping_shl((g(rs2) & 63) as u32)))
                }
                Inst::Shr { rd, rs1, rs2 } => {
                    set = Some((rd, ((g(rs1) as u64) >> (g(rs2) & 63)) as i64))
                }
                Inst::Slt { rd, rs1, rs2 } => set = Some((rd, (g(rs1) < g(rs2)) as i64)),
                Inst::Seq { rd, rs1, rs2 } => set = Some((rd, (g(rs1) == g(rs2)) as i64)),
                Inst::Addi { rd, rs1, imm } => set = Some((rd, g(rs1).wrapping_add(imm as i64))),
                Inst::Muli { rd, rs1, imm } => set = Some((rd, g(rs1).wrapping_mul(imm as i64))),
                Inst::Shli { rd, rs1, sh } => set = Some((rd, g(rs1).wrapping_shl(sh & 63))),
                Inst::Shri { rd, rs1, sh } => {
                    set = Some((rd, ((g(rs1) as u64) >> (sh & 63)) as i64))
                }
                Inst::Andi { rd, rs1, imm } => set = Some((rd, g(rs1) & imm as i64)),
                Inst::Beq { rs1, rs2, target }
                | Inst::Bne { rs1, rs2, target }
                | Inst::Blt { rs1, rs2, target }
                | Inst::Bge { rs1, rs2, target } => {
                    let (a, b) = (g(rs1), g(rs2));
                    let take = match inst {
                        Inst::Beq { .. } => a == b,
                        Inst::Bne { .. } => a != b,
                        Inst::Blt { .. } => a < b,
                        _ => a >= b, // bge
                    };
                    if take {
                        next_pc = (pc as i64 + target.0 as i64) as u32;
                        if target.0 < 0 {
                            self.ff_back_edge(c);
                        }
                    }
                }
                Inst::Jmp { target } => {
                    next_pc = (pc as i64 + target.0 as i64) as u32;
                    if target.0 < 0 {
                        self.ff_back_edge(c);
                    }
                }
                Inst::Ld { rd, .. } | Inst::Ld32 { rd, .. } | Inst::St { rs: rd, .. } => {
                    spans =
                        exec::spans(inst, r, &self.sizes, &[]).map_err(|k| trap(c, pc, inst, k))?;
                    if matches!(inst, Inst::St { .. }) {
                        set = None;
                    } else {
                        set = Some((rd, 0));
                    }
                }
                Inst::Wait { sem, count } => {
                    let s = (sem.0 & 31) as usize;
                    let core = &mut self.cores[c];
                    if core.sems[s] < count as u64 {
                        core.disp = Disp::WaitSem;
                        return Ok(());
                    }
                    core.sems[s] -= count as u64;
                }
                Inst::Signal { sem } => {
                    self.sem_events.push(Reverse((end, c as u32, sem.0 & 31)));
                }
                Inst::Barrier {} => {
                    self.count(c, pc)?;
                    self.cores[c].disp = Disp::Drain { halt: false };
                    return Ok(());
                }
                Inst::Halt {} => {
                    self.cores[c].disp = Disp::Drain { halt: true };
                }
                // The other units' instructions are queued by `dispatch`, never run here.
                Inst::DmaLoad { .. }
                | Inst::DmaStore { .. }
                | Inst::DmaGather { .. }
                | Inst::DmaScatter { .. }
                | Inst::DmaMcast { .. }
                | Inst::DmaWait { .. }
                | Inst::DmaSignal { .. }
                | Inst::MxuMatmul { .. }
                | Inst::MxuWait { .. }
                | Inst::MxuSignal { .. }
                | Inst::VpuAdd { .. }
                | Inst::VpuSub { .. }
                | Inst::VpuMul { .. }
                | Inst::VpuDiv { .. }
                | Inst::VpuMax { .. }
                | Inst::VpuMin { .. }
                | Inst::VpuEq { .. }
                | Inst::VpuLt { .. }
                | Inst::VpuLe { .. }
                | Inst::VpuSel { .. }
                | Inst::VpuAdds { .. }
                | Inst::VpuSubs { .. }
                | Inst::VpuRsubs { .. }
                | Inst::VpuMuls { .. }
                | Inst::VpuDivs { .. }
                | Inst::VpuMaxs { .. }
                | Inst::VpuMins { .. }
                | Inst::VpuPows { .. }
                | Inst::VpuCopy { .. }
                | Inst::VpuExp { .. }
                | Inst::VpuLog { .. }
                | Inst::VpuSqrt { .. }
                | Inst::VpuRsqrt { .. }
                | Inst::VpuRecip { .. }
                | Inst::VpuTanh { .. }
                | Inst::VpuErf { .. }
                | Inst::VpuSigmoid { .. }
                | Inst::VpuNeg { .. }
                | Inst::VpuAbs { .. }
                | Inst::VpuSin { .. }
                | Inst::VpuCos { .. }
                | Inst::VpuFloor { .. }
                | Inst::VpuCeil { .. }
                | Inst::VpuTrunc { .. }
                | Inst::VpuRound { .. }
                | Inst::VpuRsum { .. }
                | Inst::VpuRmax { .. }
                | Inst::VpuRmin { .. }
                | Inst::VpuSacc { .. }
                | Inst::VpuFill { .. }
                | Inst::VpuCausal { .. }
                | Inst::VpuExpsum { .. }
                | Inst::VpuWait { .. }
                | Inst::VpuSignal { .. } => {
                    return Err(EmuError::Unsupported(format!(
                        "core {c} pc {pc}: `{inst}` reached the scalar unit"
                    )));
                }
            }
            self.count(c, pc)?;
            if spans.n > 0 {
                if self.opts.race_check {
                    self.race_check(c, 0, pc, inst, &spans, &[0; 4])?;
                }
                let s = spans.s[0];
                let core = &mut self.cores[c];
                let regs = core.regs;
                core.check_uninit(inst, &regs, c, pc)?;
                let (lo, hi) = (s.lo as usize, s.hi as usize);
                match (*inst, set) {
                    (Inst::St { rs, .. }, _) => {
                        let v = core.regs[(rs.0 & 31) as usize];
                        if let Some(b) = core.sram.get_mut(lo..hi) {
                            b.copy_from_slice(&v.to_le_bytes());
                        }
                    }
                    (_, Some((rd, _))) => {
                        let mut b = [0u8; 8];
                        if let Some(src) = core.sram.get(lo..hi) {
                            b[..hi - lo].copy_from_slice(src);
                        }
                        let v = if hi - lo == 4 {
                            i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64
                        } else {
                            i64::from_le_bytes(b)
                        };
                        set = Some((rd, v));
                    }
                    _ => {}
                }
                Self::high_water(core, &spans);
                Self::push_inflight(&mut core.units[0], self.now, pc, end, spans, [0; 4]);
            }
            if let Some((rd, v)) = set
                && rd.0 != 0
            {
                self.cores[c].regs[(rd.0 & 31) as usize] = v;
            }
        }
        let core = &mut self.cores[c];
        core.t = end;
        core.pc = next_pc;
        self.record(c, Unit::Scalar, pc, inst, start, end, end, &cst);
        Ok(())
    }

    fn unit_step(&mut self, c: usize, u: usize) -> Result<(), EmuError> {
        let now = self.now;
        let sizes = self.sizes;
        let ncores = self.cores.len();
        let core = &mut self.cores[c];
        let Core {
            units, sram, sems, ..
        } = core;
        let q = &mut units[u];
        let Some(e) = q.queue.front() else {
            self.refresh(c);
            return Ok(());
        };
        let (pc, inst) = (e.pc, e.inst);
        let mcast = inst.multicast().map(|(_, d, sem)| (d, sem));
        let spans = match q.head_spans {
            Some(s) => s,
            None => {
                let regs = e.regs.regs();
                let mut s =
                    exec::spans(&inst, &regs, &sizes, sram).map_err(|k| trap(c, pc, &inst, k))?;
                let local = mcast
                    .as_ref()
                    .is_some_and(|(d, _)| !d.contains(&(c as u32)));
                if let Some(v) = self.verify.as_deref() {
                    let at = (&inst, &e.regs.ops);
                    q.head_slope = v.span_slopes(c, u, at, &regs, &sizes, sram, &s, local);
                }
                if let Some((d, _)) = &mcast {
                    if !self.t.hbm.multicast {
                        let kind = TrapKind::NoMulticast(self.t.name.clone());
                        return Err(trap(c, pc, &inst, kind));
                    }
                    if d.is_empty() || d.end as usize > ncores {
                        let kind = TrapKind::BadCores {
                            first: d.start,
                            count: d.end - d.start,
                            cores: ncores,
                        };
                        return Err(trap(c, pc, &inst, kind));
                    }
                    if !d.contains(&(c as u32)) {
                        s = local_part(&s);
                    }
                }
                q.head_spans = Some(s);
                s
            }
        };
        let slopes = q.head_slope;
        if spans.n > 0 {
            let mut until = now;
            let mxu = u == Unit::Mxu.index();
            let verify = self.verify.as_deref();
            for f in q.inflight.iter().filter(|f| f.completion > now) {
                for (a, &sa) in spans.as_slice().iter().zip(&slopes) {
                    for (b, &sb) in f.spans.as_slice().iter().zip(&f.slope) {
                        if !may_conflict(a, b) {
                            continue;
                        }
                        let in_order_acc =
                            mxu && a.space == MemSpace::Acc && b.space == MemSpace::Acc;
                        if let Some(v) = verify
                            && !in_order_acc
                        {
                            v.pair(a, sa, b, sb);
                        }
                        if conflicts_exact(a, b) && !in_order_acc {
                            until = until.max(f.completion);
                        }
                    }
                }
            }
            if until > now {
                q.wake = until;
                self.refresh_unit(c, u);
                return Ok(());
            }
        }
        match inst {
            Inst::DmaWait { sem, count }
            | Inst::MxuWait { sem, count }
            | Inst::VpuWait { sem, count } => {
                let s = (sem.0 & 31) as usize;
                if sems[s] < count as u64 {
                    q.blocked = true;
                    self.refresh_unit(c, u);
                    return Ok(());
                }
                sems[s] -= count as u64;
            }
            _ => {}
        }
        self.count(c, pc)?;
        let cst = cost(&inst, self.t);
        let unit = Unit::ALL[u];
        let is_signal = matches!(
            inst,
            Inst::DmaSignal { .. } | Inst::MxuSignal { .. } | Inst::VpuSignal { .. }
        );
        let is_sync = is_signal
            || matches!(
                inst,
                Inst::DmaWait { .. } | Inst::MxuWait { .. } | Inst::VpuWait { .. }
            );
        let last = self.cores[c].units[u].last_completion;
        let (free, completion) = if unit == Unit::Dma && !is_sync {
            let hbm_start = now
                .saturating_add(self.t.latency.dma_setup)
                .max(self.hbm_free);
            let free = hbm_start.saturating_add(cst.transfer);
            (free, free.saturating_add(cst.latency))
        } else if is_signal {
            let free = now.saturating_add(cst.occupancy);
            (free, free.max(last))
        } else {
            let free = now.saturating_add(cst.occupancy);
            (free, free.saturating_add(cst.latency))
        };
        if completion > self.max_cycles {
            return Err(EmuError::CycleLimit {
                limit: self.opts.max_cycles,
                core: c,
                pc,
                inst: inst.to_string(),
                cycle: completion,
            });
        }
        if self.opts.race_check && spans.n > 0 {
            self.race_check(c, u, pc, &inst, &spans, &slopes)?;
        }
        // A multicast's write into the other destinations' scratchpads.
        let (remote, remote_slope) = match &mcast {
            Some((d, _)) => {
                let head = &self.cores[c].units[u].queue[0].regs;
                let (regs, ops) = (&head.regs(), head.ops);
                let all =
                    exec::spans(&inst, regs, &sizes, &[]).map_err(|k| trap(c, pc, &inst, k))?;
                let at = all
                    .as_slice()
                    .iter()
                    .position(|s| s.space == MemSpace::Sram);
                let w = at.map(|i| all.s[i]);
                let ws = match (self.verify.as_deref(), at) {
                    (Some(v), Some(i)) => {
                        v.span_slopes(c, u, (&inst, &ops), regs, &sizes, &[], &all, false)[i]
                    }
                    _ => 0,
                };
                if let Some(w) = w
                    && self.opts.race_check
                {
                    for j in d.clone().map(|j| j as usize).filter(|&j| j != c) {
                        self.race_check_remote(c, u, pc, &inst, j, &[w], &[ws])?;
                    }
                }
                (w, ws)
            }
            None => (None, 0),
        };
        if unit == Unit::Dma && !is_sync {
            self.hbm_free = free;
        }
        let control = matches!(inst, Inst::DmaLoad { .. } | Inst::DmaMcast { .. })
            && self.control.is_some_and(|(lo, hi)| {
                let mut hbm = spans.as_slice().iter().filter(|s| s.space == MemSpace::Hbm);
                hbm.clone().next().is_some() && hbm.all(|s| s.lo >= lo && s.hi <= hi)
            });
        if let Some(v) = &mut self.verify
            && let Some(e) = self.cores[c].units[u].queue.front()
        {
            v.started(
                c,
                u,
                (&inst, &e.regs.ops),
                &spans,
                &slopes,
                control,
                self.control,
            );
        }
        let functional = (!self.opts.timing_only || control) && !is_sync;
        // The entry's registers, for the functional kernels (a timing-only run never copies them).
        let regs = match self.cores[c].units[u].queue.front() {
            Some(e) if functional => e.regs.regs(),
            _ => [0; 32],
        };
        self.cores[c].units[u].queue.pop_front();
        if functional {
            let w = exec::work(&inst, &cst);
            if self.work.saturating_add(w) > self.opts.max_work {
                return Err(EmuError::WorkLimit {
                    limit: self.opts.max_work,
                    done: self.work,
                    core: c,
                    pc,
                    inst: inst.to_string(),
                    work: w,
                });
            }
            self.work += w;
            // A multicast writes every destination's scratchpad; anything else this core's.
            let dests = match &mcast {
                Some((d, _)) => d.start as usize..d.end as usize,
                None => c..c + 1,
            };
            for j in dests {
                let cj = &mut self.cores[j];
                cj.check_uninit(&inst, &regs, c, pc)?;
                let mut mem = Mem {
                    sram: &mut cj.sram,
                    acc: &mut cj.acc,
                    hbm: &mut self.hbm,
                    check_uninit: cj.init.is_some(),
                };
                exec::execute(&inst, &regs, &mut mem).map_err(|k| trap(c, pc, &inst, k))?;
            }
        }
        if let Some((d, sem)) = &mcast {
            for j in d.clone() {
                self.sem_events.push(Reverse((completion, j, sem.0 & 31)));
                let j = j as usize;
                if j != c
                    && let Some(span) = remote
                {
                    let cj = &mut self.cores[j];
                    if cj.remote.len() >= 8 {
                        cj.remote.retain(|r| r.completion > now);
                    }
                    cj.remote.push_back(Remote {
                        from: c,
                        pc,
                        completion,
                        span,
                        slope: remote_slope,
                    });
                    cj.report.sram_high_water = cj.report.sram_high_water.max(span.hi);
                    if let Some(v) = &mut self.verify {
                        v.high_water(j, &span, remote_slope);
                    }
                }
            }
        }
        let core = &mut self.cores[c];
        if is_signal {
            let sem = match inst {
                Inst::DmaSignal { sem } | Inst::MxuSignal { sem } | Inst::VpuSignal { sem } => {
                    sem.0 & 31
                }
                _ => 0,
            };
            self.sem_events.push(Reverse((completion, c as u32, sem)));
        }
        Self::high_water(core, &spans);
        if let Some(v) = &mut self.verify {
            for (s, &sl) in spans.as_slice().iter().zip(&slopes) {
                v.high_water(c, s, sl);
            }
        }
        let q = &mut core.units[u];
        q.free = free;
        q.last_completion = q.last_completion.max(completion);
        q.head_spans = None;
        q.wake = 0;
        Self::push_inflight(q, now, pc, completion, spans, slopes);
        if spans.has_hbm() {
            core.hbm_until = core.hbm_until.max(completion);
        }
        if spans
            .as_slice()
            .iter()
            .any(|s| s.space == MemSpace::Hbm && s.write)
        {
            self.hbm_writers.retain(|w| w.0 > now);
            self.hbm_writers.push((completion, c as u32));
        }
        if core.disp == Disp::QueueFull(u) {
            core.disp = Disp::Run;
            core.t = core.t.max(now);
        }
        self.record(c, unit, pc, &inst, now, free, completion, &cst);
        // Only this unit and the dispatcher (a full queue, a drain) can have changed.
        let (d, t) = (self.disp_time(c), self.unit_time(c, u));
        let mut all = [0; 4];
        all.copy_from_slice(&self.next.times()[4 * c..4 * c + 4]);
        all[0] = d;
        all[u] = t;
        self.next.set_core(c, all);
        Ok(())
    }

    /// The deadlock error, at the cycle of the last agent picked — counting the semaphore waits
    /// that [`Sim::unit_time`] blocked before their time (each would have been picked at it).
    fn deadlock(&self) -> EmuError {
        let cycle = self
            .cores
            .iter()
            .flat_map(|c| c.units[1..].iter())
            .filter(|q| q.blocked)
            .filter_map(|q| q.queue.front().map(|e| q.free.max(e.ready).max(q.wake)))
            .fold(self.now, u64::max);
        let mut blocked = Vec::new();
        for (c, core) in self.cores.iter().enumerate() {
            let text = |pc: u32| {
                self.prog.cores[c]
                    .get(pc as usize)
                    .map(|i| i.to_string())
                    .unwrap_or_default()
            };
            let sem_state = |inst: &Inst| match *inst {
                Inst::Wait { sem, count }
                | Inst::DmaWait { sem, count }
                | Inst::MxuWait { sem, count }
                | Inst::VpuWait { sem, count } => format!(
                    "waits for {sem} >= {count} ({sem} = {})",
                    core.sems[(sem.0 & 31) as usize]
                ),
                _ => "is blocked".into(),
            };
            let pc = core.pc;
            let what = match core.disp {
                Disp::Run | Disp::Done => None,
                Disp::WaitSem => self.prog.cores[c].get(pc as usize).map(sem_state),
                Disp::QueueFull(u) => Some(format!(
                    "waits for a free slot in the {} queue",
                    Unit::ALL[u].name()
                )),
                Disp::Drain { halt } => Some(format!(
                    "waits for its units to drain before {}",
                    if halt { "halting" } else { "the barrier" }
                )),
                Disp::AtBarrier => {
                    let halted: Vec<String> = self
                        .cores
                        .iter()
                        .enumerate()
                        .filter(|(_, o)| o.disp != Disp::AtBarrier)
                        .map(|(i, o)| {
                            if o.disp == Disp::Done {
                                format!("{i} (halted)")
                            } else {
                                i.to_string()
                            }
                        })
                        .collect();
                    Some(format!(
                        "waits at the barrier for core(s) {}",
                        halted.join(", ")
                    ))
                }
            };
            if let Some(w) = what {
                blocked.push(format!("core {c} scalar pc {pc} (`{}`) {w}", text(pc)));
            }
            for (u, q) in core.units.iter().enumerate().skip(1) {
                if let Some(e) = q.queue.front() {
                    let w = if q.blocked {
                        sem_state(&e.inst)
                    } else {
                        "is blocked".into()
                    };
                    blocked.push(format!(
                        "core {c} {} pc {} (`{}`) {w}",
                        Unit::ALL[u].name(),
                        e.pc,
                        e.inst
                    ));
                }
            }
        }
        EmuError::Deadlock { cycle, blocked }
    }

    /// Reads `len` bytes of HBM (for outputs); `None` if the host cannot allocate them.
    pub fn read_hbm(&self, addr: u64, len: u64) -> Result<Option<Vec<u8>>, TrapKind> {
        let mut v = Vec::new();
        let Some(n) = usize::try_from(len)
            .ok()
            .filter(|&n| v.try_reserve_exact(n).is_ok())
        else {
            return Ok(None);
        };
        v.resize(n, 0);
        self.hbm.read(addr, &mut v)?;
        Ok(Some(v))
    }

    /// Instructions fast-forwarding skipped (see `ff`).
    pub fn fast_forwarded(&self) -> u64 {
        self.ff.as_ref().map_or(0, |f| f.skipped())
    }

    /// The busy timeline, if one was requested.
    pub fn take_timeline(&mut self) -> Option<Timeline> {
        self.timeline.take()
    }

    /// The report of a finished run.
    pub fn report(&self) -> Report {
        let t = self.t;
        let tt = &self.totals;
        let part = |c: Cost| c.energy_pj(t);
        let mac_pj = part(Cost {
            macs: tt.macs[0],
            mac_kind: MacKind::Low,
            ..Default::default()
        }) + part(Cost {
            macs: tt.macs[1],
            mac_kind: MacKind::Fp32,
            ..Default::default()
        }) + part(Cost {
            macs: tt.macs[2],
            mac_kind: MacKind::Int8,
            ..Default::default()
        });
        let vector_pj = part(Cost {
            vector_ops: tt.vector_ops,
            ..Default::default()
        });
        let sram_pj = part(Cost {
            sram_read: tt.sram_bytes,
            ..Default::default()
        });
        let acc_pj = part(Cost {
            acc_read: tt.acc_bytes,
            ..Default::default()
        });
        let hbm_pj = part(Cost {
            hbm_read: tt.hbm_read + tt.hbm_write,
            ..Default::default()
        });
        let seconds = t.seconds(self.end);
        let dynamic_pj = mac_pj + vector_pj + sram_pj + acc_pj + hbm_pj;
        let static_pj = t.energy.static_w * seconds * 1e12;
        let macs: u64 = tt.macs.iter().sum();
        let flops = if seconds > 0.0 {
            2.0 * macs as f64 / seconds
        } else {
            0.0
        };
        let peak = t.peak_flops();
        let mut instructions = [0u64; 4];
        for c in &self.cores {
            for (i, u) in c.report.units.iter().enumerate() {
                instructions[i] += u.instructions;
            }
        }
        let mut locations: Vec<LocReport> = self
            .locs
            .iter()
            .filter(|l| l.instructions > 0)
            .cloned()
            .collect();
        if locations.len() == 1 && locations[0].loc == self.loc_names[0] {
            locations.clear();
        }
        locations.sort_by(|a, b| {
            b.total_busy()
                .cmp(&a.total_busy())
                .then_with(|| a.loc.cmp(&b.loc))
        });
        Report {
            target: t.name.clone(),
            clock_ghz: t.clock_ghz,
            timing_only: self.opts.timing_only,
            cycles: self.end,
            seconds,
            cores: self.cores.iter().map(|c| c.report.clone()).collect(),
            hbm_read_bytes: tt.hbm_read,
            hbm_write_bytes: tt.hbm_write,
            macs,
            flops_per_second: flops,
            peak_flops: peak,
            peak_fraction: if peak > 0.0 { flops / peak } else { 0.0 },
            instructions,
            energy: EnergyReport {
                mac_pj,
                vector_pj,
                sram_pj,
                acc_pj,
                hbm_pj,
                dynamic_pj,
                static_pj,
                total_pj: dynamic_pj + static_pj,
            },
            locations,
            hbm_bandwidth: t.hbm.bandwidth_gb_s * 1e9,
            compute_roof: crate::report::compute_roof(t),
        }
    }

    /// The collected trace, if tracing was on.
    pub fn take_trace(&mut self) -> Option<Trace> {
        let events = self.trace.take()?;
        let t = Trace {
            clock_ghz: self.t.clock_ghz,
            cores: self.cores.len() as u32,
            locs: self.loc_names.clone(),
            events,
            spans: vec![],
            ops: false,
        };
        Some(if self.opts.trace_ops { t.to_ops() } else { t })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmpu_isa::{FieldKind, INSTRUCTIONS};

    #[test]
    fn no_instruction_reads_more_registers_than_an_entry_captures() {
        for d in INSTRUCTIONS.iter().filter(|d| d.unit != Unit::Scalar) {
            let regs: usize = d
                .fields
                .iter()
                .map(|f| match f.kind {
                    FieldKind::Reg if f.name != "rd" => 1,
                    FieldKind::TileRef => 2,
                    _ => 0,
                })
                .sum();
            assert!(regs <= 8, "{} reads {regs} registers", d.mnemonic);
        }
    }

    #[test]
    fn next_times_pick_the_earliest_agent_lowest_index_first() {
        let mut n = NextTimes::new(3);
        assert_eq!(n.best().1, NONE);
        n.set(5, 10);
        n.set(9, 10);
        n.set(2, 12);
        assert_eq!(n.best(), (5, 10));
        assert_eq!(n.others(5), 10);
        n.set_core(1, [NONE, 20, 10, 30]);
        assert_eq!(n.best(), (6, 10));
        assert_eq!(n.others(6), 10);
        assert_eq!(n.others(9), 10);
        n.set(6, 11);
        assert_eq!(n.best(), (9, 10));
        assert_eq!(n.others(9), 11);
        assert_eq!(n.min(), 10);
    }
}
