//! Samplers for the x0-predicting cosine-schedule diffusion: DDPM ancestral sampling
//! (Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", 2020), deterministic DDIM
//! (Song, Meng & Ermon, "Denoising Diffusion Implicit Models", 2021) and the few-step
//! multistep solvers DPM-Solver++(2M) and (3M) (Lu et al., "DPM-Solver++: Fast Solver for Guided
//! Sampling of Diffusion Probabilistic Models", 2022) and UniPC (Zhao et al., "UniPC: A Unified
//! Predictor-Corrector Framework for Fast Sampling of Diffusion Models", NeurIPS 2023).
//!
//! All samplers walk a grid of noise levels `g_0 = clip_min < g_1 < ... < g_N = 1` of a
//! [`CosineSchedule`] (by default the reference's `t_k = 1 - k/N`, `g_k = gamma(t_k)`; any
//! [`TimeGrid`] with `with_grid`), call the denoiser once per step at `g_k` and move `x` from
//! `g_k` to `g_{k+1}`: `N` steps cost `N` network evaluations (`N` guided evaluations with
//! [`crate::Guided`]). Guidance is not a sampler option: wrap the denoiser in [`crate::Guided`].
//! Padded frames are never re-masked (as in the reference): every frame evolves.
//!
//! DDPM and DDIM evaluate their per-step scalars in `f32` in exactly the reference's order
//! ([`ddpm_step`], [`ddim_step`]); this matters at DDPM step 0 where `(1 - g_1) - var` cancels
//! catastrophically (see `fixtures/sampling.json`, `numerics_warning`).

use candle::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::denoiser::{Conditioning, Denoiser};
use crate::noise::NoiseSource;
use crate::schedule::{CosineSchedule, DDIM_CLIP_MIN, DDPM_CLIP_MIN, TimeGrid, half_log_snr};

/// What a sampler reports after each step (for progress bars and traces).
#[derive(Debug, Clone, Copy)]
pub struct StepInfo<'a> {
    /// Step index `k`, `0..steps`.
    pub index: usize,
    /// Total number of steps `N`.
    pub steps: usize,
    /// Noise level the denoiser was called at, `g_k`.
    pub gamma: f32,
    /// Noise level after the step, `g_{k+1}`.
    pub gamma_next: f32,
    /// The denoiser's prediction of `x0` at this step, `[B, F, D]`.
    pub x0: &'a Tensor,
    /// The sample after this step, `[B, F, D]` (after the last step: the result).
    pub x: &'a Tensor,
}

/// A per-step callback; returning an error aborts sampling with that error.
pub type StepCallback<'c> = dyn FnMut(&StepInfo<'_>) -> Result<()> + 'c;

/// A diffusion sampler: turns noise latents into data with a [`Denoiser`].
pub trait Sampler {
    /// Runs the sampler from `latents` (pure noise at `g_0`) to clean data.
    ///
    /// # Shapes
    /// - `latents`: `[B, F, D]`; `frame_mask`: `[B, F]` (1 = valid), passed to the denoiser.
    /// - returns `[B, F, D]`.
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        latents: Tensor,
        cond: &Conditioning,
        frame_mask: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor>;

    /// As [`Sampler::sample`], calling `on_step` after every step. The samplers of this crate
    /// report every step; the default (for outside implementations) samples without reports.
    fn sample_with_callback(
        &self,
        denoiser: &dyn Denoiser,
        latents: Tensor,
        cond: &Conditioning,
        frame_mask: &Tensor,
        noise: &mut dyn NoiseSource,
        on_step: &mut StepCallback<'_>,
    ) -> Result<Tensor> {
        let _ = on_step;
        self.sample(denoiser, latents, cond, frame_mask, noise)
    }

    /// Number of steps.
    fn steps(&self) -> usize;

    /// Number of denoiser calls per sample (network evaluations, NFE; with [`crate::Guided`]
    /// each is one guided evaluation). Every sampler of this crate calls the denoiser once per
    /// step.
    fn nfe(&self) -> usize {
        self.steps()
    }
}

fn gamma_batch(g: f32, b: usize, device: &Device) -> Result<Tensor> {
    Tensor::full(g, b, device)
}

/// `t / s` by true division (not multiplication by `1/s`), as PyTorch divides by a 0-dim tensor.
fn div_scalar(t: &Tensor, s: f32) -> Result<Tensor> {
    let s = Tensor::new(s, t.device())?.to_dtype(t.dtype())?;
    t.broadcast_div(&s)
}

fn mul_scalar(t: &Tensor, s: f32) -> Result<Tensor> {
    t.affine(s as f64, 0.0)
}

/// The `f32` scalars of one DDPM step from `g_cur = g_k` to `g_next = g_{k+1}`, evaluated in
/// the reference's order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DdpmCoefficients {
    /// `a = clip(exp(log(g_k) - log(g_{k+1})), 0, 1)`.
    pub alpha: f32,
    /// `var = ((1 - g_{k+1}) (1 - a)) / (1 - g_k)`, the posterior variance.
    pub var: f32,
    /// `c = sqrt((1 - g_{k+1}) - var)`, the coefficient of the implied noise (clamped at 0 if
    /// rounding made the difference negative, where the reference would return NaN).
    pub c: f32,
}

