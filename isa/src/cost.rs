//! The cost of one instruction on a target — the single model shared by the emulator's timing, the
//! compiler's tile-size choice and every report.
//!
//! An instruction occupies its unit for `occupancy` cycles (the next instruction of the same queue
//! may start then) and its results become visible `latency` cycles later (pipeline fill, HBM
//! latency). A DMA's `transfer` cycles are the part of its occupancy that also holds the shared HBM
//! channel; the emulator stretches them when cores contend. Byte counts are what the instruction
//! moves at each level; HBM bytes are rounded up to whole bursts per contiguous run.
//! `spec/cost-model.md` states every formula with a worked example.

use crate::fields::{Bcast, DType, Layout, TileRef};
use crate::inst::{CostClass, Inst, Unit};
use crate::target::{Dataflow, Target};

/// Which energy rate a matmul's MACs are charged at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MacKind {
    #[default]
    Low,
    Fp32,
    Int8,
}

/// Cycles, bytes and operations of one instruction.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cost {
    /// Cycles the unit is busy before it can start its next instruction.
    pub occupancy: u64,
    /// Of `occupancy`, cycles that hold the shared HBM channel (DMA only).
    pub transfer: u64,
    /// Extra cycles until the results are visible.
    pub latency: u64,
    pub hbm_read: u64,
    pub hbm_write: u64,
    pub sram_read: u64,
    pub sram_write: u64,
    pub acc_read: u64,
    pub acc_write: u64,
    /// Multiply-accumulates (matrix engine).
    pub macs: u64,
    pub mac_kind: MacKind,
    /// Element operations (vector unit).
    pub vector_ops: u64,
}

impl Cost {
    /// Cycles from start to visible results when the unit and HBM are otherwise idle.
    pub fn cycles(&self) -> u64 {
        self.occupancy.saturating_add(self.latency)
    }

    /// Energy of the dynamic events, in picojoules.
    pub fn energy_pj(&self, t: &Target) -> f64 {
        let e = &t.energy;
        let mac = match self.mac_kind {
            MacKind::Low => e.mac_bf16_pj,
            MacKind::Fp32 => e.mac_fp32_pj,
            MacKind::Int8 => e.mac_int8_pj,
        };
        self.macs as f64 * mac
            + self.vector_ops as f64 * e.vector_op_pj
            + (self.sram_read + self.sram_write) as f64 * e.sram_byte_pj
            + (self.acc_read + self.acc_write) as f64 * e.acc_byte_pj
            + (self.hbm_read + self.hbm_write) as f64 * e.hbm_byte_pj
    }
}

/// Bytes that cross HBM for `runs` contiguous runs of `run_bytes` each (saturating).
pub fn hbm_bytes(runs: u64, run_bytes: u64, t: &Target) -> u64 {
    let burst = t.hbm.burst_bytes.max(1);
    runs.saturating_mul(run_bytes.div_ceil(burst).saturating_mul(burst))
}

/// Cycles the HBM channel needs for `bytes` at the sustained bandwidth (peak ×
/// `hbm.efficiency`), saturating at `u64::MAX`, which the emulator reports as a cycle-limit
/// error.
pub fn transfer_cycles(bytes: u64, t: &Target) -> u64 {
    let c = (bytes as f64 / t.hbm_sustained_bytes_per_cycle()).ceil();
    if c.is_finite() && c >= 0.0 && c < u64::MAX as f64 {
        c as u64
    } else {
        u64::MAX
    }
}

