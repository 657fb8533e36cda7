//! The CPU kernels other than matmul: the plain-loop reference (`engine::cpu::reference`) against
//! the fast ones (`engine::cpu::fast`), on the shapes of MAE pre-training (`mae_vit_micro_patch4_32`
//! at batch 256: encoder 256 x 13 tokens of 128, 4 heads of 32, MLP 512; decoder 256 x 65 tokens of
//! 64, 4 heads of 16, MLP 256; 64 patches of 48 values per image).
//!
//! Each kernel runs three ways: `reference`, `fast` (as the CPU backend calls it: best instruction
//! set, threads chosen by size) and `fast_1t` (forced onto one thread, to show what the second core
//! adds). Throughput is bytes read and written for the memory-bound kernels (read `GiB/s`), and
//! FLOPs for attention (`Throughput::Elements`: read `Gelem/s` as GFLOP/s, counting the products
//! only: `4 t^2 d` per head forward, `10 t^2 d` backward).
//!
//! Short measurements (10 samples, ~1.5 s each); the whole run takes a few minutes:
//! `cargo bench --bench cpu_kernels` (a filter such as `-- attention` runs a part).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime};
use engine::Rng;
use engine::backend::{AdamWSpec, AttentionSpec, AxisSpec, BinaryOp, CopyRowsSpec, GatherSpec, MaeLossSpec, UnaryOp};
use engine::cpu::fast::{adamw, attention, elementwise, layernorm, loss, permute, reduce, rows};
use engine::cpu::parallel::with_threads;
use engine::cpu::reference;

const BATCH: usize = 256;
/// Encoder rows (13 tokens: 12 visible + cls) and decoder rows (65 tokens: 64 patches + cls).
const ENC: usize = BATCH * 13;
const DEC: usize = BATCH * 65;

fn values(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| rng.uniform_range(-2.0, 2.0)).collect()
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_millis(1500));
    g
}

/// Benchmarks `reference`, then `fast` with automatic threads and on one thread.
fn three_ways<R>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    case: &str,
    mut reference: impl FnMut() -> R,
    mut fast: impl FnMut(),
) {
    g.bench_function(format!("reference/{case}"), |b| b.iter(|| black_box(reference())));
    g.bench_function(format!("fast/{case}"), |b| b.iter(&mut fast));
    g.bench_function(format!("fast_1t/{case}"), |b| b.iter(|| with_threads(1, &mut fast)));
}

fn bytes(floats: usize) -> Throughput {
    Throughput::Bytes(4 * floats as u64)
}

fn gelu(c: &mut Criterion) {
    let mut rng = Rng::new(1);
    let mut g = group(c, "gelu");
    for (case, n) in [("fc1_enc_3328x512", ENC * 512), ("fc1_dec_16640x256", DEC * 256)] {
        let x = values(n, &mut rng);
        let dy = values(n, &mut rng);
        let mut out = vec![0.0; n];
        g.throughput(bytes(2 * n));
        three_ways(
            &mut g,
            &format!("forward_{case}"),
            || reference::unary(UnaryOp::Gelu, &x),
            || elementwise::unary(UnaryOp::Gelu, &x, &mut out[..]),
        );
        g.throughput(bytes(3 * n));
        three_ways(
            &mut g,
            &format!("backward_{case}"),
            || reference::gelu_backward(&x, &dy),
            || elementwise::gelu_backward(&x, &dy, &mut out[..]),
        );
    }
    g.finish();
}

fn binary(c: &mut Criterion) {
    let mut rng = Rng::new(2);
    let mut g = group(c, "binary_add");
    // A residual (same shapes), the decoder's position table over the batch, a bias row.
    for (case, n, ny) in [
        ("residual_16640x64", DEC * 64, DEC * 64),
        ("pos_embed_256x65x64", DEC * 64, 65 * 64),
        ("bias_3328x512", ENC * 512, 512),
    ] {
        let x = values(n, &mut rng);
        let y = values(ny, &mut rng);
        let mut out = vec![0.0; n];
        g.throughput(bytes(2 * n + ny));
        three_ways(
            &mut g,
            case,
            || reference::binary(BinaryOp::Add, &x, &y),
            || elementwise::binary(BinaryOp::Add, &x, &y, &mut out[..]),
        );
    }
    g.finish();
}

