//! The verifier: structural rules of the IR (values defined before use and in scope, parent links,
//! isolated-from-above functions) plus each op's dialect verifier (operand counts, dtypes, shapes).
//!
//! Invariant: `verify` never panics on any module the API can build; every problem becomes a
//! [`VerifyError`] naming the op, its location and (when parsed from text) its source span.

use std::collections::HashSet;

use super::attrs::Location;
use super::module::{Module, OpId, RegionId, Span, ValueId};
use crate::dialects;

/// One verifier finding.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("'{op_name}' op {message} ({loc})")]
pub struct VerifyError {
    pub op: OpId,
    pub op_name: String,
    pub loc: Location,
    pub span: Option<Span>,
    pub message: String,
}

/// Verifies the whole module; returns every error found (in walk order).
pub fn verify(m: &Module) -> Result<(), Vec<VerifyError>> {
    let mut errs = vec![];
    let mut visible = HashSet::new();
    verify_op(m, m.top(), &mut visible, &mut errs, 0);
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

fn err(m: &Module, op: OpId, message: String) -> VerifyError {
    let d = m.op(op);
    VerifyError {
        op,
        op_name: d.name.clone(),
        loc: d.loc.clone(),
        span: d.span,
        message,
    }
}

/// Ops whose regions cannot see values defined outside them.
pub fn is_isolated_from_above(name: &str) -> bool {
    matches!(name, "builtin.module" | "func.func")
}

const MAX_DEPTH: usize = 512;

fn verify_op(
    m: &Module,
    op: OpId,
    visible: &mut HashSet<ValueId>,
    errs: &mut Vec<VerifyError>,
    depth: usize,
) {
    let d = m.op(op);
    if depth > MAX_DEPTH {
        errs.push(err(m, op, "is nested too deeply".into()));
        return;
    }
    for (i, &v) in d.operands.iter().enumerate() {
        if !visible.contains(&v) {
            errs.push(err(
                m,
                op,
                format!("operand #{i} does not dominate this use (not defined before it in scope)"),
            ));
        }
    }
    for (ri, &r) in d.regions.iter().enumerate() {
        if m.region(r).parent != Some(op) {
            errs.push(err(m, op, format!("region #{ri} has a wrong parent link")));
        }
        if is_isolated_from_above(&d.name) {
            let mut inner = HashSet::new();
            verify_region(m, r, &mut inner, errs, depth);
        } else {
            let mut inner = visible.clone();
            verify_region(m, r, &mut inner, errs, depth);
        }
    }
    match dialects::lookup(&d.name) {
        Some(info) => {
            if let Err(msg) = (info.verify)(&dialects::OpView { m, id: op }) {
                errs.push(err(m, op, msg));
            }
        }
        None => {
            if dialects::is_registered_dialect(&d.name) {
                errs.push(err(m, op, "is not a known operation of its dialect".into()));
            }
        }
    }
}

fn verify_region(
    m: &Module,
    r: RegionId,
    visible: &mut HashSet<ValueId>,
    errs: &mut Vec<VerifyError>,
    depth: usize,
) {
    for &b in &m.region(r).blocks {
        visible.extend(m.block(b).args.iter().copied());
    }
    for &b in &m.region(r).blocks {
        for &o in &m.block(b).ops {
            if m.op(o).parent != Some(b) || m.op(o).erased {
                errs.push(err(
                    m,
                    o,
                    "has a wrong parent link or is erased but still attached".into(),
                ));
                continue;
            }
            verify_op(m, o, visible, errs, depth + 1);
            visible.extend(m.op(o).results.iter().copied());
        }
    }
}
