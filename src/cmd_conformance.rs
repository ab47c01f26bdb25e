//! `llmpu conformance DIR`: runs every ONNX backend-test case folder under `DIR` (`model.onnx` plus
//! `test_data_set_*/input_*.pb` and `output_*.pb`) through import + the import pipeline + a backend,
//! compares with the stored outputs and prints one line per case (`ok`, `FAIL` with the worst element,
//! or `unsupported` with the reason) and a final `N passed, N failed, N unsupported` line. Exits
//! non-zero when any case failed.
//!
//! Every `test_data_set_*` of a case runs; symbolic dims are bound from that set's input shapes.
//! Backends implement [`Backend`]; today the reference interpreter is the only one ([`BackendKind`]).
//! Tolerances live in [`tolerance`] and are printed with the run.

use llmpu_runtime::compare::Tolerance;
use std::path::{Path, PathBuf};

use llmpu_compiler::interp::{self, Tensor};
use llmpu_compiler::ir::{Module, ScalarType};
use llmpu_compiler::onnx::{self, ImportError, ImportOptions};
use llmpu_compiler::pass::{PassManager, PassManagerOptions};

/// Arguments of `llmpu conformance`.
#[derive(clap::Args, Debug)]
pub struct ConformanceArgs {
    /// A folder of test cases (or a single case folder).
    pub dir: PathBuf,
    /// Only run cases whose folder name contains this text.
    #[arg(long)]
    pub filter: Option<String>,
    /// Where the model runs.
    #[arg(long, value_enum, default_value_t = BackendKind::Interpreter)]
    pub backend: BackendKind,
    /// Print only failures and the summary.
    #[arg(short, long)]
    pub quiet: bool,
    /// Emulator backend: the target (preset or `.toml`).
    #[arg(long, default_value = llmpu_isa::target::DEFAULT_TARGET)]
    pub target: String,
    /// Emulator backend: `fp32` or `bf16` numerics (bf16 compares float outputs with the bf16 tolerance
    /// of `llmpu_runtime::compare`: scaled error bound plus cosine similarity).
    #[arg(long, default_value = "fp32")]
    pub precision: String,
    /// Emulator backend: trap on reads of never-written SRAM, accumulator or HBM bytes.
    #[arg(long)]
    pub check_uninit: bool,
}

/// The available backends.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// The `graph`-dialect reference interpreter.
    Interpreter,
    /// Compiled for `--target` with `--precision` and run on the emulator.
    Emulator,
}

impl BackendKind {
    /// An instance of the backend.
    pub fn create(self, args: &ConformanceArgs) -> Result<Box<dyn Backend>, String> {
        Ok(match self {
            BackendKind::Interpreter => Box::new(InterpreterBackend),
            BackendKind::Emulator => Box::new(EmulatorBackend {
                options: crate::cmd_compile::options(&args.target, &args.precision)?,
                run: llmpu_runtime::RunOptions {
                    check_uninit: args.check_uninit,
                    ..Default::default()
                },
            }),
        })
    }
}

/// The emulator as a backend: the module is compiled with the backend pipeline
/// (`llmpu_compiler::backend::pipeline`), run, and its outputs read back.
pub struct EmulatorBackend {
    pub options: llmpu_compiler::backend::Options,
    pub run: llmpu_runtime::RunOptions,
}

impl Backend for EmulatorBackend {
    fn name(&self) -> &'static str {
        "emulator"
    }
    fn run(&mut self, module: &Module, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
        crate::emulate::run(module, inputs, &self.options, &self.run).map(|(o, _)| o)
    }
    fn float_tolerance(&self) -> Option<Tolerance> {
        (self.options.precision == llmpu_compiler::backend::Precision::Bf16)
            .then_some(Tolerance::BF16)
    }
    fn binds_parameters(&self) -> bool {
        true
    }
}

/// Something that runs an imported `graph` module on inputs (in function-argument order).
pub trait Backend {
    /// Short name for messages.
    fn name(&self) -> &'static str;
    /// Runs the module; outputs in `func.return` order.
    fn run(&mut self, module: &Module, inputs: &[Tensor]) -> Result<Vec<Tensor>, String>;
    /// A whole-tensor tolerance of the backend's numerics that replaces the per-element-type one
    /// for float outputs (reduced-precision compilation), if any.
    fn float_tolerance(&self) -> Option<Tolerance> {
        None
    }
    /// Whether graph inputs that the compiler needs as constants (axes, slice bounds, shapes:
    /// [`onnx::parameter_inputs`]) are bound to the data set's values at compile time, as
    /// `llmpu compile --bind` does, instead of passed at run time.
    fn binds_parameters(&self) -> bool {
        false
    }
}

