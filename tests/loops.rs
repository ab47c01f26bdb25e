//! Rolled loops: a matmul whose K steps roll into counted loops, elementwise and softmax kernels
//! whose rounds of row tiles do, and streaming attention whose KV blocks (and runs of heads) do,
//! execute exactly the work of their straight-line
//! (`--unroll`) programs — the same DMA, matrix and vector instructions at the same
//! addresses in the same order on every core — in a smaller program, with bit-identical outputs,
//! no data race, and the same cycle count (attention: within 0.1%, its loops' scalar overhead
//! and the straight-line code's extra waits). And the program of a large GEMM on a many-core target
//! does not grow with the matrix.

use std::path::{Path, PathBuf};

use llmpu_isa::{DType, Inst, Program, binary};
use llmpu_runtime::{Tensor, npy};

mod common;
use common::{attention_model, llmpu_ok, llmpu_out, matmul_model, noise};

const QUAD: &str = "examples/targets/quad.toml";

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("llmpu-loops-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn program(path: &Path) -> Program {
    binary::read(&std::fs::read(path).unwrap()).unwrap()
}

fn reg(regs: &[i64; 32], r: llmpu_isa::Reg) -> i64 {
    regs[r.0 as usize & 31]
}

/// Assembly text with every register name (`r12`) as `r_`.
fn unnamed(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let starts = b[i] == b'r'
            && (i == 0 || !b[i - 1].is_ascii_alphanumeric())
            && b.get(i + 1).is_some_and(u8::is_ascii_digit);
        if starts {
            out.push_str("r_");
            i += 1;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// The DMA, matrix and vector instructions one core executes, in order, with every register
/// operand replaced by its value (`r_` in the text, the values after it); scalar control is
/// interpreted.
/// Semaphore waits and signals are left out: the straight-line emission may synchronize more
/// conservatively where its conflict scan reaches its limit.
fn executed(code: &[Inst]) -> Vec<String> {
    let mut regs = [0i64; 32];
    let mut out = vec![];
    let mut pc = 0usize;
    let mut steps = 0u64;
    while pc < code.len() {
        steps += 1;
        assert!(steps < 50_000_000, "runaway program");
        let inst = code[pc];
        let mut next = pc + 1;
        match inst {
            Inst::Li { rd, imm } => regs[rd.0 as usize] = imm as i64,
            Inst::Lih { rd, imm } => {
                let r = rd.0 as usize;
                regs[r] = (regs[r] & 0xffff_ffff) | ((imm as i64) << 32);
            }
            Inst::Addi { rd, rs1, imm } => regs[rd.0 as usize] = reg(&regs, rs1) + imm as i64,
            Inst::Bne { rs1, rs2, target } => {
                if reg(&regs, rs1) != reg(&regs, rs2) {
                    next = (pc as i64 + target.0 as i64) as usize;
                }
            }
            Inst::Halt {} => break,
            Inst::Signal { .. }
            | Inst::Wait { .. }
            | Inst::DmaSignal { .. }
            | Inst::DmaWait { .. }
            | Inst::MxuSignal { .. }
            | Inst::MxuWait { .. }
            | Inst::VpuSignal { .. }
            | Inst::VpuWait { .. }
            | Inst::Barrier {}
            | Inst::Nop {} => {}
            other => {
                assert!(
                    other.reg_written().is_none(),
                    "scalar instruction the test does not interpret: {other}"
                );
                let vals: Vec<i64> = other.regs_read().iter().map(|&r| reg(&regs, r)).collect();
                // Register names may differ (the loops' own registers); their values may not.
                out.push(format!("{} {vals:?}", unnamed(&other.to_string())));
            }
        }
        regs[0] = 0;
        pc = next;
    }
    out
}

fn run_outputs(bin: &Path, inputs: &[(&str, PathBuf)], out: &Path, json: &Path) {
    let mut args: Vec<String> = vec!["run".into(), s(bin)];
    for (name, p) in inputs {
        args.push("--input".into());
        args.push(format!("{name}={}", s(p)));
    }
    args.extend([
        "--output-dir".into(),
        s(out),
        "--report-json".into(),
        s(json),
    ]);
    llmpu_ok(&args);
}

#[test]
fn rolled_matmul_executes_the_unrolled_work_in_a_smaller_program() {
    // Row blocks streaming A and B through a ring of buffers.
    let (m, k, n) = (256, 4096, 512);
    let inputs = [
        ("input0", vec![m, k]),
        ("input1", vec![k, n]),
        ("input2", vec![n]),
    ];
    rolled_equals_unrolled("rows", QUAD, &matmul_model(m, k, n), &inputs, &[m, n], 0.0);
}

#[test]
fn rolled_decode_matmul_with_resident_a_executes_the_unrolled_work() {
    // One row block of A resident in SRAM: the K loop's A address advances on chip.
    let (m, k, n) = (16, 8192, 1024);
    let inputs = [
        ("input0", vec![m, k]),
        ("input1", vec![k, n]),
        ("input2", vec![n]),
    ];
    let model = matmul_model(m, k, n);
    rolled_equals_unrolled("resident", "datacenter", &model, &inputs, &[m, n], 0.0);
}

#[test]
fn rolled_elementwise_and_softmax_rows_execute_the_unrolled_work() {
    let model = r#"module {
  func.func @main(%x: tensor<8192x512xf32>, %y: tensor<8192x512xf32>) -> tensor<8192x512xf32> {
    %s = "graph.add"(%x, %y) : (tensor<8192x512xf32>, tensor<8192x512xf32>) -> tensor<8192x512xf32> loc("Add")
    %p = "graph.softmax"(%s) {axis = -1 : i64} : (tensor<8192x512xf32>) -> tensor<8192x512xf32> loc("Softmax")
    func.return %p : tensor<8192x512xf32> loc(unknown)
  } loc("main")
}
"#;
    let inputs = [("input0", vec![8192, 512]), ("input1", vec![8192, 512])];
    rolled_equals_unrolled("rows-sm", QUAD, model, &inputs, &[8192, 512], 0.0);
}

/// `quad` with `kib` KiB of SRAM per core: a head's K and V do not stay resident, so attention
/// streams them block by block.
fn small_quad(d: &Path, kib: u64) -> String {
    let t = std::fs::read_to_string(QUAD).unwrap().replace(
        "size_bytes = 2097152",
        &format!("size_bytes = {}", kib << 10),
    );
    let p = d.join(format!("quad-{kib}k.toml"));
    std::fs::write(&p, t).unwrap();
    s(&p)
}

/// Causal attention on `[b, s, h, d]` inputs viewed as `[b, h, s, d]` (as exporters transpose
/// the projections): heads advance by `d` but a batch boundary jumps.
fn transposed_attention_model(b: u64, h: u64, s: u64, d: u64) -> String {
    let (x, t) = (
        format!("tensor<{b}x{s}x{h}x{d}xf32>"),
        format!("tensor<{b}x{h}x{s}x{d}xf32>"),
    );
    format!(
        r#"module {{
  func.func @main(%q: {x}, %k: {x}, %v: {x}) -> {t} {{
    %qt = "graph.transpose"(%q) {{perm = array<i64: 0, 2, 1, 3>}} : ({x}) -> {t} loc("Tq")
    %kt = "graph.transpose"(%k) {{perm = array<i64: 0, 2, 1, 3>}} : ({x}) -> {t} loc("Tk")
    %vt = "graph.transpose"(%v) {{perm = array<i64: 0, 2, 1, 3>}} : ({x}) -> {t} loc("Tv")
    %o = "graph.fused_attention"(%qt, %kt, %vt) {{causal = true}} : ({t}, {t}, {t}) -> {t} loc("Attention")
    func.return %o : {t} loc(unknown)
  }} loc("main")
}}
"#
    )
}

