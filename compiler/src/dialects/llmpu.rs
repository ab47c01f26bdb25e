//! The `llmpu` dialect: one op per ISA instruction, operating on physical addresses, in a control-flow
//! graph of blocks whose order is the order of the instructions in memory.
//!
//! The op list is generated, not hand-written: every row of the ISA table becomes an op named
//! `llmpu.<mnemonic>` (dots kept, e.g. `llmpu.mxu.matmul`) whose instruction fields are attributes
//! (integers, or strings for enumerated fields). Text form:
//! `"llmpu.dma.load"() {dst = 0 : i64, src = 4096 : i64, len = 256 : i64} : () -> () loc("MatMul_0")`.
//!
//! Control flow is blocks and successors, not offsets. An instruction with a branch-target field
//! (`beq`, `bne`, `blt`, `bge`, `jmp`) has no attribute for it: its first successor is the block it
//! goes to. A conditional branch (one that also has fields to compare) names the block it falls
//! through to as its second successor; `jmp` has one. A block that runs on into the next one without
//! a branch ends with [`FallthroughOp`] (`llmpu.fallthrough`), which is no instruction. A counted
//! loop (`backend/emit/roll.rs`) reads:
//!
//! ```text
//! func.func @core0() {
//!   "llmpu.li"() {imm = 6 : i64, rd = 31 : i64} : () -> () loc("MatMul")
//!   "llmpu.fallthrough"()[^bb1] : () -> () loc(unknown)
//! ^bb1:
//!   "llmpu.dma.load"() {...} : () -> () loc("MatMul")
//!   "llmpu.addi"() {imm = -1 : i64, rd = 31 : i64, rs1 = 31 : i64} : () -> () loc("MatMul")
//!   "llmpu.bne"()[^bb1, ^bb2] {rs1 = 31 : i64, rs2 = 0 : i64} : () -> () loc("MatMul")
//! ^bb2:
//!   func.return
//! }
//! ```
//!
//! Invariants checked: no operands or results, every field present as an integer or string attribute
//! (the branch target excepted), no attribute that is not a field; a branch has its successors
//! (target, then the fall-through for a conditional one), other instructions none; the fall-through
//! successor of a conditional branch or of `llmpu.fallthrough` is the block right after the op's own,
//! since that is where the machine goes on.

use std::collections::HashMap;
use std::sync::OnceLock;

use llmpu_isa::fields::FieldKind;

use super::{OpInfo, OpView, define_ops};
use crate::ir::BlockId;

define_ops! { OPS;
    /// `"llmpu.fallthrough"()[^bb2] : () -> ()` — ends a block whose last instruction is not a branch:
    /// control runs on into the next block, its one successor (which must be the block right after
    /// this one). Not an instruction: it assembles to nothing. No operands, results or attributes.
    FallthroughOp = "llmpu.fallthrough", pure = false, successors = true, verify = verify_fallthrough;
}

/// How an instruction leaves its block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Not a branch: control goes on to the next instruction (no successors).
    Next,
    /// Always goes to its target (`jmp`): one successor.
    Jump,
    /// Goes to its target or falls through (`beq`, `bne`, `blt`, `bge`): successors target, next.
    Branch,
}

impl Control {
    /// Number of successors an op of this kind has.
    pub fn successors(self) -> usize {
        match self {
            Control::Next => 0,
            Control::Jump => 1,
            Control::Branch => 2,
        }
    }

    /// From an instruction's fields: a branch-target field makes a branch, conditional when there
    /// are other fields (the registers it compares).
    pub fn of(desc: &llmpu_isa::InstDesc) -> Control {
        let targets = desc
            .fields
            .iter()
            .filter(|f| f.kind == FieldKind::Target)
            .count();
        match (targets, desc.fields.len() - targets) {
            (0, _) => Control::Next,
            (_, 0) => Control::Jump,
            _ => Control::Branch,
        }
    }
}

