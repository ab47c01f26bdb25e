//! Loop rolling: programs whose size does not grow with the trip counts of their loops.
//!
//! A kernel emits a uniform loop through [`Emitter::repeat`] and [`Emitter::next_iteration`]. The
//! first iterations are emitted as ordinary straight-line code, with the emitter's automatic
//! synchronization. Once `p` consecutive iterations (a period) equal the next `p` — the same
//! instructions, waits and signals, except for `li`/`lih` immediates that advance by a constant —
//! and the `p` after those continue the progression, the emitter jumps: the first period becomes
//! the body of a counted loop (each advancing `li` an `addi` of its step, its register an
//! induction variable; a free register counts the trips), the iterations it stands for are never
//! emitted, and the kernel continues with the last `p`..`2p − 1` iterations, which are emitted as
//! straight-line code and checked against the body (same instructions and waits, immediates where
//! the induction variables land). The rolled program therefore executes exactly the instructions
//! of the unrolled one, in the same order on every unit, plus the loop control on the scalar unit.
//!
//! Invariants: a rolled body's waits and signals balance per semaphore; the signals its last
//! iterations leave unconsumed (meant for iterations the straight-line code would not have had)
//! are consumed by waits placed right after the loop, so the k-th wait of every unit pair is
//! still released by the k-th signal; a body never holds a multicast (its arrivals cross cores).
//! The HBM ranges of the iterations not emitted are accounted as the hull of the first and last
//! (affine in the trip), for the cross-core barrier decisions. Loops nest: a body may hold rolled
//! loops, compared like any other instructions.

use llmpu_isa::{BranchTarget, FieldKind, Inst, Reg, Sem};

use super::{Emitter, Item, LOOP_REGS, MULTICAST_SEM, Stream, Touch, UNITS};

/// Where an instruction of a flattened stream comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Src {
    Before(usize, usize),
    Item(usize),
    After(usize, usize),
    /// The preamble of rolled loop `l` (trip count, induction starts).
    Pre(usize, usize),
    /// The loop control at the end of rolled loop `l`'s body.
    Tail(usize, usize),
}

/// A counted loop: items `start..end` run `trips` times; items `end..dead_end` (the copies the
/// body stands for) are gone.
#[derive(Clone, Debug)]
pub(super) struct Rolled {
    pub(super) start: usize,
    end: usize,
    pre: Vec<Item>,
    tail: Vec<Item>,
}

/// Register choices of one open repeat, so that every iteration loads its values into the same
/// registers (the register cache's LRU order would rotate them and no two iterations would be
/// equal): the n-th register an iteration allocates on a core is the n-th of the previous
/// iteration; a nested repeat starts from the choices of the same repeat in the previous
/// iteration of its parent.
#[derive(Clone, Debug, Default)]
pub(super) struct Frame {
    prev: Vec<Vec<usize>>,
    /// Per core, the choices of the iterations before `prev`, most recent first (up to
    /// `HISTORY`): where the previous iteration loaded no register at a position (a zero, in
    /// `r0`), one of the same parity or period did.
    older: Vec<Vec<Vec<usize>>>,
    cur: Vec<Vec<usize>>,
    child_prev: Vec<Vec<Vec<usize>>>,
    child_cur: Vec<Vec<Vec<usize>>>,
}

impl Frame {
    fn new(cores: usize, prev: Vec<Vec<usize>>) -> Frame {
        Frame {
            prev: if prev.is_empty() {
                vec![vec![]; cores]
            } else {
                prev
            },
            cur: vec![vec![]; cores],
            older: vec![vec![]; cores],
            child_prev: vec![],
            child_cur: vec![],
        }
    }

    /// The register the next allocation on core `c` should take.
    pub(super) fn suggest(&self, c: usize) -> Option<usize> {
        let n = self.cur[c].len();
        let prev = self.prev[c].get(n).copied();
        match prev {
            Some(0) | None => self.older[c]
                .iter()
                .filter_map(|l| l.get(n).copied())
                .find(|&r| r != 0)
                .or(prev),
            r => r,
        }
    }

    pub(super) fn allocated(&mut self, c: usize, r: usize) {
        self.cur[c].push(r);
    }

    /// Whether this iteration already took register `r` on core `c`.
    pub(super) fn taken(&self, c: usize, r: usize) -> bool {
        self.cur[c].contains(&r)
    }

    /// Corrects the register of the last allocation on core `c`.
    pub(super) fn set_last(&mut self, c: usize, r: usize) {
        if let Some(x) = self.cur[c].last_mut() {
            *x = r;
        }
    }

    fn next_iteration(&mut self) {
        for ((p, c), o) in self
            .prev
            .iter_mut()
            .zip(self.cur.iter_mut())
            .zip(&mut self.older)
        {
            if !c.is_empty() {
                let last = std::mem::replace(p, std::mem::take(c));
                if !last.is_empty() {
                    o.insert(0, last);
                    o.truncate(HISTORY);
                }
            }
        }
        self.child_prev = std::mem::take(&mut self.child_cur);
    }
}

