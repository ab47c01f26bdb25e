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

// ---------- linear algebra ----------

/// f32/f64 GEMM on contiguous row-major matrices: `c[m×n] = a[m×k] · b[k×n]` with strides.
#[allow(clippy::too_many_arguments)]
fn gemm_f64(
    m: usize,
    k: usize,
    n: usize,
    a: &[f64],
    rsa: isize,
    csa: isize,
    b: &[f64],
    rsb: isize,
    csb: isize,
    c: &mut [f64],
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    // SAFETY: the slices hold at least the strided extents described (checked by callers building them
    // from the tensor shapes); `c` is exactly m×n row-major.
    unsafe {
        matrixmultiply::dgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn gemm_f32(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    rsa: isize,
    csa: isize,
    b: &[f32],
    rsb: isize,
    csb: isize,
    c: &mut [f32],
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    // SAFETY: as in `gemm_f64`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Batched matmul in f32 (f32 inputs) or f64 (everything else) with NumPy promotion of 1-D operands.
fn matmul(a: &Tensor, b: &Tensor) -> R<Tensor> {
    if a.rank() == 0 || b.rank() == 0 {
        return Err("matmul operands must have rank >= 1".into());
    }
    if a.dtype() != b.dtype() {
        return Err("operand element types differ".into());
    }
    let mut ash = a.shape.clone();
    let mut bsh = b.shape.clone();
    let (a1, b1) = (ash.len() == 1, bsh.len() == 1);
    if a1 {
        ash.insert(0, 1);
    }
    if b1 {
        bsh.push(1);
    }
    let (m, k) = (ash[ash.len() - 2], ash[ash.len() - 1]);
    let (k2, n) = (bsh[bsh.len() - 2], bsh[bsh.len() - 1]);
    if k != k2 {
        return Err(format!("inner dimensions do not match: {k} vs {k2}"));
    }
    let batch = bcast_shape(&ash[..ash.len() - 2], &bsh[..bsh.len() - 2])?;
    let oa = offsets(&ash[..ash.len() - 2], &batch);
    let ob = offsets(&bsh[..bsh.len() - 2], &batch);
    let mut out_shape = batch.clone();
    if !a1 {
        out_shape.push(m);
    }
    if !b1 {
        out_shape.push(n);
    }
    let nb = oa.len();
    if a.dtype() == ScalarType::F32 {
        let (x, y) = (
            a.as_slice::<f32>().unwrap_or(&[]),
            b.as_slice::<f32>().unwrap_or(&[]),
        );
        let mut out = vec![0f32; nb * m * n];
        for i in 0..nb {
            let (xa, yb) = (&x[oa[i] * m * k..], &y[ob[i] * k * n..]);
            gemm_f32(
                m,
                k,
                n,
                xa,
                k as isize,
                1,
                yb,
                n as isize,
                1,
                &mut out[i * m * n..(i + 1) * m * n],
            );
        }
        return Ok(Tensor::new(out_shape, out));
    }
    if a.dtype().is_float() {
        let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
        let mut out = vec![0f64; nb * m * n];
        for i in 0..nb {
            let (xa, yb) = (&x[oa[i] * m * k..], &y[ob[i] * k * n..]);
            gemm_f64(
                m,
                k,
                n,
                xa,
                k as isize,
                1,
                yb,
                n as isize,
                1,
                &mut out[i * m * n..(i + 1) * m * n],
            );
        }
        return Ok(Tensor::from_f64_fn(a.dtype(), out_shape, out.len(), |i| {
            out[i]
        }));
    }
    let mut out = vec![0i128; nb * m * n];
    for bi in 0..nb {
        for i in 0..m {
            for j in 0..n {
                let mut s: i128 = 0;
                for p in 0..k {
                    s = s.wrapping_add(
                        a.get_i128(oa[bi] * m * k + i * k + p)
                            .wrapping_mul(b.get_i128(ob[bi] * k * n + p * n + j)),
                    );
                }
                out[bi * m * n + i * n + j] = s;
            }
        }
    }
    let z = super::tensor::zeros(a.dtype(), vec![]);
    let data = map_data!(&z.data, _v => out.iter().map(|&x| Elem::from_i128(x)).collect());
    Ok(Tensor {
        shape: out_shape,
        data,
    })
}

fn gemm(c: &OpCtx) -> R<Tensor> {
    let (a, b) = (c.req(0)?, c.req(1)?);
    if a.rank() != 2 || b.rank() != 2 {
        return Err("Gemm operands must be 2-D".into());
    }
    let (ta, tb) = (c.int("transA", 0) != 0, c.int("transB", 0) != 0);
    let (m, k) = if ta {
        (a.shape[1], a.shape[0])
    } else {
        (a.shape[0], a.shape[1])
    };
    let (k2, n) = if tb {
        (b.shape[1], b.shape[0])
    } else {
        (b.shape[0], b.shape[1])
    };
    if k != k2 {
        return Err(format!("inner dimensions do not match: {k} vs {k2}"));
    }
    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    let alpha = c.float("alpha").unwrap_or(1.0);
    let beta = c.float("beta").unwrap_or(1.0);
    let mut acc = vec![0f64; m * n];
    let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
    if a.dtype().is_float() {
        gemm_f64(m, k, n, &x, rsa, csa, &y, rsb, csb, &mut acc);
    } else {
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for p in 0..k {
                    s += x[i * rsa as usize + p * csa as usize]
                        * y[p * rsb as usize + j * csb as usize];
                }
                acc[i * n + j] = s;
            }
        }
    }
    let shape = vec![m, n];
    let bias = match c.input(2) {
        Some(t) => {
            let o = offsets(&t.shape, &bcast_shape(&t.shape, &shape)?);
            if o.len() != m * n {
                return Err("Gemm C does not broadcast to [M, N]".into());
            }
            Some((t.to_f64_vec(), o))
        }
        None => None,
    };
    Ok(Tensor::from_f64_fn(a.dtype(), shape, m * n, |i| {
        let mut v = alpha * acc[i];
        if let Some((bv, o)) = &bias {
            v += beta * bv[o[i]];
        }
        v
    }))
}

/// `graph.matmul_epilogue`: `act(a · b + bias) + res` as the kernel computes it — the product
/// accumulated in f32 (16-bit inputs widened to f32), bias, activation and residual added in
/// f64, one rounding to the result type.
fn matmul_epilogue(c: &OpCtx) -> R<Tensor> {
    let to = c.result_elem(0)?;
    let residual = c.attr("residual").and_then(Attribute::as_bool) == Some(true);
    let ins = c.ins;
    let (bias, res) = match (residual, ins.len()) {
        (false, 2) => (None, None),
        (false, 3) => (Some(ins[2]), None),
        (true, 3) => (None, Some(ins[2])),
        (true, 4) => (Some(ins[2]), Some(ins[3])),
        (_, n) => return Err(format!("matmul_epilogue takes 2 to 4 operands, got {n}")),
    };
    let (a, b) = (c.req(0)?, c.req(1)?);
    if !a.dtype().is_float() {
        return Err(format!(
            "matmul_epilogue needs float operands, got {}",
            a.dtype()
        ));
    }
    let f32s = |t: &Tensor| match t.dtype() {
        ScalarType::F32 | ScalarType::F64 => t.clone(),
        _ => t.cast(ScalarType::F32, false),
    };
    let wide = |t: &Tensor| t.cast(ScalarType::F64, false);
    let mut y = wide(&matmul(&f32s(a), &f32s(b))?);
    let add = |x: &Tensor, o: &Tensor| arith(x, &wide(o), |p, q| p + q, |p, q| p + q);
    if let Some(bias) = bias {
        y = add(&y, bias)?;
    }
    let act: fn(f64) -> f64 = match c.attr("activation").and_then(Attribute::as_str) {
        None | Some("none") => |v| v,
        Some("relu") => |v| if v > 0.0 || v.is_nan() { v } else { 0.0 },
        Some("gelu") => |v| 0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2)),
        Some("gelu_tanh") => |v| {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * v * (1.0 + (k * (v + 0.044715 * v * v * v)).tanh())
        },
        Some("silu") => |v| v * sigmoid(v),
        Some(other) => return Err(format!("unknown activation {other:?}")),
    };
    y = unary(&y, act, |v| v);
    if let Some(res) = res {
        y = add(&y, res)?;
    }
    Ok(y.cast(to, false))
}

