//! Graph translation: value types, initializers, the unsupported-op check, topological ordering and the
//! per-op mapping from ONNX nodes to `graph` ops (opset-aware attributes and inputs).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use super::dim_expr;
use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TypeProto, ValueInfoProto,
    attribute_type as at,
};
use super::tensor::{ExternalData, elem_type, proto_bytes};
use super::{ImportError, ImportOptions, ImportWarning, UnboundDim, UnsupportedNode};
use crate::dialects::builtin;
use crate::dialects::graph::{self, OPERAND_SLOTS};
use crate::interp::Tensor;
use crate::ir::{
    Attribute, BlockId, DenseAttr, Dim, Location, Module, OpId, OpSpec, ScalarType, TensorType,
    Type, ValueId,
};
use crate::passes::shape_inference::{infer_op, merge_types, update_function_type};

/// Newest ONNX IR version the importer knows (ONNX 1.18).
pub const MAX_IR_VERSION: i64 = 11;

/// Newest default-domain opset the importer knows.
pub const MAX_OPSET: i64 = 27;
/// Oldest default-domain opset accepted; ops whose inputs changed since (Slice, Clip, Pad) are checked
/// per node.
pub const MIN_OPSET: i64 = 7;

/// Operators the importer translates besides the simple elementwise ones, which their
/// definitions map ([`graph::Elementwise::onnx`], [`graph::elementwise_from_onnx`]).
const SUPPORTED: &[&str] = &[
    "And",
    "Attention",
    "Cast",
    "CastLike",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "CumSum",
    "DequantizeLinear",
    "Einsum",
    "Equal",
    "Expand",
    "Flatten",
    "Gather",
    "GatherElements",
    "GatherND",
    "OneHot",
    "TopK",
    "ScatterND",
    "Gelu",
    "Gemm",
    "Greater",
    "GreaterOrEqual",
    "Identity",
    "IsNaN",
    "LayerNormalization",
    "Less",
    "LessOrEqual",
    "LogSoftmax",
    "MatMul",
    "MatMulInteger",
    "Max",
    "Min",
    "Mod",
    "Or",
    "Pad",
    "Pow",
    "QuantizeLinear",
    "RMSNormalization",
    "Range",
    "ReduceL2",
    "ReduceMax",
    "ReduceMean",
    "ReduceSum",
    "Reshape",
    "RotaryEmbedding",
    "Shape",
    "Size",
    "Slice",
    "Softmax",
    "Split",
    "Squeeze",
    "Sum",
    "Tile",
    "Transpose",
    "Trilu",
    "Unsqueeze",
    "Where",
];

/// The attributes ONNX defines for each supported operator (in any opset the importer reads);
/// others are reported ([`ImportWarning::UnknownAttribute`]) and not copied into the IR.
fn onnx_attributes(op: &str) -> &'static [&'static str] {
    match op {
        "Attention" => &[
            "is_causal",
            "kv_num_heads",
            "q_num_heads",
            "qk_matmul_output_mode",
            "scale",
            "softcap",
            "softmax_precision",
        ],
        "Cast" => &["to", "saturate", "round_mode"],
        "CastLike" => &["saturate", "round_mode"],
        "Concat" | "Flatten" | "Gather" | "Softmax" | "LogSoftmax" => &["axis"],
        "Constant" => &[
            "value",
            "value_float",
            "value_floats",
            "value_int",
            "value_ints",
            "value_string",
            "value_strings",
            "sparse_value",
        ],
        "ConstantOfShape" => &["value"],
        "CumSum" => &["exclusive", "reverse"],
        "DequantizeLinear" => &["axis", "block_size", "output_dtype"],
        "QuantizeLinear" => &[
            "axis",
            "block_size",
            "output_dtype",
            "saturate",
            "precision",
        ],
        "Einsum" => &["equation"],
        "GatherND" => &["batch_dims"],
        "GatherElements" => &["axis"],
        "ScatterND" => &["reduction"],
        "TopK" => &["axis", "largest", "sorted"],
        "OneHot" => &["axis"],
        "Gelu" => &["approximate"],
        "Gemm" => &["alpha", "beta", "transA", "transB"],
        "LayerNormalization" | "RMSNormalization" => &["axis", "epsilon", "stash_type"],
        "Mod" => &["fmod"],
        "Pad" => &["mode"],
        "ReduceL2" | "ReduceMax" | "ReduceMean" | "ReduceSum" => {
            &["axes", "keepdims", "noop_with_empty_axes"]
        }
        "Reshape" => &["allowzero"],
        "RotaryEmbedding" => &["interleaved", "num_heads", "rotary_embedding_dim"],
        "Shape" => &["start", "end"],
        "Split" => &["axis", "num_outputs", "split"],
        "Squeeze" | "Unsqueeze" => &["axes"],
        "Transpose" => &["perm"],
        "Trilu" => &["upper"],
        _ => &[],
    }
}

