//! Checkpoints: the model as a plain state dict in safetensors (official names and layouts, so
//! Python's `safetensors` reads it and official weights converted to safetensors load into it), and
//! the training state (AdamW moments, step, elapsed time, the loss scale of f16 runs) in a second
//! file beside it.
//!
//! A training run keeps them in `OUT/checkpoints/step-NNNNNNNN/{model,train_state}.safetensors`.
//! Each checkpoint is written into a temporary folder and renamed into place, then the `LATEST` file
//! is replaced atomically: a kill at any moment leaves the previous checkpoint whole and loadable.
//! The two newest checkpoints are kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use engine::{Device, Tensor};

use crate::error::{Error, Result};
use crate::io::atomic::write_atomically;
use crate::io::safetensors::{NamedTensor, check_state_dict, read_metadata, read_safetensors, write_safetensors};
use crate::model::MaskedAutoencoder;
use crate::model::config::ModelConfig;
use crate::train::loss_scale::LossScaleState;
use crate::train::optim::AdamW;

/// The model's state dict inside a checkpoint folder.
pub const MODEL_FILE: &str = "model.safetensors";
/// The training state (AdamW moments, step, elapsed time) beside it.
pub const TRAIN_STATE_FILE: &str = "train_state.safetensors";
/// The folder of a run's checkpoints, under its output folder.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
const LATEST: &str = "LATEST";
const KEEP: usize = 2;

/// Metadata key of the format tag (`pt`).
pub const META_FORMAT: &str = "format";
/// Metadata key of the model configuration, in `ModelConfig::to_metadata` form.
pub const META_CONFIG: &str = "mae.config";
/// Metadata key of the optimizer steps done when the checkpoint was taken.
pub const META_STEP: &str = "mae.step";

fn to_named(name: &str, t: &Tensor) -> Result<NamedTensor> {
    Ok(NamedTensor { name: name.to_string(), shape: t.shape().to_vec(), data: t.to_vec()? })
}

/// Write the model's state dict to `path` (atomically), with `extra` metadata (normalisation,
/// data set, step...).
pub fn save_model(path: &Path, model: &MaskedAutoencoder, extra: &BTreeMap<String, String>) -> Result<()> {
    let tensors = model.state_dict().iter().map(|p| to_named(&p.name, &p.tensor)).collect::<Result<Vec<_>>>()?;
    let mut meta = extra.clone();
    meta.insert(META_FORMAT.into(), "pt".into());
    meta.insert(META_CONFIG.into(), model.config.to_metadata());
    write_safetensors(path, &tensors, &meta)
}

/// Load a model from `path`. Its configuration comes from the file's metadata, or from `config`
/// when given (official weights carry none). Missing, extra or misshapen tensors are refused with
/// their names.
pub fn load_model(
    path: &Path,
    config: Option<&ModelConfig>,
    device: &Device,
) -> Result<(MaskedAutoencoder, BTreeMap<String, String>)> {
    let meta = read_metadata(path)?;
    let config = match (config, meta.get(META_CONFIG)) {
        (Some(c), _) => c.clone(),
        (None, Some(s)) => ModelConfig::from_metadata(s).map_err(|e| Error::checkpoint(path, format!("{e}")))?,
        (None, None) => {
            return Err(Error::checkpoint(
                path,
                "the file names no model configuration (official weights do not); pass the preset with --model",
            ));
        }
    };
    let (tensors, meta) = read_safetensors(path)?;
    let mut model = MaskedAutoencoder::new(&config, 0, device)?;
    let expected: Vec<(String, Vec<usize>)> =
        model.state_dict().iter().map(|p| (p.name.clone(), p.tensor.shape().to_vec())).collect();
    check_state_dict(path, &tensors, &expected)?;
    let mut by_name: BTreeMap<String, NamedTensor> = tensors.into_iter().map(|t| (t.name.clone(), t)).collect();
    let values = expected
        .iter()
        .map(|(name, shape)| {
            let t = by_name.remove(name).expect("checked by check_state_dict");
            Ok(Tensor::from_vec(t.data, shape, device)?)
        })
        .collect::<Result<Vec<_>>>()?;
    model.set_state(values)?;
    Ok((model, meta))
}

