//! `lower-tile`: rewrites graph ops into `tile.kernel`s — the loop nest over tiles each op runs,
//! with its on-chip buffers, DMAs and tile compute written out (`dialects::tile`). Ops it does not
//! take yet stay graph ops, which `lower-llmpu` lowers through its kernel generators.
//!
//! Taken today: `graph.matmul` and `graph.matmul_epilogue` (bias, activation, residual)
//! `Y[M,N] = A[M,K]·B[K,N]` (A's and Y's leading dims folded into M; the `tile` pass's
//! `tile = [tm, tk, tn]`) whose operands are stored in the matrix engine's type and whose buffers
//! fit the SRAM and accumulator, where the nest is at least as fast as the kernel generator:
//! compute-bound (re-reading A per column block and B per row block stays under the matrix
//! work), steps long enough for a ring of at most 4 tiles to hide a load, at least 8 output tiles per
//! core, more than one row block (a decode step's matmul multicasts its shared rows in the
//! kernel generator), and not right after a matmul the kernel generator
//! keeps (whose last epilogue it overlaps with the next matmul's first loads).
//!
//! ```text
//! for i in 0..M step tm (parallel)
//!   for j in 0..N step tn (parallel)
//!     for k in 0..K step tk
//!       dma_load A[i, k] → a      (2–4 slots: the next steps load while this one multiplies)
//!       dma_load B[k, j] → b
//!       matmul a·b → acc          (a new accumulation at k = 0; acc has 2 slots)
//!     [dma_load bias[j]; add acc + bias → o32 (f32); activation o32; dma_load res[i, j];
//!      add o32 + res → o32]       (the epilogue of a graph.matmul_epilogue)
//!     vector convert → out        (f32 to the storage type; 2 slots)
//!     dma_store out → Y[i, j]
//! ```

//!
//! Elementwise ops (unary functions; `add`/`sub`/`mul`/`div`/`max`/`min` with a full or
//! broadcast-row second operand) become one parallel loop over row tiles of the 2-D-folded
//! tensors: load, `tile.vector`, convert, store (see [`Ewise`]); softmax and layer / RMS norm
//! over the last dim likewise, with scale and bias rows loaded once (see [`RowOp`]).
//!
//! Invariant: the kernel keeps the op's attributes (`llmpu.hbm`, `llmpu.storage`, `tile`), so
//! `plan-memory`'s addresses stay the contract; the HBM memrefs carry the planned storage types.

use super::PassInfo;
use crate::backend::plan::plan_function;
use crate::backend::{Options, options, scalar_of};
use crate::dialects::{graph, tile};
use crate::ir::{
    AddressSpace, Attribute, BlockId, BufferType, Location, Module, OpId, OpSpec, Type, ValueId,
};
use crate::pass::{Pass, PassError};
use llmpu_isa::DType;
use llmpu_isa::cost::matmul_occupancy;
use crate::backend::tiling::{row_tile, sram_budget};

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "lower-tile",
    description: "rewrite graph ops into tile.kernel loop nests (buffers, DMA, tile compute)",
    create: || Box::new(LowerTile),
};

/// The pass.
pub struct LowerTile;

impl Pass for LowerTile {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        let o = options(m).map_err(|e| PassError::failed(INFO.name, Location::Unknown, e))?;
        for func in m.functions() {
            let Some(entry) = m.entry_block(func) else {
                continue;
            };
            let mut plan = plan_function(m, func, &o)
                .map_err(|e| PassError::failed(INFO.name, m.op(func).loc.clone(), e.to_string()))?;
            // A matmul right after one the kernel generator keeps stays there too: that kernel
            // defers its last epilogue into the next matmul's prologue, which only the kernel
            // generator overlaps with its own first loads.
            let generated = [graph::MatMul::NAME, graph::MatMulEpilogue::NAME, graph::Gemm::NAME];
            let mut after_generated = false;
            for op in m.block(entry).ops.clone() {
                let name = m.op(op).name.clone();
                let old = m.op(op).results.clone();
                let mut new = None;
                if [graph::MatMul::NAME, graph::MatMulEpilogue::NAME].contains(&name.as_str())
                    && !after_generated
                    && let Some(g) = Gemm::of(m, op, &plan, &o)
                {
                    new = Some(g.build(m, op));
                } else if let Some(e) = Ewise::of(m, op, &plan, &o) {
                    new = Some(e.build(m, op));
                } else if let Some(r) = RowOp::of(m, op, &plan, &o) {
                    new = Some(r.build(m, op));
                }
                let taken = new.is_some();
                // The kernel's results are the op's tensors: same placement.
                for (was, now) in old.iter().zip(new.unwrap_or_default()) {
                    if let Some(v) = plan.views.get(was).cloned() {
                        plan.views.insert(now, v);
                    }
                }
                after_generated = !taken && generated.contains(&name.as_str());
            }
        }
        Ok(())
    }
}

