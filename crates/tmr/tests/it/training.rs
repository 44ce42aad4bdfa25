//! TMR training on synthetic clusters: motion cluster k is paired with text cluster k.

use anyhow::Result;
use candle::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use tmr::train::{TmrBatch, TmrTrainConfig, TmrTrainer, info_nce, recall_at_1};
use tmr::{ActorEncoderConfig, TmrConfig};

const K: usize = 16;
const T: usize = 10;
const NM: usize = 12;
const L: usize = 6;
const NT: usize = 16;

/// Cluster prototypes: motion `[K][T*NM]`, text `[K][L*NT]`.
struct Clusters {
    motion: Vec<Vec<f32>>,
    text: Vec<Vec<f32>>,
}

fn randn(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

impl Clusters {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        Self {
            motion: (0..K).map(|_| randn(&mut rng, T * NM)).collect(),
            text: (0..K).map(|_| randn(&mut rng, L * NT)).collect(),
        }
    }

    /// A batch of samples of the given clusters: prototype + 0.3 noise, random valid lengths.
    fn batch(&self, ids: &[usize], rng: &mut StdRng) -> Result<TmrBatch> {
        let b = ids.len();
        let dev = Device::Cpu;
        let (mut m, mut mm, mut t, mut tm, mut p) = (vec![], vec![], vec![], vec![], vec![]);
        for &k in ids {
            let tl = rng.random_range(T / 2..=T);
            let ll = rng.random_range(2..=L);
            for (i, v) in self.motion[k].iter().enumerate() {
                let noise: f32 = StandardNormal.sample(rng);
                // Padded frames get garbage: the encoder must ignore them.
                m.push(if i / NM < tl {
                    v + 0.3 * noise
                } else {
                    10.0 * noise
                });
            }
            mm.extend((0..T).map(|i| (i < tl) as u8 as f32));
            for v in &self.text[k] {
                let noise: f32 = StandardNormal.sample(rng);
                t.push(v + 0.3 * noise);
            }
            tm.extend((0..L).map(|i| (i < ll) as u8 as f32));
            // Sentence embedding used for filtering: the cluster's (noisy) first token.
            for v in &self.text[k][..NT] {
                let noise: f32 = StandardNormal.sample(rng);
                p.push(v + 0.05 * noise);
            }
        }
        Ok(TmrBatch {
            motion: Tensor::from_vec(m, (b, T, NM), &dev)?,
            motion_mask: Tensor::from_vec(mm, (b, T), &dev)?,
            text: Tensor::from_vec(t, (b, L, NT), &dev)?,
            text_mask: Tensor::from_vec(tm, (b, L), &dev)?,
            text_pooled: Some(Tensor::from_vec(p, (b, NT), &dev)?),
        })
    }
}

fn small_config() -> TmrConfig {
    let motion = ActorEncoderConfig {
        nfeats: NM,
        latent_dim: 32,
        ff_size: 64,
        num_layers: 1,
        num_heads: 2,
        dropout: 0.1,
    };
    TmrConfig {
        text: ActorEncoderConfig {
            nfeats: NT,
            ..motion.clone()
        },
        motion,
    }
}

fn train_config(seed: u64) -> TmrTrainConfig {
    TmrTrainConfig {
        lr: 1e-3,
        seed,
        ..TmrTrainConfig::default()
    }
}

fn eval_r1(trainer: &TmrTrainer, clusters: &Clusters, rng: &mut StdRng) -> Result<f32> {
    let ids: Vec<usize> = (0..K).collect();
    let batch = clusters.batch(&ids, rng)?;
    let m = trainer
        .model()
        .encode_normalized_motion(&batch.motion, &batch.motion_mask)?;
    let t = trainer.model().encode_text(&batch.text, &batch.text_mask)?;
    Ok(recall_at_1(&m, &t)?)
}

