//! Products of the small matrices inside one attention head (`[seq, seq]` by `[seq, dim]` and the
//! like, tens of rows): `C = alpha A B` with register tiles and no packing.
//!
//! The big matmul (`cpu::matmul`) packs both operands into cache-sized panels and runs blocked
//! loops around its micro-kernel; for a 13 x 13 x 32 product that machinery costs as much as the
//! product, and with `n` = 16 (a head dimension) each value of A is used for only two vector
//! multiply-adds, so even copying A once costs as much as the product. Here both operands are used
//! where they lie. Per step `p` of the inner dimension, a tile of `R <= 6` rows by `W` = 16 (or 8)
//! columns of C loads one row of B (`W` contiguous values) and broadcasts `R` values of A, one per
//! row of the tile: `R x W / 8` accumulators of 8 lanes (12 AVX2 registers for 6 x 16, plus 2 for
//! B and 1 for the broadcast).
//!
//! A comes in two layouts: row-major (`A(i, p) = a[i * ld + p]`), read in runs of 8 steps per row
//! (one bounds check per row and run), or column-major, i.e. a transposed row-major matrix
//! (`A(i, p) = a[p * ld + i]`: `P^T` and `dS^T` in the attention backward), where the `R` values of
//! a step are contiguous. Columns past the last multiple of 8 go through the same tile with B's row
//! copied into a zero-padded array; the last rows through tiles of fewer rows.
//!
//! On AVX-512 (`Panel::zmm_rows`) the tile is 8 rows by 32 columns of zmm registers, written with
//! explicit instructions: 16 accumulators, 2 registers for B, each A value broadcast from memory
//! by its FMA. Compiled from the loops above, the 6 x 16 tile became 6 zmm accumulators, fewer
//! than the 8 that two FMA pipes of 4 cycles' latency need (a ViT-B head's products ran at ~30
//! GFLOP/s per core), and a wider tile written the same way was vectorised into gathers and spills.
//!
//! Every value of C is one f32 dot product of length `k`, accumulated in order: the result does not
//! depend on the tiling (the AVX-512 tiles give the 6 x 16 tiles' bits).

use super::simd::madd;

/// Rows of the register tile.
const MR: usize = 6;
/// Steps of `k` per run of row-major A.
const RUN: usize = 8;

/// How A is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `A(i, p) = a[i * ld + p]`
    RowMajor(usize),
    /// `A(i, p) = a[p * ld + i]`
    ColMajor(usize),
}

/// `C[i, j] = alpha * sum_p A(i, p) B[p, j]` for `i < m`, `j < n`, with A stored as `layout`
/// says, `B[p, j] = b[p * ldb + j]` and `C[i, j] = c[i * ldc + j]`, in the tiles of `isa`: the
/// AVX-512 ones (`Panel::zmm_rows`) for `Isa::Avx512` (panics if this CPU lacks it), else the
/// 6 x 16 tiles compiled for the caller's features (`FMA` as in `simd::multiversion!`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn gemm<const FMA: bool>(
    isa: super::simd::Isa,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    layout: Layout,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(k == 0 || (b.len() >= (k - 1) * ldb + n && ldb >= n), "small gemm: B too short");
    assert!(c.len() >= (m - 1) * ldc + n && ldc >= n, "small gemm: C too short");
    let a_ok = match layout {
        Layout::RowMajor(ld) => ld >= k && a.len() >= (m - 1) * ld + k,
        Layout::ColMajor(ld) => k == 0 || (ld >= m && a.len() >= (k - 1) * ld + m),
    };
    assert!(a_ok, "small gemm: A too short");
    let p = Panel { n, k, alpha, a, layout, b, ldb, ldc };
    #[cfg(target_arch = "x86_64")]
    if isa == super::simd::Isa::Avx512 {
        if super::lanes::Avx512::detect().is_none() {
            super::simd::unavailable(isa)
        }
        // SAFETY: this CPU has AVX-512F, AVX2 and FMA (`Avx512::detect`, just above); the sizes
        // are checked above.
        return unsafe { p.zmm_rows(m, c) };
    }
    let _ = isa;
    p.narrow_rows::<FMA>(0..m, 0, c);
}

/// Rows of the AVX-512 tile.
#[cfg(target_arch = "x86_64")]
const MR_ZMM: usize = 8;

