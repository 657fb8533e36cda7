//! Branch-free f32 `exp`, `erf`-based GELU and its derivative, written so that a loop calling them
//! vectorises (all `#[inline(always)]`: selects instead of branches, integer tricks on the bits
//! instead of library calls). `FMA` selects fused multiply-adds, see `simd.rs`.
//!
//! # exp
//! Cody & Waite range reduction and the Cephes `expf` polynomial: `x = n ln2 + r` with `n` the
//! nearest integer to `x / ln2` (found by adding and subtracting 1.5 * 2^23, which rounds to
//! nearest in the FPU's default mode) and `|r| <= ln2 / 2`; `exp(r)` by a degree-7 polynomial
//! (`1 + r + r^2 (c0 + c1 r + ... + c5 r^5)`), then `2^n` put straight into the exponent bits.
//! Relative error about 1 ulp over the whole range (measured below 2.5e-7 relative on a dense grid
//! of [-87, 88], see `engine/tests/cpu_fast.rs`). Inputs above 88.3 give `exp(88.3)` (no
//! infinity), below -87.3 exactly 0: this engine only takes `exp` of non-positive numbers.
//!
//! # erf, GELU
//! `erf` is Abramowitz & Stegun 7.1.26, `erf(z) = 1 - t (a1 + t (a2 + .. + t a5)) exp(-z^2)` with
//! `t = 1 / (1 + p z)` for `z >= 0` (absolute error below 1.5e-7), the same formula as the
//! reference (in f64) and the WGSL kernels (in f32), so that the three backends agree on what
//! "exact GELU" is. GELU needs `Phi(x) = (1 + erf(x / sqrt 2)) / 2`; with `q = t poly(t) exp(-x^2/2)
//! / 2`, `Phi = 1 - q` for `x >= 0` and `Phi = q` for `x < 0`, which avoids the cancellation of
//! `1 + erf` for negative `x` (so `gelu(x)` keeps its relative accuracy far into the negative
//! tail). The derivative `Phi(x) + x phi(x)` reuses the same `exp(-x^2/2)` for the density `phi`.
//!
//! Measured on a grid of 120001 points of [-6, 6] against erf in f64 (Taylor series and continued
//! fraction, exact to ~1e-13; see `engine/tests/cpu_fast.rs`): the f32 `erf` has a maximum absolute
//! error of 5.0e-7 (portable copy) and 4.4e-7 (FMA copy), at |x| ~ 0.2, where `1 - t poly(t)
//! exp(-x^2)` is a difference of numbers near 1 and the f32 rounding of the product shows; the
//! formula's own error (the reference, in f64) is 1.4e-7. The GELU built on it agrees with the
//! reference GELU to a few ulps relative, except in the far negative tail, where any f32 GELU has
//! a relative error of ~x^2 ulps (the conditioning of `exp(-x^2 / 2)`).

use super::simd::{madd, multiversion};

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in a part with few mantissa bits (so `n * LN2_HI` is exact) and the rest.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 * 2^23: adding it to a float of magnitude below 2^22 rounds it to an integer.
const ROUND_MAGIC: f32 = 12_582_912.0;
const EXP_HI: f32 = 88.3;
const EXP_LO: f32 = -87.3;

