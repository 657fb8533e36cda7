//! The network, as the official code builds it: a model's shape ([`config`]), images cut into
//! patches in the two orders the official code uses ([`patch`], and [`batch`] for a batch on the
//! device), the fixed position embedding ([`pos_embed`]), per-sample masks ([`masking`]), the ViT's
//! layers ([`nn`]) and the masked autoencoder itself ([`model`], `models_mae.py`'s
//! `MaskedAutoencoderViT`; its items are re-exported here).

pub mod batch;
pub mod config;
pub mod masking;
// The file that mirrors `models_mae.py`; its items are re-exported below, so the model is
// `mae::model::MaskedAutoencoder` as before the stages.
#[allow(clippy::module_inception)]
pub mod model;
pub mod nn;
pub mod patch;
pub mod pos_embed;

pub use model::*;
