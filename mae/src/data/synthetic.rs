//! The built-in labelled data set: ten classes of shapes and textures drawn at random position,
//! scale, rotation, intensity or colour, on a shaded background, with pixel noise. It needs no
//! files, so training, tests and demos always have data, and it is deterministic from its seed.
//!
//! It is meant to be learnable but not trivial: class depends on shape and texture only, while
//! position, size, rotation, colour, contrast, background ramp and noise vary within every class,
//! so raw pixels are a poor linear feature and good features have something to win. Shapes are
//! anti-aliased (coverage from a signed distance over one pixel) so that they reconstruct smoothly
//! at any size.

use engine::Rng;

use crate::data::image_set::ImageSet;

/// Class names, by label.
pub const SYNTHETIC_CLASSES: [&str; 10] = [
    "disc",
    "ring",
    "square",
    "triangle",
    "cross",
    "horizontal stripes",
    "vertical stripes",
    "checkerboard",
    "gradient blob",
    "two dots",
];

/// `n` images of `size` x `size` with `channels` channels (1 gives grey levels, more give random
/// colours), labels balanced over the ten classes (counts differ by at most one) in random order.
///
/// # Panics
/// If `size < 8` or `channels == 0`: below 8 pixels the shapes are not recognisable.
pub fn generate(n: usize, size: usize, channels: usize, seed: u64) -> ImageSet {
    assert!(size >= 8, "synthetic images need a size of at least 8 pixels, got {size}");
    assert!(channels >= 1, "synthetic images need at least one channel");
    let mut rng = Rng::new(seed);
    let mut labels: Vec<u32> = (0..n).map(|i| (i % SYNTHETIC_CLASSES.len()) as u32).collect();
    rng.shuffle(&mut labels);
    let len = channels * size * size;
    let mut pixels = vec![0u8; n * len];
    let mut cover = vec![0f32; size * size];
    for (img, &label) in pixels.chunks_exact_mut(len).zip(&labels) {
        // One stream per image, so an image does not depend on how much its neighbours drew.
        let mut r = rng.fork();
        let shape = Placed::random(label, size, &mut r);
        draw(&shape, size, channels, &mut r, &mut cover, img);
    }
    ImageSet {
        name: format!("synthetic-{size}x{size}x{channels}-seed{seed}"),
        channels,
        height: size,
        width: size,
        pixels,
        labels: Some(labels),
        classes: SYNTHETIC_CLASSES.iter().map(|s| s.to_string()).collect(),
    }
}

/// A class's shape in its own frame (centred, unrotated), in unit coordinates: the image is [0, 1]^2.
enum Shape {
    Disc {
        r: f32,
    },
    Ring {
        r: f32,
        half_width: f32,
    },
    Square {
        half: f32,
    },
    /// Equilateral, by its inradius.
    Triangle {
        inradius: f32,
    },
    Cross {
        arm: f32,
        half_width: f32,
    },
    /// `axis` 0 varies along rotated x (vertical stripes), 1 along rotated y (horizontal ones),
    /// 2 along both (checkerboard); inside a rectangle of half-sizes `half`.
    Texture {
        axis: u8,
        period: f32,
        phase: (f32, f32),
        half: (f32, f32),
    },
    Blob {
        sigma: (f32, f32),
    },
    TwoDots {
        r: f32,
        offset: (f32, f32),
    },
}

/// A shape where it is drawn: its centre, and its rotation as `(cos, sin)`.
struct Placed {
    shape: Shape,
    centre: (f32, f32),
    rot: (f32, f32),
}

impl Placed {
    /// A random instance of class `label` for `size`-pixel images.
    fn random(label: u32, size: usize, r: &mut Rng) -> Placed {
        let px = 1.0 / size as f32;
        let mut angle = r.uniform_range(0.0, std::f32::consts::TAU);
        let centre = (r.uniform_range(0.3, 0.7), r.uniform_range(0.3, 0.7));
        let s = r.uniform_range(0.14, 0.3);
        let shape = match label {
            0 => Shape::Disc { r: s },
            1 => Shape::Ring { r: s, half_width: (s * r.uniform_range(0.12, 0.22)).max(0.6 * px) },
            2 => Shape::Square { half: s * 0.85 },
            3 => Shape::Triangle { inradius: s * 0.55 },
            4 => Shape::Cross { arm: s, half_width: (s * r.uniform_range(0.2, 0.32)).max(0.6 * px) },
            5..=7 => {
                // Stripes keep their orientation (within +-11 degrees): it is what tells 5 from 6.
                angle = r.uniform_range(-0.2, 0.2);
                let axis = match label {
                    5 => 1,
                    6 => 0,
                    _ => 2,
                };
                // At least 3 pixels per period so the texture survives at small sizes.
                let period = r.uniform_range(0.12, 0.25).max(3.0 * px);
                let phase = (r.uniform_range(0.0, 1.0), r.uniform_range(0.0, 1.0));
                let half = (r.uniform_range(0.22, 0.4), r.uniform_range(0.22, 0.4));
                Shape::Texture { axis, period, phase, half }
            }
            8 => Shape::Blob { sigma: (s * r.uniform_range(0.4, 0.7), s * r.uniform_range(0.4, 0.7)) },
            _ => {
                let d = r.uniform_range(0.13, 0.22);
                Shape::TwoDots { r: r.uniform_range(0.05, 0.09).max(1.2 * px), offset: (d, 0.0) }
            }
        };
        Placed { shape, centre, rot: (angle.cos(), angle.sin()) }
    }

