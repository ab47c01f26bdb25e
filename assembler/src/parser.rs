//! The text front end: assembly source → [`Assembler`] calls.
//!
//! The syntax is line-oriented (see `spec/assembly.md`): each line holds optional labels
//! (`name:`), then at most one directive or instruction. Instruction operands are parsed from the
//! instruction table alone — the mnemonic selects an [`InstDesc`](llmpu_isa::InstDesc) and each
//! operand is read according to its field's [`FieldKind`] into raw bits — so there is no
//! per-instruction code here. An error stops only its own line: the parser records it and goes on
//! with the next line, so one run reports every independent error of a file.

// Errors are the cold path (at most one per line), so their size does not matter here.
#![allow(clippy::result_large_err)]

use crate::builder::Assembler;
use crate::diag::{AsmError, ErrorKind, Span, closest};
use crate::lexer::{Tok, lex};
use llmpu_isa::fields::{FieldError, TileRef, mask};
use llmpu_isa::inst::{InstDesc, by_mnemonic};
use llmpu_isa::numerics::store_f32;
use llmpu_isa::target::{preset_names, preset_text};
use llmpu_isa::{
    DType, Field, FieldDesc, FieldKind, INSTRUCTIONS, IndexBound, IoDir, IoTensor, KvRegion,
    KvSlot, Reg, Space, Target,
};
use std::path::{Path, PathBuf};

/// `key value` pairs in exactly the order of `keys` (unsigned integers), to the end of the line
/// or an `@`.
fn keyed(c: &mut Cursor, keys: &[&str]) -> PResult<Vec<u64>> {
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let (name, span) = c.name(&format!("`{k}`"))?;
        if name != *k {
            return Err(AsmError::new(
                ErrorKind::Expected {
                    expected: format!("`{k}`"),
                    found: format!("`{name}`"),
                },
                Some(span),
            ));
        }
        out.push(c.u64(&format!("the value of `{k}`"))?.0);
    }
    Ok(out)
}

/// Every directive, for suggestions.
pub const DIRECTIVES: &[&str] = &[
    ".target",
    ".target_toml",
    ".input",
    ".output",
    ".kv",
    ".kv_slot",
    ".bound",
    ".precision",
    ".data",
    ".hex",
    ".f32",
    ".f16",
    ".bf16",
    ".f8e4m3",
    ".i8",
    ".u8",
    ".i32",
    ".i64",
    ".incbin",
    ".core",
    ".loc",
];

type PResult<T> = Result<T, AsmError>;

/// Parses `src` into `asm`. `base` is the directory `.incbin` and `.target "file"` paths are
/// relative to.
pub fn parse_into(src: &str, base: &Path, asm: &mut Assembler) {
    let toks = lex(src);
    let mut p = Parser {
        base: base.to_path_buf(),
        data_open: false,
        suggestions: Default::default(),
    };
    for line in toks.split(|(t, _)| *t == Tok::Newline) {
        if line.is_empty() {
            continue;
        }
        if let Some(&(_, span)) = line.iter().find(|(t, _)| *t == Tok::Error) {
            let text = &src[span.start..span.end];
            let kind = if text.starts_with('"') {
                ErrorKind::UnterminatedString
            } else {
                ErrorKind::UnexpectedChar(text.to_string())
            };
            asm.push_error(AsmError::new(kind, Some(span)));
            continue;
        }
        let mut c = Cursor {
            src,
            toks: line,
            at: 0,
        };
        if let Err(e) = p.line(&mut c, asm) {
            asm.push_error(e);
        }
    }
}

struct Parser {
    base: PathBuf,
    /// Whether value directives may append to the last `.data` segment.
    data_open: bool,
    /// "Did you mean" answers per unknown mnemonic already seen (a file repeating one typo costs
    /// one search).
    suggestions: std::collections::HashMap<String, Option<&'static str>>,
}

/// A cursor over one line's tokens.
struct Cursor<'s, 't> {
    src: &'s str,
    toks: &'t [(Tok, Span)],
    at: usize,
}

