//! Timing tests: the machine-model rules of the crate documentation, observed through reports and
//! traces.

mod common;
use common::*;
use llmpu_isa::cost::cost;
use llmpu_isa::{Bcast, DType, DebugLoc, Inst, Layout, Program, Reg, Unit};
use llmpu_runtime::{RunOptions, run};

fn load(s: u8, h: u8, n0: u32, n1: u32, ld: u8) -> Inst {
    Inst::DmaLoad {
        sram: Reg(s),
        hbm: Reg(h),
        n0,
        n1,
        n2: 1,
        hs1: Reg(ld),
        hs2: Reg(0),
        ss1: Reg(ld),
        ss2: Reg(0),
        dt: DType::F32,
        layout: Layout::Rows,
    }
}

#[test]
fn a_single_dma_takes_dispatch_setup_transfer_and_latency() {
    let t = target("edge");
    let mut p = Program::new(t.clone(), 1);
    let dl = load(1, 2, 1024, 1, 0);
    p.cores[0] = vec![
        Inst::Li {
            rd: Reg(1),
            imm: 64,
        },
        Inst::Li {
            rd: Reg(2),
            imm: 4096,
        },
        dl,
        Inst::Halt {},
    ];
    let r = run(&p, &[], &RunOptions::default()).unwrap().report;
    let c = cost(&dl, &t);
    assert_eq!(c.occupancy, t.latency.dma_setup + c.transfer);
    assert_eq!(
        r.cycles,
        2 * t.latency.scalar + t.latency.scalar + c.occupancy + c.latency
    );
    assert_eq!(r.cores[0].units[Unit::Dma.index()].busy_cycles, c.occupancy);
    assert_eq!(r.hbm_read_bytes, 4096);
    assert_eq!(r.cores[0].sram_high_water, 64 + 4096);
    assert_eq!(r.instructions, [3, 1, 0, 0]);
}

fn contention(cores: usize) -> u64 {
    let t = target("datacenter");
    let mut p = Program::new(t, cores);
    for c in 0..cores {
        let mut s = li(2, (c as i64) << 30);
        s.extend(li(3, 16384));
        for i in 0..4 {
            s.extend(li(1, i << 23));
            s.push(load(1, 2, 16384, 128, 3));
        }
        s.push(Inst::Halt {});
        p.cores[c] = s;
    }
    let opts = RunOptions {
        timing_only: true,
        ..Default::default()
    };
    run(&p, &[], &opts).unwrap().report.cycles
}

#[test]
fn two_cores_contending_for_hbm_take_about_twice_as_long() {
    let one = contention(1);
    let two = contention(2);
    let ratio = two as f64 / one as f64;
    assert!(
        (1.85..=2.05).contains(&ratio),
        "one {one}, two {two}, ratio {ratio}"
    );
}

/// Eight 64×64 f32 tiles: load each, scale it on the VPU into its own output tile.
fn pipeline(double_buffer: bool) -> Program {
    let t = target("edge");
    let mut p = Program::new(t, 1);
    let mut s = li(3, 64);
    s.extend(li(4, 1 << 20));
    for i in 0..8i64 {
        let buf = if double_buffer { (i % 2) * 16384 } else { 0 };
        if i > 0 && !double_buffer {
            s.push(Inst::DmaWait {
                sem: sem(1),
                count: 1,
            });
        }
        if i >= 2 && double_buffer {
            s.push(Inst::DmaWait {
                sem: sem(1),
                count: 1,
            });
        }
        s.extend(li(1, buf));
        s.extend(li(2, i * 16384));
        s.push(load(1, 2, 64, 64, 3));
        s.push(Inst::DmaSignal { sem: sem(0) });
        s.extend(li(5, (1 << 16) + i * 16384));
        s.push(Inst::VpuWait {
            sem: sem(0),
            count: 1,
        });
        s.push(Inst::VpuMuls {
            dst: sram(DType::F32, 5, 3),
            a: sram(DType::F32, 1, 3),
            imm: 2.0,
            rows: 64,
            cols: 64,
        });
        s.push(Inst::VpuSignal { sem: sem(1) });
    }
    s.push(Inst::Halt {});
    p.cores[0] = s;
    p.debug = vec![DebugLoc {
        core: 0,
        pc: 0,
        loc: "tiles".into(),
    }];
    p
}

#[test]
fn overlapping_dma_and_compute_beats_serializing_them() {
    let serial = run(&pipeline(false), &[], &RunOptions::default())
        .unwrap()
        .report;
    let overlap = run(&pipeline(true), &[], &RunOptions::default())
        .unwrap()
        .report;
    assert!(
        (overlap.cycles as f64) < 0.8 * serial.cycles as f64,
        "overlap {} serial {}",
        overlap.cycles,
        serial.cycles
    );
    assert!(overlap.busy_fraction(0, Unit::Dma) > serial.busy_fraction(0, Unit::Dma));
    assert_eq!(overlap.locations.len(), 1);
    assert_eq!(overlap.locations[0].loc, "tiles");
}

