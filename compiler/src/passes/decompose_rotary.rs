//! `decompose-rotary`: the ONNX `RotaryEmbedding` op (`graph.rotary_embedding`) becomes the
//! backend's `graph.rope` plus layout ops:
//!
//! ```text
//! x          4-D [B, H, S, D] as is; 3-D [B, S, H·D] → reshape [B, S, H, D]
//! cos, sin   gather(cache [P, R/2], position_ids [B, S]) → [B, S, R/2] (without position_ids the
//!            caches are already [B, S, R/2]); concat(c, c) → [B, S, R]; reshape to broadcast over
//!            the heads ([B, 1, S, R] or [B, S, 1, R])
//! rotate     graph.rope(x, cos, sin) {rotary_dim = R when R < D}: the first R elements of the last
//!            axis rotate in halves (x₁·c − x₂·s, x₁·s + x₂·c), the rest pass through
//! interleaved the pairs are (2j, 2j+1) instead of (j, j+R/2): the rotated part is de-interleaved
//!            ([.., R] → [.., R/2, 2] → transpose → [.., 2, R/2] → [.., R]) before the rope and
//!            interleaved back after it
//! ```
//!
//! `R` is `rotary_embedding_dim` (0 means the whole head). Semantics follow the reference
//! interpreter (`crate::interp`), the oracle. Invariants: after the pass no
//! `graph.rotary_embedding` is left; shapes must be static and `R` even and at most the head size,
//! and an op this pass cannot express fails the pass with the reason, at the op's location. Every
//! created op carries the rotary op's location.

use super::PassInfo;
use super::decompose_attention::{Builder, Why, need, refuse};
use crate::backend::plan::{operand_at, shape_of};
use crate::dialects::graph;
use crate::ir::{Attribute, Module, OpId, Type, ValueId};
use crate::pass::{Pass, PassError};

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "decompose-rotary",
    description: "rewrite ONNX RotaryEmbedding (graph.rotary_embedding) into graph.rope with position gathers and layout ops",
    create: || Box::new(DecomposeRotary),
};

/// The pass.
pub struct DecomposeRotary;

impl Pass for DecomposeRotary {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn run(&mut self, m: &mut Module) -> Result<(), PassError> {
        for op in m.walk_all() {
            if m.op(op).erased || m.op(op).parent.is_none() {
                continue;
            }
            if m.op(op).name == graph::RotaryEmbedding::NAME
                && let Err(why) = decompose(m, op)
            {
                crate::passes::dce::erase_dead_ops(m);
                let loc = m.op(op).loc.clone();
                return Err(refuse(INFO.name, graph::RotaryEmbedding::NAME, &loc, why));
            }
        }
        crate::passes::dce::erase_dead_ops(m);
        Ok(())
    }
}

/// The `[B, S, R/2]` cos or sin values of every position (`B` may be 1 with position ids of one
/// row): the cache gathered by the position ids, or the cache itself when there are none.
fn per_position(
    b: &mut Builder,
    cache: ValueId,
    pos: Option<ValueId>,
    (batch, seq, half): (u64, u64, u64),
) -> Result<ValueId, Why> {
    let cs = need(shape_of(b.m, cache))?;
    match pos {
        Some(p) => {
            let ps = need(shape_of(b.m, p))?;
            let fits = cs.len() == 2
                && cs[1] == half
                && ps.len() == 2
                && ps[1] == seq
                && (ps[0] == batch || ps[0] == 1);
            if !fits {
                return Err(format!(
                    "a cos/sin cache {cs:?} with position ids {ps:?} does not give [{batch}, {seq}, {half}]"
                ));
            }
            if !b.m.value_type(p).elem().is_some_and(|e| e.is_int()) {
                return Err("position ids must be integers".into());
            }
            let e = need(b.m.value_type(cache).elem())?;
            Ok(b.op(
                graph::Gather::NAME,
                &[cache, p],
                Type::tensor(&[ps[0], seq, half], e),
                vec![("axis", Attribute::i64(0))],
            ))
        }
        None if cs == [batch, seq, half] => Ok(cache),
        None => Err(format!(
            "without position ids the cos/sin caches must be [{batch}, {seq}, {half}], got {cs:?}"
        )),
    }
}

