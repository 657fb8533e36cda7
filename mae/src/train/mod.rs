//! Pre-training: the loop ([`trainer`], `main_pretrain.py` + `engine_pretrain.py`; its items are
//! re-exported here, so `mae::train::Trainer`), the optimizer ([`optim`]), the settings a run starts
//! from ([`recipe`]), the loss scale of f16 products ([`loss_scale`]), checkpoints that resume a run exactly ([`checkpoint`]), the run's log of
//! losses ([`log`]), and the pictures a run ends with: its loss curve ([`report`]) and
//! reconstructions ([`reconstruct`], which `mae reconstruct` also draws for any checkpoint).
//!
//! The trainer uses the other files and none of them uses it: the loss curve reads the log.

pub mod checkpoint;
pub mod log;
pub mod loss_scale;
pub mod optim;
pub mod prefetch;
pub mod recipe;
pub mod reconstruct;
pub mod report;
pub mod trainer;

pub use log::read_log;
pub use trainer::*;
