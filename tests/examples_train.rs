//! End-to-end checks of the `train` and `train_tmr` examples on a tiny synthetic dataset: the
//! model folder loads and generates, `loss.csv` parses, `--resume` continues bit for bit, the
//! TMR files load with the reference loader, and bad input gives a one-line error, never a
//! panic.
//!
//! The example binaries are run as built in `target/<profile>/examples/`: plain `cargo test`
//! builds them; with a target filter (`cargo test --test examples_train`) build them first with
//! `cargo build --example train --example train_tmr`.

mod common;

use std::path::Path;

use anyhow::{Result, ensure};
use candle::{Device, Tensor};
use common::{StandInClip, fails_cleanly, run_ok, s, scratch, train_args};
use motion_data::synth::split_ids;
use motion_data::{FEATURE_DIM, TEXT_DIM, write_split};
use motion_dit::{GenerateOptions, MotionModel, Request, TextToMotion};

/// Frames per synthetic motion (the synthetic set's shortest motion is 40 frames).
const FRAMES: usize = 40;

/// 40 synthetic motions cut to their first 40 frames, split 32/4/4, in the reference layout.
fn dataset(dir: &Path) -> Result<()> {
    dataset_with(dir, false)
}

/// [`dataset`], optionally with stand-in `caption_clip/` features (seeded values, 3 to 7
/// tokens per caption) in place of real CLIP ones.
fn dataset_with(dir: &Path, clip: bool) -> Result<()> {
    let clip = clip.then_some(StandInClip {
        tokens: |i, c| 3 + (i + c) % 5,
        value: |i, c, k| (((k + c) * 7919 + i * 104729) % 1000) as f32 / 500.0 - 1.0,
    });
    common::write_synth_motions(dir, 40, |_| FRAMES, clip)?;
    for (split, ids) in split_ids(40, 0) {
        write_split(dir, split, &ids)?;
    }
    Ok(())
}

/// The `step,epoch,loss,lr` columns of a `loss.csv` (not the timing column).
fn loss_rows(path: &Path) -> Result<Vec<(u64, u64, f64, f64)>> {
    let text = std::fs::read_to_string(path)?;
    let mut lines = text.lines();
    ensure!(
        lines.next() == Some("step,epoch,loss,lr,steps_per_s"),
        "bad header in {text}"
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            ensure!(f.len() == 5, "row {l:?} has {} fields", f.len());
            let loss: f64 = f[2].parse()?;
            ensure!(loss.is_finite() && loss > 0.0, "loss {loss}");
            Ok((f[0].parse()?, f[1].parse()?, loss, f[3].parse()?))
        })
        .collect()
}

