//! Code generation for `tile.kernel`s (`dialects::tile`): walks the kernel's loop nest and emits
//! each tile op as DMA, matrix or vector instructions through the [`Emitter`], which places the
//! semaphores between units and rolls uniform iterations into counted loops.
//!
//! - `tile.alloc` reserves `slots` copies in its level's arena for the kernel's duration.
//! - `tile.for` emits its iterations through a [`Sweep`]: the iterations whose steps are whole
//!   (every tile full) are uniform and roll; a partial last one follows as straight-line code. A
//!   loop with `cores = n` emits rounds of one iteration per core; ops outside such a loop run on
//!   every core of the kernel.
//! - Each buffer keeps, per core, how many times it has been overwritten (its slot is that count
//!   modulo `slots`) and the extent its contents have (a DMA cut at the end of HBM leaves a partial
//!   tile, which the ops reading it compute on). When a loop rolls, the counts advance by as many
//!   iterations as the loop stands for, so the code after it uses the slots the unrolled code
//!   would have.
//!
//! Invariant: a kernel reads the HBM views `plan-memory` placed (its block arguments are the
//! operands' and results' views), and the storage type of a view must be the memref's.

use std::collections::HashMap;

use llmpu_isa::{Bcast, DType};

use super::emit::{Mem, Sweep};
use super::kernels::{Act, Bin, Cx, Red, T, Un, activation, norm_rows, softmax_tail};
use super::view::View;
use super::{BackendError, dtype_of};
use crate::dialects::tile;
use crate::ir::{AddressSpace, Attribute, BlockId, OpId, Type, ValueId};

type R<T> = Result<T, BackendError>;

/// An on-chip buffer of the kernel.
struct Buf {
    mem: Mem,
    base: u64,
    slot_bytes: u64,
    slots: u64,
    dt: DType,
    shape: Vec<u64>,
    /// Per core: overwrites so far.
    version: Vec<u64>,
    /// Per core: the extent of the current contents.
    valid: Vec<Vec<u64>>,
}

impl Buf {
    fn addr(&self, core: usize) -> u64 {
        self.base + (self.version[core] % self.slots) * self.slot_bytes
    }
    fn ld(&self) -> u64 {
        self.shape.last().copied().unwrap_or(1)
    }
    fn tile(&self, core: usize) -> T {
        T {
            mem: self.mem,
            addr: self.addr(core),
            ld: self.ld(),
            dt: self.dt,
        }
    }
}

/// One instruction sequence a tile op resolved to, ready for the emitter.
enum Emit {
    Dma {
        load: bool,
        view: View,
        addr: u64,
        ld: u64,
    },
    Matmul {
        acc: T,
        a: T,
        b: T,
        mkn: [u64; 3],
        accumulate: bool,
    },
    Vector {
        steps: Vec<VStep>,
        rows: u64,
        cols: u64,
    },
}

/// One vector-unit step of a `tile.vector`.
enum VStep {
    Un(Un, T, T, Bcast),
    Bin(Bin, T, T, T, Bcast),
    /// An activation in place on the tile, with a scratch tile.
    Act(Act, T, T),
    /// Row softmax of `x` into `w` with statistics tiles: `(w, x, max, sum)`.
    Softmax(T, T, T, T),
    /// Layer or RMS norm of `x` into `w` (statistics `s1`, `s2`; f32 scale and bias rows).
    Norm {
        w: T,
        x: T,
        stats: (T, T),
        prm: Vec<T>,
        eps: f32,
        rms: bool,
    },
}

impl Emit {
    fn emit(&self, cx: &mut Cx) {
        match self {
            Emit::Dma {
                load,
                view,
                addr,
                ld,
            } => cx.e.move_view(*load, view, *addr, *ld),
            Emit::Matmul {
                acc,
                a,
                b,
                mkn: [m, k, n],
                accumulate,
            } => cx.e.matmul(*acc, *a, *b, *m, *k, *n, *accumulate),
            Emit::Vector { steps, rows, cols } => {
                let (rows, cols) = (*rows, *cols);
                for s in steps {
                    match s {
                        &VStep::Un(k, d, a, b) => cx.e.vun(k, d, a, b, rows, cols),
                        &VStep::Bin(k, d, a, b, bc) => cx.e.vbin(k, d, a, b, bc, rows, cols),
                        &VStep::Act(k, x, tt) => activation(cx.e, k, x, tt, rows, cols),
                        &VStep::Softmax(w, x, mx, sum) => {
                            cx.e.vred(Red::Max, mx, x, rows, cols);
                            cx.e.vbin(Bin::Sub, w, x, mx, Bcast::Col, rows, cols);
                            softmax_tail(cx.e, w, sum, rows, cols);
                        }
                        VStep::Norm {
                            w,
                            x,
                            stats,
                            prm,
                            eps,
                            rms,
                        } => norm_rows(cx.e, *w, *x, *stats, prm, *eps, *rms, rows, cols),
                    }
                }
            }
        }
    }
}

