//! The fast CPU matmul: `C[b] = op(A[b]) . op(B[b]) (+ bias)`, BLIS / GotoBLAS style.
//!
//! # The algorithm
//!
//! A matrix product is `m n k` multiply-adds on only `m k + k n + m n` numbers, so it can run at
//! the speed of the FMA units if every number, once loaded, is used many times from registers or
//! a near cache. The classic way (Goto & van de Geijn, "Anatomy of high-performance matrix
//! multiplication", 2008; BLIS) is five loops around a register-blocked micro-kernel:
//!
//! ```text
//! for jc in cols step NC                          B panel  op(B)[pc.., jc..]  KC x NC  -> L3
//!   for pc in 0..k step KC
//!     for ic in rows step MC                      A block  op(A)[ic.., pc..]  MC x KC  -> L2
//!       for jr in 0..NC step NR                   B sliver KC x NR                     -> L1
//!         (first A block only: pack B sliver jr, prefetch sliver jr + 1)
//!         for ir in 0..MC step MR                 A sliver MR x KC, streamed from L2
//!           (first B sliver only: pack A sliver ir, prefetch sliver ir + 1)
//!           micro-kernel: C[ir..+MR, jr..+NR] (+)= A sliver . B sliver   (in registers)
//! ```
//!
//! Textbook GotoBLAS packs the whole B panel, then each whole A block, before computing. Here a
//! sliver is packed right before its first use, and the next one is prefetched while the kernel
//! works: the rows (or columns) that a sliver gathers are short strided streams which the
//! hardware prefetchers catch late, and a sliver's worth of misses then overlaps a kernel call
//! (~1500 cycles) instead of stalling the packing loop. It matters for the tall operands of
//! training (a [3328, 512] activation does not stay in a shared L3 from one call to
//! the next): with the packing loops of `pack.rs`, such products (fc2, the input gradient) ran
//! faster on one core than with block-at-a-time packing. That holds for an operand whose sliver
//! lanes are contiguous along k (op(A) stored plainly, op(B) stored transposed). The other kind,
//! contiguous along the sliver (the weight gradients' `X^T dY`: both operands), is packed a whole
//! block at a time, row by row (`pack::pack_rows`): sliver by sliver, it would be read as one or
//! two cache lines from each of `kc` rows, the same rows again for the next sliver.
//!
//! # The micro-kernel: MR x NR = 6 x 16
//!
//! Zen 3 has 16 ymm registers (no AVX-512) and two 256-bit FMA pipes, each FMA with 4 cycles of
//! latency: to keep both pipes busy we need at least 2 x 4 = 8 independent accumulators. A 6 x 16
//! tile is 12 accumulators (6 rows x 2 vectors of 8), plus 2 registers for the B row and 1 for
//! the broadcast A value: 15 of 16. Each k step does 12 FMAs (96 multiply-adds) for 2 vector loads
//! and 6 broadcasts, about the best ratio that fits the register file: 8 x 8 would do 8 FMAs for
//! 1 load and 8 broadcasts; 4 x 24 does 12 FMAs for 3 loads and 4 broadcasts, as good, but pads
//! the n = 16, 32, 64 of the training shapes to multiples of 24. It is the shape BLIS uses for
//! sgemm on Haswell and Zen. See `kernel.rs`.
//!
//! # The blocking: KC = 256, MC = 144, NC = 2048 (floats)
//!
//! - KC: the B sliver (KC x NR = 256 x 16 x 4 B = 16 KiB) must stay in the 32 KiB L1d while the
//!   kernel runs through all the A slivers of the block, with room for the A sliver being
//!   streamed (6 x 256 x 4 B = 6 KiB) and the C tile. A long KC also amortises the tile's
//!   load/store over many FMAs (256 k steps per write-back).
//! - MC: the packed A block (MC x KC = 144 x 256 x 4 B = 144 KiB) stays in the 512 KiB L2, under
//!   half of it so that B slivers and C passing through do not evict it. Multiple of MR.
//! - NC: the packed B panel (KC x NC = 256 x 2048 x 4 B = 2 MiB per thread) lives in L3. The
//!   training shapes have n <= 1024, so in practice the jc loop runs once.
//!
//! These are the AVX2 kernel's (`BLOCKING`). The AVX-512 kernel's 12 x 32 tile has its own
//! (`kernel_avx512::BLOCKING`: KC = 256, NC = 768, and the two innermost loops the other way
//! round, `for ir { for jr }`, so that an A sliver stays in L1 and the B panel streams from L2);
//! see `kernel_avx512.rs` for why and what it measured.
//!
//! k is cut into equal blocks (k = 384 gives 2 x 192, not 256 + 128), and so is each thread's
//! row range into MC blocks, so that no block is a sliver of leftovers.
//!
//! # Packed layout
//!
//! See `pack.rs`: an A block is `MC / MR` slivers, each `kc` steps of MR contiguous values (a
//! column of the sliver); a B panel is `NC / NR` slivers, each `kc` steps of NR contiguous values
//! (a row of the sliver). Packing reads op(A) and op(B) through (row stride, column stride), which
//! absorbs the transposes: all four transpose cases run the same kernel on the same layout. Edges
//! are zero padded, so the kernel always computes a full 6 x 16 tile and only the write-back
//! looks at the valid size. Buffers are 64-byte aligned, kept per calling thread and reused from
//! call to call (see `WORKSPACES`).
//!
//! # The write-back and the bias
//!
//! On the first k block the tile overwrites C with `acc + bias`; on later blocks it adds into C.
//! So the bias costs nothing (it rides along the first store) and C is never zeroed beforehand.
//! k = 0 is handled up front: C is the bias (or zeros).
//!
//! # Threads
//!
//! A call splits C into one task per thread (the calling thread works on one of them) and gives
//! each an independent part of C: the work is
//! `batch x ceil(m / MR)` row slivers, or `batch x ceil(n / NR)` column slivers when n has more
//! slivers than m, cut into equal contiguous ranges. So with a large batch (attention-like
//! products) each thread gets whole batch items, and with one big product each gets half the
//! rows (or columns). Each thread packs its own A blocks and B panels: there is no
//! synchronisation inside a call. The price is that each thread packs all
//! of the operand it does not split (B for a row split); we split along the dimension with more
//! slivers, so that the duplicated operand is the smaller one, and packing is O(k (m + n))
//! against O(m n k) of compute anyway.
//!
//! The threads are the CPU backend's worker pool (`cpu/pool.rs`): started once, spinning briefly
//! between calls and parked after, so a call costs a few microseconds of hand-off rather than a
//! spawn and a join per call. [`matmul`] gives a thread to every `FLOPS_PER_THREAD` = 4 MFLOP
//! (~40 us of one core) of work; a worker that has parked, or whose core another process holds,
//! can make a call wait for it, which is why small products stay on the calling thread.
//!
//! # Napkin math
//!
//! One core with two 256-bit FMA pipes: 2 x 8 lanes x 2 flops = 32 flops per cycle, ~100 GFLOP/s
//! at 3 GHz; the 1024^3 product is 2.1 GFLOP, ~21 ms on one such core. Per k step the kernel
//! reads (6 + 16) x 4 B from L1/L2 for 192 flops, and from memory each call reads A and B about
//! once and C once per k block: for the qkv product of training ([3328, 128] x [128, 384], 327
//! MFLOP) that is 7 MB, a few GB/s at the kernel's speed, well under what one core streams from
//! DRAM. So the kernel, not memory, is the limit, and the aim is to keep it fed. What it reaches
//! on the MAE's shapes, one and two cores, AVX2 and AVX-512, is in `docs/journal/benchmarks.md`.

