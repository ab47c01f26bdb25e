//! `dma.mcast`: one HBM read fills several cores' scratchpads and signals each of them; writing a
//! core's scratchpad while that core still uses the bytes, or reading them before the semaphore
//! says they arrived, is a race; destinations outside the machine trap.

mod common;
use common::*;
use llmpu_isa::{DType, Inst, IoDir, IoTensor, Layout, Program, Reg};
use llmpu_runtime::{EmuError, RunOptions, Tensor, TrapKind, run};

const ROWS: u64 = 8;
const COLS: u32 = 64;
const ROW_BYTES: i64 = COLS as i64 * 4;
const OUT: i64 = 1 << 20;

fn mcast(core0: u32, ncores: u32) -> Inst {
    Inst::DmaMcast {
        sram: Reg(1),
        hbm: Reg(2),
        n0: COLS,
        n1: 1,
        n2: 1,
        hs1: Reg(0),
        hs2: Reg(0),
        ss1: Reg(0),
        ss2: Reg(0),
        dt: DType::F32,
        layout: Layout::Rows,
        core0,
        ncores,
        sem: sem(31),
    }
}

/// `cores` cores; core `c` multicasts row `c` of `x` (if `c < senders`) to cores
/// `dest0 .. dest0 + ndest`, every destination waits for `senders` arrivals and stores its
/// scratchpad rows to `y` row block `c`.
fn program(cores: usize, senders: usize, dest0: u32, ndest: u32) -> Program {
    let mut p = Program::new(target("datacenter"), cores);
    p.io.push(IoTensor {
        name: "x".into(),
        dir: IoDir::Input,
        dtype: DType::F32,
        shape: vec![ROWS, COLS as u64],
        hbm_addr: 0,
    });
    p.io.push(IoTensor {
        name: "y".into(),
        dir: IoDir::Output,
        dtype: DType::F32,
        shape: vec![cores as u64, ROWS, COLS as u64],
        hbm_addr: OUT as u64,
    });
    for c in 0..cores {
        let mut s = vec![];
        if c < senders {
            s.extend(li(1, c as i64 * ROW_BYTES));
            s.extend(li(2, c as i64 * ROW_BYTES));
            s.push(mcast(dest0, ndest));
        }
        if (dest0..dest0 + ndest).contains(&(c as u32)) {
            s.push(Inst::DmaWait {
                sem: sem(31),
                count: senders as u32,
            });
        }
        s.extend(copy(
            false,
            0,
            OUT + c as i64 * ROWS as i64 * ROW_BYTES,
            (ROWS as i64 * ROW_BYTES) as u32,
        ));
        s.push(Inst::Halt {});
        p.cores[c] = s;
    }
    p
}

/// `n` scalar instructions that only take time.
fn delay(n: usize) -> Vec<Inst> {
    (0..n)
        .map(|_| Inst::Addi {
            rd: Reg(6),
            rs1: Reg(6),
            imm: 1,
        })
        .collect()
}

fn x() -> (Vec<f32>, Tensor) {
    let v: Vec<f32> = (0..ROWS * COLS as u64)
        .map(|i| i as f32 * 0.5 - 3.0)
        .collect();
    let t = Tensor::from_f32(DType::F32, vec![ROWS, COLS as u64], &v).unwrap();
    (v, t)
}

#[test]
fn multicast_fills_every_destination_from_one_hbm_read() {
    let (v, t) = x();
    let r = run(
        &program(8, 8, 0, 8),
        &[("x".into(), t)],
        &RunOptions::default(),
    )
    .unwrap();
    let y = r.output("y").unwrap().to_f32();
    for c in 0..8 {
        let block = &y[c * v.len()..(c + 1) * v.len()];
        assert_eq!(block, &v[..], "core {c}'s scratchpad");
    }
    // x crosses HBM once, not once per core.
    assert_eq!(r.report.hbm_read_bytes, ROWS * COLS as u64 * 4);
}

#[test]
fn an_issuing_core_outside_the_destinations_keeps_its_scratchpad() {
    let (v, t) = x();
    // Cores 0..8 send their rows to cores 2..6 only.
    let r = run(
        &program(8, 8, 2, 4),
        &[("x".into(), t)],
        &RunOptions::default(),
    )
    .unwrap();
    let y = r.output("y").unwrap().to_f32();
    for c in 0..8 {
        let block = &y[c * v.len()..(c + 1) * v.len()];
        if (2..6).contains(&c) {
            assert_eq!(block, &v[..], "core {c}");
        } else {
            assert!(block.iter().all(|&e| e == 0.0), "core {c} was written");
        }
    }
}

