//! Evaluation of a text-to-motion model the way the reference evaluates it: motions generated
//! for the captions of a test split at the real lengths, embedded with the TMR encoders together
//! with the real motions and the captions, then scored.
//!
//! | metric | compares | function |
//! | --- | --- | --- |
//! | FD | generated vs real motion embeddings | [`metrics::bootstrap_frechet`] |
//! | TMR-score | generated motion vs text embeddings | [`metrics::bootstrap_tmr_score`] |
//! | precision, recall, density, coverage | real vs generated motion embeddings | [`metrics::bootstrap_prdc`] |
//! | R@1/2/3, MM-distance | text vs generated motion, within batches of 64 | [`metrics::bootstrap_retrieval`] |
//!
//! Papers: Petrovich, Black, Varol, "TMR: Text-to-Motion Retrieval Using Contrastive 3D Human
//! Motion Synthesis" (ICCV 2023) for the evaluator and TMR-score; Guo et al., "Generating
//! Diverse and Natural 3D Human Motions from Text" (CVPR 2022) for the retrieval protocol;
//! `docs/metrics.md` for the formulas and the confidence intervals.
//!
//! Every metric is also computed with the real motions in the place of the generated ones
//! ([`score`] on `real, real, text`): the ceiling row, so the numbers have a scale (FD of the
//! real set with itself is 0; its TMR-score and R@k are what the evaluator gives real data).
//!
//! # Protocol
//! - samples: the first `batches x batch_size` ids of the split, in split order (all of them
//!   when the split is shorter; at least [`MIN_SAMPLES`]);
//! - caption: the first caption of each sample (DESIGN §5); its text features are the dataset's
//!   `caption_clip` token features or a text encoder's (CLIP or a sentence encoder such as the
//!   default model's all-MiniLM-L6-v2): the token states feed the TMR text encoder, and the
//!   condition is the same tokens for a sequence-conditioned model, the encoder's pooled vector
//!   for a pooled one;
//! - length: the real motion's length, capped at the model's longest motion;
//! - seed of sample `i`: [`motion_seed`]`(seed, i)`, so a motion does not depend on batching;
//! - retrieval batches: consecutive runs of `batch_size` samples (64 in the reference; R@k
//!   depends on it).
//!
//! # The TMR folder ([`TmrFiles::find`])
//! ```text
//! <dir>/checkpoints/tmr-motion_encoder.pt   motion encoder state dict (tmr::reference_checkpoint_paths)
//! <dir>/checkpoints/tmr-text_encoder.pt     text encoder state dict
//! <dir>/checkpoints/tmr_config.json         optional tmr::TmrConfig (sizes); absent = the reference's
//! <dir>/stats/tmr-rifke-{mean,std}.pt       optional motion statistics; absent = the model's
//! ```
//! This is what the `train_tmr` example writes, and, for the reference data folder, where the
//! published evaluator lives (`<data>/checkpoints/`, `<data>/stats/`). The encoder files may
//! also sit directly in `<dir>`.

use std::path::{Path, PathBuf};

use candle::{DType, Device, IndexOp, Tensor};
use metrics::{
    BootstrapConfig, Embeddings, Interval, MetricRow, PrdcConfig, PrdcIntervals, RetrievalIntervals,
};
use motion_data::MotionSource;
use motion_repr::Normalizer;
use serde::{Deserialize, Serialize};
use tmr::{TextEncoder, Tmr, TmrConfig};

use crate::error::{PipelineError, Result, read_err};
use crate::model::read_stats_stem;

/// The retrieval ranks reported: R@1, R@2, R@3.
pub const TOP_K: [usize; 3] = [1, 2, 3];

/// Fewest samples an evaluation accepts: half-sample intervals of PRDC need chunks of more than
/// `k = 3` rows.
pub const MIN_SAMPLES: usize = 8;

/// File name of the TMR sizes next to the encoder state dicts.
pub const TMR_CONFIG_FILE: &str = "tmr_config.json";

/// The files of a TMR evaluator (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmrFiles {
    /// Motion encoder state dict.
    pub motion: PathBuf,
    /// Text encoder state dict.
    pub text: PathBuf,
    /// `tmr_config.json`, when present.
    pub config: Option<PathBuf>,
    /// Statistics path stem (`.../stats/tmr-rifke`), when present.
    pub stats: Option<PathBuf>,
}

