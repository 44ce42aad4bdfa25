//! Loading reference weights: Lightning training checkpoints (`.ckpt`, a `torch.save` zip
//! pickle whose `state_dict` holds `net.*` and `ema.ema_model.*`), plain state-dict `.pt`
//! files and `.safetensors`. Every key the network needs must exist with the right shape and
//! no network key may be left unused; the error names every offender.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

use crate::config::DitConfig;
use crate::model::Dit;

/// Errors raised while loading a DiT.
#[derive(Debug, thiserror::Error)]
pub enum DitError {
    /// The file could not be opened or parsed.
    #[error("cannot read checkpoint {path}: {reason}")]
    Read {
        /// The offending file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The file holds no tensors under any of the expected prefixes.
    #[error(
        "checkpoint {path} holds no DiT weights: no key starts with {prefixes:?} \
         ({count} tensors found{sample})"
    )]
    NoWeights {
        /// The offending file.
        path: PathBuf,
        /// Prefixes looked for.
        prefixes: Vec<String>,
        /// Number of tensors the file holds.
        count: usize,
        /// A few of the keys found, for the message.
        sample: String,
    },
    /// Keys are missing, have the wrong shape, or are not used by the network.
    #[error(
        "weights from {source_name} do not fit the {variant} DiT config: \
         missing {missing:?}; wrong shape {wrong_shape:?}; unused {unused:?}"
    )]
    KeyMismatch {
        /// Where the weights came from (file and prefix).
        source_name: String,
        /// The configured variant.
        variant: String,
        /// Needed keys that are absent, with the expected shape.
        missing: Vec<String>,
        /// Keys whose shape differs: `key: expected [..], found [..]`.
        wrong_shape: Vec<String>,
        /// Network keys (`model.*`) that the network did not use.
        unused: Vec<String>,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle::Error),
}

/// Prefixes of the sampling network in a Lightning checkpoint, in order of preference.
pub const CHECKPOINT_PREFIXES: [&str; 2] = ["ema.ema_model.", "net."];

#[derive(Default)]
struct AuditLog {
    used: BTreeSet<String>,
    missing: Vec<String>,
    wrong_shape: Vec<String>,
}

/// A `VarBuilder` backend over a tensor map that records every access, so that all missing
/// keys, wrong shapes and unused keys are reported at once (zeros stand in for bad entries
/// while the network is built; the build is then rejected).
struct Audit {
    tensors: HashMap<String, Tensor>,
    log: Mutex<AuditLog>,
    /// Whether stand-ins are bounded by the stored tensors (loading a file); `init_random`'s
    /// shape probe stores nothing and builds exactly what its caller asks for.
    bounded: bool,
}

struct AuditRef<'a>(&'a Audit);

impl Audit {
    /// A zero placeholder of shape `s` for a missing or mis-shaped tensor, so that construction
    /// goes on and every fault is listed at once. Its size comes from the configuration, not the
    /// file: a configuration asking for more elements than the largest stored tensor (or 2^20)
    /// is an error here, before anything that large is allocated.
    fn placeholder(
        &self,
        s: Shape,
        name: &str,
        dtype: DType,
        dev: &Device,
    ) -> candle::Result<Tensor> {
        let largest = self
            .tensors
            .values()
            .map(Tensor::elem_count)
            .max()
            .unwrap_or(0)
            .max(1 << 20);
        let count = s
            .dims()
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d.max(1)));
        match count {
            Some(n) if n <= largest || !self.bounded => Tensor::zeros(s, dtype, dev),
            _ => candle::bail!(
                "{name}: the configuration asks for shape {:?}, larger than any tensor stored \
                 (the configuration does not match the weights)",
                s.dims()
            ),
        }
    }
}

