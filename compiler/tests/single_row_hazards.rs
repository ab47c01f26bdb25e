//! Single-row (decode-shaped) graphs whose operands are produced by the op just before their
//! consumer: the previous matmul's last epilogue is deferred behind the consumer's first loads,
//! a norm is recomputed by its consuming matmuls, a resident A is multicast. Each optimization
//! may read an operand early only when nothing since the last barrier (the deferred tail
//! included) writes it. Every graph runs on both presets in both precisions and is compared with
//! the reference interpreter.

mod common;
use common::{compile_text, dense, values};
use llmpu_compiler::backend::Precision;
use llmpu_compiler::interp::{self, Tensor as ITensor};
use llmpu_compiler::parser::parse_module;
use llmpu_isa::{DType, Inst, Program};
use llmpu_runtime::compare::{Tolerance, compare};
use llmpu_runtime::{Tensor, run};

/// `dense<…>` of seeded values of `shape`, `scale`d, plus `shift`.
fn seeded(shape: &[usize], seed: u64, scale: f32, shift: f32) -> String {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = values(n, seed).iter().map(|v| v * scale + shift).collect();
    dense(&v, shape)
}

/// The debug location of instruction `pc` of `core`.
fn loc_at(p: &Program, core: usize, pc: usize) -> &str {
    p.debug
        .iter()
        .filter(|d| d.core as usize == core && d.pc as usize <= pc)
        .max_by_key(|d| d.pc)
        .map(|d| d.loc.as_str())
        .unwrap_or("")
}

/// True when some core stores a result of op `producer` after it issued a load of op
/// `consumer`: the producer's last epilogue was deferred into the consumer's prologue.
fn tail_deferred_into(p: &Program, producer: &str, consumer: &str) -> bool {
    p.cores.iter().enumerate().any(|(c, s)| {
        let first_load = s.iter().enumerate().position(|(pc, i)| {
            matches!(i, Inst::DmaLoad { .. }) && loc_at(p, c, pc).contains(consumer)
        });
        first_load.is_some_and(|f| {
            s.iter().enumerate().skip(f).any(|(pc, i)| {
                matches!(i, Inst::DmaStore { .. }) && loc_at(p, c, pc).contains(producer)
            })
        })
    })
}

/// Compiles `src` (one f32 input `x` of `shape`) for both presets and precisions, runs it on the
/// emulator and compares every output with the interpreter; `pin` checks that the structure under
/// test was really emitted.
fn check(src: &str, shape: &[usize], pin: impl Fn(&Program, &str, Precision)) {
    let n: usize = shape.iter().product();
    let x = values(n, 7);
    let reference = {
        let m = parse_module(src).unwrap_or_else(|e| panic!("{e:?}"));
        let xi = ITensor::new(shape.to_vec(), x.clone());
        interp::run(&m, &[xi]).unwrap_or_else(|e| panic!("interpreter: {e:?}"))
    };
    let names: Vec<String> = src
        .split("graph.name = \"")
        .skip(2)
        .map(|s| s[..s.find('"').unwrap()].to_string())
        .collect();
    assert_eq!(names.len(), reference.len(), "output names of {src}");
    for target in ["edge", "datacenter"] {
        for (precision, tol) in [
            (Precision::Fp32, Tolerance::FP32),
            (Precision::Bf16, Tolerance::BF16),
        ] {
            let prog = compile_text(src, target, precision);
            pin(&prog, target, precision);
            let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            let input = Tensor::from_f32(DType::F32, dims, &x).unwrap();
            let res = run(&prog, &[("x".into(), input)], &common::checked())
                .unwrap_or_else(|e| panic!("{target} {}: emulator: {e}", precision.name()));
            for (name, want) in names.iter().zip(&reference) {
                let w: Vec<f32> = want.to_f64_vec().iter().map(|&v| v as f32).collect();
                let wd: Vec<u64> = want.shape.iter().map(|&d| d as u64).collect();
                let want = Tensor::from_f32(DType::F32, wd, &w).unwrap();
                let got = res.output(name).expect("output");
                let c = compare(name, got, &want, tol).unwrap();
                assert!(c.pass, "{target} {}: {c}", precision.name());
            }
        }
    }
}

