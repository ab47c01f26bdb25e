//! Hostile targets and programs: overflowing arithmetic, huge allocations and runaway work end in
//! clear errors, never a panic, a wrapped figure or a host abort.

mod common;
use common::*;
use llmpu_isa::{
    AccMode, BranchTarget, DType, Inst, IoDir, IoTensor, Layout, Program, Reg, Sem, Target,
};
use llmpu_runtime::{EmuError, RunOptions, TrapKind, run};
use proptest::prelude::*;

fn one_core(t: Target, s: Vec<Inst>) -> Program {
    let mut p = Program::new(t, 1);
    p.cores[0] = s;
    p
}

fn with(mut pre: Vec<Inst>, rest: &[Inst]) -> Vec<Inst> {
    pre.extend_from_slice(rest);
    pre
}

fn timing() -> RunOptions {
    RunOptions {
        timing_only: true,
        ..RunOptions::default()
    }
}

#[test]
fn gather_index_arithmetic_overflow_traps_bad_index() {
    // index 2^63 · stride 2^63 · 8 bytes overflows i128.
    let mut s = li(2, i64::MIN);
    s.push(Inst::St {
        rs: Reg(2),
        rs1: Reg(0),
        off: 0,
    });
    s.extend(li(3, i64::MIN));
    s.extend(li(4, 64));
    s.push(Inst::DmaGather {
        sram: Reg(4),
        hbm: Reg(0),
        idx: Reg(0),
        count: 1,
        rowlen: 1,
        hs: Reg(3),
        ss: Reg(0),
        dt: DType::I64,
        idt: DType::I64,
        limit: 0,
    });
    s.push(Inst::Halt {});
    for opts in [RunOptions::default(), timing()] {
        match run(&one_core(target("edge"), s.clone()), &[], &opts) {
            Err(EmuError::Trap {
                kind: TrapKind::BadIndex { position: 0, .. },
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn onchip_memory_beyond_the_emulator_total_is_unsupported_not_an_abort() {
    let mut t = target("edge");
    t.cores = 256;
    t.sram.size_bytes = 1 << 32;
    let mut p = Program::new(t, 256);
    for c in &mut p.cores {
        c.push(Inst::Halt {});
    }
    let e = run(&p, &[], &timing()).unwrap_err().to_string();
    assert!(e.contains("exceeds the emulator's total limit"), "{e}");
}

#[test]
fn outputs_above_the_limit_are_rejected_before_the_run() {
    let mut t = target("edge");
    t.hbm.size_bytes = 1 << 40;
    let mut p = one_core(t, vec![Inst::Halt {}]);
    p.io.push(IoTensor {
        name: "y".into(),
        dir: IoDir::Output,
        dtype: DType::F32,
        shape: vec![16, 1024, 1024, 1024],
        hbm_addr: 0,
    });
    let e = run(&p, &[], &RunOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--timing-only") && e.contains("68719476736"),
        "{e}"
    );
    run(&p, &[], &timing()).unwrap();
}

#[test]
fn the_work_budget_stops_a_stride_zero_hog_naming_core_and_pc() {
    // 65535 × 4096 exps over one element (stride 0).
    let s = vec![
        Inst::VpuExp {
            dst: sram(DType::F32, 0, 0),
            a: sram(DType::F32, 0, 0),
            rows: 65535,
            cols: 4096,
            bcast: llmpu_isa::Bcast::Full,
        },
        Inst::Halt {},
    ];
    let p = one_core(target("edge"), s);
    let opts = RunOptions {
        max_work: 1_000_000,
        ..RunOptions::default()
    };
    match run(&p, &[], &opts) {
        Err(e @ EmuError::WorkLimit { core: 0, pc: 0, .. }) => {
            assert!(e.to_string().contains("--max-work"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // Timing-only runs do no work and are not limited by it.
    run(
        &p,
        &[],
        &RunOptions {
            timing_only: true,
            ..opts
        },
    )
    .unwrap();
}

#[test]
fn matmul_staging_is_limited_by_what_sram_holds_in_both_modes() {
    // 8192 × 8192 bf16 operands with stride 0 do not fit a 2 MiB scratchpad.
    let s = vec![
        Inst::MxuMatmul {
            acc: Reg(0),
            a: Reg(0),
            b: Reg(0),
            m: 8192,
            k: 8192,
            n: 8192,
            lda: Reg(0),
            ldb: Reg(0),
            ldc: Reg(0),
            dt: DType::BF16,
            mode: AccMode::Set,
        },
        Inst::Halt {},
    ];
    for opts in [RunOptions::default(), timing()] {
        match run(&one_core(target("edge"), s.clone()), &[], &opts) {
            Err(EmuError::Trap {
                kind: TrapKind::TooLarge { .. },
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }
}

fn matmul_k0(mode: AccMode) -> Program {
    // C (2×3 at acc 0, ldc 3) preset to 7.0, then a k = 0 matmul, then C is stored to HBM.
    let mut s = li(1, 3);
    s.push(Inst::VpuFill {
        dst: acc(DType::F32, 0, 1),
        imm: 7.0,
        rows: 2,
        cols: 3,
    });
    s.push(Inst::VpuSignal { sem: Sem(0) });
    s.push(Inst::MxuWait {
        sem: Sem(0),
        count: 1,
    });
    s.push(Inst::MxuMatmul {
        acc: Reg(0),
        a: Reg(0),
        b: Reg(0),
        m: 2,
        k: 0,
        n: 3,
        lda: Reg(0),
        ldb: Reg(0),
        ldc: Reg(1),
        dt: DType::BF16,
        mode,
    });
    s.push(Inst::MxuSignal { sem: Sem(1) });
    s.push(Inst::VpuWait {
        sem: Sem(1),
        count: 1,
    });
    s.extend(li(2, 0x100));
    s.push(Inst::VpuCopy {
        dst: sram(DType::F32, 2, 1),
        a: acc(DType::F32, 0, 1),
        rows: 2,
        cols: 3,
        bcast: llmpu_isa::Bcast::Full,
    });
    s.push(Inst::VpuSignal { sem: Sem(2) });
    s.push(Inst::DmaWait {
        sem: Sem(2),
        count: 1,
    });
    s.extend(copy(false, 0x100, 0, 24));
    s.push(Inst::Halt {});
    let mut p = one_core(target("edge"), s);
    p.io.push(IoTensor {
        name: "c".into(),
        dir: IoDir::Output,
        dtype: DType::F32,
        shape: vec![2, 3],
        hbm_addr: 0,
    });
    p
}

#[test]
fn matmul_with_k_zero_sets_zero_or_keeps_c_and_both_modes_agree() {
    for (mode, want) in [(AccMode::Set, 0.0f32), (AccMode::Acc, 7.0)] {
        let p = matmul_k0(mode);
        let f = run(&p, &[], &RunOptions::default()).unwrap();
        assert_eq!(f.output("c").unwrap().to_f32(), vec![want; 6], "{mode:?}");
        let t = run(&p, &[], &timing()).unwrap();
        assert_eq!(f.report.cycles, t.report.cycles);
    }
    // A huge k = 0 matmul with ldc = 0 no longer needs the old special case.
    let s = vec![
        Inst::MxuMatmul {
            acc: Reg(0),
            a: Reg(0),
            b: Reg(0),
            m: 65535,
            k: 0,
            n: 4,
            lda: Reg(0),
            ldb: Reg(0),
            ldc: Reg(0),
            dt: DType::F32,
            mode: AccMode::Set,
        },
        Inst::Halt {},
    ];
    let p = one_core(target("edge"), s);
    let f = run(&p, &[], &RunOptions::default()).unwrap();
    let t = run(&p, &[], &timing()).unwrap();
    assert_eq!(f.report.cycles, t.report.cycles);
}

#[test]
fn time_overflow_is_a_cycle_limit_error_not_a_wrap() {
    // The slowest allowed channel (1e-6 bytes per cycle) and the largest DMA saturate the
    // transfer time.
    let mut t = target("edge");
    t.clock_ghz = 1e6;
    t.hbm.bandwidth_gb_s = 1.0;
    t.hbm.burst_bytes = 1 << 20;
    t.validate("t").unwrap();
    let s = with(
        li(1, 1),
        &[
            Inst::DmaLoad {
                sram: Reg(0),
                hbm: Reg(0),
                n0: 1,
                n1: 65535,
                n2: 65535,
                hs1: Reg(0),
                hs2: Reg(0),
                ss1: Reg(0),
                ss2: Reg(0),
                dt: DType::I8,
                layout: Layout::Rows,
            },
            Inst::Halt {},
        ],
    );
    for max_cycles in [1_000_000, u64::MAX] {
        let opts = RunOptions {
            max_cycles,
            ..timing()
        };
        match run(&one_core(t.clone(), s.clone()), &[], &opts) {
            Err(EmuError::CycleLimit { core: 0, pc, .. }) => assert_eq!(pc, 1),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_report_run_keeps_a_fixed_size_timeline_and_no_trace() {
    let mut s = li(1, 1000);
    s.push(Inst::Addi {
        rd: Reg(1),
        rs1: Reg(1),
        imm: -1,
    });
    s.push(Inst::VpuAdds {
        dst: sram(DType::F32, 0, 0),
        a: sram(DType::F32, 0, 0),
        imm: 1.0,
        rows: 1,
        cols: 64,
    });
    s.push(Inst::Bne {
        rs1: Reg(1),
        rs2: Reg(0),
        target: BranchTarget(-2),
    });
    s.push(Inst::Halt {});
    let p = one_core(target("edge"), s);
    let r = run(
        &p,
        &[],
        &RunOptions {
            timeline: true,
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert!(r.trace.is_none());
    let tl = r.timeline.unwrap();
    assert!(tl.bin_cycles * llmpu_runtime::timeline::BINS as u64 >= r.report.cycles);
    let vpu = tl.lanes[3].as_ref().unwrap();
    assert_eq!(vpu.len(), llmpu_runtime::timeline::BINS);
    let busy: u64 = vpu.iter().map(|b| b.busy).sum();
    assert_eq!(busy, r.report.cores[0].units[3].busy_cycles);
}

/// A small serial program touching every unit: DMA load, matmul, vector op, store, barrier.
fn small_program(t: Target) -> Program {
    let mut s = li(1, 64);
    s.extend(copy(true, 0, 0, 256));
    s.push(Inst::DmaSignal { sem: Sem(0) });
    s.push(Inst::MxuWait {
        sem: Sem(0),
        count: 1,
    });
    s.push(Inst::MxuMatmul {
        acc: Reg(0),
        a: Reg(0),
        b: Reg(0),
        m: 4,
        k: 4,
        n: 4,
        lda: Reg(1),
        ldb: Reg(1),
        ldc: Reg(1),
        dt: DType::F32,
        mode: AccMode::Set,
    });
    s.push(Inst::MxuSignal { sem: Sem(1) });
    s.push(Inst::VpuWait {
        sem: Sem(1),
        count: 1,
    });
    s.push(Inst::VpuRsum {
        dst: sram(DType::F32, 0, 1),
        a: acc(DType::F32, 0, 1),
        rows: 4,
        cols: 4,
    });
    s.push(Inst::VpuSignal { sem: Sem(2) });
    s.push(Inst::DmaWait {
        sem: Sem(2),
        count: 1,
    });
    s.extend(copy(false, 0, 4096, 64));
    s.push(Inst::Barrier {});
    s.push(Inst::Halt {});
    one_core(t, s)
}

fn arb_target() -> impl Strategy<Value = Target> {
    (
        (1u32..=65536, 1u32..=65536, 1u32..=1 << 20, 0u32..=20),
        (1u64..=1 << 32, 0u64..=1 << 32, 1u64..=1 << 16),
        (-6.0f64..9.0, 1u64..=1 << 32, 1u64..=1 << 32),
    )
        .prop_map(
            |((rows, cols, lanes, burst_log), (lat, hbm_lat, depth), (bw_log, simple, special))| {
                let mut t = Target::preset("edge").unwrap();
                t.matrix.rows = rows;
                t.matrix.cols = cols;
                t.vector.lanes = lanes;
                t.hbm.burst_bytes = 1 << burst_log;
                t.hbm.latency_cycles = hbm_lat;
                t.hbm.bandwidth_gb_s = 10f64.powf(bw_log) * t.clock_ghz;
                let l = &mut t.latency;
                l.scalar = lat;
                l.branch = lat;
                l.scalar_mem = lat;
                l.sync = lat;
                l.barrier = lat;
                l.dma_setup = lat;
                l.vpu_pipeline = lat;
                l.vpu_simple = simple;
                l.vpu_special = special;
                l.queue_depth = depth as u32;
                t
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any target within the validated bounds runs without panicking (a run may hit the cycle
    /// limit), and raising every latency never makes the program faster.
    #[test]
    fn random_targets_never_panic_and_cycles_are_monotone_in_latencies(
        t in arb_target(),
        bump in 1u64..1000,
    ) {
        prop_assume!(t.validate("t").is_ok());
        let opts = RunOptions { max_cycles: u64::MAX, ..timing() };
        let a = run(&small_program(t.clone()), &[], &opts);
        let mut slower = t.clone();
        let l = &mut slower.latency;
        for v in [&mut l.scalar, &mut l.branch, &mut l.scalar_mem, &mut l.sync, &mut l.barrier,
                  &mut l.dma_setup, &mut l.vpu_pipeline, &mut l.vpu_simple, &mut l.vpu_special] {
            *v = (*v + bump).min(1 << 32);
        }
        slower.hbm.latency_cycles = (slower.hbm.latency_cycles + bump).min(1 << 32);
        let b = run(&small_program(slower), &[], &opts);
        match (a, b) {
            (Ok(a), Ok(b)) => prop_assert!(b.report.cycles >= a.report.cycles,
                "{} < {}", b.report.cycles, a.report.cycles),
            (Ok(_), Err(EmuError::CycleLimit { .. })) => {}
            (Err(EmuError::CycleLimit { .. }), Err(EmuError::CycleLimit { .. })) => {}
            (a, b) => prop_assert!(false, "{:?} / {:?}", a.map(|r| r.report.cycles), b.map(|r| r.report.cycles)),
        }
    }
}
