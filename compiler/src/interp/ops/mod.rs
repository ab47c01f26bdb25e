//! The interpreter's kernels, one per `graph` op, dispatched by op name from [`eval`].
//!
//! Conventions: floats compute in f64 and round once to the result type (so f32 `+ - * / sqrt` are
//! exactly rounded); integers compute in i128 and wrap to the result type; integer division truncates
//! toward zero and a zero divisor yields 0 (ONNX leaves it undefined; we never trap). Data movement
//! (transpose, slice, gather, expand, ...) builds a source-index list once and copies elements of any
//! type through it.

use super::tensor::{Data, Elem, F8E4M3, Tensor, map_data, numel};
use crate::dialects::graph::{self, OPERAND_SLOTS, ScalarFn};
use crate::ir::{Attribute, Module, OpId, ScalarType};

mod attention;
mod index;
mod linalg;
mod movement;
mod quant;
use attention::*;
use index::*;
use linalg::*;
use movement::*;
use quant::*;

pub use index::scatter_nd_offsets;

type R<T> = Result<T, String>;

/// One op with its operand tensors.
pub struct OpCtx<'a> {
    pub m: &'a Module,
    pub op: OpId,
    pub ins: &'a [&'a Tensor],
    slots: Option<Vec<i64>>,
}

impl<'a> OpCtx<'a> {
    /// A context for `op` with operand tensors `ins`.
    pub fn new(m: &'a Module, op: OpId, ins: &'a [&'a Tensor]) -> Self {
        let slots = m.attr(op, OPERAND_SLOTS).and_then(Attribute::as_i64_list);
        OpCtx { m, op, ins, slots }
    }
    /// ONNX input `slot`, if present.
    pub fn input(&self, slot: usize) -> Option<&'a Tensor> {
        match &self.slots {
            Some(s) => s
                .iter()
                .position(|&x| x == slot as i64)
                .and_then(|i| self.ins.get(i).copied()),
            None => self.ins.get(slot).copied(),
        }
    }
    fn req(&self, slot: usize) -> R<&'a Tensor> {
        self.input(slot)
            .ok_or_else(|| format!("missing operand #{slot}"))
    }
    fn attr(&self, name: &str) -> Option<&'a Attribute> {
        self.m.attr(self.op, name)
    }
    fn int(&self, name: &str, default: i64) -> i64 {
        self.attr(name)
            .and_then(Attribute::as_int)
            .unwrap_or(default)
    }
    fn float(&self, name: &str) -> Option<f64> {
        self.attr(name).and_then(Attribute::as_f64)
    }
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).and_then(Attribute::as_i64_list)
    }
    /// An i64 list from attribute `name` or operand `slot`.
    fn ints_or_input(&self, name: &str, slot: usize) -> Option<Vec<i64>> {
        self.ints(name)
            .or_else(|| self.input(slot).map(Tensor::to_i64_vec))
    }
    fn result_elem(&self, i: usize) -> R<ScalarType> {
        let r = self.m.op(self.op).results.get(i).ok_or("missing result")?;
        self.m
            .value_type(*r)
            .elem()
            .ok_or_else(|| "result has no element type".to_string())
    }
    fn nresults(&self) -> usize {
        self.m.op(self.op).results.len()
    }
}

/// Largest tensor the interpreter materializes (elements); bigger shapes are an error, not an abort.
pub const MAX_ELEMENTS: usize = 1 << 28;

fn check_numel(shape: &[usize]) -> R<usize> {
    numel(shape)
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| format!("shape {shape:?} is too large for the interpreter"))
}

fn axis(a: i64, rank: usize) -> R<usize> {
    crate::dialects::normalize_axis(a, rank)
}

