//! AdamW as `main_pretrain.py` sets it up: betas (0.9, 0.95), weight decay 0.05 on weights but not
//! on biases and 1-D parameters, bias-corrected moments, decoupled decay (PyTorch's AdamW). The
//! update runs on the parameters' device: one kernel for all of them when they are packed in one
//! buffer (`engine::packing`, as the trainer leaves a model on the GPU), else one per tensor.
//! [`AdamW::step_if_finite`] first checks that every gradient is finite (one sum and one readback)
//! and skips the update when one is not: the loss scaler's overflow check (`loss_scale`).

use engine::backend::{AdamWSpec, packed_adamw_layout};
use engine::packing::Packed;
use engine::storage::Storage;
use engine::{Device, Indices, Tensor};

use crate::error::{Error, Result};
use crate::model::nn::Param;

/// AdamW's hyper-parameters; the default is `main_pretrain.py`'s.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Decay of the first moment (0.9).
    pub beta1: f32,
    /// Decay of the second moment (0.95 by default).
    pub beta2: f32,
    /// Added to the denominator, against division by zero.
    pub eps: f32,
    /// Decoupled weight decay, for parameters that `Param::decays`.
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.05 }
    }
}

/// The moments of one parameter.
pub struct Moments {
    /// The parameter's name, as in the state dict.
    pub name: String,
    /// First moment, the parameter's shape.
    pub m: Tensor,
    /// Second moment, the parameter's shape.
    pub v: Tensor,
}

/// The optimizer: its settings, step count and one pair of moments per parameter.
pub struct AdamW {
    /// The hyper-parameters.
    pub config: AdamWConfig,
    /// Updates done so far (the `t` of the bias corrections).
    pub step: u64,
    /// One per parameter, in the order of the `params` given to `new` (and to every step).
    pub moments: Vec<Moments>,
    /// For packed parameters: the moments and gradients packed alike, and the one-launch update.
    packed: Option<PackedState>,
}

/// The buffers of a packed update: the parameters' buffer, one buffer of gradients laid out like
/// it, the moments' buffers (`moments` holds views of them), and the kernel's tables, kept while
/// they do not change (no upload per step). Each parameter's range of the gradient buffer is its
/// gradient home (`Tensor::set_grad_home`): the backward kernels that can (a linear layer's
/// weight and bias gradients, a LayerNorm's) write the gradients there, and the step copies in
/// only the others (the cls and mask tokens').
struct PackedState {
    params: Packed,
    grads: Storage,
    grad_views: Vec<Storage>,
    m: Storage,
    v: Storage,
    /// The segments updated last time (the parameters that had gradients) and their layout.
    layout: Option<(Vec<usize>, Indices)>,
    /// Per segment (lr scale, weight decay) as uploaded last time.
    hyper: Option<(Vec<f32>, Storage)>,
    /// Whether the parameters' ranges of `grads` are their gradient homes (`set_grad_homes`).
    homes: bool,
}