/// One instruction as this dialect needs it: mnemonic, executing unit, summary, the fields that are
/// attributes and how it leaves its block.
#[derive(Clone, Debug)]
pub struct InstrSpec {
    pub mnemonic: String,
    pub unit: String,
    pub summary: String,
    /// Fields held as attributes, in table order (every field but a branch target).
    pub fields: Vec<String>,
    /// The branch-target field given by the first successor, if any.
    pub target: Option<String>,
    pub control: Control,
}

/// The instruction rows the dialect is generated from: the ISA table `llmpu_isa::INSTRUCTIONS`.
pub fn instruction_specs() -> Vec<InstrSpec> {
    llmpu_isa::INSTRUCTIONS
        .iter()
        .map(|d| InstrSpec {
            mnemonic: d.mnemonic.to_string(),
            unit: d.unit.name().to_string(),
            summary: d.summary.to_string(),
            fields: d
                .fields
                .iter()
                .filter(|f| f.kind != FieldKind::Target)
                .map(|f| f.name.to_string())
                .collect(),
            target: d
                .fields
                .iter()
                .find(|f| f.kind == FieldKind::Target)
                .map(|f| f.name.to_string()),
            control: Control::of(d),
        })
        .collect()
}

struct Dialect {
    ops: Vec<OpInfo>,
    specs: HashMap<&'static str, InstrSpec>,
}

fn dialect() -> &'static Dialect {
    static D: OnceLock<Dialect> = OnceLock::new();
    D.get_or_init(|| {
        let mut ops = OPS.to_vec();
        let mut specs = HashMap::new();
        for spec in instruction_specs() {
            // Leaked once per instruction at first use: op names must be `'static` like every other op.
            let name: &'static str = Box::leak(format!("llmpu.{}", spec.mnemonic).into_boxed_str());
            let successors = match spec.control {
                Control::Next => "",
                Control::Jump => "[^bb1]",
                Control::Branch => "[^bb1, ^bb2]",
            };
            let how = match spec.control {
                Control::Next => "fields as attributes",
                Control::Jump => "fields as attributes, the target block as the successor",
                Control::Branch => {
                    "fields as attributes; successors: the target block, then the block it falls \
                     through to (the next one)"
                }
            };
            let doc: &'static str = Box::leak(
                format!(
                    "`\"{name}\"(){successors} {{{}}} : () -> ()` — {} ({} unit); {how}.",
                    spec.fields
                        .iter()
                        .map(|f| format!("{f} = 0 : i64"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    spec.summary,
                    spec.unit
                )
                .into_boxed_str(),
            );
            ops.push(OpInfo {
                name,
                doc,
                pure: false,
                successors: spec.control != Control::Next,
                verify: verify_instruction,
                elementwise: None,
            });
            specs.insert(name, spec);
        }
        Dialect { ops, specs }
    })
}

/// Registry rows of the `llmpu` dialect.
pub fn ops() -> &'static [OpInfo] {
    &dialect().ops
}

/// The instruction an `llmpu` op name stands for, if it is one (`llmpu.fallthrough` is not).
pub fn instruction(op_name: &str) -> Option<&'static InstrSpec> {
    dialect().specs.get(op_name)
}

/// Attribute field names of an `llmpu` instruction op, if it is one (a branch target is a successor,
/// not among them).
pub fn fields_of(op_name: &str) -> Option<&'static [String]> {
    instruction(op_name).map(|s| s.fields.as_slice())
}

/// The block after `b` in its region, if any.
fn next_block(v: &OpView, b: BlockId) -> Option<BlockId> {
    let r = v.m.block(b).parent?;
    let blocks = &v.m.region(r).blocks;
    let i = blocks.iter().position(|&x| x == b)?;
    blocks.get(i + 1).copied()
}