/// Matrix-engine occupancy of an `m×k×n` tile matmul on an `R × C` array under the target's
/// [`Dataflow`] (× `fp32_slowdown` for f32 inputs; a matmul with a zero dimension costs one
/// cycle). A *fold* is one array-sized piece of the work; the streamed extent of each fold is
/// charged as it is (partial tiles by their real extent), while fill, skew and drain cross the
/// whole array:
///
/// - `ws-double`: `⌈k/R⌉·⌈n/C⌉·max(m, R)` — each weight tile loads (`R` cycles) while the
///   previous one streams `m` rows; fill and drain (`R + C`) are the instruction's latency.
/// - `ws`: `⌈k/R⌉·⌈n/C⌉·(m + 2R + C − 2)` — per fold: load the weights (`R`), skew the inputs
///   in (`R − 1`), stream `m` rows, drain (`C − 1`); no overlap between folds.
/// - `os`: `⌈m/R⌉·⌈n/C⌉·(k + R + C − 2)` — per fold: stream `k` with skew on both edges
///   (`R − 1 + C − 1`) and drain the stationary outputs.
/// - `is`: `⌈k/R⌉·⌈m/C⌉·(n + 2R + C − 2)` — `ws` with the roles of A and B exchanged: each fold
///   holds a `k × m` block of A and streams `n`.
///
/// The three per-fold forms are SCALE-Sim v3's compute cycles (`bench/scalesim/`).
pub fn matmul_occupancy(m: u64, k: u64, n: u64, dt: DType, t: &Target) -> u64 {
    let (r, c) = (t.matrix.rows.max(1) as u64, t.matrix.cols.max(1) as u64);
    if m == 0 || k == 0 || n == 0 {
        return 1;
    }
    let fill = |stream: u64, edge: u64| stream.saturating_add(edge).saturating_sub(2);
    let cycles = match t.matrix.dataflow {
        Dataflow::WsDouble => k
            .div_ceil(r)
            .saturating_mul(n.div_ceil(c))
            .saturating_mul(m.max(r)),
        Dataflow::Ws => k
            .div_ceil(r)
            .saturating_mul(n.div_ceil(c))
            .saturating_mul(fill(m, 2 * r + c)),
        Dataflow::Os => m
            .div_ceil(r)
            .saturating_mul(n.div_ceil(c))
            .saturating_mul(fill(k, r + c)),
        Dataflow::Is => k
            .div_ceil(r)
            .saturating_mul(m.div_ceil(c))
            .saturating_mul(fill(n, 2 * r + c)),
    };
    let slow = if matches!(dt, DType::F32 | DType::F64) {
        t.matrix.fp32_slowdown as u64
    } else {
        1
    };
    cycles.saturating_mul(slow)
}

/// Cycles after a matmul's occupancy until its results are in the accumulator: the fill and
/// drain `R + C` for `ws-double` (overlapped with the next instruction), 0 for the dataflows
/// that drain within every fold's occupancy.
pub fn matmul_latency(t: &Target) -> u64 {
    match t.matrix.dataflow {
        Dataflow::WsDouble => t.matrix.rows as u64 + t.matrix.cols as u64,
        Dataflow::Ws | Dataflow::Os | Dataflow::Is => 0,
    }
}

fn tile_bytes(t: &TileRef, rows: u64, cols: u64, bcast: Bcast) -> (bool, u64) {
    let elems = match bcast {
        Bcast::Full => rows.saturating_mul(cols),
        Bcast::Row => cols,
        Bcast::Col => rows,
    };
    (
        t.space == crate::fields::Space::Acc,
        elems.saturating_mul(t.dtype.size()),
    )
}

fn charge(c: &mut Cost, (acc, bytes): (bool, u64), write: bool) {
    let slot = match (acc, write) {
        (false, false) => &mut c.sram_read,
        (false, true) => &mut c.sram_write,
        (true, false) => &mut c.acc_read,
        (true, true) => &mut c.acc_write,
    };
    *slot = slot.saturating_add(bytes);
}

/// `⌈log2 lanes⌉`: the depth of a reduction tree over `lanes` lanes (0 for one lane).
pub fn reduction_depth(lanes: u64) -> u64 {
    if lanes <= 1 {
        0
    } else {
        (64 - (lanes - 1).leading_zeros()) as u64
    }
}

