use crate::backend::{AxisSpec, BinaryOp, UnaryOp};
use crate::error::{Error, Result};
use crate::storage::Storage;
use crate::tensor::Tensor;

use super::same_device;

/// `x (op) y` with `y` broadcast over the leading axes of `x`: `y`'s shape must be a suffix of
/// `x`'s (a bias row `[D]` against `[N, L, D]`, a table `[L, D]` against `[N, L, D]`) or `y` a single
/// value. The result has `x`'s shape.
pub fn binary(op: BinaryOp, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    same_device("binary", &[x, y])?;
    let (nx, ny) = (x.numel(), y.numel());
    let fits = x.shape().ends_with(y.shape()) || ny == 1;
    if !fits || ny == 0 && nx != 0 {
        return Err(Error::Shape(format!(
            "{op:?}: {:?} cannot broadcast over {:?} (it must be a trailing part of the shape, or one value)",
            y.shape(),
            x.shape()
        )));
    }
    let dev = x.device();
    let out = dev.backend().binary(op, x.storage(), y.storage(), nx, ny)?;
    let (sx, sy) = (x.clone(), y.clone());
    // Only the quotient's backward needs the output; do not keep it alive otherwise.
    let out_t = (op == BinaryOp::Div).then(|| Tensor::constant(out.clone(), x.shape().to_vec()));
    Ok(Tensor::from_op(out, x.shape().to_vec(), &[x, y], move |g| {
        let dev = sx.device();
        let be = dev.backend();
        let gs = g.storage();
        let dx = if sx.requires_grad() {
            let st = match op {
                // Gradients are never written in place, so the incoming one can be shared.
                BinaryOp::Add | BinaryOp::Sub => gs.clone(),
                BinaryOp::Mul => be.binary(BinaryOp::Mul, gs, sy.storage(), nx, ny)?,
                BinaryOp::Div => be.binary(BinaryOp::Div, gs, sy.storage(), nx, ny)?,
            };
            Some(Tensor::constant(st, sx.shape().to_vec()))
        } else {
            None
        };
        let dy = if sy.requires_grad() {
            // The per-element gradient with respect to the broadcast y, then summed over the repeats.
            let per: Storage = match op {
                BinaryOp::Add => gs.clone(),
                BinaryOp::Sub => be.unary(UnaryOp::Scale(-1.0), gs, nx)?,
                BinaryOp::Mul => be.binary(BinaryOp::Mul, gs, sx.storage(), nx, nx)?,
                BinaryOp::Div => {
                    let out = out_t.as_ref().expect("saved for Div");
                    let t = be.binary(BinaryOp::Mul, gs, out.storage(), nx, nx)?;
                    let t = be.binary(BinaryOp::Div, &t, sy.storage(), nx, ny)?;
                    be.unary(UnaryOp::Scale(-1.0), &t, nx)?
                }
            };
            let st = if ny == nx { per } else { be.sum_axis(&per, &AxisSpec { outer: 1, axis: nx / ny, inner: ny })? };
            Some(Tensor::constant(st, sy.shape().to_vec()))
        } else {
            None
        };
        Ok(vec![dx, dy])
    }))
}

fn unary(op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    let dev = x.device();
    let n = x.numel();
    let out = dev.backend().unary(op, x.storage(), n)?;
    let sx = x.clone();
    let out_t = (op == UnaryOp::Sqrt).then(|| Tensor::constant(out.clone(), x.shape().to_vec()));
    Ok(Tensor::from_op(out, x.shape().to_vec(), &[x], move |g| {
        let dev = sx.device();
        let be = dev.backend();
        let gs = g.storage();
        let st = match op {
            UnaryOp::Scale(s) => be.unary(UnaryOp::Scale(s), gs, n)?,
            UnaryOp::AddScalar(_) => gs.clone(),
            UnaryOp::Gelu => be.gelu_backward(sx.storage(), gs, n)?,
            UnaryOp::Square => {
                let t = be.binary(BinaryOp::Mul, gs, sx.storage(), n, n)?;
                be.unary(UnaryOp::Scale(2.0), &t, n)?
            }
            UnaryOp::Sqrt => {
                let out = out_t.as_ref().expect("saved for Sqrt");
                let t = be.binary(BinaryOp::Div, gs, out.storage(), n, n)?;
                be.unary(UnaryOp::Scale(0.5), &t, n)?
            }
        };
        Ok(vec![Some(Tensor::constant(st, sx.shape().to_vec()))])
    }))
}

/// `s * x`.
pub fn scale(x: &Tensor, s: f32) -> Result<Tensor> {
    unary(UnaryOp::Scale(s), x)
}

/// `x + s`.
pub fn add_scalar(x: &Tensor, s: f32) -> Result<Tensor> {
    unary(UnaryOp::AddScalar(s), x)
}

/// Exact GELU, `0.5 x (1 + erf(x / sqrt 2))`, as `nn.GELU()` in the official MAE.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    unary(UnaryOp::Gelu, x)
}

/// `x * x`.
pub fn square(x: &Tensor) -> Result<Tensor> {
    unary(UnaryOp::Square, x)
}

/// `sqrt(x)`, element-wise.
pub fn sqrt(x: &Tensor) -> Result<Tensor> {
    unary(UnaryOp::Sqrt, x)
}
