//! The f16 tensor-core products (`shaders/matmul_coop.wgsl`, run at `Precision::F16` where the
//! adapter lists f16 16 x 16 x 16 cooperative matrices) against the CPU at the same precision,
//! which rounds the operands to f16 as it packs them and sums in f32 (`cpu/matmul/f16.rs`, itself
//! held to `cpu::reference` on rounded operands by `cpu_matmul.rs`). Both sides read the same f16
//! values, so they differ only by the order (and the tensor cores' internal rounding) of f32 sums.
//!
//! lavapipe has no cooperative matrices: there the kernel tests say SKIPPED with the reason (naga
//! turns the kernel into SPIR-V in `shaders_validate.rs` instead), and what runs is the fallback:
//! at f16 a GPU without them computes f32 products. The device run (`../shared/gpu/`) carries this
//! file to an NVIDIA GPU.
#![cfg(feature = "gpu")]

mod common;

use common::*;
use engine::cpu::matmul::{Precision, with_precision};
use engine::{Device, Rng, Tensor, ops};

/// The GPU, if it has f16 tensor cores; else `None` after saying why (with `CI` set a missing
/// adapter still fails, in `test_device`).
fn tensor_core_gpu() -> Option<Device> {
    let gpu = engine::gpu::test_device()?;
    let Device::Gpu(g) = &gpu else { unreachable!() };
    if !g.context().has_f16_tensor_cores() {
        eprintln!(
            "SKIPPED: {} lists no f16 16x16x16 cooperative matrices with 32-wide subgroups: the \
             tensor-core kernel runs only on the device (../shared/gpu/)",
            g.context().adapter.name
        );
        return None;
    }
    Some(gpu)
}

/// Runs `f` forward and backward on the CPU and on `gpu`, both at f16, and compares outputs and
/// gradients. `depth` is the longest sum any of them takes (the largest of the product's M, N and
/// K: the backward sums over the other two). The tolerance is the f32 kernels' (`gpu_kernels.rs`)
/// widened for the tensor cores' sums, whose additions inside a 16-deep block need not round as an
/// FMA chain does.
fn assert_f16_devices_agree(
    gpu: &Device,
    inputs: &[(Vec<f32>, Vec<usize>)],
    f: &dyn Fn(&[Tensor]) -> engine::Result<Tensor>,
    depth: usize,
    what: &str,
) {
    let cpu = with_precision(Precision::F16, || run_on(&Device::Cpu, inputs, f));
    let got = with_precision(Precision::F16, || run_on(gpu, inputs, f));
    let scale = inputs.iter().map(|(v, _)| max_abs(v).max(1.0)).fold(1.0f32, f32::max);
    let atol = 1e-4 * (depth as f32).max(1.0).sqrt() * scale * scale;
    assert_close(&got.out, &cpu.out, atol, 1e-3, &format!("{what}: forward"));
    for (i, (g, c)) in got.grads.iter().zip(&cpu.grads).enumerate() {
        assert_close(g, c, atol, 1e-3, &format!("{what}: gradient of input {i}"));
    }
}

#[test]
fn tensor_core_products_match_the_cpu_at_f16_on_uneven_shapes_every_transpose_and_bias() {
    let Some(gpu) = tensor_core_gpu() else { return };
    let mut rng = Rng::new(61);
    // Uneven shapes, one deeper than a step and several tiles wide, and long-K products of few
    // tiles, which run split-K without a bias.
    let shapes =
        [(1, 1, 1), (1, 137, 3), (45, 65, 33), (129, 257, 63), (200, 150, 97), (45, 65, 1100), (64, 130, 3000)];
    for &(m, n, k) in &shapes {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            for with_bias in [false, true] {
                let a_shape = if ta { vec![k, m] } else { vec![m, k] };
                let b_shape = if tb { vec![n, k] } else { vec![k, n] };
                // Magnitudes 1e-2 to 1e2: inside f16's normal range, products over eight decades.
                let mut inputs = vec![
                    (wide_values(m * k, -2.0, 2.0, &mut rng), a_shape),
                    (wide_values(k * n, -2.0, 2.0, &mut rng), b_shape),
                ];
                if with_bias {
                    inputs.push((wide_values(n, -2.0, 2.0, &mut rng), vec![n]));
                }
                let what = format!("f16 matmul {m}x{n}x{k} ta={ta} tb={tb} bias={with_bias}");
                assert_f16_devices_agree(
                    &gpu,
                    &inputs,
                    &|t| ops::matmul_ex(&t[0], &t[1], t.get(2), ta, tb),
                    m.max(n).max(k),
                    &what,
                );
            }
        }
    }
}

