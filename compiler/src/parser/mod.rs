//! IR text → [`Module`]: `logos` lexer, `lalrpop` grammar to a syntax tree ([`ast`]), then name
//! resolution and construction of the IR with precise diagnostics.
//!
//! Invariants: never panics on any input; nesting deeper than [`MAX_NESTING`] is rejected up front so
//! recursion is bounded; every error carries a byte span. Accepts what the printer writes plus the
//! common MLIR generic spellings (`"builtin.module"() ({...})`, `<{props}>`, `return`,
//! `loc("file":1:2)`), and the `{-# dialect_resources #-}` trailer. Values are resolved in scope order:
//! a use must come after its definition (no forward references). Block labels are scoped to their
//! region: every block of a region is created before its ops are lowered, so a successor
//! (`"op"()[^bb2]`) may name a later block, but only one of its own region; labels are unique per
//! region.

pub mod ast;
pub mod lexer;

use std::collections::HashMap;
use std::sync::Arc;

use lalrpop_util::ParseError as LrError;

use self::ast::*;
use self::lexer::Tok;
use crate::diag::Diagnostic;
use crate::ir::print::f8e4m3fn_to_f64;
use crate::ir::types::checked_product;
use crate::ir::{
    Attribute, BlobForm, BlockId, DenseAttr, Module, OpId, OpSpec, RegionId, ScalarType, Span,
    Type, ValueId,
};

lalrpop_util::lalrpop_mod!(
    #[allow(
        clippy::all,
        clippy::pedantic,
        unused_parens,
        unused_imports,
        dead_code
    )]
    grammar,
    "/parser/grammar.rs"
);

/// Maximum bracket nesting accepted (bounds recursion in lowering, verifying and printing).
pub const MAX_NESTING: usize = 200;

/// Error produced by grammar actions.
#[derive(Clone, Debug, PartialEq)]
pub struct GrammarError {
    pub message: String,
    pub span: (usize, usize),
}

/// A parse failure, with enough information to render `file:line:col`, the line and a caret.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}", .diagnostic.message)]
pub struct ParseError {
    pub diagnostic: Diagnostic,
}

fn perr(message: impl Into<String>, span: (usize, usize)) -> ParseError {
    ParseError {
        diagnostic: Diagnostic::error(
            message,
            Some(Span {
                start: span.0 as u32,
                end: span.1 as u32,
            }),
        ),
    }
}

/// Parses IR text into a module. The result is not verified; call [`crate::ir::verify`].
pub fn parse_module(src: &str) -> Result<Module, ParseError> {
    let tokens = lexer::lex(src).map_err(|e| {
        let ch = src[e.start..].chars().next().unwrap_or(' ');
        perr(
            format!("unexpected character '{}'", ch.escape_debug()),
            (e.start, e.end.max(e.start + 1)),
        )
    })?;
    let mut depth = 0usize;
    for (s, t, e) in &tokens {
        match t {
            Tok::LParen | Tok::LBrace | Tok::LBracket | Tok::Less | Tok::FileMetadataBegin => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(perr(
                        format!("nesting deeper than {MAX_NESTING} levels"),
                        (*s, *e),
                    ));
                }
            }
            Tok::RParen | Tok::RBrace | Tok::RBracket | Tok::Greater | Tok::FileMetadataEnd => {
                depth = depth.saturating_sub(1)
            }
            _ => {}
        }
    }
    let end = src.len();
    let file = grammar::FileParser::new()
        .parse(tokens.into_iter().map(Ok::<_, GrammarError>))
        .map_err(|e| convert_lr_error(e, end))?;
    Lowering::new(src).file(file)
}

fn convert_lr_error(e: LrError<usize, Tok<'_>, GrammarError>, eof: usize) -> ParseError {
    match e {
        LrError::InvalidToken { location } => perr("invalid token", (location, location + 1)),
        LrError::UnrecognizedEof { location, expected } => perr(
            format!(
                "unexpected end of input, expected {}",
                expected_list(&expected)
            ),
            (location.min(eof), location.min(eof)),
        ),
        LrError::UnrecognizedToken {
            token: (s, t, e),
            expected,
        } => perr(
            format!("unexpected '{t}', expected {}", expected_list(&expected)),
            (s, e),
        ),
        LrError::ExtraToken { token: (s, t, e) } => {
            perr(format!("unexpected extra token '{t}'"), (s, e))
        }
        LrError::User { error } => perr(error.message, error.span),
    }
}

