//! Layer by layer: where the semantics appear. The linear probe and k-NN on each encoder block's
//! output (block 0: the embedded patches before any block, a pixels-like anchor; the last block
//! after the final norm, as the probe of [`crate::eval::probe`] reads it), for one or several
//! encoders, drawn as accuracy against depth beside the raw pixels' score.
//!
//! Every block's features come from one encoder pass per batch
//! ([`crate::eval::features::extract_every_layer`]), not one pass per block.

use std::path::Path;

use engine::Device;

use crate::data::image_set::ImageSet;
use crate::error::{Error, Result};
use crate::eval::classifiers::{Features, ProbeOptions, ProbeScores, score};
use crate::eval::features::{FeatureSpec, Pool, extract_every_layer};
use crate::eval::probe::{ProbeData, pixel_features};
use crate::io::plot::{PALETTE, Series, line_plot, side_by_side};
use crate::model::MaskedAutoencoder;

/// Each panel of [`per_block_plot`] is this wide ...
pub const PANEL_WIDTH: u32 = 900;
/// ... and this tall; the figure is two panels side by side: `2 * PANEL_WIDTH` x `PANEL_HEIGHT`.
pub const PANEL_HEIGHT: u32 = 540;

/// One encoder's probe scores at each depth.
#[derive(Clone, Debug, PartialEq)]
pub struct DepthCurve {
    /// The encoder's name in the table and the legend (e.g. `masked`, `random-init`).
    pub name: String,
    /// Scores by block: index 0 is the embedded patches, index `depth` the encoder's output.
    pub blocks: Vec<ProbeScores>,
}

fn labels(set: &ImageSet) -> Vec<u32> {
    set.labels.clone().unwrap_or_default()
}

/// The linear probe and k-NN on the `pool` summary of every block of `model` (blocks `0..=depth`),
/// the features of all of them from one encoder pass per batch. Says each block's scores on stderr.
pub fn probe_every_block(
    model: &MaskedAutoencoder,
    data: &ProbeData,
    pool: Pool,
    o: &ProbeOptions,
    dev: &Device,
) -> Result<Vec<ProbeScores>> {
    let spec = FeatureSpec::output(pool);
    let dim = spec.width(model.config.embed_dim);
    let train = extract_every_layer(model, &data.train, &data.norm, pool, 256)?;
    let test = extract_every_layer(model, &data.test, &data.norm, pool, 256)?;
    let (train_y, test_y) = (labels(&data.train), labels(&data.test));
    let mut scores = Vec::with_capacity(train.len());
    // Consumed block by block, so that each block's features are freed once it is scored.
    for (block, (tr, te)) in train.into_iter().zip(test).enumerate() {
        let tr = Features::new(tr, train_y.clone(), dim)?.with_parts(spec.parts())?;
        let te = Features::new(te, test_y.clone(), dim)?.with_parts(spec.parts())?;
        let s = score(tr, te, data.classes, o, dev)?;
        eprintln!("  block {block}: linear probe {:.2}%, k-NN {:.2}%", 100.0 * s.linear, 100.0 * s.knn);
        scores.push(s);
    }
    Ok(scores)
}

/// The raw pixels' scores under the same probe: the flat reference line of the figure.
pub fn pixel_scores(data: &ProbeData, img_size: usize, o: &ProbeOptions, dev: &Device) -> Result<ProbeScores> {
    let (tr, te) = pixel_features(data, img_size)?;
    score(tr, te, data.classes, o, dev)
}

/// A markdown table: a row per block, a linear / k-NN column pair per encoder (empty cells past
/// a shallower encoder's output), then the raw pixels' scores in a line of their own.
pub fn per_block_table(curves: &[DepthCurve], pixels: Option<ProbeScores>) -> String {
    let depth = curves.iter().map(|c| c.blocks.len()).max().unwrap_or(0);
    let mut s = String::from("| block |");
    for c in curves {
        s.push_str(&format!(" {} linear | {} k-NN |", c.name, c.name));
    }
    s.push_str("\n|---:|");
    s.push_str(&"---:|---:|".repeat(curves.len()));
    s.push('\n');
    for block in 0..depth {
        s.push_str(&format!("| {block} |"));
        for c in curves {
            match c.blocks.get(block) {
                Some(p) => s.push_str(&format!(" {:.2}% | {:.2}% |", 100.0 * p.linear, 100.0 * p.knn)),
                None => s.push_str(" | |"),
            }
        }
        s.push('\n');
    }
    s.push_str(
        "\nBlock 0: the embedded patches (patch embedding + position, cls prepended) before any block; \
         the last block: the encoder's output after its final norm. Features: cls + mean of each block's tokens.\n",
    );
    if let Some(p) = pixels {
        s.push_str(&format!("raw pixels: linear probe {:.2}%, k-NN {:.2}%\n", 100.0 * p.linear, 100.0 * p.knn));
    }
    s
}

