//! Multi-head self-attention, forward and backward, `G` = 16 heads at a time, one head per lane.
//!
//! MAE's sequences are short (13 and 50 tokens for the micro preset, 50 and 197 at ViT-B scale)
//! and its heads narrow (16 to 64 values). Computed head by head, every product is a few hundred
//! vector instructions wrapped in as many of set-up (tiles, edges, transposes of K and V, padding
//! rows to the vector width), and the score rows of 13 or 50 values fill vectors badly. So the
//! heads go across the lanes instead: `G` heads are interleaved step by step
//! (`cpu/interleave.rs`), `q[i][c]` becoming one vector of the `G` heads' values, and every
//! operation below is the same scalar formula run on `G` heads at once. No transposes, no padding
//! of `seq`, no horizontal sums; a head's result does not depend on which heads share its vector
//! (the last group of a range repeats its last head in the unused lanes and drops the copies).
//! Heads of more than `MAX_GROUPED_HEAD` values, whose groups would outgrow L2, go one at a time
//! (`attention_heads.rs`).
//!
//! Per group, with `x[i]` row i (`dim` vectors) and all products accumulated in index order:
//!
//! - forward, per query row i: `s_j = scale (q_i . k_j)`; `m = max_j s_j`; `e_j = exp(s_j - m)`,
//!   `sum = sum_j e_j`, `lse_i = m + ln(sum)`; `o_i = (sum_j e_j v_j) / sum`.
//! - backward (as the GPU kernel, `shaders/attention.wgsl`), per row i: `P_ij = exp(scale (q_i .
//!   k_j) - lse_i)`, recomputed from the saved log-sum-exp rather than stored by the forward;
//!   `delta_i = dO_i . O_i`; `dS_ij = P_ij (dO_i . v_j - delta_i)`; `dQ_i = scale sum_j dS_ij k_j`;
//!   and, accumulated over the rows i, `dV_j += P_ij dO_i`, `dK_j += dS_ij q_i` (times `scale` at
//!   the end).
//!
//! Query rows go a block at a time (4 with AVX-512, 2 with AVX2: `run_group`), their scores a
//! block of keys at a time and their outputs a block of columns at a time, so that each loaded
//! vector serves several independent multiply-adds (enough accumulators to hide the FMA latency).
//! A group's operands take `seq x dim x G` floats each (51 KiB at 50 x 16), so they stay in L1/L2
//! while used `seq` times.
//!
//! Napkin math: the forward is `2 seq^2 dim` multiply-adds per head and `seq^2` exponentials, the
//! backward `5 seq^2 dim` and `seq^2`; at 16 lanes per instruction that is ~5,000 vector FMAs for
//! a 50 x 16 head's forward (~2 us on one core at one FMA per cycle), plus the interleaving of
//! its `3 seq dim` inputs and `seq dim` output (8 x 8 register transposes). Each value is computed
//! by one lane in a fixed order, so the results do not depend on the thread count or the ISA.

use crate::backend::{AttentionSpec, HeadLayout};
use crate::cpu::interleave::{deinterleave, interleave};
use crate::cpu::parallel::{self, Out, units};

use super::attention_heads;
use super::lanes::{self, Lanes, Vector};
use super::math::exp;
use super::simd::{self, Isa};

/// Heads per group: one per lane of a vector.
const G: usize = lanes::N;
/// One value of each of the `G` heads of a group.
type V = [f32; G];
/// The most query rows computed together (scratch rows of P and dS are sized for it).
const MAX_ROWS: usize = 4;

/// The largest head (`seq x dim` values) computed in the 16-lane groups: a group's operands then
/// take at most 128 KiB each, and its five inputs and three gradients stay in L2. Bigger heads
/// (ViT-B's 50 x 64 and 197 x 64) run head by head (`attention_heads.rs`), which measured faster
/// there: the groups' backward streams its dK and dV accumulators from L3 (docs/journal/benchmarks.md).
const MAX_GROUPED_HEAD: usize = 2048;

/// Whether heads of this shape run head by head rather than in groups.
fn per_head(s: &AttentionSpec) -> bool {
    s.seq * s.dim > MAX_GROUPED_HEAD
}

/// Estimated single-core cost of one head (ns): ~40 flops per ns for the products, ~0.5 ns per
/// score for the softmax, and the interleaving of its operands.
fn ns_per_head(s: &AttentionSpec, backward: bool) -> f64 {
    let (t, d) = (s.seq as f64, s.dim as f64);
    let products = if backward { 5.0 } else { 2.0 };
    let moved = if backward { 8.0 } else { 4.0 };
    products * 2.0 * t * t * d / 40.0 + 0.5 * t * t + moved * t * d * 0.5
}

