//! Times inference forwards of one DiT variant at the reference size (batch 8 x 197 frames,
//! random weights) and prints wall time and process CPU time per forward, so a figure can be
//! judged on a machine shared with other work (CPU time is insensitive to other load).
//!
//! `cargo run --release -p dit --example forward_timing -- adaln 5`
//! (variant: adaln | incontext | cross_attention; then the number of forwards; optionally the
//! batch size, default 8; a guided DDIM step of one motion is a batch of 2; then the precision,
//! `f32` (default) or `bf16`).

use std::time::Instant;

use candle::{Device, Tensor};
use diffusion::{Conditioning, Denoiser, lengths_to_mask};
use dit::{Dit, DitConfig, Precision, Variant};

/// User + system CPU seconds of this process (Linux `/proc/self/stat`, 100 ticks/s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let variant = match args.get(1).map(String::as_str).unwrap_or("adaln") {
        "incontext" => Variant::InContext,
        "cross_attention" => Variant::CrossAttention,
        _ => Variant::AdaLn,
    };
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let cfg = DitConfig::reference(variant);
    let dev = Device::Cpu;
    let (net, _vars) = Dit::init_random(&cfg, 1, &dev)?;
    let precision: Precision = match args.get(4) {
        Some(p) => p.parse().map_err(anyhow::Error::msg)?,
        None => Precision::F32,
    };
    let net = net.with_precision(precision)?;
    let b: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(8);
    let f = 197;
    let x = Tensor::randn(0f32, 1.0, (b, f, cfg.num_feats), &dev)?;
    let gamma = Tensor::full(0.5f32, b, &dev)?;
    let cond = if variant.sequential_condition() {
        Conditioning::Tokens {
            tokens: Tensor::randn(0f32, 1.0, (b, 77, cfg.num_cond_feats), &dev)?,
            mask: None,
        }
    } else {
        Conditioning::Pooled(Tensor::randn(0f32, 1.0, (b, cfg.num_cond_feats), &dev)?)
    };
    let lengths: Vec<usize> = (0..b)
        .map(|i| if i % 4 == 3 { f - 40 } else { f })
        .collect();
    let mask = lengths_to_mask(&lengths, f, &dev)?;
    net.forward(&x, &gamma, &cond, &mask)?; // warm-up
    let (w0, c0) = (Instant::now(), cpu_seconds());
    for _ in 0..n {
        net.forward(&x, &gamma, &cond, &mask)?;
    }
    let wall = w0.elapsed().as_secs_f64() / n as f64;
    let cpu = (cpu_seconds() - c0) / n as f64;
    println!(
        "{variant}, batch {b}, {precision}{}: {wall:.4} s wall, {cpu:.4} s CPU per forward \
         ({} threads, SIMD {})",
        if precision == Precision::Bf16 {
            format!(" ({} kernel)", kernels::bf16::Bf16Kernel::auto())
        } else {
            String::new()
        },
        candle::utils::get_num_threads(),
        kernels::simd::active()
    );
    Ok(())
}
