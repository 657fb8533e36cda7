//! `Tensor`: a cheap handle (an `Rc`) to a shape, a device storage and, when gradients are wanted,
//! a place on the tape. Values are f32, contiguous and row-major; the only views are the ranges of
//! a packed buffer (`packing`), so a permutation is a real copy and a reshape is free.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::BinaryOp;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::pending::PendingRead;
use crate::rng::Rng;
use crate::storage::Storage;
use crate::tape;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A tensor belongs to the thread that made it: it is neither `Send` nor `Sync` (its handle, its
/// gradient slot and its GPU buffer handle are `Rc`/`RefCell`, and its place on the tape is in that
/// thread's tape), so two threads can never race on one tensor. To hand values to another thread,
/// send `to_vec()` and rebuild them there; the device itself (`Device`) is shared freely.
///
/// ```compile_fail
/// fn needs_send<T: Send>(_: T) {}
/// let t = engine::Tensor::zeros(&[2], &engine::Device::Cpu).unwrap();
/// needs_send(t); // error: `Rc<..>` cannot be sent between threads safely
/// ```
#[derive(Clone)]
pub struct Tensor(Rc<Inner>);

struct Inner {
    id: u64,
    shape: Vec<usize>,
    storage: Storage,
    requires_grad: Cell<bool>,
    /// Made by the user (data, parameters), not by an op on the tape.
    leaf: bool,
    grad: RefCell<Option<Tensor>>,
    /// Where a backward rule may write this tensor's gradient (see `set_grad_home`).
    grad_home: RefCell<Option<GradHome>>,
    /// The home was handed to a rule since the last `zero_grad` (it is handed out once).
    home_taken: Cell<bool>,
}

/// A parameter's gradient home: its own range of a buffer, or (for the reshape of such a
/// parameter) the parameter whose home it is.
enum GradHome {
    Range(Storage),
    Of(Tensor),
}

/// Number of values of a tensor of `shape` (1 for the scalar shape `[]`).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    fn make(storage: Storage, shape: Vec<usize>, requires_grad: bool, leaf: bool) -> Tensor {
        Tensor(Rc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shape,
            storage,
            requires_grad: Cell::new(requires_grad),
            leaf,
            grad: RefCell::new(None),
            grad_home: RefCell::new(None),
            home_taken: Cell::new(false),
        }))
    }

    /// A leaf tensor over existing storage (no gradient tracking).
    pub fn from_storage(storage: Storage, shape: &[usize]) -> Result<Tensor> {
        if storage.len() != numel(shape) {
            return Err(Error::Shape(format!("{} values do not fill shape {:?}", storage.len(), shape)));
        }
        Ok(Tensor::make(storage, shape.to_vec(), false, true))
    }

    /// The result of an op: records `backward` on the tape when grad mode is on and any input
    /// requires gradients.
    pub(crate) fn from_op<F>(storage: Storage, shape: Vec<usize>, inputs: &[&Tensor], backward: F) -> Tensor
    where
        F: FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + 'static,
    {
        let (out, inputs) = Tensor::op_output(storage, shape, inputs);
        if let Some(inputs) = inputs {
            tape::record(out.id(), inputs, Box::new(backward));
        }
        out
    }

    /// As `from_op`, with a rule that adds its gradient for the first input to the one already
    /// accumulated there (see `tape::AccumulatingFn`).
    pub(crate) fn from_op_accumulating<F>(
        storage: Storage,
        shape: Vec<usize>,
        inputs: &[&Tensor],
        backward: F,
    ) -> Tensor
    where
        F: FnOnce(&Tensor, Option<Tensor>) -> Result<Vec<Option<Tensor>>> + 'static,
    {
        let (out, inputs) = Tensor::op_output(storage, shape, inputs);
        if let Some(inputs) = inputs {
            tape::record_accumulating(out.id(), inputs, Box::new(backward));
        }
        out
    }

    /// An op's output, and the inputs to record with it when it is tracked (grad mode on and an
    /// input that requires gradients).
    fn op_output(storage: Storage, shape: Vec<usize>, inputs: &[&Tensor]) -> (Tensor, Option<Vec<Tensor>>) {
        debug_assert_eq!(storage.len(), numel(&shape), "op output does not fill its shape");
        let track = tape::is_grad_enabled() && inputs.iter().any(|t| t.requires_grad());
        let out = Tensor::make(storage, shape, track, false);
        (out, track.then(|| inputs.iter().map(|t| (*t).clone()).collect()))
    }

    /// A result that no gradient flows through (kernel outputs used inside backward rules).
    pub(crate) fn constant(storage: Storage, shape: Vec<usize>) -> Tensor {
        Tensor::make(storage, shape, false, true)
    }

    /// A leaf tensor of `shape` on `device` from row-major `values` (moved in on the CPU, uploaded to
    /// a GPU); fails unless they fill the shape.
    pub fn from_vec(values: Vec<f32>, shape: &[usize], device: &Device) -> Result<Tensor> {
        if values.len() != numel(shape) {
            return Err(Error::Shape(format!("{} values do not fill shape {:?}", values.len(), shape)));
        }
        let storage = match device {
            Device::Cpu => Storage::from_vec(values),
            #[cfg(feature = "gpu")]
            Device::Gpu(_) => device.backend().upload(&values)?,
        };
        Ok(Tensor::make(storage, shape.to_vec(), false, true))
    }

    /// As `from_vec`, copying from a slice.
    pub fn from_slice(values: &[f32], shape: &[usize], device: &Device) -> Result<Tensor> {
        if values.len() != numel(shape) {
            return Err(Error::Shape(format!("{} values do not fill shape {:?}", values.len(), shape)));
        }
        let storage = device.backend().upload(values)?;
        Ok(Tensor::make(storage, shape.to_vec(), false, true))
    }

    /// A leaf tensor of `shape` with every value `value`.
    pub fn full(shape: &[usize], value: f32, device: &Device) -> Result<Tensor> {
        let storage = device.backend().full(numel(shape), value)?;
        Ok(Tensor::make(storage, shape.to_vec(), false, true))
    }

    /// A leaf tensor of `shape` filled with 0.
    pub fn zeros(shape: &[usize], device: &Device) -> Result<Tensor> {
        Tensor::full(shape, 0.0, device)
    }

    /// A leaf tensor of `shape` filled with 1.
    pub fn ones(shape: &[usize], device: &Device) -> Result<Tensor> {
        Tensor::full(shape, 1.0, device)
    }

    /// A single value of shape `[]`.
    pub fn scalar(value: f32, device: &Device) -> Result<Tensor> {
        Tensor::full(&[], value, device)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(shape: &[usize], lo: f32, hi: f32, rng: &mut Rng, device: &Device) -> Result<Tensor> {
        let v = (0..numel(shape)).map(|_| rng.uniform_range(lo, hi)).collect();
        Tensor::from_vec(v, shape, device)
    }

    /// Normal with mean `mean` and standard deviation `std`, drawn from `rng` on the host.
    pub fn normal(shape: &[usize], mean: f32, std: f32, rng: &mut Rng, device: &Device) -> Result<Tensor> {
        let v = (0..numel(shape)).map(|_| mean + std * rng.normal()).collect();
        Tensor::from_vec(v, shape, device)
    }

    /// Xavier (Glorot) uniform for a weight `[fan_out, fan_in...]`: `U(-a, a)`,
    /// `a = sqrt(6 / (fan_in + fan_out))`, `fan_in` the product of the trailing axes (so a conv
    /// weight `[D, C, p, p]` is treated as the linear `[D, C*p*p]`, as the official MAE does).
    pub fn xavier_uniform(shape: &[usize], rng: &mut Rng, device: &Device) -> Result<Tensor> {
        if shape.len() < 2 {
            return Err(Error::Shape(format!("xavier_uniform needs a weight of rank >= 2, got {shape:?}")));
        }
        let fan_out = shape[0];
        let fan_in: usize = shape[1..].iter().product();
        let a = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
        Tensor::uniform(shape, -a, a, rng, device)
    }

    /// A process-wide unique id; the tape knows tensors by it.
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// The length of each axis.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.0.shape.len()
    }

    /// Length of axis `i`; negative counts from the end.
    pub fn dim(&self, i: isize) -> usize {
        let r = self.rank() as isize;
        let j = if i < 0 { r + i } else { i };
        self.0.shape[j as usize]
    }

    /// Number of values.
    pub fn numel(&self) -> usize {
        numel(&self.0.shape)
    }

    /// Where the values live.
    pub fn storage(&self) -> &Storage {
        &self.0.storage
    }

    /// The device that holds the values.
    pub fn device(&self) -> Device {
        self.0.storage.device()
    }

    /// Whether gradients flow to or through this tensor.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad.get()
    }

    /// True for tensors made by the user (data, parameters), false for the results of ops.
    pub fn is_leaf(&self) -> bool {
        self.0.leaf
    }

    /// Mark a leaf (a parameter) as wanting gradients. Returns `self` for chaining.
    pub fn with_grad(self) -> Tensor {
        self.set_requires_grad(true);
        self
    }

    /// Switch gradient tracking of a leaf on or off. Panics on a tensor that is not a leaf.
    pub fn set_requires_grad(&self, on: bool) {
        assert!(self.is_leaf(), "requires_grad can only be set on leaf tensors");
        self.0.requires_grad.set(on);
    }

    /// The gradient accumulated by `backward`, if any.
    pub fn grad(&self) -> Option<Tensor> {
        self.0.grad.borrow().clone()
    }

    /// Forget the accumulated gradient.
    pub fn zero_grad(&self) {
        *self.0.grad.borrow_mut() = None;
        self.0.home_taken.set(false);
    }

    /// Give this parameter (a leaf) a home for its gradient: a storage of its size, on its device,
    /// that the backward may write the gradient into instead of a fresh buffer. An optimizer that
    /// reads every gradient from one buffer (the packed AdamW) sets each parameter's range of that
    /// buffer, so that the kernels that make a gradient write it where the update reads it and the
    /// copy in between goes away. A rule writes there only while the parameter has no gradient
    /// (the first backward after `zero_grad`); the gradient is then a tensor over the home, which
    /// the next backward after `zero_grad` overwrites, as PyTorch reuses `.grad`. Rules that
    /// cannot write there return fresh gradients as before (check with `Storage::same_as`).
    /// `None` removes the home.
    pub fn set_grad_home(&self, home: Option<Storage>) -> Result<()> {
        if let Some(h) = &home {
            if !self.is_leaf() {
                return Err(Error::Invalid("set_grad_home: only a leaf (a parameter) has a gradient home".into()));
            }
            if h.len() != self.numel() || h.device() != self.device() {
                return Err(Error::Shape(format!(
                    "set_grad_home: a home of {} values on {} for a tensor of shape {:?} on {}",
                    h.len(),
                    h.device(),
                    self.shape(),
                    self.device()
                )));
            }
        }
        *self.0.grad_home.borrow_mut() = home.map(GradHome::Range);
        self.0.home_taken.set(false);
        Ok(())
    }

    /// The parameter whose gradient home this tensor's gradient may be written into (itself, or
    /// the parameter it is a reshape of) and the home, while it is free: the parameter requires
    /// gradients, has none yet, and no rule has taken the home since `zero_grad`.
    fn free_grad_home(&self) -> Option<(Tensor, Storage)> {
        match &*self.0.grad_home.borrow() {
            None => None,
            Some(GradHome::Of(parameter)) => parameter.free_grad_home(),
            Some(GradHome::Range(home)) => {
                let free = self.requires_grad() && self.0.grad.borrow().is_none() && !self.0.home_taken.get();
                free.then(|| (self.clone(), home.clone()))
            }
        }
    }

    pub(crate) fn accumulate_grad(&self, g: &Tensor) -> Result<()> {
        let mut slot = self.0.grad.borrow_mut();
        let next = match slot.take() {
            Some(prev) => prev.add(g)?,
            None => g.detach(),
        };
        *slot = Some(next);
        Ok(())
    }

    /// The same values, cut from the tape.
    pub fn detach(&self) -> Tensor {
        Tensor::make(self.0.storage.clone(), self.0.shape.clone(), false, true)
    }

    /// All values, copied to the host (waits for the device).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        self.device().backend().download(&self.0.storage)
    }

    /// Request all values without waiting for them: `wait` on the result returns the values the
    /// tensor holds now, after the work recorded so far, even if later commands overwrite it. On
    /// the GPU this submits the recorded work (one submission) and `wait` waits only for that
    /// submission, so the host can record more work meanwhile (see `PendingRead`).
    pub fn read_later(&self) -> Result<PendingRead> {
        Ok(self.device().backend().download_later(&self.0.storage)?.with_shape(self.shape()))
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::Shape(format!("item() needs one value, the tensor has shape {:?}", self.shape())));
        }
        Ok(self.to_vec()?[0])
    }

    /// A copy on `device` (a leaf, without gradient tracking).
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        if &self.device() == device {
            return Ok(self.detach());
        }
        Tensor::from_vec(self.to_vec()?, self.shape(), device)
    }

    /// Overwrite the values in place with `src`'s (same shape, moved to this tensor's device
    /// first): a packed tensor stays packed, and every handle to it sees the new values.
    pub fn assign(&self, src: &Tensor) -> Result<()> {
        if src.shape() != self.shape() {
            return Err(Error::Shape(format!("assign: values of shape {:?} into {:?}", src.shape(), self.shape())));
        }
        if src.storage().same_as(self.storage()) {
            return Ok(());
        }
        let dev = self.device();
        let src = src.to_device(&dev)?;
        dev.backend().copy_into(src.storage(), self.storage(), self.numel())
    }

    /// Same values, new shape (free: the storage is shared).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let shape = resolve_shape(shape, self.numel(), self.shape())?;
        let old = self.shape().to_vec();
        let out = Tensor::from_op(self.0.storage.clone(), shape, &[self], move |g| Ok(vec![Some(g.reshape(&old)?)]));
        // The gradient of a reshaped parameter is its own, reshaped (same storage): a rule that
        // writes it into the parameter's home writes the parameter's gradient.
        if out.requires_grad() && self.is_leaf() && self.0.grad_home.borrow().is_some() {
            *out.0.grad_home.borrow_mut() = Some(GradHome::Of(self.clone()));
        }
        Ok(out)
    }

    /// `self + other`, with `other` broadcast over leading axes (see `ops::binary`).
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        crate::ops::binary(BinaryOp::Add, self, other)
    }
    /// `self - other`, with `other` broadcast over leading axes (see `ops::binary`).
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        crate::ops::binary(BinaryOp::Sub, self, other)
    }
    /// `self * other`, with `other` broadcast over leading axes (see `ops::binary`).
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        crate::ops::binary(BinaryOp::Mul, self, other)
    }
    /// `self / other`, with `other` broadcast over leading axes (see `ops::binary`).
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        crate::ops::binary(BinaryOp::Div, self, other)
    }
    /// `s * self`.
    pub fn scale(&self, s: f32) -> Result<Tensor> {
        crate::ops::scale(self, s)
    }
    /// `self · other` for `self: [.., m, k]` and `other: [k, n]` or `[.., k, n]`.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        crate::ops::matmul(self, other)
    }
    /// Reorder axes: `out.shape[i] = self.shape[perm[i]]` (a real copy).
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        crate::ops::permute(self, perm)
    }
    /// The sum of all values, shape `[]`.
    pub fn sum(&self) -> Result<Tensor> {
        crate::ops::sum(self)
    }
    /// The mean of all values, shape `[]`.
    pub fn mean(&self) -> Result<Tensor> {
        crate::ops::mean(self)
    }
}