impl<'s> Cursor<'s, '_> {
    fn peek(&self) -> Option<Tok> {
        self.toks.get(self.at).map(|t| t.0)
    }

    fn peek_at(&self, k: usize) -> Option<Tok> {
        self.toks.get(self.at + k).map(|t| t.0)
    }

    /// The span of the current token, or an empty span at the end of the line.
    fn span(&self) -> Span {
        match self.toks.get(self.at) {
            Some(t) => t.1,
            None => {
                let end = self.toks.last().map_or(0, |t| t.1.end);
                Span::new(end, end)
            }
        }
    }

    fn text(&self, span: Span) -> &'s str {
        &self.src[span.start..span.end]
    }

    fn found(&self) -> String {
        match self.toks.get(self.at) {
            Some(&(t, s)) => match t {
                Tok::Str | Tok::Error => t.describe().to_string(),
                _ => format!("`{}`", self.text(s)),
            },
            None => "end of line".into(),
        }
    }

    fn expected(&self, what: &str) -> AsmError {
        AsmError::new(
            ErrorKind::Expected {
                expected: what.into(),
                found: self.found(),
            },
            Some(self.span()),
        )
    }

    fn bump(&mut self) -> (Tok, Span) {
        let t = self.toks[self.at];
        self.at += 1;
        t
    }

    fn eat(&mut self, t: Tok) -> bool {
        if self.peek() == Some(t) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, t: Tok) -> PResult<Span> {
        if self.peek() == Some(t) {
            Ok(self.bump().1)
        } else {
            Err(self.expected(t.describe()))
        }
    }

    fn end(&self) -> PResult<()> {
        if self.at < self.toks.len() {
            return Err(self.expected("end of line"));
        }
        Ok(())
    }

    /// A name: an identifier or a string.
    fn name(&mut self, what: &str) -> PResult<(String, Span)> {
        match self.peek() {
            Some(Tok::Ident) => {
                let (_, s) = self.bump();
                Ok((self.text(s).to_string(), s))
            }
            Some(Tok::Str) => {
                let (_, s) = self.bump();
                Ok((unescape(self.text(s), s)?, s))
            }
            _ => Err(self.expected(what)),
        }
    }

    fn string(&mut self, what: &str) -> PResult<(String, Span)> {
        if self.peek() == Some(Tok::Str) {
            let (_, s) = self.bump();
            Ok((unescape(self.text(s), s)?, s))
        } else {
            Err(self.expected(what))
        }
    }

    /// An integer with an optional sign, as i128.
    fn int(&mut self, what: &str) -> PResult<(i128, Span)> {
        let start = self.span();
        let neg = if self.eat(Tok::Minus) {
            true
        } else {
            self.eat(Tok::Plus);
            false
        };
        if self.peek() != Some(Tok::Int) {
            return Err(self.expected(what));
        }
        let (_, s) = self.bump();
        let v = parse_int(self.text(s), s).map_err(|e| {
            let whole = start.to(s);
            match e.kind {
                ErrorKind::IntTooLarge(_) => AsmError::new(
                    ErrorKind::IntTooLarge(self.text(whole).to_string()),
                    Some(whole),
                ),
                _ => e,
            }
        })?;
        Ok((if neg { -(v as i128) } else { v as i128 }, start.to(s)))
    }

    /// An unsigned integer that fits u64.
    fn u64(&mut self, what: &str) -> PResult<(u64, Span)> {
        let (v, s) = self.int(what)?;
        u64::try_from(v).map(|v| (v, s)).map_err(|_| {
            AsmError::new(
                ErrorKind::Expected {
                    expected: what.into(),
                    found: format!("`{v}`"),
                },
                Some(s),
            )
        })
    }

    /// An f32 literal: `1.5`, `-2`, `inf`, `-inf`, `nan`, `nan(0x7fc00001)`; bit-exact.
    fn f32(&mut self, what: &str) -> PResult<(u32, Span)> {
        let start = self.span();
        let neg = if self.eat(Tok::Minus) {
            true
        } else {
            self.eat(Tok::Plus);
            false
        };
        let bad = |c: &Self| c.expected(what);
        let (t, s) = match self.peek() {
            Some(Tok::Int | Tok::Float | Tok::Ident) => self.bump(),
            _ => return Err(bad(self)),
        };
        let text = self.text(s);
        let bits = if t == Tok::Ident && text == "nan" && self.peek() == Some(Tok::LParen) {
            self.bump();
            let (v, vs) = self.int("NaN bit pattern")?;
            let close = self.expect(Tok::RParen)?;
            let bits = u32::try_from(v)
                .ok()
                .filter(|&b| f32::from_bits(b).is_nan())
                .ok_or_else(|| {
                    AsmError::new(
                        ErrorKind::Expected {
                            expected: "a 32-bit NaN bit pattern".into(),
                            found: format!("`{}`", self.text(vs)),
                        },
                        Some(vs.to(close)),
                    )
                })?;
            if neg { bits ^ 0x8000_0000 } else { bits }
        } else {
            if t == Tok::Int
                && (text.starts_with("0x")
                    || text.starts_with("0X")
                    || text.starts_with("0b")
                    || text.starts_with("0B"))
            {
                self.at -= 1;
                return Err(bad(self));
            }
            let clean: String = text.chars().filter(|&c| c != '_').collect();
            let v: f32 = match clean.parse() {
                Ok(v) => v,
                Err(_) => {
                    self.at -= 1;
                    return Err(bad(self));
                }
            };
            // `inf` is spelled out; a numeric literal that rounds to infinity is out of range.
            if v.is_infinite() && t != Tok::Ident {
                return Err(AsmError::new(
                    ErrorKind::LiteralOutOfRange {
                        literal: self.text(start.to(s)).to_string(),
                        context: "an f32".into(),
                        allowed: format!(
                            "magnitude up to {:e}; write `inf` for infinity",
                            f32::MAX
                        ),
                    },
                    Some(start.to(s)),
                ));
            }
            if neg { (-v).to_bits() } else { v.to_bits() }
        };
        Ok((bits, start.to(self.toks[self.at - 1].1)))
    }

    /// Splits the rest of the line at top-level commas.
    fn comma_groups(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut depth = 0i32;
        let mut start = self.at;
        for i in self.at..self.toks.len() {
            match self.toks[i].0 {
                Tok::LBracket | Tok::LParen => depth += 1,
                Tok::RBracket | Tok::RParen => depth -= 1,
                Tok::Comma if depth <= 0 => {
                    out.push((start, i));
                    start = i + 1;
                }
                _ => {}
            }
        }
        if start < self.toks.len() || !out.is_empty() {
            out.push((start, self.toks.len()));
        }
        out
    }
}