/// The reference interpreter as a backend.
pub struct InterpreterBackend;

impl Backend for InterpreterBackend {
    fn name(&self) -> &'static str {
        "interpreter"
    }
    fn run(&mut self, module: &Module, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
        interp::run(module, inputs).map_err(|e| e.to_string())
    }
}

/// `(atol, rtol)` for an element type: an element passes when
/// `|got - expected| <= atol + rtol * |expected|`; NaN must meet NaN, infinities must match exactly.
pub fn tolerance(t: ScalarType) -> (f64, f64) {
    match t {
        ScalarType::F64 | ScalarType::F32 => (1e-5, 1e-4),
        ScalarType::F16 => (1e-3, 1e-3),
        ScalarType::BF16 => (1e-2, 1e-2),
        ScalarType::F8E4M3FN => (0.0, 0.0625),
        _ => (0.0, 0.0),
    }
}

fn tolerance_line() -> String {
    let f = |t| {
        let (a, r) = tolerance(t);
        format!("{t}: atol {a:e} rtol {r:e}")
    };
    format!(
        "tolerance: |got - expected| <= atol + rtol * |expected| ({}; {}; {}; {}; integers and i1: exact)",
        f(ScalarType::F32),
        f(ScalarType::F16),
        f(ScalarType::BF16),
        f(ScalarType::F8E4M3FN)
    )
}

/// Outcome of one case.
enum Outcome {
    /// Passed; `bound` lists the inputs compiled in as constants ([`Backend::binds_parameters`]).
    Ok {
        max_abs: f64,
        bound: Vec<String>,
    },
    Fail(String),
    Unsupported(String),
}

/// The worst mismatch of `got` vs `expected`, or the max abs diff when all elements pass.
fn compare(name: &str, got: &Tensor, exp: &Tensor) -> Result<f64, String> {
    if got.dtype() != exp.dtype() {
        return Err(format!(
            "output '{name}': element type {} vs expected {}",
            got.dtype(),
            exp.dtype()
        ));
    }
    if got.shape != exp.shape {
        return Err(format!(
            "output '{name}': shape {:?} vs expected {:?}",
            got.shape, exp.shape
        ));
    }
    let (atol, rtol) = tolerance(exp.dtype());
    let float = exp.dtype().is_float();
    let mut worst: Option<(f64, usize)> = None;
    let mut max_abs = 0f64;
    for i in 0..exp.len() {
        let (g, e) = if float {
            (got.get_f64(i), exp.get_f64(i))
        } else {
            (got.get_i128(i) as f64, exp.get_i128(i) as f64)
        };
        let bad_excess = if !float {
            if got.get_i128(i) == exp.get_i128(i) {
                0.0
            } else {
                f64::INFINITY
            }
        } else if e.is_nan() || g.is_nan() {
            if e.is_nan() && g.is_nan() {
                0.0
            } else {
                f64::INFINITY
            }
        } else if e.is_infinite() || g.is_infinite() {
            if e == g { 0.0 } else { f64::INFINITY }
        } else {
            let d = (g - e).abs();
            max_abs = max_abs.max(d);
            let lim = atol + rtol * e.abs();
            if d > lim { d - lim } else { 0.0 }
        };
        if bad_excess > 0.0 && worst.is_none_or(|(w, _)| bad_excess > w) {
            worst = Some((bad_excess, i));
        }
    }
    match worst {
        None => Ok(max_abs),
        Some((_, i)) => {
            let (g, e) = (got.get_f64(i), exp.get_f64(i));
            Err(format!(
                "output '{name}' element {i} of {:?}: got {g}, expected {e} (|diff| {:e})",
                exp.shape,
                (g - e).abs()
            ))
        }
    }
}

/// Compares a float output under a compile-mode tolerance (`llmpu_runtime::compare`).
fn compare_mode(name: &str, got: &Tensor, exp: &Tensor, tol: Tolerance) -> Result<f64, String> {
    let (g, e) = (
        crate::emulate::to_runtime(got)?,
        crate::emulate::to_runtime(exp)?,
    );
    let c = llmpu_runtime::compare::compare(name, &g, &e, tol)?;
    if c.pass {
        Ok(c.max_abs)
    } else {
        Err(c.to_string())
    }
}

fn is_unsupported(e: &ImportError) -> bool {
    matches!(
        e,
        ImportError::Unsupported(_)
            | ImportError::UnsupportedValue { .. }
            | ImportError::Opset { .. }
            | ImportError::IrVersion(_)
    )
}

