//! Running a `graph`-dialect module on the emulator: compile with the backend pipeline, bind the
//! inputs by position, run, and return the outputs in `func.return` order (the emulator backend of
//! `llmpu check` and `llmpu conformance`).

use llmpu_compiler::backend::{self, Options, dtype_of};
use llmpu_compiler::interp::Tensor as ITensor;
use llmpu_compiler::ir::{Module, ScalarType};
use llmpu_compiler::pass::PassManagerOptions;
use llmpu_isa::Program;
use llmpu_runtime::{Report, RunOptions, Tensor};

/// An interpreter tensor as an emulator tensor (`i1` as one byte per element).
pub fn to_runtime(t: &ITensor) -> Result<Tensor, String> {
    let st = t.dtype();
    let dt = dtype_of(st).ok_or_else(|| format!("element type {st} has no machine type"))?;
    let bytes = if st == ScalarType::I1 {
        t.to_f64_vec().iter().map(|&x| (x != 0.0) as u8).collect()
    } else {
        t.to_le_bytes()
    };
    Tensor::new(dt, t.shape.iter().map(|&d| d as u64).collect(), bytes)
}

/// An emulator output as an interpreter tensor of element type `st`.
pub fn from_runtime(t: &Tensor, st: ScalarType) -> Result<ITensor, String> {
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    ITensor::from_le_bytes(st, shape, &t.data).map_err(|e| e.to_string())
}

/// Prefix of errors for models the machine (or this backend) cannot run, as opposed to failures.
pub const UNSUPPORTED: &str = "unsupported: ";

/// Compiles `module` (already imported and cleaned up) for `o`. Errors about element types or ops
/// the backend has no kernel for start with [`UNSUPPORTED`].
pub fn compile(module: &Module, o: &Options) -> Result<Program, String> {
    let mut m = module.clone();
    let pm = PassManagerOptions {
        verify_each: true,
        ..Default::default()
    };
    backend::compile(&mut m, o, pm, &mut std::io::sink())
        .map_err(|e| {
            if e.contains("not supported")
                || e.contains("unsupported")
                || e.contains("symbolic shape")
                || e.contains("needed at compile time")
            {
                format!("{UNSUPPORTED}{e}")
            } else {
                e
            }
        })?
        .ok_or_else(|| "pipeline stopped early".to_string())
}

/// Compiles and runs `module` with `inputs` (graph input order) under `ro`; outputs in result
/// order.
pub fn run(
    module: &Module,
    inputs: &[ITensor],
    o: &Options,
    ro: &RunOptions,
) -> Result<(Vec<ITensor>, Report), String> {
    let program = compile(module, o)?;
    let names = llmpu_runtime::kv::input_names(&program);
    for t in inputs {
        if dtype_of(t.dtype()).is_none() {
            return Err(format!(
                "{UNSUPPORTED}input element type {} has no machine type",
                t.dtype()
            ));
        }
    }
    if names.len() != inputs.len() {
        return Err(format!(
            "{} inputs given, the program takes {}",
            inputs.len(),
            names.len()
        ));
    }
    let mut bound = vec![];
    for (n, t) in names.iter().zip(inputs) {
        bound.push((n.to_string(), to_runtime(t)?));
    }
    let res = llmpu_runtime::kv::run_dense(&program, &bound, ro).map_err(|e| e.to_string())?;
    let result_types: Vec<ScalarType> = {
        let f = module.functions()[0];
        match module.attr(f, "function_type") {
            Some(llmpu_compiler::ir::Attribute::Type(llmpu_compiler::ir::Type::Function(_, r))) => {
                r.iter()
                    .map(|t| t.elem().unwrap_or(ScalarType::F32))
                    .collect()
            }
            _ => vec![],
        }
    };
    let mut outs = vec![];
    for (i, (_, t)) in res.outputs.iter().enumerate() {
        outs.push(from_runtime(
            t,
            *result_types.get(i).unwrap_or(&ScalarType::F32),
        )?);
    }
    Ok((outs, res.report))
}