/// Iterations before the previous one whose register choices a repeat remembers.
const HISTORY: usize = 3;
/// Iterations beyond the three periods over which an advancing on-chip address must keep its
/// progression (kernels' rings hold at most six buffers).
const RING_GUARD: u64 = 8;
/// Largest period looked for, in iterations.
const MAX_PERIOD: u64 = 12;
/// Iterations emitted before giving up on finding a period (the rest stays straight-line).
const MAX_PROBE: u64 = 4 * MAX_PERIOD + RING_GUARD;

/// A loop under emission; see [`Emitter::repeat`].
#[derive(Debug)]
pub struct Repeat {
    n: u64,
    next: u64,
    /// Per stream `(items, ext)` lengths at the start of each iteration emitted before a jump
    /// (and at the end of the last one).
    marks: Vec<Vec<(usize, usize)>>,
    plan: Option<Plan>,
    /// Marks at the start of each tail iteration (and at its end).
    tail_marks: Vec<Vec<(usize, usize)>>,
    done: bool,
}

impl Repeat {
    /// Stream `c`'s instructions of iterations `k..k + p` (flattened).
    fn period(&self, s: &Stream, c: usize, k: usize, p: usize) -> Vec<Inst> {
        let (lo, hi) = (self.marks[k][c].0, self.marks[k + p][c].0);
        s.flatten(lo, hi).into_iter().map(|x| x.1.inst).collect()
    }
}

#[derive(Debug)]
struct Plan {
    /// First body iteration, period, trips of the body.
    i: u64,
    p: u64,
    trips: u64,
    streams: Vec<Option<StreamPlan>>,
}

#[derive(Debug)]
struct StreamPlan {
    counter: Reg,
    /// The body as detected (a later wait must not add a signal to it).
    body: Vec<Inst>,
    /// Advancing `li`s of the body: index in the flattened body, register, first value, step.
    inductions: Vec<(usize, Reg, i64, i64)>,
    /// Those that chain on their own register.
    chained: Vec<(usize, Reg, i64, i64)>,
    /// Base registers: register, first value, step.
    bases: Vec<(Reg, i64, i64)>,
    /// The others, from a base: index, register, base, offset.
    offsets: Vec<(usize, Reg, usize, i64)>,
}

/// One `li` (with its `lih`) of a flattened range: index, register, value.
fn loads(insts: &[&Inst]) -> Vec<(usize, Reg, i64)> {
    let mut out = vec![];
    for (q, inst) in insts.iter().enumerate() {
        if let Inst::Li { rd, imm } = **inst {
            let mut v = imm as i64;
            if let Some(Inst::Lih { rd: r2, imm: hi }) = insts.get(q + 1).map(|i| **i)
                && r2 == rd
            {
                v = (((hi as u64) << 32) | (imm as u32 as u64)) as i64;
            }
            out.push((q, rd, v));
        }
    }
    out
}

fn is_wait(i: &Inst) -> bool {
    matches!(
        i,
        Inst::Wait { .. } | Inst::DmaWait { .. } | Inst::MxuWait { .. } | Inst::VpuWait { .. }
    )
}

/// Instructions with each `li` (and its `lih`) as one entry: position, the `li` with its
/// immediate cleared, and the 64-bit value it loads (`None` for other instructions). An address
/// crossing 2³¹ takes a `lih` in some iterations and not in others.
fn merge_loads(v: &[(usize, Inst)]) -> Vec<(usize, Inst, Option<i64>)> {
    let mut out = vec![];
    let mut k = 0;
    while k < v.len() {
        let (pos, inst) = v[k];
        if let Inst::Li { rd, imm } = inst {
            let mut val = imm as i64;
            if let Some(&(_, Inst::Lih { rd: r2, imm: hi })) = v.get(k + 1)
                && r2 == rd
            {
                val = (((hi as u64) << 32) | (imm as u32 as u64)) as i64;
                k += 1;
            }
            out.push((pos, Inst::Li { rd, imm: 0 }, Some(val)));
        } else {
            out.push((pos, inst, None));
        }
        k += 1;
    }
    out
}

/// `tail` without the waits it has beyond `body`'s (aligned greedily): after the skipped trips
/// the emitter knows their touches only as widened ranges and may wait where the body did not.
/// A wait only orders; the kernel's own instructions must still match.
fn without_extra_waits(
    body: &[(usize, Inst, Option<i64>)],
    tail: &[(usize, Inst, Option<i64>)],
) -> Vec<(usize, Inst, Option<i64>)> {
    let mut out = vec![];
    let mut q = 0;
    for t in tail {
        if body.get(q).is_some_and(|b| b.1 == t.1) {
            q += 1;
            out.push(*t);
        } else if !is_wait(&t.1) {
            out.push(*t);
        }
    }
    out
}

fn is_signal(i: &Inst) -> bool {
    matches!(
        i,
        Inst::Signal { .. }
            | Inst::DmaSignal { .. }
            | Inst::MxuSignal { .. }
            | Inst::VpuSignal { .. }
    )
}