fn matmul_integer(c: &OpCtx) -> R<Tensor> {
    let (a, b) = (c.req(0)?, c.req(1)?);
    let zp = |t: Option<&Tensor>| t.map(|z| z.to_i64_vec()).unwrap_or_else(|| vec![0]);
    let (za, zb) = (zp(c.input(2)), zp(c.input(3)));
    let k = *a.shape.last().ok_or("rank-0 operand")?;
    let n = *b.shape.last().ok_or("rank-0 operand")?;
    let rows = a.len() / k.max(1);
    let av: Vec<i64> = a
        .to_i64_vec()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            v - if za.len() == 1 {
                za[0]
            } else {
                za[(i / k.max(1)) % za.len().max(1)]
            }
        })
        .collect();
    let _ = rows;
    let bv: Vec<i64> = b
        .to_i64_vec()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            v - if zb.len() == 1 {
                zb[0]
            } else {
                zb[(i % n.max(1)) % zb.len().max(1)]
            }
        })
        .collect();
    let (ta, tb) = (
        Tensor::new(a.shape.clone(), av),
        Tensor::new(b.shape.clone(), bv),
    );
    let r = matmul(&ta, &tb)?;
    Ok(r.cast(ScalarType::I32, false))
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

// ---------- data movement ----------

fn reshape(c: &OpCtx) -> R<Tensor> {
    let x = c.req(0)?;
    let shape: Vec<usize> = match c.input(1) {
        Some(s) => {
            let s = s.to_i64_vec();
            let allowzero = c.int("allowzero", 0) != 0;
            let mut out = Vec::with_capacity(s.len());
            let mut infer = None;
            for (i, &d) in s.iter().enumerate() {
                out.push(match d {
                    -1 => {
                        if infer.replace(i).is_some() {
                            return Err("more than one -1 in the shape".into());
                        }
                        1
                    }
                    0 if !allowzero => {
                        *x.shape.get(i).ok_or("0 in the shape past the input rank")?
                    }
                    d if d < 0 => return Err(format!("invalid extent {d}")),
                    d => d as usize,
                });
            }
            if let Some(i) = infer {
                let known: usize = out
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, &d)| d)
                    .product();
                if known == 0 || x.len() % known != 0 {
                    return Err(format!("cannot reshape {:?} into {s:?}", x.shape));
                }
                out[i] = x.len() / known;
            }
            out
        }
        None => {
            let r = c.m.op(c.op).results[0];
            let t =
                c.m.value_type(r)
                    .as_tensor()
                    .ok_or("result is not a tensor")?;
            t.static_shape()
                .ok_or("reshape without a shape operand needs a static result type")?
                .iter()
                .map(|&d| d as usize)
                .collect()
        }
    };
    if numel(&shape) != Some(x.len()) {
        return Err(format!("cannot reshape {:?} into {shape:?}", x.shape));
    }
    Ok(x.clone().reshaped(shape))
}

fn transpose(t: &Tensor, perm: &[usize]) -> R<Tensor> {
    let mut seen = vec![false; t.rank()];
    if perm.len() != t.rank()
        || perm
            .iter()
            .any(|&p| p >= t.rank() || std::mem::replace(&mut seen[p], true))
    {
        return Err(format!(
            "perm {perm:?} is not a permutation of 0..{}",
            t.rank()
        ));
    }
    let shape: Vec<usize> = perm.iter().map(|&p| t.shape[p]).collect();
    let ist = strides(&t.shape);
    let pst: Vec<usize> = perm.iter().map(|&p| ist[p]).collect();
    let idx = strided_indices(&shape, &pst, 0);
    Ok(take(t, shape, &idx))
}

/// Linear source indices for iterating `shape` with per-dim source strides (isize allows negative
/// steps) from `base`.
fn strided_indices(shape: &[usize], st: &[usize], base: usize) -> Vec<usize> {
    let st: Vec<isize> = st.iter().map(|&s| s as isize).collect();
    strided_indices_signed(shape, &st, base as isize)
}

