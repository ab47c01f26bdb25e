//! The ONNX front end: `ModelProto` (decoded with our own `prost` messages in [`proto`]) → a module with
//! one `func.func @main` in the `graph` dialect.
//!
//! - IR versions 3+ (7+ is what exporters write), default-domain opsets 7+ (13+ is the target; older ops whose inputs changed are refused per node); each op's semantics follow its newest version not above
//!   the model's opset (e.g. `Reduce*` axes as attribute before opset 18 and as input after).
//! - Initializers and `Constant` nodes become `graph.constant`s (large data as resource blobs);
//!   external data is resolved relative to the model's folder and memory-mapped ([`tensor`]).
//! - Graph inputs keep their ONNX names as `{onnx.name = "..."}` argument attributes; symbolic dims are
//!   bound by [`ImportOptions::dims`] / [`ImportOptions::shapes`], else kept symbolic when
//!   [`ImportOptions::allow_symbolic`], else an error naming the dim.
//! - Every node is checked first: all unsupported ops are reported at once (node name and op type).
//! - Result types come from [`crate::passes::shape_inference::infer_op`] merged with the model's
//!   `value_info` and output types; contradictions are "inconsistent shapes" errors.
//!
//! Entry points: [`import_file`], [`import_bytes`], [`import_model`], [`import_pipeline`] (the passes the
//! CLI runs after import), [`read_tensor_file`] (test data).

mod convert;
pub mod dim_expr;
pub mod proto;
pub mod tensor;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::interp::Tensor;
use crate::ir::Module;

pub use convert::{MAX_OPSET, MIN_OPSET, tensor_shape};
pub use tensor::{elem_type, tensor_from_proto, tensor_to_proto};

/// Options of an import.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Values of symbolic dims (`--dim sequence_length=128`).
    pub dims: BTreeMap<String, u64>,
    /// Full shapes of graph inputs by name (`--shape input_ids=1x128`).
    pub shapes: BTreeMap<String, Vec<u64>>,
    /// Keep unbound symbolic dims in the IR instead of failing.
    pub allow_symbolic: bool,
    /// Names in `dims` the user gave (`--dim`): each must be a symbolic dim the model declares,
    /// or the import fails naming the model's symbolic dims. Dims a command adds on its own
    /// (a decode step's sequence dims) are not listed, so a model without them still imports.
    pub user_dims: Vec<String>,
    /// New tokens per step of a decode graph whose exporter declared its new-token axis as the
    /// literal 1 (`input_ids`/`position_ids` `[batch, 1]`, `logits` `[batch, 1, vocab]`): that
    /// axis is declared this count instead (a speculative verify step takes `k + 1` tokens). The
    /// graph must compute its shapes from its inputs, as the TorchScript and dynamo exports do;
    /// one that folded the 1 into a constant fails shape inference, and `llmpu generate
    /// --speculate` checks the widened program's logits against one-token steps.
    pub new_tokens: Option<u64>,
    /// Fold ops with constant operands while importing (so exporter shape computations type the
    /// graph); `false` leaves them for the `fold-constants` pass.
    pub fold: bool,
    /// Called with every [`ImportWarning`] (what the importer accepts but reads in a way the
    /// model may not mean); `None` drops them. The CLI prints them to stderr.
    pub on_warning: Option<fn(&ImportWarning)>,
    /// Graph inputs bound to values at compile time (`--bind NAME=V,...`): each is imported as a
    /// constant, as if it were an initializer, and is no longer an input of the program. Its
    /// element type must be the declared one and its shape must fit the declared shape.
    pub bindings: BTreeMap<String, Tensor>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            dims: BTreeMap::new(),
            shapes: BTreeMap::new(),
            allow_symbolic: false,
            user_dims: Vec::new(),
            new_tokens: None,
            fold: true,
            on_warning: None,
            bindings: BTreeMap::new(),
        }
    }
}

