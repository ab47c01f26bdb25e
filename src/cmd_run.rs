//! `llmpu run`: executes a binary (or an assembly file) on the emulator, writes its outputs,
//! compares them with references given by `--expect`, and prints the cost report.

use crate::load;
use llmpu_isa::Target;
use llmpu_runtime::compare::{Tolerance, compare};
use llmpu_runtime::{RunOptions, Tensor, npy};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct RunArgs {
    /// LLMPU binary, or an assembly file (`.s`) assembled on the fly.
    program: PathBuf,
    /// An input tensor: `NAME=FILE.npy`. Repeat for each input.
    #[arg(long = "input", value_name = "NAME=FILE")]
    inputs: Vec<String>,
    /// A reference for an output: `NAME=FILE.npy`; the output is compared with it.
    #[arg(long = "expect", value_name = "NAME=FILE")]
    expects: Vec<String>,
    /// Tolerance for `--expect`: fp32 or bf16. Default: the precision the binary was compiled in
    /// (fp32 for assembly and binaries that do not record one).
    #[arg(long)]
    tolerance: Option<String>,
    /// Write every output as `NAME.npy` into this directory.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Write a Chrome/Perfetto trace (open in ui.perfetto.dev or chrome://tracing).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Skip data movement and arithmetic: same cycles, no outputs.
    #[arg(long)]
    timing_only: bool,
    /// With --timing-only: simulate every instruction instead of skipping the repeated periods of
    /// loops (the report is identical either way; the environment variable
    /// `LLMPU_NO_FAST_FORWARD` does the same for every command).
    #[arg(long)]
    no_fast_forward: bool,
    /// The target (preset or `.toml`): assembles a `.s` file for it; a binary must have been
    /// built for it (see `--retarget`).
    #[arg(long)]
    target: Option<String>,
    /// Run a binary on `--target` although it was built for another target: same instructions,
    /// the other machine's timing, sizes and energy (the program must still fit).
    #[arg(long, requires = "target")]
    retarget: bool,
    /// Stop after this many instructions.
    #[arg(long)]
    max_instructions: Option<u64>,
    /// Stop after this many cycles.
    #[arg(long)]
    max_cycles: Option<u64>,
    /// Stop after this much functional work (elements moved by DMAs + vector element operations
    /// + MACs; default 1e11). Timing-only runs do no work.
    #[arg(long, value_name = "N")]
    max_work: Option<u64>,
    /// Do not stop at data races between units.
    #[arg(long)]
    no_race_check: bool,
    /// Trap on reads of SRAM, accumulator or HBM bytes that neither an input, the program's data
    /// nor an earlier instruction wrote (names core, pc, instruction and bytes).
    #[arg(long)]
    check_uninit: bool,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Write an HTML report: totals, per-op table, roofline plot, per-unit timeline.
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// Write the report's figures as JSON.
    #[arg(long, value_name = "FILE.json")]
    report_json: Option<PathBuf>,
    /// Write the per-op table as CSV (the text table's columns, then each op's ONNX nodes).
    #[arg(long, value_name = "FILE.csv")]
    report_csv: Option<PathBuf>,
}

fn name_file(arg: &str, flag: &str) -> Result<(String, PathBuf), String> {
    let (name, file) = arg
        .split_once('=')
        .ok_or_else(|| format!("{flag} `{arg}`: expected NAME=FILE.npy"))?;
    Ok((name.to_string(), PathBuf::from(file)))
}

fn read_npy(path: &PathBuf) -> Result<Tensor, String> {
    npy::read_file(path).map_err(|e| match e {
        // Already names the file.
        npy::NpyError::Io { .. } => e.to_string(),
        e => format!("{}: {e}", path.display()),
    })
}

