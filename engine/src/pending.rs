//! A read-back of a tensor's values that is requested now and waited for later, so that the host
//! can record more work (a backward pass, say) while the device computes the values.

use crate::error::{Error, Result};

/// Values of a tensor requested with `Tensor::read_later` (or `Backend::download_later`), to be
/// collected with `wait` (or `item` for one value).
///
/// The values are those the tensor held at request time: commands recorded after the request,
/// even ones that overwrite the same storage, run after the copy and cannot change them.
///
/// On the GPU, the request records a copy into a host-visible buffer behind every command recorded
/// so far and submits that batch (one submission, whatever else is recorded); `wait` then waits
/// until that submission has finished on the GPU, not for the work submitted after it. On the CPU
/// the values are copied at request time and `wait` returns them at once.
///
/// Dropping it without waiting is fine: nothing hangs and nothing stays mapped.
#[must_use = "a requested read does nothing until it is waited for"]
pub struct PendingRead {
    /// The shape of the tensor read (its number of values when the backend made it).
    shape: Vec<usize>,
    values: Values,
}

enum Values {
    /// Already on the host.
    Ready(Vec<f32>),
    /// A copy submitted to the GPU, not yet waited for.
    #[cfg(feature = "gpu")]
    Gpu(crate::gpu::PendingGpuRead),
}

impl PendingRead {
    /// A read whose values are already on the host.
    pub fn ready(values: Vec<f32>) -> Self {
        PendingRead { shape: vec![values.len()], values: Values::Ready(values) }
    }

    /// A read of `len` values whose copy has been submitted to the GPU.
    #[cfg(feature = "gpu")]
    pub(crate) fn gpu(read: crate::gpu::PendingGpuRead, len: usize) -> Self {
        PendingRead { shape: vec![len], values: Values::Gpu(read) }
    }

    /// The same read, reporting `shape` as the tensor's (for `item`'s error).
    pub(crate) fn with_shape(mut self, shape: &[usize]) -> Self {
        self.shape = shape.to_vec();
        self
    }

    /// The shape of the tensor read.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Whether `wait` returns without waiting for the device (always so on the CPU).
    pub fn is_ready(&self) -> bool {
        matches!(self.values, Values::Ready(_))
    }

    /// The values at request time; on the GPU, blocks until the submission that held the copy has
    /// finished (the work recorded after the request may still be running).
    pub fn wait(self) -> Result<Vec<f32>> {
        match self.values {
            Values::Ready(v) => Ok(v),
            #[cfg(feature = "gpu")]
            Values::Gpu(read) => Ok(bytemuck::pod_collect_to_vec(&read.wait()?)),
        }
    }

    /// The single value of a read of a one-element tensor, as `Tensor::item` (checked before
    /// waiting).
    pub fn item(self) -> Result<f32> {
        if self.shape.iter().product::<usize>() != 1 {
            return Err(Error::Shape(format!(
                "item() needs one value, the tensor read has shape {:?}; use wait() for all its values",
                self.shape
            )));
        }
        let values = self.wait()?;
        values.first().copied().ok_or_else(|| Error::Shape("item(): the read returned no value".into()))
    }
}

impl std::fmt::Debug for PendingRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.is_ready() { "ready" } else { "pending on the GPU" };
        write!(f, "PendingRead {{ shape: {:?}, {state} }}", self.shape)
    }
}
