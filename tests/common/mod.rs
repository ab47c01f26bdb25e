//! Helpers shared by the CLI integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The test corpus (`LLMPU_CORPUS`, default `../shared/corpus` beside the project) when its
/// folder `sub` exists. Otherwise the test is skipped with a message — except under CI (`CI`
/// set), where a missing corpus is a failure, so a misconfigured run cannot pass by skipping.
pub fn corpus(sub: &str) -> Option<PathBuf> {
    let c = std::env::var_os("LLMPU_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    if c.join(sub).is_dir() {
        return Some(c);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI: corpus folder {} not found (set LLMPU_CORPUS)",
        c.join(sub).display()
    );
    eprintln!(
        "SKIPPED: corpus folder {} not found (set LLMPU_CORPUS)",
        c.join(sub).display()
    );
    None
}

/// Runs `llmpu args…` in the project folder and fails the test, with its output, unless it
/// succeeds.
pub fn llmpu_ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) {
    llmpu_out(args);
}

/// [`llmpu_ok`], returning the standard output.
pub fn llmpu_out<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_llmpu"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run llmpu");
    assert!(
        o.status.success(),
        "llmpu {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Deterministic values in [-1, 1) (64-bit LCG).
pub fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `relu(x · w + b)` with `x: [m, k]`, `w: [k, n]`, as graph IR.
pub fn matmul_model(m: u64, k: u64, n: u64) -> String {
    format!(
        r#"module {{
  func.func @main(%x: tensor<{m}x{k}xf32>, %w: tensor<{k}x{n}xf32>, %b: tensor<{n}xf32>) -> tensor<{m}x{n}xf32> {{
    %p = "graph.matmul"(%x, %w) : (tensor<{m}x{k}xf32>, tensor<{k}x{n}xf32>) -> tensor<{m}x{n}xf32> loc("MatMul")
    %a = "graph.add"(%p, %b) : (tensor<{m}x{n}xf32>, tensor<{n}xf32>) -> tensor<{m}x{n}xf32> loc("Add")
    %r = "graph.relu"(%a) : (tensor<{m}x{n}xf32>) -> tensor<{m}x{n}xf32> loc("Relu")
    func.return %r : tensor<{m}x{n}xf32> loc(unknown)
  }} loc("main")
}}
"#
    )
}

/// Attention over `[1, h, s, d]` query and key/value tensors, as graph IR.
pub fn attention_model(h: u64, sq: u64, skv: u64, d: u64, causal: bool) -> String {
    let (q, kv) = (
        format!("tensor<1x{h}x{sq}x{d}xf32>"),
        format!("tensor<1x{h}x{skv}x{d}xf32>"),
    );
    format!(
        r#"module {{
  func.func @main(%q: {q}, %k: {kv}, %v: {kv}) -> {q} {{
    %o = "graph.fused_attention"(%q, %k, %v) {{causal = {causal}}} : ({q}, {kv}, {kv}) -> {q} loc("Attention")
    func.return %o : {q} loc(unknown)
  }} loc("main")
}}
"#
    )
}

/// Runs the `llmpu` binary from the project folder.
pub fn llmpu(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_llmpu"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run llmpu")
}

/// Standard output then standard error of a run, as text.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A path for file `name` in the test binary's scratch folder `dir` (created).
pub fn scratch_in(dir: &str, name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(dir);
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}
