//! Tests of the public API: builders, large-constant printing (elided and full), and the pass manager's
//! options (dumps, stop-after, print-ir, verification naming the pass, unknown pass names).

use std::sync::Arc;

use llmpu_compiler::dialects::{builtin, graph};
use llmpu_compiler::ir::{
    Attribute, Location, Module, OpSpec, PrintOptions, ScalarType, TensorType, Type, print_module,
    print_module_with, verify,
};
use llmpu_compiler::parser::parse_module;
use llmpu_compiler::pass::{Pass, PassError, PassManager, PassManagerOptions};

fn f32s(n: usize) -> Arc<[u8]> {
    (0..n)
        .flat_map(|i| (i as f32).to_le_bytes())
        .collect::<Vec<u8>>()
        .into()
}

/// A function `main(x: 16x64) -> 16x32` computing `relu(x @ w)` with a large weight constant.
fn sample() -> Module {
    let mut m = Module::new();
    let x = Type::tensor(&[16, 64], ScalarType::F32);
    let out = Type::tensor(&[16, 32], ScalarType::F32);
    let (_f, entry) =
        builtin::build_func(&mut m, "main", vec![x], vec![out], Location::name("main"));
    let arg = m.block(entry).args[0];
    let w = graph::constant(
        &mut m,
        entry,
        "w.q_proj",
        TensorType::new(&[64, 32], ScalarType::F32),
        f32s(64 * 32),
        Location::name("w"),
    );
    let mm = graph::matmul(&mut m, entry, arg, w, Location::name("MatMul_0")).unwrap();
    let r = graph::unary(
        &mut m,
        entry,
        graph::Relu::NAME,
        mm,
        Location::name("Relu_0"),
    );
    builtin::build_return(&mut m, entry, &[r], Location::Unknown);
    m
}

#[test]
fn builders_produce_verified_ir() {
    let m = sample();
    verify(&m).unwrap();
}

#[test]
fn large_constants_are_elided_by_default_and_elided_dumps_reprint_identically() {
    let text = print_module(&sample());
    assert!(
        text.contains("dense_resource<w.q_proj> : tensor<64x32xf32>"),
        "{text}"
    );
    assert!(!text.contains("dialect_resources"));
    let m = parse_module(&text).unwrap();
    assert!(
        m.blobs
            .get(m.blobs.find("w.q_proj").unwrap())
            .bytes
            .is_none(),
        "elided blob holds no data"
    );
    assert_eq!(print_module(&m), text);
}

#[test]
fn full_printing_writes_the_resource_trailer_and_round_trips_the_data() {
    let full = PrintOptions {
        elide_large_constants: false,
    };
    let m0 = sample();
    let text = print_module_with(&m0, full);
    assert!(text.contains("dialect_resources: {"), "{text}");
    let m = parse_module(&text).unwrap();
    let id = m.blobs.find("w.q_proj").unwrap();
    assert_eq!(m.blobs.get(id).bytes.as_deref(), Some(&f32s(64 * 32)[..]));
    assert_eq!(print_module_with(&m, full), text);
}

#[test]
fn pass_manager_dumps_input_and_each_pass_in_order() {
    let dir = std::env::temp_dir().join(format!("llmpu-dump-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = PassManagerOptions {
        dump_ir: Some(dir.clone()),
        ..Default::default()
    };
    let mut pm = PassManager::parse_pipeline("canonicalize, cse,dce", opts).unwrap();
    let mut m = sample();
    pm.run(&mut m, &mut std::io::sink()).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "00-input.mlir",
            "01-canonicalize.mlir",
            "02-cse.mlir",
            "03-dce.mlir"
        ]
    );
    for n in &names {
        let text = std::fs::read_to_string(dir.join(n)).unwrap();
        assert_eq!(
            print_module(&parse_module(&text).unwrap()),
            text,
            "{n} does not reparse identically"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stop_after_ends_the_pipeline_and_print_ir_after_writes_to_the_log() {
    let opts = PassManagerOptions {
        stop_after: Some("cse".into()),
        print_ir_after: vec!["canonicalize".into()],
        print_ir_before: vec!["cse".into()],
        time_passes: true,
        ..Default::default()
    };
    let mut pm = PassManager::parse_pipeline("canonicalize,cse,dce", opts).unwrap();
    let mut log = Vec::new();
    let report = pm.run(&mut sample(), &mut log).unwrap();
    assert_eq!(report.stopped_after.as_deref(), Some("cse"));
    assert_eq!(report.timings.len(), 2);
    let log = String::from_utf8(log).unwrap();
    assert!(
        log.contains("// -----// IR Dump After canonicalize //----- //\nmodule {"),
        "{log}"
    );
    assert!(
        log.contains("// -----// IR Dump Before cse //----- //"),
        "{log}"
    );
    assert!(log.contains("Pass execution timing report"), "{log}");
}

#[test]
fn print_option_naming_a_pass_outside_the_pipeline_is_an_error() {
    let opts = PassManagerOptions {
        stop_after: Some("dce".into()),
        ..Default::default()
    };
    let mut pm = PassManager::parse_pipeline("cse", opts).unwrap();
    let e = pm.run(&mut sample(), &mut std::io::sink()).unwrap_err();
    assert!(matches!(e, PassError::NotInPipeline { .. }), "{e}");
}

#[test]
fn unknown_pass_name_lists_the_valid_ones() {
    let e = PassManager::parse_pipeline("cse,bogus", PassManagerOptions::default())
        .err()
        .unwrap();
    let names: Vec<&str> = llmpu_compiler::passes::registry()
        .iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(
        e.to_string(),
        format!("unknown pass 'bogus'; valid passes: {}", names.join(", "))
    );
}

struct BreakTypes;
impl Pass for BreakTypes {
    fn name(&self) -> &'static str {
        "break-types"
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        let f = m.functions()[0];
        let entry = m.entry_block(f).unwrap();
        let arg = m.block(entry).args[0];
        let bad = m.create_op(
            OpSpec::new("graph.relu", Location::name("bad"))
                .operands(&[arg])
                .results(vec![Type::tensor(&[3], ScalarType::F32)]),
        );
        let first = m.block(entry).ops[0];
        m.insert_op_before(first, bad);
        Ok(())
    }
}

#[test]
fn verifier_failure_after_a_pass_names_the_pass() {
    let mut pm = PassManager::new(PassManagerOptions {
        verify_each: true,
        ..Default::default()
    });
    pm.add(Box::new(BreakTypes));
    let e = pm.run(&mut sample(), &mut std::io::sink()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("IR failed to verify after pass 'break-types'"),
        "{msg}"
    );
    assert!(
        msg.contains("'graph.relu' op result shape [3] does not match the expected [16, 64]"),
        "{msg}"
    );
}

#[test]
fn attributes_hold_constant_data_by_reference() {
    let m = sample();
    let copy = m.clone();
    let id = m.blobs.find("w.q_proj").unwrap();
    let (a, b) = (
        m.blobs.get(id).bytes.clone().unwrap(),
        copy.blobs.get(id).bytes.clone().unwrap(),
    );
    assert!(
        Arc::ptr_eq(&a, &b),
        "cloning a module must not copy constant data"
    );
    assert!(matches!(m.attr(m.functions()[0], "sym_name"), Some(Attribute::Str(s)) if s == "main"));
}
