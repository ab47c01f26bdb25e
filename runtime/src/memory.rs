//! The machine's memories: the sparse shared HBM and address-extent arithmetic.
//!
//! HBM is stored in 64 KiB pages allocated on first write (a hash map by page number, so any size
//! up to the target limit of 2⁴⁸ bytes costs only what the program touches); unwritten bytes read
//! as zero. Scratchpad and accumulator SRAMs are zeroed byte vectors owned by each core, allocated
//! lazily-zeroed with a total cap (see `sim`).
//!
//! Extents: every operand of an instruction touches a set of byte addresses described by a base,
//! an element size and up to three (count, element stride) dimensions. [`extent`] gives the
//! bounding half-open byte range `[lo, hi)` of that set in `i128` (negative strides and overflow are
//! represented exactly); [`check`] turns it into an in-bounds `u64` range or an out-of-bounds trap.
//! Invariant: every access the functional kernels make lies inside the extent they were checked
//! against, and the kernels re-check each row slice anyway, so no access can panic.

use crate::error::{EmuError, MemSpace, TrapKind};
use std::collections::HashMap;

const PAGE_BITS: u32 = 16;
const PAGE: u64 = 1 << PAGE_BITS;

/// Sparse byte-addressed HBM: written pages by page number.
pub(crate) struct Hbm {
    size: u64,
    pages: HashMap<u64, Box<[u8]>>,
}

impl Hbm {
    pub fn new(size: u64) -> Result<Hbm, EmuError> {
        if size > llmpu_isa::target::MAX_HBM_BYTES {
            return Err(EmuError::Unsupported(format!(
                "HBM of {size} bytes exceeds the emulator's limit of {} bytes",
                llmpu_isa::target::MAX_HBM_BYTES
            )));
        }
        Ok(Hbm {
            size,
            pages: HashMap::new(),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Copies `out.len()` bytes from `addr`; out-of-range bytes are an error.
    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), TrapKind> {
        self.bounds(addr, out.len() as u64)?;
        let mut a = addr;
        let mut done = 0usize;
        while done < out.len() {
            let page = a >> PAGE_BITS;
            let off = (a & (PAGE - 1)) as usize;
            let n = (PAGE as usize - off).min(out.len() - done);
            match self.pages.get(&page) {
                Some(p) => out[done..done + n].copy_from_slice(&p[off..off + n]),
                None => out[done..done + n].fill(0),
            }
            done += n;
            a += n as u64;
        }
        Ok(())
    }

    /// Copies `data` to `addr`, allocating pages as needed.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), TrapKind> {
        self.bounds(addr, data.len() as u64)?;
        let mut a = addr;
        let mut done = 0usize;
        while done < data.len() {
            let page = a >> PAGE_BITS;
            let off = (a & (PAGE - 1)) as usize;
            let n = (PAGE as usize - off).min(data.len() - done);
            let p = self
                .pages
                .entry(page)
                .or_insert_with(|| vec![0u8; PAGE as usize].into_boxed_slice());
            p[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
            a += n as u64;
        }
        Ok(())
    }

    fn bounds(&self, addr: u64, len: u64) -> Result<(), TrapKind> {
        match addr.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(TrapKind::OutOfBounds {
                space: MemSpace::Hbm,
                lo: addr as i128,
                hi: addr as i128 + len as i128,
                size: self.size,
            }),
        }
    }
}

/// One checked byte range an instruction touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub space: MemSpace,
    pub lo: u64,
    pub hi: u64,
    pub write: bool,
}

/// Up to four spans (the most any instruction has).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spans {
    pub n: u8,
    pub s: [Span; 4],
}

impl Spans {
    pub const EMPTY: Spans = Spans {
        n: 0,
        s: [Span {
            space: MemSpace::Sram,
            lo: 0,
            hi: 0,
            write: false,
        }; 4],
    };

    pub fn push(&mut self, s: Span) {
        if (self.n as usize) < self.s.len() {
            self.s[self.n as usize] = s;
            self.n += 1;
        }
    }

    pub fn as_slice(&self) -> &[Span] {
        &self.s[..self.n as usize]
    }

    pub fn has_hbm(&self) -> bool {
        self.as_slice().iter().any(|s| s.space == MemSpace::Hbm)
    }
}

/// True if the two spans conflict: same space, overlapping, and at least one writes.
pub(crate) fn conflicts(a: &Span, b: &Span) -> bool {
    a.space == b.space && (a.write || b.write) && a.lo < b.hi && b.lo < a.hi
}

/// Bounding byte range of `base + (Σ i_d·stride_d)·size` for `i_d < n_d`; `None` if any `n_d` is 0.
pub(crate) fn extent(base: i64, size: u64, dims: &[(u64, i64)]) -> Option<(i128, i128)> {
    let (mut lo, mut hi) = (0i128, 0i128);
    for &(n, stride) in dims {
        if n == 0 {
            return None;
        }
        let far = (n as i128 - 1) * stride as i128;
        lo += far.min(0);
        hi += far.max(0);
    }
    let size = size as i128;
    Some((base as i128 + lo * size, base as i128 + (hi + 1) * size))
}

/// Checks `[lo, hi)` against a memory of `size` bytes.
pub(crate) fn check(
    space: MemSpace,
    lo: i128,
    hi: i128,
    size: u64,
) -> Result<(u64, u64), TrapKind> {
    if lo < 0 || hi > size as i128 || lo > hi {
        return Err(TrapKind::OutOfBounds {
            space,
            lo,
            hi,
            size,
        });
    }
    Ok((lo as u64, hi as u64))
}

/// A checked slice range of `len` bytes at byte address `addr` of a memory of `mem_len` bytes.
#[inline]
pub(crate) fn at(
    space: MemSpace,
    mem_len: usize,
    addr: i128,
    len: usize,
) -> Result<std::ops::Range<usize>, TrapKind> {
    let hi = addr + len as i128;
    if addr < 0 || hi > mem_len as i128 {
        return Err(TrapKind::OutOfBounds {
            space,
            lo: addr,
            hi,
            size: mem_len as u64,
        });
    }
    Ok(addr as usize..hi as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hbm_is_sparse_and_reads_zero() {
        let mut h = Hbm::new(1 << 20).unwrap();
        let mut buf = [7u8; 8];
        h.read(100, &mut buf).unwrap();
        assert_eq!(buf, [0; 8]);
        let data: Vec<u8> = (0..200).map(|i| i as u8).collect();
        h.write(PAGE - 100, &data).unwrap();
        let mut back = vec![0u8; 200];
        h.read(PAGE - 100, &mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(h.pages.len(), 2);
        assert!(h.write((1 << 20) - 4, &[0; 8]).is_err());
        assert!(h.read(u64::MAX - 2, &mut buf).is_err());
    }

    #[test]
    fn extents_cover_negative_strides() {
        assert_eq!(
            extent(100, 4, &[(3, 1), (2, 10)]),
            Some((100, 100 + 13 * 4))
        );
        assert_eq!(extent(100, 2, &[(3, 1), (2, -10)]), Some((80, 106)));
        assert_eq!(extent(0, 4, &[(0, 1)]), None);
        assert!(check(MemSpace::Sram, -4, 4, 16).is_err());
        assert_eq!(check(MemSpace::Sram, 4, 16, 16).unwrap(), (4, 16));
    }
}
