//! End-to-end backend tests: graph IR → `llmpu compile` pipeline → program → emulator, compared
//! with a plain-Rust reference computed here.

mod common;
use common::{compile_text, dense, values};
use llmpu_compiler::backend::Precision;
use llmpu_compiler::parser::parse_module;
use llmpu_compiler::pass::PassManagerOptions;
use llmpu_isa::DType;
use llmpu_runtime::compare::{Tolerance, compare};
use llmpu_runtime::{RunOptions, Tensor, run};

fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for p in 0..k {
            for j in 0..n {
                c[i * n + j] += a[i * k + p] * b[p * n + j];
            }
        }
    }
    c
}

/// x[8,32] · w[32,48] + b → GELU(tanh) → softmax and layer norm; the norm output leaves transposed.
fn mlp_block(precision: Precision, target: &str) {
    let (m, k, n) = (8usize, 32usize, 48usize);
    let w = values(k * n, 1);
    let b = values(n, 2);
    let g = values(n, 3);
    let beta = values(n, 4);
    let src = format!(
        r#"module {{
  func.func @main(%x: tensor<8x32xf32> {{graph.name = "x"}}) -> (tensor<8x48xf32> {{graph.name = "probs"}}, tensor<48x8xf32> {{graph.name = "normed_t"}}) {{
    %w = "graph.constant"() {{value = {w}}} : () -> tensor<32x48xf32> loc("w")
    %b = "graph.constant"() {{value = {b}}} : () -> tensor<48xf32> loc("b")
    %g = "graph.constant"() {{value = {g}}} : () -> tensor<48xf32> loc("g")
    %beta = "graph.constant"() {{value = {beta}}} : () -> tensor<48xf32> loc("beta")
    %h = "graph.matmul"(%x, %w) : (tensor<8x32xf32>, tensor<32x48xf32>) -> tensor<8x48xf32> loc("MatMul_0")
    %hb = "graph.add"(%h, %b) : (tensor<8x48xf32>, tensor<48xf32>) -> tensor<8x48xf32> loc("Add_0")
    %a = "graph.gelu"(%hb) {{approximate = "tanh"}} : (tensor<8x48xf32>) -> tensor<8x48xf32> loc("Gelu_0")
    %p = "graph.softmax"(%a) {{axis = -1 : i64}} : (tensor<8x48xf32>) -> tensor<8x48xf32> loc("Softmax_0")
    %ln = "graph.layer_norm"(%a, %g, %beta) {{axis = -1 : i64, epsilon = 1.0e-5 : f32}} : (tensor<8x48xf32>, tensor<48xf32>, tensor<48xf32>) -> tensor<8x48xf32> loc("LayerNorm_0")
    %t = "graph.transpose"(%ln) {{perm = array<i64: 1, 0>}} : (tensor<8x48xf32>) -> tensor<48x8xf32> loc("Transpose_0")
    func.return %p, %t : tensor<8x48xf32>, tensor<48x8xf32>
  }}
}}
"#,
        w = dense(&w, &[k, n]),
        b = dense(&b, &[n]),
        g = dense(&g, &[n]),
        beta = dense(&beta, &[n]),
    );
    let prog = compile_text(&src, target, precision);
    let x = values(m * k, 5);
    let input = Tensor::from_f32(DType::F32, vec![m as u64, k as u64], &x).unwrap();
    let res = run(&prog, &[("x".into(), input)], &common::checked())
        .unwrap_or_else(|e| panic!("emulator: {e}"));
    // Reference.
    let mut h = matmul(&x, &w, m, k, n);
    for i in 0..m {
        for j in 0..n {
            let v = h[i * n + j] + b[j];
            let t = (0.797_884_6f32 * (v + 0.044715 * v * v * v)).tanh();
            h[i * n + j] = 0.5 * v * (1.0 + t);
        }
    }
    let mut probs = vec![0f32; m * n];
    let mut normt = vec![0f32; m * n];
    for i in 0..m {
        let row = &h[i * n..(i + 1) * n];
        let mx = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let s: f32 = row.iter().map(|v| (v - mx).exp()).sum();
        let mean: f32 = row.iter().sum::<f32>() / n as f32;
        let var: f32 = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
        for j in 0..n {
            probs[i * n + j] = (row[j] - mx).exp() / s;
            normt[j * m + i] = (row[j] - mean) / (var + 1e-5).sqrt() * g[j] + beta[j];
        }
    }
    let tol = match precision {
        Precision::Fp32 => Tolerance::FP32,
        Precision::Bf16 => Tolerance::BF16,
    };
    for (name, want, shape) in [
        ("probs", probs, vec![m as u64, n as u64]),
        ("normed_t", normt, vec![n as u64, m as u64]),
    ] {
        let want = Tensor::from_f32(DType::F32, shape, &want).unwrap();
        let got = res.output(name).expect("output");
        let c = compare(name, got, &want, tol).unwrap();
        assert!(c.pass, "{target} {}: {c}", precision.name());
    }
}

#[test]
fn mlp_block_matches_reference_in_fp32_on_edge() {
    mlp_block(Precision::Fp32, "edge");
}

#[test]
fn mlp_block_matches_reference_in_bf16_on_edge() {
    mlp_block(Precision::Bf16, "edge");
}

#[test]
fn mlp_block_matches_reference_on_datacenter() {
    mlp_block(Precision::Fp32, "datacenter");
    mlp_block(Precision::Bf16, "datacenter");
}

/// `x[2, S, K] · w[K, N] + b → GELU(tanh) → + h` (h an input of the output's shape) and
/// `x · w + r` with `r[N]` broadcast: both residual adds fuse into the matmul epilogue (the
/// result tiles read `h` / `r` per tile, several tiles per output) and match the f32 reference.
fn residual_block(precision: Precision, target: &str) {
    let (bs, s, k, n) = (2usize, 96usize, 64usize, 160usize);
    let m = bs * s;
    let w = values(k * n, 11);
    let b = values(n, 12);
    let r = values(n, 13);
    let src = format!(
        r#"module {{
  func.func @main(%x: tensor<2x96x64xf32> {{graph.name = "x"}}, %h: tensor<2x96x160xf32> {{graph.name = "h"}}) -> (tensor<2x96x160xf32> {{graph.name = "y"}}, tensor<2x96x160xf32> {{graph.name = "z"}}) {{
    %w = "graph.constant"() {{value = {w}}} : () -> tensor<64x160xf32> loc("w")
    %b = "graph.constant"() {{value = {b}}} : () -> tensor<160xf32> loc("b")
    %r = "graph.constant"() {{value = {r}}} : () -> tensor<160xf32> loc("r")
    %m1 = "graph.matmul"(%x, %w) : (tensor<2x96x64xf32>, tensor<64x160xf32>) -> tensor<2x96x160xf32> loc("MatMul_0")
    %b1 = "graph.add"(%m1, %b) : (tensor<2x96x160xf32>, tensor<160xf32>) -> tensor<2x96x160xf32> loc("Add_bias")
    %a1 = "graph.gelu"(%b1) {{approximate = "tanh"}} : (tensor<2x96x160xf32>) -> tensor<2x96x160xf32> loc("Gelu_0")
    %y = "graph.add"(%h, %a1) : (tensor<2x96x160xf32>, tensor<2x96x160xf32>) -> tensor<2x96x160xf32> loc("Add_residual")
    %m2 = "graph.matmul"(%x, %w) : (tensor<2x96x64xf32>, tensor<64x160xf32>) -> tensor<2x96x160xf32> loc("MatMul_1")
    %z = "graph.add"(%m2, %y) : (tensor<2x96x160xf32>, tensor<2x96x160xf32>) -> tensor<2x96x160xf32> loc("Add_residual_1")
    %z2 = "graph.add"(%z, %r) : (tensor<2x96x160xf32>, tensor<160xf32>) -> tensor<2x96x160xf32> loc("Add_row")
    func.return %y, %z2 : tensor<2x96x160xf32>, tensor<2x96x160xf32>
  }}
}}
"#,
        w = dense(&w, &[k, n]),
        b = dense(&b, &[n]),
        r = dense(&r, &[n]),
    );
    let mut module = parse_module(&src).unwrap();
    let mut pm = llmpu_compiler::pass::PassManager::from_names(
        &["fuse-matmul-epilogue"],
        PassManagerOptions::default(),
    )
    .unwrap();
    pm.run(&mut module, &mut std::io::sink()).unwrap();
    let text = llmpu_compiler::ir::print::print_module(&module);
    assert_eq!(text.matches("residual = true").count(), 2, "{text}");
    let prog = compile_text(&src, target, precision);
    let x = values(m * k, 14);
    let h = values(m * n, 15);
    let inputs = [
        (
            "x".into(),
            Tensor::from_f32(DType::F32, vec![bs as u64, s as u64, k as u64], &x).unwrap(),
        ),
        (
            "h".into(),
            Tensor::from_f32(DType::F32, vec![bs as u64, s as u64, n as u64], &h).unwrap(),
        ),
    ];
    let res = run(&prog, &inputs, &common::checked()).unwrap_or_else(|e| panic!("emulator: {e}"));
    let p = matmul(&x, &w, m, k, n);
    let mut y = vec![0f32; m * n];
    let mut z = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let v = p[i * n + j] + b[j];
            let t = (0.797_884_6f32 * (v + 0.044715 * v * v * v)).tanh();
            y[i * n + j] = 0.5 * v * (1.0 + t) + h[i * n + j];
            z[i * n + j] = p[i * n + j] + y[i * n + j] + r[j];
        }
    }
    let tol = match precision {
        Precision::Fp32 => Tolerance::FP32,
        Precision::Bf16 => Tolerance::BF16,
    };
    for (name, want) in [("y", y), ("z", z)] {
        let want =
            Tensor::from_f32(DType::F32, vec![bs as u64, s as u64, n as u64], &want).unwrap();
        let c = compare(name, res.output(name).expect("output"), &want, tol).unwrap();
        assert!(c.pass, "{target} {}: {c}", precision.name());
    }
}

