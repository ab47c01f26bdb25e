//! `cse`: common subexpression elimination of pure, region-free ops. Two ops are equivalent when name,
//! operands, attributes and result types are equal; the later one is erased, its uses go to the
//! earlier one, and the survivor's location becomes the fusion of both (`loc(fused["a", "b"])`) so no
//! source node loses its attribution.
//!
//! Invariant: an op is only replaced by an equivalent op that dominates it (same block earlier, or an
//! enclosing block of a non-isolated region).

use std::collections::HashMap;

use super::PassInfo;
use crate::dialects::is_pure;
use crate::ir::verify::is_isolated_from_above;
use crate::ir::{Attribute, BlockId, Location, Module, OpId, Type, ValueId};
use crate::pass::{Pass, PassError};

/// Registry entry.
pub const INFO: PassInfo =
    PassInfo { name: "cse", description: "eliminate common subexpressions of pure operations", create: || Box::new(Cse) };

/// The pass.
pub struct Cse;

impl Pass for Cse {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        let body = m.body();
        let mut scopes = vec![];
        cse_block(m, body, &mut scopes);
        Ok(())
    }
}

type Key = (String, Vec<ValueId>, Vec<(String, Attribute)>, Vec<Type>);

fn key(m: &Module, op: OpId) -> Key {
    let d = m.op(op);
    let tys = d.results.iter().map(|&r| m.value_type(r).clone()).collect();
    (d.name.clone(), d.operands.clone(), d.attrs.clone(), tys)
}

fn cse_block(m: &mut Module, block: BlockId, scopes: &mut Vec<HashMap<Key, OpId>>) {
    scopes.push(HashMap::new());
    for op in m.block(block).ops.clone() {
        if m.op(op).erased {
            continue;
        }
        let regions = m.op(op).regions.clone();
        if !regions.is_empty() {
            let isolated = is_isolated_from_above(&m.op(op).name);
            for r in regions {
                for b in m.region(r).blocks.clone() {
                    if isolated {
                        cse_block(m, b, &mut vec![]);
                    } else {
                        cse_block(m, b, scopes);
                    }
                }
            }
            continue;
        }
        if !is_pure(m, op) {
            continue;
        }
        let k = key(m, op);
        if let Some(&prev) = scopes.iter().rev().find_map(|s| s.get(&k)) {
            let old = m.op(op).results.clone();
            let new = m.op(prev).results.clone();
            for (o, n) in old.into_iter().zip(new) {
                m.replace_all_uses(o, n);
            }
            let loc = Location::fuse([&m.op(prev).loc, &m.op(op).loc]);
            m.op_mut(prev).loc = loc;
            m.erase_op(op);
        } else if let Some(s) = scopes.last_mut() {
            s.insert(k, op);
        }
    }
    scopes.pop();
}
