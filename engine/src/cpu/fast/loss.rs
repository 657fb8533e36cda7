//! The MAE reconstruction loss per patch and its backward, in f32, threaded over patches; and the
//! softmax cross-entropy of a classifier's logits (the probe's and fine-tuning's loss).
//!
//! Per row (patch): the target as the loss sees it, `t`, or with `norm_pix` `(t - mean) / sqrt(var +
//! 1e-6)` with the unbiased variance (two passes over a row that sits in L1); then
//! `loss = mask * mean_p (pred - target)^2`; the loss is their sum over the mask's (`mae_loss_mean`),
//! and in the backward `dpred = (dloss / count) * mask * 2 (pred - target) / patch`.
//!
//! Cross-entropy per row of `logits: [N, C]`: `m = max_c x`, `e_c = exp(x_c - m)` (the fast f32
//! `exp` of `math.rs`, on non-positive inputs), `p_c = e_c / sum e`, and
//! `loss = ln(sum e) - (x_label - m)`, which keeps its relative accuracy as the loss goes to 0.
//! One pass of `exp` serves both outputs (the reference takes it twice, in f64). Not threaded: a
//! batch of the probe is 512 x 10 logits, ~5 us of work, less than waking a thread.

use crate::backend::{MaeLossSpec, NORM_PIX_EPS};
use crate::cpu::parallel::{self, Out, units};

use super::math::exp;
use super::simd::{self, Isa, multiversion};

/// Rows per unit of work, and the estimated cost per value (ns).
const ROWS_PER_UNIT: usize = 64;
const NS_PER_VALUE: f64 = 1.5;

/// `(mean, 1 / std)` of the normalised target of one patch (`(0, 1)` without `norm_pix`).
#[inline(always)]
fn target_norm(t: &[f32], norm_pix: bool) -> (f32, f32) {
    if !norm_pix {
        return (0.0, 1.0);
    }
    let n = t.len() as f32;
    let mean = simd::sum(t) / n;
    let var = simd::sum_by(t, |v| (v - mean) * (v - mean)) / (n - 1.0);
    (mean, 1.0 / (var + NORM_PIX_EPS).sqrt())
}

multiversion! {
    fn loss_rows<FMA>(pred: &[f32], target: &[f32], mask: &[f32], s: &MaeLossSpec, out: &mut [f32]) {
        let p = s.patch;
        let rows = pred.chunks_exact(p).zip(target.chunks_exact(p)).zip(mask);
        for (((pr, tr), &m), o) in rows.zip(out.iter_mut()) {
            let (mean, inv) = target_norm(tr, s.norm_pix);
            let sq = simd::sum_by2(pr, tr, |a, t| {
                let d = a - (t - mean) * inv;
                d * d
            });
            *o = sq / p as f32 * m;
        }
    }
}

/// `out[r] = mask[r] * mean_p (pred[r, p] - target'[r, p])^2`, `target'` normalised per patch when
/// `norm_pix`.
pub fn mae_loss_rows<'a>(pred: &[f32], target: &[f32], mask: &[f32], s: &MaeLossSpec, out: impl Out<'a>) {
    let n = s.rows * s.patch;
    assert!(pred.len() >= n && target.len() >= n && mask.len() >= s.rows, "mae_loss_rows: sizes");
    assert_eq!(out.len(), s.rows, "mae_loss_rows: output size");
    if s.patch == 0 {
        out.init().fill(f32::NAN);
        return;
    }
    let isa = Isa::current();
    let cost = NS_PER_VALUE * (ROWS_PER_UNIT * s.patch) as f64;
    parallel::for_each_chunk(out, ROWS_PER_UNIT, cost, |r0, out| {
        let (a, b) = (r0 * s.patch, (r0 + out.len()) * s.patch);
        loss_rows(isa, &pred[a..b], &target[a..b], &mask[r0..r0 + out.len()], s, out)
    });
}