#[test]
fn residual_add_fused_into_matmul_epilogue_matches_reference() {
    residual_block(Precision::Fp32, "edge");
    residual_block(Precision::Bf16, "edge");
    residual_block(Precision::Fp32, "datacenter");
    residual_block(Precision::Bf16, "datacenter");
}

/// GPT-2-style attention over q, k, v inputs `[1, H, S, D]` (K/V with `hkv` heads broadcast to H
/// through unsqueeze → expand → reshape when `hkv < H`): scores / √D, causal `where` with the
/// float minimum, softmax, · V.
fn attention_src(h: usize, hkv: usize, s: usize, d: usize) -> String {
    let mask: Vec<String> = (0..s)
        .map(|i| {
            let row: Vec<&str> = (0..s)
                .map(|j| if j <= i { "true" } else { "false" })
                .collect();
            format!("[{}]", row.join(", "))
        })
        .collect();
    let n = h / hkv;
    let kv_ty = format!("tensor<1x{hkv}x{s}x{d}xf32>");
    let full = format!("tensor<1x{h}x{s}x{d}xf32>");
    let (k, v, bcast) = if hkv == h {
        ("%k".to_string(), "%v".to_string(), String::new())
    } else {
        let mut b = String::new();
        for x in ["k", "v"] {
            b += &format!(
                r#"    %{x}u = "graph.unsqueeze"(%{x}) : ({kv_ty}) -> tensor<1x{hkv}x1x{s}x{d}xf32> loc("Unsqueeze_{x}")
    %{x}e = "graph.expand"(%{x}u, %eshape) : (tensor<1x{hkv}x1x{s}x{d}xf32>, tensor<5xi64>) -> tensor<1x{hkv}x{n}x{s}x{d}xf32> loc("Expand_{x}")
    %{x}r = "graph.reshape"(%{x}e) : (tensor<1x{hkv}x{n}x{s}x{d}xf32>) -> {full} loc("Reshape_{x}")
"#
            );
        }
        b = format!(
            "    %eshape = \"graph.constant\"() {{value = dense<[1, {hkv}, {n}, {s}, {d}]> : tensor<5xi64>}} : () -> tensor<5xi64> loc(\"eshape\")\n{b}"
        );
        ("%kr".to_string(), "%vr".to_string(), b)
    };
    format!(
        r#"module {{
  func.func @main(%q: {full} {{graph.name = "q"}}, %k: {kv_ty} {{graph.name = "k"}}, %v: {kv_ty} {{graph.name = "v"}}) -> ({full} {{graph.name = "out"}}) {{
{bcast}    %kt = "graph.transpose"({k}) {{perm = array<i64: 0, 1, 3, 2>}} : ({full}) -> tensor<1x{h}x{d}x{s}xf32> loc("Transpose_k")
    %s = "graph.matmul"(%q, %kt) : ({full}, tensor<1x{h}x{d}x{s}xf32>) -> tensor<1x{h}x{s}x{s}xf32> loc("MatMul_qk")
    %c = "graph.constant"() {{value = dense<{sd}> : tensor<f32>}} : () -> tensor<f32> loc("sqrt_d")
    %sc = "graph.div"(%s, %c) : (tensor<1x{h}x{s}x{s}xf32>, tensor<f32>) -> tensor<1x{h}x{s}x{s}xf32> loc("Div_scale")
    %mask = "graph.constant"() {{value = dense<[[[{mask}]]]> : tensor<1x1x{s}x{s}xi1>}} : () -> tensor<1x1x{s}x{s}xi1> loc("causal_mask")
    %min = "graph.constant"() {{value = dense<-3.40282347e+38> : tensor<f32>}} : () -> tensor<f32> loc("min")
    %w = "graph.where"(%mask, %sc, %min) : (tensor<1x1x{s}x{s}xi1>, tensor<1x{h}x{s}x{s}xf32>, tensor<f32>) -> tensor<1x{h}x{s}x{s}xf32> loc("Where_mask")
    %p = "graph.softmax"(%w) {{axis = -1 : i64}} : (tensor<1x{h}x{s}x{s}xf32>) -> tensor<1x{h}x{s}x{s}xf32> loc("Softmax")
    %o = "graph.matmul"(%p, {v}) : (tensor<1x{h}x{s}x{s}xf32>, {full}) -> {full} loc("MatMul_pv")
    func.return %o : {full}
  }}
}}
"#,
        mask = mask.join(", "),
        sd = (d as f32).sqrt(),
    )
}

fn attention_reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    h: usize,
    hkv: usize,
    s: usize,
    d: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; h * s * d];
    for hi in 0..h {
        let hk = hi / (h / hkv);
        for i in 0..s {
            let qrow = &q[(hi * s + i) * d..(hi * s + i + 1) * d];
            let scores: Vec<f32> = (0..=i)
                .map(|j| {
                    let krow = &k[(hk * s + j) * d..(hk * s + j + 1) * d];
                    qrow.iter().zip(krow).map(|(a, b)| a * b).sum::<f32>() / (d as f32).sqrt()
                })
                .collect();
            let mx = scores.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let e: Vec<f32> = scores.iter().map(|x| (x - mx).exp()).collect();
            let sum: f32 = e.iter().sum();
            for (j, w) in e.iter().enumerate() {
                for c in 0..d {
                    out[(hi * s + i) * d + c] += w / sum * v[(hk * s + j) * d + c];
                }
            }
        }
    }
    out
}

fn run_attention(
    h: usize,
    hkv: usize,
    s: usize,
    d: usize,
    precision: Precision,
    target: &str,
) -> llmpu_runtime::Report {
    let src = attention_src(h, hkv, s, d);
    let mut m = parse_module(&src).unwrap_or_else(|e| panic!("{e:?}"));
    let mut pm = llmpu_compiler::pass::PassManager::parse_pipeline(
        "canonicalize,fuse-attention",
        PassManagerOptions::default(),
    )
    .unwrap();
    pm.run(&mut m, &mut std::io::sink()).unwrap();
    let text = llmpu_compiler::ir::print_module(&m);
    assert!(
        text.contains("graph.fused_attention") && text.contains("causal = true"),
        "{text}"
    );
    assert!(!text.contains("graph.softmax"), "{text}");
    let prog = compile_text(&src, target, precision);
    let q = values(h * s * d, 11);
    let k = values(hkv * s * d, 12);
    let v = values(hkv * s * d, 13);
    let t = |x: &[f32], heads: usize| {
        Tensor::from_f32(DType::F32, vec![1, heads as u64, s as u64, d as u64], x).unwrap()
    };
    let res = run(
        &prog,
        &[
            ("q".into(), t(&q, h)),
            ("k".into(), t(&k, hkv)),
            ("v".into(), t(&v, hkv)),
        ],
        &common::checked(),
    )
    .unwrap_or_else(|e| panic!("emulator: {e}"));
    let want = t(&attention_reference(&q, &k, &v, h, hkv, s, d), h);
    let tol = match precision {
        Precision::Fp32 => Tolerance::FP32,
        Precision::Bf16 => Tolerance::BF16,
    };
    let c = compare("out", res.output("out").unwrap(), &want, tol).unwrap();
    assert!(c.pass, "h={h} hkv={hkv} s={s}: {c}");
    res.report
}