/// `exp` of every value of `x`, in place, as one flat loop over the floats (LLVM's loop
/// vectoriser turns it into full-width code in each copy).
#[inline(always)]
fn exp_all<const FMA: bool>(x: &mut [V]) {
    for v in x.as_flattened_mut() {
        *v = exp::<FMA>(*v);
    }
}

/// Vector `i` of `x`.
///
/// # Safety
/// `i < x.len()`. Checked in debug builds only: this is every load of the kernels' inner loops,
/// whose callers check their slices' lengths once per call instead.
#[inline(always)]
unsafe fn at<L: Lanes>(lanes: L, x: &[V], i: usize) -> L::V {
    debug_assert!(i < x.len());
    // SAFETY: `x[i]` is 16 floats.
    unsafe { lanes.load(x.as_ptr().add(i).cast()) }
}

/// Writes vector `i` of `x`.
///
/// # Safety
/// `i < x.len()`, checked in debug builds only (as for [`at`]).
#[inline(always)]
unsafe fn put(x: &mut [V], i: usize, v: impl Vector) {
    debug_assert!(i < x.len());
    // SAFETY: `x[i]` is 16 floats.
    unsafe { v.store(x.as_mut_ptr().add(i).cast()) }
}

/// `out[r * t + j] = scale (a_r . b_j)` for the `R` rows `a_r` (`d` vectors each, `a[r * d..]`)
/// and the `t` rows `b_j` (`b[j * d..]`), each dot product accumulated in order. `R` rows by
/// `KEYS` keys at a time: per step, `R + KEYS` loads for `R x KEYS` multiply-adds.
#[inline(always)]
fn dots<L: Lanes, const R: usize, const KEYS: usize>(
    lanes: L,
    a: &[V],
    b: &[V],
    t: usize,
    d: usize,
    scale: f32,
    out: &mut [V],
) {
    assert!(a.len() >= R * d && b.len() >= t * d && out.len() >= R * t, "attention: rows too short");
    let scale = lanes.splat(scale);
    let mut j = 0;
    // The indices below: r < R, x < KEYS with j + x < t, c < d, inside the lengths asserted above.
    while j + KEYS <= t {
        let mut acc = [[lanes.zero(); KEYS]; R];
        for c in 0..d {
            // SAFETY: (j + x) * d + c < t * d <= b.len().
            let bk: [L::V; KEYS] = std::array::from_fn(|x| unsafe { at(lanes, b, (j + x) * d + c) });
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: r * d + c < R * d <= a.len().
                let ar = unsafe { at(lanes, a, r * d + c) };
                for (acc, &bk) in acc.iter_mut().zip(&bk) {
                    *acc = ar.mul_add(bk, *acc);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (x, acc) in acc.iter().enumerate() {
                // SAFETY: r * t + j + x < R * t <= out.len().
                unsafe { put(out, r * t + j + x, acc.mul(scale)) };
            }
        }
        j += KEYS;
    }
    for j in j..t {
        let mut acc = [lanes.zero(); R];
        for c in 0..d {
            // SAFETY: j * d + c < t * d <= b.len().
            let bj = unsafe { at(lanes, b, j * d + c) };
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: r * d + c < R * d <= a.len().
                *acc = unsafe { at(lanes, a, r * d + c) }.mul_add(bj, *acc);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            // SAFETY: r * t + j < R * t <= out.len().
            unsafe { put(out, r * t + j, acc.mul(scale)) };
        }
    }
}

/// `out[r * d + c] = scale[r] * sum_j w[r * t + j] x_j[c]` for the `R` weight rows (`t` each) and
/// `c < d`: `x` rows of `d`, summed in j order. `R` rows by `COLS` columns at a time.
#[inline(always)]
fn weighted_rows<L: Lanes, const R: usize, const COLS: usize>(
    lanes: L,
    w: &[V],
    t: usize,
    x: &[V],
    d: usize,
    scale: [L::V; R],
    out: &mut [V],
) {
    assert!(w.len() >= R * t && x.len() >= t * d && out.len() >= R * d, "attention: rows too short");
    let mut c0 = 0;
    // The indices below: r < R, j < t, c0 + y < d, inside the lengths asserted above.
    while c0 + COLS <= d {
        let mut acc = [[lanes.zero(); COLS]; R];
        for j in 0..t {
            // SAFETY: j * d + c0 + y < t * d <= x.len().
            let xc: [L::V; COLS] = std::array::from_fn(|y| unsafe { at(lanes, x, j * d + c0 + y) });
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: r * t + j < R * t <= w.len().
                let wr = unsafe { at(lanes, w, r * t + j) };
                for (acc, &xc) in acc.iter_mut().zip(&xc) {
                    *acc = wr.mul_add(xc, *acc);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (y, acc) in acc.iter().enumerate() {
                // SAFETY: r * d + c0 + y < R * d <= out.len().
                unsafe { put(out, r * d + c0 + y, acc.mul(scale[r])) };
            }
        }
        c0 += COLS;
    }
    for c in c0..d {
        let mut acc = [lanes.zero(); R];
        for j in 0..t {
            // SAFETY: j * d + c < t * d <= x.len().
            let xc = unsafe { at(lanes, x, j * d + c) };
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: r * t + j < R * t <= w.len().
                *acc = unsafe { at(lanes, w, r * t + j) }.mul_add(xc, *acc);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            // SAFETY: r * d + c < R * d <= out.len().
            unsafe { put(out, r * d + c, acc.mul(scale[r])) };
        }
    }
}

/// Calls `$f::<L, FMA, R, KEYS, COLS>(args)` for `R` = the run-time `$rows` (1 to 4).
macro_rules! by_rows {
    ($rows:expr, $f:ident::<$l:ident, $fma:ident, $k:ident, $c:ident>($($arg:expr),* $(,)?)) => {
        match $rows {
            4 => $f::<$l, $fma, 4, $k, $c>($($arg),*),
            3 => $f::<$l, $fma, 3, $k, $c>($($arg),*),
            2 => $f::<$l, $fma, 2, $k, $c>($($arg),*),
            _ => $f::<$l, $fma, 1, $k, $c>($($arg),*),
        }
    };
}

/// The forward of query rows `i0..i0 + R` of a group (see [`forward_group`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_rows<L: Lanes, const FMA: bool, const R: usize, const KEYS: usize, const COLS: usize>(
    lanes: L,
    i0: usize,
    t: usize,
    d: usize,
    scale: f32,
    [q, k, v]: [&[V]; 3],
    o: &mut [V],
    lse: &mut [V],
    s: &mut [V],
) {
    let s = &mut s[..R * t];
    dots::<L, R, KEYS>(lanes, &q[i0 * d..(i0 + R) * d], k, t, d, scale, s);
    let mut inv = [lanes.zero(); R];
    for (r, inv) in inv.iter_mut().enumerate() {
        let s = &mut s[r * t..(r + 1) * t];
        // SAFETY: 0 < t = s.len() (the caller's i0 < t).
        let mut m = unsafe { at(lanes, s, 0) };
        for j in 1..t {
            // SAFETY: j < t = s.len(), here and in the loops below.
            m = m.max(unsafe { at(lanes, s, j) });
        }
        for j in 0..t {
            // SAFETY: as above.
            let x = unsafe { at(lanes, s, j) };
            // SAFETY: as above.
            unsafe { put(s, j, x.sub(m)) };
        }
        exp_all::<FMA>(s);
        let mut sum = lanes.zero();
        for j in 0..t {
            // SAFETY: as above.
            sum = sum.add(unsafe { at(lanes, s, j) });
        }
        let (mut mv, mut sv) = ([0.0f32; G], [0.0f32; G]);
        // SAFETY: both arrays hold 16 floats.
        unsafe {
            m.store(mv.as_mut_ptr());
            sum.store(sv.as_mut_ptr());
        }
        lse[i0 + r] = std::array::from_fn(|l| mv[l] + sv[l].ln());
        // O = (E V) / sum: the normalisation costs d multiplies rather than t.
        let iv: V = std::array::from_fn(|l| 1.0 / sv[l]);
        // SAFETY: `iv` holds 16 floats.
        *inv = unsafe { lanes.load(iv.as_ptr()) };
    }
    weighted_rows::<L, R, COLS>(lanes, s, t, v, d, inv, &mut o[i0 * d..(i0 + R) * d]);
}

/// Forward of one group: `q`, `k`, `v` are `[t][d]` vectors; writes `o` (`[t][d]`), `lse`
/// (`[t]`), using `s` (`[ROWS][t]`) for rows of scores.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_group<L: Lanes, const FMA: bool, const ROWS: usize, const KEYS: usize, const COLS: usize>(
    lanes: L,
    t: usize,
    d: usize,
    scale: f32,
    q: &[V],
    k: &[V],
    v: &[V],
    o: &mut [V],
    lse: &mut [V],
    s: &mut [V],
) {
    const { assert!(ROWS <= MAX_ROWS) };
    assert!(q.len() >= t * d && o.len() >= t * d && lse.len() >= t && s.len() >= ROWS * t);
    for i0 in (0..t).step_by(ROWS) {
        by_rows!(ROWS.min(t - i0), forward_rows::<L, FMA, KEYS, COLS>(lanes, i0, t, d, scale, [q, k, v], o, lse, s));
    }
}

