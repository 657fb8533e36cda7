//! `mae probe`: linear probe and k-NN on a frozen encoder's features, beside raw pixels and a random
//! encoder; over a run's snapshots with `--over-steps`; at each encoder block, for one or several
//! encoders on one figure, with `--per-block`.

use std::path::PathBuf;

use clap::Args;
use mae::{Error, Result};

use super::common::{DeviceArgs, FeatureArgs, Loaded, device, is_random_init, load, print_and_save};

#[derive(Args)]
pub struct ProbeArgs {
    /// A model .safetensors file, a checkpoint folder, or a training run's output folder; or
    /// `random`, a fresh model of --model (with --data). With --per-block, several encoders drawn
    /// on one figure: repeat the flag or separate them by commas, each `LABEL=PATH` to name its
    /// line (else the run's folder name; `random-init` for `random`).
    #[arg(long, required = true, value_delimiter = ',')]
    checkpoint: Vec<String>,
    /// The images (default: the data the model was trained on, as its checkpoint records it).
    #[arg(long)]
    data: Option<String>,
    /// The preset, for weights without our metadata (official ones) and for `random`.
    #[arg(long)]
    model: Option<String>,
    #[command(flatten)]
    features: FeatureArgs,
    /// Use only the first N training images for the probe.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Passes over the training features of each fit of the linear probe
    #[arg(long, default_value_t = 100)]
    epochs: usize,
    /// The linear probe's weight decays: each is fitted on 90% of the training features and
    /// scored on the rest, and the best fitted on all of them (one value: no choice)
    #[arg(long, value_delimiter = ',', default_values_t = mae::classifiers::PROBE_WEIGHT_DECAYS)]
    weight_decays: Vec<f32>,
    /// The linear probe's peak learning rate (the probe before 2026-12-03: `--epochs 30 --lr 2e-3
    /// --weight-decays 1e-4`)
    #[arg(long, default_value_t = mae::classifiers::ProbeOptions::default().lr)]
    lr: f64,
    /// Also write the table here (markdown).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Probe each snapshot of the run in --checkpoint (a run trained with snapshots) and draw the
    /// linear probe against pre-training steps, raw pixels as a flat line (RUN/probe_vs_steps.png).
    #[arg(long)]
    over_steps: bool,
    /// Probe the two baselines again rather than reading their scores from the cache, which
    /// keeps them between runs (`$MAE_CACHE_DIR`, else `$XDG_CACHE_HOME/mae`, else `~/.cache/mae`:
    /// `baselines.csv`, keyed by the images, normalisation, model, features and probe).
    #[arg(long)]
    fresh_baselines: bool,
    /// Instead of the probe, k-NN of the encoder's features and of raw pixels under five
    /// protocols (the probe's, k 10, temperature 0.02, standardised features, standardised at k 10):
    /// the variants docs/results.md compares, to tell a k-NN result from its protocol.
    #[arg(long, conflicts_with = "over_steps")]
    knn_protocols: bool,
    /// The linear probe and k-NN on each encoder block's output (block 0: the embedded patches
    /// before any block; the last: the output after the final norm), every block from one encoder
    /// pass: a table (block, linear, k-NN per encoder) and a figure of accuracy against depth
    /// (--figure; linear probe left, k-NN right, raw pixels as a flat grey line). Give several
    /// --checkpoint to compare encoders, e.g. masked, plain autoencoder, supervised (`mae
    /// finetune --out`) and `random`. --epochs, --weight-decays and --train-limit make it quicker.
    #[arg(long, conflicts_with_all = ["over_steps", "knn_protocols"])]
    per_block: bool,
    /// Where --per-block writes its figure (PNG).
    #[arg(long, default_value = "per_block.png", requires = "per_block")]
    figure: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Runs `mae probe`.
pub fn run(a: ProbeArgs) -> Result<()> {
    let spec = a.features.spec();
    let dev = device(&a.device)?;
    if a.per_block {
        return per_block(a, &dev);
    }
    let [checkpoint] = &a.checkpoint[..] else {
        return Err(Error::Config(format!(
            "{} checkpoints given: several are compared only with --per-block; give one",
            a.checkpoint.len()
        )));
    };
    let checkpoint = PathBuf::from(checkpoint);
    let l = load(&checkpoint, a.model.as_deref(), a.data.as_deref(), &dev)?;
    let data = mae::probe::ProbeData::load(&l.data, &l.model.config, l.norm, a.train_limit, 0)?;
    eprintln!(
        "probing on {} ({} training, {} test images, {} classes)",
        l.data,
        data.train.len(),
        data.test.len(),
        data.classes
    );
    if a.knn_protocols {
        return print_and_save(&mae::probe::knn_protocols_table(&l.model, &data, spec, &dev)?, a.out.as_deref());
    }
    let o = mae::classifiers::ProbeOptions {
        epochs: a.epochs,
        weight_decays: a.weight_decays,
        lr: a.lr,
        seed: a.seed,
        ..Default::default()
    };
    let cache_file = mae::probe::default_baseline_cache();
    let (cache, fresh) = (cache_file.as_deref(), a.fresh_baselines);
    if let Some(path) = cache {
        eprintln!(
            "baselines: kept in {}, read back for the same images, model, features and probe{}",
            path.display(),
            if fresh { " (not this time: --fresh-baselines)" } else { "" }
        );
    }
    if a.over_steps {
        let run = &checkpoint;
        if !run.join(mae::checkpoint::CHECKPOINTS_DIR).is_dir() {
            return Err(Error::Config(format!(
                "--over-steps needs a training run's folder (with checkpoints/ and snapshots/), not {}",
                run.display()
            )));
        }
        let curve = mae::probe::probe_over_steps(run, &data, spec, &o, &dev)?;
        let b =
            mae::probe::baseline_scores(&l.model.config, &data, spec, &o, o.seed.wrapping_add(1), &dev, cache, fresh)?;
        let plot = run.join("probe_vs_steps.png");
        let baselines =
            [("raw pixels".to_string(), b.pixels.linear), ("random-init encoder".to_string(), b.random.linear)];
        mae::io::png::save_png(&plot, &mae::probe::probe_steps_plot(std::slice::from_ref(&curve), &baselines))?;
        eprintln!("plot: {}", plot.display());
        let table = format!(
            "{}\nraw pixels: linear probe {:.2}%, k-NN {:.2}%; random-init encoder: {:.2}%, {:.2}%\n",
            mae::probe::curve_table(&[curve]),
            100.0 * b.pixels.linear,
            100.0 * b.pixels.knn,
            100.0 * b.random.linear,
            100.0 * b.random.knn
        );
        return print_and_save(&table, a.out.as_deref());
    }
    let rows = mae::probe::probe_with_baselines(&l.model, &data, spec, &o, &dev, cache, fresh)?;
    print_and_save(&mae::probe::probe_table(&rows), a.out.as_deref())
}

/// A `--checkpoint` value: `LABEL=PATH`, or a path (or `random`) named after its run.
fn label_and_path(value: &str) -> (String, PathBuf) {
    let whole = PathBuf::from(value);
    if let Some((label, path)) = value.split_once('=')
        && !whole.exists()
        && !label.is_empty()
    {
        return (label.to_string(), PathBuf::from(path));
    }
    (default_label(&whole), whole)
}

/// `random-init` for `random`; else the run's folder name, passing over `model.safetensors`,
/// `step-*` and `checkpoints` (`runs/masked/checkpoints/step-00001000/model.safetensors`: `masked`).
fn default_label(path: &std::path::Path) -> String {
    if is_random_init(path) {
        return "random-init".into();
    }
    let skip = |n: &str| n.ends_with(".safetensors") || n.starts_with("step-") || n == "checkpoints" || n == "LATEST";
    path.components()
        .rev()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .find(|n| !skip(n) && n != "." && n != "..")
        .unwrap_or_else(|| path.display().to_string())
}

/// `mae probe --per-block`: every encoder of --checkpoint probed at every block, on the same images.
fn per_block(a: ProbeArgs, dev: &engine::Device) -> Result<()> {
    use mae::eval::per_block::{DepthCurve, per_block_plot, per_block_table, pixel_scores, probe_every_block};
    if a.features.blocks != 1 {
        return Err(Error::Config(
            "--per-block probes each block on its own: leave --blocks out (it concatenates blocks)".into(),
        ));
    }
    let entries: Vec<(String, PathBuf)> = a.checkpoint.iter().map(|c| label_and_path(c)).collect();
    for (i, (label, _)) in entries.iter().enumerate() {
        if entries[..i].iter().any(|(l, _)| l == label) {
            return Err(Error::Config(format!(
                "two encoders are named `{label}`: name them apart with LABEL=PATH, e.g. --checkpoint masked={}",
                entries[i].1.display()
            )));
        }
    }
    // Trained encoders first: `random` takes their data unless --data names it.
    let mut loaded: Vec<Option<Loaded>> = entries.iter().map(|_| None).collect();
    for (slot, (_, path)) in loaded.iter_mut().zip(&entries).filter(|(_, (_, p))| !is_random_init(p)) {
        // --model is for `random` and for weights without our metadata: a file that names its own
        // configuration is read with it, so encoders of other shapes can be compared.
        let model_path = mae::checkpoint::resolve_model_path(path)?;
        let names_config =
            mae::checkpoint::read_checkpoint_metadata(&model_path)?.contains_key(mae::checkpoint::META_CONFIG);
        let preset = if names_config { None } else { a.model.as_deref() };
        *slot = Some(load(path, preset, a.data.as_deref(), dev)?);
    }
    let trained_data = loaded.iter().flatten().map(|l| l.data.to_string()).collect::<Vec<_>>();
    if a.data.is_none() && trained_data.iter().any(|d| *d != trained_data[0]) {
        return Err(Error::Config(format!(
            "the encoders were trained on different data ({}): pass --data to probe them all on the same images",
            trained_data.join(", ")
        )));
    }
    let data_arg = a.data.clone().or_else(|| trained_data.first().cloned());
    for (slot, (_, path)) in loaded.iter_mut().zip(&entries) {
        if slot.is_none() {
            *slot = Some(load(path, a.model.as_deref(), data_arg.as_deref(), dev)?);
        }
    }
    let loaded: Vec<Loaded> = loaded.into_iter().flatten().collect();
    let first = &loaded[0].model.config;
    for (l, (label, _)) in loaded.iter().zip(&entries) {
        let c = &l.model.config;
        if (c.img_size, c.in_chans) != (first.img_size, first.in_chans) {
            return Err(Error::Config(format!(
                "`{label}` takes {}x{} images of {} channels, `{}` {}x{} of {}: compare encoders of one input shape",
                c.img_size, c.img_size, c.in_chans, entries[0].0, first.img_size, first.img_size, first.in_chans
            )));
        }
    }
    let source = &loaded[0].data;
    let mut data = mae::probe::ProbeData::load(source, first, loaded[0].norm.clone(), a.train_limit, 0)?;
    eprintln!(
        "probing every block of {} encoder(s) on {source} ({} training, {} test images, {} classes)",
        loaded.len(),
        data.train.len(),
        data.test.len(),
        data.classes
    );
    let o = mae::classifiers::ProbeOptions {
        epochs: a.epochs,
        weight_decays: a.weight_decays.clone(),
        lr: a.lr,
        seed: a.seed,
        ..Default::default()
    };
    let source_norm = source.normalization(&data.train);
    eprintln!("raw pixels:");
    let pixels = pixel_scores(&data, first.img_size, &o, dev)?;
    eprintln!("  linear probe {:.2}%, k-NN {:.2}%", 100.0 * pixels.linear, 100.0 * pixels.knn);
    let mut curves = Vec::new();
    for (l, (label, _)) in loaded.iter().zip(&entries) {
        eprintln!("{label}:");
        // Each encoder sees its inputs normalised as it was trained.
        data.norm = l.norm.clone().unwrap_or_else(|| source_norm.clone());
        let blocks = probe_every_block(&l.model, &data, a.features.pool, &o, dev)?;
        curves.push(DepthCurve { name: label.clone(), blocks });
    }
    mae::io::png::save_png(&a.figure, &per_block_plot(&curves, Some(pixels)))?;
    eprintln!("figure: {}", a.figure.display());
    print_and_save(&per_block_table(&curves, Some(pixels)), a.out.as_deref())
}