#[test]
fn contrastive_training_raises_r1_far_above_chance() -> Result<()> {
    let clusters = Clusters::new(11);
    let mut trainer = TmrTrainer::new(&small_config(), train_config(12), &Device::Cpu)?;
    let mut eval_rng = StdRng::seed_from_u64(13);
    let before = eval_r1(&trainer, &clusters, &mut eval_rng)?;
    let mut rng = StdRng::seed_from_u64(14);
    let batches = std::iter::from_fn(|| {
        let ids: Vec<usize> = (0..32).map(|_| rng.random_range(0..K)).collect();
        Some(
            clusters
                .batch(&ids, &mut rng)
                .map_err(|e| tmr::TmrError::Config(e.to_string())),
        )
    });
    let losses = trainer.train(batches, 150)?;
    let first: f32 = losses[..10].iter().map(|l| l.nce).sum::<f32>() / 10.0;
    let last: f32 = losses[losses.len() - 10..]
        .iter()
        .map(|l| l.nce)
        .sum::<f32>()
        / 10.0;
    let after = eval_r1(&trainer, &clusters, &mut eval_rng)?;
    // Chance is 1/16 = 0.0625.
    assert!(
        after >= 0.75,
        "R@1 after training {after} (before {before}); nce {first} -> {last}"
    );
    assert!(
        last < 0.5 * first,
        "InfoNCE did not fall: {first} -> {last}"
    );
    Ok(())
}

