//! The fast CPU kernels (`engine::cpu::fast`) against the plain-loop reference
//! (`engine::cpu::reference`, f64 accumulation, the ground truth), on uneven shapes (1 row, 137,
//! 45 x 65, sequences of 1 to 197 tokens: sizes that are multiples of no vector width or chunk)
//! and values over wide ranges, with each instruction set this CPU has (the portable copy and the
//! AVX2 + FMA one) and with the work split over 1, 2 and 3 threads. Besides closeness to the
//! reference, every kernel must give the same bits twice in a row and whatever the thread count.
//!
//! # The tolerances
//!
//! Each comparison is `|fast - reference| <= atol + rtol * |reference|`, element by element, with
//! `atol` and `rtol` chosen per kernel from what its f32 arithmetic can do; `u = 2^-24` is the unit
//! roundoff of f32.
//! - Kernels that compute each value with the same single f32 operations as the reference
//!   (add/sub/mul/div/scale/square/sqrt, copies, gathers, permutes, AdamW) must agree exactly.
//! - A kernel that sums n terms in f32 has an error bounded by `~ n u sum|terms|` in the worst case
//!   and `~ sqrt(n) u sum|terms|` in practice (Higham, "Accuracy and Stability of Numerical
//!   Algorithms", 3.1; Higham & Mary 2019). The bound scales with the magnitude of the terms, not
//!   of the result: when terms of both signs cancel, a relative tolerance alone would reject correct
//!   results. So for sums the `atol` of an element is `c sqrt(n) u` times the sum of the magnitudes
//!   of its terms, computed in f64 by the test, and `rtol` is a few `u` for the final rounding.
//! - GELU and its derivative use an f32 erf (A&S 7.1.26, as the reference does in f64) and an f32
//!   exp (1 ulp): `gelu(x) = x Phi(x)` keeps a relative error of a few ulps, so `rtol = 2e-6`,
//!   plus `8 u x^2` in the negative tail, where `Phi` has condition number `~x^2` (rounding
//!   `x^2 / 2` moves `exp(-x^2 / 2)` by that much), plus the reference's own error there (it forms
//!   `1 + erf` in f64);
//!   the derivative `Phi(x) + x phi(x)` crosses zero near x = -0.75, where the absolute error of
//!   its two terms (~0.3 in size) shows, so its `atol` is `1e-6 |dy|`.

mod common;

use common::{uniform_values, wide_values};
use engine::Rng;
use engine::backend::{AttentionSpec, AxisSpec, CopyRowsSpec, GatherSpec, HeadLayout, MaeLossSpec};
use engine::backend::{BinaryOp, UnaryOp};
use engine::cpu::fast::simd::{Isa, with_isa};
use engine::cpu::fast::small_gemm::{self, Layout};
use engine::cpu::fast::{adamw, attention, elementwise, layernorm, loss, math, permute, reduce, rows};
use engine::cpu::parallel::with_threads;
use engine::cpu::reference;

const U: f64 = f32::EPSILON as f64 / 2.0;

/// The instruction sets to test on this CPU (each test says which it skipped).
fn isas() -> Vec<Isa> {
    for isa in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
        eprintln!("SKIPPED: this CPU cannot run the {isa:?} copies of the kernels: they are not tested here");
    }
    Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
}

/// Runs `f` with each available instruction set, and for each on 1, 2 and 3 threads and twice on
/// 2 threads: asserts that all these runs of one instruction set give the same bits, and that the
/// AVX-512 copy gives the AVX2 copy's bits (the same operations in the same order, only wider),
/// and returns one result per instruction set.
fn run_everywhere<T: PartialEq + std::fmt::Debug>(what: &str, f: impl Fn() -> T) -> Vec<(Isa, T)> {
    let results = per_isa(what, f);
    let of = |isa| results.iter().find(|(i, _)| *i == isa).map(|(_, r)| r);
    if let (Some(avx2), Some(avx512)) = (of(Isa::Avx2Fma), of(Isa::Avx512)) {
        assert!(avx2 == avx512, "{what}: the AVX-512 copy differs from the AVX2 copy");
    }
    results
}

fn per_isa<T: PartialEq + std::fmt::Debug>(what: &str, f: impl Fn() -> T) -> Vec<(Isa, T)> {
    isas()
        .into_iter()
        .map(|isa| {
            with_isa(isa, || {
                let one = with_threads(1, &f);
                for threads in [2, 3, 2] {
                    let again = with_threads(threads, &f);
                    assert!(again == one, "{what} ({isa:?}): {threads} threads differ from one thread");
                }
                (isa, one)
            })
        })
        .collect()
}

/// Bit equality of f32 slices (NaN equal to itself), with the first difference named.
fn assert_same_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g.to_bits() == w.to_bits(), "{what}: element {i} is {g}, the reference has {w}");
    }
}

/// `|got - want| <= atol[i] + rtol |want|`, naming the worst element.
fn assert_within(got: &[f32], want: &[f32], atol: impl Fn(usize) -> f64, rtol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w as f64).abs();
        let excess = err - (atol(i) + rtol * (w as f64).abs());
        if (excess > 0.0 || err.is_nan()) && worst.is_none_or(|(_, e)| excess > e) {
            worst = Some((i, if err.is_nan() { f64::INFINITY } else { excess }));
        }
    }
    if let Some((i, _)) = worst {
        panic!(
            "{what}: element {i} of {}: got {:e}, reference {:e} (allowed {:e})",
            got.len(),
            got[i],
            want[i],
            atol(i) + rtol * (want[i] as f64).abs()
        );
    }
}

/// Lengths that are multiples of no vector width or chunk, and some that are.
const LENGTHS: [usize; 7] = [1, 7, 137, 45 * 65, 8192, 8193, 3 * 8192 + 77];

// ---------------------------------------------------------------------------------------------
// math.rs

