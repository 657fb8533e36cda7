//! Every WGSL kernel against the CPU backend, forward and backward, on uneven shapes (not multiples
//! of any tile size) and wide value ranges: `|gpu - cpu| <= atol + rtol * |cpu|`. The CPU side is
//! `Device::Cpu`, i.e. the fast CPU kernels, each of which is held to `cpu::reference` (plain loops,
//! f64 sums) on the same kinds of shapes by `cpu_fast.rs` and `cpu_matmul.rs`; so the WGSL kernels
//! meet the reference through them, within both tolerances. `gpu_concurrency.rs` compares the GPU
//! with `cpu::reference` directly.
//! CI runs these on lavapipe; with `CI` set a missing adapter fails them, elsewhere they are skipped
//! with a message.
#![cfg(feature = "gpu")]

mod common;

use common::*;
use engine::backend::BinaryOp;
use engine::{Device, Indices, Rng, Tensor, ops};

fn gpu() -> Option<Device> {
    engine::gpu::test_device()
}

#[test]
fn matmul_matches_reference_on_uneven_shapes_and_every_transpose() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(1);
    // The last three have a long K and few output tiles: without a bias they run split-K (slices of K
    // summed after), with one in a single pass.
    let shapes = [
        (1, 1, 1),
        (1, 137, 3),
        (45, 65, 33),
        (129, 257, 63),
        (64, 64, 64),
        (3, 8, 12),
        (7, 5, 0),
        (45, 65, 1100),
        (64, 64, 4096),
        (1, 137, 3000),
    ];
    for &(m, n, k) in &shapes {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            for with_bias in [false, true] {
                let a_shape = if ta { vec![k, m] } else { vec![m, k] };
                let b_shape = if tb { vec![n, k] } else { vec![k, n] };
                // Magnitudes from 1e-3 to 1e3: products span twelve orders of magnitude.
                let a = wide_values(m * k, -3.0, 3.0, &mut rng);
                let b = wide_values(k * n, -3.0, 3.0, &mut rng);
                let bias = wide_values(n, -3.0, 3.0, &mut rng);
                let atol = 1e-5 * (k as f32).max(1.0).sqrt() * max_abs(&a).max(1.0) * max_abs(&b).max(1.0);
                let mut inputs = vec![(a, a_shape), (b, b_shape)];
                if with_bias {
                    inputs.push((bias, vec![n]));
                }
                assert_devices_agree(
                    &gpu,
                    &inputs,
                    &|t| ops::matmul_ex(&t[0], &t[1], t.get(2), ta, tb),
                    atol,
                    1e-4,
                    &format!("matmul {m}x{n}x{k} ta={ta} tb={tb} bias={with_bias}"),
                );
            }
        }
    }
}

#[test]
fn batched_matmul_matches_reference_with_shared_operands() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(2);
    let (batch, m, n, k) = (3, 17, 33, 9);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a_shape = if ta { vec![batch, k, m] } else { vec![batch, m, k] };
        let b_shape = if tb { vec![batch, n, k] } else { vec![batch, k, n] };
        let w_shape = if tb { vec![n, k] } else { vec![k, n] };
        let a = uniform_values(batch * m * k, -2.0, 2.0, &mut rng);
        let b = uniform_values(batch * k * n, -2.0, 2.0, &mut rng);
        let w = uniform_values(k * n, -2.0, 2.0, &mut rng);
        let f = |t: &[Tensor]| ops::matmul_ex(&t[0], &t[1], None, ta, tb);
        let what = format!("batched matmul ta={ta} tb={tb}");
        assert_devices_agree(&gpu, &[(a.clone(), a_shape.clone()), (b, b_shape)], &f, 1e-4, 1e-4, &what);
        assert_devices_agree(&gpu, &[(a, a_shape), (w, w_shape)], &f, 1e-4, 1e-4, &format!("{what}, shared B"));
    }
}

#[test]
fn elementwise_ops_match_reference_with_broadcasting() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(3);
    for shape in [vec![1usize, 137], vec![45, 65, 33]] {
        let n: usize = shape.iter().product();
        let x = wide_values(n, -3.0, 3.0, &mut rng);
        for y_shape in [shape.clone(), shape[1..].to_vec(), vec![shape[shape.len() - 1]], vec![]] {
            let ny: usize = y_shape.iter().product();
            let y = uniform_values(ny, 0.5, 4.0, &mut rng);
            // The broadcast operand's gradient sums n / ny terms of up to |x| * |1 / y^2|: allow
            // f32 rounding of that sum.
            let atol = 1e-4f32.max(4.0 * f32::EPSILON * ((n / ny.max(1)) as f32).sqrt() * max_abs(&x) * 4.0);
            for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
                assert_devices_agree(
                    &gpu,
                    &[(x.clone(), shape.clone()), (y.clone(), y_shape.clone())],
                    &|t| ops::binary(op, &t[0], &t[1]),
                    atol,
                    1e-5,
                    &format!("{op:?} {shape:?} by {y_shape:?}"),
                );
            }
        }
    }
}

#[test]
fn unary_ops_and_gelu_match_reference_over_wide_ranges() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(4);
    let mut x = uniform_values(45 * 65, -8.0, 8.0, &mut rng);
    x.extend([0.0, -0.0, 1e-7, -1e-7, 30.0, -30.0, 1e3, -1e3, 1e-30]);
    let n = x.len();
    let pos: Vec<f32> = x.iter().map(|v| v.abs() + 0.1).collect();
    type Case = (&'static str, Vec<f32>, Box<dyn Fn(&[Tensor]) -> engine::Result<Tensor>>);
    let cases: Vec<Case> = vec![
        ("gelu", x.clone(), Box::new(|t| ops::gelu(&t[0]))),
        ("scale", x.clone(), Box::new(|t| ops::scale(&t[0], -2.5))),
        ("add_scalar", x.clone(), Box::new(|t| ops::add_scalar(&t[0], 0.75))),
        ("square", x.clone(), Box::new(|t| ops::square(&t[0]))),
        ("sqrt", pos, Box::new(|t| ops::sqrt(&t[0]))),
    ];
    for (name, values, f) in cases {
        assert_devices_agree(&gpu, &[(values, vec![n])], &*f, 2e-6, 2e-5, name);
    }
}

#[test]
fn one_dimensional_kernels_address_more_than_65535_workgroups() {
    let Some(gpu) = gpu() else { return };
    // 65536 * 256 + 7 elements need a second grid dimension.
    let n = 65536 * 256 + 7;
    let x = Tensor::full(&[n], 1.5, &gpu).unwrap();
    let y = ops::scale(&x, 2.0).unwrap().to_vec().unwrap();
    assert!(y.iter().all(|&v| v == 3.0));
    let s = ops::sum(&x).unwrap().item().unwrap();
    assert!((s as f64 - 1.5 * n as f64).abs() < 1e-4 * 1.5 * n as f64, "sum {s}");
}

#[test]
fn softmax_matches_reference_on_uneven_rows() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(5);
    for shape in [vec![1usize, 137], vec![45, 65], vec![3, 1], vec![7, 300]] {
        let n = shape.iter().product();
        let x = uniform_values(n, -40.0, 40.0, &mut rng);
        assert_devices_agree(
            &gpu,
            &[(x, shape.clone())],
            &|t| ops::softmax(&t[0]),
            1e-6,
            1e-4,
            &format!("softmax {shape:?}"),
        );
    }
}

#[test]
fn layernorm_matches_reference_forward_and_backward() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(6);
    for (rows, cols) in [(1, 137), (45, 65), (129, 257), (300, 16), (2, 1000)] {
        // An offset mean and a spread scale test the two-pass variance.
        let x: Vec<f32> = (0..rows * cols).map(|_| 100.0 + 10.0 * rng.normal()).collect();
        let g = uniform_values(cols, 0.5, 1.5, &mut rng);
        let b = uniform_values(cols, -1.0, 1.0, &mut rng);
        assert_devices_agree(
            &gpu,
            &[(x, vec![rows, cols]), (g, vec![cols]), (b, vec![cols])],
            &|t| ops::layer_norm(&t[0], &t[1], &t[2], 1e-6),
            2e-4,
            2e-4,
            &format!("layernorm {rows}x{cols}"),
        );
    }
}

