use crate::error::{Error, Result};
use crate::storage::Storage;
use crate::tensor::Tensor;

use super::same_device;

/// LayerNorm over the last axis with an affine `gamma`, `beta: [cols]`
/// (`nn.LayerNorm(dim, eps=1e-6)` in the official MAE).
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
    same_device("layer_norm", &[x, gamma, beta])?;
    let (rows, cols) = rows_cols("layer_norm", x, gamma, beta)?;
    let (y, mean, rstd) =
        x.device().backend().layernorm(x.storage(), gamma.storage(), beta.storage(), rows, cols, eps)?;
    Ok(record(x, gamma, beta, y, mean, rstd))
}

/// A residual add and the LayerNorm after it, as in a transformer block (`x = x + attn(..)` then
/// `norm2(x)`): returns `(s, layer_norm(s))` with `s = x + res`, computed in one pass (one kernel on
/// the GPU). Both outputs carry gradients; on the tape it is the add and the LayerNorm, as before.
pub fn add_layer_norm(x: &Tensor, res: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<(Tensor, Tensor)> {
    same_device("add_layer_norm", &[x, res, gamma, beta])?;
    if x.shape() != res.shape() {
        return Err(Error::Shape(format!(
            "add_layer_norm: x {:?} and the residual {:?} differ",
            x.shape(),
            res.shape()
        )));
    }
    let (rows, cols) = rows_cols("add_layer_norm", x, gamma, beta)?;
    let dev = x.device();
    let (s, y, mean, rstd) =
        dev.backend().add_layernorm(x.storage(), res.storage(), gamma.storage(), beta.storage(), rows, cols, eps)?;
    let s = Tensor::from_op(s, x.shape().to_vec(), &[x, res], |g| Ok(vec![Some(g.clone()), Some(g.clone())]));
    let y = record(&s, gamma, beta, y, mean, rstd);
    Ok((s, y))
}

/// `[rows, cols]` of a LayerNorm over the last axis of `x`, with `gamma`, `beta: [cols]` checked.
fn rows_cols(what: &str, x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<(usize, usize)> {
    if x.rank() == 0 {
        return Err(Error::Shape(format!("{what}: needs at least one axis")));
    }
    let cols = x.dim(-1);
    if gamma.shape() != [cols] || beta.shape() != [cols] {
        return Err(Error::Shape(format!(
            "{what}: x {:?} needs gamma and beta of shape [{cols}], got {:?} and {:?}",
            x.shape(),
            gamma.shape(),
            beta.shape()
        )));
    }
    Ok((x.numel() / cols.max(1), cols))
}

/// `y = layer_norm(x)` on the tape, its backward from the saved `mean` and `rstd`. The gradient
/// of `x` is added to what `x`'s other uses (a residual stream) gave it in the same kernel.
fn record(x: &Tensor, gamma: &Tensor, beta: &Tensor, y: Storage, mean: Storage, rstd: Storage) -> Tensor {
    let cols = gamma.numel();
    let rows = x.numel() / cols.max(1);
    let (sx, sg, sb) = (x.clone(), gamma.clone(), beta.clone());
    Tensor::from_op_accumulating(y, x.shape().to_vec(), &[x, gamma, beta], move |g, pending| {
        let dev = sx.device();
        let acc = pending.as_ref().map(Tensor::storage);
        // Where gamma's and beta's gradients may go (their packed gradient ranges, when an
        // optimizer set them) instead of fresh buffers.
        let homes = crate::tensor::take_grad_homes(&sg, &sb);
        let into = homes.as_ref().map(|[hg, hb]| [hg, hb]);
        let (dx, dgamma, dbeta) = dev.backend().layernorm_backward(
            sx.storage(),
            sg.storage(),
            &mean,
            &rstd,
            g.storage(),
            acc,
            rows,
            cols,
            into,
        )?;
        Ok(vec![
            Some(Tensor::constant(dx, sx.shape().to_vec())),
            Some(Tensor::constant(dgamma, vec![cols])),
            Some(Tensor::constant(dbeta, vec![cols])),
        ])
    })
}
