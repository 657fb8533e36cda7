//! Integer index tensors (`u32`): per-sample token indices for the masked patch gather, and class
//! labels for the cross-entropy. They are inputs, never differentiated, and are checked once here so
//! that no kernel ever reads out of bounds.

#[cfg(feature = "gpu")]
use std::cell::RefCell;
use std::rc::Rc;
#[cfg(feature = "gpu")]
use std::sync::Arc;

use crate::error::{Error, Result};
#[cfg(feature = "gpu")]
use crate::gpu::{GpuBuffer, GpuContext};

/// A shared, immutable tensor of `u32` indices, cheap to clone. Its largest value is found once,
/// when it is made, so that bounds checks cost nothing later.
#[derive(Clone, Debug)]
pub struct Indices(Rc<IndicesInner>);

struct IndicesInner {
    shape: Vec<usize>,
    values: Vec<u32>,
    max: Option<u32>,
    /// The values uploaded to a GPU, kept so that a step's indices cross the bus once.
    #[cfg(feature = "gpu")]
    gpu: RefCell<Option<Rc<GpuBuffer>>>,
}

impl std::fmt::Debug for IndicesInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Indices(shape={:?})", self.shape)
    }
}

impl Indices {
    /// Indices of `shape` from row-major `values`; fails unless they fill the shape exactly.
    pub fn new(values: Vec<u32>, shape: &[usize]) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != values.len() {
            return Err(Error::Shape(format!("indices: {} values do not fill shape {:?}", values.len(), shape)));
        }
        let max = values.iter().copied().max();
        Ok(Indices(Rc::new(IndicesInner {
            shape: shape.to_vec(),
            values,
            max,
            #[cfg(feature = "gpu")]
            gpu: RefCell::new(None),
        })))
    }

    /// As `new`, from `usize` values; fails on any that does not fit in `u32`.
    pub fn from_usize(values: &[usize], shape: &[usize]) -> Result<Self> {
        let v = values
            .iter()
            .map(|&i| u32::try_from(i).map_err(|_| Error::Invalid(format!("index {i} does not fit in u32"))))
            .collect::<Result<Vec<u32>>>()?;
        Self::new(v, shape)
    }

    /// The length of each axis.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// The values, row-major.
    pub fn values(&self) -> &[u32] {
        &self.0.values
    }

    /// Number of indices.
    pub fn len(&self) -> usize {
        self.0.values.len()
    }

    /// True when there are no indices.
    pub fn is_empty(&self) -> bool {
        self.0.values.is_empty()
    }

    /// Fails unless every index is below `bound`.
    pub fn check_below(&self, bound: usize, what: &str) -> Result<()> {
        match self.0.max {
            Some(m) if m as usize >= bound => {
                Err(Error::Invalid(format!("{what}: index {m} out of range for an axis of length {bound}")))
            }
            _ => Ok(()),
        }
    }

    /// The values on the GPU of `ctx`, uploaded by `upload` on first use.
    #[cfg(feature = "gpu")]
    pub(crate) fn gpu_buffer(
        &self,
        upload: impl FnOnce() -> Result<Rc<GpuBuffer>>,
        ctx: &Arc<GpuContext>,
    ) -> Result<Rc<GpuBuffer>> {
        let mut slot = self.0.gpu.borrow_mut();
        match slot.as_ref() {
            Some(b) if Arc::ptr_eq(b.context(), ctx) => Ok(b.clone()),
            _ => {
                let b = upload()?;
                *slot = Some(b.clone());
                Ok(b)
            }
        }
    }
}
