//! Image folders: layouts, conversions of size and channels, what is skipped, and the errors.

use std::path::{Path, PathBuf};

use image::{ImageBuffer, ImageFormat, Luma, LumaA, Rgb, Rgba};
use mae::data::folder::load_folder;

/// A folder under the system temp dir, unique to this test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("mae-data-folder-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, rel: &str) -> PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn close(a: &[u8], b: u8, tol: u8) -> bool {
    a.iter().all(|&v| v.abs_diff(b) <= tol)
}

/// Two classes of PNG and JPEG images in every flavour, plus things that must be skipped.
fn mixed_folder(t: &TempDir) {
    ImageBuffer::from_pixel(8, 8, Rgb([200u8, 50, 10])).save(t.path("cats/a-rgb.png")).unwrap();
    ImageBuffer::from_pixel(10, 6, Luma([128u8])).save(t.path("cats/b-grey.jpg")).unwrap();
    // Fully transparent: the colour is kept, the alpha dropped.
    ImageBuffer::from_pixel(8, 8, Rgba([10u8, 20, 30, 0])).save(t.path("cats/c-rgba.png")).unwrap();
    ImageBuffer::from_pixel(12, 12, Luma([0x8080u16])).save(t.path("cats/d-grey16.png")).unwrap();
    ImageBuffer::from_pixel(20, 20, LumaA([60u8, 255])).save(t.path("dogs/e-grey-alpha.png")).unwrap();
    // A JPEG named .png: the content decides.
    ImageBuffer::from_pixel(8, 8, Rgb([0u8, 0, 250]))
        .save_with_format(t.path("dogs/f-jpeg-named.png"), ImageFormat::Jpeg)
        .unwrap();
    std::fs::write(t.path("dogs/notes.txt"), "not an image").unwrap();
    let png = std::fs::read(t.path("cats/a-rgb.png")).unwrap();
    std::fs::write(t.path("dogs/g-corrupt.png"), &png[..png.len() / 2]).unwrap();
    std::fs::create_dir_all(t.path("dogs/nested/x")).unwrap();
    std::fs::write(t.path("readme.md"), "beside the class folders").unwrap();
    std::fs::create_dir_all(t.path("empty-class/x")).unwrap();
    std::fs::remove_dir(t.path("empty-class/x")).unwrap();
}

#[test]
fn class_folders_of_mixed_png_and_jpeg_load_as_rgb_with_sorted_labels() {
    let t = TempDir::new("rgb");
    mixed_folder(&t);
    let (set, report) = load_folder(&t.0, 3, 8).unwrap();
    assert_eq!((set.len(), set.channels, set.height, set.width), (6, 3, 8, 8));
    assert_eq!(report.loaded, 6);
    assert_eq!(set.classes, ["cats", "dogs", "empty-class"]);
    assert_eq!(set.labels, Some(vec![0, 0, 0, 0, 1, 1]));
    let plane = |i: usize, c: usize| &set.image(i)[c * 64..(c + 1) * 64];
    // RGB kept; grey repeated into three channels; alpha dropped; 16 bits scaled to 8.
    assert!(close(plane(0, 0), 200, 0) && close(plane(0, 1), 50, 0) && close(plane(0, 2), 10, 0));
    assert!((0..3).all(|c| close(plane(1, c), 128, 2)), "JPEG grey: {:?}", plane(1, 0));
    assert!(close(plane(2, 0), 10, 0) && close(plane(2, 1), 20, 0) && close(plane(2, 2), 30, 0));
    assert!((0..3).all(|c| close(plane(3, c), 128, 0)), "16-bit grey: {:?}", plane(3, 0));
    assert!((0..3).all(|c| close(plane(4, c), 60, 0)), "grey with alpha: {:?}", plane(4, 0));
    assert!(close(plane(5, 2), 250, 6) && close(plane(5, 0), 0, 6), "JPEG named .png");

    let skipped: Vec<String> =
        report.skipped.iter().map(|(p, _)| p.strip_prefix(&t.0).unwrap().display().to_string()).collect();
    assert_eq!(skipped, ["readme.md", "dogs/g-corrupt.png", "dogs/nested", "dogs/notes.txt"]);
    let reason = |name: &str| &report.skipped.iter().find(|(p, _)| p.ends_with(name)).unwrap().1;
    assert!(reason("notes.txt").contains("not a PNG or JPEG"), "{}", reason("notes.txt"));
    assert!(reason("g-corrupt.png").contains("cannot decode"), "{}", reason("g-corrupt.png"));
    assert!(reason("readme.md").contains("beside the class folders"));
    assert!(reason("nested").contains("one level"));
}

