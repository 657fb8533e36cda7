//! Pre-training (`main_pretrain.py` + `engine_pretrain.py`): AdamW (0.9, 0.95), weight decay 0.05
//! on weights only, `lr = base_lr * effective_batch / 256`, linear warmup then a half cosine set
//! per iteration, gradient accumulation, the paper's augmentation, per-sample masks.
//!
//! Determinism: the data order of epoch `e` and the augmentation and masks of micro-batch `u` are
//! pure functions of `(seed, e)` and `(seed, u)`, so the same seed gives the same losses on the
//! CPU backend, and a run resumed from a checkpoint continues exactly as if never stopped (the
//! optimizer's moments and step travel in the checkpoint).
//!
//! Faults: a non-finite loss stops the run with the step named, before any update or checkpoint,
//! so the last good checkpoint stays; a stop request (Ctrl-C) saves a checkpoint and returns
//! `Error::Interrupted`. With f16 products the backward pass is loss-scaled (`loss_scale`): a
//! non-finite *gradient* there is an overflow of the scale, not a divergence, and skips that
//! step's update (the step still counts, as its batches were used) while the scale backs off.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use engine::cpu::matmul::{Precision, PrecisionScope};
use engine::{Device, Tensor};

use crate::data::Split;
use crate::data::augment::Augment;
use crate::data::image_set::{ImageSet, Normalization};
use crate::data::loader::{Batcher, BatcherState};
use crate::data::source::DataSource;
use crate::error::{Error, Result};
use crate::model::batch::model_inputs;
use crate::model::config::ModelConfig;
use crate::model::masking::{MaskStrategy, check_ratio};
use crate::model::nn::Param;
use crate::model::{DeviceMasking, MaskedAutoencoder};
use crate::train::checkpoint::{CheckpointDir, TrainState, load_model, load_train_state};
use crate::train::log::open_log;
use crate::train::loss_scale::{self, LossScaler};
use crate::train::optim::{AdamW, AdamWConfig, learning_rate, scaled_lr};
use crate::train::prefetch::{BatchRecipe, HostBatch, Prefetch};

/// When to stop: whichever limit is reached first. At least one must be set.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Budget {
    /// Passes over the training set.
    pub epochs: Option<f64>,
    /// Optimizer steps.
    pub steps: Option<u64>,
    /// Training time in seconds, resumed parts included.
    pub seconds: Option<f64>,
}

/// Everything a pre-training run needs; `TrainOptions::new` gives the paper's recipe.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// The model's shape.
    pub model: ModelConfig,
    /// The training images.
    pub data: DataSource,
    /// Pre-train on the first this many training images only (the data-scale axis of the study).
    pub train_limit: Option<usize>,
    /// When to stop.
    pub budget: Budget,
    /// Images per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step (`accum_iter`).
    pub accum_iter: usize,
    /// Learning rate per 256 images: the peak is `base_lr * effective_batch / 256`.
    pub base_lr: f64,
    /// The learning rate at the end of the half cosine.
    pub min_lr: f64,
    /// Fraction of the budget spent warming up (the paper: 40 of 800 epochs = 0.05).
    pub warmup_fraction: f64,
    /// AdamW's hyper-parameters.
    pub optimizer: AdamWConfig,
    /// Fraction of the patches removed, in `[0, 1)`; 0.75 in the paper.
    pub mask_ratio: f32,
    /// How the removed patches are chosen.
    pub mask_strategy: MaskStrategy,
    /// The paper's augmentation, RandomResizedCrop and flips (otherwise the whole image).
    pub augment: bool,
    /// The smallest crop RandomResizedCrop takes, as a fraction of the image's area (0.2 in the
    /// paper).
    pub crop_min_scale: f32,
    /// Seed of the initialisation, data order, augmentation and masks.
    pub seed: u64,
    /// The run's folder: checkpoints, `log.csv`, pictures.
    pub out_dir: PathBuf,
    /// Seconds between checkpoints in `train` (0 or less: after every step).
    pub checkpoint_every_secs: f64,
    /// Continue from the newest checkpoint in `out_dir` (otherwise the folder must hold none).
    pub resume: bool,
    /// Print progress lines.
    pub verbose: bool,
    /// Write the loss plot and reconstructions at the end.
    pub pictures: bool,
    /// Also keep the model every this many steps in `snapshots/step-NNNNNNN.safetensors` (model
    /// only, never pruned): what `mae probe --over-steps` reads to draw a probe against time.
    pub snapshot_every: Option<u64>,
    /// Stop as Ctrl-C does (checkpoint, `Error::Interrupted`) after this many steps of this
    /// process: a pre-emption at a known point, for tests and for splitting a long run into jobs.
    pub stop_after_steps: Option<u64>,
    /// The precision of the training step's matrix products on the CPU: `Bf16` (the default) rounds
    /// their inputs to bfloat16 and sums in f32 where the CPU has AVX512_BF16 (faster there:
    /// docs/benchmarks.md), and is f32 elsewhere; the mixed precision `main_pretrain.py` trains
    /// with (autocast), and what docs/results.md measured against f32. `F16` rounds them to f16,
    /// as tensor cores read them (on the CPU emulated at f32 speed, to study its numerics; on a GPU
    /// tensor cores where the adapter has f16 cooperative matrices, else f32 products), and scales
    /// the loss dynamically against f16's underflow (`loss_scale`). Evaluation (`probe`, `embed`,
    /// the reconstructions) is always f32. The GPU backend's products are f32 at f32 and bf16.
    pub matmul_precision: Precision,
    /// The loss scale an f16 run starts from (`loss_scale::INITIAL_SCALE`, 2^16); a resumed run
    /// continues from its checkpoint's. Unused at other precisions.
    pub initial_loss_scale: f32,
    /// On a GPU, overlap the host's work with the GPU's: the next micro-batch made on a background
    /// thread (`prefetch`) and uploaded during this one's backward, and the loss read behind the
    /// forward pass, so the host records while the GPU runs the backward. The same losses either
    /// way; on by default, off where the environment sets `MAE_TRAIN_OVERLAP=0` (an A/B on one
    /// machine). Unused on the CPU.
    pub overlap: bool,
    /// On a GPU, let the backward write the gradients of the linear layers and LayerNorms
    /// straight into the buffer the one-launch AdamW reads (`AdamW::set_grad_homes`) instead of
    /// copying each one in. The same losses either way; on by default, off where the environment
    /// sets `MAE_GPU_GRAD_HOMES=0` (an A/B on one machine). Unused on the CPU.
    pub grad_homes: bool,
}

