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
//! Kernels: on x86-64 with AVX2 and FMA (detected at run time) blocks of 4 rows × 16 columns keep
//! their sums in registers; elsewhere a scalar loop with `f32::mul_add` (exactly rounded on every
//! platform) computes the same values.

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
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the features are present; the operand contract is the caller's.
            unsafe { x86::gemm(m, k, n, a, b, c, acc) };
            return;
        }
    }
    // SAFETY: the operand contract is the caller's.
    unsafe { portable(m, k, n, a, b, c, acc) };
}

/// The reference kernel: one element at a time, `f32::mul_add` (a correctly rounded fused
/// multiply-add on every platform).
///
/// # Safety
/// As [`gemm`].
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
    use super::{KC, View, ViewMut};
    use std::arch::x86_64::*;

    /// Rows per register block.
    const MR: usize = 4;

    /// # Safety
    /// AVX2 and FMA are available; operands as [`super::gemm`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gemm(
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
                let rows = (m - i).min(MR);
                let mut j = 0;
                // SAFETY (all blocks): rows i..i+rows, columns j..j+width, products p0..p1 are
                // inside the operands by the contract.
                while j + 16 <= n {
                    unsafe { block16(rows, i, j, p0, p1, a, b, c, add) };
                    j += 16;
                }
                if j + 8 <= n {
                    unsafe { block8(rows, i, j, p0, p1, a, b, c, add) };
                    j += 8;
                }
                while j < n {
                    for r in i..i + rows {
                        unsafe { one(r, j, p0, p1, a, b, c, add) };
                    }
                    j += 1;
                }
                i += rows;
            }
            p0 = p1;
        }
    }

    /// Rows `i..i+rows` (≤ 4) × columns `j..j+16`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block16(
        rows: usize,
        i: usize,
        j: usize,
        p0: usize,
        p1: usize,
        a: View,
        b: View,
        c: ViewMut,
        add: bool,
    ) {
        let mut s = [[_mm256_setzero_ps(); 2]; MR];
        // SAFETY: in bounds by the caller.
        unsafe {
            let arow = |r: usize| a.ptr.offset((i + r) as isize * a.ld);
            let (a0, a1, a2, a3) = (
                arow(0),
                arow(1.min(rows - 1)),
                arow(2.min(rows - 1)),
                arow(3.min(rows - 1)),
            );
            for p in p0..p1 {
                let bp = b.ptr.offset(p as isize * b.ld + j as isize);
                let b0 = _mm256_loadu_ps(bp);
                let b1 = _mm256_loadu_ps(bp.add(8));
                let x = _mm256_set1_ps(a0.add(p).read_unaligned());
                s[0][0] = _mm256_fmadd_ps(x, b0, s[0][0]);
                s[0][1] = _mm256_fmadd_ps(x, b1, s[0][1]);
                if rows > 1 {
                    let x = _mm256_set1_ps(a1.add(p).read_unaligned());
                    s[1][0] = _mm256_fmadd_ps(x, b0, s[1][0]);
                    s[1][1] = _mm256_fmadd_ps(x, b1, s[1][1]);
                }
                if rows > 2 {
                    let x = _mm256_set1_ps(a2.add(p).read_unaligned());
                    s[2][0] = _mm256_fmadd_ps(x, b0, s[2][0]);
                    s[2][1] = _mm256_fmadd_ps(x, b1, s[2][1]);
                }
                if rows > 3 {
                    let x = _mm256_set1_ps(a3.add(p).read_unaligned());
                    s[3][0] = _mm256_fmadd_ps(x, b0, s[3][0]);
                    s[3][1] = _mm256_fmadd_ps(x, b1, s[3][1]);
                }
            }
            for (r, sr) in s.iter().enumerate().take(rows) {
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

    /// Rows `i..i+rows` (≤ 4) × columns `j..j+8`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block8(
        rows: usize,
        i: usize,
        j: usize,
        p0: usize,
        p1: usize,
        a: View,
        b: View,
        c: ViewMut,
        add: bool,
    ) {
        let mut s = [_mm256_setzero_ps(); MR];
        // SAFETY: in bounds by the caller.
        unsafe {
            for p in p0..p1 {
                let bv = _mm256_loadu_ps(b.ptr.offset(p as isize * b.ld + j as isize));
                for (r, sr) in s.iter_mut().enumerate().take(rows) {
                    let x = a
                        .ptr
                        .offset((i + r) as isize * a.ld + p as isize)
                        .read_unaligned();
                    *sr = _mm256_fmadd_ps(_mm256_set1_ps(x), bv, *sr);
                }
            }
            for (r, &v) in s.iter().enumerate().take(rows) {
                let q = c.ptr.offset((i + r) as isize * c.ld + j as isize);
                let v = if add {
                    _mm256_add_ps(_mm256_loadu_ps(q), v)
                } else {
                    v
                };
                _mm256_storeu_ps(q, v);
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

    /// The fast kernel and the portable one give the same bits for every shape class (row
    /// remainders, 16/8/1-column blocks, several `k` chunks, set and acc, padded strides).
    #[test]
    fn kernels_agree_bit_for_bit() {
        let mut seed = 3u64;
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 7, 5),
            (4, 16, 16),
            (5, 300, 25),
            (32, 128, 64),
            (7, 513, 40),
            (9, 256, 24),
        ] {
            for acc in [false, true] {
                let (lda, ldb, ldc) = (k + 3, n + 1, n + 2);
                let av: Vec<f32> = (0..m * lda).map(|_| lcg(&mut seed)).collect();
                let bv: Vec<f32> = (0..k * ldb).map(|_| lcg(&mut seed)).collect();
                let c0: Vec<f32> = (0..m * ldc).map(|_| lcg(&mut seed)).collect();
                let (mut c1, mut c2) = (c0.clone(), c0.clone());
                let a = View {
                    ptr: av.as_ptr(),
                    ld: lda as isize,
                };
                let b = View {
                    ptr: bv.as_ptr(),
                    ld: ldb as isize,
                };
                // SAFETY: the buffers hold m×lda, k×ldb, m×ldc elements; C rows are disjoint.
                unsafe {
                    gemm(
                        m,
                        k,
                        n,
                        a,
                        b,
                        ViewMut {
                            ptr: c1.as_mut_ptr(),
                            ld: ldc as isize,
                        },
                        acc,
                    );
                    portable(
                        m,
                        k,
                        n,
                        a,
                        b,
                        ViewMut {
                            ptr: c2.as_mut_ptr(),
                            ld: ldc as isize,
                        },
                        acc,
                    );
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&c1), bits(&c2), "m {m} k {k} n {n} acc {acc}");
                // The padding between rows is untouched.
                for i in 0..m {
                    for j in n..ldc {
                        assert_eq!(c1[i * ldc + j].to_bits(), c0[i * ldc + j].to_bits());
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
