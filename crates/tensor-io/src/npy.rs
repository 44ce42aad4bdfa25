//! `.npy` files (NumPy format versions 1-3): reading every numeric dtype numpy writes and object
//! arrays of float arrays, and writing `f32` arrays and object arrays.
//!
//! - [`parse`] / [`read`]: a float array (`f2`, `f4`, `f8`, either byte order, C or Fortran
//!   order, converted to `f32` in C order) or an object array (`|O`: a pickle of float arrays,
//!   as `np.save(np.array(items, dtype=object), allow_pickle=True)` writes it; the pickle runs on
//!   the hardened [`crate::pickle`] machine and nothing in it is executed);
//! - [`parse_numeric`]: any numeric array, floats as `f32` and integers / booleans as `i64`
//!   (body-model files hold both);
//! - [`parse_header`] / [`read_header`]: the header alone;
//! - [`f32_bytes`] / [`object_array_bytes`]: the writers.
//!
//! The shape's element count is computed with overflow-checked arithmetic and compared with the
//! bytes present before anything is allocated. Format reference:
//! <https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html>.

use std::path::Path;

use crate::{ReadError, element_count};

mod objects;

/// An array in C (row-major) order.
#[derive(Debug, Clone, PartialEq)]
pub struct Array<T> {
    /// Array shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<T>,
}

/// A float array, values converted to `f32`.
pub type FloatArray = Array<f32>;

/// What a float `.npy` file holds ([`parse`]).
#[derive(Debug, Clone, PartialEq)]
pub enum NpyContent {
    /// A plain float array.
    Float(FloatArray),
    /// An object array whose elements are float arrays (flattened in C order of the outer
    /// array).
    Objects(Vec<FloatArray>),
}

/// A numeric array of any dtype ([`parse_numeric`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Numeric {
    /// Floats (`f2`, `f4`, `f8`) as `f32`.
    F32(Array<f32>),
    /// Integers and booleans (`i1`..`i8`, `u1`..`u8`, `b1`) as `i64`.
    I64(Array<i64>),
}

impl Numeric {
    /// The array's shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Numeric::F32(a) => &a.shape,
            Numeric::I64(a) => &a.shape,
        }
    }
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

/// The kind of a numeric element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Float,
    Int,
    Uint,
    Bool,
}

/// A numeric dtype: kind, byte size and byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dtype {
    pub kind: Kind,
    pub size: usize,
    pub little: bool,
}

impl Dtype {
    /// Parses a numeric `descr` (`<f4`, `>i8`, `|u1`, `|b1`, `=f8`, `f4`); `None` otherwise.
    pub(crate) fn parse(descr: &str) -> Option<Dtype> {
        let (little, rest) = match descr.as_bytes().first()? {
            b'<' | b'=' => (
                cfg!(target_endian = "little") || descr.starts_with('<'),
                &descr[1..],
            ),
            b'>' => (false, &descr[1..]),
            b'|' => (true, &descr[1..]),
            _ => (true, descr),
        };
        let kind = match rest.as_bytes().first()? {
            b'f' => Kind::Float,
            b'i' => Kind::Int,
            b'u' => Kind::Uint,
            b'b' => Kind::Bool,
            _ => return None,
        };
        let size: usize = rest[1..].parse().ok()?;
        let ok = match kind {
            Kind::Float => matches!(size, 2 | 4 | 8),
            Kind::Int | Kind::Uint => matches!(size, 1 | 2 | 4 | 8),
            Kind::Bool => size == 1,
        };
        ok.then_some(Dtype { kind, size, little })
    }

    fn bytes<const N: usize>(&self, c: &[u8]) -> [u8; N] {
        let mut b = [0u8; N];
        b.copy_from_slice(&c[..N]);
        if !self.little {
            b.reverse();
        }
        b
    }

    /// Decodes a float dtype's elements to `f32`; `None` for other kinds.
    pub(crate) fn floats(&self, raw: &[u8]) -> Option<Vec<f32>> {
        if self.kind != Kind::Float {
            return None;
        }
        let chunks = raw.chunks_exact(self.size);
        Some(match self.size {
            2 => chunks
                .map(|c| half::f16::from_le_bytes(self.bytes::<2>(c)).to_f32())
                .collect(),
            4 => chunks
                .map(|c| f32::from_le_bytes(self.bytes::<4>(c)))
                .collect(),
            _ => chunks
                .map(|c| f64::from_le_bytes(self.bytes::<8>(c)) as f32)
                .collect(),
        })
    }

