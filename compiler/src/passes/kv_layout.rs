//! `kv-layout`: in a decode graph, the KV cache becomes one persistent, paged region in HBM.
//!
//! A cache is recognized structurally, not by name: a `graph.concat` along the sequence axis
//! (axis 2 of a rank-4 `[batch, kv_heads, seq, head_dim]` tensor) of a function argument (the
//! past, possibly behind single-operand concats or identities) and a freshly computed K or V, whose
//! result is returned (the present) and otherwise only read by `graph.fused_attention`. Each such
//! concat becomes `graph.kv_append(%past, %new) {slot = i}`: the kernel writes only the new
//! tokens into the paged region, in place, and attention reads K/V through the block table.
//! The function gets `llmpu.kv = {block_tokens, batch, max_blocks, num_blocks, past_len,
//! new_tokens}`; `plan-memory` places the region (`spec/kv-cache.md`). Graphs without such a
//! pattern, or whose caches disagree on batch or lengths, are left unchanged.
//!
//! The pool size is `batch · max_blocks` physical blocks unless the module carries the attribute
//! [`KV_BLOCKS_ATTR`] (`llmpu compile --kv-blocks N`): then every slot's pool holds `N` blocks
//! (`N ≥ 1`) while the block table keeps `max_blocks` columns per sequence, so a serving host can
//! share one pool of any size among the batch's sequences (`spec/serving.md`).

use crate::dialects::graph;
use super::PassInfo;
use crate::backend::options;
use crate::backend::plan::shape_of;
use crate::ir::{Attribute, Module, OpId, OpSpec, ScalarType, Type, ValueDef, ValueId};
use crate::pass::{Pass, PassError};

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "kv-layout",
    description: "past/present KV caches of decode graphs become one paged, in-place KV region",
    create: || Box::new(KvLayout),
};

/// Function attribute describing the paged KV region.
pub const KV_ATTR: &str = "llmpu.kv";

/// Module attribute (i64 ≥ 1) overriding the number of physical blocks in every slot's pool.
pub const KV_BLOCKS_ATTR: &str = "llmpu.kv_blocks";

/// The pass.
pub struct KvLayout;

impl Pass for KvLayout {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        let block_tokens = options(m)
            .map(|o| o.target.kv.block_tokens.max(1) as i64)
            .unwrap_or(16);
        let top = m.top();
        let pool = match m.attr(top, KV_BLOCKS_ATTR) {
            None => None,
            Some(a) => match a.as_int() {
                Some(n) if n >= 1 => Some(n as u64),
                _ => {
                    return Err(PassError::failed(
                        INFO.name,
                        m.op(top).loc.clone(),
                        format!("module attribute `{KV_BLOCKS_ATTR}` must be an integer ≥ 1"),
                    ));
                }
            },
        };
        for f in m.functions() {
            rewrite(m, f, block_tokens, pool);
        }
        crate::passes::dce::erase_dead_ops(m);
        Ok(())
    }
}

/// Follows single-operand concats and identities back to their source.
fn look_through(m: &Module, mut v: ValueId) -> ValueId {
    while let Some(op) = m.defining_op(v) {
        let d = m.op(op);
        let pass = (d.name == graph::Concat::NAME || d.name == graph::Identity::NAME) && d.operands.len() == 1;
        if !pass {
            break;
        }
        v = d.operands[0];
    }
    v
}

/// Every use of `v`, looking through single-operand concats / identities, lands on `target`.
fn only_feeds(m: &Module, v: ValueId, target: OpId) -> bool {
    m.uses(v).iter().all(|&(u, _)| {
        if u == target {
            return true;
        }
        let d = m.op(u);
        (d.name == graph::Concat::NAME || d.name == graph::Identity::NAME)
            && d.operands.len() == 1
            && only_feeds(m, d.results[0], target)
    })
}

struct Cand {
    op: OpId,
    past: ValueId,
    new: ValueId,
    past_shape: Vec<u64>,
    new_shape: Vec<u64>,
}

