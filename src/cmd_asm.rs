//! `llmpu asm` and `llmpu disasm`: assembly text to an LLMPU binary and back. The disassembly
//! re-assembles to the byte-identical binary.

use crate::load;
use llmpu_isa::{Target, binary};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct AsmArgs {
    /// Assembly source.
    input: PathBuf,
    /// Output binary.
    #[arg(short, long)]
    output: PathBuf,
    /// Target preset or `.toml` file; overrides the source's `.target`.
    #[arg(long)]
    target: Option<String>,
}

#[derive(clap::Args)]
pub struct DisasmArgs {
    /// LLMPU binary.
    input: PathBuf,
    /// Write the text here instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

pub fn asm(a: &AsmArgs) -> Result<(), String> {
    let target = a
        .target
        .as_deref()
        .map(Target::resolve)
        .transpose()
        .map_err(|e| e.to_string())?;
    let program = load::assemble(&a.input, target)?;
    let bytes = binary::write(&program).map_err(|e| e.to_string())?;
    std::fs::write(&a.output, &bytes)
        .map_err(|e| format!("cannot write {}: {e}", a.output.display()))?;
    let insts: usize = program.cores.iter().map(Vec::len).sum();
    eprintln!(
        "wrote {} ({} bytes: {} cores, {} instructions, {} data bytes, target {})",
        a.output.display(),
        bytes.len(),
        program.cores.len(),
        insts,
        program.data.iter().map(|d| d.bytes.len()).sum::<usize>(),
        program.target.name
    );
    Ok(())
}

pub fn disasm(a: &DisasmArgs) -> Result<(), String> {
    let program = binary::read_file(&a.input).map_err(|e| match e {
        // Already names the file.
        binary::BinaryError::Io { .. } => e.to_string(),
        e => format!("{}: {e}", a.input.display()),
    })?;
    let text = llmpu_asm::disassemble(&program);
    match &a.output {
        Some(p) => {
            std::fs::write(p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))
        }
        None => {
            out!("{text}");
            Ok(())
        }
    }
}
