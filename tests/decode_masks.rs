//! Decode is right at every live length, whatever the graph's mask folds from the compiled one: a
//! decode graph compiled once for a 32-token context (paged KV region) gives, for a sequence of
//! `l` cached tokens, the logits the ONNX graph itself gives with a past of exactly `l` tokens
//! (reference interpreter). Pinned for the zoo's Mistral (a sliding window of 5 folded from the
//! past's shape: before `graph.kv_mask`, every real key outside the last 5 slots of the compiled
//! context was masked out) and the corpus Llama (plain causal), with batch 2 at unequal lengths
//! so each sequence's mask is shifted by its own length; the slots past a sequence's length hold
//! noise, which must not leak in.

use std::path::{Path, PathBuf};

use llmpu_compiler::interp::{self, Tensor as ITensor};
use llmpu_compiler::onnx::{self, ImportOptions};
use llmpu_compiler::pass::{PassManager, PassManagerOptions};
use llmpu_isa::DType;
use llmpu_runtime::{RunOptions, Tensor, kv, run_with_kv};

mod common;
use common::{corpus, llmpu_ok, noise};

const CONTEXT: u64 = 32;

/// Logits `[vocab]` of the ONNX graph for one sequence with a past of exactly `past` (one
/// `[heads, l, dim]` tensor per cache input, graph order), run by the reference interpreter.
fn reference(
    model: &Path,
    past: &[Vec<f32>],
    l: usize,
    id: i64,
    heads: usize,
    dim: usize,
) -> Vec<f32> {
    let mut o = ImportOptions::default();
    for (k, v) in [
        ("batch_size", 1),
        ("sequence_length", 1),
        ("past_sequence_length", l as u64),
        ("total_sequence_length", l as u64 + 1),
    ] {
        o.dims.insert(k.into(), v);
    }
    let mut m = onnx::import_file(model, &o).unwrap();
    PassManager::from_names(&onnx::import_pipeline(), PassManagerOptions::default())
        .unwrap()
        .run(&mut m, &mut std::io::sink())
        .unwrap();
    let mut inputs = vec![
        ITensor::new(vec![1, 1], vec![id]),
        ITensor::new(vec![1, l + 1], vec![1i64; l + 1]),
        ITensor::new(vec![1, 1], vec![l as i64]),
    ];
    for p in past {
        inputs.push(ITensor::new(vec![1, heads, l, dim], p.clone()));
    }
    let out = interp::run(&m, &inputs).unwrap();
    out[0].to_f64_vec().iter().map(|&x| x as f32).collect()
}

