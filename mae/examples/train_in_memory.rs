//! Embedding the trainer in a program: pre-train an MAE on images the program holds in memory,
//! driving the training loop step by step, save a checkpoint, load it back, and turn new images
//! into feature vectors.
//!
//! `cargo run --release -p mae --example train_in_memory -- [STEPS] [OUT_DIR]`
//! (`tests/examples.rs` at the workspace root runs it with 2 steps). Works without the GPU backend
//! (`--no-default-features`).

use std::sync::Arc;

use mae::checkpoint::{load_model, resolve_model_path};
use mae::config::ModelConfig;
use mae::data::image_set::ImageSet;
use mae::features::{FeatureSpec, Pool, extract};
use mae::source::DataSource;
use mae::train::{Budget, TrainOptions, Trainer};

/// The program's own data: `n` grey `size x size` images of a bright disc somewhere on a dark
/// gradient, as bytes `[n, 1, size, size]`.
fn discs(n: usize, size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as f32 / (1u64 << 31) as f32
    };
    let mut pixels = Vec::with_capacity(n * size * size);
    for _ in 0..n {
        let (cx, cy, r) = (next() * size as f32, next() * size as f32, 2.0 + next() * size as f32 / 4.0);
        for y in 0..size {
            for x in 0..size {
                let inside = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) < r * r;
                pixels.push(if inside { 230 } else { (2 * (x + y)) as u8 });
            }
        }
    }
    pixels
}

fn main() -> mae::error::Result<()> {
    let mut args = std::env::args().skip(1);
    let steps: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100);
    let out = args.next().map(Into::into).unwrap_or_else(|| std::env::temp_dir().join("mae-train-in-memory"));
    let _ = std::fs::remove_dir_all(&out);
    run(steps, out)?;
    Ok(())
}

/// Train for `steps` into `out`, then embed five new images; returns their features.
pub fn run(steps: u64, out: std::path::PathBuf) -> mae::error::Result<Vec<f32>> {
    // 1. Images in memory, handed to the trainer as a data source.
    let images = Arc::new(ImageSet::new("discs", 1, 28, 28, discs(1024, 28, 1))?);
    let data = DataSource::Memory { train: images.clone(), test: None };

    // 2. Configure, then drive the training loop: step, watch the loss, stop when it suits us.
    let model = ModelConfig::by_name("mae_vit_micro_patch4_28")?;
    let mut options = TrainOptions::new(model, data, out);
    options.budget = Budget { steps: Some(steps), ..Default::default() };
    options.batch_size = 64;
    options.base_lr = 1.5e-3;
    options.verbose = false;
    options.pictures = false;
    // The CPU here; `engine::Device::select(DeviceChoice::Auto)` picks a GPU when there is one.
    let mut trainer = Trainer::new(&options, &engine::Device::Cpu)?;
    while !trainer.is_done() {
        let r = trainer.step()?;
        if r.step % 25 == 0 || r.step == 1 {
            println!("step {}: loss {:.4} ({:.0} images/s)", r.step, r.loss, r.images_per_sec);
        }
        if r.loss < 0.05 {
            break; // a program's own stopping rule
        }
    }
    let report = trainer.finish()?; // the final checkpoint
    println!("trained {} steps; checkpoint {}", report.steps, report.checkpoint.display());

    // 3. Load the checkpoint (it names its own configuration) and embed images it has not seen.
    let (encoder, _meta) = load_model(&resolve_model_path(&report.checkpoint)?, None, &engine::Device::Cpu)?;
    let new_images = ImageSet::new("new discs", 1, 28, 28, discs(5, 28, 99))?;
    let spec = FeatureSpec::output(Pool::Both);
    let features = extract(&encoder, &new_images, &images.channel_stats(), spec, 64)?;
    let width = spec.width(encoder.config.embed_dim);
    println!("{} new images -> {} features each; the first starts {:?}", new_images.len(), width, &features[..4]);
    assert_eq!(features.len(), new_images.len() * width);
    Ok(features)
}
