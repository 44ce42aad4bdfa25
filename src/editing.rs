//! Editing motions with the same model, at sampling time and without retraining: continuing a
//! given motion (prefix completion) and filling the frames between given poses
//! (in-betweening). A [`Constraint`] on a [`crate::Request`] fixes some frames and feature
//! channels of the result; the pipeline turns it into a [`diffusion::KnownPart`] in the model's
//! normalised space and samples with [`diffusion::Inpainted`], so it works with every sampler
//! (see `diffusion::inpaint` for how and why).
//!
//! Which channels a constraint may fix depends on the SMPL-RIFKE layout
//! ([`motion_repr::FeatureLayout`]): every channel is relative to the body's own heading except
//! the root's horizontal velocity and yaw rate, whose frame 0 holds the absolute position and
//! heading. A whole prefix (the first frames of a real motion) may fix every channel
//! ([`Channels::All`]); a keyframe taken from the middle of another motion fixes the pose
//! ([`Channels::Pose`]: pelvis height, joint rotations and the heading-relative joint
//! positions), leaving where the body walks and turns to the model.

use std::path::{Path, PathBuf};

use candle::{DType, Device, Tensor};
use motion_repr::FeatureLayout;
use serde::{Deserialize, Serialize};

use crate::error::{PipelineError, Result, read_err};

/// Which feature channels of a frame a constraint fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channels {
    /// All 205 channels (a prefix of a real motion, or a keyframe at frame 0).
    All,
    /// The pose: pelvis height, joint rotations and heading-relative joint positions; not the
    /// root's horizontal velocity and yaw rate (channels 1..4).
    #[default]
    Pose,
}

impl Channels {
    /// The per-channel mask of one frame (`FEATURE_DIM` values, 1 = fixed).
    pub fn mask(self) -> Vec<f32> {
        let layout = FeatureLayout::SMPL_RIFKE;
        let mut m = vec![1f32; layout.dim()];
        if self == Channels::Pose {
            for c in layout
                .vel_root_xy_local
                .clone()
                .chain(layout.vel_angles.clone())
            {
                m[c] = 0.0;
            }
        }
        m
    }
}

/// Frames and channels of a motion fixed to given raw (un-normalised) SMPL-RIFKE values.
#[derive(Debug, Clone)]
pub struct Constraint {
    /// `[F, 205]`, 1 = fixed, 0 = free.
    mask: Tensor,
    /// `[F, 205]` raw features (0 where free).
    target: Tensor,
    /// A floor path for the pelvis, one point per frame.
    trajectory: Option<Trajectory>,
}

/// One fixed frame of an in-betweening constraint.
#[derive(Debug, Clone)]
pub struct Keyframe {
    /// Frame of the generated motion.
    pub frame: usize,
    /// Raw SMPL-RIFKE features of the pose `[205]`.
    pub features: Tensor,
    /// Which channels it fixes.
    pub channels: Channels,
}

fn bad(name: &str, reason: impl Into<String>) -> PipelineError {
    PipelineError::Option {
        name: name.into(),
        reason: reason.into(),
    }
}

fn check_features(what: &str, t: &Tensor) -> Result<Vec<f32>> {
    let d = motion_data::FEATURE_DIM;
    if t.rank() != 2 || t.dims()[1] != d {
        return Err(bad(
            what,
            format!("features of shape {:?}; expected [frames, {d}]", t.dims()),
        ));
    }
    let v = t
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(bad(
            what,
            format!(
                "value {} at frame {}, channel {} is not finite",
                v[i],
                i / d,
                i % d
            ),
        ));
    }
    Ok(v)
}

impl Constraint {
    /// A constraint from a mask and raw target values, both `[F, 205]` (mask values in
    /// `[0, 1]`, 1 = fixed).
    pub fn new(mask: Tensor, target: Tensor) -> Result<Self> {
        let m = check_features("constraint mask", &mask)?;
        if let Some(i) = m.iter().position(|v| !(0.0..=1.0).contains(v)) {
            return Err(bad(
                "constraint mask",
                format!("value {} at flat index {i} is not in [0, 1]", m[i]),
            ));
        }
        if target.dims() != mask.dims() {
            return Err(bad(
                "constraint target",
                format!(
                    "shape {:?} differs from the mask's {:?}",
                    target.dims(),
                    mask.dims()
                ),
            ));
        }
        let t = check_features("constraint target", &target)?;
        let t: Vec<f32> = t
            .iter()
            .zip(&m)
            .map(|(&v, &w)| if w > 0.0 { v } else { 0.0 })
            .collect();
        let dims = (mask.dims()[0], mask.dims()[1]);
        Ok(Self {
            mask: Tensor::from_vec(m, dims, &Device::Cpu)?,
            target: Tensor::from_vec(t, dims, &Device::Cpu)?,
            trajectory: None,
        })
    }

    /// Continue `prefix` (raw features `[P, 205]`, the first frames of a motion): its `P`
    /// frames, every channel, are the first `P` of a motion of `frames` frames.
    pub fn prefix(prefix: &Tensor, frames: usize) -> Result<Self> {
        let v = check_features("prefix", prefix)?;
        let p = prefix.dims()[0];
        if p == 0 || p >= frames {
            return Err(bad(
                "prefix",
                format!(
                    "{p} frames: a prefix needs at least 1 frame and fewer than the motion's \
                     {frames}"
                ),
            ));
        }
        let d = motion_data::FEATURE_DIM;
        let mut mask = vec![0f32; frames * d];
        let mut target = vec![0f32; frames * d];
        mask[..p * d].fill(1.0);
        target[..p * d].copy_from_slice(&v);
        Self::from_rows(mask, target, frames)
    }

