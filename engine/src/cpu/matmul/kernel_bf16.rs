//! The bfloat16 micro-kernels: `C (+)= Apanel . Bpanel` on slivers of k-pair words (`bf16.rs`),
//! summed in f32. The same tiles, blocking and write-back as the f32 kernels they mirror:
//!
//! - `avx512`: AVX512_BF16's `vdpbf16ps` on a 12 x 32 tile, the AVX-512 f32 kernel's tile and
//!   blocking (`kernel_avx512.rs`) with one instruction per two k steps where that kernel has one
//!   FMA per step;
//! - `portable`: plain Rust on the 6 x 16 tile of `kernel.rs`, which widens each bf16 half to f32
//!   and multiply-adds. The reference for the packing, anywhere; as slow as it is simple.
//!
//! Per word the two halves are added in the order `vdpbf16ps` documents (the odd k step, then the
//! even one), so the two kernels differ only where the hardware flushes subnormals to zero.

use super::bf16::from_bf16_bits;
use super::kernel::{self, Tile, write_tile};
#[cfg(target_arch = "x86_64")]
use super::kernel_avx512;

/// The portable bf16 micro-kernel on the 6 x 16 tile.
///
/// # Safety
/// As for `KernelFn`.
pub unsafe fn portable(a: &[f32], b: &[f32], tile: &Tile) {
    const MR: usize = kernel::MR;
    const NR: usize = kernel::NR;
    let pairs = (a.len() / MR).div_ceil(2);
    kernel::check_operands::<NR>(b, pairs, tile);
    let mut acc = [[0.0f32; NR]; MR];
    for (ap, bp) in a[..pairs * MR].chunks_exact(MR).zip(b[..pairs * NR].chunks_exact(NR)) {
        for (acc_row, aw) in acc.iter_mut().zip(ap) {
            let (a_even, a_odd) = halves(*aw);
            for (c, bw) in acc_row.iter_mut().zip(bp) {
                let (b_even, b_odd) = halves(*bw);
                // Each product of two bf16 values is exact in f32.
                *c += a_odd * b_odd;
                *c += a_even * b_even;
            }
        }
    }
    // SAFETY: forwarded from the caller.
    unsafe { write_tile(&acc, tile) }
}

/// The two bf16 values of a word, widened: (even k step, odd k step).
#[inline(always)]
fn halves(word: f32) -> (f32, f32) {
    let bits = word.to_bits();
    (from_bf16_bits(bits as u16), from_bf16_bits((bits >> 16) as u16))
}

/// The AVX512_BF16 micro-kernel on the 12 x 32 tile (a safe-to-take pointer for `KernelFn`; the
/// caller checks the CPU, see `Kernel::is_available`).
///
/// # Safety
/// As for `KernelFn`, and the CPU must support AVX-512F and AVX512_BF16.
#[cfg(target_arch = "x86_64")]
pub unsafe fn avx512(a: &[f32], b: &[f32], tile: &Tile) {
    // SAFETY: forwarded from the caller, who checked AVX-512F and AVX512_BF16.
    unsafe { avx512_impl(a, b, tile) }
}

/// Per pair of k steps: two 64-byte loads of the B row of words, twelve broadcasts of A words,
/// 24 `vdpbf16ps` into the 24 accumulators (27 of the 32 zmm registers, as the f32 kernel).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn avx512_impl(a: &[f32], b: &[f32], tile: &Tile) {
    use kernel_avx512::{MR, NR};
    use std::arch::x86_64::*;

    let pairs = (a.len() / MR).div_ceil(2);
    kernel::check_operands::<NR>(b, pairs, tile);
    kernel::prefetch_tile(tile);
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let mut pa = a.as_ptr().cast::<i32>();
    let mut pb = b.as_ptr();
    for _ in 0..pairs {
        // SAFETY: q < pairs <= kc, so `pa + 0..MR` is inside `a` (`kc * MR` values) and
        // `pb + 0..NR` inside `b` (`pairs * NR`, checked). A vector of 16 words is the 32 bf16
        // values `vdpbf16ps` reads, so the casts only rename.
        unsafe {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_ps(pb));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_ps(pb.add(16)));
            for (r, acc_row) in acc.iter_mut().enumerate() {
                let ar: __m512bh = std::mem::transmute(_mm512_set1_epi32(*pa.add(r)));
                acc_row[0] = _mm512_dpbf16_ps(acc_row[0], ar, b0);
                acc_row[1] = _mm512_dpbf16_ps(acc_row[1], ar, b1);
            }
            pa = pa.add(MR);
            pb = pb.add(NR);
        }
    }
    // SAFETY: forwarded from the caller; the bias is checked above.
    unsafe { kernel_avx512::write_back(acc, tile) }
}
