//! Functional semantics of the DMA, matrix and vector instructions, and the byte ranges each one
//! touches.
//!
//! [`spans`] computes, from the register values captured at dispatch, the bounding byte range of
//! every operand (bounds-checked; an out-of-range operand is a trap) — the emulator uses them for
//! bounds checks, the race check, the same-unit interlock and the SRAM high-water marks.
//! [`execute`] then performs the instruction on real data. Rules (from the table in `isa::inst`):
//!
//! - DMA strides are in elements; `trans` swaps the two inner dimensions at the destination.
//!   Gather/scatter index vectors are i32 or i64; a row outside HBM traps naming the index.
//! - `mxu.matmul` widens its inputs exactly to f32 and multiplies in f32 in the order `gemm`
//!   defines (per element, fused multiply-adds in `k` order in chunks of 256; `set` overwrites C,
//!   `acc` adds to it); f32 operands are read in place, other types widened into reused staging
//!   buffers. i8/u8 inputs accumulate in wrapping i32. Any other input type is widened to f32
//!   like the floats. With `k = 0` the product is an empty sum: `set` writes zeros to C, `acc`
//!   leaves it unchanged. An operand with more elements than its memory holds (only possible with
//!   overlapping strides) traps as too large — checked with the spans, so timing-only runs trap
//!   alike.
//! - Vector ops read each source element as f32 (`numerics::load_f32`), compute in f32 and round to
//!   the destination type (`numerics::store_f32`). Rows are processed in order; a row's sources are
//!   read before its destination row is written. `vpu.copy` between identical types copies bytes
//!   exactly. Comparisons give 1.0 / 0.0; `max`/`min` propagate NaN. Reductions of an empty row
//!   give 0 (sum), -inf (max), +inf (min).
//! - Broadcast `row` reads one row of `cols` elements at the operand's base; `col` reads one
//!   element per row at `base + i·ld`.

use crate::error::{MemSpace, TrapKind};
use crate::gemm;
use crate::memory::{Hbm, Runs, Span, Spans, at, check, extent};
use llmpu_isa::numerics::{load_f32, store_f32};
use llmpu_isa::{AccMode, Bcast, DType, Inst, Layout, Reg, Space, TileRef};

/// Largest staging buffer (elements) a matmul may need; bigger tiles trap.
const MAX_STAGE: u64 = 1 << 28;

/// Register values captured at dispatch.
pub(crate) type Regs = [i64; 32];

#[inline]
fn rv(r: &Regs, reg: Reg) -> i64 {
    r[(reg.0 & 31) as usize]
}

/// Sizes of the memories an instruction may touch.
#[derive(Clone, Copy)]
pub(crate) struct Sizes {
    pub hbm: u64,
    pub sram: u64,
    pub acc: u64,
}

fn space_of(s: Space) -> MemSpace {
    match s {
        Space::Sram => MemSpace::Sram,
        Space::Acc => MemSpace::Acc,
    }
}

impl Sizes {
    fn of(&self, s: MemSpace) -> u64 {
        match s {
            MemSpace::Hbm => self.hbm,
            MemSpace::Sram => self.sram,
            MemSpace::Acc => self.acc,
        }
    }
}

fn add(
    out: &mut Spans,
    sz: &Sizes,
    space: MemSpace,
    write: bool,
    e: Option<(i128, i128)>,
) -> Result<(), TrapKind> {
    if let Some((lo, hi)) = e {
        let (lo, hi) = check(space, lo, hi, sz.of(space))?;
        out.push(Span {
            space,
            lo,
            hi,
            write,
            runs: None,
        });
    }
    Ok(())
}

fn tile_extent(t: &TileRef, r: &Regs, rows: u32, cols: u32, b: Bcast) -> Option<(i128, i128)> {
    let (base, ld, size) = (rv(r, t.addr), rv(r, t.ld), t.dtype.size());
    match b {
        Bcast::Full => extent(base, size, &[(cols as u64, 1), (rows as u64, ld)]),
        Bcast::Row => extent(base, size, &[(cols as u64, 1)]),
        Bcast::Col => extent(base, size, &[(rows as u64, ld)]),
    }
}

fn tile(
    out: &mut Spans,
    sz: &Sizes,
    r: &Regs,
    t: &TileRef,
    (rows, cols): (u32, u32),
    b: Bcast,
    write: bool,
) -> Result<(), TrapKind> {
    add(
        out,
        sz,
        space_of(t.space),
        write,
        tile_extent(t, r, rows, cols, b),
    )
}

fn read_index(sram: &[u8], idt: DType, base: i128, i: u64) -> Result<i64, TrapKind> {
    let isz = idt.size() as usize;
    let rg = at(
        MemSpace::Sram,
        sram.len(),
        base + i as i128 * isz as i128,
        isz,
    )?;
    let b = &sram[rg];
    Ok(match idt {
        DType::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
        DType::I64 => i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        other => return Err(TrapKind::BadIndexType(other)),
    })
}

/// HBM byte range of gather/scatter row `r` with index value `v`, checked against HBM.
#[allow(clippy::too_many_arguments)]
fn index_row(
    hbm: i64,
    v: i64,
    hs: i64,
    rowlen: u32,
    size: u64,
    position: u64,
    hbm_size: u64,
    limit: u32,
) -> Result<(i128, i128), TrapKind> {
    if limit != 0 && !(0..limit as i64).contains(&v) {
        return Err(TrapKind::IndexPastTable {
            position,
            value: v,
            limit,
        });
    }
    // i64 · i64 · size can exceed i128: saturate (a saturated address is out of range anyway).
    let lo = (v as i128)
        .saturating_mul(hs as i128)
        .saturating_mul(size as i128)
        .saturating_add(hbm as i128);
    let hi = lo.saturating_add(rowlen as i128 * size as i128);
    if lo < 0 || hi > hbm_size as i128 {
        return Err(TrapKind::BadIndex {
            position,
            value: v,
            lo,
            hi,
            size: hbm_size,
        });
    }
    Ok((lo, hi))
}