/// A deferred op (`defer = 1`): what it emits, and the overwrite counts of the buffers it reads
/// when it was resolved (checked when it is emitted: none may have been overwritten since).
struct Deferred {
    op: OpId,
    emit: Emit,
    reads: Vec<(ValueId, u64)>,
}

/// A `tile.for` being emitted.
struct Loop {
    body: BlockId,
    iv: ValueId,
    lower: i64,
    step: i64,
    trips: usize,
    spread: usize,
    /// Iterations per unit of a loop that is not spread.
    group: usize,
}

struct Gen {
    hbm: HashMap<ValueId, View>,
    bufs: HashMap<ValueId, Buf>,
    /// Buffers in allocation order (for the version snapshots of rolled loops).
    order: Vec<ValueId>,
    /// Current value of every induction variable, and its loop's lower bound.
    idx: HashMap<ValueId, (i64, i64)>,
    cores: usize,
    /// Per core: the deferred ops of its previous epilogue, not yet emitted.
    pending: HashMap<usize, Vec<Deferred>>,
    /// Cores that emitted a non-deferred op since their last deferred one (the next deferred op
    /// starts a new epilogue: the pending one is emitted first).
    fresh: std::collections::HashSet<usize>,
    /// Resolving without emitting: the state of an iteration a rolled loop stood for.
    dry: bool,
}

/// Lowers one `tile.kernel`.
pub fn lower_kernel(cx: &mut Cx, op: OpId) -> R<()> {
    let m = cx.m;
    let d = m.op(op);
    let body = m
        .entry_block(op)
        .ok_or_else(|| cx.err("tile.kernel without a body"))?;
    let n_in = d.operands.len();
    let mut hbm = HashMap::new();
    for (i, &arg) in m.block(body).args.iter().enumerate() {
        let v = if i < n_in {
            d.operands[i]
        } else {
            d.results[i - n_in]
        };
        let view = cx.view(v)?;
        let b = m
            .value_type(arg)
            .as_buffer()
            .ok_or_else(|| cx.err(format!("kernel argument #{i} is not a memref")))?;
        if dtype_of(b.elem) != Some(view.dt) || b.shape != view.shape {
            return Err(cx.err(format!(
                "kernel argument #{i} is {}, but the planned tensor is {:?} of {}",
                m.value_type(arg),
                view.shape,
                view.dt
            )));
        }
        hbm.insert(arg, view);
    }
    let cores = cx.e.cores();
    let mut g = Gen {
        hbm,
        bufs: HashMap::new(),
        order: vec![],
        idx: HashMap::new(),
        cores,
        pending: HashMap::new(),
        fresh: Default::default(),
        dry: false,
    };
    let mut nest = vec![];
    m.walk(op, &mut nest);
    let used = nest
        .iter()
        .filter_map(|&o| m.attr(o, "cores").and_then(Attribute::as_int))
        .max()
        .unwrap_or(1)
        .clamp(1, cores as i64) as usize;
    let all: Vec<usize> = (0..used).collect();
    g.block(cx, body, &all)?;
    for c in all {
        g.flush(cx, c)?;
    }
    Ok(())
}

