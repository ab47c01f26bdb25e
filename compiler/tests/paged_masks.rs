//! A decode attention over the paged KV region without a mask operand (`causal = true`, as a
//! fused ONNX Attention or a dropped constant causal mask leaves it) is right at every live
//! length: `kv-layout` turns its causal diagonal (at the compiled past) into a mask shifted to the
//! sequence's length, so neither the slots past the live tokens (filled with noise here) nor,
//! with several new tokens, a later new token leaks into an earlier query.

use llmpu_compiler::backend::Precision;
use llmpu_runtime::{Tensor, kv, run_with_kv};

mod common;
use common::{compile_text, values};

const PAST: usize = 16;
const D: usize = 8;
const H: usize = 2;

fn src(new: usize) -> String {
    let q = format!("tensor<1x{H}x{new}x{D}xf32>");
    let past = format!("tensor<1x1x{PAST}x{D}xf32>");
    let nk = format!("tensor<1x1x{new}x{D}xf32>");
    let all = format!("tensor<1x1x{}x{D}xf32>", PAST + new);
    format!(
        r#"module {{
  func.func @main(%q: {q} {{graph.name = "q"}}, %pk: {past} {{graph.name = "past_key"}}, %pv: {past} {{graph.name = "past_value"}}, %nk: {nk} {{graph.name = "new_key"}}, %nv: {nk} {{graph.name = "new_value"}}) -> ({q} {{graph.name = "out"}}, {all} {{graph.name = "present_key"}}, {all} {{graph.name = "present_value"}}) {{
    %k = "graph.concat"(%pk, %nk) {{axis = 2 : i64}} : ({past}, {nk}) -> {all} loc("Concat_k")
    %v = "graph.concat"(%pv, %nv) {{axis = 2 : i64}} : ({past}, {nk}) -> {all} loc("Concat_v")
    %o = "graph.fused_attention"(%q, %k, %v) {{causal = true, scale = 0.35355338 : f32}} : ({q}, {all}, {all}) -> {q} loc("Attention")
    func.return %o, %k, %v : {q}, {all}, {all} loc(unknown)
  }} loc("main")
}}"#
    )
}

/// `softmax(q·kᵀ·scale)·v` for the `new` queries of one sequence over its `len` cached keys and
/// the new ones, query `i` seeing keys up to `len + i`.
fn reference(q: &[f32], keys: &[f32], vals: &[f32], len: usize, new: usize) -> Vec<f32> {
    let mut out = vec![0f32; H * new * D];
    for h in 0..H {
        for i in 0..new {
            let qi = &q[(h * new + i) * D..][..D];
            let n = len + i + 1;
            let s: Vec<f32> = (0..n)
                .map(|t| {
                    let kt = &keys[t * D..][..D];
                    qi.iter().zip(kt).map(|(a, b)| a * b).sum::<f32>() * 0.353_553_38
                })
                .collect();
            let mx = s.iter().cloned().fold(f32::MIN, f32::max);
            let e: Vec<f32> = s.iter().map(|x| (x - mx).exp()).collect();
            let z: f32 = e.iter().sum();
            for (t, w) in e.iter().enumerate() {
                for c in 0..D {
                    out[(h * new + i) * D + c] += w / z * vals[t * D + c];
                }
            }
        }
    }
    out
}

#[test]
fn causal_paged_decode_without_a_mask_is_right_at_every_live_length() {
    for new in [1, 3] {
        let p = compile_text(&src(new), "edge", Precision::Fp32);
        let region = p.kv.clone().expect("kv-layout made a paged region");
        for len in [0, 1, 5, 11, PAST] {
            let seed = (new * 100 + len) as u64;
            let q = values(H * new * D, seed);
            let (nk, nv) = (values(new * D, seed + 1), values(new * D, seed + 2));
            // Real cached rows, then noise in the slots past `len`.
            let (pk, pv) = (values(PAST * D, seed + 3), values(PAST * D, seed + 4));
            let dense = |v: &[f32]| {
                Tensor::from_f32(llmpu_isa::DType::F32, vec![1, 1, PAST as u64, D as u64], v)
                    .unwrap()
            };
            let (tk, tv) = (dense(&pk), dense(&pv));
            let mut img = kv::pack(&region, &kv::reversed_table(&region), &[&tk, &tv]).unwrap();
            kv::set_lengths(&region, &mut img, &[len as i32]).unwrap();
            let t = |v: &[f32], shape: Vec<u64>| {
                Tensor::from_f32(llmpu_isa::DType::F32, shape, v).unwrap()
            };
            let inputs = vec![
                (
                    "q".to_string(),
                    t(&q, vec![1, H as u64, new as u64, D as u64]),
                ),
                (
                    "new_key".to_string(),
                    t(&nk, vec![1, 1, new as u64, D as u64]),
                ),
                (
                    "new_value".to_string(),
                    t(&nv, vec![1, 1, new as u64, D as u64]),
                ),
            ];
            let (r, _) = run_with_kv(&p, &inputs, Some(&img), &common::checked()).unwrap();
            let got = r
                .outputs
                .iter()
                .find(|(n, _)| n == "out")
                .expect("out")
                .1
                .to_f32();
            let keys: Vec<f32> = pk[..len * D].iter().chain(&nk).copied().collect();
            let vals: Vec<f32> = pv[..len * D].iter().chain(&nv).copied().collect();
            let want = reference(&q, &keys, &vals, len, new);
            let diff = got
                .iter()
                .zip(&want)
                .fold(0f32, |a, (g, w)| a.max((g - w).abs()));
            assert!(
                diff < 1e-5,
                "{new} new tokens after {len} cached: max |diff| {diff}"
            );
        }
    }
}
