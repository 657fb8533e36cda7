//! Dynamic loss scaling for training with f16 products, as PyTorch's `torch.amp.GradScaler` does
//! it: the backward pass is seeded with a scale `S` instead of 1, so every gradient it computes is
//! `S` times the true one and the tiny ones (the MAE loss's `dL/dpred` is 1e-5 to 1e-7 an element,
//! deeper gradients smaller) stay above f16's smallest values (2^-24, normal from 2^-14) when the
//! backward products round them; the optimizer multiplies them by `1/S` before its moments, so
//! the update is the unscaled one. A scale too large makes an f16 operand overflow past 65504 into
//! an infinity, which reaches the gradients as inf or NaN: that step's update is skipped (AdamW's
//! `t` stays, so its bias corrections count only applied updates) and `S` halves. After
//! [`GROWTH_INTERVAL`] applied steps in a row `S` doubles, to find the largest scale that does
//! not overflow again.
//!
//! Why the seed and not `loss * S`: the loss that is read, logged and checked for divergence stays
//! the true one, and the tape gains no op. Off (f32 and bf16 products: bf16 has f32's exponent
//! range) the scaler runs the plain `backward` and the unchecked optimizer step, bit for bit the
//! training without it.

use std::collections::BTreeMap;

use engine::cpu::matmul::Precision;
use engine::{Tensor, backward};

use crate::error::{Error, Result};

/// The scale a run at f16 starts from: 2^16, `GradScaler`'s `init_scale`.
pub const INITIAL_SCALE: f32 = 65536.0;
/// Applied steps in a row after which the scale doubles (`GradScaler`'s `growth_interval`).
pub const GROWTH_INTERVAL: u32 = 2000;
/// What the scale is multiplied by after [`GROWTH_INTERVAL`] good steps.
const GROWTH_FACTOR: f32 = 2.0;
/// What the scale is multiplied by after a step whose gradients were not finite.
const BACKOFF_FACTOR: f32 = 0.5;

/// Checkpoint keys of [`LossScaleState`] (in the training state's metadata).
const META_SCALE: &str = "mae.loss_scale";
const META_GOOD_STEPS: &str = "mae.loss_scale_good_steps";
const META_SKIPPED: &str = "mae.loss_scale_skipped_steps";

/// What a checkpoint keeps of a scaler, so that an interrupted run resumes exactly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScaleState {
    /// The scale `S`.
    pub scale: f32,
    /// Applied steps since the scale last changed (`GradScaler`'s growth tracker).
    pub good_steps: u32,
    /// Steps of the run whose update was skipped because a gradient was not finite.
    pub skipped_steps: u64,
}

impl LossScaleState {
    /// The state written into a checkpoint's metadata.
    pub fn to_metadata(&self, meta: &mut BTreeMap<String, String>) {
        // `f32`'s Display is the shortest text that reads back to the same bits.
        meta.insert(META_SCALE.into(), self.scale.to_string());
        meta.insert(META_GOOD_STEPS.into(), self.good_steps.to_string());
        meta.insert(META_SKIPPED.into(), self.skipped_steps.to_string());
    }

    /// The state read back from (and removed from) `meta`; `None` when the checkpoint has none
    /// (a run at f32 or bf16, or from before loss scaling). A key present but unreadable is an
    /// error naming it.
    pub fn take_from_metadata(meta: &mut BTreeMap<String, String>) -> std::result::Result<Option<Self>, String> {
        let Some(scale) = meta.remove(META_SCALE) else { return Ok(None) };
        let good = meta.remove(META_GOOD_STEPS).unwrap_or_else(|| "0".into());
        let skipped = meta.remove(META_SKIPPED).unwrap_or_else(|| "0".into());
        let bad = |key: &str, v: &str| format!("the training state's '{key}' = '{v}' is not a valid value");
        let scale: f32 = scale.parse().map_err(|_| bad(META_SCALE, &scale))?;
        if !(scale.is_finite() && scale > 0.0) {
            return Err(bad(META_SCALE, &scale.to_string()));
        }
        Ok(Some(LossScaleState {
            scale,
            good_steps: good.parse().map_err(|_| bad(META_GOOD_STEPS, &good))?,
            skipped_steps: skipped.parse().map_err(|_| bad(META_SKIPPED, &skipped))?,
        }))
    }
}

