//! Text in, motion out: [`TextToMotion`] composes a text encoder (or precomputed text features),
//! a sampler over the diffusion transformer with classifier-free guidance, the feature
//! normaliser and the SMPL-RIFKE decoder.
//!
//! ```text
//! caption --TextEncoder--> condition --Sampler x Guided(Dit)--> x0 [F, 205] (normalised)
//!         --Normalizer::unnormalize--> features [F, 205] --rifke::decode--> joints, rotations
//!         --Motion::body_params + BodyModel::forward--> vertices
//! ```
//!
//! # Determinism
//! Request `i` is sampled from its own seeded noise stream, and requests are batched only with
//! requests of the same length (token conditions are all padded to 77 positions), so a motion
//! depends on its caption, length and seed only, not on the other requests of the call: the
//! same request gives the same motion up to float rounding (matrix-multiply blocking changes
//! with the batch's row count, ~1e-9 on the features), and bit for bit with
//! [`GenerateOptions::max_batch`] = 1 or in a batch of the same composition.
//!
//! # Guide
#![doc = include_str!("../docs/pipeline.md")]

use std::collections::BTreeMap;

use candle::{DType, Device, IndexOp, Tensor};
use diffusion::{
    Conditioning, Denoiser, Guided, Inpainted, KnownPart, SamplerKind, SeededNoise, TimeGrid,
};
use smpl::{BodyModel, BodyOutput, BodyParams};

use crate::editing::{Blended, Constraint, FollowPath, Segment, Trajectory, WindowPlan};
use crate::error::{PipelineError, Result};
use crate::model::MotionModel;

/// Token positions of a sequence condition: CLIP's context length. Token conditions are
/// zero-padded to it, with a token mask.
pub const MAX_CONDITION_TOKENS: usize = 77;

/// What a request is conditioned on.
#[derive(Debug, Clone)]
pub enum TextInput {
    /// A caption, encoded by the model's text encoder.
    Caption(String),
    /// Precomputed text features: `[C]` (a pooled vector) or `[L, C]` (token states, start of
    /// text through end of text, as the reference's `caption_clip/seq` files). A pooled model
    /// given `[L, C]` takes the last row (the end-of-text state); a token model given `[C]`
    /// uses it as a single token.
    Features(Tensor),
    /// No text: the null condition (zeros), i.e. the unconditional model.
    Unconditional,
}

/// One motion to generate.
#[derive(Debug, Clone)]
pub struct Request {
    /// The condition.
    pub text: TextInput,
    /// Length in frames (at the model's fps), `1..=max_frames`.
    pub frames: usize,
    /// Seed of this motion's noise.
    pub seed: u64,
    /// Frames and channels fixed to given values (a prefix to continue, keyframes to pass
    /// through); `None` for free generation. Its length must equal `frames`.
    pub constraint: Option<Constraint>,
}

impl Request {
    /// A captioned request.
    pub fn caption(caption: impl Into<String>, frames: usize, seed: u64) -> Self {
        Self {
            text: TextInput::Caption(caption.into()),
            frames,
            seed,
            constraint: None,
        }
    }

    /// A request conditioned on precomputed text features (`[C]` or `[L, C]`).
    pub fn features(features: Tensor, frames: usize, seed: u64) -> Self {
        Self {
            text: TextInput::Features(features),
            frames,
            seed,
            constraint: None,
        }
    }

    /// This request with `constraint` (see [`crate::editing`]).
    pub fn with_constraint(mut self, constraint: Constraint) -> Self {
        self.constraint = Some(constraint);
        self
    }

    /// The caption, if the request has one.
    pub fn caption_text(&self) -> Option<&str> {
        match &self.text {
            TextInput::Caption(c) => Some(c),
            _ => None,
        }
    }
}

