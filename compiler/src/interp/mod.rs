//! Reference interpreter for the `graph` dialect with exact ONNX semantics: NumPy broadcasting, integer
//! arithmetic that wraps and divides toward zero, NaN-propagating `max`/`min`, every element type the
//! importer accepts. It is the oracle for the importer (ONNX node tests) and for the backend.
//!
//! Entry points: [`run`] evaluates a module's first function on host [`Tensor`]s (inputs in argument
//! order, outputs in `func.return` order); [`eval_op`] evaluates one op (used by `fold-constants`);
//! [`constant_value`] reads a `graph.constant`. It runs at any point of the graph-level pipeline: shapes
//! are computed from the data, result types only supply element types.
//!
//! Performance: f32/f64 matrix products go through `matrixmultiply`; elementwise kernels iterate over
//! precomputed broadcast offsets; values are dropped after their last use.

pub mod ops;
pub mod tensor;

pub use tensor::{Data, Elem, F8E4M3, Tensor, TensorError};

use crate::dialects::graph;
use crate::ir::{Attribute, Location, Module, OpId, ScalarType, Type, ValueDef, ValueId};

/// Interpreter errors; op failures carry the op name and its location (ONNX node).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InterpError {
    /// The module has no `func.func`.
    #[error("the module has no function to run")]
    NoFunction,
    /// Wrong number of inputs.
    #[error("the function takes {expected} input(s), got {got}")]
    InputCount { expected: usize, got: usize },
    /// An input does not match its argument type.
    #[error("input #{index}: {message}")]
    Input { index: usize, message: String },
    /// An op failed.
    #[error("{op} at {loc}: {message}")]
    Op {
        op: String,
        loc: Location,
        message: String,
    },
}

/// Runs the module's first function (the entry point) on `inputs`.
pub fn run(m: &Module, inputs: &[Tensor]) -> Result<Vec<Tensor>, InterpError> {
    let f = *m.functions().first().ok_or(InterpError::NoFunction)?;
    run_function(m, f, inputs)
}

/// Checks that `t` fits type `ty` (element type, rank, static dims).
pub fn check_fits(t: &Tensor, ty: &Type) -> Result<(), String> {
    let Some(tt) = ty.as_tensor() else {
        return Err(format!("argument type {ty} is not a tensor"));
    };
    if t.dtype() != tt.elem {
        return Err(format!(
            "element type {} does not match {}",
            t.dtype(),
            tt.elem
        ));
    }
    if t.rank() != tt.rank() {
        return Err(format!("shape {:?} does not match {ty}", t.shape));
    }
    for (d, e) in t.shape.iter().zip(&tt.dims) {
        if let Some(s) = e.as_static()
            && s as usize != *d
        {
            return Err(format!("shape {:?} does not match {ty}", t.shape));
        }
    }
    if !t.check() {
        return Err("tensor data length does not match its shape".into());
    }
    Ok(())
}

/// Runs function `f` on `inputs`.
pub fn run_function(m: &Module, f: OpId, inputs: &[Tensor]) -> Result<Vec<Tensor>, InterpError> {
    run_observed(m, f, inputs, &mut |_, _| {})
}

