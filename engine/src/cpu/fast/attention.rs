//! Multi-head self-attention, forward and backward, one head at a time, heads split over threads.
//!
//! MAE's sequences are short (13 to 65 tokens here, 197 at ViT-B scale), so a head's whole score
//! matrix `[seq, seq]` fits in L1/L2 and there is no need for FlashAttention's streaming: per head,
//! in a scratch buffer of the worker thread,
//!
//! - forward: `S = scale Q K^T` (K transposed into scratch first, so that the product reads both
//!   operands along rows, see `small_gemm.rs`); per row the max, `E = exp(S - max)`, its sum and
//!   `lse = max + ln(sum)`; `O = (E V) / sum`.
//! - backward (as the GPU kernel, `shaders/attention.wgsl`): `P = exp(scale Q K^T - lse)`
//!   recomputed from the saved log-sum-exp rather than stored by the forward; `dP = dO V^T`;
//!   `delta_i = dO_i . O_i` (`= sum_j P_ij dP_ij`); `dS = P (dP - delta)`; `dV = P^T dO`,
//!   `dQ = scale dS K`, `dK = scale dS^T Q`.
//!
//! The products are `small_gemm` register tiles; `P^T` and `dS^T` are read in place as
//! column-major operands, never transposed. Rows of the score matrix are padded to a multiple of 8
//! (zero columns in the transposed K and V, then `-inf` scores, which the softmax turns into zero
//! probabilities), so the products and the exp loops run on whole vectors. Each output value is
//! computed by one thread in a fixed order, so the results do not depend on the thread count.

use crate::backend::AttentionSpec;
use crate::cpu::parallel::{self, Out, units};

use super::math::exp;
use super::simd::{self, Isa, LANES, multiversion};
use super::small_gemm::Layout::{ColMajor, RowMajor};
use super::small_gemm::gemm;

/// Estimated single-core cost of one head (ns): ~10 flops per ns for the small products, ~2 ns per
/// score for the softmax.
fn ns_per_head(s: &AttentionSpec, backward: bool) -> f64 {
    let (t, d) = (s.seq as f64, s.dim as f64);
    let products = if backward { 5.0 } else { 2.0 };
    products * 2.0 * t * t * d / 10.0 + 2.0 * t * t
}

/// The scratch buffers of one worker.
struct Scratch {
    /// Row stride of the score-like buffers: `seq` rounded up to a multiple of `LANES`.
    tp: usize,
    /// `K^T: [dim, tp]`
    kt: Vec<f32>,
    /// `V^T: [dim, tp]` (backward only)
    vt: Vec<f32>,
    /// `S`, then `P` (unnormalised in the forward): `[seq, tp]`
    p: Vec<f32>,
    /// `1 / sum` of each row of the forward's unnormalised `P`
    inv: Vec<f32>,
    /// `dP`, then `dS`: `[seq, tp]` (backward only)
    ds: Vec<f32>,
}

impl Scratch {
    fn new(s: &AttentionSpec, backward: bool) -> Scratch {
        let tp = s.seq.next_multiple_of(LANES);
        let b = if backward { 1 } else { 0 };
        Scratch {
            tp,
            kt: vec![0.0; s.dim * tp],
            vt: vec![0.0; b * s.dim * tp],
            p: vec![0.0; s.seq * tp],
            inv: vec![0.0; s.seq],
            ds: vec![0.0; b * s.seq * tp],
        }
    }
}

/// `xt[c * tp + j] = x[j * d + c]`: a `[t, d]` block transposed; columns `t..tp` stay as they were
/// (zero). Eight rows at a time, so that each column of the block is one 8-value store with its
/// bounds checked once (value by value, the checks cost more than the copies).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn transpose_into(x: &[f32], t: usize, d: usize, xt: &mut [f32], tp: usize) {
    let blocks = x[..t * d].chunks_exact(LANES * d);
    let done = blocks.len() * LANES;
    for (b, block) in blocks.enumerate() {
        let mut rows: [&[f32]; LANES] = [&[]; LANES];
        for r in 0..LANES {
            rows[r] = &block[r * d..(r + 1) * d];
        }
        for c in 0..d {
            let col: &mut [f32; LANES] = (&mut xt[c * tp + b * LANES..c * tp + (b + 1) * LANES]).try_into().unwrap();
            for r in 0..LANES {
                col[r] = rows[r][c];
            }
        }
    }
    for (j, row) in x[done * d..t * d].chunks_exact(d).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            xt[c * tp + done + j] = v;
        }
    }
}