/// Sampling settings of one [`TextToMotion::generate_with`] call.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Sampler.
    pub sampler: SamplerKind,
    /// Denoiser calls.
    pub steps: usize,
    /// Classifier-free guidance weight (1 = conditional model alone, no extra batch).
    pub guidance: f64,
    /// Most motions sampled in one network batch (memory bound); at least 1.
    pub max_batch: usize,
    /// Where the sampler's noise levels sit (the reference's uniform time grid by default).
    pub grid: TimeGrid,
}

impl GenerateOptions {
    /// The model's stored sampling defaults, batches of at most 64.
    pub fn for_model(model: &MotionModel) -> Self {
        let s = model.sampling();
        Self {
            sampler: s.sampler,
            steps: s.steps,
            guidance: s.guidance,
            max_batch: 64,
            grid: s.grid,
        }
    }

    /// These options with each given value replacing the stored one (a command line's
    /// `--sampler`, `--steps`, `--guidance`).
    pub fn with_overrides(
        mut self,
        sampler: Option<SamplerKind>,
        steps: Option<usize>,
        guidance: Option<f64>,
    ) -> Self {
        self.sampler = sampler.unwrap_or(self.sampler);
        self.steps = steps.unwrap_or(self.steps);
        self.guidance = guidance.unwrap_or(self.guidance);
        self
    }

    /// These options with `grid` replacing the stored time grid when given (`--grid`).
    pub fn with_grid(mut self, grid: Option<TimeGrid>) -> Self {
        self.grid = grid.unwrap_or(self.grid);
        self
    }

    /// Network evaluations per motion: one guided evaluation per step (a guided evaluation
    /// runs the conditional and the unconditional branch in one batch).
    pub fn nfe(&self) -> usize {
        self.steps
    }

    /// A short label such as `dpm++ 10 steps` (with the grid when it is not the uniform one).
    pub fn label(&self) -> String {
        match self.grid {
            TimeGrid::Uniform => format!("{} {} steps", self.sampler, self.steps),
            g => format!("{} {} steps, {g} grid", self.sampler, self.steps),
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |name: &str, reason: String| {
            Err(PipelineError::Option {
                name: name.into(),
                reason,
            })
        };
        if self.steps == 0 {
            return bad("steps", "must be at least 1".into());
        }
        if !self.guidance.is_finite() {
            return bad("guidance", format!("{} is not finite", self.guidance));
        }
        if self.max_batch == 0 {
            return bad("max_batch", "must be at least 1".into());
        }
        if let TimeGrid::Power { rho } = self.grid
            && !(rho.is_finite() && rho > 0.0)
        {
            return bad(
                "grid",
                format!("power exponent {rho} must be positive and finite"),
            );
        }
        Ok(())
    }
}

/// Progress of a [`TextToMotion::generate_with`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Denoiser steps done so far, over all batches.
    pub done: usize,
    /// Denoiser steps of the whole call.
    pub total: usize,
}

/// A generated motion.
#[derive(Debug, Clone)]
pub struct Motion {
    /// The caption it was generated from, if any.
    pub caption: Option<String>,
    /// Seed of its noise.
    pub seed: u64,
    /// Frames per second.
    pub fps: f32,
    /// Raw (denormalised) SMPL-RIFKE features `[F, 205]`.
    pub features: Tensor,
    /// Decoded joints `[F, 24, 3]`: SMPL-H joints 0..21, left index 1, right index 1; metres,
    /// Z up (the SMPL-RIFKE world).
    pub joints: Tensor,
    /// Decoded local rotations `[F, 22, 3, 3]` (joint 0 = global orientation).
    pub rotations: Tensor,
}

impl Motion {
    /// A motion from raw (denormalised) SMPL-RIFKE features `[F, 205]`, e.g. a dataset sample,
    /// decoded to joints and rotations.
    pub fn from_features(
        features: Tensor,
        fps: f32,
        caption: Option<String>,
        seed: u64,
    ) -> Result<Self> {
        let features = features.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        let (joints, rotations) = motion_repr::rifke::decode(&features)?;
        Ok(Self {
            caption,
            seed,
            fps,
            features,
            joints,
            rotations,
        })
    }

