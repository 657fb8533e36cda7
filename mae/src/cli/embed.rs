//! `mae embed`: write a frozen encoder's features of a data set to a `.npy` file, its labels beside.

use std::path::PathBuf;

use clap::Args;
use mae::Result;
use mae::data::Split;

use super::common::{CheckpointArgs, DeviceArgs, FeatureArgs, device};

/// `--split`: which half of the data.
#[derive(Clone, Copy, clap::ValueEnum)]
enum SplitArg {
    Train,
    Test,
}

#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    source: CheckpointArgs,
    #[arg(long, default_value = "test", value_enum)]
    split: SplitArg,
    #[command(flatten)]
    features: FeatureArgs,
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Features go here; labels, when the data has them, to the same name ending in .labels.npy.
    #[arg(long, default_value = "features.npy")]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Runs `mae embed`.
pub fn run(a: EmbedArgs) -> Result<()> {
    let spec = a.features.spec();
    let split = match a.split {
        SplitArg::Train => Split::Train,
        SplitArg::Test => Split::Test,
    };
    let dev = device(&a.device)?;
    let l = a.source.load(&dev)?;
    let set = l.data.load(split, &l.model.config, 0)?;
    let norm = l.norm.unwrap_or_else(|| l.data.normalization(&set));
    let feats = mae::features::extract(&l.model, &set, &norm, spec, a.batch)?;
    let width = spec.width(l.model.config.embed_dim);
    mae::io::npy::write_npy_f32(&a.out, &[set.len(), width], &feats)?;
    eprintln!("wrote {} ({} x {width} features: {spec})", a.out.display(), set.len());
    if let Some(labels) = &set.labels {
        let path = a.out.with_extension("labels.npy");
        let labels: Vec<i64> = labels.iter().map(|&v| v as i64).collect();
        mae::io::npy::write_npy_i64(&path, &[labels.len()], &labels)?;
        eprintln!("wrote {} (labels)", path.display());
    }
    Ok(())
}
