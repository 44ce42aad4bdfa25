//! Times training steps of one DiT variant at the reference size (batch 8 x 197 frames, two
//! samples padded by 40 frames, random weights, the reference dropout settings) split into
//! loss + forward, backward and the AdamW update, with wall and process CPU time, the matrix
//! product FLOP count of a step (forward x 3) and the GFLOP/s it reaches; then a plain
//! `[1576, 512] x [512, 2048]` product as the ceiling.
//!
//! `cargo run --release -p dit --example train_timing -- adaln 3 [plain]`
//! (variant: adaln | incontext | cross_attention; then the number of steps; `plain` runs the
//! training forward on candle's generic differentiable ops instead of the fused kernels).

use std::time::Instant;

use candle::{Device, Tensor};
use diffusion::{AdamW, AdamWConfig, Conditioning, DdpmLoss, lengths_to_mask};
use dit::{Dit, DitConfig, Variant};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// User + system CPU seconds of this process (Linux `/proc/self/stat`, 100 ticks/s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// Matrix-product FLOPs of one forward (`2 m n k` per product; element-wise work excluded).
fn forward_flops(cfg: &DitConfig, b: usize, f: usize, l: usize) -> f64 {
    let d = cfg.latent_dim as f64;
    let hid = (cfg.mlp_multiplier * cfg.latent_dim) as f64;
    // A pre-LN / AdaLN block on `n` tokens per sample: qkv, out, fc1, fc2, Q K^T and P V.
    let block = |n: f64| b as f64 * (2.0 * n * d * (4.0 * d + 2.0 * hid) + 4.0 * n * n * d);
    let layers = cfg.num_layers as f64;
    let (bf, ff) = (b as f64, f as f64);
    let io = 2.0 * bf * ff * cfg.num_feats as f64 * d * 2.0;
    match cfg.variant {
        Variant::AdaLn => io + layers * (block(ff) + 2.0 * bf * d * 6.0 * d),
        Variant::InContext => io + layers * block(ff + 2.0),
        Variant::CrossAttention => {
            let lc = (l + 1) as f64;
            let cross = bf * (2.0 * ff * d * 2.0 * d + 2.0 * lc * d * 2.0 * d + 4.0 * ff * lc * d);
            io + cfg.num_cond_blocks as f64 * block(lc) + layers * (block(ff) + cross)
        }
    }
}

