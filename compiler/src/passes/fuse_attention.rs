//! `fuse-attention`: recognizes scaled dot-product attention from its structure and replaces it by
//! one `graph.fused_attention(q, k, v, mask?) {scale, causal}`.
//!
//! The match starts at every `graph.softmax` over the last axis whose only user is a
//! `graph.matmul(P, V)`. Walking back from the softmax input to a `graph.matmul(Q, Kᵀ)` it accepts,
//! in any order, scaling by a splat constant (`mul`/`div`), additive masks (`add` of any tensor)
//! and boolean masks (`where(cond, scores, fill)`, rewritten as the additive
//! `where(cond, 0, fill)`), and one logit soft-cap `b·tanh(a·S)` before any mask (Gemma-2:
//! `softcap = b`, `scale = a·b`; the ONNX `Attention` op's `softcap` too). `Kᵀ` is a transpose of the last two dims (or, failing that, gets one
//! added as a free view). Grouped-query attention is seen through the `unsqueeze → expand →
//! reshape` head broadcast of K and V: the fused op reads the un-broadcast KV heads.
//! A constant mask that is 0 on and below the (bottom-right aligned) diagonal and ≤ −1e30 above it
//! is dropped in favour of `causal = true`; other masks stay an operand. Heads flattened into the
//! batch (Bloom's `baddbmm`: `[B·H, S, T]` scores with an ALiBi bias, split into `[B, H, S, T]`
//! for the mask and softmax, merged again for P·V) are read as `[B, H, …]` views, 3-D mask terms
//! split the same way, and the result is merged back. The ONNX `Attention` op
//! with 4-D inputs and no cache inputs is converted the same way.
//!
//! Names and exporters play no part: only op kinds, shapes and constant values. The fused op's
//! location fuses every matched node's location.

use crate::dialects::graph;
use super::PassInfo;
use crate::backend::plan::{const_f64s, shape_of, splat_of};
use crate::ir::{Attribute, Location, Module, OpId, OpSpec, ScalarType, Type, ValueId};
use crate::pass::{Pass, PassError};

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "fuse-attention",
    description: "fuse softmax(Q·Kᵀ·scale + mask)·V (incl. GQA, causal masks, ONNX Attention) into graph.fused_attention",
    create: || Box::new(FuseAttention),
};

/// The pass.
pub struct FuseAttention;

impl Pass for FuseAttention {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        for op in m.walk_all() {
            if m.op(op).erased || m.op(op).parent.is_none() {
                continue;
            }
            match m.op(op).name.as_str() {
                graph::Softmax::NAME => {
                    let _ = fuse_softmax(m, op);
                }
                graph::Attention::NAME => {
                    let _ = fuse_onnx_attention(m, op);
                }
                _ => {}
            }
        }
        crate::passes::dce::erase_dead_ops(m);
        Ok(())
    }
}

/// Sees through the GQA head broadcast: `reshape(expand(unsqueeze(x)))` → `x`.
fn kv_source(m: &Module, v: ValueId) -> ValueId {
    let Some(r) = m.defining_op_named(v, graph::Reshape::NAME) else {
        return v;
    };
    let e_in = m.op(r).operands[0];
    let Some(e) = m.defining_op_named(e_in, graph::Expand::NAME) else {
        return v;
    };
    let u_in = m.op(e).operands[0];
    let Some(u) = m
        .defining_op(u_in)
        .filter(|&o| matches!(m.op(o).name.as_str(), graph::Unsqueeze::NAME | graph::Reshape::NAME))
    else {
        return v;
    };
    let x = m.op(u).operands[0];
    let (Some(xs), Some(us), Some(es), Some(rs)) = (
        shape_of(m, x),
        shape_of(m, u_in),
        shape_of(m, e_in),
        shape_of(m, v),
    ) else {
        return v;
    };
    // x [B, Hkv, S, D] → u [B, Hkv, 1, S, D] → e [B, Hkv, n, S, D] → r [B, Hkv·n, S, D]
    if xs.len() == 4
        && us.len() == 5
        && es.len() == 5
        && rs.len() == 4
        && us == [xs[0], xs[1], 1, xs[2], xs[3]]
        && es[..2] == us[..2]
        && es[3..] == us[3..]
        && rs == [xs[0], xs[1] * es[2], xs[2], xs[3]]
    {
        return x;
    }
    v
}