    /// Fix the given keyframes of a motion of `frames` frames (later keyframes win where two
    /// fix the same frame).
    pub fn keyframes(frames: usize, keys: &[Keyframe]) -> Result<Self> {
        if keys.is_empty() {
            return Err(bad("keyframes", "none given"));
        }
        let d = motion_data::FEATURE_DIM;
        let mut mask = vec![0f32; frames * d];
        let mut target = vec![0f32; frames * d];
        for (i, k) in keys.iter().enumerate() {
            if k.frame >= frames {
                return Err(bad(
                    "keyframes",
                    format!(
                        "keyframe {i} is at frame {} of a motion of {frames} frames",
                        k.frame
                    ),
                ));
            }
            let row = k.features.reshape((1, d)).map_err(|_| {
                bad(
                    "keyframes",
                    format!(
                        "keyframe {i} has features of shape {:?}; expected [{d}]",
                        k.features.dims()
                    ),
                )
            })?;
            let v = check_features(&format!("keyframe {i}"), &row)?;
            let cm = k.channels.mask();
            for c in 0..d {
                if cm[c] > 0.0 {
                    mask[k.frame * d + c] = 1.0;
                    target[k.frame * d + c] = v[c];
                }
            }
        }
        Self::from_rows(mask, target, frames)
    }

    fn from_rows(mask: Vec<f32>, target: Vec<f32>, frames: usize) -> Result<Self> {
        let d = motion_data::FEATURE_DIM;
        Ok(Self {
            mask: Tensor::from_vec(mask, (frames, d), &Device::Cpu)?,
            target: Tensor::from_vec(target, (frames, d), &Device::Cpu)?,
            trajectory: None,
        })
    }

    /// Make the pelvis follow `path` on the floor (resampled to this constraint's frames):
    /// see [`Trajectory`].
    pub fn with_trajectory(mut self, path: &Trajectory) -> Result<Self> {
        self.trajectory = Some(path.resampled(self.frames())?);
        Ok(self)
    }

    /// Only a floor path for a motion of `frames` frames (no fixed channel).
    pub fn trajectory(path: &Trajectory, frames: usize) -> Result<Self> {
        let d = motion_data::FEATURE_DIM;
        if frames == 0 {
            return Err(bad("trajectory", "the motion has no frame"));
        }
        Self::from_rows(vec![0f32; frames * d], vec![0f32; frames * d], frames)?
            .with_trajectory(path)
    }

    /// The floor path, if any.
    pub fn path(&self) -> Option<&Trajectory> {
        self.trajectory.as_ref()
    }

    /// Frames of the motion it constrains.
    pub fn frames(&self) -> usize {
        self.mask.dims()[0]
    }

    /// The mask `[F, 205]` (1 = fixed).
    pub fn mask(&self) -> &Tensor {
        &self.mask
    }

    /// The raw target values `[F, 205]` (0 where free).
    pub fn target(&self) -> &Tensor {
        &self.target
    }

    /// Whether it fixes any channel (besides a path).
    pub fn has_fixed_channels(&self) -> Result<bool> {
        Ok(self.mask.max_all()?.to_scalar::<f32>()? > 0.0)
    }

    /// Frames with at least one fixed channel.
    pub fn fixed_frames(&self) -> Result<Vec<usize>> {
        let any = self.mask.max(1)?.to_vec1::<f32>()?;
        Ok(any
            .iter()
            .enumerate()
            .filter(|(_, v)| **v > 0.0)
            .map(|(i, _)| i)
            .collect())
    }

    /// Largest `|features - target|` over the fully fixed channels of raw features `[F, 205]`.
    pub fn max_error(&self, features: &Tensor) -> Result<f32> {
        let full = self.mask.ge(1f32)?.to_dtype(DType::F32)?;
        let d = (features.to_dtype(DType::F32)?.to_device(&Device::Cpu)? - &self.target)?
            .abs()?
            .mul(&full)?;
        Ok(d.flatten_all()?.max(0)?.to_scalar::<f32>()?)
    }
}

/// A keyframe file entry (`generate --keyframes FILE.json`): the pose at `motion_frame` of the
/// raw features in `motion` (an `.npy` `[F, 205]`, relative to the JSON file; a negative
/// `motion_frame` counts from the end), or the 205 values in `features`, fixed at `frame` of the
/// generated motion (a negative `frame` counts from its end).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyframeSpec {
    /// Frame of the generated motion (negative: from the end, -1 = last).
    pub frame: i64,
    /// An `.npy` of raw SMPL-RIFKE features `[F, 205]`.
    #[serde(default)]
    pub motion: Option<PathBuf>,
    /// Frame of `motion` (negative: from the end). Default 0.
    #[serde(default)]
    pub motion_frame: i64,
    /// The 205 raw feature values, instead of `motion`.
    #[serde(default)]
    pub features: Option<Vec<f32>>,
    /// `pose` (default) or `all`.
    #[serde(default)]
    pub channels: Channels,
}

/// The content of a keyframe file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyframeFile {
    /// The keyframes.
    pub keyframes: Vec<KeyframeSpec>,
}

fn resolve_index(i: i64, len: usize, what: &str, path: &Path) -> Result<usize> {
    let idx = if i < 0 { len as i64 + i } else { i };
    if idx < 0 || idx >= len as i64 {
        return Err(read_err(
            path,
            format!("{what} {i} is outside 0..{len} (negative counts from the end)"),
        ));
    }
    Ok(idx as usize)
}

