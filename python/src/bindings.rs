//! The PyO3 extension module `llmpu._native` (cargo feature `python`): thin wrappers over the
//! crate's glue functions. Arrays cross as NumPy arrays (the `numpy` crate); structured figures
//! (reports, op rows, targets, comparisons) cross as JSON text that the Python layer
//! (`python/pysrc/llmpu/__init__.py`) loads. Every Rust error becomes `llmpu.LlmpuError` with the
//! Rust error text.

use std::collections::BTreeMap;
use std::path::PathBuf;

use numpy::{PyArray1, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use llmpu_isa::{DType, IoDir, Program, Target, binary};
use llmpu_runtime::{Report, Tensor};

use crate::Model;

create_exception!(
    _native,
    LlmpuError,
    PyException,
    "An error of the LLMPU toolchain (import, compile, emulator); the message is the Rust error text."
);

fn err(e: impl std::fmt::Display) -> PyErr {
    LlmpuError::new_err(e.to_string())
}

/// A target spec: JSON text of a target dict (starts with `{`), a preset name or a `.toml` file.
fn target_of(spec: &str) -> PyResult<Target> {
    if spec.trim_start().starts_with('{') {
        crate::target_from_json(spec).map_err(err)
    } else {
        Target::resolve(spec).map_err(err)
    }
}

/// Calls `f` with the model: `bytes` (a serialized `ModelProto`) or a path.
fn with_model<T>(model: &Bound<'_, PyAny>, f: impl FnOnce(Model) -> T) -> PyResult<T> {
    if let Ok(b) = model.cast::<PyBytes>() {
        return Ok(f(Model::Bytes(b.as_bytes())));
    }
    let path: PathBuf = model.extract().map_err(|_| {
        LlmpuError::new_err("model: expected a path or the bytes of a serialized ModelProto")
    })?;
    Ok(f(Model::Path(&path)))
}

/// The NumPy dtype name of a machine type as `Binary.run` returns it (bf16 and fp8 widen to
/// float32: NumPy has no such types).
fn numpy_name(d: DType) -> &'static str {
    match d {
        DType::F32 | DType::BF16 | DType::F8E4M3 => "float32",
        DType::F16 => "float16",
        DType::I8 => "int8",
        DType::U8 => "uint8",
        DType::I32 => "int32",
        DType::I64 => "int64",
        DType::I16 => "int16",
        DType::U16 => "uint16",
        DType::U32 => "uint32",
        DType::U64 => "uint64",
        DType::F64 => "float64",
    }
}

/// A NumPy array as a host tensor, its bytes in the element type the array has.
fn tensor_of(name: &str, a: &Bound<'_, PyAny>) -> PyResult<Tensor> {
    macro_rules! try_as {
        ($t:ty, $dt:expr, $bytes:expr) => {
            if let Ok(r) = a.extract::<PyReadonlyArrayDyn<$t>>() {
                let v = r.as_array();
                let shape = v.shape().iter().map(|&d| d as u64).collect();
                let data: Vec<u8> = v.iter().flat_map($bytes).collect();
                return Tensor::new($dt, shape, data).map_err(err);
            }
        };
    }
    try_as!(f32, DType::F32, |x: &f32| x.to_le_bytes());
    try_as!(i64, DType::I64, |x: &i64| x.to_le_bytes());
    try_as!(i32, DType::I32, |x: &i32| x.to_le_bytes());
    try_as!(u8, DType::U8, |x: &u8| [*x]);
    try_as!(i8, DType::I8, |x: &i8| x.to_le_bytes());
    try_as!(bool, DType::U8, |x: &bool| [*x as u8]);
    try_as!(f64, DType::F64, |x: &f64| x.to_le_bytes());
    try_as!(i16, DType::I16, |x: &i16| x.to_le_bytes());
    try_as!(u16, DType::U16, |x: &u16| x.to_le_bytes());
    try_as!(u32, DType::U32, |x: &u32| x.to_le_bytes());
    try_as!(u64, DType::U64, |x: &u64| x.to_le_bytes());
    let what = match a.cast::<PyUntypedArray>() {
        Ok(u) => format!("a numpy array of dtype {}", u.dtype()),
        Err(_) => format!("a {}", a.get_type().name()?),
    };
    Err(LlmpuError::new_err(format!(
        "input `{name}`: got {what}; expected a numpy array of float64, float32, int64, uint64, \
         int32, uint32, int16, uint16, int8, uint8 or bool"
    )))
}