impl TmrFiles {
    /// Looks up the evaluator files in `dir`: `dir/checkpoints/tmr-{motion,text}_encoder.pt`
    /// ([`tmr::reference_checkpoint_paths`]) or `dir/tmr-{motion,text}_encoder.pt`, the sizes in
    /// `tmr_config.json` next to them, the statistics at `dir/stats/tmr-rifke-*` or
    /// `dir/tmr-rifke-*`.
    pub fn find(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(PipelineError::MissingFile {
                what: "TMR folder".into(),
                path: dir.to_path_buf(),
                hint: "pass --tmr with the folder written by the `train_tmr` example (or a \
                       reference data folder holding checkpoints/tmr-motion_encoder.pt)"
                    .into(),
            });
        }
        let (motion, text) = tmr::reference_checkpoint_paths(dir);
        let (motion, text) = if motion.is_file() || text.is_file() {
            (motion, text)
        } else {
            let flat = |p: &Path| dir.join(p.file_name().unwrap_or(p.as_os_str()));
            let (m, t) = (flat(&motion), flat(&text));
            if m.is_file() || t.is_file() {
                (m, t)
            } else {
                (motion, text)
            }
        };
        for (p, what) in [(&motion, "TMR motion encoder"), (&text, "TMR text encoder")] {
            if !p.is_file() {
                return Err(PipelineError::MissingFile {
                    what: what.into(),
                    path: p.clone(),
                    hint: format!(
                        "{} holds no TMR evaluator: train one with the `train_tmr` example, \
                         or point --tmr at the reference data folder",
                        dir.display()
                    ),
                });
            }
        }
        let config = motion
            .parent()
            .map(|d| d.join(TMR_CONFIG_FILE))
            .filter(|p| p.is_file());
        let stats = [dir.join("stats").join("tmr-rifke"), dir.join("tmr-rifke")]
            .into_iter()
            .find(|stem| has_stats(stem));
        Ok(Self {
            motion,
            text,
            config,
            stats,
        })
    }

    /// The encoder sizes: `tmr_config.json` when present, else the reference evaluator's.
    pub fn tmr_config(&self) -> Result<TmrConfig> {
        match &self.config {
            None => Ok(TmrConfig::default()),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| read_err(path, e))?;
                serde_json::from_str(&text)
                    .map_err(|e| read_err(path, format!("not a tmr::TmrConfig: {e}")))
            }
        }
    }

    /// Loads both encoders with the statistics of `stats_override` (a path stem), else the
    /// folder's, else `fallback` (the motion model's). Returns the evaluator and where its
    /// statistics came from.
    pub fn load(
        &self,
        stats_override: Option<&Path>,
        fallback: &Normalizer,
        device: &Device,
    ) -> Result<(Tmr, String)> {
        let cfg = self.tmr_config()?;
        let tmr = Tmr::from_reference_checkpoints(&self.motion, &self.text, &cfg, device)?;
        let (normalizer, source) = match (stats_override, &self.stats) {
            (Some(stem), _) => (read_stats_stem(stem, device)?, stem.display().to_string()),
            (None, Some(stem)) => (read_stats_stem(stem, device)?, stem.display().to_string()),
            (None, None) => (
                fallback.to_device(device)?,
                "the motion model's statistics".to_string(),
            ),
        };
        let tmr = tmr.with_normalizer(normalizer)?;
        Ok((tmr, source))
    }
}

fn has_stats(stem: &Path) -> bool {
    let (Some(dir), Some(name)) = (stem.parent(), stem.file_name().and_then(|n| n.to_str())) else {
        return false;
    };
    ["pt", "npy", "safetensors"]
        .iter()
        .any(|ext| dir.join(format!("{name}-mean.{ext}")).is_file())
}

