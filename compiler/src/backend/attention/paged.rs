//! Batched paged decode attention over the paged KV region (see [`paged_decode`]).

use llmpu_isa::{Bcast, DType};

use super::{R, Shape, index, scores};
use crate::backend::BackendError;
use crate::backend::emit::{Mem, Sweep};
use crate::backend::kernels::{Bin, Cx, Imm, Red, T, Un};
use crate::backend::view::View;

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
pub(super) fn paged_decode(
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
