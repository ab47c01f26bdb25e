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

use llmpu_isa::{Bcast, DType};

use super::emit::{Mem, Sweep, Touch};
use super::kernels::{Bin, Cx, Imm, Red, T, Un};
use super::plan::shape_of;
use super::tiling::sram_budget;
use super::view::View;
use super::{BackendError, Options, Precision};
use crate::ir::{Attribute, Module, OpId, ValueId};

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
        && resident(cx, &shape, &qv, &kv, &vv, ov)?
    {
        return Ok(());
    }
    // Paged decode: (sequence, KV head) groups software-pipelined, one drain per live block of a
    // sequence.
    if let Some((region, ks, vs)) = paged
        && paged_decode(cx, &shape, &qv, mask.as_ref(), ov, region, ks, vs)?
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

/// Batched paged decode attention (`attention` uses it for K/V in the paged KV region when its
/// buffers fit). The query heads sharing a KV head (GQA) are the rows of one group, so one
/// `[heads_per_kv · Sq, d] · [d, block]` matmul reads each K block once for all of them; every
/// group's running max, sum and output stay in SRAM for the whole op (rows in `(batch, head,
/// query)` order), so the work is a flat list of `(group, KV block)` units, software-pipelined in
/// three stages over rotating buffers: unit `u + AHEAD + LOOK`'s block-table lookups and K/V (and
/// mask) loads, then unit `u + LOOK`'s conversions and `Q·Kᵀ`, then the softmax and `P·V` of units
/// `u`, `u + 1` with their vector operations interleaved (the vector unit runs in order and stalls
/// on a dependent operation's pipeline latency or on a load still in flight).
///
/// Run-time lengths: block 0 always holds a live token (a run appends at least one), so it is
/// processed for every group without a branch. Per core the scalar unit computes the most live
/// blocks over its sequences; blocks `j ≥ 1` are processed block-major over every group, each
/// behind one drained branch `bge j, most, done` that skips the rest. With a mask (which covers
/// every position past a sequence's length, `spec/kv-cache.md`), a sequence's blocks past its own
/// live ones read its last live block instead (`Emitter::clamped_block`) and are masked, so no
/// per-sequence branch is needed; without one, per sequence and block one drained branch (`bge j,
/// live, end`) guards the block for that sequence's groups. Normalization and the output stores
/// run once at the end over each core's contiguous rows. Returns `false` (emitting nothing) when
/// the buffers do not fit.
#[allow(clippy::too_many_arguments)]
fn paged_decode(
    cx: &mut Cx,
    s: &Shape,
    qv: &View,
    mask: Option<&View>,
    ov: &View,
    region: &llmpu_isa::program::KvRegion,
    ks: usize,
    vs: usize,
) -> R<bool> {
    let (b, h, hkv, sq, skv, d, dv, dt) = (s.b, s.h, s.hkv, s.sq, s.skv, s.d, s.dv, s.dt);
    let sz = dt.size();
    let osz = ov.dt.size();
    let g = h / hkv;
    let rows = g * sq;
    let bt = region.block_tokens.max(1);
    let nblk = skv.div_ceil(bt);
    if nblk > region.max_blocks || rows > 65535 {
        return Ok(false);
    }
    let groups = b * hkv;
    let total = b * h * sq;
    let cores = cx.e.cores().min(groups as usize).max(1);
    // In-flight units: the one whose softmax runs, `LOOK` whose loads and Q·Kᵀ are ahead of it.
    const LOOK: usize = 2;
    // Units whose loads are issued before their conversions and Q·Kᵀ (HBM latency cover).
    const AHEAD: usize = 3;
    let nslot = (AHEAD + LOOK + 3) as u64;
    let kv_dt = region.dtype;
    let conv = kv_dt != dt;
    let mdt = mask.map(|m| m.dt.size()).unwrap_or(0);
    let table_bytes = region.table_bytes().unwrap_or(u64::MAX);
    let sram = table_bytes
        + total * d * sz // Q
        + total * dv * 4 // O
        + if ov.dt == DType::F32 { 0 } else { total * dv * osz }
        + 6 * total * 4 // row statistics
        + nslot * (d * bt + bt * dv) * sz // K/V blocks
        + if conv { nslot * bt * d.max(dv) * 4 } else { 0 } // conversion stages
        + nslot * rows * bt * (4 + sz + mdt) // scores, probabilities, mask
        + nslot * rows * d * 4 // Q conversion stages
        + 32 * 64;
    let acc = nslot * rows * bt * 4 + 4 * rows * dv * 4 + 8 * 64;
    if sram > cx.e.free(Mem::Sram) || acc > cx.e.free(Mem::Acc) {
        return Ok(false);
    }
    let al = |cx: &mut Cx, mem: Mem, bytes: u64, what: &str| {
        cx.e.alloc(mem, bytes, what)
            .map_err(|e| BackendError::new(&cx.loc, e.to_string()))
    };
    let tab = al(cx, Mem::Sram, table_bytes, "KV block table")?;
    let qa = al(cx, Mem::Sram, total * d * sz, "attention Q rows")?;
    let oa = al(cx, Mem::Sram, total * dv * 4, "attention output")?;
    let oc = if ov.dt == DType::F32 {
        oa
    } else {
        al(cx, Mem::Sram, total * dv * osz, "attention output")?
    };
    let stat: Vec<u64> = (0..6)
        .map(|_| al(cx, Mem::Sram, total * 4, "attention row statistics"))
        .collect::<R<_>>()?;
    let mut kt = vec![];
    let mut vt = vec![];
    let mut kst = vec![];
    let mut vst = vec![];
    let mut st = vec![];
    let mut pt = vec![];
    let mut mt = vec![];
    let mut sacc = vec![];
    let mut qst: Vec<u64> = vec![];
    for _ in 0..nslot {
        kt.push(al(cx, Mem::Sram, d * bt * sz, "attention K block")?);
        vt.push(al(cx, Mem::Sram, bt * dv * sz, "attention V block")?);
        if conv {
            kst.push(al(cx, Mem::Sram, bt * d * 4, "attention conversion stage")?);
            vst.push(al(
                cx,
                Mem::Sram,
                bt * dv * 4,
                "attention conversion stage",
            )?);
        }
        st.push(al(cx, Mem::Sram, rows * bt * 4, "attention scores")?);
        pt.push(al(
            cx,
            Mem::Sram,
            rows * bt * sz,
            "attention probabilities",
        )?);
        if mdt > 0 {
            mt.push(al(cx, Mem::Sram, rows * bt * mdt, "attention mask block")?);
        }
        sacc.push(al(
            cx,
            Mem::Acc,
            rows * bt * 4,
            "attention score accumulator",
        )?);
        qst.push(al(
            cx,
            Mem::Sram,
            rows * d * 4,
            "attention conversion stage",
        )?);
    }
    let pvacc: Vec<u64> = (0..4)
        .map(|_| al(cx, Mem::Acc, rows * dv * 4, "attention PV accumulator"))
        .collect::<R<_>>()?;
    // `v` ([n, cols]) into `dst` in the matrix type, through `stage` when it differs.
    // DMA of `v` ([n, cols]) into `dst`, or into `stage` when it is not in the matrix type: then
    // the returned `(dst, stage, n, cols, dtype)` is converted later by `convert`, so the vector
    // unit (in order) does not wait for the load's HBM latency ahead of other work.
    type Conv = (u64, u64, u64, u64, DType);
    let load = |cx: &mut Cx,
                v: &View,
                dst: u64,
                stage: u64,
                base: Option<llmpu_isa::Reg>|
     -> Option<Conv> {
        let cols = v.shape[1];
        if v.dt == dt {
            cx.e.move_view_at(true, v, dst, cols, base);
            None
        } else {
            cx.e.move_view_at(true, v, stage, cols, base);
            Some((dst, stage, v.shape[0], cols, v.dt))
        }
    };
    let convert = |cx: &mut Cx, (dst, stage, n, cols, sdt): Conv| {
        cx.e.vun(
            Un::Copy,
            T::sram(dst, cols, dt),
            T::sram(stage, cols, sdt),
            Bcast::Full,
            n,
            cols,
        );
    };
    let (kslot, vslot) = (&region.slots[ks], &region.slots[vs]);
    let kb = region
        .block_bytes(kslot)
        .ok_or_else(|| BackendError::new(&cx.loc, "KV block size overflows".to_string()))?;
    let vb = region
        .block_bytes(vslot)
        .ok_or_else(|| BackendError::new(&cx.loc, "KV block size overflows".to_string()))?;
    let len_at = |bi: u64| tab + (region.batch * region.max_blocks + bi) * 4;
    // A mask shared by the heads of a sequence with one query row is loaded once per block and
    // broadcast over the group's rows.
    let mask_row = mask.filter(|m| sq == 1 && m.strides[1] == 0);
    // With a mask (which covers every position past a sequence's length, `spec/kv-cache.md`),
    // blocks past the live ones need no per-sequence branch.
    let pred = mask.is_some();
    let col = |a: u64, g0: u64| T::sram(a + g0 * rows * 4, 1, DType::F32);
    // Contiguous groups per core, so each core's rows are one range.
    let span = |c: usize| {
        let c = c as u64;
        (c * groups / cores as u64, (c + 1) * groups / cores as u64)
    };
    for c in 0..cores {
        let (g0, g1) = span(c);
        if g0 == g1 {
            continue;
        }
        cx.e.core(c);
        let tv = View::dense(
            region.table_addr,
            DType::I32,
            &[region.batch * (region.max_blocks + 1)],
        );
        cx.e.move_view(true, &tv, tab, 0);
        let mut count = 0u64;
        // Front half of unit (group u, block j): Q rows (first block), K/V loads, S = Q·Kᵀ.
        let front = |cx: &mut Cx, u: u64, j: u64, slot: u64| -> Vec<Conv> {
            let (bi, hk) = (u / hkv, u % hkv);
            let slot = slot as usize;
            let mut convs = vec![];
            if j == 0 {
                for i in 0..g {
                    let q2 = index(qv, &[bi, hk * g + i]);
                    let dst = qa + (u * rows + i * sq) * d * sz;
                    convs.extend(load(cx, &q2, dst, qst[slot] + i * sq * d * 4, None));
                }
            }
            let k0 = j * bt;
            let wk = bt.min(skv - k0);
            let entry = tab + (bi * region.max_blocks + j) * 4;
            let in_block = |n: u64| View::dense(hk * bt * n * kv_dt.size(), kv_dt, &[wk, n]);
            // With a mask, blocks after the first read `min(j, last live block)` (their keys are
            // masked); otherwise block `j` itself (dead blocks are branched around).
            let blk = (pred && j > 0).then(|| {
                cx.e.clamped_block(
                    len_at(bi),
                    region.new_tokens.saturating_sub(1),
                    bt,
                    j,
                    tab + bi * region.max_blocks * 4,
                    region.max_blocks,
                )
            });
            let addr = |cx: &mut Cx, bytes: u64, pool: u64| match blk {
                Some(r) => cx.e.pool_addr(r, bytes, pool),
                None => cx.e.block_addr(entry, bytes, pool),
            };
            let kr = addr(cx, kb, kslot.pool_addr);
            let kstage = if conv { kst[slot] } else { 0 };
            convs.extend(load(
                cx,
                &in_block(d).permute(&[1, 0]),
                kt[slot],
                kstage,
                Some(kr),
            ));
            cx.e.unpin(kr);
            let vr = addr(cx, vb, vslot.pool_addr);
            let vstage = if conv { vst[slot] } else { 0 };
            convs.extend(load(cx, &in_block(dv), vt[slot], vstage, Some(vr)));
            cx.e.unpin(vr);
            if let Some(r) = blk {
                cx.e.unpin(r);
            }
            if let Some(mv) = mask {
                if let Some(mr) = mask_row {
                    let mb = index(mr, &[bi, 0]).slice(1, k0, 1, wk);
                    cx.e.move_view(true, &mb, mt[slot], wk);
                } else {
                    for i in 0..g {
                        let mb = index(mv, &[bi, hk * g + i]).slice(1, k0, 1, wk);
                        cx.e.move_view(true, &mb, mt[slot] + i * sq * wk * mdt, wk);
                    }
                }
            }
            convs
        };
        // Conversions and S = Q·Kᵀ of a fetched unit.
        let compute = |cx: &mut Cx, u: u64, j: u64, slot: u64, convs: Vec<Conv>| {
            let slot = slot as usize;
            let wk = bt.min(skv - j * bt);
            for c in convs {
                convert(cx, c);
            }
            let sa = T {
                mem: Mem::Acc,
                addr: sacc[slot],
                ld: wk,
                dt: DType::F32,
            };
            cx.e.matmul(
                sa,
                T::sram(qa + u * rows * d * sz, d, dt),
                T::sram(kt[slot], wk, dt),
                rows,
                d,
                wk,
                false,
            );
        };
        // Back half, one step at a time (`STEPS` of them; two units' steps are interleaved so
        // the vector unit's dependent operations of one unit hide behind the other's): scale,
        // mask, online softmax, P·V into the group's output rows.
        let back = |cx: &mut Cx, u: u64, j: u64, slot: u64, n: u64, step: usize| {
            let slot = slot as usize;
            let k0 = j * bt;
            let wk = bt.min(skv - k0);
            let sa = T {
                mem: Mem::Acc,
                addr: sacc[slot],
                ld: wk,
                dt: DType::F32,
            };
            let sv = T::sram(st[slot], wk, DType::F32);
            let (mrun, lrun, mnew, alpha, tmp, junk) = (
                col(stat[0], u),
                col(stat[1], u),
                col(stat[2], u),
                col(stat[3], u),
                col(stat[4], u),
                col(stat[5], u),
            );
            let p = T::sram(pt[slot], wk, dt);
            let o = T::sram(oa + u * rows * dv * 4, dv, DType::F32);
            let pv = T {
                mem: Mem::Acc,
                addr: pvacc[(n % 4) as usize],
                ld: dv,
                dt: DType::F32,
            };
            let e = &mut *cx.e;
            match (step, j == 0) {
                (0, _) => scores(e, sv, sa, s.scale, s.softcap, rows, wk),
                (1, _) => {
                    if let Some(mv) = mask {
                        let bc = if mask_row.is_some() {
                            Bcast::Row
                        } else {
                            Bcast::Full
                        };
                        e.vbin(Bin::Add, sv, sv, T::sram(mt[slot], wk, mv.dt), bc, rows, wk);
                    }
                }
                (2, _) if s.causal && k0 + wk - 1 > s.off => {
                    for i in 0..g {
                        let part = T {
                            addr: sv.addr + i * sq * wk * 4,
                            ..sv
                        };
                        e.vcausal(part, s.off as i64, k0 as i64, f32::NEG_INFINITY, sq, wk);
                    }
                }
                // A row masked out so far subtracts the most negative finite value instead, so
                // exp() gives 0 rather than NaN (fully masked rows output 0); later blocks keep
                // the running max at least that.
                (3, true) => e.vred(Red::Max, mrun, sv, rows, wk),
                (4, true) => e.vimm(Imm::Max, mrun, mrun, f32::MIN, rows, 1),
                (5, true) => e.vexpsum(p, sv, mrun, lrun, 1.0, rows, wk),
                (3, false) => e.vred(Red::Max, tmp, sv, rows, wk),
                (4, false) => e.vbin(Bin::Max, mnew, mrun, tmp, Bcast::Full, rows, 1),
                (5, false) => e.vexpsum(alpha, mrun, mnew, junk, 1.0, rows, 1),
                (6, false) => e.vexpsum(p, sv, mnew, tmp, 1.0, rows, wk),
                (7, _) => e.matmul(pv, p, T::sram(vt[slot], dv, dt), rows, wk, dv, false),
                (8, true) => e.vun(Un::Copy, o, pv, Bcast::Full, rows, dv),
                (8, false) => e.vbin(Bin::Mul, lrun, lrun, alpha, Bcast::Full, rows, 1),
                (9, false) => e.vbin(Bin::Add, lrun, lrun, tmp, Bcast::Full, rows, 1),
                (10, false) => e.vun(Un::Copy, mrun, mnew, Bcast::Full, rows, 1),
                (11, false) => e.vsacc(o, alpha, pv, rows, dv),
                _ => {}
            }
        };
        const STEPS: usize = 12;
        // Runs units `(group, block)` software-pipelined; everything is emitted on return. The
        // units of one call are distinct groups, so two back halves never share statistics.
        let run = |cx: &mut Cx, units: &[(u64, u64)], count: &mut u64| {
            type Unit = (u64, u64, u64, u64);
            let backs = |cx: &mut Cx, us: &[Unit]| {
                for step in 0..STEPS {
                    for &(pu, pj, ps, pn) in us {
                        back(cx, pu, pj, ps, pn, step);
                    }
                }
            };
            let mut fetched: std::collections::VecDeque<(Unit, Vec<Conv>)> = Default::default();
            let mut pending: std::collections::VecDeque<Unit> = Default::default();
            let step = |cx: &mut Cx,
                        (un, convs): (Unit, Vec<Conv>),
                        pending: &mut std::collections::VecDeque<Unit>| {
                compute(cx, un.0, un.1, un.2, convs);
                pending.push_back(un);
                if pending.len() >= LOOK + 2 {
                    let two: Vec<Unit> = pending.drain(..2).collect();
                    backs(cx, &two);
                }
            };
            for &(u, j) in units {
                let n = *count;
                *count += 1;
                let convs = front(cx, u, j, n % nslot);
                fetched.push_back(((u, j, n % nslot, n), convs));
                if fetched.len() > AHEAD
                    && let Some(x) = fetched.pop_front()
                {
                    step(cx, x, &mut pending);
                }
            }
            while let Some(x) = fetched.pop_front() {
                step(cx, x, &mut pending);
            }
            while !pending.is_empty() {
                let k = pending.len().min(2);
                let two: Vec<Unit> = pending.drain(..k).collect();
                backs(cx, &two);
            }
        };
        // Block 0 of every group: always live.
        let first: Vec<(u64, u64)> = (g0..g1).map(|u| (u, 0)).collect();
        run(cx, &first, &mut count);
        if nblk > 1 {
            // The sequences with groups on this core, and the most live blocks among them.
            let (b0, b1) = (g0 / hkv, (g1 - 1) / hkv + 1);
            let add = region.new_tokens + bt - 1;
            let most = cx.e.live_blocks(len_at(b0), add, bt);
            for bi in b0 + 1..b1 {
                let l = cx.e.live_blocks(len_at(bi), add, bt);
                cx.e.scalar(llmpu_isa::Inst::Max {
                    rd: most,
                    rs1: most,
                    rs2: l,
                });
                cx.e.unpin(l);
            }
            let done = cx.e.new_label();
            cx.e.drain_core();
            let one = cx.e.reg(1);
            cx.e.branch_ge(one, most, done);
            if pred {
                // Block-major over every group of the core: one drained branch per block, past
                // the batch's longest sequence; shorter sequences' blocks read masked keys.
                // Every block but the last is full and alike: the blocks roll into a loop (the
                // rotating buffers repeat every `nslot / gcd(groups, nslot)` blocks).
                let mut sweep = Sweep::new(cx.e, (nblk - 2) as usize, (nblk - 2) as usize);
                while let Some((it, skipped)) = sweep.next(cx.e) {
                    count += skipped as u64 * (g1 - g0);
                    let j = it as u64 + 2;
                    let units: Vec<(u64, u64)> = (g0..g1).map(|u| (u, j - 1)).collect();
                    run(cx, &units, &mut count);
                    cx.e.drain_core();
                    let jr = cx.e.reg_unshared(j as i64);
                    cx.e.branch_ge(jr, most, done);
                }
                let units: Vec<(u64, u64)> = (g0..g1).map(|u| (u, nblk - 1)).collect();
                run(cx, &units, &mut count);
            }
            cx.e.unpin(most);
            for bi in (b0..b1).filter(|_| !pred) {
                let live = cx.e.live_blocks(len_at(bi), add, bt);
                let end = cx.e.new_label();
                let mine: Vec<u64> = (g0..g1).filter(|u| u / hkv == bi).collect();
                for j in 1..nblk {
                    cx.e.drain_core();
                    let jr = cx.e.reg(j as i64);
                    cx.e.branch_ge(jr, live, end);
                    let units: Vec<(u64, u64)> = mine.iter().map(|&u| (u, j)).collect();
                    run(cx, &units, &mut count);
                }
                cx.e.bind_label(end);
                cx.e.unpin(live);
            }
            cx.e.bind_label(done);
        }
        // Normalize this core's rows and store them.
        let (r0, r1) = (g0 * rows, g1 * rows);
        let n = r1 - r0;
        let e = &mut *cx.e;
        let lrun = T::sram(stat[1] + r0 * 4, 1, DType::F32);
        let o = T::sram(oa + r0 * dv * 4, dv, DType::F32);
        e.vimm(Imm::Max, lrun, lrun, f32::MIN_POSITIVE, n, 1);
        e.vun(Un::Recip, lrun, lrun, Bcast::Full, n, 1);
        let res = if ov.dt == DType::F32 {
            e.vbin(Bin::Mul, o, o, lrun, Bcast::Col, n, dv);
            o
        } else {
            let out = T::sram(oc + r0 * dv * osz, dv, ov.dt);
            e.vbin(Bin::Mul, out, o, lrun, Bcast::Col, n, dv);
            out
        };
        // One store when the output is dense in (batch, head, query) order, else one per head.
        let dense = ov.is_contiguous();
        if dense {
            let dst = View::dense((ov.addr + (r0 * dv * osz) as i64) as u64, ov.dt, &[n, dv]);
            cx.e.move_view(false, &dst, res.addr, dv);
        } else {
            for u in g0..g1 {
                let (bi, hk) = (u / hkv, u % hkv);
                for i in 0..g {
                    let o2 = index(ov, &[bi, hk * g + i]);
                    // `res` starts at this core's first row, `r0`.
                    let src = res.addr + ((u - g0) * rows + i * sq) * dv * osz;
                    cx.e.move_view(false, &o2, src, dv);
                }
            }
        }
    }
    Ok(true)
}

