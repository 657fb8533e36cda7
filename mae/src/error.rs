//! Errors of the MAE crate: each says what went wrong, where (file, tensor, step), and what to do.

use std::fmt;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in this crate.
#[derive(Debug)]
pub enum Error {
    /// A file could not be read or written.
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A data file or folder is missing, empty or malformed.
    Data(String),
    /// A checkpoint is unreadable, truncated, or does not fit the model.
    Checkpoint {
        /// The checkpoint file or folder.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// An impossible configuration, rejected before any work.
    Config(String),
    /// The loss became NaN or infinite.
    NonFinite {
        /// The optimizer step whose loss it was (1-based).
        step: u64,
        /// The loss value.
        loss: f32,
    },
    /// The run was interrupted (Ctrl-C) after saving a checkpoint.
    Interrupted,
    /// An error of the tensor engine.
    Engine(engine::Error),
}

impl Error {
    /// An `Io` error for `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }

    /// A `Checkpoint` error for `path`.
    pub fn checkpoint(path: &Path, message: impl Into<String>) -> Self {
        Error::Checkpoint { path: path.to_path_buf(), message: message.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Data(m) => write!(f, "data: {m}"),
            Error::Checkpoint { path, message } => write!(f, "checkpoint {}: {message}", path.display()),
            Error::Config(m) => write!(f, "configuration: {m}"),
            Error::NonFinite { step, loss } => write!(
                f,
                "the loss became {loss} at step {step}; training stopped and the last good checkpoint was kept \
                 (lower the learning rate, or check the data)"
            ),
            Error::Interrupted => write!(f, "interrupted; a checkpoint was saved, continue with --resume"),
            Error::Engine(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Engine(e) => Some(e),
            _ => None,
        }
    }
}

impl From<engine::Error> for Error {
    fn from(e: engine::Error) -> Self {
        Error::Engine(e)
    }
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