impl TrainOptions {
    /// The defaults of the paper's recipe for `model` on `data`.
    pub fn new(model: ModelConfig, data: DataSource, out_dir: PathBuf) -> Self {
        TrainOptions {
            model,
            data,
            train_limit: None,
            budget: Budget { epochs: Some(1.0), ..Default::default() },
            batch_size: 256,
            accum_iter: 1,
            base_lr: 1.5e-4,
            min_lr: 0.0,
            warmup_fraction: 0.05,
            optimizer: AdamWConfig::default(),
            mask_ratio: 0.75,
            mask_strategy: MaskStrategy::Random,
            augment: true,
            crop_min_scale: 0.2,
            seed: 0,
            out_dir,
            checkpoint_every_secs: 300.0,
            resume: false,
            verbose: true,
            pictures: true,
            snapshot_every: None,
            stop_after_steps: None,
            matmul_precision: Precision::Bf16,
            initial_loss_scale: loss_scale::INITIAL_SCALE,
            overlap: std::env::var("MAE_TRAIN_OVERLAP").map_or(true, |v| v != "0"),
            grad_homes: std::env::var("MAE_GPU_GRAD_HOMES").map_or(true, |v| v != "0"),
        }
    }

    /// Every impossible combination, refused before any work.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        check_ratio(self.mask_ratio)?;
        if self.train_limit == Some(0) {
            return Err(Error::Config("--train-limit 0 leaves no image to train on".into()));
        }
        if self.batch_size == 0 {
            return Err(Error::Config("batch size 0: use a positive batch, e.g. --batch 256".into()));
        }
        if self.accum_iter == 0 {
            return Err(Error::Config("gradient accumulation of 0 steps: use 1 or more".into()));
        }
        let b = self.budget;
        if b.epochs.is_none() && b.steps.is_none() && b.seconds.is_none() {
            return Err(Error::Config("no budget: give epochs, steps or a time limit".into()));
        }
        let positive = |v: f64| v > 0.0 && v.is_finite();
        if b.epochs.is_some_and(|e| !positive(e)) || b.seconds.is_some_and(|s| !positive(s)) || b.steps == Some(0) {
            return Err(Error::Config("the budget must be positive".into()));
        }
        if !positive(self.base_lr) || self.min_lr < 0.0 {
            return Err(Error::Config(format!("learning rate {} is not a positive number", self.base_lr)));
        }
        if !(self.crop_min_scale > 0.0 && self.crop_min_scale <= 1.0) {
            return Err(Error::Config(format!(
                "crop scale {} is not in (0, 1]: it is the smallest crop's share of the image's area",
                self.crop_min_scale
            )));
        }
        if !(0.0..1.0).contains(&self.warmup_fraction) {
            return Err(Error::Config("the warmup fraction must be in [0, 1)".into()));
        }
        LossScaler::for_precision(self.matmul_precision, self.initial_loss_scale)?;
        Ok(())
    }

    /// Takes the batch, learning rate, warmup, weight decay and crop scale of `r`.
    pub fn apply_recipe(&mut self, r: &crate::train::recipe::Recipe) {
        self.batch_size = r.batch;
        self.base_lr = r.base_lr;
        self.warmup_fraction = r.warmup_fraction;
        self.optimizer.weight_decay = r.weight_decay;
        self.crop_min_scale = r.crop_min_scale;
    }

    /// The augmentation of each training image.
    pub fn augmentation(&self) -> Augment {
        if self.augment { Augment { scale: (self.crop_min_scale, 1.0), ..Augment::mae() } } else { Augment::none() }
    }

    /// Images per optimizer step: `batch_size * accum_iter`.
    pub fn effective_batch(&self) -> usize {
        self.batch_size * self.accum_iter
    }
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct TrainReport {
    /// Optimizer steps done in the run, resumed parts included.
    pub steps: u64,
    /// Epochs done in the run, resumed parts included.
    pub epochs: f64,
    /// `(step, mean loss of the step)` for every step of this process.
    pub losses: Vec<(u64, f32)>,
    /// Mean throughput of this process's steps.
    pub images_per_sec: f64,
    /// Training time of this process's steps, in seconds.
    pub seconds: f64,
    /// The final checkpoint's folder.
    pub checkpoint: PathBuf,
    /// The run's `log.csv`.
    pub log: PathBuf,
    /// The loss plot and reconstructions written (none without `pictures`).
    pub pictures: Vec<PathBuf>,
    /// The device's name.
    pub device: String,
    /// Steps of the run (resumed parts included) whose update was skipped because the loss-scaled
    /// gradients overflowed f16 (only with f16 products).
    pub skipped_steps: u64,
    /// The loss scale at the end (1 unless the products were f16).
    pub loss_scale: f32,
}