#[test]
fn causal_attention_is_fused_and_matches_reference() {
    run_attention(4, 4, 16, 16, Precision::Fp32, "edge");
    run_attention(4, 4, 40, 16, Precision::Bf16, "edge");
    run_attention(2, 2, 24, 32, Precision::Fp32, "datacenter");
}

#[test]
fn grouped_query_attention_reads_the_shared_kv_heads() {
    run_attention(4, 2, 16, 16, Precision::Fp32, "edge");
}

#[test]
fn flash_attention_hbm_traffic_grows_linearly_with_sequence_length() {
    let bytes: Vec<f64> = [64, 128, 256]
        .iter()
        .map(|&s| {
            let r = run_attention(2, 2, s, 32, Precision::Bf16, "edge");
            (r.hbm_read_bytes + r.hbm_write_bytes) as f64
        })
        .collect();
    for w in bytes.windows(2) {
        let ratio = w[1] / w[0];
        assert!(
            ratio < 2.3,
            "traffic grew {ratio:.2}x for 2x the sequence: {bytes:?}"
        );
    }
}

/// RMSNorm and GELU(tanh) written out op by op, as exporters emit them, fuse into `graph.norm` and
/// `graph.matmul_epilogue` and still match the reference.
#[test]
fn decomposed_rms_norm_and_gelu_fuse_and_match_reference() {
    let (m, k, n) = (8usize, 32usize, 48usize);
    let w = values(k * n, 21);
    let b = values(n, 22);
    let g = values(k, 23);
    let src = format!(
        r#"module {{
  func.func @main(%x: tensor<8x32xf32> {{graph.name = "x"}}) -> (tensor<8x48xf32> {{graph.name = "y"}}) {{
    %two = "graph.constant"() {{value = dense<2.0> : tensor<f32>}} : () -> tensor<f32> loc("two")
    %eps = "graph.constant"() {{value = dense<1.0e-6> : tensor<f32>}} : () -> tensor<f32> loc("eps")
    %one = "graph.constant"() {{value = dense<1.0> : tensor<f32>}} : () -> tensor<f32> loc("one")
    %axes = "graph.constant"() {{value = dense<[-1]> : tensor<1xi64>}} : () -> tensor<1xi64> loc("axes")
    %g = "graph.constant"() {{value = {g}}} : () -> tensor<32xf32> loc("g")
    %p = "graph.pow"(%x, %two) : (tensor<8x32xf32>, tensor<f32>) -> tensor<8x32xf32> loc("Pow")
    %ms = "graph.reduce_mean"(%p, %axes) {{keepdims = 1 : i64}} : (tensor<8x32xf32>, tensor<1xi64>) -> tensor<8x1xf32> loc("ReduceMean")
    %ae = "graph.add"(%ms, %eps) : (tensor<8x1xf32>, tensor<f32>) -> tensor<8x1xf32> loc("AddEps")
    %sq = "graph.sqrt"(%ae) : (tensor<8x1xf32>) -> tensor<8x1xf32> loc("Sqrt")
    %rc = "graph.div"(%one, %sq) : (tensor<f32>, tensor<8x1xf32>) -> tensor<8x1xf32> loc("Recip")
    %nx = "graph.mul"(%x, %rc) : (tensor<8x32xf32>, tensor<8x1xf32>) -> tensor<8x32xf32> loc("Normalize")
    %sx = "graph.mul"(%g, %nx) : (tensor<32xf32>, tensor<8x32xf32>) -> tensor<8x32xf32> loc("Scale")
    %w = "graph.constant"() {{value = {w}}} : () -> tensor<32x48xf32> loc("w")
    %b = "graph.constant"() {{value = {b}}} : () -> tensor<48xf32> loc("b")
    %h = "graph.matmul"(%sx, %w) : (tensor<8x32xf32>, tensor<32x48xf32>) -> tensor<8x48xf32> loc("MatMul")
    %hb = "graph.add"(%b, %h) : (tensor<48xf32>, tensor<8x48xf32>) -> tensor<8x48xf32> loc("AddBias")
    %c3 = "graph.constant"() {{value = dense<3.0> : tensor<f32>}} : () -> tensor<f32> loc("c3")
    %ch = "graph.constant"() {{value = dense<0.5> : tensor<f32>}} : () -> tensor<f32> loc("ch")
    %cg = "graph.constant"() {{value = dense<0.044715> : tensor<f32>}} : () -> tensor<f32> loc("cg")
    %cs = "graph.constant"() {{value = dense<0.797884583> : tensor<f32>}} : () -> tensor<f32> loc("cs")
    %half = "graph.mul"(%hb, %ch) : (tensor<8x48xf32>, tensor<f32>) -> tensor<8x48xf32> loc("Gelu_mul_half")
    %cube = "graph.pow"(%hb, %c3) : (tensor<8x48xf32>, tensor<f32>) -> tensor<8x48xf32> loc("Gelu_pow")
    %t1 = "graph.mul"(%cube, %cg) : (tensor<8x48xf32>, tensor<f32>) -> tensor<8x48xf32> loc("Gelu_mul_c")
    %t2 = "graph.add"(%hb, %t1) : (tensor<8x48xf32>, tensor<8x48xf32>) -> tensor<8x48xf32> loc("Gelu_add")
    %t3 = "graph.mul"(%t2, %cs) : (tensor<8x48xf32>, tensor<f32>) -> tensor<8x48xf32> loc("Gelu_mul_s")
    %t4 = "graph.tanh"(%t3) : (tensor<8x48xf32>) -> tensor<8x48xf32> loc("Gelu_tanh")
    %t5 = "graph.add"(%t4, %one) : (tensor<8x48xf32>, tensor<f32>) -> tensor<8x48xf32> loc("Gelu_add1")
    %y = "graph.mul"(%half, %t5) : (tensor<8x48xf32>, tensor<8x48xf32>) -> tensor<8x48xf32> loc("Gelu_out")
    func.return %y : tensor<8x48xf32>
  }}
}}
"#,
        g = dense(&g, &[k]),
        w = dense(&w, &[k, n]),
        b = dense(&b, &[n]),
    );
    let mut module = parse_module(&src).unwrap();
    let mut pm = llmpu_compiler::pass::PassManager::parse_pipeline(
        "canonicalize,fuse-norm,fuse-matmul-epilogue",
        PassManagerOptions::default(),
    )
    .unwrap();
    pm.run(&mut module, &mut std::io::sink()).unwrap();
    let text = llmpu_compiler::ir::print_module(&module);
    assert!(
        text.contains("\"graph.norm\"") && text.contains("kind = \"rms\""),
        "{text}"
    );
    assert!(text.contains("activation = \"gelu_tanh\""), "{text}");
    assert!(!text.contains("graph.tanh"), "{text}");
    let x = values(m * k, 24);
    let mut want = vec![0f32; m * n];
    let mut nx = vec![0f32; m * k];
    for i in 0..m {
        let row = &x[i * k..(i + 1) * k];
        let ms: f32 = row.iter().map(|v| v * v).sum::<f32>() / k as f32;
        for j in 0..k {
            nx[i * k + j] = row[j] / (ms + 1e-6).sqrt() * g[j];
        }
    }
    let h = matmul(&nx, &w, m, k, n);
    for i in 0..m {
        for j in 0..n {
            let v = h[i * n + j] + b[j];
            want[i * n + j] = 0.5 * v * (1.0 + (0.797_884_6 * (v + 0.044715 * v * v * v)).tanh());
        }
    }
    for (precision, tol) in [
        (Precision::Fp32, Tolerance::FP32),
        (Precision::Bf16, Tolerance::BF16),
    ] {
        let prog = compile_text(&src, "edge", precision);
        let input = Tensor::from_f32(DType::F32, vec![m as u64, k as u64], &x).unwrap();
        let res = run(&prog, &[("x".into(), input)], &common::checked()).unwrap();
        let want = Tensor::from_f32(DType::F32, vec![m as u64, n as u64], &want).unwrap();
        let c = compare("y", res.output("y").unwrap(), &want, tol).unwrap();
        assert!(c.pass, "{}: {c}", precision.name());
    }
}

#[test]
fn attention_heads_are_split_across_the_datacenter_cores() {
    let r = run_attention(8, 8, 32, 32, Precision::Bf16, "datacenter");
    let busy = r
        .cores
        .iter()
        .filter(|c| c.units[2].instructions > 0)
        .count();
    assert_eq!(busy, 8, "every core runs a head: {:?}", r.cores);
}