fn why_unsupported(n: &NodeProto, opset: i64) -> Option<String> {
    if !(n.domain.is_empty() || n.domain == "ai.onnx") {
        return Some(format!("operator domain '{}' is not supported", n.domain));
    }
    let op = n.op_type.as_str();
    if op == "If" {
        return None;
    }
    if matches!(op, "Loop" | "Scan") {
        return Some("control flow with loops (subgraphs run repeatedly) is not supported".into());
    }
    if op.starts_with("Sequence")
        || op.starts_with("Optional")
        || op == "SplitToSequence"
        || op == "ConcatFromSequence"
    {
        return Some("Sequence/Optional values are not supported".into());
    }
    let elementwise = graph::elementwise_from_onnx(op);
    if !SUPPORTED.contains(&op) && elementwise.is_none() {
        return Some("operator is not supported".into());
    }
    let since = match op {
        "Slice" => 10,
        "Clip" | "Pad" => 11,
        "Gelu" => 20,
        "RMSNormalization" | "Attention" | "RotaryEmbedding" => 23,
        "LayerNormalization" => 17,
        _ => elementwise.map_or(MIN_OPSET, |(_, e)| e.since.max(MIN_OPSET)),
    };
    if opset < since {
        return Some(format!(
            "{op} before opset {since} is not supported (model has {opset})"
        ));
    }
    if op == "Pad"
        && let Some(m) = n.attribute.iter().find(|a| a.name == "mode")
    {
        let m = String::from_utf8_lossy(&m.s);
        if !graph::PAD_MODES.contains(&m.as_ref()) {
            return Some(format!(
                "Pad mode '{m}' is not supported (only {})",
                graph::PAD_MODES.join(", ")
            ));
        }
    }
    for a in &n.attribute {
        if !a.ref_attr_name.is_empty() {
            return Some(format!(
                "attribute '{}' references a function attribute",
                a.name
            ));
        }
        if matches!(a.r#type, at::GRAPH | at::GRAPHS) || a.g.is_some() || !a.graphs.is_empty() {
            return Some(format!("attribute '{}' holds a subgraph", a.name));
        }
        if matches!(a.r#type, at::SPARSE_TENSOR | at::SPARSE_TENSORS) || a.sparse_tensor.is_some() {
            return Some(format!("attribute '{}' holds a sparse tensor", a.name));
        }
        if let Some(t) = &a.t
            && let Err(e) = elem_type(t.data_type)
        {
            return Some(format!("attribute '{}': {e}", a.name));
        }
    }
    if op == "Constant"
        && n.attribute
            .iter()
            .any(|a| matches!(a.name.as_str(), "value_string" | "value_strings"))
    {
        return Some("string constants are not supported".into());
    }
    if op == "Cast" || op == "QuantizeLinear" || op == "DequantizeLinear" {
        for name in ["to", "output_dtype"] {
            if let Some(a) = n.attribute.iter().find(|a| a.name == name)
                && a.i != 0
                && let Err(e) = elem_type(a.i as i32)
            {
                return Some(e);
            }
        }
    }
    None
}

/// Appends every unsupported node of `g` and of its `If` branches (labelled `prefix` + the
/// `If` node and branch) to `out`.
fn unsupported_nodes(g: &GraphProto, opset: i64, prefix: &str, out: &mut Vec<UnsupportedNode>) {
    for (i, n) in g.node.iter().enumerate() {
        let label = format!("{prefix}{}", node_label(n, i));
        if let Some(reason) = why_unsupported(n, opset) {
            out.push(UnsupportedNode {
                node: label,
                op_type: n.op_type.clone(),
                reason,
            });
            continue;
        }
        if n.op_type == "If" {
            for a in &n.attribute {
                match (a.name.as_str(), &a.g) {
                    ("then_branch" | "else_branch", Some(b)) => {
                        unsupported_nodes(b, opset, &format!("{label}/{}/", a.name), out)
                    }
                    (name, _) => out.push(UnsupportedNode {
                        node: label.clone(),
                        op_type: n.op_type.clone(),
                        reason: format!("attribute '{name}' is not a branch graph"),
                    }),
                }
            }
        }
    }
}

/// The names `n` reads: its inputs and, for an `If`, the outer values its branches capture.
fn node_reads(n: &NodeProto) -> Vec<String> {
    let mut v: Vec<String> = n.input.iter().filter(|s| !s.is_empty()).cloned().collect();
    for a in &n.attribute {
        if let Some(b) = &a.g {
            for c in captured(b) {
                if !v.contains(&c) {
                    v.push(c);
                }
            }
        }
    }
    v
}