fn candidate(m: &Module, op: OpId, entry: crate::ir::BlockId, ret: OpId) -> Option<Cand> {
    let d = m.op(op);
    if d.name != graph::Concat::NAME || d.operands.len() != 2 {
        return None;
    }
    let past_shape = shape_of(m, d.operands[0])?;
    let new_shape = shape_of(m, d.operands[1])?;
    if past_shape.len() != 4 || new_shape.len() != 4 {
        return None;
    }
    let mut axis = m.attr(op, "axis").and_then(Attribute::as_int)?;
    if axis < 0 {
        axis += 4;
    }
    if axis != 2 {
        return None;
    }
    let past = look_through(m, d.operands[0]);
    if !matches!(m.value(past).def, ValueDef::BlockArg(b, _) if b == entry) {
        return None;
    }
    if !only_feeds(m, past, op) || past_shape[3] != new_shape[3] {
        return None;
    }
    let r = d.results[0];
    let mut returned = 0;
    for (u, _) in m.uses(r) {
        match m.op(u).name.as_str() {
            "func.return" if u == ret => returned += 1,
            graph::FusedAttention::NAME => {}
            _ => return None,
        }
    }
    (returned == 1).then_some(Cand {
        op,
        past,
        new: d.operands[1],
        past_shape,
        new_shape,
    })
}

fn rewrite(m: &mut Module, f: OpId, block_tokens: i64, pool: Option<u64>) {
    let Some(entry) = m.entry_block(f) else {
        return;
    };
    let ops = m.block(entry).ops.clone();
    let Some(&ret) = ops.last() else {
        return;
    };
    let cands: Vec<Cand> = ops
        .iter()
        .filter_map(|&op| candidate(m, op, entry, ret))
        .collect();
    let Some(first) = cands.first() else {
        return;
    };
    let (batch, past_len, new) = (
        first.past_shape[0],
        first.past_shape[2],
        first.new_shape[2],
    );
    if cands.iter().any(|c| {
        c.past_shape[0] != batch
            || c.new_shape[0] != batch
            || c.past_shape[2] != past_len
            || c.new_shape[2] != new
            || c.past_shape[1] != c.new_shape[1]
    }) {
        return;
    }
    let bt = block_tokens as u64;
    let max_blocks = (past_len + new).div_ceil(bt).max(1);
    for (slot, c) in cands.iter().enumerate() {
        let op = c.op;
        m.op_mut(op).name = graph::KvAppend::NAME.into();
        m.op_mut(op).operands = vec![c.past, c.new];
        m.set_attr(op, "axis", Attribute::i64(2));
        m.set_attr(op, "slot", Attribute::i64(slot as i64));
    }
    align_masks(m, entry, &cands, batch, past_len + new);
    let i = |x: u64| Attribute::i64(x as i64);
    m.set_attr(
        f,
        KV_ATTR,
        Attribute::Dict(vec![
            ("batch".into(), i(batch)),
            ("block_tokens".into(), i(bt)),
            ("max_blocks".into(), i(max_blocks)),
            ("new_tokens".into(), i(new)),
            ("num_blocks".into(), i(pool.unwrap_or(batch * max_blocks))),
            ("past_len".into(), i(past_len)),
        ]),
    );
}

