//! Minimal `.npy` reading and writing (NumPy format versions 1-3) for the reference data.
//!
//! Plain little-endian float arrays (`<f2`, `<f4`, `<f8`, C or Fortran order) are read into
//! `f32`; object arrays (`|O`, a pickle of per-caption float arrays, as written by
//! `np.save(..., allow_pickle=True)`) are handed to [`crate::pickle`]. One header parser serves
//! both, which `npyz` cannot (it rejects object arrays). Format reference:
//! <https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html>.

use std::io::Write;
use std::path::Path;

use crate::error::{DataError, Result};

/// A dense float array read from `.npy` (values converted to `f32`, C order).
#[derive(Debug, Clone, PartialEq)]
pub struct FloatArray {
    /// Array shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// What a `.npy` file holds.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyContent {
    /// A plain float array.
    Float(FloatArray),
    /// An object array whose elements are float arrays (flattened in C order of the outer array).
    Objects(Vec<FloatArray>),
}

/// The parsed `.npy` header.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyHeader {
    /// The `descr` string, e.g. `<f4` or `|O`.
    pub descr: String,
    /// Whether the data is in Fortran (column-major) order.
    pub fortran_order: bool,
    /// The array shape.
    pub shape: Vec<usize>,
    /// Byte offset of the data (after the header).
    pub data_offset: usize,
}

fn npy_err(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Npy {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Parses the header of a `.npy` file from its first bytes (`path` only names errors).
pub fn parse_header(bytes: &[u8], path: &Path) -> Result<NpyHeader> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(npy_err(path, "missing the \\x93NUMPY magic"));
    }
    let major = bytes[6];
    let (len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(npy_err(path, "truncated header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(npy_err(path, format!("unsupported format version {v}"))),
    };
    let end = start + len;
    if bytes.len() < end {
        return Err(npy_err(
            path,
            format!(
                "header length field {len} exceeds the {} bytes present",
                bytes.len() - start
            ),
        ));
    }
    let text =
        std::str::from_utf8(&bytes[start..end]).map_err(|_| npy_err(path, "header is not text"))?;
    let descr = dict_value(text, "descr")
        .and_then(|v| {
            let v = v.trim();
            v.strip_prefix('\'')
                .and_then(|v| v.split('\'').next())
                .map(str::to_string)
        })
        .ok_or_else(|| npy_err(path, format!("no 'descr' in header {:?}", brief(text))))?;
    let fortran_order = match dict_value(text, "fortran_order").map(str::trim) {
        Some(v) if v.starts_with("True") => true,
        Some(v) if v.starts_with("False") => false,
        _ => {
            return Err(npy_err(
                path,
                format!("no 'fortran_order' in header {:?}", brief(text)),
            ));
        }
    };
    let shape_text = dict_value(text, "shape")
        .and_then(|v| {
            let v = v.trim().strip_prefix('(')?;
            v.split(')').next()
        })
        .ok_or_else(|| npy_err(path, format!("no 'shape' in header {:?}", brief(text))))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L').parse::<usize>().map_err(|_| {
                npy_err(
                    path,
                    format!("header field 'shape' has a bad entry {:?}", brief(s)),
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(NpyHeader {
        descr,
        fortran_order,
        shape,
        data_offset: end,
    })
}

/// At most the first 200 characters of a header (for messages).
fn brief(text: &str) -> String {
    text.chars().take(200).collect()
}

/// The text after `'key':` in a Python dict literal.
fn dict_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("'{key}':");
    let at = text.find(&pat)? + pat.len();
    Some(&text[at..])
}

/// The number of elements of `shape`, or `None` when the product of its non-zero dimensions
/// overflows `usize`: then no partial product can overflow either, whatever the order (a
/// shape with a zero dimension and huge others is rejected too, since code that computes
/// strides would overflow on it).
pub(crate) fn element_count(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d.max(1)))?;
    Some(shape.iter().product())
}

