//! `fuse-rotary`: the decomposed rotary position embedding becomes one
//! `graph.rope(x, cos, sin) = x·cos + rotate_half(x)·sin` (last axis), computed half by half on the
//! vector unit.
//!
//! Matched from structure only: `add(mul(x, cos), mul(concat(neg(slice(x, D/2..D)), slice(x, 0..D/2)),
//! sin))` (operands of `add`/`mul` in either order) where both slices take the two halves of the last
//! axis of the same `x`, the concat joins them along the last axis, `cos`/`sin` broadcast to `x`'s shape
//! and the `neg`, `concat` and both `mul`s have no other user. However `cos`/`sin` were produced
//! (gathered from a cache by position ids, unsqueezed, computed) does not matter. The ONNX
//! `RotaryEmbedding` op already arrives as the fused `graph.rotary_embedding`.
//!
//! Partial rotary (GPT-NeoX, Phi, StableLM: only the first `r` of the head's `D` elements rotate)
//! is `concat(rope(slice(x, 0..r), cos, sin), slice(x, r..D))` along the last axis once the inner
//! rope is fused; it becomes `graph.rope(x, cos, sin) {rotary_dim = r}`, so neither the slices
//! nor the concat's copy remain.

use crate::dialects::graph;
use super::PassInfo;
use crate::backend::plan::{const_ints, shape_of};
use crate::ir::{Attribute, Location, Module, OpId, OpSpec, ValueId};
use crate::pass::{Pass, PassError};

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "fuse-rotary",
    description: "fuse decomposed rotary embeddings (x·cos + rotate_half(x)·sin) into graph.rope",
    create: || Box::new(FuseRotary),
};

/// The pass.
pub struct FuseRotary;

impl Pass for FuseRotary {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        for op in m.walk_all() {
            if m.op(op).name == graph::Concat::NAME && !m.op(op).erased && m.op(op).parent.is_some() {
                let _ = fuse(m, op);
            }
        }
        for op in m.walk_all() {
            if m.op(op).name == graph::Concat::NAME && !m.op(op).erased && m.op(op).parent.is_some() {
                let _ = fuse_partial(m, op);
            }
        }
        crate::passes::dce::erase_dead_ops(m);
        Ok(())
    }
}

/// `(x, start, end)` when `v` is `slice(x)` along the last axis with step 1 (bounds clamped).
pub(crate) fn slice_last(m: &Module, v: ValueId) -> Option<(ValueId, i64, i64)> {
    let op = m.defining_op_named(v, graph::Slice::NAME)?;
    let ops = &m.op(op).operands;
    let x = ops[0];
    let xs = shape_of(m, x)?;
    let rank = xs.len() as i64;
    let dim = *xs.last()? as i64;
    let starts = const_ints(m, *ops.get(1)?)?;
    let ends = const_ints(m, *ops.get(2)?)?;
    let axes = match ops.get(3) {
        Some(&a) => const_ints(m, a)?,
        None => (0..starts.len() as i64).collect(),
    };
    if let Some(&s) = ops.get(4)
        && const_ints(m, s)?.iter().any(|&st| st != 1)
    {
        return None;
    }
    if starts.len() != 1 || ends.len() != 1 || axes.len() != 1 {
        return None;
    }
    if axes[0] != -1 && axes[0] != rank - 1 {
        return None;
    }
    let norm = |i: i64| if i < 0 { (i + dim).max(0) } else { i.min(dim) };
    Some((x, norm(starts[0]), norm(ends[0])))
}

fn broadcasts_to(a: &[u64], b: &[u64]) -> bool {
    a.len() <= b.len()
        && a
            .iter()
            .rev()
            .zip(b.iter().rev())
            .all(|(&x, &y)| x == y || x == 1)
}

/// `([a, b], result)` when `cat` joins two tensors along the last axis.
fn last_axis_pair(m: &Module, cat: OpId) -> Option<([ValueId; 2], ValueId)> {
    let ins = &m.op(cat).operands;
    let [a, b] = ins[..] else { return None };
    let r = m.op(cat).results[0];
    let rank = shape_of(m, r)?.len() as i64;
    let ax = m.attr(cat, "axis").and_then(Attribute::as_int).unwrap_or(0);
    (ax == -1 || ax == rank - 1).then_some(([a, b], r))
}

