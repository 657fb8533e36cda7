//! Vectors of 16 f32 lanes with explicit instructions per instruction set: one zmm register
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
//! An instruction set is a zero-sized witness ([`Plain`], [`Avx2`], [`Avx512`]): a value of it is
//! the proof that this CPU runs its instructions. The x86 ones are only handed out by their
//! `detect`, and their vectors are only made by the witness's methods, so safe code cannot run an
//! instruction the CPU lacks. The witnesses cost nothing at run time.
//!
//! A kernel is written once as `#[inline(always)]` code generic over `L: Lanes`, taking the
//! witness as an argument, and instantiated in a function with the matching `#[target_feature]`
//! (see `attention.rs`), into which the methods below are inlined.
//!
//! Without detection, no AVX-512 vector can be made:
//!
//! ```compile_fail
//! # #[cfg(target_arch = "x86_64")] {
//! use engine::cpu::fast::lanes::{Avx512, Lanes};
//! let _ = Avx512::zero();
//! # }
//! ```
//!
//! ```compile_fail
//! # #[cfg(target_arch = "x86_64")] {
//! use engine::cpu::fast::lanes::{Avx512, Lanes};
//! let _ = Avx512 { _detected: () }.zero();
//! # }
//! ```
//!
//! With it:
//!
//! ```
//! # #[cfg(target_arch = "x86_64")] {
//! use engine::cpu::fast::lanes::{Avx512, Lanes, Vector};
//! if let Some(avx512) = Avx512::detect() {
//!     let mut out = [0.0f32; 16];
//!     // SAFETY: `out` holds 16 floats.
//!     unsafe { avx512.splat(2.0).mul_add(avx512.splat(3.0), avx512.zero()).store(out.as_mut_ptr()) };
//!     assert_eq!(out, [6.0; 16]);
//! }
//! # }
//! ```

/// Lanes per vector.
pub const N: usize = 16;

/// An instruction set for vectors of 16 f32 lanes, as a witness that this CPU runs it. Its
/// vectors ([`Lanes::V`]) are made only here, so holding one proves it too. Loads take pointers
/// to 16 floats (any alignment).
pub trait Lanes: Copy {
    /// The vectors of this instruction set.
    type V: Vector;
    /// All lanes 0.
    fn zero(self) -> Self::V;
    /// All lanes `x`.
    fn splat(self, x: f32) -> Self::V;
    /// # Safety
    /// `p` points to 16 readable floats.
    unsafe fn load(self, p: *const f32) -> Self::V;
}

/// A vector of 16 f32 lanes, made by its [`Lanes`]. Stores take pointers to 16 floats (any
/// alignment).
pub trait Vector: Copy {
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

/// The baseline, which every CPU runs: plain arrays (multiply then add, as the portable copies of
/// the kernels).
#[derive(Clone, Copy, Debug)]
pub struct Plain;

/// A vector of [`Plain`].
#[derive(Clone, Copy)]
pub struct PlainVector([f32; N]);

impl Lanes for Plain {
    type V = PlainVector;
    #[inline(always)]
    fn zero(self) -> PlainVector {
        PlainVector([0.0; N])
    }
    #[inline(always)]
    fn splat(self, x: f32) -> PlainVector {
        PlainVector([x; N])
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> PlainVector {
        // SAFETY: the caller promises 16 readable floats.
        PlainVector(unsafe { p.cast::<[f32; N]>().read_unaligned() })
    }
}

impl Vector for PlainVector {
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller promises 16 writable floats.
        unsafe { p.cast::<[f32; N]>().write_unaligned(self.0) }
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        PlainVector(std::array::from_fn(|l| self.0[l] * b.0[l] + c.0[l]))
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        PlainVector(std::array::from_fn(|l| self.0[l] + b.0[l]))
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        PlainVector(std::array::from_fn(|l| self.0[l] - b.0[l]))
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        PlainVector(std::array::from_fn(|l| self.0[l] * b.0[l]))
    }
    #[inline(always)]
    fn max(self, b: Self) -> Self {
        PlainVector(std::array::from_fn(|l| if b.0[l] > self.0[l] { b.0[l] } else { self.0[l] }))
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx2Vector, Avx512, Avx512Vector};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Lanes, N, Vector};
    use std::arch::x86_64::*;

