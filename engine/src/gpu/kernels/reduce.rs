//! Launchers for `shaders/reduce.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::{grid_1d, grid_groups, holds, key, u32_of};
use crate::backend::AxisSpec;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::storage::Storage;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct Params {
    outer: u32,
    axis: u32,
    inner: u32,
    n: u32,
    chunk: u32,
    chunks: u32,
}

/// Split a long axis when fewer than this many workgroups would run.
const MIN_GROUPS: usize = 128;
/// Axis rows per slice when it is split.
const CHUNK: usize = 256;

fn params(s: &AxisSpec, chunk: usize) -> Result<Params> {
    Ok(Params {
        outer: u32_of(s.outer, "outer")?,
        axis: u32_of(s.axis, "axis")?,
        inner: u32_of(s.inner, "inner")?,
        n: u32_of(s.outer * s.axis * s.inner, "size")?,
        chunk: u32_of(chunk.max(1), "chunk")?,
        chunks: u32_of(s.axis.div_ceil(chunk.max(1)).max(1), "chunks")?,
    })
}

/// One pass of sums over slices of `chunk` rows: `[outer, axis, inner] -> [outer, chunks, inner]`.
fn sum_pass(g: &Gpu, x: &Storage, s: &AxisSpec, chunk: usize, into: Option<&Storage>) -> Result<Storage> {
    holds(x, s.outer * s.axis * s.inner, "sum_axis input")?;
    let p = params(s, chunk)?;
    let slices = s.outer * p.chunks as usize;
    let out = match into {
        Some(out) => {
            holds(out, slices * s.inner, "sum_axis output")?;
            out.clone()
        }
        None => g.alloc(slices * s.inner)?,
    };
    let bufs = [(1, g.buf(x)?), (3, g.buf(&out)?)];
    if s.inner == 1 {
        g.ctx.dispatch(&key("reduce", "sum_rows"), bytemuck::bytes_of(&p), &bufs, grid_groups(slices)?)?;
    } else {
        let [y, z, _] = grid_groups(slices)?;
        let groups = [u32_of(s.inner.div_ceil(64), "column blocks")?, y, z];
        g.ctx.dispatch(&key("reduce", "sum_cols"), bytemuck::bytes_of(&p), &bufs, groups)?;
    }
    Ok(out)
}

/// `[outer, axis, inner] -> [outer, inner]`, in two passes when the axis is long and outputs few.
pub fn sum_axis(g: &Gpu, x: &Storage, s: &AxisSpec) -> Result<Storage> {
    sum_axis_into(g, x, s, None)
}

/// `sum_axis` written into `into` (its first `outer inner` values) when given, which it returns.
pub fn sum_axis_into(g: &Gpu, x: &Storage, s: &AxisSpec, into: Option<&Storage>) -> Result<Storage> {
    let groups = s.outer * s.inner.div_ceil(64).max(1);
    if s.axis > 2 * CHUNK && groups < MIN_GROUPS {
        let partial = sum_pass(g, x, s, CHUNK, None)?;
        let chunks = s.axis.div_ceil(CHUNK);
        return sum_pass(g, &partial, &AxisSpec { outer: s.outer, axis: chunks, inner: s.inner }, chunks, into);
    }
    sum_pass(g, x, s, s.axis.max(1), into)
}

pub fn broadcast_axis(g: &Gpu, x: &Storage, s: &AxisSpec) -> Result<Storage> {
    let n = s.outer * s.axis * s.inner;
    holds(x, s.outer * s.inner, "broadcast_axis input")?;
    let out = g.alloc(n)?;
    let p = params(s, 1)?;
    g.ctx.dispatch(
        &key("reduce", "broadcast_axis"),
        bytemuck::bytes_of(&p),
        &[(1, g.buf(x)?), (3, g.buf(&out)?)],
        grid_1d(n, 256)?,
    )?;
    Ok(out)
}

pub fn softmax(g: &Gpu, x: &Storage, rows: usize, cols: usize) -> Result<Storage> {
    holds(x, rows * cols, "softmax input")?;
    let out = g.alloc(rows * cols)?;
    let p = params(&AxisSpec { outer: rows, axis: 1, inner: cols }, 1)?;
    g.ctx.dispatch(
        &key("reduce", "softmax"),
        bytemuck::bytes_of(&p),
        &[(1, g.buf(x)?), (3, g.buf(&out)?)],
        grid_groups(rows)?,
    )?;
    Ok(out)
}

pub fn softmax_backward(g: &Gpu, y: &Storage, dy: &Storage, rows: usize, cols: usize) -> Result<Storage> {
    holds(y, rows * cols, "softmax_backward y")?;
    holds(dy, rows * cols, "softmax_backward dy")?;
    let out = g.alloc(rows * cols)?;
    let p = params(&AxisSpec { outer: rows, axis: 1, inner: cols }, 1)?;
    g.ctx.dispatch(
        &key("reduce", "softmax_backward"),
        bytemuck::bytes_of(&p),
        &[(1, g.buf(y)?), (2, g.buf(dy)?), (3, g.buf(&out)?)],
        grid_groups(rows)?,
    )?;
    Ok(out)
}