/// Resolve one `usize::MAX` ("infer this axis") and check the element count.
fn resolve_shape(shape: &[usize], n: usize, from: &[usize]) -> Result<Vec<usize>> {
    let mut out = shape.to_vec();
    let unknown: Vec<usize> = (0..shape.len()).filter(|&i| shape[i] == usize::MAX).collect();
    match unknown.len() {
        0 => {}
        1 => {
            let known: usize = shape.iter().filter(|&&d| d != usize::MAX).product();
            if known == 0 || !n.is_multiple_of(known) {
                return Err(Error::Shape(format!("reshape {from:?} -> {shape:?}: cannot infer the axis")));
            }
            out[unknown[0]] = n / known;
        }
        _ => {
            return Err(Error::Shape(format!("reshape to {shape:?}: at most one axis may be inferred")));
        }
    }
    if numel(&out) != n {
        return Err(Error::Shape(format!("reshape {from:?} ({n} values) -> {out:?}")));
    }
    Ok(out)
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor(shape={:?}, device={}, requires_grad={})", self.shape(), self.device(), self.requires_grad())
    }
}

/// The gradient homes of two parameters whose gradients one kernel makes (a linear layer's weight
/// and bias, a LayerNorm's gamma and beta), for a backward rule to write: both or neither, each
/// handed out once until `zero_grad`, so that two uses of one parameter in a graph never write the
/// same home (the second use's rule gets fresh buffers and the walk adds them up as before).
pub(crate) fn take_grad_homes(a: &Tensor, b: &Tensor) -> Option<[Storage; 2]> {
    let ((pa, home_a), (pb, home_b)) = (a.free_grad_home()?, b.free_grad_home()?);
    if Rc::ptr_eq(&pa.0, &pb.0) {
        return None;
    }
    pa.0.home_taken.set(true);
    pb.0.home_taken.set(true);
    Some([home_a, home_b])
}
