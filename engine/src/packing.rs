//! Packed tensors: several tensors laid out in one GPU buffer, each a view of its range, so that one
//! kernel launch can update them all. A model's parameters are packed this way for AdamW
//! (`Backend::adamw_step_packed`: one dispatch per step instead of one per tensor); every other
//! kernel binds a packed tensor at its offset and sees an ordinary storage.
//!
//! The CPU has nothing to gain (a call there is a function call, not a launch) and its storage has
//! no views, so packing is a no-op there.

use crate::device::Device;
use crate::error::Result;
use crate::storage::Storage;
use crate::tensor::Tensor;

/// The buffer that packed tensors share, and where each one lies in it.
#[derive(Clone)]
pub struct Packed {
    /// The whole buffer.
    pub buffer: Storage,
    /// Each tensor's `(offset, len)` in the buffer, in values, in the order given to `of`.
    pub segments: Vec<(usize, usize)>,
}

impl Packed {
    /// `Some` when `tensors` are all views of one packed buffer (as `pack` leaves them).
    pub fn of(tensors: &[Tensor]) -> Option<Packed> {
        #[cfg(feature = "gpu")]
        {
            let mut parent: Option<std::rc::Rc<crate::gpu::GpuBuffer>> = None;
            let mut segments = Vec::with_capacity(tensors.len());
            for t in tensors {
                let Storage::Gpu(b) = t.storage() else { return None };
                let p = b.parent()?;
                match &parent {
                    Some(q) if !std::rc::Rc::ptr_eq(p, q) => return None,
                    Some(_) => {}
                    None => parent = Some(p.clone()),
                }
                segments.push(((b.offset() / 4) as usize, t.numel()));
            }
            Some(Packed { buffer: Storage::Gpu(parent?), segments })
        }
        #[cfg(not(feature = "gpu"))]
        {
            let _ = tensors;
            None
        }
    }

    /// A zeroed buffer of the same size with a view at each segment (moments and gradients laid
    /// out like the parameters).
    pub fn zeros_like(&self) -> Result<(Storage, Vec<Storage>)> {
        match &self.buffer {
            #[cfg(feature = "gpu")]
            Storage::Gpu(b) => {
                let gpu = crate::gpu::Gpu { ctx: b.context().clone() };
                gpu.alloc_views(b.len(), &self.segments)
            }
            Storage::Cpu(_) => unreachable!("only GPU storage is packed"),
        }
    }
}

/// `tensors` moved into one buffer on `device`: new leaf tensors with the same shapes, values and
/// `requires_grad`, each a view of the buffer. On the CPU, or when the buffer would exceed the
/// device's largest storage binding, the tensors are returned as they are.
pub fn pack(tensors: &[Tensor], device: &Device) -> Result<Vec<Tensor>> {
    match device {
        #[cfg(feature = "gpu")]
        Device::Gpu(gpu) => {
            let lens: Vec<usize> = tensors.iter().map(Tensor::numel).collect();
            let total = *crate::gpu::packed_starts(&lens).last().expect("one start past the end");
            if total as u64 * 4 > gpu.ctx.max_binding_bytes() {
                return Ok(tensors.to_vec());
            }
            let (_, views) = gpu.alloc_packed(&lens)?;
            let backend = device.backend();
            tensors
                .iter()
                .zip(views)
                .map(|(t, view)| {
                    let values = t.to_device(device)?;
                    backend.copy_into(values.storage(), &view, t.numel())?;
                    let packed = Tensor::from_storage(view, t.shape())?;
                    packed.set_requires_grad(t.requires_grad());
                    Ok(packed)
                })
                .collect()
        }
        _ => Ok(tensors.to_vec()),
    }
}
