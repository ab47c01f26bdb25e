//! Program builders shared by the emulator's integration tests (the assembler is not used here).
#![allow(dead_code)]

use llmpu_isa::{
    BranchTarget, DType, DebugLoc, Inst, IoDir, IoTensor, Layout, Program, Reg, Sem, Space, Target,
    TileRef,
};
use llmpu_runtime::{RunOptions, RunResult, Tensor, run};

pub fn target(name: &str) -> Target {
    Target::preset(name).unwrap()
}

/// `li`/`lih` pair (or a single `li`) setting `rd` to `v`.
pub fn li(rd: u8, v: i64) -> Vec<Inst> {
    let mut out = vec![Inst::Li {
        rd: Reg(rd),
        imm: v as i32,
    }];
    if v != v as i32 as i64 {
        out.push(Inst::Lih {
            rd: Reg(rd),
            imm: (v >> 32) as u32,
        });
    }
    out
}

pub fn tile(space: Space, dtype: DType, addr: u8, ld: u8) -> TileRef {
    TileRef {
        space,
        dtype,
        addr: Reg(addr),
        ld: Reg(ld),
    }
}

pub fn sram(dtype: DType, addr: u8, ld: u8) -> TileRef {
    tile(Space::Sram, dtype, addr, ld)
}

pub fn acc(dtype: DType, addr: u8, ld: u8) -> TileRef {
    tile(Space::Acc, dtype, addr, ld)
}

/// A contiguous byte copy HBM→SRAM (`load`) or SRAM→HBM, using r30 (sram) and r31 (hbm).
pub fn copy(load: bool, sram_addr: i64, hbm_addr: i64, bytes: u32) -> Vec<Inst> {
    let mut v = li(30, sram_addr);
    v.extend(li(31, hbm_addr));
    let (n0, n1) = if bytes <= 32768 {
        (bytes, 1)
    } else {
        (32768, bytes / 32768)
    };
    assert!(n0 * n1 == bytes);
    v.extend(li(29, n0 as i64));
    let args = (
        Reg(30),
        Reg(31),
        n0,
        n1,
        1,
        Reg(29),
        Reg(0),
        Reg(29),
        Reg(0),
        DType::U8,
        Layout::Rows,
    );
    v.push(if load {
        Inst::DmaLoad {
            sram: args.0,
            hbm: args.1,
            n0: args.2,
            n1: args.3,
            n2: args.4,
            hs1: args.5,
            hs2: args.6,
            ss1: args.7,
            ss2: args.8,
            dt: args.9,
            layout: args.10,
        }
    } else {
        Inst::DmaStore {
            sram: args.0,
            hbm: args.1,
            n0: args.2,
            n1: args.3,
            n2: args.4,
            hs1: args.5,
            hs2: args.6,
            ss1: args.7,
            ss2: args.8,
            dt: args.9,
            layout: args.10,
        }
    });
    v
}

pub fn sem(s: u8) -> Sem {
    Sem(s)
}

pub fn jmp(off: i32) -> Inst {
    Inst::Jmp {
        target: BranchTarget(off),
    }
}

/// A one-core test program: each input is copied from HBM to its SRAM address, the dispatcher
/// waits for the copies, sets `regs`, runs `ops`, waits for the MXU and VPU to finish, then copies
/// each output from its SRAM address to HBM.
pub struct Harness {
    pub target: Target,
    pub inputs: Vec<(String, Tensor, i64)>,
    pub outputs: Vec<(String, DType, Vec<u64>, i64)>,
    pub regs: Vec<(u8, i64)>,
    pub ops: Vec<Inst>,
}

impl Harness {
    pub fn new() -> Harness {
        Harness {
            target: target("edge"),
            inputs: vec![],
            outputs: vec![],
            regs: vec![],
            ops: vec![],
        }
    }

    pub fn input(mut self, name: &str, t: Tensor, sram_addr: i64) -> Self {
        self.inputs.push((name.into(), t, sram_addr));
        self
    }

    pub fn output(mut self, name: &str, dt: DType, shape: &[u64], sram_addr: i64) -> Self {
        self.outputs
            .push((name.into(), dt, shape.to_vec(), sram_addr));
        self
    }

    pub fn reg(mut self, r: u8, v: i64) -> Self {
        self.regs.push((r, v));
        self
    }

    pub fn op(mut self, i: Inst) -> Self {
        self.ops.push(i);
        self
    }

    pub fn program(&self) -> Program {
        let mut p = Program::new(self.target.clone(), 1);
        let mut s = Vec::new();
        let mut hbm = 0u64;
        for (name, t, a) in &self.inputs {
            p.io.push(IoTensor {
                name: name.clone(),
                dir: IoDir::Input,
                dtype: t.dtype,
                shape: t.shape.clone(),
                hbm_addr: hbm,
            });
            s.extend(copy(true, *a, hbm as i64, t.data.len() as u32));
            hbm += (t.data.len() as u64).next_multiple_of(64);
        }
        s.push(Inst::DmaSignal { sem: sem(0) });
        s.push(Inst::Wait {
            sem: sem(0),
            count: 1,
        });
        for &(r, v) in &self.regs {
            s.extend(li(r, v));
        }
        s.extend(self.ops.iter().copied());
        s.push(Inst::MxuSignal { sem: sem(1) });
        s.push(Inst::VpuSignal { sem: sem(2) });
        s.push(Inst::DmaWait {
            sem: sem(1),
            count: 1,
        });
        s.push(Inst::DmaWait {
            sem: sem(2),
            count: 1,
        });
        for (name, dt, shape, a) in &self.outputs {
            let bytes = shape.iter().product::<u64>() * dt.size();
            p.io.push(IoTensor {
                name: name.clone(),
                dir: IoDir::Output,
                dtype: *dt,
                shape: shape.clone(),
                hbm_addr: hbm,
            });
            s.extend(copy(false, *a, hbm as i64, bytes as u32));
            hbm += bytes.next_multiple_of(64);
        }
        s.push(Inst::Halt {});
        p.cores[0] = s;
        p.debug.push(DebugLoc {
            core: 0,
            pc: 0,
            loc: "harness".into(),
        });
        p
    }

    pub fn run(&self) -> RunResult {
        let ins: Vec<(String, Tensor)> = self
            .inputs
            .iter()
            .map(|(n, t, _)| (n.clone(), t.clone()))
            .collect();
        match run(&self.program(), &ins, &RunOptions::default()) {
            Ok(r) => r,
            Err(e) => panic!("run failed: {e}"),
        }
    }

    pub fn out_f32(&self, name: &str) -> Vec<f32> {
        self.run().output(name).unwrap().to_f32()
    }
}

pub fn f32t(shape: &[u64], v: &[f32]) -> Tensor {
    Tensor::from_f32(DType::F32, shape.to_vec(), v).unwrap()
}

/// Deterministic pseudo-random values in [-2, 2).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

pub fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= tol * (1.0 + w.abs()) || (g.is_nan() && w.is_nan());
        assert!(ok, "element {i}: got {g}, want {w}");
    }
}

/// A xorshift64 generator for the random-program tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform-ish in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