/// A matmul the tile lowering takes: shapes, tiles, the storage types of its buffers and its
/// epilogue.
struct Gemm {
    mm: u64,
    kk: u64,
    nn: u64,
    tm: u64,
    tk: u64,
    tn: u64,
    /// Storage types of A, B and Y in HBM.
    dts: [DType; 3],
    /// The bias (operand 2, one value per output column) and its storage type.
    bias: Option<DType>,
    /// The residual (last operand, the output's shape) and its storage type.
    res: Option<DType>,
    act: Option<&'static str>,
    /// Slots of the A and B tiles: the loads of the next steps in flight while one multiplies.
    ab_slots: u64,
}

/// Fewest output tiles per core for which the nest is used (see [`Gemm::of`]).
const MIN_TILES_PER_CORE: u64 = 8;

/// The activation names of `graph.matmul_epilogue` that are also `tile.vector` kinds.
const ACTS: [&str; 4] = ["relu", "gelu", "gelu_tanh", "silu"];

impl Gemm {
    fn of(m: &Module, op: OpId, plan: &crate::backend::plan::Plan, o: &Options) -> Option<Gemm> {
        let d = m.op(op);
        let residual = m.attr(op, "residual").and_then(Attribute::as_bool) == Some(true);
        let epilogue = d.name == graph::MatMulEpilogue::NAME;
        let n_extra = d.operands.len().checked_sub(2)?;
        if !epilogue && n_extra != 0 || n_extra > 1 + usize::from(residual) {
            return None;
        }
        let (a, b) = (d.operands[0], d.operands[1]);
        let y = *d.results.first()?;
        let shape = |v: ValueId| m.value_type(v).as_tensor()?.static_shape();
        let (sa, sb, sy) = (shape(a)?, shape(b)?, shape(y)?);
        // A and Y fold their leading dims into rows; B is one 2-D matrix.
        if sa.len() < 2 || sb.len() != 2 || sy.len() != sa.len() {
            return None;
        }
        let (kk, nn) = (sa[sa.len() - 1], sb[1]);
        let mm = sa[..sa.len() - 1].iter().product::<u64>();
        if sb[0] != kk || sy[..sy.len() - 1] != sa[..sa.len() - 1] || sy[sy.len() - 1] != nn {
            return None;
        }
        if [mm, kk, nn].contains(&0) {
            return None;
        }
        let view = |v: ValueId| plan.views.get(&v);
        let dense = |v: ValueId, s: &[u64]| view(v).is_some_and(|x| x.reshape(s).is_some());
        if sa.len() > 2 && !(dense(a, &[mm, kk]) && dense(y, &[mm, nn])) {
            return None;
        }
        let act = match m.attr(op, "activation").and_then(Attribute::as_str) {
            None | Some("none") => None,
            Some(s) => Some(*ACTS.iter().find(|&&x| x == s)?),
        };
        let res = if residual {
            let r = *d.operands.last()?;
            if shape(r)? != sy || (sy.len() > 2 && !dense(r, &[mm, nn])) {
                return None;
            }
            Some(view(r)?.dt)
        } else {
            None
        };
        let bias = if n_extra > usize::from(residual) {
            let bv = d.operands[2];
            let sb = shape(bv)?;
            if sb.last() != Some(&nn) || sb.iter().rev().skip(1).any(|&x| x != 1) {
                return None;
            }
            if sb.len() != 1 && !dense(bv, &[nn]) {
                return None;
            }
            Some(view(bv)?.dt)
        } else {
            None
        };
        let t = m.attr(op, "tile").and_then(Attribute::as_i64_list)?;
        let &[tm, tk, tn] = &t[..] else {
            return None;
        };
        let (tm, tk, tn) = (
            (tm.max(1) as u64).min(mm),
            (tk.max(1) as u64).min(kk),
            (tn.max(1) as u64).min(nn),
        );
        let mxu = match o.precision {
            crate::backend::Precision::Fp32 => DType::F32,
            crate::backend::Precision::Bf16 => DType::BF16,
        };
        let dts = [view(a)?.dt, view(b)?.dt, view(y)?.dt];
        // Operands in the matrix engine's type (no staging conversion), float epilogue operands.
        if dts[0] != mxu || dts[1] != mxu || !dts[2].is_float() {
            return None;
        }
        if bias.is_some_and(|t| !t.is_float()) || res.is_some_and(|t| !t.is_float()) {
            return None;
        }
        // One row block (a decode step's matmul) stays with the kernel generator, which
        // multicasts the shared rows, recomputes single-row producers and overlaps its last
        // store with the next matmul; too few output tiles would leave cores idle.
        let cores = o.target.cores.max(1) as u64;
        if mm <= tm || mm.div_ceil(tm) * nn.div_ceil(tn) < cores {
            return None;
        }
        let g = Gemm {
            mm,
            kk,
            nn,
            tm,
            tk,
            tn,
            dts,
            bias,
            res,
            act,
            ab_slots: 2,
        };
        // The nest re-reads A once per column block and B once per row block: it is used where
        // that traffic stays under the matrix work (compute-bound); memory-bound matmuls keep
        // the kernel generator, which holds operands resident or multicasts them.
        let t = &o.target;
        let bw = t.hbm.bandwidth_gb_s * t.hbm.efficiency / t.clock_ghz;
        let (mt, nt, ks) = (mm.div_ceil(tm), nn.div_ceil(tn), kk.div_ceil(tk));
        let active = (mt * nt).min(cores);
        let step = matmul_occupancy(tm, tk, tn, mxu, t).max(1);
        let compute = (mt * nt * ks * step).div_ceil(active);
        let mut bytes = (mm * kk * nt + kk * nn * mt) * mxu.size() + mm * nn * dts[2].size();
        bytes += res.map_or(0, |r| mm * nn * r.size());
        if bytes as f64 / bw > compute as f64 {
            return None;
        }
        // The nest's first loads and last epilogue do not overlap the neighbouring ops (the
        // kernel generator overlaps them with the previous and next matmul): with few tiles per
        // core that costs more than the nest gains.
        if (mt * nt).div_ceil(active) < MIN_TILES_PER_CORE {
            return None;
        }
        // Enough A/B slots (2 to 4) that a load fits in the steps before its tile is needed:
        // the load into a slot (two DMA setups, the transfer and the latency) starts once the
        // matmul that read the slot completes (fill and drain after its busy cycles). Shorter
        // steps would stall the matrix engine; the kernel generator's deeper ring serves them.
        let xfer = ((tm * tk + tk * tn) * mxu.size()) as f64 / bw;
        let refill = t.hbm.latency_cycles
            + 2 * t.latency.dma_setup
            + (t.matrix.rows + t.matrix.cols) as u64;
        let need = 1 + ((refill as f64 + xfer) / step as f64).ceil() as u64;
        if need > 4 {
            return None;
        }
        // A count dividing the K steps keeps every tile's slots the same.
        let mut g = g;
        g.ab_slots = (need.max(2)..=4).find(|s| ks % s == 0).unwrap_or(need.max(2));
        (g.sram_bytes() <= t.sram.size_bytes && 2 * tm * tn * 4 <= t.accumulator.size_bytes)
            .then_some(g)
    }

