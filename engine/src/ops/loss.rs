use crate::backend::MaeLossSpec;
use crate::error::{Error, Result};
use crate::indices::Indices;
use crate::tensor::Tensor;

use super::same_device;

/// The MAE loss (`forward_loss` in the official code): `pred, target: [N, L, P]`, `mask: [N, L]`
/// (1 = removed). Per patch, the mean squared error against the target, normalised per patch when
/// `norm_pix` (mean and unbiased variance, `+ 1e-6`); then the mean over removed patches only.
/// Gradients flow to `pred` alone. When no patch is masked the loss is 0/0; callers that train a
/// plain autoencoder pass a mask of ones.
pub fn mae_loss(pred: &Tensor, target: &Tensor, mask: &Tensor, norm_pix: bool) -> Result<Tensor> {
    same_device("mae_loss", &[pred, target, mask])?;
    if pred.rank() != 3 || pred.shape() != target.shape() || mask.shape() != &pred.shape()[..2] {
        return Err(Error::Shape(format!(
            "mae_loss: pred and target must be [N, L, P] and mask [N, L]; got {:?}, {:?}, {:?}",
            pred.shape(),
            target.shape(),
            mask.shape()
        )));
    }
    let spec = MaeLossSpec { rows: pred.dim(0) * pred.dim(1), patch: pred.dim(2), norm_pix };
    if norm_pix && spec.patch < 2 {
        return Err(Error::Shape("mae_loss: norm_pix needs at least two values per patch".into()));
    }
    // Two kernels forward (the per-patch losses, then their mean over the mask in one workgroup)
    // and one back, where the op-by-op mean (two sums, a division) took six more dispatches.
    let dev = pred.device();
    let be = dev.backend();
    let rows = be.mae_loss_rows(pred.storage(), target.storage(), mask.storage(), &spec)?;
    let (loss, count) = be.mae_loss_mean(&rows, mask.storage(), &spec)?;
    let (sp, st, sm) = (pred.clone(), target.detach(), mask.detach());
    Ok(Tensor::from_op(loss, vec![], &[pred], move |g| {
        let dev = sp.device();
        let d =
            dev.backend().mae_loss_backward(sp.storage(), st.storage(), sm.storage(), g.storage(), &count, &spec)?;
        Ok(vec![Some(Tensor::constant(d, sp.shape().to_vec()))])
    }))
}

/// Mean softmax cross-entropy of `logits: [N, C]` against class `labels: [N]`.
pub fn cross_entropy(logits: &Tensor, labels: &Indices) -> Result<Tensor> {
    if logits.rank() != 2 || labels.shape() != [logits.dim(0)] {
        return Err(Error::Shape(format!(
            "cross_entropy: logits must be [N, C] and labels [N]; got {:?} and {:?}",
            logits.shape(),
            labels.shape()
        )));
    }
    let (rows, classes) = (logits.dim(0), logits.dim(1));
    labels.check_below(classes, "cross_entropy labels")?;
    let dev = logits.device();
    let (loss_rows, probs) = dev.backend().cross_entropy(logits.storage(), labels, rows, classes)?;
    let (sl, labels) = (logits.clone(), labels.clone());
    let row_loss = Tensor::from_op(loss_rows, vec![rows], &[logits], move |g| {
        let dev = sl.device();
        let d = dev.backend().cross_entropy_backward(&probs, &labels, g.storage(), rows, classes)?;
        Ok(vec![Some(Tensor::constant(d, vec![rows, classes]))])
    });
    row_loss.mean()
}
