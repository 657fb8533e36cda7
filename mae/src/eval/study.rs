//! `mae study`: what does masked autoencoding learn, and why? Pre-train for the same budget over
//! mask ratios, masking strategies and targets, probe each encoder (linear probe and k-NN on frozen
//! features), and set the results beside the two baselines (raw pixels, a random encoder).
//!
//! Ratio 0 is a plain autoencoder: the encoder sees every patch and the loss covers every patch.
//! It is trained once per target (strategies do not apply to it).
//!
//! Outputs in the study folder: `results.csv` (one row per run, appended as runs finish, so an
//! interrupted study skips what is done when started again), `results.md` (the table),
//! `probe_vs_ratio.png` (linear-probe accuracy against mask ratio, a line per strategy and target),
//! and `runs/<name>/` with each run's checkpoint, loss plot and reconstructions. `settings.txt`
//! holds the budget and recipe the folder's runs were trained with: a later command that would
//! train its runs differently (say, after the tuned recipe's defaults changed) is refused rather
//! than mixing both in one table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use engine::Device;
use engine::cpu::matmul::Precision;

use crate::data::source::DataSource;
use crate::error::{Error, Result};
use crate::eval::classifiers::{ProbeOptions, score};
use crate::eval::features::FeatureSpec;
use crate::eval::probe::{
    ProbeData, curve_table, encoder_features, probe_over_steps, probe_steps_plot, record_curve_point,
};
use crate::io::plot::{PALETTE, Series, line_plot};
use crate::io::png::save_png;
use crate::model::config::ModelConfig;
use crate::model::masking::MaskStrategy;
use crate::train::checkpoint::{MODEL_FILE, load_model};
use crate::train::recipe::Recipe;
use crate::train::{Budget, TrainOptions, train};

/// What a study compares, and with what budget.
#[derive(Clone, Debug)]
pub struct StudyOptions {
    /// The images to pre-train and probe on.
    pub data: DataSource,
    /// The model; each run sets its own `norm_pix_loss` from `targets`.
    pub model: ModelConfig,
    /// Mask ratios to try, each in `[0, 1)`; 0 is a plain autoencoder.
    pub ratios: Vec<f32>,
    /// Masking strategies to try at each ratio above 0.
    pub strategies: Vec<MaskStrategy>,
    /// `true` = norm-pix target, `false` = raw pixels.
    pub targets: Vec<bool>,
    /// Pre-training time per run, in seconds; with `steps_per_run`, whichever ends first.
    pub seconds_per_run: Option<f64>,
    /// Pre-training steps per run.
    pub steps_per_run: Option<u64>,
    /// Batch, learning rate, warmup, weight decay and crop scale of every run. Not its decoder
    /// depth: the study's runs keep the preset's shape (which its results name), and
    /// `decoder_depths` sets others beside it.
    pub recipe: Recipe,
    /// Seed of every run of the grid.
    pub seed: u64,
    /// More seeds for the two runs the study's argument rests on (ratio 0.75 random and ratio 0,
    /// norm-pix), so that the table shows how large seed noise is.
    pub extra_seeds: Vec<u64>,
    /// Decoder depths to try besides the preset's, at ratio 0.75 random, norm-pix (the paper's
    /// Table 1a: a deeper decoder leaves the encoder's last blocks more abstract).
    pub decoder_depths: Vec<usize>,
    /// Also pre-train at ratio 0.75 random without augmentation (the whole image, no flips).
    pub no_augment_run: bool,
    /// Also pre-train at ratio 0.75 random on the first N training images only, for each N (the
    /// scale of the data).
    pub train_limits: Vec<usize>,
    /// Also pre-train at ratio 0.75 random with these encoders, `(width, depth)`, heads of the
    /// preset's head width (the scale of the model).
    pub encoders: Vec<(usize, usize)>,
    /// Keep this many evenly spaced snapshots per run and probe those of the ratio-0 and
    /// ratio-0.75 random runs (of an extra seed where the study's own seed's were trained
    /// without snapshots): `probe_vs_steps.png` (0: none; needs `steps_per_run`).
    pub snapshots: u64,
    /// The study folder (see the module's comment).
    pub out_dir: PathBuf,
    /// Settings of the linear probe.
    pub probe: ProbeOptions,
    /// Training images the probes use at most (all when `None`).
    pub probe_train_limit: Option<usize>,
    /// Which encoder features are probed.
    pub features: FeatureSpec,
    /// The precision of every run's products (`TrainOptions::matmul_precision`; bf16 by default).
    /// A study's runs share it: resuming with another is refused, as for the recipe.
    pub matmul_precision: Precision,
    /// Also probe every block of every run's encoder and of a random one (`per_block.png`, a
    /// table in `results.md`; see [`crate::eval::per_block`]).
    pub per_block: bool,
    /// Also draw what the masked model (random 75%) and the plain autoencoder look at and how
    /// their features lie: `attention.png` and `attention_reconstructions.png`
    /// ([`crate::eval::attention_view`]), `geometry.png` and its table in `results.md`
    /// ([`crate::eval::geometry`]), as `mae attention` and `mae geometry` draw them.
    pub views: bool,
}

