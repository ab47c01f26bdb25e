//! Strided views of HBM tensors and the DMA decomposition that moves a view to or from an SRAM tile.
//!
//! A [`View`] is a base byte address, an element type, a shape and per-dimension strides in
//! elements (0 for a broadcast dimension, negative for a reversed slice). Reshape, transpose, slice,
//! squeeze/unsqueeze, expand and split results are views of their input, so they cost nothing; a
//! kernel reads any view with [`Emitter::move_view`], which coalesces dimensions and picks, per DMA,
//! a contiguous inner run (`rows` layout), a transposing DMA when only another dimension is
//! contiguous in HBM (`trans` layout), or single-element runs as the last resort.
//!
//! SRAM side: the view's elements in row-major order, rows of the last dimension `ld` elements
//! apart (`ld >= last dim`).

use llmpu_isa::{DType, Inst, Layout, Reg, Sem};

use super::emit::{Emitter, Mem, Touch};

/// A strided view of HBM memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// Byte address of element `[0, 0, ...]`.
    pub addr: i64,
    pub dt: DType,
    pub shape: Vec<u64>,
    /// Strides in elements.
    pub strides: Vec<i64>,
}

/// Row-major strides of a dense shape.
pub fn dense_strides(shape: &[u64]) -> Vec<i64> {
    let mut s = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as i64;
    }
    s
}

impl View {
    /// A dense row-major tensor at `addr`.
    pub fn dense(addr: u64, dt: DType, shape: &[u64]) -> View {
        View {
            addr: addr as i64,
            dt,
            shape: shape.to_vec(),
            strides: dense_strides(shape),
        }
    }

    /// Number of elements.
    pub fn elems(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Dense row-major (so it can be reshaped freely).
    pub fn is_contiguous(&self) -> bool {
        self.shape
            .iter()
            .zip(self.strides.iter().zip(dense_strides(&self.shape)))
            .all(|(&n, (&s, d))| n == 1 || s == d)
    }

    /// The same elements with another shape, when the layout allows it without a copy.
    pub fn reshape(&self, shape: &[u64]) -> Option<View> {
        if shape.iter().product::<u64>() != self.elems() {
            return None;
        }
        if self.is_contiguous() {
            return Some(View {
                addr: self.addr,
                dt: self.dt,
                shape: shape.to_vec(),
                strides: dense_strides(shape),
            });
        }
        // Only size-1 dims added or removed: keep the strides of the real dims.
        let real: Vec<(u64, i64)> = self
            .shape
            .iter()
            .zip(&self.strides)
            .filter(|(n, _)| **n != 1)
            .map(|(n, s)| (*n, *s))
            .collect();
        let target: Vec<u64> = shape.iter().copied().filter(|&n| n != 1).collect();
        if real.iter().map(|r| r.0).collect::<Vec<_>>() != target {
            return None;
        }
        let mut it = real.iter();
        let strides = shape
            .iter()
            .map(|&n| {
                if n == 1 {
                    0
                } else {
                    it.next().map_or(0, |r| r.1)
                }
            })
            .collect();
        Some(View {
            addr: self.addr,
            dt: self.dt,
            shape: shape.to_vec(),
            strides,
        })
    }

    /// Dimensions permuted: result dim `i` is input dim `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> View {
        View {
            addr: self.addr,
            dt: self.dt,
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
        }
    }

    /// Elements `start, start + step, ...` (`len` of them) along `axis`.
    pub fn slice(&self, axis: usize, start: u64, step: i64, len: u64) -> View {
        let mut v = self.clone();
        v.addr += start as i64 * self.strides[axis] * self.dt.size() as i64;
        v.strides[axis] *= step;
        v.shape[axis] = len;
        v
    }

    /// Broadcast to `shape` (NumPy rules: missing leading dims and size-1 dims get stride 0).
    pub fn broadcast_to(&self, shape: &[u64]) -> Option<View> {
        if shape.len() < self.shape.len() {
            return None;
        }
        let pad = shape.len() - self.shape.len();
        let mut strides = vec![0i64; shape.len()];
        for (i, &n) in shape.iter().enumerate() {
            if i < pad {
                continue;
            }
            let (m, s) = (self.shape[i - pad], self.strides[i - pad]);
            if m == n {
                strides[i] = if m == 1 { 0 } else { s };
            } else if m != 1 {
                return None;
            }
        }
        Some(View {
            addr: self.addr,
            dt: self.dt,
            shape: shape.to_vec(),
            strides,
        })
    }

