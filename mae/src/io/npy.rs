//! NumPy `.npy` arrays (format version 1.0, or 2.0 when the header does not fit 64 KiB):
//! features as little-endian `<f4`, labels as `<u4` or `<i8`, C order. The header is padded with
//! spaces and ends with `'\n'` so that the data start at a multiple of 64 bytes, as NumPy writes.
//! `numpy.load` reads these files.

use std::io::{BufWriter, Write};
use std::path::Path;

use super::atomic::write_atomically;
use crate::error::{Error, Result};

const MAGIC: &[u8] = b"\x93NUMPY";
/// NumPy aligns the data to this many bytes.
const ALIGN: usize = 64;

/// Writes a float32 array (`<f4`, C order), atomically. `data.len()` must equal the product of
/// `shape` (an empty shape is a scalar).
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    write_npy(path, "<f4", shape, data.len(), |w| data.iter().try_for_each(|v| w.write_all(&v.to_le_bytes())))
}

/// Writes a uint32 array (`<u4`, C order), e.g. class labels, atomically.
pub fn write_npy_u32(path: &Path, shape: &[usize], data: &[u32]) -> Result<()> {
    write_npy(path, "<u4", shape, data.len(), |w| data.iter().try_for_each(|v| w.write_all(&v.to_le_bytes())))
}

/// Writes an int64 array (`<i8`, C order), NumPy's default integer for labels, atomically.
pub fn write_npy_i64(path: &Path, shape: &[usize], data: &[i64]) -> Result<()> {
    write_npy(path, "<i8", shape, data.len(), |w| data.iter().try_for_each(|v| w.write_all(&v.to_le_bytes())))
}

fn write_npy(
    path: &Path,
    descr: &str,
    shape: &[usize],
    len: usize,
    body: impl FnOnce(&mut BufWriter<&mut std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if n != Some(len) {
        return Err(Error::Data(format!(
            "{}: shape {shape:?} does not hold the {len} values given; fix the shape before saving",
            path.display()
        )));
    }
    let header = header(descr, shape);
    write_atomically(path, |f| {
        let mut w = BufWriter::new(f);
        w.write_all(&header)?;
        body(&mut w)?;
        w.flush()
    })
}

/// Magic, version, header length and the padded header dictionary.
fn header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    // Version 1.0 has a 2-byte header length; 2.0 a 4-byte one.
    let (version, len_bytes) = if 10 + dict.len() < 65536 - ALIGN { (1u8, 2) } else { (2u8, 4) };
    let preamble = MAGIC.len() + 2 + len_bytes;
    let total = (preamble + dict.len() + 1).next_multiple_of(ALIGN);
    let hlen = total - preamble;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if len_bytes == 2 {
        out.extend_from_slice(&(hlen as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(hlen as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

/// Reads a float32 `.npy` file (`<f4`, C order; versions 1.0 to 3.0) into its shape and data.
/// Other dtypes, Fortran order, and truncated or malformed files are errors naming the file.
pub fn read_npy_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |m: String| Error::Data(format!("{}: {m}", path.display()));
    let (descr, fortran, shape, data) = parse(&bytes).map_err(bad)?;
    if fortran {
        return Err(bad("the array is in Fortran order; save it in C order (numpy.ascontiguousarray)".into()));
    }
    if descr != "<f4" {
        return Err(bad(format!(
            "the array's dtype is '{descr}', but float32 ('<f4') is expected; convert it (arr.astype('<f4'))"
        )));
    }
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).and_then(|n| n.checked_mul(4));
    let Some(n) = n else {
        return Err(bad(format!(
            "shape {shape:?} of float32 declares more bytes than any file can hold: the header is corrupt; write it again"
        )));
    };
    if n != data.len() {
        return Err(bad(format!(
            "shape {shape:?} of float32 needs {n} bytes but the file holds {} after its header: it is truncated or \
             corrupt; write it again",
            data.len()
        )));
    }
    let values = data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok((shape, values))
}

type Parsed<'a> = (String, bool, Vec<usize>, &'a [u8]);

fn parse(bytes: &[u8]) -> std::result::Result<Parsed<'_>, String> {
    let not_npy = "not a NumPy .npy file (or truncated)";
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(format!("{not_npy}: it does not start with the .npy magic"));
    }
    let (hlen, start): (usize, usize) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            let Some(l) = bytes.get(8..12) else { return Err(format!("{not_npy}: the header length is cut off")) };
            (u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize, 12)
        }
        v => return Err(format!("unsupported .npy format version {v}.{}", bytes[7])),
    };
    let Some(header) = bytes.get(start..start.saturating_add(hlen)) else {
        return Err(format!(
            "the header length says {hlen} bytes but only {} follow: the file is truncated",
            bytes.len() - start.min(bytes.len())
        ));
    };
    let header = std::str::from_utf8(header).map_err(|_| "the header is not text: the file is corrupt".to_string())?;
    let (descr, fortran, shape) = parse_dict(header).map_err(|e| format!("malformed header {header:?}: {e}"))?;
    Ok((descr, fortran, shape, &bytes[start + hlen..]))
}