#[test]
fn fused_add_layernorm_matches_reference_forward_and_backward() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(16);
    for (rows, cols) in [(1, 137), (45, 65), (129, 257), (300, 16)] {
        let x: Vec<f32> = (0..rows * cols).map(|_| 100.0 + 10.0 * rng.normal()).collect();
        let r = wide_values(rows * cols, -3.0, 1.0, &mut rng);
        let g = uniform_values(cols, 0.5, 1.5, &mut rng);
        let b = uniform_values(cols, -1.0, 1.0, &mut rng);
        assert_devices_agree(
            &gpu,
            &[(x, vec![rows, cols]), (r, vec![rows, cols]), (g, vec![cols]), (b, vec![cols])],
            &|t| {
                let (s, y) = ops::add_layer_norm(&t[0], &t[1], &t[2], &t[3], 1e-6)?;
                s.scale(1e-2)?.add(&y)
            },
            2e-4,
            2e-4,
            &format!("add + layernorm {rows}x{cols}"),
        );
    }
}

#[test]
fn attention_matches_reference_for_mae_sequence_lengths_and_head_dims() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(7);
    for &seq in &[1usize, 17, 50, 197] {
        for &dim in &[16usize, 32, 64] {
            if seq == 197 && dim != 64 {
                continue; // ViT-B's shape; the others are covered at shorter lengths
            }
            let shape = vec![2, 3, seq, dim];
            let n = 6 * seq * dim;
            let inputs: Vec<_> = (0..3).map(|_| (uniform_values(n, -2.5, 2.5, &mut rng), shape.clone())).collect();
            assert_devices_agree(
                &gpu,
                &inputs,
                &|t| ops::attention(&t[0], &t[1], &t[2]),
                2e-4,
                2e-3,
                &format!("attention seq={seq} dim={dim}"),
            );
        }
    }
}

/// q and k with magnitudes 0.01 to 4 (scores from flat to nearly one-hot rows) and v from 0.001 to
/// 100, each sign random: `[heads, seq, dim]` each.
fn wide_attention_inputs(heads: usize, seq: usize, dim: usize, rng: &mut Rng) -> Vec<(Vec<f32>, Vec<usize>)> {
    let n = heads * seq * dim;
    let shape = vec![heads, seq, dim];
    vec![
        (wide_values(n, -2.0, 0.6, rng), shape.clone()),
        (wide_values(n, -2.0, 0.6, rng), shape.clone()),
        (wide_values(n, -3.0, 2.0, rng), shape),
    ]
}

#[test]
fn attention_matches_reference_forward_and_backward_on_uneven_shapes_and_wide_values() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(21);
    // (seq, heads, dim): lengths that are not multiples of the tiled kernels' 32 owned rows or 16
    // streamed ones; dims of the tiled kernels (multiples of 4 up to 64: 16, 20, 24, 32, 64) and of
    // the row kernels they fall back to (18 is not a multiple of 4, 96 is past 64).
    let cases = [
        (1, 3, 16),
        (5, 2, 20),
        (13, 3, 24),
        (50, 2, 64),
        (67, 2, 32),
        (197, 1, 32),
        (33, 2, 64),
        (5, 2, 4),
        (13, 2, 18),
        (67, 1, 96),
    ];
    for &(seq, heads, dim) in &cases {
        let inputs = wide_attention_inputs(heads, seq, dim, &mut rng);
        // |v| reaches 100 and dP = dout . v sums dim such products: the absolute error of f32 sums
        // of that size, carried into the gradients.
        let atol = 2e-5 * max_abs(&inputs[2].0) * (dim as f32).sqrt();
        assert_devices_agree(
            &gpu,
            &inputs,
            &|t| ops::attention(&t[0], &t[1], &t[2]),
            atol,
            2e-3,
            &format!("attention seq={seq} heads={heads} dim={dim} (wide values)"),
        );
    }
}

#[test]
fn packed_qkv_attention_matches_reference_on_uneven_shapes_of_the_tiled_kernels() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(22);
    for &(seq, heads, dim) in &[(5usize, 3usize, 20usize), (50, 3, 64), (67, 2, 32), (33, 5, 16), (13, 2, 18)] {
        let n = 2;
        let qkv = wide_values(n * seq * 3 * heads * dim, -2.0, 0.6, &mut rng);
        assert_devices_agree(
            &gpu,
            &[(qkv, vec![n, seq, 3 * heads * dim])],
            &|t| ops::attention_qkv(&t[0], heads),
            1e-4 * (dim as f32).sqrt(),
            2e-3,
            &format!("attention_qkv seq={seq} heads={heads} dim={dim} (wide values)"),
        );
    }
}

#[test]
fn attention_gradients_are_the_same_bits_on_every_run() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(23);
    // No atomics: every sum has one fixed order, so two runs agree exactly (tiled and row kernels).
    for &(seq, dim) in &[(67usize, 32usize), (50, 18)] {
        let inputs = wide_attention_inputs(2, seq, dim, &mut rng);
        let f = |t: &[Tensor]| ops::attention(&t[0], &t[1], &t[2]);
        let (a, b) = (run_on(&gpu, &inputs, &f), run_on(&gpu, &inputs, &f));
        assert_eq!(a.out, b.out, "attention seq={seq} dim={dim}: two forwards differ");
        assert_eq!(a.grads, b.grads, "attention seq={seq} dim={dim}: two backwards differ");
    }
}

/// The context of `gpu` when its adapter has timestamp queries, whose profile tells which kernels
/// ran (else SKIPPED and `None`), with the lock that keeps this file's profiling tests apart (the
/// profiler is the context's, one for the process).
fn profiling_context(
    gpu: &Device,
) -> Option<(std::sync::MutexGuard<'static, ()>, std::sync::Arc<engine::gpu::GpuContext>)> {
    static PROFILING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let Device::Gpu(g) = gpu else { unreachable!() };
    let ctx = g.context();
    if !ctx.has_timestamps() {
        eprintln!("SKIPPED: {} has no timestamp queries", ctx.adapter.name);
        return None;
    }
    Some((PROFILING.lock().unwrap_or_else(|e| e.into_inner()), ctx.clone()))
}

#[test]
fn attention_runs_the_tiled_kernels_for_dims_that_are_multiples_of_4_up_to_64_and_the_row_kernels_otherwise() {
    let Some(gpu) = gpu() else { return };
    let Some((_profiling, ctx)) = profiling_context(&gpu) else { return };
    let mut rng = Rng::new(24);
    // Dims no other test uses, so another test's dispatches in the same profile cannot answer.
    let inputs28 = wide_attention_inputs(2, 19, 28, &mut rng);
    let inputs14 = wide_attention_inputs(2, 19, 14, &mut rng);
    let f = |t: &[Tensor]| ops::attention(&t[0], &t[1], &t[2]);
    ctx.start_profiling_by_shape().unwrap();
    run_on(&gpu, &inputs28, &f);
    run_on(&gpu, &inputs14, &f);
    let rows = ctx.stop_profiling().unwrap();
    let ran = |entry: &str, dim: usize| {
        let prefix = format!("{entry} [HEAD_DIM={dim}]");
        rows.iter().any(|(name, n, _)| name.starts_with(&prefix) && *n > 0)
    };
    // delta = rowwise dout . out: the tiled dq pass makes it, the row kernels run backward_prep first.
    assert!(!ran("backward_prep", 28), "backward_prep for dim 28: {rows:?}");
    assert!(ran("backward_prep", 14), "backward_prep for dim 14: {rows:?}");
    for entry in ["forward", "backward_dq", "backward_dkdv"] {
        assert!(ran(&format!("{entry}_tiles"), 28), "{entry}_tiles for dim 28: {rows:?}");
        assert!(!ran(entry, 28), "{entry} (rows) for dim 28: {rows:?}");
        assert!(ran(entry, 14), "{entry} (rows) for dim 14: {rows:?}");
        assert!(!ran(&format!("{entry}_tiles"), 14), "{entry}_tiles for dim 14: {rows:?}");
    }
}

