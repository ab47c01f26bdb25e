//! Trap tests: every way a run stops early names what went wrong, and nothing panics.

mod common;
use common::*;
use llmpu_isa::{BranchTarget, DType, Inst, IoDir, IoTensor, Layout, Program, Reg};
use llmpu_runtime::{EmuError, MemSpace, RunOptions, Tensor, TrapKind, run};

fn one_core(s: Vec<Inst>) -> Program {
    let mut p = Program::new(target("edge"), 1);
    p.cores[0] = s;
    p
}

fn err(p: &Program) -> EmuError {
    match run(p, &[], &RunOptions::default()) {
        Ok(_) => panic!("run succeeded"),
        Err(e) => e,
    }
}

fn with(mut pre: Vec<Inst>, rest: &[Inst]) -> Vec<Inst> {
    pre.extend_from_slice(rest);
    pre
}

#[test]
fn out_of_bounds_sram_names_core_pc_space_and_range() {
    let size = target("edge").sram.size_bytes as i64;
    let p = one_core(with(
        li(1, size - 4),
        &[
            Inst::VpuFill {
                dst: sram(DType::F32, 1, 0),
                imm: 1.0,
                rows: 1,
                cols: 2,
            },
            Inst::Halt {},
        ],
    ));
    let e = err(&p);
    assert!(
        matches!(
            &e,
            EmuError::Trap {
                core: 0,
                pc: 1,
                kind: TrapKind::OutOfBounds {
                    space: MemSpace::Sram,
                    ..
                },
                ..
            }
        ),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("core 0 pc 1") && msg.contains("vpu.fill") && msg.contains("0x1ffffc"),
        "{msg}"
    );
}

#[test]
fn out_of_bounds_hbm_and_negative_addresses() {
    let p = one_core(with(
        li(2, (4i64 << 30) - 8),
        &[
            Inst::DmaLoad {
                sram: Reg(0),
                hbm: Reg(2),
                n0: 16,
                n1: 1,
                n2: 1,
                hs1: Reg(0),
                hs2: Reg(0),
                ss1: Reg(0),
                ss2: Reg(0),
                dt: DType::F32,
                layout: Layout::Rows,
            },
            Inst::Halt {},
        ],
    ));
    assert!(matches!(
        err(&p),
        EmuError::Trap {
            kind: TrapKind::OutOfBounds {
                space: MemSpace::Hbm,
                ..
            },
            ..
        }
    ));
    let p = one_core(with(
        li(1, -16),
        &[
            Inst::Ld {
                rd: Reg(2),
                rs1: Reg(1),
                off: 0,
            },
            Inst::Halt {},
        ],
    ));
    let e = err(&p);
    assert!(e.to_string().contains("-0x10"), "{e}");
}

#[test]
fn misaligned_scalar_load_traps() {
    let p = one_core(vec![
        Inst::Ld32 {
            rd: Reg(2),
            rs1: Reg(0),
            off: 6,
        },
        Inst::Halt {},
    ]);
    assert!(matches!(
        err(&p),
        EmuError::Trap {
            kind: TrapKind::Misaligned { align: 4, .. },
            ..
        }
    ));
}

#[test]
fn division_by_zero_traps() {
    let p = one_core(with(
        li(1, 5),
        &[
            Inst::Rem {
                rd: Reg(2),
                rs1: Reg(1),
                rs2: Reg(0),
            },
            Inst::Halt {},
        ],
    ));
    let e = err(&p);
    assert!(
        matches!(
            e,
            EmuError::Trap {
                pc: 1,
                kind: TrapKind::DivByZero,
                ..
            }
        ),
        "{e}"
    );
}

/// Stores index `value` at SRAM byte `at`, then gathers `count` rows of 4 f32 with row stride
/// `hs` from index vector 0 into SRAM 4096, checking the indices against `limit`.
fn gather_after_storing(value: i64, at: i32, hs: i64, count: u32, limit: u32) -> Vec<Inst> {
    let mut s = li(1, 0);
    s.extend(li(2, value));
    s.push(Inst::St {
        rs: Reg(2),
        rs1: Reg(0),
        off: at,
    });
    s.push(Inst::Signal { sem: sem(0) });
    s.push(Inst::Wait {
        sem: sem(0),
        count: 1,
    });
    s.extend(li(3, 4096));
    s.extend(li(4, hs));
    s.push(Inst::DmaGather {
        sram: Reg(3),
        hbm: Reg(0),
        idx: Reg(0),
        count,
        rowlen: 4,
        hs: Reg(4),
        ss: Reg(4),
        dt: DType::F32,
        idt: DType::I64,
        limit,
    });
    s.push(Inst::Halt {});
    s
}

