//! The f32 matrix product of `mxu.matmul` for float inputs: `C (=|+=) A·B` on strided operands,
//! with one defined order of arithmetic, so results are the same bits on every host.
//!
//! Order (`spec/isa.md`, `mxu.matmul`): each element of `C` is computed on its own. The `k`
//! products are taken in chunks of [`KC`] = 256 in increasing `p`; within a chunk the partial sum
//! starts at `+0.0` and takes each product with one fused multiply-add, `s = fma(a[i,p], b[p,j],
//! s)`. The first chunk's sum is stored (`set`) or added to `C` (`acc`); every later chunk's sum is
//! added to `C`. This is the order the emulator had with `matrixmultiply::sgemm` on hosts with FMA
//! (its `kc` blocking is 256 and its FMA micro-kernels keep one running sum per element), so
//! results did not change on such hosts.
//!
//! Operands are views of memory: a base pointer and a row stride in elements (any sign). The
//! caller proves every row of every operand in bounds before calling (the `unsafe` contract of
//! [`gemm`]) and that the rows of `C` are pairwise disjoint (rows written by one element never hold
//! another element of `C`), so the order in which elements are computed cannot matter. Element
//! reads and writes are unaligned little-endian-native f32 accesses: SRAM offsets carry no
//! alignment guarantee.
//!
//! Kernels: on x86-64 with AVX-512F (detected at run time) blocks of up to 8 rows × 32 columns
//! keep their sums in registers (masked lanes for the last columns); with AVX2 and FMA, 6 rows ×
//! 16 columns; elsewhere whole rows of partial sums advance with `f32::mul_add` (a correctly
//! rounded fused multiply-add on every platform, vectorized where the target has FMA). A scalar
//! element-at-a-time kernel is the reference the others are tested against.

/// The length of one accumulation chunk along `k`.
pub(crate) const KC: usize = 256;

/// A strided f32 matrix in host memory: element `(i, j)` at `ptr + i·ld + j` (elements).
#[derive(Clone, Copy)]
pub(crate) struct View {
    pub ptr: *const f32,
    pub ld: isize,
}

/// A writable strided f32 matrix; see [`View`].
#[derive(Clone, Copy)]
pub(crate) struct ViewMut {
    pub ptr: *mut f32,
    pub ld: isize,
}

/// `C[m×n] = (acc ? C : 0) + A[m×k]·B[k×n]` in the order of the module documentation.
///
/// # Safety
/// For every `i < m`, `p < k`, `j < n`: `a.ptr + i·a.ld + p`, `b.ptr + p·b.ld + j` are valid for
/// an (unaligned) f32 read and `c.ptr + i·c.ld + j` for an (unaligned) f32 read and write; the `C`
/// elements are pairwise distinct addresses and overlap neither `A` nor `B`.
pub(crate) unsafe fn gemm(m: usize, k: usize, n: usize, a: View, b: View, c: ViewMut, acc: bool) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !acc {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: in bounds by the contract.
                    unsafe {
                        c.ptr
                            .offset(i as isize * c.ld + j as isize)
                            .write_unaligned(0.0)
                    };
                }
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature is present; the operand contract is the caller's.
            unsafe { x86::gemm512(m, k, n, a, b, c, acc) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the features are present; the operand contract is the caller's.
            unsafe { x86::gemm256(m, k, n, a, b, c, acc) };
            return;
        }
    }
    // SAFETY: the operand contract is the caller's.
    unsafe { by_rows(m, k, n, a, b, c, acc) };
}

