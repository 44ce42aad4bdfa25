//! Sampling with a known part (inpainting): some frames and feature channels of the result are
//! given, the sampler fills in the rest so that it fits them. Motion editing (continuing a
//! motion, filling the frames between two poses) is this with different masks.
//!
//! [`KnownPart`] holds a mask over `[B, F, D]` (1 = known, 0 = free; values in between blend) and
//! the target values in the model's (normalised) data space. [`Inpainted`] wraps any
//! [`Denoiser`] and replaces the known part of every `x0` prediction with the target:
//! `x0 <- x0 (1 - mask) + target mask`. Every sampler of this crate then applies the constraint at
//! every step without knowing about it, because each one moves `x` towards its `x0` prediction:
//!
//! - DDIM, DPM-Solver++ and UniPC are exact in the known part: with `x0 = target` there, their
//!   update keeps the known part of `x_k` at `sqrt(g_k) target + sqrt(1 - g_k) eps`, with `eps`
//!   the known part of the starting noise, i.e. exactly the target noised to the current level
//!   (the "replacement" method of Song et al., "Score-Based Generative Modeling through SDEs",
//!   ICLR 2021, and of MDM's editing, Tevet et al., ICLR 2023), so the network always sees a
//!   correctly noised known part;
//! - DDPM does the same with fresh posterior noise at every step;
//! - every sampler's last step lands on the last `x0` prediction, so the known part of the
//!   result equals the target exactly (where the mask is 1).
//!
//! The free part is what the network predicts given a noisy known part, which is the
//! replacement method's approximation of the conditional distribution: good when the known
//! part is informative at the noise levels where the free part is decided (long prefixes,
//! several keyframes), weaker for a single frame at high noise.

use candle::{DType, Result, Tensor};

use crate::denoiser::{Conditioning, Denoiser};

/// A known part of the samples: `mask` and `target`, both `[B, F, D]` (see the module docs).
#[derive(Debug, Clone)]
pub struct KnownPart {
    mask: Tensor,
    /// `1 - mask`, computed once (it is applied at every step).
    keep: Tensor,
    target: Tensor,
}

impl KnownPart {
    /// A known part from a mask (values in `[0, 1]`, 1 = known) and target values in the
    /// model's data space, of the same shape `[B, F, D]`.
    ///
    /// # Errors
    /// Shapes that differ or are not 3-d, a mask value outside `[0, 1]` or not finite, a
    /// non-finite target value where the mask is not 0.
    pub fn new(mask: Tensor, target: Tensor) -> Result<Self> {
        if mask.dims() != target.dims() || mask.rank() != 3 {
            candle::bail!(
                "known part: mask {:?} and target {:?} must both be [B, F, D]",
                mask.dims(),
                target.dims()
            );
        }
        let m = mask.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        if let Some(i) = m.iter().position(|v| !(0.0..=1.0).contains(v)) {
            candle::bail!(
                "known part: mask value {} at flat index {i} is not in [0, 1]",
                m[i]
            );
        }
        let t = target
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        if let Some(i) = (0..t.len()).find(|&i| m[i] > 0.0 && !t[i].is_finite()) {
            candle::bail!(
                "known part: target value {} at flat index {i} is not finite",
                t[i]
            );
        }
        // Zero the target where it is free, so a NaN there cannot leak through `mask * target`.
        let target = Tensor::from_vec(
            t.iter()
                .zip(&m)
                .map(|(&v, &w)| if w > 0.0 { v } else { 0.0 })
                .collect::<Vec<_>>(),
            target.dims(),
            target.device(),
        )?;
        let mask = mask.to_dtype(DType::F32)?;
        Ok(Self {
            keep: mask.affine(-1.0, 1.0)?,
            mask,
            target,
        })
    }

    /// The mask `[B, F, D]` (f32).
    pub fn mask(&self) -> &Tensor {
        &self.mask
    }

    /// The target `[B, F, D]` (f32, 0 where the mask is 0).
    pub fn target(&self) -> &Tensor {
        &self.target
    }

    /// `x0 (1 - mask) + target mask`: the known part of `x0` replaced by the target (exactly,
    /// where the mask is 1).
    pub fn apply(&self, x0: &Tensor) -> Result<Tensor> {
        if x0.dims() != self.mask.dims() {
            candle::bail!(
                "known part of shape {:?} applied to a prediction of shape {:?}",
                self.mask.dims(),
                x0.dims()
            );
        }
        let target = self.target.to_dtype(x0.dtype())?;
        let (mask, keep) = (
            self.mask.to_dtype(x0.dtype())?,
            self.keep.to_dtype(x0.dtype())?,
        );
        x0.mul(&keep)? + target.mul(&mask)?
    }

    /// Largest `|x - target|` over the fully known entries (mask = 1), 0 when there are none:
    /// how far a result is from its constraint.
    pub fn max_error(&self, x: &Tensor) -> Result<f32> {
        let full = self.mask.ge(1f32)?.to_dtype(DType::F32)?;
        let d = (x.to_dtype(DType::F32)? - &self.target)?
            .abs()?
            .mul(&full)?;
        d.flatten_all()?.max(0)?.to_scalar::<f32>()
    }
}

/// A denoiser whose `x0` predictions keep a [`KnownPart`] (see the module docs).
pub struct Inpainted<'a> {
    inner: &'a dyn Denoiser,
    known: &'a KnownPart,
}

impl<'a> Inpainted<'a> {
    /// Wraps `inner` (e.g. a [`crate::Guided`] network) so that its predictions keep `known`.
    pub fn new(inner: &'a dyn Denoiser, known: &'a KnownPart) -> Self {
        Self { inner, known }
    }
}

impl std::fmt::Debug for Inpainted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inpainted")
            .field("shape", &self.known.mask.dims())
            .finish()
    }
}

impl Denoiser for Inpainted<'_> {
    fn forward(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        cond: &Conditioning,
        frame_mask: &Tensor,
    ) -> Result<Tensor> {
        let x0 = self.inner.forward(x, gamma, cond, frame_mask)?;
        self.known.apply(&x0)
    }
}
