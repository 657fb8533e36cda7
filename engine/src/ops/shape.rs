use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Reorder axes: `out.shape[i] = x.shape[perm[i]]` (a real copy; rank at most 6).
pub fn permute(x: &Tensor, perm: &[usize]) -> Result<Tensor> {
    let r = x.rank();
    let mut seen = vec![false; r];
    let valid = perm.len() == r && perm.iter().all(|&p| p < r && !std::mem::replace(&mut seen[p], true));
    if !valid || r > 6 {
        return Err(Error::Shape(format!(
            "permute: {perm:?} is not a permutation of the axes of {:?} (rank <= 6)",
            x.shape()
        )));
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return x.reshape(&out_shape);
    }
    let dev = x.device();
    let out = dev.backend().permute(x.storage(), x.shape(), perm)?;
    let mut inverse = vec![0; r];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p] = i;
    }
    Ok(Tensor::from_op(out, out_shape, &[x], move |g| Ok(vec![Some(permute(g, &inverse)?)])))
}
