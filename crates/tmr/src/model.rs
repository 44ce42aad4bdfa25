//! The TMR model: a motion encoder and a text encoder sharing one latent space.
//!
//! Paper: Petrovich, Black, Varol, "TMR: Text-to-Motion Retrieval Using Contrastive 3D Human
//! Motion Synthesis" (ICCV 2023). The metrics (FD, TMR-score, R@k) use the mu token of each
//! encoder (DESIGN §4.5, §4.6). Motion input: raw (denormalised) SMPL-RIFKE features,
//! re-normalised with the TMR statistics (DESIGN §4.2). Text input: CLIP token features
//! `[L <= 77, 512]` (DESIGN §4.7).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::actor::{ActorEncoder, ActorEncoderConfig};
use crate::error::{Result, TmrError};
use motion_repr::Normalizer;

/// Sizes of both TMR encoders. `Default` = the reference evaluator (motion 205 -> 256,
/// text 512 -> 256, 6 layers, 4 heads, ff 1024).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TmrConfig {
    /// Motion encoder sizes.
    pub motion: ActorEncoderConfig,
    /// Text encoder sizes.
    pub text: ActorEncoderConfig,
}

impl Default for TmrConfig {
    fn default() -> Self {
        Self {
            motion: ActorEncoderConfig::tmr_motion(),
            text: ActorEncoderConfig::tmr_text(),
        }
    }
}

/// Reads a plain state-dict `.pt` (torch zip pickle of name -> tensor) and checks that it holds
/// exactly the keys `cfg` needs. Returns a [`VarBuilder`] rooted at the state-dict root.
pub(crate) fn load_state_dict(
    path: &Path,
    cfg: &ActorEncoderConfig,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    if !path.exists() {
        return Err(TmrError::MissingFile {
            path: path.to_path_buf(),
            hint: "the TMR encoder state dict (tmr-motion_encoder.pt / tmr-text_encoder.pt of the reference checkpoints)".into(),
        });
    }
    let map: HashMap<String, Tensor> =
        tensor_io::torch::read_state_dict(path).map_err(|e| TmrError::Read {
            path: e.path,
            reason: e.reason,
        })?;
    let needed = cfg.state_dict_shapes();
    let needed_names: BTreeSet<&str> = needed.iter().map(|(k, _)| k.as_str()).collect();
    let missing: Vec<String> = needed_names
        .iter()
        .filter(|k| !map.contains_key(**k))
        .map(|k| k.to_string())
        .collect();
    let mut unexpected: Vec<String> = map
        .keys()
        .filter(|k| !needed_names.contains(k.as_str()))
        .cloned()
        .collect();
    unexpected.sort();
    if !missing.is_empty() || !unexpected.is_empty() {
        return Err(TmrError::Keys {
            path: path.to_path_buf(),
            missing,
            unexpected,
        });
    }
    for (key, shape) in &needed {
        let got = map[key].dims();
        if got != shape.as_slice() {
            return Err(TmrError::Shape {
                what: format!("{} key {key}", path.display()),
                expected: format!("{shape:?}"),
                got: got.to_vec(),
            });
        }
    }
    let map = map
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?.to_device(device)?)))
        .collect::<candle::Result<HashMap<_, _>>>()?;
    Ok(VarBuilder::from_tensors(map, DType::F32, device))
}

/// The TMR evaluator: motion and text encoders plus the TMR feature statistics.
#[derive(Debug, Clone)]
pub struct Tmr {
    /// Motion encoder (`nfeats` 205).
    pub motion: ActorEncoder,
    /// Text encoder (`nfeats` 512 for CLIP token features).
    pub text: ActorEncoder,
    /// TMR feature statistics used by [`Tmr::encode_motion`].
    normalizer: Option<Normalizer>,
}

impl Tmr {
    /// Assembles a model from two encoders (no statistics yet: see [`Tmr::with_normalizer`]).
    pub fn new(motion: ActorEncoder, text: ActorEncoder) -> Self {
        Self {
            motion,
            text,
            normalizer: None,
        }
    }

