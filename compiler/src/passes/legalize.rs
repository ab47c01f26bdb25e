//! `legalize`: rewrites graph ops the backend has no kernel for into graph ops it has, each
//! rewrite exact for every value the original op accepts:
//!
//! - `graph.trilu` whose `k` is computed at run time becomes `where(d ≥ k, x, 0)` (upper) or
//!   `where(d ≤ k, x, 0)` (lower), with `d[i, j] = j − i` an `i64` constant of the last two dims
//!   (a constant `k` keeps the triangle kernel);
//! - `graph.gather_nd` becomes one `graph.gather` of rows: the data is reshaped to
//!   `[B·D, rest…]` (`B` the product of the `batch_dims` leading dims, `D` that of the indexed
//!   dims) and each index tuple to the row `Σ_j idx_j·stride_j` (a negative component counts from
//!   the end of its dim) plus its batch's row offset. ONNX leaves an index outside its dim
//!   undefined; such a tuple is sent to the row past the table, which the gather's table limit
//!   (`dma.gather`'s `limit`) traps on: never another row, never memory past the table;
//! - `graph.gather_elements` becomes a gather of single elements of the flattened data (flat
//!   index = wrapped index · axis stride + the constant offset of the other coordinates; out of
//!   range traps as above); `graph.scatter_nd` with constant indices a gather of constant rows
//!   from the data's rows and the updates'; `graph.top_k` `k` rounds of a maximum (ties by lower
//!   index, in f32); `graph.one_hot` `where(indices == iota, on, off)`; `graph.tile` with
//!   constant repeats a broadcast between two reshapes;
//! - `graph.dequantize_linear` becomes `(cast(x) − cast(zp)) · scale` and
//!   `graph.quantize_linear` `cast(round(x / scale) + zp)` (round half to even; the store to the
//!   integer type saturates, an f8 result is the saturating or NaN-producing Cast its
//!   `saturate` asks for), with a per-axis scale reshaped to broadcast along its axis and a
//!   blocked one (`block_size` dividing the axis) over the axis split into blocks; other block
//!   shapes stay as they are.
//!
//! - `graph.einsum` with one or two operands becomes diagonals (a strided slice of the
//!   flattened pair of axes), sums over the letters only one operand has, one batched
//!   `graph.matmul` over `[batch, free, contracted]` views of the operands, and transposes into
//!   the output's letter order (ellipses expand to letters right-aligned; operands must agree on
//!   the extent of every shared letter).
//!
//! Needs static shapes (what the backend pipeline has); an op whose shapes are not static is
//! left as it is for `lower-llmpu` to refuse by name.

use super::PassInfo;
use crate::backend::plan::{const_ints, shape_of};
use crate::passes::fold_constants::fold_op;
use crate::dialects::graph;
use crate::interp::Tensor;
use crate::ir::{Attribute, Location, Module, OpId, OpSpec, ScalarType, Type, ValueId};
use crate::pass::{Pass, PassError};

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "legalize",
    description: "rewrite ops without a backend kernel (run-time Trilu k, GatherND, GatherElements, ScatterND, TopK, OneHot, Tile, Q/DQ, Einsum) into ops with one",
    create: || Box::new(Legalize),
};

/// The pass.
pub struct Legalize;

impl Pass for Legalize {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        for op in m.walk_all() {
            let d = m.op(op);
            if d.erased || d.parent.is_none() {
                continue;
            }
            let loc = d.loc.clone();
            let first_new = m.op_count();
            let done = match d.name.as_str() {
                graph::Trilu::NAME => trilu(m, op),
                graph::GatherNd::NAME => gather_nd(m, op),
                graph::GatherElements::NAME => gather_elements(m, op),
                graph::Tile::NAME => tile(m, op),
                graph::ScatterNd::NAME => scatter_nd(m, op),
                graph::TopK::NAME => top_k(m, op),
                graph::OneHot::NAME => one_hot(m, op),
                graph::QuantizeLinear::NAME | graph::DequantizeLinear::NAME => quant(m, op),
                graph::Einsum::NAME => match einsum(m, op) {
                    Some(()) => Ok(true),
                    None => Err(einsum_refusal(m, op)),
                },
                _ => Ok(false),
            }
            .map_err(|e| PassError::failed(INFO.name, loc.clone(), e))?;
            if done {
                m.erase_op(op);
                // Steps whose operands are all constants fold now (a GatherND with constant
                // indices becomes a gather of constant rows, which copies from any view). Steps
                // kept in f32 stay ops: a folded constant would be stored in the compile's
                // precision.
                for o in (first_new..m.op_count()).map(|i| OpId(i as u32)) {
                    if !m.op(o).erased && m.attr(o, crate::backend::plan::KEEP_F32).is_none() {
                        fold_op(m, o).map_err(|e| PassError::failed(INFO.name, loc.clone(), e))?;
                    }
                }
            }
        }
        crate::passes::dce::erase_dead_ops(m);
        Ok(())
    }
}

/// `loc` with every name suffixed `/step`: the location of a step of a rewrite, so only the op
/// that produces the rewritten op's value carries that op's location (`generate --verify`
/// compares a probed op with the ONNX node its location names).
fn step_loc(loc: &Location, step: &str) -> Location {
    let suffix = step.strip_prefix(graph::PREFIX).unwrap_or(step);
    match loc {
        Location::Unknown => Location::Unknown,
        Location::Name(n) => Location::name(&format!("{n}/{suffix}")),
        Location::Fused(v) => Location::Fused(v.iter().map(|n| format!("{n}/{suffix}").into()).collect()),
    }
}

/// Replaces the result `r` of the rewritten op by `y`, whose producer takes the op's location.
fn finish(m: &mut Module, op: OpId, r: ValueId, y: ValueId) {
    let loc = m.op(op).loc.clone();
    if let Some(p) = m.defining_op(y)
        && p != op
        && m.op(p).name != graph::Constant::NAME
    {
        m.op_mut(p).loc = loc;
    }
    m.replace_all_uses(r, y);
}

/// Inserts `name(operands)` with result type `ty` before `at`, located as a step of `at`.
fn insert(
    m: &mut Module,
    at: OpId,
    name: &str,
    operands: &[ValueId],
    ty: Type,
    attrs: Vec<(&str, Attribute)>,
) -> ValueId {
    let loc = step_loc(&m.op(at).loc, name);
    let mut spec = OpSpec::new(name, loc).operands(operands).results(vec![ty]);
    for (k, a) in attrs {
        spec = spec.attr(k, a);
    }
    let op = m.create_op(spec);
    m.insert_op_before(at, op);
    m.op(op).results[0]
}

