//! PNG files: saving a picture atomically, and turning a `[C, H, W]` float image into RGB.
//! The pictures themselves are drawn by `plot.rs` (line plots, image grids) with the bitmap font
//! of `font.rs`.

use std::io::{BufWriter, Write};
use std::path::Path;

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, Rgb, RgbImage};

use super::atomic::write_atomically;
use crate::error::Result;

/// Saves `img` as a PNG, atomically (a crash leaves the old file or the new one).
pub fn save_png(path: &Path, img: &RgbImage) -> Result<()> {
    write_atomically(path, |f| {
        let mut w = BufWriter::new(f);
        PngEncoder::new(&mut w)
            .write_image(img.as_raw(), img.width(), img.height(), ExtendedColorType::Rgb8)
            .map_err(std::io::Error::other)?;
        w.flush()
    })
}

/// Converts a `[C, H, W]` image with values in 0..1 (clamped; NaN is black) to RGB: C = 3 is RGB,
/// any other C shows the first channel as grey. Missing values (a short slice) are black.
pub fn to_rgb(pixels_chw: &[f32], c: usize, h: usize, w: usize) -> RgbImage {
    let byte = |i: usize| {
        let v = pixels_chw.get(i).copied().unwrap_or(0.0);
        if v.is_nan() { 0 } else { (v.clamp(0.0, 1.0) * 255.0).round() as u8 }
    };
    let plane = h * w;
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        if c == 3 { Rgb([byte(i), byte(plane + i), byte(2 * plane + i)]) } else { Rgb([byte(i); 3]) }
    })
}