impl StudyOptions {
    /// The full study of `mae study` with its defaults: the ratio sweep (0 - 0.9) under random,
    /// block and grid masking, both targets, 2 minutes a run, the model's tuned recipe, seed 0,
    /// the converged probe on the paper's features (cls + mean of the encoder's output). Set the
    /// fields to change it, e.g. `StudyOptions { steps_per_run: Some(6009), ..StudyOptions::new(..) }`.
    pub fn new(data: DataSource, model: ModelConfig, out_dir: PathBuf) -> Self {
        let recipe = Recipe::for_model(crate::train::recipe::RecipeName::Tuned, &model);
        StudyOptions {
            data,
            model,
            ratios: vec![0.0, 0.25, 0.5, 0.75, 0.9],
            strategies: vec![MaskStrategy::Random, MaskStrategy::Block, MaskStrategy::Grid],
            targets: vec![true, false],
            seconds_per_run: Some(120.0),
            steps_per_run: None,
            recipe,
            seed: 0,
            extra_seeds: vec![],
            decoder_depths: vec![],
            no_augment_run: false,
            train_limits: vec![],
            encoders: vec![],
            snapshots: 0,
            out_dir,
            probe: ProbeOptions::default(),
            probe_train_limit: None,
            features: FeatureSpec::output(crate::eval::features::Pool::Both),
            matmul_precision: Precision::Bf16,
            per_block: false,
            views: false,
        }
    }
}

/// One pre-training run of the study and its scores.
#[derive(Clone, Debug, PartialEq)]
pub struct StudyRow {
    /// The run's name, e.g. `norm-pix-random-r0.75`.
    pub name: String,
    /// Mask ratio.
    pub ratio: f32,
    /// The masking strategy's name (`none` at ratio 0).
    pub strategy: String,
    /// Target: `norm-pix` or `pixels`.
    pub target: String,
    /// Transformer blocks in the decoder.
    pub decoder_depth: usize,
    /// The run's seed.
    pub seed: u64,
    /// Optimizer steps the run did.
    pub steps: u64,
    /// The last step's loss.
    pub final_loss: f32,
    /// Linear-probe accuracy, in `0..1`.
    pub linear: f32,
    /// k-NN accuracy, in `0..1`.
    pub knn: f32,
    /// The probe that measured them ([`ProbeOptions::key`]).
    pub probe: String,
}

fn target_name(norm_pix: bool) -> &'static str {
    if norm_pix { "norm-pix" } else { "pixels" }
}

/// One pre-training run of a study.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSpec {
    /// Its name, e.g. `norm-pix-random-r0.75`, `norm-pix-random-r0.75-dec4`, `norm-pix-none-r0.00-s1`.
    pub name: String,
    /// Mask ratio (0: a plain autoencoder).
    pub ratio: f32,
    /// The masking strategy (`None` at ratio 0).
    pub strategy: Option<MaskStrategy>,
    /// Norm-pix target (else raw pixels).
    pub norm_pix: bool,
    /// Decoder blocks.
    pub decoder_depth: usize,
    /// Seed of the run.
    pub seed: u64,
    /// RandomResizedCrop and flips (the recipe's), else the whole image.
    pub augment: bool,
    /// Pre-train on the first N training images only.
    pub train_limit: Option<usize>,
    /// The encoder's `(width, depth)` when not the preset's.
    pub encoder: Option<(usize, usize)>,
}

