//! `shape-inference`: recomputes the result type of every `graph` op from its operand types, attributes
//! and constant operands (ONNX shape rules), refining unknown (`?`) dims, and updates each function's
//! result types to match its `func.return`.
//!
//! [`infer_op`] is the single source of the shape rules; the ONNX importer uses it to type the ops it
//! creates and `fold-constants` uses it before folding. Refinement never loosens: a known dim is kept
//! when the rule yields an unknown one, and two different static extents are an "inconsistent shapes"
//! error naming the op's location. Element types come from the op's semantics, or — for ops whose
//! result type is chosen by an attribute (`graph.cast`, `graph.quantize_linear`, ...) — from the
//! current result type.

use super::PassInfo;
use crate::dialects::graph::{self, ScalarFn, broadcast_dims, operand_slot};
use crate::interp::{self, Tensor};
use crate::ir::{Attribute, Dim, Module, OpId, ScalarType, TensorType, Type, ValueId};
use crate::pass::{Pass, PassError};

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "shape-inference",
    description: "recompute graph op result types from operands, attributes and constant operands",
    create: || Box::new(ShapeInference),
};

/// The pass.
pub struct ShapeInference;

impl Pass for ShapeInference {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        for f in m.functions() {
            let Some(entry) = m.entry_block(f) else {
                continue;
            };
            for op in m.block(entry).ops.clone() {
                refine_op(m, op).map_err(|e| PassError::failed(INFO.name, m.op(op).loc.clone(), e))?;
            }
            update_function_type(m, f);
        }
        Ok(())
    }
}

/// Infers and applies refined result types of one op. Unknown ops are left alone.
pub fn refine_op(m: &mut Module, op: OpId) -> Result<bool, String> {
    let Some(types) = infer_op(m, op)? else {
        return Ok(false);
    };
    for t in &types {
        if let Some(t) = t.as_tensor() {
            t.check_limits()?;
        }
    }
    let mut changed = false;
    let results = m.op(op).results.clone();
    for (r, new) in results.into_iter().zip(types) {
        let old = m.value_type(r).clone();
        let merged = merge_types(&old, &new)?;
        if merged != old {
            m.set_value_type(r, merged);
            changed = true;
        }
    }
    Ok(changed)
}

/// Sets `function_type`'s results of `func` to the types of its `func.return` operands.
pub fn update_function_type(m: &mut Module, func: OpId) {
    let Some(entry) = m.entry_block(func) else {
        return;
    };
    let Some(&ret) = m.block(entry).ops.last() else {
        return;
    };
    if m.op(ret).name != "func.return" {
        return;
    }
    let outs: Vec<Type> = m
        .op(ret)
        .operands
        .iter()
        .map(|&v| m.value_type(v).clone())
        .collect();
    let ins: Vec<Type> = m
        .block(entry)
        .args
        .iter()
        .map(|&v| m.value_type(v).clone())
        .collect();
    m.set_attr(func, "function_type", Attribute::Type(Type::Function(ins, outs)));
}

/// Merges an inferred type into a known one: static beats unknown; symbolic names are kept over `?`;
/// two different static extents (or ranks) are an error.
pub fn merge_types(old: &Type, new: &Type) -> Result<Type, String> {
    let (Some(o), Some(n)) = (old.as_tensor(), new.as_tensor()) else {
        return Ok(new.clone());
    };
    if o.rank() != n.rank() {
        // A placeholder (rank-0 result created before inference) is simply replaced.
        return Ok(new.clone());
    }
    let mut dims = Vec::with_capacity(n.rank());
    for (a, b) in o.dims.iter().zip(&n.dims) {
        dims.push(match (a, b) {
            (Dim::Static(x), Dim::Static(y)) if x != y => {
                return Err(format!(
                    "inconsistent shapes: inferred {} but the value is declared {}",
                    Type::Tensor(n.clone()),
                    Type::Tensor(o.clone())
                ));
            }
            (_, Dim::Static(y)) => Dim::Static(*y),
            (Dim::Static(x), _) => Dim::Static(*x),
            (Dim::Symbolic(s), _) => Dim::Symbolic(s.clone()),
            (_, d) => d.clone(),
        });
    }
    Ok(Type::Tensor(TensorType { dims, elem: n.elem }))
}

fn tensor(m: &Module, v: ValueId) -> Result<TensorType, String> {
    m.value_type(v)
        .as_tensor()
        .cloned()
        .ok_or_else(|| format!("expected a tensor operand, got {}", m.value_type(v)))
}

fn cval(m: &Module, v: Option<ValueId>) -> Option<Tensor> {
    interp::constant_value(m, v?)
}

fn result_is_static(m: &Module, op: OpId) -> bool {
    m.op(op)
        .results
        .first()
        .and_then(|&r| m.value_type(r).as_tensor())
        .is_some_and(|t| t.static_shape().is_some())
}