    /// Number of frames `F`.
    pub fn frames(&self) -> usize {
        self.features.dims().first().copied().unwrap_or(0)
    }

    /// Duration in seconds.
    pub fn seconds(&self) -> f32 {
        self.frames() as f32 / self.fps
    }

    /// Frames `start..start + frames` as a motion of their own (e.g. one segment of a
    /// timeline, to score it against its caption): the features of those frames, except that
    /// frame 0's root velocity and yaw rate become the absolute position and heading at
    /// `start`, as in a motion that begins there. Everything else is left as generated (not
    /// re-encoded), so a part is scored like the motions the model makes; decoding the part's
    /// features gives back the same joints.
    pub fn part(&self, start: usize, frames: usize, caption: Option<String>) -> Result<Self> {
        let total = self.frames();
        if frames == 0 || start.checked_add(frames).is_none_or(|end| end > total) {
            return Err(PipelineError::Option {
                name: "motion part".into(),
                reason: format!(
                    "frames {start}..{} of a {total}-frame motion: must be a non-empty range \
                     inside it",
                    start.saturating_add(frames)
                ),
            });
        }
        let layout = motion_repr::FeatureLayout::SMPL_RIFKE;
        let d = layout.dim();
        let all = self.features.flatten_all()?.to_vec1::<f32>()?;
        let mut x = all[start * d..(start + frames) * d].to_vec();
        if start > 0 {
            // The heading and pelvis position at `start`, integrated as decoding does.
            let yaw = (0..=start).fold(0f32, |a, t| a + all[t * d + layout.vel_angles.start]);
            let pelvis = self.joints.i((start, 0))?.to_vec1::<f32>()?;
            let (s, c) = yaw.sin_cos();
            let v = layout.vel_root_xy_local.start;
            x[v] = c * pelvis[0] + s * pelvis[1];
            x[v + 1] = -s * pelvis[0] + c * pelvis[1];
            x[layout.vel_angles.start] = yaw;
        }
        let features = Tensor::from_vec(x, (frames, d), &Device::Cpu)?;
        let joints = self.joints.narrow(0, start, frames)?.contiguous()?;
        let rotations = self.rotations.narrow(0, start, frames)?.contiguous()?;
        Ok(Self {
            caption,
            seed: self.seed,
            fps: self.fps,
            features,
            joints,
            rotations,
        })
    }

    /// Cuts the motion into consecutive parts of `frames[i]` frames ([`Motion::part`]), e.g. a
    /// timeline into its segments; the lengths must add up to the motion's.
    pub fn split(&self, frames: &[usize]) -> Result<Vec<Self>> {
        let total = frames.iter().try_fold(0usize, |a, &f| a.checked_add(f));
        if total != Some(self.frames()) {
            return Err(PipelineError::Option {
                name: "motion parts".into(),
                reason: format!(
                    "parts of {frames:?} frames do not add up to the motion's {}",
                    self.frames()
                ),
            });
        }
        let mut at = 0;
        frames
            .iter()
            .map(|&f| {
                let part = self.part(at, f, None);
                at += f;
                part
            })
            .collect()
    }

    /// The body-model inputs of this motion (the reference's mapping,
    /// [`motion_repr::rifke::to_body_params`]).
    pub fn body_params(&self, body: &BodyModel) -> Result<BodyParams> {
        Ok(motion_repr::rifke::to_body_params(
            &self.joints,
            &self.rotations,
            body,
        )?)
    }

    /// Poses `body` with this motion: vertices `[F, V, 3]` and joints `[F, J, 3]`.
    pub fn pose(&self, body: &BodyModel) -> Result<BodyOutput> {
        Ok(body.forward(&self.body_params(body)?)?)
    }
}

/// Per-request condition, resolved before sampling.
struct Resolved {
    /// `[C]`, for pooled models.
    pooled: Tensor,
    /// `[L, C]`, for token models.
    tokens: Tensor,
}