/// One query head's share of the resident kernel on one core: its Q blocks `(q0, rows)` and the
/// key prefix they need.
struct HeadWork {
    bi: u64,
    hi: u64,
    qblocks: Vec<(u64, u64)>,
    keys: u64,
}

/// One `(Q block, key chunk)` step of the resident kernel.
#[derive(Clone, Copy)]
struct Job {
    /// Index of the head in the core's work list.
    head: usize,
    q0: u64,
    wq: u64,
    /// Key chunk `[c0, c0 + cw)`.
    c0: u64,
    cw: u64,
    first: bool,
    last: bool,
    /// Parity of the Q block on this core (row statistics, output accumulators).
    qpar: usize,
}

/// Loads the resident kernel emits after each job beyond the ones the next job needs (a head's
/// loads are about 1.5 per Q block, so this stays ahead without filling the DMA queue).
const PREFETCH_PER_JOB: usize = 3;

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

/// Keys `[0, n)` that queries `[q0, q0 + wq)` attend to, rounded up to `gran` (at most `skv`).
fn key_prefix(s: &Shape, q0: u64, wq: u64, gran: u64) -> u64 {
    if !s.causal {
        return s.skv;
    }
    let need = (q0 + wq + s.off).min(s.skv).max(1);
    need.div_ceil(gran).saturating_mul(gran).min(s.skv)
}