/// The static length of a 1-D value.
fn static_len(m: &Module, v: ValueId) -> Option<usize> {
    let t = m.value_type(v).as_tensor()?;
    match t.rank() {
        0 => Some(1),
        _ => t.dims[0].as_static().map(|d| d as usize),
    }
}

fn st(d: &Dim) -> Option<i64> {
    d.as_static().map(|x| x as i64)
}

fn dim_of(x: i64) -> Dim {
    if x < 0 { Dim::Dynamic } else { Dim::Static(x as u64) }
}

fn norm_axis(a: i64, rank: usize) -> Result<usize, String> {
    crate::dialects::normalize_axis(a, rank)
}

fn int_attr(m: &Module, op: OpId, name: &str, default: i64) -> i64 {
    m.attr(op, name).and_then(Attribute::as_int).unwrap_or(default)
}

/// An i64 list from an attribute or a constant operand slot; `Err(())` when the operand exists but is
/// not constant.
fn ints_from(m: &Module, op: OpId, attr: &str, slot: usize) -> Result<Option<Vec<i64>>, ()> {
    if let Some(a) = m.attr(op, attr).and_then(Attribute::as_i64_list) {
        return Ok(Some(a));
    }
    match operand_slot(m, op, slot) {
        None => Ok(None),
        Some(v) => match interp::constant_value(m, v) {
            Some(t) => Ok(Some(t.to_i64_vec())),
            None => Err(()),
        },
    }
}

fn result_elem(m: &Module, op: OpId, i: usize) -> ScalarType {
    m.op(op)
        .results
        .get(i)
        .and_then(|&r| m.value_type(r).elem())
        .unwrap_or(ScalarType::F32)
}

fn tt(dims: Vec<Dim>, elem: ScalarType) -> Type {
    Type::Tensor(TensorType { dims, elem })
}

fn product(dims: &[Dim]) -> Dim {
    let mut p: u64 = 1;
    for d in dims {
        match d.as_static().and_then(|x| p.checked_mul(x)) {
            Some(v) => p = v,
            None => return Dim::Dynamic,
        }
    }
    Dim::Static(p)
}

