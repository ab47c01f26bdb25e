//! Attention whose K and V stay resident in SRAM for a head's Q blocks ([`resident`]): the heads
//! are shared out over the cores and each runs its `(Q block, key chunk)` jobs with prefetched
//! loads.

use llmpu_isa::{Bcast, DType};

use super::{R, Shape, index};
use crate::backend::BackendError;
use crate::backend::emit::Mem;
use crate::backend::kernels::{Bin, Cx, Imm, Red, T, Un};
use crate::backend::view::View;

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
pub(super) fn resident(
    cx: &mut Cx,
    s: &Shape,
    qv: &View,
    kv: &View,
    vv: &View,
    ov: &View,
) -> R<bool> {
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