/// `b` equals `a` but for `li`/`lih` immediates: the values of both at each `li` of `a` (index
/// into `a`'s instructions with signals dropped when `skip_signals`). `None` when they differ
/// otherwise.
fn compare(a: &[&Inst], b: &[&Inst]) -> Option<Vec<(usize, Reg, i64, i64)>> {
    if a.len() != b.len() {
        return None;
    }
    for (x, y) in a.iter().zip(b) {
        let same = match (x, y) {
            (Inst::Li { rd: r1, .. }, Inst::Li { rd: r2, .. })
            | (Inst::Lih { rd: r1, .. }, Inst::Lih { rd: r2, .. }) => r1 == r2,
            _ => x == y,
        };
        if !same {
            return None;
        }
    }
    let (la, lb) = (loads(a), loads(b));
    Some(
        la.into_iter()
            .zip(lb)
            .map(|((q, r, va), (_, _, vb))| (q, r, va, vb))
            .collect(),
    )
}

/// Per induction `li` (index, register, first value, step): the `addi` immediate replacing it —
/// the difference to the register's previous value, the last `li` of the previous trip for the
/// first `li` of a register — and the register's value before the first trip.
fn chain(inductions: &[(usize, Reg, i64, i64)]) -> Vec<(usize, i64, Reg, i64)> {
    let mut out = vec![];
    for &(q, reg, v0, step) in inductions {
        let same: Vec<&(usize, Reg, i64, i64)> = inductions.iter().filter(|x| x.1 == reg).collect();
        let last = same.last().map(|x| x.2).unwrap_or(v0);
        let prev = same
            .iter()
            .rev()
            .find(|x| x.0 < q)
            .map(|x| x.2)
            .unwrap_or(last - step);
        out.push((q, v0 - prev, reg, last - step));
    }
    out
}

/// The instructions of the (cyclic) body `a` that may read the value the `li` at `q` (with its
/// `lih`) puts in `reg`: those after it up to the next write of `reg`, wrapping around to the
/// body's start for the next trip.
fn readers<'a>(a: &'a [&'a Inst], q: usize, reg: Reg) -> impl Iterator<Item = &'a Inst> + 'a {
    let n = a.len();
    let start = match a.get(q + 1) {
        Some(Inst::Lih { rd, .. }) if *rd == reg => q + 2,
        _ => q + 1,
    };
    let mut done = false;
    (start..start + n - (start - q)).filter_map(move |k| {
        if done {
            return None;
        }
        let x = a[k % n];
        if x.reg_written() == Some(reg) {
            done = true;
            // An `addi` of the register to itself reads the value it replaces.
            return x.regs_read().contains(&reg).then_some(x);
        }
        x.regs_read().contains(&reg).then_some(x)
    })
}

/// Whether every read of `reg` by `inst` may see an advancing value: the HBM address of a DMA,
/// or the source of an `addi` (an inner loop's induction starting from it).
fn advancing_use(inst: &Inst, reg: Reg) -> bool {
    let d = inst.desc();
    let is_dma = matches!(
        inst,
        Inst::DmaLoad { .. }
            | Inst::DmaStore { .. }
            | Inst::DmaGather { .. }
            | Inst::DmaScatter { .. }
            | Inst::DmaMcast { .. }
    );
    d.fields
        .iter()
        .zip(inst.raw_field_results())
        .all(|(fd, raw)| {
            let Ok(raw) = raw else { return true };
            let reads = match fd.kind {
                FieldKind::Reg => fd.name != "rd" && raw as u8 == reg.0,
                FieldKind::TileRef => (raw & 31) as u8 == reg.0 || ((raw >> 5) & 31) as u8 == reg.0,
                _ => false,
            };
            !reads
                || (is_dma && fd.name == "hbm")
                || (matches!(inst, Inst::Addi { .. }) && fd.name == "rs1")
        })
}

/// Signals minus waits per semaphore.
fn balance(insts: &[&Inst]) -> [i64; 32] {
    let mut d = [0i64; 32];
    for i in insts {
        match **i {
            Inst::Signal { sem }
            | Inst::DmaSignal { sem }
            | Inst::MxuSignal { sem }
            | Inst::VpuSignal { sem } => d[sem.0 as usize & 31] += 1,
            Inst::Wait { sem, count }
            | Inst::DmaWait { sem, count }
            | Inst::MxuWait { sem, count }
            | Inst::VpuWait { sem, count } => d[sem.0 as usize & 31] -= count as i64,
            _ => {}
        }
    }
    d
}

