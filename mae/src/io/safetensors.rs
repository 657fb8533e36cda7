//! Checkpoints in the [safetensors](https://github.com/huggingface/safetensors) format, through
//! Hugging Face's own crate, so that Python's `safetensors` reads our files and official MAE
//! weights converted to safetensors load here.
//!
//! Layout: an 8-byte little-endian header length `n`, `n` bytes of JSON header
//! (`{"__metadata__": {..}, "name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..}`),
//! then the tensor data, each tensor's bytes contiguous and the tensors back to back.
//!
//! Reading checks the header ourselves first (so that messages can name the tensor, and so that
//! no size declared in the file is trusted before it is compared with the file's real length),
//! then validates the whole file through the crate, then converts F32, F16 and BF16 to `f32`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, SafeTensorError, View};

use super::atomic::write_atomically;
use crate::error::{Error, Result};
use serde_json::Value;

/// The largest header the safetensors crate (and Python's reader) accepts, in bytes.
const MAX_HEADER: usize = 100_000_000;
/// Byte size of the header-length field.
const N_LEN: usize = 8;
/// How many names a message lists before "and N more".
const LIST_MAX: usize = 5;

/// Where an in-memory parse (no file) is reported.
const MEMORY: &str = "<in-memory bytes>";

/// One tensor of a checkpoint, in row-major order (`data.len()` is the product of `shape`).
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// The tensor's name in the state dict.
    pub name: String,
    /// Its dimensions.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values, row-major.
    pub data: Vec<f32>,
}

impl NamedTensor {
    /// A tensor from its parts; `write_safetensors` checks that they fit.
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) -> Self {
        NamedTensor { name: name.into(), shape, data }
    }
}

/// An `f32` tensor as the crate's serializer sees it; the little-endian bytes are produced one
/// tensor at a time while the file is assembled.
struct F32View<'a> {
    shape: &'a [usize],
    data: &'a [f32],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}

/// Writes `tensors` as F32 (little-endian) and `metadata` (the header's `__metadata__`, omitted
/// when empty) to `path`, atomically (see [`write_atomically`]): a crash leaves the old file or the
/// new one, never a torn one.
///
/// The data are laid out in the order the safetensors crate requires (sorted by name); a reader
/// finds tensors by name. Names must be unique and not `__metadata__`; each shape's product must
/// equal the tensor's length.
pub fn write_safetensors(path: &Path, tensors: &[NamedTensor], metadata: &BTreeMap<String, String>) -> Result<()> {
    let mut seen = HashSet::new();
    for t in tensors {
        if t.name == "__metadata__" {
            return Err(Error::checkpoint(path, "a tensor cannot be named `__metadata__` (reserved by safetensors)"));
        }
        if !seen.insert(t.name.as_str()) {
            return Err(Error::checkpoint(path, format!("tensor `{}` is given twice; names must be unique", t.name)));
        }
        let n = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n != Some(t.data.len()) {
            return Err(Error::checkpoint(
                path,
                format!(
                    "tensor `{}`: shape {} does not hold its {} values; fix the shape before saving",
                    t.name,
                    fmt_shape(&t.shape),
                    t.data.len()
                ),
            ));
        }
    }
    let views = tensors.iter().map(|t| (t.name.as_str(), F32View { shape: &t.shape, data: &t.data }));
    let info: Option<HashMap<String, String>> =
        (!metadata.is_empty()).then(|| metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    let bytes = safetensors::serialize(views, info)
        .map_err(|e| Error::checkpoint(path, format!("cannot serialize the tensors: {e}")))?;
    write_atomically(path, |f| f.write_all(&bytes))
}

/// Reads a safetensors file: every tensor converted to `f32` (F32 bit-exact; F16 and BF16
/// widened exactly), in the file's data order, and the header's `__metadata__`.
///
/// A truncated or corrupt file, or a tensor of another dtype, is an error naming the file (and
/// the tensor) and saying what to do; nothing declared in the file is allocated before it has
/// been checked against the file's length.
pub fn read_safetensors(path: &Path) -> Result<(Vec<NamedTensor>, BTreeMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_safetensors_bytes(&bytes).map_err(|e| at_path(e, path))
}

/// The byte-level reader behind [`read_safetensors`] (also the fuzz entry point): the whole file
/// in memory. Errors are reported against the pseudo-path `<in-memory bytes>`.
pub fn parse_safetensors_bytes(bytes: &[u8]) -> Result<(Vec<NamedTensor>, BTreeMap<String, String>)> {
    let bad = |m: String| Error::checkpoint(Path::new(MEMORY), m);
    let n = header_len(bytes.get(..N_LEN), bytes.len() as u64).map_err(bad)?;
    let header = parse_header(&bytes[N_LEN..N_LEN + n]).map_err(bad)?;
    check_layout(&header.tensors, bytes.len() - N_LEN - n).map_err(bad)?;

    // The crate is the authority on the format; our checks above only explain its rules better.
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(explain_crate_error(&e)))?;

    for t in &header.tensors {
        if !matches!(t.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(bad(format!(
                "tensor `{}` has dtype {}, but only F32, F16 and BF16 can be loaded; convert it to float \
                 (in PyTorch: `t.float()`) and save the checkpoint again",
                t.name, t.dtype
            )));
        }
    }
    let mut out = Vec::with_capacity(header.tensors.len());
    for t in &header.tensors {
        let view = st.tensor(&t.name).map_err(|e| bad(format!("tensor `{}`: {}", t.name, explain_crate_error(&e))))?;
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F16 => raw.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
            Dtype::BF16 => raw.chunks_exact(2).map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
            other => return Err(bad(format!("tensor `{}` has unsupported dtype {other}", t.name))),
        };
        out.push(NamedTensor { name: t.name.clone(), shape: view.shape().to_vec(), data });
    }
    Ok((out, header.metadata))
}

