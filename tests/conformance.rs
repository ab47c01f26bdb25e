//! `llmpu conformance` on the shared corpus (`$LLMPU_CORPUS`, default `../shared/corpus` beside the
//! workspace): the ONNX node tests, the extra node tests and the exported models all pass through the
//! importer + reference interpreter. Skipped (with a message) when the corpus is absent. The node
//! tests kept in the repository (`tests/onnx-node`) run through the interpreter and the emulator.

use std::path::Path;
use std::process::Command;

mod common;
use common::corpus;

/// Runs the command on a corpus folder; returns (passed, failed, unsupported) from its summary line.
fn conformance(folder: &str) -> Option<(u32, u32, u32)> {
    Some(summary(&corpus("")?.join(folder), "interpreter"))
}

/// Runs `llmpu conformance -q --backend <backend> <dir>`; returns (passed, failed, unsupported).
fn summary(dir: &Path, backend: &str) -> (u32, u32, u32) {
    summary_of(dir, backend, None)
}

/// [`summary`] of the cases whose name contains `filter` (`--filter`), when given.
fn summary_of(dir: &Path, backend: &str, filter: Option<&str>) -> (u32, u32, u32) {
    let folder = dir.display();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llmpu"));
    cmd.args(["conformance", "-q", "--backend", backend]);
    if let Some(f) = filter {
        cmd.args(["--filter", f]);
    }
    let out = cmd.arg(dir).output().expect("run llmpu");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let last = text.lines().last().unwrap_or_default().to_string();
    let nums: Vec<u32> = last
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    assert_eq!(nums.len(), 3, "unexpected summary in:\n{text}");
    println!("{folder} ({backend}): {last}");
    assert_eq!(
        out.status.success(),
        nums[1] == 0,
        "exit status must reflect failures:\n{text}"
    );
    (nums[0], nums[1], nums[2])
}

/// `graph.softplus` was added through its definition row alone (`compiler/src/dialects/graph.rs`);
/// the repository's Softplus node tests (`tests/onnx-node/make.py`, including `x` past 88.7 where
/// `e^x` overflows f32) pass on the reference interpreter and, lowered to the vector unit's
/// `max(x, 0) + ln(1 + e^-|x|)`, on the emulator.
#[test]
fn repository_node_tests_pass_on_interpreter_and_emulator() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/onnx-node");
    for backend in ["interpreter", "emulator"] {
        assert_eq!(summary(&dir, backend), (3, 0, 0), "{backend}");
    }
}

#[test]
fn onnx_node_tests_pass() {
    if let Some((pass, fail, _)) = conformance("onnx-node") {
        assert_eq!(fail, 0);
        assert!(pass >= 590, "only {pass} passed");
    }
}

/// The machine's storage types beyond the first eight (i16, u16, u32, u64, f64) and the lowerings
/// built on the rounding instructions (truncating integer Div, variadic Max/Min) compile and pass
/// on the emulator: every selected case passes, none is refused, none fails.
#[test]
fn storage_type_and_truncation_node_tests_pass_on_the_emulator() {
    let Some(root) = corpus("onnx-node") else {
        return;
    };
    let dir = root.join("onnx-node");
    for (filter, cases) in [
        ("test_div", 10),
        ("uint32", 8),
        ("uint64", 8),
        ("DOUBLE", 4),
        ("float64", 2),
        ("max_int16", 1),
        ("min_int16", 1),
        ("mul_int16", 1),
        ("add_uint16", 1),
        ("equal_uint16", 1),
        ("max_example", 7),
        ("min_example", 1),
    ] {
        assert_eq!(
            summary_of(&dir, "emulator", Some(filter)),
            (cases, 0, 0),
            "{filter}"
        );
    }
}

#[test]
fn extra_node_tests_pass() {
    if let Some((pass, fail, unsup)) = conformance("onnx-node-extra") {
        assert_eq!((pass, fail, unsup), (98, 0, 0));
    }
}

#[test]
fn exported_models_pass() {
    if let Some((pass, fail, unsup)) = conformance("models") {
        assert_eq!((fail, unsup), (0, 0));
        assert!(pass >= 11, "only {pass} models passed");
    }
}