/// Evaluates the op in `c`.
pub fn eval(c: &OpCtx) -> R<Vec<Tensor>> {
    let name = c.m.op(c.op).name.as_str();
    let one = |t: Tensor| Ok(vec![t]);
    let x = || c.req(0);
    if let Some(row) = graph::elementwise(name) {
        return match row.eval {
            ScalarFn::Unary(ff, fi) => one(unary(x()?, ff, fi)),
            ScalarFn::Binary(ff, fi) => one(arith(x()?, c.req(1)?, ff, fi)?),
        };
    }
    match name {
        graph::Constant::NAME => one(super::dense_tensor(
            c.m,
            c.attr("value").ok_or("constant has no value")?,
        )?),
        graph::Identity::NAME => one(x()?.clone()),
        graph::Mod::NAME => {
            let fmod = c.int("fmod", 0) != 0;
            one(arith(
                x()?,
                c.req(1)?,
                |a, b| {
                    let r = a % b;
                    if fmod || r == 0.0 || (r < 0.0) == (b < 0.0) {
                        r
                    } else {
                        r + b
                    }
                },
                |a, b| {
                    if b == 0 {
                        return 0;
                    }
                    let r = a.wrapping_rem(b);
                    if fmod || r == 0 || (r < 0) == (b < 0) {
                        r
                    } else {
                        r + b
                    }
                },
            )?)
        }
        graph::Pow::NAME => one(pow(x()?, c.req(1)?)?),
        graph::Max::NAME => one(variadic(
            c.ins,
            |a, b| {
                if a.is_nan() || b.is_nan() {
                    f64::NAN
                } else {
                    a.max(b)
                }
            },
            |a, b| a.max(b),
        )?),
        graph::Min::NAME => one(variadic(
            c.ins,
            |a, b| {
                if a.is_nan() || b.is_nan() {
                    f64::NAN
                } else {
                    a.min(b)
                }
            },
            |a, b| a.min(b),
        )?),
        graph::Equal::NAME => one(compare(x()?, c.req(1)?, |a, b| a == b, |a, b| a == b)?),
        graph::Less::NAME => one(compare(x()?, c.req(1)?, |a, b| a < b, |a, b| a < b)?),
        graph::Greater::NAME => one(compare(x()?, c.req(1)?, |a, b| a > b, |a, b| a > b)?),
        graph::LessOrEqual::NAME => one(compare(x()?, c.req(1)?, |a, b| a <= b, |a, b| a <= b)?),
        graph::GreaterOrEqual::NAME => one(compare(x()?, c.req(1)?, |a, b| a >= b, |a, b| a >= b)?),
        graph::And::NAME => one(compare(
            x()?,
            c.req(1)?,
            |a, b| a != 0.0 && b != 0.0,
            |a, b| a != 0 && b != 0,
        )?),
        graph::Or::NAME => one(compare(
            x()?,
            c.req(1)?,
            |a, b| a != 0.0 || b != 0.0,
            |a, b| a != 0 || b != 0,
        )?),
        graph::Gelu::NAME => {
            let tanh = c.attr("approximate").and_then(Attribute::as_str) == Some("tanh");
            one(unary(
                x()?,
                move |v| {
                    if tanh {
                        let k = (2.0 / std::f64::consts::PI).sqrt();
                        0.5 * v * (1.0 + (k * (v + 0.044715 * v * v * v)).tanh())
                    } else {
                        0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2))
                    }
                },
                |a| a,
            ))
        }
        graph::Clip::NAME => one(clip(x()?, c.input(1), c.input(2))?),
        graph::Cast::NAME => {
            let to = c.result_elem(0)?;
            one(x()?.cast(to, c.int("saturate", 1) != 0))
        }
        graph::Where::NAME => one(where_(x()?, c.req(1)?, c.req(2)?)?),
        graph::MatMul::NAME => one(matmul(x()?, c.req(1)?)?),
        graph::MatMulEpilogue::NAME => one(matmul_epilogue(c)?),
        graph::Gemm::NAME => one(gemm(c)?),
        graph::MatMulInteger::NAME => one(matmul_integer(c)?),
        graph::Softmax::NAME | graph::LogSoftmax::NAME => one(softmax(
            x()?,
            c.int("axis", -1),
            name == graph::LogSoftmax::NAME,
        )?),
        graph::LayerNorm::NAME => layer_norm(c),
        graph::RmsNorm::NAME => one(rms_norm(c)?),
        graph::ReduceSum::NAME
        | graph::ReduceMean::NAME
        | graph::ReduceMax::NAME
        | graph::ReduceL2::NAME => one(reduce(c, name)?),
        graph::Reshape::NAME => one(reshape(c)?),
        graph::Flatten::NAME => {
            let t = x()?;
            let a = c.int("axis", 1);
            let a = if a < 0 { a + t.rank() as i64 } else { a };
            if a < 0 || a as usize > t.rank() {
                return Err(format!("axis {a} out of range"));
            }
            let a = a as usize;
            let s = vec![t.shape[..a].iter().product(), t.shape[a..].iter().product()];
            one(t.clone().reshaped(s))
        }
        graph::Squeeze::NAME => {
            let t = x()?;
            let shape = match c.ints_or_input("axes", 1) {
                Some(axes) => {
                    let ax: Vec<usize> =
                        axes.iter().map(|&a| axis(a, t.rank())).collect::<R<_>>()?;
                    for &a in &ax {
                        if t.shape[a] != 1 {
                            return Err(format!(
                                "cannot squeeze axis {a} of extent {}",
                                t.shape[a]
                            ));
                        }
                    }
                    t.shape
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !ax.contains(i))
                        .map(|(_, &d)| d)
                        .collect()
                }
                None => t.shape.iter().copied().filter(|&d| d != 1).collect(),
            };
            one(t.clone().reshaped(shape))
        }
        graph::Unsqueeze::NAME => {
            let t = x()?;
            let axes = c.ints_or_input("axes", 1).ok_or("unsqueeze needs axes")?;
            let r = t.rank() + axes.len();
            let ax: Vec<usize> = axes.iter().map(|&a| axis(a, r)).collect::<R<_>>()?;
            let mut shape = Vec::with_capacity(r);
            let mut it = t.shape.iter();
            for i in 0..r {
                if ax.contains(&i) {
                    shape.push(1);
                } else {
                    shape.push(*it.next().ok_or("repeated unsqueeze axes")?);
                }
            }
            one(t.clone().reshaped(shape))
        }
        graph::Transpose::NAME => {
            let t = x()?;
            let perm: Vec<usize> = match c.ints("perm") {
                Some(p) => p.iter().map(|&v| axis(v, t.rank())).collect::<R<_>>()?,
                None => (0..t.rank()).rev().collect(),
            };
            one(transpose(t, &perm)?)
        }
        // `kv_append` (kv-layout) means the concat of past and new tokens along its axis.
        graph::Concat::NAME | graph::KvAppend::NAME => one(concat(c.ins, c.int("axis", 0))?),
        // `kv_mask` (kv-layout) re-indexes a mask for live lengths below the compiled past; at
        // the graph level every sequence is at that past, so it is a broadcast.
        graph::KvMask::NAME => {
            let t = x()?;
            let r = c.m.op(c.op).results[0];
            let out: Vec<usize> =
                c.m.value_type(r)
                    .as_tensor()
                    .and_then(|t| t.static_shape())
                    .ok_or("kv_mask needs a static result type")?
                    .iter()
                    .map(|&d| d as usize)
                    .collect();
            check_numel(&out)?;
            one(take(t, out.clone(), &offsets(&t.shape, &out)))
        }
        graph::CumSum::NAME => one(cumsum(c)?),
        graph::Tile::NAME => {
            let t = x()?;
            let reps = c.req(1)?.to_i64_vec();
            if reps.len() != t.rank() || reps.iter().any(|&n| n < 0) {
                return Err(format!(
                    "{} repeats for a rank-{} input",
                    reps.len(),
                    t.rank()
                ));
            }
            let out: Vec<usize> = t
                .shape
                .iter()
                .zip(&reps)
                .map(|(&d, &n)| d * n as usize)
                .collect();
            check_numel(&out)?;
            let (ist, ost) = (strides(&t.shape), strides(&out));
            let n = numel(&out).unwrap_or(0);
            let idx: Vec<usize> = (0..n)
                .map(|i| {
                    (0..out.len())
                        .map(|a| (i / ost[a] % out[a]) % t.shape[a].max(1) * ist[a])
                        .sum()
                })
                .collect();
            one(take(t, out, &idx))
        }
        graph::Split::NAME => split(c),
        graph::Slice::NAME => one(slice(c)?),
        graph::Gather::NAME => one(gather(x()?, c.req(1)?, c.int("axis", 0))?),
        graph::GatherNd::NAME => one(gather_nd(x()?, c.req(1)?, c.int("batch_dims", 0))?),
        graph::GatherElements::NAME => one(gather_elements(x()?, c.req(1)?, c.int("axis", 0))?),
        graph::TopK::NAME => {
            let k = c.req(1)?.to_i64_vec();
            let [k] = k[..] else {
                return Err("k must hold one value".into());
            };
            top_k(x()?, k, c.int("axis", -1), c.int("largest", 1) != 0)
        }
        graph::OneHot::NAME => one(one_hot(x()?, c.req(1)?, c.req(2)?, c.int("axis", -1))?),
        graph::ScatterNd::NAME => {
            let red = c
                .attr("reduction")
                .and_then(Attribute::as_str)
                .unwrap_or("none");
            one(scatter_nd(x()?, c.req(1)?, c.req(2)?, red)?)
        }
        graph::Expand::NAME => {
            let t = x()?;
            let s: Vec<usize> = c
                .req(1)?
                .to_i64_vec()
                .iter()
                .map(|&v| v.max(0) as usize)
                .collect();
            let out = bcast_shape(&t.shape, &s)?;
            check_numel(&out)?;
            one(take(t, out.clone(), &offsets(&t.shape, &out)))
        }
        graph::Shape::NAME => {
            let t = x()?;
            let rank = t.rank() as i64;
            let clamp = |a: i64| {
                if a < 0 {
                    (a + rank).max(0)
                } else {
                    a.min(rank)
                }
            };
            let (s, e) = (
                clamp(c.int("start", 0)) as usize,
                clamp(c.int("end", rank)) as usize,
            );
            let v: Vec<i64> = t.shape[s..e.max(s)].iter().map(|&d| d as i64).collect();
            one(Tensor::new(vec![v.len()], v))
        }
        graph::Size::NAME => one(Tensor::scalar(x()?.len() as i64)),
        graph::Range::NAME => one(range(x()?, c.req(1)?, c.req(2)?)?),
        graph::ConstantOfShape::NAME => {
            let shape: Vec<usize> = x()?
                .to_i64_vec()
                .iter()
                .map(|&v| v.max(0) as usize)
                .collect();
            let n = check_numel(&shape)?;
            let fill = match c.attr("value") {
                Some(a) => super::dense_tensor(c.m, a)?,
                None => Tensor::scalar(0f32),
            };
            if fill.len() != 1 {
                return Err("'value' must hold one element".into());
            }
            one(take(&fill, shape, &vec![0; n]))
        }
        graph::Trilu::NAME => one(trilu(x()?, c.input(1), c.int("upper", 1) != 0)?),
        graph::Pad::NAME => one(pad(c)?),
        graph::Einsum::NAME => one(einsum(c)?),
        graph::Attention::NAME => attention(c),
        graph::RotaryEmbedding::NAME => one(rotary(c)?),
        graph::Rope::NAME => one(rope(c)?),
        graph::QuantizeLinear::NAME => one(quantize(c)?),
        graph::DequantizeLinear::NAME => one(dequantize(c)?),
        other => Err(format!("the interpreter does not implement graph.{other}")),
    }
}