fn strided_indices_signed(shape: &[usize], st: &[isize], base: isize) -> Vec<usize> {
    let n = numel(shape).unwrap_or(0);
    let mut res = Vec::with_capacity(n);
    if n == 0 {
        return res;
    }
    let r = shape.len();
    let mut idx = vec![0usize; r];
    let mut off = base;
    for _ in 0..n {
        res.push(off as usize);
        for d in (0..r).rev() {
            idx[d] += 1;
            off += st[d];
            if idx[d] < shape[d] {
                break;
            }
            off -= st[d] * idx[d] as isize;
            idx[d] = 0;
        }
    }
    res
}

fn concat(ins: &[&Tensor], ax: i64) -> R<Tensor> {
    let first = *ins.first().ok_or("needs operands")?;
    let ax = axis(ax, first.rank())?;
    let mut shape = first.shape.clone();
    shape[ax] = 0;
    for t in ins {
        if t.rank() != first.rank() || t.dtype() != first.dtype() {
            return Err("operands differ in rank or element type".into());
        }
        for d in 0..t.rank() {
            if d != ax && t.shape[d] != first.shape[d] {
                return Err(format!(
                    "operand shapes {:?} and {:?} differ off the axis",
                    t.shape, first.shape
                ));
            }
        }
        shape[ax] += t.shape[ax];
    }
    let outer: usize = shape[..ax].iter().product();
    let inner: usize = shape[ax + 1..].iter().product();
    fn go<T: Elem>(ins: &[&Tensor], outer: usize, inner: usize, ax: usize) -> Vec<T> {
        let mut out = Vec::new();
        for o in 0..outer {
            for t in ins {
                let v = t.as_slice::<T>().unwrap_or(&[]);
                let chunk = t.shape[ax] * inner;
                out.extend_from_slice(&v[o * chunk..(o + 1) * chunk]);
            }
        }
        out
    }
    let data = map_data!(&first.data, _v => go(ins, outer, inner, ax));
    Ok(Tensor { shape, data })
}

fn split(c: &OpCtx) -> R<Vec<Tensor>> {
    let x = c.req(0)?;
    let ax = axis(c.int("axis", 0), x.rank())?;
    let n = c.nresults();
    let total = x.shape[ax];
    let sizes: Vec<usize> = match c.ints_or_input("split", 1) {
        Some(s) => s.iter().map(|&v| v.max(0) as usize).collect(),
        None => {
            let chunk = total.div_ceil(n.max(1));
            (0..n)
                .map(|i| chunk.min(total.saturating_sub(i * chunk)))
                .collect()
        }
    };
    if sizes.len() != n || sizes.iter().sum::<usize>() != total {
        return Err(format!(
            "split sizes {sizes:?} do not cover extent {total} in {n} parts"
        ));
    }
    let st = strides(&x.shape);
    let mut start = 0;
    let mut out = vec![];
    for s in sizes {
        let mut shape = x.shape.clone();
        shape[ax] = s;
        let idx = strided_indices(&shape, &st, start * st[ax]);
        out.push(take(x, shape, &idx));
        start += s;
    }
    Ok(out)
}

fn slice(c: &OpCtx) -> R<Tensor> {
    let x = c.req(0)?;
    let starts = c.req(1)?.to_i64_vec();
    let ends = c.req(2)?.to_i64_vec();
    let axes = c
        .input(3)
        .map(Tensor::to_i64_vec)
        .unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = c
        .input(4)
        .map(Tensor::to_i64_vec)
        .unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts/ends/axes/steps lengths differ".into());
    }
    let st = strides(&x.shape);
    let mut shape = x.shape.clone();
    let mut sst: Vec<isize> = st.iter().map(|&s| s as isize).collect();
    let mut base: isize = 0;
    for i in 0..starts.len() {
        let a = axis(axes[i], x.rank())?;
        let n = x.shape[a] as i64;
        let len = crate::passes::shape_inference::slice_len(n, starts[i], ends[i], steps[i])?;
        let (s, _) = crate::passes::shape_inference::slice_bounds(n, starts[i], ends[i], steps[i])?;
        shape[a] = len as usize;
        if len > 0 {
            base += s as isize * st[a] as isize;
        }
        sst[a] = st[a] as isize * steps[i] as isize;
    }
    let idx = strided_indices_signed(&shape, &sst, base);
    Ok(take(x, shape, &idx))
}

fn gather(x: &Tensor, idx: &Tensor, ax: i64) -> R<Tensor> {
    let ax = axis(ax, x.rank())?;
    let (outer, n, inner) = split3(&x.shape, ax);
    let ind = idx.to_i64_vec();
    let mut shape = x.shape[..ax].to_vec();
    shape.extend_from_slice(&idx.shape);
    shape.extend_from_slice(&x.shape[ax + 1..]);
    let mut src = Vec::with_capacity(outer * ind.len() * inner);
    for o in 0..outer {
        for &i in &ind {
            let i = if i < 0 { i + n as i64 } else { i };
            if i < 0 || i >= n as i64 {
                return Err(format!("index {i} is out of range for extent {n}"));
            }
            let b = o * n * inner + i as usize * inner;
            src.extend(b..b + inner);
        }
    }
    Ok(take(x, shape, &src))
}

/// TopK along `axis`: values and i64 indices, the `k` largest (smallest) first, equal values by
/// lower index (ONNX's order).
fn top_k(x: &Tensor, k: i64, axis: i64, largest: bool) -> R<Vec<Tensor>> {
    let a = crate::dialects::normalize_axis(axis, x.rank())?;
    let n = x.shape[a];
    if k < 0 || k as usize > n {
        return Err(format!("k = {k} is outside 0..={n}"));
    }
    let k = k as usize;
    let outer: usize = x.shape[..a].iter().product();
    let inner: usize = x.shape[a + 1..].iter().product();
    let v = x.to_f64_vec();
    let mut shape = x.shape.clone();
    shape[a] = k;
    let mut src = vec![0usize; outer * k * inner];
    let mut idx = vec![0i64; outer * k * inner];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * n + j) * inner + i;
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&p, &q| {
                let (vp, vq) = (v[at(p)], v[at(q)]);
                let c = if largest {
                    vq.total_cmp(&vp)
                } else {
                    vp.total_cmp(&vq)
                };
                c.then(p.cmp(&q))
            });
            for (r, &j) in order.iter().take(k).enumerate() {
                let dst = (o * k + r) * inner + i;
                src[dst] = at(j);
                idx[dst] = j as i64;
            }
        }
    }
    Ok(vec![take(x, shape.clone(), &src), Tensor::new(shape, idx)])
}