/// Splits the `(batch, head)` units over the cores: whole heads round robin while every core
/// gets one, then the Q blocks of the remaining heads by longest-processing-time first (a causal
/// Q block costs its key prefix), each core loading only the K/V prefix its blocks need.
fn assign(s: &Shape, bq: u64, gran: u64, cores: usize) -> Vec<Vec<HeadWork>> {
    let units: Vec<(u64, u64)> = (0..s.b)
        .flat_map(|bi| (0..s.h).map(move |hi| (bi, hi)))
        .collect();
    let qblocks: Vec<(u64, u64)> = (0..s.sq.div_ceil(bq))
        .map(|i| (i * bq, bq.min(s.sq - i * bq)))
        .collect();
    let head_cost: u64 = qblocks
        .iter()
        .map(|&(q0, wq)| key_prefix(s, q0, wq, gran))
        .sum();
    let mut out: Vec<Vec<HeadWork>> = (0..cores).map(|_| vec![]).collect();
    let mut load = vec![0u64; cores];
    let whole = units.len() / cores * cores;
    for (i, &(bi, hi)) in units[..whole].iter().enumerate() {
        let c = i % cores;
        out[c].push(HeadWork {
            bi,
            hi,
            qblocks: qblocks.clone(),
            keys: qblocks
                .iter()
                .map(|&(q0, wq)| key_prefix(s, q0, wq, gran))
                .max()
                .unwrap_or(0),
        });
        load[c] += head_cost;
    }
    for &(bi, hi) in &units[whole..] {
        let mut mine: Vec<Vec<(u64, u64)>> = vec![vec![]; cores];
        let mut order: Vec<(u64, u64)> = qblocks.clone();
        order.sort_by_key(|&(q0, wq)| std::cmp::Reverse(key_prefix(s, q0, wq, gran)));
        for (q0, wq) in order {
            let c = (0..cores).min_by_key(|&c| (load[c], c)).unwrap_or(0);
            load[c] += key_prefix(s, q0, wq, gran);
            mine[c].push((q0, wq));
        }
        for (c, mut qb) in mine.into_iter().enumerate() {
            if qb.is_empty() {
                continue;
            }
            qb.sort();
            let keys = qb
                .iter()
                .map(|&(q0, wq)| key_prefix(s, q0, wq, gran))
                .max()
                .unwrap_or(0);
            out[c].push(HeadWork {
                bi,
                hi,
                qblocks: qb,
                keys,
            });
        }
    }
    out
}

