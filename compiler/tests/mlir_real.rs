//! Real MLIR (cargo feature `mlir`, melior / MLIR 22) accepts what we print: every filetest input and
//! expected output, every corpus model as imported (symbolic, raw, bound with constants in full) and
//! every ONNX node-test model; the backend pipeline passes MLIR's verifier after every pass; and MLIR's
//! diagnostics on invalid modules come back as our errors located in our text (golden renders).
//!
//! Run: `cargo test --release -p llmpu-compiler --features mlir --test mlir_real`. Corpus tests are
//! skipped (with a message) when `$LLMPU_CORPUS` (default `../shared/corpus`) is absent.
#![cfg(feature = "mlir")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use llmpu_compiler::backend::{Options, Precision, compile};
use llmpu_compiler::ir::{Module, PrintOptions, print_module, print_module_with};
use llmpu_compiler::mlir::{MlirError, check_text, pass_verifier};
use llmpu_compiler::onnx::{
    ImportOptions, decode_model, graph_input_names, import_file, import_pipeline, read_tensor_file,
};
use llmpu_compiler::parser::parse_module;
use llmpu_compiler::pass::{Pass, PassError, PassManager, PassManagerOptions};
use llmpu_isa::Target;

fn filetests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filetests")
}

fn corpus() -> Option<PathBuf> {
    let p = std::env::var_os("LLMPU_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"));
    if p.is_dir() {
        Some(p)
    } else {
        println!(
            "corpus not found at {} (set LLMPU_CORPUS); skipping",
            p.display()
        );
        None
    }
}

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, ext, out);
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(p);
        }
    }
    out.sort();
}

/// Op counts per name, from our parser.
fn our_counts(src: &str) -> BTreeMap<String, usize> {
    let m = parse_module(src).expect("our parser accepts it");
    let mut c = BTreeMap::new();
    for op in m.walk_all() {
        *c.entry(m.op(op).name.clone()).or_insert(0) += 1;
    }
    c
}

/// Checks one text; returns a failure description.
fn check(label: &str, src: &str) -> Result<(), String> {
    let report = check_text(src).map_err(|e| format!("{label}:\n{}", e.render(label, src)))?;
    let counts = our_counts(src);
    if report.op_counts != counts {
        return Err(format!(
            "{label}: MLIR counted {:?}, we {counts:?}",
            report.op_counts
        ));
    }
    if report.ops != counts.values().sum::<usize>()
        || !report.generic.contains("\"builtin.module\"()")
    {
        return Err(format!(
            "{label}: report {} ops, generic form:\n{}",
            report.ops, report.generic
        ));
    }
    Ok(())
}

fn assert_all_pass(what: &str, failures: Vec<String>, checked: usize) {
    assert!(
        failures.is_empty(),
        "{} of {checked} {what} rejected by MLIR:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{checked} {what} accepted by MLIR");
}

#[test]
fn every_filetest_input_and_snapshot_passes_mlir_parse_verify_and_generic_round_trip() {
    let mut paths = vec![];
    files(&filetests(), "mlir", &mut paths);
    files(&filetests(), "snap", &mut paths);
    let mut failures = vec![];
    let mut checked = 0;
    for p in paths
        .iter()
        .filter(|p| !p.components().any(|c| c.as_os_str() == "diagnostics"))
    {
        let text = std::fs::read_to_string(p).expect("read");
        // An insta snapshot is a `---` delimited header followed by the body.
        let body = if p.extension().is_some_and(|x| x == "snap") {
            text.splitn(3, "---\n").nth(2).unwrap_or("").to_string()
        } else {
            text
        };
        checked += 1;
        if let Err(e) = check(&p.display().to_string(), &body) {
            failures.push(e);
        }
    }
    assert!(checked >= 50, "only {checked} filetest files found");
    assert_all_pass("filetest files", failures, checked);
}

fn models(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("models"))
        .expect("models folder")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    v.sort();
    v
}

fn run_pipeline(m: &mut Module, names: &[&str]) -> Result<(), PassError> {
    let mut pm = PassManager::from_names(names, PassManagerOptions::default())?;
    pm.run(m, &mut std::io::sink()).map(|_| ())
}