fn one_hot(idx: &Tensor, depth: &Tensor, values: &Tensor, axis: i64) -> R<Tensor> {
    let d = depth.to_f64_vec();
    let [d] = d[..] else {
        return Err("depth must hold one value".into());
    };
    if values.len() != 2 || d < 1.0 {
        return Err("values must hold [off, on] and depth be at least 1".into());
    }
    let d = d as usize;
    let a = crate::dialects::normalize_axis(axis, idx.rank() + 1)?;
    let mut shape = idx.shape.clone();
    shape.insert(a, d);
    let outer: usize = idx.shape[..a].iter().product();
    let inner: usize = idx.shape[a..].iter().product();
    let iv = idx.to_i64_vec();
    let mut src = vec![0usize; outer * d * inner];
    for o in 0..outer {
        for j in 0..d {
            for i in 0..inner {
                let mut x = iv[o * inner + i];
                if x < 0 {
                    x += d as i64;
                }
                src[(o * d + j) * inner + i] = usize::from(x == j as i64);
            }
        }
    }
    Ok(take(values, shape, &src))
}

/// The element offsets ScatterND writes, in update order: for each index tuple, the `inner`
/// elements of its slice (`inner` is the data's size past the tuple's `k` dims).
pub fn scatter_nd_offsets(shape: &[usize], idx: &[i64], k: usize) -> R<Vec<usize>> {
    if k == 0 || k > shape.len() {
        return Err(format!(
            "index tuples of {k} components for data of rank {}",
            shape.len()
        ));
    }
    let st = strides(shape);
    let inner: usize = shape[k..].iter().product();
    let mut out = Vec::with_capacity(idx.len() / k * inner);
    for tuple in idx.chunks(k) {
        let mut off = 0;
        for (d, &v) in tuple.iter().enumerate() {
            let n = shape[d] as i64;
            let v = if v < 0 { v + n } else { v };
            if v < 0 || v >= n {
                return Err(format!("index {v} is out of range for extent {n}"));
            }
            off += v as usize * st[d];
        }
        out.extend(off..off + inner);
    }
    Ok(out)
}

fn scatter_nd(x: &Tensor, idx: &Tensor, u: &Tensor, reduction: &str) -> R<Tensor> {
    let k = *idx.shape.last().ok_or("indices must have rank >= 1")?;
    let offs = scatter_nd_offsets(&x.shape, &idx.to_i64_vec(), k)?;
    if offs.len() != u.len() {
        return Err(format!(
            "updates have {} elements, the indexed slices {}",
            u.len(),
            offs.len()
        ));
    }
    if reduction == "none" {
        // Exact for every type: each element from the data or from its last update.
        let n = x.len();
        let mut src: Vec<usize> = (0..n).collect();
        for (j, &o) in offs.iter().enumerate() {
            src[o] = n + j;
        }
        let flat = |t: &Tensor| Tensor {
            shape: vec![t.len()],
            data: t.data.clone(),
        };
        let both = concat(&[&flat(x), &flat(u)], 0)?;
        return Ok(take(&both, x.shape.clone(), &src));
    }
    let combine: fn(f64, f64) -> f64 = match reduction {
        "add" => |a, b| a + b,
        "mul" => |a, b| a * b,
        "max" => f64::max,
        "min" => f64::min,
        r => {
            return Err(format!(
                "reduction `{r}` is not one of none, add, mul, max, min"
            ));
        }
    };
    let mut vals = x.to_f64_vec();
    let uv = u.to_f64_vec();
    for (&o, &b) in offs.iter().zip(&uv) {
        vals[o] = combine(vals[o], b);
    }
    Ok(Tensor::from_f64_fn(
        x.dtype(),
        x.shape.clone(),
        vals.len(),
        |i| vals[i],
    ))
}

fn gather_elements(x: &Tensor, idx: &Tensor, axis: i64) -> R<Tensor> {
    if idx.rank() != x.rank() {
        return Err("indices must have the data's rank".into());
    }
    let r = x.rank() as i64;
    if axis < -r || axis >= r {
        return Err(format!("axis {axis} is out of range for rank {r}"));
    }
    let a = if axis < 0 { axis + r } else { axis } as usize;
    let (xs, is) = (strides(&x.shape), strides(&idx.shape));
    let n = x.shape[a] as i64;
    let mut src = Vec::with_capacity(idx.len());
    for (flat, v) in idx.to_i64_vec().into_iter().enumerate() {
        let v = if v < 0 { v + n } else { v };
        if v < 0 || v >= n {
            return Err(format!("index {v} is out of range for extent {n}"));
        }
        let mut off = 0;
        for d in 0..idx.rank() {
            let c = if d == a {
                v as usize
            } else {
                flat / is[d] % idx.shape[d]
            };
            if d != a && c >= x.shape[d] {
                return Err(format!(
                    "indices dim {d} ({}) is past the data's ({})",
                    idx.shape[d], x.shape[d]
                ));
            }
            off += c * xs[d];
        }
        src.push(off);
    }
    Ok(take(x, idx.shape.clone(), &src))
}

fn gather_nd(x: &Tensor, idx: &Tensor, b: i64) -> R<Tensor> {
    let b = b.max(0) as usize;
    let q = *idx.shape.last().ok_or("indices must have rank >= 1")?;
    if b + q > x.rank() || b > idx.rank() {
        return Err("indices are deeper than the data".into());
    }
    if idx.rank() < b + 1 || idx.shape[..b] != x.shape[..b] {
        return Err("indices batch dims must equal the data's".into());
    }
    let ind = idx.to_i64_vec();
    let st = strides(&x.shape);
    let batch: usize = x.shape[..b].iter().product();
    let inner: usize = x.shape[b + q..].iter().product();
    let per_batch_idx: usize = idx.shape[b..idx.rank() - 1].iter().product();
    let mut shape = idx.shape[..idx.rank() - 1].to_vec();
    shape.extend_from_slice(&x.shape[b + q..]);
    let batch_stride: usize = x.shape[b..].iter().product();
    let mut src = vec![];
    for bi in 0..batch {
        for j in 0..per_batch_idx {
            let tuple = &ind[(bi * per_batch_idx + j) * q..(bi * per_batch_idx + j + 1) * q];
            let mut off = bi * batch_stride;
            for (k, &v) in tuple.iter().enumerate() {
                let n = x.shape[b + k] as i64;
                let v = if v < 0 { v + n } else { v };
                if v < 0 || v >= n {
                    return Err(format!("index {v} is out of range for extent {n}"));
                }
                off += v as usize * st[b + k];
            }
            src.extend(off..off + inner);
        }
    }
    Ok(take(x, shape, &src))
}