fn layer_norm(c: &mut Criterion) {
    let mut rng = Rng::new(3);
    let mut g = group(c, "layernorm");
    for (case, rows_, cols) in [("enc_3328x128", ENC, 128), ("dec_16640x64", DEC, 64)] {
        let n = rows_ * cols;
        let (x, dy) = (values(n, &mut rng), values(n, &mut rng));
        let (gamma, beta) = (values(cols, &mut rng), values(cols, &mut rng));
        let (y, mean, rstd) = reference::layernorm(&x, &gamma, &beta, rows_, cols, 1e-6);
        let _ = y;
        let (mut o, mut m, mut r) = (vec![0.0; n], vec![0.0; rows_], vec![0.0; rows_]);
        g.throughput(bytes(2 * n));
        three_ways(
            &mut g,
            &format!("forward_{case}"),
            || reference::layernorm(&x, &gamma, &beta, rows_, cols, 1e-6),
            || layernorm::layernorm(&x, &gamma, &beta, 1e-6, &mut o[..], &mut m[..], &mut r[..]),
        );
        let (mut dx, mut dg, mut db) = (vec![0.0; n], vec![0.0; cols], vec![0.0; cols]);
        g.throughput(bytes(3 * n));
        three_ways(
            &mut g,
            &format!("backward_{case}"),
            || reference::layernorm_backward(&x, &gamma, &mean, &rstd, &dy, rows_, cols),
            || layernorm::layernorm_backward(&x, &gamma, &mean, &rstd, &dy, &mut dx[..], &mut dg, &mut db),
        );
    }
    g.finish();
}

fn attention_kernels(c: &mut Criterion) {
    let mut rng = Rng::new(4);
    let mut g = group(c, "attention");
    for (case, t, d) in [("enc_1024x13x32", 13, 32), ("dec_1024x65x16", 65, 16)] {
        let heads = BATCH * 4;
        let n = heads * t * d;
        let s = AttentionSpec { heads, seq: t, dim: d, scale: 1.0 / (d as f32).sqrt() };
        let (q, k, v, dout) = (values(n, &mut rng), values(n, &mut rng), values(n, &mut rng), values(n, &mut rng));
        let (out, lse) = reference::attention(&q, &k, &v, &s);
        let (mut o, mut l) = (vec![0.0; n], vec![0.0; heads * t]);
        let flops = (heads * t * t * d) as u64;
        g.throughput(Throughput::Elements(4 * flops));
        three_ways(
            &mut g,
            &format!("forward_{case}"),
            || reference::attention(&q, &k, &v, &s),
            || attention::attention(&q, &k, &v, &s, &mut o[..], &mut l[..]),
        );
        let (mut dq, mut dk, mut dv) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        g.throughput(Throughput::Elements(10 * flops));
        three_ways(
            &mut g,
            &format!("backward_{case}"),
            || reference::attention_backward(&q, &k, &v, &out, &dout, &s),
            || attention::attention_backward(&q, &k, &v, &out, &lse, &dout, &s, &mut dq[..], &mut dk[..], &mut dv[..]),
        );
    }
    g.finish();
}

fn layout(c: &mut Criterion) {
    let mut rng = Rng::new(5);
    let mut g = group(c, "layout");
    // The attention's head split [N, T, 3, H, hd] -> [3, N, H, T, hd] and merge [N, H, T, hd] -> [N, T, H, hd].
    let cases: [(&str, &[usize], &[usize]); 3] = [
        ("permute_split_256x65x3x4x16", &[BATCH, 65, 3, 4, 16], &[2, 0, 3, 1, 4]),
        ("permute_merge_256x4x65x16", &[BATCH, 4, 65, 16], &[0, 2, 1, 3]),
        ("permute_split_256x13x3x4x32", &[BATCH, 13, 3, 4, 32], &[2, 0, 3, 1, 4]),
    ];
    for (case, shape, perm) in cases {
        let n: usize = shape.iter().product();
        let x = values(n, &mut rng);
        let mut out = vec![0.0; n];
        g.throughput(bytes(2 * n));
        three_ways(
            &mut g,
            case,
            || reference::permute(&x, shape, perm),
            || permute::permute(&x, shape, perm, &mut out[..]),
        );
    }
    // The decoder's token concatenation: 1 + 64 rows of 64 into 65.
    let s =
        CopyRowsSpec { batch: BATCH, rows: 64, width: 64, src_rows: 64, src_offset: 0, dst_rows: 65, dst_offset: 1 };
    let src = values(BATCH * 64 * 64, &mut rng);
    let (mut dst, mut dst_ref) = (vec![0.0; BATCH * 65 * 64], vec![0.0; BATCH * 65 * 64]);
    g.throughput(bytes(2 * BATCH * 64 * 64));
    three_ways(
        &mut g,
        "copy_rows_into_256x64x64",
        || reference::copy_rows_into(&src, &mut dst_ref, &s),
        || rows::copy_rows_into(&src, &mut dst, &s),
    );
    // The unshuffle of the decoder tokens (gather 64 of 64 rows of 64) and its backward.
    let gs = GatherSpec { batch: BATCH, rows: 64, picks: 64, width: 64 };
    let idx: Vec<u32> = (0..BATCH * 64).map(|_| rng.below(64) as u32).collect();
    let mut o = vec![0.0; BATCH * 64 * 64];
    g.throughput(bytes(2 * BATCH * 64 * 64));
    three_ways(
        &mut g,
        "gather_rows_256x64x64",
        || reference::gather_rows(&src, &idx, &gs),
        || rows::gather_rows(&src, &idx, &gs, &mut o[..]),
    );
    three_ways(
        &mut g,
        "scatter_add_rows_256x64x64",
        || reference::scatter_add_rows(&src, &idx, &gs),
        || rows::scatter_add_rows(&src, &idx, &gs, &mut o[..]),
    );
    g.finish();
}

