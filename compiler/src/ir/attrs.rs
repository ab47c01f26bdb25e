//! Attributes (compile-time constants attached to operations), locations, and the module-level blob
//! table that holds large constant data.
//!
//! Invariants:
//! - Large data is never copied by passes: a dense attribute refers to a [`BlobId`] in the module's
//!   [`BlobTable`], whose bytes are an `Arc<[u8]>` (little-endian, row-major, `i1` one byte per element).
//!   A blob whose bytes hold exactly one element for a multi-element type is a splat.
//! - A blob parsed from an elided dump (`dense_resource<name>` with no data in the trailer) has
//!   `bytes == None`; it reprints identically and passes that need its data report an error.
//! - Each blob remembers whether it prints inline (`dense<...>`) or as a resource (`dense_resource<name>`),
//!   so print → parse → print is the identity.

use std::fmt;
use std::sync::Arc;

use super::types::{ScalarType, Type};

/// Handle of a blob in the module's [`BlobTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub u32);

/// How a dense constant is spelled in text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobForm {
    /// `dense<[1.0, 2.0]>` — small constants, always printed in full.
    Inline,
    /// `dense_resource<name>` — large constants; the data goes to the `{-# dialect_resources #-}` trailer
    /// only when printing in full.
    Resource,
}

/// One entry of the blob table.
#[derive(Clone, Debug)]
pub struct Blob {
    /// Unique resource name within the module.
    pub name: String,
    /// Raw element bytes, or `None` when the data was elided in the text this was parsed from.
    pub bytes: Option<Arc<[u8]>>,
    pub form: BlobForm,
}

/// Constants larger than this many bytes get [`BlobForm::Resource`] when created through
/// [`BlobTable::add_auto`].
pub const INLINE_BLOB_LIMIT: usize = 64;

/// Module-level table of constant data. Names are unique.
#[derive(Clone, Debug, Default)]
pub struct BlobTable {
    blobs: Vec<Blob>,
    by_name: std::collections::HashMap<String, BlobId>,
}

impl BlobTable {
    /// Adds a blob; the name is made unique by appending `_N` if needed.
    pub fn add(&mut self, name_hint: &str, bytes: Option<Arc<[u8]>>, form: BlobForm) -> BlobId {
        let mut base: String = name_hint
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if !base.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            base.insert(0, '_');
        }
        let base = base.as_str();
        let mut name = base.to_string();
        let mut n = 0;
        while self.by_name.contains_key(&name) {
            n += 1;
            name = format!("{base}_{n}");
        }
        let id = BlobId(self.blobs.len() as u32);
        self.by_name.insert(name.clone(), id);
        self.blobs.push(Blob { name, bytes, form });
        id
    }

    /// Adds data, choosing inline form for small data and resource form for large data.
    pub fn add_auto(&mut self, name_hint: &str, bytes: Arc<[u8]>) -> BlobId {
        let form = if bytes.len() > INLINE_BLOB_LIMIT {
            BlobForm::Resource
        } else {
            BlobForm::Inline
        };
        self.add(name_hint, Some(bytes), form)
    }

    /// The blob for a handle.
    pub fn get(&self, id: BlobId) -> &Blob {
        &self.blobs[id.0 as usize]
    }

    /// Finds a blob by resource name.
    pub fn find(&self, name: &str) -> Option<BlobId> {
        self.by_name.get(name).copied()
    }

    /// Sets the data of a blob (used when the resource trailer is parsed).
    pub fn set_bytes(&mut self, id: BlobId, bytes: Arc<[u8]>) {
        self.blobs[id.0 as usize].bytes = Some(bytes);
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// True when the table is empty.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }
}

/// A dense elements attribute: a static tensor type plus data in the blob table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DenseAttr {
    pub ty: Type,
    pub blob: BlobId,
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attribute {
    /// `5 : i64`
    Int(i64, ScalarType),
    /// `1.0e-5 : f32` (value stored as f64; printed via the attribute's type).
    Float(f64, ScalarType),
    /// `"text"`
    Str(String),
    /// `true` / `false`
    Bool(bool),
    /// `unit` (present-or-absent flag)
    Unit,
    /// `[a, b, ...]`
    Array(Vec<Attribute>),
    /// `array<i64: 1, 2>`
    DenseI64Array(Vec<i64>),
    /// `array<f32: 1.0, 2.0>`
    DenseF32Array(Vec<f32>),
    /// `dense<...> : tensor<...>` or `dense_resource<name> : tensor<...>`
    Dense(DenseAttr),
    /// A type used as an attribute: `tensor<4xf32>`, `bf16`
    Type(Type),
    /// `{a = 1 : i64, b = "x"}` (entries sorted by name)
    Dict(Vec<(String, Attribute)>),
}