impl Stream {
    /// The instructions of items `lo..hi` in program order: waits, item, signals; rolled loops
    /// with their preamble and control, their dead copies skipped, substitutions applied.
    pub(super) fn flatten(&self, lo: usize, hi: usize) -> Vec<(Src, Item)> {
        let mut out: Vec<(Src, Item)> = Vec::new();
        let mut open: Vec<(usize, usize)> = vec![];
        let push = |out: &mut Vec<(Src, Item)>, src: Src, it: &Item| match self.subst.get(&src) {
            Some(Some(inst)) => out.push((
                src,
                Item {
                    inst: *inst,
                    loc: it.loc.clone(),
                },
            )),
            Some(None) => {}
            None => out.push((src, it.clone())),
        };
        let mut i = lo;
        while i < hi {
            if let Some(&to) = self.dead_at.get(&i)
                && open.last().is_none_or(|&(l, _)| self.rolled[l].end != i)
            {
                i = to;
                continue;
            }
            if let Some(ls) = self.loop_at.get(&i) {
                for &l in ls {
                    for (j, it) in self.rolled[l].pre.iter().enumerate() {
                        push(&mut out, Src::Pre(l, j), it);
                    }
                    open.push((l, out.len()));
                }
            }
            if let Some(w) = self.before.get(&i) {
                for (j, it) in w.iter().enumerate() {
                    push(&mut out, Src::Before(i, j), it);
                }
            }
            push(&mut out, Src::Item(i), &self.items[i]);
            if let Some(a) = self.after.get(&i) {
                for (j, it) in a.iter().enumerate() {
                    push(&mut out, Src::After(i, j), it);
                }
            }
            i += 1;
            while let Some(&(l, body)) = open.last() {
                if self.rolled[l].end != i {
                    break;
                }
                open.pop();
                for (j, it) in self.rolled[l].tail.iter().enumerate() {
                    push(&mut out, Src::Tail(l, j), it);
                }
                let at = out.len() - 1;
                if let Inst::Bne { target, .. } = &mut out[at].1.inst {
                    *target = BranchTarget(body as i32 - at as i32);
                }
            }
        }
        out
    }
}

/// Iterations `0..total` of a kernel loop whose first `uniform` ones are uniform: those go through
/// a [`Repeat`] (and may roll), the rest follow in order.
#[derive(Debug)]
pub struct Sweep {
    rep: Repeat,
    uniform: usize,
    total: usize,
    next: usize,
    rolling: bool,
}

impl Sweep {
    pub fn new(e: &mut Emitter, uniform: usize, total: usize) -> Sweep {
        // Fewer iterations than a period of one needs to pay off (three to find it, the body,
        // and one to check it) stay plain: no loop frame, no positional register choice.
        let uniform = if uniform < 5 { 0 } else { uniform.min(total) };
        Sweep {
            rep: e.repeat(uniform as u64),
            uniform,
            total,
            next: 0,
            rolling: true,
        }
    }

    /// The next iteration and how many the loop skipped before it (rolled into a loop: the
    /// kernel advances its own state by as many), or `None` when done.
    pub fn next(&mut self, e: &mut Emitter) -> Option<(usize, usize)> {
        let k = if self.rolling {
            match e.next_iteration(&mut self.rep) {
                Some(k) => k as usize,
                None => {
                    self.rolling = false;
                    self.next = self.uniform;
                    return self.next(e);
                }
            }
        } else if self.next < self.total {
            self.next
        } else {
            return None;
        };
        let skipped = k - self.next;
        self.next = k + 1;
        Some((k, skipped))
    }
}

impl Emitter {
    /// Starts a loop of `n` iterations whose iterations the kernel emits as
    /// `while let Some(k) = e.next_iteration(&mut r) { ... }`. Iterations come in order, except
    /// that once the emitter has rolled a period into a loop it skips ahead to the last ones: a
    /// kernel whose state carries from one iteration to the next must derive it from `k`.
    pub fn repeat(&mut self, n: u64) -> Repeat {
        Repeat {
            n,
            next: 0,
            marks: vec![],
            plan: None,
            tail_marks: vec![],
            done: false,
        }
    }

    fn marks(&self) -> Vec<(usize, usize)> {
        self.streams
            .iter()
            .map(|s| (s.items.len(), s.ext.len()))
            .collect()
    }

