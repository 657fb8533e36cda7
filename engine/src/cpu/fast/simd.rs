//! How the fast kernels get vectorised without `std::arch` intrinsics in every loop and without any
//! build flag (`-C target-cpu=native` would make the binary crash on older CPUs).
//!
//! Each kernel is written once, in plain Rust that LLVM can vectorise: loops over `chunks_exact`
//! of [`LANES`] values or fixed-size arrays, no bounds checks inside the hot loops, branch-free
//! math (see `math.rs`). `multiversion!` then compiles that body three times: as it is, for the
//! target's baseline (SSE2 on x86_64: 4 lanes, no FMA); inside a `#[target_feature(enable =
//! "avx2,fma")]` function, where the same loops become 8-lane AVX2 code and [`madd`] becomes one
//! fused multiply-add; and with AVX-512 enabled as well, where loops over slices become 16-lane
//! code and the 16-value partial sums one register. Which copy runs is decided per call by an
//! [`Isa`] value: the best one for this CPU (detected once and cached), unless a test forces
//! another with [`with_isa`].
//!
//! The baseline copy rounds differently where [`madd`] is used (a fused multiply-add rounds once);
//! the AVX2 and AVX-512 copies compute the same operations in the same order and give the same
//! bits (the tests check it). On one machine a kernel always takes the same copy, so results are
//! the same from run to run.

use std::cell::Cell;
use std::sync::OnceLock;

/// Values per step of the vectorisable loops: one AVX2 register of f32 (two SSE registers).
pub const LANES: usize = 8;

/// The instruction sets a multiversioned kernel can run with. A value only names one: anyone can
/// write `Isa::Avx512`, so the kernels check that this CPU has it before running its copy (a few
/// cached flag tests per call) and panic otherwise ([`unavailable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// The target's baseline (SSE2 on x86_64): runs everywhere.
    Portable,
    /// AVX2 and FMA (x86_64 CPUs since Haswell / Zen), checked at run time.
    Avx2Fma,
    /// AVX-512 (F, VL, BW, DQ) besides AVX2 and FMA, checked at run time: the same body compiled
    /// with 32 registers of 16 lanes. Every reduction of the kernels is an explicit array of
    /// partial sums added in a fixed order, which the compiler may not reassociate, so this copy
    /// gives the AVX2 copy's bits; it only does the work in fewer, wider instructions.
    Avx512,
}

thread_local! {
    static FORCED: Cell<Option<Isa>> = const { Cell::new(None) };
}

impl Isa {
    /// Every variant, available on this CPU or not.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2Fma, Isa::Avx512];

    /// Whether this CPU can run code compiled for `self`.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2Fma.is_available()
                    && std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512dq")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2Fma | Isa::Avx512 => false,
        }
    }

    /// The best for this CPU, detected once: AVX-512 where present, else AVX2 + FMA, else the
    /// baseline. Unlike the matmul's micro-kernel (`Kernel::best`), AVX-512 is chosen on AMD's
    /// Zen 4 as well: its 512-bit operations run as two 256-bit halves, which leaves an FMA-bound
    /// product no faster, but these kernels are bound by instruction count (GELU's erf and exp,
    /// attention's per-lane softmax), and there the copies measured faster
    /// (docs/journal/benchmarks.md). `MAE_CPU_KERNEL=avx2fma` (or `portable`) caps both choices.
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            use crate::cpu::matmul::Kernel;
            let available = [Isa::Avx512, Isa::Avx2Fma].into_iter().find(|i| i.is_available()).unwrap_or(Isa::Portable);
            if std::env::var_os("MAE_CPU_KERNEL").is_none() {
                return available;
            }
            match Kernel::best() {
                Kernel::Avx512 => available,
                Kernel::Avx2Fma if available != Isa::Portable => Isa::Avx2Fma,
                _ => Isa::Portable,
            }
        })
    }

    /// What a kernel called from this thread uses: [`Isa::best`], or what [`with_isa`] forces.
    pub fn current() -> Isa {
        FORCED.get().unwrap_or_else(Isa::best)
    }
}

/// The panic of a kernel asked for an instruction set that this CPU lacks: an [`Isa`] made by
/// hand rather than by [`Isa::current`].
#[cold]
#[inline(never)]
pub fn unavailable(isa: Isa) -> ! {
    panic!("this CPU cannot run the {isa:?} kernels")
}

