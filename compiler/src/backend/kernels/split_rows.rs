//! Rows wider than SRAM: row kernels (softmax, log-softmax, LayerNorm, RMSNorm) and elementwise
//! kernels whose single row does not fit a core's SRAM with double buffering (a 12288-wide
//! LayerNorm on a 192 KiB core), or is wider than a vector instruction's 65535 columns, work on
//! column chunks.
//!
//! Elementwise ops and copies have no dependence along the row: the last dim is split into
//! `[n, w]` chunks (plus a narrower remainder) and the ordinary kernel runs on those views.
//!
//! Row kernels make two passes over each tile of rows, chunk by chunk. The first keeps running
//! statistics per row in f32 ([`Stats`]): softmax the online maximum and the sum of `exp(x - max)`
//! rescaled whenever the maximum grows (as FlashAttention does); LayerNorm the sums of the
//! deviations from the first chunk's mean and of their squares (the shifted-data variance);
//! RMSNorm the sum of squares. The second pass reloads each chunk
//! (and the parameters' chunk) and writes the result. The input is read twice: 1.5× the traffic of
//! a row that fits, the price of the row not fitting.
//!
//! Invariant: every row of a tile sees all of its chunks in order before any output of the tile
//! is written; chunks alternate between two buffer sets so the DMA of chunk c+1 overlaps chunk c.
//! The chunks after the first are the same code at advancing addresses, so they roll into
//! loops (inside the loop over rounds of row tiles).

use llmpu_isa::{Bcast, DType};

use super::{
    Bin, Cx, Ew, Imm, R, Red, RowK, Src, Sweep, T, Un, classify_view, elementwise_srcs, merge_rows,
    row_tiles, store_stats, tile_view, uniform_rounds,
};
use crate::backend::emit::Mem;
use crate::backend::view::View;

/// Buffers a chunk width must leave room for (alignment slack per buffer).
const SLACK: u64 = 64;

/// The widest row a vector instruction takes (its 16-bit `cols` field): wider rows are chunked
/// even where SRAM would hold them.
pub(super) const MAX_COLS: u64 = 65535;

/// `v` with its last dim `[.., n·w]` split into `[.., n, w]` (the first `n·w` elements).
fn split_last(v: &View, n: u64, w: u64) -> View {
    let r = v.shape.len();
    let s = v.strides[r - 1];
    let mut shape = v.shape[..r - 1].to_vec();
    shape.extend([n, w]);
    let mut strides = v.strides[..r - 1].to_vec();
    strides.extend([s * w as i64, s]);
    View {
        addr: v.addr,
        dt: v.dt,
        shape,
        strides,
    }
}

/// The views of a last dim of `cols` cut into `n` chunks of `w` and the remainder, if any.
fn chunked(v: &View, w: u64) -> (View, Option<View>) {
    let r = v.shape.len();
    let cols = v.shape[r - 1];
    let n = cols / w;
    let main = split_last(&v.slice(r - 1, 0, 1, n * w), n, w);
    let rest = (n * w < cols).then(|| v.slice(r - 1, n * w, 1, cols - n * w));
    (main, rest)
}

/// The chunk width for rows of `cols`: at most what fits (`rows` rows at `bytes_per_elem`, all
/// buffers of one set, doubled for two sets, in `free` bytes); the largest divisor of `cols` down
/// to half of that (equal chunks keep the rows' chunks one uniform dim), else a multiple of 64.
pub(super) fn chunk_width(
    cols: u64,
    rows: u64,
    bytes_per_elem: u64,
    buffers: u64,
    free: u64,
) -> u64 {
    let avail = free.saturating_sub(2 * buffers * SLACK);
    let w = (avail / (2 * rows.max(1) * bytes_per_elem.max(1)))
        .min(cols)
        .min(MAX_COLS);
    if let Some(d) = (w.div_ceil(2).max(1)..=w)
        .rev()
        .find(|&d| cols.is_multiple_of(d))
    {
        return d;
    }
    if w >= 64 { w / 64 * 64 } else { w }
}

