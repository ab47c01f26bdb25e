//! `llmpu opt`: our `mlir-opt`. Reads IR text, verifies it, runs a pass pipeline, prints the IR.
//!
//! `llmpu opt file.mlir` (no passes) prints the input back unchanged when it is in canonical printed
//! form. Diagnostics (`file:line:col`, source line, caret) go to stderr; any failure exits non-zero.
//! `--mlir-verify` (a build with `--features mlir`) also has real MLIR parse and verify the input file
//! (diagnostics located in it), the IR after every pass and the output.

use std::path::PathBuf;

use crate::ir_dump::IrDumpArgs;
use llmpu_compiler::diag::render_verify_errors;
use llmpu_compiler::ir::{print_module_with, verify};
use llmpu_compiler::mlir;
use llmpu_compiler::parser::parse_module;
use llmpu_compiler::pass::{PassError, PassManager, PassManagerOptions};
use llmpu_compiler::passes::registry;

/// Arguments of `llmpu opt`.
#[derive(clap::Args, Debug)]
pub struct OptArgs {
    /// Input IR file (`-` reads stdin).
    #[arg(required_unless_present = "list_passes")]
    pub input: Option<PathBuf>,
    /// Comma-separated pass pipeline, e.g. `canonicalize,cse,dce`.
    #[arg(long, value_name = "PASSES", default_value = "")]
    pub passes: String,
    /// Write the result here instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// List the registered passes and exit.
    #[arg(long)]
    pub list_passes: bool,
    /// Also check with real MLIR (parse, verify, generic-form round trip): the input, the IR after
    /// every pass and the output. Needs a build with `--features mlir`.
    #[arg(long)]
    pub mlir_verify: bool,
    #[command(flatten)]
    pub dump: IrDumpArgs,
}

/// Runs `llmpu opt`.
pub fn run(args: &OptArgs) -> Result<(), String> {
    if args.list_passes {
        for p in registry() {
            outln!("{:<16} {}", p.name, p.description);
        }
        return Ok(());
    }
    let extra_verifier = if args.mlir_verify {
        Some(mlir::pass_verifier().map_err(|e| format!("--mlir-verify: {e}"))?)
    } else {
        None
    };
    let input = args.input.clone().unwrap_or_else(|| PathBuf::from("-"));
    let name = input.display().to_string();
    let src = if name == "-" {
        let bytes = llmpu_isa::limits::read_stream(std::io::stdin().lock())
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        String::from_utf8(bytes).map_err(|_| "stdin is not UTF-8 text".to_string())?
    } else {
        llmpu_isa::limits::read_to_string(&input).map_err(|e| format!("cannot read {name}: {e}"))?
    };
    if args.mlir_verify {
        mlir_check(&src, &name)?;
    }
    let mut module = parse_module(&src).map_err(|e| {
        eprint!("{}", e.diagnostic.render(&name, &src));
        format!("could not parse {name}")
    })?;
    verify(&module).map_err(|errs| {
        eprint!("{}", render_verify_errors(&errs, &name, &src));
        format!("{name} failed to verify ({} error(s))", errs.len())
    })?;
    let mut options = PassManagerOptions::from(&args.dump);
    options.verify_each = true;
    options.extra_verifier = extra_verifier;
    let print = options.print;
    let mut pm = PassManager::parse_pipeline(&args.passes, options).map_err(|e| e.to_string())?;
    pm.run(&mut module, &mut std::io::stderr())
        .map_err(|e| match e {
            PassError::VerifyFailed { pass, errors } => {
                eprint!("{}", render_verify_errors(&errors, &name, &src));
                format!("IR failed to verify after pass '{pass}'")
            }
            other => other.to_string(),
        })?;
    let text = print_module_with(&module, print);
    if args.mlir_verify {
        mlir_check(&text, "<output>")?;
    }
    match &args.output {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        None => {
            out!("{text}");
            Ok(())
        }
    }
}

/// Checks `text` with real MLIR; on failure MLIR's diagnostics, located in `text`, go to stderr.
pub fn mlir_check(text: &str, name: &str) -> Result<(), String> {
    mlir::check_text(text).map(|_| ()).map_err(|e| {
        eprint!("{}", e.render(name, text));
        format!("{name}: rejected by MLIR (--mlir-verify)")
    })
}