/// The text-to-motion pipeline over a [`MotionModel`].
///
/// ```no_run
/// use motion_dit::{MotionModel, Request, TextToMotion};
/// let device = candle::Device::Cpu;
/// let model = MotionModel::from_folder("assets/default_model", &device)?;
/// let pipeline = TextToMotion::new(model);
/// let motions = pipeline.generate(&[Request::caption("a person walks in a circle", 120, 7)])?;
/// let body = smpl::BodyModel::from_npz("assets/open_body/smplh_open.npz", &device)?;
/// let posed = motions[0].pose(&body)?; // vertices [120, V, 3], metres, Z up
/// motion_dit::output::write_gif("walk.gif", &motions[0], &body, &Default::default())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct TextToMotion {
    model: MotionModel,
}

impl TextToMotion {
    /// A pipeline over `model`.
    pub fn new(model: MotionModel) -> Self {
        Self { model }
    }

    /// The model.
    pub fn model(&self) -> &MotionModel {
        &self.model
    }

    /// Generates one motion per request with the model's sampling defaults.
    pub fn generate(&self, requests: &[Request]) -> Result<Vec<Motion>> {
        self.generate_with(
            requests,
            &GenerateOptions::for_model(&self.model),
            &mut |_| {},
        )
    }

    /// Generates one motion per request (in request order), calling `progress` after every
    /// denoiser step. Every request is validated before any sampling starts.
    pub fn generate_with(
        &self,
        requests: &[Request],
        opts: &GenerateOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Vec<Motion>> {
        opts.validate()?;
        let resolved = requests
            .iter()
            .enumerate()
            .map(|(i, r)| self.resolve(i, r))
            .collect::<Result<Vec<_>>>()?;
        // Group by length: a batch shares one length, so no frame is padding.
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, r) in requests.iter().enumerate() {
            groups.entry(r.frames).or_default().push(i);
        }
        let batches: Vec<Vec<usize>> = groups
            .into_values()
            .flat_map(|g| {
                g.chunks(opts.max_batch)
                    .map(<[usize]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect();
        let total = batches.len() * opts.steps;
        let mut done = 0;
        let mut out: Vec<Option<Motion>> = vec![None; requests.len()];
        for batch in batches {
            let motions = self.sample_batch(requests, &resolved, &batch, opts, &mut |_| {
                done += 1;
                progress(Progress { done, total });
            })?;
            for (i, m) in batch.into_iter().zip(motions) {
                out[i] = Some(m);
            }
        }
        out.into_iter()
            .enumerate()
            .map(|(i, m)| {
                m.ok_or_else(|| PipelineError::Request {
                    index: i,
                    reason: "was not sampled".into(),
                })
            })
            .collect()
    }

    /// Encodes one caption with the model's text encoder: pooled `[C]` and tokens `[L, C]`.
    pub fn encode_caption(&self, caption: &str) -> Result<(Tensor, Tensor)> {
        let enc = self
            .model
            .text_encoder()
            .ok_or_else(|| PipelineError::Option {
                name: "text encoder".into(),
                reason: "this model has no text encoder: give precomputed text features \
                         (--text-features) or a model folder that names one"
                    .into(),
            })?;
        let f = enc.encode(&[caption])?;
        let n = f
            .mask
            .i(0)?
            .to_dtype(DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()? as usize;
        Ok((f.pooled.i(0)?, f.tokens.i(0)?.narrow(0, 0, n)?))
    }

    /// Token positions a sequence condition is padded to: CLIP's 77, or fewer when the
    /// network's condition position table is shorter (it also holds the time token).
    fn condition_tokens(&self) -> usize {
        MAX_CONDITION_TOKENS.min(self.model.config().max_positions.saturating_sub(1))
    }

    fn resolve(&self, index: usize, r: &Request) -> Result<Resolved> {
        let cfg = self.model.config();
        let bad = |reason: String| PipelineError::Request { index, reason };
        if r.frames == 0 {
            return Err(bad("length must be at least 1 frame".into()));
        }
        if let Some(c) = &r.constraint
            && c.frames() != r.frames
        {
            return Err(bad(format!(
                "its constraint covers {} frames but the motion has {}",
                c.frames(),
                r.frames
            )));
        }
        if r.frames > self.model.max_frames() {
            return Err(bad(format!(
                "length {} frames ({:.2} s) is above the model's maximum of {} frames \
                 ({:.2} s at {} fps)",
                r.frames,
                r.frames as f32 / self.model.fps(),
                self.model.max_frames(),
                self.model.max_frames() as f32 / self.model.fps(),
                self.model.fps()
            )));
        }
        let c = cfg.num_cond_feats;
        let device = self.model.dit().device();
        let (pooled, tokens) = match &r.text {
            TextInput::Caption(caption) => {
                if caption.trim().is_empty() {
                    return Err(bad("the caption is empty".into()));
                }
                self.encode_caption(caption).map_err(|e| match e {
                    PipelineError::Option { reason, .. } => bad(reason),
                    other => other,
                })?
            }
            TextInput::Features(t) => {
                let t = t.to_dtype(DType::F32)?.to_device(device)?;
                let (pooled, tokens) = match t.dims() {
                    &[w] if w == c => (t.clone(), t.unsqueeze(0)?),
                    &[l, w] if w == c && l > 0 => (t.i(l - 1)?, t),
                    other => {
                        return Err(bad(format!(
                            "text features have shape {other:?}; the model expects [{c}] or \
                             [L, {c}]"
                        )));
                    }
                };
                let v = tokens.flatten_all()?.to_vec1::<f32>()?;
                if let Some(k) = v.iter().position(|x| !x.is_finite()) {
                    return Err(bad(format!(
                        "text features hold a non-finite value at flat index {k}"
                    )));
                }
                (pooled, tokens)
            }
            TextInput::Unconditional => (
                Tensor::zeros(c, DType::F32, device)?,
                Tensor::zeros((1, c), DType::F32, device)?,
            ),
        };
        let cap = self.condition_tokens();
        if cfg.variant.sequential_condition() && tokens.dims()[0] > cap {
            return Err(bad(format!(
                "the text has {} tokens; this model takes at most {cap}",
                tokens.dims()[0]
            )));
        }
        Ok(Resolved {
            pooled: pooled.to_device(device)?,
            tokens: tokens.to_device(device)?,
        })
    }

    /// The batch's constraints as one known part in the model's normalised space, or `None`
    /// when no request of the batch has one.
    fn known_part(
        &self,
        requests: &[Request],
        batch: &[usize],
        frames: usize,
    ) -> Result<Option<KnownPart>> {
        let mut any = false;
        for &i in batch {
            if let Some(c) = &requests[i].constraint {
                any |= c.has_fixed_channels()?;
            }
        }
        if !any {
            return Ok(None);
        }
        let d = self.model.config().num_feats;
        let normalizer = self.model.normalizer().to_device(&Device::Cpu)?;
        let mut masks = Vec::with_capacity(batch.len());
        let mut targets = Vec::with_capacity(batch.len());
        for &i in batch {
            match &requests[i].constraint {
                Some(c) => {
                    masks.push(c.mask().clone());
                    targets.push(normalizer.normalize(c.target())?);
                }
                None => {
                    masks.push(Tensor::zeros((frames, d), DType::F32, &Device::Cpu)?);
                    targets.push(Tensor::zeros((frames, d), DType::F32, &Device::Cpu)?);
                }
            }
        }
        let device = self.model.dit().device();
        let mask = Tensor::stack(&masks, 0)?.to_device(device)?;
        let target = Tensor::stack(&targets, 0)?.to_device(device)?;
        Ok(Some(KnownPart::new(mask, target)?))
    }

    /// The network condition of a batch, one row per resolved text.
    fn condition(&self, rows: &[&Resolved]) -> Result<Conditioning> {
        let b = rows.len();
        let device = self.model.dit().device();
        Ok(if self.model.config().variant.sequential_condition() {
            // Zero-padded to CLIP's 77 positions with a token mask, as the reference's batches
            // (and our training batches) are: a reference-mode network attends the padding.
            let width = self.condition_tokens();
            let mut tokens = Vec::with_capacity(b);
            let mut mask = Vec::with_capacity(b * width);
            for r in rows {
                let l = r.tokens.dims()[0];
                tokens.push(r.tokens.pad_with_zeros(0, 0, width - l)?);
                mask.extend((0..width).map(|k| if k < l { 1f32 } else { 0.0 }));
            }
            Conditioning::Tokens {
                tokens: Tensor::stack(&tokens, 0)?,
                mask: Some(Tensor::from_vec(mask, (b, width), device)?),
            }
        } else {
            let pooled: Vec<&Tensor> = rows.iter().map(|r| &r.pooled).collect();
            Conditioning::Pooled(Tensor::stack(&pooled, 0)?)
        })
    }

    /// Generates ONE continuous motion from a timeline of segments (caption and length each),
    /// jointly: the whole timeline is one latent, sampled with every segment's windows in one
    /// network batch per step and their predictions blended over `overlap` frames where
    /// segments meet ([`WindowPlan`]; the MultiDiffusion / DiffCollage idea of Bar-Tal et al.
    /// 2023 and Zhang et al. 2023, as used for motion by Shafir et al.'s DoubleTake, 2024).
    /// The seams are therefore sampled, not stitched afterwards. Segments may be longer than
    /// the model's longest motion (they get several windows). `progress` reports the steps.
    pub fn generate_timeline(
        &self,
        segments: &[Segment],
        seed: u64,
        overlap: usize,
        opts: &GenerateOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Motion> {
        opts.validate()?;
        let seg_frames: Vec<usize> = segments.iter().map(|s| s.frames).collect();
        let plan = WindowPlan::new(&seg_frames, self.model.max_frames(), overlap)?;
        let resolved = segments
            .iter()
            .enumerate()
            .map(|(i, s)| {
                self.resolve(
                    i,
                    &Request {
                        text: s.text.clone(),
                        frames: plan.len,
                        seed,
                        constraint: None,
                    },
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let rows: Vec<&Resolved> = plan
            .windows
            .iter()
            .map(|&(_, seg)| &resolved[seg])
            .collect();
        let cond = self.condition(&rows)?;
        let dit = self.model.dit();
        let device = dit.device();
        let guided = Guided::new(dit, opts.guidance);
        let network: &dyn Denoiser = if opts.guidance == 1.0 { dit } else { &guided };
        let blended = Blended {
            net: network,
            plan: &plan,
            cond,
        };
        let mut noise = SeededNoise::new(vec![seed]);
        let d = self.model.config().num_feats;
        let latents = diffusion::NoiseSource::next(&mut noise, &[1, plan.frames, d], device)?;
        let mask = Tensor::ones((1, plan.frames), DType::F32, device)?;
        let sampler = opts.sampler.build_with(opts.steps, opts.grid);
        let total = opts.steps;
        let x = sampler.sample_with_callback(
            &blended,
            latents,
            &Conditioning::None,
            &mask,
            &mut noise,
            &mut |info| {
                progress(Progress {
                    done: info.index + 1,
                    total,
                });
                Ok(())
            },
        )?;
        let normalizer = self.model.normalizer().to_device(&Device::Cpu)?;
        let raw = normalizer.unnormalize(&x.to_device(&Device::Cpu)?)?;
        let captions: Vec<String> = segments
            .iter()
            .map(|s| match &s.text {
                TextInput::Caption(c) => c.clone(),
                TextInput::Features(_) => "(text features)".into(),
                TextInput::Unconditional => "(unconditional)".into(),
            })
            .collect();
        Motion::from_features(
            raw.i(0)?.contiguous()?,
            self.model.fps(),
            Some(captions.join(" | ")),
            seed,
        )
    }

    fn sample_batch(
        &self,
        requests: &[Request],
        resolved: &[Resolved],
        batch: &[usize],
        opts: &GenerateOptions,
        on_step: &mut dyn FnMut(usize),
    ) -> Result<Vec<Motion>> {
        let cfg = self.model.config();
        let dit = self.model.dit();
        let device = dit.device();
        let b = batch.len();
        let frames = requests[batch[0]].frames;
        let rows: Vec<&Resolved> = batch.iter().map(|&i| &resolved[i]).collect();
        let cond = self.condition(&rows)?;
        let seeds: Vec<u64> = batch.iter().map(|&i| requests[i].seed).collect();
        let mut noise = SeededNoise::new(seeds);
        let latents =
            diffusion::NoiseSource::next(&mut noise, &[b, frames, cfg.num_feats], device)?;
        let mask = Tensor::ones((b, frames), DType::F32, device)?;
        let sampler = opts.sampler.build_with(opts.steps, opts.grid);
        let guided = Guided::new(dit, opts.guidance);
        let network: &dyn Denoiser = if opts.guidance == 1.0 { dit } else { &guided };
        let known = self.known_part(requests, batch, frames)?;
        let inpainted = known.as_ref().map(|k| Inpainted::new(network, k));
        let constrained: &dyn Denoiser = match &inpainted {
            Some(d) => d,
            None => network,
        };
        let paths: Vec<Option<Trajectory>> = batch
            .iter()
            .map(|&i| {
                requests[i]
                    .constraint
                    .as_ref()
                    .and_then(|c| c.path().cloned())
            })
            .collect();
        let follow = if paths.iter().any(Option::is_some) {
            let n = self.model.normalizer().to_device(&Device::Cpu)?;
            Some(FollowPath {
                inner: constrained,
                mean: n.mean().to_vec1::<f32>()?,
                std: n.std().to_vec1::<f32>()?,
                paths,
            })
        } else {
            None
        };
        let denoiser: &dyn Denoiser = match &follow {
            Some(d) => d,
            None => constrained,
        };
        let x = sampler.sample_with_callback(
            denoiser,
            latents,
            &cond,
            &mask,
            &mut noise,
            &mut |info| {
                on_step(info.index);
                Ok(())
            },
        )?;
        let x = x.to_device(&Device::Cpu)?;
        let normalizer = self.model.normalizer().to_device(&Device::Cpu)?;
        let raw = normalizer.unnormalize(&x)?;
        batch
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let features = raw.i(k)?.contiguous()?;
                let (joints, rotations) = motion_repr::rifke::decode(&features)?;
                Ok(Motion {
                    caption: requests[i].caption_text().map(str::to_string),
                    seed: requests[i].seed,
                    fps: self.model.fps(),
                    features,
                    joints,
                    rotations,
                })
            })
            .collect()
    }
}

/// Reads precomputed text features from a `.npy` file: a float array `[C]` or `[L, C]`, or a
/// numpy object array of such arrays (the reference's `caption_clip/seq/<id>.npy`, one per
/// caption), of which the first (the caption evaluation uses) is taken.
pub fn read_text_features(path: &std::path::Path) -> Result<Tensor> {
    use motion_data::npy::NpyContent;
    if !path.is_file() {
        return Err(PipelineError::MissingFile {
            what: "text-features file".into(),
            path: path.to_path_buf(),
            hint: "give a .npy of shape [C] or [L, C] (e.g. <data>/caption_clip/seq/<id>.npy)"
                .into(),
        });
    }
    let content = motion_data::npy::read_npy(path).map_err(|e| crate::error::read_err(path, e))?;
    let array = match content {
        NpyContent::Float(a) => a,
        NpyContent::Objects(items) => items.into_iter().next().ok_or_else(|| {
            crate::error::read_err(path, "the object array holds no feature array")
        })?,
    };
    if array.shape.is_empty() || array.shape.len() > 2 || array.data.is_empty() {
        return Err(crate::error::read_err(
            path,
            format!(
                "text features have shape {:?}; expected [C] or [L, C]",
                array.shape
            ),
        ));
    }
    Ok(Tensor::from_vec(
        array.data,
        array.shape.as_slice(),
        &Device::Cpu,
    )?)
}
