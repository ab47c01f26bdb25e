//! Rows wider than a core's SRAM: softmax, log-softmax, LayerNorm (with its Mean / InvStdDev
//! results), RMSNorm, elementwise ops and copies on a target whose SRAM cannot hold one row
//! with double buffering. Each runs through the column-chunked kernels and must match the
//! reference interpreter on the same module.

mod common;
use common::{checked, values};
use llmpu_compiler::backend::{Options, Precision, compile};
use llmpu_compiler::interp::{self, Tensor as ITensor};
use llmpu_compiler::parser::parse_module;
use llmpu_compiler::pass::PassManagerOptions;
use llmpu_isa::{DType, Target};
use llmpu_runtime::{Tensor, run};

/// The edge core with `sram` bytes of SRAM and `cores` cores.
fn small_target(sram: u64, cores: u32) -> Target {
    let mut t = Target::preset("edge").expect("edge");
    t.sram.size_bytes = sram;
    t.cores = cores;
    t
}

/// Compiles `src` (one f32 input `x` of `shape`) for `t`, runs it and the interpreter on the same
/// input, and returns the largest absolute difference over every output with the program's
/// instruction count.
fn run_both(src: &str, shape: &[usize], t: Target, precision: Precision) -> (f32, u64) {
    let m = parse_module(src).unwrap_or_else(|e| panic!("{e:?}"));
    let mut mc = m.clone();
    let o = Options {
        target: t,
        precision,
    };
    let opts = PassManagerOptions {
        verify_each: true,
        ..Default::default()
    };
    let prog = compile(&mut mc, &o, opts, &mut std::io::sink())
        .unwrap_or_else(|e| panic!("compile: {e}"))
        .expect("program");
    let n: usize = shape.iter().product();
    let x: Vec<f32> = values(n, 9).iter().map(|v| v * 4.0 + 0.5).collect();
    let input =
        Tensor::from_f32(DType::F32, shape.iter().map(|&d| d as u64).collect(), &x).unwrap();
    let res = run(&prog, &[("x".into(), input)], &checked()).unwrap_or_else(|e| panic!("{e}"));
    let want = interp::run(&m, &[ITensor::new(shape.to_vec(), x)]).expect("interpreter");
    let mut worst = 0f32;
    for ((_, got), want) in res.outputs.iter().zip(&want) {
        let got = got.to_f32();
        let want = want.to_f64_vec();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            worst = worst.max((g - *w as f32).abs());
        }
    }
    let instructions = prog.cores.iter().map(|c| c.len() as u64).sum();
    (worst, instructions)
}

fn row_op_src(op: &str, attrs: &str, rows: usize, cols: usize, params: usize) -> String {
    let ty = format!("tensor<{rows}x{cols}xf32>");
    let mut decl = String::new();
    let mut args = vec!["%x".to_string()];
    let mut tys = vec![ty.clone()];
    for p in 0..params {
        let v: Vec<String> = values(cols, 20 + p as u64)
            .iter()
            .map(|x| format!("{:e}", x + 1.0))
            .collect();
        decl += &format!(
            "    %p{p} = \"graph.constant\"() {{value = dense<[{}]> : tensor<{cols}xf32>}} : () -> tensor<{cols}xf32> loc(\"p{p}\")\n",
            v.join(", ")
        );
        args.push(format!("%p{p}"));
        tys.push(format!("tensor<{cols}xf32>"));
    }
    format!(
        r#"module {{
  func.func @main(%x: {ty} {{graph.name = "x"}}) -> ({ty} {{graph.name = "y"}}) {{
{decl}    %y = "{op}"({args}) {{{attrs}}} : ({tys}) -> {ty} loc("Op_0")
    func.return %y : {ty}
  }}
}}
"#,
        args = args.join(", "),
        tys = tys.join(", "),
    )
}

#[test]
fn row_kernels_over_rows_wider_than_sram_match_the_interpreter() {
    // 12 KiB of SRAM: a row of 2053 f32 (a prime: chunks of unequal width) needs ~33 KiB.
    let cases = [
        ("graph.softmax", "axis = -1 : i64", 0),
        ("graph.log_softmax", "axis = -1 : i64", 0),
        (
            "graph.layer_norm",
            "axis = -1 : i64, epsilon = 1.0e-5 : f32",
            2,
        ),
        (
            "graph.rms_norm",
            "axis = -1 : i64, epsilon = 1.0e-5 : f32",
            1,
        ),
    ];
    for (op, attrs, params) in cases {
        for (rows, cores) in [(37, 1), (37, 4), (8, 3)] {
            let src = row_op_src(op, attrs, rows, 2053, params);
            let (err, _) = run_both(
                &src,
                &[rows, 2053],
                small_target(12 << 10, cores),
                Precision::Fp32,
            );
            assert!(
                err < 2e-4,
                "{op} {rows}x2053 on {cores} cores: max error {err}"
            );
        }
    }
}

