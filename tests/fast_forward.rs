//! Fast-forwarding of periodic loops in timing-only runs gives compiled programs exactly the
//! figures of the step-by-step simulation — cycles, per-core and per-unit busy cycles and
//! instruction counts, HBM bytes, MACs, energy, high-water marks, per-op rows, the trace and the
//! timeline — while skipping most of their loop iterations: a GEMM on the 108-core `gpu-class`
//! target (every core's K loop at once, sharing the HBM channel), a GEMM on `datacenter`,
//! streaming attention (prefill, decode over a long cache, and causal) on a four-core target with
//! small scratchpads, and a paged decode step of the corpus's Llama over a 1,000-token cache.

use std::path::{Path, PathBuf};

use llmpu_isa::{Program, binary};
use llmpu_runtime::{RunOptions, Session, kv};

mod common;
use common::{attention_model, corpus, llmpu_ok, matmul_model};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("llmpu-ff-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// Compiles graph IR `text` for `target` into `d/name.llmpu`.
fn compile(d: &Path, name: &str, text: &str, target: &str) -> Program {
    let model = d.join(format!("{name}.mlir"));
    let bin = d.join(format!("{name}.llmpu"));
    std::fs::write(&model, text).unwrap();
    llmpu_ok(&["compile", &s(&model), "--target", target, "-o", &s(&bin)]);
    binary::read(&std::fs::read(&bin).unwrap()).unwrap()
}

fn opts(fast_forward: bool) -> RunOptions {
    RunOptions {
        timing_only: true,
        trace: true,
        timeline: true,
        fast_forward,
        ..RunOptions::default()
    }
}

/// Runs `p` timing-only with and without fast-forwarding; asserts identical results and that
/// fast-forwarding skipped at least `share` of the executed instructions.
fn same_either_way(name: &str, p: &Program, share: f64) {
    let step = llmpu_runtime::run(p, &[], &opts(false)).unwrap();
    let ff = llmpu_runtime::run(p, &[], &opts(true)).unwrap();
    assert_eq!(step.fast_forwarded, 0);
    assert!(step.report == ff.report, "{name}: reports differ");
    assert_eq!(step.report.render(), ff.report.render(), "{name}");
    assert!(step.trace == ff.trace, "{name}: traces differ");
    assert!(step.timeline == ff.timeline, "{name}: timelines differ");
    let executed: u64 = ff.report.instructions.iter().sum();
    assert!(
        ff.fast_forwarded as f64 >= share * executed as f64,
        "{name}: fast-forwarded {} of {executed} instructions",
        ff.fast_forwarded
    );
}

#[test]
fn compiled_loops_report_the_same_with_and_without_fast_forward() {
    let d = dir("compiled");
    let gpu = "examples/targets/gpu-class.toml";
    let p = compile(&d, "gemm-gpu", &matmul_model(1024, 6144, 1024), gpu);
    same_either_way("gpu-class GEMM", &p, 0.5);
    let p = compile(
        &d,
        "gemm-dc",
        &matmul_model(1024, 32768, 1024),
        "datacenter",
    );
    same_either_way("datacenter GEMM", &p, 0.5);
    let quad = std::fs::read_to_string("examples/targets/quad.toml")
        .unwrap()
        .replace("size_bytes = 2097152", "size_bytes = 262144");
    let quad_small = d.join("quad-256k.toml");
    std::fs::write(&quad_small, quad).unwrap();
    let p = compile(
        &d,
        "attention",
        &attention_model(4, 1024, 8192, 64, false),
        &s(&quad_small),
    );
    same_either_way("streaming attention", &p, 0.5);
    let p = compile(
        &d,
        "attention-decode",
        &attention_model(8, 1, 32768, 64, false),
        &s(&quad_small),
    );
    same_either_way("streaming decode attention", &p, 0.5);
    // Causal: each core's key loops have other trip counts, so the cores drift apart and the
    // machine is rarely periodic as a whole; what is skipped must still be exact.
    let p = compile(
        &d,
        "attention-causal",
        &attention_model(2, 4096, 4096, 64, true),
        &s(&quad_small),
    );
    same_either_way("causal streaming attention", &p, 0.0);
}

#[test]
fn a_paged_decode_step_reports_the_same_with_and_without_fast_forward() {
    let Some(c) = corpus("models/llama-tiny-dyn-decode") else {
        return;
    };
    let d = dir("decode");
    let bin = d.join("decode.llmpu");
    let model = c.join("models/llama-tiny-dyn-decode/model.onnx");
    llmpu_ok(&[
        "compile",
        &s(&model),
        "--dim",
        "batch_size=1",
        "--max-context",
        "1024",
        "--target",
        "datacenter",
        "-o",
        &s(&bin),
    ]);
    let p = binary::read(&std::fs::read(&bin).unwrap()).unwrap();
    let region = p.kv.clone().expect("a paged KV region");
    let table = kv::reversed_table(&region);
    let step = |fast_forward: bool| {
        let mut sess = Session::load(p.clone(), opts(fast_forward)).unwrap();
        sess.set_kv_header(&table, &[1000]).unwrap();
        let report = sess.run().unwrap();
        (report, sess.take_trace())
    };
    let (a, ta) = step(false);
    let (b, tb) = step(true);
    assert!(a == b, "paged decode: reports differ");
    assert!(ta == tb, "paged decode: traces differ");
    assert!(a.cycles > 0);
}
