//! Differentiable ops: each checks its shapes, calls one or a few backend kernels, and records a
//! backward rule that is itself made of backend kernels. Nothing here knows which device it runs on.

mod attention;
mod elementwise;
mod gather;
mod layernorm;
mod loss;
mod matmul;
mod reduce;
mod shape;
mod softmax;

pub use attention::{attention, attention_qkv};
pub use elementwise::{add_scalar, binary, gelu, scale, sqrt, square};
pub use gather::{concat_tokens, gather_rows, gather_rows_with_fill, slice_tokens};
pub use layernorm::{add_layer_norm, layer_norm};
pub use loss::{cross_entropy, mae_loss};
pub use matmul::{linear, linear_gelu, matmul, matmul_ex, mlp};
pub use reduce::{broadcast_axis, mean, mean_axis, sum, sum_axis};
pub use shape::permute;
pub use softmax::softmax;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Fails unless every tensor lives on the same device as the first.
pub(crate) fn same_device(op: &str, ts: &[&Tensor]) -> Result<()> {
    let d = ts[0].device();
    for t in &ts[1..] {
        if t.device() != d {
            return Err(Error::Device(format!("{op}: tensors on {} and {}", d, t.device())));
        }
    }
    Ok(())
}
