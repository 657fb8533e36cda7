//! Launcher for `shaders/attention.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::{grid_1d, grid_groups, u32_of};
use crate::backend::AttentionSpec;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::gpu::context::PipelineKey;
use crate::storage::Storage;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    heads: u32,
    seq: u32,
    dim: u32,
    scale: f32,
}

/// The kernel keeps one query's row in registers of at most this many values.
pub const MAX_HEAD_DIM: usize = 128;
const QUERIES_PER_GROUP: usize = 64;
const TILE_ROWS: usize = 16;

fn setup(g: &Gpu, s: &AttentionSpec) -> Result<(Params, [u32; 3])> {
    if s.dim == 0 || s.dim > MAX_HEAD_DIM {
        return Err(Error::Gpu(format!(
            "attention: head dim {} is outside the GPU kernel's 1..={MAX_HEAD_DIM}; \
             use more heads (a smaller width per head)",
            s.dim
        )));
    }
    let shared = (2 * TILE_ROWS * s.dim + 2 * TILE_ROWS) * 4;
    let limit = g.ctx.limits.max_compute_workgroup_storage_size as usize;
    if shared > limit {
        return Err(Error::Gpu(format!(
            "attention: head dim {} needs {shared} bytes of workgroup memory, the device offers {limit} \
             (max_compute_workgroup_storage_size); use more heads",
            s.dim
        )));
    }
    let p = Params { heads: u32_of(s.heads, "heads")?, seq: u32_of(s.seq, "seq")?, dim: s.dim as u32, scale: s.scale };
    let [y, z, _] = grid_groups(s.heads)?;
    Ok((p, [u32_of(s.seq.div_ceil(QUERIES_PER_GROUP), "query blocks")?, y, z]))
}

fn key(entry: &'static str, dim: usize) -> PipelineKey {
    PipelineKey { shader: "attention", entry, constants: vec![("HEAD_DIM", dim as u32)] }
}

pub fn forward(g: &Gpu, q: &Storage, k: &Storage, v: &Storage, s: &AttentionSpec) -> Result<(Storage, Storage)> {
    let n = s.heads * s.seq * s.dim;
    let (out, lse) = (g.alloc(n)?, g.alloc(s.heads * s.seq)?);
    if n == 0 {
        return Ok((out, lse));
    }
    let (p, groups) = setup(g, s)?;
    g.ctx.dispatch(
        &key("forward", s.dim),
        bytemuck::bytes_of(&p),
        &[(1, g.buf(q)?), (2, g.buf(k)?), (3, g.buf(v)?), (4, g.buf(&out)?), (5, g.buf(&lse)?)],
        groups,
    )?;
    Ok((out, lse))
}

#[allow(clippy::too_many_arguments)]
pub fn backward(
    g: &Gpu,
    q: &Storage,
    k: &Storage,
    v: &Storage,
    out: &Storage,
    lse: &Storage,
    dout: &Storage,
    s: &AttentionSpec,
) -> Result<(Storage, Storage, Storage)> {
    let n = s.heads * s.seq * s.dim;
    let (dq, dk, dv) = (g.alloc(n)?, g.alloc(n)?, g.alloc(n)?);
    if n == 0 {
        return Ok((dq, dk, dv));
    }
    let (p, groups) = setup(g, s)?;
    let params = bytemuck::bytes_of(&p);
    let delta = g.alloc(s.heads * s.seq)?;
    g.ctx.dispatch(
        &key("backward_prep", s.dim),
        params,
        &[(4, g.buf(out)?), (6, g.buf(dout)?), (7, g.buf(&delta)?)],
        grid_1d(s.heads * s.seq, 64)?,
    )?;
    g.ctx.dispatch(
        &key("backward_dq", s.dim),
        params,
        &[
            (1, g.buf(q)?),
            (2, g.buf(k)?),
            (3, g.buf(v)?),
            (5, g.buf(lse)?),
            (6, g.buf(dout)?),
            (7, g.buf(&delta)?),
            (8, g.buf(&dq)?),
        ],
        groups,
    )?;
    g.ctx.dispatch(
        &key("backward_dkdv", s.dim),
        params,
        &[
            (1, g.buf(q)?),
            (2, g.buf(k)?),
            (3, g.buf(v)?),
            (5, g.buf(lse)?),
            (6, g.buf(dout)?),
            (7, g.buf(&delta)?),
            (9, g.buf(&dk)?),
            (10, g.buf(&dv)?),
        ],
        groups,
    )?;
    Ok((dq, dk, dv))
}
