//! The assembly lexer (`logos`).
//!
//! Tokens carry no payload: the parser reads each token's text through its [`Span`]. Whitespace
//! other than newlines is skipped, and so are comments (`;` or `//` to the end of the line);
//! newlines are tokens because the syntax is line-oriented. Characters no token accepts become
//! [`Tok::Error`] tokens, so lexing never fails and the parser reports them with their position.

use crate::diag::Span;
use logos::Logos;

/// A token kind.
#[derive(Logos, Clone, Copy, Debug, PartialEq, Eq)]
#[logos(skip r"[ \t\r\f]+")]
#[logos(skip(r";[^\n]*|//[^\n]*", allow_greedy = true))]
pub enum Tok {
    #[token("\n")]
    Newline,
    #[token(",")]
    Comma,
    #[token(":")]
    Colon,
    #[token("[")]
    LBracket,
    #[token("]")]
    RBracket,
    #[token("(")]
    LParen,
    #[token(")")]
    RParen,
    #[token("@")]
    At,
    #[token("-")]
    Minus,
    #[token("+")]
    Plus,
    /// `.name`: a directive.
    #[regex(r"\.[A-Za-z_][A-Za-z0-9_]*")]
    Directive,
    /// `.+N` / `.-N`: a branch target relative to the branch, in instructions.
    #[regex(r"\.[+-][0-9][0-9_]*")]
    Rel,
    /// Mnemonics, registers, labels, enum names, `sram.bf16` tile prefixes.
    #[regex(r"[A-Za-z_][A-Za-z0-9_.$]*")]
    Ident,
    /// Decimal, `0x` hex or `0b` binary integer; `_` separators allowed.
    #[regex(r"0[xX][0-9a-fA-F_]+|0[bB][01_]+|[0-9][0-9_]*")]
    Int,
    /// A decimal float with a fraction or an exponent.
    #[regex(r"[0-9][0-9_]*\.[0-9][0-9_]*([eE][+-]?[0-9]+)?|[0-9][0-9_]*[eE][+-]?[0-9]+")]
    Float,
    /// A double-quoted string with `\` escapes.
    #[regex(r#""([^"\\\n]|\\[^\n])*""#)]
    Str,
    /// A character no token accepts (or an unterminated string).
    Error,
}

impl Tok {
    /// How the token kind is described in "expected …, found …" messages.
    pub fn describe(self) -> &'static str {
        match self {
            Tok::Newline => "end of line",
            Tok::Comma => "`,`",
            Tok::Colon => "`:`",
            Tok::LBracket => "`[`",
            Tok::RBracket => "`]`",
            Tok::LParen => "`(`",
            Tok::RParen => "`)`",
            Tok::At => "`@`",
            Tok::Minus => "`-`",
            Tok::Plus => "`+`",
            Tok::Directive => "a directive",
            Tok::Rel => "a relative target",
            Tok::Ident => "a name",
            Tok::Int => "an integer",
            Tok::Float => "a number",
            Tok::Str => "a string",
            Tok::Error => "an invalid character",
        }
    }
}

/// Lexes a whole source text.
pub fn lex(src: &str) -> Vec<(Tok, Span)> {
    let mut lexer = Tok::lexer(src);
    let mut out = Vec::new();
    while let Some(t) = lexer.next() {
        let r = lexer.span();
        out.push((t.unwrap_or(Tok::Error), Span::new(r.start, r.end)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(s: &str) -> Vec<Tok> {
        lex(s).into_iter().map(|(t, _)| t).collect()
    }

    #[test]
    fn lexes_an_instruction_line_with_comment() {
        assert_eq!(
            kinds("vpu.add sram.f32[r1, r2], .+3 ; c\n"),
            [
                Tok::Ident,
                Tok::Ident,
                Tok::LBracket,
                Tok::Ident,
                Tok::Comma,
                Tok::Ident,
                Tok::RBracket,
                Tok::Comma,
                Tok::Rel,
                Tok::Newline
            ]
        );
    }

    #[test]
    fn numbers_and_strings() {
        assert_eq!(
            kinds(r#"0x1_000 1.5e3 7 "a\"b" // x"#),
            [Tok::Int, Tok::Float, Tok::Int, Tok::Str]
        );
        assert_eq!(kinds("\"abc"), [Tok::Error]);
        assert_eq!(kinds("#"), [Tok::Error]);
    }
}