#[test]
fn rolled_streaming_attention_executes_the_unrolled_work() {
    // Prefill (causal: Q blocks of one head over consecutive heads roll around their KV loops)
    // and decode (one query over a long cache) with K/V streamed block by block.
    let t = small_quad(&dir("attn-target"), 256);
    for (name, h, sq, skv, causal) in [
        ("attn-prefill", 4, 1024, 1024, true),
        ("attn-decode", 8, 1, 4096, false),
    ] {
        let model = attention_model(h, sq, skv, 64, causal);
        let inputs = [
            ("input0", vec![1, h, sq, 64]),
            ("input1", vec![1, h, skv, 64]),
            ("input2", vec![1, h, skv, 64]),
        ];
        rolled_equals_unrolled(name, &t, &model, &inputs, &[1, h, sq, 64], 0.001);
    }
    // Batches of transposed heads: a run of units ends at a batch boundary (the addresses jump
    // there), so the loops never stand for units across it.
    let (b, h, sq) = (2, 48, 256);
    let shape = vec![b, sq, h, 64];
    let inputs = [
        ("input0", shape.clone()),
        ("input1", shape.clone()),
        ("input2", shape),
    ];
    let model = transposed_attention_model(b, h, sq, 64);
    let t = small_quad(&dir("attn-target"), 64);
    // The rolled runs of heads carry one body's waits; the straight-line code waits on more
    // earlier iterations (65 more DMA/MXU waits here), 0.15% slower.
    rolled_equals_unrolled("attn-batches", &t, &model, &inputs, &[b, h, sq, 64], 0.002);
}

