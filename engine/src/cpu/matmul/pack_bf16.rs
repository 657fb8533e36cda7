//! Packing straight into the bf16 k-pair words of `bf16.rs`, with the conversions of AVX512_BF16:
//! what the bf16 AVX-512 kernel reads, in one pass over the operand instead of two.
//!
//! The portable route packs an f32 sliver (`pack.rs`) and then pairs it up in place
//! (`bf16::pair_up_in_place`): the sliver is written, read back and written again, and the
//! rounding is a dozen integer instructions per value. In a training step at bf16 that weighed
//! heavily beside the kernel itself (docs/journal/benchmarks.md, "Packing bf16 with the instructions"),
//! most of all in the weight gradients, whose `kc x n` panels are used by only `m` = 64 - 128
//! rows. Here the instructions do the rounding (`vcvtneps2bf16`: round to
//! nearest, ties to even; NaN kept quiet; denormals to signed zero, which `bf16::to_bf16_bits`
//! does too, so the two routes give the same words) and the words are written once:
//!
//! - [`pack_rows`] (an operand contiguous along the sliver: op(A) stored transposed, op(B) stored
//!   plainly): steps 2q and 2q + 1 are two runs of floats; `vcvtne2ps2bf16` rounds 16 of each into
//!   one register, low half step 2q and high half step 2q + 1, and one `vpermw` interleaves the
//!   halves into 16 words.
//! - [`pack_sliver`] (contiguous along k: op(A) stored plainly, op(B) stored transposed): a lane's
//!   two steps are adjacent floats, so `vcvtneps2bf16` of 16 of them *is* 8 words; 8 lanes' words
//!   then go through the 8 x 8 transpose of `interleave.rs` (an f32 transpose moves 32-bit words
//!   without looking at them), 8 word steps, that is 16 k steps, per transpose.
//!
//! Edges read with masked loads (nothing past a row or lane is touched; the masked-out values are
//! zeros, which is the padding past `valid` lanes and past an odd `kc`) and write with masked
//! stores. The layout is `bf16.rs`'s: sliver `s` at `dst[s * W * kc..]`, word `(q, r)` at
//! `q * W + r`, `ceil(kc / 2)` word steps.
//!
//! Napkin math: per 16 words, [`pack_rows`] does two loads, one conversion, one permute and one
//! store; [`pack_sliver`] per 8 x 8 words eight loads, eight conversions, 24 shuffles and eight
//! stores. Against a kernel call of `12 x 32 x kc` multiply-adds per `(12 + 32) x kc / 2` packed
//! words that is a few percent of the kernel's cycles.

use std::arch::x86_64::*;

use super::pack::{KC_MAX, prefetch};

/// How many k steps ahead `pack_rows` asks for the rows it will read (as `pack::pack_rows`).
const ROWS_AHEAD: usize = 8;

/// For `vpermw`: word `2i` of the result is word `i` of the source (step 2q, lane i), word `2i + 1`
/// is word `16 + i` (step 2q + 1, lane i).
const PAIR_UP: [i16; 32] = {
    let mut idx = [0i16; 32];
    let mut i = 0;
    while i < 16 {
        idx[2 * i] = i as i16;
        idx[2 * i + 1] = 16 + i as i16;
        i += 1;
    }
    idx
};

/// The first `n <= 16` lanes.
#[inline(always)]
fn lanes(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

/// Whether this CPU has what the functions below are compiled for.
pub fn is_available() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512bf16")
}

