//! `mae`: train masked autoencoders, look at their reconstructions, extract and probe features.
//!
//! `mae train` with no arguments trains a small MAE on the built-in images for a minute and a half
//! (on a GPU when there is one, else on the CPU) and says where it wrote its pictures.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use engine::cpu::matmul::Precision;
use engine::{Device, DeviceChoice};
use mae::checkpoint::{load_model, resolve_model_path};
use mae::config::ModelConfig;
use mae::data::Split;
use mae::data::image_set::Normalization;
use mae::features::{FeatureSpec, Pool};
use mae::masking::MaskStrategy;
use mae::recipe::{FinetuneRecipe, Recipe, RecipeName};
use mae::source::DataSource;
use mae::train::{Budget, TrainOptions, train};
use mae::{Error, Result};

#[derive(Parser)]
#[command(name = "mae", version, about = "Masked autoencoders (He et al. 2021) on a hand-rolled tensor engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pre-train a masked autoencoder.
    Train(TrainArgs),
    /// Draw original | masked | reconstruction | reconstruction + visible patches.
    Reconstruct(ReconstructArgs),
    /// Write frozen-encoder features of a data set to a .npy file (labels beside them).
    Embed(EmbedArgs),
    /// Linear probe and k-NN on frozen features, beside raw pixels and a random encoder.
    Probe(ProbeArgs),
    /// Fine-tune the encoder with a linear head end to end; test accuracy.
    Finetune(FinetuneArgs),
    /// Pre-train over mask ratios, strategies and targets, probe each: the study.
    Study(StudyArgs),
    /// Time the kernels (CPU reference, fast CPU, GPU) and training steps; print markdown tables.
    Bench(BenchArgs),
    /// List GPU adapters, the one chosen, its limits, and the model presets.
    Info(DeviceArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// Only the kernel table.
    #[arg(long)]
    kernels_only: bool,
    /// Only the training table.
    #[arg(long)]
    training_only: bool,
    /// Leave out the (slow) CPU reference column.
    #[arg(long)]
    no_reference: bool,
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Training steps timed per configuration.
    #[arg(long, default_value_t = 10)]
    steps: u64,
    /// Data for the training table (Fashion-MNIST when installed, else the built-in images).
    #[arg(long)]
    data: Option<String>,
    #[arg(long)]
    model: Option<String>,
    /// Also write the tables here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// A Python interpreter with PyTorch: time PyTorch on the same model, batch and ratios, right
    /// after each of our runs, and print its images/s and memory beside ours.
    #[arg(long, value_name = "PYTHON")]
    compare_torch: Option<PathBuf>,
    /// The CPU training table's product precisions, one table each (bf16 only where the CPU has
    /// AVX512_BF16; elsewhere it would repeat the f32 table, and is left out).
    #[arg(long, value_delimiter = ',', default_value = "bf16,f32", value_parser = one_of::<Precision>(&["bf16", "f32"]))]
    matmul_precision: Vec<Precision>,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Args)]
struct ProbeArgs {
    #[command(flatten)]
    source: CheckpointArgs,
    #[command(flatten)]
    features: FeatureArgs,
    /// Use only the first N training images for the probe.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Passes over the training features of each fit of the linear probe
    #[arg(long, default_value_t = 100)]
    epochs: usize,
    /// The linear probe's weight decays: each is fitted on 90% of the training features and
    /// scored on the rest, and the best fitted on all of them (one value: no choice)
    #[arg(long, value_delimiter = ',', default_values_t = mae::classifiers::PROBE_WEIGHT_DECAYS)]
    weight_decays: Vec<f32>,
    /// The linear probe's peak learning rate (the probe before 2026-12-03: `--epochs 30 --lr 2e-3
    /// --weight-decays 1e-4`)
    #[arg(long, default_value_t = mae::classifiers::ProbeOptions::default().lr)]
    lr: f64,
    /// Also write the table here (markdown).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Probe each snapshot of the run in --checkpoint (a run trained with snapshots) and draw the
    /// linear probe against pre-training steps, raw pixels as a flat line (RUN/probe_vs_steps.png).
    #[arg(long)]
    over_steps: bool,
    /// Probe the two baselines again rather than reading their scores from the cache, which
    /// keeps them between runs (`$MAE_CACHE_DIR`, else `$XDG_CACHE_HOME/mae`, else `~/.cache/mae`:
    /// `baselines.csv`, keyed by the images, normalisation, model, features and probe).
    #[arg(long)]
    fresh_baselines: bool,
    /// Instead of the probe, k-NN of the encoder's features and of raw pixels under five
    /// protocols (the probe's, k 10, temperature 0.02, standardised features, standardised at k 10):
    /// the variants docs/results.md compares, to tell a k-NN result from its protocol.
    #[arg(long, conflicts_with = "over_steps")]
    knn_protocols: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Args)]
