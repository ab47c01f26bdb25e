//! `fuse-matmul-epilogue`: `act(a · b + bias)` (a MatMul, or a Gemm with alpha = beta = 1) becomes one `graph.matmul_epilogue(a, b, bias?)
//! {activation}` whose bias and activation run on the accumulator tile before it leaves the chip.
//!
//! The bias is an `add` of a tensor that broadcasts along the output rows (`[N]`, `[1, N]`). The
//! activation is found by *value*, not by spelling: the maximal region of elementwise ops fed only
//! by the matmul result and splat constants, with a single result leaving it, is evaluated on
//! sample points and compared with ReLU, GELU (erf and tanh forms) and SiLU. So `0.5·x·(1 +
//! tanh(√(2/π)·(x + 0.044715·x³)))` in any association, `x·sigmoid(x)`, `max(x, 0)` or a
//! `graph.gelu` op all fuse, whatever the exporter. A region matching none leaves the matmul (with
//! its bias, if any) fused without activation.
//!
//! A residual `add` after all that — `act(a · b + bias) + r`, either operand order, `r` of the
//! output's shape or broadcasting to it, the add the only use of the activation's result — fuses
//! too, as the op's last operand (`residual = true`): the kernel loads `r` per output tile and
//! adds it in f32 before the one rounding to the output type. Not through a reshape of the result.

use crate::dialects::graph::{self, ScalarFn};
use std::collections::{HashMap, HashSet};

use super::PassInfo;
use crate::backend::plan::{shape_of, splat_of};
use crate::ir::{Attribute, Location, Module, OpId, OpSpec, ScalarType, ValueId};
use crate::pass::{Pass, PassError};

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "fuse-matmul-epilogue",
    description: "fuse matmul + row bias + activation (ReLU, GELU erf/tanh, SiLU; found by value) + residual add into graph.matmul_epilogue",
    create: || Box::new(FuseMatmulEpilogue),
};

/// The pass.
pub struct FuseMatmulEpilogue;

impl Pass for FuseMatmulEpilogue {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        for op in m.walk_all() {
            let name = m.op(op).name.as_str();
            if matches!(name, graph::MatMul::NAME | graph::Gemm::NAME)
                && !m.op(op).erased
                && m.op(op).parent.is_some()
            {
                let _ = fuse(m, op);
            }
        }
        crate::passes::dce::erase_dead_ops(m);
        Ok(())
    }
}

/// Error function (Abramowitz–Stegun 7.1.28 refined; |error| < 3e-7), for classifying regions.
pub fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let y = 1.0
        - t * (-x * x - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { y } else { -y }
}

const ELEMENTWISE: &[&str] = &[
    graph::Add::NAME,
    graph::Sub::NAME,
    graph::Mul::NAME,
    graph::Div::NAME,
    graph::Pow::NAME,
    graph::Tanh::NAME,
    graph::Erf::NAME,
    graph::Sigmoid::NAME,
    graph::Relu::NAME,
    graph::Neg::NAME,
    graph::Exp::NAME,
    graph::Sqrt::NAME,
    graph::Reciprocal::NAME,
    graph::Gelu::NAME,
    graph::Max::NAME,
    graph::Min::NAME,
];

fn eval_op(m: &Module, op: OpId, a: &[f64]) -> Option<f64> {
    let x = *a.first()?;
    let y = a.get(1).copied();
    let name = m.op(op).name.as_str();
    if let Some(row) = graph::elementwise(name) {
        return Some(match row.eval {
            ScalarFn::Unary(f, _) => f(x),
            ScalarFn::Binary(f, _) => f(x, y?),
        });
    }
    Some(match name {
        graph::Pow::NAME => x.powf(y?),
        graph::Max::NAME => a.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        graph::Min::NAME => a.iter().copied().fold(f64::INFINITY, f64::min),
        graph::Gelu::NAME => {
            if m.attr(op, "approximate").and_then(Attribute::as_str) == Some("tanh") {
                gelu_tanh(x)
            } else {
                0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
            }
        }
        _ => return None,
    })
}

fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + (0.797_884_560_802_865_4 * (x + 0.044715 * x * x * x)).tanh())
}

