use crate::error::{Error, Result};
use crate::tensor::Tensor;

use super::same_device;

/// LayerNorm over the last axis with an affine `gamma`, `beta: [cols]`
/// (`nn.LayerNorm(dim, eps=1e-6)` in the official MAE).
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
    same_device("layer_norm", &[x, gamma, beta])?;
    if x.rank() == 0 {
        return Err(Error::Shape("layer_norm: needs at least one axis".into()));
    }
    let cols = x.dim(-1);
    if gamma.shape() != [cols] || beta.shape() != [cols] {
        return Err(Error::Shape(format!(
            "layer_norm: x {:?} needs gamma and beta of shape [{cols}], got {:?} and {:?}",
            x.shape(),
            gamma.shape(),
            beta.shape()
        )));
    }
    let rows = x.numel() / cols.max(1);
    let dev = x.device();
    let (y, mean, rstd) = dev.backend().layernorm(x.storage(), gamma.storage(), beta.storage(), rows, cols, eps)?;
    let (sx, sg) = (x.clone(), gamma.clone());
    Ok(Tensor::from_op(y, x.shape().to_vec(), &[x, gamma, beta], move |g| {
        let dev = sx.device();
        let (dx, dgamma, dbeta) =
            dev.backend().layernorm_backward(sx.storage(), sg.storage(), &mean, &rstd, g.storage(), rows, cols)?;
        Ok(vec![
            Some(Tensor::constant(dx, sx.shape().to_vec())),
            Some(Tensor::constant(dgamma, vec![cols])),
            Some(Tensor::constant(dbeta, vec![cols])),
        ])
    }))
}
