//! Launcher for `shaders/adamw.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::{grid_1d, holds, key, u32_of};
use crate::backend::AdamWSpec;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::storage::Storage;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bias_correction1: f32,
    bias_correction2: f32,
    grad_scale: f32,
}

pub fn step(
    g: &Gpu,
    param: &Storage,
    grad: &Storage,
    m: &Storage,
    v: &Storage,
    len: usize,
    s: &AdamWSpec,
) -> Result<()> {
    for (buf, what) in [(param, "AdamW parameter"), (grad, "AdamW gradient"), (m, "AdamW m"), (v, "AdamW v")] {
        holds(buf, len, what)?;
    }
    let p = Params {
        n: u32_of(len, "parameter size")?,
        lr: s.lr,
        beta1: s.beta1,
        beta2: s.beta2,
        eps: s.eps,
        weight_decay: s.weight_decay,
        bias_correction1: s.bias_correction1,
        bias_correction2: s.bias_correction2,
        grad_scale: s.grad_scale,
    };
    g.ctx.dispatch(
        &key("adamw", "step"),
        bytemuck::bytes_of(&p),
        &[(1, g.buf(param)?), (2, g.buf(grad)?), (3, g.buf(m)?), (4, g.buf(v)?)],
        grid_1d(len, 256)?,
    )
}