impl SimpleBackend for AuditRef<'_> {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle::Result<Tensor> {
        let mut log = self
            .0
            .log
            .lock()
            .map_err(|_| candle::Error::Msg("audit lock poisoned".into()))?;
        match self.0.tensors.get(name) {
            Some(t) => {
                log.used.insert(name.to_string());
                if t.shape() != &s {
                    log.wrong_shape.push(format!(
                        "{name}: expected {:?}, found {:?}",
                        s.dims(),
                        t.dims()
                    ));
                    return self.0.placeholder(s, name, dtype, dev);
                }
                t.to_dtype(dtype)?.to_device(dev)
            }
            None => {
                log.missing.push(format!("{name} {:?}", s.dims()));
                drop(log);
                self.0.placeholder(s, name, dtype, dev)
            }
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle::Result<Tensor> {
        let mut log = self
            .0
            .log
            .lock()
            .map_err(|_| candle::Error::Msg("audit lock poisoned".into()))?;
        match self.0.tensors.get(name) {
            Some(t) => {
                log.used.insert(name.to_string());
                t.to_dtype(dtype)?.to_device(dev)
            }
            None => {
                log.missing.push(name.to_string());
                candle::bail!("missing tensor {name}")
            }
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.tensors.contains_key(name)
    }
}

impl Dit {
    /// Builds a network from a map of reference keys (`model.*`), checking that every needed
    /// key is present with the right shape and that every `model.*` key is used.
    /// `source_name` names the origin in errors.
    pub fn from_tensors(
        tensors: HashMap<String, Tensor>,
        cfg: &DitConfig,
        device: &Device,
        source_name: &str,
    ) -> Result<Dit, DitError> {
        let audit = Audit {
            tensors,
            log: Mutex::new(AuditLog::default()),
            bounded: true,
        };
        let vb = VarBuilder::from_backend(Box::new(AuditRef(&audit)), DType::F32, device.clone());
        let built = Dit::new(cfg, vb);
        let log = audit
            .log
            .into_inner()
            .map_err(|_| candle::Error::Msg("audit lock poisoned".into()))?;
        let unused: Vec<String> = audit
            .tensors
            .keys()
            .filter(|k| k.starts_with("model.") && !log.used.contains(*k))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !log.missing.is_empty() || !log.wrong_shape.is_empty() || !unused.is_empty() {
            return Err(DitError::KeyMismatch {
                source_name: source_name.to_string(),
                variant: cfg.variant.to_string(),
                missing: log.missing,
                wrong_shape: log.wrong_shape,
                unused,
            });
        }
        Ok(built?)
    }

    /// Loads a network from a reference checkpoint, chosen by extension:
    /// - `.ckpt`: a Lightning checkpoint (torch zip pickle, weights under `state_dict`); the
    ///   EMA weights `ema.ema_model.*` are taken, falling back to the online `net.*`; other
    ///   keys (`tmr.*`, `ema.online_model.*`, scalars) are ignored;
    /// - `.pt` / `.pth` / `.bin`: a plain state dict (keys `model.*`, or with one of the
    ///   prefixes above), possibly nested under `state_dict`;
    /// - `.safetensors`: the same keys.
    pub fn from_checkpoint(
        path: impl AsRef<Path>,
        cfg: &DitConfig,
        device: &Device,
    ) -> Result<Dit, DitError> {
        Self::from_checkpoint_with_prefix(path, None, cfg, device)
    }

    /// As [`Dit::from_checkpoint`], but taking the weights under an explicit key prefix
    /// (e.g. `Some("net.")` for the online network of a Lightning checkpoint, `Some("")` for
    /// bare `model.*` keys); `None` picks as `from_checkpoint` does.
    pub fn from_checkpoint_with_prefix(
        path: impl AsRef<Path>,
        prefix: Option<&str>,
        cfg: &DitConfig,
        device: &Device,
    ) -> Result<Dit, DitError> {
        let path = path.as_ref();
        let (tensors, prefix) = read_network_tensors(path, prefix)?;
        let tensors = tensors
            .into_iter()
            .map(|(k, t)| t.to_device(device).map(|t| (k, t)))
            .collect::<candle::Result<HashMap<_, _>>>()?;
        let source = format!("{} (prefix {prefix:?})", path.display());
        Dit::from_tensors(tensors, cfg, device, &source)
    }

    /// As [`Dit::from_checkpoint`] for the bytes of a `.safetensors` file already in memory
    /// (e.g. fetched by a web page); `name` stands for the file in error messages.
    pub fn from_safetensors_bytes(
        bytes: &[u8],
        name: &str,
        cfg: &DitConfig,
        device: &Device,
    ) -> Result<Dit, DitError> {
        let path = Path::new(name);
        let all = tensor_io::safetensors::load_bytes(bytes, path, &Device::Cpu)
            .map_err(|e| read_err(path, e.reason))?;
        let (tensors, prefix) = select_network(path, all, None)?;
        let tensors = tensors
            .into_iter()
            .map(|(k, t)| t.to_device(device).map(|t| (k, t)))
            .collect::<candle::Result<HashMap<_, _>>>()?;
        Dit::from_tensors(tensors, cfg, device, &format!("{name} (prefix {prefix:?})"))
    }

    /// A network with freshly initialised, seeded weights held in a [`VarMap`] (for training
    /// and benchmarks): weight matrices `N(0, 0.02)`, biases 0, LayerNorm scales 1. The
    /// position tables and time frequencies are computed, not trainable.
    pub fn init_random(
        cfg: &DitConfig,
        seed: u64,
        device: &Device,
    ) -> candle::Result<(Dit, VarMap)> {
        // Discover every parameter with its shape by building once over a recording backend.
        let audit = Audit {
            tensors: HashMap::new(),
            log: Mutex::new(AuditLog::default()),
            bounded: false,
        };
        let vb = VarBuilder::from_backend(Box::new(AuditRef(&audit)), DType::F32, Device::Cpu);
        let probe = Dit::new(cfg, vb)?;
        drop(probe);
        let log = audit
            .log
            .into_inner()
            .map_err(|_| candle::Error::Msg("audit lock poisoned".into()))?;
        let mut rng = StdRng::seed_from_u64(seed);
        let normal = Normal::new(0f32, 0.02).map_err(|e| candle::Error::Msg(e.to_string()))?;
        let varmap = VarMap::new();
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| candle::Error::Msg("varmap lock poisoned".into()))?;
            for entry in &log.missing {
                let (name, dims) = parse_missing(entry)?;
                let n: usize = dims.iter().product();
                let values: Vec<f32> = if name.ends_with(".bias") {
                    vec![0.0; n]
                } else if dims.len() == 1 {
                    vec![1.0; n]
                } else {
                    (0..n).map(|_| normal.sample(&mut rng)).collect()
                };
                let t = Tensor::from_vec(values, dims, device)?;
                data.insert(name, candle::Var::from_tensor(&t)?);
            }
        }
        let dit = Dit::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        Ok((dit, varmap))
    }
}

