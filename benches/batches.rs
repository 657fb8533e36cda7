//! Making a training batch on the host (`mae::data::loader::make_batch`: RandomResizedCrop, flip,
//! normalisation) under criterion, on one thread and on all of them, for the README's Fashion-MNIST
//! shape (batch 256 of 28 x 28 x 1) and ViT-B's (batch 64 of 224 x 224 x 3). A GPU step gets its
//! batch from a background thread (`mae/src/train/prefetch.rs`), so this must stay below the
//! step's time; criterion's `elem/s` are images per second.
//!
//! `cargo bench --bench batches`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use engine::Rng;
use engine::cpu::parallel::with_threads;
use mae::data::augment::Augment;
use mae::data::image_set::Normalization;
use mae::data::loader::make_batch;
use mae::data::synthetic::generate;

fn batches(c: &mut Criterion) {
    for (name, size, channels, batch) in [("fashion-mnist 28x28x1", 28, 1, 256), ("vit-b 224x224x3", 224, 3, 64)] {
        let set = generate(batch, size, channels, 1);
        let norm = Normalization::new(vec![0.5; channels], vec![0.25; channels]).expect("a valid normalisation");
        let indices: Vec<usize> = (0..batch).collect();
        let mut group = c.benchmark_group(format!("make_batch {name}, batch {batch}"));
        group.throughput(Throughput::Elements(batch as u64));
        group.sample_size(10);
        let threads = engine::cpu::parallel::max_threads();
        for t in [1, threads] {
            let mut rng = Rng::new(0);
            group.bench_function(format!("{t} threads"), |b| {
                b.iter(|| with_threads(t, || make_batch(&set, &indices, size, &Augment::mae(), &norm, &mut rng)))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, batches);
criterion_main!(benches);
