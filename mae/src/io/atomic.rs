//! Atomic file replacement: write a temporary file beside the target, flush it to disk, rename it
//! over the target, then flush the directory. A crash or kill at any moment leaves either the old
//! file or the new one under the target's name, never a torn mixture.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `path` atomically: `write` fills a fresh temporary file in the same directory
/// (`.{name}.tmp-{pid}-{counter}`), which is then `sync_all`ed and renamed over `path`; on unix the
/// directory is fsynced afterwards so the rename itself is durable.
///
/// If `write`, the sync or the rename fails, the temporary file is removed and `path` is left as
/// it was (absent, or holding its old contents). Errors name `path`.
pub fn write_atomically<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut File) -> io::Result<()>,
{
    let name = path
        .file_name()
        .ok_or_else(|| Error::io(path, io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{}.tmp-{}-{counter}", name.to_string_lossy(), std::process::id()));

    let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(|e| {
        Error::io(path, io::Error::new(e.kind(), format!("cannot create the temporary file {}: {e}", tmp.display())))
    })?;

    let written = write(&mut file).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        // Best effort: the temporary file may already be gone.
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    sync_dir(&dir).map_err(|e| {
        Error::io(
            path,
            io::Error::new(
                e.kind(),
                format!("the file was replaced but its directory {} could not be synced: {e}", dir.display()),
            ),
        )
    })
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir).and_then(|d| d.sync_all()) {
        // Some file systems cannot fsync a directory; the rename is then as durable as they allow.
        Err(e) if matches!(e.kind(), io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported) => Ok(()),
        r => r,
    }
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}
