//! Layer by layer: the probe on each encoder block's output (`mae probe --per-block`, `mae study
//! --per-block`), on the nano model and built-in images.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use engine::{Device, Rng, no_grad};
use mae::classifiers::ProbeOptions;
use mae::config::ModelConfig;
use mae::eval::per_block::{DepthCurve, PANEL_HEIGHT, PANEL_WIDTH, per_block_plot, per_block_table, probe_every_block};
use mae::features::{FeatureSpec, Pool, extract, extract_every_layer};
use mae::masking::MaskStrategy;
use mae::probe::ProbeData;
use mae::recipe::Recipe;
use mae::source::DataSource;
use mae::study::{StudyOptions, run_study};

const NANO: &str = "mae_vit_nano_patch4_16";

fn nano() -> ModelConfig {
    ModelConfig::by_name(NANO).unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mae-per-block-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn mae(args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mae"));
    c.env("MAE_DEVICE", "cpu").env("MAE_CACHE_DIR", scratch("cache"));
    c.args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The percentages of a markdown table's row that starts with `| {first} |`.
fn row_percentages(table: &str, first: &str) -> Vec<f32> {
    let line = table.lines().find(|l| l.starts_with(&format!("| {first} |"))).unwrap_or_else(|| panic!("{table}"));
    line.split('|').filter_map(|c| c.trim().strip_suffix('%')).map(|v| v.parse().unwrap()).collect()
}

fn assert_figure_size(path: &Path) {
    let img = image::open(path).unwrap();
    assert_eq!((img.width(), img.height()), (2 * PANEL_WIDTH, PANEL_HEIGHT), "{}", path.display());
}

#[test]
fn every_layer_comes_from_one_pass_block_zero_first_and_the_output_last() {
    let c = nano();
    let model = mae::MaskedAutoencoder::new(&c, 3, &Device::Cpu).unwrap();
    let set = mae::data::synthetic::generate(5, c.img_size, c.in_chans, 7);
    let norm = set.channel_stats();
    // A batch of 2 splits the 5 images unevenly: the layout must not depend on the batching.
    let layers = extract_every_layer(&model, &set, &norm, Pool::Both, 2).unwrap();
    assert_eq!(layers.len(), c.depth + 1, "block 0, then each block");
    assert!(layers.iter().all(|l| l.len() == 5 * 2 * c.embed_dim));
    // The output is what the paper's probe reads; the blocks before it are `--blocks`' parts.
    let output = extract(&model, &set, &norm, FeatureSpec::output(Pool::Both), 5).unwrap();
    assert_eq!(layers[c.depth], output);
    let all = FeatureSpec { pool: Pool::Both, blocks: c.depth };
    let concatenated = extract(&model, &set, &norm, all, 5).unwrap();
    let w = 2 * c.embed_dim;
    for i in 0..5 {
        for b in 1..=c.depth {
            let part = &concatenated[(i * c.depth + b - 1) * w..(i * c.depth + b) * w];
            assert_eq!(part, &layers[b][i * w..(i + 1) * w], "image {i}, block {b}");
        }
    }
    // Block 0: the embedded patches, whose cls token is the same for every image.
    let tokens = no_grad(|| {
        let images = mae::data::loader::make_batch(
            &set,
            &[0, 1],
            c.img_size,
            &mae::data::augment::Augment::none(),
            &norm,
            &mut Rng::new(0),
        )
        .0;
        let (patches, _) = mae::batch::model_inputs(&c, &images, 2, &Device::Cpu).unwrap();
        model.encode_all_layers(&patches).unwrap()
    });
    assert_eq!(tokens[0].shape(), &[2, 1 + c.num_patches(), c.embed_dim]);
    let zero = tokens[0].to_vec().unwrap();
    let t = (1 + c.num_patches()) * c.embed_dim;
    assert_eq!(&zero[..c.embed_dim], &zero[t..t + c.embed_dim], "cls of block 0 is the same for both images");
}

#[test]
fn with_shuffled_labels_every_block_probes_near_chance() {
    let c = nano();
    let mut data = ProbeData::load(&DataSource::Builtin { count: 300 }, &c, None, None, 0).unwrap();
    assert_eq!(data.classes, 10);
    // The training labels shuffled: nothing in the images predicts them, so whatever a probe
    // learns, its test accuracy is that of a guess, 1/10 on balanced classes (100 test images: a
    // standard deviation of 3 points).
    let labels = data.train.labels.as_mut().unwrap();
    Rng::new(5).shuffle(labels);
    let model = mae::MaskedAutoencoder::new(&c, 1, &Device::Cpu).unwrap();
    let o = ProbeOptions { epochs: 3, batch: 64, ..Default::default() };
    let scores = probe_every_block(&model, &data, Pool::Both, &o, &Device::Cpu).unwrap();
    assert_eq!(scores.len(), c.depth + 1, "a score per block, block 0 included");
    for (block, s) in scores.iter().enumerate() {
        for acc in [s.linear, s.knn] {
            assert!(acc.is_finite() && acc <= 0.1 + 0.15, "block {block}: {s:?}");
        }
    }
}

#[test]
fn the_figure_has_two_panels_of_the_documented_size_and_the_table_a_row_per_block() {
    let s = |linear, knn| mae::classifiers::ProbeScores { linear, knn, weight_decay: 0.0 };
    let curves = [
        DepthCurve { name: "masked".into(), blocks: vec![s(0.5, 0.4), s(0.7, 0.6), s(0.8, 0.7)] },
        DepthCurve { name: "shallow".into(), blocks: vec![s(0.5, 0.4), s(0.6, 0.5)] },
    ];
    let img = per_block_plot(&curves, Some(s(0.6, 0.55)));
    assert_eq!((img.width(), img.height()), (2 * PANEL_WIDTH, PANEL_HEIGHT));
    let table = per_block_table(&curves, Some(s(0.6, 0.55)));
    assert_eq!(row_percentages(&table, "0"), [50.0, 40.0, 50.0, 40.0]);
    assert_eq!(row_percentages(&table, "2"), [80.0, 70.0], "the shallow encoder's cells are empty: {table}");
    assert!(table.contains("raw pixels: linear probe 60.00%, k-NN 55.00%"), "{table}");
}

#[test]
fn finetune_out_saves_a_supervised_model_that_probe_per_block_compares_with_others_on_one_figure() {
    let dir = scratch("cli");
    let (supervised, masked) = (dir.join("supervised"), dir.join("masked"));
    let scratch_args = ["--checkpoint", "random", "--model", NANO, "--data", "builtin:128", "--epochs", "1"];
    let out = ["--out", supervised.to_str().unwrap()];
    let o = mae(&[&["finetune"][..], &scratch_args, &out].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("fine-tuned model:"), "{}", stderr(&o));
    let meta = mae::checkpoint::read_checkpoint_metadata(&supervised.join("model.safetensors")).unwrap();
    assert_eq!(meta.get("mae.data").map(String::as_str), Some("builtin:128"));
    assert_eq!(meta.get("mae.finetuned_from").map(String::as_str), Some("random"));
    // A masked autoencoder of a few steps, trained on other images.
    let train = ["train", "--data", "builtin:256", "--model", NANO, "--batch", "32", "--steps", "2"];
    let o = mae(&[&train[..], &["--out", masked.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", stderr(&o));

    let (figure, table) = (dir.join("depth.png"), dir.join("depth.md"));
    let listed = format!("{},sup={}", masked.display(), supervised.display());
    let probe = [
        "probe",
        "--per-block",
        "--checkpoint",
        &listed,
        "--checkpoint",
        "random",
        "--model",
        NANO,
        "--epochs",
        "2",
        "--weight-decays",
        "0",
        "--figure",
        figure.to_str().unwrap(),
        "--out",
        table.to_str().unwrap(),
    ];
    // Trained on different images, the encoders are compared only on images the command names.
    let o = mae(&probe);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("pass --data"), "{}", stderr(&o));
    let o = mae(&[&probe[..], &["--data", "builtin:128"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_figure_size(&figure);
    let text = std::fs::read_to_string(&table).unwrap();
    assert!(
        text.starts_with("| block | masked linear | masked k-NN | sup linear | sup k-NN | random-init linear |"),
        "{text}"
    );
    let depth = nano().depth;
    for block in 0..=depth {
        let row = row_percentages(&text, &block.to_string());
        assert_eq!(row.len(), 6, "three encoders, linear and k-NN: {text}");
        assert!(row.iter().all(|v| v.is_finite() && (0.0..=100.0).contains(v)), "{text}");
    }
    assert!(!text.contains(&format!("| {} |", depth + 1)), "one row per block: {text}");
    assert!(text.contains("raw pixels: linear probe"), "{text}");

    // Several checkpoints without --per-block, and --blocks with it, are refused with the fix.
    let o = mae(&["probe", "--checkpoint", &listed, "--data", "builtin:128"]);
    assert!(!o.status.success() && stderr(&o).contains("only with --per-block"), "{}", stderr(&o));
    let o = mae(&["probe", "--per-block", "--checkpoint", masked.to_str().unwrap(), "--blocks", "2"]);
    assert!(!o.status.success() && stderr(&o).contains("leave --blocks out"), "{}", stderr(&o));
    std::fs::remove_dir_all(dir).unwrap();
    let _ = std::fs::remove_dir_all(scratch("cache"));
}

#[test]
fn the_study_probes_every_block_of_each_run_once_and_draws_them_on_one_figure() {
    let out = scratch("study");
    let o = StudyOptions {
        ratios: vec![0.0, 0.75],
        strategies: vec![MaskStrategy::Random],
        targets: vec![true],
        seconds_per_run: None,
        steps_per_run: Some(2),
        recipe: Recipe { batch: 16, base_lr: 1e-3, ..Recipe::paper() },
        probe: ProbeOptions { epochs: 1, batch: 64, ..Default::default() },
        probe_train_limit: Some(100),
        per_block: true,
        ..StudyOptions::new(DataSource::Builtin { count: 120 }, nano(), out.clone())
    };
    let r = run_study(&o, &Device::Cpu).unwrap();
    let plot = r.per_block_plot.expect("a per-block figure");
    assert_figure_size(&plot);
    let table = std::fs::read_to_string(&r.table).unwrap();
    let per_block = &table[table.find("at each encoder block").expect("a per-block table")..];
    assert!(per_block.contains("| block | norm-pix-none-r0.00 linear |"), "{per_block}");
    assert!(per_block.contains("random-init linear"), "{per_block}");
    for block in 0..=nano().depth {
        let row = row_percentages(per_block, &block.to_string());
        assert_eq!(row.len(), 2 * 3, "two runs and the random encoder: {per_block}");
        assert!(row.iter().all(|v| v.is_finite()), "{per_block}");
    }
    // Kept: a second start reads every block's scores back and writes no line more.
    let kept = std::fs::read_to_string(out.join("runs/norm-pix-random-r0.75/probe_per_block.csv")).unwrap();
    assert_eq!(kept.lines().count(), nano().depth + 1);
    run_study(&o, &Device::Cpu).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("runs/norm-pix-random-r0.75/probe_per_block.csv")).unwrap(), kept);
    std::fs::remove_dir_all(out).unwrap();
}
