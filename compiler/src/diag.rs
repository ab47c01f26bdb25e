//! Human-readable diagnostics: `file:line:col: error: message`, the source line, and a caret under the
//! offending span (clang/MLIR style). Used for parse errors, verifier errors and pass failures.
//!
//! Invariant: rendering never panics, whatever the span (out-of-range spans are clamped).

use std::fmt::Write;

use crate::ir::{Location, Span, VerifyError};

/// A message with an optional source span.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub message: String,
    pub span: Option<Span>,
    /// Extra lines printed after the snippet.
    pub notes: Vec<String>,
}

impl Diagnostic {
    /// An error diagnostic.
    pub fn error(message: impl Into<String>, span: Option<Span>) -> Self {
        Diagnostic {
            message: message.into(),
            span,
            notes: vec![],
        }
    }

    /// Renders `file:line:col: error: message` + source line + caret (or `file: error: message` without
    /// a span).
    pub fn render(&self, file: &str, src: &str) -> String {
        let mut out = String::new();
        match self.span {
            Some(span) => {
                let start = (span.start as usize).min(src.len());
                let start = floor_char_boundary(src, start);
                let line_start = src[..start].rfind('\n').map_or(0, |i| i + 1);
                let line_end = src[start..].find('\n').map_or(src.len(), |i| start + i);
                let line_no = src[..start].matches('\n').count() + 1;
                let col = src[line_start..start].chars().count() + 1;
                let _ = writeln!(out, "{file}:{line_no}:{col}: error: {}", self.message);
                let line = &src[line_start..line_end];
                let _ = writeln!(out, "{line}");
                let mut pad = String::new();
                for ch in src[line_start..start].chars() {
                    pad.push(if ch == '\t' { '\t' } else { ' ' });
                }
                let end = (span.end as usize).clamp(start, line_end);
                let width = src[start..floor_char_boundary(src, end)]
                    .chars()
                    .count()
                    .max(1);
                let _ = writeln!(out, "{pad}^{}", "~".repeat(width - 1));
            }
            None => {
                let _ = writeln!(out, "{file}: error: {}", self.message);
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl From<&VerifyError> for Diagnostic {
    fn from(e: &VerifyError) -> Self {
        let mut d = Diagnostic::error(format!("'{}' op {}", e.op_name, e.message), e.span);
        if e.loc != Location::Unknown {
            d.notes.push(format!("op location: {}", e.loc));
        }
        d
    }
}

/// Renders every verifier error (spans without source are rendered by location only).
pub fn render_verify_errors(errs: &[VerifyError], file: &str, src: &str) -> String {
    errs.iter()
        .map(|e| Diagnostic::from(e).render(file, src))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_line_column_source_and_caret() {
        let src = "a\nbcd efg\n";
        let d = Diagnostic::error("bad", Some(Span { start: 6, end: 9 }));
        assert_eq!(
            d.render("f.mlir", src),
            "f.mlir:2:5: error: bad\nbcd efg\n    ^~~\n"
        );
    }

    #[test]
    fn out_of_range_span_is_clamped() {
        let d = Diagnostic::error(
            "eof",
            Some(Span {
                start: 100,
                end: 200,
            }),
        );
        assert!(d.render("f", "abc").starts_with("f:1:4: error: eof"));
    }
}
