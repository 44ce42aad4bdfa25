//! Criterion benches of the DiT hot paths at the reference size (latent 512, 8 layers,
//! 16 heads, MLP x4, random weights):
//! - `forward/<variant>`: one inference forward of a batch of 8 x 197 frames (two samples
//!   padded), cross-attention with 77 condition tokens (CLIP's maximum);
//! - `forward/adaln_bf16_<kernel>`: the same AdaLN forward with [`Precision::Bf16`] products
//!   (`native` on CPUs with AVX512-BF16, `emulated` elsewhere);
//! - `ddim50_guided/adaln`: a full 50-step DDIM sample of one motion with classifier-free
//!   guidance 3.5 (50 forwards of a batch of 2).
//!
//! Run: `cargo bench -p dit --bench dit -- --warm-up-time 1 --measurement-time 5`
//! (add a filter such as `forward/adaln` to run one).

use candle::{Device, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use diffusion::{Conditioning, Ddim, Denoiser, Guided, Sampler, SeededNoise, lengths_to_mask};
use dit::{Dit, DitConfig, Precision, Variant};
use kernels::bf16::{Bf16Kernel, Bf16Linear};
use kernels::ops::Activation;

fn inputs(
    cfg: &DitConfig,
    b: usize,
    f: usize,
) -> candle::Result<(Tensor, Tensor, Conditioning, Tensor)> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (b, f, cfg.num_feats), &dev)?;
    let gamma = Tensor::full(0.5f32, b, &dev)?;
    let cond = if cfg.variant.sequential_condition() {
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
    Ok((x, gamma, cond, mask))
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward");
    group.sample_size(10);
    for variant in [Variant::AdaLn, Variant::InContext, Variant::CrossAttention] {
        let cfg = DitConfig::reference(variant);
        let (net, _vars) = Dit::init_random(&cfg, 1, &Device::Cpu).expect("init");
        let (x, gamma, cond, mask) = inputs(&cfg, 8, 197).expect("inputs");
        group.bench_function(variant.name(), |bch| {
            bch.iter(|| net.forward(&x, &gamma, &cond, &mask).expect("forward"))
        });
        if variant == Variant::AdaLn {
            // The opt-in bfloat16 products, named after the kernel that runs them here.
            let half = net.clone().with_precision(Precision::Bf16).expect("bf16");
            let name = format!("adaln_bf16_{}", Bf16Kernel::auto());
            group.bench_function(name, |bch| {
                bch.iter(|| half.forward(&x, &gamma, &cond, &mask).expect("forward"))
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("ddim50_guided");
    group.sample_size(10);
    let cfg = DitConfig::reference(Variant::AdaLn);
    let (net, _vars) = Dit::init_random(&cfg, 1, &Device::Cpu).expect("init");
    let (x, _g, cond, mask) = inputs(&cfg, 1, 197).expect("inputs");
    let guided = Guided::new(&net, 3.5);
    let sampler = Ddim::new(50);
    group.bench_function("adaln", |bch| {
        bch.iter(|| {
            sampler
                .sample(
                    &guided,
                    x.clone(),
                    &cond,
                    &mask,
                    &mut SeededNoise::new(vec![0]),
                )
                .expect("sample")
        })
    });
    group.finish();
}

/// The op types of one AdaLN block at the reference size (8 x 197 tokens, D = 512, 16 heads),
/// to see where a forward spends its time (a forward runs each of these 8 times).
fn ops(c: &mut Criterion) {
    let dev = Device::Cpu;
    let (n, d, h, t) = (8 * 197, 512, 16, 197);
    let r = |s: &[usize]| Tensor::randn(0f32, 1.0, s, &dev).expect("randn");
    let x = r(&[n, d]);
    let xw = r(&[n, 4 * d]);
    let w_qkv = r(&[3 * d, d]);
    let w_fc1 = r(&[4 * d, d]);
    let w_fc2 = r(&[d, 4 * d]);
    let b4 = r(&[4 * d]);
    let q = r(&[8 * h, t, d / h]);
    let logits = r(&[8, h, t, t]);
    let bias = r(&[8, t]);
    let x3 = r(&[8, t, d]);
    let sc = r(&[8, d]);
    let mut g = c.benchmark_group("ops");
    g.sample_size(10);
    g.bench_function("matmul_qkv", |b| {
        b.iter(|| x.matmul(&w_qkv.t().expect("t")).expect("mm"))
    });
    g.bench_function("matmul_fc1", |b| {
        b.iter(|| x.matmul(&w_fc1.t().expect("t")).expect("mm"))
    });
    g.bench_function("matmul_fc2", |b| {
        b.iter(|| xw.matmul(&w_fc2.t().expect("t")).expect("mm"))
    });
    g.bench_function("attention_matmuls", |b| {
        b.iter(|| {
            let l = q.matmul(&q.t().expect("t")).expect("qk");
            l.matmul(&q).expect("pv")
        })
    });
    let b_fc1 = r(&[4 * d]);
    g.bench_function("fused_linear_gelu_fc1", |b| {
        b.iter(|| dit::ops::linear(&x, &w_fc1, &b_fc1, true, true).expect("lin"))
    });
    let fc1_bf16 = Bf16Linear::new(&w_fc1).expect("bf16 weight");
    g.bench_function(
        format!("bf16_{}_linear_gelu_fc1", Bf16Kernel::auto()),
        |b| {
            b.iter(|| {
                fc1_bf16
                    .forward(&x, &b_fc1, Activation::GeluErf)
                    .expect("lin")
            })
        },
    );
    g.bench_function("candle_linear_gelu_fc1", |b| {
        b.iter(|| dit::ops::linear(&x, &w_fc1, &b_fc1, true, false).expect("lin"))
    });
    let qkv = r(&[8, t, 3 * d]);
    let qs = qkv.narrow(2, 0, d).expect("q");
    let ks = qkv.narrow(2, d, d).expect("k");
    let vs = qkv.narrow(2, 2 * d, d).expect("v");
    g.bench_function("fused_attention", |b| {
        b.iter(|| dit::ops::attention(&qs, &ks, &vs, h, Some(&bias)).expect("att"))
    });
    g.bench_function("bias_gelu_fc1", |b| {
        b.iter(|| dit::ops::bias_gelu(&xw, &b4, true).expect("g"))
    });
    g.bench_function("candle_gelu_erf_fc1", |b| {
        b.iter(|| xw.broadcast_add(&b4).expect("add").gelu_erf().expect("g"))
    });
    g.bench_function("bias_softmax", |b| {
        b.iter(|| dit::ops::attention_softmax(&logits, Some(&bias), true).expect("s"))
    });
    g.bench_function("ln_modulate", |b| {
        b.iter(|| dit::ops::ln_modulate(&x3, &sc, &sc, 1e-6, true).expect("ln"))
    });
    g.bench_function("split_heads_copy", |b| {
        b.iter(|| {
            x3.reshape((8, t, h, d / h))
                .and_then(|y| y.transpose(1, 2))
                .and_then(|y| y.contiguous())
                .expect("copy")
        })
    });
    g.bench_function("gate_residual", |b| {
        b.iter(|| (&x3 + x3.broadcast_mul(&sc.unsqueeze(1).expect("u")).expect("m")).expect("a"))
    });
    g.finish();
}

criterion_group!(benches, bench, ops);
criterion_main!(benches);
