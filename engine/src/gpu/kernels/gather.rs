//! Launchers for `shaders/gather.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::{grid_1d, holds, key, u32_of};
use crate::backend::{AxisSpec, CopyRowsSpec, GatherSpec};
use crate::cpu::reference::strides;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::indices::Indices;
use crate::storage::Storage;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct Params {
    batch: u32,
    rows: u32,
    picks: u32,
    width: u32,
    n: u32,
    src_rows: u32,
    src_offset: u32,
    dst_rows: u32,
    dst_offset: u32,
    copy_rows: u32,
    rank: u32,
    chunk: u32,
    shape: [u32; 8],
    stride: [u32; 8],
}

fn gather_params(s: &GatherSpec, n: usize) -> Result<Params> {
    Ok(Params {
        batch: u32_of(s.batch, "batch")?,
        rows: u32_of(s.rows, "rows")?,
        picks: u32_of(s.picks, "picks")?,
        width: u32_of(s.width, "width")?,
        n: u32_of(n, "size")?,
        ..Default::default()
    })
}

/// Picks per slice of `sum_fill_rows`' first pass (the second sums the slices).
const FILL_CHUNK: usize = 64;

/// What the gathers' and scatters' in-bounds proof rests on: `idx` holds `batch x picks` indices,
/// each below `rows` (or at most `rows`, the fill's pick, when `fill`), and `rows_in x width` values
/// per sample fit u32.
fn check_gather(idx: &Indices, s: &GatherSpec, fill: bool) -> Result<()> {
    if idx.len() < s.batch * s.picks {
        return Err(Error::Shape(format!("{} indices where {} x {} are needed", idx.len(), s.batch, s.picks)));
    }
    idx.check_below(s.rows + usize::from(fill), "gather index")?;
    u32_of(s.batch * s.rows.max(s.picks) * s.width, "gather size")?;
    Ok(())
}

pub fn gather_rows(g: &Gpu, x: &Storage, fill: Option<&Storage>, idx: &Indices, s: &GatherSpec) -> Result<Storage> {
    check_gather(idx, s, fill.is_some())?;
    holds(x, s.batch * s.rows * s.width, "gather_rows x")?;
    if let Some(f) = fill {
        holds(f, s.width, "gather_rows fill")?;
    }
    let n = s.batch * s.picks * s.width;
    let out = g.alloc(n)?;
    let ib = g.indices(idx)?;
    g.ctx.dispatch(
        &key("gather", "gather_rows"),
        bytemuck::bytes_of(&gather_params(s, n)?),
        // Without a fill no pick equals rows, and x stands in at the fill's binding.
        &[(1, g.buf(x)?), (2, ib.binding()), (3, g.buf(&out)?), (4, g.buf(fill.unwrap_or(x))?)],
        grid_1d(n, 256)?,
    )?;
    Ok(out)
}

/// `gather_rows`' backward for x. Where no sample picks a row twice (MAE's masks), a gather by the
/// inverse table (`scatter_rows`: one read per value); else each value compares every pick
/// (`scatter_add_rows`). A fill's picks (at rows) are left out by both.
pub fn scatter_add_rows(g: &Gpu, dy: &Storage, idx: &Indices, s: &GatherSpec) -> Result<Storage> {
    check_gather(idx, s, true)?;
    holds(dy, s.batch * s.picks * s.width, "scatter_add_rows dy")?;
    let n = s.batch * s.rows * s.width;
    let out = g.alloc(n)?;
    let (entry, ib) = match idx.inverse_rows(s.batch, s.picks, s.rows) {
        // The table holds batch x rows entries, each a pick below picks or NOT_PICKED, by
        // construction (the kernel's proof rests on that).
        Some(inverse) => ("scatter_rows", g.indices(&inverse)?),
        None => ("scatter_add_rows", g.indices(idx)?),
    };
    g.ctx.dispatch(
        &key("gather", entry),
        bytemuck::bytes_of(&gather_params(s, n)?),
        &[(1, g.buf(dy)?), (2, ib.binding()), (3, g.buf(&out)?)],
        grid_1d(n, 256)?,
    )?;
    Ok(out)
}