/// The seed of the motion generated for sample `index`: a SplitMix64 mix of `(seed, index)`
/// (Steele et al., OOPSLA 2014), so that neighbouring base seeds share no motion and a motion
/// does not depend on the batch it is sampled in.
pub fn motion_seed(seed: u64, index: usize) -> u64 {
    splitmix64(seed ^ splitmix64((index as u64).wrapping_add(0xa076_1d64_78bd_642f)))
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One test sample, as the evaluation uses it.
#[derive(Debug, Clone)]
pub struct EvalSample {
    /// Index in the split.
    pub index: usize,
    /// Sample id.
    pub id: String,
    /// The evaluation caption (the first one).
    pub caption: String,
    /// Raw (un-normalised) SMPL-RIFKE features `[F, 205]`, on the CPU.
    pub features: Tensor,
    /// The dataset's CLIP token features of the caption `[L, 512]`, when it has them.
    pub text_tokens: Option<Tensor>,
}

impl EvalSample {
    /// Number of frames of the real motion.
    pub fn frames(&self) -> usize {
        self.features.dims().first().copied().unwrap_or(0)
    }
}

/// The first `count` samples of `source` (all when it holds fewer), each with its first
/// caption and, when the source has them, that caption's CLIP token features.
pub fn select_samples(source: &dyn MotionSource, count: usize) -> Result<Vec<EvalSample>> {
    let n = count.min(source.len());
    let with_text = source.has_text();
    let feat = motion_data::FEATURE_DIM;
    (0..n)
        .map(|i| {
            let id = source.id(i).to_string();
            let bad = |reason: String| read_err(format!("sample {id}"), reason);
            let caption = source
                .captions(i)
                .first()
                .cloned()
                .ok_or_else(|| bad("has no caption".into()))?;
            let frames = source.frames(i);
            let mut buf = vec![0f32; frames * feat];
            source
                .copy_frames(i, 0, &mut buf)
                .map_err(|e| bad(e.to_string()))?;
            let features = Tensor::from_vec(buf, (frames, feat), &Device::Cpu)?;
            let text_tokens = if with_text {
                let mut t = Vec::new();
                let l = source
                    .text_tokens(i, 0, &mut t)
                    .map_err(|e| bad(e.to_string()))?;
                Some(Tensor::from_vec(
                    t,
                    (l, motion_data::TEXT_DIM),
                    &Device::Cpu,
                )?)
            } else {
                None
            };
            Ok(EvalSample {
                index: i,
                id,
                caption,
                features,
                text_tokens,
            })
        })
        .collect()
}

/// The text features of one evaluation caption: the encoder's pooled vector (absent for the
/// dataset's CLIP token files, whose end-of-text state is the pooled vector) and its token
/// states `[L, C]`, which feed the TMR text encoder.
#[derive(Debug, Clone)]
pub struct CaptionFeatures {
    /// Pooled `[C]`, when a text encoder produced the features.
    pub pooled: Option<Tensor>,
    /// Token states `[L, C]`.
    pub tokens: Tensor,
}

impl CaptionFeatures {
    /// The model's condition: the token states for a sequence-conditioned model, else the
    /// pooled vector (the pipeline takes the end-of-text state of CLIP tokens when there is
    /// none).
    pub fn condition(&self, sequential: bool) -> Tensor {
        match (&self.pooled, sequential) {
            (Some(p), false) => p.clone(),
            _ => self.tokens.clone(),
        }
    }
}

/// Where the text features of the evaluation captions come from.
pub enum TextSource {
    /// A text-encoder folder given by the user (CLIP or sentence encoder), and its path.
    Encoder(Box<dyn TextEncoder + Send + Sync>, PathBuf),
    /// The dataset's `caption_clip/` token features, and the dataset folder.
    Dataset(PathBuf),
    /// The model folder's own text encoder.
    Model,
}

impl std::fmt::Debug for TextSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextSource::Encoder(_, dir) => f.debug_tuple("Encoder").field(dir).finish(),
            TextSource::Dataset(dir) => f.debug_tuple("Dataset").field(dir).finish(),
            TextSource::Model => f.write_str("Model"),
        }
    }
}

impl TextSource {
    /// The first that applies: `text_encoder` (a folder, told apart by its `config.json`); the
    /// dataset's precomputed features; the text encoder the model folder `checkpoint` names.
    pub fn choose(
        text_encoder: Option<&Path>,
        data: &Path,
        data_has_text: bool,
        checkpoint: &Path,
        device: &Device,
    ) -> Result<Self> {
        if let Some(dir) = text_encoder {
            let (_, encoder) = crate::open_text_encoder(dir, device)?;
            return Ok(Self::Encoder(encoder, dir.to_path_buf()));
        }
        if data_has_text {
            return Ok(Self::Dataset(data.to_path_buf()));
        }
        let config = checkpoint.join("config.json");
        if config.is_file() && crate::ModelConfig::read(&config)?.text_encoder.is_some() {
            return Ok(Self::Model);
        }
        Err(PipelineError::Option {
            name: "--text-encoder".into(),
            reason: format!(
                "{} has no precomputed caption_clip/ features and the model names no text \
                 encoder: pass a text-encoder folder (e.g. --text-encoder \
                 fixtures/text_encoders/clip)",
                data.display()
            ),
        })
    }

    /// The features of each sample's evaluation caption, and a label of where they came from;
    /// `on_done` is called with the number encoded so far.
    pub fn caption_features(
        &self,
        samples: &[EvalSample],
        pipeline: &crate::TextToMotion,
        on_done: &mut dyn FnMut(usize),
    ) -> Result<(Vec<CaptionFeatures>, String)> {
        let mut out = Vec::with_capacity(samples.len());
        let label = match self {
            TextSource::Dataset(data) => {
                for s in samples {
                    let tokens = s.text_tokens.clone().ok_or_else(|| {
                        read_err(
                            data,
                            format!("sample {} has no caption_clip features", s.id),
                        )
                    })?;
                    out.push(CaptionFeatures {
                        pooled: None,
                        tokens,
                    });
                }
                format!("{}/caption_clip", data.display())
            }
            TextSource::Encoder(encoder, dir) => {
                encode_in_chunks(encoder.as_ref(), samples, &mut out, on_done)?;
                format!("text encoder {}", dir.display())
            }
            TextSource::Model => {
                let encoder =
                    pipeline
                        .model()
                        .text_encoder()
                        .ok_or_else(|| PipelineError::Option {
                            name: "text encoder".into(),
                            reason: "the model has no text encoder".into(),
                        })?;
                encode_in_chunks(encoder, samples, &mut out, on_done)?;
                "the model folder's text encoder".to_string()
            }
        };
        Ok((out, label))
    }
}

