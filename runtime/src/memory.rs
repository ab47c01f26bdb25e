//! The machine's memories: the sparse shared HBM and address-extent arithmetic.
//!
//! HBM is stored in 64 KiB pages allocated on first write, found through a two-level table
//! (a directory per 4 GiB, allocated on first write too), so any size up to the target limit of
//! 2⁴⁸ bytes costs only what the program touches plus 8 bytes per 4 GiB; a lookup is two indexed
//! loads, no hashing. Unwritten bytes read as zero. Scratchpad and accumulator SRAMs are zeroed
//! byte vectors owned by each core, allocated
//! lazily-zeroed with a total cap (see `sim`).
//!
//! Written bytes: HBM remembers which bytes were ever written (a page written whole, or lent,
//! needs no record; a partly written page keeps one bit per byte), so that `--check-uninit`
//! ([`Hbm::unwritten`]) can trap on a read of bytes nobody wrote; the on-chip memories keep such a
//! map ([`InitMap`]) only when the check is on.
//!
//! Extents: every operand of an instruction touches a set of byte addresses described by a base,
//! an element size and up to three (count, element stride) dimensions. [`extent`] gives the
//! bounding half-open byte range `[lo, hi)` of that set in `i128` (negative strides and overflow are
//! represented exactly); [`check`] turns it into an in-bounds `u64` range or an out-of-bounds trap.
//! Invariant: every access the functional kernels make lies inside the extent they were checked
//! against, and the kernels re-check each row slice anyway, so no access can panic.

use crate::error::{EmuError, MemSpace, TrapKind};

const PAGE_BITS: u32 = 16;
const PAGE: u64 = 1 << PAGE_BITS;
/// Pages per directory (a directory maps 2^(PAGE_BITS + DIR_BITS) bytes = 4 GiB).
const DIR_BITS: u32 = 16;

/// One bit per byte of a page: which bytes were written.
type PageBits = Box<[u64; (PAGE / 64) as usize]>;

/// One 64 KiB page: bytes the emulator owns (with the map of the bytes written, `None` when all
/// were), or a page-long run of host data lent by [`Hbm::lend`] (a program's constant data, all
/// written), read in place until the first write copies it.
enum Page<'d> {
    Own(Box<[u8; PAGE as usize]>, Option<PageBits>),
    Lent(&'d [u8; PAGE as usize]),
}

impl Page<'_> {
    fn bytes(&self) -> &[u8; PAGE as usize] {
        match self {
            Page::Own(b, _) => b,
            Page::Lent(b) => b,
        }
    }

    /// The written-bytes map (`None`: every byte was written).
    fn written(&self) -> Option<&[u64]> {
        match self {
            Page::Own(_, Some(bits)) => Some(&bits[..]),
            _ => None,
        }
    }
}

/// The `(word, mask)` pairs covering bits `[lo, hi)` of a bitmap of u64 words.
fn word_masks(lo: u64, hi: u64) -> impl Iterator<Item = (usize, u64)> {
    let mut i = lo;
    std::iter::from_fn(move || {
        if i >= hi {
            return None;
        }
        let (w, b) = ((i / 64) as usize, i % 64);
        let n = (64 - b).min(hi - i);
        i += n;
        Some((
            w,
            if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << b
            },
        ))
    })
}

/// Sets bits `[lo, hi)` of a bitmap.
pub(crate) fn set_bits(words: &mut [u64], lo: u64, hi: u64) {
    for (w, mask) in word_masks(lo, hi) {
        words[w] |= mask;
    }
}

/// The first clear bit in `[lo, hi)` and the number of clear bits there.
pub(crate) fn clear_bits(words: &[u64], lo: u64, hi: u64) -> Option<(u64, u64)> {
    let (mut first, mut count) = (None, 0u64);
    for (w, mask) in word_masks(lo, hi) {
        let clear = !words[w] & mask;
        if clear != 0 {
            first.get_or_insert(w as u64 * 64 + clear.trailing_zeros() as u64);
            count += clear.count_ones() as u64;
        }
    }
    first.map(|f| (f, count))
}

