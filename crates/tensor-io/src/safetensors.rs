//! safetensors files: read as candle tensors ([`load`], [`load_bytes`]) or as plain arrays
//! ([`parse_numeric`]), written atomically ([`write`](fn@write)).
//!
//! The `safetensors` crate validates the header (its length against the file, every tensor's
//! offsets against the data and its shape's byte count with overflow-checked arithmetic) before
//! any tensor is materialised; this module adds errors that name the file and the tensor.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle::{Device, Tensor};
use safetensors::{Dtype, SafeTensors};

use crate::ReadError;
use crate::npy::{Array, Numeric};

/// Reads every tensor of the safetensors file `path` onto `device`.
pub fn load(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, ReadError> {
    let bytes = std::fs::read(path).map_err(|e| ReadError::new(path, e.to_string()))?;
    load_bytes(&bytes, path, device)
}

/// Reads every tensor of safetensors `bytes` onto `device`; `path` names them in errors.
pub fn load_bytes(
    bytes: &[u8],
    path: &Path,
    device: &Device,
) -> Result<HashMap<String, Tensor>, ReadError> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| ReadError::new(path, format!("not a valid safetensors file: {e}")))?;
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let t = candle::safetensors::Load::load(&view, device).map_err(|e| {
                ReadError::new(path, format!("tensor {name} ({:?}): {e}", view.dtype()))
            })?;
            Ok((name, t))
        })
        .collect()
}

/// Reads every tensor of safetensors `bytes` as a plain array: floats (F16, BF16, F32, F64) as
/// `f32`, integers and booleans as `i64`; other dtypes are an error naming the tensor.
pub fn parse_numeric(bytes: &[u8], path: &Path) -> Result<BTreeMap<String, Numeric>, ReadError> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| ReadError::new(path, format!("not a valid safetensors file: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let shape = view.shape().to_vec();
        let le2 = |c: &[u8]| [c[0], c[1]];
        let le4 = |c: &[u8]| [c[0], c[1], c[2], c[3]];
        let le8 = |c: &[u8]| [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
        let floats = |data: Vec<f32>| {
            Numeric::F32(Array {
                shape: shape.clone(),
                data,
            })
        };
        let ints = |data: Vec<i64>| {
            Numeric::I64(Array {
                shape: shape.clone(),
                data,
            })
        };
        let array = match view.dtype() {
            Dtype::F32 => floats(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(le4(c)))
                    .collect(),
            ),
            Dtype::F64 => floats(
                raw.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(le8(c)) as f32)
                    .collect(),
            ),
            Dtype::F16 => floats(
                raw.chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes(le2(c)).to_f32())
                    .collect(),
            ),
            Dtype::BF16 => floats(
                raw.chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes(le2(c)).to_f32())
                    .collect(),
            ),
            Dtype::BOOL => ints(raw.iter().map(|&b| i64::from(b != 0)).collect()),
            Dtype::U8 => ints(raw.iter().map(|&b| i64::from(b)).collect()),
            Dtype::I8 => ints(raw.iter().map(|&b| i64::from(b as i8)).collect()),
            Dtype::I16 => ints(
                raw.chunks_exact(2)
                    .map(|c| i64::from(i16::from_le_bytes(le2(c))))
                    .collect(),
            ),
            Dtype::U16 => ints(
                raw.chunks_exact(2)
                    .map(|c| i64::from(u16::from_le_bytes(le2(c))))
                    .collect(),
            ),
            Dtype::I32 => ints(
                raw.chunks_exact(4)
                    .map(|c| i64::from(i32::from_le_bytes(le4(c))))
                    .collect(),
            ),
            Dtype::U32 => ints(
                raw.chunks_exact(4)
                    .map(|c| i64::from(u32::from_le_bytes(le4(c))))
                    .collect(),
            ),
            Dtype::I64 => ints(
                raw.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(le8(c)))
                    .collect(),
            ),
            other => {
                return Err(ReadError::new(
                    path,
                    format!("tensor {name}: unsupported dtype {other:?}"),
                ));
            }
        };
        out.insert(name, array);
    }
    Ok(out)
}

/// Serialises `tensors` (any device; copied to the CPU) as safetensors bytes.
pub fn to_bytes(tensors: &HashMap<String, Tensor>) -> candle::Result<Vec<u8>> {
    let cpu = tensors
        .iter()
        .map(|(k, t)| Ok((k.as_str(), t.to_device(&Device::Cpu)?)))
        .collect::<candle::Result<BTreeMap<&str, Tensor>>>()?;
    safetensors::serialize(cpu, None).map_err(|e| candle::Error::Msg(e.to_string()))
}

/// Writes `tensors` to the safetensors file `path` atomically
/// ([`atomic::write`](fn@crate::atomic::write)): a reader sees the old file or the complete new
/// one.
pub fn write(path: &Path, tensors: &HashMap<String, Tensor>) -> std::io::Result<()> {
    let bytes = to_bytes(tensors).map_err(std::io::Error::other)?;
    crate::atomic::write(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_round_trip_through_an_atomic_write() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("tensor-io-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("t.safetensors");
        let mut m = HashMap::new();
        m.insert(
            "a".to_string(),
            Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu)?,
        );
        m.insert("i".to_string(), Tensor::new(&[7i64, -1], &Device::Cpu)?);
        write(&path, &m)?;
        let back = load(&path, &Device::Cpu)?;
        assert_eq!(
            back["a"].to_vec2::<f32>()?,
            vec![vec![1.0, 2.0], vec![3.0, 4.0]]
        );
        let plain = parse_numeric(&std::fs::read(&path)?, &path)?;
        assert_eq!(
            plain.get("i"),
            Some(&Numeric::I64(Array {
                shape: vec![2],
                data: vec![7, -1]
            }))
        );
        let e = load_bytes(
            b"\xff\xff\xff\xff\xff\xff\xff\x7f",
            Path::new("x"),
            &Device::Cpu,
        );
        assert!(e.is_err_and(|e| e.path == Path::new("x")));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
