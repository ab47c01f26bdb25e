//! `llmpu compile`: a model (ONNX, or graph IR text `.mlir`) becomes an LLMPU binary for a target.
//!
//! The pipeline is `llmpu_compiler::backend::pipeline()`; every IR-dump flag of `llmpu opt` works
//! here (`--print-ir-after-all`, `--dump-ir DIR`, `--stop-after PASS`, ...). Errors name the graph
//! node they concern; nothing is written unless the whole pipeline succeeds.

use std::path::{Path, PathBuf};

use crate::ir_dump::IrDumpArgs;
use llmpu_compiler::backend::{self, Options, Precision};
use llmpu_compiler::ir::Module;
use llmpu_compiler::pass::{PassManagerOptions, STAGE_ATTR};
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
    /// Compile graph input NAME in as a constant holding these values (repeatable; `NAME=` is
    /// an empty tensor): what the backend needs at compile time (reduction axes, slice bounds,
    /// range limits, pads, shapes) when a model takes it as an input. The binary no longer has
    /// that input.
    #[arg(long = "bind", value_name = "NAME=V1,V2,...")]
    pub binds: Vec<String>,
    /// Compile a decode graph once for a KV cache of this many tokens: binds
    /// `total_sequence_length=N`, `past_sequence_length=N-1`, `sequence_length=1` (Hugging Face
    /// Optimum's dim names) unless `--dim` gives them; the current length is a run-time value
    /// (`spec/kv-cache.md`).
    #[arg(long, value_name = "N")]
    pub max_context: Option<u64>,
    /// Physical blocks in each block pool of a decode graph's paged KV region (default: batch ×
    /// blocks per sequence). The block table keeps its blocks-per-sequence columns; the host
    /// shares the pool among the sequences (`llmpu serve-sim`, `spec/serving.md`).
    #[arg(long, value_name = "N")]
    pub kv_blocks: Option<u64>,
    /// Also return every value the fused graph computes, as outputs named `probe:<ONNX nodes>`
    /// (the `probe-values` pass), so `llmpu generate --verify` can name the first op whose value
    /// differs from the reference interpreter's.
    #[arg(long)]
    pub probes: bool,
    /// Emit every kernel loop as straight-line code instead of rolling uniform iterations into
    /// counted loops (the same instructions execute either way; the program is larger). Recorded
    /// as the module attribute `llmpu.loops = "unrolled"`.
    #[arg(long)]
    pub unroll: bool,
    /// Output binary (default: the input with extension `.llmpu`).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Also check the IR with real MLIR before and after every pass, naming the pass on failure.
    /// Needs a build with `--features mlir`.
    #[arg(long)]
    pub mlir_verify: bool,
    #[command(flatten)]
    pub dump: IrDumpArgs,
}

/// `dims` plus the sequence dims of a decode step with a cache of `max_context` tokens (see
/// `--max-context`); dims already given win.
pub fn decode_dims(max_context: u64, dims: &[String]) -> Result<Vec<String>, String> {
    if max_context < 2 {
        return Err(format!(
            "--max-context {max_context}: need at least 2 tokens"
        ));
    }
    if max_context > i64::MAX as u64 {
        return Err(format!(
            "--max-context {max_context}: at most 2^63 - 1 tokens (ONNX and MLIR extents are int64)"
        ));
    }
    let mut out = dims.to_vec();
    for (name, v) in [
        ("sequence_length", 1),
        ("past_sequence_length", max_context - 1),
        ("total_sequence_length", max_context),
    ] {
        if !dims.iter().any(|d| d.split('=').next() == Some(name)) {
            out.push(format!("{name}={v}"));
        }
    }
    Ok(out)
}

/// The dims of a decode graph compiled for `batch` sequences and `new` new tokens per run over
/// `max_context` tokens (a chunked prefill or a speculative verification step when `new > 1`).
pub fn step_dims(max_context: u64, batch: usize, new: u64) -> Result<Vec<String>, String> {
    if new >= max_context {
        return Err(format!(
            "{new} new tokens per step need a context over {max_context}"
        ));
    }
    decode_dims(
        max_context,
        &[
            format!("batch_size={batch}"),
            format!("sequence_length={new}"),
            format!("past_sequence_length={}", max_context - new),
        ],
    )
}

/// Turns on the `probe-values` pass for `m`.
pub fn set_probes(m: &mut Module) {
    let top = m.top();
    m.set_attr(
        top,
        llmpu_compiler::passes::probe_values::PROBES_ATTR,
        llmpu_compiler::ir::Attribute::Bool(true),
    );
}

/// Records `--unroll`: kernels emit straight-line code.
pub fn set_unrolled(m: &mut Module) {
    let top = m.top();
    m.set_attr(
        top,
        backend::LOOPS_ATTR,
        llmpu_compiler::ir::Attribute::str("unrolled"),
    );
}

