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
use crate::target::Target;

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
        self.occupancy + self.latency
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

/// Bytes that cross HBM for `runs` contiguous runs of `run_bytes` each.
pub fn hbm_bytes(runs: u64, run_bytes: u64, t: &Target) -> u64 {
    runs * run_bytes.div_ceil(t.hbm.burst_bytes) * t.hbm.burst_bytes
}

/// Cycles the HBM channel needs for `bytes` at peak bandwidth.
pub fn transfer_cycles(bytes: u64, t: &Target) -> u64 {
    (bytes as f64 / t.hbm_bytes_per_cycle()).ceil() as u64
}

/// Matrix-engine occupancy of an `m×k×n` tile matmul: weight tiles of `rows × cols` are loaded
/// once per pass, overlapped with streaming `m` rows; a pass takes `max(m, rows)` cycles.
pub fn matmul_occupancy(m: u64, k: u64, n: u64, dt: DType, t: &Target) -> u64 {
    let (r, c) = (t.matrix.rows as u64, t.matrix.cols as u64);
    if m == 0 || k == 0 || n == 0 {
        return 1;
    }
    let passes = k.div_ceil(r) * n.div_ceil(c);
    let slow = if dt == DType::F32 {
        t.matrix.fp32_slowdown as u64
    } else {
        1
    };
    passes * m.max(r) * slow
}

fn tile_bytes(t: &TileRef, rows: u64, cols: u64, bcast: Bcast) -> (bool, u64) {
    let elems = match bcast {
        Bcast::Full => rows * cols,
        Bcast::Row => cols,
        Bcast::Col => rows,
    };
    (t.space == crate::fields::Space::Acc, elems * t.dtype.size())
}

fn charge(c: &mut Cost, (acc, bytes): (bool, u64), write: bool) {
    match (acc, write) {
        (false, false) => c.sram_read += bytes,
        (false, true) => c.sram_write += bytes,
        (true, false) => c.acc_read += bytes,
        (true, true) => c.acc_write += bytes,
    }
}

fn vector(c: &mut Cost, rows: u64, cols: u64, class: CostClass, t: &Target) {
    let lanes = t.vector.lanes as u64;
    let l = &t.latency;
    let elems = rows * cols;
    c.vector_ops = elems;
    match class {
        CostClass::VecReduce => {
            c.occupancy = (rows * cols.div_ceil(lanes) * l.vpu_simple).max(1);
            c.latency = l.vpu_pipeline + (lanes.max(2) as f64).log2().ceil() as u64;
        }
        CostClass::VecSpecial => {
            c.occupancy = (elems.div_ceil(lanes) * l.vpu_special).max(1);
            c.latency = l.vpu_pipeline;
        }
        _ => {
            c.occupancy = (elems.div_ceil(lanes) * l.vpu_simple).max(1);
            c.latency = l.vpu_pipeline;
        }
    }
}

/// The cost of `inst` on target `t`.
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
        _ => {}
    }
    match *inst {
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
            c.transfer = transfer_cycles(c.hbm_read, t);
            c.occupancy = l.dma_setup + c.transfer;
            c.latency = t.hbm.latency_cycles;
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
            c.transfer = transfer_cycles(c.hbm_write, t);
            c.occupancy = l.dma_setup + c.transfer;
            c.latency = t.hbm.latency_cycles;
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
            c.transfer = transfer_cycles(hbm, t);
            c.occupancy = l.dma_setup + c.transfer;
            c.latency = t.hbm.latency_cycles;
        }
        Inst::MxuMatmul {
            m, k, n, dt, mode, ..
        } => {
            let (m, k, n) = (m as u64, k as u64, n as u64);
            c.occupancy = matmul_occupancy(m, k, n, dt, t);
            c.latency = (t.matrix.rows + t.matrix.cols) as u64;
            c.macs = m * k * n;
            c.mac_kind = match dt {
                DType::F32 => MacKind::Fp32,
                DType::I8 | DType::U8 => MacKind::Int8,
                _ => MacKind::Low,
            };
            let passes_n = n.div_ceil(t.matrix.cols as u64);
            c.sram_read = (m * k * passes_n + k * n) * dt.size();
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
        _ => {
            if let Some((dst, a, b, rows, cols, bcast)) = binary_parts(inst) {
                let (r, k) = (rows as u64, cols as u64);
                vector(&mut c, r, k, d.cost, t);
                charge(&mut c, tile_bytes(&a, r, k, Bcast::Full), false);
                charge(&mut c, tile_bytes(&b, r, k, bcast), false);
                charge(&mut c, tile_bytes(&dst, r, k, Bcast::Full), true);
            } else if let Some((dst, a, rows, cols, bcast)) = unary_parts(inst) {
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
    fn every_instruction_has_a_positive_occupancy() {
        let t = Target::preset("datacenter").unwrap();
        for d in INSTRUCTIONS {
            let raw: Vec<u64> = d.fields.iter().map(|_| 1).collect();
            let inst = Inst::from_raw(d.opcode, &raw).unwrap();
            assert!(cost(&inst, &t).occupancy > 0, "{}", d.mnemonic);
        }
    }
}