#[test]
fn timing_only_gives_the_same_cycles_as_functional() {
    for db in [false, true] {
        let p = pipeline(db);
        let f = run(&p, &[], &RunOptions::default()).unwrap();
        let t = run(
            &p,
            &[],
            &RunOptions {
                timing_only: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(f.report.cycles, t.report.cycles);
        assert_eq!(f.report.cores, t.report.cores);
        assert!(t.report.timing_only && t.outputs.is_empty());
    }
}

#[test]
fn a_full_queue_stalls_dispatch_until_an_entry_starts() {
    let t = target("edge");
    assert_eq!(t.latency.queue_depth, 16);
    let mut p = Program::new(t.clone(), 1);
    // Dispatch the fills back to back (registers set first) so the queue fills up.
    let mut fast = Vec::new();
    for i in 0..20u8 {
        fast.extend(li(i + 3, i as i64 * 4096));
    }
    fast.extend(li(2, 32));
    for i in 0..20u8 {
        fast.push(Inst::VpuFill {
            dst: sram(DType::F32, i + 3, 2),
            imm: 1.0,
            rows: 32,
            cols: 32,
        });
    }
    fast.push(Inst::Halt {});
    p.cores[0] = fast;
    let opts = RunOptions {
        trace: true,
        ..Default::default()
    };
    let r = run(&p, &[], &opts).unwrap();
    let tr = r.trace.unwrap();
    let vpu: Vec<_> = tr.events.iter().filter(|e| e.unit == Unit::Vpu).collect();
    let halt = tr.events.iter().find(|e| e.mnemonic == "halt").unwrap();
    assert_eq!(vpu.len(), 20);
    let occ = vpu[1].start - vpu[0].start;
    assert_eq!(occ, 32);
    assert_eq!(
        halt.start,
        vpu[3].start + t.latency.scalar,
        "halt waits for the 4th fill to start"
    );
}

#[test]
fn report_json_render_and_chrome_trace() {
    let p = pipeline(true);
    let r = run(
        &p,
        &[],
        &RunOptions {
            trace: true,
            ..Default::default()
        },
    )
    .unwrap();
    let text = r.report.render();
    for key in [
        "cycles",
        "HBM traffic",
        "energy",
        "vpu",
        "tiles",
        "SRAM high-water",
    ] {
        assert!(text.contains(key), "{key} missing in\n{text}");
    }
    let j = r.report.to_json();
    assert_eq!(j["cycles"], r.report.cycles);
    assert_eq!(j["instructions"]["dma"], 8 + 8 + 6);
    assert!(
        j["energy_pj"]["total"].as_f64().unwrap() > j["energy_pj"]["dynamic"].as_f64().unwrap()
    );
    assert!(r.report.energy.hbm_pj > 0.0 && r.report.energy.vector_pj > 0.0);
    let trace: serde_json::Value =
        serde_json::from_str(&r.trace.unwrap().to_chrome_json()).unwrap();
    let ev = trace["traceEvents"].as_array().unwrap();
    let x: Vec<_> = ev.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(x.len() as u64, r.report.total_instructions());
    let muls = x.iter().find(|e| e["name"] == "vpu.muls").unwrap();
    assert_eq!(muls["tid"], Unit::Vpu.index());
    assert_eq!(muls["args"]["loc"], "tiles");
    assert!(muls["dur"].as_f64().unwrap() > 0.0);
}

#[test]
fn broadcast_copy_reads_one_row() {
    let h = Harness::new()
        .input("x", f32t(&[4], &[1.0, 2.0, 3.0, 4.0]), 0)
        .reg(1, 0)
        .reg(2, 4096)
        .reg(3, 4)
        .op(Inst::VpuCopy {
            dst: sram(DType::F32, 2, 3),
            a: sram(DType::F32, 1, 3),
            rows: 3,
            cols: 4,
            bcast: Bcast::Row,
        })
        .output("y", DType::F32, &[12], 4096);
    assert_eq!(h.out_f32("y"), [1.0, 2.0, 3.0, 4.0].repeat(3));
}

/// Three ops (`a`, a loop in `b`, `c` with a vector instruction): with `latency.op_launch = L`
/// the dispatcher pays `L` at each op's first instruction — once per op, not per loop iteration
/// — and the cycles, the scalar unit's busy cycles and each op's own busy cycles grow by it.
fn launched(op_launch: u64, fast_forward: bool) -> llmpu_runtime::Report {
    let mut t = target("edge");
    t.latency.op_launch = op_launch;
    let mut p = Program::new(t, 1);
    let mut s = li(1, 0); // pc 0: op a
    s.extend(li(2, 50));
    let b = s.len() as u32;
    s.extend(li(3, 0)); // op b: a 50-iteration loop
    s.push(Inst::Addi {
        rd: Reg(1),
        rs1: Reg(1),
        imm: 1,
    });
    s.push(Inst::Blt {
        rs1: Reg(1),
        rs2: Reg(2),
        target: llmpu_isa::BranchTarget(-1),
    });
    let c = s.len() as u32;
    s.push(Inst::VpuFill {
        dst: sram(DType::F32, 3, 0),
        imm: 1.0,
        rows: 1,
        cols: 32,
    }); // op c
    s.push(Inst::Halt {});
    p.cores[0] = s;
    p.debug = ["a", "b", "c"]
        .iter()
        .zip([0, b, c])
        .map(|(loc, pc)| DebugLoc {
            core: 0,
            pc,
            loc: loc.to_string(),
        })
        .collect();
    let opts = RunOptions {
        timing_only: true,
        fast_forward,
        ..Default::default()
    };
    run(&p, &[], &opts).unwrap().report
}

#[test]
fn op_launch_is_paid_once_at_the_start_of_every_located_op() {
    let base = launched(0, true);
    let with = launched(100, true);
    assert_eq!(with.cycles, base.cycles + 300);
    let scalar = |r: &llmpu_runtime::Report| r.cores[0].units[Unit::Scalar.index()].busy_cycles;
    assert_eq!(scalar(&with), scalar(&base) + 300);
    for name in ["a", "b", "c"] {
        let busy = |r: &llmpu_runtime::Report| {
            r.locations
                .iter()
                .find(|l| l.loc == name)
                .unwrap()
                .busy_cycles[0]
        };
        assert_eq!(busy(&with), busy(&base) + 100, "{name}");
    }
    let slow = launched(100, false);
    assert_eq!(slow.cycles, with.cycles);
    assert_eq!(scalar(&slow), scalar(&with));
}