/// Reads only the header of a safetensors file and returns its `__metadata__` (empty when absent).
/// The header is still checked as [`read_safetensors`] checks it, against the file's length.
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    let bad = |m: String| Error::checkpoint(path, m);
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut first = [0u8; N_LEN];
    let got = if file_len >= N_LEN as u64 {
        f.read_exact(&mut first).map_err(|e| Error::io(path, e))?;
        Some(&first[..])
    } else {
        None
    };
    let n = header_len(got, file_len).map_err(bad)?;
    // `n` is at most the file's length and at most MAX_HEADER: safe to allocate.
    let mut header = vec![0u8; n];
    f.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let header = parse_header(&header).map_err(bad)?;
    let data_len = usize::try_from(file_len - (N_LEN + n) as u64)
        .map_err(|_| bad("the file is too large for this machine's address space".into()))?;
    check_layout(&header.tensors, data_len).map_err(bad)?;
    Ok(header.metadata)
}

/// Checks loaded tensors against what a model expects (name and shape of each parameter); missing,
/// unexpected and mis-shaped tensors are all reported at once, naming the file and the tensors.
pub fn check_state_dict(path: &Path, tensors: &[NamedTensor], expected: &[(String, Vec<usize>)]) -> Result<()> {
    let found: HashMap<&str, &[usize]> = tensors.iter().map(|t| (t.name.as_str(), t.shape.as_slice())).collect();
    let wanted: HashMap<&str, &[usize]> = expected.iter().map(|(n, s)| (n.as_str(), s.as_slice())).collect();
    let missing: Vec<String> = expected
        .iter()
        .filter(|(n, _)| !found.contains_key(n.as_str()))
        .map(|(n, s)| format!("`{n}` {}", fmt_shape(s)))
        .collect();
    let extra: Vec<String> = tensors
        .iter()
        .filter(|t| !wanted.contains_key(t.name.as_str()))
        .map(|t| format!("`{}` {}", t.name, fmt_shape(&t.shape)))
        .collect();
    let mismatched: Vec<String> = expected
        .iter()
        .filter_map(|(n, s)| {
            let f = found.get(n.as_str())?;
            (*f != s.as_slice()).then(|| format!("`{n}` expected {} found {}", fmt_shape(s), fmt_shape(f)))
        })
        .collect();
    if missing.is_empty() && extra.is_empty() && mismatched.is_empty() {
        return Ok(());
    }
    let mut parts = Vec::new();
    for (items, one, many) in [
        (&missing, "missing tensor", "missing tensors"),
        (&extra, "unexpected tensor", "unexpected tensors"),
        (&mismatched, "shape mismatch", "shape mismatches"),
    ] {
        if !items.is_empty() {
            let label = if items.len() == 1 { one } else { many };
            parts.push(format!("{} {label}: {}", items.len(), list_some(items)));
        }
    }
    Err(Error::checkpoint(
        path,
        format!(
            "does not fit the model: {}; was it saved by a model of another configuration (sizes, patch size, \
             depth)? Compare its metadata with the model's settings",
            parts.join("; ")
        ),
    ))
}

/// Up to [`LIST_MAX`] items, then "and N more".
fn list_some(items: &[String]) -> String {
    let mut s = items.iter().take(LIST_MAX).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > LIST_MAX {
        s.push_str(&format!(" and {} more", items.len() - LIST_MAX));
    }
    s
}

