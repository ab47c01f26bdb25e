//! `dce`: dead code elimination — erases pure ops (see [`crate::dialects::is_pure`]) whose results are
//! all unused, including chains that become dead as their users go.
//!
//! Invariant: ops with side effects, ops with regions, and terminators are never removed. One reverse
//! walk suffices because every use comes after its definition in pre-order.

use super::PassInfo;
use crate::dialects::is_pure;
use crate::ir::Module;
use crate::pass::{Pass, PassError};

/// Registry entry.
pub const INFO: PassInfo = PassInfo { name: "dce", description: "erase unused pure operations", create: || Box::new(Dce) };

/// The pass.
pub struct Dce;

impl Pass for Dce {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        erase_dead_ops(m);
        Ok(())
    }
}

/// Erases unused pure ops; returns how many were erased.
pub fn erase_dead_ops(m: &mut Module) -> usize {
    let mut counts = m.use_counts();
    let mut erased = 0;
    for op in m.walk_all().into_iter().rev() {
        let d = m.op(op);
        if d.erased || !d.regions.is_empty() || !is_pure(m, op) {
            continue;
        }
        if d.results.iter().all(|r| counts[r.index()] == 0) {
            for &o in &d.operands {
                counts[o.index()] = counts[o.index()].saturating_sub(1);
            }
            m.erase_op(op);
            erased += 1;
        }
    }
    erased
}
