//! `mae probe`: linear probe and k-NN on a frozen encoder's features, beside raw pixels and a random
//! encoder; over a run's snapshots with `--over-steps`.

use std::path::PathBuf;

use clap::Args;
use mae::{Error, Result};

use super::common::{CheckpointArgs, DeviceArgs, FeatureArgs, device, print_and_save};

#[derive(Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    source: CheckpointArgs,
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
    #[command(flatten)]
    device: DeviceArgs,
}

/// Runs `mae probe`.
pub fn run(a: ProbeArgs) -> Result<()> {
    let spec = a.features.spec();
    let dev = device(&a.device)?;
    let l = a.source.load(&dev)?;
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
        let run = &a.source.checkpoint;
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
