//! `probe-values`: with the module attribute [`PROBES_ATTR`] (`llmpu compile --probes`), every
//! value an op computes after fusion becomes an extra result of the entry function, so a run
//! returns it and `llmpu generate --verify` can compare it with the reference interpreter's value
//! of the same ONNX node and name the first op that diverges. Without the attribute the pass
//! changes nothing.
//!
//! A probe is a `graph` op's tensor result that is not a constant, a paged-cache append or a
//! pure view (reshape, transpose, …: their data is another probe's). Its result is named
//! `probe:<op>@<nodes>` — the op's name and its ONNX node names joined by `+`, `#k` appended to
//! repeats — in program order. Probed values get their own memory (results are not reused by liveness), so a
//! probed binary can cost slightly more than a plain one; its numerics are the same. Runs after
//! the graph-level fusion, so the fused ops are what is probed.

use crate::dialects::graph;
use super::PassInfo;
use super::shape_inference::update_function_type;
use crate::backend::plan::shape_of;
use crate::ir::{Attribute, Module};
use crate::pass::{Pass, PassError};

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "probe-values",
    description: "with llmpu.probes: return every computed value as a `probe:<op>@<nodes>` result (generate --verify)",
    create: || Box::new(ProbeValues),
};

/// Module attribute (`true`) that turns the pass on.
pub const PROBES_ATTR: &str = "llmpu.probes";

/// Prefix of a probe result's name.
pub const PROBE_PREFIX: &str = "probe:";

/// Ops whose result is a rearrangement of their first operand's data.
const VIEWS: &[&str] = &[
    graph::Reshape::NAME,
    graph::Unsqueeze::NAME,
    graph::Squeeze::NAME,
    graph::Flatten::NAME,
    graph::Identity::NAME,
    graph::Transpose::NAME,
    graph::Expand::NAME,
    graph::Slice::NAME,
    graph::Split::NAME,
    graph::Concat::NAME,
];

/// The pass.
pub struct ProbeValues;

impl Pass for ProbeValues {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        let top = m.top();
        if m.attr(top, PROBES_ATTR).and_then(Attribute::as_bool) != Some(true) {
            return Ok(());
        }
        for f in m.functions() {
            let Some(entry) = m.entry_block(f) else {
                continue;
            };
            let ops = m.block(entry).ops.clone();
            let Some(&ret) = ops.last().filter(|&&r| m.op(r).name == "func.return") else {
                continue;
            };
            let mut names: Vec<String> = vec![];
            let mut values = vec![];
            for &op in &ops {
                let d = m.op(op);
                if !d.name.starts_with(graph::PREFIX)
                    || d.name == graph::Constant::NAME
                    || d.name == graph::KvAppend::NAME
                    || VIEWS.contains(&d.name.as_str())
                {
                    continue;
                }
                let Some(&r) = d.results.first() else {
                    continue;
                };
                if shape_of(m, r).is_none() || m.op(ret).operands.contains(&r) {
                    continue;
                }
                let base: Vec<String> = d.loc.names().iter().map(|n| n.to_string()).collect();
                let base = format!("{PROBE_PREFIX}{}@{}", d.name, base.join("+"));
                let k = names.iter().filter(|n| n.split('#').next() == Some(&base)).count();
                names.push(if k == 0 { base } else { format!("{base}#{k}") });
                values.push(r);
            }
            let mut res_attrs = match m.attr(f, "res_attrs") {
                Some(Attribute::Array(a)) => a.clone(),
                _ => vec![],
            };
            let n0 = m.op(ret).operands.len();
            res_attrs.resize(n0, Attribute::Dict(vec![]));
            for (v, name) in values.into_iter().zip(names) {
                m.op_mut(ret).operands.push(v);
                res_attrs.push(Attribute::Dict(vec![("onnx.name".into(), Attribute::Str(name))]));
            }
            m.set_attr(f, "res_attrs", Attribute::Array(res_attrs));
            update_function_type(m, f);
        }
        Ok(())
    }
}
