//! The MAE paper's pre-training augmentation: RandomResizedCrop (scale 0.2..1, aspect ratio 3/4..4/3)
//! and a horizontal flip with probability 1/2, then per-channel normalisation.
//!
//! The crop box follows torchvision's `RandomResizedCrop.get_params` exactly (ten tries, then a
//! centre crop clamped to the ratio range). Resampling is separable bilinear (triangle filter) with
//! pixel centres at +0.5, as PIL does; when shrinking, the filter widens with the scale factor so
//! that it averages instead of aliasing. Values stay in f32 until normalised (no rounding to bytes
//! in between), and a crop that covers the whole image at the output size copies pixels exactly.

use engine::Rng;

use crate::data::image_set::Normalization;

/// What random transformation each training image gets.
#[derive(Clone, Debug, PartialEq)]
pub struct Augment {
    /// Range of the crop's area as a fraction of the image's.
    pub scale: (f32, f32),
    /// Range of the crop's width / height.
    pub ratio: (f32, f32),
    /// Mirror left-right with probability 1/2.
    pub flip: bool,
}

impl Augment {
    /// The paper's pre-training setting.
    pub fn mae() -> Self {
        Augment { scale: (0.2, 1.0), ratio: (3.0 / 4.0, 4.0 / 3.0), flip: true }
    }

    /// No augmentation: the whole image (a square image; others are centre-cropped to a square),
    /// resized to the output size. For evaluation, probes and pictures.
    pub fn none() -> Self {
        Augment { scale: (1.0, 1.0), ratio: (1.0, 1.0), flip: false }
    }
}

/// A crop box: top, left, height, width, in pixels, inside the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropBox {
    /// First row of the crop.
    pub top: usize,
    /// First column of the crop.
    pub left: usize,
    /// Rows in the crop.
    pub height: usize,
    /// Columns in the crop.
    pub width: usize,
}

/// torchvision's `RandomResizedCrop.get_params`, in f64 as Python computes it.
pub fn random_resized_crop_box(h: usize, w: usize, scale: (f32, f32), ratio: (f32, f32), rng: &mut Rng) -> CropBox {
    let area = (h * w) as f64;
    let (log_lo, log_hi) = ((ratio.0 as f64).ln(), (ratio.1 as f64).ln());
    for _ in 0..10 {
        let target_area = area * rng.uniform_range(scale.0, scale.1) as f64;
        let aspect = (log_lo + (log_hi - log_lo) * rng.uniform() as f64).exp();
        let cw = (target_area * aspect).sqrt().round() as usize;
        let ch = (target_area / aspect).sqrt().round() as usize;
        if 0 < cw && cw <= w && 0 < ch && ch <= h {
            let top = rng.below(h - ch + 1);
            let left = rng.below(w - cw + 1);
            return CropBox { top, left, height: ch, width: cw };
        }
    }
    // Fallback: the largest centred crop whose ratio is within range.
    let in_ratio = w as f64 / h as f64;
    let (min_r, max_r) = (ratio.0.min(ratio.1) as f64, ratio.0.max(ratio.1) as f64);
    let (ch, cw) = if in_ratio < min_r {
        (((w as f64 / min_r).round() as usize).clamp(1, h), w)
    } else if in_ratio > max_r {
        (h, ((h as f64 * max_r).round() as usize).clamp(1, w))
    } else {
        (h, w)
    };
    CropBox { top: (h - ch) / 2, left: (w - cw) / 2, height: ch, width: cw }
}

/// Resampling weights along one axis: for each output index, the first input index and its taps.
struct Taps {
    start: Vec<usize>,
    /// `taps` weights per output index, zero-padded, each row summing to 1.
    weights: Vec<f32>,
    taps: usize,
}

impl Taps {
    /// Triangle-filter weights from `len` input samples (starting at `offset`) to `out` samples,
    /// PIL's scheme: support 1 input pixel when enlarging, `len / out` pixels when shrinking.
    fn new(offset: usize, len: usize, out: usize) -> Taps {
        let scale = len as f64 / out as f64;
        let filter_scale = scale.max(1.0);
        let support = filter_scale; // the triangle's radius is 1, scaled
        let taps = (support.ceil() as usize) * 2 + 1;
        let mut start = Vec::with_capacity(out);
        let mut weights = vec![0f32; out * taps];
        for o in 0..out {
            let centre = (o as f64 + 0.5) * scale;
            let lo = ((centre - support + 0.5).floor().max(0.0) as usize).min(len - 1);
            let hi = ((centre + support + 0.5).floor() as usize).clamp(lo + 1, len).min(lo + taps);
            let weight = |i: usize| (1.0 - ((i as f64 + 0.5 - centre) / filter_scale).abs()).max(0.0);
            // total > 0: the input pixel nearest the centre is always within the support.
            let total: f64 = (lo..hi).map(weight).sum();
            for (r, i) in weights[o * taps..(o + 1) * taps].iter_mut().zip(lo..hi) {
                *r = (weight(i) / total) as f32;
            }
            start.push(offset + lo);
        }
        Taps { start, weights, taps }
    }