/// Issue 19's layer (Falcon's parallel attention and MLP): two norms of one row feed two
/// matmuls, and both results add to the residual. At one row `u + t` makes `t` the bias of
/// `u`'s matmul, and `t`'s matmul, just before it, defers its store behind `u`'s first loads:
/// the bias must load after that store, not in the prologue with the weights.
#[test]
fn parallel_residual_bias_from_the_previous_matmul_waits_for_its_deferred_store() {
    let d = 64;
    let src = format!(
        r#"module {{
  func.func @main(%x: tensor<1x1x{d}xf32> {{graph.name = "x"}}) -> (tensor<1x1x{d}xf32> {{graph.name = "h"}}) {{
    %ga = "graph.constant"() {{value = {ga}}} : () -> tensor<{d}xf32> loc("ga")
    %ba = "graph.constant"() {{value = {ba}}} : () -> tensor<{d}xf32> loc("ba")
    %gm = "graph.constant"() {{value = {gm}}} : () -> tensor<{d}xf32> loc("gm")
    %bm = "graph.constant"() {{value = {bm}}} : () -> tensor<{d}xf32> loc("bm")
    %wa = "graph.constant"() {{value = {wa}}} : () -> tensor<{d}x{d}xf32> loc("wa")
    %wm = "graph.constant"() {{value = {wm}}} : () -> tensor<{d}x{d}xf32> loc("wm")
    %la:3 = "graph.layer_norm"(%x, %ga, %ba) {{axis = -1 : i64, epsilon = 1.0e-5 : f32}} : (tensor<1x1x{d}xf32>, tensor<{d}xf32>, tensor<{d}xf32>) -> (tensor<1x1x{d}xf32>, tensor<1x1x1xf32>, tensor<1x1x1xf32>) loc("LnAttn")
    %lm:3 = "graph.layer_norm"(%x, %gm, %bm) {{axis = -1 : i64, epsilon = 1.0e-5 : f32}} : (tensor<1x1x{d}xf32>, tensor<{d}xf32>, tensor<{d}xf32>) -> (tensor<1x1x{d}xf32>, tensor<1x1x1xf32>, tensor<1x1x1xf32>) loc("LnMlp")
    %t = "graph.matmul"(%la#0, %wa) : (tensor<1x1x{d}xf32>, tensor<{d}x{d}xf32>) -> tensor<1x1x{d}xf32> loc("Attn")
    %u = "graph.matmul"(%lm#0, %wm) : (tensor<1x1x{d}xf32>, tensor<{d}x{d}xf32>) -> tensor<1x1x{d}xf32> loc("Mlp")
    %s = "graph.add"(%u, %t) : (tensor<1x1x{d}xf32>, tensor<1x1x{d}xf32>) -> tensor<1x1x{d}xf32> loc("AddBranches")
    %h = "graph.add"(%s, %x) : (tensor<1x1x{d}xf32>, tensor<1x1x{d}xf32>) -> tensor<1x1x{d}xf32> loc("AddResidual")
    func.return %h : tensor<1x1x{d}xf32>
  }}
}}
"#,
        ga = seeded(&[d], 1, 0.1, 1.0),
        ba = seeded(&[d], 2, 0.1, 0.0),
        gm = seeded(&[d], 3, 0.1, 1.0),
        bm = seeded(&[d], 4, 0.1, 0.0),
        wa = seeded(&[d, d], 5, 0.125, 0.0),
        wm = seeded(&[d, d], 6, 0.125, 0.0),
    );
    check(&src, &[1, 1, d], |p, target, precision| {
        assert!(
            tail_deferred_into(p, "Attn", "Mlp"),
            "{target} {}: Attn's store is not deferred into Mlp",
            precision.name()
        );
    });
}

/// A norm of the previous matmul's result, consumed by two matmuls that recompute it on every
/// core (datacenter): the recomputation reads the matmul's result, so it waits for the deferred
/// store too.
#[test]
fn recomputed_norm_of_the_previous_matmul_reads_its_deferred_store() {
    let (k, n) = (128, 256);
    let src = format!(
        r#"module {{
  func.func @main(%x: tensor<1x{k}xf32> {{graph.name = "x"}}) -> (tensor<1x{n}xf32> {{graph.name = "y"}}, tensor<1x{n}xf32> {{graph.name = "z"}}) {{
    %w0 = "graph.constant"() {{value = {w0}}} : () -> tensor<{k}x{k}xf32> loc("w0")
    %g = "graph.constant"() {{value = {g}}} : () -> tensor<{k}xf32> loc("g")
    %w1 = "graph.constant"() {{value = {w1}}} : () -> tensor<{k}x{n}xf32> loc("w1")
    %w2 = "graph.constant"() {{value = {w2}}} : () -> tensor<{k}x{n}xf32> loc("w2")
    %h = "graph.matmul"(%x, %w0) : (tensor<1x{k}xf32>, tensor<{k}x{k}xf32>) -> tensor<1x{k}xf32> loc("Proj")
    %r = "graph.rms_norm"(%h, %g) {{axis = -1 : i64, epsilon = 1.0e-6 : f32}} : (tensor<1x{k}xf32>, tensor<{k}xf32>) -> tensor<1x{k}xf32> loc("Norm")
    %y = "graph.matmul"(%r, %w1) : (tensor<1x{k}xf32>, tensor<{k}x{n}xf32>) -> tensor<1x{n}xf32> loc("Up")
    %z = "graph.matmul"(%r, %w2) : (tensor<1x{k}xf32>, tensor<{k}x{n}xf32>) -> tensor<1x{n}xf32> loc("Gate")
    func.return %y, %z : tensor<1x{n}xf32>, tensor<1x{n}xf32>
  }}
}}
"#,
        w0 = seeded(&[k, k], 11, 0.09, 0.0),
        g = seeded(&[k], 12, 0.1, 1.0),
        w1 = seeded(&[k, n], 13, 0.09, 0.0),
        w2 = seeded(&[k, n], 14, 0.09, 0.0),
    );
    check(&src, &[1, k], |p, target, precision| {
        if target == "datacenter" {
            // The norm has no instructions of its own: Up and Gate recompute it.
            assert!(
                p.debug.iter().all(|d| !d.loc.contains("Norm")),
                "{}: Norm was not recomputed",
                precision.name()
            );
        }
    });
}

