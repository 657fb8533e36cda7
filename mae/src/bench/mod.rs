//! `mae bench`: the kernel table and the training throughput, without criterion, so that one call
//! on a machine with a GPU prints everything: the kernels of a training step on each backend
//! ([`kernels`], whose cases `cargo bench --bench kernels` times too), whole training steps at mask
//! ratios 0.75 and 0 ([`training`]), and PyTorch on the same model as the yardstick ([`torch`]).

pub mod kernels;
pub mod torch;
pub mod training;

pub use kernels::{Case, Timed, Work, cases, kernel_table};
pub use training::training_table;
