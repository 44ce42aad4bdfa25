//! Reading a `torch.save`d single tensor (zip archive: `<dir>/data.pkl` + `<dir>/data/<key>`)
//! in pure Rust. candle's `PthTensors` only lists tensors found inside a dict, so the
//! reference's statistics files (`tmr-rifke-mean.pt`, whose top-level object is the tensor
//! itself) come back empty from it; here the pickle is run by the hardened [`crate::pickle`]
//! machine and the `_rebuild_tensor_v2` call is resolved by hand.
//!
//! Malformed archives are errors naming the file and the field at fault, never a panic or an
//! allocation sized by an unchecked field: the tensor's shape, strides and offset are checked
//! against the storage's declared size, and that against the bytes the archive stores, before
//! any buffer is allocated.

use std::path::Path;

use candle::{DType, Device, Tensor};

use crate::error::{ReprError, Result};
use tensor_io::pickle::{Value, read_member, read_storage, stored_tensor, unpickle};

fn read_err(path: &Path, reason: impl std::fmt::Display) -> ReprError {
    ReprError::Read {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Reads the single tensor of a `torch.save(tensor, path)` file as float32 on `device`.
///
/// # Errors
/// [`ReprError::Read`] naming the file and the field at fault when the archive, its pickle
/// or the tensor record is malformed, or the storage type is neither float32 nor float64.
pub fn read_single_tensor(path: &Path, device: &Device) -> Result<Tensor> {
    let file = std::fs::File::open(path).map_err(|e| read_err(path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| read_err(path, format!("not a torch zip archive: {e}")))?;
    let pkl_name = zip
        .file_names()
        .find(|n| n.ends_with("data.pkl"))
        .map(str::to_string)
        .ok_or_else(|| read_err(path, "no data.pkl member"))?;
    let dir = pkl_name.trim_end_matches(".pkl").to_string();
    let pkl = read_member(&mut zip, &pkl_name).map_err(|e| read_err(path, e))?;
    let obj = unpickle(&pkl).map_err(|e| read_err(path, format!("bad pickle {pkl_name}: {e}")))?;
    let info = stored_tensor(&obj)
        .map_err(|e| read_err(path, format!("bad tensor record: {e}")))?
        .ok_or_else(|| {
            let kind = match &obj {
                Value::Dict(_) => {
                    "a dict (a state dict? read it with tensor_io::torch::read_state_dict)".into()
                }
                other => other.brief(),
            };
            read_err(path, format!("top-level object is {kind}, not a tensor"))
        })?;
    if !matches!(info.dtype, Some(DType::F32 | DType::F64)) {
        return Err(read_err(
            path,
            format!(
                "unsupported storage dtype {} (expected FloatStorage or DoubleStorage)",
                info.storage_class
            ),
        ));
    }
    // Every element is read at most once: more elements than stored (zero strides) would let
    // a few bytes expand into an arbitrarily large tensor.
    let span = info.end - info.offset;
    if info.elem_count > span {
        return Err(read_err(
            path,
            format!(
                "tensor of size {:?} has {} elements but its stride {:?} spans {span} stored \
                 elements",
                info.shape, info.elem_count, info.stride
            ),
        ));
    }
    let raw = read_storage(&mut zip, &dir, &info).map_err(|e| read_err(path, e))?;
    let storage: Vec<f32> = match info.dtype {
        Some(DType::F64) => raw
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                f64::from_le_bytes(b) as f32
            })
            .collect(),
        _ => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    };
    let dims = info.shape.clone();
    let stride = &info.stride;
    let mut out = Vec::with_capacity(info.elem_count);
    let mut idx = vec![0usize; dims.len()];
    for _ in 0..info.elem_count {
        // Offsets relative to `info.offset`; bounded by the checked extent.
        let off: usize = idx.iter().zip(stride).map(|(i, s)| i * s).sum();
        let v = *storage.get(off).ok_or_else(|| {
            read_err(
                path,
                format!("storage too small for shape {dims:?} / stride {stride:?}"),
            )
        })?;
        out.push(v);
        for k in (0..dims.len()).rev() {
            idx[k] += 1;
            if idx[k] < dims[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    Ok(Tensor::from_vec(out, dims, device)?)
}