/// Is `mask` (constant, broadcast to `[.., sq, skv]`) exactly a bottom-right aligned causal mask?
fn is_causal_additive(m: &Module, mask: ValueId, sq: u64, skv: u64) -> bool {
    let (Some(vals), Some(shape)) = (const_f64s(m, mask), shape_of(m, mask)) else {
        return false;
    };
    let r = shape.len();
    if r < 2 || shape[r - 1] != skv || shape[r - 2] != sq {
        return false;
    }
    let off = skv.saturating_sub(sq) as usize;
    let per = (sq * skv) as usize;
    vals.chunks(per).all(|blk| {
        (0..sq as usize).all(|i| {
            (0..skv as usize).all(|j| {
                let v = blk[i * skv as usize + j];
                if j <= i + off { v == 0.0 } else { v <= -1e30 }
            })
        })
    })
}

fn is_causal_bool(m: &Module, cond: ValueId, fill: f64, sq: u64, skv: u64) -> bool {
    if fill > -1e30 {
        return false;
    }
    let (Some(vals), Some(shape)) = (const_f64s(m, cond), shape_of(m, cond)) else {
        return false;
    };
    let r = shape.len();
    if r < 2 || shape[r - 1] != skv || shape[r - 2] != sq {
        return false;
    }
    let off = skv.saturating_sub(sq) as usize;
    let per = (sq * skv) as usize;
    vals.chunks(per).all(|blk| {
        (0..sq as usize).all(|i| {
            (0..skv as usize).all(|j| (blk[i * skv as usize + j] != 0.0) == (j <= i + off))
        })
    })
}

enum Mask {
    Add(ValueId, f64),
    Where(ValueId, f64, f64),
}

fn new_op(m: &mut Module, before: OpId, spec: OpSpec) -> ValueId {
    let op = m.create_op(spec);
    m.insert_op_before(before, op);
    m.op(op).results[0]
}

fn scalar_const(m: &mut Module, before: OpId, v: f64, elem: ScalarType, loc: &Location) -> ValueId {
    let bytes: Vec<u8> = match elem {
        ScalarType::F64 => v.to_le_bytes().to_vec(),
        ScalarType::BF16 => half::bf16::from_f64(v).to_le_bytes().to_vec(),
        ScalarType::F16 => half::f16::from_f64(v).to_le_bytes().to_vec(),
        _ => (v as f32).to_le_bytes().to_vec(),
    };
    let ty = Type::tensor(&[], elem);
    let blob = m.blobs.add_auto("attn_const", std::sync::Arc::from(bytes));
    new_op(
        m,
        before,
        OpSpec::new(graph::Constant::NAME, loc.clone())
            .results(vec![ty.clone()])
            .attr(
                "value",
                Attribute::Dense(crate::ir::DenseAttr { ty, blob }),
            ),
    )
}

/// `(x, f)` when `v` is `x · f` or `x / (1/f)` for a constant splat `f`.
fn scalar_factor(m: &Module, v: ValueId) -> Option<(ValueId, f64)> {
    let op = m.defining_op(v)?;
    let d = m.op(op);
    let (a, b) = (d.operands[0], *d.operands.get(1)?);
    let same = |x: ValueId| m.value_type(x) == m.value_type(v);
    match d.name.as_str() {
        graph::Mul::NAME => match (splat_of(m, a), splat_of(m, b)) {
            (_, Some(f)) if same(a) => Some((a, f)),
            (Some(f), _) if same(b) => Some((b, f)),
            _ => None,
        },
        graph::Div::NAME if same(a) => splat_of(m, b).filter(|&f| f != 0.0).map(|f| (a, 1.0 / f)),
        _ => None,
    }
}

