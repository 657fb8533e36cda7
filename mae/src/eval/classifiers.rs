//! Evaluation of frozen features: a linear probe (softmax regression trained with our engine) and
//! k-nearest-neighbour classification (k = 20, cosine similarity).
//!
//! - Features are standardised with the training split's per-dimension mean and standard
//!   deviation, which is what the paper's probe gets from a BatchNorm without affine parameters in
//!   front of the linear head.
//! - The probe is `softmax(x W^T + b)` trained with cross-entropy by AdamW over mini-batches, with
//!   a linear warmup and a half-cosine learning-rate schedule, long enough to come near the
//!   optimum of this convex problem (the paper trains its probe 90 epochs, without weight decay);
//!   the result is top-1 accuracy on the test split.
//! - Its weight decay is chosen per feature set on a held-out tenth of the training split, from
//!   none to a strength that stops 784 raw pixels over-fitting: every feature set gets the probe
//!   that suits it best, chosen without the test split, so a baseline is not weakened by a
//!   setting tuned for another.
//! - k-NN follows the weighted vote common in self-supervised evaluation (Wu et al. 2018, DINO):
//!   the k most cosine-similar training features vote for their class with weight
//!   `exp(similarity / 0.07)`. A feature vector that concatenates several summaries (the cls
//!   token and the mean of the patch tokens, or those of several blocks) is compared part by
//!   part: its similarity is the mean of the parts' cosines, so that no summary outweighs the
//!   others by its norm alone (after the final LayerNorm the cls token is the longer of the two,
//!   and decided the whole-vector cosine: docs/journal/results.md, "k-NN part by part").

use engine::{Device, Indices, Tensor, backward, no_grad, ops};

use crate::error::{Error, Result};
use crate::model::nn::Param;
use crate::streams::{self, stream};
use crate::train::optim::{AdamW, AdamWConfig, learning_rate};

/// Features of one split: `x: [n, dim]` row-major, `y: [n]`.
#[derive(Clone, Debug)]
pub struct Features {
    /// `[n, dim]`, row-major.
    pub x: Vec<f32>,
    /// `[n]`, one class label per row.
    pub y: Vec<u32>,
    /// Values per feature vector.
    pub dim: usize,
    /// How many summaries of `dim / parts` values each row concatenates (1 for raw pixels, 2 for
    /// `[cls | mean]`): k-NN weighs each part's cosine equally.
    pub parts: usize,
}

impl Features {
    /// Checks that `x` holds `y.len()` rows of `dim > 0` values.
    pub fn new(x: Vec<f32>, y: Vec<u32>, dim: usize) -> Result<Self> {
        if dim == 0 || x.len() != y.len() * dim {
            return Err(Error::Data(format!("{} feature values for {} labels of width {dim}", x.len(), y.len())));
        }
        Ok(Features { x, y, dim, parts: 1 })
    }

    /// The same features, read as `parts` concatenated summaries of equal width.
    pub fn with_parts(self, parts: usize) -> Result<Self> {
        if parts == 0 || !self.dim.is_multiple_of(parts) {
            return Err(Error::Data(format!("{parts} parts do not split features of width {}", self.dim)));
        }
        Ok(Features { parts, ..self })
    }

    /// The number of feature vectors, `n`.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// Whether there are no feature vectors.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
}

/// Standardise both splits with the training split's statistics (a constant dimension is left
/// centred, not divided by zero).
pub fn standardize(train: &mut Features, test: &mut Features) {
    let d = train.dim;
    let n = train.len().max(1) as f64;
    for j in 0..d {
        let mean = (0..train.len()).map(|i| train.x[i * d + j] as f64).sum::<f64>() / n;
        let var = (0..train.len()).map(|i| (train.x[i * d + j] as f64 - mean).powi(2)).sum::<f64>() / n;
        let inv = if var > 1e-12 { 1.0 / var.sqrt() } else { 1.0 };
        for f in [&mut *train, &mut *test] {
            for i in 0..f.len() {
                let v = &mut f.x[i * d + j];
                *v = ((*v as f64 - mean) * inv) as f32;
            }
        }
    }
}

