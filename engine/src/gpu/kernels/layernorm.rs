//! Launchers for `shaders/layernorm.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::{grid_groups, holds, key, u32_of};
use crate::backend::{AxisSpec, GradHomes};
use crate::error::Result;
use std::rc::Rc;

use crate::gpu::{Gpu, GpuBuffer, PACK_ALIGN};
use crate::storage::Storage;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    chunk: u32,
    chunks: u32,
    /// dgamma's and dbeta's partial rows start this far apart (cols rounded up to `PACK_ALIGN`
    /// values, so that dbeta's half binds at its offset, as far as `pack` puts beta past gamma).
    cols_pad: u32,
}

/// Rows per workgroup in the parameter-gradient pass.
const CHUNK: usize = 64;

/// The sizes the shader's in-bounds proof rests on (its header's `Bounds:` line): each `(buffer,
/// values)` holds at least that many, and every index fits u32.
fn check(rows: usize, cols: usize, buffers: &[(&Storage, usize, &str)]) -> Result<()> {
    u32_of(rows * cols, "layernorm rows x cols")?;
    for &(buf, n, what) in buffers {
        holds(buf, n, what)?;
    }
    Ok(())
}

fn params(rows: usize, cols: usize, eps: f32) -> Result<Params> {
    Ok(Params {
        rows: u32_of(rows, "rows")?,
        cols: u32_of(cols, "cols")?,
        eps,
        chunk: CHUNK as u32,
        chunks: u32_of(rows.div_ceil(CHUNK).max(1), "chunks")?,
        cols_pad: u32_of(cols.next_multiple_of(PACK_ALIGN), "cols")?,
    })
}

pub fn forward(
    g: &Gpu,
    x: &Storage,
    gamma: &Storage,
    beta: &Storage,
    rows: usize,
    cols: usize,
    eps: f32,
) -> Result<(Storage, Storage, Storage)> {
    let (_, y, mean, rstd) = launch_forward(g, x, None, gamma, beta, rows, cols, eps)?;
    Ok((y, mean, rstd))
}

#[allow(clippy::too_many_arguments)]
pub fn add_forward(
    g: &Gpu,
    x: &Storage,
    res: &Storage,
    gamma: &Storage,
    beta: &Storage,
    rows: usize,
    cols: usize,
    eps: f32,
) -> Result<(Storage, Storage, Storage, Storage)> {
    let (s, y, mean, rstd) = launch_forward(g, x, Some(res), gamma, beta, rows, cols, eps)?;
    Ok((s.expect("the sum of an add_forward"), y, mean, rstd))
}

/// `forward`, or with a residual `add_forward`, which also returns `s = x + res`.
#[allow(clippy::too_many_arguments)]
fn launch_forward(
    g: &Gpu,
    x: &Storage,
    res: Option<&Storage>,
    gamma: &Storage,
    beta: &Storage,
    rows: usize,
    cols: usize,
    eps: f32,
) -> Result<(Option<Storage>, Storage, Storage, Storage)> {
    let mut inputs =
        vec![(x, rows * cols, "layernorm x"), (gamma, cols, "layernorm gamma"), (beta, cols, "layernorm beta")];
    inputs.extend(res.map(|r| (r, rows * cols, "layernorm residual")));
    check(rows, cols, &inputs)?;
    let (y, mean, rstd) = (g.alloc(rows * cols)?, g.alloc(rows)?, g.alloc(rows)?);
    let s = res.map(|_| g.alloc(rows * cols)).transpose()?;
    let mut bindings = vec![
        (1, g.buf(x)?),
        (2, g.buf(gamma)?),
        (3, g.buf(beta)?),
        (4, g.buf(&y)?),
        (5, g.buf(&mean)?),
        (6, g.buf(&rstd)?),
    ];
    if let (Some(res), Some(s)) = (res, &s) {
        bindings.extend([(11, g.buf(res)?), (12, g.buf(s)?)]);
    }
    let entry = if res.is_some() { "add_forward" } else { "forward" };
    g.ctx.dispatch(
        &key("layernorm", entry),
        bytemuck::bytes_of(&params(rows, cols, eps)?),
        &bindings,
        grid_groups(rows)?,
    )?;
    Ok((s, y, mean, rstd))
}

