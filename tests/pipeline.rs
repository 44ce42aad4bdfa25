//! The pipeline layer: model loading from both sources, per-request determinism, agreement with
//! a hand composition of the crates, and typed errors for bad requests.

mod common;

use std::path::Path;

use anyhow::Result;
use candle::{DType, Device, IndexOp, Tensor};
use common::{fixtures, scratch};
use motion_dit::diffusion::{Guided, NoiseSource, SamplerKind, SeededNoise};
use motion_dit::dit::Variant;
use motion_dit::motion_repr::Normalizer;
use motion_dit::{GenerateOptions, MotionModel, PipelineError, Request, TextInput, TextToMotion};

fn stats(dim: usize) -> Result<Normalizer> {
    let mean: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.37).sin() * 0.1).collect();
    let std: Vec<f32> = (0..dim).map(|i| 0.5 + (i % 7) as f32 * 0.05).collect();
    Ok(Normalizer::new(
        Tensor::from_vec(mean, dim, &Device::Cpu)?,
        Tensor::from_vec(std, dim, &Device::Cpu)?,
    )?)
}

/// A model folder with random weights and the 32-d test CLIP as its text encoder.
fn tiny_model_folder(dir: &Path, variant: Variant) -> Result<()> {
    let cfg = common::tiny_dit_config(variant, 32);
    common::random_model_folder(dir, cfg, 5, 1.0, 3, &stats(205)?)
}

fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
}

#[test]
fn a_motion_depends_only_on_its_own_request() -> Result<()> {
    let dir = scratch("determinism")?;
    for variant in [Variant::AdaLn, Variant::CrossAttention] {
        let folder = dir.join(variant.name());
        tiny_model_folder(&folder, variant)?;
        let pipe = TextToMotion::new(MotionModel::from_folder(&folder, &Device::Cpu)?);
        let batch = pipe.generate(&[
            Request::caption("a person walks forward", 12, 3),
            Request::caption("a person jumps", 9, 4),
            Request::caption("someone waves with the right hand", 12, 5),
        ])?;
        let alone =
            pipe.generate(&[Request::caption("someone waves with the right hand", 12, 5)])?;
        // One motion per network batch: bit for bit the same as sampling it alone.
        let one_by_one = pipe.generate_with(
            &[
                Request::caption("a person walks forward", 12, 3),
                Request::caption("someone waves with the right hand", 12, 5),
            ],
            &GenerateOptions {
                max_batch: 1,
                ..GenerateOptions::for_model(pipe.model())
            },
            &mut |_| {},
        )?;
        assert_eq!(max_diff(&one_by_one[1].features, &alone[0].features)?, 0.0);
        assert_eq!(batch.len(), 3);
        assert_eq!(
            [batch[0].frames(), batch[1].frames(), batch[2].frames()],
            [12, 9, 12]
        );
        // Batched with another motion of the same length: equal up to float rounding.
        let scale = alone[0].features.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(max_diff(&batch[2].features, &alone[0].features)? <= 1e-5 * scale);
        // Another seed gives another motion.
        let other =
            pipe.generate(&[Request::caption("someone waves with the right hand", 12, 6)])?;
        assert!(max_diff(&other[0].features, &alone[0].features)? > 1e-3);
        assert_eq!(batch[2].joints.dims(), &[12, 24, 3]);
        assert_eq!(batch[2].rotations.dims(), &[12, 22, 3, 3]);
    }
    Ok(())
}