/// Resident K/V with causal skipping: each head's K and V cross HBM once (traffic = the
/// compulsory Q, K, V, O bytes) and only key blocks on or below the diagonal are multiplied, so
/// the matrix work is about half of the full `S×S` products.
#[test]
fn causal_prefill_reads_kv_once_and_skips_blocks_above_the_diagonal() {
    let (h, s, d) = (2usize, 256usize, 32usize);
    let r = run_attention(h, h, s, d, Precision::Bf16, "edge");
    // q, k, v and the output are f32 tensors of the graph.
    let compulsory = 4 * h * s * d * 4;
    assert_eq!(
        r.hbm_read_bytes + r.hbm_write_bytes,
        compulsory as u64,
        "HBM traffic"
    );
    let full = (2 * h * s * s * d) as u64;
    // Q blocks of 32 rows (the edge array) attend to their key prefix in 32-key steps:
    // Σ_i 32·32(i+1)·d per matmul, 8 blocks.
    let computed = (2 * h * 32 * 32 * d * (1..=8).sum::<usize>()) as u64;
    assert_eq!(r.macs, computed);
    assert!(r.macs * 100 < full * 57, "{} of {full} MACs", r.macs);
}

/// A key prefix longer than one accumulator buffer (edge: 640 keys at head dim 16) is split into
/// chunks combined by the online softmax; both precisions still match the reference.
#[test]
fn resident_attention_with_chunked_key_prefixes_matches_reference() {
    run_attention(1, 1, 720, 16, Precision::Fp32, "edge");
    run_attention(2, 1, 700, 16, Precision::Bf16, "edge");
}

/// Fewer heads than cores: the Q blocks of the heads are balanced over the cores (longest key
/// prefix first), each core loading the K/V prefix its blocks need.
#[test]
fn few_heads_spread_their_q_blocks_over_the_datacenter_cores() {
    let r = run_attention(2, 2, 300, 32, Precision::Bf16, "datacenter");
    let busy = r
        .cores
        .iter()
        .filter(|c| c.units[2].instructions > 0)
        .count();
    assert_eq!(busy, 6, "2 heads x 3 Q blocks over 8 cores: {:?}", r.cores);
}

/// The compiled 512×256×512 bf16 GEMM reaches the hand-written `examples/asm/gemm.s` quality bar
/// (≥ 90% of the edge part's peak; the hand-written one reaches 96%).
#[test]
fn compiled_gemm_runs_near_peak_on_edge() {
    let src = r#"module {
  func.func @main(%a: tensor<512x256xbf16> {graph.name = "A"}, %b: tensor<256x512xbf16> {graph.name = "B"}) -> (tensor<512x512xbf16> {graph.name = "C"}) {
    %c = "graph.matmul"(%a, %b) : (tensor<512x256xbf16>, tensor<256x512xbf16>) -> tensor<512x512xbf16> loc("MatMul_0")
    func.return %c : tensor<512x512xbf16>
  }
}
"#;
    let prog = compile_text(src, "edge", Precision::Bf16);
    let opts = RunOptions {
        timing_only: true,
        ..Default::default()
    };
    let r = run(&prog, &[], &opts).unwrap();
    assert!(
        r.report.peak_fraction >= 0.90,
        "{} cycles, {:.1}% of peak",
        r.report.cycles,
        100.0 * r.report.peak_fraction
    );
}

/// Decode attention over a 4096-token bf16 cache on `datacenter` (32 heads × 128, 4 per core):
/// the wide K/V blocks arrive and are multiplied in pieces of four array widths, so the matrix
/// engine starts on the first piece and the run ends shortly after the last byte; within 12% of
/// the HBM bound of the K/V bytes (one block at a time it took 23% over).
#[test]
fn decode_attention_runs_near_the_bandwidth_bound_on_datacenter() {
    let (h, skv, d) = (32usize, 4096usize, 128usize);
    let q_ty = format!("tensor<1x{h}x1x{d}xbf16>");
    let kv_ty = format!("tensor<1x{h}x{skv}x{d}xbf16>");
    let s_ty = format!("tensor<1x{h}x1x{skv}xbf16>");
    let src = format!(
        r#"module {{
  func.func @main(%q: {q_ty} {{graph.name = "q"}}, %k: {kv_ty} {{graph.name = "k"}}, %v: {kv_ty} {{graph.name = "v"}}) -> ({q_ty} {{graph.name = "out"}}) {{
    %kt = "graph.transpose"(%k) {{perm = array<i64: 0, 1, 3, 2>}} : ({kv_ty}) -> tensor<1x{h}x{d}x{skv}xbf16> loc("Transpose_k")
    %s = "graph.matmul"(%q, %kt) : ({q_ty}, tensor<1x{h}x{d}x{skv}xbf16>) -> {s_ty} loc("MatMul_qk")
    %p = "graph.softmax"(%s) {{axis = -1 : i64}} : ({s_ty}) -> {s_ty} loc("Softmax")
    %o = "graph.matmul"(%p, %v) : ({s_ty}, {kv_ty}) -> {q_ty} loc("MatMul_pv")
    func.return %o : {q_ty}
  }}
}}
"#
    );
    let prog = compile_text(&src, "datacenter", Precision::Bf16);
    let opts = RunOptions {
        timing_only: true,
        ..Default::default()
    };
    let r = run(&prog, &[], &opts).unwrap().report;
    let t = llmpu_isa::Target::preset("datacenter").unwrap();
    let bound = (2 * h * skv * d * 2) as f64 / t.hbm_bytes_per_cycle();
    assert!(
        (r.cycles as f64) < 1.12 * bound,
        "{} cycles against a {bound:.0}-cycle bandwidth bound",
        r.cycles
    );
}

/// Decode-shaped matmul on `datacenter`: one row block (A resident in SRAM, loaded once per core),
/// the weight columns spread as single tiles over the cores; matches the reference in both
/// precisions.
#[test]
fn decode_matmul_streams_weights_over_the_cores_and_matches_reference() {
    let (m, k, n) = (3usize, 2048usize, 512usize);
    let src = format!(
        r#"module {{
  func.func @main(%x: tensor<{m}x{k}xf32> {{graph.name = "x"}}, %w: tensor<{k}x{n}xf32> {{graph.name = "w"}}) -> (tensor<{m}x{n}xf32> {{graph.name = "y"}}) {{
    %y = "graph.matmul"(%x, %w) : (tensor<{m}x{k}xf32>, tensor<{k}x{n}xf32>) -> tensor<{m}x{n}xf32> loc("MatMul_0")
    func.return %y : tensor<{m}x{n}xf32>
  }}
}}
"#
    );
    let x = values(m * k, 31);
    let w = values(k * n, 32);
    let want = matmul(&x, &w, m, k, n);
    for precision in [Precision::Fp32, Precision::Bf16] {
        let prog = compile_text(&src, "datacenter", precision);
        let res = run(
            &prog,
            &[
                (
                    "x".into(),
                    Tensor::from_f32(DType::F32, vec![m as u64, k as u64], &x).unwrap(),
                ),
                (
                    "w".into(),
                    Tensor::from_f32(DType::F32, vec![k as u64, n as u64], &w).unwrap(),
                ),
            ],
            &common::checked(),
        )
        .unwrap_or_else(|e| panic!("emulator: {e}"));
        let busy = res
            .report
            .cores
            .iter()
            .filter(|c| c.units[2].instructions > 0)
            .count();
        assert!(busy >= 2, "one row block still uses several cores: {busy}");
        let tol = match precision {
            Precision::Fp32 => Tolerance::FP32,
            Precision::Bf16 => Tolerance::BF16,
        };
        let want = Tensor::from_f32(DType::F32, vec![m as u64, n as u64], &want).unwrap();
        let c = compare("y", res.output("y").unwrap(), &want, tol).unwrap();
        assert!(c.pass, "{}: {c}", precision.name());
    }
}

