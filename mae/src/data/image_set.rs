//! An in-memory set of same-sized 8-bit images with optional labels, and the per-channel
//! normalisation that turns its bytes into network inputs.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Images of one size and channel count, stored as bytes in `[n, C, H, W]` order (planar, row-major),
/// so one image is one contiguous slice and one channel of it is one contiguous plane.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    /// Where the set came from (a folder name, "fashion-mnist/train", "synthetic"), for messages.
    pub name: String,
    /// `C`, channels per image (1 grey, 3 RGB).
    pub channels: usize,
    /// `H`, rows per image.
    pub height: usize,
    /// `W`, columns per image.
    pub width: usize,
    /// `[n, C, H, W]`, planar, row-major.
    pub pixels: Vec<u8>,
    /// One label per image, each `< classes.len()`; `None` for unlabelled sets.
    pub labels: Option<Vec<u32>>,
    /// Class names indexed by label; empty for unlabelled sets.
    pub classes: Vec<String>,
}

impl ImageSet {
    /// A set from a program's own pixels, `[n, C, H, W]` bytes (planar, row-major), unlabelled.
    /// Fails when the bytes are not a whole number of images of that size.
    pub fn new(name: &str, channels: usize, height: usize, width: usize, pixels: Vec<u8>) -> Result<ImageSet> {
        let len = channels * height * width;
        if len == 0 || !pixels.len().is_multiple_of(len) {
            return Err(Error::Data(format!(
                "{name}: {} bytes are not a whole number of {channels} x {height} x {width} images",
                pixels.len()
            )));
        }
        let name = name.to_string();
        Ok(ImageSet { name, channels, height, width, pixels, labels: None, classes: Vec::new() })
    }

    /// Bytes per image: `C * H * W`.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The number of images, `n`.
    pub fn len(&self) -> usize {
        match self.image_len() {
            0 => 0,
            l => self.pixels.len() / l,
        }
    }

    /// Whether the set holds no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image `i` as `[C, H, W]` bytes. Panics when `i >= len()`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        let l = self.image_len();
        &self.pixels[i * l..(i + 1) * l]
    }

    /// Image `i`'s label, or `None` for an unlabelled set. Panics when `i >= len()` in a labelled set.
    pub fn label(&self, i: usize) -> Option<u32> {
        self.labels.as_ref().map(|l| l[i])
    }

    /// A new set of the images at `indices` (in that order, repeats allowed). Panics on an index
    /// out of range, like slice indexing: indices come from the program, not from a file.
    pub fn subset(&self, indices: &[usize]) -> ImageSet {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        ImageSet {
            name: self.name.clone(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            pixels,
            labels: self.labels.as_ref().map(|l| indices.iter().map(|&i| l[i]).collect()),
            classes: self.classes.clone(),
        }
    }

    /// The first `n` images (all of them when `n >= len()`).
    pub fn take(&self, n: usize) -> ImageSet {
        let idx: Vec<usize> = (0..n.min(self.len())).collect();
        self.subset(&idx)
    }

    /// Per-channel mean and standard deviation of `pixel / 255` over the whole set (population
    /// statistics, as torchvision recipes compute them). Exact: it counts byte values, then sums
    /// 256 bins in f64. An empty set gives mean 0, std 1; a constant channel gets std 1/255 rather
    /// than 0 so that normalising never divides by zero.
    pub fn channel_stats(&self) -> Normalization {
        let c = self.channels;
        let plane = self.height * self.width;
        let mut hist = vec![[0u64; 256]; c];
        if plane > 0 {
            for (k, chunk) in self.pixels.chunks_exact(plane).enumerate() {
                let h = &mut hist[k % c];
                for &v in chunk {
                    h[v as usize] += 1;
                }
            }
        }
        let (mut mean, mut std) = (Vec::with_capacity(c), Vec::with_capacity(c));
        for h in &hist {
            let n: u64 = h.iter().sum();
            if n == 0 {
                mean.push(0.0);
                std.push(1.0);
                continue;
            }
            let (mut s, mut s2) = (0f64, 0f64);
            for (v, &count) in h.iter().enumerate() {
                let x = v as f64 / 255.0;
                s += x * count as f64;
                s2 += x * x * count as f64;
            }
            let m = s / n as f64;
            let var = (s2 / n as f64 - m * m).max(0.0);
            mean.push(m as f32);
            std.push((var.sqrt() as f32).max(MIN_STD));
        }
        Normalization { mean, std }
    }
}

/// Floor for a measured standard deviation: one grey level.
const MIN_STD: f32 = 1.0 / 255.0;

