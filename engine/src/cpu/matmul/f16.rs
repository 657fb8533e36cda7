//! Products at f16 input precision: both operands rounded to IEEE binary16 (11 significant bits,
//! largest finite value 65504) as they are packed, the products summed in f32. This is what a
//! GPU's tensor cores compute for f16 inputs with f32 accumulation (`coop_mat16x16<f16, A>` with
//! an f32 accumulator, `shaders/matmul_coop.wgsl`), and what PyTorch's autocast does with
//! `float16`. On the CPU it runs at f32 speed (the f32 micro-kernels sum the rounded values): it
//! is here so that the numerics of f16 products (a model trained with them, what underflows) can
//! be studied and tested on any machine, and it is the reference the GPU's f16 kernel is checked
//! against.
//!
//! # Rounding
//!
//! Round to nearest, ties to even, as an f32-to-f16 conversion (`vcvtps2ph` with rounding mode 0,
//! SPIR-V's `OpFConvert` on the GPUs we target) does. f16's subnormals (multiples of 2^-24 below
//! 2^-14) are kept, as the tensor cores keep them; below 2^-25 a value becomes a zero of its sign.
//! A value of 65520 or more in magnitude (the midpoint past the largest f16) becomes infinite, and
//! a NaN stays a NaN. One rounding is off by at most 2^-11 of a normal value, so a k-sum of
//! rounded products by about 2^-10 of `sum |a||b|` at worst; a value under 2^-14 keeps fewer bits,
//! which is why training at f16 scales its loss (`mae`'s `train::loss_scale`).

/// `x` rounded to the nearest f16 value (ties to even), as an f32 (exactly representable).
#[inline(always)]
pub fn round_to_f16(x: f32) -> f32 {
    let bits = x.to_bits();
    let magnitude = bits & 0x7fff_ffff;
    let sign = bits & 0x8000_0000;
    if magnitude > 0x7f80_0000 {
        // NaN stays NaN.
        x
    } else if magnitude >= 0x477f_f000 {
        // 65520 (halfway between 65504, odd, and 65536) and beyond: infinity of the sign.
        f32::from_bits(sign | 0x7f80_0000)
    } else if magnitude < 0x3880_0000 {
        // Below 2^-14, f16's subnormals: multiples of 2^-24 (both scalings are exact).
        let q = (f32::from_bits(magnitude) * 16_777_216.0).round_ties_even() * (1.0 / 16_777_216.0);
        f32::from_bits(sign | q.to_bits())
    } else {
        // A normal f16: keep 10 of f32's 23 mantissa bits. Adding 0xfff plus the lowest kept bit
        // rounds half to even; a carry into the exponent is exactly the next binade.
        f32::from_bits(bits.wrapping_add(0xfff + ((bits >> 13) & 1)) & !0x1fff)
    }
}

/// Every value of `xs` rounded to f16, in place: a packed sliver, before the kernel reads it.
pub fn round_in_place(xs: &mut [f32]) {
    for x in xs {
        *x = round_to_f16(*x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_to_f16_is_to_nearest_with_ties_to_even() {
        let p = |e: i32| 2f32.powi(e);
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties go to the even mantissa, 1.
        assert_eq!(round_to_f16(1.0 + p(-11)), 1.0);
        // 1 + 3 * 2^-11 is halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even).
        assert_eq!(round_to_f16(1.0 + 3.0 * p(-11)), 1.0 + p(-9));
        // Just above the tie rounds up, just below down; the sign is kept.
        assert_eq!(round_to_f16(1.0 + p(-11) + p(-20)), 1.0 + p(-10));
        assert_eq!(round_to_f16(-(1.0 + p(-11) - p(-20))), -1.0);
        // f16 values are kept exactly: the largest, the smallest normal, the smallest subnormal.
        for v in [65504.0, -3.0, p(-14), p(-24), 1.5 * p(-20), 0.0] {
            assert_eq!(round_to_f16(v), v, "{v:e}");
        }
        // The top: 65519 rounds down to 65504, the midpoint 65520 to infinity.
        assert_eq!(round_to_f16(65519.0), 65504.0);
        assert_eq!(round_to_f16(65520.0), f32::INFINITY);
        assert_eq!(round_to_f16(-1e30), f32::NEG_INFINITY);
        assert_eq!(round_to_f16(f32::INFINITY), f32::INFINITY);
        assert!(round_to_f16(f32::NAN).is_nan());
        assert!(round_to_f16(f32::from_bits(0x7f80_0001)).is_nan(), "a NaN whose payload is in the low bits");
        // Subnormals: multiples of 2^-24, ties to even; below 2^-25 a zero of the sign.
        assert_eq!(round_to_f16(2.5 * p(-24)), 2.0 * p(-24));
        assert_eq!(round_to_f16(3.5 * p(-24)), 4.0 * p(-24));
        assert_eq!(round_to_f16(p(-25)), 0.0);
        assert_eq!(round_to_f16(-1e-30).to_bits(), 0x8000_0000);
        assert_eq!(round_to_f16(p(-25) + p(-40)), p(-24));
        // The largest subnormal region value rounds up into the smallest normal.
        assert_eq!(round_to_f16(p(-14) - p(-26)), p(-14));
    }

    #[test]
    fn rounding_to_f16_agrees_with_the_conversion_instruction() {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("f16c") {
            // A sweep over magnitudes from 2^-30 to 2^17, with odd mantissas to hit ties and
            // near-ties, both signs.
            let mut x = 1.0e-9f32;
            while x < 131072.0 {
                for v in [x, -x, f32::from_bits(x.to_bits() | 0x1000), f32::from_bits(x.to_bits() | 0xfff)] {
                    // SAFETY: the CPU has F16C (checked above).
                    let hw = unsafe { via_f16c(v) };
                    let ours = round_to_f16(v);
                    assert_eq!(ours.to_bits(), hw.to_bits(), "{v:e}: ours {ours:e}, vcvtps2ph {hw:e}");
                }
                x *= 1.0137;
            }
            return;
        }
        eprintln!("SKIPPED: this CPU has no F16C to compare the rounding with");
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "f16c")]
    unsafe fn via_f16c(x: f32) -> f32 {
        use std::arch::x86_64::*;
        let h = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set1_ps(x));
        _mm_cvtss_f32(_mm_cvtph_ps(h))
    }
}
