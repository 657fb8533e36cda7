//! Every kernel of a training step on MAE's shapes (`mae::bench::cases`: the Fashion-MNIST preset
//! at batch 256) on the CPU reference, the fast CPU backend and the GPU, under criterion. GPU iterations end with a
//! synchronisation, so the time is wall time for the work submitted; `mae bench` prints the same
//! cases with the GPU's own timestamp time beside it.
//!
//! `cargo bench --bench gpu_kernels`. The GPU is the best adapter wgpu finds, software ones
//! included (lavapipe's figures show that the plumbing works, not GPU speed); without one, only
//! the CPU rows run. Throughput: criterion's `Gelem/s` are GFLOP/s for products and attention.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use engine::Device;
use mae::bench::{Work, cases};

fn kernels(c: &mut Criterion) {
    let mut devices = vec![("cpu", Device::Cpu)];
    match Device::gpu() {
        Ok(g) => {
            eprintln!("GPU: {}", g.name());
            devices.push(("gpu", g));
        }
        Err(e) => eprintln!("no GPU adapter ({e}): GPU rows skipped"),
    }
    for case in cases(256) {
        let mut g = c.benchmark_group(case.name);
        g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
        g.throughput(match case.work {
            Work::Flops(f) => Throughput::Elements(f as u64),
            Work::Bytes(b) => Throughput::Bytes(b as u64),
        });
        if let Some(mut reference) = case.reference() {
            g.bench_function("cpu reference", |b| b.iter(&mut reference));
        }
        for (name, dev) in &devices {
            let mut f = case.prepare(dev).expect("inputs upload");
            g.bench_function(*name, |b| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    for _ in 0..iters {
                        f().expect("kernel runs");
                    }
                    dev.synchronize().expect("device finishes");
                    t.elapsed()
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
