//! Training state and checkpoints: AdamW + warm-up/cosine learning rate + EMA + gradient-norm
//! clipping over any model built on a `candle_nn::VarMap`, saved atomically and resumable bit
//! for bit.
//!
//! Recipe of the reference (DDPM training of Ho et al. 2020 with the optimiser settings of the
//! DiT of Peebles & Xie, "Scalable Diffusion Models with Transformers", 2023): AdamW lr 1e-4,
//! betas (0.9, 0.95), eps 1e-7, weight decay 0.1, 5000 warm-up steps then cosine, EMA 0.9999
//! every step.
//!
//! # Checkpoint format
//! A checkpoint `<stem>` is two files, each written to a temporary file, synced and renamed:
//! - `<stem>-<step>.safetensors` (step zero-padded to 8 digits): `weights.<name>`,
//!   `ema.<name>`, `adam.m.<name>`, `adam.v.<name>` for every variable of the `VarMap` (float32
//!   as trained);
//! - `<stem>.json`: `format`, `step`, the [`TrainConfig`], the random state (`seed`; every
//!   random draw of step `s` comes from [`Trainer::rng`]`(stream)`, a pure function of
//!   `(seed, s, stream)`, so `(seed, step)` IS the state), the name, byte length and FNV-1a
//!   hash of the tensor file, and a free `extra` JSON value (model config, data config...).
//!
//! The JSON is written last and is the commit point: until its rename, `<stem>.json` names the
//! previous step's tensor file, which is only deleted after the rename. A process killed at
//! any moment of a save therefore leaves a checkpoint that resumes at the previous or the new
//! step, never a mix (at worst a stale tensor file, removed by the next save). A truncated or
//! mismatched tensor file is reported as [`DiffusionError::CorruptCheckpoint`]. Checkpoints of
//! earlier versions (`<stem>.safetensors`) resume as before.

use std::path::{Path, PathBuf};

use candle::{Device, Tensor, Var};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::error::{DiffusionError, Result};
use crate::optim::{AdamW, AdamWConfig, Ema, EmaWarmup, WarmupCosine, clip_grad_norm, named_vars};

/// Training hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Optimiser settings (`adamw.lr` is the peak learning rate).
    pub adamw: AdamWConfig,
    /// Learning-rate curve.
    pub lr: WarmupCosine,
    /// EMA decay, applied after every step.
    pub ema_beta: f64,
    /// Optional `ema_pytorch` decay warm-up (`None`: constant `ema_beta`, the default).
    #[serde(default)]
    pub ema_warmup: Option<EmaWarmup>,
    /// Global gradient-norm clip (`None`: no clipping).
    pub grad_clip: Option<f64>,
    /// Seed of every random draw of training (see [`Trainer::rng`]).
    pub seed: u64,
}

impl TrainConfig {
    /// The reference's settings for a run of `total_steps` (gradient clip 1.0, seed 0).
    pub fn reference(total_steps: u64) -> Self {
        let adamw = AdamWConfig::reference();
        Self {
            adamw,
            lr: WarmupCosine::reference(adamw.lr, total_steps),
            ema_beta: 0.9999,
            ema_warmup: None,
            grad_clip: Some(1.0),
            seed: 0,
        }
    }
}

/// What one training step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// The step number after the update (1 after the first).
    pub step: u64,
    /// The loss value.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
}

/// Optimiser, EMA and step counter of a model on a `VarMap`.
///
/// ```
/// use candle::{DType, Device};
/// use candle_nn::{Init, VarMap};
/// use diffusion::{TrainConfig, Trainer};
/// let vm = VarMap::new();
/// let w = vm.get(3, "w", Init::Const(1.0), DType::F32, &Device::Cpu)?;
/// let mut trainer = Trainer::new(&vm, TrainConfig::reference(10_000))?;
/// let stats = trainer.train_step(&w.sqr()?.sum_all()?)?;
/// assert_eq!(stats.step, 1);
/// assert_eq!(stats.lr, 0.0); // warm-up starts at 0
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Trainer {
    config: TrainConfig,
    vars: Vec<(String, Var)>,
    optimizer: AdamW,
    ema: Ema,
}

/// Checkpoint format version written into the JSON.
pub const CHECKPOINT_FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointMeta {
    format: u32,
    step: u64,
    config: TrainConfig,
    rng: RngState,
    tensors: TensorFileInfo,
    extra: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize)]