impl DdpmCoefficients {
    /// Computes the coefficients in `f32`, in the reference's operation order.
    pub fn new(g_cur: f32, g_next: f32) -> Self {
        let alpha = (g_cur.ln() - g_next.ln()).exp().clamp(0.0, 1.0);
        let var = ((1.0 - g_next) * (1.0 - alpha)) / (1.0 - g_cur);
        let c = ((1.0 - g_next) - var).max(0.0).sqrt();
        Self { alpha, var, c }
    }
}

/// Runs `f` on the contiguous `f32` CPU data of `t`, or returns `None` (other device, dtype or
/// layout) so the caller falls back to tensor ops.
fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    let (start, end) = layout.contiguous_offsets()?;
    match &*storage {
        candle::Storage::Cpu(candle::CpuStorage::F32(v)) => Some(f(&v[start..end])),
        _ => None,
    }
}

/// Applies `f` element-wise over three same-shaped contiguous `f32` CPU tensors in one pass.
pub(crate) fn fused3(
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    f: impl Fn(f32, f32, f32) -> f32,
) -> Option<Result<Tensor>> {
    if a.dims() != b.dims() || a.dims() != c.dims() {
        return None;
    }
    let out = with_cpu_f32(a, |a| {
        with_cpu_f32(b, |b| {
            with_cpu_f32(c, |c| {
                a.iter()
                    .zip(b)
                    .zip(c)
                    .map(|((&a, &b), &c)| f(a, b, c))
                    .collect::<Vec<f32>>()
            })
        })
    })???;
    Some(Tensor::from_vec(out, a.dims(), a.device()))
}

/// One DDPM ancestral step:
/// `x_mean = sqrt(g_{k+1}) x0 + (c (x - sqrt(g_k) x0)) / sqrt(1 - g_k)`,
/// `x = x_mean + noise * sqrt(var)`.
///
/// Contiguous `f32` CPU tensors take a fused single-pass loop with the same `f32` operations in
/// the same order (bit-identical to the tensor-op path, which other devices and dtypes use).
///
/// # Shapes
/// `x`, `x0`, `noise`: the same shape; returns that shape.
pub fn ddpm_step(
    x: &Tensor,
    x0: &Tensor,
    g_cur: f32,
    g_next: f32,
    noise: &Tensor,
) -> Result<Tensor> {
    let k = DdpmCoefficients::new(g_cur, g_next);
    let (sg, s1, sgn, sv) = (
        g_cur.sqrt(),
        (1.0 - g_cur).sqrt(),
        g_next.sqrt(),
        k.var.sqrt(),
    );
    let c = k.c;
    if let Some(out) = fused3(x, x0, noise, |x, x0, z| {
        (x0 * sgn + (c * (x - x0 * sg)) / s1) + z * sv
    }) {
        return out;
    }
    ddpm_step_ops(x, x0, g_cur, g_next, noise)
}

fn ddpm_step_ops(
    x: &Tensor,
    x0: &Tensor,
    g_cur: f32,
    g_next: f32,
    noise: &Tensor,
) -> Result<Tensor> {
    let k = DdpmCoefficients::new(g_cur, g_next);
    let implied = (x - mul_scalar(x0, g_cur.sqrt())?)?;
    let term = div_scalar(&mul_scalar(&implied, k.c)?, (1.0 - g_cur).sqrt())?;
    let mean = (mul_scalar(x0, g_next.sqrt())? + term)?;
    mean + mul_scalar(&noise.to_dtype(x.dtype())?, k.var.sqrt())?
}

/// One deterministic DDIM step (eta = 0):
/// `eps = (x - sqrt(g_k) x0) / sqrt(1 - g_k)`, `x = sqrt(g_{k+1}) x0 + sqrt(1 - g_{k+1}) eps`.
///
/// Contiguous `f32` CPU tensors take a fused single-pass loop (bit-identical to the tensor ops).
///
/// # Shapes
/// `x`, `x0`: the same shape; returns that shape.
pub fn ddim_step(x: &Tensor, x0: &Tensor, g_cur: f32, g_next: f32) -> Result<Tensor> {
    let (sg, s1, sgn, s1n) = (
        g_cur.sqrt(),
        (1.0 - g_cur).sqrt(),
        g_next.sqrt(),
        (1.0 - g_next).sqrt(),
    );
    if let Some(out) = fused3(x, x0, x0, |x, x0, _| x0 * sgn + ((x - x0 * sg) / s1) * s1n) {
        return out;
    }
    ddim_step_ops(x, x0, g_cur, g_next)
}

fn ddim_step_ops(x: &Tensor, x0: &Tensor, g_cur: f32, g_next: f32) -> Result<Tensor> {
    let eps = div_scalar(&(x - mul_scalar(x0, g_cur.sqrt())?)?, (1.0 - g_cur).sqrt())?;
    mul_scalar(x0, g_next.sqrt())? + mul_scalar(&eps, (1.0 - g_next).sqrt())?
}

fn check_latents(latents: &Tensor, frame_mask: &Tensor) -> Result<usize> {
    let b = latents.dim(0)?;
    if frame_mask.dims().first() != Some(&b) {
        candle::bail!(
            "sampler: frame_mask shape {:?} does not match latents shape {:?}",
            frame_mask.dims(),
            latents.dims()
        );
    }
    Ok(b)
}

