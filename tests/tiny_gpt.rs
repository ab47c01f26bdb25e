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
