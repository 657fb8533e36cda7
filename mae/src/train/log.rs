//! A run's log: `log.csv` in its folder, one row per optimizer step
//! (`step,epoch,loss,lr,images_per_sec,elapsed_secs`), written by the trainer and read back for the
//! loss curve ([`super::report`]) and by programs that look at a run.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// The CSV log, continued on resume: rows beyond the resumed step (written after the checkpoint
/// that is resumed) are dropped so the log matches the run exactly.
pub(crate) fn open_log(path: &Path, resume_step: u64) -> Result<std::io::BufWriter<std::fs::File>> {
    const HEADER: &str = "step,epoch,loss,lr,images_per_sec,elapsed_secs";
    let mut kept = vec![HEADER.to_string()];
    if resume_step > 0
        && let Ok(text) = std::fs::read_to_string(path)
    {
        kept.extend(
            text.lines()
                .skip(1)
                .filter(|l| l.split(',').next().and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s <= resume_step))
                .map(String::from),
        );
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| Error::io(path, e))?);
    for line in kept {
        writeln!(f, "{line}").map_err(|e| Error::io(path, e))?;
    }
    Ok(f)
}

/// `(step, loss)` rows of a run's CSV log.
pub fn read_log(path: &Path) -> Result<Vec<(u64, f32)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut it = l.split(',');
            let step = it.next()?.parse().ok()?;
            let _epoch = it.next()?;
            Some((step, it.next()?.parse().ok()?))
        })
        .collect())
}