#[test]
fn one_step_updates_every_parameter_and_is_deterministic() -> Result<()> {
    let clusters = Clusters::new(21);
    let ids: Vec<usize> = (0..8).collect();
    let batch = clusters.batch(&ids, &mut StdRng::seed_from_u64(22))?;
    let dir = std::env::temp_dir().join(format!("tmr-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut snapshots = vec![];
    for run in 0..2 {
        let mut trainer = TmrTrainer::new(&small_config(), train_config(23), &Device::Cpu)?;
        let (m0, t0) = (
            dir.join(format!("m0_{run}.safetensors")),
            dir.join(format!("t0_{run}.safetensors")),
        );
        trainer.save(&m0, &t0)?;
        let loss = trainer.step(&batch)?;
        let (m1, t1) = (
            dir.join(format!("m1_{run}.safetensors")),
            dir.join(format!("t1_{run}.safetensors")),
        );
        trainer.save(&m1, &t1)?;
        let before = candle::safetensors::load(&m0, &Device::Cpu)?;
        let after = candle::safetensors::load(&m1, &Device::Cpu)?;
        // Reference key names, and gradients reach every parameter (LayerNorms and tokens too:
        // candle's fused LayerNorm / softmax would silently pass no gradient).
        assert_eq!(
            before.len(),
            small_config().motion.state_dict_shapes().len()
        );
        for (k, v) in &before {
            let diff = (v - &after[k])?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff > 0.0, "parameter {k} did not move");
        }
        snapshots.push((loss, after));
    }
    assert_eq!(snapshots[0].0, snapshots[1].0, "same seed, same losses");
    for (k, v) in &snapshots[0].1 {
        let diff = (v - &snapshots[1].1[k])?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0, "{k} differs between identical runs");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn text_similarity_filter_removes_near_duplicate_negatives() -> Result<()> {
    // Two pairs whose captions are duplicates (rows 0 and 1) and whose latents are identical:
    // without the filter each is the other's hardest negative (loss >= ln 2); with it, the
    // loss is that of the remaining distinct pair structure.
    let dev = Device::Cpu;
    let m = Tensor::new(&[[1f32, 0.0], [1.0, 0.0], [0.0, 1.0]], &dev)?;
    let pooled = Tensor::new(&[[1f32, 0.0], [1.0, 0.01], [0.0, 1.0]], &dev)?;
    let unfiltered = info_nce(&m, &m, 0.1, Some(&pooled), None)?.to_scalar::<f32>()?;
    let filtered = info_nce(&m, &m, 0.1, Some(&pooled), Some(0.8))?.to_scalar::<f32>()?;
    // By hand: rows 0/1 have logits [10, 10, 0] -> CE = ln(2 + e^-10); row 2: [0, 0, 10] ->
    // ln(1 + 2e^-10). Filtered rows 0/1: [10, -1e9, 0] -> ln(1 + e^-10).
    let e = (-10f64).exp();
    let want_unf = (2.0 * (2.0 + e).ln() + (1.0 + 2.0 * e).ln()) / 3.0;
    let want_f = (2.0 * (1.0 + e).ln() + (1.0 + 2.0 * e).ln()) / 3.0;
    assert!(
        (unfiltered as f64 - want_unf).abs() < 1e-5,
        "{unfiltered} vs {want_unf}"
    );
    assert!(
        (filtered as f64 - want_f).abs() < 1e-5,
        "{filtered} vs {want_f}"
    );
    Ok(())
}

/// Output and weight gradients of `sum(forward_train(x, mask) * r)` for an encoder whose
/// weights are `weights` (name -> tensor) in `dtype`: `f32` runs the fused kernels, `f64` the
/// plain candle ops (the kernels' fallback), with the same dropout draws from `seed`.
fn train_grads(
    cfg: &ActorEncoderConfig,
    weights: &[(String, Tensor)],
    dtype: candle::DType,
    x: &Tensor,
    mask: &Tensor,
    seed: u64,
) -> Result<(Tensor, Vec<Tensor>)> {
    let varmap = candle_nn::VarMap::new();
    {
        let mut data = varmap
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        for (name, t) in weights {
            data.insert(name.clone(), candle::Var::from_tensor(&t.to_dtype(dtype)?)?);
        }
    }
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
    let enc = tmr::ActorEncoder::new(cfg, vb)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let out = enc.forward_train(&x.to_dtype(dtype)?, mask, &mut rng)?;
    let r = Tensor::from_vec(
        randn(&mut StdRng::seed_from_u64(99), out.elem_count()),
        out.shape(),
        &Device::Cpu,
    )?
    .to_dtype(dtype)?;
    let grads = (&out * &r)?.sum_all()?.backward()?;
    let data = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let gs = weights
        .iter()
        .map(|(name, _)| {
            let var = data
                .get(name)
                .ok_or_else(|| anyhow::anyhow!("{name} missing"))?;
            grads
                .get(var.as_tensor())
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("no gradient for {name}"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((out, gs))
}

#[test]
fn training_forward_on_the_fused_kernels_matches_plain_f64_ops_in_value_and_gradient() -> Result<()>
{
    // Two layers (the last one computes only the token rows), padded samples, with and
    // without dropout: the f32 fused kernels against the f64 plain ops, same draws.
    let mut cfg = ActorEncoderConfig {
        nfeats: 12,
        latent_dim: 16,
        ff_size: 24,
        num_layers: 2,
        num_heads: 4,
        dropout: 0.0,
    };
    let mut rng = StdRng::seed_from_u64(5);
    let weights: Vec<(String, Tensor)> = cfg
        .state_dict_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let n = shape.iter().product();
            let v: Vec<f32> = randn(&mut rng, n).iter().map(|z| 0.3 * z).collect();
            Ok((name, Tensor::from_vec(v, shape, &Device::Cpu)?))
        })
        .collect::<Result<_>>()?;
    let (b, t) = (3, 7);
    let x = Tensor::from_vec(randn(&mut rng, b * t * 12), (b, t, 12), &Device::Cpu)?;
    let lens = [7, 4, 1];
    let mask: Vec<f32> = lens
        .iter()
        .flat_map(|&n| (0..t).map(move |i| (i < n) as u8 as f32))
        .collect();
    let mask = Tensor::from_vec(mask, (b, t), &Device::Cpu)?;
    for p in [0.0, 0.2] {
        cfg.dropout = p;
        let (out32, g32) = train_grads(&cfg, &weights, candle::DType::F32, &x, &mask, 11)?;
        let (out64, g64) = train_grads(&cfg, &weights, candle::DType::F64, &x, &mask, 11)?;
        let diff = |a: &Tensor, b: &Tensor| -> Result<(f64, f64)> {
            let (a, b) = (
                a.to_dtype(candle::DType::F64)?,
                b.to_dtype(candle::DType::F64)?,
            );
            let d = (&a - &b)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f64>()?;
            let s = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
            Ok((d, s))
        };
        let (d, s) = diff(&out32, &out64)?;
        assert!(d < 1e-5 * s.max(1.0), "dropout {p}: output off by {d:e}");
        for ((name, _), (a, b)) in weights.iter().zip(g32.iter().zip(&g64)) {
            let (d, s) = diff(a, b)?;
            assert!(
                d <= 1e-4 * s.max(1e-3),
                "dropout {p}: d {name} off by {d:e} (scale {s:e})"
            );
        }
        if p == 0.0 {
            // Without dropout the training forward is the inference forward.
            let varmap = candle_nn::VarMap::new();
            {
                let mut data = varmap
                    .data()
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?;
                for (name, t) in &weights {
                    data.insert(name.clone(), candle::Var::from_tensor(t)?);
                }
            }
            let enc = tmr::ActorEncoder::new(
                &cfg,
                candle_nn::VarBuilder::from_varmap(&varmap, candle::DType::F32, &Device::Cpu),
            )?;
            let (d, s) = diff(&enc.forward(&x, &mask)?, &out32)?;
            assert!(
                d < 1e-5 * s.max(1.0),
                "inference vs training forward: {d:e}"
            );
        }
    }
    Ok(())
}
