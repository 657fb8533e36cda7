//! What several subcommands share: the `--device` flag, a checkpoint with its data
//! (`--checkpoint`, `--data`, `--model`), the feature flags, recipe defaults in `--help`, Ctrl-C.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;
use engine::{Device, DeviceChoice};
use mae::checkpoint::{load_model, resolve_model_path};
use mae::config::ModelConfig;
use mae::data::image_set::Normalization;
use mae::features::{FeatureSpec, Pool};
use mae::recipe::{FinetuneRecipe, Recipe, RecipeName};
use mae::source::DataSource;
use mae::{Error, Result};

#[derive(Args, Clone)]
pub struct DeviceArgs {
    /// auto (a hardware GPU if any, else the CPU), cpu, or gpu (any adapter, software included).
    /// MAE_DEVICE overrides auto.
    #[arg(long, default_value = "auto", value_parser = one_of::<DeviceChoice>(&["auto", "cpu", "gpu"]))]
    pub device: DeviceChoice,
}

/// The device `--device` asks for; says which one it is.
pub fn device(args: &DeviceArgs) -> Result<Device> {
    let (dev, note) = Device::select(args.device)?;
    eprintln!("{note}");
    Ok(dev)
}

/// A trained model and the images to use it on (`reconstruct`, `embed`, `probe`, `finetune`).
#[derive(Args)]
pub struct CheckpointArgs {
    /// A model .safetensors file, a checkpoint folder, or a training run's output folder; or
    /// `random`, a fresh model of --model (with --data): e.g. supervised training from scratch
    /// with `mae finetune`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The images (default: the data the model was trained on, as its checkpoint records it).
    #[arg(long)]
    pub data: Option<String>,
    /// The preset, for weights without our metadata (official ones).
    #[arg(long)]
    pub model: Option<String>,
}

impl CheckpointArgs {
    /// The model these flags name, on `dev`, with its data.
    pub fn load(&self, dev: &Device) -> Result<Loaded> {
        load(&self.checkpoint, self.model.as_deref(), self.data.as_deref(), dev)
    }

    /// Whether this asks for a freshly initialised model rather than trained weights.
    pub fn is_random_init(&self) -> bool {
        is_random_init(&self.checkpoint)
    }
}

/// A model and the data facts its checkpoint recorded.
pub struct Loaded {
    pub model: mae::MaskedAutoencoder,
    pub data: DataSource,
    pub norm: Option<Normalization>,
}

/// The `--checkpoint` value that asks for a freshly initialised model of `--model` instead (the
/// supervised baseline of `mae finetune`, the random-encoder row of a probe).
pub const RANDOM_INIT: &str = "random";

/// `random`, unless a file or folder of that name is there.
pub fn is_random_init(checkpoint: &std::path::Path) -> bool {
    checkpoint.as_os_str() == RANDOM_INIT && !checkpoint.exists()
}

/// The model in `checkpoint` (of the `preset` named, for weights without our metadata) or a fresh
/// one, on `dev`, with the data it was trained on unless `data` names other images.
pub fn load(checkpoint: &std::path::Path, preset: Option<&str>, data: Option<&str>, dev: &Device) -> Result<Loaded> {
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

/// What the frozen-encoder features are made of (`mae probe`, `mae embed`, `mae study`).
#[derive(Args)]
pub struct FeatureArgs {
    /// cls, mean (of the patch tokens) or both (concatenated).
    #[arg(long, default_value = "both", value_parser = one_of::<Pool>(&["cls", "mean", "both"]))]
    pub pool: Pool,
    /// Concatenate that summary over the encoder's last N blocks (1: its output only, the paper's probe).
    #[arg(long, default_value_t = 1)]
    pub blocks: usize,
}

impl FeatureArgs {
    pub fn spec(&self) -> FeatureSpec {
        FeatureSpec { pool: self.pool, blocks: self.blocks }
    }
}

/// A parser for a flag that takes one of `values` (listed in `--help`, anything else refused by
/// clap with the list), turned into `T` by its `FromStr`.
pub fn one_of<T>(values: &'static [&'static str]) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(values)
        .map(|s| s.parse::<T>().unwrap_or_else(|_| unreachable!("`{s}` is one of the listed values")))
}

/// The mask strategies, as flags name them.
pub const STRATEGIES: &[&str] = &["random", "block", "grid"];

/// `--crop-min-scale`'s help, shared by `mae train` and `mae study`.
pub const CROP_MIN_SCALE_HELP: &str = "RandomResizedCrop's smallest crop, a share of the image's area";

/// A pre-training flag's help with the default each recipe gives it, e.g. `[default: from the
/// recipe: 64 (tuned, mae_vit_micro_patch4_28), 256 (paper; tuned elsewhere)]`.
pub fn recipe_default(what: &str, value: impl Fn(&Recipe) -> String) -> String {
    let micro = tuned_preset();
    recipe_help(what, value(&Recipe::for_model(RecipeName::Tuned, &micro)), value(&Recipe::paper()))
}

/// `recipe_default` for `mae finetune`'s recipes.
pub fn finetune_default(what: &str, value: impl Fn(&FinetuneRecipe) -> String) -> String {
    let micro = tuned_preset();
    recipe_help(what, value(&FinetuneRecipe::for_model(RecipeName::Tuned, &micro)), value(&FinetuneRecipe::paper()))
}

/// The one preset the `tuned` recipes were measured on.
pub fn tuned_preset() -> ModelConfig {
    ModelConfig::by_name("mae_vit_micro_patch4_28").expect("a preset")
}

pub fn recipe_help(what: &str, tuned: String, paper: String) -> String {
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
pub fn default_model(data: &DataSource) -> &'static str {
    match data {
        DataSource::FashionMnist { .. } | DataSource::Idx { .. } => "mae_vit_micro_patch4_28",
        _ => "mae_vit_micro_patch4_32",
    }
}

/// A flag the first Ctrl-C sets, for training to finish its step and save a checkpoint; a
/// second Ctrl-C exits at once, without one.
pub fn ctrl_c_flag() -> Arc<AtomicBool> {
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

/// Print a markdown report, and write it to `out` when asked.
pub fn print_and_save(report: &str, out: Option<&std::path::Path>) -> Result<()> {
    println!("{report}");
    if let Some(out) = out {
        std::fs::write(out, report).map_err(|e| Error::io(out, e))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}