impl Gen {
    fn block(&mut self, cx: &mut Cx, b: BlockId, on: &[usize]) -> R<()> {
        let m = cx.m;
        for &op in &m.block(b).ops {
            match m.op(op).name.as_str() {
                tile::Alloc::NAME => self.alloc(cx, op)?,
                tile::Reshape::NAME => self.reshape(cx, op)?,
                tile::For::NAME => self.for_loop(cx, op, on)?,
                tile::Yield::NAME => {}
                name @ (tile::DmaLoad::NAME
                | tile::DmaStore::NAME
                | tile::MatMul::NAME
                | tile::Vector::NAME) => {
                    let defer = m.attr(op, "defer").and_then(Attribute::as_int) == Some(1);
                    for &c in on {
                        // A deferred op that starts a new epilogue emits the pending one first,
                        // before its own resolution moves any slot.
                        if defer && self.fresh.remove(&c) {
                            self.flush(cx, c)?;
                        }
                        let reads = self.reads(cx, op, c);
                        let emit = match name {
                            tile::DmaLoad::NAME => self.dma(cx, op, c, true)?,
                            tile::DmaStore::NAME => self.dma(cx, op, c, false)?,
                            tile::MatMul::NAME => self.matmul(cx, op, c)?,
                            _ => self.vector(cx, op, c)?,
                        };
                        if defer {
                            let d = Deferred { op, emit, reads };
                            self.pending.entry(c).or_default().push(d);
                        } else {
                            self.fresh.insert(c);
                            if !self.dry {
                                cx.e.core(c);
                                emit.emit(cx);
                            }
                        }
                    }
                }
                other => {
                    return Err(cx.err(format!("`{other}` is not supported in a tile.kernel")));
                }
            }
        }
        Ok(())
    }

    fn alloc(&mut self, cx: &mut Cx, op: OpId) -> R<()> {
        let m = cx.m;
        let r = m.op(op).results[0];
        let Some(Type::Buffer(b)) = Some(m.value_type(r)) else {
            return Err(cx.err("tile.alloc must make a memref"));
        };
        let dt =
            dtype_of(b.elem).ok_or_else(|| cx.err(format!("no machine type for {}", b.elem)))?;
        let mem = match b.space {
            AddressSpace::Sram => Mem::Sram,
            AddressSpace::Acc => Mem::Acc,
            AddressSpace::Hbm => return Err(cx.err("tile.alloc cannot allocate in \"hbm\"")),
        };
        let slots = m
            .attr(op, "slots")
            .and_then(Attribute::as_int)
            .unwrap_or(1)
            .max(1) as u64;
        let slot_bytes = (b.shape.iter().product::<u64>() * dt.size()).div_ceil(64) * 64;
        let base = cx.alloc(mem, slot_bytes * slots, "tile buffer")?;
        self.order.push(r);
        self.bufs.insert(
            r,
            Buf {
                mem,
                base,
                slot_bytes,
                slots,
                dt,
                shape: b.shape.clone(),
                version: vec![0; self.cores],
                valid: vec![b.shape.clone(); self.cores],
            },
        );
        Ok(())
    }

    fn versions(&self) -> Vec<Vec<u64>> {
        self.order
            .iter()
            .map(|v| self.bufs[v].version.clone())
            .collect()
    }

    /// Advances every buffer's overwrite counts by `skipped` iterations of the size of the one
    /// since `prev`.
    fn skip(&mut self, prev: &[Vec<u64>], skipped: usize) {
        for (v, p) in self.order.iter().zip(prev) {
            if let Some(b) = self.bufs.get_mut(v) {
                for (now, before) in b.version.iter_mut().zip(p) {
                    *now += (*now - before) * skipped as u64;
                }
            }
        }
    }

