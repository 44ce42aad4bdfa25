//! Criterion bench of one training step per DiT variant at the reference size (latent 512,
//! 8 layers, 16 heads, MLP x4, dropout / stochastic depth / label dropout 0.1, random weights):
//! `DdpmLoss::compute` on a batch of 8 x 197 frames (two samples padded by 40 frames; 77
//! condition tokens for cross-attention), `backward`, then one `AdamW` update.
//!
//! `train_step/gemm_reference` is a plain `[1576, 512] x [512, 2048]` product (the shape of the
//! first MLP layer, 3.3 GFLOP) through candle's matmul, as the ceiling to compare a step's
//! GFLOP/s with. `examples/train_timing.rs` prints the FLOP count of each step and splits it
//! into forward, backward and optimiser.
//!
//! Run: `cargo bench -p dit --bench train -- --warm-up-time 1 --measurement-time 20`
//! (add a filter such as `train_step/adaln`). `MOTION_DIT_SIMD=avx2` forces the AVX2 path.

use candle::{DType, Device, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use diffusion::{AdamW, AdamWConfig, Conditioning, DdpmLoss, lengths_to_mask};
use dit::{Dit, DitConfig, Variant};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn inputs(cfg: &DitConfig, b: usize, f: usize) -> candle::Result<(Tensor, Conditioning, Tensor)> {
    let dev = Device::Cpu;
    let (loss, mut rng) = (DdpmLoss::default(), StdRng::seed_from_u64(3));
    let x0 = loss.sample_noise(&[b, f, cfg.num_feats], &dev, &mut rng)?;
    let cond = if cfg.variant.sequential_condition() {
        Conditioning::Tokens {
            tokens: loss.sample_noise(&[b, 77, cfg.num_cond_feats], &dev, &mut rng)?,
            mask: None,
        }
    } else {
        Conditioning::Pooled(loss.sample_noise(&[b, cfg.num_cond_feats], &dev, &mut rng)?)
    };
    let lengths: Vec<usize> = (0..b)
        .map(|i| if i % 4 == 3 { f - 40 } else { f })
        .collect();
    Ok((x0, cond, lengths_to_mask(&lengths, f, &dev)?))
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

fn bench(c: &mut Criterion) {
    eprintln!(
        "SIMD path: {}, {} threads",
        dit::simd::active(),
        candle::utils::get_num_threads()
    );
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    let dev = Device::Cpu;
    let a = Tensor::randn(0f32, 1.0, (1576, 512), &dev).expect("randn");
    let w = Tensor::randn(0f32, 1.0, (2048, 512), &dev).expect("randn");
    group.bench_function("gemm_reference", |bch| {
        bch.iter(|| a.matmul(&w.t().expect("t")).expect("matmul"))
    });
    for variant in [Variant::AdaLn, Variant::InContext, Variant::CrossAttention] {
        let cfg = DitConfig::reference(variant);
        let (net, vars) = random_net(&cfg).expect("init");
        let (x0, cond, mask) = inputs(&cfg, 8, 197).expect("inputs");
        let loss = DdpmLoss::default();
        let mut opt = AdamW::new(&vars, AdamWConfig::reference()).expect("optimiser");
        let train = net.training(7);
        let mut rng = StdRng::seed_from_u64(11);
        group.bench_function(variant.name(), |bch| {
            bch.iter(|| {
                let t_idx = loss.sample_t_idx(8, &mut rng);
                let noise = loss.sample_noise(x0.dims(), &dev, &mut rng).expect("noise");
                let out = loss
                    .compute(&train, &x0, &cond, &mask, &t_idx, &noise)
                    .expect("loss");
                let grads = out.loss.backward().expect("backward");
                opt.step(&grads, 1e-4).expect("step");
                out.loss.to_dtype(DType::F32).expect("loss")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
