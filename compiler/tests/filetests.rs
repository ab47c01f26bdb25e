//! Filetests: `tests/filetests/<pass>/<case>.mlir` is run through the pass named by its folder (or the
//! pipeline in a `// passes: a,b` first-line header; the `roundtrip` folder runs none) and the printed
//! result is compared with the insta snapshot `<case>.snap` beside it. `diagnostics/` holds inputs that
//! must fail; their rendered diagnostics (`file:line:col`, source line, caret, message) are the snapshot.
//!
//! Re-bless on purpose with `INSTA_UPDATE=always cargo test -p llmpu-compiler --test filetests`
//! (CI sets `CI=true`, so a mismatch fails instead of writing).

use std::path::{Path, PathBuf};

use llmpu_compiler::diag::{Diagnostic, render_verify_errors};
use llmpu_compiler::ir::{print_module, verify};
use llmpu_compiler::parser::parse_module;
use llmpu_compiler::pass::{PassError, PassManager, PassManagerOptions};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filetests")
}

fn inputs(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("cannot read filetests/{dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "mlir"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no filetests in {dir}");
    v
}

fn pipeline_of(src: &str, folder: &str) -> String {
    match src
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("// passes:"))
    {
        Some(p) => p.trim().to_string(),
        None if folder == "roundtrip" || folder == "syntax" => String::new(),
        None => folder.to_string(),
    }
}

fn display_name(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn snapshot(dir: &str, path: &Path, content: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root().join(dir));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.set_input_file(path);
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("case")
        .to_string();
    settings.bind(|| insta::assert_snapshot!(name, content));
}

/// Runs the pipeline on one file; returns the printed output or the rendered diagnostics.
fn run_case(path: &Path, folder: &str) -> Result<String, String> {
    let src = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let name = display_name(path);
    let mut m = parse_module(&src).map_err(|e| e.diagnostic.render(&name, &src))?;
    verify(&m).map_err(|errs| render_verify_errors(&errs, &name, &src))?;
    let opts = PassManagerOptions {
        verify_each: true,
        ..Default::default()
    };
    let mut pm = PassManager::parse_pipeline(&pipeline_of(&src, folder), opts)
        .map_err(|e| Diagnostic::error(e.to_string(), None).render(&name, &src))?;
    pm.run(&mut m, &mut std::io::sink()).map_err(|e| match e {
        PassError::VerifyFailed { pass, errors } => {
            format!(
                "after pass '{pass}':\n{}",
                render_verify_errors(&errors, &name, &src)
            )
        }
        other => Diagnostic::error(other.to_string(), None).render(&name, &src),
    })?;
    Ok(print_module(&m))
}

fn assert_reprints_identically(text: &str, what: &str) {
    let m = parse_module(text).unwrap_or_else(|e| {
        panic!(
            "{what}: printed IR does not parse:\n{}",
            e.diagnostic.render(what, text)
        )
    });
    assert_eq!(
        print_module(&m),
        text,
        "{what}: print -> parse -> print is not the identity"
    );
}

fn run_folder(folder: &str) {
    for path in inputs(folder) {
        let out = run_case(&path, folder)
            .unwrap_or_else(|d| panic!("{} failed:\n{d}", display_name(&path)));
        assert_reprints_identically(&out, &display_name(&path));
        snapshot(folder, &path, &out);
    }
}

#[test]
fn roundtrip_filetests_match_snapshots() {
    run_folder("roundtrip");
}

#[test]
fn syntax_filetests_match_snapshots() {
    run_folder("syntax");
}

#[test]
fn canonicalize_filetests_match_snapshots() {
    run_folder("canonicalize");
}

#[test]
fn cse_filetests_match_snapshots() {
    run_folder("cse");
}

#[test]
fn dce_filetests_match_snapshots() {
    run_folder("dce");
}

#[test]
fn fuse_attention_filetests_match_snapshots() {
    run_folder("fuse-attention");
}

#[test]
fn decompose_attention_filetests_match_snapshots() {
    run_folder("decompose-attention");
}

#[test]
fn decompose_rotary_filetests_match_snapshots() {
    run_folder("decompose-rotary");
}

#[test]
fn kv_layout_filetests_match_snapshots() {
    run_folder("kv-layout");
}

#[test]
fn legalize_filetests_match_snapshots() {
    run_folder("legalize");
}

#[test]
fn split_projections_filetests_match_snapshots() {
    run_folder("split-projections");
}

#[test]
fn probe_values_filetests_match_snapshots() {
    run_folder("probe-values");
}

#[test]
fn fuse_norm_filetests_match_snapshots() {
    run_folder("fuse-norm");
}

#[test]
fn fuse_rotary_filetests_match_snapshots() {
    run_folder("fuse-rotary");
}

#[test]
fn fuse_matmul_epilogue_filetests_match_snapshots() {
    run_folder("fuse-matmul-epilogue");
}

#[test]
fn tile_filetests_match_snapshots() {
    run_folder("tile");
}

#[test]
fn plan_memory_filetests_match_snapshots() {
    run_folder("plan-memory");
}

#[test]
fn lower_tile_filetests_match_snapshots() {
    run_folder("lower-tile");
}

#[test]
fn distribute_cores_filetests_match_snapshots() {
    run_folder("distribute-cores");
}

#[test]
fn defer_epilogues_filetests_match_snapshots() {
    run_folder("defer-epilogues");
}

#[test]
fn lower_llmpu_filetests_match_snapshots() {
    run_folder("lower-llmpu");
}

#[test]
fn shape_inference_filetests_match_snapshots() {
    run_folder("shape-inference");
}

#[test]
fn fold_constants_filetests_match_snapshots() {
    run_folder("fold-constants");
}

#[test]
fn diagnostics_match_golden_output() {
    for path in inputs("diagnostics") {
        match run_case(&path, "diagnostics") {
            Ok(out) => panic!(
                "{} was expected to fail but produced:\n{out}",
                display_name(&path)
            ),
            Err(diag) => snapshot("diagnostics", &path, &diag),
        }
    }
}

/// Every filetest input (outside diagnostics) and every expected output prints → parses → prints
/// identically.
#[test]
fn every_filetest_input_round_trips_through_the_printer() {
    for folder in [
        "roundtrip",
        "syntax",
        "canonicalize",
        "cse",
        "dce",
        "fuse-attention",
        "fuse-norm",
        "fuse-matmul-epilogue",
        "tile",
        "plan-memory",
        "lower-llmpu",
        "shape-inference",
        "fold-constants",
    ] {
        for path in inputs(folder) {
            let src = std::fs::read_to_string(&path).unwrap_or_default();
            let m = parse_module(&src)
                .unwrap_or_else(|e| panic!("{}", e.diagnostic.render(&display_name(&path), &src)));
            assert_reprints_identically(&print_module(&m), &display_name(&path));
        }
    }
}

/// Inputs in `roundtrip/` are written in canonical form: with no passes, the output equals the input
/// (minus leading `//` comment lines).
#[test]
fn roundtrip_inputs_print_back_unchanged() {
    for path in inputs("roundtrip") {
        let src = std::fs::read_to_string(&path).unwrap_or_default();
        let body: String = src
            .lines()
            .filter(|l| !l.starts_with("//"))
            .map(|l| format!("{l}\n"))
            .collect();
        let m = parse_module(&src)
            .unwrap_or_else(|e| panic!("{}", e.diagnostic.render(&display_name(&path), &src)));
        assert_eq!(
            print_module(&m),
            body,
            "{} does not print back unchanged",
            display_name(&path)
        );
    }
}