/// The result types of a `graph` op per ONNX shape rules, or `None` for ops it does not know (their
/// types are kept).
pub fn infer_op(m: &Module, op: OpId) -> Result<Option<Vec<Type>>, String> {
    let d = m.op(op);
    let name = d.name.as_str();
    if !name.starts_with(graph::PREFIX) {
        return Ok(None);
    }
    let operands = d.operands.clone();
    let nres = d.results.len();
    let need = graph::elementwise(&d.name).map_or_else(|| min_operands(name), |e| e.eval.arity());
    if operands.len() < need {
        return Err(format!("{name} needs at least {need} operand(s), got {}", operands.len()));
    }
    if nres == 0 {
        return Err(format!("{name} has no results"));
    }
    if operands.is_empty() && name != graph::Constant::NAME {
        return Ok(None);
    }
    let x = if operands.is_empty() {
        TensorType::new(&[], ScalarType::F32)
    } else {
        tensor(m, operands[0])?
    };
    let same = |elem| Ok(Some(vec![tt(x.dims.clone(), elem)]));
    let bcast_all = |ops: &[ValueId]| -> Result<Vec<Dim>, String> {
        let mut dims = tensor(m, ops[0])?.dims;
        for &o in &ops[1..] {
            dims = broadcast_dims(&dims, &tensor(m, o)?.dims)?;
        }
        Ok(dims)
    };
    if let Some(row) = graph::elementwise(&d.name) {
        return match row.eval {
            ScalarFn::Unary(..) => same(x.elem),
            ScalarFn::Binary(..) => Ok(Some(vec![tt(bcast_all(&operands)?, x.elem)])),
        };
    }
    match name {
        graph::Gelu::NAME | graph::Identity::NAME | graph::Softmax::NAME | graph::LogSoftmax::NAME
        | graph::RmsNorm::NAME | graph::Trilu::NAME | graph::RotaryEmbedding::NAME | graph::Clip::NAME | graph::Norm::NAME | graph::Rope::NAME | graph::CumSum::NAME => same(x.elem),
        graph::Cast::NAME | graph::QuantizeLinear::NAME | graph::DequantizeLinear::NAME => same(result_elem(m, op, 0)),
        graph::Max::NAME | graph::Min::NAME | graph::Mod::NAME => {
            Ok(Some(vec![tt(bcast_all(&operands)?, x.elem)]))
        }
        graph::Pow::NAME => Ok(Some(vec![tt(bcast_all(&operands)?, x.elem)])),
        graph::Equal::NAME | graph::LessOrEqual::NAME | graph::GreaterOrEqual::NAME | graph::Less::NAME | graph::Greater::NAME | graph::And::NAME | graph::Or::NAME => {
            Ok(Some(vec![tt(bcast_all(&operands)?, ScalarType::I1)]))
        }
        graph::Where::NAME => {
            let e = tensor(m, operands[1])?.elem;
            Ok(Some(vec![tt(bcast_all(&operands)?, e)]))
        }
        graph::MatMul::NAME | graph::MatMulInteger::NAME | graph::MatMulEpilogue::NAME => {
            let b = tensor(m, operands[1])?;
            let dims = matmul_dims(&x, &b)?;
            let elem = if name == graph::MatMulInteger::NAME { ScalarType::I32 } else { x.elem };
            Ok(Some(vec![tt(dims, elem)]))
        }
        graph::Gemm::NAME => {
            let b = tensor(m, operands[1])?;
            if x.rank() != 2 || b.rank() != 2 {
                return Err("Gemm operands must be 2-D".into());
            }
            let mm = if int_attr(m, op, "transA", 0) != 0 { &x.dims[1] } else { &x.dims[0] };
            let nn = if int_attr(m, op, "transB", 0) != 0 { &b.dims[0] } else { &b.dims[1] };
            Ok(Some(vec![tt(vec![mm.clone(), nn.clone()], x.elem)]))
        }
        graph::LayerNorm::NAME => {
            let axis = norm_axis(int_attr(m, op, "axis", -1), x.rank())?;
            let mut stat = x.dims[..axis].to_vec();
            stat.extend(std::iter::repeat_n(Dim::Static(1), x.rank() - axis));
            let mut v = vec![tt(x.dims.clone(), x.elem)];
            for i in 1..nres {
                v.push(tt(stat.clone(), result_elem(m, op, i)));
            }
            Ok(Some(v))
        }
        graph::ReduceMean::NAME | graph::ReduceSum::NAME | graph::ReduceMax::NAME | graph::ReduceL2::NAME => {
            let keep = int_attr(m, op, "keepdims", 1) != 0;
            let axes = match ints_from(m, op, "axes", 1) {
                Ok(a) => a,
                Err(()) => {
                    if keep {
                        return Ok(Some(vec![tt(vec![Dim::Dynamic; x.rank()], x.elem)]));
                    }
                    let n = static_len(m, operands[1]).ok_or("cannot infer the result rank: reduction axes are not constant")?;
                    return Ok(Some(vec![tt(vec![Dim::Dynamic; x.rank().saturating_sub(n)], x.elem)]));
                }
            };
            let axes: Vec<usize> = match axes {
                Some(a) if !a.is_empty() => a
                    .iter()
                    .map(|&a| norm_axis(a, x.rank()))
                    .collect::<Result<_, _>>()?,
                _ if int_attr(m, op, "noop_with_empty_axes", 0) != 0 => {
                    return same(x.elem);
                }
                _ => (0..x.rank()).collect(),
            };
            let mut dims = vec![];
            for (i, dm) in x.dims.iter().enumerate() {
                if axes.contains(&i) {
                    if keep {
                        dims.push(Dim::Static(1));
                    }
                } else {
                    dims.push(dm.clone());
                }
            }
            Ok(Some(vec![tt(dims, x.elem)]))
        }
        graph::Reshape::NAME => {
            if operands.len() < 2 {
                return Ok(None);
            }
            let Some(shape) = cval(m, Some(operands[1])) else {
                let n = static_len(m, operands[1]).ok_or("cannot infer the result rank: the shape operand has an unknown length")?;
                return Ok(Some(vec![tt(vec![Dim::Dynamic; n], x.elem)]));
            };
            let allowzero = int_attr(m, op, "allowzero", 0) != 0;
            Ok(Some(vec![tt(reshape_dims(&x.dims, &shape.to_i64_vec(), allowzero)?, x.elem)]))
        }
        graph::Transpose::NAME => {
            let perm = crate::dialects::graph::Transpose(op).perm(m);
            let dims = perm
                .iter()
                .map(|&p| {
                    x.dims
                        .get(p as usize)
                        .cloned()
                        .ok_or_else(|| format!("bad perm entry {p}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(vec![tt(dims, x.elem)]))
        }
        graph::Concat::NAME => {
            let axis = norm_axis(int_attr(m, op, "axis", 0), x.rank())?;
            let mut dims = x.dims.clone();
            let mut total = Some(0u64);
            for &o in &operands {
                let t = tensor(m, o)?;
                if t.rank() != x.rank() {
                    return Err("Concat operands have different ranks".into());
                }
                for (i, dd) in t.dims.iter().enumerate() {
                    if i != axis && matches!(dims[i], Dim::Dynamic) {
                        dims[i] = dd.clone();
                    }
                }
                total = total.zip(t.dims[axis].as_static()).and_then(|(a, b)| a.checked_add(b));
            }
            dims[axis] = total.map(Dim::Static).unwrap_or(Dim::Dynamic);
            Ok(Some(vec![tt(dims, x.elem)]))
        }
        graph::Split::NAME => {
            let axis = norm_axis(int_attr(m, op, "axis", 0), x.rank())?;
            let sizes: Vec<Dim> = match ints_from(m, op, "split", 1) {
                Ok(Some(s)) => s.iter().map(|&v| dim_of(v)).collect(),
                Err(()) => vec![Dim::Dynamic; nres],
                Ok(None) => match x.dims[axis].as_static() {
                    Some(total) => {
                        let n = nres.max(1) as u64;
                        let chunk = total.div_ceil(n);
                        (0..n)
                            .map(|i| Dim::Static(chunk.min(total.saturating_sub(i * chunk))))
                            .collect()
                    }
                    None => vec![Dim::Dynamic; nres],
                },
            };
            if sizes.len() != nres {
                return Err(format!("Split has {} sizes but {nres} outputs", sizes.len()));
            }
            Ok(Some(
                sizes
                    .into_iter()
                    .map(|s| {
                        let mut dims = x.dims.clone();
                        dims[axis] = s;
                        tt(dims, x.elem)
                    })
                    .collect(),
            ))
        }
        graph::Slice::NAME => {
            let get = |slot: usize| -> Result<Option<Vec<i64>>, ()> {
                match operand_slot(m, op, slot) {
                    None => Ok(None),
                    Some(v) => interp::constant_value(m, v).map(|t| Some(t.to_i64_vec())).ok_or(()),
                }
            };
            let (Ok(Some(starts)), Ok(Some(ends)), Ok(axes), Ok(steps)) = (get(1), get(2), get(3), get(4))
            else {
                let mut dims = x.dims.clone();
                match get(3) {
                    Ok(Some(axes)) => {
                        for a in axes {
                            let a = norm_axis(a, x.rank())?;
                            dims[a] = Dim::Dynamic;
                        }
                    }
                    _ => dims = vec![Dim::Dynamic; x.rank()],
                }
                return Ok(Some(vec![tt(dims, x.elem)]));
            };
            let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
            let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
            if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
                return Err("Slice starts/ends/axes/steps have different lengths".into());
            }
            let mut dims = x.dims.clone();
            for i in 0..starts.len() {
                let a = norm_axis(axes[i], x.rank())?;
                dims[a] = match st(&x.dims[a]) {
                    Some(n) => Dim::Static(slice_len(n, starts[i], ends[i], steps[i])? as u64),
                    None => Dim::Dynamic,
                };
            }
            Ok(Some(vec![tt(dims, x.elem)]))
        }
        graph::Gather::NAME => {
            let idx = tensor(m, operands[1])?;
            let axis = norm_axis(int_attr(m, op, "axis", 0), x.rank())?;
            let mut dims = x.dims[..axis].to_vec();
            dims.extend(idx.dims.iter().cloned());
            dims.extend(x.dims[axis + 1..].iter().cloned());
            Ok(Some(vec![tt(dims, x.elem)]))
        }
        graph::ScatterNd::NAME => Ok(Some(vec![tt(x.dims.clone(), x.elem)])),
        graph::TopK::NAME => {
            let axis = norm_axis(int_attr(m, op, "axis", -1), x.rank())?;
            let mut dims = x.dims.clone();
            dims[axis] = match cval(m, Some(operands[1])).map(|k| k.to_i64_vec()) {
                Some(k) if k.len() == 1 && k[0] >= 0 => Dim::Static(k[0] as u64),
                Some(k) => return Err(format!("TopK: k must be one non-negative value, got {k:?}")),
                None => Dim::Dynamic,
            };
            Ok(Some(vec![tt(dims.clone(), x.elem), tt(dims, ScalarType::I64)]))
        }
        graph::OneHot::NAME => {
            let values = tensor(m, operands[2])?;
            let axis = norm_axis(int_attr(m, op, "axis", -1), x.rank() + 1)?;
            let depth = match cval(m, Some(operands[1])).map(|d| d.to_f64_vec()) {
                Some(d) if d.len() == 1 && d[0] >= 1.0 => Dim::Static(d[0] as u64),
                Some(d) => return Err(format!("OneHot: depth must be one value >= 1, got {d:?}")),
                None => Dim::Dynamic,
            };
            let mut dims = x.dims.clone();
            dims.insert(axis, depth);
            Ok(Some(vec![tt(dims, values.elem)]))
        }
        graph::GatherElements::NAME => {
            let idx = tensor(m, operands[1])?;
            Ok(Some(vec![tt(idx.dims.clone(), x.elem)]))
        }
        graph::GatherNd::NAME => {
            let idx = tensor(m, operands[1])?;
            let b = int_attr(m, op, "batch_dims", 0).max(0) as usize;
            let Some(last) = idx.dims.last().and_then(Dim::as_static) else {
                return Err("GatherND needs a static last indices dim".into());
            };
            let mut dims = idx.dims[..idx.rank() - 1].to_vec();
            let from = b + last as usize;
            if from > x.rank() {
                return Err("GatherND indices are deeper than the data rank".into());
            }
            dims.extend(x.dims[from..].iter().cloned());
            Ok(Some(vec![tt(dims, x.elem)]))
        }
        graph::Unsqueeze::NAME => {
            let Ok(Some(axes)) = ints_from(m, op, "axes", 1) else {
                let Some(&axes) = operands.get(1) else {
                    // No axes: the result type is the specification.
                    return Ok(None);
                };
                let n = static_len(m, axes).ok_or("cannot infer the result rank: axes are not constant")?;
                return Ok(Some(vec![tt(vec![Dim::Dynamic; x.rank() + n], x.elem)]));
            };
            let r = x.rank() + axes.len();
            let mut ax: Vec<usize> = axes.iter().map(|&a| norm_axis(a, r)).collect::<Result<_, _>>()?;
            ax.sort_unstable();
            let mut dims = Vec::with_capacity(r);
            let mut it = x.dims.iter();
            for i in 0..r {
                if ax.contains(&i) {
                    dims.push(Dim::Static(1));
                } else {
                    dims.push(it.next().cloned().ok_or("Unsqueeze axes repeat")?);
                }
            }
            Ok(Some(vec![tt(dims, x.elem)]))
        }
        graph::Squeeze::NAME => {
            let axes = match ints_from(m, op, "axes", 1) {
                Ok(a) => a,
                Err(()) => {
                    let n = static_len(m, operands[1]).ok_or("cannot infer the result rank: axes are not constant")?;
                    return Ok(Some(vec![tt(vec![Dim::Dynamic; x.rank().saturating_sub(n)], x.elem)]));
                }
            };
            let dims = match axes {
                Some(a) => {
                    let ax: Vec<usize> = a.iter().map(|&a| norm_axis(a, x.rank())).collect::<Result<_, _>>()?;
                    x.dims
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !ax.contains(i))
                        .map(|(_, d)| d.clone())
                        .collect()
                }
                None if result_is_static(m, op) => return Ok(None),
                None => x.dims.iter().filter(|d| **d != Dim::Static(1)).cloned().collect(),
            };
            Ok(Some(vec![tt(dims, x.elem)]))
        }
        graph::Flatten::NAME => {
            let r = x.rank();
            let a = int_attr(m, op, "axis", 1);
            let a = if a < 0 { a + r as i64 } else { a };
            if a < 0 || a > r as i64 {
                return Err(format!("Flatten axis {a} out of range for rank {r}"));
            }
            let a = a as usize;
            Ok(Some(vec![tt(vec![product(&x.dims[..a]), product(&x.dims[a..])], x.elem)]))
        }
        graph::Expand::NAME => {
            let Some(shape) = cval(m, Some(operands[1])) else {
                let n = static_len(m, operands[1]).ok_or("cannot infer the result rank: the shape operand has an unknown length")?;
                return Ok(Some(vec![tt(vec![Dim::Dynamic; n.max(x.rank())], x.elem)]));
            };
            let sd: Vec<Dim> = shape.to_i64_vec().iter().map(|&v| dim_of(v)).collect();
            Ok(Some(vec![tt(broadcast_dims(&x.dims, &sd)?, x.elem)]))
        }
        graph::Tile::NAME => {
            let dims = match cval(m, Some(operands[1])) {
                Some(r) => {
                    let reps = r.to_i64_vec();
                    if reps.len() != x.rank() || reps.iter().any(|&n| n < 0) {
                        return Err(format!("Tile: {} repeats for a rank-{} input", reps.len(), x.rank()));
                    }
                    x.dims
                        .iter()
                        .zip(&reps)
                        .map(|(d, &n)| match d.as_static() {
                            Some(s) => Dim::Static(s * n as u64),
                            None if n == 1 => d.clone(),
                            None => Dim::Dynamic,
                        })
                        .collect()
                }
                None => vec![Dim::Dynamic; x.rank()],
            };
            Ok(Some(vec![tt(dims, x.elem)]))
        }
        graph::Shape::NAME => {
            let rank = x.rank() as i64;
            let clamp = |a: i64| if a < 0 { (a + rank).max(0) } else { a.min(rank) };
            let s = clamp(int_attr(m, op, "start", 0));
            let e = clamp(int_attr(m, op, "end", rank));
            Ok(Some(vec![tt(vec![Dim::Static((e - s).max(0) as u64)], ScalarType::I64)]))
        }
        graph::Size::NAME => Ok(Some(vec![tt(vec![], ScalarType::I64)])),
        graph::Range::NAME => {
            let vals: Option<Vec<Tensor>> = operands.iter().map(|&o| interp::constant_value(m, o)).collect();
            let n = match vals {
                Some(v) if v.iter().all(|t| t.len() == 1) => {
                    let (s, l, dl) = (v[0].get_f64(0), v[1].get_f64(0), v[2].get_f64(0));
                    if x.elem.is_float() {
                        if dl == 0.0 || !dl.is_finite() {
                            return Err(format!("Range delta is {dl}: the sequence has no end"));
                        }
                        Dim::Static(((l - s) / dl).ceil().max(0.0) as u64)
                    } else {
                        let (s, l, dl) = (v[0].get_i128(0), v[1].get_i128(0), v[2].get_i128(0));
                        if dl == 0 {
                            return Err("Range delta is zero".into());
                        }
                        let diff = l - s;
                        let q = diff / dl + if diff % dl != 0 && (diff > 0) == (dl > 0) { 1 } else { 0 };
                        Dim::Static(q.max(0) as u64)
                    }
                }
                _ => Dim::Dynamic,
            };
            Ok(Some(vec![tt(vec![n], x.elem)]))
        }
        graph::ConstantOfShape::NAME => {
            let elem = result_elem(m, op, 0);
            match cval(m, Some(operands[0])) {
                Some(s) => Ok(Some(vec![tt(s.to_i64_vec().iter().map(|&v| dim_of(v)).collect(), elem)])),
                None => {
                    let n = static_len(m, operands[0]).ok_or("cannot infer the result rank: the shape operand has an unknown length")?;
                    Ok(Some(vec![tt(vec![Dim::Dynamic; n], elem)]))
                }
            }
        }
        graph::Pad::NAME => {
            let Some(pads) = cval(m, operand_slot(m, op, 1)).map(|t| t.to_i64_vec()) else {
                return Ok(Some(vec![tt(vec![Dim::Dynamic; x.rank()], x.elem)]));
            };
            let axes: Vec<usize> = match cval(m, operand_slot(m, op, 3)) {
                Some(a) => a.to_i64_vec().iter().map(|&a| norm_axis(a, x.rank())).collect::<Result<_, _>>()?,
                None => (0..x.rank()).collect(),
            };
            if pads.len() != 2 * axes.len() {
                return Err("Pad 'pads' length must be twice the number of axes".into());
            }
            let mut dims = x.dims.clone();
            for (i, &a) in axes.iter().enumerate() {
                dims[a] = match st(&x.dims[a]) {
                    Some(n) if n + pads[i] + pads[i + axes.len()] < 0 => {
                        return Err(format!(
                            "pads {} and {} crop axis {a} of {n} elements below zero",
                            pads[i],
                            pads[i + axes.len()]
                        ));
                    }
                    Some(n) => dim_of(n + pads[i] + pads[i + axes.len()]),
                    None => Dim::Dynamic,
                };
            }
            Ok(Some(vec![tt(dims, x.elem)]))
        }
        graph::Attention::NAME => infer_attention(m, op, &x, nres).map(Some),
        graph::Einsum::NAME => {
            let eq = m.attr(op, "equation").and_then(Attribute::as_str).unwrap_or("");
            let ins: Vec<TensorType> = operands.iter().map(|&o| tensor(m, o)).collect::<Result<_, _>>()?;
            Ok(Some(vec![tt(einsum_dims(eq, &ins)?, x.elem)]))
        }
        graph::Constant::NAME => Ok(None),
        _ => Ok(None),
    }
}

/// The fewest operands each op reads positionally (the verifiers check exact counts).
fn min_operands(name: &str) -> usize {
    match name {
        graph::Constant::NAME => 0,
        graph::Pow::NAME | graph::Mod::NAME | graph::Equal::NAME | graph::LessOrEqual::NAME | graph::GreaterOrEqual::NAME | graph::Less::NAME
        | graph::Greater::NAME | graph::And::NAME | graph::Or::NAME | graph::MatMul::NAME | graph::MatMulInteger::NAME | graph::MatMulEpilogue::NAME | graph::Gemm::NAME | graph::Gather::NAME
        | graph::GatherNd::NAME | graph::GatherElements::NAME | graph::Expand::NAME | graph::LayerNorm::NAME | graph::RmsNorm::NAME | graph::QuantizeLinear::NAME | graph::DequantizeLinear::NAME | graph::Pad::NAME
        | graph::CumSum::NAME | graph::Tile::NAME | graph::TopK::NAME => 2,
        graph::OneHot::NAME => 3,
        graph::Where::NAME | graph::Range::NAME | graph::Attention::NAME | graph::RotaryEmbedding::NAME | graph::Slice::NAME => 3,
        _ => 1,
    }
}

/// Output length of a Slice along an axis of extent `n` (ONNX clamping rules).
pub fn slice_len(n: i64, start: i64, end: i64, step: i64) -> Result<i64, String> {
    let (s, e) = slice_bounds(n, start, end, step)?;
    Ok(if step > 0 {
        ((e - s).max(0) + step - 1) / step
    } else {
        ((s - e).max(0) + (-step) - 1) / (-step)
    })
}

/// Clamped (start, end) of a Slice along an axis of extent `n`.
pub fn slice_bounds(n: i64, start: i64, end: i64, step: i64) -> Result<(i64, i64), String> {
    if step == 0 {
        return Err("Slice step must not be zero".into());
    }
    let fix = |v: i64| if v < 0 { v.saturating_add(n) } else { v };
    let (s, e) = (fix(start), fix(end));
    Ok(if step > 0 {
        (s.clamp(0, n), e.clamp(0, n))
    } else {
        (s.clamp(-1, n - 1), e.clamp(-1, n - 1))
    })
}

/// The dims of Reshape's result for a target `shape` (0 copies the input dim unless `allowzero`, -1 is
/// inferred).
pub fn reshape_dims(input: &[Dim], shape: &[i64], allowzero: bool) -> Result<Vec<Dim>, String> {
    let mut dims = Vec::with_capacity(shape.len());
    let mut infer = None;
    for (i, &s) in shape.iter().enumerate() {
        dims.push(match s {
            -1 => {
                if infer.replace(i).is_some() {
                    return Err("Reshape shape has more than one -1".into());
                }
                Dim::Dynamic
            }
            0 if !allowzero => input
                .get(i)
                .cloned()
                .ok_or("Reshape shape copies a dim (0) past the input rank")?,
            s if s < 0 => return Err(format!("invalid Reshape extent {s}")),
            s => Dim::Static(s as u64),
        });
    }
    if let Some(i) = infer {
        let total = product(input);
        let known = product(&dims.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, d)| d.clone()).collect::<Vec<_>>());
        if let (Dim::Static(t), Dim::Static(k)) = (total, known) {
            if k == 0 || t % k != 0 {
                return Err(format!("cannot reshape {t} elements with the given shape"));
            }
            dims[i] = Dim::Static(t / k);
        }
    } else if let (Dim::Static(a), Dim::Static(b)) = (product(input), product(&dims))
        && a != b
    {
        return Err(format!("cannot reshape {a} elements into {b}"));
    }
    Ok(dims)
}