/// `slack`: the fraction by which the rolled run's cycles may differ from the unrolled run's (the
/// scalar unit's `addi`/`bne` per trip where it is on the critical path; waits the straight-line
/// code adds where it knows earlier iterations only as widened ranges).
fn rolled_equals_unrolled(
    name: &str,
    target: &str,
    text: &str,
    input_shapes: &[(&str, Vec<u64>)],
    out_shape: &[u64],
    slack: f64,
) {
    let d = dir(name);
    let model = d.join("model.mlir");
    std::fs::write(&model, text).unwrap();
    let rolled = d.join("rolled.llmpu");
    let unrolled = d.join("unrolled.llmpu");
    llmpu_ok(&["compile", &s(&model), "--target", target, "-o", &s(&rolled)]);
    llmpu_ok(&[
        "compile",
        &s(&model),
        "--target",
        target,
        "--unroll",
        "-o",
        &s(&unrolled),
    ]);
    let (pr, pu) = (program(&rolled), program(&unrolled));
    let size = |p: &Program| p.cores.iter().map(Vec::len).sum::<usize>();
    assert!(
        size(&pr) * 3 < size(&pu) * 2,
        "rolled {} vs unrolled {} instructions",
        size(&pr),
        size(&pu)
    );
    assert!(
        llmpu_out(&["disasm", &s(&rolled)]).contains("bne"),
        "no loop in the rolled program"
    );
    assert!(!llmpu_out(&["disasm", &s(&unrolled)]).contains("bne"));
    for (c, (a, b)) in pr.cores.iter().zip(&pu.cores).enumerate() {
        let (ea, eb) = (executed(a), executed(b));
        assert_eq!(ea.len(), eb.len(), "core {c}: executed instruction counts");
        if let Some(i) = (0..ea.len()).find(|&i| ea[i] != eb[i]) {
            panic!("core {c}, executed #{i}: rolled `{}` vs `{}`", ea[i], eb[i]);
        }
    }
    // Bit-identical outputs, and the same time (the race check is on).
    let mut inputs = vec![];
    for (i, (name, shape)) in input_shapes.iter().cloned().enumerate() {
        let count = shape.iter().product::<u64>() as usize;
        let t = Tensor::from_f32(DType::F32, shape, &noise(count, 11 + i as u64)).unwrap();
        let p = d.join(format!("{name}.npy"));
        npy::write_file(&p, &t).unwrap();
        inputs.push((name, p));
    }
    let (o1, o2) = (d.join("out_rolled"), d.join("out_unrolled"));
    let (j1, j2) = (d.join("rolled.json"), d.join("unrolled.json"));
    run_outputs(&rolled, &inputs, &o1, &j1);
    run_outputs(&unrolled, &inputs, &o2, &j2);
    let a = npy::read_file(o1.join("output0.npy")).unwrap();
    let b = npy::read_file(o2.join("output0.npy")).unwrap();
    assert_eq!(a.shape, out_shape);
    assert!(a.data == b.data, "outputs differ");
    assert!(a.to_f32().iter().any(|&x| x > 0.0));
    let cycles = |p: &Path| -> u64 {
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        r["cycles"].as_u64().unwrap()
    };
    let (c1, c2) = (cycles(&j1), cycles(&j2));
    assert!(
        (c1 as f64 - c2 as f64).abs() <= c2 as f64 * slack,
        "cycles of rolled ({c1}) and unrolled ({c2}) runs"
    );
}

