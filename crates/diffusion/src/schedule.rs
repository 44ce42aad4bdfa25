//! The cosine noise schedule of Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic
//! Models" (ICML 2021), in the continuous-time form of the reference implementation.
//!
//! `gamma(t)` is alpha-bar (the signal variance of `x_t = sqrt(gamma) x0 + sqrt(1 - gamma) eps`):
//! `gamma(0) = 1` is clean data and `gamma(1) = clip_min` is (almost) pure noise. Values are
//! computed in `f32` with EXACTLY the reference's operation order (see [`CosineSchedule::gamma`]):
//! near `t = 1` the result is `1 - cos^2(small)` and carries a large relative rounding error, so an
//! algebraically equal `sin^2` or `f64` form would not match the reference.

use std::f32::consts::PI;

use serde::{Deserialize, Serialize};

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

/// How a sampler spaces its `N + 1` noise levels between noise (`g_0 = gamma(1) = clip_min`) and
/// clean data (`g_N = gamma(0) = 1`).
///
/// Every grid shares those two ends and the last noise level the network sees,
/// `g_{N-1} = gamma(1/N)` (so grids differ only in how the steps in between are spread, not in
/// how much noise is left for the final denoising step); they differ in where the `N - 2`
/// interior levels sit:
/// - [`TimeGrid::Uniform`]: `t_k = 1 - k/N`, the reference's grid (bit-exact, see
///   [`CosineSchedule::grid`]);
/// - [`TimeGrid::LogSnr`]: uniform in the half log-SNR `lambda = log(sqrt(g / (1 - g)))`, the
///   spacing Lu et al. recommend for DPM-Solver; it spends more steps at high noise;
/// - [`TimeGrid::Power`]: `t = (1 - k/N)^rho` between the same ends (`rho > 1` takes long steps
///   at high noise and short ones near the data, as Karras et al.'s EDM schedule does; `rho = 1`
///   is the uniform grid up to rounding).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeGrid {
    /// The reference's uniform time grid.
    #[default]
    Uniform,
    /// Uniform in log-SNR between the uniform grid's ends.
    LogSnr,
    /// `t = (1 - k/N)^rho` warped between the uniform grid's ends.
    Power {
        /// The exponent, positive and finite.
        rho: f32,
    },
}

/// Half log-SNR `lambda(g) = log(sqrt(g / (1 - g)))` (infinite at `g = 1`).
pub fn half_log_snr(g: f64) -> f64 {
    0.5 * (g.ln() - (1.0 - g).ln())
}

impl TimeGrid {
    /// Short name for tables and command lines: `uniform`, `logsnr`, `power2` (`rho` with
    /// up to two decimals).
    pub fn label(&self) -> String {
        match self {
            TimeGrid::Uniform => "uniform".into(),
            TimeGrid::LogSnr => "logsnr".into(),
            TimeGrid::Power { rho } => {
                let r = format!("{rho:.2}");
                format!("power{}", r.trim_end_matches('0').trim_end_matches('.'))
            }
        }
    }

    /// The `N + 1` noise levels `g_0 = clip_min, ..., g_N = 1` of this grid for `steps = N`
    /// (increasing). `Uniform` returns [`CosineSchedule::grid`] exactly.
    ///
    /// # Errors
    /// A `Power` exponent that is not positive and finite.
    pub fn gammas(&self, schedule: &CosineSchedule, steps: usize) -> candle::Result<Vec<f32>> {
        let uniform = schedule.grid(steps);
        if steps < 3 {
            // No interior level to move.
            if let TimeGrid::Power { rho } = self {
                check_rho(*rho)?;
            }
            return Ok(uniform);
        }
        let n = steps as f64;
        let (g0, g_last) = (uniform[0] as f64, uniform[steps - 1] as f64);
        let interior: Vec<f32> = match *self {
            TimeGrid::Uniform => return Ok(uniform),
            TimeGrid::LogSnr => {
                let (l0, l1) = (half_log_snr(g0), half_log_snr(g_last));
                (1..steps - 1)
                    .map(|k| {
                        let l = l0 + (l1 - l0) * k as f64 / (n - 1.0);
                        // g = sigmoid(2 lambda)
                        (1.0 / (1.0 + (-2.0 * l).exp())) as f32
                    })
                    .collect()
            }
            TimeGrid::Power { rho } => {
                check_rho(rho)?;
                // Warp s = k/N in [0, (N-1)/N] onto t in [1, 1/N], keeping both ends.
                let s_last = (n - 1.0) / n;
                let t_last = 1.0 / n;
                (1..steps - 1)
                    .map(|k| {
                        let u = (k as f64 / n) / s_last; // 0..1
                        let t = t_last + (1.0 - t_last) * (1.0 - u).powf(rho as f64);
                        schedule.gamma(t as f32)
                    })
                    .collect()
            }
        };
        let mut g = Vec::with_capacity(steps + 1);
        g.push(uniform[0]);
        g.extend(interior);
        g.push(uniform[steps - 1]);
        g.push(uniform[steps]);
        Ok(g)
    }
}