fn vector(c: &mut Cost, rows: u64, cols: u64, class: CostClass, t: &Target) {
    let lanes = (t.vector.lanes as u64).max(1);
    let l = &t.latency;
    let elems = rows.saturating_mul(cols);
    c.vector_ops = elems;
    c.latency = l.vpu_pipeline;
    c.occupancy = match class {
        CostClass::VecReduce => {
            c.latency = l.vpu_pipeline.saturating_add(reduction_depth(lanes));
            rows.saturating_mul(cols.div_ceil(lanes))
                .saturating_mul(l.vpu_simple)
        }
        CostClass::VecSpecial => elems.div_ceil(lanes).saturating_mul(l.vpu_special),
        CostClass::VecSimple => elems.div_ceil(lanes).saturating_mul(l.vpu_simple),
        CostClass::Scalar
        | CostClass::Branch
        | CostClass::ScalarMem
        | CostClass::DmaCopy
        | CostClass::DmaIndexed
        | CostClass::Matmul
        | CostClass::Sync
        | CostClass::Barrier
        | CostClass::Halt => elems.div_ceil(lanes).saturating_mul(l.vpu_simple),
    }
    .max(1);
}

/// The cost of `inst` on target `t`. All arithmetic saturates: a figure too large for `u64` is
/// `u64::MAX`, never a wrapped value.
pub fn cost(inst: &Inst, t: &Target) -> Cost {
    let d = inst.desc();
    let l = &t.latency;
    let mut c = Cost::default();
    match d.cost {
        CostClass::Scalar => c.occupancy = l.scalar,
        CostClass::Branch => c.occupancy = l.branch,
        CostClass::ScalarMem => {
            c.occupancy = l.scalar_mem;
            let bytes = if matches!(inst, Inst::Ld32 { .. }) {
                4
            } else {
                8
            };
            if matches!(inst, Inst::St { .. }) {
                c.sram_write = bytes;
            } else {
                c.sram_read = bytes;
            }
        }
        CostClass::Sync | CostClass::Halt => c.occupancy = l.sync,
        CostClass::Barrier => c.occupancy = l.barrier,
        CostClass::DmaCopy
        | CostClass::DmaIndexed
        | CostClass::Matmul
        | CostClass::VecSimple
        | CostClass::VecSpecial
        | CostClass::VecReduce => {}
    }
    let dma = |c: &mut Cost, hbm: u64| {
        c.transfer = transfer_cycles(hbm, t);
        c.occupancy = l.dma_setup.saturating_add(c.transfer);
        c.latency = t.hbm.latency_cycles;
    };
    match *inst {
        // Priced by their class alone (above).
        Inst::Nop {}
        | Inst::Halt {}
        | Inst::Li { .. }
        | Inst::Lih { .. }
        | Inst::Add { .. }
        | Inst::Sub { .. }
        | Inst::Mul { .. }
        | Inst::Div { .. }
        | Inst::Rem { .. }
        | Inst::Min { .. }
        | Inst::Max { .. }
        | Inst::And { .. }
        | Inst::Or { .. }
        | Inst::Xor { .. }
        | Inst::Shl { .. }
        | Inst::Shr { .. }
        | Inst::Slt { .. }
        | Inst::Seq { .. }
        | Inst::Addi { .. }
        | Inst::Muli { .. }
        | Inst::Shli { .. }
        | Inst::Shri { .. }
        | Inst::Andi { .. }
        | Inst::Beq { .. }
        | Inst::Bne { .. }
        | Inst::Blt { .. }
        | Inst::Bge { .. }
        | Inst::Jmp { .. }
        | Inst::Ld { .. }
        | Inst::Ld32 { .. }
        | Inst::St { .. }
        | Inst::Barrier {}
        | Inst::Wait { .. }
        | Inst::Signal { .. }
        | Inst::Cid { .. }
        | Inst::DmaWait { .. }
        | Inst::DmaSignal { .. }
        | Inst::MxuWait { .. }
        | Inst::MxuSignal { .. }
        | Inst::VpuWait { .. }
        | Inst::VpuSignal { .. } => {}
        Inst::DmaLoad {
            n0,
            n1,
            n2,
            dt,
            layout: _,
            ..
        } => {
            let (n0, n1, n2) = (n0 as u64, n1 as u64, n2 as u64);
            let bytes = n0 * n1 * n2 * dt.size();
            c.hbm_read = hbm_bytes(n1 * n2, n0 * dt.size(), t);
            c.sram_write = bytes;
            let h = c.hbm_read;
            dma(&mut c, h);
        }
        Inst::DmaMcast { .. } => {
            // One HBM read; the bytes are written into every destination's scratchpad.
            if let Some((load, dests, _)) = inst.multicast() {
                c = cost(&load, t);
                c.sram_write = c.sram_write.saturating_mul(dests.len() as u64);
            }
        }
        Inst::DmaStore {
            n0,
            n1,
            n2,
            dt,
            layout,
            ..
        } => {
            let (n0, n1, n2) = (n0 as u64, n1 as u64, n2 as u64);
            let bytes = n0 * n1 * n2 * dt.size();
            c.hbm_write = match layout {
                Layout::Rows => hbm_bytes(n1 * n2, n0 * dt.size(), t),
                Layout::Trans => hbm_bytes(n0 * n2, n1 * dt.size(), t),
            };
            c.sram_read = bytes;
            let h = c.hbm_write;
            dma(&mut c, h);
        }
        Inst::DmaGather {
            count,
            rowlen,
            dt,
            idt,
            ..
        }
        | Inst::DmaScatter {
            count,
            rowlen,
            dt,
            idt,
            ..
        } => {
            let (count, rowlen) = (count as u64, rowlen as u64);
            let hbm = hbm_bytes(count, rowlen * dt.size(), t);
            let bytes = count * rowlen * dt.size();
            c.sram_read = count * idt.size();
            if matches!(inst, Inst::DmaGather { .. }) {
                c.hbm_read = hbm;
                c.sram_write = bytes;
            } else {
                c.hbm_write = hbm;
                c.sram_read += bytes;
            }
            dma(&mut c, hbm);
        }
        Inst::MxuMatmul {
            m, k, n, dt, mode, ..
        } => {
            let (m, k, n) = (m as u64, k as u64, n as u64);
            c.occupancy = matmul_occupancy(m, k, n, dt, t);
            c.latency = matmul_latency(t);
            c.macs = m * k * n;
            c.mac_kind = match dt {
                DType::F32 | DType::F64 => MacKind::Fp32,
                DType::I8 | DType::U8 => MacKind::Int8,
                DType::F16
                | DType::BF16
                | DType::F8E4M3
                | DType::I16
                | DType::U16
                | DType::I32
                | DType::U32
                | DType::I64
                | DType::U64 => MacKind::Low,
            };
            // A is read once per column of folds, B once per row of output folds (`os`) or
            // per column of input folds (`is`), else once.
            let (r, cols) = ((t.matrix.rows as u64).max(1), (t.matrix.cols as u64).max(1));
            let (a_times, b_times) = match t.matrix.dataflow {
                Dataflow::WsDouble | Dataflow::Ws => (n.div_ceil(cols), 1),
                Dataflow::Os => (n.div_ceil(cols), m.div_ceil(r)),
                Dataflow::Is => (1, m.div_ceil(cols)),
            };
            c.sram_read = (m * k)
                .saturating_mul(a_times)
                .saturating_add((k * n).saturating_mul(b_times))
                .saturating_mul(dt.size());
            c.acc_write = m * n * 4;
            if mode == crate::fields::AccMode::Acc {
                c.acc_read = m * n * 4;
            }
        }
        Inst::VpuSel {
            dst,
            c: cond,
            a,
            b,
            rows,
            cols,
        } => {
            let (r, k) = (rows as u64, cols as u64);
            vector(&mut c, r, k, d.cost, t);
            for src in [cond, a, b] {
                charge(&mut c, tile_bytes(&src, r, k, Bcast::Full), false);
            }
            charge(&mut c, tile_bytes(&dst, r, k, Bcast::Full), true);
        }
        Inst::VpuSacc {
            dst,
            s,
            b,
            rows,
            cols,
        } => {
            let (r, k) = (rows as u64, cols as u64);
            vector(&mut c, r, k, d.cost, t);
            charge(&mut c, tile_bytes(&dst, r, k, Bcast::Full), false);
            charge(&mut c, tile_bytes(&s, r, k, Bcast::Col), false);
            charge(&mut c, tile_bytes(&b, r, k, Bcast::Full), false);
            charge(&mut c, tile_bytes(&dst, r, k, Bcast::Full), true);
        }
        Inst::VpuExpsum {
            dst,
            a,
            m,
            sum,
            rows,
            cols,
            ..
        } => {
            // The exponential pipe with its subtract-scale in front and the row-sum tree behind
            // it: one special-function pass, the sum visible after the tree's depth.
            let (r, k) = (rows as u64, cols as u64);
            vector(&mut c, r, k, d.cost, t);
            c.latency = c
                .latency
                .saturating_add(reduction_depth((t.vector.lanes as u64).max(1)));
            charge(&mut c, tile_bytes(&a, r, k, Bcast::Full), false);
            charge(&mut c, tile_bytes(&m, r, k, Bcast::Col), false);
            charge(&mut c, tile_bytes(&dst, r, k, Bcast::Full), true);
            charge(&mut c, tile_bytes(&sum, r, k, Bcast::Col), true);
        }
        Inst::VpuFill {
            dst, rows, cols, ..
        }
        | Inst::VpuCausal {
            dst, rows, cols, ..
        } => {
            let (r, k) = (rows as u64, cols as u64);
            vector(&mut c, r, k, d.cost, t);
            charge(&mut c, tile_bytes(&dst, r, k, Bcast::Full), true);
        }
        Inst::VpuRsum { dst, a, rows, cols }
        | Inst::VpuRmax { dst, a, rows, cols }
        | Inst::VpuRmin { dst, a, rows, cols } => {
            let (r, k) = (rows as u64, cols as u64);
            vector(&mut c, r, k, d.cost, t);
            charge(&mut c, tile_bytes(&a, r, k, Bcast::Full), false);
            charge(&mut c, tile_bytes(&dst, r, k, Bcast::Col), true);
        }
        Inst::VpuAdd { .. }
        | Inst::VpuSub { .. }
        | Inst::VpuMul { .. }
        | Inst::VpuDiv { .. }
        | Inst::VpuMax { .. }
        | Inst::VpuMin { .. }
        | Inst::VpuEq { .. }
        | Inst::VpuLt { .. }
        | Inst::VpuLe { .. } => {
            if let Some((dst, a, b, rows, cols, bcast)) = binary_parts(inst) {
                let (r, k) = (rows as u64, cols as u64);
                vector(&mut c, r, k, d.cost, t);
                charge(&mut c, tile_bytes(&a, r, k, Bcast::Full), false);
                charge(&mut c, tile_bytes(&b, r, k, bcast), false);
                charge(&mut c, tile_bytes(&dst, r, k, Bcast::Full), true);
            }
        }
        Inst::VpuAdds { .. }
        | Inst::VpuSubs { .. }
        | Inst::VpuRsubs { .. }
        | Inst::VpuMuls { .. }
        | Inst::VpuDivs { .. }
        | Inst::VpuMaxs { .. }
        | Inst::VpuMins { .. }
        | Inst::VpuPows { .. }
        | Inst::VpuCopy { .. }
        | Inst::VpuExp { .. }
        | Inst::VpuLog { .. }
        | Inst::VpuSqrt { .. }
        | Inst::VpuRsqrt { .. }
        | Inst::VpuRecip { .. }
        | Inst::VpuTanh { .. }
        | Inst::VpuErf { .. }
        | Inst::VpuSigmoid { .. }
        | Inst::VpuNeg { .. }
        | Inst::VpuAbs { .. }
        | Inst::VpuSin { .. }
        | Inst::VpuCos { .. }
        | Inst::VpuFloor { .. }
        | Inst::VpuCeil { .. }
        | Inst::VpuTrunc { .. }
        | Inst::VpuRound { .. } => {
            if let Some((dst, a, rows, cols, bcast)) = unary_parts(inst) {
                let (r, k) = (rows as u64, cols as u64);
                vector(&mut c, r, k, d.cost, t);
                charge(&mut c, tile_bytes(&a, r, k, bcast), false);
                charge(&mut c, tile_bytes(&dst, r, k, Bcast::Full), true);
            }
        }
    }
    debug_assert!(d.unit != Unit::Vpu || c.occupancy > 0 || matches!(d.cost, CostClass::Sync));
    c
}

