//! The pass manager: runs a pipeline of [`Pass`]es over a [`Module`], verifying after each pass (debug
//! builds, tests, or on request; plus an optional [`ExtraVerifier`] such as real MLIR) and producing
//! IR dumps (`print_ir_after_all`, `print_ir_before/after`, `dump_ir <dir>` with `00-input.mlir`,
//! `01-<pass>.mlir`, ...), `stop_after` and `time_passes`.
//!
//! Invariants: a failing pass or verifier error names the pass; an unknown pass name is an error that
//! lists every valid name; dumps are the exact printer output, so each dump parses back.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::ir::{Location, Module, PrintOptions, VerifyError, print_module_with, verify};

/// A transformation over a module.
pub trait Pass {
    /// The pass's flag name (`canonicalize`, `cse`, ...).
    fn name(&self) -> &'static str;
    /// Transforms the module.
    fn run(&mut self, module: &mut Module) -> Result<(), PassError>;
}

/// Errors of passes and of the pass manager.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// A pass name that is not registered.
    #[error("unknown pass '{name}'{hint}; valid passes: {valid}", hint = llmpu_isa::suggest::did_you_mean(.valid.split(", "), .name))]
    UnknownPass { name: String, valid: String },
    /// A pass reported a failure.
    #[error("pass '{pass}' failed at {loc}: {message}")]
    Failed {
        pass: String,
        message: String,
        loc: Location,
    },
    /// The IR did not verify after a pass (or before the first one, with pass `input`).
    #[error("IR failed to verify after pass '{pass}': {}", first_error(.errors))]
    VerifyFailed {
        pass: String,
        errors: Vec<VerifyError>,
    },
    /// The [`ExtraVerifier`] (e.g. real MLIR, `--mlir-verify`) rejected the IR after a pass (or the
    /// input, pass `input`); `message` is its rendered diagnostic.
    #[error("{verifier} rejected the IR after pass '{pass}':\n{message}")]
    ExtraVerifyFailed {
        pass: String,
        verifier: &'static str,
        message: String,
    },
    /// An option names a pass that is not in the pipeline.
    #[error("option {option} names pass '{pass}', which is not in the pipeline{hint} ({pipeline})", hint = llmpu_isa::suggest::did_you_mean(.pipeline.split(','), .pass))]
    NotInPipeline {
        option: &'static str,
        pass: String,
        pipeline: String,
    },
    /// Writing a dump failed.
    #[error("cannot write IR dump '{path}': {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn first_error(e: &[VerifyError]) -> String {
    match e.first() {
        Some(x) if e.len() == 1 => x.to_string(),
        Some(x) => format!("{x} (and {} more)", e.len() - 1),
        None => "no details".into(),
    }
}

impl PassError {
    /// A failure of pass `pass` at `loc`.
    pub fn failed(pass: &str, loc: Location, message: impl Into<String>) -> Self {
        PassError::Failed {
            pass: pass.to_string(),
            message: message.into(),
            loc,
        }
    }
}

/// A verifier run in addition to ours on the input and after every pass (whether or not
/// `verify_each` is set), such as real MLIR ([`crate::mlir::pass_verifier`]).
#[derive(Clone, Copy, Debug)]
pub struct ExtraVerifier {
    /// Named in errors (`MLIR rejected the IR after pass 'tile'`).
    pub name: &'static str,
    /// `Err` carries the rendered diagnostic.
    pub check: fn(&Module) -> Result<(), String>,
}

impl ExtraVerifier {
    fn run(&self, pass: &str, m: &Module) -> Result<(), PassError> {
        (self.check)(m).map_err(|message| PassError::ExtraVerifyFailed {
            pass: pass.into(),
            verifier: self.name,
            message,
        })
    }
}

/// Options of a pipeline run (the plain-data form of the `--print-ir-*` / `--dump-ir` flags).
#[derive(Clone, Debug)]
pub struct PassManagerOptions {
    pub print_ir_after_all: bool,
    pub print_ir_before: Vec<String>,
    pub print_ir_after: Vec<String>,
    /// Directory for `NN-<pass>.mlir` dumps (input is `00-input.mlir`).
    pub dump_ir: Option<PathBuf>,
    pub stop_after: Option<String>,
    pub time_passes: bool,
    /// Verify the input and the IR after every pass (default: on in debug builds).
    pub verify_each: bool,
    /// Also run this verifier on the input and after every pass.
    pub extra_verifier: Option<ExtraVerifier>,
    pub print: PrintOptions,
    /// Record the last pass run as the module attribute [`STAGE_ATTR`] (so a dump says where
    /// in the pipeline it was taken and `llmpu compile` can continue from it).
    pub record_stage: bool,
}

/// Module attribute naming the last backend-pipeline pass that ran on the module.
pub const STAGE_ATTR: &str = "llmpu.stage";

