//! Sums: `sum_axis` (`[outer, axis, inner] -> [outer, inner]`: the bias gradients, column sums of
//! `[rows, n]`; the loss, a sum of everything) and `broadcast_axis`, its backward; and the block
//! scheme that every column sum of the fast kernels uses (LayerNorm's `dgamma` and `dbeta` too).
//!
//! # Deterministic, thread-count independent sums
//! A sum over many rows is cut into blocks of [`ROW_BLOCK`] rows. Each block's column sums are
//! accumulated in f32, row after row (vectorised along the columns), into a partial row of its
//! own; then the partial rows are added pairwise in a fixed tree ([`add_up_blocks`]). Blocks are
//! the units handed to threads, so the threads only decide who computes which partial row, never
//! the order of any addition: the result has the same bits for any thread count. The error is that
//! of a sum of `ROW_BLOCK` terms plus a pairwise sum of `rows / ROW_BLOCK` partials, about
//! `(ROW_BLOCK + log2(blocks)) u sum|x|` at worst and its square root in practice.
//!
//! A sum along a contiguous run (`inner == 1`) uses `simd::sum` on pieces of `RUN_BLOCK` values
//! and the same pairwise tree over the pieces.

use crate::backend::AxisSpec;
use crate::cpu::parallel::{self, Out, units};

use super::simd::{self, Isa, multiversion};

/// Rows summed sequentially into one partial row.
pub const ROW_BLOCK: usize = 32;
/// Columns per unit of work of a column sum.
const COL_BLOCK: usize = 512;
/// Values of a contiguous run summed by one `simd::sum`.
const RUN_BLOCK: usize = 2048;
/// Estimated cost per value summed (ns): a load and an add, the data streaming from memory.
const NS_PER_VALUE: f64 = 0.4;

multiversion! {
    /// Adds up `blocks` partial rows of `width` values (`partials[b * width..][..width]`) pairwise,
    /// in a fixed order; the total ends in the first row.
    pub fn add_up_blocks<FMA>(partials: &mut [f32], blocks: usize, width: usize) {
        let mut stride = 1;
        while stride < blocks {
            let mut b = 0;
            while b + stride < blocks {
                let (lo, hi) = partials.split_at_mut((b + stride) * width);
                for (a, &c) in lo[b * width..(b + 1) * width].iter_mut().zip(&hi[..width]) {
                    *a += c;
                }
                b += 2 * stride;
            }
            stride *= 2;
        }
    }
}

multiversion! {
    /// Column sums of `rows` rows of `width` values with row stride `stride`, sequentially into
    /// `out` (overwritten).
    fn column_sum<FMA>(x: &[f32], rows: usize, stride: usize, out: &mut [f32]) {
        out.fill(0.0);
        let width = out.len();
        for r in 0..rows {
            for (o, &v) in out.iter_mut().zip(&x[r * stride..r * stride + width]) {
                *o += v;
            }
        }
    }
}

multiversion! {
    fn run_sums<FMA>(x: &[f32], out: &mut [f32]) {
        for (o, piece) in out.iter_mut().zip(x.chunks(RUN_BLOCK)) {
            *o = simd::sum(piece);
        }
    }
}

/// `out[o, i] = sum_a x[o, a, i]`.
pub fn sum_axis(x: &[f32], s: &AxisSpec, out: &mut [f32]) {
    let &AxisSpec { outer, axis, inner } = s;
    assert!(x.len() >= outer * axis * inner && out.len() == outer * inner, "sum_axis: sizes");
    let isa = Isa::current();
    if outer * inner == 0 {
        return;
    }
    if axis == 0 {
        out.fill(0.0);
        return;
    }
    if inner == 1 {
        // Contiguous runs: pieces of RUN_BLOCK values, then pairwise over each run's pieces.
        let pieces = axis.div_ceil(RUN_BLOCK);
        let mut partial = vec![0.0f32; outer * pieces];
        parallel::for_each_chunk(&mut partial[..], pieces, NS_PER_VALUE * axis as f64, |start, part| {
            for (o, dst) in part.chunks_mut(pieces).enumerate() {
                let row = start / pieces + o;
                run_sums(isa, &x[row * axis..(row + 1) * axis], dst);
            }
        });
        for (o, dst) in out.iter_mut().enumerate() {
            let p = &mut partial[o * pieces..(o + 1) * pieces];
            add_up_blocks(isa, p, pieces, 1);
            *dst = p[0];
        }
        return;
    }
    // Column sums. Units: (o, column block, row block), laid out so that each unit's partial row
    // is contiguous: partial[((o * col_blocks + cb) * row_blocks + rb) * cw..][..cw].
    let cw = inner.min(COL_BLOCK);
    let col_blocks = inner.div_ceil(cw);
    let row_blocks = axis.div_ceil(ROW_BLOCK);
    let n_units = outer * col_blocks * row_blocks;
    let mut partial = vec![0.0f32; n_units * cw];
    let cost = NS_PER_VALUE * (ROW_BLOCK * cw) as f64;
    parallel::for_each_units(n_units, cost, units(&mut partial[..], cw), |range, part| {
        for (u, dst) in range.zip(part.data.init().chunks_exact_mut(cw)) {
            let (rb, rest) = (u % row_blocks, u / row_blocks);
            let (cb, o) = (rest % col_blocks, rest / col_blocks);
            let c0 = cb * cw;
            let width = cw.min(inner - c0);
            let r0 = rb * ROW_BLOCK;
            let rows = ROW_BLOCK.min(axis - r0);
            let src = &x[(o * axis + r0) * inner + c0..];
            column_sum(isa, src, rows, inner, &mut dst[..width]);
        }
    });
    for o in 0..outer {
        for cb in 0..col_blocks {
            let c0 = cb * cw;
            let width = cw.min(inner - c0);
            let p = &mut partial[(o * col_blocks + cb) * row_blocks * cw..][..row_blocks * cw];
            add_up_blocks(isa, p, row_blocks, cw);
            out[o * inner + c0..o * inner + c0 + width].copy_from_slice(&p[..width]);
        }
    }
}

/// `out[o, a, i] = x[o, i]`.
pub fn broadcast_axis<'a>(x: &[f32], s: &AxisSpec, out: impl Out<'a>) {
    let &AxisSpec { outer, axis, inner } = s;
    assert!(x.len() >= outer * inner && out.len() == outer * axis * inner, "broadcast_axis: sizes");
    if inner == 0 {
        return;
    }
    // Units: output rows of `inner` values, row `u` a copy of x row `u / axis`.
    let rows_per_unit = (4096 / inner).max(1);
    let cost = 0.5 * (rows_per_unit * inner) as f64;
    parallel::for_each_chunk(out, rows_per_unit * inner, cost, |start, part| {
        for (r, dst) in part.chunks_exact_mut(inner).enumerate() {
            let row = start / inner + r;
            let o = row / axis.max(1);
            dst.copy_from_slice(&x[o * inner..(o + 1) * inner]);
        }
    });
}
