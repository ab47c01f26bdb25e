//! Kernel generators: one per op family, each turning a graph op (with its planned HBM views and
//! tile attributes) into DMA, matrix and vector instructions through the [`Emitter`].
//!
//! Common shape: the output is cut into tiles along its leading dimensions ([`row_tiles`]); each
//! tile's operands are loaded (any strided view; broadcast operands as a row or a column the
//! vector unit re-reads), computed in f32 on the vector unit, converted to the output's storage
//! type and stored. Consecutive tiles alternate between two buffer sets, so the emitter's automatic
//! synchronization lets the DMA of tile i+1 overlap the compute of tile i.
//!
//! Families: elementwise (unary, binary, compare, select, cast, clip, GELU, ...), copy (concat,
//! materialized views, outputs), row kernels (softmax, log-softmax, layer/RMS norm, reductions),
//! matmul (batched, with bias + activation epilogue), gather (embeddings through `dma.gather`) and
//! fused attention (FlashAttention: Q blocks × KV blocks with online softmax).

use std::collections::HashMap;

use llmpu_isa::{AccMode, Bcast, DType, Inst, Space, TileRef};

use super::emit::{EmitError, Emitter, MULTICAST_SEM, Mem, Sweep, Touch};
use super::plan::{Plan, const_f64s, elem_of, shape_of};
use super::tiling::{matmul_tiles, row_tile, sram_budget};
use super::view::{View, merge_outer};
use super::{BackendError, Options, Precision};

mod split_rows;
use crate::ir::{Attribute, Location, Module, OpId, ValueId};

/// Everything a kernel needs.
pub struct Cx<'a> {
    pub m: &'a Module,
    pub plan: &'a Plan,
    pub e: &'a mut Emitter,
    pub o: &'a Options,
    pub loc: Location,
    /// The previous matmul's last epilogue per core, not yet emitted (see [`Tail`]).
    pub tail: &'a mut Option<Tail>,
    /// Results of single-row producers that their consuming matmuls recompute on every core
    /// ([`recomputed_producers`]): their ops emit nothing.
    pub recompute: &'a HashMap<ValueId, OpId>,
}

type R<T> = Result<T, BackendError>;

impl Cx<'_> {
    fn err(&self, msg: impl Into<String>) -> BackendError {
        BackendError::new(&self.loc, msg)
    }
    fn emit_err(&self, e: EmitError) -> BackendError {
        self.err(e.to_string())
    }
    fn view(&self, v: ValueId) -> R<View> {
        self.plan
            .views
            .get(&v)
            .cloned()
            .ok_or_else(|| self.err(format!("value {v} has no memory (unsupported producer)")))
    }
    fn alloc(&mut self, mem: Mem, bytes: u64, what: &str) -> R<u64> {
        self.e.alloc(mem, bytes, what).map_err(|e| self.emit_err(e))
    }
    /// Rows per tile, at most `max_rows`, so that `rows` spread over every core.
    fn spread(&self, rows: u64, max_rows: u64) -> u64 {
        let c = self.e.cores() as u64;
        rows.div_ceil(c).min(max_rows).max(1)
    }
    /// Sends work unit `unit` to its core (round robin); returns its buffer parity on that core.
    pub fn on_core(&mut self, unit: usize) -> usize {
        let c = self.e.cores();
        self.e.core(unit % c);
        (unit / c) % 2
    }
    /// Emits `move_view` on every core (operands every core needs).
    fn load_everywhere(&mut self, v: &View, sram: u64, ld: u64) {
        for c in 0..self.e.cores() {
            self.e.core(c);
            self.e.move_view(true, v, sram, ld);
        }
        self.e.core(0);
    }
}

// ---------- vector-unit helpers ----------

/// A tile in SRAM or the accumulator: base, row stride (elements), type.
#[derive(Clone, Copy, Debug)]
pub struct T {
    pub mem: Mem,
    pub addr: u64,
    pub ld: u64,
    pub dt: DType,
}

impl T {
    pub fn sram(addr: u64, ld: u64, dt: DType) -> T {
        T {
            mem: Mem::Sram,
            addr,
            ld,
            dt,
        }
    }
    fn touch(&self, rows: u64, cols: u64, b: Bcast, write: bool) -> Touch {
        let sz = self.dt.size();
        let len = match b {
            Bcast::Full => ((rows.max(1) - 1) * self.ld + cols) * sz,
            Bcast::Row => cols * sz,
            Bcast::Col => ((rows.max(1) - 1) * self.ld + 1) * sz,
        };
        Touch {
            mem: self.mem,
            lo: self.addr,
            hi: self.addr + len,
            write,
        }
    }
}

fn tref(e: &mut Emitter, t: T) -> TileRef {
    TileRef {
        space: if t.mem == Mem::Acc {
            Space::Acc
        } else {
            Space::Sram
        },
        dtype: t.dt,
        addr: e.reg(t.addr as i64),
        ld: e.reg(t.ld as i64),
    }
}

/// Binary vector ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bin {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Eq,
    Lt,
    Le,
}

/// Unary vector ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Un {
    Copy,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Recip,
    Tanh,
    Erf,
    Sigmoid,
    Neg,
    Abs,
    Sin,
    Cos,
}

/// Vector ops with an immediate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Imm {
    Add,
    Sub,
    Rsub,
    Mul,
    Div,
    Max,
    Min,
    Pow,
}

/// Row reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Red {
    Sum,
    Max,
    Min,
}

#[allow(clippy::too_many_arguments)]
impl Emitter {
    pub fn vbin(&mut self, k: Bin, d: T, a: T, b: T, bc: Bcast, rows: u64, cols: u64) {
        let touches = vec![
            a.touch(rows, cols, Bcast::Full, false),
            b.touch(rows, cols, bc, false),
            d.touch(rows, cols, Bcast::Full, true),
        ];
        let (dst, a, b) = (tref(self, d), tref(self, a), tref(self, b));
        let (rows, cols, bcast) = (rows as u32, cols as u32, bc);
        let inst = match k {
            Bin::Add => Inst::VpuAdd {
                dst,
                a,
                b,
                rows,
                cols,
                bcast,
            },
            Bin::Sub => Inst::VpuSub {
                dst,
                a,
                b,
                rows,
                cols,
                bcast,
            },
            Bin::Mul => Inst::VpuMul {
                dst,
                a,
                b,
                rows,
                cols,
                bcast,
            },
            Bin::Div => Inst::VpuDiv {
                dst,
                a,
                b,
                rows,
                cols,
                bcast,
            },
            Bin::Max => Inst::VpuMax {
                dst,
                a,
                b,
                rows,
                cols,
                bcast,
            },
            Bin::Min => Inst::VpuMin {
                dst,
                a,
                b,
                rows,
                cols,
                bcast,
            },
            Bin::Eq => Inst::VpuEq {
                dst,
                a,
                b,
                rows,
                cols,
                bcast,
            },
            Bin::Lt => Inst::VpuLt {
                dst,
                a,
                b,
                rows,
                cols,
                bcast,
            },
            Bin::Le => Inst::VpuLe {
                dst,
                a,
                b,
                rows,
                cols,
                bcast,
            },
        };
        self.op(inst, touches);
    }