/// A host tensor as a NumPy array (bf16 and fp8 widened to float32).
fn array_of<'py>(py: Python<'py>, t: &Tensor) -> PyResult<Bound<'py, PyAny>> {
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    macro_rules! from_le {
        ($t:ty, $n:expr) => {{
            let v: Vec<$t> = t
                .data
                .chunks_exact($n)
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("element size")))
                .collect();
            PyArray1::from_vec(py, v).reshape(shape)?.into_any()
        }};
    }
    Ok(match t.dtype {
        DType::I64 => from_le!(i64, 8),
        DType::I32 => from_le!(i32, 4),
        DType::I8 => from_le!(i8, 1),
        DType::U8 => from_le!(u8, 1),
        DType::I16 => from_le!(i16, 2),
        DType::U16 => from_le!(u16, 2),
        DType::U32 => from_le!(u32, 4),
        DType::U64 => from_le!(u64, 8),
        DType::F64 => from_le!(f64, 8),
        _ => PyArray1::from_vec(py, t.to_f32())
            .reshape(shape)?
            .into_any(),
    })
}

/// A compiled program (`llmpu.compile`, `llmpu.load`).
#[pyclass(name = "Binary", module = "llmpu._native", frozen)]
struct PyBinary {
    program: Program,
}

#[pymethods]
impl PyBinary {
    /// Runs on the emulator: `(outputs as {name: array}, report)`. Inputs are `{name: array}`;
    /// `timing_only` skips the arithmetic (same cycles, no outputs, inputs optional).
    #[pyo3(signature = (inputs, timing_only = false))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        inputs: &Bound<'py, PyDict>,
        timing_only: bool,
    ) -> PyResult<(Bound<'py, PyDict>, PyReport)> {
        let mut bound = Vec::new();
        for (k, v) in inputs.iter() {
            let name: String = k.extract()?;
            let t = tensor_of(&name, &v)?;
            bound.push((name, t));
        }
        let program = &self.program;
        let result = py
            .detach(|| crate::run(program, &bound, timing_only))
            .map_err(err)?;
        let outputs = PyDict::new(py);
        for (name, t) in &result.outputs {
            outputs.set_item(name, array_of(py, t)?)?;
        }
        Ok((
            outputs,
            PyReport {
                report: result.report,
                target: self.program.target.clone(),
            },
        ))
    }

    /// The program's inputs as `(name, numpy dtype, shape)` (a decode program's KV pasts included).
    #[getter]
    fn inputs(&self) -> Vec<(String, &'static str, Vec<u64>)> {
        self.io(IoDir::Input)
    }

    /// The program's outputs as `(name, numpy dtype, shape)`.
    #[getter]
    fn outputs(&self) -> Vec<(String, &'static str, Vec<u64>)> {
        self.io(IoDir::Output)
    }

    /// The target the program was compiled for, as JSON text.
    fn target_json(&self) -> String {
        crate::target_to_json(&self.program.target)
    }

    /// Writes the binary (the ELF file `llmpu run` reads).
    fn save(&self, path: PathBuf) -> PyResult<()> {
        let bytes = binary::write(&self.program).map_err(err)?;
        std::fs::write(&path, bytes).map_err(|e| err(format!("{}: {e}", path.display())))
    }

    /// Instructions per core.
    #[getter]
    fn instructions(&self) -> Vec<usize> {
        self.program.cores.iter().map(Vec::len).collect()
    }

    fn __repr__(&self) -> String {
        let insts: usize = self.program.cores.iter().map(Vec::len).sum();
        format!(
            "<llmpu.Binary target={} cores={} instructions={insts}>",
            self.program.target.name,
            self.program.cores.len()
        )
    }
}

impl PyBinary {
    fn io(&self, dir: IoDir) -> Vec<(String, &'static str, Vec<u64>)> {
        let io = self.program.io.iter().filter(|io| io.dir == dir);
        io.map(|io| (io.name.clone(), numpy_name(io.dtype), io.shape.clone()))
            .collect()
    }
}

/// The cost report of a run (wrapped by the Python `llmpu.Report`).
#[pyclass(name = "Report", module = "llmpu._native", frozen)]
struct PyReport {
    report: Report,
    target: Target,
}

#[pymethods]
impl PyReport {
    #[getter]
    fn cycles(&self) -> u64 {
        self.report.cycles
    }

