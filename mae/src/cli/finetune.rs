//! `mae finetune`: fine-tune the encoder with a linear head end to end; test accuracy.

use clap::Args;
use mae::Result;
use mae::data::Split;
use mae::recipe::{FinetuneRecipe, RecipeName};

use super::common::{CheckpointArgs, DeviceArgs, device, finetune_default, one_of};

#[derive(Args)]
pub struct FinetuneArgs {
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
    /// Save the fine-tuned model in this folder (DIR/model.safetensors), which `mae probe` and the
    /// other commands read as any checkpoint: a full model file whose encoder is the fine-tuned
    /// one; its decoder is untouched (as loaded, freshly initialised for `random`) and the
    /// classification head is not kept.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Runs `mae finetune`.
pub fn run(a: FinetuneArgs) -> Result<()> {
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
    if let Some(dir) = &a.out {
        // A folder that cannot be made is refused before the training, not after it.
        std::fs::create_dir_all(dir).map_err(|e| mae::Error::io(dir, e))?;
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
    if let Some(dir) = &a.out {
        let from = a.source.checkpoint.display().to_string();
        let path = mae::finetune::save_finetuned(dir, &model, &l.data, &norm, &from, &r)?;
        eprintln!("fine-tuned model: {}", path.display());
    }
    Ok(())
}