/// Settings of the linear probe.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Passes over the training features per fit (at least 1).
    pub epochs: usize,
    /// Mini-batch size (capped at the number of training features); short last batches are dropped.
    pub batch: usize,
    /// Peak learning rate, reached after the warmup, then a half cosine down to 0.
    pub lr: f64,
    /// The AdamW weight decays (on the weights, not the bias) to choose from. With more than one,
    /// each is fitted on the training features less a held-out `validation_fraction` and scored
    /// on those; the best is fitted again on all of them, and only that fit sees the test split.
    pub weight_decays: Vec<f32>,
    /// The share of the training features held out to choose the weight decay.
    pub validation_fraction: f64,
    /// Fraction of the steps spent warming up linearly.
    pub warmup_fraction: f64,
    /// Seed of the per-epoch shuffles and of the validation split.
    pub seed: u64,
}

/// The weight decays the probe chooses from by default: none (the paper's probe) up to a
/// strength that keeps 784 raw pixels from over-fitting 60,000 images.
pub const PROBE_WEIGHT_DECAYS: [f32; 4] = [0.0, 0.01, 0.1, 0.3];

impl Default for ProbeOptions {
    /// 100 epochs at a peak lr of 3e-2: near the optimum of the (convex) softmax regression on the
    /// features the MAE gives, whose training loss a 30-epoch probe at 2e-3 left well short of it
    /// (docs/journal/results.md, "The probe, trained to convergence").
    fn default() -> Self {
        ProbeOptions {
            epochs: 100,
            batch: 512,
            lr: 3e-2,
            weight_decays: PROBE_WEIGHT_DECAYS.to_vec(),
            validation_fraction: 0.1,
            warmup_fraction: 0.05,
            seed: 0,
        }
    }
}

impl ProbeOptions {
    /// What the probe's scores depend on besides the features, as one `;`-separated string (kept
    /// beside saved scores, so that scores of another probe are never mixed with these). It names
    /// the k-NN's protocol too: scores from before its cosine went part by part (2026-12-06) have
    /// no `knn=` and are probed again.
    pub fn key(&self) -> String {
        let decays: Vec<String> = self.weight_decays.iter().map(|w| w.to_string()).collect();
        format!(
            "epochs={};batch={};lr={};wd={};val={};seed={};knn=k{KNN_K}/T{KNN_TEMPERATURE}/per-part",
            self.epochs,
            self.batch,
            self.lr,
            decays.join("/"),
            self.validation_fraction,
            self.seed
        )
    }
}

/// What the linear probe gives: test accuracy, and the weight decay it chose.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearProbe {
    /// Top-1 accuracy on the test split, in `0..1`.
    pub accuracy: f32,
    /// The weight decay of the fit that was tested.
    pub weight_decay: f32,
}

/// Train a linear classifier on `train` (choosing its weight decay on a held-out part of it, see
/// [`ProbeOptions::weight_decays`]) and return its top-1 accuracy on `test`.
pub fn linear_probe(
    train: &Features,
    test: &Features,
    classes: usize,
    o: &ProbeOptions,
    dev: &Device,
) -> Result<LinearProbe> {
    if train.is_empty() || test.is_empty() || classes < 2 {
        return Err(Error::Data("the probe needs training and test features and at least two classes".into()));
    }
    if train.dim != test.dim {
        return Err(Error::Data(format!("feature widths differ: {} and {}", train.dim, test.dim)));
    }
    let Some(&first) = o.weight_decays.first() else {
        return Err(Error::Config("the probe needs at least one weight decay to try".into()));
    };
    let held_out = (train.len() as f64 * o.validation_fraction).round() as usize;
    let weight_decay = if o.weight_decays.len() == 1 || held_out == 0 || held_out >= train.len() {
        first
    } else {
        let (fit, validation) = split_off(train, held_out, o.seed)?;
        let scores = validation_accuracies(&fit, &validation, classes, o, dev)?;
        let mut best = (f32::NEG_INFINITY, first);
        for (&wd, acc) in o.weight_decays.iter().zip(scores) {
            // Ties go to the weaker decay, tried first.
            if acc > best.0 {
                best = (acc, wd);
            }
        }
        best.1
    };
    let (w, b) = fit_softmax_regression(train, classes, o, weight_decay, dev)?;
    Ok(LinearProbe { accuracy: accuracy(test, &w, &b, dev)?, weight_decay })
}