/// The P and dS rows and the dQ of query rows `i0..i0 + R` of a group (see [`backward_group`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_rows<L: Lanes, const FMA: bool, const R: usize, const KEYS: usize, const COLS: usize>(
    lanes: L,
    i0: usize,
    t: usize,
    d: usize,
    scale: f32,
    [q, k, v, o, dout]: [&[V]; 5],
    lse: &[V],
    [dq, dk, dv]: [&mut [V]; 3],
    p: &mut [V],
    ds: &mut [V],
) {
    let n = t * d;
    assert!(
        i0 + R <= t && lse.len() >= t && [o, dout, &*dk, &*dv].iter().all(|x| x.len() >= n),
        "attention: rows too short"
    );
    let (p, ds) = (&mut p[..R * t], &mut ds[..R * t]);
    // P = exp(scale q_i . k_j - lse_i)
    dots::<L, R, KEYS>(lanes, &q[i0 * d..(i0 + R) * d], k, t, d, scale, p);
    // dP = dO_i . v_j
    dots::<L, R, KEYS>(lanes, &dout[i0 * d..(i0 + R) * d], v, t, d, 1.0, ds);
    for r in 0..R {
        let i = i0 + r;
        let (p, ds) = (&mut p[r * t..(r + 1) * t], &mut ds[r * t..(r + 1) * t]);
        // SAFETY: i < t <= lse.len() (asserted above).
        let l_i = unsafe { at(lanes, lse, i) };
        for j in 0..t {
            // SAFETY: j < t = p.len().
            let x = unsafe { at(lanes, p, j) };
            // SAFETY: as above.
            unsafe { put(p, j, x.sub(l_i)) };
        }
        exp_all::<FMA>(p);
        // dS = P (dP - delta_i), delta_i = dO_i . O_i
        let mut delta = lanes.zero();
        for c in 0..d {
            // SAFETY: i * d + c < t * d <= dout.len(), o.len() (asserted above).
            delta = unsafe { at(lanes, dout, i * d + c).mul_add(at(lanes, o, i * d + c), delta) };
        }
        for j in 0..t {
            // SAFETY: j < t = p.len() = ds.len().
            let x = unsafe { at(lanes, p, j).mul(at(lanes, ds, j).sub(delta)) };
            // SAFETY: as above.
            unsafe { put(ds, j, x) };
        }
    }
    // dQ_i = scale sum_j dS_ij k_j
    weighted_rows::<L, R, COLS>(lanes, ds, t, k, d, [lanes.splat(scale); R], &mut dq[i0 * d..(i0 + R) * d]);
    // dV_j += P_ij dO_i, dK_j += dS_ij q_i, for the block's rows i in order.
    let (rows_g, rows_q) = (&dout[i0 * d..(i0 + R) * d], &q[i0 * d..(i0 + R) * d]);
    for j in 0..t {
        // SAFETY: r * t + j < R * t = p.len().
        let pj: [L::V; R] = std::array::from_fn(|r| unsafe { at(lanes, p, r * t + j) });
        // SAFETY: likewise for ds.
        let dsj: [L::V; R] = std::array::from_fn(|r| unsafe { at(lanes, ds, r * t + j) });
        for c in 0..d {
            // SAFETY: j * d + c < t * d <= dv.len(), dk.len() (asserted above).
            let (mut av, mut ak) = unsafe { (at(lanes, dv, j * d + c), at(lanes, dk, j * d + c)) };
            for r in 0..R {
                // SAFETY: r * d + c < R * d = rows_g.len() = rows_q.len().
                unsafe {
                    av = pj[r].mul_add(at(lanes, rows_g, r * d + c), av);
                    ak = dsj[r].mul_add(at(lanes, rows_q, r * d + c), ak);
                }
            }
            // SAFETY: as for the loads of dv and dk above.
            unsafe {
                put(dv, j * d + c, av);
                put(dk, j * d + c, ak);
            }
        }
    }
}