fn expected_list(exp: &[String]) -> String {
    let names: Vec<String> = exp
        .iter()
        .map(|s| match s.as_str() {
            "ValueId" => "a value (%name)".into(),
            "StrLit" => "a string".into(),
            "IntLit" => "an integer".into(),
            "FloatLit" => "a float".into(),
            "Ident" => "an identifier".into(),
            "BlockId" => "a block label".into(),
            "SymbolRef" => "a symbol (@name)".into(),
            other => other.to_string(),
        })
        .collect();
    match names.len() {
        0 => "nothing".into(),
        1..=6 => names.join(", "),
        _ => format!("one of {}, ...", names[..6].join(", ")),
    }
}

/// Decodes an MLIR string literal (with quotes): `\"`, `\\`, `\n`, `\t`, `\XX`.
pub fn unescape(raw: &str) -> Result<String, String> {
    let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or("");
    let bytes = inner.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let n = bytes.get(i + 1).copied();
            match n {
                Some(b'"') | Some(b'\\') => {
                    out.push(n.unwrap_or(b'\\'));
                    i += 2;
                }
                Some(b'n') => {
                    out.push(b'\n');
                    i += 2;
                }
                Some(b't') => {
                    out.push(b'\t');
                    i += 2;
                }
                _ => {
                    let hex = inner.get(i + 1..i + 3).ok_or("bad escape in string")?;
                    let b = u8::from_str_radix(hex, 16)
                        .map_err(|_| format!("bad escape '\\{hex}' in string"))?;
                    out.push(b);
                    i += 3;
                }
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "string is not valid UTF-8".to_string())
}

/// Parses a decimal integer literal.
pub fn parse_int(s: &str) -> Result<i128, String> {
    s.parse::<i128>()
        .map_err(|_| format!("integer literal '{s}' is out of range"))
}

/// Parses a float literal.
pub fn parse_float(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .map_err(|_| format!("bad float literal '{s}'"))
}

/// Parses a `0x...` literal.
pub fn parse_hex(s: &str) -> Result<u64, String> {
    u64::from_str_radix(&s[2..], 16).map_err(|_| format!("hex literal '{s}' is out of range"))
}

/// Builds the module from the syntax tree, resolving names.
struct Lowering<'s> {
    _src: &'s str,
    m: Module,
    /// Scopes of visible names; `barriers` marks where isolated-from-above regions start.
    scopes: Vec<HashMap<String, Vec<ValueId>>>,
    barriers: Vec<usize>,
    /// Block labels of each region being lowered, innermost last (successors resolve in the last).
    labels: Vec<HashMap<String, BlockId>>,
    resources: HashMap<String, Arc<[u8]>>,
}

type PResult<T> = Result<T, ParseError>;

impl<'s> Lowering<'s> {
    fn new(src: &'s str) -> Self {
        Lowering {
            _src: src,
            m: Module::new(),
            scopes: vec![],
            barriers: vec![0],
            labels: vec![],
            resources: HashMap::new(),
        }
    }

    fn file(mut self, file: AFile) -> PResult<Module> {
        self.metadata(&file.metadata)?;
        let mut ops = file.ops;
        let single_module = ops.len() == 1
            && match &ops[0].kind {
                AOpKind::Module { .. } => true,
                AOpKind::Generic { name, .. } => name == "builtin.module",
                _ => false,
            };
        let body = self.m.body();
        let top = self.m.top();
        if single_module {
            let op = ops.remove(0);
            if !op.results.is_empty() {
                return Err(perr("'builtin.module' has no results", op.span));
            }
            if let Some(loc) = op.loc {
                self.m.op_mut(top).loc = loc;
            }
            self.m.op_mut(top).span = Some(Span {
                start: op.span.0 as u32,
                end: op.span.1 as u32,
            });
            match op.kind {
                AOpKind::Module {
                    attrs,
                    body: region,
                } => {
                    for e in attrs {
                        let a = self.attr(e.value)?;
                        self.m.set_attr(top, &e.name, a);
                    }
                    self.push_scope(true);
                    self.region_blocks_into(region, body, op.span)?;
                    self.pop_scope(true);
                }
                AOpKind::Generic {
                    operands,
                    props,
                    regions,
                    attrs,
                    fn_type,
                    type_span,
                    ..
                } => {
                    if !operands.is_empty() || !fn_type.0.is_empty() || !fn_type.1.is_empty() {
                        return Err(perr("'builtin.module' must have type () -> ()", type_span));
                    }
                    for e in props.into_iter().chain(attrs) {
                        let a = self.attr(e.value)?;
                        self.m.set_attr(top, &e.name, a);
                    }
                    let mut regions = regions.into_iter();
                    let (Some(region), None) = (regions.next(), regions.next()) else {
                        return Err(perr("'builtin.module' expects exactly one region", op.span));
                    };
                    self.push_scope(true);
                    self.region_blocks_into(region, body, op.span)?;
                    self.pop_scope(true);
                }
                _ => unreachable_kind()?,
            }
        } else {
            self.push_scope(true);
            self.labels.push(HashMap::new());
            for op in ops {
                self.op(op, body)?;
            }
            self.labels.pop();
            self.pop_scope(true);
        }
        Ok(self.m)
    }

