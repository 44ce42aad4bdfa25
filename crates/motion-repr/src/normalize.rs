//! Feature standardisation `(x - mean) / std` with the reference's statistics.
//!
//! The reference (Petrovich et al., TMR, ICCV 2023, and the diffusion-transformer text-to-motion
//! models built on it) ships `tmr-rifke-{mean,std}.pt` (205-d) and normalises both the
//! diffusion features and the evaluator's motion input with them. Padded frames are set to zero
//! AFTER normalisation.

use std::path::Path;

use candle::{DType, Device, Tensor};

use crate::error::{ReprError, Result, shape_err};

/// Per-feature mean and standard deviation.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use candle::{Device, Tensor};
/// let mean = Tensor::new(&[1.0f32, 2.0], &Device::Cpu)?;
/// let std = Tensor::new(&[2.0f32, 4.0], &Device::Cpu)?;
/// let n = motion_repr::Normalizer::new(mean, std)?;
/// let x = Tensor::new(&[[3.0f32, 2.0]], &Device::Cpu)?;
/// assert_eq!(n.normalize(&x)?.to_vec2::<f32>()?, vec![vec![1.0, 0.0]]);
/// assert_eq!(n.unnormalize(&n.normalize(&x)?)?.to_vec2::<f32>()?, vec![vec![3.0, 2.0]]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Normalizer {
    mean: Tensor,
    std: Tensor,
}

fn stats_err(source: &str, reason: String) -> ReprError {
    ReprError::Stats {
        source_name: source.to_string(),
        reason,
    }
}

fn check_vector(source: &str, what: &str, t: &Tensor) -> Result<Vec<f32>> {
    if t.rank() != 1 {
        return Err(stats_err(
            source,
            format!("{what} must be 1-D, got shape {:?}", t.dims()),
        ));
    }
    let v = t.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(stats_err(
            source,
            format!("{what}[{i}] = {} is not finite", v[i]),
        ));
    }
    Ok(v)
}

fn read_vector(path: &Path, device: &Device) -> Result<Tensor> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let read_err = |reason: String| ReprError::Read {
        path: path.to_path_buf(),
        reason,
    };
    match ext.as_deref() {
        Some("pt") | Some("pth") => crate::torch_pt::read_single_tensor(path, device),
        Some("npy") => {
            let bytes = std::fs::read(path).map_err(|e| read_err(e.to_string()))?;
            let (data, shape) = parse_npy_floats(&bytes).map_err(read_err)?;
            Ok(Tensor::from_vec(data, shape, device)?)
        }
        Some("safetensors") => {
            let all =
                candle::safetensors::load(path, device).map_err(|e| read_err(e.to_string()))?;
            if all.len() != 1 {
                let mut keys: Vec<_> = all.keys().cloned().collect();
                keys.sort();
                return Err(read_err(format!(
                    "expected a single tensor, found {keys:?}; use Normalizer::from_safetensors_keys"
                )));
            }
            Ok(all
                .into_values()
                .next()
                .ok_or_else(|| read_err("empty".into()))?)
        }
        _ => Err(read_err(
            "unsupported extension (expected .pt, .npy or .safetensors)".into(),
        )),
    }
}