/// The runs of a study, in order: the grid (targets x ratios x strategies, one plain autoencoder
/// per target), then the other decoder depths, then the extra seeds.
pub fn plan(o: &StudyOptions) -> Vec<RunSpec> {
    let depth = o.model.decoder_depth;
    let run = |name: String, ratio: f32, strategy: Option<MaskStrategy>, norm_pix: bool| RunSpec {
        name,
        ratio,
        strategy,
        norm_pix,
        decoder_depth: depth,
        seed: o.seed,
        augment: true,
        train_limit: None,
        encoder: None,
    };
    let mut runs = Vec::new();
    for &norm_pix in &o.targets {
        for &ratio in &o.ratios {
            if ratio == 0.0 {
                runs.push(run(format!("{}-none-r0.00", target_name(norm_pix)), 0.0, None, norm_pix));
                continue;
            }
            for &s in &o.strategies {
                let name = format!("{}-{}-r{ratio:.2}", target_name(norm_pix), s.name());
                runs.push(run(name, ratio, Some(s), norm_pix));
            }
        }
    }
    let main = run("norm-pix-random-r0.75".into(), 0.75, Some(MaskStrategy::Random), true);
    for &d in o.decoder_depths.iter().filter(|&&d| d != depth) {
        runs.push(RunSpec { name: format!("{}-dec{d}", main.name), decoder_depth: d, ..main.clone() });
    }
    if o.no_augment_run {
        runs.push(RunSpec { name: format!("{}-noaug", main.name), augment: false, ..main.clone() });
    }
    for &n in &o.train_limits {
        runs.push(RunSpec { name: format!("{}-n{n}", main.name), train_limit: Some(n), ..main.clone() });
    }
    for &(w, d) in &o.encoders {
        runs.push(RunSpec { name: format!("{}-enc{w}x{d}", main.name), encoder: Some((w, d)), ..main.clone() });
    }
    let plain = run("norm-pix-none-r0.00".into(), 0.0, None, true);
    for &seed in o.extra_seeds.iter().filter(|&&s| s != o.seed) {
        for r in [&main, &plain] {
            runs.push(RunSpec { name: format!("{}-s{seed}", r.name), seed, ..r.clone() });
        }
    }
    runs
}

const CSV_HEADER: &str = "name,ratio,strategy,target,steps,final_loss,linear_probe,knn,decoder_depth,seed,probe";
/// The probe of rows written before the probe column: 30 epochs at lr 2e-3, weight decay 1e-4.
const PROBE_BEFORE_THE_COLUMN: &str = "unrecorded (30-epoch probe)";

/// The rows of `results.csv`, of every probe; rows of studies from before the decoder, seed and
/// probe columns take the study's own (`depth`, `seed`) and [`PROBE_BEFORE_THE_COLUMN`].
fn read_rows(path: &Path, depth: usize, seed: u64) -> Vec<StudyRow> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            matches!(f.len(), 8 | 10 | 11).then(|| -> Option<StudyRow> {
                Some(StudyRow {
                    name: f[0].into(),
                    ratio: f[1].parse().ok()?,
                    strategy: f[2].into(),
                    target: f[3].into(),
                    steps: f[4].parse().ok()?,
                    final_loss: f[5].parse().ok()?,
                    linear: f[6].parse().ok()?,
                    knn: f[7].parse().ok()?,
                    decoder_depth: f.get(8).map_or(Some(depth), |v| v.parse().ok())?,
                    seed: f.get(9).map_or(Some(seed), |v| v.parse().ok())?,
                    probe: f.get(10).unwrap_or(&PROBE_BEFORE_THE_COLUMN).to_string(),
                })
            })?
        })
        .collect()
}

fn csv_line(r: &StudyRow) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{},{},{}",
        r.name, r.ratio, r.strategy, r.target, r.steps, r.final_loss, r.linear, r.knn, r.decoder_depth, r.seed, r.probe
    )
}

fn append_row(path: &Path, r: &StudyRow) -> Result<()> {
    use std::io::Write;
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
    if new {
        writeln!(f, "{CSV_HEADER}").map_err(|e| Error::io(path, e))?;
    }
    writeln!(f, "{}", csv_line(r)).map_err(|e| Error::io(path, e))
}

/// Rewrites a `results.csv` of older columns in today's (atomically: a temporary file renamed
/// over it), keeping every row, so that rows of a new probe can be appended beside the old ones.
fn upgrade_csv(path: &Path, rows: &[StudyRow]) -> Result<()> {
    use std::io::Write;
    let header = std::fs::read_to_string(path).ok().and_then(|t| t.lines().next().map(str::to_string));
    if header.is_none_or(|h| h == CSV_HEADER) {
        return Ok(());
    }
    let mut text = format!("{CSV_HEADER}\n");
    for r in rows {
        text.push_str(&csv_line(r));
        text.push('\n');
    }
    crate::io::atomic::write_atomically(path, |f| f.write_all(text.as_bytes()))
}

