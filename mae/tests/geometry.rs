//! `mae geometry` on a nano model and the built-in images: the picture is written at the size its
//! layout announces, the numbers are finite and in range, and bad arguments are refused before any
//! work.

use std::path::PathBuf;
use std::process::{Command, Output};

use engine::Device;
use mae::classifiers::{KNN_K, KNN_TEMPERATURE, knn_accuracy};
use mae::config::ModelConfig;
use mae::data::SYNTHETIC_CLASSES;
use mae::eval::geometry::geometry;
use mae::features::{FeatureSpec, Pool};
use mae::io::scatter::scatter_size;
use mae::probe::{ProbeData, encoder_features, pixel_features};
use mae::source::DataSource;

const NANO: &str = "mae_vit_nano_patch4_16";

fn mae() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mae"));
    c.env("MAE_DEVICE", "cpu");
    c
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mae-geometry-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The numbers of a markdown table's body rows (percent signs dropped), first two columns skipped.
fn table_numbers(table: &str) -> Vec<Vec<f64>> {
    table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| features"))
        .map(|l| {
            l.split('|')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .skip(2)
                .map(|c| c.trim_end_matches('%').parse::<f64>().unwrap_or_else(|_| panic!("not a number: {c} in {l}")))
                .collect()
        })
        .collect()
}

#[test]
fn a_trained_and_a_random_encoder_and_the_pixels_are_drawn_side_by_side_with_finite_numbers() {
    let dir = scratch("cli");
    let run = dir.join("run");
    let train = [
        "train",
        "--data",
        "builtin:240",
        "--model",
        NANO,
        "--batch",
        "32",
        "--steps",
        "2",
        "--out",
        run.to_str().unwrap(),
    ];
    let o = mae().args(train).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let png = dir.join("geometry.png");
    let table = dir.join("geometry.md");
    let o = mae()
        .args(["geometry", "--checkpoint", run.to_str().unwrap(), "--checkpoint", "random", "--model", NANO])
        .args(["--data", "builtin:240", "--labels", "masked,random", "--panel-size", "200"])
        .args(["--out", png.to_str().unwrap(), "--table", table.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let img = image::open(&png).unwrap();
    let names: Vec<String> = SYNTHETIC_CLASSES.iter().map(|s| s.to_string()).collect();
    let (w, h) = scatter_size(3, 200, "a caption", &names);
    assert_eq!((img.width(), img.height()), (w, h));
    assert_eq!(w, 600, "three panels of 200");
    let text = std::fs::read_to_string(&table).unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), text.trim(), "the table printed is the one written");
    for name in ["| masked |", "| random |", "| raw pixels |"] {
        assert!(text.contains(name), "{text}");
    }
    let rows = table_numbers(&text);
    assert_eq!(rows.len(), 3, "{text}");
    for r in &rows {
        // k-NN %, Fisher, Fisher on PC1-2, PC1 %, PC2 %.
        assert_eq!(r.len(), 5, "{text}");
        assert!(r.iter().all(|v| v.is_finite() && *v >= 0.0), "{text}");
        assert!(r[0] <= 100.0 && r[3] + r[4] <= 100.0 + 1e-9 && r[3] >= r[4], "{text}");
    }
    // Without the pixels, standardised: two panels.
    let o = mae()
        .args([
            "geometry",
            "--checkpoint",
            run.to_str().unwrap(),
            "--no-pixels",
            "--standardize",
            "--panel-size",
            "180",
        ])
        .args(["--test-limit", "30", "--out", png.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), scatter_size(1, 180, "a caption", &names));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_arguments_are_refused_before_any_work_with_what_to_change() {
    let dir = scratch("refusals");
    let png = dir.join("never.png");
    let base = ["geometry", "--checkpoint", "random", "--model", NANO, "--data", "builtin:100"];
    let refused = |extra: &[&str], says: &str| {
        let o = mae().args(base).args(extra).args(["--out", png.to_str().unwrap()]).output().unwrap();
        assert!(!o.status.success(), "{extra:?} was accepted");
        assert!(stderr(&o).contains(says), "{extra:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
        assert!(!png.exists(), "{extra:?} wrote a picture");
    };
    refused(&["--labels", "one,two"], "one name per checkpoint");
    refused(&["--panel-size", "50"], "at least 160");
    refused(&["--test-limit", "1"], "at least 2 test images");
    refused(&["--pool", "max"], "possible values");
    let o = mae().args(["geometry", "--out", png.to_str().unwrap()]).output().unwrap();
    assert!(!o.status.success() && stderr(&o).contains("--checkpoint"), "{}", stderr(&o));
    // Data without labels cannot be coloured by class.
    let unlabelled = dir.join("images");
    std::fs::create_dir_all(&unlabelled).unwrap();
    image::RgbImage::new(16, 16).save(unlabelled.join("a.png")).unwrap();
    let o = mae()
        .args(["geometry", "--checkpoint", "random", "--model", NANO, "--data"])
        .arg(format!("folder:{}", unlabelled.display()))
        .args(["--out", png.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success() && !png.exists(), "{}", stderr(&o));
    assert!(stderr(&o).contains("no labels"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_geometry_of_a_nano_encoder_and_of_pixels_is_finite_and_its_knn_is_the_probes() {
    let c = ModelConfig::by_name(NANO).unwrap();
    let data = ProbeData::load(&DataSource::Builtin { count: 200 }, &c, None, None, 0).unwrap();
    let model = mae::MaskedAutoencoder::new(&c, 1, &Device::Cpu).unwrap();
    let (train, test) = encoder_features(&model, &data, FeatureSpec::output(Pool::Both)).unwrap();
    let g = geometry("random", &train, &test, data.classes, &Device::Cpu).unwrap();
    assert_eq!(g.points.len(), 2 * data.test.len());
    assert_eq!(g.dim, 2 * c.embed_dim);
    assert!(g.points.iter().all(|v| v.is_finite()));
    assert!(g.fisher.is_finite() && g.fisher > 0.0 && g.fisher_2d.is_finite() && g.fisher_2d >= 0.0);
    assert!(g.explained[0] >= g.explained[1] && g.explained[0] + g.explained[1] <= 1.0 + 1e-12);
    let knn = knn_accuracy(&train, &test, data.classes, KNN_K, KNN_TEMPERATURE, &Device::Cpu).unwrap();
    assert_eq!(g.knn, knn, "the k-NN column of `mae probe`");
    let (train, test) = pixel_features(&data, c.img_size).unwrap();
    let p = geometry("raw pixels", &train, &test, data.classes, &Device::Cpu).unwrap();
    assert_eq!(p.dim, 3 * 16 * 16);
    assert!(p.pca_converged && p.fisher.is_finite() && p.knn.is_finite());
}