/// `Sampler::sample` as [`Sampler::sample_with_callback`] without reports.
macro_rules! sample_via_callback {
    () => {
        fn sample(
            &self,
            denoiser: &dyn Denoiser,
            latents: Tensor,
            cond: &Conditioning,
            frame_mask: &Tensor,
            noise: &mut dyn NoiseSource,
        ) -> Result<Tensor> {
            self.sample_with_callback(denoiser, latents, cond, frame_mask, noise, &mut |_| Ok(()))
        }
    };
}

/// The schedule and grid settings every sampler of this crate shares (fields `schedule` and
/// `grid`).
macro_rules! grid_settings {
    ($($t:ty),*) => {$(
        impl $t {
            /// Replaces the schedule's `clip_min`.
            pub fn with_clip_min(mut self, clip_min: f32) -> Self {
                self.schedule = CosineSchedule::new(clip_min);
                self
            }

            /// Replaces the time grid (default: the reference's [`TimeGrid::Uniform`]).
            pub fn with_grid(mut self, grid: TimeGrid) -> Self {
                self.grid = grid;
                self
            }

            /// The time grid.
            pub fn grid(&self) -> TimeGrid {
                self.grid
            }

            /// The schedule (its `clip_min`).
            pub fn schedule(&self) -> CosineSchedule {
                self.schedule
            }
        }
    )*};
}

grid_settings!(Ddpm, Ddim, DpmSolverPp2M, DpmSolverPp3M, UniPc);

/// The loop every sampler shares: for `k = 0..steps`, predict `x0` at `g_k` and move `x` to
/// `g_{k+1}` with `update(k, x, x0, g_k, g_{k+1})`, reporting each step to `on_step`.
#[allow(clippy::too_many_arguments)]
fn run_on_grid(
    schedule: CosineSchedule,
    grid: TimeGrid,
    steps: usize,
    denoiser: &dyn Denoiser,
    latents: Tensor,
    cond: &Conditioning,
    frame_mask: &Tensor,
    on_step: &mut StepCallback<'_>,
    mut update: impl FnMut(usize, &Tensor, &Tensor, f32, f32) -> Result<Tensor>,
) -> Result<Tensor> {
    let b = check_latents(&latents, frame_mask)?;
    let grid = grid.gammas(&schedule, steps)?;
    let mut x = latents;
    for k in 0..steps {
        let (g, gn) = (grid[k], grid[k + 1]);
        let x0 = denoiser.forward(&x, &gamma_batch(g, b, x.device())?, cond, frame_mask)?;
        x = update(k, &x, &x0, g, gn)?;
        on_step(&StepInfo {
            index: k,
            steps,
            gamma: g,
            gamma_next: gn,
            x0: &x0,
            x: &x,
        })?;
    }
    Ok(x)
}

/// DDPM ancestral sampling (eta = 1 posterior sampling) on the cosine schedule.
///
/// Draws ONE noise tensor of the latents' shape at every step, the last included (where its
/// coefficient is 0), exactly as the reference does, so stored noise replays step for step.
///
/// ```
/// use candle::{Device, Tensor, DType};
/// use diffusion::{Conditioning, Ddpm, Denoiser, Sampler, SeededNoise};
/// struct Zero;
/// impl Denoiser for Zero {
///     fn forward(&self, x: &Tensor, _: &Tensor, _: &Conditioning, _: &Tensor) -> candle::Result<Tensor> {
///         x.zeros_like()
///     }
/// }
/// let dev = Device::Cpu;
/// let mut noise = SeededNoise::new(vec![1, 2]);
/// let latents = diffusion::NoiseSource::next(&mut noise, &[2, 4, 3], &dev)?;
/// let mask = Tensor::ones((2, 4), DType::F32, &dev)?;
/// let x = Ddpm::new(10).sample(&Zero, latents, &Conditioning::None, &mask, &mut noise)?;
/// // A denoiser that always predicts 0 ends at exactly 0 (g_N = 1).
/// assert_eq!(x.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
/// # Ok::<(), candle::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ddpm {
    steps: usize,
    schedule: CosineSchedule,
    grid: TimeGrid,
}

impl Ddpm {
    /// `steps` denoiser calls, `clip_min = 1e-9` (the reference's DDPM setting).
    pub fn new(steps: usize) -> Self {
        Self {
            steps,
            schedule: CosineSchedule::new(DDPM_CLIP_MIN),
            grid: TimeGrid::Uniform,
        }
    }
}

impl Sampler for Ddpm {
    sample_via_callback!();

    fn sample_with_callback(
        &self,
        denoiser: &dyn Denoiser,
        latents: Tensor,
        cond: &Conditioning,
        frame_mask: &Tensor,
        noise: &mut dyn NoiseSource,
        on_step: &mut StepCallback<'_>,
    ) -> Result<Tensor> {
        run_on_grid(
            self.schedule,
            self.grid,
            self.steps,
            denoiser,
            latents,
            cond,
            frame_mask,
            on_step,
            |_, x, x0, g, gn| {
                let z = noise.next(x.dims(), x.device())?;
                ddpm_step(x, x0, g, gn, &z)
            },
        )
    }

