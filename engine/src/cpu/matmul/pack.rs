//! Packing: copies a block of op(A) or op(B) into the sliver layout the micro-kernels read, so that
//! the kernel sees unit-stride, aligned, zero-padded data whatever the transposes and edges.
//!
//! Both operands are packed by the same routine. A block is seen as a strided view
//! `src[x * sx + p * sp]`, x along the sliver dimension (the rows of op(A), or the columns of
//! op(B)) and p along k:
//!
//! | operand          | x = | sx | sp |
//! |------------------|-----|----|----|
//! | A, not transposed | i  | k  | 1  |
//! | A, transposed     | i  | 1  | m  |
//! | B, not transposed | j  | 1  | n  |
//! | B, transposed     | j  | k  | 1  |
//!
//! and packed into slivers of `W` (MR for A, NR for B): sliver `s`, step `p`, lane `r` goes to
//! `dst[s * W * kc + p * W + r]` = `src[(x0 + s * W + r) * sx + (p0 + p) * sp]`, zero for lanes past
//! the `len` valid ones. This is how the transposes disappear: all four cases leave the same layout.

/// A 64-byte aligned chunk of floats: the packed buffers are `Vec<Line>`, so every packed sliver
/// starts on a cache line (sliver sizes are multiples of 16 floats for B; A is broadcast from, so
/// its alignment does not matter beyond the buffer start).
#[repr(C, align(64))]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Line([f32; 16]);

/// A reusable, cache-line aligned packing buffer.
pub struct PackBuf {
    lines: Vec<Line>,
}

impl PackBuf {
    pub fn new(len: usize) -> Self {
        PackBuf {
            lines: vec![Line([0.0; 16]); len.div_ceil(16)],
        }
    }

    /// The first `len` floats (`len` at most what `new` was given, rounded up to 16).
    pub fn slice_mut(&mut self, len: usize) -> &mut [f32] {
        &mut bytemuck::cast_slice_mut::<Line, f32>(&mut self.lines)[..len]
    }
}

/// Packs the `len x kc` block starting at `(x0, p0)` of the view `src[x * sx + p * sp]` into
/// `len.div_ceil(W)` slivers of `W x kc` (see the module comment). `dst` must hold
/// `len.div_ceil(W) * W * kc` floats.
#[allow(clippy::too_many_arguments)]
pub fn pack<const W: usize>(
    dst: &mut [f32],
    src: &[f32],
    sx: usize,
    sp: usize,
    x0: usize,
    len: usize,
    p0: usize,
    kc: usize,
) {
    let slivers = len.div_ceil(W);
    debug_assert_eq!(dst.len(), slivers * W * kc);
    for (s, sliver) in dst.chunks_exact_mut(W * kc).enumerate() {
        let valid = W.min(len - s * W);
        let first_x = x0 + s * W;
        if sp == 1 {
            // Each lane (a row of op(A), or a column of op(B) stored transposed) is contiguous
            // along k: read it as one stream, scatter into the sliver with stride W.
            for r in 0..valid {
                let start = (first_x + r) * sx + p0;
                let lane = &src[start..start + kc];
                for (step, &v) in sliver.chunks_exact_mut(W).zip(lane) {
                    step[r] = v;
                }
            }
            if valid < W {
                for step in sliver.chunks_exact_mut(W) {
                    step[valid..].fill(0.0);
                }
            }
        } else {
            // Contiguous (sx == 1) or strided along x: fill the sliver one k step at a time.
            for (p, step) in sliver.chunks_exact_mut(W).enumerate() {
                let start = first_x * sx + (p0 + p) * sp;
                if sx == 1 {
                    step[..valid].copy_from_slice(&src[start..start + valid]);
                } else {
                    for (r, d) in step[..valid].iter_mut().enumerate() {
                        *d = src[start + r * sx];
                    }
                }
                step[valid..].fill(0.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_a_transposed_view_gives_the_same_slivers_as_the_plain_one() {
        // op(A) is 5 x 3; stored plainly ([5, 3]) and transposed ([3, 5]).
        let (m, k) = (5, 3);
        let value = |i: usize, p: usize| (10 * i + p) as f32 + 1.0;
        let plain: Vec<f32> = (0..m * k).map(|e| value(e / k, e % k)).collect();
        let trans: Vec<f32> = (0..m * k).map(|e| value(e % m, e / m)).collect();
        let mut from_plain = vec![f32::NAN; 2 * 4 * 2];
        let mut from_trans = vec![f32::NAN; 2 * 4 * 2];
        // Rows 1..6 would run past m = 5: pack rows 1..5 (len 4) and k columns 1..3 (kc 2).
        pack::<4>(&mut from_plain[..4 * 2], &plain, k, 1, 1, 4, 1, 2);
        pack::<4>(&mut from_trans[..4 * 2], &trans, 1, m, 1, 4, 1, 2);
        assert_eq!(from_plain[..8], from_trans[..8]);
        assert_eq!(from_plain[..4], [12.0, 22.0, 32.0, 42.0]);
        // A ragged edge is padded with zeros.
        pack::<4>(&mut from_plain, &plain, k, 1, 0, 5, 0, 2);
        pack::<4>(&mut from_trans, &trans, 1, m, 0, 5, 0, 2);
        assert_eq!(from_plain, from_trans);
        assert_eq!(from_plain[8..], [41.0, 0.0, 0.0, 0.0, 42.0, 0.0, 0.0, 0.0]);
    }
}
