//! A micro-batch's host work (the augmented images and the masks) made on a background thread while
//! the step before it runs, so that a GPU step does not wait for the CPU to crop and resize.
//!
//! Micro-batch `u`'s images and masks are a pure function of `(seed, u)` and its indices (see
//! `trainer.rs`), so making them early changes nothing: a prefetched batch is the one the step
//! would have made itself, bit for bit. Why it matters: ViT-B at batch 64 resamples 64 images to
//! 224 x 224 x 3, ~65 ms a step on one core of a 2-vCPU VM, which on a GPU that runs the whole
//! step in ~100 ms would be host time in every step.
//!
//! The trainer prefetches on a GPU only: on the CPU the step's kernels use every core, and a
//! thread beside them would slow them by as much as it saves.

use std::sync::Arc;
use std::thread::JoinHandle;

use engine::Rng;

use crate::data::augment::Augment;
use crate::data::image_set::{ImageSet, Normalization};
use crate::data::loader::make_batch;
use crate::error::Result;
use crate::model::masking::{MaskStrategy, Masking, make_masking};
use crate::streams::{self, stream};

/// Everything that makes a micro-batch from its indices and number: shared with the thread that
/// makes the next one.
pub struct BatchRecipe {
    /// The training images.
    pub set: Arc<ImageSet>,
    /// Their normalisation.
    pub norm: Normalization,
    /// The random crop and flip.
    pub aug: Augment,
    /// The model's input size, `S`.
    pub img_size: usize,
    /// Patches per side.
    pub grid: usize,
    /// How patches are masked.
    pub strategy: MaskStrategy,
    /// The fraction of patches masked.
    pub ratio: f32,
    /// The run's seed.
    pub seed: u64,
}

/// One micro-batch on the host: `images: [B, C, S, S]`, normalised, and its masks.
pub struct HostBatch {
    /// The augmented, normalised images.
    pub images: Vec<f32>,
    /// The masks (`0 keep, 1 remove`), one per image.
    pub masking: Masking,
}

impl BatchRecipe {
    /// Micro-batch `u` of the run, made of the images at `indices`: augmentation first, then the
    /// masks, from one generator seeded by `(seed, u)`.
    pub fn make(&self, u: u64, indices: &[usize]) -> Result<HostBatch> {
        let mut rng: Rng = stream(self.seed, u, streams::TRAIN_BATCH);
        let (images, _) = make_batch(&self.set, indices, self.img_size, &self.aug, &self.norm, &mut rng);
        let masking = make_masking(self.strategy, indices.len(), self.grid, self.ratio, &mut rng)?;
        Ok(HostBatch { images, masking })
    }
}

/// A micro-batch being made on a background thread.
pub struct Prefetch {
    u: u64,
    indices: Vec<usize>,
    job: Job,
}

enum Job {
    /// Being made on its thread.
    Thread(JoinHandle<Result<HostBatch>>),
    /// Made in place: the system would not start a thread (the run goes on, without the overlap).
    Done(Result<HostBatch>),
}

impl Prefetch {
    /// Start making micro-batch `u` from `indices`.
    pub fn start(recipe: &Arc<BatchRecipe>, u: u64, indices: Vec<usize>) -> Prefetch {
        let (r, idx) = (recipe.clone(), indices.clone());
        let job = match std::thread::Builder::new().name("mae-prefetch".into()).spawn(move || r.make(u, &idx)) {
            Ok(thread) => Job::Thread(thread),
            Err(_) => Job::Done(recipe.make(u, &indices)),
        };
        Prefetch { u, indices, job }
    }

    /// The batch, once made.
    fn join(self) -> Result<HostBatch> {
        match self.job {
            Job::Thread(thread) => thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Job::Done(batch) => batch,
        }
    }

    /// Wait for the batch: `(u, indices, batch)`. A panic on the thread is raised here.
    pub fn finish(mut self) -> (u64, Vec<usize>, Result<HostBatch>) {
        let (u, indices) = (self.u, std::mem::take(&mut self.indices));
        (u, indices, self.join())
    }

    /// The batch, when it is micro-batch `u` of `indices` (waiting for the thread if it is not
    /// done); `None` when it was made for another (the caller makes its own). A panic on the
    /// thread is raised here.
    pub fn take(self, u: u64, indices: &[usize]) -> Option<Result<HostBatch>> {
        if self.u != u || self.indices != indices {
            return None;
        }
        Some(self.join())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::generate;

    fn recipe() -> Arc<BatchRecipe> {
        let set = generate(16, 16, 3, 2);
        let norm = set.channel_stats();
        Arc::new(BatchRecipe {
            set: Arc::new(set),
            norm,
            aug: Augment::mae(),
            img_size: 16,
            grid: 4,
            strategy: MaskStrategy::Random,
            ratio: 0.75,
            seed: 7,
        })
    }

    #[test]
    fn a_prefetched_batch_is_the_one_made_in_place() {
        let r = recipe();
        let idx = vec![3, 9, 0, 15];
        let here = r.make(5, &idx).unwrap();
        let there = Prefetch::start(&r, 5, idx.clone()).take(5, &idx).unwrap().unwrap();
        assert_eq!(there.images, here.images);
        assert_eq!(there.masking, here.masking);
    }

    #[test]
    fn a_batch_prefetched_for_other_indices_or_another_step_is_refused() {
        let r = recipe();
        let idx = vec![1, 2];
        assert!(Prefetch::start(&r, 5, idx.clone()).take(6, &idx).is_none());
        assert!(Prefetch::start(&r, 5, idx.clone()).take(5, &[2, 1]).is_none());
    }
}
