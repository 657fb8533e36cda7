//! The fast CPU matmul (`cpu::matmul`) against the plain-loop reference (`cpu::reference`), on
//! uneven shapes, every transpose, with and without bias, batched with every kind of stride, with
//! each micro-kernel this CPU can run, single- and multi-threaded.
//!
//! # The tolerance
//!
//! The reference accumulates in f64 and rounds once, so it is within half an f32 ulp of the exact
//! value. The fast kernel sums k f32 products in f32, in blocks; the classic error bound for such
//! a sum (Higham, "Accuracy and Stability of Numerical Algorithms", 3.1) is
//! `|c_fast - c_exact| <= gamma_k * sum_p |a_ip| |b_pj|` with `gamma_k ~ k u`, `u = 2^-24`.
//! Note that it scales with `S = sum |a||b|` (plus `|bias|`), not with `|c|`: with values that mix
//! magnitudes 1e3 and 1e-3 and both signs, c is often a small difference of large terms, and a
//! purely relative tolerance would fail on correct results. The worst case `k u S` is pessimistic:
//! rounding errors are independent-ish and add up like a random walk, so the realistic bound is
//! `~ sqrt(k) u S` (Higham & Mary, "A new approach to probabilistic rounding error analysis",
//! 2019). We allow `4 sqrt(k + 2) u S + 2 u |c|`: the errors of correct summation on these tests
//! reach 1.2 sqrt(k + 2) u S (small k, where the final rounding of c dominates), and for the k
//! used here (at most 600) the tolerance stays under 6e-6 S, so dropping, doubling or misplacing
//! any product bigger than that fails.
//!
//! The bf16 kernels round both operands to bfloat16 and sum the (exact) products in f32: against
//! the reference on the *rounded* operands they owe the same f32 summation bound, so the same
//! tolerance checks their packing, pairing and sums as tightly as the f32 kernels'. A last test
//! bounds them against the reference on the f32 operands, where the rounding itself is the error.

use engine::Rng;
use engine::backend::MatmulSpec;
use engine::cpu::matmul::{self, Kernel, Precision, bf16::round_to_bf16, f16::round_to_f16};
use engine::cpu::reference;

/// Values in [-1e3, 1e3] or [-1e-3, 1e-3], half and half: sums with large cancellations and tiny
/// terms next to huge ones.
fn wide_values(len: usize, rng: &mut Rng) -> Vec<f32> {
    (0..len)
        .map(|_| {
            let scale = if rng.below(2) == 0 { 1e3 } else { 1e-3 };
            rng.uniform_range(-scale, scale)
        })
        .collect()
}

fn spec(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> MatmulSpec {
    MatmulSpec { trans_a, trans_b, ..MatmulSpec::plain(m, n, k) }
}

/// Runs the fast matmul with `kernel` on at most `threads` threads and compares it with the
/// reference, element by element, with the tolerance of the module comment. A bf16 kernel is
/// compared with the reference on the operands it reads: rounded to bf16.
fn check_against_reference(kernel: Kernel, threads: usize, s: &MatmulSpec, with_bias: bool, seed: u64) {
    let (a, b, bias) = operands(s, with_bias, seed);
    // Garbage in C first: the fast path must overwrite every element.
    let mut got = vec![f32::NAN; s.batch * s.m * s.n];
    matmul::matmul_with(kernel, threads, &a, &b, bias.as_deref(), s, &mut got);
    let (a, b) = match kernel.precision() {
        Precision::F32 => (a, b),
        Precision::Bf16 => (a.into_iter().map(round_to_bf16).collect(), b.into_iter().map(round_to_bf16).collect()),
        Precision::F16 => unreachable!("no kernel reads f16: f16 products are f32 kernels on rounded packing"),
    };
    assert_within_summation_error(&format!("{kernel:?}, {threads} threads"), s, &a, &b, bias.as_deref(), &got);
}

/// A, B and (when asked) a bias of wide values for product `s`.
fn operands(s: &MatmulSpec, with_bias: bool, seed: u64) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let mut rng = Rng::new(seed);
    let a = wide_values(s.a_len(), &mut rng);
    let b = wide_values(s.b_len(), &mut rng);
    let bias = with_bias.then(|| wide_values(s.n, &mut rng));
    (a, b, bias)
}

