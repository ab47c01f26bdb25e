//! ONNX ops the backend has no fused kernel for — `Attention` variants `decompose-attention`
//! rewrites into primitives, `RotaryEmbedding`, `Pad` — compiled through the whole pipeline and
//! run on the emulator; every output must match the reference interpreter on the same module and
//! inputs.

mod common;
use common::{checked, compile_text, values};
use llmpu_compiler::backend::{Options, Precision, compile};
use llmpu_compiler::interp::{self, Tensor as ITensor};
use llmpu_compiler::ir::ScalarType;
use llmpu_compiler::parser::parse_module;
use llmpu_compiler::pass::PassManagerOptions;
use llmpu_isa::{DType, Target};
use llmpu_runtime::{Tensor, run};

/// One input bound both for the emulator and for the interpreter.
struct Input {
    name: &'static str,
    emu: Tensor,
    reference: ITensor,
}

fn f32_input(name: &'static str, shape: &[usize], seed: u64) -> Input {
    let n: usize = shape.iter().product();
    let v = values(n, seed);
    Input {
        name,
        emu: Tensor::from_f32(DType::F32, shape.iter().map(|&d| d as u64).collect(), &v).unwrap(),
        reference: ITensor::new(shape.to_vec(), v),
    }
}

fn bool_input(name: &'static str, shape: &[usize], bits: &[bool]) -> Input {
    let bytes: Vec<u8> = bits.iter().map(|&b| b as u8).collect();
    Input {
        name,
        emu: Tensor::new(
            DType::U8,
            shape.iter().map(|&d| d as u64).collect(),
            bytes.clone(),
        )
        .unwrap(),
        reference: ITensor::from_le_bytes(ScalarType::I1, shape.to_vec(), &bytes).unwrap(),
    }
}

fn i64_input(name: &'static str, shape: &[usize], v: &[i64]) -> Input {
    Input {
        name,
        emu: Tensor::from_ints(DType::I64, shape.iter().map(|&d| d as u64).collect(), v).unwrap(),
        reference: ITensor::new(shape.to_vec(), v.to_vec()),
    }
}

/// Compiles `src` in fp32 on the edge preset, runs it and the interpreter on `inputs`, and checks
/// every output element within `1e-4 + 1e-4·|want|`. Returns the number of outputs compared.
fn matches_interpreter(src: &str, inputs: &[Input]) -> usize {
    matches_interpreter_on(src, inputs, "edge")
}

/// [`matches_interpreter`] on the preset `target`.
fn matches_interpreter_on(src: &str, inputs: &[Input], target: &str) -> usize {
    let m = parse_module(src).unwrap_or_else(|e| panic!("{e:?}"));
    let prog = compile_text(src, target, Precision::Fp32);
    let bound: Vec<(String, Tensor)> = inputs
        .iter()
        .map(|i| (i.name.to_string(), i.emu.clone()))
        .collect();
    let res = run(&prog, &bound, &checked()).unwrap_or_else(|e| panic!("emulator: {e}"));
    let refs: Vec<ITensor> = inputs.iter().map(|i| i.reference.clone()).collect();
    let want = interp::run(&m, &refs).expect("interpreter");
    assert_eq!(res.outputs.len(), want.len());
    for (k, ((name, got), want)) in res.outputs.iter().zip(&want).enumerate() {
        let got = got.to_f32();
        let want = want.to_f64_vec();
        assert_eq!(got.len(), want.len(), "output {k} ({name})");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let tol = 1e-4 + 1e-4 * w.abs();
            assert!(
                *g as f64 == *w || (*g as f64 - w).abs() <= tol,
                "output {k} ({name}) element {i}: emulator {g}, interpreter {w}"
            );
        }
    }
    want.len()
}

