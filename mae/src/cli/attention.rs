//! `mae attention`: what the encoder looks at (the cls token's attention over the patches in the
//! last block, each head and their mean, over the image) and what it can infer (one image
//! reconstructed at several mask ratios), for one or more checkpoints side by side.

use std::path::{Path, PathBuf};

use clap::Args;
use mae::Result;
use mae::eval::attention_maps::ClsAttention;
use mae::eval::attention_view::{Compared, attention_picture, reconstruction_picture};
use mae::io::png::save_png;
use mae::masking::MaskStrategy;

use super::common::{DeviceArgs, STRATEGIES, device, load, one_of};
use super::reconstruct::{input_normalization, picture_images};

#[derive(Args)]
pub struct AttentionArgs {
    /// A model .safetensors file, a checkpoint folder, or a training run's output folder; repeat
    /// the flag to put checkpoints side by side (e.g. a masked model and a plain autoencoder).
    #[arg(long, required = true)]
    checkpoint: Vec<PathBuf>,
    /// The checkpoints' names in the column titles, comma-separated, in the order of --checkpoint
    /// (default: each one's run or file name).
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// The images (default: the data the first checkpoint was trained on, as it records it).
    #[arg(long)]
    data: Option<String>,
    /// The preset, for weights without our metadata (official ones).
    #[arg(long)]
    model: Option<String>,
    /// How many images (the first ones of the test split) the attention picture shows, a row each.
    #[arg(long, default_value_t = 4)]
    images: usize,
    /// The mask ratios of the reconstruction picture, a row each.
    #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,0.75,0.9", allow_hyphen_values = true)]
    reconstruct_ratios: Vec<f32>,
    /// Which image of the test split (an index) the reconstruction picture shows.
    #[arg(long, default_value_t = 0)]
    reconstruct_image: usize,
    #[arg(long, default_value = "random", value_parser = one_of::<MaskStrategy>(STRATEGIES))]
    mask_strategy: MaskStrategy,
    /// The masks' seed (every checkpoint gets the same masks).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The attention picture.
    #[arg(long, default_value = "attention.png")]
    out: PathBuf,
    /// The reconstruction picture (default: --out with `_reconstructions` before its extension).
    #[arg(long)]
    recon_out: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Runs `mae attention`.
pub fn run(a: AttentionArgs) -> Result<()> {
    if !a.labels.is_empty() && a.labels.len() != a.checkpoint.len() {
        return Err(mae::Error::Config(format!(
            "{} labels for {} checkpoints: give one label per --checkpoint, or none",
            a.labels.len(),
            a.checkpoint.len()
        )));
    }
    for &r in &a.reconstruct_ratios {
        mae::masking::check_ratio(r)?;
    }
    let dev = device(&a.device)?;
    let first = load(&a.checkpoint[0], a.model.as_deref(), a.data.as_deref(), &dev)?;
    let data = a.data.clone().unwrap_or_else(|| first.data.to_string());
    let set = picture_images(&first)?;
    let mut loaded = vec![first];
    for path in &a.checkpoint[1..] {
        loaded.push(load(path, a.model.as_deref(), Some(&data), &dev)?);
    }
    let models: Vec<Compared> = loaded
        .iter()
        .zip(&a.checkpoint)
        .enumerate()
        .map(|(k, (l, path))| Compared {
            label: a.labels.get(k).cloned().unwrap_or_else(|| default_label(path)),
            model: &l.model,
            norm: input_normalization(l, &set),
        })
        .collect();

    let indices: Vec<usize> = (0..a.images.min(set.len())).collect();
    let (attention, maps) = attention_picture(&models, &set, &indices)?;
    let reconstructions =
        reconstruction_picture(&models, &set, a.reconstruct_image, &a.reconstruct_ratios, a.mask_strategy, a.seed)?;
    let recon_out = a.recon_out.clone().unwrap_or_else(|| reconstructions_path(&a.out));
    for (path, picture) in [(&a.out, &attention), (&recon_out, &reconstructions)] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| mae::Error::io(dir, e))?;
        }
        save_png(path, picture)?;
        eprintln!("wrote {} ({}x{})", path.display(), picture.width(), picture.height());
    }
    println!("{}", summary(&models, &maps));
    Ok(())
}

/// `attn.png` -> `attn_reconstructions.png`.
fn reconstructions_path(out: &Path) -> PathBuf {
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "attention".into());
    let name = match out.extension() {
        Some(ext) => format!("{stem}_reconstructions.{}", ext.to_string_lossy()),
        None => format!("{stem}_reconstructions.png"),
    };
    out.with_file_name(name)
}

/// The run's name for a checkpoint path: the last component that is not a checkpoint's own file
/// or folder (`runs/masked/checkpoints/step-9/model.safetensors` -> `masked`).
fn default_label(path: &Path) -> String {
    let generic = |s: &str| s == "model" || s == "checkpoints" || s == "LATEST" || s.starts_with("step-");
    path.components()
        .rev()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => {
                Some(Path::new(s).file_stem().unwrap_or(s).to_string_lossy().into_owned())
            }
            _ => None,
        })
        .find(|s| !generic(s))
        .unwrap_or_else(|| path.display().to_string())
}

/// A markdown table: per checkpoint and head, averaged over the images, the weight the cls token
/// gives itself, the largest weight it gives one patch, and the entropy of its attention over the
/// patches as a share of the uniform's (`log L`; 1 = looks everywhere alike).
fn summary(models: &[Compared], maps: &[ClsAttention]) -> String {
    let mut out = String::from(
        "| checkpoint | head | cls -> cls | largest patch weight | entropy over patches / log L |\n|---|---|---|---|---|\n",
    );
    for (m, map) in models.iter().zip(maps) {
        let log_l = ((map.tokens - 1) as f64).ln().max(f64::MIN_POSITIVE);
        // Averages over the images of (cls -> cls, largest patch weight, normalised entropy).
        let averages = |head: Option<usize>| {
            let mut sums = [0f64; 3];
            for n in 0..map.batch {
                let (self_weight, patches) = match head {
                    Some(h) => (map.cls_to_cls(n, h) as f64, map.to_patches(n, h).to_vec()),
                    None => {
                        let cls = (0..map.heads).map(|h| map.cls_to_cls(n, h) as f64).sum::<f64>();
                        (cls / map.heads as f64, map.head_mean(n))
                    }
                };
                let total: f64 = patches.iter().map(|&p| p as f64).sum();
                let entropy: f64 =
                    patches.iter().map(|&p| p as f64 / total).filter(|&p| p > 0.0).map(|p| -p * p.ln()).sum();
                sums[0] += self_weight;
                sums[1] += patches.iter().fold(0f32, |a, &b| a.max(b)) as f64;
                sums[2] += entropy / log_l;
            }
            sums.map(|v| v / map.batch.max(1) as f64)
        };
        for h in (0..map.heads).map(Some).chain([None]) {
            let [s, t, e] = averages(h);
            let name = h.map_or("mean".to_string(), |h| (h + 1).to_string());
            out += &format!("| {} | {name} | {s:.3} | {t:.3} | {e:.3} |\n", m.label);
        }
    }
    out
}
