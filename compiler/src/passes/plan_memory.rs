//! `plan-memory`: decides where every tensor lives in HBM (see `backend::plan`) and records it on
//! the IR: `llmpu.hbm = array<i64: addr, ...>` on each op whose results own memory (0 for a result
//! that is a view of another tensor), `llmpu.storage` with the storage element types, and on the
//! function `llmpu.scratch = array<i64: base, bytes>` (the liveness-shared arena). Fails with a
//! located error when the model does not fit the target's HBM or has unknown (symbolic) shapes.
//!
//! The scratch addresses are the contract with `lower-llmpu`: a module that carries them (a
//! dump, edited or not) is lowered with them, after a check that each lies in the scratch area
//! and that no two tensors alive at the same time overlap (`backend::plan`).

use super::PassInfo;
use crate::backend::plan::plan_function;
use crate::backend::options;
use crate::ir::{Attribute, Location, Module};
use crate::pass::{Pass, PassError};

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "plan-memory",
    description: "place tensors in HBM (I/O, data, scratch reused by liveness; views alias)",
    create: || Box::new(PlanMemory),
};

/// The pass.
pub struct PlanMemory;

impl Pass for PlanMemory {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        let o = options(m).map_err(|e| PassError::failed(INFO.name, Location::Unknown, e))?;
        for func in m.functions() {
            let plan = plan_function(m, func, &o)
                .map_err(|e| PassError::failed(INFO.name, m.op(func).loc.clone(), e.to_string()))?;
            let Some(entry) = m.entry_block(func) else {
                continue;
            };
            if let Some(kv) = &plan.kv {
                // The paged KV region: [base, bytes, block table address]; each append names
                // its slot's block pool.
                m.set_attr(
                    func,
                    "llmpu.kv_region",
                    Attribute::DenseI64Array(vec![
                        kv.hbm_addr as i64,
                        kv.bytes as i64,
                        kv.table_addr as i64,
                    ]),
                );
                for op in m.block(entry).ops.clone() {
                    if let Some(&slot) = m.op(op).results.first().and_then(|r| plan.kv_slots.get(r))
                        && let Some(s) = kv.slots.get(slot)
                    {
                        m.set_attr(op, "llmpu.kv_pool", Attribute::i64(s.pool_addr as i64));
                    }
                }
            }
            for op in m.block(entry).ops.clone() {
                let results = m.op(op).results.clone();
                if results.is_empty() {
                    continue;
                }
                let addrs: Vec<i64> = results
                    .iter()
                    .map(|r| plan.owned.get(r).map_or(-1, |&a| a as i64))
                    .collect();
                if addrs.iter().all(|&a| a < 0) {
                    continue;
                }
                let types: Vec<Attribute> = results
                    .iter()
                    .map(|r| {
                        Attribute::str(plan.views.get(r).map_or("none", |v| v.dt.name()))
                    })
                    .collect();
                m.set_attr(op, "llmpu.hbm", Attribute::DenseI64Array(addrs));
                m.set_attr(op, "llmpu.storage", Attribute::Array(types));
            }
            m.set_attr(
                func,
                "llmpu.scratch",
                Attribute::DenseI64Array(vec![plan.scratch.0 as i64, plan.scratch.1 as i64]),
            );
        }
        Ok(())
    }
}