    fn for_loop(&mut self, cx: &mut Cx, op: OpId, on: &[usize]) -> R<()> {
        let m = cx.m;
        let int = |n: &str| m.attr(op, n).and_then(Attribute::as_int);
        let (lower, upper, step) = (
            int("lower").unwrap_or(0),
            int("upper").unwrap_or(0),
            int("step").unwrap_or(1).max(1),
        );
        let body = m
            .entry_block(op)
            .ok_or_else(|| cx.err("tile.for without a body"))?;
        let span = (upper - lower).max(0) as u64;
        let spread = int("cores").unwrap_or(1).clamp(1, self.cores as i64) as usize;
        if spread > 1 && on.len() != spread {
            return Err(cx.err(format!(
                "a loop spread over {spread} cores inside code running on {} (one spread loop per nest)",
                on.len()
            )));
        }
        let l = Loop {
            body,
            iv: m.block(body).args[0],
            lower,
            step,
            trips: span.div_ceil(step as u64) as usize,
            spread,
            group: 1,
        };
        // The loop's units: rounds of one iteration per core when spread, else groups of as many
        // iterations as the slots the body's writes rotate through (so every unit leaves each
        // buffer in the slot it found it in, and uniform units are equal).
        let per = if spread > 1 {
            spread
        } else {
            self.group(cx, body)
        };
        let l = Loop { group: per, ..l };
        let units = l.trips.div_ceil(per);
        let uniform = (span / step as u64) as usize / per;
        if self.dry {
            for u in 0..units {
                self.unit(cx, &l, u, on)?;
            }
        } else {
            let mut sweep = Sweep::new(cx.e, uniform, units);
            let mut prev: Option<Vec<Vec<u64>>> = None;
            while let Some((u, skipped)) = sweep.next(cx.e) {
                if skipped > 0
                    && let Some(p) = &prev
                {
                    // The rolled loop stood for units up to u − 1: advance the overwrite counts
                    // to the start of u − 1, then resolve u − 1 without emitting it, which
                    // leaves its deferred ops pending as the unrolled code would.
                    self.skip(p, skipped - 1);
                    self.dry = true;
                    let r = self.unit(cx, &l, u - 1, on);
                    self.dry = false;
                    r?;
                }
                prev = Some(self.versions());
                self.unit(cx, &l, u, on)?;
            }
        }
        Ok(())
    }

    /// The least common multiple of the slot counts of the buffers written directly in `body`.
    fn group(&self, cx: &Cx, body: BlockId) -> usize {
        let gcd = |mut a: usize, mut b: usize| {
            while b != 0 {
                (a, b) = (b, a % b);
            }
            a
        };
        let mut g = 1usize;
        for &op in &cx.m.block(body).ops {
            if let Some(b) = tile::writes(cx.m, op).and_then(|v| self.bufs.get(&v)) {
                let n = b.slots as usize;
                g = g / gcd(g, n) * n;
            }
        }
        g
    }

    /// Unit `u` of loop `l`: its round of one iteration per core, or its group of iterations.
    fn unit(&mut self, cx: &mut Cx, l: &Loop, u: usize, on: &[usize]) -> R<()> {
        let mut one = |g: &mut Gen, t: usize, cores: &[usize]| -> R<()> {
            g.idx.insert(l.iv, (l.lower + t as i64 * l.step, l.lower));
            g.block(cx, l.body, cores)
        };
        if l.spread > 1 {
            for (c, &core) in on.iter().enumerate().take(l.spread) {
                let t = u * l.spread + c;
                if t < l.trips {
                    one(self, t, &[core])?;
                }
            }
            Ok(())
        } else {
            for t in u * l.group..((u + 1) * l.group).min(l.trips) {
                one(self, t, on)?;
            }
            Ok(())
        }
    }

    fn buf(&self, cx: &Cx, v: ValueId) -> R<&Buf> {
        self.bufs
            .get(&v)
            .ok_or_else(|| cx.err(format!("{v} is not a buffer of this kernel")))
    }

    fn index(&self, cx: &Cx, v: ValueId) -> R<(i64, i64)> {
        self.idx
            .get(&v)
            .copied()
            .ok_or_else(|| cx.err(format!("{v} is not an induction variable in scope")))
    }

    /// The on-chip buffers `op` reads, with their overwrite counts on core `c`.
    fn reads(&self, cx: &Cx, op: OpId, c: usize) -> Vec<(ValueId, u64)> {
        tile::reads(cx.m, op)
            .iter()
            .filter_map(|v| Some((*v, self.bufs.get(v)?.version[c])))
            .collect()
    }

    /// Emits core `c`'s pending deferred ops (in dry mode: drops them).
    fn flush(&mut self, cx: &mut Cx, c: usize) -> R<()> {
        for d in self.pending.remove(&c).unwrap_or_default() {
            if self.dry {
                continue;
            }
            for (v, at) in &d.reads {
                let b = self.buf(cx, *v)?;
                if b.version[c] - at >= b.slots {
                    return Err(cx.err(format!(
                        "`{}` is deferred past an overwrite of {v} ({} slot(s)); give the buffer more slots or do not defer",
                        cx.m.op(d.op).name,
                        b.slots
                    )));
                }
            }
            cx.e.core(c);
            d.emit.emit(cx);
        }
        Ok(())
    }

