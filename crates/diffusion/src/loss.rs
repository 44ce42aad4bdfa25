//! The DDPM training loss in the x0 parametrisation (Ho et al., "Denoising Diffusion
//! Probabilistic Models", 2020, with the clean-data target of Ramesh et al., 2022), on the
//! cosine schedule of Nichol & Dhariwal (2021).
//!
//! `t = t_idx / N` with `t_idx` uniform in `0..N` (`N = 100`, so `t` is in `[0, 0.99]` and
//! `t = 0` is a noise-free input), `g = gamma(t)` with `clip_min = 1e-9`,
//! `x_t = sqrt(g) x0 + sqrt(1 - g) eps`, loss = MSE between the network output and `x0`.
//!
//! The reference averages over ALL elements, padded frames included
//! ([`LossReduction::AllElements`], the default); [`LossReduction::ValidFrames`] averages over
//! valid frames only. The reference's training code as written is inconsistent with its own
//! samplers (it noises with `g x0 + sqrt(1 - g^2) eps` and regresses the output onto `eps`):
//! that variant is available as [`LossFormula::ReferenceAsWritten`] for comparison only
//! (`fixtures/loss_ddpm.json`, `alt.*_reference_formula`).

use candle::{DType, Device, Result, Tensor};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::denoiser::{Conditioning, Denoiser};
use crate::schedule::{CosineSchedule, DDPM_CLIP_MIN};

/// How the squared errors are averaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossReduction {
    /// Mean over all `B * F * D` elements, padded frames included (the reference).
    #[default]
    AllElements,
    /// Mean over the elements of valid frames only.
    ValidFrames,
}

/// Which noising / target pair the loss uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossFormula {
    /// `x_t = sqrt(g) x0 + sqrt(1 - g) eps`, target `x0`: consistent with the samplers.
    #[default]
    X0,
    /// The reference's training code as written: `x_t = g x0 + sqrt(1 - g^2) eps`, target `eps`.
    /// Inconsistent with the samplers; for comparison only.
    ReferenceAsWritten,
}

/// The DDPM training loss.
///
/// ```
/// use diffusion::DdpmLoss;
/// let loss = DdpmLoss::default();
/// // t_idx = 50 of N = 100 is t = 0.5 where the cosine schedule gives gamma = 0.5.
/// assert_eq!(loss.gammas(&[0, 50])?, vec![1.0, 0.5]);
/// # Ok::<(), candle::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DdpmLoss {
    /// Size `N` of the time grid `t = t_idx / N`.
    pub num_steps: usize,
    /// Lower clamp of the cosine schedule.
    pub clip_min: f32,
    /// How the squared errors are averaged.
    pub reduction: LossReduction,
    /// Noising / target pair.
    pub formula: LossFormula,
}

impl Default for DdpmLoss {
    /// The reference: `N = 100`, `clip_min = 1e-9`, mean over all elements, x0 target.
    fn default() -> Self {
        Self {
            num_steps: 100,
            clip_min: DDPM_CLIP_MIN,
            reduction: LossReduction::AllElements,
            formula: LossFormula::X0,
        }
    }
}

/// Everything one loss evaluation produced.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// The scalar loss (0-dim, `f32`), differentiable.
    pub loss: Tensor,
    /// The noisy network input `[B, F, D]`.
    pub noisy: Tensor,
    /// The network output `[B, F, D]`.
    pub prediction: Tensor,
    /// The noise levels `[B]`.
    pub gamma: Tensor,
}

impl DdpmLoss {
    /// `t = f32(t_idx) / f32(N)` for each sample.
    pub fn times(&self, t_idx: &[usize]) -> Result<Vec<f32>> {
        t_idx
            .iter()
            .map(|&i| {
                if i >= self.num_steps {
                    candle::bail!("t_idx {i} out of range 0..{}", self.num_steps)
                }
                Ok(i as f32 / self.num_steps as f32)
            })
            .collect()
    }

    /// `gamma(t_idx / N)` for each sample.
    pub fn gammas(&self, t_idx: &[usize]) -> Result<Vec<f32>> {
        let s = CosineSchedule::new(self.clip_min);
        Ok(self.times(t_idx)?.into_iter().map(|t| s.gamma(t)).collect())
    }

    /// Draws one `t_idx` per sample, uniform in `0..N`.
    pub fn sample_t_idx<R: Rng + ?Sized>(&self, batch: usize, rng: &mut R) -> Vec<usize> {
        (0..batch)
            .map(|_| rng.random_range(0..self.num_steps))
            .collect()
    }