    /// Whether the epilogue computes in an f32 tile (anything beyond a conversion).
    fn staged(&self) -> bool {
        self.bias.is_some() || self.res.is_some() || self.act.is_some()
    }

    /// The SRAM the kernel's buffers take (what [`Gemm::build`] allocates, 64-byte rounded).
    fn sram_bytes(&self) -> u64 {
        let r = |b: u64| b.div_ceil(64) * 64;
        let (tm, tk, tn) = (self.tm, self.tk, self.tn);
        let mxu = self.dts[0].size();
        let ab = self.ab_slots;
        let mut b = ab * r(tm * tk * mxu) + ab * r(tk * tn * mxu);
        if self.staged() {
            b += 2 * r(tm * tn * 4);
        }
        if !self.staged() || self.dts[2] != DType::F32 {
            b += 2 * r(tm * tn * self.dts[2].size());
        }
        if self.act.is_some() || self.res.is_some_and(|t| t != DType::F32) {
            b += r(tm * tn * 4);
        }
        if let Some(t) = self.bias {
            b += 2 * r(tn * t.size()) + if t == DType::F32 { 0 } else { r(tn * 4) };
        }
        if let Some(t) = self.res {
            b += 2 * r(tm * tn * t.size());
        }
        b
    }

    fn build(&self, m: &mut Module, op: OpId) -> Vec<ValueId> {
        let n_in = m.op(op).operands.len();
        let dts: Vec<DType> = (0..=n_in)
            .map(|i| match i {
                0 | 1 => self.dts[i],
                i if i == n_in => self.dts[2],
                i if i == n_in - 1 && self.res.is_some() => self.res.unwrap_or(DType::F32),
                _ => self.bias.unwrap_or(DType::F32),
            })
            .collect();
        let kb = KernelBuilder::begin(m, op, &dts);
        let (body, args) = (kb.body, kb.args.clone());
        let flat = |m: &mut Module, v, shape: &[u64], dt| kb.flat(m, v, shape, dt);
        // 2-D views of A, Y and the residual; 1-D of the bias.
        let (mm, kk, nn) = (self.mm, self.kk, self.nn);
        let ha = flat(m, args[0], &[mm, kk], self.dts[0]);
        let hb = args[1];
        let hy = flat(m, *args.last().expect("result"), &[mm, nn], self.dts[2]);
        let hbias = self.bias.map(|t| flat(m, args[2], &[nn], t));
        let hres = self.res.map(|t| flat(m, args[args.len() - 2], &[mm, nn], t));
        let (tm, tk, tn) = (self.tm, self.tk, self.tn);
        let alloc = |m: &mut Module, shape: &[u64], dt, space, slots| {
            kb.alloc(m, shape, dt, space, slots)
        };
        let sram = AddressSpace::Sram;
        let f32 = DType::F32;
        let ab = self.ab_slots as i64;
        let at = alloc(m, &[tm, tk], self.dts[0], sram, ab);
        let bt = alloc(m, &[tk, tn], self.dts[1], sram, ab);
        let acc = alloc(m, &[tm, tn], f32, AddressSpace::Acc, 2);
        let o32 = self.staged().then(|| alloc(m, &[tm, tn], f32, sram, 2));
        // The result leaves from its own tile unless the f32 epilogue tile is already it.
        let out = (o32.is_none() || self.dts[2] != f32).then(|| alloc(m, &[tm, tn], self.dts[2], sram, 2));
        let scratch = (self.act.is_some() || self.res.is_some_and(|t| t != f32))
            .then(|| alloc(m, &[tm, tn], f32, sram, 1));
        let bias_t = self.bias.map(|t| {
            let raw = alloc(m, &[tn], t, sram, 2);
            let wide = (t != f32).then(|| alloc(m, &[tn], f32, sram, 1));
            (raw, wide)
        });
        let res_t = self.res.map(|t| alloc(m, &[tm, tn], t, sram, 2));
        let (bi, i) = for_loop(m, body, mm, tm, true, &kb.loc);
        let (bj, j) = for_loop(m, bi, nn, tn, true, &kb.loc);
        let (bk, k) = for_loop(m, bj, kk, tk, false, &kb.loc);
        let inst = |m: &mut Module, b, name: &str, ops: &[ValueId]| kb.inst(m, b, name, ops);
        let vector = |m: &mut Module, kind: &str, ops: &[ValueId]| kb.vector(m, bj, kind, ops);
        inst(m, bk, tile::DmaLoad::NAME, &[ha, at, i, k]);
        inst(m, bk, tile::DmaLoad::NAME, &[hb, bt, k, j]);
        inst(m, bk, tile::MatMul::NAME, &[at, bt, acc, k]);
        inst(m, bk, tile::Yield::NAME, &[]);
        let result = match o32 {
            None => acc,
            Some(o32) => {
                match (hbias, bias_t) {
                    (Some(hb), Some((raw, wide))) => {
                        inst(m, bj, tile::DmaLoad::NAME, &[hb, raw, j]);
                        let b32 = match wide {
                            Some(w) => {
                                vector(m, "convert", &[raw, w]);
                                w
                            }
                            None => raw,
                        };
                        vector(m, "add", &[acc, b32, o32]);
                    }
                    _ => vector(m, "convert", &[acc, o32]),
                }
                if let (Some(a), Some(s)) = (self.act, scratch) {
                    vector(m, a, &[o32, s, o32]);
                }
                if let (Some(hr), Some(rt)) = (hres, res_t) {
                    inst(m, bj, tile::DmaLoad::NAME, &[hr, rt, i, j]);
                    let r32 = match scratch {
                        Some(s) if self.res != Some(f32) => {
                            vector(m, "convert", &[rt, s]);
                            s
                        }
                        _ => rt,
                    };
                    vector(m, "add", &[o32, r32, o32]);
                }
                o32
            }
        };
        let stored = match out {
            Some(out) => {
                vector(m, "convert", &[result, out]);
                out
            }
            None => result,
        };
        inst(m, bj, tile::DmaStore::NAME, &[stored, hy, i, j]);
        inst(m, bj, tile::Yield::NAME, &[]);
        inst(m, bi, tile::Yield::NAME, &[]);
        kb.finish(m)
    }
}

