//! Vector-unit helpers: [`T`] (a tile in SRAM or the accumulator), the operation kinds
//! ([`Bin`], [`Un`], [`Imm`], [`Red`]) and the [`Emitter`] methods that emit one vector instruction
//! with its operands' footprints (so the emitter can synchronize it).

use super::*;

/// A tile in SRAM or the accumulator: base, row stride (elements), type.
#[derive(Clone, Copy, Debug)]
pub struct T {
    pub mem: Mem,
    pub addr: u64,
    pub ld: u64,
    pub dt: DType,
}

impl T {
    pub fn sram(addr: u64, ld: u64, dt: DType) -> T {
        T {
            mem: Mem::Sram,
            addr,
            ld,
            dt,
        }
    }
    fn touch(&self, rows: u64, cols: u64, b: Bcast, write: bool) -> Touch {
        let sz = self.dt.size();
        let len = match b {
            Bcast::Full => ((rows.max(1) - 1) * self.ld + cols) * sz,
            Bcast::Row => cols * sz,
            Bcast::Col => ((rows.max(1) - 1) * self.ld + 1) * sz,
        };
        Touch {
            mem: self.mem,
            lo: self.addr,
            hi: self.addr + len,
            write,
        }
    }
}

pub(super) fn tref(e: &mut Emitter, t: T) -> TileRef {
    TileRef {
        space: if t.mem == Mem::Acc {
            Space::Acc
        } else {
            Space::Sram
        },
        dtype: t.dt,
        addr: e.reg(t.addr as i64),
        ld: e.reg(t.ld as i64),
    }
}

/// Binary vector ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bin {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Eq,
    Lt,
    Le,
}

/// Unary vector ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Un {
    Copy,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Recip,
    Tanh,
    Erf,
    Sigmoid,
    Neg,
    Abs,
    Sin,
    Cos,
    /// Round toward −∞.
    Floor,
    /// Round toward +∞.
    Ceil,
    /// Round toward zero.
    Trunc,
    /// Round to nearest, ties to even.
    Round,
}

/// Vector ops with an immediate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Imm {
    Add,
    Sub,
    Rsub,
    Mul,
    Div,
    Max,
    Min,
    Pow,
}

/// Row reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Red {
    Sum,
    Max,
    Min,
}

#[allow(clippy::too_many_arguments)]
impl Emitter {
    pub fn vbin(&mut self, k: Bin, d: T, a: T, b: T, bc: Bcast, rows: u64, cols: u64) {
        let touches = vec![
            a.touch(rows, cols, Bcast::Full, false),
            b.touch(rows, cols, bc, false),
            d.touch(rows, cols, Bcast::Full, true),
        ];
        let (dst, a, b) = (tref(self, d), tref(self, a), tref(self, b));
        let (rows, cols, bcast) = (rows as u32, cols as u32, bc);
        let inst = match k {
            Bin::Add => Inst::VpuAdd {
                dst,
                a,
                b,
                rows,
                cols,
                bcast,
            },
            Bin::Sub => Inst::VpuSub {
                dst,
                a,
                b,
                rows,
                cols,
                bcast,
            },
            Bin::Mul => Inst::VpuMul {
                dst,
                a,
                b,
                rows,
                cols,
                bcast,
            },
            Bin::Div => Inst::VpuDiv {
                dst,
                a,
                b,
                rows,
                cols,
                bcast,
            },
            Bin::Max => Inst::VpuMax {
                dst,
                a,
                b,
                rows,
                cols,
                bcast,
            },
            Bin::Min => Inst::VpuMin {
                dst,
                a,
                b,
                rows,
                cols,
                bcast,
            },
            Bin::Eq => Inst::VpuEq {
                dst,
                a,
                b,
                rows,
                cols,
                bcast,
            },
            Bin::Lt => Inst::VpuLt {
                dst,
                a,
                b,
                rows,
                cols,
                bcast,
            },
            Bin::Le => Inst::VpuLe {
                dst,
                a,
                b,
                rows,
                cols,
                bcast,
            },
        };
        self.op(inst, touches);
    }