impl DitConfig {
    /// Infers the variant and sizes of a network from its weights (keys `model.*`). The head
    /// count cannot be read from weights and is given; dropout rates and `num_frames` take the
    /// reference values; `max_positions` follows a stored `pe` table when present.
    pub fn infer_from_weights(
        tensors: &HashMap<String, Tensor>,
        num_heads: usize,
    ) -> Result<DitConfig, DitError> {
        let dims = |k: &str| tensors.get(k).map(|t| t.dims().to_vec());
        let bad = |reason: String| DitError::KeyMismatch {
            source_name: "weights".into(),
            variant: "unknown".into(),
            missing: vec![reason],
            wrong_shape: Vec::new(),
            unused: Vec::new(),
        };
        let variant = if tensors.contains_key("model.joint_cond_projection.weight") {
            crate::Variant::AdaLn
        } else if tensors.keys().any(|k| k.starts_with("model.cond_sa.")) {
            crate::Variant::CrossAttention
        } else if tensors.contains_key("model.cond_projection.weight") {
            crate::Variant::InContext
        } else {
            return Err(bad(
                "model.joint_cond_projection.weight or model.cond_projection.weight".into(),
            ));
        };
        let input = dims("model.input_projection.0.weight")
            .ok_or_else(|| bad("model.input_projection.0.weight".into()))?;
        let cond_key = match variant {
            crate::Variant::AdaLn => "model.joint_cond_projection.weight",
            _ => "model.cond_projection.weight",
        };
        let cond = dims(cond_key).ok_or_else(|| bad(cond_key.into()))?;
        let ffn = dims("model.backbone_module.0.ffn.0.weight")
            .ok_or_else(|| bad("model.backbone_module.0.ffn.0.weight".into()))?;
        let (&[d, f], &[_, c], &[hidden, _]) = (&input[..], &cond[..], &ffn[..]) else {
            return Err(bad("2-D projection weights".into()));
        };
        let count = |prefix: &str| {
            (0..)
                .take_while(|i| {
                    let p = format!("{prefix}{i}.");
                    tensors.keys().any(|k| k.starts_with(&p))
                })
                .count()
        };
        let mut cfg = DitConfig::reference(variant);
        cfg.num_feats = f;
        cfg.num_cond_feats = c;
        cfg.latent_dim = d;
        cfg.mlp_multiplier = hidden / d.max(1);
        cfg.num_layers = count("model.backbone_module.");
        cfg.num_heads = num_heads;
        if variant == crate::Variant::CrossAttention {
            cfg.num_cond_blocks = count("model.cond_sa.");
        }
        if let Some(&[1, rows, _]) = dims("model.input_projection.1.pe").as_deref() {
            cfg.max_positions = rows;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

impl Dit {
    /// Loads a checkpoint as [`Dit::from_checkpoint`] does, inferring the configuration from
    /// the weights ([`DitConfig::infer_from_weights`]; the head count is given).
    pub fn from_checkpoint_inferred(
        path: impl AsRef<Path>,
        num_heads: usize,
        device: &Device,
    ) -> Result<(Dit, DitConfig), DitError> {
        let path = path.as_ref();
        let (tensors, prefix) = read_network_tensors(path, None)?;
        let cfg = DitConfig::infer_from_weights(&tensors, num_heads)?;
        let tensors = tensors
            .into_iter()
            .map(|(k, t)| t.to_device(device).map(|t| (k, t)))
            .collect::<candle::Result<HashMap<_, _>>>()?;
        let source = format!("{} (prefix {prefix:?})", path.display());
        Ok((Dit::from_tensors(tensors, &cfg, device, &source)?, cfg))
    }
}

/// Splits an audit entry `name [d0, d1]` back into its parts.
fn parse_missing(entry: &str) -> candle::Result<(String, Vec<usize>)> {
    let (name, dims) = entry
        .split_once(' ')
        .ok_or_else(|| candle::Error::Msg(format!("bad parameter entry {entry}")))?;
    let dims = dims
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| candle::Error::Msg(format!("bad parameter entry {entry}: {e}")))?;
    Ok((name.to_string(), dims))
}

fn read_err(path: &Path, reason: impl std::fmt::Display) -> DitError {
    DitError::Read {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Reads the network tensors of a checkpoint, keyed `model.*`, and the prefix they came from.
fn read_network_tensors(
    path: &Path,
    prefix: Option<&str>,
) -> Result<(HashMap<String, Tensor>, String), DitError> {
    if !path.exists() {
        return Err(read_err(path, "file not found"));
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let all: HashMap<String, Tensor> = if ext == "safetensors" {
        tensor_io::safetensors::load(path, &Device::Cpu).map_err(|e| read_err(path, e.reason))?
    } else {
        read_torch_state_dict(path)?
    };
    select_network(path, all, prefix)
}

/// Picks `ema.ema_model.*`, else `net.*`, else bare `model.*` keys, stripping the prefix.
fn select_network(
    path: &Path,
    all: HashMap<String, Tensor>,
    only: Option<&str>,
) -> Result<(HashMap<String, Tensor>, String), DitError> {
    let candidates: Vec<&str> = match only {
        Some(p) => vec![p],
        None => CHECKPOINT_PREFIXES.to_vec(),
    };
    for prefix in candidates.iter().copied() {
        let picked: HashMap<String, Tensor> = all
            .iter()
            .filter_map(|(k, t)| {
                k.strip_prefix(prefix)
                    .filter(|rest| rest.starts_with("model."))
                    .map(|rest| (rest.to_string(), t.clone()))
            })
            .collect();
        if !picked.is_empty() {
            return Ok((picked, prefix.to_string()));
        }
    }
    if only.is_none() {
        let bare: HashMap<String, Tensor> = all
            .iter()
            .filter(|(k, _)| k.starts_with("model."))
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        if !bare.is_empty() {
            return Ok((bare, String::new()));
        }
    }
    let mut keys: Vec<&String> = all.keys().collect();
    keys.sort();
    let sample = if keys.is_empty() {
        String::new()
    } else {
        format!(
            "; e.g. {:?}",
            keys.iter().take(5).map(|s| s.as_str()).collect::<Vec<_>>()
        )
    };
    Err(DitError::NoWeights {
        path: path.to_path_buf(),
        prefixes: match only {
            Some(p) => vec![format!("{p}model.")],
            None => CHECKPOINT_PREFIXES
                .iter()
                .map(|s| format!("{s}model."))
                .chain(std::iter::once("model.".to_string()))
                .collect(),
        },
        count: all.len(),
        sample,
    })
}

/// Reads every float tensor of a `torch.save` zip archive ([`tensor_io::torch::read_state_dict`]:
/// the hardened reader, errors naming the key or field at fault).
fn read_torch_state_dict(path: &Path) -> Result<HashMap<String, Tensor>, DitError> {
    tensor_io::torch::read_state_dict(path).map_err(|e| read_err(path, e.reason))
}