/// Decodes a `.npy` float array (`<f4`, `>f4`, `<f8`, `>f8`, C order or 1-D) into `f32`
/// values and its shape. The shape's element count is computed with checked arithmetic and
/// compared with the bytes present before anything is allocated; errors name the field.
fn parse_npy_floats(bytes: &[u8]) -> std::result::Result<(Vec<f32>, Vec<usize>), String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (no \\x93NUMPY magic)".into());
    }
    let (len, start) = match bytes[6] {
        1 => (
            usize::from(u16::from_le_bytes([bytes[8], bytes[9]])),
            10usize,
        ),
        2 | 3 => match bytes.get(8..12) {
            Some(b) => (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12),
            None => return Err("truncated .npy header length".into()),
        },
        v => return Err(format!(".npy format version {v} is not supported")),
    };
    let header = bytes
        .get(start..start.saturating_add(len))
        .ok_or_else(|| format!(".npy header length {len} exceeds the file"))?;
    let header = std::str::from_utf8(header).map_err(|_| ".npy header is not text".to_string())?;
    let value = |key: &str| {
        let pat = format!("'{key}':");
        header
            .find(&pat)
            .map(|at| header[at + pat.len()..].trim_start())
            .ok_or_else(|| format!(".npy header has no '{key}'"))
    };
    let descr = value("descr")?
        .strip_prefix('\'')
        .and_then(|v| v.split('\'').next())
        .ok_or_else(|| ".npy header field 'descr' is not a string".to_string())?;
    let fortran = value("fortran_order")?.starts_with("True");
    let shape_text = value("shape")?
        .strip_prefix('(')
        .and_then(|v| v.split(')').next())
        .ok_or_else(|| ".npy header field 'shape' is not a tuple".to_string())?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!(".npy header field 'shape' has a bad entry {s:?}"))
        })
        .collect::<std::result::Result<Vec<usize>, String>>()?;
    if fortran && shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err(
            ".npy header field 'fortran_order': Fortran-order arrays are not supported".into(),
        );
    }
    let (size, little) = match descr {
        "<f4" | "=f4" => (4, true),
        ">f4" => (4, false),
        "<f8" | "=f8" => (8, true),
        ">f8" => (8, false),
        other => {
            return Err(format!(
                ".npy header field 'descr' {other:?}: expected float32 or float64"
            ));
        }
    };
    // The product of the non-zero dimensions must fit too: candle computes strides from it.
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d.max(1)))
        .ok_or_else(|| format!(".npy header field 'shape' {shape:?} overflows"))?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!(".npy header field 'shape' {shape:?} overflows"))?;
    let body = &bytes[start + len..];
    let needed = count
        .checked_mul(size)
        .filter(|&n| n <= body.len())
        .ok_or_else(|| {
            format!(
                ".npy header field 'shape' {shape:?} needs {count} x {size} bytes, the file holds {}",
                body.len()
            )
        })?;
    let data = body[..needed]
        .chunks_exact(size)
        .map(|c| match (size, little) {
            (4, true) => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            (4, false) => f32::from_be_bytes([c[0], c[1], c[2], c[3]]),
            (_, true) => {
                f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
            }
            (_, false) => {
                f64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
            }
        })
        .collect();
    Ok((data, shape))
}

impl Normalizer {
    /// From mean and std vectors `[D]`; rejects non-finite values, zero std and size mismatch.
    pub fn new(mean: Tensor, std: Tensor) -> Result<Self> {
        Self::checked("tensors", mean, std)
    }

    fn checked(source: &str, mean: Tensor, std: Tensor) -> Result<Self> {
        check_vector(source, "mean", &mean)?;
        let s = check_vector(source, "std", &std)?;
        if mean.dims() != std.dims() {
            return Err(stats_err(
                source,
                format!(
                    "mean {:?} and std {:?} differ in size",
                    mean.dims(),
                    std.dims()
                ),
            ));
        }
        if let Some(i) = s.iter().position(|&x| x == 0.0) {
            return Err(stats_err(source, format!("std[{i}] is zero")));
        }
        Ok(Self {
            mean: mean.to_dtype(DType::F32)?,
            std: std.to_dtype(DType::F32)?,
        })
    }

    /// Reads mean and std from two files, each `.pt` (a `torch.save`d tensor, as the reference
    /// ships them), `.npy` or `.safetensors` (holding exactly one tensor).
    pub fn from_files(
        mean: impl AsRef<Path>,
        std: impl AsRef<Path>,
        device: &Device,
    ) -> Result<Self> {
        let (mp, sp) = (mean.as_ref(), std.as_ref());
        let source = format!("{} / {}", mp.display(), sp.display());
        Self::checked(&source, read_vector(mp, device)?, read_vector(sp, device)?)
    }

    /// Reads `<stem>-mean.<ext>` and `<stem>-std.<ext>` in `dir`, trying `.pt`, `.npy` then
    /// `.safetensors` (the reference ships `tmr-rifke-mean.pt` / `tmr-rifke-std.pt`: stem
    /// `"tmr-rifke"`).
    pub fn from_stem(dir: impl AsRef<Path>, stem: &str, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        for ext in ["pt", "npy", "safetensors"] {
            let mean = dir.join(format!("{stem}-mean.{ext}"));
            let std = dir.join(format!("{stem}-std.{ext}"));
            if mean.exists() && std.exists() {
                return Self::from_files(mean, std, device);
            }
        }
        Err(ReprError::Read {
            path: dir.join(format!("{stem}-mean.pt")),
            reason: format!("no {stem}-{{mean,std}}.{{pt,npy,safetensors}} pair in this folder"),
        })
    }

