//! Batches: a seeded random order per epoch that can be saved and resumed exactly, and the
//! assembly of augmented, normalised `[B, C, S, S]` inputs.

use engine::Rng;

use crate::data::augment::{Augment, Draw, resample_into};
use crate::data::image_set::{ImageSet, Normalization};
use crate::error::{Error, Result};

/// Where a `Batcher` is: all that a checkpoint needs to resume with exactly the same batches.
/// The order of an epoch is a function of `(seed, epoch)`, so nothing else is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatcherState {
    /// Images in the data set.
    pub len: u64,
    /// Images per batch.
    pub batch: u64,
    /// Seed of the per-epoch orders.
    pub seed: u64,
    /// Whether an epoch's short final batch is skipped.
    pub drop_last: bool,
    /// The epoch of the batch last handed out.
    pub epoch: u64,
    /// Images of this epoch already handed out.
    pub position: u64,
}

/// Hands out batches of indices into a data set of `len` images, each epoch in a fresh random
/// order derived from the seed and the epoch number. With `drop_last` an epoch's short final
/// batch is skipped, so every batch is full; otherwise it is served as it is.
#[derive(Clone, Debug)]
pub struct Batcher {
    len: usize,
    batch: usize,
    seed: u64,
    drop_last: bool,
    epoch: u64,
    position: usize,
    order: Vec<usize>,
}

impl Batcher {
    /// A batcher at the start of epoch 0. Fails on an empty set, a batch of 0, or (with
    /// `drop_last`) a batch larger than the set.
    pub fn new(len: usize, batch: usize, seed: u64, drop_last: bool) -> Result<Self> {
        if len == 0 {
            return Err(Error::Config("cannot make batches of an empty data set".into()));
        }
        if batch == 0 {
            return Err(Error::Config("the batch size must be at least 1".into()));
        }
        if drop_last && batch > len {
            return Err(Error::Config(format!(
                "batch size {batch} is larger than the data set ({len} images), so dropping incomplete \
                 batches would leave none; use a batch size of at most {len}"
            )));
        }
        Ok(Batcher { len, batch, seed, drop_last, epoch: 0, position: 0, order: epoch_order(len, seed, 0) })
    }

    /// The epoch of the batch last handed out (0 before the first).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Images of the current epoch handed out so far.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Images in the data set.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the data set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Images per batch (the last of an epoch may hold fewer without `drop_last`).
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        if self.drop_last { self.len / self.batch } else { self.len.div_ceil(self.batch) }
    }

    /// The next batch of indices, moving on to the next epoch (and order) when this one is used up.
    pub fn next_batch(&mut self) -> &[usize] {
        let left = self.len - self.position;
        if left == 0 || (self.drop_last && left < self.batch) {
            self.epoch += 1;
            self.position = 0;
            self.order = epoch_order(self.len, self.seed, self.epoch);
        }
        let start = self.position;
        self.position = (start + self.batch).min(self.len);
        &self.order[start..self.position]
    }

    /// The batch that `next_batch` will hand out next, without moving on (to prepare it early).
    pub fn peek_next(&self) -> Vec<usize> {
        let left = self.len - self.position;
        if left == 0 || (self.drop_last && left < self.batch) {
            let order = epoch_order(self.len, self.seed, self.epoch + 1);
            return order[..self.batch.min(self.len)].to_vec();
        }
        self.order[self.position..(self.position + self.batch).min(self.len)].to_vec()
    }

    /// Where the batcher is, for a checkpoint; `Batcher::restore` continues from it.
    pub fn state(&self) -> BatcherState {
        BatcherState {
            len: self.len as u64,
            batch: self.batch as u64,
            seed: self.seed,
            drop_last: self.drop_last,
            epoch: self.epoch,
            position: self.position as u64,
        }
    }

    /// A batcher that continues exactly where `state` was taken. The data set must be the one the
    /// state was taken on (same number of images); a changed batch size is an error too, since
    /// it would silently change which images are seen together.
    pub fn restore(state: &BatcherState, len: usize) -> Result<Self> {
        if state.len != len as u64 {
            return Err(Error::Data(format!(
                "the saved batch order is for a data set of {} images but this one has {len}; \
                 resume with the same data, or start a new run",
                state.len
            )));
        }
        if state.position > state.len {
            return Err(Error::Data(format!(
                "the saved batch order is at image {} of an epoch of {}; the checkpoint is damaged",
                state.position, state.len
            )));
        }
        let batch = usize::try_from(state.batch).unwrap_or(usize::MAX);
        let mut b = Batcher::new(len, batch, state.seed, state.drop_last)?;
        b.epoch = state.epoch;
        b.position = state.position as usize;
        b.order = epoch_order(len, state.seed, state.epoch);
        Ok(b)
    }
}

/// The permutation of epoch `epoch`: its own generator, seeded from `(seed, epoch)` through a
/// mixing constant so that it does not reproduce other streams seeded with the same `seed`.
fn epoch_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng =
        Rng::new((seed ^ crate::streams::EPOCH_ORDER).wrapping_add(epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    let mut order: Vec<usize> = (0..len).collect();
    rng.shuffle(&mut order);
    order
}

/// The images at `indices`, each augmented (own random crop and flip from `rng`) and normalised
/// into one `[B, C, S, S]` buffer, with their labels if the set has any.
///
/// Every image's crop and flip are drawn first, in order, so the batch is the one `augment_into`
/// gives image by image; the resampling, ~1 ms an image at 224 x 224 on one core, is then shared
/// by the engine's CPU worker threads (the same bits whatever thread runs which image).
///
/// Panics if an index is out of range or `norm` has another channel count than the set.
pub fn make_batch(
    set: &ImageSet,
    indices: &[usize],
    out_size: usize,
    aug: &Augment,
    norm: &Normalization,
    rng: &mut Rng,
) -> (Vec<f32>, Option<Vec<u32>>) {
    let per = set.channels * out_size * out_size;
    let draws: Vec<Draw> = indices.iter().map(|_| Draw::new(set.height, set.width, aug, rng)).collect();
    let mut out = vec![0f32; indices.len() * per];
    // About 8 ns per output value (separable resampling, then normalisation).
    let ns_per_image = per as f64 * 8.0;
    engine::cpu::parallel::for_each_chunk(out.as_mut_slice(), per, ns_per_image, |first, dst| {
        let b = first / per;
        resample_into(set.image(indices[b]), set.channels, set.height, set.width, dst, out_size, &draws[b], norm);
    });
    let labels = set.labels.as_ref().map(|l| indices.iter().map(|&i| l[i]).collect());
    (out, labels)
}
