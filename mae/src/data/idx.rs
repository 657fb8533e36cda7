//! The IDX format of (Fashion-)MNIST: a 4-byte magic `00 00 <type> <ndims>`, `ndims` big-endian u32
//! dimensions, then the elements in row-major order. Only unsigned bytes (type 0x08) are read:
//! labels are `00 00 08 01` with one dimension `[n]`, images `00 00 08 03` with `[n, rows, cols]`.
//!
//! Files may be gzip-compressed or not; that is decided by the gzip magic `1f 8b`, never by the
//! name. Every size read from a header is checked against the bytes actually present before
//! anything of that size is allocated; for gzip the bound is deflate's best ratio (1032:1), and
//! decompression stops one byte past the declared size.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::data::Split;
use crate::data::image_set::ImageSet;
use crate::error::{Error, Result};

/// Where Debian's `dataset-fashion-mnist` package puts the files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's classes, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Deflate cannot expand input by more than about 1032 times (258-byte matches in ~2-bit codes).
const DEFLATE_MAX_RATIO: usize = 1032;
const TYPE_U8: u8 = 0x08;

/// A parsed IDX file of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions: `[n]` for labels, `[n, rows, cols]` for images.
    pub dims: Vec<usize>,
    /// `dims.iter().product()` bytes, row-major.
    pub data: Vec<u8>,
}

impl IdxArray {
    /// The magic number this array has in a file: `0x0000_08<ndims>`.
    pub fn magic(&self) -> u32 {
        0x0000_0800 | self.dims.len() as u32
    }
}

/// Parses an IDX file's bytes, gzip-compressed or not. Pure: no I/O, never panics, and never
/// allocates more than the input could hold (its length, or about 1032 times that for gzip).
pub fn parse_idx_bytes(bytes: &[u8]) -> Result<IdxArray> {
    if bytes.starts_with(&GZIP_MAGIC) {
        parse_owned(gunzip_idx(bytes, "IDX data")?, "IDX data")
    } else {
        let (dims, header) = check_raw(bytes, "IDX data")?;
        Ok(IdxArray { dims, data: bytes[header..].to_vec() })
    }
}

/// Parses uncompressed IDX bytes, reusing their buffer for the data.
fn parse_owned(mut bytes: Vec<u8>, name: &str) -> Result<IdxArray> {
    let (dims, header) = check_raw(&bytes, name)?;
    bytes.drain(..header);
    Ok(IdxArray { dims, data: bytes })
}

/// Decodes the 4-byte magic and the dimensions, returning them with the header length. Fails on
/// an unsupported magic or a header cut short.
fn parse_header(bytes: &[u8], name: &str) -> Result<(Vec<usize>, usize)> {
    if bytes.len() < 4 {
        return Err(Error::Data(format!(
            "{name}: {} bytes is too short for an IDX file (a 4-byte magic number and the dimensions); \
             is it the right file, and was the download complete?",
            bytes.len()
        )));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let ndims = bytes[3] as usize;
    if bytes[0] != 0 || bytes[1] != 0 || ndims == 0 {
        return Err(Error::Data(format!(
            "{name}: magic number 0x{magic:08x} is not IDX (expected 0x00000801 for labels or 0x00000803 \
             for images); is it the right file?"
        )));
    }
    if bytes[2] != TYPE_U8 {
        return Err(Error::Data(format!(
            "{name}: magic number 0x{magic:08x} declares element type 0x{:02x}, but only unsigned bytes \
             (0x08, as in 0x00000801 labels and 0x00000803 images) are supported",
            bytes[2]
        )));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(Error::Data(format!(
            "{name}: truncated header: {ndims} dimensions need {header} bytes but the data has {}",
            bytes.len()
        )));
    }
    let dims =
        bytes[4..header].chunks_exact(4).map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize).collect();
    Ok((dims, header))
}

/// The element count of `dims`, or an error if it overflows.
fn element_count(dims: &[usize], name: &str) -> Result<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| {
        Error::Data(format!("{name}: dimensions {dims:?} describe more bytes than this machine can address"))
    })
}

/// Checks uncompressed IDX bytes: header, and a body of exactly the declared size. Returns the
/// dimensions and the header length.
fn check_raw(bytes: &[u8], name: &str) -> Result<(Vec<usize>, usize)> {
    let (dims, header) = parse_header(bytes, name)?;
    let count = element_count(&dims, name)?;
    let body = bytes.len() - header;
    if body != count {
        let what = if body < count { "truncated" } else { "longer than its header says" };
        return Err(Error::Data(format!(
            "{name}: {what}: dimensions {dims:?} need {count} data bytes after the {header}-byte header, \
             but there are {body}; re-download the file"
        )));
    }
    Ok((dims, header))
}