/// Records `--kv-blocks`: every KV block pool of the module's decode graph gets `n` physical
/// blocks (`kv-layout`'s module attribute).
pub fn set_kv_blocks(m: &mut Module, n: u64) -> Result<(), String> {
    if n == 0 {
        return Err(format!("--kv-blocks {n}: need at least 1 block"));
    }
    if n > u32::MAX as u64 {
        return Err(format!(
            "--kv-blocks {n}: at most {} blocks (block ids are 32-bit)",
            u32::MAX
        ));
    }
    let top = m.top();
    m.set_attr(
        top,
        llmpu_compiler::passes::kv_layout::KV_BLOCKS_ATTR,
        llmpu_compiler::ir::Attribute::i64(n as i64),
    );
    Ok(())
}

/// Parses `--target` / `--precision`.
pub fn options(target: &str, precision: &str) -> Result<Options, String> {
    let target = Target::resolve(target).map_err(|e| e.to_string())?;
    let precision = Precision::from_name(precision).ok_or_else(|| {
        format!(
            "--precision `{precision}`: expected fp32 or bf16{}",
            llmpu_isa::suggest::did_you_mean(["fp32", "bf16"], precision)
        )
    })?;
    Ok(Options { target, precision })
}

/// Reads a model as graph IR.
pub fn load_model(path: &Path, dims: &[String]) -> Result<Module, String> {
    load_model_checked(path, dims, &[], &[])
}

/// [`load_model`] where each of `user_dims` (the user's `--dim`s) must name a symbolic dim of
/// the model, and `binds` (`--bind`) compile graph inputs in as constants.
pub fn load_model_checked(
    path: &Path,
    dims: &[String],
    user_dims: &[String],
    binds: &[String],
) -> Result<Module, String> {
    let name = path.display().to_string();
    if path.extension().is_some_and(|e| e == "mlir") {
        let src = llmpu_isa::limits::read_to_string(path)
            .map_err(|e| format!("cannot read {name}: {e}"))?;
        let m = llmpu_compiler::parser::parse_module(&src).map_err(|e| {
            eprint!("{}", e.diagnostic.render(&name, &src));
            format!("could not parse {name}")
        })?;
        if !dims.is_empty() || !binds.is_empty() {
            return Err("--dim and --bind apply to ONNX models only".into());
        }
        return Ok(m);
    }
    crate::import::import_model_checked(path, dims, user_dims, binds, None)
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
    let mut pm = PassManagerOptions::from(&a.dump);
    if a.mlir_verify {
        let v = llmpu_compiler::mlir::pass_verifier().map_err(|e| format!("--mlir-verify: {e}"))?;
        pm.extra_verifier = Some(v);
    }
    let o = options(&a.target, &a.precision)?;
    let dims = match a.max_context {
        Some(n) => decode_dims(n, &a.dims)?,
        None => a.dims.clone(),
    };
    let mut m = load_model_checked(&a.input, &dims, &a.dims, &a.binds)?;
    if let Some(n) = a.kv_blocks {
        set_kv_blocks(&mut m, n)?;
    }
    if a.probes {
        set_probes(&mut m);
    }
    if a.unroll {
        set_unrolled(&mut m);
    }
    let top = m.top();
    // What the binary is built for: a dump continues with the options recorded in it.
    let mut used = o.clone();
    if let Some(stage) = m.attr(top, STAGE_ATTR).and_then(|x| x.as_str()) {
        let recorded = backend::options(&m)?;
        used = recorded.clone();
        if recorded.target != o.target || recorded.precision != o.precision {
            eprintln!(
                "warning: {} went through the pipeline up to `{stage}` for target `{}` ({}); it \
                 continues with those, not `{}` ({})",
                a.input.display(),
                recorded.target.name,
                recorded.precision.name(),
                o.target.name,
                o.precision.name()
            );
        }
    }
    let Some(program) = backend::compile(&mut m, &o, pm, &mut std::io::stderr())? else {
        // `--stop-after`: the IR at that point, complete (large constants printed), so that
        // `llmpu compile` of it continues to the same binary.
        let text = llmpu_compiler::ir::print_module_with(
            &m,
            llmpu_compiler::ir::PrintOptions {
                elide_large_constants: false,
            },
        );
        match &a.output {
            Some(out) => {
                std::fs::write(out, text).map_err(|e| format!("{}: {e}", out.display()))?;
                eprintln!(
                    "wrote {} (IR after `{}`)",
                    out.display(),
                    a.dump.stop_after.as_deref().unwrap_or("?")
                );
            }
            None => out!("{text}"),
        }
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
        used.target.name,
        used.precision.name()
    );
    Ok(())
}