#[test]
fn masked_patch_gather_and_scatter_match_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(8);
    let (n, t, s, d) = (3, 17, 11, 33);
    let x = wide_values(n * t * d, -2.0, 2.0, &mut rng);
    // Repeated indices exercise the scatter-add.
    let idx: Vec<u32> = (0..n * s).map(|_| rng.below(t) as u32).collect();
    let idx = Indices::new(idx, &[n, s]).unwrap();
    assert!(idx.inverse_rows(n, s, t).is_none(), "the draw repeats a row");
    assert_devices_agree(
        &gpu,
        &[(x.clone(), vec![n, t, d])],
        &|v| ops::gather_rows(&v[0], &idx),
        1e-5,
        1e-6,
        "gather_rows",
    );
    // Distinct indices (MAE's: some rows kept, and a permutation), scattered as a gather by the
    // inverse table: rows nobody picked get zeros.
    let mut permutation = || {
        let mut rows: Vec<u32> = (0..t as u32).collect();
        rng.shuffle(&mut rows);
        rows
    };
    let perms: Vec<Vec<u32>> = (0..2 * n).map(|_| permutation()).collect();
    let keep = Indices::new(perms[..n].iter().flat_map(|p| p[..s].to_vec()).collect(), &[n, s]).unwrap();
    let perm = Indices::new(perms[n..].concat(), &[n, t]).unwrap();
    for (idx, what) in [(&keep, "kept rows"), (&perm, "a permutation")] {
        assert!(idx.inverse_rows(n, idx.shape()[1], t).is_some(), "{what}");
        assert_devices_agree(&gpu, &[(x.clone(), vec![n, t, d])], &|v| ops::gather_rows(&v[0], idx), 0.0, 0.0, what);
    }
}

#[test]
fn gather_with_a_fill_row_matches_reference_forward_and_backward() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(28);
    // 45 samples of 1 + 11 picks: the fill's gradient sums over 540 picks, more than one slice of
    // the first pass (64), and not a multiple of it.
    let (n, t, s, d) = (45, 17, 12, 33);
    let x = wide_values(n * t * d, -2.0, 2.0, &mut rng);
    let fill = wide_values(d, -2.0, 2.0, &mut rng);
    // MAE's decoder: the cls row, then a permutation of the kept rows 1..t with the fill in the
    // removed places (distinct rows: the scatter runs as a gather by the inverse); and random
    // picks, the fill's among them (repeated rows: the scatter compares every pick).
    let mae: Vec<u32> = (0..n)
        .flat_map(|_| {
            let mut rows: Vec<u32> = (1..=s as u32 - 1).map(|r| if r % 3 == 0 { t as u32 } else { r }).collect();
            rng.shuffle(&mut rows);
            std::iter::once(0).chain(rows)
        })
        .collect();
    let random: Vec<u32> = (0..n * s).map(|_| rng.below(t + 1) as u32).collect();
    for (picks, what, distinct) in [(mae, "distinct rows", true), (random, "repeated rows", false)] {
        let idx = Indices::new(picks, &[n, s]).unwrap();
        assert_eq!(idx.inverse_rows(n, s, t).is_some(), distinct, "{what}");
        assert!(idx.values().contains(&(t as u32)), "{what}: the fill is picked");
        // The fill's gradient sums up to 540 rows of magnitude up to 100.
        assert_devices_agree(
            &gpu,
            &[(x.clone(), vec![n, t, d]), (fill.clone(), vec![d])],
            &|v| ops::gather_rows_with_fill(&v[0], &v[1], &idx),
            1e-3,
            1e-5,
            &format!("gather_rows_with_fill, {what}"),
        );
    }
}

#[test]
fn distinct_indices_scatter_as_a_gather_by_their_inverse_and_repeats_compare_every_pick() {
    let Some(gpu) = gpu() else { return };
    let Some((_profiling, ctx)) = profiling_context(&gpu) else { return };
    // A width no other test uses, so another test's dispatches in the same profile cannot answer.
    let (n, t, d) = (2, 5, 29);
    let x = Tensor::from_slice(&vec![1.0; n * t * d], &[n, t, d], &gpu).unwrap();
    x.set_requires_grad(true);
    let distinct = Indices::new(vec![4, 0, 2, 1, 3, 0], &[n, 3]).unwrap();
    let repeated = Indices::new(vec![4, 4, 2, 1, 3, 0], &[n, 3]).unwrap();
    let entries = |idx: &Indices| {
        ctx.start_profiling_by_shape().unwrap();
        engine::backward(&ops::gather_rows(&x, idx).unwrap().sum().unwrap()).unwrap();
        let rows = ctx.stop_profiling().unwrap();
        x.zero_grad();
        let groups = (n * t * d).div_ceil(256);
        let ran = |e: &str| rows.iter().any(|(name, k, _)| *name == format!("{e} [] grid {groups}x1x1") && *k > 0);
        (ran("scatter_rows"), ran("scatter_add_rows"))
    };
    assert_eq!(entries(&distinct), (true, false));
    assert_eq!(entries(&repeated), (false, true));
}

#[test]
fn token_concat_and_slice_match_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(9);
    let a = uniform_values(3 * 5, -1.0, 1.0, &mut rng);
    let b = uniform_values(3 * 13 * 5, -1.0, 1.0, &mut rng);
    assert_devices_agree(
        &gpu,
        &[(a, vec![3, 1, 5]), (b, vec![3, 13, 5])],
        &|t| ops::concat_tokens(&[&t[0], &t[1]]),
        0.0,
        0.0,
        "concat_tokens",
    );
    let x = uniform_values(3 * 14 * 5, -1.0, 1.0, &mut rng);
    assert_devices_agree(&gpu, &[(x, vec![3, 14, 5])], &|t| ops::slice_tokens(&t[0], 1, 12), 0.0, 0.0, "slice_tokens");
}

#[test]
fn reductions_match_reference_including_long_axes() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(10);
    for shape in [vec![1usize, 137, 1], vec![45, 65, 33], vec![1, 100_000, 1], vec![1, 3000, 7], vec![2, 5000, 70]] {
        let n: usize = shape.iter().product();
        let x = uniform_values(n, -1.0, 1.0, &mut rng);
        let atol = 1e-6 * (n as f32).sqrt() * 4.0;
        for axis in 0..3 {
            assert_devices_agree(
                &gpu,
                &[(x.clone(), shape.clone())],
                &|t| ops::sum_axis(&t[0], axis),
                atol,
                1e-4,
                &format!("sum over axis {axis} of {shape:?}"),
            );
        }
        assert_devices_agree(
            &gpu,
            &[(x, shape.clone())],
            &|t| ops::mean(&t[0]),
            atol,
            1e-4,
            &format!("mean {shape:?}"),
        );
    }
}

#[test]
fn permutations_match_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(11);
    let x = uniform_values(2 * 5 * 3 * 4 * 7, -1.0, 1.0, &mut rng);
    // The attention head split: [N, T, 3, H, d] -> [3, N, H, T, d].
    assert_devices_agree(
        &gpu,
        &[(x.clone(), vec![2, 5, 3, 4, 7])],
        &|t| ops::permute(&t[0], &[2, 0, 3, 1, 4]),
        0.0,
        0.0,
        "permute rank 5",
    );
    assert_devices_agree(
        &gpu,
        &[(x, vec![10, 3, 28])],
        &|t| ops::permute(&t[0], &[2, 0, 1]),
        0.0,
        0.0,
        "permute rank 3",
    );
}

