//! `tile`: chooses tile sizes from the target with the cost model (`backend::tiling`) and records
//! them as attributes the lowering reads: `tile = array<i64: tm, tk, tn>` on matmuls (and matmul
//! epilogues), `q_block`/`kv_block` on fused attention. An attribute already present is kept, so a
//! hand-edited dump compiles with the tiles it names.

use crate::dialects::graph;
use super::PassInfo;
use crate::backend::plan::shape_of;
use crate::backend::kernels::matmul_rows;
use crate::backend::tiling::{activation_passes, matmul_tiles_fused};
use crate::backend::{Precision, options};
use crate::ir::{Attribute, Location, Module};
use crate::pass::{Pass, PassError};
use llmpu_isa::DType;

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "tile",
    description: "choose tile sizes from the target's array and memories (cost-model driven)",
    create: || Box::new(Tile),
};

/// The pass.
pub struct Tile;

impl Pass for Tile {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        let o = options(m).map_err(|e| PassError::failed(INFO.name, Location::Unknown, e))?;
        let dt = match o.precision {
            Precision::Fp32 => DType::F32,
            Precision::Bf16 => DType::BF16,
        };
        for op in m.walk_all() {
            let name = m.op(op).name.clone();
            match name.as_str() {
                graph::MatMul::NAME | graph::MatMulEpilogue::NAME => {
                    if m.attr(op, "tile").is_some() {
                        continue;
                    }
                    let d = m.op(op);
                    let (Some(a), Some(b), Some(r)) = (
                        shape_of(m, d.operands[0]),
                        d.operands.get(1).and_then(|&b| shape_of(m, b)),
                        d.results.first().and_then(|&r| shape_of(m, r)),
                    ) else {
                        continue;
                    };
                    let k = a.last().copied().unwrap_or(1);
                    let n = if r.is_empty() { 1 } else { r[r.len() - 1] };
                    let mm = matmul_rows(&b, &r);
                    if r.contains(&0) {
                        // An empty result: the lowering emits nothing for it.
                        continue;
                    }
                    if k == 0 {
                        // A product over an empty contraction is all zeros (plus any bias): a
                        // fill the matmul kernels do not emit.
                        return Err(PassError::failed(
                            INFO.name,
                            d.loc.clone(),
                            "unsupported: matmul over an empty contraction dim (k = 0)",
                        ));
                    }
                    let act = match m.attr(op, "activation") {
                        Some(Attribute::Str(a)) => activation_passes(a, &o.target),
                        _ => 0,
                    };
                    // A fused residual: its tile loads, one add pass, plus its conversion from a
                    // 16-bit type.
                    let residual =
                        m.attr(op, "residual").and_then(Attribute::as_bool) == Some(true);
                    let act = act + u64::from(residual) * if dt == DType::F32 { 1 } else { 2 };
                    let (tm, tk, tn, cycles) =
                        matmul_tiles_fused(mm, k, n, dt, &o.target, act, residual);
                    m.set_attr(
                        op,
                        "tile",
                        Attribute::DenseI64Array(vec![tm as i64, tk as i64, tn as i64]),
                    );
                    m.set_attr(op, "tile_cycles", Attribute::i64(cycles as i64));
                }
                graph::FusedAttention::NAME => crate::backend::attention::annotate(m, op, &o),
                _ => {}
            }
        }
        Ok(())
    }
}