/// Attention with each head's K and V resident in SRAM (`attention` uses it when they fit and
/// there is no explicit mask or paged cache): per core, per head, Q, Kᵀ and V are loaded once
/// (block by block, in the order the first Q blocks need them; the next head's loads are issued
/// while this head computes), and each Q block of `R` rows attends to its causal key prefix only
/// (rounded up to the array width), so blocks above the diagonal cost nothing and K/V cross HBM
/// once. A Q block's prefix is one chunk when its `R × prefix` f32 scores fit an accumulator
/// buffer (online softmax across chunks otherwise). Per chunk: `S = Q·Kᵀ` into one of
/// `L + 1` accumulator buffers, `vpu.causal` on the diagonal columns, the row max, one
/// `vpu.expsum` (`P = exp((S − m)·scale)` in the matrix type and its row sum), then `P·V`. The
/// matrix engine is software-pipelined `L = 2` chunks ahead: `S` of chunk `j + 2` is issued before
/// `P·V` of chunk `j`, so the vector unit's softmax of chunk `j` overlaps matrix work. Returns
/// `false` (emitting nothing) when the buffers do not fit.
fn resident(cx: &mut Cx, s: &Shape, qv: &View, kv: &View, vv: &View, ov: &View) -> R<bool> {
    let t = cx.e.target.clone();
    let (rows, cols) = (t.matrix.rows.max(1) as u64, t.matrix.cols.max(1) as u64);
    let (d, dv, sq, skv, dt) = (s.d, s.dv, s.sq, s.skv, s.dt);
    let sz = dt.size();
    let osz = ov.dt.size();
    let bq = rows.min(sq).max(1);
    // Kᵀ is stored in blocks of `kb` keys (each its own `[d × kb]` tile) so that a matmul's
    // bounding range covers only the blocks it reads; causal prefixes are whole array widths.
    let gran = cols.min(skv).max(1);
    let kb = (4 * cols).min(skv).max(1);
    let nkb = skv.div_ceil(kb);
    let lookahead = 2u64;
    let nbuf = lookahead + 1;
    // Accumulator: `nbuf` score buffers of `bq × wmax` and two `bq × dv` P·V buffers.
    let acc_free = cx.e.free(Mem::Acc);
    let pv_bytes = bq * dv * 4;
    let per_col = nbuf * bq * 4;
    let wmax = (acc_free.saturating_sub(2 * pv_bytes + 64 * (nbuf + 2)) / per_col) / gran * gran;
    let wmax = wmax.min(skv.div_ceil(gran) * gran);
    if wmax == 0 {
        return Ok(false);
    }
    let set_bytes = |n: u64| -> u64 {
        let q = sq * d * sz;
        let k = nkb * d * kb * sz;
        let v = skv * dv * sz;
        let o = sq * dv * osz;
        n * (q + k + v + o + 4 * 64)
    };
    let fixed = 2 * bq * wmax * sz // P, double-buffered
        + 2 * bq * dv * 4 // O (online softmax across chunks)
        + 2 * 7 * bq * 4 // row statistics
        + (bq * d).max(kb * d).max(kb * dv) * 4 // conversion stage
        + 16 * 64;
    let free = cx.e.free(Mem::Sram);
    let sets = if set_bytes(2) + fixed <= free {
        2
    } else if set_bytes(1) + fixed <= free {
        1
    } else {
        return Ok(false);
    };
    let al = |cx: &mut Cx, mem: Mem, bytes: u64, what: &str| {
        cx.e.alloc(mem, bytes, what)
            .map_err(|e| BackendError::new(&cx.loc, e.to_string()))
    };
    // Per head set: Q, Kᵀ blocks, V, output staging.
    let mut hs = vec![];
    for _ in 0..sets {
        let q = al(cx, Mem::Sram, sq * d * sz, "attention resident Q")?;
        let k = al(cx, Mem::Sram, nkb * d * kb * sz, "attention resident K")?;
        let v = al(cx, Mem::Sram, skv * dv * sz, "attention resident V")?;
        let o = al(cx, Mem::Sram, sq * dv * osz, "attention output")?;
        hs.push((q, k, v, o));
    }
    let stage = al(
        cx,
        Mem::Sram,
        (bq * d).max(kb * d).max(kb * dv) * 4,
        "attention conversion stage",
    )?;
    let mut pbuf = vec![];
    let mut o32 = vec![];
    let mut stats = vec![];
    let mut alphas = vec![];
    for _ in 0..2 {
        pbuf.push(al(
            cx,
            Mem::Sram,
            bq * wmax * sz,
            "attention probabilities",
        )?);
        o32.push(al(cx, Mem::Sram, bq * dv * 4, "attention output")?);
        let st: Vec<u64> = (0..7)
            .map(|_| al(cx, Mem::Sram, bq * 4, "attention row statistics"))
            .collect::<R<_>>()?;
        stats.push(st);
        alphas.push(al(cx, Mem::Sram, bq * 4, "attention row rescale")?);
    }
    let mut sbuf = vec![];
    for _ in 0..nbuf {
        sbuf.push(al(
            cx,
            Mem::Acc,
            bq * wmax * 4,
            "attention score accumulator",
        )?);
    }
    let pvacc = [
        al(cx, Mem::Acc, pv_bytes, "attention PV accumulator")?,
        al(cx, Mem::Acc, pv_bytes, "attention PV accumulator")?,
    ];
    let load_as = |cx: &mut Cx, v: &View, dst: u64, ld: u64| {
        if v.dt == dt {
            cx.e.move_view(true, v, dst, ld);
        } else {
            let n = v.shape[1];
            cx.e.move_view(true, v, stage, n);
            cx.e.vun(
                Un::Copy,
                T::sram(dst, ld, dt),
                T::sram(stage, n, v.dt),
                Bcast::Full,
                v.shape[0],
                n,
            );
        }
    };
    let work = assign(s, bq, gran, cx.e.cores());
    for (core, heads) in work.iter().enumerate() {
        cx.e.core(core);
        // The chunk jobs of this core, in order.
        let mut jobs = vec![];
        let mut qn = 0usize;
        for (hix, w) in heads.iter().enumerate() {
            for &(q0, wq) in &w.qblocks {
                let n = key_prefix(s, q0, wq, gran);
                let mut c0 = 0;
                while c0 < n {
                    let cw = wmax.min(n - c0);
                    jobs.push(Job {
                        head: hix,
                        q0,
                        wq,
                        c0,
                        cw,
                        first: c0 == 0,
                        last: c0 + cw >= n,
                        qpar: qn % 2,
                    });
                    c0 += cw;
                }
                qn += 1;
            }
        }
        // The loads of every head (head `u` into set `u % sets`), interleaved by Q block so the
        // first blocks' operands arrive first: `(head, view, SRAM address, row stride)`. They
        // are emitted a few per job rather than all at once, so the DMA queue never fills and
        // stalls dispatch; `need[(head, q0)]` is the last load a Q block's jobs read.
        let mut loads: Vec<(usize, View, u64, u64)> = vec![];
        let mut need = std::collections::HashMap::new();
        for (u, w) in heads.iter().enumerate() {
            let (qa, ka, va, _) = hs[u % sets];
            let hk = w.hi * s.hkv / s.h;
            let q2 = index(qv, &[w.bi, w.hi]);
            let k2 = index(kv, &[w.bi, hk]);
            let v2 = index(vv, &[w.bi, hk]);
            let mut loaded = 0u64;
            for &(q0, wq) in &w.qblocks {
                loads.push((u, q2.slice(0, q0, 1, wq), qa + q0 * d * sz, d));
                let upto = key_prefix(s, q0, wq, gran).min(w.keys);
                while loaded < upto {
                    let wk = kb.min(skv - loaded);
                    let j = loaded / kb;
                    let kt = k2.slice(0, loaded, 1, wk).permute(&[1, 0]);
                    loads.push((u, kt, ka + j * d * kb * sz, kb));
                    let vb = v2.slice(0, loaded, 1, wk);
                    loads.push((u, vb, va + loaded * dv * sz, dv));
                    loaded += wk;
                }
                need.insert((u, q0), loads.len());
            }
        }
        let mut next_load = 0usize;
        let mut pending: std::collections::VecDeque<(usize, Job)> = Default::default();
        let mut deferred: Option<(usize, Job)> = None;
        // Emits the softmax and P·V of job `j`.
        let soft = |cx: &mut Cx, j: usize, jb: &Job| {
            let (_, _, va, _) = hs[jb.head % sets];
            let st = &stats[jb.qpar];
            let col = |a: u64| T::sram(a, 1, DType::F32);
            let (mrun, lrun, mnew, tmp, junk) =
                (col(st[0]), col(st[1]), col(st[2]), col(st[4]), col(st[5]));
            let alpha = col(alphas[j % 2]);
            let (wq, cw) = (jb.wq, jb.cw);
            let sv = T {
                mem: Mem::Acc,
                addr: sbuf[j % nbuf as usize],
                ld: cw,
                dt: DType::F32,
            };
            let e = &mut *cx.e;
            // Columns whose key can exceed a row's query position get the causal mask.
            let qpos = jb.q0 + s.off;
            if s.causal && jb.c0 + cw - 1 > qpos {
                let cs = (qpos + 1).saturating_sub(jb.c0);
                let part = T {
                    addr: sv.addr + cs * 4,
                    ..sv
                };
                e.vcausal(
                    part,
                    qpos as i64,
                    (jb.c0 + cs) as i64,
                    f32::NEG_INFINITY,
                    wq,
                    cw - cs,
                );
            }
            // `vpu.expsum` takes the scale after the subtraction, which commutes with the max
            // only for a positive scale; otherwise the scores are scaled first.
            let scale = if s.scale > 0.0 {
                s.scale
            } else {
                e.vimm(Imm::Mul, sv, sv, s.scale, wq, cw);
                1.0
            };
            let p = T::sram(pbuf[j % 2], cw, dt);
            if jb.first {
                e.vred(Red::Max, mrun, sv, wq, cw);
                // A row masked out so far subtracts the most negative finite value instead, so
                // exp() gives 0 rather than NaN (fully masked rows output 0).
                e.vimm(Imm::Max, mrun, mrun, f32::MIN, wq, 1);
                e.vexpsum(p, sv, mrun, lrun, scale, wq, cw);
            } else {
                e.vred(Red::Max, tmp, sv, wq, cw);
                e.vbin(Bin::Max, mnew, mrun, tmp, Bcast::Full, wq, 1);
                e.vexpsum(alpha, mrun, mnew, junk, scale, wq, 1);
                e.vexpsum(p, sv, mnew, tmp, scale, wq, cw);
                e.vbin(Bin::Mul, lrun, lrun, alpha, Bcast::Full, wq, 1);
                e.vbin(Bin::Add, lrun, lrun, tmp, Bcast::Full, wq, 1);
                e.vun(Un::Copy, mrun, mnew, Bcast::Full, wq, 1);
            }
            let pv = T {
                mem: Mem::Acc,
                addr: pvacc[j % 2],
                ld: dv,
                dt: DType::F32,
            };
            e.matmul(
                pv,
                p,
                T::sram(va + jb.c0 * dv * sz, dv, dt),
                wq,
                cw,
                dv,
                false,
            );
        };
        // Emits the output side of job `j` (after the next job's softmax, so the vector unit
        // does not wait for this job's P·V before starting it): the online-softmax rescale, and
        // for a Q block's last chunk the normalization and the store.
        let fin = |cx: &mut Cx, j: usize, jb: &Job| {
            let w = &heads[jb.head];
            let (_, _, _, oa) = hs[jb.head % sets];
            let st = &stats[jb.qpar];
            let col = |a: u64| T::sram(a, 1, DType::F32);
            let (lrun, linv, alpha) = (col(st[1]), col(st[6]), col(alphas[j % 2]));
            let wq = jb.wq;
            let pv = T {
                mem: Mem::Acc,
                addr: pvacc[j % 2],
                ld: dv,
                dt: DType::F32,
            };
            let e = &mut *cx.e;
            let o = T::sram(o32[jb.qpar], dv, DType::F32);
            let src = match (jb.first, jb.last) {
                (true, true) => pv,
                (true, false) => {
                    e.vun(Un::Copy, o, pv, Bcast::Full, wq, dv);
                    o
                }
                (false, _) => {
                    e.vsacc(o, alpha, pv, wq, dv);
                    o
                }
            };
            if jb.last {
                e.vimm(Imm::Max, lrun, lrun, f32::MIN_POSITIVE, wq, 1);
                e.vun(Un::Recip, linv, lrun, Bcast::Full, wq, 1);
                let out = T::sram(oa + jb.q0 * dv * osz, dv, ov.dt);
                e.vbin(Bin::Mul, out, src, linv, Bcast::Col, wq, dv);
                let o2 = index(ov, &[w.bi, w.hi]);
                e.move_view(false, &o2.slice(0, jb.q0, 1, wq), out.addr, dv);
            }
        };
        for (j, jb) in jobs.iter().enumerate() {
            // The loads this job reads; a head's loads may overwrite the set of head
            // `head − sets`, so every job of that head is finished first.
            let upto = need.get(&(jb.head, jb.q0)).copied().unwrap_or(loads.len());
            while next_load < upto {
                let u = loads[next_load].0;
                while let Some(&(pj, pjb)) = pending.front() {
                    if pjb.head + sets > u {
                        break;
                    }
                    pending.pop_front();
                    soft(cx, pj, &pjb);
                    if let Some((fj, fjb)) = deferred.replace((pj, pjb)) {
                        fin(cx, fj, &fjb);
                    }
                }
                let (_, v, a, ld) = &loads[next_load];
                load_as(cx, v, *a, *ld);
                next_load += 1;
            }
            let (qa, ka, _, _) = hs[jb.head % sets];
            let sv = sbuf[j % nbuf as usize];
            // S = Q·Kᵀ over the chunk, one matmul per stored K block.
            let mut k = jb.c0;
            while k < jb.c0 + jb.cw {
                let blk = k / kb;
                let n = ((blk + 1) * kb).min(jb.c0 + jb.cw) - k;
                let acc = T {
                    mem: Mem::Acc,
                    addr: sv + (k - jb.c0) * 4,
                    ld: jb.cw,
                    dt: DType::F32,
                };
                cx.e.matmul(
                    acc,
                    T::sram(qa + jb.q0 * d * sz, d, dt),
                    T::sram(ka + (blk * d * kb + (k - blk * kb)) * sz, kb, dt),
                    jb.wq,
                    d,
                    n,
                    false,
                );
                k += n;
            }
            pending.push_back((j, *jb));
            while pending.len() > lookahead as usize {
                if let Some((pj, pjb)) = pending.pop_front() {
                    soft(cx, pj, &pjb);
                    if let Some((fj, fjb)) = deferred.replace((pj, pjb)) {
                        fin(cx, fj, &fjb);
                    }
                }
            }
            // Run ahead: a few more loads whose set is free (no pending job of its old head).
            for _ in 0..PREFETCH_PER_JOB {
                let Some((u, v, a, ld)) = loads.get(next_load) else {
                    break;
                };
                if pending.iter().any(|(_, p)| p.head + sets <= *u) {
                    break;
                }
                load_as(cx, v, *a, *ld);
                next_load += 1;
            }
        }
        while let Some((pj, pjb)) = pending.pop_front() {
            soft(cx, pj, &pjb);
            if let Some((fj, fjb)) = deferred.replace((pj, pjb)) {
                fin(cx, fj, &fjb);
            }
        }
        if let Some((fj, fjb)) = deferred.take() {
            fin(cx, fj, &fjb);
        }
    }
    Ok(true)
}

