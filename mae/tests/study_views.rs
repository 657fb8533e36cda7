//! `mae study --views`: the masked model beside the plain autoencoder (attention, reconstructions
//! over mask ratios, the features' geometry), on the nano model and built-in images.

use std::path::PathBuf;

use engine::Device;
use mae::classifiers::ProbeOptions;
use mae::config::ModelConfig;
use mae::eval::attention_view::{PAD, RATIO_LABEL_WIDTH, tile_scale};
use mae::masking::MaskStrategy;
use mae::recipe::Recipe;
use mae::source::DataSource;
use mae::study::{StudyOptions, run_study};

fn nano() -> ModelConfig {
    ModelConfig::by_name("mae_vit_nano_patch4_16").unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mae-study-views-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn study(out: PathBuf, ratios: Vec<f32>) -> StudyOptions {
    StudyOptions {
        ratios,
        strategies: vec![MaskStrategy::Random],
        targets: vec![true],
        seconds_per_run: None,
        steps_per_run: Some(2),
        recipe: Recipe { batch: 16, base_lr: 1e-3, ..Recipe::paper() },
        probe: ProbeOptions { epochs: 1, batch: 64, ..Default::default() },
        probe_train_limit: Some(100),
        views: true,
        ..StudyOptions::new(DataSource::Builtin { count: 120 }, nano(), out)
    }
}

#[test]
fn the_study_draws_the_masked_model_beside_the_plain_autoencoder() {
    let out = scratch("both");
    let r = run_study(&study(out.clone(), vec![0.0, 0.75]), &Device::Cpu).unwrap();
    let names: Vec<String> = r.views.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["attention.png", "attention_reconstructions.png", "geometry.png"]);
    let size = |i: usize| image::image_dimensions(&r.views[i]).unwrap();
    let c = nano();
    let tile = c.img_size as u32 * tile_scale(c.img_size);
    // Attention: per model the image, each head and their mean; titles may wrap, so the height is
    // at least one line of titles above four rows of images.
    let (w, h) = size(0);
    assert_eq!(w, PAD + 2 * (c.num_heads as u32 + 2) * (tile + PAD));
    assert!(h >= PAD + 9 + PAD + 4 * (tile + PAD), "{h}");
    // Reconstructions: the ratio, the original, the masked input, then two columns a model; four ratios.
    let (w, h) = size(1);
    assert_eq!(w, PAD + RATIO_LABEL_WIDTH + PAD + (2 + 2 * 2) * (tile + PAD));
    assert!(h >= PAD + 9 + PAD + 4 * (tile + PAD), "{h}");
    // Geometry: three panels (the two runs and the pixels) of 420 pixels.
    assert_eq!(size(2).0, 3 * 420);
    let table = std::fs::read_to_string(&r.table).unwrap();
    let geometry = &table[table.find("The features' geometry").expect("a geometry table")..];
    for name in ["norm-pix-random-r0.75", "norm-pix-none-r0.00", "raw pixels"] {
        let row = geometry.lines().find(|l| l.starts_with(&format!("| {name} |"))).unwrap_or_else(|| panic!("{table}"));
        let numbers: Vec<f64> =
            row.split('|').filter_map(|c| c.trim().trim_end_matches('%').parse::<f64>().ok()).collect();
        assert_eq!(numbers.len(), 6, "{row}");
        assert!(numbers.iter().all(|v| v.is_finite()), "{row}");
    }
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn the_study_refuses_views_without_the_two_runs_they_compare() {
    let out = scratch("one");
    let Err(err) = run_study(&study(out.clone(), vec![0.5]), &Device::Cpu) else {
        panic!("a study without both runs drew views")
    };
    let err = err.to_string();
    assert!(err.contains("include 0.75 and 0 in --ratios"), "{err}");
    let _ = std::fs::remove_dir_all(out);
}