#[test]
fn the_pipeline_equals_the_crates_composed_by_hand() -> Result<()> {
    let dir = scratch("by-hand")?;
    tiny_model_folder(&dir, Variant::AdaLn)?;
    let model = MotionModel::from_folder(&dir, &Device::Cpu)?;
    let caption = "a person runs in a circle";
    let (frames, seed, guidance) = (10, 42, 2.5);
    let opts = GenerateOptions {
        sampler: SamplerKind::Ddpm,
        steps: 4,
        guidance,
        max_batch: 8,
        grid: Default::default(),
    };
    // By hand: CLIP pooled feature -> guided DDPM from seeded noise -> unnormalise -> decode.
    let text = model
        .text_encoder()
        .ok_or_else(|| anyhow::anyhow!("no text encoder"))?
        .encode(&[caption])?;
    let cond = motion_dit::diffusion::Conditioning::Pooled(text.pooled.clone());
    let mut noise = SeededNoise::new(vec![seed]);
    let latents = noise.next(&[1, frames, 205], &Device::Cpu)?;
    let mask = Tensor::ones((1, frames), DType::F32, &Device::Cpu)?;
    let guided = Guided::new(model.dit(), guidance);
    let x = SamplerKind::Ddpm
        .build(4)
        .sample(&guided, latents, &cond, &mask, &mut noise)?;
    let raw = model.normalizer().unnormalize(&x)?.i(0)?;
    let (joints, _) = motion_dit::motion_repr::rifke::decode(&raw)?;

    let pipe = TextToMotion::new(model);
    let mut steps = Vec::new();
    let got = pipe.generate_with(
        &[Request::caption(caption, frames, seed)],
        &opts,
        &mut |p| steps.push(p),
    )?;
    assert_eq!(max_diff(&got[0].features, &raw)?, 0.0);
    assert_eq!(max_diff(&got[0].joints, &joints)?, 0.0);
    assert_eq!(steps.len(), 4);
    assert_eq!(steps.last().map(|p| (p.done, p.total)), Some((4, 4)));
    Ok(())
}

#[test]
fn a_reference_checkpoint_runs_on_precomputed_text_features() -> Result<()> {
    let model = MotionModel::load(
        fixtures().join("incontext_small.ckpt"),
        Some(&fixtures().join("standardization_tmr-rifke")),
        4,
        &Device::Cpu,
    )?;
    assert_eq!(model.config().variant, Variant::InContext);
    assert_eq!(model.config().latent_dim, 64);
    assert!(model.text_encoder().is_none());
    let pipe = TextToMotion::new(model);
    let feats = Tensor::randn(0f32, 1.0, (7, 512), &Device::Cpu)?;
    let opts = GenerateOptions {
        steps: 2,
        ..GenerateOptions::for_model(pipe.model())
    };
    let got = pipe.generate_with(
        &[
            Request::features(feats.clone(), 20, 1),
            Request::features(feats.i(6)?, 20, 1),
        ],
        &opts,
        &mut |_| {},
    )?;
    // A pooled model given [L, C] takes the end-of-text row: both requests are the same.
    assert_eq!(max_diff(&got[0].features, &got[1].features)?, 0.0);
    // A caption needs a text encoder, and the error says how to do without one.
    let err = pipe
        .generate(&[Request::caption("a person walks", 20, 0)])
        .expect_err("no text encoder");
    assert!(err.to_string().contains("--text-features"), "{err}");
    Ok(())
}

#[test]
fn bad_requests_are_typed_errors_naming_the_request() -> Result<()> {
    let dir = scratch("bad-requests")?;
    tiny_model_folder(&dir, Variant::AdaLn)?;
    let pipe = TextToMotion::new(MotionModel::from_folder(&dir, &Device::Cpu)?);
    let ok = Request::caption("a person walks", 10, 0);
    let cases: Vec<(Request, &str)> = vec![
        (Request::caption("   ", 10, 0), "empty"),
        (Request::caption("a person walks", 0, 0), "at least 1 frame"),
        (
            Request::caption("a person walks", 41, 0),
            "maximum of 40 frames",
        ),
        (
            Request::features(Tensor::zeros(31, DType::F32, &Device::Cpu)?, 10, 0),
            "[31]",
        ),
        (
            Request::features(Tensor::new(&[f32::NAN; 32], &Device::Cpu)?, 10, 0),
            "non-finite",
        ),
    ];
    for (bad, needle) in cases {
        let err = pipe
            .generate(&[ok.clone(), bad])
            .expect_err("bad request accepted");
        let msg = err.to_string();
        assert!(
            matches!(err, PipelineError::Request { index: 1, .. }),
            "{msg}"
        );
        assert!(msg.contains(needle), "{msg} lacks {needle:?}");
    }
    let zero_steps = GenerateOptions {
        steps: 0,
        ..GenerateOptions::for_model(pipe.model())
    };
    assert!(pipe.generate_with(&[ok], &zero_steps, &mut |_| {}).is_err());
    // Unconditional requests need no text at all.
    let u = pipe.generate(&[Request {
        text: TextInput::Unconditional,
        frames: 5,
        seed: 1,
        constraint: None,
    }])?;
    assert_eq!(u[0].frames(), 5);
    Ok(())
}