/// Which bytes of an on-chip memory were written (`--check-uninit`).
pub(crate) struct InitMap {
    words: Vec<u64>,
}

impl InitMap {
    pub fn new(len: usize) -> InitMap {
        InitMap {
            words: vec![0; len.div_ceil(64)],
        }
    }

    /// Records `[lo, hi)` as written (clamped to the memory).
    pub fn set(&mut self, lo: u64, hi: u64) {
        let end = self.words.len() as u64 * 64;
        set_bits(&mut self.words, lo.min(end), hi.min(end));
    }

    /// The first never-written byte of `[lo, hi)` and how many there are.
    pub fn unwritten(&self, lo: u64, hi: u64) -> Option<(u64, u64)> {
        let end = self.words.len() as u64 * 64;
        clear_bits(&self.words, lo.min(end), hi.min(end))
    }
}

/// A zeroed page.
fn zeroed_page() -> Box<[u8; PAGE as usize]> {
    // A PAGE-long boxed slice always converts; the fallback only satisfies the types.
    vec![0u8; PAGE as usize]
        .into_boxed_slice()
        .try_into()
        .unwrap_or_else(|_| Box::new([0u8; PAGE as usize]))
}

type Dir<'d> = Box<[Option<Page<'d>>]>;

/// Sparse byte-addressed HBM: written pages by page number. `'d` is the lifetime of lent data.
pub(crate) struct Hbm<'d> {
    size: u64,
    dirs: Vec<Option<Dir<'d>>>,
}

impl<'d> Hbm<'d> {
    pub fn new(size: u64) -> Result<Hbm<'d>, EmuError> {
        if size > llmpu_isa::target::MAX_HBM_BYTES {
            return Err(EmuError::Unsupported(format!(
                "HBM of {size} bytes exceeds the emulator's limit of {} bytes",
                llmpu_isa::target::MAX_HBM_BYTES
            )));
        }
        let dirs = size.div_ceil(1 << (PAGE_BITS + DIR_BITS)) as usize;
        Ok(Hbm {
            size,
            dirs: (0..dirs).map(|_| None).collect(),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The page holding byte `a`, if written (`a` < size).
    #[inline]
    fn page(&self, a: u64) -> Option<&[u8; PAGE as usize]> {
        let page = a >> PAGE_BITS;
        self.dirs[(page >> DIR_BITS) as usize].as_ref()?[(page & ((1 << DIR_BITS) - 1)) as usize]
            .as_ref()
            .map(Page::bytes)
    }

    /// The slot of the page holding byte `a` (`a` < size), its directory allocated if needed.
    #[inline]
    fn slot(&mut self, a: u64) -> &mut Option<Page<'d>> {
        let page = a >> PAGE_BITS;
        let dir = self.dirs[(page >> DIR_BITS) as usize]
            .get_or_insert_with(|| (0..1usize << DIR_BITS).map(|_| None).collect());
        &mut dir[(page & ((1 << DIR_BITS) - 1)) as usize]
    }

    /// The page holding byte `a` as owned bytes: allocated zeroed, or a lent page copied; the
    /// bytes `[off, off + n)` of it are recorded as written (the caller writes them).
    #[inline]
    fn page_mut(&mut self, a: u64, off: usize, n: usize) -> &mut [u8; PAGE as usize] {
        let slot = self.slot(a);
        let (owned, mut bits) = match slot.take() {
            Some(Page::Own(b, bits)) => (b, bits),
            Some(Page::Lent(l)) => {
                let mut b = zeroed_page();
                b.copy_from_slice(l);
                (b, None)
            }
            None => (zeroed_page(), Some(Box::new([0u64; (PAGE / 64) as usize]))),
        };
        if n == PAGE as usize {
            bits = None;
        } else if let Some(w) = bits.as_mut() {
            set_bits(&mut w[..], off as u64, (off + n) as u64);
        }
        match slot.insert(Page::Own(owned, bits)) {
            Page::Own(b, _) => b,
            // Just inserted as owned; this arm only satisfies the types.
            Page::Lent(_) => unreachable!("the slot holds the page inserted as owned"),
        }
    }

    /// The first byte of `[addr, addr + len)` never written (by the host or the program) and
    /// how many such bytes the range holds; `None` when every byte was written. The range must
    /// be in bounds (checked by the caller's access).
    pub fn unwritten(&self, addr: u64, len: u64) -> Option<(u64, u64)> {
        let end = addr.saturating_add(len).min(self.size);
        let (mut first, mut count) = (None, 0u64);
        let mut a = addr;
        while a < end {
            let off = a & (PAGE - 1);
            let n = (PAGE - off).min(end - a);
            let page = a >> PAGE_BITS;
            let p = self.dirs[(page >> DIR_BITS) as usize]
                .as_ref()
                .and_then(|d| d[(page & ((1 << DIR_BITS) - 1)) as usize].as_ref());
            let gap = match p {
                None => Some((a, n)),
                Some(p) => p
                    .written()
                    .and_then(|w| clear_bits(w, off, off + n))
                    .map(|(f, c)| ((page << PAGE_BITS) + f, c)),
            };
            if let Some((f, c)) = gap {
                first.get_or_insert(f);
                count += c;
            }
            a += n;
        }
        first.map(|f| (f, count))
    }

    /// Number of allocated pages (owned or lent).
    #[cfg(test)]
    fn pages(&self) -> usize {
        self.dirs
            .iter()
            .flatten()
            .map(|d| d.iter().flatten().count())
            .sum()
    }

    /// Copies `out.len()` bytes from `addr`; out-of-range bytes are an error.
    #[inline]
    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), TrapKind> {
        self.bounds(addr, out.len() as u64)?;
        let off = (addr & (PAGE - 1)) as usize;
        if off + out.len() <= PAGE as usize {
            // Within one page (DMA rows, nearly always): one lookup.
            match self.page(addr) {
                Some(p) => out.copy_from_slice(&p[off..off + out.len()]),
                None => out.fill(0),
            }
            return Ok(());
        }
        let mut a = addr;
        let mut done = 0usize;
        while done < out.len() {
            let off = (a & (PAGE - 1)) as usize;
            let n = (PAGE as usize - off).min(out.len() - done);
            match self.page(a) {
                Some(p) => out[done..done + n].copy_from_slice(&p[off..off + n]),
                None => out[done..done + n].fill(0),
            }
            done += n;
            a += n as u64;
        }
        Ok(())
    }

