//! The CPU reference: every kernel as the plainest loops that compute it, the ground truth that the
//! fast CPU matmul and every WGSL kernel are tested against. Sums accumulate in f64 so that the
//! reference is more exact than what it judges. Nothing here is clever, and nothing here may become so.

use crate::backend::{
    AdamWSpec, AttentionSpec, AxisSpec, BinaryOp, CopyRowsSpec, GatherSpec, HeadLayout, MaeLossSpec, MatmulSpec,
    NORM_PIX_EPS, UnaryOp,
};

/// `C[b] = op(A[b]) op(B[b]) + bias`.
pub fn matmul(a: &[f32], b: &[f32], bias: Option<&[f32]>, s: &MatmulSpec) -> Vec<f32> {
    let mut c = vec![0.0f32; s.batch * s.m * s.n];
    for bi in 0..s.batch {
        let a = &a[bi * s.a_batch_stride..];
        let b = &b[bi * s.b_batch_stride..];
        let c = &mut c[bi * s.m * s.n..(bi + 1) * s.m * s.n];
        for i in 0..s.m {
            for j in 0..s.n {
                let mut acc = 0.0f64;
                for p in 0..s.k {
                    acc += a[s.a_index(i, p)] as f64 * b[s.b_index(p, j)] as f64;
                }
                if let Some(bias) = bias {
                    acc += bias[j] as f64;
                }
                c[i * s.n + j] = acc as f32;
            }
        }
    }
    c
}

/// `out[i] = x[i] (op) y[i % len(y)]`.
pub fn binary(op: BinaryOp, x: &[f32], y: &[f32]) -> Vec<f32> {
    (0..x.len()).map(|i| op.apply(x[i], y[i % y.len()])).collect()
}

/// erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7), evaluated in f64. The WGSL
/// kernels use the same formula in f32; WGSL has no erf of its own.
pub fn erf(x: f64) -> f64 {
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly =
        t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    sign * (1.0 - poly * (-x * x).exp())
}

/// Exact GELU of one value, `0.5 x (1 + erf(x / sqrt 2))`, evaluated in f64.
pub fn gelu(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))) as f32
}

/// `d gelu / dx = Phi(x) + x phi(x)`.
pub fn gelu_grad(x: f32) -> f32 {
    let x = x as f64;
    let cdf = 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
    let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    (cdf + x * pdf) as f32
}

/// `op` applied to each value.
pub fn unary(op: UnaryOp, x: &[f32]) -> Vec<f32> {
    x.iter()
        .map(|&v| match op {
            UnaryOp::Scale(s) => s * v,
            UnaryOp::AddScalar(s) => v + s,
            UnaryOp::Gelu => gelu(v),
            UnaryOp::Square => v * v,
            UnaryOp::Sqrt => v.sqrt(),
        })
        .collect()
}

/// `dx = dy * gelu'(x)`.
pub fn gelu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    x.iter().zip(dy).map(|(&x, &d)| d * gelu_grad(x)).collect()
}

/// Softmax over the last axis of `[rows, cols]`, the row maximum subtracted first.
pub fn softmax(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; rows * cols];
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
        for c in 0..cols {
            y[r * cols + c] = (((row[c] - max) as f64).exp() / sum) as f32;
        }
    }
    y
}

/// `dx = y * (dy - sum(dy * y))` per row.
pub fn softmax_backward(y: &[f32], dy: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut dx = vec![0.0f32; rows * cols];
    for r in 0..rows {
        let o = r * cols;
        let dot: f64 = (0..cols).map(|c| y[o + c] as f64 * dy[o + c] as f64).sum();
        for c in 0..cols {
            dx[o + c] = (y[o + c] as f64 * (dy[o + c] as f64 - dot)) as f32;
        }
    }
    dx
}

/// Returns `(y, mean, rstd)`; the variance is the biased one, as in PyTorch's LayerNorm.
pub fn layernorm(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    rows: usize,
    cols: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (mut y, mut mean, mut rstd) = (vec![0.0f32; rows * cols], vec![0.0f32; rows], vec![0.0f32; rows]);
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let mu = row.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
        let var = row.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / cols as f64;
        let rs = 1.0 / (var + eps as f64).sqrt();
        for c in 0..cols {
            y[r * cols + c] = ((row[c] as f64 - mu) * rs * gamma[c] as f64 + beta[c] as f64) as f32;
        }
        mean[r] = mu as f32;
        rstd[r] = rs as f32;
    }
    (y, mean, rstd)
}

