//! Fine-tuning (`main_finetune.py` + `models_vit.py`, simplified to what trains on two cores): the
//! pre-trained encoder on every patch, global average pooling of the patch tokens, a LayerNorm
//! (`fc_norm`) and a linear head, trained end to end with cross-entropy.
//!
//! AdamW with layer-wise learning-rate decay (`param_groups_lrd`: the patch embedding, cls token
//! and position table are layer 0, block `i` is layer `i + 1`, the norm and head are the top
//! layer; lr scale `decay^(top - layer)`), no weight decay on biases, 1-D parameters, the cls token
//! and the position table, linear warmup and a half-cosine schedule. The head starts at
//! `normal(0, 2e-5)` as the official `trunc_normal_(std=2e-5)`. Augmentation: RandomResizedCrop
//! (scale 0.5 to 1) and horizontal flips.

use std::time::Instant;

use engine::{Device, Indices, Rng, Tensor, backward, no_grad, ops};

use crate::data::augment::Augment;
use crate::data::image_set::{ImageSet, Normalization};
use crate::data::loader::{Batcher, make_batch};
use crate::error::{Error, Result};
use crate::model::MaskedAutoencoder;
use crate::model::batch::model_inputs;
use crate::model::nn::{LayerNorm, Linear, Param};
use crate::streams::{self, stream};
use crate::train::optim::{AdamW, AdamWConfig, learning_rate, scaled_lr};

/// Settings of a fine-tuning run; the defaults suit the small presets.
#[derive(Clone, Debug)]
pub struct FinetuneOptions {
    /// Budget in passes over the training set; with `seconds`, whichever ends first.
    pub epochs: Option<f64>,
    /// Budget in seconds of wall time; with `epochs`, whichever ends first.
    pub seconds: Option<f64>,
    /// Images per step; short last batches are dropped.
    pub batch: usize,
    /// Learning rate per 256 images: the peak is `base_lr * batch / 256`.
    pub base_lr: f64,
    /// Layer-wise lr decay: layer `i` of `top` gets `layer_decay^(top - i)` of the lr.
    pub layer_decay: f64,
    /// AdamW weight decay, except on biases, 1-D parameters, the cls token and the position table.
    pub weight_decay: f32,
    /// Fraction of the budget spent warming up linearly.
    pub warmup_fraction: f64,
    /// Seed of the head's initialisation, the batch order and the augmentation.
    pub seed: u64,
    /// Print a progress line every 50 steps.
    pub verbose: bool,
}

impl Default for FinetuneOptions {
    /// `main_finetune.py`'s recipe (`FinetuneRecipe::paper`), for 5 epochs.
    fn default() -> Self {
        let paper = crate::train::recipe::FinetuneRecipe::paper();
        FinetuneOptions {
            epochs: Some(5.0),
            seconds: None,
            batch: paper.batch,
            base_lr: paper.base_lr,
            layer_decay: paper.layer_decay,
            weight_decay: 0.05,
            warmup_fraction: 0.1,
            seed: 0,
            verbose: true,
        }
    }
}

impl FinetuneOptions {
    /// Takes the batch, learning rate and layer decay of `r`.
    pub fn apply_recipe(&mut self, r: &crate::train::recipe::FinetuneRecipe) {
        self.batch = r.batch;
        self.base_lr = r.base_lr;
        self.layer_decay = r.layer_decay;
    }
}

/// The pre-trained encoder with a classification head: mean of the patch tokens, `fc_norm`, `head`.
pub struct Classifier<'a> {
    /// The encoder, fine-tuned in place (its tensors are shared, not copied).
    pub encoder: &'a MaskedAutoencoder,
    /// LayerNorm of the pooled features (`fc_norm`).
    pub fc_norm: LayerNorm,
    /// The linear head: weight `[classes, D]`, bias `[classes]`.
    pub head: Linear,
}

impl Classifier<'_> {
    /// `patches -> logits [N, classes]`.
    pub fn forward(&self, patches: &Tensor) -> Result<Tensor> {
        let tokens = self.encoder.encode_all_unnormalized(patches)?;
        let t = tokens.dim(1);
        let pooled = ops::mean_axis(&ops::slice_tokens(&tokens, 1, t - 1)?, 1)?;
        self.head.forward(&self.fc_norm.forward(&pooled)?)
    }

    fn params(&self) -> Vec<Param> {
        let mut p = self.encoder.encoder_trainable();
        self.fc_norm.params("fc_norm", &mut p);
        self.head.params("head", &mut p);
        p
    }
}

