//! IR → text, in MLIR syntax that `mlir-opt --allow-unregistered-dialect` accepts and our parser reads back.
//!
//! Shape of the output: `module { func.func @f(...) -> ... { <generic ops> func.return ... } loc(..) }`,
//! every other op in generic form `%0 = "d.op"(%a) ({regions}) {attrs} : (T) -> T loc(...)`.
//! Invariants: values are numbered in definition order per function (`%argN` block args, `%N` results,
//! `%N:k` / `%N#i` for multi-result ops); blocks are `^bbN`, N their position in their region, and a
//! block is labeled when it is not the first, has arguments, is empty or is some op's successor.
//! Successors print MLIR's way, right after the operands: `"llmpu.bne"()[^bb1, ^bb2] {...}`; a
//! successor that is not a block of the op's region (invalid IR, caught by the verifier) prints as
//! `^<<UNKNOWN N>>`, which does not parse back. Printing is deterministic, so print → parse → print
//! is the identity. Large constants print as `dense_resource<name>`; with
//! [`PrintOptions::elide_large_constants`] off their bytes follow in a `{-# dialect_resources #-}` trailer.

use std::collections::HashMap;
use std::fmt::{self, Write};

use super::attrs::{Attribute, BlobForm, BlobId, DenseAttr};
use super::module::{BlockId, Module, OpId, RegionId, ValueId};
use super::types::{ScalarType, Type};

/// Printing options.
#[derive(Clone, Copy, Debug)]
pub struct PrintOptions {
    /// Print `dense_resource<name>` without data (default). When false, the data is printed in the
    /// resource trailer.
    pub elide_large_constants: bool,
}

impl Default for PrintOptions {
    fn default() -> Self {
        PrintOptions {
            elide_large_constants: true,
        }
    }
}

/// Alignment recorded in printed resource blobs.
const RESOURCE_ALIGNMENT: u32 = 8;

/// Prints a module with default options (large constants elided).
pub fn print_module(m: &Module) -> String {
    print_module_with(m, PrintOptions::default())
}

/// Prints a module.
pub fn print_module_with(m: &Module, opts: PrintOptions) -> String {
    let mut p = Printer {
        m,
        out: String::new(),
        names: HashMap::new(),
        labels: HashMap::new(),
        next_result: 0,
        next_arg: 0,
        blobs: vec![],
    };
    p.module();
    if !opts.elide_large_constants {
        p.trailer();
    }
    p.out
}

/// Writes a string literal with MLIR escapes (`\22` for a quote, `\\`, `\XX` for non-printable bytes).
pub fn write_string_literal(f: &mut impl Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for b in s.bytes() {
        match b {
            b'"' => f.write_str("\\22")?,
            b'\\' => f.write_str("\\\\")?,
            0x20..=0x7e => f.write_char(b as char)?,
            _ => write!(f, "\\{b:02X}")?,
        }
    }
    f.write_char('"')
}

/// Formats a float so MLIR's lexer accepts it (always has a `.`), shortest round-trip digits for `ty`.
pub fn format_float(v: f64, ty: ScalarType) -> String {
    let s = match ty {
        ScalarType::F64 => format!("{v:?}"),
        _ => format!("{:?}", v as f32),
    };
    if let Some(e) = s.find('e') {
        if s[..e].contains('.') {
            s
        } else {
            format!("{}.0{}", &s[..e], &s[e..])
        }
    } else {
        s
    }
}

/// Raw bits of a float value in the given float type (for non-finite values printed as hex).
pub fn float_bits(v: f64, ty: ScalarType) -> u64 {
    match ty {
        ScalarType::F64 => v.to_bits(),
        ScalarType::F16 => half::f16::from_f64(v).to_bits() as u64,
        ScalarType::BF16 => half::bf16::from_f64(v).to_bits() as u64,
        ScalarType::F8E4M3FN => 0x7F,
        _ => (v as f32).to_bits() as u64,
    }
}

