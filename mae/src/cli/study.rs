//! `mae study`: pre-train over mask ratios, strategies and targets, and probe each encoder.

use std::path::PathBuf;

use clap::Args;
use engine::cpu::matmul::Precision;
use mae::config::ModelConfig;
use mae::masking::MaskStrategy;
use mae::recipe::{Recipe, RecipeName};
use mae::source::DataSource;
use mae::{Error, Result};

use super::common::{
    CROP_MIN_SCALE_HELP, DeviceArgs, FeatureArgs, STRATEGIES, ctrl_c_flag, default_model, device, one_of,
    recipe_default,
};

#[derive(Args)]
pub struct StudyArgs {
    #[arg(long, default_value = "fashion-mnist")]
    data: String,
    #[arg(long)]
    model: Option<String>,
    /// Mask ratios, comma-separated.
    #[arg(long, default_value = "0,0.25,0.5,0.75,0.9", value_delimiter = ',', allow_hyphen_values = true)]
    ratios: Vec<f32>,
    /// Strategies, comma-separated.
    #[arg(long, default_value = "random,block,grid", value_delimiter = ',', value_parser = one_of::<MaskStrategy>(STRATEGIES))]
    strategies: Vec<MaskStrategy>,
    /// Targets, comma-separated.
    #[arg(long, default_value = "norm-pix,pixels", value_delimiter = ',', value_enum)]
    targets: Vec<TargetArg>,
    /// Pre-training budget of each run.
    #[arg(long, default_value_t = 2.0)]
    minutes_per_run: f64,
    /// Or a fixed number of steps per run (deterministic).
    #[arg(long)]
    steps_per_run: Option<u64>,
    /// Where each run's batch, learning rate, warmup, weight decay and crop scale come from (as
    /// `mae train --recipe`); --batch, --base-lr and --crop-min-scale override.
    #[arg(long, default_value = "tuned", value_parser = one_of::<RecipeName>(&["tuned", "paper"]))]
    recipe: RecipeName,
    #[arg(long, help = recipe_default("Images per step", |r| r.batch.to_string()))]
    batch: Option<usize>,
    #[arg(long, help = recipe_default("lr = base_lr * batch / 256", |r| format!("{:e}", r.base_lr)))]
    base_lr: Option<f64>,
    #[arg(long, help = recipe_default(CROP_MIN_SCALE_HELP, |r| r.crop_min_scale.to_string()))]
    crop_min_scale: Option<f32>,
    /// More seeds for ratio 0.75 random and ratio 0 (norm-pix), comma-separated: seed noise.
    #[arg(long, value_delimiter = ',')]
    extra_seeds: Vec<u64>,
    /// Decoder depths to try besides the preset's, at ratio 0.75 random, comma-separated.
    #[arg(long, value_delimiter = ',')]
    decoder_depths: Vec<usize>,
    /// Also a run at ratio 0.75 random without augmentation.
    #[arg(long)]
    no_augment_run: bool,
    /// Also runs at ratio 0.75 random on the first N training images, comma-separated (data scale).
    #[arg(long, value_delimiter = ',')]
    train_limits: Vec<usize>,
    /// Also runs at ratio 0.75 random with other encoders, WIDTHxDEPTH comma-separated (model
    /// scale), e.g. 192x8,64x4.
    #[arg(long, value_delimiter = ',', value_parser = parse_shape)]
    encoders: Vec<(usize, usize)>,
    /// Keep N snapshots per run and draw the linear probe against steps for ratio 0.75 and ratio
    /// 0 (probe_vs_steps.png; needs --steps-per-run); where those runs were trained without
    /// snapshots, an --extra-seeds run's are drawn.
    #[arg(long, default_value_t = 0)]
    snapshots: u64,
    /// Probe on the first N training images only (quicker).
    #[arg(long)]
    probe_train_limit: Option<usize>,
    #[command(flatten)]
    features: FeatureArgs,
    /// Passes over the training features of each fit of the linear probe
    #[arg(long, default_value_t = 100)]
    probe_epochs: usize,
    /// The linear probe's weight decays to choose from (see `mae probe --help`)
    #[arg(long, value_delimiter = ',', default_values_t = mae::classifiers::PROBE_WEIGHT_DECAYS)]
    probe_weight_decays: Vec<f32>,
    /// The linear probe's peak learning rate
    #[arg(long, default_value_t = mae::classifiers::ProbeOptions::default().lr)]
    probe_lr: f64,
    #[arg(long, default_value = "study")]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Every run's matrix products on the CPU (see `mae train --help`); studies made before bf16
    /// products (2026-12-07) were f32, and resume with `--matmul-precision f32`.
    #[arg(long, default_value = "bf16", value_parser = one_of::<Precision>(&["bf16", "f32", "f16"]))]
    matmul_precision: Precision,
    /// Also the linear probe and k-NN on each encoder block's output, for every run and a random
    /// encoder: per_block.png (accuracy against depth) and a table in results.md (see `mae probe
    /// --per-block`; kept in each run's probe_per_block.csv).
    #[arg(long)]
    per_block: bool,
    /// Also draw the masked model (random 75%) beside the plain autoencoder: the cls token's
    /// attention (attention.png), reconstructions over mask ratios (attention_reconstructions.png)
    /// and the test features' geometry beside the pixels' (geometry.png, a table in results.md);
    /// see `mae attention` and `mae geometry`.
    #[arg(long)]
    views: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

/// `--targets`: what the decoder reconstructs.
#[derive(Clone, Copy, clap::ValueEnum)]
enum TargetArg {
    /// Pixels normalised per patch (the paper's default).
    NormPix,
    /// Raw pixels.
    Pixels,
}

/// `WIDTHxDEPTH`, e.g. `192x8`.
fn parse_shape(s: &str) -> std::result::Result<(usize, usize), String> {
    let bad = || format!("'{s}' is not WIDTHxDEPTH (e.g. 192x8)");
    let (w, d) = s.split_once('x').ok_or_else(bad)?;
    Ok((w.trim().parse().map_err(|_| bad())?, d.trim().parse().map_err(|_| bad())?))
}

/// Runs `mae study`.
pub fn run(a: StudyArgs) -> Result<()> {
    let data: DataSource = a.data.parse()?;
    let model = ModelConfig::by_name(a.model.as_deref().unwrap_or(default_model(&data)))?;
    let targets = a.targets.iter().map(|t| matches!(t, TargetArg::NormPix)).collect();
    let mut recipe = Recipe::for_model(a.recipe, &model);
    recipe.batch = a.batch.unwrap_or(recipe.batch);
    recipe.base_lr = a.base_lr.unwrap_or(recipe.base_lr);
    recipe.crop_min_scale = a.crop_min_scale.unwrap_or(recipe.crop_min_scale);
    let o = mae::study::StudyOptions {
        data,
        model,
        ratios: a.ratios,
        strategies: a.strategies,
        targets,
        seconds_per_run: if a.steps_per_run.is_some() { None } else { Some(a.minutes_per_run * 60.0) },
        steps_per_run: a.steps_per_run,
        recipe,
        seed: a.seed,
        extra_seeds: a.extra_seeds,
        decoder_depths: a.decoder_depths,
        no_augment_run: a.no_augment_run,
        train_limits: a.train_limits,
        encoders: a.encoders,
        snapshots: a.snapshots,
        out_dir: a.out,
        probe: mae::classifiers::ProbeOptions {
            epochs: a.probe_epochs,
            weight_decays: a.probe_weight_decays,
            lr: a.probe_lr,
            seed: a.seed,
            ..Default::default()
        },
        probe_train_limit: a.probe_train_limit,
        features: a.features.spec(),
        matmul_precision: a.matmul_precision,
        per_block: a.per_block,
        views: a.views,
    };
    let dev = device(&a.device)?;
    let r = match mae::study::run_study_until(&o, &dev, Some(ctrl_c_flag())) {
        Err(Error::Interrupted) => {
            eprintln!("the study stopped; its run in training saved a checkpoint: the same command continues it");
            return Err(Error::Interrupted);
        }
        r => r?,
    };
    println!("{}", std::fs::read_to_string(&r.table).map_err(|e| Error::io(&r.table, e))?);
    eprintln!("table: {}\nplot:  {}", r.table.display(), r.plot.display());
    if let Some(p) = &r.steps_plot {
        eprintln!("plot:  {}", p.display());
    }
    for p in r.per_block_plot.iter().chain(&r.views) {
        eprintln!("plot:  {}", p.display());
    }
    Ok(())
}