fn facts(o: &TrainOptions, norm: &Normalization) -> BTreeMap<String, String> {
    let mut m = settings(o);
    m.insert("mae.normalization".into(), norm.to_string());
    m
}

/// A budget as one text: `epochs=E;steps=S;seconds=T`, absent limits left empty.
pub fn budget_text(b: &Budget) -> String {
    let f = |v: Option<String>| v.unwrap_or_default();
    format!(
        "epochs={};steps={};seconds={}",
        f(b.epochs.map(|v| v.to_string())),
        f(b.steps.map(|v| v.to_string())),
        f(b.seconds.map(|v| v.to_string()))
    )
}

/// The inverse of [`budget_text`].
pub fn parse_budget(s: &str) -> Option<Budget> {
    let mut b = Budget::default();
    for kv in s.split(';') {
        let (k, v) = kv.split_once('=')?;
        match (k, v) {
            (_, "") => {}
            ("epochs", v) => b.epochs = Some(v.parse().ok()?),
            ("steps", v) => b.steps = Some(v.parse().ok()?),
            ("seconds", v) => b.seconds = Some(v.parse().ok()?),
            _ => return None,
        }
    }
    Some(b)
}

/// The run's settings as recorded in each checkpoint's training state (`mae.*` keys), in the form a
/// resumed run compares its own with.
pub fn settings(o: &TrainOptions) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("mae.data".into(), o.data.to_string());
    if let Some(n) = o.train_limit {
        m.insert("mae.train_limit".into(), n.to_string());
    }
    m.insert("mae.budget".into(), budget_text(&o.budget));
    m.insert("mae.base_lr".into(), o.base_lr.to_string());
    m.insert("mae.min_lr".into(), o.min_lr.to_string());
    m.insert("mae.warmup".into(), o.warmup_fraction.to_string());
    m.insert("mae.weight_decay".into(), o.optimizer.weight_decay.to_string());
    m.insert("mae.seed".into(), o.seed.to_string());
    m.insert("mae.batch_size".into(), o.batch_size.to_string());
    m.insert("mae.accum_iter".into(), o.accum_iter.to_string());
    m.insert("mae.mask_ratio".into(), o.mask_ratio.to_string());
    m.insert("mae.mask_strategy".into(), o.mask_strategy.name().into());
    m.insert("mae.augment".into(), o.augment.to_string());
    m.insert("mae.crop_min_scale".into(), o.crop_min_scale.to_string());
    m.insert("mae.matmul_precision".into(), o.matmul_precision.name().into());
    let crop = format!("RandomResizedCrop(scale {}-1, ratio 3/4-4/3) + horizontal flip", o.crop_min_scale);
    m.insert(
        "mae.preprocessing".into(),
        format!(
            "{} then resize to {}x{}, normalise per channel",
            if o.augment { crop.as_str() } else { "whole image" },
            o.model.img_size,
            o.model.img_size
        ),
    );
    m
}

