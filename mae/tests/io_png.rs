//! Pictures: plots render at the requested size with their series, grids have the documented
//! size, text changes pixels, and saved PNGs decode to the same pixels.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use mae::io::font::text_width;
use mae::io::plot::PALETTE;
use mae::io::{Series, draw_text, image_grid, line_plot, save_png, to_rgb};

fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("io_png-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn count(img: &RgbImage, f: impl Fn(&Rgb<u8>) -> bool) -> usize {
    img.pixels().filter(|p| f(p)).count()
}

fn non_white(img: &RgbImage) -> usize {
    count(img, |p| p.0 != [255, 255, 255])
}

/// Pixels close to `c` (anti-aliasing blends the edges, the line cores are exact).
fn near(img: &RgbImage, c: [u8; 3]) -> usize {
    count(img, |p| p.0.iter().zip(c).all(|(&a, b)| (a as i32 - b as i32).abs() <= 8))
}

fn loss_curve(steps: usize, scale: f64) -> Vec<(f64, f64)> {
    (0..steps).map(|i| (i as f64, scale * (1.0 + 3.0 * (-(i as f64) / 40.0).exp()) + 0.01 * (i as f64).sin())).collect()
}

#[test]
fn a_plot_with_several_series_renders_each_at_the_requested_size() {
    let mut with_gaps = loss_curve(200, 0.5);
    with_gaps[50].1 = f64::NAN;
    with_gaps[51].1 = f64::INFINITY;
    with_gaps[52].0 = f64::NEG_INFINITY;
    let series = vec![
        Series { name: "train".into(), points: loss_curve(200, 1.0), color: PALETTE[0] },
        Series { name: "validation".into(), points: with_gaps, color: PALETTE[1] },
        Series { name: "probe".into(), points: vec![(0.0, 2.0), (100.0, 1.5), (199.0, 1.2)], color: PALETTE[2] },
    ];
    for log_y in [false, true] {
        let img = line_plot(&series, "Training loss", "step", "loss", 640, 400, log_y);
        assert_eq!(img.dimensions(), (640, 400));
        assert!(non_white(&img) > 5_000, "{}", non_white(&img));
        for s in &series {
            assert!(near(&img, s.color) > 100, "{} barely drawn: {}", s.name, near(&img, s.color));
        }
        save_png(&scratch(&format!("plot-{log_y}")).join("loss.png"), &img).unwrap();
    }
}

#[test]
fn probe_accuracy_against_mask_ratio_plots_one_line_per_strategy() {
    let ratios = [0.1, 0.25, 0.5, 0.75, 0.9];
    let series: Vec<Series> = ["random", "block", "grid"]
        .iter()
        .enumerate()
        .map(|(k, name)| Series {
            name: name.to_string(),
            points: ratios.iter().map(|&r| (r, 0.6 + 0.1 * k as f64 + 0.2 * r * (1.0 - r))).collect(),
            color: PALETTE[k],
        })
        .collect();
    let img = line_plot(&series, "Linear probe accuracy (%)", "mask ratio", "accuracy", 800, 500, false);
    assert_eq!(img.dimensions(), (800, 500));
    for s in &series {
        assert!(near(&img, s.color) > 100);
    }
    save_png(&scratch("probe").join("probe.png"), &img).unwrap();
}