pub mod bf16;
pub mod f16;
mod kernel;
mod kernel_avx512;
mod kernel_bf16;
mod pack;
#[cfg(target_arch = "x86_64")]
mod pack_bf16;

use std::mem::MaybeUninit;
use std::sync::OnceLock;

use crate::backend::MatmulSpec;
use kernel::{KernelFn, MR, NR, Tile};
use pack::PackBuf;

/// The cache blocking of a kernel: how deep a k block is, how many rows of op(A) and columns of
/// op(B) are packed at a time, and which of the two slivers a kernel call reads stays in L1.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Blocking {
    /// Depth of a k block, at most `pack::KC_MAX`.
    kc: usize,
    /// Rows of op(A) packed per block; a multiple of the kernel's MR.
    mc: usize,
    /// Columns of op(B) packed per panel; a multiple of the kernel's NR.
    nc: usize,
    order: LoopOrder,
}

/// The order of the two innermost loops (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LoopOrder {
    /// `for jr { for ir { kernel } }`: a B sliver stays in L1 while the A block streams from L2
    /// (GotoBLAS's order; the AVX2 kernel's, measured on Zen 3 and Zen 4).
    BSliverInL1,
    /// `for ir { for jr { kernel } }`: an A sliver stays in L1 while the B panel streams from L2
    /// (the AVX-512 kernel's: see `kernel_avx512.rs`).
    ASliverInL1,
}