/// The residual add and the LayerNorm after it: `s = x + res`, then `layernorm(s)`; returns
/// `(s, y, mean, rstd)`.
pub fn add_layernorm(
    x: &[f32],
    res: &[f32],
    gamma: &[f32],
    beta: &[f32],
    rows: usize,
    cols: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let s: Vec<f32> = x[..rows * cols].iter().zip(res).map(|(a, b)| a + b).collect();
    let (y, mean, rstd) = layernorm(&s, gamma, beta, rows, cols, eps);
    (s, y, mean, rstd)
}

/// Returns `(dx, dgamma, dbeta)`, with `xhat = (x - mean) rstd`:
/// `dx = rstd (g dy - mean(g dy) - xhat mean(g dy xhat))`, `dgamma = sum_rows dy xhat`, `dbeta = sum_rows dy`.
pub fn layernorm_backward(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    rows: usize,
    cols: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = vec![0.0f32; rows * cols];
    let (mut dgamma, mut dbeta) = (vec![0.0f64; cols], vec![0.0f64; cols]);
    for r in 0..rows {
        let o = r * cols;
        let (mu, rs) = (mean[r] as f64, rstd[r] as f64);
        let xhat = |c: usize| (x[o + c] as f64 - mu) * rs;
        let mut mean_g = 0.0f64;
        let mut mean_gx = 0.0f64;
        for c in 0..cols {
            let g = dy[o + c] as f64 * gamma[c] as f64;
            mean_g += g;
            mean_gx += g * xhat(c);
            dgamma[c] += dy[o + c] as f64 * xhat(c);
            dbeta[c] += dy[o + c] as f64;
        }
        mean_g /= cols as f64;
        mean_gx /= cols as f64;
        for c in 0..cols {
            let g = dy[o + c] as f64 * gamma[c] as f64;
            dx[o + c] = (rs * (g - mean_g - xhat(c) * mean_gx)) as f32;
        }
    }
    let to32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    (dx, to32(dgamma), to32(dbeta))
}

/// Scaled scores of one head, `[seq, seq]`, in f64.
fn scores(q: &[f32], k: &[f32], s: &AttentionSpec) -> Vec<f64> {
    let (t, d) = (s.seq, s.dim);
    let mut sc = vec![0.0f64; t * t];
    for i in 0..t {
        for j in 0..t {
            let dot: f64 = (0..d).map(|c| q[i * d + c] as f64 * k[j * d + c] as f64).sum();
            sc[i * t + j] = dot * s.scale as f64;
        }
    }
    sc
}

/// Softmax of each row of `sc` in place; returns the rows' log-sum-exp.
fn softmax_rows_f64(sc: &mut [f64], t: usize) -> Vec<f64> {
    let mut lse = vec![0.0f64; t];
    for i in 0..t {
        let row = &mut sc[i * t..(i + 1) * t];
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
        for v in row.iter_mut() {
            *v = (*v - max).exp() / sum;
        }
        lse[i] = max + sum.ln();
    }
    lse
}

/// The textbook algorithm: the full score matrix per head, a softmax, a product with V.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], s: &AttentionSpec) -> (Vec<f32>, Vec<f32>) {
    let (t, d) = (s.seq, s.dim);
    let mut out = vec![0.0f32; s.heads * t * d];
    let mut lse = vec![0.0f32; s.heads * t];
    for h in 0..s.heads {
        let o = h * t * d;
        let mut p = scores(&q[o..o + t * d], &k[o..o + t * d], s);
        let l = softmax_rows_f64(&mut p, t);
        for i in 0..t {
            for c in 0..d {
                let acc: f64 = (0..t).map(|j| p[i * t + j] * v[o + j * d + c] as f64).sum();
                out[o + i * d + c] = acc as f32;
            }
            lse[h * t + i] = l[i] as f32;
        }
    }
    (out, lse)
}