/// `got` is the reference product of `a`, `b` and `bias` within the module's f32 summation bound,
/// element by element.
fn assert_within_summation_error(what: &str, s: &MatmulSpec, a: &[f32], b: &[f32], bias: Option<&[f32]>, got: &[f32]) {
    let expected = reference::matmul(a, b, bias, s);
    let u = f32::EPSILON as f64 / 2.0;
    let slack = 4.0 * ((s.k + 2) as f64).sqrt() * u;
    for bi in 0..s.batch {
        let (a, b) = (&a[bi * s.a_batch_stride..], &b[bi * s.b_batch_stride..]);
        for i in 0..s.m {
            for j in 0..s.n {
                let magnitude: f64 =
                    (0..s.k).map(|p| (a[s.a_index(i, p)] as f64 * b[s.b_index(p, j)] as f64).abs()).sum::<f64>()
                        + bias.map_or(0.0, |bias| bias[j].abs() as f64);
                let at = (bi * s.m + i) * s.n + j;
                let (want, have) = (expected[at] as f64, got[at] as f64);
                let tolerance = slack * magnitude + 2.0 * u * want.abs();
                assert!(
                    (have - want).abs() <= tolerance,
                    "{what}, {s:?}, bias {}: C[{bi}][{i}, {j}] = {have}, the reference says {want} \
                     (tolerance {tolerance:e})",
                    bias.is_some()
                );
            }
        }
    }
}

/// Every kernel this CPU can run, f32 and bf16.
fn available_kernels() -> Vec<Kernel> {
    Kernel::ALL.into_iter().chain(Kernel::BF16).filter(|kernel| kernel.is_available()).collect()
}

const UNEVEN_SHAPES: [(usize, usize, usize); 4] = [(1, 1, 1), (1, 137, 3), (45, 65, 33), (129, 257, 63)];

fn every_transpose_and_bias_equals_the_reference(kernel: Kernel) {
    for (shape, &(m, n, k)) in UNEVEN_SHAPES.iter().enumerate() {
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                for bias in [false, true] {
                    let s = spec(m, n, k, trans_a, trans_b);
                    check_against_reference(kernel, 2, &s, bias, 100 + shape as u64);
                }
            }
        }
    }
}

#[test]
fn the_fast_matmul_equals_the_reference_on_uneven_shapes_with_every_transpose_and_bias() {
    every_transpose_and_bias_equals_the_reference(Kernel::best());
}

#[test]
fn the_portable_kernel_equals_the_reference_on_uneven_shapes_with_every_transpose_and_bias() {
    every_transpose_and_bias_equals_the_reference(Kernel::Portable);
}

#[test]
fn the_simd_kernel_equals_the_reference_where_the_cpu_has_avx2_and_fma() {
    if Kernel::Avx2Fma.is_available() {
        every_transpose_and_bias_equals_the_reference(Kernel::Avx2Fma);
    } else {
        eprintln!("SKIPPED: this CPU lacks AVX2 or FMA: the AVX2 kernel is not tested here");
    }
}

/// The 12 x 32 tile's blocking, shared by the AVX-512 kernels, f32 and bf16: depths over its k
/// block (256), cut into equal blocks, odd ones (a bf16 block's last k pair half padding), a
/// depth of 1, tiles over the 12 x 32 edge, and (150, 790, 260) over all three of its blocks at
/// once: two A blocks (mc 144), two B panels (nc 768), two k blocks.
fn the_12x32_blocking_equals_the_reference(kernel: Kernel) {
    let shapes =
        [(25, 33, 129), (13, 65, 300), (13, 65, 301), (37, 31, 513), (37, 31, 600), (150, 790, 260), (12, 32, 1)];
    for (m, n, k) in shapes {
        for (trans_a, trans_b) in [(false, false), (true, true)] {
            check_against_reference(kernel, 2, &spec(m, n, k, trans_a, trans_b), true, 9);
        }
    }
}