/// The checked byte ranges `inst` touches with registers `r`; `sram` supplies gather/scatter
/// indices. Scalar instructions other than `ld`/`st` touch nothing.
pub(crate) fn spans(inst: &Inst, r: &Regs, sz: &Sizes, sram: &[u8]) -> Result<Spans, TrapKind> {
    if let Some((load, _, _)) = inst.multicast() {
        return spans(&load, r, sz, sram);
    }
    let mut o = Spans::EMPTY;
    match *inst {
        Inst::Ld { rs1, off, .. } | Inst::Ld32 { rs1, off, .. } | Inst::St { rs1, off, .. } => {
            let n: u64 = if matches!(inst, Inst::Ld32 { .. }) {
                4
            } else {
                8
            };
            let addr = rv(r, rs1) as i128 + off as i128;
            if addr.rem_euclid(n as i128) != 0 {
                return Err(TrapKind::Misaligned {
                    space: MemSpace::Sram,
                    addr,
                    align: n,
                });
            }
            let write = matches!(inst, Inst::St { .. });
            add(
                &mut o,
                sz,
                MemSpace::Sram,
                write,
                Some((addr, addr + n as i128)),
            )?;
        }
        Inst::DmaLoad {
            sram: s,
            hbm,
            n0,
            n1,
            n2,
            hs1,
            hs2,
            ss1,
            ss2,
            dt,
            layout,
        }
        | Inst::DmaStore {
            sram: s,
            hbm,
            n0,
            n1,
            n2,
            hs1,
            hs2,
            ss1,
            ss2,
            dt,
            layout,
        } => {
            let load = matches!(inst, Inst::DmaLoad { .. });
            let (n0, n1, n2) = (n0 as u64, n1 as u64, n2 as u64);
            let (hs1, hs2, ss1, ss2) = (rv(r, hs1), rv(r, hs2), rv(r, ss1), rv(r, ss2));
            let rows_dims = |s1: i64, s2: i64| [(n0, 1), (n1, s1), (n2, s2)];
            let trans_dims = |s1: i64, s2: i64| [(n0, s1), (n1, 1), (n2, s2)];
            let sdims = if load && layout == Layout::Trans {
                trans_dims(ss1, ss2)
            } else {
                rows_dims(ss1, ss2)
            };
            let hdims = if !load && layout == Layout::Trans {
                trans_dims(hs1, hs2)
            } else {
                rows_dims(hs1, hs2)
            };
            let size = dt.size();
            add(
                &mut o,
                sz,
                MemSpace::Sram,
                load,
                extent(rv(r, s), size, &sdims),
            )?;
            add(
                &mut o,
                sz,
                MemSpace::Hbm,
                !load,
                extent(rv(r, hbm), size, &hdims),
            )?;
            // The exact HBM bytes: runs along the contiguous dimension.
            if let Some(h) = o.s[..o.n as usize].last_mut()
                && h.space == MemSpace::Hbm
            {
                let e = size as i128;
                let (run, outer) = if !load && layout == Layout::Trans {
                    (n1, [(n0, hs1), (n2, hs2)])
                } else {
                    (n0, [(n1, hs1), (n2, hs2)])
                };
                // In bounds, a dimension of count > 1 has a stride below the memory's size.
                let stride = |n: u64, st: i64| {
                    if n > 1 {
                        i64::try_from(st as i128 * e).ok()
                    } else {
                        Some(0)
                    }
                };
                if let (Some(s1), Some(s2)) = (
                    stride(outer[0].0, outer[0].1),
                    stride(outer[1].0, outer[1].1),
                ) {
                    h.runs = Some(Runs {
                        base: rv(r, hbm),
                        len: run * size,
                        outer: [(outer[0].0, s1), (outer[1].0, s2)],
                    });
                }
            }
        }
        Inst::DmaGather {
            sram: s,
            hbm,
            idx,
            count,
            rowlen,
            hs,
            ss,
            dt,
            idt,
            limit,
        }
        | Inst::DmaScatter {
            sram: s,
            hbm,
            idx,
            count,
            rowlen,
            hs,
            ss,
            dt,
            idt,
            limit,
        } => {
            let gather = matches!(inst, Inst::DmaGather { .. });
            if !matches!(idt, DType::I32 | DType::I64) {
                return Err(TrapKind::BadIndexType(idt));
            }
            let count = count as u64;
            add(
                &mut o,
                sz,
                MemSpace::Sram,
                false,
                extent(rv(r, idx), idt.size(), &[(count, 1)]),
            )?;
            let size = dt.size();
            add(
                &mut o,
                sz,
                MemSpace::Sram,
                gather,
                extent(rv(r, s), size, &[(rowlen as u64, 1), (count, rv(r, ss))]),
            )?;
            if rowlen > 0 && count > 0 {
                let (mut lo, mut hi) = (i128::MAX, i128::MIN);
                let base = rv(r, idx) as i128;
                for p in 0..count {
                    let v = read_index(sram, idt, base, p)?;
                    let (a, b) =
                        index_row(rv(r, hbm), v, rv(r, hs), rowlen, size, p, sz.hbm, limit)?;
                    lo = lo.min(a);
                    hi = hi.max(b);
                }
                add(&mut o, sz, MemSpace::Hbm, !gather, Some((lo, hi)))?;
            }
        }
        Inst::MxuMatmul {
            acc,
            a,
            b,
            m,
            k,
            n,
            lda,
            ldb,
            ldc,
            dt,
            ..
        } => {
            let (m, k, n) = (m as u64, k as u64, n as u64);
            let size = dt.size();
            if m > 0 && k > 0 && n > 0 {
                // The functional kernel stages each operand densely; an operand with more elements
                // than its memory can hold (possible only with overlapping strides) traps, in
                // timing-only runs too.
                for (elements, mem, esize) in [
                    (m * k, sz.sram, size),
                    (k * n, sz.sram, size),
                    (m * n, sz.acc, 4),
                ] {
                    let limit = MAX_STAGE.min(mem / esize).max(1);
                    if elements > limit {
                        return Err(TrapKind::TooLarge { elements, limit });
                    }
                }
            }
            add(
                &mut o,
                sz,
                MemSpace::Sram,
                false,
                extent(rv(r, a), size, &[(k, 1), (m, rv(r, lda))]),
            )?;
            add(
                &mut o,
                sz,
                MemSpace::Sram,
                false,
                extent(rv(r, b), size, &[(n, 1), (k, rv(r, ldb))]),
            )?;
            add(
                &mut o,
                sz,
                MemSpace::Acc,
                true,
                extent(rv(r, acc), 4, &[(n, 1), (m, rv(r, ldc))]),
            )?;
        }
        Inst::VpuSel {
            dst,
            c,
            a,
            b,
            rows,
            cols,
        } => {
            for t in [c, a, b] {
                tile(&mut o, sz, r, &t, (rows, cols), Bcast::Full, false)?;
            }
            tile(&mut o, sz, r, &dst, (rows, cols), Bcast::Full, true)?;
        }
        Inst::VpuSacc {
            dst,
            s,
            b,
            rows,
            cols,
        } => {
            tile(&mut o, sz, r, &s, (rows, cols), Bcast::Col, false)?;
            tile(&mut o, sz, r, &b, (rows, cols), Bcast::Full, false)?;
            tile(&mut o, sz, r, &dst, (rows, cols), Bcast::Full, true)?;
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
            tile(&mut o, sz, r, &a, (rows, cols), Bcast::Full, false)?;
            tile(&mut o, sz, r, &m, (rows, cols), Bcast::Col, false)?;
            tile(&mut o, sz, r, &dst, (rows, cols), Bcast::Full, true)?;
            tile(&mut o, sz, r, &sum, (rows, 1), Bcast::Col, true)?;
        }
        Inst::VpuFill {
            dst, rows, cols, ..
        }
        | Inst::VpuCausal {
            dst, rows, cols, ..
        } => {
            tile(&mut o, sz, r, &dst, (rows, cols), Bcast::Full, true)?;
        }
        Inst::VpuRsum { dst, a, rows, cols }
        | Inst::VpuRmax { dst, a, rows, cols }
        | Inst::VpuRmin { dst, a, rows, cols } => {
            tile(&mut o, sz, r, &a, (rows, cols), Bcast::Full, false)?;
            tile(&mut o, sz, r, &dst, (rows, 1), Bcast::Col, true)?;
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
            if let Some((dst, a, b, rows, cols, bcast)) = llmpu_isa::cost::binary_parts(inst) {
                tile(&mut o, sz, r, &a, (rows, cols), Bcast::Full, false)?;
                tile(&mut o, sz, r, &b, (rows, cols), bcast, false)?;
                tile(&mut o, sz, r, &dst, (rows, cols), Bcast::Full, true)?;
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
            if let Some((dst, a, rows, cols, bcast)) = llmpu_isa::cost::unary_parts(inst) {
                tile(&mut o, sz, r, &a, (rows, cols), bcast, false)?;
                tile(&mut o, sz, r, &dst, (rows, cols), Bcast::Full, true)?;
            }
        }
        // Registers, control flow and synchronization touch no memory.
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
        | Inst::Barrier {}
        | Inst::Wait { .. }
        | Inst::Signal { .. }
        | Inst::Cid { .. }
        | Inst::DmaMcast { .. }
        | Inst::DmaWait { .. }
        | Inst::DmaSignal { .. }
        | Inst::MxuWait { .. }
        | Inst::MxuSignal { .. }
        | Inst::VpuWait { .. }
        | Inst::VpuSignal { .. } => {}
    }
    Ok(o)
}

/// The exact on-chip bytes one operand touches: `elem`-byte elements at
/// `base + i0·s0 + i1·s1 + i2·s2` (byte strides, `dims[d] = (n_d, s_d)`). Used by
/// `--check-uninit`, which needs every byte read and written, not the bounding range of [`spans`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Access {
    pub space: MemSpace,
    pub write: bool,
    pub base: i128,
    pub elem: u64,
    pub dims: [(u64, i128); 3],
}