#[test]
fn degenerate_plots_render_without_panicking() {
    let one = |points: Vec<(f64, f64)>| vec![Series { name: "s".into(), points, color: [200, 0, 0] }];
    let cases: Vec<(Vec<Series>, bool)> = vec![
        (vec![], false),
        (one(vec![]), true),
        (one(vec![(3.0, 7.0)]), false),
        (one(vec![(3.0, 7.0)]), true),
        (one(vec![(0.0, 5.0), (1.0, 5.0), (2.0, 5.0)]), false),
        (one(vec![(0.0, 0.0), (1.0, 0.0)]), false),
        (one(vec![(0.0, 0.0), (1.0, -1.0), (2.0, 0.5)]), true),
        (one(vec![(f64::NAN, 1.0), (1.0, f64::NAN)]), false),
        (one(vec![(-f64::MAX, -f64::MAX), (f64::MAX, f64::MAX)]), false),
        (one(vec![(0.0, 1e-300), (1.0, 1e300)]), true),
        (one(vec![(1e16, 1.0), (1e16 + 2.0, 2.0)]), false),
    ];
    for (i, (series, log_y)) in cases.iter().enumerate() {
        for (w, h) in [(320, 240), (40, 30), (1, 1)] {
            let img = line_plot(series, "t", "x", "y", w, h, *log_y);
            assert_eq!(img.dimensions(), (w, h), "case {i}");
        }
    }
    // A single point is still visible as a marker.
    let img = line_plot(&cases[2].0, "", "", "", 200, 150, false);
    assert!(near(&img, [200, 0, 0]) > 10);
    // A constant series is a visible line.
    let img = line_plot(&cases[4].0, "", "", "", 200, 150, false);
    assert!(near(&img, [200, 0, 0]) > 100);
}

#[test]
fn image_grid_sizes_follow_the_documented_arithmetic() {
    let tile = |v: u8| {
        RgbImage::from_fn(
            28,
            28,
            |x, y| if (x / 7 + y / 7) % 2 == 0 || v < 20 { Rgb([v, 0, 0]) } else { Rgb([0, 90, v]) },
        )
    };
    let rows: Vec<Vec<RgbImage>> = (0..3).map(|r| (0..4).map(|c| tile(10 * r + c)).collect()).collect();
    let (scale, pad) = (3, 2);

    let g = image_grid(&rows, &[], scale, pad);
    assert_eq!(g.dimensions(), (pad + 4 * (28 * scale + pad), pad + 3 * (28 * scale + pad)));
    // Nearest-neighbour upscaling: cell (row 1, col 2) is filled with its tile's colour.
    let (x0, y0) = (pad + 2 * (28 * scale + pad), pad + (28 * scale + pad));
    for (dx, dy) in [(0, 0), (28 * scale - 1, 28 * scale - 1), (40, 17)] {
        assert_eq!(g.get_pixel(x0 + dx, y0 + dy).0, [12, 0, 0]);
    }
    assert_eq!(g.get_pixel(x0 - 1, y0).0, [255, 255, 255], "padding stays white");

    let titles = ["orig", "masked", "recon", "recon+vis"];
    let g = image_grid(&rows, &titles, scale, pad);
    assert_eq!(g.dimensions(), (pad + 4 * (28 * scale + pad), pad + (9 + pad) + 3 * (28 * scale + pad)));
    assert!(count(&g, |p| p.0 == [30, 30, 30]) > 50, "titles are drawn");

    // Long titles wrap into more lines at the column width (84 px = 14 characters).
    let titles = ["original", "masked", "reconstruction", "reconstruction with visible patches"];
    let g = image_grid(&rows, &titles, scale, pad);
    assert_eq!(g.dimensions(), (pad + 4 * (28 * scale + pad), pad + (3 * 9 + pad) + 3 * (28 * scale + pad)));
    save_png(&scratch("grid").join("grid.png"), &g).unwrap();

    // A column is widened to its title's longest word; tiles are centred.
    let word = "reconstructions";
    let g = image_grid(&rows, &[word], 1, 0);
    assert_eq!(g.width(), text_width(word, 1) + 3 * 28);

    // Empty and ragged inputs.
    assert_eq!(image_grid(&[], &[], 4, 0).dimensions(), (1, 1));
    let ragged = vec![vec![tile(1)], vec![tile(2), tile(3)]];
    assert_eq!(image_grid(&ragged, &[], 1, 1).dimensions(), (1 + 2 * 29, 1 + 2 * 29));
}