#[test]
fn decomposed_attention_with_past_gqa_and_bool_mask_matches_interpreter_on_every_preset() {
    // 3-D inputs: 4 query heads share 2 KV heads of size 4; 4 cached tokens plus 3 new ones.
    // The mask masks the second query row everywhere: that row's output must be zero.
    let src = r#"module {
  func.func @main(%q: tensor<1x3x16xf32> {graph.name = "q"}, %k: tensor<1x3x8xf32> {graph.name = "k"}, %v: tensor<1x3x8xf32> {graph.name = "v"}, %mask: tensor<3x7xi1> {graph.name = "mask"}, %pk: tensor<1x2x4x4xf32> {graph.name = "past_k"}, %pv: tensor<1x2x4x4xf32> {graph.name = "past_v"}) -> (tensor<1x3x16xf32> {graph.name = "y"}, tensor<1x2x7x4xf32> {graph.name = "present_k"}, tensor<1x2x7x4xf32> {graph.name = "present_v"}) {
    %y:3 = "graph.attention"(%q, %k, %v, %mask, %pk, %pv) {is_causal = 1 : i64, kv_num_heads = 2 : i64, q_num_heads = 4 : i64} : (tensor<1x3x16xf32>, tensor<1x3x8xf32>, tensor<1x3x8xf32>, tensor<3x7xi1>, tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> (tensor<1x3x16xf32>, tensor<1x2x7x4xf32>, tensor<1x2x7x4xf32>) loc("Attention")
    func.return %y#0, %y#1, %y#2 : tensor<1x3x16xf32>, tensor<1x2x7x4xf32>, tensor<1x2x7x4xf32>
  }
}
"#;
    let mut bits = vec![true; 21];
    bits[3] = false;
    for b in &mut bits[7..14] {
        *b = false;
    }
    let inputs = [
        f32_input("q", &[1, 3, 16], 1),
        f32_input("k", &[1, 3, 8], 2),
        f32_input("v", &[1, 3, 8], 3),
        bool_input("mask", &[3, 7], &bits),
        f32_input("past_k", &[1, 2, 4, 4], 4),
        f32_input("past_v", &[1, 2, 4, 4], 5),
    ];
    for target in ["edge", "datacenter"] {
        assert_eq!(matches_interpreter_on(src, &inputs, target), 3);
    }
}

#[test]
fn attention_with_nonpad_lengths_and_probability_output_matches_interpreter() {
    // Causal with per-batch valid KV lengths (the second batch's first query row sees nothing)
    // and the softmax probabilities as the extra output.
    let src = r#"module {
  func.func @main(%q: tensor<2x2x2x4xf32> {graph.name = "q"}, %k: tensor<2x2x5x4xf32> {graph.name = "k"}, %v: tensor<2x2x5x4xf32> {graph.name = "v"}, %np: tensor<2xi64> {graph.name = "nonpad"}) -> (tensor<2x2x2x4xf32> {graph.name = "y"}, tensor<2x2x2x5xf32> {graph.name = "probs"}) {
    %y:4 = "graph.attention"(%q, %k, %v, %np) {is_causal = 1 : i64, operand_slots = array<i64: 0, 1, 2, 6>, qk_matmul_output_mode = 3 : i64, softcap = 3.0 : f32} : (tensor<2x2x2x4xf32>, tensor<2x2x5x4xf32>, tensor<2x2x5x4xf32>, tensor<2xi64>) -> (tensor<2x2x2x4xf32>, tensor<2x2x5x4xf32>, tensor<2x2x5x4xf32>, tensor<2x2x2x5xf32>) loc("Attention")
    func.return %y#0, %y#3 : tensor<2x2x2x4xf32>, tensor<2x2x2x5xf32>
  }
}
"#;
    let inputs = [
        f32_input("q", &[2, 2, 2, 4], 11),
        f32_input("k", &[2, 2, 5, 4], 12),
        f32_input("v", &[2, 2, 5, 4], 13),
        i64_input("nonpad", &[2], &[5, 1]),
    ];
    assert_eq!(matches_interpreter(src, &inputs), 2);
}

#[test]
fn constant_pad_fills_the_border_and_crops_negative_pads_on_every_preset() {
    // Axis 0: 1 before, 2 after; axis 1: crops 1 in front, pads 3 after (fill −inf as the
    // ONNX Attention function body pads its mask).
    let src = r#"module {
  func.func @main(%x: tensor<3x5xf32> {graph.name = "x"}) -> (tensor<6x7xf32> {graph.name = "y"}) {
    %pads = "graph.constant"() {value = dense<[1, -1, 2, 3]> : tensor<4xi64>} : () -> tensor<4xi64> loc("pads")
    %fill = "graph.constant"() {value = dense<0xFF800000> : tensor<f32>} : () -> tensor<f32> loc("fill")
    %y = "graph.pad"(%x, %pads, %fill) {mode = "constant"} : (tensor<3x5xf32>, tensor<4xi64>, tensor<f32>) -> tensor<6x7xf32> loc("Pad")
    func.return %y : tensor<6x7xf32>
  }
}
"#;
    for target in ["edge", "datacenter"] {
        let inputs = [f32_input("x", &[3, 5], 21)];
        assert_eq!(matches_interpreter_on(src, &inputs, target), 1);
    }
}

