//! `canonicalize`: local simplifications to a fixed point, then removal of dead pure ops.
//!
//! Patterns (each keeps types exactly; a value is only replaced by one of identical type):
//! - `graph.identity(x)` → `x`
//! - `graph.reshape` / `squeeze` / `unsqueeze` / `flatten` / `expand` / `cast` whose result type equals
//!   the input type → the input
//! - `graph.transpose` with the identity permutation → the input
//! - `transpose(transpose(x, p1), p2)` → `transpose(x, p1∘p2)` (fused location), or `x` if that is the
//!   identity
//! - `reshape(reshape(x))` → `reshape(x)` when the outer reshape takes its shape from its (static)
//!   result type
//! - `neg(neg(x))` → `x`
//! - `concat` drops its zero-size operands (one left of the result's type → that operand)
//! - constant operands become attributes: the `axes` operand of `graph.squeeze` / `unsqueeze` /
//!   `reduce_*` becomes `axes = array<i64: ...>`; the shape operand of a `graph.reshape` whose result
//!   type is static is dropped (the result type is the shape)

use super::PassInfo;
use super::dce::erase_dead_ops;
use crate::dialects::graph;
use crate::ir::{Attribute, Location, Module, OpId, OpSpec, ValueId};
use crate::pass::{Pass, PassError};

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "canonicalize",
    description: "fold no-op graph ops (identity, same-type reshape/transpose/cast, ...) and erase dead ops",
    create: || Box::new(Canonicalize),
};

/// Upper bound on sweeps; each sweep either changes something or ends the loop.
const MAX_SWEEPS: usize = 32;

/// The pass.
pub struct Canonicalize;

impl Pass for Canonicalize {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        for _ in 0..MAX_SWEEPS {
            let mut changed = false;
            for op in m.walk_all() {
                if !m.op(op).erased && m.op(op).parent.is_some() {
                    changed |= simplify(m, op);
                }
            }
            changed |= erase_dead_ops(m) > 0;
            if !changed {
                break;
            }
        }
        Ok(())
    }
}

fn replace_with(m: &mut Module, op: OpId, v: ValueId) -> bool {
    let r = m.op(op).results[0];
    if m.value_type(r) != m.value_type(v) {
        return false;
    }
    m.replace_all_uses(r, v);
    m.erase_op(op);
    true
}

fn single_io(m: &Module, op: OpId) -> Option<(ValueId, ValueId)> {
    let d = m.op(op);
    match (d.operands.first(), d.results.as_slice()) {
        (Some(&x), [r]) => Some((x, *r)),
        _ => None,
    }
}

/// Moves a constant trailing operand into an attribute (see the module docs).
fn constant_operand_to_attr(m: &mut Module, op: OpId) -> bool {
    let d = m.op(op);
    if d.operands.len() != 2 || d.attr(graph::OPERAND_SLOTS).is_some() {
        return false;
    }
    let name = d.name.as_str();
    let is_reduce = matches!(
        name,
        graph::ReduceMean::NAME | graph::ReduceSum::NAME | graph::ReduceMax::NAME | graph::ReduceL2::NAME
    );
    let is_axes = matches!(
        name,
        graph::Squeeze::NAME | graph::Unsqueeze::NAME
    ) || is_reduce;
    let is_reshape = name == graph::Reshape::NAME
        && d.results.len() == 1
        && m.value_type(d.results[0]).as_tensor().is_some_and(|t| t.static_shape().is_some());
    if !is_axes && !is_reshape {
        return false;
    }
    let Some(value) = crate::interp::constant_value(m, d.operands[1]) else {
        return false;
    };
    if is_axes {
        if is_reduce && value.is_empty() {
            // Empty axes mean "all" or "none" (noop_with_empty_axes); keep the operand.
            return false;
        }
        m.set_attr(op, "axes", Attribute::DenseI64Array(value.to_i64_vec()));
    }
    m.op_mut(op).operands.truncate(1);
    true
}

/// Drops the zero-size operands of a `graph.concat` (they add nothing); a concat left with one
/// operand of the result's type is that operand.
fn concat_without_empty(m: &mut Module, op: OpId) -> bool {
    let d = m.op(op);
    if d.name != graph::Concat::NAME || d.results.len() != 1 {
        return false;
    }
    let empty = |v: &ValueId| {
        m.value_type(*v)
            .as_tensor()
            .and_then(|t| t.static_shape())
            .is_some_and(|s| s.contains(&0))
    };
    let keep: Vec<ValueId> = d.operands.iter().copied().filter(|v| !empty(v)).collect();
    if keep.len() == d.operands.len() || keep.is_empty() {
        return false;
    }
    if let [x] = keep[..]
        && m.value_type(x) == m.value_type(d.results[0])
    {
        return replace_with(m, op, x);
    }
    m.op_mut(op).operands = keep;
    true
}

fn simplify(m: &mut Module, op: OpId) -> bool {
    if constant_operand_to_attr(m, op) || concat_without_empty(m, op) {
        return true;
    }
    let name = m.op(op).name.clone();
    let Some((x, r)) = single_io(m, op) else { return false };
    match name.as_str() {
        graph::Identity::NAME => replace_with(m, op, x),
        graph::Reshape::NAME | graph::Squeeze::NAME | graph::Unsqueeze::NAME | graph::Flatten::NAME | graph::Expand::NAME | graph::Cast::NAME
            if m.value_type(x) == m.value_type(r) =>
        {
            replace_with(m, op, x)
        }
        graph::Reshape::NAME if m.op(op).operands.len() == 1 => {
            let Some(inner) = m.defining_op_named(x, graph::Reshape::NAME) else { return false };
            let src = m.op(inner).operands[0];
            m.op_mut(op).operands[0] = src;
            let loc = Location::fuse([&m.op(inner).loc, &m.op(op).loc]);
            m.op_mut(op).loc = loc;
            true
        }
        graph::Transpose::NAME => {
            let perm = graph::Transpose(op).perm(m);
            if is_identity(&perm) {
                return replace_with(m, op, x);
            }
            let Some(inner) = m.defining_op_named(x, graph::Transpose::NAME) else { return false };
            let p1 = graph::Transpose(inner).perm(m);
            let composed: Option<Vec<i64>> = perm.iter().map(|&i| p1.get(i as usize).copied()).collect();
            let Some(q) = composed else { return false };
            let src = m.op(inner).operands[0];
            if is_identity(&q) {
                return replace_with(m, op, src);
            }
            let loc = Location::fuse([&m.op(inner).loc, &m.op(op).loc]);
            let ty = m.value_type(r).clone();
            let new = m.create_op(
                OpSpec::new(graph::Transpose::NAME, loc).operands(&[src]).results(vec![ty]).attr("perm", Attribute::DenseI64Array(q)),
            );
            m.insert_op_before(op, new);
            let nv = m.op(new).results[0];
            replace_with(m, op, nv)
        }
        graph::Neg::NAME => {
            let Some(inner) = m.defining_op_named(x, graph::Neg::NAME) else { return false };
            let src = m.op(inner).operands[0];
            replace_with(m, op, src)
        }
        _ => false,
    }
}

fn is_identity(p: &[i64]) -> bool {
    p.iter().enumerate().all(|(i, &v)| v == i as i64)
}