/// Runs `f` with the kernels that it calls from this thread compiled for `isa` (the tests use it to
/// check the portable copies on a CPU that has AVX2). Panics if this CPU cannot run `isa`.
pub fn with_isa<R>(isa: Isa, f: impl FnOnce() -> R) -> R {
    assert!(isa.is_available(), "this CPU cannot run the {isa:?} kernels");
    struct Restore(Option<Isa>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCED.set(self.0);
        }
    }
    let _restore = Restore(FORCED.replace(Some(isa)));
    f()
}

/// `a * b + c`: one fused multiply-add (a single rounding) in the AVX2+FMA copy of a kernel, a
/// multiply then an add in the portable copy (where `mul_add` would be a slow library call).
#[inline(always)]
pub fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// Defines `fn name(isa: Isa, args..) -> ret` whose body is compiled three times, for the baseline,
/// with AVX2 + FMA and with AVX-512 enabled, and which runs the copy that `isa` names if this CPU
/// has it (else panics: [`unavailable`]). Inside the body, the
/// identifier given in angle brackets is a `const bool`, true in the FMA copy (pass it on to
/// [`madd`] and to the `math.rs` functions). Everything the body calls in its hot loops must be
/// `#[inline(always)]`, so that it is compiled into each copy with that copy's features.
///
/// ```text
/// multiversion! {
///     /// Doc comment.
///     pub fn axpy<FMA>(a: f32, x: &[f32], y: &mut [f32]) {
///         for (y, &x) in y.iter_mut().zip(x) { *y = madd::<FMA>(a, x, *y); }
///     }
/// }
/// axpy(Isa::current(), 2.0, &x, &mut y);
/// ```
macro_rules! multiversion {
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident<$fma:ident>($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(isa: $crate::cpu::fast::simd::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body<const $fma: bool>($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2_fma($($arg: $ty),*) $(-> $ret)? {
                body::<true>($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512bw,avx512dq")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                body::<true>($($arg),*)
            }

            match isa {
                #[cfg(target_arch = "x86_64")]
                $crate::cpu::fast::simd::Isa::Avx2Fma if isa.is_available() => {
                    // SAFETY: this CPU has the copy's features, checked just above.
                    unsafe { avx2_fma($($arg),*) }
                }
                #[cfg(target_arch = "x86_64")]
                $crate::cpu::fast::simd::Isa::Avx512 if isa.is_available() => {
                    // SAFETY: likewise.
                    unsafe { avx512($($arg),*) }
                }
                $crate::cpu::fast::simd::Isa::Portable => body::<false>($($arg),*),
                _ => $crate::cpu::fast::simd::unavailable(isa),
            }
        }
    };
}
pub(crate) use multiversion;

/// The sum of `x` in f32, over `2 * LANES` interleaved partial sums (so that the adds are
/// independent and vectorise), added up pairwise at the end in a fixed order. For the short rows of
/// this engine (a few hundred values) the error stays within a few ulps of the row's magnitude.
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 2 * LANES];
    let chunks = x.chunks_exact(2 * LANES);
    let tail = chunks.remainder();
    for c in chunks {
        let c: &[f32; 2 * LANES] = c.try_into().unwrap();
        for l in 0..2 * LANES {
            acc[l] += c[l];
        }
    }
    for (a, &t) in acc.iter_mut().zip(tail) {
        *a += t;
    }
    reduce(acc)
}

/// `sum_i x[i] * y[i]` over the common length, like [`sum`].
#[inline(always)]
pub fn dot<const FMA: bool>(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &y[..n]);
    let mut acc = [0.0f32; 2 * LANES];
    let (xc, yc) = (x.chunks_exact(2 * LANES), y.chunks_exact(2 * LANES));
    let (xt, yt) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        let a: &[f32; 2 * LANES] = a.try_into().unwrap();
        let b: &[f32; 2 * LANES] = b.try_into().unwrap();
        for l in 0..2 * LANES {
            acc[l] = madd::<FMA>(a[l], b[l], acc[l]);
        }
    }
    for ((s, &a), &b) in acc.iter_mut().zip(xt).zip(yt) {
        *s = madd::<FMA>(a, b, *s);
    }
    reduce(acc)
}

/// Pairwise sum of the partial sums, always in the same order.
#[inline(always)]
pub fn reduce(mut acc: [f32; 2 * LANES]) -> f32 {
    let mut width = 2 * LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] += acc[l + width];
        }
    }
    acc[0]
}

/// `sum_i f(x[i])`, accumulated like [`sum`].
#[inline(always)]
pub fn sum_by(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; 2 * LANES];
    let chunks = x.chunks_exact(2 * LANES);
    let tail = chunks.remainder();
    for c in chunks {
        let c: &[f32; 2 * LANES] = c.try_into().unwrap();
        for l in 0..2 * LANES {
            acc[l] += f(c[l]);
        }
    }
    for (a, &t) in acc.iter_mut().zip(tail) {
        *a += f(t);
    }
    reduce(acc)
}