impl KeyframeFile {
    /// Reads a keyframe JSON file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| read_err(path, e))?;
        serde_json::from_str(&text).map_err(|e| read_err(path, e))
    }

    /// The keyframes for a motion of `frames` frames (motions read relative to `path`'s
    /// folder).
    pub fn keyframes(&self, path: &Path, frames: usize) -> Result<Vec<Keyframe>> {
        let base = path.parent().unwrap_or(Path::new("."));
        self.keyframes
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let frame = resolve_index(k.frame, frames, &format!("keyframe {i}: frame"), path)?;
                let features = match (&k.motion, &k.features) {
                    (Some(m), None) => {
                        let file = base.join(m);
                        let t = read_features(&file)?;
                        let v = t.flatten_all()?.to_vec1::<f32>()?;
                        let n = t.dims()[0];
                        let j = resolve_index(
                            k.motion_frame,
                            n,
                            &format!("keyframe {i}: motion_frame"),
                            path,
                        )?;
                        let d = motion_data::FEATURE_DIM;
                        Tensor::from_vec(v[j * d..(j + 1) * d].to_vec(), d, &Device::Cpu)?
                    }
                    (None, Some(f)) => {
                        let d = motion_data::FEATURE_DIM;
                        if f.len() != d {
                            return Err(read_err(
                                path,
                                format!("keyframe {i}: {} feature values, expected {d}", f.len()),
                            ));
                        }
                        Tensor::from_vec(f.clone(), d, &Device::Cpu)?
                    }
                    _ => {
                        return Err(read_err(
                            path,
                            format!(
                                "keyframe {i}: give exactly one of \"motion\" and \"features\""
                            ),
                        ));
                    }
                };
                Ok(Keyframe {
                    frame,
                    features,
                    channels: k.channels,
                })
            })
            .collect()
    }
}

/// The raw SMPL-RIFKE features `[F, 205]` of an `.npy` file (as `generate` writes
/// `*_features.npy`), checked for shape and finite values.
pub fn read_features(path: &Path) -> Result<Tensor> {
    use motion_data::npy::NpyContent;
    if !path.is_file() {
        return Err(PipelineError::MissingFile {
            what: "features file".into(),
            path: path.to_path_buf(),
            hint: "give a .npy of raw SMPL-RIFKE features [frames, 205], e.g. the \
                   *_features.npy that `generate` writes"
                .into(),
        });
    }
    let array = match motion_data::npy::read_npy(path).map_err(|e| read_err(path, e))? {
        NpyContent::Float(a) => a,
        NpyContent::Objects(_) => {
            return Err(read_err(
                path,
                "holds a numpy object array, not [frames, 205] floats",
            ));
        }
    };
    let d = motion_data::FEATURE_DIM;
    if array.shape.len() != 2 || array.shape[1] != d || array.shape[0] == 0 {
        return Err(read_err(
            path,
            format!(
                "features of shape {:?}; expected [frames, {d}]",
                array.shape
            ),
        ));
    }
    let t = Tensor::from_vec(array.data, (array.shape[0], d), &Device::Cpu)?;
    check_features("features", &t).map_err(|e| read_err(path, e))?;
    Ok(t)
}

/// One part of a timeline: a text and how many frames it lasts.
#[derive(Debug, Clone)]
pub struct Segment {
    /// The condition of this part.
    pub text: crate::TextInput,
    /// Frames it lasts (at the model's fps), at least 1.
    pub frames: usize,
}

impl From<&crate::Request> for Segment {
    /// The request's text for the request's length (its seed and constraint are not used).
    fn from(r: &crate::Request) -> Self {
        Self {
            text: r.text.clone(),
            frames: r.frames,
        }
    }
}

/// The windows a timeline is sampled in and the weights that blend their predictions.
///
/// Every segment gets windows covering the segment and `overlap / 2` frames on each side: one
/// window of exactly that span when it fits in the model's longest motion `L`, else several
/// windows of length `L`. A window as long as its segment matters: the network places what the
/// caption describes somewhere in the motion it is asked for, so a short segment inside a
/// longer window may miss its own action. Windows shorter than the batch's longest are padded
/// and masked. Where two segments meet, the weight passes linearly from one to the other over
/// `overlap` frames (and between the windows of one segment, over their overlap). At the first
/// frame of a window that starts inside the timeline the root's horizontal velocity and yaw
/// rate get no weight from that window: SMPL-RIFKE stores the absolute position and heading
/// there, which the window's network would predict, not the velocity the timeline needs.
#[derive(Debug, Clone)]
pub struct WindowPlan {
    /// Total frames.
    pub frames: usize,
    /// Longest window (the width of the network batch).
    pub len: usize,
    /// Start frame and segment of each window.
    pub windows: Vec<(usize, usize)>,
    /// Length of each window (at most `len`).
    pub lens: Vec<usize>,
    /// Normalised blend weights `[windows, len, 205]` (row-major; zero past a window's own
    /// length), summing to 1 over the windows that cover a frame and channel.
    pub weights: Vec<f32>,
    /// Frames where one segment hands over to the next.
    pub seams: Vec<usize>,
}

