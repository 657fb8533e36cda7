//! A tensor's storage on the GPU: a pooled `wgpu::Buffer` of f32 values that goes back to the pool
//! when the last handle to it is dropped, or a *view*: a range of another such buffer (the packed
//! parameters, `Gpu::alloc_packed`), which keeps its parent alive and binds at its offset.

use std::rc::Rc;
use std::sync::Arc;

use super::context::GpuContext;

/// A GPU storage buffer of f32 values; it goes back to its context's pool when dropped.
pub struct GpuBuffer {
    buf: Option<wgpu::Buffer>,
    len: usize,
    ctx: Arc<GpuContext>,
    /// For a view: the buffer it is a range of, and where the range starts, in bytes.
    parent: Option<Rc<GpuBuffer>>,
    offset: u64,
}

impl GpuBuffer {
    pub(crate) fn new(buf: wgpu::Buffer, len: usize, ctx: Arc<GpuContext>) -> Self {
        GpuBuffer { buf: Some(buf), len, ctx, parent: None, offset: 0 }
    }

    /// `len` values of `parent` from value `start` on. `start` must keep the view's byte offset a
    /// multiple of the device's storage-offset alignment (256 bytes at most, by the WebGPU spec).
    pub(crate) fn view(parent: &Rc<GpuBuffer>, start: usize, len: usize) -> Self {
        assert!(parent.parent.is_none(), "a view of a view");
        assert!(start + len.max(4) <= parent.len.max(4), "a view past the end of its buffer");
        GpuBuffer {
            buf: parent.buf.clone(),
            len,
            ctx: parent.ctx.clone(),
            parent: Some(parent.clone()),
            offset: start as u64 * 4,
        }
    }

    /// The underlying wgpu buffer (for a view, its parent's: see `offset`).
    pub fn raw(&self) -> &wgpu::Buffer {
        self.buf.as_ref().expect("buffer present until drop")
    }

    /// Where the values start in `raw()`, in bytes (0 unless a view).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The buffer's values as a binding: the whole buffer, or a view's range. At least 16 bytes, so
    /// any storage can be bound as an array of vec4 (`alloc` makes every buffer that large, and
    /// packed views are spaced at least that far apart).
    pub fn binding(&self) -> wgpu::BufferBinding<'_> {
        match self.parent {
            None => self.raw().as_entire_buffer_binding(),
            Some(_) => wgpu::BufferBinding {
                buffer: self.raw(),
                offset: self.offset,
                size: wgpu::BufferSize::new(self.len.max(4) as u64 * 4),
            },
        }
    }

    /// The buffer this is a view of, if it is one.
    pub fn parent(&self) -> Option<&Rc<GpuBuffer>> {
        self.parent.as_ref()
    }

    /// Number of f32 values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when it holds no values.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The context that owns the buffer.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        // A view's wgpu handle is a clone of its parent's, which goes back to the pool with it.
        if let (Some(b), None) = (self.buf.take(), &self.parent) {
            self.ctx.release(b);
        }
    }
}