fn decompose(m: &mut Module, op: OpId) -> Result<(), Why> {
    let d = m.op(op).clone();
    let x = operand_at(m, op, 0).ok_or("it has no input")?;
    let cos = operand_at(m, op, 1).ok_or("it has no cos cache")?;
    let sin = operand_at(m, op, 2).ok_or("it has no sin cache")?;
    let pos = operand_at(m, op, 3);
    let int = |k: &str| m.attr(op, k).and_then(Attribute::as_int).unwrap_or(0);
    let interleaved = int("interleaved") != 0;
    let heads = int("num_heads");
    let rd_attr = int("rotary_embedding_dim");
    let xs = need(shape_of(m, x))?;
    let elem = need(m.value_type(x).elem())?;
    if !elem.is_float() {
        return Err(format!("the input has the non-float element type {elem}"));
    }
    let mut b = Builder {
        m,
        at: op,
        loc: d.loc.clone(),
    };
    // x as 4-D, and where the sequence axis is.
    let (x4, seq_axis) = match xs.len() {
        4 => (x, 2),
        3 => {
            let h = u64::try_from(heads)
                .ok()
                .filter(|&h| h > 0 && xs[2] % h == 0)
                .ok_or_else(|| {
                    format!(
                        "a 3-D input of hidden size {} needs num_heads dividing it, got {heads}",
                        xs[2]
                    )
                })?;
            (b.reshape(x, &[xs[0], xs[1], h, xs[2] / h]), 1)
        }
        r => return Err(format!("the input must be 3-D or 4-D, got rank {r}")),
    };
    let s4 = need(shape_of(b.m, x4))?;
    let (batch, seq, dh) = (s4[0], s4[seq_axis], s4[3]);
    let rd = if rd_attr == 0 {
        dh
    } else {
        u64::try_from(rd_attr).unwrap_or(0)
    };
    if rd == 0 || rd % 2 != 0 || rd > dh {
        return Err(format!(
            "rotary_embedding_dim {rd_attr} must be even and at most the head size {dh}"
        ));
    }
    let half = rd / 2;
    let mut tables = vec![];
    for cache in [cos, sin] {
        let rows = per_position(&mut b, cache, pos, (batch, seq, half))?;
        let rows = need(b.cast(rows, elem))?;
        let full = need(b.concat(&[rows, rows], 2))?;
        let bs = need(shape_of(b.m, full))?[0];
        let shape = if seq_axis == 2 {
            [bs, 1, seq, rd]
        } else {
            [bs, seq, 1, rd]
        };
        tables.push(b.reshape(full, &shape));
    }
    let y4 = if interleaved {
        // De-interleave the rotated part, rotate in halves, interleave back.
        let lead = [s4[0], s4[1], s4[2]];
        let rot = if rd < dh {
            need(b.slice_last(x4, 0, rd))?
        } else {
            x4
        };
        let pairs = b.reshape(rot, &[lead[0], lead[1], lead[2], half, 2]);
        let split = need(b.transpose(pairs, &[0, 1, 2, 4, 3]))?;
        let halves = b.reshape(split, &[lead[0], lead[1], lead[2], rd]);
        let ty = Type::tensor(&[lead[0], lead[1], lead[2], rd], elem);
        let r = b.op(graph::Rope::NAME, &[halves, tables[0], tables[1]], ty, vec![]);
        let back = b.reshape(r, &[lead[0], lead[1], lead[2], 2, half]);
        let joined = need(b.transpose(back, &[0, 1, 2, 4, 3]))?;
        let rotated = b.reshape(joined, &[lead[0], lead[1], lead[2], rd]);
        if rd < dh {
            let rest = need(b.slice_last(x4, rd, dh))?;
            need(b.concat(&[rotated, rest], 3))?
        } else {
            rotated
        }
    } else {
        let ty = b.m.value_type(x4).clone();
        let attrs = if rd < dh {
            vec![("rotary_dim", Attribute::i64(rd as i64))]
        } else {
            vec![]
        };
        b.op(graph::Rope::NAME, &[x4, tables[0], tables[1]], ty, attrs)
    };
    let y = if xs.len() == 3 { b.reshape(y4, &xs) } else { y4 };
    let (got, want) = (need(shape_of(b.m, y))?, need(shape_of(b.m, d.results[0]))?);
    if got != want {
        return Err(format!("the result has shape {want:?}, the rotation computes {got:?}"));
    }
    b.m.replace_all_uses(d.results[0], y);
    Ok(())
}