#[test]
fn tensor_core_linear_layers_with_gelu_and_batches_match_the_cpu_at_f16() {
    let Some(gpu) = tensor_core_gpu() else { return };
    let mut rng = Rng::new(62);
    // A linear layer's backward takes the weight gradient and the bias sums together
    // (`matmul_with_a_sums`); the fused GELU epilogue; a batched product with a shared operand.
    let (rows, d_in, d_out) = (333, 70, 150);
    let x = uniform_values(rows * d_in, -2.0, 2.0, &mut rng);
    let w = uniform_values(d_out * d_in, -0.5, 0.5, &mut rng);
    let bias = uniform_values(d_out, -1.0, 1.0, &mut rng);
    let inputs = [(x, vec![rows, d_in]), (w, vec![d_out, d_in]), (bias, vec![d_out])];
    assert_f16_devices_agree(&gpu, &inputs, &|t| ops::linear(&t[0], &t[1], Some(&t[2])), rows, "f16 linear");
    assert_f16_devices_agree(&gpu, &inputs, &|t| ops::linear_gelu(&t[0], &t[1], Some(&t[2])), rows, "f16 linear_gelu");
    // An MLP, whose backward takes GELU's derivative in the store of fc2's input gradient: what
    // fc1 + GELU and fc2 apart give on the same GPU (each checked against the CPU above; two f16
    // products in a row put the CPU's and the GPU's summation orders a rounding apart).
    let mut mlp_inputs = inputs.to_vec();
    mlp_inputs.push((uniform_values(d_in * d_out, -0.5, 0.5, &mut rng), vec![d_in, d_out]));
    mlp_inputs.push((uniform_values(d_in, -1.0, 1.0, &mut rng), vec![d_in]));
    let fused = with_precision(Precision::F16, || {
        run_on(&gpu, &mlp_inputs, &|t| ops::mlp(&t[0], &t[1], Some(&t[2]), &t[3], Some(&t[4])))
    });
    let apart = with_precision(Precision::F16, || {
        run_on(&gpu, &mlp_inputs, &|t| ops::linear(&ops::linear_gelu(&t[0], &t[1], Some(&t[2]))?, &t[3], Some(&t[4])))
    });
    assert_close(&fused.out, &apart.out, 1e-6, 1e-5, "f16 mlp: forward");
    for (i, (f, a)) in fused.grads.iter().zip(&apart.grads).enumerate() {
        assert_close(f, a, 1e-6, 1e-5, &format!("f16 mlp: gradient of input {i}, fused against apart"));
    }
    let (batch, m, n, k) = (3, 17, 33, 40);
    let a = uniform_values(batch * m * k, -2.0, 2.0, &mut rng);
    let b = uniform_values(k * n, -2.0, 2.0, &mut rng);
    let inputs = [(a, vec![batch, m, k]), (b, vec![k, n])];
    assert_f16_devices_agree(&gpu, &inputs, &|t| ops::matmul(&t[0], &t[1]), 40, "f16 batched matmul, shared B");
}

#[test]
fn tensor_core_linear_layers_write_their_gradients_into_packed_homes() {
    let Some(gpu) = tensor_core_gpu() else { return };
    let mut rng = Rng::new(64);
    // One pass, and a K long enough to split (the weight gradient's slices summed into its home).
    for &(rows, d_in, d_out) in &[(333, 70, 150), (3000, 64, 96)] {
        let inputs = [
            (uniform_values(rows * d_in, -2.0, 2.0, &mut rng), vec![rows, d_in]),
            (uniform_values(d_out * d_in, -0.5, 0.5, &mut rng), vec![d_out, d_in]),
            (uniform_values(d_out, -1.0, 1.0, &mut rng), vec![d_out]),
        ];
        let f = |t: &[Tensor]| ops::linear(&t[0], &t[1], Some(&t[2]));
        let cpu = with_precision(Precision::F16, || run_on(&Device::Cpu, &inputs, &f));
        let (got, at_home, _) = with_precision(Precision::F16, || run_on_packed(&gpu, &inputs, &f, 1));
        assert_eq!(at_home, [false, true, true], "{rows}x{d_in}->{d_out}: the gradients lie in their homes");
        let atol = 1e-4 * (rows as f32).sqrt() * 4.0;
        for (i, (g, c)) in got.grads.iter().zip(&cpu.grads).enumerate() {
            assert_close(g, c, atol, 1e-3, &format!("f16 linear {rows}x{d_in}->{d_out}, packed: gradient {i}"));
        }
    }
}

#[test]
fn tensor_core_products_round_their_operands_to_f16_and_overflow_past_65504() {
    let Some(gpu) = tensor_core_gpu() else { return };
    // 1 + 2^-12 is not an f16: rounded, a 1 x 1 x 32 product of it with ones is exactly 32, where
    // f32 gives 32 + 2^-7. And a value past f16's largest makes an infinite product: what the
    // loss scale of f16 training backs off from.
    let on = |a: &[f32], b: &[f32], k: usize| {
        let a = Tensor::from_slice(a, &[1, k], &gpu).unwrap();
        let b = Tensor::from_slice(b, &[k, 1], &gpu).unwrap();
        with_precision(Precision::F16, || ops::matmul(&a, &b).unwrap().to_vec().unwrap())
    };
    assert_eq!(on(&[1.0 + 2f32.powi(-12); 32], &[1.0; 32], 32), [32.0]);
    assert_eq!(on(&[70000.0], &[1.0], 1), [f32::INFINITY]);
}

#[test]
fn at_f16_a_gpu_without_tensor_cores_computes_f32_products_and_says_so() {
    let Some(gpu) = engine::gpu::test_device() else { return };
    let Device::Gpu(g) = &gpu else { unreachable!() };
    let described = gpu.describe_products(Precision::F16);
    if g.context().has_f16_tensor_cores() {
        assert!(described.contains("tensor cores"), "{described}");
        eprintln!("SKIPPED: {} has f16 tensor cores, so f16 products are not f32 here", g.context().adapter.name);
        return;
    }
    assert!(described.starts_with("f32 (f16 allowed"), "{described}");
    let mut rng = Rng::new(63);
    let inputs = [
        (wide_values(45 * 33, -3.0, 3.0, &mut rng), vec![45, 33]),
        (wide_values(33 * 65, -3.0, 3.0, &mut rng), vec![33, 65]),
    ];
    let f = |t: &[Tensor]| ops::matmul(&t[0], &t[1]);
    let at_f16 = with_precision(Precision::F16, || run_on(&gpu, &inputs, &f));
    let at_f32 = run_on(&gpu, &inputs, &f);
    assert_eq!(at_f16.out, at_f32.out, "the f32 kernels, bit for bit");
    assert_eq!(at_f16.grads, at_f32.grads);
}