/// The layer of a parameter for layer-wise lr decay (`get_layer_id_for_vit`).
fn layer_id(name: &str, depth: usize) -> usize {
    if name == "cls_token" || name == "pos_embed" || name.starts_with("patch_embed") {
        0
    } else if let Some(rest) = name.strip_prefix("blocks.") {
        rest.split('.').next().and_then(|i| i.parse::<usize>().ok()).map(|i| i + 1).unwrap_or(depth + 1)
    } else {
        depth + 1
    }
}

/// What a fine-tuning run gives.
pub struct FinetuneReport {
    /// Top-1 accuracy on the test split, in `0..1`.
    pub test_accuracy: f32,
    /// Mean training loss of the last steps: since the last progress line with `verbose`, else of all.
    pub train_loss: f32,
    /// Optimizer steps done.
    pub steps: u64,
    /// Wall time of the run, evaluation included.
    pub seconds: f64,
}

/// The model, `fc_norm` and the head moved into one buffer on a GPU (`engine::packing`; as they are
/// on the CPU), so that AdamW updates every trained tensor with one launch.
fn pack_with_model(
    model: &mut MaskedAutoencoder,
    fc_norm: LayerNorm,
    head: Linear,
    dev: &Device,
) -> Result<(LayerNorm, Linear)> {
    let mut tensors: Vec<Tensor> = model.state_dict().into_iter().map(|p| p.tensor).collect();
    let in_model = tensors.len();
    tensors.extend([fc_norm.weight, fc_norm.bias, head.weight, head.bias]);
    let mut packed = engine::packing::pack(&tensors, dev)?;
    let [w, b, hw, hb]: [Tensor; 4] = packed.split_off(in_model).try_into().expect("four tensors");
    model.set_state(packed)?;
    Ok((LayerNorm { weight: w, bias: b }, Linear { weight: hw, bias: hb }))
}

