//! A small tensor engine for training masked autoencoders: f32 tensors, a tape for reverse-mode
//! autograd, a readable CPU reference backend (with a fast matmul beside it) and a GPU backend of
//! our own WGSL kernels on wgpu. See `docs/architecture.md` for the whole picture.

#![warn(missing_docs)]

pub mod backend;
pub mod cpu;
pub mod device;
pub mod error;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod gradcheck;
pub mod indices;
pub mod ops;
pub mod packing;
pub mod pending;
pub mod rng;
pub mod storage;
pub mod tape;
pub mod tensor;

pub use device::{Device, DeviceChoice, GpuCounters};
pub use error::{Error, Result};
pub use indices::Indices;
pub use pending::PendingRead;
pub use rng::Rng;
pub use tape::{NoGradGuard, backward, no_grad};
pub use tensor::Tensor;