#[test]
fn rotary_embedding_interleaved_partial_with_position_ids_matches_interpreter() {
    // 3-D input with 2 heads of 8; only the first 4 elements of each head rotate, in interleaved
    // pairs, with cos/sin rows picked by position ids.
    let src = r#"module {
  func.func @main(%x: tensor<2x3x16xf32> {graph.name = "x"}, %cos: tensor<10x2xf32> {graph.name = "cos"}, %sin: tensor<10x2xf32> {graph.name = "sin"}, %pos: tensor<2x3xi64> {graph.name = "pos"}) -> (tensor<2x3x16xf32> {graph.name = "y"}) {
    %y = "graph.rotary_embedding"(%x, %cos, %sin, %pos) {interleaved = 1 : i64, num_heads = 2 : i64, rotary_embedding_dim = 4 : i64} : (tensor<2x3x16xf32>, tensor<10x2xf32>, tensor<10x2xf32>, tensor<2x3xi64>) -> tensor<2x3x16xf32> loc("RotaryEmbedding")
    func.return %y : tensor<2x3x16xf32>
  }
}
"#;
    let inputs = [
        f32_input("x", &[2, 3, 16], 31),
        f32_input("cos", &[10, 2], 32),
        f32_input("sin", &[10, 2], 33),
        i64_input("pos", &[2, 3], &[0, 1, 2, 7, 8, 9]),
    ];
    assert_eq!(matches_interpreter(src, &inputs), 1);
}

#[test]
fn rotary_embedding_4d_without_position_ids_matches_interpreter() {
    let src = r#"module {
  func.func @main(%x: tensor<2x2x3x8xf32> {graph.name = "x"}, %cos: tensor<2x3x4xf32> {graph.name = "cos"}, %sin: tensor<2x3x4xf32> {graph.name = "sin"}) -> (tensor<2x2x3x8xf32> {graph.name = "y"}) {
    %y = "graph.rotary_embedding"(%x, %cos, %sin) : (tensor<2x2x3x8xf32>, tensor<2x3x4xf32>, tensor<2x3x4xf32>) -> tensor<2x2x3x8xf32> loc("RotaryEmbedding")
    func.return %y : tensor<2x2x3x8xf32>
  }
}
"#;
    let inputs = [
        f32_input("x", &[2, 2, 3, 8], 41),
        f32_input("cos", &[2, 3, 4], 42),
        f32_input("sin", &[2, 3, 4], 43),
    ];
    assert_eq!(matches_interpreter(src, &inputs), 1);
}

#[test]
fn attention_the_decomposition_cannot_express_is_refused_with_the_reason_and_location() {
    let src = r#"module {
  func.func @main(%q: tensor<1x1x2x4xf32> {graph.name = "q"}) -> (tensor<1x1x2x4xf32> {graph.name = "y"}, tensor<1x1x2x2xf32> {graph.name = "qk"}) {
    %y:4 = "graph.attention"(%q, %q, %q) {qk_matmul_output_mode = 7 : i64} : (tensor<1x1x2x4xf32>, tensor<1x1x2x4xf32>, tensor<1x1x2x4xf32>) -> (tensor<1x1x2x4xf32>, tensor<1x1x2x4xf32>, tensor<1x1x2x4xf32>, tensor<1x1x2x2xf32>) loc("Attention_7")
    func.return %y#0, %y#3 : tensor<1x1x2x4xf32>, tensor<1x1x2x2xf32>
  }
}
"#;
    let mut m = parse_module(src).unwrap_or_else(|e| panic!("{e:?}"));
    let o = Options {
        target: Target::preset("edge").unwrap(),
        precision: Precision::Fp32,
    };
    let err = compile(
        &mut m,
        &o,
        PassManagerOptions::default(),
        &mut std::io::sink(),
    )
    .map(|_| ())
    .expect_err("an unknown qk_matmul_output_mode must not compile");
    for part in [
        "pass 'decompose-attention' failed at loc(\"Attention_7\")",
        "`graph.attention` is not supported by the LLMPU backend",
        "qk_matmul_output_mode 7 is not one of 0, 1, 2, 3",
    ] {
        assert!(err.contains(part), "{err}");
    }
}

