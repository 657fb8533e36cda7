//! Tests that count what the one GPU context of the process did (dispatches, profiles): their own
//! binary, one at a time, so that no other test's kernels land in the counts.
#![cfg(feature = "gpu")]

mod common;

use std::sync::{Mutex, MutexGuard};

use common::*;
use engine::{Device, Rng, Tensor, ops};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The GPU for a counting test, with this binary's lock held while the guard lives.
fn counting_gpu() -> Option<(MutexGuard<'static, ()>, Device)> {
    let one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    Some((one, engine::gpu::test_device()?))
}

/// Dispatches recorded while `f` runs, once the work recorded before it has finished.
fn dispatches(gpu: &Device, f: impl FnOnce()) -> u64 {
    gpu.synchronize().unwrap();
    let before = gpu.gpu_counters().unwrap().dispatches;
    f();
    gpu.gpu_counters().unwrap().dispatches - before
}

/// A tensor of `shape` on `gpu` with values in [-1, 1) that wants gradients.
fn leaf(shape: &[usize], rng: &mut Rng, gpu: &Device) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(uniform_values(n, -1.0, 1.0, rng), shape, gpu).unwrap().with_grad()
}

/// `(entry [constants] grid, dispatches, ns)` for what `f` dispatches, or `None` (and SKIPPED) on
/// an adapter without timestamp queries.
fn profile_by_shape(gpu: &Device, f: impl FnOnce()) -> Option<Vec<(String, u64, f64)>> {
    let Device::Gpu(g) = gpu else { unreachable!() };
    let ctx = g.context();
    if !ctx.has_timestamps() {
        eprintln!("SKIPPED: {} has no timestamp queries", ctx.adapter.name);
        return None;
    }
    ctx.start_profiling_by_shape().unwrap();
    f();
    Some(ctx.stop_profiling().unwrap())
}

#[test]
fn fused_linear_gelu_is_one_dispatch_where_the_pair_is_two() {
    let Some((_one, gpu)) = counting_gpu() else { return };
    let mut rng = Rng::new(17);
    let x = Tensor::from_vec(uniform_values(45 * 33, -2.0, 2.0, &mut rng), &[45, 33], &gpu).unwrap();
    let w = Tensor::from_vec(uniform_values(65 * 33, -1.0, 1.0, &mut rng), &[65, 33], &gpu).unwrap();
    assert_eq!(dispatches(&gpu, || drop(ops::linear_gelu(&x, &w, None).unwrap())), 1);
    assert_eq!(dispatches(&gpu, || drop(ops::gelu(&ops::linear(&x, &w, None).unwrap()).unwrap())), 2);
}

#[test]
fn an_mlps_backward_takes_gelus_derivative_in_the_product_one_dispatch_fewer() {
    let Some((_one, gpu)) = counting_gpu() else { return };
    let mut rng = Rng::new(18);
    let mut leaf = |shape: &[usize]| leaf(shape, &mut rng, &gpu);
    let (x, w1, b1, w2, b2) = (leaf(&[45, 33]), leaf(&[65, 33]), leaf(&[65]), leaf(&[33, 65]), leaf(&[33]));
    let step = |fused: bool| {
        [&x, &w1, &b1, &w2, &b2].iter().for_each(|t| t.zero_grad());
        dispatches(&gpu, || {
            let y = match fused {
                true => ops::mlp(&x, &w1, Some(&b1), &w2, Some(&b2)).unwrap(),
                false => ops::linear(&ops::linear_gelu(&x, &w1, Some(&b1)).unwrap(), &w2, Some(&b2)).unwrap(),
            };
            engine::backward(&y.sum().unwrap()).unwrap();
        })
    };
    let (fused, apart) = (step(true), step(false));
    assert_eq!(fused + 1, apart, "mlp: {fused} dispatches, fc1 + GELU then fc2: {apart}");
}