    /// Hints the host cache to fetch `len` bytes at `addr` (no effect on contents; out-of-range
    /// or unwritten bytes are ignored).
    #[inline]
    pub fn prefetch(&self, addr: u64, len: usize) {
        #[cfg(target_arch = "x86_64")]
        if addr < self.size {
            let off = (addr & (PAGE - 1)) as usize;
            if let Some(p) = self.page(addr) {
                let end = (off + len).min(PAGE as usize);
                let mut o = off;
                while o < end {
                    // SAFETY: `o` < PAGE, inside the page; prefetching has no architectural effect.
                    unsafe {
                        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                            p.as_ptr().add(o) as *const i8,
                        )
                    };
                    o += 64;
                }
            }
        }
    }

    /// Copies `data` to `addr`, allocating pages as needed.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), TrapKind> {
        self.bounds(addr, data.len() as u64)?;
        let mut a = addr;
        let mut done = 0usize;
        while done < data.len() {
            let off = (a & (PAGE - 1)) as usize;
            let n = (PAGE as usize - off).min(data.len() - done);
            self.page_mut(a, off, n)[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
            a += n as u64;
        }
        Ok(())
    }

    /// Places `data` at `addr` with the effect of [`Hbm::write`], but every page `data` covers
    /// entirely refers to it instead of holding a copy (copied on its first write), so loading
    /// a program's constant data costs no copy of its whole pages.
    pub fn lend(&mut self, addr: u64, data: &'d [u8]) -> Result<(), TrapKind> {
        self.bounds(addr, data.len() as u64)?;
        let mut a = addr;
        let mut done = 0usize;
        while done < data.len() {
            let off = (a & (PAGE - 1)) as usize;
            let n = (PAGE as usize - off).min(data.len() - done);
            let part = &data[done..done + n];
            match <&'d [u8; PAGE as usize]>::try_from(part) {
                Ok(whole) => *self.slot(a) = Some(Page::Lent(whole)),
                Err(_) => self.page_mut(a, off, n)[off..off + n].copy_from_slice(part),
            }
            done += n;
            a += n as u64;
        }
        Ok(())
    }

    /// The same memory with every lent page copied, so it outlives the lent data.
    pub fn into_owned(self) -> Hbm<'static> {
        Hbm {
            size: self.size,
            dirs: self
                .dirs
                .into_iter()
                .map(|d| {
                    d.map(|d| {
                        d.into_iter()
                            .map(|p| {
                                p.map(|p| match p {
                                    Page::Own(b, bits) => Page::Own(b, bits),
                                    Page::Lent(l) => {
                                        let mut b = zeroed_page();
                                        b.copy_from_slice(l);
                                        Page::Own(b, None)
                                    }
                                })
                            })
                            .collect()
                    })
                })
                .collect(),
        }
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
    /// The exact bytes within `[lo, hi)` when the access is strided (a DMA's HBM side); `None`:
    /// every byte of the range.
    pub runs: Option<Runs>,
}

