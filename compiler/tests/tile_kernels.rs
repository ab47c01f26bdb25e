//! The tile stage end to end: matmuls that `lower-tile` turns into `tile.kernel`s (checked on the
//! IR after the pass, so each case really takes that path) run on the emulator and match a
//! plain-Rust reference — bias, every activation, a residual, f32 and bf16 results, leading
//! dims folded into rows, partial tiles in M, N and K — on edge and datacenter; and elementwise
//! ops over row tiles (full operands and broadcast rows); softmax and layer / RMS norm rows.

mod common;
use common::{checked, dense, values};
use llmpu_compiler::backend::{Options, Precision, compile};
use llmpu_compiler::ir::print_module;
use llmpu_compiler::parser::parse_module;
use llmpu_compiler::pass::PassManagerOptions;
use llmpu_isa::{DType, Program, Target};
use llmpu_runtime::compare::{Tolerance, compare};
use llmpu_runtime::{Tensor, run};

/// The module after `lower-tile` (as text) and the program.
fn compile_for(src: &str, target: &Target, precision: Precision) -> (String, Program) {
    let o = Options {
        target: target.clone(),
        precision,
    };
    let mut m = parse_module(src).unwrap_or_else(|e| panic!("{e:?}"));
    let opts = PassManagerOptions {
        verify_each: true,
        stop_after: Some("lower-tile".into()),
        ..Default::default()
    };
    let done = compile(&mut m, &o, opts, &mut std::io::sink()).unwrap_or_else(|e| panic!("{e}"));
    assert!(done.is_none(), "the pipeline should stop after lower-tile");
    let ir = print_module(&m);
    let mut m = parse_module(src).unwrap_or_else(|e| panic!("{e:?}"));
    let opts = PassManagerOptions {
        verify_each: true,
        ..Default::default()
    };
    let prog = compile(&mut m, &o, opts, &mut std::io::sink())
        .unwrap_or_else(|e| panic!("compile: {e}"))
        .expect("program");
    (ir, prog)
}

#[derive(Clone, Copy)]
struct Case {
    /// Rows of each of `batch` leading blocks.
    rows: usize,
    batch: usize,
    k: usize,
    n: usize,
    tile: [usize; 3],
    bias: bool,
    act: &'static str,
    residual: bool,
}

fn act(name: &str, x: f64) -> f64 {
    match name {
        "relu" => x.max(0.0),
        "silu" => x / (1.0 + (-x).exp()),
        "gelu" => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
        "gelu_tanh" => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
        _ => x,
    }
}

/// erf by Simpson's rule on its integral (2000 intervals: far below the fp32 tolerance).
fn erf(x: f64) -> f64 {
    let n = 2000;
    let h = x / n as f64;
    let f = |t: f64| (-t * t).exp();
    let mut s = f(0.0) + f(x);
    for i in 1..n {
        s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
}

fn run_case(c: Case, target: &Target, precision: Precision) {
    let (m, k, n) = (c.rows * c.batch, c.k, c.n);
    let w = values(k * n, 11);
    let b = values(n, 12);
    let x = values(m * k, 13);
    let r = values(m * n, 14);
    let lead = if c.batch > 1 {
        format!("{}x{}", c.batch, c.rows)
    } else {
        format!("{}", c.rows)
    };
    let xt = format!("tensor<{lead}x{k}xf32>");
    let yt = format!("tensor<{lead}x{n}xf32>");
    let mut args = format!("%x: {xt} {{graph.name = \"x\"}}");
    if c.residual {
        args += &format!(", %r: {yt} {{graph.name = \"r\"}}");
    }
    let mut operands = "%e, %w".to_string();
    let mut types = format!("{xt}, tensor<{k}x{n}xf32>");
    if c.bias {
        operands += ", %b";
        types += &format!(", tensor<{n}xf32>");
    }
    if c.residual {
        operands += ", %r";
        types += &format!(", {yt}");
    }
    let [tm, tk, tn] = c.tile;
    // The matmul reads `exp(x)` (an op's result, stored in the engine's type in bf16 compiles).
    let src = format!(
        r#"module {{
  func.func @main({args}) -> ({yt} {{graph.name = "y"}}) {{
    %w = "graph.constant"() {{value = {w}}} : () -> tensor<{k}x{n}xf32> loc("w")
    %b = "graph.constant"() {{value = {b}}} : () -> tensor<{n}xf32> loc("b")
    %e = "graph.exp"(%x) : ({xt}) -> {xt} loc("Exp")
    %y = "graph.matmul_epilogue"({operands}) {{activation = "{act}", residual = {res}, tile = array<i64: {tm}, {tk}, {tn}>}} : ({types}) -> {yt} loc("MatMul")
    func.return %y : {yt}
  }}
}}
"#,
        w = dense(&w, &[k, n]),
        b = dense(&b, &[n]),
        act = c.act,
        res = c.residual,
    );
    let (ir, prog) = compile_for(&src, target, precision);
    assert!(
        ir.contains("\"tile.kernel\""),
        "the matmul should lower through a tile.kernel:\n{ir}"
    );
    let mut inputs = vec![(
        "x".to_string(),
        Tensor::from_f32(DType::F32, shape(c, k), &x).unwrap(),
    )];
    if c.residual {
        inputs.push((
            "r".to_string(),
            Tensor::from_f32(DType::F32, shape(c, n), &r).unwrap(),
        ));
    }
    let res = run(&prog, &inputs, &checked()).unwrap_or_else(|e| panic!("emulator: {e}"));
    let mut want = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for p in 0..k {
                s += (x[i * k + p] as f64).exp() * w[p * n + j] as f64;
            }
            if c.bias {
                s += b[j] as f64;
            }
            s = act(c.act, s);
            if c.residual {
                s += r[i * n + j] as f64;
            }
            want[i * n + j] = s as f32;
        }
    }
    let tol = match precision {
        Precision::Fp32 => Tolerance::FP32,
        Precision::Bf16 => Tolerance::BF16,
    };
    let want = Tensor::from_f32(DType::F32, shape(c, n), &want).unwrap();
    let got = res.output("y").expect("output y");
    let cmp = compare("y", got, &want, tol).unwrap();
    assert!(cmp.pass, "{} {}: {cmp}", target.name, precision.name());
}