#[test]
fn a_layernorms_backward_is_two_dispatches_dx_with_the_parameter_partials_then_their_sum() {
    let Some((_one, gpu)) = counting_gpu() else { return };
    let mut rng = Rng::new(19);
    let mut leaf = |shape: &[usize]| leaf(shape, &mut rng, &gpu);
    let (x, gamma, beta) = (leaf(&[301, 45]), leaf(&[45]), leaf(&[45]));
    let y = ops::layer_norm(&x, &gamma, &beta, 1e-6).unwrap();
    let seed = Tensor::full(y.shape(), 1.0, &gpu).unwrap();
    assert_eq!(dispatches(&gpu, || engine::tape::backward_with(&y, &seed).unwrap()), 2);
}

#[test]
fn a_long_k_product_with_few_tiles_is_split_and_summed_in_two_dispatches() {
    let Some((_one, gpu)) = counting_gpu() else { return };
    let mut rng = Rng::new(3);
    // A weight gradient's shape: [K, M]^T x [K, N] with K = 3000, M x N one tile.
    let a = Tensor::from_vec(uniform_values(3000 * 40, -1.0, 1.0, &mut rng), &[3000, 40], &gpu).unwrap();
    let b = Tensor::from_vec(uniform_values(3000 * 24, -1.0, 1.0, &mut rng), &[3000, 24], &gpu).unwrap();
    let Some(rows) = profile_by_shape(&gpu, || drop(ops::matmul_ex(&a, &b, None, true, false).unwrap())) else {
        return;
    };
    // 3000 / 256 = 11 slices wanted: chunks of 288 (a multiple of 16), 11 slices.
    let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(rows.len(), 2, "{names:?}");
    assert!(
        names.contains(&"matmul [TRANS_A=1,TRANS_B=0,GELU=0,GELU_GRAD=0,VEC4=1,A_SUMS=0] grid 1x1x11"),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.starts_with("sum_cols")), "{names:?}");
}

#[test]
fn profiling_by_shape_gives_one_row_per_product_with_its_constants_and_grid() {
    let Some((_one, gpu)) = counting_gpu() else { return };
    let a = Tensor::from_vec(vec![1.0; 70 * 8], &[70, 8], &gpu).unwrap();
    let b = Tensor::from_vec(vec![1.0; 8 * 130], &[8, 130], &gpu).unwrap();
    let Some(rows) = profile_by_shape(&gpu, || {
        for _ in 0..2 {
            drop(ops::matmul(&a, &b).unwrap());
        }
        drop(ops::matmul_ex(&a, &a, None, true, false).unwrap());
    }) else {
        return;
    };
    let count = |name: &str| rows.iter().find(|r| r.0 == name).map(|r| r.1);
    assert_eq!(
        count("matmul [TRANS_A=0,TRANS_B=0,GELU=0,GELU_GRAD=0,VEC4=0,A_SUMS=0] grid 3x2x1"),
        Some(2),
        "{rows:?}"
    );
    assert_eq!(
        count("matmul [TRANS_A=1,TRANS_B=0,GELU=0,GELU_GRAD=0,VEC4=1,A_SUMS=0] grid 1x1x1"),
        Some(1),
        "{rows:?}"
    );
}

#[test]
fn the_profile_counts_each_products_flops_once_even_split_over_k() {
    let Some((_one, gpu)) = counting_gpu() else { return };
    let Device::Gpu(g) = &gpu else { unreachable!() };
    let ctx = g.context();
    if !ctx.has_timestamps() {
        eprintln!("SKIPPED: {} has no timestamp queries", ctx.adapter.name);
        return;
    }
    // A batched product, and a long-K one with few tiles (split over K into slices, then summed).
    let a = Tensor::from_vec(vec![1.0; 3 * 37 * 11], &[3, 37, 11], &gpu).unwrap();
    let b = Tensor::from_vec(vec![1.0; 3 * 11 * 29], &[3, 11, 29], &gpu).unwrap();
    let long_a = Tensor::from_vec(vec![1.0; 20 * 4096], &[20, 4096], &gpu).unwrap();
    let long_b = Tensor::from_vec(vec![1.0; 4096 * 12], &[4096, 12], &gpu).unwrap();
    ctx.start_profiling().unwrap();
    drop(ops::matmul(&a, &b).unwrap());
    drop(ops::matmul(&long_a, &long_b).unwrap());
    let rows = ctx.stop_profiling_kernels().unwrap();
    let flops = |name: &str| rows.iter().filter(|k| k.name == name).map(|k| k.flops).sum::<u64>();
    assert_eq!(flops("matmul"), 2 * 3 * 37 * 29 * 11 + 2 * 20 * 12 * 4096, "{rows:?}");
    assert_eq!(flops("sum_cols"), 0, "the slices' sum is no product: {rows:?}");
    assert!(rows.iter().any(|k| k.name == "sum_cols"), "the long product was split: {rows:?}");
    let matmul = rows.iter().find(|k| k.name == "matmul").unwrap();
    assert!(matmul.tflops() > 0.0 && matmul.tflops() == matmul.flops as f64 / matmul.ns * 1e-3);
}