struct FinetuneArgs {
    #[command(flatten)]
    source: CheckpointArgs,
    #[arg(long)]
    epochs: Option<f64>,
    #[arg(long)]
    minutes: Option<f64>,
    /// Where the batch, learning rate and layer decay come from: `tuned` (measured for the
    /// Fashion-MNIST encoder, `main_finetune.py`'s elsewhere) or `paper` (`main_finetune.py`'s).
    #[arg(long, default_value = "tuned", value_parser = one_of::<RecipeName>(&["tuned", "paper"]))]
    recipe: RecipeName,
    #[arg(long, help = finetune_default("Images per step", |r| r.batch.to_string()))]
    batch: Option<usize>,
    #[arg(long, help = finetune_default("lr = base_lr * batch / 256", |r| format!("{:e}", r.base_lr)))]
    base_lr: Option<f64>,
    #[arg(long, help = finetune_default("Layer-wise learning-rate decay (1 = none; none by default with --checkpoint random)", |r| r.layer_decay.to_string()))]
    layer_decay: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Args)]
struct StudyArgs {
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
    #[arg(long, default_value = "bf16", value_parser = one_of::<Precision>(&["bf16", "f32"]))]
    matmul_precision: Precision,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Args, Clone)]
struct DeviceArgs {
    /// auto (a hardware GPU if any, else the CPU), cpu, or gpu (any adapter, software included).
    /// MAE_DEVICE overrides auto.
    #[arg(long, default_value = "auto", value_parser = one_of::<DeviceChoice>(&["auto", "cpu", "gpu"]))]
    device: DeviceChoice,
}

#[derive(Args)]
struct TrainArgs {
    /// builtin[:N], fashion-mnist[:DIR], idx:IMAGES[,LABELS], folder:DIR (or a folder path).
    #[arg(long, default_value = "builtin")]
    data: String,
    /// A model preset (see `mae info`). Default: the one that fits the data.
    #[arg(long)]
    model: Option<String>,
    #[command(flatten)]
    shape: ShapeArgs,
    /// Pre-train on the first N training images only.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Train for this many epochs...
    #[arg(long)]
    epochs: Option<f64>,
    /// ...or this many optimizer steps...
    #[arg(long)]
    steps: Option<u64>,
    /// ...or this many minutes (1.5 when no budget is given). The first limit reached ends the run.
    #[arg(long)]
    minutes: Option<f64>,
    /// Where batch, learning rate, warmup, weight decay and crop scale come from: `tuned` (measured
    /// for the small presets and short budgets, docs/results.md) or `paper` (main_pretrain.py's).
    /// The flags below override single settings.
    #[arg(long, default_value = "tuned", value_parser = one_of::<RecipeName>(&["tuned", "paper"]))]
    recipe: RecipeName,
    #[arg(long, help = recipe_default("Images per micro-batch", |r| r.batch.to_string()))]
    batch: Option<usize>,
    /// Micro-batches per optimizer step (gradient accumulation).
    #[arg(long, default_value_t = 1)]
    accum: usize,
    #[arg(long, help = recipe_default("lr = base_lr * batch * accum / 256", |r| format!("{:e}", r.base_lr)))]
    base_lr: Option<f64>,
    #[arg(long, help = recipe_default("AdamW weight decay", |r| r.weight_decay.to_string()))]
    weight_decay: Option<f32>,
    #[arg(long, help = recipe_default("Fraction of the budget spent on linear warmup", |r| r.warmup_fraction.to_string()))]
    warmup: Option<f64>,
    #[arg(long, help = recipe_default(CROP_MIN_SCALE_HELP, |r| r.crop_min_scale.to_string()))]
    crop_min_scale: Option<f32>,
    #[arg(long, default_value_t = 0.75, allow_hyphen_values = true)]
    mask_ratio: f32,
    #[arg(long, default_value = "random", value_parser = one_of::<MaskStrategy>(STRATEGIES))]
    mask_strategy: MaskStrategy,
    /// Reconstruct raw pixels instead of per-patch normalised ones.
    #[arg(long)]
    pixel_target: bool,
    /// Train on whole images, without RandomResizedCrop and flips.
    #[arg(long)]
    no_augment: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (default: runs/<model>-<date>-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in --out from its newest checkpoint.
    #[arg(long)]
    resume: bool,
    /// Minutes between checkpoints.
    #[arg(long, default_value_t = 5.0)]
    checkpoint_every: f64,
    /// Also keep the model every N steps in snapshots/, for `mae probe --over-steps`.
    #[arg(long)]
    snapshot_every: Option<u64>,
    /// The training step's matrix products on the CPU: bf16 rounds their inputs to bfloat16 and
    /// sums in f32 (mixed precision, as main_pretrain.py's autocast) where the CPU has
    /// AVX512_BF16, f32 elsewhere; f32 always reads them whole. Evaluation is always f32.
    #[arg(long, default_value = "bf16", value_parser = one_of::<Precision>(&["bf16", "f32"]))]
    matmul_precision: Precision,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Changes to the preset's shape (a custom model, named after its shape).
#[derive(Args)]
struct ShapeArgs {
    #[arg(long)]
    img_size: Option<usize>,
    #[arg(long)]
    patch_size: Option<usize>,
    /// Image channels (1 grey, 3 RGB).
    #[arg(long)]
    channels: Option<usize>,
    #[arg(long)]
    embed_dim: Option<usize>,
    #[arg(long)]
    depth: Option<usize>,
    #[arg(long)]
    heads: Option<usize>,
    #[arg(long)]
    decoder_dim: Option<usize>,
    #[arg(long, help = recipe_default("Transformer blocks in the decoder", |r| {
        r.decoder_depth.map_or("the preset's".into(), |d| d.to_string())
    }))]
    decoder_depth: Option<usize>,
    #[arg(long)]
    decoder_heads: Option<usize>,
}

