//! The shipped example model: made by `examples/tiny_gpt.rs`, compiled and run on the emulator.

use std::path::PathBuf;
use std::process::{Command, Output};

#[path = "../examples/tiny_gpt.rs"]
mod tiny_gpt;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn llmpu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llmpu"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run llmpu")
}

#[test]
fn committed_tiny_gpt_is_what_the_builder_makes() {
    let committed = std::fs::read(root().join("examples/models/tiny-gpt.onnx")).unwrap();
    assert!(
        committed == tiny_gpt::build(),
        "examples/models/tiny-gpt.onnx is stale: cargo run --example tiny_gpt"
    );
}

#[test]
fn tiny_gpt_checks_on_both_presets_and_precisions() {
    for target in ["edge", "datacenter"] {
        for precision in ["fp32", "bf16"] {
            let out = llmpu(&[
                "check",
                "examples/models/tiny-gpt.onnx",
                "--target",
                target,
                "--precision",
                precision,
                "--check-uninit",
            ]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("ok   logits") && text.contains("cycles"),
                "{target} {precision}:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn compile_dumps_show_fused_attention_blocks_and_tiles() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tiny-gpt-dump");
    let _ = std::fs::remove_dir_all(&dir);
    let bin = dir.join("tiny-gpt.llmpu");
    let out = llmpu(&[
        "compile",
        "examples/models/tiny-gpt.onnx",
        "-o",
        bin.to_str().unwrap(),
        "--dump-ir",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tiled = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with("-tile.mlir"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .expect("tile dump");
    assert_eq!(tiled.matches("\"graph.fused_attention\"").count(), 2);
    assert!(tiled.contains("causal = true") && tiled.contains("q_block = 8"));
    assert!(tiled.contains("activation = \"gelu_tanh\"") && tiled.contains("tile = array<i64:"));
    assert!(llmpu_isa::binary::read(&std::fs::read(&bin).unwrap()).is_ok());
}

/// Every model of the shared corpus, both presets, both precisions (needs `LLMPU_CORPUS`, default
/// `../shared/corpus`).
#[test]
fn corpus_models_check_on_both_presets_and_precisions() {
    let corpus = std::env::var("LLMPU_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("../shared/corpus"));
    let models = corpus.join("models");
    let Ok(rd) = std::fs::read_dir(&models) else {
        eprintln!(
            "SKIPPED: corpus not found at {} (set LLMPU_CORPUS)",
            models.display()
        );
        return;
    };
    let mut cases: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    cases.sort();
    assert!(!cases.is_empty());
    for case in &cases {
        for target in ["edge", "datacenter"] {
            for precision in ["fp32", "bf16"] {
                let out = llmpu(&[
                    "check",
                    case.to_str().unwrap(),
                    "--target",
                    target,
                    "--precision",
                    precision,
                    "--no-report",
                    "--check-uninit",
                ]);
                assert!(
                    out.status.success(),
                    "{} {target} {precision}:\n{}\n{}",
                    case.display(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// `kv-layout` on the corpus decode graph: the dumps show the caches as appends into one paged
/// region, and the binary carries the region instead of dense past/present I/O.
#[test]
fn llama_decode_compiles_with_a_paged_kv_region() {
    let corpus = std::env::var("LLMPU_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("../shared/corpus"));
    let model = corpus.join("models/llama-tiny-decode/model.onnx");
    if !model.exists() {
        eprintln!(
            "SKIPPED: corpus not found at {} (set LLMPU_CORPUS)",
            corpus.display()
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("llmpu-kv-dump-{}", std::process::id()));
    let out = dir.join("m.llmpu");
    let _ = std::fs::create_dir_all(&dir);
    let r = llmpu(&[
        "compile",
        model.to_str().unwrap_or_default(),
        "--precision",
        "fp32",
        "--dump-ir",
        dir.to_str().unwrap_or_default(),
        "-o",
        out.to_str().unwrap_or_default(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let read = |suffix: &str| {
        let mut hits = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(suffix));
        hits.next()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    };
    let kv = read("kv-layout.mlir");
    assert_eq!(kv.matches("\"graph.kv_append\"").count(), 4, "{kv}");
    assert!(
        kv.contains("llmpu.kv = {batch = 1 : i64, block_tokens = 16 : i64, max_blocks = 2 : i64")
    );
    let planned = read("plan-memory.mlir");
    assert!(planned.contains("llmpu.kv_region"));
    assert_eq!(planned.matches("llmpu.kv_pool").count(), 4);
    let program = llmpu_isa::binary::read_file(&out).expect("binary");
    let region = program.kv.expect("KV region in the binary");
    assert_eq!(region.slots.len(), 4);
    assert!(
        program
            .io
            .iter()
            .all(|t| !t.name.starts_with("past") && !t.name.starts_with("present"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}
