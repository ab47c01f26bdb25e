//! Row kernels: softmax, log-softmax, layer and RMS norm (with their statistics outputs) over
//! the last axis, and reductions; rows wider than SRAM go through `split_rows.rs`.

use super::*;
use crate::dialects::graph;

/// Row-wise computations over the trailing dims.
#[derive(Clone, Copy, Debug)]
pub(super) enum RowK {
    Softmax(bool),
    Norm { eps: f32, rms: bool },
}

pub(super) fn row_kernel(cx: &mut Cx, k: RowK, x: &View, o: &View, params: &[View]) -> R<()> {
    row_kernel_inner(cx, k, x, o, params, 1)
}

pub(super) fn row_kernel_inner(
    cx: &mut Cx,
    k: RowK,
    x: &View,
    o: &View,
    params: &[View],
    inner: usize,
) -> R<()> {
    row_kernel_stats(cx, k, x, o, params, inner, &[])
}

/// Stores a normalization's per-row mean (`src[0]`) and inverse standard deviation (`src[1]`,
/// f32 `rows × 1` tiles) of tile `t` to the requested statistics outputs.
pub(super) fn store_stats(cx: &mut Cx, stats: &[Option<View>], t: &Tile, src: [T; 2], rows: u64) {
    for (stat, src) in stats.iter().zip(src) {
        let Some(sv) = stat else { continue };
        let src = if sv.dt == DType::F32 {
            src
        } else {
            // Converted in place: the narrower value fits the f32 slot it came from.
            let c = T::sram(src.addr, 1, sv.dt);
            cx.e.vun(Un::Copy, c, src, Bcast::Full, rows, 1);
            c
        };
        cx.e.move_view(false, &tile_view(sv, t), src.addr, 1);
    }
}

/// `x`, `o` and the row statistics with their outer dims merged (see [`merge_outer`]), if any
/// merge.
pub(super) fn merge_rows(
    x: &View,
    o: &View,
    stats: &[Option<View>],
) -> Option<(View, View, Vec<Option<View>>)> {
    let mut vs = vec![x.clone(), o.clone()];
    vs.extend(stats.iter().flatten().cloned());
    let m = merge_outer(&vs);
    if m[0].shape.len() == x.shape.len() {
        return None;
    }
    let mut it = m[2..].iter().cloned();
    let st = stats
        .iter()
        .map(|s| s.as_ref().and_then(|_| it.next()))
        .collect();
    Some((m[0].clone(), m[1].clone(), st))
}