struct Printer<'m> {
    m: &'m Module,
    out: String,
    names: HashMap<ValueId, String>,
    /// Labels of the blocks of the region being printed (successors may only name these).
    labels: HashMap<BlockId, String>,
    next_result: u32,
    next_arg: u32,
    blobs: Vec<BlobId>,
}

impl Printer<'_> {
    fn indent(&mut self, depth: usize) {
        for _ in 0..depth {
            self.out.push_str("  ");
        }
    }

    fn module(&mut self) {
        let top = self.m.top();
        self.out.push_str("module");
        self.attr_dict_with_keyword(top, &[]);
        self.out.push_str(" {\n");
        for &op in &self.m.block(self.m.body()).ops {
            self.op(op, 1);
        }
        self.out.push('}');
        let loc = &self.m.op(top).loc;
        if *loc != super::attrs::Location::Unknown {
            let _ = write!(self.out, " {loc}");
        }
        self.out.push('\n');
    }

    fn attr_dict_with_keyword(&mut self, op: OpId, skip: &[&str]) {
        let attrs: Vec<_> = self
            .m
            .op(op)
            .attrs
            .iter()
            .filter(|(n, _)| !skip.contains(&n.as_str()))
            .collect();
        if !attrs.is_empty() {
            self.out.push_str(" attributes ");
            self.dict(attrs.into_iter().map(|(n, a)| (n.as_str(), a)));
        }
    }

    fn name_of(&self, v: ValueId) -> String {
        self.names
            .get(&v)
            .cloned()
            .unwrap_or_else(|| format!("%<<UNKNOWN {}>>", v.0))
    }

    fn op(&mut self, op: OpId, depth: usize) {
        let d = self.m.op(op);
        self.indent(depth);
        if d.name == "func.func" && self.is_printable_func(op) {
            self.func(op, depth);
        } else if d.name == "func.return"
            && d.regions.is_empty()
            && d.results.is_empty()
            && d.attrs.is_empty()
        {
            self.out.push_str("func.return");
            if !d.operands.is_empty() {
                self.out.push(' ');
                self.value_list(&d.operands);
                self.out.push_str(" : ");
                let tys: Vec<String> = d
                    .operands
                    .iter()
                    .map(|&v| self.m.value_type(v).to_string())
                    .collect();
                self.out.push_str(&tys.join(", "));
            }
            let _ = write!(self.out, " {}", d.loc);
            self.out.push('\n');
        } else {
            self.generic(op, depth);
        }
    }

    fn is_printable_func(&self, op: OpId) -> bool {
        let d = self.m.op(op);
        let has_sym = matches!(d.attr("sym_name"), Some(Attribute::Str(s)) if is_bare_symbol(s));
        let ft_ok = matches!(
            d.attr("function_type"),
            Some(Attribute::Type(Type::Function(..)))
        );
        d.regions.len() == 1
            && d.operands.is_empty()
            && d.results.is_empty()
            && d.successors.is_empty()
            && has_sym
            && ft_ok
            && !self.m.region(d.regions[0]).blocks.is_empty()
    }

    fn func(&mut self, op: OpId, depth: usize) {
        let (saved_r, saved_a) = (self.next_result, self.next_arg);
        self.next_result = 0;
        self.next_arg = 0;
        let d = self.m.op(op);
        let sym = d
            .attr("sym_name")
            .and_then(Attribute::as_str)
            .unwrap_or_default();
        let results = match d.attr("function_type") {
            Some(Attribute::Type(Type::Function(_, r))) => r.clone(),
            _ => vec![],
        };
        let arg_attrs = match d.attr("arg_attrs") {
            Some(Attribute::Array(a)) => a.clone(),
            _ => vec![],
        };
        let res_attrs = match d.attr("res_attrs") {
            Some(Attribute::Array(a)) => a.clone(),
            _ => vec![],
        };
        let entry = self.m.region(d.regions[0]).blocks[0];
        let _ = write!(self.out, "func.func @{sym}(");
        let args = self.m.block(entry).args.clone();
        for (i, &a) in args.iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            let name = format!("%arg{}", self.next_arg);
            self.next_arg += 1;
            let _ = write!(self.out, "{name}: {}", self.m.value_type(a));
            self.names.insert(a, name);
            self.arg_attr(arg_attrs.get(i));
        }
        self.out.push(')');
        if !results.is_empty() {
            self.out.push_str(" -> ");
            let wrap = results.len() > 1
                || res_attrs
                    .iter()
                    .any(|a| !matches!(a, Attribute::Dict(d) if d.is_empty()))
                || matches!(results[0], Type::Function(..));
            if wrap {
                self.out.push('(');
            }
            for (i, t) in results.iter().enumerate() {
                if i > 0 {
                    self.out.push_str(", ");
                }
                let _ = write!(self.out, "{t}");
                self.arg_attr(res_attrs.get(i));
            }
            if wrap {
                self.out.push(')');
            }
        }
        self.attr_dict_with_keyword(op, &["sym_name", "function_type", "arg_attrs", "res_attrs"]);
        self.out.push_str(" {\n");
        let region = d.regions[0];
        let saved_labels = self.enter_region(region);
        let blocks = self.m.region(region).blocks.clone();
        // The entry block's arguments are the signature's; it is labeled only when it must be (a
        // successor names it, or it is empty before other blocks: both invalid, but the text keeps
        // them).
        let empty_entry = self.m.block(entry).ops.is_empty() && blocks.len() > 1;
        if empty_entry || self.labels_needed(region).contains(&entry) {
            self.indent(depth);
            self.out.push_str("^bb0:\n");
        }
        let ops = self.m.block(entry).ops.clone();
        for o in ops {
            self.op(o, depth + 1);
        }
        for (i, &b) in blocks.iter().enumerate().skip(1) {
            self.block(b, i, depth, true);
        }
        self.labels = saved_labels;
        self.indent(depth);
        let _ = writeln!(self.out, "}} {}", self.m.op(op).loc);
        self.next_result = saved_r;
        self.next_arg = saved_a;
    }

    fn arg_attr(&mut self, a: Option<&Attribute>) {
        if let Some(Attribute::Dict(d)) = a
            && !d.is_empty()
        {
            self.out.push(' ');
            self.dict(d.iter().map(|(n, a)| (n.as_str(), a)));
        }
    }

    fn value_list(&mut self, vs: &[ValueId]) {
        for (i, &v) in vs.iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            let n = self.name_of(v);
            self.out.push_str(&n);
        }
    }

    fn generic(&mut self, op: OpId, depth: usize) {
        let d = self.m.op(op);
        let results = d.results.clone();
        if !results.is_empty() {
            let base = format!("%{}", self.next_result);
            self.next_result += 1;
            if results.len() == 1 {
                self.names.insert(results[0], base.clone());
                let _ = write!(self.out, "{base} = ");
            } else {
                for (i, &r) in results.iter().enumerate() {
                    self.names.insert(r, format!("{base}#{i}"));
                }
                let _ = write!(self.out, "{base}:{} = ", results.len());
            }
        }
        self.out.push('"');
        self.out.push_str(&escape_plain(&d.name));
        self.out.push_str("\"(");
        self.value_list(&d.operands.clone());
        self.out.push(')');
        if !d.successors.is_empty() {
            self.out.push('[');
            for (i, b) in d.successors.iter().enumerate() {
                if i > 0 {
                    self.out.push_str(", ");
                }
                match self.labels.get(b) {
                    Some(l) => self.out.push_str(l),
                    None => {
                        let _ = write!(self.out, "^<<UNKNOWN {}>>", b.0);
                    }
                }
            }
            self.out.push(']');
        }
        let regions = d.regions.clone();
        if !regions.is_empty() {
            self.out.push_str(" (");
            for (i, &r) in regions.iter().enumerate() {
                if i > 0 {
                    self.out.push_str(", ");
                }
                self.region(r, depth);
            }
            self.out.push(')');
        }
        let d = self.m.op(op);
        if !d.attrs.is_empty() {
            self.out.push(' ');
            self.dict(d.attrs.iter().map(|(n, a)| (n.as_str(), a)));
        }
        self.out.push_str(" : (");
        let ins: Vec<String> = d
            .operands
            .iter()
            .map(|&v| self.m.value_type(v).to_string())
            .collect();
        self.out.push_str(&ins.join(", "));
        self.out.push_str(") -> ");
        let outs: Vec<Type> = d
            .results
            .iter()
            .map(|&v| self.m.value_type(v).clone())
            .collect();
        let _ = write!(self.out, "{}", ResultTypes(&outs));
        let _ = writeln!(self.out, " {}", d.loc);
    }

    /// Makes the blocks of `r` the ones successors can name; returns the labels to restore after it.
    fn enter_region(&mut self, r: RegionId) -> HashMap<BlockId, String> {
        let labels = self
            .m
            .region(r)
            .blocks
            .iter()
            .enumerate()
            .map(|(i, &b)| (b, format!("^bb{i}")))
            .collect();
        std::mem::replace(&mut self.labels, labels)
    }

    /// Blocks of `r` some op of `r` names as a successor (these must be labeled).
    fn labels_needed(&self, r: RegionId) -> std::collections::HashSet<BlockId> {
        let mut out = std::collections::HashSet::new();
        for &b in &self.m.region(r).blocks {
            for &o in &self.m.block(b).ops {
                out.extend(self.m.op(o).successors.iter().copied());
            }
        }
        out
    }

    fn region(&mut self, r: RegionId, depth: usize) {
        self.out.push_str("{\n");
        let saved_labels = self.enter_region(r);
        let targets = self.labels_needed(r);
        let blocks = self.m.region(r).blocks.clone();
        for (i, &b) in blocks.iter().enumerate() {
            self.block(b, i, depth, targets.contains(&b));
        }
        self.labels = saved_labels;
        self.indent(depth);
        self.out.push('}');
    }

    fn block(&mut self, b: BlockId, index: usize, depth: usize, target: bool) {
        let bd = self.m.block(b);
        let args = bd.args.clone();
        let ops = bd.ops.clone();
        if index > 0 || !args.is_empty() || ops.is_empty() || target {
            self.indent(depth);
            let _ = write!(self.out, "^bb{index}");
            if !args.is_empty() {
                self.out.push('(');
                for (i, &a) in args.iter().enumerate() {
                    if i > 0 {
                        self.out.push_str(", ");
                    }
                    let name = format!("%arg{}", self.next_arg);
                    self.next_arg += 1;
                    let _ = write!(self.out, "{name}: {}", self.m.value_type(a));
                    self.names.insert(a, name);
                }
                self.out.push(')');
            }
            self.out.push_str(":\n");
        }
        for o in ops {
            self.op(o, depth + 1);
        }
    }

    fn dict<'a>(&mut self, entries: impl Iterator<Item = (&'a str, &'a Attribute)>) {
        self.out.push('{');
        for (i, (n, a)) in entries.enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            if is_bare_ident(n) {
                self.out.push_str(n);
            } else {
                let _ = write_string_literal(&mut self.out, n);
            }
            if *a != Attribute::Unit {
                self.out.push_str(" = ");
                self.attr(a);
            }
        }
        self.out.push('}');
    }

    fn attr(&mut self, a: &Attribute) {
        match a {
            Attribute::Int(v, t) => {
                if t.is_unsigned() {
                    let _ = write!(self.out, "{} : {t}", *v as u64);
                } else {
                    let _ = write!(self.out, "{v} : {t}");
                }
            }
            Attribute::Float(v, t) => {
                if v.is_finite() {
                    let _ = write!(self.out, "{} : {t}", format_float(*v, *t));
                } else {
                    let _ = write!(self.out, "0x{:X} : {t}", float_bits(*v, *t));
                }
            }
            Attribute::Str(s) => {
                let _ = write_string_literal(&mut self.out, s);
            }
            Attribute::Bool(b) => {
                let _ = write!(self.out, "{b}");
            }
            Attribute::Unit => self.out.push_str("unit"),
            Attribute::Array(v) => {
                self.out.push('[');
                for (i, a) in v.iter().enumerate() {
                    if i > 0 {
                        self.out.push_str(", ");
                    }
                    self.attr(a);
                }
                self.out.push(']');
            }
            Attribute::DenseI64Array(v) => {
                self.out.push_str("array<i64");
                for (i, x) in v.iter().enumerate() {
                    self.out.push_str(if i == 0 { ": " } else { ", " });
                    let _ = write!(self.out, "{x}");
                }
                self.out.push('>');
            }
            Attribute::DenseF32Array(v) => {
                self.out.push_str("array<f32");
                for (i, x) in v.iter().enumerate() {
                    self.out.push_str(if i == 0 { ": " } else { ", " });
                    if x.is_finite() {
                        self.out.push_str(&format_float(*x as f64, ScalarType::F32));
                    } else {
                        let _ = write!(self.out, "0x{:X}", x.to_bits());
                    }
                }
                self.out.push('>');
            }
            Attribute::Dense(d) => self.dense(d),
            Attribute::Type(t) => {
                let _ = write!(self.out, "{t}");
            }
            Attribute::Dict(d) => self.dict(d.iter().map(|(n, a)| (n.as_str(), a))),
        }
    }

    fn dense(&mut self, d: &DenseAttr) {
        let blob = self.m.blobs.get(d.blob);
        match (&blob.bytes, blob.form) {
            (Some(bytes), BlobForm::Inline) => {
                self.out.push_str("dense<");
                let text = format_dense_inline(&d.ty, bytes);
                self.out.push_str(&text);
                let _ = write!(self.out, "> : {}", d.ty);
            }
            _ => {
                let _ = write!(self.out, "dense_resource<{}> : {}", blob.name, d.ty);
                if blob.bytes.is_some() && !self.blobs.contains(&d.blob) {
                    self.blobs.push(d.blob);
                }
            }
        }
    }

    fn trailer(&mut self) {
        if self.blobs.is_empty() {
            return;
        }
        self.out
            .push_str("\n{-#\n  dialect_resources: {\n    builtin: {\n");
        let blobs = std::mem::take(&mut self.blobs);
        for (i, b) in blobs.iter().enumerate() {
            let blob = self.m.blobs.get(*b);
            let _ = write!(self.out, "      {}: \"0x", blob.name);
            for byte in RESOURCE_ALIGNMENT.to_le_bytes() {
                let _ = write!(self.out, "{byte:02X}");
            }
            for byte in blob.bytes.as_deref().unwrap_or_default() {
                let _ = write!(self.out, "{byte:02X}");
            }
            self.out.push('"');
            if i + 1 < blobs.len() {
                self.out.push(',');
            }
            self.out.push('\n');
        }
        self.out.push_str("    }\n  }\n#-}\n");
    }
}

