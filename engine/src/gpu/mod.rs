//! The GPU backend: our WGSL kernels (`shaders/*.wgsl`) on wgpu. Each kernel family has a launcher
//! in `kernels/` beside its reference in `cpu/reference.rs`; `Gpu` implements `Backend` by calling
//! them. Tensors stay on the device between ops; only `download` reads back.

mod buffer;
mod context;
mod kernels;
mod profile;
mod select;
pub mod shaders;

use std::rc::Rc;
use std::sync::Arc;

pub use buffer::GpuBuffer;
pub(crate) use context::PendingGpuRead;
pub use context::{AdapterSummary, GpuContext};
pub use kernels::matmul::{MatmulTiles, force_matmul_tiles, runs_on_large_tiles};
pub use profile::KernelTime;
pub use select::list_adapters;

use crate::backend::*;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::indices::Indices;
use crate::pending::PendingRead;
use crate::storage::Storage;

/// A handle to the shared GPU context; the `Backend` of `Device::Gpu`.
#[derive(Clone)]
pub struct Gpu {
    pub(crate) ctx: Arc<GpuContext>,
}

impl Gpu {
    /// The best adapter; a software one only when `allow_software`.
    pub fn open(allow_software: bool) -> Result<Gpu> {
        Ok(Gpu { ctx: select::context(allow_software)? })
    }

    /// The shared context behind this handle.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// True when both handles share one context (and so one device).
    pub fn same(&self, other: &Gpu) -> bool {
        Arc::ptr_eq(&self.ctx, &other.ctx)
    }

    /// A fresh storage of `len` values with undefined contents.
    pub(crate) fn alloc(&self, len: usize) -> Result<Storage> {
        let buf = self.ctx.alloc(len)?;
        Ok(Storage::Gpu(Rc::new(GpuBuffer::new(buf, len, self.ctx.clone()))))
    }

    /// Zeroed storage for tensors of `lens` values packed one after another in one buffer: the
    /// buffer, and a view of it per tensor (each starting `PACK_ALIGN` values past a multiple of
    /// them, so that it binds at its offset on any device).
    pub(crate) fn alloc_packed(&self, lens: &[usize]) -> Result<(Storage, Vec<Storage>)> {
        let starts = packed_starts(lens);
        let total = *starts.last().expect("one start past the end");
        let segments: Vec<(usize, usize)> = starts.iter().copied().zip(lens.iter().copied()).collect();
        self.alloc_views(total, &segments)
    }

    /// A zeroed buffer of `total` values with a view at each `(start, len)`.
    pub(crate) fn alloc_views(&self, total: usize, segments: &[(usize, usize)]) -> Result<(Storage, Vec<Storage>)> {
        let parent = match &kernels::elementwise::fill(self, total, 0.0)? {
            Storage::Gpu(b) => b.clone(),
            Storage::Cpu(_) => unreachable!("a GPU kernel's output lives on the GPU"),
        };
        let views =
            segments.iter().map(|&(start, len)| Storage::Gpu(Rc::new(GpuBuffer::view(&parent, start, len)))).collect();
        Ok((Storage::Gpu(parent), views))
    }

    /// The raw buffer of a storage that must live on this GPU.
    pub(crate) fn buf<'a>(&self, s: &'a Storage) -> Result<wgpu::BufferBinding<'a>> {
        match s {
            Storage::Gpu(b) if Arc::ptr_eq(b.context(), &self.ctx) => Ok(b.binding()),
            Storage::Gpu(_) => Err(Error::Device("a tensor from another GPU context".into())),
            Storage::Cpu(_) => Err(Error::Device("a CPU tensor was passed to a GPU kernel".into())),
        }
    }

    /// The u32 values of `idx` on this GPU (uploaded once, then cached with the indices).
    pub(crate) fn indices(&self, idx: &Indices) -> Result<Rc<GpuBuffer>> {
        idx.gpu_buffer(
            || {
                let bytes: &[u8] = bytemuck::cast_slice(idx.values());
                let buf = self.ctx.upload_bytes(bytes)?;
                Ok(Rc::new(GpuBuffer::new(buf, idx.len(), self.ctx.clone())))
            },
            &self.ctx,
        )
    }
}