/// The two baselines' scores (raw pixels, the encoder at random initialisation): the same for
/// every run of a study and for every start of it, and a probe takes minutes, so they are kept in
/// the study's `baselines.csv` (see [`crate::eval::probe::baseline_scores`]) and probed again only when
/// what they depend on changes.
fn baselines(o: &StudyOptions, data: &ProbeData, dev: &Device) -> Result<Vec<(String, f32, f32)>> {
    let path = o.out_dir.join("baselines.csv");
    let b = crate::eval::probe::baseline_scores(
        &o.model,
        data,
        o.features,
        &o.probe,
        o.seed.wrapping_add(1),
        dev,
        Some(&path),
        false,
    )?;
    eprintln!(
        "study: baselines {}",
        if b.cached { format!("already probed ({})", path.display()) } else { "probed".into() }
    );
    Ok(vec![
        ("raw pixels".into(), b.pixels.linear, b.pixels.knn),
        ("random-init encoder".into(), b.random.linear, b.random.knn),
    ])
}

/// The run's last loss: this process's, or, for a run resumed with no step left to do, the log's.
fn final_loss(report: &crate::train::TrainReport) -> f32 {
    report.losses.last().map(|l| l.1).unwrap_or_else(|| {
        let text = std::fs::read_to_string(&report.log).unwrap_or_default();
        text.lines().skip(1).last().and_then(|l| l.split(',').nth(2)).and_then(|v| v.parse().ok()).unwrap_or(f32::NAN)
    })
}

/// What a study gives: its runs, the baselines, and where the table and the plot are.
pub struct StudyReport {
    /// One row per run, in the order of `results.csv`.
    pub rows: Vec<StudyRow>,
    /// `(name, linear, knn)` of the baselines.
    pub baselines: Vec<(String, f32, f32)>,
    /// `results.md`.
    pub table: PathBuf,
    /// `probe_vs_ratio.png`.
    pub plot: PathBuf,
    /// `probe_vs_steps.png`, when the study kept snapshots.
    pub steps_plot: Option<PathBuf>,
    /// `per_block.png`, with `per_block`.
    pub per_block_plot: Option<PathBuf>,
    /// `attention.png`, `attention_reconstructions.png` and `geometry.png`, with `views`.
    pub views: Vec<PathBuf>,
}

/// Pre-trains and probes every run of `plan(o)` not already in `results.csv`, then the
/// baselines; writes the table and the plot.
pub fn run_study(o: &StudyOptions, dev: &Device) -> Result<StudyReport> {
    run_study_until(o, dev, None)
}