fn constant(m: &mut Module, at: OpId, hint: &str, t: &Tensor) -> ValueId {
    let loc: Location = m.op(at).loc.clone();
    crate::passes::fold_constants::insert_constant(m, at, hint, t, loc)
}

fn ints(m: &mut Module, at: OpId, hint: &str, shape: Vec<usize>, v: Vec<i64>) -> ValueId {
    crate::passes::fold_constants::insert_i64s(m, at, hint, shape, v)
}

fn tensor_ty(shape: &[u64], e: ScalarType) -> Type {
    Type::tensor(shape, e)
}

/// Trilu with a run-time `k`; `Ok(false)` when `k` is absent or constant, or shapes are unknown.
fn trilu(m: &mut Module, op: OpId) -> Result<bool, String> {
    let Some(k) = graph::operand_slot(m, op, 1) else {
        return Ok(false);
    };
    if const_ints(m, k).is_some() {
        return Ok(false);
    }
    let x = m.op(op).operands[0];
    let (Some(shape), Some(elem)) = (shape_of(m, x), m.value_type(x).elem()) else {
        return Ok(false);
    };
    let rank = shape.len();
    if rank < 2 || m.value_type(k).elem() != Some(ScalarType::I64) {
        return Ok(false);
    }
    let (n, c) = (shape[rank - 2] as usize, shape[rank - 1] as usize);
    let upper = m
        .attr(op, "upper")
        .and_then(Attribute::as_int)
        .unwrap_or(1)
        != 0;
    let diag: Vec<i64> = (0..n * c)
        .map(|e| (e % c) as i64 - (e / c) as i64)
        .collect();
    let d = ints(m, op, "trilu_diagonal", vec![n, c], diag);
    // k is a scalar or a one-element tensor: compare against it as a scalar.
    let k = if shape_of(m, k).is_some_and(|s| s.is_empty()) {
        k
    } else {
        let shp = ints(m, op, "scalar_shape", vec![0], vec![]);
        insert(
            m,
            op,
            graph::Reshape::NAME,
            &[k, shp],
            tensor_ty(&[], ScalarType::I64),
            vec![],
        )
    };
    let cmp = if upper {
        graph::GreaterOrEqual::NAME
    } else {
        graph::LessOrEqual::NAME
    };
    let keep = insert(
        m,
        op,
        cmp,
        &[d, k],
        tensor_ty(&[n as u64, c as u64], ScalarType::I1),
        vec![],
    );
    let zero = constant(
        m,
        op,
        "trilu_zero",
        &crate::interp::tensor::zeros(elem, vec![]),
    );
    let r = m.op(op).results[0];
    let ty = m.value_type(r).clone();
    let out = insert(m, op, graph::Where::NAME, &[keep, x, zero], ty, vec![]);
    finish(m, op, r, out);
    Ok(true)
}

/// GatherND as a row gather (a tuple out of range traps at the gather); `Ok(false)` when shapes are unknown or the index tuple is empty.
fn gather_nd(m: &mut Module, op: OpId) -> Result<bool, String> {
    let (data, idx) = (m.op(op).operands[0], m.op(op).operands[1]);
    let (Some(ds), Some(is)) = (shape_of(m, data), shape_of(m, idx)) else {
        return Ok(false);
    };
    let Some(elem) = m.value_type(data).elem() else {
        return Ok(false);
    };
    if m.value_type(idx).elem() != Some(ScalarType::I64) {
        return Ok(false);
    }
    let b = m
        .attr(op, "batch_dims")
        .and_then(Attribute::as_int)
        .unwrap_or(0);
    let b = usize::try_from(b).map_err(|_| format!("batch_dims {b} is negative"))?;
    let Some(&kk) = is.last() else {
        return Ok(false);
    };
    let k = kk as usize;
    if k == 0 || b + k > ds.len() || b >= is.len() {
        return Ok(false);
    }
    let us = |v: &[u64]| v.iter().map(|&x| x as usize).collect::<Vec<usize>>();
    let (ds, is) = (us(&ds), us(&is));
    let batch: usize = ds[..b].iter().product();
    let rows: usize = ds[b..b + k].iter().product();
    let rest = ds[b + k..].to_vec();
    let strides: Vec<i64> = (0..k)
        .map(|j| ds[b + j + 1..b + k].iter().product::<usize>() as i64)
        .collect();
    let dims: Vec<i64> = ds[b..b + k].iter().map(|&d| d as i64).collect();
    let ishape: Vec<u64> = is.iter().map(|&d| d as u64).collect();
    let lead: Vec<u64> = ishape[..ishape.len() - 1].to_vec();
    let i64t = |s: &[u64]| tensor_ty(s, ScalarType::I64);
    // A negative component counts from the end of its dim.
    let zero = ints(m, op, "gather_nd_zero", vec![], vec![0]);
    let neg = insert(
        m,
        op,
        graph::Less::NAME,
        &[idx, zero],
        tensor_ty(&ishape, ScalarType::I1),
        vec![],
    );
    let dimc = ints(m, op, "gather_nd_dims", vec![k], dims);
    let wrapped = insert(m, op, graph::Add::NAME, &[idx, dimc], i64t(&ishape), vec![]);
    let fixed = insert(
        m,
        op,
        graph::Where::NAME,
        &[neg, wrapped, idx],
        i64t(&ishape),
        vec![],
    );
    let sc = ints(m, op, "gather_nd_strides", vec![k], strides);
    let weighted = insert(m, op, graph::Mul::NAME, &[fixed, sc], i64t(&ishape), vec![]);
    let axes = ints(m, op, "gather_nd_axes", vec![1], vec![-1]);
    let mut row = insert(
        m,
        op,
        graph::ReduceSum::NAME,
        &[weighted, axes],
        i64t(&lead),
        vec![("keepdims", Attribute::i64(0))],
    );
    if b > 0 {
        // Row offset of each index tuple's batch: its flat batch position times `rows`.
        let mut oshape = is[..b].to_vec();
        oshape.extend(std::iter::repeat_n(1, lead.len() - b));
        let off: Vec<i64> = (0..batch).map(|i| (i * rows) as i64).collect();
        let offc = ints(m, op, "gather_nd_batch_rows", oshape, off);
        row = insert(m, op, graph::Add::NAME, &[row, offc], i64t(&lead), vec![]);
    }
    // A tuple with a component outside its dim (after wrapping) reads row `total`, which the
    // gather's table limit traps on, instead of another row.
    let total = (batch * rows) as i64;
    let bt = |s: &[u64]| tensor_ty(s, ScalarType::I1);
    let below = insert(m, op, graph::Less::NAME, &[fixed, zero], bt(&ishape), vec![]);
    let above = insert(m, op, graph::GreaterOrEqual::NAME, &[fixed, dimc], bt(&ishape), vec![]);
    let bad = insert(m, op, graph::Or::NAME, &[below, above], bt(&ishape), vec![]);
    let bad = insert(m, op, graph::Cast::NAME, &[bad], i64t(&ishape), vec![]);
    let bad = insert(
        m,
        op,
        graph::ReduceMax::NAME,
        &[bad, axes],
        i64t(&lead),
        vec![("keepdims", Attribute::i64(0))],
    );
    let bad = insert(m, op, graph::Greater::NAME, &[bad, zero], bt(&lead), vec![]);
    let past = ints(m, op, "gather_nd_past_the_table", vec![], vec![total]);
    let row = insert(m, op, graph::Where::NAME, &[bad, past, row], i64t(&lead), vec![]);
    let mut tshape = vec![total];
    tshape.extend(rest.iter().map(|&d| d as i64));
    let tshape_u: Vec<u64> = tshape.iter().map(|&d| d as u64).collect();
    let shp = ints(m, op, "gather_nd_table", vec![tshape.len()], tshape);
    let table = insert(
        m,
        op,
        graph::Reshape::NAME,
        &[data, shp],
        tensor_ty(&tshape_u, elem),
        vec![],
    );
    let r = m.op(op).results[0];
    let ty = m.value_type(r).clone();
    let out = insert(
        m,
        op,
        graph::Gather::NAME,
        &[table, row],
        ty,
        vec![("axis", Attribute::i64(0))],
    );
    finish(m, op, r, out);
    Ok(true)
}

