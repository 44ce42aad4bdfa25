//! Reading a `torch.save`d single tensor (zip archive: `<dir>/data.pkl` + `<dir>/data/<key>`)
//! in pure Rust. candle's `PthTensors` only lists tensors found inside a dict, so the
//! reference's statistics files (`tmr-rifke-mean.pt`, whose top-level object is the tensor
//! itself) come back empty from it; here the pickle is parsed with candle's pickle machine and
//! the `_rebuild_tensor_v2` call is resolved by hand.

use std::io::Read;
use std::path::Path;

use candle::pickle::{Object, Stack};
use candle::{DType, Device, Tensor};

use crate::error::{ReprError, Result};

fn read_err(path: &Path, reason: impl std::fmt::Display) -> ReprError {
    ReprError::Read {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Reads the single tensor of a `torch.save(tensor, path)` file as float32 on `device`.
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
    let mut pkl = Vec::new();
    zip.by_name(&pkl_name)
        .map_err(|e| read_err(path, e))?
        .read_to_end(&mut pkl)
        .map_err(|e| read_err(path, e))?;
    let mut stack = Stack::empty();
    stack
        .read_loop(&mut std::io::Cursor::new(pkl))
        .map_err(|e| read_err(path, format!("bad pickle: {e}")))?;
    let obj = stack
        .finalize()
        .map_err(|e| read_err(path, format!("bad pickle: {e}")))?;
    let kind = match &obj {
        Object::Dict(_) => "a dict (a state dict? use candle::pickle::PthTensors)",
        Object::Reduce { .. } => "an unsupported reduce call",
        _ => "not a tensor",
    };
    let info = obj
        .into_tensor_info(Object::Unicode("tensor".into()), Path::new(&dir))
        .map_err(|e| read_err(path, format!("not a single tensor: {e}")))?
        .ok_or_else(|| read_err(path, format!("top-level object is {kind}")))?;
    let mut raw = Vec::new();
    zip.by_name(&info.path)
        .map_err(|e| read_err(path, format!("storage {}: {e}", info.path)))?
        .read_to_end(&mut raw)
        .map_err(|e| read_err(path, e))?;
    let storage: Vec<f32> = match info.dtype {
        DType::F32 => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::F64 => raw
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                f64::from_le_bytes(b) as f32
            })
            .collect(),
        other => {
            return Err(read_err(
                path,
                format!("unsupported storage dtype {other:?}"),
            ));
        }
    };
    let layout = &info.layout;
    let dims = layout.dims().to_vec();
    let stride = layout.stride();
    let start = layout.start_offset() / info.dtype.size_in_bytes();
    let n: usize = dims.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; dims.len()];
    for _ in 0..n {
        let off = start + idx.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>();
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
