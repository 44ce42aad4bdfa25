//! Samplers on an analytic problem: data `x0 ~ N(mu, s^2)` (per element) has the closed-form
//! optimal x0 denoiser `E[x0 | x_t] = mu + sqrt(g) s^2 / (g s^2 + 1 - g) (x_t - sqrt(g) mu)`,
//! so a correct sampler's output distribution must converge to `N(mu, s^2)` as steps grow.
//!
//! With this linear denoiser every sampler is an affine map of its inputs:
//! `x_out = A x_T + sum_k C_k z_k + b`. The study measures `A`, `C_k`, `b` EXACTLY (no Monte
//! Carlo) with probe rows in one batch: row 0 has `x_T = 0` and no noise (gives `b`), row 1 has
//! `x_T = 1` (gives `A + b`), row `k + 2` has a unit noise at step `k` only (gives `C_k + b`).
//! For `x_T ~ N(0, 1)`, `z_k ~ N(0, 1)`: mean = `b`, variance = `A^2 + sum C_k^2`.
//! Computation in f64 tensors (the schedule stays f32). Run with `--nocapture` to see the table
//! (it is also in `docs/samplers.md`).

use anyhow::Result;
use candle::{DType, Device, Tensor};
use diffusion::{
    Conditioning, Ddim, Ddpm, Denoiser, DpmSolverPp2M, NoiseSource, ReplayNoise, Sampler,
    SeededNoise,
};

const MU: f64 = 0.5;
const S: f64 = 0.7;

/// The optimal x0 denoiser for `x0 ~ N(MU, S^2)`.
struct Gaussian;