/// Something the importer accepts but reads in a way the model may not mean.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImportWarning {
    /// A negative extent in a declared shape (ONNX extents are ≥ 0).
    #[error("{what} '{name}': dim #{index} is {value} (negative); read as an unknown dim `?`")]
    NegativeDim {
        what: &'static str,
        name: String,
        index: usize,
        value: i64,
    },
    /// An IR version newer than the importer knows.
    #[error(
        "the model's IR version {0} is newer than the newest this importer knows ({max}); read with the rules of IR version {max}",
        max = convert::MAX_IR_VERSION
    )]
    NewerIrVersion(i64),
    /// An attribute the operator does not define: not copied into the IR.
    #[error(
        "node '{node}' ({op_type}): attribute '{name}' ({bytes} bytes) is not an attribute of {op_type}; ignored"
    )]
    UnknownAttribute {
        node: String,
        op_type: String,
        name: String,
        bytes: usize,
    },
}

/// Prints a warning to stderr as `warning: ...` (the CLI's [`ImportOptions::on_warning`]).
pub fn print_warning(w: &ImportWarning) {
    eprintln!("warning: {w}");
}

/// One node the importer cannot translate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedNode {
    pub node: String,
    pub op_type: String,
    pub reason: String,
}

/// Import errors. Node-level errors name the ONNX node and its op type.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("malformed ONNX protobuf{}: {message}", what.as_deref().map(|w| format!(" in {w}")).unwrap_or_default())]
    Decode {
        what: Option<String>,
        message: String,
    },
    #[error("unsupported ONNX IR version {0} (3 or later is required)")]
    IrVersion(i64),
    #[error(
        "the model declares no opset for the default ONNX domain (`opset_import` is required since IR version 3), so the semantics of its operators are unknown"
    )]
    NoOpset,
    #[error("unsupported opset {version} for domain '{domain}' ({min} to {max} are supported)", min = convert::MIN_OPSET, max = convert::MAX_OPSET)]
    Opset { domain: String, version: i64 },
    #[error("the model has no graph")]
    NoGraph,
    #[error("{} unsupported node(s):\n{}", .0.len(), list_unsupported(.0))]
    Unsupported(Vec<UnsupportedNode>),
    #[error("{what} '{name}': {reason}")]
    UnsupportedValue {
        what: &'static str,
        name: String,
        reason: String,
    },
    /// Every unbound dim of every graph input, at once.
    #[error("{}", unbound_message(.0))]
    UnboundDims(Vec<UnboundDim>),
    /// `--dim` names a dim the model does not declare.
    #[error(
        "--dim {name}: the model has no symbolic dim `{name}`{hint} (its symbolic dims: {known})",
        hint = llmpu_isa::suggest::did_you_mean(.known_list.iter().map(String::as_str), .name),
        known = if .known_list.is_empty() { "none".to_string() } else { .known_list.join(", ") }
    )]
    UnknownDim {
        name: String,
        known_list: Vec<String>,
    },
    #[error(
        "node '{node}' ({op_type}): input '{input}' is not produced by any node, initializer or graph input"
    )]
    Dangling {
        node: String,
        op_type: String,
        input: String,
    },
    #[error("graph output '{0}' is not produced by any node, initializer or graph input")]
    DanglingOutput(String),
    #[error("the graph has a cycle through node(s) {}", .0.join(", "))]
    Cycle(Vec<String>),
    #[error("value '{0}' is produced more than once")]
    Redefined(String),
    #[error("node '{node}' ({op_type}): {message}")]
    Node {
        node: String,
        op_type: String,
        message: String,
    },
    #[error("{0}")]
    Options(String),
    /// The translated graph does not verify (an operand combination the importer did not catch).
    #[error("the imported graph does not verify: {0}")]
    Invalid(String),
    #[error("tensor '{name}': {message}")]
    Tensor { name: String, message: String },
}

/// A dim of a graph input that has no value: a named symbolic dim (bound with `--dim NAME=N`) or
/// an unnamed one (`index`, only a full input shape binds it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnboundDim {
    pub input: String,
    pub index: usize,
    /// The dim's name, `None` for an unnamed (`?`) dim.
    pub name: Option<String>,
}