/// Two chained decode-shaped matmuls on `datacenter`: each reads its A from HBM once, every core
/// with work multicasting a slice to the others (`dma.mcast`); the second's A was written by all
/// cores, so its round follows a barrier. Matches the reference in both precisions.
#[test]
fn chained_decode_matmuls_multicast_their_activations_and_match_reference() {
    let (m, k, f, n) = (5usize, 1024usize, 1024usize, 512usize);
    let src = format!(
        r#"module {{
  func.func @main(%x: tensor<{m}x{k}xf32> {{graph.name = "x"}}, %w1: tensor<{k}x{f}xf32> {{graph.name = "w1"}}, %w2: tensor<{f}x{n}xf32> {{graph.name = "w2"}}) -> (tensor<{m}x{n}xf32> {{graph.name = "y"}}) {{
    %h = "graph.matmul"(%x, %w1) : (tensor<{m}x{k}xf32>, tensor<{k}x{f}xf32>) -> tensor<{m}x{f}xf32> loc("MatMul_0")
    %y = "graph.matmul"(%h, %w2) : (tensor<{m}x{f}xf32>, tensor<{f}x{n}xf32>) -> tensor<{m}x{n}xf32> loc("MatMul_1")
    func.return %y : tensor<{m}x{n}xf32>
  }}
}}
"#
    );
    let x = values(m * k, 41);
    let w1 = values(k * f, 42);
    let w2 = values(f * n, 43);
    let want = matmul(&matmul(&x, &w1, m, k, f), &w2, m, f, n);
    for precision in [Precision::Fp32, Precision::Bf16] {
        let prog = compile_text(&src, "datacenter", precision);
        for (c, stream) in prog.cores.iter().enumerate() {
            let at = |pc: Option<usize>| pc.unwrap_or(usize::MAX);
            let barrier = at(stream
                .iter()
                .position(|i| matches!(i, llmpu_isa::Inst::Barrier {})));
            let rounds: Vec<usize> = stream
                .iter()
                .enumerate()
                .filter(|(_, i)| matches!(i, llmpu_isa::Inst::DmaMcast { .. }))
                .map(|(pc, _)| pc)
                .collect();
            // x is an f32 graph input: in bf16 it is converted as it loads, tile by tile.
            let first = rounds.iter().filter(|&&pc| pc < barrier).count();
            let want_first = usize::from(precision == Precision::Fp32);
            assert_eq!(first, want_first, "core {c}: rounds before the barrier");
            // Eight column tiles of w1 give eight cores work; four of w2 give four.
            let second = rounds.len() - first;
            assert_eq!(
                second,
                usize::from(c < 4),
                "core {c}: rounds after the barrier"
            );
        }
        let t = |v: &[f32], r: usize, c: usize| {
            Tensor::from_f32(DType::F32, vec![r as u64, c as u64], v).unwrap()
        };
        let res = run(
            &prog,
            &[
                ("x".into(), t(&x, m, k)),
                ("w1".into(), t(&w1, k, f)),
                ("w2".into(), t(&w2, f, n)),
            ],
            &common::checked(),
        )
        .unwrap_or_else(|e| panic!("emulator: {e}"));
        let tol = match precision {
            Precision::Fp32 => Tolerance::FP32,
            Precision::Bf16 => Tolerance::BF16,
        };
        let c = compare("y", res.output("y").unwrap(), &t(&want, m, n), tol).unwrap();
        assert!(c.pass, "{}: {c}", precision.name());
    }
}

/// Decode-shaped attention (one query, a long KV sequence that is not a multiple of the block):
/// wide KV blocks on `datacenter`, two heads per core (double-buffered Q/output blocks, each
/// head's output store deferred behind the next head's loads) still match the reference.
#[test]
fn decode_attention_with_wide_kv_blocks_matches_reference() {
    let (h, skv, d) = (16usize, 4500usize, 32usize);
    let q_ty = format!("tensor<1x{h}x1x{d}xf32>");
    let kv_ty = format!("tensor<1x{h}x{skv}x{d}xf32>");
    let s_ty = format!("tensor<1x{h}x1x{skv}xf32>");
    let src = format!(
        r#"module {{
  func.func @main(%q: {q_ty} {{graph.name = "q"}}, %k: {kv_ty} {{graph.name = "k"}}, %v: {kv_ty} {{graph.name = "v"}}) -> ({q_ty} {{graph.name = "out"}}) {{
    %kt = "graph.transpose"(%k) {{perm = array<i64: 0, 1, 3, 2>}} : ({kv_ty}) -> tensor<1x{h}x{d}x{skv}xf32> loc("Transpose_k")
    %s = "graph.matmul"(%q, %kt) : ({q_ty}, tensor<1x{h}x{d}x{skv}xf32>) -> {s_ty} loc("MatMul_qk")
    %c = "graph.constant"() {{value = dense<{sd}> : tensor<f32>}} : () -> tensor<f32> loc("sqrt_d")
    %sc = "graph.div"(%s, %c) : ({s_ty}, tensor<f32>) -> {s_ty} loc("Div_scale")
    %p = "graph.softmax"(%sc) {{axis = -1 : i64}} : ({s_ty}) -> {s_ty} loc("Softmax")
    %o = "graph.matmul"(%p, %v) : ({s_ty}, {kv_ty}) -> {q_ty} loc("MatMul_pv")
    func.return %o : {q_ty}
  }}
}}
"#,
        sd = (d as f32).sqrt(),
    );
    let q = values(h * d, 41);
    let k = values(h * skv * d, 42);
    let v = values(h * skv * d, 43);
    let mut want = vec![0f32; h * d];
    for hi in 0..h {
        let qrow = &q[hi * d..(hi + 1) * d];
        let scores: Vec<f32> = (0..skv)
            .map(|j| {
                let krow = &k[(hi * skv + j) * d..(hi * skv + j + 1) * d];
                qrow.iter().zip(krow).map(|(a, b)| a * b).sum::<f32>() / (d as f32).sqrt()
            })
            .collect();
        let mx = scores.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let e: Vec<f32> = scores.iter().map(|x| (x - mx).exp()).collect();
        let sum: f32 = e.iter().sum();
        for (j, wt) in e.iter().enumerate() {
            for c in 0..d {
                want[hi * d + c] += wt / sum * v[(hi * skv + j) * d + c];
            }
        }
    }
    for precision in [Precision::Fp32, Precision::Bf16] {
        let prog = compile_text(&src, "datacenter", precision);
        let t = |x: &[f32], s: usize| {
            Tensor::from_f32(DType::F32, vec![1, h as u64, s as u64, d as u64], x).unwrap()
        };
        let res = run(
            &prog,
            &[
                ("q".into(), t(&q, 1)),
                ("k".into(), t(&k, skv)),
                ("v".into(), t(&v, skv)),
            ],
            &common::checked(),
        )
        .unwrap_or_else(|e| panic!("emulator: {e}"));
        let tol = match precision {
            Precision::Fp32 => Tolerance::FP32,
            Precision::Bf16 => Tolerance::BF16,
        };
        let c = compare("out", res.output("out").unwrap(), &t(&want, 1), tol).unwrap();
        assert!(c.pass, "{}: {c}", precision.name());
    }
}

#[test]
fn decomposed_rotary_embedding_fuses_and_matches_reference() {
    // x·cos + rotate_half(x)·sin with cos/sin broadcast over batch and heads, as torch exports Llama.
    let (b, h, s, d) = (2usize, 3usize, 5usize, 8usize);
    let half = d / 2;
    let cos = values(s * d, 31);
    let sin = values(s * d, 32);
    let src = format!(
        r#"module {{
  func.func @main(%x: tensor<2x3x5x8xf32> {{graph.name = "x"}}) -> (tensor<2x3x5x8xf32> {{graph.name = "y"}}) {{
    %cos = "graph.constant"() {{value = {cos}}} : () -> tensor<1x1x5x8xf32> loc("cos")
    %sin = "graph.constant"() {{value = {sin}}} : () -> tensor<1x1x5x8xf32> loc("sin")
    %zero = "graph.constant"() {{value = dense<[0]> : tensor<1xi64>}} : () -> tensor<1xi64> loc("c0")
    %half = "graph.constant"() {{value = dense<[4]> : tensor<1xi64>}} : () -> tensor<1xi64> loc("c4")
    %end = "graph.constant"() {{value = dense<[8]> : tensor<1xi64>}} : () -> tensor<1xi64> loc("c8")
    %ax = "graph.constant"() {{value = dense<[-1]> : tensor<1xi64>}} : () -> tensor<1xi64> loc("ax")
    %xc = "graph.mul"(%x, %cos) : (tensor<2x3x5x8xf32>, tensor<1x1x5x8xf32>) -> tensor<2x3x5x8xf32> loc("Mul")
    %x1 = "graph.slice"(%x, %zero, %half, %ax) : (tensor<2x3x5x8xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<2x3x5x4xf32> loc("Slice")
    %x2 = "graph.slice"(%x, %half, %end, %ax) : (tensor<2x3x5x8xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<2x3x5x4xf32> loc("Slice_1")
    %n = "graph.neg"(%x2) : (tensor<2x3x5x4xf32>) -> tensor<2x3x5x4xf32> loc("Neg")
    %rot = "graph.concat"(%n, %x1) {{axis = 3 : i64}} : (tensor<2x3x5x4xf32>, tensor<2x3x5x4xf32>) -> tensor<2x3x5x8xf32> loc("Concat")
    %rs = "graph.mul"(%rot, %sin) : (tensor<2x3x5x8xf32>, tensor<1x1x5x8xf32>) -> tensor<2x3x5x8xf32> loc("Mul_1")
    %y = "graph.add"(%rs, %xc) : (tensor<2x3x5x8xf32>, tensor<2x3x5x8xf32>) -> tensor<2x3x5x8xf32> loc("Add")
    func.return %y : tensor<2x3x5x8xf32>
  }}
}}
"#,
        cos = dense(&cos, &[1, 1, s, d]),
        sin = dense(&sin, &[1, 1, s, d]),
    );
    let mut module = parse_module(&src).unwrap();
    let mut pm = llmpu_compiler::pass::PassManager::parse_pipeline(
        "canonicalize,fuse-rotary,dce",
        PassManagerOptions::default(),
    )
    .unwrap();
    pm.run(&mut module, &mut std::io::sink()).unwrap();
    let text = llmpu_compiler::ir::print_module(&module);
    assert!(text.contains("\"graph.rope\""), "{text}");
    assert!(
        !text.contains("graph.concat") && !text.contains("graph.neg"),
        "{text}"
    );
    let x = values(b * h * s * d, 33);
    let mut want = vec![0f32; x.len()];
    for (r, row) in x.chunks(d).enumerate() {
        let p = r % s;
        for j in 0..d {
            let rot = if j < half {
                -row[j + half]
            } else {
                row[j - half]
            };
            want[r * d + j] = row[j] * cos[p * d + j] + rot * sin[p * d + j];
        }
    }
    let shape = vec![b as u64, h as u64, s as u64, d as u64];
    matches_on_every_preset(&src, &x, &want, &shape);
}

