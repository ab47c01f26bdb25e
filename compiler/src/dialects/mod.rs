//! Dialect registry: every known op with its documentation, purity and verifier.
//!
//! Dialects: `builtin`/`func` (module, functions, return), [`graph`] (tensor level, ONNX semantics),
//! [`tile`] (tile loops, SRAM buffers, explicit DMA) and [`llmpu`] (one op per ISA instruction, in
//! blocks: branches are ops with successors, plus `llmpu.fallthrough`).
//! Invariant: op names are unique across dialects; an op whose name starts with a registered dialect
//! prefix but is not in the registry fails verification; ops of other dialects are accepted unverified
//! (like `mlir-opt --allow-unregistered-dialect`).

pub mod builtin;
pub mod graph;
pub mod llmpu;
pub mod tile;

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::ir::{Attribute, Module, OpData, OpId, ScalarType, TensorType, Type, ValueId};

/// Static description of an op.
#[derive(Clone, Copy, Debug)]
pub struct OpInfo {
    /// Full name, e.g. `graph.matmul`.
    pub name: &'static str,
    /// Documentation: text form and semantics.
    pub doc: &'static str,
    /// No side effects: may be CSE'd and removed when unused.
    pub pure: bool,
    /// May have successors (a branch); the op's verifier checks how many. Any other op with
    /// successors fails verification.
    pub successors: bool,
    /// The op's verifier.
    pub verify: fn(&OpView) -> Result<(), String>,
    /// A simple elementwise `graph` op's whole definition (ONNX mapping, shape rule, reference
    /// scalar function, vector-unit lowering), read by the importer, shape inference, the
    /// interpreter and the backend; `None` for every other op.
    pub elementwise: Option<&'static graph::Elementwise>,
}

/// A read-only view of one op for verifiers.
pub struct OpView<'m> {
    pub m: &'m Module,
    pub id: OpId,
}

impl OpView<'_> {
    /// The op's data.
    pub fn data(&self) -> &OpData {
        self.m.op(self.id)
    }
    /// Number of operands.
    pub fn num_operands(&self) -> usize {
        self.data().operands.len()
    }
    /// Type of operand `i`.
    pub fn operand_type(&self, i: usize) -> &Type {
        self.m.value_type(self.data().operands[i])
    }
    /// Type of result `i`.
    pub fn result_type(&self, i: usize) -> &Type {
        self.m.value_type(self.data().results[i])
    }
    /// Attribute by name.
    pub fn attr(&self, name: &str) -> Option<&Attribute> {
        self.data().attr(name)
    }
    /// Checks the operand count is within `min..=max`.
    pub fn operands_in(&self, min: usize, max: usize) -> Result<(), String> {
        let n = self.num_operands();
        if n < min || n > max {
            return Err(if min == max {
                format!("expects {min} operand(s), got {n}")
            } else if max == usize::MAX {
                format!("expects at least {min} operand(s), got {n}")
            } else {
                format!("expects {min} to {max} operands, got {n}")
            });
        }
        Ok(())
    }
    /// Checks the result count.
    pub fn results_in(&self, min: usize, max: usize) -> Result<(), String> {
        let n = self.data().results.len();
        if n < min || n > max {
            return Err(if min == max {
                format!("expects {min} result(s), got {n}")
            } else {
                format!("expects {min} to {max} results, got {n}")
            });
        }
        Ok(())
    }
    /// Operand `i` as a tensor type.
    pub fn tensor_operand(&self, i: usize) -> Result<&TensorType, String> {
        self.operand_type(i).as_tensor().ok_or_else(|| {
            format!(
                "operand #{i} must be a tensor, got {}",
                self.operand_type(i)
            )
        })
    }
    /// Result `i` as a tensor type.
    pub fn tensor_result(&self, i: usize) -> Result<&TensorType, String> {
        self.result_type(i)
            .as_tensor()
            .ok_or_else(|| format!("result #{i} must be a tensor, got {}", self.result_type(i)))
    }
    /// A required integer attribute.
    pub fn int_attr(&self, name: &str) -> Result<i64, String> {
        self.attr(name)
            .and_then(Attribute::as_int)
            .ok_or_else(|| format!("requires integer attribute '{name}'"))
    }
    /// An optional integer attribute with a default.
    pub fn int_attr_or(&self, name: &str, default: i64) -> Result<i64, String> {
        match self.attr(name) {
            None => Ok(default),
            Some(a) => a
                .as_int()
                .ok_or_else(|| format!("attribute '{name}' must be an integer")),
        }
    }
    /// An optional float attribute.
    pub fn float_attr_opt(&self, name: &str) -> Result<Option<f64>, String> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => a
                .as_f64()
                .map(Some)
                .ok_or_else(|| format!("attribute '{name}' must be a float")),
        }
    }
    /// A required string attribute.
    pub fn str_attr(&self, name: &str) -> Result<&str, String> {
        self.attr(name)
            .and_then(Attribute::as_str)
            .ok_or_else(|| format!("requires string attribute '{name}'"))
    }
    /// An optional i64 list attribute.
    pub fn i64_list_attr(&self, name: &str) -> Result<Option<Vec<i64>>, String> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => a
                .as_i64_list()
                .map(Some)
                .ok_or_else(|| format!("attribute '{name}' must be array<i64: ...>")),
        }
    }
    /// Every operand and result is a tensor.
    pub fn all_tensors(&self) -> Result<(), String> {
        for i in 0..self.num_operands() {
            self.tensor_operand(i)?;
        }
        for i in 0..self.data().results.len() {
            self.tensor_result(i)?;
        }
        Ok(())
    }
    /// Element type of operand `i` (tensor, buffer or scalar).
    pub fn operand_elem(&self, i: usize) -> Result<ScalarType, String> {
        self.operand_type(i)
            .elem()
            .ok_or_else(|| format!("operand #{i} has no element type"))
    }
}