/// The held-out accuracy of a fit on `fit` for each of the weight decays, in their order. On the
/// CPU the fits run side by side, one thread each, as many at once as there are cores
/// (`parallel::threads_for`): a fit's products (`[512, dim] x [dim, classes]`) are too small to be
/// split between threads, so one fit at a time would leave all cores but one idle. Each fit is
/// computed by the same kernels whatever thread runs it, so the accuracies are those of fitting
/// one after the other.
fn validation_accuracies(
    fit: &Features,
    validation: &Features,
    classes: usize,
    o: &ProbeOptions,
    dev: &Device,
) -> Result<Vec<f32>> {
    let score = |wd: f32| -> Result<f32> {
        let (w, b) = fit_softmax_regression(fit, classes, o, wd, dev)?;
        accuracy(validation, &w, &b, dev)
    };
    if !dev.is_cpu() {
        return o.weight_decays.iter().map(|&wd| score(wd)).collect();
    }
    // One thread per fit, at most one per core (or what `parallel::with_threads` asks for).
    let at_once = engine::cpu::parallel::threads_for(o.weight_decays.len(), engine::cpu::parallel::NS_PER_THREAD);
    let mut scores = Vec::with_capacity(o.weight_decays.len());
    for round in o.weight_decays.chunks(at_once) {
        let results: Vec<Result<f32>> = std::thread::scope(|s| {
            let handles: Vec<_> = round.iter().map(|&wd| s.spawn(move || score(wd))).collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
        });
        for r in results {
            scores.push(r?);
        }
    }
    Ok(scores)
}

/// `f` shuffled by the seed and cut in two: `(the rest, held_out rows)`.
fn split_off(f: &Features, held_out: usize, seed: u64) -> Result<(Features, Features)> {
    let d = f.dim;
    let mut order: Vec<usize> = (0..f.len()).collect();
    stream(seed, 0, streams::PROBE_VALIDATION).shuffle(&mut order);
    let take = |rows: &[usize]| {
        let x = rows.iter().flat_map(|&i| f.x[i * d..(i + 1) * d].iter().copied()).collect();
        Features::new(x, rows.iter().map(|&i| f.y[i]).collect(), d)?.with_parts(f.parts)
    };
    let (validation, rest) = order.split_at(held_out);
    Ok((take(rest)?, take(validation)?))
}

/// `softmax(x W^T + b)` fitted to `train` by AdamW at weight decay `wd`: `(W [classes, dim], b)`.
fn fit_softmax_regression(
    train: &Features,
    classes: usize,
    o: &ProbeOptions,
    wd: f32,
    dev: &Device,
) -> Result<(Tensor, Tensor)> {
    let d = train.dim;
    let w = Tensor::zeros(&[classes, d], dev)?.with_grad();
    let b = Tensor::zeros(&[classes], dev)?.with_grad();
    let params = vec![
        Param { name: "head.weight".into(), tensor: w.clone() },
        Param { name: "head.bias".into(), tensor: b.clone() },
    ];
    let cfg = AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: wd };
    let mut opt = AdamW::new(cfg, &params, dev)?;
    let batch = o.batch.min(train.len()).max(1);
    let per_epoch = train.len() / batch;
    let total = (per_epoch * o.epochs.max(1)) as f64;
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut step = 0u64;
    for epoch in 0..o.epochs.max(1) {
        stream(o.seed, epoch as u64, streams::PROBE_ORDER).shuffle(&mut order);
        for chunk in order.chunks_exact(batch) {
            // Gathered straight into the batch tensor's own buffer (on the CPU, `from_vec` keeps
            // the vector): one pass over the rows, not a gather and then a copy.
            let mut xb = Vec::with_capacity(batch * d);
            for &i in chunk {
                xb.extend_from_slice(&train.x[i * d..(i + 1) * d]);
            }
            let yb = Indices::new(chunk.iter().map(|&i| train.y[i]).collect(), &[batch])?;
            let x = Tensor::from_vec(xb, &[batch, d], dev)?;
            let loss = ops::cross_entropy(&ops::linear(&x, &w, Some(&b))?, &yb)?;
            backward(&loss)?;
            let lr = learning_rate(o.lr, 0.0, o.warmup_fraction, 1.0, step as f64 / total) as f32;
            opt.step(&params, lr, 1.0)?;
            step += 1;
        }
    }
    Ok((w, b))
}