/// What a run needs beyond the weights to continue exactly where it stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    /// Optimizer updates done.
    pub step: u64,
    /// Seconds of training before this checkpoint (for time budgets).
    pub elapsed_secs: f64,
    /// Free-form facts checked on resume (seed, batch, data set...).
    pub facts: BTreeMap<String, String>,
    /// The loss scale of a run with f16 products (`None` otherwise, and in checkpoints from
    /// before loss scaling: such a run resumes with the initial scale).
    pub loss_scale: Option<LossScaleState>,
}

fn save_train_state(path: &Path, opt: &AdamW, state: &TrainState) -> Result<()> {
    let mut tensors = Vec::with_capacity(2 * opt.moments.len());
    for mo in &opt.moments {
        tensors.push(to_named(&format!("m.{}", mo.name), &mo.m)?);
        tensors.push(to_named(&format!("v.{}", mo.name), &mo.v)?);
    }
    let mut meta = state.facts.clone();
    meta.insert(META_STEP.into(), state.step.to_string());
    meta.insert("mae.optimizer_step".into(), opt.step.to_string());
    meta.insert("mae.elapsed_secs".into(), format!("{}", state.elapsed_secs));
    if let Some(scale) = &state.loss_scale {
        scale.to_metadata(&mut meta);
    }
    write_safetensors(path, &tensors, &meta)
}

fn parse_meta<T: std::str::FromStr>(path: &Path, meta: &BTreeMap<String, String>, key: &str) -> Result<T> {
    meta.get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::checkpoint(path, format!("the training state lacks a valid '{key}'")))
}

/// The metadata of a checkpoint file (model or training state) without reading its tensors.
pub fn read_checkpoint_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    read_metadata(path)
}

/// Restore the optimizer's moments and step from `path`; returns the saved `TrainState` (its facts
/// without the keys read here).
pub fn load_train_state(path: &Path, opt: &mut AdamW) -> Result<TrainState> {
    let (tensors, mut meta) = read_safetensors(path)?;
    let expected: Vec<(String, Vec<usize>)> = opt
        .moments
        .iter()
        .flat_map(|mo| {
            [(format!("m.{}", mo.name), mo.m.shape().to_vec()), (format!("v.{}", mo.name), mo.v.shape().to_vec())]
        })
        .collect();
    check_state_dict(path, &tensors, &expected)?;
    let mut by_name: BTreeMap<String, NamedTensor> = tensors.into_iter().map(|t| (t.name.clone(), t)).collect();
    // In place: the moments may be views of the optimizer's packed buffers.
    for mo in &opt.moments {
        for (prefix, slot) in [("m", &mo.m), ("v", &mo.v)] {
            let t = by_name.remove(&format!("{prefix}.{}", mo.name)).expect("checked above");
            slot.assign(&Tensor::from_vec(t.data, &t.shape, &engine::Device::Cpu)?)?;
        }
    }
    opt.step = parse_meta(path, &meta, "mae.optimizer_step")?;
    let step = parse_meta(path, &meta, META_STEP)?;
    let elapsed_secs = parse_meta(path, &meta, "mae.elapsed_secs")?;
    for k in [META_STEP, "mae.optimizer_step", "mae.elapsed_secs"] {
        meta.remove(k);
    }
    let loss_scale = LossScaleState::take_from_metadata(&mut meta).map_err(|e| Error::checkpoint(path, e))?;
    Ok(TrainState { step, elapsed_secs, facts: meta, loss_scale })
}

/// The checkpoints of one run, under `OUT/checkpoints`.
pub struct CheckpointDir {
    root: PathBuf,
}

