//! `.npy` reading and writing for the reference data, through the workspace's one hardened
//! reader ([`tensor_io::npy`]).
//!
//! Float arrays (`f2`, `f4`, `f8`, either byte order, C or Fortran order) are read into `f32`;
//! object arrays (`|O`, a pickle of per-caption float arrays, as written by
//! `np.save(..., allow_pickle=True)`) into their float-array elements. Errors are
//! [`DataError::Npy`] naming the file and the header field or pickle record at fault.

use std::path::Path;

pub use tensor_io::npy::{FloatArray, NpyContent, NpyHeader};

use crate::error::{DataError, Result};

fn npy_err(e: tensor_io::ReadError) -> DataError {
    DataError::Npy {
        path: e.path,
        reason: e.reason,
    }
}

/// Parses the header of a `.npy` file from its first bytes (`path` only names errors).
pub fn parse_header(bytes: &[u8], path: &Path) -> Result<NpyHeader> {
    tensor_io::npy::parse_header(bytes, path).map_err(npy_err)
}

/// Reads a whole `.npy` file: a plain float array or an object array of float arrays.
pub fn read_npy(path: &Path) -> Result<NpyContent> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_npy(&bytes, path)
}

/// Parses `.npy` bytes (`path` only names errors).
pub fn parse_npy(bytes: &[u8], path: &Path) -> Result<NpyContent> {
    tensor_io::npy::parse(bytes, path).map_err(npy_err)
}

/// Reads only the header of a `.npy` file (cheap validation of shapes and dtypes).
pub fn read_header(path: &Path) -> Result<NpyHeader> {
    tensor_io::npy::read_header(path).map_err(npy_err)
}

/// Serialises a C-order `f32` array as `.npy` (format 1.0) bytes.
pub fn npy_bytes_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    tensor_io::npy::f32_bytes(shape, data)
}

/// Serialises float arrays `[L_i, width]` (row-major `f32`) as a numpy object-array `.npy` file
/// (structured as numpy 1.x writes it: `np.load(path, allow_pickle=True)` reads it back).
pub fn object_array_npy_bytes(items: &[Vec<f32>], width: usize) -> Vec<u8> {
    tensor_io::npy::object_array_bytes(items, width)
}

/// Writes `bytes` to `path` atomically ([`tensor_io::atomic::write`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    tensor_io::atomic::write(path, bytes).map_err(|e| DataError::io(path, e))
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
    fn truncated_file_is_an_error() {
        let bytes = npy_bytes_f32(&[4, 4], &[0.0; 16]);
        let err = parse_npy(&bytes[..bytes.len() - 4], Path::new("t.npy")).expect_err("truncated");
        assert!(err.to_string().contains("t.npy"), "{err}");
    }
}