#[test]
fn mae_loss_matches_reference_with_and_without_norm_pix() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(12);
    // 585 patches: the mean's 64 invocations stride over them 10 times, the last time in part.
    for (n, l, p) in [(3usize, 17usize, 16usize), (2, 49, 48), (1, 5, 768), (45, 13, 7)] {
        let pred = uniform_values(n * l * p, -2.0, 2.0, &mut rng);
        let target: Vec<f32> = (0..n * l * p).map(|_| 0.5 + 0.2 * rng.normal()).collect();
        let mask: Vec<f32> = (0..n * l).map(|i| ((i * 7) % 4 != 0) as u8 as f32).collect();
        for norm_pix in [false, true] {
            let (tt, mm) = (target.clone(), mask.clone());
            assert_devices_agree(
                &gpu,
                &[(pred.clone(), vec![n, l, p])],
                &move |t| {
                    let dev = t[0].device();
                    let target = Tensor::from_slice(&tt, &[n, l, p], &dev)?;
                    let mask = Tensor::from_slice(&mm, &[n, l], &dev)?;
                    ops::mae_loss(&t[0], &target, &mask, norm_pix)
                },
                1e-5,
                1e-4,
                &format!("mae_loss {n}x{l}x{p} norm_pix={norm_pix}"),
            );
        }
    }
}

#[test]
fn cross_entropy_matches_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(13);
    let (rows, classes) = (37, 10);
    let logits = uniform_values(rows * classes, -20.0, 20.0, &mut rng);
    let labels = Indices::new((0..rows).map(|_| rng.below(classes) as u32).collect(), &[rows]).unwrap();
    assert_devices_agree(
        &gpu,
        &[(logits, vec![rows, classes])],
        &|t| ops::cross_entropy(&t[0], &labels),
        1e-5,
        1e-4,
        "cross_entropy",
    );
}

#[test]
fn adamw_step_matches_reference() {
    let Some(gpu) = gpu() else { return };
    use engine::backend::AdamWSpec;
    let mut rng = Rng::new(14);
    let n = 1000;
    let p0 = uniform_values(n, -1.0, 1.0, &mut rng);
    let grads: Vec<Vec<f32>> = (0..3).map(|_| wide_values(n, -4.0, 1.0, &mut rng)).collect();
    let run = |dev: &Device| -> Vec<f32> {
        let p = Tensor::from_slice(&p0, &[n], dev).unwrap();
        let m = Tensor::zeros(&[n], dev).unwrap();
        let v = Tensor::zeros(&[n], dev).unwrap();
        for (t, g) in grads.iter().enumerate() {
            let g = Tensor::from_slice(g, &[n], dev).unwrap();
            let step = (t + 1) as i32;
            let spec = AdamWSpec {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay: 0.05,
                bias_correction1: 1.0 - 0.9f32.powi(step),
                bias_correction2: 1.0 - 0.95f32.powi(step),
                grad_scale: 0.5,
            };
            dev.backend().adamw_step(p.storage(), g.storage(), m.storage(), v.storage(), n, &spec).unwrap();
        }
        p.to_vec().unwrap()
    };
    assert_close(&run(&gpu), &run(&Device::Cpu), 1e-6, 1e-5, "adamw");
}

#[test]
fn a_two_block_transformer_gives_the_same_forward_and_gradients_on_both_devices() {
    let Some(gpu) = gpu() else { return };
    let (n, t, d, h) = (3, 17, 32, 4);
    let mut rng = Rng::new(15);
    let mut inputs = vec![(uniform_values(n * t * d, -1.0, 1.0, &mut rng), vec![n, t, d])];
    let lim = |fan_in: usize| (1.0 / fan_in as f32).sqrt();
    for _ in 0..2 {
        inputs.push((uniform_values(3 * d * d, -lim(d), lim(d), &mut rng), vec![3 * d, d])); // qkv.weight
        inputs.push((uniform_values(3 * d, -0.1, 0.1, &mut rng), vec![3 * d])); // qkv.bias
        inputs.push((uniform_values(d * d, -lim(d), lim(d), &mut rng), vec![d, d])); // proj.weight
        inputs.push((uniform_values(4 * d * d, -lim(d), lim(d), &mut rng), vec![4 * d, d])); // fc1.weight
        inputs.push((uniform_values(4 * d * d, -lim(4 * d), lim(4 * d), &mut rng), vec![d, 4 * d])); // fc2.weight
        inputs.push((uniform_values(d, 0.8, 1.2, &mut rng), vec![d])); // norm1.weight
        inputs.push((uniform_values(d, -0.1, 0.1, &mut rng), vec![d])); // norm1.bias
    }
    let block = move |x: &Tensor, w: &[Tensor]| -> engine::Result<Tensor> {
        let y = ops::layer_norm(x, &w[5], &w[6], 1e-6)?;
        let qkv = ops::linear(&y, &w[0], Some(&w[1]))?.reshape(&[n, t, 3, h, d / h])?.permute(&[2, 0, 3, 1, 4])?;
        let qkv = qkv.reshape(&[1, 3, n * h * t * d / h])?;
        let part = |i| ops::slice_tokens(&qkv, i, 1)?.reshape(&[n, h, t, d / h]);
        let a = ops::attention(&part(0)?, &part(1)?, &part(2)?)?.permute(&[0, 2, 1, 3])?.reshape(&[n, t, d])?;
        let x = x.add(&ops::linear(&a, &w[2], None)?)?;
        let y = ops::layer_norm(&x, &w[5], &w[6], 1e-6)?;
        x.add(&ops::linear(&ops::gelu(&ops::linear(&y, &w[3], None)?)?, &w[4], None)?)
    };
    assert_devices_agree(
        &gpu,
        &inputs,
        &|p| {
            let x = block(&p[0], &p[1..8])?;
            block(&x, &p[8..15])
        },
        2e-4,
        2e-3,
        "two-block transformer",
    );
}

#[test]
fn linear_weight_and_bias_gradients_match_reference_in_one_pass_and_split_over_k() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(23);
    // Rows x in -> out. The weight gradient dY^T X is [out, in] over K = rows: the first three in one
    // pass (45 x 70 -> 130: 3 x 2 tiles, so sums from several row tiles beside workgroups that do
    // not sum), the last three split K (few tiles, a long K), the last one with vec4 loads; the bias
    // gradient comes with it.
    for &(rows, inp, out) in &[(37, 5, 3), (70, 64, 64), (45, 70, 130), (1100, 33, 65), (3000, 8, 130), (2048, 16, 64)]
    {
        let x = wide_values(rows * inp, -2.0, 2.0, &mut rng);
        let w = uniform_values(out * inp, -1.0, 1.0, &mut rng);
        let b = uniform_values(out, -1.0, 1.0, &mut rng);
        let inputs = vec![(x, vec![rows, inp]), (w, vec![out, inp]), (b, vec![out])];
        let atol = 2e-5 * (rows as f32).sqrt() * 100.0;
        assert_devices_agree(
            &gpu,
            &inputs,
            &|t| ops::linear(&t[0], &t[1], Some(&t[2])),
            atol,
            1e-4,
            &format!("linear {rows}x{inp}->{out}"),
        );
    }
}

#[test]
fn a_tensor_over_the_binding_limit_gets_an_error_that_names_the_limit() {
    let Some(gpu) = gpu() else { return };
    let Device::Gpu(g) = &gpu else { unreachable!() };
    let limit = g.context().limits.max_storage_buffer_binding_size as usize;
    let err = Tensor::zeros(&[limit / 4 + 1], &gpu).unwrap_err().to_string();
    assert!(err.contains("max_storage_buffer_binding_size"), "{err}");
}

#[test]
fn attention_with_a_head_dim_the_kernel_cannot_hold_is_a_clear_error() {
    let Some(gpu) = gpu() else { return };
    let q = Tensor::zeros(&[1, 1, 4, 256], &gpu).unwrap();
    let err = ops::attention(&q, &q, &q).unwrap_err().to_string();
    assert!(err.contains("head dim 256"), "{err}");
}