impl AdamW {
    /// Zero moments for `params`, on `device`; every step must get the same parameters in the
    /// same order.
    pub fn new(config: AdamWConfig, params: &[Param], device: &Device) -> Result<AdamW> {
        let tensors: Vec<Tensor> = params.iter().map(|p| p.tensor.clone()).collect();
        if let Some(pk) = Packed::of(&tensors) {
            let (m, m_views) = pk.zeros_like()?;
            let (v, v_views) = pk.zeros_like()?;
            let (grads, grad_views) = pk.zeros_like()?;
            set_grad_homes(params, &grad_views)?;
            let moments = params
                .iter()
                .zip(m_views.into_iter().zip(v_views))
                .map(|(p, (m, v))| {
                    Ok(Moments {
                        name: p.name.clone(),
                        m: Tensor::from_storage(m, p.tensor.shape())?,
                        v: Tensor::from_storage(v, p.tensor.shape())?,
                    })
                })
                .collect::<Result<_>>()?;
            let packed = PackedState { params: pk, grads, grad_views, m, v, layout: None, hyper: None, homes: true };
            return Ok(AdamW { config, step: 0, moments, packed: Some(packed) });
        }
        let moments = params
            .iter()
            .map(|p| {
                Ok(Moments {
                    name: p.name.clone(),
                    m: Tensor::zeros(p.tensor.shape(), device)?,
                    v: Tensor::zeros(p.tensor.shape(), device)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(AdamW { config, step: 0, moments, packed: None })
    }

    /// True when one kernel launch updates every parameter (they are packed in one buffer).
    pub fn is_packed(&self) -> bool {
        self.packed.is_some()
    }

    /// For packed parameters: whether their ranges of the packed gradient buffer are their
    /// gradient homes, so that the backward writes the gradients it can there (on by default), or
    /// every gradient is copied in before the update (off: the A/B of `MAE_GPU_GRAD_HOMES=0`).
    /// The same update either way. Does nothing for parameters that are not packed.
    pub fn set_grad_homes(&mut self, params: &[Param], on: bool) -> Result<()> {
        let Some(pk) = &mut self.packed else { return Ok(()) };
        pk.homes = on;
        match on {
            true => set_grad_homes(params, &pk.grad_views),
            false => params.iter().try_for_each(|p| Ok(p.tensor.set_grad_home(None)?)),
        }
    }

    /// One update of every parameter that has a gradient, then the gradients are cleared.
    /// `grad_scale` multiplies the gradients first (1 / accumulation steps). Weight decay follows
    /// `Param::decays`.
    pub fn step(&mut self, params: &[Param], lr: f32, grad_scale: f32) -> Result<()> {
        let wd = self.config.weight_decay;
        self.step_each(params, |p| (lr, if p.decays() { wd } else { 0.0 }), grad_scale)
    }

    /// [`AdamW::step`] when every gradient is finite, and `true`; otherwise no parameter, moment
    /// or step count changes, the gradients are cleared, and `false` (a loss-scaled f16 backward
    /// pass overflowed). The check is one sum over the gradients (inf and NaN survive a sum; finite
    /// gradients sum far below f32's range) and one readback: over the packed buffer the update
    /// reads anyway when the parameters are packed, else over each gradient's sum.
    pub fn step_if_finite(&mut self, params: &[Param], lr: f32, grad_scale: f32) -> Result<bool> {
        let wd = self.config.weight_decay;
        self.update(params, |p| (lr, if p.decays() { wd } else { 0.0 }), grad_scale, true)
    }

    /// One update with a learning rate and weight decay chosen per parameter (layer-wise lr decay
    /// in fine-tuning).
    pub fn step_each(&mut self, params: &[Param], hyper: impl Fn(&Param) -> (f32, f32), grad_scale: f32) -> Result<()> {
        self.update(params, hyper, grad_scale, false).map(|_| ())
    }

    /// The update, after the finiteness check when `check_finite`; whether it was applied.
    fn update(
        &mut self,
        params: &[Param],
        hyper: impl Fn(&Param) -> (f32, f32),
        grad_scale: f32,
        check_finite: bool,
    ) -> Result<bool> {
        if params.len() != self.moments.len() {
            return Err(Error::Config(format!(
                "the optimizer holds {} moments for {} parameters",
                self.moments.len(),
                params.len()
            )));
        }
        let gathered = match &mut self.packed {
            Some(pk) => Some(pk.gather(params, &hyper)?),
            None => None,
        };
        if check_finite {
            let finite = match (&mut self.packed, &gathered) {
                (Some(pk), Some((active, _))) => active.is_empty() || pk.grads_are_finite()?,
                _ => unpacked_grads_are_finite(params)?,
            };
            if !finite {
                for p in params {
                    p.tensor.zero_grad();
                }
                if let Some(pk) = &mut self.packed {
                    pk.forget_grads(params)?;
                }
                return Ok(false);
            }
        }
        self.step += 1;
        let t = self.step as i32;
        let c = self.config;
        let spec_for = |lr: f32, weight_decay: f32| AdamWSpec {
            lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay,
            bias_correction1: 1.0 - c.beta1.powi(t),
            bias_correction2: 1.0 - c.beta2.powi(t),
            grad_scale,
        };
        if let (Some(pk), Some((active, rates))) = (&mut self.packed, gathered) {
            pk.step(params, active, rates, spec_for)?;
            return Ok(true);
        }
        for (p, mo) in params.iter().zip(&self.moments) {
            debug_assert_eq!(p.name, mo.name);
            let Some(g) = p.tensor.grad() else { continue };
            let (lr, weight_decay) = hyper(p);
            let spec = spec_for(lr, weight_decay);
            let dev = p.tensor.device();
            dev.backend().adamw_step(
                p.tensor.storage(),
                g.storage(),
                mo.m.storage(),
                mo.v.storage(),
                p.tensor.numel(),
                &spec,
            )?;
            p.tensor.zero_grad();
        }
        Ok(true)
    }
}

/// Whether every gradient of `params` is finite: each one's sum, added up where they live, read
/// back once.
fn unpacked_grads_are_finite(params: &[Param]) -> Result<bool> {
    let mut total: Option<Tensor> = None;
    for g in params.iter().filter_map(|p| p.tensor.grad()) {
        let s = g.sum()?;
        total = Some(match total {
            Some(t) => t.add(&s)?,
            None => s,
        });
    }
    Ok(total.map_or(Ok(true), |t| t.item().map(f32::is_finite))?)
}

/// Each parameter's range of the packed gradient buffer becomes its gradient home.
fn set_grad_homes(params: &[Param], grad_views: &[Storage]) -> Result<()> {
    for (p, home) in params.iter().zip(grad_views) {
        p.tensor.set_grad_home(Some(home.clone()))?;
    }
    Ok(())
}

/// The indices of the parameters that have a gradient this step, and their (learning rate, weight
/// decay).
type Gathered = (Vec<usize>, Vec<(f32, f32)>);

impl PackedState {
    /// Gradients brought into their packed buffer: those the backward wrote there already stay,
    /// the others are copied in (copies, not kernels). Returns the indices of the parameters that
    /// have a gradient, and their (learning rate, weight decay).
    fn gather(&mut self, params: &[Param], hyper: impl Fn(&Param) -> (f32, f32)) -> Result<Gathered> {
        let mut active = Vec::with_capacity(params.len());
        let mut rates = Vec::with_capacity(params.len());
        let Some(p0) = params.first() else { return Ok((active, rates)) };
        let dev = p0.tensor.device();
        let backend = dev.backend();
        for (i, p) in params.iter().enumerate() {
            let Some(g) = p.tensor.grad() else { continue };
            if !g.storage().same_as(&self.grad_views[i]) {
                backend.copy_into(g.storage(), &self.grad_views[i], p.tensor.numel())?;
            }
            active.push(i);
            rates.push(hyper(p));
        }
        Ok((active, rates))
    }

    /// Whether the packed gradients are all finite: one sum over the buffer, one readback. The
    /// segments of parameters without a gradient this step hold earlier, finite, gradients (a
    /// skipped step's are cleared by `forget_grads`) and the gaps between segments zeros.
    fn grads_are_finite(&self) -> Result<bool> {
        let all = Tensor::from_storage(self.grads.clone(), &[self.grads.len()])?;
        Ok(all.sum()?.item()?.is_finite())
    }

    /// A fresh zeroed gradient buffer, so that no inf of a skipped step stays in a segment that a
    /// later step leaves alone (rare: only after an overflow); its ranges become the homes.
    fn forget_grads(&mut self, params: &[Param]) -> Result<()> {
        let (grads, grad_views) = self.params.zeros_like()?;
        if self.homes {
            set_grad_homes(params, &grad_views)?;
        }
        (self.grads, self.grad_views) = (grads, grad_views);
        Ok(())
    }

    /// One launch updates every parameter that has a gradient (`active`, gathered). The learning
    /// rates go in as one factor (the largest) times a per-segment scale, so that the table stays
    /// the same from step to step and is not uploaded again (with one learning rate for all, the
    /// scale is exactly 1 and the update is bit for bit the per-tensor one).
    fn step(
        &mut self,
        params: &[Param],
        active: Vec<usize>,
        rates: Vec<(f32, f32)>,
        spec_for: impl Fn(f32, f32) -> AdamWSpec,
    ) -> Result<()> {
        if active.is_empty() {
            return Ok(());
        }
        let dev = params[active[0]].tensor.device();
        let backend = dev.backend();
        if self.layout.as_ref().is_none_or(|(a, _)| a != &active) {
            let segments: Vec<(usize, usize)> = active.iter().map(|&i| self.params.segments[i]).collect();
            self.layout = Some((active.clone(), packed_adamw_layout(&segments)?));
        }
        let lr = rates.iter().map(|r| r.0).fold(0.0f32, f32::max);
        let table: Vec<f32> = rates.iter().flat_map(|&(r, wd)| [if lr > 0.0 { r / lr } else { 1.0 }, wd]).collect();
        if self.hyper.as_ref().is_none_or(|(h, _)| h != &table) {
            let storage = Tensor::from_slice(&table, &[table.len()], &dev)?.storage().clone();
            self.hyper = Some((table, storage));
        }
        let (_, layout) = self.layout.as_ref().expect("set above");
        let (_, hyper) = self.hyper.as_ref().expect("set above");
        backend.adamw_step_packed(
            &self.params.buffer,
            &self.grads,
            &self.m,
            &self.v,
            layout,
            active.len(),
            hyper,
            &spec_for(lr, 0.0),
        )?;
        for &i in &active {
            params[i].tensor.zero_grad();
        }
        Ok(())
    }
}

/// The learning rate at position `at` of a schedule that warms up until `warmup` and ends at
/// `total` (`util/lr_sched.py`, where the unit is a fractional epoch; our callers pass the fraction
/// of the budget spent, with `total = 1`): linear warmup, then a half-cycle cosine to `min_lr`.
/// Set per iteration.
pub fn learning_rate(base: f64, min_lr: f64, warmup: f64, total: f64, at: f64) -> f64 {
    if at < warmup {
        base * at / warmup
    } else if total <= warmup {
        base
    } else {
        let progress = ((at - warmup) / (total - warmup)).min(1.0);
        min_lr + (base - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// `lr = base_lr * effective_batch / 256`, the paper's scaling rule.
pub fn scaled_lr(base_lr: f64, effective_batch: usize) -> f64 {
    base_lr * effective_batch as f64 / 256.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_linearly_then_follows_a_half_cosine() {
        let lr = |e| learning_rate(1.0, 0.0, 10.0, 110.0, e);
        assert_eq!(lr(0.0), 0.0);
        assert!((lr(5.0) - 0.5).abs() < 1e-12);
        assert!((lr(10.0) - 1.0).abs() < 1e-12);
        assert!((lr(60.0) - 0.5).abs() < 1e-12);
        assert!(lr(110.0).abs() < 1e-12);
        assert_eq!(scaled_lr(1.5e-4, 4096), 2.4e-3);
    }

    #[test]
    fn biases_and_one_dimensional_parameters_do_not_decay() {
        let dev = Device::Cpu;
        let p = |name: &str, shape: &[usize]| Param { name: name.into(), tensor: Tensor::zeros(shape, &dev).unwrap() };
        assert!(p("blocks.0.attn.qkv.weight", &[6, 2]).decays());
        assert!(!p("blocks.0.attn.qkv.bias", &[6]).decays());
        assert!(!p("norm.weight", &[2]).decays());
        assert!(p("cls_token", &[1, 1, 2]).decays(), "timm's rule decays the 3-D tokens, as the official run did");
    }
}