/// Rows per tile (at most `rows`, halved while the chunks would be narrower than 256 columns)
/// and the chunk width, for `per_col(rows)` bytes per column of one buffer set.
fn tile_shape(
    cols: u64,
    mut rows: u64,
    per_col: impl Fn(u64) -> u64,
    buffers: u64,
    free: u64,
) -> (u64, u64) {
    loop {
        let w = chunk_width(cols, 1, per_col(rows), buffers, free);
        if w >= 256.min(cols) || rows <= 1 {
            return (rows, w);
        }
        rows /= 2;
    }
}

/// The output's view, then each operand's (the output's in place of an immediate): the views
/// [`rechunk_srcs`] takes back.
pub(super) fn src_views(srcs: &[Src], ov: &View) -> Vec<View> {
    let mut views = vec![ov.clone()];
    views.extend(srcs.iter().map(|s| match s {
        Src::Full(v) | Src::Row(v) | Src::Col(v) => v.clone(),
        Src::Imm(_) => ov.clone(),
    }));
    views
}

/// Runs `body` on the view sets of the chunks: the `[.., n, w]` main part, then the remainder.
/// Every view in `views` shares the output's shape (broadcast operands included).
pub(super) fn for_chunks(
    cx: &mut Cx,
    views: &[View],
    w: u64,
    mut body: impl FnMut(&mut Cx, &[View]) -> R<()>,
) -> R<()> {
    let parts: Vec<(View, Option<View>)> = views.iter().map(|v| chunked(v, w)).collect();
    let main: Vec<View> = parts.iter().map(|p| p.0.clone()).collect();
    let mark = cx.e.mark(Mem::Sram);
    body(cx, &main)?;
    cx.e.release(Mem::Sram, mark);
    if parts.iter().all(|p| p.1.is_some()) {
        let rest: Vec<View> = parts.iter().filter_map(|p| p.1.clone()).collect();
        body(cx, &rest)?;
    }
    Ok(())
}

/// The operands of an elementwise op re-cut for chunked views: `views[i]` replaces the view of
/// `srcs[i]` (immediates keep their value and ignore theirs).
pub(super) fn rechunk_srcs(srcs: &[Src], views: &[View], out_shape: &[u64]) -> Vec<Src> {
    srcs.iter()
        .zip(views)
        .map(|(s, v)| match s {
            Src::Imm(x) => Src::Imm(*x),
            _ => classify_view(v.clone(), out_shape),
        })
        .collect()
}

/// Per-row running statistics of one tile, in f32 (`rows × 1` tiles).
#[derive(Clone, Copy)]
struct Stats {
    /// Softmax: running maximum. LayerNorm: running mean.
    s1: T,
    /// Softmax: running sum of `exp(x − s1)`. Norms: sum of squares (about the mean for LayerNorm).
    s2: T,
    t1: T,
    t2: T,
    d: T,
}

/// A chunk's buffers.
#[derive(Clone, Copy)]
struct Set {
    a: u64,
    w: u64,
    o: u64,
}

