//! `mae probe`: how linearly separable (and how well clustered) are the frozen features of a
//! pre-trained encoder, set beside two baselines measured by the same probe every time: the raw
//! pixels, and the same encoder at random initialisation.

use engine::Device;

use crate::classifiers::{Features, ProbeOptions, ProbeScores, score};
use crate::data::Split;
use crate::data::augment::Augment;
use crate::data::image_set::{ImageSet, Normalization};
use crate::data::loader::make_batch;
use crate::error::{Error, Result};
use crate::features::{FeatureSpec, extract};
use crate::model::MaskedAutoencoder;
use crate::source::DataSource;

/// The labelled train and test images a probe uses (optionally fewer training images).
pub struct ProbeData {
    /// The labelled training images (the first `train_limit` when given).
    pub train: ImageSet,
    /// The labelled test images.
    pub test: ImageSet,
    /// The normalisation of the inputs: the model's, or measured on the training images.
    pub norm: Normalization,
    /// The number of classes: the class names' count, or the largest label + 1 when larger.
    pub classes: usize,
}

impl ProbeData {
    /// Loads both splits of `source` for `model`; fails when either is unlabelled. `norm` is the
    /// model's (from its checkpoint), else the source's normalisation of the training images.
    pub fn load(
        source: &DataSource,
        model: &crate::config::ModelConfig,
        norm: Option<Normalization>,
        train_limit: Option<usize>,
        seed: u64,
    ) -> Result<Self> {
        let mut train = source.load(Split::Train, model, seed)?;
        let test = source.load(Split::Test, model, seed)?;
        if train.labels.is_none() || test.labels.is_none() {
            return Err(Error::Data(format!("{source} has no labels: a probe needs labelled images")));
        }
        if let Some(n) = train_limit.filter(|&n| n < train.len()) {
            train = train.take(n);
        }
        let norm = norm.unwrap_or_else(|| source.normalization(&train));
        let max_label = |s: &ImageSet| s.labels.as_ref().and_then(|l| l.iter().max().copied()).unwrap_or(0) as usize;
        let classes = train.classes.len().max(max_label(&train) + 1).max(max_label(&test) + 1);
        Ok(ProbeData { train, test, norm, classes })
    }
}

fn labels(set: &ImageSet) -> Vec<u32> {
    set.labels.clone().unwrap_or_default()
}

/// Frozen-encoder features of both splits.
pub fn encoder_features(
    model: &MaskedAutoencoder,
    data: &ProbeData,
    spec: FeatureSpec,
) -> Result<(Features, Features)> {
    let dim = spec.width(model.config.embed_dim);
    let tr = extract(model, &data.train, &data.norm, spec, 256)?;
    let te = extract(model, &data.test, &data.norm, spec, 256)?;
    Ok((Features::new(tr, labels(&data.train), dim)?, Features::new(te, labels(&data.test), dim)?))
}

/// Normalised pixels at the model's input size, flattened.
pub fn pixel_features(data: &ProbeData, size: usize) -> Result<(Features, Features)> {
    let one = |set: &ImageSet| -> Result<Features> {
        let idx: Vec<usize> = (0..set.len()).collect();
        let (x, _) = make_batch(set, &idx, size, &Augment::none(), &data.norm, &mut engine::Rng::new(0));
        Features::new(x, labels(set), set.channels * size * size)
    };
    Ok((one(&data.train)?, one(&data.test)?))
}

/// One row of the probe table.
#[derive(Clone, Debug)]
pub struct ProbeRow {
    /// What the features are, e.g. `raw pixels`.
    pub features: String,
    /// Their linear-probe and k-NN accuracy.
    pub scores: ProbeScores,
}

/// The probe on `model`, then on the two baselines.
pub fn probe_with_baselines(
    model: &MaskedAutoencoder,
    data: &ProbeData,
    spec: FeatureSpec,
    o: &ProbeOptions,
    dev: &Device,
) -> Result<Vec<ProbeRow>> {
    let mut rows = Vec::new();
    let (tr, te) = encoder_features(model, data, spec)?;
    rows.push(ProbeRow { features: format!("MAE encoder ({spec})"), scores: score(tr, te, data.classes, o, dev)? });
    let (tr, te) = pixel_features(data, model.config.img_size)?;
    rows.push(ProbeRow { features: "raw pixels".into(), scores: score(tr, te, data.classes, o, dev)? });
    let random = MaskedAutoencoder::new(&model.config, o.seed.wrapping_add(1), dev)?;
    let (tr, te) = encoder_features(&random, data, spec)?;
    rows.push(ProbeRow {
        features: format!("random-init encoder ({spec})"),
        scores: score(tr, te, data.classes, o, dev)?,
    });
    Ok(rows)
}

/// A markdown table of probe rows.
pub fn probe_table(rows: &[ProbeRow]) -> String {
    let mut s = String::from("| features | linear probe | k-NN (k=20) |\n|---|---:|---:|\n");
    for r in rows {
        s.push_str(&format!("| {} | {:.2}% | {:.2}% |\n", r.features, 100.0 * r.scores.linear, 100.0 * r.scores.knn));
    }
    s
}