fn matmul_dims(a: &TensorType, b: &TensorType) -> Result<Vec<Dim>, String> {
    if a.rank() == 0 || b.rank() == 0 {
        return Err("matmul operands must have rank >= 1".into());
    }
    let mut ad = a.dims.clone();
    let mut bd = b.dims.clone();
    let (a1, b1) = (ad.len() == 1, bd.len() == 1);
    if a1 {
        ad.insert(0, Dim::Static(1));
    }
    if b1 {
        bd.push(Dim::Static(1));
    }
    if let (Dim::Static(x), Dim::Static(y)) = (&ad[ad.len() - 1], &bd[bd.len() - 2])
        && x != y
    {
        return Err(format!("inner dimensions do not match: {x} vs {y}"));
    }
    let mut out = broadcast_dims(&ad[..ad.len() - 2], &bd[..bd.len() - 2])?;
    if !a1 {
        out.push(ad[ad.len() - 2].clone());
    }
    if !b1 {
        out.push(bd[bd.len() - 1].clone());
    }
    Ok(out)
}

fn div_dim(d: &Dim, n: i64) -> Dim {
    match (d.as_static(), n) {
        (Some(v), n) if n > 0 => Dim::Static(v / n as u64),
        _ => Dim::Dynamic,
    }
}

fn mul_dim(d: &Dim, n: i64) -> Dim {
    match d.as_static() {
        Some(v) if n > 0 => Dim::Static(v * n as u64),
        _ => Dim::Dynamic,
    }
}

