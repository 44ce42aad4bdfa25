//! The interface between samplers and networks: a [`Denoiser`] predicts clean data `x0` from a
//! noisy input at a noise level, under a [`Conditioning`].
//!
//! The noise level is `gamma` (alpha-bar, the signal variance of `x_t = sqrt(gamma) x0 +
//! sqrt(1 - gamma) eps`), as in the cosine-schedule formulation of Nichol & Dhariwal,
//! "Improved Denoising Diffusion Probabilistic Models" (2021), with the network predicting `x0`
//! (Ramesh et al., "Hierarchical Text-Conditional Image Generation with CLIP Latents", 2022).

use candle::{DType, Result, Tensor};

/// A network that predicts clean data from noisy data.
///
/// # Shapes
/// - `x_t`: `[B, F, D]` f32, noisy motion features.
/// - `gamma`: `[B]` f32, noise level in `(0, 1]` (1 = clean).
/// - `cond`: the condition (see [`Conditioning`]).
/// - `frame_mask`: `[B, F]`, 1 = valid frame, 0 = padding (f32, or u8 accepted).
/// - returns the predicted `x0`, `[B, F, D]`.
pub trait Denoiser {
    /// Predicts `x0` from `x_t` at noise level `gamma`.
    fn forward(
        &self,
        x_t: &Tensor,
        gamma: &Tensor,
        cond: &Conditioning,
        frame_mask: &Tensor,
    ) -> Result<Tensor>;
}

impl<T: Denoiser + ?Sized> Denoiser for &T {
    fn forward(
        &self,
        x_t: &Tensor,
        gamma: &Tensor,
        cond: &Conditioning,
        frame_mask: &Tensor,
    ) -> Result<Tensor> {
        (**self).forward(x_t, gamma, cond, frame_mask)
    }
}

/// What a denoiser is conditioned on.
///
/// The "null" condition used by classifier-free guidance is zeros of the same shape
/// ([`Conditioning::null`]), as in the reference implementation.
#[derive(Debug, Clone)]
pub enum Conditioning {
    /// Unconditional.
    None,
    /// One pooled vector per sample, `[B, C]` (e.g. a CLIP sentence feature).
    Pooled(Tensor),
    /// A token sequence per sample, `[B, L, C]`, with an optional token mask `[B, L]`
    /// (1 = valid token).
    Tokens {
        /// Token features `[B, L, C]`.
        tokens: Tensor,
        /// Optional token mask `[B, L]`, 1 = valid.
        mask: Option<Tensor>,
    },
}

impl Conditioning {
    /// The batch size the condition carries, if any.
    pub fn batch_size(&self) -> Option<usize> {
        match self {
            Conditioning::None => None,
            Conditioning::Pooled(t) => t.dims().first().copied(),
            Conditioning::Tokens { tokens, .. } => tokens.dims().first().copied(),
        }
    }

    /// The null condition: zeros of the same shape (token masks are kept).
    pub fn null(&self) -> Result<Conditioning> {
        Ok(match self {
            Conditioning::None => Conditioning::None,
            Conditioning::Pooled(t) => Conditioning::Pooled(t.zeros_like()?),
            Conditioning::Tokens { tokens, mask } => Conditioning::Tokens {
                tokens: tokens.zeros_like()?,
                mask: mask.clone(),
            },
        })
    }

    /// Concatenates two conditions of the same kind along the batch dimension.
    pub fn cat_batch(&self, other: &Conditioning) -> Result<Conditioning> {
        Ok(match (self, other) {
            (Conditioning::None, Conditioning::None) => Conditioning::None,
            (Conditioning::Pooled(a), Conditioning::Pooled(b)) => {
                Conditioning::Pooled(Tensor::cat(&[a, b], 0)?)
            }
            (
                Conditioning::Tokens {
                    tokens: a,
                    mask: ma,
                },
                Conditioning::Tokens {
                    tokens: b,
                    mask: mb,
                },
            ) => {
                let mask = match (ma, mb) {
                    (None, None) => None,
                    (Some(ma), Some(mb)) => Some(Tensor::cat(
                        &[&ma.to_dtype(DType::F32)?, &mb.to_dtype(DType::F32)?],
                        0,
                    )?),
                    (Some(m), None) | (None, Some(m)) => {
                        return Err(candle::Error::Msg(format!(
                            "cannot concatenate token conditions where only one has a mask \
                             (mask shape {:?})",
                            m.dims()
                        )));
                    }
                };
                Conditioning::Tokens {
                    tokens: Tensor::cat(&[a, b], 0)?,
                    mask,
                }
            }
            _ => {
                return Err(candle::Error::Msg(
                    "cannot concatenate conditions of different kinds".to_string(),
                ));
            }
        })
    }
}
