//! The built-in synthetic data set: deterministic, balanced, varied, fast, and learnable but not
//! trivial.

use std::time::Instant;

use mae::data::synthetic::{SYNTHETIC_CLASSES, generate};

#[test]
fn the_same_seed_gives_the_same_images_and_another_seed_different_ones() {
    let a = generate(200, 32, 3, 7);
    let b = generate(200, 32, 3, 7);
    let c = generate(200, 32, 3, 8);
    assert_eq!(a, b);
    assert_ne!(a.pixels, c.pixels);
    assert_ne!(a.labels, c.labels);
    assert_eq!((a.len(), a.channels, a.height, a.width), (200, 3, 32, 32));
    assert_eq!(a.classes, SYNTHETIC_CLASSES);
}

#[test]
fn labels_are_balanced_over_the_ten_classes_and_shuffled() {
    let set = generate(1003, 16, 1, 1);
    let labels = set.labels.as_ref().unwrap();
    let mut counts = [0; 10];
    for &l in labels {
        counts[l as usize] += 1;
    }
    assert!(counts.iter().all(|&c| c == 100 || c == 101), "{counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), 1003);
    assert_ne!(labels[..10], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "labels should come in random order");
}

#[test]
fn pixel_values_vary_within_images_across_images_and_across_colour_channels() {
    let set = generate(100, 32, 3, 3);
    let plane = 32 * 32;
    for i in 0..set.len() {
        let img = set.image(i);
        let (lo, hi) = (img.iter().min().unwrap(), img.iter().max().unwrap());
        // Foreground and background differ by at least 0.3 (76 grey levels) before noise.
        assert!(hi - lo > 60, "image {i} is nearly flat: {lo}..{hi}");
    }
    let stats = set.channel_stats();
    assert!(stats.std.iter().all(|&s| s > 0.1), "{stats}");
    // Colour images are not grey: channels differ somewhere in most images.
    let coloured = (0..set.len())
        .filter(|&i| {
            let img = set.image(i);
            (0..plane).any(|p| img[p].abs_diff(img[plane + p]) > 40 || img[p].abs_diff(img[2 * plane + p]) > 40)
        })
        .count();
    assert!(coloured > 90, "only {coloured} of 100 images have colour");
}

/// Test accuracy of a ridge-regression linear probe (one-hot targets, standardised features,
/// closed form by Cholesky), the cheap stand-in for a logistic-regression probe.
fn linear_probe_accuracy(train: &[Vec<f64>], ytr: &[u32], test: &[Vec<f64>], yte: &[u32]) -> f64 {
    let d = train[0].len();
    let n = train.len() as f64;
    let mean: Vec<f64> = (0..d).map(|j| train.iter().map(|f| f[j]).sum::<f64>() / n).collect();
    let sd: Vec<f64> =
        (0..d).map(|j| (train.iter().map(|f| (f[j] - mean[j]).powi(2)).sum::<f64>() / n).sqrt() + 1e-6).collect();
    let row = |f: &Vec<f64>| -> Vec<f64> { (0..d).map(|j| (f[j] - mean[j]) / sd[j]).chain([1.0]).collect() };
    let e = d + 1;
    // Normal equations (A^T A + lambda I) W = A^T Y.
    let mut g = vec![0f64; e * e];
    let mut b = vec![0f64; e * 10];
    for (f, &y) in train.iter().zip(ytr) {
        let a = row(f);
        for i in 0..e {
            for j in 0..=i {
                g[i * e + j] += a[i] * a[j];
            }
            b[i * 10 + y as usize] += a[i];
        }
    }
    for i in 0..e {
        g[i * e + i] += 100.0;
    }
    // Cholesky G = L L^T in the lower triangle, then two triangular solves per class.
    for j in 0..e {
        for k in 0..j {
            let l = g[j * e + k];
            for i in j..e {
                g[i * e + j] -= g[i * e + k] * l;
            }
        }
        let p = g[j * e + j].sqrt();
        for i in j..e {
            g[i * e + j] /= p;
        }
    }
    for c in 0..10 {
        for i in 0..e {
            let s: f64 = (0..i).map(|k| g[i * e + k] * b[k * 10 + c]).sum();
            b[i * 10 + c] = (b[i * 10 + c] - s) / g[i * e + i];
        }
        for i in (0..e).rev() {
            let s: f64 = (i + 1..e).map(|k| g[k * e + i] * b[k * 10 + c]).sum();
            b[i * 10 + c] = (b[i * 10 + c] - s) / g[i * e + i];
        }
    }
    let correct = test
        .iter()
        .zip(yte)
        .filter(|(f, y)| {
            let a = row(f);
            let score = |c: usize| (0..e).map(|i| a[i] * b[i * 10 + c]).sum::<f64>();
            (0..10).max_by(|&p, &q| score(p).total_cmp(&score(q))) == Some(**y as usize)
        })
        .count();
    correct as f64 / test.len() as f64
}

/// A translation-invariant feature: log magnitude of the 2-D Fourier transform of the image,
/// standardised per image (so also invariant to background level and contrast).
fn spectrum(img: &[u8], s: usize) -> Vec<f64> {
    let n = (s * s) as f64;
    let m = img.iter().map(|&v| v as f64).sum::<f64>() / n;
    let sd = (img.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n).sqrt() + 1e-6;
    let x: Vec<f64> = img.iter().map(|&v| (v as f64 - m) / sd).collect();
    let tw: Vec<(f64, f64)> = (0..s).map(|k| (std::f64::consts::TAU * k as f64 / s as f64).sin_cos()).collect();
    // Rows, then columns.
    let mut rows = vec![(0f64, 0f64); s * s];
    for y in 0..s {
        for u in 0..s {
            rows[y * s + u] = (0..s).fold((0.0, 0.0), |(re, im), t| {
                let (sn, cs) = tw[(u * t) % s];
                (re + x[y * s + t] * cs, im - x[y * s + t] * sn)
            });
        }
    }
    let mut out = Vec::with_capacity(s * s);
    for v in 0..s {
        for u in 0..s {
            let (re, im) = (0..s).fold((0.0, 0.0), |(re, im), y| {
                let (sn, cs) = tw[(v * y) % s];
                let (a, b) = rows[y * s + u];
                (re + a * cs + b * sn, im + b * cs - a * sn)
            });
            out.push((re * re + im * im).sqrt().ln_1p());
        }
    }
    out
}

#[test]
fn a_linear_probe_on_raw_pixels_is_weak_and_on_invariant_features_much_better() {
    // Learnable but not trivial: position, size, rotation and contrast vary so much within a
    // class that a linear classifier on raw pixels does poorly (about 27% here), while the same
    // classifier on translation-invariant features does far better (about 72%). That gap is
    // what a good representation has to win.
    let (train, test) = (generate(2000, 16, 1, 11), generate(500, 16, 1, 12));
    let (ytr, yte) = (train.labels.as_ref().unwrap(), test.labels.as_ref().unwrap());
    let raw = |set: &mae::data::ImageSet| -> Vec<Vec<f64>> {
        (0..set.len()).map(|i| set.image(i).iter().map(|&v| v as f64 / 255.0).collect()).collect()
    };
    let spec =
        |set: &mae::data::ImageSet| -> Vec<Vec<f64>> { (0..set.len()).map(|i| spectrum(set.image(i), 16)).collect() };
    let raw_acc = linear_probe_accuracy(&raw(&train), ytr, &raw(&test), yte);
    let spec_acc = linear_probe_accuracy(&spec(&train), ytr, &spec(&test), yte);
    println!("linear probe: raw pixels {:.1}%, Fourier magnitudes {:.1}%", raw_acc * 100.0, spec_acc * 100.0);
    assert!(raw_acc > 0.15 && raw_acc < 0.5, "raw pixels: {raw_acc}");
    assert!(spec_acc > raw_acc + 0.25, "invariant features {spec_acc} vs raw pixels {raw_acc}");
}

#[test]
fn thousands_of_small_images_take_well_under_a_second() {
    let t = Instant::now();
    let set = generate(2000, 32, 1, 5);
    let grey = t.elapsed();
    let t = Instant::now();
    generate(2000, 32, 3, 5);
    let rgb = t.elapsed();
    println!("2000 synthetic 32x32 images: grey {grey:?}, RGB {rgb:?}");
    assert_eq!(set.len(), 2000);
    // Generous bounds: the machine is shared, and alone they take about 50 and 100 ms.
    assert!(grey.as_secs_f32() < 0.5 && rgb.as_secs_f32() < 1.0, "grey {grey:?}, RGB {rgb:?}");
}
