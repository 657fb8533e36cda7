use crate::backend::{CopyRowsSpec, GatherSpec};
use crate::error::{Error, Result};
use crate::indices::Indices;
use crate::tensor::Tensor;

use super::same_device;

/// The masked patch gather: `x: [N, T, D]`, `idx: [N, S]`, `out[n, i, :] = x[n, idx[n, i], :]`.
/// Its backward scatter-adds the gradient rows back to where they came from.
pub fn gather_rows(x: &Tensor, idx: &Indices) -> Result<Tensor> {
    gather(x, None, idx, "gather_rows")
}

/// `gather_rows` with one more row to pick, shared by every sample: `fill: [D]` stands at row `T`,
/// so `out[n, i, :] = x[n, idx[n, i], :]` where `idx[n, i] < T` and `fill` where it equals `T`. It
/// assembles MAE's token sequences in one pass: the encoder's (cls token, then the visible patches
/// by `ids_keep`) and the decoder's (its cls token, then the unshuffle by `ids_restore`, mask
/// tokens in the removed places), where slices, repeats, concatenations and a gather moved each
/// row several times. The fill's gradient is the sum of the rows that picked it.
pub fn gather_rows_with_fill(x: &Tensor, fill: &Tensor, idx: &Indices) -> Result<Tensor> {
    same_device("gather_rows_with_fill", &[x, fill])?;
    gather(x, Some(fill), idx, "gather_rows_with_fill")
}

fn gather(x: &Tensor, fill: Option<&Tensor>, idx: &Indices, op: &str) -> Result<Tensor> {
    if x.rank() != 3 || idx.shape().len() != 2 || idx.shape()[0] != x.dim(0) {
        return Err(Error::Shape(format!(
            "{op}: x must be [N, T, D] and idx [N, S]; got {:?} and {:?}",
            x.shape(),
            idx.shape()
        )));
    }
    let spec = GatherSpec { batch: x.dim(0), rows: x.dim(1), picks: idx.shape()[1], width: x.dim(2) };
    if let Some(f) = fill.filter(|f| f.numel() != spec.width || f.rank() == 0) {
        return Err(Error::Shape(format!(
            "{op}: the fill must be one row of x's width, [{}]; got {:?}",
            spec.width,
            f.shape()
        )));
    }
    idx.check_below(spec.rows + usize::from(fill.is_some()), op)?;
    let dev = x.device();
    let out = dev.backend().gather_rows(x.storage(), fill.map(|f| f.storage()), idx, &spec)?;
    let (sx, sfill, sidx) = (x.clone(), fill.cloned(), idx.clone());
    let inputs: Vec<&Tensor> = std::iter::once(x).chain(fill).collect();
    Ok(Tensor::from_op(out, vec![spec.batch, spec.picks, spec.width], &inputs, move |g| {
        let dev = sx.device();
        let be = dev.backend();
        let dx = if sx.requires_grad() { Some(be.scatter_add_rows(g.storage(), &sidx, &spec)?) } else { None };
        let mut grads = vec![dx.map(|dx| Tensor::constant(dx, sx.shape().to_vec()))];
        if let Some(f) = sfill {
            let df = if f.requires_grad() { Some(be.sum_fill_rows(g.storage(), &sidx, &spec)?) } else { None };
            grads.push(df.map(|df| Tensor::constant(df, f.shape().to_vec())));
        }
        Ok(grads)
    }))
}

fn copy_spec(batch: usize, rows: usize, width: usize, src: (usize, usize), dst: (usize, usize)) -> CopyRowsSpec {
    CopyRowsSpec { batch, rows, width, src_rows: src.0, src_offset: src.1, dst_rows: dst.0, dst_offset: dst.1 }
}

/// Concatenate `[N, T_i, D]` tensors along the token axis.
pub fn concat_tokens(parts: &[&Tensor]) -> Result<Tensor> {
    let Some(first) = parts.first() else {
        return Err(Error::Shape("concat_tokens: nothing to concatenate".into()));
    };
    same_device("concat_tokens", parts)?;
    let (n, d) = (first.dim(0), first.dim(-1));
    for p in parts {
        if p.rank() != 3 || p.dim(0) != n || p.dim(2) != d {
            let shapes: Vec<_> = parts.iter().map(|p| p.shape().to_vec()).collect();
            return Err(Error::Shape(format!(
                "concat_tokens: parts must be [N, T_i, D] with one N and D; got {shapes:?}"
            )));
        }
    }
    let lens: Vec<usize> = parts.iter().map(|p| p.dim(1)).collect();
    let total: usize = lens.iter().sum();
    let dev = first.device();
    let be = dev.backend();
    // The parts cover every row of the output (and of each part's gradient below): no fill.
    let out = be.empty(n * total * d)?;
    let mut offset = 0;
    for (p, &len) in parts.iter().zip(&lens) {
        if len * n * d > 0 {
            be.copy_rows_into(p.storage(), &out, &copy_spec(n, len, d, (len, 0), (total, offset)))?;
        }
        offset += len;
    }
    let dev2 = dev.clone();
    Ok(Tensor::from_op(out, vec![n, total, d], parts, move |g| {
        let be = dev2.backend();
        let mut grads = Vec::with_capacity(lens.len());
        let mut offset = 0;
        for &len in &lens {
            let part = be.empty(n * len * d)?;
            if len * n * d > 0 {
                be.copy_rows_into(g.storage(), &part, &copy_spec(n, len, d, (total, offset), (len, 0)))?;
            }
            grads.push(Some(Tensor::constant(part, vec![n, len, d])));
            offset += len;
        }
        Ok(grads)
    }))
}

/// `x[:, start..start + len, :]` of `x: [N, T, D]`.
pub fn slice_tokens(x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    if x.rank() != 3 || start + len > x.dim(1) {
        return Err(Error::Shape(format!("slice_tokens: rows {start}..{} of {:?}", start + len, x.shape())));
    }
    let (n, t, d) = (x.dim(0), x.dim(1), x.dim(2));
    let dev = x.device();
    let be = dev.backend();
    let out = be.empty(n * len * d)?;
    if n * len * d > 0 {
        be.copy_rows_into(x.storage(), &out, &copy_spec(n, len, d, (t, start), (len, 0)))?;
    }
    Ok(Tensor::from_op(out, vec![n, len, d], &[x], move |g| {
        // The slice's rows back in place, zeros outside them.
        let dx = dev.backend().place_rows(g.storage(), &copy_spec(n, len, d, (len, 0), (t, start)))?;
        Ok(vec![Some(Tensor::constant(dx, vec![n, t, d]))])
    }))
}