fn numbered(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n = name
                .strip_prefix(prefix)?
                .strip_suffix(".pb")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

fn run_case(case: &Path, backend: &mut dyn Backend) -> Outcome {
    let bytes = match llmpu_isa::limits::read_file(&case.join("model.onnx")) {
        Ok(b) => b,
        Err(e) => return Outcome::Fail(format!("cannot read model.onnx: {e}")),
    };
    let model = match onnx::decode_model(&bytes) {
        Ok(m) => m,
        Err(e) => return Outcome::Fail(e.to_string()),
    };
    let mut sets: Vec<PathBuf> = std::fs::read_dir(case)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
        })
        .collect();
    sets.sort();
    if sets.is_empty() {
        return Outcome::Fail("no test_data_set_* folder".into());
    }
    let input_names = onnx::graph_input_names(&model);
    let output_names: Vec<String> = model
        .graph
        .as_ref()
        .map(|g| g.output.iter().map(|o| o.name.clone()).collect())
        .unwrap_or_default();
    let mut max_abs = 0f64;
    let mut bound = vec![];
    for set in &sets {
        let set_name = set
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut named = vec![];
        for p in numbered(set, "input_") {
            match onnx::read_tensor_file(&p) {
                Ok(t) => named.push(t),
                Err(e) => {
                    // Non-tensor inputs (Optional, Sequence) or exotic element types: the model says why.
                    let probe = ImportOptions {
                        allow_symbolic: true,
                        ..Default::default()
                    };
                    return match onnx::import_model(&model, Some(case), &probe) {
                        Err(ie) if is_unsupported(&ie) => Outcome::Unsupported(ie.to_string()),
                        _ if e.to_string().contains("not supported") => {
                            Outcome::Unsupported(format!("test data: {e}"))
                        }
                        _ => Outcome::Fail(format!("{set_name}: {e}")),
                    };
                }
            }
        }
        if named.len() != input_names.len() {
            return Outcome::Fail(format!(
                "{set_name}: {} inputs for {} graph inputs",
                named.len(),
                input_names.len()
            ));
        }
        // Inputs by name when the files carry graph-input names, else by position.
        let by_name = named.iter().all(|(n, _)| input_names.contains(n));
        let mut inputs = vec![];
        let mut opts = ImportOptions::default();
        for (i, gname) in input_names.iter().enumerate() {
            let t = if by_name {
                named
                    .iter()
                    .find(|(n, _)| n == gname)
                    .map(|(_, t)| t.clone())
            } else {
                named.get(i).map(|(_, t)| t.clone())
            };
            let Some(t) = t else {
                return Outcome::Fail(format!("{set_name}: no data for input '{gname}'"));
            };
            opts.shapes
                .insert(gname.clone(), t.shape.iter().map(|&d| d as u64).collect());
            inputs.push(t);
        }
        let mut first = import_and_run(&model, case, &opts, backend, &inputs, &set_name);
        if backend.binds_parameters()
            && let Err(Outcome::Unsupported(_)) = &first
            && let Ok(module) = onnx::import_model(&model, Some(case), &opts)
        {
            // Inputs the compiler needs as constants: compiled in with this data set's values.
            let params = onnx::parameter_inputs(&module);
            if !params.is_empty() {
                let mut bopts = opts.clone();
                let mut rest = vec![];
                for (name, t) in input_names.iter().zip(&inputs) {
                    if params.iter().any(|(p, _)| p == name) {
                        bopts.bindings.insert(name.clone(), t.clone());
                    } else {
                        rest.push(t.clone());
                    }
                }
                first = import_and_run(&model, case, &bopts, backend, &rest, &set_name);
                bound = bopts.bindings.keys().cloned().collect();
            }
        }
        // An `If` on a graph input whose branches differ cannot select at run time: the data
        // set's value of the input picks the branch, on either backend.
        let conds = onnx::if_condition_inputs(&model);
        if first.is_err() && input_names.iter().any(|n| conds.contains(n)) {
            let mut bopts = opts.clone();
            let mut rest = vec![];
            for (name, t) in input_names.iter().zip(&inputs) {
                if conds.contains(name) {
                    bopts.shapes.remove(name);
                    bopts.bindings.insert(name.clone(), t.clone());
                } else {
                    rest.push(t.clone());
                }
            }
            first = import_and_run(&model, case, &bopts, backend, &rest, &set_name);
            bound = bopts.bindings.keys().cloned().collect();
        }
        let outs = match first {
            Ok(o) => o,
            Err(o) => return o,
        };
        let expected = numbered(set, "output_");
        if expected.len() != outs.len() {
            return Outcome::Fail(format!(
                "{set_name}: {} outputs, {} expected",
                outs.len(),
                expected.len()
            ));
        }
        for (i, (p, got)) in expected.iter().zip(&outs).enumerate() {
            let exp = match onnx::read_tensor_file(p) {
                Ok((_, t)) => t,
                Err(e) => return Outcome::Fail(format!("{set_name}: {e}")),
            };
            let name = output_names
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("#{i}"));
            let result = match backend.float_tolerance() {
                Some(tol) if exp.dtype().is_float() => compare_mode(&name, got, &exp, tol),
                _ => compare(&name, got, &exp),
            };
            match result {
                Ok(d) => max_abs = max_abs.max(d),
                Err(msg) => return Outcome::Fail(format!("{set_name}: {msg}")),
            }
        }
    }
    Outcome::Ok { max_abs, bound }
}