impl WindowPlan {
    /// Plans the windows of `segment_frames` (frames per segment) with windows of at most
    /// `max_len` frames and `overlap` frames of blending.
    pub fn new(segment_frames: &[usize], max_len: usize, overlap: usize) -> Result<Self> {
        let d = motion_data::FEATURE_DIM;
        if segment_frames.is_empty() || segment_frames.contains(&0) {
            return Err(bad(
                "timeline",
                "needs at least one segment, each at least 1 frame long",
            ));
        }
        let total: usize = segment_frames.iter().sum();
        let max_len = max_len.min(total);
        let h = overlap / 2;
        if segment_frames.len() > 1 && (overlap < 2 || overlap + 2 > max_len) {
            return Err(bad(
                "overlap",
                format!(
                    "{overlap} frames: must be at least 2 and below the window of {max_len} \
                     frames"
                ),
            ));
        }
        let mut bounds = Vec::with_capacity(segment_frames.len());
        let mut a = 0;
        for &f in segment_frames {
            bounds.push((a, a + f));
            a += f;
        }
        let seams: Vec<usize> = bounds.iter().skip(1).map(|b| b.0).collect();
        // Windows of each segment over its span [a - h, b + h) clipped to the timeline.
        let mut windows = Vec::new();
        let mut lens = Vec::new();
        for (i, &(a, b)) in bounds.iter().enumerate() {
            let lo = a.saturating_sub(h);
            let hi = (b + h).min(total);
            let span = hi - lo;
            if span <= max_len {
                windows.push((lo, i));
                lens.push(span);
                continue;
            }
            let n = (span - overlap.max(1)).div_ceil(max_len - overlap.max(1));
            for k in 0..n {
                windows.push((lo + (span - max_len) * k / (n - 1), i));
                lens.push(max_len);
            }
        }
        let len = lens.iter().copied().max().unwrap_or(max_len);
        // Segment weight: 1 inside, linear over [boundary - h, boundary + h).
        let seg_weight = |i: usize, t: usize| -> f32 {
            let (a, b) = bounds[i];
            let t = t as f32 + 0.5;
            let width = (2 * h).max(1) as f32;
            let up = if a == 0 {
                1.0
            } else {
                (t - (a as f32 - h as f32)) / width
            };
            let down = if b == total {
                1.0
            } else {
                ((b + h) as f32 - t) / width
            };
            up.min(down).clamp(0.0, 1.0)
        };
        // Window ramp: a tent reaching 1 `overlap` frames in from an inner edge.
        let ramp = overlap.max(1) as f32;
        let win_weight = |start: usize, len: usize, t: usize| -> f32 {
            if t < start || t >= start + len {
                return 0.0;
            }
            let up = if start == 0 {
                1.0
            } else {
                (t - start + 1) as f32 / ramp
            };
            let down = if start + len == total {
                1.0
            } else {
                (start + len - t) as f32 / ramp
            };
            up.min(down).min(1.0)
        };
        let w = windows.len();
        let mut weights = vec![0f32; w * len * d];
        let mut sum = vec![0f32; total * d];
        let root_vel: Vec<usize> = {
            let l = FeatureLayout::SMPL_RIFKE;
            l.vel_root_xy_local
                .clone()
                .chain(l.vel_angles.clone())
                .collect()
        };
        for t in 0..total {
            for (wi, &(start, seg)) in windows.iter().enumerate() {
                let ww = win_weight(start, lens[wi], t);
                if ww == 0.0 {
                    continue;
                }
                // Share the segment's weight among its windows covering t.
                let same: f32 = windows
                    .iter()
                    .zip(&lens)
                    .filter(|((_, s), _)| *s == seg)
                    .map(|(&(st, _), &l)| win_weight(st, l, t))
                    .sum();
                let v = seg_weight(seg, t) * ww / same;
                let k = t - start;
                for c in 0..d {
                    let v = if k == 0 && start > 0 && root_vel.contains(&c) {
                        0.0
                    } else {
                        v
                    };
                    weights[(wi * len + k) * d + c] = v;
                    sum[t * d + c] += v;
                }
            }
        }
        // Normalise; where nothing covers a frame and channel with weight (cannot happen with
        // overlap >= 2, but be safe), fall back to the plain mean of the covering windows.
        for (wi, &(start, _)) in windows.iter().enumerate() {
            for k in 0..lens[wi] {
                let t = start + k;
                for c in 0..d {
                    let s = sum[t * d + c];
                    let idx = (wi * len + k) * d + c;
                    weights[idx] = if s > 0.0 {
                        weights[idx] / s
                    } else {
                        let n = windows
                            .iter()
                            .zip(&lens)
                            .filter(|&(&(st, _), &l)| t >= st && t < st + l)
                            .count();
                        1.0 / n as f32
                    };
                }
            }
        }
        Ok(Self {
            frames: total,
            len,
            windows,
            lens,
            weights,
            seams,
        })
    }
}

/// A denoiser over a whole timeline `[1, T, D]`: it cuts the windows of a [`WindowPlan`], runs
/// `net` on all of them in one batch (each with its segment's condition) and blends their
/// predictions with the plan's weights.
pub(crate) struct Blended<'a> {
    pub(crate) net: &'a dyn diffusion::Denoiser,
    pub(crate) plan: &'a WindowPlan,
    /// One condition row per window.
    pub(crate) cond: diffusion::Conditioning,
}

impl diffusion::Denoiser for Blended<'_> {
    fn forward(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _cond: &diffusion::Conditioning,
        _frame_mask: &Tensor,
    ) -> candle::Result<Tensor> {
        let plan = self.plan;
        let (w, len) = (plan.windows.len(), plan.len);
        let windows: Vec<Tensor> = plan
            .windows
            .iter()
            .zip(&plan.lens)
            .map(|(&(s, _), &l)| x.narrow(1, s, l)?.pad_with_zeros(1, 0, len - l))
            .collect::<candle::Result<_>>()?;
        let xs = Tensor::cat(&windows, 0)?;
        let g = gamma.broadcast_as(w)?.contiguous()?;
        let mask: Vec<f32> = plan
            .lens
            .iter()
            .flat_map(|&l| (0..len).map(move |k| if k < l { 1.0 } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (w, len), x.device())?;
        let x0 = self.net.forward(&xs, &g, &self.cond, &mask)?;
        let x0 = x0
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let d = x.dim(2)?;
        let mut out = vec![0f32; plan.frames * d];
        for (wi, (&(start, _), &l)) in plan.windows.iter().zip(&plan.lens).enumerate() {
            let base = wi * len * d;
            let dst = &mut out[start * d..(start + l) * d];
            for (o, (v, wt)) in dst.iter_mut().zip(
                x0[base..base + l * d]
                    .iter()
                    .zip(&plan.weights[base..base + l * d]),
            ) {
                *o += v * wt;
            }
        }
        Tensor::from_vec(out, (1, plan.frames, d), &Device::Cpu)?
            .to_device(x.device())?
            .to_dtype(x.dtype())
    }
}

