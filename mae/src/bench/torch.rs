//! PyTorch as the yardstick of `mae bench --compare-torch PYTHON`: the same model (the official
//! architecture, from `bench_torch.py` beside this file), batch, mask ratio and device, timed by
//! PyTorch in a child process right after our own run, so that both are measured in one session.
//! PyTorch is never a dependency: without the flag nothing here runs.

use std::path::Path;
use std::process::Command;

use crate::error::{Error, Result};
use crate::model::config::ModelConfig;

/// The script, written to a temporary file for each run.
const SCRIPT: &str = include_str!("bench_torch.py");

/// What PyTorch measured.
#[derive(Clone, Debug)]
pub struct TorchSpeed {
    /// Training throughput, from the median step.
    pub images_per_sec: f64,
    /// The median step, in milliseconds.
    pub step_ms: f64,
    /// The child process's peak resident memory.
    pub max_rss_mib: f64,
    /// PyTorch's version and thread count, as it reports them.
    pub version: String,
    /// Intra-op threads PyTorch used.
    pub threads: usize,
}

/// Runs `bench_torch.py` under `python` for `model` at `batch` and `ratio`: `warmup` untimed
/// steps, then the median of `steps` timed ones, on `device` (`cpu` or `cuda`) with `threads`
/// intra-op threads (CPU), in fp32 or, with `bf16_autocast`, under bf16 autocast.
#[allow(clippy::too_many_arguments)]
pub fn torch_speed(
    python: &Path,
    model: &ModelConfig,
    batch: usize,
    ratio: f32,
    steps: u64,
    device: &str,
    threads: usize,
    bf16_autocast: bool,
) -> Result<TorchSpeed> {
    let dir = std::env::temp_dir().join(format!("mae-bench-torch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let script = dir.join("bench_torch.py");
    std::fs::write(&script, SCRIPT).map_err(|e| Error::io(&script, e))?;
    let m = model;
    let config = format!(
        "{},{},{},{},{},{},{},{},{},{}",
        m.img_size,
        m.patch_size,
        m.in_chans,
        m.embed_dim,
        m.depth,
        m.num_heads,
        m.decoder_embed_dim,
        m.decoder_depth,
        m.decoder_num_heads,
        m.mlp_ratio
    );
    let output = Command::new(python)
        .arg(&script)
        .args(["--config", &config, "--norm-pix", if m.norm_pix_loss { "1" } else { "0" }])
        .args(["--batch", &batch.to_string(), "--ratio", &ratio.to_string(), "--steps", &steps.to_string()])
        .args(["--device", device, "--threads", &threads.to_string()])
        .args(["--autocast", if bf16_autocast { "bf16" } else { "none" }])
        .output()
        .map_err(|e| Error::Config(format!("--compare-torch: could not run {}: {e}", python.display())))?;
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
        return Err(Error::Config(format!(
            "--compare-torch: {} failed ({}): {last} (is PyTorch installed for that interpreter?)",
            python.display(),
            output.status
        )));
    }
    parse(&stdout).ok_or_else(|| Error::Config(format!("--compare-torch: unexpected output from the script: {stdout}")))
}

/// Reads `images/s X step_ms Y max_rss_mib Z torch V threads N`.
fn parse(out: &str) -> Option<TorchSpeed> {
    let line = out.lines().rev().find(|l| l.starts_with("images/s "))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let value = |key: &str| words.iter().position(|w| *w == key).and_then(|i| words.get(i + 1)).copied();
    Some(TorchSpeed {
        images_per_sec: value("images/s")?.parse().ok()?,
        step_ms: value("step_ms")?.parse().ok()?,
        max_rss_mib: value("max_rss_mib")?.parse().ok()?,
        version: value("torch")?.to_string(),
        threads: value("threads")?.parse().ok()?,
    })
}

/// This process's peak resident memory since the last [`reset_peak_rss`], in MiB (Linux: `VmHWM`
/// of `/proc/self/status`; `None` elsewhere).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Starts a new peak-memory window (Linux: writing 5 to `/proc/self/clear_refs` resets `VmHWM` to
/// the current resident size); a no-op where that is not possible.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_report_line_is_read() {
        let s = parse("warming up\nimages/s 812.5 step_ms 315.1 max_rss_mib 1234 torch 2.5.0+cpu threads 2\n").unwrap();
        assert_eq!((s.images_per_sec, s.step_ms, s.max_rss_mib, s.threads), (812.5, 315.1, 1234.0, 2));
        assert_eq!(s.version, "2.5.0+cpu");
        assert!(parse("Traceback ...").is_none());
    }

    #[test]
    fn peak_memory_is_read_where_the_system_reports_it() {
        reset_peak_rss();
        if cfg!(target_os = "linux") {
            assert!(peak_rss_mib().unwrap() > 0.0);
        }
    }
}