#[test]
fn packed_qkv_attention_matches_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(16);
    for &(seq, heads, dim) in &[(1usize, 2usize, 16usize), (13, 4, 32), (17, 3, 16), (50, 4, 16), (197, 2, 64)] {
        let n = 2;
        let qkv = uniform_values(n * seq * 3 * heads * dim, -2.5, 2.5, &mut rng);
        assert_devices_agree(
            &gpu,
            &[(qkv, vec![n, seq, 3 * heads * dim])],
            &|t| ops::attention_qkv(&t[0], heads),
            2e-4,
            2e-3,
            &format!("attention_qkv seq={seq} heads={heads} dim={dim}"),
        );
    }
}

#[test]
fn kernels_proved_in_bounds_run_unchecked_unless_the_switch_turns_checks_back_on() {
    let Some(gpu) = gpu() else { return };
    let Device::Gpu(g) = &gpu else { unreachable!() };
    let forced = engine::gpu::shaders::bounds_checks_forced();
    eprintln!("MAE_GPU_BOUNDS_CHECKS forces checks: {forced}");
    let loops_forced = engine::gpu::shaders::loop_bounding_forced();
    eprintln!("MAE_GPU_LOOP_BOUNDING forces the loop counter: {loops_forced}");
    for (name, _) in engine::gpu::shaders::SHADERS {
        let unchecked = engine::gpu::shaders::provably_in_bounds(name) && !forced;
        assert_eq!(g.context().runs_unchecked(name), unchecked, "{name}");
        let unbounded = engine::gpu::shaders::provably_finite(name) && !forced && !loops_forced;
        assert_eq!(g.context().runs_unbounded_loops(name), unbounded, "{name}");
    }
    // The sizes the proofs rest on are checked before any dispatch: a bias one value short, a
    // second operand shorter than the product needs, are errors, not reads past the end.
    let spec = engine::backend::MatmulSpec::plain(3, 5, 4);
    let a = Tensor::zeros(&[3, 4], &gpu).unwrap();
    let b = Tensor::zeros(&[4, 5], &gpu).unwrap();
    let short = Tensor::zeros(&[4], &gpu).unwrap();
    let be = gpu.backend();
    assert!(be.matmul(a.storage(), b.storage(), Some(short.storage()), &spec).is_err());
    assert!(be.matmul(a.storage(), short.storage(), None, &spec).is_err());
    assert!(be.binary(BinaryOp::Add, short.storage(), b.storage(), 20, 5).is_err());
    let ones = Tensor::ones(&[5], &gpu).unwrap();
    assert!(be.layernorm(b.storage(), short.storage(), ones.storage(), 4, 5, 1e-6).is_err(), "gamma one short");
    assert!(
        be.add_layernorm(b.storage(), a.storage(), ones.storage(), ones.storage(), 4, 5, 1e-6).is_err(),
        "residual short"
    );
    let axis = engine::backend::AxisSpec { outer: 2, axis: 3, inner: 4 };
    assert!(be.sum_axis(b.storage(), &axis).is_err(), "20 values for a [2, 3, 4] sum");
    assert!(be.softmax(short.storage(), 2, 3).is_err());
    let logits = Tensor::zeros(&[2, 3], &gpu).unwrap();
    let label_3 = Indices::new(vec![0, 3], &[2]).unwrap();
    assert!(be.cross_entropy(logits.storage(), &label_3, 2, 3).is_err(), "a label past the classes");
    let gather = engine::backend::GatherSpec { batch: 1, rows: 3, picks: 2, width: 2 };
    assert!(be.gather_rows(a.storage(), None, &label_3, &gather).is_err(), "a row index past the rows");
    let label_4 = Indices::new(vec![0, 4], &[2]).unwrap();
    let fill = Tensor::zeros(&[2], &gpu).unwrap();
    assert!(be.gather_rows(a.storage(), Some(fill.storage()), &label_3, &gather).is_ok(), "3 is the fill's");
    assert!(be.gather_rows(a.storage(), Some(fill.storage()), &label_4, &gather).is_err(), "past the fill");
    let one = Tensor::zeros(&[1], &gpu).unwrap();
    assert!(be.gather_rows(a.storage(), Some(one.storage()), &label_3, &gather).is_err(), "a fill too short");
    assert!(be.permute(a.storage(), &[3, 4], &[0, 0]).is_err(), "not a permutation");
    let att = engine::backend::AttentionSpec { heads: 2, seq: 3, dim: 4, scale: 0.5 };
    let full = Tensor::zeros(&[2, 3, 4], &gpu).unwrap();
    let short_k = Tensor::zeros(&[2, 3, 3], &gpu).unwrap();
    assert!(be.attention(full.storage(), short_k.storage(), full.storage(), &att).is_err(), "k one column short");
}

#[test]
fn fused_linear_gelu_matches_reference_forward_and_backward_on_uneven_shapes() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(17);
    // Rows x in x out: not multiples of the 64 x 64 tile, one with the vec4 path (in % 4 == 0).
    for &(rows, inp, out) in &[(1, 3, 137), (45, 33, 65), (130, 64, 96), (7, 5, 1)] {
        for with_bias in [true, false] {
            let x = uniform_values(rows * inp, -2.0, 2.0, &mut rng);
            let w = uniform_values(out * inp, -1.0, 1.0, &mut rng);
            let b = uniform_values(out, -1.0, 1.0, &mut rng);
            let mut inputs = vec![(x, vec![rows, inp]), (w, vec![out, inp])];
            if with_bias {
                inputs.push((b, vec![out]));
            }
            let atol = 2e-5 * (inp as f32).sqrt();
            assert_devices_agree(
                &gpu,
                &inputs,
                &|t| ops::linear_gelu(&t[0], &t[1], t.get(2)),
                atol,
                1e-4,
                &format!("linear_gelu {rows}x{inp}->{out} bias={with_bias}"),
            );
        }
    }
}

#[test]
fn mlp_matches_reference_forward_and_backward_on_uneven_shapes_and_both_tile_sizes() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(19);
    // Rows x in -> hidden -> out: not multiples of either tile, one with the vec4 path; the last
    // has enough 128 x 128 tiles for the large kernel to take fc2's input gradient on its own.
    for &(rows, inp, hidden, out) in &[(1, 3, 137, 5), (45, 33, 65, 33), (130, 64, 96, 64), (2100, 64, 2100, 36)] {
        let inputs = [
            (uniform_values(rows * inp, -2.0, 2.0, &mut rng), vec![rows, inp]),
            (uniform_values(hidden * inp, -1.0, 1.0, &mut rng), vec![hidden, inp]),
            (uniform_values(hidden, -1.0, 1.0, &mut rng), vec![hidden]),
            (uniform_values(out * hidden, -0.5, 0.5, &mut rng), vec![out, hidden]),
            (uniform_values(out, -1.0, 1.0, &mut rng), vec![out]),
        ];
        let atol = 2e-5 * (inp.max(hidden).max(rows) as f32).sqrt() * 4.0;
        let f = |t: &[Tensor]| ops::mlp(&t[0], &t[1], Some(&t[2]), &t[3], Some(&t[4]));
        for tiles in [engine::gpu::MatmulTiles::Small, engine::gpu::MatmulTiles::Large] {
            let _forced = ForcedMatmulTiles::new(tiles);
            let what = format!("mlp {rows}x{inp}->{hidden}->{out} on {tiles:?} tiles");
            assert_devices_agree(&gpu, &inputs, &f, atol, 1e-4, &what);
        }
    }
}

