//! Real MLIR as a second opinion on our IR: the text we print is parsed into an MLIR `Context` (the
//! `func` dialect registered, `builtin` always there, our `graph`/`tile`/`llmpu` dialects unregistered
//! but allowed), run through MLIR's verifier, printed back in MLIR's generic form, and that generic form
//! is parsed again and compared op by op with what we printed. It is the in-process equivalent of
//! `mlir-opt-22 --allow-unregistered-dialect` (`tests/mlir-opt-check.sh`).
//!
//! The checker itself needs the cargo feature `mlir` (melior + the LLVM/MLIR 22 dev packages); this
//! facade and its types are always compiled so callers need no `cfg`: without the feature every check
//! returns [`MlirError::Unavailable`], whose message says how to rebuild.
//!
//! Invariants:
//! - every MLIR diagnostic is returned as a [`MlirDiagnostic`] whose [`Span`] points into the text that
//!   was checked: parser diagnostics through MLIR's `file:line:col`, verifier diagnostics through the op
//!   they are attached to (each op's MLIR location is replaced by its pre-order index before verifying,
//!   and mapped back to the op's span from our parser);
//! - MLIR's output never reaches stderr (a diagnostic handler captures it); bad input (a NUL byte, text
//!   neither parser takes) is a typed error, never a panic;
//! - a check that returns `Ok` means: MLIR parsed the text, MLIR's verifier passed, and the module MLIR
//!   built, and the one it re-parsed from its own generic form, have the same ops (names, operand and
//!   result counts, regions, blocks and block arguments) in the same order as our parse of the text.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::diag::Diagnostic;
use crate::ir::{Location, Module, Span, print_module};
use crate::pass::ExtraVerifier;

/// True when this build has the `mlir` feature (real MLIR linked in).
pub const ENABLED: bool = cfg!(feature = "mlir");

/// The message of [`MlirError::Unavailable`].
pub const UNAVAILABLE: &str = "real MLIR is not linked into this build: rebuild with \
     `cargo build --release --features mlir` (needs the LLVM/MLIR 22 dev packages; see README, \
     \"Real MLIR\")";

/// Severity of an MLIR diagnostic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
    Remark,
    Note,
}

impl Severity {
    /// `error`, `warning`, `remark` or `note`.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Remark => "remark",
            Severity::Note => "note",
        }
    }
}

/// One diagnostic from MLIR, located in the checked text.
#[derive(Clone, Debug, PartialEq)]
pub struct MlirDiagnostic {
    pub severity: Severity,
    /// MLIR's message, verbatim.
    pub message: String,
    /// Where in the checked text (`None` when MLIR gave no usable location).
    pub span: Option<Span>,
    /// The op the diagnostic is attached to (verifier diagnostics): its name and its location in our IR
    /// (the ONNX node names).
    pub op: Option<(String, Location)>,
    /// MLIR's notes (the verbose "see current operation" dump is left out: the span points at the op).
    pub notes: Vec<MlirDiagnostic>,
}

impl MlirDiagnostic {
    /// This diagnostic as one of ours (`file:line:col: error: ...` with the source line and a caret);
    /// notes become `note:` lines with their own `line:col`.
    pub fn to_diagnostic(&self, src: &str) -> Diagnostic {
        let prefix = match self.severity {
            Severity::Error => String::new(),
            s => format!("{}: ", s.name()),
        };
        let mut d = Diagnostic::error(format!("{prefix}{} [MLIR]", self.message), self.span);
        if let Some((name, loc)) = &self.op
            && *loc != Location::Unknown
        {
            d.notes.push(format!("'{name}' op location: {loc}"));
        }
        for n in &self.notes {
            let at = n
                .span
                .map(|s| {
                    let (l, c) = line_col(src, s.start as usize);
                    format!("{l}:{c}: ")
                })
                .unwrap_or_default();
            d.notes.push(format!("{at}{}", n.message));
        }
        d
    }
}

/// 1-based line and column (in characters) of byte `offset` of `src` (clamped).
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut off = offset.min(src.len());
    while off > 0 && !src.is_char_boundary(off) {
        off -= 1;
    }
    let line_start = src[..off].rfind('\n').map_or(0, |i| i + 1);
    (
        src[..off].matches('\n').count() + 1,
        src[line_start..off].chars().count() + 1,
    )
}