/// Mean jerk magnitude (third derivative of joint positions, m/s^3) per frame of joints
/// `[F, J, 3]` at `fps`: entry `t` is the jerk of the finite difference over frames
/// `t - 1 .. t + 2` (so `F - 3` values, entry `t` describing the step into frame `t + 1`).
pub fn jerk_profile(joints: &Tensor, fps: f32) -> Result<Vec<f32>> {
    let (f, j, c) = joints.dims3()?;
    if c != 3 || f < 4 {
        return Err(bad(
            "joints",
            format!("shape {:?}: need [frames >= 4, joints, 3]", joints.dims()),
        ));
    }
    let v = joints
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let at = |t: usize, k: usize, a: usize| v[(t * j + k) * 3 + a];
    let s = fps.powi(3);
    Ok((0..f - 3)
        .map(|t| {
            let mut total = 0.0;
            for k in 0..j {
                let mut sq = 0.0;
                for a in 0..3 {
                    let d3 = at(t + 3, k, a) - 3.0 * at(t + 2, k, a) + 3.0 * at(t + 1, k, a)
                        - at(t, k, a);
                    sq += (d3 * s) * (d3 * s);
                }
                total += sq.sqrt();
            }
            total / j as f32
        })
        .collect())
}

/// Jerk at the seams against jerk inside the segments: the mean of [`jerk_profile`] within
/// `radius` frames of each seam, and the mean everywhere else; returns `(seams, inside)`.
pub fn seam_jerk(joints: &Tensor, fps: f32, seams: &[usize], radius: usize) -> Result<(f32, f32)> {
    let p = jerk_profile(joints, fps)?;
    let near = |t: usize| seams.iter().any(|&s| (t + 1).abs_diff(s) <= radius);
    let (mut a, mut na, mut b, mut nb) = (0.0, 0usize, 0.0, 0usize);
    for (t, &v) in p.iter().enumerate() {
        if near(t) {
            a += v;
            na += 1;
        } else {
            b += v;
            nb += 1;
        }
    }
    Ok((a / na.max(1) as f32, b / nb.max(1) as f32))
}

/// One entry of a timeline file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineEntry {
    /// What happens in this part (encoded by the model's text encoder, unless
    /// `text_features` is given; then it is the label).
    pub caption: String,
    /// How long it lasts.
    pub seconds: f64,
    /// Precomputed text features (`.npy`, `[C]` or `[L, C]`, relative to the timeline file)
    /// to condition on instead of encoding the caption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_features: Option<PathBuf>,
}

/// A timeline file (`generate --timeline FILE.json`): a list of `{"caption", "seconds"}`, or
/// `{"segments": [...], "overlap_seconds": 1.0}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TimelineFile {
    /// Just the segments.
    List(Vec<TimelineEntry>),
    /// Segments and the blending overlap.
    Object {
        /// The segments.
        segments: Vec<TimelineEntry>,
        /// Seconds of blending where two segments meet.
        #[serde(default)]
        overlap_seconds: Option<f64>,
    },
}

