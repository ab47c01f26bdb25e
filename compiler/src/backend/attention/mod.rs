//! FlashAttention for `graph.fused_attention`: per (batch, head), Q blocks × KV blocks with an
//! online softmax, so the `Sq×Skv` score matrix only ever exists one `q_block×kv_block` tile at a
//! time, in the accumulator and SRAM — never in HBM.
//!
//! For each Q block (kept in SRAM) the kernel streams K (loaded transposed by the DMA) and V blocks:
//! `S = Q·Kᵀ` on the matrix engine, `S·scale (+ mask)`, the causal mask on blocks crossing the
//! diagonal (`vpu.causal`), then the running row max `m`, row sum `l` and output `O` are updated:
//! `m' = max(m, rowmax S)`, `α = exp(m − m')`, `P = exp(S − m')`, `l = l·α + rowsum P`,
//! `O = O·α + P·V` (`vpu.sacc`). KV blocks entirely above the diagonal are skipped. A row whose
//! keys are all masked with −inf outputs 0 (the running max is clamped to the most negative finite
//! value and the sum to the smallest positive one). With grouped
//! query attention, query head `h` reads KV head `h·Hkv/H`.
//!
//! Block sizes come from the `q_block`/`kv_block` attributes (`tile` pass): `kv_block` a multiple of
//! the array width, `q_block` as large as SRAM allows (up to the whole sequence), so K and V are
//! read from HBM once per head when the queries fit — traffic linear in the sequence length. With
//! fewer queries than the array width (decode) `kv_block` widens (up to 32 array widths) so each
//! block's matrix work outweighs the latencies of its dependency chain; K/V blocks are
//! quadruple-buffered when SRAM allows.
//!
//! K/V in the paged KV region (decode) take `paged_decode` when its buffers fit: GQA query heads
//! as the rows of one group, `(group, block)` units software-pipelined, running statistics
//! resident for the whole op, one drained run-time branch per KV block past the first (the
//! batch's longest sequence bounds the loop; shorter ones read masked keys) — the invariant every
//! run-time branch keeps is that the core is drained before it and at its target.
//!
//! Files: this one holds the block sizing, the streaming kernel and what the variants share;
//! `resident.rs` the kernel whose K/V stay in SRAM, `paged.rs` the batched paged decode kernel,
//! `kv.rs` the paged region's append and run-time mask.

use llmpu_isa::{Bcast, DType};

use super::emit::{Mem, Sweep};
use super::kernels::{Bin, Cx, Imm, Red, T, Un};
use super::plan::shape_of;
use super::tiling::sram_budget;
use super::view::View;
use super::{BackendError, Options, Precision};
use crate::ir::{Attribute, Module, OpId, ValueId};

mod kv;
mod paged;
mod resident;

pub use kv::{kv_append, kv_mask};

type R<T> = Result<T, BackendError>;

/// One iteration of a unit loop: the units it emits, as (core, index in the core's list).
type Round = Vec<(usize, usize)>;

/// `(q_block, kv_block)` for `sq` queries, `skv` keys, head sizes `d`/`dv`.
pub fn blocks(sq: u64, skv: u64, d: u64, dv: u64, o: &Options) -> (u64, u64) {
    let t = &o.target;
    let sz = match o.precision {
        Precision::Fp32 => 4,
        Precision::Bf16 => 2,
    };
    let cols = (t.matrix.cols as u64).max(16);
    let budget = sram_budget(t);
    let fit = |bk: u64| {
        // Per query row: Q, O (f32), S (f32), P, stats; KV tiles double-buffered.
        let kv = 2 * (d * bk + bk * dv) * sz;
        let per_row = d * sz + dv * 4 + bk * (4 + sz) + 64;
        let acc_rows = t.accumulator.size_bytes / (2 * (bk + dv) * 4);
        let fit = budget.saturating_sub(kv) / per_row;
        fit.min(acc_rows).min(sq).clamp(1, 65535)
    };
    let bk = cols.min(skv.max(1));
    let bq = fit(bk);
    // Few queries (decode): each KV block's work is short next to the latencies of the chain
    // S → softmax statistics → P·V, so take wider KV blocks (up to 32 array widths).
    // The widest that fits with its conversion stage and score tiles (a 192 KiB core takes
    // fewer array widths than a 2 MiB one).
    if bq < cols {
        let need = |bk: u64| {
            2 * (d * bk + bk * dv) * sz
                + bk * d.max(dv) * 4
                + bq * (d * sz + dv * 4 + bk * (8 + sz) + 64)
        };
        let mut n = (cols / bq).clamp(1, 32);
        while n > 1 {
            let wide = (cols * n).min(skv.max(1));
            if fit(wide) >= bq && need(wide) <= t.sram.size_bytes {
                return (bq, wide);
            }
            n /= 2;
        }
    }
    (bq, bk)
}