/// Why a check failed.
#[derive(Debug, thiserror::Error)]
pub enum MlirError {
    /// Built without the `mlir` feature.
    #[error("{UNAVAILABLE}")]
    Unavailable,
    /// MLIR's C API takes NUL-terminated text.
    #[error("the text has a NUL byte at offset {offset}; MLIR cannot be given it")]
    NulByte { offset: usize },
    /// MLIR's parser (which also runs the verifier) rejected the text: syntax errors, located by
    /// MLIR's `line:col`, or verifier errors that could not be matched to our ops (located by the op's
    /// `loc(...)` in the text when it is unique).
    #[error("MLIR could not parse the module: {}", first_message(.0))]
    Parse(Vec<MlirDiagnostic>),
    /// MLIR parsed the text but our parser did not (so MLIR's ops cannot be matched to ours).
    #[error("MLIR parsed the module but our parser rejects it: {}", .0.message)]
    OurParse(Diagnostic),
    /// MLIR's module has a different shape than ours.
    #[error("MLIR's module differs from ours: {message}")]
    Structure { message: String, span: Option<Span> },
    /// MLIR's verifier failed; each diagnostic is located at the op it concerns.
    #[error("MLIR's verifier rejected the module: {}", first_message(.0))]
    Verify(Vec<MlirDiagnostic>),
    /// MLIR's generic printout of the module does not parse back to the same module.
    #[error("MLIR's generic form of the module does not round-trip: {message}")]
    GenericRoundTrip { message: String },
}

fn first_message(d: &[MlirDiagnostic]) -> String {
    match d {
        [] => "no diagnostic".into(),
        [one] => one.message.clone(),
        [first, rest @ ..] => format!("{} (and {} more)", first.message, rest.len()),
    }
}

impl MlirError {
    /// MLIR's diagnostics carried by this error (empty for the other kinds).
    pub fn diagnostics(&self) -> &[MlirDiagnostic] {
        match self {
            MlirError::Parse(d) | MlirError::Verify(d) => d,
            _ => &[],
        }
    }

    /// Renders the error against the checked text: `file:line:col: error: ...`, source line, caret.
    pub fn render(&self, file: &str, src: &str) -> String {
        let mut out = String::new();
        match self {
            MlirError::Parse(d) | MlirError::Verify(d) if !d.is_empty() => {
                for x in d {
                    out.push_str(&x.to_diagnostic(src).render(file, src));
                }
            }
            MlirError::OurParse(d) => out.push_str(&d.render(file, src)),
            MlirError::Structure { message, span } => {
                let d =
                    Diagnostic::error(format!("MLIR's module differs from ours: {message}"), *span);
                out.push_str(&d.render(file, src));
            }
            MlirError::NulByte { offset } => {
                let span = Span {
                    start: *offset as u32,
                    end: *offset as u32 + 1,
                };
                out.push_str(&Diagnostic::error(self.to_string(), Some(span)).render(file, src));
            }
            other => {
                let _ = writeln!(out, "{file}: error: {other}");
            }
        }
        out
    }
}

/// What a successful check saw.
#[derive(Clone, Debug, Default)]
pub struct MlirReport {
    /// Ops in the module, the `builtin.module` included.
    pub ops: usize,
    /// Op count per op name.
    pub op_counts: BTreeMap<String, usize>,
    pub regions: usize,
    pub blocks: usize,
    /// MLIR's generic form of the module (what `mlir-opt --mlir-print-op-generic` prints).
    pub generic: String,
    /// Warnings and remarks MLIR emitted on the way.
    pub warnings: Vec<MlirDiagnostic>,
}

/// Checks IR text with real MLIR (see the module docs). Render errors with [`MlirError::render`]
/// against the same `src`.
pub fn check_text(src: &str) -> Result<MlirReport, MlirError> {
    #[cfg(feature = "mlir")]
    {
        crate::mlir_melior::check_text(src)
    }
    #[cfg(not(feature = "mlir"))]
    {
        let _ = src;
        Err(MlirError::Unavailable)
    }
}

/// Prints `m` (large constants elided) and checks the text; returns the text with the result so
/// errors can be rendered against it.
pub fn check_module(m: &Module) -> (String, Result<MlirReport, MlirError>) {
    let text = print_module(m);
    let r = check_text(&text);
    (text, r)
}

/// Name of the pass-manager verifier.
pub const VERIFIER_NAME: &str = "MLIR";

fn verify_for_pass_manager(m: &Module) -> Result<(), String> {
    let (text, r) = check_module(m);
    r.map(|_| ()).map_err(|e| e.render("<printed IR>", &text))
}

/// The verifier for [`crate::pass::PassManagerOptions::extra_verifier`] (`--mlir-verify`): real MLIR
/// after the input and after every pass. [`MlirError::Unavailable`] without the `mlir` feature, so a
/// request for it is never silently ignored.
pub fn pass_verifier() -> Result<ExtraVerifier, MlirError> {
    if !ENABLED {
        return Err(MlirError::Unavailable);
    }
    Ok(ExtraVerifier {
        name: VERIFIER_NAME,
        check: verify_for_pass_manager,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_lines_and_characters() {
        let src = "ab\nçd e\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 3), (2, 1));
        // `ç` is two bytes: the byte after it is column 2.
        assert_eq!(line_col(src, 5), (2, 2));
        assert_eq!(line_col(src, 999), (3, 1));
    }

    #[cfg(not(feature = "mlir"))]
    #[test]
    fn without_the_feature_checks_say_how_to_rebuild() {
        let e = check_text("module {\n}\n").unwrap_err();
        assert!(matches!(e, MlirError::Unavailable));
        assert!(e.to_string().contains("--features mlir"), "{e}");
        assert!(pass_verifier().is_err());
    }
}