#[test]
fn packed_tensors_bind_at_their_offsets_in_kernels_copies_and_gradients() {
    let Some(gpu) = gpu() else { return };
    use engine::packing::{Packed, pack};
    let mut rng = Rng::new(21);
    let (x, w, b) = (
        uniform_values(5 * 7, -2.0, 2.0, &mut rng),
        uniform_values(9 * 7, -1.0, 1.0, &mut rng),
        uniform_values(9, -1.0, 1.0, &mut rng),
    );
    let leaves = |dev: &Device| -> Vec<Tensor> {
        vec![
            Tensor::from_slice(&b, &[9], dev).unwrap().with_grad(),
            Tensor::from_slice(&w, &[9, 7], dev).unwrap().with_grad(),
        ]
    };
    let packed = pack(&leaves(&gpu), &gpu).unwrap();
    let layout = Packed::of(&packed).expect("packed on a GPU").segments;
    assert!(layout[1].0 > 0, "the second tensor is a view at an offset: {layout:?}");
    assert_eq!(packed[1].to_vec().unwrap(), w, "a view reads back its own range");
    assert!(packed.iter().all(Tensor::requires_grad));
    let run = |p: &[Tensor], dev: &Device| {
        let xt = Tensor::from_slice(&x, &[5, 7], dev).unwrap();
        let y = ops::gelu(&ops::linear(&xt, &p[1], Some(&p[0])).unwrap()).unwrap();
        engine::backward(&y.sum().unwrap()).unwrap();
        let grads = [p[0].grad().unwrap().to_vec().unwrap(), p[1].grad().unwrap().to_vec().unwrap()];
        (y.to_vec().unwrap(), grads)
    };
    let (y_cpu, g_cpu) = run(&leaves(&Device::Cpu), &Device::Cpu);
    let (y_gpu, g_gpu) = run(&packed, &gpu);
    assert_close(&y_gpu, &y_cpu, 1e-5, 1e-4, "linear + gelu over packed views");
    assert_close(&g_gpu[0], &g_cpu[0], 1e-5, 1e-4, "bias gradient of a packed view");
    assert_close(&g_gpu[1], &g_cpu[1], 1e-5, 1e-4, "weight gradient of a packed view");
    // Writing one view in place leaves its neighbour alone.
    packed[0].assign(&Tensor::zeros(&[9], &Device::Cpu).unwrap()).unwrap();
    assert_eq!(packed[0].to_vec().unwrap(), vec![0.0; 9]);
    assert_eq!(packed[1].to_vec().unwrap(), w);
    assert!(
        pack(&leaves(&Device::Cpu), &Device::Cpu).map(|t| Packed::of(&t).is_none()).unwrap(),
        "nothing to pack on the CPU"
    );
}

/// `f` of packed parameters with gradient homes (`run_on_packed`) against the CPU: the outputs and
/// gradients agree, the gradients of the parameters named in `at_home` lie in their homes (no copy
/// needed) and the others' do not, and the gradient buffer holds zeros outside the parameters'
/// ranges (the packed AdamW's finiteness check sums all of it).
fn assert_gradients_reach_their_homes(
    gpu: &Device,
    values: &[(Vec<f32>, Vec<usize>)],
    f: &dyn Fn(&[Tensor]) -> engine::Result<Tensor>,
    at_home: &[usize],
    what: &str,
) -> PackedParams {
    let want = run_on(&Device::Cpu, values, f);
    let (got, homed, packed) = run_on_packed(gpu, values, f, 0);
    assert_close(&got.out, &want.out, 1e-4 * max_abs(&want.out).max(1.0), 1e-4, &format!("{what}: forward"));
    for (i, (g, w)) in got.grads.iter().zip(&want.grads).enumerate() {
        assert_close(g, w, 1e-4 * max_abs(w).max(1.0), 1e-4, &format!("{what}: gradient of parameter {i}"));
        assert_eq!(
            homed[i],
            at_home.contains(&i),
            "{what}: is the gradient of parameter {i} {:?} in its home?",
            values[i].1
        );
    }
    let mut outside = packed.grads.to_vec().unwrap();
    for &(offset, len) in &packed.segments {
        outside[offset..offset + len].fill(0.0);
    }
    assert!(outside.iter().all(|&v| v == 0.0), "{what}: values outside the parameters' ranges: {outside:?}");
    packed
}

#[test]
fn linear_layers_write_weight_and_bias_gradients_into_their_packed_homes() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(23);
    // rows x in -> out: one pass with C a multiple of 64 values; split over K (long K, one tile)
    // straight into the homes; uneven (5 x 7 = 35 values, then a gap before the bias) in one pass;
    // uneven and split, whose slices' sum would cover the gap: fresh gradients, copied by an
    // optimizer; a 3-value bias (under the 4 values a sum pass writes) split.
    for &(rows, inp, out, home) in
        &[(45, 64, 96, true), (3000, 64, 64, true), (33, 7, 5, true), (3000, 7, 5, false), (3000, 64, 3, false)]
    {
        let values = [
            (uniform_values(out * inp, -1.0, 1.0, &mut rng), vec![out, inp]),
            (uniform_values(out, -1.0, 1.0, &mut rng), vec![out]),
        ];
        let x =
            Tensor::from_slice(&uniform_values(rows * inp, -2.0, 2.0, &mut rng), &[rows, inp], &Device::Cpu).unwrap();
        let at_home: &[usize] = if home { &[0, 1] } else { &[] };
        type Layer = fn(&Tensor, &Tensor, Option<&Tensor>) -> engine::Result<Tensor>;
        for f in [ops::linear as Layer, ops::linear_gelu] {
            let f = |p: &[Tensor]| f(&x.to_device(&p[0].device()).unwrap(), &p[0], Some(&p[1]));
            let what = format!("linear {rows}x{inp}->{out}");
            assert_gradients_reach_their_homes(&gpu, &values, &f, at_home, &what);
        }
    }
}

#[test]
fn layernorm_writes_gamma_and_beta_gradients_into_their_packed_homes() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(24);
    // 45 columns leave 19 values between gamma and beta, which the pass fills with zeros.
    for &(rows, cols) in &[(37, 45), (300, 64), (1, 137)] {
        let values = [
            (uniform_values(cols, 0.5, 1.5, &mut rng), vec![cols]),
            (uniform_values(cols, -1.0, 1.0, &mut rng), vec![cols]),
        ];
        let x =
            Tensor::from_slice(&uniform_values(rows * cols, -3.0, 3.0, &mut rng), &[rows, cols], &Device::Cpu).unwrap();
        // The pass's partial sums ([chunks of 64 rows, 2, cols rounded up to 64]) come from the
        // buffer pool: leave buffers of that size full of NaN there (more than one: the packed
        // parameters and gradients may be as large), so that any padding column the pass does
        // not write reaches the gradient buffer.
        let partial = rows.div_ceil(64) * 2 * cols.next_multiple_of(64);
        drop((0..4).map(|_| Tensor::full(&[partial], f32::NAN, &gpu).unwrap()).collect::<Vec<_>>());
        Tensor::zeros(&[1], &gpu).unwrap().item().unwrap(); // a submission: the buffers are pooled
        let f = |p: &[Tensor]| ops::layer_norm(&x.to_device(&p[0].device()).unwrap(), &p[0], &p[1], 1e-6);
        assert_gradients_reach_their_homes(&gpu, &values, &f, &[0, 1], &format!("layernorm {rows}x{cols}"));
    }
}

