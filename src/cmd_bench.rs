//! `llmpu bench`: the performance suite. Each workload is an ONNX graph built in memory with the
//! project's builder (`examples/tiny_gpt.rs`), compiled for its target, run on the emulator
//! (timing-only for the large ones) and compared with the analytic lower bound on the same target
//! (`spec/cost-model.md`, "Bounds of the bench workloads").
//!
//! Large weights are graph inputs (bf16), not initializers, so that nothing of their size is built
//! on the host: a timing-only run needs no input data. Their bytes count as compulsory traffic,
//! exactly as initializers would.

use std::io::Write;
use std::time::Instant;

use clap::Args;
use llmpu_compiler::backend::{Options, Precision};
use llmpu_compiler::interp::{self, Tensor as ITensor};
use llmpu_compiler::ir::Module;
use llmpu_compiler::onnx::proto::{GraphProto, ModelProto, OperatorSetIdProto, ValueInfoProto};
use llmpu_compiler::onnx::{self, ImportOptions};
use llmpu_compiler::pass::{PassManager, PassManagerOptions};
use llmpu_isa::Unit;
use llmpu_isa::{IoDir, Program, Target};
use llmpu_runtime::{Report, RunOptions};
use prost::Message;

#[allow(dead_code)]
#[path = "../examples/tiny_gpt.rs"]
mod tiny_gpt;
use tiny_gpt::{Builder, float, int, ints, value_info};

const FLOAT: i32 = 1;
const INT64: i32 = 7;
const BF16: i32 = 16;

#[derive(Args)]
pub struct BenchArgs {
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Run only the workload with this name (see the table for names).
    #[arg(long)]
    only: Option<String>,
    /// Also print each model node's span (first start .. last end), HBM bytes and busy cycles.
    #[arg(long)]
    breakdown: bool,
    /// Write each selected workload's ONNX model to DIR/NAME.onnx (and do not run it).
    #[arg(long, value_name = "DIR")]
    emit_onnx: Option<std::path::PathBuf>,
    /// Simulate every instruction of the timing-only rows instead of fast-forwarding the
    /// repeated periods of loops (same cycles and figures; slower).
    #[arg(long)]
    no_fast_forward: bool,
}

/// How a workload's lower bound is formed.
#[derive(Clone, Copy, PartialEq)]
enum BoundKind {
    /// `max(FLOPs / peak, compulsory bytes / bandwidth)`.
    Roofline,
    /// The bandwidth term alone (decode-shaped work).
    Bandwidth,
}

struct Workload {
    name: &'static str,
    what: &'static str,
    target: &'static str,
    precision: Precision,
    timing_only: bool,
    /// Useful multiply-accumulates (causal attention counts the computed half).
    macs: u64,
    bound: BoundKind,
    /// Target fraction of the bound, if the issue sets one.
    goal: Option<f64>,
    onnx: Vec<u8>,
}

struct Outcome {
    name: &'static str,
    what: &'static str,
    target: String,
    precision: &'static str,
    timing_only: bool,
    cycles: u64,
    bound_cycles: f64,
    compute_cycles: f64,
    memory_cycles: f64,
    fraction: f64,
    goal: Option<f64>,
    compulsory_bytes: u64,
    hbm_bytes: u64,
    instructions: u64,
    program_instructions: u64,
    /// Of `instructions`, those fast-forwarding accounted for without simulating them one by one.
    fast_forwarded: u64,
    compile_s: f64,
    emulate_s: f64,
    busy: [f64; 4],
    /// The workload's MACs (the bound's: matmuls and the computed causal half of attention).
    workload_macs: u64,
    /// The MACs the program's `mxu.matmul`s performed (tile padding and block-causal
    /// granularity included).
    emulated_macs: u64,
    extra: Vec<(String, f64)>,
    /// Per model node: (location, first start, last end, HBM bytes, busy cycles per unit).
    ops: Vec<(String, u64, u64, u64, [u64; 4])>,
}

fn new_builder() -> Builder {
    Builder {
        nodes: vec![],
        inits: vec![],
        seed: 7,
        count: 0,
    }
}