/// Normalizes a possibly negative axis against a rank.
pub fn normalize_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

fn registry() -> &'static HashMap<&'static str, OpInfo> {
    static REG: OnceLock<HashMap<&'static str, OpInfo>> = OnceLock::new();
    REG.get_or_init(|| {
        let mut map = HashMap::new();
        for info in all_ops() {
            map.insert(info.name, info);
        }
        map
    })
}

/// Every registered op.
pub fn all_ops() -> Vec<OpInfo> {
    let mut v: Vec<OpInfo> = vec![];
    v.extend_from_slice(builtin::OPS);
    v.extend_from_slice(graph::OPS);
    v.extend_from_slice(tile::OPS);
    v.extend(llmpu::ops().iter().copied());
    v
}

/// Looks an op up by full name.
pub fn lookup(name: &str) -> Option<&'static OpInfo> {
    registry().get(name)
}

/// True when the op's dialect prefix is one we define (so unknown names in it are errors).
pub fn is_registered_dialect(name: &str) -> bool {
    let d = name.split('.').next().unwrap_or("");
    matches!(d, "graph" | "tile" | "llmpu" | "func" | "builtin")
}

/// True if the op has no side effects (unknown ops are assumed to have side effects).
pub fn is_pure(m: &Module, op: OpId) -> bool {
    lookup(&m.op(op).name).is_some_and(|i| i.pure)
}

/// The first result of an op (convenience for builders).
pub fn first_result(m: &Module, op: OpId) -> ValueId {
    m.op(op).results[0]
}

