//! Patchify and unpatchify, in the two orders the official code uses:
//! - the **embedding order** `(c, i, j)`: the patch embedding is a convolution whose weight is
//!   `[D, C, p, p]`, so a patch enters it as the vector `x[c, i, j]`;
//! - the **target order** `(i, j, c)`: `patchify()` in the official code (`einsum('nchpwq->nhwpqc')`),
//!   the layout of the loss target and of `decoder_pred`'s output.
//!
//! Mixing them up trains fine and breaks every official checkpoint. For one channel they coincide.
//!
//! Images are `[N, C, H, W]`, patches `[N, L, P]` with `L = (H/p) (W/p)` in raster order.

/// `[N, C, H, W] -> [N, L, C*p*p]`, each patch ordered `(c, i, j)`.
pub fn patchify_embed_order(images: &[f32], n: usize, c: usize, size: usize, p: usize) -> Vec<f32> {
    let g = size / p;
    let mut out = Vec::with_capacity(images.len());
    for b in 0..n {
        for gy in 0..g {
            for gx in 0..g {
                for ch in 0..c {
                    for i in 0..p {
                        let row = ((b * c + ch) * size + gy * p + i) * size + gx * p;
                        out.extend_from_slice(&images[row..row + p]);
                    }
                }
            }
        }
    }
    out
}

/// `[N, C, H, W] -> [N, L, p*p*C]`, each patch ordered `(i, j, c)` (the official `patchify`).
pub fn patchify(images: &[f32], n: usize, c: usize, size: usize, p: usize) -> Vec<f32> {
    let g = size / p;
    let mut out = Vec::with_capacity(images.len());
    for b in 0..n {
        for gy in 0..g {
            for gx in 0..g {
                for i in 0..p {
                    for j in 0..p {
                        for ch in 0..c {
                            out.push(images[((b * c + ch) * size + gy * p + i) * size + gx * p + j]);
                        }
                    }
                }
            }
        }
    }
    out
}

/// The inverse of `patchify`: `[N, L, p*p*C] -> [N, C, H, W]`.
pub fn unpatchify(patches: &[f32], n: usize, c: usize, size: usize, p: usize) -> Vec<f32> {
    let g = size / p;
    let mut out = vec![0.0f32; n * c * size * size];
    let mut k = 0;
    for b in 0..n {
        for gy in 0..g {
            for gx in 0..g {
                for i in 0..p {
                    for j in 0..p {
                        for ch in 0..c {
                            out[((b * c + ch) * size + gy * p + i) * size + gx * p + j] = patches[k];
                            k += 1;
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpatchify_inverts_patchify() {
        let (n, c, s, p) = (2, 3, 8, 4);
        let img: Vec<f32> = (0..n * c * s * s).map(|v| v as f32).collect();
        assert_eq!(unpatchify(&patchify(&img, n, c, s, p), n, c, s, p), img);
    }

    #[test]
    fn the_two_orders_differ_only_in_where_the_channel_goes() {
        let (c, s, p) = (3, 4, 2);
        let img: Vec<f32> = (0..c * s * s).map(|v| v as f32).collect();
        let target = patchify(&img, 1, c, s, p);
        let embed = patchify_embed_order(&img, 1, c, s, p);
        // First patch, pixel (i, j) = (0, 1), channel 2.
        let (i, j, ch) = (0, 1, 2);
        let v = img[(ch * s + i) * s + j];
        assert_eq!(target[(i * p + j) * c + ch], v);
        assert_eq!(embed[(ch * p + i) * p + j], v);
        // One channel: identical.
        let grey: Vec<f32> = (0..16).map(|v| v as f32).collect();
        assert_eq!(patchify(&grey, 1, 1, 4, 2), patchify_embed_order(&grey, 1, 1, 4, 2));
    }
}