/// Names a branch graph reads from its enclosing scopes.
fn captured(g: &GraphProto) -> Vec<String> {
    let mut defined: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    defined.extend(g.input.iter().map(|i| i.name.as_str()));
    for n in &g.node {
        defined.extend(n.output.iter().map(String::as_str));
    }
    let mut out: Vec<String> = vec![];
    let reads = g
        .node
        .iter()
        .flat_map(node_reads)
        .chain(g.output.iter().map(|o| o.name.clone()));
    for r in reads {
        if !defined.contains(r.as_str()) && !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

fn node_label(n: &NodeProto, idx: usize) -> String {
    if !n.name.is_empty() {
        n.name.clone()
    } else if let Some(o) = n.output.iter().find(|o| !o.is_empty()) {
        o.clone()
    } else {
        format!("{}_{idx}", n.op_type)
    }
}

/// Whether dim 1 of this graph input or output is a decode graph's new-token axis
/// ([`ImportOptions::new_tokens`]).
fn new_token_axis(what: &str, name: &str, rank: usize) -> bool {
    match what {
        "graph input" => matches!(name, "input_ids" | "position_ids") && rank == 2,
        "graph output" => name == "logits" && rank == 3,
        _ => false,
    }
}

/// A bound value must have the input's declared element type, and its shape the declared rank
/// and every static extent.
fn check_binding(vi: &ValueInfoProto, t: &Tensor) -> Result<(), ImportError> {
    let bad = |reason: String| ImportError::UnsupportedValue {
        what: "bound graph input",
        name: vi.name.clone(),
        reason,
    };
    let tt = vi
        .r#type
        .as_ref()
        .ok_or_else(|| bad("has no type".into()))
        .and_then(|tp| tensor_type_of(tp).map_err(|r| bad(r.to_string())))?;
    if let Ok(elem) = elem_type(tt.elem_type)
        && elem != t.dtype()
    {
        return Err(bad(format!(
            "is declared {elem}, the value is {}",
            t.dtype()
        )));
    }
    if let Some(shape) = &tt.shape {
        let fits = shape.dim.len() == t.shape.len()
            && shape
                .dim
                .iter()
                .zip(&t.shape)
                .all(|(d, &n)| d.dim_value.is_none_or(|v| v == n as i64));
        if !fits {
            return Err(bad(format!(
                "the value's shape {:?} does not fit the declared shape",
                t.shape
            )));
        }
    }
    Ok(())
}

fn value_type_of(
    vi: &ValueInfoProto,
    what: &'static str,
    opts: &ImportOptions,
    strict: bool,
) -> Result<Option<Type>, ImportError> {
    let unsupported = |reason: &str| ImportError::UnsupportedValue {
        what,
        name: vi.name.clone(),
        reason: reason.to_string(),
    };
    let Some(tp) = &vi.r#type else {
        return Ok(None);
    };
    let tt = tensor_type_of(tp).map_err(|r| unsupported(&r))?;
    let elem = elem_type(tt.elem_type).map_err(|r| unsupported(&r))?;
    let declared: Option<Vec<Dim>> = tt.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .enumerate()
            .map(|(index, d)| match (&d.dim_value, &d.dim_param) {
                (Some(v), _) if *v >= 0 => Dim::Static(*v as u64),
                (Some(value), _) => {
                    if let Some(f) = opts.on_warning {
                        f(&ImportWarning::NegativeDim {
                            what,
                            name: vi.name.clone(),
                            index,
                            value: *value,
                        });
                    }
                    Dim::Dynamic
                }
                // An expression is evaluated for inputs, whose shapes it binds; elsewhere it is
                // a label (Optimum's merged decoder labels both branches' presents with the
                // decode branch's `past_sequence_length + 1`).
                (_, Some(p)) if !p.is_empty() => {
                    let expr = || match what == "graph input" {
                        true => dim_expr::eval(p, &opts.dims),
                        false => None,
                    };
                    match opts.dims.get(p).copied().or_else(expr) {
                        Some(v) => Dim::Static(v),
                        None => Dim::Symbolic(Arc::from(p.as_str())),
                    }
                }
                _ => Dim::Dynamic,
            })
            .collect()
    });
    let declared = match (opts.new_tokens, declared) {
        (Some(c), Some(mut d)) if new_token_axis(what, &vi.name, d.len()) => {
            if matches!(d[1], Dim::Static(1)) {
                d[1] = Dim::Static(c);
            }
            Some(d)
        }
        (_, d) => d,
    };
    let dims = match (opts.shapes.get(&vi.name), declared) {
        (Some(s), decl) if what == "graph input" => {
            if let Some(decl) = decl {
                let bad = decl.len() != s.len()
                    || decl
                        .iter()
                        .zip(s)
                        .any(|(d, &v)| matches!(d, Dim::Static(x) if *x != v));
                if bad {
                    return Err(ImportError::Options(format!(
                        "--shape {}={} does not match the declared shape {}",
                        vi.name,
                        s.iter().map(u64::to_string).collect::<Vec<_>>().join("x"),
                        Type::Tensor(TensorType { dims: decl, elem })
                    )));
                }
            }
            s.iter().map(|&v| Dim::Static(v)).collect()
        }
        (_, Some(d)) => d,
        (_, None) => {
            if strict {
                return Err(unsupported(
                    "has no shape (`llmpu import --shape NAME=AxB` gives one; `--bind NAME=V1,V2,...` compiles it in as a constant)",
                ));
            }
            return Ok(None);
        }
    };
    if strict && !opts.allow_symbolic {
        // An expression dim (`past_sequence_length + sequence_length`) is unbound by its names.
        let unbound: Vec<UnboundDim> = dims
            .iter()
            .enumerate()
            .flat_map(|(index, d)| {
                let names: Vec<Option<String>> = match d {
                    Dim::Symbolic(s) if dim_expr::is_expr(s) => dim_expr::names(s)
                        .into_iter()
                        .filter(|n| !opts.dims.contains_key(n))
                        .map(Some)
                        .collect(),
                    Dim::Symbolic(s) => vec![Some(s.to_string())],
                    Dim::Dynamic => vec![None],
                    Dim::Static(_) => vec![],
                };
                names.into_iter().map(move |name| UnboundDim {
                    input: vi.name.clone(),
                    index,
                    name,
                })
            })
            .collect();
        if !unbound.is_empty() {
            return Err(ImportError::UnboundDims(unbound));
        }
    }
    let t = TensorType { dims, elem };
    t.check_limits().map_err(|r| unsupported(&r))?;
    Ok(Some(Type::Tensor(t)))
}

/// The symbolic dim names of a tensor type, one per dim (`None` for a static or unnamed dim);
/// `None` for a non-tensor type or one without a shape.
pub fn tensor_shape(tp: &TypeProto) -> Option<Vec<Option<String>>> {
    let t = tensor_type_of(tp).ok()?;
    Some(
        t.shape
            .as_ref()?
            .dim
            .iter()
            .map(|d| d.dim_param.clone().filter(|p| !p.is_empty()))
            .collect(),
    )
}

fn tensor_type_of(tp: &TypeProto) -> Result<&super::proto::TypeProtoTensor, String> {
    if let Some(t) = &tp.tensor_type {
        return Ok(t);
    }
    Err(if tp.sequence_type.is_some() {
        "Sequence values are not supported".into()
    } else if tp.optional_type.is_some() {
        "Optional values are not supported".into()
    } else if tp.map_type.is_some() {
        "Map values are not supported".into()
    } else if tp.sparse_tensor_type.is_some() {
        "sparse tensors are not supported".into()
    } else {
        "the value has no tensor type".into()
    })
}