/// Encodes the samples' captions 64 at a time into `out` (pooled vector and the valid token
/// states of each), calling `on_done` with the count so far.
fn encode_in_chunks(
    encoder: &dyn TextEncoder,
    samples: &[EvalSample],
    out: &mut Vec<CaptionFeatures>,
    on_done: &mut dyn FnMut(usize),
) -> Result<()> {
    for chunk in samples.chunks(64) {
        let captions: Vec<&str> = chunk.iter().map(|s| s.caption.as_str()).collect();
        let f = encoder.encode(&captions)?;
        let lengths = f.mask.to_device(&Device::Cpu)?.sum(1)?.to_vec1::<f32>()?;
        let tokens = f.tokens.to_device(&Device::Cpu)?;
        let pooled = f.pooled.to_device(&Device::Cpu)?;
        for (b, l) in lengths.iter().enumerate() {
            out.push(CaptionFeatures {
                pooled: Some(pooled.i(b)?),
                tokens: tokens.i(b)?.narrow(0, 0, *l as usize)?.contiguous()?,
            });
        }
        on_done(out.len());
    }
    Ok(())
}

/// Stacks `[F_i, C]` sequences into a zero-padded `[B, max F, C]` batch and its mask `[B, F]`
/// (1 = valid), on `device`.
fn pad_sequences(seqs: &[&Tensor], device: &Device) -> Result<(Tensor, Tensor)> {
    let longest = seqs.iter().map(|t| t.dims()[0]).max().unwrap_or(0);
    let mut rows = Vec::with_capacity(seqs.len());
    let mut mask = Vec::with_capacity(seqs.len() * longest);
    for t in seqs {
        let f = t.dims()[0];
        let t = t.to_dtype(DType::F32)?.to_device(device)?;
        rows.push(t.pad_with_zeros(0, 0, longest - f)?);
        mask.extend(std::iter::repeat_n(1f32, f));
        mask.extend(std::iter::repeat_n(0f32, longest - f));
    }
    let x = Tensor::stack(&rows, 0)?;
    let mask = Tensor::from_vec(mask, (seqs.len(), longest), device)?;
    Ok((x, mask))
}

/// TMR motion embeddings `[N, d]` (on the CPU) of raw (denormalised) motions `[F_i, 205]`,
/// encoded `batch` at a time with padding masks (the encoder ignores padded frames, so the
/// batching does not change the result). `on_batch` is called with the number encoded so far.
pub fn embed_motions(
    tmr: &Tmr,
    motions: &[&Tensor],
    batch: usize,
    device: &Device,
    on_batch: &mut dyn FnMut(usize),
) -> Result<Tensor> {
    let mut out = Vec::new();
    let mut done = 0;
    for chunk in motions.chunks(batch.max(1)) {
        let (x, mask) = pad_sequences(chunk, device)?;
        out.push(tmr.encode_motion(&x, &mask)?.to_device(&Device::Cpu)?);
        done += chunk.len();
        on_batch(done);
    }
    Ok(Tensor::cat(&out, 0)?)
}

/// TMR text embeddings `[N, d]` (on the CPU) of CLIP token features `[L_i, C]`.
pub fn embed_texts(tmr: &Tmr, tokens: &[&Tensor], batch: usize, device: &Device) -> Result<Tensor> {
    let want = tmr.text.config().nfeats;
    if let Some((i, t)) = tokens
        .iter()
        .enumerate()
        .find(|(_, t)| t.dims().len() != 2 || t.dims()[1] != want)
    {
        return Err(PipelineError::Option {
            name: "text features".into(),
            reason: format!(
                "caption {i} has token features of shape {:?} but the TMR text encoder takes \
                 [L, {want}] (CLIP token features of the width it was trained on)",
                t.dims()
            ),
        });
    }
    let mut out = Vec::new();
    for chunk in tokens.chunks(batch.max(1)) {
        let (x, mask) = pad_sequences(chunk, device)?;
        out.push(tmr.encode_text(&x, &mask)?.to_device(&Device::Cpu)?);
    }
    Ok(Tensor::cat(&out, 0)?)
}

/// Settings of [`score`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreConfig {
    /// Retrieval batch size (64 in the reference; R@k depends on it).
    pub retrieval_batch: usize,
    /// PRDC neighbourhood size and recall formula; `splits` is the most splits used (fewer
    /// when the sample is too small, see [`prdc_splits`]).
    pub prdc: PrdcConfig,
    /// Resamples, confidence and seed of the intervals.
    pub bootstrap: BootstrapConfig,
}

