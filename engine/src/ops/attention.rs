use crate::backend::AttentionSpec;
use crate::error::{Error, Result};
use crate::tensor::{Tensor, numel};

use super::same_device;

/// Multi-head scaled-dot-product self-attention as one op:
/// `q, k, v: [.., seq, dim]` (e.g. `[N, heads, L, head_dim]`), `out = softmax(q k^T / sqrt(dim)) v`.
/// The forward keeps only the per-row log-sum-exp; the backward recomputes the probabilities.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    same_device("attention", &[q, k, v])?;
    if q.rank() < 2 || q.shape() != k.shape() || q.shape() != v.shape() {
        return Err(Error::Shape(format!(
            "attention: q, k, v must share one shape [.., seq, dim]; got {:?}, {:?}, {:?}",
            q.shape(),
            k.shape(),
            v.shape()
        )));
    }
    let (seq, dim) = (q.dim(-2), q.dim(-1));
    let heads = numel(&q.shape()[..q.rank() - 2]);
    let spec = AttentionSpec { heads, seq, dim, scale: 1.0 / (dim as f32).sqrt() };
    let dev = q.device();
    let (out, lse) = dev.backend().attention(q.storage(), k.storage(), v.storage(), &spec)?;
    let shape = q.shape().to_vec();
    let out_saved = Tensor::constant(out.clone(), shape.clone());
    let (sq, sk, sv) = (q.clone(), k.clone(), v.clone());
    Ok(Tensor::from_op(out, shape.clone(), &[q, k, v], move |g| {
        let dev = sq.device();
        let (dq, dk, dv) = dev.backend().attention_backward(
            sq.storage(),
            sk.storage(),
            sv.storage(),
            out_saved.storage(),
            &lse,
            g.storage(),
            &spec,
        )?;
        Ok(vec![
            Some(Tensor::constant(dq, shape.clone())),
            Some(Tensor::constant(dk, shape.clone())),
            Some(Tensor::constant(dv, shape.clone())),
        ])
    }))
}