/// The tolerance `--expect` compares with: `--tolerance` if given, else the one of the precision
/// the binary records (`program` names it in errors), else fp32.
fn tolerance(
    flag: Option<&str>,
    recorded: Option<&str>,
    program: &std::path::Path,
) -> Result<Tolerance, String> {
    const NAMES: [&str; 2] = ["fp32", "bf16"];
    let of = |name: &str| match name {
        "fp32" => Some(Tolerance::FP32),
        "bf16" => Some(Tolerance::BF16),
        _ => None,
    };
    match (flag, recorded) {
        (Some(f), _) => of(f).ok_or_else(|| {
            format!(
                "--tolerance `{f}`: expected fp32 or bf16{}",
                llmpu_isa::suggest::did_you_mean(NAMES, f)
            )
        }),
        (None, Some(r)) => of(r).ok_or_else(|| {
            format!(
                "{}: the binary records precision `{r}`, which has no tolerance (expected fp32 \
                 or bf16); give --tolerance",
                program.display()
            )
        }),
        (None, None) => Ok(Tolerance::FP32),
    }
}

pub fn run(a: &RunArgs) -> Result<(), String> {
    let target = a
        .target
        .as_deref()
        .map(Target::resolve)
        .transpose()
        .map_err(|e| e.to_string())?;
    let program = load::program_for(&a.program, target, a.retarget)?;
    let mut inputs = Vec::new();
    for arg in &a.inputs {
        let (name, path) = name_file(arg, "--input")?;
        inputs.push((name, read_npy(&path)?));
    }
    let tol = tolerance(
        a.tolerance.as_deref(),
        program.precision.as_deref(),
        &a.program,
    )?;
    let mut opts = RunOptions {
        timing_only: a.timing_only,
        trace: a.trace.is_some(),
        timeline: a.report.is_some(),
        race_check: !a.no_race_check,
        check_uninit: a.check_uninit,
        ..RunOptions::default()
    };
    if a.no_fast_forward {
        opts.fast_forward = false;
    }
    if let Some(n) = a.max_instructions {
        opts.max_instructions = n;
    }
    if let Some(n) = a.max_cycles {
        opts.max_cycles = n;
    }
    if let Some(n) = a.max_work {
        opts.max_work = n;
    }
    let progress = crate::progress::EmulatorProgress::new("emulating");
    opts.progress = progress.as_ref().map(|p| p.hook());
    // A decode binary with a paged KV region takes its dense pasts and returns dense presents.
    let result =
        llmpu_runtime::kv::run_dense(&program, &inputs, &opts).map_err(|e| e.to_string())?;
    drop(progress);
    if let Some(dir) = &a.output_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (name, t) in &result.outputs {
            let path = dir.join(format!("{name}.npy"));
            npy::write_file(&path, t).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    if let (Some(path), Some(trace)) = (&a.trace, &result.trace) {
        std::fs::write(path, trace.to_chrome_json())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &a.report {
        let title = format!("LLMPU run: {}", a.program.display());
        let html = llmpu_runtime::html::render(
            &result.report,
            &program.target,
            result.timeline.as_ref(),
            &title,
        );
        std::fs::write(path, html).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &a.report_json {
        let text =
            serde_json::to_string_pretty(&result.report.to_json()).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &a.report_csv {
        let text = result.report.render_ops_csv()?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let mut failed = Vec::new();
    let mut checks = Vec::new();
    for arg in &a.expects {
        let (name, path) = name_file(arg, "--expect")?;
        let got = result.output(&name).ok_or_else(|| {
            if a.timing_only {
                format!("--expect {name}: timing-only runs produce no outputs")
            } else {
                format!("--expect {name}: the program has no output `{name}`")
            }
        })?;
        let c = compare(&name, got, &read_npy(&path)?, tol)?;
        if !c.pass {
            failed.push(name);
        }
        checks.push(c);
    }
    if a.json {
        let mut j = result.report.to_json();
        j["checks"] = serde_json::Value::Array(
            checks
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "name": c.name, "pass": c.pass, "max_abs": c.max_abs,
                        "max_rel": c.max_rel, "cosine": c.cosine, "tolerance": c.tolerance.to_string(),
                    })
                })
                .collect(),
        );
        outln!(
            "{}",
            serde_json::to_string_pretty(&j).map_err(|e| e.to_string())?
        );
    } else {
        for (name, t) in &result.outputs {
            outln!("output {name}: {}", t.describe());
        }
        for c in &checks {
            outln!("{c}");
        }
        out!("{}", result.report.render());
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "outputs differ from their references: {}",
            failed.join(", ")
        ))
    }
}
