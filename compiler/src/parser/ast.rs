//! Syntax tree produced by the grammar, before names are resolved into a [`crate::ir::Module`].
//!
//! Invariant: every node that can be the subject of an error carries its byte span `(start, end)`.

use crate::ir::{Location, Type};

/// Byte range in the source.
pub type Sp = (usize, usize);

/// A whole file: top-level ops and the optional `{-# ... #-}` trailer entries.
#[derive(Debug)]
pub struct AFile {
    pub ops: Vec<AOp>,
    pub metadata: Vec<AMeta>,
}

/// An entry of the file metadata trailer: `key: "value"` or `key: { ... }`.
#[derive(Debug)]
pub enum AMeta {
    Str(String, String, Sp),
    Dict(String, Vec<AMeta>),
}

/// One operation.
#[derive(Debug)]
pub struct AOp {
    pub span: Sp,
    /// End of the op's name (diagnostics underline `%0 = "graph.add"`).
    pub name_end: usize,
    /// `%name` and its result count (`%0:2` → 2).
    pub results: Vec<(String, u32, Sp)>,
    pub kind: AOpKind,
    pub loc: Option<Location>,
}

/// The syntactic form of an op.
#[derive(Debug)]
pub enum AOpKind {
    Generic {
        name: String,
        operands: Vec<AValue>,
        /// `[^bb1, ^bb2]` after the operands.
        successors: Vec<ABlockRef>,
        props: Vec<AAttrEntry>,
        regions: Vec<ARegion>,
        attrs: Vec<AAttrEntry>,
        fn_type: (Vec<Type>, Vec<Type>),
        type_span: Sp,
    },
    Module {
        attrs: Vec<AAttrEntry>,
        body: ARegion,
    },
    Func {
        sym: String,
        args: Vec<AArg>,
        results: Vec<(Type, Vec<AAttrEntry>)>,
        attrs: Vec<AAttrEntry>,
        body: ARegion,
    },
    Return {
        operands: Vec<AValue>,
        types: Vec<Type>,
        type_span: Sp,
    },
}

/// A use of a value: `%3` or `%3#1`.
#[derive(Debug, Clone)]
pub struct AValue {
    pub name: String,
    pub span: Sp,
}

/// A block or function argument.
#[derive(Debug)]
pub struct AArg {
    pub name: String,
    pub ty: Type,
    pub attrs: Vec<AAttrEntry>,
    pub span: Sp,
}

/// A region: blocks in order (the entry block may be unlabeled).
#[derive(Debug)]
pub struct ARegion {
    pub blocks: Vec<ABlock>,
}

/// A block label where it is defined (`^bb1:`) or named as a successor (`[^bb1]`).
#[derive(Debug, Clone)]
pub struct ABlockRef {
    pub label: String,
    pub span: Sp,
}

/// A block.
#[derive(Debug)]
pub struct ABlock {
    pub label: Option<ABlockRef>,
    pub args: Vec<AArg>,
    pub ops: Vec<AOp>,
}

/// `name = value` in an attribute dictionary (`value` is `Unit` when omitted).
#[derive(Debug)]
pub struct AAttrEntry {
    pub name: String,
    pub value: AAttr,
    pub span: Sp,
}

/// An attribute before blob resolution.
#[derive(Debug)]
pub enum AAttr {
    Int(i128, Option<Type>, Sp),
    Float(f64, Option<Type>, Sp),
    /// A hex literal: only valid with a float or integer type.
    Hex(u64, Type, Sp),
    Str(String),
    Bool(bool),
    Unit,
    Array(Vec<AAttr>),
    DenseArray(String, Vec<ANum>, Sp),
    Dense(ADense, Type, Sp),
    DenseResource(String, Type, Sp),
    Type(Type),
    Dict(Vec<AAttrEntry>),
}

/// A number in an `array<...>` or `dense<...>` literal.
#[derive(Debug, Clone)]
pub enum ANum {
    Int(i128),
    Float(f64),
    Hex(u64),
    Bool(bool),
}

/// The body of `dense<...>`.
#[derive(Debug)]
pub enum ADense {
    Elem(ANum),
    /// `"0x..."` raw little-endian data.
    Hex(String),
    List(Vec<ADense>),
}