/// The guard torch's exporters put after a softmax whose rows may all be masked,
/// `where(not(equal(p, p)), 0, p)` (IsNaN imported as `not(equal(p, p))`): zero for the NaN a
/// row of −inf scores gives. Fused attention outputs 0 for such rows, so the guard folds into
/// it. Returns the `where` when `p`'s only uses are the guard's.
fn nan_guard(m: &Module, p: ValueId) -> Option<OpId> {
    let uses = m.uses(p);
    let eq = uses.iter().find(|(o, _)| m.op(*o).name == graph::Equal::NAME)?.0;
    if m.op(eq).operands[..] != [p, p] {
        return None;
    }
    let (not, _) = m.single_use(m.op(eq).results[0])?;
    if m.op(not).name != graph::Not::NAME {
        return None;
    }
    let (sel, slot) = m.single_use(m.op(not).results[0])?;
    let d = m.op(sel);
    if d.name != graph::Where::NAME || slot != 0 || d.operands[2] != p {
        return None;
    }
    if !const_f64s(m, d.operands[1])?.iter().all(|&v| v == 0.0) {
        return None;
    }
    uses.iter()
        .all(|&(o, _)| o == eq || o == sel)
        .then_some(sel)
}

fn fuse_softmax(m: &mut Module, sm: OpId) -> Option<()> {
    let x = m.op(sm).operands[0];
    let xs = shape_of(m, x)?;
    let rank = xs.len() as i64;
    let ax = m.attr(sm, "axis").and_then(Attribute::as_int).unwrap_or(-1);
    if ax != -1 && ax != rank - 1 {
        return None;
    }
    let probs = m.op(sm).results[0];
    let (mut pv, slot) = match nan_guard(m, probs) {
        Some(guard) => m.single_use(m.op(guard).results[0])?,
        None => m.single_use(probs)?,
    };
    // Heads flattened into the batch (Bloom: `[B·H, S, T]` probabilities): the reshape that
    // merges them feeds the P·V matmul.
    let mut merged_out: Option<OpId> = None;
    if m.op(pv).name == graph::Reshape::NAME && slot == 0 && merges_heads(m, pv) {
        let (next, s2) = m.single_use(m.op(pv).results[0])?;
        if s2 != 0 {
            return None;
        }
        merged_out = Some(pv);
        pv = next;
    }
    if m.op(pv).name != graph::MatMul::NAME || slot != 0 {
        return None;
    }
    let v = m.op(pv).operands[1];
    // Walk back to Q·Kᵀ, collecting scale and masks in dataflow order.
    let mut chain: Vec<OpId> = vec![];
    let mut cur = x;
    let qk = loop {
        let op = m.defining_op(cur)?;
        m.single_use(cur)?;
        let d = m.op(op);
        match d.name.as_str() {
            graph::MatMul::NAME => break op,
            graph::Mul::NAME | graph::Div::NAME | graph::Add::NAME | graph::Sub::NAME | graph::Cast::NAME => {
                chain.push(op);
                let (a, b) = (d.operands[0], *d.operands.get(1).unwrap_or(&d.operands[0]));
                cur = if d.name == graph::Cast::NAME || reaches_matmul(m, a, 8) {
                    a
                } else if matches!(d.name.as_str(), graph::Mul::NAME | graph::Add::NAME)
                    && reaches_matmul(m, b, 8)
                {
                    b
                } else {
                    return None;
                };
            }
            graph::Where::NAME => {
                chain.push(op);
                cur = d.operands[1];
            }
            graph::Tanh::NAME => {
                chain.push(op);
                cur = d.operands[0];
            }
            graph::Reshape::NAME if merges_heads(m, op) => return None,
            graph::Reshape::NAME if splits_heads(m, op) && !chain.iter().any(|&o| m.op(o).name == graph::Reshape::NAME) => {
                chain.push(op);
                cur = d.operands[0];
            }
            _ => return None,
        }
    };
    chain.reverse();
    // `[B, H]` of heads flattened into the batch dim before the softmax (Bloom's `baddbmm`).
    let heads_split: Option<(u64, u64)> = chain
        .iter()
        .find(|&&o| m.op(o).name == graph::Reshape::NAME)
        .and_then(|&o| shape_of(m, m.op(o).results[0]))
        .map(|s| (s[0], s[1]));
    let (mut q, mut kt) = (m.op(qk).operands[0], m.op(qk).operands[1]);
    let mut v = v;
    if let Some((b, h)) = heads_split {
        // Q·Kᵀ and P·V over `[B·H, …]`: read their `[B, H, …]` sources (a view).
        merged_out?;
        let ks = shape_of(m, kt)?;
        if ks.len() != 3 {
            return None;
        }
        let k3 = match m.defining_op_named(kt, graph::Transpose::NAME) {
            Some(t) if crate::dialects::graph::Transpose(t).perm(m) == [0, 2, 1] => m.op(t).operands[0],
            _ => new_op(
                m,
                pv,
                OpSpec::new(graph::Transpose::NAME, m.op(qk).loc.clone())
                    .operands(&[kt])
                    .results(vec![Type::tensor(&[ks[0], ks[2], ks[1]], m.value_type(kt).elem()?)])
                    .attr("perm", Attribute::DenseI64Array(vec![0, 2, 1])),
            ),
        };
        q = unflatten_heads(m, pv, q, b, h)?;
        let k4 = unflatten_heads(m, pv, k3, b, h)?;
        let k4s = shape_of(m, k4)?;
        kt = new_op(
            m,
            pv,
            OpSpec::new(graph::Transpose::NAME, m.op(qk).loc.clone())
                .operands(&[k4])
                .results(vec![Type::tensor(&[k4s[0], k4s[1], k4s[3], k4s[2]], m.value_type(k4).elem()?)])
                .attr("perm", Attribute::DenseI64Array(vec![0, 1, 3, 2])),
        );
        v = unflatten_heads(m, pv, v, b, h)?;
    } else if merged_out.is_some() {
        return None;
    }
    let qs = shape_of(m, q)?;
    let vs = shape_of(m, v)?;
    let kts = shape_of(m, kt)?;
    if qs.len() != 4 || kts.len() != 4 || vs.len() != 4 {
        return None;
    }
    let (sq, skv) = (qs[2], kts[3]);
    let mut scale = 1.0f64;
    // Logit soft-capping `b·tanh(a·S)` (Gemma-2): the factor inside the tanh, once one is passed.
    let mut inner: Option<f64> = None;
    let mut masks: Vec<Mask> = vec![];
    for &op in &chain {
        let d = m.op(op).clone();
        let other = |i: usize| d.operands.get(i).copied();
        match d.name.as_str() {
            graph::Cast::NAME | graph::Reshape::NAME => {}
            graph::Tanh::NAME => {
                if inner.is_some() || !masks.is_empty() {
                    return None;
                }
                inner = Some(scale);
                scale = 1.0;
            }
            graph::Mul::NAME | graph::Div::NAME => {
                let c = if chain_contains(m, &chain, qk, d.operands[0]) {
                    other(1)?
                } else {
                    other(0)?
                };
                let s = splat_of(m, c)?;
                let f = if d.name == graph::Mul::NAME { s } else { 1.0 / s };
                scale *= f;
                for mk in masks.iter_mut() {
                    match mk {
                        Mask::Add(_, k) | Mask::Where(_, _, k) => *k *= f,
                    }
                }
            }
            graph::Add::NAME => {
                let mv = if chain_contains(m, &chain, qk, d.operands[0]) {
                    other(1)?
                } else {
                    other(0)?
                };
                masks.push(Mask::Add(mv, 1.0));
            }
            graph::Sub::NAME => {
                let mv = other(1)?;
                masks.push(Mask::Add(mv, -1.0));
            }
            graph::Where::NAME => {
                let fill = splat_of(m, other(2)?)?;
                masks.push(Mask::Where(other(0)?, fill, 1.0));
            }
            _ => return None,
        }
    }
    // Constant factors on Q and on Kᵀ before the product (torch's SDPA export multiplies each by
    // √scale) fold into the scale, so K is read from the cache as it is.
    for operand in [&mut q, &mut kt] {
        while let Some((x, f)) = scalar_factor(m, *operand) {
            *operand = x;
            match inner.as_mut() {
                Some(i) => *i *= f,
                None => scale *= f,
            }
        }
    }
    // K from Kᵀ.
    let loc_ops: Vec<OpId> = {
        let mut v = vec![qk];
        v.extend(&chain);
        v.push(sm);
        v.push(pv);
        v
    };
    let k = match m.defining_op_named(kt, graph::Transpose::NAME) {
        Some(t) if crate::dialects::graph::Transpose(t).perm(m) == [0, 1, 3, 2] => {
            m.op(t).operands[0]
        }
        _ => {
            let ks = vec![kts[0], kts[1], kts[3], kts[2]];
            let elem = m.value_type(kt).elem()?;
            new_op(
                m,
                pv,
                OpSpec::new(graph::Transpose::NAME, m.op(qk).loc.clone())
                    .operands(&[kt])
                    .results(vec![Type::tensor(&ks, elem)])
                    .attr("perm", Attribute::DenseI64Array(vec![0, 1, 3, 2])),
            )
        }
    };
    let k = kv_source(m, k);
    let v = kv_source(m, v);
    let locs: Vec<Location> = loc_ops.iter().map(|&o| m.op(o).loc.clone()).collect();
    let loc = Location::fuse(locs.iter());
    // Masks: causal ones become the flag, the rest one additive tensor.
    let mut causal = false;
    let elem = m.value_type(x).elem()?;
    let mut additive: Option<ValueId> = None;
    for mk in masks {
        let term = match mk {
            Mask::Add(mv, f) => {
                if f == 1.0 && is_causal_additive(m, mv, sq, skv) {
                    causal = true;
                    continue;
                }
                let me = m.value_type(mv).elem()?;
                if me != elem {
                    return None;
                }
                if f == 1.0 {
                    mv
                } else {
                    let c = scalar_const(m, pv, f, elem, &loc);
                    let ty = m.value_type(mv).clone();
                    new_op(
                        m,
                        pv,
                        OpSpec::new(graph::Mul::NAME, loc.clone())
                            .operands(&[mv, c])
                            .results(vec![ty]),
                    )
                }
            }
            Mask::Where(cond, fill, f) => {
                if f > 0.0 && is_causal_bool(m, cond, fill, sq, skv) {
                    causal = true;
                    continue;
                }
                let zero = scalar_const(m, pv, 0.0, elem, &loc);
                let fillv = scalar_const(m, pv, fill * f, elem, &loc);
                let cs = shape_of(m, cond)?;
                new_op(
                    m,
                    pv,
                    OpSpec::new(graph::Where::NAME, loc.clone())
                        .operands(&[cond, zero, fillv])
                        .results(vec![Type::tensor(&cs, elem)]),
                )
            }
        };
        let term = match heads_split {
            Some((b, h)) if shape_of(m, term)?.len() == 3 => unflatten_heads(m, pv, term, b, h)?,
            _ => term,
        };
        additive = Some(match additive {
            None => term,
            Some(prev) => {
                let (a, b) = (shape_of(m, prev)?, shape_of(m, term)?);
                let dims = crate::dialects::graph::broadcast_dims(
                    &Type::tensor(&a, elem).as_tensor()?.dims,
                    &Type::tensor(&b, elem).as_tensor()?.dims,
                )
                .ok()?;
                let ty = Type::Tensor(crate::ir::TensorType { dims, elem });
                new_op(
                    m,
                    pv,
                    OpSpec::new(graph::Add::NAME, loc.clone())
                        .operands(&[prev, term])
                        .results(vec![ty]),
                )
            }
        });
    }
    let mut operands = vec![q, k, v];
    if let Some(a) = additive {
        operands.push(a);
    }
    let out_ty = if merged_out.is_some() {
        Type::tensor(&[qs[0], qs[1], qs[2], vs[3]], m.value_type(m.op(pv).results[0]).elem()?)
    } else {
        m.value_type(m.op(pv).results[0]).clone()
    };
    // `b·tanh(a·S)` is `softcap·tanh(scale·S / softcap)` with `softcap = b`, `scale = a·b`.
    let (scale, softcap) = match inner {
        None => (scale, None),
        Some(a) if scale > 0.0 => (a * scale, Some(scale)),
        Some(_) => return None,
    };
    let mut spec = OpSpec::new(graph::FusedAttention::NAME, loc)
        .operands(&operands)
        .results(vec![out_ty])
        .attr("causal", Attribute::Bool(causal))
        .attr("scale", Attribute::f32(scale as f32));
    if let Some(c) = softcap {
        spec = spec.attr("softcap", Attribute::f32(c as f32));
    }
    let fused = new_op(m, pv, spec);
    let old = m.op(pv).results[0];
    let fused = if merged_out.is_some() {
        let os = shape_of(m, old)?;
        let elem = m.value_type(old).elem()?;
        let shape = shape_const(m, pv, &os);
        new_op(
            m,
            pv,
            OpSpec::new(graph::Reshape::NAME, m.op(pv).loc.clone())
                .operands(&[fused, shape])
                .results(vec![Type::tensor(&os, elem)]),
        )
    } else {
        fused
    };
    m.replace_all_uses(old, fused);
    Some(())
}

