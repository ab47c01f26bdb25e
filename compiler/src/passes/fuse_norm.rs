//! `fuse-norm`: decomposed LayerNorm and RMSNorm become one `graph.norm(x, scale?, bias?)
//! {kind = "layer" | "rms", axis = -1, epsilon}`, computed row by row on chip.
//!
//! RMSNorm: `x · 1/√(mean(x²) + ε)` — `x²` as `pow(x, 2)` or `mul(x, x)`, the division as `div`,
//! `mul` by `reciprocal` or `mul` by `div(1, ·)` — then an optional `mul` by a per-feature scale.
//! LayerNorm: `d = x − mean(x)`, `d / √(mean(d²) + ε)`, optional scale `mul` and bias `add`.
//! Means are `reduce_mean` over the last axis with `keepdims`. Every intermediate must have no
//! other user, so nothing computed twice is lost.

use crate::dialects::graph;
use super::PassInfo;
use crate::backend::plan::{const_ints, shape_of, splat_of};
use crate::ir::{Attribute, Location, Module, OpId, OpSpec, ValueId};
use crate::pass::{Pass, PassError};

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "fuse-norm",
    description: "fuse decomposed LayerNorm / RMSNorm (+ scale, bias) into graph.norm",
    create: || Box::new(FuseNorm),
};

/// The pass.
pub struct FuseNorm;

impl Pass for FuseNorm {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        for op in m.walk_all() {
            if m.op(op).name == graph::Sqrt::NAME && !m.op(op).erased && m.op(op).parent.is_some() {
                let _ = fuse(m, op);
            }
        }
        crate::passes::dce::erase_dead_ops(m);
        Ok(())
    }
}

/// `reduce_mean(y)` over the last axis with keepdims: returns `y`.
fn mean_last(m: &Module, v: ValueId) -> Option<ValueId> {
    let op = m.defining_op_named(v, graph::ReduceMean::NAME)?;
    let y = m.op(op).operands[0];
    let rank = shape_of(m, y)?.len() as i64;
    let axes = match m.op(op).operands.get(1) {
        Some(&a) => const_ints(m, a)?,
        None => m.attr(op, "axes").and_then(Attribute::as_i64_list)?,
    };
    let keep = m.attr(op, "keepdims").and_then(Attribute::as_int).unwrap_or(1);
    (axes.len() == 1 && (axes[0] == -1 || axes[0] == rank - 1) && keep == 1).then_some(y)
}

/// `y` when `v` is `y²`.
fn square_of(m: &Module, v: ValueId) -> Option<ValueId> {
    let op = m.defining_op(v)?;
    let d = m.op(op);
    match d.name.as_str() {
        graph::Pow::NAME if splat_of(m, d.operands[1]) == Some(2.0) => Some(d.operands[0]),
        graph::Mul::NAME if d.operands[0] == d.operands[1] => Some(d.operands[0]),
        _ => None,
    }
}

fn other(m: &Module, op: OpId, slot: usize) -> ValueId {
    m.op(op).operands[1 - slot]
}

fn fuse(m: &mut Module, sq: OpId) -> Option<()> {
    let s = m.op(sq).operands[0];
    let add = m.defining_op_named(s, graph::Add::NAME)?;
    let (var, eps) = {
        let ops = &m.op(add).operands;
        match (splat_of(m, ops[1]), splat_of(m, ops[0])) {
            (Some(e), _) => (ops[0], e),
            (_, Some(e)) => (ops[1], e),
            _ => return None,
        }
    };
    let sq_in = mean_last(m, var)?;
    let base = square_of(m, sq_in)?;
    let t = m.op(sq).results[0];
    let mut locs = vec![
        m.op(add).loc.clone(),
        m.op(sq).loc.clone(),
        m.defining_op(var).map(|o| m.op(o).loc.clone())?,
        m.defining_op(sq_in).map(|o| m.op(o).loc.clone())?,
    ];
    // base / t in one of its spellings.
    let (u, slot) = m.single_use(t)?;
    let y = match m.op(u).name.as_str() {
        graph::Div::NAME if slot == 1 && m.op(u).operands[0] == base => m.op(u).results[0],
        graph::Reciprocal::NAME | graph::Div::NAME => {
            if m.op(u).name == graph::Div::NAME && (slot != 1 || splat_of(m, m.op(u).operands[0]) != Some(1.0)) {
                return None;
            }
            let r = m.op(u).results[0];
            let (mu, ms) = m.single_use(r)?;
            if m.op(mu).name != graph::Mul::NAME || other(m, mu, ms) != base {
                return None;
            }
            locs.push(m.op(u).loc.clone());
            m.op(mu).results[0]
        }
        _ => return None,
    };
    locs.push(m.op(u).loc.clone());
    // Layer norm: base = x - mean(x).
    let (x, kind) = match m.defining_op_named(base, graph::Sub::NAME) {
        Some(sub) if mean_last(m, m.op(sub).operands[1]) == Some(m.op(sub).operands[0]) => {
            locs.push(m.op(sub).loc.clone());
            (m.op(sub).operands[0], "layer")
        }
        _ => (base, "rms"),
    };
    let xs = shape_of(m, x)?;
    let dim = *xs.last()?;
    let row = |v: ValueId| {
        shape_of(m, v).is_some_and(|s| s.last() == Some(&dim) && s.iter().rev().skip(1).all(|&d| d == 1))
    };
    let mut out = y;
    let mut params = vec![];
    if let Some((mu, ms)) = m.single_use(out)
        && m.op(mu).name == graph::Mul::NAME
        && row(other(m, mu, ms))
    {
        params.push(other(m, mu, ms));
        locs.push(m.op(mu).loc.clone());
        out = m.op(mu).results[0];
        if kind == "layer"
            && let Some((au, aslot)) = m.single_use(out)
            && m.op(au).name == graph::Add::NAME
            && row(other(m, au, aslot))
        {
            params.push(other(m, au, aslot));
            locs.push(m.op(au).loc.clone());
            out = m.op(au).results[0];
        }
    }
    if shape_of(m, out)? != xs || m.value_type(out).elem() != m.value_type(x).elem() {
        return None;
    }
    let mut operands = vec![x];
    operands.extend(&params);
    let ty = m.value_type(out).clone();
    let new = m.create_op(
        OpSpec::new(graph::Norm::NAME, Location::fuse(locs.iter()))
            .operands(&operands)
            .results(vec![ty])
            .attr("kind", Attribute::str(kind))
            .attr("axis", Attribute::i64(-1))
            .attr("epsilon", Attribute::f32(eps as f32)),
    );
    let anchor = m.defining_op(out)?;
    m.insert_op_before(anchor, new);
    let nv = m.op(new).results[0];
    m.replace_all_uses(out, nv);
    Some(())
}