impl Default for ScoreConfig {
    /// The reference: batches of 64, PRDC with k = 3 over 5 splits (corrected recall), 1000
    /// resamples for 95% intervals.
    fn default() -> Self {
        Self {
            retrieval_batch: metrics::REFERENCE_BATCH_SIZE,
            prdc: PrdcConfig::default(),
            bootstrap: BootstrapConfig::default(),
        }
    }
}

impl ScoreConfig {
    /// Checks the settings against a sample of `n` rows.
    pub fn validate(&self, n: usize) -> Result<()> {
        let bad = |name: &str, reason: String| PipelineError::Option {
            name: name.into(),
            reason,
        };
        let k_max = TOP_K[TOP_K.len() - 1];
        if self.retrieval_batch <= k_max {
            return Err(bad(
                "batch size",
                format!(
                    "{} is too small: R@{k_max} ranks among more than {k_max} candidates",
                    self.retrieval_batch
                ),
            ));
        }
        if n < MIN_SAMPLES {
            return Err(bad(
                "samples",
                format!(
                    "{n} samples are too few: FD and PRDC intervals need at least {MIN_SAMPLES}"
                ),
            ));
        }
        if prdc_splits(n, self.prdc.k, self.prdc.splits).is_none() {
            return Err(bad(
                "samples",
                format!("{n} samples are too few for PRDC with k = {}", self.prdc.k),
            ));
        }
        Ok(())
    }
}

/// The number of consecutive PRDC splits used for `n` rows: the largest `s <= max_splits` for
/// which both the full set and its half-samples cut into exactly `s` chunks of more than `k`
/// rows (the reference's 5 splits at its 640 samples; fewer for small test sets). `None` when
/// not even one split works.
pub fn prdc_splits(n: usize, k: usize, max_splits: usize) -> Option<usize> {
    let fits = |m: usize, s: usize| {
        let size = m.div_ceil(s);
        size > 0 && m.div_ceil(size) == s && m - (s - 1) * size > k
    };
    (1..=max_splits.max(1))
        .rev()
        .find(|&s| fits(n, s) && fits(n / 2, s))
}

/// The scores of one candidate set (generated motions, or the real ones for the ceiling), each
/// with its confidence interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSet {
    /// Fréchet distance between the real and the candidate motion embeddings.
    pub fd: Interval,
    /// TMR-score: mean cosine similarity of candidate motion and text embeddings, floored at 0.
    pub tmr_score: Interval,
    /// Precision, recall, density, coverage of the candidates against the real motions.
    pub prdc: PrdcIntervals,
    /// R@1/2/3 and MM-distance, texts querying the candidate motions within batches.
    pub retrieval: RetrievalIntervals,
    /// PRDC splits used.
    pub prdc_splits: usize,
}

impl MetricSet {
    /// Flat rows: `fd`, `tmr_score`, `precision`, `recall`, `density`, `coverage`, `R@1`,
    /// `R@2`, `R@3`, `mm_distance`, each with its interval.
    pub fn rows(&self) -> Vec<MetricRow> {
        let mut rows = vec![
            MetricRow::interval("fd", &self.fd),
            MetricRow::interval("tmr_score", &self.tmr_score),
        ];
        rows.extend(self.prdc.rows());
        rows.extend(self.retrieval.rows(&TOP_K));
        rows
    }

    /// `(name, interval)` pairs in [`MetricSet::rows`] order.
    pub fn named(&self) -> Vec<(String, Interval)> {
        let mut v = vec![
            ("fd".to_string(), self.fd),
            ("tmr_score".to_string(), self.tmr_score),
            ("precision".to_string(), self.prdc.precision),
            ("recall".to_string(), self.prdc.recall),
            ("density".to_string(), self.prdc.density),
            ("coverage".to_string(), self.prdc.coverage),
        ];
        v.extend(
            TOP_K
                .iter()
                .zip(&self.retrieval.recall_at_k)
                .map(|(k, iv)| (format!("R@{k}"), *iv)),
        );
        v.push(("mm_distance".to_string(), self.retrieval.mm_distance));
        v
    }
}

fn metrics_err(what: &'static str) -> impl Fn(metrics::MetricsError) -> PipelineError {
    move |e| PipelineError::Metrics {
        metric: what.into(),
        source: e,
    }
}

