use crate::backend::AxisSpec;
use crate::error::{Error, Result};
use crate::tensor::{Tensor, numel};

/// The sum of all values, shape `[]`.
pub fn sum(x: &Tensor) -> Result<Tensor> {
    let n = x.numel();
    let spec = AxisSpec { outer: 1, axis: n, inner: 1 };
    let dev = x.device();
    let out = dev.backend().sum_axis(x.storage(), &spec)?;
    let shape = x.shape().to_vec();
    Ok(Tensor::from_op(out, vec![], &[x], move |g| {
        let dev = g.device();
        let dx = dev.backend().broadcast_axis(g.storage(), &spec)?;
        Ok(vec![Some(Tensor::constant(dx, shape.clone()))])
    }))
}

/// The mean of all values, shape `[]`.
pub fn mean(x: &Tensor) -> Result<Tensor> {
    if x.numel() == 0 {
        return Err(Error::Shape("mean of an empty tensor".into()));
    }
    sum(x)?.scale(1.0 / x.numel() as f32)
}

/// Sum over `axis`, which disappears from the shape.
pub fn sum_axis(x: &Tensor, axis: usize) -> Result<Tensor> {
    if axis >= x.rank() {
        return Err(Error::Shape(format!("sum_axis: axis {axis} of {:?}", x.shape())));
    }
    let s = x.shape();
    let spec = AxisSpec { outer: numel(&s[..axis]), axis: s[axis], inner: numel(&s[axis + 1..]) };
    let mut out_shape = s.to_vec();
    out_shape.remove(axis);
    let dev = x.device();
    let out = dev.backend().sum_axis(x.storage(), &spec)?;
    let shape = s.to_vec();
    Ok(Tensor::from_op(out, out_shape, &[x], move |g| {
        let dev = g.device();
        let dx = dev.backend().broadcast_axis(g.storage(), &spec)?;
        Ok(vec![Some(Tensor::constant(dx, shape.clone()))])
    }))
}

/// `x` repeated `len` times along a new axis inserted at `axis` (`[.., n_axis-1, n_axis, ..] ->
/// [.., len, n_axis, ..]`): the adjoint of `sum_axis`, and its backward is that sum. One pass that
/// writes the copies (PyTorch's `expand` + `repeat` materialised).
pub fn broadcast_axis(x: &Tensor, axis: usize, len: usize) -> Result<Tensor> {
    if axis > x.rank() {
        return Err(Error::Shape(format!("broadcast_axis: a new axis {axis} of {:?}", x.shape())));
    }
    let s = x.shape();
    let spec = AxisSpec { outer: numel(&s[..axis]), axis: len, inner: numel(&s[axis..]) };
    let mut out_shape = s.to_vec();
    out_shape.insert(axis, len);
    let dev = x.device();
    let out = dev.backend().broadcast_axis(x.storage(), &spec)?;
    let shape = s.to_vec();
    Ok(Tensor::from_op(out, out_shape, &[x], move |g| {
        let dev = g.device();
        let dx = dev.backend().sum_axis(g.storage(), &spec)?;
        Ok(vec![Some(Tensor::constant(dx, shape.clone()))])
    }))
}

/// Mean over `axis`, which disappears from the shape.
pub fn mean_axis(x: &Tensor, axis: usize) -> Result<Tensor> {
    let len = *x.shape().get(axis).ok_or_else(|| Error::Shape(format!("mean_axis: axis {axis} of {:?}", x.shape())))?;
    if len == 0 {
        return Err(Error::Shape("mean over an empty axis".into()));
    }
    sum_axis(x, axis)?.scale(1.0 / len as f32)
}