impl Eq for Attribute {}

impl std::hash::Hash for Attribute {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Attribute::Int(v, t) => (v, t).hash(state),
            Attribute::Float(v, t) => (v.to_bits(), t).hash(state),
            Attribute::Str(s) => s.hash(state),
            Attribute::Bool(b) => b.hash(state),
            Attribute::Unit => {}
            Attribute::Array(a) => a.hash(state),
            Attribute::DenseI64Array(a) => a.hash(state),
            Attribute::DenseF32Array(a) => a.iter().for_each(|f| f.to_bits().hash(state)),
            Attribute::Dense(d) => d.hash(state),
            Attribute::Type(t) => t.hash(state),
            Attribute::Dict(d) => d.hash(state),
        }
    }
}

impl Attribute {
    /// The integer value of an `Int` attribute.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Attribute::Int(v, _) => Some(*v),
            _ => None,
        }
    }

    /// The value of a `Float` (or `Int`) attribute as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Attribute::Float(v, _) => Some(*v),
            Attribute::Int(v, _) => Some(*v as f64),
            _ => None,
        }
    }

    /// The string of a `Str` attribute.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Attribute::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value of a `Bool` attribute.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Attribute::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// An i64 list from `array<i64: ...>` or an array of integers.
    pub fn as_i64_list(&self) -> Option<Vec<i64>> {
        match self {
            Attribute::DenseI64Array(v) => Some(v.clone()),
            Attribute::Array(a) => a.iter().map(Attribute::as_int).collect(),
            _ => None,
        }
    }

    /// The type of a `Type` attribute.
    pub fn as_type(&self) -> Option<&Type> {
        match self {
            Attribute::Type(t) => Some(t),
            _ => None,
        }
    }

    /// The dense payload.
    pub fn as_dense(&self) -> Option<&DenseAttr> {
        match self {
            Attribute::Dense(d) => Some(d),
            _ => None,
        }
    }

    /// Shorthand for an `i64` integer attribute.
    pub fn i64(v: i64) -> Attribute {
        Attribute::Int(v, ScalarType::I64)
    }

    /// Shorthand for an `f32` float attribute.
    pub fn f32(v: f32) -> Attribute {
        Attribute::Float(v as f64, ScalarType::F32)
    }

    /// Shorthand for a string attribute.
    pub fn str(s: impl Into<String>) -> Attribute {
        Attribute::Str(s.into())
    }
}

/// Where an operation came from. Kept through every pass so costs can be charged to ONNX nodes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum Location {
    /// `loc(unknown)`
    #[default]
    Unknown,
    /// `loc("onnx_node_name")`
    Name(Arc<str>),
    /// `loc(fused["a", "b"])` — an op made from several sources.
    Fused(Vec<Arc<str>>),
}

impl Location {
    /// A named location.
    pub fn name(s: &str) -> Location {
        Location::Name(s.into())
    }

    /// The source names this location covers (empty for unknown).
    pub fn names(&self) -> Vec<Arc<str>> {
        match self {
            Location::Unknown => vec![],
            Location::Name(n) => vec![n.clone()],
            Location::Fused(v) => v.clone(),
        }
    }

    /// Fuses locations, keeping every distinct source name in order of first appearance.
    pub fn fuse<'a>(locs: impl IntoIterator<Item = &'a Location>) -> Location {
        let mut names: Vec<Arc<str>> = Vec::new();
        for l in locs {
            for n in l.names() {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        match names.len() {
            0 => Location::Unknown,
            1 => Location::Name(names.pop().unwrap_or_else(|| "".into())),
            _ => Location::Fused(names),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Unknown => f.write_str("loc(unknown)"),
            Location::Name(n) => {
                f.write_str("loc(")?;
                super::print::write_string_literal(f, n)?;
                f.write_str(")")
            }
            Location::Fused(v) => {
                f.write_str("loc(fused[")?;
                for (i, n) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    super::print::write_string_literal(f, n)?;
                }
                f.write_str("])")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_location_keeps_all_distinct_sources_in_order() {
        let a = Location::name("a");
        let b = Location::Fused(vec!["b".into(), "a".into()]);
        assert_eq!(
            Location::fuse([&a, &b]).to_string(),
            "loc(fused[\"a\", \"b\"])"
        );
        assert_eq!(Location::fuse([&a, &a]), a);
    }

    #[test]
    fn blob_names_are_made_unique() {
        let mut t = BlobTable::default();
        let a = t.add("w", None, BlobForm::Resource);
        let b = t.add("w", None, BlobForm::Resource);
        assert_eq!(t.get(a).name, "w");
        assert_eq!(t.get(b).name, "w_1");
    }
}