struct ResultTypes<'a>(&'a [Type]);
impl fmt::Display for ResultTypes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        super::types::write_results(f, self.0)
    }
}

fn escape_plain(s: &str) -> String {
    let mut o = String::new();
    let _ = write_string_literal(&mut o, s);
    o[1..o.len() - 1].to_string()
}

/// True if `s` can be printed as a bare identifier (attribute name).
pub fn is_bare_ident(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '$' | '.'))
}

fn is_bare_symbol(s: &str) -> bool {
    is_bare_ident(s)
}

/// Reads element `i` of little-endian data as f64 (floats) or i128 (ints).
pub(crate) enum Elem {
    Int(i128),
    Float(f64),
    Bool(bool),
}

pub(crate) fn read_elem(bytes: &[u8], i: usize, t: ScalarType) -> Elem {
    let s = t.byte_size();
    let b = &bytes[i * s..(i + 1) * s];
    let mut buf = [0u8; 8];
    buf[..s].copy_from_slice(b);
    let raw = u64::from_le_bytes(buf);
    match t {
        ScalarType::F64 => Elem::Float(f64::from_bits(raw)),
        ScalarType::F32 => Elem::Float(f32::from_bits(raw as u32) as f64),
        ScalarType::F16 => Elem::Float(half::f16::from_bits(raw as u16).to_f64()),
        ScalarType::BF16 => Elem::Float(half::bf16::from_bits(raw as u16).to_f64()),
        ScalarType::F8E4M3FN => Elem::Float(f8e4m3fn_to_f64(raw as u8)),
        ScalarType::I1 => Elem::Bool(raw != 0),
        ScalarType::I64 => Elem::Int(raw as i64 as i128),
        ScalarType::I32 => Elem::Int(raw as u32 as i32 as i128),
        ScalarType::I16 => Elem::Int(raw as u16 as i16 as i128),
        ScalarType::I8 => Elem::Int(raw as u8 as i8 as i128),
        _ => Elem::Int(raw as i128),
    }
}

