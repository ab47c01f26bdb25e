//! The IR text lexer (`logos`). Produces `(start, Tok, end)` triples for the lalrpop grammar.
//!
//! Invariants: never panics; any byte sequence yields tokens or a [`LexError`] with its byte offset.
//! Shape prefixes such as `16x?x` are one [`Tok::Dims`] token so that `tensor<16x?xf32>` needs no
//! context-sensitive re-lexing. `//` comments and whitespace are skipped.

use logos::Logos;

/// A token.
#[derive(Logos, Clone, Debug, PartialEq)]
#[logos(skip r"[ \t\r\n\f]+")]
#[logos(skip(r"//[^\n]*", allow_greedy = true))]
pub enum Tok<'s> {
    #[token("(")]
    LParen,
    #[token(")")]
    RParen,
    #[token("{")]
    LBrace,
    #[token("}")]
    RBrace,
    #[token("[")]
    LBracket,
    #[token("]")]
    RBracket,
    #[token("<")]
    Less,
    #[token(">")]
    Greater,
    #[token(",")]
    Comma,
    #[token(":")]
    Colon,
    #[token("=")]
    Equal,
    #[token("->")]
    Arrow,
    #[token("?")]
    Question,
    #[token("{-#")]
    FileMetadataBegin,
    #[token("#-}")]
    FileMetadataEnd,

    #[token("module")]
    KwModule,
    #[token("func.func")]
    KwFunc,
    #[token("func.return")]
    KwFuncReturn,
    #[token("return")]
    KwReturn,
    #[token("attributes")]
    KwAttributes,
    #[token("loc")]
    KwLoc,
    #[token("unknown")]
    KwUnknown,
    #[token("fused")]
    KwFused,
    #[token("tensor")]
    KwTensor,
    #[token("memref")]
    KwMemref,
    #[token("dense")]
    KwDense,
    #[token("dense_resource")]
    KwDenseResource,
    #[token("array")]
    KwArray,
    #[token("true")]
    KwTrue,
    #[token("false")]
    KwFalse,
    #[token("unit")]
    KwUnit,
    #[token("index")]
    KwIndex,

    /// `%name` or `%name#3`
    #[regex(r"%[a-zA-Z0-9_$.\-]+(#[0-9]+)?", |l| l.slice())]
    ValueId(&'s str),
    /// `^bb0`
    #[regex(r"\^[a-zA-Z0-9_$.\-]+", |l| l.slice())]
    BlockId(&'s str),
    /// `@main`
    #[regex(r"@[a-zA-Z_][a-zA-Z0-9_$.\-]*", |l| l.slice())]
    SymbolRef(&'s str),
    /// `#graph.dims`
    #[regex(r"#[a-zA-Z_][a-zA-Z0-9_$.]*", |l| l.slice())]
    HashIdent(&'s str),
    /// A bare identifier (`f32`, `graph`, `x`).
    #[regex(r"[a-zA-Z_][a-zA-Z0-9_$.]*", |l| l.slice())]
    Ident(&'s str),
    /// A string literal, raw (quotes and escapes included).
    #[regex(r#""([^"\\\n]|\\[^\n])*""#, |l| l.slice())]
    Str(&'s str),
    /// `-1.5e-3`
    #[regex(r"-?[0-9]+\.[0-9]*([eE][-+]?[0-9]+)?", |l| l.slice())]
    Float(&'s str),
    /// `-42`
    #[regex(r"-?[0-9]+", |l| l.slice())]
    Int(&'s str),
    /// `0x7FC00000`
    #[regex(r"0x[0-9a-fA-F]+", |l| l.slice())]
    Hex(&'s str),
    /// A shape prefix: `16x64x`, `?x`.
    #[regex(r"(([0-9]+|\?)x)+", |l| l.slice())]
    Dims(&'s str),
}

/// A character sequence that is not a token.
#[derive(Clone, Debug, PartialEq)]
pub struct LexError {
    pub start: usize,
    pub end: usize,
}

/// Lexes a whole input.
///
/// A shape that starts with a zero extent followed by an element type spelled with hex letters
/// (`tensor<0xf32>`, `0xbf16`) would lex as the hex literal `0xf`; hex literals are printed with
/// upper-case digits, so `0x` followed by a lower-case letter is re-lexed as the dims prefix `0x`.
pub fn lex(src: &str) -> Result<Vec<(usize, Tok<'_>, usize)>, LexError> {
    let mut out = vec![];
    let mut base = 0usize;
    let mut lexer = Tok::lexer(src);
    while let Some(t) = lexer.next() {
        let span = lexer.span();
        let (start, end) = (base + span.start, base + span.end);
        match t {
            Ok(Tok::Hex(h)) if h.as_bytes().get(2).is_some_and(u8::is_ascii_lowercase) => {
                out.push((start, Tok::Dims(&src[start..start + 2]), start + 2));
                base = start + 2;
                lexer = Tok::lexer(&src[base..]);
            }
            Ok(tok) => out.push((start, tok, end)),
            Err(()) => return Err(LexError { start, end }),
        }
    }
    Ok(out)
}

impl std::fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Less => "<",
            Tok::Greater => ">",
            Tok::Comma => ",",
            Tok::Colon => ":",
            Tok::Equal => "=",
            Tok::Arrow => "->",
            Tok::Question => "?",
            Tok::FileMetadataBegin => "{-#",
            Tok::FileMetadataEnd => "#-}",
            Tok::KwModule => "module",
            Tok::KwFunc => "func.func",
            Tok::KwFuncReturn => "func.return",
            Tok::KwReturn => "return",
            Tok::KwAttributes => "attributes",
            Tok::KwLoc => "loc",
            Tok::KwUnknown => "unknown",
            Tok::KwFused => "fused",
            Tok::KwTensor => "tensor",
            Tok::KwMemref => "memref",
            Tok::KwDense => "dense",
            Tok::KwDenseResource => "dense_resource",
            Tok::KwArray => "array",
            Tok::KwTrue => "true",
            Tok::KwFalse => "false",
            Tok::KwUnit => "unit",
            Tok::KwIndex => "index",
            Tok::ValueId(s)
            | Tok::BlockId(s)
            | Tok::SymbolRef(s)
            | Tok::HashIdent(s)
            | Tok::Ident(s)
            | Tok::Str(s)
            | Tok::Float(s)
            | Tok::Int(s)
            | Tok::Hex(s)
            | Tok::Dims(s) => s,
        };
        f.write_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_prefix_is_one_token() {
        let toks: Vec<_> = lex("tensor<16x?xf32>")
            .unwrap()
            .into_iter()
            .map(|t| t.1)
            .collect();
        assert_eq!(
            toks,
            [
                Tok::KwTensor,
                Tok::Less,
                Tok::Dims("16x?x"),
                Tok::Ident("f32"),
                Tok::Greater
            ]
        );
    }

    #[test]
    fn keywords_win_over_identifiers_and_dotted_names_stay_whole() {
        let toks: Vec<_> = lex("func.func func.funcx test.dotted_name")
            .unwrap()
            .into_iter()
            .map(|t| t.1)
            .collect();
        assert_eq!(
            toks,
            [
                Tok::KwFunc,
                Tok::Ident("func.funcx"),
                Tok::Ident("test.dotted_name")
            ]
        );
    }

    #[test]
    fn bad_character_reports_its_offset() {
        assert_eq!(lex("%0 = !").unwrap_err().start, 5);
    }
}
