//! Every kernel of a training step on MAE's shapes under criterion: the cases are
//! `mae::bench::cases` (the Fashion-MNIST preset at batch 256), the same ones `mae bench` prints,
//! so there is one definition of what is measured and two runners.
//!
//! Each case runs on the CPU reference (plain loops, f64 sums), the fast CPU backend (threads
//! chosen by size), the fast CPU backend on one thread (what the second core adds; the matmul keeps
//! its own thread choice), and the GPU when this build has one and wgpu finds an adapter (software
//! ones included: lavapipe's figures show that the plumbing works, not GPU speed). On a CPU with
//! AVX-512, `cpu avx2fma` is the fast backend with its AVX2 copies of the non-matmul kernels, beside
//! `cpu` with the AVX-512 ones (and the other way round where AVX2 is the best). GPU iterations
//! end with a synchronisation, so the time is wall time for the work submitted. Throughput:
//! criterion's `Gelem/s` are GFLOP/s for products and attention, `GiB/s` bytes moved otherwise.
//!
//! `cargo bench --bench kernels` (a filter such as `-- attention` runs a part).

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use engine::Device;
use engine::cpu::fast::simd::{Isa, with_isa};
use engine::cpu::parallel::with_threads;
use mae::bench::{Work, cases};

fn kernels(c: &mut Criterion) {
    // As the trainer: freed output buffers are reused rather than faulted in again.
    engine::cpu::allocator::keep_freed_memory();
    engine::cpu::recycle::set_enabled(true);
    let mut devices = vec![("cpu", Device::Cpu)];
    match Device::gpu() {
        Ok(g) => {
            eprintln!("GPU: {}", g.name());
            devices.push(("gpu", g));
        }
        Err(e) => eprintln!("no GPU ({e}): GPU rows skipped"),
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
            if dev.is_cpu() {
                g.bench_function("cpu 1 thread", |b| b.iter(|| with_threads(1, || f().expect("kernel runs"))));
                // The other vectorised copies of the non-matmul kernels this CPU can run (`cpu`
                // above is `Isa::best()`'s; the matmul keeps its own kernel).
                for isa in [Isa::Avx2Fma, Isa::Avx512].into_iter().filter(|&i| i.is_available() && i != Isa::best()) {
                    let id = format!("cpu {}", format!("{isa:?}").to_lowercase());
                    g.bench_function(id, |b| b.iter(|| with_isa(isa, || f().expect("kernel runs"))));
                }
            }
        }
        g.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
