//! `mae probe`: how linearly separable (and how well clustered) are the frozen features of a
//! pre-trained encoder, set beside two baselines measured by the same probe every time: the raw
//! pixels, and the same encoder at random initialisation.

use std::path::{Path, PathBuf};

use engine::Device;

use crate::data::Split;
use crate::data::augment::Augment;
use crate::data::image_set::{ImageSet, Normalization};
use crate::data::loader::make_batch;
use crate::data::source::DataSource;
use crate::error::{Error, Result};
use crate::eval::classifiers::{Features, KNN_PROTOCOLS, ProbeOptions, ProbeScores, knn_under_protocols, score};
use crate::eval::features::{FeatureSpec, extract};
use crate::model::MaskedAutoencoder;
use crate::model::config::ModelConfig;

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
        model: &crate::model::config::ModelConfig,
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
    let split = |x, set| Features::new(x, labels(set), dim)?.with_parts(spec.parts());
    Ok((split(tr, &data.train)?, split(te, &data.test)?))
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

/// k-NN of the encoder's features and of the raw pixels under every protocol of
/// [`KNN_PROTOCOLS`]: a markdown table, one row per protocol (no linear probe).
pub fn knn_protocols_table(
    model: &MaskedAutoencoder,
    data: &ProbeData,
    spec: FeatureSpec,
    dev: &Device,
) -> Result<String> {
    let (tr, te) = encoder_features(model, data, spec)?;
    let mae = knn_under_protocols(&tr, &te, data.classes, &KNN_PROTOCOLS, dev)?;
    let (tr, te) = pixel_features(data, model.config.img_size)?;
    let pixels = knn_under_protocols(&tr, &te, data.classes, &KNN_PROTOCOLS, dev)?;
    let mut t = format!("| k-NN protocol | MAE encoder ({spec}) | raw pixels |\n|---|---:|---:|\n");
    for ((p, a), b) in KNN_PROTOCOLS.iter().zip(mae).zip(pixels) {
        t.push_str(&format!("| {} | {:.2}% | {:.2}% |\n", p.name, 100.0 * a, 100.0 * b));
    }
    Ok(t)
}

/// One row of the probe table.
#[derive(Clone, Debug)]
pub struct ProbeRow {
    /// What the features are, e.g. `raw pixels`.
    pub features: String,
    /// Their linear-probe and k-NN accuracy.
    pub scores: ProbeScores,
}

/// The probe on `model`, then on the two baselines (read from `cache` when it holds them and not
/// `fresh`, see [`baseline_scores`]).
pub fn probe_with_baselines(
    model: &MaskedAutoencoder,
    data: &ProbeData,
    spec: FeatureSpec,
    o: &ProbeOptions,
    dev: &Device,
    cache: Option<&Path>,
    fresh: bool,
) -> Result<Vec<ProbeRow>> {
    let (tr, te) = encoder_features(model, data, spec)?;
    let mae = ProbeRow { features: format!("MAE encoder ({spec})"), scores: score(tr, te, data.classes, o, dev)? };
    let b = baseline_scores(&model.config, data, spec, o, o.seed.wrapping_add(1), dev, cache, fresh)?;
    Ok(vec![
        mae,
        ProbeRow { features: "raw pixels".into(), scores: b.pixels },
        ProbeRow { features: format!("random-init encoder ({spec})"), scores: b.random },
    ])
}

/// The scores of the two baselines every probe is set beside.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Baselines {
    /// The raw pixels (normalised, flattened).
    pub pixels: ProbeScores,
    /// The encoder at random initialisation (the official initialisation).
    pub random: ProbeScores,
    /// Whether they were read from the cache rather than probed.
    pub cached: bool,
}

const BASELINES_HEADER: &str = "features,key,linear_probe,knn,weight_decay";
const BASELINE_NAMES: [&str; 2] = ["raw pixels", "random-init encoder"];

/// Where `mae probe` keeps the baselines' scores between runs: `$MAE_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/mae`, else `~/.cache/mae`, each `/baselines.csv`; `None` without any of them.
pub fn default_baseline_cache() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let dir = env("MAE_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("mae")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("mae")))?;
    Some(dir.join("baselines.csv"))
}

