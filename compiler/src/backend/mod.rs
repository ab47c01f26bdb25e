//! The backend: from `graph`-dialect functions to an LLMPU [`Program`].
//!
//! ```text
//! graph IR ──fuse-*, kv-layout──▶ graph IR (fused ops) ──tile──▶ tile attributes on every op
//!   ──plan-memory──▶ HBM buffers (liveness reuse), storage types ──lower-llmpu──▶ llmpu dialect
//!   (one op per instruction, @coreN functions whose loops and run-time branches are blocks and
//!   branch ops with successors; @main keeps data + I/O) ──codegen──▶ Program (ELF)
//! ```
//!
//! The compile options (target, precision) travel with the IR as module attributes
//! (`llmpu.target`, `llmpu.precision`), so every dump can be re-run with `llmpu opt`.
//!
//! Modules: [`emit`] (instruction streams, registers, automatic semaphores), [`view`] (strided HBM
//! views and their DMA decomposition), [`plan`] (memory planning), [`tiling`] (tile sizes from the
//! cost model), [`kernels`] (one generator per op family), [`codegen`] (llmpu dialect ⇄ program).

pub mod attention;
pub mod codegen;
pub mod emit;
pub mod kernels;
pub mod plan;
pub mod tiles;
pub mod tiling;
pub mod view;

use llmpu_isa::{DType, Target};

use crate::ir::{Attribute, Location, Module, ScalarType};

/// The IR element type of a machine type (inverse of [`dtype_of`] except for `i1`).
pub fn scalar_of(d: DType) -> ScalarType {
    match d {
        DType::F32 => ScalarType::F32,
        DType::F16 => ScalarType::F16,
        DType::BF16 => ScalarType::BF16,
        DType::F8E4M3 => ScalarType::F8E4M3FN,
        DType::I8 => ScalarType::I8,
        DType::U8 => ScalarType::UI8,
        DType::I32 => ScalarType::I32,
        DType::I64 => ScalarType::I64,
        DType::I16 => ScalarType::I16,
        DType::U16 => ScalarType::UI16,
        DType::U32 => ScalarType::UI32,
        DType::U64 => ScalarType::UI64,
        DType::F64 => ScalarType::F64,
    }
}

/// Storage precision of floating-point activations and weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 storage and arithmetic (matrix engine at the reduced f32 rate).
    Fp32,
    /// bf16 storage, f32 accumulation and vector arithmetic.
    #[default]
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }
    pub fn from_name(s: &str) -> Option<Precision> {
        match s {
            "fp32" | "f32" => Some(Precision::Fp32),
            "bf16" => Some(Precision::Bf16),
            _ => None,
        }
    }
}

/// What the backend compiles for.
#[derive(Clone, Debug)]
pub struct Options {
    pub target: Target,
    pub precision: Precision,
}

/// A backend failure, located at the ONNX node (op location) it concerns.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{loc}: {message}")]
pub struct BackendError {
    pub loc: String,
    pub message: String,
}

impl BackendError {
    pub fn new(loc: &Location, message: impl Into<String>) -> BackendError {
        BackendError {
            loc: loc_string(loc),
            message: message.into(),
        }
    }
}

/// The debug-map spelling of a location: the node name, or the fused names joined by `+`.
pub fn loc_string(loc: &Location) -> String {
    match loc {
        Location::Unknown => "unknown".into(),
        Location::Name(n) => n.to_string(),
        Location::Fused(v) => v.iter().map(|s| s.as_ref()).collect::<Vec<_>>().join("+"),
    }
}

/// Module attribute naming the target (a preset name, or the target's TOML text).
pub const TARGET_ATTR: &str = "llmpu.target";
/// Module attribute naming the precision (`fp32` / `bf16`).
pub const PRECISION_ATTR: &str = "llmpu.precision";

/// Module attribute choosing how kernels' uniform loops are emitted: `"rolled"` (the default:
/// counted loops, program size independent of trip counts) or `"unrolled"` (straight-line code,
/// for comparison).
pub const LOOPS_ATTR: &str = "llmpu.loops";

/// Whether the module asks for rolled loops ([`LOOPS_ATTR`]).
pub fn loops_rolled(m: &Module) -> bool {
    m.attr(m.top(), LOOPS_ATTR).and_then(Attribute::as_str) != Some("unrolled")
}

