//! Interleaving `W` lanes step by step, and back: the transposes that put several independent
//! rows side by side in vector lanes. The matmul packs its slivers with [`interleave`]
//! (`matmul/pack.rs`); attention puts `G` heads in the lanes of its vectors with it and takes
//! its results back out with [`deinterleave`] (`fast/attention.rs`).
//!
//! Both move data only. Value by value, a transpose is a load and a store per float; with AVX2
//! (checked at run time) they go through 8 x 8 blocks in registers: eight 8-float loads, the
//! classic 24-shuffle transpose, eight stores. Steps past the last multiple of 8, and CPUs
//! without AVX2, take the scalar loop.

/// `dst[p * W + r] = lanes[r][p]` for `p < kc`: the lanes interleaved step by step (a transpose
/// of `W x kc` into `kc x W`). Packed value by value, the narrow products of training (a
/// [12800, 256] activation times a [64, 256]^T weight reuses each packed A sliver for only two
/// kernel calls) spent about as much on packing as on the product.
pub fn interleave<const W: usize>(dst: &mut [f32], lanes: &[&[f32]; W], kc: usize) {
    assert!(dst.len() >= W * kc && lanes.iter().all(|l| l.len() >= kc), "interleave: too short");
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is checked just above; the lengths just before.
        done = unsafe { interleave_avx2::<W>(dst, lanes, kc) };
    }
    for p in done..kc {
        let step: &mut [f32; W] = (&mut dst[p * W..(p + 1) * W]).try_into().unwrap();
        for (d, lane) in step.iter_mut().zip(lanes) {
            *d = lane[p];
        }
    }
}

/// The inverse of [`interleave`]: `lanes[r][p] = src[p * W + r]` for `p < kc`.
pub fn deinterleave<const W: usize>(lanes: &mut [&mut [f32]; W], src: &[f32], kc: usize) {
    assert!(src.len() >= W * kc && lanes.iter().all(|l| l.len() >= kc), "deinterleave: too short");
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if W.is_multiple_of(8) && std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is checked just above; the lengths just before.
        done = unsafe { deinterleave_avx2::<W>(lanes, src, kc) };
    }
    for p in done..kc {
        for (r, lane) in lanes.iter_mut().enumerate() {
            lane[p] = src[p * W + r];
        }
    }
}

/// The 8 x 8 transpose: `out[q]` holds element q of each of `r[0..8]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) fn transpose8(r: [std::arch::x86_64::__m256; 8]) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::*;
    let t = [
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    ];
    let u = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    [
        _mm256_permute2f128_ps::<0x20>(u[0], u[4]),
        _mm256_permute2f128_ps::<0x20>(u[1], u[5]),
        _mm256_permute2f128_ps::<0x20>(u[2], u[6]),
        _mm256_permute2f128_ps::<0x20>(u[3], u[7]),
        _mm256_permute2f128_ps::<0x31>(u[0], u[4]),
        _mm256_permute2f128_ps::<0x31>(u[1], u[5]),
        _mm256_permute2f128_ps::<0x31>(u[2], u[6]),
        _mm256_permute2f128_ps::<0x31>(u[3], u[7]),
    ]
}

/// [`interleave`] for the first `kc / 8 * 8` steps, 8 lanes by 8 steps at a time; returns how
/// many steps it did.
///
/// # Safety
/// The CPU must support AVX2; `dst` and `lanes` must hold what [`interleave`] asserts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn interleave_avx2<const W: usize>(dst: &mut [f32], lanes: &[&[f32]; W], kc: usize) -> usize {
    use std::arch::x86_64::*;
    let full = kc / 8 * 8;
    for p in (0..full).step_by(8) {
        for g in (0..W).step_by(8) {
            let r: [__m256; 8] = std::array::from_fn(|i| {
                // SAFETY: lane `g + i < W` holds at least kc >= p + 8 floats.
                if g + i < W { unsafe { _mm256_loadu_ps(lanes[g + i].as_ptr().add(p)) } } else { _mm256_setzero_ps() }
            });
            let w = (W - g).min(8);
            for (q, col) in transpose8(r).into_iter().enumerate() {
                // SAFETY: dst holds W * kc floats, and step `p + q < kc` writes
                // `dst[(p + q) * W + g..][..w]`, g + w <= W.
                let d = unsafe { dst.as_mut_ptr().add((p + q) * W + g) };
                if w == 8 {
                    // SAFETY: as above, w = 8.
                    unsafe { _mm256_storeu_ps(d, col) };
                } else {
                    let mut spill = [0.0f32; 8];
                    // SAFETY: `spill` holds 8 floats; `d` w, as above.
                    unsafe {
                        _mm256_storeu_ps(spill.as_mut_ptr(), col);
                        std::ptr::copy_nonoverlapping(spill.as_ptr(), d, w);
                    }
                }
            }
        }
    }
    full
}

/// [`deinterleave`] for the first `kc / 8 * 8` steps (W a multiple of 8); returns how many steps
/// it did.
///
/// # Safety
/// The CPU must support AVX2; `lanes` and `src` must hold what [`deinterleave`] asserts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn deinterleave_avx2<const W: usize>(lanes: &mut [&mut [f32]; W], src: &[f32], kc: usize) -> usize {
    use std::arch::x86_64::*;
    let full = kc / 8 * 8;
    for p in (0..full).step_by(8) {
        for g in (0..W).step_by(8) {
            // SAFETY: src holds W * kc floats, and step `p + q < kc` reads `src[(p + q) * W + g..][..8]`
            // (W a multiple of 8); lane `g + i < W` holds at least kc >= p + 8 floats.
            let r: [__m256; 8] = std::array::from_fn(|q| unsafe { _mm256_loadu_ps(src.as_ptr().add((p + q) * W + g)) });
            for (i, row) in transpose8(r).into_iter().enumerate() {
                // SAFETY: lane `g + i < W` holds at least kc >= p + 8 floats.
                unsafe { _mm256_storeu_ps(lanes[g + i].as_mut_ptr().add(p), row) };
            }
        }
    }
    full
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_in_blocks_gives_the_value_by_value_result_and_deinterleaving_undoes_it() {
        // Every width the kernels use, with ragged step counts (not multiples of 8).
        fn check<const W: usize>() {
            for kc in [1, 7, 8, 13, 33] {
                let data: Vec<Vec<f32>> = (0..W).map(|r| (0..kc).map(|p| (r * 1000 + p) as f32).collect()).collect();
                let lanes: [&[f32]; W] = std::array::from_fn(|r| data[r].as_slice());
                let mut dst = vec![f32::NAN; W * kc];
                interleave::<W>(&mut dst, &lanes, kc);
                for p in 0..kc {
                    for r in 0..W {
                        assert_eq!(dst[p * W + r], data[r][p], "W {W}, kc {kc}, step {p}, lane {r}");
                    }
                }
                let mut back = vec![f32::NAN; W * kc];
                let mut pieces = back.chunks_exact_mut(kc);
                let mut out: [&mut [f32]; W] = std::array::from_fn(|_| pieces.next().unwrap());
                deinterleave::<W>(&mut out, &dst, kc);
                assert_eq!(back, data.concat(), "W {W}, kc {kc}");
            }
        }
        check::<4>();
        check::<6>();
        check::<12>();
        check::<16>();
        check::<32>();
    }
}