fn format_secs(s: f64) -> String {
    let s = s.max(0.0) as u64;
    if s >= 3600 { format!("{}h{:02}m", s / 3600, s / 60 % 60) } else { format!("{}m{:02}s", s / 60, s % 60) }
}

/// What one optimizer step did.
#[derive(Clone, Copy, Debug)]
pub struct StepReport {
    /// The optimizer steps done so far in the run (this one included).
    pub step: u64,
    /// Epochs done in the run so far.
    pub epoch: f64,
    /// The step's mean loss over its micro-batches.
    pub loss: f32,
    /// The learning rate of this step.
    pub lr: f64,
    /// Throughput of this step.
    pub images_per_sec: f64,
    /// Training time of the whole run so far, resumed parts included.
    pub elapsed_secs: f64,
    /// The loss scale the step's backward passes were seeded with (1 unless the products are f16).
    pub loss_scale: f32,
    /// Whether the update was skipped: a loss-scaled gradient overflowed (f16 products only).
    pub skipped: bool,
    /// Of the step's time, how long the host sat waiting for the device to finish the forward
    /// pass (the loss) and, with f16 products, the backward (the gradients' finiteness check).
    /// Near the step's time when the device is what limits the speed; near zero when the host is.
    pub waited_for_device_secs: f64,
    /// How long the step waited for its batch from the prefetch thread (on a GPU; the CPU makes its
    /// batches in the step): above zero when making batches is slower than the step.
    pub waited_for_batch_secs: f64,
}

/// Micro-batch `u` (the images at `indices`) on the device: what the model's forward takes.
struct Inputs {
    u: u64,
    indices: Vec<usize>,
    /// `[B, L, C*p*p]`, the embedding's patch order.
    patches: Tensor,
    /// `[B, L, p*p*C]`, the loss target's.
    target: Tensor,
    masking: DeviceMasking,
}

impl Inputs {
    /// `batch` uploaded to `device` and cut into patches there.
    fn upload(model: &ModelConfig, batch: HostBatch, u: u64, indices: Vec<usize>, device: &Device) -> Result<Inputs> {
        let (patches, target) = model_inputs(model, &batch.images, indices.len(), device)?;
        let masking = DeviceMasking::new(&batch.masking, device)?;
        Ok(Inputs { u, indices, patches, target, masking })
    }
}

/// A pre-training run that a program drives: [`Trainer::new`] (a fresh run, or the newest
/// checkpoint of `out_dir` with `resume`), then [`Trainer::step`] until [`Trainer::is_done`],
/// [`Trainer::checkpoint`] whenever it likes, and [`Trainer::finish`] for the final checkpoint, the
/// pictures and the report. [`train`] is the loop that the `mae train` command runs.
pub struct Trainer {
    o: TrainOptions,
    device: Device,
    /// The training images, their normalisation and augmentation, the masking: what makes a batch.
    batches: Arc<BatchRecipe>,
    /// The next micro-batch, being made on a background thread (on a GPU; see `prefetch`).
    prefetch: Option<Prefetch>,
    /// The next micro-batch on the device, uploaded during this one's backward.
    staged: Option<Inputs>,
    /// `TrainOptions::overlap` on a GPU.
    overlap: bool,
    facts: BTreeMap<String, String>,
    ckpts: CheckpointDir,
    model: MaskedAutoencoder,
    opt: AdamW,
    scaler: LossScaler,
    params: Vec<Param>,
    batcher: Batcher,
    steps_per_epoch: f64,
    total_steps: f64,
    lr_peak: f64,
    log: std::io::BufWriter<std::fs::File>,
    log_path: PathBuf,
    start_step: u64,
    step: u64,
    elapsed: f64,
    losses: Vec<(u64, f32)>,
    images_total: usize,
    train_secs: f64,
    last_step_gpu: Option<engine::GpuCounters>,
}

