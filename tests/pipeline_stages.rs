//! Every stage of the backend pipeline can be stopped at and continued from: `llmpu compile
//! --stop-after P -o f.mlir` writes the complete IR (large constants printed, `llmpu.stage = P`)
//! and `llmpu compile f.mlir` runs the passes after `P` — to the byte-identical binary of the
//! uninterrupted run, for every pass `P`, on a decode graph with a paged KV cache (the zoo's
//! Mistral) and a prefill graph (the corpus GPT-2). Every stage's text reprints identically after
//! parsing, the `lower-llmpu` stage included: there the paged decode attention's run-time branches
//! are blocks and branch ops with successors, and their offsets come back from the blocks.

use std::path::{Path, PathBuf};

mod common;
use common::{corpus, llmpu_ok};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Parses `text` and prints it back in full (as `--stop-after` writes it).
fn reprinted(text: &str) -> String {
    let m = llmpu_compiler::parser::parse_module(text).unwrap_or_else(|e| panic!("{e}"));
    llmpu_compiler::ir::print_module_with(
        &m,
        llmpu_compiler::ir::PrintOptions {
            elide_large_constants: false,
        },
    )
}

fn every_stage_resumes_to_the_same_binary(
    model: &Path,
    extra: &[&str],
    tag: &str,
    run_time_branches: bool,
) {
    let dir = std::env::temp_dir().join(format!("llmpu-stages-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let compile = |input: &Path, more: &[&str], out: &Path| {
        let mut args = vec!["compile", s(input)];
        args.extend_from_slice(more);
        args.extend_from_slice(&["-o", s(out)]);
        llmpu_ok(&args);
    };
    let full = dir.join("full.llmpu");
    compile(model, extra, &full);
    let want = std::fs::read(&full).unwrap();
    for pass in llmpu_compiler::backend::pipeline() {
        let ir: PathBuf = dir.join(format!("{pass}.mlir"));
        let mut stop = extra.to_vec();
        stop.extend_from_slice(&["--stop-after", pass]);
        compile(model, &stop, &ir);
        let text = std::fs::read_to_string(&ir).unwrap();
        assert!(
            text.contains(&format!("llmpu.stage = \"{pass}\"")),
            "{pass}: no stage in the IR"
        );
        assert!(
            reprinted(&text) == text,
            "{tag}: `{pass}` IR does not reprint identically"
        );
        if pass == "lower-llmpu" {
            assert!(
                !text.contains(", target = ") && !text.contains("{target = "),
                "{tag}: a branch offset in the lowered IR"
            );
            assert_eq!(
                text.contains("\"llmpu.bge\"()[^bb"),
                run_time_branches,
                "{tag}: run-time branches (`llmpu.bge` with successors) in the lowered IR"
            );
        }
        let bin = dir.join(format!("{pass}.llmpu"));
        compile(&ir, &[], &bin);
        assert!(
            std::fs::read(&bin).unwrap() == want,
            "{tag}: continuing after `{pass}` gives another binary"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_decode_graph_continues_from_every_stage_to_the_same_binary() {
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("zoo/models/mistral-tiny-dyn-decode/model.onnx");
    every_stage_resumes_to_the_same_binary(
        &model,
        &[
            "--max-context",
            "32",
            "--dim",
            "batch_size=1",
            "--target",
            "datacenter",
        ],
        "mistral",
        true,
    );
}

#[test]
fn a_prefill_graph_continues_from_every_stage_to_the_same_binary() {
    let Some(c) = corpus("models") else { return };
    every_stage_resumes_to_the_same_binary(
        &c.join("models/gpt2-tiny-prefill/model.onnx"),
        &[],
        "gpt2",
        false,
    );
}

/// The address `llmpu.hbm` gives the op at `loc` in a `plan-memory` dump, with its line.
fn placed_at(ir: &str, loc: &str) -> (String, u64) {
    let line = ir
        .lines()
        .find(|l| l.contains(&format!("loc(\"{loc}\")")) && l.contains("llmpu.hbm"))
        .unwrap_or_else(|| panic!("no placed op at {loc}"));
    let at = line.split("llmpu.hbm = array<i64: ").nth(1).unwrap();
    let addr = at.split('>').next().unwrap().trim().parse().unwrap();
    (line.to_string(), addr)
}

#[test]
fn an_address_edited_in_a_plan_memory_dump_is_the_one_the_binary_uses() {
    // `plan-memory`'s placement is the contract: moving a residual tensor to free scratch space
    // changes the binary and keeps its results; moving it over a tensor still live is an error
    // naming both.
    let Some(c) = corpus("models") else { return };
    let model = c.join("models/gpt2-tiny-prefill/model.onnx");
    let dir = std::env::temp_dir().join(format!("llmpu-edit-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (dump, plain, moved) = (
        dir.join("pm.mlir"),
        dir.join("plain.llmpu"),
        dir.join("moved.llmpu"),
    );
    llmpu_ok(&[
        "compile",
        s(&model),
        "--precision",
        "fp32",
        "--stop-after",
        "plan-memory",
        "-o",
        s(&dump),
    ]);
    llmpu_ok(&["compile", s(&dump), "-o", s(&plain)]);
    let ir = std::fs::read_to_string(&dump).unwrap();
    let scratch: Vec<u64> = ir
        .split("llmpu.scratch = array<i64: ")
        .nth(1)
        .unwrap()
        .split('>')
        .next()
        .unwrap()
        .split(',')
        .map(|x| x.trim().parse().unwrap())
        .collect();
    let free = (scratch[0] + scratch[1]).div_ceil(64) * 64;
    let (line, addr) = placed_at(&ir, "/m/transformer/h.0/Add");
    let edited = ir.replace(
        &line,
        &line.replace(
            &format!("array<i64: {addr}>"),
            &format!("array<i64: {free}>"),
        ),
    );
    std::fs::write(&dump, &edited).unwrap();
    llmpu_ok(&["compile", s(&dump), "-o", s(&moved)]);
    let (a, b) = (
        llmpu_isa::binary::read_file(&plain).unwrap(),
        llmpu_isa::binary::read_file(&moved).unwrap(),
    );
    assert_ne!(
        a.cores, b.cores,
        "the edited address did not reach the binary"
    );
    let ids: Vec<u8> = (0..16i64)
        .flat_map(|i| (i * 13 % 256).to_le_bytes())
        .collect();
    let input = llmpu_runtime::Tensor::new(llmpu_isa::DType::I64, vec![1, 16], ids).unwrap();
    let opts = llmpu_runtime::RunOptions {
        check_uninit: true,
        ..Default::default()
    };
    let run = |p: &llmpu_isa::Program| {
        llmpu_runtime::run(p, &[("input_ids".into(), input.clone())], &opts)
            .unwrap()
            .outputs
    };
    assert_eq!(
        run(&a),
        run(&b),
        "moving a tensor to free memory changed the results"
    );
    // Over the tensor it adds (the embeddings' sum, read by this very op): refused.
    let (_, live) = placed_at(&ir, "/m/transformer/Add");
    let clash = ir.replace(
        &line,
        &line.replace(
            &format!("array<i64: {addr}>"),
            &format!("array<i64: {live}>"),
        ),
    );
    std::fs::write(&dump, &clash).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_llmpu"))
        .args(["compile", s(&dump), "-o", s(&moved)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("which is still live")
            && err.contains("/m/transformer/Add"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_resumed_dump_reports_the_target_it_was_compiled_for() {
    // The dump records `datacenter`; continued without `--target` (default `edge`), the binary is
    // built for `datacenter`, and the summary line must say so.
    let Some(c) = corpus("models") else { return };
    let model = c.join("models/gpt2-tiny-prefill/model.onnx");
    let dir = std::env::temp_dir().join(format!("llmpu-stages-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ir = dir.join("tile.mlir");
    llmpu_ok(&[
        "compile",
        s(&model),
        "--target",
        "datacenter",
        "--stop-after",
        "tile",
        "-o",
        s(&ir),
    ]);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_llmpu"))
        .args(["compile", s(&ir), "-o", s(&dir.join("x.llmpu"))])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("continues with those, not `edge`"), "{err}");
    assert!(
        err.contains("(8 cores,") && err.contains("target datacenter, bf16)"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_core_count_edited_in_a_distribute_cores_dump_is_the_one_the_binary_uses() {
    // The tile stage's loop attributes are the contract too: a GEMM kernel spread over 8 cores,
    // edited to 4, runs its matrix work on cores 0-3 only.
    let dir = std::env::temp_dir().join(format!("llmpu-edit-cores-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("gemm.mlir");
    std::fs::write(
        &model,
        r#"module {
  func.func @main(%a: tensor<2048x4096xbf16>, %b: tensor<4096x4096xbf16>) -> tensor<2048x4096xbf16> {
    %c = "graph.matmul"(%a, %b) : (tensor<2048x4096xbf16>, tensor<4096x4096xbf16>) -> tensor<2048x4096xbf16> loc("MatMul")
    func.return %c : tensor<2048x4096xbf16> loc(unknown)
  } loc("main")
}
"#,
    )
    .unwrap();
    let (dump, plain, edited) = (
        dir.join("dc.mlir"),
        dir.join("plain.llmpu"),
        dir.join("edited.llmpu"),
    );
    let stop = ["--target", "datacenter", "--stop-after", "distribute-cores"];
    llmpu_ok(&[&["compile", s(&model)], &stop[..], &["-o", s(&dump)]].concat());
    llmpu_ok(&["compile", s(&dump), "-o", s(&plain)]);
    let ir = std::fs::read_to_string(&dump).unwrap();
    assert_eq!(ir.matches("cores = 8 : i64").count(), 1, "{ir}");
    std::fs::write(&dump, ir.replace("cores = 8 : i64", "cores = 4 : i64")).unwrap();
    llmpu_ok(&["compile", s(&dump), "-o", s(&edited)]);
    let matmuls = |p: &Path| -> Vec<usize> {
        let prog = llmpu_isa::binary::read_file(p).unwrap();
        prog.cores
            .iter()
            .map(|c| {
                c.iter()
                    .filter(|i| matches!(i, llmpu_isa::Inst::MxuMatmul { .. }))
                    .count()
            })
            .collect()
    };
    let (a, b) = (matmuls(&plain), matmuls(&edited));
    assert!(a.iter().all(|&n| n > 0), "plain: {a:?}");
    assert!(
        b[..4].iter().all(|&n| n > 0) && b[4..].iter().all(|&n| n == 0),
        "edited to 4 cores: {b:?}"
    );
}