/// Re-indexes the mask of every attention over the paged caches from the graph's key positions
/// to the region's slots with a `graph.kv_mask` (one per mask value), so that a mask computed from
/// the compiled lengths (a causal or sliding-window band folded from the past's shape) holds for
/// every live length (`spec/kv-cache.md`). A `causal` attribute becomes part of the mask first
/// (its diagonal is at the compiled past, which is not a slot once the shift applies), and an
/// attention without a mask gets one, so that the slots past a sequence's tokens are masked.
fn align_masks(m: &mut Module, entry: crate::ir::BlockId, cands: &[Cand], batch: u64, skv: u64) {
    let presents: Vec<ValueId> = cands.iter().map(|c| m.op(c.op).results[0]).collect();
    let mut aligned: Vec<(Option<ValueId>, u64, bool, ValueId)> = vec![];
    for op in m.block(entry).ops.clone() {
        let d = m.op(op);
        if d.name != graph::FusedAttention::NAME || d.operands.len() < 3 || d.operands.len() > 4 {
            continue;
        }
        if !d.operands[1..3].iter().any(|v| presents.contains(v)) {
            continue;
        }
        let (Some(qs), Some(elem)) = (shape_of(m, d.operands[0]), m.value_type(d.operands[0]).elem())
        else {
            continue;
        };
        let sq = qs.get(qs.len().wrapping_sub(2)).copied().unwrap_or(1);
        let mask = d.operands.get(3).copied();
        if let Some(mk) = mask
            && (shape_of(m, mk).is_none_or(|s| s.len() > 4) || m.value_type(mk).elem() != Some(elem))
        {
            continue;
        }
        let top_left = m.attr(op, "causal_top_left").and_then(Attribute::as_bool) == Some(true);
        let off = if top_left { 0 } else { skv.saturating_sub(sq) };
        // Causal matters only where some query's diagonal falls before the last key.
        let causal = m.attr(op, "causal").and_then(Attribute::as_bool) == Some(true) && off + 1 < skv;
        let loc = d.loc.clone();
        let key = (mask, sq, causal);
        let r = match aligned.iter().find(|a| (a.0, a.1, a.2) == key) {
            Some(a) => a.3,
            None => {
                let band = causal.then(|| {
                    let vals: Vec<f64> = (0..sq)
                        .flat_map(|i| (0..skv).map(move |j| if j <= off + i { 0.0 } else { f64::NEG_INFINITY }))
                        .collect();
                    const_tensor(m, op, &[1, 1, sq, skv], elem, &vals, &loc)
                });
                let full = match (mask, band) {
                    (Some(mk), None) => mk,
                    (None, Some(b)) => b,
                    (None, None) => const_tensor(m, op, &[1, 1, 1, skv], elem, &vec![0.0; skv as usize], &loc),
                    (Some(mk), Some(b)) => {
                        let ms = shape_of(m, mk).unwrap_or_default();
                        let mut p = vec![1; 4 - ms.len()];
                        p.extend(&ms);
                        let shape = [p[0], p[1], p[2].max(sq), skv];
                        let add = m.create_op(
                            OpSpec::new(graph::Add::NAME, loc.clone())
                                .operands(&[mk, b])
                                .results(vec![Type::tensor(&shape, elem)]),
                        );
                        m.insert_op_before(op, add);
                        m.op(add).results[0]
                    }
                };
                let fs = shape_of(m, full).unwrap_or_default();
                let mut p = vec![1; 4 - fs.len()];
                p.extend(&fs);
                let shape = [batch, p[1], p[2], skv];
                let k = m.create_op(
                    OpSpec::new(graph::KvMask::NAME, loc)
                        .operands(&[full])
                        .results(vec![Type::tensor(&shape, elem)])
                        .attr("batch", Attribute::i64(batch as i64)),
                );
                m.insert_op_before(op, k);
                let r = m.op(k).results[0];
                aligned.push((mask, sq, causal, r));
                r
            }
        };
        let d = m.op_mut(op);
        d.operands.truncate(3);
        d.operands.push(r);
        m.set_attr(op, "causal", Attribute::Bool(false));
    }
}

/// A `graph.constant` of `shape` holding `vals` (row-major) in `elem`, inserted before `before`.
fn const_tensor(
    m: &mut Module,
    before: OpId,
    shape: &[u64],
    elem: ScalarType,
    vals: &[f64],
    loc: &crate::ir::Location,
) -> ValueId {
    let bytes: Vec<u8> = vals
        .iter()
        .flat_map(|&v| match elem {
            ScalarType::BF16 => half::bf16::from_f64(v).to_le_bytes().to_vec(),
            ScalarType::F16 => half::f16::from_f64(v).to_le_bytes().to_vec(),
            ScalarType::F64 => v.to_le_bytes().to_vec(),
            _ => (v as f32).to_le_bytes().to_vec(),
        })
        .collect();
    let ty = Type::tensor(shape, elem);
    let blob = m.blobs.add_auto("kv_mask", std::sync::Arc::from(bytes));
    let c = m.create_op(
        OpSpec::new(graph::Constant::NAME, loc.clone())
            .results(vec![ty.clone()])
            .attr("value", Attribute::Dense(crate::ir::DenseAttr { ty, blob })),
    );
    m.insert_op_before(before, c);
    m.op(c).results[0]
}

/// The `llmpu.kv` attribute of `f` as `(batch, block_tokens, max_blocks, num_blocks, past_len,
/// new_tokens)`.
pub fn kv_params(m: &Module, f: OpId) -> Option<[u64; 6]> {
    let Some(Attribute::Dict(d)) = m.attr(f, KV_ATTR) else {
        return None;
    };
    let get = |k: &str| {
        d.iter()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.as_int())
            .and_then(|x| u64::try_from(x).ok())
    };
    Some([
        get("batch")?,
        get("block_tokens")?,
        get("max_blocks")?,
        get("num_blocks")?,
        get("past_len")?,
        get("new_tokens")?,
    ])
}
