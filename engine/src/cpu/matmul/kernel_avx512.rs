//! The AVX-512 micro-kernel: `C[12 x 32] (+)= Apanel[12 x kc] . Bpanel[kc x 32]` on packed
//! slivers, the same algorithm and packed layout as the 6 x 16 AVX2 kernel of `kernel.rs`, on
//! 512-bit registers.
//!
//! # Why 12 x 32
//!
//! AVX-512 has 32 zmm registers of 16 floats. A 12 x 32 tile is 24 accumulators (12 rows x 2
//! vectors), plus 2 registers for the B row and 1 for the broadcast A value: 27 of 32. Each k step
//! does 24 FMAs (384 multiply-adds) for 2 vector loads and 12 broadcasts: 27 flops per loaded
//! float against the AVX2 kernel's 12. It is BLIS's sgemm tile for Skylake-X (32 x 12 there, with
//! C column-major; the same thing transposed). Enough independent accumulators (24) to cover the
//! FMA latency (4 cycles) on two 512-bit pipes (8 needed).
//!
//! # Napkin math
//!
//! On a server core with two 512-bit FMA units (Skylake-SP, Ice Lake, Sapphire Rapids): 2 x 16
//! lanes x 2 flops = 64 flops per cycle, twice the AVX2 kernel's 32. On Zen 4, which runs each
//! 512-bit FMA as two 256-bit halves, the peak is the AVX2 kernel's; there the gain is in fewer
//! instructions per flop and fewer loads, not in FMA width.
//!
//! # Blocking: an A sliver in L1, KC = 256, NC = 768
//!
//! The AVX2 kernel keeps a B sliver in L1 and streams the A block past it (GotoBLAS's order). At
//! 32 columns a B sliver is twice as wide, so it would only fit L1 with a k block of 128, and then
//! C is read and written once per 128 steps of k. This kernel turns the two inner loops round, as
//! BLIS does on Skylake-X: the A sliver (12 x 256 x 4 B = 12 KiB) stays in L1 while the B panel
//! (256 x 768 x 4 B = 768 KiB) streams from L2, one 32 KiB sliver per kernel call, 128 bytes a k
//! step, well within what L2 delivers. Measured on a 2-core Intel Xeon with AVX-512 (48 KiB L1d,
//! 2 MiB L2; docs/journal/benchmarks.md), against the GotoBLAS order at KC = 128, NC = 2048 in one run:
//! 1.07 - 1.4x on the MAE's products on two threads (the base preset's weight gradients gain
//! most), and no worse than ~5% on the micro preset's long-k weight gradients.

use super::kernel::Tile;
#[cfg(target_arch = "x86_64")]
use super::kernel::{prefetch_tile, write_tile};

/// Rows of the register tile (the height of a packed A sliver).
pub const MR: usize = 12;
/// Columns of the register tile: two 16-lane zmm vectors.
pub const NR: usize = 32;
/// The cache blocking (see the module comment).
pub(super) const BLOCKING: super::Blocking =
    super::Blocking { kc: 256, mc: 144, nc: 768, order: super::LoopOrder::ASliverInL1 };

/// The AVX-512 micro-kernel (a safe-to-take pointer for `KernelFn`; the caller checks the CPU,
/// see `Kernel::is_available`).
///
/// # Safety
/// As for `KernelFn`, and the CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
pub unsafe fn avx512(a: &[f32], b: &[f32], tile: &Tile) {
    // SAFETY: forwarded from the caller, who checked AVX-512F.
    unsafe { avx512_impl(a, b, tile) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512_impl(a: &[f32], b: &[f32], tile: &Tile) {
    use std::arch::x86_64::*;

    let kc = a.len() / MR;
    super::kernel::check_operands::<NR>(b, kc, tile);
    // Ask for the C tile now, so that its misses overlap the k loop (a tile row is 128 bytes).
    prefetch_tile(tile);
    // The 24 accumulators: `acc[r][h]` is row r, columns 16 h .. 16 h + 16. Every index below is a
    // constant after unrolling, so LLVM keeps them all in registers.
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let mut pa = a.as_ptr();
    let mut pb = b.as_ptr();
    for _ in 0..kc {
        // SAFETY: p < kc, so `pa + 0..MR` and `pb + 0..NR` are inside the packed slivers (`b`
        // holds `kc * NR` values, checked).
        unsafe {
            let b0 = _mm512_loadu_ps(pb);
            let b1 = _mm512_loadu_ps(pb.add(16));
            for (r, acc_row) in acc.iter_mut().enumerate() {
                let ar = _mm512_set1_ps(*pa.add(r));
                acc_row[0] = _mm512_fmadd_ps(ar, b0, acc_row[0]);
                acc_row[1] = _mm512_fmadd_ps(ar, b1, acc_row[1]);
            }
            pa = pa.add(MR);
            pb = pb.add(NR);
        }
    }

    // SAFETY: forwarded from the caller; the bias is checked above.
    unsafe { write_back(acc, tile) }
}

/// Writes the 24 accumulators of a 12 x 32 tile into C: vector stores (bias fused in) for a full
/// tile, the scalar `write_tile` for an edge tile. Shared with the bf16 kernel (`kernel_bf16.rs`).
///
/// # Safety
/// As for `KernelFn`, the CPU must support AVX-512F, and the bias must cover the tile's columns
/// (the kernels' `check_operands`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn write_back(acc: [[std::arch::x86_64::__m512; 2]; MR], tile: &Tile) {
    use std::arch::x86_64::*;

    if tile.rows == MR && tile.cols == NR {
        // A full tile: vector write-back, bias fused in.
        let (bias0, bias1) = match tile.bias {
            // SAFETY: `bias` holds at least `cols` = NR values (the caller's `check_operands`).
            Some(bias) if !tile.accumulate => unsafe {
                (_mm512_loadu_ps(bias.as_ptr()), _mm512_loadu_ps(bias.as_ptr().add(16)))
            },
            _ => (_mm512_setzero_ps(), _mm512_setzero_ps()),
        };
        for (r, [v0, v1]) in acc.into_iter().enumerate() {
            // SAFETY: the caller guarantees MR rows of NR writable floats, row stride `ldc`.
            unsafe {
                let c = tile.c.add(r * tile.ldc);
                let (base0, base1) =
                    if tile.accumulate { (_mm512_loadu_ps(c), _mm512_loadu_ps(c.add(16))) } else { (bias0, bias1) };
                _mm512_storeu_ps(c, _mm512_add_ps(base0, v0));
                _mm512_storeu_ps(c.add(16), _mm512_add_ps(base1, v1));
            }
        }
    } else {
        // An edge tile: spill the registers, write back the valid part only.
        let mut spilled = [[0.0f32; NR]; MR];
        for (row, [v0, v1]) in spilled.iter_mut().zip(acc) {
            // SAFETY: each row of `spilled` holds NR = 32 floats.
            unsafe {
                _mm512_storeu_ps(row.as_mut_ptr(), v0);
                _mm512_storeu_ps(row.as_mut_ptr().add(16), v1);
            }
        }
        // SAFETY: forwarded from the caller.
        unsafe { write_tile(&spilled, tile) }
    }
}
