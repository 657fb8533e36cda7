//! Where a tensor's values live. Storage is shared (`Rc`) so that a reshape is free; it is mutable in
//! place only through the optimizer, `copy_rows_into` and `copy_into`, never behind an op's back.

use std::cell::{Ref, RefCell, RefMut};
use std::rc::Rc;

use crate::device::Device;
use crate::error::{Error, Result};
#[cfg(feature = "gpu")]
use crate::gpu::{Gpu, GpuBuffer};

/// A tensor's values: a host `Vec` or a GPU buffer. Clones share the memory.
#[derive(Clone)]
pub enum Storage {
    /// Values in host memory.
    Cpu(Rc<RefCell<Vec<f32>>>),
    /// Values in a buffer on a GPU.
    #[cfg(feature = "gpu")]
    Gpu(Rc<GpuBuffer>),
}

/// The last handle of a CPU storage gives its buffer to the backend's recycler (when on, see
/// `cpu/recycle.rs`), for the next output of the same size.
impl Drop for Storage {
    fn drop(&mut self) {
        if let Storage::Cpu(v) = self
            && crate::cpu::recycle::is_enabled()
            && Rc::strong_count(v) == 1
            && let Ok(mut v) = v.try_borrow_mut()
        {
            crate::cpu::recycle::give(std::mem::take(&mut *v));
        }
    }
}

#[cfg(feature = "gpu")]
fn on_gpu<T>() -> Result<T> {
    Err(Error::Device("the values live on the GPU; download them (to_vec) or move the tensor first".into()))
}

impl Storage {
    /// A CPU storage holding `v`.
    pub fn from_vec(v: Vec<f32>) -> Self {
        Storage::Cpu(Rc::new(RefCell::new(v)))
    }

    /// The device the values live on.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            #[cfg(feature = "gpu")]
            Storage::Gpu(b) => Device::Gpu(Gpu { ctx: b.context().clone() }),
        }
    }

    /// Number of f32 values held.
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(v) => v.borrow().len(),
            #[cfg(feature = "gpu")]
            Storage::Gpu(b) => b.len(),
        }
    }

    /// True when it holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Borrow the values of a CPU storage.
    pub fn cpu(&self) -> Result<Ref<'_, Vec<f32>>> {
        match self {
            Storage::Cpu(v) => Ok(v.borrow()),
            #[cfg(feature = "gpu")]
            Storage::Gpu(_) => on_gpu(),
        }
    }

    /// Borrow the values of a CPU storage mutably; fails if they are borrowed already or live on a
    /// GPU.
    pub fn cpu_mut(&self) -> Result<RefMut<'_, Vec<f32>>> {
        match self {
            Storage::Cpu(v) => v
                .try_borrow_mut()
                .map_err(|_| Error::Invalid("a tensor's storage is borrowed while being written".into())),
            #[cfg(feature = "gpu")]
            Storage::Gpu(_) => on_gpu(),
        }
    }

    /// True when both handles refer to the same memory.
    pub fn same_as(&self, other: &Storage) -> bool {
        match (self, other) {
            (Storage::Cpu(a), Storage::Cpu(b)) => Rc::ptr_eq(a, b),
            #[cfg(feature = "gpu")]
            (Storage::Gpu(a), Storage::Gpu(b)) => Rc::ptr_eq(a, b),
            #[cfg(feature = "gpu")]
            _ => false,
        }
    }
}
