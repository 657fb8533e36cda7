use crate::backend::AttentionSpec;
use crate::error::{Error, Result};
use crate::tensor::{Tensor, numel};

use super::same_device;

/// Multi-head scaled-dot-product self-attention as one op:
/// `q, k, v: [.., seq, dim]` (e.g. `[N, heads, L, head_dim]`), `out = softmax(q k^T / sqrt(dim)) v`.
/// The forward keeps only the per-row log-sum-exp; the backward recomputes the probabilities.
///
/// The model calls [`attention_qkv`], which reads q, k and v straight out of the fused projection;
/// this form on separate tensors is kept as its readable counterpart: the tests compose it with the
/// reshapes, permutations and slices that `attention_qkv` avoids and check that both give the same
/// values and gradients (`engine/tests/gradients.rs`, `gpu_kernels.rs`).
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

/// Multi-head self-attention straight from the fused qkv projection: `qkv: [N, T, 3 * D]` (viewed
/// as `[N, T, 3, H, D / H]`, the official `qkv.reshape(B, N, 3, H, hd)`) to the merged heads
/// `[N, T, D]` that the output projection takes. The same result as reshaping, permuting and
/// slicing into `attention`, without those copies forward or backward.
pub fn attention_qkv(qkv: &Tensor, num_heads: usize) -> Result<Tensor> {
    if qkv.rank() != 3 || num_heads == 0 || !qkv.dim(2).is_multiple_of(3 * num_heads) {
        return Err(Error::Shape(format!(
            "attention_qkv: qkv must be [N, T, 3 * D] with D divisible by {num_heads} heads; got {:?}",
            qkv.shape()
        )));
    }
    let (n, seq, d) = (qkv.dim(0), qkv.dim(1), qkv.dim(2) / 3);
    let dim = d / num_heads;
    let spec = AttentionSpec { heads: n * num_heads, seq, dim, scale: 1.0 / (dim as f32).sqrt() };
    let dev = qkv.device();
    let (out, lse) = dev.backend().attention_qkv(qkv.storage(), num_heads, &spec)?;
    let out_saved = Tensor::constant(out.clone(), vec![n, seq, d]);
    let sqkv = qkv.clone();
    Ok(Tensor::from_op(out, vec![n, seq, d], &[qkv], move |g| {
        let dev = sqkv.device();
        let dqkv = dev.backend().attention_qkv_backward(
            sqkv.storage(),
            out_saved.storage(),
            &lse,
            g.storage(),
            num_heads,
            &spec,
        )?;
        Ok(vec![Some(Tensor::constant(dqkv, sqkv.shape().to_vec()))])
    }))
}
