//! Checks a CUDA build on a GPU: the reference fixtures on the device, CPU/GPU agreement of
//! training, and timings at batch 128.
//!
//! 1. **Fixtures**: the three `dit_*` fixtures (conditional and unconditional outputs) run on the
//!    device and are compared with the PyTorch outputs within each fixture's tolerance.
//! 2. **Training agreement**: the same small AdaLN network trained for a few steps on the CPU
//!    and on the device from the same weights, batch and noise; the losses must agree to 1e-4
//!    relative.
//! 3. **Timings** (reference size: latent 512, 8 layers, 16 heads, MLP x4, random weights):
//!    inference forwards of each variant and training steps (DDPM loss, backward, AdamW) at
//!    `--batch` x `--frames`, after warm-up, each timed until the device is synchronised.
//!
//! Build here and run where the GPU is (no Rust toolchain needed there):
//! ```text
//! cargo build --release --features cuda --example gpu_check
//! MOTION_DIT_FIXTURES=fixtures ./gpu_check --batch 128 --out gpu_check.json
//! ```
//! `cargo build --features cuda` needs `nvcc` (the CUDA toolkit, or the `nvidia-cuda-nvcc`
//! wheel from PyPI: see `docs/performance.md`, "GPU"). Exits non-zero when a check fails. CI
//! never runs it.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use clap::Parser;
use diffusion::{AdamW, AdamWConfig, Conditioning, DdpmLoss, Denoiser, lengths_to_mask};
use dit::{Dit, DitConfig, Variant};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;
use test_fixtures::{Fixture, closeness};

