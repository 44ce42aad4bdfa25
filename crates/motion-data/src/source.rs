//! The common view of a motion dataset (in-memory folder data or a memory-mapped pack), which
//! the batcher consumes.

use crate::error::{DataError, Result};

/// Width of the SMPL-RIFKE features (DESIGN §4.1).
pub const FEATURE_DIM: usize = 205;
/// Width of the CLIP ViT-B/32 text features (DESIGN §4.7).
pub const TEXT_DIM: usize = 512;
/// Maximum number of CLIP text tokens (start + 75 + end).
pub const MAX_TEXT_TOKENS: usize = 77;

/// The reference data splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Split {
    /// Training split (`humanml3d_train_split.txt`).
    Train,
    /// Validation split (`humanml3d_val_split.txt`).
    Val,
    /// Test split (`humanml3d_test_split.txt`).
    Test,
}

impl Split {
    /// All splits, in file order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// The split's name as used in file names (`train`, `val`, `test`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// The split file name, `humanml3d_<name>_split.txt`.
    pub fn file_name(self) -> String {
        format!("humanml3d_{}_split.txt", self.name())
    }

    /// Parses `train`, `val` or `test`.
    pub fn parse(s: &str) -> Option<Split> {
        Split::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// One motion with its captions and (optionally) CLIP text features, fully in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct MotionSample {
    /// The sample id (file stem).
    pub id: String,
    /// Raw (un-normalised) SMPL-RIFKE features, row-major `[frames, 205]`.
    pub features: Vec<f32>,
    /// Number of frames.
    pub frames: usize,
    /// Captions, one per line of `caption_raw/<id>.txt`.
    pub captions: Vec<String>,
    /// CLIP features, when the folder has them.
    pub text: Option<TextFeatures>,
}

/// Per-caption CLIP text features of one sample (DESIGN §4.7).
#[derive(Debug, Clone, PartialEq)]
pub struct TextFeatures {
    /// Pooled (end-of-text) features, row-major `[captions, 512]`.
    pub pooled: Vec<f32>,
    /// Token features per caption, each row-major `[L_i, 512]` with `L_i <= 77`.
    pub tokens: Vec<Vec<f32>>,
}

/// Random access to a motion dataset, as needed by [`crate::Batcher`].
pub trait MotionSource {
    /// Number of samples.
    fn len(&self) -> usize;
    /// Whether there is no sample.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Id of sample `i`.
    fn id(&self, i: usize) -> &str;
    /// Number of frames of sample `i`.
    fn frames(&self, i: usize) -> usize;
    /// Captions of sample `i` (at least one).
    fn captions(&self, i: usize) -> &[String];
    /// Copies frames `start .. start + out.len() / 205` of sample `i` into `out` (raw features).
    fn copy_frames(&self, i: usize, start: usize, out: &mut [f32]) -> Result<()>;
    /// Whether CLIP text features are available.
    fn has_text(&self) -> bool;
    /// Token features `[L, 512]` (row-major) of caption `c` of sample `i`, appended to `out`;
    /// returns `L`. Errors if [`MotionSource::has_text`] is false, or if the stored features
    /// are not a whole number of 512-wide rows.
    fn text_tokens(&self, i: usize, c: usize, out: &mut Vec<f32>) -> Result<usize>;
    /// Pooled features `[512]` of caption `c` of sample `i`, appended to `out`.
    fn text_pooled(&self, i: usize, c: usize, out: &mut Vec<f32>) -> Result<()>;
}

/// In-memory samples are a source too (e.g. synthetic motions that never touch the disk).
impl MotionSource for [MotionSample] {
    fn len(&self) -> usize {
        <[MotionSample]>::len(self)
    }

    fn id(&self, i: usize) -> &str {
        &self[i].id
    }

    fn frames(&self, i: usize) -> usize {
        self[i].frames
    }

    fn captions(&self, i: usize) -> &[String] {
        &self[i].captions
    }

    fn copy_frames(&self, i: usize, start: usize, out: &mut [f32]) -> Result<()> {
        let s = &self[i];
        let src = start
            .checked_mul(FEATURE_DIM)
            .and_then(|a| Some(a..a.checked_add(out.len())?))
            .and_then(|r| s.features.get(r));
        let src = src.ok_or_else(|| {
            DataError::Config(format!(
                "frames {start}..{} out of range for {} ({} frames)",
                start.saturating_add(out.len() / FEATURE_DIM),
                s.id,
                s.frames
            ))
        })?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn has_text(&self) -> bool {
        !self.is_empty() && self.iter().all(|s| s.text.is_some())
    }

    fn text_tokens(&self, i: usize, c: usize, out: &mut Vec<f32>) -> Result<usize> {
        let t = self[i]
            .text
            .as_ref()
            .and_then(|t| t.tokens.get(c))
            .ok_or_else(|| {
                DataError::Config(format!(
                    "no CLIP token features for {} caption {c}",
                    self[i].id
                ))
            })?;
        if t.len() % TEXT_DIM != 0 {
            return Err(DataError::Shape {
                what: format!("text.tokens[{c}] (CLIP token features) of {}", self[i].id),
                expected: format!("[L, {TEXT_DIM}] (a multiple of {TEXT_DIM} values)"),
                got: vec![t.len()],
            });
        }
        out.extend_from_slice(t);
        Ok(t.len() / TEXT_DIM)
    }

    fn text_pooled(&self, i: usize, c: usize, out: &mut Vec<f32>) -> Result<()> {
        let t = self[i]
            .text
            .as_ref()
            .and_then(|t| {
                t.pooled
                    .get(c.checked_mul(TEXT_DIM)?..(c + 1).checked_mul(TEXT_DIM)?)
            })
            .ok_or_else(|| {
                DataError::Config(format!(
                    "no pooled CLIP features for {} caption {c}",
                    self[i].id
                ))
            })?;
        out.extend_from_slice(t);
        Ok(())
    }
}
