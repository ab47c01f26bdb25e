//! `decompose-attention`: every ONNX `graph.attention` that `fuse-attention` did not turn into a
//! `graph.fused_attention` (3-D inputs, past/present K and V, the `qk_matmul_output` result,
//! `nonpad_kv_seqlen`, ...) is rewritten into graph-dialect primitives the backend lowers:
//!
//! ```text
//! Q, K, V      3-D [B, S, H·D] → reshape [B, S, H, D] → transpose [B, H, S, D]
//! present_k/v  concat(past, K/V) on the sequence axis (or K/V themselves without a past)
//! GQA          K/V heads repeated: reshape [B, Hkv, 1, T, D] → expand [B, Hkv, g, T, D] → [B, Hq, T, D]
//! qk           (Q·√scale) · transpose(K·√scale)            (as the reference scales both sides)
//! softcap      c · tanh(qk / c)                             (before the bias, as the reference)
//! bias         mask (bool: where(m, 0, −inf); float as is; a short last axis padded with −inf)
//!              + causal (row i sees j <= i + offset, offset = past length, or nonpad[b] − Sq
//!                with nonpad_kv_seqlen and no past; built by comparing [Sq, 1] and [T] positions,
//!                so no constant grows with Sq·T)
//!              + padding (positions ≥ nonpad_kv_seqlen[b] → −inf)
//! probs        softmax(qk + bias); rows whose bias is −inf everywhere become 0
//! Y            probs · V, back to [B, S, Hq·Dv] for 3-D queries
//! ```
//!
//! The `qk_matmul_output` result is taken at the stage the reference interpreter
//! (`crate::interp`, the oracle) defines: the scaled (soft-capped) scores for modes 0 and 1, scores
//! plus bias for 2, probabilities for 3.
//!
//! Invariants: only `graph.attention` ops still present after `fuse-attention` are touched, so what
//! fuses today is unchanged; after the pass no `graph.attention` is left. Shapes must be static; an
//! op this pass cannot express (symbolic dims, head counts that do not divide, a mask that does not
//! broadcast, an unknown `qk_matmul_output_mode`) fails the pass with the reason, at the op's
//! location. Every created op carries the attention op's location.

use super::PassInfo;
use crate::backend::plan::{operand_at, shape_of};
use crate::dialects::graph;
use crate::ir::{Attribute, Location, Module, OpId, OpSpec, ScalarType, Type, ValueId};
use crate::pass::{Pass, PassError};

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "decompose-attention",
    description: "rewrite graph.attention ops fuse-attention left (3-D, past/present, qk output, nonpad, GQA) into graph primitives",
    create: || Box::new(DecomposeAttention),
};

/// The pass.
pub struct DecomposeAttention;

impl Pass for DecomposeAttention {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        for op in m.walk_all() {
            if m.op(op).erased || m.op(op).parent.is_none() {
                continue;
            }
            if m.op(op).name == graph::Attention::NAME
                && let Err(why) = decompose(m, op)
            {
                // Whatever was built before the reason surfaced has no user: dropped below.
                crate::passes::dce::erase_dead_ops(m);
                return Err(refuse(INFO.name, graph::Attention::NAME, &m.op(op).loc, why));
            }
        }
        crate::passes::dce::erase_dead_ops(m);
        Ok(())
    }
}

/// Creates ops before one anchor op, all at one location.
pub(crate) struct Builder<'a> {
    pub m: &'a mut Module,
    pub at: OpId,
    pub loc: Location,
}

