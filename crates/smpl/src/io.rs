//! Reading the arrays of a body-model file (`.npz`, compressed or not, and `.safetensors`)
//! through the workspace's hardened readers ([`tensor_io::npz`], [`tensor_io::safetensors`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tensor_io::npy::Numeric;

use crate::error::{Result, SmplError};

/// One array of a model file, converted to `f32` or `i64`.
#[derive(Debug, Clone)]
pub(crate) struct Array {
    pub shape: Vec<usize>,
    pub data: ArrayData,
}

#[derive(Debug, Clone)]
pub(crate) enum ArrayData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

fn read_err(e: tensor_io::ReadError) -> SmplError {
    SmplError::Read {
        path: e.path,
        reason: e.reason,
    }
}

fn arrays(numeric: BTreeMap<String, Numeric>) -> HashMap<String, Array> {
    numeric
        .into_iter()
        .map(|(key, n)| {
            let array = match n {
                Numeric::F32(a) => Array {
                    shape: a.shape,
                    data: ArrayData::F32(a.data),
                },
                Numeric::I64(a) => Array {
                    shape: a.shape,
                    data: ArrayData::I64(a.data),
                },
            };
            (key, array)
        })
        .collect()
}

/// Reads every array of a numpy `.npz` archive (stored or deflate-compressed members).
pub(crate) fn read_npz(path: &Path) -> Result<HashMap<String, Array>> {
    tensor_io::npz::read(path).map(arrays).map_err(read_err)
}

/// Reads every `.npy` member of an `.npz` archive from `reader`; `path` names it in errors.
pub(crate) fn read_npz_from(
    reader: impl std::io::Read + std::io::Seek,
    path: &Path,
) -> Result<HashMap<String, Array>> {
    tensor_io::npz::parse(reader, path)
        .map(arrays)
        .map_err(read_err)
}

/// Reads every tensor of a `.safetensors` file (float, integer and boolean dtypes).
pub(crate) fn read_safetensors(path: &Path) -> Result<HashMap<String, Array>> {
    let bytes = std::fs::read(path).map_err(|e| SmplError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    read_safetensors_bytes(&bytes, path)
}

/// Reads every tensor of `.safetensors` bytes; `path` names them in errors.
pub(crate) fn read_safetensors_bytes(bytes: &[u8], path: &Path) -> Result<HashMap<String, Array>> {
    tensor_io::safetensors::parse_numeric(bytes, path)
        .map(arrays)
        .map_err(read_err)
}