// ---------- broadcasting helpers ----------

/// NumPy broadcast of two shapes.
pub fn bcast_shape(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(format!(
                "shapes {a:?} and {b:?} are not broadcast-compatible"
            ));
        };
    }
    Ok(out)
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// For every element of `out` (row-major), the linear index of the element of an input of shape `inp`
/// that broadcasts to it.
pub fn offsets(inp: &[usize], out: &[usize]) -> Vec<usize> {
    let n = numel(out).unwrap_or(0);
    if inp == out {
        return (0..n).collect();
    }
    let r = out.len();
    let pad = r - inp.len().min(r);
    let ist = strides(inp);
    let mut st = vec![0usize; r];
    for i in 0..inp.len().min(r) {
        if inp[i] != 1 {
            st[pad + i] = ist[i];
        }
    }
    let mut res = Vec::with_capacity(n);
    if n == 0 {
        return res;
    }
    let mut idx = vec![0usize; r];
    let mut off = 0usize;
    for _ in 0..n {
        res.push(off);
        for d in (0..r).rev() {
            idx[d] += 1;
            off += st[d];
            if idx[d] < out[d] {
                break;
            }
            off -= st[d] * idx[d];
            idx[d] = 0;
        }
    }
    res
}

/// Copies elements of `t` at `idx` into a new tensor of `shape`.
fn take(t: &Tensor, shape: Vec<usize>, idx: &[usize]) -> Tensor {
    let data = map_data!(&t.data, v => idx.iter().map(|&i| v[i]).collect());
    Tensor { shape, data }
}

