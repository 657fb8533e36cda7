//! Augmentation: the identity case is exact, flips flip, crops stay inside the image, resampling
//! keeps values in range, and it is cheap.

use std::time::Instant;

use engine::Rng;
use mae::data::augment::{Augment, CropBox, augment_into, random_resized_crop_box};
use mae::data::image_set::Normalization;
use mae::data::synthetic::generate;

fn norm3() -> Normalization {
    Normalization::imagenet()
}

/// A 3x5x5 image with distinct values.
fn image() -> Vec<u8> {
    (0..75).map(|i| (i * 37 % 256) as u8).collect()
}

fn augment(img: &[u8], c: usize, h: usize, w: usize, s: usize, aug: &Augment, seed: u64) -> Vec<f32> {
    let norm = if c == 3 { norm3() } else { Normalization::fashion_mnist() };
    let mut out = vec![0f32; c * s * s];
    augment_into(img, c, h, w, &mut out, s, aug, &norm, &mut Rng::new(seed));
    out
}

#[test]
fn no_augmentation_at_the_input_size_gives_exactly_the_normalized_image() {
    let img = image();
    let norm = norm3();
    let mut expected = vec![0f32; 75];
    norm.normalize_image(&img, &mut expected);
    for seed in 0..20 {
        let out = augment(&img, 3, 5, 5, 5, &Augment::none(), seed);
        assert_eq!(out, expected);
    }
    // Pixel by pixel, the same as the scalar helper.
    assert_eq!(expected[5 * 5 + 7], norm.normalize(1, img[5 * 5 + 7]));
}

#[test]
fn a_horizontal_flip_mirrors_every_row_and_happens_about_half_the_time() {
    let img = image();
    let plain = augment(&img, 3, 5, 5, 5, &Augment::none(), 0);
    let flip_only = Augment { flip: true, ..Augment::none() };
    let mut flipped = 0;
    for seed in 0..200 {
        let out = augment(&img, 3, 5, 5, 5, &flip_only, seed);
        if out == plain {
            continue;
        }
        flipped += 1;
        for (row_out, row_in) in out.chunks(5).zip(plain.chunks(5)) {
            assert!(row_out.iter().eq(row_in.iter().rev()), "{row_out:?} is not {row_in:?} mirrored");
        }
    }
    assert!((70..130).contains(&flipped), "{flipped} flips in 200");
}

#[test]
fn a_flip_also_mirrors_resampled_output() {
    // Same crop (the whole image), resized 5 -> 8: flipped output is the unflipped one mirrored.
    let img = image();
    let plain = augment(&img, 3, 5, 5, 8, &Augment::none(), 0);
    let flip_only = Augment { flip: true, ..Augment::none() };
    let out = (0..20).map(|seed| augment(&img, 3, 5, 5, 8, &flip_only, seed)).find(|o| *o != plain).unwrap();
    for (row_out, row_in) in out.chunks(8).zip(plain.chunks(8)) {
        for (a, b) in row_out.iter().zip(row_in.iter().rev()) {
            assert!((a - b).abs() < 1e-5, "{row_out:?} vs {row_in:?}");
        }
    }
}

#[test]
fn random_crops_stay_inside_the_image_with_area_and_ratio_in_range() {
    let mut rng = Rng::new(9);
    let aug = Augment::mae();
    let mut fallbacks = 0;
    for _ in 0..5000 {
        let (h, w) = (1 + rng.below(64), 1 + rng.below(64));
        let b = random_resized_crop_box(h, w, aug.scale, aug.ratio, &mut rng);
        assert!(b.height >= 1 && b.width >= 1, "{b:?}");
        assert!(b.top + b.height <= h && b.left + b.width <= w, "{b:?} outside {h}x{w}");
        let centred = b.top == (h - b.height) / 2 && b.left == (w - b.width) / 2;
        if h >= 16 && w >= 16 && !centred {
            // A sampled crop: area and ratio within range, up to rounding to whole pixels.
            let area = (b.height * b.width) as f32 / (h * w) as f32;
            let ratio = b.width as f32 / b.height as f32;
            assert!((0.15..=1.0).contains(&area), "{b:?} of {h}x{w}: area {area}");
            assert!((0.6..=1.6).contains(&ratio), "{b:?}: ratio {ratio}");
        }
        fallbacks += centred as usize;
    }
    assert!(fallbacks < 5000);
}