impl Access {
    fn new(space: MemSpace, write: bool, base: i128, elem: u64, dims: [(u64, i128); 3]) -> Self {
        Access {
            space,
            write,
            base,
            elem,
            dims,
        }
    }

    /// The byte runs `[lo, hi)` of the access, the innermost dimension merged into one run when
    /// it is dense. Runs outside the memory are skipped (the access was bounds-checked already).
    pub fn for_each_run(&self, f: &mut dyn FnMut(u64, u64)) {
        let [(n0, s0), (n1, s1), (n2, s2)] = self.dims;
        if n0 == 0 || n1 == 0 || n2 == 0 || self.elem == 0 {
            return;
        }
        let dense = s0 == self.elem as i128;
        let (count, len) = if dense {
            (1, n0 as i128 * self.elem as i128)
        } else {
            (n0, self.elem as i128)
        };
        for i2 in 0..n2 as i128 {
            for i1 in 0..n1 as i128 {
                let row = self.base + i1 * s1 + i2 * s2;
                for i0 in 0..count as i128 {
                    let lo = row + i0 * s0;
                    if lo >= 0 {
                        f(lo as u64, (lo + len) as u64);
                    }
                }
            }
        }
    }
}

fn tile_access(t: &TileRef, r: &Regs, rows: u32, cols: u32, b: Bcast, write: bool) -> Access {
    let (base, ld, size) = (rv(r, t.addr) as i128, rv(r, t.ld) as i128, t.dtype.size());
    let e = size as i128;
    let (rows, cols) = (rows as u64, cols as u64);
    let dims = match b {
        Bcast::Full => [(cols, e), (rows, ld * e), (1, 0)],
        Bcast::Row => [(cols, e), (1, 0), (1, 0)],
        Bcast::Col => [(1, e), (rows, ld * e), (1, 0)],
    };
    Access::new(space_of(t.space), write, base, size, dims)
}

/// Every on-chip byte range `inst` reads and writes, exactly, reads first (`--check-uninit`).
/// `sram` supplies gather/scatter indices (read only after their own check). HBM bytes are
/// checked by the DMA kernels themselves.
pub(crate) fn onchip_accesses(inst: &Inst, r: &Regs) -> Vec<Access> {
    if let Some((load, _, _)) = inst.multicast() {
        return onchip_accesses(&load, r);
    }
    let mut o = vec![];
    let mut tile = |t: &TileRef, rc: (u32, u32), b: Bcast, write: bool| {
        o.push(tile_access(t, r, rc.0, rc.1, b, write));
    };
    match *inst {
        Inst::Ld { rs1, off, .. } | Inst::Ld32 { rs1, off, .. } | Inst::St { rs1, off, .. } => {
            let n = if matches!(inst, Inst::Ld32 { .. }) {
                4
            } else {
                8
            };
            let addr = rv(r, rs1) as i128 + off as i128;
            let write = matches!(inst, Inst::St { .. });
            o.push(Access::new(
                MemSpace::Sram,
                write,
                addr,
                n,
                [(1, n as i128), (1, 0), (1, 0)],
            ));
        }
        Inst::DmaLoad {
            sram: s,
            n0,
            n1,
            n2,
            ss1,
            ss2,
            dt,
            layout,
            ..
        }
        | Inst::DmaStore {
            sram: s,
            n0,
            n1,
            n2,
            ss1,
            ss2,
            dt,
            layout,
            ..
        } => {
            let load = matches!(inst, Inst::DmaLoad { .. });
            let e = dt.size() as i128;
            let (ss1, ss2) = (rv(r, ss1) as i128 * e, rv(r, ss2) as i128 * e);
            let (n0, n1, n2) = (n0 as u64, n1 as u64, n2 as u64);
            let dims = if load && layout == Layout::Trans {
                [(n0, ss1), (n1, e), (n2, ss2)]
            } else {
                [(n0, e), (n1, ss1), (n2, ss2)]
            };
            o.push(Access::new(
                MemSpace::Sram,
                load,
                rv(r, s) as i128,
                dt.size(),
                dims,
            ));
        }
        Inst::DmaGather {
            sram: s,
            idx,
            count,
            rowlen,
            ss,
            dt,
            idt,
            ..
        }
        | Inst::DmaScatter {
            sram: s,
            idx,
            count,
            rowlen,
            ss,
            dt,
            idt,
            ..
        } => {
            let gather = matches!(inst, Inst::DmaGather { .. });
            let (count, e) = (count as u64, dt.size() as i128);
            let ie = idt.size();
            o.push(Access::new(
                MemSpace::Sram,
                false,
                rv(r, idx) as i128,
                ie,
                [(count, ie as i128), (1, 0), (1, 0)],
            ));
            o.push(Access::new(
                MemSpace::Sram,
                gather,
                rv(r, s) as i128,
                dt.size(),
                [(rowlen as u64, e), (count, rv(r, ss) as i128 * e), (1, 0)],
            ));
        }
        Inst::MxuMatmul {
            acc,
            a,
            b,
            m,
            k,
            n,
            lda,
            ldb,
            ldc,
            dt,
            mode,
        } => {
            let (m, k, n) = (m as u64, k as u64, n as u64);
            if m == 0 || n == 0 {
                return o;
            }
            let e = dt.size() as i128;
            let c = |write| {
                Access::new(
                    MemSpace::Acc,
                    write,
                    rv(r, acc) as i128,
                    4,
                    [(n, 4), (m, rv(r, ldc) as i128 * 4), (1, 0)],
                )
            };
            if k > 0 {
                o.push(Access::new(
                    MemSpace::Sram,
                    false,
                    rv(r, a) as i128,
                    dt.size(),
                    [(k, e), (m, rv(r, lda) as i128 * e), (1, 0)],
                ));
                o.push(Access::new(
                    MemSpace::Sram,
                    false,
                    rv(r, b) as i128,
                    dt.size(),
                    [(n, e), (k, rv(r, ldb) as i128 * e), (1, 0)],
                ));
                if mode == AccMode::Acc {
                    o.push(c(false));
                }
                o.push(c(true));
            } else if mode == AccMode::Set {
                o.push(c(true));
            }
        }
        Inst::VpuSel {
            dst,
            c,
            a,
            b,
            rows,
            cols,
        } => {
            for t in [c, a, b] {
                tile(&t, (rows, cols), Bcast::Full, false);
            }
            tile(&dst, (rows, cols), Bcast::Full, true);
        }
        Inst::VpuSacc {
            dst,
            s,
            b,
            rows,
            cols,
        } => {
            // `dst = dst · s + b`: the destination is read too.
            tile(&dst, (rows, cols), Bcast::Full, false);
            tile(&s, (rows, cols), Bcast::Col, false);
            tile(&b, (rows, cols), Bcast::Full, false);
            tile(&dst, (rows, cols), Bcast::Full, true);
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
            tile(&a, (rows, cols), Bcast::Full, false);
            tile(&m, (rows, cols), Bcast::Col, false);
            tile(&dst, (rows, cols), Bcast::Full, true);
            tile(&sum, (rows, 1), Bcast::Col, true);
        }
        Inst::VpuFill {
            dst, rows, cols, ..
        } => tile(&dst, (rows, cols), Bcast::Full, true),
        Inst::VpuCausal {
            dst,
            qoff,
            koff,
            rows,
            cols,
            ..
        } => {
            // Row i is written from column max(0, q + i − k + 1) on; nothing is read.
            let (q, k) = (rv(r, qoff) as i128, rv(r, koff) as i128);
            let full = tile_access(&dst, r, rows, cols, Bcast::Full, true);
            let (e, ld) = (full.elem as i128, full.dims[1].1);
            for i in 0..rows as i128 {
                let first = (q + i - k + 1).clamp(0, cols as i128);
                let n = cols as i128 - first;
                if n > 0 {
                    o.push(Access::new(
                        full.space,
                        true,
                        full.base + i * ld + first * e,
                        full.elem,
                        [(n as u64, e), (1, 0), (1, 0)],
                    ));
                }
            }
        }
        Inst::VpuRsum { dst, a, rows, cols }
        | Inst::VpuRmax { dst, a, rows, cols }
        | Inst::VpuRmin { dst, a, rows, cols } => {
            tile(&a, (rows, cols), Bcast::Full, false);
            tile(&dst, (rows, 1), Bcast::Col, true);
        }
        _ => {
            if let Some((dst, a, b, rows, cols, bcast)) = llmpu_isa::cost::binary_parts(inst) {
                tile(&a, (rows, cols), Bcast::Full, false);
                tile(&b, (rows, cols), bcast, false);
                tile(&dst, (rows, cols), Bcast::Full, true);
            } else if let Some((dst, a, rows, cols, bcast)) = llmpu_isa::cost::unary_parts(inst) {
                tile(&a, (rows, cols), bcast, false);
                tile(&dst, (rows, cols), Bcast::Full, true);
            }
        }
    }
    o
}