    /// Coverage in [0, 1] at the unit point `(x, y)`; `px` is one pixel in unit coordinates.
    #[inline]
    fn coverage(&self, x: f32, y: f32, px: f32) -> f32 {
        let (dx, dy) = (x - self.centre.0, y - self.centre.1);
        // Rotate into the shape's frame.
        let (c, s) = self.rot;
        let (qx, qy) = (c * dx + s * dy, -s * dx + c * dy);
        // Signed distance (negative inside) to coverage, anti-aliased over one pixel.
        let aa = |d: f32| (0.5 - d / px).clamp(0.0, 1.0);
        match self.shape {
            Shape::Disc { r } => aa((qx * qx + qy * qy).sqrt() - r),
            Shape::Ring { r, half_width } => aa(((qx * qx + qy * qy).sqrt() - r).abs() - half_width),
            Shape::Square { half } => aa(qx.abs().max(qy.abs()) - half),
            Shape::Triangle { inradius } => {
                // Three edges with outward normals 120 degrees apart, one pointing down.
                const H: f32 = 0.866_025_4; // sin(60 degrees)
                let d = (-qy).max(H * qx + 0.5 * qy).max(-H * qx + 0.5 * qy);
                aa(d - inradius)
            }
            Shape::Cross { arm, half_width } => {
                let (ax, ay) = (qx.abs(), qy.abs());
                aa((ax - arm).max(ay - half_width).min((ax - half_width).max(ay - arm)))
            }
            Shape::Texture { axis, period, phase, half } => {
                let inside = aa((qx.abs() - half.0).max(qy.abs() - half.1));
                if inside == 0.0 {
                    return 0.0;
                }
                let w = std::f32::consts::TAU / period;
                let sx = (w * qx + std::f32::consts::TAU * phase.0).sin();
                let sy = (w * qy + std::f32::consts::TAU * phase.1).sin();
                let wave = match axis {
                    0 => sx,
                    1 => sy,
                    _ => sx * sy * 2.0,
                };
                // Sharpened sine: near-binary bars whose edges stay about a pixel wide.
                inside * (0.5 + 1.5 * wave).clamp(0.0, 1.0)
            }
            Shape::Blob { sigma } => (-0.5 * ((qx / sigma.0).powi(2) + (qy / sigma.1).powi(2))).exp(),
            Shape::TwoDots { r, offset } => {
                let d1 = ((qx - offset.0).powi(2) + (qy - offset.1).powi(2)).sqrt();
                let d2 = ((qx + offset.0).powi(2) + (qy + offset.1).powi(2)).sqrt();
                aa(d1.min(d2) - r)
            }
        }
    }
}

/// Renders one image: background level plus a linear ramp, the shape's coverage blended towards
/// the foreground colour, Gaussian pixel noise, rounded to bytes.
fn draw(shape: &Placed, size: usize, channels: usize, r: &mut Rng, cover: &mut [f32], out: &mut [u8]) {
    let px = 1.0 / size as f32;
    for (row, cover) in cover.chunks_exact_mut(size).enumerate() {
        let y = (row as f32 + 0.5) * px;
        for (col, c) in cover.iter_mut().enumerate() {
            *c = shape.coverage((col as f32 + 0.5) * px, y, px);
        }
    }
    // Foreground is at least 0.3 brighter than the background, so every shape stays visible.
    let bg = r.uniform_range(0.0, 0.45);
    let fg = r.uniform_range(bg + 0.3, 1.0);
    let ramp = (r.uniform_range(-0.12, 0.12), r.uniform_range(-0.12, 0.12));
    let noise = r.uniform_range(0.01, 0.06);
    // Colour: each channel scaled by a random tint in [0.35, 1], one foreground channel kept at
    // full strength so the shape stays visible in colour too; grey images use tint 1.
    let bright = r.below(channels);
    let tints: Vec<(f32, f32)> = (0..channels)
        .map(|c| match channels {
            1 => (1.0, 1.0),
            _ => (if c == bright { 1.0 } else { r.uniform_range(0.35, 1.0) }, r.uniform_range(0.35, 1.0)),
        })
        .collect();
    for (out, &(tint_fg, tint_bg)) in out.chunks_exact_mut(size * size).zip(&tints) {
        let (f, b) = (fg * tint_fg, bg * tint_bg);
        for (row, (out, cover)) in out.chunks_exact_mut(size).zip(cover.chunks_exact(size)).enumerate() {
            let y = (row as f32 + 0.5) * px - 0.5;
            for (col, (o, &a)) in out.iter_mut().zip(cover).enumerate() {
                let back = b + ramp.0 * ((col as f32 + 0.5) * px - 0.5) + ramp.1 * y;
                let v = back + (f - back) * a + noise * gaussianish(r);
                *o = (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8; // round half up, without a libm call
            }
        }
    }
}

/// An approximately standard normal value from one draw: the sum of four 16-bit uniforms
/// (Irwin-Hall), rescaled to unit variance. Four times cheaper than Box-Muller, and the tails
/// (cut at 3.46 sigma) do not matter for pixel noise.
#[inline]
fn gaussianish(r: &mut Rng) -> f32 {
    let x = r.next_u64();
    let sum = (x & 0xffff) + ((x >> 16) & 0xffff) + ((x >> 32) & 0xffff) + (x >> 48);
    // Mean 2 and variance 4/12 in units of 65536; 3^0.5 restores unit variance.
    (sum as f32 * (1.0 / 65536.0) - 2.0) * 1.732_050_8
}
