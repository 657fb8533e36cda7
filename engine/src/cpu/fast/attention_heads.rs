//! Attention head by head, for heads too big for the 16-lane groups of `attention.rs` (ViT-B's
//! 197 x 64: a group's operands would be 16 x 50 KiB each, far past L2).
//!
//! Per head, in a scratch buffer of the worker thread:
//!
//! - forward: `S = scale Q K^T` (K transposed into scratch first, so that the product reads both
//!   operands along rows, see `small_gemm.rs`); per row the max, `E = exp(S - max)`, its sum and
//!   `lse = max + ln(sum)`; `O = (E V) / sum`.
//! - backward: `P = exp(scale Q K^T - lse)` recomputed from the saved log-sum-exp; `dP = dO V^T`;
//!   `delta_i = dO_i . O_i`; `dS = P (dP - delta)`; `dV = P^T dO`, `dQ = scale dS K`,
//!   `dK = scale dS^T Q`.
//!
//! The products are `small_gemm` register tiles; `P^T` and `dS^T` are read in place as
//! column-major operands, never transposed. Rows of the score matrix are padded to a multiple of 8
//! (zero columns in the transposed K and V, then `-inf` scores, which the softmax turns into zero
//! probabilities), so the products and the exp loops run on whole vectors. Each output value is
//! computed by one thread in a fixed order, so the results do not depend on the thread count.

use crate::backend::{AttentionSpec, HeadLayout};
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
    /// One head's gradients, `[seq, dim]` each (backward only), copied to where they belong.
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
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
            dq: vec![0.0; b * s.seq * s.dim],
            dk: vec![0.0; b * s.seq * s.dim],
            dv: vec![0.0; b * s.seq * s.dim],
        }
    }
}

/// `xt[c * tp + j] = x[j * ld + c]`: a `[t, d]` block with row stride `ld` transposed; columns
/// `t..tp` stay as they were (zero). Eight rows at a time, so that each column of the block is one
/// 8-value store with its bounds checked once (value by value, the checks cost more than the copies).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn transpose_into(x: &[f32], t: usize, d: usize, ld: usize, xt: &mut [f32], tp: usize) {
    let full = t / LANES;
    for b in 0..full {
        let mut rows: [&[f32]; LANES] = [&[]; LANES];
        for r in 0..LANES {
            let start = (b * LANES + r) * ld;
            rows[r] = &x[start..start + d];
        }
        for c in 0..d {
            let col: &mut [f32; LANES] = (&mut xt[c * tp + b * LANES..c * tp + (b + 1) * LANES]).try_into().unwrap();
            for r in 0..LANES {
                col[r] = rows[r][c];
            }
        }
    }
    for j in full * LANES..t {
        for (c, &v) in x[j * ld..j * ld + d].iter().enumerate() {
            xt[c * tp + j] = v;
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

/// The `t` rows of head `h` of `buf` laid out as `l`: the slice from its first row to the end of
/// its last.
#[inline(always)]
fn head_rows<'a>(buf: &'a [f32], l: &HeadLayout, h: usize, t: usize, d: usize) -> &'a [f32] {
    let start = l.row(h, 0);
    &buf[start..start + (t - 1) * l.row_stride + d]
}

multiversion! {
    /// Forward of one head: `q`, `k`, `v` and `out` are its rows with row strides `ld[0..4]`;
    /// `products` is the instruction set of the copy (`small_gemm::gemm`'s tiles).
    fn forward_head<FMA>(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        ld: [usize; 4],
        s: &AttentionSpec,
        out: &mut [f32],
        lse: &mut [f32],
        scratch: &mut Scratch,
        products: Isa,
    ) {
        let (t, d) = (s.seq, s.dim);
        let tp = scratch.tp;
        transpose_into(k, t, d, ld[1], &mut scratch.kt, tp);
        let p = &mut scratch.p;
        gemm::<FMA>(products, t, tp, d, s.scale, q, RowMajor(ld[0]), &scratch.kt, tp, p, tp);
        mask_padding(p, t, tp);
        let inv = &mut scratch.inv;
        for ((row, l), inv) in p.chunks_exact_mut(tp).zip(lse.iter_mut()).zip(inv.iter_mut()) {
            (*l, *inv) = softmax_row::<FMA>(row);
        }
        // O = (exp(S - max) V) / sum: the normalisation costs t * d multiplies here rather than
        // t * t on the probabilities.
        gemm::<FMA>(products, t, d, t, 1.0, p, RowMajor(tp), v, ld[2], out, ld[3]);
        for (i, &inv) in inv.iter().enumerate() {
            for x in out[i * ld[3]..i * ld[3] + d].iter_mut() {
                *x *= inv;
            }
        }
    }
}