    /// The next iteration to emit, or `None` when the loop is complete.
    pub fn next_iteration(&mut self, r: &mut Repeat) -> Option<u64> {
        if r.done {
            return None;
        }
        if r.next == 0 && r.marks.is_empty() {
            self.looping += 1;
            let cores = self.streams.len();
            let prev = match self.frames.last() {
                Some(f) => f
                    .child_prev
                    .get(f.child_cur.len())
                    .cloned()
                    .unwrap_or_default(),
                None => vec![],
            };
            self.frames.push(Frame::new(cores, prev));
        }
        if let Some(f) = self.frames.last_mut() {
            f.next_iteration();
        }
        self.locked.clear();
        let mark = self.marks();
        if r.plan.is_some() {
            r.tail_marks.push(mark);
            let p = r.plan.as_ref().map(|p| p.p).unwrap_or(1);
            if r.tail_marks.len() as u64 == p + 1 {
                self.check_tail(r);
            }
            if r.next < r.n {
                r.next += 1;
                return Some(r.next - 1);
            }
            self.roll_up(r);
            return self.close(r);
        }
        r.marks.push(mark);
        if self.roll && r.next >= 3 && r.next <= MAX_PROBE && self.roll_error.is_none() {
            // Three periods: the body, its repeat, and one more whose waits complete the
            // repeat's signals (a period's signals are complete once the next period is emitted:
            // a later instruction conflicting with one of the body's finds its twin in the
            // repeat first, or, where on-chip addresses advance, touches no other iteration's
            // bytes). An on-chip address may advance only when the progression also holds over
            // `RING_GUARD` more iterations: a ring of buffers looks affine over fewer.
            let candidates = (1..=MAX_PERIOD).flat_map(|p| {
                [
                    (p, 3 * p, true),
                    (p, 3 * p + RING_GUARD.div_ceil(p) * p, false),
                ]
            });
            for (p, span, strict) in candidates {
                let Some(i) = r.next.checked_sub(span) else {
                    continue;
                };
                let trips = ((r.n - i) / p).saturating_sub(1);
                if i + trips * p < r.next {
                    continue;
                }
                if let Some(plans) = self.find_period(r, i, p, strict) {
                    let j = i + trips * p;
                    for (s, sp) in self.streams.iter_mut().zip(&plans) {
                        if let Some(sp) = sp {
                            for r in std::iter::once(sp.counter).chain(sp.bases.iter().map(|b| b.0))
                            {
                                s.regs[r.0 as usize] = None;
                                self.pinned.push(r.0);
                            }
                        }
                    }
                    r.plan = Some(Plan {
                        i,
                        p,
                        trips,
                        streams: plans,
                    });
                    r.tail_marks.push(self.marks());
                    r.next = j + 1;
                    return Some(j);
                }
            }
        }
        if r.next < r.n {
            r.next += 1;
            return Some(r.next - 1);
        }
        self.close(r)
    }

    fn close(&mut self, r: &mut Repeat) -> Option<u64> {
        r.done = true;
        self.looping -= 1;
        if let Some(f) = self.frames.pop()
            && let Some(parent) = self.frames.last_mut()
        {
            parent.child_cur.push(f.prev);
        }
        if self.looping == 0 {
            for s in self.streams.iter_mut() {
                s.ext.clear();
            }
        }
        None
    }