/// Decompresses gzip data that should hold one IDX file, reading the header first so that the
/// declared size can be checked against the compressed length before the body is read.
fn gunzip_idx(gz: &[u8], name: &str) -> Result<Vec<u8>> {
    let bad_gzip = |e: std::io::Error| Error::Data(format!("{name}: broken gzip data ({e}); re-download the file"));
    // MultiGzDecoder: concatenated gzip members are still one valid gzip file.
    let mut dec = flate2::read::MultiGzDecoder::new(gz);
    let mut head = Vec::with_capacity(4 + 4 * 255);
    (&mut dec).take(4).read_to_end(&mut head).map_err(bad_gzip)?;
    if head.len() == 4 && head[0] == 0 && head[1] == 0 {
        let ndims = head[3] as u64;
        (&mut dec).take(4 * ndims).read_to_end(&mut head).map_err(bad_gzip)?;
    }
    // Let parse_header report a short or wrong header precisely.
    let (dims, header) = parse_header(&head, name)?;
    let count = element_count(&dims, name)?;
    let total = count.saturating_add(header);
    let bound = gz.len().saturating_mul(DEFLATE_MAX_RATIO);
    if total > bound {
        return Err(Error::Data(format!(
            "{name}: dimensions {dims:?} need {total} bytes, more than {} bytes of gzip data can hold; \
             the file is truncated or not what it claims to be",
            gz.len()
        )));
    }
    // Grow as data arrives (no reservation of the declared size) and stop one byte past it, so
    // a mislabelled or hostile stream costs at most what the check above allowed.
    let mut raw = head;
    (&mut dec).take((total - raw.len()) as u64 + 1).read_to_end(&mut raw).map_err(bad_gzip)?;
    Ok(raw)
}

/// Reads and parses one IDX file (gzip or not), naming the file in errors.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let name = path.display().to_string();
    if bytes.starts_with(&GZIP_MAGIC) {
        parse_owned(gunzip_idx(&bytes, &name)?, &name)
    } else {
        parse_owned(bytes, &name)
    }
}

/// Loads IDX images (`[n, rows, cols]`, magic 0x00000803) as a one-channel set, and optional labels
/// (`[n]`, 0x00000801). Classes are named "0", "1", ... up to the largest label.
pub fn load_idx(images: &Path, labels: Option<&Path>) -> Result<ImageSet> {
    let img = read_idx(images)?;
    let shown = images.display();
    if img.dims.len() != 3 {
        return Err(Error::Data(format!(
            "{shown}: magic number 0x{:08x} holds {} dimension(s), expected 0x00000803 ([images, rows, cols]); \
             is this a label file given as images?",
            img.magic(),
            img.dims.len()
        )));
    }
    let (n, rows, cols) = (img.dims[0], img.dims[1], img.dims[2]);
    if n == 0 || rows == 0 || cols == 0 {
        return Err(Error::Data(format!("{shown}: holds no images (dimensions {:?})", img.dims)));
    }
    let labels = match labels {
        None => None,
        Some(lp) => {
            let lab = read_idx(lp)?;
            let ls = lp.display();
            if lab.dims.len() != 1 {
                return Err(Error::Data(format!(
                    "{ls}: magic number 0x{:08x} holds {} dimensions, expected 0x00000801 (labels, one dimension); \
                     is this an image file given as labels?",
                    lab.magic(),
                    lab.dims.len()
                )));
            }
            if lab.dims[0] != n {
                return Err(Error::Data(format!(
                    "{ls} has {} labels but {shown} has {n} images; give the label file of the same split",
                    lab.dims[0]
                )));
            }
            Some(lab.data.into_iter().map(u32::from).collect::<Vec<u32>>())
        }
    };
    let classes = match &labels {
        Some(l) => (0..=l.iter().copied().max().unwrap_or(0)).map(|c| c.to_string()).collect(),
        None => Vec::new(),
    };
    let name = images.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| shown.to_string());
    Ok(ImageSet { name, channels: 1, height: rows, width: cols, pixels: img.data, labels, classes })
}

/// Finds `stem.gz` or `stem` in `dir`.
fn find_file(dir: &Path, stem: &str) -> Result<PathBuf> {
    let candidates = [dir.join(format!("{stem}.gz")), dir.join(stem)];
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        Error::Data(format!(
            "Fashion-MNIST file {stem}.gz (or {stem}) not found in {}; install the data set with \
             `apt-get install dataset-fashion-mnist` (it goes to {FASHION_MNIST_DIR}) or point to the \
             folder that holds the four IDX files",
            dir.display()
        ))
    })
}

/// Loads one split of Fashion-MNIST (60000 training or 10000 test images, 28x28, 10 classes) from
/// `dir`, whose files may be gzipped (`train-images-idx3-ubyte.gz`) or not.
pub fn load_fashion_mnist(dir: &Path, split: Split) -> Result<ImageSet> {
    if !dir.is_dir() {
        return Err(Error::Data(format!(
            "Fashion-MNIST folder {} not found; install the data set with `apt-get install \
             dataset-fashion-mnist` (it goes to {FASHION_MNIST_DIR}) or point to the folder that holds \
             the four IDX files",
            dir.display()
        )));
    }
    let p = split.prefix();
    let images = find_file(dir, &format!("{p}-images-idx3-ubyte"))?;
    let labels = find_file(dir, &format!("{p}-labels-idx1-ubyte"))?;
    let mut set = load_idx(&images, Some(&labels))?;
    let classes = FASHION_MNIST_CLASSES.len() as u32;
    if let Some(bad) = set.labels.as_ref().and_then(|l| l.iter().find(|&&l| l >= classes)) {
        return Err(Error::Data(format!(
            "{}: label {bad} but Fashion-MNIST has {classes} classes (0..={}); is this another data set?",
            labels.display(),
            classes - 1
        )));
    }
    set.name = format!("fashion-mnist/{}", if split == Split::Train { "train" } else { "test" });
    set.classes = FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect();
    Ok(set)
}