fn shape(c: Case, last: usize) -> Vec<u64> {
    let mut s = vec![];
    if c.batch > 1 {
        s.push(c.batch as u64);
    }
    s.extend([c.rows as u64, last as u64]);
    s
}

fn edge() -> Target {
    Target::preset("edge").unwrap()
}

const PLAIN: Case = Case {
    rows: 256,
    batch: 1,
    k: 512,
    n: 512,
    tile: [64, 128, 128],
    bias: false,
    act: "none",
    residual: false,
};

#[test]
fn a_plain_matmul_through_a_tile_kernel_matches_the_reference() {
    run_case(PLAIN, &edge(), Precision::Fp32);
    run_case(PLAIN, &edge(), Precision::Bf16);
}

#[test]
fn bias_and_every_activation_in_the_tile_epilogue_match_the_reference() {
    for act in ["relu", "gelu", "gelu_tanh", "silu"] {
        let c = Case {
            bias: true,
            act,
            ..PLAIN
        };
        run_case(c, &edge(), Precision::Fp32);
    }
}

#[test]
fn a_residual_with_bias_and_activation_matches_the_reference_in_both_precisions() {
    let c = Case {
        bias: true,
        act: "silu",
        residual: true,
        ..PLAIN
    };
    run_case(c, &edge(), Precision::Fp32);
    run_case(c, &edge(), Precision::Bf16);
}

#[test]
fn leading_dims_fold_into_rows_and_partial_tiles_are_cut_at_the_edges() {
    // 2 × 150 rows (partial last row block), K 500 (partial last step), N 300 (partial last
    // column block).
    let c = Case {
        rows: 150,
        batch: 2,
        k: 500,
        n: 300,
        bias: true,
        act: "gelu_tanh",
        residual: true,
        ..PLAIN
    };
    run_case(c, &edge(), Precision::Fp32);
}

#[test]
fn a_matmul_spread_over_the_datacenter_cores_matches_the_reference() {
    // HBM made fast enough that a test-sized matmul is compute-bound (the tile path's rule).
    let mut t = Target::preset("datacenter").unwrap();
    t.hbm.bandwidth_gb_s *= 100.0;
    let c = Case {
        rows: 1000,
        batch: 1,
        k: 1536,
        n: 1024,
        tile: [128, 512, 128],
        bias: true,
        act: "gelu",
        residual: true,
    };
    run_case(c, &t, Precision::Bf16);
    run_case(c, &t, Precision::Fp32);
}