/// `gather_rows`' backward for its fill row: sums of slices of `FILL_CHUNK` picks
/// (`sum_fill_rows`), then the sum of the slices (reduce.wgsl).
pub fn sum_fill_rows(g: &Gpu, dy: &Storage, idx: &Indices, s: &GatherSpec) -> Result<Storage> {
    check_gather(idx, s, true)?;
    holds(dy, s.batch * s.picks * s.width, "sum_fill_rows dy")?;
    let slices = (s.batch * s.picks).div_ceil(FILL_CHUNK).max(1);
    let n = slices * s.width;
    if n == 0 {
        return g.alloc(0);
    }
    let partial = g.alloc(n)?;
    let p = Params { chunk: u32_of(FILL_CHUNK, "chunk")?, ..gather_params(s, n)? };
    g.ctx.dispatch(
        &key("gather", "sum_fill_rows"),
        bytemuck::bytes_of(&p),
        &[(1, g.buf(dy)?), (2, g.indices(idx)?.binding()), (3, g.buf(&partial)?)],
        grid_1d(n, 256)?,
    )?;
    super::reduce::sum_axis(g, &partial, &AxisSpec { outer: 1, axis: slices, inner: s.width })
}

pub fn copy_rows_into(g: &Gpu, src: &Storage, dst: &Storage, s: &CopyRowsSpec) -> Result<()> {
    let n = s.batch * s.rows * s.width;
    g.ctx.dispatch(
        &key("gather", "copy_rows"),
        bytemuck::bytes_of(&rows_params(src, dst, s, n)?),
        &[(1, g.buf(src)?), (3, g.buf(dst)?)],
        grid_1d(n, 256)?,
    )
}

/// A new `[batch, dst_rows, width]`: `src`'s rows placed as `copy_rows_into` places them, zeros in
/// the others, each value written once (`place_rows`: one invocation per destination value).
pub fn place_rows(g: &Gpu, src: &Storage, s: &CopyRowsSpec) -> Result<Storage> {
    let n = s.batch * s.dst_rows * s.width;
    if s.batch * s.rows * s.width == 0 {
        // Nothing to place (the kernel's copy_rows is at least 1).
        return crate::backend::Backend::full(g, n, 0.0);
    }
    let dst = g.alloc(n)?;
    g.ctx.dispatch(
        &key("gather", "place_rows"),
        bytemuck::bytes_of(&rows_params(src, &dst, s, n)?),
        &[(1, g.buf(src)?), (3, g.buf(&dst)?)],
        grid_1d(n, 256)?,
    )?;
    Ok(dst)
}

/// The parameters of copy_rows and place_rows (`n` invocations), after the checks their in-bounds
/// proof rests on: the copied rows inside each side's rows, each buffer that long, all of it in u32.
fn rows_params(src: &Storage, dst: &Storage, s: &CopyRowsSpec, n: usize) -> Result<Params> {
    if s.src_offset + s.rows > s.src_rows || s.dst_offset + s.rows > s.dst_rows {
        return Err(Error::Shape(format!("copy_rows_into: {s:?} reads or writes past a sample's rows")));
    }
    holds(src, s.batch * s.src_rows * s.width, "copy_rows_into source")?;
    holds(dst, s.batch * s.dst_rows * s.width, "copy_rows_into destination")?;
    u32_of(s.batch * s.src_rows.max(s.dst_rows) * s.width, "copy size")?;
    Ok(Params {
        batch: u32_of(s.batch, "batch")?,
        width: u32_of(s.width, "width")?,
        n: u32_of(n, "size")?,
        src_rows: u32_of(s.src_rows, "rows")?,
        src_offset: u32_of(s.src_offset, "offset")?,
        dst_rows: u32_of(s.dst_rows, "rows")?,
        dst_offset: u32_of(s.dst_offset, "offset")?,
        copy_rows: u32_of(s.rows.max(1), "rows")?,
        ..Default::default()
    })
}

pub fn permute(g: &Gpu, x: &Storage, shape: &[usize], perm: &[usize]) -> Result<Storage> {
    if shape.len() > 8 {
        return Err(Error::Shape(format!("permute: rank {} is above the kernel's 8", shape.len())));
    }
    let n: usize = shape.iter().product();
    let mut sorted = perm.to_vec();
    sorted.sort_unstable();
    if perm.len() != shape.len() || sorted.iter().enumerate().any(|(i, &a)| i != a) {
        return Err(Error::Shape(format!("permute: {perm:?} is not a permutation of the {} axes", shape.len())));
    }
    holds(x, n, "permute input")?;
    let out = g.alloc(n)?;
    let in_strides = strides(shape);
    let mut p = Params { n: u32_of(n, "size")?, rank: shape.len() as u32, ..Default::default() };
    for (a, &src_axis) in perm.iter().enumerate() {
        p.shape[a] = u32_of(shape[src_axis], "axis")?;
        p.stride[a] = u32_of(in_strides[src_axis], "stride")?;
    }
    g.ctx.dispatch(
        &key("gather", "permute"),
        bytemuck::bytes_of(&p),
        &[(1, g.buf(x)?), (3, g.buf(&out)?)],
        grid_1d(n, 256)?,
    )?;
    Ok(out)
}
