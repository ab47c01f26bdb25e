//! A decode-shaped GEMM on the 8-core `datacenter` target reads its activation matrix from HBM
//! once: every core multicasts a slice of it (`dma.mcast`) instead of each core loading all of it,
//! and the result still matches the reference interpreter. Without the multicast DMA
//! (`hbm.multicast = false`) each core loads its own copy.

use std::path::Path;

mod common;
use common::{llmpu_ok, llmpu_out as out};

#[test]
fn decode_gemm_multicasts_its_activations_once_and_matches_the_interpreter() {
    let dir = std::env::temp_dir().join(format!("llmpu-mcast-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    llmpu_ok(&["bench", "--emit-onnx", &s(&dir), "--only", "gemm-decode"]);
    let model = dir.join("gemm-decode.onnx");
    let bin = dir.join("g.llmpu");
    let json = dir.join("g.json");
    llmpu_ok(&[
        "compile",
        &s(&model),
        "--target",
        "datacenter",
        "-o",
        &s(&bin),
    ]);
    let asm = out(&["disasm", &s(&bin)]);
    // A [16, 4096] bf16: one slice of two rows per core, sent to all eight.
    let mcasts: Vec<&str> = asm
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("dma.mcast"))
        .collect();
    assert_eq!(mcasts.len(), 8, "{mcasts:?}");
    assert!(
        mcasts.iter().all(|l| l.contains(", 0, 8, s31")),
        "{mcasts:?}"
    );
    assert!(asm.contains("mxu.wait s31, 8"));
    llmpu_ok(&["run", &s(&bin), "--timing-only", "--report-json", &s(&json)]);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // Compulsory: B 32 MiB + A 128 KiB read, C 128 KiB written. Loading A on every core would
    // read 7 × 128 KiB more.
    let read = r["hbm"]["read_bytes"].as_u64().unwrap();
    assert_eq!(read, 4096 * 4096 * 2 + 16 * 4096 * 2, "HBM bytes read");
    // The same machine without the multicast DMA: every core loads all of A.
    let plain = dir.join("plain.llmpu");
    llmpu_ok(&[
        "compile",
        &s(&model),
        "--target",
        "examples/targets/datacenter-nomcast.toml",
        "-o",
        &s(&plain),
    ]);
    assert!(!out(&["disasm", &s(&plain)]).contains("dma.mcast"));
    llmpu_ok(&[
        "run",
        &s(&plain),
        "--timing-only",
        "--report-json",
        &s(&json),
    ]);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let read = r["hbm"]["read_bytes"].as_u64().unwrap();
    assert_eq!(read, 4096 * 4096 * 2 + 8 * 16 * 4096 * 2, "HBM bytes read");
    let check = out(&[
        "check",
        &s(&model),
        "--target",
        "datacenter",
        "--no-report",
        "--check-uninit",
    ]);
    assert!(check.contains("ok   c:"), "{check}");
    std::fs::remove_dir_all(&dir).ok();
}
