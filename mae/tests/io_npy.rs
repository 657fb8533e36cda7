//! NumPy `.npy` files: round trips, NumPy's header layout, malformed files as errors, and
//! `numpy.load` reading what we write.

use std::path::{Path, PathBuf};
use std::process::Command;

use mae::io::{read_npy_f32, write_npy_f32, write_npy_i64, write_npy_u32};

fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("io_npy-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The header text and the data offset of a written file.
fn header_of(bytes: &[u8]) -> (String, usize) {
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    (String::from_utf8(bytes[10..10 + hlen].to_vec()).unwrap(), 10 + hlen)
}

#[test]
fn float32_arrays_round_trip_bit_exact() {
    let dir = scratch("round_trip");
    let cases: Vec<(Vec<usize>, Vec<f32>)> = vec![
        (vec![], vec![2.5]),
        (vec![0], vec![]),
        (vec![5], vec![-0.0, f32::from_bits(1), f32::from_bits(0x7fc0_0abc), f32::INFINITY, 1.0 / 3.0]),
        (vec![2, 3, 4], (0..24).map(|i| i as f32 * 0.1).collect()),
    ];
    for (i, (shape, data)) in cases.iter().enumerate() {
        let path = dir.join(format!("a{i}.npy"));
        write_npy_f32(&path, shape, data).unwrap();
        let (s, d) = read_npy_f32(&path).unwrap();
        assert_eq!(&s, shape);
        assert_eq!(
            d.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            data.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn headers_follow_numpy_layout() {
    let dir = scratch("layout");
    let path = dir.join("f.npy");
    write_npy_f32(&path, &[3], &[1.0, 2.0, 3.0]).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (h, start) = header_of(&bytes);
    assert_eq!(start % 64, 0);
    assert!(h.ends_with('\n'));
    assert!(h.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }"), "{h}");
    assert_eq!(&bytes[start..start + 4], &1.0f32.to_le_bytes());

    write_npy_u32(&path, &[2, 2], &[1, 2, 3, u32::MAX]).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (h, start) = header_of(&bytes);
    assert!(h.starts_with("{'descr': '<u4', 'fortran_order': False, 'shape': (2, 2), }"), "{h}");
    assert_eq!(bytes.len(), start + 16);
    assert_eq!(&bytes[start + 12..], &u32::MAX.to_le_bytes());

    write_npy_i64(&path, &[2], &[-1, 7]).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (h, start) = header_of(&bytes);
    assert!(h.starts_with("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }"), "{h}");
    assert_eq!(&bytes[start..], [(-1i64).to_le_bytes(), 7i64.to_le_bytes()].concat());
    // Reading labels as floats is refused, naming the dtype.
    let e = read_npy_f32(&path).unwrap_err().to_string();
    assert!(e.contains("'<i8'") && e.contains("f.npy"), "{e}");
}

#[test]
fn a_shape_that_does_not_fit_the_data_is_refused() {
    let dir = scratch("bad_shape");
    let path = dir.join("x.npy");
    let e = write_npy_f32(&path, &[2, 3], &[0.0; 5]).unwrap_err().to_string();
    assert!(e.contains("x.npy") && e.contains("[2, 3]"), "{e}");
    assert!(!path.exists());
}

#[test]
fn malformed_files_are_errors_naming_the_file() {
    let dir = scratch("malformed");
    let good_path = dir.join("good.npy");
    write_npy_f32(&good_path, &[4, 4], &[0.5; 16]).unwrap();
    let good = std::fs::read(&good_path).unwrap();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.npy", vec![]),
        ("magic.npy", b"PK\x03\x04 not numpy at all".to_vec()),
        ("cut_header.npy", good[..40].to_vec()),
        ("cut_data.npy", good[..good.len() - 3].to_vec()),
        ("extra_data.npy", [&good[..], &[0u8; 4]].concat()),
    ];
    let mut huge = good.clone();
    let text = String::from_utf8_lossy(&huge[10..74]).replace("(4, 4)", "(99999999999, 99999999999)");
    let text = text.trim_end().to_string() + "\n";
    huge.splice(10..74, text.bytes());
    huge[8..10].copy_from_slice(&(text.len() as u16).to_le_bytes());
    cases.push(("huge_shape.npy", huge));
    let mut long = good.clone();
    long[8..10].copy_from_slice(&u16::MAX.to_le_bytes());
    cases.push(("long_header.npy", long));
    let mut fortran = good.clone();
    let t = String::from_utf8_lossy(&fortran[10..74]).replace("False", "True ");
    fortran.splice(10..74, t.bytes());
    cases.push(("fortran.npy", fortran));
    for (name, bytes) in cases {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap();
        let e = read_npy_f32(&path).expect_err(name).to_string();
        assert!(e.contains(name), "{e}");
        println!("{e}");
    }
}

#[test]
fn random_mutations_of_an_npy_file_never_panic() {
    let dir = scratch("mutations");
    let path = dir.join("m.npy");
    write_npy_f32(&path, &[3, 5], &[1.0; 15]).unwrap();
    let good = std::fs::read(&path).unwrap();
    let mut rng = engine::Rng::new(0x4e9);
    let mut rejected = 0;
    for _ in 0..600 {
        let mut b = good.clone();
        match rng.below(4) {
            0 => b.truncate(rng.below(good.len())),
            1 => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            2 => {
                // Edit the header dictionary with characters that matter to its grammar.
                let i = 10 + rng.below(60);
                let chars = b"{}()[],:'\"0123456789L TrueFals";
                b[i] = chars[rng.below(chars.len())];
            }
            _ => b = (0..rng.below(80)).map(|_| rng.next_u64() as u8).collect(),
        }
        std::fs::write(&path, &b).unwrap();
        match read_npy_f32(&path) {
            Ok((shape, data)) => assert_eq!(shape.iter().product::<usize>(), data.len()),
            Err(e) => {
                rejected += 1;
                assert!(e.to_string().contains("m.npy"), "{e}");
            }
        }
    }
    assert!(rejected > 300, "{rejected}");
}

#[test]
fn numpy_loads_our_files() {
    let probe = Command::new("python3").args(["-c", "import numpy"]).output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        println!("SKIPPED: python3 with numpy is not available");
        return;
    }
    let dir = scratch("python");
    write_npy_f32(&dir.join("f.npy"), &[2, 3], &[0.0, -0.0, 1.5, f32::INFINITY, 1e-40, -7.25]).unwrap();
    write_npy_f32(&dir.join("s.npy"), &[], &[3.0]).unwrap();
    write_npy_u32(&dir.join("u.npy"), &[4], &[0, 1, 9, u32::MAX]).unwrap();
    write_npy_i64(&dir.join("i.npy"), &[2, 1], &[-5, i64::MAX]).unwrap();
    let script = r#"
import sys, os, numpy as np
d = sys.argv[1]
f = np.load(os.path.join(d, "f.npy"))
assert f.dtype == np.float32 and f.shape == (2, 3), (f.dtype, f.shape)
assert f.tolist()[0] == [0.0, -0.0, 1.5] and np.signbit(f[0, 1]) and np.isinf(f[1, 0]) and f[1, 2] == -7.25
assert f[1, 1] == np.float32(1e-40)
s = np.load(os.path.join(d, "s.npy"))
assert s.shape == () and s == 3.0
u = np.load(os.path.join(d, "u.npy"))
assert u.dtype == np.uint32 and u.tolist() == [0, 1, 9, 4294967295]
i = np.load(os.path.join(d, "i.npy"))
assert i.dtype == np.int64 and i.shape == (2, 1) and i.ravel().tolist() == [-5, 2**63 - 1]
np.save(os.path.join(d, "from_numpy.npy"), np.arange(6, dtype="<f4").reshape(3, 2) / 4)
print("numpy ok")
"#;
    let out = Command::new("python3").arg("-c").arg(script).arg(&dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "python failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("numpy ok"));
    // And we read what NumPy writes.
    let (shape, data) = read_npy_f32(&dir.join("from_numpy.npy")).unwrap();
    assert_eq!(shape, vec![3, 2]);
    assert_eq!(data, vec![0.0, 0.25, 0.5, 0.75, 1.0, 1.25]);
    println!("numpy round trip: {}", stdout.trim());
}