/// Records `q_block`, `kv_block` and the block counts on a fused attention op.
pub fn annotate(m: &mut Module, op: OpId, o: &Options) {
    let d = m.op(op);
    let (Some(q), Some(k), Some(v)) = (
        shape_of(m, d.operands[0]),
        shape_of(m, d.operands[1]),
        shape_of(m, d.operands[2]),
    ) else {
        return;
    };
    if q.len() < 2 || k.len() < 2 || v.len() < 2 {
        return;
    }
    let (sq, dd) = (q[q.len() - 2], q[q.len() - 1]);
    let (skv, dv) = (k[k.len() - 2], v[v.len() - 1]);
    let (bq, bk) = match (
        m.attr(op, "q_block").and_then(Attribute::as_int),
        m.attr(op, "kv_block").and_then(Attribute::as_int),
    ) {
        (Some(a), Some(b)) if a > 0 && b > 0 => (a as u64, b as u64),
        _ => blocks(sq, skv, dd, dv, o),
    };
    let causal = m.attr(op, "causal").and_then(Attribute::as_bool) == Some(true);
    let top_left = m.attr(op, "causal_top_left").and_then(Attribute::as_bool) == Some(true);
    let off = if top_left { 0 } else { skv.saturating_sub(sq) };
    let (mut total, mut skipped) = (0i64, 0i64);
    let mut q0 = 0;
    while q0 < sq {
        let mut k0 = 0;
        while k0 < skv {
            total += 1;
            if causal && k0 > q0 + bq.min(sq - q0) - 1 + off {
                skipped += 1;
            }
            k0 += bk;
        }
        q0 += bq;
    }
    m.set_attr(op, "q_block", Attribute::i64(bq as i64));
    m.set_attr(op, "kv_block", Attribute::i64(bk as i64));
    m.set_attr(
        op,
        "blocks",
        Attribute::DenseI64Array(vec![total, total - skipped]),
    );
}

fn index(v: &View, lead: &[u64]) -> View {
    let mut x = v.clone();
    for (i, &ix) in lead.iter().enumerate() {
        x.addr += ix as i64 * x.strides[i] * x.dt.size() as i64;
    }
    x.shape = x.shape[lead.len()..].to_vec();
    x.strides = x.strides[lead.len()..].to_vec();
    x
}

