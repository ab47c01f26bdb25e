//! Tile sizes from the target, chosen with the one cost model (`llmpu_isa::cost::cost`).
//!
//! A matmul `M×K×N` is cut into `tm×tk×tn` tiles: A and B tiles double-buffered in SRAM, two f32
//! accumulator tiles and two output staging tiles must fit (at most [`SRAM_SHARE`] of SRAM, all of
//! the accumulator). Among the candidates (powers of two times the array size and the even cuts
//! of each dimension into 2..=16 array-size multiples, up to the problem size)
//! the one with the lowest estimated time wins: per output tile, the DMA time of its A and B tiles
//! against the matrix engine's time, whichever is longer (they overlap), priced by building the
//! actual `dma.load` and `mxu.matmul` instructions and asking `cost()`.
//!
//! Row-wise kernels (elementwise, softmax, norms, copies) take as many rows as fit a share of SRAM
//! with double buffering.

use llmpu_isa::cost::cost;
use llmpu_isa::{AccMode, DType, Inst, Layout, Reg, Target};

/// Fraction of SRAM one kernel's tiles may use (the rest is slack for alignment and constants).
pub const SRAM_SHARE: f64 = 0.75;

/// SRAM bytes a kernel may plan for.
pub fn sram_budget(t: &Target) -> u64 {
    (t.sram.size_bytes as f64 * SRAM_SHARE) as u64
}

/// (occupancy, HBM channel transfer) of loading a `rows × cols` tile.
fn dma_cost(rows: u64, cols: u64, dt: DType, t: &Target) -> (u64, u64) {
    let i = Inst::DmaLoad {
        sram: Reg(1),
        hbm: Reg(2),
        n0: cols.min(65535) as u32,
        n1: rows.min(65535) as u32,
        n2: 1,
        hs1: Reg(3),
        hs2: Reg(0),
        ss1: Reg(3),
        ss2: Reg(0),
        dt,
        layout: Layout::Rows,
    };
    let c = cost(&i, t);
    (c.occupancy, c.transfer)
}

fn vpu_cost(rows: u64, cols: u64, t: &Target) -> u64 {
    let tile = llmpu_isa::TileRef {
        space: llmpu_isa::Space::Sram,
        dtype: DType::F32,
        addr: Reg(1),
        ld: Reg(2),
    };
    let i = Inst::VpuCopy {
        dst: tile,
        a: tile,
        rows: rows.min(65535) as u32,
        cols: cols.min(65535) as u32,
        bcast: llmpu_isa::Bcast::Full,
    };
    cost(&i, t).occupancy
}

fn mxu_cost(m: u64, k: u64, n: u64, dt: DType, t: &Target) -> u64 {
    let i = Inst::MxuMatmul {
        acc: Reg(1),
        a: Reg(2),
        b: Reg(3),
        m: m.min(65535) as u32,
        k: k.min(65535) as u32,
        n: n.min(65535) as u32,
        lda: Reg(4),
        ldb: Reg(5),
        ldc: Reg(6),
        dt,
        mode: AccMode::Acc,
    };
    cost(&i, t).occupancy
}

/// Vector passes (in simple-op units of a tile) that the fused activation `act` adds to a
/// matmul's epilogue, as `kernels::epilogue` emits it (special functions cost
/// `vpu_special / vpu_simple` passes).
pub fn activation_passes(act: &str, t: &Target) -> u64 {
    let special = (t.latency.vpu_special / t.latency.vpu_simple.max(1)).max(1);
    match act {
        "relu" => 1,
        "silu" => special + 1,
        "gelu" => special + 4,
        "gelu_tanh" => special + 7,
        _ => 0,
    }
}

/// Tile sizes `(tm, tk, tn)` of an `m×k×n` matmul with `dt` inputs, and the estimated cycles.
pub fn matmul_tiles(m: u64, k: u64, n: u64, dt: DType, t: &Target) -> (u64, u64, u64, u64) {
    matmul_tiles_fused(m, k, n, dt, t, 0, false)
}