/// An f32 constant of `shape` with values `v`, kept in f32 in a bf16 compile.
fn f32s(m: &mut Module, at: OpId, hint: &str, shape: &[u64], v: Vec<f32>) -> ValueId {
    let loc = m.op(at).loc.clone();
    let t = Tensor::new(shape.iter().map(|&d| d as usize).collect(), v);
    let c = crate::passes::fold_constants::insert_constant(m, at, hint, &t, loc);
    if let Some(o) = m.defining_op(c) {
        m.set_attr(o, crate::backend::plan::KEEP_F32, Attribute::Bool(true));
    }
    c
}

/// TopK with a constant `k` as `k` rounds of a maximum along the axis: each round takes the
/// largest remaining value and the lowest index holding it (ONNX's order for equal values), then
/// marks that index taken. Values and indices are computed in f32 (exact for indices below 2^24)
/// and kept in f32 in a bf16 compile. `Ok(false)` when shapes or `k` are unknown.
fn top_k(m: &mut Module, op: OpId) -> Result<bool, String> {
    let (x, kv) = (m.op(op).operands[0], m.op(op).operands[1]);
    let (Some(xs), Some(k), Some(elem)) = (shape_of(m, x), const_ints(m, kv), m.value_type(x).elem()) else {
        return Ok(false);
    };
    let rank = xs.len() as i64;
    let axis = m.attr(op, "axis").and_then(Attribute::as_int).unwrap_or(-1);
    let a = crate::dialects::normalize_axis(axis, xs.len())?;
    let (n, k) = (xs[a], k.first().copied().unwrap_or(-1));
    if k < 0 || k as u64 > n {
        return Err(format!("k = {k} is outside 0..={n}"));
    }
    if n >= 1 << 24 {
        return Err(format!("an axis of {n} elements: indices past 2^24 are not exact in f32"));
    }
    let largest = m.attr(op, "largest").and_then(Attribute::as_int).unwrap_or(1) != 0;
    let f = |s: &[u64]| tensor_ty(s, ScalarType::F32);
    let b = |s: &[u64]| tensor_ty(s, ScalarType::I1);
    let mut one = xs.clone();
    one[a] = 1;
    let mut col = vec![1u64; xs.len()];
    col[a] = n;
    let first_new = m.op_count();
    let mut y = x;
    if elem != ScalarType::F32 {
        y = insert(m, op, graph::Cast::NAME, &[y], f(&xs), vec![]);
    }
    if !largest {
        y = insert(m, op, graph::Neg::NAME, &[y], f(&xs), vec![]);
    }
    let iota = f32s(m, op, "top_k_index", &col, (0..n).map(|i| i as f32).collect());
    let neg_iota = f32s(m, op, "top_k_neg_index", &col, (0..n).map(|i| -(i as f32)).collect());
    let none = f32s(m, op, "top_k_none", &[], vec![-16_777_216.0]);
    let axes = ints(m, op, "top_k_axis", vec![1], vec![a as i64 - rank]);
    let mut taken: Option<ValueId> = None;
    let (mut vals, mut idxs) = (vec![], vec![]);
    let low = f32s(m, op, "top_k_lowest", &[], vec![f32::NEG_INFINITY]);
    for _ in 0..k {
        let free = match taken {
            Some(t) => insert(m, op, graph::Not::NAME, &[t], b(&xs), vec![]),
            None => all_true(m, op, &xs),
        };
        let live = insert(m, op, graph::Where::NAME, &[free, y, low], f(&xs), vec![]);
        let keep = vec![("keepdims", Attribute::i64(1))];
        let best = insert(m, op, graph::ReduceMax::NAME, &[live, axes], f(&one), keep.clone());
        let at_best = insert(m, op, graph::Equal::NAME, &[live, best], b(&xs), vec![]);
        let cand_ok = insert(m, op, graph::And::NAME, &[at_best, free], b(&xs), vec![]);
        let cand = insert(m, op, graph::Where::NAME, &[cand_ok, neg_iota, none], f(&xs), vec![]);
        let neg_idx = insert(m, op, graph::ReduceMax::NAME, &[cand, axes], f(&one), keep);
        let idx = insert(m, op, graph::Neg::NAME, &[neg_idx], f(&one), vec![]);
        let hit = insert(m, op, graph::Equal::NAME, &[iota, idx], b(&xs), vec![]);
        taken = Some(match taken {
            Some(t) => insert(m, op, graph::Or::NAME, &[t, hit], b(&xs), vec![]),
            None => hit,
        });
        vals.push(if largest { best } else { insert(m, op, graph::Neg::NAME, &[best], f(&one), vec![]) });
        idxs.push(idx);
    }
    let mut out = xs.clone();
    out[a] = k as u64;
    let cat = |m: &mut Module, v: &[ValueId]| {
        insert(m, op, graph::Concat::NAME, v, f(&out), vec![("axis", Attribute::i64(a as i64))])
    };
    let (mut v, i) = (cat(m, &vals), cat(m, &idxs));
    let i = insert(m, op, graph::Cast::NAME, &[i], tensor_ty(&out, ScalarType::I64), vec![]);
    mark_f32_steps(m, first_new);
    if elem != ScalarType::F32 {
        v = insert(m, op, graph::Cast::NAME, &[v], tensor_ty(&out, elem), vec![]);
    }
    let (r0, r1) = (m.op(op).results[0], m.op(op).results[1]);
    finish(m, op, r0, v);
    finish(m, op, r1, i);
    Ok(true)
}