#[test]
fn elementwise_ops_through_tile_kernels_match_the_reference() {
    // exp, a row broadcast (bias) add, sub, tanh, mul and a row broadcast div over 3×100 rows
    // of 300: every op a tile.kernel over row tiles (partial last tile on both presets).
    let (b, r, c) = (3usize, 100usize, 300usize);
    let bias: Vec<f32> = values(c, 21).iter().map(|v| v + 2.0).collect();
    let t = format!("tensor<{b}x{r}x{c}xf32>");
    let src = format!(
        r#"module {{
  func.func @main(%x: {t} {{graph.name = "x"}}) -> ({t} {{graph.name = "y"}}) {{
    %bias = "graph.constant"() {{value = {bias}}} : () -> tensor<{c}xf32> loc("bias")
    %e = "graph.exp"(%x) : ({t}) -> {t} loc("Exp")
    %a = "graph.add"(%e, %bias) : ({t}, tensor<{c}xf32>) -> {t} loc("Add")
    %s = "graph.sub"(%a, %x) : ({t}, {t}) -> {t} loc("Sub")
    %h = "graph.tanh"(%s) : ({t}) -> {t} loc("Tanh")
    %m = "graph.mul"(%h, %e) : ({t}, {t}) -> {t} loc("Mul")
    %y = "graph.div"(%m, %bias) : ({t}, tensor<{c}xf32>) -> {t} loc("Div")
    func.return %y : {t}
  }}
}}
"#,
        bias = dense(&bias, &[c]),
    );
    let x = values(b * r * c, 22);
    let want: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let (v, bj) = (v as f64, bias[i % c] as f64);
            let e = v.exp();
            ((e + bj - v).tanh() * e / bj) as f32
        })
        .collect();
    rows_match(&src, &x, &want, &[b, r, c], 6);
}

#[test]
fn softmax_and_norm_rows_through_tile_kernels_match_the_reference() {
    // 2×96 rows of 200: a layer norm with scale and bias, an RMS norm with a scale, a softmax;
    // each a tile.kernel over row tiles.
    let (b, r, c) = (2usize, 96usize, 200usize);
    let g: Vec<f32> = values(c, 31).iter().map(|v| v + 1.5).collect();
    let beta = values(c, 32);
    let t = format!("tensor<{b}x{r}x{c}xf32>");
    let src = format!(
        r#"module {{
  func.func @main(%x: {t} {{graph.name = "x"}}) -> ({t} {{graph.name = "y"}}) {{
    %g = "graph.constant"() {{value = {g}}} : () -> tensor<{c}xf32> loc("g")
    %beta = "graph.constant"() {{value = {beta}}} : () -> tensor<{c}xf32> loc("beta")
    %l = "graph.norm"(%x, %g, %beta) {{kind = "layer", axis = -1 : i64, epsilon = 1.0e-5 : f32}} : ({t}, tensor<{c}xf32>, tensor<{c}xf32>) -> {t} loc("LayerNorm")
    %n = "graph.norm"(%l, %g) {{kind = "rms", axis = -1 : i64, epsilon = 1.0e-6 : f32}} : ({t}, tensor<{c}xf32>) -> {t} loc("RmsNorm")
    %y = "graph.softmax"(%n) {{axis = -1 : i64}} : ({t}) -> {t} loc("Softmax")
    func.return %y : {t}
  }}
}}
"#,
        g = dense(&g, &[c]),
        beta = dense(&beta, &[c]),
    );
    let x = values(b * r * c, 33);
    let mut want = vec![0f32; x.len()];
    for (row, out) in x.chunks(c).zip(want.chunks_mut(c)) {
        let n = c as f64;
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let l: Vec<f64> = (0..c)
            .map(|j| (row[j] as f64 - mean) / (var + 1e-5).sqrt() * g[j] as f64 + beta[j] as f64)
            .collect();
        let ms = l.iter().map(|v| v * v).sum::<f64>() / n;
        let nn: Vec<f64> = (0..c)
            .map(|j| l[j] / (ms + 1e-6).sqrt() * g[j] as f64)
            .collect();
        let mx = nn.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let sum: f64 = nn.iter().map(|v| (v - mx).exp()).sum();
        for j in 0..c {
            out[j] = ((nn[j] - mx).exp() / sum) as f32;
        }
    }
    rows_match(&src, &x, &want, &[b, r, c], 3);
}

/// Runs `src` (input `x`, output `y`) on edge in fp32 and on datacenter in bf16: it must hold
/// `kernels` tile kernels and match `want`.
fn rows_match(src: &str, x: &[f32], want: &[f32], shape: &[usize], kernels: usize) {
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    for (target, precision) in [("edge", Precision::Fp32), ("datacenter", Precision::Bf16)] {
        let (ir, prog) = compile_for(src, &Target::preset(target).unwrap(), precision);
        assert_eq!(ir.matches("\"tile.kernel\"").count(), kernels, "{ir}");
        let input = Tensor::from_f32(DType::F32, shape.clone(), x).unwrap();
        let res = run(&prog, &[("x".into(), input)], &checked())
            .unwrap_or_else(|e| panic!("emulator: {e}"));
        let tol = match precision {
            Precision::Fp32 => Tolerance::FP32,
            Precision::Bf16 => Tolerance::BF16,
        };
        let want = Tensor::from_f32(DType::F32, shape.clone(), want).unwrap();
        let cmp = compare("y", res.output("y").expect("y"), &want, tol).unwrap();
        assert!(cmp.pass, "{target} {}: {cmp}", precision.name());
    }
}