impl Builder<'_> {
    /// One op with one result of type `ty`.
    pub fn op(
        &mut self,
        name: &str,
        operands: &[ValueId],
        ty: Type,
        attrs: Vec<(&str, Attribute)>,
    ) -> ValueId {
        let mut spec = OpSpec::new(name, self.loc.clone())
            .operands(operands)
            .results(vec![ty]);
        for (k, a) in attrs {
            spec = spec.attr(k, a);
        }
        let op = self.m.create_op(spec);
        self.m.insert_op_before(self.at, op);
        self.m.op(op).results[0]
    }

    /// A constant of `shape` holding `vals` (one per element) as `elem`, encoded as the
    /// reference interpreter encodes that type.
    pub fn constant(&mut self, shape: &[u64], elem: ScalarType, vals: &[f64]) -> ValueId {
        let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        let t = crate::interp::Tensor::from_f64_fn(elem, dims, vals.len(), |i| vals[i]);
        let loc = self.loc.clone();
        crate::passes::fold_constants::insert_constant(self.m, self.at, "decomposed_const", &t, loc)
    }

    /// A scalar (rank-0) constant.
    pub fn scalar(&mut self, v: f64, elem: ScalarType) -> ValueId {
        self.constant(&[], elem, &[v])
    }

    /// `x` with a new shape (same elements, same order).
    pub fn reshape(&mut self, x: ValueId, shape: &[u64]) -> ValueId {
        let e = self.elem(x);
        self.op(graph::Reshape::NAME, &[x], Type::tensor(shape, e), vec![])
    }

    /// `x` with its dims permuted.
    pub fn transpose(&mut self, x: ValueId, perm: &[usize]) -> Option<ValueId> {
        let s = shape_of(self.m, x)?;
        let out: Vec<u64> = perm.iter().map(|&p| s[p]).collect();
        let e = self.elem(x);
        Some(self.op(
            graph::Transpose::NAME,
            &[x],
            Type::tensor(&out, e),
            vec![(
                "perm",
                Attribute::DenseI64Array(perm.iter().map(|&p| p as i64).collect()),
            )],
        ))
    }

    /// A broadcasting binary op whose result has the element type `elem`.
    pub fn binary(
        &mut self,
        name: &str,
        a: ValueId,
        b: ValueId,
        elem: ScalarType,
    ) -> Option<ValueId> {
        let (sa, sb) = (shape_of(self.m, a)?, shape_of(self.m, b)?);
        let out = broadcast(&sa, &sb)?;
        Some(self.op(name, &[a, b], Type::tensor(&out, elem), vec![]))
    }

    /// A broadcasting arithmetic op (result element type of `a`).
    pub fn arith(&mut self, name: &str, a: ValueId, b: ValueId) -> Option<ValueId> {
        let e = self.elem(a);
        self.binary(name, a, b, e)
    }

    /// `where(cond, a, b)` with broadcasting; the result has `a`'s element type.
    pub fn select(&mut self, cond: ValueId, a: ValueId, b: ValueId) -> Option<ValueId> {
        let (sc, sa, sb) = (
            shape_of(self.m, cond)?,
            shape_of(self.m, a)?,
            shape_of(self.m, b)?,
        );
        let out = broadcast(&broadcast(&sc, &sa)?, &sb)?;
        let e = self.elem(a);
        Some(self.op(graph::Where::NAME, &[cond, a, b], Type::tensor(&out, e), vec![]))
    }

    /// A unary op keeping the operand's type.
    pub fn unary(&mut self, name: &str, x: ValueId, attrs: Vec<(&str, Attribute)>) -> ValueId {
        let ty = self.m.value_type(x).clone();
        self.op(name, &[x], ty, attrs)
    }

    /// `x` converted to `elem` (no op when it already is).
    pub fn cast(&mut self, x: ValueId, elem: ScalarType) -> Option<ValueId> {
        if self.elem(x) == elem {
            return Some(x);
        }
        let s = shape_of(self.m, x)?;
        Some(self.op(graph::Cast::NAME, &[x], Type::tensor(&s, elem), vec![]))
    }

    /// `parts` joined along `axis`.
    pub fn concat(&mut self, parts: &[ValueId], axis: usize) -> Option<ValueId> {
        let mut s = shape_of(self.m, parts[0])?;
        s[axis] = 0;
        for &p in parts {
            s[axis] += shape_of(self.m, p)?[axis];
        }
        let e = self.elem(parts[0]);
        Some(self.op(
            graph::Concat::NAME,
            parts,
            Type::tensor(&s, e),
            vec![("axis", Attribute::i64(axis as i64))],
        ))
    }

    /// Elements `start..end` of the last axis of `x`.
    pub fn slice_last(&mut self, x: ValueId, start: u64, end: u64) -> Option<ValueId> {
        let mut s = shape_of(self.m, x)?;
        let r = s.len();
        s[r - 1] = end - start;
        let starts = self.constant(&[1], ScalarType::I64, &[start as f64]);
        let ends = self.constant(&[1], ScalarType::I64, &[end as f64]);
        let axes = self.constant(&[1], ScalarType::I64, &[(r - 1) as f64]);
        let e = self.elem(x);
        Some(self.op(
            graph::Slice::NAME,
            &[x, starts, ends, axes],
            Type::tensor(&s, e),
            vec![],
        ))
    }

    fn elem(&self, v: ValueId) -> ScalarType {
        self.m.value_type(v).elem().unwrap_or(ScalarType::F32)
    }
}