#[test]
fn the_avx512_kernel_equals_the_reference_where_the_cpu_has_avx512() {
    if Kernel::Avx512.is_available() {
        every_transpose_and_bias_equals_the_reference(Kernel::Avx512);
        the_12x32_blocking_equals_the_reference(Kernel::Avx512);
    } else {
        eprintln!("SKIPPED: this CPU lacks AVX-512F: the AVX-512 kernel is not tested here");
    }
}

#[test]
fn the_portable_bf16_kernel_equals_the_reference_on_bf16_operands_on_uneven_shapes() {
    every_transpose_and_bias_equals_the_reference(Kernel::Bf16Portable);
    // Odd depths: the last k pair of a block is half padding.
    for &(m, n, k) in &[(7, 19, 1), (13, 17, 5), (37, 31, 513)] {
        check_against_reference(Kernel::Bf16Portable, 2, &spec(m, n, k, true, false), true, 21);
    }
}

#[test]
fn the_bf16_kernel_equals_the_reference_on_bf16_operands_where_the_cpu_has_avx512_bf16() {
    if Kernel::Bf16Avx512.is_available() {
        every_transpose_and_bias_equals_the_reference(Kernel::Bf16Avx512);
        the_12x32_blocking_equals_the_reference(Kernel::Bf16Avx512);
    } else {
        eprintln!("SKIPPED: this CPU lacks AVX512_BF16: the bf16 AVX-512 kernel is not tested here");
    }
}

/// Asserts that every element of `got` (the product of `s` on rounded operands) is within
/// `rounding` of its magnitude `S = sum_k |a||b|` of the f32 reference `want`, plus f32 summation;
/// returns the worst and the mean relative error (of `S`).
fn within_operand_rounding(
    got: &[f32],
    want: &[f32],
    a: &[f32],
    b: &[f32],
    s: &MatmulSpec,
    rounding: f64,
    what: &str,
) -> (f64, f64) {
    let (m, n, k) = (s.m, s.n, s.k);
    let u = f32::EPSILON as f64 / 2.0;
    let (mut worst, mut typical) = (0.0f64, 0.0f64);
    for i in 0..m {
        for j in 0..n {
            let magnitude: f64 = (0..k).map(|p| (a[s.a_index(i, p)] as f64 * b[s.b_index(p, j)] as f64).abs()).sum();
            let error = (got[i * n + j] as f64 - want[i * n + j] as f64).abs();
            let bound = (rounding + 4.0 * ((k + 2) as f64).sqrt() * u) * magnitude;
            assert!(error <= bound, "{what} {m}x{n}x{k} C[{i}, {j}]: off by {error:e}, bound {bound:e}");
            worst = worst.max(error / magnitude.max(f64::MIN_POSITIVE));
            typical += error / magnitude.max(f64::MIN_POSITIVE) / (m * n) as f64;
        }
    }
    (worst, typical)
}

#[test]
fn bf16_products_are_within_bf16_rounding_of_the_f32_reference() {
    // Each operand is off by at most 2^-8 of itself (bf16 keeps 8 significant bits), so each
    // product by at most (2 + 2^-8) 2^-8 of |a||b|, and the sum by that much of S; the f32
    // summation adds the module's bound.
    for kernel in Kernel::BF16.into_iter().filter(|kernel| kernel.is_available()) {
        for &(m, n, k) in &[(1, 137, 3), (45, 65, 33), (64, 96, 300)] {
            let s = spec(m, n, k, false, true);
            let mut rng = Rng::new(31);
            let a = wide_values(s.a_len(), &mut rng);
            let b = wide_values(s.b_len(), &mut rng);
            let want = reference::matmul(&a, &b, None, &s);
            let mut got = vec![0.0; m * n];
            matmul::matmul_with(kernel, 2, &a, &b, None, &s, &mut got);
            let rounding = (2.0 + 2f64.powi(-8)) * 2f64.powi(-8);
            let (worst, typical) = within_operand_rounding(&got, &want, &a, &b, &s, rounding, &format!("{kernel:?}"));
            // Not f32 in disguise: the rounding is there (a mean relative error well over f32's),
            // and no larger than bf16's.
            assert!(
                typical > 1e-5 && worst <= rounding + 1e-5,
                "{kernel:?} {m}x{n}x{k}: mean {typical:e}, worst {worst:e}"
            );
        }
    }
}