fn unbound_message(v: &[UnboundDim]) -> String {
    let mut named: Vec<(String, Vec<String>)> = Vec::new();
    let mut unnamed = Vec::new();
    for u in v {
        match &u.name {
            Some(n) => match named.iter_mut().find(|(m, _)| m == n) {
                Some((_, inputs)) => {
                    if !inputs.contains(&u.input) {
                        inputs.push(u.input.clone());
                    }
                }
                None => named.push((n.clone(), vec![u.input.clone()])),
            },
            None => unnamed.push(format!("dim #{} of input '{}'", u.index, u.input)),
        }
    }
    let mut parts = Vec::new();
    if !named.is_empty() {
        let list: Vec<String> = named
            .iter()
            .map(|(n, inputs)| {
                let s = if inputs.len() == 1 { "" } else { "s" };
                let quoted: Vec<String> = inputs.iter().map(|i| format!("'{i}'")).collect();
                format!("'{n}' (input{s} {})", quoted.join(", "))
            })
            .collect();
        let example: Vec<String> = named.iter().map(|(n, _)| format!("--dim {n}=N")).collect();
        parts.push(format!(
            "{} symbolic dim{} not bound: {}; give {}",
            named.len(),
            if named.len() == 1 { " is" } else { "s are" },
            list.join(", "),
            example.join(" ")
        ));
    }
    if !unnamed.is_empty() {
        parts.push(format!(
            "{} unnamed: {} (only a full input shape binds an unnamed dim)",
            if unnamed.len() == 1 {
                "a dim is"
            } else {
                "dims are"
            },
            unnamed.join(", ")
        ));
    }
    parts.join("; ")
}

fn list_unsupported(v: &[UnsupportedNode]) -> String {
    v.iter()
        .map(|u| format!("  node '{}' ({}): {}", u.node, u.op_type, u.reason))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The pass pipeline run after import by `llmpu import` and the conformance runner: remove exporter
/// noise, fold shape computations and constants, re-infer shapes, then clean up.
pub fn import_pipeline() -> Vec<&'static str> {
    vec![
        "canonicalize",
        "fold-constants",
        "shape-inference",
        "canonicalize",
        "cse",
        "dce",
    ]
}

/// Runs [`import_pipeline`] on a freshly imported module (what `llmpu compile`, `check` and the
/// Python package compile): the pass manager's diagnostics go to `log`.
pub fn run_import_pipeline(m: &mut Module, log: &mut dyn std::io::Write) -> Result<(), String> {
    let mut pm = crate::pass::PassManager::from_names(
        &import_pipeline(),
        crate::pass::PassManagerOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    pm.run(m, log).map(|_| ()).map_err(|e| e.to_string())
}

/// The graph inputs that are the condition of a top-level `If` node.
pub fn if_condition_inputs(model: &proto::ModelProto) -> Vec<String> {
    let Some(g) = model.graph.as_ref() else {
        return vec![];
    };
    let mut v: Vec<String> = g
        .node
        .iter()
        .filter(|n| n.op_type == "If" && n.domain.is_empty())
        .filter_map(|n| n.input.first())
        .filter(|c| g.input.iter().any(|i| &i.name == *c))
        .cloned()
        .collect();
    v.dedup();
    v
}

/// Decodes a `ModelProto`.
pub fn decode_model(bytes: &[u8]) -> Result<proto::ModelProto, ImportError> {
    proto::ModelProto::decode(bytes).map_err(|e| ImportError::Decode {
        what: None,
        message: e.to_string(),
    })
}

/// Reads and imports `path`; external data is resolved relative to its folder.
pub fn import_file(path: &Path, opts: &ImportOptions) -> Result<Module, ImportError> {
    let bytes = llmpu_isa::limits::read_file(path).map_err(|e| ImportError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let base = path.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    });
    import_bytes(&bytes, base, opts)
}

/// Imports a serialized model; `base_dir` is the folder external data is resolved against (`None`
/// refuses external data).
pub fn import_bytes(
    bytes: &[u8],
    base_dir: Option<&Path>,
    opts: &ImportOptions,
) -> Result<Module, ImportError> {
    let model = decode_model(bytes)?;
    import_model(&model, base_dir, opts)
}

/// Imports a decoded model.
pub fn import_model(
    model: &proto::ModelProto,
    base_dir: Option<&Path>,
    opts: &ImportOptions,
) -> Result<Module, ImportError> {
    convert::import(model, base_dir, opts)
}

/// Names of the graph inputs that are real inputs (not initializers), in order.
pub fn graph_input_names(model: &proto::ModelProto) -> Vec<String> {
    let Some(g) = &model.graph else { return vec![] };
    let inits: std::collections::HashSet<&str> =
        g.initializer.iter().map(|t| t.name.as_str()).collect();
    g.input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .map(|i| i.name.clone())
        .collect()
}

