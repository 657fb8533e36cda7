//! Launchers for `shaders/loss.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::{grid_1d, grid_groups, holds, key, u32_of};
use crate::backend::MaeLossSpec;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::indices::Indices;
use crate::storage::Storage;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    norm_pix: u32,
    n: u32,
}

fn params(rows: usize, cols: usize, norm_pix: bool) -> Result<Params> {
    Ok(Params {
        rows: u32_of(rows, "rows")?,
        cols: u32_of(cols, "cols")?,
        norm_pix: norm_pix as u32,
        n: u32_of(rows * cols, "size")?,
    })
}

/// The sizes the shader's in-bounds proof rests on (its header's `Bounds:` line).
fn check(buffers: &[(&Storage, usize, &str)]) -> Result<()> {
    buffers.iter().try_for_each(|&(buf, n, what)| holds(buf, n, what))
}

pub fn mae_loss_rows(g: &Gpu, pred: &Storage, target: &Storage, mask: &Storage, s: &MaeLossSpec) -> Result<Storage> {
    let n = s.rows * s.patch;
    check(&[(pred, n, "mae loss pred"), (target, n, "mae loss target"), (mask, s.rows, "mae loss mask")])?;
    let out = g.alloc(s.rows)?;
    g.ctx.dispatch(
        &key("loss", "mae_loss_rows"),
        bytemuck::bytes_of(&params(s.rows, s.patch, s.norm_pix)?),
        &[(1, g.buf(pred)?), (2, g.buf(target)?), (3, g.buf(mask)?), (6, g.buf(&out)?)],
        grid_groups(s.rows)?,
    )?;
    Ok(out)
}

/// The loss and the count of masked rows, `([1], [1])`, in one workgroup.
pub fn mae_loss_mean(g: &Gpu, row_loss: &Storage, mask: &Storage, s: &MaeLossSpec) -> Result<(Storage, Storage)> {
    check(&[(row_loss, s.rows, "mae loss row losses"), (mask, s.rows, "mae loss mask")])?;
    let (loss, count) = (g.alloc(1)?, g.alloc(1)?);
    g.ctx.dispatch(
        &key("loss", "mae_loss_mean"),
        bytemuck::bytes_of(&params(s.rows, 1, false)?),
        &[(1, g.buf(row_loss)?), (3, g.buf(mask)?), (6, g.buf(&loss)?), (7, g.buf(&count)?)],
        [1, 1, 1],
    )?;
    Ok((loss, count))
}

pub fn mae_loss_backward(
    g: &Gpu,
    pred: &Storage,
    target: &Storage,
    mask: &Storage,
    dloss: &Storage,
    count: &Storage,
    s: &MaeLossSpec,
) -> Result<Storage> {
    let n = s.rows * s.patch;
    check(&[
        (pred, n, "mae loss pred"),
        (target, n, "mae loss target"),
        (mask, s.rows, "mae loss mask"),
        (dloss, 1, "mae loss gradient"),
        (count, 1, "mae loss count"),
    ])?;
    let out = g.alloc(s.rows * s.patch)?;
    g.ctx.dispatch(
        &key("loss", "mae_loss_backward"),
        bytemuck::bytes_of(&params(s.rows, s.patch, s.norm_pix)?),
        &[
            (1, g.buf(pred)?),
            (2, g.buf(target)?),
            (3, g.buf(mask)?),
            (4, g.buf(dloss)?),
            (6, g.buf(&out)?),
            (8, g.buf(count)?),
        ],
        grid_groups(s.rows)?,
    )?;
    Ok(out)
}

pub fn cross_entropy(
    g: &Gpu,
    logits: &Storage,
    labels: &Indices,
    rows: usize,
    classes: usize,
) -> Result<(Storage, Storage)> {
    check(&[(logits, rows * classes, "cross-entropy logits")])?;
    check_labels(labels, rows, classes)?;
    let (probs, loss) = (g.alloc(rows * classes)?, g.alloc(rows)?);
    let lb = g.indices(labels)?;
    g.ctx.dispatch(
        &key("loss", "cross_entropy"),
        bytemuck::bytes_of(&params(rows, classes, false)?),
        &[(1, g.buf(logits)?), (5, lb.binding()), (6, g.buf(&probs)?), (7, g.buf(&loss)?)],
        grid_groups(rows)?,
    )?;
    Ok((loss, probs))
}

pub fn cross_entropy_backward(
    g: &Gpu,
    probs: &Storage,
    labels: &Indices,
    drow: &Storage,
    rows: usize,
    classes: usize,
) -> Result<Storage> {
    check(&[(probs, rows * classes, "cross-entropy probabilities"), (drow, rows, "cross-entropy row gradient")])?;
    check_labels(labels, rows, classes)?;
    let out = g.alloc(rows * classes)?;
    let lb = g.indices(labels)?;
    g.ctx.dispatch(
        &key("loss", "cross_entropy_backward"),
        bytemuck::bytes_of(&params(rows, classes, false)?),
        &[(1, g.buf(probs)?), (4, g.buf(drow)?), (5, lb.binding()), (6, g.buf(&out)?)],
        grid_1d(rows * classes, 256)?,
    )?;
    Ok(out)
}

/// One label per row, each a class.
fn check_labels(labels: &Indices, rows: usize, classes: usize) -> Result<()> {
    if labels.len() < rows {
        return Err(crate::error::Error::Shape(format!("{} labels for {rows} rows", labels.len())));
    }
    labels.check_below(classes, "cross-entropy labels")
}