/// The loss scale of a run: on for f16 products ([`LossScaler::for_precision`]), else a scale of 1
/// that changes nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct LossScaler {
    enabled: bool,
    state: LossScaleState,
}

impl LossScaler {
    /// A scaler that does nothing: scale 1, plain backward, no check.
    pub fn disabled() -> LossScaler {
        LossScaler { enabled: false, state: LossScaleState { scale: 1.0, good_steps: 0, skipped_steps: 0 } }
    }

    /// A dynamic scale starting at `initial` (tests force overflows with a huge one). A power of
    /// two keeps the scaling and unscaling exact.
    pub fn new(initial: f32) -> Result<LossScaler> {
        if !(initial.is_finite() && initial >= f32::MIN_POSITIVE) {
            return Err(Error::Config(format!(
                "initial loss scale {initial} is not a positive finite number: use a power of two such as 65536"
            )));
        }
        Ok(LossScaler { enabled: true, state: LossScaleState { scale: initial, good_steps: 0, skipped_steps: 0 } })
    }

    /// Dynamic from `initial` when `precision` is f16 (its 5 exponent bits lose small gradients),
    /// else [`LossScaler::disabled`].
    pub fn for_precision(precision: Precision, initial: f32) -> Result<LossScaler> {
        if precision == Precision::F16 { LossScaler::new(initial) } else { Ok(LossScaler::disabled()) }
    }

    /// Whether the scale is dynamic (and the optimizer must check the gradients).
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The scale `S` the next backward pass is seeded with (1 when disabled).
    pub fn scale(&self) -> f32 {
        self.state.scale
    }

    /// Applied steps since the scale last changed.
    pub fn good_steps(&self) -> u32 {
        self.state.good_steps
    }

    /// Steps of the run whose update was skipped (resumed parts included).
    pub fn skipped_steps(&self) -> u64 {
        self.state.skipped_steps
    }

    /// What a checkpoint keeps (`None` when disabled: nothing to keep).
    pub fn state(&self) -> Option<LossScaleState> {
        self.enabled.then_some(self.state)
    }

    /// Continue from a checkpoint's state; `None` (an old checkpoint, or one of a run at another
    /// precision) keeps the initial scale. A disabled scaler stays disabled.
    pub fn restore(&mut self, state: Option<LossScaleState>) {
        if let (true, Some(s)) = (self.enabled, state) {
            self.state = s;
        }
    }

    /// The backward pass of `loss` (one value) seeded with `S`: every gradient comes out `S` times
    /// the true one. Disabled: exactly `engine::backward`.
    pub fn backward(&self, loss: &Tensor) -> Result<()> {
        if !self.enabled {
            return Ok(backward(loss)?);
        }
        if loss.numel() != 1 {
            return Err(Error::Config(format!(
                "the loss to scale must hold one value, it has shape {:?}",
                loss.shape()
            )));
        }
        let seed = Tensor::full(loss.shape(), self.state.scale, &loss.device())?;
        Ok(engine::tape::backward_with(loss, &seed)?)
    }

    /// The optimizer's `grad_scale` for gradients from [`LossScaler::backward`]: `base` (e.g.
    /// 1 / accumulation steps) over `S`, so that the update sees the true gradients.
    pub fn unscale(&self, base: f32) -> f32 {
        base / self.state.scale
    }