    fn steps(&self) -> usize {
        self.steps
    }
}

/// Deterministic DDIM sampling (eta = 0) on the cosine schedule; draws no noise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ddim {
    steps: usize,
    schedule: CosineSchedule,
    grid: TimeGrid,
}

impl Ddim {
    /// `steps` denoiser calls, `clip_min = 1e-5` (the reference's DDIM setting).
    pub fn new(steps: usize) -> Self {
        Self {
            steps,
            schedule: CosineSchedule::new(DDIM_CLIP_MIN),
            grid: TimeGrid::Uniform,
        }
    }
}

impl Sampler for Ddim {
    sample_via_callback!();

    fn sample_with_callback(
        &self,
        denoiser: &dyn Denoiser,
        latents: Tensor,
        cond: &Conditioning,
        frame_mask: &Tensor,
        _noise: &mut dyn NoiseSource,
        on_step: &mut StepCallback<'_>,
    ) -> Result<Tensor> {
        run_on_grid(
            self.schedule,
            self.grid,
            self.steps,
            denoiser,
            latents,
            cond,
            frame_mask,
            on_step,
            |_, x, x0, g, gn| ddim_step(x, x0, g, gn),
        )
    }

    fn steps(&self) -> usize {
        self.steps
    }
}

/// DPM-Solver++(2M): the second-order multistep solver of the diffusion ODE in the data
/// (x0) parametrisation (Lu et al. 2022, Algorithm 2), on the same grid and schedule as
/// [`Ddim`]; deterministic, draws no noise.
///
/// With `alpha = sqrt(g)`, `sigma = sqrt(1 - g)`, `lambda = log(alpha / sigma)` and
/// `h = lambda_{k+1} - lambda_k`:
/// `x_{k+1} = (sigma_{k+1} / sigma_k) x_k - alpha_{k+1} (exp(-h) - 1) D_k`, with
/// `D_k = x0_k` at the first and the last step (first order, which at the last step lands
/// exactly on `x0`) and `D_k = (1 + 1/(2r)) x0_k - 1/(2r) x0_{k-1}`, `r = h_{k-1} / h_k`,
/// otherwise. Scalars are computed in `f64`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpmSolverPp2M {
    steps: usize,
    schedule: CosineSchedule,
    grid: TimeGrid,
}

impl DpmSolverPp2M {
    /// `steps` denoiser calls, `clip_min = 1e-5`.
    pub fn new(steps: usize) -> Self {
        Self {
            steps,
            schedule: CosineSchedule::new(DDIM_CLIP_MIN),
            grid: TimeGrid::Uniform,
        }
    }
}

fn lambda(g: f64) -> f64 {
    half_log_snr(g)
}

impl Sampler for DpmSolverPp2M {
    sample_via_callback!();

    fn sample_with_callback(
        &self,
        denoiser: &dyn Denoiser,
        latents: Tensor,
        cond: &Conditioning,
        frame_mask: &Tensor,
        _noise: &mut dyn NoiseSource,
        on_step: &mut StepCallback<'_>,
    ) -> Result<Tensor> {
        let mut prev: Option<(Tensor, f64)> = None; // (x0_{k-1}, h_{k-1})
        run_on_grid(
            self.schedule,
            self.grid,
            self.steps,
            denoiser,
            latents,
            cond,
            frame_mask,
            on_step,
            |k, x, x0, g, gn| {
                let (gc, gnx) = (g as f64, gn as f64);
                let last = k + 1 == self.steps;
                if gnx >= 1.0 {
                    // sigma_{k+1} = 0, lambda = inf: the update is exactly alpha_{k+1} D = x0.
                    prev = None;
                    return Ok(x0.clone());
                }
                let (sc, sn, an) = ((1.0 - gc).sqrt(), (1.0 - gnx).sqrt(), gnx.sqrt());
                let h = lambda(gnx) - lambda(gc);
                let em1 = (-h).exp_m1();
                let (ca, cb) = (sn / sc, an * em1);
                let next = match (&prev, last) {
                    (Some((x0_prev, h_prev)), false) => {
                        let r = h_prev / h;
                        let a = 1.0 / (2.0 * r);
                        dpm_update(x, x0, x0_prev, ca, cb, 1.0 + a, a)?
                    }
                    _ => dpm_update(x, x0, x0, ca, cb, 1.0, 0.0)?,
                };
                prev = Some((x0.clone(), h));
                Ok(next)
            },
        )
    }

    fn steps(&self) -> usize {
        self.steps
    }
}

/// `x ca - (x0 p - x0_prev q) cb` (the DPM-Solver++ update with `D = p x0 - q x0_prev`), fused
/// on contiguous `f32` CPU tensors (scalars rounded to `f32` as candle's `affine` does).
fn dpm_update(
    x: &Tensor,
    x0: &Tensor,
    x0_prev: &Tensor,
    ca: f64,
    cb: f64,
    p: f64,
    q: f64,
) -> Result<Tensor> {
    let (ca32, cb32, p32, q32) = (ca as f32, cb as f32, p as f32, q as f32);
    let fused = if q == 0.0 {
        fused3(x, x0, x0, |x, x0, _| x * ca32 - (x0 * p32) * cb32)
    } else {
        fused3(x, x0, x0_prev, |x, x0, xp| {
            x * ca32 - (x0 * p32 - xp * q32) * cb32
        })
    };
    if let Some(out) = fused {
        return out;
    }
    let d = if q == 0.0 {
        (x0 * p)?
    } else {
        ((x0 * p)? - (x0_prev * q)?)?
    };
    (x * ca)? - (d * cb)?
}

