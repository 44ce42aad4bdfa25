//! Classifier-free guidance (Ho & Salimans, "Classifier-Free Diffusion Guidance", 2021) as a
//! [`Denoiser`] wrapper.
//!
//! As in the reference, the conditional and unconditional predictions come from ONE forward of
//! a batch of `2B`: inputs `cat[x, x]`, condition `cat[cond, zeros_like(cond)]` (conditional
//! half first), mask `cat[mask, mask]`, `gamma` repeated; then `x0 = u + (c - u) * w`, evaluated
//! in that order.

use candle::{Result, Tensor};

use crate::denoiser::{Conditioning, Denoiser};

/// Default guidance weight of the reference (`w = 3.5`).
pub const DEFAULT_GUIDANCE_WEIGHT: f64 = 3.5;

/// A denoiser with classifier-free guidance: `x0 = u + (c - u) * w`.
///
/// `w = 1` gives the conditional prediction, `w = 0` the unconditional one. With
/// [`Conditioning::None`] there is nothing to guide and the inner denoiser is called once on the
/// batch of `B`.
///
/// ```
/// use candle::{Device, Result, Tensor};
/// use diffusion::{Conditioning, Denoiser, Guided};
///
/// /// Predicts the pooled condition's first channel everywhere.
/// struct CondValue;
/// impl Denoiser for CondValue {
///     fn forward(&self, x: &Tensor, _g: &Tensor, c: &Conditioning, _m: &Tensor) -> Result<Tensor> {
///         let Conditioning::Pooled(y) = c else { candle::bail!("pooled only") };
///         y.narrow(1, 0, 1)?.unsqueeze(2)?.broadcast_as(x.shape())?.contiguous()
///     }
/// }
/// let dev = Device::Cpu;
/// let x = Tensor::zeros((1, 2, 3), candle::DType::F32, &dev)?;
/// let cond = Conditioning::Pooled(Tensor::new(&[[2f32, 0.0]], &dev)?);
/// let mask = Tensor::ones((1, 2), candle::DType::F32, &dev)?;
/// let gamma = Tensor::new(&[0.5f32], &dev)?;
/// // c = 2, u = 0 (zeros as the null condition): x0 = 0 + (2 - 0) * 3.5 = 7.
/// let x0 = Guided::new(&CondValue, 3.5).forward(&x, &gamma, &cond, &mask)?;
/// assert_eq!(x0.flatten_all()?.to_vec1::<f32>()?, vec![7.0; 6]);
/// # Ok::<(), candle::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Guided<'a> {
    inner: &'a dyn Denoiser,
    weight: f64,
}

impl std::fmt::Debug for Guided<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guided")
            .field("weight", &self.weight)
            .finish_non_exhaustive()
    }
}

impl<'a> Guided<'a> {
    /// Wraps `inner` with guidance weight `weight` (the reference uses 3.5).
    pub fn new(inner: &'a dyn Denoiser, weight: f64) -> Self {
        Self { inner, weight }
    }

    /// The guidance weight `w`.
    pub fn weight(&self) -> f64 {
        self.weight
    }
}

impl Denoiser for Guided<'_> {
    /// # Shapes
    /// As [`Denoiser::forward`]; the inner denoiser sees a batch of `2B`.
    fn forward(
        &self,
        x_t: &Tensor,
        gamma: &Tensor,
        cond: &Conditioning,
        frame_mask: &Tensor,
    ) -> Result<Tensor> {
        if matches!(cond, Conditioning::None) {
            return self.inner.forward(x_t, gamma, cond, frame_mask);
        }
        let b = x_t.dim(0)?;
        if let Some(cb) = cond.batch_size()
            && cb != b
        {
            candle::bail!("Guided: condition batch {cb} does not match x_t batch {b}");
        }
        let x_both = Tensor::cat(&[x_t, x_t], 0)?;
        let g_both = Tensor::cat(&[gamma, gamma], 0)?;
        let m_both = Tensor::cat(&[frame_mask, frame_mask], 0)?;
        let c_both = cond.cat_batch(&cond.null()?)?;
        let out = self.inner.forward(&x_both, &g_both, &c_both, &m_both)?;
        let c = out.narrow(0, 0, b)?;
        let u = out.narrow(0, b, b)?;
        let w = self.weight as f32;
        if let Some(out) = crate::sampler::fused3(&u, &c, &c, |u, c, _| u + (c - u) * w) {
            return out;
        }
        &u + ((&c - &u)? * self.weight)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::{DType, Device};
    use std::cell::Cell;

    /// Returns `x + y[:, 0]`, and checks the 2B batch layout it is called with.
    struct Probe {
        calls: Cell<usize>,
    }

    impl Denoiser for Probe {
        fn forward(
            &self,
            x: &Tensor,
            gamma: &Tensor,
            cond: &Conditioning,
            mask: &Tensor,
        ) -> Result<Tensor> {
            self.calls.set(self.calls.get() + 1);
            let Conditioning::Pooled(y) = cond else {
                candle::bail!("pooled only")
            };
            let b2 = x.dim(0)?;
            assert_eq!(b2, 4);
            assert_eq!(gamma.to_vec1::<f32>()?, vec![0.1, 0.2, 0.1, 0.2]);
            assert_eq!(mask.dims(), &[4, 3]);
            let yv = y.to_vec2::<f32>()?;
            assert_eq!(yv[2], vec![0.0, 0.0]); // null condition = zeros, second half
            assert_eq!(yv[3], vec![0.0, 0.0]);
            x.broadcast_add(&y.narrow(1, 0, 1)?.unsqueeze(2)?)
        }
    }

    #[test]
    fn guidance_is_one_2b_forward_conditional_half_first() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 12.0, &dev)?.reshape((2, 3, 2))?;
        let gamma = Tensor::new(&[0.1f32, 0.2], &dev)?;
        let mask = Tensor::ones((2, 3), DType::F32, &dev)?;
        let cond = Conditioning::Pooled(Tensor::new(&[[1f32, 5.0], [-2.0, 7.0]], &dev)?);
        let probe = Probe {
            calls: Cell::new(0),
        };
        let out = Guided::new(&probe, 3.5).forward(&x, &gamma, &cond, &mask)?;
        assert_eq!(probe.calls.get(), 1);
        // c = x + y0, u = x: u + (c - u) * 3.5 = x + 3.5 y0.
        let expected = x.broadcast_add(&Tensor::new(&[3.5f32, -7.0], &dev)?.reshape((2, 1, 1))?)?;
        let diff = (out - expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        Ok(())
    }
}
