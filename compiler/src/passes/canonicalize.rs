//! `canonicalize`: local simplifications to a fixed point, then removal of dead pure ops.
//!
//! Patterns (each keeps types exactly; a value is only replaced by one of identical type):
//! - `graph.identity(x)` → `x`
//! - `graph.reshape` / `squeeze` / `unsqueeze` / `flatten` / `expand` / `cast` whose result type equals
//!   the input type → the input
//! - `graph.transpose` with the identity permutation → the input
//! - `transpose(transpose(x, p1), p2)` → `transpose(x, p1∘p2)` (fused location), or `x` if that is the
//!   identity
//! - `reshape(reshape(x))` → `reshape(x)` (the outer shape wins)
//! - `neg(neg(x))` → `x`

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

fn defining(m: &Module, v: ValueId, name: &str) -> Option<OpId> {
    m.defining_op(v).filter(|&o| m.op(o).name == name)
}

fn simplify(m: &mut Module, op: OpId) -> bool {
    let name = m.op(op).name.clone();
    let Some((x, r)) = single_io(m, op) else { return false };
    match name.as_str() {
        "graph.identity" => replace_with(m, op, x),
        "graph.reshape" | "graph.squeeze" | "graph.unsqueeze" | "graph.flatten" | "graph.expand" | "graph.cast"
            if m.value_type(x) == m.value_type(r) =>
        {
            replace_with(m, op, x)
        }
        "graph.reshape" => {
            let Some(inner) = defining(m, x, "graph.reshape") else { return false };
            let src = m.op(inner).operands[0];
            m.op_mut(op).operands[0] = src;
            let loc = Location::fuse([&m.op(inner).loc, &m.op(op).loc]);
            m.op_mut(op).loc = loc;
            true
        }
        "graph.transpose" => {
            let perm = graph::Transpose(op).perm(m);
            if is_identity(&perm) {
                return replace_with(m, op, x);
            }
            let Some(inner) = defining(m, x, "graph.transpose") else { return false };
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
                OpSpec::new("graph.transpose", loc).operands(&[src]).results(vec![ty]).attr("perm", Attribute::DenseI64Array(q)),
            );
            m.insert_op_before(op, new);
            let nv = m.op(new).results[0];
            replace_with(m, op, nv)
        }
        "graph.neg" => {
            let Some(inner) = defining(m, x, "graph.neg") else { return false };
            let src = m.op(inner).operands[0];
            replace_with(m, op, src)
        }
        _ => false,
    }
}

fn is_identity(p: &[i64]) -> bool {
    p.iter().enumerate().all(|(i, &v)| v == i as i64)
}
