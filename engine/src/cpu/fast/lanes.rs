//! A vector of 16 f32 lanes with explicit instructions per instruction set: one zmm register
//! (AVX-512), two ymm registers (AVX2 + FMA), or a plain array (the baseline).
//!
//! The multiversioned kernels (`simd::multiversion!`) leave vectorisation to LLVM, which does well
//! on loops over slices. A kernel that keeps many small vectors in registers across nested loops
//! (attention's `G` heads side by side, `attention.rs`) was left as scalar code and gathers by the
//! auto-vectoriser; written against [`Lanes`], every operation is the instruction it names. The
//! lanes are independent and each operation is the same IEEE operation in every implementation
//! (`fma` fused in both x86 copies, a multiply then an add in the baseline, as `simd::madd`), so
//! the AVX-512 and AVX2 copies give the same bits.
//!
//! A kernel is written once as `#[inline(always)]` code generic over `L: Lanes`, and instantiated
//! in a function with the matching `#[target_feature]` (see `attention.rs`), into which the
//! methods below are inlined.

/// Lanes per vector.
pub const N: usize = 16;

/// 16 f32 lanes. Loads and stores take pointers to 16 floats (any alignment).
pub trait Lanes: Copy {
    /// All lanes 0.
    fn zero() -> Self;
    /// All lanes `x`.
    fn splat(x: f32) -> Self;
    /// # Safety
    /// `p` points to 16 readable floats.
    unsafe fn load(p: *const f32) -> Self;
    /// # Safety
    /// `p` points to 16 writable floats.
    unsafe fn store(self, p: *mut f32);
    /// `self * b + c`.
    fn mul_add(self, b: Self, c: Self) -> Self;
    /// `self + b`.
    fn add(self, b: Self) -> Self;
    /// `self - b`.
    fn sub(self, b: Self) -> Self;
    /// `self * b`.
    fn mul(self, b: Self) -> Self;
    /// `if b > self { b } else { self }`, lane by lane.
    fn max(self, b: Self) -> Self;
}

/// The baseline: a plain array (multiply then add, as the portable copies of the kernels).
#[derive(Clone, Copy)]
pub struct Plain([f32; N]);

impl Lanes for Plain {
    #[inline(always)]
    fn zero() -> Self {
        Plain([0.0; N])
    }
    #[inline(always)]
    fn splat(x: f32) -> Self {
        Plain([x; N])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller promises 16 readable floats.
        Plain(unsafe { p.cast::<[f32; N]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller promises 16 writable floats.
        unsafe { p.cast::<[f32; N]>().write_unaligned(self.0) }
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        Plain(std::array::from_fn(|l| self.0[l] * b.0[l] + c.0[l]))
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        Plain(std::array::from_fn(|l| self.0[l] + b.0[l]))
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        Plain(std::array::from_fn(|l| self.0[l] - b.0[l]))
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        Plain(std::array::from_fn(|l| self.0[l] * b.0[l]))
    }
    #[inline(always)]
    fn max(self, b: Self) -> Self {
        Plain(std::array::from_fn(|l| if b.0[l] > self.0[l] { b.0[l] } else { self.0[l] }))
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Lanes, N};
    use std::arch::x86_64::*;

    /// Two ymm registers (AVX2 + FMA). Only for code compiled with those features.
    #[derive(Clone, Copy)]
    pub struct Avx2([__m256; 2]);

    /// One zmm register (AVX-512F). Only for code compiled with that feature.
    #[derive(Clone, Copy)]
    pub struct Avx512(__m512);

    // SAFETY (every intrinsic below): the type is only used in functions compiled with its
    // features, checked at run time by their caller (`Isa`); the pointers are the callers'.
    impl Lanes for Avx2 {
        #[inline(always)]
        fn zero() -> Self {
            unsafe { Avx2([_mm256_setzero_ps(); 2]) }
        }
        #[inline(always)]
        fn splat(x: f32) -> Self {
            unsafe { Avx2([_mm256_set1_ps(x); 2]) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { Avx2([_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(N / 2))]) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe {
                _mm256_storeu_ps(p, self.0[0]);
                _mm256_storeu_ps(p.add(N / 2), self.0[1]);
            }
        }
        #[inline(always)]
        fn mul_add(self, b: Self, c: Self) -> Self {
            unsafe { Avx2([0, 1].map(|h| _mm256_fmadd_ps(self.0[h], b.0[h], c.0[h]))) }
        }
        #[inline(always)]
        fn add(self, b: Self) -> Self {
            unsafe { Avx2([0, 1].map(|h| _mm256_add_ps(self.0[h], b.0[h]))) }
        }
        #[inline(always)]
        fn sub(self, b: Self) -> Self {
            unsafe { Avx2([0, 1].map(|h| _mm256_sub_ps(self.0[h], b.0[h]))) }
        }
        #[inline(always)]
        fn mul(self, b: Self) -> Self {
            unsafe { Avx2([0, 1].map(|h| _mm256_mul_ps(self.0[h], b.0[h]))) }
        }
        #[inline(always)]
        fn max(self, b: Self) -> Self {
            // maxps returns its second operand unless the first is greater: `b > self ? b : self`.
            unsafe { Avx2([0, 1].map(|h| _mm256_max_ps(b.0[h], self.0[h]))) }
        }
    }

    impl Lanes for Avx512 {
        #[inline(always)]
        fn zero() -> Self {
            unsafe { Avx512(_mm512_setzero_ps()) }
        }
        #[inline(always)]
        fn splat(x: f32) -> Self {
            unsafe { Avx512(_mm512_set1_ps(x)) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { Avx512(_mm512_loadu_ps(p)) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { _mm512_storeu_ps(p, self.0) }
        }
        #[inline(always)]
        fn mul_add(self, b: Self, c: Self) -> Self {
            unsafe { Avx512(_mm512_fmadd_ps(self.0, b.0, c.0)) }
        }
        #[inline(always)]
        fn add(self, b: Self) -> Self {
            unsafe { Avx512(_mm512_add_ps(self.0, b.0)) }
        }
        #[inline(always)]
        fn sub(self, b: Self) -> Self {
            unsafe { Avx512(_mm512_sub_ps(self.0, b.0)) }
        }
        #[inline(always)]
        fn mul(self, b: Self) -> Self {
            unsafe { Avx512(_mm512_mul_ps(self.0, b.0)) }
        }
        #[inline(always)]
        fn max(self, b: Self) -> Self {
            unsafe { Avx512(_mm512_max_ps(b.0, self.0)) }
        }
    }
}