fn range(s: &Tensor, l: &Tensor, d: &Tensor) -> R<Tensor> {
    if s.len() != 1 || l.len() != 1 || d.len() != 1 {
        return Err("range operands must be scalars".into());
    }
    if s.dtype().is_float() {
        let (a, b, dl) = (s.get_f64(0), l.get_f64(0), d.get_f64(0));
        if dl == 0.0 {
            return Err("delta is zero".into());
        }
        let n = ((b - a) / dl).ceil().max(0.0) as usize;
        check_numel(&[n])?;
        return Ok(Tensor::from_f64_fn(s.dtype(), vec![n], n, |i| {
            a + i as f64 * dl
        }));
    }
    let (a, b, dl) = (s.get_i128(0), l.get_i128(0), d.get_i128(0));
    if dl == 0 {
        return Err("delta is zero".into());
    }
    let diff = b - a;
    let n = (diff / dl
        + if diff % dl != 0 && (diff > 0) == (dl > 0) {
            1
        } else {
            0
        })
    .max(0) as usize;
    check_numel(&[n])?;
    let z = super::tensor::zeros(s.dtype(), vec![]);
    let data =
        map_data!(&z.data, _v => (0..n).map(|i| Elem::from_i128(a + i as i128 * dl)).collect());
    Ok(Tensor {
        shape: vec![n],
        data,
    })
}

fn trilu(x: &Tensor, k: Option<&Tensor>, upper: bool) -> R<Tensor> {
    if x.rank() < 2 {
        return Err("input rank must be >= 2".into());
    }
    let k = k
        .map(|t| t.to_i64_vec().first().copied().unwrap_or(0))
        .unwrap_or(0);
    let (rows, cols) = (x.shape[x.rank() - 2], x.shape[x.rank() - 1]);
    let keep = |i: usize| {
        let (r, c) = (((i / cols) % rows.max(1)) as i64, (i % cols.max(1)) as i64);
        if upper { c - r >= k } else { c - r <= k }
    };
    fn go<T: Elem>(v: &[T], keep: &dyn Fn(usize) -> bool) -> Vec<T> {
        v.iter()
            .enumerate()
            .map(|(i, &a)| if keep(i) { a } else { T::default() })
            .collect()
    }
    Ok(Tensor {
        shape: x.shape.clone(),
        data: map_data!(&x.data, v => go(v, &keep)),
    })
}