/// Scores `candidate` motion embeddings against `real` motion embeddings and `text` embeddings
/// (row `i` of each belongs to sample `i`).
///
/// # Shapes
/// `real [N, d]`, `candidate [N, d]`, `text [N, d]`.
pub fn score(
    real: &Tensor,
    candidate: &Tensor,
    text: &Tensor,
    cfg: &ScoreConfig,
) -> Result<MetricSet> {
    let emb = |t: &Tensor, what: &'static str| {
        Embeddings::from_tensor(&t.to_dtype(DType::F32)?).map_err(metrics_err(what))
    };
    let (real, cand, text) = (
        emb(real, "real embeddings")?,
        emb(candidate, "candidate embeddings")?,
        emb(text, "text embeddings")?,
    );
    cfg.validate(real.rows())?;
    let splits = prdc_splits(real.rows(), cfg.prdc.k, cfg.prdc.splits).unwrap_or(1);
    let prdc_cfg = PrdcConfig { splits, ..cfg.prdc };
    let b = &cfg.bootstrap;
    Ok(MetricSet {
        fd: metrics::bootstrap_frechet(&real, &cand, b).map_err(metrics_err("FD"))?,
        tmr_score: metrics::bootstrap_tmr_score(&cand, &text, b)
            .map_err(metrics_err("TMR-score"))?,
        prdc: metrics::bootstrap_prdc(&real, &cand, &prdc_cfg, b).map_err(metrics_err("PRDC"))?,
        retrieval: metrics::bootstrap_retrieval(&text, &cand, cfg.retrieval_batch, &TOP_K, b)
            .map_err(metrics_err("retrieval"))?,
        prdc_splits: splits,
    })
}

/// A metric with its interval, as written to `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedInterval {
    /// Metric name (`fd`, `tmr_score`, `precision`, ..., `R@1`, ..., `mm_distance`).
    pub metric: String,
    /// Estimate and interval.
    #[serde(flatten)]
    pub interval: Interval,
}

fn named(set: &MetricSet) -> Vec<NamedInterval> {
    set.named()
        .into_iter()
        .map(|(metric, interval)| NamedInterval { metric, interval })
        .collect()
}

/// What was evaluated, and how (the `settings` of `metrics.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSettings {
    /// Dataset folder.
    pub data: PathBuf,
    /// Split name.
    pub split: String,
    /// Model checkpoint or folder.
    pub checkpoint: PathBuf,
    /// TMR folder.
    pub tmr: PathBuf,
    /// Where the TMR motion statistics came from.
    pub tmr_stats: String,
    /// Where the text features came from.
    pub text_features: String,
    /// Samples evaluated.
    pub samples: usize,
    /// Retrieval (and generation) batch size.
    pub batch_size: usize,
    /// Sampler name.
    pub sampler: String,
    /// Denoiser calls.
    pub steps: usize,
    /// Time grid of the sampler.
    #[serde(default = "uniform_label")]
    pub grid: String,
    /// Guidance weight.
    pub guidance: f64,
    /// Base seed (motion `i` uses [`motion_seed`]`(seed, i)`; also the bootstrap seed).
    pub seed: u64,
    /// Motions generated shorter than their real motion (capped at the model's maximum).
    pub capped_lengths: usize,
    /// Scoring settings.
    pub score: ScoreConfig,
}

fn uniform_label() -> String {
    "uniform".into()
}

/// The content of `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// How the evaluation was run.
    pub settings: EvalSettings,
    /// Generated motions vs real motions and texts.
    pub generated: Vec<NamedInterval>,
    /// Real motions in the place of the generated ones: the ceiling.
    pub real: Vec<NamedInterval>,
    /// PRDC splits used (the same for both rows).
    pub prdc_splits: usize,
}

impl EvalReport {
    /// A report from the two metric sets.
    pub fn new(settings: EvalSettings, generated: &MetricSet, real: &MetricSet) -> Self {
        Self {
            settings,
            generated: named(generated),
            real: named(real),
            prdc_splits: generated.prdc_splits,
        }
    }

    /// CSV rows: `generated.<metric>` and `real.<metric>` with their intervals.
    pub fn rows(&self) -> Vec<MetricRow> {
        [("generated", &self.generated), ("real", &self.real)]
            .into_iter()
            .flat_map(|(set, v)| {
                v.iter()
                    .map(move |n| MetricRow::interval(format!("{set}.{}", n.metric), &n.interval))
            })
            .collect()
    }

    /// Writes `metrics.json` and `metrics.csv` into `dir`, each atomically; returns their
    /// paths.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        let json = dir.join("metrics.json");
        let csv = dir.join("metrics.csv");
        let werr = |p: &Path| {
            let p = p.to_path_buf();
            move |e: metrics::MetricsError| crate::error::write_err(&p, e)
        };
        metrics::write_json(&json, self).map_err(werr(&json))?;
        metrics::write_csv(&csv, &self.rows()).map_err(werr(&csv))?;
        Ok((json, csv))
    }

    /// The results as a text table: one line per metric, the generated and the real (ceiling)
    /// values with their intervals.
    pub fn table(&self) -> String {
        let label = |m: &str| match m {
            "fd" => "FD".to_string(),
            "tmr_score" => "TMR-score".to_string(),
            "mm_distance" => "MM-distance".to_string(),
            other => other.to_string(),
        };
        let arrow = |m: &str| match m {
            "fd" | "mm_distance" => "(lower is better)",
            _ => "(higher is better)",
        };
        let cell = |iv: &Interval| format!("{:.3} [{:.3}, {:.3}]", iv.estimate, iv.lower, iv.upper);
        let conf = self
            .generated
            .first()
            .map(|n| n.interval.confidence * 100.0)
            .unwrap_or(95.0);
        let mut out = format!(
            "{:<12} {:<26} {:<26}\n",
            "metric",
            format!("generated ({conf:.0}% CI)"),
            "real (ceiling)"
        );
        for (g, r) in self.generated.iter().zip(&self.real) {
            out.push_str(&format!(
                "{:<12} {:<26} {:<26} {}\n",
                label(&g.metric),
                cell(&g.interval),
                cell(&r.interval),
                arrow(&g.metric)
            ));
        }
        out
    }
}