/// Lowers `graph.kv_append(past, new)` (`kv-layout`): each new token's K or V rows (every KV
/// head) are stored in place into the block that holds its position `length + t`, where the
/// sequence's cached length and its block are read from the region header at run time; the cached
/// past is neither read nor copied.
pub fn kv_append(cx: &mut Cx, op: OpId, ins: &[ValueId]) -> R<()> {
    let m = cx.m;
    let err = |cx: &Cx, s: &str| BackendError::new(&cx.loc, s.to_string());
    let out = m.op(op).results[0];
    let slot = *cx
        .plan
        .kv_slots
        .get(&out)
        .ok_or_else(|| err(cx, "kv_append outside the KV region"))?;
    let region = cx.plan.kv.as_ref().ok_or_else(|| err(cx, "no KV region"))?;
    let ks = region
        .slots
        .get(slot)
        .ok_or_else(|| err(cx, "KV slot out of range"))?;
    let nv = cx
        .plan
        .views
        .get(&ins[1])
        .cloned()
        .ok_or_else(|| err(cx, "new K/V has no memory"))?;
    if nv.shape.len() != 4 || nv.shape[1] != ks.heads || nv.shape[3] != ks.head_dim {
        return Err(err(cx, "new K/V does not match its cache slot"));
    }
    let (b, h, n, d) = (nv.shape[0], nv.shape[1], nv.shape[2], nv.shape[3]);
    let rdt = region.dtype;
    let al = |cx: &mut Cx, bytes: u64, what: &str| {
        cx.e.alloc(Mem::Sram, bytes, what)
            .map_err(|e| BackendError::new(&cx.loc, e.to_string()))
    };
    let tab = al(
        cx,
        region.table_bytes().unwrap_or(u64::MAX),
        "KV block table",
    )?;
    let raw = al(cx, h * d * nv.dt.size(), "new K/V rows")?;
    let conv = al(cx, h * d * rdt.size(), "new K/V rows")?;
    let tv = View::dense(
        region.table_addr,
        DType::I32,
        &[region.batch * (region.max_blocks + 1)],
    );
    cx.e.move_view(true, &tv, tab, 0);
    let bt = region.block_tokens;
    let block_bytes = region
        .block_bytes(ks)
        .ok_or_else(|| err(cx, "KV block size overflows"))?;
    for bi in 0..b {
        for t in 0..n {
            let src = index(&nv, &[bi]).slice(1, t, 1, 1);
            let src = View {
                addr: src.addr,
                dt: src.dt,
                shape: vec![h, d],
                strides: vec![src.strides[0], src.strides[2]],
            };
            cx.e.move_view(true, &src, raw, d);
            let rows = if nv.dt == rdt {
                raw
            } else {
                cx.e.vun(
                    Un::Copy,
                    T::sram(conv, d, rdt),
                    T::sram(raw, d, nv.dt),
                    Bcast::Full,
                    h,
                    d,
                );
                conv
            };
            // Position length[bi] + t, read at run time from the region header.
            let r = cx.e.paged_token_addr(
                tab + (region.batch * region.max_blocks + bi) * 4,
                t,
                tab + bi * region.max_blocks * 4,
                region.max_blocks,
                bt,
                block_bytes,
                ks.pool_addr,
                d * rdt.size(),
            );
            // Row `pos % bt` of every head's [bt, d] block (the row offset is in `r`).
            let dst = View {
                addr: 0,
                dt: rdt,
                shape: vec![h, d],
                strides: vec![(bt * d) as i64, 1],
            };
            cx.e.move_view_at(false, &dst, rows, d, Some(r));
            cx.e.unpin(r);
        }
    }
    Ok(())
}