fn pad(c: &OpCtx) -> R<Tensor> {
    let x = c.req(0)?;
    let pads = c.req(1)?.to_i64_vec();
    let axes: Vec<usize> = match c.input(3) {
        Some(a) => a
            .to_i64_vec()
            .iter()
            .map(|&v| axis(v, x.rank()))
            .collect::<R<_>>()?,
        None => (0..x.rank()).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err("'pads' must hold a begin and an end count per axis".into());
    }
    let mut begin = vec![0i64; x.rank()];
    let mut shape = x.shape.clone();
    for (i, &a) in axes.iter().enumerate() {
        begin[a] = pads[i];
        let n = x.shape[a] as i64 + pads[i] + pads[i + axes.len()];
        if n < 0 {
            return Err("pads crop more than the extent".into());
        }
        shape[a] = n as usize;
    }
    let fill = match c.input(2) {
        Some(v) if v.len() == 1 => v.clone(),
        _ => super::tensor::zeros(x.dtype(), vec![]),
    };
    if fill.dtype() != x.dtype() {
        return Err("pad value type differs from the input".into());
    }
    let mode = c
        .attr("mode")
        .and_then(Attribute::as_str)
        .unwrap_or("constant");
    if !graph::PAD_MODES.contains(&mode) {
        return Err(format!("unknown pad mode '{mode}'"));
    }
    // Per axis, the kept (cropped) input range `lo..lo + kept`.
    let mut lo = vec![0i64; x.rank()];
    let mut kept = vec![0i64; x.rank()];
    for d in 0..x.rank() {
        lo[d] = (-begin[d]).max(0);
        let n = x.shape[d] as i64;
        let end = shape[d] as i64 - n - begin[d];
        kept[d] = n - lo[d] - (-end).max(0);
        if mode != "constant" && kept[d] <= 0 && shape[d] > 0 {
            return Err(format!("{mode} padding of an axis with no element"));
        }
    }
    let st = strides(&x.shape);
    let n = check_numel(&shape)?;
    let ost = strides(&shape);
    let mut src: Vec<Option<usize>> = Vec::with_capacity(n);
    for o in 0..n {
        let mut off = 0usize;
        let mut inside = true;
        for d in 0..shape.len() {
            let out = ((o / ost[d]) % shape[d].max(1)) as i64;
            let at = out - begin[d].max(0);
            match graph::pad_source(mode, at, kept[d]) {
                Some(j) => off += (lo[d] + j) as usize * st[d],
                None => {
                    inside = false;
                    break;
                }
            }
        }
        src.push(inside.then_some(off));
    }
    fn go<T: Elem>(v: &[T], f: T, src: &[Option<usize>]) -> Vec<T> {
        src.iter().map(|s| s.map_or(f, |i| v[i])).collect()
    }
    let data = zip_same!(&x.data, &fill.data, v, f => go(v, f[0], &src));
    Ok(Tensor { shape, data })
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

// ---------- attention / rotary ----------

/// [B, S, H*D] → [B, H, S, D] (as f64 values).
fn heads_first(t: &Tensor, h: usize) -> R<(Vec<f64>, [usize; 4])> {
    match t.rank() {
        4 => Ok((
            t.to_f64_vec(),
            [t.shape[0], t.shape[1], t.shape[2], t.shape[3]],
        )),
        3 => {
            let (b, s, hd) = (t.shape[0], t.shape[1], t.shape[2]);
            if h == 0 || hd % h != 0 {
                return Err(format!("hidden size {hd} is not divisible by {h} heads"));
            }
            let d = hd / h;
            let r = t.clone().reshaped(vec![b, s, h, d]);
            let tr = transpose(&r, &[0, 2, 1, 3])?;
            Ok((tr.to_f64_vec(), [b, h, s, d]))
        }
        r => Err(format!("attention inputs must be 3-D or 4-D, got rank {r}")),
    }
}

fn attention(c: &OpCtx) -> R<Vec<Tensor>> {
    let (q, k, v) = (c.req(0)?, c.req(1)?, c.req(2)?);
    let dtype = q.dtype();
    let (qv, [b, hq, sq, d]) = heads_first(q, c.int("q_num_heads", 0).max(0) as usize)?;
    let (mut kv, [_, hkv, skv, dk]) = heads_first(k, c.int("kv_num_heads", 0).max(0) as usize)?;
    let (mut vv, [_, hv, _, dv]) = heads_first(v, c.int("kv_num_heads", 0).max(0) as usize)?;
    if dk != d {
        return Err(format!("q head size {d} differs from k head size {dk}"));
    }
    if k.shape[0] != b || v.shape[0] != b || vv.len() != b * hv * skv * dv {
        return Err("K and V must have Q's batch size and the same sequence length".into());
    }
    let mut total = skv;
    let past_len = c.input(4).map(|p| p.shape.get(2).copied().unwrap_or(0));
    if let (Some(pk), Some(pv)) = (c.input(4), c.input(5)) {
        let cat = |p: &Tensor, cur: Vec<f64>, dd: usize| -> R<Vec<f64>> {
            if p.rank() != 4 || p.shape[0] != b || p.shape[1] != hkv || p.shape[3] != dd {
                return Err(format!("past shape {:?} does not fit", p.shape));
            }
            let pl = p.shape[2];
            let pvv = p.to_f64_vec();
            let h = p.shape[1];
            let mut out = Vec::with_capacity(pvv.len() + cur.len());
            for bh in 0..b * h {
                out.extend_from_slice(&pvv[bh * pl * dd..(bh + 1) * pl * dd]);
                out.extend_from_slice(&cur[bh * skv * dd..(bh + 1) * skv * dd]);
            }
            Ok(out)
        };
        kv = cat(pk, kv, d)?;
        vv = cat(pv, vv, dv)?;
        total = skv + pk.shape[2];
    }
    let scale = c.float("scale").unwrap_or(1.0 / (d as f64).sqrt());
    let softcap = c.float("softcap").unwrap_or(0.0);
    let causal = c.int("is_causal", 0) != 0;
    let mode = c.int("qk_matmul_output_mode", 0);
    // Bias [B, Hq, Sq, total] built from mask, causal and padding rules.
    let nel = b * hq * sq * total;
    let mut bias = vec![0f64; nel];
    if let Some(mask) = c.input(3) {
        let ml = *mask.shape.last().ok_or("mask must have rank >= 1")?;
        let mut mshape = mask.shape.clone();
        let lastd = mshape.len() - 1;
        mshape[lastd] = total;
        let full = bcast_shape(&mshape, &[b, hq, sq, total])?;
        if full != [b, hq, sq, total] {
            return Err(format!(
                "mask shape {:?} does not broadcast to the scores",
                mask.shape
            ));
        }
        let o = offsets(&mshape, &full);
        let mv = mask.to_f64_vec();
        let is_bool = mask.dtype() == ScalarType::I1;
        for (i, bv) in bias.iter_mut().enumerate() {
            // Map the padded index back to the mask's own last extent.
            let col = i % total;
            let lin = o[i];
            let row = lin / total;
            *bv = if col >= ml {
                f64::NEG_INFINITY
            } else {
                let val = mv[row * ml + col];
                if is_bool {
                    if val != 0.0 { 0.0 } else { f64::NEG_INFINITY }
                } else {
                    val
                }
            };
        }
    }
    let nonpad = c.input(6).map(Tensor::to_i64_vec);
    if causal {
        for bi in 0..b {
            let offset: i64 = match (past_len, &nonpad) {
                (Some(p), _) => p as i64,
                (None, Some(np)) => np.get(bi).copied().unwrap_or(0) - sq as i64,
                (None, None) => 0,
            };
            for h in 0..hq {
                for i in 0..sq {
                    for j in 0..total {
                        if j as i64 > i as i64 + offset {
                            bias[((bi * hq + h) * sq + i) * total + j] = f64::NEG_INFINITY;
                        }
                    }
                }
            }
        }
    }
    if let Some(np) = &nonpad {
        for bi in 0..b {
            let lim = np.get(bi).copied().unwrap_or(total as i64);
            for h in 0..hq {
                for i in 0..sq {
                    for j in 0..total {
                        if j as i64 >= lim {
                            bias[((bi * hq + h) * sq + i) * total + j] = f64::NEG_INFINITY;
                        }
                    }
                }
            }
        }
    }
    if hkv == 0 || hq % hkv != 0 || hv != hkv {
        return Err(format!(
            "{hq} query heads cannot share {hkv} key/value heads"
        ));
    }
    let group = hq / hkv;
    let s = scale.sqrt();
    let mut qk = vec![0f64; nel];
    // The scaled product before the soft-cap (`qk_matmul_output_mode = 0`).
    let mut raw = vec![0f64; nel];
    let mut qkb = vec![0f64; nel];
    let mut probs = vec![0f64; nel];
    let mut y = vec![0f64; b * hq * sq * dv];
    let qs: Vec<f64> = qv.iter().map(|&x| round_to(dtype, x * s)).collect();
    let ks: Vec<f64> = kv.iter().map(|&x| round_to(dtype, x * s)).collect();
    for bi in 0..b {
        for h in 0..hq {
            let kh = h / group;
            let qoff = (bi * hq + h) * sq * d;
            let koff = (bi * hkv + kh) * total * d;
            let voff = (bi * hkv + kh) * total * dv;
            let soff = (bi * hq + h) * sq * total;
            gemm_f64(
                sq,
                d,
                total,
                &qs[qoff..],
                d as isize,
                1,
                &ks[koff..],
                1,
                d as isize,
                &mut qk[soff..soff + sq * total],
            );
            for i in 0..sq {
                let row = soff + i * total;
                for j in 0..total {
                    let mut x = round_to(dtype, qk[row + j]);
                    raw[row + j] = x;
                    if softcap > 0.0 {
                        x = softcap * (x / softcap).tanh();
                    }
                    qk[row + j] = x;
                    qkb[row + j] = x + bias[row + j];
                }
                let mx = qkb[row..row + total]
                    .iter()
                    .fold(f64::NEG_INFINITY, |a, &b| a.max(b));
                if mx == f64::NEG_INFINITY {
                    // A fully masked row attends to nothing: zero probabilities, zero output.
                    probs[row..row + total].iter_mut().for_each(|p| *p = 0.0);
                    continue;
                }
                let mut sum = 0.0;
                for j in 0..total {
                    let e = (qkb[row + j] - mx).exp();
                    probs[row + j] = e;
                    sum += e;
                }
                for j in 0..total {
                    probs[row + j] /= sum;
                }
            }
            let yoff = (bi * hq + h) * sq * dv;
            gemm_f64(
                sq,
                total,
                dv,
                &probs[soff..],
                total as isize,
                1,
                &vv[voff..],
                dv as isize,
                1,
                &mut y[yoff..yoff + sq * dv],
            );
        }
    }
    let mut out = Tensor::from_f64_fn(dtype, vec![b, hq, sq, dv], y.len(), |i| y[i]);
    if q.rank() == 3 {
        out = transpose(&out, &[0, 2, 1, 3])?.reshaped(vec![b, sq, hq * dv]);
    }
    let mut res = vec![out];
    let n = c.nresults();
    if n > 1 {
        res.push(Tensor::from_f64_fn(
            c.result_elem(1)?,
            vec![b, hkv, total, d],
            kv.len(),
            |i| kv[i],
        ));
    }
    if n > 2 {
        res.push(Tensor::from_f64_fn(
            c.result_elem(2)?,
            vec![b, hkv, total, dv],
            vv.len(),
            |i| vv[i],
        ));
    }
    if n > 3 {
        let src = match mode {
            0 => &raw,
            2 => &qkb,
            3 => &probs,
            _ => &qk,
        };
        res.push(Tensor::from_f64_fn(
            c.result_elem(3)?,
            vec![b, hq, sq, total],
            nel,
            |i| src[i],
        ));
    }
    Ok(res)
}

fn round_to(t: ScalarType, v: f64) -> f64 {
    match t {
        ScalarType::F32 => v as f32 as f64,
        ScalarType::F16 => <half::f16 as Elem>::from_f64(v).to_f64(),
        ScalarType::BF16 => <half::bf16 as Elem>::from_f64(v).to_f64(),
        _ => v,
    }
}

fn rotary(c: &OpCtx) -> R<Tensor> {
    let x = c.req(0)?;
    let (cos, sin) = (c.req(1)?, c.req(2)?);
    let pos = c.input(3).map(Tensor::to_i64_vec);
    let interleaved = c.int("interleaved", 0) != 0;
    let nh = c.int("num_heads", 0).max(0) as usize;
    // Work in [B, S, H, D].
    let t4 = match x.rank() {
        4 => transpose(x, &[0, 2, 1, 3])?,
        3 => {
            let (b, s, hd) = (x.shape[0], x.shape[1], x.shape[2]);
            if nh == 0 || hd % nh != 0 {
                return Err("3-D input needs num_heads dividing the hidden size".into());
            }
            x.clone().reshaped(vec![b, s, nh, hd / nh])
        }
        r => return Err(format!("input must be 3-D or 4-D, got rank {r}")),
    };
    let [b, s, h, d] = [t4.shape[0], t4.shape[1], t4.shape[2], t4.shape[3]];
    let rd = match c.int("rotary_embedding_dim", 0) {
        0 => d,
        r => r as usize,
    };
    let half = rd / 2;
    if rd > d || rd % 2 != 0 {
        return Err(format!(
            "rotary_embedding_dim {rd} must be even and at most the head size {d}"
        ));
    }
    let v = t4.to_f64_vec();
    let (cv, sv) = (cos.to_f64_vec(), sin.to_f64_vec());
    if cv.len() != sv.len() {
        return Err("cos and sin caches differ in size".into());
    }
    let cache_row = |bi: usize, si: usize| -> R<usize> {
        match &pos {
            Some(p) => {
                let pi = *p
                    .get(bi * s + si)
                    .or_else(|| p.get(si))
                    .ok_or("position_ids too short")?;
                if pi < 0 || (pi as usize + 1) * half > cv.len() {
                    return Err(format!("position id {pi} is out of range"));
                }
                Ok(pi as usize * half)
            }
            None => {
                let r = (bi * s + si) * half;
                if r + half > cv.len() {
                    return Err("cos/sin caches are too small".into());
                }
                Ok(r)
            }
        }
    };
    let mut out = v.clone();
    for bi in 0..b {
        for si in 0..s {
            let row = cache_row(bi, si)?;
            for hi in 0..h {
                let base = ((bi * s + si) * h + hi) * d;
                for j in 0..half {
                    let (i1, i2) = if interleaved {
                        (base + 2 * j, base + 2 * j + 1)
                    } else {
                        (base + j, base + j + half)
                    };
                    let (x1, x2) = (v[i1], v[i2]);
                    let (co, si_) = (cv[row + j], sv[row + j]);
                    out[i1] = round_to(x.dtype(), co * x1) - round_to(x.dtype(), si_ * x2);
                    out[i2] = round_to(x.dtype(), si_ * x1) + round_to(x.dtype(), co * x2);
                }
            }
        }
    }
    let r = Tensor::from_f64_fn(x.dtype(), t4.shape.clone(), out.len(), |i| out[i]);
    Ok(if x.rank() == 4 {
        transpose(&r, &[0, 2, 1, 3])?
    } else {
        r.reshaped(x.shape.clone())
    })
}

/// `graph.rope`: `x·cos + rotate_half(x)·sin` (last axis), rounded like its decomposition.
fn rope(c: &OpCtx) -> R<Tensor> {
    let x = c.req(0)?;
    let d = *x.shape.last().ok_or("rope needs a tensor of rank >= 1")?;
    let r = c.int("rotary_dim", d as i64);
    if r <= 0 || r as usize > d || r % 2 != 0 {
        return Err(format!("rope needs an even rotary_dim in 1..={d}, got {r}"));
    }
    let r = r as usize;
    if r == d {
        return rope_full(x, c.req(1)?, c.req(2)?);
    }
    // Partial rotary: the first `r` of every row rotate, the rest pass through.
    let rows = x.len() / d.max(1);
    let mut shape = x.shape.clone();
    if let Some(l) = shape.last_mut() {
        *l = r;
    }
    let head: Vec<usize> = (0..rows)
        .flat_map(|i| (0..r).map(move |j| i * d + j))
        .collect();
    let y = rope_full(&take(x, shape, &head), c.req(1)?, c.req(2)?)?;
    let (xv, yv) = (x.to_f64_vec(), y.to_f64_vec());
    Ok(Tensor::from_f64_fn(
        x.dtype(),
        x.shape.clone(),
        xv.len(),
        |i| {
            let (row, j) = (i / d, i % d);
            if j < r { yv[row * r + j] } else { xv[i] }
        },
    ))
}

/// `x·cos + rotate_half(x)·sin` over the whole last axis.
fn rope_full(x: &Tensor, cos: &Tensor, sin: &Tensor) -> R<Tensor> {
    let d = *x.shape.last().ok_or("rope needs a tensor of rank >= 1")?;
    if d % 2 != 0 {
        return Err(format!("rope needs an even last dimension, got {d}"));
    }
    let h = d / 2;
    let v = x.to_f64_vec();
    let rot = Tensor::from_f64_fn(x.dtype(), x.shape.clone(), v.len(), |i| {
        let (row, j) = (i - i % d, i % d);
        if j < h {
            -v[row + j + h]
        } else {
            v[row + j - h]
        }
    });
    let add = |a: f64, b: f64| a + b;
    let mul = |a: f64, b: f64| a * b;
    let imul = |a: i128, b: i128| a.wrapping_mul(b);
    let p1 = arith(x, cos, mul, imul)?;
    let p2 = arith(&rot, sin, mul, imul)?;
    arith(&p1, &p2, add, |a, b| a.wrapping_add(b))
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
                acc = round_as(x.dtype(), acc + v[i]);
            } else {
                acc = round_as(x.dtype(), acc + v[i]);
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

/// `v` rounded to float type `t` (running sums round after every addition, as ONNX runtimes do).
fn round_as(t: ScalarType, v: f64) -> f64 {
    match t {
        ScalarType::F32 => v as f32 as f64,
        ScalarType::F16 => half::f16::from_f64(v).to_f64(),
        ScalarType::BF16 => half::bf16::from_f64(v).to_f64(),
        _ => v,
    }
}

// ---------- quantization ----------

/// For every element of `x`, the index into a scale/zero-point tensor (scalar, per-axis or blocked).
fn quant_index(x: &Tensor, sc: &Tensor, ax: i64, block: i64) -> R<Vec<usize>> {
    let n = x.len();
    if sc.len() == 1 {
        return Ok(vec![0; n]);
    }
    let a = axis(ax, x.rank())?;
    let st = strides(&x.shape);
    if sc.rank() == 1 && block <= 0 {
        if sc.shape[0] != x.shape[a] {
            return Err("per-axis scale length does not match the axis".into());
        }
        return Ok((0..n).map(|i| (i / st[a]) % x.shape[a]).collect());
    }
    if sc.rank() != x.rank() || block <= 0 {
        return Err("scale shape does not fit the input".into());
    }
    let sst = strides(&sc.shape);
    Ok((0..n)
        .map(|i| {
            (0..x.rank())
                .map(|dd| {
                    let c = (i / st[dd]) % x.shape[dd];
                    let c = if dd == a { c / block as usize } else { c };
                    c.min(sc.shape[dd].saturating_sub(1)) * sst[dd]
                })
                .sum()
        })
        .collect())
}

fn quantize(c: &OpCtx) -> R<Tensor> {
    let (x, sc) = (c.req(0)?, c.req(1)?);
    let zp = c.input(2);
    let to = c.result_elem(0)?;
    let idx = quant_index(x, sc, c.int("axis", 1), c.int("block_size", 0))?;
    let (xv, sv) = (x.to_f64_vec(), sc.to_f64_vec());
    let zv = zp.map(Tensor::to_f64_vec);
    if zv.as_ref().is_some_and(|z| z.len() != sv.len()) {
        return Err("zero point and scale differ in size".into());
    }
    let sat = c.int("saturate", 1) != 0;
    if to == ScalarType::F8E4M3FN {
        let v: Vec<F8E4M3> = (0..xv.len())
            .map(|i| {
                let s = round_to(ScalarType::F32, xv[i] / sv[idx[i]]);
                let z = zv.as_ref().map_or(0.0, |z| z[idx[i]]);
                F8E4M3::from_f64(s + z, sat)
            })
            .collect();
        return Ok(Tensor::new(x.shape.clone(), v));
    }
    let (lo, hi) = match to {
        ScalarType::I8 => (-128.0, 127.0),
        ScalarType::UI8 => (0.0, 255.0),
        ScalarType::I16 => (-32768.0, 32767.0),
        ScalarType::UI16 => (0.0, 65535.0),
        ScalarType::I32 => (i32::MIN as f64, i32::MAX as f64),
        t => return Err(format!("unsupported quantized type {t}")),
    };
    Ok(Tensor::from_f64_fn(to, x.shape.clone(), xv.len(), |i| {
        let q = round_to(ScalarType::F32, xv[i] / sv[idx[i]]).round_ties_even();
        (q + zv.as_ref().map_or(0.0, |z| z[idx[i]])).clamp(lo, hi)
    }))
}

fn dequantize(c: &OpCtx) -> R<Tensor> {
    let (x, sc) = (c.req(0)?, c.req(1)?);
    let to = c.result_elem(0)?;
    let idx = quant_index(x, sc, c.int("axis", 1), c.int("block_size", 0))?;
    let (xv, sv) = (x.to_f64_vec(), sc.to_f64_vec());
    let zv = c.input(2).map(Tensor::to_f64_vec);
    if zv.as_ref().is_some_and(|z| z.len() != sv.len()) {
        return Err("zero point and scale differ in size".into());
    }
    Ok(Tensor::from_f64_fn(to, x.shape.clone(), xv.len(), |i| {
        round_to(to, xv[i] - zv.as_ref().map_or(0.0, |z| z[idx[i]])) * sv[idx[i]]
    }))
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