/// `pack::pack_rows` into k-pair words: the `len` lanes at `x` of steps `p0..p0 + kc` of the
/// view `src[p * sp + x]` (contiguous along x), `len.div_ceil(W)` slivers of `W x kc` slots each.
///
/// # Safety
/// The CPU must have AVX-512 F, BW, VL and BF16 ([`is_available`]).
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512bf16")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn pack_rows<const W: usize>(
    dst: &mut [f32],
    src: &[f32],
    sp: usize,
    x: usize,
    len: usize,
    p0: usize,
    kc: usize,
) {
    if len == 0 || kc == 0 {
        return;
    }
    let slivers = len.div_ceil(W);
    assert!(dst.len() >= slivers * W * kc, "pack_rows: dst too short");
    assert!((p0 + kc - 1) * sp + x + len <= src.len(), "pack_rows: src too short");
    // SAFETY: `PAIR_UP` is 64 bytes.
    let idx = unsafe { _mm512_loadu_si512(PAIR_UP.as_ptr().cast()) };
    for q in 0..kc.div_ceil(2) {
        let lo = (p0 + 2 * q) * sp + x;
        let has_hi = 2 * q + 1 < kc;
        for ahead in [lo + ROWS_AHEAD * sp, lo + (ROWS_AHEAD + 1) * sp] {
            if ahead + len <= src.len() {
                for line in (ahead..ahead + len).step_by(16) {
                    prefetch(&src[line]);
                }
            }
        }
        for s in 0..slivers {
            let valid = (len - s * W).min(W);
            for c in (0..W).step_by(16) {
                let n = valid.saturating_sub(c).min(16);
                let words = if n == 0 {
                    _mm512_setzero_si512()
                } else {
                    // SAFETY: lanes `s W + c .. + n` of rows 2q and 2q + 1 are inside the view
                    // (checked above: n > 0 means s W + c < len); masked-out lanes are not read.
                    unsafe {
                        let at = s * W + c;
                        let v0 = _mm512_maskz_loadu_ps(lanes(n), src.as_ptr().add(lo + at));
                        let v1 = if has_hi {
                            _mm512_maskz_loadu_ps(lanes(n), src.as_ptr().add(lo + sp + at))
                        } else {
                            _mm512_setzero_ps()
                        };
                        let halves: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(v1, v0));
                        _mm512_permutexvar_epi16(idx, halves)
                    }
                };
                // SAFETY: word `(q, c .. c + w)` of sliver s is inside its `W x kc` slots.
                unsafe {
                    let d = dst.as_mut_ptr().add(s * W * kc + q * W + c);
                    _mm512_mask_storeu_epi32(d.cast(), lanes((W - c).min(16)), words);
                }
            }
        }
    }
}