/// `dV = P^T dO; dP = dO V^T; dS = P (dP - rowsum(dO * O)); dQ = scale dS K; dK = scale dS^T Q`.
/// The reference recomputes P from scratch and ignores `lse`, so it checks the kernels that use it.
pub fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    dout: &[f32],
    s: &AttentionSpec,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (t, d) = (s.seq, s.dim);
    let n = s.heads * t * d;
    let (mut dq, mut dk, mut dv) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
    for h in 0..s.heads {
        let o = h * t * d;
        let mut p = scores(&q[o..o + t * d], &k[o..o + t * d], s);
        softmax_rows_f64(&mut p, t);
        let mut ds = vec![0.0f64; t * t];
        for i in 0..t {
            let di: f64 = (0..d).map(|c| dout[o + i * d + c] as f64 * out[o + i * d + c] as f64).sum();
            for j in 0..t {
                let dp: f64 = (0..d).map(|c| dout[o + i * d + c] as f64 * v[o + j * d + c] as f64).sum();
                ds[i * t + j] = p[i * t + j] * (dp - di);
            }
        }
        for i in 0..t {
            for c in 0..d {
                let acc_q: f64 = (0..t).map(|j| ds[i * t + j] * k[o + j * d + c] as f64).sum();
                dq[o + i * d + c] = (acc_q * s.scale as f64) as f32;
            }
        }
        for j in 0..t {
            for c in 0..d {
                let acc_k: f64 = (0..t).map(|i| ds[i * t + j] * q[o + i * d + c] as f64).sum();
                let acc_v: f64 = (0..t).map(|i| p[i * t + j] * dout[o + i * d + c] as f64).sum();
                dk[o + j * d + c] = (acc_k * s.scale as f64) as f32;
                dv[o + j * d + c] = acc_v as f32;
            }
        }
    }
    (dq, dk, dv)
}

/// The heads of `buf` laid out as `layout`, copied to `[heads, seq, dim]`.
pub fn gather_heads(buf: &[f32], layout: &HeadLayout, s: &AttentionSpec) -> Vec<f32> {
    let mut out = Vec::with_capacity(s.heads * s.seq * s.dim);
    for h in 0..s.heads {
        for i in 0..s.seq {
            let r = layout.row(h, i);
            out.extend_from_slice(&buf[r..r + s.dim]);
        }
    }
    out
}

/// The inverse of `gather_heads`: `[heads, seq, dim]` values written into `buf` as `layout`.
pub fn scatter_heads(heads: &[f32], buf: &mut [f32], layout: &HeadLayout, s: &AttentionSpec) {
    for h in 0..s.heads {
        for i in 0..s.seq {
            let (r, src) = (layout.row(h, i), (h * s.seq + i) * s.dim);
            buf[r..r + s.dim].copy_from_slice(&heads[src..src + s.dim]);
        }
    }
}

/// Attention on the fused projection `qkv: [N, T, 3, H, d]`: the heads are copied out, attended
/// as `attention` does, and merged back to `[N, T, H, d]`.
pub fn attention_qkv(qkv: &[f32], num_heads: usize, s: &AttentionSpec) -> (Vec<f32>, Vec<f32>) {
    let part = |w| gather_heads(qkv, &HeadLayout::qkv(s.seq, num_heads, s.dim, w), s);
    let (o, lse) = attention(&part(0), &part(1), &part(2), s);
    let mut out = vec![0.0f32; o.len()];
    scatter_heads(&o, &mut out, &HeadLayout::merged(s.seq, num_heads, s.dim), s);
    (out, lse)
}

/// The gradient `[N, T, 3, H, d]` of `attention_qkv`.
pub fn attention_qkv_backward(qkv: &[f32], out: &[f32], dout: &[f32], num_heads: usize, s: &AttentionSpec) -> Vec<f32> {
    let part = |w| gather_heads(qkv, &HeadLayout::qkv(s.seq, num_heads, s.dim, w), s);
    let merged = HeadLayout::merged(s.seq, num_heads, s.dim);
    let (o, d) = (gather_heads(out, &merged, s), gather_heads(dout, &merged, s));
    let (dq, dk, dv) = attention_backward(&part(0), &part(1), &part(2), &o, &d, s);
    let mut dqkv = vec![0.0f32; qkv.len()];
    for (w, g) in [dq, dk, dv].iter().enumerate() {
        scatter_heads(g, &mut dqkv, &HeadLayout::qkv(s.seq, num_heads, s.dim, w), s);
    }
    dqkv
}

