//! Products at bfloat16 input precision: both operands rounded to bfloat16 (8 significant bits)
//! as they are packed, the products summed in f32. This is what PyTorch calls
//! `torch.set_float32_matmul_precision("medium")` and what its CPU autocast does with `bfloat16`;
//! the MAE paper pre-trained in mixed precision too. It halves the bytes a k step reads and, on
//! CPUs with AVX512_BF16, doubles the multiply-adds per instruction (`vdpbf16ps`: 32 products
//! summed pairwise into 16 f32 lanes, against 16 for `vfmadd`).
//!
//! # The packed layout: k pairs
//!
//! `vdpbf16ps acc, x, y` computes, for each 32-bit lane i, `acc[i] += x.lo[i] y.lo[i] + x.hi[i]
//! y.hi[i]`. So a bf16 sliver holds two consecutive k steps per 32-bit word: sliver value `(q, r)`
//! (pair q, lane r) is `bf16(v[2q][r]) | bf16(v[2q + 1][r]) << 16`, where `v[p][r]` is the f32
//! sliver of `pack.rs` (`v[p * W + r]`); the high half is zero past an odd k. The kernel broadcasts
//! an A word (row r's two k values) against a B row of words (the two k values of NR columns), and
//! one instruction does two k steps.
//!
//! The packing routines of `pack.rs` lay out the f32 sliver first, and [`pair_up_in_place`] turns
//! it into words where it lies: pair q overwrites f32 row q, which rows 2q and 2q + 1 no longer
//! need once read. A sliver of `W x kc` floats thus holds its `W x ceil(kc / 2)` words in its first
//! half, and the kernels find kc from the slice length as before.
//!
//! # Rounding
//!
//! Round to nearest, ties to even, as `vcvtneps2bf16` and PyTorch's `at::BFloat16` do; a NaN stays
//! a (quiet) NaN, and a value past the largest bfloat16 becomes infinite. A denormal (below
//! 1.2e-38 in magnitude) becomes a zero of its sign, as the instruction makes it (`at::BFloat16`
//! keeps it; oneDNN's bf16 products, which PyTorch's autocast runs, convert with the
//! instruction), so that the packing that converts with it (`pack_bf16.rs`) and the one that
//! converts in software give the same words. bfloat16 keeps 8
//! significant bits, so one rounding is off by at most 2^-8 of the value, a product of two rounded
//! values by ~2^-7 of the exact one, and a k-sum of them by ~2^-7 of `sum |a||b|` at worst (far
//! less typically: the errors have both signs). The
//! tests bound the kernels against the reference on the rounded inputs (f32 summation error only)
//! and against the f32 reference (rounding error as well).
//!
//! # Napkin math
//!
//! Zen 4 issues one 512-bit `vdpbf16ps` a cycle (64 flops), two 256-bit FMAs (32 flops): on one
//! core at ~3.6 GHz that is ~230 against ~115 GFLOP/s of peak, measured so by a loop of
//! independent instructions. A 12 x 32 tile per pair of k steps does 24 `vdpbf16ps` for two 64-byte
//! B loads and 12 broadcasts; the A sliver (12 x 256 / 2 words = 6 KiB) stays in L1.

/// `x` rounded to the nearest bfloat16 (ties to even), as its 16 bits. Branch-free, so that the
/// packing loops below vectorise.
#[inline(always)]
pub fn to_bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    // Adding 0x7fff plus the lowest kept bit rounds half to even; a carry into the exponent is
    // exactly the next binade (or infinity), as it should be. No overflow for non-NaN bits (at most
    // 0xff80_0000); a NaN instead keeps its sign and the top of its payload, made quiet so that it
    // stays a NaN.
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16;
    let nan = (bits & 0x7fff_ffff) > 0x7f80_0000;
    // A denormal (or zero) becomes zero of its sign, as `vcvtneps2bf16` makes it.
    let tiny = bits & 0x7f80_0000 == 0;
    (if nan {
        (bits >> 16) | 0x40
    } else if tiny {
        (bits >> 16) & 0x8000
    } else {
        rounded
    }) as u16
}