impl Trainer {
    /// Validates `o`, loads the data, and builds the model and optimizer: fresh, or from the newest
    /// checkpoint in `o.out_dir` when `o.resume` (whose data, seed, batch and accumulation must be
    /// `o`'s; a fresh run refuses a folder that already holds checkpoints).
    pub fn new(o: &TrainOptions, device: &Device) -> Result<Trainer> {
        o.validate()?;
        // Buffers kept from an earlier run in this process (another model, batch or mask ratio:
        // other sizes) would sit unused beside this run's; hand them back to the allocator.
        engine::cpu::recycle::clear();
        std::fs::create_dir_all(&o.out_dir).map_err(|e| Error::io(&o.out_dir, e))?;
        let mut set = o.data.load(Split::Train, &o.model, o.seed)?;
        if let Some(n) = o.train_limit {
            set = set.take(n);
        }
        let norm = o.data.normalization(&set);
        let facts = facts(o, &norm);
        let ckpts = CheckpointDir::new(&o.out_dir);

        // The model and optimizer, fresh or from the newest checkpoint.
        let (model, mut opt, start) = match (o.resume, ckpts.latest()) {
            (true, Some(dir)) => {
                let (mut model, _) =
                    load_model(&dir.join(crate::train::checkpoint::MODEL_FILE), Some(&o.model), device)?;
                model.pack()?;
                let mut opt = AdamW::new(o.optimizer, &model.trainable(), device)?;
                let state = load_train_state(&dir.join(crate::train::checkpoint::TRAIN_STATE_FILE), &mut opt)?;
                for key in ["mae.data", "mae.seed", "mae.batch_size", "mae.accum_iter"] {
                    if state.facts.get(key) != facts.get(key) {
                        return Err(Error::checkpoint(
                            &dir,
                            format!(
                                "it was made with {key} = {}, this run has {}; resume with the same settings or start a new output folder",
                                state.facts.get(key).map(String::as_str).unwrap_or("?"),
                                facts.get(key).map(String::as_str).unwrap_or("?")
                            ),
                        ));
                    }
                }
                if o.verbose {
                    eprintln!("resuming from {} (step {})", dir.display(), state.step);
                }
                (model, opt, state)
            }
            (true, None) => {
                return Err(Error::checkpoint(&o.out_dir, "--resume: no checkpoint in this folder to resume from"));
            }
            (false, _) => {
                if ckpts.latest().is_some() {
                    return Err(Error::Config(format!(
                        "{} already holds a run's checkpoints: pass --resume to continue it, or choose another --out",
                        o.out_dir.display()
                    )));
                }
                let mut model = MaskedAutoencoder::new(&o.model, o.seed, device)?;
                model.pack()?;
                let opt = AdamW::new(o.optimizer, &model.trainable(), device)?;
                (model, opt, TrainState { step: 0, elapsed_secs: 0.0, facts: facts.clone(), loss_scale: None })
            }
        };

        let mut scaler = LossScaler::for_precision(o.matmul_precision, o.initial_loss_scale)?;
        scaler.restore(start.loss_scale);
        let params = model.trainable();
        opt.set_grad_homes(&params, o.grad_homes)?;
        // Whole batches only; the order continues exactly where the checkpoint left it.
        let fresh = Batcher::new(set.len(), o.batch_size, o.seed, true)?;
        let micro_per_epoch = fresh.batches_per_epoch() as u64;
        let done = start.step * o.accum_iter as u64;
        let batcher = Batcher::restore(
            &BatcherState {
                epoch: done / micro_per_epoch,
                position: (done % micro_per_epoch) * o.batch_size as u64,
                ..fresh.state()
            },
            set.len(),
        )?;
        let steps_per_epoch = micro_per_epoch as f64 / o.accum_iter as f64;
        let total_steps = [o.budget.steps.map(|s| s as f64), o.budget.epochs.map(|e| (e * steps_per_epoch).ceil())]
            .into_iter()
            .flatten()
            .fold(f64::INFINITY, f64::min);
        let log_path = o.out_dir.join("log.csv");
        let log = open_log(&log_path, start.step)?;
        Ok(Trainer {
            lr_peak: scaled_lr(o.base_lr, o.effective_batch()),
            batches: Arc::new(BatchRecipe {
                set: Arc::new(set),
                norm,
                aug: o.augmentation(),
                img_size: o.model.img_size,
                grid: o.model.grid_size(),
                strategy: o.mask_strategy,
                ratio: o.mask_ratio,
                seed: o.seed,
            }),
            prefetch: None,
            staged: None,
            overlap: device.is_gpu() && o.overlap,
            o: o.clone(),
            device: device.clone(),
            facts,
            ckpts,
            model,
            opt,
            scaler,
            params,
            batcher,
            steps_per_epoch,
            total_steps,
            log,
            log_path,
            start_step: start.step,
            step: start.step,
            elapsed: start.elapsed_secs,
            losses: Vec::new(),
            images_total: 0,
            train_secs: 0.0,
            last_step_gpu: None,
        })
    }

