//! The `llmpu` command line as a user runs it: exit codes, what is printed, files written.

use std::path::{Path, PathBuf};

mod common;
use common::{llmpu, scratch_in, text};

fn scratch(name: &str) -> PathBuf {
    scratch_in("cli", name)
}

#[test]
fn targets_lists_both_presets_and_prints_one_as_toml() {
    let o = llmpu(&["targets"]);
    assert!(o.status.success());
    let t = text(&o);
    assert!(t.contains("edge") && t.contains("datacenter"), "{t}");
    let o = llmpu(&["targets", "datacenter"]);
    assert!(text(&o).contains("cores = 8"));
}

#[test]
fn a_target_file_missing_a_field_is_rejected_naming_it() {
    let path = scratch("no_lanes.toml");
    let edge = String::from_utf8(llmpu(&["targets", "edge"]).stdout).unwrap();
    std::fs::write(&path, edge.replace("lanes = 32\n", "")).unwrap();
    let o = llmpu(&["targets", path.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("lanes"), "{}", text(&o));
}

#[test]
fn asm_then_disasm_then_asm_gives_the_identical_binary() {
    let (bin, s2, bin2) = (
        scratch("softmax.llmpu"),
        scratch("softmax_again.s"),
        scratch("softmax_again.llmpu"),
    );
    let p = |p: &Path| p.to_str().unwrap().to_string();
    assert!(
        llmpu(&["asm", "examples/asm/softmax.s", "-o", &p(&bin)])
            .status
            .success()
    );
    assert!(llmpu(&["disasm", &p(&bin), "-o", &p(&s2)]).status.success());
    assert!(llmpu(&["asm", &p(&s2), "-o", &p(&bin2)]).status.success());
    assert_eq!(std::fs::read(&bin).unwrap(), std::fs::read(&bin2).unwrap());
}

#[test]
fn a_decode_binary_survives_disasm_then_asm_with_its_kv_region_and_bounds() {
    // The paged KV region and the index bounds are part of the program: a disassembled decode
    // binary assembles back to the identical bytes (it used to lose both).
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("zoo/models/mistral-tiny-dyn-decode/model.onnx");
    let (bin, s2, bin2) = (
        scratch("decode.llmpu"),
        scratch("decode_again.s"),
        scratch("decode_again.llmpu"),
    );
    let p = |p: &Path| p.to_str().unwrap().to_string();
    let ok = |args: &[&str]| {
        let o = llmpu(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    };
    ok(&[
        "compile",
        &p(&model),
        "--max-context",
        "32",
        "--dim",
        "batch_size=1",
        "-o",
        &p(&bin),
    ]);
    ok(&["disasm", &p(&bin), "-o", &p(&s2)]);
    let asm = std::fs::read_to_string(&s2).unwrap();
    assert!(
        asm.contains("\n.kv f32 @ ")
            && asm.contains("\n.kv_slot ")
            && asm.contains("\n.bound input_ids "),
        "{asm:.2000}"
    );
    ok(&["asm", &p(&s2), "-o", &p(&bin2)]);
    assert_eq!(std::fs::read(&bin).unwrap(), std::fs::read(&bin2).unwrap());
}

#[test]
fn bad_assembly_fails_with_a_located_diagnostic() {
    let path = scratch("bad.s");
    std::fs::write(&path, ".core 0\n    li r1, 5\n    lii r2, 3\n    halt\n").unwrap();
    let o = llmpu(&["asm", path.to_str().unwrap(), "-o", "/dev/null"]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("bad.s:3:5"), "{t}");
    assert!(t.contains("lii"), "{t}");
}

#[test]
fn run_checks_outputs_writes_them_and_reports() {
    let dir = scratch("softmax_out");
    let o = llmpu(&[
        "run",
        "examples/asm/softmax.s",
        "--input",
        "X=examples/asm/data/softmax_X.npy",
        "--expect",
        "Y=examples/asm/data/softmax_Y.npy",
        "--output-dir",
        dir.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("ok   Y"), "{t}");
    assert!(t.contains("cycles"), "{t}");
    assert!(dir.join("Y.npy").exists());
}

#[test]
fn run_fails_when_an_output_differs_from_its_reference() {
    let o = llmpu(&[
        "run",
        "examples/asm/softmax.s",
        "--input",
        "X=examples/asm/data/softmax_X.npy",
        "--expect",
        "Y=examples/asm/data/softmax_X.npy",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("FAIL Y"), "{}", text(&o));
}

#[test]
fn a_missing_input_is_named() {
    let o = llmpu(&["run", "examples/asm/softmax.s"]);
    assert!(!o.status.success());
    assert!(text(&o).contains('X'), "{}", text(&o));
}

#[test]
fn the_html_report_has_one_roofline_point_per_op_and_a_trace_is_valid_json() {
    let (html, json, trace) = (
        scratch("gemm.html"),
        scratch("gemm.json"),
        scratch("gemm_trace.json"),
    );
    let o = llmpu(&[
        "run",
        "examples/asm/gemm.s",
        "--timing-only",
        "--report",
        html.to_str().unwrap(),
        "--report-json",
        json.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ops = report["locations"].as_array().unwrap().len();
    assert!(ops >= 3);
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches(r#"<circle class="op""#).count(), ops);
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    assert!(t["traceEvents"].as_array().unwrap().len() > 700);
}

#[test]
fn a_runaway_program_stops_at_the_instruction_limit() {
    let path = scratch("spin.s");
    std::fs::write(&path, ".core 0\nloop:\n    jmp loop\n").unwrap();
    let o = llmpu(&["run", path.to_str().unwrap(), "--max-instructions", "1000"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("pc 0"), "{}", text(&o));
}

#[allow(dead_code)]
#[path = "../examples/tiny_gpt.rs"]
mod tiny_gpt;

#[test]
fn check_holds_bf16_outputs_to_the_bf16_tolerance_at_fp32_precision() {
    use llmpu_compiler::onnx::proto::{GraphProto, ModelProto, OperatorSetIdProto};
    use prost::Message;
    // A bf16 LayerNorm over 5003 columns: the emulator's result and the interpreter's may round
    // to neighbouring bf16 values, which the fp32 tolerance (1e-5) would call a failure.
    const BF16: i32 = 16;
    let mut b = tiny_gpt::Builder {
        nodes: vec![],
        inits: vec![],
        seed: 7,
        count: 0,
    };
    b.node(
        "LayerNormalization",
        "/ln",
        &["x", "g", "b"],
        vec![tiny_gpt::int("axis", -1)],
    );
    if let Some(n) = b.nodes.last_mut() {
        n.output = vec!["y".into()];
    }
    let m = ModelProto {
        ir_version: 9,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            name: "ln".into(),
            node: b.nodes,
            input: vec![
                tiny_gpt::value_info("x", BF16, &[3, 5003]),
                tiny_gpt::value_info("g", BF16, &[5003]),
                tiny_gpt::value_info("b", BF16, &[5003]),
            ],
            output: vec![tiny_gpt::value_info("y", BF16, &[3, 5003])],
            ..Default::default()
        }),
        ..Default::default()
    };
    let path = scratch("ln-bf16.onnx");
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    let o = llmpu(&[
        "check",
        path.to_str().unwrap(),
        "--precision",
        "fp32",
        "--no-report",
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("ok   y") && t.contains("[bf16:"), "{t}");
}
