//! Loading programs for the commands: an assembly file (`.s`) is assembled on the fly, anything
//! else is read as an LLMPU binary.

use llmpu_isa::{Program, Target, binary};
use std::path::Path;

/// Assembles `path`, optionally overriding its target.
pub fn assemble(path: &Path, target: Option<Target>) -> Result<Program, String> {
    let options = llmpu_asm::Options { target };
    llmpu_asm::assemble_file(path, &options).map_err(|d| d.to_string().trim_end().to_string())
}

/// Reads a binary, or assembles a `.s` file.
pub fn program(path: &Path, target: Option<Target>) -> Result<Program, String> {
    if path.extension().is_some_and(|e| e == "s" || e == "asm") {
        return assemble(path, target);
    }
    let mut p = binary::read_file(path).map_err(|e| match e {
        // Already names the file.
        binary::BinaryError::Io { .. } => e.to_string(),
        e => format!("{}: {e}", path.display()),
    })?;
    if let Some(t) = target {
        p.target = t;
        p.validate()
            .map_err(|e| format!("{}: with the new target: {e}", path.display()))?;
    }
    Ok(p)
}
