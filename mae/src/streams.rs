//! Every random stream of the crate, in one table. A stream is a pure function of the run's seed,
//! a counter (the micro-batch, the epoch, the picture batch) and its purpose below, so nothing
//! random has state to save, a resumed run continues exactly, and no two purposes share numbers.
//! The values are part of what makes a seed reproduce a run: changing one changes results.

use engine::Rng;

/// The augmentation and masks of training micro-batch `u` (counter: `u`).
pub const TRAIN_BATCH: u64 = 2;
/// The masks of the reconstruction picture at the end of a run (counter: 0).
pub const PICTURES: u64 = 3;
/// The masks of the reconstruction loss over a test set (counter: the batch).
pub const RECONSTRUCTION_LOSS: u64 = 4;
/// The order of the linear probe's training images in each epoch (counter: the epoch).
pub const PROBE_ORDER: u64 = 11;
/// Which training features the linear probe holds out to choose its weight decay (counter: 0).
pub const PROBE_VALIDATION: u64 = 12;
/// The augmentation of fine-tuning step `s` (counter: `s`).
pub const FINETUNE_BATCH: u64 = 21;

/// Seeds mixed with a run's seed by generators outside [`stream`] (their formulas predate it).
/// The classification head of fine-tuning: `Rng::new(seed ^ FINETUNE_HEAD)`.
pub const FINETUNE_HEAD: u64 = 0xF1AE;
/// The data order of epoch `e`: `Rng::new((seed ^ EPOCH_ORDER) + e * 0x9E3779B97F4A7C15)`.
pub const EPOCH_ORDER: u64 = 0xBA7C_4E50_0DE5_0000;

/// A 64-bit mix of the run's seed with a counter and a purpose, feeding `Rng::new` (which applies
/// splitmix64): independent streams without any state to save.
pub fn stream(seed: u64, counter: u64, purpose: u64) -> Rng {
    Rng::new(seed ^ counter.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ purpose.wrapping_mul(0xD1B5_4A32_D192_ED03))
}
