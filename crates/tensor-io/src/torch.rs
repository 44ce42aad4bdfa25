//! `torch.save` archives: state dicts (and Lightning checkpoints' `state_dict`) read through the
//! hardened [`crate::pickle`] machine.

use std::collections::HashMap;
use std::io::BufReader;
use std::path::Path;

use candle::{DType, Device, Tensor};

pub use crate::ReadError;
use crate::pickle::{StoredTensor, Value, read_member, read_storage, stored_tensor, unpickle};

/// What identifies a stored tensor: storage key, offset, shape, stride, storage class.
type TensorId = (String, usize, Vec<usize>, Vec<usize>, String);

/// Reads every float tensor of a `torch.save` zip archive: the top-level dict, or its
/// `state_dict` entry when there is one. Non-tensor entries and storages candle cannot read
/// (bool, int32) are skipped silently; an archive without a dict of tensors is an error
/// (candle's own reader returns an empty map in that case).
///
/// The pickle runs on the hardened [`crate::pickle`] machine: a malformed archive, pickle or
/// tensor record is an error naming the key / field at fault, and every tensor's
/// size is checked against the bytes stored for it before a buffer is allocated. Keys that
/// name the same stored tensor (as `net.*` and `ema.online_model.*` do) share one buffer, and
/// all tensors together may take at most 8 times the archive's size (+ 64 MiB) as float32:
/// many keys viewing one large storage cannot multiply it without bound.
pub fn read_state_dict(path: &Path) -> Result<HashMap<String, Tensor>, ReadError> {
    let err = |reason: String| ReadError {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let file_len = file.metadata().map_err(|e| err(e.to_string()))?.len();
    let budget = usize::try_from(file_len)
        .unwrap_or(usize::MAX)
        .saturating_mul(8)
        .saturating_add(64 << 20);
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| err(format!("not a torch zip archive ({e})")))?;
    let pkl = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i).map(str::to_string))
        .find(|n| n.ends_with("data.pkl"))
        .ok_or_else(|| err("no data.pkl in the archive".into()))?;
    let dir = pkl.strip_suffix(".pkl").unwrap_or(&pkl).to_string();
    let obj = {
        let bytes =
            read_member(&mut zip, &pkl).map_err(|e| err(format!("cannot read {pkl}: {e}")))?;
        unpickle(&bytes).map_err(|e| err(format!("cannot unpickle {pkl}: {e}")))?
    };
    let top = dict_entries(&obj).ok_or_else(|| {
        err(format!(
            "the top-level object is {} (a bare tensor or a module?): expected a state dict",
            obj.brief()
        ))
    })?;
    let state_dict = top
        .iter()
        .find(|(k, _)| matches!(k, Value::Str(s) if s == "state_dict"))
        .map(|(_, v)| v);
    let entries = match state_dict {
        Some(v) => dict_entries(v)
            .ok_or_else(|| err(format!("`state_dict` is {}, not a dict", v.brief())))?,
        None => top,
    };
    let mut out = HashMap::new();
    // Tensors already read, by (storage key, offset, shape, stride, storage class).
    let mut read: HashMap<TensorId, Tensor> = HashMap::new();
    let mut used = 0usize;
    for (name, value) in entries {
        let Value::Str(name) = name else { continue };
        let info = match stored_tensor(value) {
            // A storage type candle does not read (bool scalars such as `ema.initted`): not
            // part of the network.
            Ok(Some(info)) if info.dtype.is_none() => continue,
            Ok(Some(info)) => info,
            // Not a tensor.
            Ok(None) => continue,
            Err(e) => return Err(err(format!("tensor {name}: {e}"))),
        };
        let id = (
            info.key.clone(),
            info.offset,
            info.shape.clone(),
            info.stride.clone(),
            info.storage_class.clone(),
        );
        if let Some(t) = read.get(&id) {
            out.insert(name.clone(), t.clone());
            continue;
        }
        // Checked in `stored_tensor`: the element count fits, and so does x4 unless it exceeds
        // every budget anyway.
        used = used.saturating_add(info.elem_count.saturating_mul(4));
        if used > budget {
            return Err(err(format!(
                "tensor {name}: the tensors read so far take {used} bytes as float32, more \
                     than the {budget} allowed for a {file_len}-byte archive"
            )));
        }
        let t = read_tensor(&mut zip, &dir, &info)
            .map_err(|e| err(format!("cannot read tensor {name}: {e}")))?;
        read.insert(id, t.clone());
        out.insert(name.clone(), t);
    }
    if out.is_empty() {
        return Err(err("the state dict holds no readable tensors".into()));
    }
    Ok(out)
}

/// The key/value pairs of a pickled dict or `OrderedDict` (possibly wrapped in a `Build`;
/// `OrderedDict()` calls are already dicts).
fn dict_entries(obj: &Value) -> Option<&[(Value, Value)]> {
    match obj {
        Value::Dict(kv) => Some(kv),
        Value::Build { object, .. } => dict_entries(object),
        _ => None,
    }
}

fn read_tensor<R: std::io::Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    dir: &str,
    info: &StoredTensor,
) -> Result<Tensor, String> {
    let dtype = info
        .dtype
        .ok_or_else(|| format!("unsupported storage type {}", info.storage_class))?;
    if !info.is_contiguous() {
        return Err(format!(
            "non-contiguous stored tensor (size {:?}, stride {:?}) is not supported",
            info.shape, info.stride
        ));
    }
    // Contiguous: the elements read are exactly `elem_count`, all inside the storage, whose
    // size was compared with the stored record by `read_storage` before reading.
    let bytes = read_storage(zip, dir, info).map_err(|e| e.to_string())?;
    let t = Tensor::from_raw_buffer(&bytes, dtype, &info.shape, &Device::Cpu)
        .map_err(|e| e.to_string())?;
    if t.dtype() == DType::F32 {
        Ok(t)
    } else {
        t.to_dtype(DType::F32).map_err(|e| e.to_string())
    }
}