    fn mirror(&mut self) {
        self.start.reverse();
        let t = self.taps;
        let n = self.start.len();
        for o in 0..n / 2 {
            for k in 0..t {
                self.weights.swap(o * t + k, (n - 1 - o) * t + k);
            }
        }
    }
}

/// Augments one `[c, h, w]` byte image into `out` (`[c, out_size, out_size]`), normalised.
///
/// With `Augment::none()` and `out_size == h == w` the result is exactly `norm.normalize` of every
/// pixel. Panics if the slices do not match the sizes, or `norm` has another channel count (check
/// with `Normalization::check_channels` where the normalisation comes from a file).
#[allow(clippy::too_many_arguments)] // the trainer's hot path: plain slices, no wrapper structs
pub fn augment_into(
    img: &[u8],
    c: usize,
    h: usize,
    w: usize,
    out: &mut [f32],
    out_size: usize,
    aug: &Augment,
    norm: &Normalization,
    rng: &mut Rng,
) {
    assert!(h > 0 && w > 0, "augment_into: empty image");
    let draw = Draw::new(h, w, aug, rng);
    resample_into(img, c, h, w, out, out_size, &draw, norm);
}

/// The random part of one image's augmentation: its crop box and whether it is mirrored. Drawing
/// every image's first, in order, and resampling them afterwards on any threads gives the same
/// batch as `augment_into` image by image (the resampling draws nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Draw {
    /// The crop, in the image's pixels.
    pub crop: CropBox,
    /// Mirror left-right.
    pub flip: bool,
}

impl Draw {
    /// The crop box, then the flip, from `rng`, for an `h x w` image.
    pub fn new(h: usize, w: usize, aug: &Augment, rng: &mut Rng) -> Draw {
        let crop = random_resized_crop_box(h, w, aug.scale, aug.ratio, rng);
        let flip = aug.flip && rng.uniform() < 0.5;
        Draw { crop, flip }
    }
}

/// One `[c, h, w]` byte image cropped and mirrored as `draw` says, resized to
/// `[c, out_size, out_size]` and normalised into `out`. Panics as `augment_into` does.
#[allow(clippy::too_many_arguments)] // the trainer's hot path: plain slices, no wrapper structs
pub fn resample_into(
    img: &[u8],
    c: usize,
    h: usize,
    w: usize,
    out: &mut [f32],
    out_size: usize,
    draw: &Draw,
    norm: &Normalization,
) {
    assert_eq!(img.len(), c * h * w, "augment_into: image of {} bytes is not {c}x{h}x{w}", img.len());
    assert_eq!(out.len(), c * out_size * out_size, "augment_into: output is not {c}x{out_size}x{out_size}");
    assert_eq!(norm.channels(), c, "augment_into: normalisation for {} channels, image has {c}", norm.channels());
    assert!(h > 0 && w > 0 && out_size > 0, "augment_into: empty image or output");
    let Draw { crop, flip } = *draw;
    let s = out_size;

    if crop.height == s && crop.width == s {
        // Same size: a plain copy of the crop (mirrored if flipped), no resampling.
        for ch in 0..c {
            let plane = &img[ch * h * w..(ch + 1) * h * w];
            let dst = &mut out[ch * s * s..(ch + 1) * s * s];
            for (y, row) in dst.chunks_exact_mut(s).enumerate() {
                let src = &plane[(crop.top + y) * w + crop.left..][..s];
                for (x, d) in row.iter_mut().enumerate() {
                    *d = norm.normalize(ch, src[if flip { s - 1 - x } else { x }]);
                }
            }
        }
        return;
    }

    let mut tx = Taps::new(crop.left, crop.width, s);
    if flip {
        tx.mirror();
    }
    let ty = Taps::new(crop.top, crop.height, s);
    // Horizontal pass over the crop's rows into [crop.height, s], then vertical into [s, s].
    let mut tmp = vec![0f32; crop.height * s];
    for ch in 0..c {
        let plane = &img[ch * h * w..(ch + 1) * h * w];
        for (r, trow) in tmp.chunks_exact_mut(s).enumerate() {
            let src = &plane[(crop.top + r) * w..(crop.top + r + 1) * w];
            for (x, t) in trow.iter_mut().enumerate() {
                let wts = &tx.weights[x * tx.taps..(x + 1) * tx.taps];
                let from = &src[tx.start[x]..(tx.start[x] + tx.taps).min(w)];
                *t = wts.iter().zip(from).map(|(&k, &v)| k * v as f32).sum();
            }
        }
        let dst = &mut out[ch * s * s..(ch + 1) * s * s];
        for (y, row) in dst.chunks_exact_mut(s).enumerate() {
            let wts = &ty.weights[y * ty.taps..(y + 1) * ty.taps];
            let first = ty.start[y] - crop.top;
            row.fill(0.0);
            for (k, &wk) in wts.iter().enumerate() {
                if wk == 0.0 || first + k >= crop.height {
                    continue;
                }
                for (d, &t) in row.iter_mut().zip(&tmp[(first + k) * s..(first + k + 1) * s]) {
                    *d += wk * t;
                }
            }
            for d in row.iter_mut() {
                *d = norm.normalize_value(ch, *d);
            }
        }
    }
}
