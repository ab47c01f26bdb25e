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

/// One instruction as this dialect needs it: mnemonic and field names.
#[derive(Clone, Debug)]
pub struct InstrSpec {
    pub mnemonic: String,
    pub fields: Vec<String>,
}

/// The instruction rows the dialect is generated from.
///
/// Provisional until the ISA table (`llmpu_isa::INSTRUCTIONS`) lands: then this becomes a mapping over
/// that table and nothing else in the compiler changes.
pub fn instruction_specs() -> Vec<InstrSpec> {
    const PROVISIONAL: &[(&str, &[&str])] = &[
        ("dma.load", &["dst", "src", "rows", "cols", "stride", "sem"]),
        ("dma.store", &["dst", "src", "rows", "cols", "stride", "sem"]),
        ("mxu.matmul", &["a", "b", "acc", "m", "n", "k", "accumulate"]),
        ("vpu.add", &["dst", "a", "b", "len"]),
        ("vpu.mul", &["dst", "a", "b", "len"]),
        ("vpu.exp", &["dst", "a", "len"]),
        ("sync.signal", &["sem"]),
        ("sync.wait", &["sem", "count"]),
        ("halt", &[]),
    ];
    PROVISIONAL
        .iter()
        .map(|(m, f)| InstrSpec { mnemonic: m.to_string(), fields: f.iter().map(|s| s.to_string()).collect() })
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
                    "`\"{name}\"() {{{}}} : () -> ()` — the `{}` instruction; fields as attributes.",
                    spec.fields.iter().map(|f| format!("{f} = 0 : i64")).collect::<Vec<_>>().join(", "),
                    spec.mnemonic
                )
                .into_boxed_str(),
            );
            ops.push(OpInfo { name, doc, pure: false, verify: verify_instruction });
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
            Some(_) => return Err(format!("field '{f}' must be an integer or string attribute")),
            None => return Err(format!("missing field attribute '{f}'")),
        }
    }
    for (n, _) in &v.data().attrs {
        if !fields.iter().any(|f| f == n) {
            return Err(format!("'{n}' is not a field of this instruction (fields: {})", fields.join(", ")));
        }
    }
    Ok(())
}
