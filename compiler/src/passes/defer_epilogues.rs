//! `defer-epilogues`: software-pipelines the epilogues of tile loops. In a `tile.for` whose body
//! runs a nested loop (a reduction, such as a matmul's K loop) and then ops on its result (the
//! accumulator's conversion, the store; loads such as a bias stay where they are), those trailing
//! ops get `defer = 1`: iteration `t`'s are
//! emitted after iteration `t + 1`'s nested loop (the last iteration's after the loop). The DMA
//! queue then holds the next tile's loads ahead of this tile's store, so the matrix engine does
//! not wait for a store at every tile boundary.
//!
//! Only where it is safe: every on-chip buffer a deferred op reads that an op outside the
//! deferred group also writes (the accumulator, which the next tile's matmuls overwrite) has at
//! least two slots, so the next iteration writes the other one. `backend::tiles` checks it again
//! when it emits.

use super::PassInfo;
use crate::dialects::tile;
use crate::ir::{Attribute, Module, OpId, ValueId};
use crate::pass::{Pass, PassError};

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "defer-epilogues",
    description: "emit a tile loop's epilogue ops after the next iteration's reduction (software pipelining)",
    create: || Box::new(DeferEpilogues),
};

/// The pass.
pub struct DeferEpilogues;

fn slots(m: &Module, v: ValueId) -> i64 {
    m.defining_op_named(v, tile::Alloc::NAME)
        .and_then(|op| m.attr(op, "slots").and_then(Attribute::as_int))
        .unwrap_or(1)
}

impl Pass for DeferEpilogues {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        let loops: Vec<OpId> = m
            .walk_all()
            .into_iter()
            .filter(|&o| m.op(o).name == tile::For::NAME)
            .collect();
        for l in loops {
            let Some(body) = m.entry_block(l) else {
                continue;
            };
            let ops = m.block(body).ops.clone();
            let Some(last_loop) = ops.iter().rposition(|&o| m.op(o).name == tile::For::NAME)
            else {
                continue;
            };
            // The epilogue's loads (bias, residual) stay in place: they depend on nothing on
            // chip, and in the DMA queue ahead of the next tile's loads they are ready when the
            // deferred vector ops run.
            let tail: Vec<OpId> = ops[last_loop + 1..]
                .iter()
                .copied()
                .filter(|&o| ![tile::Yield::NAME, tile::DmaLoad::NAME].contains(&m.op(o).name.as_str()))
                .collect();
            let kernel = std::iter::successors(Some(l), |&o| m.parent_op(o))
                .find(|&o| m.op(o).name == tile::Kernel::NAME);
            let mut all = vec![];
            if let Some(k) = kernel {
                m.walk(k, &mut all);
            }
            let written_outside = |v: ValueId| {
                all.iter()
                    .any(|&o| !tail.contains(&o) && tile::writes(m, o) == Some(v))
            };
            let movable = |o: OpId| {
                [tile::DmaStore::NAME, tile::Vector::NAME].contains(&m.op(o).name.as_str())
                    && tile::reads(m, o)
                        .iter()
                        .all(|&v| !written_outside(v) || slots(m, v) >= 2)
            };
            if !tail.is_empty() && tail.iter().all(|&o| movable(o)) {
                for o in tail {
                    m.set_attr(o, "defer", Attribute::i64(1));
                }
            }
        }
        Ok(())
    }
}