fn at_path(e: Error, path: &Path) -> Error {
    match e {
        Error::Checkpoint { message, .. } => Error::checkpoint(path, message),
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// Header checks

struct Header {
    metadata: BTreeMap<String, String>,
    /// Sorted by data offsets.
    tensors: Vec<Entry>,
}

struct Entry {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    begin: usize,
    end: usize,
}

/// The header length, checked against the file's real length and the format's limit.
fn header_len(first: Option<&[u8]>, file_len: u64) -> std::result::Result<usize, String> {
    let Some(first) = first.and_then(|f| <[u8; N_LEN]>::try_from(f).ok()) else {
        return Err(format!(
            "the file is only {file_len} bytes, too short for the 8-byte header length: it is truncated or not a \
             safetensors file; save it again or re-download it"
        ));
    };
    let n = u64::from_le_bytes(first);
    let rest = file_len - N_LEN as u64;
    if n > rest {
        return Err(format!(
            "the header length field says {n} bytes but only {rest} bytes follow it: the file is truncated or not \
             a safetensors file; save it again or re-download it"
        ));
    }
    if n > MAX_HEADER as u64 {
        return Err(format!(
            "the header is {n} bytes, more than the {MAX_HEADER} bytes safetensors allows: the file is corrupt or \
             not a safetensors file"
        ));
    }
    Ok(n as usize)
}

/// The members of a JSON object in file order, duplicates kept (serde_json's own map would keep
/// only the last of two equal names, and a header that names a tensor twice is corrupt).
struct Members(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(pair) = map.next_entry::<String, Value>()? {
                    members.push(pair);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// What a JSON value is, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_header(bytes: &[u8]) -> std::result::Result<Header, String> {
    let corrupt = "the file is corrupt or not a safetensors file";
    let text = std::str::from_utf8(bytes).map_err(|e| format!("the header is not valid UTF-8 ({e}): {corrupt}"))?;
    // One parse; only when it fails is the text looked at again, to say what it is instead.
    let Members(members) = serde_json::from_str(text).map_err(|e| match serde_json::from_str::<Value>(text) {
        Ok(other) => format!("the header is {} instead of a JSON object: {corrupt}", kind(&other)),
        Err(_) => format!("the header is not valid JSON ({e}): {corrupt}"),
    })?;
    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::with_capacity(members.len());
    let mut seen = HashSet::new();
    for (name, v) in members {
        if !seen.insert(name.clone()) {
            return Err(format!("`{name}` appears twice in the header: {corrupt}"));
        }
        if name == "__metadata__" {
            match v {
                Value::Null => {}
                Value::Object(kv) => {
                    for (k, v) in kv {
                        let Value::String(s) = v else {
                            return Err(format!(
                                "metadata entry `{k}` is {} but safetensors metadata values must be strings",
                                kind(&v)
                            ));
                        };
                        metadata.insert(k, s);
                    }
                }
                other => return Err(format!("`__metadata__` is {} instead of an object of strings", kind(&other))),
            }
            continue;
        }
        tensors.push(parse_entry(name, v)?);
    }
    tensors.sort_by_key(|t| (t.begin, t.end));
    Ok(Header { metadata, tensors })
}

fn parse_entry(name: String, v: Value) -> std::result::Result<Entry, String> {
    let Value::Object(mut fields) = v else {
        return Err(format!("tensor `{name}`: its header entry is {} instead of an object", kind(&v)));
    };
    let mut field = |key: &str| fields.remove(key).ok_or_else(|| format!("tensor `{name}`: no `{key}` in the header"));
    let (dtype, shape, offsets) = (field("dtype")?, field("shape")?, field("data_offsets")?);
    let dtype = match &dtype {
        Value::String(s) => parse_dtype(s).ok_or_else(|| format!("tensor `{name}`: unknown dtype \"{s}\""))?,
        other => return Err(format!("tensor `{name}`: dtype is {} instead of a string", kind(other))),
    };
    let ints = |v: &Value, what: &str| -> std::result::Result<Vec<usize>, String> {
        let Value::Array(items) = v else {
            return Err(format!("tensor `{name}`: {what} is {} instead of an array of integers", kind(v)));
        };
        items
            .iter()
            .map(|i| {
                i.as_u64().and_then(|u| usize::try_from(u).ok()).ok_or_else(|| {
                    format!("tensor `{name}`: {what} holds {} that is not a non-negative integer", kind(i))
                })
            })
            .collect()
    };
    let shape = ints(&shape, "shape")?;
    let offsets = ints(&offsets, "data_offsets")?;
    let [begin, end] = offsets[..] else {
        return Err(format!("tensor `{name}`: data_offsets has {} numbers instead of [begin, end]", offsets.len()));
    };
    Ok(Entry { name, dtype, shape, begin, end })
}

fn parse_dtype(s: &str) -> Option<Dtype> {
    Some(match s {
        "BOOL" => Dtype::BOOL,
        "F4" => Dtype::F4,
        "F6_E2M3" => Dtype::F6_E2M3,
        "F6_E3M2" => Dtype::F6_E3M2,
        "U8" => Dtype::U8,
        "I8" => Dtype::I8,
        "F8_E5M2" => Dtype::F8_E5M2,
        "F8_E4M3" => Dtype::F8_E4M3,
        "F8_E8M0" => Dtype::F8_E8M0,
        "F8_E4M3FNUZ" => Dtype::F8_E4M3FNUZ,
        "F8_E5M2FNUZ" => Dtype::F8_E5M2FNUZ,
        "I16" => Dtype::I16,
        "U16" => Dtype::U16,
        "F16" => Dtype::F16,
        "BF16" => Dtype::BF16,
        "I32" => Dtype::I32,
        "U32" => Dtype::U32,
        "F32" => Dtype::F32,
        "C64" => Dtype::C64,
        "F64" => Dtype::F64,
        "I64" => Dtype::I64,
        "U64" => Dtype::U64,
        _ => return None,
    })
}

/// `[2, 3]`: a shape as messages write it.
fn fmt_shape(shape: &[usize]) -> String {
    format!("{shape:?}")
}

/// Offsets inside the data section, sizes matching shapes, tensors back to back covering it all.
/// `tensors` is sorted by offsets.
fn check_layout(tensors: &[Entry], data_len: usize) -> std::result::Result<(), String> {
    let redo = "save it again or re-download it";
    for t in tensors {
        let (name, shape, dtype) = (&t.name, fmt_shape(&t.shape), t.dtype);
        if t.begin > t.end {
            return Err(format!(
                "tensor `{name}`: data offsets [{}, {}] are reversed: the header is corrupt; {redo}",
                t.begin, t.end
            ));
        }
        if t.end > data_len {
            return Err(format!(
                "tensor `{name}`: data offsets [{}, {}] lie outside the file's {data_len} data bytes: the file is \
                 truncated or its header is corrupt; {redo}",
                t.begin, t.end
            ));
        }
        let bits =
            t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).and_then(|n| n.checked_mul(dtype.bitsize()));
        let Some(bits) = bits else {
            return Err(format!(
                "tensor `{name}`: shape {shape} of {dtype} declares more bytes than any file can hold: the header is \
                 corrupt; {redo}"
            ));
        };
        if bits % 8 != 0 {
            return Err(format!("tensor `{name}`: shape {shape} of {dtype} is not a whole number of bytes"));
        }
        if bits / 8 != t.end - t.begin {
            return Err(format!(
                "tensor `{name}`: shape {shape} of {dtype} needs {} bytes but its data offsets [{}, {}] hold {}: \
                 the header is corrupt; {redo}",
                bits / 8,
                t.begin,
                t.end,
                t.end - t.begin
            ));
        }
    }
    let mut pos = 0usize;
    let mut prev: Option<&Entry> = None;
    for t in tensors {
        if t.begin != pos {
            let after = prev.map_or("the start of the data".to_string(), |p| format!("tensor `{}`", p.name));
            let what = if t.begin < pos { "overlaps" } else { "leaves a gap after" };
            return Err(format!(
                "tensor `{}` (data offsets [{}, {}]) {what} {after}: the header is corrupt; {redo}",
                t.name, t.begin, t.end
            ));
        }
        pos = t.end;
        prev = Some(t);
    }
    if pos != data_len {
        return Err(format!(
            "the tensors cover {pos} data bytes but the file has {data_len}: trailing bytes after the last tensor; \
             the file is corrupt; {redo}"
        ));
    }
    Ok(())
}

/// The crate's verdict, with a hint (our own checks normally catch these first, with names).
fn explain_crate_error(e: &SafeTensorError) -> String {
    let hint = match e {
        SafeTensorError::HeaderTooSmall | SafeTensorError::InvalidHeaderLength => "the file is truncated",
        SafeTensorError::MetadataIncompleteBuffer => "the file is truncated or has trailing bytes",
        SafeTensorError::InvalidHeader(_) | SafeTensorError::InvalidHeaderDeserialization(_) => {
            "the header is corrupt or this is not a safetensors file"
        }
        _ => "the file is corrupt",
    };
    format!("rejected by the safetensors reader: {e} ({hint}; save it again or re-download it)")
}

// ---------------------------------------------------------------------------------------------
// Half-precision conversions (exact: every f16 and bf16 value is an f32 value).

/// IEEE binary16 bits to f32, exactly; NaN payloads are kept (shifted into the high mantissa).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        // Subnormal: man * 2^-24, exact in f32.
        (0, _) => sign | (man as f32 * f32::from_bits(0x3380_0000)).to_bits(),
        (31, _) => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// bfloat16 bits to f32 (the high half of an f32), exactly.
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_matches_reference_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14));
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc040), -3.0);
    }
}