/// Decodes an `f8E4M3FN` byte (no infinities; `0x7F`/`0xFF` are NaN).
pub fn f8e4m3fn_to_f64(b: u8) -> f64 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = ((b >> 3) & 0xF) as i32;
    let man = (b & 0x7) as f64;
    if exp == 0xF && (b & 0x7) == 0x7 {
        return f64::NAN;
    }
    if exp == 0 {
        sign * man / 8.0 * 2f64.powi(-6)
    } else {
        sign * (1.0 + man / 8.0) * 2f64.powi(exp - 7)
    }
}

fn format_dense_inline(ty: &Type, bytes: &[u8]) -> String {
    let (shape, elem) = match ty {
        Type::Tensor(t) => (t.static_shape().unwrap_or_default(), t.elem),
        Type::Buffer(b) => (b.shape.clone(), b.elem),
        _ => (vec![], ScalarType::I8),
    };
    let n = bytes.len() / elem.byte_size().max(1);
    let any_nonfinite = elem.is_float()
        && (0..n).any(|i| matches!(read_elem(bytes, i, elem), Elem::Float(f) if !f.is_finite()));
    if elem == ScalarType::F8E4M3FN || any_nonfinite || n * elem.byte_size() != bytes.len() {
        return hex_string(bytes);
    }
    let fmt_elem = |i: usize| match read_elem(bytes, i, elem) {
        Elem::Int(v) => v.to_string(),
        Elem::Float(f) => format_float(f, elem),
        Elem::Bool(b) => b.to_string(),
    };
    let numel = super::types::checked_product(&shape).unwrap_or(u64::MAX);
    if numel == 0 {
        // MLIR spells a tensor without elements `dense<>`.
        return String::new();
    }
    if n != 1 && n as u64 != numel {
        return hex_string(bytes);
    }
    if n == 1 && (numel != 1 || shape.is_empty()) {
        return fmt_elem(0);
    }
    let mut s = String::new();
    let mut idx = 0usize;
    nested(&mut s, &shape, &mut idx, &fmt_elem);
    s
}