#[test]
fn bf16_precision_is_a_per_thread_permission_used_only_where_the_cpu_has_bf16_dot_products() {
    assert_eq!(Precision::current(), Precision::F32);
    assert_eq!(Precision::F32.kernel(), Kernel::best());
    let native = Kernel::Bf16Avx512.is_available();
    assert_eq!(Precision::Bf16.kernel(), if native { Kernel::Bf16Avx512 } else { Kernel::best() });

    let s = spec(45, 65, 33, false, false);
    let mut rng = Rng::new(17);
    let a = wide_values(s.a_len(), &mut rng);
    let b = wide_values(s.b_len(), &mut rng);
    let product = || {
        let mut c = vec![0.0; s.m * s.n];
        matmul::matmul(&a, &b, None, &s, &mut c);
        c
    };
    let mut at_bf16 = vec![0.0; s.m * s.n];
    matmul::matmul_with(Precision::Bf16.kernel(), matmul::auto_threads(&s), &a, &b, None, &s, &mut at_bf16);
    let (inside, other_thread) = matmul::with_precision(Precision::Bf16, || {
        assert_eq!(Precision::current(), Precision::Bf16);
        (product(), std::thread::scope(|scope| scope.spawn(product).join().unwrap()))
    });
    assert_eq!(inside, at_bf16, "inside with_precision, products run at bf16 where the CPU has it");
    assert_eq!(other_thread, product(), "another thread keeps its own precision, f32");
    assert_eq!(Precision::current(), Precision::F32, "the setting ends with the scope");
    if native {
        assert_ne!(inside, product(), "bf16 products differ from f32 ones on wide values");
    } else {
        eprintln!("SKIPPED in part: this CPU lacks AVX512_BF16, so bf16 precision runs the f32 kernel here");
    }
    // A panic inside the scope restores the setting too.
    let caught = std::panic::catch_unwind(|| matmul::with_precision(Precision::Bf16, || panic!("on purpose")));
    assert!(caught.is_err());
    assert_eq!(Precision::current(), Precision::F32);
}

#[test]
fn the_default_entry_point_equals_the_reference() {
    let mut rng = Rng::new(7);
    let s = spec(45, 65, 33, true, false);
    let a = wide_values(s.a_len(), &mut rng);
    let b = wide_values(s.b_len(), &mut rng);
    let mut fast = vec![0.0; s.m * s.n];
    matmul::matmul(&a, &b, None, &s, &mut fast);
    let mut chosen = vec![0.0; s.m * s.n];
    matmul::matmul_with(Kernel::best(), matmul::threads(), &a, &b, None, &s, &mut chosen);
    assert_eq!(fast, chosen);
    check_against_reference(Kernel::best(), matmul::threads(), &s, false, 7);
}

#[test]
fn a_product_over_zero_depth_is_the_bias_or_zero() {
    for kernel in available_kernels() {
        for bias in [false, true] {
            check_against_reference(kernel, 2, &spec(7, 19, 0, false, true), bias, 3);
        }
    }
    let bias = [1.5f32, -2.0, 3.0];
    let mut c = vec![f32::NAN; 6];
    matmul::matmul(&[], &[], Some(&bias), &MatmulSpec::plain(2, 3, 0), &mut c);
    assert_eq!(c, [1.5, -2.0, 3.0, 1.5, -2.0, 3.0]);
}

