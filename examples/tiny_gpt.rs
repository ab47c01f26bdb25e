//! Builds `examples/models/tiny-gpt.onnx`: a small GPT-style decoder written with plain ONNX ops the
//! way exporters spell it (so the compiler's fusions have real work to do), with seeded random
//! weights.
//!
//! Shape: vocabulary 64, 8 tokens, hidden 32, 2 heads of 16, 2 layers; token + position embeddings
//! (`Gather`), pre-LayerNormalization, attention as `MatMul(Q, Transpose(K))`, `Div` by √16, causal
//! `Where` with the float minimum, `Softmax`, `MatMul(·, V)`; an MLP with GELU written out
//! (`0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`); final LayerNorm and a tied LM head. Input
//! `input_ids: int64[1, 8]`, output `logits: float[1, 8, 64]`.
//!
//! `cargo run --example tiny_gpt -- examples/models/tiny-gpt.onnx` rewrites the committed file; the
//! test `tests/tiny_gpt.rs` checks it still matches this builder byte for byte.

use llmpu_compiler::onnx::proto::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto, attribute_type,
};
use prost::Message;

const VOCAB: usize = 64;
const SEQ: usize = 8;
const HIDDEN: usize = 32;
const HEADS: usize = 2;
const HEAD: usize = HIDDEN / HEADS;
const LAYERS: usize = 2;
const FLOAT: i32 = 1;
const INT64: i32 = 7;
const BOOL: i32 = 9;

/// Accumulates the nodes and initializers of an ONNX graph (also used by `llmpu bench`, which
/// includes this file, to build its workloads).
pub struct Builder {
    pub nodes: Vec<NodeProto>,
    pub inits: Vec<TensorProto>,
    pub seed: u64,
    pub count: usize,
}