#[test]
fn grad_homes_take_reshaped_weights_and_leave_repeated_uses_and_accumulation_correct() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(25);
    let (rows, d) = (29, 16);
    let x = Tensor::from_slice(&uniform_values(rows * d, -1.0, 1.0, &mut rng), &[rows, d], &Device::Cpu).unwrap();
    let on = |p: &[Tensor]| x.to_device(&p[0].device()).unwrap();
    // A weight kept as [out, c, p, p] (a patch embedding's convolution) used through a reshape.
    let conv = [
        (uniform_values(d * 4 * 2 * 2, -1.0, 1.0, &mut rng), vec![d, 4, 2, 2]),
        (uniform_values(d, -1.0, 1.0, &mut rng), vec![d]),
    ];
    let f = |p: &[Tensor]| ops::linear(&on(p), &p[0].reshape(&[d, d]).unwrap(), Some(&p[1]));
    assert_gradients_reach_their_homes(&gpu, &conv, &f, &[0, 1], "a reshaped weight");
    // One layer used twice: the first rule the backward reaches writes the homes, the second
    // gets fresh buffers, and the gradient is their sum (not in the home).
    let twice = |p: &[Tensor]| ops::linear(&ops::linear(&on(p), &p[0], Some(&p[1]))?, &p[0], Some(&p[1]));
    let layer =
        [(uniform_values(d * d, -0.5, 0.5, &mut rng), vec![d, d]), (uniform_values(d, -1.0, 1.0, &mut rng), vec![d])];
    assert_gradients_reach_their_homes(&gpu, &layer, &twice, &[], "one layer used twice");
    // The same through reshapes of both parameters: their gradients reach them only after both
    // uses, so their homes must be handed out once (the rule reached first writes them, the
    // other gets fresh buffers).
    let reshaped_twice = |p: &[Tensor]| {
        let (w, b) = (p[0].reshape(&[d, d])?, p[1].reshape(&[d])?);
        ops::linear(&ops::linear(&on(p), &w, Some(&b))?, &w, Some(&b))
    };
    assert_gradients_reach_their_homes(&gpu, &layer, &reshaped_twice, &[], "reshaped parameters used twice");
    // A second backward adds to the gradient in its home; after zero_grad the next one writes
    // the home again.
    let once = |p: &[Tensor]| ops::linear(&on(p), &p[0], Some(&p[1]));
    let PackedParams { params, homes, .. } =
        assert_gradients_reach_their_homes(&gpu, &layer, &once, &[0, 1], "one layer");
    let first: Vec<Vec<f32>> = params.iter().map(|p| p.grad().unwrap().to_vec().unwrap()).collect();
    engine::backward(&once(&params).unwrap().sum().unwrap()).unwrap();
    engine::backward(&once(&params).unwrap().sum().unwrap()).unwrap();
    let plain: Vec<Tensor> = layer.iter().map(|(v, s)| Tensor::from_slice(v, s, &gpu).unwrap().with_grad()).collect();
    engine::backward(&once(&plain).unwrap().sum().unwrap()).unwrap();
    for i in 0..2 {
        let summed = params[i].grad().unwrap().to_vec().unwrap();
        let one = plain[i].grad().unwrap().to_vec().unwrap();
        let want: Vec<f32> = first[i].iter().zip(&one).map(|(a, b)| a + 2.0 * b).collect();
        assert_close(&summed, &want, 1e-4, 1e-4, "gradients accumulated over three backward passes");
    }
    for p in &params {
        p.zero_grad();
    }
    engine::backward(&once(&params).unwrap().sum().unwrap()).unwrap();
    for i in 0..2 {
        assert!(params[i].grad().unwrap().storage().same_as(&homes[i]), "after zero_grad the home is written again");
        assert_close(
            &params[i].grad().unwrap().to_vec().unwrap(),
            &plain[i].grad().unwrap().to_vec().unwrap(),
            1e-5,
            1e-5,
            "rewritten home",
        );
    }
}

#[test]
fn packed_adamw_updates_each_segment_as_the_per_tensor_reference_and_skips_the_rest() {
    let Some(gpu) = gpu() else { return };
    use engine::backend::{AdamWSpec, packed_adamw_layout};
    use engine::cpu::reference;
    use engine::packing::{Packed, pack};
    let mut rng = Rng::new(22);
    let lens = [1usize, 137, 300, 256, 1000, 3, 257];
    let skipped = 2; // a parameter without a gradient this step: values and moments stay
    let hyper = [(1.0f32, 0.05f32), (0.5, 0.0), (9.0, 9.0), (0.25, 0.05), (1.0, 0.1), (0.75, 0.0), (0.125, 0.3)];
    let p0: Vec<Vec<f32>> = lens.iter().map(|&n| uniform_values(n, -1.0, 1.0, &mut rng)).collect();
    let grads: Vec<Vec<Vec<f32>>> =
        (0..3).map(|_| lens.iter().map(|&n| wide_values(n, -4.0, 1.0, &mut rng)).collect()).collect();
    let spec = |t: i32, lr: f32, wd: f32| AdamWSpec {
        lr,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: wd,
        bias_correction1: 1.0 - 0.9f32.powi(t),
        bias_correction2: 1.0 - 0.95f32.powi(t),
        grad_scale: 0.5,
    };
    // The reference: one tensor at a time.
    let mut want = p0.clone();
    let mut moments: Vec<(Vec<f32>, Vec<f32>)> = lens.iter().map(|&n| (vec![0.0; n], vec![0.0; n])).collect();
    for (t, g) in grads.iter().enumerate() {
        for i in (0..lens.len()).filter(|&i| i != skipped) {
            let (m, v) = &mut moments[i];
            reference::adamw_step(&mut want[i], &g[i], m, v, &spec(t as i32 + 1, 2e-2 * hyper[i].0, hyper[i].1));
        }
    }
    // Packed on the GPU, one dispatch a step.
    let params: Vec<Tensor> =
        lens.iter().zip(&p0).map(|(&n, v)| Tensor::from_slice(v, &[n], &Device::Cpu).unwrap()).collect();
    let params = pack(&params, &gpu).unwrap();
    let pk = Packed::of(&params).unwrap();
    let ((m, _), (v, _), (g, g_views)) = (pk.zeros_like().unwrap(), pk.zeros_like().unwrap(), pk.zeros_like().unwrap());
    let active: Vec<usize> = (0..lens.len()).filter(|&i| i != skipped).collect();
    let layout = packed_adamw_layout(&active.iter().map(|&i| pk.segments[i]).collect::<Vec<_>>()).unwrap();
    let table: Vec<f32> = active.iter().flat_map(|&i| [hyper[i].0, hyper[i].1]).collect();
    let table = Tensor::from_slice(&table, &[table.len()], &gpu).unwrap();
    for (t, step_grads) in grads.iter().enumerate() {
        for (i, values) in step_grads.iter().enumerate() {
            let view = Tensor::from_storage(g_views[i].clone(), &[lens[i]]).unwrap();
            view.assign(&Tensor::from_slice(values, &[lens[i]], &Device::Cpu).unwrap()).unwrap();
        }
        gpu.backend()
            .adamw_step_packed(
                &pk.buffer,
                &g,
                &m,
                &v,
                &layout,
                active.len(),
                table.storage(),
                &spec(t as i32 + 1, 2e-2, 0.0),
            )
            .unwrap();
    }
    // (That it is one dispatch per step is held in tests/gpu_steady_state.rs, whose binary has
    // the GPU to itself: the counters here would count the other tests' work too.)
    for i in 0..lens.len() {
        let got = params[i].to_vec().unwrap();
        if i == skipped {
            assert_eq!(got, p0[i], "a parameter outside the layout is left alone");
        } else {
            assert_close(&got, &want[i], 1e-6, 1e-5, &format!("packed adamw, segment {i} of {} values", lens[i]));
        }
    }
}

/// Forces this thread's products onto `tiles` until dropped (then back to the choice per product).
struct ForcedMatmulTiles(Option<engine::gpu::MatmulTiles>);

impl ForcedMatmulTiles {
    fn new(tiles: engine::gpu::MatmulTiles) -> Self {
        ForcedMatmulTiles(engine::gpu::force_matmul_tiles(Some(tiles)))
    }
}

impl Drop for ForcedMatmulTiles {
    fn drop(&mut self) {
        engine::gpu::force_matmul_tiles(self.0);
    }
}

/// `|got - want| <= bound` element by element, with a message naming the first one that is not.
fn assert_within(got: &[f32], want: &[f32], bound: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let off = |i: usize| {
        let err = (got[i] - want[i]).abs();
        err > bound[i] || err.is_nan()
    };
    if let Some(i) = (0..got.len()).find(|&i| off(i)) {
        panic!("{what}: element {i} of {}: got {}, want {} (bound {})", got.len(), got[i], want[i], bound[i]);
    }
}

