//! Where training images come from, named on the command line:
//! - `builtin` or `builtin:N`: the built-in generator (no files; N images, 20000 by default);
//! - `fashion-mnist` or `fashion-mnist:DIR`: IDX files, gzip or not (Debian's
//!   `dataset-fashion-mnist` installs them under `/usr/share/datasets/fashion-mnist`);
//! - `idx:IMAGES[,LABELS]`: any IDX image file, with labels optionally;
//! - `folder:DIR`, or a plain folder path: PNG/JPEG images, one sub-folder per class when labelled.
//!
//! Images are converted to the model's size (resized, centre-cropped) and must have its channel
//! count. Each data set is normalised per channel: Fashion-MNIST by its published statistics, the
//! others by statistics measured on the loaded training images; the values are stored in every
//! checkpoint so that pictures and features use the same ones.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use crate::data::Split;
use crate::data::idx::{FASHION_MNIST_DIR, load_fashion_mnist, load_idx};
use crate::data::image_set::{ImageSet, Normalization};
use crate::data::synthetic::generate;
use crate::error::{Error, Result};
use crate::model::config::ModelConfig;

/// A source of training and test images, parsed from the command line (see the module's comment).
#[derive(Clone, Debug, PartialEq)]
pub enum DataSource {
    /// The built-in generator: `builtin:N`.
    Builtin {
        /// Training images to generate (the test split has a sixth as many, at least 100).
        count: usize,
    },
    /// (Fashion-)MNIST's four IDX files in a folder: `fashion-mnist:DIR`.
    FashionMnist {
        /// The folder holding `train-images-idx3-ubyte` and the rest, gzipped or not.
        dir: PathBuf,
    },
    /// An IDX image file and optionally its labels: `idx:IMAGES[,LABELS]`, the same for both splits.
    Idx {
        /// The images, `[n, rows, cols]`.
        images: PathBuf,
        /// The labels, `[n]`.
        labels: Option<PathBuf>,
    },
    /// A folder of PNG/JPEG images: `folder:DIR` or a folder's path.
    Folder {
        /// The folder; a `train/` or `test/` sub-folder in it serves that split, else the folder itself.
        dir: PathBuf,
    },
    /// Images a program holds in memory (the library use; never parsed from a string): `train`
    /// for training, `test` (or `train` when absent) for evaluation.
    Memory {
        /// The training images.
        train: Arc<ImageSet>,
        /// The test images, when separate.
        test: Option<Arc<ImageSet>>,
    },
}

/// The image count of a plain `builtin`.
pub const BUILTIN_DEFAULT_COUNT: usize = 20_000;
/// The built-in test split draws from another seed so that it never repeats a training image.
const BUILTIN_TEST_SEED_OFFSET: u64 = 0x07E5_75E7;

impl FromStr for DataSource {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        match (kind, arg) {
            ("builtin", None) => Ok(DataSource::Builtin { count: BUILTIN_DEFAULT_COUNT }),
            ("builtin", Some(n)) => match n.parse::<usize>() {
                Ok(count) if count > 0 => Ok(DataSource::Builtin { count }),
                _ => Err(Error::Config(format!("builtin:{n}: give a positive image count, e.g. builtin:20000"))),
            },
            ("fashion-mnist", None) => Ok(DataSource::FashionMnist { dir: FASHION_MNIST_DIR.into() }),
            ("fashion-mnist", Some(d)) => Ok(DataSource::FashionMnist { dir: d.into() }),
            ("idx", Some(files)) => {
                let mut parts = files.split(',');
                let images = parts.next().filter(|p| !p.is_empty()).ok_or_else(|| {
                    Error::Config("idx: give the image file, e.g. idx:train-images.gz,train-labels.gz".into())
                })?;
                Ok(DataSource::Idx { images: images.into(), labels: parts.next().map(PathBuf::from) })
            }
            ("folder", Some(d)) => Ok(DataSource::Folder { dir: d.into() }),
            _ if Path::new(s).is_dir() => Ok(DataSource::Folder { dir: s.into() }),
            _ => Err(Error::Config(format!(
                "unknown data source '{s}': use builtin[:N], fashion-mnist[:DIR], idx:IMAGES[,LABELS] or folder:DIR"
            ))),
        }
    }
}