/// Parses an integer token's text (`_` allowed, `0x`, `0b`).
fn parse_int(text: &str, span: Span) -> PResult<u128> {
    let clean: String = text.chars().filter(|&c| c != '_').collect();
    let (digits, radix) = if let Some(h) = clean.strip_prefix("0x").or(clean.strip_prefix("0X")) {
        (h, 16)
    } else if let Some(b) = clean.strip_prefix("0b").or(clean.strip_prefix("0B")) {
        (b, 2)
    } else {
        (clean.as_str(), 10)
    };
    let v = u128::from_str_radix(digits, radix)
        .map_err(|_| AsmError::new(ErrorKind::IntTooLarge(text.into()), Some(span)))?;
    if v > u64::MAX as u128 {
        return Err(AsmError::new(
            ErrorKind::IntTooLarge(text.into()),
            Some(span),
        ));
    }
    Ok(v)
}

/// Decodes a string token (with its quotes).
pub fn unescape(text: &str, span: Span) -> PResult<String> {
    let inner = &text[1..text.len() - 1];
    let mut out = String::with_capacity(inner.len());
    let mut it = inner.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let bad = |len: usize| {
            let at = span.start + 1 + i;
            let end = (at + len).min(span.end - 1);
            AsmError::new(
                ErrorKind::BadEscape(text.get(1 + i..1 + i + len).unwrap_or("\\").to_string()),
                Some(Span::new(at, end.max(at + 1))),
            )
        };
        let Some((_, e)) = it.next() else {
            return Err(bad(1));
        };
        match e {
            '\\' => out.push('\\'),
            '"' => out.push('"'),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '0' => out.push('\0'),
            'u' => {
                let rest = &inner[i + 2..];
                let close = rest.find('}');
                let ch = rest
                    .strip_prefix('{')
                    .and(close)
                    .and_then(|c| u32::from_str_radix(&rest[1..c], 16).ok())
                    .and_then(char::from_u32);
                match (ch, close) {
                    (Some(ch), Some(c)) => {
                        out.push(ch);
                        for _ in 0..=c {
                            it.next();
                        }
                    }
                    _ => return Err(bad(2 + close.map_or(0, |c| c + 1))),
                }
            }
            _ => return Err(bad(1 + e.len_utf8())),
        }
    }
    Ok(out)
}

impl Parser {
    fn line(&mut self, c: &mut Cursor, asm: &mut Assembler) -> PResult<()> {
        // Labels.
        while matches!(c.peek(), Some(Tok::Ident | Tok::Str)) && c.peek_at(1) == Some(Tok::Colon) {
            let (name, span) = c.name("a label")?;
            c.bump();
            self.data_open = false;
            asm.at(Some(span)).label(name);
        }
        match c.peek() {
            None => Ok(()),
            Some(Tok::Directive) => self.directive(c, asm),
            Some(Tok::Ident) => {
                self.data_open = false;
                self.instruction(c, asm)
            }
            _ => Err(c.expected("an instruction, a directive or a label")),
        }
    }

