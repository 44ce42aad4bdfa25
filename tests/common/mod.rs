//! Helpers shared by the integration tests (and `benches/pipeline.rs`): running the example
//! binaries and checking their failures, scratch folders, random-weight model folders and
//! synthetic datasets.
//!
//! The example binaries are run as built in `target/<profile>/examples/`: plain `cargo test`
//! builds them; with a target filter (`cargo test --test NAME`) build them first with
//! `cargo build --examples`.

// Each test binary compiles this module whole and uses only some of its helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail, ensure};
use candle::{DType, Device, Tensor};
use motion_data::synth::{SynthSkeleton, synth_sample};
use motion_data::{FEATURE_DIM, TEXT_DIM, TextFeatures, write_sample};
use motion_dit::dit::{Dit, DitConfig, Variant};
use motion_dit::motion_repr::Normalizer;
use motion_dit::{ModelConfig, TextEncoderKind, TextEncoderSpec, save_model_folder};

/// The root package's folder: the examples' working directory.
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The 32-d test CLIP text encoder (`fixtures/text_encoders/clip`).
pub const CLIP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/text_encoders/clip");

/// The name of the test (or bench) target this module is compiled into.
const TARGET: &str = env!("CARGO_CRATE_NAME");

/// `fixtures/` of the root package.
pub fn fixtures() -> PathBuf {
    Path::new(ROOT).join("fixtures")
}

/// A path as `&str` for an argument list (empty when it is not UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// A fresh, empty scratch folder `<target>/tmp/<test target>-<name>`.
pub fn scratch(name: &str) -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{TARGET}-{name}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Copies the files of folder `from` into `to` (created).
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        std::fs::copy(e.path(), to.join(e.file_name()))?;
    }
    Ok(())
}