/// The unnormalised softmax of one padded score row in place, `exp(s - max)` (padding `-inf`, at
/// least one finite value); returns the log-sum-exp and `1 / sum`. The exp loop is a plain loop
/// over the slice, which LLVM's loop vectoriser turns into 8-lane code; written over fixed-size
/// lane arrays instead, it was left scalar.
#[inline(always)]
fn softmax_row<const FMA: bool>(row: &mut [f32]) -> (f32, f32) {
    let mut m = [f32::NEG_INFINITY; LANES];
    for c in row.chunks_exact(LANES) {
        for l in 0..LANES {
            m[l] = if c[l] > m[l] { c[l] } else { m[l] };
        }
    }
    for &v in row.chunks_exact(LANES).remainder() {
        m[0] = if v > m[0] { v } else { m[0] };
    }
    let max = m.iter().fold(f32::NEG_INFINITY, |a, &v| if v > a { v } else { a });
    exp_row::<FMA>(row, max);
    let sum = simd::sum(row);
    (max + sum.ln(), 1.0 / sum)
}

/// `exp(x - shift)` for a padded row in place (padding `-inf` becomes 0).
#[inline(always)]
fn exp_row<const FMA: bool>(row: &mut [f32], shift: f32) {
    for x in row.iter_mut() {
        *x = exp::<FMA>(*x - shift);
    }
}

/// Sets the padding columns `t..tp` of each of the `t` rows to `-inf`.
#[inline(always)]
fn mask_padding(p: &mut [f32], t: usize, tp: usize) {
    for row in p.chunks_exact_mut(tp).take(t) {
        row[t..].fill(f32::NEG_INFINITY);
    }
}

multiversion! {
    /// Forward of the heads whose q, k, v, out (`[heads, t, d]` each) and lse (`[heads, t]`) are
    /// given.
    fn forward_heads<FMA>(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        s: &AttentionSpec,
        out: &mut [f32],
        lse: &mut [f32],
        scratch: &mut Scratch,
    ) {
        let (t, d) = (s.seq, s.dim);
        let tp = scratch.tp;
        let hs = t * d;
        let heads = out.chunks_exact_mut(hs).zip(lse.chunks_exact_mut(t));
        for (h, (out, lse)) in heads.enumerate() {
            let (q, k, v) = (&q[h * hs..(h + 1) * hs], &k[h * hs..(h + 1) * hs], &v[h * hs..(h + 1) * hs]);
            transpose_into(k, t, d, &mut scratch.kt, tp);
            let p = &mut scratch.p;
            gemm::<FMA>(t, tp, d, s.scale, q, RowMajor(d), &scratch.kt, tp, p, tp);
            mask_padding(p, t, tp);
            let inv = &mut scratch.inv;
            for ((row, l), inv) in p.chunks_exact_mut(tp).zip(lse.iter_mut()).zip(inv.iter_mut()) {
                (*l, *inv) = softmax_row::<FMA>(row);
            }
            // O = (exp(S - max) V) / sum: the normalisation costs t * d multiplies here rather
            // than t * t on the probabilities.
            gemm::<FMA>(t, d, t, 1.0, p, RowMajor(tp), v, d, out, d);
            for (row, &inv) in out.chunks_exact_mut(d).zip(inv.iter()) {
                for x in row.iter_mut() {
                    *x *= inv;
                }
            }
        }
    }
}

/// `out = softmax(q k^T scale) v` per head, and the rows' log-sum-exp of the scaled scores.
pub fn attention<'a>(q: &[f32], k: &[f32], v: &[f32], s: &AttentionSpec, out: impl Out<'a>, lse: impl Out<'a>) {
    let n = s.heads * s.seq * s.dim;
    assert!(q.len() >= n && k.len() >= n && v.len() >= n, "attention: inputs too short");
    assert!(out.len() == n && lse.len() == s.heads * s.seq, "attention: outputs");
    if n == 0 {
        // No dimensions: every score is 0, each row's softmax is uniform.
        lse.init().fill((s.seq as f32).ln());
        return;
    }
    let isa = Isa::current();
    let hs = s.seq * s.dim;
    let outputs = (units(out, hs), units(lse, s.seq));
    parallel::for_each_units(s.heads, ns_per_head(s, false), outputs, |range, (out, lse)| {
        let mut scratch = Scratch::new(s, false);
        let (a, b) = (range.start * hs, range.end * hs);
        forward_heads(isa, &q[a..b], &k[a..b], &v[a..b], s, out.data.init(), lse.data.init(), &mut scratch);
    });
}

