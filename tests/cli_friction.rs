//! The command line's answers to a user's slips: the tolerance a binary's precision implies,
//! binaries run on a target they were not built for, `--dim` names the model does not have,
//! unbound dims, "did you mean" suggestions, and `--bind` for inputs the backend needs at
//! compile time.

mod common;

use common::{corpus, llmpu, matmul_model, noise, scratch_in, text};
use llmpu_runtime::{Tensor, npy};
use std::path::PathBuf;
use std::process::Output;

fn scratch(name: &str) -> PathBuf {
    scratch_in("cli_friction", name)
}

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

fn f32_npy(path: &std::path::Path, shape: &[u64], v: &[f32]) {
    let t = Tensor::from_f32(llmpu_isa::DType::F32, shape.to_vec(), v).unwrap();
    npy::write_file(path, &t).unwrap();
}

const M: usize = 16;
const K: usize = 64;
const N: usize = 32;

/// A `relu(x·w + b)` model compiled in `precision` for `target`, with its inputs and the exact
/// (f64-accumulated) reference output written beside it. Returns the binary and the `run`
/// arguments that bind the inputs and expect the output.
fn matmul_case(tag: &str, precision: &str, target: &str) -> (PathBuf, Vec<String>) {
    let model = scratch(&format!("{tag}.mlir"));
    std::fs::write(&model, matmul_model(M as u64, K as u64, N as u64)).unwrap();
    let bin = scratch(&format!("{tag}.llmpu"));
    let o = llmpu(&[
        "compile",
        s(&model),
        "--precision",
        precision,
        "--target",
        target,
        "-o",
        s(&bin),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let (x, w, b) = (noise(M * K, 1), noise(K * N, 2), noise(N, 3));
    let mut r = vec![0f32; M * N];
    for i in 0..M {
        for j in 0..N {
            let acc: f64 = (0..K)
                .map(|k| x[i * K + k] as f64 * w[k * N + j] as f64)
                .sum();
            r[i * N + j] = (acc + b[j] as f64).max(0.0) as f32;
        }
    }
    let files = [
        ("input0", vec![M as u64, K as u64], x),
        ("input1", vec![K as u64, N as u64], w),
        ("input2", vec![N as u64], b),
    ];
    let mut args = vec![];
    for (name, shape, v) in &files {
        let p = scratch(&format!("{tag}_{name}.npy"));
        f32_npy(&p, shape, v);
        args.push("--input".to_string());
        args.push(format!("{name}={}", s(&p)));
    }
    let p = scratch(&format!("{tag}_ref.npy"));
    f32_npy(&p, &[M as u64, N as u64], &r);
    args.push("--expect".to_string());
    args.push(format!("output0={}", s(&p)));
    (bin, args)
}

fn run(bin: &std::path::Path, args: &[String], extra: &[&str]) -> Output {
    let mut all = vec!["run", s(bin)];
    all.extend(args.iter().map(String::as_str));
    all.extend(extra);
    llmpu(&all)
}

#[test]
fn run_expect_on_a_bf16_binary_uses_the_bf16_tolerance_unless_told() {
    let (bin, args) = matmul_case("bf16", "bf16", "edge");
    let o = run(&bin, &args, &[]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("ok   output0") && t.contains("[bf16:"), "{t}");
    // bf16 storage is far outside the fp32 tolerance: asked for, it fails, naming the output.
    let o = run(&bin, &args, &["--tolerance", "fp32"]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("FAIL output0") && t.contains("[fp32:"), "{t}");
}

#[test]
fn run_expect_on_an_fp32_binary_uses_the_fp32_tolerance() {
    let (bin, args) = matmul_case("fp32", "fp32", "edge");
    let o = run(&bin, &args, &[]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("ok   output0") && t.contains("[fp32:"), "{t}");
}

#[test]
fn a_compiled_binary_records_its_precision_through_disasm_and_asm() {
    let (bin, _) = matmul_case("record", "bf16", "edge");
    let o = llmpu(&["disasm", s(&bin)]);
    let asm_text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(asm_text.contains("\n.precision bf16\n"), "{asm_text}");
    let asm = scratch("record.s");
    std::fs::write(&asm, &asm_text).unwrap();
    let again = scratch("record_again.llmpu");
    let o = llmpu(&["asm", s(&asm), "-o", s(&again)]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(&bin).unwrap(), std::fs::read(&again).unwrap());
}

#[test]
fn run_target_on_a_binary_built_for_another_target_is_an_error_unless_retarget() {
    let (bin, args) = matmul_case("retarget", "bf16", "edge");
    let o = run(&bin, &args, &["--target", "datacenter"]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains(s(&bin))
            && t.contains("built for target `edge`, not `datacenter`")
            && t.contains("--retarget"),
        "{t}"
    );
    // The same target as the embedded one is no change.
    let o = run(&bin, &args, &["--target", "edge"]);
    assert!(o.status.success(), "{}", text(&o));
    // Asked for explicitly, the same instructions run with the other target's figures.
    let o = run(&bin, &args, &["--target", "datacenter", "--retarget"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("target `datacenter`"), "{t}");
}

#[test]
fn unknown_dim_names_are_an_error_naming_the_models_symbolic_dims() {
    let Some(c) = corpus("models/gpt2-tiny-dyn-prefill") else {
        return;
    };
    let model = c.join("models/gpt2-tiny-dyn-prefill/model.onnx");
    let out = scratch("unknown_dim.llmpu");
    for cmd in [
        vec!["compile", s(&model), "-o", s(&out)],
        vec!["import", s(&model)],
    ] {
        let mut args = cmd.clone();
        args.extend(["--dim", "batch_size=1", "--dim", "sequence_lenght=8"]);
        let o = llmpu(&args);
        let t = text(&o);
        assert!(!o.status.success(), "{t}");
        assert!(
            t.contains("--dim sequence_lenght: the model has no symbolic dim `sequence_lenght`")
                && t.contains("did you mean `sequence_length`?")
                && t.contains("(its symbolic dims: batch_size, sequence_length)"),
            "{cmd:?}: {t}"
        );
    }
}

#[test]
fn every_unbound_dim_is_reported_at_once_and_only_import_mentions_shape() {
    let Some(c) = corpus("models/gpt2-tiny-dyn-prefill") else {
        return;
    };
    let model = c.join("models/gpt2-tiny-dyn-prefill/model.onnx");
    let out = scratch("unbound.llmpu");
    let o = llmpu(&["compile", s(&model), "-o", s(&out)]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("2 symbolic dims are not bound: 'batch_size' (inputs 'input_ids',")
            && t.contains("'sequence_length' (inputs 'input_ids',")
            && t.contains("give --dim batch_size=N --dim sequence_length=N"),
        "{t}"
    );
    assert!(!t.contains("--shape"), "compile has no --shape flag: {t}");
    let o = llmpu(&["import", s(&model), "--static"]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("2 symbolic dims are not bound") && t.contains("--shape INPUT=AxB"),
        "{t}"
    );
}

#[test]
fn misspelt_targets_passes_and_values_get_a_did_you_mean() {
    let model = "examples/models/tiny-gpt.onnx";
    let cases: [(&[&str], &str); 5] = [
        (
            &["compile", model, "--target", "egde"],
            "unknown target `egde`; did you mean `edge`?",
        ),
        (
            &["run", "examples/asm/softmax.s", "--target", "datacentre"],
            "did you mean `datacenter`?",
        ),
        (
            &["compile", model, "--print-ir-after=fuse-atention"],
            "names pass 'fuse-atention', which is not in the pipeline; did you mean `fuse-attention`?",
        ),
        (
            &["compile", model, "--precision", "bf61"],
            "--precision `bf61`: expected fp32 or bf16; did you mean `bf16`?",
        ),
        (
            &[
                "opt",
                "compiler/tests/filetests/canonicalize/chains_compose.mlir",
                "--passes",
                "canonicalise",
            ],
            "unknown pass 'canonicalise'; did you mean `canonicalize`?",
        ),
    ];
    for (args, want) in cases {
        let o = llmpu(args);
        let t = text(&o);
        assert!(!o.status.success(), "{args:?}: {t}");
        assert!(t.contains(want), "{args:?}: {t}");
    }
}

#[test]
fn an_axes_input_is_compiled_in_with_bind_and_the_binary_no_longer_takes_it() {
    let sub = "onnx-node/test_reduce_sum_keepdims_example";
    let Some(c) = corpus(sub) else {
        return;
    };
    let model = c.join(sub).join("model.onnx");
    let bin = scratch("reduce_bound.llmpu");
    let o = llmpu(&["compile", s(&model), "-o", s(&bin)]);
    let msg = text(&o);
    assert!(
        !o.status.success()
            && msg.contains("graph input `axes`")
            && msg.contains("--bind axes=V1,V2,..."),
        "{msg}"
    );
    for (bad, want) in [
        (
            "axis=1",
            "not a graph input (inputs: data, axes); did you mean `axes`?",
        ),
        (
            "axes=1,2",
            "input 'axes' holds 1 value(s) (shape [1]), 2 given",
        ),
        ("axes=one", "'one' is not a i64 value (input 'axes')"),
        (
            "axes=9223372036854775808",
            "does not fit input 'axes' (i64:",
        ),
    ] {
        let o = llmpu(&["compile", s(&model), "--bind", bad, "-o", s(&bin)]);
        assert!(
            !o.status.success() && text(&o).contains(want),
            "{bad}: {}",
            text(&o)
        );
    }
    let o = llmpu(&[
        "compile",
        s(&model),
        "--bind",
        "axes=1",
        "--bind",
        "axes=2",
        "-o",
        s(&bin),
    ]);
    assert!(
        !o.status.success() && text(&o).contains("--bind names 'axes' twice"),
        "{}",
        text(&o)
    );
    let o = llmpu(&["compile", s(&model), "--bind", "axes=1", "-o", s(&bin)]);
    assert!(o.status.success(), "{}", text(&o));
    let data = scratch("reduce_data.npy");
    let want = scratch("reduce_want.npy");
    f32_npy(
        &data,
        &[3, 2, 2],
        &(1..=12).map(|v| v as f32).collect::<Vec<_>>(),
    );
    f32_npy(&want, &[3, 1, 2], &[4.0, 6.0, 12.0, 14.0, 20.0, 22.0]);
    let input = format!("data={}", s(&data));
    let expect = format!("reduced={}", s(&want));
    let o = llmpu(&["run", s(&bin), "--input", &input, "--expect", &expect]);
    assert!(o.status.success(), "{}", text(&o));
    // check binds the same way; a data set must agree with the binding.
    let dir = c.join(sub);
    let o = llmpu(&["check", s(&dir), "--bind", "axes=1", "--no-report"]);
    assert!(
        o.status.success() && text(&o).contains("ok   reduced"),
        "{}",
        text(&o)
    );
    let o = llmpu(&["check", s(&dir), "--bind", "axes=2", "--no-report"]);
    assert!(
        !o.status.success() && text(&o).contains("input 'axes' differs from its --bind value"),
        "{}",
        text(&o)
    );
    // The bound input is gone from the binary's interface.
    let axes = format!("axes={}", s(&data));
    let o = llmpu(&["run", s(&bin), "--input", &input, "--input", &axes]);
    assert!(
        !o.status.success() && text(&o).contains("axes"),
        "{}",
        text(&o)
    );
}
