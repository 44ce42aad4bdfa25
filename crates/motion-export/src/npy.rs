//! `.npy` export (NumPy format version 1.0, little-endian `float32`, C order), written
//! atomically.
//!
//! Format: "A Simple File Format for NumPy Arrays", NEP 1 (numpy.lib.format). Files open with
//! `numpy.load(path)`.

use std::path::Path;

use candle::{DType, Tensor};

use crate::atomic::write_atomic;
use crate::error::{Result, shape_err};

/// The `.npy` bytes of `data` with `shape` (C order; an empty `shape` is a 0-d array of one
/// element).
///
/// # Errors
/// [`ExportError::Shape`](crate::ExportError::Shape) when `data.len()` is not the product of
/// `shape`.
pub fn npy_f32_bytes(data: &[f32], shape: &[usize]) -> Result<Vec<u8>> {
    let n = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if n != Some(data.len()) {
        return Err(shape_err(
            "npy data",
            format!(
                "{shape:?} ({} elements)",
                n.map_or("overflowing".to_string(), |n| n.to_string())
            ),
            &[data.len()],
        ));
    }
    Ok(tensor_io::npy::f32_bytes(shape, data))
}

/// Writes `data` with `shape` (C order) to `path` as a `float32` `.npy` (format 1.0),
/// atomically (temporary file in the same folder, then rename; on error no partial file is
/// left).
///
/// # Errors
/// [`ExportError::Shape`](crate::ExportError::Shape) when `data.len()` is not the product of
/// `shape`; [`ExportError::Io`](crate::ExportError::Io) naming `path`.
pub fn write_npy_f32(path: impl AsRef<Path>, data: &[f32], shape: &[usize]) -> Result<()> {
    let bytes = npy_f32_bytes(data, shape)?;
    write_atomic(path.as_ref(), &bytes)
}

/// Writes `tensor` (any shape, dtype and device; converted to `float32`, C order) to `path` as
/// a `.npy`, atomically. The file's shape is `tensor.dims()`.
///
/// # Errors
/// As [`write_npy_f32`], plus [`ExportError::Candle`](crate::ExportError::Candle) when the
/// conversion fails.
pub fn write_tensor_npy(path: impl AsRef<Path>, tensor: &Tensor) -> Result<()> {
    let data = tensor
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    write_npy_f32(path, &data, tensor.dims())
}