/// The gradients of one group into `grads` (dq, dk, dv, `[t][d]` each): `x` holds q, k, v, o
/// and dout (`[t][d]` each), `lse` the rows' log-sum-exp; `rows` scratch for `ROWS` rows of P and
/// of dS (`[ROWS][t]` each).
///
/// The rows i go `ROWS` at a time: first their P and dS rows and their dQ, then one pass over dK
/// and dV adding all the block's rows' terms (in row order), so that the `2 t d` accumulators,
/// which outgrow L1 at 50 x 16, are read and written once per `ROWS` rows instead of once per row.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_group<L: Lanes, const FMA: bool, const ROWS: usize, const KEYS: usize, const COLS: usize>(
    lanes: L,
    t: usize,
    d: usize,
    scale: f32,
    x: &[Vec<V>; 5],
    lse: &[V],
    grads: &mut [Vec<V>; 3],
    rows: &mut [Vec<V>; 2],
) {
    let [q, k, v, o, dout] = x;
    let [dq, dk, dv] = grads;
    let [p, ds] = rows;
    let n = t * d;
    assert!([q, k, v, o, dout].iter().all(|x| x.len() >= n) && [&*dq, &*dk, &*dv].iter().all(|x| x.len() >= n));
    const { assert!(ROWS <= MAX_ROWS) };
    assert!(lse.len() >= t && p.len() >= ROWS * t && ds.len() >= ROWS * t);
    dk.fill([0.0; G]);
    dv.fill([0.0; G]);
    let inputs: [&[V]; 5] = [q, k, v, o, dout];
    for i0 in (0..t).step_by(ROWS) {
        let block = ROWS.min(t - i0);
        by_rows!(block, backward_rows::<L, FMA, KEYS, COLS>(lanes, i0, t, d, scale, inputs, lse, [dq, dk, dv], p, ds));
    }
    let scale = lanes.splat(scale);
    for j in 0..n {
        // SAFETY: j < n <= dk.len().
        let x = unsafe { at(lanes, dk, j) };
        // SAFETY: as above.
        unsafe { put(dk, j, x.mul(scale)) };
    }
}