#[test]
fn model_folders_report_what_is_missing_or_inconsistent() -> Result<()> {
    let dir = scratch("bad-folder")?;
    let err = MotionModel::from_folder(dir.join("nope"), &Device::Cpu).expect_err("missing");
    assert!(err.to_string().contains("nope"), "{err}");
    tiny_model_folder(&dir, Variant::AdaLn)?;
    // Wrong variant in config.json: the weights do not fit, and the message says which keys.
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path)?;
    std::fs::write(&cfg_path, text.replace("\"adaln\"", "\"incontext\""))?;
    let err = MotionModel::from_folder(&dir, &Device::Cpu).expect_err("variant mismatch");
    assert!(err.to_string().contains("incontext"), "{err}");
    std::fs::write(&cfg_path, text.replace("\"fps\": 20.0", "\"fps\": -1.0"))?;
    let err = MotionModel::from_folder(&dir, &Device::Cpu).expect_err("bad fps");
    assert!(err.to_string().contains("fps"), "{err}");
    std::fs::write(&cfg_path, text)?;
    std::fs::remove_file(dir.join("stats.safetensors"))?;
    let err = MotionModel::from_folder(&dir, &Device::Cpu).expect_err("no stats");
    assert!(err.to_string().contains("stats.safetensors"), "{err}");
    Ok(())
}