#[test]
fn a_token_slices_backward_is_one_dispatch_that_writes_the_zeros_too() {
    let Some((_one, gpu)) = counting_gpu() else { return };
    let mut rng = Rng::new(6);
    let x = leaf(&[3, 7, 5], &mut rng, &gpu);
    let y = ops::slice_tokens(&x, 2, 4).unwrap();
    let seed = Tensor::from_vec(uniform_values(3 * 4 * 5, -1.0, 1.0, &mut rng), &[3, 4, 5], &gpu).unwrap();
    let loss = y.mul(&seed).unwrap().sum().unwrap();
    // The seed (a fill), the sum's and the product's backward, and the slice's: one place_rows.
    assert_eq!(dispatches(&gpu, || engine::backward(&loss).unwrap()), 4);
    let (dx, seed) = (x.grad().unwrap().to_vec().unwrap(), seed.to_vec().unwrap());
    for (i, v) in dx.iter().enumerate() {
        let (n, t, c) = (i / 35, i / 5 % 7, i % 5);
        let want = if (2..6).contains(&t) { seed[(n * 4 + t - 2) * 5 + c] } else { 0.0 };
        assert_eq!(*v, want, "dx[{n}, {t}, {c}]");
    }
    // An empty slice's backward is all zeros.
    x.zero_grad();
    let empty = ops::slice_tokens(&x, 7, 0).unwrap();
    engine::backward(&empty.sum().unwrap()).unwrap();
    assert!(x.grad().unwrap().to_vec().unwrap().iter().all(|&v| v == 0.0));
}

#[test]
fn a_linear_layers_weight_and_bias_gradients_take_one_dispatch() {
    let Some((_one, gpu)) = counting_gpu() else { return };
    let mut rng = Rng::new(5);
    let x = Tensor::from_vec(uniform_values(300 * 40, -1.0, 1.0, &mut rng), &[300, 40], &gpu).unwrap();
    let w = Tensor::from_vec(uniform_values(24 * 40, -1.0, 1.0, &mut rng), &[24, 40], &gpu).unwrap().with_grad();
    let b = Tensor::zeros(&[24], &gpu).unwrap().with_grad();
    let loss = ops::linear(&x, &w, Some(&b)).unwrap().sum().unwrap();
    // The seed gradient (a fill), the sum's backward (a broadcast) and the product dY^T X that also
    // sums dY's columns; no gradient for x (a constant), no separate bias reduction.
    assert_eq!(dispatches(&gpu, || engine::backward(&loss).unwrap()), 3);
    let db = b.grad().unwrap().to_vec().unwrap();
    assert!(db.iter().all(|&v| v == 300.0), "{db:?}");
}