    /// Collapses the dims before the last into one row dim: `[rows, cols]`, when possible.
    pub fn as_2d(&self) -> Option<View> {
        let cols = self.shape.last().copied().unwrap_or(1);
        let rows = self.elems() / cols.max(1);
        let cs = self.strides.last().copied().unwrap_or(1);
        let outer = View {
            addr: self.addr,
            dt: self.dt,
            shape: self.shape[..self.shape.len().saturating_sub(1)].to_vec(),
            strides: self.strides[..self.strides.len().saturating_sub(1)].to_vec(),
        };
        let dims = coalesce(&outer.shape, &[&outer.strides]);
        match dims.len() {
            0 => Some(View {
                addr: self.addr,
                dt: self.dt,
                shape: vec![1, cols],
                strides: vec![0, cs],
            }),
            1 => Some(View {
                addr: self.addr,
                dt: self.dt,
                shape: vec![rows, cols],
                strides: vec![dims[0].1[0], cs],
            }),
            _ => None,
        }
    }
}

/// Merges adjacent dims that are contiguous in every stride set and drops size-1 dims. Returns
/// `(extent, strides per set)` outermost first.
pub fn coalesce(shape: &[u64], sets: &[&[i64]]) -> Vec<(u64, Vec<i64>)> {
    let mut out: Vec<(u64, Vec<i64>)> = Vec::new();
    for (i, &n) in shape.iter().enumerate() {
        if n == 1 {
            continue;
        }
        let st: Vec<i64> = sets.iter().map(|s| s[i]).collect();
        if let Some(last) = out.last_mut()
            && last
                .1
                .iter()
                .zip(&st)
                .all(|(&outer, &inner)| outer == inner * n as i64)
        {
            last.0 *= n;
            last.1 = st;
            continue;
        }
        out.push((n, st));
    }
    out
}

/// The views of one iteration space (equal outer dims; last dims may differ) with their outer
/// dims merged wherever every view is contiguous across them, so that tiles of rows advance
/// uniformly through one dim instead of restarting at each leading index.
pub fn merge_outer(views: &[View]) -> Vec<View> {
    let Some(first) = views.first() else {
        return vec![];
    };
    let r = first.shape.len();
    if r < 3 || views.iter().any(|v| v.shape.len() != r) {
        return views.to_vec();
    }
    let outer = &first.shape[..r - 1];
    let sets: Vec<&[i64]> = views.iter().map(|v| &v.strides[..r - 1]).collect();
    let merged = coalesce(outer, &sets);
    if merged.is_empty() || merged.len() == r - 1 {
        return views.to_vec();
    }
    views
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut shape: Vec<u64> = merged.iter().map(|m| m.0).collect();
            let mut strides: Vec<i64> = merged.iter().map(|m| m.1[i]).collect();
            shape.push(v.shape[r - 1]);
            strides.push(v.strides[r - 1]);
            View {
                addr: v.addr,
                dt: v.dt,
                shape,
                strides,
            }
        })
        .collect()
}

/// Largest extent of one DMA dimension.
const MAX_N: u64 = 65535;