/// Checks that successor `i` is the block right after the op's (the one the machine runs on into).
fn falls_through_to_next(v: &OpView, i: usize) -> Result<(), String> {
    let d = v.data();
    let next = d.parent.and_then(|b| next_block(v, b));
    if next.is_none() || d.successors.get(i).copied() != next {
        let at = |b: Option<BlockId>| {
            b.and_then(|b| v.m.block_index(b))
                .map_or("no block".to_string(), |i| format!("^bb{i}"))
        };
        return Err(format!(
            "successor #{i} ({}) must be the block right after this op's block ({}): control falls \
             through to it",
            at(d.successors.get(i).copied()),
            match next {
                Some(_) => at(next),
                None => "there is none".into(),
            }
        ));
    }
    Ok(())
}

fn verify_fallthrough(v: &OpView) -> Result<(), String> {
    v.operands_in(0, 0)?;
    v.results_in(0, 0)?;
    if let Some((n, _)) = v.data().attrs.first() {
        return Err(format!("takes no attributes, got '{n}'"));
    }
    let n = v.data().successors.len();
    if n != 1 {
        return Err(format!("expects 1 successor (the next block), got {n}"));
    }
    falls_through_to_next(v, 0)
}

fn verify_instruction(v: &OpView) -> Result<(), String> {
    v.operands_in(0, 0)?;
    v.results_in(0, 0)?;
    let Some(spec) = instruction(&v.data().name) else {
        return Err("is not an instruction".into());
    };
    let fields = &spec.fields;
    if let Some(t) = &spec.target
        && v.attr(t).is_some()
    {
        return Err(format!(
            "'{t}' is not an attribute: the branch target is the first successor ([^bbN])"
        ));
    }
    let n = v.data().successors.len();
    let want = spec.control.successors();
    if n != want {
        return Err(match spec.control {
            Control::Next => format!("is not a branch and takes no successors, got {n}"),
            Control::Jump => format!("expects 1 successor (the target block), got {n}"),
            Control::Branch => format!(
                "expects 2 successors (the target block, then the next block it falls through \
                 to), got {n}"
            ),
        });
    }
    if spec.control == Control::Branch {
        falls_through_to_next(v, 1)?;
    }
    for f in fields {
        match v.attr(f) {
            Some(crate::ir::Attribute::Int(..) | crate::ir::Attribute::Str(_)) => {}
            Some(_) => {
                return Err(format!(
                    "field '{f}' must be an integer or string attribute"
                ));
            }
            None => return Err(format!("missing field attribute '{f}'")),
        }
    }
    for (n, _) in &v.data().attrs {
        if !fields.iter().any(|f| f == n) {
            return Err(format!(
                "'{n}' is not a field of this instruction (fields: {})",
                fields.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_isa_instruction_is_an_op_with_its_fields() {
        assert!(!llmpu_isa::INSTRUCTIONS.is_empty());
        for d in llmpu_isa::INSTRUCTIONS {
            let name = format!("llmpu.{}", d.mnemonic);
            assert!(crate::dialects::lookup(&name).is_some(), "{name} missing");
            let fields: Vec<&str> = fields_of(&name)
                .unwrap_or_default()
                .iter()
                .map(String::as_str)
                .collect();
            let expect: Vec<&str> = d
                .fields
                .iter()
                .filter(|f| f.kind != FieldKind::Target)
                .map(|f| f.name)
                .collect();
            assert_eq!(fields, expect, "{name}");
        }
    }

    #[test]
    fn branches_take_their_target_as_a_successor_and_jmp_does_not_fall_through() {
        let control = |m: &str| instruction(&format!("llmpu.{m}")).map(|s| s.control);
        for m in ["beq", "bne", "blt", "bge"] {
            assert_eq!(control(m), Some(Control::Branch), "{m}");
            assert_eq!(fields_of(&format!("llmpu.{m}")).unwrap(), ["rs1", "rs2"]);
        }
        assert_eq!(control("jmp"), Some(Control::Jump));
        assert_eq!(control("li"), Some(Control::Next));
        assert_eq!(control("halt"), Some(Control::Next));
        assert!(instruction(FallthroughOp::NAME).is_none());
        assert!(crate::dialects::lookup(FallthroughOp::NAME).is_some_and(|i| i.successors));
    }
}