#[test]
fn batched_products_equal_the_reference_with_own_or_shared_operands() {
    // Large enough to be threaded, so the split between threads falls inside a batch item.
    let (batch, m, n, k) = (3, 70, 90, 100);
    for kernel in available_kernels() {
        for (trans_a, trans_b) in [(false, false), (true, true), (true, false)] {
            let base = spec(m, n, k, trans_a, trans_b);
            for (a_batch_stride, b_batch_stride) in [
                // Each item its own operands, with a gap between items.
                (m * k + 5, k * n + 3),
                // A shared by every item (a weight applied to a batch of B).
                (0, k * n),
                // B shared by every item.
                (m * k, 0),
            ] {
                let s = MatmulSpec { batch, a_batch_stride, b_batch_stride, ..base };
                check_against_reference(kernel, 2, &s, true, 11);
            }
        }
    }
}

#[test]
fn many_small_batch_items_are_shared_out_whole_between_threads() {
    // Attention-like: 24 items of 13 x 20 x 9, more threads than cores.
    let s = MatmulSpec { batch: 24, a_batch_stride: 13 * 9, b_batch_stride: 9 * 20, ..spec(13, 20, 9, false, true) };
    for kernel in available_kernels() {
        for threads in [1, 2, 3] {
            check_against_reference(kernel, threads, &s, false, 5);
        }
    }
}

#[test]
fn a_wide_product_split_between_threads_by_columns_equals_the_reference() {
    // 3 row slivers against 38 column slivers: the threads split n, and the thread boundary
    // is not a multiple of the NC panel width.
    for kernel in available_kernels() {
        for (trans_a, trans_b) in [(false, false), (true, true)] {
            check_against_reference(kernel, 3, &spec(13, 600, 300, trans_a, trans_b), true, 9);
        }
    }
}

#[test]
fn a_product_deeper_than_one_k_block_and_taller_than_one_m_block_equals_the_reference() {
    // k = 600 is three k blocks of 200 and m = 300 is three MC blocks of 102: the write-back
    // overwrites on the first block and accumulates on the others.
    for kernel in available_kernels() {
        check_against_reference(kernel, 1, &spec(300, 40, 600, false, false), true, 13);
        check_against_reference(kernel, 2, &spec(300, 40, 600, true, true), false, 14);
    }
}

#[test]
fn small_products_stay_on_the_calling_thread_and_large_ones_use_every_core() {
    assert_eq!(matmul::auto_threads(&MatmulSpec::plain(1, 1, 1)), 1);
    assert_eq!(matmul::auto_threads(&MatmulSpec::plain(128, 128, 128)), 1);
    assert_eq!(matmul::auto_threads(&MatmulSpec::plain(1024, 1024, 1024)), matmul::threads().min(134));
}

#[test]
fn the_product_into_unzeroed_memory_writes_every_value() {
    // `matmul_uninit` is what the CPU backend calls on a fresh buffer: garbage there (NaN here)
    // must never reach the result, including where k = 0 and at every tile edge.
    for &(m, n, k) in &[(45, 65, 33), (1, 137, 3), (7, 5, 0), (129, 257, 300)] {
        for bias in [false, true] {
            let s = spec(m, n, k, false, true);
            let mut rng = Rng::new(11);
            let a = wide_values(s.a_len(), &mut rng);
            let b = wide_values(s.b_len(), &mut rng);
            let bias = bias.then(|| wide_values(n, &mut rng));
            let mut want = vec![0.0; m * n];
            matmul::matmul(&a, &b, bias.as_deref(), &s, &mut want);
            let mut got = vec![std::mem::MaybeUninit::new(f32::NAN); m * n];
            matmul::matmul_uninit(&a, &b, bias.as_deref(), &s, &mut got);
            // SAFETY: MaybeUninit<f32> has f32's layout; every value was initialised (to NaN)
            // before the call and written by it.
            let got: Vec<f32> = got.iter().map(|x| unsafe { x.assume_init() }).collect();
            assert_eq!(got, want, "{m}x{n}x{k}");
        }
    }
}

/// `matmul_gelu_uninit` into fresh vectors: `(C, gelu(C))`.
fn fused(a: &[f32], b: &[f32], bias: Option<&[f32]>, s: &MatmulSpec) -> (Vec<f32>, Vec<f32>) {
    let len = s.batch * s.m * s.n;
    let (mut c, mut y) = (Vec::with_capacity(len), Vec::with_capacity(len));
    matmul::matmul_gelu_uninit(a, b, bias, s, &mut c.spare_capacity_mut()[..len], &mut y.spare_capacity_mut()[..len]);
    // SAFETY: every value of both was written.
    unsafe {
        c.set_len(len);
        y.set_len(len);
    }
    (c, y)
}

