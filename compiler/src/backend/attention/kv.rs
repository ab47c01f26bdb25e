//! The paged KV region's per-step ops: [`kv_append`] stores the new tokens' K/V rows into their
//! blocks, [`kv_mask`] shifts the attention mask into slot coordinates at run time.

use llmpu_isa::{Bcast, DType};

use super::{R, index};
use crate::backend::BackendError;
use crate::backend::emit::{Mem, Touch};
use crate::backend::kernels::{Cx, T, Un};
use crate::backend::view::View;
use crate::ir::{OpId, ValueId};

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