/// An elementwise op the tile lowering takes: `out[r, c] = f(x[r, c])` or `f(a[r, c], b[r, c])`
/// with `b` either full or one row broadcast to every row (a bias); every tensor folded to 2-D.
struct Ewise {
    kind: &'static str,
    rows: u64,
    cols: u64,
    /// Rows per tile.
    tr: u64,
    /// Per operand: its storage type and whether it is one broadcast row.
    ins: Vec<(DType, bool)>,
    out: DType,
}

impl Ewise {
    fn of(m: &Module, op: OpId, plan: &crate::backend::plan::Plan, o: &Options) -> Option<Ewise> {
        use crate::backend::kernels::{Bin, Ew, Un};
        let d = m.op(op);
        let kind = match graph::elementwise(&d.name)?.lower? {
            Ew::Unary(u) => match u {
                Un::Exp => "exp",
                Un::Log => "log",
                Un::Sqrt => "sqrt",
                Un::Rsqrt => "rsqrt",
                Un::Recip => "recip",
                Un::Tanh => "tanh",
                Un::Erf => "erf",
                Un::Sigmoid => "sigmoid",
                Un::Neg => "neg",
                Un::Abs => "abs",
                Un::Sin => "sin",
                Un::Cos => "cos",
                Un::Floor => "floor",
                Un::Ceil => "ceil",
                Un::Trunc => "trunc",
                Un::Round => "round",
                Un::Copy => return None,
            },
            Ew::Binary(b) => match b {
                Bin::Add => "add",
                Bin::Sub => "sub",
                Bin::Mul => "mul",
                Bin::Div => "div",
                Bin::Max => "max",
                Bin::Min => "min",
                _ => return None,
            },
            _ => return None,
        };
        let arity = if ["add", "sub", "mul", "div", "max", "min"].contains(&kind) {
            2
        } else {
            1
        };
        let y = *d.results.first()?;
        if d.operands.len() != arity || d.results.len() != 1 {
            return None;
        }
        let shape = |v: ValueId| m.value_type(v).as_tensor()?.static_shape();
        let sy = shape(y)?;
        let cols = *sy.last()?;
        let rows = sy[..sy.len() - 1].iter().product::<u64>();
        if rows == 0 || cols == 0 || cols > 65535 {
            return None;
        }
        let out = plan.views.get(&y)?.dt;
        if !out.is_float() || plan.views.get(&y)?.reshape(&[rows, cols]).is_none() {
            return None;
        }
        let mut ins = vec![];
        for (i, &v) in d.operands.iter().enumerate() {
            let view = plan.views.get(&v)?;
            if plan.splats.contains_key(&v) || !view.dt.is_float() {
                return None;
            }
            let s = shape(v)?;
            let row = s != sy;
            if row {
                // Only the second operand may be a broadcast row, and only one that is a row.
                let one_row = s.last() == Some(&cols) && s.iter().rev().skip(1).all(|&x| x == 1);
                if i == 0 || !one_row || view.reshape(&[cols]).is_none() {
                    return None;
                }
            } else if view.reshape(&[rows, cols]).is_none() {
                return None;
            }
            ins.push((view.dt, row));
        }
        let t = &o.target;
        let staged = out != DType::F32;
        let per_row = 2
            * cols
            * (ins.iter().filter(|(_, r)| !r).map(|(d, _)| d.size()).sum::<u64>()
                + out.size()
                + if staged { 4 } else { 0 });
        let fixed: u64 = ins.iter().filter(|(_, r)| *r).map(|(d, _)| cols * d.size()).sum();
        let tr = rows_per_tile(rows, per_row, fixed, t)?;
        Some(Ewise {
            kind,
            rows,
            cols,
            tr,
            ins,
            out,
        })
    }