    /// Decodes an integer or boolean dtype's elements to `i64` (`u8` values above `i64::MAX`
    /// are an error naming the element); `None` for floats.
    fn ints(&self, raw: &[u8]) -> Option<Result<Vec<i64>, String>> {
        let chunks = raw.chunks_exact(self.size);
        let signed = self.kind == Kind::Int;
        Some(Ok(match (self.kind, self.size) {
            (Kind::Float, _) => return None,
            (Kind::Bool, _) => chunks.map(|c| i64::from(c[0] != 0)).collect(),
            (_, 1) if signed => chunks.map(|c| i64::from(c[0] as i8)).collect(),
            (_, 1) => chunks.map(|c| i64::from(c[0])).collect(),
            (_, 2) if signed => chunks
                .map(|c| i64::from(i16::from_le_bytes(self.bytes::<2>(c))))
                .collect(),
            (_, 2) => chunks
                .map(|c| i64::from(u16::from_le_bytes(self.bytes::<2>(c))))
                .collect(),
            (_, 4) if signed => chunks
                .map(|c| i64::from(i32::from_le_bytes(self.bytes::<4>(c))))
                .collect(),
            (_, 4) => chunks
                .map(|c| i64::from(u32::from_le_bytes(self.bytes::<4>(c))))
                .collect(),
            (_, _) if signed => chunks
                .map(|c| i64::from_le_bytes(self.bytes::<8>(c)))
                .collect(),
            (_, _) => {
                let mut out = Vec::with_capacity(raw.len() / 8);
                for (i, c) in chunks.enumerate() {
                    let v = u64::from_le_bytes(self.bytes::<8>(c));
                    match i64::try_from(v) {
                        Ok(v) => out.push(v),
                        Err(_) => return Some(Err(format!("element {i} = {v} exceeds i64"))),
                    }
                }
                out
            }
        }))
    }
}

fn err(path: &Path, reason: impl Into<String>) -> ReadError {
    ReadError::new(path, reason)
}

/// At most the first 200 characters of a header field (for messages).
fn brief(text: &str) -> String {
    text.chars().take(200).collect()
}

/// The text after `'key':` in a Python dict literal.
fn dict_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("'{key}':");
    let at = text.find(&pat)? + pat.len();
    Some(&text[at..])
}

/// Parses the header of a `.npy` file from its first bytes (`path` only names errors).
pub fn parse_header(bytes: &[u8], path: &Path) -> Result<NpyHeader, ReadError> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(err(path, "missing the \\x93NUMPY magic"));
    }
    let (len, start) = match bytes[6] {
        1 => (
            usize::from(u16::from_le_bytes([bytes[8], bytes[9]])),
            10usize,
        ),
        2 | 3 => match bytes.get(8..12) {
            Some(b) => (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12),
            None => return Err(err(path, "truncated header length field")),
        },
        v => return Err(err(path, format!("unsupported format version {v}"))),
    };
    let end = start
        .checked_add(len)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| {
            err(
                path,
                format!(
                    "header length field {len} exceeds the {} bytes present",
                    bytes.len() - start
                ),
            )
        })?;
    let text =
        std::str::from_utf8(&bytes[start..end]).map_err(|_| err(path, "header is not text"))?;
    let descr = dict_value(text, "descr")
        .and_then(|v| {
            let v = v.trim();
            v.strip_prefix('\'')
                .and_then(|v| v.split('\'').next())
                .map(str::to_string)
        })
        .ok_or_else(|| err(path, format!("no 'descr' in header {:?}", brief(text))))?;
    let fortran_order = match dict_value(text, "fortran_order").map(str::trim) {
        Some(v) if v.starts_with("True") => true,
        Some(v) if v.starts_with("False") => false,
        _ => {
            return Err(err(
                path,
                format!("no 'fortran_order' in header {:?}", brief(text)),
            ));
        }
    };
    let shape_text = dict_value(text, "shape")
        .and_then(|v| v.trim().strip_prefix('(')?.split(')').next())
        .ok_or_else(|| err(path, format!("no 'shape' in header {:?}", brief(text))))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L').parse::<usize>().map_err(|_| {
                err(
                    path,
                    format!("header field 'shape' has a bad entry {:?}", brief(s)),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NpyHeader {
        descr,
        fortran_order,
        shape,
        data_offset: end,
    })
}

/// Reads only the header of a `.npy` file (cheap validation of shapes and dtypes).
pub fn read_header(path: &Path) -> Result<NpyHeader, ReadError> {
    use std::io::Read;
    let io = |e: std::io::Error| err(path, e.to_string());
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut buf = Vec::with_capacity(4096);
    (&mut f).take(4096).read_to_end(&mut buf).map_err(io)?;
    match parse_header(&buf, path) {
        Ok(h) => Ok(h),
        // A header longer than 4 KiB (numpy never writes one for these arrays): read it all.
        Err(_) if buf.len() == 4096 => parse_header(&std::fs::read(path).map_err(io)?, path),
        Err(e) => Err(e),
    }
}

