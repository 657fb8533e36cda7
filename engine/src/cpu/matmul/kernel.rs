//! The micro-kernels: `C[MR x NR] (+)= Apanel[MR x kc] . Bpanel[kc x NR]` on packed slivers, then the
//! write-back of the tile into C with the bias epilogue fused in.
//!
//! A packed A sliver holds, for p in 0..kc, the MR values of column p of op(A) one after the other
//! (`a[p * MR + r]`); a packed B sliver holds, for p in 0..kc, the NR values of row p of op(B)
//! (`b[p * NR + c]`). Both are zero padded past the matrix edge, so the kernels never branch on
//! the shape inside the k loop: every step is one rank-1 update of the MR x NR accumulator tile.
//!
//! Two kernels compute the same thing:
//! - `avx2`: `std::arch` AVX2 + FMA intrinsics, the tile held in 12 ymm registers (see `mod.rs`
//!   for why 6 x 16);
//! - `portable`: plain Rust over fixed-size arrays, which the compiler vectorises for whatever
//!   the target baseline offers (SSE2 on x86_64, NEON on aarch64). Used where AVX2/FMA is missing,
//!   and by the tests to check the packing and blocking independently of the intrinsics.

/// Rows of the register tile (the height of a packed A sliver).
pub const MR: usize = 6;
/// Columns of the register tile (the width of a packed B sliver): two 8-lane ymm vectors.
pub const NR: usize = 16;

/// Where and how a finished MR x NR tile goes into C.
pub struct Tile<'a> {
    /// `C[i0, j0]` of this tile; row `r` starts at `c + r * ldc`.
    pub c: *mut f32,
    pub ldc: usize,
    /// The valid part of the tile: `rows <= MR`, `cols <= NR` (smaller at the matrix edge).
    pub rows: usize,
    pub cols: usize,
    /// `false` on the first k block: C is overwritten with `acc (+ bias)`. `true` on later k
    /// blocks: `C += acc` (the bias is already in).
    pub accumulate: bool,
    /// `bias[j0..]`, added on the first k block only.
    pub bias: Option<&'a [f32]>,
}

/// A micro-kernel: `a` holds `kc * MR` packed values, `b` holds `kc * NR` (`check_operands`
/// checks B and the bias against A).
///
/// # Safety
/// `tile` must describe `rows x cols` floats of C, row stride `ldc`, that nobody else reads or
/// writes during the call. The AVX2 kernel must only be called on a CPU that has AVX2 and FMA.
pub type KernelFn = unsafe fn(a: &[f32], b: &[f32], tile: &Tile);

/// The checks of a micro-kernel's slices, once per call (in release builds too: the AVX kernels
/// read them through raw pointers): `b` holds the `b_rows` rows of `NR` values that the k loop
/// reads, and the bias, if any, covers the tile's columns. C is a raw pointer, which cannot be
/// checked: it is the caller's promise.
#[inline(always)]
pub(super) fn check_operands<const NR: usize>(b: &[f32], b_rows: usize, tile: &Tile) {
    assert!(b.len() >= b_rows * NR, "matmul kernel: the B sliver is shorter than the A sliver");
    assert!(tile.bias.is_none_or(|bias| bias.len() >= tile.cols), "matmul kernel: the bias is shorter than the tile");
}

/// Writes an accumulated tile into C (the scalar epilogue: edge tiles, and the portable kernel).
///
/// # Safety
/// As for [`KernelFn`].
#[inline(always)]
pub(super) unsafe fn write_tile<const R: usize, const C: usize>(acc: &[[f32; C]; R], tile: &Tile) {
    for (r, acc_row) in acc.iter().enumerate().take(tile.rows) {
        // SAFETY: the caller guarantees `rows x cols` writable floats with row stride `ldc`. On the
        // first k block they may be uninitialised, so they are only written, through the pointer.
        let c_row = unsafe { tile.c.add(r * tile.ldc) };
        for (j, &v) in acc_row[..tile.cols].iter().enumerate() {
            // SAFETY: j < cols, inside the row (see above); read only on later k blocks, after
            // the first one wrote it.
            unsafe {
                let c = c_row.add(j);
                if tile.accumulate {
                    *c += v;
                } else if let Some(bias) = tile.bias {
                    c.write(v + bias[j]);
                } else {
                    c.write(v);
                }
            }
        }
    }
}

/// Asks for the first and last value of each row of the tile's C (a row spans at most two or
/// three cache lines), so that their misses overlap the k loop. A hint: it never faults.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) fn prefetch_tile(tile: &Tile) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    for r in 0..tile.rows {
        let row = tile.c.wrapping_add(r * tile.ldc);
        // SAFETY: prefetching is a hint that cannot fault; SSE is part of the x86_64 baseline.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(row.cast());
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(tile.cols - 1).cast());
        }
    }
}