/// `pack::pack_sliver` into k-pair words, for a view contiguous along k (`src[x * sx + p]`, the
/// `sp == 1` case): `valid <= W` lanes at `x`, steps `p0..p0 + kc`, into the `W x kc` slots of
/// `dst`.
///
/// # Safety
/// The CPU must have AVX-512 F, BW, VL and BF16 ([`is_available`]).
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512bf16")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn pack_sliver<const W: usize>(
    dst: &mut [f32],
    src: &[f32],
    sx: usize,
    x: usize,
    valid: usize,
    p0: usize,
    kc: usize,
) {
    assert!(valid <= W && kc <= KC_MAX && dst.len() >= W * kc, "pack_sliver: sizes");
    if valid == 0 || kc == 0 {
        dst[..W * kc.div_ceil(2)].fill(0.0);
        return;
    }
    assert!((x + valid - 1) * sx + p0 + kc <= src.len(), "pack_sliver: src too short");
    let pairs = kc.div_ceil(2);
    for q0 in (0..pairs).step_by(8) {
        // Floats `p0 + 2 q0 .. + n` of each lane: 8 word steps, fewer at the end.
        let n = (kc - 2 * q0).min(16);
        let steps = (pairs - q0).min(8);
        for g in (0..W).step_by(8) {
            let r: [__m256; 8] = std::array::from_fn(|i| {
                if g + i < valid {
                    // SAFETY: floats `2 q0 .. 2 q0 + n <= kc` of lane g + i < valid, inside the
                    // view (checked above); masked-out floats are not read.
                    unsafe {
                        let v = _mm512_maskz_loadu_ps(lanes(n), src.as_ptr().add((x + g + i) * sx + p0 + 2 * q0));
                        std::mem::transmute::<__m256bh, __m256>(_mm512_cvtneps_pbh(v))
                    }
                } else {
                    _mm256_setzero_ps()
                }
            });
            let w = (W - g).min(8);
            for (t, col) in crate::cpu::interleave::transpose8(r).into_iter().take(steps).enumerate() {
                // SAFETY: word step q0 + t < pairs, lanes g .. g + w <= W: inside dst's W x kc.
                unsafe {
                    let d = dst.as_mut_ptr().add((q0 + t) * W + g);
                    _mm256_mask_storeu_ps(d, ((1u16 << w) - 1) as __mmask8, col);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Packing, Run, kernel};

    /// Values that exercise the rounding: ties, NaN, infinities, denormals, both signs.
    fn value(e: usize) -> f32 {
        match e % 23 {
            3 => 1.0 + 2f32.powi(-8),
            5 => -(1.0 + 3.0 * 2f32.powi(-8)),
            7 => f32::NAN,
            11 => f32::INFINITY,
            13 => 1e-40,
            17 => -3e-39,
            _ => ((e * 7919 % 1000) as f32 - 500.0) * 0.0137,
        }
    }

    /// The two bf16 packings the products choose between, as `gemm` calls them: in f32 then paired
    /// up in portable code, and straight to words here. None (and a notice) where this CPU lacks
    /// AVX512_BF16.
    fn portable_and_direct() -> Option<(Run, Run)> {
        if !super::is_available() {
            eprintln!("SKIPPED: this CPU lacks AVX512_BF16: direct bf16 packing is not tested here");
            return None;
        }
        let run = |packing| Run { kernel: kernel::portable, packing };
        Some((run(Packing::PairUp), run(Packing::Bf16Avx512)))
    }

    /// Checks that the words of the `slivers` slivers of `W x kc` slots that `pack` writes are the
    /// same bits for both packings.
    fn check_same_words<const W: usize>(slivers: usize, kc: usize, what: &str, pack: impl Fn(&Run, &mut [f32])) {
        let Some((portable, direct)) = portable_and_direct() else { return };
        let (mut want, mut got) = (vec![f32::NAN; slivers * W * kc], vec![f32::NAN; slivers * W * kc]);
        pack(&portable, &mut want);
        pack(&direct, &mut got);
        for s in 0..slivers {
            let words = s * W * kc..s * W * kc + W * kc.div_ceil(2);
            let first_difference = want[words.clone()]
                .iter()
                .zip(&got[words])
                .enumerate()
                .find(|(_, (x, y))| x.to_bits() != y.to_bits())
                .map(|(i, (x, y))| (i, x.to_bits(), y.to_bits()));
            assert_eq!(first_difference, None, "sliver {s} of W {W} at {what}");
        }
    }

    #[test]
    fn packing_rows_straight_to_words_gives_the_paired_up_f32_slivers() {
        let (rows, cols) = (41, 77);
        let src: Vec<f32> = (0..rows * cols).map(value).collect();
        for (x, len, p0, kc) in [(0usize, 77usize, 0, 41), (3, 70, 1, 40), (5, 13, 2, 7), (0, 32, 0, 1), (9, 1, 4, 2)] {
            let what = format!("x {x}, len {len}, p0 {p0}, kc {kc}");
            check_same_words::<12>(len.div_ceil(12), kc, &what, |run, dst| {
                run.pack_rows::<12>(dst, &src, cols, x, len, p0, kc)
            });
            check_same_words::<32>(len.div_ceil(32), kc, &what, |run, dst| {
                run.pack_rows::<32>(dst, &src, cols, x, len, p0, kc)
            });
        }
    }

    #[test]
    fn packing_a_sliver_straight_to_words_gives_the_paired_up_f32_sliver() {
        let (rows, cols) = (45, 301);
        let src: Vec<f32> = (0..rows * cols).map(value).collect();
        for (x, valid, p0, kc) in [(0, 12, 0, 256), (7, 5, 3, 33), (1, 32, 17, 1), (13, 32, 0, 17), (2, 1, 40, 2)] {
            let what = format!("x {x}, valid {valid}, p0 {p0}, kc {kc}");
            check_same_words::<12>(1, kc, &what, |run, dst| {
                run.pack_sliver::<12>(dst, &src, cols, 1, x, valid.min(12), p0, kc)
            });
            check_same_words::<32>(1, kc, &what, |run, dst| {
                run.pack_sliver::<32>(dst, &src, cols, 1, x, valid, p0, kc)
            });
        }
    }
}