/// Same seed, same sample for every sampler: the pipeline draws a request's latents from its
/// seed before the sampler runs, so with one step every deterministic sampler, on every grid,
/// lands on the network's prediction from the same latents (bit for bit), and every sampler
/// repeats itself exactly. A sampler sweep therefore compares samplers on the same noise.
#[test]
fn every_sampler_gets_the_same_latents_for_the_same_seed() -> Result<()> {
    use motion_dit::diffusion::TimeGrid;
    let dir = scratch("same-seed")?;
    tiny_model_folder(&dir, Variant::AdaLn)?;
    let pipe = TextToMotion::new(MotionModel::from_folder(&dir, &Device::Cpu)?);
    let requests = [
        Request::caption("a person walks forward", 10, 21),
        Request::caption("a person jumps", 10, 22),
    ];
    let base = GenerateOptions::for_model(pipe.model());
    let run = |sampler: SamplerKind, steps: usize, grid: TimeGrid| {
        pipe.generate_with(
            &requests,
            &GenerateOptions {
                sampler,
                steps,
                grid,
                ..base.clone()
            },
            &mut |_| {},
        )
    };
    let first = run(SamplerKind::Ddim, 1, TimeGrid::Uniform)?;
    assert!(max_diff(&first[0].features, &first[1].features)? > 0.0);
    for kind in SamplerKind::ALL {
        for grid in [
            TimeGrid::Uniform,
            TimeGrid::LogSnr,
            TimeGrid::Power { rho: 2.0 },
        ] {
            if !kind.is_stochastic() {
                // DDPM's first call is at its own clip_min (1e-9, the others 1e-5).
                let one = run(kind, 1, grid)?;
                for (a, b) in one.iter().zip(&first) {
                    assert_eq!(max_diff(&a.features, &b.features)?, 0.0, "{kind} {grid}");
                }
            }
            let (a, b) = (run(kind, 4, grid)?, run(kind, 4, grid)?);
            for (a, b) in a.iter().zip(&b) {
                assert_eq!(max_diff(&a.features, &b.features)?, 0.0, "{kind} {grid}");
            }
        }
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Editing: a prefix constraint reproduces the prefix in the first frames of the result (every
/// channel), keyframes reproduce their pose channels, for every sampler; a constraint of the
/// wrong length or a prefix as long as the motion is a typed error.
#[test]
fn constraints_fix_their_frames_with_every_sampler() -> Result<()> {
    use motion_dit::editing::{Channels, Constraint, Keyframe};
    let dir = scratch("editing")?;
    tiny_model_folder(&dir, Variant::AdaLn)?;
    let pipe = TextToMotion::new(MotionModel::from_folder(&dir, &Device::Cpu)?);
    let frames = 12;
    // A "motion" to continue: any finite raw features (here: an earlier generated motion).
    let source = pipe.generate(&[Request::caption("a person walks forward", frames, 1)])?;
    let prefix = source[0].features.narrow(0, 0, 4)?;
    let keys = [
        Keyframe {
            frame: 0,
            features: source[0].features.get(0)?,
            channels: Channels::All,
        },
        Keyframe {
            frame: frames - 1,
            features: source[0].features.get(6)?,
            channels: Channels::Pose,
        },
    ];
    let by_prefix = Constraint::prefix(&prefix, frames)?;
    let by_keys = Constraint::keyframes(frames, &keys)?;
    assert_eq!(by_prefix.fixed_frames()?, vec![0, 1, 2, 3]);
    assert_eq!(by_keys.fixed_frames()?, vec![0, frames - 1]);
    for sampler in SamplerKind::ALL {
        let opts = GenerateOptions {
            sampler,
            steps: 4,
            ..GenerateOptions::for_model(pipe.model())
        };
        for c in [&by_prefix, &by_keys] {
            let m = pipe.generate_with(
                &[
                    Request::caption("a person jumps", frames, 9).with_constraint(c.clone()),
                    Request::caption("a person jumps", frames, 9),
                ],
                &opts,
                &mut |_| {},
            )?;
            // Exact in normalised space; un-normalising rounds (features up to ~1e1).
            let err = c.max_error(&m[0].features)?;
            assert!(err < 1e-5, "{sampler}: constraint error {err}");
            // The unconstrained request of the same batch is not pulled to the target.
            assert!(c.max_error(&m[1].features)? > 1e-2, "{sampler}");
        }
    }
    // A floor path (facing along it, or keeping the model's heading), alone or with a prefix:
    // the pelvis follows it.
    use motion_dit::editing::Trajectory;
    let path = Trajectory::new(
        (0..frames)
            .map(|t| [0.05 * t as f32, 0.02 * (t * t) as f32 / frames as f32])
            .collect(),
    )?;
    for sampler in SamplerKind::ALL {
        let opts = GenerateOptions {
            sampler,
            steps: 4,
            ..GenerateOptions::for_model(pipe.model())
        };
        for c in [
            Constraint::trajectory(&path, frames)?,
            Constraint::trajectory(&path.clone().with_model_heading(), frames)?,
            by_prefix.clone().with_trajectory(&path)?,
        ] {
            let m = pipe.generate_with(
                &[Request::caption("a person walks", frames, 5).with_constraint(c)],
                &opts,
                &mut |_| {},
            )?;
            let err = path.max_error(&m[0].joints)?;
            assert!(err < 1e-4, "{sampler}: path error {err} m");
        }
    }
    // Errors: wrong length, prefix not shorter than the motion, keyframe out of range.
    let wrong = Request::caption("a person jumps", frames + 1, 9).with_constraint(by_prefix);
    assert!(matches!(
        pipe.generate(&[wrong]),
        Err(PipelineError::Request { index: 0, .. })
    ));
    assert!(Constraint::prefix(&source[0].features, frames).is_err());
    let far = Keyframe {
        frame: frames,
        ..keys[1].clone()
    };
    assert!(Constraint::keyframes(frames, &[far]).is_err());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// A timeline longer than the model's longest motion (40 frames for the tiny model) comes out
/// as one motion of the summed length, the same for the same seed, with every sampler; a
/// one-segment timeline that fits one window is plain generation of that caption.
#[test]
fn a_timeline_is_one_motion_sampled_jointly() -> Result<()> {
    use motion_dit::editing::Segment;
    let dir = scratch("timeline")?;
    tiny_model_folder(&dir, Variant::AdaLn)?;
    let pipe = TextToMotion::new(MotionModel::from_folder(&dir, &Device::Cpu)?);
    let seg = |c: &str, frames| Segment {
        text: TextInput::Caption(c.into()),
        frames,
    };
    let segments = [
        seg("a person walks forward", 30),
        seg("a person jumps", 25),
        seg("a person waves", 35),
    ];
    for sampler in SamplerKind::ALL {
        let opts = GenerateOptions {
            sampler,
            steps: 3,
            ..GenerateOptions::for_model(pipe.model())
        };
        let a = pipe.generate_timeline(&segments, 4, 8, &opts, &mut |_| {})?;
        let b = pipe.generate_timeline(&segments, 4, 8, &opts, &mut |_| {})?;
        assert_eq!(a.frames(), 90);
        assert_eq!(max_diff(&a.features, &b.features)?, 0.0, "{sampler}");
        assert!(a.caption.as_deref().is_some_and(|c| c.contains(" | ")));
        let v = a.features.flatten_all()?.to_vec1::<f32>()?;
        assert!(v.iter().all(|x| x.is_finite()), "{sampler}");
    }
    // A segment cut out is a motion of its own that decodes back to the same joints.
    let a = pipe.generate_timeline(
        &segments,
        4,
        8,
        &GenerateOptions::for_model(pipe.model()),
        &mut |_| {},
    )?;
    let part = a.part(30, 25, Some("a person jumps".into()))?;
    assert_eq!(part.frames(), 25);
    let (joints, _) = motion_dit::motion_repr::rifke::decode(&part.features)?;
    assert!(max_diff(&joints, &a.joints.narrow(0, 30, 25)?)? < 1e-4);
    assert!(max_diff(&part.joints, &joints)? < 1e-4);
    let parts = a.split(&[30, 25, 35])?;
    assert_eq!(
        parts.iter().map(|p| p.frames()).collect::<Vec<_>>(),
        [30, 25, 35]
    );
    assert_eq!(max_diff(&parts[1].features, &part.features)?, 0.0);
    assert!(a.split(&[30, 25]).is_err() && a.split(&[usize::MAX, 91]).is_err());
    for (start, frames) in [(0, 0), (80, 11), (usize::MAX, 2)] {
        assert!(matches!(
            a.part(start, frames, None),
            Err(PipelineError::Option { .. })
        ));
    }
    // One segment in one window: the window is the whole motion, weights 1: plain generation.
    let opts = GenerateOptions {
        steps: 3,
        ..GenerateOptions::for_model(pipe.model())
    };
    let one = pipe.generate_timeline(&[seg("a person jumps", 20)], 7, 8, &opts, &mut |_| {})?;
    let plain = pipe.generate_with(
        &[Request::caption("a person jumps", 20, 7)],
        &opts,
        &mut |_| {},
    )?;
    assert!(max_diff(&one.features, &plain[0].features)? < 1e-5);
    // Bad timelines are typed errors.
    assert!(
        pipe.generate_timeline(&[], 1, 8, &opts, &mut |_| {})
            .is_err()
    );
    assert!(
        pipe.generate_timeline(&[seg("a", 30), seg("b", 30)], 1, 1, &opts, &mut |_| {})
            .is_err()
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