#[test]
fn an_op_whose_loop_a_later_wait_reaches_into_is_lowered_straight_line() {
    // Causal attention over 1025 keys on 64 KiB cores: a wait in the last KV iterations of a
    // unit depended on a matrix instruction of a copy the loop replaced, so the rolled program
    // lost that signal and deadlocked (found by a sweep of generated models). The emitter now
    // flags it and lower-llmpu lowers the op again without rolling.
    let d = dir("attn-late-wait");
    let t = small_quad(&d, 64);
    let (h, sq) = (3, 1025);
    let model = d.join("model.mlir");
    std::fs::write(&model, attention_model(h, sq, sq, 128, true)).unwrap();
    let (rolled, straight) = (d.join("rolled.llmpu"), d.join("straight.llmpu"));
    llmpu_ok(&["compile", &s(&model), "--target", &t, "-o", &s(&rolled)]);
    let args = ["compile", &s(&model), "--target", &t, "--unroll"];
    llmpu_ok(&[&args[..], &["-o", &s(&straight)]].concat());
    let size = |p: &Path| program(p).cores.iter().map(Vec::len).sum::<usize>();
    assert_eq!(size(&rolled), size(&straight));
    let mut inputs = vec![];
    for (i, name) in ["input0", "input1", "input2"].into_iter().enumerate() {
        let t = Tensor::from_f32(
            DType::F32,
            vec![1, h, sq, 128],
            &noise(h as usize * 1025 * 128, 3 + i as u64),
        )
        .unwrap();
        let p = d.join(format!("{name}.npy"));
        npy::write_file(&p, &t).unwrap();
        inputs.push((name, p));
    }
    let (o1, j1) = (d.join("out"), d.join("r.json"));
    run_outputs(&rolled, &inputs, &o1, &j1);
    assert!(
        npy::read_file(o1.join("output0.npy"))
            .unwrap()
            .to_f32()
            .iter()
            .all(|x| x.is_finite())
    );
}

#[test]
fn loops_whose_hbm_addresses_cross_2_gib_roll() {
    // A 3 GiB tensor: its row tiles' addresses pass 2³¹, where a loaded address takes an `lih`
    // as well as an `li` (the last iterations then had one instruction more than the body, an
    // internal error that stopped a GPT-3 shard's second LayerNorm).
    let d = dir("2gib");
    let model = d.join("relu.mlir");
    let t = "tensor<1572864x1024xbf16>";
    std::fs::write(
        &model,
        format!(
            r#"module {{
  func.func @main(%x: {t}) -> {t} {{
    %r = "graph.relu"(%x) : ({t}) -> {t} loc("Relu")
    func.return %r : {t} loc(unknown)
  }} loc("main")
}}
"#
        ),
    )
    .unwrap();
    let bin = d.join("relu.llmpu");
    llmpu_ok(&[
        "compile",
        &s(&model),
        "--target",
        "datacenter",
        "-o",
        &s(&bin),
    ]);
    let size: usize = program(&bin).cores.iter().map(Vec::len).sum();
    assert!(size < 2000, "{size} instructions");
    assert!(llmpu_out(&["disasm", &s(&bin)]).contains("lih"));
    // The same work as the straight-line program, addresses past 2³¹ included.
    let straight = d.join("relu-unrolled.llmpu");
    let args = ["compile", &s(&model), "--target", "datacenter", "--unroll"];
    llmpu_ok(&[&args[..], &["-o", &s(&straight)]].concat());
    for (c, (a, b)) in program(&bin)
        .cores
        .iter()
        .zip(&program(&straight).cores)
        .enumerate()
    {
        assert!(
            executed(a) == executed(b),
            "core {c}: executed work differs"
        );
    }
}