/// Row kernel that also stores the per-row mean and inverse standard deviation (`stats[0]`,
/// `stats[1]`, each `[rows…, 1]`) of a normalization when asked.
pub(super) fn row_kernel_stats(
    cx: &mut Cx,
    k: RowK,
    x: &View,
    o: &View,
    params: &[View],
    inner: usize,
    stats: &[Option<View>],
) -> R<()> {
    let r = x.shape.len();
    let inner = inner.clamp(1, r.max(1));
    if inner == 1
        && let Some((x, o, stats)) = merge_rows(x, o, stats)
    {
        return row_kernel_stats(cx, k, &x, &o, params, 1, &stats);
    }
    let cols: u64 = x.shape[r - inner..].iter().product();
    let per_row = cols * (x.dt.size() + 4 + o.dt.size()) + 16;
    let param_bytes: u64 = params
        .iter()
        .map(|p| (cols * p.dt.size()).div_ceil(64) * 64 + (cols * 4).div_ceil(64) * 64)
        .sum();
    if cx.e.free(Mem::Sram).saturating_sub(param_bytes) < 2 * per_row + 64
        || cols > split_rows::MAX_COLS
    {
        let mut sh = x.shape[..r - inner].to_vec();
        sh.push(cols);
        let not_dense = || {
            cx.err(format!(
                "a row of {cols} elements does not fit in SRAM and its dims are not dense"
            ))
        };
        let xm = x.reshape(&sh).ok_or_else(not_dense)?;
        let om = o.reshape(&sh).ok_or_else(not_dense)?;
        let mut pm = vec![];
        for p in params {
            pm.push(
                p.reshape(&[cols])
                    .or_else(|| p.broadcast_to(&x.shape[r - inner..])?.reshape(&[cols]))
                    .ok_or_else(not_dense)?,
            );
        }
        return split_rows::row_kernel_chunked(cx, k, &xm, &om, &pm, stats);
    }
    // Parameters (scale, bias) broadcast over the row: loaded once, converted to f32.
    let mut prm = vec![];
    for p in params {
        let pv = p
            .reshape(&[cols])
            .or_else(|| p.broadcast_to(&x.shape[r - inner..]))
            .ok_or_else(|| cx.err("norm parameter shape does not match the normalized dims"))?;
        let raw = cx.alloc(Mem::Sram, cols * pv.dt.size(), "norm parameter")?;
        let f = cx.alloc(Mem::Sram, cols * 4, "norm parameter")?;
        // A parameter broadcast over several normalized dims lands densely: its SRAM row stride
        // is its own last dim (with `cols` the rows of a scalar scale landed `cols` apart and the
        // copy below read bytes nobody wrote — found by the `check` fuzz target).
        let ld = match pv.shape.len() {
            0 | 1 => cols,
            _ => *pv.shape.last().unwrap_or(&cols),
        };
        for c in 0..cx.e.cores() {
            cx.e.core(c);
            cx.e.move_view(true, &pv, raw, ld);
            cx.e.vun(
                Un::Copy,
                T::sram(f, cols, DType::F32),
                T::sram(raw, cols, pv.dt),
                Bcast::Full,
                1,
                cols,
            );
        }
        prm.push(T::sram(f, cols, DType::F32));
    }
    let max_rows = cx.double_buffered_rows(per_row);
    if max_rows == 0 {
        return Err(cx.err(format!(
            "a row of {cols} elements does not fit in SRAM ({} bytes free)",
            cx.e.free(Mem::Sram)
        )));
    }
    let total_rows = x.elems() / cols.max(1);
    let tiles = row_tiles(&x.shape, inner, cx.spread(total_rows, max_rows));
    let mr = tiles.iter().map(|t| t.rows).max().unwrap_or(1);
    let nsets = if tiles.len() > cx.e.cores() { 2 } else { 1 };
    let mut sets = vec![];
    for _ in 0..nsets {
        let a = cx.alloc(Mem::Sram, mr * cols * x.dt.size(), "row tile")?;
        let w = cx.alloc(Mem::Sram, mr * cols * 4, "row tile")?;
        let s1 = cx.alloc(Mem::Sram, mr * 4, "row statistics")?;
        let s2 = cx.alloc(Mem::Sram, mr * 4, "row statistics")?;
        let ot = cx.alloc(Mem::Sram, mr * cols * o.dt.size(), "row tile")?;
        sets.push((a, w, s1, s2, ot));
    }
    // Rounds of one tile per core roll like the elementwise kernels'.
    let cores = cx.e.cores();
    let uniform_rounds = uniform_rounds(&tiles, mr, cores);
    let mut sweep = Sweep::new(cx.e, uniform_rounds, tiles.len().div_ceil(cores));
    while let Some((round, _)) = sweep.next(cx.e) {
        for (i, t) in tiles.iter().enumerate().skip(round * cores).take(cores) {
            let par = cx.on_core(i);
            let (a, w, s1, s2, ot) = sets[par.min(sets.len() - 1)];
            let rows = t.rows;
            // The row (the trailing `inner` dims) lands densely: the view's last dim is the SRAM
            // row stride, so a multi-dim row is `cols` contiguous elements.
            let last = *x.shape.last().unwrap_or(&1);
            cx.e.move_view(true, &tile_view(x, t), a, last);
            let (a, w) = (T::sram(a, cols, x.dt), T::sram(w, cols, DType::F32));
            let (s1, s2) = (T::sram(s1, 1, DType::F32), T::sram(s2, 1, DType::F32));
            let e = &mut *cx.e;
            match k {
                RowK::Softmax(log) => {
                    e.vred(Red::Max, s1, a, rows, cols);
                    e.vbin(Bin::Sub, w, a, s1, Bcast::Col, rows, cols);
                    if log {
                        let ex = T::sram(ot, cols, DType::F32);
                        // log_softmax = (x - max) - ln Σ exp(x - max); use the output tile as scratch
                        // only when it is f32 wide enough, else recompute per row.
                        if o.dt == DType::F32 {
                            e.vun(Un::Exp, ex, w, Bcast::Full, rows, cols);
                            e.vred(Red::Sum, s2, ex, rows, cols);
                        } else {
                            e.vun(Un::Exp, w, w, Bcast::Full, rows, cols);
                            e.vred(Red::Sum, s2, w, rows, cols);
                            e.vbin(Bin::Sub, w, a, s1, Bcast::Col, rows, cols);
                        }
                        e.vun(Un::Log, s2, s2, Bcast::Full, rows, 1);
                        e.vbin(Bin::Sub, w, w, s2, Bcast::Col, rows, cols);
                    } else {
                        softmax_tail(e, w, s2, rows, cols);
                    }
                }
                RowK::Norm { eps, rms } => norm_rows(e, w, a, (s1, s2), &prm, eps, rms, rows, cols),
            }
            let res = if o.dt == DType::F32 {
                w
            } else {
                let ot = T::sram(ot, cols, o.dt);
                e.vun(Un::Copy, ot, w, Bcast::Full, rows, cols);
                ot
            };
            cx.e.move_view(
                false,
                &tile_view(o, t),
                res.addr,
                *o.shape.last().unwrap_or(&1),
            );
            store_stats(cx, stats, t, [s1, s2], rows);
        }
    }
    Ok(())
}