#[test]
fn train_writes_a_loadable_model_and_resumes_bit_exactly() -> Result<()> {
    let dir = scratch("dit")?;
    let data = dir.join("data");
    dataset(&data)?;
    let (straight, resumed) = (dir.join("straight"), dir.join("resumed"));
    let base = |out: &Path| {
        let extra = [
            "--steps",
            "8",
            "--batch-size",
            "8",
            "--sample-steps",
            "3",
            "--seed",
            "3",
        ];
        train_args("tiny", &data, out, &extra)
    };
    let args = |v: &[String], extra: &[&str]| {
        let mut all: Vec<String> = v.to_vec();
        all.extend(extra.iter().map(|a| a.to_string()));
        all
    };
    run_ok("train", &base(&straight))?;
    // Interrupted after step 5 (mid-epoch 2), then resumed to the end.
    let stopped = run_ok("train", &args(&base(&resumed), &["--stop-after", "5"]))?;
    ensure!(stopped.contains("stopped after step 5"), "{stopped}");
    ensure!(loss_rows(&resumed.join("loss.csv"))?.len() == 5);
    run_ok("train", &args(&base(&resumed), &["--resume"]))?;

    let (a, b) = (
        loss_rows(&straight.join("loss.csv"))?,
        loss_rows(&resumed.join("loss.csv"))?,
    );
    ensure!(
        a.len() == 8 && a.iter().map(|r| r.0).eq(1..=8),
        "steps {a:?}"
    );
    ensure!(
        a == b,
        "a resumed run differs from a straight one:\n{a:?}\n{b:?}"
    );
    let weights = |d: &Path| std::fs::read(d.join("model").join("model.safetensors"));
    ensure!(
        weights(&straight)? == weights(&resumed)?,
        "EMA weights differ after resume"
    );
    // The validation sample: the first val motion's length (40 frames), one GIF frame each.
    let gif = std::fs::File::open(straight.join("samples").join("step_0000008.gif"))?;
    let mut decoder = gif::DecodeOptions::new().read_info(gif)?;
    let mut gif_frames = 0;
    while decoder.read_next_frame()?.is_some() {
        gif_frames += 1;
    }
    ensure!(gif_frames == FRAMES, "{gif_frames} GIF frames");
    ensure!(
        straight
            .join("model")
            .join("text_encoder")
            .join("tokenizer.json")
            .is_file()
    );

    let model = MotionModel::from_folder(straight.join("model"), &Device::Cpu)?;
    ensure!(model.max_frames() == FRAMES && model.text_encoder().is_some());
    let pipeline = TextToMotion::new(model);
    let opts = GenerateOptions {
        steps: 4,
        ..GenerateOptions::for_model(pipeline.model())
    };
    let motions = pipeline.generate_with(
        &[Request::caption("a person walks forward", 20, 1)],
        &opts,
        &mut |_| {},
    )?;
    ensure!(
        motions[0].joints.dims() == [20, 24, 3],
        "{:?}",
        motions[0].joints.dims()
    );
    let sum = motions[0].joints.abs()?.sum_all()?.to_scalar::<f32>()?;
    ensure!(sum.is_finite(), "joints are not finite");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn train_reads_packed_data_with_caption_features_and_a_json_config() -> Result<()> {
    let dir = scratch("packed")?;
    let (folder, packed) = (dir.join("folder"), dir.join("packed"));
    dataset_with(&folder, true)?;
    motion_data::pack_folder(&folder, &packed)?;
    let cfg = dit::DitConfig {
        latent_dim: 16,
        num_layers: 1,
        num_heads: 2,
        num_cond_blocks: 1,
        ..dit::DitConfig::reference(dit::Variant::CrossAttention)
    };
    let json = dir.join("cross.json");
    std::fs::write(&json, serde_json::to_string(&cfg)?)?;
    let out = dir.join("run");
    run_ok(
        "train",
        &[
            "--config",
            s(&json),
            "--data",
            s(&packed),
            "--out",
            s(&out),
            "--steps",
            "2",
            "--batch-size",
            "16",
            "--sample-steps",
            "2",
        ],
    )?;
    ensure!(loss_rows(&out.join("loss.csv"))?.len() == 2);
    let model = MotionModel::from_folder(out.join("model"), &Device::Cpu)?;
    ensure!(model.text_encoder().is_none() && model.config().num_cond_feats == TEXT_DIM);
    let tokens = Tensor::ones((4, TEXT_DIM), candle::DType::F32, &Device::Cpu)?;
    let opts = GenerateOptions {
        steps: 2,
        ..GenerateOptions::for_model(&model)
    };
    let motions = TextToMotion::new(model).generate_with(
        &[Request::features(tokens, 12, 0)],
        &opts,
        &mut |_| {},
    )?;
    ensure!(motions[0].frames() == 12);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn train_tmr_writes_checkpoints_the_reference_loader_reads() -> Result<()> {
    let dir = scratch("tmr")?;
    let data = dir.join("data");
    dataset(&data)?;
    let out = dir.join("run");
    let stdout = run_ok(
        "train_tmr",
        &train_args("tiny", &data, &out, &["--steps", "6", "--batch-size", "8"]),
    )?;
    ensure!(stdout.contains("val recall@1"), "{stdout}");
    let text = std::fs::read_to_string(out.join("loss.csv"))?;
    ensure!(text.lines().count() == 7, "{text}");

    let cfg: tmr::TmrConfig = serde_json::from_str(&std::fs::read_to_string(
        out.join("checkpoints").join("tmr_config.json"),
    )?)?;
    let (motion_pt, text_pt) = tmr::reference_checkpoint_paths(&out);
    let dev = Device::Cpu;
    let stats = motion_repr::Normalizer::from_stem(out.join("stats"), "tmr-rifke", &dev)?;
    let tmr = tmr::Tmr::from_reference_checkpoints(&motion_pt, &text_pt, &cfg, &dev)?
        .with_normalizer(stats)?;
    let x = Tensor::randn(0f32, 1.0, (2, 10, FEATURE_DIM), &dev)?;
    let mask = Tensor::ones((2, 10), candle::DType::F32, &dev)?;
    ensure!(tmr.encode_motion(&x, &mask)?.dims() == [2, cfg.motion.latent_dim]);
    let tokens = Tensor::randn(0f32, 1.0, (2, 5, cfg.text.nfeats), &dev)?;
    let tmask = Tensor::ones((2, 5), candle::DType::F32, &dev)?;
    ensure!(tmr.encode_text(&tokens, &tmask)?.dims() == [2, cfg.text.latent_dim]);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn bad_input_fails_with_a_one_line_error_naming_it() -> Result<()> {
    let dir = scratch("bad")?;
    let data = dir.join("data");
    dataset(&data)?;
    let missing = dir.join("no-such-data");
    let file = dir.join("a-file");
    std::fs::write(&file, b"not a folder")?;
    let under_file = file.join("out");
    let out = dir.join("out");
    for (bin, preset) in [("train", "tiny"), ("train_tmr", "tiny")] {
        let with = |data: &Path, out: &Path, config: &str| {
            train_args(config, data, out, &["--steps", "1"])
        };
        fails_cleanly(bin, &with(&missing, &out, preset), s(&missing))?;
        fails_cleanly(bin, &with(&data, &out, "huge"), "--config huge")?;
        fails_cleanly(bin, &with(&data, &under_file, preset), s(&under_file))?;
    }
    // Whitening needs the pooled condition of the AdaLN variant and a positive floor.
    let mut cross = train_args(
        "cross_attention",
        &data,
        &out,
        &["--steps", "1", "--batch-size", "8"],
    );
    cross.extend(["--whiten-text".to_string(), "0.01".to_string()]);
    fails_cleanly("train", &cross, "--whiten-text")?;
    let mut zero = train_args("tiny", &data, &out, &["--steps", "1", "--batch-size", "8"]);
    zero.extend(["--whiten-text".to_string(), "0".to_string()]);
    fails_cleanly("train", &zero, "eps = 0")?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn whitened_training_writes_a_model_that_takes_raw_features() -> Result<()> {
    let dir = scratch("whiten")?;
    let data = dir.join("data");
    dataset(&data)?;
    let (plain, whitened) = (dir.join("plain"), dir.join("whitened"));
    let extra = ["--steps", "4", "--batch-size", "8", "--sample-steps", "3"];
    run_ok("train", &train_args("tiny", &data, &plain, &extra))?;
    let mut args = train_args("tiny", &data, &whitened, &extra);
    args.extend(["--whiten-text".to_string(), "0.01".to_string()]);
    run_ok("train", &args)?;
    // Same seed and data, different condition inputs: the folded condition layer differs from
    // the plain run's, and the whitened model folder loads and samples from a raw caption like
    // any other (the fold itself is checked exactly by `motion_dit::whitening`'s tests).
    let read = |d: &Path| -> Result<std::collections::HashMap<String, candle::Tensor>> {
        Ok(candle::safetensors::load(
            d.join("model").join("model.safetensors"),
            &Device::Cpu,
        )?)
    };
    let (a, b) = (read(&plain)?, read(&whitened)?);
    ensure!(a.len() == b.len(), "different weight sets");
    let key = "model.joint_cond_projection.weight";
    let diff = (&a[key] - &b[key])?.abs()?.max_all()?.to_scalar::<f32>()?;
    ensure!(
        diff > 1e-3,
        "the folded condition layer equals the plain one"
    );
    let model = MotionModel::from_folder(whitened.join("model"), &Device::Cpu)?;
    let pipeline = TextToMotion::new(model);
    let opts = GenerateOptions {
        steps: 3,
        ..GenerateOptions::for_model(pipeline.model())
    };
    let m = pipeline.generate_with(
        &[Request::caption("a person jumps", 12, 2)],
        &opts,
        &mut |_| {},
    )?;
    ensure!(
        m[0].joints
            .abs()?
            .sum_all()?
            .to_scalar::<f32>()?
            .is_finite()
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// A training run killed with SIGKILL at 20 seeded random moments (while loading, training,
/// saving) always leaves a checkpoint that verifies (`diffusion::verify_checkpoint`: its JSON
/// names a complete tensor file) and never goes back a step, a loss log that parses, and no
/// half-written model folder; resumed to the end, it matches an uninterrupted run bit for bit.
#[test]
fn a_training_run_killed_at_random_moments_resumes_from_its_last_checkpoint() -> Result<()> {
    use rand::{Rng, SeedableRng};
    use std::process::{Command, Stdio};
    let dir = scratch("killed")?;
    let data = dir.join("data");
    dataset(&data)?;
    let (straight, killed) = (dir.join("straight"), dir.join("killed"));
    let args = |out: &Path, resume: bool| {
        let mut a = train_args(
            "tiny",
            &data,
            out,
            &[
                "--steps",
                "600",
                "--batch-size",
                "8",
                "--sample-steps",
                "2",
                "--seed",
                "5",
                "--save-every",
                "1",
                "--val-every",
                "0",
            ],
        );
        if resume {
            a.push("--resume".into());
        }
        a
    };
    run_ok("train", &args(&straight, false))?;
    let exe = common::example("train")?;
    let stem = killed.join("checkpoint");
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let (mut kills, mut last_step) = (0, 0);
    while kills < 20 {
        let resume = killed.join("checkpoint.json").is_file();
        let mut child = Command::new(&exe)
            .args(args(&killed, resume))
            .current_dir(common::ROOT)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(std::time::Duration::from_millis(rng.random_range(20..500)));
        if let Some(status) = child.try_wait()? {
            ensure!(status.success(), "the run failed by itself: {status}");
            break; // finished before this kill
        }
        child.kill()?;
        child.wait()?;
        kills += 1;
        if killed.join("checkpoint.json").is_file() {
            let step = motion_dit::diffusion::verify_checkpoint(&stem)?;
            ensure!(
                step >= last_step,
                "kill {kills}: checkpoint went back to {step}"
            );
            last_step = step;
        }
        if killed.join("loss.csv").is_file() {
            loss_rows(&killed.join("loss.csv"))?;
        }
        if killed.join("model").join("config.json").is_file() {
            MotionModel::from_folder(killed.join("model"), &Device::Cpu)?;
        }
    }
    ensure!(
        kills == 20,
        "only {kills} kills: the run finished too early"
    );
    ensure!(
        last_step > 0,
        "no checkpoint was ever completed between kills"
    );
    run_ok("train", &args(&killed, true))?;
    let (a, b) = (
        loss_rows(&straight.join("loss.csv"))?,
        loss_rows(&killed.join("loss.csv"))?,
    );
    ensure!(a.len() == 600 && a == b, "the resumed run's losses differ");
    let weights = |d: &Path| std::fs::read(d.join("model").join("model.safetensors"));
    ensure!(
        weights(&straight)? == weights(&killed)?,
        "EMA weights differ"
    );
    eprintln!("{kills} kills, last checkpoint before the final resume at step {last_step}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
