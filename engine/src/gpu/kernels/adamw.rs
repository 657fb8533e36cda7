//! Launcher for `shaders/adamw.wgsl`: one tensor (`step`) or every packed parameter at once
//! (`step_packed`).

use bytemuck::{Pod, Zeroable};

use super::{grid_1d, grid_groups, holds, key, u32_of};
use crate::backend::{ADAMW_CHUNK, AdamWSpec, packed_adamw_segments};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::indices::Indices;
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

fn params(n: u32, s: &AdamWSpec) -> Params {
    Params {
        n,
        lr: s.lr,
        beta1: s.beta1,
        beta2: s.beta2,
        eps: s.eps,
        weight_decay: s.weight_decay,
        bias_correction1: s.bias_correction1,
        bias_correction2: s.bias_correction2,
        grad_scale: s.grad_scale,
    }
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
    let p = params(u32_of(len, "parameter size")?, s);
    g.ctx.dispatch(
        &key("adamw", "step"),
        bytemuck::bytes_of(&p),
        &[(1, g.buf(param)?), (2, g.buf(grad)?), (3, g.buf(m)?), (4, g.buf(v)?)],
        grid_1d(len, 256)?,
    )
}

#[allow(clippy::too_many_arguments)]
pub fn step_packed(
    g: &Gpu,
    param: &Storage,
    grad: &Storage,
    m: &Storage,
    v: &Storage,
    layout: &Indices,
    segments: usize,
    hyper: &Storage,
    s: &AdamWSpec,
) -> Result<()> {
    let lens = [(param.len(), "parameter"), (grad.len(), "gradient"), (m.len(), "m"), (v.len(), "v")];
    let segments = packed_adamw_segments(layout, segments, hyper.len(), &lens)?;
    let Some(&(_, len, first)) = segments.last() else { return Ok(()) };
    for &(n, what) in &lens {
        u32_of(n, what)?;
    }
    let chunks = first + len.div_ceil(ADAMW_CHUNK);
    let table = g.indices(layout)?;
    let p = params(u32_of(segments.len(), "segments")?, s);
    g.ctx.dispatch(
        &key("adamw", "step_packed"),
        bytemuck::bytes_of(&p),
        &[
            (1, g.buf(param)?),
            (2, g.buf(grad)?),
            (3, g.buf(m)?),
            (4, g.buf(v)?),
            (5, table.binding()),
            (6, g.buf(hyper)?),
        ],
        grid_groups(chunks)?,
    )
}
