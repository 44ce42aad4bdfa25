//! Reading the arrays of a body-model file (`.npz`, compressed or not, and `.safetensors`).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

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

fn read_err(path: &Path, reason: impl std::fmt::Display) -> SmplError {
    SmplError::Read {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Reverses a Fortran-order array into C order.
fn fortran_to_c<T: Copy>(data: Vec<T>, shape: &[usize]) -> Vec<T> {
    if shape.len() < 2 {
        return data;
    }
    let n = shape.len();
    // Element at C index (i0..i_{n-1}) lives at Fortran offset sum_k i_k * prod_{m<k} shape_m.
    let mut fstride = vec![1usize; n];
    for k in 1..n {
        fstride[k] = fstride[k - 1] * shape[k - 1];
    }
    let mut out = Vec::with_capacity(data.len());
    let mut idx = vec![0usize; n];
    for _ in 0..data.len() {
        let off: usize = idx.iter().zip(&fstride).map(|(i, s)| i * s).sum();
        out.push(data[off]);
        for k in (0..n).rev() {
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out
}

fn parse_npy(bytes: &[u8], path: &Path, key: &str) -> Result<Array> {
    use npyz::{DType, TypeChar};
    let bad = |reason: String| SmplError::InvalidArray {
        path: path.to_path_buf(),
        key: key.to_string(),
        reason,
    };
    let npy = npyz::NpyFile::new(bytes).map_err(|e| bad(format!("not a .npy member: {e}")))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let fortran = matches!(npy.order(), npyz::Order::Fortran);
    let DType::Plain(ts) = npy.dtype() else {
        return Err(bad(format!("unsupported dtype {:?}", npy.dtype())));
    };
    let size = ts.size_field();
    let conv = |e: std::io::Error| bad(format!("cannot decode {ts}: {e}"));
    let data = match (ts.type_char(), size) {
        (TypeChar::Float, 4) => ArrayData::F32(npy.into_vec::<f32>().map_err(conv)?),
        (TypeChar::Float, 8) => ArrayData::F32(
            npy.into_vec::<f64>()
                .map_err(conv)?
                .into_iter()
                .map(|v| v as f32)
                .collect(),
        ),
        (TypeChar::Int, 8) => ArrayData::I64(npy.into_vec::<i64>().map_err(conv)?),
        (TypeChar::Int, 4) => ArrayData::I64(
            npy.into_vec::<i32>()
                .map_err(conv)?
                .into_iter()
                .map(i64::from)
                .collect(),
        ),
        (TypeChar::Uint, 8) => ArrayData::I64(
            npy.into_vec::<u64>()
                .map_err(conv)?
                .into_iter()
                .map(|v| v as i64)
                .collect(),
        ),
        (TypeChar::Uint, 4) => ArrayData::I64(
            npy.into_vec::<u32>()
                .map_err(conv)?
                .into_iter()
                .map(i64::from)
                .collect(),
        ),
        _ => return Err(bad(format!("unsupported dtype {ts}"))),
    };
    let data = match (data, fortran) {
        (d, false) => d,
        (ArrayData::F32(v), true) => ArrayData::F32(fortran_to_c(v, &shape)),
        (ArrayData::I64(v), true) => ArrayData::I64(fortran_to_c(v, &shape)),
    };
    Ok(Array { shape, data })
}

/// Reads every array of a numpy `.npz` archive (stored or deflate-compressed members).
pub(crate) fn read_npz(path: &Path) -> Result<HashMap<String, Array>> {
    let file = std::fs::File::open(path).map_err(|e| read_err(path, e))?;
    read_npz_from(std::io::BufReader::new(file), path)
}

/// Reads every `.npy` member of an `.npz` archive from `reader`; `path` names it in errors.
pub(crate) fn read_npz_from(
    reader: impl std::io::Read + std::io::Seek,
    path: &Path,
) -> Result<HashMap<String, Array>> {
    let mut zip = zip::ZipArchive::new(reader)
        .map_err(|e| read_err(path, format!("not a zip/npz archive: {e}")))?;
    let mut out = HashMap::new();
    for i in 0..zip.len() {
        let mut member = zip.by_index(i).map_err(|e| read_err(path, e))?;
        let name = member.name().to_string();
        let Some(key) = name.strip_suffix(".npy") else {
            continue;
        };
        let key = key.to_string();
        let mut bytes = Vec::with_capacity(member.size() as usize);
        member
            .read_to_end(&mut bytes)
            .map_err(|e| read_err(path, format!("member {name}: {e}")))?;
        let array = parse_npy(&bytes, path, &key)?;
        out.insert(key, array);
    }
    Ok(out)
}

/// Reads every tensor of a `.safetensors` file (F32, F64, F16, BF16, I64, I32, U32 accepted).
pub(crate) fn read_safetensors(path: &Path) -> Result<HashMap<String, Array>> {
    let bytes = std::fs::read(path).map_err(|e| read_err(path, e))?;
    read_safetensors_bytes(&bytes, path)
}

/// Reads every tensor of `.safetensors` bytes; `path` names them in errors.
pub(crate) fn read_safetensors_bytes(bytes: &[u8], path: &Path) -> Result<HashMap<String, Array>> {
    use safetensors::Dtype;
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| read_err(path, e))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let shape = view.shape().to_vec();
        let f4 = |c: &[u8]| [c[0], c[1], c[2], c[3]];
        let data = match view.dtype() {
            Dtype::F32 => ArrayData::F32(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(f4(c)))
                    .collect(),
            ),
            Dtype::F64 => ArrayData::F32(
                raw.chunks_exact(8)
                    .map(|c| {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(c);
                        f64::from_le_bytes(b) as f32
                    })
                    .collect(),
            ),
            Dtype::F16 | Dtype::BF16 => {
                let bf = view.dtype() == Dtype::BF16;
                ArrayData::F32(
                    raw.chunks_exact(2)
                        .map(|c| {
                            let bits = u16::from_le_bytes([c[0], c[1]]);
                            if bf {
                                f32::from_bits(u32::from(bits) << 16)
                            } else {
                                half_to_f32(bits)
                            }
                        })
                        .collect(),
                )
            }
            Dtype::I64 => ArrayData::I64(
                raw.chunks_exact(8)
                    .map(|c| {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(c);
                        i64::from_le_bytes(b)
                    })
                    .collect(),
            ),
            Dtype::I32 => ArrayData::I64(
                raw.chunks_exact(4)
                    .map(|c| i64::from(i32::from_le_bytes(f4(c))))
                    .collect(),
            ),
            Dtype::U32 => ArrayData::I64(
                raw.chunks_exact(4)
                    .map(|c| i64::from(u32::from_le_bytes(f4(c))))
                    .collect(),
            ),
            other => {
                return Err(SmplError::InvalidArray {
                    path: path.to_path_buf(),
                    key: name,
                    reason: format!("unsupported dtype {other:?}"),
                });
            }
        };
        out.insert(name, Array { shape, data });
    }
    Ok(out)
}

/// IEEE half -> f32 (for F16 safetensors).
fn half_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut m = m;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((m & 0x3ff) << 13)
        }
        (31, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fortran_order_is_transposed_to_c_order() {
        // A 2x3 matrix [[0,1,2],[3,4,5]] in Fortran order is stored column-major.
        let f = vec![0, 3, 1, 4, 2, 5];
        assert_eq!(fortran_to_c(f, &[2, 3]), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn half_floats_decode() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(0x0001), 2f32.powi(-24));
    }
}