impl CheckpointDir {
    /// The checkpoints of the run whose output folder is `out_dir`.
    pub fn new(out_dir: &Path) -> Self {
        CheckpointDir { root: out_dir.join(CHECKPOINTS_DIR) }
    }

    fn step_dir(&self, step: u64) -> PathBuf {
        self.root.join(format!("step-{step:08}"))
    }

    /// Save model and training state as one checkpoint; returns its folder.
    pub fn save(
        &self,
        model: &MaskedAutoencoder,
        model_meta: &BTreeMap<String, String>,
        opt: &AdamW,
        state: &TrainState,
    ) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.root).map_err(|e| Error::io(&self.root, e))?;
        let final_dir = self.step_dir(state.step);
        let tmp = self.root.join(format!(".tmp-step-{:08}-{}", state.step, std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut meta = model_meta.clone();
        meta.insert(META_STEP.into(), state.step.to_string());
        let written = save_model(&tmp.join(MODEL_FILE), model, &meta)
            .and_then(|_| save_train_state(&tmp.join(TRAIN_STATE_FILE), opt, state));
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir).map_err(|e| Error::io(&final_dir, e))?;
        }
        std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
        let name = final_dir.file_name().expect("step dir has a name").to_string_lossy().to_string();
        let latest = self.root.join(LATEST);
        write_atomically(&latest, |f| std::io::Write::write_all(f, name.as_bytes()))?;
        self.prune()?;
        Ok(final_dir)
    }

    /// Complete checkpoints (both files present), oldest first.
    pub fn list(&self) -> Vec<(u64, PathBuf)> {
        let Ok(rd) = std::fs::read_dir(&self.root) else { return Vec::new() };
        let mut v: Vec<(u64, PathBuf)> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
                let dir = e.path();
                (dir.join(MODEL_FILE).is_file() && dir.join(TRAIN_STATE_FILE).is_file()).then_some((step, dir))
            })
            .collect();
        v.sort();
        v
    }

    /// The newest complete checkpoint: the one `LATEST` names, else the highest step found.
    pub fn latest(&self) -> Option<PathBuf> {
        let named = std::fs::read_to_string(self.root.join(LATEST)).ok().map(|s| self.root.join(s.trim()));
        match named {
            Some(d) if d.join(MODEL_FILE).is_file() && d.join(TRAIN_STATE_FILE).is_file() => Some(d),
            _ => self.list().pop().map(|(_, d)| d),
        }
    }

    fn prune(&self) -> Result<()> {
        let all = self.list();
        for (_, dir) in all.iter().take(all.len().saturating_sub(KEEP)) {
            std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        // Temporary folders of runs that were killed mid-save.
        if let Ok(rd) = std::fs::read_dir(&self.root) {
            for e in rd.filter_map(|e| e.ok()) {
                if e.file_name().to_string_lossy().starts_with(".tmp-step-") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(())
    }
}

/// A model file from what the user gave: a `.safetensors` file, a checkpoint folder, or a run's
/// output folder (its newest checkpoint).
pub fn resolve_model_path(p: &Path) -> Result<PathBuf> {
    // The `LATEST` pointer names a checkpoint; it is not one.
    if p.is_file()
        && p.file_name().is_some_and(|n| n == LATEST)
        && let Some(d) = p.parent().and_then(Path::parent).and_then(|run| CheckpointDir::new(run).latest())
    {
        return Ok(d.join(MODEL_FILE));
    }
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    if p.join(MODEL_FILE).is_file() {
        return Ok(p.join(MODEL_FILE));
    }
    if let Some(d) = CheckpointDir::new(p).latest() {
        return Ok(d.join(MODEL_FILE));
    }
    Err(Error::checkpoint(
        p,
        "no model here: give a .safetensors file, a checkpoint folder, or the output folder of `mae train`",
    ))
}