/// One group's work, handed to the copy of the kernels for an instruction set ([`run_group`]).
enum Job<'a> {
    /// [`forward_group`]'s arguments after `t, d, scale`.
    Forward { q: &'a [V], k: &'a [V], v: &'a [V], o: &'a mut [V], lse: &'a mut [V], s: &'a mut [V] },
    /// [`backward_group`]'s arguments after `t, d, scale`.
    Backward { x: &'a [Vec<V>; 5], lse: &'a [V], grads: &'a mut [Vec<V>; 3], rows: &'a mut [Vec<V>; 2] },
}

#[inline(always)]
fn run_job<L: Lanes, const FMA: bool, const ROWS: usize, const KEYS: usize, const COLS: usize>(
    lanes: L,
    t: usize,
    d: usize,
    scale: f32,
    job: Job,
) {
    match job {
        Job::Forward { q, k, v, o, lse, s } => {
            forward_group::<L, FMA, ROWS, KEYS, COLS>(lanes, t, d, scale, q, k, v, o, lse, s)
        }
        Job::Backward { x, lse, grads, rows } => {
            backward_group::<L, FMA, ROWS, KEYS, COLS>(lanes, t, d, scale, x, lse, grads, rows)
        }
    }
}

/// Runs `job` in the copy of the kernels for `isa`. The blocking fits the register file: with 32
/// zmm, 4 rows by 4 keys (16 accumulators, 4 + 1 operands); with 16 ymm, two of which make one
/// vector, 2 by 2 (4 accumulators, 2 + 1 operands: 14 registers). Panics if this CPU cannot run
/// `isa`.
fn run_group(isa: Isa, t: usize, d: usize, scale: f32, job: Job) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma,avx512f")]
        fn avx512(lanes: lanes::Avx512, t: usize, d: usize, scale: f32, job: Job) {
            run_job::<_, true, 4, 4, 4>(lanes, t, d, scale, job)
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2(lanes: lanes::Avx2, t: usize, d: usize, scale: f32, job: Job) {
            run_job::<_, true, 2, 2, 2>(lanes, t, d, scale, job)
        }
        match isa {
            Isa::Avx512 => {
                let Some(lanes) = lanes::Avx512::detect() else { simd::unavailable(isa) };
                // SAFETY: `lanes` proves that this CPU has the function's features.
                return unsafe { avx512(lanes, t, d, scale, job) };
            }
            Isa::Avx2Fma => {
                let Some(lanes) = lanes::Avx2::detect() else { simd::unavailable(isa) };
                // SAFETY: likewise.
                return unsafe { avx2(lanes, t, d, scale, job) };
            }
            Isa::Portable => {}
        }
    }
    let _ = isa;
    run_job::<_, false, 2, 2, 2>(lanes::Plain, t, d, scale, job)
}