/// Fashion-MNIST training set (60000 images), measured with `channel_stats` and independently
/// with numpy: mean 0.28604060, std 0.35302424. The test split gives 0.28684928 / 0.35244415.
pub const FASHION_MNIST_MEAN: [f32; 1] = [0.2860];
/// The Fashion-MNIST training set's standard deviation (see `FASHION_MNIST_MEAN`).
pub const FASHION_MNIST_STD: [f32; 1] = [0.3530];
/// The ImageNet statistics used by torchvision and by the MAE reference code.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// The ImageNet standard deviations, as torchvision and the MAE reference code use them.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Per-channel normalisation `(pixel / 255 - mean[c]) / std[c]`. A model is only meaningful with
/// the normalisation it was trained with, so checkpoints store it in the text form of `Display`
/// (`mean=0.286;std=0.353`, channels separated by commas) and read it back with `parse`.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalization {
    /// Per-channel mean of `pixel / 255`.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation of `pixel / 255`, positive.
    pub std: Vec<f32>,
}

impl Normalization {
    /// Checks that there is one mean and one positive, finite std per channel.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        let n = Normalization { mean, std };
        n.validate()?;
        Ok(n)
    }

    /// Fashion-MNIST's training-set statistics, one grey channel.
    pub fn fashion_mnist() -> Self {
        Normalization { mean: FASHION_MNIST_MEAN.to_vec(), std: FASHION_MNIST_STD.to_vec() }
    }

    /// The ImageNet statistics, three RGB channels.
    pub fn imagenet() -> Self {
        Normalization { mean: IMAGENET_MEAN.to_vec(), std: IMAGENET_STD.to_vec() }
    }

    /// Mean 0, std 1 for every channel: just `pixel / 255`.
    pub fn identity(channels: usize) -> Self {
        Normalization { mean: vec![0.0; channels], std: vec![1.0; channels] }
    }

    /// The number of channels it normalises.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    fn validate(&self) -> Result<()> {
        match self.problem() {
            Some(why) => Err(Error::Data(format!("normalisation {self}: {why}"))),
            None => Ok(()),
        }
    }

    /// What makes this normalisation unusable, if anything.
    fn problem(&self) -> Option<String> {
        if self.mean.is_empty() || self.mean.len() != self.std.len() {
            return Some(format!(
                "{} means and {} stds; give one of each per channel",
                self.mean.len(),
                self.std.len()
            ));
        }
        if self.mean.iter().any(|m| !m.is_finite()) || self.std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Some("means must be finite and stds positive and finite".into());
        }
        None
    }

    /// An error unless this normalisation is for `channels`-channel images (say, a checkpoint's
    /// normalisation against the data set it is evaluated on).
    pub fn check_channels(&self, channels: usize, what: &str) -> Result<()> {
        if self.channels() != channels {
            return Err(Error::Data(format!(
                "normalisation {self} is for {} channel(s) but {what} has {channels}; \
                 use data with {} channel(s) or a matching normalisation",
                self.channels(),
                self.channels()
            )));
        }
        Ok(())
    }

    /// A byte of channel `c`, normalised.
    #[inline]
    pub fn normalize(&self, c: usize, v: u8) -> f32 {
        self.normalize_value(c, v as f32)
    }

    /// A (possibly resampled, fractional) value on the 0..=255 scale of channel `c`, normalised.
    /// The same arithmetic as `normalize`, so that resampling by exact weights changes nothing.
    #[inline]
    pub fn normalize_value(&self, c: usize, v: f32) -> f32 {
        (v / 255.0 - self.mean[c]) / self.std[c]
    }

    /// The inverse, back to a byte (rounded and clamped), for pictures of inputs and reconstructions.
    #[inline]
    pub fn denormalize(&self, c: usize, x: f32) -> u8 {
        ((x * self.std[c] + self.mean[c]) * 255.0).round().clamp(0.0, 255.0) as u8
    }

    /// Normalises a whole `[C, H, W]` image into `out`.
    pub fn normalize_image(&self, img: &[u8], out: &mut [f32]) {
        assert_eq!(img.len(), out.len(), "normalize_image: input and output lengths differ");
        let plane = img.len() / self.channels();
        for (c, (src, dst)) in img.chunks(plane).zip(out.chunks_mut(plane)).enumerate() {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = self.normalize(c, s);
            }
        }
    }
}

impl fmt::Display for Normalization {
    /// `mean=0.286;std=0.353` or `mean=0.485,0.456,0.406;std=0.229,0.224,0.225`. Rust prints the
    /// shortest text that reads back to the same f32, so `parse` round-trips exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |v: &[f32]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
        write!(f, "mean={};std={}", join(&self.mean), join(&self.std))
    }
}

impl FromStr for Normalization {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Data(format!(
                "normalisation {s:?}: {why}; expected the form mean=0.286;std=0.353 \
                 (channels separated by commas)"
            ))
        };
        let list = |part: &str, key: &str| -> Result<Vec<f32>> {
            let values = part.trim().strip_prefix(key).ok_or_else(|| bad(&format!("missing {key}")))?;
            values
                .split(',')
                .map(|v| v.trim().parse::<f32>().map_err(|_| bad(&format!("{v:?} is not a number"))))
                .collect()
        };
        let (m, sd) = s.split_once(';').ok_or_else(|| bad("missing ';'"))?;
        let n = Normalization { mean: list(m, "mean=")?, std: list(sd, "std=")? };
        match n.problem() {
            Some(why) => Err(bad(&why)),
            None => Ok(n),
        }
    }
}