/// Decode-shaped single-row producers (an RMSNorm feeding two matmuls, the product of those
/// matmuls feeding a third) are recomputed by their consuming matmuls on every `datacenter` core
/// instead of running on one core behind barriers: no instruction is located at them, and the
/// result still matches the reference in both precisions.
#[test]
fn single_row_producers_are_recomputed_by_their_matmuls_and_match_reference() {
    let (m, k, n) = (2usize, 256usize, 384usize);
    let g = values(k, 41);
    let w1 = values(k * n, 42);
    let w2 = values(k * n, 43);
    let w3 = values(n * k, 44);
    let src = format!(
        r#"module {{
  func.func @main(%x: tensor<{m}x{k}xf32> {{graph.name = "x"}}) -> (tensor<{m}x{k}xf32> {{graph.name = "y"}}) {{
    %two = "graph.constant"() {{value = dense<2.0> : tensor<f32>}} : () -> tensor<f32> loc("two")
    %eps = "graph.constant"() {{value = dense<1.0e-6> : tensor<f32>}} : () -> tensor<f32> loc("eps")
    %one = "graph.constant"() {{value = dense<1.0> : tensor<f32>}} : () -> tensor<f32> loc("one")
    %axes = "graph.constant"() {{value = dense<[-1]> : tensor<1xi64>}} : () -> tensor<1xi64> loc("axes")
    %g = "graph.constant"() {{value = {g}}} : () -> tensor<{k}xf32> loc("g")
    %p = "graph.pow"(%x, %two) : (tensor<{m}x{k}xf32>, tensor<f32>) -> tensor<{m}x{k}xf32> loc("Pow")
    %ms = "graph.reduce_mean"(%p, %axes) {{keepdims = 1 : i64}} : (tensor<{m}x{k}xf32>, tensor<1xi64>) -> tensor<{m}x1xf32> loc("ReduceMean")
    %ae = "graph.add"(%ms, %eps) : (tensor<{m}x1xf32>, tensor<f32>) -> tensor<{m}x1xf32> loc("AddEps")
    %sq = "graph.sqrt"(%ae) : (tensor<{m}x1xf32>) -> tensor<{m}x1xf32> loc("Sqrt")
    %rc = "graph.div"(%one, %sq) : (tensor<f32>, tensor<{m}x1xf32>) -> tensor<{m}x1xf32> loc("Recip")
    %nx = "graph.mul"(%x, %rc) : (tensor<{m}x{k}xf32>, tensor<{m}x1xf32>) -> tensor<{m}x{k}xf32> loc("Normalize")
    %sx = "graph.mul"(%g, %nx) : (tensor<{k}xf32>, tensor<{m}x{k}xf32>) -> tensor<{m}x{k}xf32> loc("Scale")
    %w1 = "graph.constant"() {{value = {w1}}} : () -> tensor<{k}x{n}xf32> loc("w1")
    %w2 = "graph.constant"() {{value = {w2}}} : () -> tensor<{k}x{n}xf32> loc("w2")
    %w3 = "graph.constant"() {{value = {w3}}} : () -> tensor<{n}x{k}xf32> loc("w3")
    %h1 = "graph.matmul"(%sx, %w1) : (tensor<{m}x{k}xf32>, tensor<{k}x{n}xf32>) -> tensor<{m}x{n}xf32> loc("Up")
    %h2 = "graph.matmul"(%sx, %w2) : (tensor<{m}x{k}xf32>, tensor<{k}x{n}xf32>) -> tensor<{m}x{n}xf32> loc("Gate")
    %hh = "graph.mul"(%h1, %h2) : (tensor<{m}x{n}xf32>, tensor<{m}x{n}xf32>) -> tensor<{m}x{n}xf32> loc("Product")
    %y = "graph.matmul"(%hh, %w3) : (tensor<{m}x{n}xf32>, tensor<{n}x{k}xf32>) -> tensor<{m}x{k}xf32> loc("Down")
    func.return %y : tensor<{m}x{k}xf32>
  }}
}}
"#,
        g = dense(&g, &[k]),
        w1 = dense(&w1, &[k, n]),
        w2 = dense(&w2, &[k, n]),
        w3 = dense(&w3, &[n, k]),
    );
    let x = values(m * k, 45);
    let mut nx = vec![0f32; m * k];
    for i in 0..m {
        let row = &x[i * k..(i + 1) * k];
        let ms: f32 = row.iter().map(|v| v * v).sum::<f32>() / k as f32;
        for j in 0..k {
            nx[i * k + j] = row[j] / (ms + 1e-6).sqrt() * g[j];
        }
    }
    let h1 = matmul(&nx, &w1, m, k, n);
    let h2 = matmul(&nx, &w2, m, k, n);
    let hh: Vec<f32> = h1.iter().zip(&h2).map(|(a, b)| a * b).collect();
    let want = matmul(&hh, &w3, m, n, k);
    for (precision, tol) in [
        (Precision::Fp32, Tolerance::FP32),
        (Precision::Bf16, Tolerance::BF16),
    ] {
        let prog = compile_text(&src, "datacenter", precision);
        let input = Tensor::from_f32(DType::F32, vec![m as u64, k as u64], &x).unwrap();
        let res = run(&prog, &[("x".into(), input)], &common::checked())
            .unwrap_or_else(|e| panic!("emulator: {e}"));
        let located: Vec<&str> = res
            .report
            .locations
            .iter()
            .map(|l| l.loc.as_str())
            .collect();
        assert!(
            !located
                .iter()
                .any(|l| l.contains("ReduceMean") || *l == "Product"),
            "{located:?}"
        );
        let want = Tensor::from_f32(DType::F32, vec![m as u64, k as u64], &want).unwrap();
        let c = compare("y", res.output("y").unwrap(), &want, tol).unwrap();
        assert!(c.pass, "{}: {c}", precision.name());
    }
}

/// A matmul with fewer row blocks than cores goes out as single tiles; a core whose consecutive
/// tiles share a row block of A loads it once (here two blocks per core, one per batch, so the
/// cache also switches buffers) and the result still matches the reference.
#[test]
fn single_tile_matmuls_cache_their_row_blocks_and_match_reference() {
    let (nb, m, k, n) = (2usize, 256usize, 512usize, 1024usize);
    let src = format!(
        r#"module {{
  func.func @main(%x: tensor<{nb}x{m}x{k}xf32> {{graph.name = "x"}}, %w: tensor<{k}x{n}xf32> {{graph.name = "w"}}) -> (tensor<{nb}x{m}x{n}xf32> {{graph.name = "y"}}) {{
    %y = "graph.matmul"(%x, %w) {{tile = array<i64: 128, 128, 128>}} : (tensor<{nb}x{m}x{k}xf32>, tensor<{k}x{n}xf32>) -> tensor<{nb}x{m}x{n}xf32> loc("MatMul_0")
    func.return %y : tensor<{nb}x{m}x{n}xf32>
  }}
}}
"#
    );
    let x = values(nb * m * k, 41);
    let w = values(k * n, 42);
    let mut want = vec![];
    for b in 0..nb {
        want.extend(matmul(&x[b * m * k..(b + 1) * m * k], &w, m, k, n));
    }
    for precision in [Precision::Fp32, Precision::Bf16] {
        let prog = compile_text(&src, "datacenter", precision);
        let res = run(
            &prog,
            &[
                (
                    "x".into(),
                    Tensor::from_f32(DType::F32, vec![nb as u64, m as u64, k as u64], &x).unwrap(),
                ),
                (
                    "w".into(),
                    Tensor::from_f32(DType::F32, vec![k as u64, n as u64], &w).unwrap(),
                ),
            ],
            &common::checked(),
        )
        .unwrap_or_else(|e| panic!("emulator: {e}"));
        let tol = match precision {
            Precision::Fp32 => Tolerance::FP32,
            Precision::Bf16 => Tolerance::BF16,
        };
        let want =
            Tensor::from_f32(DType::F32, vec![nb as u64, m as u64, n as u64], &want).unwrap();
        let c = compare("y", res.output("y").unwrap(), &want, tol).unwrap();
        assert!(c.pass, "{}: {c}", precision.name());
        if precision == Precision::Fp32 {
            // 32 tiles of 128×128 over 8 cores; each core keeps one row block per batch: A is
            // read 16 times as 128×512 blocks (32 without the cache), B once per tile.
            let (a_block, b_tile) = (128 * k * 4, k * 128 * 4);
            let want_reads = (16 * a_block + 32 * b_tile) as u64;
            assert!(
                res.report.hbm_read_bytes <= want_reads,
                "read {} bytes, expected at most {want_reads}",
                res.report.hbm_read_bytes
            );
        }
    }
}