/// Nodes in a topological order (Kahn), or the nodes on a cycle.
fn topo_order(g: &GraphProto, known: &HashSet<String>) -> Result<Vec<usize>, ImportError> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if producer.insert(o.as_str(), i).is_some() || known.contains(o) {
                return Err(ImportError::Redefined(o.clone()));
            }
        }
    }
    let mut indeg = vec![0usize; g.node.len()];
    let mut users: Vec<Vec<usize>> = vec![vec![]; g.node.len()];
    for (i, n) in g.node.iter().enumerate() {
        for inp in &node_reads(n) {
            match producer.get(inp.as_str()) {
                Some(&p) => {
                    indeg[i] += 1;
                    users[p].push(i);
                }
                None if known.contains(inp) => {}
                None => {
                    return Err(ImportError::Dangling {
                        node: node_label(n, i),
                        op_type: n.op_type.clone(),
                        input: inp.clone(),
                    });
                }
            }
        }
    }
    let mut ready: std::collections::VecDeque<usize> =
        (0..g.node.len()).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(g.node.len());
    while let Some(i) = ready.pop_front() {
        order.push(i);
        for &u in &users[i] {
            indeg[u] -= 1;
            if indeg[u] == 0 {
                ready.push_back(u);
            }
        }
    }
    if order.len() != g.node.len() {
        let stuck: Vec<String> = (0..g.node.len())
            .filter(|&i| indeg[i] > 0)
            .map(|i| format!("'{}' ({})", node_label(&g.node[i], i), g.node[i].op_type))
            .collect();
        return Err(ImportError::Cycle(stuck));
    }
    Ok(order)
}

struct Ctx<'a> {
    m: Module,
    block: BlockId,
    values: HashMap<String, ValueId>,
    value_info: HashMap<String, Type>,
    opset: i64,
    ext: ExternalData,
    opts: &'a ImportOptions,
}

/// The names of the symbolic dims the graph declares on its inputs, outputs and value infos.
pub fn symbolic_dims(g: &super::proto::GraphProto) -> std::collections::BTreeSet<String> {
    g.input
        .iter()
        .chain(&g.output)
        .chain(&g.value_info)
        .filter_map(|vi| tensor_type_of(vi.r#type.as_ref()?).ok())
        .filter_map(|t| t.shape.as_ref())
        .flat_map(|s| &s.dim)
        .filter_map(|d| d.dim_param.clone())
        .filter(|p| !p.is_empty())
        .flat_map(|p| match dim_expr::is_expr(&p) {
            true => dim_expr::names(&p),
            false => vec![p],
        })
        .collect()
}

/// Imports a model.
pub fn import(
    model: &ModelProto,
    base_dir: Option<&Path>,
    opts: &ImportOptions,
) -> Result<Module, ImportError> {
    if model.ir_version < 3 {
        return Err(ImportError::IrVersion(model.ir_version));
    }
    let warn = |w: ImportWarning| {
        if let Some(f) = opts.on_warning {
            f(&w);
        }
    };
    if model.ir_version > MAX_IR_VERSION {
        warn(ImportWarning::NewerIrVersion(model.ir_version));
    }
    let mut opset = None;
    for o in &model.opset_import {
        if o.domain.is_empty() || o.domain == "ai.onnx" {
            opset = Some(o.version);
        }
    }
    let opset = opset.ok_or(ImportError::NoOpset)?;
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(ImportError::Opset {
            domain: "ai.onnx".into(),
            version: opset,
        });
    }
    let g = model.graph.as_ref().ok_or(ImportError::NoGraph)?;
    if !opts.user_dims.is_empty() {
        let known = symbolic_dims(g);
        for name in &opts.user_dims {
            if !known.contains(name) {
                return Err(ImportError::UnknownDim {
                    name: name.clone(),
                    known_list: known.into_iter().collect(),
                });
            }
        }
    }
    for name in opts.shapes.keys() {
        if !g.input.iter().any(|i| &i.name == name) {
            return Err(ImportError::Options(format!(
                "--shape names '{name}', which is not a graph input"
            )));
        }
    }
    for name in opts.bindings.keys() {
        let is_init = g.initializer.iter().any(|t| &t.name == name);
        if is_init || !g.input.iter().any(|i| &i.name == name) {
            return Err(ImportError::Options(format!(
                "--bind names '{name}', which is not a graph input{}",
                if is_init {
                    " (it is an initializer)"
                } else {
                    ""
                }
            )));
        }
    }
    // 1. Every unsupported node at once (inside `If` branches too).
    let mut bad: Vec<UnsupportedNode> = vec![];
    unsupported_nodes(g, opset, "", &mut bad);
    if !bad.is_empty() {
        return Err(ImportError::Unsupported(bad));
    }
    // Graph inputs and outputs are bound and read by name (found by the `compile` fuzz target:
    // an empty name reached the binary writer).
    for (what, list) in [("graph input", &g.input), ("graph output", &g.output)] {
        if let Some(i) = list
            .iter()
            .position(|v| v.name.is_empty() || v.name.contains('\0'))
        {
            return Err(ImportError::UnsupportedValue {
                what,
                name: format!("#{i}"),
                reason: "has an empty name or one with a NUL character".into(),
            });
        }
    }
    if let Some(s) = g.sparse_initializer.first() {
        return Err(ImportError::UnsupportedValue {
            what: "initializer",
            name: s
                .values
                .as_ref()
                .map(|v| v.name.clone())
                .unwrap_or_default(),
            reason: "sparse initializers are not supported".into(),
        });
    }
    // 2. Inputs and initializers.
    let init_names: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut arg_types = vec![];
    let mut arg_names = vec![];
    let mut unbound = Vec::new();
    let mut bound = vec![];
    for vi in g
        .input
        .iter()
        .filter(|i| !init_names.contains(i.name.as_str()))
    {
        if let Some(t) = opts.bindings.get(&vi.name) {
            check_binding(vi, t)?;
            bound.push((vi.name.clone(), t));
            continue;
        }
        let ty = match value_type_of(vi, "graph input", opts, true) {
            Err(ImportError::UnboundDims(u)) => {
                unbound.extend(u);
                continue;
            }
            t => t?,
        };
        let ty = ty.ok_or_else(|| ImportError::UnsupportedValue {
            what: "graph input",
            name: vi.name.clone(),
            reason: "has no type".into(),
        })?;
        arg_types.push(ty);
        arg_names.push(vi.name.clone());
    }
    if !unbound.is_empty() {
        return Err(ImportError::UnboundDims(unbound));
    }
    let mut m = Module::new();
    let (func, block) = builtin::build_func(
        &mut m,
        "main",
        arg_types.clone(),
        vec![],
        Location::name("main"),
    );
    let name_attrs = |names: &[String]| {
        Attribute::Array(
            names
                .iter()
                .map(|n| {
                    Attribute::Dict(vec![("onnx.name".to_string(), Attribute::str(n.clone()))])
                })
                .collect(),
        )
    };
    m.set_attr(func, "arg_attrs", name_attrs(&arg_names));
    let mut ctx = Ctx {
        m,
        block,
        values: HashMap::new(),
        value_info: HashMap::new(),
        opset,
        ext: ExternalData::new(base_dir),
        opts,
    };
    let args = ctx.m.block(block).args.clone();
    for (n, v) in arg_names.iter().zip(args) {
        ctx.values.insert(n.clone(), v);
    }
    for t in &g.initializer {
        let (elem, shape, bytes) =
            proto_bytes(t, &mut ctx.ext).map_err(|message| ImportError::Tensor {
                name: t.name.clone(),
                message,
            })?;
        let v = ctx.constant(&t.name, elem, &shape, bytes, Location::name(&t.name));
        ctx.values.insert(t.name.clone(), v);
    }
    for (name, t) in bound {
        let shape = t.shape.clone();
        let v = ctx.constant(
            &name,
            t.dtype(),
            &shape,
            t.to_le_bytes(),
            Location::name(&name),
        );
        ctx.values.insert(name, v);
    }
    for vi in &g.value_info {
        if let Ok(Some(t)) = value_type_of(vi, "value", opts, false) {
            ctx.value_info.insert(vi.name.clone(), t);
        }
    }
    for vi in &g.output {
        if let Some(t) = value_type_of(vi, "graph output", opts, false)? {
            ctx.value_info.insert(vi.name.clone(), t);
        }
    }
    // 3. Nodes in topological order.
    ctx.import_nodes(g, "")?;
    // 4. Outputs.
    let mut outs = vec![];
    let mut out_names = vec![];
    for o in &g.output {
        let v = *ctx
            .values
            .get(&o.name)
            .ok_or_else(|| ImportError::DanglingOutput(o.name.clone()))?;
        outs.push(v);
        out_names.push(o.name.clone());
    }
    builtin::build_return(&mut ctx.m, block, &outs, Location::name("return"));
    ctx.m.set_attr(func, "res_attrs", name_attrs(&out_names));
    update_function_type(&mut ctx.m, func);
    if let Err(errs) = crate::ir::verify(&ctx.m) {
        let e = &errs[0];
        return Err(ImportError::Invalid(e.to_string()));
    }
    Ok(ctx.m)
}

type R<T> = Result<T, String>;

fn attr_value(
    a: &AttributeProto,
    ext: &mut ExternalData,
    m: &mut Module,
    hint: &str,
) -> R<Option<Attribute>> {
    let ty = if a.r#type != at::UNDEFINED {
        a.r#type
    } else if a.t.is_some() {
        at::TENSOR
    } else if !a.ints.is_empty() {
        at::INTS
    } else if !a.floats.is_empty() {
        at::FLOATS
    } else if !a.s.is_empty() {
        at::STRING
    } else {
        at::INT
    };
    Ok(Some(match ty {
        at::INT => Attribute::Int(a.i, ScalarType::I64),
        at::FLOAT => Attribute::Float(a.f as f64, ScalarType::F32),
        at::STRING => Attribute::Str(String::from_utf8_lossy(&a.s).into_owned()),
        at::INTS => Attribute::DenseI64Array(a.ints.clone()),
        at::FLOATS => Attribute::DenseF32Array(a.floats.clone()),
        at::TENSOR => {
            let t = a.t.as_ref().ok_or("tensor attribute without a tensor")?;
            let (elem, shape, bytes) = proto_bytes(t, ext)?;
            let ty = Type::tensor(&shape.iter().map(|&d| d as u64).collect::<Vec<_>>(), elem);
            let blob = m.blobs.add_auto(hint, bytes.into());
            Attribute::Dense(DenseAttr { ty, blob })
        }
        _ => return Ok(None),
    }))
}

