//! Kernel contracts: every SIMD path of the fused CPU kernels (AVX-512, AVX2, generic; those
//! above what this CPU has fall back, so every machine checks the paths it can run, and the
//! generic path always) gives the result of the plain candle ops, whole forward passes agree
//! across paths, and shapes that do not fit are errors, not panics.

use candle::{DType, Device, Tensor};
use dit::ops;
use dit::simd::{SimdLevel, with_simd};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

fn randn(shape: &[usize], seed: u64) -> anyhow::Result<Tensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

fn max_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// Every kernel with the fused path (`fast = true`) on `level`.
fn fused(level: SimdLevel, seed: u64) -> anyhow::Result<Vec<(&'static str, Tensor)>> {
    with_simd(level, || kernels(true, seed))
}

fn kernels(fast: bool, seed: u64) -> anyhow::Result<Vec<(&'static str, Tensor)>> {
    // Odd sizes exercise the vector tails (16 and 8 lanes).
    let (b, n, d, nk, heads) = (2, 37, 40, 29, 4);
    let x = randn(&[b, n, d], seed)?;
    let x2 = x.reshape((b * n, d))?;
    let w = randn(&[3 * d, d], seed + 1)?.affine(0.2, 0.0)?;
    let bias = randn(&[3 * d], seed + 2)?;
    let res = randn(&[b * n, 3 * d], seed + 3)?;
    let scale = randn(&[b, d], seed + 4)?.affine(0.1, 0.0)?;
    let shift = randn(&[b, d], seed + 5)?;
    let k = randn(&[b, nk, d], seed + 6)?;
    let v = randn(&[b, nk, d], seed + 7)?;
    // A key mask as an additive bias: the last 5 keys of sample 1 masked out.
    let mut kb = vec![0f32; b * nk];
    for j in nk - 5..nk {
        kb[nk + j] = -1e9;
    }
    let key_bias = Tensor::from_vec(kb, (b, nk), &Device::Cpu)?;
    let logits = randn(&[b, heads, n, nk], seed + 8)?.affine(3.0, 0.0)?;
    let attention = if fast {
        ops::attention(&x, &k, &v, heads, Some(&key_bias))?
    } else {
        // The fused attention is taken for any f32 CPU tensor: the reference is composed here
        // from the differentiable ops.
        let dh = d / heads;
        let split = |t: &Tensor, len: usize| -> anyhow::Result<Tensor> {
            Ok(t.reshape((b, len, heads, dh))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let (q, kh, vh) = (split(&x, n)?, split(&k, nk)?, split(&v, nk)?);
        let s = (q.matmul(&kh.t()?)? * (1.0 / (dh as f64).sqrt()))?;
        ops::attention_softmax(&s, Some(&key_bias), false)?
            .matmul(&vh)?
            .transpose(1, 2)?
            .reshape((b, n, d))?
    };
    Ok(vec![
        ("linear", ops::linear(&x2, &w, &bias, false, fast)?),
        ("linear + gelu", ops::linear(&x2, &w, &bias, true, fast)?),
        (
            "linear_residual",
            ops::linear_residual(&x2, &w, &bias, &res, fast)?,
        ),
        ("bias_add", ops::bias_add(&x, &bias.narrow(0, 0, d)?, fast)?),
        (
            "bias_gelu",
            ops::bias_gelu(&x, &bias.narrow(0, 0, d)?, fast)?,
        ),
        ("gelu_erf", ops::gelu_erf(&x, fast)?),
        (
            "gated_residual",
            ops::gated_residual(&x, &x.sin()?, &scale, fast)?,
        ),
        (
            "ln_modulate",
            ops::ln_modulate(&x, &scale, &shift, 1e-6, fast)?,
        ),
        (
            "layer_norm",
            ops::layer_norm(&x, Some((&scale.get(0)?, &shift.get(0)?)), 1e-5, fast)?,
        ),
        (
            "attention_softmax",
            ops::attention_softmax(&logits, Some(&key_bias), fast)?,
        ),
        ("attention", attention),
    ])
}

#[test]
fn every_simd_path_of_every_kernel_matches_the_plain_ops() -> anyhow::Result<()> {
    let reference = kernels(false, 11)?;
    eprintln!("this CPU: {}", SimdLevel::detected());
    for level in SimdLevel::ALL {
        let got = fused(level, 11)?;
        for ((name, r), (_, g)) in reference.iter().zip(&got) {
            let err = max_diff(r, g)?;
            assert!(err < 2e-5, "{name} on {level}: {err} from the plain ops");
        }
    }
    // The paths agree with each other closely too.
    let generic = fused(SimdLevel::Generic, 11)?;
    for level in [SimdLevel::Avx2, SimdLevel::Avx512] {
        for ((name, a), (_, b)) in generic.iter().zip(&fused(level, 11)?) {
            let err = max_diff(a, b)?;
            eprintln!("{name}: {level} vs generic {err:.2e}");
            assert!(err < 2e-5, "{name}: {level} vs generic differ by {err}");
        }
    }
    Ok(())
}

#[test]
fn a_forward_pass_agrees_on_every_simd_path() -> anyhow::Result<()> {
    use dit::{Dit, DitConfig, Variant};
    for variant in [Variant::AdaLn, Variant::InContext, Variant::CrossAttention] {
        let mut cfg = DitConfig::reference(variant);
        (
            cfg.latent_dim,
            cfg.num_layers,
            cfg.num_heads,
            cfg.mlp_multiplier,
        ) = (48, 2, 4, 2);
        (cfg.num_cond_feats, cfg.num_frames, cfg.max_positions) = (24, 40, 64);
        let (net, _) = Dit::init_random(&cfg, 5, &Device::Cpu)?;
        let x = randn(&[3, 33, cfg.num_feats], 21)?;
        let gamma = Tensor::new(&[0.9f32, 0.5, 0.1], &Device::Cpu)?;
        let cond_tokens = randn(&[3, 7, 24], 22)?;
        let cond = if variant.sequential_condition() {
            diffusion::Conditioning::Tokens {
                mask: Some(Tensor::ones((3, 7), DType::F32, &Device::Cpu)?),
                tokens: cond_tokens,
            }
        } else {
            diffusion::Conditioning::Pooled(cond_tokens.mean(1)?)
        };
        let mut mask = vec![1f32; 3 * 33];
        mask[33 + 30..66].iter_mut().for_each(|m| *m = 0.0);
        let mask = Tensor::from_vec(mask, (3, 33), &Device::Cpu)?;
        use diffusion::Denoiser;
        let out = |level| with_simd(level, || net.forward(&x, &gamma, &cond, &mask));
        let generic = out(SimdLevel::Generic)?;
        for level in [SimdLevel::Avx2, SimdLevel::Avx512] {
            let err = max_diff(&generic, &out(level)?)?;
            assert!(
                err < 1e-4,
                "{variant:?}: {level} vs generic differ by {err}"
            );
        }
    }
    Ok(())
}

#[test]
fn shapes_that_do_not_fit_are_errors() -> anyhow::Result<()> {
    let z = |s: &[usize]| Tensor::zeros(s, DType::F32, &Device::Cpu);
    for fast in [true, false] {
        // Output width 0, input width 0, mismatched weight or bias.
        assert!(ops::linear(&z(&[4, 3])?, &z(&[0, 3])?, &z(&[0])?, false, fast).is_err());
        assert!(ops::linear(&z(&[4, 0])?, &z(&[2, 0])?, &z(&[2])?, true, fast).is_err());
        assert!(ops::linear(&z(&[4, 3])?, &z(&[2, 5])?, &z(&[2])?, false, fast).is_err());
        assert!(ops::linear(&z(&[4, 3])?, &z(&[2, 3])?, &z(&[3])?, false, fast).is_err());
        assert!(ops::linear(&z(&[2, 4, 3])?, &z(&[2, 3])?, &z(&[2])?, false, fast).is_err());
        assert!(
            ops::linear_residual(&z(&[4, 3])?, &z(&[2, 3])?, &z(&[2])?, &z(&[4, 3])?, fast)
                .is_err()
        );
        assert!(ops::bias_add(&z(&[2, 3])?, &z(&[4])?, fast).is_err());
        assert!(ops::bias_add(&z(&[2, 3])?, &z(&[0])?, fast).is_err());
        assert!(ops::bias_gelu(&z(&[2, 3])?, &z(&[2])?, fast).is_err());
        assert!(ops::gated_residual(&z(&[1, 2, 3])?, &z(&[1, 2, 4])?, &z(&[1, 3])?, fast).is_err());
        assert!(ops::gated_residual(&z(&[1, 2, 3])?, &z(&[1, 2, 3])?, &z(&[2, 3])?, fast).is_err());
        assert!(ops::ln_modulate(&z(&[1, 2, 0])?, &z(&[1, 0])?, &z(&[1, 0])?, 1e-6, fast).is_err());
        assert!(ops::ln_modulate(&z(&[1, 2, 3])?, &z(&[1, 3])?, &z(&[1, 2])?, 1e-6, fast).is_err());
        assert!(ops::layer_norm(&z(&[2, 3])?, Some((&z(&[2])?, &z(&[3])?)), 1e-5, fast).is_err());
        assert!(ops::layer_norm(&z(&[2, 0])?, None, 1e-5, fast).is_err());
        assert!(ops::attention_softmax(&z(&[1, 2, 3, 0])?, None, fast).is_err());
        assert!(ops::attention_softmax(&z(&[1, 2, 3, 4])?, Some(&z(&[1, 5])?), fast).is_err());
    }
    let q = z(&[2, 5, 8])?;
    let k = z(&[2, 6, 8])?;
    // Zero heads, heads not dividing D, zero keys, mismatched values or bias.
    assert!(ops::attention(&q, &k, &k, 0, None).is_err());
    assert!(ops::attention(&q, &k, &k, 3, None).is_err());
    assert!(ops::attention(&q, &z(&[2, 0, 8])?, &z(&[2, 0, 8])?, 2, None).is_err());
    assert!(ops::attention(&q, &k, &z(&[2, 5, 8])?, 2, None).is_err());
    assert!(ops::attention(&q, &k, &k, 2, Some(&z(&[2, 5])?)).is_err());
    assert!(ops::attention(&z(&[2, 5, 0])?, &z(&[2, 6, 0])?, &z(&[2, 6, 0])?, 1, None).is_err());
    // And the fitting shapes still work.
    assert_eq!(
        ops::attention(&q, &k, &k, 2, Some(&z(&[2, 6])?))?.dims(),
        &[2, 5, 8]
    );
    Ok(())
}
