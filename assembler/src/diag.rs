//! Located assembler errors and their rustc-style rendering.
//!
//! Every error is an [`AsmError`]: a typed [`ErrorKind`], an optional source [`Span`] (byte range
//! in the assembled text; absent for errors raised through the programmatic [`crate::Assembler`]
//! API without a position), an optional help line and an optional secondary note with its own span
//! ("first defined here"). [`Diagnostics`] holds every error of one file together with the file
//! name and source text, and renders them as
//!
//! ```text
//! prog.s:3:5: error: unknown mnemonic `hlt`
//!   |
//! 3 |     hlt
//!   |     ^^^
//!   = help: did you mean `halt`?
//! ```
//!
//! Invariant: errors are kept sorted by position (errors without a span last), so the rendering is
//! deterministic and reads top to bottom.

use llmpu_isa::{EncodeError, ProgramError};
use std::fmt;

/// A byte range of the source text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ErrorKind {
    #[error("unexpected character `{0}`")]
    UnexpectedChar(String),
    #[error("unterminated string")]
    UnterminatedString,
    #[error("invalid escape `{0}` in string")]
    BadEscape(String),
    #[error("expected {expected}, found {found}")]
    Expected { expected: String, found: String },
    #[error("integer literal `{0}` is too large")]
    IntTooLarge(String),
    #[error("literal `{literal}` is out of range for {context} (allowed {allowed})")]
    LiteralOutOfRange {
        literal: String,
        context: String,
        allowed: String,
    },
    #[error("unknown mnemonic `{0}`")]
    UnknownMnemonic(String),
    #[error("`{mnemonic}` takes {expected} operand{s} ({operands}), found {found}", s = if *expected == 1 { "" } else { "s" })]
    OperandCount {
        mnemonic: &'static str,
        expected: usize,
        operands: String,
        found: usize,
    },
    #[error(
        "value {value} is out of range for field `{field}` of `{mnemonic}` (allowed {min}..={max})"
    )]
    OutOfRange {
        mnemonic: &'static str,
        field: &'static str,
        value: i128,
        min: i128,
        max: i128,
    },
    #[error("field `{field}` of `{mnemonic}` expects {expected}, found {found}")]
    BadOperand {
        mnemonic: &'static str,
        field: &'static str,
        expected: String,
        found: String,
    },
    #[error("unknown label `{name}` in core {core}")]
    UnknownLabel { name: String, core: u32 },
    #[error("label `{name}` is defined twice in core {core}")]
    DuplicateLabel { name: String, core: u32 },
    #[error("unknown directive `{0}`")]
    UnknownDirective(String),
    #[error("{0}")]
    BadTarget(String),
    #[error("the target is set twice")]
    DuplicateTarget,
    #[error("{0}")]
    Kv(String),
    #[error("unknown element type `{0}`")]
    UnknownDtype(String),
    #[error("`{0}` outside a `.data` segment")]
    NoDataSegment(String),
    #[error("bad `.hex` string: {0}")]
    BadHex(String),
    #[error("value {value} does not fit in {dtype} (allowed {min}..={max})")]
    DataRange {
        dtype: &'static str,
        value: i128,
        min: i128,
        max: i128,
    },
    #[error("cannot read `{path}`: {message}")]
    Incbin { path: String, message: String },
    #[error("`{a}` at {a_addr:#x}..{a_end:#x} overlaps `{b}` at {b_addr:#x}..{b_end:#x} in HBM")]
    Overlap {
        a: String,
        a_addr: u64,
        a_end: u64,
        b: String,
        b_addr: u64,
        b_end: u64,
    },
    #[error("{what} `{name}` at HBM {addr:#x}+{len:#x} is outside HBM ({size:#x} bytes)")]
    OutsideHbm {
        what: &'static str,
        name: String,
        addr: u64,
        len: u64,
        size: u64,
    },
    #[error("{what} `{name}` at HBM {addr:#x} is not {align}-byte aligned")]
    Misaligned {
        what: &'static str,
        name: String,
        addr: u64,
        align: u64,
    },
    #[error("tensor `{0}` is too large (its byte size overflows 64 bits)")]
    TensorTooLarge(String),
    #[error("the name `{0}` is used twice (data and I/O names share one namespace)")]
    DuplicateName(String),
    #[error("{what} name {name:?} is empty or contains a NUL character")]
    BadName { what: &'static str, name: String },
    #[error("core {core} skips core {next}: cores are numbered densely from 0")]
    CoreNotDense { core: u32, next: u32 },
    #[error("core {0} is listed twice")]
    DuplicateCore(u32),
    #[error("program uses {used} cores but target `{target}` has {available}")]
    TooManyCores {
        used: usize,
        available: u32,
        target: String,
    },
    #[error("branch to {dest} is outside core {core}'s stream of {len} instructions")]
    BranchOutOfRange { core: u32, dest: i64, len: usize },
    #[error("`{0}` has no branch-target field")]
    NoTargetField(&'static str),
    #[error("{0}")]
    Encode(EncodeError),
    #[error("{0}")]
    Program(ProgramError),
    #[error("{0}")]
    Io(String),
}

/// One located error.
#[derive(Clone, Debug, PartialEq)]
pub struct AsmError {
    pub kind: ErrorKind,
    pub span: Option<Span>,
    pub help: Option<String>,
    pub note: Option<(Span, String)>,
}

impl AsmError {
    pub fn new(kind: ErrorKind, span: Option<Span>) -> AsmError {
        AsmError {
            kind,
            span,
            help: None,
            note: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> AsmError {
        self.help = Some(help.into());
        self
    }

    pub fn with_note(mut self, span: Option<Span>, note: impl Into<String>) -> AsmError {
        if let Some(span) = span {
            self.note = Some((span, note.into()));
        }
        self
    }
}

impl fmt::Display for AsmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

impl std::error::Error for AsmError {}

/// All errors of one assembly, with the text they point into.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostics {
    file: String,
    source: String,
    /// Byte offset of the start of every line of `source`, so that locating an error is a binary
    /// search, not a scan (rendering stays linear in the number of errors).
    line_starts: Vec<usize>,
    errors: Vec<AsmError>,
}

impl Diagnostics {
    /// Wraps errors of `source` (named `file` in the rendering). Sorts them by position.
    pub fn new(
        file: impl Into<String>,
        source: impl Into<String>,
        mut errors: Vec<AsmError>,
    ) -> Self {
        errors.sort_by_key(|e| e.span.map_or((1, 0, 0), |s| (0, s.start, s.end)));
        let source = source.into();
        let line_starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Diagnostics {
            file: file.into(),
            source,
            line_starts,
            errors,
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn errors(&self) -> &[AsmError] {
        &self.errors
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = char_floor(&self.source, offset);
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        (line, self.source[start..offset].chars().count() + 1)
    }

    /// The text of 1-based line `line`, without its line ending.
    fn line_text(&self, line: usize) -> &str {
        let Some(&start) = self.line_starts.get(line - 1) else {
            return "";
        };
        let end = self
            .line_starts
            .get(line)
            .map_or(self.source.len(), |&next| next - 1);
        let text = &self.source[start..end];
        text.strip_suffix('\r').unwrap_or(text)
    }

    fn snippet(&self, f: &mut fmt::Formatter<'_>, span: Span, label: &str) -> fmt::Result {
        let (line, col) = self.line_col(span.start);
        let text = self.line_text(line);
        let w = line.to_string().len();
        let prefix: String = text
            .chars()
            .take(col - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let start = span.start.min(self.source.len());
        let line_start = self
            .source
            .get(..start)
            .and_then(|b| b.rfind('\n'))
            .map_or(0, |i| i + 1);
        let end = span.end.min(line_start + text.len()).max(start);
        let n = self
            .source
            .get(start..end)
            .map_or(1, |s| s.chars().count())
            .max(1);
        writeln!(f, "{:w$} |", "")?;
        writeln!(f, "{line:w$} | {text}")?;
        let label = if label.is_empty() {
            String::new()
        } else {
            format!(" {label}")
        };
        writeln!(f, "{:w$} | {prefix}{}{label}", "", "^".repeat(n))
    }
}

/// `offset` clamped to `source` and moved back to a character boundary.
fn char_floor(source: &str, offset: usize) -> usize {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// 1-based line and column (in characters) of a byte offset in `source` (a scan; a
/// [`Diagnostics`] answers the same from its line index).
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = char_floor(source, offset);
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.errors {
            match e.span {
                Some(span) => {
                    let (line, col) = self.line_col(span.start);
                    writeln!(f, "{}:{line}:{col}: error: {}", self.file, e.kind)?;
                    self.snippet(f, span, "")?;
                }
                None => writeln!(f, "{}: error: {}", self.file, e.kind)?,
            }
            if let Some((span, note)) = &e.note {
                let (line, col) = self.line_col(span.start);
                writeln!(f, "{}:{line}:{col}: note: {note}", self.file)?;
                self.snippet(f, *span, "")?;
            }
            if let Some(help) = &e.help {
                writeln!(f, "  = help: {help}")?;
            }
            writeln!(f)?;
        }
        let n = self.errors.len();
        write!(
            f,
            "error: could not assemble `{}` ({n} error{})",
            self.file,
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}

pub use llmpu_isa::suggest::{closest, edit_distance};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let s = "ab\nçd x";
        assert_eq!(line_col(s, 0), (1, 1));
        assert_eq!(line_col(s, 3), (2, 1));
        assert_eq!(line_col(s, s.find('x').unwrap()), (2, 4));
    }

    #[test]
    fn the_line_index_agrees_with_the_scan() {
        let s = "ab\r\nçd x\n\nlast";
        let d = Diagnostics::new("f.s", s, vec![]);
        for off in 0..=s.len() + 2 {
            assert_eq!(d.line_col(off), line_col(s, off), "offset {off}");
        }
        assert_eq!(d.line_text(1), "ab");
        assert_eq!(d.line_text(2), "çd x");
        assert_eq!(d.line_text(3), "");
        assert_eq!(d.line_text(4), "last");
    }
}