// ---------- elementwise ----------

/// The logistic function `1 / (1 + e^-x)`.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The error function, accurate to ~1e-15 (Maclaurin series below 3, continued fraction above).
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let r = if a < 3.0 {
        let x2 = a * a;
        let mut term = a;
        let mut sum = a;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -x2 / n;
            let t = term / (2.0 * n + 1.0);
            sum += t;
            if t.abs() <= 1e-17 * sum.abs() || n > 200.0 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else if a < 6.5 {
        let mut t = a;
        for k in (1..=80).rev() {
            t = a + (k as f64 / 2.0) / t;
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / t
    } else {
        1.0
    };
    if x < 0.0 { -r } else { r }
}

fn unary(t: &Tensor, ff: impl Fn(f64) -> f64, fi: impl Fn(i128) -> i128) -> Tensor {
    fn go<T: Elem>(v: &[T], ff: &dyn Fn(f64) -> f64, fi: &dyn Fn(i128) -> i128) -> Vec<T> {
        if T::FLOAT {
            v.iter().map(|&a| T::from_f64(ff(a.to_f64()))).collect()
        } else {
            v.iter().map(|&a| T::from_i128(fi(a.to_i128()))).collect()
        }
    }
    Tensor {
        shape: t.shape.clone(),
        data: map_data!(&t.data, v => go(v, &ff, &fi)),
    }
}

macro_rules! zip_same {
    ($a:expr, $b:expr, $x:ident, $y:ident => $e:expr) => {
        match ($a, $b) {
            (Data::F64($x), Data::F64($y)) => Data::F64($e),
            (Data::F32($x), Data::F32($y)) => Data::F32($e),
            (Data::F16($x), Data::F16($y)) => Data::F16($e),
            (Data::BF16($x), Data::BF16($y)) => Data::BF16($e),
            (Data::F8E4M3FN($x), Data::F8E4M3FN($y)) => Data::F8E4M3FN($e),
            (Data::I64($x), Data::I64($y)) => Data::I64($e),
            (Data::I32($x), Data::I32($y)) => Data::I32($e),
            (Data::I16($x), Data::I16($y)) => Data::I16($e),
            (Data::I8($x), Data::I8($y)) => Data::I8($e),
            (Data::U64($x), Data::U64($y)) => Data::U64($e),
            (Data::U32($x), Data::U32($y)) => Data::U32($e),
            (Data::U16($x), Data::U16($y)) => Data::U16($e),
            (Data::U8($x), Data::U8($y)) => Data::U8($e),
            (Data::Bool($x), Data::Bool($y)) => Data::Bool($e),
            _ => return Err("operand element types differ".into()),
        }
    };
}
use zip_same;

fn arith(
    a: &Tensor,
    b: &Tensor,
    ff: impl Fn(f64, f64) -> f64,
    fi: impl Fn(i128, i128) -> i128,
) -> R<Tensor> {
    let shape = bcast_shape(&a.shape, &b.shape)?;
    let (oa, ob) = (offsets(&a.shape, &shape), offsets(&b.shape, &shape));
    fn go<T: Elem>(
        x: &[T],
        y: &[T],
        oa: &[usize],
        ob: &[usize],
        ff: &dyn Fn(f64, f64) -> f64,
        fi: &dyn Fn(i128, i128) -> i128,
    ) -> Vec<T> {
        if T::FLOAT {
            oa.iter()
                .zip(ob)
                .map(|(&i, &j)| T::from_f64(ff(x[i].to_f64(), y[j].to_f64())))
                .collect()
        } else {
            oa.iter()
                .zip(ob)
                .map(|(&i, &j)| T::from_i128(fi(x[i].to_i128(), y[j].to_i128())))
                .collect()
        }
    }
    let data = zip_same!(&a.data, &b.data, x, y => go(x, y, &oa, &ob, &ff, &fi));
    Ok(Tensor { shape, data })
}

fn variadic(
    ins: &[&Tensor],
    ff: impl Fn(f64, f64) -> f64 + Copy,
    fi: impl Fn(i128, i128) -> i128 + Copy,
) -> R<Tensor> {
    let mut acc = (*ins.first().ok_or("needs at least one operand")?).clone();
    for t in &ins[1..] {
        acc = arith(&acc, t, ff, fi)?;
    }
    Ok(acc)
}

fn compare(
    a: &Tensor,
    b: &Tensor,
    ff: impl Fn(f64, f64) -> bool,
    fi: impl Fn(i128, i128) -> bool,
) -> R<Tensor> {
    if a.dtype() != b.dtype() {
        return Err("operand element types differ".into());
    }
    let shape = bcast_shape(&a.shape, &b.shape)?;
    let (oa, ob) = (offsets(&a.shape, &shape), offsets(&b.shape, &shape));
    let float = a.dtype().is_float();
    let v: Vec<bool> = oa
        .iter()
        .zip(&ob)
        .map(|(&i, &j)| {
            if float {
                ff(a.get_f64(i), b.get_f64(j))
            } else {
                fi(a.get_i128(i), b.get_i128(j))
            }
        })
        .collect();
    Ok(Tensor::new(shape, v))
}

fn pow(a: &Tensor, b: &Tensor) -> R<Tensor> {
    let shape = bcast_shape(&a.shape, &b.shape)?;
    let (oa, ob) = (offsets(&a.shape, &shape), offsets(&b.shape, &shape));
    let (af, bf) = (a.dtype().is_float(), b.dtype().is_float());
    let n = oa.len();
    if af {
        return Ok(Tensor::from_f64_fn(a.dtype(), shape, n, |i| {
            a.get_f64(oa[i]).powf(b.get_f64(ob[i]))
        }));
    }
    let dtype = a.dtype();
    let vals: Vec<i128> = (0..n)
        .map(|i| {
            let base = a.get_i128(oa[i]);
            if bf {
                (base as f64).powf(b.get_f64(ob[i])) as i128
            } else {
                let e = b.get_i128(ob[i]);
                if e < 0 {
                    match base {
                        1 => 1,
                        -1 => {
                            if e % 2 == 0 {
                                1
                            } else {
                                -1
                            }
                        }
                        _ => 0,
                    }
                } else {
                    let mut r: i128 = 1;
                    let mut bb = base;
                    let mut ee = e;
                    while ee > 0 {
                        if ee & 1 == 1 {
                            r = r.wrapping_mul(bb);
                        }
                        bb = bb.wrapping_mul(bb);
                        ee >>= 1;
                    }
                    r
                }
            }
        })
        .collect();
    let z = super::tensor::zeros(dtype, vec![]);
    let data = map_data!(&z.data, _v => vals.iter().map(|&x| Elem::from_i128(x)).collect());
    Ok(Tensor { shape, data })
}

fn clip(x: &Tensor, lo: Option<&Tensor>, hi: Option<&Tensor>) -> R<Tensor> {
    let mut t = x.clone();
    if let Some(l) = lo {
        t = arith(
            &t,
            l,
            |a, b| if a.is_nan() { a } else { a.max(b) },
            |a, b| a.max(b),
        )?;
    }
    if let Some(h) = hi {
        t = arith(
            &t,
            h,
            |a, b| if a.is_nan() { a } else { a.min(b) },
            |a, b| a.min(b),
        )?;
    }
    if t.shape != x.shape {
        return Err("clip bounds must be scalars".into());
    }
    Ok(t)
}

fn where_(c: &Tensor, a: &Tensor, b: &Tensor) -> R<Tensor> {
    let cond = c.as_slice::<bool>().ok_or("condition must be i1")?;
    let shape = bcast_shape(&bcast_shape(&c.shape, &a.shape)?, &b.shape)?;
    let (oc, oa, ob) = (
        offsets(&c.shape, &shape),
        offsets(&a.shape, &shape),
        offsets(&b.shape, &shape),
    );
    let data = zip_same!(&a.data, &b.data, x, y => (0..oc.len()).map(|i| if cond[oc[i]] { x[oa[i]] } else { y[ob[i]] }).collect());
    Ok(Tensor { shape, data })
}

// ---------- normalization / softmax ----------

fn split3(shape: &[usize], ax: usize) -> (usize, usize, usize) {
    (
        shape[..ax].iter().product(),
        shape[ax],
        shape[ax + 1..].iter().product(),
    )
}

fn softmax(x: &Tensor, ax: i64, log: bool) -> R<Tensor> {
    let ax = axis(ax, x.rank())?;
    let (outer, len, inner) = split3(&x.shape, ax);
    let v = x.to_f64_vec();
    let mut out = vec![0f64; v.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| o * len * inner + j * inner + i;
            let mx = (0..len).map(|j| v[at(j)]).fold(f64::NEG_INFINITY, |a, b| {
                if b.is_nan() || a.is_nan() {
                    f64::NAN
                } else {
                    a.max(b)
                }
            });
            let sum: f64 = (0..len).map(|j| (v[at(j)] - mx).exp()).sum();
            for j in 0..len {
                out[at(j)] = if log {
                    v[at(j)] - mx - sum.ln()
                } else {
                    (v[at(j)] - mx).exp() / sum
                };
            }
        }
    }
    Ok(Tensor::from_f64_fn(
        x.dtype(),
        x.shape.clone(),
        out.len(),
        |i| out[i],
    ))
}