    /// Reads the reference state dicts (`tmr-motion_encoder.pt`, `tmr-text_encoder.pt`: plain
    /// `OrderedDict` pickles) directly. Every key `cfg` needs must be present with its shape,
    /// and no other key may be: offenders are named in the error.
    pub fn from_reference_checkpoints(
        motion_pt: impl AsRef<Path>,
        text_pt: impl AsRef<Path>,
        cfg: &TmrConfig,
        device: &Device,
    ) -> Result<Self> {
        let vb = load_state_dict(motion_pt.as_ref(), &cfg.motion, device)?;
        let motion = ActorEncoder::new(&cfg.motion, vb)?;
        let vb = load_state_dict(text_pt.as_ref(), &cfg.text, device)?;
        let text = ActorEncoder::new(&cfg.text, vb)?;
        Ok(Self::new(motion, text))
    }

    /// Sets the TMR feature statistics (the reference's `tmr-rifke-{mean,std}`, e.g.
    /// `Normalizer::from_files(".../tmr-rifke-mean.pt", ".../tmr-rifke-std.pt", &dev)`).
    pub fn with_normalizer(mut self, normalizer: Normalizer) -> Result<Self> {
        let n = self.motion.config().nfeats;
        if normalizer.dim() != n {
            return Err(TmrError::Shape {
                what: "TMR statistics".into(),
                expected: format!("[{n}] (the motion encoder's nfeats)"),
                got: vec![normalizer.dim()],
            });
        }
        self.normalizer = Some(normalizer);
        Ok(self)
    }

    /// [`Tmr::with_normalizer`] from `mean` and `std` vectors `[nfeats]`.
    pub fn with_stats(self, mean: Tensor, std: Tensor) -> Result<Self> {
        self.with_normalizer(Normalizer::new(mean, std)?)
    }

    /// The TMR statistics, when set.
    pub fn normalizer(&self) -> Option<&Normalizer> {
        self.normalizer.as_ref()
    }

    /// Encodes raw (denormalised) motion features: `(x - mean) / std` with the TMR statistics
    /// (padded frames zeroed after normalisation), then the motion encoder; returns the mu
    /// embeddings.
    ///
    /// # Shapes
    /// `features [B, T, nfeats]`, `mask [B, T]` (1 = valid) -> `[B, latent_dim]`.
    pub fn encode_motion(&self, features: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let normalizer = self.normalizer.as_ref().ok_or_else(|| {
            TmrError::Config(
                "Tmr::encode_motion needs the TMR statistics: call Tmr::with_normalizer (or use encode_normalized_motion)".into(),
            )
        })?;
        self.check_width(features, self.motion.config().nfeats, "motion features")?;
        let x = normalizer.normalize_masked(features, mask)?;
        self.encode_normalized_motion(&x, mask)
    }

    /// Encodes motion features that are already normalised with the TMR statistics.
    ///
    /// # Shapes
    /// `features [B, T, nfeats]`, `mask [B, T]` (1 = valid) -> `[B, latent_dim]`.
    pub fn encode_normalized_motion(&self, features: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.check_width(features, self.motion.config().nfeats, "motion features")?;
        Ok(self.motion.encode_mu(features, mask)?)
    }

    /// Encodes text token features (CLIP ViT-B/32 token features for the reference model).
    ///
    /// # Shapes
    /// `tokens [B, L, nfeats_text]`, `mask [B, L]` (1 = valid) -> `[B, latent_dim]`.
    pub fn encode_text(&self, tokens: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.check_width(tokens, self.text.config().nfeats, "text token features")?;
        Ok(self.text.encode_mu(tokens, mask)?)
    }

    /// Encodes the token features of a [`TextEncoder`](crate::TextEncoder) output (for the
    /// reference model: [`ClipTextEncoder`](crate::ClipTextEncoder) features).
    ///
    /// # Shapes
    /// `features.tokens [B, L, C]`, `features.mask [B, L]` -> `[B, latent_dim]`.
    pub fn encode_text_features(&self, features: &crate::TextFeatures) -> Result<Tensor> {
        self.encode_text(&features.tokens, &features.mask)
    }

    fn check_width(&self, x: &Tensor, n: usize, what: &str) -> Result<()> {
        let dims = x.dims();
        if dims.len() != 3 || dims[2] != n {
            return Err(TmrError::Shape {
                what: what.into(),
                expected: format!("[B, T, {n}]"),
                got: dims.to_vec(),
            });
        }
        Ok(())
    }
}

/// Paths of the reference TMR checkpoint files inside a data folder
/// (`<data>/checkpoints/tmr-{motion,text}_encoder.pt`, DESIGN §5).
pub fn reference_checkpoint_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("checkpoints");
    (
        dir.join("tmr-motion_encoder.pt"),
        dir.join("tmr-text_encoder.pt"),
    )
}