    fn directive(&mut self, c: &mut Cursor, asm: &mut Assembler) -> PResult<()> {
        let (_, dspan) = c.bump();
        let name = c.text(dspan);
        let value_dtype = match name {
            ".f32" => Some(DType::F32),
            ".f16" => Some(DType::F16),
            ".bf16" => Some(DType::BF16),
            ".f8e4m3" => Some(DType::F8E4M3),
            ".i8" => Some(DType::I8),
            ".u8" => Some(DType::U8),
            ".i32" => Some(DType::I32),
            ".i64" => Some(DType::I64),
            ".i16" => Some(DType::I16),
            ".u16" => Some(DType::U16),
            ".u32" => Some(DType::U32),
            ".u64" => Some(DType::U64),
            ".f64" => Some(DType::F64),
            _ => None,
        };
        let is_value = value_dtype.is_some() || name == ".hex" || name == ".incbin";
        if is_value && !self.data_open {
            return Err(
                AsmError::new(ErrorKind::NoDataSegment(name.into()), Some(dspan))
                    .with_help("start a segment with `.data NAME @ ADDRESS`"),
            );
        }
        if !is_value {
            self.data_open = false;
        }
        asm.at(Some(dspan));
        if let Some(dt) = value_dtype {
            let bytes = self.values(c, dt)?;
            asm.extend_data(&bytes);
            return Ok(());
        }
        match name {
            ".hex" => {
                let (s, span) = c.string("a string of hex digits")?;
                c.end()?;
                asm.extend_data(&parse_hex(&s, span)?);
            }
            ".incbin" => {
                let (s, span) = c.string("a file path string")?;
                c.end()?;
                let path = self.base.join(&s);
                let bytes = read_bounded(&path, asm.target()).map_err(|message| {
                    AsmError::new(
                        ErrorKind::Incbin {
                            path: path.display().to_string(),
                            message,
                        },
                        Some(span),
                    )
                })?;
                asm.extend_data(&bytes);
            }
            ".target" => {
                let (spec, span) = c.name("a target name or a TOML file path")?;
                c.end()?;
                let t = self.resolve_target(&spec, span)?;
                asm.at(Some(dspan.to(span))).set_target(t);
            }
            ".target_toml" => {
                let (text, span) = c.string("a TOML string")?;
                c.end()?;
                let t = Target::from_toml(&text, "<.target_toml>").map_err(|e| {
                    AsmError::new(ErrorKind::BadTarget(one_line(&e.to_string())), Some(span))
                })?;
                asm.at(Some(dspan.to(span))).set_target(t);
            }
            ".input" | ".output" => {
                let (nm, nspan) = c.name("a tensor name")?;
                c.expect(Tok::Colon)?;
                let dtype = self.dtype(c)?;
                c.expect(Tok::LBracket)?;
                let mut shape = Vec::new();
                if !c.eat(Tok::RBracket) {
                    loop {
                        shape.push(c.u64("a dimension")?.0);
                        if c.eat(Tok::RBracket) {
                            break;
                        }
                        c.expect(Tok::Comma).map_err(|_| c.expected("`,` or `]`"))?;
                    }
                }
                c.expect(Tok::At)?;
                let (addr, aspan) = c.u64("an HBM address")?;
                c.end()?;
                let dir = if name == ".input" {
                    IoDir::Input
                } else {
                    IoDir::Output
                };
                asm.at(Some(nspan.to(aspan))).io(IoTensor {
                    name: nm,
                    dir,
                    dtype,
                    shape,
                    hbm_addr: addr,
                });
            }
            ".kv" => {
                let dtype = self.dtype(c)?;
                c.expect(Tok::At)?;
                let (hbm_addr, _) = c.u64("the region's HBM address")?;
                let f = keyed(
                    c,
                    &[
                        "bytes",
                        "table",
                        "block_tokens",
                        "batch",
                        "max_blocks",
                        "num_blocks",
                        "past_len",
                        "new_tokens",
                    ],
                )?;
                c.end()?;
                let span = dspan.to(c.toks[c.at - 1].1);
                asm.at(Some(span)).kv(KvRegion {
                    hbm_addr,
                    bytes: f[0],
                    dtype,
                    table_addr: f[1],
                    block_tokens: f[2],
                    batch: f[3],
                    max_blocks: f[4],
                    num_blocks: f[5],
                    past_len: f[6],
                    new_tokens: f[7],
                    slots: vec![],
                });
            }
            ".kv_slot" => {
                let (past, _) = c.name("the past input's name")?;
                let (present, _) = c.name("the present output's name")?;
                let f = keyed(c, &["past_index", "present_index", "heads", "head_dim"])?;
                c.expect(Tok::At)?;
                let (pool_addr, _) = c.u64("the slot's block pool address")?;
                c.end()?;
                let span = dspan.to(c.toks[c.at - 1].1);
                let index = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
                asm.at(Some(span)).kv_slot(KvSlot {
                    past,
                    present,
                    past_index: index(f[0]),
                    present_index: index(f[1]),
                    heads: f[2],
                    head_dim: f[3],
                    pool_addr,
                });
            }
            ".bound" => {
                let (input, _) = c.name("an input name")?;
                let (lo, lspan) = c.int("the lowest value")?;
                let (hi, hspan) = c.int("the value past the highest")?;
                let (loc, _) = c.string("the location of the op the bound is for")?;
                c.end()?;
                let fit = |v: i128, s: Span| {
                    i64::try_from(v)
                        .map_err(|_| AsmError::new(ErrorKind::IntTooLarge(v.to_string()), Some(s)))
                };
                let (lo, hi) = (fit(lo, lspan)?, fit(hi, hspan)?);
                asm.at(Some(dspan.to(hspan)))
                    .bound(IndexBound { input, lo, hi, loc });
            }
            ".precision" => {
                let (name, nspan) = c.name("a precision name (fp32, bf16)")?;
                c.end()?;
                asm.at(Some(dspan.to(nspan))).precision(&name);
            }
            ".data" => {
                let (nm, nspan) = c.name("a data segment name")?;
                c.expect(Tok::At)?;
                let (addr, aspan) = c.u64("an HBM address")?;
                c.end()?;
                asm.at(Some(nspan.to(aspan))).data(nm, addr, Vec::new());
                self.data_open = true;
            }
            ".core" => {
                let mut list = Vec::new();
                loop {
                    let (v, s) = c.u64("a core number")?;
                    let v = u32::try_from(v).map_err(|_| {
                        AsmError::new(
                            ErrorKind::Expected {
                                expected: "a core number".into(),
                                found: format!("`{v}`"),
                            },
                            Some(s),
                        )
                    })?;
                    list.push(v);
                    if !c.eat(Tok::Comma) {
                        break;
                    }
                }
                c.end()?;
                let span = dspan.to(c.toks[c.at - 1].1);
                asm.at(Some(span)).cores_list(&list);
            }
            ".loc" => {
                let (loc, _) = c.name("a location string")?;
                c.end()?;
                asm.loc(loc);
            }
            _ => {
                let mut e = AsmError::new(ErrorKind::UnknownDirective(name.into()), Some(dspan));
                if let Some(s) = closest(name, DIRECTIVES.iter().copied()) {
                    e = e.with_help(format!("did you mean `{s}`?"));
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn resolve_target(&self, spec: &str, span: Span) -> PResult<Target> {
        if preset_text(spec).is_some() {
            return Target::preset(spec)
                .map_err(|e| AsmError::new(ErrorKind::BadTarget(e.to_string()), Some(span)));
        }
        let looks_like_path = spec.ends_with(".toml") || spec.contains('/');
        if !looks_like_path {
            let mut e = AsmError::new(
                ErrorKind::BadTarget(format!(
                    "unknown target `{spec}` (built-in: {}); or give a path to a .toml file",
                    preset_names().join(", ")
                )),
                Some(span),
            );
            if let Some(s) = closest(spec, preset_names()) {
                e = e.with_help(format!("did you mean `{s}`?"));
            }
            return Err(e);
        }
        let path = self.base.join(spec);
        let text = llmpu_isa::limits::read_to_string(&path).map_err(|e| {
            AsmError::new(
                ErrorKind::BadTarget(format!("cannot read target file {}: {e}", path.display())),
                Some(span),
            )
        })?;
        Target::from_toml(&text, &path.display().to_string())
            .map_err(|e| AsmError::new(ErrorKind::BadTarget(one_line(&e.to_string())), Some(span)))
    }

    fn dtype(&self, c: &mut Cursor) -> PResult<DType> {
        if c.peek() != Some(Tok::Ident) {
            return Err(c.expected("an element type"));
        }
        let (_, s) = c.bump();
        let t = c.text(s);
        DType::from_name(t).ok_or_else(|| {
            AsmError::new(ErrorKind::UnknownDtype(t.into()), Some(s))
                .with_help(format!("element types: {}", DType::NAMES.join(", ")))
        })
    }

    /// A comma-separated list of values encoded as `dt`.
    fn values(&self, c: &mut Cursor, dt: DType) -> PResult<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            if dt == DType::F64 {
                // Checked as an f32 literal (the machine computes f64 in f32, so a larger
                // magnitude could only load as infinity), then stored at full f64 precision.
                let (bits, span) = c.f32("a number")?;
                let clean: String = c.text(span).chars().filter(|&ch| ch != '_').collect();
                let v = clean.parse::<f64>().unwrap_or(f32::from_bits(bits) as f64);
                out.extend_from_slice(&v.to_le_bytes());
            } else if dt.is_float() {
                let (bits, _) = c.f32("a number")?;
                let mut b = vec![0u8; dt.size() as usize];
                store_f32(dt, &[f32::from_bits(bits)], &mut b);
                out.extend_from_slice(&b);
            } else {
                let (v, s) = c.int("an integer")?;
                let (min, max): (i128, i128) = match dt {
                    DType::I8 => (i8::MIN as i128, i8::MAX as i128),
                    DType::U8 => (0, u8::MAX as i128),
                    DType::I16 => (i16::MIN as i128, i16::MAX as i128),
                    DType::U16 => (0, u16::MAX as i128),
                    DType::I32 => (i32::MIN as i128, i32::MAX as i128),
                    DType::U32 => (0, u32::MAX as i128),
                    DType::U64 => (0, u64::MAX as i128),
                    _ => (i64::MIN as i128, i64::MAX as i128),
                };
                if v < min || v > max {
                    return Err(AsmError::new(
                        ErrorKind::DataRange {
                            dtype: dt.name(),
                            value: v,
                            min,
                            max,
                        },
                        Some(s),
                    ));
                }
                let le = (v as u64).to_le_bytes();
                out.extend_from_slice(&le[..dt.size() as usize]);
            }
            if c.peek().is_none() {
                return Ok(out);
            }
            c.expect(Tok::Comma)
                .map_err(|_| c.expected("`,` or end of line"))?;
        }
    }

    fn instruction(&mut self, c: &mut Cursor, asm: &mut Assembler) -> PResult<()> {
        let (_, mspan) = c.bump();
        let mnemonic = c.text(mspan);
        let Some(desc) = by_mnemonic(mnemonic) else {
            let mut e = AsmError::new(ErrorKind::UnknownMnemonic(mnemonic.into()), Some(mspan));
            let suggestion = match self.suggestions.get(mnemonic) {
                Some(s) => *s,
                None => {
                    let s = closest(mnemonic, INSTRUCTIONS.iter().map(|d| d.mnemonic));
                    self.suggestions.insert(mnemonic.to_string(), s);
                    s
                }
            };
            if let Some(s) = suggestion {
                e = e.with_help(format!("did you mean `{s}`?"));
            }
            return Err(e);
        };
        let groups = c.comma_groups();
        if groups.len() != desc.fields.len() {
            let names: Vec<&str> = desc.fields.iter().map(|f| f.name).collect();
            let span = mspan.to(c.toks.last().map_or(mspan, |t| t.1));
            return Err(AsmError::new(
                ErrorKind::OperandCount {
                    mnemonic: desc.mnemonic,
                    expected: desc.fields.len(),
                    operands: if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    },
                    found: groups.len(),
                },
                Some(span),
            )
            .with_help(format!("usage: {}", usage(desc))));
        }
        let mut raw = Vec::with_capacity(groups.len());
        let mut label = None;
        let mut errors = Vec::new();
        for (k, (fd, &(from, to))) in desc.fields.iter().zip(&groups).enumerate() {
            let mut oc = Cursor {
                src: c.src,
                toks: &c.toks[..to],
                at: from,
            };
            match operand(&mut oc, desc, fd) {
                Ok(Operand::Bits(b)) => raw.push(b),
                Ok(Operand::Label(name)) => {
                    raw.push(0);
                    label = Some((name, k));
                }
                Err(e) => {
                    raw.push(0);
                    errors.push(e);
                }
            }
        }
        c.at = c.toks.len();
        if let Some(first) = errors.first().cloned() {
            for e in errors.into_iter().skip(1) {
                asm.push_error(e);
            }
            return Err(first);
        }
        asm.at(Some(mspan.to(c.toks.last().map_or(mspan, |t| t.1))))
            .raw(desc.opcode, raw, label);
        Ok(())
    }
}

enum Operand {
    Bits(u64),
    Label(String),
}

/// The operand list of an instruction, for help lines: `blt rs1, rs2, target`.
pub fn usage(desc: &InstDesc) -> String {
    let ops: Vec<String> = desc
        .fields
        .iter()
        .map(|f| format!("{}:{}", f.name, f.kind.name()))
        .collect();
    if ops.is_empty() {
        desc.mnemonic.to_string()
    } else {
        format!("{} {}", desc.mnemonic, ops.join(", "))
    }
}

fn expected_text(kind: &FieldKind, width: u32) -> String {
    match kind {
        FieldKind::Reg => format!("a register (`r0`..`r{}`)", mask(width).min(31)),
        FieldKind::Sem => format!("a semaphore (`s0`..`s{}`)", mask(width).min(31)),
        FieldKind::Uimm => "an unsigned integer".into(),
        FieldKind::Simm => "an integer".into(),
        FieldKind::F32 => "an f32 value (`1.5`, `inf`, `nan`, `nan(0x7fc00001)`)".into(),
        FieldKind::Target => "a label or `.+N`/`.-N`".into(),
        FieldKind::Enum(name, names) => format!("a `{name}` name: {}", names.join(", ")),
        FieldKind::TileRef => "a tile (`sram.bf16[r3, r4]`)".into(),
    }
}

/// Parses one operand per its field kind.
fn operand(c: &mut Cursor, desc: &InstDesc, fd: &FieldDesc) -> PResult<Operand> {
    let bad = |c: &Cursor| {
        AsmError::new(
            ErrorKind::BadOperand {
                mnemonic: desc.mnemonic,
                field: fd.name,
                expected: expected_text(&fd.kind, fd.width),
                found: c.found(),
            },
            Some(c.span()),
        )
    };
    let range = |value: i128, min: i128, max: i128, span: Span| {
        AsmError::new(
            ErrorKind::OutOfRange {
                mnemonic: desc.mnemonic,
                field: fd.name,
                value,
                min,
                max,
            },
            Some(span),
        )
    };
    if c.peek().is_none() {
        return Err(bad(c));
    }
    let out = match fd.kind {
        FieldKind::Reg | FieldKind::Sem => {
            let prefix = if fd.kind == FieldKind::Reg { 'r' } else { 's' };
            let n = numbered(c, prefix).ok_or_else(|| bad(c))?;
            let max = mask(fd.width).min(31);
            if n > max as u128 {
                return Err(range(n as i128, 0, max as i128, c.toks[c.at - 1].1));
            }
            Operand::Bits(n as u64)
        }
        FieldKind::Uimm | FieldKind::Simm => {
            if !matches!(c.peek(), Some(Tok::Int | Tok::Minus | Tok::Plus)) {
                return Err(bad(c));
            }
            let (min, max) = if fd.kind == FieldKind::Uimm {
                (0, mask(fd.width) as i128)
            } else {
                (-(1i128 << (fd.width - 1)), (1i128 << (fd.width - 1)) - 1)
            };
            let (v, s) = c.int("an integer").map_err(|e| match e.kind {
                ErrorKind::IntTooLarge(_) => field_literal_range(&e, c, desc, fd, min, max),
                _ => bad(c),
            })?;
            if v < min || v > max {
                return Err(range(v, min, max, s));
            }
            Operand::Bits((v as i64 as u64) & mask(fd.width))
        }
        FieldKind::F32 => {
            let (bits, _) = c.f32("").map_err(|e| match e.kind {
                ErrorKind::LiteralOutOfRange {
                    literal, allowed, ..
                } => AsmError::new(
                    ErrorKind::LiteralOutOfRange {
                        literal,
                        context: format!("f32 field `{}` of `{}`", fd.name, desc.mnemonic),
                        allowed,
                    },
                    e.span,
                ),
                _ => bad(c),
            })?;
            Operand::Bits(bits as u64)
        }
        FieldKind::Target => match c.peek() {
            Some(Tok::Ident | Tok::Str) => Operand::Label(c.name("a label")?.0),
            Some(Tok::Rel) => {
                let (_, s) = c.bump();
                let text = &c.text(s)[1..];
                let neg = text.starts_with('-');
                let min = -(1i128 << (fd.width - 1));
                let max = (1i128 << (fd.width - 1)) - 1;
                let mag = parse_int(&text[1..], s)
                    .map_err(|e| field_literal_range(&e, c, desc, fd, min, max))?
                    as i128;
                let v = if neg { -mag } else { mag };
                if v < min || v > max {
                    return Err(range(v, min, max, s));
                }
                Operand::Bits((v as i64 as u64) & mask(fd.width))
            }
            _ => return Err(bad(c)),
        },
        FieldKind::Enum(_, names) => {
            if c.peek() != Some(Tok::Ident) {
                return Err(bad(c));
            }
            let (_, s) = c.bump();
            let t = c.text(s);
            match names.iter().position(|n| *n == t) {
                Some(i) => Operand::Bits(i as u64),
                None => {
                    c.at -= 1;
                    return Err(bad(c));
                }
            }
        }
        FieldKind::TileRef => {
            if c.peek() != Some(Tok::Ident) {
                return Err(bad(c));
            }
            let (_, s) = c.bump();
            let head = c.text(s);
            let parsed = head
                .split_once('.')
                .and_then(|(sp, dt)| Some((Space::from_name(sp)?, DType::from_name(dt)?)));
            let Some((space, dtype)) = parsed else {
                c.at -= 1;
                return Err(bad(c));
            };
            c.expect(Tok::LBracket).map_err(|_| bad(c))?;
            let addr = numbered(c, 'r').ok_or_else(|| bad(c))?;
            c.expect(Tok::Comma).map_err(|_| bad(c))?;
            let ld = numbered(c, 'r').ok_or_else(|| bad(c))?;
            c.expect(Tok::RBracket).map_err(|_| bad(c))?;
            if addr > 31 || ld > 31 {
                return Err(range(addr.max(ld) as i128, 0, 31, s.to(c.toks[c.at - 1].1)));
            }
            let t = TileRef {
                space,
                dtype,
                addr: Reg(addr as u8),
                ld: Reg(ld as u8),
            };
            let bits = t.to_bits(fd.width).map_err(|e| match e {
                FieldError::AccType { dtype } => AsmError::new(
                    ErrorKind::Expected {
                        expected: format!(
                            "an accumulator tile of type {}",
                            TileRef::ACC_TYPES.map(|d| d.name()).join(" or ")
                        ),
                        found: format!("`acc.{dtype}`"),
                    },
                    Some(s),
                ),
                _ => range(0, 0, mask(fd.width) as i128, s),
            })?;
            Operand::Bits(bits)
        }
    };
    if c.peek().is_some() {
        return Err(AsmError::new(
            ErrorKind::Expected {
                expected: format!("`,` after operand `{}`", fd.name),
                found: c.found(),
            },
            Some(c.span()),
        ));
    }
    Ok(out)
}

/// An integer literal too large to parse, reported against the field it was meant for.
fn field_literal_range(
    e: &AsmError,
    c: &Cursor,
    desc: &InstDesc,
    fd: &FieldDesc,
    min: i128,
    max: i128,
) -> AsmError {
    let literal = e.span.map_or_else(String::new, |s| c.text(s).to_string());
    AsmError::new(
        ErrorKind::LiteralOutOfRange {
            literal,
            context: format!("field `{}` of `{}`", fd.name, desc.mnemonic),
            allowed: format!("{min}..={max}"),
        },
        e.span,
    )
}

/// `r12` / `s3`: the number after the prefix letter.
fn numbered(c: &mut Cursor, prefix: char) -> Option<u128> {
    if c.peek() != Some(Tok::Ident) {
        return None;
    }
    let s = c.toks[c.at].1;
    let t = c.text(s);
    let digits = t.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 30 {
        return None;
    }
    c.at += 1;
    digits.parse().ok()
}

/// Reads an `.incbin` file: a regular file (so `/dev/zero` or a FIFO is an error, not an endless
/// read) of at most the target's HBM size and the file size limit (`llmpu_isa::limits`).
fn read_bounded(path: &Path, target: &Target) -> Result<Vec<u8>, String> {
    let limit = target.hbm.size_bytes;
    let (_, len) = llmpu_isa::limits::open_regular(path).map_err(|e| e.to_string())?;
    if len > limit {
        return Err(format!(
            "the file is larger than the HBM of target `{}` ({limit} bytes)",
            target.name
        ));
    }
    let bytes = llmpu_isa::limits::read_file(path).map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "the file is larger than the HBM of target `{}` ({limit} bytes)",
            target.name
        ));
    }
    Ok(bytes)
}

/// Collapses a multi-line TOML error (message, source snippet, detail) into one line.
fn one_line(msg: &str) -> String {
    let is_snippet = |l: &str| {
        let t = l.trim_start();
        t.is_empty()
            || t.starts_with('|')
            || t.split_once(" |")
                .is_some_and(|(n, _)| n.bytes().all(|b| b.is_ascii_digit()))
    };
    msg.lines()
        .filter(|l| !is_snippet(l))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(": ")
}

fn parse_hex(s: &str, span: Span) -> PResult<Vec<u8>> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if let Some(b) = digits.iter().find(|b| !b.is_ascii_hexdigit()) {
        return Err(AsmError::new(
            ErrorKind::BadHex(format!("`{}` is not a hex digit", *b as char)),
            Some(span),
        ));
    }
    if !digits.len().is_multiple_of(2) {
        return Err(AsmError::new(
            ErrorKind::BadHex(format!("odd number of hex digits ({})", digits.len())),
            Some(span),
        ));
    }
    let val = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
    Ok(digits
        .chunks_exact(2)
        .map(|p| (val(p[0]) << 4) | val(p[1]))
        .collect())
}