impl TimelineFile {
    /// Reads and checks a timeline file (at least one segment, non-empty captions, positive
    /// finite durations).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| read_err(path, e))?;
        let file: Self = serde_json::from_str(&text).map_err(|e| {
            read_err(
                path,
                format!(
                    "{e} (expected [{{\"caption\": ..., \"seconds\": ...}}, ...] or \
                     {{\"segments\": [...], \"overlap_seconds\": ...}})"
                ),
            )
        })?;
        let entries = file.entries();
        if entries.is_empty() {
            return Err(read_err(path, "the timeline has no segment"));
        }
        for (i, e) in entries.iter().enumerate() {
            if e.caption.trim().is_empty() {
                return Err(read_err(path, format!("segment {i} has an empty caption")));
            }
            if !(e.seconds.is_finite() && e.seconds > 0.0) {
                return Err(read_err(
                    path,
                    format!("segment {i} lasts {} s; must be positive", e.seconds),
                ));
            }
        }
        if let Some(o) = file.overlap_seconds()
            && !(o.is_finite() && o > 0.0)
        {
            return Err(read_err(
                path,
                format!("overlap_seconds {o} must be positive"),
            ));
        }
        Ok(file)
    }

    /// The segments.
    pub fn entries(&self) -> &[TimelineEntry] {
        match self {
            TimelineFile::List(v) => v,
            TimelineFile::Object { segments, .. } => segments,
        }
    }

    /// The overlap the file asks for, if any.
    pub fn overlap_seconds(&self) -> Option<f64> {
        match self {
            TimelineFile::List(_) => None,
            TimelineFile::Object {
                overlap_seconds, ..
            } => *overlap_seconds,
        }
    }

    /// Whether every segment brings its own text features (no text encoder needed).
    pub fn has_all_features(&self) -> bool {
        self.entries().iter().all(|e| e.text_features.is_some())
    }

    /// The segments at `fps` (each at least 1 frame); text features are read relative to
    /// `path`'s folder.
    pub fn segments(&self, path: &Path, fps: f32) -> Result<Vec<Segment>> {
        let base = path.parent().unwrap_or(Path::new("."));
        self.entries()
            .iter()
            .map(|e| {
                let text = match &e.text_features {
                    Some(f) => crate::TextInput::Features(crate::pipeline::read_text_features(
                        &base.join(f),
                    )?),
                    None => crate::TextInput::Caption(e.caption.clone()),
                };
                Ok(Segment {
                    text,
                    frames: ((e.seconds * fps as f64).round() as usize).max(1),
                })
            })
            .collect()
    }

    /// The captions, in order.
    pub fn captions(&self) -> Vec<String> {
        self.entries().iter().map(|e| e.caption.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sum over windows of the weight of (frame t, channel c).
    fn coverage(plan: &WindowPlan) -> Vec<f32> {
        let d = motion_data::FEATURE_DIM;
        let mut sum = vec![0f32; plan.frames * d];
        for (wi, &(start, _)) in plan.windows.iter().enumerate() {
            for k in 0..plan.lens[wi] {
                for c in 0..d {
                    sum[(start + k) * d + c] += plan.weights[(wi * plan.len + k) * d + c];
                }
            }
        }
        sum
    }

    #[test]
    fn window_weights_sum_to_one_everywhere_and_skip_absolute_root_channels() -> Result<()> {
        let d = motion_data::FEATURE_DIM;
        for (segments, max_len, overlap) in [
            (vec![150, 150, 150, 150], 120, 20),
            (vec![30, 80, 40], 120, 10),
            (vec![50], 120, 20),
            (vec![300], 120, 20),
            (vec![10, 10], 120, 4),
        ] {
            let plan = WindowPlan::new(&segments, max_len, overlap)?;
            let total: usize = segments.iter().sum();
            assert_eq!(plan.frames, total);
            assert!(plan.len <= max_len);
            for v in coverage(&plan) {
                assert!((v - 1.0).abs() < 1e-5, "{segments:?}: weight sum {v}");
            }
            // Every segment has a window; windows lie inside the timeline.
            for s in 0..segments.len() {
                assert!(plan.windows.iter().any(|w| w.1 == s));
            }
            assert_eq!(plan.lens.len(), plan.windows.len());
            for (wi, (&(st, _), &l)) in plan.windows.iter().zip(&plan.lens).enumerate() {
                assert!(st + l <= total && l <= plan.len);
                // Past its own length a window has no weight.
                let past = &plan.weights[(wi * plan.len + l) * d..(wi + 1) * plan.len * d];
                assert!(past.iter().all(|&w| w == 0.0));
            }
            // A segment whose span (with half the overlap on each side) fits gets one window of
            // exactly that span.
            let mut a = 0usize;
            for (i, &f) in segments.iter().enumerate() {
                let (lo, hi) = (
                    a.saturating_sub(overlap / 2),
                    (a + f + overlap / 2).min(total),
                );
                if hi - lo <= max_len {
                    let mine: Vec<usize> = (0..plan.windows.len())
                        .filter(|&w| plan.windows[w].1 == i)
                        .collect();
                    assert_eq!(mine.len(), 1, "{segments:?} segment {i}");
                    assert_eq!((plan.windows[mine[0]].0, plan.lens[mine[0]]), (lo, hi - lo));
                }
                a += f;
            }
            // A window starting inside the timeline gives its first frame's root velocity and
            // yaw rate no weight.
            for (wi, &(start, _)) in plan.windows.iter().enumerate() {
                if start > 0 {
                    for c in 1..4 {
                        assert_eq!(plan.weights[wi * plan.len * d + c], 0.0);
                    }
                }
            }
            assert_eq!(plan.seams.len(), segments.len() - 1);
        }
        Ok(())
    }

    #[test]
    fn segment_weights_hand_over_linearly_at_a_seam() -> Result<()> {
        let plan = WindowPlan::new(&[100, 100], 120, 20)?;
        let d = motion_data::FEATURE_DIM;
        // Weight of segment 0 (summed over its windows) at frame t, channel 10.
        let seg0 = |t: usize| -> f32 {
            plan.windows
                .iter()
                .enumerate()
                .filter(|(wi, w)| w.1 == 0 && t >= w.0 && t < w.0 + plan.lens[*wi])
                .map(|(wi, w)| plan.weights[(wi * plan.len + t - w.0) * d + 10])
                .sum()
        };
        assert_eq!(seg0(50), 1.0);
        assert_eq!(seg0(150), 0.0);
        let ramp: Vec<f32> = (90..110).map(seg0).collect();
        assert!(ramp.windows(2).all(|w| w[1] < w[0]), "{ramp:?}");
        assert!((seg0(99) + seg0(100) - 1.0).abs() < 0.06);
        Ok(())
    }

    #[test]
    fn bad_timelines_and_constraints_are_errors() -> Result<()> {
        assert!(WindowPlan::new(&[], 120, 20).is_err());
        assert!(WindowPlan::new(&[10, 0], 120, 20).is_err());
        assert!(WindowPlan::new(&[100, 100], 120, 1).is_err());
        assert!(WindowPlan::new(&[100, 100], 120, 119).is_err());
        let z = Tensor::zeros((5, 205), DType::F32, &Device::Cpu)?;
        assert!(Constraint::new(z.affine(1.0, 2.0)?, z.clone()).is_err());
        assert!(Constraint::new(z.clone(), z.narrow(0, 0, 4)?).is_err());
        assert!(Constraint::prefix(&z, 5).is_err());
        assert!(Constraint::keyframes(5, &[]).is_err());
        Ok(())
    }

    #[test]
    fn path_velocities_decode_back_to_the_path_for_any_heading() -> Result<()> {
        let d = motion_data::FEATURE_DIM;
        let f = 30;
        let path = Trajectory::new(
            (0..f)
                .map(|t| [0.5 + 0.04 * t as f32, 0.5 * (t as f32 * 0.05).sin()])
                .collect(),
        )?;
        for facing in [false, true] {
            let yaw_rate: Vec<f32> = if facing {
                path.facing_yaw_rate(0.0)
            } else {
                (0..f).map(|t| 0.3 + 0.05 * (t as f32).cos()).collect()
            };
            let vel = path.local_velocities(&yaw_rate);
            // Features with identity rotations, the yaw rate and the velocities.
            let mut feats = vec![0f32; f * d];
            for t in 0..f {
                for j in 0..22 {
                    feats[t * d + 4 + 6 * j] = 1.0;
                    feats[t * d + 4 + 6 * j + 4] = 1.0;
                }
                feats[t * d] = 0.9;
                feats[t * d + 1] = vel[t][0];
                feats[t * d + 2] = vel[t][1];
                feats[t * d + 3] = yaw_rate[t];
            }
            let (joints, _) =
                motion_repr::rifke::decode(&Tensor::from_vec(feats, (f, d), &Device::Cpu)?)?;
            let err = path.max_error(&joints)?;
            assert!(err < 1e-5, "facing {facing}: {err}");
            if facing {
                // Facing along the path: every step is along the body's -y axis (to the
                // smoothing of the direction over +-2 frames).
                for v in &vel[1..] {
                    assert!(v[0].abs() < 0.05 * v[1].abs() && v[1] < 0.0, "{v:?}");
                }
            }
        }
        // Resampling keeps the ends; a CSV-like bad point is an error.
        let r = path.resampled(7)?;
        assert_eq!(r.len(), 7);
        assert_eq!(r.points()[0], path.points()[0]);
        assert_eq!(r.points()[6], path.points()[f - 1]);
        assert!(Trajectory::new(vec![[0.0, f32::NAN]]).is_err());
        assert!(Trajectory::new(Vec::new()).is_err());
        Ok(())
    }

    #[test]
    fn jerk_of_a_constant_acceleration_is_zero_and_of_a_kink_is_not() -> Result<()> {
        // x = t^2 / 2 (constant acceleration): third difference 0.
        let f = 10;
        let v: Vec<f32> = (0..f)
            .flat_map(|t| [0.5 * (t * t) as f32 * 0.01, 0.0, 0.0])
            .collect();
        let j = Tensor::from_vec(v, (f, 1, 3), &Device::Cpu)?;
        assert!(jerk_profile(&j, 20.0)?.iter().all(|&x| x.abs() < 1e-2));
        let v: Vec<f32> = (0..f)
            .flat_map(|t| [if t < 5 { 0.0 } else { (t - 5) as f32 * 0.1 }, 0.0, 0.0])
            .collect();
        let j = Tensor::from_vec(v, (f, 1, 3), &Device::Cpu)?;
        let (seam, inside) = seam_jerk(&j, 20.0, &[5], 1)?;
        assert!(seam > 10.0 * inside.max(1e-3), "{seam} {inside}");
        Ok(())
    }
}

/// A path on the floor for the pelvis: world xy in metres, one point per frame (z up, the
/// SMPL-RIFKE world; frame 0's point is where the motion starts).
///
/// SMPL-RIFKE stores the pelvis motion as velocities in the body's own heading frame
/// (`v_t = Rz(yaw_t)^T (p_t - p_{t-1})`, frame 0 the absolute point), so a path is not a fixed
/// set of channel values: it depends on where the body faces. By default the body faces along
/// the path (its heading is set to the direction of travel over +-2 frames, holding the last
/// heading where the path moves slower than 1 cm per frame; the SMPL-RIFKE body faces its local
/// -y, so `yaw = direction + pi/2`), and the
/// velocity channels are then the path's steps in that frame; this is what the pipeline writes
/// into every `x0` prediction (`FollowPath`), leaving the gait and the rest of the body to
/// the model. [`Trajectory::with_model_heading`] keeps the heading the model predicts instead
/// (for sideways or backwards motions along a path) and recomputes only the velocities from it.
/// Either way the result follows the path exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct Trajectory {
    xy: Vec<[f32; 2]>,
    face_path: bool,
}