/// The AVX2 and portable kernels' blocking (see the module comment).
const BLOCKING: Blocking = Blocking { kc: 256, mc: 144, nc: 2048, order: LoopOrder::BSliverInL1 };
const _: () = assert!(BLOCKING.kc <= pack::KC_MAX && kernel_avx512::BLOCKING.kc <= pack::KC_MAX);
/// The least work worth a thread of its own: about 40 us on one core, well above the few
/// microseconds of handing a task to a pool worker (see `parallel.rs` for when it costs more).
const FLOPS_PER_THREAD: f64 = 4e6;

/// The worker threads a large product uses: the available parallelism, read once.
pub fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

/// The micro-kernel implementations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Plain Rust, vectorised by the compiler for the target's baseline: runs everywhere.
    Portable,
    /// `std::arch` AVX2 + FMA intrinsics: x86_64 CPUs that have both (checked at run time).
    Avx2Fma,
    /// `std::arch` AVX-512F intrinsics, a 12 x 32 tile (`kernel_avx512.rs`): x86_64 CPUs with
    /// AVX-512F (checked at run time).
    Avx512,
    /// Inputs rounded to bfloat16, summed in f32, in plain Rust on the 6 x 16 tile
    /// (`kernel_bf16.rs`): the bf16 kernels' reference, on any CPU.
    Bf16Portable,
    /// Inputs rounded to bfloat16, summed in f32 by AVX512_BF16's `vdpbf16ps` on the 12 x 32 tile
    /// (`kernel_bf16.rs`): x86_64 CPUs with AVX-512F and AVX512_BF16 (checked at run time).
    Bf16Avx512,
}

/// The precision a product's inputs are read at. The sums are f32 either way, and so is C.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// Full f32 inputs (PyTorch's default, `set_float32_matmul_precision("highest")`).
    #[default]
    F32,
    /// Inputs rounded to bfloat16 (8 bits of mantissa) where the CPU has native bf16 dot products
    /// (AVX512_BF16), else f32: a permission, as PyTorch's `set_float32_matmul_precision("medium")`
    /// is, not a demand. See `bf16.rs`.
    Bf16,
    /// Inputs rounded to f16 (11 bits of mantissa, largest value 65504), as tensor cores read
    /// them: on a GPU whose adapter lists f16 cooperative matrices they run the products; on the
    /// CPU the inputs are rounded as they are packed and summed by the f32 kernels, at f32 speed,
    /// so that f16 training can be studied anywhere (`f16.rs`). Training at f16 scales its loss.
    F16,
}

impl Precision {
    /// The kernel a product at this precision runs on this CPU: the bf16 one where `vdpbf16ps`
    /// exists and bf16 is allowed, else [`Kernel::best`].
    pub fn kernel(self) -> Kernel {
        match self {
            Precision::Bf16 if Kernel::Bf16Avx512.is_available() => Kernel::Bf16Avx512,
            _ => Kernel::best(),
        }
    }

    /// Whether products at this precision round their inputs to f16 as they are packed.
    fn rounds_to_f16(self) -> bool {
        self == Precision::F16
    }

    /// The precision of products on this thread: [`Precision::F32`], or what [`with_precision`] set.
    pub fn current() -> Precision {
        PRECISION.get()
    }

    /// `f32`, `bf16` or `f16`, as [`FromStr`](std::str::FromStr) reads it.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }

    /// What products at this precision run as on this CPU, in words for a log line.
    pub fn describe(self) -> String {
        match (self, self.kernel()) {
            (Precision::Bf16, Kernel::Bf16Avx512) => "bf16 inputs, f32 sums (AVX512_BF16)".into(),
            (Precision::Bf16, k) => format!("f32 ({k:?}: bf16 allowed, but this CPU has no AVX512_BF16)"),
            (Precision::F16, k) => format!("f16 inputs, f32 sums (rounded as packed, summed by {k:?}: f32 speed)"),
            (Precision::F32, k) => format!("f32 ({k:?})"),
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "f16" => Ok(Precision::F16),
            _ => Err(format!("unknown matmul precision '{s}': use f32, bf16 or f16")),
        }
    }
}

thread_local! {
    /// The precision [`with_precision`] set on this thread.
    static PRECISION: std::cell::Cell<Precision> = const { std::cell::Cell::new(Precision::F32) };
}

/// Runs `f` with the products that it calls from this thread ([`matmul`], [`matmul_uninit`],
/// [`matmul_gelu_uninit`], so the CPU backend's) at `precision`; the previous setting comes back
/// afterwards, even if `f` panics. Thread-local, as PyTorch's autocast is: a trainer can run its
/// steps at bf16 while another thread of the process evaluates at f32.
pub fn with_precision<R>(precision: Precision, f: impl FnOnce() -> R) -> R {
    let _scope = PrecisionScope::set(precision);
    f()
}

