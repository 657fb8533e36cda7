//! LayerNorm over the last axis of `[rows, cols]`, forward and backward, in f32, threaded over rows.
//!
//! Forward, per row: the mean, then the biased variance as the mean of `(x - mean)^2` (two passes
//! over a row that sits in L1, so no cancellation of `E[x^2] - E[x]^2`), `rstd = 1 / sqrt(var +
//! eps)`, `y = (x - mean) rstd gamma + beta`.
//!
//! Backward, per row, with `xhat = (x - mean) rstd` and `g = dy gamma`:
//! `dx = rstd (g - mean(g) - xhat mean(g xhat))`; and over rows `dgamma = sum dy xhat`,
//! `dbeta = sum dy`, accumulated per block of `reduce::ROW_BLOCK` rows into partial rows that are
//! then added pairwise in a fixed order (see `reduce.rs`): deterministic for any thread count.

use crate::cpu::parallel::{self, Out, units};

use super::reduce::{ROW_BLOCK, add_up_blocks};
use super::simd::{self, Isa, madd, multiversion};

/// Estimated cost per value (ns), forward and backward.
const NS_FORWARD: f64 = 1.0;
const NS_BACKWARD: f64 = 2.0;

/// One row: `y = (x - mean) rstd gamma + beta`; returns `(mean, rstd)`.
#[inline(always)]
fn normalize_row<const FMA: bool>(xr: &[f32], gamma: &[f32], beta: &[f32], eps: f32, yr: &mut [f32]) -> (f32, f32) {
    let cols = gamma.len();
    let mu = simd::sum(xr) / cols as f32;
    let var = simd::sum_by(xr, |v| (v - mu) * (v - mu)) / cols as f32;
    let rs = 1.0 / (var + eps).sqrt();
    for (((o, &v), &g), &b) in yr.iter_mut().zip(xr).zip(gamma).zip(beta) {
        *o = madd::<FMA>((v - mu) * rs, g, b);
    }
    (mu, rs)
}

multiversion! {
    fn forward_rows<FMA>(
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
        y: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
    ) {
        let cols = gamma.len();
        let (gamma, beta) = (&gamma[..cols], &beta[..cols]);
        let rows = x.chunks_exact(cols).zip(y.chunks_exact_mut(cols));
        for ((xr, yr), (m, r)) in rows.zip(mean.iter_mut().zip(rstd.iter_mut())) {
            (*m, *r) = normalize_row::<FMA>(xr, gamma, beta, eps, yr);
        }
    }
}

multiversion! {
    /// `s = x + res` row by row, each row normalised right after it is written (while in L1).
    fn add_forward_rows<FMA>(
        x: &[f32],
        res: &[f32],
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
        s: &mut [f32],
        y: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
    ) {
        let cols = gamma.len();
        let (gamma, beta) = (&gamma[..cols], &beta[..cols]);
        let inputs = x.chunks_exact(cols).zip(res.chunks_exact(cols));
        let outputs = s.chunks_exact_mut(cols).zip(y.chunks_exact_mut(cols));
        for (((xr, rr), (sr, yr)), (m, r)) in inputs.zip(outputs).zip(mean.iter_mut().zip(rstd.iter_mut())) {
            for ((o, &a), &b) in sr.iter_mut().zip(xr).zip(rr) {
                *o = a + b;
            }
            (*m, *r) = normalize_row::<FMA>(sr, gamma, beta, eps, yr);
        }
    }
}

/// The residual add and the LayerNorm after it in one pass: writes `s = x + res` and `y`, `mean`,
/// `rstd` of `s` (bit-identical to the add, then `layernorm` of its result).
#[allow(clippy::too_many_arguments)]
pub fn add_layernorm<'a>(
    x: &[f32],
    res: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    s: impl Out<'a>,
    y: impl Out<'a>,
    mean: impl Out<'a>,
    rstd: impl Out<'a>,
) {
    let (rows, cols) = (mean.len(), gamma.len());
    assert!(
        x.len() >= rows * cols
            && res.len() >= rows * cols
            && s.len() == rows * cols
            && y.len() == rows * cols
            && rstd.len() == rows
            && beta.len() == cols,
        "add_layernorm: sizes"
    );
    if rows == 0 || cols == 0 {
        return;
    }
    let isa = Isa::current();
    let outputs = ((units(s, cols), units(y, cols)), units(mean, 1), units(rstd, 1));
    parallel::for_each_units(rows, (NS_FORWARD + 0.3) * cols as f64, outputs, |range, ((s, y), mean, rstd)| {
        let span = range.start * cols..range.end * cols;
        add_forward_rows(
            isa,
            &x[span.clone()],
            &res[span],
            gamma,
            beta,
            eps,
            s.data.init(),
            y.data.init(),
            mean.data.init(),
            rstd.data.init(),
        )
    });
}