/// Records the options on the module.
pub fn set_options(m: &mut Module, o: &Options) {
    let top = m.top();
    let t = match Target::preset(&o.target.name) {
        Ok(p) if p == o.target => o.target.name.clone(),
        _ => o.target.to_toml(),
    };
    m.set_attr(top, TARGET_ATTR, Attribute::str(t));
    m.set_attr(top, PRECISION_ATTR, Attribute::str(o.precision.name()));
}

/// Reads the options recorded on the module (defaults: `edge`, `bf16`).
pub fn options(m: &Module) -> Result<Options, String> {
    let top = m.top();
    let target = match m.attr(top, TARGET_ATTR).and_then(Attribute::as_str) {
        None => Target::default_target(),
        Some(s) if s.contains('=') => {
            Target::from_toml(s, "module attribute llmpu.target").map_err(|e| e.to_string())?
        }
        Some(s) => Target::preset(s).map_err(|e| e.to_string())?,
    };
    let precision = match m.attr(top, PRECISION_ATTR).and_then(Attribute::as_str) {
        None => Precision::default(),
        Some(s) => Precision::from_name(s).ok_or_else(|| format!("unknown precision `{s}`"))?,
    };
    Ok(Options { target, precision })
}

/// The machine type of an IR element type (`i1` is stored as a byte).
pub fn dtype_of(t: ScalarType) -> Option<DType> {
    Some(match t {
        ScalarType::F32 => DType::F32,
        ScalarType::F16 => DType::F16,
        ScalarType::BF16 => DType::BF16,
        ScalarType::F8E4M3FN => DType::F8E4M3,
        ScalarType::I8 => DType::I8,
        ScalarType::UI8 | ScalarType::I1 => DType::U8,
        ScalarType::I32 => DType::I32,
        ScalarType::I64 => DType::I64,
        ScalarType::I16 => DType::I16,
        ScalarType::UI16 => DType::U16,
        ScalarType::UI32 => DType::U32,
        ScalarType::UI64 => DType::U64,
        ScalarType::F64 => DType::F64,
    })
}

/// The backend pipeline, in order (graph clean-up passes of the front end run first when they are
/// registered).
pub fn pipeline() -> Vec<&'static str> {
    let registered: Vec<&str> = crate::passes::registry().iter().map(|p| p.name).collect();
    let mut v = vec![];
    for front in ["shape-inference", "fold-constants"] {
        if registered.contains(&front) {
            v.push(front);
        }
    }
    v.extend([
        "canonicalize",
        "legalize",
        "split-projections",
        "fuse-rotary",
        "decompose-rotary",
        "fuse-attention",
        "decompose-attention",
        "fuse-norm",
        "fuse-matmul-epilogue",
        "kv-layout",
        "cse",
        "dce",
        "probe-values",
        "tile",
        "plan-memory",
        "lower-tile",
        "distribute-cores",
        "defer-epilogues",
        "lower-llmpu",
    ]);
    v.retain(|p| registered.contains(p));
    v
}

/// Runs the whole pipeline on `m` and assembles the result. Returns `None` when `stop_after`
/// ended the pipeline before code generation.
pub fn compile(
    m: &mut Module,
    o: &Options,
    pm: crate::pass::PassManagerOptions,
    log: &mut dyn std::io::Write,
) -> Result<Option<llmpu_isa::Program>, String> {
    let names = pipeline();
    // A module that has been through part of the pipeline (a dump, `compile --stop-after`)
    // continues after its recorded stage, with the target and precision it was compiled for.
    let top = m.top();
    let start = match m
        .attr(top, crate::pass::STAGE_ATTR)
        .and_then(Attribute::as_str)
    {
        None => {
            set_options(m, o);
            0
        }
        Some(stage) => names
            .iter()
            .position(|n| *n == stage)
            .map(|i| i + 1)
            .ok_or_else(|| {
                format!(
                    "the module says it went through `{stage}`, which is not a pass of the \
                     pipeline ({})",
                    names.join(",")
                )
            })?,
    };
    let o = options(m)?;
    let mut pm = pm;
    pm.record_stage = true;
    let mut mgr =
        crate::pass::PassManager::from_names(&names[start..], pm).map_err(|e| e.to_string())?;
    let report = mgr.run(m, log).map_err(|e| e.to_string())?;
    if report.stopped_after.is_some() {
        return Ok(None);
    }
    let mut program = codegen::assemble(m, &o.target)?;
    program.precision = Some(o.precision.name().to_string());
    Ok(Some(program))
}