#[test]
fn imported_corpus_models_pass_mlir_symbolic_raw_and_bound_with_constants() {
    let Some(root) = corpus() else { return };
    let mut failures = vec![];
    let mut checked = 0;
    for dir in models(&root) {
        let path = dir.join("model.onnx");
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        // As `llmpu import` prints it: symbolic dims, import pipeline.
        let mut m = import_file(
            &path,
            &ImportOptions {
                allow_symbolic: true,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        run_pipeline(&mut m, &import_pipeline()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut texts = vec![(format!("{name} (symbolic)"), print_module(&m))];
        // `llmpu import --no-fold --passes ""`: the importer's raw output.
        let raw = import_file(
            &path,
            &ImportOptions {
                allow_symbolic: true,
                fold: false,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        texts.push((format!("{name} (raw)"), print_module(&raw)));
        // Bound to the test data's shapes, through the pipeline, constants printed in full.
        let proto = decode_model(&std::fs::read(&path).expect("read")).expect("decode");
        let mut opts = ImportOptions::default();
        for (i, n) in graph_input_names(&proto).iter().enumerate() {
            let f = dir.join(format!("test_data_set_0/input_{i}.pb"));
            let (_, t) = read_tensor_file(&f).expect("input");
            opts.shapes
                .insert(n.clone(), t.shape.iter().map(|&d| d as u64).collect());
        }
        let mut bound = import_file(&path, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        run_pipeline(&mut bound, &import_pipeline()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let full = print_module_with(
            &bound,
            PrintOptions {
                elide_large_constants: false,
            },
        );
        assert!(
            full.contains("dialect_resources") || !print_module(&bound).contains("dense_resource")
        );
        texts.push((format!("{name} (bound, constants in full)"), full));
        for (label, text) in texts {
            checked += 1;
            if let Err(e) = check(&label, &text) {
                failures.push(e);
            }
        }
    }
    assert!(checked >= 3, "no corpus models");
    assert_all_pass("imported model texts", failures, checked);
}

#[test]
fn onnx_node_test_models_pass_mlir_as_imported() {
    let Some(root) = corpus() else { return };
    let mut failures = vec![];
    let mut checked = 0;
    for folder in ["onnx-node", "onnx-node-extra"] {
        let Ok(rd) = std::fs::read_dir(root.join(folder)) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        dirs.sort();
        for dir in dirs {
            let path = dir.join("model.onnx");
            if !path.is_file() {
                continue;
            }
            // Models our importer rejects (unsupported op or type) are the conformance test's business.
            let Ok(mut m) = import_file(&path, &ImportOptions::default()) else {
                continue;
            };
            let label = dir.display().to_string();
            checked += 1;
            let result = run_pipeline(&mut m, &import_pipeline())
                .map_err(|e| format!("{label}: {e}"))
                .and_then(|()| check(&label, &print_module(&m)));
            if let Err(e) = result {
                failures.push(e);
            }
        }
    }
    assert!(checked >= 100, "only {checked} node-test models imported");
    assert_all_pass("node-test models", failures, checked);
}

#[test]
fn backend_pipeline_passes_mlir_after_every_pass() {
    let Some(root) = corpus() else { return };
    let dir = root.join("models/gpt2-tiny-prefill");
    let mut m = import_file(&dir.join("model.onnx"), &ImportOptions::default())
        .unwrap_or_else(|e| panic!("import: {e}"));
    run_pipeline(&mut m, &import_pipeline()).expect("import pipeline");
    let o = Options {
        target: Target::preset("edge").expect("preset"),
        precision: Precision::Bf16,
    };
    let opts = PassManagerOptions {
        extra_verifier: Some(pass_verifier().expect("built with mlir")),
        ..Default::default()
    };
    let program = compile(&mut m, &o, opts, &mut std::io::sink())
        .unwrap_or_else(|e| panic!("compile with MLIR after every pass: {e}"))
        .expect("program");
    assert!(program.cores.iter().map(Vec::len).sum::<usize>() > 0);
}

/// Renders MLIR's verdict on `src` the way `llmpu opt --mlir-verify` does.
fn rejection(file: &str, src: &str) -> (MlirError, String) {
    let e = check_text(src).expect_err("MLIR must reject it");
    let r = e.render(file, src);
    (e, r)
}

#[test]
fn a_return_type_mismatch_is_mlirs_verifier_error_at_the_return_op() {
    let file = "diagnostics/verify_return_type.mlir";
    let src = std::fs::read_to_string(filetests().join(file)).expect("read");
    let (e, r) = rejection(file, &src);
    assert!(matches!(e, MlirError::Verify(_)), "{e:?}");
    assert_eq!(
        r,
        "diagnostics/verify_return_type.mlir:3:5: error: type of return operand 0 ('tensor<4xf32>') \
         doesn't match function result type ('tensor<4xbf16>') in function @main [MLIR]\n    \
         func.return %arg0 : tensor<4xf32> loc(\"ret\")\n    ^~~~~~~~~~~\n\
         note: 'func.return' op location: loc(\"ret\")\n"
    );
}

#[test]
fn a_type_mismatch_across_uses_is_mlirs_parser_error_at_the_second_use() {
    let file = "diagnostics/parse_operand_type_mismatch.mlir";
    let src = std::fs::read_to_string(filetests().join(file)).expect("read");
    let (e, r) = rejection(file, &src);
    assert!(matches!(e, MlirError::Parse(_)), "{e:?}");
    assert_eq!(
        r,
        "diagnostics/parse_operand_type_mismatch.mlir:3:23: error: use of value '%arg0' expects \
         different type than prior uses: 'tensor<4xbf16>' vs 'tensor<4xf32>' [MLIR]\n    \
         %0 = \"graph.relu\"(%arg0) : (tensor<4xbf16>) -> tensor<4xf32>\n                      ^\n\
         note: 2:19: prior use here\n"
    );
}

#[test]
fn a_redefined_function_is_located_at_both_definitions() {
    let src = "module {\n  func.func @main(%arg0: tensor<4xf32>) -> tensor<4xf32> {\n    \
               func.return %arg0 : tensor<4xf32> loc(unknown)\n  } loc(\"first\")\n  \
               func.func @main(%arg0: tensor<4xf32>) -> tensor<4xf32> {\n    \
               func.return %arg0 : tensor<4xf32> loc(unknown)\n  } loc(\"second\")\n}\n";
    let (e, r) = rejection("dup.mlir", src);
    assert!(matches!(e, MlirError::Verify(_)), "{e:?}");
    assert_eq!(
        r,
        "dup.mlir:5:3: error: redefinition of symbol named 'main' [MLIR]\n  \
         func.func @main(%arg0: tensor<4xf32>) -> tensor<4xf32> {\n  ^~~~~~~~~~~~~~~\n\
         note: 'func.func' op location: loc(\"second\")\n\
         note: 2:3: see existing symbol definition here\n"
    );
}

#[test]
fn an_empty_function_body_is_rejected_at_the_function() {
    let src = "module {\n  func.func @main(%arg0: tensor<4xf32>) -> tensor<4xf32> {\n  } loc(\"main\")\n}\n";
    let (e, r) = rejection("empty.mlir", src);
    assert!(matches!(e, MlirError::Verify(_)), "{e:?}");
    assert_eq!(
        r,
        "empty.mlir:2:3: error: empty block: expect at least a terminator [MLIR]\n  \
         func.func @main(%arg0: tensor<4xf32>) -> tensor<4xf32> {\n  ^~~~~~~~~~~~~~~\n\
         note: 'func.func' op location: loc(\"main\")\n"
    );
}

#[test]
fn a_return_in_a_region_of_another_op_is_rejected_at_the_return() {
    let src = "module {\n  func.func @main(%arg0: tensor<4xf32>) -> tensor<4xf32> {\n    \
               %0 = \"graph.r\"() ({\n      func.return %arg0 : tensor<4xf32> loc(\"inner\")\n    \
               }) : () -> tensor<4xf32> loc(\"r\")\n    func.return %0 : tensor<4xf32> loc(unknown)\n  \
               } loc(\"main\")\n}\n";
    let (e, r) = rejection("region.mlir", src);
    assert!(matches!(e, MlirError::Verify(_)), "{e:?}");
    assert_eq!(
        r,
        "region.mlir:4:7: error: 'func.return' op expects parent op 'func.func' [MLIR]\n      \
         func.return %arg0 : tensor<4xf32> loc(\"inner\")\n      ^~~~~~~~~~~\n\
         note: 'func.return' op location: loc(\"inner\")\n"
    );
}

#[test]
fn a_use_before_its_definition_is_located_by_the_ops_location_when_our_parser_refuses_it() {
    // Our parser rejects the forward reference, so MLIR's ops cannot be matched to ours: the
    // diagnostic is placed at the op's unique `loc(...)` in the text.
    let src = "module {\n  func.func @main(%arg0: tensor<4xf32>) -> tensor<4xf32> {\n    \
               %0 = \"graph.r\"(%1) : (tensor<4xf32>) -> tensor<4xf32> loc(\"a\")\n    \
               %1 = \"graph.r\"(%arg0) : (tensor<4xf32>) -> tensor<4xf32> loc(\"b\")\n    \
               func.return %0 : tensor<4xf32> loc(unknown)\n  } loc(\"main\")\n}\n";
    let (e, r) = rejection("dom.mlir", src);
    assert!(matches!(e, MlirError::Parse(_)), "{e:?}");
    assert_eq!(
        r,
        format!(
            "dom.mlir:3:59: error: operand #0 does not dominate this use [MLIR]\n    \
             %0 = \"graph.r\"(%1) : (tensor<4xf32>) -> tensor<4xf32> loc(\"a\")\n{}^~~~~~~~\n\
             note: 4:62: operand defined here (op in the same block)\n",
            " ".repeat(58)
        )
    );
}

#[test]
fn text_neither_parser_takes_is_a_located_parse_error() {
    let src = "module {\n  func.func @main( -> x\n}\n";
    let (e, r) = rejection("bad.mlir", src);
    assert!(matches!(e, MlirError::Parse(_)), "{e:?}");
    assert!(r.starts_with("bad.mlir:2:19: error: "), "{r}");
}

#[test]
fn a_nul_byte_is_a_typed_error_not_a_panic() {
    let src = "module {\n}\0\n";
    let (e, r) = rejection("nul.mlir", src);
    assert!(matches!(e, MlirError::NulByte { offset: 10 }), "{e:?}");
    assert!(r.starts_with("nul.mlir:2:2: error: "), "{r}");
}

/// Gives the return operand a type the function does not return (our verifier is off, so only MLIR
/// can notice).
struct BreakReturnType;

impl Pass for BreakReturnType {
    fn name(&self) -> &'static str {
        "break-return-type"
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        let ret = m
            .walk_all()
            .into_iter()
            .find(|&o| m.op(o).name == "func.return")
            .expect("a return");
        let v = m.op(ret).operands[0];
        let t =
            parse_module("module {\n  func.func @f(%a: tensor<7xi8>) {\n    func.return\n  }\n}\n")
                .expect("parse");
        let arg = m_arg_type(&t);
        m.set_value_type(v, arg);
        Ok(())
    }
}

fn m_arg_type(m: &Module) -> llmpu_compiler::ir::Type {
    let f = m.functions()[0];
    let b = m.entry_block(f).expect("body");
    m.value_type(m.block(b).args[0]).clone()
}

#[test]
fn the_pass_manager_names_the_pass_after_which_mlir_rejects_the_ir() {
    let src =
        std::fs::read_to_string(filetests().join("syntax/generic_module_form.mlir")).expect("read");
    let mut m = parse_module(&src).expect("parse");
    let mut pm = PassManager::from_names(
        &["canonicalize"],
        PassManagerOptions {
            verify_each: false,
            extra_verifier: Some(pass_verifier().expect("built with mlir")),
            ..Default::default()
        },
    )
    .expect("pipeline");
    pm.add(Box::new(BreakReturnType));
    match pm.run(&mut m, &mut std::io::sink()) {
        Err(PassError::ExtraVerifyFailed {
            pass,
            verifier,
            message,
        }) => {
            assert_eq!(pass, "break-return-type");
            assert_eq!(verifier, "MLIR");
            assert!(
                message.starts_with("<printed IR>:4:5: error: "),
                "{message}"
            );
            assert!(
                message.contains("doesn't match function result type"),
                "{message}"
            );
        }
        other => panic!("expected MLIR to reject the IR after break-return-type: {other:?}"),
    }
}

#[test]
fn mutated_filetests_give_a_result_or_a_located_error_never_a_crash() {
    let mut paths = vec![];
    files(&filetests(), "mlir", &mut paths);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize % n.max(1)
    };
    let junk = [
        "}",
        "{",
        "(",
        "%0",
        "\"",
        "^bb1:",
        "loc(",
        ":",
        "tensor<",
        "dense_resource<x>",
        "\u{e9}",
    ];
    let (mut accepted, mut rejected) = (0, 0);
    for p in &paths {
        let src = std::fs::read_to_string(p).expect("read");
        for _ in 0..20 {
            let mut s = src.clone();
            let mut at = next(s.len());
            while !s.is_char_boundary(at) {
                at -= 1;
            }
            match next(3) {
                0 => s.truncate(at),
                1 => s.insert_str(at, junk[next(junk.len())]),
                _ => {
                    let mut end = (at + 1 + next(8)).min(s.len());
                    while !s.is_char_boundary(end) {
                        end += 1;
                    }
                    s.replace_range(at..end, "");
                }
            }
            match check_text(&s) {
                Ok(_) => accepted += 1,
                Err(e) => {
                    rejected += 1;
                    // MLIR's parser always gives a place in the text; the verifier's is mapped.
                    if let Some(d) = e.diagnostics().first() {
                        assert!(d.span.is_some(), "unlocated:\n{}", e.render("m.mlir", &s));
                    }
                }
            }
        }
    }
    assert!(rejected > 0 && accepted + rejected == paths.len() * 20);
    println!("{accepted} mutants accepted, {rejected} rejected");
}
