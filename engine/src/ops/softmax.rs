use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Softmax over the last axis.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    if x.rank() == 0 {
        return Err(Error::Shape("softmax: needs at least one axis".into()));
    }
    let cols = x.dim(-1);
    let rows = x.numel() / cols.max(1);
    let dev = x.device();
    let y = dev.backend().softmax(x.storage(), rows, cols)?;
    let y_saved = Tensor::constant(y.clone(), x.shape().to_vec());
    Ok(Tensor::from_op(y, x.shape().to_vec(), &[x], move |g| {
        let dev = y_saved.device();
        let dx = dev.backend().softmax_backward(y_saved.storage(), g.storage(), rows, cols)?;
        Ok(vec![Some(Tensor::constant(dx, y_saved.shape().to_vec()))])
    }))
}
