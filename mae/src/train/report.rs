//! Pictures of a run: the loss curve.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::io::plot::{Series, line_plot};
use crate::io::png::save_png;
use crate::train::log::read_log;

/// Draw the loss of every step in the CSV log at `log` (raw, and a running mean over ~1% of the
/// run) to `path`.
pub fn loss_plot(log: &Path, path: &Path, title: &str) -> Result<PathBuf> {
    let rows = read_log(log)?;
    let raw: Vec<(f64, f64)> = rows.iter().map(|&(s, l)| (s as f64, l as f64)).collect();
    let window = (rows.len() / 100).max(1);
    let smooth: Vec<(f64, f64)> = (0..rows.len())
        .map(|i| {
            let lo = i.saturating_sub(window - 1);
            let mean = rows[lo..=i].iter().map(|&(_, l)| l as f64).sum::<f64>() / (i + 1 - lo) as f64;
            (rows[i].0 as f64, mean)
        })
        .collect();
    let series = [
        Series { name: "loss".into(), points: raw, color: [170, 190, 230] },
        Series { name: format!("mean of {window}"), points: smooth, color: [20, 60, 160] },
    ];
    let img = line_plot(&series, &format!("{title}: training loss"), "step", "loss", 800, 480, false);
    save_png(path, &img)?;
    Ok(path.to_path_buf())
}