    /// The fraction of the budget spent, by steps (or epochs) or by time, whichever is further.
    pub fn progress(&self) -> f64 {
        let by_steps = self.step as f64 / self.total_steps;
        let by_time = self.o.budget.seconds.map(|s| self.elapsed / s).unwrap_or(0.0);
        by_steps.max(by_time)
    }

    /// Whether the budget is spent.
    pub fn is_done(&self) -> bool {
        self.progress() >= 1.0
    }

    /// Optimizer steps done in the run (resumed parts included) and in this process.
    pub fn steps(&self) -> (u64, u64) {
        (self.step, self.step - self.start_step)
    }

    /// The step the budget ends at, when it is set in steps or epochs.
    pub fn total_steps(&self) -> Option<u64> {
        self.total_steps.is_finite().then_some(self.total_steps as u64)
    }

    /// The model as trained so far.
    pub fn model(&self) -> &MaskedAutoencoder {
        &self.model
    }

    /// The training images and their normalisation.
    pub fn data(&self) -> (&ImageSet, &Normalization) {
        (&self.batches.set, &self.batches.norm)
    }

    /// On a GPU, what the last step asked of it: dispatches, submissions, buffers created, bytes
    /// moved (`None` on the CPU or before the first step). A steady-state step creates no buffer
    /// and reads back only the loss. The GPU context counts for every thread, so this is the
    /// step's own work only while no other thread uses the GPU.
    pub fn last_step_gpu_counters(&self) -> Option<engine::GpuCounters> {
        self.last_step_gpu
    }

    /// The optimizer: its step count `t` counts applied updates only.
    pub fn optimizer(&self) -> &AdamW {
        &self.opt
    }

    /// The loss scale (disabled unless the products are f16).
    pub fn loss_scaler(&self) -> &LossScaler {
        &self.scaler
    }

    /// The peak learning rate (`base_lr * effective batch / 256`).
    pub fn peak_lr(&self) -> f64 {
        self.lr_peak
    }

