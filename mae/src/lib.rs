//! Masked autoencoders (He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners") on our
//! own tensor engine: patchify, per-sample random masking, an encoder that sees only the visible
//! patches, a light decoder with mask tokens, the loss on masked patches; data, training,
//! checkpoints, evaluation and pictures.
//!
//! The modules are the stages of the pipeline, each using only those above it:
//! - [`model`]: the network of `models_mae.py`: patches, position embedding, masks, layers, the MAE;
//! - [`data`]: images from the built-in generator, (Fashion-)MNIST, folders or memory, at a model's
//!   size; augmentation and seeded batches;
//! - [`train`]: pre-training, its optimizer, recipes, checkpoints, log and end-of-run pictures;
//! - [`eval`]: frozen features, linear probe and k-NN, fine-tuning, the study;
//! - [`bench`](mod@bench): `mae bench`'s kernel and training tables;
//!
//! beside what every stage shares: [`io`] (file formats: safetensors, `.npy`, PNG, plots),
//! [`streams`] (every random stream of the crate in one table) and [`error`]. The `mae` command
//! (`src/main.rs`, one file per subcommand in `src/cli/`) is a thin layer over these.

#![warn(missing_docs)]

pub mod error;
pub mod io;
pub mod streams;

pub mod bench;
pub mod data;
pub mod eval;
pub mod model;
pub mod train;

pub use engine;
pub use error::{Error, Result};
pub use model::MaskedAutoencoder;

// The paths from before the stages, which programs already use (`mae::config::ModelConfig`,
// `mae::checkpoint::load_model`, ...).
pub use bench::torch as bench_torch;
pub use data::source;
pub use eval::{classifiers, features, finetune, probe, study};
pub use model::{batch, config, masking, nn, patch, pos_embed};
pub use train::{checkpoint, optim, recipe, reconstruct, report};
