//! The training table of `mae bench`: whole steps (forward, backward, AdamW) at mask ratios 0.75
//! and 0: images per second, peak resident memory, and the speed-up from an encoder that sees only
//! the visible patches; with `--compare-torch PYTHON`, PyTorch's figures beside ours ([`super::torch`]).

use std::fmt::Write as _;

use engine::Device;

use crate::data::Split;
use crate::data::source::DataSource;
use crate::error::Result;
use crate::model::config::ModelConfig;
use crate::model::masking::MaskStrategy;
use crate::train::{Budget, TrainOptions, Trainer};

/// A rate with three significant digits at least (the base preset trains a few images a second).
fn images_per_sec(v: f64) -> String {
    if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.3}").chars().take(5).collect() }
}

/// Images per second of training steps of `model` on `data` at mask ratios 0.75 and 0, with the
/// peak resident memory of each run (the whole process's, the loaded data set included); with `torch` (a Python interpreter that has PyTorch), PyTorch's
/// figures for the same model, batch and ratio beside ours, each measured right after ours.
pub fn training_table(
    model: &ModelConfig,
    data: &DataSource,
    batch: usize,
    steps: u64,
    dev: &Device,
    precision: engine::cpu::matmul::Precision,
    torch: Option<&std::path::Path>,
) -> Result<String> {
    let mut s = String::new();
    let _ = write!(s, "| model | data | device | batch | mask ratio | images/s | step time | max RSS |");
    if torch.is_some() {
        let _ = write!(s, " PyTorch images/s | ours / PyTorch | PyTorch max RSS |");
    }
    let _ =
        writeln!(s, "\n|---|---|---|---:|---:|---:|---:|---:|{}", if torch.is_some() { "---:|---:|---:|" } else { "" });
    // Load once so that data loading is not timed.
    data.load(Split::Train, model, 0)?;
    let mut speeds = Vec::new();
    let mut torch_note = None;
    let mut gpu_work = Vec::new();
    let mib = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} MiB"));
    for ratio in [0.75f32, 0.0] {
        let out = std::env::temp_dir().join(format!("mae-bench-{}-{ratio}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let mut o = TrainOptions::new(model.clone(), data.clone(), out.clone());
        o.budget = Budget { steps: Some(steps + 2), ..Default::default() };
        o.batch_size = batch;
        o.mask_ratio = ratio;
        o.mask_strategy = MaskStrategy::Random;
        o.verbose = false;
        o.pictures = false;
        o.checkpoint_every_secs = f64::INFINITY;
        o.matmul_precision = precision;
        super::torch::reset_peak_rss();
        // The median of the per-step rates, without the first two steps (allocation, pipeline
        // compilation); on a GPU, what the last step asked of it.
        let mut trainer = Trainer::new(&o, dev)?;
        let mut rates = Vec::new();
        while !trainer.is_done() {
            rates.push(trainer.step()?.images_per_sec);
        }
        if let Some(c) = trainer.last_step_gpu_counters() {
            gpu_work.push(format!("GPU work of one steady-state step at ratio {ratio:.2}: {c}."));
        }
        drop(trainer);
        let rss = super::torch::peak_rss_mib();
        let _ = std::fs::remove_dir_all(&out);
        let mut rates = rates.split_off(2.min(rates.len()));
        rates.sort_by(f64::total_cmp);
        let ips = rates.get(rates.len() / 2).copied().unwrap_or(f64::NAN);
        let per_step = batch as f64 / ips;
        speeds.push(ips);
        let _ = write!(
            s,
            "| {} | {} | {}, products {} | {batch} | {ratio:.2} | {} | {:.1} ms | {} |",
            model.name,
            data,
            dev.name(),
            dev.describe_products(precision),
            images_per_sec(ips),
            per_step * 1e3,
            mib(rss)
        );
        if let Some(python) = torch {
            let device = if dev.is_gpu() { "cuda" } else { "cpu" };
            let threads = engine::cpu::matmul::threads();
            // Like for like: bf16 autocast beside our 16-bit products (bf16 on the CPU, f16 on
            // tensor cores: the comparison), fp32 beside f32.
            let bf16 = dev.describe_products(precision).starts_with("bf16")
                || (dev.is_gpu() && dev.describe_products(precision).starts_with("f16"));
            let t = super::torch::torch_speed(python, model, batch, ratio, steps, device, threads, bf16)?;
            let (theirs, rss) = (images_per_sec(t.images_per_sec), mib(Some(t.max_rss_mib)));
            let _ = write!(s, " {theirs} | {:.2}x | {rss} |", ips / t.images_per_sec);
            torch_note = Some(format!(
                "PyTorch {} on {device} ({} threads), {}, the official architecture on synthetic images, \
                 median of {steps} steps after 2; measured right after ours at each ratio.",
                t.version,
                t.threads,
                if bf16 { "bf16 autocast" } else { "fp32" }
            ));
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "\nEncoder on visible patches only (ratio 0.75) vs every patch (ratio 0): {:.2}x the images per second.",
        speeds[0] / speeds[1]
    );
    if let Some(note) = torch_note {
        let _ = writeln!(s, "{note}");
    }
    for line in gpu_work {
        let _ = writeln!(s, "{line}");
    }
    Ok(s)
}