/// [`matmul_tiles`] for a matmul whose epilogue also runs `act_passes` vector passes per tile
/// (its fused activation, [`activation_passes`]) and, with `residual`, adds a residual of the
/// output's shape: two more SRAM staging tiles (in `dt`) must fit, and the add (count it, and a
/// conversion from a 16-bit type, in `act_passes`) runs on the vector unit.
pub fn matmul_tiles_fused(
    m: u64,
    k: u64,
    n: u64,
    dt: DType,
    t: &Target,
    act_passes: u64,
    residual: bool,
) -> (u64, u64, u64, u64) {
    let (r, c) = (t.matrix.rows as u64, t.matrix.cols as u64);
    let sz = dt.size();
    // Powers of two times the array size, and the array-size multiples that cut the dimension
    // into 2..=16 nearly equal parts (so that e.g. 768 columns may go as two 384-wide tiles).
    let cands = |full: u64, unit: u64| {
        let mut v = vec![];
        let mut x = unit;
        while x < full {
            v.push(x);
            x *= 2;
        }
        for parts in 2..=16u64 {
            let x = full.div_ceil(parts).div_ceil(unit) * unit;
            if x < full {
                v.push(x);
            }
        }
        v.push(full);
        v.sort_unstable();
        v.dedup();
        v
    };
    let budget = sram_budget(t);
    let acc = t.accumulator.size_bytes;
    let cores = t.cores.max(1) as u64;
    let mut best = (m.min(r), k.min(r), n.min(c), u64::MAX);
    for &tm in &cands(m, r) {
        for &tk in &cands(k, r) {
            for &tn in &cands(n, c) {
                // What the kernel allocates: A/B tiles double-buffered, two accumulator tiles,
                // f32 and output staging (f32 at most) for two tiles, epilogue scratch.
                let sram = 2 * (tm * tk + tk * tn) * sz
                    + 2 * tm * tn * 8
                    + tm * tn * 4
                    + if residual { 2 * tm * tn * sz } else { 0 };
                if sram > budget || 2 * tm * tn * 4 > acc || tm > 65535 || tn > 65535 {
                    continue;
                }
                let (mt, kt, nt) = (m.div_ceil(tm), k.div_ceil(tk), n.div_ceil(tn));
                // Per output tile the DMA queue loads kt A and B tiles and stores the result,
                // the matrix engine runs kt passes, the vector unit drains the accumulator; the
                // three overlap across tiles (double buffering), so the slowest one sets the pace
                // of a core. Cores take whole row blocks when there are enough of them, else
                // single tiles (`kernels::matmul_views`); every core's transfers share the one
                // HBM channel.
                let row_units = cores > 1 && mt >= cores;
                let tiles = mt * nt;
                let (per_core, active) = if row_units {
                    (mt.div_ceil(cores) * nt, cores.min(mt))
                } else {
                    (tiles.div_ceil(cores), cores.min(tiles))
                };
                let (da, db) = (dma_cost(tm, tk, dt, t), dma_cost(tk, tn, dt, t));
                // One (strided) store per output tile. (A residual's tile load is not priced:
                // counting it as a second such transfer picked tiles that measured no better,
                // `functional-512x4` +489 cycles, `gpt3-layer` -551.)
                let dc = dma_cost(tm, tn, dt, t);
                // A row block loads as the kernel caches them (single tiles only, the `u`-th
                // going to core `u % cores`, row block `u % mt`): once per core when every core
                // keeps one row block, else once per tile.
                let loads = if cores.is_multiple_of(mt) {
                    active
                } else {
                    tiles
                };
                let cache_bytes = if loads > active { 2 } else { 1 } * tm * kt * tk * sz;
                let cached = !row_units
                    && mt > 1
                    && kt > 1
                    && 2 * loads <= tiles
                    && sram + cache_bytes <= budget;
                let (dma, channel) = if mt == 1 && kt > 1 {
                    // One row block: A stays resident, loaded once by each core that has work.
                    (
                        kt * db.0 + dc.0,
                        nt * (kt * db.1 + dc.1) + cores.min(nt) * kt * da.1,
                    )
                } else if cached {
                    (
                        kt * db.0 + dc.0 + loads * kt * da.0 / tiles,
                        tiles * (kt * db.1 + dc.1) + loads * kt * da.1,
                    )
                } else {
                    (
                        kt * (da.0 + db.0) + dc.0,
                        tiles * (kt * (da.1 + db.1) + dc.1),
                    )
                };
                let mxu = kt * mxu_cost(tm, tk, tn, dt, t);
                let vpu = (2 + act_passes) * vpu_cost(tm, tn, t);
                // Not overlapped: the fill and the drain (the last step's pass, epilogue, store,
                // HBM latency). The fill is the first step's loads; when they are large (all of
                // A when it is resident, or a core's whole work in one step) the working cores'
                // first steps cross the one channel one after the other before the last core can
                // start.
                let step = mxu_cost(tm, tk, tn, dt, t);
                let fill = if mt == 1 && kt > 1 {
                    da.0 + db.0 + (active - 1) * (kt * da.1 + db.1)
                } else if per_core * kt == 1 {
                    da.0 + db.0 + (active - 1) * (da.1 + db.1)
                } else {
                    da.0 + db.0
                };
                let drain = step + vpu + dc.0 + t.hbm.latency_cycles;
                // A cached row block loads with its first tile: each of that tile's steps moves
                // the working cores' A chunks and B tiles, which may outlast the pass.
                let burst = if cached {
                    kt * (active * (da.1 + db.1)).saturating_sub(step.max(active * db.1))
                } else {
                    0
                };
                // With several row blocks, the prologue's weight tiles (about four HBM latencies
                // of channel time, `kernels::matmul_views`) cross the channel while the previous
                // op drains. (Decode-shaped matmuls, one row block, keep the plain channel term:
                // there the credit picked tiles that measured worse, llama7b-decode-layer +0.7%.)
                let credit = if mt > 1 {
                    channel.min(4 * t.hbm.latency_cycles)
                } else {
                    0
                };
                // Each step dispatches its loads, the matmul and their semaphores (about five
                // scalar-unit slots), which favours fewer, larger steps when the rest is equal.
                let dispatch = per_core * kt * 5 * t.latency.scalar;
                let total = dispatch
                    + drain
                    + burst
                    + if per_core * kt == 1 {
                        // A single step: nothing to overlap.
                        fill
                    } else {
                        (fill + per_core * dma.max(mxu).max(vpu)).max(channel - credit)
                    };
                if total < best.3 {
                    best = (tm, tk, tn, total);
                }
            }
        }
    }
    best
}

