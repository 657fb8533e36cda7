//! A tensor's storage on the GPU: a pooled `wgpu::Buffer` of f32 values that goes back to the pool
//! when the last handle to it is dropped.

use std::sync::Arc;

use super::context::GpuContext;

/// A GPU storage buffer of f32 values; it goes back to its context's pool when dropped.
pub struct GpuBuffer {
    buf: Option<wgpu::Buffer>,
    len: usize,
    ctx: Arc<GpuContext>,
}

impl GpuBuffer {
    pub(crate) fn new(buf: wgpu::Buffer, len: usize, ctx: Arc<GpuContext>) -> Self {
        GpuBuffer { buf: Some(buf), len, ctx }
    }

    /// The underlying wgpu buffer.
    pub fn raw(&self) -> &wgpu::Buffer {
        self.buf.as_ref().expect("buffer present until drop")
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
        if let Some(b) = self.buf.take() {
            self.ctx.release(b);
        }
    }
}