/// The part of an evaluation that does not depend on how motions are sampled: the test samples,
/// their caption features, one [`Request`](crate::Request) per sample (real length capped at the
/// model's maximum, seed [`motion_seed`]), and the TMR embeddings of the real motions and of the
/// captions. [`Evaluation::run`] then scores any [`GenerateOptions`](crate::GenerateOptions)
/// against it, so a sampler sweep encodes the captions and the real motions once.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The samples, in split order.
    pub samples: Vec<EvalSample>,
    /// Each sample's caption features.
    pub texts: Vec<CaptionFeatures>,
    /// Where the caption features came from.
    pub text_label: String,
    /// What is generated for each sample.
    pub requests: Vec<crate::Request>,
    /// Requests whose length was capped at the model's maximum.
    pub capped: usize,
    /// TMR embeddings of the real motions `[N, d]` (CPU).
    pub real_emb: Tensor,
    /// TMR embeddings of the captions `[N, d]` (CPU).
    pub text_emb: Tensor,
    /// Motions per network batch and per retrieval batch.
    pub batch_size: usize,
}

/// The generated motions of one [`Evaluation::run`] and their scores.
#[derive(Debug, Clone)]
pub struct EvalRun {
    /// Generated motions, one per sample.
    pub motions: Vec<crate::Motion>,
    /// Their TMR embeddings `[N, d]` (CPU).
    pub embeddings: Tensor,
    /// Scores against the real motions and the captions.
    pub metrics: MetricSet,
    /// Wall-clock seconds spent generating (sampling and decoding; not embedding or scoring).
    pub generation_seconds: f64,
}

