//! `distribute-cores`: spreads each `tile.kernel` over the target's cores by choosing one of its
//! `parallel` loops and giving it `cores = n` (iteration `t` runs on core `t mod n`; see
//! `dialects::tile`). The choice: the innermost parallel loop with at least as many iterations as
//! the target has cores, so the loops around it stay sequential and roll whatever their trip
//! count (a GEMM's program then does not grow with M); else the parallel loop with the most
//! iterations, over as many cores as it has iterations. A kernel that already has a loop with
//! `cores` keeps it (a dump edited by hand compiles as written).

use super::PassInfo;
use crate::backend::options;
use crate::dialects::tile;
use crate::ir::{Attribute, Location, Module, OpId};
use crate::pass::{Pass, PassError};

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "distribute-cores",
    description: "spread each tile.kernel's parallel loop over the target's cores",
    create: || Box::new(DistributeCores),
};

/// The pass.
pub struct DistributeCores;

fn trips(m: &Module, op: OpId) -> i64 {
    let int = |n: &str| m.attr(op, n).and_then(Attribute::as_int).unwrap_or(0);
    ((int("upper") - int("lower")).max(0) as u64).div_ceil(int("step").max(1) as u64) as i64
}

impl Pass for DistributeCores {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        let o = options(m).map_err(|e| PassError::failed(INFO.name, Location::Unknown, e))?;
        let cores = o.target.cores.max(1) as i64;
        for kernel in m.walk_all() {
            if m.op(kernel).name != tile::Kernel::NAME {
                continue;
            }
            let mut nest = vec![];
            m.walk(kernel, &mut nest);
            let loops: Vec<OpId> = nest
                .into_iter()
                .filter(|&o| m.op(o).name == tile::For::NAME)
                .collect();
            if loops.iter().any(|&l| m.attr(l, "cores").is_some()) {
                continue;
            }
            let parallel: Vec<OpId> = loops
                .into_iter()
                .filter(|&l| m.attr(l, "parallel").and_then(Attribute::as_bool) == Some(true))
                .collect();
            let chosen = parallel
                .iter()
                .rev()
                .find(|&&l| trips(m, l) >= cores)
                .or_else(|| parallel.iter().max_by_key(|&&l| trips(m, l)));
            if let Some(&l) = chosen {
                let n = trips(m, l).min(cores);
                if n > 1 {
                    m.remove_attr(l, "parallel");
                    m.set_attr(l, "cores", Attribute::i64(n));
                }
            }
        }
        Ok(())
    }
}