impl ShapeArgs {
    fn apply(&self, c: &mut ModelConfig) {
        let fields = [
            (self.img_size, &mut c.img_size),
            (self.patch_size, &mut c.patch_size),
            (self.channels, &mut c.in_chans),
            (self.embed_dim, &mut c.embed_dim),
            (self.depth, &mut c.depth),
            (self.heads, &mut c.num_heads),
            (self.decoder_dim, &mut c.decoder_embed_dim),
            (self.decoder_depth, &mut c.decoder_depth),
            (self.decoder_heads, &mut c.decoder_num_heads),
        ];
        let mut changed = false;
        for (v, field) in fields {
            if let Some(v) = v {
                *field = v;
                changed = true;
            }
        }
        if changed {
            c.name = format!(
                "mae_vit_d{}x{}h{}_dec{}x{}h{}_patch{}_{}px{}c",
                c.embed_dim,
                c.depth,
                c.num_heads,
                c.decoder_embed_dim,
                c.decoder_depth,
                c.decoder_num_heads,
                c.patch_size,
                c.img_size,
                c.in_chans
            );
        }
    }
}

#[derive(Args)]
struct ReconstructArgs {
    #[command(flatten)]
    source: CheckpointArgs,
    #[arg(long, default_value_t = 8)]
    count: usize,
    #[arg(long, default_value_t = 0.75, allow_hyphen_values = true)]
    mask_ratio: f32,
    #[arg(long, default_value = "random", value_parser = one_of::<MaskStrategy>(STRATEGIES))]
    mask_strategy: MaskStrategy,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "reconstructions.png")]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
}

/// `--split`: which half of the data.
#[derive(Clone, Copy, clap::ValueEnum)]
enum SplitArg {
    Train,
    Test,
}

/// `--targets`: what the decoder reconstructs.
#[derive(Clone, Copy, clap::ValueEnum)]
enum TargetArg {
    /// Pixels normalised per patch (the paper's default).
    NormPix,
    /// Raw pixels.
    Pixels,
}

#[derive(Args)]
struct EmbedArgs {
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

/// A trained model and the images to use it on (`reconstruct`, `embed`, `probe`, `finetune`).
#[derive(Args)]
struct CheckpointArgs {
    /// A model .safetensors file, a checkpoint folder, or a training run's output folder; or
    /// `random`, a fresh model of --model (with --data): e.g. supervised training from scratch
    /// with `mae finetune`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The images (default: the data the model was trained on, as its checkpoint records it).
    #[arg(long)]
    data: Option<String>,
    /// The preset, for weights without our metadata (official ones).
    #[arg(long)]
    model: Option<String>,
}

impl CheckpointArgs {
    fn load(&self, dev: &Device) -> Result<Loaded> {
        load(&self.checkpoint, self.model.as_deref(), self.data.as_deref(), dev)
    }

    /// Whether this asks for a freshly initialised model rather than trained weights.
    fn is_random_init(&self) -> bool {
        is_random_init(&self.checkpoint)
    }
}

/// A parser for a flag that takes one of `values` (listed in `--help`, anything else refused by
/// clap with the list), turned into `T` by its `FromStr`.
fn one_of<T>(values: &'static [&'static str]) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(values)
        .map(|s| s.parse::<T>().unwrap_or_else(|_| unreachable!("`{s}` is one of the listed values")))
}

/// `WIDTHxDEPTH`, e.g. `192x8`.
fn parse_shape(s: &str) -> std::result::Result<(usize, usize), String> {
    let bad = || format!("'{s}' is not WIDTHxDEPTH (e.g. 192x8)");
    let (w, d) = s.split_once('x').ok_or_else(bad)?;
    Ok((w.trim().parse().map_err(|_| bad())?, d.trim().parse().map_err(|_| bad())?))
}

/// The mask strategies, as flags name them.
const STRATEGIES: &[&str] = &["random", "block", "grid"];

/// What the frozen-encoder features are made of (`mae probe`, `mae embed`, `mae study`).
#[derive(Args)]
struct FeatureArgs {
    /// cls, mean (of the patch tokens) or both (concatenated).
    #[arg(long, default_value = "both", value_parser = one_of::<Pool>(&["cls", "mean", "both"]))]
    pool: Pool,
    /// Concatenate that summary over the encoder's last N blocks (1: its output only, the paper's probe).
    #[arg(long, default_value_t = 1)]
    blocks: usize,
}