impl std::fmt::Display for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSource::Builtin { count } => write!(f, "builtin:{count}"),
            DataSource::FashionMnist { dir } => write!(f, "fashion-mnist:{}", dir.display()),
            DataSource::Idx { images, labels: Some(l) } => write!(f, "idx:{},{}", images.display(), l.display()),
            DataSource::Idx { images, labels: None } => write!(f, "idx:{}", images.display()),
            DataSource::Folder { dir } => write!(f, "folder:{}", dir.display()),
            DataSource::Memory { train, .. } => write!(f, "memory:{}", train.name),
        }
    }
}

/// Images ready for training or evaluation.
pub struct Loaded {
    /// The images.
    pub set: ImageSet,
    /// Their normalisation.
    pub norm: Normalization,
}

impl DataSource {
    /// The training or test images. `norm` comes from the training split (or a checkpoint).
    pub fn load(&self, split: Split, model: &ModelConfig, seed: u64) -> Result<ImageSet> {
        let set = match self {
            DataSource::Builtin { count } => {
                let (n, s) = match split {
                    Split::Train => (*count, seed),
                    Split::Test => ((*count / 6).max(100), seed.wrapping_add(BUILTIN_TEST_SEED_OFFSET)),
                };
                generate(n, model.img_size, model.in_chans, s)
            }
            DataSource::FashionMnist { dir } => load_fashion_mnist(dir, split)?,
            DataSource::Idx { images, labels } => load_idx(images, labels.as_deref())?,
            DataSource::Folder { dir } => {
                let sub = match split {
                    Split::Train => dir.join("train"),
                    Split::Test => dir.join("test"),
                };
                // `train/` and `test/` sub-folders when present, else the folder itself.
                let dir = if sub.is_dir() { sub } else { dir.clone() };
                let (set, report) = crate::data::folder::load_folder(&dir, model.in_chans, model.img_size)?;
                // Said once per folder: a run loads its folder again for the test split and the
                // pictures when there is no `test/` sub-folder.
                static WARNED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
                let first_time = || {
                    let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
                    let new = !warned.contains(&dir);
                    if new {
                        warned.push(dir.clone());
                    }
                    new
                };
                if !report.skipped.is_empty() && first_time() {
                    eprintln!(
                        "warning: skipped {} file(s) in {} that are not readable images (first: {})",
                        report.skipped.len(),
                        dir.display(),
                        report.skipped[0].0.display()
                    );
                }
                set
            }
            DataSource::Memory { train, test } => match (split, test) {
                (Split::Test, Some(test)) => test.as_ref().clone(),
                _ => train.as_ref().clone(),
            },
        };
        if set.is_empty() {
            return Err(Error::Data(format!("{self} holds no images")));
        }
        if set.channels != model.in_chans {
            let hint = ModelConfig::presets().into_iter().find(|c| c.in_chans == set.channels).map(|c| c.name);
            return Err(Error::Config(format!(
                "{self} has {} channel(s) but the model {} takes {}{}",
                set.channels,
                model.name,
                model.in_chans,
                hint.map(|h| format!("; use a model for {} channel(s), e.g. --model {h}", set.channels))
                    .unwrap_or_default()
            )));
        }
        Ok(set)
    }

    /// The per-channel normalisation of this source's training images.
    pub fn normalization(&self, train: &ImageSet) -> Normalization {
        match self {
            DataSource::FashionMnist { .. } => Normalization::fashion_mnist(),
            _ => train.channel_stats(),
        }
    }
}
