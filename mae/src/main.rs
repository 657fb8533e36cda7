//! `mae`: train masked autoencoders, look at their reconstructions, extract and probe features.
//!
//! `mae train` with no arguments trains a small MAE on the built-in images for a minute and a half
//! (on a GPU when there is one, else on the CPU) and says where it wrote its pictures.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, Parser, Subcommand};
use engine::{Device, DeviceChoice};
use mae::checkpoint::{load_model, resolve_model_path};
use mae::config::ModelConfig;
use mae::data::idx::Split;
use mae::data::image_set::Normalization;
use mae::features::Pool;
use mae::masking::MaskStrategy;
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
    /// List GPU adapters, the one chosen, its limits, and the model presets.
    Info(DeviceArgs),
}

#[derive(Args, Clone)]
struct DeviceArgs {
    /// auto (a hardware GPU if any, else the CPU), cpu, or gpu (any adapter, software included).
    /// MAE_DEVICE overrides auto.
    #[arg(long, default_value = "auto")]
    device: String,
}

#[derive(Args)]
struct TrainArgs {
    /// builtin[:N], fashion-mnist[:DIR], idx:IMAGES[,LABELS], folder:DIR (or a folder path).
    #[arg(long, default_value = "builtin")]
    data: String,
    /// A model preset (see `mae info`). Default: the one that fits the data.
    #[arg(long)]
    model: Option<String>,
    /// Train for this many epochs...
    #[arg(long)]
    epochs: Option<f64>,
    /// ...or this many optimizer steps...
    #[arg(long)]
    steps: Option<u64>,
    /// ...or this many minutes (1.5 when no budget is given). The first limit reached ends the run.
    #[arg(long)]
    minutes: Option<f64>,
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Micro-batches per optimizer step (gradient accumulation).
    #[arg(long, default_value_t = 1)]
    accum: usize,
    /// lr = base_lr * batch * accum / 256.
    #[arg(long)]
    base_lr: Option<f64>,
    #[arg(long, default_value_t = 0.05)]
    weight_decay: f32,
    /// Fraction of the budget spent on linear warmup.
    #[arg(long, default_value_t = 0.05)]
    warmup: f64,
    #[arg(long, default_value_t = 0.75)]
    mask_ratio: f32,
    /// random, block or grid.
    #[arg(long, default_value = "random")]
    mask_strategy: String,
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
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Args)]
struct ReconstructArgs {
    /// A model .safetensors file, a checkpoint folder, or a training run's output folder.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Images to reconstruct (default: the test split of the data the model was trained on).
    #[arg(long)]
    data: Option<String>,
    /// The preset, for weights without our metadata (official ones).
    #[arg(long)]
    model: Option<String>,
    #[arg(long, default_value_t = 8)]
    count: usize,
    #[arg(long, default_value_t = 0.75)]
    mask_ratio: f32,
    #[arg(long, default_value = "random")]
    mask_strategy: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "reconstructions.png")]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Args)]
struct EmbedArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// Images to embed (default: the data the model was trained on).
    #[arg(long)]
    data: Option<String>,
    #[arg(long)]
    model: Option<String>,
    /// train or test.
    #[arg(long, default_value = "test")]
    split: String,
    /// cls, mean (of the patch tokens) or both.
    #[arg(long, default_value = "both")]
    pool: String,
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Features go here; labels, when the data has them, to the same name ending in .labels.npy.
    #[arg(long, default_value = "features.npy")]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
}

fn device(args: &DeviceArgs) -> Result<Device> {
    let choice: DeviceChoice = args.device.parse()?;
    let (dev, note) = Device::select(choice)?;
    eprintln!("{note}");
    Ok(dev)
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

fn cmd_train(a: TrainArgs) -> Result<()> {
    let data: DataSource = a.data.parse()?;
    let mut model = ModelConfig::by_name(a.model.as_deref().unwrap_or(default_model(&data)))?;
    model.norm_pix_loss = !a.pixel_target;
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-{}", model.name, timestamp())));
    let mut o = TrainOptions::new(model, data, out);
    o.budget = Budget { epochs: a.epochs, steps: a.steps, seconds: a.minutes.map(|m| m * 60.0) };
    if a.epochs.is_none() && a.steps.is_none() && a.minutes.is_none() {
        o.budget.seconds = Some(90.0);
    }
    o.batch_size = a.batch;
    o.accum_iter = a.accum;
    if let Some(lr) = a.base_lr {
        o.base_lr = lr;
    }
    o.optimizer.weight_decay = a.weight_decay;
    o.warmup_fraction = a.warmup;
    o.mask_ratio = a.mask_ratio;
    o.mask_strategy = a.mask_strategy.parse()?;
    o.augment = !a.no_augment;
    o.seed = a.seed;
    o.resume = a.resume;
    o.checkpoint_every_secs = a.checkpoint_every * 60.0;
    // Everything the run could refuse is refused before a device is opened or data is read.
    o.validate()?;
    let dev = device(&a.device)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond Ctrl-C: exiting without a checkpoint");
                std::process::exit(130);
            }
            eprintln!("\nCtrl-C: finishing this step and saving a checkpoint (again to quit at once)");
        });
    }
    let report = train(&o, &dev, Some(stop))?;
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