/// One row through two chained matmuls: the second's A is the first's result (multicast on
/// datacenter), so it loads after the deferred store, never in the weights' prologue.
#[test]
fn chained_single_row_matmul_reads_its_a_after_the_deferred_store() {
    let (k, f, n) = (128, 256, 128);
    let src = format!(
        r#"module {{
  func.func @main(%x: tensor<1x{k}xf32> {{graph.name = "x"}}) -> (tensor<1x{n}xf32> {{graph.name = "y"}}) {{
    %w1 = "graph.constant"() {{value = {w1}}} : () -> tensor<{k}x{f}xf32> loc("w1")
    %w2 = "graph.constant"() {{value = {w2}}} : () -> tensor<{f}x{n}xf32> loc("w2")
    %h = "graph.matmul"(%x, %w1) : (tensor<1x{k}xf32>, tensor<{k}x{f}xf32>) -> tensor<1x{f}xf32> loc("First")
    %y = "graph.matmul"(%h, %w2) : (tensor<1x{f}xf32>, tensor<{f}x{n}xf32>) -> tensor<1x{n}xf32> loc("Second")
    func.return %y : tensor<1x{n}xf32>
  }}
}}
"#,
        w1 = seeded(&[k, f], 21, 0.09, 0.0),
        w2 = seeded(&[f, n], 22, 0.07, 0.0),
    );
    check(&src, &[1, k], |p, target, precision| {
        assert!(
            tail_deferred_into(p, "First", "Second"),
            "{target} {}: First's store is not deferred into Second",
            precision.name()
        );
    });
}

/// A residual (two rows, so not a bias) produced by the matmul just before: the residual tile
/// loads with each output tile, after the deferred store.
#[test]
fn residual_from_the_previous_matmul_loads_after_its_deferred_store() {
    let (m, k) = (2, 64);
    let src = format!(
        r#"module {{
  func.func @main(%x: tensor<{m}x{k}xf32> {{graph.name = "x"}}) -> (tensor<{m}x{k}xf32> {{graph.name = "y"}}) {{
    %w1 = "graph.constant"() {{value = {w1}}} : () -> tensor<{k}x{k}xf32> loc("w1")
    %w2 = "graph.constant"() {{value = {w2}}} : () -> tensor<{k}x{k}xf32> loc("w2")
    %t = "graph.matmul"(%x, %w1) : (tensor<{m}x{k}xf32>, tensor<{k}x{k}xf32>) -> tensor<{m}x{k}xf32> loc("Branch")
    %u = "graph.matmul"(%x, %w2) : (tensor<{m}x{k}xf32>, tensor<{k}x{k}xf32>) -> tensor<{m}x{k}xf32> loc("Main")
    %y = "graph.add"(%u, %t) : (tensor<{m}x{k}xf32>, tensor<{m}x{k}xf32>) -> tensor<{m}x{k}xf32> loc("Add")
    func.return %y : tensor<{m}x{k}xf32>
  }}
}}
"#,
        w1 = seeded(&[k, k], 31, 0.125, 0.0),
        w2 = seeded(&[k, k], 32, 0.125, 0.0),
    );
    check(&src, &[m, k], |p, target, precision| {
        assert!(
            tail_deferred_into(p, "Branch", "Main"),
            "{target} {}: Branch's store is not deferred into Main",
            precision.name()
        );
    });
}
