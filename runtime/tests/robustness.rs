//! Robustness: random instruction streams (random opcodes and fields, random register values)
//! must end in `Ok` or `Err`, never a panic.

mod common;
use common::*;
use llmpu_isa::{FieldKind, INSTRUCTIONS, Inst, Program};
use llmpu_runtime::{RunOptions, run};

fn reg_value(rng: &mut Rng, tame: bool) -> i64 {
    if tame {
        return match rng.below(3) {
            0 => rng.below(8) as i64,
            1 => rng.below(64) as i64,
            _ => rng.below(512) as i64 * 8,
        };
    }
    match rng.below(12) {
        0 | 1 => 0,
        2 | 3 => rng.below(16) as i64,
        4 | 5 => rng.below(4096) as i64 * 4,
        6 => rng.below(1 << 21) as i64,
        7 => -(rng.below(64) as i64),
        8 => rng.next() as i64,
        9 => 1 << rng.below(40),
        _ => rng.below(256) as i64,
    }
}

fn random_inst(rng: &mut Rng, pc: usize, len: usize) -> Inst {
    loop {
        let d = INSTRUCTIONS[rng.below(INSTRUCTIONS.len() as u64) as usize];
        let raw: Vec<u64> = d
            .fields
            .iter()
            .map(|f| match f.kind {
                FieldKind::Target => {
                    let dest = rng.below(len as u64) as i64;
                    ((dest - pc as i64) as u64) & ((1u64 << f.width) - 1)
                }
                FieldKind::Uimm if f.width >= 16 => match rng.below(4) {
                    0 => rng.below(1 << f.width.min(16)),
                    _ => rng.below(40),
                },
                FieldKind::Sem => rng.below(4),
                _ => rng.next() & ((1u64 << f.width.min(63)) - 1),
            })
            .collect();
        if let Ok(i) = Inst::from_raw(d.opcode, &raw) {
            return i;
        }
    }
}

fn random_program(rng: &mut Rng) -> Program {
    let cores = if rng.below(4) == 0 { 2 } else { 1 };
    let t = target(if cores == 2 { "datacenter" } else { "edge" });
    let mut p = Program::new(t, cores);
    for c in 0..cores {
        let mut s = Vec::new();
        let tame = rng.below(2) == 0;
        for r in 1..32u8 {
            s.extend(li(r, reg_value(rng, tame)));
        }
        let body = 1 + rng.below(40) as usize;
        let len = s.len() + body + 1;
        for _ in 0..body {
            let pc = s.len();
            s.push(random_inst(rng, pc, len));
        }
        if rng.below(8) != 0 {
            s.push(Inst::Halt {});
        } else {
            s.push(Inst::Nop {});
        }
        p.cores[c] = s;
    }
    p
}

#[test]
fn random_programs_never_panic() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut ok, mut err) = (0, 0);
    for i in 0..500 {
        let p = random_program(&mut rng);
        p.validate().unwrap();
        let opts = RunOptions {
            timing_only: i % 3 == 0,
            max_instructions: 3000,
            max_cycles: 100_000,
            trace: i % 5 == 0,
            trace_ops: i % 10 == 5,
            timeline: i % 4 == 0,
            race_check: i % 7 != 0,
            max_work: 1_000_000_000,
            max_output_bytes: 1 << 20,
            progress: None,
            check_uninit: i % 2 == 0,
            fast_forward: true,
        };
        let r = std::panic::catch_unwind(|| run(&p, &[], &opts).map(|r| r.report.render()));
        match r {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) => {
                assert!(!e.to_string().is_empty());
                err += 1
            }
            Err(_) => panic!("program {i} panicked:\n{:#?}", p.cores),
        }
    }
    assert!(ok > 0 && err > 0, "ok {ok} err {err}");
}