/// Bounding byte range `[lo, hi)` of elements of `size` bytes at `base + Σ i_k·stride_k·size`.
fn extent(base: i64, size: u64, dims: &[(u64, i64)]) -> (u64, u64) {
    let (mut lo, mut hi) = (base, base);
    for &(n, s) in dims {
        if n == 0 {
            return (base as u64, base as u64);
        }
        let span = (n as i64 - 1) * s * size as i64;
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    (lo.max(0) as u64, (hi + size as i64).max(0) as u64)
}

impl Emitter {
    /// Moves view `v` to (`load`) or from SRAM at `sram` with row stride `ld` elements (one or
    /// more DMAs).
    pub fn move_view(&mut self, load: bool, v: &View, sram: u64, ld: u64) {
        self.move_view_at(load, v, sram, ld, None)
    }

    /// [`Emitter::move_view`] with the view's HBM addresses relative to a run-time `base`
    /// register (a paged-KV block address), when given.
    pub fn move_view_at(&mut self, load: bool, v: &View, sram: u64, ld: u64, base: Option<Reg>) {
        self.move_view_to(load, v, sram, ld, base, None);
    }

    /// Loads view `v` into SRAM at `sram` (row stride `ld`) of cores `cores`, with one HBM read
    /// per DMA (`dma.mcast`); each of those cores' `sem` gets one increment per DMA emitted, which
    /// this returns.
    pub fn multicast_view(
        &mut self,
        v: &View,
        sram: u64,
        ld: u64,
        cores: std::ops::Range<u32>,
        sem: Sem,
    ) -> u32 {
        self.move_view_to(true, v, sram, ld, None, Some((cores, sem))) as u32
    }

    fn move_view_to(
        &mut self,
        load: bool,
        v: &View,
        sram: u64,
        ld: u64,
        base: Option<Reg>,
        mcast: Option<(std::ops::Range<u32>, Sem)>,
    ) -> u64 {
        let size = v.dt.size();
        let r = v.shape.len();
        if v.elems() == 0 {
            return 0;
        }
        // SRAM strides of the row-major layout with row stride `ld`.
        let mut ss = vec![1i64; r.max(1)];
        if r >= 2 {
            ss[r - 2] = ld as i64;
            for i in (0..r - 2).rev() {
                ss[i] = ss[i + 1] * v.shape[i + 1] as i64;
            }
        }
        let (shape, hs) = if r == 0 {
            (vec![1], vec![1])
        } else {
            (v.shape.clone(), v.strides.clone())
        };
        let mut dims = coalesce(&shape, &[&hs, &ss]);
        if dims.is_empty() {
            dims.push((1, vec![1, 1]));
        }
        // Split dims longer than one DMA field can hold.
        let mut split = Vec::new();
        for (n, st) in dims {
            if n > MAX_N {
                let mut inner = MAX_N;
                while n % inner != 0 {
                    inner -= 1;
                }
                split.push((n / inner, vec![st[0] * inner as i64, st[1] * inner as i64]));
                split.push((inner, st));
            } else {
                split.push((n, st));
            }
        }
        let dims = split;
        let m = dims.len();
        let last = m - 1;
        // Choose the three DMA dims: (i0, i1, i2) as indices into `dims`, and the layout.
        let contiguous_last = dims[last].1 == [1, 1];
        let hbm_unit = if load {
            dims.iter().position(|d| d.1[0] == 1)
        } else {
            None
        };
        let (layout, order): (Layout, Vec<usize>) = if contiguous_last {
            (Layout::Rows, vec![last])
        } else if load && dims[last].1[1] == 1 && hbm_unit.is_some() {
            let p = hbm_unit.unwrap_or(last);
            (Layout::Trans, vec![p, last])
        } else if !load && dims[last].1[1] == 1 && dims.iter().any(|d| d.1[0] == 1) {
            let p = dims.iter().position(|d| d.1[0] == 1).unwrap_or(last);
            (Layout::Trans, vec![last, p])
        } else {
            (Layout::Rows, vec![])
        };
        // Remaining dims, innermost first, fill the next DMA dims then the loops.
        let mut rest: Vec<usize> = (0..m).rev().filter(|i| !order.contains(i)).collect();
        let mut dma_dims: Vec<(u64, i64, i64)> = Vec::new(); // (n, hbm stride, sram stride)
        if order.is_empty() {
            dma_dims.push((1, 1, 1)); // single-element runs
        }
        for &i in &order {
            dma_dims.push((dims[i].0, dims[i].1[0], dims[i].1[1]));
        }
        while dma_dims.len() < 3 && !rest.is_empty() {
            let i = rest.remove(0);
            dma_dims.push((dims[i].0, dims[i].1[0], dims[i].1[1]));
        }
        while dma_dims.len() < 3 {
            dma_dims.push((1, 0, 0));
        }
        let loops: Vec<(u64, i64, i64)> = rest
            .iter()
            .rev()
            .map(|&i| (dims[i].0, dims[i].1[0], dims[i].1[1]))
            .collect();
        let total: u64 = loops.iter().map(|l| l.0).product();
        let (n0, n1, n2) = (dma_dims[0].0, dma_dims[1].0, dma_dims[2].0);
        for flat in 0..total {
            let mut rem = flat;
            let (mut hoff, mut soff) = (0i64, 0i64);
            for &(n, h, s) in loops.iter().rev() {
                let i = (rem % n) as i64;
                rem /= n;
                hoff += i * h;
                soff += i * s;
            }
            let hbm = v.addr + hoff * size as i64;
            let sbase = sram as i64 + soff * size as i64;
            // SRAM extent of this DMA.
            let sdims: Vec<(u64, i64)> = dma_dims.iter().map(|d| (d.0, d.2)).collect();
            let (lo, hi) = extent(sbase, size, &sdims);
            let (hs1, hs2, ss1, ss2) = match layout {
                Layout::Rows => (dma_dims[1].1, dma_dims[2].1, dma_dims[1].2, dma_dims[2].2),
                Layout::Trans if load => {
                    (dma_dims[1].1, dma_dims[2].1, dma_dims[0].2, dma_dims[2].2)
                }
                Layout::Trans => (dma_dims[0].1, dma_dims[2].1, dma_dims[1].2, dma_dims[2].2),
            };
            let hbm_r = match base {
                Some(b) => self.offset_reg(b, hbm),
                None => self.reg(hbm),
            };
            let sram_r = self.reg(sbase);
            let hs1 = self.reg(hs1);
            let hs2 = self.reg(hs2);
            let ss1 = self.reg(ss1);
            let ss2 = self.reg(ss2);
            let (n0, n1, n2) = (n0 as u32, n1 as u32, n2 as u32);
            let inst = if load {
                Inst::DmaLoad {
                    sram: sram_r,
                    hbm: hbm_r,
                    n0,
                    n1,
                    n2,
                    hs1,
                    hs2,
                    ss1,
                    ss2,
                    dt: v.dt,
                    layout,
                }
            } else {
                Inst::DmaStore {
                    sram: sram_r,
                    hbm: hbm_r,
                    n0,
                    n1,
                    n2,
                    hs1,
                    hs2,
                    ss1,
                    ss2,
                    dt: v.dt,
                    layout,
                }
            };
            let inst = match &mcast {
                Some((cores, sem)) => inst.to_multicast(cores.clone(), *sem).unwrap_or(inst),
                None => inst,
            };
            let t = if load {
                Touch::write(Mem::Sram, lo, hi)
            } else {
                Touch::read(Mem::Sram, lo, hi)
            };
            self.op(inst, vec![t]);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposed_view_has_permuted_strides_and_is_not_contiguous() {
        let v = View::dense(0, DType::F32, &[2, 3, 4]);
        let t = v.permute(&[0, 2, 1]);
        assert_eq!(t.shape, [2, 4, 3]);
        assert_eq!(t.strides, [12, 1, 4]);
        assert!(!t.is_contiguous());
        assert!(t.reshape(&[8, 3]).is_none());
        assert_eq!(v.reshape(&[6, 4]).unwrap().strides, [4, 1]);
    }

    #[test]
    fn broadcast_gives_zero_strides() {
        let v = View::dense(0, DType::F32, &[4]);
        let b = v.broadcast_to(&[3, 4]).unwrap();
        assert_eq!(b.strides, [0, 1]);
        assert!(v.broadcast_to(&[3, 5]).is_none());
    }

    #[test]
    fn extent_counts_strides_in_elements() {
        // 2 rows of 64 f32, 64 elements apart: 512 bytes.
        assert_eq!(extent(0, 4, &[(64, 1), (2, 64)]), (0, 512));
        assert_eq!(extent(100, 2, &[(3, -1)]), (96, 102));
    }

    #[test]
    fn coalesce_merges_contiguous_dims() {
        let d = coalesce(&[2, 3, 4], &[&[12, 4, 1]]);
        assert_eq!(d, vec![(24, vec![1])]);
    }
}