/// [`with_precision`] as a guard, for code that returns early: this thread's products run at the
/// precision given until the guard is dropped, which restores the one before. Not `Send`: it must
/// be dropped on the thread whose setting it changed.
#[must_use = "the precision only lasts while the guard lives"]
pub struct PrecisionScope {
    previous: Precision,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl PrecisionScope {
    /// Sets this thread's precision to `precision` until the guard is dropped.
    pub fn set(precision: Precision) -> PrecisionScope {
        PrecisionScope { previous: PRECISION.replace(precision), _not_send: std::marker::PhantomData }
    }
}

impl Drop for PrecisionScope {
    fn drop(&mut self) {
        PRECISION.set(self.previous);
    }
}

impl Kernel {
    /// Every f32 kernel, available on this CPU or not.
    pub const ALL: [Kernel; 3] = [Kernel::Portable, Kernel::Avx2Fma, Kernel::Avx512];
    /// Every bf16 kernel, available on this CPU or not.
    pub const BF16: [Kernel; 2] = [Kernel::Bf16Portable, Kernel::Bf16Avx512];

    /// The precision the kernel reads its inputs at.
    pub fn precision(self) -> Precision {
        match self {
            Kernel::Portable | Kernel::Avx2Fma | Kernel::Avx512 => Precision::F32,
            Kernel::Bf16Portable | Kernel::Bf16Avx512 => Precision::Bf16,
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Portable | Kernel::Bf16Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => std::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            // With BW and VL, for its packing (`pack_bf16.rs`): every CPU with AVX512_BF16 has them.
            Kernel::Bf16Avx512 => pack_bf16::is_available(),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2Fma | Kernel::Avx512 | Kernel::Bf16Avx512 => false,
        }
    }

    /// The kernel for this CPU, chosen once: `MAE_CPU_KERNEL` (`portable`, `avx2fma`, `avx512`)
    /// when set to one this CPU can run; else AVX-512 on Intel processors that have it, AVX2 + FMA
    /// elsewhere when present, else the portable kernel. AMD's Zen 4 has AVX-512 but runs each
    /// 512-bit FMA as two 256-bit halves: there the AVX-512 kernel measured no faster than the
    /// AVX2 one (docs/journal/benchmarks.md), and the AVX2 kernel's smaller tile wastes less on the
    /// small products. The choice never changes during a run, so neither do the bits.
    pub fn best() -> Kernel {
        static BEST: OnceLock<Kernel> = OnceLock::new();
        *BEST.get_or_init(|| {
            let forced = std::env::var("MAE_CPU_KERNEL").ok().and_then(|name| {
                let k = Kernel::ALL.into_iter().find(|k| format!("{k:?}").eq_ignore_ascii_case(name.trim()));
                if k.is_none_or(|k| !k.is_available()) {
                    eprintln!("MAE_CPU_KERNEL={name}: not a kernel this CPU can run; choosing automatically");
                }
                k.filter(|k| k.is_available())
            });
            forced.unwrap_or_else(|| {
                if Kernel::Avx512.is_available() && cpu_vendor_is_intel() {
                    Kernel::Avx512
                } else if Kernel::Avx2Fma.is_available() {
                    Kernel::Avx2Fma
                } else {
                    Kernel::Portable
                }
            })
        })
    }