#[cfg(target_arch = "x86_64")]
impl Panel<'_> {
    /// All `m` rows of C in 8 x 32 and 8 x 16 tiles of zmm registers; the last `n % 16` columns
    /// go through the 6 x 16 tiles (see the module comment).
    ///
    /// # Safety
    /// The CPU must support AVX-512F; A, B and C hold what `gemm` checks.
    #[target_feature(enable = "avx2,fma,avx512f")]
    unsafe fn zmm_rows(&self, m: usize, c: &mut [f32]) {
        let n16 = self.n / 16 * 16;
        for i in (0..m).step_by(MR_ZMM) {
            let rows = MR_ZMM.min(m - i);
            let mut j = 0;
            // SAFETY: each tile reads rows i..i + rows of A (clamped), columns j..j + 16 V of B's
            // k rows, and writes the same rectangle of C, all inside what the caller checked.
            unsafe {
                while j + 32 <= n16 {
                    self.zmm_tile::<2>(i, rows, j, c);
                    j += 32;
                }
                if j < n16 {
                    self.zmm_tile::<1>(i, rows, j, c);
                }
            }
        }
        self.narrow_rows::<true>(0..m, n16, c);
    }

    /// `C[i0.., j0..]` for `rows <= MR_ZMM` rows and `16 V` columns, in `MR_ZMM x V` zmm
    /// accumulators; missing rows are computed as copies of the last one and not stored.
    ///
    /// # Safety
    /// AVX-512F; the rectangle lies inside A, B and C.
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    unsafe fn zmm_tile<const V: usize>(&self, i0: usize, rows: usize, j0: usize, c: &mut [f32]) {
        use std::arch::x86_64::*;
        const R: usize = MR_ZMM;
        let (a, b, c) = (self.a.as_ptr(), self.b.as_ptr(), c.as_mut_ptr());
        let (k, ldb, ldc) = (self.k, self.ldb, self.ldc);
        let row = |r: usize| i0 + r.min(rows - 1);
        // SAFETY: every access is inside the rectangle, as the caller promises; the CPU has
        // AVX-512F, as it promises too.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); V]; R];
            match self.layout {
                Layout::RowMajor(ld) => {
                    let mut rowp = [a; R];
                    for (r, p) in rowp.iter_mut().enumerate() {
                        *p = a.add(row(r) * ld);
                    }
                    for p in 0..k {
                        let mut av = [0.0; R];
                        for r in 0..R {
                            av[r] = *rowp[r].add(p);
                        }
                        zmm_step::<R, V>(&mut acc, av, b.add(p * ldb + j0));
                    }
                }
                Layout::ColMajor(ld) if rows == R => {
                    for p in 0..k {
                        let ap = a.add(p * ld + i0);
                        let mut av = [0.0; R];
                        for r in 0..R {
                            av[r] = *ap.add(r);
                        }
                        zmm_step::<R, V>(&mut acc, av, b.add(p * ldb + j0));
                    }
                }
                Layout::ColMajor(ld) => {
                    for p in 0..k {
                        let ap = a.add(p * ld);
                        let mut av = [0.0; R];
                        for r in 0..R {
                            av[r] = *ap.add(row(r));
                        }
                        zmm_step::<R, V>(&mut acc, av, b.add(p * ldb + j0));
                    }
                }
            }
            let alpha = _mm512_set1_ps(self.alpha);
            for (r, acc) in acc.iter().enumerate().take(rows) {
                for (v, &x) in acc.iter().enumerate() {
                    _mm512_storeu_ps(c.add((i0 + r) * ldc + j0 + 16 * v), _mm512_mul_ps(alpha, x));
                }
            }
        }
    }
}

/// One k step of a zmm tile: `acc[r] += av[r] B[p, ..]`, B's row at `bp`. A function rather than
/// a closure, so that it is compiled with the caller's AVX-512 (a closure would call each
/// intrinsic).
///
/// # Safety
/// AVX-512F; `bp` points to `16 V` readable floats.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn zmm_step<const R: usize, const V: usize>(
    acc: &mut [[std::arch::x86_64::__m512; V]; R],
    av: [f32; R],
    bp: *const f32,
) {
    use std::arch::x86_64::*;
    // SAFETY: as the caller promises.
    unsafe {
        let mut bv = [_mm512_setzero_ps(); V];
        for v in 0..V {
            bv[v] = _mm512_loadu_ps(bp.add(16 * v));
        }
        for r in 0..R {
            let ar = _mm512_set1_ps(av[r]);
            for v in 0..V {
                acc[r][v] = _mm512_fmadd_ps(ar, bv[v], acc[r][v]);
            }
        }
    }
}

struct Panel<'a> {
    n: usize,
    k: usize,
    alpha: f32,
    a: &'a [f32],
    layout: Layout,
    b: &'a [f32],
    ldb: usize,
    ldc: usize,
}

/// One rank-1 update of a tile: `acc[r] += av[r] brow`. Plain index loops with constant bounds, so
/// that LLVM unrolls them completely, keeps `acc` in registers and makes each row `W / 8` vector
/// FMAs (iterator chains here stayed scalar code on memory). A function, not a closure: a closure
/// would be compiled without the AVX2/FMA features of the copy that calls it.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn step<const FMA: bool, const R: usize, const W: usize>(acc: &mut [[f32; W]; R], av: [f32; R], brow: &[f32; W]) {
    for r in 0..R {
        for l in 0..W {
            acc[r][l] = madd::<FMA>(av[r], brow[l], acc[r][l]);
        }
    }
}