/// Returns nothing; writes `y: [rows, cols]`, `mean`, `rstd: [rows]`.
pub fn layernorm<'a>(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    y: impl Out<'a>,
    mean: impl Out<'a>,
    rstd: impl Out<'a>,
) {
    let (rows, cols) = (mean.len(), gamma.len());
    assert!(
        x.len() >= rows * cols && y.len() == rows * cols && rstd.len() == rows && beta.len() == cols,
        "layernorm: sizes"
    );
    if rows == 0 || cols == 0 {
        return;
    }
    let isa = Isa::current();
    let outputs = (units(y, cols), units(mean, 1), units(rstd, 1));
    parallel::for_each_units(rows, NS_FORWARD * cols as f64, outputs, |range, (y, mean, rstd)| {
        let x = &x[range.start * cols..range.end * cols];
        forward_rows(isa, x, gamma, beta, eps, y.data.init(), mean.data.init(), rstd.data.init())
    });
}

multiversion! {
    /// One block of rows: `dx` rows (plus `acc`'s rows, when not empty), and the block's partial
    /// `dgamma`, `dbeta` rows.
    fn backward_block<FMA>(
        x: &[f32],
        gamma: &[f32],
        mean: &[f32],
        rstd: &[f32],
        dy: &[f32],
        acc: &[f32],
        dx: &mut [f32],
        dgamma: &mut [f32],
        dbeta: &mut [f32],
    ) {
        let cols = gamma.len();
        let (dgamma, dbeta) = (&mut dgamma[..cols], &mut dbeta[..cols]);
        dgamma.fill(0.0);
        dbeta.fill(0.0);
        let inv_n = 1.0 / cols as f32;
        let rows = x.chunks_exact(cols).zip(dy.chunks_exact(cols)).zip(dx.chunks_exact_mut(cols));
        for (((xr, dyr), dxr), (&mu, &rs)) in rows.zip(mean.iter().zip(rstd)) {
            let mean_g = simd::sum_by2(dyr, gamma, |d, g| d * g) * inv_n;
            // sum g xhat = rs sum dy gamma (x - mu)
            let mean_gx = simd::sum_by3(dyr, gamma, xr, |d, g, v| (d * g) * (v - mu)) * rs * inv_n;
            for ((((o, &d), &g), &v), (dg, db)) in
                dxr.iter_mut().zip(dyr).zip(gamma).zip(xr).zip(dgamma.iter_mut().zip(dbeta.iter_mut()))
            {
                let xhat = (v - mu) * rs;
                *o = rs * (madd::<FMA>(-xhat, mean_gx, d * g) - mean_g);
                *dg = madd::<FMA>(d, xhat, *dg);
                *db += d;
            }
        }
        if !acc.is_empty() {
            // Added last, as the tape's separate add would (bit-identical to it).
            for (o, &a) in dx.iter_mut().zip(acc) {
                *o += a; // a + o: IEEE addition commutes, so bit-identical
            }
        }
    }
}

/// Writes `dx: [rows, cols]` (plus `acc`, the gradient already accumulated for `x`, when given),
/// `dgamma`, `dbeta: [cols]`.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward<'a>(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    acc: Option<&[f32]>,
    dx: impl Out<'a>,
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let (rows, cols) = (mean.len(), gamma.len());
    assert!(
        x.len() >= rows * cols
            && dy.len() >= rows * cols
            && acc.is_none_or(|a| a.len() >= rows * cols)
            && dx.len() == rows * cols
            && rstd.len() == rows
            && dgamma.len() == cols
            && dbeta.len() == cols,
        "layernorm_backward: sizes"
    );
    if cols == 0 {
        return;
    }
    if rows == 0 {
        dgamma.fill(0.0);
        dbeta.fill(0.0);
        return;
    }
    let isa = Isa::current();
    let blocks = rows.div_ceil(ROW_BLOCK);
    let (mut pg, mut pb) = (vec![0.0f32; blocks * cols], vec![0.0f32; blocks * cols]);
    let outputs = (units(dx, ROW_BLOCK * cols), units(&mut pg[..], cols), units(&mut pb[..], cols));
    let cost = NS_BACKWARD * (ROW_BLOCK * cols) as f64;
    parallel::for_each_units(blocks, cost, outputs, |range, (dx, pg, pb)| {
        let parts = dx
            .data
            .init()
            .chunks_mut(ROW_BLOCK * cols)
            .zip(pg.data.chunks_exact_mut(cols))
            .zip(pb.data.chunks_exact_mut(cols));
        for (b, ((dx, pg), pb)) in range.zip(parts) {
            let (r0, r1) = (b * ROW_BLOCK, (b * ROW_BLOCK + ROW_BLOCK).min(rows));
            let (xs, dys) = (&x[r0 * cols..r1 * cols], &dy[r0 * cols..r1 * cols]);
            let accs = acc.map_or(&[][..], |a| &a[r0 * cols..r1 * cols]);
            backward_block(isa, xs, gamma, &mean[r0..r1], &rstd[r0..r1], dys, accs, dx, pg, pb);
        }
    });
    add_up_blocks(isa, &mut pg, blocks, cols);
    add_up_blocks(isa, &mut pb, blocks, cols);
    dgamma.copy_from_slice(&pg[..cols]);
    dbeta.copy_from_slice(&pb[..cols]);
}