/// A constant all-true `i1` tensor of `shape`.
fn all_true(m: &mut Module, at: OpId, shape: &[u64]) -> ValueId {
    let loc = m.op(at).loc.clone();
    let n: u64 = shape.iter().product();
    let t = Tensor::new(shape.iter().map(|&d| d as usize).collect(), vec![true; n as usize]);
    crate::passes::fold_constants::insert_constant(m, at, "all", &t, loc)
}

/// Marks every op created since `first_new` with an f32 result, constants aside (those that must
/// stay exact are made by [`f32s`]), to stay f32 in a bf16 compile.
fn mark_f32_steps(m: &mut Module, first_new: usize) {
    for o in (first_new..m.op_count()).map(|i| OpId(i as u32)) {
        let d = m.op(o);
        let f32_result = d.results.first().and_then(|&r| m.value_type(r).elem()) == Some(ScalarType::F32);
        if !d.erased && d.name != graph::Constant::NAME && f32_result {
            m.set_attr(o, crate::backend::plan::KEEP_F32, Attribute::Bool(true));
        }
    }
}

/// OneHot with a constant depth as `where(indices == iota, on, off)` over the new axis (negative
/// indices counted from the depth). `Ok(false)` when shapes or the depth are unknown.
fn one_hot(m: &mut Module, op: OpId) -> Result<bool, String> {
    let (idx, depth, values) = (m.op(op).operands[0], m.op(op).operands[1], m.op(op).operands[2]);
    let (Some(is), Some(d), Some(ve)) = (shape_of(m, idx), const_ints(m, depth), m.value_type(values).elem()) else {
        return Ok(false);
    };
    let Some(&d) = d.first().filter(|&&d| d >= 1) else {
        return Err("OneHot depth must be at least 1".into());
    };
    let a = crate::dialects::normalize_axis(m.attr(op, "axis").and_then(Attribute::as_int).unwrap_or(-1), is.len() + 1)?;
    let ie = m.value_type(idx).elem().unwrap_or(ScalarType::I64);
    let mut us = is.clone();
    us.insert(a, 1);
    let mut out = is.clone();
    out.insert(a, d as u64);
    let mut col = vec![1u64; out.len()];
    col[a] = d as u64;
    let ax = ints(m, op, "one_hot_axis", vec![1], vec![a as i64]);
    let x = insert(m, op, graph::Unsqueeze::NAME, &[idx, ax], tensor_ty(&us, ie), vec![]);
    let x = if ie == ScalarType::I64 { x } else { insert(m, op, graph::Cast::NAME, &[x], tensor_ty(&us, ScalarType::I64), vec![]) };
    let zero = ints(m, op, "one_hot_zero", vec![], vec![0]);
    let neg = insert(m, op, graph::Less::NAME, &[x, zero], tensor_ty(&us, ScalarType::I1), vec![]);
    let dc = ints(m, op, "one_hot_depth", vec![], vec![d]);
    let wrapped = insert(m, op, graph::Add::NAME, &[x, dc], tensor_ty(&us, ScalarType::I64), vec![]);
    let x = insert(m, op, graph::Where::NAME, &[neg, wrapped, x], tensor_ty(&us, ScalarType::I64), vec![]);
    let iota = ints(m, op, "one_hot_index", col.iter().map(|&c| c as usize).collect(), (0..d).collect());
    let hit = insert(m, op, graph::Equal::NAME, &[x, iota], tensor_ty(&out, ScalarType::I1), vec![]);
    let vshape = [1u64];
    let s0 = ints(m, op, "one_hot_off_at", vec![1], vec![0]);
    let s1 = ints(m, op, "one_hot_on_at", vec![1], vec![1]);
    let off = insert(m, op, graph::Gather::NAME, &[values, s0], tensor_ty(&vshape, ve), vec![("axis", Attribute::i64(0))]);
    let on = insert(m, op, graph::Gather::NAME, &[values, s1], tensor_ty(&vshape, ve), vec![("axis", Attribute::i64(0))]);
    let y = insert(m, op, graph::Where::NAME, &[hit, on, off], tensor_ty(&out, ve), vec![]);
    let r = m.op(op).results[0];
    finish(m, op, r, y);
    Ok(true)
}

