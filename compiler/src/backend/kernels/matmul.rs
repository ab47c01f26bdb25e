//! Matrix-engine kernels: `graph.matmul` (batched, broadcast, with a fused epilogue — bias,
//! activation, residual, norm statistics — and producers recomputed into its operand loads), the
//! GEMM of `graph.gemm`, the shared-A multicast of decode matmuls and the deferred epilogue
//! (`Tail`) the next op's prologue overlaps.

use super::*;
use crate::dialects::graph;

/// Epilogue activations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    None,
    Relu,
    Gelu(bool),
    Silu,
}

impl Act {
    /// The `activation` attribute's spelling (`graph.matmul_epilogue`, `tile.vector` kinds).
    pub fn from_name(s: &str) -> Option<Act> {
        Some(match s {
            "none" => Act::None,
            "relu" => Act::Relu,
            "gelu" => Act::Gelu(false),
            "gelu_tanh" => Act::Gelu(true),
            "silu" => Act::Silu,
            _ => return None,
        })
    }
}

/// The matrix engine's input type for this precision and operand types.
pub(super) fn mxu_dtype(cx: &Cx, a: DType, b: DType) -> R<DType> {
    if !a.is_float() || !b.is_float() {
        return Err(cx.err(format!(
            "matmul of {a} × {b} operands is not supported (floating-point only)"
        )));
    }
    Ok(match cx.o.precision {
        Precision::Fp32 => DType::F32,
        Precision::Bf16 => DType::BF16,
    })
}

/// Reads the tile attribute `[tm, tk, tn]` of a matmul, or chooses it.
pub fn matmul_tile_attr(m: &Module, op: OpId) -> Option<(u64, u64, u64)> {
    let v = m.attr(op, "tile").and_then(Attribute::as_i64_list)?;
    (v.len() == 3 && v.iter().all(|&x| x > 0)).then(|| (v[0] as u64, v[1] as u64, v[2] as u64))
}

pub(super) fn batch_index(v: &View, lead: &[u64]) -> View {
    let mut x = v.clone();
    let nb = lead.len();
    for (i, &ix) in lead.iter().enumerate() {
        x.addr += ix as i64 * x.strides[i] * x.dt.size() as i64;
    }
    x.shape = x.shape[nb..].to_vec();
    x.strides = x.strides[nb..].to_vec();
    x
}

/// Loads `v` ([rows, cols] view) into SRAM as `dt` (converting through a staging tile if needed).
pub(super) fn load_as(cx: &mut Cx, v: &View, dst: u64, stage: u64, dt: DType) {
    let cols = v.shape[1];
    if v.dt == dt {
        cx.e.move_view(true, v, dst, cols);
    } else {
        cx.e.move_view(true, v, stage, cols);
        cx.e.vun(
            Un::Copy,
            T::sram(dst, cols, dt),
            T::sram(stage, cols, v.dt),
            Bcast::Full,
            v.shape[0],
            cols,
        );
    }
}

