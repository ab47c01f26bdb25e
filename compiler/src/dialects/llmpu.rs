//! The `llmpu` dialect: one op per ISA instruction, operating on physical addresses.
//!
//! The op list is generated, not hand-written: every row of the ISA table becomes an op named
//! `llmpu.<mnemonic>` (dots kept, e.g. `llmpu.mxu.matmul`) whose instruction fields are attributes
//! (integers, or strings for enumerated fields). Text form:
//! `"llmpu.dma.load"() {dst = 0 : i64, src = 4096 : i64, len = 256 : i64} : () -> () loc("MatMul_0")`.
//! Invariants checked: no operands or results, every field present as an integer or string attribute,
//! no attribute that is not a field.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::{OpInfo, OpView};

/// One instruction as this dialect needs it: mnemonic, executing unit, summary and field names.
#[derive(Clone, Debug)]
pub struct InstrSpec {
    pub mnemonic: String,
    pub unit: String,
    pub summary: String,
    pub fields: Vec<String>,
}

/// The instruction rows the dialect is generated from: the ISA table `llmpu_isa::INSTRUCTIONS`.
pub fn instruction_specs() -> Vec<InstrSpec> {
    llmpu_isa::INSTRUCTIONS
        .iter()
        .map(|d| InstrSpec {
            mnemonic: d.mnemonic.to_string(),
            unit: d.unit.name().to_string(),
            summary: d.summary.to_string(),
            fields: d.fields.iter().map(|f| f.name.to_string()).collect(),
        })
        .collect()
}

struct Dialect {
    ops: Vec<OpInfo>,
    fields: HashMap<&'static str, Vec<String>>,
}

fn dialect() -> &'static Dialect {
    static D: OnceLock<Dialect> = OnceLock::new();
    D.get_or_init(|| {
        let mut ops = vec![];
        let mut fields = HashMap::new();
        for spec in instruction_specs() {
            // Leaked once per instruction at first use: op names must be `'static` like every other op.
            let name: &'static str = Box::leak(format!("llmpu.{}", spec.mnemonic).into_boxed_str());
            let doc: &'static str = Box::leak(
                format!(
                    "`\"{name}\"() {{{}}} : () -> ()` — {} ({} unit); fields as attributes.",
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
                successors: false,
                verify: verify_instruction,
            });
            fields.insert(name, spec.fields);
        }
        Dialect { ops, fields }
    })
}

/// Registry rows of the `llmpu` dialect.
pub fn ops() -> &'static [OpInfo] {
    &dialect().ops
}

/// Field names of an `llmpu` op, if it is one.
pub fn fields_of(op_name: &str) -> Option<&'static [String]> {
    dialect().fields.get(op_name).map(Vec::as_slice)
}

fn verify_instruction(v: &OpView) -> Result<(), String> {
    v.operands_in(0, 0)?;
    v.results_in(0, 0)?;
    let fields = fields_of(&v.data().name).unwrap_or_default();
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
            let expect: Vec<&str> = d.fields.iter().map(|f| f.name).collect();
            assert_eq!(fields, expect, "{name}");
        }
    }
}