/// [`run_study`], which a `stop` flag set by another thread (Ctrl-C) ends: the run in training
/// finishes its step and saves a checkpoint, and the study returns [`Error::Interrupted`].
/// Started again, it continues that run from the checkpoint (a run killed outright continues
/// from its last periodic one).
pub fn run_study_until(o: &StudyOptions, dev: &Device, stop: Option<Arc<AtomicBool>>) -> Result<StudyReport> {
    if o.ratios.is_empty() || o.targets.is_empty() || (o.strategies.is_empty() && o.ratios.iter().any(|&r| r > 0.0)) {
        return Err(Error::Config("the study needs at least one ratio, target and strategy".into()));
    }
    for &r in &o.ratios {
        crate::model::masking::check_ratio(r)?;
    }
    let compared = o.ratios.contains(&0.0)
        && o.ratios.contains(&0.75)
        && o.strategies.contains(&MaskStrategy::Random)
        && o.targets.contains(&true);
    if o.views && !compared {
        return Err(Error::Config(VIEWS_NEED.into()));
    }
    std::fs::create_dir_all(&o.out_dir).map_err(|e| Error::io(&o.out_dir, e))?;
    if o.snapshots > 0 && o.steps_per_run.is_none() {
        return Err(Error::Config("snapshots need a budget in steps: give --steps-per-run".into()));
    }
    check_settings(o)?;
    let csv = o.out_dir.join("results.csv");
    let all_rows = read_rows(&csv, o.model.decoder_depth, o.seed);
    upgrade_csv(&csv, &all_rows)?;
    // A run probed by another probe is not done: it is probed again (its training, complete, is
    // not repeated), and the table holds this probe's rows only.
    let probe_key = o.probe.key();
    let mut rows: Vec<StudyRow> = all_rows.into_iter().filter(|r| r.probe == probe_key).collect();
    let data = ProbeData::load(&o.data, &o.model, None, o.probe_train_limit, o.seed)?;
    for spec in plan(o) {
        let name = spec.name.clone();
        if rows.iter().any(|r| r.name == name) {
            eprintln!("study: {name} already done, skipping");
            continue;
        }
        eprintln!("study: pre-training {name}");
        // Each run has its own shapes: the GPU's buffer cache starts over (the last run's tensors
        // are gone by now).
        dev.release_cached();
        let run_dir = o.out_dir.join("runs").join(&name);
        let mut model = o.model.clone();
        model.norm_pix_loss = spec.norm_pix;
        model.decoder_depth = spec.decoder_depth;
        if let Some((width, depth)) = spec.encoder {
            let head_width = o.model.embed_dim / o.model.num_heads;
            (model.embed_dim, model.depth, model.num_heads) = (width, depth, (width / head_width).max(1));
            model.name = format!("{}-enc{width}x{depth}", o.model.name);
        }
        let mut t = TrainOptions::new(model.clone(), o.data.clone(), run_dir.clone());
        t.apply_recipe(&o.recipe);
        t.matmul_precision = o.matmul_precision;
        t.budget = Budget { epochs: None, steps: o.steps_per_run, seconds: o.seconds_per_run };
        t.mask_ratio = spec.ratio;
        t.mask_strategy = spec.strategy.unwrap_or(MaskStrategy::Random);
        t.seed = spec.seed;
        t.augment = spec.augment;
        t.train_limit = spec.train_limit;
        t.verbose = false;
        // Every ceil(n / N) steps, so the N-th point is the run's final model (not a snapshot one
        // step before it, as n / N would give for 6009 steps and 4 snapshots: 6008, then 6009).
        t.snapshot_every = o.steps_per_run.filter(|_| o.snapshots > 0).map(|n| n.div_ceil(o.snapshots).max(1));
        // A run killed half-way is resumed from its checkpoint rather than started over.
        t.resume = crate::train::checkpoint::CheckpointDir::new(&run_dir).latest().is_some();
        let report = train(&t, dev, stop.clone())?;
        let (trained, _) = load_model(&report.checkpoint.join(MODEL_FILE), Some(&model), dev)?;
        let (tr, te) = encoder_features(&trained, &data, o.features)?;
        let scores = score(tr, te, data.classes, &o.probe, dev)?;
        if o.snapshots > 0 {
            // The last point of the run's probe curve is this probe of its final model.
            record_curve_point(&run_dir, &data, o.features, &o.probe, report.steps, scores)?;
        }
        let row = StudyRow {
            name: name.clone(),
            ratio: spec.ratio,
            strategy: spec.strategy.map(|s| s.name()).unwrap_or("none").into(),
            target: target_name(spec.norm_pix).into(),
            decoder_depth: spec.decoder_depth,
            seed: spec.seed,
            steps: report.steps,
            final_loss: final_loss(&report),
            linear: scores.linear,
            knn: scores.knn,
            probe: probe_key.clone(),
        };
        eprintln!(
            "study: {name}: {} steps, loss {:.4}, linear probe {:.2}%, k-NN {:.2}%",
            row.steps,
            row.final_loss,
            100.0 * row.linear,
            100.0 * row.knn
        );
        append_row(&csv, &row)?;
        rows.push(row);
    }
    let baselines = baselines(o, &data, dev)?;

    // The probe against pre-training time, for the masked model and the plain autoencoder.
    let mut curves = Vec::new();
    if o.snapshots > 0 {
        for name in curve_runs(o, &rows) {
            eprintln!("study: probing the snapshots of {name}");
            curves.push(probe_over_steps(&o.out_dir.join("runs").join(&name), &data, o.features, &o.probe, dev)?);
        }
    }
    let steps_plot = (!curves.is_empty()).then(|| o.out_dir.join("probe_vs_steps.png"));
    if let Some(path) = &steps_plot {
        let flat: Vec<(String, f32)> = baselines.iter().map(|(n, l, _)| (n.clone(), *l)).collect();
        save_png(path, &probe_steps_plot(&curves, &flat))?;
    }

    let table = o.out_dir.join("results.md");
    let mut md = markdown(o, &rows, &baselines);
    if !curves.is_empty() {
        md.push_str("\nLinear probe and k-NN against pre-training steps:\n\n");
        md.push_str(&curve_table(&curves));
    }
    let per_block_plot = if o.per_block {
        let (curves, pixels) = per_block_curves(o, &rows, &baselines, &data, dev)?;
        md.push_str("\nLinear probe and k-NN at each encoder block:\n\n");
        md.push_str(&crate::eval::per_block::per_block_table(&curves, Some(pixels)));
        let path = o.out_dir.join("per_block.png");
        save_png(&path, &crate::eval::per_block::per_block_plot(&curves, Some(pixels)))?;
        Some(path)
    } else {
        None
    };
    let views = if o.views { draw_views(o, &rows, &data, &mut md, dev)? } else { Vec::new() };
    std::fs::write(&table, md).map_err(|e| Error::io(&table, e))?;
    let plot = o.out_dir.join("probe_vs_ratio.png");
    let main: Vec<StudyRow> =
        rows.iter().filter(|r| r.decoder_depth == o.model.decoder_depth && r.seed == o.seed).cloned().collect();
    save_png(&plot, &probe_plot(&main, &baselines))?;
    Ok(StudyReport { rows, baselines, table, plot, steps_plot, per_block_plot, views })
}