    #[getter]
    fn seconds(&self) -> f64 {
        self.report.seconds
    }

    /// Every figure of the report as JSON text (the same as `llmpu run --report-json`).
    fn to_json(&self) -> String {
        self.report.to_json().to_string()
    }

    /// The per-op rows as JSON text (one object per op, `op_rows`).
    fn op_rows_json(&self) -> String {
        serde_json::Value::Array(crate::op_rows(&self.report, &self.target)).to_string()
    }

    /// `(compute roof in FLOP/s, HBM bandwidth in bytes/s)` of the run's target.
    fn roofs(&self) -> (f64, f64) {
        crate::roofs(&self.target)
    }

    /// The text report `llmpu run` prints.
    fn render(&self) -> String {
        self.report.render()
    }

    /// The self-contained HTML report (`llmpu run --report`), without the timeline.
    fn html(&self, title: &str) -> String {
        llmpu_runtime::html::render(&self.report, &self.target, None, title)
    }
}

/// Compiles an ONNX model (path or serialized `ModelProto` bytes) for a target spec (preset,
/// `.toml` file or target JSON) and precision, with symbolic dims bound by `dims`.
#[pyfunction]
fn compile(
    py: Python<'_>,
    model: &Bound<'_, PyAny>,
    target: &str,
    precision: &str,
    dims: BTreeMap<String, u64>,
) -> PyResult<PyBinary> {
    let o = crate::options(target_of(target)?, precision).map_err(err)?;
    let program =
        with_model(model, |m| py.detach(|| crate::compile(m, &o, &dims)))?.map_err(err)?;
    Ok(PyBinary { program })
}

/// The IR text after `pass` (see `passes()`).
#[pyfunction]
fn ir_after(
    py: Python<'_>,
    model: &Bound<'_, PyAny>,
    pass_name: &str,
    target: &str,
    precision: &str,
    dims: BTreeMap<String, u64>,
) -> PyResult<String> {
    let o = crate::options(target_of(target)?, precision).map_err(err)?;
    with_model(model, |m| {
        py.detach(|| crate::ir_after(m, &o, &dims, pass_name))
    })?
    .map_err(err)
}

/// The pass names `ir_after` accepts, in pipeline order.
#[pyfunction]
fn passes() -> Vec<&'static str> {
    crate::passes()
}

/// Reads a binary written by `Binary.save` or `llmpu compile`.
#[pyfunction]
fn load(path: PathBuf) -> PyResult<PyBinary> {
    let program = binary::read_file(&path).map_err(err)?;
    Ok(PyBinary { program })
}

/// The names of the built-in targets.
#[pyfunction]
fn preset_names() -> Vec<&'static str> {
    llmpu_isa::target::preset_names()
}

/// A target spec (preset, `.toml` file or target JSON) as validated target JSON.
#[pyfunction]
fn target_json(spec: &str) -> PyResult<String> {
    Ok(crate::target_to_json(&target_of(spec)?))
}

/// Compares an output with its reference under a precision's tolerance (the CLI's rule): JSON
/// text with `pass`, `max_abs`, `max_rel`, `cosine`, `mismatches`, `tolerance` and `text`.
#[pyfunction]
fn compare(
    name: &str,
    got: &Bound<'_, PyAny>,
    expected: &Bound<'_, PyAny>,
    precision: &str,
) -> PyResult<String> {
    let tol = crate::tolerance(precision).map_err(err)?;
    let c = llmpu_runtime::compare::compare(
        name,
        &tensor_of(name, got)?,
        &tensor_of(name, expected)?,
        tol,
    )
    .map_err(err)?;
    Ok(serde_json::json!({
        "name": c.name,
        "pass": c.pass,
        "max_abs": c.max_abs,
        "max_rel": c.max_rel,
        "cosine": c.cosine,
        "mismatches": c.mismatches,
        "tolerance": c.tolerance.to_string(),
        "text": c.to_string(),
    })
    .to_string())
}

#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("LlmpuError", m.py().get_type::<LlmpuError>())?;
    m.add_class::<PyBinary>()?;
    m.add_class::<PyReport>()?;
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add_function(wrap_pyfunction!(ir_after, m)?)?;
    m.add_function(wrap_pyfunction!(passes, m)?)?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(preset_names, m)?)?;
    m.add_function(wrap_pyfunction!(target_json, m)?)?;
    m.add_function(wrap_pyfunction!(compare, m)?)?;
    Ok(())
}