    fn build(&self, m: &mut Module, op: OpId) -> Vec<ValueId> {
        let dts: Vec<DType> = self.ins.iter().map(|x| x.0).chain([self.out]).collect();
        let kb = KernelBuilder::begin(m, op, &dts);
        let (body, args) = (kb.body, kb.args.clone());
        let (rows, cols, tr) = (self.rows, self.cols, self.tr);
        let flat = |m: &mut Module, v, shape: &[u64], dt| kb.flat(m, v, shape, dt);
        let alloc = |m: &mut Module, shape: &[u64], dt, slots| {
            kb.alloc(m, shape, dt, AddressSpace::Sram, slots)
        };
        let inst = |m: &mut Module, b, name: &str, ops: &[ValueId]| kb.inst(m, b, name, ops);
        let mut srcs = vec![];
        for (k, &(dt, row)) in self.ins.iter().enumerate() {
            if row {
                let h = flat(m, args[k], &[cols], dt);
                let b = alloc(m, &[cols], dt, 1);
                inst(m, body, tile::DmaLoad::NAME, &[h, b]);
                srcs.push((None, b));
            } else {
                let h = flat(m, args[k], &[rows, cols], dt);
                srcs.push((Some(h), alloc(m, &[tr, cols], dt, 2)));
            }
        }
        let hy = flat(m, args[self.ins.len()], &[rows, cols], self.out);
        let out = alloc(m, &[tr, cols], self.out, 2);
        let o32 = (self.out != DType::F32).then(|| alloc(m, &[tr, cols], DType::F32, 2));
        let (bi, i) = for_loop(m, body, rows, tr, true, &kb.loc);
        for &(h, b) in &srcs {
            if let Some(h) = h {
                inst(m, bi, tile::DmaLoad::NAME, &[h, b, i]);
            }
        }
        let mut operands: Vec<ValueId> = srcs.iter().map(|x| x.1).collect();
        operands.push(o32.unwrap_or(out));
        kb.vector(m, bi, self.kind, &operands);
        if let Some(o32) = o32 {
            kb.vector(m, bi, "convert", &[o32, out]);
        }
        inst(m, bi, tile::DmaStore::NAME, &[out, hy, i]);
        inst(m, bi, tile::Yield::NAME, &[]);
        kb.finish(m)
    }
}