/// `out[n, i, :] = x[n, idx[n, i], :]`, or `fill` (`[width]`) where `idx[n, i] == rows`.
pub fn gather_rows(x: &[f32], fill: Option<&[f32]>, idx: &[u32], s: &GatherSpec) -> Vec<f32> {
    let mut out = vec![0.0f32; s.batch * s.picks * s.width];
    for n in 0..s.batch {
        for i in 0..s.picks {
            let row = idx[n * s.picks + i] as usize;
            let src = match fill {
                Some(fill) if row == s.rows => &fill[..s.width],
                _ => &x[(n * s.rows + row) * s.width..(n * s.rows + row + 1) * s.width],
            };
            let dst = (n * s.picks + i) * s.width;
            out[dst..dst + s.width].copy_from_slice(src);
        }
    }
    out
}

/// The backward of `gather_rows` for `x`: `dx = zeros; dx[n, idx[n, i], :] += dy[n, i, :]`, picks
/// at or past `rows` (the fill's) left out.
pub fn scatter_add_rows(dy: &[f32], idx: &[u32], s: &GatherSpec) -> Vec<f32> {
    let mut dx = vec![0.0f32; s.batch * s.rows * s.width];
    for n in 0..s.batch {
        for i in 0..s.picks {
            let row = idx[n * s.picks + i] as usize;
            if row >= s.rows {
                continue;
            }
            let dst = (n * s.rows + row) * s.width;
            let src = (n * s.picks + i) * s.width;
            for c in 0..s.width {
                dx[dst + c] += dy[src + c];
            }
        }
    }
    dx
}

/// The backward of `gather_rows` for its fill row: `sum of dy[n, i, :] over idx[n, i] == rows`.
pub fn sum_fill_rows(dy: &[f32], idx: &[u32], s: &GatherSpec) -> Vec<f32> {
    let mut acc = vec![0.0f64; s.width];
    for (r, &row) in idx[..s.batch * s.picks].iter().enumerate() {
        if row as usize == s.rows {
            for (a, &g) in acc.iter_mut().zip(&dy[r * s.width..(r + 1) * s.width]) {
                *a += g as f64;
            }
        }
    }
    acc.into_iter().map(|a| a as f32).collect()
}

/// Copies `s.rows` rows per sample from `src` into `dst`, in place (see `CopyRowsSpec`).
pub fn copy_rows_into(src: &[f32], dst: &mut [f32], s: &CopyRowsSpec) {
    for n in 0..s.batch {
        for r in 0..s.rows {
            let from = (n * s.src_rows + s.src_offset + r) * s.width;
            let to = (n * s.dst_rows + s.dst_offset + r) * s.width;
            dst[to..to + s.width].copy_from_slice(&src[from..from + s.width]);
        }
    }
}

/// Sum over the middle axis: `[outer, axis, inner] -> [outer, inner]`.
pub fn sum_axis(x: &[f32], s: &AxisSpec) -> Vec<f32> {
    let mut out = vec![0.0f32; s.outer * s.inner];
    for o in 0..s.outer {
        for i in 0..s.inner {
            let acc: f64 = (0..s.axis).map(|a| x[(o * s.axis + a) * s.inner + i] as f64).sum();
            out[o * s.inner + i] = acc as f32;
        }
    }
    out
}

/// Repeat along a new middle axis: `[outer, inner] -> [outer, axis, inner]`.
pub fn broadcast_axis(x: &[f32], s: &AxisSpec) -> Vec<f32> {
    let mut out = vec![0.0f32; s.outer * s.axis * s.inner];
    for o in 0..s.outer {
        for a in 0..s.axis {
            for i in 0..s.inner {
                out[(o * s.axis + a) * s.inner + i] = x[o * s.inner + i];
            }
        }
    }
    out
}

/// Row-major strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut st = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        st[i] = st[i + 1] * shape[i + 1];
    }
    st
}

/// `out[j_0, .., j_r] = x[i]` where `i[perm[a]] = j[a]`.
pub fn permute(x: &[f32], shape: &[usize], perm: &[usize]) -> Vec<f32> {
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let in_strides = strides(shape);
    let mut out = vec![0.0f32; x.len()];
    let mut j = vec![0usize; shape.len()];
    for o in out.iter_mut() {
        let src: usize = (0..perm.len()).map(|a| j[a] * in_strides[perm[a]]).sum();
        *o = x[src];
        // Advance the output multi-index, last axis fastest.
        for a in (0..j.len()).rev() {
            j[a] += 1;
            if j[a] < out_shape[a] {
                break;
            }
            j[a] = 0;
        }
    }
    out
}