#[allow(clippy::too_many_arguments)]
pub fn backward(
    g: &Gpu,
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
    check(
        rows,
        cols,
        &[
            (x, rows * cols, "layernorm x"),
            (dy, rows * cols, "layernorm dy"),
            (gamma, cols, "layernorm gamma"),
            (mean, rows, "layernorm mean"),
            (rstd, rows, "layernorm rstd"),
        ],
    )?;
    let p = params(rows, cols, 0.0)?;
    let dx = g.alloc(rows * cols)?;
    let (chunks, cols_pad) = (p.chunks as usize, p.cols_pad as usize);
    u32_of(chunks * 2 * cols_pad, "partial sums")?;
    let partial = g.alloc(chunks * 2 * cols_pad)?;
    let mut bindings = vec![
        (1, g.buf(x)?),
        (2, g.buf(gamma)?),
        (5, g.buf(mean)?),
        (6, g.buf(rstd)?),
        (7, g.buf(dy)?),
        (8, g.buf(&dx)?),
        (9, g.buf(&partial)?),
    ];
    if let Some(acc) = acc {
        holds(acc, rows * cols, "layernorm backward: accumulated gradient")?;
        bindings.push((11, g.buf(acc)?));
    }
    // dx (4 rows a workgroup) and the parameters' partial sums (a block of 64 columns and a chunk
    // of rows a workgroup) in one dispatch: they read the same inputs and write apart.
    let groups = rows.div_ceil(4) + cols_pad / 64 * chunks;
    let entry = if acc.is_some() { "backward_acc" } else { "backward" };
    g.ctx.dispatch(&key("layernorm", entry), bytemuck::bytes_of(&p), &bindings, grid_groups(groups)?)?;
    // Both parameter gradients in one reduction pass, into gamma's and beta's gradient homes when
    // they lie as the two halves do, else a fresh buffer and a view of each half.
    let over_chunks = AxisSpec { outer: 1, axis: chunks, inner: 2 * cols_pad };
    if let Some((span, [gamma_home, beta_home])) = homes_span(into, cols, cols_pad) {
        super::reduce::sum_axis_into(g, &partial, &over_chunks, Some(&span))?;
        return Ok((dx, gamma_home.clone(), beta_home.clone()));
    }
    let Storage::Gpu(sums) = &super::reduce::sum_axis(g, &partial, &over_chunks)? else {
        unreachable!("a GPU kernel's output lives on the GPU")
    };
    let half = |start| Storage::Gpu(Rc::new(GpuBuffer::view(sums, start, cols)));
    let (dgamma, dbeta) = (half(0), half(cols_pad));
    Ok((dx, dgamma, dbeta))
}

/// One view over gamma's and beta's gradient homes when they lie as the parameter-gradient pass
/// writes its two halves: `cols` values each in one buffer, beta's `cols_pad` past gamma's (as
/// `pack` lays out a LayerNorm's parameters). The pass writes zeros between them.
fn homes_span<'a>(into: GradHomes<'a>, cols: usize, cols_pad: usize) -> Option<(Storage, [&'a Storage; 2])> {
    let homes @ [Storage::Gpu(gamma), Storage::Gpu(beta)] = into? else { return None };
    let parent = gamma.parent()?;
    let start = gamma.offset() as usize / 4;
    let fits = beta.parent().is_some_and(|p| Rc::ptr_eq(p, parent))
        && gamma.len() == cols
        && beta.len() == cols
        && beta.offset() as usize == 4 * (start + cols_pad)
        && start + 2 * cols_pad <= parent.len();
    fits.then(|| (Storage::Gpu(Rc::new(GpuBuffer::view(parent, start, 2 * cols_pad))), homes))
}
