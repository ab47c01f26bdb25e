//! Fast-forwarding of periodic loops (`RunOptions::fast_forward`, timing-only runs) is exact:
//! random loop programs — one core or eight sharing HBM, with affine and non-affine address
//! arithmetic, data-dependent branches inside the loop, scalar loads and stores, semaphores,
//! multicasts, barriers, addresses that run out of memory, races, and instruction and cycle
//! limits reached inside a loop — give the same result with and without it: the same report
//! (cycles, per-unit busy cycles and instructions, bytes, MACs, energy, per-location rows,
//! high-water marks), the same trace and timeline, or the same error. And fast-forwarding does
//! skip work in most of them (the test is not vacuous).

use llmpu_isa::Program;
use llmpu_runtime::{RunOptions, run};
use std::fmt::Write;
use std::path::Path;

mod common;
use common::Rng;

impl Rng {
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
    fn chance(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

const UNITS: [&str; 3] = ["dma", "mxu", "vpu"];

/// One loop body of `n` random instructions (assembly lines). In a `clean` body each unit works
/// on its own scratchpad and accumulator regions (races only when moving regions meet); otherwise
/// units share buffers without synchronization and multicasts write every core's scratchpad.
fn body(rng: &mut Rng, n: usize, clean: bool, multicast: bool, noise: bool) -> Vec<String> {
    let (mxu_a, mxu_b, vpu_dst, vpu_src, copy_src, ld) = if clean {
        ("r17", "r18", "r19", "r17", "r23", "r7")
    } else {
        ("r1", "r4", "r4", "r1", "r5", "r1")
    };
    let mut out = Vec::new();
    let mut sem = 4;
    for _ in 0..n {
        let line = match rng.below(if noise { 17 } else { 10 }) {
            0 | 1 => {
                let r = rng.pick(&["r1", "r4", "r5", "r2", "r6", "r17", "r19"]);
                let d = if r == "r2" || r == "r6" {
                    rng.pick(&["0", "4096", "64", "-4096", "65536", "1048576"])
                } else {
                    rng.pick(&["0", "64", "128", "-64", "256", "4096", "8192", "-8192"])
                };
                format!("addi {r}, {r}, {d}")
            }
            2 => format!(
                "dma.load {}, {}, {}, {}, 1, r3, r0, r3, r0, u8, rows",
                rng.pick(&["r1", "r4"]),
                rng.pick(&["r2", "r6"]),
                rng.pick(&["16", "64"]),
                rng.pick(&["1", "2", "4"]),
            ),
            3 => format!(
                "dma.store {}, {}, {}, {}, 1, r3, r0, r3, r0, u8, rows",
                rng.pick(&["r1", "r4"]),
                rng.pick(&["r2", "r6"]),
                rng.pick(&["16", "64"]),
                rng.pick(&["1", "2"]),
            ),
            4 => format!(
                "mxu.matmul r5, {mxu_a}, {mxu_b}, {}, {}, {}, r8, r8, r8, bf16, {}",
                rng.pick(&["8", "16", "32"]),
                rng.pick(&["8", "16", "32"]),
                rng.pick(&["8", "16", "32"]),
                rng.pick(&["set", "acc"]),
            ),
            5 => format!(
                "vpu.add sram.bf16[{vpu_dst}, r8], sram.bf16[{vpu_src}, r8], \
                 sram.bf16[{vpu_src}, r8], {}, {}, full",
                rng.pick(&["4", "16"]),
                rng.pick(&["16", "32"]),
            ),
            6 => format!(
                "vpu.copy sram.bf16[{vpu_dst}, r8], acc.f32[{copy_src}, r8], {}, 16, full",
                rng.pick(&["4", "8"]),
            ),
            7 | 8 => {
                // A signal and a wait on it, the signal first in program order (no deadlock).
                let (a, b) = (rng.pick(&UNITS), rng.pick(&UNITS));
                sem += 1;
                out.push(format!("{a}.signal s{sem}"));
                format!("{b}.wait s{sem}, 1")
            }
            9 if multicast && !clean => {
                "dma.mcast r4, r2, 16, 1, 1, r3, r0, r3, r0, u8, rows, 0, 8, s30".to_string()
            }
            9 => "signal s3\n    wait s3, 1".to_string(),
            // Noise the fast-forward must see through or refuse: a data-dependent branch whose
            // outcome flips inside the loop, non-affine arithmetic, scalar memory.
            10 => "blt r20, r12, .+2\n    addi r13, r13, 1".to_string(),
            11 => rng
                .pick(&[
                    "and r11, r20, r3",
                    "min r14, r20, r12",
                    "slt r15, r12, r20",
                    "div r11, r20, r3",
                    "addi r3, r3, 64",
                    "addi r8, r8, -1",
                ])
                .to_string(),
            12 => format!("{} r16, {ld}, 0", rng.pick(&["ld", "ld32"])),
            13 => "st r20, r7, 8".to_string(),
            // Indexed DMAs (row indices read from the scratchpad at r7, all 0 in a timing-only
            // run), a causal mask whose offsets (values only) follow the trip counter, and a
            // barrier inside the loop.
            14 => format!(
                "{} r4, r6, r7, {}, 16, r3, r8, u8, i32, 0",
                rng.pick(&["dma.gather", "dma.scatter"]),
                rng.pick(&["2", "8"]),
            ),
            15 => "vpu.causal sram.bf16[r19, r8], r20, r12, -1.0, 4, 16".to_string(),
            _ if multicast => "barrier".to_string(),
            _ => "nop".to_string(),
        };
        out.push(line);
    }
    out
}

/// A random program of counted loops on `edge` (one core) or `datacenter` (eight cores).
fn program(rng: &mut Rng) -> String {
    let multi = rng.chance(2);
    let mut s = String::new();
    let target = if multi { "datacenter" } else { "edge" };
    writeln!(s, ".target \"{target}\"").unwrap();
    let cores: u64 = if multi { 8 } else { 1 };
    // Either one stream for every core or a stream per core.
    let shared = rng.chance(2);
    let streams: Vec<Vec<u64>> = if shared {
        vec![(0..cores).collect()]
    } else {
        (0..cores).map(|c| vec![c]).collect()
    };
    let noise = rng.chance(3);
    let clean = !rng.chance(3);
    let barrier = if multi && rng.chance(2) {
        "barrier"
    } else {
        "nop"
    };
    let n = 2 + rng.below(10) as usize;
    let shared_body = body(rng, n, clean, multi, noise);
    for list in streams {
        let ids: Vec<String> = list.iter().map(|c| c.to_string()).collect();
        writeln!(s, ".core {}", ids.join(", ")).unwrap();
        let lines = if shared || rng.chance(2) {
            shared_body.clone()
        } else {
            body(rng, n, clean, multi, noise)
        };
        let long = rng.chance(4);
        let trip = 1 + rng.below(if long { 2000 } else { 200 });
        let nested = rng.chance(2);
        let outer = 1 + rng.below(if nested { 6 } else { 1 });
        let a0 = 64 * rng.below(512);
        let text = format!(
            "    cid r9
    shli r10, r9, 22
    li r1, {a0}
    li r4, {b0}
    li r5, {c0}
    li r2, {h0}
    add r2, r2, r10
    li r6, {h1}
    add r6, r6, r10
    li r3, 64
    li r8, 32
    li r7, 1048576
    li r17, 262144
    li r18, 327680
    li r19, 393216
    li r23, 131072
    li r12, {th}
    li r21, {outer}
outer:
    li r20, {trip}
loop:
    {body}
    addi r20, r20, -1
    bne r20, r0, loop
    addi r21, r21, -1
    bne r21, r0, outer
    {barrier}
    halt
",
            b0 = 65536 + 64 * rng.below(512),
            c0 = 64 * rng.below(256),
            h0 = 64 * rng.below(1 << 12),
            h1 = (1 << 21) + 64 * rng.below(1 << 12),
            th = rng.below(trip + 1),
            body = lines.join("\n    "),
            barrier = barrier,
        );
        s.push_str(&text);
    }
    s
}

/// The run's outcome as comparable text: the report, trace and timeline, or the error.
fn outcome(p: &Program, opts: &RunOptions) -> (String, u64) {
    match run(p, &[], opts) {
        Ok(r) => (
            format!(
                "{:?}\n{:?}\n{:?}\n{}",
                r.report,
                r.trace,
                r.timeline,
                r.report.render()
            ),
            r.fast_forwarded,
        ),
        Err(e) => (format!("error: {e}\n{e:?}"), 0),
    }
}

#[test]
fn random_loop_programs_cost_the_same_with_and_without_fast_forward() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut ok, mut skipped, mut errors) = (0, 0, 0);
    for i in 0..400 {
        let src = program(&mut rng);
        let p = llmpu_asm::assemble(&src, Path::new("random.s"))
            .unwrap_or_else(|e| panic!("program {i}: {e:?}\n{src}"));
        let mut opts = RunOptions {
            timing_only: true,
            trace: rng.chance(4),
            timeline: rng.chance(4),
            race_check: !rng.chance(6),
            fast_forward: false,
            ..RunOptions::default()
        };
        if rng.chance(6) {
            opts.max_instructions = 1000 + rng.below(40_000);
        }
        if rng.chance(6) {
            opts.max_cycles = 1000 + rng.below(400_000);
        }
        let (step, _) = outcome(&p, &opts);
        opts.fast_forward = true;
        let (ff, n) = outcome(&p, &opts);
        assert!(
            step == ff,
            "program {i} differs with fast-forwarding:\n{src}\n--- step by step\n{step}\n--- \
             fast-forwarded\n{ff}"
        );
        if step.starts_with("error") {
            errors += 1;
        } else {
            ok += 1;
        }
        if n > 0 {
            skipped += 1;
        }
    }
    assert!(ok >= 150 && errors >= 20, "{ok} ran, {errors} stopped");
    assert!(
        skipped >= 100,
        "fast-forwarding skipped work in only {skipped} programs"
    );
}