/// Why `views` refuses a study without the two runs it compares.
const VIEWS_NEED: &str = "the study's views compare the masked model (random 75%) with the plain autoencoder \
     (ratio 0), both on the norm-pix target: include 0.75 and 0 in --ratios, random in --strategies and norm-pix in \
     --targets";

/// Test images in the attention picture, and the one reconstructed over mask ratios.
const VIEW_IMAGES: usize = 4;
/// The mask ratios of the reconstruction picture.
const VIEW_RATIOS: [f32; 4] = [0.25, 0.5, 0.75, 0.9];
/// The side of each geometry panel, in pixels (`mae geometry`'s default).
const VIEW_PANEL: u32 = 420;

/// The views of `views`: the masked model and the plain autoencoder of [`curve_runs`] side by
/// side (their attention, their reconstructions over mask ratios with the same masks, and their
/// features' geometry beside the pixels'); the geometry table goes into `md`. Returns the
/// pictures written.
fn draw_views(
    o: &StudyOptions,
    rows: &[StudyRow],
    data: &ProbeData,
    md: &mut String,
    dev: &Device,
) -> Result<Vec<PathBuf>> {
    use crate::eval::attention_view::{Compared, attention_picture, reconstruction_picture};
    use crate::eval::geometry::{class_names, geometry, geometry_picture, geometry_table};
    use crate::eval::probe::pixel_features;
    let names = curve_runs(o, rows);
    if names.len() < 2 {
        return Err(Error::Config(VIEWS_NEED.into()));
    }
    let mut models = Vec::new();
    for name in &names {
        let run_dir = o.out_dir.join("runs").join(name);
        let Some(checkpoint) = crate::train::checkpoint::CheckpointDir::new(&run_dir).latest() else {
            return Err(Error::Config(format!("{} has no checkpoint to draw", run_dir.display())));
        };
        models.push(load_model(&checkpoint.join(MODEL_FILE), None, dev)?.0);
    }
    let compared: Vec<Compared> = names
        .iter()
        .zip(&models)
        .map(|(name, model)| Compared { label: name.clone(), model, norm: data.norm.clone() })
        .collect();
    eprintln!("study: drawing the attention, reconstructions and geometry of {}", names.join(" and "));
    let indices: Vec<usize> = (0..VIEW_IMAGES.min(data.test.len())).collect();
    let (attention, _) = attention_picture(&compared, &data.test, &indices)?;
    let reconstructions = reconstruction_picture(&compared, &data.test, 0, &VIEW_RATIOS, MaskStrategy::Random, o.seed)?;
    let mut geometries = Vec::new();
    for (name, model) in names.iter().zip(&models) {
        let (train, test) = encoder_features(model, data, o.features)?;
        geometries.push(geometry(name, &train, &test, data.classes, dev)?);
    }
    let (train, test) = pixel_features(data, o.model.img_size)?;
    geometries.push(geometry("raw pixels", &train, &test, data.classes, dev)?);
    let caption = format!(
        "{} test images on each feature set's PC1 and PC2 (features: {}); k-NN: k=20 against {} training images",
        data.test.len(),
        o.features,
        data.train.len()
    );
    let geometry_png = geometry_picture(&geometries, &caption, &class_names(data), VIEW_PANEL);
    md.push_str("\nThe features' geometry (test features on their first two principal components):\n\n");
    md.push_str(&geometry_table(&geometries));
    let mut written = Vec::new();
    for (file, picture) in [
        ("attention.png", &attention),
        ("attention_reconstructions.png", &reconstructions),
        ("geometry.png", &geometry_png),
    ] {
        let path = o.out_dir.join(file);
        save_png(&path, picture)?;
        written.push(path);
    }
    Ok(written)
}