multiversion! {
    fn backward_heads<FMA>(
        inputs: [&[f32]; 5],
        lse: &[f32],
        s: &AttentionSpec,
        dq: &mut [f32],
        dk: &mut [f32],
        dv: &mut [f32],
        scratch: &mut Scratch,
    ) {
        let [q, k, v, o, dout] = inputs;
        let (t, d) = (s.seq, s.dim);
        let tp = scratch.tp;
        let hs = t * d;
        let grads = dq.chunks_exact_mut(hs).zip(dk.chunks_exact_mut(hs)).zip(dv.chunks_exact_mut(hs));
        for (h, ((dq, dk), dv)) in grads.enumerate() {
            let r = h * hs..(h + 1) * hs;
            let (q, k, v, o, dout) = (&q[r.clone()], &k[r.clone()], &v[r.clone()], &o[r.clone()], &dout[r]);
            let lse = &lse[h * t..(h + 1) * t];
            transpose_into(k, t, d, &mut scratch.kt, tp);
            transpose_into(v, t, d, &mut scratch.vt, tp);
            let (p, ds) = (&mut scratch.p, &mut scratch.ds);
            // P = exp(scale Q K^T - lse)
            gemm::<FMA>(t, tp, d, s.scale, q, RowMajor(d), &scratch.kt, tp, p, tp);
            mask_padding(p, t, tp);
            for (row, &l) in p.chunks_exact_mut(tp).zip(lse) {
                exp_row::<FMA>(row, l);
            }
            // dS = P (dO V^T - delta)
            gemm::<FMA>(t, tp, d, 1.0, dout, RowMajor(d), &scratch.vt, tp, ds, tp);
            for (i, (ds_row, p_row)) in ds.chunks_exact_mut(tp).zip(p.chunks_exact(tp)).enumerate() {
                let delta = simd::dot::<FMA>(&dout[i * d..(i + 1) * d], &o[i * d..(i + 1) * d]);
                for (x, &pv) in ds_row.iter_mut().zip(p_row) {
                    *x = pv * (*x - delta);
                }
            }
            // dV = P^T dO, dQ = scale dS K, dK = scale dS^T Q
            gemm::<FMA>(t, d, t, 1.0, p, ColMajor(tp), dout, d, dv, d);
            gemm::<FMA>(t, d, t, s.scale, ds, RowMajor(tp), k, d, dq, d);
            gemm::<FMA>(t, d, t, s.scale, ds, ColMajor(tp), q, d, dk, d);
        }
    }
}

/// The gradients `(dq, dk, dv)` of [`attention`], with `P` recomputed from `lse`.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<'a>(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    s: &AttentionSpec,
    dq: impl Out<'a>,
    dk: impl Out<'a>,
    dv: impl Out<'a>,
) {
    let n = s.heads * s.seq * s.dim;
    for x in [q, k, v, out, dout] {
        assert!(x.len() >= n, "attention_backward: inputs too short");
    }
    assert!(lse.len() >= s.heads * s.seq, "attention_backward: lse too short");
    assert!(dq.len() == n && dk.len() == n && dv.len() == n, "attention_backward: outputs");
    if n == 0 {
        return;
    }
    let isa = Isa::current();
    let (hs, t) = (s.seq * s.dim, s.seq);
    let outputs = (units(dq, hs), units(dk, hs), units(dv, hs));
    parallel::for_each_units(s.heads, ns_per_head(s, true), outputs, |range, (dq, dk, dv)| {
        let mut scratch = Scratch::new(s, true);
        let (a, b) = (range.start * hs, range.end * hs);
        let inputs = [&q[a..b], &k[a..b], &v[a..b], &out[a..b], &dout[a..b]];
        let lse = &lse[range.start * t..range.end * t];
        backward_heads(isa, inputs, lse, s, dq.data.init(), dk.data.init(), dv.data.init(), &mut scratch);
    });
}