impl FeatureArgs {
    fn spec(&self) -> FeatureSpec {
        FeatureSpec { pool: self.pool, blocks: self.blocks }
    }
}

fn device(args: &DeviceArgs) -> Result<Device> {
    let (dev, note) = Device::select(args.device)?;
    eprintln!("{note}");
    Ok(dev)
}

/// `--crop-min-scale`'s help, shared by `mae train` and `mae study`.
const CROP_MIN_SCALE_HELP: &str = "RandomResizedCrop's smallest crop, a share of the image's area";

/// A pre-training flag's help with the default each recipe gives it, e.g. `[default: from the
/// recipe: 64 (tuned, mae_vit_micro_patch4_28), 256 (paper; tuned elsewhere)]`.
fn recipe_default(what: &str, value: impl Fn(&Recipe) -> String) -> String {
    let micro = tuned_preset();
    recipe_help(what, value(&Recipe::for_model(RecipeName::Tuned, &micro)), value(&Recipe::paper()))
}

/// `recipe_default` for `mae finetune`'s recipes.
fn finetune_default(what: &str, value: impl Fn(&FinetuneRecipe) -> String) -> String {
    let micro = tuned_preset();
    recipe_help(what, value(&FinetuneRecipe::for_model(RecipeName::Tuned, &micro)), value(&FinetuneRecipe::paper()))
}

/// The one preset the `tuned` recipes were measured on.
fn tuned_preset() -> ModelConfig {
    ModelConfig::by_name("mae_vit_micro_patch4_28").expect("a preset")
}

fn recipe_help(what: &str, tuned: String, paper: String) -> String {
    if tuned == paper {
        format!("{what} [default: {paper}, from the recipe]")
    } else {
        format!(
            "{what} [default: from the recipe: {tuned} (tuned, {}), {paper} (paper; tuned elsewhere)]",
            tuned_preset().name
        )
    }
}

/// The preset that fits a data source when none is named.
fn default_model(data: &DataSource) -> &'static str {
    match data {
        DataSource::FashionMnist { .. } | DataSource::Idx { .. } => "mae_vit_micro_patch4_28",
        _ => "mae_vit_micro_patch4_32",
    }
}

/// `YYYYMMDD-HHMMSS` in UTC, from the system clock (days-from-civil, no calendar crate).
fn timestamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

/// With `--resume`, the run's own settings, from its newest checkpoint, replace the defaults of every
/// flag not given on this command line; a flag that is given must agree with the checkpoint, except
/// the budget (`--epochs`, `--steps`, `--minutes`: a longer run is the point of resuming), the
/// checkpoint interval and the device, which may change from one part of a run to the next.
fn adopt_checkpoint_settings(o: &mut TrainOptions, m: &clap::ArgMatches) -> Result<()> {
    use clap::parser::ValueSource;
    use mae::checkpoint::{CheckpointDir, MODEL_FILE, TRAIN_STATE_FILE, read_checkpoint_metadata};
    let Some(dir) = CheckpointDir::new(&o.out_dir).latest() else {
        return Ok(()); // `train` says there is nothing to resume
    };
    let saved = read_checkpoint_metadata(&dir.join(TRAIN_STATE_FILE))?;
    let given = |id: &str| m.value_source(id) == Some(ValueSource::CommandLine);
    let now = mae::train::settings(o);
    let out = o.out_dir.display().to_string();
    // The run's value of `key` when no flag of `flags` was given; an error when one was, and disagrees.
    let take = |key: &str, flags: &[&str]| -> Result<Option<String>> {
        let Some(value) = saved.get(key) else { return Ok(None) };
        match flags.iter().find(|f| given(f)) {
            None => Ok(Some(value.clone())),
            Some(_) if now.get(key) == Some(value) => Ok(None),
            Some(flag) => Err(Error::Config(format!(
                "--{} {} contradicts the run in {out}, made with {key} = {value}: drop the flag to continue the \
                 run as it was, or start a new --out",
                flag.replace('_', "-"),
                now.get(key).map(String::as_str).unwrap_or("?")
            ))),
        }
    };
    let bad = |key: &str, v: &str| Error::checkpoint(&dir, format!("its training state has an unreadable {key} = {v}"));
    macro_rules! adopt {
        ($key:literal, [$($flag:literal),*], |$v:ident| $set:expr) => {
            if let Some($v) = take($key, &[$($flag),*])? {
                $set;
            }
        };
    }
    adopt!("mae.data", ["data"], |v| o.data = v.parse()?);
    adopt!("mae.seed", ["seed"], |v| o.seed = v.parse().map_err(|_| bad("mae.seed", &v))?);
    adopt!("mae.train_limit", ["train_limit"], |v| {
        o.train_limit = Some(v.parse().map_err(|_| bad("mae.train_limit", &v))?)
    });
    adopt!("mae.batch_size", ["batch"], |v| o.batch_size = v.parse().map_err(|_| bad("mae.batch_size", &v))?);
    adopt!("mae.accum_iter", ["accum"], |v| o.accum_iter = v.parse().map_err(|_| bad("mae.accum_iter", &v))?);
    adopt!("mae.mask_ratio", ["mask_ratio"], |v| o.mask_ratio = v.parse().map_err(|_| bad("mae.mask_ratio", &v))?);
    adopt!("mae.mask_strategy", ["mask_strategy"], |v| o.mask_strategy = v.parse()?);
    adopt!("mae.augment", ["no_augment"], |v| o.augment = v == "true");
    adopt!("mae.crop_min_scale", ["crop_min_scale"], |v| {
        o.crop_min_scale = v.parse().map_err(|_| bad("mae.crop_min_scale", &v))?
    });
    adopt!("mae.base_lr", ["base_lr"], |v| o.base_lr = v.parse().map_err(|_| bad("mae.base_lr", &v))?);
    adopt!("mae.min_lr", [], |v| o.min_lr = v.parse().map_err(|_| bad("mae.min_lr", &v))?);
    adopt!("mae.warmup", ["warmup"], |v| o.warmup_fraction = v.parse().map_err(|_| bad("mae.warmup", &v))?);
    adopt!("mae.matmul_precision", ["matmul_precision"], |v| {
        o.matmul_precision = v.parse().map_err(|_| bad("mae.matmul_precision", &v))?
    });
    adopt!("mae.weight_decay", ["weight_decay"], |v| {
        o.optimizer.weight_decay = v.parse().map_err(|_| bad("mae.weight_decay", &v))?
    });
    // The budget may change; without a budget flag the run keeps its own.
    let budget_given = ["epochs", "steps", "minutes"].iter().any(|f| given(f));
    if let Some(b) = saved.get("mae.budget").and_then(|s| mae::train::parse_budget(s)).filter(|_| !budget_given) {
        o.budget = b;
    }
    // The model: its configuration is in the checkpoint's model file.
    let model = load_model_config(&dir.join(MODEL_FILE))?;
    let model_flags = ["model", "pixel_target", "img_size", "patch_size", "channels", "embed_dim", "depth", "heads"];
    let model_flags = model_flags.iter().chain(["decoder_dim", "decoder_depth", "decoder_heads"].iter());
    match model_flags.clone().find(|f| given(f)) {
        Some(flag) if model != o.model => {
            return Err(Error::Config(format!(
                "--{} contradicts the run in {out}, a {} ({}): drop the model flags to continue it, or start a new --out",
                flag.replace('_', "-"),
                model.name,
                model.to_metadata()
            )));
        }
        _ => o.model = model,
    }
    Ok(())
}