fn layer_norm(c: &OpCtx) -> R<Vec<Tensor>> {
    let x = c.req(0)?;
    let ax = axis(c.int("axis", -1), x.rank())?;
    let eps = c.float("epsilon").unwrap_or(1e-5);
    let outer: usize = x.shape[..ax].iter().product();
    let inner: usize = x.shape[ax..].iter().product();
    let v = x.to_f64_vec();
    let scale = c.req(1)?;
    let so = offsets(&scale.shape, &bcast_shape(&scale.shape, &x.shape)?);
    let sv = scale.to_f64_vec();
    let bias = c
        .input(2)
        .map(|b| -> R<_> {
            Ok((
                b.to_f64_vec(),
                offsets(&b.shape, &bcast_shape(&b.shape, &x.shape)?),
            ))
        })
        .transpose()?;
    let stash = ScalarType::F32;
    let mut out = vec![0f64; v.len()];
    let mut means = vec![0f64; outer];
    let mut invs = vec![0f64; outer];
    for o in 0..outer {
        let row = &v[o * inner..(o + 1) * inner];
        // Statistics in the stash type (f32), as the reference does.
        let r32 = |z: f64| {
            if x.dtype() == ScalarType::F64 {
                z
            } else {
                z as f32 as f64
            }
        };
        let mean = r32(row.iter().sum::<f64>() / inner as f64);
        let var = r32(row.iter().map(|&a| (a - mean) * (a - mean)).sum::<f64>() / inner as f64);
        let inv = r32(1.0 / (var + eps).sqrt());
        means[o] = mean;
        invs[o] = inv;
        for j in 0..inner {
            let i = o * inner + j;
            let mut y = (v[i] - mean) * inv * sv[so[i]];
            if let Some((bv, bo)) = &bias {
                y += bv[bo[i]];
            }
            out[i] = y;
        }
    }
    let mut res = vec![Tensor::from_f64_fn(
        x.dtype(),
        x.shape.clone(),
        out.len(),
        |i| out[i],
    )];
    let mut stat_shape = x.shape[..ax].to_vec();
    stat_shape.extend(std::iter::repeat_n(1, x.rank() - ax));
    if c.nresults() > 1 {
        let e = c.result_elem(1).unwrap_or(stash);
        res.push(Tensor::from_f64_fn(e, stat_shape.clone(), outer, |i| {
            means[i]
        }));
    }
    if c.nresults() > 2 {
        let e = c.result_elem(2).unwrap_or(stash);
        res.push(Tensor::from_f64_fn(e, stat_shape, outer, |i| invs[i]));
    }
    Ok(res)
}