fn fuse(m: &mut Module, cat: OpId) -> Option<()> {
    let (ins, r) = last_axis_pair(m, cat)?;
    let neg = m.defining_op_named(ins[0], graph::Neg::NAME)?;
    m.single_use(ins[0])?;
    let (x, s1, e1) = slice_last(m, m.op(neg).operands[0])?;
    let (x2, s2, e2) = slice_last(m, ins[1])?;
    let xs = shape_of(m, x)?;
    let d = *xs.last()? as i64;
    if x2 != x || d % 2 != 0 || (s1, e1, s2, e2) != (d / 2, d, 0, d / 2) {
        return None;
    }
    // rotate_half(x) · sin
    let (m2, slot) = m.single_use(r)?;
    if m.op(m2).name != graph::Mul::NAME {
        return None;
    }
    let sin = m.op(m2).operands[1 - slot];
    let p2 = m.op(m2).results[0];
    // x · cos + that
    let (add, aslot) = m.single_use(p2)?;
    if m.op(add).name != graph::Add::NAME {
        return None;
    }
    let p1 = m.op(add).operands[1 - aslot];
    let m1 = m.defining_op_named(p1, graph::Mul::NAME)?;
    m.single_use(p1)?;
    let cos = match m.op(m1).operands[..] {
        [a, c] if a == x => c,
        [c, a] if a == x => c,
        _ => return None,
    };
    let out = m.op(add).results[0];
    let elem = m.value_type(x).elem();
    for v in [cos, sin, out] {
        if m.value_type(v).elem() != elem {
            return None;
        }
    }
    if shape_of(m, out)? != xs
        || !broadcasts_to(&shape_of(m, cos)?, &xs)
        || !broadcasts_to(&shape_of(m, sin)?, &xs)
    {
        return None;
    }
    let locs = [m1, neg, cat, m2, add].map(|o| m.op(o).loc.clone());
    let ty = m.value_type(out).clone();
    let new = m.create_op(
        OpSpec::new(graph::Rope::NAME, Location::fuse(locs.iter()))
            .operands(&[x, cos, sin])
            .results(vec![ty]),
    );
    m.insert_op_before(add, new);
    let nv = m.op(new).results[0];
    m.replace_all_uses(out, nv);
    Some(())
}

/// `concat(rope(slice(x, 0..r), cos, sin), slice(x, r..D))` → `rope(x, cos, sin) {rotary_dim = r}`.
fn fuse_partial(m: &mut Module, cat: OpId) -> Option<()> {
    let (ins, r) = last_axis_pair(m, cat)?;
    let rope = m.defining_op_named(ins[0], graph::Rope::NAME)?;
    m.single_use(ins[0])?;
    if m.attr(rope, "rotary_dim").is_some() {
        return None;
    }
    let rops = m.op(rope).operands.clone();
    let (x, s1, e1) = slice_last(m, rops[0])?;
    let (x2, s2, e2) = slice_last(m, ins[1])?;
    let d = *shape_of(m, x)?.last()? as i64;
    if x2 != x || s1 != 0 || e1 != s2 || e2 != d || e1 <= 0 || e1 % 2 != 0 || e1 >= d {
        return None;
    }
    if shape_of(m, r)? != shape_of(m, x)? {
        return None;
    }
    let locs = [rope, cat].map(|o| m.op(o).loc.clone());
    let ty = m.value_type(r).clone();
    let new = m.create_op(
        OpSpec::new(graph::Rope::NAME, Location::fuse(locs.iter()))
            .operands(&[x, rops[1], rops[2]])
            .results(vec![ty])
            .attr("rotary_dim", Attribute::i64(e1)),
    );
    m.insert_op_before(cat, new);
    let nv = m.op(new).results[0];
    m.replace_all_uses(r, nv);
    Some(())
}