/// `(sum(row_loss) / sum(mask), sum(mask))`: the loss (the mean over removed patches) and its
/// count, each sum in f32 in vector lanes.
pub fn mae_loss_mean(row_loss: &[f32], mask: &[f32], s: &MaeLossSpec) -> (f32, f32) {
    assert!(row_loss.len() >= s.rows && mask.len() >= s.rows, "mae_loss_mean: sizes");
    let count = simd::sum(&mask[..s.rows]);
    (simd::sum(&row_loss[..s.rows]) / count, count)
}

multiversion! {
    fn backward_rows<FMA>(
        pred: &[f32],
        target: &[f32],
        mask: &[f32],
        scale: f32,
        s: &MaeLossSpec,
        out: &mut [f32],
    ) {
        let p = s.patch;
        let rows = pred.chunks_exact(p).zip(target.chunks_exact(p)).zip(mask);
        for (((pr, tr), &m), o) in rows.zip(out.chunks_exact_mut(p)) {
            let (mean, inv) = target_norm(tr, s.norm_pix);
            let k = scale * m * 2.0 / p as f32;
            for ((o, &a), &t) in o.iter_mut().zip(pr).zip(tr) {
                *o = k * (a - (t - mean) * inv);
            }
        }
    }
}

/// `out[r, p] = scale * mask[r] * 2 (pred[r, p] - target'[r, p]) / patch`, `scale` each row
/// loss's gradient (the mean's over its count).
pub fn mae_loss_backward<'a>(
    pred: &[f32],
    target: &[f32],
    mask: &[f32],
    scale: f32,
    s: &MaeLossSpec,
    out: impl Out<'a>,
) {
    let n = s.rows * s.patch;
    assert!(pred.len() >= n && target.len() >= n, "mae_loss_backward: sizes");
    assert!(mask.len() >= s.rows, "mae_loss_backward: sizes");
    assert_eq!(out.len(), n, "mae_loss_backward: output size");
    if n == 0 {
        return;
    }
    let isa = Isa::current();
    let cost = NS_PER_VALUE * (ROWS_PER_UNIT * s.patch) as f64;
    parallel::for_each_units(
        s.rows.div_ceil(ROWS_PER_UNIT),
        cost,
        units(out, ROWS_PER_UNIT * s.patch),
        |range, out| {
            let r0 = range.start * ROWS_PER_UNIT;
            let r1 = (range.end * ROWS_PER_UNIT).min(s.rows);
            let (a, b) = (r0 * s.patch, r1 * s.patch);
            backward_rows(isa, &pred[a..b], &target[a..b], &mask[r0..r1], scale, s, out.data.init())
        },
    );
}

multiversion! {
    fn cross_entropy_part<FMA>(logits: &[f32], labels: &[u32], classes: usize, loss: &mut [f32], probs: &mut [f32]) {
        let rows = logits.chunks_exact(classes).zip(labels).zip(loss.iter_mut().zip(probs.chunks_exact_mut(classes)));
        for ((x, &label), (loss, p)) in rows {
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for (p, &v) in p.iter_mut().zip(x) {
                *p = exp::<FMA>(v - max);
                sum += *p;
            }
            let inv = 1.0 / sum;
            for p in p.iter_mut() {
                *p *= inv;
            }
            *loss = sum.ln() - (x[label as usize] - max);
        }
    }
}

/// `loss[r] = logsumexp(logits[r]) - logits[r, label[r]]` and `probs[r] = softmax(logits[r])`,
/// for `logits: [rows, classes]`; every label must be below `classes`.
pub fn cross_entropy<'a, 'b>(
    logits: &[f32],
    labels: &[u32],
    rows: usize,
    classes: usize,
    loss: impl Out<'a>,
    probs: impl Out<'b>,
) {
    assert!(logits.len() >= rows * classes && labels.len() >= rows, "cross_entropy: sizes");
    assert!(labels[..rows].iter().all(|&l| (l as usize) < classes), "cross_entropy: a label past the classes");
    assert!(loss.len() == rows && probs.len() == rows * classes, "cross_entropy: output sizes");
    let (loss, probs) = (loss.init(), probs.init());
    if classes == 0 {
        return;
    }
    cross_entropy_part(Isa::current(), &logits[..rows * classes], &labels[..rows], classes, loss, probs);
}