/// Accuracy against depth, a line per encoder: the linear probe in the left panel, k-NN in the
/// right, the raw pixels flat in grey across both. `2 * PANEL_WIDTH` x `PANEL_HEIGHT` pixels.
pub fn per_block_plot(curves: &[DepthCurve], pixels: Option<ProbeScores>) -> image::RgbImage {
    let last = curves.iter().map(|c| c.blocks.len().saturating_sub(1)).max().unwrap_or(1).max(1) as f64;
    let panel = |which: fn(&ProbeScores) -> f32, title: &str| {
        let mut series: Vec<Series> = curves
            .iter()
            .enumerate()
            .map(|(i, c)| Series {
                name: c.name.clone(),
                points: c.blocks.iter().enumerate().map(|(b, p)| (b as f64, 100.0 * which(p) as f64)).collect(),
                color: PALETTE[i % PALETTE.len()],
            })
            .collect();
        if let Some(p) = &pixels {
            let y = 100.0 * which(p) as f64;
            series.push(Series {
                name: "raw pixels".into(),
                points: vec![(0.0, y), (last, y)],
                color: [150, 150, 150],
            });
        }
        let x_label = "block (0: embedded patches; last: the output, after the final norm)";
        line_plot(&series, title, x_label, "accuracy (%)", PANEL_WIDTH, PANEL_HEIGHT, false)
    };
    side_by_side(&[
        panel(|p| p.linear, "linear probe accuracy by encoder block"),
        panel(|p| p.knn, "k-NN accuracy by encoder block"),
    ])
}

/// Where a run's per-block scores are kept (see [`probe_every_block_kept`]).
pub const CURVE_FILE: &str = "probe_per_block.csv";

/// [`probe_every_block`], its scores kept in the CSV file `csv` under a key of `tag` (what names
/// the model: a run's step, a random encoder's seed) and everything else they depend on (the
/// features, the probe's training images and settings), so that a second call (a study started
/// again) reads them back rather than probing. Lines of other keys stay.
#[allow(clippy::too_many_arguments)]
pub fn probe_every_block_kept(
    csv: &Path,
    tag: &str,
    model: &MaskedAutoencoder,
    data: &ProbeData,
    pool: Pool,
    o: &ProbeOptions,
    dev: &Device,
) -> Result<Vec<ProbeScores>> {
    let key =
        format!("{tag};{};train={};{}", FeatureSpec::output(pool), data.train.len(), o.key()).replace([',', '\n'], ";");
    // `key,block,linear,knn,weight_decay`, a line per block.
    let mut known: Vec<(usize, ProbeScores)> = std::fs::read_to_string(csv)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.len() == 5 && f[0] == key).then_some(())?;
            let s =
                ProbeScores { linear: f[2].parse().ok()?, knn: f[3].parse().ok()?, weight_decay: f[4].parse().ok()? };
            Some((f[1].parse().ok()?, s))
        })
        .collect();
    known.sort_by_key(|(b, _)| *b);
    known.dedup_by_key(|(b, _)| *b);
    if known.len() == model.blocks.len() + 1 && known.iter().enumerate().all(|(i, (b, _))| i == *b) {
        return Ok(known.into_iter().map(|(_, s)| s).collect());
    }
    let scores = probe_every_block(model, data, pool, o, dev)?;
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(csv).map_err(|e| Error::io(csv, e))?;
    for (block, s) in scores.iter().enumerate() {
        writeln!(f, "{key},{block},{},{},{}", s.linear, s.knn, s.weight_decay).map_err(|e| Error::io(csv, e))?;
    }
    Ok(scores)
}