#[test]
fn multicast_costs_one_transfer_on_the_shared_channel() {
    // Eight cores each loading all of x versus each multicasting its row: the channel carries
    // eight times the bytes in the first program.
    let (_, t) = x();
    let one = run(
        &program(8, 8, 0, 8),
        &[("x".into(), t.clone())],
        &RunOptions::default(),
    )
    .unwrap();
    let mut eight = Program::new(target("datacenter"), 8);
    eight.io = program(8, 8, 0, 8).io;
    for c in 0..8 {
        let mut s = copy(true, 0, 0, (ROWS as i64 * ROW_BYTES) as u32);
        s.push(Inst::DmaSignal { sem: sem(0) });
        s.push(Inst::DmaWait {
            sem: sem(0),
            count: 1,
        });
        s.extend(copy(
            false,
            0,
            OUT + c as i64 * ROWS as i64 * ROW_BYTES,
            (ROWS as i64 * ROW_BYTES) as u32,
        ));
        s.push(Inst::Halt {});
        eight.cores[c] = s;
    }
    let r8 = run(&eight, &[("x".into(), t)], &RunOptions::default()).unwrap();
    assert_eq!(one.outputs, r8.outputs);
    assert_eq!(r8.report.hbm_read_bytes, 8 * one.report.hbm_read_bytes);
}

/// Core 1 of `program(2, 1, 1, 1)` first reads `rows` rows of its scratchpad (from address 0) with
/// a vector op, after `wait` delay instructions; the run must stop with a race whose message
/// starts with `first` and names `second`.
fn race(mut p: Program, rows: u32, wait: usize, first: &str, second: &str) {
    let mut s = li(3, 0);
    s.extend(li(4, 4096));
    s.extend(li(5, COLS as i64));
    s.extend(delay(wait));
    s.push(Inst::VpuMuls {
        dst: sram(DType::F32, 4, 5),
        a: sram(DType::F32, 3, 5),
        imm: 2.0,
        rows,
        cols: COLS,
    });
    s.extend(p.cores[1].clone());
    p.cores[1] = s;
    let e = run(&p, &[("x".into(), x().1)], &RunOptions::default()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, EmuError::Race { .. }), "{msg}");
    assert!(
        msg.starts_with(&format!("data race: {first}"))
            && msg.contains(second)
            && msg.contains("dma.mcast"),
        "{msg}"
    );
}

#[test]
fn multicast_into_a_scratchpad_another_unit_is_reading_is_a_race() {
    // Core 1 reads its rows with a long vector op; core 0's multicast starts after it did.
    let mut p = program(2, 1, 1, 1);
    let mut d = delay(40);
    d.extend(p.cores[0].clone());
    p.cores[0] = d;
    race(p, 4096, 0, "core 0 dma", "core 1 vpu");
}

#[test]
fn reading_multicast_data_before_the_semaphore_is_a_race() {
    // Core 1 does not wait for the arrival before it reads.
    let mut p = program(2, 1, 1, 1);
    p.cores[1].retain(|i| !matches!(i, Inst::DmaWait { .. }));
    race(p, 1, 40, "core 1 vpu", "core 0 dma");
}

#[test]
fn multicast_to_cores_outside_the_machine_traps() {
    for (first, count) in [(6, 4), (0, 0), (8, 1)] {
        let p = program(8, 1, first, count);
        let e = run(&p, &[("x".into(), x().1)], &RunOptions::default()).unwrap_err();
        assert!(
            matches!(
                &e,
                EmuError::Trap {
                    core: 0,
                    kind: TrapKind::BadCores { cores: 8, .. },
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("dma.mcast"), "{e}");
    }
}

#[test]
fn a_target_without_the_multicast_dma_traps_on_it() {
    let mut p = program(8, 8, 0, 8);
    p.target.hbm.multicast = false;
    p.target.name = "no-mcast".into();
    let e = run(&p, &[("x".into(), x().1)], &RunOptions::default()).unwrap_err();
    assert!(
        matches!(
            &e,
            EmuError::Trap {
                kind: TrapKind::NoMulticast(_),
                ..
            }
        ),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("dma.mcast") && msg.contains("`no-mcast` has no multicast DMA"),
        "{msg}"
    );
}
