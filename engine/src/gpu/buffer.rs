//! A tensor's storage on the GPU: a pooled `wgpu::Buffer` of f32 values that goes back to the pool
//! when the last handle to it is dropped.

use std::sync::Arc;

use super::context::GpuContext;

pub struct GpuBuffer {
    buf: Option<wgpu::Buffer>,
    len: usize,
    ctx: Arc<GpuContext>,
}

impl GpuBuffer {
    pub(crate) fn new(buf: wgpu::Buffer, len: usize, ctx: Arc<GpuContext>) -> Self {
        GpuBuffer { buf: Some(buf), len, ctx }
    }

    pub fn raw(&self) -> &wgpu::Buffer {
        self.buf.as_ref().expect("buffer present until drop")
    }

    /// Number of f32 values.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

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
