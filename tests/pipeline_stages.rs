//! Every stage of the backend pipeline can be stopped at and continued from: `llmpu compile
//! --stop-after P -o f.mlir` writes the complete IR (large constants printed, `llmpu.stage = P`)
//! and `llmpu compile f.mlir` runs the passes after `P` — to the byte-identical binary of the
//! uninterrupted run, for every pass `P`, on a decode graph with a paged KV cache (the zoo's
//! Mistral) and a prefill graph (the corpus GPT-2).

use std::path::{Path, PathBuf};

mod common;
use common::{corpus, llmpu_ok};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn every_stage_resumes_to_the_same_binary(model: &Path, extra: &[&str], tag: &str) {
    let dir = std::env::temp_dir().join(format!("llmpu-stages-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let compile = |input: &Path, more: &[&str], out: &Path| {
        let mut args = vec!["compile", s(input)];
        args.extend_from_slice(more);
        args.extend_from_slice(&["-o", s(out)]);
        llmpu_ok(&args);
    };
    let full = dir.join("full.llmpu");
    compile(model, extra, &full);
    let want = std::fs::read(&full).unwrap();
    for pass in llmpu_compiler::backend::pipeline() {
        let ir: PathBuf = dir.join(format!("{pass}.mlir"));
        let mut stop = extra.to_vec();
        stop.extend_from_slice(&["--stop-after", pass]);
        compile(model, &stop, &ir);
        let text = std::fs::read_to_string(&ir).unwrap();
        assert!(
            text.contains(&format!("llmpu.stage = \"{pass}\"")),
            "{pass}: no stage in the IR"
        );
        let bin = dir.join(format!("{pass}.llmpu"));
        compile(&ir, &[], &bin);
        assert!(
            std::fs::read(&bin).unwrap() == want,
            "{tag}: continuing after `{pass}` gives another binary"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_decode_graph_continues_from_every_stage_to_the_same_binary() {
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("zoo/models/mistral-tiny-dyn-decode/model.onnx");
    every_stage_resumes_to_the_same_binary(
        &model,
        &[
            "--max-context",
            "32",
            "--dim",
            "batch_size=1",
            "--target",
            "datacenter",
        ],
        "mistral",
    );
}

#[test]
fn a_prefill_graph_continues_from_every_stage_to_the_same_binary() {
    let Some(c) = corpus("models") else { return };
    every_stage_resumes_to_the_same_binary(
        &c.join("models/gpt2-tiny-prefill/model.onnx"),
        &[],
        "gpt2",
    );
}