impl Trajectory {
    /// A path from its points (at least one, all finite).
    pub fn new(xy: Vec<[f32; 2]>) -> Result<Self> {
        if xy.is_empty() {
            return Err(bad("trajectory", "no point"));
        }
        if let Some(i) = xy
            .iter()
            .position(|p| !(p[0].is_finite() && p[1].is_finite()))
        {
            return Err(bad(
                "trajectory",
                format!("point {i} ({}, {}) is not finite", xy[i][0], xy[i][1]),
            ));
        }
        Ok(Self {
            xy,
            face_path: true,
        })
    }

    /// Keep the model's predicted heading (do not turn the body to face along the path).
    pub fn with_model_heading(mut self) -> Self {
        self.face_path = false;
        self
    }

    /// Whether the body is turned to face along the path.
    pub fn faces_path(&self) -> bool {
        self.face_path
    }

    /// The yaw-rate channel (raw, frame 0 = absolute yaw) that faces the body along the path,
    /// starting from `first_yaw` where the path does not move at its start.
    pub fn facing_yaw_rate(&self, first_yaw: f32) -> Vec<f32> {
        // Below this speed (metres per frame; 0.2 m/s at 20 fps) the path counts as standing
        // still and the heading is held: the sway of an in-place motion must not spin the body.
        const STILL: f32 = 0.01;
        // Direction of travel per frame, over a centred window of +-2 frames.
        let n = self.xy.len();
        let dir: Vec<Option<f32>> = (0..n)
            .map(|t| {
                let (i, j) = (t.saturating_sub(2), (t + 2).min(n - 1));
                if i == j {
                    return None;
                }
                let (a, b) = (self.xy[i], self.xy[j]);
                let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
                (dx.hypot(dy) > STILL * (j - i) as f32)
                    .then(|| dy.atan2(dx) + std::f32::consts::FRAC_PI_2)
            })
            .collect();
        let first = dir.iter().flatten().next().copied().unwrap_or(first_yaw);
        let mut yaw = Vec::with_capacity(n);
        let mut cur = first;
        for d in &dir {
            if let Some(d) = d {
                // Unwrapped: the smallest turn from the current heading.
                let mut delta = d - cur;
                delta -= (delta / std::f32::consts::TAU).round() * std::f32::consts::TAU;
                cur += delta;
            }
            yaw.push(cur);
        }
        let mut rate = Vec::with_capacity(n);
        let mut prev = 0f32;
        for y in yaw {
            rate.push(y - prev);
            prev = y;
        }
        rate
    }