/// The memories of one core plus HBM, as seen by one instruction.
pub(crate) struct Mem<'a, 'd> {
    pub sram: &'a mut [u8],
    pub acc: &'a mut [u8],
    pub hbm: &'a mut Hbm<'d>,
    /// Trap on device reads of HBM bytes never written (`--check-uninit`).
    pub check_uninit: bool,
}

impl Mem<'_, '_> {
    /// With `--check-uninit`, a device read of HBM bytes never written is a trap.
    #[inline]
    fn hbm_written(&self, addr: u64, len: usize) -> Result<(), TrapKind> {
        if self.check_uninit
            && let Some((first, count)) = self.hbm.unwritten(addr, len as u64)
        {
            return Err(TrapKind::Uninit {
                space: MemSpace::Hbm,
                lo: addr,
                hi: addr + len as u64,
                first,
                count,
            });
        }
        Ok(())
    }
}

impl Mem<'_, '_> {
    fn space(&mut self, s: Space) -> (&mut [u8], MemSpace) {
        match s {
            Space::Sram => (self.sram, MemSpace::Sram),
            Space::Acc => (self.acc, MemSpace::Acc),
        }
    }

    fn load_row(&mut self, t: &TileRef, addr: i128, out: &mut [f32]) -> Result<(), TrapKind> {
        let size = t.dtype.size() as usize;
        let (m, sp) = self.space(t.space);
        let rg = at(sp, m.len(), addr, out.len() * size)?;
        load_f32(t.dtype, &m[rg], out);
        Ok(())
    }

    fn store_row(&mut self, t: &TileRef, addr: i128, vals: &[f32]) -> Result<(), TrapKind> {
        let size = t.dtype.size() as usize;
        let (m, sp) = self.space(t.space);
        let rg = at(sp, m.len(), addr, vals.len() * size)?;
        store_f32(t.dtype, vals, &mut m[rg]);
        Ok(())
    }
}

struct TileAt {
    t: TileRef,
    base: i128,
    ld: i128,
    size: i128,
}

impl TileAt {
    fn new(t: TileRef, r: &Regs) -> TileAt {
        TileAt {
            t,
            base: rv(r, t.addr) as i128,
            ld: rv(r, t.ld) as i128,
            size: t.dtype.size() as i128,
        }
    }

    fn row(&self, i: u32) -> i128 {
        self.base + i as i128 * self.ld * self.size
    }
}

/// Source of one vector operand for row `i`, honoring its broadcast mode.
fn load_src(
    m: &mut Mem,
    src: &TileAt,
    bcast: Bcast,
    i: u32,
    buf: &mut [f32],
    row_cache: &mut Option<Vec<f32>>,
) -> Result<(), TrapKind> {
    match bcast {
        Bcast::Full => m.load_row(&src.t, src.row(i), buf),
        Bcast::Row => {
            if row_cache.is_none() {
                let mut v = vec![0f32; buf.len()];
                m.load_row(&src.t, src.base, &mut v)?;
                *row_cache = Some(v);
            }
            if let Some(v) = row_cache {
                buf.copy_from_slice(v);
            }
            Ok(())
        }
        Bcast::Col => {
            let mut one = [0f32];
            m.load_row(&src.t, src.row(i), &mut one)?;
            buf.fill(one[0]);
            Ok(())
        }
    }
}

fn nan_max(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

fn nan_min(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.min(b)
    }
}

fn flag(c: bool) -> f32 {
    if c { 1.0 } else { 0.0 }
}

#[allow(clippy::too_many_arguments)]
fn binary(
    m: &mut Mem,
    r: &Regs,
    dst: TileRef,
    a: TileRef,
    b: TileRef,
    rows: u32,
    cols: u32,
    bcast: Bcast,
    f: impl Fn(f32, f32) -> f32,
) -> Result<(), TrapKind> {
    let (d, a, b) = (TileAt::new(dst, r), TileAt::new(a, r), TileAt::new(b, r));
    let n = cols as usize;
    let (mut fa, mut fb) = (vec![0f32; n], vec![0f32; n]);
    let mut cache = None;
    for i in 0..rows {
        m.load_row(&a.t, a.row(i), &mut fa)?;
        load_src(m, &b, bcast, i, &mut fb, &mut cache)?;
        for (x, y) in fa.iter_mut().zip(&fb) {
            *x = f(*x, *y);
        }
        m.store_row(&d.t, d.row(i), &fa)?;
    }
    Ok(())
}