#[derive(Debug, PartialEq)]
enum Tok {
    Punct(char),
    Str(String),
    Word(String),
}

fn tokens(s: &str) -> std::result::Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    while let Some(&c) = it.peek() {
        match c {
            c if c.is_whitespace() => {
                it.next();
            }
            '{' | '}' | '(' | ')' | '[' | ']' | ',' | ':' => {
                it.next();
                out.push(Tok::Punct(c));
            }
            '\'' | '"' => {
                it.next();
                let mut v = String::new();
                loop {
                    match it.next() {
                        Some(q) if q == c => break,
                        Some(ch) => v.push(ch),
                        None => return Err("unterminated string".into()),
                    }
                }
                out.push(Tok::Str(v));
            }
            c if c.is_ascii_alphanumeric() || c == '_' => {
                let mut v = String::new();
                while let Some(&ch) = it.peek() {
                    if !(ch.is_ascii_alphanumeric() || ch == '_') {
                        break;
                    }
                    v.push(ch);
                    it.next();
                }
                out.push(Tok::Word(v));
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(out)
}

fn parse_dict(s: &str) -> std::result::Result<(String, bool, Vec<usize>), String> {
    let toks = tokens(s)?;
    let mut i = 0;
    let next = |i: &mut usize| {
        *i += 1;
        toks.get(*i - 1)
    };
    if next(&mut i) != Some(&Tok::Punct('{')) {
        return Err("expected '{'".into());
    }
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        let key = match next(&mut i) {
            Some(Tok::Punct('}')) => break,
            Some(Tok::Str(k)) => k.clone(),
            _ => return Err("expected a quoted key or '}'".into()),
        };
        if next(&mut i) != Some(&Tok::Punct(':')) {
            return Err(format!("expected ':' after '{key}'"));
        }
        match key.as_str() {
            "descr" => match next(&mut i) {
                Some(Tok::Str(d)) => descr = Some(d.clone()),
                _ => return Err("'descr' is not a simple dtype string (structured arrays are not supported)".into()),
            },
            "fortran_order" => match next(&mut i) {
                Some(Tok::Word(w)) if w == "True" => fortran = Some(true),
                Some(Tok::Word(w)) if w == "False" => fortran = Some(false),
                _ => return Err("'fortran_order' is not True or False".into()),
            },
            "shape" => {
                let close = match next(&mut i) {
                    Some(Tok::Punct('(')) => ')',
                    Some(Tok::Punct('[')) => ']',
                    _ => return Err("'shape' is not a tuple".into()),
                };
                let mut dims = Vec::new();
                loop {
                    match next(&mut i) {
                        Some(Tok::Punct(c)) if *c == close => break,
                        Some(Tok::Punct(',')) => {}
                        Some(Tok::Word(w)) => {
                            // Python 2 wrote long integers as `3L`.
                            let digits = w.strip_suffix('L').unwrap_or(w);
                            dims.push(digits.parse::<usize>().map_err(|_| format!("bad dimension {w:?}"))?);
                        }
                        _ => return Err("unterminated or malformed 'shape'".into()),
                    }
                }
                shape = Some(dims);
            }
            other => return Err(format!("unexpected key '{other}'")),
        }
        match next(&mut i) {
            Some(Tok::Punct(',')) => {}
            Some(Tok::Punct('}')) => break,
            _ => return Err("expected ',' or '}'".into()),
        }
    }
    match (descr, fortran, shape) {
        (Some(d), Some(f), Some(s)) => Ok((d, f, s)),
        _ => Err("'descr', 'fortran_order' or 'shape' is missing".into()),
    }
}