/// Row kernel `k` over rows of `cols` elements that do not fit: see the module docs. `x` and `o`
/// have the normalized dims merged into the last (`[lead.., cols]`), `stats` are `[lead.., 1]`.
pub(super) fn row_kernel_chunked(
    cx: &mut Cx,
    k: RowK,
    x: &View,
    o: &View,
    params: &[View],
    stats: &[Option<View>],
) -> R<()> {
    if let Some((x, o, stats)) = merge_rows(x, o, stats) {
        return row_kernel_chunked(cx, k, &x, &o, params, &stats);
    }
    let r = x.shape.len();
    let cols = x.shape[r - 1];
    let total_rows = x.elems() / cols.max(1);
    let param_bytes: u64 = params
        .iter()
        .map(|p| {
            if p.dt == DType::F32 {
                4
            } else {
                p.dt.size() + 4
            }
        })
        .sum();
    let out_bytes = if o.dt == DType::F32 { 0 } else { o.dt.size() };
    let per_elem = x.dt.size() + 4 + out_bytes;
    let buffers = 3 + 2 * params.len() as u64;
    let free = cx.e.free(Mem::Sram).saturating_sub(5 * 8 * 4 + 5 * SLACK);
    // Each tile of rows reloads the parameters' chunks.
    let (rows, w) = tile_shape(
        cols,
        cx.spread(total_rows, 8),
        |rows| rows * per_elem + param_bytes,
        buffers,
        free,
    );
    if w == 0 {
        return Err(cx.err(format!(
            "a row of {cols} elements does not fit in SRAM even in chunks ({} bytes free)",
            cx.e.free(Mem::Sram)
        )));
    }
    let nchunks = cols.div_ceil(w);
    let mut sets = vec![];
    let mut prm = vec![];
    for _ in 0..2 {
        let a = cx.alloc(Mem::Sram, rows * w * x.dt.size(), "row chunk")?;
        let wk = cx.alloc(Mem::Sram, rows * w * 4, "row chunk")?;
        let ob = if out_bytes > 0 {
            cx.alloc(Mem::Sram, rows * w * out_bytes, "row chunk")?
        } else {
            wk
        };
        sets.push(Set { a, w: wk, o: ob });
        let mut ps = vec![];
        for p in params {
            let f = cx.alloc(Mem::Sram, w * 4, "norm parameter chunk")?;
            let raw = if p.dt == DType::F32 {
                f
            } else {
                cx.alloc(Mem::Sram, w * p.dt.size(), "norm parameter chunk")?
            };
            ps.push((raw, f));
        }
        prm.push(ps);
    }
    let mut st = [0u64; 5];
    for s in &mut st {
        *s = cx.alloc(Mem::Sram, rows * 4, "row statistics")?;
    }
    let f1 = |a| T::sram(a, 1, DType::F32);
    let s = Stats {
        s1: f1(st[0]),
        s2: f1(st[1]),
        t1: f1(st[2]),
        t2: f1(st[3]),
        d: f1(st[4]),
    };
    let tiles = row_tiles(&x.shape, 1, rows);
    let cores = cx.e.cores();
    let uniform_rounds = uniform_rounds(&tiles, rows, cores);
    let chunk = |c: u64| (c * w, w.min(cols - c * w));
    let mut sweep = Sweep::new(cx.e, uniform_rounds, tiles.len().div_ceil(cores));
    while let Some((round, _)) = sweep.next(cx.e) {
        for (i, t) in tiles.iter().enumerate().skip(round * cores).take(cores) {
            cx.on_core(i);
            let n = t.rows;
            let xt = tile_view(x, t);
            let ot = tile_view(o, t);
            let last = xt.shape.len() - 1;
            let full = cols / w;
            let first = sets[0];
            cx.e.move_view(true, &xt.slice(last, 0, 1, w.min(cols)), first.a, w);
            let (a, wk) = (T::sram(first.a, w, x.dt), T::sram(first.w, w, DType::F32));
            accumulate(cx, k, s, a, wk, true, n, w.min(cols));
            let mut inner = Sweep::new(cx.e, full.saturating_sub(1) as usize, nchunks as usize - 1);
            while let Some((kk, _)) = inner.next(cx.e) {
                let c = kk as u64 + 1;
                let (start, cw) = chunk(c);
                let set = sets[(c % 2) as usize];
                cx.e.move_view(true, &xt.slice(last, start, 1, cw), set.a, w);
                let a = T::sram(set.a, w, x.dt);
                let wk = T::sram(set.w, w, DType::F32);
                accumulate(cx, k, s, a, wk, false, n, cw);
            }
            finish_stats(cx, k, s, cols, n);
            store_stats(cx, stats, t, [s.s1, s.s2], n);
            let mut inner = Sweep::new(cx.e, full as usize, nchunks as usize);
            while let Some((kk, _)) = inner.next(cx.e) {
                let c = kk as u64;
                let (start, cw) = chunk(c);
                let ci = (c % 2) as usize;
                let set = sets[ci];
                cx.e.move_view(true, &xt.slice(last, start, 1, cw), set.a, w);
                let mut pf = vec![];
                for (p, &(raw, f)) in params.iter().zip(&prm[ci]) {
                    cx.e.move_view(true, &p.slice(0, start, 1, cw), raw, w);
                    if raw != f {
                        let rt = T::sram(raw, w, p.dt);
                        cx.e.vun(Un::Copy, T::sram(f, w, DType::F32), rt, Bcast::Full, 1, cw);
                    }
                    pf.push(T::sram(f, w, DType::F32));
                }
                let a = T::sram(set.a, w, x.dt);
                let wk = T::sram(set.w, w, DType::F32);
                apply(cx, k, s, a, wk, &pf, n, cw);
                let res = if o.dt == DType::F32 {
                    wk
                } else {
                    let ob = T::sram(set.o, w, o.dt);
                    cx.e.vun(Un::Copy, ob, wk, Bcast::Full, n, cw);
                    ob
                };
                cx.e.move_view(false, &ot.slice(last, start, 1, cw), res.addr, w);
            }
        }
    }
    Ok(())
}

