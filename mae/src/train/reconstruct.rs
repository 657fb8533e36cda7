//! Reconstruction pictures, as the official visualisation notebook draws them: for each image,
//! original | masked (removed patches grey) | reconstruction | reconstruction with the visible
//! patches pasted back. Predictions of a norm-pix model are in each patch's normalised units; they
//! are mapped back with that patch's own mean and standard deviation (from the original image),
//! then the data set's normalisation is undone.

use std::path::Path;

use engine::{Device, no_grad};
use image::RgbImage;

use crate::data::augment::Augment;
use crate::data::image_set::{ImageSet, Normalization};
use crate::data::loader::make_batch;
use crate::error::Result;
use crate::io::plot::image_grid;
use crate::io::png::{save_png, to_rgb};
use crate::model::batch::model_inputs;
use crate::model::masking::{MaskStrategy, make_masking};
use crate::model::patch::{patchify, unpatchify};
use crate::model::{DeviceMasking, MaskedAutoencoder};
use crate::streams::{self, stream};

/// The four columns of the grid for each image, as `[C, H, W]` values in `0..1`.
pub struct Reconstruction {
    /// The input image.
    pub original: Vec<f32>,
    /// The input with the removed patches grey.
    pub masked: Vec<f32>,
    /// The model's prediction for every patch.
    pub reconstruction: Vec<f32>,
    /// The prediction with the visible patches replaced by the originals.
    pub pasted: Vec<f32>,
}

/// Reconstruct images `indices` of `set` (no augmentation) with masks from `seed`.
pub fn reconstruct(
    model: &MaskedAutoencoder,
    set: &ImageSet,
    norm: &Normalization,
    indices: &[usize],
    ratio: f32,
    strategy: MaskStrategy,
    seed: u64,
) -> Result<Vec<Reconstruction>> {
    let cfg = &model.config;
    let dev: &Device = &model.device;
    let (n, c, s, p, l, pd) =
        (indices.len(), cfg.in_chans, cfg.img_size, cfg.patch_size, cfg.num_patches(), cfg.patch_dim());
    let mut rng = stream(seed, 0, streams::PICTURES);
    let (images, _) = make_batch(set, indices, s, &Augment::none(), norm, &mut rng);
    let masking = make_masking(strategy, n, cfg.grid_size(), ratio, &mut rng)?;
    let pred = no_grad(|| -> Result<Vec<f32>> {
        let (patches, target) = model_inputs(cfg, &images, n, dev)?;
        let dm = DeviceMasking::new(&masking, dev)?;
        Ok(model.forward(&patches, &target, &dm)?.pred.to_vec()?)
    })?;
    let target = patchify(&images, n, c, s, p);
    let mut recon = pred;
    if cfg.norm_pix_loss {
        for r in 0..n * l {
            let t = &target[r * pd..(r + 1) * pd];
            let mean = t.iter().map(|&v| v as f64).sum::<f64>() / pd as f64;
            let var = t.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (pd as f64 - 1.0);
            let std = (var + engine::backend::NORM_PIX_EPS as f64).sqrt();
            for v in &mut recon[r * pd..(r + 1) * pd] {
                *v = (*v as f64 * std + mean) as f32;
            }
        }
    }
    let mut pasted = recon.clone();
    let mut masked = target.clone();
    for r in 0..n * l {
        let removed = masking.mask[r] == 1.0;
        let range = r * pd..(r + 1) * pd;
        if removed {
            // Grey in the data's normalised units is the per-channel mean: 0.
            masked[range].iter_mut().for_each(|v| *v = f32::NAN);
        } else {
            pasted[range.clone()].copy_from_slice(&target[range]);
        }
    }
    let to_unit = |patches: &[f32]| -> Vec<f32> {
        let img = unpatchify(patches, n, c, s, p);
        img.iter()
            .enumerate()
            .map(|(i, &v)| {
                let ch = (i / (s * s)) % c;
                if v.is_nan() { 0.5 } else { (v * norm.std[ch] + norm.mean[ch]).clamp(0.0, 1.0) }
            })
            .collect()
    };
    let (orig, masked, recon, pasted) = (to_unit(&target), to_unit(&masked), to_unit(&recon), to_unit(&pasted));
    let per = c * s * s;
    Ok((0..n)
        .map(|k| Reconstruction {
            original: orig[k * per..(k + 1) * per].to_vec(),
            masked: masked[k * per..(k + 1) * per].to_vec(),
            reconstruction: recon[k * per..(k + 1) * per].to_vec(),
            pasted: pasted[k * per..(k + 1) * per].to_vec(),
        })
        .collect())
}

/// Write a grid of `count` reconstructions (the first images of `set`) to `path`.
#[allow(clippy::too_many_arguments)]
pub fn save_reconstructions(
    model: &MaskedAutoencoder,
    set: &ImageSet,
    norm: &Normalization,
    ratio: f32,
    strategy: MaskStrategy,
    seed: u64,
    count: usize,
    path: &Path,
) -> Result<()> {
    let indices: Vec<usize> = (0..count.min(set.len())).collect();
    let recs = reconstruct(model, set, norm, &indices, ratio, strategy, seed)?;
    let (c, s) = (model.config.in_chans, model.config.img_size);
    let rows: Vec<Vec<RgbImage>> = recs
        .iter()
        .map(|r| [&r.original, &r.masked, &r.reconstruction, &r.pasted].iter().map(|v| to_rgb(v, c, s, s)).collect())
        .collect();
    let scale = (128 / s as u32).max(1);
    let grid = image_grid(&rows, &["original", "masked", "reconstruction", "+ visible"], scale, 4);
    save_png(path, &grid)
}

/// Mean loss of the model on `count` images of `set` with masks from `seed` (no augmentation).
pub fn evaluate_loss(
    model: &MaskedAutoencoder,
    set: &ImageSet,
    norm: &Normalization,
    ratio: f32,
    strategy: MaskStrategy,
    seed: u64,
    batch: usize,
) -> Result<f32> {
    let cfg = &model.config;
    let mut total = 0.0f64;
    let mut count = 0usize;
    for (k, chunk) in (0..set.len()).collect::<Vec<_>>().chunks(batch).enumerate() {
        let mut rng = stream(seed, k as u64, streams::RECONSTRUCTION_LOSS);
        let (images, _) = make_batch(set, chunk, cfg.img_size, &Augment::none(), norm, &mut rng);
        let masking = make_masking(strategy, chunk.len(), cfg.grid_size(), ratio, &mut rng)?;
        let loss = no_grad(|| -> Result<f32> {
            let (patches, target) = model_inputs(cfg, &images, chunk.len(), &model.device)?;
            let dm = DeviceMasking::new(&masking, &model.device)?;
            Ok(model.forward(&patches, &target, &dm)?.loss.item()?)
        })?;
        total += loss as f64 * chunk.len() as f64;
        count += chunk.len();
    }
    Ok((total / count.max(1) as f64) as f32)
}