#[test]
fn large_tile_matmul_matches_reference_on_uneven_shapes_every_transpose_bias_and_gelu() {
    use engine::backend::MatmulSpec;
    use engine::cpu::reference;
    let Some(gpu) = gpu() else { return };
    // Small shapes on the 128 x 128 kernel: forced, since the launcher picks it only for products
    // of hundreds of its tiles.
    let _large = ForcedMatmulTiles::new(engine::gpu::MatmulTiles::Large);
    let be = gpu.backend();
    let mut rng = Rng::new(42);
    // (batch, m, n, k, shared B): edges on every side, one row, K = 0, a long K (which the 64 x 64
    // kernel would split), one exact tile, every axis a multiple of 4 (the vec4 loads in all four
    // transpose cases), and batches with their own or a shared B.
    let shapes = [
        (1, 129, 257, 33, false),
        (1, 300, 130, 70, false),
        (1, 1, 137, 5, false),
        (1, 7, 5, 0, false),
        (1, 45, 65, 1100, false),
        (1, 128, 128, 8, false),
        (1, 132, 260, 36, false),
        (3, 129, 68, 20, false),
        (2, 17, 131, 12, true),
    ];
    for &(batch, m, n, k, shared_b) in &shapes {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let spec = MatmulSpec {
                batch,
                m,
                n,
                k,
                trans_a: ta,
                trans_b: tb,
                a_batch_stride: m * k,
                b_batch_stride: if shared_b { 0 } else { k * n },
            };
            // Magnitudes from 1e-3 to 1e3: products span twelve orders of magnitude.
            let a = wide_values(spec.a_len(), -3.0, 3.0, &mut rng);
            let b = wide_values(spec.b_len(), -3.0, 3.0, &mut rng);
            let bias = wide_values(n, -3.0, 3.0, &mut rng);
            // Each element's own f32 rounding bound: (K + 2) roundings of at most eps relative to
            // sum_k |a| |b| + |bias| (a bound uniform over the matrix would hide small elements).
            let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
            let (abs_a, abs_b, abs_bias) = (abs(&a), abs(&b), abs(&bias));
            let (ga, gb, gbias) = (be.upload(&a).unwrap(), be.upload(&b).unwrap(), be.upload(&bias).unwrap());
            for with_bias in [false, true] {
                let want = reference::matmul(&a, &b, with_bias.then_some(&bias[..]), &spec);
                let scale = reference::matmul(&abs_a, &abs_b, with_bias.then_some(&abs_bias[..]), &spec);
                let bound: Vec<f32> = scale.iter().map(|s| 2.0 * f32::EPSILON * (k + 2) as f32 * s).collect();
                let gbias = with_bias.then_some(&gbias);
                let what = format!("large-tile matmul {batch}x{m}x{n}x{k} ta={ta} tb={tb} bias={with_bias}");
                let c = be.matmul(&ga, &gb, gbias, &spec).unwrap();
                assert_within(&be.download(&c).unwrap(), &want, &bound, &what);
                let (c, y) = be.matmul_gelu(&ga, &gb, gbias, &spec).unwrap();
                assert_within(&be.download(&c).unwrap(), &want, &bound, &format!("{what}, C beside GELU"));
                // GELU's slope is at most 1.13; its own rounding as in the element-wise GELU test.
                let want_y: Vec<f32> = want.iter().map(|&v| reference::gelu(v)).collect();
                let bound_y: Vec<f32> =
                    bound.iter().zip(&want_y).map(|(b, y)| 1.13 * b + 2e-6 + 2e-5 * y.abs()).collect();
                assert_within(&be.download(&y).unwrap(), &want_y, &bound_y, &format!("{what}, GELU"));
            }
        }
    }
}

#[test]
fn large_tile_matmul_serves_linear_layers_forward_and_backward() {
    let Some(gpu) = gpu() else { return };
    let _large = ForcedMatmulTiles::new(engine::gpu::MatmulTiles::Large);
    let mut rng = Rng::new(43);
    // The forward (x w^T + b, fused with GELU or not) and both backward products (dX = dY W,
    // dW = dY^T X with the bias gradient's sums fused) through the big kernel; the last three have a
    // long K = rows for dW, which it splits (4 - 8 slices, sums in every slice), the last with vec4.
    for &(rows, inp, out) in
        &[(129, 33, 257), (300, 64, 132), (1, 5, 137), (1100, 33, 130), (3000, 8, 131), (2048, 16, 64)]
    {
        let x = wide_values(rows * inp, -2.0, 2.0, &mut rng);
        let w = uniform_values(out * inp, -1.0, 1.0, &mut rng);
        let b = uniform_values(out, -1.0, 1.0, &mut rng);
        let inputs = vec![(x, vec![rows, inp]), (w, vec![out, inp]), (b, vec![out])];
        let atol = 2e-5 * (rows.max(inp) as f32).sqrt() * 100.0;
        assert_devices_agree(
            &gpu,
            &inputs,
            &|t| ops::linear(&t[0], &t[1], Some(&t[2])),
            atol,
            1e-4,
            &format!("large-tile linear {rows}x{inp}->{out}"),
        );
        assert_devices_agree(
            &gpu,
            &inputs,
            &|t| ops::linear_gelu(&t[0], &t[1], Some(&t[2])),
            atol,
            1e-4,
            &format!("large-tile linear_gelu {rows}x{inp}->{out}"),
        );
    }
}

#[test]
fn matmul_launcher_picks_large_tiles_for_products_that_fill_a_large_gpu_with_them() {
    use engine::backend::MatmulSpec;
    use engine::gpu::{MatmulTiles, runs_on_large_tiles};
    let linear = |rows, inp, out| MatmulSpec {
        batch: 1,
        m: rows,
        n: out,
        k: inp,
        trans_a: false,
        trans_b: true,
        a_batch_stride: 0,
        b_batch_stride: 0,
    };
    let _auto = ForcedMatmulTiles::new(MatmulTiles::Auto);
    // ViT-B at batch 64 (50 visible tokens an image in the encoder, 197 in the decoder).
    for (rows, inp, out) in [(3200, 768, 2304), (3200, 768, 3072), (12608, 512, 2048), (12608, 2048, 512)] {
        assert!(runs_on_large_tiles(&linear(rows, inp, out)), "{rows}x{inp}->{out}");
    }
    // 150 large tiles (600 small ones keep more SMs busy); the micro preset at batch 256; one
    // row tile of many columns (the large tiles half empty).
    for (rows, inp, out) in [(3200, 3072, 768), (3328, 128, 384), (12800, 64, 192), (64, 512, 2048 * 64)] {
        assert!(!runs_on_large_tiles(&linear(rows, inp, out)), "{rows}x{inp}->{out}");
    }
    // Weight gradients dW = dY^T X ([out, in] over K = rows, A = dY stored [rows, out]): ViT-B's
    // (108 - 144 large tiles, or 16 - 64 in the decoder) split K on the large tiles; the micro
    // preset's at batch 256 (2 - 4 large tiles, too few workgroups even split) stay small.
    let weight_grad =
        |rows, inp, out| MatmulSpec { m: out, n: inp, k: rows, trans_a: true, trans_b: false, ..linear(0, 0, 0) };
    for (rows, inp, out) in
        [(3200, 768, 2304), (3200, 3072, 768), (3200, 768, 768), (12608, 512, 512), (12608, 512, 1536)]
    {
        assert!(runs_on_large_tiles(&weight_grad(rows, inp, out)), "weight gradient {rows}: {inp}->{out}");
    }
    for (rows, inp, out) in [(4352, 128, 384), (16640, 64, 192), (16640, 64, 64)] {
        assert!(!runs_on_large_tiles(&weight_grad(rows, inp, out)), "weight gradient {rows}: {inp}->{out}");
    }
    // A thread can force either kernel, and give the choice back.
    let small = linear(3, 4, 5);
    engine::gpu::force_matmul_tiles(Some(MatmulTiles::Large));
    assert!(runs_on_large_tiles(&small));
    engine::gpu::force_matmul_tiles(Some(MatmulTiles::Small));
    assert!(!runs_on_large_tiles(&linear(12608, 512, 2048)));
    assert_eq!(engine::gpu::force_matmul_tiles(None), Some(MatmulTiles::Small));
}