/// Converts raw little-endian float bytes of dtype `descr` into `f32`; `None` for other dtypes.
pub(crate) fn floats_from_bytes(descr: &str, raw: &[u8]) -> Option<Vec<f32>> {
    match descr {
        "<f4" | "=f4" | "f4" => Some(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        "<f8" | "=f8" | "f8" => Some(
            raw.chunks_exact(8)
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
        ),
        "<f2" | "=f2" | "f2" => Some(
            raw.chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
        ),
        _ => None,
    }
}

/// Byte size of one element of a supported float dtype.
pub(crate) fn float_size(descr: &str) -> Option<usize> {
    match descr.trim_start_matches(['<', '=']) {
        "f4" => Some(4),
        "f8" => Some(8),
        "f2" => Some(2),
        _ => None,
    }
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f32;
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

/// Reorders Fortran-order data into C order. `data` must hold the product of `shape` values
/// (callers check it with overflow-checked arithmetic); anything else is returned unchanged.
pub(crate) fn fortran_to_c(shape: &[usize], data: Vec<f32>) -> Vec<f32> {
    if shape.len() < 2 || data.is_empty() || element_count(shape) != Some(data.len()) {
        return data;
    }
    let n = data.len();
    let mut out = vec![0.0f32; n];
    // Strides of C order, and of Fortran order.
    let mut c_strides = vec![1usize; shape.len()];
    for d in (0..shape.len() - 1).rev() {
        c_strides[d] = c_strides[d + 1] * shape[d + 1];
    }
    let mut idx = vec![0usize; shape.len()];
    for &v in data.iter() {
        // `data` is traversed in Fortran order: the first index varies fastest.
        let c_off: usize = idx.iter().zip(&c_strides).map(|(i, s)| i * s).sum();
        out[c_off] = v;
        for d in 0..shape.len() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// Reads a whole `.npy` file: a plain float array or an object array of float arrays.
pub fn read_npy(path: &Path) -> Result<NpyContent> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_npy(&bytes, path)
}

/// Parses `.npy` bytes (`path` only names errors).
pub fn parse_npy(bytes: &[u8], path: &Path) -> Result<NpyContent> {
    let header = parse_header(bytes, path)?;
    let body = &bytes[header.data_offset..];
    if header.descr == "|O" || header.descr == "O" {
        let items = crate::pickle::read_object_array(body, path)?;
        return Ok(NpyContent::Objects(items));
    }
    let size = float_size(&header.descr).ok_or_else(|| {
        npy_err(
            path,
            format!(
                "header field 'descr' {:?}: unsupported dtype (expected little-endian \
                 float16/32/64 or object)",
                brief(&header.descr)
            ),
        )
    })?;
    // Checked products, compared with the bytes present before anything is allocated.
    let needed = element_count(&header.shape)
        .and_then(|count| count.checked_mul(size))
        .ok_or_else(|| {
            npy_err(
                path,
                format!(
                    "header field 'shape' {:?} of dtype {} overflows a byte count",
                    header.shape, header.descr
                ),
            )
        })?;
    if body.len() < needed {
        return Err(npy_err(
            path,
            format!(
                "header field 'shape' {:?} of dtype {} needs {needed} bytes, the data holds {}",
                header.shape,
                header.descr,
                body.len()
            ),
        ));
    }
    let mut data = floats_from_bytes(&header.descr, &body[..needed]).ok_or_else(|| {
        npy_err(
            path,
            format!(
                "header field 'descr' {:?}: unsupported dtype",
                brief(&header.descr)
            ),
        )
    })?;
    if header.fortran_order {
        data = fortran_to_c(&header.shape, data);
    }
    Ok(NpyContent::Float(FloatArray {
        shape: header.shape,
        data,
    }))
}

/// Reads only the header of a `.npy` file (cheap validation of shapes and dtypes).
pub fn read_header(path: &Path) -> Result<NpyHeader> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut buf = vec![0u8; 4096];
    let mut filled = 0;
    loop {
        let n = f
            .read(&mut buf[filled..])
            .map_err(|e| DataError::io(path, e))?;
        filled += n;
        if n == 0 || filled == buf.len() {
            break;
        }
    }
    buf.truncate(filled);
    match parse_header(&buf, path) {
        Ok(h) => Ok(h),
        // A header longer than 4 KiB (never written by numpy for these arrays): read it all.
        Err(_) if filled == 4096 => parse_header(
            &std::fs::read(path).map_err(|e| DataError::io(path, e))?,
            path,
        ),
        Err(e) => Err(e),
    }
}

/// Serialises a C-order `f32` array as `.npy` (format 1.0) bytes.
pub fn npy_bytes_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    // Pad so that magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes `bytes` to `path` atomically (temporary file in the same folder, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp{}",
        path.extension().and_then(|e| e.to_str()).unwrap_or(""),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| DataError::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| DataError::io(path, e))
}

/// Writes a C-order `f32` array to `path` as `.npy`, atomically.
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    write_atomic(path, &npy_bytes_f32(shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips_shape_and_values() {
        let data: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.0).collect();
        let bytes = npy_bytes_f32(&[2, 3], &data);
        assert_eq!((bytes.len() - 6 * 4) % 64, 0, "header aligned to 64 bytes");
        match parse_npy(&bytes, Path::new("mem")).expect("parse") {
            NpyContent::Float(a) => {
                assert_eq!(a.shape, vec![2, 3]);
                assert_eq!(a.data, data);
            }
            other => panic!("expected floats, got {other:?}"),
        }
    }

    #[test]
    fn fortran_order_is_reordered_to_c() {
        // [[0, 1, 2], [3, 4, 5]] in Fortran order is 0 3 1 4 2 5.
        let f = vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0];
        assert_eq!(fortran_to_c(&[2, 3], f), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn f16_conversion_matches_known_values() {
        // 0x3c00 = 1.0, 0xc000 = -2.0, 0x3555 ~ 0.33325 (IEEE 754 half precision).
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert!((f16_to_f32(0x3555) - 0.333_25).abs() < 1e-4);
    }

    #[test]
    fn truncated_file_is_an_error() {
        let bytes = npy_bytes_f32(&[4, 4], &[0.0; 16]);
        let err = parse_npy(&bytes[..bytes.len() - 4], Path::new("t.npy")).expect_err("truncated");
        assert!(err.to_string().contains("t.npy"), "{err}");
    }
}