/// One `graph.pad` example: mode, pads, output shape, expected values.
type PadExample<'a> = (&'a str, &'a [i64], &'a [usize], &'a [f32]);

fn pad_src(mode: &str, x: &[usize], pads: &[i64], out: &[usize]) -> String {
    let ty = |s: &[usize]| {
        let d: Vec<String> = s.iter().map(|d| d.to_string()).collect();
        format!("tensor<{}xf32>", d.join("x"))
    };
    let p: Vec<String> = pads.iter().map(|p| p.to_string()).collect();
    let (xt, ot) = (ty(x), ty(out));
    let n = pads.len();
    format!(
        r#"module {{
  func.func @main(%x: {xt} {{graph.name = "x"}}) -> ({ot} {{graph.name = "y"}}) {{
    %pads = "graph.constant"() {{value = dense<[{p}]> : tensor<{n}xi64>}} : () -> tensor<{n}xi64> loc("pads")
    %y = "graph.pad"(%x, %pads) {{mode = "{mode}"}} : ({xt}, tensor<{n}xi64>) -> {ot} loc("Pad")
    func.return %y : {ot}
  }}
}}
"#,
        p = p.join(", ")
    )
}

#[test]
fn edge_reflect_and_wrap_pads_give_the_onnx_examples_in_the_interpreter() {
    // The examples of the ONNX Pad operator documentation.
    let data = vec![1.0f32, 1.2, 2.3, 3.4, 4.5, 5.7];
    let cases: [PadExample; 3] = [
        (
            "reflect",
            &[0, 2, 0, 0],
            &[3, 4],
            &[1.0, 1.2, 1.0, 1.2, 2.3, 3.4, 2.3, 3.4, 4.5, 5.7, 4.5, 5.7],
        ),
        (
            "edge",
            &[0, 2, 0, 0],
            &[3, 4],
            &[1.0, 1.0, 1.0, 1.2, 2.3, 2.3, 2.3, 3.4, 4.5, 4.5, 4.5, 5.7],
        ),
        (
            "wrap",
            &[2, 1, 1, 1],
            &[6, 4],
            &[
                3.4, 2.3, 3.4, 2.3, 5.7, 4.5, 5.7, 4.5, 1.2, 1.0, 1.2, 1.0, 3.4, 2.3, 3.4, 2.3,
                5.7, 4.5, 5.7, 4.5, 1.2, 1.0, 1.2, 1.0,
            ],
        ),
    ];
    for (mode, pads, out, want) in cases {
        let m = parse_module(&pad_src(mode, &[3, 2], pads, out)).unwrap();
        let got = interp::run(&m, &[ITensor::new(vec![3, 2], data.clone())]).expect("interpreter");
        let got: Vec<f32> = got[0].to_f64_vec().iter().map(|&v| v as f32).collect();
        assert_eq!(got, want, "{mode}");
    }
}

#[test]
fn edge_reflect_and_wrap_pads_match_the_interpreter_on_every_preset() {
    // Three axes, pads on both sides of each (wider than the input on the last for reflect and
    // wrap, so positions fold more than once), one crop.
    for (mode, pads) in [
        ("edge", [1i64, 2, 3, 2, 0, 4]),
        ("reflect", [1, 2, 5, 2, -1, 6]),
        ("wrap", [2, 0, 7, 1, 2, 5]),
    ] {
        let x = [3usize, 4, 3];
        let out: Vec<usize> = (0..3)
            .map(|a| (x[a] as i64 + pads[a] + pads[a + 3]) as usize)
            .collect();
        let src = pad_src(mode, &x, &pads, &out);
        for target in ["edge", "datacenter"] {
            let inputs = [f32_input("x", &x, 51)];
            assert_eq!(matches_interpreter_on(&src, &inputs, target), 1, "{mode}");
        }
    }
}