/// Elementwise op `k` whose output rows do not fit: runs on chunks of the last dim.
pub(super) fn elementwise_chunked(cx: &mut Cx, k: Ew, srcs: &[Src], ov: &View) -> R<()> {
    let r = ov.shape.len();
    let cols = ov.shape[r - 1];
    let per_elem: u64 = srcs
        .iter()
        .map(|s| match s {
            Src::Full(v) | Src::Row(v) => v.dt.size(),
            _ => 0,
        })
        .sum::<u64>()
        + 12
        + ov.dt.size();
    let buffers = srcs.len() as u64 + 4;
    let free = cx.e.free(Mem::Sram);
    let total_rows = ov.elems() / cols.max(1);
    let (_, w) = tile_shape(
        cols,
        cx.spread(total_rows, 8),
        |rows| rows * per_elem,
        buffers,
        free,
    );
    if w == 0 {
        return Err(cx.err(format!(
            "one row of {cols} elements does not fit in SRAM even in chunks ({free} bytes free)"
        )));
    }
    for_chunks(cx, &src_views(srcs, ov), w, |cx, vs| {
        let srcs = rechunk_srcs(srcs, &vs[1..], &vs[0].shape);
        elementwise_srcs(cx, k, &srcs, &vs[0])
    })
}

/// First pass, one chunk of `cw` columns: folds it into the running stats. LayerNorm sums the
/// deviations from the first chunk's mean `K` (in `d`) and their squares ("shifted data": exact
/// for any `K`, well conditioned for one near the mean), so every later chunk is the same code.
#[allow(clippy::too_many_arguments)]
fn accumulate(cx: &mut Cx, k: RowK, s: Stats, a: T, w: T, first: bool, n: u64, cw: u64) {
    let e = &mut *cx.e;
    match k {
        RowK::Softmax(_) => {
            if first {
                e.vred(Red::Max, s.s1, a, n, cw);
                e.vbin(Bin::Sub, w, a, s.s1, Bcast::Col, n, cw);
                e.vun(Un::Exp, w, w, Bcast::Full, n, cw);
                e.vred(Red::Sum, s.s2, w, n, cw);
            } else {
                e.vred(Red::Max, s.t1, a, n, cw);
                e.vbin(Bin::Max, s.d, s.s1, s.t1, Bcast::Full, n, 1);
                e.vbin(Bin::Sub, s.t2, s.s1, s.d, Bcast::Full, n, 1);
                e.vun(Un::Exp, s.t2, s.t2, Bcast::Full, n, 1);
                e.vbin(Bin::Mul, s.s2, s.s2, s.t2, Bcast::Full, n, 1);
                e.vun(Un::Copy, s.s1, s.d, Bcast::Full, n, 1);
                e.vbin(Bin::Sub, w, a, s.s1, Bcast::Col, n, cw);
                e.vun(Un::Exp, w, w, Bcast::Full, n, cw);
                e.vred(Red::Sum, s.t2, w, n, cw);
                e.vbin(Bin::Add, s.s2, s.s2, s.t2, Bcast::Full, n, 1);
            }
        }
        RowK::Norm { rms: true, .. } => {
            e.vbin(Bin::Mul, w, a, a, Bcast::Full, n, cw);
            if first {
                e.vred(Red::Sum, s.s2, w, n, cw);
            } else {
                e.vred(Red::Sum, s.t2, w, n, cw);
                e.vbin(Bin::Add, s.s2, s.s2, s.t2, Bcast::Full, n, 1);
            }
        }
        RowK::Norm { rms: false, .. } => {
            if first {
                e.vred(Red::Sum, s.d, a, n, cw);
                e.vimm(Imm::Div, s.d, s.d, cw as f32, n, 1);
            }
            let (sum, sq) = if first { (s.s1, s.s2) } else { (s.t1, s.t2) };
            e.vbin(Bin::Sub, w, a, s.d, Bcast::Col, n, cw);
            e.vred(Red::Sum, sum, w, n, cw);
            e.vbin(Bin::Mul, w, w, w, Bcast::Full, n, cw);
            e.vred(Red::Sum, sq, w, n, cw);
            if !first {
                e.vbin(Bin::Add, s.s1, s.s1, s.t1, Bcast::Full, n, 1);
                e.vbin(Bin::Add, s.s2, s.s2, s.t2, Bcast::Full, n, 1);
            }
        }
    }
}