impl Ctx<'_> {
    fn constant(
        &mut self,
        name: &str,
        elem: ScalarType,
        shape: &[usize],
        bytes: Vec<u8>,
        loc: Location,
    ) -> ValueId {
        let ty = TensorType::new(&shape.iter().map(|&d| d as u64).collect::<Vec<_>>(), elem);
        crate::dialects::graph::constant(&mut self.m, self.block, name, ty, bytes.into(), loc)
    }

    fn constant_tensor(&mut self, name: &str, t: &Tensor, loc: Location) -> ValueId {
        self.constant(name, t.dtype(), &t.shape.clone(), t.to_le_bytes(), loc)
    }

    fn elem(&self, v: ValueId) -> ScalarType {
        self.m.value_type(v).elem().unwrap_or(ScalarType::F32)
    }

    /// Creates the `graph` op `name` (`graph::Add::NAME`, ...) with operands, attributes and result element types, then infers its
    /// result types.
    fn emit(
        &mut self,
        name: &str,
        operands: &[ValueId],
        attrs: Vec<(String, Attribute)>,
        elems: &[ScalarType],
        loc: &Location,
    ) -> R<Vec<ValueId>> {
        let mut spec = OpSpec::new(name, loc.clone())
            .operands(operands)
            .results(elems.iter().map(|&e| Type::tensor(&[], e)).collect());
        for (n, a) in attrs {
            spec = spec.attr(&n, a);
        }
        let op = self.m.append(self.block, spec);
        self.infer(op)?;
        Ok(self.m.op(op).results.clone())
    }

    fn infer(&mut self, op: OpId) -> R<()> {
        if let Some(types) = infer_op(&self.m, op)? {
            for t in types.iter().filter_map(Type::as_tensor) {
                t.check_limits()?;
            }
            let results = self.m.op(op).results.clone();
            for (r, t) in results.into_iter().zip(types) {
                self.m.set_value_type(r, t);
            }
        }
        Ok(())
    }

    /// Imports the nodes of `g` in topological order, labelled `prefix` + node label, folding
    /// as it goes and checking each output against its declared type.
    fn import_nodes(&mut self, g: &GraphProto, prefix: &str) -> Result<(), ImportError> {
        let known: HashSet<String> = self.values.keys().cloned().collect();
        let order = topo_order(g, &known)?;
        for i in order {
            let n = &g.node[i];
            let label = format!("{prefix}{}", node_label(n, i));
            let err = |message: String| ImportError::Node {
                node: label.clone(),
                op_type: n.op_type.clone(),
                message,
            };
            let mut outs = self.node(n, &label).map_err(err)?;
            if self.opts.fold {
                // Fold as we go, so shape computations are constants for the typing of later nodes.
                if let Some(op) = outs.first().and_then(|&v| self.m.defining_op(v))
                    && self.m.op(op).results == outs
                    && let Some(new) =
                        crate::passes::fold_constants::fold_op(&mut self.m, op).map_err(err)?
                {
                    outs = new;
                }
            }
            for (name, v) in n.output.iter().zip(outs) {
                if name.is_empty() {
                    continue;
                }
                if let Some(decl) = self.value_info.get(name) {
                    let cur = self.m.value_type(v).clone();
                    let merged = merge_types(decl, &cur)
                        .and_then(|t| {
                            if t.elem() != cur.elem() {
                                Err(format!(
                                    "value '{name}' is declared {decl} but computed as {cur}"
                                ))
                            } else {
                                Ok(t)
                            }
                        })
                        .map_err(|e| ImportError::Node {
                            node: label.clone(),
                            op_type: n.op_type.clone(),
                            message: format!("output '{name}': {e}"),
                        })?;
                    self.m.set_value_type(v, merged);
                }
                self.values.insert(name.clone(), v);
            }
        }
        Ok(())
    }

    /// ONNX `If`. A condition known at compile time (a constant, a folded shape test, a bound
    /// input) imports the taken branch's nodes in place: its outputs are the node's. A run-time
    /// condition imports both branches and selects each output with `graph.where`, which needs
    /// the two branches' outputs to have one type (otherwise the error names the input to bind).
    fn if_node(&mut self, n: &NodeProto, label: &str, cond: ValueId) -> R<Vec<ValueId>> {
        if let Some(c) = crate::interp::constant_value(&self.m, cond) {
            if c.len() != 1 {
                return Err(format!("the condition has {} elements, not one", c.len()));
            }
            let which = if c.get_f64(0) != 0.0 {
                "then_branch"
            } else {
                "else_branch"
            };
            return self.branch(n, label, which);
        }
        let scope = self.values.clone();
        let then = self.branch(n, label, "then_branch")?;
        self.values = scope.clone();
        let other = self.branch(n, label, "else_branch")?;
        self.values = scope;
        let cond_ty = self.m.value_type(cond).as_tensor().cloned();
        let scalar = cond_ty
            .as_ref()
            .is_some_and(|t| t.elem == ScalarType::I1 && t.num_elements() == Some(1));
        let same = then.len() == other.len()
            && then
                .iter()
                .zip(&other)
                .all(|(a, b)| self.m.value_type(*a) == self.m.value_type(*b));
        if !scalar || !same {
            return Err(self.run_time_if_reason(cond, scalar));
        }
        // A one-element condition broadcasts as a scalar.
        let c = if cond_ty.is_some_and(|t| t.rank() == 0) {
            cond
        } else {
            let shape = self.constant(
                "if_scalar",
                ScalarType::I64,
                &[0],
                vec![],
                Location::name(label),
            );
            self.emit(
                graph::Reshape::NAME,
                &[cond, shape],
                vec![],
                &[ScalarType::I1],
                &Location::name(label),
            )?[0]
        };
        let mut outs = vec![];
        for (t, e) in then.into_iter().zip(other) {
            let elem = self
                .m
                .value_type(t)
                .elem()
                .ok_or("a branch output is not a tensor")?;
            outs.push(
                self.emit(
                    graph::Where::NAME,
                    &[c, t, e],
                    vec![],
                    &[elem],
                    &Location::name(label),
                )?[0],
            );
        }
        Ok(outs)
    }

    /// Why a run-time `If` cannot be selected: the graph input its condition comes from (through
    /// ops of one run-time operand) and how to bind it.
    fn run_time_if_reason(&self, cond: ValueId, scalar: bool) -> String {
        let mut v = cond;
        while let Some(op) = self.m.defining_op(v) {
            let live: Vec<ValueId> = self
                .m
                .op(op)
                .operands
                .iter()
                .copied()
                .filter(|&o| crate::interp::constant_value(&self.m, o).is_none())
                .collect();
            match live[..] {
                [one] => v = one,
                _ => break,
            }
        }
        let why = if scalar {
            "its branches' outputs differ in type or shape, so one cannot be selected at run time"
        } else {
            "its condition is not a one-element bool"
        };
        let input = self
            .values
            .iter()
            .find(|(_, x)| **x == v && self.m.defining_op(v).is_none())
            .map(|(k, _)| k.clone());
        match input {
            Some(i) => format!(
                "the condition is graph input '{i}', known only at run time, and {why}; compile the branch you want with `--bind {i}=1` (then) or `--bind {i}=0` (else)"
            ),
            None => format!("the condition is computed at run time and {why}"),
        }
    }

    /// Imports branch `which` (`then_branch` / `else_branch`) of `If` node `n`; its outputs.
    fn branch(&mut self, n: &NodeProto, label: &str, which: &str) -> R<Vec<ValueId>> {
        let g = n
            .attribute
            .iter()
            .find(|a| a.name == which)
            .and_then(|a| a.g.as_ref())
            .ok_or_else(|| format!("no {which} graph"))?;
        for t in &g.initializer {
            let (elem, shape, bytes) = proto_bytes(t, &mut self.ext)?;
            let v = self.constant(&t.name, elem, &shape, bytes, Location::name(&t.name));
            self.values.insert(t.name.clone(), v);
        }
        for vi in &g.value_info {
            if let Ok(Some(t)) = value_type_of(vi, "value", self.opts, false) {
                self.value_info.insert(vi.name.clone(), t);
            }
        }
        self.import_nodes(g, &format!("{label}/{which}/"))
            .map_err(|e| e.to_string())?;
        g.output
            .iter()
            .map(|o| {
                self.values
                    .get(&o.name)
                    .copied()
                    .ok_or_else(|| format!("{which} output '{}' is never computed", o.name))
            })
            .collect()
    }

    fn node(&mut self, n: &NodeProto, label: &str) -> R<Vec<ValueId>> {
        let loc = Location::name(label);
        let ins: Vec<Option<ValueId>> = n
            .input
            .iter()
            .map(|s| {
                if s.is_empty() {
                    None
                } else {
                    self.values.get(s).copied()
                }
            })
            .collect();
        let attrs: HashMap<&str, &AttributeProto> =
            n.attribute.iter().map(|a| (a.name.as_str(), a)).collect();
        let int = |name: &str, d: i64| attrs.get(name).map_or(d, |a| a.i);
        let req = |i: usize| -> R<ValueId> {
            ins.get(i)
                .copied()
                .flatten()
                .ok_or_else(|| format!("missing required input #{i}"))
        };
        let nout = n
            .output
            .iter()
            .rposition(|o| !o.is_empty())
            .map_or(1, |p| p + 1)
            .max(1);
        if n.op_type == "If" {
            let cond = req(0)?;
            return self.if_node(n, label, cond);
        }
        // Present operands and their slots.
        let present: Vec<ValueId> = ins.iter().flatten().copied().collect();
        let slots: Vec<i64> = ins
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_some())
            .map(|(i, _)| i as i64)
            .collect();
        let gap = slots.iter().enumerate().any(|(i, &s)| s != i as i64);
        // Generic attribute copy (ONNX names), minus those consumed by the mapping.
        let skip: &[&str] = match n.op_type.as_str() {
            "Cast" | "CastLike" => &["to"],
            "Constant" | "ConstantOfShape" => &[],
            "QuantizeLinear" | "DequantizeLinear" => &["output_dtype"],
            "Softmax" | "LogSoftmax" if self.opset < 13 => &["axis"],
            "LayerNormalization" => &["stash_type"],
            _ => &[],
        };
        let mut gattrs = vec![];
        for a in &n.attribute {
            if skip.contains(&a.name.as_str()) || (n.op_type == "Constant") {
                continue;
            }
            if !onnx_attributes(&n.op_type).contains(&a.name.as_str()) {
                if let Some(f) = self.opts.on_warning {
                    f(&ImportWarning::UnknownAttribute {
                        node: label.to_string(),
                        op_type: n.op_type.clone(),
                        name: a.name.clone(),
                        bytes: prost::Message::encoded_len(a),
                    });
                }
                continue;
            }
            if let Some(v) = attr_value(
                a,
                &mut self.ext,
                &mut self.m,
                &format!("{label}_{}", a.name),
            )? {
                gattrs.push((a.name.clone(), v));
            }
        }
        if gap {
            gattrs.push((
                OPERAND_SLOTS.to_string(),
                Attribute::DenseI64Array(slots.clone()),
            ));
        }
        let x0 = || req(0);
        let e0 = present
            .first()
            .map(|&v| self.elem(v))
            .unwrap_or(ScalarType::F32);
        let op = n.op_type.as_str();
        let simple = |name: &str| name.to_string();
        let gname = if let Some((name, _)) = graph::elementwise_from_onnx(op) {
            simple(name)
        } else {
            match op {
                "Pow" => simple(graph::Pow::NAME),
                "Mod" => simple(graph::Mod::NAME),
                "Gelu" => simple(graph::Gelu::NAME),
                "Max" => simple(graph::Max::NAME),
                "Min" => simple(graph::Min::NAME),
                "Clip" => simple(graph::Clip::NAME),
                "Softmax" => simple(graph::Softmax::NAME),
                "LogSoftmax" => simple(graph::LogSoftmax::NAME),
                "RMSNormalization" => simple(graph::RmsNorm::NAME),
                "ReduceMean" => simple(graph::ReduceMean::NAME),
                "ReduceSum" => simple(graph::ReduceSum::NAME),
                "ReduceMax" => simple(graph::ReduceMax::NAME),
                "ReduceL2" => simple(graph::ReduceL2::NAME),
                "Reshape" => simple(graph::Reshape::NAME),
                "Transpose" => simple(graph::Transpose::NAME),
                "Concat" => simple(graph::Concat::NAME),
                "Slice" => simple(graph::Slice::NAME),
                "Gather" => simple(graph::Gather::NAME),
                "GatherND" => simple(graph::GatherNd::NAME),
                "GatherElements" => simple(graph::GatherElements::NAME),
                "ScatterND" => simple(graph::ScatterNd::NAME),
                "TopK" => simple(graph::TopK::NAME),
                "OneHot" => simple(graph::OneHot::NAME),
                "Unsqueeze" => simple(graph::Unsqueeze::NAME),
                "Squeeze" => simple(graph::Squeeze::NAME),
                "Flatten" => simple(graph::Flatten::NAME),
                "Expand" => simple(graph::Expand::NAME),
                "Trilu" => simple(graph::Trilu::NAME),
                "CumSum" => simple(graph::CumSum::NAME),
                "Tile" => simple(graph::Tile::NAME),
                "RotaryEmbedding" => simple(graph::RotaryEmbedding::NAME),
                "Einsum" => simple(graph::Einsum::NAME),
                "Identity" => simple(graph::Identity::NAME),
                "Gemm" => simple(graph::Gemm::NAME),
                "MatMul" => simple(graph::MatMul::NAME),
                "Pad" => simple(graph::Pad::NAME),
                "Range" => simple(graph::Range::NAME),
                "Split" => simple(graph::Split::NAME),
                _ => String::new(),
            }
        };
        if (op == "Softmax" || op == "LogSoftmax") && self.opset < 13 {
            // Opset < 13: coerce to 2-D at `axis` (default 1), normalize rows, restore the shape.
            let x = x0()?;
            let axis = int("axis", 1);
            let flat = self.emit(
                graph::Flatten::NAME,
                &[x],
                vec![("axis".into(), Attribute::i64(axis))],
                &[e0],
                &loc,
            )?[0];
            let sm = self.emit(
                &gname,
                &[flat],
                vec![("axis".into(), Attribute::i64(1))],
                &[e0],
                &loc,
            )?[0];
            let shape = self.emit(graph::Shape::NAME, &[x], vec![], &[ScalarType::I64], &loc)?[0];
            return self.emit(graph::Reshape::NAME, &[sm, shape], vec![], &[e0], &loc);
        }
        if !gname.is_empty() {
            if op == "Concat" && present.is_empty() {
                return Err("Concat needs inputs".into());
            }
            if op == "Split" && !attrs.contains_key("num_outputs") && nout == 0 {
                return Err("Split has no outputs".into());
            }
            let elems = vec![e0; nout];
            return self.emit(&gname, &present, gattrs, &elems, &loc);
        }
        match op {
            "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or" => {
                let name = match op {
                    "Equal" => graph::Equal::NAME,
                    "Less" => graph::Less::NAME,
                    "Greater" => graph::Greater::NAME,
                    "LessOrEqual" => graph::LessOrEqual::NAME,
                    "GreaterOrEqual" => graph::GreaterOrEqual::NAME,
                    "And" => graph::And::NAME,
                    _ => graph::Or::NAME,
                };
                self.emit(name, &present, gattrs, &[ScalarType::I1], &loc)
            }
            "IsNaN" => {
                // NaN is the one value unequal to itself.
                let x = x0()?;
                let eq =
                    self.emit(graph::Equal::NAME, &[x, x], vec![], &[ScalarType::I1], &loc)?[0];
                self.emit(graph::Not::NAME, &[eq], vec![], &[ScalarType::I1], &loc)
            }
            "Where" => {
                let e = self.elem(req(1)?);
                self.emit(graph::Where::NAME, &present, gattrs, &[e], &loc)
            }
            "Sum" => {
                let mut acc = *present.first().ok_or("Sum needs inputs")?;
                if present.len() == 1 {
                    return self.emit(graph::Identity::NAME, &[acc], vec![], &[e0], &loc);
                }
                for &v in &present[1..] {
                    acc = self.emit(graph::Add::NAME, &[acc, v], vec![], &[e0], &loc)?[0];
                }
                Ok(vec![acc])
            }
            "Cast" => {
                let to = elem_type(int("to", 0) as i32)?;
                self.emit(graph::Cast::NAME, &[x0()?], gattrs, &[to], &loc)
            }
            "CastLike" => {
                let to = self.elem(req(1)?);
                self.emit(graph::Cast::NAME, &[x0()?], gattrs, &[to], &loc)
            }
            "Shape" => self.emit(
                graph::Shape::NAME,
                &[x0()?],
                gattrs,
                &[ScalarType::I64],
                &loc,
            ),
            "Size" => self.emit(
                graph::Size::NAME,
                &[x0()?],
                gattrs,
                &[ScalarType::I64],
                &loc,
            ),
            "MatMulInteger" => self.emit(
                graph::MatMulInteger::NAME,
                &present,
                gattrs,
                &[ScalarType::I32],
                &loc,
            ),
            "ConstantOfShape" => {
                let elem = match gattrs.iter().find(|(n, _)| n == "value") {
                    Some((_, Attribute::Dense(d))) => d.ty.elem().unwrap_or(ScalarType::F32),
                    _ => ScalarType::F32,
                };
                self.emit(
                    graph::ConstantOfShape::NAME,
                    &[x0()?],
                    gattrs,
                    &[elem],
                    &loc,
                )
            }
            "LayerNormalization" => {
                let stash = elem_type(int("stash_type", 1) as i32)?;
                let mut elems = vec![e0];
                elems.extend(std::iter::repeat_n(stash, nout.saturating_sub(1)));
                self.emit(graph::LayerNorm::NAME, &present, gattrs, &elems, &loc)
            }
            "Attention" => {
                let mut elems = vec![e0; nout.min(4)];
                if nout > 3 {
                    elems[3] = e0;
                }
                self.emit(graph::Attention::NAME, &present, gattrs, &elems, &loc)
            }
            "QuantizeLinear" => {
                let to = match ins.get(2).copied().flatten() {
                    Some(z) => self.elem(z),
                    None => match int("output_dtype", 0) {
                        0 => ScalarType::UI8,
                        c => elem_type(c as i32)?,
                    },
                };
                self.emit(graph::QuantizeLinear::NAME, &present, gattrs, &[to], &loc)
            }
            "DequantizeLinear" => {
                let to = match int("output_dtype", 0) {
                    0 => self.elem(req(1)?),
                    c => elem_type(c as i32)?,
                };
                self.emit(graph::DequantizeLinear::NAME, &present, gattrs, &[to], &loc)
            }
            "Constant" => {
                let a = n
                    .attribute
                    .first()
                    .ok_or("Constant has no value attribute")?;
                let t: Tensor = match a.name.as_str() {
                    "value" => {
                        let t = a.t.as_ref().ok_or("'value' holds no tensor")?;
                        super::tensor::tensor_from_proto(t, &mut self.ext)?
                    }
                    "value_float" => Tensor::scalar(a.f),
                    "value_floats" => Tensor::new(vec![a.floats.len()], a.floats.clone()),
                    "value_int" => Tensor::scalar(a.i),
                    "value_ints" => Tensor::new(vec![a.ints.len()], a.ints.clone()),
                    other => return Err(format!("Constant attribute '{other}' is not supported")),
                };
                Ok(vec![self.constant_tensor(label, &t, loc)])
            }
            other => Err(format!("operator {other} is not supported")),
        }
    }
}