fn unary(
    m: &mut Mem,
    r: &Regs,
    (dst, a): (TileRef, TileRef),
    rows: u32,
    cols: u32,
    bcast: Bcast,
    f: impl Fn(f32) -> f32,
) -> Result<(), TrapKind> {
    let (d, a) = (TileAt::new(dst, r), TileAt::new(a, r));
    let mut buf = vec![0f32; cols as usize];
    let mut cache = None;
    for i in 0..rows {
        load_src(m, &a, bcast, i, &mut buf, &mut cache)?;
        for x in buf.iter_mut() {
            *x = f(*x);
        }
        m.store_row(&d.t, d.row(i), &buf)?;
    }
    Ok(())
}

fn copy_bytes(
    m: &mut Mem,
    r: &Regs,
    dst: TileRef,
    a: TileRef,
    rows: u32,
    cols: u32,
    bcast: Bcast,
) -> Result<(), TrapKind> {
    let (d, s) = (TileAt::new(dst, r), TileAt::new(a, r));
    let size = dst.dtype.size() as usize;
    let n = cols as usize * size;
    let mut buf = vec![0u8; n];
    for i in 0..rows {
        let src_addr = match bcast {
            Bcast::Full => s.row(i),
            Bcast::Row => s.base,
            Bcast::Col => s.row(i),
        };
        let (mem, sp) = m.space(a.space);
        if bcast == Bcast::Col {
            let rg = at(sp, mem.len(), src_addr, size)?;
            for c in buf.chunks_exact_mut(size) {
                c.copy_from_slice(&mem[rg.clone()]);
            }
        } else {
            let rg = at(sp, mem.len(), src_addr, n)?;
            buf.copy_from_slice(&mem[rg]);
        }
        let (mem, sp) = m.space(dst.space);
        let rg = at(sp, mem.len(), d.row(i), n)?;
        mem[rg].copy_from_slice(&buf);
    }
    Ok(())
}

fn reduce(
    m: &mut Mem,
    r: &Regs,
    (dst, a): (TileRef, TileRef),
    rows: u32,
    cols: u32,
    init: f32,
    f: impl Fn(f32, f32) -> f32,
) -> Result<(), TrapKind> {
    let (d, a) = (TileAt::new(dst, r), TileAt::new(a, r));
    let mut buf = vec![0f32; cols as usize];
    for i in 0..rows {
        m.load_row(&a.t, a.row(i), &mut buf)?;
        let v = buf.iter().fold(init, |acc, &x| f(acc, x));
        m.store_row(&d.t, d.row(i), &[v])?;
    }
    Ok(())
}

fn erf(x: f32) -> f32 {
    let x = x as f64;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let poly = -x * x - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = 1.0 - t * poly.exp();
    (if x >= 0.0 { r } else { -r }) as f32
}

fn dma(inst: &Inst, r: &Regs, m: &mut Mem) -> Result<(), TrapKind> {
    let (Inst::DmaLoad {
        sram,
        hbm,
        n0,
        n1,
        n2,
        hs1,
        hs2,
        ss1,
        ss2,
        dt,
        layout,
    }
    | Inst::DmaStore {
        sram,
        hbm,
        n0,
        n1,
        n2,
        hs1,
        hs2,
        ss1,
        ss2,
        dt,
        layout,
    }) = *inst
    else {
        return Ok(());
    };
    if n0 == 0 || n1 == 0 || n2 == 0 {
        return Ok(());
    }
    let load = matches!(inst, Inst::DmaLoad { .. });
    let size = dt.size() as i128;
    let sz = size as usize;
    let (hs1, hs2, ss1, ss2) = (
        rv(r, hs1) as i128,
        rv(r, hs2) as i128,
        rv(r, ss1) as i128,
        rv(r, ss2) as i128,
    );
    let (sb, hb) = (rv(r, sram) as i128, rv(r, hbm) as i128);
    let row_bytes = n0 as usize * sz;
    // Staging for transposing layouts only.
    let mut buf = if layout == Layout::Trans {
        vec![0u8; row_bytes]
    } else {
        Vec::new()
    };
    let hbm_size = m.hbm.size();
    let hbm_u = |a: i128| -> Result<u64, TrapKind> {
        if a < 0 {
            Err(TrapKind::OutOfBounds {
                space: MemSpace::Hbm,
                lo: a,
                hi: a + size,
                size: hbm_size,
            })
        } else {
            Ok(a as u64)
        }
    };
    for i2 in 0..n2 as i128 {
        // Row addresses of this plane advance by fixed byte steps.
        let (mut h_row, mut s_row) = (hb + i2 * hs2 * size, sb + i2 * ss2 * size);
        let (h_step, s_step) = (hs1 * size, ss1 * size);
        for i1 in 0..n1 as i128 {
            match (load, layout) {
                (true, Layout::Rows) => {
                    // Hint the row four ahead into the host cache while this one is copied.
                    let ahead = h_row + 4 * h_step;
                    if ahead >= 0 && i1 + 4 < n1 as i128 {
                        m.hbm.prefetch(ahead as u64, row_bytes);
                    }
                    let h = hbm_u(h_row)?;
                    let rg = at(MemSpace::Sram, m.sram.len(), s_row, row_bytes)?;
                    m.hbm_written(h, row_bytes)?;
                    m.hbm.read(h, &mut m.sram[rg])?;
                }
                (true, Layout::Trans) => {
                    let h = hbm_u(hb + (i2 * hs2 + i1 * hs1) * size)?;
                    m.hbm_written(h, buf.len())?;
                    m.hbm.read(h, &mut buf)?;
                    for (i0, e) in buf.chunks_exact(sz).enumerate() {
                        let s = sb + (i2 * ss2 + i0 as i128 * ss1 + i1) * size;
                        let rg = at(MemSpace::Sram, m.sram.len(), s, sz)?;
                        m.sram[rg].copy_from_slice(e);
                    }
                }
                (false, Layout::Rows) => {
                    let s = sb + (i2 * ss2 + i1 * ss1) * size;
                    let rg = at(MemSpace::Sram, m.sram.len(), s, row_bytes)?;
                    let h = hbm_u(hb + (i2 * hs2 + i1 * hs1) * size)?;
                    m.hbm.write(h, &m.sram[rg])?;
                }
                (false, Layout::Trans) => {
                    let s = sb + (i2 * ss2 + i1 * ss1) * size;
                    let rg = at(MemSpace::Sram, m.sram.len(), s, row_bytes)?;
                    buf.copy_from_slice(&m.sram[rg]);
                    for (i0, e) in buf.chunks_exact(sz).enumerate() {
                        let h = hbm_u(hb + (i2 * hs2 + i0 as i128 * hs1 + i1) * size)?;
                        m.hbm.write(h, e)?;
                    }
                }
            }
            h_row += h_step;
            s_row += s_step;
        }
    }
    Ok(())
}