impl Evaluation {
    /// Encodes the captions with `text_source`, checks their width against the model and the
    /// evaluator, builds the requests with base seed `seed`, and embeds the real motions and the
    /// captions with `tmr` in batches of `batch_size`. `on_progress(stage, done, total)` reports
    /// `"encoding"` (captions) and `"embedding"` (real motions).
    pub fn prepare(
        pipeline: &crate::TextToMotion,
        tmr: &Tmr,
        samples: Vec<EvalSample>,
        text_source: &TextSource,
        seed: u64,
        batch_size: usize,
        on_progress: &mut dyn FnMut(&str, usize, usize),
    ) -> Result<Self> {
        if batch_size == 0 {
            return Err(PipelineError::Option {
                name: "batch size".into(),
                reason: "must be at least 1".into(),
            });
        }
        let n = samples.len();
        let (texts, text_label) = text_source
            .caption_features(&samples, pipeline, &mut |d| on_progress("encoding", d, n))?;
        let cfg = pipeline.model().config();
        if let Some(t) = texts.first().map(|t| &t.tokens)
            && t.dims()[1] != cfg.num_cond_feats
        {
            return Err(PipelineError::Option {
                name: "text features".into(),
                reason: format!(
                    "{text_label} gives {}-d token features but the model is conditioned on \
                     {}-d features",
                    t.dims()[1],
                    cfg.num_cond_feats
                ),
            });
        }
        let sequential = cfg.variant.sequential_condition();
        let max_frames = pipeline.model().max_frames();
        let requests: Vec<crate::Request> = samples
            .iter()
            .zip(&texts)
            .map(|(s, t)| crate::Request {
                text: crate::TextInput::Features(t.condition(sequential)),
                frames: s.frames().min(max_frames),
                seed: motion_seed(seed, s.index),
                constraint: None,
            })
            .collect();
        let capped = samples.iter().filter(|s| s.frames() > max_frames).count();
        let device = pipeline.model().dit().device().clone();
        let real_feats: Vec<&Tensor> = samples.iter().map(|s| &s.features).collect();
        let real_emb = embed_motions(tmr, &real_feats, batch_size, &device, &mut |d| {
            on_progress("embedding", d, n)
        })?;
        let token_refs: Vec<&Tensor> = texts.iter().map(|t| &t.tokens).collect();
        let text_emb = embed_texts(tmr, &token_refs, batch_size, &device)?;
        Ok(Self {
            samples,
            texts,
            text_label,
            requests,
            capped,
            real_emb,
            text_emb,
            batch_size,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The real motions scored against themselves: the ceiling row.
    pub fn real_metrics(&self, cfg: &ScoreConfig) -> Result<MetricSet> {
        score(&self.real_emb, &self.real_emb, &self.text_emb, cfg)
    }

    /// Generates one motion per request with `opts` (in batches of at most
    /// [`Evaluation::batch_size`]), embeds them with `tmr` and scores them.
    /// `on_progress(stage, done, total)` reports `"generating"` (motions, fractional progress
    /// rounded down) and `"embedding"`.
    pub fn run(
        &self,
        pipeline: &crate::TextToMotion,
        tmr: &Tmr,
        opts: &crate::GenerateOptions,
        cfg: &ScoreConfig,
        on_progress: &mut dyn FnMut(&str, usize, usize),
    ) -> Result<EvalRun> {
        self.run_requests(pipeline, tmr, &self.requests, opts, cfg, on_progress)
    }

    /// As [`Evaluation::run`] with other requests, one per sample in the same order (e.g.
    /// [`Evaluation::requests`] with constraints attached): editing is scored this way.
    pub fn run_requests(
        &self,
        pipeline: &crate::TextToMotion,
        tmr: &Tmr,
        requests: &[crate::Request],
        opts: &crate::GenerateOptions,
        cfg: &ScoreConfig,
        on_progress: &mut dyn FnMut(&str, usize, usize),
    ) -> Result<EvalRun> {
        if requests.len() != self.samples.len() {
            return Err(PipelineError::Option {
                name: "requests".into(),
                reason: format!(
                    "{} requests for {} samples: one per sample, in order",
                    requests.len(),
                    self.samples.len()
                ),
            });
        }
        let n = requests.len();
        let mut opts = opts.clone();
        opts.max_batch = opts.max_batch.min(self.batch_size).max(1);
        let start = std::time::Instant::now();
        let mut motions = Vec::with_capacity(n);
        for chunk in requests.chunks(self.batch_size) {
            let done = motions.len();
            let generated = pipeline.generate_with(chunk, &opts, &mut |p| {
                let frac = p.done as f64 / p.total.max(1) as f64;
                on_progress(
                    "generating",
                    done + (frac * chunk.len() as f64).floor() as usize,
                    n,
                );
            })?;
            motions.extend(generated);
            on_progress("generating", motions.len(), n);
        }
        let generation_seconds = start.elapsed().as_secs_f64();
        let device = pipeline.model().dit().device().clone();
        let feats: Vec<&Tensor> = motions.iter().map(|m| &m.features).collect();
        let embeddings = embed_motions(tmr, &feats, self.batch_size, &device, &mut |d| {
            on_progress("embedding", d, n)
        })?;
        let metrics = score(&self.real_emb, &embeddings, &self.text_emb, cfg)?;
        Ok(EvalRun {
            motions,
            embeddings,
            metrics,
            generation_seconds,
        })
    }
}

/// A one-line description of a dataset error (a fault report keeps its count and first fault).
pub fn data_error(root: &Path, e: motion_data::DataError) -> PipelineError {
    let reason = match e {
        motion_data::DataError::Faults(r) => {
            let first = r.faults.first().map(|f| f.to_string()).unwrap_or_default();
            format!("{} fault(s); first: {first}", r.faults.len())
        }
        other => other.to_string(),
    };
    read_err(root, reason.replace('\n', "; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prdc_splits_keep_five_at_the_reference_size_and_shrink_for_small_sets() {
        assert_eq!(prdc_splits(640, 3, 5), Some(5));
        assert_eq!(prdc_splits(8, 3, 5), Some(1));
        assert_eq!(prdc_splits(16, 3, 5), Some(2));
        assert_eq!(prdc_splits(7, 3, 5), None);
    }

    #[test]
    fn motion_seeds_differ_across_indices_and_base_seeds() {
        assert_ne!(motion_seed(0, 0), motion_seed(0, 1));
        assert_ne!(motion_seed(0, 1), motion_seed(1, 0));
        assert_eq!(motion_seed(7, 3), motion_seed(7, 3));
    }

    #[test]
    fn scoring_the_real_set_against_itself_gives_zero_fd_and_full_coverage() -> Result<()> {
        let n = 24;
        let d = 4;
        let v: Vec<f32> = (0..n * d)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let real = Tensor::from_vec(v, (n, d), &Device::Cpu)?;
        let text = (&real * 0.5)?;
        let cfg = ScoreConfig {
            retrieval_batch: 8,
            bootstrap: BootstrapConfig {
                resamples: 20,
                ..BootstrapConfig::default()
            },
            ..ScoreConfig::default()
        };
        let s = score(&real, &real, &text, &cfg)?;
        assert!(s.fd.estimate.abs() < 1e-6, "{}", s.fd.estimate);
        assert_eq!(s.prdc.coverage.estimate, 1.0);
        assert_eq!(s.prdc.precision.estimate, 1.0);
        assert_eq!(s.named().len(), 10);
        Ok(())
    }
}
