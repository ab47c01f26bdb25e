//! `llmpu`: the command-line front of the toolchain. Each subcommand lives in its own `cmd_*`
//! module; `main` only parses arguments, dispatches and turns errors into a message and exit code 1.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

// First, so that its `out!`/`outln!` macros are in scope in every command module.
#[macro_use]
mod out;

mod cmd_asm;
mod cmd_bench;
mod cmd_check;
mod cmd_compile;
mod cmd_conformance;
mod cmd_generate;
mod cmd_import;
mod cmd_opt;
mod cmd_run;
mod cmd_serve;
mod cmd_targets;
mod emulate;
mod import;
mod ir_dump;
mod load;
mod progress;
mod speculate;
mod verify;

/// LLMPU toolchain: compile ONNX transformers to the LLMPU ISA, inspect the IR, run binaries on the
/// emulator.
#[derive(Parser)]
#[command(name = "llmpu", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Largest tensor the host materializes (reference interpreter values, random and `.npy`
    /// inputs, emulator outputs), in bytes; suffixes K, M, G, T.
    #[arg(long, global = true, value_name = "BYTES", value_parser = llmpu_isa::limits::parse_bytes,
          default_value = "4G")]
    host_memory_limit: u64,
    /// Largest file read whole (models, binaries, assembly, `.incbin`, `.npy`, targets, traces),
    /// in bytes; suffixes K, M, G, T. Only regular files are read.
    #[arg(long, global = true, value_name = "BYTES", value_parser = llmpu_isa::limits::parse_bytes,
          default_value = "4G")]
    max_file_size: u64,
}

#[derive(Subcommand)]
enum Command {
    /// List the built-in machine configurations, or print one as TOML.
    Targets(cmd_targets::TargetsArgs),
    /// Assemble LLMPU assembly into a binary.
    Asm(cmd_asm::AsmArgs),
    /// Print a binary as assembly that re-assembles to the identical binary.
    Disasm(cmd_asm::DisasmArgs),
    /// Run a binary on the emulator: outputs, checks and the cost report.
    Run(cmd_run::RunArgs),
    /// Read IR text, run passes on it and print the result (our `mlir-opt`).
    Opt(cmd_opt::OptArgs),
    /// Compile a model (ONNX or graph IR) to an LLMPU binary.
    Compile(cmd_compile::CompileArgs),
    /// Compile, run on the emulator and compare with the model's test data (or the interpreter).
    Check(cmd_check::CheckArgs),
    /// Compile and emulate the performance workloads; compare with their lower bounds.
    Bench(cmd_bench::BenchArgs),
    /// Greedy generation: prefill, then decode steps with the KV cache resident in emulated HBM.
    Generate(cmd_generate::GenerateArgs),
    /// Serving simulation: a request trace, continuous batching over a paged KV pool; reports
    /// throughput, TTFT/TPOT percentiles and KV utilization.
    #[command(name = "serve-sim")]
    ServeSim(cmd_serve::ServeArgs),
    /// Import an ONNX model and print its `graph`-dialect IR.
    Import(cmd_import::ImportArgs),
    /// Run ONNX backend-test case folders through import + a backend and compare outputs.
    Conformance(cmd_conformance::ConformanceArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    llmpu_isa::limits::set_host_bytes(cli.host_memory_limit);
    llmpu_isa::limits::set_max_file_bytes(cli.max_file_size);
    let result = match &cli.command {
        Command::Targets(a) => cmd_targets::run(a),
        Command::Asm(a) => cmd_asm::asm(a),
        Command::Disasm(a) => cmd_asm::disasm(a),
        Command::Run(a) => cmd_run::run(a),
        Command::Opt(a) => cmd_opt::run(a),
        Command::Compile(a) => cmd_compile::run(a),
        Command::Check(a) => cmd_check::run(a),
        Command::Bench(a) => cmd_bench::run(a),
        Command::Generate(a) => cmd_generate::run(a),
        Command::ServeSim(a) => cmd_serve::run(a),
        Command::Import(a) => cmd_import::run(a),
        Command::Conformance(a) => cmd_conformance::run(a),
    };
    out::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}