/// The kernel for hosts without the x86 ones: for each row of C and `k` chunk, the partial sums
/// of the whole row advance together one product at a time, so the inner loop over columns is
/// independent lane by lane and compiles to vector fused multiply-adds where the target has them
/// (aarch64); each element's chain is still the module's order.
///
/// # Safety
/// As [`gemm`].
unsafe fn by_rows(m: usize, k: usize, n: usize, a: View, b: View, c: ViewMut, acc: bool) {
    let mut s = vec![0f32; n];
    for i in 0..m {
        let mut p0 = 0;
        while p0 < k {
            let p1 = (p0 + KC).min(k);
            s.fill(0.0);
            // SAFETY: every offset is in bounds by the contract.
            unsafe {
                for p in p0..p1 {
                    let x = a
                        .ptr
                        .offset(i as isize * a.ld + p as isize)
                        .read_unaligned();
                    let bp = b.ptr.offset(p as isize * b.ld);
                    for (j, sj) in s.iter_mut().enumerate() {
                        *sj = x.mul_add(bp.add(j).read_unaligned(), *sj);
                    }
                }
                let cp = c.ptr.offset(i as isize * c.ld);
                for (j, &sj) in s.iter().enumerate() {
                    let q = cp.add(j);
                    q.write_unaligned(if p0 == 0 && !acc {
                        sj
                    } else {
                        q.read_unaligned() + sj
                    });
                }
            }
            p0 = p1;
        }
    }
}