/// `e^x` in f32, see the module comment.
#[inline(always)]
pub fn exp<const FMA: bool>(x: f32) -> f32 {
    let xc = x.clamp(EXP_LO, EXP_HI);
    // n = round(x / ln 2), held in the low mantissa bits of `shifted`.
    let shifted = madd::<FMA>(xc, LOG2E, ROUND_MAGIC);
    let n = shifted - ROUND_MAGIC;
    let r = madd::<FMA>(n, -LN2_HI, xc);
    let r = madd::<FMA>(n, -LN2_LO, r);
    let mut p = 1.987_569_1e-4f32;
    p = madd::<FMA>(p, r, 1.398_199_9e-3);
    p = madd::<FMA>(p, r, 8.333_452e-3);
    p = madd::<FMA>(p, r, 4.166_579_6e-2);
    p = madd::<FMA>(p, r, 1.666_666_5e-1);
    p = madd::<FMA>(p, r, 0.5);
    let y = madd::<FMA>(p, r * r, r) + 1.0;
    // 2^n: the integer n sits in the low bits of `shifted` (its exponent is fixed at 2^23), offset
    // by the 0x40_0000 of the 1.5; move n + 127 into the exponent field.
    let n_int = (shifted.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let scale = f32::from_bits(((n_int + 127) << 23) as u32);
    // NaN stays NaN (clamp keeps it, so does the product); below the range the result is 0.
    if x < EXP_LO { 0.0 } else { y * scale }
}

const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2 pi)
const INV_SQRT_2PI: f32 = 0.398_942_3;
// Abramowitz & Stegun 7.1.26.
const AS_P: f32 = 0.327_591_1;
const AS_A1: f32 = 0.254_829_6;
const AS_A2: f32 = -0.284_496_74;
const AS_A3: f32 = 1.421_413_8;
const AS_A4: f32 = -1.453_152;
const AS_A5: f32 = 1.061_405_4;

/// `t poly(t)` of A&S 7.1.26 at `z >= 0`: `erfc(z) = t poly(t) exp(-z^2)`.
#[inline(always)]
fn as_factor<const FMA: bool>(z: f32) -> f32 {
    let t = 1.0 / madd::<FMA>(AS_P, z, 1.0);
    let mut poly = AS_A5;
    poly = madd::<FMA>(poly, t, AS_A4);
    poly = madd::<FMA>(poly, t, AS_A3);
    poly = madd::<FMA>(poly, t, AS_A2);
    poly = madd::<FMA>(poly, t, AS_A1);
    poly * t
}

/// `(Phi(x), exp(-x^2 / 2))`: the normal CDF by A&S 7.1.26 and the Gaussian factor it used. The
/// exponent is formed as `-0.5 x x` (one rounding) rather than from `x / sqrt 2`, since its
/// absolute error becomes the relative error of the tail.
#[inline(always)]
fn phi_and_gauss<const FMA: bool>(x: f32) -> (f32, f32) {
    let g = exp::<FMA>(-0.5 * (x * x));
    // q = (1 - erf(|x| / sqrt 2)) / 2 = Phi(-|x|)
    let q = 0.5 * as_factor::<FMA>(x.abs() * SQRT_HALF) * g;
    (if x < 0.0 { q } else { 1.0 - q }, g)
}

/// The normal CDF `Phi(x) = (1 + erf(x / sqrt 2)) / 2`.
#[inline(always)]
pub fn normal_cdf<const FMA: bool>(x: f32) -> f32 {
    phi_and_gauss::<FMA>(x).0
}

/// `erf(x)` by A&S 7.1.26 in f32.
#[inline(always)]
pub fn erf<const FMA: bool>(x: f32) -> f32 {
    let z = x.abs();
    let e = 1.0 - as_factor::<FMA>(z) * exp::<FMA>(-(z * z));
    if x < 0.0 { -e } else { e }
}

/// Exact GELU, `x Phi(x)`.
#[inline(always)]
pub fn gelu<const FMA: bool>(x: f32) -> f32 {
    x * phi_and_gauss::<FMA>(x).0
}

/// `d gelu / dx = Phi(x) + x phi(x)`.
#[inline(always)]
pub fn gelu_grad<const FMA: bool>(x: f32) -> f32 {
    let (cdf, g) = phi_and_gauss::<FMA>(x);
    madd::<FMA>(x * INV_SQRT_2PI, g, cdf)
}

multiversion! {
    /// `out[i] = exp(x[i])` (for the tests and benchmarks of the approximation).
    pub fn exp_into<FMA>(x: &[f32], out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = exp::<FMA>(v);
        }
    }
}

multiversion! {
    /// `out[i] = erf(x[i])` (for the tests and benchmarks of the approximation).
    pub fn erf_into<FMA>(x: &[f32], out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = erf::<FMA>(v);
        }
    }
}