    /// Reads mean and std from one `.safetensors` file under the given keys.
    pub fn from_safetensors_keys(
        path: impl AsRef<Path>,
        mean_key: &str,
        std_key: &str,
        device: &Device,
    ) -> Result<Self> {
        let path = path.as_ref();
        let mut all = candle::safetensors::load(path, device).map_err(|e| ReprError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut take = |k: &str| {
            all.remove(k).ok_or_else(|| ReprError::Read {
                path: path.to_path_buf(),
                reason: format!("no tensor {k:?}"),
            })
        };
        let (m, s) = (take(mean_key)?, take(std_key)?);
        Self::checked(&path.display().to_string(), m, s)
    }

    /// The mean `[D]`.
    pub fn mean(&self) -> &Tensor {
        &self.mean
    }

    /// The standard deviation `[D]`.
    pub fn std(&self) -> &Tensor {
        &self.std
    }

    /// Feature width `D`.
    pub fn dim(&self) -> usize {
        self.mean.dims()[0]
    }

    /// A copy on `device`.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        Ok(Self {
            mean: self.mean.to_device(device)?,
            std: self.std.to_device(device)?,
        })
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        let d = x.dims();
        if d.last() != Some(&self.dim()) {
            return Err(ReprError::FeatureWidth {
                what: "normalizer input".into(),
                expected: self.dim(),
                got: d.last().copied().unwrap_or(0),
                shape: d.to_vec(),
            });
        }
        Ok(())
    }

    /// CPU float32 fast path: `f(x, mean, std)` element-wise in one pass, padded frames (mask
    /// 0) set to zero. `None` on other devices / dtypes (the tensor-op path is used there).
    fn host_map(
        &self,
        x: &Tensor,
        frame_mask: Option<&Tensor>,
        f: impl Fn(f32, f32, f32) -> f32,
    ) -> Result<Option<Tensor>> {
        if !x.device().is_cpu() || x.dtype() != DType::F32 {
            return Ok(None);
        }
        let d = self.dim();
        let mean = self.mean.to_device(&Device::Cpu)?.to_vec1::<f32>()?;
        let std = self.std.to_device(&Device::Cpu)?.to_vec1::<f32>()?;
        let mask = match frame_mask {
            Some(m) => Some(m.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        let mut v = x.flatten_all()?.to_vec1::<f32>()?;
        for (row, chunk) in v.chunks_exact_mut(d).enumerate() {
            if mask.as_ref().is_some_and(|m| m[row] == 0.0) {
                chunk.fill(0.0);
                continue;
            }
            for ((y, &m), &s) in chunk.iter_mut().zip(&mean).zip(&std) {
                *y = f(*y, m, s);
            }
        }
        Ok(Some(Tensor::from_vec(v, x.shape(), x.device())?))
    }

    fn stats_for(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let dev = x.device();
        Ok((
            self.mean.to_device(dev)?.to_dtype(x.dtype())?,
            self.std.to_device(dev)?.to_dtype(x.dtype())?,
        ))
    }

    /// `(x - mean) / std` over the last dim.
    ///
    /// # Shapes
    /// `x [..., D]` -> `[..., D]`.
    pub fn normalize(&self, x: &Tensor) -> Result<Tensor> {
        self.check(x)?;
        if let Some(y) = self.host_map(x, None, |v, m, s| (v - m) / s)? {
            return Ok(y);
        }
        let (m, s) = self.stats_for(x)?;
        Ok(x.broadcast_sub(&m)?.broadcast_div(&s)?)
    }

    /// [`Normalizer::normalize`], then padded frames set to zero.
    ///
    /// # Shapes
    /// `x [B, F, D]`, `frame_mask [B, F]` (1 = valid, 0 = padding) -> `[B, F, D]`.
    pub fn normalize_masked(&self, x: &Tensor, frame_mask: &Tensor) -> Result<Tensor> {
        let d = x.dims();
        if d.len() != 3 || frame_mask.dims() != &d[..2] {
            return Err(shape_err(
                "frame_mask",
                &format!("[B, F] matching x {d:?}"),
                frame_mask.dims(),
            ));
        }
        if let Some(y) = self.host_map(x, Some(frame_mask), |v, m, s| (v - m) / s)? {
            return Ok(y);
        }
        let y = self.normalize(x)?;
        let m = frame_mask.ne(0u32)?.to_dtype(y.dtype())?.unsqueeze(2)?;
        Ok(y.broadcast_mul(&m)?)
    }

    /// `x * std + mean` over the last dim.
    ///
    /// # Shapes
    /// `x [..., D]` -> `[..., D]`.
    pub fn unnormalize(&self, x: &Tensor) -> Result<Tensor> {
        self.check(x)?;
        if let Some(y) = self.host_map(x, None, |v, m, s| v * s + m)? {
            return Ok(y);
        }
        let (m, s) = self.stats_for(x)?;
        Ok(x.broadcast_mul(&s)?.broadcast_add(&m)?)
    }
}