/// The single-output elementwise region fed by `x`: (ops in block order, its result).
fn region(m: &Module, x: ValueId) -> Option<(Vec<OpId>, ValueId)> {
    let shape = shape_of(m, x)?;
    let mut inside: HashSet<ValueId> = HashSet::from([x]);
    let mut ops: Vec<OpId> = vec![];
    loop {
        let mut grew = false;
        for v in inside.clone() {
            for (u, _) in m.uses(v) {
                if ops.contains(&u) || !ELEMENTWISE.contains(&m.op(u).name.as_str()) {
                    continue;
                }
                let d = m.op(u);
                let ok = d.operands.iter().all(|o| inside.contains(o) || splat_of(m, *o).is_some())
                    && d.results.len() == 1
                    && shape_of(m, d.results[0]) == Some(shape.clone());
                if ok {
                    ops.push(u);
                    inside.insert(d.results[0]);
                    grew = true;
                }
            }
        }
        if !grew || ops.len() > 32 {
            break;
        }
    }
    if ops.is_empty() {
        return None;
    }
    // Exactly one value may leave the region, and it must be an op result of the region.
    let mut leaving = vec![];
    for &v in &inside {
        if m.uses(v).iter().any(|(u, _)| !ops.contains(u)) {
            leaving.push(v);
        }
    }
    if leaving.len() != 1 || leaving[0] == x {
        return None;
    }
    let block = m.op(ops[0]).parent?;
    let order: HashMap<OpId, usize> = m
        .block(block)
        .ops
        .iter()
        .enumerate()
        .map(|(i, &o)| (o, i))
        .collect();
    ops.sort_by_key(|o| order.get(o).copied().unwrap_or(usize::MAX));
    Some((ops, leaving[0]))
}

fn classify(m: &Module, ops: &[OpId], x: ValueId, out: ValueId) -> Option<&'static str> {
    let samples = [-3.0, -2.0, -1.0, -0.5, -0.1, 0.0, 0.2, 0.7, 1.0, 1.5, 2.5, 4.0];
    let mut got = vec![];
    for &s in &samples {
        let mut val: HashMap<ValueId, f64> = HashMap::from([(x, s)]);
        for &op in ops {
            let d = m.op(op);
            let args: Option<Vec<f64>> = d
                .operands
                .iter()
                .map(|o| val.get(o).copied().or_else(|| splat_of(m, *o)))
                .collect();
            val.insert(d.results[0], eval_op(m, op, &args?)?);
        }
        got.push(*val.get(&out)?);
    }
    type Act = (&'static str, fn(f64) -> f64);
    let cands: [Act; 4] = [
        ("relu", |x| x.max(0.0)),
        ("gelu", |x| 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))),
        ("gelu_tanh", gelu_tanh),
        ("silu", |x| x / (1.0 + (-x).exp())),
    ];
    // Constants of a 16-bit float region are rounded (bf16 keeps 8 bits of mantissa), so its
    // values match the activation only to that precision; the closest candidate wins.
    let tol = match m.value_type(out).elem() {
        Some(ScalarType::BF16) | Some(ScalarType::F16) => 2e-2,
        _ => 1e-5,
    };
    cands
        .into_iter()
        .map(|(name, f)| {
            let err = samples
                .iter()
                .zip(&got)
                .map(|(&s, &g)| (g - f(s)).abs() / (1.0 + f(s).abs()))
                .fold(0.0, f64::max);
            (name, err)
        })
        .filter(|&(_, err)| err <= tol)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(name, _)| name)
}

/// `(a, b, bias)` of a Gemm that is a plain matmul plus a row bias (alpha = beta = 1, no
/// transposed A); a transposed B gets a transpose op (a free view after lowering).
fn gemm_parts(m: &mut Module, op: OpId) -> Option<(ValueId, ValueId, Option<ValueId>)> {
    let d = m.op(op).clone();
    let attr = |k: &str| m.attr(op, k).and_then(Attribute::as_f64);
    if attr("alpha").unwrap_or(1.0) != 1.0
        || attr("beta").unwrap_or(1.0) != 1.0
        || attr("transA").unwrap_or(0.0) != 0.0
    {
        return None;
    }
    let n = *shape_of(m, d.results[0])?.last()?;
    let bias = match d.operands.get(2) {
        Some(&c) => {
            let cs = shape_of(m, c)?;
            let row = cs.last() == Some(&n) && cs.iter().rev().skip(1).all(|&x| x == 1);
            if !row {
                return None;
            }
            Some(c)
        }
        None => None,
    };
    let mut b = d.operands[1];
    if attr("transB").unwrap_or(0.0) != 0.0 {
        let bs = shape_of(m, b)?;
        let elem = m.value_type(b).elem()?;
        let t = m.create_op(
            OpSpec::new(graph::Transpose::NAME, d.loc.clone())
                .operands(&[b])
                .results(vec![crate::ir::Type::tensor(&[bs[1], bs[0]], elem)])
                .attr("perm", Attribute::DenseI64Array(vec![1, 0])),
        );
        m.insert_op_before(op, t);
        b = m.op(t).results[0];
    }
    Some((d.operands[0], b, bias))
}