/// Defines typed op handles plus their [`OpInfo`] table. Each entry:
/// `/// docs` `Struct = "dialect.name", pure = bool, [successors = bool,] verify = fn;`
/// (`successors` defaults to false).
macro_rules! define_ops {
    ($table:ident; $( $(#[doc = $doc:literal])* $ty:ident = $name:literal, pure = $pure:expr, $(successors = $succ:expr,)? verify = $v:expr $(, elementwise = $ew:expr)?; )*) => {
        $(
            $(#[doc = $doc])*
            #[derive(Clone, Copy, Debug, PartialEq, Eq)]
            pub struct $ty(pub crate::ir::OpId);
            impl $ty {
                /// Full op name.
                pub const NAME: &'static str = $name;
                /// Views `op` as this op if its name matches.
                pub fn view(m: &crate::ir::Module, op: crate::ir::OpId) -> Option<Self> {
                    (m.op(op).name == $name).then_some(Self(op))
                }
                /// The underlying op handle.
                pub fn op(self) -> crate::ir::OpId {
                    self.0
                }
                /// Operand `i`, if present.
                pub fn operand(self, m: &crate::ir::Module, i: usize) -> Option<crate::ir::ValueId> {
                    m.op(self.0).operands.get(i).copied()
                }
                /// Result `i`, if present.
                pub fn result(self, m: &crate::ir::Module, i: usize) -> Option<crate::ir::ValueId> {
                    m.op(self.0).results.get(i).copied()
                }
                /// Creates the op at the end of `block` with explicit result types.
                pub fn build(
                    m: &mut crate::ir::Module,
                    block: crate::ir::BlockId,
                    operands: &[crate::ir::ValueId],
                    result_types: Vec<crate::ir::Type>,
                    attrs: Vec<(&str, crate::ir::Attribute)>,
                    loc: crate::ir::Location,
                ) -> Self {
                    let mut spec = crate::ir::OpSpec::new($name, loc).operands(operands).results(result_types);
                    for (n, a) in attrs {
                        spec = spec.attr(n, a);
                    }
                    Self(m.append(block, spec))
                }
            }
        )*
        /// Registry rows of this dialect.
        pub static $table: &[crate::dialects::OpInfo] = &[
            $( crate::dialects::OpInfo { name: $name, doc: concat!($($doc, "\n"),*), pure: $pure, successors: false $(|| $succ)?, verify: $v, elementwise: crate::dialects::elementwise_row!($($ew)?) }, )*
        ];
    };
}
pub(crate) use define_ops;

/// The `elementwise` field of a [`define_ops!`] row: `None`, or the row's definition.
macro_rules! elementwise_row {
    () => {
        None
    };
    ($ew:expr) => {
        Some(&$ew)
    };
}
pub(crate) use elementwise_row;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_elementwise_row_is_found_from_its_onnx_op() {
        let rows: Vec<_> = graph::OPS
            .iter()
            .filter_map(|i| Some((i.name, i.elementwise?)))
            .collect();
        assert!(rows.len() >= 19, "{} elementwise rows", rows.len());
        for (name, e) in rows {
            let (found, _) = graph::elementwise_from_onnx(e.onnx).expect(e.onnx);
            assert_eq!(found, name, "{} maps to one op", e.onnx);
            assert_eq!(graph::elementwise(name).map(|r| r.onnx), Some(e.onnx));
            assert!(e.since >= 1 && e.since <= crate::onnx::MAX_OPSET, "{name}");
        }
        assert!(graph::elementwise(graph::Softmax::NAME).is_none());
        assert!(graph::elementwise_from_onnx("Softmax").is_none());
    }

    #[test]
    fn elementwise_verifier_checks_float_only_and_broadcast() {
        let check = |text: &str| {
            let m = crate::parser::parse_module(text).expect("parses");
            crate::ir::verify(&m).map_err(|e| format!("{e:?}"))
        };
        let unary = |op: &str, t: &str| {
            format!(
                r#"module {{ func.func @main(%a: {t}) -> {t} {{ %0 = "{op}"(%a) : ({t}) -> {t} func.return %0 : {t} }} }}"#
            )
        };
        check(&unary(graph::Softplus::NAME, "tensor<4xf32>")).unwrap();
        let err = check(&unary(graph::Softplus::NAME, "tensor<4xi32>")).unwrap_err();
        assert!(err.contains("floating-point"), "{err}");
        check(&unary(graph::Neg::NAME, "tensor<4xi32>")).unwrap();
        let add = |b: &str| {
            format!(
                r#"module {{ func.func @main(%a: tensor<2x3xf32>, %b: {b}) -> tensor<2x3xf32> {{ %0 = "{}"(%a, %b) : (tensor<2x3xf32>, {b}) -> tensor<2x3xf32> func.return %0 : tensor<2x3xf32> }} }}"#,
                graph::Add::NAME
            )
        };
        check(&add("tensor<3xf32>")).unwrap();
        assert!(check(&add("tensor<2xf32>")).is_err());
    }

    #[test]
    fn op_names_are_unique_and_documented() {
        let ops = all_ops();
        let mut seen = std::collections::HashSet::new();
        for o in &ops {
            assert!(seen.insert(o.name), "duplicate op {}", o.name);
            assert!(!o.doc.trim().is_empty(), "{} has no doc", o.name);
        }
    }
}