    pub fn vun(&mut self, k: Un, d: T, a: T, bc: Bcast, rows: u64, cols: u64) {
        let touches = vec![
            a.touch(rows, cols, bc, false),
            d.touch(rows, cols, Bcast::Full, true),
        ];
        let (dst, a) = (tref(self, d), tref(self, a));
        let (rows, cols, bcast) = (rows as u32, cols as u32, bc);
        let inst = match k {
            Un::Copy => Inst::VpuCopy {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Exp => Inst::VpuExp {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Log => Inst::VpuLog {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Sqrt => Inst::VpuSqrt {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Rsqrt => Inst::VpuRsqrt {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Recip => Inst::VpuRecip {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Tanh => Inst::VpuTanh {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Erf => Inst::VpuErf {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Sigmoid => Inst::VpuSigmoid {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Neg => Inst::VpuNeg {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Abs => Inst::VpuAbs {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Sin => Inst::VpuSin {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Cos => Inst::VpuCos {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
        };
        self.op(inst, touches);
    }

    pub fn vimm(&mut self, k: Imm, d: T, a: T, imm: f32, rows: u64, cols: u64) {
        let touches = vec![
            a.touch(rows, cols, Bcast::Full, false),
            d.touch(rows, cols, Bcast::Full, true),
        ];
        let (dst, a) = (tref(self, d), tref(self, a));
        let (rows, cols) = (rows as u32, cols as u32);
        let inst = match k {
            Imm::Add => Inst::VpuAdds {
                dst,
                a,
                imm,
                rows,
                cols,
            },
            Imm::Sub => Inst::VpuSubs {
                dst,
                a,
                imm,
                rows,
                cols,
            },
            Imm::Rsub => Inst::VpuRsubs {
                dst,
                a,
                imm,
                rows,
                cols,
            },
            Imm::Mul => Inst::VpuMuls {
                dst,
                a,
                imm,
                rows,
                cols,
            },
            Imm::Div => Inst::VpuDivs {
                dst,
                a,
                imm,
                rows,
                cols,
            },
            Imm::Max => Inst::VpuMaxs {
                dst,
                a,
                imm,
                rows,
                cols,
            },
            Imm::Min => Inst::VpuMins {
                dst,
                a,
                imm,
                rows,
                cols,
            },
            Imm::Pow => Inst::VpuPows {
                dst,
                a,
                imm,
                rows,
                cols,
            },
        };
        self.op(inst, touches);
    }

    pub fn vred(&mut self, k: Red, d: T, a: T, rows: u64, cols: u64) {
        let touches = vec![
            a.touch(rows, cols, Bcast::Full, false),
            d.touch(rows, 1, Bcast::Col, true),
        ];
        let (dst, a) = (tref(self, d), tref(self, a));
        let (rows, cols) = (rows as u32, cols as u32);
        let inst = match k {
            Red::Sum => Inst::VpuRsum { dst, a, rows, cols },
            Red::Max => Inst::VpuRmax { dst, a, rows, cols },
            Red::Min => Inst::VpuRmin { dst, a, rows, cols },
        };
        self.op(inst, touches);
    }

    pub fn vsel(&mut self, d: T, c: T, a: T, b: T, rows: u64, cols: u64) {
        let touches = vec![
            c.touch(rows, cols, Bcast::Full, false),
            a.touch(rows, cols, Bcast::Full, false),
            b.touch(rows, cols, Bcast::Full, false),
            d.touch(rows, cols, Bcast::Full, true),
        ];
        let (dst, c, a, b) = (tref(self, d), tref(self, c), tref(self, a), tref(self, b));
        let inst = Inst::VpuSel {
            dst,
            c,
            a,
            b,
            rows: rows as u32,
            cols: cols as u32,
        };
        self.op(inst, touches);
    }

    pub fn vfill(&mut self, d: T, imm: f32, rows: u64, cols: u64) {
        let touches = vec![d.touch(rows, cols, Bcast::Full, true)];
        let dst = tref(self, d);
        let inst = Inst::VpuFill {
            dst,
            imm,
            rows: rows as u32,
            cols: cols as u32,
        };
        self.op(inst, touches);
    }

    /// `d[i, j] = d[i, j] · s[i] + b[i, j]`.
    pub fn vsacc(&mut self, d: T, s: T, b: T, rows: u64, cols: u64) {
        let touches = vec![
            d.touch(rows, cols, Bcast::Full, false),
            s.touch(rows, cols, Bcast::Col, false),
            b.touch(rows, cols, Bcast::Full, false),
            d.touch(rows, cols, Bcast::Full, true),
        ];
        let (dst, s, b) = (tref(self, d), tref(self, s), tref(self, b));
        let inst = Inst::VpuSacc {
            dst,
            s,
            b,
            rows: rows as u32,
            cols: cols as u32,
        };
        self.op(inst, touches);
    }

    /// `d[i, j] = exp((a[i, j] - m[i]) · scale)` and `sum[i] = Σ_j d[i, j]` (in f32) in one
    /// special-function pass (`vpu.expsum`).
    #[allow(clippy::too_many_arguments)]
    pub fn vexpsum(&mut self, d: T, a: T, m: T, sum: T, scale: f32, rows: u64, cols: u64) {
        let touches = vec![
            a.touch(rows, cols, Bcast::Full, false),
            m.touch(rows, cols, Bcast::Col, false),
            d.touch(rows, cols, Bcast::Full, true),
            sum.touch(rows, cols, Bcast::Col, true),
        ];
        let (dst, a, m, sum) = (tref(self, d), tref(self, a), tref(self, m), tref(self, sum));
        let inst = Inst::VpuExpsum {
            dst,
            a,
            m,
            sum,
            imm: scale,
            rows: rows as u32,
            cols: cols as u32,
        };
        self.op(inst, touches);
    }

    /// Sets `d[i, j] = imm` where `koff + j > qoff + i`.
    pub fn vcausal(&mut self, d: T, qoff: i64, koff: i64, imm: f32, rows: u64, cols: u64) {
        let touches = vec![d.touch(rows, cols, Bcast::Full, true)];
        let dst = tref(self, d);
        let qoff = self.reg(qoff);
        let koff = self.reg(koff);
        let inst = Inst::VpuCausal {
            dst,
            qoff,
            koff,
            imm,
            rows: rows as u32,
            cols: cols as u32,
        };
        self.op(inst, touches);
    }

    /// `acc (=|+=) a[m×k] · b[k×n]` on the matrix engine.
    pub fn matmul(&mut self, acc: T, a: T, b: T, m: u64, k: u64, n: u64, accumulate: bool) {
        let touches = vec![
            a.touch(m, k, Bcast::Full, false),
            b.touch(k, n, Bcast::Full, false),
            acc.touch(m, n, Bcast::Full, true),
        ];
        let inst = Inst::MxuMatmul {
            acc: self.reg(acc.addr as i64),
            a: self.reg(a.addr as i64),
            b: self.reg(b.addr as i64),
            m: m as u32,
            k: k as u32,
            n: n as u32,
            lda: self.reg(a.ld as i64),
            ldb: self.reg(b.ld as i64),
            ldc: self.reg(acc.ld as i64),
            dt: a.dt,
            mode: if accumulate {
                AccMode::Acc
            } else {
                AccMode::Set
            },
        };
        self.op(inst, touches);
    }
}

// ---------- tiling over leading dims ----------

/// One tile of an N-D iteration space: fixed leading indices, a chunk of dim `k`, full inner dims.
#[derive(Clone, Debug)]
pub struct Tile {
    pub lead: Vec<u64>,
    pub k: usize,
    pub start: u64,
    pub len: u64,
    /// Rows of the tile (elements / row length).
    pub rows: u64,
    /// False for the single tile of a space with no outer dims (nothing to slice).
    pub sliced: bool,
}

/// Tiles of `shape` whose rows are the trailing `inner` dims, each tile at most `max_rows` rows.
pub fn row_tiles(shape: &[u64], inner: usize, max_rows: u64) -> Vec<Tile> {
    let r = shape.len();
    let outer = &shape[..r - inner.min(r)];
    if outer.contains(&0) {
        // No rows: nothing to tile (and no division by an empty extent).
        return vec![];
    }
    if outer.is_empty() {
        return vec![Tile {
            lead: vec![],
            k: 0,
            start: 0,
            len: 1,
            rows: 1,
            sliced: false,
        }];
    }
    // Find the split dim k: dims after k (within outer) must fit in max_rows together.
    let mut k = outer.len() - 1;
    let mut below = 1u64;
    while k > 0 && below * outer[k] <= max_rows {
        below *= outer[k];
        k -= 1;
    }
    if below * outer[k] <= max_rows && k == 0 {
        // everything fits: one chunk of dim 0
    }
    let chunk = (max_rows / below).clamp(1, outer[k].max(1));
    let lead_dims = &outer[..k];
    let lead_total: u64 = lead_dims.iter().product();
    let mut out = vec![];
    for flat in 0..lead_total {
        let mut rem = flat;
        let mut lead = vec![0; lead_dims.len()];
        for i in (0..lead_dims.len()).rev() {
            lead[i] = rem % lead_dims[i];
            rem /= lead_dims[i];
        }
        let mut s = 0;
        while s < outer[k] {
            let len = chunk.min(outer[k] - s);
            out.push(Tile {
                lead: lead.clone(),
                k,
                start: s,
                len,
                rows: len * below,
                sliced: true,
            });
            s += len;
        }
    }
    out
}

/// Rounds of one tile per core that may roll into a loop: the leading ones whose tiles all have
/// `rows` rows and share the first tile's leading index (so they advance along one dim).
pub fn uniform_rounds(tiles: &[Tile], rows: u64, cores: usize) -> usize {
    tiles
        .iter()
        .take_while(|t| t.rows == rows && t.lead == tiles[0].lead)
        .count()
        / cores.max(1)
}

/// The part of `v` (same rank as the iteration space) covered by `t`.
pub fn tile_view(v: &View, t: &Tile) -> View {
    let mut x = v.clone();
    for (i, &ix) in t.lead.iter().enumerate() {
        x.addr += ix as i64 * x.strides[i] * x.dt.size() as i64;
    }
    let mut x = View {
        addr: x.addr,
        dt: x.dt,
        shape: x.shape[t.lead.len()..].to_vec(),
        strides: x.strides[t.lead.len()..].to_vec(),
    };
    if t.sliced && !x.shape.is_empty() {
        x = x.slice(0, t.start, 1, t.len);
    }
    x
}

// ---------- operands ----------

/// How an elementwise operand reaches the vector unit.
#[derive(Clone, Debug)]
enum Src {
    /// A compile-time scalar.
    Imm(f32),
    /// A per-tile load of the operand's view (broadcast to the output shape).
    Full(View),
    /// Constant along the last dim: one value per row.
    Col(View),
    /// The same row for every row: loaded once.
    Row(View),
}

/// A loaded operand inside a tile.
#[derive(Clone, Copy, Debug)]
enum Loaded {
    Imm(f32),
    Tile(T, Bcast),
}

fn classify(cx: &Cx, v: ValueId, out_shape: &[u64]) -> R<Src> {
    if let Some(&s) = cx.plan.splats.get(&v)
        && shape_of(cx.m, v).is_some_and(|s| s.len() <= out_shape.len())
    {
        return Ok(Src::Imm(s as f32));
    }
    let view = cx.view(v)?;
    let b = view.broadcast_to(out_shape).ok_or_else(|| {
        cx.err(format!(
            "operand shape {:?} does not broadcast to {:?}",
            view.shape, out_shape
        ))
    })?;
    Ok(classify_view(b, out_shape))
}

/// How an operand view already broadcast to `out_shape` is loaded.
fn classify_view(b: View, out_shape: &[u64]) -> Src {
    let r = out_shape.len();
    if r == 0 {
        return Src::Full(b);
    }
    let last = out_shape[r - 1];
    let outer_zero = b.strides[..r - 1]
        .iter()
        .zip(&out_shape[..r - 1])
        .all(|(&s, &n)| s == 0 || n == 1);
    let out_rows: u64 = out_shape[..r - 1].iter().product();
    if outer_zero && out_rows > 1 && (b.strides[r - 1] != 0 || last == 1) {
        return Src::Row(b);
    }
    if last > 1 && b.strides[r - 1] == 0 {
        return Src::Col(b);
    }
    Src::Full(b)
}

/// Loads the row of a `Row` operand once.
fn load_row(cx: &mut Cx, b: &View) -> R<T> {
    let r = b.shape.len();
    let cols = b.shape[r - 1];
    let mut row = b.clone();
    for i in 0..r - 1 {
        row.shape[i] = 1;
    }
    let addr = cx.alloc(Mem::Sram, cols * b.dt.size(), "broadcast row")?;
    cx.load_everywhere(&row, addr, cols);
    Ok(T::sram(addr, cols, b.dt))
}

// ---------- lowering entry ----------

fn attr_f(m: &Module, op: OpId, name: &str) -> Option<f64> {
    m.attr(op, name).and_then(Attribute::as_f64)
}

fn attr_i(m: &Module, op: OpId, name: &str) -> Option<i64> {
    m.attr(op, name).and_then(Attribute::as_int)
}

/// An op whose results are all views of its first operand's memory (no code, no writes).
fn view_only(plan: &Plan, m: &Module, op: OpId) -> bool {
    let d = m.op(op);
    let outs = &d.results;
    outs.iter().all(|r| {
        plan.views.get(r).is_some_and(|v| {
            d.operands
                .first()
                .and_then(|i| plan.views.get(i))
                .is_some_and(|iv| !plan.owned.contains_key(r) && v.dt == iv.dt)
        })
    }) && !outs.is_empty()
        && d.name != "graph.constant"
}

/// Normalizes an axis against a rank.
fn axis(cx: &Cx, a: i64, rank: usize) -> R<usize> {
    let r = rank as i64;
    let x = if a < 0 { a + r } else { a };
    if x < 0 || x >= r.max(1) {
        return Err(cx.err(format!("axis {a} out of range for rank {rank}")));
    }
    Ok(x as usize)
}

/// Lowers one op whose operands and results have planned memory.
pub fn lower_op(cx: &mut Cx, op: OpId) -> R<()> {
    let m = cx.m;
    let d = m.op(op);
    let name = d.name.as_str();
    let ins = d.operands.clone();
    let outs = d.results.clone();
    // View ops whose results are views cost nothing.
    if view_only(cx.plan, m, op) {
        return Ok(());
    }
    if name == "graph.constant" {
        return Ok(());
    }
    if outs.first().is_some_and(|r| cx.recompute.contains_key(r)) {
        // Every consumer computes this result itself (see `recomputed_producers`).
        return Ok(());
    }
    if name == "graph.kv_append" {
        return super::attention::kv_append(cx, op, &ins);
    }
    if name == "graph.kv_mask" {
        return super::attention::kv_mask(cx, op, &ins);
    }
    // Zero-size tensors are empty everywhere: an op whose results hold no element computes
    // nothing. One that makes elements out of an empty operand (a sum or max over an empty axis)
    // would need a fill this backend does not emit, so it is refused rather than computed from
    // memory nobody wrote (`canonicalize` drops empty concat parts; the `tile` pass refuses a
    // matmul over k = 0 first).
    let empty = |v: &ValueId| shape_of(m, *v).is_some_and(|s| s.contains(&0));
    if !outs.is_empty() && outs.iter().all(empty) {
        return Ok(());
    }
    if let Some(v) = ins.iter().find(|v| empty(v)) {
        return Err(cx.err(format!(
            "unsupported: `{name}` makes a non-empty result from the zero-size operand {:?}",
            shape_of(m, *v).unwrap_or_default()
        )));
    }
    let out = *outs
        .first()
        .ok_or_else(|| cx.err(format!("`{name}` has no result")))?;
    let ov = cx.view(out)?;
    let unary = |k: Un| Ew::Unary(k);
    let ew = match name {
        "graph.add" => Some(Ew::Binary(Bin::Add)),
        "graph.sub" => Some(Ew::Binary(Bin::Sub)),
        "graph.mul" => Some(Ew::Binary(Bin::Mul)),
        "graph.div" => Some(Ew::Binary(Bin::Div)),
        "graph.max" if ins.len() == 2 => Some(Ew::Binary(Bin::Max)),
        "graph.min" if ins.len() == 2 => Some(Ew::Binary(Bin::Min)),
        "graph.max" | "graph.min" if ins.len() == 1 => Some(unary(Un::Copy)),
        "graph.equal" => Some(Ew::Binary(Bin::Eq)),
        "graph.less_or_equal" => Some(Ew::Binary(Bin::Le)),
        "graph.greater_or_equal" => Some(Ew::Ge),
        "graph.and" => Some(Ew::Binary(Bin::Mul)),
        "graph.pow" => Some(Ew::Pow),
        "graph.sqrt" => Some(unary(Un::Sqrt)),
        "graph.log" => Some(unary(Un::Log)),
        "graph.abs" => Some(unary(Un::Abs)),
        "graph.not" => Some(Ew::Not),
        "graph.or" => Some(Ew::Binary(Bin::Max)),
        "graph.less" => Some(Ew::Binary(Bin::Lt)),
        "graph.greater" => Some(Ew::Gt),
        "graph.reciprocal" => Some(unary(Un::Recip)),
        "graph.exp" => Some(unary(Un::Exp)),
        "graph.erf" => Some(unary(Un::Erf)),
        "graph.tanh" => Some(unary(Un::Tanh)),
        "graph.sigmoid" => Some(unary(Un::Sigmoid)),
        "graph.neg" => Some(unary(Un::Neg)),
        "graph.cos" => Some(unary(Un::Cos)),
        "graph.sin" => Some(unary(Un::Sin)),
        "graph.relu" => Some(Ew::Relu),
        "graph.gelu" => Some(Ew::Gelu(
            m.attr(op, "approximate").and_then(Attribute::as_str) == Some("tanh"),
        )),
        "graph.cast" | "graph.identity" => Some(unary(Un::Copy)),
        "graph.where" => Some(Ew::Where),
        "graph.clip" => Some(Ew::Clip),
        _ => None,
    };
    if let Some(k) = ew {
        let int_out = elem_of(m, out).is_some_and(|e| e.is_int() && e != crate::ir::ScalarType::I1);
        if name == "graph.div" && int_out {
            return Err(cx.err(
                "integer Div is not supported: the vector unit divides in f32 and rounds to nearest, ONNX truncates",
            ));
        }
        if name == "graph.cast" && int_out && elem_of(m, ins[0]).is_some_and(|e| e.is_float()) {
            return Err(cx.err(
                "float-to-integer Cast is not supported: the vector unit rounds to nearest, ONNX truncates",
            ));
        }
        if name == "graph.cast"
            && m.attr(op, "saturate").and_then(Attribute::as_int) == Some(0)
            && elem_of(m, out) == Some(crate::ir::ScalarType::F8E4M3FN)
        {
            return Err(cx.err(
                "non-saturating Cast to f8E4M3FN is not supported (the vector unit saturates)",
            ));
        }
        if name == "graph.cast" {
            let src_int = elem_of(m, ins[0]).is_some_and(|e| e.is_int());
            let dst_bool = elem_of(m, out) == Some(crate::ir::ScalarType::I1);
            if dst_bool && !src_int {
                return elementwise(cx, Ew::NotZero, &ins[..1], &ov);
            }
        }
        if k == Ew::Clip {
            let (lo, hi) = (
                super::plan::operand_at(m, op, 1),
                super::plan::operand_at(m, op, 2),
            );
            let mut v = vec![ins[0]];
            v.extend(lo);
            v.extend(hi);
            return elementwise(cx, Ew::ClipBounds(lo.is_some(), hi.is_some()), &v, &ov);
        }
        let n = match k {
            Ew::Clip | Ew::Where => ins.len(),
            Ew::Unary(_) | Ew::Relu | Ew::Gelu(_) | Ew::Not => 1,
            _ => 2,
        };
        return elementwise(cx, k, &ins[..n.min(ins.len())], &ov);
    }
    match name {
        "graph.reshape" | "graph.squeeze" | "graph.unsqueeze" | "graph.flatten"
        | "graph.transpose" | "graph.expand" | "graph.slice" | "graph.split" => {
            // A view op whose result could not stay a view: materialize.
            let iv = cx.view(ins[0])?;
            if matches!(
                name,
                "graph.reshape" | "graph.squeeze" | "graph.unsqueeze" | "graph.flatten"
            ) {
                // Same elements in the same order: copy them densely into the result's buffer.
                let dst = View::dense(ov.addr as u64, ov.dt, &iv.shape);
                return copy(cx, &iv, &dst);
            }
            let derived = super::plan::view_results(m, op, &iv).ok_or_else(|| {
                cx.err(format!(
                    "`{name}` with parameters given at run time is not supported"
                ))
            })?;
            for (r, src) in outs.iter().zip(derived) {
                let dst = cx.view(*r)?;
                let dst = dst
                    .reshape(&src.shape)
                    .ok_or_else(|| cx.err("output buffer is not dense"))?;
                copy(cx, &src, &dst)?;
            }
            Ok(())
        }
        "graph.concat" => {
            let ax = axis(cx, attr_i(m, op, "axis").unwrap_or(0), ov.shape.len())?;
            let mut start = 0;
            for &x in &ins {
                let xv = cx.view(x)?;
                let len = xv.shape[ax];
                let dst = ov.slice(ax, start, 1, len);
                copy(cx, &xv, &dst)?;
                start += len;
                if cx.e.cores() > 1 {
                    cx.e.barrier();
                }
            }
            Ok(())
        }
        "graph.softmax" | "graph.log_softmax" => {
            let rank = ov.shape.len();
            let ax = axis(cx, attr_i(m, op, "axis").unwrap_or(-1), rank)?;
            let xv = cx.view(ins[0])?;
            let (xv, ov) = last_axis(&xv, &ov, ax);
            row_kernel(
                cx,
                RowK::Softmax(name == "graph.log_softmax"),
                &xv,
                &ov,
                &[],
            )
        }
        "graph.rms_norm" | "graph.norm" if outs[1..].iter().any(|&r| !m.uses(r).is_empty()) => {
            Err(cx.err("the Mean / InvStdDev outputs of a normalization are not supported"))
        }
        "graph.layer_norm" | "graph.rms_norm" | "graph.norm" => {
            let rank = ov.shape.len();
            let ax = axis(cx, attr_i(m, op, "axis").unwrap_or(-1), rank)?;
            let eps = attr_f(m, op, "epsilon").unwrap_or(1e-5) as f32;
            let rms = name == "graph.rms_norm"
                || m.attr(op, "kind").and_then(Attribute::as_str) == Some("rms");
            let xv = cx.view(ins[0])?;
            let inner = rank - ax;
            let mut params = vec![];
            for &p in &ins[1..] {
                params.push(cx.view(p)?);
            }
            let k = RowK::Norm { eps, rms };
            // LayerNormalization's optional Mean and InvStdDev results, one value per row.
            let mut stats = vec![];
            for &r in &outs[1..] {
                if m.uses(r).is_empty() {
                    stats.push(None);
                    continue;
                }
                let v = cx.view(r)?;
                let mut sh = xv.shape[..rank - inner].to_vec();
                sh.push(1);
                stats
                    .push(Some(v.reshape(&sh).ok_or_else(|| {
                        cx.err("normalization statistics are not dense")
                    })?));
            }
            row_kernel_stats(cx, k, &xv, &ov, &params, inner, &stats)
        }
        "graph.reduce_mean" | "graph.reduce_sum" | "graph.reduce_max" | "graph.reduce_l2" => {
            reduce(cx, op, &ins, &ov)
        }
        "graph.matmul" => matmul(cx, op, ins[0], ins[1], None, None, Act::None, &ov),
        "graph.gemm" => gemm(cx, op, &ins, &ov),
        "graph.matmul_epilogue" => {
            let act = match m.attr(op, "activation").and_then(Attribute::as_str) {
                Some("relu") => Act::Relu,
                Some("gelu") => Act::Gelu(false),
                Some("gelu_tanh") => Act::Gelu(true),
                Some("silu") => Act::Silu,
                _ => Act::None,
            };
            // Operands (a, b, bias?, residual?): the residual, when `residual = true`, is last.
            let residual = m.attr(op, "residual").and_then(Attribute::as_bool) == Some(true);
            let res = if residual { ins.last().copied() } else { None };
            let bias = ins[2..ins.len() - usize::from(residual)].first().copied();
            matmul(cx, op, ins[0], ins[1], bias, res, act, &ov)
        }
        "graph.gather" => gather(cx, op, ins[0], ins[1], &ov),
        "graph.trilu" => trilu(cx, op, &ov),
        "graph.fused_attention" => super::attention::attention(cx, op, &ins, &ov),
        "graph.rope" => {
            let rd = m.attr(op, "rotary_dim").and_then(Attribute::as_int);
            rope(cx, &ins, &ov, rd)
        }
        "graph.constant_of_shape" => {
            let v =
                cx.m.attr(op, "value")
                    .and_then(Attribute::as_dense)
                    .map(|d| d.ty.clone());
            let fill = match v {
                Some(_) => {
                    let a = m.attr(op, "value").and_then(Attribute::as_dense);
                    a.and_then(|d| m.blobs.get(d.blob).bytes.clone())
                        .map(|b| match elem_of(m, out) {
                            Some(crate::ir::ScalarType::F32) if b.len() >= 4 => {
                                f32::from_le_bytes([b[0], b[1], b[2], b[3]])
                            }
                            Some(crate::ir::ScalarType::I64) if b.len() >= 8 => {
                                i64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])) as f32
                            }
                            _ => b.first().copied().unwrap_or(0) as f32,
                        })
                        .unwrap_or(0.0)
                }
                None => 0.0,
            };
            elementwise(cx, Ew::Fill(fill), &[], &ov)
        }
        _ => Err(cx.err(format!("`{name}` is not supported by the LLMPU backend"))),
    }
}

/// Views of `x` and `out` with axis `ax` moved last.
fn last_axis(x: &View, out: &View, ax: usize) -> (View, View) {
    let r = x.shape.len();
    if ax + 1 == r {
        return (x.clone(), out.clone());
    }
    let mut perm: Vec<usize> = (0..r).filter(|&i| i != ax).collect();
    perm.push(ax);
    (x.permute(&perm), out.permute(&perm))
}

// ---------- elementwise ----------

/// Elementwise computations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ew {
    Unary(Un),
    Binary(Bin),
    Ge,
    Gt,
    Not,
    Pow,
    Relu,
    Gelu(bool),
    Where,
    Clip,
    /// Clip with (lower, upper) bounds present; the operands are `x` then the present bounds.
    ClipBounds(bool, bool),
    NotZero,
    Fill(f32),
    /// `a·b + c·d` (`true`) or `a·b − c·d` (`false`) of four operands (`graph.rope`).
    MulSum(bool),
}

/// Work tiles of one buffer set.
struct Set {
    ins: Vec<u64>,
    w: u64,
    t1: u64,
    t2: u64,
    o: u64,
}

fn elementwise(cx: &mut Cx, k: Ew, inputs: &[ValueId], ov: &View) -> R<()> {
    let srcs: Vec<Src> = inputs
        .iter()
        .map(|&v| classify(cx, v, &ov.shape))
        .collect::<R<_>>()?;
    elementwise_srcs(cx, k, &srcs, ov)
}

/// `graph.rope`: `out[..., :h] = x₁·cos₁ − x₂·sin₁`, `out[..., h:] = x₂·cos₂ + x₁·sin₂` (halves of
/// the rotated part of the last axis: all of it, or its first `rotary_dim`), each half one
/// elementwise pass over strided views of `x`, `cos`, `sin`; a partial rotary's other elements are
/// copied through.
fn rope(cx: &mut Cx, ins: &[ValueId], out: &View, rotary_dim: Option<i64>) -> R<()> {
    let r = out.shape.len();
    let d = *out
        .shape
        .last()
        .ok_or_else(|| cx.err("rope needs rank >= 1"))?;
    let rd = rotary_dim.map_or(d, |x| x.max(0) as u64);
    if !rd.is_multiple_of(2) || rd == 0 || rd > d || ins.len() != 3 {
        return Err(cx.err("rope needs an even rotated width and (x, cos, sin)"));
    }
    let h = rd / 2;
    let ov = out.slice(r - 1, 0, 1, rd);
    let mut full = vec![];
    for (i, &v) in ins.iter().enumerate() {
        let view = cx.view(v)?;
        let view = if i == 0 {
            view.slice(r - 1, 0, 1, rd)
        } else {
            view
        };
        full.push(view.broadcast_to(&ov.shape).ok_or_else(|| {
            cx.err(format!(
                "operand shape {:?} does not broadcast to {:?}",
                view.shape, ov.shape
            ))
        })?);
    }
    if rd < d {
        let x = cx.view(ins[0])?;
        let pass = |v: &View| v.slice(r - 1, rd, 1, d - rd);
        let src = classify_view(pass(&x), &pass(out).shape);
        elementwise_srcs(cx, Ew::Unary(Un::Copy), &[src], &pass(out))?;
        if cx.e.cores() > 1 {
            cx.e.barrier();
        }
    }
    let ov = &ov;
    let half = |v: &View, i: u64| v.slice(r - 1, i * h, 1, h);
    let src = |v: &View, i: u64| classify_view(half(v, i), &half(ov, i).shape);
    let (x, c, s) = (&full[0], &full[1], &full[2]);
    let first = [src(x, 0), src(c, 0), src(x, 1), src(s, 0)];
    elementwise_srcs(cx, Ew::MulSum(false), &first, &half(ov, 0))?;
    if cx.e.cores() > 1 {
        cx.e.barrier();
    }
    let second = [src(x, 1), src(c, 1), src(x, 0), src(s, 1)];
    elementwise_srcs(cx, Ew::MulSum(true), &second, &half(ov, 1))
}

fn elementwise_srcs(cx: &mut Cx, k: Ew, srcs: &[Src], ov: &View) -> R<()> {
    let merged = merge_outer(&split_rows::src_views(srcs, ov));
    if merged[0].shape.len() < ov.shape.len() {
        let srcs = split_rows::rechunk_srcs(srcs, &merged[1..], &merged[0].shape);
        return elementwise_srcs(cx, k, &srcs, &merged[0]);
    }
    let shape = ov.shape.clone();
    let r = shape.len();
    let cols = if r == 0 { 1 } else { shape[r - 1] };
    // Bytes per row: inputs in their types, three f32 temporaries, the output.
    let per_row: u64 = srcs
        .iter()
        .map(|s| match s {
            Src::Full(v) => cols * v.dt.size(),
            Src::Col(v) => v.dt.size(),
            _ => 0,
        })
        .sum::<u64>()
        + cols * (12 + ov.dt.size());
    let once: u64 = srcs
        .iter()
        .map(|s| match s {
            Src::Row(v) => (cols * v.dt.size()).div_ceil(64) * 64,
            _ => 0,
        })
        .sum();
    let free = cx.e.free(Mem::Sram).saturating_sub(once);
    if r > 0 && cols > 1 && (free < 2 * per_row + 64 || cols > split_rows::MAX_COLS) {
        return split_rows::elementwise_chunked(cx, k, srcs, ov);
    }
    let budget_rows =
        row_tile(u64::MAX, 2 * per_row + 64, &cx.e.target).min(free / (2 * per_row + 64));
    if budget_rows == 0 {
        return Err(cx.err(format!("one row of {cols} elements does not fit in SRAM")));
    }
    let mut rows_loaded = vec![];
    for s in srcs {
        rows_loaded.push(match s {
            Src::Row(b) => Some(load_row(cx, b)?),
            _ => None,
        });
    }
    let inner = if r == 0 { 0 } else { 1 };
    let total_rows = if r == 0 { 1 } else { ov.elems() / cols.max(1) };
    let tiles = row_tiles(&shape, inner, cx.spread(total_rows, budget_rows));
    let max_rows = tiles.iter().map(|t| t.rows).max().unwrap_or(1);
    let nsets = if tiles.len() > cx.e.cores() { 2 } else { 1 };
    let mut sets = vec![];
    for _ in 0..nsets {
        let mut ins = vec![];
        for s in srcs {
            let bytes = match s {
                Src::Full(v) => max_rows * cols * v.dt.size(),
                Src::Col(v) => max_rows * v.dt.size(),
                _ => 0,
            };
            ins.push(if bytes > 0 {
                cx.alloc(Mem::Sram, bytes, "operand tile")?
            } else {
                0
            });
        }
        let f32b = max_rows * cols * 4;
        let w = cx.alloc(Mem::Sram, f32b, "work tile")?;
        let t1 = cx.alloc(Mem::Sram, f32b, "work tile")?;
        let t2 = cx.alloc(Mem::Sram, f32b, "work tile")?;
        let o = cx.alloc(Mem::Sram, max_rows * cols * ov.dt.size(), "output tile")?;
        sets.push(Set { ins, w, t1, t2, o });
    }
    let out_shape_view = if r == 0 {
        View {
            addr: ov.addr,
            dt: ov.dt,
            shape: vec![1],
            strides: vec![1],
        }
    } else {
        ov.clone()
    };
    // Rounds of one tile per core roll into a loop while the tiles are full and advance along
    // one dimension.
    let cores = cx.e.cores();
    let uniform_rounds = uniform_rounds(&tiles, max_rows, cores);
    let mut sweep = Sweep::new(cx.e, uniform_rounds, tiles.len().div_ceil(cores));
    while let Some((round, _)) = sweep.next(cx.e) {
        for (ti, t) in tiles.iter().enumerate().skip(round * cores).take(cores) {
            let par = cx.on_core(ti);
            let set = &sets[par.min(sets.len() - 1)];
            let rows = t.rows;
            let mut loaded = vec![];
            for (i, s) in srcs.iter().enumerate() {
                loaded.push(match s {
                    Src::Imm(x) => Loaded::Imm(*x),
                    Src::Full(v) => {
                        let v = if r == 0 {
                            View {
                                addr: v.addr,
                                dt: v.dt,
                                shape: vec![1],
                                strides: vec![1],
                            }
                        } else {
                            v.clone()
                        };
                        let tv = tile_view(&v, t);
                        cx.e.move_view(true, &tv, set.ins[i], cols);
                        Loaded::Tile(T::sram(set.ins[i], cols, v.dt), Bcast::Full)
                    }
                    Src::Col(v) => {
                        let mut c = v.clone();
                        let last = c.shape.len() - 1;
                        c.shape[last] = 1;
                        let tv = tile_view(&c, t);
                        cx.e.move_view(true, &tv, set.ins[i], 1);
                        Loaded::Tile(T::sram(set.ins[i], 1, v.dt), Bcast::Col)
                    }
                    Src::Row(_) => {
                        let row = rows_loaded[i].unwrap_or(T::sram(0, cols, DType::F32));
                        Loaded::Tile(row, Bcast::Row)
                    }
                });
            }
            let w = T::sram(set.w, cols, DType::F32);
            let t1 = T::sram(set.t1, cols, DType::F32);
            let t2 = T::sram(set.t2, cols, DType::F32);
            compute(cx.e, k, &loaded, w, t1, t2, rows, cols)?;
            let ot = T::sram(set.o, cols, ov.dt);
            let res = if ov.dt == DType::F32 {
                w
            } else {
                cx.e.vun(Un::Copy, ot, w, Bcast::Full, rows, cols);
                ot
            };
            let tv = tile_view(&out_shape_view, t);
            cx.e.move_view(false, &tv, res.addr, cols);
        }
    }
    Ok(())
}

/// Makes `x` a full f32 tile in `tmp` (copying broadcasts, filling immediates).
fn full(e: &mut Emitter, x: Loaded, tmp: T, rows: u64, cols: u64) -> T {
    match x {
        Loaded::Imm(v) => {
            e.vfill(tmp, v, rows, cols);
            tmp
        }
        Loaded::Tile(t, Bcast::Full) => t,
        Loaded::Tile(t, b) => {
            e.vun(Un::Copy, tmp, t, b, rows, cols);
            tmp
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn compute(
    e: &mut Emitter,
    k: Ew,
    x: &[Loaded],
    w: T,
    t1: T,
    t2: T,
    rows: u64,
    cols: u64,
) -> Result<(), BackendError> {
    let bad = |m: &str| BackendError {
        loc: "elementwise".into(),
        message: m.into(),
    };
    let unary_src = |x: Loaded, e: &mut Emitter| match x {
        Loaded::Tile(t, b) => (t, b),
        Loaded::Imm(v) => {
            e.vfill(t1, v, rows, cols);
            (t1, Bcast::Full)
        }
    };
    match k {
        Ew::Fill(v) => e.vfill(w, v, rows, cols),
        Ew::Unary(u) => {
            let (a, b) = unary_src(x[0], e);
            e.vun(u, w, a, b, rows, cols);
        }
        Ew::Not => {
            let a = full(e, x[0], t1, rows, cols);
            e.vimm(Imm::Rsub, w, a, 1.0, rows, cols);
        }
        Ew::NotZero => {
            let (a, b) = unary_src(x[0], e);
            e.vun(Un::Abs, w, a, b, rows, cols);
            e.vfill(t2, 0.0, rows, cols);
            e.vbin(Bin::Lt, w, t2, w, Bcast::Full, rows, cols);
        }
        Ew::Relu => {
            let (a, b) = unary_src(x[0], e);
            let a = if b == Bcast::Full {
                a
            } else {
                e.vun(Un::Copy, t1, a, b, rows, cols);
                t1
            };
            e.vimm(Imm::Max, w, a, 0.0, rows, cols);
        }
        Ew::Gelu(tanh) => {
            let a = full(e, x[0], t1, rows, cols);
            if tanh {
                // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
                e.vimm(Imm::Pow, t2, a, 3.0, rows, cols);
                e.vimm(Imm::Mul, t2, t2, 0.044715, rows, cols);
                e.vbin(Bin::Add, t2, t2, a, Bcast::Full, rows, cols);
                e.vimm(Imm::Mul, t2, t2, 0.797_884_6, rows, cols);
                e.vun(Un::Tanh, t2, t2, Bcast::Full, rows, cols);
            } else {
                // 0.5·x·(1 + erf(x/√2))
                e.vimm(Imm::Mul, t2, a, std::f32::consts::FRAC_1_SQRT_2, rows, cols);
                e.vun(Un::Erf, t2, t2, Bcast::Full, rows, cols);
            }
            e.vimm(Imm::Add, t2, t2, 1.0, rows, cols);
            e.vbin(Bin::Mul, w, a, t2, Bcast::Full, rows, cols);
            e.vimm(Imm::Mul, w, w, 0.5, rows, cols);
        }
        Ew::Pow => match x[1] {
            Loaded::Imm(p) => {
                let a = full(e, x[0], t1, rows, cols);
                e.vimm(Imm::Pow, w, a, p, rows, cols);
            }
            other => {
                // a^b = exp(b · ln a) for a > 0.
                let a = full(e, x[0], t1, rows, cols);
                let b = full(e, other, t2, rows, cols);
                e.vun(Un::Log, w, a, Bcast::Full, rows, cols);
                e.vbin(Bin::Mul, w, w, b, Bcast::Full, rows, cols);
                e.vun(Un::Exp, w, w, Bcast::Full, rows, cols);
            }
        },
        Ew::Binary(_) | Ew::Ge | Ew::Gt if x.len() == 2 => {
            let (op, a, b) = match k {
                Ew::Binary(op) => (op, x[0], x[1]),
                Ew::Gt => (Bin::Lt, x[1], x[0]),
                _ => (Bin::Le, x[1], x[0]),
            };
            let commutative = matches!(op, Bin::Add | Bin::Mul | Bin::Max | Bin::Min | Bin::Eq);
            match (a, b) {
                (a, Loaded::Imm(v)) if !matches!(op, Bin::Eq | Bin::Lt | Bin::Le) => {
                    let a = full(e, a, t1, rows, cols);
                    let k = match op {
                        Bin::Add => Imm::Add,
                        Bin::Sub => Imm::Sub,
                        Bin::Mul => Imm::Mul,
                        Bin::Div => Imm::Div,
                        Bin::Max => Imm::Max,
                        _ => Imm::Min,
                    };
                    e.vimm(k, w, a, v, rows, cols);
                }
                (Loaded::Imm(v), b) if op == Bin::Sub => {
                    let b = full(e, b, t1, rows, cols);
                    e.vimm(Imm::Rsub, w, b, v, rows, cols);
                }
                (Loaded::Imm(v), b) if commutative && op != Bin::Eq => {
                    let b = full(e, b, t1, rows, cols);
                    let k = match op {
                        Bin::Add => Imm::Add,
                        Bin::Mul => Imm::Mul,
                        Bin::Max => Imm::Max,
                        _ => Imm::Min,
                    };
                    e.vimm(k, w, b, v, rows, cols);
                }
                (a, b) => {
                    let (a, b) = match (a, b) {
                        (Loaded::Tile(_, ba), Loaded::Tile(_, Bcast::Full))
                            if ba != Bcast::Full && commutative =>
                        {
                            (b, a)
                        }
                        _ => (a, b),
                    };
                    let a = full(e, a, t1, rows, cols);
                    let (b, bc) = match b {
                        Loaded::Tile(t, bc) => (t, bc),
                        imm => (full(e, imm, t2, rows, cols), Bcast::Full),
                    };
                    e.vbin(op, w, a, b, bc, rows, cols);
                }
            }
        }
        Ew::MulSum(plus) if x.len() == 4 => {
            let a = full(e, x[0], t1, rows, cols);
            let b = full(e, x[1], t2, rows, cols);
            e.vbin(Bin::Mul, w, a, b, Bcast::Full, rows, cols);
            let c = full(e, x[2], t1, rows, cols);
            let d = full(e, x[3], t2, rows, cols);
            e.vbin(Bin::Mul, t1, c, d, Bcast::Full, rows, cols);
            let op = if plus { Bin::Add } else { Bin::Sub };
            e.vbin(op, w, w, t1, Bcast::Full, rows, cols);
        }
        Ew::Where if x.len() == 3 => {
            let c = full(e, x[0], w, rows, cols);
            let a = full(e, x[1], t1, rows, cols);
            let b = full(e, x[2], t2, rows, cols);
            e.vsel(w, c, a, b, rows, cols);
        }
        Ew::Clip | Ew::ClipBounds(..) if !x.is_empty() => {
            let a = full(e, x[0], t1, rows, cols);
            e.vun(Un::Copy, w, a, Bcast::Full, rows, cols);
            let (lo, hi) = match k {
                Ew::ClipBounds(l, h) => (l, h),
                _ => (x.len() > 1, x.len() > 2),
            };
            let hi_at = if lo { 2 } else { 1 };
            let bounds = [(lo, 1, Bin::Max, Imm::Max), (hi, hi_at, Bin::Min, Imm::Min)];
            for (present, i, bin, imm) in bounds {
                if !present {
                    continue;
                }
                match x.get(i) {
                    None => {}
                    Some(Loaded::Imm(v)) => e.vimm(imm, w, w, *v, rows, cols),
                    Some(&other) => {
                        let b = full(e, other, t2, rows, cols);
                        e.vbin(bin, w, w, b, Bcast::Full, rows, cols);
                    }
                }
            }
        }
        _ => return Err(bad("elementwise op with the wrong number of operands")),
    }
    Ok(())
}

// ---------- copy ----------

/// Copies view `src` into view `dst` (same shape), converting the element type if needed.
pub fn copy(cx: &mut Cx, src: &View, dst: &View) -> R<()> {
    let shape = src.shape.clone();
    let (src, dst) = if shape.is_empty() {
        let f = |v: &View| View {
            addr: v.addr,
            dt: v.dt,
            shape: vec![1],
            strides: vec![1],
        };
        (f(src), f(dst))
    } else {
        (src.clone(), dst.clone())
    };
    let r = src.shape.len();
    let cols = src.shape[r - 1];
    let per_row = cols * (src.dt.size() + dst.dt.size());
    let max_rows = (cx.e.free(Mem::Sram) / (2 * per_row + 64)).min(row_tile(
        u64::MAX,
        2 * per_row,
        &cx.e.target,
    ));
    if max_rows == 0 || cols > split_rows::MAX_COLS {
        let w = split_rows::chunk_width(
            cols,
            8,
            src.dt.size() + dst.dt.size(),
            2,
            cx.e.free(Mem::Sram),
        );
        if w == 0 {
            return Err(cx.err(format!("a row of {cols} elements does not fit in SRAM")));
        }
        return split_rows::for_chunks(cx, &[src, dst], w, |cx, v| copy(cx, &v[0], &v[1]));
    }
    let total_rows = src.elems() / cols.max(1);
    let tiles = row_tiles(&src.shape, 1, cx.spread(total_rows, max_rows));
    let mr = tiles.iter().map(|t| t.rows).max().unwrap_or(1);
    let nbufs = if tiles.len() > cx.e.cores() { 2 } else { 1 };
    let mut bufs = vec![];
    for _ in 0..nbufs {
        let a = cx.alloc(Mem::Sram, mr * cols * src.dt.size(), "copy tile")?;
        let b = if src.dt != dst.dt {
            cx.alloc(Mem::Sram, mr * cols * dst.dt.size(), "copy tile")?
        } else {
            a
        };
        bufs.push((a, b));
    }
    for (i, t) in tiles.iter().enumerate() {
        let par = cx.on_core(i);
        let (a, b) = bufs[par.min(bufs.len() - 1)];
        cx.e.move_view(true, &tile_view(&src, t), a, cols);
        if src.dt != dst.dt {
            cx.e.vun(
                Un::Copy,
                T::sram(b, cols, dst.dt),
                T::sram(a, cols, src.dt),
                Bcast::Full,
                t.rows,
                cols,
            );
        }
        cx.e.move_view(false, &tile_view(&dst, t), b, cols);
    }
    Ok(())
}

// ---------- row kernels ----------

/// Row-wise computations over the trailing dims.
#[derive(Clone, Copy, Debug)]
enum RowK {
    Softmax(bool),
    Norm { eps: f32, rms: bool },
}

fn row_kernel(cx: &mut Cx, k: RowK, x: &View, o: &View, params: &[View]) -> R<()> {
    row_kernel_inner(cx, k, x, o, params, 1)
}

fn row_kernel_inner(
    cx: &mut Cx,
    k: RowK,
    x: &View,
    o: &View,
    params: &[View],
    inner: usize,
) -> R<()> {
    row_kernel_stats(cx, k, x, o, params, inner, &[])
}

/// Stores a normalization's per-row mean (`src[0]`) and inverse standard deviation (`src[1]`,
/// f32 `rows × 1` tiles) of tile `t` to the requested statistics outputs.
fn store_stats(cx: &mut Cx, stats: &[Option<View>], t: &Tile, src: [T; 2], rows: u64) {
    for (stat, src) in stats.iter().zip(src) {
        let Some(sv) = stat else { continue };
        let src = if sv.dt == DType::F32 {
            src
        } else {
            // Converted in place: the narrower value fits the f32 slot it came from.
            let c = T::sram(src.addr, 1, sv.dt);
            cx.e.vun(Un::Copy, c, src, Bcast::Full, rows, 1);
            c
        };
        cx.e.move_view(false, &tile_view(sv, t), src.addr, 1);
    }
}

/// `x`, `o` and the row statistics with their outer dims merged (see [`merge_outer`]), if any
/// merge.
fn merge_rows(
    x: &View,
    o: &View,
    stats: &[Option<View>],
) -> Option<(View, View, Vec<Option<View>>)> {
    let mut vs = vec![x.clone(), o.clone()];
    vs.extend(stats.iter().flatten().cloned());
    let m = merge_outer(&vs);
    if m[0].shape.len() == x.shape.len() {
        return None;
    }
    let mut it = m[2..].iter().cloned();
    let st = stats
        .iter()
        .map(|s| s.as_ref().and_then(|_| it.next()))
        .collect();
    Some((m[0].clone(), m[1].clone(), st))
}

/// Row kernel that also stores the per-row mean and inverse standard deviation (`stats[0]`,
/// `stats[1]`, each `[rows…, 1]`) of a normalization when asked.
fn row_kernel_stats(
    cx: &mut Cx,
    k: RowK,
    x: &View,
    o: &View,
    params: &[View],
    inner: usize,
    stats: &[Option<View>],
) -> R<()> {
    let r = x.shape.len();
    let inner = inner.clamp(1, r.max(1));
    if inner == 1
        && let Some((x, o, stats)) = merge_rows(x, o, stats)
    {
        return row_kernel_stats(cx, k, &x, &o, params, 1, &stats);
    }
    let cols: u64 = x.shape[r - inner..].iter().product();
    let per_row = cols * (x.dt.size() + 4 + o.dt.size()) + 16;
    let param_bytes: u64 = params
        .iter()
        .map(|p| (cols * p.dt.size()).div_ceil(64) * 64 + (cols * 4).div_ceil(64) * 64)
        .sum();
    if cx.e.free(Mem::Sram).saturating_sub(param_bytes) < 2 * per_row + 64
        || cols > split_rows::MAX_COLS
    {
        let mut sh = x.shape[..r - inner].to_vec();
        sh.push(cols);
        let not_dense = || {
            cx.err(format!(
                "a row of {cols} elements does not fit in SRAM and its dims are not dense"
            ))
        };
        let xm = x.reshape(&sh).ok_or_else(not_dense)?;
        let om = o.reshape(&sh).ok_or_else(not_dense)?;
        let mut pm = vec![];
        for p in params {
            pm.push(
                p.reshape(&[cols])
                    .or_else(|| p.broadcast_to(&x.shape[r - inner..])?.reshape(&[cols]))
                    .ok_or_else(not_dense)?,
            );
        }
        return split_rows::row_kernel_chunked(cx, k, &xm, &om, &pm, stats);
    }
    // Parameters (scale, bias) broadcast over the row: loaded once, converted to f32.
    let mut prm = vec![];
    for p in params {
        let pv = p
            .reshape(&[cols])
            .or_else(|| p.broadcast_to(&x.shape[r - inner..]))
            .ok_or_else(|| cx.err("norm parameter shape does not match the normalized dims"))?;
        let raw = cx.alloc(Mem::Sram, cols * pv.dt.size(), "norm parameter")?;
        let f = cx.alloc(Mem::Sram, cols * 4, "norm parameter")?;
        // A parameter broadcast over several normalized dims lands densely: its SRAM row stride
        // is its own last dim (with `cols` the rows of a scalar scale landed `cols` apart and the
        // copy below read bytes nobody wrote — found by the `check` fuzz target).
        let ld = match pv.shape.len() {
            0 | 1 => cols,
            _ => *pv.shape.last().unwrap_or(&cols),
        };
        for c in 0..cx.e.cores() {
            cx.e.core(c);
            cx.e.move_view(true, &pv, raw, ld);
            cx.e.vun(
                Un::Copy,
                T::sram(f, cols, DType::F32),
                T::sram(raw, cols, pv.dt),
                Bcast::Full,
                1,
                cols,
            );
        }
        prm.push(T::sram(f, cols, DType::F32));
    }
    let max_rows = (cx.e.free(Mem::Sram) / (2 * per_row + 64)).min(row_tile(
        u64::MAX,
        2 * per_row,
        &cx.e.target,
    ));
    if max_rows == 0 {
        return Err(cx.err(format!(
            "a row of {cols} elements does not fit in SRAM ({} bytes free)",
            cx.e.free(Mem::Sram)
        )));
    }
    let total_rows = x.elems() / cols.max(1);
    let tiles = row_tiles(&x.shape, inner, cx.spread(total_rows, max_rows));
    let mr = tiles.iter().map(|t| t.rows).max().unwrap_or(1);
    let nsets = if tiles.len() > cx.e.cores() { 2 } else { 1 };
    let mut sets = vec![];
    for _ in 0..nsets {
        let a = cx.alloc(Mem::Sram, mr * cols * x.dt.size(), "row tile")?;
        let w = cx.alloc(Mem::Sram, mr * cols * 4, "row tile")?;
        let s1 = cx.alloc(Mem::Sram, mr * 4, "row statistics")?;
        let s2 = cx.alloc(Mem::Sram, mr * 4, "row statistics")?;
        let ot = cx.alloc(Mem::Sram, mr * cols * o.dt.size(), "row tile")?;
        sets.push((a, w, s1, s2, ot));
    }
    // Rounds of one tile per core roll like the elementwise kernels'.
    let cores = cx.e.cores();
    let uniform_rounds = uniform_rounds(&tiles, mr, cores);
    let mut sweep = Sweep::new(cx.e, uniform_rounds, tiles.len().div_ceil(cores));
    while let Some((round, _)) = sweep.next(cx.e) {
        for (i, t) in tiles.iter().enumerate().skip(round * cores).take(cores) {
            let par = cx.on_core(i);
            let (a, w, s1, s2, ot) = sets[par.min(sets.len() - 1)];
            let rows = t.rows;
            // The row (the trailing `inner` dims) lands densely: the view's last dim is the SRAM
            // row stride, so a multi-dim row is `cols` contiguous elements.
            let last = *x.shape.last().unwrap_or(&1);
            cx.e.move_view(true, &tile_view(x, t), a, last);
            let (a, w) = (T::sram(a, cols, x.dt), T::sram(w, cols, DType::F32));
            let (s1, s2) = (T::sram(s1, 1, DType::F32), T::sram(s2, 1, DType::F32));
            let e = &mut *cx.e;
            match k {
                RowK::Softmax(log) => {
                    e.vred(Red::Max, s1, a, rows, cols);
                    e.vbin(Bin::Sub, w, a, s1, Bcast::Col, rows, cols);
                    if log {
                        let ex = T::sram(ot, cols, DType::F32);
                        // log_softmax = (x - max) - ln Σ exp(x - max); use the output tile as scratch
                        // only when it is f32 wide enough, else recompute per row.
                        if o.dt == DType::F32 {
                            e.vun(Un::Exp, ex, w, Bcast::Full, rows, cols);
                            e.vred(Red::Sum, s2, ex, rows, cols);
                        } else {
                            e.vun(Un::Exp, w, w, Bcast::Full, rows, cols);
                            e.vred(Red::Sum, s2, w, rows, cols);
                            e.vbin(Bin::Sub, w, a, s1, Bcast::Col, rows, cols);
                        }
                        e.vun(Un::Log, s2, s2, Bcast::Full, rows, 1);
                        e.vbin(Bin::Sub, w, w, s2, Bcast::Col, rows, cols);
                    } else {
                        e.vun(Un::Exp, w, w, Bcast::Full, rows, cols);
                        e.vred(Red::Sum, s2, w, rows, cols);
                        e.vun(Un::Recip, s2, s2, Bcast::Full, rows, 1);
                        e.vbin(Bin::Mul, w, w, s2, Bcast::Col, rows, cols);
                    }
                }
                RowK::Norm { eps, rms } => norm_rows(e, w, a, (s1, s2), &prm, eps, rms, rows, cols),
            }
            let res = if o.dt == DType::F32 {
                w
            } else {
                let ot = T::sram(ot, cols, o.dt);
                e.vun(Un::Copy, ot, w, Bcast::Full, rows, cols);
                ot
            };
            cx.e.move_view(
                false,
                &tile_view(o, t),
                res.addr,
                *o.shape.last().unwrap_or(&1),
            );
            store_stats(cx, stats, t, [s1, s2], rows);
        }
    }
    Ok(())
}

fn reduce(cx: &mut Cx, op: OpId, ins: &[ValueId], ov: &View) -> R<()> {
    let m = cx.m;
    let name = m.op(op).name.clone();
    let x = cx.view(ins[0])?;
    let rank = x.shape.len();
    let axes: Vec<i64> = match ins.get(1) {
        Some(&a) => super::plan::const_ints(m, a)
            .ok_or_else(|| cx.err("reduction axes given at run time are not supported"))?,
        None => m
            .attr(op, "axes")
            .and_then(Attribute::as_i64_list)
            .unwrap_or_default(),
    };
    let noop = attr_i(m, op, "noop_with_empty_axes").unwrap_or(0) != 0;
    let mut axes: Vec<usize> = if axes.is_empty() {
        if noop { vec![] } else { (0..rank).collect() }
    } else {
        axes.iter()
            .map(|&a| axis(cx, a, rank))
            .collect::<R<Vec<_>>>()?
    };
    axes.sort();
    axes.dedup();
    if axes.is_empty() {
        return copy(cx, &x, &ov.reshape(&x.shape).unwrap_or(ov.clone()));
    }
    let keep: Vec<usize> = (0..rank).filter(|i| !axes.contains(i)).collect();
    let mut perm = keep.clone();
    perm.extend(&axes);
    let xp = x.permute(&perm);
    let cols: u64 = axes.iter().map(|&a| x.shape[a]).product();
    let mut oshape: Vec<u64> = keep.iter().map(|&a| x.shape[a]).collect();
    oshape.push(1);
    let ovp = ov
        .reshape(&oshape)
        .ok_or_else(|| cx.err("reduction output is not dense"))?;
    let inner = axes.len();
    let per_row = cols * (x.dt.size() + 4) + 32;
    let max_rows = (cx.e.free(Mem::Sram) / (2 * per_row + 64)).max(1);
    let total_rows = x.elems() / cols.max(1);
    let max_rows = cx.spread(total_rows, max_rows.min(65535));
    let tiles = row_tiles(&xp.shape, inner, max_rows);
    let mr = tiles.iter().map(|t| t.rows).max().unwrap_or(1);
    let a = cx.alloc(Mem::Sram, mr * cols * x.dt.size(), "reduce tile")?;
    let w = cx.alloc(Mem::Sram, mr * cols * 4, "reduce tile")?;
    let s = cx.alloc(Mem::Sram, mr * 4, "reduce result")?;
    let so = cx.alloc(Mem::Sram, mr * ov.dt.size().max(4), "reduce result")?;
    // Output tiles iterate the kept dims (+ the trailing 1).
    let otiles = row_tiles(&ovp.shape, 1, max_rows);
    if otiles.len() != tiles.len() {
        return Err(cx.err("internal: reduction tiling mismatch"));
    }
    for (i, (t, ot)) in tiles.iter().zip(&otiles).enumerate() {
        cx.on_core(i);
        let rows = t.rows;
        cx.e.move_view(true, &tile_view(&xp, t), a, *xp.shape.last().unwrap_or(&1));
        let (at, wt, st) = (
            T::sram(a, cols, x.dt),
            T::sram(w, cols, DType::F32),
            T::sram(s, 1, DType::F32),
        );
        let e = &mut *cx.e;
        match name.as_str() {
            "graph.reduce_max" => e.vred(Red::Max, st, at, rows, cols),
            "graph.reduce_l2" => {
                e.vbin(Bin::Mul, wt, at, at, Bcast::Full, rows, cols);
                e.vred(Red::Sum, st, wt, rows, cols);
                e.vun(Un::Sqrt, st, st, Bcast::Full, rows, 1);
            }
            _ => {
                e.vred(Red::Sum, st, at, rows, cols);
                if name == "graph.reduce_mean" {
                    e.vimm(Imm::Div, st, st, cols as f32, rows, 1);
                }
            }
        }
        let res = if ov.dt == DType::F32 {
            st
        } else {
            let o = T::sram(so, 1, ov.dt);
            e.vun(Un::Copy, o, st, Bcast::Full, rows, 1);
            o
        };
        cx.e.move_view(false, &tile_view(&ovp, ot), res.addr, 1);
    }
    Ok(())
}

// ---------- matmul ----------

/// Epilogue activations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    None,
    Relu,
    Gelu(bool),
    Silu,
}

/// The matrix engine's input type for this precision and operand types.
fn mxu_dtype(cx: &Cx, a: DType, b: DType) -> R<DType> {
    if !a.is_float() || !b.is_float() {
        return Err(cx.err(format!(
            "matmul of {a} × {b} operands is not supported (floating-point only)"
        )));
    }
    Ok(match cx.o.precision {
        Precision::Fp32 => DType::F32,
        Precision::Bf16 => DType::BF16,
    })
}

/// Reads the tile attribute `[tm, tk, tn]` of a matmul, or chooses it.
pub fn matmul_tile_attr(m: &Module, op: OpId) -> Option<(u64, u64, u64)> {
    let v = m.attr(op, "tile").and_then(Attribute::as_i64_list)?;
    (v.len() == 3 && v.iter().all(|&x| x > 0)).then(|| (v[0] as u64, v[1] as u64, v[2] as u64))
}

fn batch_index(v: &View, lead: &[u64]) -> View {
    let mut x = v.clone();
    let nb = lead.len();
    for (i, &ix) in lead.iter().enumerate() {
        x.addr += ix as i64 * x.strides[i] * x.dt.size() as i64;
    }
    x.shape = x.shape[nb..].to_vec();
    x.strides = x.strides[nb..].to_vec();
    x
}

/// Loads `v` ([rows, cols] view) into SRAM as `dt` (converting through a staging tile if needed).
fn load_as(cx: &mut Cx, v: &View, dst: u64, stage: u64, dt: DType) {
    let cols = v.shape[1];
    if v.dt == dt {
        cx.e.move_view(true, v, dst, cols);
    } else {
        cx.e.move_view(true, v, stage, cols);
        cx.e.vun(
            Un::Copy,
            T::sram(dst, cols, dt),
            T::sram(stage, cols, v.dt),
            Bcast::Full,
            v.shape[0],
            cols,
        );
    }
}

/// LayerNorm (`rms` false) or RMSNorm of `rows` rows of `a` into the f32 tile `w`: statistics in
/// `s1` (mean) and `s2` (variance or mean square, then its reciprocal root), then the optional
/// scale `prm[0]` and bias `prm[1]` broadcast along the rows. The variance squares the centred
/// values in `w` and recomputes them, so no scratch beyond `w` is needed.
#[allow(clippy::too_many_arguments)]
fn norm_rows(
    e: &mut Emitter,
    w: T,
    a: T,
    (s1, s2): (T, T),
    prm: &[T],
    eps: f32,
    rms: bool,
    rows: u64,
    cols: u64,
) {
    let n = cols as f32;
    if rms {
        e.vbin(Bin::Mul, w, a, a, Bcast::Full, rows, cols);
        e.vred(Red::Sum, s2, w, rows, cols);
        e.vun(Un::Copy, w, a, Bcast::Full, rows, cols);
    } else {
        e.vred(Red::Sum, s1, a, rows, cols);
        e.vimm(Imm::Div, s1, s1, n, rows, 1);
        e.vbin(Bin::Sub, w, a, s1, Bcast::Col, rows, cols);
        e.vbin(Bin::Mul, w, w, w, Bcast::Full, rows, cols);
        e.vred(Red::Sum, s2, w, rows, cols);
        e.vbin(Bin::Sub, w, a, s1, Bcast::Col, rows, cols);
    }
    e.vimm(Imm::Div, s2, s2, n, rows, 1);
    e.vimm(Imm::Add, s2, s2, eps, rows, 1);
    e.vun(Un::Rsqrt, s2, s2, Bcast::Full, rows, 1);
    e.vbin(Bin::Mul, w, w, s2, Bcast::Col, rows, cols);
    if let Some(&sc) = prm.first() {
        e.vbin(Bin::Mul, w, w, sc, Bcast::Row, rows, cols);
    }
    if let Some(&b) = prm.get(1) {
        e.vbin(Bin::Add, w, w, b, Bcast::Row, rows, cols);
    }
}

#[allow(clippy::too_many_arguments)]
fn matmul(
    cx: &mut Cx,
    op: OpId,
    a: ValueId,
    b: ValueId,
    bias: Option<ValueId>,
    residual: Option<ValueId>,
    act: Act,
    ov: &View,
) -> R<()> {
    let mut av = cx.view(a)?;
    let mut bv = cx.view(b)?;
    let bias = match bias {
        Some(x) => Some(cx.view(x)?),
        None => None,
    };
    // The residual as a view of the output's shape (broadcast where it is smaller).
    let mut rv = match residual {
        Some(x) => Some(
            cx.view(x)?
                .broadcast_to(&ov.shape)
                .ok_or_else(|| cx.err("matmul residual does not broadcast to the output"))?,
        ),
        None => None,
    };
    let mut ov = ov.clone();
    if let Some((a2, b2, o2)) = fold_batch_rows(&av, &bv, &ov) {
        // The residual folds with the output, or nothing does (a broadcast residual may not).
        let r2 = match &rv {
            Some(r) => r.as_2d().map(Some),
            None => Some(None),
        };
        if let Some(r2) = r2 {
            (av, bv, ov, rv) = (a2, b2, o2, r2);
        }
    }
    let producer = cx.recompute.get(&a).copied();
    let ep = EpilogueOps {
        bias,
        residual: rv,
        act,
        alpha: 1.0,
    };
    matmul_views(cx, op, av, bv, ep, &ov, true, producer)
}

/// Whether a matmul of result shape `out` whose B operand has shape `b` multiplies every batch
/// row by the same matrix (B is 2-D or has only size-1 leading dims): then the leading dims of A
/// and the output fold into the rows — `[B, S, K] · [K, N]` is one `[B·S, K] · [K, N]` matmul,
/// reading the weights once instead of once per batch entry.
pub fn shared_rhs(b: &[u64], out: &[u64]) -> bool {
    out.len() > 2 && b.len() >= 2 && b[..b.len() - 2].iter().all(|&d| d == 1)
}

/// Rows of a matmul of result shape `out` as the lowering multiplies them: all leading dims when
/// the B operand (shape `b`) is shared ([`shared_rhs`]), else the second-to-last dim.
pub fn matmul_rows(b: &[u64], out: &[u64]) -> u64 {
    if shared_rhs(b, out) {
        out[..out.len() - 1].iter().product()
    } else if out.len() >= 2 {
        out[out.len() - 2]
    } else {
        1
    }
}

/// `[batch…, M, K] · [1…, K, N] → [batch…, M, N]` as `[batch·M, K] · [K, N] → [batch·M, N]`, when
/// B is shared and A and the output collapse to 2-D views (their rows equally strided).
fn fold_batch_rows(av: &View, bv: &View, ov: &View) -> Option<(View, View, View)> {
    if !shared_rhs(&bv.shape, &ov.shape) || av.shape.len() != ov.shape.len() {
        return None;
    }
    let nb = bv.shape.len();
    let b2 = bv.reshape(&bv.shape[nb - 2..])?;
    Some((av.as_2d()?, b2, ov.as_2d()?))
}

#[allow(clippy::too_many_arguments)]
fn matmul_views(
    cx: &mut Cx,
    op: OpId,
    mut av: View,
    mut bv: View,
    eops: EpilogueOps,
    ov: &View,
    defer: bool,
    producer: Option<OpId>,
) -> R<()> {
    let EpilogueOps {
        bias,
        residual,
        act,
        alpha,
    } = eops;
    // 1-D operands as in NumPy.
    let mut oshape = ov.shape.clone();
    if av.shape.len() == 1 {
        av = av.reshape(&[1, av.shape[0]]).unwrap_or(av);
        oshape.insert(
            oshape
                .len()
                .saturating_sub(if bv.shape.len() == 1 { 0 } else { 1 }),
            1,
        );
    }
    if bv.shape.len() == 1 {
        bv = View {
            shape: vec![bv.shape[0], 1],
            strides: vec![bv.strides[0], 0],
            ..bv
        };
        oshape.push(1);
    }
    let ovr = ov
        .reshape(&oshape)
        .ok_or_else(|| cx.err("matmul output is not dense"))?;
    let rvr = match &residual {
        Some(r) => Some(
            r.reshape(&oshape)
                .ok_or_else(|| cx.err("matmul residual does not take the output's shape"))?,
        ),
        None => None,
    };
    let r = oshape.len();
    let (mm, nn) = (oshape[r - 2], oshape[r - 1]);
    let kk = av.shape[av.shape.len() - 1];
    let batch = &oshape[..r - 2];
    let bshape = |v: &View, rows: u64, cols: u64| {
        let mut s = batch.to_vec();
        s.push(rows);
        s.push(cols);
        v.broadcast_to(&s)
    };
    let av = bshape(&av, mm, kk).ok_or_else(|| cx.err("matmul A does not broadcast"))?;
    let bv = bshape(&bv, kk, nn).ok_or_else(|| cx.err("matmul B does not broadcast"))?;
    let dt = mxu_dtype(cx, av.dt, bv.dt)?;
    let (tm, tk, tn) = match matmul_tile_attr(cx.m, op) {
        Some(t) => t,
        None => {
            let (a, b, c, _) = matmul_tiles(mm, kk, nn, dt, &cx.e.target);
            (a, b, c)
        }
    };
    let (tm, tk, tn) = (tm.min(mm).max(1), tk.min(kk).max(1), tn.min(nn).max(1));
    // Bias broadcast over rows ([N] or [1, N]); anything else is added elementwise afterwards.
    let bias_row = match bias {
        Some(v) => {
            let row = v.reshape(&[nn]).or_else(|| v.broadcast_to(&[nn]));
            Some(row.ok_or_else(|| cx.err("bias must broadcast along the output rows"))?)
        }
        None => None,
    };
    let ssz = dt.size();
    let mut need = 2 * (tm * tk + tk * tn) * ssz + 2 * tm * tn * (4 + ov.dt.size()) + tm * tn * 8;
    if av.dt != dt {
        need += tm * tk * av.dt.size();
    }
    if bv.dt != dt {
        need += tk * tn * bv.dt.size();
    }
    if let Some(r) = &rvr {
        need += 2 * tm * tn * r.dt.size();
    }
    if need > sram_budget(&cx.e.target).max(cx.e.free(Mem::Sram)) {
        return Err(cx.err(format!(
            "matmul tiles {tm}×{tk}×{tn} need {need} bytes of SRAM"
        )));
    }
    // The whole bias row stays in SRAM as f32 unless it would take more than an eighth of it
    // (a 12288-wide row on a 192 KiB core): then each epilogue loads its tile's slice.
    let bias_row_bytes = bias_row.as_ref().map_or(0, |r| nn * (r.dt.size() + 4));
    let bias_per_tile = bias_row_bytes * 8 > cx.e.target.sram.size_bytes;
    let bias_t = match &bias_row {
        Some(row) if !bias_per_tile => Some((
            cx.alloc(Mem::Sram, nn * row.dt.size(), "bias")?,
            cx.alloc(Mem::Sram, nn * 4, "bias")?,
        )),
        _ => None,
    };
    let mut bias_tiles = vec![];
    if let Some(row) = bias_row.as_ref().filter(|_| bias_per_tile) {
        for _ in 0..2 {
            bias_tiles.push((
                cx.alloc(Mem::Sram, tn * row.dt.size(), "bias tile")?,
                cx.alloc(Mem::Sram, tn * 4, "bias tile")?,
            ));
        }
    }
    // The bias row into SRAM as f32, on the current core.
    let load_bias = |cx: &mut Cx| {
        if let (Some(row), Some((raw, f))) = (&bias_row, bias_t) {
            cx.e.move_view(true, row, raw, nn);
            cx.e.vun(
                Un::Copy,
                T::sram(f, nn, DType::F32),
                T::sram(raw, nn, row.dt),
                Bcast::Full,
                1,
                nn,
            );
        }
    };
    let mut abuf = vec![];
    let mut bbuf = vec![];
    let mut accb = vec![];
    let mut outb = vec![];
    for _ in 0..2 {
        accb.push(cx.alloc(Mem::Acc, tm * tn * 4, "matmul accumulator")?);
        outb.push(cx.alloc(Mem::Sram, tm * tn * 4, "matmul output tile")?);
    }
    // A/B tiles: up to six buffers when SRAM allows, so that loads run far enough ahead of the
    // matrix engine to hide the HBM latency (decode-shaped steps are short), else double.
    let ab = (tm * tk + tk * tn) * ssz;
    let rest = 4 * tm * tn * 4;
    let nab = (2..=6u64)
        .rev()
        .find(|&n| cx.e.free(Mem::Sram) > (n + 1) * ab + rest)
        .unwrap_or(2) as usize;
    for _ in 0..nab {
        abuf.push(cx.alloc(Mem::Sram, tm * tk * ssz, "matmul A tile")?);
        bbuf.push(cx.alloc(Mem::Sram, tk * tn * ssz, "matmul B tile")?);
    }
    let ocv = [
        cx.alloc(Mem::Sram, tm * tn * ov.dt.size(), "matmul output tile")?,
        cx.alloc(Mem::Sram, tm * tn * ov.dt.size(), "matmul output tile")?,
    ];
    // Residual tiles, double-buffered like the output: each loads after its tile's steps, a tile
    // ahead of the epilogue that adds it.
    let rbuf = match &rvr {
        Some(r) => vec![
            cx.alloc(Mem::Sram, tm * tn * r.dt.size(), "matmul residual tile")?,
            cx.alloc(Mem::Sram, tm * tn * r.dt.size(), "matmul residual tile")?,
        ],
        None => vec![],
    };
    let mut pending: Vec<Option<Epilogue>> = (0..cx.e.cores()).map(|_| None).collect();
    let tmp = cx.alloc(Mem::Sram, tm * tn * 4, "epilogue scratch")?;
    let stage_a = if av.dt != dt {
        cx.alloc(Mem::Sram, tm * tk * av.dt.size(), "conversion stage")?
    } else {
        0
    };
    let stage_b = if bv.dt != dt {
        cx.alloc(Mem::Sram, tk * tn * bv.dt.size(), "conversion stage")?
    } else {
        0
    };
    let nb: u64 = batch.iter().product();
    let cores = cx.e.cores();
    // One row block of A that fits in SRAM stays resident: each core loads it once instead of
    // once per tile (decode-shaped matmuls stream only the weights), and several cores share one
    // read of it (`SharedA`) even when its K extent is one tile.
    // A recomputed producer's result exists only in SRAM: always resident.
    let produce = match producer {
        Some(p) if nb == 1 && mm <= tm && av.dt == dt => Some(Producer::new(cx, p, mm, kk)?),
        Some(_) => {
            return Err(cx.err(format!(
                "internal: recomputed A operand is not one row block (batches {nb}, rows {mm}, tile rows {tm}, {} for {dt})",
                av.dt
            )));
        }
        None => None,
    };
    // Work units spread over the cores: whole row blocks (so every core writes its own rows) when
    // there are at least as many as cores, else single output tiles (decode-shaped matmuls: the
    // weight columns stream through every core).
    /// (batch, m0, rows, n0, cols) of one output tile.
    type OutTile = (u64, u64, u64, u64, u64);
    let mut units: Vec<Vec<OutTile>> = vec![];
    let row_units = cores > 1 && mm.div_ceil(tm) >= cores as u64;
    for bi in 0..nb {
        let ms: Vec<u64> = (0..mm).step_by(tm as usize).collect();
        let ns: Vec<u64> = (0..nn).step_by(tn as usize).collect();
        if row_units {
            for &m0 in &ms {
                units.push(
                    ns.iter()
                        .map(|&n0| (bi, m0, tm.min(mm - m0), n0, tn.min(nn - n0)))
                        .collect(),
                );
            }
        } else {
            for &n0 in &ns {
                for &m0 in &ms {
                    units.push(vec![(bi, m0, tm.min(mm - m0), n0, tn.min(nn - n0))]);
                }
            }
        }
    }
    let resident = if produce.is_some() {
        Some(cx.alloc(Mem::Sram, mm * kk * ssz, "matmul resident A")?)
    } else if nb == 1 && mm <= tm && (kk > tk || (cores > 1 && nn > tn)) && av.dt == dt {
        let bytes = mm * kk * ssz;
        if cx.e.free(Mem::Sram) > bytes + 4096 {
            Some(cx.alloc(Mem::Sram, bytes, "matmul resident A")?)
        } else {
            None
        }
    } else {
        None
    };
    // Single tiles of several row blocks: a core whose consecutive tiles share one keeps it cached: the
    // block's `tk`-wide chunks (each a contiguous `tm × tk` tile, so a pass waits only for its own
    // chunk) load with the first tile's steps and serve the following tiles. Used when blocks are
    // reused by two tiles or more on average; two buffers when a core changes blocks, so the next
    // block loads while the last one's tiles compute.
    let block_loads: usize = (0..cores)
        .map(|c| {
            let mut last = None;
            let mut n = 0usize;
            for tiles in units.iter().skip(c).step_by(cores) {
                for &(bi, m0, ..) in tiles {
                    if last != Some((bi, m0)) {
                        n += 1;
                        last = Some((bi, m0));
                    }
                }
            }
            n
        })
        .sum();
    let ntiles: usize = units.iter().map(|u| u.len()).sum();
    let cache: Vec<u64> = if !row_units
        && resident.is_none()
        && kk > tk
        && av.dt == dt
        && 2 * block_loads <= ntiles
    {
        let nbuf = if block_loads > cores.min(ntiles) {
            2
        } else {
            1
        };
        let bytes = tm * kk.div_ceil(tk) * tk * ssz;
        if cx.e.free(Mem::Sram) > nbuf * bytes + 4096 {
            let mut v = vec![];
            for _ in 0..nbuf {
                v.push(cx.alloc(Mem::Sram, bytes, "matmul cached A row block")?);
            }
            v
        } else {
            vec![]
        }
    } else {
        vec![]
    };
    // Per core: the cached row block (batch, first row), its buffer, and how many of its chunks
    // are loaded.
    let mut a_cur: Vec<Option<(u64, u64)>> = vec![None; cores];
    let mut a_slot = vec![0usize; cores];
    let mut a_have = vec![0usize; cores];
    // The chunk of step `j` of a tile of row block `key` on core `c`: its SRAM address, and
    // whether it must be loaded first (advancing the cache).
    let mut chunk = |c: usize, key: (u64, u64), j: usize, load: bool| -> (u64, bool) {
        if a_cur[c] != Some(key) {
            if a_cur[c].is_some() {
                a_slot[c] = (a_slot[c] + 1) % cache.len();
            }
            a_cur[c] = Some(key);
            a_have[c] = 0;
        }
        let addr = cache[a_slot[c]] + j as u64 * tm * tk * ssz;
        if j >= a_have[c] && load {
            a_have[c] = j + 1;
            (addr, true)
        } else {
            (addr, false)
        }
    };
    // The operands of batch `bi`.
    let operands = |bi: u64| {
        let mut lead = vec![0; batch.len()];
        let mut rem = bi;
        for i in (0..batch.len()).rev() {
            lead[i] = rem % batch[i];
            rem /= batch[i];
        }
        (
            batch_index(&av, &lead),
            batch_index(&bv, &lead),
            batch_index(&ovr, &lead),
        )
    };
    // Prologue, per core: the loads of its first steps whose operands no core has written since
    // the last barrier (weights), then the previous matmul's deferred epilogue, then the sync
    // point. Whatever barrier orders this op after the previous ones goes there, so the weights
    // stream while the previous op drains.
    let prev = cx.tail.take();
    let tail_writes: Vec<(u64, u64)> = prev
        .iter()
        .flat_map(|t| t.eps.iter().flatten())
        .map(|ep| view_range(&ep.dst))
        .collect();
    let independent = |e: &Emitter, v: &View| {
        let (lo, hi) = view_range(v);
        e.hbm_unwritten(lo, hi) && tail_writes.iter().all(|&(l, h)| h <= lo || hi <= l)
    };
    let a_free = match &produce {
        // A recomputed A is free when the producer's operands are.
        Some(p) => p
            .ins
            .iter()
            .chain(p.params.iter().map(|x| &x.0))
            .all(|v| independent(cx.e, v)),
        None => independent(cx.e, &av),
    };
    let b_free = independent(cx.e, &bv);
    // A bias no op since the last barrier writes (a weight) loads first, in the prologue; one
    // the previous ops produce (the previous matmul's deferred tail among them) loads after the
    // sync point, in the body.
    let bias_free = bias_row.as_ref().is_none_or(|b| independent(cx.e, b));
    if bias_free {
        for c in 0..cx.e.cores() {
            cx.e.core(c);
            load_bias(cx);
        }
    }
    // The prologue moves about what the HBM channel can carry while the previous op drains (four
    // HBM latencies, shared by the cores): more would only hold up a barrier after it.
    let t = &cx.e.target;
    let pro_budget =
        (4 * t.hbm.latency_cycles) as f64 * t.hbm.bandwidth_gb_s / t.clock_ghz / cores as f64;
    let step_bytes = |wm: u64, wk: u64, wn: u64| {
        let a = if resident.is_none() && a_free {
            wm * wk * av.dt.size()
        } else {
            0
        };
        let b = if b_free { wk * wn * bv.dt.size() } else { 0 };
        (a + b) as f64
    };
    let mut a_loaded = vec![false; cores];
    // Every core with work needs all of a resident A: it crosses HBM once, each such core
    // multicasting a slice to all of them — before the weights when nothing orders A after
    // other ops, else after the barrier that does.
    let workers = units.len().min(cores);
    let shared_a = match resident {
        Some(ra) if produce.is_none() && nb == 1 && workers > 1 => {
            SharedA::plan(&operands(0).0, ra, mm, kk, workers)
        }
        _ => None,
    };
    if let Some(sa) = &shared_a
        && a_free
        && cx.e.can_multicast(sa.lo, sa.hi)
    {
        sa.emit(cx);
        a_loaded.iter_mut().take(workers).for_each(|l| *l = true);
    }
    // Steps per core whose A / B tiles the prologue loaded.
    let mut pre_a = vec![0usize; cores];
    let mut pre_b = vec![0usize; cores];
    for c in 0..cores {
        cx.e.core(c);
        let mut i = 0usize;
        let mut bytes = 0f64;
        let mut first_block = None;
        'steps: for tiles in units.iter().skip(c).step_by(cores) {
            for &(bi, m0, wm, n0, wn) in tiles {
                let (a2, b2, _) = operands(bi);
                // With a cache, the prologue stops before a tile of another row block.
                if !cache.is_empty() && *first_block.get_or_insert((bi, m0)) != (bi, m0) {
                    break 'steps;
                }
                if let Some(ra) = resident
                    && a_free
                    && !a_loaded[c]
                {
                    match &produce {
                        Some(p) => p.emit(cx, ra, dt),
                        None => cx.e.move_view(true, &a2, ra, kk),
                    }
                    a_loaded[c] = true;
                }
                let mut k0 = 0;
                while k0 < kk {
                    let wk = tk.min(kk - k0);
                    bytes += step_bytes(wm, wk, wn);
                    if i >= nab || !(a_free || b_free) || (i > 0 && bytes > pro_budget) {
                        break 'steps;
                    }
                    if resident.is_none() && a_free {
                        let at = a2.slice(0, m0, 1, wm).slice(1, k0, 1, wk);
                        if cache.is_empty() {
                            load_as(cx, &at, abuf[i], stage_a, dt);
                        } else if let (addr, true) = chunk(c, (bi, m0), (k0 / tk) as usize, true) {
                            load_as(cx, &at, addr, stage_a, dt);
                        }
                        pre_a[c] += 1;
                    }
                    if b_free {
                        let bt = b2.slice(0, k0, 1, wk).slice(1, n0, 1, wn);
                        load_as(cx, &bt, bbuf[i], stage_b, dt);
                        pre_b[c] += 1;
                    }
                    i += 1;
                    k0 += wk;
                }
            }
        }
        if let Some(ep) = prev
            .as_ref()
            .and_then(|t| t.eps.get(c))
            .and_then(|e| e.as_ref())
        {
            let loc = prev.as_ref().map(|t| t.loc.clone()).unwrap_or_default();
            cx.e.set_loc(&loc);
            epilogue(cx, ep);
            cx.e.set_loc(&super::loc_string(&cx.loc));
        }
        cx.e.sync_point();
        if !bias_free {
            load_bias(cx);
        }
    }
    if let Some(sa) = &shared_a
        && !a_free
    {
        cx.e.barrier();
        sa.emit(cx);
        a_loaded.iter_mut().take(workers).for_each(|l| *l = true);
    }
    cx.e.strict_alloc(false);
    // The epilogue of output tile `otile` of core `c` (its residual, if any, already loaded).
    let make_ep = |(bi, m0, wm, n0, wn): OutTile, otile: usize| {
        let (_, _, o2) = operands(bi);
        Epilogue {
            acc: T {
                mem: Mem::Acc,
                addr: accb[otile % 2],
                ld: wn,
                dt: DType::F32,
            },
            o32: T::sram(outb[otile % 2], wn, DType::F32),
            oc: T::sram(ocv[otile % 2], wn, ov.dt),
            tmp: T::sram(tmp, wn, DType::F32),
            bias: bias_t
                .map(|(_, f)| T::sram(f + n0 * 4, nn, DType::F32))
                .or_else(|| {
                    let (_, f) = bias_tiles.get(otile % 2)?;
                    Some(T::sram(*f, wn, DType::F32))
                }),
            bias_load: bias_row.as_ref().and_then(|row| {
                let (raw, _) = bias_tiles.get(otile % 2)?;
                Some((row.slice(0, n0, 1, wn), T::sram(*raw, wn, row.dt)))
            }),
            residual: rvr.as_ref().map(|r| T::sram(rbuf[otile % 2], wn, r.dt)),
            alpha,
            act,
            rows: wm,
            cols: wn,
            dst: o2.slice(0, m0, 1, wm).slice(1, n0, 1, wn),
        }
    };
    let ksteps = kk.div_ceil(tk) as usize;
    // Rounds (one work unit per core) roll into a loop while they are uniform: every unit of the
    // same shape at addresses advancing by a constant (one batch, full row blocks, or the full
    // column tiles of one row block), no cached A row blocks.
    let full = |t: &OutTile| t.2 == tm && t.4 == tn;
    let uniform_units = if nb != 1 || !cache.is_empty() {
        0
    } else if row_units {
        units
            .iter()
            .take_while(|u| u.iter().all(|t| t.2 == tm))
            .count()
    } else if mm <= tm {
        units.iter().take_while(|u| full(&u[0])).count()
    } else {
        0
    };
    let uniform_rounds = uniform_units / cores;
    let rounds = units.len().div_ceil(cores);
    let mut steps = vec![0usize; cores];
    let mut otiles = vec![0usize; cores];
    let mut rounds_sweep = Sweep::new(cx.e, uniform_rounds, rounds);
    while let Some((round, skipped)) = rounds_sweep.next(cx.e) {
        if skipped > 0 {
            // The loop stands for the skipped rounds: advance what they would have advanced.
            for c in 0..cores {
                let tiles = units[c].len();
                otiles[c] += skipped * tiles;
                steps[c] += skipped * tiles * ksteps;
                let last = units[(round - 1) * cores + c][tiles - 1];
                pending[c] = Some(make_ep(last, otiles[c] - 1));
            }
        }
        let first = round * cores;
        for (u, tiles) in units.iter().enumerate().skip(first).take(cores) {
            cx.on_core(u);
            let c = u % cores;
            // The tiles of a row block roll like the rounds when they are uniform.
            let uniform_tiles = tiles.iter().take_while(|t| full(t)).count();
            let mut tile_sweep = Sweep::new(cx.e, uniform_tiles, tiles.len());
            while let Some((ti, skipped)) = tile_sweep.next(cx.e) {
                if skipped > 0 {
                    otiles[c] += skipped;
                    steps[c] += skipped * ksteps;
                    pending[c] = Some(make_ep(tiles[ti - 1], otiles[c] - 1));
                }
                let (bi, m0, wm, n0, wn) = tiles[ti];
                let (a2, b2, _) = operands(bi);
                let otile = otiles[c];
                if let Some(ra) = resident
                    && !a_loaded[c]
                {
                    match &produce {
                        Some(p) => p.emit(cx, ra, dt),
                        None => cx.e.move_view(true, &a2, ra, kk),
                    }
                    a_loaded[c] = true;
                }
                let acc = T {
                    mem: Mem::Acc,
                    addr: accb[otile % 2],
                    ld: wn,
                    dt: DType::F32,
                };
                // The K steps: full ones roll (period: the A/B ring), a partial last one after.
                let full_steps = (kk / tk) as usize;
                let step0 = steps[c];
                let mut step_sweep = Sweep::new(cx.e, full_steps, ksteps);
                while let Some((j, _)) = step_sweep.next(cx.e) {
                    let k0 = j as u64 * tk;
                    let wk = tk.min(kk - k0);
                    let i = step0 + j;
                    let s = i % nab;
                    let at = a2.slice(0, m0, 1, wm).slice(1, k0, 1, wk);
                    let bt = b2.slice(0, k0, 1, wk).slice(1, n0, 1, wn);
                    let a_op = match resident {
                        Some(ra) => T::sram(ra + (m0 * kk + k0) * ssz, kk, dt),
                        None if !cache.is_empty() => {
                            let (addr, load) =
                                chunk(c, (bi, m0), (k0 / tk) as usize, i >= pre_a[c]);
                            if load {
                                load_as(cx, &at, addr, stage_a, dt);
                            }
                            T::sram(addr, wk, dt)
                        }
                        None => {
                            if i >= pre_a[c] {
                                load_as(cx, &at, abuf[s], stage_a, dt);
                            }
                            T::sram(abuf[s], wk, dt)
                        }
                    };
                    if i >= pre_b[c] {
                        load_as(cx, &bt, bbuf[s], stage_b, dt);
                    }
                    cx.e.matmul(acc, a_op, T::sram(bbuf[s], wn, dt), wm, wk, wn, k0 > 0);
                }
                steps[c] = step0 + ksteps;
                if let Some(r) = &rvr {
                    let mut lead = vec![0; batch.len()];
                    let mut rem = bi;
                    for i in (0..batch.len()).rev() {
                        lead[i] = rem % batch[i];
                        rem /= batch[i];
                    }
                    let rt = batch_index(r, &lead)
                        .slice(0, m0, 1, wm)
                        .slice(1, n0, 1, wn);
                    cx.e.move_view(true, &rt, rbuf[otile % 2], wn);
                }
                let ep = make_ep((bi, m0, wm, n0, wn), otile);
                // The previous tile's epilogue goes after this tile's loads, so its store never
                // holds up the DMA queue in front of them.
                if let Some(prev) = pending[c].replace(ep) {
                    epilogue(cx, &prev);
                }
                otiles[c] += 1;
            }
        }
    }
    // The last epilogues: deferred into the next op (after its first loads) when this kernel's
    // buffers are small enough to stay reserved meanwhile, else emitted now.
    let small = cx.e.used(Mem::Sram) <= cx.e.target.sram.size_bytes / 8
        && cx.e.used(Mem::Acc) <= cx.e.target.accumulator.size_bytes / 8;
    if defer && small {
        *cx.tail = Some(Tail {
            loc: super::loc_string(&cx.loc),
            eps: pending,
        });
        cx.e.strict_alloc(true);
    } else {
        for (c, p) in pending.iter_mut().enumerate() {
            if let Some(ep) = p.take() {
                cx.e.core(c);
                epilogue(cx, &ep);
            }
        }
    }
    Ok(())
}

/// A resident A read from HBM once for cores `0..workers`: the slice each of them multicasts
/// (contiguous: of the elements when A is dense, else of its rows) and where it lands in SRAM
/// (row stride `ld`).
struct SharedA {
    pieces: Vec<(View, u64)>,
    ld: u64,
    lo: u64,
    hi: u64,
    workers: usize,
}

impl SharedA {
    /// The slices of the `mm × kk` operand `a` resident at `ra`; `None` when A is not dense and
    /// has fewer rows than `workers`.
    fn plan(a: &View, ra: u64, mm: u64, kk: u64, workers: usize) -> Option<SharedA> {
        let ssz = a.dt.size();
        let flat = a.is_contiguous().then(|| a.reshape(&[mm * kk])).flatten();
        let (whole, len, unit) = match flat {
            Some(f) => (f, mm * kk, 1),
            None if mm >= workers as u64 => (a.clone(), mm, kk),
            None => return None,
        };
        let senders = (workers as u64).min(len);
        let pieces = (0..senders)
            .map(|c| {
                let (lo, hi) = (c * len / senders, (c + 1) * len / senders);
                (whole.slice(0, lo, 1, hi - lo), ra + lo * unit * ssz)
            })
            .collect();
        Some(SharedA {
            pieces,
            ld: kk,
            lo: ra,
            hi: ra + mm * kk * ssz,
            workers,
        })
    }

    /// Core `c` sends piece `c` to all the workers; each worker then waits for every piece before
    /// its matrix unit reads A.
    fn emit(&self, cx: &mut Cx) {
        let dests = 0..self.workers as u32;
        let mut arrivals = 0;
        for (c, (piece, at)) in self.pieces.iter().enumerate() {
            cx.e.core(c);
            arrivals +=
                cx.e.multicast_view(piece, *at, self.ld, dests.clone(), MULTICAST_SEM);
        }
        for c in 0..self.workers {
            cx.e.core(c);
            cx.e.multicast_wait(arrivals, self.lo, self.hi);
        }
    }
}

/// The last epilogue of each core of a matmul, emitted by the next op (a matmul does so after
/// its first loads; any other op before it starts, [`flush_tail`]). Its buffers stay reserved
/// until then: the emitter allocates the next kernel's buffers clear of them.
#[derive(Clone)]
pub struct Tail {
    loc: String,
    eps: Vec<Option<Epilogue>>,
}

/// Emits a deferred [`Tail`] now, as the prologue of the open op (call it first): the op's own
/// instructions are then checked against the tail's stores like against any earlier op's.
pub fn flush_tail(cx: &mut Cx) {
    if let Some(t) = cx.tail.take() {
        cx.e.set_loc(&t.loc);
        for (c, ep) in t.eps.iter().enumerate() {
            cx.e.core(c);
            if let Some(ep) = ep {
                epilogue(cx, ep);
            }
            cx.e.sync_point();
        }
        cx.e.core(0);
        cx.e.set_loc(&super::loc_string(&cx.loc));
        cx.e.strict_alloc(false);
    }
}

/// Bounding HBM byte range `[lo, hi)` of a view.
fn view_range(v: &View) -> (u64, u64) {
    let size = v.dt.size() as i128;
    let (mut lo, mut hi) = (v.addr as i128, v.addr as i128);
    for (&n, &st) in v.shape.iter().zip(&v.strides) {
        if n == 0 {
            return (v.addr.max(0) as u64, v.addr.max(0) as u64);
        }
        let span = (n as i128 - 1) * st as i128 * size;
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    (lo.max(0) as u64, (hi + size).max(0) as u64)
}

/// A single-row-block producer of a matmul's A operand, recomputed by the matmul on every core
/// that has work (instead of one core computing it, storing it, a barrier, and every core loading
/// it): an RMS/layer norm over the last axis, or a same-shape elementwise add/sub/mul. The math is
/// the row and elementwise kernels' (f32 on the vector unit, one rounding to the result's type).
struct Producer {
    kind: ProducerKind,
    rows: u64,
    cols: u64,
    /// Operand views as `[rows, cols]` (norm: x; binary: both).
    ins: Vec<View>,
    /// Norm parameters as `[cols]` views with their raw and f32 SRAM buffers.
    params: Vec<(View, u64, u64)>,
    /// SRAM: one staging tile per operand, the f32 work tile, two per-row statistics.
    stage: Vec<u64>,
    work: u64,
    stats: (u64, u64),
}

#[derive(Clone, Copy)]
enum ProducerKind {
    Norm { eps: f32, rms: bool },
    Binary(Bin),
}

impl Producer {
    fn new(cx: &mut Cx, p: OpId, rows: u64, cols: u64) -> R<Producer> {
        let m = cx.m;
        let d = m.op(p);
        let kind = producer_kind(m, p)
            .ok_or_else(|| cx.err("internal: unsupported recomputed producer"))?;
        let as2d = |cx: &Cx, v: ValueId| -> R<View> {
            cx.view(v)?
                .reshape(&[rows, cols])
                .ok_or_else(|| cx.err("internal: recomputed operand is not [rows, cols]"))
        };
        let n_in = match kind {
            ProducerKind::Norm { .. } => 1,
            ProducerKind::Binary(_) => 2,
        };
        let mut ins = vec![];
        for &v in &d.operands[..n_in] {
            ins.push(as2d(cx, v)?);
        }
        let mut params = vec![];
        if let ProducerKind::Norm { .. } = kind {
            for &v in &d.operands[1..] {
                let pv = cx.view(v)?;
                let pv = pv
                    .reshape(&[cols])
                    .or_else(|| pv.broadcast_to(&[cols]))
                    .ok_or_else(|| cx.err("norm parameter shape does not match the row"))?;
                let raw = cx.alloc(Mem::Sram, cols * pv.dt.size(), "norm parameter")?;
                let f = cx.alloc(Mem::Sram, cols * 4, "norm parameter")?;
                params.push((pv, raw, f));
            }
        }
        let mut stage = vec![];
        for v in &ins {
            stage.push(cx.alloc(Mem::Sram, rows * cols * v.dt.size(), "recomputed operand")?);
        }
        let work = cx.alloc(Mem::Sram, rows * cols * 4, "recomputed row")?;
        let s1 = cx.alloc(Mem::Sram, rows * 4, "row statistics")?;
        let s2 = cx.alloc(Mem::Sram, rows * 4, "row statistics")?;
        Ok(Producer {
            kind,
            rows,
            cols,
            ins,
            params,
            stage,
            work,
            stats: (s1, s2),
        })
    }

    /// Computes the producer on the current core into SRAM `dst` (`[rows, cols]` of `dt`).
    fn emit(&self, cx: &mut Cx, dst: u64, dt: DType) {
        let (rows, cols) = (self.rows, self.cols);
        for (v, &st) in self.ins.iter().zip(&self.stage) {
            cx.e.move_view(true, v, st, cols);
        }
        let e = &mut *cx.e;
        let mut prm = vec![];
        for (pv, raw, f) in &self.params {
            e.move_view(true, pv, *raw, cols);
            let ft = T::sram(*f, cols, DType::F32);
            e.vun(
                Un::Copy,
                ft,
                T::sram(*raw, cols, pv.dt),
                Bcast::Full,
                1,
                cols,
            );
            prm.push(ft);
        }
        let w = T::sram(self.work, cols, DType::F32);
        let a = T::sram(self.stage[0], cols, self.ins[0].dt);
        match self.kind {
            ProducerKind::Binary(k) => {
                let b = T::sram(self.stage[1], cols, self.ins[1].dt);
                e.vbin(k, w, a, b, Bcast::Full, rows, cols);
            }
            ProducerKind::Norm { eps, rms } => {
                let stats = (
                    T::sram(self.stats.0, 1, DType::F32),
                    T::sram(self.stats.1, 1, DType::F32),
                );
                norm_rows(e, w, a, stats, &prm, eps, rms, rows, cols);
            }
        }
        e.vun(Un::Copy, T::sram(dst, cols, dt), w, Bcast::Full, rows, cols);
    }
}

/// The recomputable kind of op `p`, if any.
fn producer_kind(m: &Module, p: OpId) -> Option<ProducerKind> {
    let d = m.op(p);
    match d.name.as_str() {
        "graph.layer_norm" | "graph.rms_norm" | "graph.norm" => {
            let rank = shape_of(m, *d.results.first()?)?.len() as i64;
            let ax = attr_i(m, p, "axis").unwrap_or(-1);
            if ax != -1 && ax != rank - 1 {
                return None;
            }
            if d.results[1..].iter().any(|&r| !m.uses(r).is_empty()) || d.operands.len() > 3 {
                return None;
            }
            Some(ProducerKind::Norm {
                eps: attr_f(m, p, "epsilon").unwrap_or(1e-5) as f32,
                rms: d.name == "graph.rms_norm"
                    || m.attr(p, "kind").and_then(Attribute::as_str) == Some("rms"),
            })
        }
        "graph.add" | "graph.sub" | "graph.mul" if d.operands.len() == 2 => {
            let out = shape_of(m, d.results[0])?;
            let same = d
                .operands
                .iter()
                .all(|&v| shape_of(m, v).as_deref() == Some(out.as_slice()));
            let float = d
                .operands
                .iter()
                .chain(&d.results)
                .all(|&v| elem_of(m, v).is_some_and(|e| e.is_float()));
            (same && float).then_some(ProducerKind::Binary(match d.name.as_str() {
                "graph.add" => Bin::Add,
                "graph.sub" => Bin::Sub,
                _ => Bin::Mul,
            }))
        }
        _ => None,
    }
}

/// Results of single-row producers whose every consumer is a matmul taking them as its A operand
/// in one resident row block, on a multi-core target: each consumer recomputes the producer on
/// every core ([`Producer`]), so the producer op emits nothing. That removes one store, one
/// barrier and one load round trip per such boundary (RMSNorm → Q/K/V in a decode step). Safe
/// only while the producer's operands stay intact until the last consumer has read them: no op
/// from the producer up to the last consumer may write HBM overlapping them.
pub fn recomputed_producers(
    m: &Module,
    plan: &Plan,
    ops: &[OpId],
    o: &Options,
) -> HashMap<ValueId, OpId> {
    let mut out = HashMap::new();
    let t = &o.target;
    if t.cores <= 1 {
        return out;
    }
    let dt = match o.precision {
        Precision::Fp32 => DType::F32,
        Precision::Bf16 => DType::BF16,
    };
    let pos: HashMap<OpId, usize> = ops.iter().enumerate().map(|(i, &op)| (op, i)).collect();
    for (i, &p) in ops.iter().enumerate() {
        if producer_kind(m, p).is_none() {
            continue;
        }
        let d = m.op(p);
        let r = d.results[0];
        let (Some(rv), Some(shape)) = (plan.views.get(&r), shape_of(m, r)) else {
            continue;
        };
        // One `[rows, cols]` matrix (leading dims of extent 1): the consumer has one batch.
        let cols = *shape.last().unwrap_or(&0);
        let rows: u64 = shape[..shape.len().saturating_sub(1)].iter().product();
        let one_batch = shape.len() >= 2 && shape[..shape.len() - 2].iter().all(|&x| x == 1);
        if !one_batch || rows == 0 || rows > t.matrix.rows as u64 || cols == 0 || rv.dt != dt {
            continue;
        }
        if !plan.owned.contains_key(&r) {
            continue;
        }
        let uses = m.uses(r);
        let consumers_ok = !uses.is_empty()
            && uses.iter().all(|&(u, ix)| {
                ix == 0
                    && matches!(
                        m.op(u).name.as_str(),
                        "graph.matmul" | "graph.matmul_epilogue"
                    )
                    && pos.contains_key(&u)
                    && m.op(u)
                        .operands
                        .get(1)
                        .and_then(|&b| shape_of(m, b))
                        .is_some_and(|bs| {
                            // B is one [K, N] matrix (no batch), A's rows are one block.
                            bs.len() == 2 && bs[0] == cols
                        })
                    && shape_of(m, m.op(u).results[0])
                        .is_some_and(|os| os[..os.len() - 1].iter().product::<u64>() == rows)
            });
        if !consumers_ok {
            continue;
        }
        let last = uses
            .iter()
            .filter_map(|(u, _)| pos.get(u))
            .max()
            .copied()
            .unwrap_or(i);
        let inputs: Vec<(u64, u64)> = d
            .operands
            .iter()
            .filter_map(|v| plan.views.get(v))
            .map(view_range)
            .collect();
        if inputs.len() != d.operands.len() {
            continue;
        }
        // Ops that emit code write their results' views; pure view ops write nothing.
        let clobbered = ops[i + 1..=last].iter().any(|&q| {
            !view_only(plan, m, q)
                && m.op(q)
                    .results
                    .iter()
                    .filter_map(|v| plan.views.get(v))
                    .any(|w| {
                        let (lo, hi) = view_range(w);
                        inputs.iter().any(|&(l, h)| lo < h && l < hi)
                    })
        });
        if !clobbered {
            out.insert(r, p);
        }
    }
    out
}

/// What a matmul's epilogue computes on each output tile: `act(alpha · acc + bias) + residual`.
struct EpilogueOps {
    /// Broadcast along the output rows.
    bias: Option<View>,
    /// Of the output's shape (a broadcast view where the operand is smaller).
    residual: Option<View>,
    act: Act,
    alpha: f32,
}

/// Everything the epilogue of one output tile needs.
#[derive(Clone)]
struct Epilogue {
    acc: T,
    o32: T,
    oc: T,
    tmp: T,
    bias: Option<T>,
    /// The slice of the bias row to load into `raw` and convert into `bias` first, when the
    /// whole row does not stay in SRAM.
    bias_load: Option<(View, T)>,
    /// The tile's residual in SRAM (loaded in its own element type), added after the activation.
    residual: Option<T>,
    alpha: f32,
    act: Act,
    rows: u64,
    cols: u64,
    dst: View,
}

/// Accumulator → f32 SRAM (× alpha, + bias, activation, + residual) → output type → HBM.
fn epilogue(cx: &mut Cx, ep: &Epilogue) {
    let (wm, wn, o32, tt) = (ep.rows, ep.cols, ep.o32, ep.tmp);
    if let (Some((row, raw)), Some(bt)) = (&ep.bias_load, ep.bias) {
        cx.e.move_view(true, row, raw.addr, wn);
        cx.e.vun(Un::Copy, bt, *raw, Bcast::Full, 1, wn);
    }
    let e = &mut *cx.e;
    if ep.alpha == 1.0
        && ep.bias.is_none()
        && ep.residual.is_none()
        && ep.act == Act::None
        && ep.dst.dt != DType::F32
    {
        // Nothing to compute: one pass converts the accumulator to the output type.
        e.vun(Un::Copy, ep.oc, ep.acc, Bcast::Full, wm, wn);
        cx.e.move_view(false, &ep.dst, ep.oc.addr, wn);
        return;
    }
    let acc = if ep.alpha != 1.0 {
        e.vimm(Imm::Mul, o32, ep.acc, ep.alpha, wm, wn);
        o32
    } else {
        ep.acc
    };
    match ep.bias {
        Some(bt) => e.vbin(Bin::Add, o32, acc, bt, Bcast::Row, wm, wn),
        None => e.vun(Un::Copy, o32, acc, Bcast::Full, wm, wn),
    }
    match ep.act {
        Act::None => {}
        Act::Relu => e.vimm(Imm::Max, o32, o32, 0.0, wm, wn),
        Act::Silu => {
            e.vun(Un::Sigmoid, tt, o32, Bcast::Full, wm, wn);
            e.vbin(Bin::Mul, o32, o32, tt, Bcast::Full, wm, wn);
        }
        Act::Gelu(tanh) => {
            if tanh {
                // √(2/π)·(x + 0.044715·x³) as x·(√(2/π) + 0.044715·√(2/π)·x²): four simple
                // passes instead of a special-function power and three simple ones.
                const S: f32 = 0.797_884_6;
                e.vbin(Bin::Mul, tt, o32, o32, Bcast::Full, wm, wn);
                e.vimm(Imm::Mul, tt, tt, 0.044715 * S, wm, wn);
                e.vimm(Imm::Add, tt, tt, S, wm, wn);
                e.vbin(Bin::Mul, tt, tt, o32, Bcast::Full, wm, wn);
                e.vun(Un::Tanh, tt, tt, Bcast::Full, wm, wn);
            } else {
                e.vimm(Imm::Mul, tt, o32, std::f32::consts::FRAC_1_SQRT_2, wm, wn);
                e.vun(Un::Erf, tt, tt, Bcast::Full, wm, wn);
            }
            e.vimm(Imm::Add, tt, tt, 1.0, wm, wn);
            e.vbin(Bin::Mul, o32, o32, tt, Bcast::Full, wm, wn);
            e.vimm(Imm::Mul, o32, o32, 0.5, wm, wn);
        }
    }
    if let Some(rt) = ep.residual {
        let r32 = if rt.dt == DType::F32 {
            rt
        } else {
            e.vun(Un::Copy, tt, rt, Bcast::Full, wm, wn);
            tt
        };
        e.vbin(Bin::Add, o32, o32, r32, Bcast::Full, wm, wn);
    }
    let res = if ep.dst.dt == DType::F32 {
        o32
    } else {
        e.vun(Un::Copy, ep.oc, o32, Bcast::Full, wm, wn);
        ep.oc
    };
    cx.e.move_view(false, &ep.dst, res.addr, wn);
}

/// ONNX Gemm: `alpha · op(A) · op(B) + beta · C`. Transposes are free views; `alpha` scales in
/// the epilogue; a row-broadcast `C` is the bias, any other `C` is added elementwise afterwards.
fn gemm(cx: &mut Cx, op: OpId, ins: &[ValueId], ov: &View) -> R<()> {
    let m = cx.m;
    let ta = attr_i(m, op, "transA").unwrap_or(0) != 0;
    let tb = attr_i(m, op, "transB").unwrap_or(0) != 0;
    let alpha = attr_f(m, op, "alpha").unwrap_or(1.0);
    let beta = attr_f(m, op, "beta").unwrap_or(1.0);
    let mut av = cx.view(ins[0])?;
    let mut bv = cx.view(ins[1])?;
    if ta {
        av = av.permute(&[1, 0]);
    }
    if tb {
        bv = bv.permute(&[1, 0]);
    }
    let n = ov.shape[1];
    let c = match ins.get(2) {
        Some(&c) if beta != 0.0 => Some(cx.view(c)?),
        _ => None,
    };
    let row_bias = c.as_ref().is_some_and(|cv| {
        beta == 1.0 && (cv.reshape(&[n]).is_some() || cv.broadcast_to(&[n]).is_some())
    });
    let bias = if row_bias { c.clone() } else { None };
    // A C added afterwards reads the output: the epilogues must be emitted before.
    let defer = c.is_none() || row_bias;
    let ep = EpilogueOps {
        bias,
        residual: None,
        act: Act::None,
        alpha: alpha as f32,
    };
    matmul_views(cx, op, av, bv, ep, ov, defer, None)?;
    if let (Some(cv), false) = (c, row_bias) {
        // out = out + beta · C, elementwise over the output tile rows.
        let cb = cv
            .broadcast_to(&ov.shape)
            .ok_or_else(|| cx.err("Gemm C does not broadcast to the output"))?;
        add_scaled(cx, ov, &cb, beta as f32)?;
    }
    Ok(())
}

/// `out += s · c` (both `[rows, cols]`).
fn add_scaled(cx: &mut Cx, out: &View, c: &View, s: f32) -> R<()> {
    let cols = out.shape[1];
    let rows = out.shape[0];
    let a = cx.alloc(Mem::Sram, rows * cols * out.dt.size(), "gemm C")?;
    let b = cx.alloc(Mem::Sram, rows * cols * c.dt.size(), "gemm C")?;
    let w = cx.alloc(Mem::Sram, rows * cols * 4, "gemm C")?;
    cx.e.core(0);
    cx.e.move_view(true, out, a, cols);
    cx.e.move_view(true, c, b, cols);
    let wt = T::sram(w, cols, DType::F32);
    cx.e.vimm(Imm::Mul, wt, T::sram(b, cols, c.dt), s, rows, cols);
    cx.e.vbin(
        Bin::Add,
        T::sram(a, cols, out.dt),
        T::sram(a, cols, out.dt),
        wt,
        Bcast::Full,
        rows,
        cols,
    );
    cx.e.move_view(false, out, a, cols);
    Ok(())
}

// ---------- trilu ----------

/// ONNX Trilu on the vector unit: `vpu.causal` zeroes the strict upper part (`j > i + k`) of a
/// copy for the lower triangle; the upper triangle multiplies by `1 − lower(ones, k − 1)`.
fn trilu(cx: &mut Cx, op: OpId, ov: &View) -> R<()> {
    let m = cx.m;
    let x = cx.view(m.op(op).operands[0])?;
    let k = match super::plan::operand_at(m, op, 1) {
        Some(v) => super::plan::const_ints(m, v)
            .and_then(|v| v.first().copied())
            .ok_or_else(|| cx.err("Trilu with k given at run time is not supported"))?,
        None => 0,
    };
    let upper = attr_i(m, op, "upper").unwrap_or(1) != 0;
    let r = x.shape.len();
    if r < 2 {
        return Err(cx.err("Trilu needs rank >= 2"));
    }
    let (n, cols) = (x.shape[r - 2], x.shape[r - 1]);
    let per_row = cols * (x.dt.size() + 8 + ov.dt.size()) + 64;
    let budget = (cx.e.free(Mem::Sram) / per_row).clamp(1, 65535);
    let max_rows = budget.min(n).max(1);
    let tiles = row_tiles(&x.shape, 1, max_rows);
    let mr = tiles.iter().map(|t| t.rows).max().unwrap_or(1);
    let a = cx.alloc(Mem::Sram, mr * cols * x.dt.size(), "trilu tile")?;
    let w = cx.alloc(Mem::Sram, mr * cols * 4, "trilu tile")?;
    let msk = cx.alloc(Mem::Sram, mr * cols * 4, "trilu mask")?;
    let o = cx.alloc(Mem::Sram, mr * cols * ov.dt.size(), "trilu tile")?;
    for (i, t) in tiles.iter().enumerate() {
        cx.on_core(i);
        let rows = t.rows;
        let r0 = if t.sliced && t.k == r - 2 { t.start } else { 0 } as i64;
        cx.e.move_view(true, &tile_view(&x, t), a, cols);
        let (at, wt, mt) = (
            T::sram(a, cols, x.dt),
            T::sram(w, cols, DType::F32),
            T::sram(msk, cols, DType::F32),
        );
        let e = &mut *cx.e;
        e.vun(Un::Copy, wt, at, Bcast::Full, rows, cols);
        if upper {
            e.vfill(mt, 1.0, rows, cols);
            e.vcausal(mt, r0 + k - 1, 0, 0.0, rows, cols);
            e.vimm(Imm::Rsub, mt, mt, 1.0, rows, cols);
            e.vbin(Bin::Mul, wt, wt, mt, Bcast::Full, rows, cols);
        } else {
            e.vcausal(wt, r0 + k, 0, 0.0, rows, cols);
        }
        let res = if ov.dt == DType::F32 {
            wt
        } else {
            let ot = T::sram(o, cols, ov.dt);
            e.vun(Un::Copy, ot, wt, Bcast::Full, rows, cols);
            ot
        };
        cx.e.move_view(false, &tile_view(ov, t), res.addr, cols);
    }
    Ok(())
}

// ---------- gather ----------

fn gather(cx: &mut Cx, op: OpId, data: ValueId, idx: ValueId, ov: &View) -> R<()> {
    let dv = cx.view(data)?;
    let iv = cx.view(idx)?;
    let rank = dv.shape.len();
    let ax = axis(cx, attr_i(cx.m, op, "axis").unwrap_or(0), rank)?;
    if !matches!(iv.dt, DType::I32 | DType::I64) {
        return Err(cx.err("gather indices must be i32 or i64"));
    }
    // Constant indices: plain copies of the selected slices.
    if let Some(vals) = const_f64s(cx.m, idx) {
        let n = dv.shape[ax] as i64;
        let outer: Vec<u64> = dv.shape[..ax].to_vec();
        let inner: Vec<u64> = dv.shape[ax + 1..].to_vec();
        let mut o2shape = outer.clone();
        o2shape.push(vals.len() as u64);
        o2shape.extend(&inner);
        let o2 = ov
            .reshape(&o2shape)
            .ok_or_else(|| cx.err("gather output is not dense"))?;
        for (j, &x) in vals.iter().enumerate() {
            let i = x as i64;
            let i = if i < 0 { i + n } else { i };
            if i < 0 || i >= n {
                return Err(cx.err(format!("gather index {x} out of range 0..{n}")));
            }
            let src = dv.slice(ax, i as u64, 1, 1);
            let dst = o2.slice(ax, j as u64, 1, 1);
            copy(cx, &src, &dst)?;
        }
        return Ok(());
    }
    let inner: u64 = dv.shape[ax + 1..].iter().product();
    let inner_view = View {
        addr: 0,
        dt: dv.dt,
        shape: dv.shape[ax + 1..].to_vec(),
        strides: dv.strides[ax + 1..].to_vec(),
    };
    if !inner_view.is_contiguous() {
        return Err(cx.err("gather from a non-contiguous view is not supported"));
    }
    let nidx = iv.elems();
    let outer: u64 = dv.shape[..ax].iter().product();
    let ibytes = nidx * iv.dt.size();
    let ibuf = cx.alloc(Mem::Sram, ibytes, "gather indices")?;
    let flat_idx = View::dense(0, iv.dt, &[nidx]);
    let iv_flat = iv.reshape(&[nidx]).unwrap_or(View {
        addr: iv.addr,
        ..flat_idx
    });
    // Negative indices count from the end (ONNX): idx + n·(idx < 0), on the vector unit (exact
    // for |idx| < 2^24).
    let fix = cx.alloc(Mem::Sram, nidx * 4 * 2, "gather index fix-up")?;
    let n_axis = dv.shape[ax] as f32;
    for c in 0..cx.e.cores() {
        cx.e.core(c);
        cx.e.move_view(true, &iv_flat, ibuf, nidx);
        if nidx > 65535 {
            continue;
        }
        let (f, z) = (
            T::sram(fix, nidx, DType::F32),
            T::sram(fix + nidx * 4, nidx, DType::F32),
        );
        let it = T::sram(ibuf, nidx, iv.dt);
        cx.e.vfill(z, 0.0, 1, nidx);
        cx.e.vbin(Bin::Lt, f, it, z, Bcast::Full, 1, nidx);
        cx.e.vimm(Imm::Mul, f, f, n_axis, 1, nidx);
        cx.e.vbin(Bin::Add, f, f, it, Bcast::Full, 1, nidx);
        cx.e.vun(Un::Copy, it, f, Bcast::Full, 1, nidx);
    }
    cx.e.core(0);
    let row_bytes = inner * dv.dt.size() + inner * ov.dt.size();
    let chunk = (cx.e.free(Mem::Sram) / (2 * row_bytes + 64)).clamp(1, 65535);
    if chunk == 0 || row_bytes > cx.e.free(Mem::Sram) {
        return Err(cx.err("a gathered row does not fit in SRAM"));
    }
    let chunk = cx.spread(nidx, chunk.min(nidx));
    let bufs = [
        cx.alloc(Mem::Sram, chunk * inner * dv.dt.size(), "gather rows")?,
        cx.alloc(Mem::Sram, chunk * inner * dv.dt.size(), "gather rows")?,
    ];
    let conv = if ov.dt != dv.dt {
        cx.alloc(Mem::Sram, chunk * inner * ov.dt.size(), "gather rows")?
    } else {
        0
    };
    let mut o2shape: Vec<u64> = dv.shape[..ax].to_vec();
    o2shape.push(nidx);
    o2shape.push(inner);
    let o2 = ov
        .reshape(&o2shape)
        .ok_or_else(|| cx.err("gather output is not dense"))?;
    let mut step = 0;
    for oi in 0..outer {
        let mut lead = vec![0; ax];
        let mut rem = oi;
        for i in (0..ax).rev() {
            lead[i] = rem % dv.shape[i];
            rem /= dv.shape[i];
        }
        let base = batch_index(&dv, &lead);
        let ob = batch_index(&o2, &lead);
        let mut s = 0;
        while s < nidx {
            let cnt = chunk.min(nidx - s);
            let buf = bufs[cx.on_core(step)];
            step += 1;
            let e = &mut *cx.e;
            let inst = Inst::DmaGather {
                sram: e.reg(buf as i64),
                hbm: e.reg(base.addr),
                idx: e.reg((ibuf + s * iv.dt.size()) as i64),
                count: cnt as u32,
                rowlen: inner as u32,
                hs: e.reg(base.strides[0]),
                ss: e.reg(inner as i64),
                dt: dv.dt,
                idt: iv.dt,
            };
            let istart = ibuf + s * iv.dt.size();
            e.op(
                inst,
                vec![
                    Touch::read(Mem::Sram, istart, istart + cnt * iv.dt.size()),
                    Touch::write(Mem::Sram, buf, buf + cnt * inner * dv.dt.size()),
                ],
            );
            let res = if ov.dt != dv.dt {
                e.vun(
                    Un::Copy,
                    T::sram(conv, inner, ov.dt),
                    T::sram(buf, inner, dv.dt),
                    Bcast::Full,
                    cnt,
                    inner,
                );
                conv
            } else {
                buf
            };
            let dst = ob.slice(0, s, 1, cnt);
            cx.e.move_view(false, &dst, res, inner);
            s += cnt;
        }
    }
    Ok(())
}
