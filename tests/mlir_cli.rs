//! `--mlir-verify` on `llmpu opt`, `llmpu import` and `llmpu compile`. In a default build the flag is
//! an error that says how to rebuild (never silently ignored); in a `--features mlir` build real MLIR
//! checks the IR and its diagnostics are located in the user's file. Corpus cases are skipped when
//! `$LLMPU_CORPUS` (default `../shared/corpus`) is absent.

use std::path::PathBuf;
use std::process::{Command, Output};

fn llmpu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llmpu"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run llmpu")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mlir_cli");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

fn corpus_model(name: &str) -> Option<PathBuf> {
    let root = std::env::var_os("LLMPU_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    let p = root.join("models").join(name).join("model.onnx");
    if p.is_file() {
        Some(p)
    } else {
        println!("corpus model {} not found; skipping", p.display());
        None
    }
}

const GOOD: &str = "compiler/tests/filetests/syntax/generic_module_form.mlir";

#[cfg(not(feature = "mlir"))]
#[test]
fn without_the_feature_mlir_verify_fails_saying_how_to_rebuild_and_writes_nothing() {
    let out = scratch("never.out");
    let _ = std::fs::remove_file(&out);
    let o = out.to_str().expect("utf-8 path");
    let mut runs = vec![
        llmpu(&["opt", "--mlir-verify", GOOD, "-o", o]),
        llmpu(&["compile", "--mlir-verify", GOOD, "-o", o]),
    ];
    if let Some(m) = corpus_model("gpt2-tiny-prefill") {
        runs.push(llmpu(&[
            "import",
            "--mlir-verify",
            m.to_str().expect("utf-8"),
            "-o",
            o,
        ]));
    }
    for r in runs {
        assert!(!r.status.success());
        let e = stderr(&r);
        assert!(
            e.contains("--mlir-verify") && e.contains("--features mlir"),
            "{e}"
        );
    }
    assert!(!out.exists(), "an output was written");
}

#[cfg(feature = "mlir")]
#[test]
fn opt_mlir_verify_accepts_good_ir_and_prints_it() {
    let plain = llmpu(&["opt", GOOD, "--passes", "canonicalize,cse"]);
    let checked = llmpu(&["opt", "--mlir-verify", GOOD, "--passes", "canonicalize,cse"]);
    assert!(checked.status.success(), "{}", stderr(&checked));
    assert_eq!(checked.stdout, plain.stdout);
}

#[cfg(feature = "mlir")]
#[test]
fn opt_mlir_verify_reports_mlirs_diagnostic_at_the_line_of_the_input() {
    let f = "compiler/tests/filetests/diagnostics/verify_return_type.mlir";
    let r = llmpu(&["opt", "--mlir-verify", f]);
    assert!(!r.status.success());
    let e = stderr(&r);
    assert!(
        e.starts_with(&format!(
            "{f}:3:5: error: type of return operand 0 ('tensor<4xf32>') doesn't match function \
             result type ('tensor<4xbf16>') in function @main [MLIR]\n"
        )),
        "{e}"
    );
}

#[cfg(feature = "mlir")]
#[test]
fn import_and_compile_mlir_verify_pass_on_a_corpus_model() {
    let Some(m) = corpus_model("gpt2-tiny-prefill") else {
        return;
    };
    let m = m.to_str().expect("utf-8");
    let ir = scratch("gpt2.mlir");
    let r = llmpu(&[
        "import",
        "--mlir-verify",
        m,
        "-o",
        ir.to_str().expect("utf-8"),
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(
        std::fs::read_to_string(&ir)
            .expect("written")
            .contains("graph.")
    );
    let bin = scratch("gpt2.llmpu");
    let r = llmpu(&[
        "compile",
        "--mlir-verify",
        m,
        "-o",
        bin.to_str().expect("utf-8"),
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(bin.is_file());
}
