//! Where a training step's time goes on the CPU: runs a few MAE pre-training steps (the same work
//! as `mae train`: augmentation, masking, forward, backward, AdamW) with the CPU backend's
//! per-kernel timer on, and prints the table.
//!
//! ```text
//! cargo run --release -p mae --example cpu_step_profile -- [DATA] [BATCH] [STEPS] [MODEL] [DECODER_DEPTH] [PRECISION]
//! ```
//! `DATA` is a data source as `mae train --data` takes it (default `builtin:3000`, which selects
//! `mae_vit_micro_patch4_32`; `fashion-mnist` selects `mae_vit_micro_patch4_28`), `BATCH` the batch
//! size (default 256), `STEPS` the number of timed steps (default 4), after one untimed warm-up step;
//! `DECODER_DEPTH` overrides the preset's (1 is the tuned recipe's for `mae_vit_micro_patch4_28`),
//! `PRECISION` is the products' (`bf16`, `mae train`'s default, or `f32`; see `--matmul-precision`).
//! With `MAE_PROFILE_SHAPES=1` each matmul shape gets its own row (`matmul BxMxNxK` and the
//! transposes of A and B), with its GFLOP/s.

use std::time::Instant;

use engine::cpu::profile;
use engine::{Device, backward};
use mae::MaskedAutoencoder;
use mae::batch::model_inputs;
use mae::config::ModelConfig;
use mae::data::Split;
use mae::data::augment::Augment;
use mae::data::loader::{Batcher, make_batch};
use mae::masking::{MaskStrategy, make_masking};
use mae::model::DeviceMasking;
use mae::nn::Param;
use mae::optim::{AdamW, AdamWConfig};
use mae::source::DataSource;
use mae::streams::{self, stream};

fn main() -> mae::Result<()> {
    // As `mae` does: keep freed activations' memory for the next step (see its docs).
    engine::cpu::allocator::keep_freed_memory();
    engine::cpu::recycle::set_enabled(true);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let data: DataSource = args.first().map(String::as_str).unwrap_or("builtin:3000").parse()?;
    let batch: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(256);
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(4);
    let model_name = match (args.get(3), &data) {
        (Some(name), _) => name.as_str(),
        (None, DataSource::FashionMnist { .. } | DataSource::Idx { .. }) => "mae_vit_micro_patch4_28",
        (None, _) => "mae_vit_micro_patch4_32",
    };
    let mut cfg = ModelConfig::by_name(model_name)?;
    if let Some(depth) = args.get(4).and_then(|s| s.parse().ok()) {
        cfg.decoder_depth = depth;
    }
    let precision: engine::cpu::matmul::Precision = match args.get(5) {
        Some(p) => p.parse().map_err(mae::Error::Config)?,
        None => engine::cpu::matmul::Precision::Bf16,
    };
    let _precision = engine::cpu::matmul::PrecisionScope::set(precision);
    let dev = Device::Cpu;
    let set = data.load(Split::Train, &cfg, 0)?;
    let norm = data.normalization(&set);
    let model = MaskedAutoencoder::new(&cfg, 0, &dev)?;
    let params: Vec<Param> = model.trainable();
    let mut opt = AdamW::new(AdamWConfig::default(), &params, &dev)?;
    let mut batcher = Batcher::new(set.len(), batch, 0, true)?;
    let aug = Augment::mae();
    println!(
        "{model_name} (decoder depth {}) on {data}, batch {batch}, {}, products {}",
        cfg.decoder_depth,
        dev.name(),
        precision.describe()
    );

    // One step; returns the loss and the seconds spent preparing the batch on the host.
    let mut run_step = |u: u64| -> mae::Result<(f32, f64)> {
        let t0 = Instant::now();
        let mut rng = stream(0, u, streams::TRAIN_BATCH);
        let idx = batcher.next_batch().to_vec();
        let (images, _) = make_batch(&set, &idx, cfg.img_size, &aug, &norm, &mut rng);
        let (patches, target) = model_inputs(&cfg, &images, idx.len(), &dev)?;
        let masking = make_masking(MaskStrategy::Random, idx.len(), cfg.grid_size(), 0.75, &mut rng)?;
        let dm = DeviceMasking::new(&masking, &dev)?;
        let host = t0.elapsed().as_secs_f64();
        let out = model.forward(&patches, &target, &dm)?;
        backward(&out.loss)?;
        let loss = out.loss.item()?;
        opt.step(&params, 1e-4, 1.0)?;
        Ok((loss, host))
    };

    run_step(0)?;
    let mut host_secs = 0.0;
    let shapes = std::env::var("MAE_PROFILE_SHAPES").is_ok_and(|v| v == "1");
    if shapes {
        profile::start_detailed()
    } else {
        profile::start()
    }
    let t0 = Instant::now();
    for u in 1..=steps as u64 {
        let s = Instant::now();
        let (loss, host) = run_step(u)?;
        host_secs += host;
        let dt = s.elapsed().as_secs_f64();
        println!("step {u}: loss {loss:.4}, {:.0} ms, {:.0} img/s", 1e3 * dt, batch as f64 / dt);
    }
    let wall = t0.elapsed().as_secs_f64();
    let rows = profile::stop();
    let in_kernels: f64 = rows.iter().map(|r| r.seconds).sum();
    println!(
        "\n{steps} steps in {wall:.3} s: {:.0} img/s; {:.1}% of the time in backend kernels, {:.1}% preparing batches on the host\n",
        (steps * batch) as f64 / wall,
        100.0 * in_kernels / wall,
        100.0 * host_secs / wall
    );
    print!("{}", profile::format_table(&rows));
    if shapes {
        println!("\nmatmul shapes, GFLOP/s:");
        for r in rows.iter().filter(|r| r.name.starts_with("matmul ")) {
            let dims: Vec<f64> = r.name[7..].split([' ', 'x']).take(4).filter_map(|v| v.parse().ok()).collect();
            let flops = 2.0 * dims.iter().product::<f64>() * r.calls as f64;
            println!("{:<36} {:>7.1}", r.name, flops / r.seconds / 1e9);
        }
    }
    Ok(())
}
