//! `lower-llmpu`: generates the program. Every graph op of `@main` becomes DMA, matrix and vector
//! instructions through its kernel (`backend::kernels`), at the HBM addresses `plan-memory` chose
//! and with the tile sizes `tile` chose; semaphores between the units are placed automatically
//! (`backend::emit`). The module is replaced by its `llmpu`-dialect form (`backend::codegen`):
//! `@main` keeps the data segments and I/O descriptors, `@coreN` holds core N's instructions, each
//! located at the graph node(s) it came from.
//!
//! Multi-core: each kernel spreads its work units (row blocks, attention heads and Q blocks) over
//! the target's cores round robin, every core writing disjoint rows; a `barrier` separates ops.
//!
//! Invariant: on-chip memory is freed between ops, so each kernel has the whole SRAM and
//! accumulator; a kernel whose smallest tiles do not fit fails with an error naming the node.

use super::PassInfo;
use crate::backend::emit::Emitter;
use crate::backend::kernels::{Cx, copy, lower_op};
use crate::backend::plan::plan_function;
use crate::backend::{codegen, loc_string, options};
use crate::ir::{Location, Module};
use crate::pass::{Pass, PassError};

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "lower-llmpu",
    description: "generate the program: kernels per op, automatic semaphores, llmpu dialect",
    create: || Box::new(LowerLlmpu),
};

/// The pass.
pub struct LowerLlmpu;

fn fail(loc: &Location, msg: impl Into<String>) -> PassError {
    PassError::failed(INFO.name, loc.clone(), msg)
}

impl Pass for LowerLlmpu {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        let o = options(m).map_err(|e| fail(&Location::Unknown, e))?;
        let funcs = m.functions();
        let func = *funcs
            .first()
            .ok_or_else(|| fail(&Location::Unknown, "module has no function"))?;
        let plan = plan_function(m, func, &o).map_err(|e| fail(&m.op(func).loc, e.to_string()))?;
        let cores = o.target.cores.max(1) as usize;
        let mut e = Emitter::new(o.target.clone(), cores);
        let entry = m
            .entry_block(func)
            .ok_or_else(|| fail(&Location::Unknown, "function has no body"))?;
        let ops = m.block(entry).ops.clone();
        for &op in &ops {
            if m.op(op).name == "func.return" {
                continue;
            }
            let loc = m.op(op).loc.clone();
            e.set_loc(&loc_string(&loc));
            let mut cx = Cx {
                m,
                plan: &plan,
                e: &mut e,
                o: &o,
                loc: loc.clone(),
            };
            lower_op(&mut cx, op).map_err(|err| fail(&loc, err.message))?;
            e.reset_alloc();
            if cores > 1 {
                e.barrier();
            }
        }
        for (_, v, dst) in &plan.copies {
            let loc = Location::name("output");
            e.set_loc("output");
            let src = plan
                .views
                .get(v)
                .cloned()
                .ok_or_else(|| fail(&loc, "returned value has no memory"))?;
            let mut cx = Cx {
                m,
                plan: &plan,
                e: &mut e,
                o: &o,
                loc: loc.clone(),
            };
            let dst = dst.reshape(&src.shape).unwrap_or(dst.clone());
            copy(&mut cx, &src, &dst).map_err(|err| fail(&loc, err.message))?;
            e.reset_alloc();
            if cores > 1 {
                e.barrier();
            }
        }
        let streams = e.finish();
        codegen::write_lowered(m, &streams, &plan.io, &plan.data, plan.kv.as_ref());
        Ok(())
    }
}
