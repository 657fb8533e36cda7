//! Masked autoencoders (He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners") on our
//! own tensor engine: patchify, per-sample random masking, an encoder that sees only the visible
//! patches, a light decoder with mask tokens, the loss on masked patches; data, training,
//! checkpoints, evaluation and pictures.

#![warn(missing_docs)]

pub mod batch;
pub mod bench;
pub mod bench_torch;
pub mod checkpoint;
pub mod classifiers;
pub mod config;
pub mod data;
pub mod error;
pub mod features;
pub mod finetune;
pub mod io;
pub mod masking;
pub mod model;
pub mod nn;
pub mod optim;
pub mod patch;
pub mod pos_embed;
pub mod probe;
pub mod recipe;
pub mod reconstruct;
pub mod report;
pub mod source;
pub mod streams;
pub mod study;
pub mod train;

pub use engine;
pub use error::{Error, Result};
pub use model::MaskedAutoencoder;