/// ScatterND with constant indices and no reduction as a gather of constant rows from the data's
/// rows followed by the updates' (each row from the data, or from the last update that writes
/// it). Refused, with the reason, for indices computed at run time or a reduction; `Ok(false)`
/// when shapes are unknown.
fn scatter_nd(m: &mut Module, op: OpId) -> Result<bool, String> {
    let (data, idx, upd) = (m.op(op).operands[0], m.op(op).operands[1], m.op(op).operands[2]);
    let (Some(ds), Some(is), Some(elem)) = (shape_of(m, data), shape_of(m, idx), m.value_type(data).elem()) else {
        return Ok(false);
    };
    let reduction = m.attr(op, "reduction").and_then(Attribute::as_str).unwrap_or("none");
    if reduction != "none" {
        return Err(format!("ScatterND with reduction `{reduction}` has no kernel (only `none`)"));
    }
    let Some(iv) = const_ints(m, idx) else {
        return Err("ScatterND with indices computed at run time has no kernel; only constant indices are lowered".into());
    };
    let k = *is.last().ok_or("ScatterND indices must have rank >= 1")? as usize;
    if k == 0 || k > ds.len() {
        return Err(format!("index tuples of {k} components for data of rank {}", ds.len()));
    }
    // Offsets of whole rows: the data viewed as [rows, inner], one row per index tuple.
    let rows: u64 = ds[..k].iter().product();
    let rows_shape: Vec<usize> = ds[..k].iter().map(|&d| d as usize).collect();
    let targets = crate::interp::ops::scatter_nd_offsets(&rows_shape, &iv, k)?;
    let mut src: Vec<i64> = (0..rows as i64).collect();
    for (j, &t) in targets.iter().enumerate() {
        src[t] = rows as i64 + j as i64;
    }
    let rest: Vec<u64> = ds[k..].to_vec();
    let with_rest = |lead: u64| -> Vec<u64> { std::iter::once(lead).chain(rest.iter().copied()).collect() };
    let shape_const = |m: &mut Module, hint: &str, s: &[u64]| {
        ints(m, op, hint, vec![s.len()], s.iter().map(|&d| d as i64).collect())
    };
    let n_upd = targets.len() as u64;
    let c = shape_const(m, "scatter_nd_rows", &with_rest(rows));
    let d2 = insert(m, op, graph::Reshape::NAME, &[data, c], tensor_ty(&with_rest(rows), elem), vec![]);
    let c = shape_const(m, "scatter_nd_update_rows", &with_rest(n_upd));
    let u2 = insert(m, op, graph::Reshape::NAME, &[upd, c], tensor_ty(&with_rest(n_upd), elem), vec![]);
    let both = insert(
        m,
        op,
        graph::Concat::NAME,
        &[d2, u2],
        tensor_ty(&with_rest(rows + n_upd), elem),
        vec![("axis", Attribute::i64(0))],
    );
    let sc = ints(m, op, "scatter_nd_sources", vec![src.len()], src);
    let g = insert(m, op, graph::Gather::NAME, &[both, sc], tensor_ty(&with_rest(rows), elem), vec![("axis", Attribute::i64(0))]);
    let c = shape_const(m, "scatter_nd_shape", &ds);
    let y = insert(m, op, graph::Reshape::NAME, &[g, c], tensor_ty(&ds, elem), vec![]);
    let r = m.op(op).results[0];
    finish(m, op, r, y);
    Ok(true)
}

/// Tile with constant repeats as a broadcast: `x` reshaped to `[1, d0, 1, d1, ..]`, expanded to
/// `[r0, d0, r1, d1, ..]` and reshaped to `[r0·d0, r1·d1, ..]`. `Ok(false)` when the repeats are
/// given at run time or shapes are unknown.
fn tile(m: &mut Module, op: OpId) -> Result<bool, String> {
    let (x, reps) = (m.op(op).operands[0], m.op(op).operands[1]);
    let (Some(xs), Some(rs), Some(elem)) = (shape_of(m, x), const_ints(m, reps), m.value_type(x).elem()) else {
        return Ok(false);
    };
    if rs.len() != xs.len() || rs.iter().any(|&r| r < 0) {
        return Err(format!("repeats {rs:?} do not give one non-negative count per axis of {xs:?}"));
    }
    let rs: Vec<u64> = rs.iter().map(|&r| r as u64).collect();
    let spread: Vec<u64> = xs.iter().flat_map(|&d| [1, d]).collect();
    let wide: Vec<u64> = rs.iter().zip(&xs).flat_map(|(&r, &d)| [r, d]).collect();
    let out: Vec<u64> = rs.iter().zip(&xs).map(|(&r, &d)| r * d).collect();
    let shape_const = |m: &mut Module, hint: &str, s: &[u64]| {
        ints(m, op, hint, vec![s.len()], s.iter().map(|&d| d as i64).collect())
    };
    let c = shape_const(m, "tile_spread", &spread);
    let y = insert(m, op, graph::Reshape::NAME, &[x, c], tensor_ty(&spread, elem), vec![]);
    let c = shape_const(m, "tile_wide", &wide);
    let y = insert(m, op, graph::Expand::NAME, &[y, c], tensor_ty(&wide, elem), vec![]);
    let c = shape_const(m, "tile_shape", &out);
    let y = insert(m, op, graph::Reshape::NAME, &[y, c], tensor_ty(&out, elem), vec![]);
    let r = m.op(op).results[0];
    finish(m, op, r, y);
    Ok(true)
}

