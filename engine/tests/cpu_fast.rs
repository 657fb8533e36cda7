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
use engine::backend::AxisSpec;
use engine::backend::{BinaryOp, UnaryOp};
use engine::cpu::fast::simd::{Isa, with_isa};
use engine::cpu::fast::{adamw, elementwise, layernorm, math, reduce};
use engine::cpu::parallel::with_threads;
use engine::cpu::reference;

const U: f64 = f32::EPSILON as f64 / 2.0;

/// The instruction sets to test on this CPU.
fn isas() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
}

/// Runs `f` with each available instruction set, and for each on 1, 2 and 3 threads and twice on
/// 2 threads: asserts that all these runs of one instruction set give the same bits, and returns
/// one result per instruction set.
fn run_everywhere<T: PartialEq + std::fmt::Debug>(what: &str, f: impl Fn() -> T) -> Vec<(Isa, T)> {
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
                    elementwise::binary(op, &x, &y, &mut out);
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
                elementwise::unary(op, x, &mut out);
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
            elementwise::unary(UnaryOp::Gelu, &x, &mut out);
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
            elementwise::gelu_backward(&x, &dy, &mut out);
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
            reduce::broadcast_axis(&x, &spec, &mut out);
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
            layernorm::layernorm(&x, &gamma, &beta, eps, &mut y, &mut m, &mut r);
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
            layernorm::layernorm_backward(&x, &gamma, &mean, &rstd, &dy, &mut dx, &mut dg, &mut db);
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