/// The portable micro-kernel. The accumulator is a fixed `[[f32; NR]; MR]` array and the inner
/// two loops have constant trip counts, so LLVM unrolls them and turns each row update into
/// vector multiply-adds of the target's baseline width.
///
/// # Safety
/// As for [`KernelFn`].
pub unsafe fn portable(a: &[f32], b: &[f32], tile: &Tile) {
    check_operands::<NR>(b, a.len() / MR, tile);
    let mut acc = [[0.0f32; NR]; MR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        let ap: &[f32; MR] = ap.try_into().unwrap();
        let bp: &[f32; NR] = bp.try_into().unwrap();
        for (acc_row, &av) in acc.iter_mut().zip(ap) {
            for (c, &bv) in acc_row.iter_mut().zip(bp) {
                *c += av * bv;
            }
        }
    }
    // SAFETY: forwarded from the caller.
    unsafe { write_tile(&acc, tile) }
}

/// The AVX2 + FMA micro-kernel (a safe-to-take pointer for [`KernelFn`]; the caller checks the
/// CPU, see `Kernel::is_available`).
///
/// # Safety
/// As for [`KernelFn`], and the CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
pub unsafe fn avx2(a: &[f32], b: &[f32], tile: &Tile) {
    // SAFETY: forwarded from the caller, who checked AVX2 and FMA.
    unsafe { avx2_impl(a, b, tile) }
}

