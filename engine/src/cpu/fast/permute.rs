//! `permute`: a real copy of `x` with its axes reordered, as runs of contiguous values.
//!
//! The output is walked in order, row by row, where a row is the output's last axis after
//! simplification: axes of size 1 are dropped, and neighbouring output axes that are also
//! neighbours, in the same order, in the input are merged into one. The attention's head split
//! `[N, T, 3, H, hd] -> [3, N, H, T, hd]` and merge `[N, H, T, hd] -> [N, T, H, hd]` both keep `hd`
//! last, so each row is one contiguous run of `hd` values in the input: one copy per row (a
//! fixed-size one for 8 to 64 values: a `memcpy` call per 64-byte row costs more than the copy),
//! and the source offset of the next row is found by incrementing a multi-index (no division per
//! value, unlike the reference's index arithmetic). When the last axis moves, each row is a strided
//! gather. Rows are split over threads in chunks; every output value is a copy, so the result is
//! exact and independent of the split.

use crate::cpu::parallel::{self, Out};

/// Values per unit of work handed to a thread (rounded to whole rows).
const CHUNK: usize = 8192;
/// Estimated cost per value copied (ns).
const NS_PER_VALUE: f64 = 0.6;

/// `out = x.permute(perm)` for `x` of `shape`: `out[j] = x[i]` where `i[perm[a]] = j[a]`.
pub fn permute<'a>(x: &[f32], shape: &[usize], perm: &[usize], out: impl Out<'a>) {
    let total: usize = shape.iter().product();
    assert!(perm.len() == shape.len() && x.len() >= total && out.len() == total, "permute: sizes");
    if total == 0 {
        return;
    }
    // Input strides, then the output axes as (size, input stride), simplified.
    let mut in_strides = vec![1usize; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        in_strides[a] = in_strides[a + 1] * shape[a + 1];
    }
    let mut axes: Vec<(usize, usize)> = Vec::with_capacity(perm.len());
    for &p in perm {
        let (size, stride) = (shape[p], in_strides[p]);
        if size == 1 {
            continue;
        }
        match axes.last_mut() {
            Some(last) if last.1 == stride * size => *last = (last.0 * size, stride),
            _ => axes.push((size, stride)),
        }
    }
    let Some(&(len, stride)) = axes.last() else {
        out.init().copy_from_slice(&x[..total]);
        return;
    };
    let outer = &axes[..axes.len() - 1];
    let rows_per_chunk = (CHUNK / len).max(1);
    parallel::for_each_chunk(out, rows_per_chunk * len, NS_PER_VALUE * (rows_per_chunk * len) as f64, |start, part| {
        // The multi-index of the first row of this part over the outer axes, and its source.
        let mut idx = vec![0usize; outer.len()];
        let mut rest = start / len;
        let mut src = 0;
        for (a, &(size, st)) in outer.iter().enumerate().rev() {
            idx[a] = rest % size;
            rest /= size;
            src += idx[a] * st;
        }
        for row in part.chunks_mut(len) {
            if stride == 1 {
                copy_run(&x[src..src + len], row);
            } else {
                for (i, o) in row.iter_mut().enumerate() {
                    *o = x[src + i * stride];
                }
            }
            // Next row: increment the multi-index, last outer axis fastest.
            for (a, &(size, st)) in outer.iter().enumerate().rev() {
                idx[a] += 1;
                src += st;
                if idx[a] < size {
                    break;
                }
                idx[a] = 0;
                src -= size * st;
            }
        }
    });
}

/// `dst.copy_from_slice(src)`, with the short runs of attention's head dims as fixed-size copies:
/// a `memcpy` call per 64-byte row costs more than the copy.
#[inline(always)]
fn copy_run(src: &[f32], dst: &mut [f32]) {
    #[inline(always)]
    fn fixed<const N: usize>(src: &[f32], dst: &mut [f32]) {
        let d: &mut [f32; N] = dst.try_into().unwrap();
        *d = src.try_into().unwrap();
    }
    match dst.len() {
        8 => fixed::<8>(src, dst),
        16 => fixed::<16>(src, dst),
        32 => fixed::<32>(src, dst),
        64 => fixed::<64>(src, dst),
        _ => dst.copy_from_slice(src),
    }
}