    /// After an optimizer step: `applied` false (a gradient was inf or NaN) halves the scale and
    /// restarts the count; [`GROWTH_INTERVAL`] applied steps in a row double it (unless that would
    /// overflow f32). A scale that halves below f32's smallest normal value means the gradients
    /// are not finite whatever the scale: an error, rather than a run that silently stops learning.
    pub fn update(&mut self, applied: bool) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let s = &mut self.state;
        if applied {
            s.good_steps += 1;
            if s.good_steps >= GROWTH_INTERVAL {
                let grown = s.scale * GROWTH_FACTOR;
                if grown.is_finite() {
                    s.scale = grown;
                }
                s.good_steps = 0;
            }
            return Ok(());
        }
        s.skipped_steps += 1;
        s.good_steps = 0;
        s.scale *= BACKOFF_FACTOR;
        if s.scale < f32::MIN_POSITIVE {
            return Err(Error::Config(format!(
                "the loss scale fell to {:e} after {} skipped steps: the gradients are not finite whatever the scale \
                 (the run diverged); lower the learning rate or train with --matmul-precision f32",
                s.scale, s.skipped_steps
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_doubles_after_the_growth_interval_of_good_steps() {
        let mut s = LossScaler::new(INITIAL_SCALE).unwrap();
        for _ in 0..GROWTH_INTERVAL - 1 {
            s.update(true).unwrap();
        }
        assert_eq!((s.scale(), s.good_steps()), (INITIAL_SCALE, GROWTH_INTERVAL - 1));
        s.update(true).unwrap();
        assert_eq!((s.scale(), s.good_steps()), (2.0 * INITIAL_SCALE, 0));
        for _ in 0..GROWTH_INTERVAL {
            s.update(true).unwrap();
        }
        assert_eq!(s.scale(), 4.0 * INITIAL_SCALE);
        assert_eq!(s.skipped_steps(), 0);
    }

    #[test]
    fn an_overflow_halves_the_scale_and_restarts_the_count_of_good_steps() {
        let mut s = LossScaler::new(INITIAL_SCALE).unwrap();
        for _ in 0..GROWTH_INTERVAL - 1 {
            s.update(true).unwrap();
        }
        s.update(false).unwrap();
        assert_eq!((s.scale(), s.good_steps(), s.skipped_steps()), (INITIAL_SCALE / 2.0, 0, 1));
        // The count starts over: one good step more does not grow it.
        s.update(true).unwrap();
        assert_eq!(s.scale(), INITIAL_SCALE / 2.0);
        s.update(false).unwrap();
        s.update(false).unwrap();
        assert_eq!((s.scale(), s.skipped_steps()), (INITIAL_SCALE / 8.0, 3));
    }

    #[test]
    fn the_scale_does_not_grow_past_the_largest_f32() {
        let mut s = LossScaler::new(2f32.powi(127)).unwrap();
        for _ in 0..GROWTH_INTERVAL {
            s.update(true).unwrap();
        }
        assert_eq!((s.scale(), s.good_steps()), (2f32.powi(127), 0));
    }

    #[test]
    fn gradients_that_overflow_at_every_scale_are_an_error_not_a_silent_stall() {
        let mut s = LossScaler::new(1.0).unwrap();
        let err = (0..200).find_map(|_| s.update(false).err()).expect("the scale runs out");
        assert!(err.to_string().contains("whatever the scale"), "{err}");
        assert_eq!(s.skipped_steps(), 127);
    }

    #[test]
    fn a_disabled_scaler_is_one_and_never_changes() {
        let mut s = LossScaler::for_precision(Precision::F32, 2f32.powi(40)).unwrap();
        assert!(!s.is_enabled());
        s.update(false).unwrap();
        s.restore(Some(LossScaleState { scale: 8.0, good_steps: 3, skipped_steps: 1 }));
        assert_eq!((s.scale(), s.unscale(0.5), s.state()), (1.0, 0.5, None));
        assert!(LossScaler::for_precision(Precision::Bf16, INITIAL_SCALE).unwrap().state().is_none());
        assert!(LossScaler::for_precision(Precision::F16, INITIAL_SCALE).unwrap().is_enabled());
    }

    #[test]
    fn unscaling_divides_the_optimizers_factor_by_the_scale() {
        let s = LossScaler::new(INITIAL_SCALE).unwrap();
        assert_eq!(s.unscale(0.25), 0.25 / 65536.0);
    }

    #[test]
    fn a_bad_initial_scale_is_refused() {
        for bad in [0.0, -1.0, f32::INFINITY, f32::NAN] {
            assert!(LossScaler::new(bad).unwrap_err().to_string().contains("power of two"), "{bad}");
        }
    }

    #[test]
    fn the_state_round_trips_through_checkpoint_metadata() {
        let state = LossScaleState { scale: 2f32.powi(-3) * 3.0, good_steps: 1999, skipped_steps: 12 };
        let mut meta = BTreeMap::from([("mae.seed".to_string(), "0".to_string())]);
        state.to_metadata(&mut meta);
        assert_eq!(LossScaleState::take_from_metadata(&mut meta).unwrap(), Some(state));
        assert_eq!(meta.len(), 1, "the scaler's keys are taken out, the rest stays");
        assert_eq!(LossScaleState::take_from_metadata(&mut meta).unwrap(), None, "an old checkpoint has none");
        meta.insert(META_SCALE.into(), "inf".into());
        assert!(LossScaleState::take_from_metadata(&mut meta).unwrap_err().contains(META_SCALE));
    }
}