fn ops_use(m: &Module, ops: &[OpId], v: ValueId) -> bool {
    ops.iter().any(|&o| m.op(o).operands.contains(&v))
}

/// The residual add consuming `out` (of shape `rs`): `(add, res)` when `out` has exactly that one
/// use, `res` broadcasts to `rs` and the add's result has shape `rs` (same element type).
fn residual_of(m: &Module, out: ValueId, rs: &[u64]) -> Option<(OpId, ValueId)> {
    let uses = m.uses(out);
    let [(add, ix)] = uses.as_slice() else {
        return None;
    };
    let d = m.op(*add);
    if d.name != graph::Add::NAME || d.operands.len() != 2 || d.results.len() != 1 {
        return None;
    }
    let res = d.operands[1 - ix];
    if res == out || m.value_type(res).elem() != m.value_type(out).elem() {
        return None;
    }
    let s = shape_of(m, res)?;
    let fits = s.len() <= rs.len()
        && s
            .iter()
            .rev()
            .zip(rs.iter().rev())
            .all(|(&a, &b)| a == b || a == 1);
    (fits && shape_of(m, d.results[0]).as_deref() == Some(rs)).then_some((*add, res))
}

fn fuse(m: &mut Module, mm: OpId) -> Option<()> {
    let d = m.op(mm).clone();
    let r = d.results[0];
    let rs = shape_of(m, r)?;
    let n = *rs.last()?;
    let mut locs: Vec<Location> = vec![d.loc.clone()];
    let mut x = r;
    let mut bias = None;
    let mut operands = d.operands.clone();
    if d.name == graph::Gemm::NAME {
        let (a, b, c) = gemm_parts(m, mm)?;
        operands = vec![a, b];
        bias = c;
    }
    let uses = m.uses(r);
    if bias.is_none() && uses.len() == 1 && m.op(uses[0].0).name == graph::Add::NAME {
        let add = uses[0].0;
        let other = m.op(add).operands[1 - uses[0].1];
        let bs = shape_of(m, other)?;
        let row = bs.last() == Some(&n) && bs.iter().rev().skip(1).all(|&d| d == 1);
        if row && shape_of(m, m.op(add).results[0]) == Some(rs.clone()) {
            bias = Some(other);
            locs.push(m.op(add).loc.clone());
            x = m.op(add).results[0];
        }
    }
    // Exporters often reshape a 2-D Gemm result before the activation: look through a
    // single-use reshape and reshape the fused result back.
    let mut through: Option<OpId> = None;
    let xu = m.uses(x);
    if xu.len() == 1 && m.op(xu[0].0).name == graph::Reshape::NAME {
        through = Some(xu[0].0);
    }
    let rx = through.map_or(x, |t| m.op(t).results[0]);
    let (act, out) = match region(m, rx).or_else(|| through.and(region(m, x))) {
        Some((ops, out)) => match classify(m, &ops, if ops_use(m, &ops, rx) { rx } else { x }, out) {
            Some(a) => {
                locs.extend(ops.iter().map(|&o| m.op(o).loc.clone()));
                (a, out)
            }
            None => ("none", x),
        },
        None => ("none", x),
    };
    let reshaped = shape_of(m, out)? != rs;
    // A residual: `out + res` (either operand order) as the only use of `out`, `res` of the
    // output's shape or broadcasting to it. It comes after the activation region (whose ops take
    // only the matmul result and splats), so `act(a · b + bias) + res` and not `act(… + res)`.
    let residual = if reshaped {
        None
    } else {
        residual_of(m, out, &rs)
    };
    if act == "none" && bias.is_none() && residual.is_none() && d.name == graph::MatMul::NAME {
        return None;
    }
    operands.extend(bias);
    let mut out = out;
    let mut attrs = vec![("activation", Attribute::str(act))];
    if let Some((add, res)) = residual {
        operands.push(res);
        locs.push(m.op(add).loc.clone());
        attrs.push(("residual", Attribute::Bool(true)));
        out = m.op(add).results[0];
    }
    let ty = if reshaped {
        m.value_type(r).clone()
    } else {
        m.value_type(out).clone()
    };
    let mut spec = OpSpec::new(graph::MatMulEpilogue::NAME, Location::fuse(locs.iter()))
        .operands(&operands)
        .results(vec![ty]);
    for (k, v) in attrs {
        spec = spec.attr(k, v);
    }
    let new = m.create_op(spec);
    // Inserted where the last fused op was: every operand (the residual too) is defined by then.
    let anchor = m.defining_op(out)?;
    m.insert_op_before(anchor, new);
    let mut nv = m.op(new).results[0];
    if reshaped {
        let t = m.value_type(out).clone();
        let rop = m.create_op(
            OpSpec::new(graph::Reshape::NAME, m.op(anchor).loc.clone())
                .operands(&[nv])
                .results(vec![t]),
        );
        m.insert_op_before(anchor, rop);
        nv = m.op(rop).results[0];
    }
    m.replace_all_uses(out, nv);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::{self, tensor::Tensor};
    use crate::parser::parse_module;

    fn ramp(n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) * scale).collect()
    }

    /// `gelu(x·w + b) + h` and `relu(x·w) + g` (g broadcast): the pass fuses both adds, and
    /// the interpreter gives the fused form the unfused graph's values.
    #[test]
    fn residual_add_fuses_and_keeps_the_interpreted_values() {
        let src = r#"module {
  func.func @main(%x: tensor<2x3x4xf32>, %w: tensor<4x5xf32>, %b: tensor<5xf32>, %h: tensor<2x3x5xf32>, %g: tensor<3x1xf32>) -> (tensor<2x3x5xf32>, tensor<2x3x5xf32>) {
    %m1 = "graph.matmul"(%x, %w) : (tensor<2x3x4xf32>, tensor<4x5xf32>) -> tensor<2x3x5xf32> loc("mm1")
    %b1 = "graph.add"(%m1, %b) : (tensor<2x3x5xf32>, tensor<5xf32>) -> tensor<2x3x5xf32> loc("bias")
    %a1 = "graph.gelu"(%b1) : (tensor<2x3x5xf32>) -> tensor<2x3x5xf32> loc("gelu")
    %r1 = "graph.add"(%a1, %h) : (tensor<2x3x5xf32>, tensor<2x3x5xf32>) -> tensor<2x3x5xf32> loc("res1")
    %m2 = "graph.matmul"(%x, %w) : (tensor<2x3x4xf32>, tensor<4x5xf32>) -> tensor<2x3x5xf32> loc("mm2")
    %a2 = "graph.relu"(%m2) : (tensor<2x3x5xf32>) -> tensor<2x3x5xf32> loc("relu")
    %r2 = "graph.add"(%g, %a2) : (tensor<3x1xf32>, tensor<2x3x5xf32>) -> tensor<2x3x5xf32> loc("res2")
    func.return %r1, %r2 : tensor<2x3x5xf32>, tensor<2x3x5xf32>
  }
}"#;
        let inputs = vec![
            Tensor::new(vec![2, 3, 4], ramp(24, 0.25)),
            Tensor::new(vec![4, 5], ramp(20, 0.125)),
            Tensor::new(vec![5], ramp(5, 0.5)),
            Tensor::new(vec![2, 3, 5], ramp(30, 0.75)),
            Tensor::new(vec![3, 1], ramp(3, 1.5)),
        ];
        let mut m = parse_module(src).expect("parse");
        let want = interp::run(&m, &inputs).expect("unfused");
        FuseMatmulEpilogue.run(&mut m).expect("pass");
        crate::ir::verify::verify(&m).expect("verify");
        let names: Vec<String> = m
            .walk_all()
            .into_iter()
            .filter(|&o| !m.op(o).erased && m.op(o).name.starts_with(graph::PREFIX))
            .map(|o| m.op(o).name.clone())
            .collect();
        assert_eq!(names, [graph::MatMulEpilogue::NAME, graph::MatMulEpilogue::NAME]);
        let got = interp::run(&m, &inputs).expect("fused");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.shape, w.shape);
            for i in 0..w.len() {
                let (a, b) = (g.get_f64(i), w.get_f64(i));
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b} at {i}");
            }
        }
    }
}
