//! The pictures of `mae attention`, several models side by side on the same images:
//! - what the encoder looks at: for each image, the image, then the cls token's attention over the
//!   patches in the last encoder block for each head and their mean (`attention_maps`), laid over
//!   the image;
//! - what it can infer: one image reconstructed at several mask ratios (`train::reconstruct`), the
//!   masks drawn from one seed so that every model gets the same ones.

use image::RgbImage;
use image::imageops::{FilterType, resize};

use crate::data::augment::Augment;
use crate::data::image_set::{ImageSet, Normalization};
use crate::data::loader::make_batch;
use crate::error::{Error, Result};
use crate::eval::attention_maps::{ClsAttention, cls_attention};
use crate::io::font::{GLYPH_H, draw_text, text_width};
use crate::io::plot::{heat_overlay, image_grid};
use crate::io::png::to_rgb;
use crate::model::MaskedAutoencoder;
use crate::model::batch::model_inputs;
use crate::model::masking::{MaskStrategy, check_ratio};
use crate::streams::{self, stream};
use crate::train::reconstruct::reconstruct;

/// Pixels between and around the tiles.
pub const PAD: u32 = 4;
/// Tiles are upscaled (nearest neighbour) by the largest whole factor that keeps them within this
/// many pixels a side (at least 1): `max(1, TILE_TARGET / img_size)`.
pub const TILE_TARGET: u32 = 128;
/// The width of the reconstruction picture's first column, which names each row's mask ratio.
pub const RATIO_LABEL_WIDTH: u32 = 64;
/// How much of each attention tile is the heat map's colour (the rest the image in grey).
pub const HEAT_ALPHA: f32 = 0.6;

/// One model of the comparison, with the normalisation its inputs get (the one it trained with).
pub struct Compared<'a> {
    /// Its name in the column titles.
    pub label: String,
    /// The model.
    pub model: &'a MaskedAutoencoder,
    /// How its input images are normalised.
    pub norm: Normalization,
}

/// The factor `image_grid` scales `img_size`-pixel tiles by.
pub fn tile_scale(img_size: usize) -> u32 {
    (TILE_TARGET / img_size.max(1) as u32).max(1)
}

/// An error unless the models take the same images cut into the same patches (so one picture of
/// the input serves them all and one seed gives them the same masks).
fn check_comparable(models: &[Compared]) -> Result<()> {
    let Some(first) = models.first() else {
        return Err(Error::Config("no model to draw: give at least one checkpoint".into()));
    };
    let c = &first.model.config;
    for m in &models[1..] {
        let o = &m.model.config;
        if (o.img_size, o.patch_size, o.in_chans) != (c.img_size, c.patch_size, c.in_chans) {
            return Err(Error::Config(format!(
                "{} ({}: {}px, {} channel(s), patches of {}) and {} ({}: {}px, {} channel(s), patches of {}) \
                 see different images or patches; compare checkpoints of one image size, channel count and patch size",
                first.label,
                c.name,
                c.img_size,
                c.in_chans,
                c.patch_size,
                m.label,
                o.name,
                o.img_size,
                o.in_chans,
                o.patch_size
            )));
        }
    }
    Ok(())
}

fn check_indices(set: &ImageSet, indices: &[usize]) -> Result<()> {
    if indices.is_empty() {
        return Err(Error::Config("no image to draw: ask for at least one".into()));
    }
    if let Some(&bad) = indices.iter().find(|&&i| i >= set.len()) {
        return Err(Error::Config(format!(
            "image {bad} of {}: it holds {} images; pick indices below {}",
            set.name,
            set.len(),
            set.len()
        )));
    }
    Ok(())
}

/// Images `indices` of `set` at `img_size`, `[C, S, S]` each with values in `0..1`, as RGB.
fn display_images(set: &ImageSet, indices: &[usize], img_size: usize) -> Vec<RgbImage> {
    let unit = Normalization::identity(set.channels);
    let mut rng = stream(0, 0, streams::PICTURES);
    let (pixels, _) = make_batch(set, indices, img_size, &Augment::none(), &unit, &mut rng);
    let per = set.channels * img_size * img_size;
    pixels.chunks_exact(per).map(|p| to_rgb(p, set.channels, img_size, img_size)).collect()
}

/// The cls attention of each model in its last encoder block on images `indices` of `set` (every
/// patch visible), in the order of `models`.
pub fn attention_of(models: &[Compared], set: &ImageSet, indices: &[usize]) -> Result<Vec<ClsAttention>> {
    check_comparable(models)?;
    check_indices(set, indices)?;
    models
        .iter()
        .map(|m| {
            let cfg = &m.model.config;
            let mut rng = stream(0, 0, streams::PICTURES);
            let (images, _) = make_batch(set, indices, cfg.img_size, &Augment::none(), &m.norm, &mut rng);
            let (patches, _) = model_inputs(cfg, &images, indices.len(), &m.model.device)?;
            cls_attention(m.model, &patches)
        })
        .collect()
}