    /// `tile.dma_load` (`load`) or `tile.dma_store` on core `c`.
    fn dma(&mut self, cx: &mut Cx, op: OpId, c: usize, load: bool) -> R<Emit> {
        let ops = &cx.m.op(op).operands;
        let (big, chip) = if load {
            (ops[0], ops[1])
        } else {
            (ops[1], ops[0])
        };
        let view = self
            .hbm
            .get(&big)
            .cloned()
            .ok_or_else(|| cx.err(format!("{big} is not an HBM buffer of this kernel")))?;
        let offsets: Vec<i64> = ops[2..]
            .iter()
            .map(|&v| self.index(cx, v).map(|x| x.0))
            .collect::<R<_>>()?;
        let b = self.buf(cx, chip)?;
        if b.mem != Mem::Sram {
            return Err(cx.err("DMA to or from the accumulator is not supported"));
        }
        if b.dt != view.dt {
            return Err(cx.err(format!(
                "DMA between {} in HBM and {} on chip",
                view.dt, b.dt
            )));
        }
        let mut sub = view.clone();
        for (d, &n) in b.shape.iter().enumerate() {
            let off = offsets.get(d).copied().unwrap_or(0);
            let len = if load { n } else { b.valid[c][d] };
            if off < 0 || off as u64 >= view.shape[d] {
                return Err(cx.err(format!(
                    "tile offset {off} is outside dimension {d} of {:?}",
                    view.shape
                )));
            }
            sub = sub.slice(d, off as u64, 1, len.min(view.shape[d] - off as u64));
        }
        let b = self.bufs.get_mut(&chip).expect("checked above");
        if load {
            b.version[c] += 1;
            b.valid[c] = sub.shape.clone();
        }
        Ok(Emit::Dma {
            load,
            view: sub,
            addr: b.addr(c),
            ld: b.ld(),
        })
    }

    fn matmul(&mut self, cx: &mut Cx, op: OpId, c: usize) -> R<Emit> {
        let ops = cx.m.op(op).operands.clone();
        let accumulate = match ops.get(3) {
            Some(&k) => {
                let (at, lower) = self.index(cx, k)?;
                at != lower
            }
            None => false,
        };
        let (a, b) = (self.buf(cx, ops[0])?, self.buf(cx, ops[1])?);
        let (av, bv) = (a.valid[c].clone(), b.valid[c].clone());
        if av[1] != bv[0] {
            return Err(cx.err(format!(
                "matmul of a {av:?} tile by a {bv:?} tile (inner extents differ)"
            )));
        }
        let (ta, tb) = (a.tile(c), b.tile(c));
        let acc = self
            .bufs
            .get_mut(&ops[2])
            .ok_or_else(|| cx.err("matmul accumulator is not a buffer of this kernel"))?;
        if !accumulate {
            acc.version[c] += 1;
            acc.valid[c] = vec![av[0], bv[1]];
        } else if acc.valid[c] != [av[0], bv[1]] {
            return Err(cx.err(format!(
                "matmul accumulates a {:?} product into {:?}",
                [av[0], bv[1]],
                acc.valid[c]
            )));
        }
        Ok(Emit::Matmul {
            acc: acc.tile(c),
            a: ta,
            b: tb,
            mkn: [av[0], av[1], bv[1]],
            accumulate,
        })
    }

    fn reshape(&mut self, cx: &mut Cx, op: OpId) -> R<()> {
        let d = cx.m.op(op);
        let (x, r) = (d.operands[0], d.results[0]);
        let shape =
            cx.m.value_type(r)
                .as_buffer()
                .map(|b| b.shape.clone())
                .ok_or_else(|| cx.err("tile.reshape must make a memref"))?;
        let view = self
            .hbm
            .get(&x)
            .ok_or_else(|| cx.err(format!("{x} is not an HBM buffer of this kernel")))?;
        let v = view.reshape(&shape).ok_or_else(|| {
            cx.err(format!(
                "cannot reshape {:?} to {shape:?}: the tensor is not dense in HBM",
                view.shape
            ))
        })?;
        self.hbm.insert(r, v);
        Ok(())
    }