/// The model configuration a checkpoint's model file names.
fn load_model_config(path: &std::path::Path) -> Result<ModelConfig> {
    let meta = mae::checkpoint::read_checkpoint_metadata(path)?;
    let text = meta
        .get(mae::checkpoint::META_CONFIG)
        .ok_or_else(|| Error::checkpoint(path, "it names no model configuration"))?;
    ModelConfig::from_metadata(text).map_err(|e| Error::checkpoint(path, e.to_string()))
}

fn cmd_train(a: TrainArgs, m: &clap::ArgMatches) -> Result<()> {
    let data: DataSource = a.data.parse()?;
    let mut model = ModelConfig::by_name(a.model.as_deref().unwrap_or(default_model(&data)))?;
    // The recipe of the preset chosen, also when shape flags change (and rename) it.
    let recipe = Recipe::for_model(a.recipe, &model);
    if a.shape.decoder_depth.is_none() {
        recipe.shape(&mut model);
    }
    a.shape.apply(&mut model);
    model.norm_pix_loss = !a.pixel_target;
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-{}", model.name, timestamp())));
    let mut o = TrainOptions::new(model, data, out);
    o.train_limit = a.train_limit;
    o.budget = Budget { epochs: a.epochs, steps: a.steps, seconds: a.minutes.map(|m| m * 60.0) };
    if a.epochs.is_none() && a.steps.is_none() && a.minutes.is_none() {
        o.budget.seconds = Some(90.0);
    }
    o.apply_recipe(&recipe);
    if !a.resume {
        eprintln!("recipe {recipe} (flags override single settings)");
    }
    o.accum_iter = a.accum;
    if let Some(v) = a.batch {
        o.batch_size = v;
    }
    if let Some(v) = a.base_lr {
        o.base_lr = v;
    }
    if let Some(v) = a.weight_decay {
        o.optimizer.weight_decay = v;
    }
    if let Some(v) = a.warmup {
        o.warmup_fraction = v;
    }
    if let Some(v) = a.crop_min_scale {
        o.crop_min_scale = v;
    }
    o.mask_ratio = a.mask_ratio;
    o.mask_strategy = a.mask_strategy;
    o.augment = !a.no_augment;
    o.seed = a.seed;
    o.resume = a.resume;
    o.checkpoint_every_secs = a.checkpoint_every * 60.0;
    o.snapshot_every = a.snapshot_every;
    o.matmul_precision = a.matmul_precision;
    if o.resume {
        adopt_checkpoint_settings(&mut o, m)?;
    }
    // Everything the run could refuse is refused before a device is opened or data is read.
    o.validate()?;
    let dev = device(&a.device)?;
    let report = train(&o, &dev, Some(ctrl_c_flag()))?;
    let last = report.losses.last().map(|l| l.1).unwrap_or(f32::NAN);
    eprintln!(
        "done: {} steps ({:.2} epochs) in {:.0} s, {:.0} images/s on {}, final loss {last:.4}",
        report.steps, report.epochs, report.seconds, report.images_per_sec, report.device
    );
    eprintln!("checkpoint:  {}", report.checkpoint.display());
    eprintln!("loss log:    {}", report.log.display());
    for p in &report.pictures {
        eprintln!("picture:     {}", p.display());
    }
    Ok(())
}

