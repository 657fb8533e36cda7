//! The evaluation tools on data whose answer is known, and the study end to end on a tiny budget.

use engine::{Device, Rng};
use mae::classifiers::{
    Features, KNN_K, KNN_PROTOCOLS, KNN_TEMPERATURE, ProbeOptions, knn_accuracy, knn_under_protocols, linear_probe,
    standardize,
};
use mae::config::ModelConfig;
use mae::features::{FeatureSpec, Pool, extract};
use mae::masking::MaskStrategy;
use mae::recipe::Recipe;
use mae::source::DataSource;
use mae::study::{StudyOptions, plan, run_study};

/// Gaussian blobs around well-separated class centres in 16 dimensions.
fn separable(n_per_class: usize, classes: usize, seed: u64) -> Features {
    blobs(n_per_class, classes, 6.0, seed)
}

/// Unit Gaussian blobs in 16 dimensions whose class centres lie `spread` apart along their axes.
fn blobs(n_per_class: usize, classes: usize, spread: f32, seed: u64) -> Features {
    let mut rng = Rng::new(seed);
    let dim = 16;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for c in 0..classes {
        for _ in 0..n_per_class {
            for j in 0..dim {
                let centre = if j % classes == c { spread } else { 0.0 };
                x.push(centre + rng.normal());
            }
            y.push(c as u32);
        }
    }
    Features::new(x, y, dim).unwrap()
}

#[test]
fn the_linear_probe_separates_linearly_separable_features() {
    let (mut train, mut test) = (separable(200, 4, 1), separable(50, 4, 2));
    standardize(&mut train, &mut test);
    let acc =
        linear_probe(&train, &test, 4, &ProbeOptions { epochs: 10, batch: 64, ..Default::default() }, &Device::Cpu)
            .unwrap()
            .accuracy;
    assert!(acc >= 0.99, "accuracy {acc}");
}

#[test]
fn the_probe_chooses_its_weight_decay_on_held_out_training_features_never_the_test_split() {
    // Overlapping classes: how well a probe does depends on how exact its weights are.
    let (mut train, mut test) = (blobs(200, 4, 1.0, 3), blobs(50, 4, 1.0, 4));
    standardize(&mut train, &mut test);
    let probe = |decays: &[f32], test: &Features| {
        let o = ProbeOptions { epochs: 5, batch: 32, weight_decays: decays.to_vec(), ..Default::default() };
        linear_probe(&train, test, 4, &o, &Device::Cpu).unwrap()
    };
    // A decay this strong pulls the weights to nothing each step: it loses on the held-out
    // features, whichever order the candidates come in.
    for decays in [[0.0, 30.0], [30.0, 0.0]] {
        let p = probe(&decays, &test);
        assert_eq!(p.weight_decay, 0.0, "{decays:?}");
    }
    // The test labels play no part in the choice: scrambled, the same decay is chosen.
    let scrambled = Features::new(test.x.clone(), test.y.iter().map(|&y| (y + 1) % 4).collect(), test.dim).unwrap();
    assert_eq!(probe(&[30.0, 0.0], &scrambled).weight_decay, 0.0);
    // One candidate is used as it is, without a held-out split.
    assert_eq!(probe(&[30.0], &test).weight_decay, 30.0);
}

#[test]
fn fits_side_by_side_choose_and_score_as_fits_one_after_the_other() {
    let (mut train, mut test) = (blobs(100, 4, 1.0, 5), blobs(30, 4, 1.0, 6));
    standardize(&mut train, &mut test);
    let o = ProbeOptions { epochs: 3, batch: 32, weight_decays: vec![0.3, 0.0, 3.0, 0.01, 0.1], ..Default::default() };
    let probe = || linear_probe(&train, &test, 4, &o, &Device::Cpu).unwrap();
    let one_at_a_time = engine::cpu::parallel::with_threads(1, probe);
    for threads in [2, 3] {
        assert_eq!(engine::cpu::parallel::with_threads(threads, probe), one_at_a_time, "{threads} fits at once");
    }
}