/// The network built through `Dit::new` on a `VarMap`, every variable then drawn from
/// `N(0, 0.02)` by a seeded generator, in name order.
fn random_net(cfg: &DitConfig) -> candle::Result<(Dit, candle_nn::VarMap)> {
    use rand_distr::Distribution;
    let dev = Device::Cpu;
    let vars = candle_nn::VarMap::new();
    let net = Dit::new(
        cfg,
        candle_nn::VarBuilder::from_varmap(&vars, candle::DType::F32, &dev),
    )?;
    let normal =
        rand_distr::Normal::new(0f32, 0.02).map_err(|e| candle::Error::Msg(e.to_string()))?;
    let mut rng = StdRng::seed_from_u64(1);
    for (_, var) in diffusion::named_vars(&vars) {
        let v: Vec<f32> = (0..var.elem_count())
            .map(|_| normal.sample(&mut rng))
            .collect();
        var.set(&Tensor::from_vec(v, var.shape(), &dev)?)?;
    }
    Ok((net, vars))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let variant = match args.get(1).map(String::as_str).unwrap_or("adaln") {
        "incontext" => Variant::InContext,
        "cross_attention" => Variant::CrossAttention,
        _ => Variant::AdaLn,
    };
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let cfg = DitConfig::reference(variant);
    let dev = Device::Cpu;
    let (b, f, l) = (8, 197, 77);
    let (net, vars) = random_net(&cfg)?;
    let loss = DdpmLoss::default();
    let mut rng = StdRng::seed_from_u64(3);
    let x0 = loss.sample_noise(&[b, f, cfg.num_feats], &dev, &mut rng)?;
    let cond = if variant.sequential_condition() {
        Conditioning::Tokens {
            tokens: loss.sample_noise(&[b, l, cfg.num_cond_feats], &dev, &mut rng)?,
            mask: None,
        }
    } else {
        Conditioning::Pooled(loss.sample_noise(&[b, cfg.num_cond_feats], &dev, &mut rng)?)
    };
    let lengths: Vec<usize> = (0..b)
        .map(|i| if i % 4 == 3 { f - 40 } else { f })
        .collect();
    let mask = lengths_to_mask(&lengths, f, &dev)?;
    let mut opt = AdamW::new(&vars, AdamWConfig::reference())?;
    let plain = args.get(3).is_some_and(|a| a == "plain");
    let train = net.training(7).with_fused_kernels(!plain);
    let flops = 3.0 * forward_flops(&cfg, b, f, l);
    println!(
        "{variant}: {} ops, SIMD path {}, {} threads, {:.1} GFLOP per step (matrix products)",
        if plain { "plain candle" } else { "fused" },
        dit::simd::active(),
        candle::utils::get_num_threads(),
        flops / 1e9
    );
    let mut totals = [[0f64; 2]; 3];
    for step in 0..=steps {
        let t_idx = loss.sample_t_idx(b, &mut rng);
        let noise = loss.sample_noise(x0.dims(), &dev, &mut rng)?;
        let mut marks = vec![(Instant::now(), cpu_seconds())];
        let out = loss.compute(&train, &x0, &cond, &mask, &t_idx, &noise)?;
        marks.push((Instant::now(), cpu_seconds()));
        let grads = out.loss.backward()?;
        marks.push((Instant::now(), cpu_seconds()));
        opt.step(&grads, 1e-4)?;
        marks.push((Instant::now(), cpu_seconds()));
        let part = |i: usize| {
            [
                (marks[i + 1].0 - marks[i].0).as_secs_f64(),
                marks[i + 1].1 - marks[i].1,
            ]
        };
        let parts = [part(0), part(1), part(2)];
        println!(
            "step {step}{}: forward {:.3} s ({:.2} CPU-s), backward {:.3} s ({:.2}), AdamW {:.3} s \
             ({:.2}), loss {:.4}",
            if step == 0 { " (warm-up)" } else { "" },
            parts[0][0],
            parts[0][1],
            parts[1][0],
            parts[1][1],
            parts[2][0],
            parts[2][1],
            out.loss.to_scalar::<f32>()?
        );
        if step > 0 {
            for (t, p) in totals.iter_mut().zip(parts) {
                t[0] += p[0];
                t[1] += p[1];
            }
        }
    }
    let n = steps.max(1) as f64;
    let wall: f64 = totals.iter().map(|t| t[0]).sum::<f64>() / n;
    let cpu: f64 = totals.iter().map(|t| t[1]).sum::<f64>() / n;
    // The ceiling: a plain product at the shape of the first MLP layer.
    let a = Tensor::randn(0f32, 1.0, (b * f, cfg.latent_dim), &dev)?;
    let w = Tensor::randn(
        0f32,
        1.0,
        (cfg.mlp_multiplier * cfg.latent_dim, cfg.latent_dim),
        &dev,
    )?;
    let gemm_flops = 2.0 * (a.dim(0)? * a.dim(1)? * w.dim(0)?) as f64;
    a.matmul(&w.t()?)?;
    let reps = 10;
    let t0 = Instant::now();
    for _ in 0..reps {
        a.matmul(&w.t()?)?;
    }
    let gemm_s = t0.elapsed().as_secs_f64() / reps as f64;
    let step_rate = flops / wall / 1e9;
    let gemm_rate = gemm_flops / gemm_s / 1e9;
    println!(
        "mean of {steps}: {wall:.3} s wall, {cpu:.2} CPU-s per step: forward {:.3} s, backward \
         {:.3} s, AdamW {:.3} s; {step_rate:.1} GFLOP/s; plain gemm {gemm_rate:.1} GFLOP/s \
         ({:.0} % of it)",
        totals[0][0] / n,
        totals[1][0] / n,
        totals[2][0] / n,
        100.0 * step_rate / gemm_rate
    );
    Ok(())
}