/// Rows per tile of a row-tile loop: as many as the SRAM holds (`per_row` bytes each, double
/// buffered, beside `fixed` bytes loaded once) and at most one core's share; `None` when a row
/// does not fit, or when there are fewer rows than cores (a decode step's row stays with the
/// kernel generator, which splits it over the cores or has its consuming matmul recompute it).
fn rows_per_tile(rows: u64, per_row: u64, fixed: u64, t: &llmpu_isa::Target) -> Option<u64> {
    let budget = sram_budget(t).saturating_sub(fixed);
    let cores = t.cores.max(1) as u64;
    if per_row > budget || rows < cores {
        return None;
    }
    Some(
        row_tile(rows, per_row, t)
            .min(budget / per_row)
            .min(rows.div_ceil(cores))
            .max(1),
    )
}

/// A row op the tile lowering takes: softmax or a layer / RMS norm over the last dim, with
/// optional scale and bias rows, every tensor folded to 2-D.
struct RowOp {
    /// `softmax`, `layer_norm` or `rms_norm`.
    kind: &'static str,
    eps: Option<f64>,
    rows: u64,
    cols: u64,
    tr: u64,
    x: DType,
    params: Vec<DType>,
    out: DType,
}

impl RowOp {
    fn of(m: &Module, op: OpId, plan: &crate::backend::plan::Plan, o: &Options) -> Option<RowOp> {
        let d = m.op(op);
        let shape = |v: ValueId| m.value_type(v).as_tensor()?.static_shape();
        let y = *d.results.first()?;
        let sy = shape(y)?;
        let rank = sy.len() as i64;
        let int = |n: &str, dflt| m.attr(op, n).and_then(Attribute::as_int).unwrap_or(dflt);
        let last_axis = |a: i64| a == -1 || a == rank - 1;
        let (kind, eps) = match d.name.as_str() {
            graph::Softmax::NAME if last_axis(int("axis", -1)) && d.operands.len() == 1 => {
                ("softmax", None)
            }
            graph::Norm::NAME | graph::LayerNorm::NAME | graph::RmsNorm::NAME
                if last_axis(int("axis", -1))
                    && d.results[1..].iter().all(|&r| m.uses(r).is_empty()) =>
            {
                let rms = d.name == graph::RmsNorm::NAME
                    || m.attr(op, "kind").and_then(Attribute::as_str) == Some("rms");
                let eps = m.attr(op, "epsilon").and_then(Attribute::as_f64).unwrap_or(1e-5);
                (if rms { "rms_norm" } else { "layer_norm" }, Some(eps))
            }
            _ => return None,
        };
        let cols = *sy.last()?;
        let rows = sy[..sy.len() - 1].iter().product::<u64>();
        if rows == 0 || cols == 0 || cols > 65535 {
            return None;
        }
        let view = |v: ValueId| plan.views.get(&v);
        let x = d.operands[0];
        let (xv, yv) = (view(x)?, view(y)?);
        if shape(x)? != sy
            || !xv.dt.is_float()
            || !yv.dt.is_float()
            || xv.reshape(&[rows, cols]).is_none()
            || yv.reshape(&[rows, cols]).is_none()
        {
            return None;
        }
        let mut params = vec![];
        for &p in &d.operands[1..] {
            let pv = view(p)?;
            if !pv.dt.is_float() || pv.reshape(&[cols]).is_none() {
                return None;
            }
            params.push(pv.dt);
        }
        let per_row = 2 * cols * (xv.dt.size() + 4 + yv.dt.size()) + 16;
        let fixed: u64 = params.iter().map(|d| cols * (d.size() + 4) + 128).sum();
        let tr = rows_per_tile(rows, per_row, fixed, &o.target)?;
        Some(RowOp {
            kind,
            eps,
            rows,
            cols,
            tr,
            x: xv.dt,
            params,
            out: yv.dt,
        })
    }

