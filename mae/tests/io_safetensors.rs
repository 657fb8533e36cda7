//! Safetensors checkpoints: bit-exact round trips, half-precision files, malformed files that
//! must give errors naming the file (never panics), state-dict checks, atomic replacement, and
//! Python's `safetensors` reading our files.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use engine::Rng;
use mae::io::{
    NamedTensor, check_state_dict, parse_safetensors_bytes, read_metadata, read_safetensors, write_atomically,
    write_safetensors,
};
use safetensors::tensor::{Dtype, TensorView};

/// A fresh, empty directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("io_safetensors-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn sample_tensors() -> Vec<NamedTensor> {
    vec![
        NamedTensor::new("pos_embed", vec![1, 2, 3], (0..6).map(|i| i as f32 * 0.5 - 1.0).collect()),
        NamedTensor::new("cls_token", vec![1, 1, 3], vec![0.25, -0.0, 3.0]),
        NamedTensor::new("blocks.0.attn.qkv.weight", vec![6, 2], (0..12).map(|i| (i as f32).sin()).collect()),
    ]
}

/// The bytes of a valid checkpoint; `tag` keeps parallel tests apart.
fn sample_bytes(tag: &str) -> Vec<u8> {
    let dir = scratch(&format!("sample-{tag}"));
    let path = dir.join("sample.safetensors");
    write_safetensors(&path, &sample_tensors(), &meta(&[("format", "pt"), ("epoch", "3")])).unwrap();
    std::fs::read(path).unwrap()
}

fn by_name(tensors: Vec<NamedTensor>) -> BTreeMap<String, NamedTensor> {
    tensors.into_iter().map(|t| (t.name.clone(), t)).collect()
}

/// A file from a literal header and `data_len` zero bytes of data.
fn raw_file(header: &str, data_len: usize) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.resize(b.len() + data_len, 0);
    b
}

/// Writes `bytes` as `name` and reads it back, expecting an error that names the file and
/// contains `needle`; returns the message.
fn expect_error(dir: &Path, name: &str, bytes: &[u8], needle: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let err = read_safetensors(&path).expect_err(name).to_string();
    assert!(err.contains(name), "message does not name the file: {err}");
    assert!(err.contains(needle), "message lacks {needle:?}: {err}");
    println!("{name}: {err}");
    err
}

#[test]
fn round_trip_is_bit_exact_with_metadata() {
    let dir = scratch("round_trip");
    let special = [
        -0.0f32,
        0.0,
        f32::from_bits(1),           // smallest subnormal
        f32::from_bits(0x807f_ffff), // largest negative subnormal
        f32::from_bits(0x7fc0_1234), // quiet NaN with a payload
        f32::from_bits(0xffa0_0001), // signalling NaN, negative
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN_POSITIVE,
        1.0 / 3.0,
        -123456.79,
    ];
    let tensors = vec![
        NamedTensor::new("z.special", vec![3, 4], special.to_vec()),
        NamedTensor::new("a.scalar", vec![], vec![7.5]),
        NamedTensor::new("m.empty", vec![0, 5], vec![]),
        NamedTensor::new("patch_embed.proj.weight", vec![2, 1, 2, 2], (0..8).map(|i| i as f32).collect()),
    ];
    let metadata = meta(&[("format", "pt"), ("config", "{\"patch\": 4, \"dim\": 64}"), ("note", "ünïcode ✓")]);
    let path = dir.join("ckpt.safetensors");
    write_safetensors(&path, &tensors, &metadata).unwrap();

    let (back, back_meta) = read_safetensors(&path).unwrap();
    assert_eq!(back_meta, metadata);
    assert_eq!(read_metadata(&path).unwrap(), metadata);
    let back = by_name(back);
    assert_eq!(back.len(), tensors.len());
    for t in &tensors {
        let b = &back[&t.name];
        assert_eq!(b.shape, t.shape, "{}", t.name);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&b.data), bits(&t.data), "{}", t.name);
    }
}

#[test]
fn empty_metadata_and_no_tensors_round_trip() {
    let dir = scratch("empty");
    let path = dir.join("empty.safetensors");
    write_safetensors(&path, &[], &BTreeMap::new()).unwrap();
    let (t, m) = read_safetensors(&path).unwrap();
    assert!(t.is_empty() && m.is_empty());
    assert!(read_metadata(&path).unwrap().is_empty());
}