/// Attention whose heads are merged back into the hidden dimension (`transpose(0, 2, 1, 3)`,
/// `reshape`) stores its result in the merged layout: the reshape is a free view, so the output
/// is written once, by the attention kernel, with no copy.
#[test]
fn attention_writes_merged_heads_in_place_and_matches_reference() {
    let (h, s, d) = (4usize, 24usize, 32usize);
    let full = format!("tensor<1x{h}x{s}x{d}xf32>");
    let merged = format!("tensor<1x{s}x{}xf32>", h * d);
    let src = attention_src(h, h, s, d)
        .replace(
            &format!("-> ({full} {{graph.name = \"out\"}})"),
            &format!("-> ({merged} {{graph.name = \"out\"}})"),
        )
        .replace(
            &format!("    func.return %o : {full}"),
            &format!(
                "    %ot = \"graph.transpose\"(%o) {{perm = array<i64: 0, 2, 1, 3>}} : ({full}) -> tensor<1x{s}x{h}x{d}xf32> loc(\"Transpose_o\")\n    %om = \"graph.reshape\"(%ot) : (tensor<1x{s}x{h}x{d}xf32>) -> {merged} loc(\"Reshape_o\")\n    func.return %om : {merged}"
            ),
        );
    assert!(src.contains("Reshape_o"), "{src}");
    let prog = compile_text(&src, "datacenter", Precision::Fp32);
    let (q, k, v) = (
        values(h * s * d, 11),
        values(h * s * d, 12),
        values(h * s * d, 13),
    );
    let t =
        |x: &[f32]| Tensor::from_f32(DType::F32, vec![1, h as u64, s as u64, d as u64], x).unwrap();
    let res = run(
        &prog,
        &[
            ("q".into(), t(&q)),
            ("k".into(), t(&k)),
            ("v".into(), t(&v)),
        ],
        &common::checked(),
    )
    .unwrap_or_else(|e| panic!("emulator: {e}"));
    let per_head = attention_reference(&q, &k, &v, h, h, s, d);
    let mut want = vec![0f32; h * s * d];
    for hi in 0..h {
        for i in 0..s {
            for c in 0..d {
                want[(i * h + hi) * d + c] = per_head[(hi * s + i) * d + c];
            }
        }
    }
    let want = Tensor::from_f32(DType::F32, vec![1, s as u64, (h * d) as u64], &want).unwrap();
    let c = compare("out", res.output("out").unwrap(), &want, Tolerance::FP32).unwrap();
    assert!(c.pass, "{c}");
    assert_eq!(
        res.report.hbm_write_bytes,
        (h * s * d * 4) as u64,
        "the merged output is written once"
    );
}