    /// Whether iterations `i..i+p` equal `i+p..i+2p` on every stream and `i+2p..i+3p` continue
    /// their progression; the loop plan per stream (`None` where a stream has nothing to roll).
    fn find_period(
        &self,
        r: &Repeat,
        i: u64,
        p: u64,
        strict: bool,
    ) -> Option<Vec<Option<StreamPlan>>> {
        // No period here; the reason documents the check.
        macro_rules! fail {
            ($why:expr) => {
                return None
            };
        }
        let (i, p) = (i as usize, p as usize);
        let mut plans = vec![];
        for (c, s) in self.streams.iter().enumerate() {
            let range = |k: usize| (r.marks[k][c].0, r.marks[k + p][c].0);
            let flat = |k: usize| r.period(s, c, k, p);
            // Periods of different item counts cannot match (and flattening is not cheap).
            let items = |k: usize| range(k).1 - range(k).0;
            if items(i) != items(i + p) {
                fail!("item count")
            }
            let (fa, fb, fc) = (flat(i), flat(i + p), flat(i + 2 * p));
            if fa.is_empty() && fb.is_empty() && fc.is_empty() {
                plans.push(None);
                continue;
            }
            let a: Vec<&Inst> = fa.iter().collect();
            let b: Vec<&Inst> = fb.iter().collect();
            let cc: Vec<&Inst> = fc.iter().collect();
            // The body and its repeat: equal but for advancing `li`s.
            let ab = compare(&a, &b)?;
            let nosig = |v: &[&Inst]| -> Vec<usize> {
                (0..v.len()).filter(|&q| !is_signal(v[q])).collect()
            };
            let (ka, kc) = (nosig(&b), nosig(&cc));
            let b2: Vec<&Inst> = ka.iter().map(|&q| b[q]).collect();
            let c2: Vec<&Inst> = kc.iter().map(|&q| cc[q]).collect();
            let bc = compare(&b2, &c2)?;
            if ab.len() != bc.len() {
                fail!("li count")
            }
            // The same number of extents per period, so that the skipped ones extrapolate.
            let ext = |k: usize| r.marks[k + p][c].1 - r.marks[k][c].1;
            if ext(i) != ext(i + p) {
                fail!("extents")
            }
            if a.iter().any(|x| {
                x.multicast().is_some()
                    || matches!(**x, Inst::MxuWait { sem, .. } | Inst::Wait { sem, .. } | Inst::DmaWait { sem, .. } | Inst::VpuWait { sem, .. } if sem == MULTICAST_SEM)
            }) {
                fail!("multicast")
            }
            if balance(&a).iter().any(|&d| d != 0) {
                fail!("balance")
            }
            let mut inductions = vec![];
            for (&(q, reg, va, vb), &(_, _, vb2, vc)) in ab.iter().zip(&bc) {
                if vb != vb2 {
                    fail!("li mismatch")
                }
                let step = vb - va;
                if vc - vb != step {
                    fail!("not affine")
                }
                if step != 0 {
                    if reg.0 == 0 {
                        fail!("r0")
                    }
                    inductions.push((q, reg, va, step));
                }
            }
            // Without the ring guard only HBM addresses advance (a ring of buffers becomes a
            // period of as many iterations).
            if strict
                && inductions
                    .iter()
                    .any(|&(q, reg, ..)| readers(&a, q, reg).any(|x| !advancing_use(x, reg)))
            {
                fail!("an on-chip address advances")
            }
            // Every later period emitted continues the progression (a ring of buffers looks
            // affine over fewer iterations than it has buffers).
            let a_nosig: Vec<&Inst> = a.iter().copied().filter(|x| !is_signal(x)).collect();
            let mut k = i + 3 * p;
            while k + p <= r.next as usize {
                let f = flat(k);
                let later: Vec<&Inst> = f.iter().filter(|x| !is_signal(x)).collect();
                let vals = compare(&a_nosig, &later)?;
                let t = ((k - i) / p) as i64;
                if vals.len() != ab.len()
                    || vals
                        .iter()
                        .zip(&ab)
                        .any(|(&(_, _, va, vl), &(_, _, va0, vb0))| {
                            va != va0 || vl != va0 + t * (vb0 - va0)
                        })
                {
                    fail!("a later period breaks the progression")
                }
                k += p;
            }
            // A register written only by its advancing `li`s (and `lih`s), all of one step,
            // chains: each `li` becomes an `addi` of the difference to the value before it. Any
            // other advancing `li` (its register also written otherwise, e.g. an inner loop's
            // induction) becomes an `addi` from a base register advanced once per trip, one
            // base per step.
            let mut chained = vec![];
            let mut based = vec![];
            for &(q, reg, v0, step) in &inductions {
                let others = a
                    .iter()
                    .enumerate()
                    .filter(|(n, x)| {
                        x.reg_written() == Some(reg)
                            && !inductions.iter().any(|&(q2, r2, _, s2)| {
                                r2 == reg
                                    && s2 == step
                                    && (*n == q2 || (*n == q2 + 1 && matches!(x, Inst::Lih { .. })))
                            })
                    })
                    .count();
                if others > 0 {
                    based.push((q, reg, v0, step));
                } else {
                    chained.push((q, reg, v0, step));
                }
            }
            if chain(&chained).iter().any(|x| i32::try_from(x.1).is_err()) {
                fail!("induction difference too large")
            }
            let mut used = [false; 32];
            used[0] = true;
            for x in &a {
                for rr in x.regs_read() {
                    used[rr.0 as usize & 31] = true;
                }
                if let Some(w) = x.reg_written() {
                    used[w.0 as usize & 31] = true;
                }
            }
            for &pr in &self.pinned {
                used[pr as usize & 31] = true;
            }
            let depth = self.frames.len().saturating_sub(1);
            let fixed = (depth < LOOP_REGS)
                .then(|| 31 - depth)
                .filter(|&x| !used[x]);
            if let Some(x) = fixed {
                used[x] = true;
            }
            let mut free = (1..32).rev().filter(|&x| !used[x]).map(|x| Reg(x as u8));
            let counter = fixed.map(|x| Reg(x as u8)).or_else(|| free.next())?;
            let mut bases: Vec<(Reg, i64, i64)> = vec![];
            let mut offsets = vec![];
            for &(q, reg, v0, step) in &based {
                let b = match bases.iter().position(|x| x.2 == step) {
                    Some(b) => b,
                    None => {
                        let r = free.next()?;
                        bases.push((r, v0, step));
                        bases.len() - 1
                    }
                };
                let off = v0 - bases[b].1;
                if i32::try_from(off).is_err() || i32::try_from(step).is_err() {
                    fail!("induction offset too large")
                }
                offsets.push((q, reg, b, off));
            }
            plans.push(Some(StreamPlan {
                counter,
                body: a.iter().map(|x| **x).collect(),
                inductions,
                chained,
                bases,
                offsets,
            }));
        }
        Some(plans)
    }

    /// The first tail period must be the body again, with the induction registers where the
    /// trips leave them.
    fn check_tail(&mut self, r: &Repeat) {
        let Some(plan) = &r.plan else { return };
        let (i, p) = (plan.i as usize, plan.p as usize);
        for (c, s) in self.streams.iter().enumerate() {
            let Some(sp) = &plan.streams[c] else { continue };
            let body = s.flatten(r.marks[i][c].0, r.marks[i + p][c].0);
            let tail = s.flatten(r.tail_marks[0][c].0, r.tail_marks[p][c].0);
            let a: Vec<(usize, Inst)> = body
                .iter()
                .enumerate()
                .filter(|(_, x)| !is_signal(&x.1.inst))
                .map(|(q, x)| (q, x.1.inst))
                .collect();
            let b: Vec<(usize, Inst)> = tail
                .iter()
                .filter(|x| !is_signal(&x.1.inst))
                .map(|x| (0, x.1.inst))
                .collect();
            let a = merge_loads(&a);
            let b = without_extra_waits(&a, &merge_loads(&b));
            let ok = a.len() == b.len()
                && a.iter().zip(&b).all(|(x, y)| {
                    x.1 == y.1
                        && match (x.2, y.2) {
                            (Some(va), Some(vb)) => {
                                match sp.inductions.iter().find(|ind| ind.0 == x.0) {
                                    Some(&(_, _, v0, step)) => {
                                        vb == v0 + step * plan.trips as i64 && va == v0
                                    }
                                    None => va == vb,
                                }
                            }
                            (None, None) => true,
                            _ => false,
                        }
                });
            if !ok && self.roll_error.is_none() {
                let loc = body
                    .first()
                    .map(|x| x.1.loc.to_string())
                    .unwrap_or_default();
                self.roll_error = Some(format!(
                    "internal: the loop of `{loc}` rolled on core {c} is not uniform: its last iterations differ from its body"
                ));
            }
        }
    }