fn indexed(inst: &Inst, r: &Regs, m: &mut Mem) -> Result<(), TrapKind> {
    let (Inst::DmaGather {
        sram,
        hbm,
        idx,
        count,
        rowlen,
        hs,
        ss,
        dt,
        idt,
        limit,
    }
    | Inst::DmaScatter {
        sram,
        hbm,
        idx,
        count,
        rowlen,
        hs,
        ss,
        dt,
        idt,
        limit,
    }) = *inst
    else {
        return Ok(());
    };
    let gather = matches!(inst, Inst::DmaGather { .. });
    let size = dt.size();
    let row_bytes = rowlen as usize * size as usize;
    let hbm_size = m.hbm.size();
    for p in 0..count as u64 {
        let v = read_index(m.sram, idt, rv(r, idx) as i128, p)?;
        let (lo, _) = index_row(rv(r, hbm), v, rv(r, hs), rowlen, size, p, hbm_size, limit)?;
        let s = rv(r, sram) as i128 + p as i128 * rv(r, ss) as i128 * size as i128;
        let rg = at(MemSpace::Sram, m.sram.len(), s, row_bytes)?;
        if gather {
            m.hbm_written(lo as u64, row_bytes)?;
            m.hbm.read(lo as u64, &mut m.sram[rg])?;
        } else {
            m.hbm.write(lo as u64, &m.sram[rg])?;
        }
    }
    Ok(())
}

fn stage(n: u64) -> Result<usize, TrapKind> {
    if n > MAX_STAGE {
        return Err(TrapKind::TooLarge {
            elements: n,
            limit: MAX_STAGE,
        });
    }
    Ok(n as usize)
}

fn matmul(inst: &Inst, r: &Regs, m: &mut Mem) -> Result<(), TrapKind> {
    let Inst::MxuMatmul {
        acc,
        a,
        b,
        m: rows,
        k,
        n,
        lda,
        ldb,
        ldc,
        dt,
        mode,
    } = *inst
    else {
        return Ok(());
    };
    let (mr, k, n) = (rows as usize, k as usize, n as usize);
    if mr == 0 || n == 0 {
        return Ok(());
    }
    let ldc = rv(r, ldc) as i128;
    let cb = rv(r, acc) as i128;
    let c_row = |i: usize| cb + i as i128 * ldc * 4;
    if k == 0 {
        // An empty sum: `set` writes zeros (0.0 and integer 0 are both all-zero bytes), `acc`
        // leaves C as it is.
        if mode == AccMode::Set {
            for i in 0..mr {
                let rg = at(MemSpace::Acc, m.acc.len(), c_row(i), n * 4)?;
                m.acc[rg].fill(0);
            }
        }
        return Ok(());
    }
    let (ab, bb) = (rv(r, a) as i128, rv(r, b) as i128);
    let (lda, ldb) = (rv(r, lda) as i128, rv(r, ldb) as i128);
    let int = matches!(dt, DType::I8 | DType::U8);
    let c_len = stage(mr as u64 * n as u64)?;
    let a_len = stage(mr as u64 * k as u64)?;
    let b_len = stage(k as u64 * n as u64)?;
    let acc_mode = mode == AccMode::Acc;
    if int {
        let widen = |bytes: &[u8], out: &mut [i32]| {
            for (o, &x) in out.iter_mut().zip(bytes) {
                *o = if dt == DType::I8 {
                    x as i8 as i32
                } else {
                    x as i32
                };
            }
        };
        let mut av = vec![0i32; a_len];
        for i in 0..mr {
            let rg = at(MemSpace::Sram, m.sram.len(), ab + i as i128 * lda, k)?;
            widen(&m.sram[rg], &mut av[i * k..(i + 1) * k]);
        }
        let mut bv = vec![0i32; b_len];
        for p in 0..k {
            let rg = at(MemSpace::Sram, m.sram.len(), bb + p as i128 * ldb, n)?;
            widen(&m.sram[rg], &mut bv[p * n..(p + 1) * n]);
        }
        let mut cv = vec![0i32; c_len];
        for i in 0..mr {
            let crow = &mut cv[i * n..(i + 1) * n];
            if acc_mode {
                let rg = at(MemSpace::Acc, m.acc.len(), c_row(i), n * 4)?;
                for (c, x) in crow.iter_mut().zip(m.acc[rg].chunks_exact(4)) {
                    *c = i32::from_le_bytes([x[0], x[1], x[2], x[3]]);
                }
            }
            for p in 0..k {
                let x = av[i * k + p];
                if x == 0 {
                    continue;
                }
                for (c, &y) in crow.iter_mut().zip(&bv[p * n..(p + 1) * n]) {
                    *c = c.wrapping_add(x.wrapping_mul(y));
                }
            }
            let rg = at(MemSpace::Acc, m.acc.len(), c_row(i), n * 4)?;
            for (c, x) in crow.iter().zip(m.acc[rg].chunks_exact_mut(4)) {
                x.copy_from_slice(&c.to_le_bytes());
            }
        }
        return Ok(());
    }
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let [sa, sb, sc] = &mut *scratch;
        let a = float_operand(m.sram, dt, ab, lda, mr, k, a_len, sa)?;
        let b = float_operand(m.sram, dt, bb, ldb, k, n, b_len, sb)?;
        // Row addresses are linear in the row index, so the first and last rows bound them all.
        let first = at(MemSpace::Acc, m.acc.len(), c_row(0), n * 4)?;
        at(MemSpace::Acc, m.acc.len(), c_row(mr - 1), n * 4)?;
        // C in place when its rows are disjoint f32 runs; otherwise (overlapping rows) staged:
        // every row is read before any is written and rows are stored in order, the last wins.
        let disjoint = mr == 1 || ldc.unsigned_abs() >= n as u128;
        match isize::try_from(ldc) {
            Ok(ld) if disjoint && cfg!(target_endian = "little") => {
                let c = gemm::ViewMut {
                    // SAFETY: row 0 is in bounds (checked above), so the offset stays inside acc.
                    ptr: unsafe { m.acc.as_mut_ptr().add(first.start) } as *mut f32,
                    ld,
                };
                // SAFETY: every row of A, B and C was checked in bounds; C's rows are disjoint
                // and lie in the accumulator, A and B in SRAM or the scratch buffers.
                unsafe { gemm::gemm(mr, k, n, a, b, c, acc_mode) };
            }
            _ => {
                stage_len(sc, c_len);
                if acc_mode {
                    for i in 0..mr {
                        let rg = at(MemSpace::Acc, m.acc.len(), c_row(i), n * 4)?;
                        load_f32(DType::F32, &m.acc[rg], &mut sc[i * n..(i + 1) * n]);
                    }
                }
                let c = gemm::ViewMut {
                    ptr: sc.as_mut_ptr(),
                    ld: n as isize,
                };
                // SAFETY: sc holds mr×n elements, dense; A and B as above.
                unsafe { gemm::gemm(mr, k, n, a, b, c, acc_mode) };
                for i in 0..mr {
                    let rg = at(MemSpace::Acc, m.acc.len(), c_row(i), n * 4)?;
                    store_f32(DType::F32, &sc[i * n..(i + 1) * n], &mut m.acc[rg]);
                }
            }
        }
        Ok(())
    })
}

thread_local! {
    /// Staging buffers of the float matmul (A, B, C), kept between instructions.
    static SCRATCH: std::cell::RefCell<[Vec<f32>; 3]> = const {
        std::cell::RefCell::new([Vec::new(), Vec::new(), Vec::new()])
    };
}

/// Makes `buf` exactly `len` long (contents unspecified: every element is written before use).
fn stage_len(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    buf.truncate(len);
}

