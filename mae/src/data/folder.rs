//! Image folders, PNG and JPEG, in one of two layouts:
//!
//! - **class folders**: `dir/<class>/<image>`; the labels are the sorted sub-folder names (an
//!   empty class folder still counts as a class, so label numbers follow the folder names);
//! - **flat**: `dir/<image>`, no sub-folders: an unlabelled set.
//!
//! Policy. Every regular file is tried, and its format is found from its first bytes, not its
//! name. What cannot be used is skipped and listed in the `LoadReport` with the reason: files
//! that are not PNG or JPEG (`notes.txt`), files that fail to decode (a truncated `.png`), files
//! beside class folders, and folders nested inside a class folder (one level is read). A missing
//! folder, an empty one, or one where nothing loads is an error. Order is deterministic: sorted
//! class names, then sorted file names.
//!
//! Conversion. Every image becomes `channels` x `size` x `size` bytes: the shorter side is scaled
//! to `size` and the centre kept (as torchvision's `Resize(size)` then `CenterCrop(size)`), with a
//! triangle (bilinear) filter that averages when shrinking; grey becomes RGB by repetition, RGB
//! becomes grey by Rec. 709 luma, alpha is dropped (not composited), and 16-bit samples are
//! scaled to 8 bits (rounded).

use std::path::{Path, PathBuf};

use image::DynamicImage;
use image::imageops::FilterType;

use crate::data::image_set::ImageSet;
use crate::error::{Error, Result};

/// What a folder load used and what it left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Images loaded.
    pub loaded: usize,
    /// Paths left out, each with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Loads the images under `dir` (see the module documentation for layouts and policy) as
/// `channels` (1 or 3) x `size` x `size` bytes each.
pub fn load_folder(dir: &Path, channels: usize, size: usize) -> Result<(ImageSet, LoadReport)> {
    if channels != 1 && channels != 3 {
        return Err(Error::Config(format!("images can be loaded with 1 or 3 channels, not {channels}")));
    }
    if size == 0 {
        return Err(Error::Config("the image size must be at least 1 pixel".into()));
    }
    if !dir.is_dir() {
        return Err(Error::Data(format!(
            "image folder {} not found (or not a folder); give a folder of PNG/JPEG images, or one \
             sub-folder of them per class",
            dir.display()
        )));
    }
    let entries = sorted_entries(dir)?;
    if entries.is_empty() {
        return Err(Error::Data(format!(
            "image folder {} is empty; put PNG/JPEG images in it, or one sub-folder of them per class",
            dir.display()
        )));
    }
    let class_dirs: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
    let mut report = LoadReport::default();
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut classes = Vec::new();
    let mut load = |path: &Path, label: Option<u32>, pixels: &mut Vec<u8>, report: &mut LoadReport| match load_image(
        path, channels, size,
    ) {
        Ok(bytes) => {
            pixels.extend_from_slice(&bytes);
            labels.extend(label);
            report.loaded += 1;
        }
        Err(reason) => report.skipped.push((path.to_path_buf(), reason)),
    };
    if class_dirs.is_empty() {
        for p in &entries {
            load(p, None, &mut pixels, &mut report);
        }
    } else {
        for p in entries.iter().filter(|p| !p.is_dir()) {
            report
                .skipped
                .push((p.clone(), "a file beside the class folders (only files inside them are read)".into()));
        }
        for (label, class_dir) in class_dirs.iter().enumerate() {
            classes.push(class_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            for p in sorted_entries(class_dir)? {
                if p.is_dir() {
                    report.skipped.push((p, "a folder inside a class folder (only one level is read)".into()));
                } else {
                    load(&p, Some(label as u32), &mut pixels, &mut report);
                }
            }
        }
    }
    if report.loaded == 0 {
        let first =
            report.skipped.first().map(|(p, why)| format!(" (for example {}: {why})", p.display())).unwrap_or_default();
        return Err(Error::Data(format!(
            "no loadable images in {}: {} entries skipped{first}; PNG and JPEG files are read",
            dir.display(),
            report.skipped.len()
        )));
    }
    let set = ImageSet {
        name: dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| dir.display().to_string()),
        channels,
        height: size,
        width: size,
        pixels,
        labels: if classes.is_empty() { None } else { Some(labels) },
        classes,
    };
    Ok((set, report))
}

/// The entries of `dir`, sorted by path.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths = std::fs::read_dir(dir)
        .and_then(|it| it.map(|e| e.map(|e| e.path())).collect::<std::io::Result<Vec<_>>>())
        .map_err(|e| Error::io(dir, e))?;
    paths.sort();
    Ok(paths)
}

/// One image file as `channels` x `size` x `size` planar bytes, or why it cannot be used.
fn load_image(path: &Path, channels: usize, size: usize) -> std::result::Result<Vec<u8>, String> {
    let reader = image::ImageReader::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let reader = reader.with_guessed_format().map_err(|e| format!("cannot read: {e}"))?;
    match reader.format() {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => {}
        Some(f) => return Err(format!("{f:?} images are not read (PNG and JPEG are)")),
        None => return Err("not a PNG or JPEG image".into()),
    }
    let img = reader.decode().map_err(|e| format!("cannot decode: {e}"))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(format!("empty image ({}x{})", img.width(), img.height()));
    }
    let img = square(img, size as u32);
    let s = size * size;
    let mut out = vec![0u8; channels * s];
    if channels == 1 {
        out.copy_from_slice(img.to_luma8().as_raw());
    } else {
        // Interleaved RGB to planar.
        for (i, px) in img.to_rgb8().as_raw().chunks_exact(3).enumerate() {
            out[i] = px[0];
            out[s + i] = px[1];
            out[2 * s + i] = px[2];
        }
    }
    Ok(out)
}

/// The centred square of side min(width, height), resized to `size` x `size`: the same picture as
/// scaling the shorter side to `size` then centre-cropping, with one resampling.
fn square(img: DynamicImage, size: u32) -> DynamicImage {
    let (w, h) = (img.width(), img.height());
    let side = w.min(h);
    let img = if w == h { img } else { img.crop_imm((w - side) / 2, (h - side) / 2, side, side) };
    if side == size { img } else { img.resize_exact(size, size, FilterType::Triangle) }
}
