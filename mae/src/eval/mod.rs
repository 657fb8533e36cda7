//! What a pre-trained encoder is worth: its frozen features ([`features`]), the classifiers that
//! score them (a linear probe and k-NN, [`classifiers`]) beside raw pixels and a random encoder
//! ([`probe`]), fine-tuning end to end ([`finetune`]), and the study that pre-trains over mask
//! ratios, strategies and targets and probes each encoder ([`study`]). Why the features are what
//! they are: the probe at every encoder block ([`per_block`]), the cls token's attention read from
//! the training kernels ([`attention_maps`]) drawn beside reconstructions at several mask ratios
//! ([`attention_view`]), and the features' geometry (PCA and how far apart the classes lie,
//! [`geometry`]).
//!
//! This stage comes after `train/`: it trains its classifiers with the trainer's optimizer, reads
//! checkpoints, and the study runs the trainer; nothing in `train/` uses it.

pub mod attention_maps;
pub mod attention_view;
pub mod classifiers;
pub mod features;
pub mod finetune;
pub mod geometry;
pub mod per_block;
pub mod probe;
pub mod study;