    fn function(self) -> KernelFn {
        assert!(self.is_available(), "the {self:?} matmul kernel is not supported by this CPU");
        match self {
            Kernel::Portable => kernel::portable,
            Kernel::Bf16Portable => kernel_bf16::portable,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => kernel::avx2,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => kernel_avx512::avx512,
            #[cfg(target_arch = "x86_64")]
            Kernel::Bf16Avx512 => kernel_bf16::avx512,
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2Fma | Kernel::Avx512 | Kernel::Bf16Avx512 => unreachable!(),
        }
    }
}

/// Whether CPUID says "GenuineIntel".
fn cpu_vendor_is_intel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: CPUID leaf 0 exists on every x86_64 processor (the call is safe from Rust 1.94).
        #[allow(unused_unsafe)]
        let id = unsafe { std::arch::x86_64::__cpuid(0) };
        let vendor: Vec<u8> = [id.ebx, id.edx, id.ecx].iter().flat_map(|r| r.to_le_bytes()).collect();
        vendor == b"GenuineIntel"
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `C[b] = op(A[b]) . op(B[b]) (+ bias)` with the best kernel for this CPU at this thread's
/// [`Precision`], on all cores for large products. `c` holds `batch * m * n` floats and is
/// overwritten.
pub fn matmul(a: &[f32], b: &[f32], bias: Option<&[f32]>, spec: &MatmulSpec, c: &mut [f32]) {
    // SAFETY: as in `matmul_with`.
    let c = unsafe { &mut *(c as *mut [f32] as *mut [MaybeUninit<f32>]) };
    matmul_uninit(a, b, bias, spec, c);
}

/// How many threads [`matmul`] uses for a product: one per `FLOPS_PER_THREAD` of work, at most
/// [`threads`]. So products under 8 MFLOP (160^3) stay on the calling thread.
pub fn auto_threads(spec: &MatmulSpec) -> usize {
    ((spec.flops() / FLOPS_PER_THREAD) as usize).clamp(1, threads())
}

/// [`matmul`] with a chosen micro-kernel on `threads` threads, whatever the size of the product
/// (fewer only if C has fewer slivers than that): the tests use it to check the portable kernel
/// and the split between threads on products too small to be threaded by [`matmul`].
/// Panics if the kernel is not available on this CPU (see [`Kernel::is_available`]).
pub fn matmul_with(
    kernel: Kernel,
    threads: usize,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    spec: &MatmulSpec,
    c: &mut [f32],
) {
    // SAFETY: viewing initialised floats as possibly-uninitialised ones is always sound; the
    // product only ever writes valid floats into them.
    let c = unsafe { &mut *(c as *mut [f32] as *mut [MaybeUninit<f32>]) };
    tiled_with(kernel, false, threads, a, b, bias, spec, c, None);
}

/// [`matmul`] into memory that need not be initialised: every one of its `batch * m * n` values
/// is written (C is never read before the product has written it), so the CPU backend can hand
/// it a fresh buffer without zeroing it first, a pass over memory as large as C.
pub fn matmul_uninit(a: &[f32], b: &[f32], bias: Option<&[f32]>, spec: &MatmulSpec, c: &mut [MaybeUninit<f32>]) {
    let p = Precision::current();
    tiled_with(p.kernel(), p.rounds_to_f16(), auto_threads(spec), a, b, bias, spec, c, None);
}

/// [`matmul_uninit`] that also writes `y = gelu(C)` (an MLP's first layer and its activation):
/// each packed block of C rows (at most MC x NC) gets its GELU right after its last k block, while
/// it is still in L2, instead of in a second pass over C from memory. `y` holds `batch * m * n`
/// values too; both are fully written.
pub fn matmul_gelu_uninit(
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    spec: &MatmulSpec,
    c: &mut [MaybeUninit<f32>],
    y: &mut [MaybeUninit<f32>],
) {
    assert_eq!(y.len(), c.len(), "matmul_gelu: y must hold batch * m * n");
    let epilogue = Some(Gelu { y: SharedC(y.as_mut_ptr().cast()), isa: crate::cpu::fast::simd::Isa::current() });
    let p = Precision::current();
    tiled_with(p.kernel(), p.rounds_to_f16(), auto_threads(spec), a, b, bias, spec, c, epilogue);
}

/// [`tiled`] with the tile, blocking and packing of `kernel` (and the GELU epilogue when asked);
/// `round_f16` rounds the packed f32 operands to f16 ([`Precision::F16`]).
#[allow(clippy::too_many_arguments)]
fn tiled_with(
    kernel: Kernel,
    round_f16: bool,
    threads: usize,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    spec: &MatmulSpec,
    c: &mut [MaybeUninit<f32>],
    gelu: Option<Gelu>,
) {
    let packing = match kernel {
        Kernel::Portable | Kernel::Avx2Fma | Kernel::Avx512 if round_f16 => Packing::RoundF16,
        Kernel::Portable | Kernel::Avx2Fma | Kernel::Avx512 => Packing::F32,
        Kernel::Bf16Portable => Packing::PairUp,
        Kernel::Bf16Avx512 => Packing::Bf16Avx512,
    };
    let run = Run { kernel: kernel.function(), packing };
    match kernel {
        // The bf16 kernel shares the f32 one's tile and blocking: deeper k blocks (256 and 384 at
        // half the bytes) measured no different on the training step.
        Kernel::Avx512 | Kernel::Bf16Avx512 => {
            use kernel_avx512 as t;
            tiled::<{ t::MR }, { t::NR }>(run, t::BLOCKING, threads, a, b, bias, spec, c, gelu)
        }
        Kernel::Portable | Kernel::Avx2Fma | Kernel::Bf16Portable => {
            tiled::<MR, NR>(run, BLOCKING, threads, a, b, bias, spec, c, gelu)
        }
    }
}

/// The micro-kernel, and how its operands are packed.
#[derive(Clone, Copy)]
struct Run {
    kernel: KernelFn,
    packing: Packing,
}

/// What a packed sliver holds, and how it is made.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Packing {
    /// f32 values (`pack.rs`).
    F32,
    /// k-pair words of bf16 (`bf16.rs`): packed in f32, then paired up in place, in portable code.
    PairUp,
    /// The same words, converted as they are packed with AVX512_BF16 (`pack_bf16.rs`).
    Bf16Avx512,
    /// f32 values rounded to f16 (`f16.rs`): packed in f32, then rounded in place.
    RoundF16,
}

