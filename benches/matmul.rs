//! The CPU matmul: the plain-loop reference (`engine::cpu::reference::matmul`) against the fast
//! blocked kernel (`engine::cpu::matmul::matmul`, as the CPU backend calls it: best kernel, threads
//! chosen by size; and each SIMD micro-kernel the CPU has, `avx2fma` and `avx512`, on the same
//! threads; and the bf16 kernel, `bf16avx512`, where the CPU has AVX512_BF16), on square products
//! and on the shapes of MAE training.
//!
//! Throughput is declared as `Throughput::Elements(2 m n k batch)`, so the "elements" criterion
//! reports per second are FLOPs: read `Gelem/s` as GFLOP/s.
//!
//! The reference (one f64 multiply-add at a time, several seconds per GFLOP) is only run where it
//! takes under a second per call: squares up to 512 and the MAE forward shapes. Measurement times
//! are short (10 samples, ~2 s each) so the whole run takes a few minutes:
//! `cargo bench --bench matmul`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use engine::Rng;
use engine::backend::MatmulSpec;
use engine::cpu::matmul::Kernel;
use engine::cpu::{matmul, reference};

/// Rows of the activations in MAE training: a batch of 256 images, 13 tokens each in the encoder
/// (the visible patches), 50 in the decoder.
const ENCODER_ROWS: usize = 256 * 13;
const DECODER_ROWS: usize = 256 * 50;

struct Case {
    name: String,
    spec: MatmulSpec,
    with_bias: bool,
    run_reference: bool,
}

fn case(name: &str, spec: MatmulSpec, with_bias: bool, run_reference: bool) -> Case {
    Case { name: name.to_string(), spec, with_bias, run_reference }
}

fn bench_cases(c: &mut Criterion, group_name: &str, cases: Vec<Case>) {
    let mut group = c.benchmark_group(group_name);
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    let mut rng = Rng::new(42);
    for case in cases {
        let s = &case.spec;
        let a: Vec<f32> = (0..s.a_len()).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
        let b: Vec<f32> = (0..s.b_len()).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
        let bias: Option<Vec<f32>> = case.with_bias.then(|| vec![0.5; s.n]);
        let mut c = vec![0.0f32; s.batch * s.m * s.n];
        // "Elements" are FLOPs.
        group.throughput(Throughput::Elements(s.flops() as u64));
        group.bench_with_input(BenchmarkId::new("fast", &case.name), s, |bench, s| {
            bench.iter(|| matmul::matmul(black_box(&a), black_box(&b), bias.as_deref(), s, &mut c))
        });
        // Every SIMD kernel this CPU has, f32 and bf16 (`bf16avx512`: inputs rounded to bfloat16,
        // summed in f32), on the threads `matmul` would use (`fast` is the best f32 one).
        for kernel in [Kernel::Avx2Fma, Kernel::Avx512, Kernel::Bf16Avx512].into_iter().filter(|k| k.is_available()) {
            let id = BenchmarkId::new(format!("{kernel:?}").to_lowercase(), &case.name);
            group.bench_with_input(id, s, |bench, s| {
                let threads = matmul::auto_threads(s);
                bench.iter(|| {
                    matmul::matmul_with(kernel, threads, black_box(&a), black_box(&b), bias.as_deref(), s, &mut c)
                })
            });
        }
        if case.run_reference {
            group.bench_with_input(BenchmarkId::new("reference", &case.name), s, |bench, s| {
                bench.iter(|| reference::matmul(black_box(&a), black_box(&b), bias.as_deref(), s))
            });
        }
    }
    group.finish();
}

fn square(c: &mut Criterion) {
    let cases = [128, 256, 512, 1024]
        .into_iter()
        .map(|n| case(&n.to_string(), MatmulSpec::plain(n, n, n), false, n <= 512))
        .collect();
    bench_cases(c, "matmul_square", cases);
}

fn mae_shapes(c: &mut Criterion) {
    let plain = MatmulSpec::plain;
    let cases = vec![
        // Forward, with the bias of the linear layer fused in.
        case("qkv_3328x128x384", plain(ENCODER_ROWS, 384, 128), true, true),
        case("fc1_3328x128x512", plain(ENCODER_ROWS, 512, 128), true, true),
        case("fc2_3328x512x128", plain(ENCODER_ROWS, 128, 512), true, true),
        case("decoder_12800x64x256", plain(DECODER_ROWS, 256, 64), true, true),
        // Backward of qkv: the weight gradient X^T dY ([3328, 128]^T x [3328, 384]) and the
        // input gradient dY W^T ([3328, 384] x [128, 384]^T).
        case(
            "dweight_qkv_T3328x128_x_3328x384",
            MatmulSpec { trans_a: true, ..plain(128, 384, ENCODER_ROWS) },
            false,
            true,
        ),
        case(
            "dinput_qkv_3328x384_x_T128x384",
            MatmulSpec { trans_b: true, ..plain(ENCODER_ROWS, 128, 384) },
            false,
            true,
        ),
        // The tuned recipe's batch of 64 (832 encoder rows): fc1 forward, fc2 forward (its weight
        // stored [out, in], as the linear layers keep it) and the weight gradient of fc1.
        case("fc1_832x128x512", plain(64 * 13, 512, 128), true, false),
        case("fc2_832x512_x_T128x512", MatmulSpec { trans_b: true, ..plain(64 * 13, 128, 512) }, true, false),
        case("dweight_fc1_T832x128_x_832x512", MatmulSpec { trans_a: true, ..plain(128, 512, 64 * 13) }, false, false),
        // Attention-like: many small batched products, Q K^T of [13, 32] x [13, 32]^T per item.
        case(
            "attention_1024x_13x32_x_T13x32",
            MatmulSpec {
                batch: 1024,
                trans_b: true,
                a_batch_stride: 13 * 32,
                b_batch_stride: 13 * 32,
                ..plain(13, 13, 32)
            },
            false,
            true,
        ),
    ];
    bench_cases(c, "matmul_mae", cases);
}

criterion_group!(benches, square, mae_shapes);
criterion_main!(benches);
