//! Batched paged decode attention overlaps its (sequence, KV head) units and drains the core once
//! per KV block past the first, not once per (sequence, head, block): the batch-8
//! `llama-tiny-dyn-decode` step (edge, bf16, max context 128; 4 query / 2 KV heads) is pinned
//! under bounds the serial per-(sequence, head) schedule exceeded, with an empty cache (one live
//! block per sequence) and a full one (all 8 blocks live; the full bound also fails a schedule
//! with one drain per (sequence, block)). Mixed lengths in one batch (shorter sequences reading
//! masked blocks) are checked functionally by `tests/serve_sim.rs` (greedy reference ids).
//! Needs the corpus (`LLMPU_CORPUS`, default `../shared/corpus`).
//!
//! Measured: serial 81,112 cycles (27,362 per attention node) empty and 343,096 (158,354) full;
//! one drain per (sequence, block) 35,006 (4,301) and 103,895 (38,746); block-major with the
//! three-stage pipeline 33,304 (3,450) and 64,195 (18,899).

use std::path::{Path, PathBuf};

use llmpu_isa::DType;
use llmpu_runtime::{Tensor, npy};

mod common;
use common::{corpus, llmpu_ok, noise};

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// (step cycles, span of every attention node) of a run of `bin` with `extra` arguments.
fn run(bin: &Path, json: &Path, extra: &[String]) -> (u64, Vec<u64>) {
    let mut args = vec!["run".to_string(), s(bin), "--report-json".into(), s(json)];
    args.extend_from_slice(extra);
    llmpu_ok(&args);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let spans = r["locations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["loc"].as_str().unwrap().contains("self_attn/MatMul+"))
        .map(|l| l["last_end"].as_u64().unwrap() - l["first_start"].as_u64().unwrap())
        .collect();
    (r["cycles"].as_u64().unwrap(), spans)
}

fn compile(model: &Path, dir: &Path, batch: u64) -> PathBuf {
    let bin = dir.join(format!("b{batch}.llmpu"));
    llmpu_ok(&[
        "compile".into(),
        s(model),
        "--dim".into(),
        format!("batch_size={batch}"),
        "--max-context".into(),
        "128".into(),
        "-o".into(),
        s(&bin),
    ]);
    bin
}

fn i64_tensor(shape: Vec<u64>, v: i64) -> Tensor {
    let n: u64 = shape.iter().product();
    let bytes = (0..n).flat_map(|_| v.to_le_bytes()).collect();
    Tensor::new(DType::I64, shape, bytes).unwrap()
}

#[test]
fn batch_8_paged_decode_attention_is_pipelined_across_sequences_and_heads() {
    let Some(c) = corpus("models") else { return };
    let dir = std::env::temp_dir().join(format!("llmpu-paged-attn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = c.join("models/llama-tiny-dyn-decode/model.onnx");
    let b1 = compile(&model, &dir, 1);
    let b8 = compile(&model, &dir, 8);
    let timing = ["--timing-only".to_string()];

    // Empty cache: every sequence has one live block (the appended token's).
    let (_, one) = run(&b1, &dir.join("b1.json"), &timing);
    let (cycles, eight) = run(&b8, &dir.join("b8.json"), &timing);
    assert_eq!((one.len(), eight.len()), (2, 2), "two attention nodes");
    assert!(
        cycles < 50_000,
        "batch-8 step {cycles} cycles (serial: 81,112)"
    );
    for (a1, a8) in one.iter().zip(&eight) {
        assert!(
            *a8 < 10_000,
            "batch-8 attention {a8} cycles (serial: 27,362)"
        );
        // Eight sequences cost far less than eight times one: the units overlap (serial: 7.6×).
        assert!(*a8 < 5 * a1, "batch-8 attention {a8} vs batch 1 {a1}");
    }

    // Full cache: 127 cached tokens per sequence, all 8 blocks live (dense pasts packed by the
    // host with the past length as every sequence's cached length; functional run).
    let mut args = vec![];
    for l in 0..2 {
        for kv in ["key", "value"] {
            let name = format!("past_key_values.{l}.{kv}");
            let p = dir.join(format!("{name}.npy"));
            npy::write_file(&p, &Tensor::zeros(DType::F32, vec![8, 2, 127, 16])).unwrap();
            args.push("--input".to_string());
            args.push(format!("{name}={}", s(&p)));
        }
    }
    for (name, t) in [
        ("input_ids", i64_tensor(vec![8, 1], 1)),
        ("position_ids", i64_tensor(vec![8, 1], 127)),
        ("attention_mask", i64_tensor(vec![8, 128], 1)),
    ] {
        let p = dir.join(format!("{name}.npy"));
        npy::write_file(&p, &t).unwrap();
        args.push("--input".to_string());
        args.push(format!("{name}={}", s(&p)));
    }
    let (cycles, spans) = run(&b8, &dir.join("full.json"), &args);
    assert!(
        cycles < 85_000,
        "full batch-8 step {cycles} cycles (serial: 343,096)"
    );
    for a in spans {
        assert!(
            a < 28_000,
            "full batch-8 attention {a} cycles (serial: 158,354)"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Logits of one decode step of `bin` (fp32) whose sequences have cached lengths `lens`, pasts
/// `pasts[slot][row]` (`[2, 127, 16]` each) and last tokens `ids`.
fn step_logits(bin: &Path, lens: &[i32], pasts: &[Vec<Vec<f32>>], ids: &[i64]) -> Vec<f32> {
    use llmpu_runtime::{RunOptions, kv, run_with_kv};
    let p = llmpu_isa::binary::read_file(bin).unwrap();
    let region = p.kv.clone().expect("KV region");
    let b = lens.len();
    let tensors: Vec<Tensor> = pasts
        .iter()
        .map(|rows| {
            let v: Vec<f32> = rows.iter().flatten().copied().collect();
            Tensor::from_f32(DType::F32, vec![b as u64, 2, 127, 16], &v).unwrap()
        })
        .collect();
    let refs: Vec<&Tensor> = tensors.iter().collect();
    let mut img = kv::pack(&region, &kv::reversed_table(&region), &refs).unwrap();
    // The real cached lengths (pack writes the past length for every sequence).
    let at = (region.table_addr - region.hbm_addr + region.batch * region.max_blocks * 4) as usize;
    for (i, l) in lens.iter().enumerate() {
        img[at + 4 * i..at + 4 * i + 4].copy_from_slice(&l.to_le_bytes());
    }
    let i64s = |shape: Vec<u64>, v: Vec<i64>| {
        Tensor::new(
            DType::I64,
            shape,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
        .unwrap()
    };
    let mut mask = vec![0i64; b * 128];
    for (row, &l) in mask.chunks_mut(128).zip(lens) {
        kv::decode_mask_row(row, l as usize + 1).unwrap();
    }
    let inputs = vec![
        (
            "input_ids".to_string(),
            i64s(vec![b as u64, 1], ids.to_vec()),
        ),
        (
            "attention_mask".to_string(),
            i64s(vec![b as u64, 128], mask),
        ),
        (
            "position_ids".to_string(),
            i64s(vec![b as u64, 1], lens.iter().map(|&l| l as i64).collect()),
        ),
    ];
    let (r, _) = run_with_kv(&p, &inputs, Some(&img), &RunOptions::default()).unwrap();
    r.outputs
        .iter()
        .find(|(n, _)| n == "logits")
        .expect("logits")
        .1
        .to_f32()
}

#[test]
fn shorter_sequence_in_a_batch_gets_the_same_logits_as_alone() {
    // Batch 2 with cached lengths 5 and 100: the first sequence's blocks 1..=6 are past its live
    // one but within the batch's longest, so they are computed on its last live block, masked;
    // its logits must equal those of a batch-1 step (where no such block is computed).
    let Some(c) = corpus("models") else { return };
    let dir = std::env::temp_dir().join(format!("llmpu-paged-mixed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = c.join("models/llama-tiny-dyn-decode/model.onnx");
    let compile_fp32 = |batch: u64| {
        let bin = dir.join(format!("f{batch}.llmpu"));
        llmpu_ok(&[
            "compile".into(),
            s(&model),
            "--dim".into(),
            format!("batch_size={batch}"),
            "--max-context".into(),
            "128".into(),
            "--precision".into(),
            "fp32".into(),
            "-o".into(),
            s(&bin),
        ]);
        bin
    };
    let (b1, b2) = (compile_fp32(1), compile_fp32(2));
    let lens = [5, 100];
    let ids = [3i64, 7];
    let pasts: Vec<Vec<Vec<f32>>> = (0..4u64)
        .map(|slot| {
            (0..2u64)
                .map(|row| noise(2 * 127 * 16, slot * 2 + row))
                .collect()
        })
        .collect();
    let both = step_logits(&b2, &lens, &pasts, &ids);
    let vocab = both.len() / 2;
    for row in 0..2 {
        let alone: Vec<Vec<Vec<f32>>> = pasts.iter().map(|p| vec![p[row].clone()]).collect();
        let one = step_logits(&b1, &lens[row..row + 1], &alone, &ids[row..row + 1]);
        let diff = one
            .iter()
            .zip(&both[row * vocab..(row + 1) * vocab])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-4, "row {row}: max |diff| {diff} against batch 1");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