/// Fine-tune `model`'s encoder (in place; on a GPU its tensors are repacked with the head's) with a
/// new head on `train`; accuracy on `test`.
pub fn finetune(
    model: &mut MaskedAutoencoder,
    train: &ImageSet,
    test: &ImageSet,
    norm: &Normalization,
    o: &FinetuneOptions,
    dev: &Device,
) -> Result<FinetuneReport> {
    let (Some(train_y), Some(test_y)) = (&train.labels, &test.labels) else {
        return Err(Error::Data("fine-tuning needs labelled training and test images".into()));
    };
    if o.epochs.is_none() && o.seconds.is_none() {
        return Err(Error::Config("fine-tuning needs a budget: epochs or a time limit".into()));
    }
    let classes = train.classes.len().max(1 + *train_y.iter().max().unwrap_or(&0) as usize);
    let config = model.config.clone();
    let cfg = &config;
    let mut rng = Rng::new(o.seed ^ streams::FINETUNE_HEAD);
    let head = Linear {
        weight: Tensor::normal(&[classes, cfg.embed_dim], 0.0, 2e-5, &mut rng, dev)?.with_grad(),
        bias: Tensor::zeros(&[classes], dev)?.with_grad(),
    };
    let (fc_norm, head) = pack_with_model(model, LayerNorm::new(cfg.embed_dim, dev)?, head, dev)?;
    let clf = Classifier { encoder: model, fc_norm, head };
    let params = clf.params();
    let opt_cfg = AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: o.weight_decay };
    let mut opt = AdamW::new(opt_cfg, &params, dev)?;
    let top = cfg.depth + 1;
    let peak = scaled_lr(o.base_lr, o.batch);
    let mut batcher = Batcher::new(train.len(), o.batch, o.seed, true)?;
    let per_epoch = batcher.batches_per_epoch() as f64;
    let total_steps = o.epochs.map(|e| (e * per_epoch).ceil()).unwrap_or(f64::INFINITY);
    let aug = Augment { scale: (0.5, 1.0), ..Augment::mae() };
    let start = Instant::now();
    let progress = |step: u64| -> f64 {
        let by_time = o.seconds.map(|s| start.elapsed().as_secs_f64() / s).unwrap_or(0.0);
        (step as f64 / total_steps).max(by_time)
    };
    let (mut step, mut recent) = (0u64, Vec::new());
    while progress(step) < 1.0 {
        let lr = learning_rate(peak, 1e-6, o.warmup_fraction, 1.0, progress(step));
        let idx = batcher.next_batch().to_vec();
        let mut srng = stream(o.seed, step, streams::FINETUNE_BATCH);
        let (images, labels) = make_batch(train, &idx, cfg.img_size, &aug, norm, &mut srng);
        let labels = Indices::new(labels.expect("labelled"), &[idx.len()])?;
        let (patches, _) = model_inputs(cfg, &images, idx.len(), dev)?;
        let loss = ops::cross_entropy(&clf.forward(&patches)?, &labels)?;
        backward(&loss)?;
        let l = loss.item()?;
        if !l.is_finite() {
            return Err(Error::NonFinite { step: step + 1, loss: l });
        }
        recent.push(l);
        opt.step_each(
            &params,
            |p| {
                let scale = o.layer_decay.powi((top - layer_id(&p.name, cfg.depth)) as i32);
                let no_decay = !p.decays() || p.name == "cls_token" || p.name == "pos_embed";
                ((lr * scale) as f32, if no_decay { 0.0 } else { o.weight_decay })
            },
            1.0,
        )?;
        step += 1;
        if o.verbose && step.is_multiple_of(50) {
            let mean = recent.iter().sum::<f32>() / recent.len() as f32;
            eprintln!("finetune step {step} | epoch {:.2} | loss {mean:.4} | lr {lr:.2e}", step as f64 / per_epoch);
            recent.clear();
        }
    }
    let train_loss = recent.iter().sum::<f32>() / recent.len().max(1) as f32;
    // Test accuracy on whole images.
    let mut correct = 0usize;
    let all: Vec<usize> = (0..test.len()).collect();
    for chunk in all.chunks(256) {
        let (images, _) = make_batch(test, chunk, cfg.img_size, &Augment::none(), norm, &mut rng);
        let logits = no_grad(|| -> Result<Vec<f32>> {
            let (patches, _) = model_inputs(cfg, &images, chunk.len(), dev)?;
            Ok(clf.forward(&patches)?.to_vec()?)
        })?;
        for (r, &i) in chunk.iter().enumerate() {
            let row = &logits[r * classes..(r + 1) * classes];
            let best = (0..classes).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap_or(0);
            correct += (best == test_y[i] as usize) as usize;
        }
    }
    Ok(FinetuneReport {
        test_accuracy: correct as f32 / test.len() as f32,
        train_loss,
        steps: step,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Saves the fine-tuned `model` as `dir/model.safetensors`, a full model file that the loaders
/// read as any checkpoint (`mae probe` on a supervised encoder): the encoder fine-tuned, the
/// decoder as it was (fine-tuning does not use it), the encoder's final norm as it was too (the
/// head pools the unnormalised tokens and has its own `fc_norm`), the head not kept. Its metadata
/// says the data and normalisation it was trained with, what it was fine-tuned from, and how.
pub fn save_finetuned(
    dir: &std::path::Path,
    model: &MaskedAutoencoder,
    data: &crate::data::source::DataSource,
    norm: &Normalization,
    from: &str,
    report: &FinetuneReport,
) -> Result<std::path::PathBuf> {
    use crate::train::checkpoint::{MODEL_FILE, save_model};
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("mae.data".to_string(), data.to_string());
    meta.insert("mae.normalization".to_string(), norm.to_string());
    meta.insert("mae.finetuned_from".to_string(), from.to_string());
    meta.insert("mae.finetune_steps".to_string(), report.steps.to_string());
    meta.insert("mae.finetune_test_accuracy".to_string(), report.test_accuracy.to_string());
    let path = dir.join(MODEL_FILE);
    // Written to a temporary file and renamed (`write_safetensors`): never half a model.
    save_model(&path, model, &meta)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::layer_id;

    #[test]
    fn layer_ids_follow_the_official_vit_grouping() {
        assert_eq!(layer_id("cls_token", 6), 0);
        assert_eq!(layer_id("patch_embed.proj.weight", 6), 0);
        assert_eq!(layer_id("blocks.0.attn.qkv.weight", 6), 1);
        assert_eq!(layer_id("blocks.5.mlp.fc2.bias", 6), 6);
        assert_eq!(layer_id("fc_norm.weight", 6), 7);
        assert_eq!(layer_id("head.weight", 6), 7);
    }
}