/// A group's scratch: its interleaved operands and rows.
struct Group {
    t: usize,
    d: usize,
    /// q, k, v, o, dout (`[t][d]` each; dout in the backward only).
    x: [Vec<V>; 5],
    /// dq, dk, dv (`[t][d]` each, backward only).
    grads: [Vec<V>; 3],
    /// Log-sum-exp of each row (`[t]`).
    lse: Vec<V>,
    /// `MAX_ROWS` rows of scores or probabilities, and of dS (`[MAX_ROWS][t]` each).
    rows: [Vec<V>; 2],
    /// De-interleaved results, one head's `[t, d]` after another: o in the forward; dq, dk, dv in
    /// the backward.
    heads: [Vec<f32>; 3],
}

impl Group {
    fn new(s: &AttentionSpec, backward: bool) -> Group {
        let (t, d) = (s.seq, s.dim);
        let n = t * d;
        let b = usize::from(backward);
        let zeros = |len: usize| vec![[0.0f32; G]; len];
        Group {
            t,
            d,
            x: [zeros(n), zeros(n), zeros(n), zeros(n), zeros(b * n)],
            grads: [zeros(b * n), zeros(b * n), zeros(b * n)],
            lse: zeros(t),
            rows: [zeros(MAX_ROWS * t), zeros(b * MAX_ROWS * t)],
            heads: [vec![0.0; G * n], vec![0.0; b * G * n], vec![0.0; b * G * n]],
        }
    }

    /// Interleaves operand `which` of the heads `lanes` (row `i` of head `h` at `layout.row(h, i)`
    /// of `src`).
    fn load(&mut self, which: usize, src: &[f32], layout: &HeadLayout, lanes: &[usize; G]) {
        let (t, d) = (self.t, self.d);
        let dst = self.x[which].as_flattened_mut();
        for i in 0..t {
            let rows: [&[f32]; G] = std::array::from_fn(|l| {
                let at = layout.row(lanes[l], i);
                &src[at..at + d]
            });
            interleave::<G>(&mut dst[i * d * G..(i + 1) * d * G], &rows, d);
        }
    }

    /// De-interleaves `x` (`[t][d]` vectors) into `heads`: lane l's `[t, d]` at `l * t * d`.
    fn unload(heads: &mut [f32], x: &[V], t: usize, d: usize) {
        let mut pieces = heads.chunks_exact_mut(t * d);
        let mut lanes: [&mut [f32]; G] = std::array::from_fn(|_| pieces.next().unwrap());
        deinterleave::<G>(&mut lanes, x.as_flattened(), t * d);
    }
}

/// The heads of samples `range` (each `group` heads), `G` at a time: the lanes of each step, the
/// last group padded with its last head, and how many lanes are real.
fn head_groups(range: std::ops::Range<usize>, group: usize) -> impl Iterator<Item = ([usize; G], usize)> {
    let (first, last) = (range.start * group, range.end * group);
    (first..last).step_by(G).map(move |h0| {
        let real = G.min(last - h0);
        (std::array::from_fn(|l| h0 + l.min(real - 1)), real)
    })
}

