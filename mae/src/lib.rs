//! Masked autoencoders (He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners") on our
//! own tensor engine: patchify, per-sample random masking, an encoder that sees only the visible
//! patches, a light decoder with mask tokens, the loss on masked patches; data, training,
//! checkpoints, evaluation and pictures.

#![warn(missing_docs)]

pub mod bench;
pub mod data;
pub mod error;
pub mod eval;
pub mod io;
pub mod model;
pub mod streams;
pub mod train;

pub use engine;
pub use error::{Error, Result};
pub use model::MaskedAutoencoder;

// The paths from before the stages, which programs already use (`mae::config::ModelConfig`).
pub use bench::torch as bench_torch;
pub use data::source;
pub use eval::{classifiers, features, finetune, probe, study};
pub use model::{batch, config, masking, nn, patch, pos_embed};
pub use train::{checkpoint, optim, recipe, reconstruct, report};