/// `sum_i c_i t_i` over same-shaped tensors (at least one term), fused into one pass on
/// contiguous `f32` CPU tensors (coefficients rounded to `f32`, accumulated in term order);
/// tensor ops elsewhere.
fn lincomb(terms: &[(&Tensor, f64)]) -> Result<Tensor> {
    let Some(((first, c0), rest)) = terms.split_first() else {
        candle::bail!("lincomb: no terms");
    };
    if let Some(out) = lincomb_cpu(terms) {
        return out;
    }
    let mut acc = (*first * *c0)?;
    for (t, c) in rest {
        acc = (acc + (*t * *c)?)?;
    }
    Ok(acc)
}

fn lincomb_cpu(terms: &[(&Tensor, f64)]) -> Option<Result<Tensor>> {
    let (first, _) = terms.first()?;
    let dims = first.dims();
    if terms.iter().any(|(t, _)| t.dims() != dims) {
        return None;
    }
    let guards: Vec<_> = terms.iter().map(|(t, _)| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(terms.len());
    for (storage, layout) in &guards {
        let (a, b) = layout.contiguous_offsets()?;
        match &**storage {
            candle::Storage::Cpu(candle::CpuStorage::F32(v)) => slices.push(&v[a..b]),
            _ => return None,
        }
    }
    let n = slices.first().map_or(0, |s| s.len());
    let mut out = vec![0f32; n];
    for (s, (_, c)) in slices.iter().zip(terms) {
        let c = *c as f32;
        for (o, v) in out.iter_mut().zip(s.iter()) {
            *o += c * v;
        }
    }
    Some(Tensor::from_vec(out, dims, first.device()))
}

/// `(alpha, sigma, lambda)` of noise level `g < 1`.
fn alpha_sigma_lambda(g: f64) -> (f64, f64, f64) {
    (g.sqrt(), (1.0 - g).sqrt(), half_log_snr(g))
}

/// DPM-Solver++(3M): the third-order multistep solver of Lu et al. 2022 (data prediction), on
/// the same grid and schedule as [`Ddim`]; deterministic, draws no noise.
///
/// With `h = lambda_{k+1} - lambda_k`, `r0 = h_{k-1} / h`, `r1 = h_{k-2} / h` and the divided
/// differences `D1_0 = (x0_k - x0_{k-1}) / r0`, `D1_1 = (x0_{k-1} - x0_{k-2}) / r1`:
/// `D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1)`, `D2 = (D1_0 - D1_1) / (r0 + r1)` and
/// `x_{k+1} = (sigma_{k+1} / sigma_k) x_k - alpha_{k+1} (e^-h - 1) x0_k
/// + alpha_{k+1} ((e^-h - 1) / h + 1) D1 - alpha_{k+1} ((e^-h - 1 + h) / h^2 - 1/2) D2`.
///
/// The order is lowered where history is missing (first order at step 0, second at step 1) and
/// at the end (second order at the second-to-last step, and the last step lands on `x0`), as
/// in the authors' and diffusers' implementations for short grids.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpmSolverPp3M {
    steps: usize,
    schedule: CosineSchedule,
    grid: TimeGrid,
}

impl DpmSolverPp3M {
    /// `steps` denoiser calls, `clip_min = 1e-5`, uniform grid.
    pub fn new(steps: usize) -> Self {
        Self {
            steps,
            schedule: CosineSchedule::new(DDIM_CLIP_MIN),
            grid: TimeGrid::Uniform,
        }
    }
}

impl Sampler for DpmSolverPp3M {
    sample_via_callback!();

