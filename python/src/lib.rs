//! The Rust side of the `llmpu` Python package: what `llmpu.compile`, `Binary.run`, `Report.ops`,
//! `llmpu.ir_after` and the target dicts do, as plain Rust over the library crates (no Python
//! types), so that `cargo test` checks it without a Python interpreter.
//!
//! The PyO3 module itself (`llmpu._native`, the [`bindings`] module) is behind the cargo feature
//! `python`, which maturin turns on (`python/pyproject.toml`); the pure-Python layer
//! (`python/pysrc/llmpu/`) adds the pandas DataFrame and the matplotlib roofline.

#[cfg(feature = "python")]
mod bindings;

use std::collections::BTreeMap;
use std::path::Path;

use llmpu_compiler::backend::{self, Options, Precision};
use llmpu_compiler::ir::{Module, PrintOptions, print_module_with};
use llmpu_compiler::onnx::{ImportOptions, import_bytes, import_file, run_import_pipeline};
use llmpu_compiler::pass::PassManagerOptions;
use llmpu_isa::{Program, Target};
use llmpu_runtime::{Report, RunOptions, RunResult, Tensor};
use serde_json::{Value, json};

/// The pseudo-pass name [`ir_after`] accepts for the IR right after the ONNX import pipeline.
pub const IMPORT_STAGE: &str = "import";

/// A model to compile: an ONNX file, or a serialized `ModelProto` (external data refused: there is
/// no folder to resolve it against).
#[derive(Clone, Copy, Debug)]
pub enum Model<'a> {
    Path(&'a Path),
    Bytes(&'a [u8]),
}

impl Model<'_> {
    fn describe(&self) -> String {
        match self {
            Model::Path(p) => p.display().to_string(),
            Model::Bytes(_) => "the ModelProto".into(),
        }
    }
}

/// Compile options from a target and a precision name (`fp32` / `bf16`).
pub fn options(target: Target, precision: &str) -> Result<Options, String> {
    let precision = Precision::from_name(precision)
        .ok_or_else(|| format!("precision `{precision}`: expected fp32 or bf16"))?;
    Ok(Options { target, precision })
}

/// Imports `model` with its symbolic dims bound by `dims` and runs the import pipeline (the graph
/// IR `llmpu compile` starts from). An unbound symbolic dim is an error naming it.
pub fn import(model: Model, dims: &BTreeMap<String, u64>) -> Result<Module, String> {
    let opts = ImportOptions {
        dims: dims.clone(),
        on_warning: Some(llmpu_compiler::onnx::print_warning),
        ..Default::default()
    };
    let what = model.describe();
    let mut m = match model {
        Model::Path(p) => import_file(p, &opts),
        Model::Bytes(b) => import_bytes(b, None, &opts),
    }
    .map_err(|e| format!("{what}: {e}"))?;
    run_import_pipeline(&mut m, &mut std::io::sink()).map_err(|e| format!("{what}: {e}"))?;
    Ok(m)
}

/// Compiles `model` to a program for `o` (the whole backend pipeline, as `llmpu compile`).
pub fn compile(model: Model, o: &Options, dims: &BTreeMap<String, u64>) -> Result<Program, String> {
    let mut m = import(model, dims)?;
    backend::compile(
        &mut m,
        o,
        PassManagerOptions::default(),
        &mut std::io::sink(),
    )?
    .ok_or_else(|| "the pipeline stopped before code generation".to_string())
}

/// The pass names [`ir_after`] accepts: [`IMPORT_STAGE`], then the backend pipeline in order.
pub fn passes() -> Vec<&'static str> {
    let mut v = vec![IMPORT_STAGE];
    v.extend(backend::pipeline());
    v
}

/// The IR text after `pass` of the backend pipeline (or after the import pipeline for
/// [`IMPORT_STAGE`]); large constants elided, as `--print-ir-after`.
pub fn ir_after(
    model: Model,
    o: &Options,
    dims: &BTreeMap<String, u64>,
    pass: &str,
) -> Result<String, String> {
    let names = passes();
    if !names.contains(&pass) {
        return Err(format!(
            "no pass `{pass}` in the pipeline; the passes are: {}",
            names.join(", ")
        ));
    }
    let mut m = import(model, dims)?;
    if pass != IMPORT_STAGE {
        let pm = PassManagerOptions {
            stop_after: Some(pass.to_string()),
            ..Default::default()
        };
        backend::compile(&mut m, o, pm, &mut std::io::sink())?;
    }
    Ok(print_module_with(
        &m,
        PrintOptions {
            elide_large_constants: true,
        },
    ))
}

/// A target as JSON text (every key of the TOML schema, nested the same way).
pub fn target_to_json(t: &Target) -> String {
    serde_json::to_string(t).expect("a target serializes")
}

/// A target from JSON text (a possibly edited [`target_to_json`]), validated like a TOML file:
/// unknown or missing keys and out-of-range values are errors naming the key.
pub fn target_from_json(text: &str) -> Result<Target, String> {
    let t: Target = serde_json::from_str(text).map_err(|e| format!("target dict: {e}"))?;
    t.validate("target dict").map_err(|e| e.to_string())?;
    Ok(t)
}

