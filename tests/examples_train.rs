//! End-to-end checks of the `train` and `train_tmr` examples on a tiny synthetic dataset: the
//! model folder loads and generates, `loss.csv` parses, `--resume` continues bit for bit, the
//! TMR files load with the reference loader, and bad input gives a one-line error, never a
//! panic.
//!
//! The example binaries are run as built in `target/<profile>/examples/`: plain `cargo test`
//! builds them; with a target filter (`cargo test --test examples_train`) build them first with
//! `cargo build --example train --example train_tmr`.

use std::ffi::OsStr;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail, ensure};
use candle::{Device, Tensor};
use motion_data::synth::{SynthSkeleton, split_ids, synth_sample};
use motion_data::{FEATURE_DIM, TEXT_DIM, TextFeatures, write_sample, write_split};
use motion_dit::{GenerateOptions, MotionModel, Request, TextToMotion};

const CLIP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/text_encoders/clip");
/// Frames per synthetic motion (the synthetic set's shortest motion is 40 frames).
const FRAMES: usize = 40;

/// `target/<profile>/examples/<name>`, next to this test binary's `deps/` folder; an error if
/// it is missing or older than its sources.
fn example(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary has no target/<profile>/deps parent")?;
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        bail!(
            "example binary {} not found: build it with `cargo build --example {name}` (plain \
             `cargo test` builds the examples; `cargo test --test examples_train` does not)",
            path.display()
        );
    }
    let built = std::fs::metadata(&path)?.modified()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let support = std::fs::read_dir(root.join("train_support"))?
        .map(|e| Ok(e?.path()))
        .collect::<std::io::Result<Vec<_>>>()?;
    for src in support.into_iter().chain([root.join(format!("{name}.rs"))]) {
        if std::fs::metadata(&src)?.modified()? > built {
            bail!(
                "example binary {} is older than {}: rebuild it with `cargo build --example {name}`",
                path.display(),
                src.display()
            );
        }
    }
    Ok(path)
}

/// A fresh scratch folder under cargo's target tmp dir.
fn scratch(name: &str) -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("examples_train-{name}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// 40 synthetic motions cut to their first 40 frames, split 32/4/4, in the reference layout.
fn dataset(dir: &Path) -> Result<()> {
    dataset_with(dir, false)
}

/// [`dataset`], optionally with stand-in `caption_clip/` features (seeded values, 3 to 7
/// tokens per caption) in place of real CLIP ones.
fn dataset_with(dir: &Path, clip: bool) -> Result<()> {
    let skeleton = SynthSkeleton::default();
    for i in 0..40 {
        let mut s = synth_sample(0, i, &skeleton)?;
        s.frames = s.frames.min(FRAMES);
        s.features.truncate(s.frames * FEATURE_DIM);
        if clip {
            let value = |k: usize| ((k * 7919 + i * 104729) % 1000) as f32 / 500.0 - 1.0;
            let tokens: Vec<Vec<f32>> = (0..s.captions.len())
                .map(|c| {
                    (0..(3 + (i + c) % 5) * TEXT_DIM)
                        .map(|k| value(k + c))
                        .collect()
                })
                .collect();
            let pooled = tokens
                .iter()
                .flat_map(|t| t[t.len() - TEXT_DIM..].to_vec())
                .collect();
            s.text = Some(TextFeatures { pooled, tokens });
        }
        write_sample(dir, &s)?;
    }
    for (split, ids) in split_ids(40, 0) {
        write_split(dir, split, &ids)?;
    }
    Ok(())
}

fn run<A: AsRef<OsStr> + Debug>(bin: &str, args: &[A]) -> Result<Output> {
    let out = Command::new(example(bin)?)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()?;
    Ok(out)
}

fn run_ok<A: AsRef<OsStr> + Debug>(bin: &str, args: &[A]) -> Result<String> {
    let out = run(bin, args)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{bin} {args:?} failed: {stderr}");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

#[test]
fn train_writes_a_loadable_model_and_resumes_bit_exactly() -> Result<()> {
    let dir = scratch("dit")?;
    let data = dir.join("data");
    dataset(&data)?;
    let (straight, resumed) = (dir.join("straight"), dir.join("resumed"));
    let base = |out: &Path| -> Vec<String> {
        [
            "--config",
            "tiny",
            "--data",
            s(&data),
            "--out",
            s(out),
            "--text-encoder",
            CLIP,
            "--steps",
            "8",
            "--batch-size",
            "8",
            "--sample-steps",
            "3",
            "--seed",
            "3",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
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
        &[
            "--config",
            "tiny",
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--text-encoder",
            CLIP,
            "--steps",
            "6",
            "--batch-size",
            "8",
        ],
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

/// Exit code != 0, exactly one stderr line starting `error:` and naming `needle`, no panic.
fn fails_cleanly<A: AsRef<OsStr> + Debug>(bin: &str, args: &[A], needle: &str) -> Result<()> {
    let out = run(bin, args)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "{bin} {args:?} succeeded");
    ensure!(
        !stderr.contains("panicked"),
        "{bin} {args:?} panicked: {stderr}"
    );
    ensure!(
        stderr.trim_end().lines().count() == 1 && stderr.starts_with("error: "),
        "{bin} {args:?}: not a one-line error: {stderr:?}"
    );
    ensure!(
        stderr.contains(needle),
        "{bin} {args:?}: {stderr:?} does not name {needle:?}"
    );
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
        let common = ["--text-encoder", CLIP, "--steps", "1"];
        let with = |data: &Path, out: &Path, config: &str| -> Vec<String> {
            ["--config", config, "--data", s(data), "--out", s(out)]
                .iter()
                .chain(common.iter())
                .map(|a| a.to_string())
                .collect()
        };
        fails_cleanly(bin, &with(&missing, &out, preset), s(&missing))?;
        fails_cleanly(bin, &with(&data, &out, "huge"), "--config huge")?;
        fails_cleanly(bin, &with(&data, &under_file, preset), s(&under_file))?;
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