#[test]
fn drawing_text_changes_pixels() {
    let mut img = RgbImage::from_pixel(120, 20, Rgb([255, 255, 255]));
    draw_text(&mut img, 2, 2, "Loss 0.25e-3", [0, 0, 0], 1);
    let small = non_white(&img);
    assert!(small > 40, "{small}");
    let mut big = RgbImage::from_pixel(240, 40, Rgb([255, 255, 255]));
    draw_text(&mut big, 2, 2, "Loss 0.25e-3", [0, 0, 0], 2);
    assert_eq!(non_white(&big), 4 * small);
    assert_eq!(text_width("Loss 0.25e-3", 1), 12 * 6 - 1);
    // Clipped and unknown characters do not panic.
    draw_text(&mut img, -30, -3, "ÄÖÜ (100%) = _+/:,", [0, 0, 255], 3);
    draw_text(&mut img, 119, 19, "xyz\nabc", [0, 0, 255], 1);
    let mut every = RgbImage::from_pixel(600, 60, Rgb([255, 255, 255]));
    let printable: String = (' '..='~').collect();
    draw_text(&mut every, 0, 0, &printable, [0, 0, 0], 1);
    // Every printable character except the space has pixels.
    for (i, c) in printable.chars().enumerate().skip(1) {
        let x0 = i as u32 * 6;
        let inked = (x0..x0 + 5).any(|x| (0..7).any(|y| every.get_pixel(x, y).0 == [0, 0, 0]));
        assert!(inked, "{c:?} is blank");
    }
    // A specimen to look at: target/tmp/io_png-font/font.png.
    let mut specimen = RgbImage::from_pixel(48 * 18 + 12, 2 * 27 + 12, Rgb([255, 255, 255]));
    draw_text(&mut specimen, 6, 6, &format!("{}\n{}", &printable[..48], &printable[48..]), [0, 0, 0], 3);
    save_png(&scratch("font").join("font.png"), &specimen).unwrap();
}

#[test]
fn to_rgb_converts_grey_and_colour_with_clamping() {
    let g = to_rgb(&[0.0, 0.5, 1.0, 2.0, -1.0, f32::NAN], 1, 2, 3);
    assert_eq!(g.dimensions(), (3, 2));
    let px: Vec<[u8; 3]> = g.pixels().map(|p| p.0).collect();
    assert_eq!(px, [[0; 3], [128; 3], [255; 3], [255; 3], [0; 3], [0; 3]]);
    let c = to_rgb(&[1.0, 0.0, 0.0, 1.0, 0.25, 0.0], 3, 1, 2);
    assert_eq!(c.get_pixel(0, 0).0, [1.0f32, 0.0, 0.25].map(|v| (v * 255.0).round() as u8));
    assert_eq!(c.get_pixel(1, 0).0, [0, 255, 0]);
    // A short slice is padded with black rather than panicking.
    assert_eq!(to_rgb(&[1.0], 3, 2, 2).get_pixel(1, 1).0, [0, 0, 0]);
}

#[test]
fn save_png_writes_a_decodable_png() {
    let dir = scratch("save");
    let img = to_rgb(&(0..3 * 5 * 7).map(|i| i as f32 / 105.0).collect::<Vec<_>>(), 3, 5, 7);
    let path = dir.join("x.png");
    save_png(&path, &img).unwrap();
    let back = image::open(&path).unwrap().to_rgb8();
    assert_eq!(back, img);
    // Overwrites atomically, leaving no temporary files.
    save_png(&path, &RgbImage::from_pixel(2, 2, Rgb([1, 2, 3]))).unwrap();
    assert_eq!(image::open(&path).unwrap().to_rgb8().dimensions(), (2, 2));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    // An unwritable place is an error naming it.
    let e = save_png(&dir.join("no/such/dir/y.png"), &img).unwrap_err().to_string();
    assert!(e.contains("y.png"), "{e}");
}