/// Runs `program` on the emulator with `inputs` (a decode program's dense pasts are packed into
/// its KV region, as `llmpu run`); `timing_only` skips the arithmetic and returns no outputs.
pub fn run(
    program: &Program,
    inputs: &[(String, Tensor)],
    timing_only: bool,
) -> Result<RunResult, String> {
    let opts = RunOptions {
        timing_only,
        ..RunOptions::default()
    };
    llmpu_runtime::kv::run_dense(program, inputs, &opts).map_err(|e| e.to_string())
}

/// One row per op of the report (the HTML report's per-op table, `llmpu_runtime::html::op_points`):
/// busy cycles per unit, instructions, HBM bytes, MACs, vector ops, FLOPs, intensity (FLOP per
/// HBM byte, null without traffic), achieved FLOP/s, bottleneck unit, bound, fraction of roofline,
/// and the op's span on the timeline.
pub fn op_rows(report: &Report, target: &Target) -> Vec<Value> {
    let points = llmpu_runtime::html::op_points(report, target);
    report
        .locations
        .iter()
        .zip(points)
        .map(|(l, p)| {
            json!({
                "op": l.loc,
                "scalar_cycles": l.busy_cycles[llmpu_isa::Unit::Scalar.index()],
                "dma_cycles": l.busy_cycles[llmpu_isa::Unit::Dma.index()],
                "mxu_cycles": l.busy_cycles[llmpu_isa::Unit::Mxu.index()],
                "vpu_cycles": l.busy_cycles[llmpu_isa::Unit::Vpu.index()],
                "cycles": p.cycles,
                "instructions": l.instructions,
                "hbm_bytes": l.hbm_bytes,
                "macs": l.macs,
                "vector_ops": l.vector_ops,
                "flops": p.flops,
                "intensity": p.intensity,
                "flops_per_second": p.flops_per_second,
                "bottleneck": p.bottleneck.name(),
                "bound": p.bound.name(),
                "roofline_fraction": p.roofline_fraction,
                "first_start": l.first_start,
                "last_end": l.last_end,
            })
        })
        .collect()
}

/// The roofs a roofline plot draws: the chip's compute roof (FLOP/s, matrix peak plus vector
/// lanes, `llmpu_runtime::html::compute_roof`) and HBM bandwidth (bytes/s).
pub fn roofs(target: &Target) -> (f64, f64) {
    (
        llmpu_runtime::html::compute_roof(target),
        target.hbm.bandwidth_gb_s * 1e9,
    )
}

/// The tolerance of a precision name (`fp32` / `bf16`), the one the CLI compares with.
pub fn tolerance(precision: &str) -> Result<llmpu_runtime::compare::Tolerance, String> {
    match precision {
        "fp32" | "f32" => Ok(llmpu_runtime::compare::Tolerance::FP32),
        "bf16" => Ok(llmpu_runtime::compare::Tolerance::BF16),
        other => Err(format!("precision `{other}`: expected fp32 or bf16")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_gpt() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models/tiny-gpt.onnx")
    }

    #[test]
    fn a_target_round_trips_through_json_and_an_edit_is_kept() {
        let t = Target::preset("edge").unwrap();
        let mut v: Value = serde_json::from_str(&target_to_json(&t)).unwrap();
        assert_eq!(target_from_json(&v.to_string()).unwrap(), t);
        v["cores"] = json!(2);
        assert_eq!(target_from_json(&v.to_string()).unwrap().cores, 2);
    }

    #[test]
    fn an_unknown_target_key_is_an_error_naming_it() {
        let t = Target::preset("edge").unwrap();
        let mut v: Value = serde_json::from_str(&target_to_json(&t)).unwrap();
        v["corez"] = json!(2);
        let e = target_from_json(&v.to_string()).unwrap_err();
        assert!(e.contains("corez"), "{e}");
    }

    #[test]
    fn ir_after_an_unknown_pass_lists_the_passes() {
        let o = options(Target::default_target(), "bf16").unwrap();
        let e = ir_after(
            Model::Path(&tiny_gpt()),
            &o,
            &BTreeMap::new(),
            "fuse-nothing",
        )
        .unwrap_err();
        assert!(e.contains("fuse-attention"), "{e}");
    }

    #[test]
    fn ir_after_fuse_attention_holds_the_fused_op_and_import_does_not() {
        let o = options(Target::default_target(), "bf16").unwrap();
        let path = tiny_gpt();
        let fused = ir_after(Model::Path(&path), &o, &BTreeMap::new(), "fuse-attention").unwrap();
        let imported = ir_after(Model::Path(&path), &o, &BTreeMap::new(), IMPORT_STAGE).unwrap();
        assert!(fused.contains("attention"), "{fused}");
        assert_ne!(fused, imported);
    }

    #[test]
    fn a_compiled_model_runs_and_has_one_op_row_per_location() {
        let o = options(Target::default_target(), "fp32").unwrap();
        let path = tiny_gpt();
        let program = compile(Model::Path(&path), &o, &BTreeMap::new()).unwrap();
        let r = run(&program, &[], true).unwrap();
        assert!(r.report.cycles > 0);
        let rows = op_rows(&r.report, &program.target);
        assert_eq!(rows.len(), r.report.locations.len());
        assert!(rows.iter().all(|row| row["bottleneck"].is_string()));
    }

    #[test]
    fn a_bad_precision_is_an_error_naming_the_choices() {
        let e = options(Target::default_target(), "fp8").unwrap_err();
        assert!(e.contains("fp32 or bf16"), "{e}");
    }
}
