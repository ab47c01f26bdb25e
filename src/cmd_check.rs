//! `llmpu check <case-dir | model.onnx>`: compile for a target, run on the emulator and compare.
//!
//! A case folder (`model.onnx` + `test_data_set_*/input_N.pb`, `output_N.pb`) is checked against its
//! stored outputs, every data set separately (symbolic dims bound from that set's inputs). A bare
//! model runs on seeded random inputs (integers in `0..8`, floats in `[-1, 1)`) against the reference
//! interpreter. Each output prints its error figures (max |diff|, that relative to the output's
//! scale, cosine, and for vectors along the last axis the top-1 agreement over positions) with the
//! tolerance used (`llmpu_runtime::compare`, chosen by `--precision`); then the cost report.
//! Exits non-zero when an output is outside tolerance.

use std::path::{Path, PathBuf};

use llmpu_compiler::interp::{self, Tensor as ITensor};
use llmpu_compiler::ir::ScalarType;
use llmpu_compiler::onnx::{self, ImportOptions};
use llmpu_compiler::pass::{PassManager, PassManagerOptions};
use llmpu_runtime::compare::{Tolerance, compare};

use crate::cmd_compile;

/// Arguments of `llmpu check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// A test-case folder (`model.onnx` + `test_data_set_*`) or a bare `model.onnx`.
    pub input: PathBuf,
    /// Target: a preset (`edge`, `datacenter`) or a `.toml` file.
    #[arg(long, default_value = llmpu_isa::target::DEFAULT_TARGET)]
    pub target: String,
    /// Numerics: `fp32` or `bf16`.
    #[arg(long, default_value = "bf16")]
    pub precision: String,
    /// Seed of the random inputs for a bare model.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Do not print the cost report.
    #[arg(long)]
    pub no_report: bool,
    /// Trap on reads of never-written SRAM, accumulator or HBM bytes (names core, pc and bytes).
    #[arg(long)]
    pub check_uninit: bool,
    /// Stop the emulation after this many instructions.
    #[arg(long, value_name = "N")]
    pub max_instructions: Option<u64>,
    /// Compile graph input NAME in as a constant holding these values (repeatable), as
    /// `llmpu compile --bind` does; a data set must give that input the same values.
    #[arg(long = "bind", value_name = "NAME=V1,V2,...")]
    pub binds: Vec<String>,
    /// Hold every output to |d| <= REL*max|ref| + REL*|ref| (and, in bf16, cosine >= 0.999)
    /// instead of the precision's tolerance: for a model whose own framework, run in bf16, is
    /// already past the default 2e-2. Say so when you quote the result.
    #[arg(long, value_name = "REL")]
    pub tolerance: Option<f64>,
}

fn numbered(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            let n = p
                .file_name()?
                .to_str()?
                .strip_prefix(prefix)?
                .strip_suffix(".pb")?
                .parse()
                .ok()?;
            Some((n, p))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

fn random_input(
    name: &str,
    st: ScalarType,
    shape: &[u64],
    seed: &mut u64,
) -> Result<ITensor, String> {
    let n = llmpu_isa::limits::host_tensor(
        &format!("random input '{name}' {shape:?}"),
        shape,
        st.byte_size() as u64,
    )
    .map_err(|e| e.to_string())?;
    let mut next = || {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 40) as f64 / (1u64 << 24) as f64
    };
    let vals: Vec<f64> = (0..n)
        .map(|_| {
            if st.is_float() {
                next() * 2.0 - 1.0
            } else {
                (next() * 8.0).floor()
            }
        })
        .collect();
    let shape = shape.iter().map(|&d| d as usize).collect();
    Ok(ITensor::from_f64_fn(st, shape, n, |i| vals[i]))
}

/// Fraction of positions (all but the last axis) whose argmax agrees.
fn top1(got: &[f32], want: &[f32], last: usize) -> f64 {
    if last < 2 || got.is_empty() {
        return 1.0;
    }
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (i, &x)| if x > b.1 { (i, x) } else { b },
            )
            .0
    };
    let rows = got.len() / last;
    let same = (0..rows)
        .filter(|&r| {
            argmax(&got[r * last..(r + 1) * last]) == argmax(&want[r * last..(r + 1) * last])
        })
        .count();
    same as f64 / rows as f64
}