#[test]
fn a_repeated_step_reuses_its_bind_groups_and_still_computes_on_new_values() {
    let Some((_one, gpu)) = counting_gpu() else { return };
    let Device::Gpu(g) = &gpu else { unreachable!() };
    let ctx = g.context();
    let mut rng = Rng::new(29);
    // A small step: a fused product, a LayerNorm-free tail, and a reduction, on uneven shapes.
    let step = |device: &Device, x: &[f32], w: &[f32]| -> Vec<f32> {
        let x = Tensor::from_vec(x.to_vec(), &[45, 33], device).unwrap();
        let w = Tensor::from_vec(w.to_vec(), &[65, 33], device).unwrap();
        let y = ops::linear_gelu(&x, &w, None).unwrap();
        let z = y.mul(&y).unwrap().add(&y).unwrap();
        let mut out = z.to_vec().unwrap();
        out.push(z.sum().unwrap().item().unwrap());
        out
    };
    let inputs: Vec<(Vec<f32>, Vec<f32>)> = (0..3)
        .map(|_| (uniform_values(45 * 33, -2.0, 2.0, &mut rng), uniform_values(65 * 33, -1.0, 1.0, &mut rng)))
        .collect();
    // Warm-up: the first step creates its buffers; the pool hands the next ones back in the order
    // the step freed them, which settles after a step or two.
    for _ in 0..3 {
        step(&gpu, &inputs[0].0, &inputs[0].1);
    }
    gpu.synchronize().unwrap();
    let before = ctx.counters();
    // The same buffers come back from the pool with new values: the cached bind groups must bind
    // them, not stale ones.
    for (x, w) in &inputs[1..] {
        assert_close(&step(&gpu, x, w), &step(&Device::Cpu, x, w), 1e-4, 1e-4, "a step on cached bind groups");
    }
    let work = ctx.counters() - before;
    assert!(work.dispatches > 0, "{work}");
    assert_eq!(work.bind_groups_created, 0, "a repeated step created bind groups: {work}");
    // Handing the pool's buffers back empties the cache too; the next step builds its groups anew.
    ctx.release_cached();
    let before = ctx.counters();
    let (x, w) = &inputs[2];
    assert_close(&step(&gpu, x, w), &step(&Device::Cpu, x, w), 1e-4, 1e-4, "after release_cached");
    assert!((ctx.counters() - before).bind_groups_created > 0);
}

#[test]
fn a_gather_with_a_fill_row_assembles_maes_decoder_tokens_in_one_dispatch_and_three_back() {
    let Some((_one, gpu)) = counting_gpu() else { return };
    let mut rng = Rng::new(20);
    // The decoder's shape of it: 3 samples, a cls token and 4 visible tokens of 7 patches, the
    // mask token (row 5) in the 3 removed places.
    let (n, k, l, d) = (3, 4, 7, 5);
    let x = leaf(&[n, 1 + k, d], &mut rng, &gpu);
    let mask_token = leaf(&[d], &mut rng, &gpu);
    let picks: Vec<u32> = [[0, 3, 5, 1, 5, 2, 5, 4], [0, 5, 1, 2, 5, 5, 4, 3], [0, 4, 5, 5, 3, 2, 1, 5]].concat();
    let picks = engine::Indices::new(picks, &[n, 1 + l]).unwrap();
    let mut tokens = None;
    let forward = dispatches(&gpu, || tokens = Some(ops::gather_rows_with_fill(&x, &mask_token, &picks).unwrap()));
    assert_eq!(forward, 1);
    // The backward: x's rows gathered by the inverse table, the mask token's rows summed in two
    // passes. (Seeded with ones: no dispatch of a loss's own.)
    let y = tokens.unwrap();
    let seed = Tensor::full(y.shape(), 1.0, &gpu).unwrap();
    assert_eq!(dispatches(&gpu, || engine::tape::backward_with(&y, &seed).unwrap()), 3);
}

#[test]
fn the_mae_loss_is_two_dispatches_and_its_backward_one() {
    let Some((_one, gpu)) = counting_gpu() else { return };
    let mut rng = Rng::new(21);
    let (n, l, p) = (3, 17, 12);
    let pred = leaf(&[n, l, p], &mut rng, &gpu);
    let target = Tensor::from_vec(uniform_values(n * l * p, -1.0, 1.0, &mut rng), &[n, l, p], &gpu).unwrap();
    let mask: Vec<f32> = (0..n * l).map(|i| (i % 4 != 0) as u8 as f32).collect();
    let mask = Tensor::from_vec(mask, &[n, l], &gpu).unwrap();
    let mut loss = None;
    // The per-patch losses, then their mean over the mask in one workgroup.
    assert_eq!(dispatches(&gpu, || loss = Some(ops::mae_loss(&pred, &target, &mask, true).unwrap())), 2);
    let loss = loss.unwrap();
    let seed = Tensor::full(&[], 1.0, &gpu).unwrap();
    assert_eq!(dispatches(&gpu, || engine::tape::backward_with(&loss, &seed).unwrap()), 1);
}