/// Between the passes: the reciprocal (log) of the softmax sum; the norms' reciprocal root of
/// the variance (LayerNorm: `(Σd² − (Σd)²/n)/n` about `K`, clamped at 0, and the mean `K + Σd/n`
/// in `s1`) or mean square plus epsilon.
fn finish_stats(cx: &mut Cx, k: RowK, s: Stats, cols: u64, n: u64) {
    let e = &mut *cx.e;
    let len = cols as f32;
    match k {
        RowK::Softmax(true) => e.vun(Un::Log, s.s2, s.s2, Bcast::Full, n, 1),
        RowK::Softmax(false) => e.vun(Un::Recip, s.s2, s.s2, Bcast::Full, n, 1),
        RowK::Norm { eps, rms } => {
            if !rms {
                e.vimm(Imm::Div, s.t1, s.s1, len, n, 1);
                e.vbin(Bin::Mul, s.t2, s.s1, s.t1, Bcast::Full, n, 1);
                e.vbin(Bin::Sub, s.s2, s.s2, s.t2, Bcast::Full, n, 1);
                e.vbin(Bin::Add, s.s1, s.d, s.t1, Bcast::Full, n, 1);
            }
            e.vimm(Imm::Div, s.s2, s.s2, len, n, 1);
            if !rms {
                e.vimm(Imm::Max, s.s2, s.s2, 0.0, n, 1);
            }
            e.vimm(Imm::Add, s.s2, s.s2, eps, n, 1);
            e.vun(Un::Rsqrt, s.s2, s.s2, Bcast::Full, n, 1);
        }
    }
}

/// Second pass, one chunk: the result in `w`.
#[allow(clippy::too_many_arguments)]
fn apply(cx: &mut Cx, k: RowK, s: Stats, a: T, w: T, prm: &[T], n: u64, cw: u64) {
    let e = &mut *cx.e;
    match k {
        RowK::Softmax(log) => {
            e.vbin(Bin::Sub, w, a, s.s1, Bcast::Col, n, cw);
            if log {
                e.vbin(Bin::Sub, w, w, s.s2, Bcast::Col, n, cw);
            } else {
                e.vun(Un::Exp, w, w, Bcast::Full, n, cw);
                e.vbin(Bin::Mul, w, w, s.s2, Bcast::Col, n, cw);
            }
        }
        RowK::Norm { rms, .. } => {
            if rms {
                e.vbin(Bin::Mul, w, a, s.s2, Bcast::Col, n, cw);
            } else {
                e.vbin(Bin::Sub, w, a, s.s1, Bcast::Col, n, cw);
                e.vbin(Bin::Mul, w, w, s.s2, Bcast::Col, n, cw);
            }
            if let Some(&sc) = prm.first() {
                e.vbin(Bin::Mul, w, w, sc, Bcast::Row, n, cw);
            }
            if let Some(&b) = prm.get(1) {
                e.vbin(Bin::Add, w, w, b, Bcast::Row, n, cw);
            }
        }
    }
}