fn rms_norm(c: &OpCtx) -> R<Tensor> {
    let x = c.req(0)?;
    let ax = axis(c.int("axis", -1), x.rank())?;
    let eps = c.float("epsilon").unwrap_or(1e-5);
    let outer: usize = x.shape[..ax].iter().product();
    let inner: usize = x.shape[ax..].iter().product();
    let v = x.to_f64_vec();
    let scale = c.req(1)?;
    let so = offsets(&scale.shape, &bcast_shape(&scale.shape, &x.shape)?);
    let sv = scale.to_f64_vec();
    let mut out = vec![0f64; v.len()];
    for o in 0..outer {
        let row = &v[o * inner..(o + 1) * inner];
        let ms = row.iter().map(|a| a * a).sum::<f64>() / inner as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        for j in 0..inner {
            let i = o * inner + j;
            out[i] = v[i] * inv * sv[so[i]];
        }
    }
    Ok(Tensor::from_f64_fn(
        x.dtype(),
        x.shape.clone(),
        out.len(),
        |i| out[i],
    ))
}

fn reduce(c: &OpCtx, name: &str) -> R<Tensor> {
    let x = c.req(0)?;
    let keep = c.int("keepdims", 1) != 0;
    let axes = c.ints_or_input("axes", 1);
    let axes: Vec<usize> = match axes {
        Some(a) if !a.is_empty() => a.iter().map(|&v| axis(v, x.rank())).collect::<R<_>>()?,
        _ if c.int("noop_with_empty_axes", 0) != 0 => return Ok(x.clone()),
        _ => (0..x.rank()).collect(),
    };
    let kshape: Vec<usize> = x
        .shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let oshape: Vec<usize> = if keep {
        kshape.clone()
    } else {
        x.shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, &d)| d)
            .collect()
    };
    let n_out = numel(&kshape).unwrap_or(0);
    let count = x.len() / n_out.max(1);
    let o = offsets(&kshape, &x.shape);
    let op = name;
    if x.dtype().is_float() {
        let init = if op == graph::ReduceMax::NAME {
            f64::NEG_INFINITY
        } else {
            0.0
        };
        let mut acc = vec![init; n_out];
        let v = x.to_f64_vec();
        for (i, &a) in v.iter().enumerate() {
            let t = &mut acc[o[i]];
            match op {
                graph::ReduceMax::NAME => {
                    *t = if a.is_nan() || t.is_nan() {
                        f64::NAN
                    } else {
                        t.max(a)
                    }
                }
                graph::ReduceL2::NAME => *t += a * a,
                _ => *t += a,
            }
        }
        for t in acc.iter_mut() {
            match op {
                graph::ReduceMean::NAME => *t /= count as f64,
                graph::ReduceL2::NAME => *t = t.sqrt(),
                _ => {}
            }
        }
        return Ok(Tensor::from_f64_fn(x.dtype(), oshape, n_out, |i| acc[i]));
    }
    let init: i128 = if op == graph::ReduceMax::NAME {
        i128::MIN
    } else {
        0
    };
    let mut acc = vec![init; n_out];
    for i in 0..x.len() {
        let a = x.get_i128(i);
        let t = &mut acc[o[i]];
        match op {
            graph::ReduceMax::NAME => *t = (*t).max(a),
            graph::ReduceL2::NAME => *t = t.wrapping_add(a.wrapping_mul(a)),
            _ => *t = t.wrapping_add(a),
        }
    }
    let vals: Vec<f64> = acc
        .iter()
        .map(|&t| match op {
            graph::ReduceMean::NAME => (t / count.max(1) as i128) as f64,
            graph::ReduceL2::NAME => ((t as f64).sqrt()).floor(),
            graph::ReduceMax::NAME if t == i128::MIN => 0.0,
            _ => t as f64,
        })
        .collect();
    if op == graph::ReduceSum::NAME {
        let z = super::tensor::zeros(x.dtype(), vec![]);
        let data = map_data!(&z.data, _v => acc.iter().map(|&t| Elem::from_i128(t)).collect());
        return Ok(Tensor {
            shape: oshape,
            data,
        });
    }
    Ok(Tensor::from_f64_fn(x.dtype(), oshape, n_out, |i| vals[i]))
}