    /// Lowers a region whose single block's ops go into an existing block (module body).
    fn region_blocks_into(&mut self, region: ARegion, block: BlockId, span: Sp) -> PResult<()> {
        let mut blocks = region.blocks.into_iter();
        let first = blocks.next();
        if blocks.next().is_some() {
            return Err(perr("the module body must have a single block", span));
        }
        let Some(b) = first else {
            return Ok(());
        };
        if !b.args.is_empty() {
            return Err(perr("the module body block takes no arguments", span));
        }
        self.labels
            .push(b.label.iter().map(|l| (l.label.clone(), block)).collect());
        for op in b.ops {
            self.op(op, block)?;
        }
        self.labels.pop();
        Ok(())
    }

    fn metadata(&mut self, meta: &[AMeta]) -> PResult<()> {
        for e in meta {
            if let AMeta::Dict(k, v) = e
                && k == "dialect_resources"
            {
                for d in v {
                    if let AMeta::Dict(_, entries) = d {
                        for ent in entries {
                            if let AMeta::Str(name, hex, span) = ent {
                                let bytes = decode_resource_hex(hex).map_err(|m| perr(m, *span))?;
                                self.resources.insert(name.clone(), bytes);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn push_scope(&mut self, isolated: bool) {
        if isolated {
            self.barriers.push(self.scopes.len());
        }
        self.scopes.push(HashMap::new());
    }

    fn pop_scope(&mut self, isolated: bool) {
        self.scopes.pop();
        if isolated {
            self.barriers.pop();
        }
    }

    fn define(&mut self, name: &str, values: Vec<ValueId>, span: Sp) -> PResult<()> {
        let barrier = *self.barriers.last().unwrap_or(&0);
        if self.scopes[barrier..].iter().any(|s| s.contains_key(name)) {
            return Err(perr(format!("redefinition of SSA value '{name}'"), span));
        }
        if let Some(s) = self.scopes.last_mut() {
            s.insert(name.to_string(), values);
        }
        Ok(())
    }

    fn resolve(&self, v: &AValue) -> PResult<ValueId> {
        let (base, idx) = match v.name.split_once('#') {
            Some((b, i)) => (
                b,
                Some(
                    i.parse::<usize>()
                        .map_err(|_| perr("bad result index", v.span))?,
                ),
            ),
            None => (v.name.as_str(), None),
        };
        let barrier = *self.barriers.last().unwrap_or(&0);
        for s in self.scopes[barrier..].iter().rev() {
            if let Some(vals) = s.get(base) {
                return match idx {
                    None if vals.len() == 1 => Ok(vals[0]),
                    None => Err(perr(
                        format!("'{base}' names {} results; use '{base}#N'", vals.len()),
                        v.span,
                    )),
                    Some(i) => vals.get(i).copied().ok_or_else(|| {
                        perr(
                            format!(
                                "result index {i} out of range: '{base}' has {} results",
                                vals.len()
                            ),
                            v.span,
                        )
                    }),
                };
            }
        }
        Err(perr(format!("use of undefined value '{}'", v.name), v.span))
    }

    fn check_operand_types(
        &self,
        operands: &[ValueId],
        uses: &[AValue],
        types: &[Type],
        span: Sp,
    ) -> PResult<()> {
        if operands.len() != types.len() {
            return Err(perr(
                format!(
                    "the op has {} operands but its type lists {} operand types",
                    operands.len(),
                    types.len()
                ),
                span,
            ));
        }
        for ((v, u), t) in operands.iter().zip(uses).zip(types) {
            if self.m.value_type(*v) != t {
                return Err(perr(
                    format!(
                        "'{}' has type {} but is used here as {}",
                        u.name,
                        self.m.value_type(*v),
                        t
                    ),
                    u.span,
                ));
            }
        }
        Ok(())
    }

    fn op(&mut self, op: AOp, block: BlockId) -> PResult<OpId> {
        let AOp {
            span,
            name_end,
            results,
            kind,
            loc,
        } = op;
        let loc = loc.unwrap_or_default();
        let result_count: u32 = results.iter().map(|r| r.1).sum();
        let id = match kind {
            AOpKind::Generic {
                name,
                operands,
                successors,
                props,
                regions,
                attrs,
                fn_type,
                type_span,
            } => {
                let vals = operands
                    .iter()
                    .map(|v| self.resolve(v))
                    .collect::<PResult<Vec<_>>>()?;
                self.check_operand_types(&vals, &operands, &fn_type.0, type_span)?;
                if fn_type.1.len() as u32 != result_count {
                    return Err(perr(
                        format!(
                            "the op defines {result_count} result(s) but its type lists {}",
                            fn_type.1.len()
                        ),
                        type_span,
                    ));
                }
                let succs = successors
                    .iter()
                    .map(|b| self.resolve_block(b))
                    .collect::<PResult<Vec<_>>>()?;
                let mut spec = OpSpec::new(name.clone(), loc)
                    .operands(&vals)
                    .results(fn_type.1)
                    .successors(&succs);
                for e in props.into_iter().chain(attrs) {
                    let a = self.attr(e.value)?;
                    spec.attrs.push((e.name, a));
                }
                let id = self.m.create_op(spec);
                self.m.append_op(block, id);
                let isolated = crate::ir::verify::is_isolated_from_above(&name);
                for r in regions {
                    let rid = self.m.add_region(id);
                    self.region(r, rid, isolated)?;
                }
                id
            }
            AOpKind::Module { .. } => {
                return Err(perr("'module' is only allowed at the top level", span));
            }
            AOpKind::Func {
                sym,
                args,
                results: res,
                attrs,
                body,
            } => {
                if result_count != 0 {
                    return Err(perr("'func.func' has no results", span));
                }
                let ins: Vec<Type> = args.iter().map(|a| a.ty.clone()).collect();
                let outs: Vec<Type> = res.iter().map(|r| r.0.clone()).collect();
                let mut spec = OpSpec::new("func.func", loc)
                    .attr("sym_name", Attribute::Str(sym))
                    .attr(
                        "function_type",
                        Attribute::Type(Type::Function(ins.clone(), outs)),
                    );
                if args.iter().any(|a| !a.attrs.is_empty()) {
                    let mut list = vec![];
                    for a in &args {
                        list.push(self.dict(&a.attrs)?);
                    }
                    spec = spec.attr("arg_attrs", Attribute::Array(list));
                }
                if res.iter().any(|r| !r.1.is_empty()) {
                    let mut list = vec![];
                    for r in &res {
                        list.push(self.dict(&r.1)?);
                    }
                    spec = spec.attr("res_attrs", Attribute::Array(list));
                }
                for e in attrs {
                    let a = self.attr(e.value)?;
                    spec.attrs.push((e.name, a));
                }
                let id = self.m.create_op(spec);
                self.m.append_op(block, id);
                let rid = self.m.add_region(id);
                self.push_scope(true);
                let entry = self.m.add_block(rid, &ins);
                let arg_vals = self.m.block(entry).args.clone();
                for (a, v) in args.iter().zip(arg_vals) {
                    self.define(&a.name, vec![v], a.span)?;
                }
                if let Some(first) = body.blocks.first()
                    && first.label.is_some()
                    && !first.args.is_empty()
                {
                    return Err(perr(
                        "the entry block of 'func.func' gets its arguments from the signature",
                        span,
                    ));
                }
                self.blocks(body, rid, Some(entry))?;
                self.pop_scope(true);
                id
            }
            AOpKind::Return {
                operands,
                types,
                type_span,
            } => {
                let vals = operands
                    .iter()
                    .map(|v| self.resolve(v))
                    .collect::<PResult<Vec<_>>>()?;
                self.check_operand_types(&vals, &operands, &types, type_span)?;
                if result_count != 0 {
                    return Err(perr("'func.return' has no results", span));
                }
                let id = self
                    .m
                    .create_op(OpSpec::new("func.return", loc).operands(&vals));
                self.m.append_op(block, id);
                id
            }
        };
        self.m.op_mut(id).span = Some(Span {
            start: span.0 as u32,
            end: name_end as u32,
        });
        let vals = self.m.op(id).results.clone();
        let mut offset = 0usize;
        for (name, n, rspan) in results {
            let n = n as usize;
            self.define(&name, vals[offset..offset + n].to_vec(), rspan)?;
            offset += n;
        }
        Ok(id)
    }

    fn region(&mut self, r: ARegion, rid: RegionId, isolated: bool) -> PResult<()> {
        self.push_scope(isolated);
        self.blocks(r, rid, None)?;
        self.pop_scope(isolated);
        Ok(())
    }

    /// Creates every block of `r` in `rid` (the first is `entry` when the region already has it),
    /// then lowers their ops with the region's labels visible to successors.
    fn blocks(&mut self, r: ARegion, rid: RegionId, entry: Option<BlockId>) -> PResult<()> {
        let mut labels: HashMap<String, BlockId> = HashMap::new();
        let mut ids = Vec::with_capacity(r.blocks.len());
        for (i, b) in r.blocks.iter().enumerate() {
            let bid = match entry {
                Some(e) if i == 0 => e,
                _ => {
                    let tys: Vec<Type> = b.args.iter().map(|a| a.ty.clone()).collect();
                    self.m.add_block(rid, &tys)
                }
            };
            if let Some(l) = &b.label
                && labels.insert(l.label.clone(), bid).is_some()
            {
                return Err(perr(format!("redefinition of block '{}'", l.label), l.span));
            }
            ids.push(bid);
        }
        self.labels.push(labels);
        for (b, bid) in r.blocks.into_iter().zip(ids) {
            if entry != Some(bid) {
                let vals = self.m.block(bid).args.clone();
                for (a, v) in b.args.iter().zip(vals) {
                    self.define(&a.name, vec![v], a.span)?;
                }
            }
            for o in b.ops {
                self.op(o, bid)?;
            }
        }
        self.labels.pop();
        Ok(())
    }

    /// The block a successor names: a block of the innermost region being lowered.
    fn resolve_block(&self, b: &ABlockRef) -> PResult<BlockId> {
        let mut scopes = self.labels.iter().rev();
        if let Some(&id) = scopes.next().and_then(|l| l.get(&b.label)) {
            return Ok(id);
        }
        if scopes.any(|l| l.contains_key(&b.label)) {
            return Err(perr(
                format!(
                    "'{}' is a block of an enclosing region; a successor must be a block of the \
                     op's own region",
                    b.label
                ),
                b.span,
            ));
        }
        Err(perr(
            format!("use of undefined block '{}'", b.label),
            b.span,
        ))
    }

    fn dict(&mut self, entries: &[AAttrEntry]) -> PResult<Attribute> {
        let mut out: Vec<(String, Attribute)> = vec![];
        for e in entries {
            let a = self.attr_ref(&e.value)?;
            crate::ir::module::set_sorted(&mut out, e.name.clone(), a);
        }
        Ok(Attribute::Dict(out))
    }

    fn attr(&mut self, a: AAttr) -> PResult<Attribute> {
        self.attr_ref(&a)
    }

    fn attr_ref(&mut self, a: &AAttr) -> PResult<Attribute> {
        Ok(match a {
            AAttr::Int(v, t, span) => match t {
                None => Attribute::Int(to_i64(*v, ScalarType::I64, *span)?, ScalarType::I64),
                Some(Type::Scalar(s)) if s.is_float() => Attribute::Float(*v as f64, *s),
                Some(Type::Scalar(s)) => Attribute::Int(to_i64(*v, *s, *span)?, *s),
                Some(Type::Index) => {
                    Attribute::Int(to_i64(*v, ScalarType::I64, *span)?, ScalarType::I64)
                }
                Some(t) => {
                    return Err(perr(
                        format!("integer attribute cannot have type {t}"),
                        *span,
                    ));
                }
            },
            AAttr::Float(v, t, span) => match t {
                None => Attribute::Float(*v, ScalarType::F64),
                Some(Type::Scalar(s)) if s.is_float() => Attribute::Float(round_to(*v, *s), *s),
                Some(t) => {
                    return Err(perr(format!("float attribute cannot have type {t}"), *span));
                }
            },
            AAttr::Hex(bits, t, span) => match t {
                Type::Scalar(s) if s.is_float() => {
                    Attribute::Float(float_from_bits(hex_bits(*bits, *s, *span)?, *s), *s)
                }
                Type::Scalar(s) => Attribute::Int(hex_to_i64(*bits, *s, *span)?, *s),
                t => return Err(perr(format!("hex attribute cannot have type {t}"), *span)),
            },
            AAttr::Str(s) => Attribute::Str(s.clone()),
            AAttr::Bool(b) => Attribute::Bool(*b),
            AAttr::Unit => Attribute::Unit,
            AAttr::Array(v) => {
                Attribute::Array(v.iter().map(|x| self.attr_ref(x)).collect::<PResult<_>>()?)
            }
            AAttr::DenseArray(t, v, span) => match t.as_str() {
                "i64" => Attribute::DenseI64Array(
                    v.iter()
                        .map(|n| match n {
                            ANum::Int(i) => to_i64(*i, ScalarType::I64, *span),
                            _ => Err(perr("array<i64: ...> holds integers", *span)),
                        })
                        .collect::<PResult<_>>()?,
                ),
                "f32" => Attribute::DenseF32Array(
                    v.iter()
                        .map(|n| match n {
                            ANum::Float(f) => Ok(*f as f32),
                            ANum::Int(i) => Ok(*i as f32),
                            ANum::Hex(h) => u32::try_from(*h).map(f32::from_bits).map_err(|_| {
                                perr(format!("hex literal 0x{h:X} does not fit in f32"), *span)
                            }),
                            ANum::Bool(_) => Err(perr("array<f32: ...> holds numbers", *span)),
                        })
                        .collect::<PResult<_>>()?,
                ),
                other => {
                    return Err(perr(
                        format!("unsupported array element type '{other}' (use i64 or f32)"),
                        *span,
                    ));
                }
            },
            AAttr::Dense(d, ty, span) => {
                let (shape, elem) = static_shape_of(ty).ok_or_else(|| {
                    perr(
                        format!("dense attribute needs a static tensor type, got {ty}"),
                        *span,
                    )
                })?;
                let bytes = dense_bytes(d, &shape, elem).map_err(|m| perr(m, *span))?;
                let blob = self
                    .m
                    .blobs
                    .add("cst", Some(bytes.into()), BlobForm::Inline);
                Attribute::Dense(DenseAttr {
                    ty: ty.clone(),
                    blob,
                })
            }
            AAttr::DenseResource(name, ty, span) => {
                let (shape, elem) = static_shape_of(ty).ok_or_else(|| {
                    perr(
                        format!("dense_resource needs a static tensor type, got {ty}"),
                        *span,
                    )
                })?;
                let blob = match self.m.blobs.find(name) {
                    Some(b) => b,
                    None => {
                        let bytes = self.resources.get(name).cloned();
                        if let Some(b) = &bytes {
                            let need = checked_product(&shape)
                                .and_then(|n| (n as usize).checked_mul(elem.byte_size()))
                                .unwrap_or(usize::MAX);
                            if b.len() != need && b.len() != elem.byte_size() {
                                return Err(perr(
                                    format!(
                                        "resource '{name}' holds {} bytes but {ty} needs {need}",
                                        b.len()
                                    ),
                                    *span,
                                ));
                            }
                        }
                        self.m.blobs.add(name, bytes, BlobForm::Resource)
                    }
                };
                Attribute::Dense(DenseAttr {
                    ty: ty.clone(),
                    blob,
                })
            }
            AAttr::Type(t) => Attribute::Type(t.clone()),
            AAttr::Dict(d) => self.dict(d)?,
        })
    }
}

fn unreachable_kind() -> PResult<()> {
    Err(perr("internal: unexpected module form", (0, 0)))
}

/// A hex literal's bits, refused when they do not fit the type's width (`0x7F128 : i8`), so
/// that every accepted literal prints back as text that parses.
fn hex_bits(bits: u64, t: ScalarType, span: Sp) -> PResult<u64> {
    let w = t.bit_width();
    if w < 64 && bits >> w != 0 {
        return Err(perr(
            format!("hex literal 0x{bits:X} does not fit in {t} ({w} bits)"),
            span,
        ));
    }
    Ok(bits)
}

/// A hex integer literal as MLIR reads it: the bit pattern of the type (`0xFF : i8` is -1).
fn hex_to_i64(bits: u64, t: ScalarType, span: Sp) -> PResult<i64> {
    let bits = hex_bits(bits, t, span)?;
    let w = t.bit_width();
    if t == ScalarType::I1 || t.is_unsigned() || w >= 64 {
        return to_i64(
            if w >= 64 && !t.is_unsigned() {
                bits as i64 as i128
            } else {
                bits as i128
            },
            t,
            span,
        );
    }
    // Sign-extend from the type's width.
    let shift = 64 - w;
    Ok(((bits << shift) as i64) >> shift)
}

fn to_i64(v: i128, t: ScalarType, span: Sp) -> PResult<i64> {
    let (lo, hi): (i128, i128) = match t {
        ScalarType::I1 => (0, 1),
        s if s.is_unsigned() => (0, (1i128 << s.bit_width()) - 1),
        s => (
            -(1i128 << (s.bit_width() - 1)),
            (1i128 << (s.bit_width() - 1)) - 1,
        ),
    };
    if v < lo || v > hi {
        return Err(perr(format!("integer {v} does not fit in {t}"), span));
    }
    Ok(v as i64)
}

fn round_to(v: f64, t: ScalarType) -> f64 {
    match t {
        ScalarType::F64 => v,
        ScalarType::F16 => half::f16::from_f64(v).to_f64(),
        ScalarType::BF16 => half::bf16::from_f64(v).to_f64(),
        _ => v as f32 as f64,
    }
}

fn float_from_bits(bits: u64, t: ScalarType) -> f64 {
    match t {
        ScalarType::F64 => f64::from_bits(bits),
        ScalarType::F16 => half::f16::from_bits(bits as u16).to_f64(),
        ScalarType::BF16 => half::bf16::from_bits(bits as u16).to_f64(),
        ScalarType::F8E4M3FN => f8e4m3fn_to_f64(bits as u8),
        _ => f32::from_bits(bits as u32) as f64,
    }
}

fn static_shape_of(t: &Type) -> Option<(Vec<u64>, ScalarType)> {
    match t {
        Type::Tensor(tt) => Some((tt.static_shape()?, tt.elem)),
        _ => None,
    }
}

fn decode_hex_bytes(h: &str) -> Result<Vec<u8>, String> {
    let h = h.strip_prefix("0x").ok_or("hex data must start with 0x")?;
    if !h.is_ascii() {
        return Err("invalid hex digit in data".into());
    }
    if h.len() % 2 != 0 {
        return Err("hex data has an odd number of digits".into());
    }
    (0..h.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&h[i..i + 2], 16)
                .map_err(|_| "invalid hex digit in data".to_string())
        })
        .collect()
}

fn decode_resource_hex(h: &str) -> Result<Arc<[u8]>, String> {
    let bytes = decode_hex_bytes(h)?;
    if bytes.len() < 4 {
        return Err("resource data must start with a 4-byte alignment".into());
    }
    Ok(bytes[4..].to_vec().into())
}

fn flatten_dense<'a>(d: &'a ADense, shape: &[u64], out: &mut Vec<&'a ANum>) -> Result<(), String> {
    match (d, shape.split_first()) {
        (ADense::Elem(n), None) => {
            out.push(n);
            Ok(())
        }
        (ADense::List(v), Some((&dim, rest))) => {
            if v.len() as u64 != dim {
                return Err(format!(
                    "dense literal has {} elements where the type needs {dim}",
                    v.len()
                ));
            }
            v.iter().try_for_each(|x| flatten_dense(x, rest, out))
        }
        (ADense::List(_), None) => {
            Err("dense literal is nested deeper than the tensor rank".into())
        }
        (ADense::Elem(_), Some(_)) => {
            Err("dense literal is not nested as deep as the tensor rank".into())
        }
        (ADense::Hex(_), _) => Err("hex string inside a dense list".into()),
    }
}

/// Converts a dense literal to little-endian element bytes (one element for a splat).
fn dense_bytes(d: &ADense, shape: &[u64], elem: ScalarType) -> Result<Vec<u8>, String> {
    let es = elem.byte_size();
    let numel = checked_product(shape).ok_or("tensor has too many elements")? as usize;
    if let ADense::Hex(h) = d {
        let bytes = decode_hex_bytes(h)?;
        if Some(bytes.len()) != numel.checked_mul(es) && bytes.len() != es {
            return Err(format!(
                "hex data holds {} bytes but the type needs {}",
                bytes.len(),
                numel * es
            ));
        }
        return Ok(bytes);
    }
    // `dense<>`: a tensor without elements (MLIR's spelling).
    if numel == 0 && matches!(d, ADense::List(v) if v.is_empty()) {
        return Ok(vec![]);
    }
    let mut elems = vec![];
    if let ADense::Elem(n) = d {
        elems.push(n);
    } else {
        flatten_dense(d, shape, &mut elems)?;
    }
    let mut out = Vec::with_capacity(elems.len() * es);
    for n in elems {
        encode_elem(n, elem, &mut out)?;
    }
    Ok(out)
}

fn encode_elem(n: &ANum, elem: ScalarType, out: &mut Vec<u8>) -> Result<(), String> {
    let es = elem.byte_size();
    if elem.is_float() {
        let v = match n {
            ANum::Float(f) => *f,
            ANum::Int(i) => *i as f64,
            ANum::Hex(h) => {
                if es < 8 && h >> (8 * es) != 0 {
                    return Err(format!(
                        "hex literal 0x{h:X} does not fit in {elem} ({} bits)",
                        8 * es
                    ));
                }
                out.extend_from_slice(&h.to_le_bytes()[..es]);
                return Ok(());
            }
            ANum::Bool(_) => return Err(format!("boolean in a {elem} dense literal")),
        };
        match elem {
            ScalarType::F64 => out.extend_from_slice(&v.to_le_bytes()),
            ScalarType::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
            ScalarType::F16 => out.extend_from_slice(&half::f16::from_f64(v).to_le_bytes()),
            ScalarType::BF16 => out.extend_from_slice(&half::bf16::from_f64(v).to_le_bytes()),
            _ => return Err("f8E4M3FN dense literals must use the hex form \"0x...\"".into()),
        }
        return Ok(());
    }
    let v: i128 = match n {
        ANum::Int(i) => *i,
        ANum::Bool(b) => *b as i128,
        ANum::Hex(h) => *h as i128,
        ANum::Float(_) => return Err(format!("float in a {elem} dense literal")),
    };
    if elem == ScalarType::I1 && !(0..=1).contains(&v) {
        return Err(format!("{v} is not a valid i1"));
    }
    let lo = if elem.is_unsigned() || elem == ScalarType::I1 {
        0
    } else {
        -(1i128 << (elem.bit_width() - 1))
    };
    let hi = if elem.is_unsigned() || elem == ScalarType::I1 {
        (1i128 << elem.bit_width()) - 1
    } else {
        (1i128 << (elem.bit_width() - 1)) - 1
    };
    if v < lo || v > hi {
        return Err(format!("{v} does not fit in {elem}"));
    }
    out.extend_from_slice(&(v as i64).to_le_bytes()[..es]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_handles_mlir_hex_escapes() {
        assert_eq!(unescape("\"a\\22b\\0A\"").unwrap(), "a\"b\n");
    }

    #[test]
    fn undefined_value_is_reported_at_its_use() {
        let src = "module {\n  func.func @f() {\n    \"x.y\"(%9) : (f32) -> ()\n    func.return\n  }\n}\n";
        let e = parse_module(src).unwrap_err();
        assert!(e.diagnostic.message.contains("undefined value '%9'"));
        assert_eq!(
            e.diagnostic.span.map(|s| s.start),
            Some(src.find("%9").unwrap() as u32)
        );
    }

    const CFG: &str = "module {\n  func.func @f() {\n    \"x.br\"()[^bb2] : () -> () loc(unknown)\n  ^bb1:\n    \"x.cond\"()[^bb1, ^bb2] : () -> () loc(unknown)\n  ^bb2:\n    func.return loc(unknown)\n  } loc(unknown)\n}\n";

    #[test]
    fn successors_resolve_to_blocks_of_their_region_and_may_come_later() {
        let m = parse_module(CFG).unwrap();
        let f = m.functions()[0];
        let blocks = &m.region(m.op(f).regions[0]).blocks;
        assert_eq!(blocks.len(), 3);
        let term = |b: BlockId| *m.block(b).ops.last().unwrap();
        assert_eq!(m.op(term(blocks[0])).successors, [blocks[2]]);
        assert_eq!(m.op(term(blocks[1])).successors, [blocks[1], blocks[2]]);
        assert_eq!(crate::ir::print_module(&m), CFG);
    }

    fn error_at(src: &str, at: &str) -> String {
        let e = parse_module(src).unwrap_err();
        assert_eq!(
            e.diagnostic.span.map(|s| s.start),
            Some(src.find(at).unwrap() as u32),
            "{}",
            e.diagnostic.message
        );
        e.diagnostic.message
    }

    #[test]
    fn an_undefined_successor_is_reported_at_its_label() {
        let src = CFG.replace("[^bb2]", "[^bb7]");
        assert_eq!(error_at(&src, "^bb7"), "use of undefined block '^bb7'");
    }

    #[test]
    fn a_successor_may_not_name_a_block_of_an_enclosing_region() {
        let src = r#"module {
  func.func @f() {
    "x.r"() ({
      "x.br"()[^bb1] : () -> ()
    }) : () -> ()
    "x.j"()[^bb1] : () -> ()
  ^bb1:
    func.return
  }
}
"#;
        assert_eq!(
            error_at(src, "^bb1]"),
            "'^bb1' is a block of an enclosing region; a successor must be a block of the op's own \
             region"
        );
    }

    #[test]
    fn a_block_label_defined_twice_in_a_region_is_an_error() {
        let src = CFG.replace("^bb2:", "^bb1:");
        let at = src.rfind("^bb1:").unwrap();
        let e = parse_module(&src).unwrap_err();
        assert_eq!(e.diagnostic.message, "redefinition of block '^bb1'");
        assert_eq!(e.diagnostic.span.map(|s| s.start), Some(at as u32));
    }

    #[test]
    fn malformed_successor_lists_are_located_parse_errors() {
        for (bad, at) in [
            ("[^bb2,]", "]"),
            ("[]", "]"),
            ("[%0]", "%0"),
            ("[^bb2(%x : i32)]", "("),
            ("[bb2]", "bb2"),
        ] {
            let src = CFG.replace("[^bb2]", bad);
            let e = parse_module(&src).unwrap_err();
            let want = src.find(bad).unwrap() + bad.find(at).unwrap();
            assert_eq!(
                e.diagnostic.span.map(|s| s.start),
                Some(want as u32),
                "{bad}: {}",
                e.diagnostic.message
            );
        }
    }
}