/// Top-1 accuracy of `x W^T + b` on `f`.
fn accuracy(f: &Features, w: &Tensor, b: &Tensor, dev: &Device) -> Result<f32> {
    let d = f.dim;
    let classes = w.dim(0);
    let mut correct = 0usize;
    no_grad(|| -> Result<()> {
        for (k, rows) in f.y.chunks(2048).enumerate() {
            let start = k * 2048;
            let x = Tensor::from_slice(&f.x[start * d..(start + rows.len()) * d], &[rows.len(), d], dev)?;
            let logits = ops::linear(&x, w, Some(b))?.to_vec()?;
            for (r, &label) in rows.iter().enumerate() {
                let row = &logits[r * classes..(r + 1) * classes];
                let best = (0..classes).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap_or(0);
                correct += (best == label as usize) as usize;
            }
        }
        Ok(())
    })?;
    Ok(correct as f32 / f.len() as f32)
}

/// Each part of each row scaled to length `1 / sqrt(parts)`: rows of length 1 whose dot product
/// is the mean of the parts' cosines.
fn l2_normalized(f: &Features) -> Vec<f32> {
    let width = f.dim / f.parts;
    let length = 1.0 / (f.parts as f64).sqrt();
    let mut x = f.x.clone();
    for part in x.chunks_mut(width) {
        let norm = part.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt().max(1e-12);
        let scale = (length / norm) as f32;
        part.iter_mut().for_each(|v| *v *= scale);
    }
    x
}

/// Weighted k-NN accuracy on `test` against `train` by cosine similarity (the mean of the parts'
/// cosines, for features of several [`Features::parts`]).
pub fn knn_accuracy(
    train: &Features,
    test: &Features,
    classes: usize,
    k: usize,
    temperature: f32,
    dev: &Device,
) -> Result<f32> {
    Ok(knn_accuracies(train, test, classes, &[(k, temperature)], dev)?[0])
}

/// [`knn_accuracy`] for several `(k, temperature)` settings at once: the similarities (a
/// `[test, train]` product) and the largest k's neighbours are found once and every setting votes
/// among them.
pub fn knn_accuracies(
    train: &Features,
    test: &Features,
    classes: usize,
    settings: &[(usize, f32)],
    dev: &Device,
) -> Result<Vec<f32>> {
    if train.is_empty()
        || test.is_empty()
        || train.dim != test.dim
        || train.parts != test.parts
        || settings.iter().any(|&(k, _)| k == 0)
    {
        return Err(Error::Data(
            "k-NN needs training and test features of one width and number of parts, and k > 0".into(),
        ));
    }
    let d = train.dim;
    let k_max = settings.iter().map(|&(k, _)| k).max().unwrap_or(1).min(train.len());
    let bank = no_grad(|| Tensor::from_vec(l2_normalized(train), &[train.len(), d], dev))?;
    let queries = l2_normalized(test);
    let mut correct = vec![0usize; settings.len()];
    let chunk = (1 << 24) / train.len().max(1);
    let chunk = chunk.clamp(1, 1024);
    for (c, labels) in test.y.chunks(chunk).enumerate() {
        let start = c * chunk;
        let sims = no_grad(|| -> Result<Vec<f32>> {
            let q = Tensor::from_slice(&queries[start * d..(start + labels.len()) * d], &[labels.len(), d], dev)?;
            Ok(ops::matmul_ex(&q, &bank, None, false, true)?.to_vec()?)
        })?;
        for (r, &label) in labels.iter().enumerate() {
            let row = &sims[r * train.len()..(r + 1) * train.len()];
            let by_similarity = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]);
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.select_nth_unstable_by(k_max - 1, by_similarity);
            let nearest = &idx[..k_max];
            for (&(k, temperature), correct) in settings.iter().zip(&mut correct) {
                let k = k.min(train.len());
                // A smaller k votes among its own nearest of the k_max.
                let mut fewer;
                let voters = if k == k_max {
                    nearest
                } else {
                    fewer = nearest.to_vec();
                    fewer.select_nth_unstable_by(k - 1, by_similarity);
                    &fewer[..k]
                };
                let mut votes = vec![0.0f64; classes];
                for &i in voters {
                    votes[train.y[i] as usize] += ((row[i] / temperature) as f64).exp();
                }
                let best = (0..classes).max_by(|&a, &b| votes[a].total_cmp(&votes[b])).unwrap_or(0);
                *correct += (best == label as usize) as usize;
            }
        }
    }
    Ok(correct.iter().map(|&n| n as f32 / test.len() as f32).collect())
}