/// A 64-bit fingerprint of the probe's images and labels (both splits), so that a cache keyed
/// on it never serves scores of other images: a folder source can change under the same name.
/// Eight bytes at a time, a multiply-xorshift mix: ~10 ms for Fashion-MNIST's 55 MB.
fn data_fingerprint(data: &ProbeData) -> u64 {
    let mut h = 0x243f_6a88_85a3_08d3u64;
    let mut mix = |v: u64| {
        h = (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 29;
    };
    for set in [&data.train, &data.test] {
        mix(set.len() as u64);
        let chunks = set.pixels.chunks_exact(8);
        let tail = chunks.remainder();
        chunks.for_each(|c| mix(u64::from_le_bytes(c.try_into().expect("8 bytes"))));
        tail.iter().for_each(|&b| mix(b as u64));
        set.labels.iter().flatten().for_each(|&l| mix(l as u64));
    }
    h
}

/// The raw pixels' and a random-init encoder's (`config`, initialised with `random_seed`) probe
/// scores on `data`. They depend on nothing a training run changes and take most of a probe's
/// time, so with a `cache` (a CSV) they are kept there under a key of everything they depend
/// on (the images, the normalisation, the model, the features, the seed, the probe) and read back
/// by a later call with the same key (unless `fresh`: then probed again, and the cache updated).
/// Lines of other keys stay; the file is rewritten atomically (two processes that add lines at
/// once can lose one's: it is then probed again).
#[allow(clippy::too_many_arguments)]
pub fn baseline_scores(
    config: &ModelConfig,
    data: &ProbeData,
    spec: FeatureSpec,
    o: &ProbeOptions,
    random_seed: u64,
    dev: &Device,
    cache: Option<&Path>,
    fresh: bool,
) -> Result<Baselines> {
    let key = format!(
        "images={:016x};train={};test={};norm={:?};model={config:?};features={spec};seed={random_seed};{}",
        data_fingerprint(data),
        data.train.len(),
        data.test.len(),
        data.norm,
        o.key()
    )
    .replace([',', '\n'], ";");
    let text = cache.and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();
    // `features,key,linear,knn[,weight_decay]`: lines of the study's first cache had no decay.
    let kept: Vec<(String, String, ProbeScores)> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let weight_decay = match f.len() {
                4 => f32::NAN,
                5 => f[4].parse().ok()?,
                _ => return None,
            };
            let scores = ProbeScores { linear: f[2].parse().ok()?, knn: f[3].parse().ok()?, weight_decay };
            Some((f[0].to_string(), f[1].to_string(), scores))
        })
        .collect();
    let find = |name: &str| kept.iter().find(|r| r.0 == name && r.1 == key).map(|r| r.2);
    if let (false, Some(pixels), Some(random)) = (fresh, find(BASELINE_NAMES[0]), find(BASELINE_NAMES[1])) {
        return Ok(Baselines { pixels, random, cached: true });
    }
    let (tr, te) = pixel_features(data, config.img_size)?;
    let pixels = score(tr, te, data.classes, o, dev)?;
    let model = MaskedAutoencoder::new(config, random_seed, dev)?;
    let (tr, te) = encoder_features(&model, data, spec)?;
    let random = score(tr, te, data.classes, o, dev)?;
    if let Some(path) = cache {
        use std::io::Write;
        let mut out = format!("{BASELINES_HEADER}\n");
        for (name, k, s) in kept.iter().filter(|r| r.1 != key) {
            out.push_str(&format!("{name},{k},{},{},{}\n", s.linear, s.knn, s.weight_decay));
        }
        for (name, s) in BASELINE_NAMES.iter().zip([pixels, random]) {
            out.push_str(&format!("{name},{key},{},{},{}\n", s.linear, s.knn, s.weight_decay));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        crate::io::atomic::write_atomically(path, |f| f.write_all(out.as_bytes()))?;
    }
    Ok(Baselines { pixels, random, cached: false })
}

/// A markdown table of probe rows.
pub fn probe_table(rows: &[ProbeRow]) -> String {
    let mut s = String::from("| features | linear probe | its weight decay | k-NN (k=20) |\n|---|---:|---:|---:|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {:.2}% | {} | {:.2}% |\n",
            r.features,
            100.0 * r.scores.linear,
            r.scores.weight_decay,
            100.0 * r.scores.knn
        ));
    }
    s
}

/// A run's probe scores at each of its snapshots: `(step, scores)` by step.
#[derive(Clone, Debug)]
pub struct ProbeCurve {
    /// The run's name (its folder's name, or the study's run name).
    pub name: String,
    /// `(step, scores)`, by step.
    pub points: Vec<(u64, ProbeScores)>,
}

const CURVE_FILE: &str = "probe_vs_steps.csv";