/// The f32 value of bfloat16 bits (exact).
#[inline(always)]
pub fn from_bf16_bits(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `x` rounded to bfloat16 and back: what a bf16 product sees of an f32 operand.
pub fn round_to_bf16(x: f32) -> f32 {
    from_bf16_bits(to_bf16_bits(x))
}

/// Turns a packed f32 sliver (`W x kc`, `sliver[p * W + r]`) into k-pair words in its first
/// `W x ceil(kc / 2)` slots (see the module comment), where the kernels read them. Compiled for
/// AVX-512 where the CPU has it (the bf16 kernel's CPUs all do): one pass over a sliver in L1, a
/// few instructions per 16 values.
pub fn pair_up_in_place<const W: usize>(sliver: &mut [f32], kc: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw") {
        // SAFETY: the CPU has the features the copy is compiled for.
        return unsafe { pair_up_avx512::<W>(sliver, kc) };
    }
    pair_up::<W>(sliver, kc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn pair_up_avx512<const W: usize>(sliver: &mut [f32], kc: usize) {
    pair_up::<W>(sliver, kc)
}

#[inline(always)]
fn pair_up<const W: usize>(sliver: &mut [f32], kc: usize) {
    debug_assert!(sliver.len() >= W * kc);
    for q in 0..kc.div_ceil(2) {
        // Both rows are read whole before row q (<= 2q) is written.
        let lo: [f32; W] = sliver[2 * q * W..(2 * q + 1) * W].try_into().unwrap();
        let hi: [f32; W] =
            if 2 * q + 1 < kc { sliver[(2 * q + 1) * W..(2 * q + 2) * W].try_into().unwrap() } else { [0.0; W] };
        let word: [f32; W] =
            std::array::from_fn(|r| f32::from_bits(to_bf16_bits(lo[r]) as u32 | (to_bf16_bits(hi[r]) as u32) << 16));
        sliver[q * W..(q + 1) * W].copy_from_slice(&word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_to_bf16_is_to_nearest_with_ties_to_even() {
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa, 1.
        assert_eq!(round_to_bf16(1.0 + 2f32.powi(-8)), 1.0);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even).
        assert_eq!(round_to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
        // Just above the tie rounds up, just below down.
        assert_eq!(round_to_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 1.0 + 2f32.powi(-7));
        assert_eq!(round_to_bf16(-(1.0 + 2f32.powi(-8) - 2f32.powi(-20))), -1.0);
        // bf16 values are kept exactly; the largest finite f32 overflows to infinity; NaN stays NaN.
        assert_eq!(round_to_bf16(-3.0), -3.0);
        assert_eq!(round_to_bf16(f32::MAX), f32::INFINITY);
        assert_eq!(round_to_bf16(f32::NEG_INFINITY), f32::NEG_INFINITY);
        assert!(round_to_bf16(f32::NAN).is_nan());
        assert!(round_to_bf16(f32::from_bits(0x7f80_0001)).is_nan(), "a NaN whose payload is in the low bits");
        // Denormals become zeros of their sign, as `vcvtneps2bf16` makes them.
        assert_eq!(round_to_bf16(1e-40).to_bits(), 0);
        assert_eq!(round_to_bf16(-3e-39).to_bits(), 0x8000_0000);
        assert_eq!(round_to_bf16(f32::MIN_POSITIVE), f32::MIN_POSITIVE);
    }

    #[test]
    fn pairing_up_a_sliver_puts_two_k_steps_in_a_word_and_zero_past_an_odd_k() {
        // W = 2 lanes, kc = 3 steps: v[p][r] = 10 p + r + 1.
        let mut sliver: Vec<f32> = (0..3).flat_map(|p| (0..2).map(move |r| (10 * p + r + 1) as f32)).collect();
        pair_up_in_place::<2>(&mut sliver, 3);
        let words: Vec<(f32, f32)> = sliver[..4]
            .iter()
            .map(|w| (from_bf16_bits(w.to_bits() as u16), from_bf16_bits((w.to_bits() >> 16) as u16)))
            .collect();
        assert_eq!(words, [(1.0, 11.0), (2.0, 12.0), (21.0, 0.0), (22.0, 0.0)]);
    }
}
