//! IDX files: round trips, every kind of damage, hostile sizes, and the real Fashion-MNIST.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};

use engine::Rng;
use mae::data::Split;
use mae::data::idx::{FASHION_MNIST_DIR, load_fashion_mnist, load_idx, parse_idx_bytes};

/// Records the largest single allocation made by the current thread, so a test can show that a
/// hostile header did not make the parser allocate what it declared.
struct LargestAlloc;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every method hands the request to `System` unchanged; recording a size allocates nothing.
unsafe impl GlobalAlloc for LargestAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|m| m.set(m.get().max(layout.size())));
        // SAFETY: the caller's contract for `alloc` (a valid, non-zero-sized layout) is passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|m| m.set(m.get().max(new_size)));
        // SAFETY: `ptr` came from `System` with `layout`; the caller's contract for `realloc` holds.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: LargestAlloc = LargestAlloc;

/// A folder under the system temp dir, unique to this test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("mae-data-idx-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Three 2x3 images and their labels.
fn tiny() -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..18).map(|i| i * 13).collect();
    (idx(&[3, 2, 3], &pixels), idx(&[3], &[2, 0, 1]))
}

fn err_text<T: std::fmt::Debug>(r: mae::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn idx_images_and_labels_round_trip_plain_and_gzipped() {
    let dir = TempDir::new("round-trip");
    let (images, labels) = tiny();
    for (suffix, enc) in [("plain", false), ("gz", true)] {
        let f = |b: &[u8]| if enc { gzip(b) } else { b.to_vec() };
        // Names carry no hint: compression is found from the content.
        let ip = dir.write(&format!("images-{suffix}"), &f(&images));
        let lp = dir.write(&format!("labels-{suffix}"), &f(&labels));
        let set = load_idx(&ip, Some(&lp)).unwrap();
        assert_eq!((set.len(), set.channels, set.height, set.width), (3, 1, 2, 3));
        assert_eq!(set.pixels, (0..18).map(|i| i * 13).collect::<Vec<u8>>());
        assert_eq!(set.labels, Some(vec![2, 0, 1]));
        assert_eq!(set.classes, ["0", "1", "2"]);
        assert_eq!(set.image(1), &[78, 91, 104, 117, 130, 143]);
        let unlabelled = load_idx(&ip, None).unwrap();
        assert_eq!(unlabelled.labels, None);
        assert!(unlabelled.classes.is_empty());
    }
}

#[test]
fn parse_idx_bytes_reads_plain_and_gzipped_bytes_alike() {
    let (images, _) = tiny();
    let a = parse_idx_bytes(&images).unwrap();
    assert_eq!(a.dims, [3, 2, 3]);
    assert_eq!(a.magic(), 0x0803);
    assert_eq!(parse_idx_bytes(&gzip(&images)).unwrap(), a);
}

#[test]
fn idx_with_a_wrong_magic_number_is_a_clear_error() {
    let (mut images, _) = tiny();
    images[..4].copy_from_slice(&[0x89, b'P', b'N', b'G']);
    let msg = err_text(parse_idx_bytes(&images));
    assert!(msg.contains("0x89504e47") && msg.contains("0x00000803"), "{msg}");

    // An element type other than unsigned bytes names the type found.
    let (mut images, _) = tiny();
    images[2] = 0x0d;
    let msg = err_text(parse_idx_bytes(&images));
    assert!(msg.contains("0x0d") && msg.contains("0x08"), "{msg}");

    // A label file given as images, and the other way round, say which magic was expected.
    let dir = TempDir::new("magic");
    let (images, labels) = tiny();
    let ip = dir.write("images", &images);
    let lp = dir.write("labels", &labels);
    let msg = err_text(load_idx(&lp, None));
    assert!(msg.contains("0x00000801") && msg.contains("0x00000803") && msg.contains("labels"), "{msg}");
    let msg = err_text(load_idx(&ip, Some(&ip)));
    assert!(msg.contains("0x00000803") && msg.contains("0x00000801"), "{msg}");
}

#[test]
fn a_truncated_idx_file_is_a_clear_error_naming_the_file() {
    let dir = TempDir::new("truncated");
    let (images, _) = tiny();
    for cut in [0, 3, 4, 10, 15, images.len() - 1] {
        let p = dir.write("cut-images", &images[..cut]);
        let msg = err_text(load_idx(&p, None));
        assert!(msg.contains("cut-images"), "{msg}");
        assert!(msg.contains("short") || msg.contains("truncated"), "cut at {cut}: {msg}");
    }
    // A gzip stream cut short is an error too, not a short image set.
    let gz = gzip(&images);
    let p = dir.write("cut-gz", &gz[..gz.len() - 12]);
    let msg = err_text(load_idx(&p, None));
    assert!(msg.contains("cut-gz"), "{msg}");
}

#[test]
fn idx_dimensions_that_disagree_with_the_file_length_are_an_error() {
    let (images, _) = tiny();
    let mut longer = images.clone();
    longer.extend_from_slice(&[1, 2, 3]);
    let msg = err_text(parse_idx_bytes(&longer));
    assert!(msg.contains("longer than its header says") && msg.contains("18") && msg.contains("21"), "{msg}");
    let msg = err_text(parse_idx_bytes(&gzip(&longer)));
    assert!(msg.contains("longer than its header says"), "{msg}");

    let mut fewer = images.clone();
    fewer[7] = 4; // 4 images declared, 3 present
    let msg = err_text(parse_idx_bytes(&fewer));
    assert!(msg.contains("truncated") && msg.contains("24") && msg.contains("18"), "{msg}");
}

#[test]
fn huge_declared_counts_are_an_error_without_allocating_them() {
    // 2^31 images of 28x28 (1.6 TB) declared in a 100-byte file, plain and gzipped; and dimensions
    // whose product overflows.
    let mut plain = idx(&[1 << 31, 28, 28], &[]);
    plain.resize(100, 7);
    let overflow = idx(&[u32::MAX, u32::MAX, u32::MAX], &[0; 84]);
    for bytes in [plain.clone(), gzip(&plain), overflow.clone(), gzip(&overflow)] {
        LARGEST.with(|m| m.set(0));
        let msg = err_text(parse_idx_bytes(&bytes));
        let largest = LARGEST.with(|m| m.get());
        assert!(largest < 1 << 20, "the parser allocated {largest} bytes for a {}-byte input", bytes.len());
        assert!(msg.contains("need") || msg.contains("address"), "{msg}");
    }
}

#[test]
fn image_and_label_counts_that_differ_are_an_error() {
    let dir = TempDir::new("counts");
    let (images, _) = tiny();
    let ip = dir.write("images", &images);
    let lp = dir.write("labels", &idx(&[4], &[0, 1, 2, 3]));
    let msg = err_text(load_idx(&ip, Some(&lp)));
    assert!(msg.contains("4 labels") && msg.contains("3 images"), "{msg}");
}

#[test]
fn an_idx_file_with_zero_images_is_an_error() {
    let dir = TempDir::new("zero");
    let p = dir.write("images", &idx(&[0, 28, 28], &[]));
    let msg = err_text(load_idx(&p, None));
    assert!(msg.contains("no images"), "{msg}");
}

#[test]
fn fashion_mnist_files_are_found_gzipped_or_not_and_labels_are_checked() {
    let dir = TempDir::new("fashion");
    let (images, labels) = tiny();
    dir.write("t10k-images-idx3-ubyte", &images);
    dir.write("t10k-labels-idx1-ubyte.gz", &gzip(&labels));
    let set = load_fashion_mnist(&dir.0, Split::Test).unwrap();
    assert_eq!(set.len(), 3);
    assert_eq!(set.classes.len(), 10);
    assert_eq!(set.classes[0], "T-shirt/top");

    dir.write("t10k-labels-idx1-ubyte.gz", &gzip(&idx(&[3], &[0, 10, 1])));
    let msg = err_text(load_fashion_mnist(&dir.0, Split::Test));
    assert!(msg.contains("label 10") && msg.contains("10 classes"), "{msg}");

    let msg = err_text(load_fashion_mnist(&dir.0, Split::Train));
    assert!(msg.contains("train-images-idx3-ubyte") && msg.contains("apt-get install dataset-fashion-mnist"), "{msg}");
}

#[test]
fn a_missing_fashion_mnist_folder_says_how_to_install_it() {
    let missing = Path::new("/nonexistent/fashion-mnist-folder");
    let msg = err_text(load_fashion_mnist(missing, Split::Train));
    assert!(msg.contains("apt-get install dataset-fashion-mnist") && msg.contains("/nonexistent/fashion-mnist-folder"));
}

#[test]
fn random_and_mutated_idx_bytes_never_panic() {
    let mut rng = Rng::new(20240601);
    let (images, labels) = tiny();
    let valid = [images, labels];
    let mut ok = 0;
    for case in 0..3000 {
        let bytes: Vec<u8> = if case % 4 == 0 {
            // Random bytes, sometimes behind a gzip or IDX-looking prefix.
            let n = rng.below(64);
            let mut b: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
            match rng.below(3) {
                0 if b.len() >= 2 => b[..2].copy_from_slice(&[0x1f, 0x8b]),
                1 if b.len() >= 3 => b[..3].copy_from_slice(&[0, 0, 8]),
                _ => {}
            }
            b
        } else {
            // A valid file, compressed before or after its mutations (or not at all).
            let mut b = valid[rng.below(valid.len())].clone();
            let when = rng.below(3);
            if when == 0 {
                b = gzip(&b);
            }
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(b.len() + 1);
                match rng.below(5) {
                    0 if at < b.len() => b[at] ^= 1 << rng.below(8),
                    1 => b.insert(at, rng.below(256) as u8),
                    2 if at < b.len() => {
                        b.remove(at);
                    }
                    // Header fields of an uncompressed file: ndims, or a dimension's bytes.
                    3 if b.len() > 8 && b[0] == 0 => b[3] = rng.below(6) as u8,
                    4 if b.len() > 8 && b[0] == 0 => b[4 + rng.below(4)] = rng.below(256) as u8,
                    _ => b.truncate(at),
                }
            }
            if when == 1 {
                b = gzip(&b);
            }
            b
        };
        if let Ok(a) = parse_idx_bytes(&bytes) {
            assert_eq!(a.data.len(), a.dims.iter().product::<usize>());
            ok += 1;
        }
    }
    // Some mutations keep the file valid (a flipped data bit); most do not.
    assert!(ok > 0 && ok < 3000, "{ok} of 3000 parsed");
}

#[test]
fn the_real_fashion_mnist_test_split_loads_when_installed() {
    let dir = Path::new(FASHION_MNIST_DIR);
    if !dir.is_dir() {
        // CI installs the package, so there a missing folder is a failure, not a skip.
        assert!(std::env::var_os("CI").is_none(), "CI is set but {FASHION_MNIST_DIR} is missing");
        println!("SKIPPED: {FASHION_MNIST_DIR} not found (apt-get install dataset-fashion-mnist)");
        return;
    }
    let set = load_fashion_mnist(dir, Split::Test).unwrap();
    assert_eq!((set.len(), set.channels, set.height, set.width), (10000, 1, 28, 28));
    assert_eq!(set.classes.len(), 10);
    let mut counts = [0; 10];
    for &l in set.labels.as_ref().unwrap() {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [1000; 10]);
    // The test split's statistics are close to the training set's constants.
    let stats = set.channel_stats();
    assert!((stats.mean[0] - 0.2868).abs() < 1e-3 && (stats.std[0] - 0.3524).abs() < 1e-3, "{stats}");
}