fn add_dim(a: &Dim, b: &Dim) -> Dim {
    match (a.as_static(), b.as_static()) {
        (Some(x), Some(y)) => Dim::Static(x + y),
        _ => Dim::Dynamic,
    }
}

fn infer_attention(m: &Module, op: OpId, q: &TensorType, nres: usize) -> Result<Vec<Type>, String> {
    let k = tensor(m, operand_slot(m, op, 1).ok_or("Attention needs K")?)?;
    let v = tensor(m, operand_slot(m, op, 2).ok_or("Attention needs V")?)?;
    let qh = int_attr(m, op, "q_num_heads", 0);
    let kvh = int_attr(m, op, "kv_num_heads", 0);
    let past = operand_slot(m, op, 4).map(|p| tensor(m, p)).transpose()?;
    let elem = q.elem;
    if k.rank() != q.rank() || v.rank() != q.rank() {
        return Err("Attention Q, K and V must have the same rank".into());
    }
    let (b, hq, sq, hkv, skv, hd, vhd) = match q.rank() {
        4 => (
            q.dims[0].clone(),
            q.dims[1].clone(),
            q.dims[2].clone(),
            k.dims[1].clone(),
            k.dims[2].clone(),
            k.dims[3].clone(),
            v.dims[3].clone(),
        ),
        3 => {
            if qh <= 0 || kvh <= 0 {
                return Err("3-D Attention needs q_num_heads and kv_num_heads".into());
            }
            (
                q.dims[0].clone(),
                Dim::Static(qh as u64),
                q.dims[1].clone(),
                Dim::Static(kvh as u64),
                k.dims[1].clone(),
                div_dim(&k.dims[2], kvh),
                div_dim(&v.dims[2], kvh),
            )
        }
        r => return Err(format!("Attention Q must be 3-D or 4-D, got rank {r}")),
    };
    let total = match &past {
        Some(p) if p.rank() == 4 => add_dim(&p.dims[2], &skv),
        _ => skv.clone(),
    };
    let y = if q.rank() == 4 {
        vec![b.clone(), hq.clone(), sq.clone(), vhd.clone()]
    } else {
        vec![b.clone(), sq.clone(), mul_dim(&vhd, qh)]
    };
    let mut out = vec![tt(y, elem)];
    let shapes = [
        vec![b.clone(), hkv.clone(), total.clone(), hd],
        vec![b.clone(), hkv, total.clone(), vhd],
        vec![b, hq, sq, total],
    ];
    for (i, s) in shapes.into_iter().enumerate().take(nres.saturating_sub(1)) {
        out.push(tt(s, result_elem(m, op, i + 1)));
    }
    Ok(out)
}