/// Probes every snapshot of the run in `run_dir` (`TrainOptions::snapshot_every`) and its newest
/// checkpoint. Scores are kept in `run_dir/probe_vs_steps.csv` as they come, with what they were
/// measured on, so a second call (an interrupted study, another plot) probes only what is new.
pub fn probe_over_steps(
    run_dir: &std::path::Path,
    data: &ProbeData,
    spec: FeatureSpec,
    o: &ProbeOptions,
    dev: &Device,
) -> Result<ProbeCurve> {
    use crate::train::checkpoint::{CheckpointDir, MODEL_FILE, load_model};
    let mut models = crate::train::list_snapshots(run_dir);
    if let Some((step, dir)) = CheckpointDir::new(run_dir).list().pop()
        && !models.iter().any(|(s, _)| *s == step)
    {
        models.push((step, dir.join(MODEL_FILE)));
    }
    if models.is_empty() {
        return Err(Error::Config(format!(
            "{} holds no snapshots or checkpoints: train with snapshots (`mae study --snapshots N`) first",
            run_dir.display()
        )));
    }
    let key = curve_key(data, spec, o);
    let csv = run_dir.join(CURVE_FILE);
    let mut known: Vec<(u64, ProbeScores)> = std::fs::read_to_string(&csv)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            // Lines of older probes (4 fields, another key) never match.
            (f.len() == 5 && f[0] == key).then_some(())?;
            let weight_decay = f[4].parse().ok()?;
            Some((
                f[1].parse().ok()?,
                ProbeScores { linear: f[2].parse().ok()?, knn: f[3].parse().ok()?, weight_decay },
            ))
        })
        .collect();
    for (step, path) in models {
        if known.iter().any(|(s, _)| *s == step) {
            continue;
        }
        let (model, _) = load_model(&path, None, dev)?;
        let (tr, te) = encoder_features(&model, data, spec)?;
        let s = score(tr, te, data.classes, o, dev)?;
        eprintln!("  step {step}: linear probe {:.2}%, k-NN {:.2}%", 100.0 * s.linear, 100.0 * s.knn);
        record_curve_point(run_dir, data, spec, o, step, s)?;
        known.push((step, s));
    }
    known.sort_by_key(|(s, _)| *s);
    let name = run_dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    Ok(ProbeCurve { name, points: known })
}

/// What probe scores depend on besides the model: the features and the probe's training.
fn curve_key(data: &ProbeData, spec: FeatureSpec, o: &ProbeOptions) -> String {
    format!("{spec};train={};{}", data.train.len(), o.key()).replace(',', ";")
}

/// Keeps the scores of the run's model at `step` in its `probe_vs_steps.csv`, where
/// [`probe_over_steps`] finds them instead of probing that model again.
pub fn record_curve_point(
    run_dir: &std::path::Path,
    data: &ProbeData,
    spec: FeatureSpec,
    o: &ProbeOptions,
    step: u64,
    s: ProbeScores,
) -> Result<()> {
    use std::io::Write;
    let csv = run_dir.join(CURVE_FILE);
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&csv).map_err(|e| Error::io(&csv, e))?;
    writeln!(f, "{},{step},{},{},{}", curve_key(data, spec, o), s.linear, s.knn, s.weight_decay)
        .map_err(|e| Error::io(&csv, e))
}

/// Linear-probe accuracy against pre-training steps, a line per run, the baselines (`(name,
/// linear accuracy)`) flat across.
pub fn probe_steps_plot(curves: &[ProbeCurve], baselines: &[(String, f32)]) -> image::RgbImage {
    use crate::io::plot::{PALETTE, Series, line_plot};
    let last = curves.iter().flat_map(|c| c.points.iter().map(|p| p.0)).max().unwrap_or(1) as f64;
    let mut series: Vec<Series> = curves
        .iter()
        .enumerate()
        .map(|(i, c)| Series {
            name: c.name.clone(),
            points: c.points.iter().map(|(s, p)| (*s as f64, 100.0 * p.linear as f64)).collect(),
            color: PALETTE[i % PALETTE.len()],
        })
        .collect();
    for (i, (name, lin)) in baselines.iter().enumerate() {
        let y = 100.0 * *lin as f64;
        series.push(Series {
            name: format!("baseline: {name}"),
            points: vec![(0.0, y), (last, y)],
            color: [150 + 40 * i as u8, 150, 150],
        });
    }
    line_plot(&series, "linear probe accuracy vs pre-training steps", "step", "accuracy (%)", 900, 540, false)
}

/// A markdown table of probe curves: a row per step, a linear / k-NN column pair per run.
pub fn curve_table(curves: &[ProbeCurve]) -> String {
    let mut steps: Vec<u64> = curves.iter().flat_map(|c| c.points.iter().map(|p| p.0)).collect();
    steps.sort();
    steps.dedup();
    let mut s = String::from("| step |");
    for c in curves {
        s.push_str(&format!(" {} linear | {} k-NN |", c.name, c.name));
    }
    s.push_str("\n|---:|");
    s.push_str(&"---:|---:|".repeat(curves.len()));
    s.push('\n');
    for step in steps {
        s.push_str(&format!("| {step} |"));
        for c in curves {
            match c.points.iter().find(|p| p.0 == step) {
                Some((_, p)) => s.push_str(&format!(" {:.2}% | {:.2}% |", 100.0 * p.linear, 100.0 * p.knn)),
                None => s.push_str(" | |"),
            }
        }
        s.push('\n');
    }
    s
}