pub(super) fn reduce(cx: &mut Cx, op: OpId, ins: &[ValueId], ov: &View) -> R<()> {
    let m = cx.m;
    let name = m.op(op).name.clone();
    let x = cx.view(ins[0])?;
    let rank = x.shape.len();
    let axes: Vec<i64> = match ins.get(1) {
        Some(&a) => crate::backend::plan::const_ints(m, a)
            .ok_or_else(|| cx.run_time_err("reduction axes", a))?,
        None => m
            .attr(op, "axes")
            .and_then(Attribute::as_i64_list)
            .unwrap_or_default(),
    };
    let noop = attr_i(m, op, "noop_with_empty_axes").unwrap_or(0) != 0;
    let mut axes: Vec<usize> = if axes.is_empty() {
        if noop { vec![] } else { (0..rank).collect() }
    } else {
        axes.iter()
            .map(|&a| axis(cx, a, rank))
            .collect::<R<Vec<_>>>()?
    };
    axes.sort();
    axes.dedup();
    if axes.is_empty() {
        return copy(cx, &x, &ov.reshape(&x.shape).unwrap_or(ov.clone()));
    }
    let keep: Vec<usize> = (0..rank).filter(|i| !axes.contains(i)).collect();
    let mut perm = keep.clone();
    perm.extend(&axes);
    let xp = x.permute(&perm);
    let cols: u64 = axes.iter().map(|&a| x.shape[a]).product();
    let mut oshape: Vec<u64> = keep.iter().map(|&a| x.shape[a]).collect();
    oshape.push(1);
    let ovp = ov
        .reshape(&oshape)
        .ok_or_else(|| cx.err("reduction output is not dense"))?;
    let inner = axes.len();
    let per_row = cols * (x.dt.size() + 4) + 32;
    let max_rows = (cx.e.free(Mem::Sram) / (2 * per_row + 64)).max(1);
    let total_rows = x.elems() / cols.max(1);
    let max_rows = cx.spread(total_rows, max_rows.min(65535));
    let tiles = row_tiles(&xp.shape, inner, max_rows);
    let mr = tiles.iter().map(|t| t.rows).max().unwrap_or(1);
    let a = cx.alloc(Mem::Sram, mr * cols * x.dt.size(), "reduce tile")?;
    let w = cx.alloc(Mem::Sram, mr * cols * 4, "reduce tile")?;
    let s = cx.alloc(Mem::Sram, mr * 4, "reduce result")?;
    let so = cx.alloc(Mem::Sram, mr * ov.dt.size().max(4), "reduce result")?;
    // Output tiles iterate the kept dims (+ the trailing 1).
    let otiles = row_tiles(&ovp.shape, 1, max_rows);
    if otiles.len() != tiles.len() {
        return Err(cx.err("internal: reduction tiling mismatch"));
    }
    for (i, (t, ot)) in tiles.iter().zip(&otiles).enumerate() {
        cx.on_core(i);
        let rows = t.rows;
        cx.e.move_view(true, &tile_view(&xp, t), a, *xp.shape.last().unwrap_or(&1));
        let (at, wt, st) = (
            T::sram(a, cols, x.dt),
            T::sram(w, cols, DType::F32),
            T::sram(s, 1, DType::F32),
        );
        let e = &mut *cx.e;
        match name.as_str() {
            graph::ReduceMax::NAME => e.vred(Red::Max, st, at, rows, cols),
            graph::ReduceL2::NAME => {
                e.vbin(Bin::Mul, wt, at, at, Bcast::Full, rows, cols);
                e.vred(Red::Sum, st, wt, rows, cols);
                e.vun(Un::Sqrt, st, st, Bcast::Full, rows, 1);
            }
            _ => {
                e.vred(Red::Sum, st, at, rows, cols);
                if name == graph::ReduceMean::NAME {
                    e.vimm(Imm::Div, st, st, cols as f32, rows, 1);
                }
            }
        }
        let res = if ov.dt == DType::F32 {
            st
        } else {
            let o = T::sram(so, 1, ov.dt);
            e.vun(Un::Copy, o, st, Bcast::Full, rows, 1);
            o
        };
        cx.e.move_view(false, &tile_view(&ovp, ot), res.addr, 1);
    }
    Ok(())
}

/// The end of a row softmax, after `w = x − max` (per row): `w = exp(w) / Σ exp(w)`, with the
/// sums in `s2`.
pub fn softmax_tail(e: &mut Emitter, w: T, s2: T, rows: u64, cols: u64) {
    e.vun(Un::Exp, w, w, Bcast::Full, rows, cols);
    e.vred(Red::Sum, s2, w, rows, cols);
    e.vun(Un::Recip, s2, s2, Bcast::Full, rows, 1);
    e.vbin(Bin::Mul, w, w, s2, Bcast::Col, rows, cols);
}
