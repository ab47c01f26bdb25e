//! Loading programs for the commands: an assembly file (`.s`) is assembled on the fly, anything
//! else is read as an LLMPU binary.

use llmpu_isa::{Program, Target, binary};
use std::path::Path;

/// Assembles `path`, optionally overriding its target.
pub fn assemble(path: &Path, target: Option<Target>) -> Result<Program, String> {
    let options = llmpu_asm::Options { target };
    llmpu_asm::assemble_file(path, &options).map_err(|d| d.to_string().trim_end().to_string())
}

/// Reads a binary, or assembles a `.s` file (for `target` if given). A binary given a `target`
/// other than the one it was built for is an error unless `retarget` (then it runs with that
/// target's timing, sizes and energy).
pub fn program_for(path: &Path, target: Option<Target>, retarget: bool) -> Result<Program, String> {
    if path.extension().is_some_and(|e| e == "s" || e == "asm") {
        return assemble(path, target);
    }
    let mut p = binary::read_file(path).map_err(|e| match e {
        // Already names the file.
        binary::BinaryError::Io { .. } => e.to_string(),
        e => format!("{}: {e}", path.display()),
    })?;
    if let Some(t) = target {
        if t != p.target && !retarget {
            return Err(format!(
                "{}: built for target `{}`, not `{}` (its code is scheduled and laid out for \
                 its own target): compile it again with --target {}, or pass --retarget to run \
                 the same instructions on `{}`",
                path.display(),
                p.target.name,
                t.name,
                t.name,
                t.name
            ));
        }
        p.target = t;
        p.validate()
            .map_err(|e| format!("{}: with the new target: {e}", path.display()))?;
    }
    Ok(p)
}