/// Is `op` a reshape `[B, H, S, T] → [B·H, S, T]` (heads merged into the batch)?
fn merges_heads(m: &Module, op: OpId) -> bool {
    let (Some(i), Some(o)) = (
        shape_of(m, m.op(op).operands[0]),
        shape_of(m, m.op(op).results[0]),
    ) else {
        return false;
    };
    m.op(op).name == graph::Reshape::NAME && i.len() == 4 && o.len() == 3 && o[0] == i[0] * i[1] && o[1..] == i[2..]
}

/// Is `op` a reshape `[B·H, S, T] → [B, H, S, T]` (heads split out of the batch)?
fn splits_heads(m: &Module, op: OpId) -> bool {
    let (Some(i), Some(o)) = (
        shape_of(m, m.op(op).operands[0]),
        shape_of(m, m.op(op).results[0]),
    ) else {
        return false;
    };
    i.len() == 3 && o.len() == 4 && i[0] == o[0] * o[1] && i[1..] == o[2..]
}

/// `x` (`[B·H, S, D]`, or `[1, S, D]` broadcast over both) as `[B, H, S, D]` (`[1, 1, S, D]`):
/// the 4-D source of a reshape that flattened it, or a new reshape.
fn unflatten_heads(m: &mut Module, before: OpId, x: ValueId, b: u64, h: u64) -> Option<ValueId> {
    let xs = shape_of(m, x)?;
    if xs.len() != 3 {
        return None;
    }
    let want: Vec<u64> = match xs[0] {
        n if n == b * h => vec![b, h, xs[1], xs[2]],
        1 => vec![1, 1, xs[1], xs[2]],
        _ => return None,
    };
    if let Some(r) = m.defining_op_named(x, graph::Reshape::NAME) {
        let src = m.op(r).operands[0];
        if shape_of(m, src)? == want {
            return Some(src);
        }
    }
    let elem = m.value_type(x).elem()?;
    let loc = m.op(before).loc.clone();
    let shape = shape_const(m, before, &want);
    Some(new_op(
        m,
        before,
        OpSpec::new(graph::Reshape::NAME, loc)
            .operands(&[x, shape])
            .results(vec![Type::tensor(&want, elem)]),
    ))
}


