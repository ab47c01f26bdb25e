//! Batched decode reads each weight matrix once per step, not once per sequence: the matmuls of a
//! `batch_size = 8` decode program (`[8, 1, K] · [K, N]`, folded into one `[8, K] · [K, N]`) move
//! about the bytes of the batch-1 program's, and the whole step costs far less than eight
//! batch-1 steps. Needs the corpus (`LLMPU_CORPUS`, default `../shared/corpus`).

use std::collections::HashMap;
use std::path::Path;

mod common;
use common::{corpus, llmpu_ok};

/// (cycles, HBM bytes per location) of the decode step compiled for `batch`.
fn step(model: &Path, dir: &Path, batch: u64) -> (u64, HashMap<String, u64>) {
    let bin = dir.join(format!("b{batch}.llmpu"));
    let json = dir.join(format!("b{batch}.json"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    llmpu_ok(&[
        "compile",
        &s(model),
        "--dim",
        &format!("batch_size={batch}"),
        "--max-context",
        "64",
        "-o",
        &s(&bin),
    ]);
    llmpu_ok(&["run", &s(&bin), "--timing-only", "--report-json", &s(&json)]);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let locs = r["locations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["loc"].as_str().unwrap().to_string(),
                l["hbm_bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    (r["cycles"].as_u64().unwrap(), locs)
}

#[test]
fn batched_decode_matmuls_read_the_weights_once_per_step() {
    let Some(c) = corpus("models") else { return };
    let dir = std::env::temp_dir().join(format!("llmpu-batched-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for arch in ["gpt2", "llama"] {
        let model = c.join(format!("models/{arch}-tiny-dyn-decode/model.onnx"));
        let (c1, one) = step(&model, &dir, 1);
        let (c8, eight) = step(&model, &dir, 8);
        let mut checked = 0;
        for (loc, &b1) in &one {
            let is_projection = loc.contains("MatMul") || loc.contains("Gemm");
            if !is_projection || loc.contains("attn/MatMul+") || loc.contains("self_attn/MatMul+") {
                continue;
            }
            let Some(&b8) = eight.get(loc) else { continue };
            assert!(
                b8 * 10 < b1 * 15,
                "{arch} {loc}: {b8} HBM bytes at batch 8 vs {b1} at batch 1 (weights re-read?)"
            );
            checked += 1;
        }
        assert!(checked >= 4, "{arch}: only {checked} projections compared");
        assert!(
            c8 < 4 * c1,
            "{arch}: batch-8 step {c8} cycles vs batch-1 {c1}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