fn hex_string(bytes: &[u8]) -> String {
    let mut s = String::from("\"0x");
    for b in bytes {
        let _ = write!(s, "{b:02X}");
    }
    s.push('"');
    s
}

fn nested(s: &mut String, shape: &[u64], idx: &mut usize, f: &dyn Fn(usize) -> String) {
    match shape.split_first() {
        None => {
            s.push_str(&f(*idx));
            *idx += 1;
        }
        Some((&d, rest)) => {
            s.push('[');
            for i in 0..d {
                if i > 0 {
                    s.push_str(", ");
                }
                nested(s, rest, idx, f);
            }
            s.push(']');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_always_have_a_decimal_point() {
        assert_eq!(format_float(1e-5, ScalarType::F32), "1.0e-5");
        assert_eq!(format_float(2.5, ScalarType::F32), "2.5");
        assert_eq!(format_float(1.0, ScalarType::F64), "1.0");
    }

    #[test]
    fn strings_escape_quotes_and_non_printables() {
        let mut s = String::new();
        write_string_literal(&mut s, "a\"b\n").unwrap();
        assert_eq!(s, "\"a\\22b\\0A\"");
    }

    #[test]
    fn f8e4m3fn_decodes_known_values() {
        assert_eq!(f8e4m3fn_to_f64(0x38), 1.0);
        assert_eq!(f8e4m3fn_to_f64(0x7E), 448.0);
        assert!(f8e4m3fn_to_f64(0x7F).is_nan());
    }
}