#[test]
fn a_bad_gather_index_is_named() {
    let s = gather_after_storing(1 << 30, 24, 1024, 4, 0);
    let e = err(&one_core(s));
    assert!(
        matches!(
            e,
            EmuError::Trap {
                kind: TrapKind::BadIndex {
                    position: 3,
                    value: 1073741824,
                    ..
                },
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn runaway_programs_hit_the_instruction_and_cycle_limits() {
    let p = one_core(vec![
        Inst::Nop {},
        Inst::Jmp {
            target: BranchTarget(-1),
        },
    ]);
    let opts = RunOptions {
        max_instructions: 1000,
        ..Default::default()
    };
    let e = run(&p, &[], &opts).unwrap_err();
    assert!(
        matches!(
            e,
            EmuError::InstructionLimit {
                limit: 1000,
                core: 0,
                ..
            }
        ),
        "{e}"
    );
    let opts = RunOptions {
        max_cycles: 500,
        ..Default::default()
    };
    let e = run(&p, &[], &opts).unwrap_err();
    assert!(
        matches!(
            e,
            EmuError::CycleLimit {
                limit: 500,
                core: 0,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn a_deadlock_is_reported_at_the_cycle_its_last_wait_was_due() {
    // Two loads into the same bytes keep the DMA queue busy until cycle 266 (on `edge`: the first
    // starts at 2 and completes at 2 + 16 setup + 41 transfer + 150 latency = 209; the second
    // waits for it, then is free at 209 + 16 + 41); the wait behind them is due then, after
    // everything else has stopped (the emulator of `07bc853` reports the same cycle).
    let load = Inst::DmaLoad {
        sram: Reg(0),
        hbm: Reg(0),
        n0: 64,
        n1: 64,
        n2: 1,
        hs1: Reg(3),
        hs2: Reg(0),
        ss1: Reg(3),
        ss2: Reg(0),
        dt: DType::U8,
        layout: Layout::Rows,
    };
    let p = one_core(with(
        li(3, 64),
        &[
            load,
            load,
            Inst::DmaWait {
                sem: sem(5),
                count: 1,
            },
            Inst::Halt {},
        ],
    ));
    let e = err(&p);
    assert!(matches!(e, EmuError::Deadlock { cycle: 266, .. }), "{e}");
}

#[test]
fn waits_that_can_never_be_satisfied_deadlock() {
    let p = one_core(vec![
        Inst::DmaWait {
            sem: sem(3),
            count: 1,
        },
        Inst::Halt {},
    ]);
    let e = err(&p);
    let msg = e.to_string();
    assert!(matches!(e, EmuError::Deadlock { .. }), "{msg}");
    assert!(
        msg.contains("core 0 dma pc 0") && msg.contains("s3 >= 1"),
        "{msg}"
    );

    let mut p = Program::new(target("datacenter"), 2);
    p.cores[0] = vec![Inst::Barrier {}, Inst::Halt {}];
    p.cores[1] = vec![Inst::Halt {}];
    let msg = err(&p).to_string();
    assert!(
        msg.contains("barrier") && msg.contains("1 (halted)"),
        "{msg}"
    );
}

#[test]
fn barriers_release_all_cores_together() {
    let t = target("datacenter");
    let mut p = Program::new(t.clone(), 2);
    p.cores[0] = vec![Inst::Barrier {}, Inst::Halt {}];
    p.cores[1] = with(vec![Inst::Nop {}; 100], &[Inst::Barrier {}, Inst::Halt {}]);
    let r = run(&p, &[], &RunOptions::default()).unwrap().report;
    assert_eq!(r.cores[0].end_cycle, r.cores[1].end_cycle);
    assert_eq!(
        r.cycles,
        100 * t.latency.scalar + t.latency.barrier + t.latency.sync
    );
}

#[test]
fn running_off_the_end_without_halt_is_an_error() {
    let e = err(&one_core(vec![Inst::Nop {}]));
    assert!(matches!(e, EmuError::MissingHalt { core: 0, len: 1 }));
    assert!(e.to_string().contains("without `halt`"));
}

fn race_program(with_semaphore: bool) -> Program {
    let mut s = li(1, 0);
    s.extend(li(2, 0));
    s.extend(li(3, 4096));
    s.extend(li(4, 64));
    s.push(Inst::DmaLoad {
        sram: Reg(1),
        hbm: Reg(2),
        n0: 64,
        n1: 1,
        n2: 1,
        hs1: Reg(0),
        hs2: Reg(0),
        ss1: Reg(0),
        ss2: Reg(0),
        dt: DType::F32,
        layout: Layout::Rows,
    });
    if with_semaphore {
        s.push(Inst::DmaSignal { sem: sem(0) });
        s.push(Inst::VpuWait {
            sem: sem(0),
            count: 1,
        });
    }
    s.push(Inst::VpuMuls {
        dst: sram(DType::F32, 3, 4),
        a: sram(DType::F32, 1, 4),
        imm: 2.0,
        rows: 1,
        cols: 64,
    });
    s.push(Inst::Halt {});
    one_core(s)
}

#[test]
fn a_missing_semaphore_is_reported_as_a_race() {
    let e = err(&race_program(false));
    let msg = e.to_string();
    assert!(matches!(e, EmuError::Race { .. }), "{msg}");
    assert!(
        msg.starts_with("data race: core 0 vpu pc 5 (vpu.muls")
            && msg.contains("reads SRAM [0x0, 0x100)")
            && msg.contains("core 0 dma pc 4 (dma.load")
            && msg.contains("add a semaphore"),
        "{msg}"
    );
    run(&race_program(true), &[], &RunOptions::default()).unwrap();
    let off = RunOptions {
        race_check: false,
        ..Default::default()
    };
    run(&race_program(false), &[], &off).unwrap();
}

#[test]
fn inputs_are_checked_against_the_descriptors() {
    let mut p = one_core(vec![Inst::Halt {}]);
    p.io.push(IoTensor {
        name: "x".into(),
        dir: IoDir::Input,
        dtype: DType::F32,
        shape: vec![2, 2],
        hbm_addr: 0,
    });
    let x = Tensor::zeros(DType::F32, vec![2, 2]);
    run(&p, &[("x".into(), x.clone())], &RunOptions::default()).unwrap();
    let e = run(&p, &[], &RunOptions::default()).unwrap_err();
    assert!(
        matches!(e, EmuError::MissingInput(ref n) if n == "x"),
        "{e}"
    );
    let e = run(&p, &[("y".into(), x.clone())], &RunOptions::default()).unwrap_err();
    assert!(e.to_string().contains("`y`"), "{e}");
    let bad = Tensor::zeros(DType::BF16, vec![2, 2]);
    let e = run(&p, &[("x".into(), bad)], &RunOptions::default()).unwrap_err();
    assert!(
        e.to_string().contains("expected f32[2, 2], got bf16[2, 2]"),
        "{e}"
    );
    let bad = Tensor::zeros(DType::F32, vec![4]);
    assert!(run(&p, &[("x".into(), bad)], &RunOptions::default()).is_err());
    let timing = RunOptions {
        timing_only: true,
        ..Default::default()
    };
    run(&p, &[], &timing).unwrap();
}

#[test]
fn progress_hook_is_called_every_progress_every_instructions() {
    use std::sync::{Arc, Mutex};
    let p = one_core(vec![
        Inst::Nop {},
        Inst::Jmp {
            target: BranchTarget(-1),
        },
    ]);
    let seen = Arc::new(Mutex::new(vec![]));
    let s = Arc::clone(&seen);
    let limit = 3 * llmpu_runtime::PROGRESS_EVERY + 5;
    let opts = RunOptions {
        max_instructions: limit,
        progress: Some(llmpu_runtime::ProgressHook(Arc::new(move |n, cycle| {
            s.lock().unwrap().push((n, cycle))
        }))),
        ..Default::default()
    };
    assert!(
        run(&p, &[], &opts).is_err(),
        "the loop is stopped by the limit"
    );
    let seen = seen.lock().unwrap();
    let counts: Vec<u64> = seen.iter().map(|x| x.0).collect();
    let e = llmpu_runtime::PROGRESS_EVERY;
    assert_eq!(counts, [e, 2 * e, 3 * e]);
    assert!(
        seen.windows(2).all(|w| w[0].1 < w[1].1),
        "cycles advance: {seen:?}"
    );
}

/// Two cores each store a 16-row column tile of one row-major `16 × 128` f32 matrix in HBM at
/// the same time: core 0 columns `0..32`, core 1 columns `first..first + 32`.
fn column_tiles(first: i64) -> Program {
    let mut p = Program::new(target("datacenter"), 2);
    for (c, col) in [(0usize, 0i64), (1, first)] {
        let mut s = li(1, 0);
        s.extend(li(2, col * 4));
        s.extend(li(3, 128));
        s.extend(li(4, 32));
        s.push(Inst::DmaStore {
            sram: Reg(1),
            hbm: Reg(2),
            n0: 32,
            n1: 16,
            n2: 1,
            hs1: Reg(3),
            hs2: Reg(0),
            ss1: Reg(4),
            ss2: Reg(0),
            dt: DType::F32,
            layout: Layout::Rows,
        });
        s.push(Inst::Halt {});
        p.cores[c] = s;
    }
    p
}

#[test]
fn strided_stores_of_interleaved_rows_are_not_a_race_but_shared_bytes_are() {
    // Disjoint columns: the two stores' bounding ranges overlap, their bytes do not.
    run(&column_tiles(32), &[], &RunOptions::default()).unwrap();
    run(&column_tiles(96), &[], &RunOptions::default()).unwrap();
    // Columns 16..32 of every row are written by both cores.
    let e = err(&column_tiles(16));
    let msg = e.to_string();
    assert!(matches!(e, EmuError::Race { .. }), "{msg}");
    assert!(msg.contains("HBM"), "{msg}");
    // Runs that overlap the other core's by one element in every row.
    let e = err(&column_tiles(31));
    assert!(matches!(e, EmuError::Race { .. }), "{e}");
}

#[test]
fn a_gather_index_past_the_table_traps_even_inside_hbm() {
    // Index 5 of a 4-row table: row 5 is still inside HBM, so only `limit` catches it.
    let s = gather_after_storing(5, 8, 4, 2, 4);
    let e = err(&one_core(s));
    assert!(
        matches!(
            e,
            EmuError::Trap {
                kind: TrapKind::IndexPastTable {
                    position: 1,
                    value: 5,
                    limit: 4
                },
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("index 5 at position 1 is outside the table's rows 0..4"),
        "{e}"
    );
}
