//! Data sets: where images come from and how they become network inputs.
//!
//! A [`DataSource`] ([`source`]) is a data set as the command line names it (`builtin`,
//! `fashion-mnist`, `idx:...`, `folder:...`) or as a program hands it over (images in memory).
//!
//! Sources, all giving an [`ImageSet`] of same-sized 8-bit images in `[n, C, H, W]` order:
//! - [`synthetic::generate`]: the built-in labelled shapes and textures, needing no files;
//! - [`idx::load_fashion_mnist`] / [`idx::load_idx`]: (Fashion-)MNIST's IDX files, gzipped or not;
//! - [`folder::load_folder`]: a folder of PNG/JPEG images, flat or one sub-folder per class.
//!
//! Policies.
//! - Bad input is an error that names the file and says what to change, never a panic; sizes
//!   declared in a file are checked against its real length before anything is allocated.
//! - Image folders skip (and report in a [`LoadReport`]) what they cannot use: non-image files,
//!   corrupt images, files beside class folders, nested folders. Only a folder that is missing,
//!   empty, or yields no image at all is an error.
//! - Folder images are converted on load to the requested channels (grey repeated to RGB, RGB to
//!   Rec. 709 luma, alpha dropped, 16-bit scaled to 8) and size (shorter side scaled, centre crop).
//! - Inputs are `(pixel / 255 - mean) / std` per channel. The [`Normalization`] a model was
//!   trained with is part of the model: checkpoints store its text form (`mean=0.286;std=0.353`)
//!   and evaluation reads it back rather than recomputing it on other data.
//! - Batches come in a seeded random order per epoch ([`Batcher`]), resumable exactly from a
//!   [`BatcherState`]; pre-training augmentation is the MAE paper's ([`Augment::mae`]).

pub mod augment;
pub mod folder;
pub mod idx;
pub mod image_set;
pub mod loader;
pub mod source;
pub mod synthetic;

pub use augment::{Augment, augment_into};
pub use folder::{LoadReport, load_folder};
pub use idx::{IdxArray, load_fashion_mnist, load_idx, parse_idx_bytes};
pub use image_set::{ImageSet, Normalization};
pub use loader::{Batcher, BatcherState, make_batch};
pub use source::DataSource;
pub use synthetic::{SYNTHETIC_CLASSES, generate};

/// Which half of a data set: every source has both (the built-in generator draws the test images
/// from another seed; a folder without `train/` and `test/` serves itself for both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The training images.
    Train,
    /// The held-out images, for evaluation.
    Test,
}

impl Split {
    /// The file-name prefix that (Fashion-)MNIST uses for this split.
    pub fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}
