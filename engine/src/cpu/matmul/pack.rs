//! Packing: copies a block of op(A) or op(B) into the sliver layout the micro-kernels read, so that
//! the kernel sees unit-stride, aligned, zero-padded data whatever the transposes and edges.
//!
//! Both operands are packed by the same routine. A block is seen as a strided view
//! `src[x * sx + p * sp]`, x along the sliver dimension (the rows of op(A), or the columns of
//! op(B)) and p along k:
//!
//! | operand           | x = | sx | sp |
//! |-------------------|-----|----|----|
//! | A, not transposed | i   | k  | 1  |
//! | A, transposed     | i   | 1  | m  |
//! | B, not transposed | j   | 1  | n  |
//! | B, transposed     | j   | k  | 1  |
//!
//! and packed into slivers of `W` (MR for A, NR for B): sliver `s`, step `p`, lane `r` goes to
//! `dst[s * W * kc + p * W + r]` = `src[(x0 + s * W + r) * sx + (p0 + p) * sp]`, zero for lanes past
//! the `len` valid ones. This is how the transposes disappear: all four cases leave the same layout.
//!
//! `mod.rs` packs one sliver at a time, right before the kernel first needs it, and calls
//! `prefetch_sliver` on the next one so that its cache misses overlap the kernel's work.

/// A 64-byte aligned chunk of floats: the packed buffers are `Vec<Line>`, so every packed sliver
/// starts on a cache line (sliver sizes are multiples of 16 floats for B; A is broadcast from, so
/// its alignment does not matter beyond the buffer start).
#[repr(C, align(64))]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Line([f32; 16]);

/// A reusable, cache-line aligned packing buffer, which grows to the largest size asked of it.
#[derive(Default)]
pub struct PackBuf {
    lines: Vec<Line>,
}

impl PackBuf {
    /// The first `len` floats, growing the buffer if needed.
    pub fn slice_mut(&mut self, len: usize) -> &mut [f32] {
        if self.lines.len() * 16 < len {
            self.lines.resize(len.div_ceil(16), Line([0.0; 16]));
        }
        &mut bytemuck::cast_slice_mut::<Line, f32>(&mut self.lines)[..len]
    }
}

/// The deepest k block `pack_sliver` accepts.
pub const KC_MAX: usize = 512;

/// Packs one sliver: the `valid x kc` block at `(x, p0)` of the view `src[x * sx + p * sp]`
/// (`valid <= W`) into `dst`, `W x kc` floats laid out `dst[p * W + r]`, lanes `valid..W` zero.
/// `kc <= KC_MAX`.
#[allow(clippy::too_many_arguments)]
pub fn pack_sliver<const W: usize>(
    dst: &mut [f32],
    src: &[f32],
    sx: usize,
    sp: usize,
    x: usize,
    valid: usize,
    p0: usize,
    kc: usize,
) {
    debug_assert!(valid <= W && kc <= KC_MAX);
    debug_assert_eq!(dst.len(), W * kc);
    if sp == 1 {
        // Each lane (a row of op(A), or a column of op(B) stored transposed) is contiguous along
        // k: read the W lanes as W streams and write the sliver in order. Missing lanes past the
        // edge read from a row of zeros.
        static ZEROS: [f32; KC_MAX] = [0.0; KC_MAX];
        let lanes: [&[f32]; W] = std::array::from_fn(|r| {
            if r < valid {
                let start = (x + r) * sx + p0;
                &src[start..start + kc]
            } else {
                &ZEROS[..kc]
            }
        });
        crate::cpu::interleave::interleave::<W>(dst, &lanes, kc);
    } else {
        // Contiguous along x (`sx == 1`: op(A) stored transposed, or op(B) stored plainly), or
        // strided both ways: one k step at a time.
        for (p, step) in dst.chunks_exact_mut(W).enumerate() {
            let step: &mut [f32; W] = step.try_into().unwrap();
            let start = x * sx + (p0 + p) * sp;
            if sx == 1 && valid == W {
                // A fixed-size copy, a few vector moves (a slice copy of run-time length would
                // call memmove for 24 or 64 bytes).
                *step = src[start..start + W].try_into().unwrap();
            } else {
                for (r, d) in step.iter_mut().enumerate() {
                    *d = if r < valid { src[start + r * sx] } else { 0.0 };
                }
            }
        }
    }
}

/// How many k steps ahead `pack_rows` asks for the rows it will read.
const ROWS_AHEAD: usize = 8;

