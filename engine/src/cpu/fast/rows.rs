//! Moving whole rows: `copy_rows_into` (token slices and concatenation), `gather_rows` (the
//! masked patch gather, with MAE's mask or cls token as a fill row) and its backward
//! `scatter_add_rows` (and `sum_fill_rows` for the fill). Each works sample by sample (a sample
//! owns a contiguous slab of every output), so samples are the units split over threads; within a
//! sample the scatter adds in the order of its indices, so repeated indices give the same bits for
//! any thread count. `sum_fill_rows` splits its one output row by columns instead, each adding in
//! the order of the picks.

use crate::backend::{CopyRowsSpec, GatherSpec};
use crate::cpu::parallel::{self, Out, units};

use super::simd;

/// Estimated cost per value moved (ns): a copy streams at ~15-30 GB/s here, so a sample's rows are
/// cheap and only large batches are worth a second thread.
const NS_PER_VALUE: f64 = 0.25;

/// `dst[n, dst_offset + r, :] = src[n, src_offset + r, :]` for `r < rows`; the rest of `dst` is left
/// as it is.
pub fn copy_rows_into(src: &[f32], dst: &mut [f32], s: &CopyRowsSpec) {
    let w = s.width;
    assert!(s.src_offset + s.rows <= s.src_rows && s.dst_offset + s.rows <= s.dst_rows, "copy_rows_into: rows");
    assert!(src.len() >= s.batch * s.src_rows * w && dst.len() >= s.batch * s.dst_rows * w, "copy_rows_into: sizes");
    let slab = s.dst_rows * w;
    if s.batch == 0 || slab == 0 || s.rows == 0 {
        return;
    }
    let dst = &mut dst[..s.batch * slab];
    parallel::for_each_units(s.batch, NS_PER_VALUE * (s.rows * w) as f64, units(dst, slab), |range, part| {
        for (n, d) in range.zip(part.data.chunks_exact_mut(slab)) {
            let from = (n * s.src_rows + s.src_offset) * w;
            let to = s.dst_offset * w;
            simd::copy(&src[from..from + s.rows * w], &mut d[to..to + s.rows * w]);
        }
    });
}

/// `out[n, i, :] = x[n, idx[n, i], :]`, or `fill` (`[width]`) where `idx[n, i] == rows`. Panics if
/// an index is out of range.
pub fn gather_rows<'a>(x: &[f32], fill: Option<&[f32]>, idx: &[u32], s: &GatherSpec, out: impl Out<'a>) {
    let w = s.width;
    assert!(x.len() >= s.batch * s.rows * w && idx.len() >= s.batch * s.picks, "gather_rows: sizes");
    assert!(fill.is_none_or(|f| f.len() >= w), "gather_rows: fill size");
    assert_eq!(out.len(), s.batch * s.picks * w, "gather_rows: output size");
    let slab = s.picks * w;
    if slab == 0 {
        return;
    }
    parallel::for_each_units(s.batch, NS_PER_VALUE * slab as f64, units(out, slab), |range, part| {
        for (n, o) in range.zip(part.data.init().chunks_exact_mut(slab)) {
            let x = &x[n * s.rows * w..(n + 1) * s.rows * w];
            for (dst, &i) in o.chunks_exact_mut(w).zip(&idx[n * s.picks..(n + 1) * s.picks]) {
                let i = i as usize;
                let src = match fill {
                    Some(fill) if i == s.rows => &fill[..w],
                    _ => &x[i * w..(i + 1) * w],
                };
                simd::copy(src, dst);
            }
        }
    });
}

/// `dx = 0; dx[n, idx[n, i], :] += dy[n, i, :]`, `dx` overwritten; picks at or past `rows` (a fill
/// row's) are left out.
pub fn scatter_add_rows<'a>(dy: &[f32], idx: &[u32], s: &GatherSpec, dx: impl Out<'a>) {
    let w = s.width;
    assert!(dy.len() >= s.batch * s.picks * w && idx.len() >= s.batch * s.picks, "scatter_add_rows: sizes");
    assert_eq!(dx.len(), s.batch * s.rows * w, "scatter_add_rows: output size");
    let slab = s.rows * w;
    if slab == 0 {
        return;
    }
    let cost = NS_PER_VALUE * ((s.rows + s.picks) * w) as f64;
    parallel::for_each_units(s.batch, cost, units(dx, slab), |range, part| {
        for (n, d) in range.zip(part.data.init().chunks_exact_mut(slab)) {
            d.fill(0.0);
            let dy = &dy[n * s.picks * w..(n + 1) * s.picks * w];
            for (g, &i) in dy.chunks_exact(w).zip(&idx[n * s.picks..(n + 1) * s.picks]) {
                let i = i as usize;
                if i >= s.rows {
                    continue;
                }
                for (a, &b) in d[i * w..(i + 1) * w].iter_mut().zip(g) {
                    *a += b;
                }
            }
        }
    });
}

/// Columns per unit of `sum_fill_rows`' work (a unit sums its columns over every pick).
const FILL_COLUMNS: usize = 64;

/// `out = sum of dy[n, i, :] over the picks with idx[n, i] == rows` (a fill row's gradient), `[width]`,
/// added in the order of the picks.
pub fn sum_fill_rows<'a>(dy: &[f32], idx: &[u32], s: &GatherSpec, out: impl Out<'a>) {
    let (w, picks) = (s.width, s.batch * s.picks);
    assert!(dy.len() >= picks * w && idx.len() >= picks, "sum_fill_rows: sizes");
    assert_eq!(out.len(), w, "sum_fill_rows: output size");
    let cost = NS_PER_VALUE * (picks * FILL_COLUMNS) as f64;
    parallel::for_each_chunk(out, FILL_COLUMNS, cost, |first, acc| {
        acc.fill(0.0);
        for (r, _) in idx[..picks].iter().enumerate().filter(|&(_, &i)| i as usize == s.rows) {
            let g = &dy[r * w + first..r * w + first + acc.len()];
            for (a, &b) in acc.iter_mut().zip(g) {
                *a += b;
            }
        }
    });
}