/// A flag the first Ctrl-C sets, for training to finish its step and save a checkpoint; a
/// second Ctrl-C exits at once, without one.
fn ctrl_c_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond Ctrl-C: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!("\nCtrl-C: finishing this step and saving a checkpoint (again to quit at once)");
    });
    stop
}

/// A model and the data facts its checkpoint recorded.
struct Loaded {
    model: mae::MaskedAutoencoder,
    data: DataSource,
    norm: Option<Normalization>,
}

/// The `--checkpoint` value that asks for a freshly initialised model of `--model` instead (the
/// supervised baseline of `mae finetune`, the random-encoder row of a probe).
const RANDOM_INIT: &str = "random";

/// `random`, unless a file or folder of that name is there.
fn is_random_init(checkpoint: &std::path::Path) -> bool {
    checkpoint.as_os_str() == RANDOM_INIT && !checkpoint.exists()
}

fn load(checkpoint: &std::path::Path, preset: Option<&str>, data: Option<&str>, dev: &Device) -> Result<Loaded> {
    if is_random_init(checkpoint) {
        let (Some(preset), Some(data)) = (preset, data) else {
            return Err(Error::Config(
                "--checkpoint random needs --model (the preset to initialise) and --data".into(),
            ));
        };
        let config = ModelConfig::by_name(preset)?;
        // The official initialisation, from the seed the probes use for their random encoder.
        let model = mae::MaskedAutoencoder::new(&config, 1, dev)?;
        return Ok(Loaded { model, data: data.parse()?, norm: None });
    }
    let path = resolve_model_path(checkpoint)?;
    let preset = preset.map(ModelConfig::by_name).transpose()?;
    let (model, meta) = load_model(&path, preset.as_ref(), dev)?;
    let data = match (data, meta.get("mae.data")) {
        (Some(d), _) => d.parse()?,
        (None, Some(d)) => d.parse()?,
        (None, None) => {
            return Err(Error::Config(format!(
                "{} does not say what data it was trained on; pass --data",
                path.display()
            )));
        }
    };
    let norm = meta.get("mae.normalization").map(|s| s.parse()).transpose()?;
    Ok(Loaded { model, data, norm })
}