impl Run {
    /// `pack::pack_rows` in this run's packing.
    #[allow(clippy::too_many_arguments)]
    fn pack_rows<const W: usize>(
        &self,
        dst: &mut [f32],
        src: &[f32],
        sp: usize,
        x: usize,
        len: usize,
        p0: usize,
        kc: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.packing == Packing::Bf16Avx512 {
            // SAFETY: `Packing::Bf16Avx512` comes with `Kernel::Bf16Avx512`, available only where
            // `pack_bf16::is_available`.
            return unsafe { pack_bf16::pack_rows::<W>(dst, src, sp, x, len, p0, kc) };
        }
        pack::pack_rows::<W>(dst, src, sp, x, len, p0, kc);
        let packed = &mut dst[..len.div_ceil(W) * W * kc];
        match self.packing {
            Packing::F32 => {}
            Packing::RoundF16 => f16::round_in_place(packed),
            Packing::PairUp | Packing::Bf16Avx512 => {
                packed.chunks_exact_mut(W * kc).for_each(|s| bf16::pair_up_in_place::<W>(s, kc))
            }
        }
    }

    /// `pack::pack_sliver` in this run's packing.
    #[allow(clippy::too_many_arguments)]
    fn pack_sliver<const W: usize>(
        &self,
        dst: &mut [f32],
        src: &[f32],
        sx: usize,
        sp: usize,
        x: usize,
        valid: usize,
        p0: usize,
        kc: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.packing == Packing::Bf16Avx512 && sp == 1 {
            // SAFETY: as in `pack_rows`.
            return unsafe { pack_bf16::pack_sliver::<W>(dst, src, sx, x, valid, p0, kc) };
        }
        pack::pack_sliver::<W>(dst, src, sx, sp, x, valid, p0, kc);
        match self.packing {
            Packing::F32 => {}
            Packing::RoundF16 => f16::round_in_place(&mut dst[..W * kc]),
            Packing::PairUp | Packing::Bf16Avx512 => bf16::pair_up_in_place::<W>(dst, kc),
        }
    }
}

/// The fused epilogue: where `gelu(C)` goes, and the instruction set to compute it with (the
/// caller's, as `unary` would use).
#[derive(Clone, Copy)]
struct Gelu {
    y: SharedC,
    isa: crate::cpu::fast::simd::Isa,
}

impl Gelu {
    /// `y = gelu(c)` over the `rows x cols` block at `(i, j)` of an `ldc`-wide matrix.
    ///
    /// # Safety
    /// The block lies inside C and Y, has been fully written in C, and only this thread touches it.
    unsafe fn apply(&self, c: *const f32, i: usize, j: usize, rows: usize, cols: usize, ldc: usize) {
        for r in 0..rows {
            let at = (i + r) * ldc + j;
            // SAFETY: as the caller promises.
            let (src, dst) = unsafe {
                (std::slice::from_raw_parts(c.add(at), cols), std::slice::from_raw_parts_mut(self.y.0.add(at), cols))
            };
            crate::cpu::fast::elementwise::gelu_serial(self.isa, src, dst);
        }
    }
}

/// [`matmul_with`] for a kernel of an `MR x NR` tile and its blocking, with the GELU epilogue
/// when asked.
#[allow(clippy::too_many_arguments)]
fn tiled<const MR: usize, const NR: usize>(
    run: Run,
    blocking: Blocking,
    threads: usize,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    spec: &MatmulSpec,
    c: &mut [MaybeUninit<f32>],
    gelu: Option<Gelu>,
) {
    let &MatmulSpec { batch, m, n, k, .. } = spec;
    assert_eq!(c.len(), batch * m * n, "matmul: C must hold batch * m * n");
    if batch == 0 || m == 0 || n == 0 {
        return;
    }
    assert!(a.len() >= spec.a_len(), "matmul: A is too short");
    assert!(b.len() >= spec.b_len(), "matmul: B is too short");
    if let Some(bias) = bias {
        assert!(bias.len() >= n, "matmul: the bias must hold n values");
    }
    if k == 0 {
        for row in c.chunks_exact_mut(n) {
            for (j, x) in row.iter_mut().enumerate() {
                x.write(bias.map_or(0.0, |bias| bias[j]));
            }
        }
        if let Some(g) = gelu {
            // SAFETY: C is fully written just above; the whole of C and Y is this thread's.
            unsafe { g.apply(c.as_ptr().cast(), 0, 0, batch * m, n, n) };
        }
        return;
    }

    let problem = Problem { a, b, bias, spec, c: SharedC(c.as_mut_ptr().cast()), run, blocking, gelu };
    // The unit of work split across threads: a row sliver or a column sliver of one batch item.
    let split_rows = m.div_ceil(MR) >= n.div_ceil(NR);
    let per_item = if split_rows { m.div_ceil(MR) } else { n.div_ceil(NR) };
    let units = batch * per_item;
    let workers = threads.clamp(1, units);
    let range = |t: usize| (units * t / workers)..(units * (t + 1) / workers);
    // Each thread packs into its own buffers, kept from call to call (`WORKSPACE`): buffers this
    // big are mmapped, so a fresh one would cost a page fault per 4 KiB touched and an munmap.
    super::pool::run(workers, &|t| {
        let mut space = WORKSPACE.take();
        problem.run_units::<MR, NR>(range(t), split_rows, per_item, &mut space);
        WORKSPACE.set(space);
    });
}