    fn sample_with_callback(
        &self,
        denoiser: &dyn Denoiser,
        latents: Tensor,
        cond: &Conditioning,
        frame_mask: &Tensor,
        _noise: &mut dyn NoiseSource,
        on_step: &mut StepCallback<'_>,
    ) -> Result<Tensor> {
        // (x0_j, lambda_j) of the last evaluations, most recent last.
        let mut hist: Vec<(Tensor, f64)> = Vec::with_capacity(3);
        let steps = self.steps;
        run_on_grid(
            self.schedule,
            self.grid,
            steps,
            denoiser,
            latents,
            cond,
            frame_mask,
            on_step,
            |k, x, x0, g, gn| {
                let (gc, gnx) = (g as f64, gn as f64);
                if gnx >= 1.0 {
                    return Ok(x0.clone());
                }
                let (_, sc, lc) = alpha_sigma_lambda(gc);
                let (an, sn, ln) = alpha_sigma_lambda(gnx);
                hist.push((x0.clone(), lc));
                if hist.len() > 3 {
                    hist.remove(0);
                }
                let h = ln - lc;
                let em1 = (-h).exp_m1();
                let order = hist.len().min(3).min(steps - k);
                let terms: Vec<(&Tensor, f64)> = match order {
                    1 => vec![(x, sn / sc), (x0, -an * em1)],
                    2 => {
                        let (m1, l1) = (&hist[hist.len() - 2].0, hist[hist.len() - 2].1);
                        let r0 = (lc - l1) / h;
                        let a = 1.0 / (2.0 * r0);
                        vec![
                            (x, sn / sc),
                            (x0, -an * em1 * (1.0 + a)),
                            (m1, an * em1 * a),
                        ]
                    }
                    _ => {
                        let (m1, l1) = (&hist[1].0, hist[1].1);
                        let (m2, l2) = (&hist[0].0, hist[0].1);
                        let (r0, r1) = ((lc - l1) / h, (l1 - l2) / h);
                        // Coefficients on (m0, m1, m2) of D1_0, D1_1.
                        let d10 = [1.0 / r0, -1.0 / r0, 0.0];
                        let d11 = [0.0, 1.0 / r1, -1.0 / r1];
                        let c = r0 / (r0 + r1);
                        let (p1, p2) = (an * (em1 / h + 1.0), an * ((em1 + h) / (h * h) - 0.5));
                        let coef = |j: usize| {
                            let diff = d10[j] - d11[j];
                            let d1 = d10[j] + c * diff;
                            let d2 = diff / (r0 + r1);
                            let d0 = if j == 0 { 1.0 } else { 0.0 };
                            -an * em1 * d0 + p1 * d1 - p2 * d2
                        };
                        vec![(x, sn / sc), (x0, coef(0)), (m1, coef(1)), (m2, coef(2))]
                    }
                };
                lincomb(&terms)
            },
        )
    }

    fn steps(&self) -> usize {
        self.steps
    }
}

/// UniPC (Zhao et al. 2023): the unified predictor-corrector solver in the data (x0)
/// prediction form with `B(h) = e^-h - 1` (the paper's "bh2", recommended for guided sampling),
/// on the same grid and schedule as [`Ddim`]; deterministic, draws no noise.
///
/// Each step first CORRECTS the current sample with the model evaluation just made at it (the
/// UniC corrector of order `p + 1`, which costs no extra network call), then PREDICTS the next
/// one with UniP of order `p` from the last `p` evaluations. `p` is the sampler's
/// [`UniPc::with_order`] (default 2), lowered where history is missing and at the end of the grid
/// (order `min(p, steps - k)`), as the authors do for short grids; the last step lands on `x0`.
/// Order 2 of the predictor is DPM-Solver++(2M)'s update; the corrector is what UniPC adds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UniPc {
    steps: usize,
    order: usize,
    corrector: bool,
    schedule: CosineSchedule,
    grid: TimeGrid,
}

impl UniPc {
    /// `steps` denoiser calls, predictor order 2 with the corrector, `clip_min = 1e-5`, uniform
    /// grid.
    pub fn new(steps: usize) -> Self {
        Self {
            steps,
            order: 2,
            corrector: true,
            schedule: CosineSchedule::new(DDIM_CLIP_MIN),
            grid: TimeGrid::Uniform,
        }
    }

    /// Predictor order `p`, clamped to `1..=3`.
    pub fn with_order(mut self, order: usize) -> Self {
        self.order = order.clamp(1, 3);
        self
    }

    /// Turns the corrector off (UniP alone).
    pub fn without_corrector(mut self) -> Self {
        self.corrector = false;
        self
    }
}

/// The UniPC weights of one update from `lambda_s0` to `lambda_t` (`h = lambda_t - lambda_s0`)
/// with `rks = [r_1, .., r_{p-1}, 1]`: the matrix `R[i][j] = rks[j]^i` and the vector
/// `b[i] = phi_{i+1}(h) (i+1)! / B(h)` (`i, j < p`), in the bh2 form.
fn unipc_system(h: f64, rks: &[f64]) -> (Vec<Vec<f64>>, Vec<f64>) {
    let p = rks.len();
    let hh = -h;
    let bh = hh.exp_m1();
    let mut h_phi_k = hh.exp_m1() / hh - 1.0;
    let mut factorial = 1.0;
    let mut r = Vec::with_capacity(p);
    let mut b = Vec::with_capacity(p);
    for i in 1..=p {
        r.push(rks.iter().map(|rk| rk.powi(i as i32 - 1)).collect());
        b.push(h_phi_k * factorial / bh);
        factorial *= (i + 1) as f64;
        h_phi_k = h_phi_k / hh - 1.0 / factorial;
    }
    (r, b)
}

/// Solves the small dense system `a x = b` (LU with partial pivoting).
fn solve_small(a: Vec<Vec<f64>>, b: Vec<f64>) -> Result<Vec<f64>> {
    let n = b.len();
    let m = nalgebra::DMatrix::from_fn(n, n, |i, j| a[i][j]);
    m.lu()
        .solve(&nalgebra::DVector::from_vec(b))
        .filter(|x| x.iter().all(|v| v.is_finite()))
        .map(|x| x.iter().copied().collect())
        .ok_or_else(|| {
            candle::Error::Msg(format!(
                "UniPC: singular {n}x{n} system (repeated noise levels in the grid?)"
            ))
        })
}