/// `out = softmax(q k^T scale) v` per head, and the rows' log-sum-exp of the scaled scores, for
/// q, k, v laid out as `layouts` and `out` as `out_layout`. Work is split over samples (groups of
/// `out_layout.group` heads), whose output blocks are contiguous.
pub fn attention_strided<'a>(
    src: [&[f32]; 3],
    layouts: [HeadLayout; 3],
    s: &AttentionSpec,
    out: impl Out<'a>,
    out_layout: HeadLayout,
    lse: impl Out<'a>,
) {
    let (t, d) = (s.seq, s.dim);
    let group = out_layout.group.max(1);
    assert!(s.heads.is_multiple_of(group), "attention: heads not a multiple of the group");
    let samples = s.heads / group;
    assert!(out.len() == samples * out_layout.sample_stride, "attention: output size");
    assert!(lse.len() == s.heads * t, "attention: lse size");
    if s.heads * t * d == 0 {
        // No dimensions: every score is 0, each row's softmax is uniform.
        lse.init().fill((t as f32).ln());
        return;
    }
    for (x, l) in src.iter().zip(&layouts) {
        assert!(x.len() >= l.row(s.heads - 1, t - 1) + d, "attention: input too short");
    }
    if per_head(s) {
        return attention_heads::attention_strided(src, layouts, s, out, out_layout, lse);
    }
    let isa = Isa::current();
    let outputs = (units(out, out_layout.sample_stride), units(lse, group * t));
    parallel::for_each_units(samples, group as f64 * ns_per_head(s, false), outputs, |range, (out, lse)| {
        let mut g = Group::new(s, false);
        let (out, lse) = (out.data.init(), lse.data.init());
        let first_head = range.start * group;
        for (lanes, real) in head_groups(range, group) {
            for w in 0..3 {
                g.load(w, src[w], &layouts[w], &lanes);
            }
            let [q, k, v, o, _] = &mut g.x;
            run_group(isa, t, d, s.scale, Job::Forward { q, k, v, o, lse: &mut g.lse, s: &mut g.rows[0] });
            Group::unload(&mut g.heads[0], o, t, d);
            for (l, &h) in lanes.iter().enumerate().take(real) {
                let head = &g.heads[0][l * t * d..(l + 1) * t * d];
                let sample = h / group - first_head / group;
                let base = sample * out_layout.sample_stride + (h % group) * out_layout.head_stride + out_layout.offset;
                for i in 0..t {
                    let at = base + i * out_layout.row_stride;
                    out[at..at + d].copy_from_slice(&head[i * d..(i + 1) * d]);
                }
                for (i, x) in lse[(h - first_head) * t..(h - first_head + 1) * t].iter_mut().enumerate() {
                    *x = g.lse[i][l];
                }
            }
        }
    });
}

/// `out = softmax(q k^T scale) v` per head of `[heads, seq, dim]` tensors.
pub fn attention<'a>(q: &[f32], k: &[f32], v: &[f32], s: &AttentionSpec, out: impl Out<'a>, lse: impl Out<'a>) {
    let l = HeadLayout::contiguous(s.seq, s.dim);
    attention_strided([q, k, v], [l; 3], s, out, l, lse);
}

/// Attention on the fused projection `qkv: [N, seq, 3, H, dim]`, writing the merged heads
/// `out: [N, seq, H, dim]`.
pub fn attention_qkv<'a>(qkv: &[f32], num_heads: usize, s: &AttentionSpec, out: impl Out<'a>, lse: impl Out<'a>) {
    let l = |w| HeadLayout::qkv(s.seq, num_heads, s.dim, w);
    attention_strided([qkv; 3], [l(0), l(1), l(2)], s, out, HeadLayout::merged(s.seq, num_heads, s.dim), lse);
}

/// Copies `[t, d]` rows into `dst` at `start` with row stride `ld`.
#[inline(always)]
fn put_rows(src: &[f32], t: usize, d: usize, dst: &mut [f32], start: usize, ld: usize) {
    for i in 0..t {
        dst[start + i * ld..start + i * ld + d].copy_from_slice(&src[i * d..(i + 1) * d]);
    }
}

/// The gradients of the heads of samples `range`, handed to `put(u, hh, [dq, dk, dv])` (`u` the
/// sample's index within the range, `[t, d]` each): in groups of `G` heads, or head by head for
/// big heads (`per_head`). `isa` is chosen by the calling thread: a worker thread does not see a
/// test's forced instruction set.
#[allow(clippy::too_many_arguments)]
fn backward_samples(
    src: [&[f32]; 3],
    layouts: [HeadLayout; 3],
    out: &[f32],
    dout: &[f32],
    out_layout: &HeadLayout,
    lse: &[f32],
    s: &AttentionSpec,
    range: std::ops::Range<usize>,
    isa: Isa,
    put: impl FnMut(usize, usize, [&[f32]; 3]),
) {
    let run = if per_head(s) { attention_heads::backward_samples } else { backward_groups };
    run(src, layouts, out, dout, out_layout, lse, s, range, isa, put)
}