/// The attention picture: a row per image of `indices`; for each model (left to right) the image,
/// each head's cls attention over the patches laid over it (`heat_overlay`, each map scaled to its
/// own range) and the heads' mean. Returns the picture and the maps it shows.
///
/// Tiles are `S * tile_scale(S)` pixels square; with column titles of one line (labels of a few
/// characters) the picture is `PAD + cols * (tile + PAD)` wide, `cols` the sum over the models of
/// their heads + 2, and `PAD + 9 + PAD + rows * (tile + PAD)` tall.
pub fn attention_picture(
    models: &[Compared],
    set: &ImageSet,
    indices: &[usize],
) -> Result<(RgbImage, Vec<ClsAttention>)> {
    let maps = attention_of(models, set, indices)?;
    let cfg = &models[0].model.config;
    let (s, grid) = (cfg.img_size, cfg.grid_size());
    let originals = display_images(set, indices, s);
    let mut titles = Vec::new();
    for m in models {
        titles.push(format!("{} image", m.label));
        titles.extend((1..=m.model.config.num_heads).map(|h| format!("{} head {h}", m.label)));
        titles.push(format!("{} mean", m.label));
    }
    let rows: Vec<Vec<RgbImage>> = originals
        .iter()
        .enumerate()
        .map(|(k, image)| {
            let mut row = Vec::new();
            for map in &maps {
                row.push(image.clone());
                row.extend((0..map.heads).map(|h| heat_overlay(image, map.to_patches(k, h), grid, grid, HEAT_ALPHA)));
                row.push(heat_overlay(image, &map.head_mean(k), grid, grid, HEAT_ALPHA));
            }
            row
        })
        .collect();
    let titles: Vec<&str> = titles.iter().map(String::as_str).collect();
    Ok((image_grid(&rows, &titles, tile_scale(s), PAD), maps))
}

/// The reconstruction picture: image `index` of `set`, a row per mask ratio of `ratios`: the ratio,
/// the original, the masked input, then for each model its reconstruction and the reconstruction
/// with the visible patches pasted back. Every model gets the same masks (drawn from `seed`).
///
/// Tiles are `S * tile_scale(S)` pixels square; with column titles of one line the picture is
/// `PAD + RATIO_LABEL_WIDTH + PAD + (2 + 2 * models) * (tile + PAD)` wide and
/// `PAD + 9 + PAD + ratios * (tile + PAD)` tall.
pub fn reconstruction_picture(
    models: &[Compared],
    set: &ImageSet,
    index: usize,
    ratios: &[f32],
    strategy: MaskStrategy,
    seed: u64,
) -> Result<RgbImage> {
    check_comparable(models)?;
    check_indices(set, &[index])?;
    if ratios.is_empty() {
        return Err(Error::Config("no mask ratio to draw: give at least one, e.g. 0.25,0.5,0.75,0.9".into()));
    }
    for &r in ratios {
        check_ratio(r)?;
    }
    let cfg = &models[0].model.config;
    let (c, s) = (cfg.in_chans, cfg.img_size);
    let tile = s as u32 * tile_scale(s);
    let big = |pixels: &[f32]| resize(&to_rgb(pixels, c, s, s), tile, tile, FilterType::Nearest);
    let mut titles = vec!["mask ratio".to_string(), "original".into(), "masked".into()];
    for m in models {
        titles.push(format!("{} reconstruction", m.label));
        titles.push(format!("{} + visible", m.label));
    }
    let mut rows = Vec::with_capacity(ratios.len());
    for &ratio in ratios {
        let mut row = Vec::new();
        for (k, m) in models.iter().enumerate() {
            let r = reconstruct(m.model, set, &m.norm, &[index], ratio, strategy, seed)?.remove(0);
            if k == 0 {
                row.push(text_tile(&format!("{ratio}"), RATIO_LABEL_WIDTH, tile));
                row.push(big(&r.original));
                row.push(big(&r.masked));
            }
            row.push(big(&r.reconstruction));
            row.push(big(&r.pasted));
        }
        rows.push(row);
    }
    let titles: Vec<&str> = titles.iter().map(String::as_str).collect();
    Ok(image_grid(&rows, &titles, 1, PAD))
}

/// `text` centred on a white `width` x `height` tile (a row label).
fn text_tile(text: &str, width: u32, height: u32) -> RgbImage {
    let mut img = RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    let x = (width as i32 - text_width(text, 1) as i32) / 2;
    let y = (height as i32 - GLYPH_H as i32) / 2;
    draw_text(&mut img, x.max(0), y, text, [30, 30, 30], 1);
    img
}