    /// Replaces the emitted copies by the counted loop (see the module documentation).
    fn roll_up(&mut self, r: &mut Repeat) {
        let Some(plan) = r.plan.take() else { return };
        let (i, p) = (plan.i as usize, plan.p as usize);
        for (c, sp) in plan.streams.iter().enumerate() {
            let Some(sp) = sp else { continue };
            let (b0, e0) = r.marks[i][c];
            let (b1, e1) = r.marks[i + p][c];
            let (d1, _) = r.marks[r.marks.len() - 1][c];
            let (t0, te0) = r.tail_marks[0][c];
            let (tend, _) = r.tail_marks[r.tail_marks.len() - 1][c];
            let s = &mut self.streams[c];
            let body = s.flatten(b0, b1);
            let loc = body
                .first()
                .map(|x| x.1.loc.clone())
                .unwrap_or_else(|| "".into());
            if body.iter().map(|x| x.1.inst).ne(sp.body.iter().copied())
                && self.roll_error.is_none()
            {
                self.roll_error = Some(format!(
                    "internal: the body of the loop of `{loc}` changed after it was rolled"
                ));
            }
            // Tail reads of the counter would see the loop's final zero.
            let tail = s.flatten(t0, tend);
            let own: Vec<Reg> = std::iter::once(sp.counter)
                .chain(sp.bases.iter().map(|b| b.0))
                .collect();
            if tail.iter().any(|x| {
                x.1.inst.regs_read().iter().any(|r| own.contains(r))
                    || x.1.inst.reg_written().is_some_and(|r| own.contains(&r))
            }) && self.roll_error.is_none()
            {
                self.roll_error = Some(format!(
                    "internal: the last iterations of the loop of `{loc}` use its counter register"
                ));
            }
            // A wait after the body's copies (in the last iterations, emitted straight-line)
            // may have put a signal on a copy the loop replaces: then the loop would not send it.
            let signals = |lo: usize, hi: usize| {
                s.flatten(lo, hi)
                    .iter()
                    .filter(|x| is_signal(&x.1.inst))
                    .count()
            };
            let in_body = signals(b0, b1);
            let mut k = i + p;
            while k + p < r.marks.len() {
                let (lo, hi) = (r.marks[k][c].0, r.marks[k + p][c].0);
                if signals(lo, hi) > in_body && self.roll_error.is_none() {
                    self.roll_error = Some(format!(
                        "internal: an instruction after the loop of `{loc}` waits for an iteration the loop stands for"
                    ));
                }
                k += p;
            }
            let s = &mut self.streams[c];
            // Signals of the copies the body stands for that no wait consumed.
            let copies = s.flatten(b0, t0);
            let insts: Vec<&Inst> = copies.iter().map(|x| &x.1.inst).collect();
            let balance = balance(&insts);
            let l = s.rolled.len();
            let mut pre = vec![];
            let li = |rd: Reg, v: i64, pre: &mut Vec<Item>| {
                pre.push(Item {
                    inst: Inst::Li { rd, imm: v as i32 },
                    loc: loc.clone(),
                });
                if v as i32 as i64 != v {
                    pre.push(Item {
                        inst: Inst::Lih {
                            rd,
                            imm: (v >> 32) as u32,
                        },
                        loc: loc.clone(),
                    });
                }
            };
            li(sp.counter, plan.trips as i64, &mut pre);
            let mut started = vec![];
            let lih_of = |q: usize, reg: Reg, s: &mut Stream| {
                if let Some((
                    src,
                    Item {
                        inst: Inst::Lih { rd, .. },
                        ..
                    },
                )) = body.get(q + 1)
                    && *rd == reg
                {
                    s.subst.insert(*src, None);
                }
            };
            for (q, imm, reg, init) in chain(&sp.chained) {
                if !started.contains(&reg) {
                    started.push(reg);
                    li(reg, init, &mut pre);
                }
                s.subst.insert(
                    body[q].0,
                    Some(Inst::Addi {
                        rd: reg,
                        rs1: reg,
                        imm: imm as i32,
                    }),
                );
                lih_of(q, reg, s);
            }
            for &(base, v0, _) in &sp.bases {
                li(base, v0, &mut pre);
            }
            for &(q, reg, b, off) in &sp.offsets {
                s.subst.insert(
                    body[q].0,
                    Some(Inst::Addi {
                        rd: reg,
                        rs1: sp.bases[b].0,
                        imm: off as i32,
                    }),
                );
                lih_of(q, reg, s);
            }
            let mut tail_items: Vec<Item> = sp
                .bases
                .iter()
                .map(|&(base, _, step)| Item {
                    inst: Inst::Addi {
                        rd: base,
                        rs1: base,
                        imm: step as i32,
                    },
                    loc: loc.clone(),
                })
                .collect();
            tail_items.push(Item {
                inst: Inst::Addi {
                    rd: sp.counter,
                    rs1: sp.counter,
                    imm: -1,
                },
                loc: loc.clone(),
            });
            tail_items.push(Item {
                inst: Inst::Bne {
                    rs1: sp.counter,
                    rs2: Reg(0),
                    target: BranchTarget(0),
                },
                loc: loc.clone(),
            });
            s.rolled.push(Rolled {
                start: b0,
                end: b1,
                pre,
                tail: tail_items,
            });
            s.loop_at.entry(b0).or_default().insert(0, l);
            debug_assert_eq!(d1, t0);
            s.dead_at.insert(b1, t0);
            for h in s.hist.iter_mut() {
                h.retain(|(ix, _)| *ix < b1 || *ix >= t0);
            }
            // The first tail period's on-chip touches stand for every trip's: widened to the
            // hull with the body's, a later conflicting instruction waits for the tail, hence
            // (same unit, in order) for every trip.
            let t1 = r.tail_marks[p][c].0;
            for h in s.hist.iter_mut() {
                let body: Vec<usize> = (0..h.len())
                    .filter(|&k| (b0..b1).contains(&h[k].0))
                    .collect();
                let tail: Vec<usize> = (0..h.len())
                    .filter(|&k| (t0..t1).contains(&h[k].0))
                    .collect();
                let same = body.len() == tail.len()
                    && body.iter().zip(&tail).all(|(&x, &y)| {
                        h[x].1.len() == h[y].1.len()
                            && h[x]
                                .1
                                .iter()
                                .zip(&h[y].1)
                                .all(|(a, b)| a.mem == b.mem && a.write == b.write)
                    });
                if !same {
                    if self.roll_error.is_none() {
                        self.roll_error = Some(format!(
                            "internal: the last iterations of the loop of `{loc}` touch other on-chip memory than its body"
                        ));
                    }
                    continue;
                }
                for (&x, &y) in body.iter().zip(&tail) {
                    let wide: Vec<Touch> = h[x]
                        .1
                        .iter()
                        .zip(&h[y].1)
                        .map(|(a, b)| Touch {
                            lo: a.lo.min(b.lo),
                            hi: a.hi.max(b.hi),
                            ..*b
                        })
                        .collect();
                    h[y].1 = wide;
                }
            }
            for (sem, &b) in balance.iter().enumerate() {
                let n = -b;
                if n <= 0 || sem == MULTICAST_SEM.0 as usize || sem == 0 {
                    continue;
                }
                let y = (sem - 1) % UNITS;
                let mut left = n as u64;
                while left > 0 {
                    let count = left.min(255) as u32;
                    left -= count as u64;
                    let sem = Sem(sem as u8);
                    let inst = match y {
                        0 => Inst::Wait { sem, count },
                        1 => Inst::DmaWait { sem, count },
                        2 => Inst::MxuWait { sem, count },
                        _ => Inst::VpuWait { sem, count },
                    };
                    s.items.push(Item {
                        inst,
                        loc: loc.clone(),
                    });
                }
            }
            // HBM: the hull of the first and last trip of each extent of the body.
            let n = e1 - e0;
            let trips = plan.trips as i128;
            let mut hulls = Vec::with_capacity(n);
            for q in 0..n {
                let (lo_a, hi_a, w) = s.ext[e0 + q];
                let (lo_b, hi_b, _) = s.ext[e1 + q];
                let last = |a: u64, b: u64| a as i128 + (trips - 1) * (b as i128 - a as i128);
                let lo = (lo_a as i128).min(last(lo_a, lo_b)).max(0) as u64;
                let hi = (hi_a as i128)
                    .max(last(hi_a, hi_b))
                    .clamp(0, u64::MAX as i128) as u64;
                hulls.push((lo, hi, w));
            }
            let set = &mut self.open[c];
            for &(lo, hi, w) in &hulls {
                if w {
                    set.writes.insert(lo, hi);
                } else {
                    set.reads.insert(lo, hi);
                }
            }
            let s = &mut self.streams[c];
            s.ext.splice(e0..te0, hulls);
            for r in std::iter::once(sp.counter).chain(sp.bases.iter().map(|b| b.0)) {
                self.pinned.retain(|&x| x != r.0);
                s.regs[r.0 as usize] = None;
            }
        }
    }
}
