//! The IR-dump flags shared by `llmpu opt`, `import` and `compile` (`--print-ir-*`, `--dump-ir`,
//! `--stop-after`, ...), turned into the compiler's [`PassManagerOptions`]. They live in the CLI so
//! the compiler library does not depend on clap.

use std::path::PathBuf;

use llmpu_compiler::ir::PrintOptions;
use llmpu_compiler::pass::PassManagerOptions;

/// The IR-dump command-line flags, shared by `llmpu opt` and `llmpu compile`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct IrDumpArgs {
    /// Print the IR after every pass (to stderr).
    #[arg(long)]
    pub print_ir_after_all: bool,
    /// Print the IR before the named pass(es).
    #[arg(long, value_name = "PASS", value_delimiter = ',')]
    pub print_ir_before: Vec<String>,
    /// Print the IR after the named pass(es).
    #[arg(long, value_name = "PASS", value_delimiter = ',')]
    pub print_ir_after: Vec<String>,
    /// Write the IR before the first pass and after each pass to DIR/NN-<pass>.mlir.
    #[arg(long, value_name = "DIR")]
    pub dump_ir: Option<PathBuf>,
    /// Stop the pipeline after the named pass.
    #[arg(long, value_name = "PASS")]
    pub stop_after: Option<String>,
    /// Report the time spent in each pass (to stderr).
    #[arg(long)]
    pub time_passes: bool,
    /// Verify the IR after every pass even in release builds.
    #[arg(long)]
    pub verify_each: bool,
    /// Print large constants in full (resource trailer) instead of eliding them.
    #[arg(long)]
    pub print_large_constants: bool,
}

impl From<&IrDumpArgs> for PassManagerOptions {
    fn from(a: &IrDumpArgs) -> Self {
        PassManagerOptions {
            print_ir_after_all: a.print_ir_after_all,
            print_ir_before: a.print_ir_before.clone(),
            print_ir_after: a.print_ir_after.clone(),
            dump_ir: a.dump_ir.clone(),
            stop_after: a.stop_after.clone(),
            time_passes: a.time_passes,
            verify_each: a.verify_each || cfg!(debug_assertions),
            extra_verifier: None,
            print: PrintOptions {
                elide_large_constants: !a.print_large_constants,
            },
            record_stage: false,
        }
    }
}
