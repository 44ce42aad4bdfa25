//! Training utilities: AdamW against hand-computed steps and candle's AdamW, the learning-rate
//! curve, EMA, gradient clipping, and checkpoints (bit-exact resume, typed errors).

use std::path::PathBuf;

use anyhow::Result;
use candle::{DType, Device, Module, Tensor};
use candle_nn::{Init, Linear, Optimizer, VarBuilder, VarMap};
use diffusion::{
    AdamW, AdamWConfig, Conditioning, DdpmLoss, Denoiser, DiffusionError, Ema, EmaWarmup,
    LossReduction, TrainConfig, Trainer, WarmupCosine, clip_grad_norm, lengths_to_mask, named_vars,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

/// Overwrites variable `name` of `vm` in place.
fn set(vm: &VarMap, name: &str, t: Tensor) -> Result<()> {
    let var = named_vars(vm)
        .into_iter()
        .find(|(n, _)| n == name)
        .ok_or_else(|| anyhow::anyhow!("no var {name}"))?;
    var.1.set(&t)?;
    Ok(())
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("diffusion-it-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// PyTorch AdamW (`_single_tensor_adam`, decoupled decay) evaluated by hand in f64.
fn torch_adamw_f64(p: &mut [f64], m: &mut [f64], v: &mut [f64], g: &[f64], t: i32, lr: f64) {
    let c = AdamWConfig::reference();
    for i in 0..p.len() {
        p[i] *= 1.0 - lr * c.weight_decay;
        m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g[i];
        v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g[i] * g[i];
        let m_hat = m[i] / (1.0 - c.beta1.powi(t));
        let v_hat_sqrt = v[i].sqrt() / (1.0 - c.beta2.powi(t)).sqrt();
        p[i] -= lr * m_hat / (v_hat_sqrt + c.eps);
    }
}

#[test]
fn adamw_matches_hand_computed_pytorch_steps_and_candle_adamw() -> Result<()> {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let w = vm.get(3, "w", Init::Const(0.0), DType::F32, &dev)?;
    let init = [0.5f32, -1.25, 2.0];
    set(&vm, "w", Tensor::new(&init, &dev)?)?;
    let vm_candle = VarMap::new();
    let wc = vm_candle.get(3, "w", Init::Const(0.0), DType::F32, &dev)?;
    set(&vm_candle, "w", Tensor::new(&init, &dev)?)?;
    let cfg = AdamWConfig::reference();
    let mut ours = AdamW::new(&vm, cfg)?;
    let mut candle_opt = candle_nn::AdamW::new(
        vm_candle.all_vars(),
        candle_nn::ParamsAdamW {
            lr: cfg.lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
        },
    )?;
    let mut p: Vec<f64> = init.iter().map(|&x| x as f64).collect();
    let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
    // Gradients of loss = sum(c_t * w): g = c_t, a different c_t per step (incl. a sign flip).
    let cs = [
        [1.0f32, -2.0, 0.5],
        [0.3, 0.1, -4.0],
        [-1.0, 2.5, 0.0],
        [0.2, -0.2, 1e-3],
    ];
    let lr = 1e-2; // large enough for the steps to be visible in f32
    for (t, c) in cs.iter().enumerate() {
        let ct = Tensor::new(c, &dev)?;
        let grads = (&w * &ct)?.sum_all()?.backward()?;
        ours.step(&grads, lr)?;
        candle_opt.set_learning_rate(lr);
        candle_opt.backward_step(&(&wc * &ct)?.sum_all()?)?;
        let g: Vec<f64> = c.iter().map(|&x| x as f64).collect();
        torch_adamw_f64(&mut p, &mut m, &mut v, &g, t as i32 + 1, lr);
        let got = w.to_vec1::<f32>()?;
        let cand = wc.to_vec1::<f32>()?;
        for i in 0..3 {
            // f32 rounding of the parameters (~1.2e-7 relative) plus f32 moments.
            let tol = 2e-6 * p[i].abs().max(1.0);
            assert!(
                (got[i] as f64 - p[i]).abs() < tol,
                "step {t} [{i}]: {} vs {}",
                got[i],
                p[i]
            );
            assert!((cand[i] as f64 - p[i]).abs() < tol, "candle step {t} [{i}]");
        }
    }
    assert_eq!(ours.step_count(), 4);
    Ok(())
}

#[test]
fn warmup_cosine_learning_rate_at_chosen_steps() {
    let s = WarmupCosine::reference(1e-4, 105_000);
    // Hand-derived: linear warm-up over 5000 steps, then 0.5 (1 + cos(pi p)) over 100000.
    assert_eq!(s.lr(0), 0.0);
    assert_eq!(s.lr(1000), 2e-5);
    assert_eq!(s.lr(5000), 1e-4);
    assert!((s.lr(55_000) - 0.5e-4).abs() < 1e-18); // p = 1/2: cos = 0
    let q = 0.5 * (1.0 + (std::f64::consts::PI * 0.25).cos()) * 1e-4; // p = 1/4
    assert!((s.lr(30_000) - q).abs() < 1e-18);
    assert!(s.lr(105_000).abs() < 1e-20);
    assert!(s.lr(200_000).abs() < 1e-20); // stays at the floor
    let floor = WarmupCosine {
        min_ratio: 0.1,
        ..s
    };
    assert!((floor.lr(105_000) - 1e-5).abs() < 1e-18);
}

#[test]
fn ema_is_a_lerp_towards_the_weights() -> Result<()> {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    vm.get(2, "w", Init::Const(1.0), DType::F32, &dev)?;
    let vars = named_vars(&vm);
    let mut ema = Ema::new(&vars, 0.9)?;
    set(&vm, "w", Tensor::new(&[2f32, -1.0], &dev)?)?;
    ema.update(&vars)?;
    set(&vm, "w", Tensor::new(&[3f32, 0.0], &dev)?)?;
    ema.update(&vars)?;
    // By hand: e1 = 1 + 0.1 (2 - 1) = 1.1, 1 + 0.1 (-1 - 1) = 0.8;
    //          e2 = 1.1 + 0.1 (3 - 1.1) = 1.29, 0.8 + 0.1 (0 - 0.8) = 0.72.
    let (_, e) = ema
        .weights()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no ema"))?;
    let e = e.to_vec1::<f32>()?;
    assert!(
        (e[0] - 1.29).abs() < 1e-6 && (e[1] - 0.72).abs() < 1e-6,
        "{e:?}"
    );
    Ok(())
}

#[test]
fn ema_pytorch_warmup_copies_then_ramps_the_decay() -> Result<()> {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    vm.get(1, "w", Init::Const(0.0), DType::F32, &dev)?;
    let vars = named_vars(&vm);
    let warm = EmaWarmup {
        update_after_step: 2,
        inv_gamma: 1.0,
        power: 1.0,
    };
    let mut ema = Ema::new(&vars, 0.9)?.with_warmup(Some(warm));
    // Updates 1, 2: copy. Update 3: e = 0 -> decay 0 (copy). Update 4: e = 1 ->
    // 1 - 2^-1 = 0.5. Update 5: e = 2 -> 1 - 3^-1 = 0.667. Large e: capped at beta = 0.9.
    let mut decays = Vec::new();
    for (k, p) in [1f32, 2.0, 3.0, 5.0, 8.0].iter().enumerate() {
        decays.push(ema.next_decay());
        set(&vm, "w", Tensor::new(&[*p], &dev)?)?;
        ema.update(&vars)?;
        let e = ema
            .weights()
            .next()
            .map(|(_, t)| t.to_vec1::<f32>())
            .transpose()?;
        let e = e.unwrap_or_default()[0];
        // By hand: 1, 2, 3, then 3 + 0.5 (5 - 3) = 4, then 4 + (1/3)(8 - 4) = 5.3333.
        let expected = [1.0f32, 2.0, 3.0, 4.0, 16.0 / 3.0][k];
        assert!(
            (e - expected).abs() < 1e-6,
            "update {}: {e} vs {expected}",
            k + 1
        );
    }
    assert_eq!(decays[..4], [None, None, Some(0.0), Some(0.5)]);
    let ema = Ema::new(&vars, 0.9)?.with_warmup(Some(warm));
    let mut late = ema.clone();
    late.restore(1000, |_, t| Ok(t.clone()))?;
    assert_eq!(late.next_decay(), Some(0.9));
    Ok(())
}

#[test]
fn gradient_clipping_rescales_to_the_max_norm() -> Result<()> {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let a = vm.get(1, "a", Init::Const(0.0), DType::F32, &dev)?;
    let b = vm.get(1, "b", Init::Const(0.0), DType::F32, &dev)?;
    // grads (3, 4): norm 5.
    let loss = ((a.affine(3.0, 0.0)? + b.affine(4.0, 0.0)?)?).sum_all()?;
    let mut grads = loss.backward()?;
    let vars = named_vars(&vm);
    let norm = clip_grad_norm(&mut grads, &vars, 1.0)?;
    assert!((norm - 5.0).abs() < 1e-9);
    let ga = grads.get(&a).map(|g| g.to_vec1::<f32>()).transpose()?;
    let gb = grads.get(&b).map(|g| g.to_vec1::<f32>()).transpose()?;
    let k = 1.0 / (5.0 + 1e-6);
    assert!((ga.unwrap_or_default()[0] as f64 - 3.0 * k).abs() < 1e-6);
    assert!((gb.unwrap_or_default()[0] as f64 - 4.0 * k).abs() < 1e-6);
    Ok(())
}

/// A tiny x0 denoiser: `x0 = L2(tanh(L1([x, gamma])))`.
struct Tiny {
    l1: Linear,
    l2: Linear,
}

const D: usize = 4;
const F: usize = 5;
const B: usize = 3;

impl Tiny {
    fn new(vm: &VarMap, dev: &Device) -> Result<Self> {
        let vb = VarBuilder::from_varmap(vm, DType::F32, dev);
        Ok(Self {
            l1: candle_nn::linear(D + 1, 8, vb.pp("l1"))?,
            l2: candle_nn::linear(8, D, vb.pp("l2"))?,
        })
    }
}

impl Denoiser for Tiny {
    fn forward(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _c: &Conditioning,
        _m: &Tensor,
    ) -> candle::Result<Tensor> {
        let (b, f, _) = x.dims3()?;
        let g = gamma.reshape((b, 1, 1))?.broadcast_as((b, f, 1))?;
        let h = Tensor::cat(&[x, &g], 2)?;
        self.l2.forward(&self.l1.forward(&h)?.tanh()?)
    }
}

fn seeded_init(vm: &VarMap, seed: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    for (_, v) in named_vars(vm) {
        let n = v.elem_count();
        let data: Vec<f32> = (0..n)
            .map(|_| 0.5 * rng.sample::<f32, _>(StandardNormal))
            .collect();
        v.set(&Tensor::from_vec(data, v.shape(), v.device())?)?;
    }
    Ok(())
}

/// One training step whose random draws all come from `trainer.rng`.
fn step(trainer: &mut Trainer, model: &Tiny, dev: &Device) -> Result<()> {
    let loss_fn = DdpmLoss {
        reduction: LossReduction::ValidFrames,
        ..DdpmLoss::default()
    };
    let mut rng = trainer.rng(0);
    let x0: Vec<f32> = (0..B * F * D)
        .map(|i| (i % 7) as f32 * 0.3 + 0.1 * rng.sample::<f32, _>(StandardNormal))
        .collect();
    let x0 = Tensor::from_vec(x0, (B, F, D), dev)?;
    let noise = loss_fn.sample_noise(&[B, F, D], dev, &mut rng)?;
    let t_idx = loss_fn.sample_t_idx(B, &mut rng);
    let mask = lengths_to_mask(&[5, 3, 1], F, dev)?;
    let out = loss_fn.compute(model, &x0, &Conditioning::None, &mask, &t_idx, &noise)?;
    trainer.train_step(&out.loss)?;
    Ok(())
}

fn config() -> TrainConfig {
    let mut c = TrainConfig::reference(10);
    c.adamw.lr = 1e-2;
    c.lr = WarmupCosine {
        peak: 1e-2,
        warmup_steps: 2,
        total_steps: 10,
        min_ratio: 0.0,
    };
    c.ema_beta = 0.9;
    c.grad_clip = Some(0.5);
    c.seed = 77;
    c
}

fn state_bits(trainer: &Trainer) -> Result<Vec<(String, Vec<u32>)>> {
    let bits = |t: &Tensor| -> Result<Vec<u32>> {
        Ok(t.flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(f32::to_bits)
            .collect())
    };
    let mut out = Vec::new();
    for (n, t) in trainer.ema().weights() {
        out.push((format!("ema.{n}"), bits(t)?));
    }
    for (n, m, v) in trainer.optimizer().moments() {
        out.push((format!("m.{n}"), bits(m)?));
        out.push((format!("v.{n}"), bits(v)?));
    }
    Ok(out)
}

fn weight_bits(vm: &VarMap) -> Result<Vec<(String, Vec<u32>)>> {
    named_vars(vm)
        .into_iter()
        .map(|(n, v)| {
            Ok((
                n,
                v.flatten_all()?
                    .to_vec1::<f32>()?
                    .into_iter()
                    .map(f32::to_bits)
                    .collect(),
            ))
        })
        .collect()
}

#[test]
fn resume_from_a_checkpoint_is_bit_identical_to_an_uninterrupted_run() -> Result<()> {
    let dev = Device::Cpu;
    // Uninterrupted: 6 steps.
    let vm_a = VarMap::new();
    let model_a = Tiny::new(&vm_a, &dev)?;
    seeded_init(&vm_a, 5)?;
    let mut tr_a = Trainer::new(&vm_a, config())?;
    for _ in 0..6 {
        step(&mut tr_a, &model_a, &dev)?;
    }
    // Interrupted: 3 steps, save, drop everything ("kill"), resume into a model initialised
    // differently, 3 more steps.
    let dir = scratch_dir("resume");
    let stem = dir.join("ckpt");
    {
        let vm_b = VarMap::new();
        let model_b = Tiny::new(&vm_b, &dev)?;
        seeded_init(&vm_b, 5)?;
        let mut tr_b = Trainer::new(&vm_b, config())?;
        for _ in 0..3 {
            step(&mut tr_b, &model_b, &dev)?;
        }
        tr_b.save(&stem, &serde_json::json!({"model": "tiny"}))?;
    }
    let vm_c = VarMap::new();
    let model_c = Tiny::new(&vm_c, &dev)?;
    seeded_init(&vm_c, 999)?;
    let (mut tr_c, extra) = Trainer::resume(&vm_c, &stem)?;
    assert_eq!(extra["model"], "tiny");
    assert_eq!(tr_c.step(), 3);
    for _ in 0..3 {
        step(&mut tr_c, &model_c, &dev)?;
    }
    assert_eq!(tr_c.step(), 6);
    assert_eq!(weight_bits(&vm_a)?, weight_bits(&vm_c)?, "weights");
    assert_eq!(state_bits(&tr_a)?, state_bits(&tr_c)?, "EMA and moments");
    // The run really trained: weights moved away from the seeded initialisation.
    let vm_init = VarMap::new();
    let _ = Tiny::new(&vm_init, &dev)?;
    seeded_init(&vm_init, 5)?;
    assert_ne!(weight_bits(&vm_init)?, weight_bits(&vm_a)?);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_save_cut_short_before_its_json_resumes_at_the_previous_step() -> Result<()> {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let model = Tiny::new(&vm, &dev)?;
    seeded_init(&vm, 2)?;
    let mut tr = Trainer::new(&vm, config())?;
    step(&mut tr, &model, &dev)?;
    let dir = scratch_dir("cut-short");
    let stem = dir.join("ckpt");
    tr.save(&stem, &serde_json::Value::Null)?;
    let saved = state_bits(&tr)?;
    // A kill between the two renames of the next save: its tensor file is in place (here
    // half-written as well), the JSON still names step 1's; an older-format file lies around.
    step(&mut tr, &model, &dev)?;
    std::fs::write(dir.join("ckpt-00000002.safetensors"), b"half a file")?;
    std::fs::write(dir.join("ckpt.safetensors"), b"from an older version")?;
    let (back, _) = Trainer::resume(&vm, &stem)?;
    assert_eq!(back.step(), 1);
    assert_eq!(state_bits(&back)?, saved, "step 1's state, intact");
    // The next complete save commits step 2 and removes every other tensor file.
    tr.save(&stem, &serde_json::Value::Null)?;
    let mut files: Vec<String> = std::fs::read_dir(&dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    files.sort();
    assert_eq!(files, ["ckpt-00000002.safetensors", "ckpt.json"]);
    assert_eq!(Trainer::resume(&vm, &stem)?.0.step(), 2);
    // A JSON naming a file outside its folder is refused.
    let json = dir.join("ckpt.json");
    let text = std::fs::read_to_string(&json)?;
    std::fs::write(
        &json,
        text.replace("ckpt-00000002.safetensors", "../x.safetensors"),
    )?;
    let err = Trainer::resume(&vm, &stem).expect_err("a path is not a file name");
    assert!(
        matches!(err, DiffusionError::CorruptCheckpoint { .. }),
        "{err}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn truncated_or_mismatched_checkpoints_give_typed_errors() -> Result<()> {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let model = Tiny::new(&vm, &dev)?;
    seeded_init(&vm, 1)?;
    let mut tr = Trainer::new(&vm, config())?;
    step(&mut tr, &model, &dev)?;
    let dir = scratch_dir("corrupt");
    let stem = dir.join("ckpt");
    tr.save(&stem, &serde_json::Value::Null)?;
    let st = dir.join(format!("ckpt-{:08}.safetensors", tr.step()));
    let full = std::fs::read(&st)?;

    std::fs::write(&st, &full[..full.len() / 2])?;
    let err = Trainer::resume(&vm, &stem).expect_err("truncated tensors must fail");
    assert!(
        matches!(err, DiffusionError::CorruptCheckpoint { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("ckpt-0000000"), "{err}");

    // Same length, one flipped byte in the data.
    let mut flipped = full.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x55;
    std::fs::write(&st, &flipped)?;
    let err = Trainer::resume(&vm, &stem).expect_err("corrupt tensors must fail");
    assert!(
        matches!(err, DiffusionError::CorruptCheckpoint { .. }),
        "{err}"
    );

    std::fs::write(&st, &full)?;
    let json = dir.join("ckpt.json");
    let text = std::fs::read(&json)?;
    std::fs::write(&json, &text[..text.len() / 2])?;
    let err = Trainer::resume(&vm, &stem).expect_err("truncated JSON must fail");
    assert!(matches!(err, DiffusionError::Json { .. }), "{err}");
    std::fs::write(&json, &text)?;

    // A model with an extra variable does not fit the checkpoint: the key is named.
    let vm_other = VarMap::new();
    let _ = Tiny::new(&vm_other, &dev)?;
    vm_other.get(2, "extra.weight", Init::Const(0.0), DType::F32, &dev)?;
    let err = Trainer::resume(&vm_other, &stem).expect_err("extra variable must fail");
    assert!(
        matches!(&err, DiffusionError::CheckpointMismatch { key, .. } if key == "weights.extra.weight"),
        "{err}"
    );
    // The intact checkpoint still loads.
    Trainer::resume(&vm, &stem)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_parameter_without_gradient_is_a_typed_error() -> Result<()> {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let used = vm.get(2, "used", Init::Const(1.0), DType::F32, &dev)?;
    vm.get(2, "unused", Init::Const(1.0), DType::F32, &dev)?;
    let mut tr = Trainer::new(&vm, config())?;
    let err = tr
        .train_step(&used.sqr()?.sum_all()?)
        .expect_err("unused parameter must be reported");
    assert!(
        matches!(&err, DiffusionError::MissingGradient { name } if name == "unused"),
        "{err}"
    );
    Ok(())
}