/// Rows per tile when each row needs `row_bytes` of SRAM (double buffering included by the
/// caller), at most `rows`.
pub fn row_tile(rows: u64, row_bytes: u64, t: &Target) -> u64 {
    let fit = sram_budget(t) / row_bytes.max(1);
    fit.min(rows).clamp(1, 65535)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residual_staging_tiles_count_against_sram() {
        // SRAM small enough that the budget, not the cost, bounds the tiles.
        for (name, kib) in [
            ("edge", 384),
            ("edge", 512),
            ("datacenter", 1536),
            ("datacenter", 2048),
        ] {
            let mut t = Target::preset(name).unwrap();
            t.sram.size_bytes = kib << 10;
            for dt in [DType::F32, DType::BF16] {
                let (tm, tk, tn, _) = matmul_tiles_fused(4096, 4096, 4096, dt, &t, 2, true);
                let sz = dt.size();
                let sram = 2 * (tm * tk + tk * tn) * sz + 2 * tm * tn * 8 + tm * tn * 4;
                assert!(
                    sram + 2 * tm * tn * sz <= sram_budget(&t),
                    "{name} {kib} KiB {dt:?}: {tm}x{tk}x{tn}"
                );
            }
        }
    }

    #[test]
    fn matmul_tiles_fit_the_memories_and_cover_small_problems_whole() {
        let t = Target::preset("edge").unwrap();
        let (tm, tk, tn, _) = matmul_tiles(16, 64, 64, DType::BF16, &t);
        assert_eq!((tm, tk, tn), (16, 64, 64));
        let (tm, tk, tn, _) = matmul_tiles(4096, 4096, 4096, DType::BF16, &t);
        assert!(2 * (tm * tk + tk * tn) * 2 + 2 * tm * tn * 4 <= sram_budget(&t));
        assert!(2 * tm * tn * 4 <= t.accumulator.size_bytes);
    }

    #[test]
    fn matmul_tiles_price_the_fused_activation_in_the_epilogue() {
        let t = Target::preset("datacenter").unwrap();
        let gelu = activation_passes("gelu_tanh", &t);
        assert!(gelu > activation_passes("relu", &t));
        assert_eq!(activation_passes("none", &t), 0);
        let (.., plain) = matmul_tiles(512, 768, 3072, DType::BF16, &t);
        let (.., fused) = matmul_tiles_fused(512, 768, 3072, DType::BF16, &t, gelu, false);
        assert!(
            fused > plain,
            "GELU epilogue priced {fused} vs {plain} without"
        );
    }

    #[test]
    fn matmul_tiles_do_not_serialize_whole_operands_before_a_single_step() {
        // 512×768×768 on 8 cores: one 768-deep step per 256×256 tile made each core wait for
        // the earlier cores' whole operands on the shared channel before its only pass.
        let t = Target::preset("datacenter").unwrap();
        let (tm, tk, tn, _) = matmul_tiles(512, 768, 768, DType::BF16, &t);
        assert!(tk < 768, "{tm}×{tk}×{tn}: one step per tile");
    }
}