/// Parses an einsum equation into per-input subscripts (with `...` as `.`) and the output subscripts.
pub fn parse_einsum(eq: &str, ranks: &[usize]) -> Result<(Vec<Vec<char>>, Vec<char>), String> {
    let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != ranks.len() {
        return Err(format!("equation has {} terms for {} operands", terms.len(), ranks.len()));
    }
    // Ellipsis dims become upper-case private letters '0'.. so they broadcast like named dims.
    let mut ell_rank = 0usize;
    let mut ins = vec![];
    for (t, &r) in terms.iter().zip(ranks) {
        let letters = t.replace("...", "");
        if t.contains("...") {
            let n = r.checked_sub(letters.len()).ok_or("einsum term longer than operand rank")?;
            ell_rank = ell_rank.max(n);
            let mut v = vec![];
            let (pre, post) = t.split_once("...").unwrap_or((t, ""));
            v.extend(pre.chars());
            for i in 0..n {
                v.push(char::from_u32(0x2460 + (ell_rank - n + i) as u32).unwrap_or('?'));
            }
            v.extend(post.chars());
            ins.push(v);
        } else {
            if letters.len() != r {
                return Err(format!("einsum term '{t}' does not match operand rank {r}"));
            }
            ins.push(letters.chars().collect());
        }
    }
    let ell: Vec<char> = (0..ell_rank)
        .map(|i| char::from_u32(0x2460 + i as u32).unwrap_or('?'))
        .collect();
    let out = match rhs {
        Some(r) => {
            let mut v = vec![];
            let (pre, post) = r.split_once("...").map_or((r.as_str(), None), |(a, b)| (a, Some(b)));
            v.extend(pre.chars());
            if let Some(post) = post {
                v.extend(ell.iter().copied());
                v.extend(post.chars());
            }
            v
        }
        None => {
            let mut counts = std::collections::BTreeMap::new();
            for t in &ins {
                for &c in t {
                    if c.is_ascii_alphabetic() {
                        *counts.entry(c).or_insert(0) += 1;
                    }
                }
            }
            let mut v = ell.clone();
            v.extend(counts.into_iter().filter(|(_, n)| *n == 1).map(|(c, _)| c));
            v
        }
    };
    Ok((ins, out))
}

fn einsum_dims(eq: &str, ins: &[TensorType]) -> Result<Vec<Dim>, String> {
    let ranks: Vec<usize> = ins.iter().map(TensorType::rank).collect();
    let (terms, out) = parse_einsum(eq, &ranks)?;
    let mut size: std::collections::HashMap<char, Dim> = Default::default();
    for (t, ty) in terms.iter().zip(ins) {
        for (c, d) in t.iter().zip(&ty.dims) {
            let e = size.entry(*c).or_insert(d.clone());
            if *e == Dim::Static(1) || matches!(e, Dim::Dynamic) {
                *e = d.clone();
            }
        }
    }
    out.iter()
        .map(|c| size.get(c).cloned().ok_or_else(|| format!("einsum output letter '{c}' not in inputs")))
        .collect()
}
