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