/// GatherElements as a gather of single elements from the flattened data: each element's flat
/// index is its (wrapped) index times the axis stride plus the constant offset of its other
/// coordinates; an index out of range traps at the gather, as GatherND's tuples do. `Ok(false)` when shapes are unknown
/// or the indices are not i64.
fn gather_elements(m: &mut Module, op: OpId) -> Result<bool, String> {
    let (data, idx) = (m.op(op).operands[0], m.op(op).operands[1]);
    let (Some(ds), Some(is)) = (shape_of(m, data), shape_of(m, idx)) else {
        return Ok(false);
    };
    let Some(elem) = m.value_type(data).elem() else {
        return Ok(false);
    };
    if m.value_type(idx).elem() != Some(ScalarType::I64) || ds.len() != is.len() || ds.is_empty() {
        return Ok(false);
    }
    let rank = ds.len() as i64;
    let axis = m.attr(op, "axis").and_then(Attribute::as_int).unwrap_or(0);
    if axis < -rank || axis >= rank {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    let a = (if axis < 0 { axis + rank } else { axis }) as usize;
    if let Some(d) = (0..ds.len()).find(|&d| d != a && is[d] > ds[d]) {
        return Err(format!(
            "indices dim {d} ({}) is past the data's ({})",
            is[d], ds[d]
        ));
    }
    let dstride: Vec<u64> = (0..ds.len()).map(|d| ds[d + 1..].iter().product()).collect();
    let istride: Vec<u64> = (0..is.len()).map(|d| is[d + 1..].iter().product()).collect();
    let count: u64 = is.iter().product();
    let offsets: Vec<i64> = (0..count)
        .map(|p| {
            (0..is.len())
                .filter(|&d| d != a)
                .map(|d| (p / istride[d] % is[d] * dstride[d]) as i64)
                .sum()
        })
        .collect();
    let total: u64 = ds.iter().product();
    let i64t = |s: &[u64]| tensor_ty(s, ScalarType::I64);
    let zero = ints(m, op, "gather_elements_zero", vec![], vec![0]);
    let neg = insert(m, op, graph::Less::NAME, &[idx, zero], tensor_ty(&is, ScalarType::I1), vec![]);
    let extent = ints(m, op, "gather_elements_extent", vec![], vec![ds[a] as i64]);
    let wrapped = insert(m, op, graph::Add::NAME, &[idx, extent], i64t(&is), vec![]);
    let fixed = insert(m, op, graph::Where::NAME, &[neg, wrapped, idx], i64t(&is), vec![]);
    let stride = ints(m, op, "gather_elements_stride", vec![], vec![dstride[a] as i64]);
    let scaled = insert(m, op, graph::Mul::NAME, &[fixed, stride], i64t(&is), vec![]);
    let shape: Vec<usize> = is.iter().map(|&d| d as usize).collect();
    let off = ints(m, op, "gather_elements_offsets", shape, offsets);
    let flat = insert(m, op, graph::Add::NAME, &[scaled, off], i64t(&is), vec![]);
    // An index outside its axis (after wrapping) reads element `total`, which the gather's table
    // limit traps on, instead of another element.
    let bt = tensor_ty(&is, ScalarType::I1);
    let below = insert(m, op, graph::Less::NAME, &[fixed, zero], bt.clone(), vec![]);
    let above = insert(m, op, graph::GreaterOrEqual::NAME, &[fixed, extent], bt.clone(), vec![]);
    let bad = insert(m, op, graph::Or::NAME, &[below, above], bt, vec![]);
    let past = ints(m, op, "gather_elements_past_the_table", vec![], vec![total as i64]);
    let flat = insert(m, op, graph::Where::NAME, &[bad, past, flat], i64t(&is), vec![]);
    let shp = ints(m, op, "gather_elements_table", vec![1], vec![total as i64]);
    let table = insert(m, op, graph::Reshape::NAME, &[data, shp], tensor_ty(&[total], elem), vec![]);
    let r = m.op(op).results[0];
    let ty = m.value_type(r).clone();
    let out = insert(m, op, graph::Gather::NAME, &[table, flat], ty, vec![("axis", Attribute::i64(0))]);
    finish(m, op, r, out);
    Ok(true)
}

/// The shapes under which `x` (`xs`) and its scale (`ss`) broadcast elementwise: `(x's working
/// shape, the scale's)`, or `None` for a block shape that does not divide the axis.
fn quant_shapes(xs: &[u64], ss: &[u64], axis: i64, block: i64) -> Option<(Vec<u64>, Vec<u64>)> {
    let r = xs.len();
    if ss.iter().product::<u64>() == 1 {
        return Some((xs.to_vec(), vec![]));
    }
    let a = usize::try_from(if axis < 0 { axis + r as i64 } else { axis }).ok()?;
    if a >= r {
        return None;
    }
    if block <= 0 {
        if ss.len() != 1 || ss[0] != xs[a] {
            return None;
        }
        let mut b = vec![1; r];
        b[a] = xs[a];
        return Some((xs.to_vec(), b));
    }
    let blk = block as u64;
    if ss.len() != r || !xs[a].is_multiple_of(blk) || ss[a] != xs[a] / blk {
        return None;
    }
    if (0..r).any(|d| d != a && ss[d] != xs[d]) {
        return None;
    }
    let mut work = xs[..a].to_vec();
    work.extend([xs[a] / blk, blk]);
    work.extend(&xs[a + 1..]);
    let mut b = ss[..=a].to_vec();
    b.push(1);
    b.extend(&ss[a + 1..]);
    Some((work, b))
}

fn reshape_to(m: &mut Module, at: OpId, v: ValueId, shape: &[u64]) -> Option<ValueId> {
    if shape_of(m, v)? == shape {
        return Some(v);
    }
    let elem = m.value_type(v).elem()?;
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let c = ints(m, at, "shape", vec![dims.len()], dims);
    Some(insert(m, at, graph::Reshape::NAME, &[v, c], tensor_ty(shape, elem), vec![]))
}

fn cast_to(m: &mut Module, at: OpId, v: ValueId, elem: ScalarType) -> Option<ValueId> {
    if m.value_type(v).elem()? == elem {
        return Some(v);
    }
    let shape = shape_of(m, v)?;
    Some(insert(m, at, graph::Cast::NAME, &[v], tensor_ty(&shape, elem), vec![]))
}

/// Quantize / DequantizeLinear as elementwise ops; `Ok(false)` for shapes it cannot broadcast.
/// The f32 steps carry [`crate::backend::plan::KEEP_F32`]: a bf16 compile keeps them in f32,
/// so the rounding sees the value the op would (16-bit codes are past bf16's 8 bits).
fn quant(m: &mut Module, op: OpId) -> Result<bool, String> {
    let first_new = m.op_count();
    let done = quant_inner(m, op).is_some();
    if !done && shape_of(m, m.op(op).operands[0]).is_some() {
        // Static shapes the rewrite still cannot express: say why (nothing else lowers Q/DQ).
        let (xs, ss) = (
            shape_of(m, m.op(op).operands[0]).unwrap_or_default(),
            shape_of(m, m.op(op).operands[1]).unwrap_or_default(),
        );
        let block = m.attr(op, "block_size").and_then(Attribute::as_int).unwrap_or(0);
        let axis = m.attr(op, "axis").and_then(Attribute::as_int).unwrap_or(1);
        return Err(format!(
            "`{}` is not supported here: a scale of shape {ss:?} does not broadcast over the input {xs:?} along axis {axis}{}",
            m.op(op).name,
            if block > 0 {
                format!(" in blocks of {block} (a block size must divide the axis)")
            } else {
                String::new()
            }
        ));
    }
    mark_f32_steps(m, first_new);
    Ok(done)
}

fn quant_inner(m: &mut Module, op: OpId) -> Option<()> {
    let dequant = m.op(op).name == graph::DequantizeLinear::NAME;
    let x = m.op(op).operands[0];
    let scale = m.op(op).operands[1];
    let zp = graph::operand_slot(m, op, 2);
    let r = m.op(op).results[0];
    let (xs, ss, out) = (shape_of(m, x)?, shape_of(m, scale)?, m.value_type(r).elem()?);
    let attr = |k: &str, d: i64| m.attr(op, k).and_then(Attribute::as_int).unwrap_or(d);
    let (axis, block, saturate) = (attr("axis", 1), attr("block_size", 0), attr("saturate", 1));
    let (work, bshape) = quant_shapes(&xs, &ss, axis, block)?;
    let f32t = ScalarType::F32;
    let xw = reshape_to(m, op, x, &work)?;
    let sb = reshape_to(m, op, scale, &bshape)?;
    let zb = match zp {
        Some(z) => Some(reshape_to(m, op, z, &bshape)?),
        None => None,
    };
    let wf = |e| tensor_ty(&work, e);
    let y = if dequant {
        let t = m.value_type(scale).elem()?;
        let xf = cast_to(m, op, xw, t)?;
        let centered = match zb {
            Some(z) => {
                let zf = cast_to(m, op, z, t)?;
                insert(m, op, graph::Sub::NAME, &[xf, zf], wf(t), vec![])
            }
            None => xf,
        };
        let y = insert(m, op, graph::Mul::NAME, &[centered, sb], wf(t), vec![]);
        cast_to(m, op, y, out)?
    } else {
        let xf = cast_to(m, op, xw, f32t)?;
        let sf = cast_to(m, op, sb, f32t)?;
        let q = insert(m, op, graph::Div::NAME, &[xf, sf], wf(f32t), vec![]);
        let q = if out.is_float() {
            q
        } else {
            insert(m, op, graph::Round::NAME, &[q], wf(f32t), vec![])
        };
        let q = match zb {
            Some(z) => {
                let zf = cast_to(m, op, z, f32t)?;
                insert(m, op, graph::Add::NAME, &[q, zf], wf(f32t), vec![])
            }
            None => q,
        };
        let mut attrs = vec![];
        if out == ScalarType::F8E4M3FN {
            attrs.push(("saturate", Attribute::i64(saturate)));
        }
        insert(m, op, graph::Cast::NAME, &[q], wf(out), attrs)
    };
    let y = reshape_to(m, op, y, &xs)?;
    finish(m, op, r, y);
    Some(())
}

/// Letters of each operand and of the output, ellipses expanded (`None` for a malformed or
/// unsupported equation).
fn einsum_letters(eq: &str, ranks: &[usize]) -> Option<(Vec<Vec<char>>, Vec<char>)> {
    let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let parts: Vec<&str> = lhs.split(',').collect();
    if parts.len() != ranks.len() {
        return None;
    }
    // Ellipsis dims get letters of their own, shared right-aligned across operands.
    let ell: Vec<char> = ('A'..='Z').collect();
    let mut ell_rank = 0;
    let mut ins = vec![];
    for (p, &r) in parts.iter().zip(ranks) {
        let named = p.replace("...", "").chars().count();
        let mut v = vec![];
        if let Some((a, b)) = p.split_once("...") {
            let k = r.checked_sub(named)?;
            ell_rank = ell_rank.max(k);
            v.extend(a.chars());
            v.extend(ell[ell.len() - k..].iter());
            v.extend(b.chars());
        } else {
            if named != r {
                return None;
            }
            v.extend(p.chars());
        }
        if v.iter().any(|c| !c.is_ascii_alphabetic()) {
            return None;
        }
        ins.push(v);
    }
    let out = match rhs {
        Some(r) => {
            let mut v = vec![];
            if let Some((a, b)) = r.split_once("...") {
                v.extend(a.chars());
                v.extend(ell[ell.len() - ell_rank..].iter());
                v.extend(b.chars());
            } else {
                v.extend(r.chars());
            }
            v
        }
        None => {
            // Implicit output: the ellipsis, then the letters used once, alphabetically.
            let mut v: Vec<char> = ell[ell.len() - ell_rank..].to_vec();
            let mut once: Vec<char> = ins
                .iter()
                .flatten()
                .copied()
                .filter(|c| c.is_ascii_lowercase())
                .filter(|c| ins.iter().flatten().filter(|d| *d == c).count() == 1)
                .collect();
            once.sort();
            v.extend(once);
            v
        }
    };
    Some((ins, out))
}

/// One operand reduced to distinct letters: diagonals taken, letters that neither the output
/// nor `keep` has summed out. Returns the value and its letters.
fn einsum_operand(
    m: &mut Module,
    op: OpId,
    mut v: ValueId,
    mut letters: Vec<char>,
    keep: &[char],
) -> Option<(ValueId, Vec<char>)> {
    let elem = m.value_type(v).elem()?;
    // Diagonals: a repeated letter's two axes moved last, flattened, sliced with step n + 1.
    while let Some((i, j)) = (0..letters.len())
        .flat_map(|i| (i + 1..letters.len()).map(move |j| (i, j)))
        .find(|&(i, j)| letters[i] == letters[j])
    {
        let shape = shape_of(m, v)?;
        let n = shape[i];
        if shape[j] != n {
            return None;
        }
        let mut perm: Vec<usize> = (0..letters.len()).filter(|&k| k != i && k != j).collect();
        perm.extend([i, j]);
        let tshape: Vec<u64> = perm.iter().map(|&k| shape[k]).collect();
        let t = insert(
            m,
            op,
            graph::Transpose::NAME,
            &[v],
            tensor_ty(&tshape, elem),
            vec![("perm", Attribute::DenseI64Array(perm.iter().map(|&k| k as i64).collect()))],
        );
        let mut flat = tshape[..tshape.len() - 2].to_vec();
        flat.push(n * n);
        let f = reshape_to(m, op, t, &flat)?;
        let ax = flat.len() as i64 - 1;
        let st = ints(m, op, "diag_start", vec![1], vec![0]);
        let en = ints(m, op, "diag_end", vec![1], vec![(n * n) as i64]);
        let axc = ints(m, op, "diag_axis", vec![1], vec![ax]);
        let step = ints(m, op, "diag_step", vec![1], vec![n as i64 + 1]);
        let mut dshape = flat.clone();
        *dshape.last_mut()? = n;
        v = insert(
            m,
            op,
            graph::Slice::NAME,
            &[f, st, en, axc, step],
            tensor_ty(&dshape, elem),
            vec![],
        );
        let c = letters[i];
        let mut nl: Vec<char> = perm[..perm.len() - 2].iter().map(|&k| letters[k]).collect();
        nl.push(c);
        letters = nl;
    }
    // Sum out letters used nowhere else.
    let gone: Vec<usize> = (0..letters.len())
        .filter(|&k| !keep.contains(&letters[k]))
        .collect();
    if !gone.is_empty() {
        let shape = shape_of(m, v)?;
        let rest: Vec<u64> = (0..letters.len())
            .filter(|k| !gone.contains(k))
            .map(|k| shape[k])
            .collect();
        let axes = ints(m, op, "einsum_sum", vec![gone.len()], gone.iter().map(|&k| k as i64).collect());
        v = insert(
            m,
            op,
            graph::ReduceSum::NAME,
            &[v, axes],
            tensor_ty(&rest, elem),
            vec![("keepdims", Attribute::i64(0))],
        );
        letters = (0..letters.len())
            .filter(|k| !gone.contains(k))
            .map(|k| letters[k])
            .collect();
    }
    Some((v, letters))
}

/// `v` (letters `have`) transposed to the letter order `want` (the same set).
fn permute_letters(m: &mut Module, op: OpId, v: ValueId, have: &[char], want: &[char]) -> Option<ValueId> {
    let perm: Vec<i64> = want
        .iter()
        .map(|c| have.iter().position(|h| h == c).map(|p| p as i64))
        .collect::<Option<_>>()?;
    if perm.iter().enumerate().all(|(i, &p)| i as i64 == p) {
        return Some(v);
    }
    let shape = shape_of(m, v)?;
    let ts: Vec<u64> = perm.iter().map(|&p| shape[p as usize]).collect();
    let elem = m.value_type(v).elem()?;
    Some(insert(
        m,
        op,
        graph::Transpose::NAME,
        &[v],
        tensor_ty(&ts, elem),
        vec![("perm", Attribute::DenseI64Array(perm))],
    ))
}

/// Why `einsum` left `op` as it is.
fn einsum_refusal(m: &Module, op: OpId) -> String {
    let ins = &m.op(op).operands;
    let eq = m.attr(op, "equation").and_then(Attribute::as_str).unwrap_or("");
    let why = if ins.len() > 2 {
        format!("{} operands (one or two are supported)", ins.len())
    } else if ins.len() == 2
        && m.value_type(m.op(op).results[0]).elem().is_some_and(|e| !e.is_float())
    {
        "two integer operands (the matrix engine multiplies floats)".to_string()
    } else if ins.iter().any(|&v| shape_of(m, v).is_none()) {
        "an operand's shape is not static".to_string()
    } else {
        "the operands disagree on a letter's extent (a broadcast ellipsis or size-1 dim), or the equation is malformed".to_string()
    };
    format!("`{}` \"{eq}\" is not supported: {why}", graph::Einsum::NAME)
}

fn einsum(m: &mut Module, op: OpId) -> Option<()> {
    let ins = m.op(op).operands.clone();
    if ins.is_empty() || ins.len() > 2 {
        return None;
    }
    let eq = m.attr(op, "equation").and_then(Attribute::as_str)?.to_string();
    let shapes: Vec<Vec<u64>> = ins.iter().map(|&v| shape_of(m, v)).collect::<Option<_>>()?;
    let (letters, out) = einsum_letters(&eq, &shapes.iter().map(Vec::len).collect::<Vec<_>>())?;
    let r = m.op(op).results[0];
    let elem = m.value_type(r).elem()?;
    let mut extent = std::collections::HashMap::new();
    for (ls, sh) in letters.iter().zip(&shapes) {
        for (c, &d) in ls.iter().zip(sh) {
            if *extent.entry(*c).or_insert(d) != d {
                return None;
            }
        }
    }
    let unique = out.iter().enumerate().all(|(i, c)| !out[..i].contains(c));
    if !unique || out.iter().any(|c| !extent.contains_key(c)) {
        return None;
    }
    let y = if ins.len() == 1 {
        let (v, have) = einsum_operand(m, op, ins[0], letters[0].clone(), &out)?;
        permute_letters(m, op, v, &have, &out)?
    } else {
        if !elem.is_float() {
            return None;
        }
        let keep_a: Vec<char> = out.iter().chain(&letters[1]).copied().collect();
        let keep_b: Vec<char> = out.iter().chain(&letters[0]).copied().collect();
        let (a, la) = einsum_operand(m, op, ins[0], letters[0].clone(), &keep_a)?;
        let (b, lb) = einsum_operand(m, op, ins[1], letters[1].clone(), &keep_b)?;
        let batch: Vec<char> = out.iter().copied().filter(|c| la.contains(c) && lb.contains(c)).collect();
        let left: Vec<char> = out.iter().copied().filter(|c| la.contains(c) && !lb.contains(c)).collect();
        let right: Vec<char> = out.iter().copied().filter(|c| lb.contains(c) && !la.contains(c)).collect();
        let contr: Vec<char> = la.iter().copied().filter(|c| lb.contains(c) && !out.contains(c)).collect();
        let size = |cs: &[char]| cs.iter().map(|c| extent[c]).product::<u64>();
        let (nb, nl, nr, nc) = (size(&batch), size(&left), size(&right), size(&contr));
        let order_a: Vec<char> = batch.iter().chain(&left).chain(&contr).copied().collect();
        let order_b: Vec<char> = batch.iter().chain(&contr).chain(&right).copied().collect();
        let a = permute_letters(m, op, a, &la, &order_a)?;
        let b = permute_letters(m, op, b, &lb, &order_b)?;
        let a = reshape_to(m, op, a, &[nb, nl, nc])?;
        let b = reshape_to(m, op, b, &[nb, nc, nr])?;
        let p = insert(m, op, graph::MatMul::NAME, &[a, b], tensor_ty(&[nb, nl, nr], elem), vec![]);
        let full: Vec<char> = batch.iter().chain(&left).chain(&right).copied().collect();
        let fshape: Vec<u64> = full.iter().map(|c| extent[c]).collect();
        let p = reshape_to(m, op, p, &fshape)?;
        permute_letters(m, op, p, &full, &out)?
    };
    let want = shape_of(m, r)?;
    let y = reshape_to(m, op, y, &want)?;
    finish(m, op, r, y);
    Some(())
}