#[derive(Parser, Debug)]
#[command(about = "Fixtures, CPU/GPU training agreement and timings on a CUDA device")]
struct Args {
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    ordinal: usize,
    /// Batch size of the timings.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Frames per sample of the timings (197 is the reference size).
    #[arg(long, default_value_t = 197)]
    frames: usize,
    /// Timed repetitions per measurement (after one warm-up).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Run on the CPU instead (to try the example without a GPU).
    #[arg(long)]
    cpu: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

fn device(args: &Args) -> Result<Device> {
    if args.cpu {
        return Ok(Device::Cpu);
    }
    Device::new_cuda(args.ordinal).with_context(|| {
        format!(
            "no CUDA device {} (build with `--features cuda`, and check the driver and \
             LD_LIBRARY_PATH)",
            args.ordinal
        )
    })
}

/// Seconds of `f`, the device synchronised before and after.
fn timed<T>(dev: &Device, f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    dev.synchronize()?;
    let t = Instant::now();
    let out = f()?;
    dev.synchronize()?;
    Ok((out, t.elapsed().as_secs_f64()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The fixture's network on `dev`, run on its inputs; returns the worst excess over the
/// tolerance (<= 0 passes) and the largest absolute difference.
fn check_fixture(name: &str, dev: &Device) -> Result<serde_json::Value> {
    let fx = Fixture::load_on(name, dev)?;
    let cfg: DitConfig = serde_json::from_value(fx.json_at("/config")?.clone())?;
    let vb = VarBuilder::from_tensors(fx.with_prefix("weights."), DType::F32, dev);
    let net = Dit::new(&cfg, vb)?;
    let (atol, rtol) = (
        fx.json_f64("/tolerance_suggestion/atol")?,
        fx.json_f64("/tolerance_suggestion/rtol")?,
    );
    let x = fx.f32("input.x")?;
    let gamma = fx.f32("input.gamma")?;
    let mask = (1.0 - fx.f32("input.mask")?)?;
    let y = fx.f32("input.y")?;
    let cond = if y.rank() == 3 {
        Conditioning::Tokens {
            tokens: y,
            mask: None,
        }
    } else {
        Conditioning::Pooled(y)
    };
    let mut rows = Vec::new();
    let mut ok = true;
    for (key, c) in [
        ("output.out", cond.clone()),
        ("output.out_uncond", cond.null()?),
    ] {
        let out = net
            .forward(&x, &gamma, &c, &mask)?
            .to_device(&Device::Cpu)?;
        let expected = fx.f32(key)?.to_device(&Device::Cpu)?;
        let cl = closeness(&out, &expected, atol, rtol)?;
        ok &= cl.violations == 0;
        println!(
            "  {name} {key}: max |diff| {:.2e} (atol {atol:.0e}, rtol {rtol:.0e}) {}",
            cl.max_abs,
            if cl.violations == 0 { "ok" } else { "FAIL" }
        );
        rows.push(json!({"output": key, "max_abs": cl.max_abs, "violations": cl.violations}));
    }
    Ok(json!({"fixture": name, "ok": ok, "outputs": rows}))
}

/// Inputs of a training step / forward: `x0` or `x_t`, the condition and the frame mask (every
/// fourth sample padded by 40 frames), drawn on the CPU from `seed` and moved to `dev`.
fn batch(cfg: &DitConfig, b: usize, f: usize, seed: u64, dev: &Device) -> Result<Batch> {
    let (loss, mut rng) = (DdpmLoss::default(), StdRng::seed_from_u64(seed));
    let cpu = Device::Cpu;
    let x = loss.sample_noise(&[b, f, cfg.num_feats], &cpu, &mut rng)?;
    let cond = if cfg.variant.sequential_condition() {
        Conditioning::Tokens {
            tokens: loss
                .sample_noise(&[b, 77, cfg.num_cond_feats], &cpu, &mut rng)?
                .to_device(dev)?,
            mask: None,
        }
    } else {
        Conditioning::Pooled(
            loss.sample_noise(&[b, cfg.num_cond_feats], &cpu, &mut rng)?
                .to_device(dev)?,
        )
    };
    let lengths: Vec<usize> = (0..b)
        .map(|i| {
            if i % 4 == 3 {
                f.saturating_sub(40).max(1)
            } else {
                f
            }
        })
        .collect();
    Ok(Batch {
        x: x.to_device(dev)?,
        cond,
        mask: lengths_to_mask(&lengths, f, dev)?,
    })
}

struct Batch {
    x: Tensor,
    cond: Conditioning,
    mask: Tensor,
}

/// One training step; returns the loss.
fn train_step(net: &Dit, opt: &mut AdamW, bt: &Batch, step_seed: u64, dev: &Device) -> Result<f32> {
    let loss = DdpmLoss::default();
    let mut rng = StdRng::seed_from_u64(step_seed);
    let b = bt.x.dim(0)?;
    let t_idx = loss.sample_t_idx(b, &mut rng);
    // Noise drawn on the CPU so that both devices see the same values.
    let noise = loss
        .sample_noise(bt.x.dims(), &Device::Cpu, &mut rng)?
        .to_device(dev)?;
    let train = net.training(step_seed);
    let out = loss.compute(&train, &bt.x, &bt.cond, &bt.mask, &t_idx, &noise)?;
    let grads = out.loss.backward()?;
    opt.step(&grads, 1e-4)?;
    Ok(out.loss.to_device(&Device::Cpu)?.to_scalar::<f32>()?)
}

/// A small AdaLN network trained 5 steps on the CPU and on `dev` from the same weights.
fn training_agreement(dev: &Device) -> Result<serde_json::Value> {
    let mut cfg = DitConfig::reference(Variant::AdaLn);
    (cfg.latent_dim, cfg.num_layers, cfg.num_heads) = (64, 2, 4);
    let run = |d: &Device| -> Result<Vec<f32>> {
        let (net, vars) = Dit::init_random(&cfg, 5, d)?;
        let mut opt = AdamW::new(&vars, AdamWConfig::reference())?;
        let bt = batch(&cfg, 4, 40, 9, d)?;
        (0..5)
            .map(|s| train_step(&net, &mut opt, &bt, 100 + s, d))
            .collect()
    };
    let cpu = run(&Device::Cpu)?;
    let gpu = run(dev)?;
    let worst = cpu
        .iter()
        .zip(&gpu)
        .map(|(a, b)| f64::from((a - b).abs() / a.abs().max(1e-6)))
        .fold(0.0, f64::max);
    let ok = worst <= 1e-4;
    println!(
        "  5 AdaLN training steps, CPU {cpu:?}\n                          device {gpu:?}: worst \
         relative difference {worst:.1e} {}",
        if ok { "ok" } else { "FAIL" }
    );
    Ok(json!({"cpu": cpu, "device": gpu, "worst_rel": worst, "ok": ok}))
}

/// Forward and training-step timings of one reference-size variant.
fn timings(variant: Variant, args: &Args, dev: &Device) -> Result<serde_json::Value> {
    let cfg = DitConfig::reference(variant);
    let (net, vars) = Dit::init_random(&cfg, 1, dev)?;
    let bt = batch(&cfg, args.batch, args.frames, 3, dev)?;
    let gamma = Tensor::full(0.5f32, args.batch, dev)?;
    let mut fwd = Vec::new();
    for i in 0..=args.runs {
        let (_, s) = timed(dev, || Ok(net.forward(&bt.x, &gamma, &bt.cond, &bt.mask)?))?;
        if i > 0 {
            fwd.push(s);
        }
    }
    let mut opt = AdamW::new(&vars, AdamWConfig::reference())?;
    let mut step = Vec::new();
    for i in 0..=args.runs {
        let (_, s) = timed(dev, || train_step(&net, &mut opt, &bt, i as u64, dev))?;
        if i > 0 {
            step.push(s);
        }
    }
    let (f, s) = (median(fwd), median(step));
    println!(
        "  {:<16} forward {:>8.1} ms   training step {:>8.1} ms   ({} x {} frames)",
        variant.name(),
        f * 1e3,
        s * 1e3,
        args.batch,
        args.frames
    );
    Ok(
        json!({"variant": variant.name(), "batch": args.batch, "frames": args.frames,
              "forward_s": f, "train_step_s": s}),
    )
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dev = device(&args)?;
    println!("device: {dev:?}");
    println!("1. reference fixtures on the device");
    let fixtures = ["dit_incontext", "dit_adaln", "dit_cross_attention"]
        .iter()
        .map(|n| check_fixture(n, &dev))
        .collect::<Result<Vec<_>>>()?;
    println!("2. CPU / device agreement of training");
    let agreement = training_agreement(&dev)?;
    println!("3. timings at the reference size");
    let times = [Variant::AdaLn, Variant::InContext, Variant::CrossAttention]
        .into_iter()
        .map(|v| timings(v, &args, &dev))
        .collect::<Result<Vec<_>>>()?;
    let ok = fixtures.iter().all(|f| f["ok"] == true) && agreement["ok"] == true;
    let report = json!({"device": format!("{dev:?}"), "ok": ok, "fixtures": fixtures,
                        "training_agreement": agreement, "timings": times});
    if let Some(out) = &args.out {
        let text = serde_json::to_string_pretty(&report)?;
        motion_dit::output::write_atomic(out, text.as_bytes())?;
        println!("wrote {}", out.display());
    }
    if !ok {
        bail!("a check failed (see above)");
    }
    println!("all checks passed");
    Ok(())
}
