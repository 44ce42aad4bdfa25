//! Batching: crop / pad motions to a fixed number of frames, frame masks (1 = valid),
//! normalisation `(x - mean) / std` with padded frames zero AFTER normalisation (DESIGN §4.2),
//! caption choice (seeded random for training, the first for evaluation, as in the reference),
//! CLIP token features padded to 77 with a token mask (1 = valid), and seeded shuffling.
//!
//! Every random choice of a sample (crop start, caption) comes from its own RNG seeded by
//! `(seed, epoch, sample index)`, so it does not depend on the batch the sample lands in.

use candle::{Device, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::error::{DataError, Result};
use crate::source::{FEATURE_DIM, MAX_TEXT_TOKENS, MotionSource, TEXT_DIM};

/// Training or evaluation behaviour of the batcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchMode {
    /// Random caption and random crop window per sample (seeded); shuffled order if
    /// [`BatchConfig::shuffle`].
    Train,
    /// First caption, crop from frame 0; the order of the split unless [`BatchConfig::shuffle`].
    Eval,
}

/// Alias kept for readability at call sites that only care about the caption rule.
pub type CaptionMode = BatchMode;

/// Batching options.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Frames per sample: longer motions are cropped, shorter ones zero-padded.
    pub num_frames: usize,
    /// Training or evaluation behaviour.
    pub mode: BatchMode,
    /// Shuffle the sample order each epoch (seeded by `seed` and the epoch).
    pub shuffle: bool,
    /// Drop the last incomplete batch.
    pub drop_last: bool,
    /// Seed of every random choice.
    pub seed: u64,
}

impl BatchConfig {
    /// Training preset: shuffled, random captions and crops, incomplete last batch dropped.
    pub fn train(batch_size: usize, num_frames: usize, seed: u64) -> Self {
        BatchConfig {
            batch_size,
            num_frames,
            mode: BatchMode::Train,
            shuffle: true,
            drop_last: true,
            seed,
        }
    }

    /// Evaluation preset: split order, first captions, crops from frame 0, every sample kept.
    pub fn eval(batch_size: usize, num_frames: usize) -> Self {
        BatchConfig {
            batch_size,
            num_frames,
            mode: BatchMode::Eval,
            shuffle: false,
            drop_last: false,
            seed: 0,
        }
    }
}

/// CLIP text features of a batch.
#[derive(Debug, Clone)]
pub struct TextBatch {
    /// Token features `[B, 77, 512]`, zero after each caption's length.
    pub tokens: Tensor,
    /// Token mask `[B, 77]` (f32, 1 = valid token, 0 = padding).
    pub token_mask: Tensor,
    /// Number of valid tokens per sample.
    pub token_lengths: Vec<usize>,
    /// Pooled (end-of-text) features `[B, 512]`.
    pub pooled: Tensor,
}

/// One batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Sample ids.
    pub ids: Vec<String>,
    /// Sample indices in the source.
    pub indices: Vec<usize>,
    /// Motion features `[B, F, 205]` (normalised when the batcher has statistics), zero in
    /// padded frames.
    pub motion: Tensor,
    /// Frame mask `[B, F]` (f32, 1 = valid frame, 0 = padding).
    pub frame_mask: Tensor,
    /// Valid frames per sample.
    pub lengths: Vec<usize>,
    /// First frame of each crop window in the source motion.
    pub crop_starts: Vec<usize>,
    /// The chosen caption of each sample.
    pub captions: Vec<String>,
    /// Index of the chosen caption in the sample's caption list.
    pub caption_indices: Vec<usize>,
    /// CLIP features of the chosen captions, when the source has them.
    pub text: Option<TextBatch>,
}

/// Feature statistics for `(x - mean) / std`.
#[derive(Debug, Clone, PartialEq)]
struct Stats {
    mean: Vec<f32>,
    std: Vec<f32>,
}

/// Turns a [`MotionSource`] into batches of candle tensors on a device.
///
/// ```
/// use motion_data::synth::{SynthSkeleton, synth_sample};
/// use motion_data::{BatchConfig, Batcher, FEATURE_DIM};
/// # fn main() -> motion_data::Result<()> {
/// // Four synthetic motions in memory (any `MotionSource` works: folder, pack, samples).
/// let skeleton = SynthSkeleton::default();
/// let samples = (0..4)
///     .map(|i| synth_sample(7, i, &skeleton))
///     .collect::<motion_data::Result<Vec<_>>>()?;
/// let batcher = Batcher::new(samples.as_slice(), BatchConfig::train(2, 60, 7), candle::Device::Cpu)?;
/// for batch in batcher.epoch(0) {
///     let batch = batch?;
///     assert_eq!(batch.motion.dims(), &[2, 60, FEATURE_DIM]);
///     assert_eq!(batch.frame_mask.dims(), &[2, 60]);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Batcher<'a, S: MotionSource + ?Sized> {
    source: &'a S,
    config: BatchConfig,
    device: Device,
    stats: Option<Stats>,
}