/// An `i64` shape constant located at `before`.
fn shape_const(m: &mut Module, before: OpId, dims: &[u64]) -> ValueId {
    let v = dims.iter().map(|&d| d as i64).collect();
    crate::passes::fold_constants::insert_i64s(m, before, "shape", vec![dims.len()], v)
}

fn reaches_matmul(m: &Module, v: ValueId, depth: usize) -> bool {
    let Some(op) = m.defining_op(v) else {
        return false;
    };
    let d = m.op(op);
    match d.name.as_str() {
        graph::MatMul::NAME => true,
        graph::Mul::NAME | graph::Div::NAME | graph::Add::NAME | graph::Sub::NAME | graph::Cast::NAME if depth > 0 => {
            d.operands.iter().any(|&x| reaches_matmul(m, x, depth - 1))
        }
        graph::Where::NAME if depth > 0 => reaches_matmul(m, d.operands[1], depth - 1),
        graph::Tanh::NAME if depth > 0 => reaches_matmul(m, d.operands[0], depth - 1),
        graph::Reshape::NAME if depth > 0 && splits_heads(m, op) => reaches_matmul(m, d.operands[0], depth - 1),
        _ => false,
    }
}

fn chain_contains(m: &Module, chain: &[OpId], qk: OpId, v: ValueId) -> bool {
    m.defining_op(v)
        .is_some_and(|o| o == qk || chain.contains(&o))
}