    /// AVX2 + FMA, as a witness that this CPU has both: only [`Avx2::detect`] makes one.
    #[derive(Clone, Copy, Debug)]
    pub struct Avx2 {
        _detected: (),
    }

    impl Avx2 {
        /// The witness, where this CPU has AVX2 and FMA.
        #[inline]
        pub fn detect() -> Option<Avx2> {
            let present = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            present.then_some(Avx2 { _detected: () })
        }
    }

    /// AVX-512F, with the AVX2 and FMA that the kernels written with it are compiled for besides
    /// (`attention::run_group`), as a witness that this CPU has all three: only
    /// [`Avx512::detect`] makes one.
    #[derive(Clone, Copy, Debug)]
    pub struct Avx512 {
        _detected: (),
    }

    impl Avx512 {
        /// The witness, where this CPU has AVX-512F, AVX2 and FMA.
        #[inline]
        pub fn detect() -> Option<Avx512> {
            let present = is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma");
            present.then_some(Avx512 { _detected: () })
        }
    }

    /// A vector of [`Avx2`]: two ymm registers. Made only by an `Avx2`, so it proves the CPU
    /// has AVX2 and FMA.
    #[derive(Clone, Copy)]
    pub struct Avx2Vector([__m256; 2]);

    /// A vector of [`Avx512`]: one zmm register. Made only by an `Avx512`, so it proves the CPU
    /// has AVX-512F.
    #[derive(Clone, Copy)]
    pub struct Avx512Vector(__m512);

