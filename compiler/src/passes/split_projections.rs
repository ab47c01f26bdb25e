//! `split-projections`: a fused projection — one matmul by a constant weight whose output columns
//! are several tensors (Phi-3's `qkv_proj` and `gate_up_proj`, any exporter's concatenated
//! Q/K/V) — becomes one matmul per column range, so each gets its own epilogue (`x·sigmoid(x)` on
//! the gate, a bias, a residual) from `fuse-matmul-epilogue` and a contiguous result.
//!
//! Matched from structure: `matmul(x, W)` with `W` a constant `[K, N]`, optionally followed by an
//! `add` of a constant bias `[N]` (or `[1, N]`) that is the matmul's only use, whose every use is
//! a `graph.slice` of a static column range of the last axis (step 1). Each slice becomes
//! `matmul(x, W[:, s..e])` (plus `add(·, bias[s..e])`) located at the matmul, the bias add and the slice.
//! Anything else — a slice on another axis, a non-constant weight, a use that is not a slice —
//! leaves the projection as it is.

use crate::dialects::graph;
use super::PassInfo;
use super::fuse_rotary::slice_last;
use crate::backend::plan::{const_bytes, shape_of};
use crate::ir::{
    Attribute, DenseAttr, Location, Module, OpId, OpSpec, ScalarType, Type, ValueId,
};
use crate::pass::{Pass, PassError};

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "split-projections",
    description: "split a matmul by a constant weight whose columns are sliced into separate tensors into one matmul per slice",
    create: || Box::new(SplitProjections),
};

/// The pass.
pub struct SplitProjections;

impl Pass for SplitProjections {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        for op in m.walk_all() {
            if m.op(op).name == graph::MatMul::NAME && !m.op(op).erased && m.op(op).parent.is_some() {
                let _ = split(m, op);
            }
        }
        crate::passes::dce::erase_dead_ops(m);
        Ok(())
    }
}

/// `(start, end)` of a static step-1 slice of the last axis of `x` (bounds clamped), if `op` is one.
fn column_range(m: &Module, op: OpId, x: ValueId) -> Option<(u64, u64)> {
    if m.op(op).name != graph::Slice::NAME {
        return None;
    }
    let (src, s, e) = slice_last(m, m.op(op).results[0])?;
    (src == x && s < e).then_some((s as u64, e as u64))
}

/// A constant holding columns `s..e` of the constant `w` (`[K, N]`, or `[N]` for a bias).
fn columns(m: &mut Module, w: ValueId, s: u64, e: u64, loc: &Location, before: OpId) -> Option<ValueId> {
    let shape = shape_of(m, w)?;
    let elem: ScalarType = m.value_type(w).elem()?;
    let bytes = const_bytes(m, w)?;
    let es = elem.byte_size();
    let n = *shape.last()? as usize;
    let rows = bytes.len() / (n * es).max(1);
    let (s, e) = (s as usize, e as usize);
    let mut out = Vec::with_capacity(rows * (e - s) * es);
    for r in 0..rows {
        out.extend_from_slice(&bytes[(r * n + s) * es..(r * n + e) * es]);
    }
    let mut new_shape = shape.clone();
    *new_shape.last_mut()? = (e - s) as u64;
    let ty = Type::tensor(&new_shape, elem);
    let blob = m.blobs.add_auto("projection", std::sync::Arc::from(out));
    let c = m.create_op(
        OpSpec::new(graph::Constant::NAME, loc.clone())
            .results(vec![ty.clone()])
            .attr("value", Attribute::Dense(DenseAttr { ty, blob })),
    );
    m.insert_op_before(before, c);
    Some(m.op(c).results[0])
}

fn split(m: &mut Module, mm: OpId) -> Option<()> {
    let (x, w) = match m.op(mm).operands[..] {
        [x, w] => (x, w),
        _ => return None,
    };
    let ws = shape_of(m, w)?;
    if ws.len() != 2 || const_bytes(m, w).is_none() {
        return None;
    }
    let n = ws[1];
    let out = m.op(mm).results[0];
    // An optional bias add, the matmul's only use.
    let (sliced, bias, add_loc) = match m.single_use(out) {
        Some((add, slot)) if m.op(add).name == graph::Add::NAME => {
            let b = m.op(add).operands[1 - slot];
            let bs = shape_of(m, b)?;
            let row = bs.last() == Some(&n) && bs.iter().rev().skip(1).all(|&d| d == 1);
            if !row || const_bytes(m, b).is_none() || shape_of(m, m.op(add).results[0]) != shape_of(m, out) {
                return None;
            }
            (m.op(add).results[0], Some(b), Some(m.op(add).loc.clone()))
        }
        _ => (out, None, None),
    };
    let uses = m.uses(sliced);
    if uses.len() < 2 {
        return None;
    }
    let mut ranges = vec![];
    for &(u, _) in &uses {
        ranges.push((u, column_range(m, u, sliced)?));
    }
    let elem = m.value_type(out).elem()?;
    let mut os = shape_of(m, out)?;
    for (slice, (s, e)) in ranges {
        let mut locs = vec![m.op(mm).loc.clone()];
        locs.extend(add_loc.clone());
        locs.push(m.op(slice).loc.clone());
        let loc = Location::fuse(locs.iter());
        let wpart = columns(m, w, s, e, &loc, slice)?;
        *os.last_mut()? = e - s;
        let ty = Type::tensor(&os, elem);
        let part = m.create_op(
            OpSpec::new(graph::MatMul::NAME, loc.clone())
                .operands(&[x, wpart])
                .results(vec![ty.clone()]),
        );
        m.insert_op_before(slice, part);
        let mut r = m.op(part).results[0];
        if let Some(b) = bias {
            let bpart = columns(m, b, s, e, &loc, slice)?;
            let add = m.create_op(
                OpSpec::new(graph::Add::NAME, loc)
                    .operands(&[r, bpart])
                    .results(vec![ty]),
            );
            m.insert_op_before(slice, add);
            r = m.op(add).results[0];
        }
        let old = m.op(slice).results[0];
        m.replace_all_uses(old, r);
    }
    Some(())
}