    /// One optimizer step (`accum_iter` micro-batches), logged in `log.csv`. A non-finite loss is
    /// an error naming the step, returned before any parameter changes. With f16 products a
    /// non-finite gradient skips the update and backs the loss scale off (`StepReport::skipped`).
    pub fn step(&mut self) -> Result<StepReport> {
        let o = &self.o;
        let t0 = Instant::now();
        let gpu_before = self.device.gpu_counters();
        let lr = learning_rate(self.lr_peak, o.min_lr, o.warmup_fraction, 1.0, self.progress());
        let mut loss_sum = 0.0f64;
        let (mut waited_for_device, mut waited_for_batch) = (0.0f64, 0.0f64);
        let loss_scale = self.scaler.scale();
        // Forward and backward at the run's product precision (the optimizer has no products).
        let _precision = PrecisionScope::set(o.matmul_precision);
        for micro in 0..o.accum_iter as u64 {
            let u = self.step * o.accum_iter as u64 + micro;
            let idx = self.batcher.next_batch().to_vec();
            // On the device already (staged during the previous micro-batch), else made (or taken
            // from the prefetch thread) and uploaded now.
            let inputs = match self.staged.take() {
                Some(staged) if staged.u == u && staged.indices == idx => staged,
                _ => {
                    let batch = match self.prefetch.take().and_then(|p| p.take(u, &idx)) {
                        Some(batch) => batch?,
                        None => self.batches.make(u, &idx)?,
                    };
                    Inputs::upload(&o.model, batch, u, idx, &self.device)?
                }
            };
            if self.overlap {
                self.prefetch = Some(Prefetch::start(&self.batches, u + 1, self.batcher.peek_next()));
            }
            let out = self.model.forward(&inputs.patches, &inputs.target, &inputs.masking)?;
            // With overlap the loss is copied back behind the forward pass, which goes to the GPU
            // now; the host records the backward meanwhile, hands it over, and then waits for the
            // forward only, so the GPU runs the backward while the host checks the loss and
            // records the update and the next forward. Without, the read waits for both passes.
            let pending = if self.overlap { Some(out.loss.read_later()?) } else { None };
            self.scaler.backward(&out.loss)?;
            self.device.flush()?;
            let waiting = Instant::now();
            let loss = match pending {
                Some(read) => read.item()?,
                None => out.loss.item()?,
            };
            waited_for_device += waiting.elapsed().as_secs_f64();
            if !loss.is_finite() {
                for p in &self.params {
                    p.tensor.zero_grad();
                }
                return Err(Error::NonFinite { step: self.step + 1, loss });
            }
            // Upload the next micro-batch now, while the GPU runs this one's backward, rather
            // than between this update and the next forward (where, with f16 products and their
            // finiteness check, the GPU would sit idle during the copy: ~5 ms for ViT-B). Always
            // here, waiting for the prefetch thread if need be, so that every step allocates its
            // buffers in the same order (the bind groups stay cached).
            if let Some(next) = self.prefetch.take() {
                let waiting = Instant::now();
                let (next_u, indices, batch) = next.finish();
                waited_for_batch += waiting.elapsed().as_secs_f64();
                self.staged = Some(Inputs::upload(&o.model, batch?, next_u, indices, &self.device)?);
            }
            loss_sum += loss as f64;
        }
        let accumulation = 1.0 / o.accum_iter as f32;
        let applied = if self.scaler.is_enabled() {
            let checking = Instant::now();
            let applied = self.opt.step_if_finite(&self.params, lr as f32, self.scaler.unscale(accumulation))?;
            waited_for_device += checking.elapsed().as_secs_f64();
            applied
        } else {
            self.opt.step(&self.params, lr as f32, accumulation)?;
            true
        };
        self.scaler.update(applied)?;
        self.last_step_gpu = gpu_before.zip(self.device.gpu_counters()).map(|(before, after)| after - before);
        self.step += 1;
        let loss = (loss_sum / o.accum_iter as f64) as f32;
        self.losses.push((self.step, loss));
        let dt = t0.elapsed().as_secs_f64();
        self.elapsed += dt;
        self.train_secs += dt;
        let images = o.effective_batch();
        self.images_total += images;
        let r = StepReport {
            step: self.step,
            epoch: self.step as f64 / self.steps_per_epoch,
            loss,
            lr,
            images_per_sec: images as f64 / dt,
            elapsed_secs: self.elapsed,
            loss_scale,
            skipped: !applied,
            waited_for_device_secs: waited_for_device,
            waited_for_batch_secs: waited_for_batch,
        };
        writeln!(
            self.log,
            "{},{:.4},{loss:.6},{lr:.6e},{:.3},{:.3}",
            r.step, r.epoch, r.images_per_sec, r.elapsed_secs
        )
        .map_err(|e| Error::io(&self.log_path, e))?;
        if o.snapshot_every.is_some_and(|every| every > 0 && self.step.is_multiple_of(every)) {
            let mut meta = self.facts.clone();
            meta.insert(crate::train::checkpoint::META_STEP.into(), self.step.to_string());
            let path = snapshot_path(&o.out_dir, self.step);
            let dir = path.parent().expect("a snapshot lies in a folder");
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            crate::train::checkpoint::save_model(&path, &self.model, &meta)?;
        }
        Ok(r)
    }

    /// Save a checkpoint of the run as it stands (atomically; the log is flushed first).
    pub fn checkpoint(&mut self) -> Result<PathBuf> {
        self.log.flush().map_err(|e| Error::io(&self.log_path, e))?;
        let state = TrainState {
            step: self.step,
            elapsed_secs: self.elapsed,
            facts: self.facts.clone(),
            loss_scale: self.scaler.state(),
        };
        self.ckpts.save(&self.model, &self.facts, &self.opt, &state)
    }

    /// The final checkpoint, the loss plot and reconstructions (when `pictures`), and the report.
    pub fn finish(mut self) -> Result<TrainReport> {
        let checkpoint = self.checkpoint()?;
        let o = &self.o;
        let mut pictures = Vec::new();
        if o.pictures {
            pictures.push(crate::train::report::loss_plot(&self.log_path, &o.out_dir.join("loss.png"), &o.model.name)?);
            let test = o.data.load(Split::Test, &o.model, o.seed).unwrap_or_else(|_| self.batches.set.take(8));
            let path = o.out_dir.join("reconstructions.png");
            crate::train::reconstruct::save_reconstructions(
                &self.model,
                &test,
                &self.batches.norm,
                o.mask_ratio,
                o.mask_strategy,
                o.seed,
                8,
                &path,
            )?;
            pictures.push(path);
        }
        Ok(TrainReport {
            steps: self.step,
            epochs: self.step as f64 / self.steps_per_epoch,
            losses: self.losses,
            images_per_sec: self.images_total as f64 / self.train_secs.max(1e-9),
            seconds: self.train_secs,
            checkpoint,
            log: self.log_path,
            pictures,
            device: self.device.name(),
            skipped_steps: self.scaler.skipped_steps(),
            loss_scale: self.scaler.scale(),
        })
    }
}