/// Every block of every run's final model probed (kept in the run's `probe_per_block.csv`), then a
/// random encoder's (kept in the study's), and the raw pixels' scores from the baselines.
fn per_block_curves(
    o: &StudyOptions,
    rows: &[StudyRow],
    baselines: &[(String, f32, f32)],
    data: &ProbeData,
    dev: &Device,
) -> Result<(Vec<crate::eval::per_block::DepthCurve>, crate::eval::classifiers::ProbeScores)> {
    use crate::eval::per_block::{CURVE_FILE, DepthCurve, probe_every_block_kept};
    let pool = o.features.pool;
    let mut curves = Vec::new();
    for r in rows {
        let run_dir = o.out_dir.join("runs").join(&r.name);
        let Some(checkpoint) = crate::train::checkpoint::CheckpointDir::new(&run_dir).latest() else {
            return Err(Error::Config(format!("{} has no checkpoint to probe block by block", run_dir.display())));
        };
        eprintln!("study: probing every block of {}", r.name);
        let (model, _) = load_model(&checkpoint.join(MODEL_FILE), None, dev)?;
        let tag = format!("step={}", r.steps);
        let blocks = probe_every_block_kept(&run_dir.join(CURVE_FILE), &tag, &model, data, pool, &o.probe, dev)?;
        curves.push(DepthCurve { name: r.name.clone(), blocks });
    }
    // The random encoder of the baselines (the same seed).
    eprintln!("study: probing every block of a random-init encoder");
    let seed = o.seed.wrapping_add(1);
    let model = crate::model::MaskedAutoencoder::new(&o.model, seed, dev)?;
    let tag = format!("random-init;seed={seed};model={:?}", o.model);
    let blocks = probe_every_block_kept(&o.out_dir.join(CURVE_FILE), &tag, &model, data, pool, &o.probe, dev)?;
    curves.push(DepthCurve { name: "random-init".into(), blocks });
    let (_, linear, knn) =
        baselines.iter().find(|b| b.0 == "raw pixels").cloned().unwrap_or(("".into(), f32::NAN, f32::NAN));
    Ok((curves, crate::eval::classifiers::ProbeScores { linear, knn, weight_decay: f32::NAN }))
}

/// The runs whose probe is drawn against steps: the masked (0.75 random) and the plain
/// autoencoder at the study's seed, or, where that run kept no snapshots (it was trained before
/// the study asked for them), the first of its extra seeds that did.
fn curve_runs(o: &StudyOptions, rows: &[StudyRow]) -> Vec<String> {
    let done = |name: &String| rows.iter().any(|r| &r.name == name);
    ["norm-pix-random-r0.75", "norm-pix-none-r0.00"]
        .into_iter()
        .filter_map(|base| {
            let seeds = o.extra_seeds.iter().filter(|&&s| s != o.seed).map(|s| format!("{base}-s{s}"));
            let candidates: Vec<String> = std::iter::once(base.to_string()).chain(seeds).filter(done).collect();
            let kept_snapshots =
                |name: &&String| !crate::train::list_snapshots(&o.out_dir.join("runs").join(name)).is_empty();
            candidates.iter().find(kept_snapshots).or(candidates.first()).cloned()
        })
        .collect()
}

fn budget_text(o: &StudyOptions) -> String {
    match (o.seconds_per_run, o.steps_per_run) {
        (Some(sec), _) => format!("{:.1} minutes", sec / 60.0),
        (None, Some(n)) => format!("{n} steps"),
        _ => "?".into(),
    }
}

/// The recipe the study's runs train with: the preset's shape, whatever the recipe's decoder depth
/// (each run's depth is in its row).
fn run_recipe(o: &StudyOptions) -> crate::train::recipe::Recipe {
    crate::train::recipe::Recipe { decoder_depth: None, ..o.recipe }
}

const SETTINGS_FILE: &str = "settings.txt";

