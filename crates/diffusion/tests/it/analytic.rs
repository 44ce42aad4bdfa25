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
    Conditioning, Ddim, Ddpm, Denoiser, DpmSolverPp2M, DpmSolverPp3M, NoiseSource, ReplayNoise,
    Sampler, SeededNoise, TimeGrid, UniPc,
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

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Ddpm,
    Ddim,
    Dpm,
    Dpm3,
    UniPc,
    /// UniPC's predictor alone (order 2): DPM-Solver++(2M) by construction.
    UniP,
    /// UniPC with a given predictor order, with or without the corrector.
    UniPcOrder(usize, bool),
}

const KINDS: [Kind; 5] = [Kind::Ddpm, Kind::Ddim, Kind::Dpm, Kind::Dpm3, Kind::UniPc];

/// Exact output mean and variance of a sampler with `steps` steps (all at clip_min 1e-9).
fn exact_moments(kind: Kind, steps: usize) -> Result<(f64, f64)> {
    exact_moments_on(kind, steps, TimeGrid::Uniform)
}

fn exact_moments_on(kind: Kind, steps: usize, grid: TimeGrid) -> Result<(f64, f64)> {
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
    let sampler: Box<dyn Sampler> = match kind {
        Kind::Ddpm => Box::new(Ddpm::new(steps).with_grid(grid)),
        Kind::Ddim => Box::new(Ddim::new(steps).with_clip_min(1e-9).with_grid(grid)),
        Kind::Dpm => Box::new(
            DpmSolverPp2M::new(steps)
                .with_clip_min(1e-9)
                .with_grid(grid),
        ),
        Kind::Dpm3 => Box::new(
            DpmSolverPp3M::new(steps)
                .with_clip_min(1e-9)
                .with_grid(grid),
        ),
        Kind::UniPc => Box::new(UniPc::new(steps).with_clip_min(1e-9).with_grid(grid)),
        Kind::UniPcOrder(..) => Box::new(UniPc::new(steps)),
        Kind::UniP => Box::new(
            UniPc::new(steps)
                .without_corrector()
                .with_clip_min(1e-9)
                .with_grid(grid),
        ),
    };
    let sampler: Box<dyn Sampler> = match kind {
        Kind::UniPcOrder(o, c) => {
            let u = UniPc::new(steps)
                .with_order(o)
                .with_clip_min(1e-9)
                .with_grid(grid);
            Box::new(if c { u } else { u.without_corrector() })
        }
        _ => sampler,
    };
    let out = sampler.sample(&Gaussian, latents, &c, &mask, &mut src)?;
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
    for kind in KINDS {
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
    let samplers: [Box<dyn Sampler>; 5] = [
        Box::new(Ddpm::new(8)),
        Box::new(Ddim::new(8)),
        Box::new(DpmSolverPp2M::new(8)),
        Box::new(DpmSolverPp3M::new(8)),
        Box::new(UniPc::new(8)),
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

/// UniPC's predictor of order 2 is DPM-Solver++(2M): the same moments at every step count.
#[test]
fn unipc_predictor_of_order_two_is_dpm_solver_pp_2m() -> Result<()> {
    for steps in [3, 5, 10, 20] {
        let (m1, v1) = exact_moments(Kind::Dpm, steps)?;
        let (m2, v2) = exact_moments(Kind::UniP, steps)?;
        assert!(
            (m1 - m2).abs() < 1e-9 && (v1 - v2).abs() < 1e-9 * v1,
            "{steps}"
        );
    }
    Ok(())
}

/// At few steps the higher-order solvers beat DDIM; on the uniform grid (the model's)
/// DPM-Solver++(3M) beats (2M) from 5 steps on and UniPC beats both at 5 to 10 steps. Prints the
/// few-step table of `docs/samplers.md` (total error `|mean - mu| + |var - s^2| / s^2`).
#[test]
fn few_step_solvers_rank_by_order_on_the_analytic_problem() -> Result<()> {
    let grids = [
        TimeGrid::Uniform,
        TimeGrid::LogSnr,
        TimeGrid::Power { rho: 2.0 },
    ];
    eprintln!("| steps | grid | DDIM | DPM++(2M) | DPM++(3M) | UniPC |");
    for steps in [3, 5, 7, 10, 20] {
        for grid in grids {
            let mut row = Vec::new();
            for kind in [Kind::Ddim, Kind::Dpm, Kind::Dpm3, Kind::UniPc] {
                let (m, v) = exact_moments_on(kind, steps, grid)?;
                row.push((m - MU).abs() + (v - S * S).abs() / (S * S));
            }
            eprintln!(
                "| {steps} | {grid} | {:.2e} | {:.2e} | {:.2e} | {:.2e} |",
                row[0], row[1], row[2], row[3]
            );
            assert!(row.iter().all(|e| e.is_finite()), "{steps} {grid}: {row:?}");
            assert!(
                row[1] < row[0] && row[3] < row[0],
                "{steps} {grid}: {row:?}"
            );
            if grid == TimeGrid::Uniform && steps >= 5 {
                assert!(row[2] < row[1], "{steps}: {row:?}");
            }
            if grid == TimeGrid::Uniform && (5..=10).contains(&steps) {
                assert!(row[3] < row[2], "{steps}: {row:?}");
            }
        }
    }
    Ok(())
}

/// The UniC corrector raises the order of accuracy: UniPC with a first-order predictor (DDIM's
/// update) converges at second order with the corrector (the error drops ~4x when the steps
/// double) and at first order without it (~2x).
#[test]
fn the_unipc_corrector_raises_the_order_of_a_first_order_predictor() -> Result<()> {
    let err = |corrector: bool, steps: usize| -> Result<f64> {
        let (m, v) = exact_moments(Kind::UniPcOrder(1, corrector), steps)?;
        // Minus the start-mismatch floor of the mean (see the convergence test).
        Ok((v - S * S).abs() / (S * S) + ((m - MU).abs() - 1.107e-5).abs())
    };
    for steps in [100, 200] {
        let with = err(true, steps)? / err(true, 2 * steps)?;
        let without = err(false, steps)? / err(false, 2 * steps)?;
        eprintln!(
            "{steps} -> {}: error ratio {with:.2} with the corrector, {without:.2} without",
            2 * steps
        );
        assert!(with > 3.0, "{with}");
        assert!((1.8..2.3).contains(&without), "{without}");
    }
    Ok(())
}

/// Records the first input it is called with, then acts as [`Gaussian`].
#[derive(Default)]
struct FirstInput(std::sync::Mutex<Option<Tensor>>);

impl Denoiser for FirstInput {
    fn forward(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        c: &Conditioning,
        m: &Tensor,
    ) -> candle::Result<Tensor> {
        if let Ok(mut first) = self.0.lock()
            && first.is_none()
        {
            *first = Some(x.copy()?);
        }
        Gaussian.forward(x, gamma, c, m)
    }
}

/// Same seed, same start, same sample: every sampler kind on every grid first calls the
/// denoiser on exactly the latents the seeds give, and a second run returns the same output bit
/// for bit, so a sweep compares samplers on the same noise.
#[test]
fn every_sampler_starts_from_the_seeded_latents_and_repeats_exactly() -> Result<()> {
    use diffusion::SamplerKind;
    let dev = Device::Cpu;
    let seeds = vec![11u64, 12, 13];
    let shape = [3, 7, 4];
    let latents = SeededNoise::new(seeds.clone()).next(&shape, &dev)?;
    let mask = Tensor::ones((3, 7), DType::F32, &dev)?;
    for kind in SamplerKind::ALL {
        for grid in [
            TimeGrid::Uniform,
            TimeGrid::LogSnr,
            TimeGrid::Power { rho: 2.0 },
        ] {
            let sampler = kind.build_with(6, grid);
            let run = || -> Result<(Tensor, Tensor)> {
                let mut noise = SeededNoise::new(seeds.clone());
                let start = noise.next(&shape, &dev)?;
                let rec = FirstInput::default();
                let out = sampler.sample(&rec, start, &Conditioning::None, &mask, &mut noise)?;
                let first = rec
                    .0
                    .lock()
                    .map_err(|_| anyhow::anyhow!("lock"))?
                    .take()
                    .ok_or_else(|| anyhow::anyhow!("{kind} never called the denoiser"))?;
                Ok((first, out))
            };
            let (first_a, out_a) = run()?;
            let (_, out_b) = run()?;
            let same = |a: &Tensor, b: &Tensor| -> Result<bool> {
                Ok(a.flatten_all()?.to_vec1::<f32>()? == b.flatten_all()?.to_vec1::<f32>()?)
            };
            assert!(same(&first_a, &latents)?, "{kind} {grid}: other start");
            assert!(same(&out_a, &out_b)?, "{kind} {grid}: not repeatable");
            assert_eq!(sampler.nfe(), 6);
        }
    }
    Ok(())
}

/// Inpainting with every sampler: the known part of the result is the target exactly, and
/// with the element-wise optimal denoiser (elements independent) the free part is exactly what
/// the same seeds give without the constraint.
#[test]
fn inpainting_keeps_the_known_part_and_leaves_the_free_part_alone() -> Result<()> {
    use diffusion::{Inpainted, KnownPart, SamplerKind};
    let dev = Device::Cpu;
    let shape = [2usize, 6, 3];
    let n: usize = shape.iter().product();
    // Sample 0: frames 0..2 known; sample 1: channel 1 known everywhere.
    let mask: Vec<f32> = (0..n)
        .map(|i| {
            let (b, f, c) = (i / 18, (i / 3) % 6, i % 3);
            if (b == 0 && f < 2) || (b == 1 && c == 1) {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let target: Vec<f32> = (0..n).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.3).collect();
    let known = KnownPart::new(
        Tensor::from_vec(mask.clone(), &shape, &dev)?,
        Tensor::from_vec(target.clone(), &shape, &dev)?,
    )?;
    let frame_mask = Tensor::ones((2, 6), DType::F32, &dev)?;
    for kind in SamplerKind::ALL {
        let sampler = kind.build(8);
        let run = |d: &dyn Denoiser| -> Result<Vec<f32>> {
            let mut noise = SeededNoise::new(vec![3, 4]);
            let start = noise.next(&shape, &dev)?;
            let out = sampler.sample(d, start, &Conditioning::None, &frame_mask, &mut noise)?;
            Ok(out.flatten_all()?.to_vec1::<f32>()?)
        };
        let edited = run(&Inpainted::new(&Gaussian, &known))?;
        let free = run(&Gaussian)?;
        for i in 0..n {
            if mask[i] == 1.0 {
                assert_eq!(edited[i], target[i], "{kind}: known element {i}");
            } else {
                assert_eq!(edited[i], free[i], "{kind}: free element {i}");
            }
        }
    }
    // Bad known parts are errors naming the problem.
    let t = Tensor::zeros(&shape, DType::F32, &dev)?;
    assert!(KnownPart::new(t.affine(1.0, 2.0)?, t.clone()).is_err());
    assert!(KnownPart::new(t.clone(), Tensor::zeros((2, 6), DType::F32, &dev)?).is_err());
    Ok(())
}