/// Instructions of the program of one `m×k×n` bf16 GEMM compiled for `target`.
fn gemm_instructions(d: &Path, target: &str, (m, k, n): (u64, u64, u64)) -> usize {
    let model = d.join(format!("g{m}x{k}x{n}.mlir"));
    let text = format!(
        r#"module {{
  func.func @main(%a: tensor<{m}x{k}xbf16>, %b: tensor<{k}x{n}xbf16>) -> tensor<{m}x{n}xbf16> {{
    %c = "graph.matmul"(%a, %b) : (tensor<{m}x{k}xbf16>, tensor<{k}x{n}xbf16>) -> tensor<{m}x{n}xbf16> loc("MatMul")
    func.return %c : tensor<{m}x{n}xbf16> loc(unknown)
  }} loc("main")
}}
"#
    );
    std::fs::write(&model, text).unwrap();
    let bin = d.join(format!("g{m}x{k}x{n}.llmpu"));
    llmpu_ok(&["compile", &s(&model), "--target", target, "-o", &s(&bin)]);
    program(&bin).cores.iter().map(Vec::len).sum()
}

#[test]
fn gemm_program_on_a_many_core_target_does_not_grow_with_the_matrix() {
    let d = dir("scale");
    let gpu = "examples/targets/gpu-class.toml";
    // Row blocks for every one of the 108 cores; 4x the rows, 3x the depth, 3x the columns.
    let small = gemm_instructions(&d, gpu, (12288, 4096, 4096));
    let large = gemm_instructions(&d, gpu, (16384, 12288, 12288));
    assert!(
        large < small * 2,
        "GEMM 16384x12288x12288: {large} instructions, 12288x4096x4096: {small}"
    );
    assert!(large < 400_000, "{large} instructions");
}

#[test]
fn a_datacenter_gemm_program_does_not_grow_with_m() {
    // M×4096×4096 bf16 on datacenter: the large ones are tile kernels whose M loop rolls.
    let d = dir("scale-m");
    let count = |m| gemm_instructions(&d, "datacenter", (m, 4096, 4096));
    let (small, mid, large) = (count(512), count(4096), count(8192));
    assert!(
        large < 2 * small,
        "M=8192: {large} instructions, M=512: {small}"
    );
    assert_eq!(
        mid, large,
        "M=4096 and M=8192 differ only in the rolled trip count"
    );
}

#[test]
fn a_decode_step_program_does_not_grow_with_the_cache() {
    let Some(c) = common::corpus("models") else {
        return;
    };
    let d = dir("decode-scale");
    let model = c.join("models/llama-tiny-dyn-decode/model.onnx");
    for target in ["edge", "datacenter"] {
        let count = |context: u64| -> usize {
            let bin = d.join(format!("{target}-{context}.llmpu"));
            llmpu_ok(&[
                "compile",
                &s(&model),
                "--dim",
                "batch_size=1",
                "--max-context",
                &context.to_string(),
                "--target",
                target,
                "-o",
                &s(&bin),
            ]);
            program(&bin).cores.iter().map(Vec::len).sum()
        };
        // 64 and 2048 KV blocks of 16 tokens: the block loop of paged attention rolls.
        let (small, large) = (count(1024), count(32768));
        assert!(
            large * 100 < small * 101,
            "{target}: {large} instructions at a 32k cache, {small} at 1k"
        );
    }
}