impl Denoiser for Gaussian {
    fn forward(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _c: &Conditioning,
        _m: &Tensor,
    ) -> candle::Result<Tensor> {
        let s2 = S * S;
        let g = gamma.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let (k, off): (Vec<f64>, Vec<f64>) = g
            .iter()
            .map(|&g| {
                let k = g.sqrt() * s2 / (g * s2 + 1.0 - g);
                (k, MU - k * g.sqrt() * MU)
            })
            .unzip();
        let b = g.len();
        let k = Tensor::from_vec(k, (b, 1, 1), x.device())?.to_dtype(x.dtype())?;
        let off = Tensor::from_vec(off, (b, 1, 1), x.device())?.to_dtype(x.dtype())?;
        x.broadcast_mul(&k)?.broadcast_add(&off)
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Ddpm,
    Ddim,
    Dpm,
}

/// Exact output mean and variance of a sampler with `steps` steps (all at clip_min 1e-9).
fn exact_moments(kind: Kind, steps: usize) -> Result<(f64, f64)> {
    let dev = Device::Cpu;
    let rows = steps + 2;
    let mut lat = vec![0f64; rows];
    lat[1] = 1.0;
    let latents = Tensor::from_vec(lat, (rows, 1, 1), &dev)?;
    let mask = Tensor::ones((rows, 1), DType::F32, &dev)?;
    let noise: Vec<Tensor> = (0..steps)
        .map(|k| {
            let mut z = vec![0f32; rows];
            z[k + 2] = 1.0;
            Tensor::from_vec(z, (rows, 1, 1), &dev)
        })
        .collect::<candle::Result<_>>()?;
    let mut src = ReplayNoise::new(noise);
    let c = Conditioning::None;
    let out = match kind {
        Kind::Ddpm => Ddpm::new(steps).sample(&Gaussian, latents, &c, &mask, &mut src)?,
        Kind::Ddim => Ddim::new(steps)
            .with_clip_min(1e-9)
            .sample(&Gaussian, latents, &c, &mask, &mut src)?,
        Kind::Dpm => DpmSolverPp2M::new(steps)
            .with_clip_min(1e-9)
            .sample(&Gaussian, latents, &c, &mask, &mut src)?,
    };
    let o = out.flatten_all()?.to_vec1::<f64>()?;
    let b = o[0];
    let a = o[1] - b;
    let var = a * a
        + match kind {
            Kind::Ddpm => o[2..].iter().map(|v| (v - b) * (v - b)).sum::<f64>(),
            _ => 0.0,
        };
    Ok((b, var))
}

const STEPS: [usize; 7] = [5, 10, 20, 50, 100, 200, 1000];

/// Errors |mean - mu| and |var - s^2| / s^2 shrink as steps grow, for every sampler.
#[test]
fn samplers_converge_to_the_data_distribution_as_steps_grow() -> Result<()> {
    eprintln!("sampler | steps | |mean - mu| | |var - s^2| / s^2   (mu = {MU}, s = {S})");
    for kind in [Kind::Ddpm, Kind::Ddim, Kind::Dpm] {
        let mut errs = Vec::new();
        for steps in STEPS {
            let (m, v) = exact_moments(kind, steps)?;
            let e = ((m - MU).abs(), (v - S * S).abs() / (S * S));
            eprintln!("{kind:?} | {steps} | {:.3e} | {:.3e}", e.0, e.1);
            errs.push(e);
        }
        let first = errs[0];
        let last = errs[errs.len() - 1];
        // Convergence: the total error at 1000 steps is at least 20x below the error at 5 steps
        // and small in absolute terms (the floor is the start-distribution mismatch,
        // N(0, 1) instead of N(sqrt(g_0) mu, ...) at g_0 = 1e-9: ~S sqrt(1e-9) MU = 1.1e-5).
        assert!(
            last.0 + last.1 < (first.0 + first.1) / 20.0,
            "{kind:?}: {first:?} -> {last:?}"
        );
        assert!(last.0 < 1e-2 && last.1 < 1e-2, "{kind:?}: {last:?}");
        // ... and the error is (weakly) decreasing from 20 steps on.
        for w in errs[2..].windows(2) {
            assert!(
                w[1].0 + w[1].1 <= (w[0].0 + w[0].1) * 1.05,
                "{kind:?}: {errs:?}"
            );
        }
    }
    Ok(())
}

/// The real sampling path with seeded noise agrees with the exact moments (Monte Carlo).
#[test]
fn ddpm_with_seeded_noise_matches_the_exact_moments() -> Result<()> {
    let dev = Device::Cpu;
    let steps = 20;
    let (b, f, d) = (16, 64, 16); // 16384 samples
    let mut noise = SeededNoise::new((0..b as u64).collect());
    let latents = noise.next(&[b, f, d], &dev)?;
    let mask = Tensor::ones((b, f), DType::F32, &dev)?;
    let out =
        Ddpm::new(steps).sample(&Gaussian, latents, &Conditioning::None, &mask, &mut noise)?;
    let n = (b * f * d) as f64;
    let x = out.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
    let (m_exact, v_exact) = exact_moments(Kind::Ddpm, steps)?;
    // 5 standard errors of the sample mean / variance of n Gaussian draws.
    assert!(
        (mean - m_exact).abs() < 5.0 * (v_exact / n).sqrt(),
        "{mean} vs {m_exact}"
    );
    assert!(
        (var - v_exact).abs() < 5.0 * v_exact * (2.0 / n).sqrt(),
        "{var} vs {v_exact}"
    );
    Ok(())
}

/// Per-sample seeds: sample 0 of a batch of 4 equals the same seed sampled alone, for every
/// sampler (latents drawn from the same source).
#[test]
fn sample_zero_of_a_batch_of_four_equals_its_seed_sampled_alone() -> Result<()> {
    let dev = Device::Cpu;
    let samplers: [Box<dyn Sampler>; 3] = [
        Box::new(Ddpm::new(8)),
        Box::new(Ddim::new(8)),
        Box::new(DpmSolverPp2M::new(8)),
    ];
    for s in &samplers {
        let run = |seeds: Vec<u64>| -> Result<Tensor> {
            let b = seeds.len();
            let mut noise = SeededNoise::new(seeds);
            let latents = noise.next(&[b, 6, 5], &dev)?;
            let mask = Tensor::ones((b, 6), DType::F32, &dev)?;
            Ok(s.sample(&Gaussian, latents, &Conditioning::None, &mask, &mut noise)?)
        };
        let batch = run(vec![42, 7, 8, 9])?;
        let alone = run(vec![42])?;
        let diff = (batch.get(0)? - alone.get(0)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        let other = (batch.get(0)? - batch.get(1)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(other > 0.0);
    }
    Ok(())
}