/// `sum_i f(x[i], y[i])` over the common length, accumulated like [`sum`].
#[inline(always)]
pub fn sum_by2(x: &[f32], y: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &y[..n]);
    let mut acc = [0.0f32; 2 * LANES];
    let (xc, yc) = (x.chunks_exact(2 * LANES), y.chunks_exact(2 * LANES));
    let (xt, yt) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        let a: &[f32; 2 * LANES] = a.try_into().unwrap();
        let b: &[f32; 2 * LANES] = b.try_into().unwrap();
        for l in 0..2 * LANES {
            acc[l] += f(a[l], b[l]);
        }
    }
    for ((s, &a), &b) in acc.iter_mut().zip(xt).zip(yt) {
        *s += f(a, b);
    }
    reduce(acc)
}

/// `sum_i f(x[i], y[i], z[i])` over the common length, accumulated like [`sum`].
#[inline(always)]
pub fn sum_by3(x: &[f32], y: &[f32], z: &[f32], f: impl Fn(f32, f32, f32) -> f32) -> f32 {
    let n = x.len().min(y.len()).min(z.len());
    let (x, y, z) = (&x[..n], &y[..n], &z[..n]);
    let mut acc = [0.0f32; 2 * LANES];
    let (xc, yc, zc) = (x.chunks_exact(2 * LANES), y.chunks_exact(2 * LANES), z.chunks_exact(2 * LANES));
    let (xt, yt, zt) = (xc.remainder(), yc.remainder(), zc.remainder());
    for ((a, b), c) in xc.zip(yc).zip(zc) {
        let a: &[f32; 2 * LANES] = a.try_into().unwrap();
        let b: &[f32; 2 * LANES] = b.try_into().unwrap();
        let c: &[f32; 2 * LANES] = c.try_into().unwrap();
        for l in 0..2 * LANES {
            acc[l] += f(a[l], b[l], c[l]);
        }
    }
    for (((s, &a), &b), &c) in acc.iter_mut().zip(xt).zip(yt).zip(zt) {
        *s += f(a, b, c);
    }
    reduce(acc)
}

/// `dst.copy_from_slice(&src[..dst.len()])` as whole 64-value (256-byte) blocks of vector moves
/// plus a tail: measured ~20% faster than `memcpy` (glibc's `rep movsb` path) for the 16 KiB runs of
/// `copy_rows_into`, and without a call per short row.
#[inline(always)]
pub fn copy(src: &[f32], dst: &mut [f32]) {
    const BLOCK: usize = 64;
    let src = &src[..dst.len()];
    let (mut d, mut s) = (dst.chunks_exact_mut(BLOCK), src.chunks_exact(BLOCK));
    for (d, s) in (&mut d).zip(&mut s) {
        let d: &mut [f32; BLOCK] = d.try_into().unwrap();
        *d = s.try_into().unwrap();
    }
    d.into_remainder().copy_from_slice(s.remainder());
}

#[cfg(test)]
mod tests {
    use super::Isa;
    use crate::cpu::fast::math;
    use crate::cpu::fast::small_gemm::{self, Layout};
    use crate::cpu::panic_message;

    #[test]
    fn a_kernel_asked_for_an_instruction_set_this_cpu_lacks_panics_instead_of_running_it() {
        let missing: Vec<Isa> = Isa::ALL.into_iter().filter(|i| !i.is_available()).collect();
        if missing.is_empty() {
            eprintln!("SKIPPED: this CPU runs every instruction set: no kernel can be asked for a missing one");
        }
        for isa in missing {
            let (x, mut out) = ([0.5f32; 37], [0.0f32; 37]);
            let message = panic_message(|| math::exp_into(isa, &x, &mut out));
            assert!(message.as_deref().is_some_and(|m| m.contains("cannot run")), "{isa:?}: {message:?}");
            if isa == Isa::Avx512 {
                // The small products pick their AVX-512 tiles by the `Isa` they are given.
                let (a, b, mut c) = ([1.0f32; 2 * 3], [1.0f32; 3 * 32], [0.0f32; 2 * 32]);
                let message = panic_message(|| {
                    small_gemm::gemm::<false>(isa, 2, 32, 3, 1.0, &a, Layout::RowMajor(3), &b, 32, &mut c, 32)
                });
                assert!(message.as_deref().is_some_and(|m| m.contains("cannot run")), "small gemm: {message:?}");
            }
        }
    }
}