/// LayerNorm (`rms` false) or RMSNorm of `rows` rows of `a` into the f32 tile `w`: statistics in
/// `s1` (mean) and `s2` (variance or mean square, then its reciprocal root), then the optional
/// scale `prm[0]` and bias `prm[1]` broadcast along the rows. The variance squares the centred
/// values in `w` and recomputes them, so no scratch beyond `w` is needed.
#[allow(clippy::too_many_arguments)]
pub fn norm_rows(
    e: &mut Emitter,
    w: T,
    a: T,
    (s1, s2): (T, T),
    prm: &[T],
    eps: f32,
    rms: bool,
    rows: u64,
    cols: u64,
) {
    let n = cols as f32;
    if rms {
        e.vbin(Bin::Mul, w, a, a, Bcast::Full, rows, cols);
        e.vred(Red::Sum, s2, w, rows, cols);
        e.vun(Un::Copy, w, a, Bcast::Full, rows, cols);
    } else {
        e.vred(Red::Sum, s1, a, rows, cols);
        e.vimm(Imm::Div, s1, s1, n, rows, 1);
        e.vbin(Bin::Sub, w, a, s1, Bcast::Col, rows, cols);
        e.vbin(Bin::Mul, w, w, w, Bcast::Full, rows, cols);
        e.vred(Red::Sum, s2, w, rows, cols);
        e.vbin(Bin::Sub, w, a, s1, Bcast::Col, rows, cols);
    }
    e.vimm(Imm::Div, s2, s2, n, rows, 1);
    e.vimm(Imm::Add, s2, s2, eps, rows, 1);
    e.vun(Un::Rsqrt, s2, s2, Bcast::Full, rows, 1);
    e.vbin(Bin::Mul, w, w, s2, Bcast::Col, rows, cols);
    if let Some(&sc) = prm.first() {
        e.vbin(Bin::Mul, w, w, sc, Bcast::Row, rows, cols);
    }
    if let Some(&b) = prm.get(1) {
        e.vbin(Bin::Add, w, w, b, Bcast::Row, rows, cols);
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn matmul(
    cx: &mut Cx,
    op: OpId,
    a: ValueId,
    b: ValueId,
    bias: Option<ValueId>,
    residual: Option<ValueId>,
    act: Act,
    ov: &View,
) -> R<()> {
    let mut av = cx.view(a)?;
    let mut bv = cx.view(b)?;
    let bias = match bias {
        Some(x) => Some(cx.view(x)?),
        None => None,
    };
    // The residual as a view of the output's shape (broadcast where it is smaller).
    let mut rv = match residual {
        Some(x) => Some(
            cx.view(x)?
                .broadcast_to(&ov.shape)
                .ok_or_else(|| cx.err("matmul residual does not broadcast to the output"))?,
        ),
        None => None,
    };
    let mut ov = ov.clone();
    if let Some((a2, b2, o2)) = fold_batch_rows(&av, &bv, &ov) {
        // The residual folds with the output, or nothing does (a broadcast residual may not).
        let r2 = match &rv {
            Some(r) => r.as_2d().map(Some),
            None => Some(None),
        };
        if let Some(r2) = r2 {
            (av, bv, ov, rv) = (a2, b2, o2, r2);
        }
    }
    let producer = cx.recompute.get(&a).copied();
    let ep = EpilogueOps {
        bias,
        residual: rv,
        act,
        alpha: 1.0,
    };
    matmul_views(cx, op, av, bv, ep, &ov, true, producer)
}

/// Whether a matmul of result shape `out` whose B operand has shape `b` multiplies every batch
/// row by the same matrix (B is 2-D or has only size-1 leading dims): then the leading dims of A
/// and the output fold into the rows — `[B, S, K] · [K, N]` is one `[B·S, K] · [K, N]` matmul,
/// reading the weights once instead of once per batch entry.
pub fn shared_rhs(b: &[u64], out: &[u64]) -> bool {
    out.len() > 2 && b.len() >= 2 && b[..b.len() - 2].iter().all(|&d| d == 1)
}

/// Rows of a matmul of result shape `out` as the lowering multiplies them: all leading dims when
/// the B operand (shape `b`) is shared ([`shared_rhs`]), else the second-to-last dim.
pub fn matmul_rows(b: &[u64], out: &[u64]) -> u64 {
    if shared_rhs(b, out) {
        out[..out.len() - 1].iter().product()
    } else if out.len() >= 2 {
        out[out.len() - 2]
    } else {
        1
    }
}

/// `[batch…, M, K] · [1…, K, N] → [batch…, M, N]` as `[batch·M, K] · [K, N] → [batch·M, N]`, when
/// B is shared and A and the output collapse to 2-D views (their rows equally strided).
pub(super) fn fold_batch_rows(av: &View, bv: &View, ov: &View) -> Option<(View, View, View)> {
    if !shared_rhs(&bv.shape, &ov.shape) || av.shape.len() != ov.shape.len() {
        return None;
    }
    let nb = bv.shape.len();
    let b2 = bv.reshape(&bv.shape[nb - 2..])?;
    Some((av.as_2d()?, b2, ov.as_2d()?))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn matmul_views(
    cx: &mut Cx,
    op: OpId,
    mut av: View,
    mut bv: View,
    eops: EpilogueOps,
    ov: &View,
    defer: bool,
    producer: Option<OpId>,
) -> R<()> {
    let EpilogueOps {
        bias,
        residual,
        act,
        alpha,
    } = eops;
    // 1-D operands as in NumPy.
    let mut oshape = ov.shape.clone();
    if av.shape.len() == 1 {
        av = av.reshape(&[1, av.shape[0]]).unwrap_or(av);
        oshape.insert(
            oshape
                .len()
                .saturating_sub(if bv.shape.len() == 1 { 0 } else { 1 }),
            1,
        );
    }
    if bv.shape.len() == 1 {
        bv = View {
            shape: vec![bv.shape[0], 1],
            strides: vec![bv.strides[0], 0],
            ..bv
        };
        oshape.push(1);
    }
    let ovr = ov
        .reshape(&oshape)
        .ok_or_else(|| cx.err("matmul output is not dense"))?;
    let rvr = match &residual {
        Some(r) => Some(
            r.reshape(&oshape)
                .ok_or_else(|| cx.err("matmul residual does not take the output's shape"))?,
        ),
        None => None,
    };
    let r = oshape.len();
    let (mm, nn) = (oshape[r - 2], oshape[r - 1]);
    let kk = av.shape[av.shape.len() - 1];
    let batch = &oshape[..r - 2];
    let bshape = |v: &View, rows: u64, cols: u64| {
        let mut s = batch.to_vec();
        s.push(rows);
        s.push(cols);
        v.broadcast_to(&s)
    };
    let av = bshape(&av, mm, kk).ok_or_else(|| cx.err("matmul A does not broadcast"))?;
    let bv = bshape(&bv, kk, nn).ok_or_else(|| cx.err("matmul B does not broadcast"))?;
    let dt = mxu_dtype(cx, av.dt, bv.dt)?;
    let (tm, tk, tn) = match matmul_tile_attr(cx.m, op) {
        Some(t) => t,
        None => {
            let (a, b, c, _) = matmul_tiles(mm, kk, nn, dt, &cx.e.target);
            (a, b, c)
        }
    };
    let (tm, tk, tn) = (tm.min(mm).max(1), tk.min(kk).max(1), tn.min(nn).max(1));
    // Bias broadcast over rows ([N] or [1, N]); anything else is added elementwise afterwards.
    let bias_row = match bias {
        Some(v) => {
            let row = v.reshape(&[nn]).or_else(|| v.broadcast_to(&[nn]));
            Some(row.ok_or_else(|| cx.err("bias must broadcast along the output rows"))?)
        }
        None => None,
    };
    let ssz = dt.size();
    let mut need = 2 * (tm * tk + tk * tn) * ssz + 2 * tm * tn * (4 + ov.dt.size()) + tm * tn * 8;
    if av.dt != dt {
        need += tm * tk * av.dt.size();
    }
    if bv.dt != dt {
        need += tk * tn * bv.dt.size();
    }
    if let Some(r) = &rvr {
        need += 2 * tm * tn * r.dt.size();
    }
    if need > sram_budget(&cx.e.target).max(cx.e.free(Mem::Sram)) {
        return Err(cx.err(format!(
            "matmul tiles {tm}×{tk}×{tn} need {need} bytes of SRAM"
        )));
    }
    // The whole bias row stays in SRAM as f32 unless it would take more than an eighth of it
    // (a 12288-wide row on a 192 KiB core): then each epilogue loads its tile's slice.
    let bias_row_bytes = bias_row.as_ref().map_or(0, |r| nn * (r.dt.size() + 4));
    let bias_per_tile = bias_row_bytes * 8 > cx.e.target.sram.size_bytes;
    let bias_t = match &bias_row {
        Some(row) if !bias_per_tile => Some((
            cx.alloc(Mem::Sram, nn * row.dt.size(), "bias")?,
            cx.alloc(Mem::Sram, nn * 4, "bias")?,
        )),
        _ => None,
    };
    let mut bias_tiles = vec![];
    if let Some(row) = bias_row.as_ref().filter(|_| bias_per_tile) {
        for _ in 0..2 {
            bias_tiles.push((
                cx.alloc(Mem::Sram, tn * row.dt.size(), "bias tile")?,
                cx.alloc(Mem::Sram, tn * 4, "bias tile")?,
            ));
        }
    }
    // The bias row into SRAM as f32, on the current core.
    let load_bias = |cx: &mut Cx| {
        if let (Some(row), Some((raw, f))) = (&bias_row, bias_t) {
            cx.e.move_view(true, row, raw, nn);
            cx.e.vun(
                Un::Copy,
                T::sram(f, nn, DType::F32),
                T::sram(raw, nn, row.dt),
                Bcast::Full,
                1,
                nn,
            );
        }
    };
    let mut abuf = vec![];
    let mut bbuf = vec![];
    let mut accb = vec![];
    let mut outb = vec![];
    for _ in 0..2 {
        accb.push(cx.alloc(Mem::Acc, tm * tn * 4, "matmul accumulator")?);
        outb.push(cx.alloc(Mem::Sram, tm * tn * 4, "matmul output tile")?);
    }
    // A/B tiles: up to six buffers when SRAM allows, so that loads run far enough ahead of the
    // matrix engine to hide the HBM latency (decode-shaped steps are short), else double.
    let ab = (tm * tk + tk * tn) * ssz;
    let rest = 4 * tm * tn * 4;
    let nab = (2..=6u64)
        .rev()
        .find(|&n| cx.e.free(Mem::Sram) > (n + 1) * ab + rest)
        .unwrap_or(2) as usize;
    for _ in 0..nab {
        abuf.push(cx.alloc(Mem::Sram, tm * tk * ssz, "matmul A tile")?);
        bbuf.push(cx.alloc(Mem::Sram, tk * tn * ssz, "matmul B tile")?);
    }
    let ocv = [
        cx.alloc(Mem::Sram, tm * tn * ov.dt.size(), "matmul output tile")?,
        cx.alloc(Mem::Sram, tm * tn * ov.dt.size(), "matmul output tile")?,
    ];
    // Residual tiles, double-buffered like the output: each loads after its tile's steps, a tile
    // ahead of the epilogue that adds it.
    let rbuf = match &rvr {
        Some(r) => vec![
            cx.alloc(Mem::Sram, tm * tn * r.dt.size(), "matmul residual tile")?,
            cx.alloc(Mem::Sram, tm * tn * r.dt.size(), "matmul residual tile")?,
        ],
        None => vec![],
    };
    let mut pending: Vec<Option<Epilogue>> = (0..cx.e.cores()).map(|_| None).collect();
    let tmp = cx.alloc(Mem::Sram, tm * tn * 4, "epilogue scratch")?;
    let stage_a = if av.dt != dt {
        cx.alloc(Mem::Sram, tm * tk * av.dt.size(), "conversion stage")?
    } else {
        0
    };
    let stage_b = if bv.dt != dt {
        cx.alloc(Mem::Sram, tk * tn * bv.dt.size(), "conversion stage")?
    } else {
        0
    };
    let nb: u64 = batch.iter().product();
    let cores = cx.e.cores();
    // One row block of A that fits in SRAM stays resident: each core loads it once instead of
    // once per tile (decode-shaped matmuls stream only the weights), and several cores share one
    // read of it (`SharedA`) even when its K extent is one tile.
    // A recomputed producer's result exists only in SRAM: always resident.
    let produce = match producer {
        Some(p) if nb == 1 && mm <= tm && av.dt == dt => Some(Producer::new(cx, p, mm, kk)?),
        Some(_) => {
            return Err(cx.err(format!(
                "internal: recomputed A operand is not one row block (batches {nb}, rows {mm}, tile rows {tm}, {} for {dt})",
                av.dt
            )));
        }
        None => None,
    };
    // Work units spread over the cores: whole row blocks (so every core writes its own rows) when
    // there are at least as many as cores, else single output tiles (decode-shaped matmuls: the
    // weight columns stream through every core).
    /// (batch, m0, rows, n0, cols) of one output tile.
    type OutTile = (u64, u64, u64, u64, u64);
    let mut units: Vec<Vec<OutTile>> = vec![];
    let row_units = cores > 1 && mm.div_ceil(tm) >= cores as u64;
    for bi in 0..nb {
        let ms: Vec<u64> = (0..mm).step_by(tm as usize).collect();
        let ns: Vec<u64> = (0..nn).step_by(tn as usize).collect();
        if row_units {
            for &m0 in &ms {
                units.push(
                    ns.iter()
                        .map(|&n0| (bi, m0, tm.min(mm - m0), n0, tn.min(nn - n0)))
                        .collect(),
                );
            }
        } else {
            for &n0 in &ns {
                for &m0 in &ms {
                    units.push(vec![(bi, m0, tm.min(mm - m0), n0, tn.min(nn - n0))]);
                }
            }
        }
    }
    let resident = if produce.is_some() {
        Some(cx.alloc(Mem::Sram, mm * kk * ssz, "matmul resident A")?)
    } else if nb == 1 && mm <= tm && (kk > tk || (cores > 1 && nn > tn)) && av.dt == dt {
        let bytes = mm * kk * ssz;
        if cx.e.free(Mem::Sram) > bytes + 4096 {
            Some(cx.alloc(Mem::Sram, bytes, "matmul resident A")?)
        } else {
            None
        }
    } else {
        None
    };
    // Single tiles of several row blocks: a core whose consecutive tiles share one keeps it cached: the
    // block's `tk`-wide chunks (each a contiguous `tm × tk` tile, so a pass waits only for its own
    // chunk) load with the first tile's steps and serve the following tiles. Used when blocks are
    // reused by two tiles or more on average; two buffers when a core changes blocks, so the next
    // block loads while the last one's tiles compute.
    let block_loads: usize = (0..cores)
        .map(|c| {
            let mut last = None;
            let mut n = 0usize;
            for tiles in units.iter().skip(c).step_by(cores) {
                for &(bi, m0, ..) in tiles {
                    if last != Some((bi, m0)) {
                        n += 1;
                        last = Some((bi, m0));
                    }
                }
            }
            n
        })
        .sum();
    let ntiles: usize = units.iter().map(|u| u.len()).sum();
    let cache: Vec<u64> = if !row_units
        && resident.is_none()
        && kk > tk
        && av.dt == dt
        && 2 * block_loads <= ntiles
    {
        let nbuf = if block_loads > cores.min(ntiles) {
            2
        } else {
            1
        };
        let bytes = tm * kk.div_ceil(tk) * tk * ssz;
        if cx.e.free(Mem::Sram) > nbuf * bytes + 4096 {
            let mut v = vec![];
            for _ in 0..nbuf {
                v.push(cx.alloc(Mem::Sram, bytes, "matmul cached A row block")?);
            }
            v
        } else {
            vec![]
        }
    } else {
        vec![]
    };
    // Per core: the cached row block (batch, first row), its buffer, and how many of its chunks
    // are loaded.
    let mut a_cur: Vec<Option<(u64, u64)>> = vec![None; cores];
    let mut a_slot = vec![0usize; cores];
    let mut a_have = vec![0usize; cores];
    // The chunk of step `j` of a tile of row block `key` on core `c`: its SRAM address, and
    // whether it must be loaded first (advancing the cache).
    let mut chunk = |c: usize, key: (u64, u64), j: usize, load: bool| -> (u64, bool) {
        if a_cur[c] != Some(key) {
            if a_cur[c].is_some() {
                a_slot[c] = (a_slot[c] + 1) % cache.len();
            }
            a_cur[c] = Some(key);
            a_have[c] = 0;
        }
        let addr = cache[a_slot[c]] + j as u64 * tm * tk * ssz;
        if j >= a_have[c] && load {
            a_have[c] = j + 1;
            (addr, true)
        } else {
            (addr, false)
        }
    };
    // The operands of batch `bi`.
    let operands = |bi: u64| {
        let mut lead = vec![0; batch.len()];
        let mut rem = bi;
        for i in (0..batch.len()).rev() {
            lead[i] = rem % batch[i];
            rem /= batch[i];
        }
        (
            batch_index(&av, &lead),
            batch_index(&bv, &lead),
            batch_index(&ovr, &lead),
        )
    };
    // Prologue, per core: the loads of its first steps whose operands no core has written since
    // the last barrier (weights), then the previous matmul's deferred epilogue, then the sync
    // point. Whatever barrier orders this op after the previous ones goes there, so the weights
    // stream while the previous op drains.
    let prev = cx.tail.take();
    let tail_writes: Vec<(u64, u64)> = prev
        .iter()
        .flat_map(|t| t.eps.iter().flatten())
        .map(|ep| view_range(&ep.dst))
        .collect();
    let independent = |e: &Emitter, v: &View| {
        let (lo, hi) = view_range(v);
        e.hbm_unwritten(lo, hi) && tail_writes.iter().all(|&(l, h)| h <= lo || hi <= l)
    };
    let a_free = match &produce {
        // A recomputed A is free when the producer's operands are.
        Some(p) => p
            .ins
            .iter()
            .chain(p.params.iter().map(|x| &x.0))
            .all(|v| independent(cx.e, v)),
        None => independent(cx.e, &av),
    };
    let b_free = independent(cx.e, &bv);
    // A bias no op since the last barrier writes (a weight) loads first, in the prologue; one
    // the previous ops produce (the previous matmul's deferred tail among them) loads after the
    // sync point, in the body.
    let bias_free = bias_row.as_ref().is_none_or(|b| independent(cx.e, b));
    if bias_free {
        for c in 0..cx.e.cores() {
            cx.e.core(c);
            load_bias(cx);
        }
    }
    // The prologue moves about what the HBM channel can carry while the previous op drains (four
    // HBM latencies, shared by the cores): more would only hold up a barrier after it.
    let t = &cx.e.target;
    let pro_budget =
        (4 * t.hbm.latency_cycles) as f64 * t.hbm.bandwidth_gb_s / t.clock_ghz / cores as f64;
    let step_bytes = |wm: u64, wk: u64, wn: u64| {
        let a = if resident.is_none() && a_free {
            wm * wk * av.dt.size()
        } else {
            0
        };
        let b = if b_free { wk * wn * bv.dt.size() } else { 0 };
        (a + b) as f64
    };
    let mut a_loaded = vec![false; cores];
    // Every core with work needs all of a resident A: it crosses HBM once, each such core
    // multicasting a slice to all of them — before the weights when nothing orders A after
    // other ops, else after the barrier that does.
    let workers = units.len().min(cores);
    let shared_a = match resident {
        Some(ra) if produce.is_none() && nb == 1 && workers > 1 => {
            SharedA::plan(&operands(0).0, ra, mm, kk, workers)
        }
        _ => None,
    };
    if let Some(sa) = &shared_a
        && a_free
        && cx.e.can_multicast(sa.lo, sa.hi)
    {
        sa.emit(cx);
        a_loaded.iter_mut().take(workers).for_each(|l| *l = true);
    }
    // Steps per core whose A / B tiles the prologue loaded.
    let mut pre_a = vec![0usize; cores];
    let mut pre_b = vec![0usize; cores];
    for c in 0..cores {
        cx.e.core(c);
        let mut i = 0usize;
        let mut bytes = 0f64;
        let mut first_block = None;
        'steps: for tiles in units.iter().skip(c).step_by(cores) {
            for &(bi, m0, wm, n0, wn) in tiles {
                let (a2, b2, _) = operands(bi);
                // With a cache, the prologue stops before a tile of another row block.
                if !cache.is_empty() && *first_block.get_or_insert((bi, m0)) != (bi, m0) {
                    break 'steps;
                }
                if let Some(ra) = resident
                    && a_free
                    && !a_loaded[c]
                {
                    match &produce {
                        Some(p) => p.emit(cx, ra, dt),
                        None => cx.e.move_view(true, &a2, ra, kk),
                    }
                    a_loaded[c] = true;
                }
                let mut k0 = 0;
                while k0 < kk {
                    let wk = tk.min(kk - k0);
                    bytes += step_bytes(wm, wk, wn);
                    if i >= nab || !(a_free || b_free) || (i > 0 && bytes > pro_budget) {
                        break 'steps;
                    }
                    if resident.is_none() && a_free {
                        let at = a2.slice(0, m0, 1, wm).slice(1, k0, 1, wk);
                        if cache.is_empty() {
                            load_as(cx, &at, abuf[i], stage_a, dt);
                        } else if let (addr, true) = chunk(c, (bi, m0), (k0 / tk) as usize, true) {
                            load_as(cx, &at, addr, stage_a, dt);
                        }
                        pre_a[c] += 1;
                    }
                    if b_free {
                        let bt = b2.slice(0, k0, 1, wk).slice(1, n0, 1, wn);
                        load_as(cx, &bt, bbuf[i], stage_b, dt);
                        pre_b[c] += 1;
                    }
                    i += 1;
                    k0 += wk;
                }
            }
        }
        if let Some(ep) = prev
            .as_ref()
            .and_then(|t| t.eps.get(c))
            .and_then(|e| e.as_ref())
        {
            let loc = prev.as_ref().map(|t| t.loc.clone()).unwrap_or_default();
            cx.e.set_loc(&loc);
            epilogue(cx, ep);
            cx.e.set_loc(&crate::backend::loc_string(&cx.loc));
        }
        cx.e.sync_point();
        if !bias_free {
            load_bias(cx);
        }
    }
    if let Some(sa) = &shared_a
        && !a_free
    {
        cx.e.barrier();
        sa.emit(cx);
        a_loaded.iter_mut().take(workers).for_each(|l| *l = true);
    }
    cx.e.strict_alloc(false);
    // The epilogue of output tile `otile` of core `c` (its residual, if any, already loaded).
    let make_ep = |(bi, m0, wm, n0, wn): OutTile, otile: usize| {
        let (_, _, o2) = operands(bi);
        Epilogue {
            acc: T {
                mem: Mem::Acc,
                addr: accb[otile % 2],
                ld: wn,
                dt: DType::F32,
            },
            o32: T::sram(outb[otile % 2], wn, DType::F32),
            oc: T::sram(ocv[otile % 2], wn, ov.dt),
            tmp: T::sram(tmp, wn, DType::F32),
            bias: bias_t
                .map(|(_, f)| T::sram(f + n0 * 4, nn, DType::F32))
                .or_else(|| {
                    let (_, f) = bias_tiles.get(otile % 2)?;
                    Some(T::sram(*f, wn, DType::F32))
                }),
            bias_load: bias_row.as_ref().and_then(|row| {
                let (raw, _) = bias_tiles.get(otile % 2)?;
                Some((row.slice(0, n0, 1, wn), T::sram(*raw, wn, row.dt)))
            }),
            residual: rvr.as_ref().map(|r| T::sram(rbuf[otile % 2], wn, r.dt)),
            alpha,
            act,
            rows: wm,
            cols: wn,
            dst: o2.slice(0, m0, 1, wm).slice(1, n0, 1, wn),
        }
    };
    let ksteps = kk.div_ceil(tk) as usize;
    // Rounds (one work unit per core) roll into a loop while they are uniform: every unit of the
    // same shape at addresses advancing by a constant (one batch, full row blocks, or the full
    // column tiles of one row block), no cached A row blocks.
    let full = |t: &OutTile| t.2 == tm && t.4 == tn;
    let uniform_units = if nb != 1 || !cache.is_empty() {
        0
    } else if row_units {
        units
            .iter()
            .take_while(|u| u.iter().all(|t| t.2 == tm))
            .count()
    } else if mm <= tm {
        units.iter().take_while(|u| full(&u[0])).count()
    } else {
        0
    };
    let uniform_rounds = uniform_units / cores;
    let rounds = units.len().div_ceil(cores);
    let mut steps = vec![0usize; cores];
    let mut otiles = vec![0usize; cores];
    let mut rounds_sweep = Sweep::new(cx.e, uniform_rounds, rounds);
    while let Some((round, skipped)) = rounds_sweep.next(cx.e) {
        if skipped > 0 {
            // The loop stands for the skipped rounds: advance what they would have advanced.
            for c in 0..cores {
                let tiles = units[c].len();
                otiles[c] += skipped * tiles;
                steps[c] += skipped * tiles * ksteps;
                let last = units[(round - 1) * cores + c][tiles - 1];
                pending[c] = Some(make_ep(last, otiles[c] - 1));
            }
        }
        let first = round * cores;
        for (u, tiles) in units.iter().enumerate().skip(first).take(cores) {
            cx.on_core(u);
            let c = u % cores;
            // The tiles of a row block roll like the rounds when they are uniform.
            let uniform_tiles = tiles.iter().take_while(|t| full(t)).count();
            let mut tile_sweep = Sweep::new(cx.e, uniform_tiles, tiles.len());
            while let Some((ti, skipped)) = tile_sweep.next(cx.e) {
                if skipped > 0 {
                    otiles[c] += skipped;
                    steps[c] += skipped * ksteps;
                    pending[c] = Some(make_ep(tiles[ti - 1], otiles[c] - 1));
                }
                let (bi, m0, wm, n0, wn) = tiles[ti];
                let (a2, b2, _) = operands(bi);
                let otile = otiles[c];
                if let Some(ra) = resident
                    && !a_loaded[c]
                {
                    match &produce {
                        Some(p) => p.emit(cx, ra, dt),
                        None => cx.e.move_view(true, &a2, ra, kk),
                    }
                    a_loaded[c] = true;
                }
                let acc = T {
                    mem: Mem::Acc,
                    addr: accb[otile % 2],
                    ld: wn,
                    dt: DType::F32,
                };
                // The K steps: full ones roll (period: the A/B ring), a partial last one after.
                let full_steps = (kk / tk) as usize;
                let step0 = steps[c];
                let mut step_sweep = Sweep::new(cx.e, full_steps, ksteps);
                while let Some((j, _)) = step_sweep.next(cx.e) {
                    let k0 = j as u64 * tk;
                    let wk = tk.min(kk - k0);
                    let i = step0 + j;
                    let s = i % nab;
                    let at = a2.slice(0, m0, 1, wm).slice(1, k0, 1, wk);
                    let bt = b2.slice(0, k0, 1, wk).slice(1, n0, 1, wn);
                    let a_op = match resident {
                        Some(ra) => T::sram(ra + (m0 * kk + k0) * ssz, kk, dt),
                        None if !cache.is_empty() => {
                            let (addr, load) =
                                chunk(c, (bi, m0), (k0 / tk) as usize, i >= pre_a[c]);
                            if load {
                                load_as(cx, &at, addr, stage_a, dt);
                            }
                            T::sram(addr, wk, dt)
                        }
                        None => {
                            if i >= pre_a[c] {
                                load_as(cx, &at, abuf[s], stage_a, dt);
                            }
                            T::sram(abuf[s], wk, dt)
                        }
                    };
                    if i >= pre_b[c] {
                        load_as(cx, &bt, bbuf[s], stage_b, dt);
                    }
                    cx.e.matmul(acc, a_op, T::sram(bbuf[s], wn, dt), wm, wk, wn, k0 > 0);
                }
                steps[c] = step0 + ksteps;
                if let Some(r) = &rvr {
                    let mut lead = vec![0; batch.len()];
                    let mut rem = bi;
                    for i in (0..batch.len()).rev() {
                        lead[i] = rem % batch[i];
                        rem /= batch[i];
                    }
                    let rt = batch_index(r, &lead)
                        .slice(0, m0, 1, wm)
                        .slice(1, n0, 1, wn);
                    cx.e.move_view(true, &rt, rbuf[otile % 2], wn);
                }
                let ep = make_ep((bi, m0, wm, n0, wn), otile);
                // The previous tile's epilogue goes after this tile's loads, so its store never
                // holds up the DMA queue in front of them.
                if let Some(prev) = pending[c].replace(ep) {
                    epilogue(cx, &prev);
                }
                otiles[c] += 1;
            }
        }
    }
    // The last epilogues: deferred into the next op (after its first loads) when this kernel's
    // buffers are small enough to stay reserved meanwhile, else emitted now.
    let small = cx.e.used(Mem::Sram) <= cx.e.target.sram.size_bytes / 8
        && cx.e.used(Mem::Acc) <= cx.e.target.accumulator.size_bytes / 8;
    if defer && small {
        *cx.tail = Some(Tail {
            loc: crate::backend::loc_string(&cx.loc),
            eps: pending,
        });
        cx.e.strict_alloc(true);
    } else {
        for (c, p) in pending.iter_mut().enumerate() {
            if let Some(ep) = p.take() {
                cx.e.core(c);
                epilogue(cx, &ep);
            }
        }
    }
    Ok(())
}

/// A resident A read from HBM once for cores `0..workers`: the slice each of them multicasts
/// (contiguous: of the elements when A is dense, else of its rows) and where it lands in SRAM
/// (row stride `ld`).
pub(super) struct SharedA {
    pieces: Vec<(View, u64)>,
    ld: u64,
    lo: u64,
    hi: u64,
    workers: usize,
}

impl SharedA {
    /// The slices of the `mm × kk` operand `a` resident at `ra`; `None` when A is not dense and
    /// has fewer rows than `workers`.
    fn plan(a: &View, ra: u64, mm: u64, kk: u64, workers: usize) -> Option<SharedA> {
        let ssz = a.dt.size();
        let flat = a.is_contiguous().then(|| a.reshape(&[mm * kk])).flatten();
        let (whole, len, unit) = match flat {
            Some(f) => (f, mm * kk, 1),
            None if mm >= workers as u64 => (a.clone(), mm, kk),
            None => return None,
        };
        let senders = (workers as u64).min(len);
        let pieces = (0..senders)
            .map(|c| {
                let (lo, hi) = (c * len / senders, (c + 1) * len / senders);
                (whole.slice(0, lo, 1, hi - lo), ra + lo * unit * ssz)
            })
            .collect();
        Some(SharedA {
            pieces,
            ld: kk,
            lo: ra,
            hi: ra + mm * kk * ssz,
            workers,
        })
    }

    /// Core `c` sends piece `c` to all the workers; each worker then waits for every piece before
    /// its matrix unit reads A.
    fn emit(&self, cx: &mut Cx) {
        let dests = 0..self.workers as u32;
        let mut arrivals = 0;
        for (c, (piece, at)) in self.pieces.iter().enumerate() {
            cx.e.core(c);
            arrivals +=
                cx.e.multicast_view(piece, *at, self.ld, dests.clone(), MULTICAST_SEM);
        }
        for c in 0..self.workers {
            cx.e.core(c);
            cx.e.multicast_wait(arrivals, self.lo, self.hi);
        }
    }
}

/// The last epilogue of each core of a matmul, emitted by the next op (a matmul does so after
/// its first loads; any other op before it starts, [`flush_tail`]). Its buffers stay reserved
/// until then: the emitter allocates the next kernel's buffers clear of them.
#[derive(Clone)]
pub struct Tail {
    loc: String,
    eps: Vec<Option<Epilogue>>,
}

/// Emits a deferred [`Tail`] now, as the prologue of the open op (call it first): the op's own
/// instructions are then checked against the tail's stores like against any earlier op's.
pub fn flush_tail(cx: &mut Cx) {
    if let Some(t) = cx.tail.take() {
        cx.e.set_loc(&t.loc);
        for (c, ep) in t.eps.iter().enumerate() {
            cx.e.core(c);
            if let Some(ep) = ep {
                epilogue(cx, ep);
            }
            cx.e.sync_point();
        }
        cx.e.core(0);
        cx.e.set_loc(&crate::backend::loc_string(&cx.loc));
        cx.e.strict_alloc(false);
    }
}

/// Bounding HBM byte range `[lo, hi)` of a view.
pub(super) fn view_range(v: &View) -> (u64, u64) {
    let size = v.dt.size() as i128;
    let (mut lo, mut hi) = (v.addr as i128, v.addr as i128);
    for (&n, &st) in v.shape.iter().zip(&v.strides) {
        if n == 0 {
            return (v.addr.max(0) as u64, v.addr.max(0) as u64);
        }
        let span = (n as i128 - 1) * st as i128 * size;
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    (lo.max(0) as u64, (hi + size).max(0) as u64)
}

/// A single-row-block producer of a matmul's A operand, recomputed by the matmul on every core
/// that has work (instead of one core computing it, storing it, a barrier, and every core loading
/// it): an RMS/layer norm over the last axis, or a same-shape elementwise add/sub/mul. The math is
/// the row and elementwise kernels' (f32 on the vector unit, one rounding to the result's type).
pub(super) struct Producer {
    kind: ProducerKind,
    rows: u64,
    cols: u64,
    /// Operand views as `[rows, cols]` (norm: x; binary: both).
    ins: Vec<View>,
    /// Norm parameters as `[cols]` views with their raw and f32 SRAM buffers.
    params: Vec<(View, u64, u64)>,
    /// SRAM: one staging tile per operand, the f32 work tile, two per-row statistics.
    stage: Vec<u64>,
    work: u64,
    stats: (u64, u64),
}

#[derive(Clone, Copy)]
pub(super) enum ProducerKind {
    Norm { eps: f32, rms: bool },
    Binary(Bin),
}

impl Producer {
    fn new(cx: &mut Cx, p: OpId, rows: u64, cols: u64) -> R<Producer> {
        let m = cx.m;
        let d = m.op(p);
        let kind = producer_kind(m, p)
            .ok_or_else(|| cx.err("internal: unsupported recomputed producer"))?;
        let as2d = |cx: &Cx, v: ValueId| -> R<View> {
            cx.view(v)?
                .reshape(&[rows, cols])
                .ok_or_else(|| cx.err("internal: recomputed operand is not [rows, cols]"))
        };
        let n_in = match kind {
            ProducerKind::Norm { .. } => 1,
            ProducerKind::Binary(_) => 2,
        };
        let mut ins = vec![];
        for &v in &d.operands[..n_in] {
            ins.push(as2d(cx, v)?);
        }
        let mut params = vec![];
        if let ProducerKind::Norm { .. } = kind {
            for &v in &d.operands[1..] {
                let pv = cx.view(v)?;
                let pv = pv
                    .reshape(&[cols])
                    .or_else(|| pv.broadcast_to(&[cols]))
                    .ok_or_else(|| cx.err("norm parameter shape does not match the row"))?;
                let raw = cx.alloc(Mem::Sram, cols * pv.dt.size(), "norm parameter")?;
                let f = cx.alloc(Mem::Sram, cols * 4, "norm parameter")?;
                params.push((pv, raw, f));
            }
        }
        let mut stage = vec![];
        for v in &ins {
            stage.push(cx.alloc(Mem::Sram, rows * cols * v.dt.size(), "recomputed operand")?);
        }
        let work = cx.alloc(Mem::Sram, rows * cols * 4, "recomputed row")?;
        let s1 = cx.alloc(Mem::Sram, rows * 4, "row statistics")?;
        let s2 = cx.alloc(Mem::Sram, rows * 4, "row statistics")?;
        Ok(Producer {
            kind,
            rows,
            cols,
            ins,
            params,
            stage,
            work,
            stats: (s1, s2),
        })
    }

    /// Computes the producer on the current core into SRAM `dst` (`[rows, cols]` of `dt`).
    fn emit(&self, cx: &mut Cx, dst: u64, dt: DType) {
        let (rows, cols) = (self.rows, self.cols);
        for (v, &st) in self.ins.iter().zip(&self.stage) {
            cx.e.move_view(true, v, st, cols);
        }
        let e = &mut *cx.e;
        let mut prm = vec![];
        for (pv, raw, f) in &self.params {
            e.move_view(true, pv, *raw, cols);
            let ft = T::sram(*f, cols, DType::F32);
            e.vun(
                Un::Copy,
                ft,
                T::sram(*raw, cols, pv.dt),
                Bcast::Full,
                1,
                cols,
            );
            prm.push(ft);
        }
        let w = T::sram(self.work, cols, DType::F32);
        let a = T::sram(self.stage[0], cols, self.ins[0].dt);
        match self.kind {
            ProducerKind::Binary(k) => {
                let b = T::sram(self.stage[1], cols, self.ins[1].dt);
                e.vbin(k, w, a, b, Bcast::Full, rows, cols);
            }
            ProducerKind::Norm { eps, rms } => {
                let stats = (
                    T::sram(self.stats.0, 1, DType::F32),
                    T::sram(self.stats.1, 1, DType::F32),
                );
                norm_rows(e, w, a, stats, &prm, eps, rms, rows, cols);
            }
        }
        e.vun(Un::Copy, T::sram(dst, cols, dt), w, Bcast::Full, rows, cols);
    }
}

/// The recomputable kind of op `p`, if any.
pub(super) fn producer_kind(m: &Module, p: OpId) -> Option<ProducerKind> {
    let d = m.op(p);
    match d.name.as_str() {
        graph::LayerNorm::NAME | graph::RmsNorm::NAME | graph::Norm::NAME => {
            let rank = shape_of(m, *d.results.first()?)?.len() as i64;
            let ax = attr_i(m, p, "axis").unwrap_or(-1);
            if ax != -1 && ax != rank - 1 {
                return None;
            }
            if d.results[1..].iter().any(|&r| !m.uses(r).is_empty()) || d.operands.len() > 3 {
                return None;
            }
            Some(ProducerKind::Norm {
                eps: attr_f(m, p, "epsilon").unwrap_or(1e-5) as f32,
                rms: d.name == graph::RmsNorm::NAME
                    || m.attr(p, "kind").and_then(Attribute::as_str) == Some("rms"),
            })
        }
        graph::Add::NAME | graph::Sub::NAME | graph::Mul::NAME if d.operands.len() == 2 => {
            let out = shape_of(m, d.results[0])?;
            let same = d
                .operands
                .iter()
                .all(|&v| shape_of(m, v).as_deref() == Some(out.as_slice()));
            let float = d
                .operands
                .iter()
                .chain(&d.results)
                .all(|&v| elem_of(m, v).is_some_and(|e| e.is_float()));
            (same && float).then_some(ProducerKind::Binary(match d.name.as_str() {
                graph::Add::NAME => Bin::Add,
                graph::Sub::NAME => Bin::Sub,
                _ => Bin::Mul,
            }))
        }
        _ => None,
    }
}

/// Results of single-row producers whose every consumer is a matmul taking them as its A operand
/// in one resident row block, on a multi-core target: each consumer recomputes the producer on
/// every core ([`Producer`]), so the producer op emits nothing. That removes one store, one
/// barrier and one load round trip per such boundary (RMSNorm → Q/K/V in a decode step). Safe
/// only while the producer's operands stay intact until the last consumer has read them: no op
/// from the producer up to the last consumer may write HBM overlapping them.
pub fn recomputed_producers(
    m: &Module,
    plan: &Plan,
    ops: &[OpId],
    o: &Options,
) -> HashMap<ValueId, OpId> {
    let mut out = HashMap::new();
    let t = &o.target;
    if t.cores <= 1 {
        return out;
    }
    let dt = match o.precision {
        Precision::Fp32 => DType::F32,
        Precision::Bf16 => DType::BF16,
    };
    let pos: HashMap<OpId, usize> = ops.iter().enumerate().map(|(i, &op)| (op, i)).collect();
    for (i, &p) in ops.iter().enumerate() {
        if producer_kind(m, p).is_none() {
            continue;
        }
        let d = m.op(p);
        let r = d.results[0];
        let (Some(rv), Some(shape)) = (plan.views.get(&r), shape_of(m, r)) else {
            continue;
        };
        // One `[rows, cols]` matrix (leading dims of extent 1): the consumer has one batch.
        let cols = *shape.last().unwrap_or(&0);
        let rows: u64 = shape[..shape.len().saturating_sub(1)].iter().product();
        let one_batch = shape.len() >= 2 && shape[..shape.len() - 2].iter().all(|&x| x == 1);
        if !one_batch || rows == 0 || rows > t.matrix.rows as u64 || cols == 0 || rv.dt != dt {
            continue;
        }
        if !plan.owned.contains_key(&r) {
            continue;
        }
        let uses = m.uses(r);
        let consumers_ok = !uses.is_empty()
            && uses.iter().all(|&(u, ix)| {
                ix == 0
                    && matches!(
                        m.op(u).name.as_str(),
                        graph::MatMul::NAME | graph::MatMulEpilogue::NAME
                    )
                    && pos.contains_key(&u)
                    && m.op(u)
                        .operands
                        .get(1)
                        .and_then(|&b| shape_of(m, b))
                        .is_some_and(|bs| {
                            // B is one [K, N] matrix (no batch), A's rows are one block.
                            bs.len() == 2 && bs[0] == cols
                        })
                    && shape_of(m, m.op(u).results[0])
                        .is_some_and(|os| os[..os.len() - 1].iter().product::<u64>() == rows)
            });
        if !consumers_ok {
            continue;
        }
        let last = uses
            .iter()
            .filter_map(|(u, _)| pos.get(u))
            .max()
            .copied()
            .unwrap_or(i);
        let inputs: Vec<(u64, u64)> = d
            .operands
            .iter()
            .filter_map(|v| plan.views.get(v))
            .map(view_range)
            .collect();
        if inputs.len() != d.operands.len() {
            continue;
        }
        // Ops that emit code write their results' views; pure view ops write nothing.
        let clobbered = ops[i + 1..=last].iter().any(|&q| {
            !view_only(plan, m, q)
                && m.op(q)
                    .results
                    .iter()
                    .filter_map(|v| plan.views.get(v))
                    .any(|w| {
                        let (lo, hi) = view_range(w);
                        inputs.iter().any(|&(l, h)| lo < h && l < hi)
                    })
        });
        if !clobbered {
            out.insert(r, p);
        }
    }
    out
}

/// What a matmul's epilogue computes on each output tile: `act(alpha · acc + bias) + residual`.
pub(super) struct EpilogueOps {
    /// Broadcast along the output rows.
    bias: Option<View>,
    /// Of the output's shape (a broadcast view where the operand is smaller).
    residual: Option<View>,
    act: Act,
    alpha: f32,
}

/// Everything the epilogue of one output tile needs.
#[derive(Clone)]
pub(super) struct Epilogue {
    acc: T,
    o32: T,
    oc: T,
    tmp: T,
    bias: Option<T>,
    /// The slice of the bias row to load into `raw` and convert into `bias` first, when the
    /// whole row does not stay in SRAM.
    bias_load: Option<(View, T)>,
    /// The tile's residual in SRAM (loaded in its own element type), added after the activation.
    residual: Option<T>,
    alpha: f32,
    act: Act,
    rows: u64,
    cols: u64,
    dst: View,
}

/// Accumulator → f32 SRAM (× alpha, + bias, activation, + residual) → output type → HBM.
/// Applies `act` to the f32 tile `x` in place (`tt`: an f32 scratch tile of the same shape).
pub fn activation(e: &mut Emitter, act: Act, x: T, tt: T, wm: u64, wn: u64) {
    match act {
        Act::None => {}
        Act::Relu => e.vimm(Imm::Max, x, x, 0.0, wm, wn),
        Act::Silu => {
            e.vun(Un::Sigmoid, tt, x, Bcast::Full, wm, wn);
            e.vbin(Bin::Mul, x, x, tt, Bcast::Full, wm, wn);
        }
        Act::Gelu(tanh) => {
            if tanh {
                // √(2/π)·(x + 0.044715·x³) as x·(√(2/π) + 0.044715·√(2/π)·x²): four simple
                // passes instead of a special-function power and three simple ones.
                const S: f32 = 0.797_884_6;
                e.vbin(Bin::Mul, tt, x, x, Bcast::Full, wm, wn);
                e.vimm(Imm::Mul, tt, tt, 0.044715 * S, wm, wn);
                e.vimm(Imm::Add, tt, tt, S, wm, wn);
                e.vbin(Bin::Mul, tt, tt, x, Bcast::Full, wm, wn);
                e.vun(Un::Tanh, tt, tt, Bcast::Full, wm, wn);
            } else {
                e.vimm(Imm::Mul, tt, x, std::f32::consts::FRAC_1_SQRT_2, wm, wn);
                e.vun(Un::Erf, tt, tt, Bcast::Full, wm, wn);
            }
            e.vimm(Imm::Add, tt, tt, 1.0, wm, wn);
            e.vbin(Bin::Mul, x, x, tt, Bcast::Full, wm, wn);
            e.vimm(Imm::Mul, x, x, 0.5, wm, wn);
        }
    }
}

pub(super) fn epilogue(cx: &mut Cx, ep: &Epilogue) {
    let (wm, wn, o32, tt) = (ep.rows, ep.cols, ep.o32, ep.tmp);
    if let (Some((row, raw)), Some(bt)) = (&ep.bias_load, ep.bias) {
        cx.e.move_view(true, row, raw.addr, wn);
        cx.e.vun(Un::Copy, bt, *raw, Bcast::Full, 1, wn);
    }
    let e = &mut *cx.e;
    if ep.alpha == 1.0
        && ep.bias.is_none()
        && ep.residual.is_none()
        && ep.act == Act::None
        && ep.dst.dt != DType::F32
    {
        // Nothing to compute: one pass converts the accumulator to the output type.
        e.vun(Un::Copy, ep.oc, ep.acc, Bcast::Full, wm, wn);
        cx.e.move_view(false, &ep.dst, ep.oc.addr, wn);
        return;
    }
    let acc = if ep.alpha != 1.0 {
        e.vimm(Imm::Mul, o32, ep.acc, ep.alpha, wm, wn);
        o32
    } else {
        ep.acc
    };
    match ep.bias {
        Some(bt) => e.vbin(Bin::Add, o32, acc, bt, Bcast::Row, wm, wn),
        None => e.vun(Un::Copy, o32, acc, Bcast::Full, wm, wn),
    }
    activation(e, ep.act, o32, tt, wm, wn);
    if let Some(rt) = ep.residual {
        let r32 = if rt.dt == DType::F32 {
            rt
        } else {
            e.vun(Un::Copy, tt, rt, Bcast::Full, wm, wn);
            tt
        };
        e.vbin(Bin::Add, o32, o32, r32, Bcast::Full, wm, wn);
    }
    let res = if ep.dst.dt == DType::F32 {
        o32
    } else {
        e.vun(Un::Copy, ep.oc, o32, Bcast::Full, wm, wn);
        ep.oc
    };
    cx.e.move_view(false, &ep.dst, res.addr, wn);
}

/// ONNX Gemm: `alpha · op(A) · op(B) + beta · C`. Transposes are free views; `alpha` scales in
/// the epilogue; a row-broadcast `C` is the bias, any other `C` is added elementwise afterwards.
pub(super) fn gemm(cx: &mut Cx, op: OpId, ins: &[ValueId], ov: &View) -> R<()> {
    let m = cx.m;
    let ta = attr_i(m, op, "transA").unwrap_or(0) != 0;
    let tb = attr_i(m, op, "transB").unwrap_or(0) != 0;
    let alpha = attr_f(m, op, "alpha").unwrap_or(1.0);
    let beta = attr_f(m, op, "beta").unwrap_or(1.0);
    let mut av = cx.view(ins[0])?;
    let mut bv = cx.view(ins[1])?;
    if ta {
        av = av.permute(&[1, 0]);
    }
    if tb {
        bv = bv.permute(&[1, 0]);
    }
    let n = ov.shape[1];
    let c = match ins.get(2) {
        Some(&c) if beta != 0.0 => Some(cx.view(c)?),
        _ => None,
    };
    let row_bias = c.as_ref().is_some_and(|cv| {
        beta == 1.0 && (cv.reshape(&[n]).is_some() || cv.broadcast_to(&[n]).is_some())
    });
    let bias = if row_bias { c.clone() } else { None };
    // A C added afterwards reads the output: the epilogues must be emitted before.
    let defer = c.is_none() || row_bias;
    let ep = EpilogueOps {
        bias,
        residual: None,
        act: Act::None,
        alpha: alpha as f32,
    };
    matmul_views(cx, op, av, bv, ep, ov, defer, None)?;
    if let (Some(cv), false) = (c, row_bias) {
        // out = out + beta · C, elementwise over the output tile rows.
        let cb = cv
            .broadcast_to(&ov.shape)
            .ok_or_else(|| cx.err("Gemm C does not broadcast to the output"))?;
        add_scaled(cx, ov, &cb, beta as f32)?;
    }
    Ok(())
}

/// `out += s · c` (both `[rows, cols]`).
pub(super) fn add_scaled(cx: &mut Cx, out: &View, c: &View, s: f32) -> R<()> {
    let cols = out.shape[1];
    let rows = out.shape[0];
    let a = cx.alloc(Mem::Sram, rows * cols * out.dt.size(), "gemm C")?;
    let b = cx.alloc(Mem::Sram, rows * cols * c.dt.size(), "gemm C")?;
    let w = cx.alloc(Mem::Sram, rows * cols * 4, "gemm C")?;
    cx.e.core(0);
    cx.e.move_view(true, out, a, cols);
    cx.e.move_view(true, c, b, cols);
    let wt = T::sram(w, cols, DType::F32);
    cx.e.vimm(Imm::Mul, wt, T::sram(b, cols, c.dt), s, rows, cols);
    cx.e.vbin(
        Bin::Add,
        T::sram(a, cols, out.dt),
        T::sram(a, cols, out.dt),
        wt,
        Bcast::Full,
        rows,
        cols,
    );
    cx.e.move_view(false, out, a, cols);
    Ok(())
}