/// Lowers `graph.kv_mask(mask)` (`kv-layout`): every mask row `(b, h, q)` of `n = P + new`
/// columns is loaded into the first half of a `2n`-element SRAM row whose second half holds −inf,
/// and stored from column `P − len[b]` on (the sequence's cached length read at run time from the
/// region header), so slot `t` gets column `t + P − len[b]` and the slots after the sequence's
/// last token get −inf. Rows are split over the cores; two row buffers alternate.
pub fn kv_mask(cx: &mut Cx, op: OpId, ins: &[ValueId]) -> R<()> {
    let err = |cx: &Cx, s: String| BackendError::new(&cx.loc, s);
    let out = cx.m.op(op).results[0];
    let region = cx
        .plan
        .kv
        .clone()
        .ok_or_else(|| err(cx, "kv_mask without a KV region".into()))?;
    let ov = cx
        .plan
        .views
        .get(&out)
        .cloned()
        .ok_or_else(|| err(cx, "kv_mask result has no memory".into()))?;
    let iv = cx
        .plan
        .views
        .get(&ins[0])
        .cloned()
        .ok_or_else(|| err(cx, "mask has no memory".into()))?;
    let (b, h, q, n) = (ov.shape[0], ov.shape[1], ov.shape[2], ov.shape[3]);
    let past = region.past_len;
    if b != region.batch || n != past + region.new_tokens {
        return Err(err(
            cx,
            format!(
                "mask {:?} does not match the KV region ({} sequences of {} + {} tokens)",
                ov.shape, region.batch, past, region.new_tokens
            ),
        ));
    }
    let mut padded = vec![1; 4 - iv.shape.len().min(4)];
    padded.extend(&iv.shape);
    let src = iv
        .reshape(&padded)
        .and_then(|v| v.broadcast_to(&ov.shape))
        .ok_or_else(|| {
            err(
                cx,
                format!("mask {:?} does not broadcast to {:?}", iv.shape, ov.shape),
            )
        })?;
    let dt = ov.dt;
    let sz = dt.size();
    let row_bytes = 2 * n * sz;
    let nbuf = if 2 * row_bytes + b * 4 <= cx.e.free(Mem::Sram) {
        2
    } else {
        1
    };
    let lens =
        cx.e.alloc(Mem::Sram, b * 4, "KV lengths")
            .map_err(|e| err(cx, e.to_string()))?;
    let mut bufs = vec![];
    for _ in 0..nbuf {
        bufs.push(
            cx.e.alloc(Mem::Sram, row_bytes, "shifted mask row")
                .map_err(|e| {
                    err(
                        cx,
                        format!("a mask row of {n} keys (twice, for the shift): {e}"),
                    )
                })?,
        );
    }
    let rows = b * h * q;
    let cores = (cx.e.cores() as u64).min(rows).max(1);
    const CHUNK: u64 = 65535;
    for c in 0..cores {
        let (r0, r1) = (c * rows / cores, (c + 1) * rows / cores);
        if r0 == r1 {
            continue;
        }
        cx.e.core(c as usize);
        let lv = View::dense(region.lengths_addr(), DType::I32, &[b]);
        cx.e.move_view(true, &lv, lens, 0);
        for &buf in &bufs {
            let mut k = 0;
            while k < n {
                let w = CHUNK.min(n - k);
                let tail = T::sram(buf + (n + k) * sz, w, dt);
                cx.e.vcausal(tail, -1, 0, f32::NEG_INFINITY, 1, w);
                k += w;
            }
        }
        for (i, r) in (r0..r1).enumerate() {
            let (bi, hi, qi) = (r / (h * q), r / q % h, r % q);
            let buf = bufs[i % nbuf];
            let row = index(&src, &[bi, hi, qi]);
            let row = View {
                shape: vec![1, n],
                strides: vec![0, row.strides[0]],
                ..row
            };
            cx.e.move_view(true, &row, buf, n);
            // Column P − len[b] of the row buffer.
            let at =
                cx.e.loaded_affine(lens + bi * 4, -(sz as i64), (buf + past * sz) as i64);
            let dst = index(&ov, &[bi, hi, qi]);
            let mut k = 0;
            while k < n {
                let w = CHUNK.min(n - k);
                let sram = cx.e.offset_reg(at, (k * sz) as i64);
                let hbm = cx.e.reg(dst.addr + (k * sz) as i64);
                let zero = llmpu_isa::Reg(0);
                cx.e.op(
                    llmpu_isa::Inst::DmaStore {
                        sram,
                        hbm,
                        n0: w as u32,
                        n1: 1,
                        n2: 1,
                        hs1: zero,
                        hs2: zero,
                        ss1: zero,
                        ss2: zero,
                        dt,
                        layout: llmpu_isa::Layout::Rows,
                    },
                    vec![Touch::read(Mem::Sram, buf, buf + row_bytes)],
                );
                k += w;
            }
            cx.e.unpin(at);
        }
    }
    Ok(())
}