/// One worker's packing buffers: the A block and the B panel.
#[derive(Default)]
struct Workspace {
    a: PackBuf,
    b: PackBuf,
}

thread_local! {
    /// This thread's packing buffers (the calling thread's, or a pool worker's).
    static WORKSPACE: std::cell::Cell<Workspace> = std::cell::Cell::new(Workspace::default());
}

/// The base pointer of C, shared by the worker threads, each of which writes its own disjoint
/// set of (batch item, rows, columns) rectangles.
#[derive(Clone, Copy)]
struct SharedC(*mut f32);
// SAFETY: the tasks write disjoint parts of C (see `tiled`), and `pool::run` returns only when
// every task has finished, before the `&mut` slice that the pointer comes from is usable again.
unsafe impl Send for SharedC {}
// SAFETY: as for `Send`: no two tasks touch the same values of C.
unsafe impl Sync for SharedC {}

struct Problem<'a> {
    a: &'a [f32],
    b: &'a [f32],
    bias: Option<&'a [f32]>,
    spec: &'a MatmulSpec,
    c: SharedC,
    run: Run,
    blocking: Blocking,
    /// `y = gelu(C)`, tile by tile after the last k block.
    gelu: Option<Gelu>,
}

impl Problem<'_> {
    /// Computes the units `units` (see `matmul_with`): for each batch item they touch, the
    /// corresponding rows (or columns) of C.
    fn run_units<const MR: usize, const NR: usize>(
        &self,
        units: std::ops::Range<usize>,
        split_rows: bool,
        per_item: usize,
        space: &mut Workspace,
    ) {
        let &MatmulSpec { m, n, .. } = self.spec;
        if units.is_empty() {
            return;
        }
        let (first_item, last_item) = (units.start / per_item, (units.end - 1) / per_item);
        for item in first_item..=last_item {
            let lo = units.start.max(item * per_item) - item * per_item;
            let hi = units.end.min((item + 1) * per_item) - item * per_item;
            let (rows, cols) = if split_rows {
                ((lo * MR).min(m)..(hi * MR).min(m), 0..n)
            } else {
                (0..m, (lo * NR).min(n)..(hi * NR).min(n))
            };
            self.gemm::<MR, NR>(item, rows, cols, space);
        }
    }

    /// The five blocked loops of the module comment, for `C[item][rows, cols]`.
    fn gemm<const MR: usize, const NR: usize>(
        &self,
        item: usize,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
        space: &mut Workspace,
    ) {
        let s = self.spec;
        let (m, n, k) = (s.m, s.n, s.k);
        let a = &self.a[item * s.a_batch_stride..];
        let b = &self.b[item * s.b_batch_stride..];
        // Strides of the views op(A)[i, p] = a[i * a_si + p * a_sp], op(B)[p, j] = b[j * b_sj + p * b_sp].
        let (a_si, a_sp) = if s.trans_a { (1, m) } else { (k, 1) };
        let (b_sj, b_sp) = if s.trans_b { (k, 1) } else { (1, n) };
        // SAFETY: `item < batch`, so the item's C is inside the buffer of `batch * m * n` floats.
        let c = unsafe { self.c.0.add(item * m * n) };

        let Blocking { kc: kc_max, mc: mc_max, nc: nc_max, order } = self.blocking;
        let kc_step = k.div_ceil(k.div_ceil(kc_max));
        let mc_step = rows.len().div_ceil(rows.len().div_ceil(mc_max)).next_multiple_of(MR);
        let a_in_l1 = order == LoopOrder::ASliverInL1;
        // An operand contiguous along its sliver dimension (op(A) stored transposed, op(B) stored
        // plainly) is packed a whole block at a time, row by row (`pack::pack_rows`); the other
        // way, sliver by sliver right before first use, with the next sliver prefetched.
        let (a_by_rows, b_by_rows) = (a_si == 1 && a_sp != 1, b_sj == 1 && b_sp != 1);

        for jc in cols.clone().step_by(nc_max) {
            let nc = nc_max.min(cols.end - jc);
            let b_slivers = nc.div_ceil(NR);
            for pc in (0..k).step_by(kc_step) {
                let kc = kc_step.min(k - pc);
                // Where sliver `jr` of the B panel and `ir` of the A block come from.
                let b_sliver_at = |jr: usize| (jc + jr * NR, NR.min(nc - jr * NR));
                let b_pack = space.b.slice_mut(b_slivers * NR * kc);
                if b_by_rows {
                    self.run.pack_rows::<NR>(b_pack, b, b_sp, jc, nc, pc, kc);
                }
                for (block, ic) in rows.clone().step_by(mc_step).enumerate() {
                    let mc = mc_step.min(rows.end - ic);
                    let a_slivers = mc.div_ceil(MR);
                    let a_sliver_at = |ir: usize| (ic + ir * MR, MR.min(mc - ir * MR));
                    let a_pack = space.a.slice_mut(a_slivers * MR * kc);
                    if a_by_rows {
                        self.run.pack_rows::<MR>(a_pack, a, a_sp, ic, mc, pc, kc);
                    }
                    // The two inner loops, in the kernel's order: the outer one's sliver stays in
                    // L1 while the inner one's stream past it.
                    let (outer, inner) = if a_in_l1 { (a_slivers, b_slivers) } else { (b_slivers, a_slivers) };
                    for (o, q) in (0..outer).flat_map(|o| (0..inner).map(move |q| (o, q))) {
                        let (ir, jr) = if a_in_l1 { (o, q) } else { (q, o) };
                        let (j, tile_cols) = b_sliver_at(jr);
                        let (i, tile_rows) = a_sliver_at(ir);
                        // The B panel is packed just in time, during the first A block: a sliver
                        // right before its first use, the next one prefetched while the kernels
                        // run on this one. The same for the A block, during the first B sliver.
                        if block == 0 && ir == 0 && !b_by_rows {
                            if jr + 1 < b_slivers {
                                let (x, valid) = b_sliver_at(jr + 1);
                                pack::prefetch_sliver(b, b_sj, b_sp, x, valid, pc, kc);
                            }
                            let dst = &mut b_pack[jr * NR * kc..(jr + 1) * NR * kc];
                            self.run.pack_sliver::<NR>(dst, b, b_sj, b_sp, j, tile_cols, pc, kc);
                        }
                        if jr == 0 && !a_by_rows {
                            if ir + 1 < a_slivers {
                                let (x, valid) = a_sliver_at(ir + 1);
                                pack::prefetch_sliver(a, a_si, a_sp, x, valid, pc, kc);
                            }
                            let dst = &mut a_pack[ir * MR * kc..(ir + 1) * MR * kc];
                            self.run.pack_sliver::<MR>(dst, a, a_si, a_sp, i, tile_rows, pc, kc);
                        }
                        let b_sliver = &b_pack[jr * NR * kc..(jr + 1) * NR * kc];
                        let a_sliver = &a_pack[ir * MR * kc..(ir + 1) * MR * kc];
                        let bias = if pc == 0 { self.bias.map(|bias| &bias[j..j + tile_cols]) } else { None };
                        let tile = Tile {
                            // SAFETY: (i, j) is inside this item's m x n C.
                            c: unsafe { c.add(i * n + j) },
                            ldc: n,
                            rows: tile_rows,
                            cols: tile_cols,
                            accumulate: pc > 0,
                            bias,
                        };
                        // SAFETY: the tile lies in C[item][rows, cols], which only this thread
                        // writes; the kernel was checked available by `function`.
                        unsafe { (self.run.kernel)(a_sliver, b_sliver, &tile) };
                    }
                    // The block's rows of this panel are final after the last k block: GELU them
                    // now, row by row, while they are still in L2 (per tile, the rows would be
                    // too short to vectorise well).
                    if let Some(g) = &self.gelu
                        && pc + kc == k
                    {
                        // SAFETY: C[item][ic..ic + mc, jc..jc + nc] is final and only this thread
                        // writes it and the same place of this item's Y.
                        unsafe {
                            let y = Gelu { y: SharedC(g.y.0.add(item * m * n)), ..*g };
                            y.apply(c, ic, jc, mc, nc, n)
                        };
                    }
                }
            }
        }
    }
}