/// For tests and benchmarks: the GPU device if there is any adapter (software included). Where
/// there is none, fails loudly when `CI` is set (CI installs lavapipe, so a missing adapter is a
/// broken install), and otherwise prints that the test is skipped and returns `None`.
pub fn test_device() -> Option<Device> {
    match Gpu::open(true) {
        Ok(g) => Some(Device::Gpu(g)),
        Err(e) => {
            let ci = std::env::var("CI").map(|v| !v.is_empty() && v != "0" && v != "false").unwrap_or(false);
            if ci {
                panic!("CI is set but no GPU adapter is available: {e} (install mesa-vulkan-drivers for lavapipe)");
            }
            eprintln!("SKIPPED: no GPU adapter ({e}); this GPU test did not run");
            None
        }
    }
}

/// Values between the starts of packed tensors: 64 (256 bytes), the largest storage-offset
/// alignment a device may ask for, so every packed tensor binds at its offset. It is also the
/// spacing the kernels that make two gradients at once leave between them (the product's sums
/// after C, `kernels::matmul`; dbeta after dgamma, `kernels::layernorm`), so that a layer's two
/// gradients lie in the packed gradient buffer as those kernels write them (`GradHomes`).
pub(crate) const PACK_ALIGN: usize = 64;

/// Where each of tensors of `lens` values starts when packed `PACK_ALIGN` values apart, and the
/// total length last.
pub(crate) fn packed_starts(lens: &[usize]) -> Vec<usize> {
    let mut starts = Vec::with_capacity(lens.len() + 1);
    let mut at = 0;
    for &len in lens {
        starts.push(at);
        at += len.max(1).next_multiple_of(PACK_ALIGN);
    }
    starts.push(at);
    starts
}

impl Backend for Gpu {
    fn name(&self) -> String {
        format!("gpu: {}", self.ctx.adapter)
    }

    fn upload(&self, data: &[f32]) -> Result<Storage> {
        let s = self.alloc(data.len())?;
        self.ctx.write(&self.buf(&s)?, bytemuck::cast_slice(data));
        Ok(s)
    }

