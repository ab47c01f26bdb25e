//! `lower-tile`: rewrites graph ops into `tile.kernel`s — the loop nest over tiles each op runs,
//! with its on-chip buffers, DMAs and tile compute written out (`dialects::tile`). Ops it does not
//! take yet stay graph ops, which `lower-llmpu` lowers through its kernel generators.
//!
//! Taken today: a 2-D `graph.matmul` `Y[M,N] = A[M,K]·B[K,N]` (with the `tile` pass's
//! `tile = [tm, tk, tn]`) of more than one row block, whose output tiles are at least as many as
//! the target's cores, whose operands are stored in the matrix engine's type and whose
//! double-buffered tiles fit the SRAM and accumulator:
//!
//! ```text
//! for i in 0..M step tm (parallel)
//!   for j in 0..N step tn (parallel)
//!     for k in 0..K step tk
//!       dma_load A[i, k] → a      (2 slots: the next tile loads while this one multiplies)
//!       dma_load B[k, j] → b      (2 slots)
//!       matmul a·b → acc          (a new accumulation at k = 0; acc has 2 slots)
//!     vector convert acc → out    (f32 to the storage type; 2 slots)
//!     dma_store out → Y[i, j]
//! ```
//!
//! Invariant: the kernel keeps the op's attributes (`llmpu.hbm`, `llmpu.storage`, `tile`), so
//! `plan-memory`'s addresses stay the contract; the HBM memrefs carry the planned storage types.

use super::PassInfo;
use crate::backend::plan::plan_function;
use crate::backend::{Options, options, scalar_of};
use crate::dialects::{graph, tile};
use crate::ir::{
    AddressSpace, Attribute, BlockId, BufferType, Location, Module, OpId, OpSpec, Type, ValueId,
};
use crate::pass::{Pass, PassError};
use llmpu_isa::DType;

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "lower-tile",
    description: "rewrite graph ops into tile.kernel loop nests (buffers, DMA, tile compute)",
    create: || Box::new(LowerTile),
};

/// The pass.
pub struct LowerTile;

impl Pass for LowerTile {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        let o = options(m).map_err(|e| PassError::failed(INFO.name, Location::Unknown, e))?;
        for func in m.functions() {
            let Some(entry) = m.entry_block(func) else {
                continue;
            };
            let plan = plan_function(m, func, &o)
                .map_err(|e| PassError::failed(INFO.name, m.op(func).loc.clone(), e.to_string()))?;
            for op in m.block(entry).ops.clone() {
                if m.op(op).name == graph::MatMul::NAME
                    && let Some(g) = Gemm::of(m, op, &plan, &o)
                {
                    g.build(m, op);
                }
            }
        }
        Ok(())
    }
}

/// A matmul the tile lowering takes: shapes, tiles and the storage types of its buffers.
struct Gemm {
    mm: u64,
    kk: u64,
    nn: u64,
    tm: u64,
    tk: u64,
    tn: u64,
    /// Storage types of A, B and Y in HBM.
    dts: [DType; 3],
}

impl Gemm {
    fn of(m: &Module, op: OpId, plan: &crate::backend::plan::Plan, o: &Options) -> Option<Gemm> {
        let d = m.op(op);
        let [a, b] = d.operands[..] else {
            return None;
        };
        let y = *d.results.first()?;
        let shape = |v: ValueId| {
            let s = m.value_type(v).as_tensor()?.static_shape()?;
            (s.len() == 2 && s.iter().all(|&x| x > 0)).then_some(s)
        };
        let (sa, sb) = (shape(a)?, shape(b)?);
        let (mm, kk, nn) = (sa[0], sa[1], sb[1]);
        if sb[0] != kk || shape(y)? != [mm, nn] {
            return None;
        }
        let t = m.attr(op, "tile").and_then(Attribute::as_i64_list)?;
        let &[tm, tk, tn] = &t[..] else {
            return None;
        };
        let (tm, tk, tn) = (
            (tm.max(1) as u64).min(mm),
            (tk.max(1) as u64).min(kk),
            (tn.max(1) as u64).min(nn),
        );
        let mxu = match o.precision {
            crate::backend::Precision::Fp32 => DType::F32,
            crate::backend::Precision::Bf16 => DType::BF16,
        };
        let dts = [
            plan.views.get(&a)?.dt,
            plan.views.get(&b)?.dt,
            plan.views.get(&y)?.dt,
        ];
        // Operands in the matrix engine's type (no staging conversion), a float result.
        if dts[0] != mxu || dts[1] != mxu || !dts[2].is_float() {
            return None;
        }
        // One row block (a decode step's matmul) stays with the kernel that multicasts the
        // shared rows; too few output tiles would leave cores idle.
        let cores = o.target.cores.max(1) as u64;
        if mm <= tm || mm.div_ceil(tm) * nn.div_ceil(tn) < cores {
            return None;
        }
        let sram = 2 * (tm * tk + tk * tn) * mxu.size() + 2 * tm * tn * dts[2].size();
        let acc = 2 * tm * tn * 4;
        if sram > o.target.sram.size_bytes || acc > o.target.accumulator.size_bytes {
            return None;
        }
        Some(Gemm {
            mm,
            kk,
            nn,
            tm,
            tk,
            tn,
            dts,
        })
    }