/// A `rows × cols` matmul input at byte address `base` of SRAM with a row stride of `ld`
/// elements, as an f32 view: f32 data in place (little-endian hosts), any other type widened
/// exactly into `buf` (dense, `len` = rows·cols elements). Every row is bounds-checked.
#[allow(clippy::too_many_arguments)]
fn float_operand(
    sram: &[u8],
    dt: DType,
    base: i128,
    ld: i128,
    rows: usize,
    cols: usize,
    len: usize,
    buf: &mut Vec<f32>,
) -> Result<gemm::View, TrapKind> {
    let size = dt.size() as i128;
    let row = |i: usize| {
        at(
            MemSpace::Sram,
            sram.len(),
            base + i as i128 * ld * size,
            cols * size as usize,
        )
    };
    // Row addresses are linear in the row index: the first and last rows bound them all.
    row(0)?;
    row(rows.saturating_sub(1))?;
    if dt == DType::F32
        && cfg!(target_endian = "little")
        && let Ok(ld) = isize::try_from(ld)
    {
        return Ok(gemm::View {
            // SAFETY: row 0 is in bounds, so the offset stays inside SRAM.
            ptr: unsafe { sram.as_ptr().add(row(0)?.start) } as *const f32,
            ld,
        });
    }
    stage_len(buf, len);
    for i in 0..rows {
        load_f32(dt, &sram[row(i)?], &mut buf[i * cols..(i + 1) * cols]);
    }
    Ok(gemm::View {
        ptr: buf.as_ptr(),
        ld: cols as isize,
    })
}

fn fill_bytes(dt: DType, v: f32) -> [u8; 8] {
    let mut b = [0u8; 8];
    store_f32(dt, &[v], &mut b[..dt.size() as usize]);
    b
}