/// Imports `model` with `opts`, runs the import pipeline and then `backend` on `inputs`.
fn import_and_run(
    model: &onnx::proto::ModelProto,
    case: &Path,
    opts: &ImportOptions,
    backend: &mut dyn Backend,
    inputs: &[Tensor],
    set_name: &str,
) -> Result<Vec<Tensor>, Outcome> {
    let mut module = match onnx::import_model(model, Some(case), opts) {
        Ok(m) => m,
        Err(e) if is_unsupported(&e) => return Err(Outcome::Unsupported(e.to_string())),
        Err(e) => return Err(Outcome::Fail(format!("import: {e}"))),
    };
    let mut pm = PassManager::from_names(
        &onnx::import_pipeline(),
        PassManagerOptions {
            verify_each: true,
            ..Default::default()
        },
    )
    .map_err(|e| Outcome::Fail(e.to_string()))?;
    if let Err(e) = pm.run(&mut module, &mut std::io::sink()) {
        return Err(Outcome::Fail(format!("pipeline: {e}")));
    }
    match backend.run(&module, inputs) {
        Ok(o) => Ok(o),
        Err(e) if e.starts_with(crate::emulate::UNSUPPORTED) => {
            Err(Outcome::Unsupported(format!("{}: {e}", backend.name())))
        }
        Err(e) => Err(Outcome::Fail(format!(
            "{set_name}: {}: {e}",
            backend.name()
        ))),
    }
}

/// Case folders under `dir` (or `dir` itself when it is a case).
fn cases(dir: &Path) -> Result<Vec<PathBuf>, String> {
    if dir.join("model.onnx").is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let rd = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    v.sort();
    Ok(v)
}

/// Runs `llmpu conformance`.
pub fn run(args: &ConformanceArgs) -> Result<(), String> {
    let mut backend = args.backend.create(args)?;
    let all = cases(&args.dir)?;
    let list: Vec<&PathBuf> = all
        .iter()
        .filter(|c| {
            args.filter.as_ref().is_none_or(|f| {
                c.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(f.as_str()))
            })
        })
        .collect();
    outln!(
        "conformance: {} case(s) in {} on the {}",
        list.len(),
        args.dir.display(),
        backend.name()
    );
    match backend.float_tolerance() {
        Some(t) => outln!(
            "tolerance: float outputs {t} (compile-mode numerics); other outputs {}",
            tolerance_line().trim_start_matches("tolerance: ")
        ),
        None => outln!("{}", tolerance_line()),
    }
    let (mut pass, mut fail, mut unsup, mut bound_cases) = (0, 0, 0, 0);
    let mut progress = crate::progress::Progress::new("conformance", list.len() as u64);
    for (i, case) in list.iter().enumerate() {
        let name = case
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        progress.set(i as u64, &name);
        let outcome = run_case(case, backend.as_mut());
        if !args.quiet || matches!(outcome, Outcome::Fail(_)) {
            progress.clear();
        }
        match outcome {
            Outcome::Ok { max_abs, bound } => {
                pass += 1;
                if !args.quiet {
                    let b = if bound.is_empty() {
                        String::new()
                    } else {
                        bound_cases += 1;
                        format!("; bound at compile time: {}", bound.join(", "))
                    };
                    outln!("ok          {name} (max |diff| {max_abs:.1e}{b})");
                } else if !bound.is_empty() {
                    bound_cases += 1;
                }
            }
            Outcome::Fail(m) => {
                fail += 1;
                outln!("FAIL        {name}: {m}");
            }
            Outcome::Unsupported(m) => {
                unsup += 1;
                if !args.quiet {
                    outln!("unsupported {name}: {}", m.replace('\n', " "));
                }
            }
        }
    }
    progress.finish();
    let b = if bound_cases > 0 {
        format!(" ({bound_cases} passed with parameter inputs bound at compile time)")
    } else {
        String::new()
    };
    outln!("{pass} passed, {fail} failed, {unsup} unsupported{b}");
    if fail > 0 {
        return Err(format!("{fail} conformance case(s) failed"));
    }
    Ok(())
}