    pub fn vun(&mut self, k: Un, d: T, a: T, bc: Bcast, rows: u64, cols: u64) {
        let touches = vec![
            a.touch(rows, cols, bc, false),
            d.touch(rows, cols, Bcast::Full, true),
        ];
        let (dst, a) = (tref(self, d), tref(self, a));
        let (rows, cols, bcast) = (rows as u32, cols as u32, bc);
        let inst = match k {
            Un::Copy => Inst::VpuCopy {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Exp => Inst::VpuExp {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Log => Inst::VpuLog {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Sqrt => Inst::VpuSqrt {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Rsqrt => Inst::VpuRsqrt {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Recip => Inst::VpuRecip {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Tanh => Inst::VpuTanh {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Erf => Inst::VpuErf {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Sigmoid => Inst::VpuSigmoid {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Neg => Inst::VpuNeg {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Abs => Inst::VpuAbs {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Sin => Inst::VpuSin {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Cos => Inst::VpuCos {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Floor => Inst::VpuFloor {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Ceil => Inst::VpuCeil {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Trunc => Inst::VpuTrunc {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            Un::Round => Inst::VpuRound {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
        };
        self.op(inst, touches);
    }

    pub fn vimm(&mut self, k: Imm, d: T, a: T, imm: f32, rows: u64, cols: u64) {
        let touches = vec![
            a.touch(rows, cols, Bcast::Full, false),
            d.touch(rows, cols, Bcast::Full, true),
        ];
        let (dst, a) = (tref(self, d), tref(self, a));
        let (rows, cols) = (rows as u32, cols as u32);
        let inst = match k {
            Imm::Add => Inst::VpuAdds {
                dst,
                a,
                imm,
                rows,
                cols,
            },
            Imm::Sub => Inst::VpuSubs {
                dst,
                a,
                imm,
                rows,
                cols,
            },
            Imm::Rsub => Inst::VpuRsubs {
                dst,
                a,
                imm,
                rows,
                cols,
            },
            Imm::Mul => Inst::VpuMuls {
                dst,
                a,
                imm,
                rows,
                cols,
            },
            Imm::Div => Inst::VpuDivs {
                dst,
                a,
                imm,
                rows,
                cols,
            },
            Imm::Max => Inst::VpuMaxs {
                dst,
                a,
                imm,
                rows,
                cols,
            },
            Imm::Min => Inst::VpuMins {
                dst,
                a,
                imm,
                rows,
                cols,
            },
            Imm::Pow => Inst::VpuPows {
                dst,
                a,
                imm,
                rows,
                cols,
            },
        };
        self.op(inst, touches);
    }

    pub fn vred(&mut self, k: Red, d: T, a: T, rows: u64, cols: u64) {
        let touches = vec![
            a.touch(rows, cols, Bcast::Full, false),
            d.touch(rows, 1, Bcast::Col, true),
        ];
        let (dst, a) = (tref(self, d), tref(self, a));
        let (rows, cols) = (rows as u32, cols as u32);
        let inst = match k {
            Red::Sum => Inst::VpuRsum { dst, a, rows, cols },
            Red::Max => Inst::VpuRmax { dst, a, rows, cols },
            Red::Min => Inst::VpuRmin { dst, a, rows, cols },
        };
        self.op(inst, touches);
    }

    pub fn vsel(&mut self, d: T, c: T, a: T, b: T, rows: u64, cols: u64) {
        let touches = vec![
            c.touch(rows, cols, Bcast::Full, false),
            a.touch(rows, cols, Bcast::Full, false),
            b.touch(rows, cols, Bcast::Full, false),
            d.touch(rows, cols, Bcast::Full, true),
        ];
        let (dst, c, a, b) = (tref(self, d), tref(self, c), tref(self, a), tref(self, b));
        let inst = Inst::VpuSel {
            dst,
            c,
            a,
            b,
            rows: rows as u32,
            cols: cols as u32,
        };
        self.op(inst, touches);
    }

    pub fn vfill(&mut self, d: T, imm: f32, rows: u64, cols: u64) {
        let touches = vec![d.touch(rows, cols, Bcast::Full, true)];
        let dst = tref(self, d);
        let inst = Inst::VpuFill {
            dst,
            imm,
            rows: rows as u32,
            cols: cols as u32,
        };
        self.op(inst, touches);
    }

    /// `d[i, j] = d[i, j] · s[i] + b[i, j]`.
    pub fn vsacc(&mut self, d: T, s: T, b: T, rows: u64, cols: u64) {
        let touches = vec![
            d.touch(rows, cols, Bcast::Full, false),
            s.touch(rows, cols, Bcast::Col, false),
            b.touch(rows, cols, Bcast::Full, false),
            d.touch(rows, cols, Bcast::Full, true),
        ];
        let (dst, s, b) = (tref(self, d), tref(self, s), tref(self, b));
        let inst = Inst::VpuSacc {
            dst,
            s,
            b,
            rows: rows as u32,
            cols: cols as u32,
        };
        self.op(inst, touches);
    }

    /// `d[i, j] = exp((a[i, j] - m[i]) · scale)` and `sum[i] = Σ_j d[i, j]` (in f32) in one
    /// special-function pass (`vpu.expsum`).
    #[allow(clippy::too_many_arguments)]
    pub fn vexpsum(&mut self, d: T, a: T, m: T, sum: T, scale: f32, rows: u64, cols: u64) {
        let touches = vec![
            a.touch(rows, cols, Bcast::Full, false),
            m.touch(rows, cols, Bcast::Col, false),
            d.touch(rows, cols, Bcast::Full, true),
            sum.touch(rows, cols, Bcast::Col, true),
        ];
        let (dst, a, m, sum) = (tref(self, d), tref(self, a), tref(self, m), tref(self, sum));
        let inst = Inst::VpuExpsum {
            dst,
            a,
            m,
            sum,
            imm: scale,
            rows: rows as u32,
            cols: cols as u32,
        };
        self.op(inst, touches);
    }

    /// Sets `d[i, j] = imm` where `koff + j > qoff + i`.
    pub fn vcausal(&mut self, d: T, qoff: i64, koff: i64, imm: f32, rows: u64, cols: u64) {
        let touches = vec![d.touch(rows, cols, Bcast::Full, true)];
        let dst = tref(self, d);
        let qoff = self.reg(qoff);
        let koff = self.reg(koff);
        let inst = Inst::VpuCausal {
            dst,
            qoff,
            koff,
            imm,
            rows: rows as u32,
            cols: cols as u32,
        };
        self.op(inst, touches);
    }

    /// `acc (=|+=) a[m×k] · b[k×n]` on the matrix engine.
    pub fn matmul(&mut self, acc: T, a: T, b: T, m: u64, k: u64, n: u64, accumulate: bool) {
        let touches = vec![
            a.touch(m, k, Bcast::Full, false),
            b.touch(k, n, Bcast::Full, false),
            acc.touch(m, n, Bcast::Full, true),
        ];
        let inst = Inst::MxuMatmul {
            acc: self.reg(acc.addr as i64),
            a: self.reg(a.addr as i64),
            b: self.reg(b.addr as i64),
            m: m as u32,
            k: k as u32,
            n: n as u32,
            lda: self.reg(a.ld as i64),
            ldb: self.reg(b.ld as i64),
            ldc: self.reg(acc.ld as i64),
            dt: a.dt,
            mode: if accumulate {
                AccMode::Acc
            } else {
                AccMode::Set
            },
        };
        self.op(inst, touches);
    }
}