/// Records the budget and recipe of the study folder's runs on its first command, and refuses a
/// later one whose runs would train otherwise. The recipe's settings count, not its name (`--recipe
/// paper` with the tuned recipe's flags is the same training). A folder from before the file
/// existed takes this command's.
fn check_settings(o: &StudyOptions) -> Result<()> {
    let recipe = run_recipe(o).to_string();
    let settings = recipe.split_once(": ").map_or(recipe.as_str(), |(_, s)| s);
    // Studies from before the bf16 products were f32 and say nothing of it: f32 stays unsaid.
    let products = match o.matmul_precision {
        Precision::F32 => String::new(),
        p => format!("; products {}", p.name()),
    };
    let wanted = format!("{} a run; {settings}{products}\n", budget_text(o));
    let path = o.out_dir.join(SETTINGS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(found) if found.trim() == wanted.trim() => Ok(()),
        Ok(found) => Err(Error::Config(format!(
            "the runs in {} were trained with `{}`, this command's would be trained with `{}`: give the flags of the first \
             (--steps-per-run or --minutes-per-run, --batch, --base-lr, --matmul-precision ...) or choose another --out",
            o.out_dir.display(),
            found.trim(),
            wanted.trim()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write as _;
            crate::io::write_atomically(&path, |f| f.write_all(wanted.as_bytes()))
        }
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// The study's table in markdown.
pub fn markdown(o: &StudyOptions, rows: &[StudyRow], baselines: &[(String, f32, f32)]) -> String {
    let mut s = String::new();
    let budget = budget_text(o);
    let _ = writeln!(
        s,
        "Model `{}` on `{}`, {budget} of pre-training per run (recipe {}, seed {}); probes on {} features \
         ({} training images), linear probe = standardised features + softmax regression ({}), k-NN = k 20, \
         cosine part by part (the mean of the summaries' cosines).\n",
        o.model.name,
        o.data,
        run_recipe(o),
        o.seed,
        o.features,
        o.probe_train_limit.map(|n| n.to_string()).unwrap_or_else(|| "all".into()),
        o.probe.key()
    );
    s.push_str(
        "| run | mask ratio | strategy | target | decoder depth | seed | steps | final loss | linear probe | k-NN |\n",
    );
    s.push_str("|---|---:|---|---|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {:.2} | {} | {} | {} | {} | {} | {:.4} | {:.2}% | {:.2}% |",
            r.name,
            r.ratio,
            r.strategy,
            r.target,
            r.decoder_depth,
            r.seed,
            r.steps,
            r.final_loss,
            100.0 * r.linear,
            100.0 * r.knn
        );
    }
    for (name, lin, knn) in baselines {
        let _ = writeln!(s, "| baseline: {name} | | | | | | | | {:.2}% | {:.2}% |", 100.0 * lin, 100.0 * knn);
    }
    s
}

/// Linear-probe accuracy against mask ratio, one line per (strategy, target); the plain
/// autoencoder (ratio 0) starts every line of its target; baselines are flat lines.
pub fn probe_plot(rows: &[StudyRow], baselines: &[(String, f32, f32)]) -> image::RgbImage {
    let mut lines: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.strategy != "none") {
        lines
            .entry((r.strategy.clone(), r.target.clone()))
            .or_default()
            .push((r.ratio as f64, 100.0 * r.linear as f64));
    }
    for r in rows.iter().filter(|r| r.strategy == "none") {
        for ((_, target), pts) in lines.iter_mut() {
            if *target == r.target {
                pts.push((0.0, 100.0 * r.linear as f64));
            }
        }
    }
    let (lo, hi) = rows.iter().fold((1.0f64, 0.0f64), |(a, b), r| (a.min(r.ratio as f64), b.max(r.ratio as f64)));
    let mut series: Vec<Series> = lines
        .into_iter()
        .enumerate()
        .map(|(i, ((strategy, target), mut pts))| {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series { name: format!("{strategy}, {target}"), points: pts, color: PALETTE[i % PALETTE.len()] }
        })
        .collect();
    for (i, (name, lin, _)) in baselines.iter().enumerate() {
        let y = 100.0 * *lin as f64;
        series.push(Series {
            name: format!("baseline: {name}"),
            points: vec![(lo, y), (hi.max(lo + 1e-3), y)],
            color: [150 + 40 * i as u8, 150, 150],
        });
    }
    line_plot(&series, "linear probe accuracy vs mask ratio", "mask ratio", "accuracy (%)", 900, 540, false)
}