/// The number of neighbours that vote in k-NN, used throughout.
pub const KNN_K: usize = 20;
/// Temperature of the k-NN vote: each neighbour weighs `exp(similarity / 0.07)`.
pub const KNN_TEMPERATURE: f32 = 0.07;

/// One way of reading k-NN off a feature set: how many neighbours vote, how sharply their
/// similarity weighs (`exp(similarity / temperature)`), and whether the features are standardised
/// with the training split's statistics first.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KnnProtocol {
    /// How the tables of docs/results.md name it.
    pub name: &'static str,
    /// Neighbours that vote.
    pub k: usize,
    /// Each neighbour's vote weighs `exp(similarity / temperature)`.
    pub temperature: f32,
    /// Standardise both splits with the training split's statistics before the cosine.
    pub standardized: bool,
}

/// The probe's own k-NN first, then the variants that docs/results.md re-scores every feature set
/// with, so that a k-NN result can be told from the protocol's doing (`mae probe --knn-protocols`).
pub const KNN_PROTOCOLS: [KnnProtocol; 5] = [
    KnnProtocol {
        name: "cosine, k 20, T 0.07 (the probe's)",
        k: KNN_K,
        temperature: KNN_TEMPERATURE,
        standardized: false,
    },
    KnnProtocol { name: "k 10", k: 10, temperature: KNN_TEMPERATURE, standardized: false },
    KnnProtocol { name: "T 0.02", k: KNN_K, temperature: 0.02, standardized: false },
    KnnProtocol { name: "standardised, then cosine", k: KNN_K, temperature: KNN_TEMPERATURE, standardized: true },
    KnnProtocol { name: "standardised, k 10", k: 10, temperature: KNN_TEMPERATURE, standardized: true },
];

/// k-NN accuracy of `test` against `train` under each of `protocols`, in their order: one pass
/// over the similarities of the features as they are, one over the standardised ones.
pub fn knn_under_protocols(
    train: &Features,
    test: &Features,
    classes: usize,
    protocols: &[KnnProtocol],
    dev: &Device,
) -> Result<Vec<f32>> {
    let scores = |standardized: bool| -> Result<std::vec::IntoIter<f32>> {
        let settings: Vec<(usize, f32)> =
            protocols.iter().filter(|p| p.standardized == standardized).map(|p| (p.k, p.temperature)).collect();
        if settings.is_empty() {
            return Ok(Vec::new().into_iter());
        }
        let out = if standardized {
            let (mut tr, mut te) = (train.clone(), test.clone());
            standardize(&mut tr, &mut te);
            knn_accuracies(&tr, &te, classes, &settings, dev)?
        } else {
            knn_accuracies(train, test, classes, &settings, dev)?
        };
        Ok(out.into_iter())
    };
    let (mut plain, mut standardized) = (scores(false)?, scores(true)?);
    Ok(protocols.iter().filter_map(|p| if p.standardized { standardized.next() } else { plain.next() }).collect())
}

/// Linear-probe and k-NN accuracy of one feature set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProbeScores {
    /// Top-1 accuracy of the linear probe, in `0..1`.
    pub linear: f32,
    /// The weight decay the linear probe chose.
    pub weight_decay: f32,
    /// Top-1 accuracy of k-NN, in `0..1`.
    pub knn: f32,
}

/// Standardise, then probe and k-NN. `train` and `test` are consumed (standardised in place).
pub fn score(
    mut train: Features,
    mut test: Features,
    classes: usize,
    o: &ProbeOptions,
    dev: &Device,
) -> Result<ProbeScores> {
    let knn = knn_accuracy(&train, &test, classes, KNN_K, KNN_TEMPERATURE, dev)?;
    standardize(&mut train, &mut test);
    let linear = linear_probe(&train, &test, classes, o, dev)?;
    Ok(ProbeScores { linear: linear.accuracy, weight_decay: linear.weight_decay, knn })
}