/// The target of one patch as the loss sees it: itself, or normalised by its own mean and unbiased
/// variance (`norm_pix_loss` in the official code).
pub fn loss_target(t: &[f32], norm_pix: bool) -> Vec<f64> {
    if !norm_pix {
        return t.iter().map(|&v| v as f64).collect();
    }
    let n = t.len() as f64;
    let mean = t.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = t.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let inv = 1.0 / (var + NORM_PIX_EPS as f64).sqrt();
    t.iter().map(|&v| (v as f64 - mean) * inv).collect()
}

/// Per-patch masked loss, `[rows]` (see `MaeLossSpec`).
pub fn mae_loss_rows(pred: &[f32], target: &[f32], mask: &[f32], s: &MaeLossSpec) -> Vec<f32> {
    let p = s.patch;
    (0..s.rows)
        .map(|r| {
            let t = loss_target(&target[r * p..(r + 1) * p], s.norm_pix);
            let mse = (0..p).map(|c| (pred[r * p + c] as f64 - t[c]).powi(2)).sum::<f64>() / p as f64;
            (mse * mask[r] as f64) as f32
        })
        .collect()
}

/// `(sum(row_loss) / sum(mask), sum(mask))`: the loss, the mean over removed patches, and its count.
pub fn mae_loss_mean(row_loss: &[f32], mask: &[f32], s: &MaeLossSpec) -> (f32, f32) {
    let sum = row_loss[..s.rows].iter().map(|&v| v as f64).sum::<f64>();
    let count = mask[..s.rows].iter().map(|&v| v as f64).sum::<f64>();
    ((sum / count) as f32, count as f32)
}

/// `dpred[r, p] = scale * mask[r] * 2 (pred[r, p] - t[r, p]) / patch`, `scale` the gradient of
/// each row's loss (`dloss / count` for the mean).
pub fn mae_loss_backward(pred: &[f32], target: &[f32], mask: &[f32], scale: f32, s: &MaeLossSpec) -> Vec<f32> {
    let p = s.patch;
    let mut d = vec![0.0f32; s.rows * p];
    for r in 0..s.rows {
        let t = loss_target(&target[r * p..(r + 1) * p], s.norm_pix);
        let k = scale as f64 * mask[r] as f64 * 2.0 / p as f64;
        for c in 0..p {
            d[r * p + c] = (k * (pred[r * p + c] as f64 - t[c])) as f32;
        }
    }
    d
}

/// Returns `(loss_rows, probabilities)`; `loss = logsumexp(logits) - logits[label]`.
pub fn cross_entropy(logits: &[f32], labels: &[u32], rows: usize, classes: usize) -> (Vec<f32>, Vec<f32>) {
    let probs = softmax(logits, rows, classes);
    let loss = (0..rows)
        .map(|r| {
            let row = &logits[r * classes..(r + 1) * classes];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
            (lse - row[labels[r] as usize] as f64) as f32
        })
        .collect();
    (loss, probs)
}

/// `dlogits[r, c] = drow[r] * (p[r, c] - [c == label[r]])`.
pub fn cross_entropy_backward(probs: &[f32], labels: &[u32], drow: &[f32], rows: usize, classes: usize) -> Vec<f32> {
    let mut d = vec![0.0f32; rows * classes];
    for r in 0..rows {
        for c in 0..classes {
            let onehot = if labels[r] as usize == c { 1.0 } else { 0.0 };
            d[r * classes + c] = drow[r] * (probs[r * classes + c] - onehot);
        }
    }
    d
}

/// One AdamW step on `p` with moments `m`, `v`, all updated in place (see `AdamWSpec`).
pub fn adamw_step(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamWSpec) {
    for i in 0..p.len() {
        let gi = g[i] * s.grad_scale;
        m[i] = s.beta1 * m[i] + (1.0 - s.beta1) * gi;
        v[i] = s.beta2 * v[i] + (1.0 - s.beta2) * gi * gi;
        let mhat = m[i] / s.bias_correction1;
        let denom = (v[i] / s.bias_correction2).sqrt() + s.eps;
        p[i] = p[i] * (1.0 - s.lr * s.weight_decay) - s.lr * mhat / denom;
    }
}