/// Graph inputs of an imported module that reach an operand the backend needs at compile time
/// ([`crate::dialects::graph::parameter_slots`]: reduction axes, slice bounds, range limits,
/// pads, target shapes), each with the op that reads it: bind them with
/// [`ImportOptions::bindings`] to compile the model for the emulator.
pub fn parameter_inputs(m: &Module) -> Vec<(String, String)> {
    use crate::dialects::graph;
    let mut out: Vec<(String, String)> = vec![];
    for f in m.functions() {
        let Some(entry) = m.entry_block(f) else {
            continue;
        };
        for (i, &a) in m.block(entry).args.iter().enumerate() {
            let name = crate::backend::plan::io_name(m, f, "arg_attrs", i, "input");
            for (op, k) in m.uses(a) {
                let d = m.op(op);
                let slot = match d.attr(graph::OPERAND_SLOTS).and_then(|s| s.as_i64_list()) {
                    Some(slots) => slots.get(k).map_or(k, |&s| s as usize),
                    None => k,
                };
                if graph::parameter_slots(&d.name).contains(&slot)
                    && !out.iter().any(|(n, _)| n == &name)
                {
                    out.push((name.clone(), d.name.clone()));
                }
            }
        }
    }
    out
}

/// Whether graph input `input` reaches a `graph.cumsum` (through any ops): a decoder without a
/// `position_ids` input that computes its positions as the running count of its attention mask,
/// as Hugging Face does for Bloom's ALiBi and OPT, takes its positions from the mask at run time.
pub fn input_reaches_cumsum(m: &Module, input: &str) -> bool {
    use crate::dialects::graph;
    for f in m.functions() {
        let Some(entry) = m.entry_block(f) else {
            continue;
        };
        let args = m.block(entry).args.clone();
        let Some(start) = args.iter().enumerate().find_map(|(i, &a)| {
            (crate::backend::plan::io_name(m, f, "arg_attrs", i, "input") == input).then_some(a)
        }) else {
            continue;
        };
        let mut seen = std::collections::HashSet::new();
        let mut work = vec![start];
        while let Some(v) = work.pop() {
            for (op, _) in m.uses(v) {
                if m.op(op).name == graph::CumSum::NAME {
                    return true;
                }
                if seen.insert(op) {
                    work.extend(m.op(op).results.iter().copied());
                }
            }
        }
    }
    false
}