    fn vector(&mut self, cx: &mut Cx, op: OpId, c: usize) -> R<Emit> {
        let m = cx.m;
        let kind = m.attr(op, "kind").and_then(Attribute::as_str).unwrap_or("");
        let ops = m.op(op).operands.clone();
        let (&dst, ins) = ops
            .split_last()
            .ok_or_else(|| cx.err("tile.vector without operands"))?;
        let x = self.buf(cx, ins[0])?;
        let (tx, valid) = (x.tile(c), x.valid[c].clone());
        let cols = valid.last().copied().unwrap_or(1);
        let rows = valid.iter().rev().skip(1).product::<u64>();
        let second = match ins.get(1) {
            Some(&v) => {
                let b = self.buf(cx, v)?;
                Some((b.tile(c), b.valid[c].clone()))
            }
            None => None,
        };
        let reads_dst = ins.contains(&dst);
        let d = self
            .bufs
            .get_mut(&dst)
            .ok_or_else(|| cx.err("tile.vector destination is not a buffer of this kernel"))?;
        if d.shape.len() != valid.len() || d.shape.iter().zip(&valid).any(|(a, b)| b > a) {
            return Err(cx.err(format!(
                "tile.vector writes a {valid:?} tile into a {:?} buffer",
                d.shape
            )));
        }
        if !reads_dst {
            d.version[c] += 1;
        }
        d.valid[c] = valid.clone();
        let td = d.tile(c);
        let bin = |k: Bin| -> R<Vec<VStep>> {
            let (tb, bv) = second
                .clone()
                .ok_or_else(|| cx.err("binary kind without a second operand"))?;
            let bc = if bv == valid {
                Bcast::Full
            } else if bv.iter().rev().skip(1).product::<u64>() == 1 && bv.last() == Some(&cols) {
                Bcast::Row
            } else if bv.len() == valid.len() && bv.last() == Some(&1) && bv[0] == valid[0] {
                Bcast::Col
            } else {
                return Err(cx.err(format!(
                    "tile.vector `{kind}` of a {valid:?} tile and a {bv:?} tile (no broadcast)"
                )));
            };
            Ok(vec![VStep::Bin(k, td, tx, tb, bc)])
        };
        let un = |k: Un| vec![VStep::Un(k, td, tx, Bcast::Full)];
        let tiles: Vec<T> = ins
            .iter()
            .map(|v| self.buf(cx, *v).map(|b| b.tile(c)))
            .collect::<R<_>>()?;
        let steps = match kind {
            "convert" | "copy" => un(Un::Copy),
            "exp" => un(Un::Exp),
            "log" => un(Un::Log),
            "sqrt" => un(Un::Sqrt),
            "rsqrt" => un(Un::Rsqrt),
            "recip" => un(Un::Recip),
            "tanh" => un(Un::Tanh),
            "erf" => un(Un::Erf),
            "sigmoid" => un(Un::Sigmoid),
            "neg" => un(Un::Neg),
            "abs" => un(Un::Abs),
            "sin" => un(Un::Sin),
            "cos" => un(Un::Cos),
            "floor" => un(Un::Floor),
            "ceil" => un(Un::Ceil),
            "trunc" => un(Un::Trunc),
            "round" => un(Un::Round),
            "add" => bin(Bin::Add)?,
            "sub" => bin(Bin::Sub)?,
            "mul" => bin(Bin::Mul)?,
            "div" => bin(Bin::Div)?,
            "max" => bin(Bin::Max)?,
            "min" => bin(Bin::Min)?,
            "softmax" => vec![VStep::Softmax(td, tx, tiles[1], tiles[2])],
            "layer_norm" | "rms_norm" => vec![VStep::Norm {
                w: td,
                x: tx,
                stats: (tiles[1], tiles[2]),
                prm: tiles[3..].to_vec(),
                eps: m
                    .attr(op, "epsilon")
                    .and_then(Attribute::as_f64)
                    .unwrap_or(1e-5) as f32,
                rms: kind == "rms_norm",
            }],
            k => {
                let act = Act::from_name(k)
                    .ok_or_else(|| cx.err(format!("tile.vector kind `{k}` is not supported")))?;
                let (scratch, _) =
                    second.ok_or_else(|| cx.err("an activation needs a scratch tile"))?;
                let mut v = vec![];
                if td.addr != tx.addr || td.mem != tx.mem {
                    v.push(VStep::Un(Un::Copy, td, tx, Bcast::Full));
                }
                v.push(VStep::Act(act, td, scratch));
                v
            }
        };
        Ok(Emit::Vector { steps, rows, cols })
    }
}