/// The forward of `attention::attention_strided`, head by head, on inputs it has checked (sizes,
/// layouts, a non-empty head). Work is split over samples (groups of `out_layout.group` heads),
/// whose output blocks are contiguous.
pub(super) fn attention_strided<'a>(
    src: [&[f32]; 3],
    layouts: [HeadLayout; 3],
    s: &AttentionSpec,
    out: impl Out<'a>,
    out_layout: HeadLayout,
    lse: impl Out<'a>,
) {
    let (t, d) = (s.seq, s.dim);
    let group = out_layout.group.max(1);
    let samples = s.heads / group;
    let isa = Isa::current();
    let outputs = (units(out, out_layout.sample_stride), units(lse, group * t));
    parallel::for_each_units(samples, group as f64 * ns_per_head(s, false), outputs, |range, (out, lse)| {
        let mut scratch = Scratch::new(s, false);
        let (out, lse) = (out.data.init(), lse.data.init());
        let ld = [layouts[0].row_stride, layouts[1].row_stride, layouts[2].row_stride, out_layout.row_stride];
        for (u, sample) in range.enumerate() {
            for hh in 0..group {
                let h = sample * group + hh;
                let o = u * out_layout.sample_stride + hh * out_layout.head_stride + out_layout.offset;
                let [q, k, v] = [0, 1, 2].map(|w| head_rows(src[w], &layouts[w], h, t, d));
                let lse = &mut lse[(u * group + hh) * t..(u * group + hh + 1) * t];
                let out = &mut out[o..o + (t - 1) * ld[3] + d];
                forward_head(isa, q, k, v, ld, s, out, lse, &mut scratch, isa);
            }
        }
    });
}

multiversion! {
    /// The gradients of one head into `scratch.dq`, `dk`, `dv` (`[seq, dim]` each): `inputs` are
    /// the rows of q, k, v, out and dout with row strides `ld`.
    fn backward_head<FMA>(
        inputs: [&[f32]; 5],
        ld: [usize; 5],
        lse: &[f32],
        s: &AttentionSpec,
        scratch: &mut Scratch,
        products: Isa,
    ) {
        let [q, k, v, o, dout] = inputs;
        let (t, d) = (s.seq, s.dim);
        let tp = scratch.tp;
        transpose_into(k, t, d, ld[1], &mut scratch.kt, tp);
        transpose_into(v, t, d, ld[2], &mut scratch.vt, tp);
        let (p, ds) = (&mut scratch.p, &mut scratch.ds);
        // P = exp(scale Q K^T - lse)
        gemm::<FMA>(products, t, tp, d, s.scale, q, RowMajor(ld[0]), &scratch.kt, tp, p, tp);
        mask_padding(p, t, tp);
        for (row, &l) in p.chunks_exact_mut(tp).zip(lse) {
            exp_row::<FMA>(row, l);
        }
        // dS = P (dO V^T - delta)
        gemm::<FMA>(products, t, tp, d, 1.0, dout, RowMajor(ld[4]), &scratch.vt, tp, ds, tp);
        for (i, (ds_row, p_row)) in ds.chunks_exact_mut(tp).zip(p.chunks_exact(tp)).enumerate() {
            let delta = simd::dot::<FMA>(&dout[i * ld[4]..i * ld[4] + d], &o[i * ld[3]..i * ld[3] + d]);
            for (x, &pv) in ds_row.iter_mut().zip(p_row) {
                *x = pv * (*x - delta);
            }
        }
        // dV = P^T dO, dQ = scale dS K, dK = scale dS^T Q
        gemm::<FMA>(products, t, d, t, 1.0, p, ColMajor(tp), dout, ld[4], &mut scratch.dv, d);
        gemm::<FMA>(products, t, d, t, s.scale, ds, RowMajor(tp), k, ld[1], &mut scratch.dq, d);
        gemm::<FMA>(products, t, d, t, s.scale, ds, ColMajor(tp), q, ld[0], &mut scratch.dk, d);
    }
}

/// Runs `backward_head` for the heads of samples `range` and hands each head's gradients to
/// `put(u, hh, [dq, dk, dv])` (`u` the sample's index within the range). `isa` is chosen by the
/// calling thread: a worker thread does not see a test's forced instruction set.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward_samples(
    src: [&[f32]; 3],
    layouts: [HeadLayout; 3],
    out: &[f32],
    dout: &[f32],
    out_layout: &HeadLayout,
    lse: &[f32],
    s: &AttentionSpec,
    range: std::ops::Range<usize>,
    isa: Isa,
    mut put: impl FnMut(usize, usize, [&[f32]; 3]),
) {
    let (t, d) = (s.seq, s.dim);
    let group = out_layout.group.max(1);
    let mut scratch = Scratch::new(s, true);
    let ld = [
        layouts[0].row_stride,
        layouts[1].row_stride,
        layouts[2].row_stride,
        out_layout.row_stride,
        out_layout.row_stride,
    ];
    for (u, sample) in range.enumerate() {
        for hh in 0..group {
            let h = sample * group + hh;
            let [q, k, v] = [0, 1, 2].map(|w| head_rows(src[w], &layouts[w], h, t, d));
            let (o, g) = (head_rows(out, out_layout, h, t, d), head_rows(dout, out_layout, h, t, d));
            backward_head(isa, [q, k, v, o, g], ld, &lse[h * t..(h + 1) * t], s, &mut scratch, isa);
            put(u, hh, [&scratch.dq, &scratch.dk, &scratch.dv]);
        }
    }
}