#[test]
fn layer_norm_statistics_of_wide_rows_match_the_interpreter() {
    let (rows, cols) = (10, 4096);
    let g: Vec<String> = values(cols, 3).iter().map(|v| format!("{v:e}")).collect();
    let src = format!(
        r#"module {{
  func.func @main(%x: tensor<{rows}x{cols}xf32> {{graph.name = "x"}}) -> (tensor<{rows}x{cols}xf32> {{graph.name = "y"}}, tensor<{rows}x1xf32> {{graph.name = "mean"}}, tensor<{rows}x1xf32> {{graph.name = "rstd"}}) {{
    %g = "graph.constant"() {{value = dense<[{g}]> : tensor<{cols}xf32>}} : () -> tensor<{cols}xf32> loc("g")
    %y, %mean, %rstd = "graph.layer_norm"(%x, %g) {{axis = -1 : i64, epsilon = 1.0e-5 : f32}} : (tensor<{rows}x{cols}xf32>, tensor<{cols}xf32>) -> (tensor<{rows}x{cols}xf32>, tensor<{rows}x1xf32>, tensor<{rows}x1xf32>) loc("LayerNorm_0")
    func.return %y, %mean, %rstd : tensor<{rows}x{cols}xf32>, tensor<{rows}x1xf32>, tensor<{rows}x1xf32>
  }}
}}
"#,
        g = g.join(", ")
    );
    let (err, _) = run_both(
        &src,
        &[rows, cols],
        small_target(16 << 10, 2),
        Precision::Fp32,
    );
    assert!(err < 2e-4, "max error {err}");
}

#[test]
fn elementwise_ops_and_copies_of_wide_rows_match_the_interpreter() {
    let (rows, cols) = (6, 5003);
    let b: Vec<String> = values(cols, 4).iter().map(|v| format!("{v:e}")).collect();
    let src = format!(
        r#"module {{
  func.func @main(%x: tensor<{rows}x{cols}xf32> {{graph.name = "x"}}) -> (tensor<{rows}x{cols}xf32> {{graph.name = "y"}}, tensor<{rows}x{cols}xbf16> {{graph.name = "c"}}) {{
    %b = "graph.constant"() {{value = dense<[{b}]> : tensor<{cols}xf32>}} : () -> tensor<{cols}xf32> loc("b")
    %s = "graph.add"(%x, %b) : (tensor<{rows}x{cols}xf32>, tensor<{cols}xf32>) -> tensor<{rows}x{cols}xf32> loc("Add_0")
    %y = "graph.gelu"(%s) {{approximate = "tanh"}} : (tensor<{rows}x{cols}xf32>) -> tensor<{rows}x{cols}xf32> loc("Gelu_0")
    %c = "graph.cast"(%x) {{to = bf16}} : (tensor<{rows}x{cols}xf32>) -> tensor<{rows}x{cols}xbf16> loc("Cast_0")
    func.return %y, %c : tensor<{rows}x{cols}xf32>, tensor<{rows}x{cols}xbf16>
  }}
}}
"#,
        b = b.join(", ")
    );
    let (err, _) = run_both(
        &src,
        &[rows, cols],
        small_target(12 << 10, 2),
        Precision::Fp32,
    );
    assert!(err < 1e-3, "max error {err}");
}

#[test]
fn chunked_row_kernels_roll_so_the_program_does_not_grow_with_the_rows() {
    // The same LayerNorm over 64 and over 4096 rows of 8192 on 4 cores with 64 KiB each.
    let attrs = "axis = -1 : i64, epsilon = 1.0e-5 : f32";
    let count = |rows: usize| {
        let src = row_op_src("graph.layer_norm", attrs, rows, 8192, 2);
        let mut m = parse_module(&src).unwrap();
        let o = Options {
            target: small_target(64 << 10, 4),
            precision: Precision::Bf16,
        };
        let prog = compile(
            &mut m,
            &o,
            PassManagerOptions::default(),
            &mut std::io::sink(),
        )
        .unwrap()
        .unwrap();
        prog.cores.iter().map(|c| c.len()).sum::<usize>()
    };
    let (small, large) = (count(64), count(4096));
    assert!(
        large < 2 * small,
        "64 rows: {small} instructions, 4096 rows: {large}"
    );
}

#[test]
fn rows_wider_than_a_vector_instruction_are_chunked_and_match_the_interpreter() {
    // 70001 columns fit a 2 MiB core in SRAM but not a vector instruction's 16-bit `cols`.
    let t = small_target(2 << 20, 2);
    let src = row_op_src("graph.softmax", "axis = -1 : i64", 3, 70001, 0);
    let (err, _) = run_both(&src, &[3, 70001], t.clone(), Precision::Fp32);
    assert!(err < 1e-6, "softmax: max error {err}");
    let ty = "tensor<3x70001xf32>";
    let neg = format!(
        r#"module {{
  func.func @main(%x: {ty} {{graph.name = "x"}}) -> ({ty} {{graph.name = "y"}}) {{
    %y = "graph.neg"(%x) : ({ty}) -> {ty} loc("Neg_0")
    func.return %y : {ty}
  }}
}}
"#
    );
    let (err, _) = run_both(&neg, &[3, 70001], t, Precision::Fp32);
    assert!(err == 0.0, "neg: max error {err}");
}