fn sums(c: &mut Criterion) {
    let mut rng = Rng::new(6);
    let mut g = group(c, "sum_axis");
    // Bias gradients: column sums of [rows, n].
    for (case, rows_, cols) in [("bias_grad_16640x256", DEC, 256), ("bias_grad_3328x384", ENC, 384)] {
        let x = values(rows_ * cols, &mut rng);
        let spec = AxisSpec { outer: 1, axis: rows_, inner: cols };
        let mut out = vec![0.0; cols];
        g.throughput(bytes(rows_ * cols));
        three_ways(&mut g, case, || reference::sum_axis(&x, &spec), || reduce::sum_axis(&x, &spec, &mut out));
    }
    g.finish();
}

fn others(c: &mut Criterion) {
    let mut rng = Rng::new(7);
    let mut g = group(c, "other");
    // The loss over 256 x 64 patches of 48 values, norm-pix.
    let s = MaeLossSpec { rows: BATCH * 64, patch: 48, norm_pix: true };
    let n = s.rows * s.patch;
    let (pred, target) = (values(n, &mut rng), values(n, &mut rng));
    let mask = vec![1.0; s.rows];
    let drow = vec![1.0; s.rows];
    let (mut l, mut d) = (vec![0.0; s.rows], vec![0.0; n]);
    g.throughput(bytes(2 * n));
    three_ways(
        &mut g,
        "mae_loss_16384x48",
        || reference::mae_loss_rows(&pred, &target, &mask, &s),
        || loss::mae_loss_rows(&pred, &target, &mask, &s, &mut l[..]),
    );
    g.throughput(bytes(3 * n));
    three_ways(
        &mut g,
        "mae_loss_backward_16384x48",
        || reference::mae_loss_backward(&pred, &target, &mask, &drow, &s),
        || loss::mae_loss_backward(&pred, &target, &mask, &drow, &s, &mut d[..]),
    );
    // AdamW on the largest weight of the model (fc1, 512 x 128).
    let len = 512 * 128;
    let spec = AdamWSpec {
        lr: 1e-4,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.05,
        bias_correction1: 0.1,
        bias_correction2: 0.05,
        grad_scale: 1.0,
    };
    let grad = values(len, &mut rng);
    let (mut p, mut m, mut v) = (values(len, &mut rng), vec![0.0; len], vec![0.0; len]);
    let (mut p2, mut m2, mut v2) = (p.clone(), m.clone(), v.clone());
    g.throughput(bytes(7 * len));
    three_ways(
        &mut g,
        "adamw_65536",
        || reference::adamw_step(&mut p2, &grad, &mut m2, &mut v2, &spec),
        || adamw::adamw_step(&mut p, &grad, &mut m, &mut v, &spec),
    );
    g.finish();
}

fn setup(c: &mut Criterion) {
    // As the trainer: freed output buffers are reused rather than faulted in again.
    engine::cpu::allocator::keep_freed_memory();
    let _ = c;
}

criterion_group!(benches, setup, gelu, binary, layer_norm, attention_kernels, layout, sums, others);
criterion_main!(benches);
