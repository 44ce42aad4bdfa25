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
        Some("npy") => match tensor_io::npy::read(path).map_err(|e| read_err(e.reason))? {
            tensor_io::npy::NpyContent::Float(a) => Ok(Tensor::from_vec(a.data, a.shape, device)?),
            tensor_io::npy::NpyContent::Objects(_) => {
                Err(read_err("an object array, expected a float vector".into()))
            }
        },
        Some("safetensors") => {
            let all = tensor_io::safetensors::load(path, device).map_err(|e| read_err(e.reason))?;
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
        let mut all = tensor_io::safetensors::load(path, device).map_err(|e| ReprError::Read {
            path: e.path,
            reason: e.reason,
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