// ---------- einsum ----------

fn einsum(c: &OpCtx) -> R<Tensor> {
    let eq = c
        .attr("equation")
        .and_then(Attribute::as_str)
        .ok_or("missing equation")?;
    let ranks: Vec<usize> = c.ins.iter().map(|t| t.rank()).collect();
    let (terms, out) = crate::passes::shape_inference::parse_einsum(eq, &ranks)?;
    let mut letters: Vec<char> = out.clone();
    let mut size: std::collections::HashMap<char, usize> = Default::default();
    for (t, x) in terms.iter().zip(c.ins) {
        for (ch, &d) in t.iter().zip(&x.shape) {
            let e = size.entry(*ch).or_insert(d);
            if *e == 1 {
                *e = d;
            } else if d != 1 && *e != d {
                return Err(format!("einsum dim '{ch}' has extents {e} and {d}"));
            }
            if !letters.contains(ch) {
                letters.push(*ch);
            }
        }
    }
    let dims: Vec<usize> = letters.iter().map(|ch| size[ch]).collect();
    let oshape: Vec<usize> = dims[..out.len()].to_vec();
    let on = numel(&oshape).unwrap_or(0);
    let vals: Vec<Vec<f64>> = c.ins.iter().map(|t| t.to_f64_vec()).collect();
    // Per input: stride of each letter (0 for broadcast extents of 1; summed repeated letters add).
    let mut lst: Vec<Vec<usize>> = vec![];
    for (t, x) in terms.iter().zip(c.ins) {
        let st = strides(&x.shape);
        let mut s = vec![0usize; letters.len()];
        for (k, ch) in t.iter().enumerate() {
            let li = letters.iter().position(|l| l == ch).unwrap_or(0);
            if x.shape[k] != 1 {
                s[li] += st[k];
            }
        }
        lst.push(s);
    }
    check_numel(&oshape)?;
    let mut acc = vec![0f64; on];
    let total = check_numel(&dims)?;
    let mut idx = vec![0usize; dims.len()];
    let ostr = strides(&oshape);
    for _ in 0..total {
        let mut p = 1.0;
        for (vi, v) in vals.iter().enumerate() {
            let off: usize = idx.iter().zip(&lst[vi]).map(|(i, s)| i * s).sum();
            p *= v[off];
        }
        let o: usize = idx[..out.len()].iter().zip(&ostr).map(|(i, s)| i * s).sum();
        acc[o] += p;
        for d in (0..dims.len()).rev() {
            idx[d] += 1;
            if idx[d] < dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(Tensor::from_f64_fn(c.ins[0].dtype(), oshape, on, |i| {
        acc[i]
    }))
}

fn round_to(t: ScalarType, v: f64) -> f64 {
    match t {
        ScalarType::F32 => v as f32 as f64,
        ScalarType::F16 => <half::f16 as Elem>::from_f64(v).to_f64(),
        ScalarType::BF16 => <half::bf16 as Elem>::from_f64(v).to_f64(),
        _ => v,
    }
}

/// ONNX CumSum: running sums along `axis` in the input's type (floats in f64, rounded per
/// element; integers wrapping), `exclusive` leaving out the current element, `reverse` from the
/// end.
fn cumsum(c: &OpCtx) -> R<Tensor> {
    let x = c.req(0)?;
    let a = c.req(1)?.to_i64_vec();
    let [a] = a[..] else {
        return Err("CumSum axis must have one element".into());
    };
    let ax = axis(a, x.rank())?;
    let (exclusive, reverse) = (c.int("exclusive", 0) != 0, c.int("reverse", 0) != 0);
    let st = strides(&x.shape);
    let (n, step) = (x.shape[ax], st[ax]);
    let order = |k: usize| if reverse { n - 1 - k } else { k };
    let lines: Vec<usize> = (0..x.len()).filter(|i| i / step % n == 0).collect();
    if x.dtype().is_int() {
        let v: Vec<i128> = (0..x.len()).map(|i| x.get_i128(i)).collect();
        let mut out = vec![0i128; v.len()];
        for &base in &lines {
            let mut acc = 0i128;
            for k in 0..n {
                let i = base + order(k) * step;
                if exclusive {
                    out[i] = acc;
                    acc = acc.wrapping_add(v[i]);
                } else {
                    acc = acc.wrapping_add(v[i]);
                    out[i] = acc;
                }
            }
        }
        if x.dtype() == ScalarType::I64 {
            return Ok(Tensor::new(
                x.shape.clone(),
                out.iter().map(|&v| v as i64).collect::<Vec<i64>>(),
            ));
        }
        return Ok(Tensor::from_f64_fn(
            x.dtype(),
            x.shape.clone(),
            out.len(),
            |i| out[i] as f64,
        ));
    }
    let v = x.to_f64_vec();
    let mut out = vec![0f64; v.len()];
    for &base in &lines {
        let mut acc = 0f64;
        for k in 0..n {
            let i = base + order(k) * step;
            if exclusive {
                out[i] = acc;
                acc = round_to(x.dtype(), acc + v[i]);
            } else {
                acc = round_to(x.dtype(), acc + v[i]);
                out[i] = acc;
            }
        }
    }
    Ok(Tensor::from_f64_fn(
        x.dtype(),
        x.shape.clone(),
        out.len(),
        |i| out[i],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, e) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.5, 0.999_593_047_982_555),
            (4.0, 0.999_999_984_582_742_1),
        ] {
            assert!((erf(x) - e).abs() < 1e-14, "erf({x}) = {} vs {e}", erf(x));
            assert!((erf(-x) + e).abs() < 1e-14);
        }
    }

    #[test]
    fn offsets_broadcast_like_numpy() {
        assert_eq!(offsets(&[3, 1], &[3, 2]), vec![0, 0, 1, 1, 2, 2]);
        assert_eq!(offsets(&[2], &[3, 2]), vec![0, 1, 0, 1, 0, 1]);
    }

    #[test]
    fn max_min_propagate_nan_and_integers_wrap() {
        let a = Tensor::new(vec![2], vec![f32::NAN, 1.0]);
        let b = Tensor::new(vec![2], vec![0.0f32, 2.0]);
        let mx = variadic(
            &[&a, &b],
            |x, y| {
                if x.is_nan() || y.is_nan() {
                    f64::NAN
                } else {
                    x.max(y)
                }
            },
            |x, y| x.max(y),
        )
        .unwrap();
        assert!(mx.get_f64(0).is_nan() && mx.get_f64(1) == 2.0);
        let u = Tensor::new(vec![1], vec![250u8]);
        let v = Tensor::new(vec![1], vec![10u8]);
        assert_eq!(
            arith(&u, &v, |x, y| x + y, |x, y| x.wrapping_add(y))
                .unwrap()
                .to_i64_vec(),
            vec![4]
        );
    }

    #[test]
    fn transpose_rejects_a_non_permutation() {
        let t = Tensor::new(vec![2, 3], vec![0f32; 6]);
        assert!(transpose(&t, &[0, 0]).is_err());
        assert_eq!(transpose(&t, &[1, 0]).unwrap().shape, vec![3, 2]);
    }

    #[test]
    fn integer_division_truncates_and_mod_follows_divisor_sign() {
        let a = Tensor::new(vec![2], vec![-7i32, 7]);
        let b = Tensor::new(vec![2], vec![2i32, -2]);
        let ScalarFn::Binary(ff, fi) = graph::elementwise(graph::Div::NAME).unwrap().eval else {
            panic!("Div is binary");
        };
        let d = arith(&a, &b, ff, fi).unwrap();
        assert_eq!(d.to_i64_vec(), vec![-3, -3]);
        let z = arith(&a, &Tensor::new(vec![2], vec![0i32, 0]), ff, fi).unwrap();
        assert_eq!(z.to_i64_vec(), vec![0, 0]);
    }

    #[test]
    fn softplus_row_is_exact_at_zero_and_stable_for_large_magnitudes() {
        let ScalarFn::Unary(f, _) = graph::elementwise(graph::Softplus::NAME).unwrap().eval else {
            panic!("Softplus is unary");
        };
        assert!((f(0.0) - std::f64::consts::LN_2).abs() < 1e-15);
        assert_eq!(f(1000.0), 1000.0);
        assert!((0.0..1e-300).contains(&f(-1000.0)));
        assert!(f(f64::NAN).is_nan());
    }
}
