//! The cosine noise schedule of Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic
//! Models" (ICML 2021), in the continuous-time form of the reference implementation.
//!
//! `gamma(t)` is alpha-bar (the signal variance of `x_t = sqrt(gamma) x0 + sqrt(1 - gamma) eps`):
//! `gamma(0) = 1` is clean data and `gamma(1) = clip_min` is (almost) pure noise. Values are
//! computed in `f32` with EXACTLY the reference's operation order (see [`CosineSchedule::gamma`]):
//! near `t = 1` the result is `1 - cos^2(small)` and carries a large relative rounding error, so an
//! algebraically equal `sin^2` or `f64` form would not match the reference.

use std::f32::consts::PI;

/// Default `clip_min` of the DDPM sampler and of the training loss.
pub const DDPM_CLIP_MIN: f32 = 1e-9;
/// Default `clip_min` of the DDIM sampler (and of the few-step solvers).
pub const DDIM_CLIP_MIN: f32 = 1e-5;

/// The cosine schedule `gamma(t) = clamp((1 - cos((1 - t) pi / 2)^2) / (1 - cos(pi / 2)^2),
/// clip_min, 1)`.
///
/// ```
/// use diffusion::CosineSchedule;
/// let s = CosineSchedule::new(1e-9);
/// assert_eq!(s.gamma(0.0), 1.0);
/// assert_eq!(s.gamma(1.0), 1e-9);
/// assert_eq!(s.gamma(0.5), 0.5);
/// // The sampler grid t_k = 1 - k/N runs from noise (clip_min) to clean data (1).
/// let g = s.grid(10);
/// assert_eq!((g[0], g[10]), (1e-9, 1.0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineSchedule {
    clip_min: f32,
}

impl CosineSchedule {
    /// A schedule whose values are clamped to `[clip_min, 1]`.
    pub fn new(clip_min: f32) -> Self {
        Self { clip_min }
    }

    /// The lower clamp of `gamma`.
    pub fn clip_min(&self) -> f32 {
        self.clip_min
    }

    /// `v_start = cos(f32(pi) / 2)^2 = 1.9106855e-15` in `f32` (the reference's constant).
    pub fn v_start() -> f32 {
        let c = (PI / 2.0).cos();
        c * c
    }

    /// `v_end = cos(0)^2 = 1`.
    pub fn v_end() -> f32 {
        let c = 0.0f32.cos();
        c * c
    }

    /// `gamma(t)` in `f32`, in the reference's operation order:
    /// `u = t * -1; u = u + 1; u = u * pi; u = u / 2; c = cos(u); c = c * c;
    /// g = (v_end - c) / (v_end - v_start); clamp(g, clip_min, 1)`.
    pub fn gamma(&self, t: f32) -> f32 {
        // `t * -1` of the reference: exact, identical to negation.
        let mut u = -t;
        u += 1.0;
        u *= PI;
        u /= 2.0;
        let c = u.cos();
        let c = c * c;
        let v_end = Self::v_end();
        let g = (v_end - c) / (v_end - Self::v_start());
        g.clamp(self.clip_min, 1.0)
    }

    /// The sampler's time grid `t_k = 1 - f32(k) / f32(N)`, `k = 0..=N` (`N + 1` values; may
    /// differ by one ulp from a `linspace`, as in the reference).
    pub fn times(steps: usize) -> Vec<f32> {
        (0..=steps).map(|k| 1.0 - k as f32 / steps as f32).collect()
    }

    /// The noise levels of the sampler grid, `g_k = gamma(t_k)`, `k = 0..=N`: `g_0 = clip_min`
    /// (noise), `g_N = 1` (clean).
    pub fn grid(&self, steps: usize) -> Vec<f32> {
        Self::times(steps)
            .into_iter()
            .map(|t| self.gamma(t))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_is_monotone_and_clamped() {
        let s = CosineSchedule::new(1e-5);
        let g = s.grid(100);
        assert_eq!(g[0], 1e-5);
        assert_eq!(g[100], 1.0);
        assert!(g.windows(2).all(|w| w[0] <= w[1]), "{g:?}");
    }

    #[test]
    fn v_start_is_the_reference_constant() {
        // Value stated in sampling.json ("1.9106855e-15 in float32").
        assert_eq!(CosineSchedule::v_start(), 1.910_685_5e-15);
        assert_eq!(CosineSchedule::v_end() - CosineSchedule::v_start(), 1.0);
    }
}