    fn build(&self, m: &mut Module, op: OpId) -> Vec<ValueId> {
        let n_res = m.op(op).results.len();
        let dts: Vec<DType> = [self.x]
            .into_iter()
            .chain(self.params.iter().copied())
            .chain(std::iter::repeat_n(self.out, n_res))
            .collect();
        let kb = KernelBuilder::begin(m, op, &dts);
        let (body, args) = (kb.body, kb.args.clone());
        let (rows, cols, tr) = (self.rows, self.cols, self.tr);
        let f32 = DType::F32;
        let alloc = |m: &mut Module, shape: &[u64], dt, slots| {
            kb.alloc(m, shape, dt, AddressSpace::Sram, slots)
        };
        let hx = kb.flat(m, args[0], &[rows, cols], self.x);
        let hy = kb.flat(m, args[1 + self.params.len()], &[rows, cols], self.out);
        // Scale and bias: loaded once on every core and widened to f32.
        let mut prm = vec![];
        for (k, &dt) in self.params.iter().enumerate() {
            let h = kb.flat(m, args[1 + k], &[cols], dt);
            let raw = alloc(m, &[cols], dt, 1);
            kb.inst(m, body, tile::DmaLoad::NAME, &[h, raw]);
            prm.push(if dt == f32 {
                raw
            } else {
                let w = alloc(m, &[cols], f32, 1);
                kb.vector(m, body, "convert", &[raw, w]);
                w
            });
        }
        let xt = alloc(m, &[tr, cols], self.x, 2);
        let (s1, s2) = (alloc(m, &[tr, 1], f32, 1), alloc(m, &[tr, 1], f32, 1));
        let w = alloc(m, &[tr, cols], f32, 2);
        let out = (self.out != f32).then(|| alloc(m, &[tr, cols], self.out, 2));
        let (bi, i) = for_loop(m, body, rows, tr, true, &kb.loc);
        kb.inst(m, bi, tile::DmaLoad::NAME, &[hx, xt, i]);
        let mut operands = vec![xt, s1, s2];
        operands.extend(&prm);
        operands.push(w);
        let v = kb.inst(m, bi, tile::Vector::NAME, &operands);
        m.set_attr(v, "kind", Attribute::str(self.kind));
        if let Some(eps) = self.eps {
            m.set_attr(v, "epsilon", Attribute::f32(eps as f32));
        }
        let stored = match out {
            Some(out) => {
                kb.vector(m, bi, "convert", &[w, out]);
                out
            }
            None => w,
        };
        kb.inst(m, bi, tile::DmaStore::NAME, &[stored, hy, i]);
        kb.inst(m, bi, tile::Yield::NAME, &[]);
        kb.finish(m)
    }
}