#[test]
fn knn_gives_the_known_answer_on_a_hand_made_set() {
    // Two classes along two axes; each query sits closest (by angle) to one class.
    let train =
        Features::new(vec![1.0, 0.1, 0.9, 0.0, 1.0, -0.1, 0.0, 1.0, 0.1, 0.9, -0.1, 1.0], vec![0, 0, 0, 1, 1, 1], 2)
            .unwrap();
    let test = Features::new(vec![2.0, 0.3, 0.2, 3.0, 5.0, -1.0], vec![0, 1, 0], 2).unwrap();
    assert_eq!(knn_accuracy(&train, &test, 2, 3, 0.07, &Device::Cpu).unwrap(), 1.0);
    // With the labels of the test set flipped, nothing is right.
    let flipped = Features::new(test.x.clone(), vec![1, 0, 1], 2).unwrap();
    assert_eq!(knn_accuracy(&train, &flipped, 2, 3, 0.07, &Device::Cpu).unwrap(), 0.0);
}

#[test]
fn knn_protocols_start_with_the_probes_own_and_score_as_their_settings_do_one_by_one() {
    let first = KNN_PROTOCOLS[0];
    assert_eq!((first.k, first.temperature, first.standardized), (KNN_K, KNN_TEMPERATURE, false));
    // Overlapping blobs, pushed off the origin along one axis so that standardising (which centres
    // them) changes the cosines.
    let shift = |mut f: Features| {
        f.x.iter_mut().step_by(f.dim).for_each(|v| *v += 8.0);
        f
    };
    let train = shift(blobs(40, 3, 1.5, 11)).with_parts(2).unwrap();
    let test = shift(blobs(20, 3, 1.5, 12)).with_parts(2).unwrap();
    let scores = knn_under_protocols(&train, &test, 3, &KNN_PROTOCOLS, &Device::Cpu).unwrap();
    let (mut str, mut ste) = (train.clone(), test.clone());
    standardize(&mut str, &mut ste);
    for (p, got) in KNN_PROTOCOLS.iter().zip(&scores) {
        let (tr, te) = if p.standardized { (&str, &ste) } else { (&train, &test) };
        let want = knn_accuracy(tr, te, 3, p.k, p.temperature, &Device::Cpu).unwrap();
        assert_eq!(*got, want, "{}", p.name);
        assert!(*got > 0.5, "{}: {got}", p.name);
    }
}

#[test]
fn knn_weighs_each_part_of_concatenated_features_equally() {
    // Part one is long and says nothing (the same for every row); part two is short and says the
    // class. Over the whole vector part one drowns part two; part by part, part two decides.
    let row = |class: u32, jitter: f32| {
        let sign = if class == 0 { 1.0 } else { -1.0 };
        vec![100.0, 100.0 + jitter, sign * 0.1, 0.1 * jitter]
    };
    let make = |labels: &[u32], jitters: &[f32]| {
        let x = labels.iter().zip(jitters).flat_map(|(&c, &j)| row(c, j)).collect();
        Features::new(x, labels.to_vec(), 4).unwrap()
    };
    let train = make(&[0, 0, 1, 1], &[0.0, 0.3, 0.6, 0.9]);
    let test = make(&[1, 0], &[0.1, 0.8]);
    assert_eq!(knn_accuracy(&train, &test, 2, 1, 0.07, &Device::Cpu).unwrap(), 0.0);
    let (train, test) = (train.with_parts(2).unwrap(), test.with_parts(2).unwrap());
    assert_eq!(knn_accuracy(&train, &test, 2, 1, 0.07, &Device::Cpu).unwrap(), 1.0);
    assert!(Features::new(vec![0.0; 3], vec![0], 3).unwrap().with_parts(2).is_err());
}

#[test]
fn the_study_plans_one_plain_autoencoder_per_target() {
    let nano = ModelConfig::by_name("mae_vit_nano_patch4_16").unwrap();
    let o = StudyOptions {
        ratios: vec![0.0, 0.5, 0.75],
        strategies: vec![MaskStrategy::Random, MaskStrategy::Grid],
        extra_seeds: vec![1],
        decoder_depths: vec![1, 3],
        no_augment_run: true,
        train_limits: vec![50],
        encoders: vec![(64, 3)],
        ..StudyOptions::new(DataSource::Builtin { count: 100 }, nano, "unused".into())
    };
    let names: Vec<String> = plan(&o).into_iter().map(|p| p.name).collect();
    // The grid; decoder depth 3 besides the preset's 1; no augmentation; 50 images; a 64 x 3
    // encoder; seed 1 for the two runs that matter most.
    assert_eq!(names.len(), 2 * (1 + 2 * 2) + 1 + 3 + 2);
    for name in [
        "norm-pix-none-r0.00",
        "pixels-grid-r0.75",
        "norm-pix-random-r0.75-dec3",
        "norm-pix-random-r0.75-noaug",
        "norm-pix-random-r0.75-n50",
        "norm-pix-random-r0.75-enc64x3",
        "norm-pix-none-r0.00-s1",
    ] {
        assert!(names.contains(&name.to_string()), "{name} in {names:?}");
    }
    assert!(!names.contains(&"norm-pix-random-r0.75-dec1".to_string()), "the preset's depth is the main run");
}