/// Per k step: two aligned 8-float loads of the B row, six broadcasts of the A column, twelve
/// FMAs into the twelve accumulators `cR0`, `cR1` (row R, left and right half). That is 15 of the
/// 16 ymm registers; the loop body is bounded by the 2 FMA pipes (6 cycles per step), while the 8
/// loads per step fit in Zen 3's 3 load ports.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_impl(a: &[f32], b: &[f32], tile: &Tile) {
    use std::arch::x86_64::*;

    let kc = a.len() / MR;
    check_operands::<NR>(b, kc, tile);
    // Ask for the C tile now, so that its cache misses overlap the k loop instead of stalling the
    // write-back (a row of the tile is 64 bytes, on at most two cache lines).
    prefetch_tile(tile);
    let mut c00 = _mm256_setzero_ps();
    let mut c01 = _mm256_setzero_ps();
    let mut c10 = _mm256_setzero_ps();
    let mut c11 = _mm256_setzero_ps();
    let mut c20 = _mm256_setzero_ps();
    let mut c21 = _mm256_setzero_ps();
    let mut c30 = _mm256_setzero_ps();
    let mut c31 = _mm256_setzero_ps();
    let mut c40 = _mm256_setzero_ps();
    let mut c41 = _mm256_setzero_ps();
    let mut c50 = _mm256_setzero_ps();
    let mut c51 = _mm256_setzero_ps();

    let mut pa = a.as_ptr();
    let mut pb = b.as_ptr();
    // One k step; written as a macro so that the loop below can unroll it by hand.
    macro_rules! step {
        ($off_a:expr, $off_b:expr) => {{
            // SAFETY: p < kc, so `pa + off_a + 0..MR` and `pb + off_b + 0..NR` are inside `a` and
            // `b` (`kc * NR` values, checked).
            unsafe {
                let b0 = _mm256_loadu_ps(pb.add($off_b));
                let b1 = _mm256_loadu_ps(pb.add($off_b + 8));
                let a0 = _mm256_broadcast_ss(&*pa.add($off_a));
                c00 = _mm256_fmadd_ps(a0, b0, c00);
                c01 = _mm256_fmadd_ps(a0, b1, c01);
                let a1 = _mm256_broadcast_ss(&*pa.add($off_a + 1));
                c10 = _mm256_fmadd_ps(a1, b0, c10);
                c11 = _mm256_fmadd_ps(a1, b1, c11);
                let a2 = _mm256_broadcast_ss(&*pa.add($off_a + 2));
                c20 = _mm256_fmadd_ps(a2, b0, c20);
                c21 = _mm256_fmadd_ps(a2, b1, c21);
                let a3 = _mm256_broadcast_ss(&*pa.add($off_a + 3));
                c30 = _mm256_fmadd_ps(a3, b0, c30);
                c31 = _mm256_fmadd_ps(a3, b1, c31);
                let a4 = _mm256_broadcast_ss(&*pa.add($off_a + 4));
                c40 = _mm256_fmadd_ps(a4, b0, c40);
                c41 = _mm256_fmadd_ps(a4, b1, c41);
                let a5 = _mm256_broadcast_ss(&*pa.add($off_a + 5));
                c50 = _mm256_fmadd_ps(a5, b0, c50);
                c51 = _mm256_fmadd_ps(a5, b1, c51);
            }
        }};
    }
    // Unrolled by 4: less loop overhead, and room for the out-of-order core to run the loads of
    // the next steps under the FMAs of this one.
    for _ in 0..kc / 4 {
        step!(0, 0);
        step!(MR, NR);
        step!(2 * MR, 2 * NR);
        step!(3 * MR, 3 * NR);
        // SAFETY: still inside (or one past the end of) the packed slivers.
        unsafe {
            pa = pa.add(4 * MR);
            pb = pb.add(4 * NR);
        }
    }
    for _ in 0..kc % 4 {
        step!(0, 0);
        // SAFETY: as above.
        unsafe {
            pa = pa.add(MR);
            pb = pb.add(NR);
        }
    }

    let acc = [[c00, c01], [c10, c11], [c20, c21], [c30, c31], [c40, c41], [c50, c51]];
    if tile.rows == MR && tile.cols == NR {
        // A full tile: vector write-back, bias fused in.
        let (bias0, bias1) = match tile.bias {
            // SAFETY: `bias` holds at least `cols` = NR values (`check_operands`).
            Some(bias) if !tile.accumulate => unsafe {
                (_mm256_loadu_ps(bias.as_ptr()), _mm256_loadu_ps(bias.as_ptr().add(8)))
            },
            _ => (_mm256_setzero_ps(), _mm256_setzero_ps()),
        };
        for (r, [v0, v1]) in acc.into_iter().enumerate() {
            // SAFETY: the caller guarantees MR rows of NR writable floats, row stride `ldc`.
            unsafe {
                let c = tile.c.add(r * tile.ldc);
                let (base0, base1) =
                    if tile.accumulate { (_mm256_loadu_ps(c), _mm256_loadu_ps(c.add(8))) } else { (bias0, bias1) };
                _mm256_storeu_ps(c, _mm256_add_ps(base0, v0));
                _mm256_storeu_ps(c.add(8), _mm256_add_ps(base1, v1));
            }
        }
    } else {
        // An edge tile: spill the registers, write back the valid part only.
        let mut spilled = [[0.0f32; NR]; MR];
        for (row, [v0, v1]) in spilled.iter_mut().zip(acc) {
            // SAFETY: each row of `spilled` holds NR = 16 floats.
            unsafe {
                _mm256_storeu_ps(row.as_mut_ptr(), v0);
                _mm256_storeu_ps(row.as_mut_ptr().add(8), v1);
            }
        }
        // SAFETY: forwarded from the caller.
        unsafe { write_tile(&spilled, tile) }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Kernel, Precision, kernel_avx512};
    use super::{MR, NR, Tile};
    use crate::cpu::panic_message;

    #[test]
    fn every_kernel_refuses_a_b_sliver_or_a_bias_shorter_than_what_it_reads() {
        let kernels = Kernel::ALL.into_iter().chain(Kernel::BF16);
        for kernel in kernels.clone().filter(|k| !k.is_available()) {
            eprintln!("SKIPPED: this CPU cannot run the {kernel:?} kernel: its checks are not tested here");
        }
        let mut wrong = Vec::new();
        for kernel in kernels.filter(|k| k.is_available()) {
            let (mr, nr) = match kernel {
                Kernel::Avx512 | Kernel::Bf16Avx512 => (kernel_avx512::MR, kernel_avx512::NR),
                _ => (MR, NR),
            };
            let kc = 4;
            // The rows of B the k loop reads: a bf16 row holds two k steps.
            let b_rows = if kernel.precision() == Precision::Bf16 { kc / 2 } else { kc };
            let (a, b, bias) = (vec![1.0f32; mr * kc], vec![1.0f32; b_rows * nr], vec![0.5f32; nr]);
            let mut c = vec![0.0f32; mr * nr];
            let c = c.as_mut_ptr();
            let run = |b: &[f32], bias: &[f32]| {
                let tile = Tile { c, ldc: nr, rows: mr, cols: nr, accumulate: false, bias: Some(bias) };
                // SAFETY: the tile is `c`, `mr x nr` floats that only this call uses.
                panic_message(|| unsafe { (kernel.function())(&a, b, &tile) })
            };
            assert_eq!(run(&b, &bias), None, "{kernel:?}: operands of the right sizes");
            for (what, message) in
                [("B sliver", run(&b[..(b_rows - 1) * nr], &bias)), ("bias", run(&b, &bias[..nr - 1]))]
            {
                if !message.as_deref().is_some_and(|m| m.contains(what)) {
                    wrong.push(format!("{kernel:?} with a short {what}: {message:?}"));
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}