/// A model and the data facts its checkpoint recorded.
struct Loaded {
    model: mae::MaskedAutoencoder,
    data: DataSource,
    norm: Option<Normalization>,
}

fn load(checkpoint: &std::path::Path, preset: Option<&str>, data: Option<&str>, dev: &Device) -> Result<Loaded> {
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
    let strategy: MaskStrategy = a.mask_strategy.parse()?;
    mae::masking::check_ratio(a.mask_ratio)?;
    let dev = device(&a.device)?;
    let l = load(&a.checkpoint, a.model.as_deref(), a.data.as_deref(), &dev)?;
    let set =
        l.data.load(Split::Test, &l.model.config, 0).or_else(|_| l.data.load(Split::Train, &l.model.config, 0))?;
    let norm = l.norm.unwrap_or_else(|| l.data.normalization(&set));
    mae::reconstruct::save_reconstructions(&l.model, &set, &norm, a.mask_ratio, strategy, a.seed, a.count, &a.out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

fn cmd_embed(a: EmbedArgs) -> Result<()> {
    let pool: Pool = a.pool.parse()?;
    let split = match a.split.as_str() {
        "train" => Split::Train,
        "test" => Split::Test,
        s => return Err(Error::Config(format!("unknown split '{s}': use train or test"))),
    };
    let dev = device(&a.device)?;
    let l = load(&a.checkpoint, a.model.as_deref(), a.data.as_deref(), &dev)?;
    let set = l.data.load(split, &l.model.config, 0)?;
    let norm = l.norm.unwrap_or_else(|| l.data.normalization(&set));
    let feats = mae::features::extract(&l.model, &set, &norm, pool, a.batch)?;
    let width = pool.width(l.model.config.embed_dim);
    mae::io::npy::write_npy_f32(&a.out, &[set.len(), width], &feats)?;
    eprintln!("wrote {} ({} x {width} features, {pool:?} pooling)", a.out.display(), set.len());
    if let Some(labels) = &set.labels {
        let path = a.out.with_extension("labels.npy");
        let labels: Vec<i64> = labels.iter().map(|&v| v as i64).collect();
        mae::io::npy::write_npy_i64(&path, &[labels.len()], &labels)?;
        eprintln!("wrote {} (labels)", path.display());
    }
    Ok(())
}

fn cmd_info(a: DeviceArgs) -> Result<()> {
    println!("GPU adapters:");
    let adapters = engine::gpu::list_adapters();
    if adapters.is_empty() {
        println!("  none");
    }
    for ad in &adapters {
        println!("  {ad}{}", if ad.is_software() { "  [software: used only with --device gpu]" } else { "" });
    }
    match Device::select(a.device.parse()?) {
        Ok((dev, note)) => {
            println!("{note}");
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
            }
        }
        Err(e) => println!("no device: {e}"),
    }
    println!("model presets:");
    for c in ModelConfig::presets() {
        println!(
            "  {:<26} {}x{}x{} patch {:>2}, encoder {}x{} ({} heads), decoder {}x{} ({} heads), {:.1} M parameters",
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
    Ok(())
}

fn main() -> ExitCode {
    // Training on the CPU allocates and frees every activation each step: keep the freed memory
    // for the next step instead of faulting it in again (30-40% of a CPU step otherwise).
    engine::cpu::allocator::keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => cmd_train(a),
        Command::Reconstruct(a) => cmd_reconstruct(a),
        Command::Embed(a) => cmd_embed(a),
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