/// `target/<profile>/examples/<name>`, next to this test binary's `deps/` folder; an error if
/// it is missing or older than its sources (`examples/<name>.rs` and the files it includes with
/// `#[path = ...]`).
pub fn example(name: &str) -> Result<PathBuf> {
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
             `cargo test` builds the examples; `cargo test --test {TARGET}` does not)",
            path.display()
        );
    }
    let built = std::fs::metadata(&path)?.modified()?;
    let examples = Path::new(ROOT).join("examples");
    let main = examples.join(format!("{name}.rs"));
    let included: Vec<PathBuf> = std::fs::read_to_string(&main)?
        .lines()
        .filter_map(|l| l.trim().strip_prefix("#[path = \"")?.split('"').next())
        .map(|p| examples.join(p))
        .collect();
    for src in included.into_iter().chain([main]) {
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

/// Runs example `bin` with `args` in the root package's folder.
pub fn run<A: AsRef<OsStr>>(bin: &str, args: &[A]) -> Result<Output> {
    Ok(Command::new(example(bin)?)
        .args(args)
        .current_dir(ROOT)
        .output()?)
}

/// Runs example `bin` with `args`; its stdout, or an error with its stderr if it failed.
pub fn run_ok<A: AsRef<OsStr> + Debug>(bin: &str, args: &[A]) -> Result<String> {
    let out = run(bin, args)?;
    ensure!(
        out.status.success(),
        "{bin} {args:?} failed: {}",
        stderr(&out)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A finished example's stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a non-zero exit code, no panic and a stderr naming `needle`.
pub fn assert_clean_failure(out: &Output, needle: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
}

/// Exit code != 0, exactly one stderr line starting `error:` and naming `needle`, no panic.
pub fn fails_cleanly<A: AsRef<OsStr> + Debug>(bin: &str, args: &[A], needle: &str) -> Result<()> {
    let out = run(bin, args)?;
    let stderr = stderr(&out);
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

/// Arguments of the `train` / `train_tmr` examples: `--config config`, `--data`, `--out`, the
/// test CLIP as `--text-encoder`, then `extra`.
pub fn train_args(config: &str, data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let head = ["--config", config, "--data", s(data), "--out", s(out)];
    head.iter()
        .chain(&["--text-encoder", CLIP])
        .chain(extra)
        .map(|a| a.to_string())
        .collect()
}

/// The tests' small DiT: width 32, one layer, 2 heads, `cond`-d text features, 40 frames.
pub fn tiny_dit_config(variant: Variant, cond: usize) -> DitConfig {
    let mut cfg = DitConfig::reference(variant);
    (
        cfg.latent_dim,
        cfg.num_layers,
        cfg.num_heads,
        cfg.mlp_multiplier,
    ) = (32, 1, 2, 2);
    cfg.num_cond_feats = cond;
    cfg.num_frames = 40;
    cfg.max_positions = 64;
    cfg
}

/// Statistics of the 205-d features with mean 0 and standard deviation `std` everywhere.
pub fn flat_normalizer(std: f32) -> Result<Normalizer> {
    let d = FEATURE_DIM;
    Ok(Normalizer::new(
        Tensor::zeros(d, DType::F32, &Device::Cpu)?,
        Tensor::full(std, d, &Device::Cpu)?,
    )?)
}

/// Writes a model folder to `dir`: `cfg` with weights drawn from `seed` (each multiplied by
/// `scale`), `normalizer`, `steps` default sampling steps, and a copy of the 32-d test CLIP as
/// its text encoder (`text_encoder/`).
pub fn random_model_folder(
    dir: &Path,
    cfg: DitConfig,
    seed: u64,
    scale: f64,
    steps: usize,
    normalizer: &Normalizer,
) -> Result<()> {
    let (_dit, vars) = Dit::init_random(&cfg, seed, &Device::Cpu)?;
    let weights: HashMap<String, Tensor> = vars
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .iter()
        .map(|(k, v)| {
            let t = v.as_tensor();
            let t = if scale == 1.0 {
                t.clone()
            } else {
                t.affine(scale, 0.0)?
            };
            Ok((k.clone(), t))
        })
        .collect::<candle::Result<_>>()?;
    let mut config = ModelConfig::new(cfg);
    config.text_encoder = Some(TextEncoderSpec::folder(
        TextEncoderKind::Clip,
        "text_encoder",
    ));
    config.sampling.steps = steps;
    save_model_folder(dir, &config, &weights, normalizer)?;
    copy_dir(Path::new(CLIP), &dir.join("text_encoder"))
}

/// Seeded stand-ins for the `caption_clip/` features of synthetic motion `i`: caption `c` gets
/// `tokens(i, c)` tokens of 512 values, value `k` of them `value(i, c, k)`; its pooled feature
/// is its last token.
#[derive(Debug, Clone, Copy)]
pub struct StandInClip {
    /// Token count of caption `c` of motion `i`.
    pub tokens: fn(usize, usize) -> usize,
    /// Value `k` of the flattened `[L, 512]` tokens of caption `c` of motion `i`.
    pub value: fn(usize, usize, usize) -> f32,
}

/// Writes synthetic motions `0..n` (seed 0) into `dir` in the reference layout (no splits),
/// motion `i` cut to its first `frames(i)` frames, with stand-in `caption_clip/` features
/// when `clip` is given.
pub fn write_synth_motions(
    dir: &Path,
    n: usize,
    frames: impl Fn(usize) -> usize,
    clip: Option<StandInClip>,
) -> Result<()> {
    let skeleton = SynthSkeleton::default();
    for i in 0..n {
        let mut s = synth_sample(0, i, &skeleton)?;
        s.frames = s.frames.min(frames(i));
        s.features.truncate(s.frames * FEATURE_DIM);
        if let Some(clip) = clip {
            let tokens: Vec<Vec<f32>> = (0..s.captions.len())
                .map(|c| {
                    (0..(clip.tokens)(i, c) * TEXT_DIM)
                        .map(|k| (clip.value)(i, c, k))
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
    Ok(())
}