    /// Draws standard-normal noise of `shape` from `rng` (for [`Self::compute`]; candle's CPU
    /// `randn` cannot be seeded).
    pub fn sample_noise<R: Rng + ?Sized>(
        &self,
        shape: &[usize],
        device: &Device,
        rng: &mut R,
    ) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))
            .collect();
        Tensor::from_vec(data, shape, device)
    }

    /// The noisy input for `x0`, noise levels `gamma [B]` and `noise`, per [`Self::formula`].
    ///
    /// # Shapes
    /// `x0`, `noise`: `[B, F, D]`; `gamma`: `[B]`; returns `[B, F, D]`.
    pub fn noisy(&self, x0: &Tensor, gamma: &Tensor, noise: &Tensor) -> Result<Tensor> {
        let g = gamma
            .to_dtype(x0.dtype())?
            .reshape((gamma.elem_count(), 1, 1))?;
        let one_minus = g.affine(-1.0, 1.0)?; // 1 - g, one rounding as in torch
        match self.formula {
            LossFormula::X0 => g
                .sqrt()?
                .broadcast_mul(x0)?
                .add(&one_minus.sqrt()?.broadcast_mul(noise)?),
            LossFormula::ReferenceAsWritten => {
                let one_minus_sq = g.sqr()?.affine(-1.0, 1.0)?;
                g.broadcast_mul(x0)?
                    .add(&one_minus_sq.sqrt()?.broadcast_mul(noise)?)
            }
        }
    }

    /// The loss of `prediction` against `target` under [`Self::reduction`].
    ///
    /// # Shapes
    /// `prediction`, `target`: `[B, F, D]`; `frame_mask`: `[B, F]` (1 = valid, f32 or u8).
    pub fn reduce(
        &self,
        prediction: &Tensor,
        target: &Tensor,
        frame_mask: &Tensor,
    ) -> Result<Tensor> {
        let sq = (prediction - target)?.sqr()?;
        match self.reduction {
            LossReduction::AllElements => sq.mean_all(),
            LossReduction::ValidFrames => {
                let m = frame_mask.to_dtype(sq.dtype())?;
                let d = sq.dim(2)? as f64;
                let masked = sq.broadcast_mul(&m.unsqueeze(2)?)?.sum_all()?;
                let count = (m.sum_all()? * d)?;
                masked.div(&count)
            }
        }
    }

    /// Evaluates the loss of `denoiser` on clean data `x0` with given `t_idx` and `noise`
    /// (deterministic; see [`Self::sample_t_idx`] and [`crate::SeededNoise`] to draw them).
    ///
    /// # Shapes
    /// `x0`, `noise`: `[B, F, D]`; `frame_mask`: `[B, F]` (1 = valid); `t_idx`: `B` values.
    pub fn compute(
        &self,
        denoiser: &dyn Denoiser,
        x0: &Tensor,
        cond: &Conditioning,
        frame_mask: &Tensor,
        t_idx: &[usize],
        noise: &Tensor,
    ) -> Result<LossOutput> {
        let b = x0.dim(0)?;
        if t_idx.len() != b || noise.dims() != x0.dims() {
            candle::bail!(
                "DdpmLoss: x0 {:?} needs {b} t_idx (got {}) and noise of the same shape (got {:?})",
                x0.dims(),
                t_idx.len(),
                noise.dims()
            );
        }
        let gamma = Tensor::from_vec(self.gammas(t_idx)?, b, x0.device())?;
        let noisy = self.noisy(x0, &gamma, noise)?;
        let prediction = denoiser.forward(&noisy, &gamma, cond, frame_mask)?;
        let target = match self.formula {
            LossFormula::X0 => x0,
            LossFormula::ReferenceAsWritten => noise,
        };
        let loss = self.reduce(&prediction, target, frame_mask)?;
        Ok(LossOutput {
            loss,
            noisy,
            prediction,
            gamma,
        })
    }
}

/// Builds a `[B, F]` f32 frame mask (1 = valid) from sequence lengths.
pub fn lengths_to_mask(lengths: &[usize], frames: usize, device: &Device) -> Result<Tensor> {
    let data: Vec<f32> = lengths
        .iter()
        .flat_map(|&l| (0..frames).map(move |f| if f < l { 1.0 } else { 0.0 }))
        .collect();
    Tensor::from_vec(data, (lengths.len(), frames), device)?.to_dtype(DType::F32)
}
