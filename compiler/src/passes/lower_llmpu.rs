//! `lower-llmpu`: generates the program. Every graph op of `@main` becomes DMA, matrix and vector
//! instructions through its kernel (`backend::kernels`), at the HBM addresses `plan-memory` chose
//! and with the tile sizes `tile` chose; semaphores between the units are placed automatically
//! (`backend::emit`). The module is replaced by its `llmpu`-dialect form (`backend::codegen`):
//! `@main` keeps the data segments and I/O descriptors, `@coreN` holds core N's instructions, each
//! located at the graph node(s) it came from, as a control-flow graph: loops and forward branches
//! are blocks ending in branch ops with successors (`dialects::llmpu`).
//!
//! Multi-core: each kernel spreads its work units (row blocks, attention heads and Q blocks) over
//! the target's cores round robin, every core writing disjoint rows. A `barrier` separates an op
//! from the ops since the last barrier only where its DMAs touch HBM another core touched since
//! then (one side writing; `Emitter::end_op`) — before the op's body, after the prologue of loads
//! that do not depend on them; independent ops (Q/K/V projections, gate/up) run on without one.
//! A matmul's last epilogues may be deferred into the next matmul, after its first loads
//! (`kernels::Tail`); any other op emits them first.
//!
//! Invariant: on-chip memory is freed between ops, so each kernel has the whole SRAM and
//! accumulator (consecutive kernels allocate from opposite ends, so small ones do not share
//! bytes; a deferred tail's buffers stay reserved until it is emitted); a kernel whose smallest
//! tiles do not fit fails with an error naming the node.

use crate::dialects::graph;
use super::PassInfo;
use crate::backend::emit::Emitter;
use crate::backend::kernels::{Cx, Tail, copy, flush_tail, lower_op, recomputed_producers};
use crate::backend::plan::plan_function;
use crate::backend::{codegen, loc_string, loops_rolled, options};
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
        e.roll = loops_rolled(m);
        let entry = m
            .entry_block(func)
            .ok_or_else(|| fail(&Location::Unknown, "function has no body"))?;
        let ops = m.block(entry).ops.clone();
        let mut tail: Option<Tail> = None;
        let recompute = recomputed_producers(m, &plan, &ops, &o);
        let producers: std::collections::HashSet<_> = recompute.values().copied().collect();
        for &op in &ops {
            if m.op(op).name == "func.return" {
                continue;
            }
            let loc = m.op(op).loc.clone();
            // Only matmuls take over a previous matmul's deferred epilogues (after their first
            // loads); every other op starts after them.
            // (A producer its consumers recompute emits nothing: the tail waits for them.)
            let flush = !matches!(
                m.op(op).name.as_str(),
                graph::MatMul::NAME | graph::MatMulEpilogue::NAME | graph::Gemm::NAME
            ) && !producers.contains(&op);
            let lower = |e: &mut Emitter, tail: &mut Option<Tail>| -> Result<(), PassError> {
                e.set_loc(&loc_string(&loc));
                e.begin_op();
                let mut cx = Cx {
                    m,
                    plan: &plan,
                    e,
                    o: &o,
                    loc: loc.clone(),
                    tail,
                    recompute: &recompute,
                };
                if flush {
                    flush_tail(&mut cx);
                }
                lower_op(&mut cx, op).map_err(|err| fail(&loc, err.message))
            };
            // A loop the emitter cannot roll soundly (an internal error) leaves the op
            // straight-line: lowered again from the state before it, without rolling.
            let before = e.roll.then(|| (e.clone(), tail.clone()));
            lower(&mut e, &mut tail)?;
            if let Some(err) = e.roll_error() {
                let Some((e0, t0)) = before else {
                    return Err(fail(&loc, err));
                };
                (e, tail) = (e0, t0);
                e.roll = false;
                lower(&mut e, &mut tail)?;
                e.roll = true;
            }
            e.end_op();
            e.reset_alloc();
        }
        for (_, v, dst) in &plan.copies {
            if dst.shape.contains(&0) {
                // A zero-size output has no bytes to copy.
                continue;
            }
            let loc = Location::name("output");
            e.set_loc("output");
            e.begin_op();
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
                tail: &mut tail,
                recompute: &recompute,
            };
            flush_tail(&mut cx);
            let dst = dst.reshape(&src.shape).unwrap_or(dst.clone());
            copy(&mut cx, &src, &dst).map_err(|err| fail(&loc, err.message))?;
            e.end_op();
            e.reset_alloc();
        }
        if tail.is_some() {
            e.set_loc("epilogue");
            e.begin_op();
            let mut cx = Cx {
                m,
                plan: &plan,
                e: &mut e,
                o: &o,
                loc: Location::name("epilogue"),
                tail: &mut tail,
                recompute: &recompute,
            };
            flush_tail(&mut cx);
            e.end_op();
        }
        let streams = e
            .finish()
            .map_err(|err| fail(&Location::Unknown, err.to_string()))?;
        // An instruction a kernel built with a field out of range is a compiler bug: say which.
        for it in streams.iter().flatten() {
            if let Err(err) = it.inst.raw_fields() {
                return Err(fail(
                    &Location::name(&it.loc),
                    format!("internal: {err} in `{}`", it.inst),
                ));
            }
        }
        codegen::write_lowered(
            m,
            &streams,
            &plan.io,
            &plan.data,
            plan.kv.as_ref(),
            &plan.bounds,
        )
        .map_err(|err| fail(&Location::Unknown, format!("internal: {err}")))
    }
}