fn mix(mut z: u64) -> u64 {
    // splitmix64 finaliser: decorrelates nearby (seed, epoch, index) triples.
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl<'a, S: MotionSource + ?Sized> Batcher<'a, S> {
    /// A batcher over `source` producing tensors on `device`, without normalisation.
    pub fn new(source: &'a S, config: BatchConfig, device: Device) -> Result<Self> {
        if config.batch_size == 0 || config.num_frames == 0 {
            return Err(DataError::Config(format!(
                "batch_size ({}) and num_frames ({}) must be positive",
                config.batch_size, config.num_frames
            )));
        }
        Ok(Batcher {
            source,
            config,
            device,
            stats: None,
        })
    }

    /// Normalises features with `(x - mean) / std` (both `[205]`); padded frames stay zero.
    pub fn with_stats(mut self, mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        if mean.len() != FEATURE_DIM || std.len() != FEATURE_DIM {
            return Err(DataError::Shape {
                what: "normalisation statistics".into(),
                expected: format!("[{FEATURE_DIM}] mean and std"),
                got: vec![mean.len(), std.len()],
            });
        }
        if let Some((i, s)) = std
            .iter()
            .enumerate()
            .find(|(_, s)| !(s.is_finite() && **s > 0.0))
        {
            return Err(DataError::Config(format!(
                "std[{i}] = {s} (must be finite and positive)"
            )));
        }
        if let Some((i, m)) = mean.iter().enumerate().find(|(_, m)| !m.is_finite()) {
            return Err(DataError::Config(format!("mean[{i}] = {m} is not finite")));
        }
        self.stats = Some(Stats { mean, std });
        Ok(self)
    }

    /// Normalises features with a [`motion_repr::Normalizer`] (its `[205]` mean and std;
    /// padded frames stay zero, as in the reference).
    pub fn with_normalizer(self, normalizer: &motion_repr::Normalizer) -> Result<Self> {
        let mean = normalizer
            .mean()
            .flatten_all()?
            .to_dtype(candle::DType::F32)?
            .to_vec1::<f32>()?;
        let std = normalizer
            .std()
            .flatten_all()?
            .to_dtype(candle::DType::F32)?
            .to_vec1::<f32>()?;
        self.with_stats(mean, std)
    }

    /// The configuration.
    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Number of batches per epoch.
    pub fn num_batches(&self) -> usize {
        let n = self.source.len();
        let b = self.config.batch_size;
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The sample order of `epoch` (a seeded permutation when shuffling).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.source.len()).collect();
        if self.config.shuffle {
            let mut rng = StdRng::seed_from_u64(mix(self.config.seed ^ mix(epoch)));
            order.shuffle(&mut rng);
        }
        order
    }

    /// The batches of `epoch`.
    pub fn epoch(&self, epoch: u64) -> BatchIter<'_, 'a, S> {
        BatchIter {
            batcher: self,
            order: self.order(epoch),
            epoch,
            next: 0,
        }
    }

    /// Builds the batch of the given sample indices (choices seeded by `epoch`).
    pub fn batch(&self, indices: &[usize], epoch: u64) -> Result<Batch> {
        let f = self.config.num_frames;
        let b = indices.len();
        if b == 0 {
            return Err(DataError::Config("empty batch".into()));
        }
        let src = self.source;
        let mut motion = vec![0f32; b * f * FEATURE_DIM];
        let mut mask = vec![0f32; b * f];
        let mut lengths = Vec::with_capacity(b);
        let mut crop_starts = Vec::with_capacity(b);
        let mut captions = Vec::with_capacity(b);
        let mut caption_indices = Vec::with_capacity(b);
        let with_text = src.has_text();
        let mut tokens = if with_text {
            vec![0f32; b * MAX_TEXT_TOKENS * TEXT_DIM]
        } else {
            Vec::new()
        };
        let mut token_mask = if with_text {
            vec![0f32; b * MAX_TEXT_TOKENS]
        } else {
            Vec::new()
        };
        let mut token_lengths = Vec::new();
        let mut pooled = Vec::new();
        let mut scratch = Vec::new();
        for (row, &i) in indices.iter().enumerate() {
            if i >= src.len() {
                return Err(DataError::Config(format!(
                    "sample index {i} out of range ({} samples)",
                    src.len()
                )));
            }
            let mut rng =
                StdRng::seed_from_u64(mix(self.config.seed ^ mix(epoch ^ mix(i as u64 ^ 0x5eed))));
            let frames = src.frames(i);
            let len = frames.min(f);
            let start = match self.config.mode {
                BatchMode::Train if frames > f => rng.random_range(0..=frames - f),
                _ => 0,
            };
            let n_caps = src.captions(i).len();
            if n_caps == 0 {
                return Err(DataError::Config(format!("{} has no caption", src.id(i))));
            }
            let c = match self.config.mode {
                BatchMode::Train => rng.random_range(0..n_caps),
                BatchMode::Eval => 0,
            };
            let out = &mut motion[row * f * FEATURE_DIM..(row * f + len) * FEATURE_DIM];
            src.copy_frames(i, start, out)?;
            if let Some(st) = &self.stats {
                for frame in out.chunks_exact_mut(FEATURE_DIM) {
                    for ((x, m), s) in frame.iter_mut().zip(&st.mean).zip(&st.std) {
                        *x = (*x - m) / s;
                    }
                }
            }
            mask[row * f..row * f + len].fill(1.0);
            if with_text {
                scratch.clear();
                let l = src.text_tokens(i, c, &mut scratch)?;
                // Any source: the values appended must be exactly `l` rows of 512, at most 77
                // rows (a token vector that is not a multiple of 512 is an error, not a panic
                // in the copy below).
                if l > MAX_TEXT_TOKENS || scratch.len() != l.saturating_mul(TEXT_DIM) {
                    return Err(DataError::Shape {
                        what: format!("CLIP tokens of {} caption {c}", src.id(i)),
                        expected: format!("[L <= {MAX_TEXT_TOKENS}, {TEXT_DIM}]"),
                        got: if scratch.len() == l.saturating_mul(TEXT_DIM) {
                            vec![l, TEXT_DIM]
                        } else {
                            vec![scratch.len()]
                        },
                    });
                }
                let base = row * MAX_TEXT_TOKENS;
                tokens[base * TEXT_DIM..(base + l) * TEXT_DIM].copy_from_slice(&scratch);
                token_mask[base..base + l].fill(1.0);
                token_lengths.push(l);
                src.text_pooled(i, c, &mut pooled)?;
                if pooled.len() != (row + 1) * TEXT_DIM {
                    return Err(DataError::Shape {
                        what: format!("pooled CLIP features of {} caption {c}", src.id(i)),
                        expected: format!("[{TEXT_DIM}]"),
                        got: vec![pooled.len().saturating_sub(row * TEXT_DIM)],
                    });
                }
            }
            lengths.push(len);
            crop_starts.push(start);
            captions.push(src.captions(i)[c].clone());
            caption_indices.push(c);
        }
        let dev = &self.device;
        let text = if with_text {
            Some(TextBatch {
                tokens: Tensor::from_vec(tokens, (b, MAX_TEXT_TOKENS, TEXT_DIM), dev)?,
                token_mask: Tensor::from_vec(token_mask, (b, MAX_TEXT_TOKENS), dev)?,
                token_lengths,
                pooled: Tensor::from_vec(pooled, (b, TEXT_DIM), dev)?,
            })
        } else {
            None
        };
        Ok(Batch {
            ids: indices.iter().map(|&i| src.id(i).to_string()).collect(),
            indices: indices.to_vec(),
            motion: Tensor::from_vec(motion, (b, f, FEATURE_DIM), dev)?,
            frame_mask: Tensor::from_vec(mask, (b, f), dev)?,
            lengths,
            crop_starts,
            captions,
            caption_indices,
            text,
        })
    }
}

/// Iterator over the batches of one epoch; yields `Result<Batch>`.
#[derive(Debug)]
pub struct BatchIter<'b, 'a, S: MotionSource + ?Sized> {
    batcher: &'b Batcher<'a, S>,
    order: Vec<usize>,
    epoch: u64,
    next: usize,
}

impl<S: MotionSource + ?Sized> Iterator for BatchIter<'_, '_, S> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        let bs = self.batcher.config.batch_size;
        let remaining = self.order.len().saturating_sub(self.next);
        if remaining == 0 || (self.batcher.config.drop_last && remaining < bs) {
            return None;
        }
        let end = (self.next + bs).min(self.order.len());
        let idx = self.order[self.next..end].to_vec();
        self.next = end;
        Some(self.batcher.batch(&idx, self.epoch))
    }
}
