//! The IR container: arenas of operations, values, blocks and regions addressed by typed `u32` handles.
//!
//! Invariants:
//! - Handles index into the arenas of the [`Module`] that created them; they are never reused. Erasing an
//!   op detaches it from its block and marks it (and everything nested in it) erased; the slot stays.
//! - `ValueData::def` is the single source of truth for where a value is defined; results are created only
//!   by [`Module::create_op`], block arguments only by [`Module::add_block`] / [`Module::add_block_arg`].
//! - Attributes of an op are kept sorted by name (MLIR's dictionary order), so printing is canonical.
//! - The top-level op is a `builtin.module` with one region holding one block.
//! - Use lists are not stored; they are computed by scanning ([`Module::uses`]), which keeps every
//!   mutation trivially consistent. The same holds for a block's predecessors
//!   ([`Module::predecessors`]).
//! - Successors (`OpData::successors`, MLIR's `[^bb1, ^bb2]`) are blocks of the region holding the op,
//!   and an op with successors is the last op of its block; the verifier checks both, the module does
//!   not enforce them while a pass rewrites.

use std::fmt;

use super::attrs::{Attribute, BlobTable, Location};
use super::types::Type;

macro_rules! handle {
    ($(#[$m:meta])* $name:ident, $prefix:literal) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u32);
        impl $name {
            /// Arena index.
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

handle!(
    /// Handle of an operation.
    OpId,
    "op#"
);
handle!(
    /// Handle of an SSA value (op result or block argument). Printed text names (`%3`) are assigned by
    /// the printer; `Display` gives the arena spelling `%v3` for messages.
    ValueId,
    "%v"
);
handle!(
    /// Handle of a block.
    BlockId,
    "^b"
);
handle!(
    /// Handle of a region.
    RegionId,
    "region#"
);

/// A byte range in the source text an op was parsed from (for diagnostics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

/// Where a value is defined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueDef {
    /// Result `index` of `op`.
    OpResult(OpId, u32),
    /// Argument `index` of `block`.
    BlockArg(BlockId, u32),
}

/// Arena entry of a value.
#[derive(Clone, Debug)]
pub struct ValueData {
    pub ty: Type,
    pub def: ValueDef,
}

/// Arena entry of an operation.
#[derive(Clone, Debug)]
pub struct OpData {
    /// Full name `dialect.op` (e.g. `graph.matmul`).
    pub name: String,
    pub operands: Vec<ValueId>,
    /// Results (do not edit; created by [`Module::create_op`]).
    pub results: Vec<ValueId>,
    /// Attributes sorted by name; use [`Module::set_attr`] to keep the order.
    pub attrs: Vec<(String, Attribute)>,
    /// Owned regions (created by [`Module::add_region`]).
    pub regions: Vec<RegionId>,
    /// Blocks control may go to after this op (a terminator's targets), in the op's own order.
    pub successors: Vec<BlockId>,
    pub loc: Location,
    /// Containing block, `None` when detached or top-level.
    pub parent: Option<BlockId>,
    /// Source span when parsed from text.
    pub span: Option<Span>,
    pub erased: bool,
}

impl OpData {
    /// Looks up an attribute by name.
    pub fn attr(&self, name: &str) -> Option<&Attribute> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }
}

/// Arena entry of a block.
#[derive(Clone, Debug, Default)]
pub struct BlockData {
    pub args: Vec<ValueId>,
    pub ops: Vec<OpId>,
    pub parent: Option<RegionId>,
}

/// Arena entry of a region.
#[derive(Clone, Debug, Default)]
pub struct RegionData {
    pub blocks: Vec<BlockId>,
    pub parent: Option<OpId>,
}

/// Everything needed to create an operation.
#[derive(Clone, Debug, Default)]
pub struct OpSpec {
    pub name: String,
    pub operands: Vec<ValueId>,
    pub result_types: Vec<Type>,
    pub attrs: Vec<(String, Attribute)>,
    pub successors: Vec<BlockId>,
    pub loc: Location,
}

impl OpSpec {
    /// A spec with a name and location.
    pub fn new(name: impl Into<String>, loc: Location) -> Self {
        OpSpec {
            name: name.into(),
            loc,
            ..Default::default()
        }
    }
    /// Sets operands.
    pub fn operands(mut self, v: &[ValueId]) -> Self {
        self.operands = v.to_vec();
        self
    }
    /// Sets result types.
    pub fn results(mut self, t: Vec<Type>) -> Self {
        self.result_types = t;
        self
    }
    /// Adds an attribute.
    pub fn attr(mut self, name: &str, a: Attribute) -> Self {
        self.attrs.push((name.to_string(), a));
        self
    }
    /// Sets successor blocks (blocks of the region the op will be placed in).
    pub fn successors(mut self, b: &[BlockId]) -> Self {
        self.successors = b.to_vec();
        self
    }
}

/// The IR of one compilation unit (a `builtin.module`) with its arenas and blob table.
#[derive(Clone, Debug)]
pub struct Module {
    ops: Vec<OpData>,
    values: Vec<ValueData>,
    blocks: Vec<BlockData>,
    regions: Vec<RegionData>,
    /// Large constant data referenced by dense attributes.
    pub blobs: BlobTable,
    top: OpId,
}

impl Default for Module {
    fn default() -> Self {
        Self::new()
    }
}

impl Module {
    /// An empty `builtin.module` with one empty body block.
    pub fn new() -> Self {
        let mut m = Module {
            ops: vec![],
            values: vec![],
            blocks: vec![],
            regions: vec![],
            blobs: BlobTable::default(),
            top: OpId(0),
        };
        let top = m.create_op(OpSpec::new("builtin.module", Location::Unknown));
        let r = m.add_region(top);
        m.add_block(r, &[]);
        m.top = top;
        m
    }

    /// The `builtin.module` op.
    pub fn top(&self) -> OpId {
        self.top
    }

    /// The module's body block (holding `func.func` ops).
    pub fn body(&self) -> BlockId {
        let r = self.ops[self.top.index()].regions[0];
        self.regions[r.index()].blocks[0]
    }

    // ----- accessors -----

    /// Operation data.
    pub fn op(&self, id: OpId) -> &OpData {
        &self.ops[id.index()]
    }
    /// Mutable operation data.
    pub fn op_mut(&mut self, id: OpId) -> &mut OpData {
        &mut self.ops[id.index()]
    }
    /// Value data.
    pub fn value(&self, id: ValueId) -> &ValueData {
        &self.values[id.index()]
    }
    /// Type of a value.
    pub fn value_type(&self, id: ValueId) -> &Type {
        &self.values[id.index()].ty
    }
    /// Changes the type of a value (used by shape inference).
    pub fn set_value_type(&mut self, id: ValueId, ty: Type) {
        self.values[id.index()].ty = ty;
    }
    /// The op defining a value, if it is an op result.
    pub fn defining_op(&self, id: ValueId) -> Option<OpId> {
        match self.values[id.index()].def {
            ValueDef::OpResult(op, _) => Some(op),
            ValueDef::BlockArg(..) => None,
        }
    }
    /// The op defining `v` when it is named `name` (`"graph.mul"`, …).
    pub fn defining_op_named(&self, v: ValueId, name: &str) -> Option<OpId> {
        self.defining_op(v)
            .filter(|&o| self.ops[o.index()].name == name)
    }
    /// The one `(op, operand index)` use of `v`, if it has exactly one.
    pub fn single_use(&self, v: ValueId) -> Option<(OpId, usize)> {
        let u = self.uses(v);
        (u.len() == 1).then(|| u[0])
    }
    /// Block data.
    pub fn block(&self, id: BlockId) -> &BlockData {
        &self.blocks[id.index()]
    }
    /// Region data.
    pub fn region(&self, id: RegionId) -> &RegionData {
        &self.regions[id.index()]
    }
    /// Number of op slots ever allocated (erased included).
    pub fn op_capacity(&self) -> usize {
        self.ops.len()
    }
    /// Number of block slots ever allocated (a `BlockId` below this is a valid handle).
    pub fn block_capacity(&self) -> usize {
        self.blocks.len()
    }
    /// Position of a block in its region (`^bbN` in the printed form), `None` when detached.
    pub fn block_index(&self, b: BlockId) -> Option<usize> {
        let r = self.blocks.get(b.index())?.parent?;
        self.regions[r.index()].blocks.iter().position(|&x| x == b)
    }
    /// The live, attached ops that name `b` as a successor (the terminators of its predecessor
    /// blocks), in walk order.
    pub fn predecessors(&self, b: BlockId) -> Vec<OpId> {
        self.walk_all()
            .into_iter()
            .filter(|&o| self.ops[o.index()].successors.contains(&b))
            .collect()
    }

    /// Attribute of an op by name.
    pub fn attr(&self, op: OpId, name: &str) -> Option<&Attribute> {
        self.ops[op.index()].attr(name)
    }

    /// Sets (or replaces) an attribute, keeping names sorted.
    pub fn set_attr(&mut self, op: OpId, name: &str, a: Attribute) {
        set_sorted(&mut self.ops[op.index()].attrs, name.to_string(), a);
    }

    /// Removes an attribute; returns it if present.
    pub fn remove_attr(&mut self, op: OpId, name: &str) -> Option<Attribute> {
        let attrs = &mut self.ops[op.index()].attrs;
        let i = attrs.iter().position(|(n, _)| n == name)?;
        Some(attrs.remove(i).1)
    }

    /// The op owning a block (through its region).
    pub fn block_parent_op(&self, b: BlockId) -> Option<OpId> {
        self.blocks[b.index()]
            .parent
            .and_then(|r| self.regions[r.index()].parent)
    }

    /// The op that contains `op` (through block and region), `None` at top level.
    pub fn parent_op(&self, op: OpId) -> Option<OpId> {
        self.ops[op.index()]
            .parent
            .and_then(|b| self.block_parent_op(b))
    }

    // ----- construction -----

    /// Creates a detached op with fresh result values. Attributes are sorted by name.
    pub fn create_op(&mut self, spec: OpSpec) -> OpId {
        let id = OpId(self.ops.len() as u32);
        let mut results = Vec::with_capacity(spec.result_types.len());
        for (i, ty) in spec.result_types.into_iter().enumerate() {
            results.push(ValueId(self.values.len() as u32));
            self.values.push(ValueData {
                ty,
                def: ValueDef::OpResult(id, i as u32),
            });
        }
        let mut attrs = Vec::with_capacity(spec.attrs.len());
        for (n, a) in spec.attrs {
            set_sorted(&mut attrs, n, a);
        }
        self.ops.push(OpData {
            name: spec.name,
            operands: spec.operands,
            results,
            attrs,
            regions: vec![],
            successors: spec.successors,
            loc: spec.loc,
            parent: None,
            span: None,
            erased: false,
        });
        id
    }

    /// Creates an op and appends it to `block`; returns the op.
    pub fn append(&mut self, block: BlockId, spec: OpSpec) -> OpId {
        let op = self.create_op(spec);
        self.append_op(block, op);
        op
    }

    /// Appends a detached op to the end of `block`.
    pub fn append_op(&mut self, block: BlockId, op: OpId) {
        self.ops[op.index()].parent = Some(block);
        self.blocks[block.index()].ops.push(op);
    }

    /// Inserts a detached op right before `anchor` in `anchor`'s block.
    pub fn insert_op_before(&mut self, anchor: OpId, op: OpId) {
        if let Some(b) = self.ops[anchor.index()].parent {
            let ops = &mut self.blocks[b.index()].ops;
            let pos = ops.iter().position(|&o| o == anchor).unwrap_or(ops.len());
            ops.insert(pos, op);
            self.ops[op.index()].parent = Some(b);
        }
    }

    /// Adds an empty region to `op`.
    pub fn add_region(&mut self, op: OpId) -> RegionId {
        let r = RegionId(self.regions.len() as u32);
        self.regions.push(RegionData {
            blocks: vec![],
            parent: Some(op),
        });
        self.ops[op.index()].regions.push(r);
        r
    }

    /// Appends a block with arguments of the given types to `region`.
    pub fn add_block(&mut self, region: RegionId, arg_types: &[Type]) -> BlockId {
        let b = BlockId(self.blocks.len() as u32);
        self.blocks.push(BlockData {
            args: vec![],
            ops: vec![],
            parent: Some(region),
        });
        self.regions[region.index()].blocks.push(b);
        for t in arg_types {
            self.add_block_arg(b, t.clone());
        }
        b
    }

    /// Appends an argument to a block.
    pub fn add_block_arg(&mut self, block: BlockId, ty: Type) -> ValueId {
        let v = ValueId(self.values.len() as u32);
        let idx = self.blocks[block.index()].args.len() as u32;
        self.values.push(ValueData {
            ty,
            def: ValueDef::BlockArg(block, idx),
        });
        self.blocks[block.index()].args.push(v);
        v
    }

    // ----- mutation -----

    /// Detaches `op` from its block and marks it and everything nested in it erased.
    pub fn erase_op(&mut self, op: OpId) {
        if let Some(b) = self.ops[op.index()].parent.take() {
            self.blocks[b.index()].ops.retain(|&o| o != op);
        }
        let mut stack = vec![op];
        while let Some(o) = stack.pop() {
            self.ops[o.index()].erased = true;
            for &r in &self.ops[o.index()].regions {
                for &b in &self.regions[r.index()].blocks {
                    stack.extend(self.blocks[b.index()].ops.iter().copied());
                }
            }
        }
    }

    /// Replaces every use of `from` by `to` in all live ops.
    pub fn replace_all_uses(&mut self, from: ValueId, to: ValueId) {
        for op in self.ops.iter_mut().filter(|o| !o.erased) {
            for v in op.operands.iter_mut() {
                if *v == from {
                    *v = to;
                }
            }
        }
    }

    /// All `(op, operand index)` uses of `v` among live, attached ops.
    pub fn uses(&self, v: ValueId) -> Vec<(OpId, usize)> {
        let mut out = vec![];
        for id in self.walk_all() {
            for (i, &o) in self.ops[id.index()].operands.iter().enumerate() {
                if o == v {
                    out.push((id, i));
                }
            }
        }
        out
    }

    /// Use counts of every value among live, attached ops (indexed by `ValueId::index`).
    pub fn use_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.values.len()];
        for id in self.walk_all() {
            for &o in &self.ops[id.index()].operands {
                counts[o.index()] += 1;
            }
        }
        counts
    }

    // ----- traversal -----

    /// Pre-order walk of `op` and everything nested in it.
    pub fn walk(&self, op: OpId, out: &mut Vec<OpId>) {
        let mut stack = vec![op];
        while let Some(o) = stack.pop() {
            out.push(o);
            let d = &self.ops[o.index()];
            for &r in d.regions.iter().rev() {
                for &b in self.regions[r.index()].blocks.iter().rev() {
                    stack.extend(self.blocks[b.index()].ops.iter().rev().copied());
                }
            }
        }
    }

    /// Pre-order list of all live ops reachable from the top module (the module op included).
    pub fn walk_all(&self) -> Vec<OpId> {
        let mut v = vec![];
        self.walk(self.top, &mut v);
        v
    }

    /// How many ops the arena holds (erased ones included): ops created later get ids at or
    /// above it.
    pub fn op_count(&self) -> usize {
        self.ops.len()
    }

    /// The `func.func` ops of the module body.
    pub fn functions(&self) -> Vec<OpId> {
        self.block(self.body())
            .ops
            .iter()
            .copied()
            .filter(|&o| self.op(o).name == "func.func")
            .collect()
    }

    /// The entry block of an op's first region.
    pub fn entry_block(&self, op: OpId) -> Option<BlockId> {
        let r = *self.ops[op.index()].regions.first()?;
        self.regions[r.index()].blocks.first().copied()
    }
}

pub(crate) fn set_sorted(attrs: &mut Vec<(String, Attribute)>, name: String, a: Attribute) {
    match attrs.binary_search_by(|(n, _)| n.as_str().cmp(name.as_str())) {
        Ok(i) => attrs[i].1 = a,
        Err(i) => attrs.insert(i, (name, a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::types::ScalarType;

    #[test]
    fn erase_op_detaches_and_marks_nested_ops() {
        let mut m = Module::new();
        let body = m.body();
        let outer = m.append(body, OpSpec::new("x.outer", Location::Unknown));
        let r = m.add_region(outer);
        let b = m.add_block(r, &[Type::Index]);
        let inner = m.append(b, OpSpec::new("x.inner", Location::Unknown));
        m.erase_op(outer);
        assert!(m.op(outer).erased && m.op(inner).erased);
        assert!(m.block(body).ops.is_empty());
    }

    #[test]
    fn attributes_are_kept_sorted_by_name() {
        let mut m = Module::new();
        let op = m.create_op(
            OpSpec::new("x.y", Location::Unknown)
                .attr("b", Attribute::i64(1))
                .attr("a", Attribute::Int(2, ScalarType::I32)),
        );
        let names: Vec<_> = m.op(op).attrs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }
}
