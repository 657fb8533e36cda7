//! Launchers for `shaders/elementwise.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::{grid_1d, holds, key, u32_of};
use crate::backend::{BinaryOp, UnaryOp};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::storage::Storage;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    n_y: u32,
    op: u32,
    s: f32,
}

pub fn fill(g: &Gpu, len: usize, value: f32) -> Result<Storage> {
    let out = g.alloc(len)?;
    let p = Params { n: u32_of(len, "fill length")?, n_y: 1, op: 0, s: value };
    g.ctx.dispatch(&key("elementwise", "fill"), bytemuck::bytes_of(&p), &[(3, g.buf(&out)?)], grid_1d(len, 256)?)?;
    Ok(out)
}

pub fn binary(g: &Gpu, op: BinaryOp, x: &Storage, y: &Storage, len_x: usize, len_y: usize) -> Result<Storage> {
    holds(x, len_x, "binary x")?;
    holds(y, if len_x > 0 { len_y.max(1) } else { 0 }, "binary y")?;
    let out = g.alloc(len_x)?;
    let p = Params {
        n: u32_of(len_x, "binary length")?,
        n_y: u32_of(len_y.max(1), "binary length")?,
        op: op.code(),
        s: 0.0,
    };
    g.ctx.dispatch(
        &key("elementwise", "binary"),
        bytemuck::bytes_of(&p),
        &[(1, g.buf(x)?), (2, g.buf(y)?), (3, g.buf(&out)?)],
        grid_1d(len_x, 256)?,
    )?;
    Ok(out)
}

pub fn unary(g: &Gpu, op: UnaryOp, x: &Storage, len: usize) -> Result<Storage> {
    holds(x, len, "unary x")?;
    let out = g.alloc(len)?;
    let (code, s) = match op {
        UnaryOp::Scale(s) => (0, s),
        UnaryOp::AddScalar(s) => (1, s),
        UnaryOp::Gelu => (2, 0.0),
        UnaryOp::Square => (3, 0.0),
        UnaryOp::Sqrt => (4, 0.0),
    };
    let p = Params { n: u32_of(len, "unary length")?, n_y: 1, op: code, s };
    g.ctx.dispatch(
        &key("elementwise", "unary"),
        bytemuck::bytes_of(&p),
        &[(1, g.buf(x)?), (3, g.buf(&out)?)],
        grid_1d(len, 256)?,
    )?;
    Ok(out)
}

pub fn gelu_backward(g: &Gpu, x: &Storage, dy: &Storage, len: usize) -> Result<Storage> {
    holds(x, len, "gelu_backward x")?;
    holds(dy, len, "gelu_backward dy")?;
    let out = g.alloc(len)?;
    let p = Params { n: u32_of(len, "gelu length")?, n_y: 1, op: 0, s: 0.0 };
    g.ctx.dispatch(
        &key("elementwise", "gelu_backward"),
        bytemuck::bytes_of(&p),
        &[(1, g.buf(x)?), (2, g.buf(dy)?), (3, g.buf(&out)?)],
        grid_1d(len, 256)?,
    )?;
    Ok(out)
}