/// The raw bytes of `header`'s elements in `body`, checked against the shape and dtype size.
fn element_bytes<'b>(
    header: &NpyHeader,
    size: usize,
    body: &'b [u8],
    path: &Path,
) -> Result<&'b [u8], ReadError> {
    let needed = element_count(&header.shape)
        .and_then(|count| count.checked_mul(size))
        .ok_or_else(|| {
            err(
                path,
                format!(
                    "header field 'shape' {:?} of dtype {} overflows a byte count",
                    header.shape, header.descr
                ),
            )
        })?;
    body.get(..needed).ok_or_else(|| {
        err(
            path,
            format!(
                "header field 'shape' {:?} of dtype {} needs {needed} bytes, the data holds {}",
                header.shape,
                header.descr,
                body.len()
            ),
        )
    })
}

/// Reorders Fortran-order data into C order. `data` must hold the product of `shape` values
/// (callers check it with overflow-checked arithmetic); anything else is returned unchanged.
pub(crate) fn fortran_to_c<T: Copy + Default>(shape: &[usize], data: Vec<T>) -> Vec<T> {
    if shape.len() < 2 || data.is_empty() || element_count(shape) != Some(data.len()) {
        return data;
    }
    let mut out = vec![T::default(); data.len()];
    let mut c_strides = vec![1usize; shape.len()];
    for d in (0..shape.len() - 1).rev() {
        c_strides[d] = c_strides[d + 1] * shape[d + 1];
    }
    let mut idx = vec![0usize; shape.len()];
    for &v in &data {
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

/// Reads a whole `.npy` file: a float array or an object array of float arrays.
pub fn read(path: &Path) -> Result<NpyContent, ReadError> {
    let bytes = std::fs::read(path).map_err(|e| err(path, e.to_string()))?;
    parse(&bytes, path)
}

/// Parses `.npy` bytes holding a float array or an object array of float arrays (`path` only
/// names errors). Integer arrays are an error: use [`parse_numeric`].
pub fn parse(bytes: &[u8], path: &Path) -> Result<NpyContent, ReadError> {
    let header = parse_header(bytes, path)?;
    let body = &bytes[header.data_offset..];
    if header.descr == "|O" || header.descr == "O" {
        return objects::read_object_array(body, path).map(NpyContent::Objects);
    }
    match Dtype::parse(&header.descr) {
        Some(dtype) if dtype.kind == Kind::Float => {
            let raw = element_bytes(&header, dtype.size, body, path)?;
            let data = dtype.floats(raw).unwrap_or_default();
            Ok(NpyContent::Float(Array {
                data: maybe_fortran(&header, data),
                shape: header.shape,
            }))
        }
        _ => Err(err(
            path,
            format!(
                "header field 'descr' {:?}: expected a float16/32/64 or object array",
                brief(&header.descr)
            ),
        )),
    }
}

fn maybe_fortran<T: Copy + Default>(header: &NpyHeader, data: Vec<T>) -> Vec<T> {
    if header.fortran_order {
        fortran_to_c(&header.shape, data)
    } else {
        data
    }
}

/// Parses `.npy` bytes holding a numeric array of any dtype: floats as `f32`, integers and
/// booleans as `i64` (`path` only names errors).
pub fn parse_numeric(bytes: &[u8], path: &Path) -> Result<Numeric, ReadError> {
    let header = parse_header(bytes, path)?;
    let body = &bytes[header.data_offset..];
    let dtype = Dtype::parse(&header.descr).ok_or_else(|| {
        err(
            path,
            format!(
                "header field 'descr' {:?}: not a numeric dtype",
                brief(&header.descr)
            ),
        )
    })?;
    let raw = element_bytes(&header, dtype.size, body, path)?;
    match dtype.floats(raw) {
        Some(data) => Ok(Numeric::F32(Array {
            data: maybe_fortran(&header, data),
            shape: header.shape,
        })),
        None => {
            let data = dtype
                .ints(raw)
                .unwrap_or_else(|| Ok(Vec::new()))
                .map_err(|e| err(path, format!("dtype {}: {e}", header.descr)))?;
            Ok(Numeric::I64(Array {
                data: maybe_fortran(&header, data),
                shape: header.shape,
            }))
        }
    }
}

/// `header` (the dict text) framed as a format-1.0 `.npy` header, padded so that the data
/// starts at a multiple of 64 bytes.
fn framed_header(dict: &str, extra: usize) -> Vec<u8> {
    let mut header = dict.to_string();
    // magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + extra);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    // The dict is a few dozen characters plus the shape: far below 65535.
    out.extend_from_slice(&(header.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}

/// The Python tuple literal of `shape` (`(3,)` for one dimension).
fn shape_literal(shape: &[usize]) -> String {
    match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Serialises a C-order `f32` array as `.npy` (format 1.0, `<f4`) bytes. `data` must hold the
/// product of `shape` values; callers check it.
pub fn f32_bytes(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': {}, }}",
        shape_literal(shape)
    );
    let mut out = framed_header(&dict, data.len() * 4);
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Serialises float arrays `[L_i, width]` (row-major `f32`) as a numpy object-array `.npy`,
/// structured as `np.save(np.array(items, dtype=object))` writes it under numpy 1.x (pickle
/// protocol 3): `np.load(path, allow_pickle=True)` reads it back.
pub fn object_array_bytes(items: &[Vec<f32>], width: usize) -> Vec<u8> {
    let pickle = objects::object_array_pickle(items, width);
    let dict = format!(
        "{{'descr': '|O', 'fortran_order': False, 'shape': ({},), }}",
        items.len()
    );
    let mut out = framed_header(&dict, pickle.len());
    out.extend_from_slice(&pickle);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let dict = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        let mut out = framed_header(&dict, data.len());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn f32_round_trips_with_an_aligned_header() -> Result<(), ReadError> {
        let data: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.0).collect();
        let bytes = f32_bytes(&[2, 3], &data);
        assert_eq!((bytes.len() - 6 * 4) % 64, 0);
        let NpyContent::Float(a) = parse(&bytes, Path::new("m.npy"))? else {
            return Err(ReadError::new("m.npy", "expected floats"));
        };
        assert_eq!((a.shape, a.data), (vec![2, 3], data));
        Ok(())
    }

    #[test]
    fn big_endian_and_half_floats_decode() -> Result<(), ReadError> {
        let be: Vec<u8> = [1.5f64, -2.0]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let NpyContent::Float(a) = parse(&npy(">f8", false, "(2,)", &be), Path::new("b"))? else {
            return Err(ReadError::new("b", "expected floats"));
        };
        assert_eq!(a.data, vec![1.5, -2.0]);
        // 1.0, -2.0 and the smallest subnormal as IEEE half.
        let h: Vec<u8> = [0x3c00u16, 0xc000, 0x0001]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let NpyContent::Float(a) = parse(&npy("<f2", false, "(3,)", &h), Path::new("h"))? else {
            return Err(ReadError::new("h", "expected floats"));
        };
        assert_eq!(a.data, vec![1.0, -2.0, 2f32.powi(-24)]);
        Ok(())
    }

    #[test]
    fn fortran_order_is_transposed_to_c_order() {
        // [[0,1,2],[3,4,5]] stored column-major.
        assert_eq!(
            fortran_to_c(&[2, 3], vec![0, 3, 1, 4, 2, 5]),
            vec![0, 1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn integers_and_booleans_read_as_i64() -> Result<(), ReadError> {
        let raw: Vec<u8> = [-1i32, 7].iter().flat_map(|v| v.to_be_bytes()).collect();
        let a = parse_numeric(&npy(">i4", false, "(2,)", &raw), Path::new("i"))?;
        assert_eq!(
            a,
            Numeric::I64(Array {
                shape: vec![2],
                data: vec![-1, 7]
            })
        );
        let a = parse_numeric(&npy("|b1", false, "(2,)", &[0, 5]), Path::new("b"))?;
        assert_eq!(a.shape(), &[2]);
        let big = u64::MAX.to_le_bytes();
        let e = parse_numeric(&npy("<u8", false, "(1,)", &big), Path::new("u"));
        assert!(e.is_err_and(|e| e.reason.contains("element 0")));
        // Integers are not a float array.
        assert!(parse(&npy("<i8", false, "(0,)", &[]), Path::new("i")).is_err());
        Ok(())
    }

    #[test]
    fn shapes_that_overflow_or_exceed_the_data_are_errors() {
        for shape in [
            "(4611686018427387904, 4)",
            "(0, 18446744073709551615, 2)",
            "(3,)",
        ] {
            let bytes = npy("<f4", false, shape, &[0; 8]);
            let e = parse(&bytes, Path::new("s.npy")).err();
            assert!(
                e.as_ref().is_some_and(|e| e.reason.contains("'shape'")),
                "{shape}: {e:?}"
            );
        }
    }
}