/// The bytes of a strided access: runs of `len` bytes at `base + i1·s1 + i2·s2`
/// (`i1 < n1`, `i2 < n2`; strides in bytes, any sign). Stored in 64 bits (a checked access lies
/// within a memory of at most 2⁴⁸ bytes; the stride of a dimension of count 1 is stored as 0):
/// a span is copied with every instruction, so it is kept small. Arithmetic is in `i128`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Runs {
    pub base: i64,
    pub len: u64,
    pub outer: [(u64, i64); 2],
}

/// Most run-against-run comparisons one exact check makes before it answers "conflict"
/// conservatively.
const EXACT_BUDGET: u128 = 1 << 16;

impl Runs {
    fn count(&self) -> u128 {
        self.outer[0].0 as u128 * self.outer[1].0 as u128
    }

    /// Does any run intersect `[x, y)`? Enumerates the shorter outer dimension and solves the
    /// other one by division.
    fn hits(&self, x: i128, y: i128) -> bool {
        let len = self.len as i128;
        if len == 0 || x >= y || self.count() == 0 {
            return false;
        }
        let (mut a, mut b) = (self.outer[0], self.outer[1]);
        if b.0 > a.0 {
            std::mem::swap(&mut a, &mut b);
        }
        // `b` is enumerated, `a` solved: starts c + i·s for i < n must lie in (x − len, y).
        let (n, s) = (a.0 as i128, a.1 as i128);
        for j in 0..b.0 as i128 {
            let c0 = self.base as i128 + j * b.1 as i128;
            // Walk i upward with a positive stride.
            let (c, s) = if s < 0 {
                (c0 + (n - 1) * s, -s)
            } else {
                (c0, s)
            };
            let hit = if s == 0 {
                c > x - len && c < y
            } else {
                let lo = (x - len - c).div_euclid(s) + 1;
                let hi = (y - c + s - 1).div_euclid(s) - 1;
                lo.max(0) <= hi.min(n - 1)
            };
            if hit {
                return true;
            }
        }
        false
    }

    /// The runs of `self` one by one within `[x, y)`, or `None` past the budget.
    fn any_run(&self, x: i128, y: i128, f: &mut dyn FnMut(i128, i128) -> bool) -> Option<bool> {
        if self.count() > EXACT_BUDGET {
            return None;
        }
        let len = self.len as i128;
        for i2 in 0..self.outer[1].0 as i128 {
            for i1 in 0..self.outer[0].0 as i128 {
                let r =
                    self.base as i128 + i1 * self.outer[0].1 as i128 + i2 * self.outer[1].1 as i128;
                let (lo, hi) = (r.max(x), (r + len).min(y));
                if lo < hi && f(lo, hi) {
                    return Some(true);
                }
            }
        }
        Some(false)
    }
}