/// Performs `inst` on real data. The spans were checked already; every slice is re-checked.
pub(crate) fn execute(inst: &Inst, r: &Regs, m: &mut Mem) -> Result<(), TrapKind> {
    match *inst {
        Inst::DmaLoad { .. } | Inst::DmaStore { .. } => dma(inst, r, m),
        // One destination's copy; the simulation calls this once per destination core.
        Inst::DmaMcast { .. } => match inst.multicast() {
            Some((load, _, _)) => dma(&load, r, m),
            None => Ok(()),
        },
        Inst::DmaGather { .. } | Inst::DmaScatter { .. } => indexed(inst, r, m),
        Inst::MxuMatmul { .. } => matmul(inst, r, m),
        Inst::VpuAdd {
            dst,
            a,
            b,
            rows,
            cols,
            bcast,
        } => binary(m, r, dst, a, b, rows, cols, bcast, |x, y| x + y),
        Inst::VpuSub {
            dst,
            a,
            b,
            rows,
            cols,
            bcast,
        } => binary(m, r, dst, a, b, rows, cols, bcast, |x, y| x - y),
        Inst::VpuMul {
            dst,
            a,
            b,
            rows,
            cols,
            bcast,
        } => binary(m, r, dst, a, b, rows, cols, bcast, |x, y| x * y),
        Inst::VpuDiv {
            dst,
            a,
            b,
            rows,
            cols,
            bcast,
        } => binary(m, r, dst, a, b, rows, cols, bcast, |x, y| x / y),
        Inst::VpuMax {
            dst,
            a,
            b,
            rows,
            cols,
            bcast,
        } => binary(m, r, dst, a, b, rows, cols, bcast, nan_max),
        Inst::VpuMin {
            dst,
            a,
            b,
            rows,
            cols,
            bcast,
        } => binary(m, r, dst, a, b, rows, cols, bcast, nan_min),
        Inst::VpuEq {
            dst,
            a,
            b,
            rows,
            cols,
            bcast,
        } => binary(m, r, dst, a, b, rows, cols, bcast, |x, y| flag(x == y)),
        Inst::VpuLt {
            dst,
            a,
            b,
            rows,
            cols,
            bcast,
        } => binary(m, r, dst, a, b, rows, cols, bcast, |x, y| flag(x < y)),
        Inst::VpuLe {
            dst,
            a,
            b,
            rows,
            cols,
            bcast,
        } => binary(m, r, dst, a, b, rows, cols, bcast, |x, y| flag(x <= y)),
        Inst::VpuSel {
            dst,
            c,
            a,
            b,
            rows,
            cols,
        } => {
            let (d, c, a, b) = (
                TileAt::new(dst, r),
                TileAt::new(c, r),
                TileAt::new(a, r),
                TileAt::new(b, r),
            );
            let n = cols as usize;
            let (mut fc, mut fa, mut fb) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
            for i in 0..rows {
                m.load_row(&c.t, c.row(i), &mut fc)?;
                m.load_row(&a.t, a.row(i), &mut fa)?;
                m.load_row(&b.t, b.row(i), &mut fb)?;
                for ((x, &y), &z) in fa.iter_mut().zip(&fb).zip(&fc) {
                    if z == 0.0 {
                        *x = y;
                    }
                }
                m.store_row(&d.t, d.row(i), &fa)?;
            }
            Ok(())
        }
        Inst::VpuAdds {
            dst,
            a,
            imm,
            rows,
            cols,
        } => unary(m, r, (dst, a), rows, cols, Bcast::Full, |x| x + imm),
        Inst::VpuSubs {
            dst,
            a,
            imm,
            rows,
            cols,
        } => unary(m, r, (dst, a), rows, cols, Bcast::Full, |x| x - imm),
        Inst::VpuRsubs {
            dst,
            a,
            imm,
            rows,
            cols,
        } => unary(m, r, (dst, a), rows, cols, Bcast::Full, |x| imm - x),
        Inst::VpuMuls {
            dst,
            a,
            imm,
            rows,
            cols,
        } => unary(m, r, (dst, a), rows, cols, Bcast::Full, |x| x * imm),
        Inst::VpuDivs {
            dst,
            a,
            imm,
            rows,
            cols,
        } => unary(m, r, (dst, a), rows, cols, Bcast::Full, |x| x / imm),
        Inst::VpuMaxs {
            dst,
            a,
            imm,
            rows,
            cols,
        } => unary(m, r, (dst, a), rows, cols, Bcast::Full, |x| nan_max(x, imm)),
        Inst::VpuMins {
            dst,
            a,
            imm,
            rows,
            cols,
        } => unary(m, r, (dst, a), rows, cols, Bcast::Full, |x| nan_min(x, imm)),
        Inst::VpuPows {
            dst,
            a,
            imm,
            rows,
            cols,
        } => unary(m, r, (dst, a), rows, cols, Bcast::Full, |x| x.powf(imm)),
        Inst::VpuCopy {
            dst,
            a,
            rows,
            cols,
            bcast,
        } => {
            if dst.dtype == a.dtype {
                copy_bytes(m, r, dst, a, rows, cols, bcast)
            } else {
                unary(m, r, (dst, a), rows, cols, bcast, |x| x)
            }
        }
        Inst::VpuExp {
            dst,
            a,
            rows,
            cols,
            bcast,
        } => unary(m, r, (dst, a), rows, cols, bcast, f32::exp),
        Inst::VpuLog {
            dst,
            a,
            rows,
            cols,
            bcast,
        } => unary(m, r, (dst, a), rows, cols, bcast, f32::ln),
        Inst::VpuSqrt {
            dst,
            a,
            rows,
            cols,
            bcast,
        } => unary(m, r, (dst, a), rows, cols, bcast, f32::sqrt),
        Inst::VpuRsqrt {
            dst,
            a,
            rows,
            cols,
            bcast,
        } => unary(m, r, (dst, a), rows, cols, bcast, |x| 1.0 / x.sqrt()),
        Inst::VpuRecip {
            dst,
            a,
            rows,
            cols,
            bcast,
        } => unary(m, r, (dst, a), rows, cols, bcast, |x| 1.0 / x),
        Inst::VpuTanh {
            dst,
            a,
            rows,
            cols,
            bcast,
        } => unary(m, r, (dst, a), rows, cols, bcast, f32::tanh),
        Inst::VpuErf {
            dst,
            a,
            rows,
            cols,
            bcast,
        } => unary(m, r, (dst, a), rows, cols, bcast, erf),
        Inst::VpuSigmoid {
            dst,
            a,
            rows,
            cols,
            bcast,
        } => unary(m, r, (dst, a), rows, cols, bcast, |x| {
            1.0 / (1.0 + (-x).exp())
        }),
        Inst::VpuNeg {
            dst,
            a,
            rows,
            cols,
            bcast,
        } => unary(m, r, (dst, a), rows, cols, bcast, |x| -x),
        Inst::VpuAbs {
            dst,
            a,
            rows,
            cols,
            bcast,
        } => unary(m, r, (dst, a), rows, cols, bcast, f32::abs),
        Inst::VpuSin {
            dst,
            a,
            rows,
            cols,
            bcast,
        } => unary(m, r, (dst, a), rows, cols, bcast, f32::sin),
        Inst::VpuCos {
            dst,
            a,
            rows,
            cols,
            bcast,
        } => unary(m, r, (dst, a), rows, cols, bcast, f32::cos),
        Inst::VpuFloor {
            dst,
            a,
            rows,
            cols,
            bcast,
        } => unary(m, r, (dst, a), rows, cols, bcast, f32::floor),
        Inst::VpuCeil {
            dst,
            a,
            rows,
            cols,
            bcast,
        } => unary(m, r, (dst, a), rows, cols, bcast, f32::ceil),
        Inst::VpuTrunc {
            dst,
            a,
            rows,
            cols,
            bcast,
        } => unary(m, r, (dst, a), rows, cols, bcast, f32::trunc),
        Inst::VpuRound {
            dst,
            a,
            rows,
            cols,
            bcast,
        } => unary(m, r, (dst, a), rows, cols, bcast, f32::round_ties_even),
        Inst::VpuRsum { dst, a, rows, cols } => {
            reduce(m, r, (dst, a), rows, cols, 0.0, |x, y| x + y)
        }
        Inst::VpuRmax { dst, a, rows, cols } => {
            reduce(m, r, (dst, a), rows, cols, f32::NEG_INFINITY, nan_max)
        }
        Inst::VpuRmin { dst, a, rows, cols } => {
            reduce(m, r, (dst, a), rows, cols, f32::INFINITY, nan_min)
        }
        Inst::VpuSacc {
            dst,
            s,
            b,
            rows,
            cols,
        } => {
            let (d, s, b) = (TileAt::new(dst, r), TileAt::new(s, r), TileAt::new(b, r));
            let n = cols as usize;
            let (mut fd, mut fb, mut fs) = (vec![0f32; n], vec![0f32; n], [0f32]);
            for i in 0..rows {
                m.load_row(&d.t, d.row(i), &mut fd)?;
                m.load_row(&s.t, s.row(i), &mut fs)?;
                m.load_row(&b.t, b.row(i), &mut fb)?;
                for (x, &y) in fd.iter_mut().zip(&fb) {
                    *x = *x * fs[0] + y;
                }
                m.store_row(&d.t, d.row(i), &fd)?;
            }
            Ok(())
        }
        Inst::VpuExpsum {
            dst,
            a,
            m: mx,
            sum,
            imm,
            rows,
            cols,
        } => {
            let (d, a, mx, sum) = (
                TileAt::new(dst, r),
                TileAt::new(a, r),
                TileAt::new(mx, r),
                TileAt::new(sum, r),
            );
            let mut buf = vec![0f32; cols as usize];
            let mut mv = [0f32];
            for i in 0..rows {
                m.load_row(&a.t, a.row(i), &mut buf)?;
                m.load_row(&mx.t, mx.row(i), &mut mv)?;
                let mut s = 0f32;
                for x in buf.iter_mut() {
                    *x = ((*x - mv[0]) * imm).exp();
                    s += *x;
                }
                m.store_row(&d.t, d.row(i), &buf)?;
                m.store_row(&sum.t, sum.row(i), &[s])?;
            }
            Ok(())
        }
        Inst::VpuFill {
            dst,
            imm,
            rows,
            cols,
        } => {
            let d = TileAt::new(dst, r);
            let size = dst.dtype.size() as usize;
            let pat = fill_bytes(dst.dtype, imm);
            let (mem, sp) = m.space(dst.space);
            for i in 0..rows {
                let rg = at(sp, mem.len(), d.row(i), cols as usize * size)?;
                for c in mem[rg].chunks_exact_mut(size) {
                    c.copy_from_slice(&pat[..size]);
                }
            }
            Ok(())
        }
        Inst::VpuCausal {
            dst,
            qoff,
            koff,
            imm,
            rows,
            cols,
        } => {
            let d = TileAt::new(dst, r);
            let size = dst.dtype.size() as usize;
            let pat = fill_bytes(dst.dtype, imm);
            let (q, k) = (rv(r, qoff) as i128, rv(r, koff) as i128);
            let (mem, sp) = m.space(dst.space);
            for i in 0..rows {
                let first = (q + i as i128 - k + 1).clamp(0, cols as i128) as usize;
                let n = cols as usize - first;
                if n == 0 {
                    continue;
                }
                let rg = at(sp, mem.len(), d.row(i) + (first * size) as i128, n * size)?;
                for c in mem[rg].chunks_exact_mut(size) {
                    c.copy_from_slice(&pat[..size]);
                }
            }
            Ok(())
        }
        // Scalar instructions run in the dispatcher (`sim`); synchronization has no data effect.
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
        | Inst::VpuSignal { .. } => Ok(()),
    }
}

/// The work the functional kernels do for `inst`: elements moved by a DMA, plus the cost model's
/// element operations (vector) and multiply-accumulates (matmul) — what `RunOptions::max_work`
/// bounds.
pub(crate) fn work(inst: &Inst, cst: &llmpu_isa::Cost) -> u64 {
    let moved = match *inst {
        Inst::DmaLoad { n0, n1, n2, .. } | Inst::DmaStore { n0, n1, n2, .. } => {
            n0 as u64 * n1 as u64 * n2 as u64
        }
        Inst::DmaMcast {
            n0, n1, n2, ncores, ..
        } => (n0 as u64 * n1 as u64 * n2 as u64).saturating_mul(ncores as u64),
        Inst::DmaGather { count, rowlen, .. } | Inst::DmaScatter { count, rowlen, .. } => {
            count as u64 * rowlen as u64
        }
        _ => 0,
    };
    moved
        .saturating_add(cst.macs)
        .saturating_add(cst.vector_ops)
}