    /// Reads a CSV of `x,y` rows in metres (one per frame; blank lines, `#` comments and a
    /// non-numeric header line are skipped).
    pub fn read_csv(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| read_err(path, e))?;
        let mut xy = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let cells: Vec<&str> = line.split([',', ';', '\t']).map(str::trim).collect();
            let parsed: Option<Vec<f32>> = cells.iter().map(|c| c.parse::<f32>().ok()).collect();
            match parsed {
                Some(v) if v.len() >= 2 => xy.push([v[0], v[1]]),
                _ if xy.is_empty() && n == 0 => continue, // a header
                _ => {
                    return Err(read_err(
                        path,
                        format!("line {}: {line:?} is not `x,y` in metres", n + 1),
                    ));
                }
            }
        }
        Self::new(xy).map_err(|e| read_err(path, e))
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.xy.len()
    }

    /// Whether it has no point (never: [`Trajectory::new`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.xy.is_empty()
    }

    /// The points.
    pub fn points(&self) -> &[[f32; 2]] {
        &self.xy
    }

    /// The path with `frames` points, linearly interpolated along the point index (the same
    /// path when it already has that many).
    pub fn resampled(&self, frames: usize) -> Result<Self> {
        if frames == 0 {
            return Err(bad("trajectory", "resampled to 0 frames"));
        }
        let n = self.xy.len();
        if n == frames {
            return Ok(self.clone());
        }
        let points = (0..frames)
            .map(|t| {
                if n == 1 || frames == 1 {
                    return self.xy[0];
                }
                let u = t as f64 * (n - 1) as f64 / (frames - 1) as f64;
                let i = (u.floor() as usize).min(n - 2);
                let w = (u - i as f64) as f32;
                let (a, b) = (self.xy[i], self.xy[i + 1]);
                [a[0] + w * (b[0] - a[0]), a[1] + w * (b[1] - a[1])]
            })
            .collect();
        Ok(Self {
            face_path: self.face_path,
            ..Self::new(points)?
        })
    }

    /// The velocity channels `[v_x, v_y]` per frame that trace this path for a body whose yaw
    /// rate channel is `yaw_rate` (raw, per frame; frame 0 = absolute yaw):
    /// `v_t = Rz(yaw_t)^T (p_t - p_{t-1})`, `p_{-1} = 0`, `yaw_t` the running sum (in `f32`,
    /// as decoding sums it).
    pub fn local_velocities(&self, yaw_rate: &[f32]) -> Vec<[f32; 2]> {
        let mut angle = 0f32;
        let mut prev = [0f32; 2];
        self.xy
            .iter()
            .zip(yaw_rate)
            .map(|(p, r)| {
                angle += r;
                let (s, c) = angle.sin_cos();
                let (dx, dy) = (p[0] - prev[0], p[1] - prev[1]);
                prev = *p;
                // Rz(angle)^T (dx, dy)
                [c * dx + s * dy, -s * dx + c * dy]
            })
            .collect()
    }

    /// Largest horizontal distance (metres) between the pelvis of joints `[F, 24, 3]` and the
    /// path (both with `F` points).
    pub fn max_error(&self, joints: &Tensor) -> Result<f32> {
        let (f, _, _) = joints.dims3()?;
        if f != self.xy.len() {
            return Err(bad(
                "trajectory",
                format!("{} points against a motion of {f} frames", self.xy.len()),
            ));
        }
        let pelvis = joints.narrow(1, 0, 1)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(self
            .xy
            .iter()
            .enumerate()
            .map(|(t, p)| (pelvis[3 * t] - p[0]).hypot(pelvis[3 * t + 1] - p[1]))
            .fold(0f32, f32::max))
    }
}

/// A denoiser whose `x0` predictions trace given floor paths: for each batch row with a path,
/// the root velocity channels are recomputed from the prediction's own heading
/// ([`Trajectory::local_velocities`]) and written back in normalised form.
pub(crate) struct FollowPath<'a> {
    pub(crate) inner: &'a dyn diffusion::Denoiser,
    /// Mean and std of the 205 channels (host).
    pub(crate) mean: Vec<f32>,
    pub(crate) std: Vec<f32>,
    /// One entry per batch row.
    pub(crate) paths: Vec<Option<Trajectory>>,
}

impl diffusion::Denoiser for FollowPath<'_> {
    fn forward(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        cond: &diffusion::Conditioning,
        frame_mask: &Tensor,
    ) -> candle::Result<Tensor> {
        let x0 = self.inner.forward(x, gamma, cond, frame_mask)?;
        let (b, f, d) = x0.dims3()?;
        let mut v = x0
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let l = FeatureLayout::SMPL_RIFKE;
        let (cx, cy, cr) = (
            l.vel_root_xy_local.start,
            l.vel_root_xy_local.start + 1,
            l.vel_angles.start,
        );
        for (bi, path) in self.paths.iter().enumerate().take(b) {
            let Some(path) = path else { continue };
            let row = &mut v[bi * f * d..(bi + 1) * f * d];
            let mut yaw: Vec<f32> = (0..f)
                .map(|t| row[t * d + cr] * self.std[cr] + self.mean[cr])
                .collect();
            if path.faces_path() {
                yaw = path.facing_yaw_rate(yaw.first().copied().unwrap_or(0.0));
                for (t, r) in yaw.iter().enumerate().take(f) {
                    row[t * d + cr] = (r - self.mean[cr]) / self.std[cr];
                }
            }
            for (t, vel) in path.local_velocities(&yaw).into_iter().enumerate().take(f) {
                row[t * d + cx] = (vel[0] - self.mean[cx]) / self.std[cx];
                row[t * d + cy] = (vel[1] - self.mean[cy]) / self.std[cy];
            }
        }
        Tensor::from_vec(v, (b, f, d), &Device::Cpu)?
            .to_device(x0.device())?
            .to_dtype(x0.dtype())
    }
}