/// [`run_function`], calling `observe(op, results)` after every op it evaluates (in program
/// order) — how a debugger compares every intermediate value with another run's.
pub fn run_observed(
    m: &Module,
    f: OpId,
    inputs: &[Tensor],
    observe: &mut dyn FnMut(OpId, &[Tensor]),
) -> Result<Vec<Tensor>, InterpError> {
    let entry = m.entry_block(f).ok_or(InterpError::NoFunction)?;
    let args = &m.block(entry).args;
    if args.len() != inputs.len() {
        return Err(InterpError::InputCount {
            expected: args.len(),
            got: inputs.len(),
        });
    }
    let nvals = m
        .block(entry)
        .ops
        .iter()
        .flat_map(|&o| m.op(o).results.iter().map(|v| v.index() + 1))
        .chain(args.iter().map(|v| v.index() + 1))
        .max()
        .unwrap_or(0);
    let mut env: Vec<Option<Tensor>> = vec![None; nvals];
    for (i, (&a, t)) in args.iter().zip(inputs).enumerate() {
        check_fits(t, m.value_type(a))
            .map_err(|message| InterpError::Input { index: i, message })?;
        env[a.index()] = Some(t.clone());
    }
    // Last use (op position) of every value, so tensors are dropped early.
    let ops = &m.block(entry).ops;
    let mut last_use = vec![usize::MAX; nvals];
    for (pos, &o) in ops.iter().enumerate() {
        for &v in &m.op(o).operands {
            if v.index() < nvals {
                last_use[v.index()] = pos;
            }
        }
    }
    for (pos, &o) in ops.iter().enumerate() {
        let d = m.op(o);
        let err = |message: String| InterpError::Op {
            op: d.name.clone(),
            loc: d.loc.clone(),
            message,
        };
        if d.name == "func.return" {
            let mut outs = Vec::with_capacity(d.operands.len());
            for &v in &d.operands {
                let t = env
                    .get(v.index())
                    .and_then(|t| t.as_ref())
                    .ok_or_else(|| err(format!("returned value {v} is not defined")))?;
                outs.push(t.clone());
            }
            return Ok(outs);
        }
        let mut ins = Vec::with_capacity(d.operands.len());
        for &v in &d.operands {
            let t = env
                .get(v.index())
                .and_then(|t| t.as_ref())
                .ok_or_else(|| err(format!("operand {v} is not defined before use")))?;
            ins.push(t);
        }
        // The size policy (`llmpu_isa::limits`): a result whose static type is larger than the
        // host limit is refused before the kernel allocates it.
        for (i, &r) in d.results.iter().enumerate() {
            if let Some(t) = m.value_type(r).as_tensor()
                && let Some(shape) = t.static_shape()
            {
                llmpu_isa::limits::host_tensor(
                    &format!("result #{i} ({})", m.value_type(r)),
                    &shape,
                    t.elem.byte_size() as u64,
                )
                .map_err(|e| err(e.to_string()))?;
            }
        }
        let outs = eval_op(m, o, &ins).map_err(err)?;
        if outs.len() != d.results.len() {
            return Err(err(format!(
                "produced {} results, the op declares {}",
                outs.len(),
                d.results.len()
            )));
        }
        observe(o, &outs);
        for (&r, t) in d.results.iter().zip(outs) {
            if let Some(e) = m.value_type(r).elem()
                && e != t.dtype()
            {
                return Err(err(format!(
                    "result element type {} differs from the declared {e}",
                    t.dtype()
                )));
            }
            env[r.index()] = Some(t);
        }
        for &v in &d.operands {
            if last_use[v.index()] == pos && !args.contains(&v) {
                env[v.index()] = None;
            }
        }
    }
    Err(InterpError::Op {
        op: "func.func".into(),
        loc: m.op(f).loc.clone(),
        message: "function body has no func.return".into(),
    })
}

/// The value of a `graph.constant` result, if `v` is one and its data is present.
pub fn constant_value(m: &Module, v: ValueId) -> Option<Tensor> {
    let ValueDef::OpResult(op, 0) = m.value(v).def else {
        return None;
    };
    if m.op(op).name != graph::Constant::NAME {
        return None;
    }
    dense_tensor(m, m.attr(op, "value")?).ok()
}

/// Decodes a dense attribute (`dense<...>` / `dense_resource<...>`) into a tensor.
pub fn dense_tensor(m: &Module, a: &Attribute) -> Result<Tensor, String> {
    let d = a.as_dense().ok_or("expected a dense attribute")?;
    let t =
        d.ty.as_tensor()
            .ok_or("dense attribute type is not a tensor")?;
    let shape: Vec<usize> = t
        .static_shape()
        .ok_or("dense attribute has a non-static shape")?
        .iter()
        .map(|&x| x as usize)
        .collect();
    let blob = m.blobs.get(d.blob);
    let bytes = blob.bytes.as_ref().ok_or_else(|| {
        format!(
            "constant data of '{}' was elided in the text this module was parsed from",
            blob.name
        )
    })?;
    Tensor::from_le_bytes(t.elem, shape, bytes).map_err(|e| e.to_string())
}

/// Evaluates one op on operand tensors (in operand order); returns its results.
pub fn eval_op(m: &Module, op: OpId, ins: &[&Tensor]) -> Result<Vec<Tensor>, String> {
    let ctx = ops::OpCtx::new(m, op, ins);
    ops::eval(&ctx)
}

/// Element type names accepted by the interpreter (every [`ScalarType`]).
pub fn supports(t: ScalarType) -> bool {
    ScalarType::ALL.contains(&t)
}