#[test]
fn the_fused_gelu_epilogue_equals_the_product_then_gelu_bit_for_bit_on_uneven_shapes() {
    let mut rng = Rng::new(41);
    // Odd shapes, several k blocks, products large enough to run on every thread, a batch.
    let shapes =
        [(1, 137, 3, 1), (45, 65, 33, 1), (300, 200, 700, 1), (129, 517, 260, 1), (13, 50, 50, 5), (4, 9, 0, 1)];
    for &(m, n, k, batch) in &shapes {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let s = MatmulSpec {
                batch,
                a_batch_stride: if batch > 1 { m * k } else { 0 },
                b_batch_stride: if batch > 1 { k * n } else { 0 },
                ..spec(m, n, k, ta, tb)
            };
            // Values around GELU's bend: a product of N(0, 1)-ish values, scaled.
            let a: Vec<f32> = (0..s.a_len()).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
            let b: Vec<f32> =
                (0..s.b_len()).map(|_| rng.uniform_range(-1.0, 1.0) / (k as f32).sqrt().max(1.0)).collect();
            let bias: Vec<f32> = (0..n).map(|_| rng.uniform_range(-2.0, 2.0)).collect();
            let (c, y) = fused(&a, &b, Some(&bias), &s);
            let mut plain = vec![0.0; c.len()];
            matmul::matmul(&a, &b, Some(&bias), &s, &mut plain);
            assert_eq!(c, plain, "C of {batch}x{m}x{n}x{k} ta={ta} tb={tb}");
            let mut gelu = vec![0.0; c.len()];
            engine::cpu::fast::elementwise::unary(engine::backend::UnaryOp::Gelu, &plain, gelu.as_mut_slice());
            assert_eq!(y, gelu, "gelu(C) of {batch}x{m}x{n}x{k} ta={ta} tb={tb}");
            // And within the GELU tolerance of the reference on the same C.
            let want = reference::unary(engine::backend::UnaryOp::Gelu, &c);
            for (i, (&g, &w)) in y.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= 1e-6 + 1e-5 * w.abs(), "{batch}x{m}x{n}x{k} at {i}: {g} vs {w}");
            }
        }
    }
}

/// The product at this thread's precision (`matmul::matmul`), at f16.
fn at_f16(a: &[f32], b: &[f32], bias: Option<&[f32]>, s: &MatmulSpec) -> Vec<f32> {
    let mut c = vec![f32::NAN; s.batch * s.m * s.n];
    matmul::with_precision(Precision::F16, || matmul::matmul(a, b, bias, s, &mut c));
    c
}

fn rounded_to_f16(xs: &[f32]) -> Vec<f32> {
    xs.iter().copied().map(round_to_f16).collect()
}

#[test]
fn f16_products_equal_the_reference_on_f16_operands_on_uneven_shapes_with_every_transpose_and_bias() {
    // The f32 kernels sum the rounded operands: the same f32 bound as theirs, against the reference
    // on the operands rounded to f16 (the bias stays f32, as the GPU's f16 kernel adds it in f32).
    let mut shapes = UNEVEN_SHAPES.to_vec();
    shapes.push((300, 70, 600)); // over one k block, one m block, several threads
    for (shape, &(m, n, k)) in shapes.iter().enumerate() {
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                for with_bias in [false, true] {
                    let s = spec(m, n, k, trans_a, trans_b);
                    let (a, b, bias) = operands(&s, with_bias, 700 + shape as u64);
                    let got = at_f16(&a, &b, bias.as_deref(), &s);
                    let (a, b) = (rounded_to_f16(&a), rounded_to_f16(&b));
                    assert_within_summation_error("f16", &s, &a, &b, bias.as_deref(), &got);
                }
            }
        }
    }
    // Batched, with a shared B, and the fused GELU epilogue at f16 gives gelu of the f16 product.
    let s = MatmulSpec { batch: 3, b_batch_stride: 0, ..spec(13, 29, 41, false, true) };
    let (a, b, _) = operands(&s, false, 9);
    let got = at_f16(&a, &b, None, &s);
    assert_within_summation_error("f16 batched", &s, &rounded_to_f16(&a), &rounded_to_f16(&b), None, &got);
    let s = spec(45, 65, 33, false, false);
    let (a, b, bias) = operands(&s, true, 10);
    let (h, y) = matmul::with_precision(Precision::F16, || fused(&a, &b, bias.as_deref(), &s));
    assert_eq!(h, at_f16(&a, &b, bias.as_deref(), &s), "the fused product rounds as the plain one");
    let (h_f32, y_f32) = fused(&a, &b, bias.as_deref(), &s);
    assert_ne!(h, h_f32, "f16 products differ from f32 ones on wide values");
    assert_ne!(y, y_f32);
}