    impl Lanes for Avx2 {
        type V = Avx2Vector;
        #[inline(always)]
        fn zero(self) -> Avx2Vector {
            // SAFETY: `self` proves the CPU has AVX2 (`Avx2::detect`).
            unsafe { Avx2Vector([_mm256_setzero_ps(); 2]) }
        }
        #[inline(always)]
        fn splat(self, x: f32) -> Avx2Vector {
            // SAFETY: as in `zero`.
            unsafe { Avx2Vector([_mm256_set1_ps(x); 2]) }
        }
        #[inline(always)]
        unsafe fn load(self, p: *const f32) -> Avx2Vector {
            // SAFETY: as in `zero`; the caller promises 16 readable floats.
            unsafe { Avx2Vector([_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(N / 2))]) }
        }
    }

    // SAFETY (the intrinsics of every method): an `Avx2Vector` exists only where an `Avx2` made
    // it, so the CPU has AVX2 and FMA; the pointers are the callers' promise.
    impl Vector for Avx2Vector {
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: see the impl; the caller promises 16 writable floats.
            unsafe {
                _mm256_storeu_ps(p, self.0[0]);
                _mm256_storeu_ps(p.add(N / 2), self.0[1]);
            }
        }
        #[inline(always)]
        fn mul_add(self, b: Self, c: Self) -> Self {
            // SAFETY: see the impl.
            unsafe { Avx2Vector([0, 1].map(|h| _mm256_fmadd_ps(self.0[h], b.0[h], c.0[h]))) }
        }
        #[inline(always)]
        fn add(self, b: Self) -> Self {
            // SAFETY: see the impl.
            unsafe { Avx2Vector([0, 1].map(|h| _mm256_add_ps(self.0[h], b.0[h]))) }
        }
        #[inline(always)]
        fn sub(self, b: Self) -> Self {
            // SAFETY: see the impl.
            unsafe { Avx2Vector([0, 1].map(|h| _mm256_sub_ps(self.0[h], b.0[h]))) }
        }
        #[inline(always)]
        fn mul(self, b: Self) -> Self {
            // SAFETY: see the impl.
            unsafe { Avx2Vector([0, 1].map(|h| _mm256_mul_ps(self.0[h], b.0[h]))) }
        }
        #[inline(always)]
        fn max(self, b: Self) -> Self {
            // maxps returns its second operand unless the first is greater: `b > self ? b : self`.
            // SAFETY: see the impl.
            unsafe { Avx2Vector([0, 1].map(|h| _mm256_max_ps(b.0[h], self.0[h]))) }
        }
    }

    impl Lanes for Avx512 {
        type V = Avx512Vector;
        #[inline(always)]
        fn zero(self) -> Avx512Vector {
            // SAFETY: `self` proves the CPU has AVX-512F (`Avx512::detect`).
            unsafe { Avx512Vector(_mm512_setzero_ps()) }
        }
        #[inline(always)]
        fn splat(self, x: f32) -> Avx512Vector {
            // SAFETY: as in `zero`.
            unsafe { Avx512Vector(_mm512_set1_ps(x)) }
        }
        #[inline(always)]
        unsafe fn load(self, p: *const f32) -> Avx512Vector {
            // SAFETY: as in `zero`; the caller promises 16 readable floats.
            unsafe { Avx512Vector(_mm512_loadu_ps(p)) }
        }
    }

    // SAFETY (the intrinsics of every method): an `Avx512Vector` exists only where an `Avx512`
    // made it, so the CPU has AVX-512F; the pointers are the callers' promise.
    impl Vector for Avx512Vector {
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: see the impl; the caller promises 16 writable floats.
            unsafe { _mm512_storeu_ps(p, self.0) }
        }
        #[inline(always)]
        fn mul_add(self, b: Self, c: Self) -> Self {
            // SAFETY: see the impl.
            unsafe { Avx512Vector(_mm512_fmadd_ps(self.0, b.0, c.0)) }
        }
        #[inline(always)]
        fn add(self, b: Self) -> Self {
            // SAFETY: see the impl.
            unsafe { Avx512Vector(_mm512_add_ps(self.0, b.0)) }
        }
        #[inline(always)]
        fn sub(self, b: Self) -> Self {
            // SAFETY: see the impl.
            unsafe { Avx512Vector(_mm512_sub_ps(self.0, b.0)) }
        }
        #[inline(always)]
        fn mul(self, b: Self) -> Self {
            // SAFETY: see the impl.
            unsafe { Avx512Vector(_mm512_mul_ps(self.0, b.0)) }
        }
        #[inline(always)]
        fn max(self, b: Self) -> Self {
            // SAFETY: see the impl.
            unsafe { Avx512Vector(_mm512_max_ps(b.0, self.0)) }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn the_x86_witnesses_exist_exactly_where_the_cpu_has_their_features() {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        assert_eq!(Avx2::detect().is_some(), avx2);
        let avx512 = avx2 && is_x86_feature_detected!("avx512f");
        assert_eq!(Avx512::detect().is_some(), avx512);
    }

    /// Every operation of `lanes` on 16 lanes, stored back.
    fn every_operation<L: Lanes>(lanes: L) -> Vec<[f32; N]> {
        let a: [f32; N] = std::array::from_fn(|l| l as f32 * 0.37 - 2.5);
        let b: [f32; N] = std::array::from_fn(|l| 1.25 - (l * l) as f32 * 0.011);
        // SAFETY: `a` and `b` hold 16 floats.
        let (va, vb) = unsafe { (lanes.load(a.as_ptr()), lanes.load(b.as_ptr())) };
        let c = lanes.splat(0.1);
        let results = [va.mul_add(vb, c), va.add(vb), va.sub(vb), va.mul(vb), va.max(vb), vb.max(va), lanes.zero()];
        results
            .iter()
            .map(|v| {
                let mut out = [f32::NAN; N];
                // SAFETY: `out` holds 16 floats.
                unsafe { v.store(out.as_mut_ptr()) };
                out
            })
            .collect()
    }

    #[test]
    fn the_avx2_and_avx512_vectors_give_the_same_bits() {
        let bits = |v: Vec<[f32; N]>| v.concat().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let (Some(avx2), Some(avx512)) = (Avx2::detect(), Avx512::detect()) else {
            eprintln!("SKIPPED: this CPU lacks AVX-512: the two x86 vectors are not compared here");
            return;
        };
        assert_eq!(bits(every_operation(avx2)), bits(every_operation(avx512)));
    }
}
