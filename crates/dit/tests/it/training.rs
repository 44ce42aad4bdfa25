//! Training mode: a short run on random data lowers the loss and every parameter receives a
//! gradient (i.e. the training path is differentiable end to end); training-mode randomness is
//! seeded and eval mode is deterministic.

use candle::{Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use diffusion::{Conditioning, DdpmLoss, Denoiser, lengths_to_mask};
use dit::{Dit, DitConfig, Variant};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

fn tiny(variant: Variant) -> DitConfig {
    let mut cfg = DitConfig::reference(variant);
    cfg.num_feats = 12;
    cfg.num_cond_feats = 16;
    cfg.num_frames = 16;
    cfg.latent_dim = 32;
    cfg.mlp_multiplier = 2;
    cfg.num_layers = 2;
    cfg.num_heads = 4;
    cfg.max_positions = 64;
    cfg
}

fn randn(shape: &[usize], rng: &mut StdRng) -> anyhow::Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

struct Data {
    x0: Tensor,
    cond: Conditioning,
    mask: Tensor,
}

fn data(cfg: &DitConfig, rng: &mut StdRng) -> anyhow::Result<Data> {
    let (b, f) = (4, cfg.num_frames);
    // A learnable signal: each sample is a fixed random pattern plus a small per-frame drift.
    let x0 = randn(&[b, f, cfg.num_feats], rng)?;
    let cond = if cfg.variant.sequential_condition() {
        Conditioning::Tokens {
            tokens: randn(&[b, 3, cfg.num_cond_feats], rng)?,
            mask: None,
        }
    } else {
        Conditioning::Pooled(randn(&[b, cfg.num_cond_feats], rng)?)
    };
    let mask = lengths_to_mask(&[16, 12, 9, 16], f, &Device::Cpu)?;
    Ok(Data { x0, cond, mask })
}

fn smoke(variant: Variant) -> anyhow::Result<()> {
    let cfg = tiny(variant);
    let (net, vars) = Dit::init_random(&cfg, 11, &Device::Cpu)?;
    let mut rng = StdRng::seed_from_u64(5);
    let d = data(&cfg, &mut rng)?;
    let loss = DdpmLoss::default();
    // A fixed evaluation loss (eval mode, fixed t and noise).
    let eval_t: Vec<usize> = vec![10, 40, 70, 95];
    let eval_noise = randn(d.x0.dims(), &mut rng)?;
    let eval = |net: &Dit| -> anyhow::Result<f32> {
        let out = loss.compute(net, &d.x0, &d.cond, &d.mask, &eval_t, &eval_noise)?;
        Ok(out.loss.to_scalar::<f32>()?)
    };
    let before = eval(&net)?;
    let mut opt = AdamW::new(
        vars.all_vars(),
        ParamsAdamW {
            lr: 3e-3,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let train = net.training(99);
    for step in 0..50 {
        let t_idx = loss.sample_t_idx(4, &mut rng);
        let noise = randn(d.x0.dims(), &mut rng)?;
        let out = loss.compute(&train, &d.x0, &d.cond, &d.mask, &t_idx, &noise)?;
        let grads = out.loss.backward()?;
        if step == 0 {
            let all = vars.data().lock().map_err(|_| anyhow::anyhow!("lock"))?;
            let mut silent = Vec::new();
            for (name, var) in all.iter() {
                let g = match grads.get(var.as_tensor()) {
                    // For packed q|k|v / k|v projections the query and key rows only get a
                    // gradient through the softmax: check the first block of rows alone.
                    Some(g) if name.ends_with("qkv.weight") || name.ends_with("kv.weight") => {
                        let rows = g.dim(0)? / if name.ends_with("qkv.weight") { 3 } else { 2 };
                        g.narrow(0, 0, rows)?.abs()?.sum_all()?.to_scalar::<f32>()?
                    }
                    Some(g) => g.abs()?.sum_all()?.to_scalar::<f32>()?,
                    None => 0.0,
                };
                if !(g > 0.0 && g.is_finite()) {
                    silent.push(name.clone());
                }
            }
            assert!(silent.is_empty(), "{variant}: no gradient for {silent:?}");
            assert!(all.len() > 20, "{variant}: only {} parameters", all.len());
        }
        opt.step(&grads)?;
    }
    let after = eval(&net)?;
    assert!(
        after < 0.8 * before,
        "{variant}: loss {before} -> {after} did not drop"
    );
    Ok(())
}

#[test]
fn adaln_trains_and_every_parameter_gets_a_gradient() -> anyhow::Result<()> {
    smoke(Variant::AdaLn)
}

#[test]
fn incontext_trains_and_every_parameter_gets_a_gradient() -> anyhow::Result<()> {
    smoke(Variant::InContext)
}

#[test]
fn cross_attention_trains_and_every_parameter_gets_a_gradient() -> anyhow::Result<()> {
    smoke(Variant::CrossAttention)
}

#[test]
fn training_mode_is_seeded_and_eval_mode_is_deterministic() -> anyhow::Result<()> {
    let cfg = tiny(Variant::InContext);
    let (net, _vars) = Dit::init_random(&cfg, 3, &Device::Cpu)?;
    let mut rng = StdRng::seed_from_u64(1);
    let d = data(&cfg, &mut rng)?;
    let gamma = Tensor::new(&[0.3f32, 0.5, 0.7, 0.9], &Device::Cpu)?;
    let x = (d.x0.clone() * 0.5)?;
    let run = |m: &dyn Denoiser| m.forward(&x, &gamma, &d.cond, &d.mask);
    let diff = |a: &Tensor, b: &Tensor| -> anyhow::Result<f32> {
        Ok((a - b)?.abs()?.sum_all()?.to_scalar::<f32>()?)
    };
    let e1 = run(&net)?;
    let e2 = run(&net)?;
    assert_eq!(diff(&e1, &e2)?, 0.0, "eval mode must be deterministic");
    let t1 = run(&net.training(7))?;
    let t2 = run(&net.training(7))?;
    let t3 = run(&net.training(8))?;
    assert_eq!(diff(&t1, &t2)?, 0.0, "same seed, same training output");
    assert!(diff(&t1, &t3)? > 0.0, "another seed draws other dropout");
    assert!(diff(&t1, &e1)? > 0.0, "training mode must differ from eval");
    // With all stochastic parts off, the training (differentiable) path equals the fused
    // inference path up to float rounding.
    let mut cfg0 = cfg.clone();
    (cfg0.dropout, cfg0.stochastic_depth, cfg0.label_dropout) = (0.0, 0.0, 0.0);
    let (net0, _v) = Dit::init_random(&cfg0, 3, &Device::Cpu)?;
    let a = run(&net0)?;
    let b = run(&net0.training(1))?;
    let scale = a.abs()?.max_all()?.to_scalar::<f32>()?;
    let worst = (&a - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(
        worst <= 1e-5 * scale.max(1.0),
        "train/eval paths differ by {worst:e}"
    );
    Ok(())
}

/// The fused training kernels (`kernels::grad`, the default of `Dit::training`) give the loss and
/// every parameter gradient of the plain differentiable candle ops (`with_fused_kernels(false)`)
/// within float tolerance, with the same dropout / stochastic-depth / label-dropout draws.
fn fused_training_matches_plain_ops(variant: Variant) -> anyhow::Result<()> {
    let cfg = tiny(variant);
    let (net, vars) = Dit::init_random(&cfg, 21, &Device::Cpu)?;
    let mut rng = StdRng::seed_from_u64(8);
    let d = data(&cfg, &mut rng)?;
    let loss = DdpmLoss::default();
    let t_idx = vec![5, 30, 60, 90];
    let noise = randn(d.x0.dims(), &mut rng)?;
    let step = |fused: bool| -> anyhow::Result<(f32, candle::backprop::GradStore)> {
        let train = net.training(4).with_fused_kernels(fused);
        let out = loss.compute(&train, &d.x0, &d.cond, &d.mask, &t_idx, &noise)?;
        Ok((out.loss.to_scalar::<f32>()?, out.loss.backward()?))
    };
    let (l_fused, g_fused) = step(true)?;
    let (l_plain, g_plain) = step(false)?;
    assert!(
        (l_fused - l_plain).abs() <= 1e-5 * l_plain.abs().max(1.0),
        "{variant}: loss {l_fused} (fused) vs {l_plain} (plain)"
    );
    let all = vars.data().lock().map_err(|_| anyhow::anyhow!("lock"))?;
    for (name, var) in all.iter() {
        let (Some(a), Some(b)) = (g_fused.get(var.as_tensor()), g_plain.get(var.as_tensor()))
        else {
            anyhow::bail!("{variant}: {name} lacks a gradient");
        };
        let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(
            diff <= 1e-4 * scale.max(1e-3),
            "{variant}: gradient of {name} differs by {diff:e} (scale {scale:e})"
        );
    }
    Ok(())
}

#[test]
fn adaln_fused_training_matches_plain_ops() -> anyhow::Result<()> {
    fused_training_matches_plain_ops(Variant::AdaLn)
}

#[test]
fn incontext_fused_training_matches_plain_ops() -> anyhow::Result<()> {
    fused_training_matches_plain_ops(Variant::InContext)
}

#[test]
fn cross_attention_fused_training_matches_plain_ops() -> anyhow::Result<()> {
    fused_training_matches_plain_ops(Variant::CrossAttention)
}
