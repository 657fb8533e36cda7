//! `mae reconstruct`: draw original | masked | reconstruction | reconstruction + visible patches
//! for the first images of a checkpoint's data.

use std::path::PathBuf;

use clap::Args;
use mae::Result;
use mae::data::Split;
use mae::masking::MaskStrategy;

use super::common::{CheckpointArgs, DeviceArgs, STRATEGIES, device, one_of};

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
    let set =
        l.data.load(Split::Test, &l.model.config, 0).or_else(|_| l.data.load(Split::Train, &l.model.config, 0))?;
    let norm = l.norm.unwrap_or_else(|| l.data.normalization(&set));
    mae::reconstruct::save_reconstructions(&l.model, &set, &norm, a.mask_ratio, strategy, a.seed, a.count, &a.out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}