/// NumPy broadcast of two static shapes.
pub(crate) fn broadcast(a: &[u64], b: &[u64]) -> Option<Vec<u64>> {
    let n = a.len().max(b.len());
    let at = |s: &[u64], i: usize| {
        let off = n - s.len();
        if i < off { 1 } else { s[i - off] }
    };
    (0..n)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// Why an op could not be rewritten (the pass error's message names the op and this reason).
pub(crate) type Why = String;

/// `x`, or the reason every shape-dependent step gives when a shape is not static.
pub(crate) fn need<T>(x: Option<T>) -> Result<T, Why> {
    x.ok_or_else(|| "its operands and results need static shapes".to_string())
}

/// The error of a `graph.<op>` this backend cannot run, at `loc`.
pub(crate) fn refuse(pass: &str, op: &str, loc: &Location, why: Why) -> PassError {
    PassError::Failed {
        pass: pass.to_string(),
        message: format!("`{op}` is not supported by the LLMPU backend: {why}"),
        loc: loc.clone(),
    }
}

/// `x` as `[B, H, S, D]`: 4-D as is, 3-D `[B, S, H·D]` split into `heads` heads.
fn heads_first(b: &mut Builder, x: ValueId, heads: i64, what: &str) -> Result<ValueId, Why> {
    let s = need(shape_of(b.m, x))?;
    match s.len() {
        4 => Ok(x),
        3 => {
            let h = u64::try_from(heads).ok().filter(|&h| h > 0 && s[2] % h == 0);
            let h = h.ok_or_else(|| {
                format!("3-D {what} of hidden size {} needs a head count dividing it, got {heads}", s[2])
            })?;
            let r = b.reshape(x, &[s[0], s[1], h, s[2] / h]);
            need(b.transpose(r, &[0, 2, 1, 3]))
        }
        r => Err(format!("{what} must be 3-D or 4-D, got rank {r}")),
    }
}

/// `[B, Hkv, T, D]` with every head repeated `group` times in place: `[B, Hkv·group, T, D]`.
fn repeat_heads(b: &mut Builder, x: ValueId, group: u64) -> Result<ValueId, Why> {
    if group == 1 {
        return Ok(x);
    }
    let s = need(shape_of(b.m, x))?;
    let u = b.reshape(x, &[s[0], s[1], 1, s[2], s[3]]);
    let big = [s[0], s[1], group, s[2], s[3]];
    let shape = b.constant(&[5], ScalarType::I64, &big.map(|d| d as f64));
    let e = b.elem(u);
    let ex = b.op(graph::Expand::NAME, &[u, shape], Type::tensor(&big, e), vec![]);
    Ok(b.reshape(ex, &[s[0], s[1] * group, s[2], s[3]]))
}

fn decompose(m: &mut Module, op: OpId) -> Result<(), Why> {
    let d = m.op(op).clone();
    let int = |m: &Module, k: &str, dflt: i64| {
        m.attr(op, k)
            .and_then(Attribute::as_int)
            .unwrap_or(dflt)
    };
    let (q_heads, kv_heads) = (int(m, "q_num_heads", 0), int(m, "kv_num_heads", 0));
    let causal = int(m, "is_causal", 0) != 0;
    let mode = int(m, "qk_matmul_output_mode", 0);
    if !(0..=3).contains(&mode) {
        return Err(format!("qk_matmul_output_mode {mode} is not one of 0, 1, 2, 3"));
    }
    let softcap = m
        .attr(op, "softcap")
        .and_then(Attribute::as_f64)
        .unwrap_or(0.0);
    let input = |slot: usize, what: &str| {
        operand_at(m, op, slot).ok_or_else(|| format!("it has no {what} operand"))
    };
    let (q, k, v) = (input(0, "Q")?, input(1, "K")?, input(2, "V")?);
    let mask = operand_at(m, op, 3);
    let past = match (operand_at(m, op, 4), operand_at(m, op, 5)) {
        (Some(pk), Some(pv)) => Some((pk, pv)),
        (None, None) => None,
        _ => return Err("past_key and past_value must be given together".into()),
    };
    let nonpad = operand_at(m, op, 6);
    let elem = need(m.value_type(q).elem())?;
    if !elem.is_float() {
        return Err(format!("Q has the non-float element type {elem}"));
    }
    let mut b = Builder {
        m,
        at: op,
        loc: d.loc.clone(),
    };
    let q4 = heads_first(&mut b, q, q_heads, "Q")?;
    let k4 = heads_first(&mut b, k, kv_heads, "K")?;
    let v4 = heads_first(&mut b, v, kv_heads, "V")?;
    let qs = need(shape_of(b.m, q4))?;
    let (bsz, hq, sq, dh) = (qs[0], qs[1], qs[2], qs[3]);
    let (ks, vs) = (need(shape_of(b.m, k4))?, need(shape_of(b.m, v4))?);
    let hkv = ks[1];
    if ks[0] != bsz || vs[0] != bsz || ks[3] != dh || vs[1] != hkv || vs[2] != ks[2] {
        return Err(format!(
            "K {ks:?} and V {vs:?} (as [B, H, S, D]) do not fit Q {qs:?}"
        ));
    }
    if hkv == 0 || hq % hkv != 0 {
        return Err(format!("{hq} query heads cannot share {hkv} key/value heads"));
    }
    // present_key / present_value: the past followed by the new tokens.
    let (kt, vt, past_len) = match past {
        Some((pk, pv)) => {
            let (pks, pvs) = (need(shape_of(b.m, pk))?, need(shape_of(b.m, pv))?);
            let fits = pks.len() == 4
                && pvs.len() == 4
                && pks[..2] == ks[..2]
                && pvs[..2] == vs[..2]
                && pks[3] == ks[3]
                && pvs[3] == vs[3]
                && pks[2] == pvs[2];
            if !fits {
                return Err(format!(
                    "past_key {pks:?} and past_value {pvs:?} do not fit K {ks:?} and V {vs:?}"
                ));
            }
            let pk = need(b.cast(pk, elem))?;
            let pv = need(b.cast(pv, elem))?;
            (
                need(b.concat(&[pk, k4], 2))?,
                need(b.concat(&[pv, v4], 2))?,
                Some(pks[2]),
            )
        }
        None => (k4, v4, None),
    };
    let total = need(shape_of(b.m, kt))?[2];
    let group = hq / hkv;
    let kr = repeat_heads(&mut b, kt, group)?;
    let vr = repeat_heads(&mut b, vt, group)?;
    // Scores: both sides scaled by √scale, as the reference does.
    let scale = b
        .m
        .attr(op, "scale")
        .and_then(Attribute::as_f64)
        .unwrap_or(1.0 / (dh as f64).sqrt());
    let root = b.scalar(scale.sqrt(), elem);
    let qsc = need(b.arith(graph::Mul::NAME, q4, root))?;
    let ktr = need(b.transpose(kr, &[0, 1, 3, 2]))?;
    let ksc = need(b.arith(graph::Mul::NAME, ktr, root))?;
    let mut qk = b.op(
        graph::MatMul::NAME,
        &[qsc, ksc],
        Type::tensor(&[bsz, hq, sq, total], elem),
        vec![],
    );
    // `qk_matmul_output_mode = 0` is the scaled product before the soft-cap.
    let raw = qk;
    if softcap > 0.0 {
        let c = b.scalar(softcap, elem);
        let x = need(b.arith(graph::Div::NAME, qk, c))?;
        let t = b.unary(graph::Tanh::NAME, x, vec![]);
        qk = need(b.arith(graph::Mul::NAME, t, c))?;
    }
    // The additive bias, and whether some row of it may be −inf everywhere.
    let ninf = b.scalar(f64::NEG_INFINITY, elem);
    let zero = b.scalar(0.0, elem);
    let mut terms: Vec<ValueId> = vec![];
    let mut may_mask_rows = false;
    if let Some(mk) = mask {
        let ms = need(shape_of(b.m, mk))?;
        let full = [bsz, hq, sq, total];
        let mut padded = ms.clone();
        if let Some(l) = padded.last_mut() {
            *l = total;
        }
        let ml = ms.last().copied().unwrap_or(0);
        if ms.is_empty() || ml > total || ms.len() > 4 || broadcast(&padded, &full) != Some(full.to_vec()) {
            return Err(format!(
                "the mask {ms:?} does not broadcast to the scores {full:?}"
            ));
        }
        let me = need(b.m.value_type(mk).elem())?;
        let mut t = if me == ScalarType::I1 {
            need(b.select(mk, zero, ninf))?
        } else if me.is_float() {
            need(b.cast(mk, elem))?
        } else {
            return Err(format!("the mask has element type {me}, not i1 or a float type"));
        };
        if ml < total {
            let mut ps = ms.clone();
            ps[ms.len() - 1] = total - ml;
            let n: u64 = ps.iter().product();
            let pad = b.constant(&ps, elem, &vec![f64::NEG_INFINITY; n as usize]);
            t = need(b.concat(&[t, pad], ms.len() - 1))?;
        }
        terms.push(t);
        may_mask_rows = true;
    }
    let np4 = match nonpad {
        Some(np) => {
            let ok = shape_of(b.m, np).as_deref() == Some(&[bsz][..])
                && b.m.value_type(np).elem().is_some_and(|e| e.is_int());
            if !ok {
                return Err(format!(
                    "nonpad_kv_seqlen must be an integer tensor of shape [{bsz}]"
                ));
            }
            let np = need(b.cast(np, ScalarType::I64))?;
            may_mask_rows = true;
            Some(b.reshape(np, &[bsz, 1, 1, 1]))
        }
        None => None,
    };
    // Key positions `j` as a [T] row: masks compare them with per-query limits, so their
    // constants grow with Sq + T, not Sq·T.
    let cols: Vec<f64> = (0..total).map(|j| j as f64).collect();
    let cols = b.constant(&[total], ScalarType::I64, &cols);
    if causal {
        // Query row i sees keys j <= i + offset: masked where i + offset < j. The offset is the
        // past length, or nonpad[b] − Sq (per batch, at run time) without a past.
        let rows = |b: &mut Builder, base: i64| {
            let vals: Vec<f64> = (0..sq as i64).map(|i| (i + base) as f64).collect();
            b.constant(&[sq, 1], ScalarType::I64, &vals)
        };
        let limit = match (past_len, np4) {
            (None, Some(np4)) => {
                let r = rows(&mut b, -(sq as i64));
                need(b.arith(graph::Add::NAME, np4, r))?
            }
            (p, _) => rows(&mut b, p.unwrap_or(0) as i64),
        };
        let masked = need(b.binary(graph::Less::NAME, limit, cols, ScalarType::I1))?;
        terms.push(need(b.select(masked, ninf, zero))?);
    }
    if let Some(np4) = np4 {
        // Keys at or after nonpad[b] are padding.
        let keep = need(b.binary(graph::Less::NAME, cols, np4, ScalarType::I1))?;
        terms.push(need(b.select(keep, zero, ninf))?);
    }
    let mut bias: Option<ValueId> = None;
    for t in terms {
        bias = Some(match bias {
            None => t,
            Some(prev) => need(b.arith(graph::Add::NAME, prev, t))?,
        });
    }
    let scores = match bias {
        Some(bv) => need(b.arith(graph::Add::NAME, qk, bv))?,
        None => qk,
    };
    let mut probs = b.unary(graph::Softmax::NAME, scores, vec![("axis", Attribute::i64(-1))]);
    if let (Some(bv), true) = (bias, may_mask_rows) {
        // A row the bias masks everywhere attends to nothing: zero probabilities.
        let mut rs = need(shape_of(b.m, bv))?;
        if let Some(l) = rs.last_mut() {
            *l = 1;
        }
        let rmax = b.op(
            graph::ReduceMax::NAME,
            &[bv],
            Type::tensor(&rs, elem),
            vec![
                ("axes", Attribute::DenseI64Array(vec![-1])),
                ("keepdims", Attribute::i64(1)),
            ],
        );
        let dead = need(b.binary(graph::Equal::NAME, rmax, ninf, ScalarType::I1))?;
        probs = need(b.select(dead, zero, probs))?;
    }
    let dv = vs[3];
    let mut y = b.op(
        graph::MatMul::NAME,
        &[probs, vr],
        Type::tensor(&[bsz, hq, sq, dv], elem),
        vec![],
    );
    if need(shape_of(b.m, q))?.len() == 3 {
        let t = need(b.transpose(y, &[0, 2, 1, 3]))?;
        y = b.reshape(t, &[bsz, sq, hq * dv]);
    }
    let qk_out = match mode {
        0 => raw,
        1 => qk,
        2 => scores,
        _ => probs,
    };
    let computed = [y, kt, vt, qk_out];
    // Check every used result before rewiring any.
    let mut plan = vec![];
    for (i, &r) in d.results.iter().enumerate() {
        if b.m.uses(r).is_empty() {
            continue;
        }
        let c = *computed
            .get(i)
            .ok_or_else(|| format!("it has {} results, at most 4 are defined", d.results.len()))?;
        let want = b.m.value_type(r).clone();
        let ws = need(want.as_tensor().and_then(|t| t.static_shape()))?;
        let we = need(want.elem())?;
        let got = need(shape_of(b.m, c))?;
        if got != ws {
            return Err(format!(
                "result #{i} has shape {ws:?}, the attention computes {got:?}"
            ));
        }
        plan.push((r, c, we));
    }
    for (r, c, we) in plan {
        let c = need(b.cast(c, we))?;
        b.m.replace_all_uses(r, c);
    }
    Ok(())
}