/// Train on `device` until the budget is spent: the `mae train` command's loop around [`Trainer`],
/// with progress lines and a checkpoint every `checkpoint_every_secs`. `stop`, when set by another
/// thread (Ctrl-C), ends the run after the current step with a checkpoint and `Error::Interrupted`.
pub fn train(o: &TrainOptions, device: &Device, stop: Option<Arc<AtomicBool>>) -> Result<TrainReport> {
    let mut t = Trainer::new(o, device)?;
    if o.verbose {
        eprintln!(
            "training {} ({:.2} M parameters) on {} ({} images), {device}; batch {} x {} accumulation, lr {:.2e}, mask {} {:.0}%",
            o.model.name,
            o.model.num_params() as f64 / 1e6,
            o.data,
            t.data().0.len(),
            o.batch_size,
            o.accum_iter,
            t.peak_lr(),
            o.mask_strategy.name(),
            100.0 * o.mask_ratio
        );
        eprintln!("matrix products: {}", device.describe_products(o.matmul_precision));
        let scaler = t.loss_scaler();
        if scaler.is_enabled() {
            eprintln!(
                "loss scale: dynamic, now {} (halved when a gradient overflows f16, doubled after {} good steps)",
                scaler.scale(),
                loss_scale::GROWTH_INTERVAL
            );
        }
    }
    let mut last_skip_print: Option<Instant> = None;
    let (mut window_images, mut window_time) = (0usize, 0.0f64);
    let mut last_print = Instant::now();
    let mut last_ckpt = Instant::now();
    while !t.is_done() {
        let stopped = stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed));
        if stopped || o.stop_after_steps.is_some_and(|n| t.steps().1 >= n) {
            let checkpoint = t.checkpoint()?;
            if o.verbose {
                eprintln!("stopped at step {}; checkpoint saved to {}", t.steps().0, checkpoint.display());
            }
            return Err(Error::Interrupted);
        }
        let r = t.step()?;
        if o.verbose && r.skipped && last_skip_print.is_none_or(|at| at.elapsed().as_secs_f64() >= 30.0) {
            eprintln!(
                "step {}: a gradient overflowed f16 at loss scale {}: update skipped, scale now {} ({} skipped in all)",
                r.step,
                r.loss_scale,
                t.loss_scaler().scale(),
                t.loss_scaler().skipped_steps()
            );
            last_skip_print = Some(Instant::now());
        }
        window_images += o.effective_batch();
        window_time += o.effective_batch() as f64 / r.images_per_sec;
        let done = t.is_done();
        if o.verbose && (last_print.elapsed().as_secs_f64() >= 2.0 || done || t.steps().1 == 1) {
            let speed = window_images as f64 / window_time.max(1e-9);
            let remaining = match (o.budget.seconds, t.total_steps()) {
                (Some(s), None) => s - r.elapsed_secs,
                _ => r.elapsed_secs / t.progress().max(1e-9) - r.elapsed_secs,
            };
            let of = t.total_steps().map(|n| format!("/{n}")).unwrap_or_default();
            let scaler = t.loss_scaler();
            let scale = if scaler.is_enabled() {
                format!(" | loss scale {} ({} skipped)", scaler.scale(), scaler.skipped_steps())
            } else {
                String::new()
            };
            eprintln!(
                "step {}{of} | epoch {:.2} | loss {:.4} | lr {:.2e} | {speed:.0} img/s | ETA {}{scale}",
                r.step,
                r.epoch,
                r.loss,
                r.lr,
                format_secs(remaining)
            );
            last_print = Instant::now();
            (window_images, window_time) = (0, 0.0);
        }
        if (o.checkpoint_every_secs <= 0.0 || last_ckpt.elapsed().as_secs_f64() >= o.checkpoint_every_secs) && !done {
            t.checkpoint()?;
            last_ckpt = Instant::now();
        }
    }
    t.finish()
}

/// Folder of a run's model snapshots (`TrainOptions::snapshot_every`).
pub const SNAPSHOTS_DIR: &str = "snapshots";

/// Where the snapshot of `step` of the run in `out_dir` is kept.
pub fn snapshot_path(out_dir: &Path, step: u64) -> PathBuf {
    out_dir.join(SNAPSHOTS_DIR).join(format!("step-{step:07}.safetensors"))
}

/// The snapshots of the run in `out_dir`, `(step, file)` by step.
pub fn list_snapshots(out_dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(out_dir.join(SNAPSHOTS_DIR)) else { return Vec::new() };
    let mut v: Vec<(u64, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("step-")?.strip_suffix(".safetensors")?.parse().ok()?;
            Some((step, e.path()))
        })
        .collect();
    v.sort();
    v
}