#[test]
fn the_study_runs_end_to_end_on_a_tiny_budget() {
    let out = std::env::temp_dir().join(format!("mae-study-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let nano = ModelConfig::by_name("mae_vit_nano_patch4_16").unwrap();
    let o = StudyOptions {
        ratios: vec![0.0, 0.75],
        strategies: vec![MaskStrategy::Random, MaskStrategy::Block],
        targets: vec![true],
        seconds_per_run: None,
        steps_per_run: Some(3),
        // A recipe's decoder depth does not apply: the study keeps the preset's (1 here).
        recipe: Recipe { batch: 32, base_lr: 1e-3, decoder_depth: Some(2), ..Recipe::paper() },
        no_augment_run: true,
        train_limits: vec![100],
        encoders: vec![(16, 1)],
        snapshots: 3,
        probe: ProbeOptions { epochs: 2, batch: 64, ..Default::default() },
        probe_train_limit: Some(200),
        ..StudyOptions::new(DataSource::Builtin { count: 300 }, nano, out.clone())
    };
    let r = run_study(&o, &Device::Cpu).unwrap();
    // The grid's three, then no augmentation, 100 images, a 16 x 1 encoder.
    assert_eq!(r.rows.len(), 6);
    assert_eq!(r.baselines.len(), 2);
    for row in &r.rows {
        assert!((0.0..=1.0).contains(&row.linear) && (0.0..=1.0).contains(&row.knn), "{row:?}");
        assert!(out.join("runs").join(&row.name).join("reconstructions.png").is_file());
    }
    let table = std::fs::read_to_string(&r.table).unwrap();
    assert!(table.contains("norm-pix-block-r0.75") && table.contains("raw pixels"), "{table}");
    assert!(r.rows.iter().all(|row| row.decoder_depth == 1), "{:?}", r.rows);
    assert!(!table.contains("decoder depth 2"), "{table}");
    assert!(r.plot.is_file());
    // Three snapshots a run; the masked and the plain runs probed at each, on one plot.
    let snaps = mae::train::list_snapshots(&out.join("runs").join("norm-pix-random-r0.75"));
    assert_eq!(snaps.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(r.steps_plot.as_ref().is_some_and(|p| p.is_file()));
    assert!(table.contains("against pre-training steps") && table.contains("norm-pix-none-r0.00 linear"), "{table}");
    // A second start finds every run done and only redraws the table.
    let again = run_study(&o, &Device::Cpu).unwrap();
    // One that would train its runs at another lr is refused, naming both, and changes nothing.
    let other_lr = StudyOptions { recipe: Recipe { base_lr: 2e-3, ..o.recipe }, ..o.clone() };
    let Err(e) = run_study(&other_lr, &Device::Cpu) else { panic!("a study of another lr resumed") };
    let e = e.to_string();
    assert!(e.contains("base lr 1e-3") && e.contains("base lr 2e-3") && e.contains("--base-lr"), "{e}");
    // Nor one whose products would be at another precision (this one's are bf16, the default).
    let other_precision = StudyOptions { matmul_precision: engine::cpu::matmul::Precision::F32, ..o.clone() };
    let Err(e) = run_study(&other_precision, &Device::Cpu) else { panic!("a study of f32 products resumed") };
    assert!(e.to_string().contains("products bf16") && e.to_string().contains("--matmul-precision"), "{e}");
    // The recipe's name does not count, its settings do.
    let renamed = StudyOptions { recipe: Recipe { name: mae::recipe::RecipeName::Tuned, ..o.recipe }, ..o.clone() };
    assert_eq!(run_study(&renamed, &Device::Cpu).unwrap().rows, r.rows);
    assert_eq!(again.rows, r.rows);
    assert_eq!(again.baselines, r.baselines);
    // The baselines were probed once and kept: a start reads them back (here, doctored ones).
    let baselines_csv = out.join("baselines.csv");
    let doctored: Vec<String> = std::fs::read_to_string(&baselines_csv)
        .unwrap()
        .lines()
        .enumerate()
        .map(
            |(i, l)| if i == 0 { l.to_string() } else { l.rsplitn(4, ',').last().unwrap().to_string() + ",0.5,0.25,0" },
        )
        .collect();
    assert_eq!(doctored.len(), 3, "{doctored:?}");
    std::fs::write(&baselines_csv, doctored.join("\n") + "\n").unwrap();
    let cached = run_study(&o, &Device::Cpu).unwrap();
    assert!(cached.baselines.iter().all(|b| (b.1, b.2) == (0.5, 0.25)), "{:?}", cached.baselines);
    // Killed after a run's last checkpoint but before its row was written: the run has no step
    // left, and its row still gets the loss it ended with.
    let csv = out.join("results.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    let kept: Vec<&str> = text.lines().filter(|l| !l.starts_with("norm-pix-random-r0.75,")).collect();
    std::fs::write(&csv, kept.join("\n") + "\n").unwrap();
    let third = run_study(&o, &Device::Cpu).unwrap();
    let redone = third.rows.iter().find(|r| r.name == "norm-pix-random-r0.75").unwrap();
    let first = r.rows.iter().find(|r| r.name == "norm-pix-random-r0.75").unwrap();
    assert_eq!(redone.steps, first.steps);
    // The log keeps 6 decimals.
    assert!((redone.final_loss - first.final_loss).abs() <= 1e-5 * first.final_loss.abs(), "{redone:?}");
    // A results.csv from before the probe column (10 columns): its rows count as another probe's,
    // so every run is probed again without training again, and the old rows stay in the file.
    let text = std::fs::read_to_string(&csv).unwrap();
    let old: Vec<String> = text.lines().map(|l| l.rsplit_once(',').unwrap().0.to_string()).collect();
    std::fs::write(&csv, old.join("\n") + "\n").unwrap();
    let fourth = run_study(&o, &Device::Cpu).unwrap();
    assert_eq!(fourth.rows.len(), 6);
    assert!(fourth.rows.iter().all(|r| r.probe == o.probe.key()));
    assert_eq!(
        fourth.rows.iter().map(|r| r.steps).collect::<Vec<_>>(),
        r.rows.iter().map(|r| r.steps).collect::<Vec<_>>()
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(
        text.starts_with("name,ratio,strategy,target,steps,final_loss,linear_probe,knn,decoder_depth,seed,probe\n")
    );
    assert_eq!(text.lines().filter(|l| l.ends_with("(30-epoch probe)")).count(), 6, "{text}");
    assert_eq!(text.lines().count(), 1 + 12, "{text}");
    // Another probe probes the baselines again and keeps the first probe's lines beside its own.
    let other = StudyOptions { probe: ProbeOptions { epochs: 1, ..o.probe.clone() }, ..o };
    let fifth = run_study(&other, &Device::Cpu).unwrap();
    assert!(fifth.baselines.iter().all(|b| (b.1, b.2) != (0.5, 0.25)), "{:?}", fifth.baselines);
    assert_eq!(std::fs::read_to_string(&baselines_csv).unwrap().lines().count(), 1 + 4);
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn the_probe_against_steps_uses_an_extra_seeds_runs_when_the_first_kept_no_snapshots() {
    let out = std::env::temp_dir().join(format!("mae-study-curves-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let nano = ModelConfig::by_name("mae_vit_nano_patch4_16").unwrap();
    let o = StudyOptions {
        ratios: vec![0.0, 0.75],
        strategies: vec![MaskStrategy::Random],
        targets: vec![true],
        seconds_per_run: None,
        steps_per_run: Some(5),
        recipe: Recipe { batch: 16, base_lr: 1e-3, ..Recipe::paper() },
        probe: ProbeOptions { epochs: 1, batch: 64, ..Default::default() },
        probe_train_limit: Some(100),
        ..StudyOptions::new(DataSource::Builtin { count: 120 }, nano, out.clone())
    };
    // A study without snapshots, then its second part with a second seed and snapshots: the
    // curves are the second seed's, two points each (a snapshot every ceil(5 / 2) = 3 steps, then
    // the final model), not a lone point of the first seed's runs.
    run_study(&o, &Device::Cpu).unwrap();
    let more = StudyOptions { extra_seeds: vec![1], snapshots: 2, ..o };
    let r = run_study(&more, &Device::Cpu).unwrap();
    assert_eq!(r.rows.len(), 4);
    let table = std::fs::read_to_string(&r.table).unwrap();
    let curve_table = &table[table.find("against pre-training steps").expect("a curve table")..];
    assert!(curve_table.contains("norm-pix-random-r0.75-s1 linear"), "{curve_table}");
    assert!(curve_table.contains("norm-pix-none-r0.00-s1 linear"), "{curve_table}");
    assert!(!curve_table.contains("r0.75 linear"), "{curve_table}");
    let snaps = mae::train::list_snapshots(&out.join("runs").join("norm-pix-none-r0.00-s1"));
    assert_eq!(snaps.iter().map(|s| s.0).collect::<Vec<_>>(), [3]);
    assert_eq!(
        curve_table.lines().filter(|l| l.starts_with("| 3 ") || l.starts_with("| 5 ")).count(),
        2,
        "{curve_table}"
    );
    assert!(r.steps_plot.is_some_and(|p| p.is_file()));
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn the_baselines_cache_serves_only_the_same_images_and_probe() {
    use mae::probe::{ProbeData, baseline_scores};
    let dir = std::env::temp_dir().join(format!("mae-baselines-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = dir.join("nested").join("baselines.csv");
    let c = ModelConfig::by_name("mae_vit_nano_patch4_16").unwrap();
    let mut data = ProbeData::load(&DataSource::Builtin { count: 160 }, &c, None, None, 0).unwrap();
    let o = ProbeOptions { epochs: 1, batch: 32, ..Default::default() };
    let spec = FeatureSpec::output(Pool::Both);
    let scores = |data: &ProbeData, o: &ProbeOptions, fresh: bool| {
        baseline_scores(&c, data, spec, o, 1, &Device::Cpu, Some(&cache), fresh).unwrap()
    };
    let first = scores(&data, &o, false);
    assert!(!first.cached && cache.is_file());
    let second = scores(&data, &o, false);
    assert!(second.cached);
    assert_eq!((second.pixels, second.random), (first.pixels, first.random));
    // One pixel of one image changed: other images, probed again, their line beside the first's.
    data.train.pixels[5] ^= 0x10;
    assert!(!scores(&data, &o, false).cached);
    assert!(scores(&data, &o, false).cached);
    // Another probe setting, and a fresh probe of a known key, probe again.
    assert!(!scores(&data, &ProbeOptions { epochs: 2, ..o.clone() }, false).cached);
    assert!(!scores(&data, &o, true).cached);
    let text = std::fs::read_to_string(&cache).unwrap();
    assert_eq!(text.lines().count(), 1 + 3 * 2, "{text}");
    // Without a cache nothing is read or written.
    let none = baseline_scores(&c, &data, spec, &o, 1, &Device::Cpu, None, false).unwrap();
    assert!(!none.cached);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn features_of_several_blocks_put_each_images_blocks_side_by_side() {
    let c = ModelConfig::by_name("mae_vit_nano_patch4_16").unwrap();
    let model = mae::model::MaskedAutoencoder::new(&c, 3, &Device::Cpu).unwrap();
    let set = mae::data::synthetic::generate(5, c.img_size, c.in_chans, 7);
    let norm = set.channel_stats();
    let one = FeatureSpec::output(Pool::Both);
    let two = FeatureSpec { pool: Pool::Both, blocks: 2 };
    let (w1, w2) = (one.width(c.embed_dim), two.width(c.embed_dim));
    assert_eq!(w2, 2 * w1);
    // A batch of 2 splits the 5 images unevenly: the layout must not depend on the batching.
    let f1 = extract(&model, &set, &norm, one, 2).unwrap();
    let f2 = extract(&model, &set, &norm, two, 2).unwrap();
    assert_eq!((f1.len(), f2.len()), (5 * w1, 5 * w2));
    for i in 0..5 {
        assert_eq!(&f2[i * w2 + w1..(i + 1) * w2], &f1[i * w1..(i + 1) * w1], "image {i}: the output comes last");
    }
    assert_eq!(two.to_string(), "cls+mean, last 2 blocks");
}