fn model(b: Builder, inputs: Vec<ValueInfoProto>, outputs: Vec<ValueInfoProto>) -> Vec<u8> {
    ModelProto {
        ir_version: 9,
        producer_name: "llmpu bench".into(),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 23,
        }],
        graph: Some(GraphProto {
            name: "bench".into(),
            node: b.nodes,
            initializer: b.inits,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Renames the last node's output.
fn name_last(b: &mut Builder, name: &str) -> String {
    if let Some(n) = b.nodes.last_mut() {
        n.output = vec![name.into()];
    }
    name.into()
}

fn gemm(m: usize, k: usize, n: usize) -> Vec<u8> {
    let mut b = new_builder();
    b.node("MatMul", "/gemm", &["a", "b"], vec![]);
    name_last(&mut b, "c");
    model(
        b,
        vec![
            value_info("a", BF16, &[m, k]),
            value_info("b", BF16, &[k, n]),
        ],
        vec![value_info("c", BF16, &[m, n])],
    )
}

fn attention(seq: usize, heads: usize, d: usize) -> Vec<u8> {
    let mut b = new_builder();
    b.node(
        "Attention",
        "/attn",
        &["q", "k", "v"],
        vec![int("is_causal", 1)],
    );
    name_last(&mut b, "o");
    let s = [1, heads, seq, d];
    model(
        b,
        vec![
            value_info("q", BF16, &s),
            value_info("k", BF16, &s),
            value_info("v", BF16, &s),
        ],
        vec![value_info("o", BF16, &s)],
    )
}

/// Weights as graph inputs (`ty`) or, for functional runs, seeded initializers.
struct Params {
    ty: i32,
    as_inputs: bool,
    inputs: Vec<ValueInfoProto>,
}

impl Params {
    fn w(&mut self, b: &mut Builder, name: &str, dims: &[usize], scale: f32) -> String {
        if self.as_inputs {
            self.inputs.push(value_info(name, self.ty, dims));
            name.into()
        } else {
            b.weight(name, dims, scale)
        }
    }
    fn ones(&mut self, b: &mut Builder, name: &str, n: usize) -> String {
        if self.as_inputs {
            self.w(b, name, &[n], 0.0)
        } else {
            b.init_f32(name, &[n], vec![1.0; n])
        }
    }
}

/// A transformer block's sizes: `heads × head` may be narrower than `hidden` (a tensor-parallel
/// shard computes its heads and its slice of the FFN; the all-reduce is outside the shard).
struct Dims {
    batch: usize,
    seq: usize,
    hidden: usize,
    heads: usize,
    head: usize,
    ffn: usize,
    /// Decode over a KV cache of this many slots (the graph inputs `k_cache`, `v_cache`, already
    /// holding the new tokens; new K/V are outputs `k_new`, `v_new`); 0: causal self-attention.
    kv: usize,
}

/// A GPT-2-style pre-LayerNorm block on `x: [batch, seq, hidden]` (fused QKV, ONNX Attention, GELU
/// written out the way exporters spell it).
fn gpt_block(b: &mut Builder, p: &mut Params, x: &str, l: usize, d: &Dims) -> String {
    let s = format!("/h.{l}");
    let (batch, seq, hidden, heads, head) = (d.batch, d.seq, d.hidden, d.heads, d.head);
    let width = heads * head;
    let g1 = p.ones(b, &format!("h{l}.ln1.scale"), hidden);
    let b1 = p.w(b, &format!("h{l}.ln1.b"), &[hidden], 0.1);
    let ln1 = b.node(
        "LayerNormalization",
        &format!("{s}/ln_1"),
        &[x, &g1, &b1],
        vec![int("axis", -1), float("epsilon", 1e-5)],
    );
    let split = b.shape(
        &format!("h{l}.split"),
        &[batch as i64, seq as i64, heads as i64, head as i64],
    );
    let merge = b.shape(
        &format!("h{l}.merge"),
        &[batch as i64, seq as i64, width as i64],
    );
    let mut qkv = vec![];
    for which in ["q", "k", "v"] {
        let w = p.w(b, &format!("h{l}.{which}.w"), &[hidden, width], 0.05);
        let bias = p.w(b, &format!("h{l}.{which}.b"), &[width], 0.1);
        let sc = format!("{s}/attn/{which}");
        let mm = b.node("MatMul", &sc, &[&ln1, &w], vec![]);
        let ad = b.node("Add", &sc, &[&mm, &bias], vec![]);
        let rs = b.node("Reshape", &sc, &[&ad, &split], vec![]);
        qkv.push(b.node("Transpose", &sc, &[&rs], vec![ints("perm", &[0, 2, 1, 3])]));
    }
    let sa = format!("{s}/attn");
    let ctx = if d.kv > 0 {
        b.node("Identity", &sa, &[&qkv[1]], vec![]);
        name_last(b, "k_new");
        b.node("Identity", &sa, &[&qkv[2]], vec![]);
        name_last(b, "v_new");
        b.node("Attention", &sa, &[&qkv[0], "k_cache", "v_cache"], vec![])
    } else {
        b.node(
            "Attention",
            &sa,
            &[&qkv[0], &qkv[1], &qkv[2]],
            vec![int("is_causal", 1)],
        )
    };
    let ctx = b.node("Transpose", &sa, &[&ctx], vec![ints("perm", &[0, 2, 1, 3])]);
    let ctx = b.node("Reshape", &sa, &[&ctx, &merge], vec![]);
    let wo = p.w(b, &format!("h{l}.o.w"), &[width, hidden], 0.05);
    let bo = p.w(b, &format!("h{l}.o.b"), &[hidden], 0.1);
    let o = b.node("MatMul", &sa, &[&ctx, &wo], vec![]);
    let o = b.node("Add", &sa, &[&o, &bo], vec![]);
    let x = b.node("Add", &s, &[x, &o], vec![]);
    let g2 = p.ones(b, &format!("h{l}.ln2.scale"), hidden);
    let b2 = p.w(b, &format!("h{l}.ln2.b"), &[hidden], 0.1);
    let ln2 = b.node(
        "LayerNormalization",
        &format!("{s}/ln_2"),
        &[&x, &g2, &b2],
        vec![int("axis", -1), float("epsilon", 1e-5)],
    );
    let sm = format!("{s}/mlp");
    let w1 = p.w(b, &format!("h{l}.fc.w"), &[hidden, d.ffn], 0.05);
    let bb1 = p.w(b, &format!("h{l}.fc.b"), &[d.ffn], 0.1);
    let h = b.node("MatMul", &sm, &[&ln2, &w1], vec![]);
    let h = b.node("Add", &sm, &[&h, &bb1], vec![]);
    let (half, one, c3, cg, cs) = gelu_consts(b, l, p.ty);
    let hh = b.node("Mul", &sm, &[&h, &half], vec![]);
    let cube = b.node("Pow", &sm, &[&h, &c3], vec![]);
    let t = b.node("Mul", &sm, &[&cube, &cg], vec![]);
    let t = b.node("Add", &sm, &[&h, &t], vec![]);
    let t = b.node("Mul", &sm, &[&t, &cs], vec![]);
    let t = b.node("Tanh", &sm, &[&t], vec![]);
    let t = b.node("Add", &sm, &[&t, &one], vec![]);
    let gelu = b.node("Mul", &sm, &[&hh, &t], vec![]);
    let w2 = p.w(b, &format!("h{l}.proj.w"), &[d.ffn, hidden], 0.05);
    let bb2 = p.w(b, &format!("h{l}.proj.b"), &[hidden], 0.1);
    let y = b.node("MatMul", &sm, &[&gelu, &w2], vec![]);
    let y = b.node("Add", &sm, &[&y, &bb2], vec![]);
    b.node("Add", &s, &[&x, &y], vec![])
}

/// A scalar initializer of element type `ty` (f32, or bf16 rounded to nearest even).
fn scalar_of(b: &mut Builder, name: &str, v: f32, ty: i32) -> String {
    if ty == BF16 {
        let bits = v.to_bits();
        let r = ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
        b.init_raw(name, &[], BF16, r.to_le_bytes().to_vec())
    } else {
        b.scalar(name, v)
    }
}

fn gelu_consts(b: &mut Builder, l: usize, ty: i32) -> (String, String, String, String, String) {
    (
        scalar_of(b, &format!("h{l}.half"), 0.5, ty),
        scalar_of(b, &format!("h{l}.one"), 1.0, ty),
        scalar_of(b, &format!("h{l}.three"), 3.0, ty),
        scalar_of(b, &format!("h{l}.gelu_c"), 0.044715, ty),
        scalar_of(
            b,
            &format!("h{l}.sqrt_2_over_pi"),
            (2.0f32 / std::f32::consts::PI).sqrt(),
            ty,
        ),
    )
}

/// A GPT-style prefill: token + position embeddings, `layers` blocks, final LayerNorm and an LM
/// head (`vocab` > 0) — or, with `vocab == 0`, hidden states in and out (one layer of a large model).
#[allow(clippy::too_many_arguments)]
fn gpt(
    layers: usize,
    hidden: usize,
    heads: usize,
    seq: usize,
    vocab: usize,
    weights_as_inputs: bool,
    ty: i32,
) -> Vec<u8> {
    let mut b = new_builder();
    let mut p = Params {
        ty,
        as_inputs: weights_as_inputs,
        inputs: vec![],
    };
    let mut inputs = vec![];
    let mut x = if vocab > 0 {
        inputs.push(value_info("input_ids", INT64, &[1, seq]));
        let wte = p.w(&mut b, "wte", &[vocab, hidden], 0.5);
        let wpe = p.w(&mut b, "wpe", &[seq, hidden], 0.2);
        let pos = {
            let raw = (0..seq as i64).flat_map(|v| v.to_le_bytes()).collect();
            b.init_raw("positions", &[1, seq], INT64, raw)
        };
        let tok = b.node(
            "Gather",
            "/embed",
            &[&wte, "input_ids"],
            vec![int("axis", 0)],
        );
        let pe = b.node("Gather", "/embed", &[&wpe, &pos], vec![int("axis", 0)]);
        b.node("Add", "/embed", &[&tok, &pe], vec![])
    } else {
        inputs.push(value_info("x", ty, &[1, seq, hidden]));
        "x".to_string()
    };
    for l in 0..layers {
        let d = Dims {
            batch: 1,
            seq,
            hidden,
            heads,
            head: hidden / heads,
            ffn: 4 * hidden,
            kv: 0,
        };
        x = gpt_block(&mut b, &mut p, &x, l, &d);
    }
    let out = if vocab > 0 {
        let gf = p.ones(&mut b, "ln_f.scale", hidden);
        let bf = p.w(&mut b, "ln_f.b", &[hidden], 0.1);
        let xf = b.node(
            "LayerNormalization",
            "/ln_f",
            &[&x, &gf, &bf],
            vec![int("axis", -1), float("epsilon", 1e-5)],
        );
        let wl = p.w(&mut b, "lm_head", &[hidden, vocab], 0.05);
        b.node("MatMul", "/lm_head", &[&xf, &wl], vec![]);
        name_last(&mut b, "logits");
        value_info("logits", ty, &[1, seq, vocab])
    } else {
        name_last(&mut b, "y");
        value_info("y", ty, &[1, seq, hidden])
    };
    inputs.extend(p.inputs);
    model(b, inputs, vec![out])
}

/// One block of a tensor-parallel shard on `x: [batch, seq, hidden]` (weights as bf16 inputs):
/// prefill with causal self-attention, or (`d.kv > 0`) one decode step over a `kv`-slot cache.
fn gpt_shard(d: &Dims) -> Vec<u8> {
    let mut b = new_builder();
    let mut p = Params {
        ty: BF16,
        as_inputs: true,
        inputs: vec![],
    };
    gpt_block(&mut b, &mut p, "x", 0, d);
    let y = name_last(&mut b, "y");
    let mut inputs = vec![value_info("x", BF16, &[d.batch, d.seq, d.hidden])];
    let mut outputs = vec![value_info(&y, BF16, &[d.batch, d.seq, d.hidden])];
    if d.kv > 0 {
        let cache = [d.batch, d.heads, d.kv, d.head];
        let new = [d.batch, d.heads, d.seq, d.head];
        inputs.push(value_info("k_cache", BF16, &cache));
        inputs.push(value_info("v_cache", BF16, &cache));
        outputs.push(value_info("k_new", BF16, &new));
        outputs.push(value_info("v_new", BF16, &new));
    }
    inputs.extend(p.inputs);
    model(b, inputs, outputs)
}

/// The GPT-3 175B layer as one of four tensor-parallel shards computes it: hidden 12288, 24 of
/// the 96 heads of 128, a quarter of the 49152-wide FFN, batch 8.
fn gpt3_tp4(seq: usize, kv: usize) -> Dims {
    Dims {
        batch: 8,
        seq,
        hidden: 12288,
        heads: 24,
        head: 128,
        ffn: 12288,
        kv,
    }
}

/// MACs of a shard block: projections, and attention over the causal half (prefill) or the
/// whole cache (decode).
fn shard_macs(d: &Dims) -> u64 {
    let (b, s, h, w, f) = (
        d.batch as u64,
        d.seq as u64,
        d.hidden as u64,
        (d.heads * d.head) as u64,
        d.ffn as u64,
    );
    let proj = b * s * (4 * h * w + 2 * h * f);
    let attn = if d.kv > 0 {
        2 * b * s * d.kv as u64 * w
    } else {
        2 * b * s * (s + 1) / 2 * w
    };
    proj + attn
}

/// One decode step of a Llama-shaped layer: the new token's hidden state `x: [1, 1, hidden]`, the
/// KV cache `k_cache`, `v_cache: [1, heads, kv, head]` (already holding the new token, as a paged
/// cache would after the append); RMSNorm, Q/K/V projections (new K/V are outputs for the cache),
/// attention, output projection, SwiGLU FFN, residuals. RoPE is omitted (elementwise on one row).
fn llama_decode(hidden: usize, heads: usize, ffn: usize, kv: usize) -> Vec<u8> {
    let mut b = new_builder();
    let mut p = Params {
        ty: BF16,
        as_inputs: true,
        inputs: vec![],
    };
    let head = hidden / heads;
    let g1 = p.w(&mut b, "attn_norm", &[hidden], 1.0);
    let n1 = b.node(
        "RMSNormalization",
        "/attn_norm",
        &["x", &g1],
        vec![int("axis", -1), float("epsilon", 1e-5)],
    );
    let split = b.shape("split", &[1, 1, heads as i64, head as i64]);
    let merge = b.shape("merge", &[1, 1, hidden as i64]);
    let mut qkv = vec![];
    for which in ["q", "k", "v"] {
        let w = p.w(&mut b, &format!("w{which}"), &[hidden, hidden], 0.05);
        let mm = b.node("MatMul", &format!("/attn/{which}"), &[&n1, &w], vec![]);
        let rs = b.node("Reshape", &format!("/attn/{which}"), &[&mm, &split], vec![]);
        qkv.push(b.node(
            "Transpose",
            &format!("/attn/{which}"),
            &[&rs],
            vec![ints("perm", &[0, 2, 1, 3])],
        ));
    }
    b.node("Identity", "/attn/k", &[&qkv[1]], vec![]);
    name_last(&mut b, "k_new");
    b.node("Identity", "/attn/v", &[&qkv[2]], vec![]);
    name_last(&mut b, "v_new");
    let ctx = b.node(
        "Attention",
        "/attn",
        &[&qkv[0], "k_cache", "v_cache"],
        vec![],
    );
    let ctx = b.node(
        "Transpose",
        "/attn",
        &[&ctx],
        vec![ints("perm", &[0, 2, 1, 3])],
    );
    let ctx = b.node("Reshape", "/attn", &[&ctx, &merge], vec![]);
    let wo = p.w(&mut b, "wo", &[hidden, hidden], 0.05);
    let o = b.node("MatMul", "/attn/o", &[&ctx, &wo], vec![]);
    let x1 = b.node("Add", "/attn", &["x", &o], vec![]);
    let g2 = p.w(&mut b, "ffn_norm", &[hidden], 1.0);
    let n2 = b.node(
        "RMSNormalization",
        "/ffn_norm",
        &[&x1, &g2],
        vec![int("axis", -1), float("epsilon", 1e-5)],
    );
    let wg = p.w(&mut b, "w_gate", &[hidden, ffn], 0.05);
    let wu = p.w(&mut b, "w_up", &[hidden, ffn], 0.05);
    let wd = p.w(&mut b, "w_down", &[ffn, hidden], 0.05);
    let g = b.node("MatMul", "/ffn/gate", &[&n2, &wg], vec![]);
    let sg = b.node("Sigmoid", "/ffn/gate", &[&g], vec![]);
    let silu = b.node("Mul", "/ffn/gate", &[&g, &sg], vec![]);
    let u = b.node("MatMul", "/ffn/up", &[&n2, &wu], vec![]);
    let h = b.node("Mul", "/ffn", &[&silu, &u], vec![]);
    let d = b.node("MatMul", "/ffn/down", &[&h, &wd], vec![]);
    b.node("Add", "/ffn", &[&x1, &d], vec![]);
    name_last(&mut b, "y");
    let kvs = [1, heads, kv, head];
    let mut inputs = vec![
        value_info("x", BF16, &[1, 1, hidden]),
        value_info("k_cache", BF16, &kvs),
        value_info("v_cache", BF16, &kvs),
    ];
    inputs.extend(p.inputs);
    model(
        b,
        inputs,
        vec![
            value_info("y", BF16, &[1, 1, hidden]),
            value_info("k_new", BF16, &[1, heads, 1, head]),
            value_info("v_new", BF16, &[1, heads, 1, head]),
        ],
    )
}

/// MACs of one GPT block's matmuls and causal attention (the computed half of the scores).
fn gpt_block_macs(seq: u64, hidden: u64) -> u64 {
    let proj = seq * hidden * hidden * 12;
    let attn = 2 * seq * (seq + 1) / 2 * hidden;
    proj + attn
}

fn workloads() -> Vec<Workload> {
    let (s, d, h) = (2048u64, 128u64, 32u64);
    vec![
        Workload {
            name: "gemm-4096",
            what: "GEMM 4096x4096x4096 bf16",
            target: "datacenter",
            precision: Precision::Bf16,
            timing_only: true,
            macs: 4096u64.pow(3),
            bound: BoundKind::Roofline,
            goal: Some(0.95),
            onnx: gemm(4096, 4096, 4096),
        },
        Workload {
            name: "gemm-decode",
            what: "GEMM 16x4096x4096 bf16",
            target: "datacenter",
            precision: Precision::Bf16,
            timing_only: true,
            macs: 16 * 4096 * 4096,
            bound: BoundKind::Bandwidth,
            goal: Some(0.90),
            onnx: gemm(16, 4096, 4096),
        },
        Workload {
            name: "gemm-decode-nomcast",
            what: "the same on datacenter without the multicast DMA (architecture data point)",
            target: "datacenter-nomcast",
            precision: Precision::Bf16,
            timing_only: true,
            macs: 16 * 4096 * 4096,
            bound: BoundKind::Bandwidth,
            goal: None,
            onnx: gemm(16, 4096, 4096),
        },
        Workload {
            name: "attention-prefill",
            what: "causal attention, seq 2048, 32 heads x 128",
            target: "datacenter",
            precision: Precision::Bf16,
            timing_only: true,
            macs: 2 * h * s * (s + 1) / 2 * d,
            bound: BoundKind::Roofline,
            goal: Some(0.85),
            onnx: attention(s as usize, h as usize, d as usize),
        },
        Workload {
            name: "attention-prefill-vpu128",
            what: "the same on datacenter with 128 vector lanes (architecture data point)",
            target: "datacenter-vpu128",
            precision: Precision::Bf16,
            timing_only: true,
            macs: 2 * h * s * (s + 1) / 2 * d,
            bound: BoundKind::Roofline,
            goal: None,
            onnx: attention(s as usize, h as usize, d as usize),
        },
        Workload {
            name: "llama7b-decode-layer",
            what: "Llama-2-7B layer, one decode step, KV 4096",
            target: "datacenter",
            precision: Precision::Bf16,
            timing_only: true,
            macs: 4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096 * 4096,
            bound: BoundKind::Bandwidth,
            goal: Some(0.90),
            onnx: llama_decode(4096, 32, 11008, 4096),
        },
        Workload {
            name: "gpt2-small-prefill",
            what: "GPT-2 small prefill, 12 layers, hidden 768, seq 512, vocab 50257",
            target: "datacenter",
            precision: Precision::Bf16,
            timing_only: true,
            macs: 12 * gpt_block_macs(512, 768) + 512 * 768 * 50257,
            bound: BoundKind::Roofline,
            goal: Some(0.75),
            onnx: gpt(12, 768, 12, 512, 50257, true, BF16),
        },
        Workload {
            name: "functional-512x4",
            what: "functional fp32 emulation: hidden 512, 4 layers, seq 128 (edge)",
            target: "edge",
            precision: Precision::Fp32,
            timing_only: false,
            macs: 4 * gpt_block_macs(128, 512),
            bound: BoundKind::Roofline,
            goal: None,
            onnx: gpt(4, 512, 8, 128, 0, false, FLOAT),
        },
        Workload {
            name: "gpt3-layer",
            what: "GPT-3 175B layer, seq 2048, timing-only",
            target: "datacenter",
            precision: Precision::Bf16,
            timing_only: true,
            macs: gpt_block_macs(2048, 12288),
            bound: BoundKind::Roofline,
            goal: None,
            onnx: gpt(1, 12288, 96, 2048, 0, true, BF16),
        },
        Workload {
            name: "gemm-16k-gpu",
            what: "GEMM 16384x12288x12288 bf16 on gpu-class (108 cores, 192 KiB SRAM)",
            target: "gpu-class",
            precision: Precision::Bf16,
            timing_only: true,
            macs: 16384 * 12288 * 12288,
            bound: BoundKind::Roofline,
            goal: None,
            onnx: gemm(16384, 12288, 12288),
        },
        Workload {
            name: "gpt3-tp4-prefill",
            what: "GPT-3 175B layer, TP-4 shard, batch 8 x 2048 tokens prefill, gpu-class",
            target: "gpu-class",
            precision: Precision::Bf16,
            timing_only: true,
            macs: shard_macs(&gpt3_tp4(2048, 0)),
            bound: BoundKind::Roofline,
            goal: None,
            onnx: gpt_shard(&gpt3_tp4(2048, 0)),
        },
        Workload {
            name: "gpt3-tp4-decode",
            what: "GPT-3 175B layer, TP-4 shard, batch 8, one decode step over 3072 tokens, gpu-class",
            target: "gpu-class",
            precision: Precision::Bf16,
            timing_only: true,
            macs: shard_macs(&gpt3_tp4(1, 3072)),
            bound: BoundKind::Bandwidth,
            goal: None,
            onnx: gpt_shard(&gpt3_tp4(1, 3072)),
        },
    ]
}

fn import(bytes: &[u8]) -> Result<Module, String> {
    let mut m = onnx::import_bytes(bytes, None, &ImportOptions::default())
        .map_err(|e| format!("import: {e}"))?;
    let mut pm = PassManager::from_names(&onnx::import_pipeline(), PassManagerOptions::default())
        .map_err(|e| e.to_string())?;
    pm.run(&mut m, &mut std::io::sink())
        .map_err(|e| format!("import: {e}"))?;
    Ok(m)
}

fn compile(m: &Module, o: &Options) -> Result<Program, String> {
    let mut m = m.clone();
    llmpu_compiler::backend::compile(
        &mut m,
        o,
        PassManagerOptions::default(),
        &mut std::io::sink(),
    )?
    .ok_or_else(|| "pipeline stopped early".to_string())
}

/// Seeded inputs for a functional run (token ids in range, floats in [-1, 1)).
fn inputs_for(p: &Program, seed: &mut u64) -> Vec<(String, llmpu_runtime::Tensor)> {
    let mut out = vec![];
    for t in p.io.iter().filter(|t| t.dir == IoDir::Input) {
        let n = t.elements().unwrap_or(0) as usize;
        let vals: Vec<f32> = (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect();
        let data: Vec<u8> = match t.dtype {
            llmpu_isa::DType::I64 => vals
                .iter()
                .flat_map(|v| ((v.abs() * 8.0) as i64).to_le_bytes())
                .collect(),
            _ => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        if let Ok(tensor) = llmpu_runtime::Tensor::new(t.dtype, t.shape.clone(), data) {
            out.push((t.name.clone(), tensor));
        }
    }
    out
}

fn bounds(w: &Workload, p: &Program, t: &Target) -> (f64, f64, u64) {
    let compulsory: u64 = p.io.iter().filter_map(|t| t.bytes()).sum::<u64>()
        + p.data.iter().map(|d| d.bytes.len() as u64).sum::<u64>();
    let macs_per_cycle = (t.macs_per_cycle_per_core() * t.cores as u64) as f64;
    let slow = if w.precision == Precision::Fp32 {
        t.matrix.fp32_slowdown as f64
    } else {
        1.0
    };
    let compute = w.macs as f64 * slow / macs_per_cycle;
    let bpc = t.hbm_bytes_per_cycle();
    let memory = compulsory as f64 / bpc;
    (compute, memory, compulsory)
}

fn busy(r: &Report) -> [f64; 4] {
    let mut out = [0.0; 4];
    for (i, u) in [Unit::Scalar, Unit::Dma, Unit::Mxu, Unit::Vpu]
        .iter()
        .enumerate()
    {
        let n = r.cores.len().max(1) as f64;
        out[i] = (0..r.cores.len())
            .map(|c| r.busy_fraction(c, *u))
            .sum::<f64>()
            / n;
    }
    out
}

/// The bench's targets: the presets, and from `examples/targets/` `datacenter-vpu128` (the
/// `datacenter` part with its original 128-lane vector units) and `datacenter-nomcast` (without
/// the multicast DMA).
fn bench_target(name: &str) -> Result<Target, String> {
    let file = match name {
        "datacenter-vpu128" => include_str!("../examples/targets/datacenter-vpu128.toml"),
        "datacenter-nomcast" => include_str!("../examples/targets/datacenter-nomcast.toml"),
        "gpu-class" => include_str!("../examples/targets/gpu-class.toml"),
        _ => return Target::preset(name).map_err(|e| e.to_string()),
    };
    Target::from_toml(file, &format!("examples/targets/{name}.toml")).map_err(|e| e.to_string())
}

fn run_one(w: Workload, fast_forward: bool) -> Result<Outcome, String> {
    let target = bench_target(w.target)?;
    let o = Options {
        target: target.clone(),
        precision: w.precision,
    };
    let t0 = Instant::now();
    let m = import(&w.onnx)?;
    let program = compile(&m, &o).map_err(|e| format!("{}: {e}", w.name))?;
    let compile_s = t0.elapsed().as_secs_f64();
    let program_instructions: u64 = program.cores.iter().map(|c| c.len() as u64).sum();
    let mut seed = 11u64;
    let inputs = if w.timing_only {
        vec![]
    } else {
        inputs_for(&program, &mut seed)
    };
    // The large rows execute more than the default limit (a guard against runaway programs,
    // which the bench's compiled programs are not).
    let ro = RunOptions {
        timing_only: w.timing_only,
        max_instructions: 1 << 34,
        fast_forward: fast_forward && llmpu_runtime::fast_forward_default(),
        ..Default::default()
    };
    let t1 = Instant::now();
    let res = llmpu_runtime::run(&program, &inputs, &ro).map_err(|e| format!("{}: {e}", w.name))?;
    let emulate_s = t1.elapsed().as_secs_f64();
    let r = &res.report;
    let (compute, memory, compulsory) = bounds(&w, &program, &target);
    let bound_cycles = match w.bound {
        BoundKind::Roofline => compute.max(memory),
        BoundKind::Bandwidth => memory,
    };
    let instructions: u64 = r.instructions.iter().sum();
    let mut extra = vec![];
    if !w.timing_only {
        // Reference: the graph interpreter (matrixmultiply sgemm) on the same inputs.
        let iin: Vec<ITensor> = inputs
            .iter()
            .map(|(_, t)| crate::emulate::from_runtime(t, dtype_scalar(t.dtype)))
            .collect::<Result<_, _>>()?;
        let t2 = Instant::now();
        interp::run(&m, &iin).map_err(|e| e.to_string())?;
        let ref_s = t2.elapsed().as_secs_f64();
        extra.push((
            "emulated_instructions_per_s".into(),
            instructions as f64 / emulate_s,
        ));
        extra.push(("reference_interpreter_s".into(), ref_s));
        extra.push(("emulator_vs_reference".into(), emulate_s / ref_s));
    }
    Ok(Outcome {
        name: w.name,
        what: w.what,
        target: target.name.clone(),
        precision: w.precision.name(),
        timing_only: w.timing_only,
        cycles: r.cycles,
        bound_cycles,
        compute_cycles: compute,
        memory_cycles: memory,
        fraction: bound_cycles / r.cycles.max(1) as f64,
        goal: w.goal,
        compulsory_bytes: compulsory,
        hbm_bytes: r.hbm_read_bytes + r.hbm_write_bytes,
        instructions,
        program_instructions,
        fast_forwarded: res.fast_forwarded,
        compile_s,
        emulate_s,
        busy: busy(r),
        workload_macs: w.macs,
        emulated_macs: r.macs,
        extra,
        ops: r
            .locations
            .iter()
            .map(|l| {
                (
                    l.loc.clone(),
                    l.first_start,
                    l.last_end,
                    l.hbm_bytes,
                    l.busy_cycles,
                )
            })
            .collect(),
    })
}

fn dtype_scalar(d: llmpu_isa::DType) -> llmpu_compiler::ir::ScalarType {
    use llmpu_compiler::ir::ScalarType as S;
    match d {
        llmpu_isa::DType::I64 => S::I64,
        llmpu_isa::DType::I32 => S::I32,
        llmpu_isa::DType::BF16 => S::BF16,
        _ => S::F32,
    }
}

fn json(o: &Outcome, breakdown: bool) -> serde_json::Value {
    let mut v = serde_json::json!({
        "name": o.name,
        "workload": o.what,
        "target": o.target,
        "precision": o.precision,
        "timing_only": o.timing_only,
        "cycles": o.cycles,
        "bound_cycles": o.bound_cycles,
        "compute_bound_cycles": o.compute_cycles,
        "memory_bound_cycles": o.memory_cycles,
        "fraction_of_bound": o.fraction,
        "goal": o.goal,
        "met": o.goal.map(|g| o.fraction >= g),
        "hbm_bytes": o.hbm_bytes,
        "compulsory_bytes": o.compulsory_bytes,
        "hbm_over_compulsory": o.hbm_bytes as f64 / o.compulsory_bytes.max(1) as f64,
        "emulated_instructions": o.instructions,
        "program_instructions": o.program_instructions,
        "fast_forwarded_instructions": o.fast_forwarded,
        "compile_s": o.compile_s,
        "emulate_s": o.emulate_s,
        "busy": {"scalar": o.busy[0], "dma": o.busy[1], "mxu": o.busy[2], "vpu": o.busy[3]},
        "workload_macs": o.workload_macs,
        "emulated_macs": o.emulated_macs,
    });
    for (k, x) in &o.extra {
        v[k] = serde_json::json!(x);
    }
    if breakdown {
        v["ops"] = o
            .ops
            .iter()
            .map(|(l, s, e, h, b)| {
                serde_json::json!({"loc": l, "start": s, "end": e, "hbm_bytes": h,
                    "busy": {"scalar": b[0], "dma": b[1], "mxu": b[2], "vpu": b[3]}})
            })
            .collect();
    }
    v
}

pub fn run(a: &BenchArgs) -> Result<(), String> {
    let all = workloads();
    let names: Vec<&str> = all.iter().map(|w| w.name).collect();
    if let Some(n) = &a.only
        && !names.contains(&n.as_str())
    {
        return Err(format!(
            "no workload `{n}`; workloads: {}",
            names.join(", ")
        ));
    }
    let mut results = vec![];
    let chosen = all
        .iter()
        .filter(|w| a.only.as_deref().is_none_or(|n| n == w.name))
        .count();
    let mut progress = crate::progress::Progress::new("bench", chosen as u64);
    for w in all {
        if a.only.as_deref().is_some_and(|n| n != w.name) {
            continue;
        }
        progress.set(results.len() as u64, w.name);
        if let Some(dir) = &a.emit_onnx {
            let p = dir.join(format!("{}.onnx", w.name));
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(&p, &w.onnx))
                .map_err(|e| format!("{}: {e}", p.display()))?;
            outln!("wrote {}", p.display());
            continue;
        }
        let o = run_one(w, !a.no_fast_forward)?;
        progress.clear();
        if !a.json {
            crate::out::check(print_row(&o, a.breakdown));
        }
        results.push(o);
    }
    if a.json {
        let v: Vec<serde_json::Value> = results.iter().map(|o| json(o, a.breakdown)).collect();
        let text = serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?;
        crate::out::check(writeln!(std::io::stdout().lock(), "{text}"));
    }
    Ok(())
}

fn print_row(o: &Outcome, breakdown: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<22} {:>14} cycles  bound {:>14.0} (compute {:.0}, memory {:.0})  fraction {:.3}{}",
        o.name,
        o.cycles,
        o.bound_cycles,
        o.compute_cycles,
        o.memory_cycles,
        o.fraction,
        match o.goal {
            Some(g) if o.fraction >= g => format!(" (goal {g}: met)"),
            Some(g) => format!(" (goal {g}: MISSED)"),
            None => String::new(),
        }
    )?;
    writeln!(
        out,
        "{:<22} HBM {} B = {:.2}x compulsory; {} instructions emulated ({} in program{}); compile {:.3} s, emulate {:.3} s; busy scalar {:.2} dma {:.2} mxu {:.2} vpu {:.2}",
        "",
        o.hbm_bytes,
        o.hbm_bytes as f64 / o.compulsory_bytes.max(1) as f64,
        o.instructions,
        o.program_instructions,
        if o.fast_forwarded > 0 {
            format!(", {} fast-forwarded", o.fast_forwarded)
        } else {
            String::new()
        },
        o.compile_s,
        o.emulate_s,
        o.busy[0],
        o.busy[1],
        o.busy[2],
        o.busy[3]
    )?;
    writeln!(
        out,
        "{:<22} MACs: workload {}, emulated {} ({:.4}x)",
        "",
        o.workload_macs,
        o.emulated_macs,
        o.emulated_macs as f64 / o.workload_macs.max(1) as f64
    )?;
    for (k, x) in &o.extra {
        writeln!(out, "{:<22} {k} = {x:.4}", "")?;
    }
    if breakdown {
        for (l, s, e, h, b) in &o.ops {
            writeln!(
                out,
                "{:<22}   {l}: {s}..{e} ({} cycles) HBM {h} B, busy dma {} mxu {} vpu {}",
                "",
                e - s,
                b[1],
                b[2],
                b[3]
            )?;
        }
    }
    Ok(())
}
