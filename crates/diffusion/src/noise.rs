//! Injectable Gaussian noise for the samplers.
//!
//! Samplers never call a global RNG: they ask a [`NoiseSource`] for each noise tensor, so tests
//! can replay stored noise exactly ([`ReplayNoise`]) and each sample of a batch can own its seed
//! ([`SeededNoise`]), which makes a sample independent of the batch it is generated in
//! (the per-sample seeding recommended for reproducible diffusion sampling, e.g. Karras et al.,
//! "Elucidating the Design Space of Diffusion-Based Generative Models", 2022, App. D).
//!
//! candle's CPU `randn` cannot be seeded, so the draws use `rand`'s `StdRng` (ChaCha12,
//! reproducible for a given `rand` 0.9 version) with `rand_distr::StandardNormal`, and the
//! values are copied into a tensor.

use std::collections::VecDeque;

use candle::{DType, Device, Result, Tensor};
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};

/// A source of standard-normal noise tensors.
pub trait NoiseSource {
    /// The next noise tensor, `f32`, of the given shape, on `device`.
    fn next(&mut self, shape: &[usize], device: &Device) -> Result<Tensor>;
}

impl<N: NoiseSource + ?Sized> NoiseSource for &mut N {
    fn next(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        (**self).next(shape, device)
    }
}

/// Returns pre-recorded tensors in order (for tests and for reproducing a reference run).
///
/// Asking for more tensors than were given, or for a shape other than the next tensor's, is an
/// error naming the position and both shapes.
///
/// ```
/// use candle::{Device, Tensor};
/// use diffusion::{NoiseSource, ReplayNoise};
/// let dev = Device::Cpu;
/// let mut n = ReplayNoise::new(vec![Tensor::ones((2, 3), candle::DType::F32, &dev)?]);
/// assert_eq!(n.next(&[2, 3], &dev)?.sum_all()?.to_scalar::<f32>()?, 6.0);
/// assert!(n.next(&[2, 3], &dev).is_err());
/// # Ok::<(), candle::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ReplayNoise {
    queue: VecDeque<Tensor>,
    served: usize,
}

impl ReplayNoise {
    /// A source returning `tensors` in order.
    pub fn new(tensors: Vec<Tensor>) -> Self {
        Self {
            queue: tensors.into(),
            served: 0,
        }
    }

    /// How many tensors are left.
    pub fn remaining(&self) -> usize {
        self.queue.len()
    }
}

impl NoiseSource for ReplayNoise {
    fn next(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        let index = self.served;
        let t = self.queue.pop_front().ok_or_else(|| {
            candle::Error::Msg(format!(
                "ReplayNoise exhausted: noise tensor #{index} of shape {shape:?} requested but \
                 only {index} were recorded"
            ))
        })?;
        if t.dims() != shape {
            return Err(candle::Error::Msg(format!(
                "ReplayNoise: recorded noise tensor #{index} has shape {:?}, sampler asked for \
                 {shape:?}",
                t.dims()
            )));
        }
        self.served += 1;
        t.to_dtype(DType::F32)?.to_device(device)
    }
}

/// Per-sample seeded standard-normal noise: row `b` of every tensor comes from its own
/// `StdRng` seeded with `seeds[b]`, so a sample's noise does not depend on the other rows of the
/// batch (sample 0 of a batch equals the same seed drawn alone). Draw the initial latents from
/// the same source before sampling so they are per-sample too.
///
/// ```
/// use candle::Device;
/// use diffusion::{NoiseSource, SeededNoise};
/// let dev = Device::Cpu;
/// let batch = SeededNoise::new(vec![7, 8, 9]).next(&[3, 4], &dev)?;
/// let alone = SeededNoise::new(vec![7]).next(&[1, 4], &dev)?;
/// assert_eq!(batch.get(0)?.to_vec1::<f32>()?, alone.get(0)?.to_vec1::<f32>()?);
/// # Ok::<(), candle::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SeededNoise {
    seeds: Vec<u64>,
    rngs: Vec<StdRng>,
}

impl SeededNoise {
    /// One stream per batch row, seeded with `seeds[b]`.
    pub fn new(seeds: Vec<u64>) -> Self {
        let rngs = seeds.iter().map(|&s| StdRng::seed_from_u64(s)).collect();
        Self { seeds, rngs }
    }

    /// The seeds, one per batch row.
    pub fn seeds(&self) -> &[u64] {
        &self.seeds
    }

    /// Draws a tensor of `shape` whose first dimension is the batch.
    fn draw(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        let batch = *shape.first().ok_or_else(|| {
            candle::Error::Msg("SeededNoise: a noise shape needs a batch dimension".to_string())
        })?;
        if batch != self.rngs.len() {
            return Err(candle::Error::Msg(format!(
                "SeededNoise has {} seeds but the sampler asked for noise of shape {shape:?} \
                 (batch {batch})",
                self.rngs.len()
            )));
        }
        let per_row: usize = shape[1..].iter().product();
        let mut data = Vec::with_capacity(batch * per_row);
        for rng in &mut self.rngs {
            data.extend((0..per_row).map(|_| -> f32 { StandardNormal.sample(rng) }));
        }
        Tensor::from_vec(data, shape, device)
    }
}

impl NoiseSource for SeededNoise {
    fn next(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        self.draw(shape, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_zero_of_a_batch_of_four_equals_its_seed_alone() -> Result<()> {
        let dev = Device::Cpu;
        let mut batch = SeededNoise::new(vec![11, 22, 33, 44]);
        let mut alone = SeededNoise::new(vec![11]);
        for _ in 0..3 {
            let b = batch.next(&[4, 5, 6], &dev)?;
            let a = alone.next(&[1, 5, 6], &dev)?;
            let diff = (b.narrow(0, 0, 1)? - a)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert_eq!(diff, 0.0);
        }
        // Different seeds give different streams.
        let b = batch.next(&[4, 5, 6], &dev)?;
        let d01 = (b.get(0)? - b.get(1)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(d01 > 0.0);
        Ok(())
    }

    #[test]
    fn seeded_noise_is_standard_normal() -> Result<()> {
        let n = SeededNoise::new(vec![1, 2]).next(&[2, 20_000], &Device::Cpu)?;
        let mean = n.mean_all()?.to_scalar::<f32>()?;
        let var = n.sqr()?.mean_all()?.to_scalar::<f32>()? - mean * mean;
        // 40k draws: std error of the mean 0.005, of the variance 0.007.
        assert!(mean.abs() < 0.025, "{mean}");
        assert!((var - 1.0).abs() < 0.035, "{var}");
        Ok(())
    }

    #[test]
    fn wrong_batch_and_replay_shape_are_errors() {
        let dev = Device::Cpu;
        assert!(SeededNoise::new(vec![1, 2]).next(&[3, 4], &dev).is_err());
        let t = Tensor::zeros((2, 2), DType::F32, &dev).expect("zeros");
        let err = ReplayNoise::new(vec![t])
            .next(&[2, 3], &dev)
            .expect_err("shape mismatch");
        assert!(err.to_string().contains("[2, 3]"), "{err}");
    }
}