struct RngState {
    seed: u64,
    step: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct TensorFileInfo {
    file: String,
    bytes: u64,
    fnv1a64: String,
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DiffusionError + '_ {
    move |source| DiffusionError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically ([`tensor_io::atomic::write`]: a synced temporary file
/// in the same folder, renamed over it).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    tensor_io::atomic::write(path, bytes).map_err(io_err(path))
}

/// Reads the checkpoint `<stem>` (its JSON, then the tensor file it names) and checks the
/// tensor file's length and hash: the metadata, the tensor bytes and their path.
fn read_checkpoint(stem: &Path) -> Result<(CheckpointMeta, Vec<u8>, PathBuf)> {
    let json_path = with_ext(stem, ".json");
    let text = std::fs::read(&json_path).map_err(io_err(&json_path))?;
    let meta: CheckpointMeta =
        serde_json::from_slice(&text).map_err(|source| DiffusionError::Json {
            path: json_path.clone(),
            source,
        })?;
    if meta.format != CHECKPOINT_FORMAT {
        return Err(DiffusionError::CorruptCheckpoint {
            path: json_path,
            reason: format!(
                "format {} (this build reads {CHECKPOINT_FORMAT})",
                meta.format
            ),
        });
    }
    let file = &meta.tensors.file;
    if file.is_empty() || file.contains(['/', '\\']) || file == ".." {
        return Err(DiffusionError::CorruptCheckpoint {
            path: json_path,
            reason: format!("tensors.file {file:?} is not a file name next to it"),
        });
    }
    let st_path = stem.with_file_name(file);
    let bytes = std::fs::read(&st_path).map_err(io_err(&st_path))?;
    if bytes.len() as u64 != meta.tensors.bytes {
        return Err(DiffusionError::CorruptCheckpoint {
            path: st_path,
            reason: format!(
                "{} bytes, the JSON side file records {} (truncated or from another save)",
                bytes.len(),
                meta.tensors.bytes
            ),
        });
    }
    let hash = format!("{:016x}", fnv1a64(&bytes));
    if hash != meta.tensors.fnv1a64 {
        return Err(DiffusionError::CorruptCheckpoint {
            path: st_path,
            reason: format!(
                "FNV-1a hash {hash} differs from the recorded {}",
                meta.tensors.fnv1a64
            ),
        });
    }
    Ok((meta, bytes, st_path))
}

/// Checks the checkpoint `<stem>` without a model (e.g. after a crash, or before a long
/// resume): its JSON parses and names a tensor file next to it whose length and FNV-1a hash
/// match what the JSON records. Returns the step it resumes at.
pub fn verify_checkpoint(stem: &Path) -> Result<u64> {
    Ok(read_checkpoint(stem)?.0.step)
}

/// Deletes the tensor files of earlier saves of `stem` (`<stem>-<step>.safetensors` and the
/// older `<stem>.safetensors`) other than `keep`, once the JSON names `keep`. Best effort: a
/// file left behind is only disk space, removed by the next save.
fn remove_stale_tensor_files(stem: &Path, keep: &str) {
    let (Some(dir), Some(name)) = (stem.parent(), stem.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let numbered = |f: &str| {
        f.strip_prefix(name)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.strip_suffix(".safetensors"))
            .is_some_and(|n| n.len() == 8 && n.bytes().all(|b| b.is_ascii_digit()))
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(f) = file.to_str() else { continue };
        if f != keep && (numbered(f) || f == format!("{name}.safetensors")) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn with_ext(stem: &Path, ext: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

impl Trainer {
    /// A fresh state (step 0, zero moments, EMA = current weights) for every floating-point
    /// variable of `varmap`.
    pub fn new(varmap: &VarMap, config: TrainConfig) -> Result<Self> {
        let vars = named_vars(varmap);
        Ok(Self {
            optimizer: AdamW::new(varmap, config.adamw)?,
            ema: Ema::new(&vars, config.ema_beta)?.with_warmup(config.ema_warmup),
            vars,
            config,
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Number of updates applied.
    pub fn step(&self) -> u64 {
        self.optimizer.step_count()
    }

    /// The learning rate of the next update.
    pub fn lr(&self) -> f64 {
        self.config.lr.lr(self.step())
    }

    /// The optimiser (its moments).
    pub fn optimizer(&self) -> &AdamW {
        &self.optimizer
    }

    /// The EMA weights.
    pub fn ema(&self) -> &Ema {
        &self.ema
    }

    /// A random generator for stream `stream` of the CURRENT step: a pure function of
    /// `(seed, step, stream)`, so batches, noise and `t` drawn from it are reproduced exactly
    /// after a resume. Use one stream per purpose (data order, loss noise, dropout...).
    pub fn rng(&self, stream: u64) -> StdRng {
        let s = splitmix64(self.config.seed ^ splitmix64(self.step() ^ splitmix64(stream)));
        StdRng::seed_from_u64(s)
    }

    /// One update: backward of `loss`, gradient check (every variable must get a gradient),
    /// clipping, AdamW at the scheduled learning rate, EMA update.
    pub fn train_step(&mut self, loss: &Tensor) -> Result<StepStats> {
        let value = loss.to_dtype(candle::DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            return Err(DiffusionError::NonFinite {
                what: "loss",
                step: self.step(),
                value,
            });
        }
        let mut grads = loss.backward()?;
        for (name, v) in &self.vars {
            if grads.get(v.as_tensor()).is_none() {
                return Err(DiffusionError::MissingGradient { name: name.clone() });
            }
        }
        let grad_norm = match self.config.grad_clip {
            Some(max) => clip_grad_norm(&mut grads, &self.vars, max)?,
            None => clip_grad_norm(&mut grads, &self.vars, f64::INFINITY)?,
        };
        if !grad_norm.is_finite() {
            return Err(DiffusionError::NonFinite {
                what: "gradient norm",
                step: self.step(),
                value: grad_norm,
            });
        }
        let lr = self.lr();
        self.optimizer.step(&grads, lr)?;
        self.ema.update(&self.vars)?;
        Ok(StepStats {
            step: self.step(),
            loss: value,
            grad_norm,
            lr,
        })
    }

    /// Saves `<stem>.safetensors` and `<stem>.json` atomically (see the module docs); `extra`
    /// is stored verbatim (e.g. the model config).
    pub fn save(&self, stem: &Path, extra: &serde_json::Value) -> Result<()> {
        let st_path = with_ext(stem, &format!("-{:08}.safetensors", self.step()));
        let mut map = std::collections::HashMap::new();
        for (n, v) in &self.vars {
            map.insert(format!("weights.{n}"), v.as_tensor().detach());
        }
        for (n, t) in self.ema.weights() {
            map.insert(format!("ema.{n}"), t.clone());
        }
        for (n, m, v) in self.optimizer.moments() {
            map.insert(format!("adam.m.{n}"), m.clone());
            map.insert(format!("adam.v.{n}"), v.clone());
        }
        // Serialised in memory, hashed, then written atomically (one sync + rename): the hash is
        // of exactly what is on disk.
        let bytes = tensor_io::safetensors::to_bytes(&map)?;
        write_atomic(&st_path, &bytes)?;
        let meta = CheckpointMeta {
            format: CHECKPOINT_FORMAT,
            step: self.step(),
            config: self.config,
            rng: RngState {
                seed: self.config.seed,
                step: self.step(),
            },
            tensors: TensorFileInfo {
                file: st_path
                    .file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                bytes: bytes.len() as u64,
                fnv1a64: format!("{:016x}", fnv1a64(&bytes)),
            },
            extra: extra.clone(),
        };
        let json_path = with_ext(stem, ".json");
        let text = serde_json::to_vec_pretty(&meta).map_err(|source| DiffusionError::Json {
            path: json_path.clone(),
            source,
        })?;
        write_atomic(&json_path, &text)?;
        remove_stale_tensor_files(stem, &meta.tensors.file);
        Ok(())
    }

    /// Restores a checkpoint written by [`Trainer::save`]: the weights are written into
    /// `varmap` (which must hold exactly the saved variables, same shapes), and the returned
    /// trainer continues bit-identically. Returns the `extra` JSON too.
    pub fn resume(varmap: &VarMap, stem: &Path) -> Result<(Self, serde_json::Value)> {
        let (meta, bytes, st_path) = read_checkpoint(stem)?;
        let device = named_vars(varmap)
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(Device::Cpu);
        let mut tensors =
            tensor_io::safetensors::load_bytes(&bytes, &st_path, &device).map_err(|e| {
                DiffusionError::CorruptCheckpoint {
                    path: e.path,
                    reason: e.reason,
                }
            })?;
        let mut take = |key: String, like: &Tensor| -> Result<Tensor> {
            let t = tensors
                .remove(&key)
                .ok_or_else(|| DiffusionError::CheckpointMismatch {
                    path: st_path.clone(),
                    key: key.clone(),
                    reason: "is missing".to_string(),
                })?;
            if t.dims() != like.dims() || t.dtype() != like.dtype() {
                return Err(DiffusionError::CheckpointMismatch {
                    path: st_path.clone(),
                    key,
                    reason: format!(
                        "has shape {:?} {:?}, the model needs {:?} {:?}",
                        t.dims(),
                        t.dtype(),
                        like.dims(),
                        like.dtype()
                    ),
                });
            }
            Ok(t)
        };
        let mut trainer = Trainer::new(varmap, meta.config)?;
        for (n, v) in &trainer.vars {
            let t = take(format!("weights.{n}"), v.as_tensor())?;
            v.set(&t)?;
        }
        trainer
            .ema
            .restore(meta.step, |n, like| take(format!("ema.{n}"), like))?;
        trainer.optimizer.restore(meta.step, |n, like| {
            Ok((
                take(format!("adam.m.{n}"), like)?,
                take(format!("adam.v.{n}"), like)?,
            ))
        })?;
        if let Some(key) = tensors.keys().min() {
            return Err(DiffusionError::CheckpointMismatch {
                path: st_path,
                key: key.clone(),
                reason: "is not a variable of the model".to_string(),
            });
        }
        Ok((trainer, meta.extra))
    }
}