#[test]
fn the_same_folder_loads_as_grey_by_luma() {
    let t = TempDir::new("grey");
    mixed_folder(&t);
    let (set, _) = load_folder(&t.0, 1, 8).unwrap();
    assert_eq!(set.channels, 1);
    // Rec. 709: 0.2126 * 200 + 0.7152 * 50 + 0.0722 * 10 = 79.
    assert!(close(set.image(0), 79, 0), "{:?}", set.image(0));
    assert!(close(set.image(3), 128, 0));
}

#[test]
fn other_sizes_are_scaled_by_the_shorter_side_and_centre_cropped() {
    let t = TempDir::new("resize");
    // 16 wide, 8 high: red, green and blue quarters of width 4, 8, 4. The centre 8x8 is green.
    let img = ImageBuffer::from_fn(16, 8, |x, _| match x {
        0..4 => Rgb([255u8, 0, 0]),
        4..12 => Rgb([0, 255, 0]),
        _ => Rgb([0, 0, 255]),
    });
    img.save(t.path("wide.png")).unwrap();
    let (set, _) = load_folder(&t.0, 3, 8).unwrap();
    assert!(close(&set.image(0)[64..128], 255, 0) && close(&set.image(0)[..64], 0, 0));
    // Shrunk to 4x4 the centre stays green; enlarged to 32x32 too.
    for size in [4, 32] {
        let (set, _) = load_folder(&t.0, 3, size).unwrap();
        let s = size * size;
        assert!(close(&set.image(0)[s..2 * s], 255, 1) && close(&set.image(0)[..s], 0, 1), "size {size}");
    }
}

#[test]
fn a_flat_folder_is_an_unlabelled_set_in_file_name_order() {
    let t = TempDir::new("flat");
    ImageBuffer::from_pixel(4, 4, Luma([2u8])).save(t.path("b.png")).unwrap();
    ImageBuffer::from_pixel(4, 4, Luma([1u8])).save(t.path("a.png")).unwrap();
    ImageBuffer::from_pixel(4, 4, Luma([3u8])).save(t.path("c.png")).unwrap();
    let (set, report) = load_folder(&t.0, 1, 4).unwrap();
    assert_eq!(set.labels, None);
    assert!(set.classes.is_empty());
    assert_eq!((set.image(0)[0], set.image(1)[0], set.image(2)[0]), (1, 2, 3));
    assert_eq!(report.loaded, 3);
    assert!(report.skipped.is_empty());
}

#[test]
fn missing_empty_and_imageless_folders_are_clear_errors() {
    let msg = load_folder(Path::new("/nonexistent/images"), 3, 32).unwrap_err().to_string();
    assert!(msg.contains("/nonexistent/images") && msg.contains("not found"), "{msg}");

    let t = TempDir::new("empty");
    let msg = load_folder(&t.0, 3, 32).unwrap_err().to_string();
    assert!(msg.contains("is empty") && msg.contains(&t.0.display().to_string()), "{msg}");

    std::fs::write(t.path("notes.txt"), "hello").unwrap();
    std::fs::write(t.path("broken.jpg"), [0xff, 0xd8, 0xff, 0xe0, 0, 0]).unwrap();
    let msg = load_folder(&t.0, 3, 32).unwrap_err().to_string();
    assert!(msg.contains("no loadable images") && msg.contains("2 entries skipped"), "{msg}");

    let msg = load_folder(&t.0, 2, 32).unwrap_err().to_string();
    assert!(msg.contains("1 or 3 channels"), "{msg}");
}