impl Panel<'_> {
    /// Rows `rows` of C from column `j0` on, in 6 x 16 and 6 x 8 tiles.
    #[inline(always)]
    fn narrow_rows<const FMA: bool>(&self, rows: std::ops::Range<usize>, j0: usize, c: &mut [f32]) {
        for i in rows.clone().step_by(MR) {
            self.tile_row::<FMA>(i, MR.min(rows.end - i), j0, c);
        }
    }

    /// Rows `i0..i0 + rows` of C from column `j` on, `rows <= MR`.
    #[inline(always)]
    fn tile_row<const FMA: bool>(&self, i0: usize, rows: usize, mut j: usize, c: &mut [f32]) {
        while j + 16 <= self.n {
            self.tile::<FMA, 16>(i0, rows, j, 16, c);
            j += 16;
        }
        while j < self.n {
            self.tile::<FMA, 8>(i0, rows, j, (self.n - j).min(8), c);
            j += 8;
        }
    }

    /// Row `p` of B from column `j0`, `width <= W` values, zero-padded to `W`.
    #[inline(always)]
    fn b_row<const W: usize>(&self, p: usize, j0: usize, width: usize) -> [f32; W] {
        let start = p * self.ldb + j0;
        if width == W {
            self.b[start..start + W].try_into().unwrap()
        } else {
            let mut row = [0.0f32; W];
            row[..width].copy_from_slice(&self.b[start..start + width]);
            row
        }
    }

    /// The `rows x width` tile at `(i0, j0)`, `rows <= MR`, `width <= W`. A tile of fewer than
    /// `MR` rows computes the missing ones as copies of its last row and does not store them: one
    /// compiled tile for every row count keeps the code small (the instruction cache holds this).
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    fn tile<const FMA: bool, const W: usize>(&self, i0: usize, rows: usize, j0: usize, width: usize, c: &mut [f32]) {
        const R: usize = MR;
        let mut acc = [[0.0f32; W]; R];
        let k = self.k;
        let row = |r: usize| i0 + r.min(rows - 1);
        match self.layout {
            Layout::ColMajor(ld) if rows == R => {
                for p in 0..k {
                    let av: [f32; R] = self.a[p * ld + i0..p * ld + i0 + R].try_into().unwrap();
                    step::<FMA, R, W>(&mut acc, av, &self.b_row::<W>(p, j0, width));
                }
            }
            Layout::ColMajor(ld) => {
                for p in 0..k {
                    let mut av = [0.0f32; R];
                    for r in 0..R {
                        av[r] = self.a[p * ld + row(r)];
                    }
                    step::<FMA, R, W>(&mut acc, av, &self.b_row::<W>(p, j0, width));
                }
            }
            Layout::RowMajor(ld) => {
                let runs = k / RUN;
                for run in 0..runs {
                    let p0 = run * RUN;
                    let mut arun: [&[f32; RUN]; R] = [&[0.0; RUN]; R];
                    for r in 0..R {
                        let start = row(r) * ld + p0;
                        arun[r] = self.a[start..start + RUN].try_into().unwrap();
                    }
                    for q in 0..RUN {
                        let mut av = [0.0f32; R];
                        for r in 0..R {
                            av[r] = arun[r][q];
                        }
                        step::<FMA, R, W>(&mut acc, av, &self.b_row::<W>(p0 + q, j0, width));
                    }
                }
                for p in runs * RUN..k {
                    let mut av = [0.0f32; R];
                    for r in 0..R {
                        av[r] = self.a[row(r) * ld + p];
                    }
                    step::<FMA, R, W>(&mut acc, av, &self.b_row::<W>(p, j0, width));
                }
            }
        }
        for r in 0..rows {
            let start = (i0 + r) * self.ldc + j0;
            if width == W {
                // A whole vector store (a loop of `width` iterations would be scalar code).
                let out: &mut [f32; W] = (&mut c[start..start + W]).try_into().unwrap();
                for l in 0..W {
                    out[l] = self.alpha * acc[r][l];
                }
            } else {
                for (x, &v) in c[start..start + width].iter_mut().zip(&acc[r]) {
                    *x = self.alpha * v;
                }
            }
        }
    }
}

/// [`gemm`] as a kernel of its own (for the tests and benchmarks), in the copy and tiles of `isa`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_kernel(
    isa: super::simd::Isa,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    layout: Layout,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    super::simd::multiversion! {
        fn copy<FMA>(
            products: super::simd::Isa,
            m: usize,
            n: usize,
            k: usize,
            alpha: f32,
            a: &[f32],
            layout: Layout,
            b: &[f32],
            ldb: usize,
            c: &mut [f32],
            ldc: usize,
        ) {
            gemm::<FMA>(products, m, n, k, alpha, a, layout, b, ldb, c, ldc)
        }
    }
    copy(isa, isa, m, n, k, alpha, a, layout, b, ldb, c, ldc)
}
