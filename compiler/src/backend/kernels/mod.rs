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
//!
//! Files: this one holds the kernel context ([`Cx`]), the tiling over leading dims, operand
//! classification, the lowering entry ([`lower_op`]), copies, trilu and gather; `vector.rs` the
//! vector-unit helpers, `elementwise.rs`, `rows.rs` (with `split_rows.rs` for rows wider than
//! SRAM) and `matmul.rs` the op families; attention lives in `backend/attention/`.

use crate::dialects::graph;
use std::collections::HashMap;

use llmpu_isa::{AccMode, Bcast, DType, Inst, Space, TileRef};

use super::emit::{EmitError, Emitter, MULTICAST_SEM, Mem, Sweep, Touch};
use super::plan::{Plan, const_f64s, elem_of, shape_of};
use super::tiling::{matmul_tiles, row_tile, sram_budget};
use super::view::{View, merge_outer};
use super::{BackendError, Options, Precision};

use crate::ir::{Attribute, Location, Module, OpId, ValueId};

mod elementwise;
mod matmul;
mod rows;
mod scan;
mod split_rows;
mod vector;
pub use elementwise::*;
pub use matmul::*;
pub use rows::softmax_tail;
use rows::*;
pub use vector::*;

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
    pub(crate) fn err(&self, msg: impl Into<String>) -> BackendError {
        BackendError::new(&self.loc, msg)
    }
    /// `what` needs `v` at compile time but it is computed at run time: the error names the
    /// graph input `v` is, if it is one, and how to bind it.
    pub(crate) fn run_time_err(&self, what: &str, v: ValueId) -> BackendError {
        let m = self.m;
        let input = m.functions().into_iter().find_map(|f| {
            let entry = m.entry_block(f)?;
            let i = m.block(entry).args.iter().position(|&a| a == v)?;
            Some(super::plan::io_name(m, f, "arg_attrs", i, "input"))
        });
        match input {
            Some(n) => self.err(format!(
                "{what}: given at run time by graph input `{n}`, but needed at compile time; compile it in with `--bind {n}=V1,V2,...`"
            )),
            None => self.err(format!("{what}: computed at run time, but needed at compile time")),
        }
    }
    fn emit_err(&self, e: EmitError) -> BackendError {
        self.err(e.to_string())
    }
    pub(crate) fn view(&self, v: ValueId) -> R<View> {
        self.plan
            .views
            .get(&v)
            .cloned()
            .ok_or_else(|| self.err(format!("value {v} has no memory (unsupported producer)")))
    }
    pub(crate) fn alloc(&mut self, mem: Mem, bytes: u64, what: &str) -> R<u64> {
        self.e.alloc(mem, bytes, what).map_err(|e| self.emit_err(e))
    }
    /// Rows of `per_row` bytes that fit twice (double-buffered) in free SRAM, capped at the
    /// target's row tile; 0 when not even one does.
    fn double_buffered_rows(&self, per_row: u64) -> u64 {
        (self.e.free(Mem::Sram) / (2 * per_row + 64)).min(row_tile(
            u64::MAX,
            2 * per_row,
            &self.e.target,
        ))
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
        && d.name != graph::Constant::NAME
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
    if name == graph::Constant::NAME {
        return Ok(());
    }
    if outs.first().is_some_and(|r| cx.recompute.contains_key(r)) {
        // Every consumer computes this result itself (see `recomputed_producers`).
        return Ok(());
    }
    if name == crate::dialects::tile::Kernel::NAME {
        return super::tiles::lower_kernel(cx, op);
    }
    if name == graph::KvAppend::NAME {
        return super::attention::kv_append(cx, op, &ins);
    }
    if name == graph::KvMask::NAME {
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
    // An empty constant is a parameter (an empty axes list), read at compile time.
    let is_const = |v: &ValueId| m.defining_op_named(*v, graph::Constant::NAME).is_some();
    if let Some(v) = ins.iter().find(|v| empty(v) && !is_const(v)) {
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
    let ew = match graph::elementwise(name) {
        Some(row) => row.lower,
        None => match name {
            graph::Max::NAME if ins.len() >= 2 => Some(Ew::Binary(Bin::Max)),
            graph::Min::NAME if ins.len() >= 2 => Some(Ew::Binary(Bin::Min)),
            graph::Max::NAME | graph::Min::NAME if ins.len() == 1 => Some(unary(Un::Copy)),
            graph::Equal::NAME => Some(Ew::Binary(Bin::Eq)),
            graph::LessOrEqual::NAME => Some(Ew::Binary(Bin::Le)),
            graph::GreaterOrEqual::NAME => Some(Ew::Ge),
            graph::And::NAME => Some(Ew::Binary(Bin::Mul)),
            graph::Pow::NAME => Some(Ew::Pow),
            graph::Or::NAME => Some(Ew::Binary(Bin::Max)),
            graph::Less::NAME => Some(Ew::Binary(Bin::Lt)),
            graph::Greater::NAME => Some(Ew::Gt),
            graph::Gelu::NAME => Some(Ew::Gelu(
                m.attr(op, "approximate").and_then(Attribute::as_str) == Some("tanh"),
            )),
            graph::Cast::NAME | graph::Identity::NAME => Some(unary(Un::Copy)),
            graph::Where::NAME => Some(Ew::Where),
            graph::Mod::NAME => {
                if !elem_of(m, out).is_some_and(|e| e.is_int()) {
                    return Err(cx.err(
                        "float Mod is not supported: `a − b·trunc(a/b)` in f32 is not the exact \
                         remainder ONNX's fmod defines",
                    ));
                }
                Some(Ew::Mod(attr_i(m, op, "fmod").unwrap_or(0) != 0))
            }
            graph::Clip::NAME => Some(Ew::Clip),
            _ => None,
        },
    };
    if let Some(k) = ew {
        let int_out = elem_of(m, out).is_some_and(|e| e.is_int() && e != crate::ir::ScalarType::I1);
        // The store to an integer type rounds to nearest even; ONNX's integer Div and float →
        // integer Cast truncate toward zero, so the value is truncated on the vector unit first.
        if name == graph::Div::NAME && int_out {
            return elementwise(cx, Ew::DivTrunc, &ins[..2.min(ins.len())], &ov);
        }
        if name == graph::Cast::NAME && int_out && elem_of(m, ins[0]).is_some_and(|e| e.is_float())
        {
            return elementwise(cx, Ew::Unary(Un::Trunc), &ins[..1], &ov);
        }
        if name == graph::Cast::NAME
            && m.attr(op, "saturate").and_then(Attribute::as_int) == Some(0)
            && elem_of(m, out) == Some(crate::ir::ScalarType::F8E4M3FN)
        {
            return elementwise(cx, Ew::F8NoSaturate, &ins[..1], &ov);
        }
        if let (Ew::Binary(b @ (Bin::Max | Bin::Min)), true) = (k, ins.len() > 2) {
            return elementwise::variadic(cx, b, &ins, &ov);
        }
        if name == graph::Cast::NAME {
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
            Ew::Unary(_) | Ew::Relu | Ew::Gelu(_) | Ew::Not | Ew::Steps(_) => 1,
            _ => 2,
        };
        return elementwise(cx, k, &ins[..n.min(ins.len())], &ov);
    }
    match name {
        graph::Reshape::NAME
        | graph::Squeeze::NAME
        | graph::Unsqueeze::NAME
        | graph::Flatten::NAME
        | graph::Transpose::NAME
        | graph::Expand::NAME
        | graph::Slice::NAME
        | graph::Split::NAME => {
            // A view op whose result could not stay a view: materialize.
            let iv = cx.view(ins[0])?;
            if matches!(
                name,
                graph::Reshape::NAME
                    | graph::Squeeze::NAME
                    | graph::Unsqueeze::NAME
                    | graph::Flatten::NAME
            ) {
                // Same elements in the same order: copy them densely into the result's buffer.
                let dst = View::dense(ov.addr as u64, ov.dt, &iv.shape);
                return copy(cx, &iv, &dst);
            }
            let derived = super::plan::view_results(m, op, &iv).ok_or_else(|| {
                match ins[1..]
                    .iter()
                    .find(|&&v| super::plan::const_ints(m, v).is_none())
                {
                    Some(&v) => cx.run_time_err(&format!("the parameters of `{name}`"), v),
                    None => cx.err(format!("`{name}`: parameters not supported")),
                }
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
        graph::Concat::NAME => {
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
        graph::CumSum::NAME => {
            let rank = ov.shape.len();
            let a = ins[1];
            let ax = super::plan::const_ints(m, a)
                .and_then(|v| v.first().copied())
                .ok_or_else(|| cx.run_time_err("CumSum's axis", a))?;
            let ax = axis(cx, ax, rank)?;
            let xv = cx.view(ins[0])?;
            let (xv, ov) = last_axis(&xv, &ov, ax);
            let flag = |k| attr_i(m, op, k).unwrap_or(0) != 0;
            scan::cumsum(cx, &xv, &ov, flag("exclusive"), flag("reverse"))
        }
        graph::Softmax::NAME | graph::LogSoftmax::NAME => {
            let rank = ov.shape.len();
            let ax = axis(cx, attr_i(m, op, "axis").unwrap_or(-1), rank)?;
            let xv = cx.view(ins[0])?;
            let (xv, ov) = last_axis(&xv, &ov, ax);
            row_kernel(
                cx,
                RowK::Softmax(name == graph::LogSoftmax::NAME),
                &xv,
                &ov,
                &[],
            )
        }
        graph::RmsNorm::NAME | graph::Norm::NAME
            if outs[1..].iter().any(|&r| !m.uses(r).is_empty()) =>
        {
            Err(cx.err("the Mean / InvStdDev outputs of a normalization are not supported"))
        }
        graph::LayerNorm::NAME | graph::RmsNorm::NAME | graph::Norm::NAME => {
            let rank = ov.shape.len();
            let ax = axis(cx, attr_i(m, op, "axis").unwrap_or(-1), rank)?;
            let eps = attr_f(m, op, "epsilon").unwrap_or(1e-5) as f32;
            let rms = name == graph::RmsNorm::NAME
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
        graph::ReduceMean::NAME
        | graph::ReduceSum::NAME
        | graph::ReduceMax::NAME
        | graph::ReduceL2::NAME => reduce(cx, op, &ins, &ov),
        graph::MatMul::NAME => matmul(cx, op, ins[0], ins[1], None, None, Act::None, &ov),
        graph::Gemm::NAME => gemm(cx, op, &ins, &ov),
        graph::MatMulEpilogue::NAME => {
            let act = m
                .attr(op, "activation")
                .and_then(Attribute::as_str)
                .and_then(Act::from_name)
                .unwrap_or(Act::None);
            // Operands (a, b, bias?, residual?): the residual, when `residual = true`, is last.
            let residual = m.attr(op, "residual").and_then(Attribute::as_bool) == Some(true);
            let res = if residual { ins.last().copied() } else { None };
            let bias = ins[2..ins.len() - usize::from(residual)].first().copied();
            matmul(cx, op, ins[0], ins[1], bias, res, act, &ov)
        }
        graph::Gather::NAME => gather(cx, op, ins[0], ins[1], &ov),
        graph::Trilu::NAME => trilu(cx, op, &ov),
        graph::Pad::NAME => pad(cx, op, &ov),
        graph::FusedAttention::NAME => super::attention::attention(cx, op, &ins, &ov),
        graph::Rope::NAME => {
            let rd = m.attr(op, "rotary_dim").and_then(Attribute::as_int);
            rope(cx, &ins, &ov, rd)
        }
        graph::ConstantOfShape::NAME => {
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
        _ => {
            // An op the backend has a kernel for once its parameters are known names them.
            let late = graph::parameter_slots(name).iter().find_map(|&slot| {
                graph::operand_slot(m, op, slot)
                    .filter(|&v| m.defining_op_named(v, graph::Constant::NAME).is_none())
            });
            match late {
                Some(v) => Err(cx.run_time_err(&format!("the parameters of `{name}`"), v)),
                None => Err(cx.err(format!("`{name}` is not supported by the LLMPU backend"))),
            }
        }
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
    let max_rows = cx.double_buffered_rows(per_row);
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

// ---------- pad ----------

/// ONNX Pad with pads known at compile time. The (possibly cropped) input is copied into the
/// output's interior; in `constant` mode the output is filled with the pad value first, in the
/// other modes every padded position of an axis is then a copy of the interior position
/// [`graph::pad_source`] names, axis after axis (axis `a`'s copies span the full extent of the axes
/// before it, already padded, and the interior of those after it). Pads given at run time would
/// set the output shape at run time and are refused, as is a fill value given at run time.
fn pad(cx: &mut Cx, op: OpId, ov: &View) -> R<()> {
    let m = cx.m;
    let x = cx.view(m.op(op).operands[0])?;
    let rank = x.shape.len();
    let pv = m.op(op).operands[1];
    let pads = super::plan::const_ints(m, pv)
        .ok_or_else(|| cx.run_time_err("Pad's pads (they set the output shape)", pv))?;
    let fill = match super::plan::operand_at(m, op, 2) {
        None => 0.0,
        Some(v) => super::plan::splat_of(m, v).ok_or_else(|| cx.run_time_err("Pad's value", v))?,
    };
    let axes: Vec<usize> = match super::plan::operand_at(m, op, 3) {
        None => (0..rank).collect(),
        Some(v) => super::plan::const_ints(m, v)
            .ok_or_else(|| cx.run_time_err("Pad's axes", v))?
            .into_iter()
            .map(|a| axis(cx, a, rank))
            .collect::<R<_>>()?,
    };
    if pads.len() != 2 * axes.len() {
        return Err(cx.err(format!(
            "`graph.pad` needs a begin and an end count per axis: {} pads for {} axes",
            pads.len(),
            axes.len()
        )));
    }
    let mut begin = vec![0i64; rank];
    let mut end = vec![0i64; rank];
    for (i, &a) in axes.iter().enumerate() {
        begin[a] = pads[i];
        end[a] = pads[i + axes.len()];
    }
    // The part of the input that survives cropping, and where it lands in the output.
    let (mut src, mut dst) = (x.clone(), ov.clone());
    for a in 0..rank {
        let (cb, ce) = ((-begin[a]).max(0) as u64, (-end[a]).max(0) as u64);
        let len = x.shape[a].saturating_sub(cb + ce);
        if ov.shape[a] != len + begin[a].max(0) as u64 + end[a].max(0) as u64 {
            return Err(cx.err(format!(
                "`graph.pad` result extent {} on axis {a} does not match the pads",
                ov.shape[a]
            )));
        }
        src = src.slice(a, cb, 1, len);
        dst = dst.slice(a, begin[a].max(0) as u64, 1, len);
    }
    let mode = m
        .attr(op, "mode")
        .and_then(Attribute::as_str)
        .unwrap_or("constant");
    let padded = begin.iter().chain(&end).any(|&p| p > 0);
    if mode == "constant" && padded {
        elementwise(cx, Ew::Fill(fill as f32), &[], ov)?;
        if cx.e.cores() > 1 {
            cx.e.barrier();
        }
    }
    if src.elems() > 0 {
        copy(cx, &src, &dst)?;
    }
    if mode == "constant" || !padded {
        return Ok(());
    }
    // The interior's start and extent per axis.
    let inner: Vec<(u64, u64)> = (0..rank)
        .map(|a| (begin[a].max(0) as u64, src.shape[a]))
        .collect();
    for a in 0..rank {
        let (start, kept) = inner[a];
        if start == 0 && kept == ov.shape[a] {
            continue;
        }
        if kept == 0 {
            return Err(cx.err(format!(
                "`graph.pad` in {mode} mode pads axis {a}, which keeps no element"
            )));
        }
        // Axes before `a` are complete; those after it only hold their interior so far.
        let mut region = ov.clone();
        for (b, &(s, k)) in inner.iter().enumerate().skip(a + 1) {
            region = region.slice(b, s, 1, k);
        }
        for p in (0..ov.shape[a]).filter(|&p| p < start || p >= start + kept) {
            let at = p as i64 - start as i64;
            let from = graph::pad_source(mode, at, kept as i64)
                .ok_or_else(|| cx.err(format!("`graph.pad` mode {mode:?} is not supported")))?;
            let from = start + from as u64;
            if cx.e.cores() > 1 {
                cx.e.barrier();
            }
            // Each copy's staging buffers are free again after it: a pad of thousands of
            // positions must not run SRAM out.
            let mark = cx.e.mark(Mem::Sram);
            copy(cx, &region.slice(a, from, 1, 1), &region.slice(a, p, 1, 1))?;
            cx.e.release(Mem::Sram, mark);
        }
    }
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
            .ok_or_else(|| cx.run_time_err("Trilu's k", v))?,
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
                limit: u32::try_from(dv.shape[ax]).unwrap_or(0),
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