fn check_rho(rho: f32) -> candle::Result<()> {
    if rho.is_finite() && rho > 0.0 {
        Ok(())
    } else {
        candle::bail!("time grid: power exponent rho = {rho} must be positive and finite")
    }
}

impl std::fmt::Display for TimeGrid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

impl std::str::FromStr for TimeGrid {
    type Err = String;
    /// `uniform`, `logsnr` (or `log_snr`, `log-snr`), `power:RHO` (or `powerRHO`).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let l = s.trim().to_ascii_lowercase();
        match l.as_str() {
            "uniform" | "time_uniform" | "time-uniform" => return Ok(TimeGrid::Uniform),
            "logsnr" | "log_snr" | "log-snr" => return Ok(TimeGrid::LogSnr),
            _ => {}
        }
        if let Some(r) = l.strip_prefix("power") {
            let r = r.trim_start_matches([':', '=']);
            if let Ok(rho) = r.parse::<f32>()
                && rho.is_finite()
                && rho > 0.0
            {
                return Ok(TimeGrid::Power { rho });
            }
        }
        Err(format!(
            "unknown time grid {s:?} (expected uniform, logsnr or power:RHO with RHO > 0)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_share_their_ends_and_increase() -> candle::Result<()> {
        let s = CosineSchedule::new(DDIM_CLIP_MIN);
        for steps in [1, 2, 3, 5, 10, 50] {
            let u = s.grid(steps);
            for grid in [
                TimeGrid::Uniform,
                TimeGrid::LogSnr,
                TimeGrid::Power { rho: 2.0 },
                TimeGrid::Power { rho: 0.5 },
            ] {
                let g = grid.gammas(&s, steps)?;
                assert_eq!(g.len(), steps + 1, "{grid} {steps}");
                assert_eq!(g[0], u[0]);
                assert_eq!(g[steps], 1.0);
                if steps >= 2 {
                    assert_eq!(g[steps - 1], u[steps - 1], "{grid} {steps}");
                }
                assert!(g.windows(2).all(|w| w[0] < w[1]), "{grid} {steps}: {g:?}");
            }
            assert_eq!(TimeGrid::Uniform.gammas(&s, steps)?, u);
        }
        Ok(())
    }

    #[test]
    fn log_snr_grid_is_evenly_spaced_in_lambda() -> candle::Result<()> {
        let s = CosineSchedule::new(DDIM_CLIP_MIN);
        let g = TimeGrid::LogSnr.gammas(&s, 8)?;
        let l: Vec<f64> = g[..8].iter().map(|&g| half_log_snr(g as f64)).collect();
        let d0 = l[1] - l[0];
        for w in l.windows(2) {
            assert!(
                ((w[1] - w[0]) - d0).abs() < 1e-5 * d0.abs().max(1.0),
                "{l:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn power_grid_with_rho_one_is_the_uniform_grid_and_larger_rho_moves_steps_to_the_data()
    -> candle::Result<()> {
        let s = CosineSchedule::new(DDIM_CLIP_MIN);
        let u = s.grid(10);
        let p1 = TimeGrid::Power { rho: 1.0 }.gammas(&s, 10)?;
        for (a, b) in u.iter().zip(&p1) {
            assert!((a - b).abs() < 1e-6, "{u:?} {p1:?}");
        }
        let p2 = TimeGrid::Power { rho: 2.0 }.gammas(&s, 10)?;
        // Larger rho: every interior level is cleaner (higher gamma) than the uniform one.
        assert!((1..9).all(|k| p2[k] > u[k]), "{u:?} {p2:?}");
        assert!(TimeGrid::Power { rho: 0.0 }.gammas(&s, 10).is_err());
        assert!(TimeGrid::Power { rho: f32::NAN }.gammas(&s, 2).is_err());
        Ok(())
    }

    #[test]
    fn grids_parse_and_print() {
        for (text, grid) in [
            ("uniform", TimeGrid::Uniform),
            ("logsnr", TimeGrid::LogSnr),
            ("log-snr", TimeGrid::LogSnr),
            ("power:2", TimeGrid::Power { rho: 2.0 }),
            ("power1.5", TimeGrid::Power { rho: 1.5 }),
        ] {
            assert_eq!(text.parse::<TimeGrid>(), Ok(grid));
            assert_eq!(grid.label().parse::<TimeGrid>(), Ok(grid));
        }
        assert!("power:-1".parse::<TimeGrid>().is_err());
        assert!("cosine".parse::<TimeGrid>().is_err());
        assert_eq!(TimeGrid::Power { rho: 1.5 }.label(), "power1.5");
    }

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