/// Lowers `graph.fused_attention(q, k, v, mask?)`.
pub fn attention(cx: &mut Cx, op: OpId, ins: &[ValueId], ov: &View) -> R<()> {
    let m = cx.m;
    let err = |cx: &Cx, s: &str| BackendError::new(&cx.loc, s.to_string());
    let qv = cx
        .plan
        .views
        .get(&ins[0])
        .cloned()
        .ok_or_else(|| err(cx, "q has no memory"))?;
    // K and V either have dense views or live in the paged KV region (`kv-layout`).
    let paged = match (cx.plan.kv_slots.get(&ins[1]), cx.plan.kv_slots.get(&ins[2])) {
        (Some(&ks), Some(&vs)) => {
            let region = cx.plan.kv.as_ref().ok_or_else(|| err(cx, "no KV region"))?;
            Some((region, ks, vs))
        }
        (None, None) => None,
        _ => return Err(err(cx, "only one of K and V is in the paged KV region")),
    };
    let region_view = |v: ValueId| -> R<View> {
        match cx.plan.views.get(&v) {
            Some(x) => Ok(x.clone()),
            None => {
                let (region, _, _) = paged.ok_or_else(|| err(cx, "k/v has no memory"))?;
                let sh = shape_of(cx.m, v).ok_or_else(|| err(cx, "k/v shape is not static"))?;
                Ok(View::dense(0, region.dtype, &sh))
            }
        }
    };
    let kv = region_view(ins[1])?;
    let vv = region_view(ins[2])?;
    let r = qv.shape.len();
    if r != 4 || kv.shape.len() != 4 || vv.shape.len() != 4 {
        return Err(err(
            cx,
            "fused attention expects [batch, heads, seq, head] q, k, v",
        ));
    }
    let (b, h, sq, d) = (qv.shape[0], qv.shape[1], qv.shape[2], qv.shape[3]);
    let (hkv, skv, dv) = (kv.shape[1], kv.shape[2], vv.shape[3]);
    if hkv == 0 || h % hkv != 0 || kv.shape[3] != d || vv.shape[2] != skv {
        return Err(err(cx, "inconsistent q/k/v shapes"));
    }
    let scale = m
        .attr(op, "scale")
        .and_then(Attribute::as_f64)
        .unwrap_or(1.0 / (d as f64).sqrt()) as f32;
    let causal = m.attr(op, "causal").and_then(Attribute::as_bool) == Some(true);
    let softcap = m
        .attr(op, "softcap")
        .and_then(Attribute::as_f64)
        .filter(|c| *c > 0.0)
        .map(|c| c as f32);
    let mask = match ins.get(3) {
        Some(&mv) => {
            let v = cx
                .plan
                .views
                .get(&mv)
                .cloned()
                .ok_or_else(|| err(cx, "mask has no memory"))?;
            Some(
                v.broadcast_to(&[b, h, sq, skv])
                    .ok_or_else(|| err(cx, "mask does not broadcast to the scores"))?,
            )
        }
        None => None,
    };
    let (bq, bk) = match (
        m.attr(op, "q_block").and_then(Attribute::as_int),
        m.attr(op, "kv_block").and_then(Attribute::as_int),
    ) {
        (Some(a), Some(c)) if a > 0 && c > 0 => (a as u64, c as u64),
        _ => blocks(sq, skv, d, dv, cx.o),
    };
    // Paged K/V are read one cache block at a time.
    let bk = match paged {
        Some((region, _, _)) => region.block_tokens,
        None => bk,
    };
    let (bq, bk) = (bq.min(sq).max(1), bk.min(skv).max(1));
    let dt = match cx.o.precision {
        Precision::Fp32 => DType::F32,
        Precision::Bf16 => DType::BF16,
    };
    let sz = dt.size();
    // Causal masks align the last query with the last key (decode with a cache) unless the op
    // says top-left (ONNX Attention's `is_causal`).
    let top_left = m.attr(op, "causal_top_left").and_then(Attribute::as_bool) == Some(true);
    let off = if top_left { 0 } else { skv.saturating_sub(sq) };
    let shape = Shape {
        b,
        h,
        hkv,
        sq,
        skv,
        d,
        dv,
        causal,
        off,
        scale,
        softcap,
        dt,
    };
    // Prefill without an explicit mask or paged cache: each head's K/V resident in SRAM when
    // they fit (causal blocks above the diagonal skipped, K/V read once).
    if paged.is_none()
        && mask.is_none()
        && softcap.is_none()
        && sq >= 2
        && resident::resident(cx, &shape, &qv, &kv, &vv, ov)?
    {
        return Ok(());
    }
    // Paged decode: (sequence, KV head) groups software-pipelined, one drain per live block of a
    // sequence.
    if let Some((region, ks, vs)) = paged
        && paged::paged_decode(cx, &shape, &qv, mask.as_ref(), ov, region, ks, vs)?
    {
        return Ok(());
    }
    // Buffers.
    let al = |cx: &mut Cx, mem: Mem, bytes: u64, what: &str| {
        cx.e.alloc(mem, bytes, what)
            .map_err(|e| BackendError::new(&cx.loc, e.to_string()))
    };
    // The Q block shrinks when the streaming buffers would not fit (the `tile` pass sizes
    // blocks for the resident kernel's needs).
    let need = |bq: u64| {
        bq * d * sz
            + (bq * d).max(bk * d).max(bk * dv) * 4
            + 2 * (d * bk + bk * dv) * sz
            + bq * bk * (8 + sz)
            + bq * dv * (4 + ov.dt.size())
            + 5 * bq * 4
            + 16 * 64
    };
    let mut bq = bq;
    while bq > 1 && need(bq) > cx.e.free(Mem::Sram) {
        bq = bq.div_ceil(2);
    }
    let qt = al(cx, Mem::Sram, bq * d * sz, "attention Q block")?;
    let stage = al(
        cx,
        Mem::Sram,
        (bq * d).max(bk * d).max(bk * dv) * 4,
        "attention conversion stage",
    )?;
    // K/V blocks: four buffers when SRAM has room beyond the per-row buffers below (so loads run
    // further ahead of the matrix engine and hide the HBM latency), else two.
    let rest = bq * bk * (8 + sz) + bq * dv * (4 + ov.dt.size()) + 5 * bq * 4 + 5 * 64;
    let kv_pair = (d * bk + bk * dv) * sz;
    let nkv = if cx.e.free(Mem::Sram) >= 4 * kv_pair + rest {
        4
    } else {
        2
    };
    let mut kt = vec![];
    let mut vt = vec![];
    for _ in 0..nkv {
        kt.push(al(cx, Mem::Sram, d * bk * sz, "attention K block")?);
        vt.push(al(cx, Mem::Sram, bk * dv * sz, "attention V block")?);
    }
    let s32 = al(cx, Mem::Sram, bq * bk * 4, "attention scores")?;
    let pt = al(cx, Mem::Sram, bq * bk * sz, "attention probabilities")?;
    let mt = al(cx, Mem::Sram, bq * bk * 4, "attention mask block")?;
    let ot = al(cx, Mem::Sram, bq * dv * 4, "attention output")?;
    let oc = al(cx, Mem::Sram, bq * dv * ov.dt.size(), "attention output")?;
    let stats: Vec<u64> = (0..5)
        .map(|_| al(cx, Mem::Sram, bq * 4, "attention row statistics"))
        .collect::<R<_>>()?;
    let sacc = al(cx, Mem::Acc, bq * bk * 4, "attention score accumulator")?;
    let pvacc = al(cx, Mem::Acc, bq * dv * 4, "attention PV accumulator")?;
    // A second Q block when SRAM allows: the next unit's Q load (and the K/V loads queued behind
    // it) then need not wait for this unit's last matmul.
    let qts = if cx.e.free(Mem::Sram) >= bq * d * sz + 4096 {
        [qt, al(cx, Mem::Sram, bq * d * sz, "attention Q block")?]
    } else {
        [qt, qt]
    };
    // A second output block when SRAM allows: a unit's output store is then emitted after the
    // next unit's first K/V loads on that core, so it does not hold them up in the DMA queue.
    let outs = if cx.e.free(Mem::Sram) >= bq * dv * (4 + ov.dt.size()) + 4096 {
        [
            (ot, oc),
            (
                al(cx, Mem::Sram, bq * dv * 4, "attention output")?,
                al(cx, Mem::Sram, bq * dv * ov.dt.size(), "attention output")?,
            ),
        ]
    } else {
        [(ot, oc), (ot, oc)]
    };
    let defer = outs[0] != outs[1];
    let mut pending: Vec<Option<(View, u64)>> = vec![None; cx.e.cores()];
    let col = |a: u64| T::sram(a, 1, DType::F32);
    let (mrun, lrun, mnew, alpha, tmp) = (
        col(stats[0]),
        col(stats[1]),
        col(stats[2]),
        col(stats[3]),
        col(stats[4]),
    );
    let table = match paged {
        Some((region, _, _)) => Some(al(
            cx,
            Mem::Sram,
            region.table_bytes().unwrap_or(u64::MAX),
            "KV block table",
        )?),
        None => None,
    };
    let load_at = |cx: &mut Cx, v: &View, dst: u64, base: Option<llmpu_isa::Reg>| {
        let cols = v.shape[1];
        if v.dt == dt {
            cx.e.move_view_at(true, v, dst, cols, base);
        } else {
            cx.e.move_view_at(true, v, stage, cols, base);
            cx.e.vun(
                Un::Copy,
                T::sram(dst, cols, dt),
                T::sram(stage, cols, v.dt),
                Bcast::Full,
                v.shape[0],
                cols,
            );
        }
    };
    let load_as = |cx: &mut Cx, v: &View, dst: u64| load_at(cx, v, dst, None);
    // Dense K/V blocks wider than four array widths (decode) are loaded and multiplied in pieces
    // of that width: `(offset, width)` within a block of `w` keys (one piece for paged blocks).
    let piece = if paged.is_none() {
        4 * (cx.e.target.matrix.cols as u64).max(1)
    } else {
        u64::MAX
    };
    let pieces = |w: u64| -> Vec<(u64, u64)> {
        (0..w.div_ceil(piece))
            .map(|i| (i * piece, piece.min(w - i * piece)))
            .collect()
    };
    let cores = cx.e.cores();
    let mut steps = vec![0usize; cores];
    // Work units (batch, head, Q block) in Q-block-major order, cut into one contiguous run per
    // core of about equal KV blocks: a core's units then come in runs of one Q block over
    // consecutive heads — the same work at advancing addresses, which rolls into a loop around
    // the KV-block loop.
    // The KV blocks a Q block at `q0` reads: those above the causal diagonal (a suffix) are
    // skipped.
    let live_of = |q0: u64| {
        let wq = bq.min(sq - q0);
        (0..skv.div_ceil(bk))
            .take_while(|&j| !(causal && j * bk > q0 + wq - 1 + off))
            .count()
    };
    let mut units = vec![];
    for q0 in (0..sq).step_by(bq as usize) {
        for bi in 0..b {
            for hi in 0..h {
                units.push((bi, hi, q0));
            }
        }
    }
    // With one Q block (decode) units go round robin, a round of one unit per core at a time
    // (the rounds roll); with several, each core takes a contiguous run of about equal KV blocks
    // and its runs of one Q block over consecutive heads roll (around the KV-block loops).
    // How many leading units of a list a loop may stand for: their operands' addresses must
    // advance by one constant (heads of one batch do; a batch boundary of a [b, s, h, d] view
    // does not).
    let affine = |list: &[(u64, u64, u64)]| -> usize {
        let base = |&(bi, hi, q0): &(u64, u64, u64)| {
            let hk = hi * hkv / h;
            let mut a = vec![
                index(&qv, &[bi, hi]).addr + (q0 as i64) * qv.strides[2] * sz as i64,
                index(&kv, &[bi, hk]).addr,
                index(&vv, &[bi, hk]).addr,
                index(ov, &[bi, hi]).addr,
            ];
            if let Some(mv) = &mask {
                a.push(index(mv, &[bi, hi]).addr);
            }
            a
        };
        let addrs: Vec<Vec<i64>> = list.iter().map(base).collect();
        if addrs.len() < 2 {
            return addrs.len();
        }
        let step: Vec<i64> = addrs[1].iter().zip(&addrs[0]).map(|(b, a)| b - a).collect();
        1 + (1..addrs.len())
            .take_while(|&i| {
                addrs[i]
                    .iter()
                    .zip(&addrs[i - 1])
                    .zip(&step)
                    .all(|((b, a), s)| b - a == *s)
            })
            .count()
    };
    let mut per_core: Vec<Vec<(u64, u64, u64)>> = vec![vec![]; cores];
    // Emission: loops of (uniform iterations, iterations).
    let mut sweeps: Vec<(usize, Vec<Round>)> = vec![];
    if sq <= bq {
        for (i, u) in units.iter().enumerate() {
            per_core[i % cores].push(*u);
        }
        let rounds: Vec<Round> = (0..units.len().div_ceil(cores))
            .map(|r| {
                (0..cores)
                    .filter(|c| r * cores + c < units.len())
                    .map(|c| (c, r))
                    .collect()
            })
            .collect();
        let uniform = per_core
            .iter()
            .filter(|l| !l.is_empty())
            .map(|l| affine(l))
            .min()
            .unwrap_or(0);
        sweeps.push(((units.len() / cores).min(uniform), rounds));
    } else {
        let total: u64 = units.iter().map(|u| live_of(u.2).max(1) as u64).sum();
        let mut acc = 0u64;
        for u in units {
            let c = ((acc as u128 * cores as u128) / total.max(1) as u128) as usize;
            per_core[c.min(cores - 1)].push(u);
            acc += live_of(u.2).max(1) as u64;
        }
        for (core, list) in per_core.iter().enumerate() {
            let mut at = 0;
            while at < list.len() {
                let same_q = list[at..].iter().take_while(|u| u.2 == list[at].2).count();
                let run = affine(&list[at..at + same_q]).max(1);
                sweeps.push((run, (at..at + run).map(|k| vec![(core, k)]).collect()));
                at += run;
            }
        }
    }
    // Where unit `k` of core `c` leaves its output (its deferred store).
    let out_of = |c: usize, k: usize| {
        let (bi, hi, q0) = per_core[c][k];
        let (ot, oc) = outs[k % 2];
        let dst = index(ov, &[bi, hi]).slice(0, q0, 1, bq.min(sq - q0));
        (dst, if ov.dt == DType::F32 { ot } else { oc })
    };
    for (uniform, iters) in &sweeps {
        let mut outer = Sweep::new(cx.e, *uniform, iters.len());
        while let Some((it, skipped)) = outer.next(cx.e) {
            for &(core, k) in &iters[it] {
                if skipped > 0 && defer && k > 0 {
                    // The loop stored every skipped unit's output but the last one's.
                    pending[core] = Some(out_of(core, k - 1));
                }
                let (bi, hi, q0) = per_core[core][k];
                let hk = hi * hkv / h;
                let q2 = index(&qv, &[bi, hi]);
                let k2 = index(&kv, &[bi, hk]);
                let v2 = index(&vv, &[bi, hk]);
                let o2 = index(ov, &[bi, hi]);
                let wq = bq.min(sq - q0);
                cx.e.core(core);
                let par = k % 2;
                let (qt, (ot, oc)) = (qts[par], outs[par]);
                // In runs of Q blocks each unit starts its K/V buffer ring afresh, so the units
                // are alike (a decode round keeps the ring turning: no load waits on it).
                if sq > bq {
                    steps[core] = steps[core].next_multiple_of(nkv);
                }
                load_as(cx, &q2.slice(0, q0, 1, wq), qt);
                // Paged: the number of blocks holding tokens (cached + new) is a run-time value;
                // blocks past it are skipped by a branch (their keys are padding).
                let mut live_blocks = None;
                if let (Some((region, _, _)), Some(tab)) = (paged, table) {
                    let tv = View::dense(
                        region.table_addr,
                        DType::I32,
                        &[region.batch * (region.max_blocks + 1)],
                    );
                    cx.e.move_view(true, &tv, tab, 0);
                    let len_at = tab + (region.batch * region.max_blocks + bi) * 4;
                    let nb = cx.e.live_blocks(
                        len_at,
                        region.new_tokens + region.block_tokens - 1,
                        region.block_tokens,
                    );
                    live_blocks = Some((nb, cx.e.new_label()));
                }
                let o32 = T::sram(ot, dv, DType::F32);
                cx.e.vfill(o32, 0.0, wq, dv);
                cx.e.vfill(mrun, f32::NEG_INFINITY, wq, 1);
                cx.e.vfill(lrun, 0.0, wq, 1);
                // The leading full KV blocks the causal mask does not cross are uniform and
                // roll into a loop.
                let nblk = skv.div_ceil(bk);
                let live = live_of(q0);
                let uniform = if paged.is_some() {
                    0
                } else {
                    (0..nblk)
                        .take_while(|&j| {
                            (j + 1) * bk <= skv && !(causal && (j + 1) * bk - 1 > q0 + off)
                        })
                        .count()
                };
                let mut sweep = Sweep::new(cx.e, uniform, live);
                while let Some((j, skipped)) = sweep.next(cx.e) {
                    steps[core] += skipped;
                    let k0 = j as u64 * bk;
                    let wk = bk.min(skv - k0);
                    let s = steps[core] % nkv;
                    steps[core] += 1;
                    if let (Some((nb, end)), true) = (live_blocks, k0 > 0) {
                        cx.e.drain_core();
                        let j = cx.e.reg((k0 / bk) as i64);
                        cx.e.branch_ge(j, nb, end);
                    }
                    if let (Some((region, ks, vs)), Some(tab)) = (paged, table) {
                        // Logical block k0 / block_tokens of sequence bi through the block table;
                        // inside a block, head hk's tokens are rows of head_dim elements.
                        let bt = region.block_tokens;
                        let entry = tab + (bi * region.max_blocks + k0 / bt) * 4;
                        let (kslot, vslot) = (&region.slots[ks], &region.slots[vs]);
                        let kb = region.block_bytes(kslot).unwrap_or(0);
                        let vb = region.block_bytes(vslot).unwrap_or(0);
                        let kr = cx.e.block_addr(entry, kb, kslot.pool_addr);
                        let in_block = |h: u64, n: u64| {
                            View::dense(h * bt * n * region.dtype.size(), region.dtype, &[wk, n])
                        };
                        let kblk = in_block(hk, d).permute(&[1, 0]);
                        load_at(cx, &kblk, kt[s], Some(kr));
                        cx.e.unpin(kr);
                        let vr = cx.e.block_addr(entry, vb, vslot.pool_addr);
                        load_at(cx, &in_block(hk, dv), vt[s], Some(vr));
                        cx.e.unpin(vr);
                    } else {
                        // Wide blocks arrive in pieces (each its own Kᵀ tile), so the matrix
                        // engine starts on the first piece and the last one leaves a short tail.
                        for (p0, wp) in pieces(wk) {
                            let kblk = k2.slice(0, k0 + p0, 1, wp).permute(&[1, 0]);
                            load_as(cx, &kblk, kt[s] + p0 * d * sz);
                        }
                        for (p0, wp) in pieces(wk) {
                            let vb = v2.slice(0, k0 + p0, 1, wp);
                            load_as(cx, &vb, vt[s] + p0 * dv * sz);
                        }
                    }
                    if let Some((v, a)) = pending[core].take() {
                        cx.e.move_view(false, &v, a, dv);
                    }
                    let sa = T {
                        mem: Mem::Acc,
                        addr: sacc,
                        ld: wk,
                        dt: DType::F32,
                    };
                    if paged.is_some() {
                        cx.e.matmul(
                            sa,
                            T::sram(qt, d, dt),
                            T::sram(kt[s], wk, dt),
                            wq,
                            d,
                            wk,
                            false,
                        );
                    } else {
                        for (p0, wp) in pieces(wk) {
                            cx.e.matmul(
                                T {
                                    addr: sacc + p0 * 4,
                                    ..sa
                                },
                                T::sram(qt, d, dt),
                                T::sram(kt[s] + p0 * d * sz, wp, dt),
                                wq,
                                d,
                                wp,
                                false,
                            );
                        }
                    }
                    let st = T::sram(s32, wk, DType::F32);
                    scores(cx.e, st, sa, scale, softcap, wq, wk);
                    if let Some(mv) = &mask {
                        let mb = index(mv, &[bi, hi]).slice(0, q0, 1, wq).slice(1, k0, 1, wk);
                        cx.e.move_view(true, &mb, mt, wk);
                        cx.e.vbin(
                            Bin::Add,
                            st,
                            st,
                            T::sram(mt, wk, mb.dt),
                            Bcast::Full,
                            wq,
                            wk,
                        );
                    }
                    if causal && k0 + wk - 1 > q0 + off {
                        cx.e.vcausal(st, (q0 + off) as i64, k0 as i64, f32::NEG_INFINITY, wq, wk);
                    }
                    let e = &mut *cx.e;
                    e.vred(Red::Max, tmp, st, wq, wk);
                    e.vbin(Bin::Max, mnew, mrun, tmp, Bcast::Full, wq, 1);
                    // A row masked out so far (max −inf) subtracts the most negative finite value
                    // instead, so exp() gives 0 rather than NaN (fully masked rows output 0).
                    e.vimm(Imm::Max, mnew, mnew, f32::MIN, wq, 1);
                    e.vbin(Bin::Sub, alpha, mrun, mnew, Bcast::Full, wq, 1);
                    e.vun(Un::Exp, alpha, alpha, Bcast::Full, wq, 1);
                    e.vbin(Bin::Sub, st, st, mnew, Bcast::Col, wq, wk);
                    e.vun(Un::Exp, st, st, Bcast::Full, wq, wk);
                    e.vred(Red::Sum, tmp, st, wq, wk);
                    e.vbin(Bin::Mul, lrun, lrun, alpha, Bcast::Full, wq, 1);
                    e.vbin(Bin::Add, lrun, lrun, tmp, Bcast::Full, wq, 1);
                    e.vun(Un::Copy, mrun, mnew, Bcast::Full, wq, 1);
                    let p = T::sram(pt, wk, dt);
                    e.vun(Un::Copy, p, st, Bcast::Full, wq, wk);
                    let pv = T {
                        mem: Mem::Acc,
                        addr: pvacc,
                        ld: dv,
                        dt: DType::F32,
                    };
                    for (i, (p0, wp)) in pieces(wk).into_iter().enumerate() {
                        let pp = T::sram(pt + p0 * sz, wk, dt);
                        let vp = T::sram(vt[s] + p0 * dv * sz, dv, dt);
                        e.matmul(pv, pp, vp, wq, wp, dv, i > 0);
                    }
                    e.vsacc(o32, alpha, pv, wq, dv);
                }
                if let Some((nb, end)) = live_blocks {
                    cx.e.bind_label(end);
                    cx.e.unpin(nb);
                }
                let e = &mut *cx.e;
                e.vimm(Imm::Max, lrun, lrun, f32::MIN_POSITIVE, wq, 1);
                e.vun(Un::Recip, lrun, lrun, Bcast::Full, wq, 1);
                e.vbin(Bin::Mul, o32, o32, lrun, Bcast::Col, wq, dv);
                let res = if ov.dt == DType::F32 {
                    o32
                } else {
                    let o = T::sram(oc, dv, ov.dt);
                    e.vun(Un::Copy, o, o32, Bcast::Full, wq, dv);
                    o
                };
                let dst = o2.slice(0, q0, 1, wq);
                if defer {
                    if let Some((v, a)) = pending[core].replace((dst, res.addr)) {
                        cx.e.move_view(false, &v, a, dv);
                    }
                } else {
                    cx.e.move_view(false, &dst, res.addr, dv);
                }
            }
        }
    }
    for (c, p) in pending.iter_mut().enumerate() {
        if let Some((v, a)) = p.take() {
            cx.e.core(c);
            cx.e.move_view(false, &v, a, dv);
        }
    }
    Ok(())
}

/// Shapes and flags the resident kernel needs from [`attention`].
struct Shape {
    b: u64,
    h: u64,
    hkv: u64,
    sq: u64,
    skv: u64,
    d: u64,
    dv: u64,
    causal: bool,
    off: u64,
    scale: f32,
    /// Logit soft-cap `c`: scores become `c·tanh(scale·S / c)` before the mask.
    softcap: Option<f32>,
    dt: DType,
}

/// `dst = acc·scale`, or with a soft-cap `c`: `c·tanh(acc·scale / c)`.
fn scores(
    e: &mut super::emit::Emitter,
    dst: T,
    acc: T,
    scale: f32,
    softcap: Option<f32>,
    rows: u64,
    cols: u64,
) {
    match softcap {
        None => e.vimm(Imm::Mul, dst, acc, scale, rows, cols),
        Some(c) => {
            e.vimm(Imm::Mul, dst, acc, scale / c, rows, cols);
            e.vun(Un::Tanh, dst, dst, Bcast::Full, rows, cols);
            e.vimm(Imm::Mul, dst, dst, c, rows, cols);
        }
    }
}