/// One line about an output: shape, first values and, for vectors along the last axis, the argmax
/// of each position (the predicted tokens of logits).
fn print_output(name: &str, t: &llmpu_runtime::Tensor) {
    let v = t.to_f32();
    let head: Vec<String> = v.iter().take(6).map(|x| format!("{x:.4}")).collect();
    out!("     {name} {}: [{}, ...]", t.describe(), head.join(", "));
    let last = *t.shape.last().unwrap_or(&1) as usize;
    if t.dtype.is_float() && last > 1 && v.len() / last <= 64 {
        let am: Vec<usize> = v
            .chunks(last)
            .map(|r| {
                r.iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |b, (i, &x)| if x > b.1 { (i, x) } else { b },
                    )
                    .0
            })
            .collect();
        out!("; argmax per position {am:?}");
    }
    outln!();
}

/// Runs `llmpu check`.
pub fn run(a: &CheckArgs) -> Result<(), String> {
    let o = cmd_compile::options(&a.target, &a.precision)?;
    let precision_tol = match o.precision {
        llmpu_compiler::backend::Precision::Fp32 => Tolerance::FP32,
        llmpu_compiler::backend::Precision::Bf16 => Tolerance::BF16,
    };
    let given = match a.tolerance {
        Some(r) if r.is_finite() && r > 0.0 && r < 1.0 => Some(Tolerance {
            name: "--tolerance",
            rtol: r,
            scale_atol: r,
            min_cosine: precision_tol.min_cosine,
        }),
        Some(r) => return Err(format!("--tolerance {r}: expected a fraction in (0, 1)")),
        None => None,
    };
    let tol = given.unwrap_or(precision_tol);
    let (model_path, sets) = if a.input.is_dir() {
        let mut sets: Vec<PathBuf> = std::fs::read_dir(&a.input)
            .map_err(|e| format!("{}: {e}", a.input.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
            })
            .collect();
        sets.sort();
        (a.input.join("model.onnx"), sets)
    } else {
        (a.input.clone(), vec![])
    };
    let bytes = llmpu_isa::limits::read_file(&model_path)
        .map_err(|e| format!("{}: {e}", model_path.display()))?;
    let model = onnx::decode_model(&bytes).map_err(|e| e.to_string())?;
    let base = model_path.parent().map(Path::to_path_buf);
    let input_names = onnx::graph_input_names(&model);
    let output_names: Vec<String> = model
        .graph
        .as_ref()
        .map(|g| g.output.iter().map(|o| o.name.clone()).collect())
        .unwrap_or_default();
    outln!(
        "check {} on `{}` ({}); {tol}",
        model_path.display(),
        o.target.name,
        o.precision.name()
    );
    let mut bound = std::collections::BTreeMap::new();
    for b in &a.binds {
        let (n, t) = onnx::parse_bind_arg(&model, b)?;
        if bound.insert(n.clone(), t).is_some() {
            return Err(format!("--bind names '{n}' twice"));
        }
    }
    let mut all_ok = true;
    let runs: Vec<Option<PathBuf>> = if sets.is_empty() {
        vec![None]
    } else {
        sets.into_iter().map(Some).collect()
    };
    for (ri, set) in runs.iter().enumerate() {
        let mut opts = ImportOptions {
            // Warnings once, for the first data set.
            on_warning: (ri == 0).then_some(onnx::print_warning as fn(&_)),
            bindings: bound.clone(),
            ..Default::default()
        };
        let mut inputs = vec![];
        let mut names = vec![];
        if let Some(set) = set {
            for (i, p) in numbered(set, "input_").iter().enumerate() {
                let (name, t) = onnx::read_tensor_file(p).map_err(|e| e.to_string())?;
                let gname = if input_names.contains(&name) {
                    name
                } else {
                    input_names.get(i).cloned().unwrap_or(name)
                };
                if let Some(b) = bound.get(&gname) {
                    if b.to_f64_vec() != t.to_f64_vec() || b.shape != t.shape {
                        return Err(format!(
                            "{}: input '{gname}' differs from its --bind value",
                            p.display()
                        ));
                    }
                    continue;
                }
                opts.shapes
                    .insert(gname.clone(), t.shape.iter().map(|&d| d as u64).collect());
                names.push(gname);
                inputs.push(t);
            }
        }
        let mut module = match onnx::import_model(&model, base.as_deref(), &opts) {
            Ok(m) => m,
            Err(e) => {
                // An `If` on a graph input whose branches differ cannot select at run time: this
                // data set's value of the input picks the branch (as `--bind` would).
                let conds: Vec<String> = onnx::if_condition_inputs(&model)
                    .into_iter()
                    .filter(|c| names.contains(c))
                    .collect();
                if conds.is_empty() {
                    return Err(e.to_string());
                }
                let mut kept = (vec![], vec![]);
                for (n, t) in names.drain(..).zip(inputs.drain(..)) {
                    if conds.contains(&n) {
                        opts.shapes.remove(&n);
                        opts.bindings.insert(n, t);
                    } else {
                        kept.0.push(n);
                        kept.1.push(t);
                    }
                }
                (names, inputs) = kept;
                outln!(
                    "({} compiled in with this data set's value: the condition of an If whose \
                     branches differ)",
                    conds.join(", ")
                );
                onnx::import_model(&model, base.as_deref(), &opts).map_err(|e| e.to_string())?
            }
        };
        let mut pm =
            PassManager::from_names(&onnx::import_pipeline(), PassManagerOptions::default())
                .map_err(|e| e.to_string())?;
        pm.run(&mut module, &mut std::io::sink())
            .map_err(|e| e.to_string())?;
        let expected: Vec<ITensor> = match set {
            Some(set) => numbered(set, "output_")
                .iter()
                .map(|p| {
                    onnx::read_tensor_file(p)
                        .map(|x| x.1)
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<_, _>>()?,
            None => {
                let f = module.functions()[0];
                let args = module
                    .block(module.entry_block(f).ok_or("no body")?)
                    .args
                    .clone();
                let mut seed = a.seed;
                for (i, v) in args.into_iter().enumerate() {
                    let t = module.value_type(v).as_tensor().ok_or("non-tensor input")?;
                    let shape = t
                        .static_shape()
                        .ok_or("symbolic input shape: give a case folder")?;
                    let name = input_names
                        .iter()
                        .filter(|n| !bound.contains_key(*n))
                        .nth(i)
                        .map_or("?", String::as_str);
                    inputs.push(random_input(name, t.elem, &shape, &mut seed)?);
                }
                interp::run(&module, &inputs).map_err(|e| e.to_string())?
            }
        };
        let mut ro = llmpu_runtime::RunOptions {
            check_uninit: a.check_uninit,
            ..Default::default()
        };
        if let Some(n) = a.max_instructions {
            ro.max_instructions = n;
        }
        let (outs, report) = crate::emulate::run(&module, &inputs, &o, &ro)?;
        let label = set
            .as_ref()
            .and_then(|s| s.file_name())
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "random inputs".into());
        outln!("-- {label}");
        for (i, (g, w)) in outs.iter().zip(&expected).enumerate() {
            let name = output_names
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("#{i}"));
            let (g, w) = (
                crate::emulate::to_runtime(g)?,
                crate::emulate::to_runtime(w)?,
            );
            // An output stored in bf16 is held to the bf16 tolerance whatever the precision:
            // one rounding step of its own type is not an error.
            let t = if w.dtype == llmpu_isa::DType::BF16 && given.is_none() {
                Tolerance::BF16
            } else {
                tol
            };
            let c = compare(&name, &g, &w, t)?;
            let scale = w
                .to_f32()
                .iter()
                .filter(|v| v.is_finite())
                .fold(0f64, |m, v| m.max(v.abs() as f64));
            let t1 = if w.dtype.is_float() {
                top1(
                    &g.to_f32(),
                    &w.to_f32(),
                    *w.shape.last().unwrap_or(&1) as usize,
                )
            } else {
                1.0
            };
            outln!(
                "{c}; max|diff|/max|ref| {:.2e}; top-1 {:.2}%",
                c.max_abs / scale.max(f64::MIN_POSITIVE),
                100.0 * t1
            );
            all_ok &= c.pass;
            print_output(&name, &g);
        }
        if ri == 0 && !a.no_report {
            out!("{}", report.render());
        }
    }
    if all_ok {
        Ok(())
    } else {
        Err("outputs outside tolerance".into())
    }
}