/// Coefficients of one UniPC update as a linear combination
/// `c_x x_s0 + c_0 m_s0 + sum_i c_i m_{s_i} (+ c_t m_t for the corrector)`.
///
/// `hist` holds `(m_j, lambda_j)`, most recent (`s0`) last; the update uses the last `order`
/// entries. `corrector` adds the evaluation at the target `m_t`.
struct UniPcCoefficients {
    /// Weight of the starting sample.
    x: f64,
    /// Weights of `hist[len - 1]`, `hist[len - 2]`, ... (the `order` most recent).
    hist: Vec<f64>,
    /// Weight of the model output at the target (corrector only).
    target: f64,
}

fn unipc_coefficients(
    hist: &[(Tensor, f64)],
    order: usize,
    g_s0: f64,
    g_t: f64,
    corrector: bool,
) -> Result<UniPcCoefficients> {
    let n = hist.len();
    let (_, s_s0, l_s0) = alpha_sigma_lambda(g_s0);
    let (a_t, s_t, l_t) = alpha_sigma_lambda(g_t);
    let h = l_t - l_s0;
    let h_phi_1 = (-h).exp_m1();
    let bh = h_phi_1;
    // r_i and the divided differences D1_i = (m_{s_i} - m0) / r_i, i = 1..order.
    let rks: Vec<f64> = (1..order).map(|i| (hist[n - 1 - i].1 - l_s0) / h).collect();
    let mut all_rks = rks.clone();
    all_rks.push(1.0);
    let (r, b) = unipc_system(h, &all_rks);
    let rhos: Vec<f64> = if corrector {
        if order == 1 {
            vec![0.5]
        } else {
            solve_small(r, b)?
        }
    } else if order == 1 {
        Vec::new()
    } else if order == 2 {
        vec![0.5]
    } else {
        let m = order - 1;
        let r: Vec<Vec<f64>> = r.into_iter().take(m).map(|row| row[..m].to_vec()).collect();
        solve_small(r, b[..m].to_vec())?
    };
    let mut w = vec![0.0; order];
    w[0] = -a_t * h_phi_1;
    for (i, rk) in rks.iter().enumerate() {
        // - a_t B rho_i (m_{s_i} - m0) / r_i
        let c = -a_t * bh * rhos[i] / rk;
        w[i + 1] += c;
        w[0] -= c;
    }
    let mut target = 0.0;
    if corrector {
        let rho_t = rhos[order - 1];
        target = -a_t * bh * rho_t;
        w[0] -= target;
    }
    Ok(UniPcCoefficients {
        x: s_t / s_s0,
        hist: w,
        target,
    })
}

impl Sampler for UniPc {
    sample_via_callback!();

    fn sample_with_callback(
        &self,
        denoiser: &dyn Denoiser,
        latents: Tensor,
        cond: &Conditioning,
        frame_mask: &Tensor,
        _noise: &mut dyn NoiseSource,
        on_step: &mut StepCallback<'_>,
    ) -> Result<Tensor> {
        let steps = self.steps;
        let max_order = self.order.clamp(1, 3);
        // (x0_j, lambda_j) of the last evaluations, most recent last.
        let mut hist: Vec<(Tensor, f64)> = Vec::with_capacity(max_order + 1);
        // The previous step's (starting sample, its noise level, predictor order).
        let mut prev: Option<(Tensor, f64, usize)> = None;
        run_on_grid(
            self.schedule,
            self.grid,
            steps,
            denoiser,
            latents,
            cond,
            frame_mask,
            on_step,
            |k, x, x0, g, gn| {
                let (gc, gnx) = (g as f64, gn as f64);
                if gnx >= 1.0 {
                    // sigma = 0: the update lands on the last prediction.
                    return Ok(x0.clone());
                }
                let mut x_cur = x.clone();
                if self.corrector
                    && let Some((x_prev, g_prev, order)) = &prev
                {
                    let c = unipc_coefficients(&hist, *order, *g_prev, gc, true)?;
                    let mut terms: Vec<(&Tensor, f64)> = vec![(x_prev, c.x), (x0, c.target)];
                    let n = hist.len();
                    terms.extend(
                        c.hist
                            .iter()
                            .enumerate()
                            .map(|(i, w)| (&hist[n - 1 - i].0, *w)),
                    );
                    x_cur = lincomb(&terms)?;
                }
                hist.push((x0.clone(), lambda(gc)));
                if hist.len() > max_order {
                    hist.remove(0);
                }
                let order = max_order.min(hist.len()).min(steps - k);
                let c = unipc_coefficients(&hist, order, gc, gnx, false)?;
                let n = hist.len();
                let mut terms: Vec<(&Tensor, f64)> = vec![(&x_cur, c.x)];
                terms.extend(
                    c.hist
                        .iter()
                        .enumerate()
                        .map(|(i, w)| (&hist[n - 1 - i].0, *w)),
                );
                let next = lincomb(&terms)?;
                prev = Some((x_cur, gc, order));
                Ok(next)
            },
        )
    }

    fn steps(&self) -> usize {
        self.steps
    }
}