/// Reads a serialized `TensorProto` file (ONNX test data `input_0.pb`): its name and value.
pub fn read_tensor_file(path: &Path) -> Result<(String, Tensor), ImportError> {
    let bytes = llmpu_isa::limits::read_file(path).map_err(|e| ImportError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let t = proto::TensorProto::decode(&bytes[..]).map_err(|e| ImportError::Decode {
        what: Some(path.display().to_string()),
        message: e.to_string(),
    })?;
    let mut ext = tensor::ExternalData::new(path.parent());
    let v = tensor_from_proto(&t, &mut ext).map_err(|message| ImportError::Tensor {
        name: t.name.clone(),
        message,
    })?;
    Ok((t.name, v))
}

/// Parses `NAME=V1,V2,...` (a `--bind` value; `NAME=` binds an empty tensor) against graph input
/// `NAME` of `model`: the values take the input's declared element type, and its declared shape
/// when every extent is static, else one dimension (a scalar for a rank-0 input).
pub fn parse_bind_arg(model: &proto::ModelProto, s: &str) -> Result<(String, Tensor), String> {
    let (name, list) = s
        .split_once('=')
        .ok_or_else(|| format!("--bind: expected NAME=V1,V2,..., got '{s}'"))?;
    let names = graph_input_names(model);
    let vi = model
        .graph
        .as_ref()
        .and_then(|g| g.input.iter().find(|i| i.name == name))
        .filter(|_| names.iter().any(|n| n == name))
        .ok_or_else(|| {
            format!(
                "--bind names '{name}', which is not a graph input (inputs: {}){}",
                names.join(", "),
                llmpu_isa::suggest::did_you_mean(names.iter().map(String::as_str), name)
            )
        })?;
    let tt = vi
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .ok_or_else(|| format!("--bind: input '{name}' is not a tensor"))?;
    let elem = elem_type(tt.elem_type).map_err(|e| format!("--bind: input '{name}': {e}"))?;
    let words: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect();
    let n = words.len();
    let declared: Option<Vec<usize>> = tt.shape.as_ref().and_then(|sh| {
        sh.dim
            .iter()
            .map(|d| d.dim_value.and_then(|v| usize::try_from(v).ok()))
            .collect()
    });
    let rank = tt.shape.as_ref().map(|sh| sh.dim.len());
    let shape = match (declared, rank) {
        (Some(d), _) if d.iter().product::<usize>() == n => d,
        (Some(d), _) => {
            return Err(format!(
                "--bind: input '{name}' holds {} value(s) (shape {d:?}), {n} given",
                d.iter().product::<usize>()
            ));
        }
        (None, Some(0)) if n == 1 => vec![],
        (None, Some(1) | None) => vec![n],
        (None, Some(r)) => {
            return Err(format!(
                "--bind: input '{name}' has rank {r} with unknown extents; bind only inputs of static shape or rank 1"
            ));
        }
    };
    let bad = |w: &str| format!("--bind: '{w}' is not a {elem} value (input '{name}')");
    let t = if elem.is_float() {
        let v: Vec<f64> = words
            .iter()
            .map(|w| w.parse::<f64>().map_err(|_| bad(w)))
            .collect::<Result<_, _>>()?;
        Tensor::from_f64_fn(elem, shape, n, |i| v[i])
    } else if elem == crate::ir::ScalarType::I1 {
        let v: Vec<bool> = words
            .iter()
            .map(|w| match *w {
                "1" | "true" => Ok(true),
                "0" | "false" => Ok(false),
                _ => Err(format!(
                    "--bind: '{w}' is not a bool value (0, 1, true, false) (input '{name}')"
                )),
            })
            .collect::<Result<_, _>>()?;
        Tensor::new(shape, v)
    } else {
        use crate::ir::ScalarType as S;
        let (lo, hi): (i128, i128) = match elem {
            S::I8 => (i8::MIN.into(), i8::MAX.into()),
            S::UI8 => (0, u8::MAX.into()),
            S::I16 => (i16::MIN.into(), i16::MAX.into()),
            S::UI16 => (0, u16::MAX.into()),
            S::I32 => (i32::MIN.into(), i32::MAX.into()),
            S::UI32 => (0, u32::MAX.into()),
            S::UI64 => (0, u64::MAX.into()),
            _ => (i64::MIN.into(), i64::MAX.into()),
        };
        let v: Vec<i128> = words
            .iter()
            .map(|w| match w.parse::<i128>() {
                Ok(x) if (lo..=hi).contains(&x) => Ok(x),
                Ok(_) => Err(format!(
                    "--bind: {w} does not fit input '{name}' ({elem}: {lo}..={hi})"
                )),
                Err(_) => Err(bad(w)),
            })
            .collect::<Result<_, _>>()?;
        if elem == S::UI64 {
            Tensor::new(shape, v.iter().map(|&x| x as u64).collect::<Vec<u64>>())
        } else {
            // In range, so the integer cast is exact.
            Tensor::new(shape, v.iter().map(|&x| x as i64).collect::<Vec<i64>>()).cast(elem, false)
        }
    };
    Ok((name.to_string(), t))
}

/// Parses `name=AxBxC` (a `--shape` value).
pub fn parse_shape_arg(s: &str) -> Result<(String, Vec<u64>), String> {
    let (name, dims) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("expected NAME=AxB..., got '{s}'"))?;
    let dims = if dims.is_empty() || dims == "scalar" {
        vec![]
    } else {
        dims.split(['x', ','])
            .map(|d| {
                d.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|&v| v <= i64::MAX as u64)
                    .ok_or_else(|| format!("bad extent '{d}' in '{s}' (0 to 2^63 - 1)"))
            })
            .collect::<Result<_, _>>()?
    };
    Ok((name.to_string(), dims))
}

/// Parses `name=N` (a `--dim` value).
pub fn parse_dim_arg(s: &str) -> Result<(String, u64), String> {
    let (name, v) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("expected NAME=N, got '{s}'"))?;
    let v = v
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("bad value '{v}' in '{s}'"))?;
    if v > i64::MAX as u64 {
        return Err(format!(
            "--dim {s}: a dim is at most 2^63 - 1 (ONNX and MLIR extents are int64)"
        ));
    }
    Ok((name.to_string(), v))
}
