//! The verifier: structural rules of the IR (values defined before use and in scope, parent links,
//! isolated-from-above functions, successors) plus each op's dialect verifier (operand counts, dtypes,
//! shapes).
//!
//! Successor rules (MLIR's): a successor is a block of the region holding the op, never that
//! region's entry block (which has no predecessors), and an op with successors is the last op of its
//! block; a registered op takes successors only if its dialect says so ([`crate::dialects::OpInfo`]).
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
    verify_successors(m, op, errs);
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
        Some(info) if !info.successors && !d.successors.is_empty() => {
            errs.push(err(m, op, "does not take successors".into()));
        }
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

/// Successors name blocks of the op's own region other than its entry, and end the op's block.
fn verify_successors(m: &Module, op: OpId, errs: &mut Vec<VerifyError>) {
    let d = m.op(op);
    if d.successors.is_empty() {
        return;
    }
    let block = d.parent;
    let region = block.and_then(|b| m.block(b).parent);
    for (i, &s) in d.successors.iter().enumerate() {
        if s.index() >= m.block_capacity() {
            errs.push(err(
                m,
                op,
                format!("successor #{i} is not a block of this module"),
            ));
            continue;
        }
        if region.is_none() || m.block(s).parent != region {
            errs.push(err(
                m,
                op,
                format!("successor #{i} is not a block of the region holding this op"),
            ));
        } else if region.and_then(|r| m.region(r).blocks.first().copied()) == Some(s) {
            errs.push(err(
                m,
                op,
                format!(
                    "successor #{i} is the entry block of its region, which may not have \
                     predecessors"
                ),
            ));
        }
    }
    if let Some(b) = block
        && m.block(b).ops.last() != Some(&op)
    {
        errs.push(err(
            m,
            op,
            "has successors but is not the last op of its block".into(),
        ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Location, OpSpec};

    /// `func.func @f` whose body is an op `x.outer` with one region of two blocks, plus a second
    /// block in the function; returns (module, function body blocks, x.outer's blocks).
    fn two_regions() -> (Module, [crate::ir::BlockId; 2], [crate::ir::BlockId; 2]) {
        let mut m = Module::new();
        let (f, entry) =
            crate::dialects::builtin::build_func(&mut m, "f", vec![], vec![], Location::Unknown);
        let fr = m.op(f).regions[0];
        let exit = m.add_block(fr, &[]);
        crate::dialects::builtin::build_return(&mut m, exit, &[], Location::Unknown);
        let outer = m.append(entry, OpSpec::new("x.outer", Location::Unknown));
        let r = m.add_region(outer);
        let (b0, b1) = (m.add_block(r, &[]), m.add_block(r, &[]));
        m.append(b1, OpSpec::new("x.end", Location::Unknown));
        (m, [entry, exit], [b0, b1])
    }

    fn messages(m: &Module) -> Vec<String> {
        verify(m)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn successors_in_the_ops_own_region_verify() {
        let (mut m, [entry, exit], [b0, b1]) = two_regions();
        m.append(
            b0,
            OpSpec::new("x.br", Location::name("br")).successors(&[b1]),
        );
        m.append(
            entry,
            OpSpec::new("x.jump", Location::name("j")).successors(&[exit]),
        );
        assert_eq!(messages(&m), Vec::<String>::new());
        assert_eq!(m.predecessors(exit).len(), 1);
        assert_eq!(m.block_index(b1), Some(1));
    }

    #[test]
    fn a_successor_in_another_region_is_an_error() {
        let (mut m, [entry, exit], [b0, _]) = two_regions();
        m.append(
            b0,
            OpSpec::new("x.br", Location::name("br")).successors(&[exit]),
        );
        m.append(
            entry,
            OpSpec::new("x.jump", Location::name("j")).successors(&[exit]),
        );
        assert_eq!(
            messages(&m),
            ["'x.br' op successor #0 is not a block of the region holding this op (loc(\"br\"))"]
        );
    }

    #[test]
    fn an_op_with_successors_not_last_in_its_block_is_an_error() {
        let (mut m, [entry, exit], [b0, b1]) = two_regions();
        m.append(
            b0,
            OpSpec::new("x.br", Location::name("br")).successors(&[b1]),
        );
        m.append(b0, OpSpec::new("x.after", Location::Unknown));
        m.append(
            entry,
            OpSpec::new("x.jump", Location::name("j")).successors(&[exit]),
        );
        assert_eq!(
            messages(&m),
            ["'x.br' op has successors but is not the last op of its block (loc(\"br\"))"]
        );
    }

    #[test]
    fn the_entry_block_and_unknown_handles_are_not_successors() {
        let (mut m, [entry, exit], [b0, _]) = two_regions();
        m.append(
            b0,
            OpSpec::new("x.br", Location::name("br")).successors(&[b0, crate::ir::BlockId(999)]),
        );
        m.append(
            entry,
            OpSpec::new("x.jump", Location::name("j")).successors(&[exit]),
        );
        assert_eq!(
            messages(&m),
            [
                "'x.br' op successor #0 is the entry block of its region, which may not have \
                 predecessors (loc(\"br\"))",
                "'x.br' op successor #1 is not a block of this module (loc(\"br\"))"
            ]
        );
    }

    #[test]
    fn registered_ops_take_successors_only_when_their_dialect_says_so() {
        let (mut m, [entry, exit], _) = two_regions();
        m.append(
            entry,
            OpSpec::new("func.return", Location::name("ret")).successors(&[exit]),
        );
        assert_eq!(
            messages(&m),
            ["'func.return' op does not take successors (loc(\"ret\"))"]
        );
    }

    #[test]
    fn every_block_of_a_function_body_ends_in_a_terminator() {
        let (m, _, _) = two_regions();
        assert_eq!(
            messages(&m),
            [
                "'func.func' op block ^bb0 of the body must end with 'func.return' or an op with \
                 successors (loc(unknown))"
            ]
        );
    }
}