/// A sampler chosen by name (for configs and command lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    /// [`Ddpm`], clip_min 1e-9.
    Ddpm,
    /// [`Ddim`], clip_min 1e-5.
    Ddim,
    /// [`DpmSolverPp2M`], clip_min 1e-5.
    DpmSolverPp2M,
    /// [`DpmSolverPp3M`], clip_min 1e-5.
    DpmSolverPp3M,
    /// [`UniPc`] (order 2, with the corrector), clip_min 1e-5.
    UniPc,
}

impl SamplerKind {
    /// Every kind, in the order of tables.
    pub const ALL: [SamplerKind; 5] = [
        SamplerKind::Ddpm,
        SamplerKind::Ddim,
        SamplerKind::DpmSolverPp2M,
        SamplerKind::DpmSolverPp3M,
        SamplerKind::UniPc,
    ];

    /// The short name used on command lines and in manifests: `ddpm`, `ddim`, `dpm++`,
    /// `dpm++3m` or `unipc`.
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Ddpm => "ddpm",
            SamplerKind::Ddim => "ddim",
            SamplerKind::DpmSolverPp2M => "dpm++",
            SamplerKind::DpmSolverPp3M => "dpm++3m",
            SamplerKind::UniPc => "unipc",
        }
    }

    /// Whether the sampler draws fresh noise at every step (only DDPM); the others are
    /// deterministic given their latents.
    pub fn is_stochastic(self) -> bool {
        self == SamplerKind::Ddpm
    }

    /// The sampler of this kind with `steps` denoiser calls, its default `clip_min` and the
    /// reference's uniform grid.
    pub fn build(self, steps: usize) -> Box<dyn Sampler + Send + Sync> {
        self.build_with(steps, TimeGrid::Uniform)
    }

    /// The sampler of this kind with `steps` denoiser calls on `grid`.
    pub fn build_with(self, steps: usize, grid: TimeGrid) -> Box<dyn Sampler + Send + Sync> {
        match self {
            SamplerKind::Ddpm => Box::new(Ddpm::new(steps).with_grid(grid)),
            SamplerKind::Ddim => Box::new(Ddim::new(steps).with_grid(grid)),
            SamplerKind::DpmSolverPp2M => Box::new(DpmSolverPp2M::new(steps).with_grid(grid)),
            SamplerKind::DpmSolverPp3M => Box::new(DpmSolverPp3M::new(steps).with_grid(grid)),
            SamplerKind::UniPc => Box::new(UniPc::new(steps).with_grid(grid)),
        }
    }
}

impl std::fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SamplerKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "ddpm" => Ok(SamplerKind::Ddpm),
            "ddim" => Ok(SamplerKind::Ddim),
            "dpm++" | "dpmpp" | "dpm-solver++" | "dpm++2m" | "dpmpp2m" | "dpm_solver_pp2_m"
            | "dpm-solver++(2m)" => Ok(SamplerKind::DpmSolverPp2M),
            "dpm++3m" | "dpmpp3m" | "dpm_solver_pp3_m" | "dpm-solver++(3m)" => {
                Ok(SamplerKind::DpmSolverPp3M)
            }
            "unipc" | "uni_pc" | "uni-pc" => Ok(SamplerKind::UniPc),
            other => Err(format!(
                "unknown sampler {other:?} (expected ddpm, ddim, dpm++, dpm++3m or unipc)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::SeededNoise;

    #[test]
    fn fused_steps_are_bit_identical_to_the_tensor_op_path() -> Result<()> {
        let dev = Device::Cpu;
        let mut n = SeededNoise::new(vec![3, 4]);
        let (x, x0, z) = (
            n.next(&[2, 7, 5], &dev)?,
            n.next(&[2, 7, 5], &dev)?,
            n.next(&[2, 7, 5], &dev)?,
        );
        let grid = CosineSchedule::new(DDPM_CLIP_MIN).grid(10);
        for k in 0..10 {
            let (g, gn) = (grid[k], grid[k + 1]);
            let same = |a: Tensor, b: Tensor| -> Result<()> {
                let (a, b) = (
                    a.flatten_all()?.to_vec1::<f32>()?,
                    b.flatten_all()?.to_vec1::<f32>()?,
                );
                assert!(a.iter().zip(&b).all(|(p, q)| p == q), "step {k}");
                Ok(())
            };
            same(
                ddpm_step(&x, &x0, g, gn, &z)?,
                ddpm_step_ops(&x, &x0, g, gn, &z)?,
            )?;
            same(ddim_step(&x, &x0, g, gn)?, ddim_step_ops(&x, &x0, g, gn)?)?;
            // A non-contiguous input takes the tensor-op path and gives the same result.
            let xt = x.transpose(1, 2)?;
            let x0t = x0.transpose(1, 2)?;
            same(
                dpm_update(&xt, &x0t, &xt, 0.9, 0.3, 1.7, 0.7)?.contiguous()?,
                dpm_update(
                    &xt.contiguous()?,
                    &x0t.contiguous()?,
                    &xt.contiguous()?,
                    0.9,
                    0.3,
                    1.7,
                    0.7,
                )?,
            )?;
            same(
                ddim_step(&xt, &x0t, g, gn)?.contiguous()?,
                ddim_step(&xt.contiguous()?, &x0t.contiguous()?, g, gn)?,
            )?;
        }
        Ok(())
    }
}