fn cmd_reconstruct(a: ReconstructArgs) -> Result<()> {
    let strategy = a.mask_strategy;
    mae::masking::check_ratio(a.mask_ratio)?;
    let dev = device(&a.device)?;
    let l = a.source.load(&dev)?;
    let set =
        l.data.load(Split::Test, &l.model.config, 0).or_else(|_| l.data.load(Split::Train, &l.model.config, 0))?;
    let norm = l.norm.unwrap_or_else(|| l.data.normalization(&set));
    mae::reconstruct::save_reconstructions(&l.model, &set, &norm, a.mask_ratio, strategy, a.seed, a.count, &a.out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

fn cmd_embed(a: EmbedArgs) -> Result<()> {
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

fn cmd_probe(a: ProbeArgs) -> Result<()> {
    let spec = a.features.spec();
    let dev = device(&a.device)?;
    let l = a.source.load(&dev)?;
    let data = mae::probe::ProbeData::load(&l.data, &l.model.config, l.norm, a.train_limit, 0)?;
    eprintln!(
        "probing on {} ({} training, {} test images, {} classes)",
        l.data,
        data.train.len(),
        data.test.len(),
        data.classes
    );
    if a.knn_protocols {
        return print_and_save(&mae::probe::knn_protocols_table(&l.model, &data, spec, &dev)?, a.out.as_deref());
    }
    let o = mae::classifiers::ProbeOptions {
        epochs: a.epochs,
        weight_decays: a.weight_decays,
        lr: a.lr,
        seed: a.seed,
        ..Default::default()
    };
    let cache_file = mae::probe::default_baseline_cache();
    let (cache, fresh) = (cache_file.as_deref(), a.fresh_baselines);
    if let Some(path) = cache {
        eprintln!(
            "baselines: kept in {}, read back for the same images, model, features and probe{}",
            path.display(),
            if fresh { " (not this time: --fresh-baselines)" } else { "" }
        );
    }
    if a.over_steps {
        let run = &a.source.checkpoint;
        if !run.join(mae::checkpoint::CHECKPOINTS_DIR).is_dir() {
            return Err(Error::Config(format!(
                "--over-steps needs a training run's folder (with checkpoints/ and snapshots/), not {}",
                run.display()
            )));
        }
        let curve = mae::probe::probe_over_steps(run, &data, spec, &o, &dev)?;
        let b =
            mae::probe::baseline_scores(&l.model.config, &data, spec, &o, o.seed.wrapping_add(1), &dev, cache, fresh)?;
        let plot = run.join("probe_vs_steps.png");
        let baselines =
            [("raw pixels".to_string(), b.pixels.linear), ("random-init encoder".to_string(), b.random.linear)];
        mae::io::png::save_png(&plot, &mae::probe::probe_steps_plot(std::slice::from_ref(&curve), &baselines))?;
        eprintln!("plot: {}", plot.display());
        let table = format!(
            "{}\nraw pixels: linear probe {:.2}%, k-NN {:.2}%; random-init encoder: {:.2}%, {:.2}%\n",
            mae::probe::curve_table(&[curve]),
            100.0 * b.pixels.linear,
            100.0 * b.pixels.knn,
            100.0 * b.random.linear,
            100.0 * b.random.knn
        );
        return print_and_save(&table, a.out.as_deref());
    }
    let rows = mae::probe::probe_with_baselines(&l.model, &data, spec, &o, &dev, cache, fresh)?;
    print_and_save(&mae::probe::probe_table(&rows), a.out.as_deref())
}

/// Print a markdown report, and write it to `out` when asked.
fn print_and_save(report: &str, out: Option<&std::path::Path>) -> Result<()> {
    println!("{report}");
    if let Some(out) = out {
        std::fs::write(out, report).map_err(|e| Error::io(out, e))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

fn cmd_finetune(a: FinetuneArgs) -> Result<()> {
    let dev = device(&a.device)?;
    let l = a.source.load(&dev)?;
    let train_set = l.data.load(Split::Train, &l.model.config, 0)?;
    let test_set = l.data.load(Split::Test, &l.model.config, 0)?;
    let norm = l.norm.unwrap_or_else(|| l.data.normalization(&train_set));
    let mut recipe = FinetuneRecipe::for_model(a.recipe, &l.model.config);
    recipe.batch = a.batch.unwrap_or(recipe.batch);
    recipe.base_lr = a.base_lr.unwrap_or(recipe.base_lr);
    if a.source.is_random_init() {
        // Layer decay keeps a pre-trained encoder's lower blocks near what pre-training found; a
        // random encoder has nothing to keep (the paper's from-scratch recipe, Table 11, has none).
        recipe.layer_decay = 1.0;
        eprintln!("training from scratch: no layer decay (--layer-decay sets one)");
    }
    recipe.layer_decay = a.layer_decay.unwrap_or(recipe.layer_decay);
    eprintln!("recipe {recipe} (flags override single settings)");
    let mut o = mae::finetune::FinetuneOptions { seed: a.seed, ..Default::default() };
    o.apply_recipe(&recipe);
    if a.epochs.is_some() || a.minutes.is_some() {
        o.epochs = a.epochs;
        o.seconds = a.minutes.map(|m| m * 60.0);
    }
    let mut model = l.model;
    let r = mae::finetune::finetune(&mut model, &train_set, &test_set, &norm, &o, &dev)?;
    println!(
        "fine-tuned {} steps in {:.0} s: test accuracy {:.2}% (final training loss {:.4})",
        r.steps,
        r.seconds,
        100.0 * r.test_accuracy,
        r.train_loss
    );
    Ok(())
}

fn cmd_study(a: StudyArgs) -> Result<()> {
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
    Ok(())
}

fn cmd_bench(a: BenchArgs) -> Result<()> {
    let dev = device(&a.device)?;
    let gpu = dev.is_gpu().then_some(&dev);
    let mut report = String::new();
    report.push_str(&format!("Device: {}\n\n", dev.name()));
    if !a.training_only {
        eprintln!("timing kernels...");
        report.push_str(&mae::bench::kernel_table(gpu, !a.no_reference, a.batch)?);
        report.push('\n');
    }
    if !a.kernels_only {
        let data: DataSource = match &a.data {
            Some(d) => d.parse()?,
            None if std::path::Path::new(mae::data::idx::FASHION_MNIST_DIR).is_dir() => "fashion-mnist".parse()?,
            None => "builtin".parse()?,
        };
        let model = ModelConfig::by_name(a.model.as_deref().unwrap_or(default_model(&data)))?;
        eprintln!("timing training steps...");
        let mut devices = vec![Device::Cpu];
        if dev.is_gpu() {
            devices.push(dev.clone());
        }
        let torch = a.compare_torch.as_deref();
        for d in &devices {
            // On the GPU the precision changes nothing (its products are f32): one table.
            let mut precisions: Vec<Precision> = Vec::new();
            for &p in if d.is_cpu() { &a.matmul_precision[..] } else { &[Precision::F32] } {
                if !precisions.iter().any(|q| q.kernel() == p.kernel()) {
                    precisions.push(p);
                }
            }
            for precision in precisions {
                report.push_str(&mae::bench::training_table(&model, &data, a.batch, a.steps, d, precision, torch)?);
                report.push('\n');
            }
        }
    }
    print_and_save(&report, a.out.as_deref())
}

fn cmd_info(a: DeviceArgs) -> Result<()> {
    println!("GPU adapters:");
    #[cfg(feature = "gpu")]
    {
        let adapters = engine::gpu::list_adapters();
        if adapters.is_empty() {
            println!("  none");
        }
        for ad in &adapters {
            println!("  {ad}{}", if ad.is_software() { "  [software: used only with --device gpu]" } else { "" });
        }
    }
    #[cfg(not(feature = "gpu"))]
    println!("  {}", engine::device::NO_GPU_BACKEND);
    match Device::select(a.device) {
        Ok((dev, note)) => {
            println!("{note}");
            #[cfg(not(feature = "gpu"))]
            let _ = dev;
            #[cfg(feature = "gpu")]
            if let Device::Gpu(g) = &dev {
                let ctx = g.context();
                let l = &ctx.limits;
                println!("limits:");
                println!("  max_storage_buffer_binding_size  {} MiB", l.max_storage_buffer_binding_size >> 20);
                println!("  max_buffer_size                  {} MiB", l.max_buffer_size >> 20);
                println!("  max_compute_workgroup_storage    {} KiB", l.max_compute_workgroup_storage_size >> 10);
                println!("  max_compute_invocations_per_wg   {}", l.max_compute_invocations_per_workgroup);
                println!("  max_workgroups_per_dimension     {}", l.max_compute_workgroups_per_dimension);
                println!("  max_storage_buffers_per_stage    {}", l.max_storage_buffers_per_shader_stage);
                println!("features: {:?}", ctx.features);
                let unchecked: Vec<&str> =
                    engine::gpu::shaders::SHADERS.iter().map(|s| s.0).filter(|n| ctx.runs_unchecked(n)).collect();
                println!(
                    "shaders without runtime bounds checks: {} (MAE_GPU_BOUNDS_CHECKS=1 checks all)",
                    if unchecked.is_empty() { "none".to_string() } else { unchecked.join(", ") }
                );
            }
        }
        Err(e) => println!("no device: {e}"),
    }
    println!(
        "CPU training products (`mae train --matmul-precision`): bf16, the default, runs as {}; f32 as {}",
        Precision::Bf16.describe(),
        Precision::F32.describe()
    );
    println!("model presets:");
    for c in ModelConfig::presets() {
        println!(
            "  {:<26} {}x{}x{} patch {:>2}, encoder {}x{} ({} heads), decoder {}x{} ({} heads), {:.2} M parameters",
            c.name,
            c.img_size,
            c.img_size,
            c.in_chans,
            c.patch_size,
            c.embed_dim,
            c.depth,
            c.num_heads,
            c.decoder_embed_dim,
            c.decoder_depth,
            c.decoder_num_heads,
            c.num_params() as f64 / 1e6
        );
    }
    println!("training recipes (`mae train --recipe`; flags override single settings):");
    for c in ModelConfig::presets() {
        println!("  {:<26} {}", c.name, Recipe::for_model(RecipeName::Tuned, &c));
    }
    println!("  {:<26} {}", "any preset, --recipe paper", Recipe::paper());
    println!("fine-tuning recipes (`mae finetune --recipe`; flags override single settings):");
    for c in ModelConfig::presets() {
        println!("  {:<26} {}", c.name, FinetuneRecipe::for_model(RecipeName::Tuned, &c));
    }
    println!("  {:<26} {}", "any preset, --recipe paper", FinetuneRecipe::paper());
    Ok(())
}

fn main() -> ExitCode {
    // Mesa's Vulkan device-select layer (an implicit layer, on by default) picks the GPU that
    // drives the display: on a headless machine it finds no Wayland socket and prints "error:
    // XDG_RUNTIME_DIR is invalid or not set" several times per command, which reads as ours.
    // A compute program has no display to match and ranks adapters itself (`engine::gpu`), so
    // it goes off unless the user set it either way.
    if std::env::var_os("NODEVICE_SELECT").is_none() {
        // SAFETY: the first statement of main, before this process starts any other thread.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
    // Training on the CPU allocates and frees every activation each step: keep the freed memory
    // for the next step instead of faulting it in again (30-40% of a CPU step otherwise), and
    // hand freed buffers to the next output of their size without zeroing them (`recycle.rs`).
    engine::cpu::allocator::keep_freed_memory();
    engine::cpu::recycle::set_enabled(true);
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Train(a) => cmd_train(a, matches.subcommand_matches("train").expect("the train subcommand")),
        Command::Reconstruct(a) => cmd_reconstruct(a),
        Command::Embed(a) => cmd_embed(a),
        Command::Probe(a) => cmd_probe(a),
        Command::Finetune(a) => cmd_finetune(a),
        Command::Study(a) => cmd_study(a),
        Command::Bench(a) => cmd_bench(a),
        Command::Info(a) => cmd_info(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Interrupted) => {
            eprintln!("{}", Error::Interrupted);
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