/// [`backward_samples`] in groups of `G` heads (`backward_group`).
#[allow(clippy::too_many_arguments)]
fn backward_groups(
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
    let first_sample = range.start;
    let mut g = Group::new(s, true);
    for (lanes, real) in head_groups(range, group) {
        for w in 0..3 {
            g.load(w, src[w], &layouts[w], &lanes);
        }
        g.load(3, out, out_layout, &lanes);
        g.load(4, dout, out_layout, &lanes);
        for (i, x) in g.lse.iter_mut().enumerate() {
            *x = std::array::from_fn(|l| lse[lanes[l] * t + i]);
        }
        let job = Job::Backward { x: &g.x, lse: &g.lse, grads: &mut g.grads, rows: &mut g.rows };
        run_group(isa, t, d, s.scale, job);
        for (h, x) in g.heads.iter_mut().zip(&g.grads) {
            Group::unload(h, x, t, d);
        }
        for (l, &h) in lanes.iter().enumerate().take(real) {
            let part = |w: usize| &g.heads[w][l * t * d..(l + 1) * t * d];
            put(h / group - first_sample, h % group, [part(0), part(1), part(2)]);
        }
    }
}

fn check_backward_inputs(
    src: [&[f32]; 3],
    layouts: &[HeadLayout; 3],
    out: &[f32],
    dout: &[f32],
    ol: &HeadLayout,
    lse: &[f32],
    s: &AttentionSpec,
) {
    let (t, d) = (s.seq, s.dim);
    for (x, l) in src.iter().zip(layouts) {
        assert!(x.len() >= l.row(s.heads - 1, t - 1) + d, "attention_backward: input too short");
    }
    assert!(out.len() >= ol.row(s.heads - 1, t - 1) + d && dout.len() >= ol.row(s.heads - 1, t - 1) + d);
    assert!(lse.len() >= s.heads * t, "attention_backward: lse too short");
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
    let (t, d) = (s.seq, s.dim);
    let n = s.heads * t * d;
    assert!(dq.len() == n && dk.len() == n && dv.len() == n, "attention_backward: outputs");
    if n == 0 {
        return;
    }
    let l = HeadLayout::contiguous(t, d);
    check_backward_inputs([q, k, v], &[l; 3], out, dout, &l, lse, s);
    let hs = t * d;
    let isa = Isa::current();
    let outputs = (units(dq, hs), units(dk, hs), units(dv, hs));
    parallel::for_each_units(s.heads, ns_per_head(s, true), outputs, |range, (dq, dk, dv)| {
        let mut grads = [dq.data.init(), dk.data.init(), dv.data.init()];
        backward_samples([q, k, v], [l; 3], out, dout, &l, lse, s, range, isa, |u, _, g| {
            for (dst, src) in grads.iter_mut().zip(g) {
                dst[u * hs..(u + 1) * hs].copy_from_slice(src);
            }
        });
    });
}

/// The gradient `dqkv: [N, seq, 3, H, dim]` of [`attention_qkv`], `dout` as `out`: `[N, seq, H, dim]`.
#[allow(clippy::too_many_arguments)]
pub fn attention_qkv_backward<'a>(
    qkv: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    num_heads: usize,
    s: &AttentionSpec,
    dqkv: impl Out<'a>,
) {
    let (t, d) = (s.seq, s.dim);
    let layouts = [0, 1, 2].map(|w| HeadLayout::qkv(t, num_heads, d, w));
    let ol = HeadLayout::merged(t, num_heads, d);
    let samples = s.heads / num_heads.max(1);
    assert!(dqkv.len() == samples * layouts[0].sample_stride, "attention_qkv_backward: output size");
    if s.heads * t * d == 0 {
        let _ = dqkv.init();
        return;
    }
    check_backward_inputs([qkv; 3], &layouts, out, dout, &ol, lse, s);
    let ss = layouts[0].sample_stride;
    let isa = Isa::current();
    parallel::for_each_units(samples, num_heads as f64 * ns_per_head(s, true), units(dqkv, ss), |range, dqkv| {
        let dqkv = dqkv.data.init();
        backward_samples([qkv; 3], layouts, out, dout, &ol, lse, s, range, isa, |u, hh, g| {
            for (w, src) in g.iter().enumerate() {
                let l = &layouts[w];
                put_rows(src, t, d, dqkv, u * ss + hh * l.head_stride + l.offset, l.row_stride);
            }
        });
    });
}
