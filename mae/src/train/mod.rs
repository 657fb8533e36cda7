//! Pre-training: the loop ([`trainer`], `main_pretrain.py` + `engine_pretrain.py`; its items are
//! re-exported here, so `mae::train::Trainer`), the optimizer ([`optim`]), the settings a run starts
//! from ([`recipe`]), checkpoints that resume a run exactly ([`checkpoint`]), and the pictures a run
//! ends with: its loss curve ([`report`]) and reconstructions ([`reconstruct`], which
//! `mae reconstruct` also draws for any checkpoint).

pub mod checkpoint;
pub mod optim;
pub mod recipe;
pub mod reconstruct;
pub mod report;
pub mod trainer;

pub use trainer::*;
