//! `mae reconstruct`: draw original | masked | reconstruction | reconstruction + visible patches
//! for the first images of a checkpoint's data.

use std::path::PathBuf;

use clap::Args;
use mae::Result;
use mae::data::Split;
use mae::data::image_set::{ImageSet, Normalization};
use mae::masking::MaskStrategy;

use super::common::{CheckpointArgs, DeviceArgs, Loaded, STRATEGIES, device, one_of};

#[derive(Args)]
pub struct ReconstructArgs {
    #[command(flatten)]
    source: CheckpointArgs,
    #[arg(long, default_value_t = 8)]
    count: usize,
    #[arg(long, default_value_t = 0.75, allow_hyphen_values = true)]
    mask_ratio: f32,
    #[arg(long, default_value = "random", value_parser = one_of::<MaskStrategy>(STRATEGIES))]
    mask_strategy: MaskStrategy,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "reconstructions.png")]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Runs `mae reconstruct`.
pub fn run(a: ReconstructArgs) -> Result<()> {
    let strategy = a.mask_strategy;
    mae::masking::check_ratio(a.mask_ratio)?;
    let dev = device(&a.device)?;
    let l = a.source.load(&dev)?;
    let set = picture_images(&l)?;
    let norm = input_normalization(&l, &set);
    mae::reconstruct::save_reconstructions(&l.model, &set, &norm, a.mask_ratio, strategy, a.seed, a.count, &a.out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

/// The images pictures of a model are drawn from: the test split of its data, else the training one.
pub fn picture_images(l: &Loaded) -> Result<ImageSet> {
    l.data.load(Split::Test, &l.model.config, 0).or_else(|_| l.data.load(Split::Train, &l.model.config, 0))
}

/// The normalisation `l`'s model trained with (as its checkpoint records it, else its data's own
/// for `set`).
pub fn input_normalization(l: &Loaded, set: &ImageSet) -> Normalization {
    l.norm.clone().unwrap_or_else(|| l.data.normalization(set))
}