/// The reference kernel the others are tested against: one element at a time, the module's
/// order written out with `f32::mul_add` (a correctly rounded fused multiply-add everywhere).
///
/// # Safety
/// As [`gemm`].
#[cfg(test)]
unsafe fn portable(m: usize, k: usize, n: usize, a: View, b: View, c: ViewMut, acc: bool) {
    for i in 0..m {
        for j in 0..n {
            // SAFETY: every offset is in bounds by the contract.
            unsafe {
                let cp = c.ptr.offset(i as isize * c.ld + j as isize);
                let mut p0 = 0;
                while p0 < k {
                    let p1 = (p0 + KC).min(k);
                    let mut s = 0f32;
                    for p in p0..p1 {
                        let x = a
                            .ptr
                            .offset(i as isize * a.ld + p as isize)
                            .read_unaligned();
                        let y = b
                            .ptr
                            .offset(p as isize * b.ld + j as isize)
                            .read_unaligned();
                        s = x.mul_add(y, s);
                    }
                    let v = if p0 == 0 && !acc {
                        s
                    } else {
                        cp.read_unaligned() + s
                    };
                    cp.write_unaligned(v);
                    p0 = p1;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! Register-blocked kernels. A block of `R` rows × `W` columns keeps its `R·W` partial sums in
    //! vector registers for one `k` chunk, then adds them to (or stores them in) C. Every lane
    //! computes exactly the chain of the module documentation; blocking only changes which
    //! elements are computed together.

    use super::{KC, View, ViewMut};
    use std::arch::x86_64::*;

    /// AVX-512: strips of up to 8 rows; 32-column blocks (two registers per row), then one
    /// 16-column block, then a masked block for the last < 16 columns.
    ///
    /// # Safety
    /// AVX-512F is available; operands as [`super::gemm`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gemm512(
        m: usize,
        k: usize,
        n: usize,
        a: View,
        b: View,
        c: ViewMut,
        acc: bool,
    ) {
        let mut p0 = 0;
        while p0 < k {
            let p1 = (p0 + KC).min(k);
            let add = acc || p0 > 0;
            let mut i = 0;
            while i < m {
                let rows = (m - i).min(8);
                // SAFETY (every call): rows i..i+rows, the columns named, products p0..p1 lie in
                // the operands by the contract; masked lanes are neither read nor written.
                unsafe {
                    match rows {
                        8 => cols512::<8>(i, n, p0, p1, a, b, c, add),
                        7 => cols512::<7>(i, n, p0, p1, a, b, c, add),
                        6 => cols512::<6>(i, n, p0, p1, a, b, c, add),
                        5 => cols512::<5>(i, n, p0, p1, a, b, c, add),
                        4 => cols512::<4>(i, n, p0, p1, a, b, c, add),
                        3 => cols512::<3>(i, n, p0, p1, a, b, c, add),
                        2 => cols512::<2>(i, n, p0, p1, a, b, c, add),
                        _ => cols512::<1>(i, n, p0, p1, a, b, c, add),
                    }
                }
                i += rows;
            }
            p0 = p1;
        }
    }

    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn cols512<const R: usize>(
        i: usize,
        n: usize,
        p0: usize,
        p1: usize,
        a: View,
        b: View,
        c: ViewMut,
        add: bool,
    ) {
        let mut j = 0;
        // SAFETY: as the caller's.
        unsafe {
            while j + 32 <= n {
                block512::<R, 2>(i, j, p0, p1, a, b, c, add, 0xffff);
                j += 32;
            }
            if j + 16 <= n {
                block512::<R, 1>(i, j, p0, p1, a, b, c, add, 0xffff);
                j += 16;
            }
            if j < n {
                let mask = ((1u32 << (n - j)) - 1) as u16;
                block512::<R, 1>(i, j, p0, p1, a, b, c, add, mask);
            }
        }
    }

    /// Rows `i..i+R` × `16·V` columns from `j`; with `V = 1`, `mask` selects the live lanes.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn block512<const R: usize, const V: usize>(
        i: usize,
        j: usize,
        p0: usize,
        p1: usize,
        a: View,
        b: View,
        c: ViewMut,
        add: bool,
        mask: u16,
    ) {
        let mut s = [[_mm512_setzero_ps(); V]; R];
        // SAFETY: in bounds by the caller; masked lanes are not accessed.
        unsafe {
            let mut arow = [a.ptr; R];
            for (r, p) in arow.iter_mut().enumerate() {
                *p = a.ptr.offset((i + r) as isize * a.ld);
            }
            for p in p0..p1 {
                let bp = b.ptr.offset(p as isize * b.ld + j as isize);
                let mut bv = [_mm512_setzero_ps(); V];
                for (h, v) in bv.iter_mut().enumerate() {
                    *v = _mm512_maskz_loadu_ps(mask, bp.add(16 * h));
                }
                for r in 0..R {
                    let x = _mm512_set1_ps(arow[r].add(p).read_unaligned());
                    for h in 0..V {
                        s[r][h] = _mm512_fmadd_ps(x, bv[h], s[r][h]);
                    }
                }
            }
            for (r, sr) in s.iter().enumerate() {
                let cp = c.ptr.offset((i + r) as isize * c.ld + j as isize);
                for (h, &v) in sr.iter().enumerate() {
                    let q = cp.add(16 * h);
                    let v = if add {
                        _mm512_add_ps(_mm512_maskz_loadu_ps(mask, q), v)
                    } else {
                        v
                    };
                    _mm512_mask_storeu_ps(q, mask, v);
                }
            }
        }
    }

    /// AVX2 + FMA: strips of up to 6 rows; 16-column blocks (two registers per row), one
    /// 8-column block, then single elements.
    ///
    /// # Safety
    /// AVX2 and FMA are available; operands as [`super::gemm`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gemm256(
        m: usize,
        k: usize,
        n: usize,
        a: View,
        b: View,
        c: ViewMut,
        acc: bool,
    ) {
        let mut p0 = 0;
        while p0 < k {
            let p1 = (p0 + KC).min(k);
            let add = acc || p0 > 0;
            let mut i = 0;
            while i < m {
                let rows = (m - i).min(6);
                // SAFETY (every call): as in `gemm512`.
                unsafe {
                    match rows {
                        6 => cols256::<6>(i, n, p0, p1, a, b, c, add),
                        5 => cols256::<5>(i, n, p0, p1, a, b, c, add),
                        4 => cols256::<4>(i, n, p0, p1, a, b, c, add),
                        3 => cols256::<3>(i, n, p0, p1, a, b, c, add),
                        2 => cols256::<2>(i, n, p0, p1, a, b, c, add),
                        _ => cols256::<1>(i, n, p0, p1, a, b, c, add),
                    }
                }
                i += rows;
            }
            p0 = p1;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn cols256<const R: usize>(
        i: usize,
        n: usize,
        p0: usize,
        p1: usize,
        a: View,
        b: View,
        c: ViewMut,
        add: bool,
    ) {
        let mut j = 0;
        // SAFETY: as the caller's.
        unsafe {
            while j + 16 <= n {
                block256::<R, 2>(i, j, p0, p1, a, b, c, add);
                j += 16;
            }
            if j + 8 <= n {
                block256::<R, 1>(i, j, p0, p1, a, b, c, add);
                j += 8;
            }
            while j < n {
                for r in i..i + R {
                    one(r, j, p0, p1, a, b, c, add);
                }
                j += 1;
            }
        }
    }

    /// Rows `i..i+R` × `8·V` columns from `j`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn block256<const R: usize, const V: usize>(
        i: usize,
        j: usize,
        p0: usize,
        p1: usize,
        a: View,
        b: View,
        c: ViewMut,
        add: bool,
    ) {
        let mut s = [[_mm256_setzero_ps(); V]; R];
        // SAFETY: in bounds by the caller.
        unsafe {
            let mut arow = [a.ptr; R];
            for (r, p) in arow.iter_mut().enumerate() {
                *p = a.ptr.offset((i + r) as isize * a.ld);
            }
            for p in p0..p1 {
                let bp = b.ptr.offset(p as isize * b.ld + j as isize);
                let mut bv = [_mm256_setzero_ps(); V];
                for (h, v) in bv.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(bp.add(8 * h));
                }
                for r in 0..R {
                    let x = _mm256_set1_ps(arow[r].add(p).read_unaligned());
                    for h in 0..V {
                        s[r][h] = _mm256_fmadd_ps(x, bv[h], s[r][h]);
                    }
                }
            }
            for (r, sr) in s.iter().enumerate() {
                let cp = c.ptr.offset((i + r) as isize * c.ld + j as isize);
                for (h, &v) in sr.iter().enumerate() {
                    let q = cp.add(8 * h);
                    let v = if add {
                        _mm256_add_ps(_mm256_loadu_ps(q), v)
                    } else {
                        v
                    };
                    _mm256_storeu_ps(q, v);
                }
            }
        }
    }

    /// Element `(i, j)`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn one(
        i: usize,
        j: usize,
        p0: usize,
        p1: usize,
        a: View,
        b: View,
        c: ViewMut,
        add: bool,
    ) {
        // SAFETY: in bounds by the caller.
        unsafe {
            let mut s = 0f32;
            for p in p0..p1 {
                let x = a
                    .ptr
                    .offset(i as isize * a.ld + p as isize)
                    .read_unaligned();
                let y = b
                    .ptr
                    .offset(p as isize * b.ld + j as isize)
                    .read_unaligned();
                s = x.mul_add(y, s);
            }
            let q = c.ptr.offset(i as isize * c.ld + j as isize);
            q.write_unaligned(if add { q.read_unaligned() + s } else { s });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    /// Every kernel the host can run — AVX-512, AVX2+FMA, by rows — gives the portable one's bits
    /// for every shape class (row remainders, 32/16/8-column blocks, masked and single-element
    /// tails, several `k` chunks, set and acc, padded strides) and leaves the padding between C's
    /// rows alone.
    #[test]
    fn kernels_agree_bit_for_bit() {
        type Kernel = unsafe fn(usize, usize, usize, View, View, ViewMut, bool);
        let mut kernels: Vec<(&str, Kernel)> = vec![("dispatch", gemm), ("by_rows", by_rows)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                kernels.push(("avx512", x86::gemm512));
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                kernels.push(("avx2", x86::gemm256));
            }
        }
        let mut seed = 3u64;
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 7, 5),
            (4, 16, 16),
            (5, 300, 25),
            (32, 128, 64),
            (7, 513, 40),
            (9, 256, 24),
            (13, 33, 47),
            (17, 9, 72),
        ] {
            for acc in [false, true] {
                let (lda, ldb, ldc) = (k + 3, n + 1, n + 2);
                let av: Vec<f32> = (0..m * lda).map(|_| lcg(&mut seed)).collect();
                let bv: Vec<f32> = (0..k * ldb).map(|_| lcg(&mut seed)).collect();
                let c0: Vec<f32> = (0..m * ldc).map(|_| lcg(&mut seed)).collect();
                let a = View {
                    ptr: av.as_ptr(),
                    ld: lda as isize,
                };
                let b = View {
                    ptr: bv.as_ptr(),
                    ld: ldb as isize,
                };
                let mut want = c0.clone();
                let c = |v: &mut Vec<f32>| ViewMut {
                    ptr: v.as_mut_ptr(),
                    ld: ldc as isize,
                };
                // SAFETY: the buffers hold m×lda, k×ldb, m×ldc elements; C rows are disjoint.
                unsafe { portable(m, k, n, a, b, c(&mut want), acc) };
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                for (name, kernel) in &kernels {
                    let mut got = c0.clone();
                    // SAFETY: as above; the kernel's features were detected.
                    unsafe { kernel(m, k, n, a, b, c(&mut got), acc) };
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "{name}: m {m} k {k} n {n} acc {acc}"
                    );
                }
                // The padding between rows is untouched.
                for i in 0..m {
                    for j in n..ldc {
                        assert_eq!(want[i * ldc + j].to_bits(), c0[i * ldc + j].to_bits());
                    }
                }
            }
        }
    }

    /// The chunked order is what the kernel computes: with k = 258 the two products of the
    /// second chunk are summed on their own (8) before they meet C; one running sum would lose
    /// each 4 to rounding at 1e8 (spacing 8, ties to even).
    #[test]
    fn chunks_of_256_are_added_to_c() {
        let k = 258;
        let mut av = vec![0f32; k];
        let bv = vec![1f32; k];
        av[0] = 1.0e8;
        av[256] = 4.0;
        av[257] = 4.0;
        let mut one_sum = 0f32;
        for p in 0..k {
            one_sum = av[p].mul_add(bv[p], one_sum);
        }
        assert_eq!(one_sum, 1.0e8);
        for acc in [false, true] {
            let mut c = [if acc { 16.0 } else { f32::NAN }];
            // SAFETY: 1×258 · 258×1 into 1×1, dense.
            unsafe {
                gemm(
                    1,
                    k,
                    1,
                    View {
                        ptr: av.as_ptr(),
                        ld: k as isize,
                    },
                    View {
                        ptr: bv.as_ptr(),
                        ld: 1,
                    },
                    ViewMut {
                        ptr: c.as_mut_ptr(),
                        ld: 1,
                    },
                    acc,
                );
            }
            // set: 1e8 + 8; acc: (16 + 1e8) + 8 = 1e8 + 16 + 8 → 100000024.
            let want = if acc { 100_000_024.0 } else { 100_000_008.0 };
            assert_eq!(c[0], want, "acc {acc}");
        }
    }

    /// Where `matrixmultiply::sgemm` (the emulator's previous kernel) uses fused multiply-adds —
    /// x86-64 with AVX2 and FMA, and aarch64 — this kernel gives its bits exactly, so programs'
    /// results did not change. On other hosts sgemm rounds twice per product and is not compared.
    #[test]
    fn same_bits_as_matrixmultiply_with_fma() {
        #[cfg(target_arch = "x86_64")]
        let fma = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        #[cfg(target_arch = "aarch64")]
        let fma = true;
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let fma = false;
        if !fma {
            return;
        }
        let mut seed = 11u64;
        for &(m, k, n) in &[
            (32, 128, 64),
            (32, 128, 32),
            (5, 600, 33),
            (17, 256, 9),
            (1, 3, 70),
        ] {
            for acc in [false, true] {
                let av: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed)).collect();
                let bv: Vec<f32> = (0..k * n).map(|_| lcg(&mut seed)).collect();
                let c0: Vec<f32> = (0..m * n).map(|_| lcg(&mut seed) * 4.0).collect();
                let (mut c1, mut c2) = (c0.clone(), c0);
                // SAFETY: dense m×k, k×n, m×n buffers.
                unsafe {
                    gemm(
                        m,
                        k,
                        n,
                        View {
                            ptr: av.as_ptr(),
                            ld: k as isize,
                        },
                        View {
                            ptr: bv.as_ptr(),
                            ld: n as isize,
                        },
                        ViewMut {
                            ptr: c1.as_mut_ptr(),
                            ld: n as isize,
                        },
                        acc,
                    );
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        av.as_ptr(),
                        k as isize,
                        1,
                        bv.as_ptr(),
                        n as isize,
                        1,
                        if acc { 1.0 } else { 0.0 },
                        c2.as_mut_ptr(),
                        n as isize,
                        1,
                    );
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&c1), bits(&c2), "m {m} k {k} n {n} acc {acc}");
            }
        }
    }
}
