//! `llmpu import model.onnx`: imports an ONNX model into the `graph` dialect, runs the import pipeline
//! (or `--passes`) and prints the IR. Symbolic dims are bound with `--dim NAME=N` / `--shape
//! INPUT=AxB`; unbound ones stay symbolic (`tensor<?x64xf32, #graph.dims<"seq", 64>>`) unless
//! `--static` is given. All unsupported nodes are reported at once. `--mlir-verify` (a build with
//! `--features mlir`) has real MLIR check the imported IR, the IR after every pass and the output.

use std::path::PathBuf;

use crate::ir_dump::IrDumpArgs;
use llmpu_compiler::ir::print_module_with;
use llmpu_compiler::mlir;
use llmpu_compiler::onnx::{
    ImportOptions, import_file, import_pipeline, parse_dim_arg, parse_shape_arg,
};
use llmpu_compiler::pass::{PassManager, PassManagerOptions};

/// Arguments of `llmpu import`.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The ONNX model (`model.onnx`; external data is read from its folder).
    pub model: PathBuf,
    /// Binds a symbolic dim: `--dim sequence_length=128` (repeatable).
    #[arg(long = "dim", value_name = "NAME=N")]
    pub dims: Vec<String>,
    /// Sets an input's full shape: `--shape input_ids=1x128` (repeatable).
    #[arg(long = "shape", value_name = "INPUT=AxB")]
    pub shapes: Vec<String>,
    /// Comma-separated passes to run after import (default: the import pipeline; "" for none).
    #[arg(long, value_name = "PASSES")]
    pub passes: Option<String>,
    /// Fail on symbolic dims that are not bound instead of keeping them in the IR.
    #[arg(long = "static")]
    pub require_static: bool,
    /// Do not fold constant subgraphs while importing (leave them to the `fold-constants` pass).
    #[arg(long)]
    pub no_fold: bool,
    /// Write the IR here instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also check with real MLIR (parse, verify, generic-form round trip): the imported IR, the IR
    /// after every pass and the output. Needs a build with `--features mlir`.
    #[arg(long)]
    pub mlir_verify: bool,
    #[command(flatten)]
    pub dump: IrDumpArgs,
}

/// Builds import options from `--dim` / `--shape` values.
pub fn import_options(
    dims: &[String],
    shapes: &[String],
    allow_symbolic: bool,
) -> Result<ImportOptions, String> {
    let mut o = ImportOptions {
        allow_symbolic,
        on_warning: Some(llmpu_compiler::onnx::print_warning),
        ..Default::default()
    };
    for d in dims {
        let (n, v) = parse_dim_arg(d)?;
        o.user_dims.push(n.clone());
        o.dims.insert(n, v);
    }
    for s in shapes {
        let (n, v) = parse_shape_arg(s)?;
        o.shapes.insert(n, v);
    }
    Ok(o)
}

/// Runs `llmpu import`.
pub fn run(args: &ImportArgs) -> Result<(), String> {
    let extra_verifier = if args.mlir_verify {
        Some(mlir::pass_verifier().map_err(|e| format!("--mlir-verify: {e}"))?)
    } else {
        None
    };
    let mut opts = import_options(&args.dims, &args.shapes, !args.require_static)?;
    opts.fold = !args.no_fold;
    let mut module = import_file(&args.model, &opts).map_err(|e| match e {
        // Already names the file.
        llmpu_compiler::onnx::ImportError::Io { .. } => e.to_string(),
        // `import` (alone) also binds whole input shapes.
        llmpu_compiler::onnx::ImportError::UnboundDims(_) => format!(
            "{}: {e} (or --shape INPUT=AxB for a whole input)",
            args.model.display()
        ),
        e => format!("{}: {e}", args.model.display()),
    })?;
    let pipeline = match &args.passes {
        Some(p) => p.clone(),
        None => import_pipeline().join(","),
    };
    let mut options = PassManagerOptions::from(&args.dump);
    options.verify_each = true;
    options.extra_verifier = extra_verifier;
    let print = options.print;
    let mut pm = PassManager::parse_pipeline(&pipeline, options).map_err(|e| e.to_string())?;
    pm.run(&mut module, &mut std::io::stderr())
        .map_err(|e| e.to_string())?;
    let text = print_module_with(&module, print);
    if args.mlir_verify {
        let name = args
            .output
            .as_ref()
            .map_or("<output>".into(), |p| p.display().to_string());
        crate::cmd_opt::mlir_check(&text, &name)?;
    }
    match &args.output {
        Some(p) => {
            std::fs::write(p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))
        }
        None => {
            out!("{text}");
            Ok(())
        }
    }
}