/// Partial rotary as GPT-NeoX / Phi export it — the first 8 of 12 head elements rotate, the rest
/// pass through (`concat(rope(slice(x, 0..8)), slice(x, 8..12))`) — fuses into one
/// `graph.rope {rotary_dim = 8}` and matches the reference on both presets and precisions.
#[test]
fn partial_rotary_fuses_into_rope_with_rotary_dim_and_matches_reference() {
    let (b, h, s, d, rd) = (2usize, 3usize, 5usize, 12usize, 8usize);
    let half = rd / 2;
    let cos = values(s * rd, 41);
    let sin = values(s * rd, 42);
    let t = |n: usize| format!("tensor<2x3x5x{n}xf32>");
    let src = format!(
        r#"module {{
  func.func @main(%q: {t12} {{graph.name = "x"}}) -> ({t12} {{graph.name = "y"}}) {{
    %cos = "graph.constant"() {{value = {cos}}} : () -> tensor<1x1x5x8xf32> loc("cos")
    %sin = "graph.constant"() {{value = {sin}}} : () -> tensor<1x1x5x8xf32> loc("sin")
    %zero = "graph.constant"() {{value = dense<[0]> : tensor<1xi64>}} : () -> tensor<1xi64> loc("c0")
    %half = "graph.constant"() {{value = dense<[4]> : tensor<1xi64>}} : () -> tensor<1xi64> loc("c4")
    %rd = "graph.constant"() {{value = dense<[8]> : tensor<1xi64>}} : () -> tensor<1xi64> loc("c8")
    %end = "graph.constant"() {{value = dense<[12]> : tensor<1xi64>}} : () -> tensor<1xi64> loc("c12")
    %ax = "graph.constant"() {{value = dense<[-1]> : tensor<1xi64>}} : () -> tensor<1xi64> loc("ax")
    %x = "graph.slice"(%q, %zero, %rd, %ax) : ({t12}, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> {t8} loc("SliceRot")
    %pass = "graph.slice"(%q, %rd, %end, %ax) : ({t12}, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> {t4} loc("SlicePass")
    %xc = "graph.mul"(%x, %cos) : ({t8}, tensor<1x1x5x8xf32>) -> {t8} loc("Mul")
    %x1 = "graph.slice"(%x, %zero, %half, %ax) : ({t8}, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> {t4} loc("Slice")
    %x2 = "graph.slice"(%x, %half, %rd, %ax) : ({t8}, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> {t4} loc("Slice_1")
    %n = "graph.neg"(%x2) : ({t4}) -> {t4} loc("Neg")
    %rot = "graph.concat"(%n, %x1) {{axis = 3 : i64}} : ({t4}, {t4}) -> {t8} loc("Concat")
    %rs = "graph.mul"(%rot, %sin) : ({t8}, tensor<1x1x5x8xf32>) -> {t8} loc("Mul_1")
    %y8 = "graph.add"(%rs, %xc) : ({t8}, {t8}) -> {t8} loc("Add")
    %y = "graph.concat"(%y8, %pass) {{axis = -1 : i64}} : ({t8}, {t4}) -> {t12} loc("ConcatPass")
    func.return %y : {t12}
  }}
}}
"#,
        t12 = t(12),
        t8 = t(8),
        t4 = t(4),
        cos = dense(&cos, &[1, 1, s, rd]),
        sin = dense(&sin, &[1, 1, s, rd]),
    );
    let mut module = parse_module(&src).unwrap();
    let mut pm = llmpu_compiler::pass::PassManager::parse_pipeline(
        "canonicalize,fuse-rotary,dce",
        PassManagerOptions::default(),
    )
    .unwrap();
    pm.run(&mut module, &mut std::io::sink()).unwrap();
    let text = llmpu_compiler::ir::print_module(&module);
    assert!(text.contains("rotary_dim = 8"), "{text}");
    assert!(
        !text.contains("graph.concat") && !text.contains("graph.slice"),
        "{text}"
    );
    let x = values(b * h * s * d, 43);
    let mut want = x.clone();
    for (r, row) in x.chunks(d).enumerate() {
        let p = r % s;
        for j in 0..rd {
            let rot = if j < half {
                -row[j + half]
            } else {
                row[j - half]
            };
            want[r * d + j] = row[j] * cos[p * rd + j] + rot * sin[p * rd + j];
        }
    }
    let shape = vec![b as u64, h as u64, s as u64, d as u64];
    matches_on_every_preset(&src, &x, &want, &shape);
}

/// Compiles `src` (input `x`, output `y`, f32) on both presets in both precisions and checks that
/// `y` for `x` is `want` within the precision's tolerance.
fn matches_on_every_preset(src: &str, x: &[f32], want: &[f32], shape: &[u64]) {
    for target in ["edge", "datacenter"] {
        for (precision, tol) in [
            (Precision::Fp32, Tolerance::FP32),
            (Precision::Bf16, Tolerance::BF16),
        ] {
            let prog = compile_text(src, target, precision);
            let input = Tensor::from_f32(DType::F32, shape.to_vec(), x).unwrap();
            let res = run(&prog, &[("x".into(), input)], &common::checked()).unwrap();
            let want = Tensor::from_f32(DType::F32, shape.to_vec(), want).unwrap();
            let c = compare("y", res.output("y").unwrap(), &want, tol).unwrap();
            assert!(c.pass, "{target} {}: {c}", precision.name());
        }
    }
}

/// Runs `src` (inputs `(name, dtype, bytes)` of `shape`) through the reference interpreter and,
/// compiled for both presets and precisions, through the emulator; every output must match the
/// interpreter's (exactly for integers, within the f32 tolerance for floats, f64 included).
fn emulator_matches_interpreter(src: &str, shape: &[usize], inputs: &[(&str, DType, Vec<u8>)]) {
    use llmpu_compiler::backend::{dtype_of, scalar_of};
    use llmpu_compiler::interp::{self, Tensor as ITensor};
    let m = parse_module(src).unwrap_or_else(|e| panic!("{e:?}"));
    let iin: Vec<ITensor> = inputs
        .iter()
        .map(|(_, dt, b)| ITensor::from_le_bytes(scalar_of(*dt), shape.to_vec(), b).unwrap())
        .collect();
    let reference = interp::run(&m, &iin).unwrap_or_else(|e| panic!("interpreter: {e:?}"));
    let names: Vec<String> = src
        .split("graph.name = \"")
        .skip(inputs.len() + 1)
        .map(|s| s[..s.find('"').unwrap()].to_string())
        .collect();
    assert_eq!(names.len(), reference.len());
    let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let rin: Vec<(String, Tensor)> = inputs
        .iter()
        .map(|(n, dt, b)| {
            (
                n.to_string(),
                Tensor::new(*dt, dims.clone(), b.clone()).unwrap(),
            )
        })
        .collect();
    for target in ["edge", "datacenter"] {
        for precision in [Precision::Fp32, Precision::Bf16] {
            let prog = compile_text(src, target, precision);
            let res = run(&prog, &rin, &common::checked())
                .unwrap_or_else(|e| panic!("{target} {}: emulator: {e}", precision.name()));
            for (name, want) in names.iter().zip(&reference) {
                let dt = dtype_of(want.dtype()).unwrap();
                let wd: Vec<u64> = want.shape.iter().map(|&d| d as u64).collect();
                let want = Tensor::new(dt, wd, want.to_le_bytes()).unwrap();
                let got = res.output(name).unwrap();
                assert_eq!(got.dtype, dt, "{name}");
                let c = compare(name, got, &want, Tolerance::FP32).unwrap();
                assert!(c.pass, "{target} {} {name}: {c}", precision.name());
                if !dt.is_float() {
                    assert_eq!(c.max_abs, 0.0, "{name}: integers are exact");
                }
            }
        }
    }
}

#[test]
fn sixteen_bit_unsigned_wide_and_f64_tensors_with_truncating_division_and_mod_match_the_interpreter()
 {
    let (r, c) = (4usize, 24usize);
    let n = r * c;
    let a: Vec<i16> = (0..n as i32)
        .map(|i| ((i * 37) % 601 - 300) as i16)
        .collect();
    let b: Vec<i16> = (0..n as i32)
        .map(|i| match (i * 5) % 15 - 7 {
            0 => 3,
            v => v as i16,
        })
        .collect();
    let u: Vec<u64> = (0..n as u64).map(|i| i * 9_973 % 1_000_003).collect();
    let v: Vec<u64> = (0..n as u64).map(|i| 1 + i % 17).collect();
    // Ties (±2.5, ±3.5, 0.5) next to ordinary fractions and negatives.
    let x: Vec<f64> = (0..n)
        .map(|i| match i % 6 {
            0 => 2.5,
            1 => -2.5,
            2 => -3.5,
            3 => 0.5,
            _ => (i as f64 - 40.0) * 0.37,
        })
        .collect();
    let bytes = |v: Vec<Vec<u8>>| v.concat();
    let inputs = [
        (
            "a",
            DType::I16,
            bytes(a.iter().map(|x| x.to_le_bytes().to_vec()).collect()),
        ),
        (
            "b",
            DType::I16,
            bytes(b.iter().map(|x| x.to_le_bytes().to_vec()).collect()),
        ),
        (
            "u",
            DType::U64,
            bytes(u.iter().map(|x| x.to_le_bytes().to_vec()).collect()),
        ),
        (
            "v",
            DType::U64,
            bytes(v.iter().map(|x| x.to_le_bytes().to_vec()).collect()),
        ),
        (
            "x",
            DType::F64,
            bytes(x.iter().map(|x| x.to_le_bytes().to_vec()).collect()),
        ),
    ];
    let t = |e: &str| format!("tensor<{r}x{c}x{e}>");
    let (i16t, u64t, f64t, i32t) = (t("i16"), t("ui64"), t("f64"), t("i32"));
    let src = format!(
        r#"module {{
  func.func @main(%a: {i16t} {{graph.name = "a"}}, %b: {i16t} {{graph.name = "b"}}, %u: {u64t} {{graph.name = "u"}}, %v: {u64t} {{graph.name = "v"}}, %x: {f64t} {{graph.name = "x"}}) -> ({i16t} {{graph.name = "q"}}, {i16t} {{graph.name = "mx"}}, {u64t} {{graph.name = "s"}}, {u64t} {{graph.name = "p"}}, {f64t} {{graph.name = "y"}}, {i32t} {{graph.name = "k"}}, {f64t} {{graph.name = "fl"}}, {f64t} {{graph.name = "rd"}}, {i16t} {{graph.name = "md"}}, {i16t} {{graph.name = "fm"}}) {{
    %q = "graph.div"(%a, %b) : ({i16t}, {i16t}) -> {i16t} loc("DivI16")
    %mx = "graph.max"(%a, %b, %q) : ({i16t}, {i16t}, {i16t}) -> {i16t} loc("Max3")
    %s = "graph.add"(%u, %v) : ({u64t}, {u64t}) -> {u64t} loc("AddU64")
    %p = "graph.div"(%u, %v) : ({u64t}, {u64t}) -> {u64t} loc("DivU64")
    %y = "graph.mul"(%x, %x) : ({f64t}, {f64t}) -> {f64t} loc("MulF64")
    %k = "graph.cast"(%x) : ({f64t}) -> {i32t} loc("CastTrunc")
    %fl = "graph.floor"(%x) : ({f64t}) -> {f64t} loc("Floor")
    %rd = "graph.round"(%x) : ({f64t}) -> {f64t} loc("Round")
    %md = "graph.mod"(%a, %b) {{fmod = 0 : i64}} : ({i16t}, {i16t}) -> {i16t} loc("ModPython")
    %fm = "graph.mod"(%a, %b) {{fmod = 1 : i64}} : ({i16t}, {i16t}) -> {i16t} loc("ModC")
    func.return %q, %mx, %s, %p, %y, %k, %fl, %rd, %md, %fm : {i16t}, {i16t}, {u64t}, {u64t}, {f64t}, {i32t}, {f64t}, {f64t}, {i16t}, {i16t}
  }}
}}
"#
    );
    emulator_matches_interpreter(&src, &[r, c], &inputs);
}

#[test]
fn non_saturating_cast_to_f8e4m3fn_gives_nan_past_the_range_like_the_interpreter() {
    let (r, c) = (2usize, 8usize);
    // 464 is the tie that still rounds to 448; anything larger (infinities too) becomes NaN with
    // `saturate = 0`, and is clamped to ±448 with the default `saturate = 1`.
    let x: Vec<f32> = vec![
        1.0,
        -0.3,
        448.0,
        449.0,
        464.0,
        464.5,
        -480.0,
        1e6,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -464.0,
        0.001,
        -465.0,
        300.0,
        500.0,
    ];
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let (f32t, f8t) = (
        format!("tensor<{r}x{c}xf32>"),
        format!("tensor<{r}x{c}xf8E4M3FN>"),
    );
    let src = format!(
        r#"module {{
  func.func @main(%x: {f32t} {{graph.name = "x"}}) -> ({f8t} {{graph.name = "nosat"}}, {f8t} {{graph.name = "sat"}}) {{
    %n = "graph.cast"(%x) {{saturate = 0 : i64}} : ({f32t}) -> {f8t} loc("CastNoSat")
    %s = "graph.cast"(%x) {{saturate = 1 : i64}} : ({f32t}) -> {f8t} loc("CastSat")
    func.return %n, %s : {f8t}, {f8t}
  }}
}}
"#
    );
    emulator_matches_interpreter(&src, &[r, c], &[("x", DType::F32, bytes)]);
}
