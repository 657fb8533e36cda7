//! Errors of the MAE crate: each says what went wrong, where (file, tensor, step), and what to do.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum Error {
    /// A file could not be read or written.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A data file or folder is missing, empty or malformed.
    Data(String),
    /// A checkpoint is unreadable, truncated, or does not fit the model.
    Checkpoint {
        path: PathBuf,
        message: String,
    },
    /// An impossible configuration, rejected before any work.
    Config(String),
    /// The loss became NaN or infinite.
    NonFinite {
        step: u64,
        loss: f32,
    },
    /// The run was interrupted (Ctrl-C) after saving a checkpoint.
    Interrupted,
    Engine(engine::Error),
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }

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

pub type Result<T> = std::result::Result<T, Error>;