/// Packs a whole block of `len` lanes at once, k step by k step, for a view that is contiguous
/// along x (`sx == 1`: op(A) stored transposed, or op(B) stored plainly): step `p` is one run of
/// `len` consecutive floats, `src[(p0 + p) * sp + x ..][..len]`, which goes to `len / W` slivers
/// (`dst[s * W * kc + p * W + r]`, lanes past `len` zero). Such a block read sliver by sliver
/// (`pack_sliver`) is `kc` short runs of `W` floats per sliver, one cache line or two out of each
/// row, visited again for the next sliver; read row by row it is `kc` long sequential runs, which
/// the hardware prefetchers follow, and each row is fetched once. Rows `ROWS_AHEAD` steps ahead
/// are prefetched. Measured on the weight gradients (`X^T dY`, both operands contiguous along x),
/// see docs/journal/benchmarks.md.
pub fn pack_rows<const W: usize>(dst: &mut [f32], src: &[f32], sp: usize, x: usize, len: usize, p0: usize, kc: usize) {
    let slivers = len.div_ceil(W);
    debug_assert!(dst.len() >= slivers * W * kc);
    let full = len / W;
    for p in 0..kc {
        let start = (p0 + p) * sp + x;
        let ahead = start + ROWS_AHEAD * sp;
        if ahead + len <= src.len() {
            for line in (ahead..ahead + len).step_by(16) {
                prefetch(&src[line]);
            }
        }
        let row = &src[start..start + len];
        for s in 0..full {
            let d: &mut [f32; W] = (&mut dst[s * W * kc + p * W..s * W * kc + (p + 1) * W]).try_into().unwrap();
            *d = row[s * W..(s + 1) * W].try_into().unwrap();
        }
        if full < slivers {
            let d = &mut dst[full * W * kc + p * W..full * W * kc + (p + 1) * W];
            let valid = len - full * W;
            d[..valid].copy_from_slice(&row[full * W..]);
            d[valid..].fill(0.0);
        }
    }
}

/// Asks the memory system for what `pack_sliver` with the same arguments will read, without
/// waiting for it. Issued one sliver ahead, the loads arrive while the micro-kernel computes,
/// instead of stalling the packing: the lanes (or rows) of a sliver are W (or kc) short streams
/// that the hardware prefetchers would only pick up after a few misses each.
pub fn prefetch_sliver(src: &[f32], sx: usize, sp: usize, x: usize, valid: usize, p0: usize, kc: usize) {
    if sp == 1 {
        for r in 0..valid {
            let start = (x + r) * sx + p0;
            for line in (start..start + kc).step_by(16) {
                prefetch(&src[line]);
            }
        }
    } else {
        for p in p0..p0 + kc {
            let (first, last) = (&src[x * sx + p * sp], &src[(x + valid - 1) * sx + p * sp]);
            prefetch(first);
            // A step of the sliver may straddle two cache lines.
            if (first as *const f32 as usize) / 64 != (last as *const f32 as usize) / 64 {
                prefetch(last);
            }
        }
    }
}

/// A hint to bring the cache line holding `value` into the L1 cache.
#[inline(always)]
pub(super) fn prefetch(value: &f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint that cannot fault; SSE is part of the x86_64 baseline.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>((value as *const f32).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_a_transposed_view_gives_the_same_sliver_as_the_plain_one() {
        // op(A) is 5 x 3; stored plainly ([5, 3]) and transposed ([3, 5]).
        let (m, k) = (5, 3);
        let value = |i: usize, p: usize| (10 * i + p) as f32 + 1.0;
        let plain: Vec<f32> = (0..m * k).map(|e| value(e / k, e % k)).collect();
        let trans: Vec<f32> = (0..m * k).map(|e| value(e % m, e / m)).collect();
        let mut from_plain = [f32::NAN; 4 * 2];
        let mut from_trans = [f32::NAN; 4 * 2];
        // Rows 1..5 and k columns 1..3 (kc 2), a full sliver of W = 4.
        pack_sliver::<4>(&mut from_plain, &plain, k, 1, 1, 4, 1, 2);
        pack_sliver::<4>(&mut from_trans, &trans, 1, m, 1, 4, 1, 2);
        assert_eq!(from_plain, from_trans);
        assert_eq!(from_plain, [12.0, 22.0, 32.0, 42.0, 13.0, 23.0, 33.0, 43.0]);
        // The ragged edge, row 4 alone, is padded with zeros.
        pack_sliver::<4>(&mut from_plain, &plain, k, 1, 4, 1, 0, 2);
        pack_sliver::<4>(&mut from_trans, &trans, 1, m, 4, 1, 0, 2);
        assert_eq!(from_plain, from_trans);
        assert_eq!(from_plain, [41.0, 0.0, 0.0, 0.0, 42.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn packing_row_by_row_gives_the_slivers_of_packing_sliver_by_sliver() {
        // A [7, 11] matrix read as op(A) transposed (contiguous along x, rows p of 11): lanes 1..10
        // (9 lanes: two slivers of 4 and a ragged one of 1) over k steps 2..5.
        let (rows, cols) = (7, 11);
        let src: Vec<f32> = (0..rows * cols).map(|e| e as f32 + 1.0).collect();
        let (x, len, p0, kc) = (1, 9, 2, 3);
        let mut by_rows = vec![f32::NAN; 3 * 4 * kc];
        pack_rows::<4>(&mut by_rows, &src, cols, x, len, p0, kc);
        let mut by_slivers = vec![f32::NAN; 3 * 4 * kc];
        for (s, dst) in by_slivers.chunks_exact_mut(4 * kc).enumerate() {
            pack_sliver::<4>(dst, &src, 1, cols, x + 4 * s, (len - 4 * s).min(4), p0, kc);
        }
        assert_eq!(by_rows, by_slivers);
        assert_eq!(by_rows[2 * 4 * kc..2 * 4 * kc + 4], [32.0, 0.0, 0.0, 0.0]);
    }
}