    fn download(&self, s: &Storage) -> Result<Vec<f32>> {
        let bytes = self.ctx.read(&self.buf(s)?, s.len() as u64 * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    fn download_later(&self, s: &Storage) -> Result<PendingRead> {
        let read = self.ctx.read_later(&self.buf(s)?, s.len() as u64 * 4)?;
        Ok(PendingRead::gpu(read, s.len()))
    }

    fn full(&self, len: usize, value: f32) -> Result<Storage> {
        kernels::elementwise::fill(self, len, value)
    }

    fn empty(&self, len: usize) -> Result<Storage> {
        self.alloc(len)
    }

    fn copy(&self, s: &Storage) -> Result<Storage> {
        kernels::elementwise::unary(self, UnaryOp::Scale(1.0), s, s.len())
    }

    fn matmul(&self, a: &Storage, b: &Storage, bias: Option<&Storage>, spec: &MatmulSpec) -> Result<Storage> {
        kernels::matmul::matmul(self, a, b, bias, spec)
    }

    fn binary(&self, op: BinaryOp, x: &Storage, y: &Storage, len_x: usize, len_y: usize) -> Result<Storage> {
        kernels::elementwise::binary(self, op, x, y, len_x, len_y)
    }

    fn matmul_gelu(
        &self,
        a: &Storage,
        b: &Storage,
        bias: Option<&Storage>,
        spec: &MatmulSpec,
    ) -> Result<(Storage, Storage)> {
        kernels::matmul::matmul_gelu(self, a, b, bias, spec)
    }

    fn matmul_gelu_backward(&self, a: &Storage, b: &Storage, h: &Storage, spec: &MatmulSpec) -> Result<Storage> {
        kernels::matmul::matmul_gelu_backward(self, a, b, h, spec)
    }

    fn matmul_with_a_sums(
        &self,
        a: &Storage,
        b: &Storage,
        spec: &MatmulSpec,
        into: GradHomes<'_>,
    ) -> Result<(Storage, Storage)> {
        if !spec.trans_a || spec.batch != 1 || spec.m * spec.n == 0 {
            return crate::backend::matmul_then_a_sums(self, a, b, spec);
        }
        kernels::matmul::matmul_with_a_sums(self, a, b, spec, into)
    }

    fn unary(&self, op: UnaryOp, x: &Storage, len: usize) -> Result<Storage> {
        kernels::elementwise::unary(self, op, x, len)
    }

    fn gelu_backward(&self, x: &Storage, dy: &Storage, len: usize) -> Result<Storage> {
        kernels::elementwise::gelu_backward(self, x, dy, len)
    }

    fn softmax(&self, x: &Storage, rows: usize, cols: usize) -> Result<Storage> {
        kernels::reduce::softmax(self, x, rows, cols)
    }

    fn softmax_backward(&self, y: &Storage, dy: &Storage, rows: usize, cols: usize) -> Result<Storage> {
        kernels::reduce::softmax_backward(self, y, dy, rows, cols)
    }

    fn layernorm(
        &self,
        x: &Storage,
        gamma: &Storage,
        beta: &Storage,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result<(Storage, Storage, Storage)> {
        kernels::layernorm::forward(self, x, gamma, beta, rows, cols, eps)
    }

    fn add_layernorm(
        &self,
        x: &Storage,
        res: &Storage,
        gamma: &Storage,
        beta: &Storage,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result<(Storage, Storage, Storage, Storage)> {
        kernels::layernorm::add_forward(self, x, res, gamma, beta, rows, cols, eps)
    }

    fn layernorm_backward(
        &self,
        x: &Storage,
        gamma: &Storage,
        mean: &Storage,
        rstd: &Storage,
        dy: &Storage,
        acc: Option<&Storage>,
        rows: usize,
        cols: usize,
        into: GradHomes<'_>,
    ) -> Result<(Storage, Storage, Storage)> {
        kernels::layernorm::backward(self, x, gamma, mean, rstd, dy, acc, rows, cols, into)
    }

    fn attention(&self, q: &Storage, k: &Storage, v: &Storage, spec: &AttentionSpec) -> Result<(Storage, Storage)> {
        kernels::attention::forward(self, q, k, v, spec)
    }

    fn attention_backward(
        &self,
        q: &Storage,
        k: &Storage,
        v: &Storage,
        out: &Storage,
        lse: &Storage,
        dout: &Storage,
        spec: &AttentionSpec,
    ) -> Result<(Storage, Storage, Storage)> {
        kernels::attention::backward(self, q, k, v, out, lse, dout, spec)
    }

    fn attention_qkv(&self, qkv: &Storage, num_heads: usize, spec: &AttentionSpec) -> Result<(Storage, Storage)> {
        kernels::attention::forward_qkv(self, qkv, num_heads, spec)
    }

    fn attention_qkv_backward(
        &self,
        qkv: &Storage,
        out: &Storage,
        lse: &Storage,
        dout: &Storage,
        num_heads: usize,
        spec: &AttentionSpec,
    ) -> Result<Storage> {
        kernels::attention::backward_qkv(self, qkv, out, lse, dout, num_heads, spec)
    }

    fn gather_rows(&self, x: &Storage, fill: Option<&Storage>, idx: &Indices, spec: &GatherSpec) -> Result<Storage> {
        kernels::gather::gather_rows(self, x, fill, idx, spec)
    }

    fn scatter_add_rows(&self, dy: &Storage, idx: &Indices, spec: &GatherSpec) -> Result<Storage> {
        kernels::gather::scatter_add_rows(self, dy, idx, spec)
    }

    fn sum_fill_rows(&self, dy: &Storage, idx: &Indices, spec: &GatherSpec) -> Result<Storage> {
        kernels::gather::sum_fill_rows(self, dy, idx, spec)
    }

    fn copy_rows_into(&self, src: &Storage, dst: &Storage, spec: &CopyRowsSpec) -> Result<()> {
        if src.same_as(dst) {
            return Err(Error::Invalid("copy_rows_into: source and destination are the same storage".into()));
        }
        kernels::gather::copy_rows_into(self, src, dst, spec)
    }

    fn place_rows(&self, src: &Storage, spec: &CopyRowsSpec) -> Result<Storage> {
        kernels::gather::place_rows(self, src, spec)
    }

    fn sum_axis(&self, x: &Storage, spec: &AxisSpec) -> Result<Storage> {
        kernels::reduce::sum_axis(self, x, spec)
    }

    fn broadcast_axis(&self, x: &Storage, spec: &AxisSpec) -> Result<Storage> {
        kernels::reduce::broadcast_axis(self, x, spec)
    }

    fn permute(&self, x: &Storage, shape: &[usize], perm: &[usize]) -> Result<Storage> {
        kernels::gather::permute(self, x, shape, perm)
    }

    fn mae_loss_rows(&self, pred: &Storage, target: &Storage, mask: &Storage, spec: &MaeLossSpec) -> Result<Storage> {
        kernels::loss::mae_loss_rows(self, pred, target, mask, spec)
    }

    fn mae_loss_mean(&self, row_loss: &Storage, mask: &Storage, spec: &MaeLossSpec) -> Result<(Storage, Storage)> {
        kernels::loss::mae_loss_mean(self, row_loss, mask, spec)
    }

    fn mae_loss_backward(
        &self,
        pred: &Storage,
        target: &Storage,
        mask: &Storage,
        dloss: &Storage,
        count: &Storage,
        spec: &MaeLossSpec,
    ) -> Result<Storage> {
        kernels::loss::mae_loss_backward(self, pred, target, mask, dloss, count, spec)
    }

    fn cross_entropy(
        &self,
        logits: &Storage,
        labels: &Indices,
        rows: usize,
        classes: usize,
    ) -> Result<(Storage, Storage)> {
        kernels::loss::cross_entropy(self, logits, labels, rows, classes)
    }

    fn cross_entropy_backward(
        &self,
        probs: &Storage,
        labels: &Indices,
        drow: &Storage,
        rows: usize,
        classes: usize,
    ) -> Result<Storage> {
        kernels::loss::cross_entropy_backward(self, probs, labels, drow, rows, classes)
    }

    fn adamw_step(
        &self,
        param: &Storage,
        grad: &Storage,
        m: &Storage,
        v: &Storage,
        len: usize,
        spec: &AdamWSpec,
    ) -> Result<()> {
        kernels::adamw::step(self, param, grad, m, v, len, spec)
    }

    fn adamw_step_packed(
        &self,
        param: &Storage,
        grad: &Storage,
        m: &Storage,
        v: &Storage,
        layout: &Indices,
        segments: usize,
        hyper: &Storage,
        spec: &AdamWSpec,
    ) -> Result<()> {
        kernels::adamw::step_packed(self, param, grad, m, v, layout, segments, hyper, spec)
    }

    fn copy_into(&self, src: &Storage, dst: &Storage, len: usize) -> Result<()> {
        let root = |s: &Storage| match s {
            Storage::Gpu(b) => Some(b.parent().map_or(Rc::as_ptr(b), Rc::as_ptr)),
            Storage::Cpu(_) => None,
        };
        if root(src) == root(dst) {
            return Err(Error::Invalid("copy_into: source and destination share one buffer".into()));
        }
        kernels::holds(src, len, "copy_into source")?;
        kernels::holds(dst, len, "copy_into destination")?;
        self.ctx.copy(&self.buf(src)?, &self.buf(dst)?, len as u64 * 4)
    }

    fn flush(&self) -> Result<()> {
        self.ctx.flush()
    }
}