/// A `tile.kernel` being built in place of a graph op.
struct KernelBuilder {
    op: OpId,
    kernel: OpId,
    body: BlockId,
    /// The body's HBM memrefs: operands, then results.
    args: Vec<ValueId>,
    loc: Location,
}

fn buffer(shape: &[u64], dt: DType, space: AddressSpace) -> Type {
    Type::Buffer(BufferType {
        shape: shape.to_vec(),
        elem: scalar_of(dt),
        space,
    })
}

impl KernelBuilder {
    /// Creates the kernel before `op` (its operands, result types and attributes, `op = <name>`)
    /// with a body whose arguments are the operands and results as `"hbm"` memrefs of `dts`.
    fn begin(m: &mut Module, op: OpId, dts: &[DType]) -> KernelBuilder {
        let d = m.op(op).clone();
        let mut spec = OpSpec::new(tile::Kernel::NAME, d.loc.clone())
            .operands(&d.operands)
            .results(d.results.iter().map(|&r| m.value_type(r).clone()).collect())
            .attr("op", Attribute::str(d.name.clone()));
        for (n, a) in &d.attrs {
            spec = spec.attr(n, a.clone());
        }
        let kernel = m.create_op(spec);
        m.insert_op_before(op, kernel);
        let region = m.add_region(kernel);
        let types: Vec<Type> = d
            .operands
            .iter()
            .chain(&d.results)
            .zip(dts)
            .map(|(&v, &dt)| {
                let t = m.value_type(v).as_tensor().cloned();
                let shape = t.and_then(|t| t.static_shape()).unwrap_or_default();
                buffer(&shape, dt, AddressSpace::Hbm)
            })
            .collect();
        let body = m.add_block(region, &types);
        let args = m.block(body).args.clone();
        KernelBuilder {
            op,
            kernel,
            body,
            args,
            loc: d.loc,
        }
    }

    /// `v` (an HBM memref) as `shape`: itself, or a `tile.reshape` of it.
    fn flat(&self, m: &mut Module, v: ValueId, shape: &[u64], dt: DType) -> ValueId {
        if m.value_type(v).as_buffer().is_some_and(|b| b.shape == shape) {
            return v;
        }
        let r = m.append(
            self.body,
            OpSpec::new(tile::Reshape::NAME, self.loc.clone())
                .operands(&[v])
                .results(vec![buffer(shape, dt, AddressSpace::Hbm)]),
        );
        m.op(r).results[0]
    }

    fn alloc(&self, m: &mut Module, shape: &[u64], dt: DType, space: AddressSpace, slots: i64) -> ValueId {
        let a = m.append(
            self.body,
            OpSpec::new(tile::Alloc::NAME, self.loc.clone())
                .results(vec![buffer(shape, dt, space)])
                .attr("slots", Attribute::i64(slots)),
        );
        m.op(a).results[0]
    }

    fn inst(&self, m: &mut Module, b: BlockId, name: &str, ops: &[ValueId]) -> OpId {
        m.append(b, OpSpec::new(name, self.loc.clone()).operands(ops))
    }

    fn vector(&self, m: &mut Module, b: BlockId, kind: &str, ops: &[ValueId]) {
        let v = self.inst(m, b, tile::Vector::NAME, ops);
        m.set_attr(v, "kind", Attribute::str(kind));
    }

    /// Ends the body, points the op's users at the kernel's results and erases the op.
    fn finish(self, m: &mut Module) -> Vec<ValueId> {
        self.inst(m, self.body, tile::Yield::NAME, &[]);
        let old = m.op(self.op).results.clone();
        let res = m.op(self.kernel).results.clone();
        for (&o, &n) in old.iter().zip(&res) {
            m.replace_all_uses(o, n);
        }
        m.erase_op(self.op);
        res
    }
}

/// Appends `tile.for i = 0 .. upper step step` to `block`; returns its body and induction value.
fn for_loop(
    m: &mut Module,
    block: BlockId,
    upper: u64,
    step: u64,
    parallel: bool,
    loc: &Location,
) -> (BlockId, ValueId) {
    let mut spec = OpSpec::new(tile::For::NAME, loc.clone())
        .attr("lower", Attribute::i64(0))
        .attr("upper", Attribute::i64(upper as i64))
        .attr("step", Attribute::i64(step as i64));
    if parallel {
        spec = spec.attr("parallel", Attribute::Bool(true));
    }
    let f = m.append(block, spec);
    let r = m.add_region(f);
    let b = m.add_block(r, &[Type::Index]);
    let i = m.block(b).args[0];
    (b, i)
}