#[test]
fn impossible_crop_parameters_fall_back_to_torchvisions_centre_crop() {
    let mut rng = Rng::new(1);
    // An area of 2-3 times the image never fits: the centre crop with the nearest allowed ratio.
    let b = random_resized_crop_box(20, 20, (2.0, 3.0), (2.0, 3.0), &mut rng);
    assert_eq!(b, CropBox { top: 5, left: 0, height: 10, width: 20 });
    let b = random_resized_crop_box(20, 40, (2.0, 3.0), (0.75, 1.25), &mut rng);
    assert_eq!(b, CropBox { top: 0, left: 7, height: 20, width: 25 });
    let b = random_resized_crop_box(20, 24, (2.0, 3.0), (0.75, 1.25), &mut rng);
    assert_eq!(b, CropBox { top: 0, left: 0, height: 20, width: 24 });
}

#[test]
fn resampled_outputs_are_finite_and_within_the_normalized_pixel_range() {
    let set = generate(50, 28, 1, 4);
    let norm = Normalization::fashion_mnist();
    let (lo, hi) = (norm.normalize(0, 0), norm.normalize(0, 255));
    let mut rng = Rng::new(2);
    for s in [14, 28, 32, 56] {
        let mut out = vec![0f32; s * s];
        for i in 0..set.len() {
            augment_into(set.image(i), 1, 28, 28, &mut out, s, &Augment::mae(), &norm, &mut rng);
            // Triangle weights are non-negative and sum to one: outputs are convex combinations.
            assert!(out.iter().all(|v| v.is_finite() && *v >= lo - 1e-4 && *v <= hi + 1e-4), "size {s}");
        }
    }
    // A constant image stays exactly constant (up to rounding) through any crop and resize.
    let flat = vec![100u8; 3 * 7 * 9];
    for seed in 0..50 {
        let out = augment(&flat, 3, 7, 9, 12, &Augment::mae(), seed);
        for (c, plane) in out.chunks(144).enumerate() {
            let want = norm3().normalize(c, 100);
            assert!(plane.iter().all(|v| (v - want).abs() < 1e-4), "channel {c}: {plane:?} vs {want}");
        }
    }
}

#[test]
fn a_non_square_image_without_augmentation_is_centre_cropped_to_a_square() {
    // 1x2x4 image: columns 1..=2 are the centre square.
    let img = [10, 20, 30, 40, 50, 60, 70, 80];
    let out = augment(&img, 1, 2, 4, 2, &Augment::none(), 0);
    let norm = Normalization::fashion_mnist();
    let want: Vec<f32> = [20, 30, 60, 70].iter().map(|&v| norm.normalize(0, v)).collect();
    assert_eq!(out, want);
}

#[test]
fn augmenting_small_images_costs_microseconds() {
    let set = generate(1000, 28, 1, 6);
    let norm = Normalization::fashion_mnist();
    let mut rng = Rng::new(3);
    for s in [28, 32] {
        let mut out = vec![0f32; s * s];
        let t = Instant::now();
        for i in 0..set.len() {
            augment_into(set.image(i), 1, 28, 28, &mut out, s, &Augment::mae(), &norm, &mut rng);
        }
        let per = t.elapsed().as_secs_f64() / set.len() as f64;
        println!("augment 28x28 -> {s}x{s}: {:.1} us per image", per * 1e6);
        // Generous for a shared machine: the trainer's budget is 1 ms per image for everything.
        assert!(per < 100e-6, "{per} s per image");
    }
}