/// erf in f64 to ~1e-13: its Taylor series for |x| <= 3 (terms up to e^9, so ~4 digits of f64
/// lost to cancellation), the continued fraction of erfc beyond (60 terms, evaluated backwards).
fn erf_f64(x: f64) -> f64 {
    let a = x.abs();
    if a > 3.0 {
        let mut f = a;
        for k in (1..=60).rev() {
            f = a + (k as f64 / 2.0) / f;
        }
        let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / f;
        return x.signum() * (1.0 - erfc);
    }
    let (mut term, mut sum) = (x, x);
    for n in 1..200 {
        term *= -x * x / n as f64;
        let add = term / (2 * n + 1) as f64;
        sum += add;
        if add.abs() < 1e-17 * sum.abs() {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn fast_exp_is_within_two_ulps_relative_over_its_whole_range() {
    let x: Vec<f32> = (0..200_001).map(|i| -87.0 + 175.0 * i as f32 / 200_000.0).collect();
    for isa in isas() {
        let mut y = vec![0.0; x.len()];
        math::exp_into(isa, &x, &mut y);
        let worst = x.iter().zip(&y).map(|(&x, &y)| (y as f64 / (x as f64).exp() - 1.0).abs()).fold(0.0, f64::max);
        assert!(worst < 2.5e-7, "{isa:?}: exp relative error {worst:e}");
        let mut z = [0.0; 4];
        math::exp_into(isa, &[-100.0, f32::NEG_INFINITY, 0.0, f32::NAN], &mut z);
        assert_eq!(&z[..3], &[0.0, 0.0, 1.0], "{isa:?}: exp at the edges");
        assert!(z[3].is_nan(), "{isa:?}: exp(NaN)");
    }
}

#[test]
fn fast_erf_is_within_six_tenths_of_a_millionth_of_the_true_erf() {
    let x: Vec<f32> = (0..120_001).map(|i| -6.0 + 12.0 * i as f32 / 120_000.0).collect();
    for isa in isas() {
        let mut y = vec![0.0; x.len()];
        math::erf_into(isa, &x, &mut y);
        let worst = x.iter().zip(&y).map(|(&x, &y)| (y as f64 - erf_f64(x as f64)).abs()).fold(0.0, f64::max);
        // A&S 7.1.26 itself is within 1.5e-7; in f32, `1 - t poly(t) exp(-x^2)` near x = 0 is a
        // difference of numbers near 1, which adds a few ulps of 1 (measured: 5.0e-7 portable,
        // 4.4e-7 with FMA, both at |x| ~ 0.2).
        assert!(worst < 6e-7, "{isa:?}: erf absolute error {worst:e}");
    }
}

// ---------------------------------------------------------------------------------------------
// elementwise.rs, adamw.rs

#[test]
fn binary_ops_with_every_broadcast_equal_the_reference_bit_for_bit() {
    let mut rng = Rng::new(1);
    for &n in &LENGTHS {
        // y repeating with period n (same length), a row, a table, and a scalar.
        let periods: Vec<usize> = [n, 1, 7.min(n), 65, 128].into_iter().filter(|&p| p <= n && n % p == 0).collect();
        for p in periods {
            let x = wide_values(n, -20.0, 20.0, &mut rng);
            let mut y = wide_values(p, -20.0, 20.0, &mut rng);
            y[0] = 0.0; // a division by zero among the values
            for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
                let want = reference::binary(op, &x, &y);
                for (isa, got) in run_everywhere("binary", || {
                    let mut out = vec![f32::NAN; n];
                    elementwise::binary(op, &x, &y, &mut out[..]);
                    out
                }) {
                    assert_same_bits(&got, &want, &format!("{op:?} {n} by {p} ({isa:?})"));
                }
            }
        }
    }
}

#[test]
fn simple_unary_ops_equal_the_reference_bit_for_bit() {
    let mut rng = Rng::new(2);
    for &n in &LENGTHS {
        let x = wide_values(n, -20.0, 20.0, &mut rng);
        let pos: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        for (op, x) in
            [(UnaryOp::Scale(-0.37), &x), (UnaryOp::AddScalar(1e-3), &x), (UnaryOp::Square, &x), (UnaryOp::Sqrt, &pos)]
        {
            let want = reference::unary(op, x);
            for (isa, got) in run_everywhere("unary", || {
                let mut out = vec![f32::NAN; n];
                elementwise::unary(op, x, &mut out[..]);
                out
            }) {
                assert_same_bits(&got, &want, &format!("{op:?} of {n} ({isa:?})"));
            }
        }
    }
}

/// Inputs for GELU: the interesting range, and far tails in both directions.
fn gelu_inputs(n: usize, rng: &mut Rng) -> Vec<f32> {
    let mut x = uniform_values(n, -8.0, 8.0, rng);
    let wide = wide_values(n, -30.0, 1.5, rng);
    for (i, v) in x.iter_mut().enumerate() {
        if i % 3 == 0 {
            *v = wide[i];
        }
    }
    x
}

#[test]
fn gelu_matches_the_reference_to_a_few_ulps() {
    let mut rng = Rng::new(3);
    for &n in &LENGTHS {
        let x = gelu_inputs(n, &mut rng);
        let want = reference::unary(UnaryOp::Gelu, &x);
        for (isa, got) in run_everywhere("gelu", || {
            let mut out = vec![f32::NAN; n];
            elementwise::unary(UnaryOp::Gelu, &x, &mut out[..]);
            out
        }) {
            // In the negative tail Phi(x) ~ phi(x) / |x| has condition number ~x^2: the rounding of
            // x^2 / 2 alone moves it by ~x^2 u relative. And the reference forms 1 + erf in f64,
            // which there loses relative accuracy (an absolute error of ~1e-16 |x|).
            let atol = |i: usize| {
                let x = x[i].abs() as f64;
                2e-16 * x + 8.0 * U * x * x * want[i].abs() as f64
            };
            assert_within(&got, &want, atol, 2e-6, &format!("gelu of {n} ({isa:?})"));
        }
    }
}

#[test]
fn gelu_backward_matches_the_reference() {
    let mut rng = Rng::new(4);
    for &n in &LENGTHS {
        let x = gelu_inputs(n, &mut rng);
        let dy = wide_values(n, -3.0, 3.0, &mut rng);
        let want = reference::gelu_backward(&x, &dy);
        for (isa, got) in run_everywhere("gelu_backward", || {
            let mut out = vec![f32::NAN; n];
            elementwise::gelu_backward(&x, &dy, &mut out[..]);
            out
        }) {
            assert_within(&got, &want, |i| 1e-6 * dy[i].abs() as f64, 2e-6, &format!("gelu' of {n} ({isa:?})"));
        }
    }
}

#[test]
fn adamw_equals_the_reference_bit_for_bit() {
    let mut rng = Rng::new(5);
    for &n in &LENGTHS {
        let p0 = wide_values(n, -3.0, 1.0, &mut rng);
        let g = wide_values(n, -6.0, 1.0, &mut rng);
        let m0 = wide_values(n, -6.0, 0.0, &mut rng);
        let v0: Vec<f32> = wide_values(n, -9.0, 0.0, &mut rng).iter().map(|v| v.abs()).collect();
        let spec = engine::backend::AdamWSpec {
            lr: 1.5e-4,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.05,
            bias_correction1: 1.0 - 0.9f32.powi(3),
            bias_correction2: 1.0 - 0.95f32.powi(3),
            grad_scale: 0.5,
        };
        let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
        reference::adamw_step(&mut p, &g, &mut m, &mut v, &spec);
        for (isa, got) in run_everywhere("adamw", || {
            let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
            adamw::adamw_step(&mut p, &g, &mut m, &mut v, &spec);
            (p, m, v)
        }) {
            let what = format!("adamw of {n} ({isa:?})");
            assert_same_bits(&got.0, &p, &what);
            assert_same_bits(&got.1, &m, &what);
            assert_same_bits(&got.2, &v, &what);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// reduce.rs

/// The tolerance of an f32 sum of `n` terms whose magnitudes add up to `magnitude` (see the top).
fn sum_tolerance(n: usize, magnitude: f64) -> f64 {
    4.0 * ((n + 2) as f64).sqrt() * U * magnitude
}

#[test]
fn sum_axis_matches_the_reference_for_column_sums_row_sums_and_totals() {
    let mut rng = Rng::new(6);
    let shapes = [
        (1, 1, 1),
        (1, 137, 1),
        (3, 5000, 1),
        (1, 100_003, 1),
        (1, 45, 65),
        (1, 3328, 384),
        (2, 137, 7),
        (5, 33, 1100),
        (1, 2, 70_001),
        (4, 1, 9),
        (3, 0, 5),
    ];
    for (outer, axis, inner) in shapes {
        let spec = AxisSpec { outer, axis, inner };
        let x = wide_values(outer * axis * inner, -3.0, 3.0, &mut rng);
        let want = reference::sum_axis(&x, &spec);
        let abs: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        let magnitude = reference::sum_axis(&abs, &spec);
        for (isa, got) in run_everywhere("sum_axis", || {
            let mut out = vec![f32::NAN; outer * inner];
            reduce::sum_axis(&x, &spec, &mut out);
            out
        }) {
            let atol = |i: usize| sum_tolerance(axis, magnitude[i] as f64);
            assert_within(&got, &want, atol, 2.0 * U, &format!("sum_axis {spec:?} ({isa:?})"));
        }
    }
}

#[test]
fn broadcast_axis_equals_the_reference() {
    let mut rng = Rng::new(7);
    for (outer, axis, inner) in [(1, 1, 1), (1, 3328, 128), (3, 7, 65), (2, 4097, 1), (5, 0, 3)] {
        let spec = AxisSpec { outer, axis, inner };
        let x = wide_values(outer * inner, -3.0, 3.0, &mut rng);
        let want = reference::broadcast_axis(&x, &spec);
        for (isa, got) in run_everywhere("broadcast_axis", || {
            let mut out = vec![f32::NAN; outer * axis * inner];
            reduce::broadcast_axis(&x, &spec, &mut out[..]);
            out
        }) {
            assert_same_bits(&got, &want, &format!("broadcast_axis {spec:?} ({isa:?})"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// layernorm.rs

const LN_SHAPES: [(usize, usize); 8] =
    [(1, 1), (1, 7), (137, 64), (45, 65), (33, 128), (100, 129), (3328, 128), (2, 1000)];

/// Rows of very different scales and offsets (up to 100 standard deviations from 0).
fn ln_inputs(rows: usize, cols: usize, rng: &mut Rng) -> Vec<f32> {
    let mut x = Vec::with_capacity(rows * cols);
    for _ in 0..rows {
        let scale = 10f32.powf(rng.uniform_range(-3.0, 3.0));
        let offset = scale * rng.uniform_range(-100.0, 100.0);
        x.extend((0..cols).map(|_| offset + scale * rng.normal()));
    }
    x
}

#[test]
fn layernorm_matches_the_reference() {
    let mut rng = Rng::new(8);
    let eps = 1e-6;
    for (rows, cols) in LN_SHAPES {
        let x = ln_inputs(rows, cols, &mut rng);
        let gamma = wide_values(cols, -2.0, 1.0, &mut rng);
        let beta = wide_values(cols, -2.0, 1.0, &mut rng);
        let (y, mean, rstd) = reference::layernorm(&x, &gamma, &beta, rows, cols, eps);
        for (isa, got) in run_everywhere("layernorm", || {
            let (mut y, mut m, mut r) = (vec![f32::NAN; rows * cols], vec![f32::NAN; rows], vec![f32::NAN; rows]);
            layernorm::layernorm(&x, &gamma, &beta, eps, &mut y[..], &mut m[..], &mut r[..]);
            (y, m, r)
        }) {
            let what = format!("layernorm {rows}x{cols} ({isa:?})");
            let slack = 4.0 * ((cols + 2) as f64).sqrt() * U;
            let mean_abs: Vec<f64> =
                x.chunks(cols).map(|r| r.iter().map(|v| v.abs() as f64).sum::<f64>() / cols as f64).collect();
            assert_within(&got.1, &mean, |r| slack * mean_abs[r], 0.0, &format!("{what} mean"));
            assert_within(&got.2, &rstd, |_| 0.0, slack, &format!("{what} rstd"));
            let atol = |i: usize| {
                let (r, c) = (i / cols, i % cols);
                let rs = rstd[r] as f64;
                let xhat = (x[i] as f64 - mean[r] as f64) * rs;
                let g = gamma[c].abs() as f64;
                slack * (mean_abs[r] * rs * g + xhat.abs() * g + beta[c].abs() as f64)
            };
            assert_within(&got.0, &y, atol, 0.0, &format!("{what} y"));
        }
    }
}

#[test]
fn add_layernorm_is_the_add_then_the_layernorm_bit_for_bit_and_matches_the_reference() {
    let mut rng = Rng::new(18);
    let eps = 1e-6;
    for (rows, cols) in LN_SHAPES {
        let x = ln_inputs(rows, cols, &mut rng);
        let res = ln_inputs(rows, cols, &mut rng);
        let gamma = wide_values(cols, -2.0, 1.0, &mut rng);
        let beta = wide_values(cols, -2.0, 1.0, &mut rng);
        let (s_ref, y_ref, _, _) = reference::add_layernorm(&x, &res, &gamma, &beta, rows, cols, eps);
        for (isa, (s, y, m, r)) in run_everywhere("add_layernorm", || {
            let n = rows * cols;
            let (mut s, mut y, mut m, mut r) =
                (vec![f32::NAN; n], vec![f32::NAN; n], vec![f32::NAN; rows], vec![f32::NAN; rows]);
            layernorm::add_layernorm(&x, &res, &gamma, &beta, eps, &mut s[..], &mut y[..], &mut m[..], &mut r[..]);
            (s, y, m, r)
        }) {
            let what = format!("add_layernorm {rows}x{cols} ({isa:?})");
            let sum: Vec<f32> = x.iter().zip(&res).map(|(a, b)| a + b).collect();
            let (mut y2, mut m2, mut r2) = (vec![0.0; rows * cols], vec![0.0; rows], vec![0.0; rows]);
            with_isa(isa, || layernorm::layernorm(&sum, &gamma, &beta, eps, &mut y2[..], &mut m2[..], &mut r2[..]));
            assert_eq!(s, sum, "{what}: s");
            assert_eq!(s, s_ref, "{what}: s against the reference");
            assert!(
                y.iter().zip(&y2).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{what}: y differs from the unfused pair"
            );
            assert!(m == m2 && r == r2, "{what}: mean / rstd differ from the unfused pair");
            let scale = |i: usize| (y_ref[i].abs() + beta[i % cols].abs() + gamma[i % cols].abs()) as f64;
            assert_within(&y, &y_ref, |i| 1e-3 * scale(i), 0.0, &format!("{what}: y against the reference"));
        }
    }
}

#[test]
fn layernorm_backward_adds_the_accumulated_gradient_as_a_separate_add_would() {
    let mut rng = Rng::new(19);
    for (rows, cols) in LN_SHAPES {
        let x = ln_inputs(rows, cols, &mut rng);
        let gamma = wide_values(cols, -2.0, 1.0, &mut rng);
        let dy = wide_values(rows * cols, -3.0, 3.0, &mut rng);
        let acc = wide_values(rows * cols, -3.0, 3.0, &mut rng);
        let (_, mean, rstd) = reference::layernorm(&x, &gamma, &vec![0.0; cols], rows, cols, 1e-6);
        for (isa, (dx, dx_acc, dg, dg_acc)) in run_everywhere("layernorm_backward with acc", || {
            let n = rows * cols;
            let (mut dx, mut dx_acc) = (vec![f32::NAN; n], vec![f32::NAN; n]);
            let (mut dg, mut db, mut dg_acc, mut db_acc) =
                (vec![0.0; cols], vec![0.0; cols], vec![0.0; cols], vec![0.0; cols]);
            layernorm::layernorm_backward(&x, &gamma, &mean, &rstd, &dy, None, &mut dx[..], &mut dg, &mut db);
            layernorm::layernorm_backward(
                &x,
                &gamma,
                &mean,
                &rstd,
                &dy,
                Some(&acc),
                &mut dx_acc[..],
                &mut dg_acc,
                &mut db_acc,
            );
            (dx, dx_acc, dg, dg_acc)
        }) {
            let added: Vec<f32> = acc.iter().zip(&dx).map(|(a, d)| a + d).collect();
            assert!(
                dx_acc.iter().zip(&added).all(|(a, b)| a.to_bits() == b.to_bits()),
                "layernorm_backward {rows}x{cols} ({isa:?}): acc + dx differs from the separate add"
            );
            assert_eq!(dg, dg_acc, "the parameter gradients do not depend on acc");
        }
    }
}

#[test]
fn layernorm_backward_matches_the_reference() {
    let mut rng = Rng::new(9);
    let eps = 1e-6;
    for (rows, cols) in LN_SHAPES {
        let x = ln_inputs(rows, cols, &mut rng);
        let gamma = wide_values(cols, -2.0, 1.0, &mut rng);
        let beta = vec![0.0; cols];
        let dy = wide_values(rows * cols, -3.0, 3.0, &mut rng);
        let (_, mean, rstd) = reference::layernorm(&x, &gamma, &beta, rows, cols, eps);
        let (dx, dgamma, dbeta) = reference::layernorm_backward(&x, &gamma, &mean, &rstd, &dy, rows, cols);
        for (isa, got) in run_everywhere("layernorm_backward", || {
            let (mut dx, mut dg, mut db) = (vec![f32::NAN; rows * cols], vec![f32::NAN; cols], vec![f32::NAN; cols]);
            layernorm::layernorm_backward(&x, &gamma, &mean, &rstd, &dy, None, &mut dx[..], &mut dg, &mut db);
            (dx, dg, db)
        }) {
            let what = format!("layernorm_backward {rows}x{cols} ({isa:?})");
            let xhat = |i: usize| (x[i] as f64 - mean[i / cols] as f64) * rstd[i / cols] as f64;
            let g = |i: usize| dy[i] as f64 * gamma[i % cols] as f64;
            // Per row: mean |g| and mean |g xhat|, the magnitudes of the two row sums.
            let row_g: Vec<f64> =
                (0..rows).map(|r| (0..cols).map(|c| g(r * cols + c).abs()).sum::<f64>() / cols as f64).collect();
            let row_gx: Vec<f64> = (0..rows)
                .map(|r| (0..cols).map(|c| (g(r * cols + c) * xhat(r * cols + c)).abs()).sum::<f64>() / cols as f64)
                .collect();
            let slack = 4.0 * ((cols + 2) as f64).sqrt() * U;
            let atol = |i: usize| {
                let r = i / cols;
                slack * rstd[r] as f64 * (g(i).abs() + row_g[r] + xhat(i).abs() * row_gx[r])
            };
            assert_within(&got.0, &dx, atol, 0.0, &format!("{what} dx"));
            let mag_g: Vec<f64> = (0..cols)
                .map(|c| (0..rows).map(|r| (dy[r * cols + c] as f64 * xhat(r * cols + c)).abs()).sum())
                .collect();
            let mag_b: Vec<f64> = (0..cols).map(|c| (0..rows).map(|r| dy[r * cols + c].abs() as f64).sum()).collect();
            assert_within(
                &got.1,
                &dgamma,
                |c| sum_tolerance(rows, mag_g[c]) + slack * mag_g[c],
                2.0 * U,
                &format!("{what} dgamma"),
            );
            assert_within(&got.2, &dbeta, |c| sum_tolerance(rows, mag_b[c]), 2.0 * U, &format!("{what} dbeta"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// small_gemm.rs

#[test]
fn small_gemm_matches_an_f64_product_for_both_layouts_of_a_and_every_edge() {
    let mut rng = Rng::new(12);
    let shapes = [
        (1, 1, 1),
        (7, 9, 5),
        (13, 16, 32),
        (13, 13, 13),
        (65, 72, 16),
        (65, 16, 65),
        (6, 17, 3),
        (11, 40, 70),
        (5, 8, 0),
        // The AVX-512 tiles: 8 x 32 and 8 x 16 with row and column tails.
        (17, 200, 32),
        (25, 32, 197),
        (9, 48, 33),
    ];
    for (m, n, k) in shapes {
        for col_major in [false, true] {
            // A with a leading dimension larger than needed, B and C with padded rows.
            let (lda, ldb, ldc) = if col_major { (m + 3, n + 2, n + 1) } else { (k + 3, n + 2, n + 1) };
            let a = wide_values(if col_major { k.max(1) * lda } else { m * lda }, -3.0, 3.0, &mut rng);
            let b = wide_values(k.max(1) * ldb, -3.0, 3.0, &mut rng);
            let layout = if col_major { Layout::ColMajor(lda) } else { Layout::RowMajor(lda) };
            let at = |i: usize, p: usize| if col_major { a[p * lda + i] } else { a[i * lda + p] } as f64;
            let alpha = -0.7f32;
            let (mut want, mut tol) = (vec![0.0f32; m * ldc], vec![0.0f64; m * ldc]);
            for i in 0..m {
                for j in 0..n {
                    let dot: f64 = (0..k).map(|p| at(i, p) * b[p * ldb + j] as f64).sum();
                    let mag: f64 = (0..k).map(|p| (at(i, p) * b[p * ldb + j] as f64).abs()).sum();
                    want[i * ldc + j] = (alpha as f64 * dot) as f32;
                    tol[i * ldc + j] = sum_tolerance(k, mag * alpha.abs() as f64);
                }
            }
            for (isa, got) in run_everywhere("small gemm", || {
                // The padding of C must stay untouched: fill it with 0 as `want` has.
                let mut c = vec![0.0f32; m * ldc];
                for i in 0..m {
                    c[i * ldc..i * ldc + n].fill(f32::NAN);
                }
                small_gemm::gemm_kernel(Isa::current(), m, n, k, alpha, &a, layout, &b, ldb, &mut c, ldc);
                c
            }) {
                let what = format!("small gemm {m}x{n}x{k} {layout:?} ({isa:?})");
                assert_within(&got, &want, |i| tol[i], 2.0 * U, &what);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// attention.rs
//
// The tolerances follow the error through each step (see the top for the sums): a score
// `s = scale q.k` carries `es ~ 4 sqrt(d + 2) u scale sum|q||k|`; a softmax probability then has a
// relative error up to `2 max_j es_ij` (its own score and the normaliser) plus a few u for exp and
// the division; products with V (or dO, K, Q) add a sum of `seq` terms. Each bound is computed per
// element in f64 from the inputs, so large scores (peaky softmax) get the looser bounds they need
// and small ones stay tight.

const ATTENTION_SHAPES: [(usize, usize); 11] =
    [(1, 16), (13, 32), (17, 16), (50, 16), (65, 16), (13, 64), (197, 64), (17, 7), (50, 20), (2, 1), (9, 33)];

struct Head64 {
    /// Probabilities `[t, t]` in f64.
    p: Vec<f64>,
    /// The bound `es` of each score.
    es: Vec<f64>,
}

fn head64(q: &[f32], k: &[f32], t: usize, d: usize, scale: f32) -> Head64 {
    let (mut s, mut es) = (vec![0.0f64; t * t], vec![0.0f64; t * t]);
    let slack = 4.0 * ((d + 2) as f64).sqrt() * U;
    for i in 0..t {
        for j in 0..t {
            let (mut dot, mut mag) = (0.0f64, 0.0f64);
            for c in 0..d {
                dot += q[i * d + c] as f64 * k[j * d + c] as f64;
                mag += (q[i * d + c] as f64 * k[j * d + c] as f64).abs();
            }
            s[i * t + j] = dot * scale as f64;
            es[i * t + j] = slack * mag * scale as f64 + 2.0 * U * (dot * scale as f64).abs();
        }
    }
    let mut p = s;
    for row in p.chunks_mut(t) {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
        for v in row.iter_mut() {
            *v = (*v - max).exp() / sum;
        }
    }
    Head64 { p, es }
}

/// q, k with a different scale per head (scores from ~0.01 to ~100), v and dout over wide ranges.
fn attention_inputs(heads: usize, t: usize, d: usize, rng: &mut Rng) -> [Vec<f32>; 4] {
    let qk = |rng: &mut Rng| -> Vec<f32> {
        let mut x = Vec::with_capacity(heads * t * d);
        for _ in 0..heads {
            let scale = 10f32.powf(rng.uniform_range(-1.0, 0.7));
            x.extend((0..t * d).map(|_| scale * rng.normal()));
        }
        x
    };
    let q = qk(rng);
    let k = qk(rng);
    [q, k, wide_values(heads * t * d, -3.0, 3.0, rng), wide_values(heads * t * d, -3.0, 3.0, rng)]
}

#[test]
fn attention_matches_the_reference_on_uneven_sequences_and_head_dims() {
    let mut rng = Rng::new(10);
    let heads = 3;
    for (t, d) in ATTENTION_SHAPES {
        let spec = AttentionSpec { heads, seq: t, dim: d, scale: 1.0 / (d as f32).sqrt() };
        let [q, k, v, _] = attention_inputs(heads, t, d, &mut rng);
        let (want, want_lse) = reference::attention(&q, &k, &v, &spec);
        let (mut atol_o, mut atol_l) = (vec![0.0f64; heads * t * d], vec![0.0f64; heads * t]);
        let sum_slack = 8.0 * ((t + 2) as f64).sqrt() * U + 8.0 * U;
        for h in 0..heads {
            let o = h * t * d;
            let hd = head64(&q[o..o + t * d], &k[o..o + t * d], t, d, spec.scale);
            for i in 0..t {
                let e = hd.es[i * t..(i + 1) * t].iter().copied().fold(0.0, f64::max);
                atol_l[h * t + i] = e + sum_slack;
                for c in 0..d {
                    let mag: f64 = (0..t).map(|j| hd.p[i * t + j] * (v[o + j * d + c] as f64).abs()).sum();
                    atol_o[o + i * d + c] = (2.0 * e + sum_slack) * mag;
                }
            }
        }
        for (isa, (out, lse)) in run_everywhere("attention", || {
            let (mut out, mut lse) = (vec![f32::NAN; heads * t * d], vec![f32::NAN; heads * t]);
            attention::attention(&q, &k, &v, &spec, &mut out[..], &mut lse[..]);
            (out, lse)
        }) {
            let what = format!("attention seq {t} dim {d} ({isa:?})");
            assert_within(&out, &want, |i| atol_o[i], 2.0 * U, &format!("{what} out"));
            assert_within(&lse, &want_lse, |i| atol_l[i], 2.0 * U, &format!("{what} lse"));
        }
    }
}

#[test]
fn attention_backward_matches_the_reference_on_uneven_sequences_and_head_dims() {
    let mut rng = Rng::new(11);
    let heads = 3;
    for (t, d) in ATTENTION_SHAPES {
        let spec = AttentionSpec { heads, seq: t, dim: d, scale: 1.0 / (d as f32).sqrt() };
        let [q, k, v, dout] = attention_inputs(heads, t, d, &mut rng);
        let (out, lse) = reference::attention(&q, &k, &v, &spec);
        let (want_q, want_k, want_v) = reference::attention_backward(&q, &k, &v, &out, &dout, &spec);
        let n = heads * t * d;
        let (mut tol_q, mut tol_k, mut tol_v) = (vec![0.0f64; n], vec![0.0f64; n], vec![0.0f64; n]);
        let (sd, st) = (4.0 * ((d + 2) as f64).sqrt() * U, 4.0 * ((t + 2) as f64).sqrt() * U);
        let scale = spec.scale as f64;
        for h in 0..heads {
            let o = h * t * d;
            let at = |x: &[f32], r: usize, c: usize| x[o + r * d + c] as f64;
            let hd = head64(&q[o..o + t * d], &k[o..o + t * d], t, d, spec.scale);
            // Relative error of each recomputed P, and the error and value of each dS.
            let mut ds = vec![0.0f64; t * t];
            let mut err_ds = vec![0.0f64; t * t];
            let mut eps_p = vec![0.0f64; t * t];
            for i in 0..t {
                let delta: f64 = (0..d).map(|c| at(&dout, i, c) * at(&out, i, c)).sum();
                let err_delta: f64 = sd * (0..d).map(|c| (at(&dout, i, c) * at(&out, i, c)).abs()).sum::<f64>();
                for j in 0..t {
                    let dp: f64 = (0..d).map(|c| at(&dout, i, c) * at(&v, j, c)).sum();
                    let err_dp: f64 = sd * (0..d).map(|c| (at(&dout, i, c) * at(&v, j, c)).abs()).sum::<f64>();
                    let eps = hd.es[i * t + j] + 2.0 * U * (lse[h * t + i] as f64).abs() + 8.0 * U;
                    let p = hd.p[i * t + j];
                    eps_p[i * t + j] = eps;
                    ds[i * t + j] = p * (dp - delta);
                    err_ds[i * t + j] =
                        p * (eps * (dp - delta).abs() + err_dp + err_delta + 2.0 * U * (dp.abs() + delta.abs()));
                }
            }
            for r in 0..t {
                for c in 0..d {
                    tol_v[o + r * d + c] =
                        (0..t).map(|i| hd.p[i * t + r] * at(&dout, i, c).abs() * (eps_p[i * t + r] + st)).sum();
                    tol_q[o + r * d + c] = scale
                        * (0..t)
                            .map(|j| err_ds[r * t + j] * at(&k, j, c).abs() + st * (ds[r * t + j] * at(&k, j, c)).abs())
                            .sum::<f64>();
                    tol_k[o + r * d + c] = scale
                        * (0..t)
                            .map(|i| err_ds[i * t + r] * at(&q, i, c).abs() + st * (ds[i * t + r] * at(&q, i, c)).abs())
                            .sum::<f64>();
                }
            }
        }
        for (isa, (dq, dk, dv)) in run_everywhere("attention_backward", || {
            let (mut dq, mut dk, mut dv) = (vec![f32::NAN; n], vec![f32::NAN; n], vec![f32::NAN; n]);
            attention::attention_backward(&q, &k, &v, &out, &lse, &dout, &spec, &mut dq[..], &mut dk[..], &mut dv[..]);
            (dq, dk, dv)
        }) {
            let what = format!("attention_backward seq {t} dim {d} ({isa:?})");
            assert_within(&dq, &want_q, |i| tol_q[i], 2.0 * U, &format!("{what} dq"));
            assert_within(&dk, &want_k, |i| tol_k[i], 2.0 * U, &format!("{what} dk"));
            assert_within(&dv, &want_v, |i| tol_v[i], 2.0 * U, &format!("{what} dv"));
        }
    }
}

#[test]
fn packed_qkv_attention_gives_the_bits_of_the_separate_heads() {
    // The packed path runs the same per-head arithmetic as the separate one (checked against the
    // reference above), only addressed in place: every value must be identical.
    let mut rng = Rng::new(12);
    let (n, h) = (2, 3);
    for (t, d) in ATTENTION_SHAPES {
        let spec = AttentionSpec { heads: n * h, seq: t, dim: d, scale: 1.0 / (d as f32).sqrt() };
        let len = n * t * h * d;
        let qkv = uniform_values(3 * len, -2.0, 2.0, &mut rng);
        let dout_merged = wide_values(len, -2.0, 2.0, &mut rng);
        let merged = HeadLayout::merged(t, h, d);
        let part = |w| reference::gather_heads(&qkv, &HeadLayout::qkv(t, h, d, w), &spec);
        let (q, k, v) = (part(0), part(1), part(2));
        let packed = run_everywhere("attention_qkv", || {
            let (mut op, mut lsep) = (vec![f32::NAN; len], vec![f32::NAN; n * h * t]);
            attention::attention_qkv(&qkv, h, &spec, &mut op[..], &mut lsep[..]);
            let mut dqkv = vec![f32::NAN; 3 * len];
            attention::attention_qkv_backward(&qkv, &op, &lsep, &dout_merged, h, &spec, &mut dqkv[..]);
            (op, lsep, dqkv)
        });
        for (isa, (op, lsep, dqkv)) in packed {
            with_isa(isa, || {
                let (mut o, mut lse) = (vec![f32::NAN; len], vec![f32::NAN; n * h * t]);
                attention::attention(&q, &k, &v, &spec, &mut o[..], &mut lse[..]);
                assert_eq!(reference::gather_heads(&op, &merged, &spec), o, "out, seq {t} dim {d} ({isa:?})");
                assert_eq!(lsep, lse, "lse, seq {t} dim {d} ({isa:?})");
                let dout = reference::gather_heads(&dout_merged, &merged, &spec);
                let (mut dq, mut dk, mut dv) = (vec![f32::NAN; len], vec![f32::NAN; len], vec![f32::NAN; len]);
                attention::attention_backward(
                    &q,
                    &k,
                    &v,
                    &o,
                    &lse,
                    &dout,
                    &spec,
                    &mut dq[..],
                    &mut dk[..],
                    &mut dv[..],
                );
                for (w, want) in [dq, dk, dv].iter().enumerate() {
                    let got = reference::gather_heads(&dqkv, &HeadLayout::qkv(t, h, d, w), &spec);
                    assert_eq!(&got, want, "gradient part {w}, seq {t} dim {d} ({isa:?})");
                }
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// permute.rs, rows.rs: copies, so bit-exact

#[test]
fn permute_equals_the_reference_for_the_attention_layouts_and_odd_ones() {
    let mut rng = Rng::new(13);
    let cases: [(&[usize], &[usize]); 9] = [
        (&[7, 13, 3, 4, 32], &[2, 0, 3, 1, 4]),
        (&[3, 7, 4, 13, 16], &[1, 2, 0, 3, 4]),
        (&[7, 4, 13, 32], &[0, 2, 1, 3]),
        (&[5, 17, 3, 2, 1], &[2, 0, 4, 3, 1]),
        (&[45, 65], &[1, 0]),
        (&[1, 1, 9], &[2, 1, 0]),
        (&[2, 3, 4, 5, 6, 7], &[5, 4, 3, 2, 1, 0]),
        (&[137], &[0]),
        (&[3, 0, 2], &[2, 1, 0]),
    ];
    for (shape, perm) in cases {
        let x = wide_values(shape.iter().product(), -3.0, 3.0, &mut rng);
        let want = reference::permute(&x, shape, perm);
        for (isa, got) in run_everywhere("permute", || {
            let mut out = vec![f32::NAN; x.len()];
            permute::permute(&x, shape, perm, &mut out[..]);
            out
        }) {
            assert_same_bits(&got, &want, &format!("permute {shape:?} by {perm:?} ({isa:?})"));
        }
    }
}

#[test]
fn copy_rows_into_equals_the_reference_and_leaves_other_rows_alone() {
    let mut rng = Rng::new(14);
    let specs = [
        CopyRowsSpec { batch: 7, rows: 13, width: 32, src_rows: 13, src_offset: 0, dst_rows: 14, dst_offset: 1 },
        CopyRowsSpec { batch: 3, rows: 1, width: 65, src_rows: 50, src_offset: 0, dst_rows: 1, dst_offset: 0 },
        CopyRowsSpec { batch: 5, rows: 37, width: 7, src_rows: 65, src_offset: 28, dst_rows: 40, dst_offset: 3 },
        CopyRowsSpec { batch: 1, rows: 0, width: 4, src_rows: 2, src_offset: 2, dst_rows: 2, dst_offset: 0 },
    ];
    for s in specs {
        let src = wide_values(s.batch * s.src_rows * s.width, -3.0, 3.0, &mut rng);
        let dst0 = wide_values(s.batch * s.dst_rows * s.width, -3.0, 3.0, &mut rng);
        let mut want = dst0.clone();
        reference::copy_rows_into(&src, &mut want, &s);
        for (isa, got) in run_everywhere("copy_rows_into", || {
            let mut dst = dst0.clone();
            rows::copy_rows_into(&src, &mut dst, &s);
            dst
        }) {
            assert_same_bits(&got, &want, &format!("copy_rows_into {s:?} ({isa:?})"));
        }
    }
}

#[test]
fn gather_and_scatter_add_rows_equal_the_reference_with_repeated_indices_and_a_fill_row() {
    let mut rng = Rng::new(15);
    for (batch, rows_, picks, width) in [(7, 64, 16, 128), (3, 17, 17, 7), (5, 9, 20, 33), (1, 1, 3, 1), (2, 5, 0, 4)] {
        let s = GatherSpec { batch, rows: rows_, picks, width };
        let x = wide_values(batch * rows_ * width, -3.0, 3.0, &mut rng);
        let dy = wide_values(batch * picks * width, -3.0, 3.0, &mut rng);
        let fill = wide_values(width, -3.0, 3.0, &mut rng);
        // Random indices, so some repeat (the scatter must add them in order); with a fill, some
        // picks are the fill's (index rows), which the scatter leaves out.
        for with_fill in [false, true] {
            let bound = rows_ + usize::from(with_fill);
            let idx: Vec<u32> = (0..batch * picks).map(|_| rng.below(bound) as u32).collect();
            let fill = with_fill.then_some(&fill[..]);
            let want_g = reference::gather_rows(&x, fill, &idx, &s);
            let want_s = reference::scatter_add_rows(&dy, &idx, &s);
            let want_f = reference::sum_fill_rows(&dy, &idx, &s);
            for (isa, (g, sc, f)) in run_everywhere("gather/scatter", || {
                let (mut g, mut sc) = (vec![f32::NAN; batch * picks * width], vec![f32::NAN; batch * rows_ * width]);
                let mut f = vec![f32::NAN; width];
                rows::gather_rows(&x, fill, &idx, &s, &mut g[..]);
                rows::scatter_add_rows(&dy, &idx, &s, &mut sc[..]);
                rows::sum_fill_rows(&dy, &idx, &s, &mut f[..]);
                (g, sc, f)
            }) {
                let what = format!("{s:?}, fill {with_fill} ({isa:?})");
                assert_same_bits(&g, &want_g, &format!("gather_rows {what}"));
                assert_same_bits(&sc, &want_s, &format!("scatter_add_rows {what}"));
                // The fill's gradient adds in f32, the reference in f64.
                let magnitude = |c: usize| (0..batch * picks).map(|r| dy[r * width + c].abs() as f64).sum::<f64>();
                let tol = |c: usize| sum_tolerance(batch * picks, magnitude(c));
                assert_within(&f, &want_f, tol, 0.0, &format!("sum_fill_rows {what}"));
                if !with_fill {
                    assert!(f.iter().all(|&v| v == 0.0), "no pick is the fill's: zeros ({what})");
                }
            }
        }
    }
}

#[test]
fn mae_loss_its_mean_and_its_backward_match_the_reference() {
    let mut rng = Rng::new(16);
    for (rows_, patch) in [(1, 2), (137, 48), (64, 49), (300, 7), (3, 16)] {
        for norm_pix in [false, true] {
            let s = MaeLossSpec { rows: rows_, patch, norm_pix };
            // Targets with an offset per patch (the norm-pix mean matters), predictions near them.
            let mut target = Vec::with_capacity(rows_ * patch);
            for _ in 0..rows_ {
                let (offset, scale) = (rng.uniform_range(-5.0, 5.0), 10f32.powf(rng.uniform_range(-2.0, 1.0)));
                target.extend((0..patch).map(|_| offset + scale * rng.normal()));
            }
            let pred = wide_values(rows_ * patch, -2.0, 1.0, &mut rng);
            let mask: Vec<f32> = (0..rows_).map(|r| (r % 4 != 0) as u32 as f32).collect();
            // The gradient of each row's loss (the mean's, over the count).
            let scale = wide_values(1, -3.0, 0.0, &mut rng)[0];
            let want_l = reference::mae_loss_rows(&pred, &target, &mask, &s);
            let want_d = reference::mae_loss_backward(&pred, &target, &mask, scale, &s);
            // The bounds, from f64 targets.
            let slack = 4.0 * ((patch + 2) as f64).sqrt() * U;
            let (mut tol_l, mut tol_d) = (vec![0.0f64; rows_], vec![0.0f64; rows_ * patch]);
            for r in 0..rows_ {
                let tr = &target[r * patch..(r + 1) * patch];
                let t = reference::loss_target(tr, norm_pix);
                let mean_abs = tr.iter().map(|v| v.abs() as f64).sum::<f64>() / patch as f64;
                // 1 / std of the patch, which scales the error of its mean.
                let inv = if norm_pix {
                    let mean = tr.iter().map(|&v| v as f64).sum::<f64>() / patch as f64;
                    let var = tr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (patch as f64 - 1.0);
                    1.0 / (var + 1e-6).sqrt()
                } else {
                    0.0
                };
                let mut sum_sq = 0.0;
                let mut cross = 0.0;
                for c in 0..patch {
                    // The error of the normalised target value (none without norm_pix).
                    let e_t = if norm_pix { slack * (t[c].abs() + mean_abs * inv) + 2.0 * U * t[c].abs() } else { 0.0 };
                    let diff = pred[r * patch + c] as f64 - t[c];
                    sum_sq += diff * diff;
                    cross += 2.0 * diff.abs() * e_t;
                    let k = (scale * mask[r]) as f64 * 2.0 / patch as f64;
                    tol_d[r * patch + c] = k.abs() * (e_t + 2.0 * U * (pred[r * patch + c].abs() as f64 + t[c].abs()));
                }
                tol_l[r] = mask[r] as f64 * (slack * sum_sq + cross) / patch as f64;
            }
            // The mean of the reference's row losses: two f32 sums, then a division.
            let (want_mean, want_count) = reference::mae_loss_mean(&want_l, &mask, &s);
            let magnitude = want_l.iter().map(|v| v.abs() as f64).sum::<f64>();
            let tol_mean = (sum_tolerance(rows_, magnitude) / want_count as f64).abs();
            for (isa, (l, d, mean)) in run_everywhere("mae_loss", || {
                let (mut l, mut d) = (vec![f32::NAN; rows_], vec![f32::NAN; rows_ * patch]);
                loss::mae_loss_rows(&pred, &target, &mask, &s, &mut l[..]);
                loss::mae_loss_backward(&pred, &target, &mask, scale, &s, &mut d[..]);
                // As bits: a NaN mean (nothing masked) equals itself across thread counts.
                let (mean, count) = loss::mae_loss_mean(&want_l, &mask, &s);
                (l, d, (mean.to_bits(), count))
            }) {
                let mean = (f32::from_bits(mean.0), mean.1);
                let what = format!("mae loss {s:?} ({isa:?})");
                assert_within(&l, &want_l, |i| tol_l[i], 2.0 * U, &format!("{what} rows"));
                assert_within(&d, &want_d, |i| tol_d[i], 2.0 * U, &format!("{what} backward"));
                assert_eq!(mean.1, want_count, "{what}: the count of masked rows");
                if want_count == 0.0 {
                    assert!(mean.0.is_nan(), "{what}: nothing masked is 0 / 0, got {}", mean.0);
                } else {
                    assert_within(&[mean.0], &[want_mean], |_| tol_mean, 2.0 * U, &format!("{what} mean"));
                }
            }
        }
    }
}

// Cross-entropy: `loss = ln(sum e) - (x_label - max)` with `sum e` a sum of `C` fast exps (each
// within ~2 ulps relative), so `ln(sum e)` is within ~(C + 4) u absolutely and the difference
// adds a rounding of `|x_label - max|` and of the loss; each probability is within ~(C + 4) u
// relative (its exp, the sum, the division) and `|x - max| u` (the rounded argument of its exp),
// plus an absolute floor for those that underflow.

#[test]
fn cross_entropy_matches_the_reference_on_uneven_shapes_and_wide_logits() {
    let mut rng = Rng::new(18);
    for (rows_, classes) in [(1, 137), (45, 10), (512, 10), (7, 1), (33, 1000), (3, 2)] {
        // Rows of very different scales: differences from the row's max up to ~1e3 (exp
        // underflows to 0) and down to ~1e-3 (near-uniform probabilities).
        let mut logits = Vec::with_capacity(rows_ * classes);
        for _ in 0..rows_ {
            let (offset, scale) = (rng.uniform_range(-50.0, 50.0), 10f32.powf(rng.uniform_range(-3.0, 3.0)));
            logits.extend((0..classes).map(|_| offset + scale * rng.normal()));
        }
        let labels: Vec<u32> = (0..rows_).map(|_| rng.below(classes) as u32).collect();
        let (want_l, want_p) = reference::cross_entropy(&logits, &labels, rows_, classes);
        let c = classes as f64;
        let tol_l = |r: usize| {
            let x = &logits[r * classes..(r + 1) * classes];
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let gap = max - x[labels[r] as usize] as f64;
            (c + 4.0) * U * 2.0 + U * gap + 2.0 * U * want_l[r].abs() as f64
        };
        // The argument `x - max` is rounded too: its error scales the probability by `U |x - max|`.
        let tol_p = |i: usize| {
            let x = &logits[(i / classes) * classes..(i / classes + 1) * classes];
            let gap = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64 - logits[i] as f64;
            ((c + 4.0) * 2.0 + gap) * U * want_p[i].abs() as f64 + 1e-37
        };
        for (isa, (l, p)) in run_everywhere("cross_entropy", || {
            let (mut l, mut p) = (vec![f32::NAN; rows_], vec![f32::NAN; rows_ * classes]);
            loss::cross_entropy(&logits, &labels, rows_, classes, &mut l[..], &mut p[..]);
            (l, p)
        }) {
            let what = format!("cross_entropy {rows_}x{classes} ({isa:?})");
            assert_within(&l, &want_l, tol_l, 0.0, &format!("{what} loss"));
            assert_within(&p, &want_p, tol_p, 0.0, &format!("{what} probabilities"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The backend: the same kernels, writing into fresh buffers that are never zeroed beforehand

#[test]
fn cpu_backend_outputs_equal_the_kernels_bit_for_bit_with_uninitialised_buffers() {
    use engine::backend::Backend;
    use engine::cpu::CpuBackend;
    use engine::storage::Storage;
    let be = CpuBackend;
    let mut rng = Rng::new(17);
    let got = |s: &Storage| be.download(s).unwrap();
    // Large enough to be split over threads and into many chunks.
    let n = 3 * 8192 + 77;
    let x = gelu_inputs(n, &mut rng);
    let y = wide_values(n, -3.0, 3.0, &mut rng);
    let (sx, sy) = (be.upload(&x).unwrap(), be.upload(&y).unwrap());
    let mut want = vec![f32::NAN; n];
    elementwise::binary(BinaryOp::Mul, &x, &y, &mut want[..]);
    assert_same_bits(&got(&be.binary(BinaryOp::Mul, &sx, &sy, n, n).unwrap()), &want, "backend binary");
    elementwise::unary(UnaryOp::Gelu, &x, &mut want[..]);
    assert_same_bits(&got(&be.unary(UnaryOp::Gelu, &sx, n).unwrap()), &want, "backend gelu");
    elementwise::gelu_backward(&x, &y, &mut want[..]);
    assert_same_bits(&got(&be.gelu_backward(&sx, &sy, n).unwrap()), &want, "backend gelu_backward");
    assert_same_bits(&got(&be.full(n, -2.5).unwrap()), &vec![-2.5; n], "backend full");
    assert_same_bits(&got(&be.full(n, 0.0).unwrap()), &vec![0.0; n], "backend zeros");
    assert_same_bits(&got(&be.copy(&sx).unwrap()), &x, "backend copy");
    // Attention and LayerNorm (outputs split by heads and rows).
    let (heads, t, d) = (64, 17, 16);
    let spec = AttentionSpec { heads, seq: t, dim: d, scale: 0.25 };
    let [q, k, v, dout] = attention_inputs(heads, t, d, &mut rng);
    let up = |x: &[f32]| be.upload(x).unwrap();
    let (o, l) = be.attention(&up(&q), &up(&k), &up(&v), &spec).unwrap();
    let m = heads * t * d;
    let (mut wo, mut wl) = (vec![f32::NAN; m], vec![f32::NAN; heads * t]);
    attention::attention(&q, &k, &v, &spec, &mut wo[..], &mut wl[..]);
    assert_same_bits(&got(&o), &wo, "backend attention out");
    assert_same_bits(&got(&l), &wl, "backend attention lse");
    let (dq, dk, dv) = be.attention_backward(&up(&q), &up(&k), &up(&v), &o, &l, &up(&dout), &spec).unwrap();
    let (mut wq, mut wk, mut wv) = (vec![f32::NAN; m], vec![f32::NAN; m], vec![f32::NAN; m]);
    attention::attention_backward(&q, &k, &v, &wo, &wl, &dout, &spec, &mut wq[..], &mut wk[..], &mut wv[..]);
    assert_same_bits(&got(&dq), &wq, "backend attention dq");
    assert_same_bits(&got(&dk), &wk, "backend attention dk");
    assert_same_bits(&got(&dv), &wv, "backend attention dv");
    let (rows_, cols) = (1000, 64);
    let xl = ln_inputs(rows_, cols, &mut rng);
    let (gamma, beta) = (wide_values(cols, -1.0, 1.0, &mut rng), wide_values(cols, -1.0, 1.0, &mut rng));
    let (yb, mb, rb) = be.layernorm(&up(&xl), &up(&gamma), &up(&beta), rows_, cols, 1e-6).unwrap();
    let (mut wy, mut wm, mut wr) = (vec![f32::NAN; rows_ * cols], vec![f32::NAN; rows_], vec![f32::NAN; rows_]);
    layernorm::layernorm(&xl, &gamma, &beta, 1e-6, &mut wy[..], &mut wm[..], &mut wr[..]);
    assert_same_bits(&got(&yb), &wy, "backend layernorm y");
    assert_same_bits(&got(&mb), &wm, "backend layernorm mean");
    assert_same_bits(&got(&rb), &wr, "backend layernorm rstd");
    // The head split of attention.
    let shape = [8, 65, 3, 4, 16];
    let xp = wide_values(shape.iter().product(), -3.0, 3.0, &mut rng);
    let perm = [2, 0, 3, 1, 4];
    assert_same_bits(
        &got(&be.permute(&up(&xp), &shape, &perm).unwrap()),
        &reference::permute(&xp, &shape, &perm),
        "backend permute",
    );
}