/// Checks a batch-2 step at cached lengths `lens` against the reference, per sequence.
fn check(model: &Path, bin: &Path, context: u64, lens: [usize; 2], seed: u64) {
    let p = llmpu_isa::binary::read_file(bin).unwrap();
    let region = p.kv.clone().expect("KV region");
    let past_len = region.past_len as usize;
    let (heads, dim) = (
        region.slots[0].heads as usize,
        region.slots[0].head_dim as usize,
    );
    // Per region slot, per sequence: the real past `[heads, l, dim]`.
    let real: Vec<Vec<Vec<f32>>> = (0..region.slots.len())
        .map(|s| {
            (0..2)
                .map(|b| noise(heads * lens[b] * dim, seed + 10 * s as u64 + b as u64))
                .collect()
        })
        .collect();
    // Dense `[2, heads, past_len, dim]` pasts for the region: real rows then noise.
    let dense: Vec<Tensor> = real
        .iter()
        .enumerate()
        .map(|(s, rows)| {
            let mut v = vec![];
            for (b, r) in rows.iter().enumerate() {
                let junk = noise(heads * past_len * dim, 1000 + s as u64 * 2 + b as u64);
                for h in 0..heads {
                    for t in 0..past_len {
                        let src = if t < lens[b] {
                            &r[(h * lens[b] + t) * dim..][..dim]
                        } else {
                            &junk[(h * past_len + t) * dim..][..dim]
                        };
                        v.extend_from_slice(src);
                    }
                }
            }
            Tensor::from_f32(
                DType::F32,
                vec![2, heads as u64, past_len as u64, dim as u64],
                &v,
            )
            .unwrap()
        })
        .collect();
    let refs: Vec<&Tensor> = dense.iter().collect();
    let mut img = kv::pack(&region, &kv::reversed_table(&region), &refs).unwrap();
    let lengths: Vec<i32> = lens.iter().map(|&l| l as i32).collect();
    kv::set_lengths(&region, &mut img, &lengths).unwrap();
    let width = context as usize;
    let mut mask = vec![0i64; 2 * width];
    for b in 0..2 {
        kv::decode_mask_row(&mut mask[b * width..(b + 1) * width], lens[b] + 1).unwrap();
    }
    let ids = [11i64, 42];
    let i64s = |shape: Vec<u64>, v: &[i64]| {
        Tensor::new(
            DType::I64,
            shape,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
        .unwrap()
    };
    let pos: Vec<i64> = lens.iter().map(|&l| l as i64).collect();
    let inputs = vec![
        ("input_ids".to_string(), i64s(vec![2, 1], &ids)),
        ("attention_mask".to_string(), i64s(vec![2, context], &mask)),
        ("position_ids".to_string(), i64s(vec![2, 1], &pos)),
    ];
    let opts = RunOptions {
        check_uninit: true,
        ..RunOptions::default()
    };
    let (r, _) = run_with_kv(&p, &inputs, Some(&img), &opts).unwrap();
    let got = r
        .outputs
        .iter()
        .find(|(n, _)| n == "logits")
        .expect("logits")
        .1
        .to_f32();
    let vocab = got.len() / 2;
    for b in 0..2 {
        // The reference takes the pasts in graph input order.
        let mut order: Vec<usize> = (0..region.slots.len()).collect();
        order.sort_by_key(|&s| region.slots[s].past_index);
        let past: Vec<Vec<f32>> = order.iter().map(|&s| real[s][b].clone()).collect();
        let want = reference(model, &past, lens[b], ids[b], heads, dim);
        let scale = want.iter().fold(0f32, |a, x| a.max(x.abs()));
        let diff = want
            .iter()
            .zip(&got[b * vocab..(b + 1) * vocab])
            .fold(0f32, |a, (w, g)| a.max((w - g).abs()));
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "{}: sequence {b} at {} cached tokens (batch lengths {lens:?}): max |diff| {diff} \
             against the graph with that past (logits up to {scale})",
            model.display(),
            lens[b]
        );
    }
}

fn compile(model: &Path, dir: &Path, context: u64) -> PathBuf {
    let bin = dir.join("decode.llmpu");
    llmpu_ok(&[
        "compile".as_ref(),
        model.as_os_str(),
        "--dim".as_ref(),
        "batch_size=2".as_ref(),
        "--max-context".as_ref(),
        context.to_string().as_ref(),
        "--precision".as_ref(),
        "fp32".as_ref(),
        "--target".as_ref(),
        "datacenter".as_ref(),
        "-o".as_ref(),
        bin.as_os_str(),
    ]);
    bin
}

fn every_length(model: &Path, tag: &str, context: u64, lengths: &[[usize; 2]]) {
    let dir = std::env::temp_dir().join(format!("llmpu-masks-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = compile(model, &dir, context);
    for (i, &lens) in lengths.iter().enumerate() {
        check(model, &bin, context, lens, i as u64 * 100);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

const LENGTHS: [[usize; 2]; 5] = [[1, 31], [4, 5], [6, 13], [20, 2], [31, 26]];

#[test]
fn sliding_window_decode_matches_the_graph_at_every_live_length() {
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("zoo/models/mistral-tiny-dyn-decode/model.onnx");
    every_length(&model, "mistral", CONTEXT, &LENGTHS);
}

#[test]
fn causal_decode_matches_the_graph_at_every_live_length() {
    let Some(c) = corpus("models") else { return };
    every_length(
        &c.join("models/llama-tiny-dyn-decode/model.onnx"),
        "llama",
        CONTEXT,
        &LENGTHS,
    );
}

/// A 1024-token context is 64 blocks: the blocks after the first two run as a counted loop (the
/// program does not grow with the context, `tests/loops.rs`), whose trips end at the longest live
/// sequence of the batch.
#[test]
fn causal_decode_through_the_rolled_block_loop_matches_the_graph() {
    let Some(c) = corpus("models") else { return };
    every_length(
        &c.join("models/llama-tiny-dyn-decode/model.onnx"),
        "llama-1024",
        1024,
        &[[1023, 3], [530, 700], [47, 16], [17, 200]],
    );
}