#[test]
fn f16_products_are_within_f16_rounding_of_the_f32_reference_and_keep_subnormals() {
    // Each operand is off by at most 2^-11 of itself (f16 keeps 11 significant bits), so the sum
    // by (2 + 2^-11) 2^-11 of S, plus f32 summation. Values here stay in f16's normal range.
    for &(m, n, k) in &[(1, 137, 3), (45, 65, 33), (64, 96, 300)] {
        let s = spec(m, n, k, true, false);
        let (a, b, _) = operands(&s, false, 41);
        let want = reference::matmul(&a, &b, None, &s);
        let got = at_f16(&a, &b, None, &s);
        let rounding = (2.0 + 2f64.powi(-11)) * 2f64.powi(-11);
        let (_, typical) = within_operand_rounding(&got, &want, &a, &b, &s, rounding, "f16");
        assert!(typical > 1e-6, "f16 {m}x{n}x{k}: a mean relative error of {typical:e} is f32's, not f16's");
    }
    // Below f16's smallest subnormal (2^-24) a value is lost: what loss scaling is for. A gradient
    // of 1e-8 times a weight of 1 sums to 0 at f16, and to 1e-8 k once scaled by 2^16 and back.
    let s = spec(1, 1, 64, false, false);
    let (tiny, ones) = (vec![1e-8f32; 64], vec![1.0f32; 64]);
    assert_eq!(at_f16(&tiny, &ones, None, &s), [0.0]);
    let scaled: Vec<f32> = tiny.iter().map(|x| x * 65536.0).collect();
    let back = at_f16(&scaled, &ones, None, &s)[0] / 65536.0;
    assert!((back - 64e-8).abs() < 64e-8 * 1e-3, "scaled by 2^16, the sum comes back: {back:e}");
    // Past 65504 an operand is infinite, and so is the product: what the loss scale backs off from.
    assert_eq!(at_f16(&[70000.0], &[1.0], None, &spec(1, 1, 1, false, false)), [f32::INFINITY]);
}

#[test]
fn f16_precision_is_per_thread_and_names_itself() {
    assert_eq!("f16".parse::<Precision>(), Ok(Precision::F16));
    assert_eq!(Precision::F16.name(), "f16");
    assert!(Precision::F16.describe().starts_with("f16 inputs"), "{}", Precision::F16.describe());
    assert!("fp16".parse::<Precision>().unwrap_err().contains("f32, bf16 or f16"));
    let s = spec(45, 65, 33, false, false);
    let (a, b, _) = operands(&s, false, 5);
    let inside = at_f16(&a, &b, None, &s);
    let other_thread = matmul::with_precision(Precision::F16, || {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let mut c = vec![0.0; s.m * s.n];
                    matmul::matmul(&a, &b, None, &s, &mut c);
                    c
                })
                .join()
                .unwrap()
        })
    });
    let mut f32_product = vec![0.0; s.m * s.n];
    matmul::matmul(&a, &b, None, &s, &mut f32_product);
    assert_eq!(other_thread, f32_product, "another thread keeps its own precision, f32");
    assert_ne!(inside, f32_product);
}