/// True if the two spans conflict byte for byte: [`conflicts`] in bounding range, and, when
/// either is strided, some byte in both. Strided DMAs of interleaved rows by different cores
/// (column tiles of one matrix) therefore do not conflict; a check that would compare more than
/// [`EXACT_BUDGET`] run pairs answers "conflict" (the bounding-range answer).
pub(crate) fn conflicts_exact(a: &Span, b: &Span) -> bool {
    if !conflicts(a, b) {
        return false;
    }
    let (x, y) = (a.lo.max(b.lo) as i128, a.hi.min(b.hi) as i128);
    match (&a.runs, &b.runs) {
        (None, None) => true,
        (Some(p), None) | (None, Some(p)) => p.hits(x, y),
        (Some(p), Some(q)) => {
            let (p, q) = if p.count() <= q.count() {
                (p, q)
            } else {
                (q, p)
            };
            let work = p
                .count()
                .saturating_mul(q.outer[0].0.min(q.outer[1].0) as u128);
            if work > EXACT_BUDGET {
                return true;
            }
            p.any_run(x, y, &mut |lo, hi| q.hits(lo, hi))
                .unwrap_or(true)
        }
    }
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
            runs: None,
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
        assert_eq!(h.pages(), 2);
        assert!(h.write((1 << 20) - 4, &[0; 8]).is_err());
        assert!(h.read(u64::MAX - 2, &mut buf).is_err());
    }

    #[test]
    fn lent_pages_read_in_place_and_copy_on_first_write() {
        // Two and a half pages of data starting mid-page: one whole page is lent, the partial
        // ones are copied.
        let data: Vec<u8> = (0..(5 * PAGE / 2)).map(|i| (i % 251) as u8).collect();
        let base = PAGE / 2;
        let mut h = Hbm::new(1 << 20).unwrap();
        h.lend(base, &data).unwrap();
        let mut back = vec![0u8; data.len()];
        h.read(base, &mut back).unwrap();
        assert_eq!(back, data);
        // Writing into a lent page changes HBM, not the lent data.
        h.write(base + PAGE, &[7, 7, 7]).unwrap();
        h.read(base, &mut back).unwrap();
        assert_eq!(&back[PAGE as usize..PAGE as usize + 3], &[7, 7, 7]);
        assert_eq!(back[PAGE as usize + 3..], data[PAGE as usize + 3..]);
        assert_eq!(data[PAGE as usize], (PAGE % 251) as u8);
        // Owned copies survive the lent data.
        let owned = h.into_owned();
        drop(data);
        let mut again = vec![0u8; back.len()];
        owned.read(base, &mut again).unwrap();
        assert_eq!(again, back);
        assert!(
            Hbm::new(1 << 20)
                .unwrap()
                .lend((1 << 20) - 4, &[0; 8])
                .is_err()
        );
    }

    #[test]
    fn hbm_remembers_the_bytes_written() {
        let mut h = Hbm::new(1 << 20).unwrap();
        assert_eq!(h.unwritten(0, 16), Some((0, 16)));
        h.write(4, &[1; 8]).unwrap();
        assert_eq!(h.unwritten(4, 8), None);
        assert_eq!(h.unwritten(0, 16), Some((0, 8)));
        assert_eq!(h.unwritten(8, 8), Some((12, 4)));
        // Across pages, whole pages, and lent data.
        h.write(PAGE - 2, &[2; 4]).unwrap();
        assert_eq!(h.unwritten(PAGE - 2, 4), None);
        h.write(2 * PAGE, &vec![3; PAGE as usize]).unwrap();
        assert_eq!(h.unwritten(2 * PAGE, PAGE), None);
        let data = vec![5u8; PAGE as usize];
        h.lend(4 * PAGE, &data).unwrap();
        assert_eq!(h.unwritten(4 * PAGE, PAGE), None);
        assert_eq!(h.unwritten(5 * PAGE, 1), Some((5 * PAGE, 1)));
        let owned = h.into_owned();
        assert_eq!(owned.unwritten(0, 16), Some((0, 8)));
        let mut m = InitMap::new(100);
        m.set(10, 20);
        assert_eq!(m.unwritten(10, 20), None);
        assert_eq!(m.unwritten(5, 25), Some((5, 10)));
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
