//! `mae train`: pre-train a masked autoencoder; its flags, and with `--resume` the settings a run
//! takes back from its newest checkpoint.

use std::path::PathBuf;

use clap::Args;
use engine::cpu::matmul::Precision;
use mae::config::ModelConfig;
use mae::masking::MaskStrategy;
use mae::recipe::{Recipe, RecipeName};
use mae::source::DataSource;
use mae::train::{Budget, TrainOptions, train};
use mae::{Error, Result};

use super::common::{
    CROP_MIN_SCALE_HELP, DeviceArgs, STRATEGIES, ctrl_c_flag, default_model, device, one_of, recipe_default,
};

#[derive(Args)]
pub struct TrainArgs {
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
    /// The training step's matrix products: bf16 rounds their inputs to bfloat16 and sums in f32
    /// (mixed precision, as main_pretrain.py's autocast) where the CPU has AVX512_BF16, f32
    /// elsewhere and on the GPU; f32 always reads them whole; f16 rounds their inputs to f16 and
    /// sums in f32, with a dynamic loss scale against f16's underflow (PyTorch's GradScaler): on
    /// the CPU emulated at f32 speed, for studying f16 numerics; on the GPU tensor cores where the
    /// adapter lists f16 cooperative matrices, else f32 products. Evaluation is always f32.
    #[arg(long, default_value = "bf16", value_parser = one_of::<Precision>(&["bf16", "f32", "f16"]))]
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

/// Runs `mae train` (`m`: its matches, to tell the flags given from the defaults).
pub fn run(a: TrainArgs, m: &clap::ArgMatches) -> Result<()> {
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
