//! `fold-constants`: evaluates ops whose value is known at compile time and replaces them by
//! `graph.constant`s, sweeping each function once in order (so chains fold in one run):
//!
//! - every op is first re-typed with [`super::shape_inference::refine_op`], so shapes that became static
//!   upstream are seen downstream;
//! - `graph.shape` / `graph.size` of an input with a static shape fold to their value (this is what
//!   turns exporter `Shape → Gather → Unsqueeze → Concat → Reshape` chains into constant shapes);
//! - any other pure `graph` op whose operands are all constants is evaluated by the reference
//!   interpreter ([`crate::interp::eval_op`]) — the folded value is exactly what the op computes;
//! - a value with a static shape holding no element is known whatever its producer: its uses
//!   read an empty `graph.constant` instead (a sum or max over an empty axis, or an empty axes
//!   list given as a graph input, then folds or reaches the backend as a constant).
//!
//! Results larger than [`MAX_FOLD_ELEMENTS`] elements are not materialized. Dead ops are erased at the
//! end and function result types updated.

use std::sync::Arc;

use super::PassInfo;
use super::dce::erase_dead_ops;
use super::shape_inference::{refine_op, update_function_type};
use crate::dialects::{graph, is_pure};
use crate::interp::{self, Tensor};
use crate::ir::{Attribute, DenseAttr, Location, Module, OpId, OpSpec, TensorType, Type, ValueId};
use crate::pass::{Pass, PassError};

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "fold-constants",
    description: "evaluate ops with constant operands (and shape queries of static tensors) into constants",
    create: || Box::new(FoldConstants),
};

/// Largest folded result, in elements.
pub const MAX_FOLD_ELEMENTS: usize = 1 << 22;

/// The pass.
pub struct FoldConstants;

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        for f in m.functions() {
            let Some(entry) = m.entry_block(f) else {
                continue;
            };
            for op in m.block(entry).ops.clone() {
                if m.op(op).erased {
                    continue;
                }
                let loc = m.op(op).loc.clone();
                refine_op(m, op).map_err(|e| PassError::failed(INFO.name, loc.clone(), e))?;
                read_empty_operands_as_constants(m, op);
                fold_op(m, op).map_err(|e| PassError::failed(INFO.name, loc, e))?;
            }
            update_function_type(m, f);
        }
        erase_dead_ops(m);
        Ok(())
    }
}

/// Folds one op if possible; returns the constants that replaced its results.
pub fn fold_op(m: &mut Module, op: OpId) -> Result<Option<Vec<ValueId>>, String> {
    let d = m.op(op);
    if !d.name.starts_with(graph::PREFIX) || d.name == graph::Constant::NAME || !is_pure(m, op) || d.results.is_empty() {
        return Ok(None);
    }
    let values: Vec<Tensor> = match d.name.as_str() {
        graph::Shape::NAME | graph::Size::NAME => {
            let Some(t) = m.value_type(d.operands[0]).as_tensor() else {
                return Ok(None);
            };
            if t.static_shape().is_none() {
                return Ok(None);
            }
            // Evaluate on a stand-in: only the shape matters.
            let dims: Vec<u64> = t.dims.iter().map(|x| x.as_static().unwrap_or(0)).collect();
            // Checked before the stand-in is allocated (a dim of 2^64 - 1 must not abort).
            match crate::ir::types::checked_product(&dims) {
                Some(n) if n <= MAX_FOLD_ELEMENTS as u64 => {}
                _ => return Ok(None),
            }
            let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
            let fake = Tensor {
                data: crate::interp::Data::Bool(vec![false; shape.iter().product()]),
                shape,
            };
            interp::eval_op(m, op, &[&fake])?
        }
        _ => {
            let mut ins = vec![];
            for &v in &d.operands {
                match interp::constant_value(m, v) {
                    Some(t) => ins.push(t),
                    None => return Ok(None),
                }
            }
            if ins.is_empty() || !will_fit(m, op) {
                return Ok(None);
            }
            let refs: Vec<&Tensor> = ins.iter().collect();
            interp::eval_op(m, op, &refs)?
        }
    };
    Ok(Some(replace_with_constants(m, op, values)))
}

/// Points every zero-element operand of `op` that is not already a constant at an empty
/// `graph.constant` of its type (inserted before `op`; all uses of the value are redirected).
fn read_empty_operands_as_constants(m: &mut Module, op: OpId) {
    if m.op(op).name == graph::Constant::NAME {
        return;
    }
    for v in m.op(op).operands.clone() {
        let Some(t) = m.value_type(v).as_tensor() else {
            continue;
        };
        let (Some(shape), elem) = (t.static_shape(), t.elem) else {
            continue;
        };
        if !shape.contains(&0) || interp::constant_value(m, v).is_some() {
            continue;
        }
        let empty = interp::tensor::zeros(elem, shape.iter().map(|&d| d as usize).collect());
        let c = insert_constant(m, op, "empty", &empty, m.op(op).loc.clone());
        m.replace_all_uses(v, c);
    }
}

fn will_fit(m: &Module, op: OpId) -> bool {
    m.op(op).results.iter().all(|&r| {
        m.value_type(r)
            .as_tensor()
            .and_then(TensorType::num_elements)
            .is_some_and(|n| n as usize <= MAX_FOLD_ELEMENTS)
    })
}

/// Inserts a `graph.constant` before `anchor` holding `t`; returns its value.
pub fn insert_constant(m: &mut Module, anchor: OpId, name_hint: &str, t: &Tensor, loc: Location) -> ValueId {
    let ty = Type::tensor(&t.shape.iter().map(|&d| d as u64).collect::<Vec<_>>(), t.dtype());
    let bytes: Arc<[u8]> = t.to_le_bytes().into();
    let blob = m.blobs.add_auto(name_hint, bytes);
    let attr = Attribute::Dense(DenseAttr { ty: ty.clone(), blob });
    let c = m.create_op(OpSpec::new(graph::Constant::NAME, loc).results(vec![ty]).attr("value", attr));
    m.insert_op_before(anchor, c);
    m.op(c).results[0]
}

/// Inserts an `i64` `graph.constant` of `shape` holding `v` before `anchor` (shapes, axes,
/// indices built by rewrites).
pub fn insert_i64s(m: &mut Module, anchor: OpId, hint: &str, shape: Vec<usize>, v: Vec<i64>) -> ValueId {
    let loc = m.op(anchor).loc.clone();
    insert_constant(m, anchor, hint, &Tensor::new(shape, v), loc)
}

fn replace_with_constants(m: &mut Module, op: OpId, values: Vec<Tensor>) -> Vec<ValueId> {
    let loc = m.op(op).loc.clone();
    let hint = match &loc {
        Location::Name(n) => format!("{n}_folded"),
        _ => "folded".to_string(),
    };
    let results = m.op(op).results.clone();
    let mut out = vec![];
    for (r, t) in results.into_iter().zip(values) {
        let c = insert_constant(m, op, &hint, &t, loc.clone());
        m.replace_all_uses(r, c);
        out.push(c);
    }
    m.erase_op(op);
    out
}
