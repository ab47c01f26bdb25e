//! `llmpu compile`: a model (ONNX, or graph IR text `.mlir`) becomes an LLMPU binary for a target.
//!
//! The pipeline is `llmpu_compiler::backend::pipeline()`; every IR-dump flag of `llmpu opt` works
//! here (`--print-ir-after-all`, `--dump-ir DIR`, `--stop-after PASS`, ...). Errors name the graph
//! node they concern; nothing is written unless the whole pipeline succeeds.

use std::path::{Path, PathBuf};

use llmpu_compiler::backend::{self, Options, Precision};
use llmpu_compiler::ir::Module;
use llmpu_compiler::pass::{IrDumpArgs, PassManagerOptions};
use llmpu_isa::{Program, Target, binary};

/// Arguments of `llmpu compile`.
#[derive(clap::Args, Debug)]
pub struct CompileArgs {
    /// The model: `model.onnx`, or graph IR text (`.mlir`).
    pub input: PathBuf,
    /// Target: a preset (`edge`, `datacenter`) or a `.toml` file.
    #[arg(long, default_value = llmpu_isa::target::DEFAULT_TARGET)]
    pub target: String,
    /// Numerics: `fp32` (f32 everywhere) or `bf16` (bf16 storage, f32 accumulation).
    #[arg(long, default_value = "bf16")]
    pub precision: String,
    /// Value of a symbolic dimension: `NAME=N` (repeatable).
    #[arg(long = "dim", value_name = "NAME=N")]
    pub dims: Vec<String>,
    /// Output binary (default: the input with extension `.llmpu`).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub dump: IrDumpArgs,
}

/// Parses `--target` / `--precision`.
pub fn options(target: &str, precision: &str) -> Result<Options, String> {
    let target = Target::resolve(target).map_err(|e| e.to_string())?;
    let precision = Precision::from_name(precision)
        .ok_or_else(|| format!("--precision `{precision}`: expected fp32 or bf16"))?;
    Ok(Options { target, precision })
}

/// Reads a model as graph IR.
pub fn load_model(path: &Path, dims: &[String]) -> Result<Module, String> {
    let name = path.display().to_string();
    if path.extension().is_some_and(|e| e == "mlir") {
        let src = std::fs::read_to_string(path).map_err(|e| format!("cannot read {name}: {e}"))?;
        let m = llmpu_compiler::parser::parse_module(&src).map_err(|e| {
            eprint!("{}", e.diagnostic.render(&name, &src));
            format!("could not parse {name}")
        })?;
        if !dims.is_empty() {
            return Err("--dim applies to ONNX models only".into());
        }
        return Ok(m);
    }
    crate::import::import_model(path, dims)
}

/// Compiles a loaded module; `None` when `--stop-after` ended the pipeline early.
pub fn compile_module(
    m: &mut Module,
    o: &Options,
    dump: &IrDumpArgs,
) -> Result<Option<Program>, String> {
    let pm = PassManagerOptions::from(dump);
    backend::compile(m, o, pm, &mut std::io::stderr())
}

/// Runs `llmpu compile`.
pub fn run(a: &CompileArgs) -> Result<(), String> {
    let o = options(&a.target, &a.precision)?;
    let mut m = load_model(&a.input, &a.dims)?;
    let Some(program) = compile_module(&mut m, &o, &a.dump)? else {
        return Ok(());
    };
    let out = a
        .output
        .clone()
        .unwrap_or_else(|| a.input.with_extension("llmpu"));
    let bytes = binary::write(&program).map_err(|e| format!("{}: {e}", out.display()))?;
    std::fs::write(&out, bytes).map_err(|e| format!("{}: {e}", out.display()))?;
    let insts: usize = program.cores.iter().map(Vec::len).sum();
    eprintln!(
        "wrote {} ({} cores, {insts} instructions, {} data segments, target {}, {})",
        out.display(),
        program.cores.len(),
        program.data.len(),
        o.target.name,
        o.precision.name()
    );
    Ok(())
}