// Not derivable: `verify_each` follows the build profile (clippy sees `false` in release builds).
#[allow(clippy::derivable_impls)]
impl Default for PassManagerOptions {
    fn default() -> Self {
        PassManagerOptions {
            print_ir_after_all: false,
            print_ir_before: vec![],
            print_ir_after: vec![],
            dump_ir: None,
            stop_after: None,
            time_passes: false,
            verify_each: cfg!(debug_assertions),
            extra_verifier: None,
            print: PrintOptions::default(),
            record_stage: false,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct PassReport {
    /// Wall time per executed pass, in order.
    pub timings: Vec<(String, Duration)>,
    /// Set when `stop_after` ended the pipeline early.
    pub stopped_after: Option<String>,
}

/// A pipeline of passes plus options.
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
    pub options: PassManagerOptions,
}

impl PassManager {
    /// An empty pipeline.
    pub fn new(options: PassManagerOptions) -> Self {
        PassManager {
            passes: vec![],
            options,
        }
    }

    /// Builds a pipeline from a comma-separated list of registered pass names (`"canonicalize,cse"`).
    pub fn parse_pipeline(pipeline: &str, options: PassManagerOptions) -> Result<Self, PassError> {
        let names: Vec<&str> = pipeline
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        Self::from_names(&names, options)
    }

    /// Builds a pipeline from registered pass names.
    pub fn from_names(names: &[&str], options: PassManagerOptions) -> Result<Self, PassError> {
        let mut pm = PassManager::new(options);
        for n in names {
            pm.add(crate::passes::create(n)?);
        }
        Ok(pm)
    }

    /// Appends a pass.
    pub fn add(&mut self, pass: Box<dyn Pass>) {
        self.passes.push(pass);
    }

    /// Names of the passes in order.
    pub fn pass_names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    fn check_names(&self) -> Result<(), PassError> {
        let names = self.pass_names();
        let pipeline = names.join(",");
        let check = |option: &'static str, n: &String| {
            if names.contains(&n.as_str()) {
                Ok(())
            } else {
                Err(PassError::NotInPipeline {
                    option,
                    pass: n.clone(),
                    pipeline: pipeline.clone(),
                })
            }
        };
        for n in &self.options.print_ir_before {
            check("--print-ir-before", n)?;
        }
        for n in &self.options.print_ir_after {
            check("--print-ir-after", n)?;
        }
        if let Some(n) = &self.options.stop_after {
            check("--stop-after", n)?;
        }
        Ok(())
    }

    fn dump(
        &self,
        dir: &Option<PathBuf>,
        index: usize,
        name: &str,
        m: &Module,
    ) -> Result<(), PassError> {
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(|e| PassError::Io {
                path: dir.clone(),
                source: e,
            })?;
            let path = dir.join(format!("{index:02}-{name}.mlir"));
            std::fs::write(&path, print_module_with(m, self.options.print))
                .map_err(|e| PassError::Io { path, source: e })?;
        }
        Ok(())
    }

    /// Runs the pipeline. IR printouts and the timing report go to `log` (stderr for the CLI).
    pub fn run(&mut self, m: &mut Module, log: &mut dyn Write) -> Result<PassReport, PassError> {
        self.check_names()?;
        let opts = self.options.clone();
        let mut report = PassReport::default();
        if opts.verify_each {
            verify(m).map_err(|errors| PassError::VerifyFailed {
                pass: "input".into(),
                errors,
            })?;
        }
        if let Some(v) = &opts.extra_verifier {
            v.run("input", m)?;
        }
        self.dump(&opts.dump_ir, 0, "input", m)?;
        let total = Instant::now();
        for (i, pass) in self.passes.iter_mut().enumerate() {
            let name = pass.name();
            if opts.print_ir_before.iter().any(|n| n == name) {
                let _ = write!(
                    log,
                    "// -----// IR Dump Before {name} //----- //\n{}\n",
                    print_module_with(m, opts.print)
                );
            }
            let t = Instant::now();
            pass.run(m)?;
            let dt = t.elapsed();
            if opts.record_stage {
                let top = m.top();
                m.set_attr(top, STAGE_ATTR, crate::ir::Attribute::str(name));
            }
            report.timings.push((name.to_string(), dt));
            if opts.verify_each {
                verify(m).map_err(|errors| PassError::VerifyFailed {
                    pass: name.into(),
                    errors,
                })?;
            }
            if let Some(v) = &opts.extra_verifier {
                v.run(name, m)?;
            }
            if opts.print_ir_after_all || opts.print_ir_after.iter().any(|n| n == name) {
                let _ = write!(
                    log,
                    "// -----// IR Dump After {name} //----- //\n{}\n",
                    print_module_with(m, opts.print)
                );
            }
            if let Some(dir) = &opts.dump_ir {
                let path = dir.join(format!("{:02}-{name}.mlir", i + 1));
                std::fs::write(&path, print_module_with(m, opts.print))
                    .map_err(|e| PassError::Io { path, source: e })?;
            }
            if opts.stop_after.as_deref() == Some(name) {
                report.stopped_after = Some(name.to_string());
                break;
            }
        }
        if opts.time_passes {
            let _ = writeln!(log, "// ===--- Pass execution timing report ---=== //");
            for (n, d) in &report.timings {
                let _ = writeln!(log, "//   {:>10.3} ms  {n}", d.as_secs_f64() * 1e3);
            }
            let _ = writeln!(
                log,
                "//   {:>10.3} ms  total",
                total.elapsed().as_secs_f64() * 1e3
            );
        }
        Ok(report)
    }
}