/// `(dst, a, b, rows, cols, bcast)` of the two-source vector instructions whose `b` is read per
/// `bcast`.
pub fn binary_parts(inst: &Inst) -> Option<(TileRef, TileRef, TileRef, u32, u32, Bcast)> {
    match *inst {
        Inst::VpuAdd {
            dst,
            a,
            b,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuSub {
            dst,
            a,
            b,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuMul {
            dst,
            a,
            b,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuDiv {
            dst,
            a,
            b,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuMax {
            dst,
            a,
            b,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuMin {
            dst,
            a,
            b,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuEq {
            dst,
            a,
            b,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuLt {
            dst,
            a,
            b,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuLe {
            dst,
            a,
            b,
            rows,
            cols,
            bcast,
        } => Some((dst, a, b, rows, cols, bcast)),
        _ => None,
    }
}

/// `(dst, src, rows, cols, bcast)` of the one-source vector instructions (the immediate forms read
/// their source in full).
pub fn unary_parts(inst: &Inst) -> Option<(TileRef, TileRef, u32, u32, Bcast)> {
    Some(match *inst {
        Inst::VpuCopy {
            dst,
            a,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuExp {
            dst,
            a,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuLog {
            dst,
            a,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuSqrt {
            dst,
            a,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuRsqrt {
            dst,
            a,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuRecip {
            dst,
            a,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuTanh {
            dst,
            a,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuErf {
            dst,
            a,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuSigmoid {
            dst,
            a,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuNeg {
            dst,
            a,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuAbs {
            dst,
            a,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuSin {
            dst,
            a,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuCos {
            dst,
            a,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuFloor {
            dst,
            a,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuCeil {
            dst,
            a,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuTrunc {
            dst,
            a,
            rows,
            cols,
            bcast,
        }
        | Inst::VpuRound {
            dst,
            a,
            rows,
            cols,
            bcast,
        } => (dst, a, rows, cols, bcast),
        Inst::VpuAdds {
            dst, a, rows, cols, ..
        }
        | Inst::VpuSubs {
            dst, a, rows, cols, ..
        }
        | Inst::VpuRsubs {
            dst, a, rows, cols, ..
        }
        | Inst::VpuMuls {
            dst, a, rows, cols, ..
        }
        | Inst::VpuDivs {
            dst, a, rows, cols, ..
        }
        | Inst::VpuMaxs {
            dst, a, rows, cols, ..
        }
        | Inst::VpuMins {
            dst, a, rows, cols, ..
        }
        | Inst::VpuPows {
            dst, a, rows, cols, ..
        } => (dst, a, rows, cols, Bcast::Full),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::{AccMode, Reg};
    use crate::inst::INSTRUCTIONS;

    fn mm(m: u32, k: u32, n: u32, dt: DType) -> Inst {
        Inst::MxuMatmul {
            acc: Reg(1),
            a: Reg(2),
            b: Reg(3),
            m,
            k,
            n,
            lda: Reg(4),
            ldb: Reg(5),
            ldc: Reg(6),
            dt,
            mode: AccMode::Set,
        }
    }

    #[test]
    fn matmul_of_one_full_weight_tile_streams_m_rows() {
        let t = Target::preset("edge").unwrap();
        let c = cost(&mm(256, 32, 32, DType::BF16), &t);
        assert_eq!(c.occupancy, 256);
        assert_eq!(c.latency, 64);
        assert_eq!(c.macs, 256 * 32 * 32);
        let f = cost(&mm(256, 32, 32, DType::F32), &t);
        assert_eq!(f.occupancy, 4 * 256);
        assert_eq!(f.mac_kind, MacKind::Fp32);
    }

    fn with_dataflow(name: &str, d: Dataflow) -> Target {
        let mut t = Target::preset(name).unwrap();
        t.matrix.dataflow = d;
        t
    }

    /// SCALE-Sim v3 reports 1421, 851 and 1139 cycles for this GEMM on a 32×32 array (its count
    /// is the last busy cycle's index, one less than ours): `bench/scalesim/`.
    #[test]
    fn each_dataflow_charges_its_closed_form_per_fold() {
        let (m, k, n) = (64, 80, 96);
        let cases = [
            // ⌈80/32⌉·⌈96/32⌉ = 9 weight tiles of max(64, 32) rows, + R + C latency.
            (Dataflow::WsDouble, 9 * 64, 64),
            // 9 folds of m + 2R + C − 2 = 64 + 64 + 32 − 2 = 158.
            (Dataflow::Ws, 9 * 158, 0),
            // ⌈64/32⌉·⌈96/32⌉ = 6 output folds of k + R + C − 2 = 142.
            (Dataflow::Os, 6 * 142, 0),
            // ⌈80/32⌉·⌈64/32⌉ = 6 input folds of n + 2R + C − 2 = 190.
            (Dataflow::Is, 6 * 190, 0),
        ];
        for (d, occupancy, latency) in cases {
            let t = with_dataflow("edge", d);
            let c = cost(&mm(m, k, n, DType::BF16), &t);
            assert_eq!((c.occupancy, c.latency), (occupancy, latency), "{d:?}");
            assert_eq!(c.macs, 64 * 80 * 96);
            let f = cost(&mm(m, k, n, DType::F32), &t);
            assert_eq!(f.occupancy, 4 * occupancy, "{d:?} f32");
        }
    }

    #[test]
    fn without_double_buffering_a_skinny_matmul_pays_the_streamed_rows_plus_fill_and_drain() {
        // 128×128 array, m = 1: ws-double charges a whole weight load (R) per tile, ws the one
        // row plus fill and drain, os a fold per k streamed.
        let (k, n) = (512, 512);
        let ws = with_dataflow("datacenter", Dataflow::Ws);
        assert_eq!(
            cost(&mm(1, k, n, DType::BF16), &ws).occupancy,
            16 * (1 + 2 * 128 + 128 - 2)
        );
        let wsd = with_dataflow("datacenter", Dataflow::WsDouble);
        assert_eq!(cost(&mm(1, k, n, DType::BF16), &wsd).occupancy, 16 * 128);
        let os = with_dataflow("datacenter", Dataflow::Os);
        assert_eq!(
            cost(&mm(1, k, n, DType::BF16), &os).occupancy,
            4 * (512 + 128 + 128 - 2)
        );
        // A leftover of 72 rows: its real extent under ws, the weight-load bound under ws-double.
        assert_eq!(
            cost(&mm(72, 128, 128, DType::BF16), &ws).occupancy,
            72 + 2 * 128 + 128 - 2
        );
        assert_eq!(cost(&mm(72, 128, 128, DType::BF16), &wsd).occupancy, 128);
    }

    #[test]
    fn a_zero_sized_matmul_costs_one_cycle_in_every_dataflow() {
        for (d, _) in Dataflow::ALL {
            let t = with_dataflow("edge", d);
            for (m, k, n) in [(0, 8, 8), (8, 0, 8), (8, 8, 0)] {
                assert_eq!(cost(&mm(m, k, n, DType::BF16), &t).occupancy, 1, "{d:?}");
            }
        }
    }

    #[test]
    fn hbm_efficiency_stretches_transfers_by_its_inverse() {
        let mut t = Target::preset("edge").unwrap();
        // 100 bytes per cycle at peak; 6400 bytes take 64 cycles, 80 at 0.8 of peak.
        assert_eq!(transfer_cycles(6400, &t), 64);
        t.hbm.efficiency = 0.8;
        assert_eq!(transfer_cycles(6400, &t), 80);
    }

    #[test]
    fn small_m_is_bound_by_weight_loading() {
        let t = Target::preset("edge").unwrap();
        assert_eq!(cost(&mm(1, 64, 64, DType::BF16), &t).occupancy, 4 * 32);
    }

    #[test]
    fn dma_rounds_runs_to_bursts() {
        let t = Target::preset("edge").unwrap();
        let i = Inst::DmaLoad {
            sram: Reg(1),
            hbm: Reg(2),
            n0: 10,
            n1: 4,
            n2: 1,
            hs1: Reg(3),
            hs2: Reg(0),
            ss1: Reg(4),
            ss2: Reg(0),
            dt: DType::F32,
            layout: Layout::Rows,
        };
        let c = cost(&i, &t);
        assert_eq!(c.hbm_read, 4 * 64);
        assert_eq!(c.sram_write, 160);
        assert_eq!(c.transfer, 3);
        assert_eq!(c.occupancy, t.latency.dma_setup + 3);
    }

    #[test]
    fn cost_saturates_instead_of_overflowing_at_the_target_bounds() {
        use crate::target::*;
        let mut t = Target::preset("edge").unwrap();
        t.matrix.rows = 1;
        t.matrix.cols = 1;
        t.matrix.fp32_slowdown = MAX_FP32_SLOWDOWN as u32;
        t.vector.lanes = 1;
        t.hbm.burst_bytes = MAX_BURST_BYTES;
        t.hbm.latency_cycles = MAX_LATENCY;
        t.clock_ghz = MAX_CLOCK_GHZ;
        t.hbm.bandwidth_gb_s = MAX_CLOCK_GHZ * MIN_HBM_BYTES_PER_CYCLE;
        let l = &mut t.latency;
        for v in [
            &mut l.scalar,
            &mut l.branch,
            &mut l.scalar_mem,
            &mut l.sync,
            &mut l.barrier,
            &mut l.dma_setup,
            &mut l.vpu_pipeline,
            &mut l.vpu_simple,
            &mut l.vpu_special,
        ] {
            *v = MAX_LATENCY;
        }
        t.validate("t").unwrap();
        for d in INSTRUCTIONS {
            let raw: Vec<u64> = d
                .fields
                .iter()
                .map(|f| match f.kind {
                    crate::fields::FieldKind::Uimm => crate::fields::mask(f.width),
                    _ => 0,
                })
                .collect();
            let inst = Inst::from_raw(d.opcode, &raw).unwrap();
            let c = cost(&inst, &t);
            assert!(c.occupancy > 0, "{}", d.mnemonic);
            let _ = c.cycles();
        }
        let dma = cost(
            &Inst::DmaLoad {
                sram: Reg(1),
                hbm: Reg(2),
                n0: 65535,
                n1: 65535,
                n2: 65535,
                hs1: Reg(3),
                hs2: Reg(0),
                ss1: Reg(4),
                ss2: Reg(0),
                dt: DType::I64,
                layout: Layout::Rows,
            },
            &t,
        );
        assert_eq!(dma.transfer, u64::MAX);
        assert_eq!(dma.occupancy, u64::MAX);
    }

    #[test]
    fn reduction_depth_is_ceil_log2_of_the_lanes() {
        assert_eq!(
            [1, 2, 3, 4, 32, 33].map(reduction_depth),
            [0, 1, 2, 2, 5, 6]
        );
    }

    #[test]
    fn every_instruction_has_a_positive_occupancy() {
        let t = Target::preset("datacenter").unwrap();
        for d in INSTRUCTIONS {
            let raw: Vec<u64> = d.fields.iter().map(|_| 1).collect();
            let inst = Inst::from_raw(d.opcode, &raw).unwrap();
            assert!(cost(&inst, &t).occupancy > 0, "{}", d.mnemonic);
        }
    }
}