#[test]
fn writing_rejects_bad_tensors_naming_them() {
    let dir = scratch("bad_write");
    let path = dir.join("bad.safetensors");
    let wrong = [NamedTensor::new("w", vec![2, 3], vec![0.0; 5])];
    let e = write_safetensors(&path, &wrong, &BTreeMap::new()).unwrap_err().to_string();
    assert!(e.contains("`w`") && e.contains("[2, 3]") && e.contains("bad.safetensors"), "{e}");
    let twice = [NamedTensor::new("w", vec![1], vec![0.0]), NamedTensor::new("w", vec![1], vec![1.0])];
    let e = write_safetensors(&path, &twice, &BTreeMap::new()).unwrap_err().to_string();
    assert!(e.contains("`w`") && e.contains("twice"), "{e}");
    assert!(!path.exists());
}

#[test]
fn half_precision_files_are_read_as_f32() {
    let dir = scratch("half");
    // 1.0, -2.0, 65504, smallest subnormal, -0.0, inf
    let f16: Vec<u16> = vec![0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000, 0x7c00];
    // 1.0, -3.0, 0.15625, -inf
    let bf16: Vec<u16> = vec![0x3f80, 0xc040, 0x3e20, 0xff80];
    let le = |v: &[u16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (f16_bytes, bf16_bytes) = (le(&f16), le(&bf16));
    let views = vec![
        ("half", TensorView::new(Dtype::F16, vec![2, 3], &f16_bytes).unwrap()),
        ("brain", TensorView::new(Dtype::BF16, vec![4], &bf16_bytes).unwrap()),
    ];
    let info = [("format".to_string(), "pt".to_string())].into_iter().collect();
    let bytes = safetensors::serialize(views, Some(info)).unwrap();
    let path = dir.join("half.safetensors");
    std::fs::write(&path, bytes).unwrap();

    let (t, m) = read_safetensors(&path).unwrap();
    assert_eq!(m, meta(&[("format", "pt")]));
    let t = by_name(t);
    assert_eq!(t["half"].shape, vec![2, 3]);
    assert_eq!(t["half"].data[..4], [1.0, -2.0, 65504.0, 2f32.powi(-24)]);
    assert_eq!(t["half"].data[4].to_bits(), (-0.0f32).to_bits());
    assert_eq!(t["half"].data[5], f32::INFINITY);
    assert_eq!(t["brain"].shape, vec![4]);
    assert_eq!(t["brain"].data, vec![1.0, -3.0, 0.15625, f32::NEG_INFINITY]);
}

#[test]
fn other_dtypes_are_refused_naming_the_tensor_and_dtype() {
    let dir = scratch("dtypes");
    let u8_data = [1u8, 2, 3, 4];
    let i64_data: Vec<u8> = [5i64, -6].iter().flat_map(|x| x.to_le_bytes()).collect();
    for (name, view) in [
        ("u8.safetensors", TensorView::new(Dtype::U8, vec![4], &u8_data).unwrap()),
        ("i64.safetensors", TensorView::new(Dtype::I64, vec![2], &i64_data).unwrap()),
    ] {
        let dtype = view.dtype().to_string();
        let bytes = safetensors::serialize([("counts", view)], None).unwrap();
        let e = expect_error(&dir, name, &bytes, "`counts`");
        assert!(e.contains(&dtype) && e.contains("F32, F16 and BF16"), "{e}");
    }
}

#[test]
fn truncated_files_are_errors_naming_the_file() {
    let dir = scratch("truncated");
    let good = sample_bytes("truncated");
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    for cut in [0, 4, 7, 8, 8 + n / 2, 8 + n - 1, 8 + n, 8 + n + 5, good.len() - 1] {
        let name = format!("cut{cut}.safetensors");
        let needle = if cut < 8 {
            "too short"
        } else if cut < 8 + n {
            "header length"
        } else {
            "truncated"
        };
        expect_error(&dir, &name, &good[..cut], needle);
        // The header-only reader agrees.
        let e = read_metadata(&dir.join(&name)).unwrap_err().to_string();
        assert!(e.contains(&name), "{e}");
    }
}

#[test]
fn garbage_headers_are_errors_naming_the_file() {
    let dir = scratch("garbage");
    expect_error(&dir, "not_json.safetensors", &raw_file("this is not JSON at all!", 0), "not valid JSON");
    let mut bytes = raw_file("{\"a\": 1}", 0);
    bytes[9] = 0xff;
    bytes[10] = 0xfe;
    expect_error(&dir, "not_utf8.safetensors", &bytes, "not valid UTF-8");
    expect_error(&dir, "array.safetensors", &raw_file("[1, 2]", 0), "instead of a JSON object");
    expect_error(&dir, "bad_entry.safetensors", &raw_file(r#"{"w": 3}"#, 0), "`w`");
    expect_error(
        &dir,
        "no_shape.safetensors",
        &raw_file(r#"{"w": {"dtype": "F32", "data_offsets": [0, 4]}}"#, 4),
        "no `shape`",
    );
    expect_error(
        &dir,
        "unknown_dtype.safetensors",
        &raw_file(r#"{"w": {"dtype": "F33", "shape": [1], "data_offsets": [0, 4]}}"#, 4),
        "unknown dtype",
    );
    expect_error(
        &dir,
        "bad_metadata.safetensors",
        &raw_file(r#"{"__metadata__": {"epoch": 3}}"#, 0),
        "must be strings",
    );
    expect_error(
        &dir,
        "negative.safetensors",
        &raw_file(r#"{"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}"#, 4),
        "non-negative integer",
    );
}

#[test]
fn a_header_length_beyond_the_file_is_an_error() {
    let dir = scratch("header_len");
    let mut bytes = sample_bytes("header_len");
    bytes[..8].copy_from_slice(&1_000_000u64.to_le_bytes());
    expect_error(&dir, "long.safetensors", &bytes, "header length");
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    expect_error(&dir, "max.safetensors", &bytes, "header length");
    let e = read_metadata(&dir.join("max.safetensors")).unwrap_err().to_string();
    assert!(e.contains("header length"), "{e}");
}

#[test]
fn offsets_outside_the_file_or_overlapping_are_errors_naming_the_tensor() {
    let dir = scratch("offsets");
    expect_error(
        &dir,
        "outside.safetensors",
        &raw_file(r#"{"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}"#, 16),
        "outside the file",
    );
    expect_error(
        &dir,
        "overlap.safetensors",
        &raw_file(
            r#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}"#,
            12,
        ),
        "`b`",
    );
    expect_error(
        &dir,
        "gap.safetensors",
        &raw_file(r#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#, 8),
        "gap",
    );
    expect_error(
        &dir,
        "reversed.safetensors",
        &raw_file(r#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}"#, 8),
        "reversed",
    );
    expect_error(
        &dir,
        "trailing.safetensors",
        &raw_file(r#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#, 12),
        "trailing bytes",
    );
}

#[test]
fn shape_and_byte_count_mismatches_are_errors_naming_the_tensor() {
    let dir = scratch("mismatch");
    let e = expect_error(
        &dir,
        "mismatch.safetensors",
        &raw_file(r#"{"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}"#, 8),
        "`w`",
    );
    assert!(e.contains("needs 12 bytes"), "{e}");
}

#[test]
fn huge_declared_shapes_in_tiny_files_are_errors_not_allocations() {
    let dir = scratch("huge");
    let two40 = 1u64 << 40;
    expect_error(
        &dir,
        "huge.safetensors",
        &raw_file(&format!(r#"{{"w": {{"dtype": "F32", "shape": [{two40}, {two40}], "data_offsets": [0, 4]}}}}"#), 4),
        "more bytes than any file can hold",
    );
    expect_error(
        &dir,
        "huge_end.safetensors",
        &raw_file(
            &format!(r#"{{"w": {{"dtype": "F32", "shape": [{two40}], "data_offsets": [0, {}]}}}}"#, two40 * 4),
            4,
        ),
        "outside the file",
    );
    // Offsets that are individually consistent but add up to 2^64: an overflow inside the crate's
    // own length check if it were reached.
    let k = (1u64 << 61) - 1;
    let entries: Vec<String> = (0..8)
        .map(|i| format!(r#""t{i}": {{"dtype": "U8", "shape": [{k}], "data_offsets": [{}, {}]}}"#, i * k, (i + 1) * k))
        .collect();
    expect_error(&dir, "wrap.safetensors", &raw_file(&format!("{{{}}}", entries.join(", ")), 8), "outside the file");
}

#[test]
fn check_state_dict_names_missing_extra_and_mis_shaped_tensors() {
    let path = Path::new("run/ckpt.safetensors");
    let loaded = vec![
        NamedTensor::new("cls_token", vec![1, 1, 8], vec![0.0; 8]),
        NamedTensor::new("pos_embed", vec![1, 17, 8], vec![0.0; 136]),
        NamedTensor::new("head.weight", vec![10, 8], vec![0.0; 80]),
    ];
    let expected: Vec<(String, Vec<usize>)> = vec![
        ("cls_token".into(), vec![1, 1, 8]),
        ("pos_embed".into(), vec![1, 50, 8]),
        ("patch_embed.proj.weight".into(), vec![8, 1, 4, 4]),
    ];
    check_state_dict(path, &loaded[..1], &expected[..1]).unwrap();
    let e = check_state_dict(path, &loaded, &expected).unwrap_err().to_string();
    println!("{e}");
    assert!(e.contains("run/ckpt.safetensors"), "{e}");
    assert!(e.contains("1 missing tensor: `patch_embed.proj.weight` [8, 1, 4, 4]"), "{e}");
    assert!(e.contains("1 unexpected tensor: `head.weight` [10, 8]"), "{e}");
    assert!(e.contains("`pos_embed` expected [1, 50, 8] found [1, 17, 8]"), "{e}");

    let many: Vec<(String, Vec<usize>)> = (0..8).map(|i| (format!("blocks.{i}.norm1.weight"), vec![8])).collect();
    let e = check_state_dict(path, &[], &many).unwrap_err().to_string();
    assert!(
        e.contains("8 missing tensors") && e.contains("`blocks.4.norm1.weight`") && e.contains("and 3 more"),
        "{e}"
    );
    assert!(!e.contains("blocks.5."), "{e}");
}

#[test]
fn a_failed_write_leaves_the_old_file_and_no_temporary_files() {
    let dir = scratch("atomic");
    let path = dir.join("ckpt.safetensors");
    write_safetensors(&path, &sample_tensors(), &meta(&[("epoch", "1")])).unwrap();
    let before = std::fs::read(&path).unwrap();

    // The writer fails midway.
    let e = write_atomically(&path, |f| {
        f.write_all(b"half a checkpoint")?;
        Err(std::io::Error::other("injected failure"))
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("injected failure") && e.contains("ckpt.safetensors"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // The rename fails: the target is a non-empty directory.
    let blocker = dir.join("blocked.safetensors");
    std::fs::create_dir(&blocker).unwrap();
    std::fs::write(blocker.join("keep"), b"x").unwrap();
    assert!(write_safetensors(&blocker, &sample_tensors(), &BTreeMap::new()).is_err());
    assert!(blocker.join("keep").exists());

    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["blocked.safetensors", "ckpt.safetensors"], "temporary files left behind");

    // A successful write replaces the file.
    write_safetensors(&path, &sample_tensors()[..1], &meta(&[("epoch", "2")])).unwrap();
    assert_eq!(read_metadata(&path).unwrap(), meta(&[("epoch", "2")]));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
}

/// One random mutation of `b`.
fn mutate(rng: &mut Rng, b: &mut Vec<u8>) {
    let pos = |rng: &mut Rng, b: &Vec<u8>| if b.is_empty() { 0 } else { rng.below(b.len() + 1) };
    let header_end = |b: &Vec<u8>| {
        b.get(..8).map_or(0, |l| (u64::from_le_bytes(l.try_into().unwrap()) as usize).saturating_add(8).min(b.len()))
    };
    match rng.below(7) {
        0 => {
            for _ in 0..1 + rng.below(8) {
                if !b.is_empty() {
                    let i = rng.below(b.len());
                    b[i] ^= 1 << rng.below(8);
                }
            }
        }
        1 => {
            let p = pos(rng, b);
            b.truncate(p);
        }
        2 => {
            let p = pos(rng, b);
            let extra: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next_u64() as u8).collect();
            b.splice(p..p, extra);
        }
        3 => {
            // Overwrite the header length: random, just past the file, or off by a little.
            if b.len() >= 8 {
                let old = u64::from_le_bytes(b[..8].try_into().unwrap());
                let new = match rng.below(4) {
                    0 => rng.next_u64(),
                    1 => b.len() as u64 - 8 + rng.below(3) as u64,
                    2 => old.wrapping_add(rng.below(17) as u64).wrapping_sub(8),
                    _ => rng.next_u64() % 200_000_000,
                };
                b[..8].copy_from_slice(&new.to_le_bytes());
            }
        }
        4 => {
            // Edit the header's JSON text with JSON-significant characters.
            let end = header_end(b);
            if end > 8 {
                let i = 8 + rng.below(end - 8);
                let chars = b"{}[]\":,0123456789-eE. \\u";
                b[i] = chars[rng.below(chars.len())];
            }
        }
        5 => {
            // Replace a number in the header with a huge or odd one.
            let end = header_end(b);
            let digits: Vec<usize> = (8..end).filter(|&i| b[i].is_ascii_digit()).collect();
            if !digits.is_empty() {
                let i = digits[rng.below(digits.len())];
                let j = (i..end).find(|&j| !b[j].is_ascii_digit()).unwrap_or(end);
                let replacement =
                    ["18446744073709551615", "18446744073709551616", "1099511627776", "0", "-1", "1e3", "4.0"]
                        [rng.below(7)];
                b.splice(i..j, replacement.bytes());
                let n = (u64::from_le_bytes(b[..8].try_into().unwrap()) as i64 + replacement.len() as i64
                    - (j - i) as i64) as u64;
                if rng.below(2) == 0 {
                    b[..8].copy_from_slice(&n.to_le_bytes());
                }
            }
        }
        _ => {
            // Random bytes, sometimes behind a plausible header length.
            let len = rng.below(64);
            *b = (0..len).map(|_| rng.next_u64() as u8).collect();
            if len >= 8 && rng.below(2) == 0 {
                b[..8].copy_from_slice(&((len - 8 - rng.below(len - 7).min(len - 8)) as u64).to_le_bytes());
            }
        }
    }
}

#[test]
fn random_bytes_and_mutations_of_a_checkpoint_never_panic() {
    let good = sample_bytes("property");
    assert!(parse_safetensors_bytes(&good).is_ok());
    let mut rng = Rng::new(0x5afe_7e45);
    let (mut ok, mut err) = (0, 0);
    let start = std::time::Instant::now();
    for _ in 0..4000 {
        let mut b = good.clone();
        for _ in 0..1 + rng.below(3) {
            mutate(&mut rng, &mut b);
        }
        let ours = parse_safetensors_bytes(&b);
        // Differential check: we must not refuse what the crate accepts, except for the dtypes we
        // cannot convert and duplicate JSON keys (which the crate resolves silently). Only where
        // integer overflow wraps: the crate's own length check can overflow on hostile offsets.
        if !cfg!(debug_assertions)
            && let Err(e) = &ours
            && safetensors::SafeTensors::deserialize(&b).is_ok()
        {
            let e = e.to_string();
            assert!(e.contains("can be loaded") || e.contains("twice"), "refused a file the crate accepts: {e}");
        }
        match ours {
            Ok((tensors, _)) => {
                ok += 1;
                for t in tensors {
                    assert_eq!(t.data.len(), t.shape.iter().product::<usize>(), "{}", t.name);
                }
            }
            Err(e) => {
                err += 1;
                assert!(e.to_string().contains("<in-memory bytes>"), "{e}");
            }
        }
    }
    println!("{ok} parsed, {err} rejected in {:?}", start.elapsed());
    assert!(err > 2000, "too few mutations were malformed: {err}");
}

#[test]
fn python_safetensors_reads_our_files() {
    let probe = Command::new("python3").args(["-c", "import safetensors, numpy"]).output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        println!("SKIPPED: python3 with the safetensors and numpy modules is not available");
        return;
    }
    let dir = scratch("python");
    let path = dir.join("for_python.safetensors");
    let tensors = vec![
        NamedTensor::new("cls_token", vec![1, 1, 3], vec![0.5, -0.0, 3.25]),
        NamedTensor::new("blocks.0.attn.qkv.weight", vec![6, 2], (0..12).map(|i| i as f32 * 0.125 - 0.5).collect()),
        NamedTensor::new("scalar", vec![], vec![f32::INFINITY]),
    ];
    let metadata = meta(&[("format", "pt"), ("mask_ratio", "0.75")]);
    write_safetensors(&path, &tensors, &metadata).unwrap();
    let script = r#"
import sys, numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file
d = load_file(sys.argv[1])
assert sorted(d) == ["blocks.0.attn.qkv.weight", "cls_token", "scalar"], sorted(d)
assert d["cls_token"].dtype == np.float32 and d["cls_token"].shape == (1, 1, 3)
assert d["cls_token"].tolist() == [[[0.5, -0.0, 3.25]]]
assert np.signbit(d["cls_token"][0, 0, 1])
w = d["blocks.0.attn.qkv.weight"]
assert w.shape == (6, 2) and (w.ravel() == np.arange(12, dtype=np.float32) * 0.125 - 0.5).all()
assert d["scalar"].shape == () and np.isinf(d["scalar"])
with safe_open(sys.argv[1], framework="numpy") as f:
    assert f.metadata() == {"format": "pt", "mask_ratio": "0.75"}, f.metadata()
print("python ok")
"#;
    let out = Command::new("python3").arg("-c").arg(script).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "python failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("python ok"));
    println!("python round trip: {}", stdout.trim());
}
