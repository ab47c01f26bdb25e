//! Running sums (ONNX CumSum) along one axis, on the vector unit.
//!
//! The axis is made the last one (a permuted view) and the outer dims become rows; a tile of
//! rows lands in SRAM, is converted to f32 and scanned with ⌈log₂ n⌉ shifted adds that
//! alternate between two buffers (step `s`: `y'[j] = y[j] + y[j − s]` for `j ≥ s`, `y'[j] =
//! y[j]` below): `2·⌈log₂ n⌉` vector instructions per tile instead of `n`. `reverse` shifts the
//! other way; `exclusive` first shifts the input by one and puts a 0 in the vacated column.
//! Sums are exact where f32 is (integers below 2²⁴), as for every vector-unit op.

use super::*;

/// Scans `x` into `o` along their last axis.
pub(super) fn cumsum(cx: &mut Cx, x: &View, o: &View, exclusive: bool, reverse: bool) -> R<()> {
    let r = x.shape.len();
    let n = *x.shape.last().unwrap_or(&1);
    if r == 0 || n == 0 {
        return Ok(());
    }
    if n > split_rows::MAX_COLS {
        return Err(cx.err(format!(
            "a running sum over {n} elements is longer than the {} a row tile holds",
            split_rows::MAX_COLS
        )));
    }
    let per_row = n * (x.dt.size() + 4 + 4 + o.dt.size()) + 16;
    let max_rows = cx.double_buffered_rows(per_row);
    if max_rows == 0 {
        return Err(cx.err(format!(
            "a running sum over {n} elements does not fit in SRAM ({} bytes free)",
            cx.e.free(Mem::Sram)
        )));
    }
    let total_rows = x.elems() / n;
    let tiles = row_tiles(&x.shape, 1, cx.spread(total_rows, max_rows));
    let mr = tiles.iter().map(|t| t.rows).max().unwrap_or(1);
    let nsets = if tiles.len() > cx.e.cores() { 2 } else { 1 };
    let mut sets = vec![];
    for _ in 0..nsets {
        let raw = cx.alloc(Mem::Sram, mr * n * x.dt.size(), "scan tile")?;
        let y0 = cx.alloc(Mem::Sram, mr * n * 4, "scan tile")?;
        let y1 = cx.alloc(Mem::Sram, mr * n * 4, "scan tile")?;
        let ot = cx.alloc(Mem::Sram, mr * n * o.dt.size(), "scan tile")?;
        sets.push((raw, y0, y1, ot));
    }
    let cores = cx.e.cores();
    let uniform = uniform_rounds(&tiles, mr, cores);
    let mut sweep = Sweep::new(cx.e, uniform, tiles.len().div_ceil(cores));
    while let Some((round, _)) = sweep.next(cx.e) {
        for (i, t) in tiles.iter().enumerate().skip(round * cores).take(cores) {
            let par = cx.on_core(i);
            let (raw, y0, y1, ot) = sets[par.min(sets.len() - 1)];
            let rows = t.rows;
            cx.e.move_view(true, &tile_view(x, t), raw, n);
            let e = &mut *cx.e;
            let col = |base: u64, j: u64| T::sram(base + j * 4, n, DType::F32);
            let src = T::sram(raw, n, x.dt);
            // y0 = the input in f32, shifted by one for an exclusive sum.
            if !exclusive {
                e.vun(Un::Copy, col(y0, 0), src, Bcast::Full, rows, n);
            } else if n > 1 {
                let (from, to, zero) = if reverse { (1, 0, n - 1) } else { (0, 1, 0) };
                let s = T::sram(raw + from * x.dt.size(), n, x.dt);
                e.vun(Un::Copy, col(y0, to), s, Bcast::Full, rows, n - 1);
                e.vfill(col(y0, zero), 0.0, rows, 1);
            } else {
                e.vfill(col(y0, 0), 0.0, rows, 1);
            }
            let (mut cur, mut nxt) = (y0, y1);
            let mut s = 1;
            while s < n {
                // Forward: y'[j] = y[j] + y[j − s] for j ≥ s; reverse: y'[j] = y[j] + y[j + s]
                // for j < n − s. The other columns carry over.
                let (keep, sum, other) = if reverse { (n - s, 0, s) } else { (0, s, 0) };
                e.vun(
                    Un::Copy,
                    col(nxt, keep),
                    col(cur, keep),
                    Bcast::Full,
                    rows,
                    s,
                );
                e.vbin(
                    Bin::Add,
                    col(nxt, sum),
                    col(cur, sum),
                    col(cur, other),
                    Bcast::Full,
                    rows,
                    n - s,
                );
                std::mem::swap(&mut cur, &mut nxt);
                s *= 2;
            }
            let res = if o.dt == DType::F32 {
                cur
            } else {
                e.vun(
                    Un::Copy,
                    T::sram(ot, n, o.dt),
                    col(cur, 0),
                    Bcast::Full,
                    rows,
                    n,
                );
                ot
            };
            cx.e.move_view(false, &tile_view(o, t), res, n);
        }
    }
    Ok(())
}
