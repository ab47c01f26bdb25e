//! Emulator throughput check: a loop mixing scalar, DMA, MXU and VPU instructions, run in
//! timing-only mode. `cargo run --release -p llmpu-runtime --example speed [iterations]`.

use llmpu_isa::{AccMode, BranchTarget, DType, Inst, Layout, Program, Reg, Space, Target, TileRef};
use llmpu_runtime::{RunOptions, run};
use std::time::Instant;

fn main() {
    let iters: i32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let t = Target::preset("edge").expect("preset");
    let mut p = Program::new(t, 1);
    let tile = |addr: u8| TileRef {
        space: Space::Sram,
        dtype: DType::BF16,
        addr: Reg(addr),
        ld: Reg(4),
    };
    p.cores[0] = vec![
        Inst::Li { rd: Reg(1), imm: 0 },
        Inst::Li {
            rd: Reg(2),
            imm: iters,
        },
        Inst::Li {
            rd: Reg(3),
            imm: 65536,
        },
        Inst::Li {
            rd: Reg(4),
            imm: 32,
        },
        Inst::Li {
            rd: Reg(5),
            imm: 131072,
        },
        Inst::Li { rd: Reg(6), imm: 0 },
        Inst::DmaLoad {
            sram: Reg(6),
            hbm: Reg(6),
            n0: 32,
            n1: 32,
            n2: 1,
            hs1: Reg(4),
            hs2: Reg(0),
            ss1: Reg(4),
            ss2: Reg(0),
            dt: DType::BF16,
            layout: Layout::Rows,
        },
        Inst::MxuMatmul {
            acc: Reg(0),
            a: Reg(3),
            b: Reg(3),
            m: 32,
            k: 32,
            n: 32,
            lda: Reg(4),
            ldb: Reg(4),
            ldc: Reg(4),
            dt: DType::BF16,
            mode: AccMode::Acc,
        },
        Inst::VpuMuls {
            dst: tile(5),
            a: tile(5),
            imm: 0.5,
            rows: 32,
            cols: 32,
        },
        Inst::Addi {
            rd: Reg(1),
            rs1: Reg(1),
            imm: 1,
        },
        Inst::Blt {
            rs1: Reg(1),
            rs2: Reg(2),
            target: BranchTarget(-4),
        },
        Inst::Halt {},
    ];
    for (name, timing_only) in [("timing-only", true), ("functional", false)] {
        let opts = RunOptions {
            timing_only,
            ..Default::default()
        };
        let start = Instant::now();
        match run(&p, &[], &opts) {
            Ok(r) => {
                let secs = start.elapsed().as_secs_f64();
                let n = r.report.total_instructions();
                println!(
                    "{name}: {n} instructions, {} cycles in {secs:.3} s = {:.2} M instructions/s",
                    r.report.cycles,
                    n as f64 / secs / 1e6
                );
            }
            Err(e) => println!("{name}: error: {e}"),
        }
    }
}
