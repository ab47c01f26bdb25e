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