fn fuse_onnx_attention(m: &mut Module, op: OpId) -> Option<()> {
    let d = m.op(op).clone();
    if d.operands.len() > 4 || d.results.len() != 1 {
        return None;
    }
    let (q, k, v) = (d.operands[0], d.operands[1], d.operands[2]);
    let (qs, ks) = (shape_of(m, q)?, shape_of(m, k)?);
    if qs.len() != 4 || ks.len() != 4 {
        return None;
    }
    let scale = m
        .attr(op, "scale")
        .and_then(Attribute::as_f64)
        .unwrap_or(1.0 / (qs[3] as f64).sqrt());
    let causal = m.attr(op, "is_causal").and_then(Attribute::as_int) == Some(1);
    let softcap = m.attr(op, "softcap").and_then(Attribute::as_f64).unwrap_or(0.0);
    if softcap < 0.0 {
        return None;
    }
    let elem = m.value_type(q).elem()?;
    let mut operands = vec![q, k, v];
    if let Some(&mask) = d.operands.get(3) {
        let me = m.value_type(mask).elem()?;
        if me == ScalarType::I1 {
            let zero = scalar_const(m, op, 0.0, elem, &d.loc);
            let ninf = scalar_const(m, op, f64::NEG_INFINITY, elem, &d.loc);
            let ms = shape_of(m, mask)?;
            operands.push(new_op(
                m,
                op,
                OpSpec::new(graph::Where::NAME, d.loc.clone())
                    .operands(&[mask, zero, ninf])
                    .results(vec![Type::tensor(&ms, elem)]),
            ));
        } else if me == elem {
            operands.push(mask);
        } else {
            return None;
        }
    }
    let out_ty = m.value_type(d.results[0]).clone();
    let mut spec = OpSpec::new(graph::FusedAttention::NAME, d.loc.clone())
        .operands(&operands)
        .results(vec![out_ty])
        .attr("causal", Attribute::Bool(causal))
        .attr("causal_top_left", Attribute::Bool(true))
        .attr("scale", Attribute::f32(scale as f32));
    if softcap > 0.0 {
        spec = spec.attr("softcap", Attribute::f32(softcap as f32));
    }
    let fused = new_op(m, op, spec);
    m.replace_all_uses(d.results[0], fused);
    Some(())
}