    fn build(&self, m: &mut Module, op: OpId) {
        let d = m.op(op).clone();
        let loc = d.loc.clone();
        let buf = |shape: &[u64], dt: DType, space: AddressSpace| {
            Type::Buffer(BufferType {
                shape: shape.to_vec(),
                elem: scalar_of(dt),
                space,
            })
        };
        let mut spec = OpSpec::new(tile::Kernel::NAME, loc.clone())
            .operands(&d.operands)
            .results(d.results.iter().map(|&r| m.value_type(r).clone()).collect())
            .attr("op", Attribute::str(graph::MatMul::NAME));
        for (n, a) in &d.attrs {
            spec = spec.attr(n, a.clone());
        }
        let kernel = m.create_op(spec);
        m.insert_op_before(op, kernel);
        let region = m.add_region(kernel);
        let hbm = AddressSpace::Hbm;
        let body = m.add_block(
            region,
            &[
                buf(&[self.mm, self.kk], self.dts[0], hbm),
                buf(&[self.kk, self.nn], self.dts[1], hbm),
                buf(&[self.mm, self.nn], self.dts[2], hbm),
            ],
        );
        let [ha, hb, hy] = m.block(body).args[..] else {
            return;
        };
        let (tm, tk, tn) = (self.tm, self.tk, self.tn);
        let alloc = |m: &mut Module, shape: &[u64], dt: DType, space: AddressSpace| {
            let a = m.append(
                body,
                OpSpec::new(tile::Alloc::NAME, loc.clone())
                    .results(vec![buf(shape, dt, space)])
                    .attr("slots", Attribute::i64(2)),
            );
            m.op(a).results[0]
        };
        let sram = AddressSpace::Sram;
        let at = alloc(m, &[tm, tk], self.dts[0], sram);
        let bt = alloc(m, &[tk, tn], self.dts[1], sram);
        let acc = alloc(m, &[tm, tn], DType::F32, AddressSpace::Acc);
        let out = alloc(m, &[tm, tn], self.dts[2], sram);
        let (bi, i) = for_loop(m, body, self.mm, tm, true, &loc);
        let (bj, j) = for_loop(m, bi, self.nn, tn, true, &loc);
        let (bk, k) = for_loop(m, bj, self.kk, tk, false, &loc);
        let inst = |m: &mut Module, b: BlockId, name: &str, ops: &[ValueId]| {
            m.append(b, OpSpec::new(name, loc.clone()).operands(ops))
        };
        inst(m, bk, tile::DmaLoad::NAME, &[ha, at, i, k]);
        inst(m, bk, tile::DmaLoad::NAME, &[hb, bt, k, j]);
        inst(m, bk, tile::MatMul::NAME, &[at, bt, acc, k]);
        inst(m, bk, tile::Yield::NAME, &[]);
        let cvt = inst(m, bj, tile::Vector::NAME, &[acc, out]);
        m.set_attr(cvt, "kind", Attribute::str("convert"));
        inst(m, bj, tile::DmaStore::NAME, &[out, hy, i, j]);
        inst(m, bj, tile::Yield::NAME, &[]);
        inst(m, bi, tile::Yield::NAME, &[]);
        inst(m, body, tile::Yield::NAME, &[]);
        let res = m.op(kernel).results.clone();
        for (&old, &new) in d.results.iter().zip(&res) {
            m.replace_all_uses(old, new);
        }
        m.erase_op(op);
    }
}

/// Appends `tile.for i = 0 .. upper step step` to `block`; returns its body and induction value.
fn for_loop(
    m: &mut Module,
    block: BlockId,
    upper: u64,
    step: u64,
    parallel: bool,
    loc: &Location,
) -> (BlockId, ValueId) {
    let mut spec = OpSpec::new(tile::For::NAME, loc.clone())
        .attr("lower", Attribute::i64(0))
        .attr("upper", Attribute::i64(upper as i64))
        .attr("step", Attribute::i64(step as i64));
    if parallel {
        spec = spec.attr("parallel", Attribute::Bool(true));
    }
    let f = m.append(block, spec);
    let r = m.add_region(f);
    let b = m.add_block(r, &[Type::Index]);
    let i = m.block(b).args[0];
    (b, i)
}