impl Builder {
    pub fn rand(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.seed = self
                    .seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((self.seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    pub fn init_f32(&mut self, name: &str, dims: &[usize], data: Vec<f32>) -> String {
        self.inits.push(TensorProto {
            name: name.into(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.into()
    }

    pub fn init_raw(&mut self, name: &str, dims: &[usize], ty: i32, raw: Vec<u8>) -> String {
        self.inits.push(TensorProto {
            name: name.into(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: ty,
            raw_data: raw,
            ..Default::default()
        });
        name.into()
    }

    pub fn weight(&mut self, name: &str, dims: &[usize], scale: f32) -> String {
        let n = dims.iter().product();
        let data = self.rand(n, scale);
        self.init_f32(name, dims, data)
    }

    pub fn scalar(&mut self, name: &str, v: f32) -> String {
        self.init_f32(name, &[], vec![v])
    }

    pub fn shape(&mut self, name: &str, dims: &[i64]) -> String {
        let raw = dims.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.init_raw(name, &[dims.len()], INT64, raw)
    }

    pub fn node(
        &mut self,
        op: &str,
        scope: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> String {
        self.count += 1;
        let out = format!("{scope}/{op}_{}_output", self.count);
        self.nodes.push(NodeProto {
            name: format!("{scope}/{op}_{}", self.count),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            attribute: attrs,
            ..Default::default()
        });
        out
    }
}

pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i: v,
        ..Default::default()
    }
}

pub fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::FLOAT,
        f: v,
        ..Default::default()
    }
}

pub fn value_info(name: &str, ty: i32, dims: &[usize]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: ty,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            dim_value: Some(d as i64),
                            ..Default::default()
                        })
                        .collect(),
                }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The serialized model.
pub fn build() -> Vec<u8> {
    let mut b = Builder {
        nodes: vec![],
        inits: vec![],
        seed: 2024,
        count: 0,
    };
    let wte = b.weight("wte", &[VOCAB, HIDDEN], 0.5);
    let wpe = b.weight("wpe", &[SEQ, HIDDEN], 0.2);
    let pos = {
        let raw = (0..SEQ as i64).flat_map(|v| v.to_le_bytes()).collect();
        b.init_raw("positions", &[1, SEQ], INT64, raw)
    };
    let causal = {
        let raw = (0..SEQ)
            .flat_map(|i| (0..SEQ).map(move |j| (j <= i) as u8))
            .collect();
        b.init_raw("causal_mask", &[1, 1, SEQ, SEQ], BOOL, raw)
    };
    let fmin = b.scalar("float_min", f32::MIN);
    let sqrt_d = b.scalar("sqrt_head", (HEAD as f32).sqrt());
    let (half, one, c3, cg, cs) = (
        b.scalar("half", 0.5),
        b.scalar("one", 1.0),
        b.scalar("three", 3.0),
        b.scalar("gelu_c", 0.044715),
        b.scalar("sqrt_2_over_pi", (2.0f32 / std::f32::consts::PI).sqrt()),
    );
    let split_heads = b.shape("split_heads", &[1, SEQ as i64, HEADS as i64, HEAD as i64]);
    let merge_heads = b.shape("merge_heads", &[1, SEQ as i64, HIDDEN as i64]);
    let tok = b.node(
        "Gather",
        "/embed",
        &[&wte, "input_ids"],
        vec![int("axis", 0)],
    );
    let p = b.node("Gather", "/embed", &[&wpe, &pos], vec![int("axis", 0)]);
    let mut x = b.node("Add", "/embed", &[&tok, &p], vec![]);
    for l in 0..LAYERS {
        let s = format!("/h.{l}");
        let g1 = {
            let d: Vec<f32> = (0..HIDDEN).map(|i| 1.0 + 0.01 * i as f32).collect();
            b.init_f32(&format!("h{l}.ln1.scale"), &[HIDDEN], d)
        };
        let b1 = b.weight(&format!("h{l}.ln1.b"), &[HIDDEN], 0.1);
        let ln1 = b.node(
            "LayerNormalization",
            &format!("{s}/ln_1"),
            &[&x, &g1, &b1],
            vec![int("axis", -1), float("epsilon", 1e-5)],
        );
        let mut qkv = vec![];
        for which in ["q", "k", "v"] {
            let w = b.weight(&format!("h{l}.{which}.w"), &[HIDDEN, HIDDEN], 0.3);
            let bias = b.weight(&format!("h{l}.{which}.b"), &[HIDDEN], 0.1);
            let sc = format!("{s}/attn/{which}");
            let mm = b.node("MatMul", &sc, &[&ln1, &w], vec![]);
            let ad = b.node("Add", &sc, &[&mm, &bias], vec![]);
            let rs = b.node("Reshape", &sc, &[&ad, &split_heads], vec![]);
            let perm: &[i64] = if which == "k" {
                &[0, 2, 3, 1]
            } else {
                &[0, 2, 1, 3]
            };
            qkv.push(b.node("Transpose", &sc, &[&rs], vec![ints("perm", perm)]));
        }
        let sa = format!("{s}/attn");
        let scores = b.node("MatMul", &sa, &[&qkv[0], &qkv[1]], vec![]);
        let scaled = b.node("Div", &sa, &[&scores, &sqrt_d], vec![]);
        let masked = b.node("Where", &sa, &[&causal, &scaled, &fmin], vec![]);
        let probs = b.node("Softmax", &sa, &[&masked], vec![int("axis", -1)]);
        let ctx = b.node("MatMul", &sa, &[&probs, &qkv[2]], vec![]);
        let ctx = b.node("Transpose", &sa, &[&ctx], vec![ints("perm", &[0, 2, 1, 3])]);
        let ctx = b.node("Reshape", &sa, &[&ctx, &merge_heads], vec![]);
        let wo = b.weight(&format!("h{l}.o.w"), &[HIDDEN, HIDDEN], 0.3);
        let bo = b.weight(&format!("h{l}.o.b"), &[HIDDEN], 0.1);
        let o = b.node("MatMul", &sa, &[&ctx, &wo], vec![]);
        let o = b.node("Add", &sa, &[&o, &bo], vec![]);
        x = b.node("Add", &s, &[&x, &o], vec![]);
        let g2 = {
            let d: Vec<f32> = (0..HIDDEN).map(|i| 1.0 - 0.01 * i as f32).collect();
            b.init_f32(&format!("h{l}.ln2.scale"), &[HIDDEN], d)
        };
        let b2 = b.weight(&format!("h{l}.ln2.b"), &[HIDDEN], 0.1);
        let ln2 = b.node(
            "LayerNormalization",
            &format!("{s}/ln_2"),
            &[&x, &g2, &b2],
            vec![int("axis", -1), float("epsilon", 1e-5)],
        );
        let sm = format!("{s}/mlp");
        let w1 = b.weight(&format!("h{l}.fc.w"), &[HIDDEN, 4 * HIDDEN], 0.3);
        let bb1 = b.weight(&format!("h{l}.fc.b"), &[4 * HIDDEN], 0.1);
        let h = b.node("MatMul", &sm, &[&ln2, &w1], vec![]);
        let h = b.node("Add", &sm, &[&h, &bb1], vec![]);
        let hh = b.node("Mul", &sm, &[&h, &half], vec![]);
        let cube = b.node("Pow", &sm, &[&h, &c3], vec![]);
        let t = b.node("Mul", &sm, &[&cube, &cg], vec![]);
        let t = b.node("Add", &sm, &[&h, &t], vec![]);
        let t = b.node("Mul", &sm, &[&t, &cs], vec![]);
        let t = b.node("Tanh", &sm, &[&t], vec![]);
        let t = b.node("Add", &sm, &[&t, &one], vec![]);
        let gelu = b.node("Mul", &sm, &[&hh, &t], vec![]);
        let w2 = b.weight(&format!("h{l}.proj.w"), &[4 * HIDDEN, HIDDEN], 0.2);
        let bb2 = b.weight(&format!("h{l}.proj.b"), &[HIDDEN], 0.1);
        let y = b.node("MatMul", &sm, &[&gelu, &w2], vec![]);
        let y = b.node("Add", &sm, &[&y, &bb2], vec![]);
        x = b.node("Add", &s, &[&x, &y], vec![]);
    }
    let gf = b.init_f32("ln_f.scale", &[HIDDEN], vec![1.0; HIDDEN]);
    let bf = b.weight("ln_f.b", &[HIDDEN], 0.1);
    let xf = b.node(
        "LayerNormalization",
        "/ln_f",
        &[&x, &gf, &bf],
        vec![int("axis", -1), float("epsilon", 1e-5)],
    );
    let wt = b.node(
        "Transpose",
        "/lm_head",
        &[&wte],
        vec![ints("perm", &[1, 0])],
    );
    let logits = b.node("MatMul", "/lm_head", &[&xf, &wt], vec![]);
    let last = b.nodes.len() - 1;
    b.nodes[last].output = vec!["logits".into()];
    let _ = logits;
    let model = ModelProto {
        ir_version: 8,
        producer_name: "llmpu examples/tiny_gpt.rs".into(),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            name: "tiny-gpt".into(),
            node: b.nodes,
            initializer: b.inits,
            input: vec![value_info("input_ids", INT64, &[1, SEQ])],
            output: vec![value_info("logits", FLOAT, &[1, SEQ, VOCAB])],
            ..Default::default()
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}

#[allow(dead_code)]
fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/models/tiny-gpt.onnx".into());
    if let Some(dir) = std::path::Path::new(&out).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&out, build()).unwrap_or_else(|e| panic!("cannot write {out}: {e}"));
    println!("wrote {out}");
}
