//! LLMPU assembler: assembly text ⇄ [`Program`].
//!
//! - [`assemble`] parses text (syntax in `spec/assembly.md`) and returns a validated program or
//!   [`Diagnostics`] listing every error with its location, rendered like rustc.
//! - [`disassemble`] prints a program as canonical text that re-assembles to a byte-identical
//!   binary.
//! - [`Assembler`] is the programmatic builder the compiler's code emitter uses; the text front
//!   end drives the same builder, so both paths share label resolution and every check.
//!
//! Nothing here lists instructions: operands are parsed and printed from the ISA table
//! (`llmpu_isa::INSTRUCTIONS`) by field kind.

pub mod builder;
pub mod diag;
pub mod disasm;
pub mod lexer;
pub mod parser;

pub use builder::Assembler;
pub use diag::{AsmError, Diagnostics, ErrorKind, Span};
pub use disasm::disassemble;

use llmpu_isa::{Program, Target};
use std::path::Path;

/// Options for [`assemble_with`].
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Overrides the source's `.target` (a command-line `--target`).
    pub target: Option<Target>,
}

/// Assembles `src`; `path` names the file in diagnostics and anchors relative `.incbin` and
/// `.target "file.toml"` paths. Without a `.target` directive the default target is used.
pub fn assemble(src: &str, path: &Path) -> Result<Program, Diagnostics> {
    assemble_with(src, path, &Options::default())
}

/// [`assemble`] with options.
pub fn assemble_with(src: &str, path: &Path, options: &Options) -> Result<Program, Diagnostics> {
    let mut asm = Assembler::new(Target::default_target());
    let base = path.parent().unwrap_or(Path::new("."));
    parser::parse_into(src, base, &mut asm);
    if let Some(t) = &options.target {
        asm.override_target(t.clone());
    }
    asm.finish_errors()
        .map_err(|errors| Diagnostics::new(path.display().to_string(), src, errors))
}

/// Reads and assembles a file.
pub fn assemble_file(path: &Path, options: &Options) -> Result<Program, Diagnostics> {
    match llmpu_isa::limits::read_to_string(path) {
        Ok(src) => assemble_with(&src, path, options),
        Err(e) => Err(Diagnostics::new(
            path.display().to_string(),
            "",
            vec![AsmError::new(
                ErrorKind::Io(format!("cannot read {}: {e}", path.display())),
                None,
            )],
        )),
    }
}
