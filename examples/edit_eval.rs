//! How well editing keeps quality: each test caption generated freely and under each kind of
//! constraint taken from its real motion, every set scored with the TMR evaluator.
//!
//! - `free`: plain generation (the baseline);
//! - `prefix`: the real motion's first third is given, the rest continued;
//! - `keyframes`: the real first frame (all channels) and last pose are given;
//! - `trajectory`: the real pelvis path is given (facing along it);
//! - `traj-model`: the same path keeping the model's heading;
//! - `timeline`: every 4 consecutive captions as one timeline (each segment as long as its
//!   request), sampled jointly; each segment is cut out and scored against its own caption.
//!
//! For each: FD, R@1 and TMR-score with intervals, the paired FD / R@1 difference to `free`
//! (same captions and seeds), the largest deviation from the constraint, and the jerk at the
//! seams (where given and free frames meet, or where timeline segments meet) against the jerk
//! elsewhere.
//!
//! `--save-fixture DIR` also writes what the default-model editing test needs to score without
//! the dataset or the text encoder (the requests' text conditions and lengths, and the TMR
//! embeddings of the real motions and of the captions).
//!
//! ```sh
//! cargo run --release --example edit_eval -- --samples 128 --seed 0 --out out/edit_eval
//! ```
//! (the synthetic test split of `data/synth3k`, the default model and evaluator unless given).
//! Writes `--out/editing.json`.

#[path = "eval_support/common.rs"]
mod common;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use common::{ModelArgs, bar};
use motion_dit::candle::{self, IndexOp, Tensor};
use motion_dit::editing::{Channels, Constraint, Keyframe, Segment, Trajectory, seam_jerk};
use motion_dit::evaluate::{self, EvalRun, Evaluation, ScoreConfig};
use motion_dit::motion_data::Split;
use motion_dit::sweep::{self, Bounds, PairedBounds};
use motion_dit::tmr::Tmr;
use motion_dit::{GenerateOptions, Motion, PipelineError, Request, TextInput, TextToMotion};
use serde::Serialize;

/// Score prefix completion, in-betweening and trajectories against free generation.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Test captions (the first N of the split).
    #[arg(long, default_value_t = 128)]
    samples: usize,
    /// Base seed (sample i: motion_seed(seed, i) in every setting; also the bootstrap seed).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder for editing.json.
    #[arg(long, default_value = "out/edit_eval")]
    out: PathBuf,
    /// Dataset folder in the reference layout.
    #[arg(long, value_name = "DIR", default_value = "data/synth3k")]
    data: PathBuf,
    /// Split.
    #[arg(long, default_value = "test")]
    split: String,
    #[command(flatten)]
    model: ModelArgs,
    /// Motions per network and retrieval batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Bootstrap resamples.
    #[arg(long, default_value_t = 1000)]
    resamples: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Captions per timeline in the `timeline` row.
    #[arg(long, default_value_t = 4)]
    timeline_captions: usize,
    /// Seconds over which neighbouring timeline segments are blended.
    #[arg(long, default_value_t = 1.0)]
    overlap: f64,
    /// Score only these edits (comma-separated: prefix, keyframes, trajectory, traj-model,
    /// timeline); free generation is always scored.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also write the evaluation's conditions, lengths and embeddings to DIR (the test fixture
    /// of the default model's editing test).
    #[arg(long, value_name = "DIR")]
    save_fixture: Option<PathBuf>,
}

/// One row of `editing.json`.
#[derive(Debug, Serialize)]
struct Row {
    edit: String,
    fd: Bounds,
    r1: Bounds,
    tmr_score: Bounds,
    vs_free: Option<PairedBounds>,
    /// Largest deviation from the constraint over all motions: raw feature units (metres for
    /// positions) for fixed channels, metres for a path.
    constraint_error: f32,
    /// Mean over motions of (jerk within 3 frames of the seams) / (jerk elsewhere).
    seam_jerk_ratio: Option<f32>,
    seconds: f64,
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.to_string().replace('\n', "; "));
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), PipelineError> {
    let device = motion_dit::device_from_name(&args.device)?;
    let split = Split::parse(&args.split).ok_or_else(|| PipelineError::Option {
        name: "--split".into(),
        reason: format!("{:?}: expected train, val or test", args.split),
    })?;
    if !args.data.is_dir() {
        return Err(PipelineError::MissingFile {
            what: "dataset folder".into(),
            path: args.data.clone(),
            hint: "make the synthetic set with `cargo run --release -p motion-data --example \
                   synthesize -- --out data/synth3k --motions 3000 --seed 1`, or pass --data"
                .into(),
        });
    }
    common::check_scoring(args.batch_size, args.resamples, 0.95)?;
    if args.timeline_captions == 0 {
        return Err(common::option("--timeline-captions", "must be at least 1"));
    }
    if !(args.overlap.is_finite() && args.overlap > 0.0) {
        return Err(common::option(
            "--overlap",
            format!("{} s must be positive", args.overlap),
        ));
    }
    motion_dit::output::ensure_writable_dir(&args.out)?;
    // Fails early when no model is given and none is bundled.
    args.model.checkpoint()?;
    let (samples, has_text) = common::open_samples(&args.data, split, args.samples)?;
    let score_cfg = ScoreConfig {
        retrieval_batch: args.batch_size,
        bootstrap: motion_dit::metrics::BootstrapConfig {
            resamples: args.resamples,
            seed: args.seed,
            ..Default::default()
        },
        ..ScoreConfig::default()
    };
    score_cfg.validate(samples.len())?;
    let text_source = args.model.text_source(&args.data, has_text, &device)?;
    let loaded = args.model.load(&device)?;
    let (pipeline, tmr) = (&loaded.pipeline, &loaded.tmr);
    let eval = common::prepare(&loaded, samples, &text_source, args.seed, args.batch_size)?;
    let opts = GenerateOptions::for_model(pipeline.model());
    if let Some(dir) = &args.save_fixture {
        save_fixture(dir, &eval, &args.data)?;
    }

    // The constraints of each sample, from its real motion cut to the request's length.
    let mut edits: Vec<(&str, Vec<Constraint>)> = vec![
        ("prefix", Vec::new()),
        ("keyframes", Vec::new()),
        ("trajectory", Vec::new()),
        ("traj-model", Vec::new()),
    ];
    for (s, r) in eval.samples.iter().zip(&eval.requests) {
        let f = r.frames;
        let real = s.features.narrow(0, 0, f)?;
        edits[0]
            .1
            .push(Constraint::prefix(&real.narrow(0, 0, (f / 3).max(1))?, f)?);
        let keys = [
            Keyframe {
                frame: 0,
                features: real.i(0)?,
                channels: Channels::All,
            },
            Keyframe {
                frame: f - 1,
                features: real.i(f - 1)?,
                channels: Channels::Pose,
            },
        ];
        edits[1].1.push(Constraint::keyframes(f, &keys)?);
        let (joints, _) = motion_dit::motion_repr::rifke::decode(&real)?;
        let pelvis = joints.narrow(1, 0, 1)?.flatten_all()?.to_vec1::<f32>()?;
        let path = Trajectory::new((0..f).map(|t| [pelvis[3 * t], pelvis[3 * t + 1]]).collect())?;
        edits[2].1.push(Constraint::trajectory(&path, f)?);
        edits[3]
            .1
            .push(Constraint::trajectory(&path.with_model_heading(), f)?);
    }

    const EDITS: [&str; 5] = [
        "prefix",
        "keyframes",
        "trajectory",
        "traj-model",
        "timeline",
    ];
    if let Some(bad) = args.only.iter().find(|e| !EDITS.contains(&e.as_str())) {
        return Err(common::option(
            "--only",
            format!("unknown edit {bad:?} (expected {})", EDITS.join(", ")),
        ));
    }
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|e| e == name);
    edits.retain(|(name, _)| wanted(name));
    let mut rows = Vec::new();
    let b = bar(eval.len(), "{prefix:>12} {msg:10} {bar:30} {pos}/{len}");
    let progress = |name: &str| {
        let b = b.clone();
        let name = name.to_string();
        move |stage: &str, done: usize, total: usize| {
            b.set_prefix(name.clone());
            b.set_message(stage.to_string());
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
    };
    let free = eval.run(pipeline, tmr, &opts, &score_cfg, &mut progress("free"))?;
    rows.push(row("free", &free, None, 0.0, None));
    for (name, constraints) in &edits {
        let requests: Vec<Request> = eval
            .requests
            .iter()
            .zip(constraints)
            .map(|(r, c)| r.clone().with_constraint(c.clone()))
            .collect();
        let run = eval.run_requests(
            pipeline,
            tmr,
            &requests,
            &opts,
            &score_cfg,
            &mut progress(name),
        )?;
        let paired =
            sweep::paired_to_baseline(&eval, &run.embeddings, &free.embeddings, &score_cfg)?;
        let mut err = 0f32;
        let mut ratios = Vec::new();
        for (m, c) in run.motions.iter().zip(constraints) {
            if let Some(path) = c.path() {
                err = err.max(path.max_error(&m.joints)?);
            }
            if c.has_fixed_channels()? {
                err = err.max(c.max_error(&m.features)?);
                let fixed = c.fixed_frames()?;
                let seams: Vec<usize> = (1..m.frames())
                    .filter(|&t| fixed.contains(&t) != fixed.contains(&(t - 1)))
                    .collect();
                if m.frames() >= 8 && !seams.is_empty() {
                    let (at, inside) = seam_jerk(&m.joints, m.fps, &seams, 3)?;
                    ratios.push(at / inside.max(f32::MIN_POSITIVE));
                }
            }
        }
        rows.push(row(name, &run, Some(paired), err, mean(&ratios)));
    }
    if wanted("timeline") {
        let timeline = timelines(
            args,
            &eval,
            pipeline,
            tmr,
            &opts,
            &score_cfg,
            &mut progress("timeline"),
        )?;
        let paired = sweep::paired_to_baseline(
            &eval,
            &timeline.run.embeddings,
            &free.embeddings,
            &score_cfg,
        )?;
        rows.push(row(
            "timeline",
            &timeline.run,
            Some(paired),
            0.0,
            mean(&timeline.seam_ratios),
        ));
    }
    b.finish_and_clear();

    let cell = |b: &Bounds| format!("{:.3} [{:.3}, {:.3}]", b.value, b.low, b.high);
    let delta = |b: &Bounds| format!("{:+.3} [{:+.3}, {:+.3}]", b.value, b.low, b.high);
    println!(
        "{} {} motions of {}, {} {} steps, guidance {}",
        eval.len(),
        split.name(),
        args.data.display(),
        opts.sampler,
        opts.steps,
        opts.guidance
    );
    println!(
        "{:<11} {:<24} {:<24} {:<24} {:<26} {:<26} {:>10} {:>6}",
        "edit",
        "FD",
        "R@1",
        "TMR-score",
        "paired dFD vs free",
        "paired dR@1 vs free",
        "max error",
        "seam"
    );
    for r in &rows {
        let (dfd, dr1) = r.vs_free.map_or((String::new(), String::new()), |p| {
            (delta(&p.fd), delta(&p.r1))
        });
        println!(
            "{:<11} {:<24} {:<24} {:<24} {:<26} {:<26} {:>10.2e} {:>6}",
            r.edit,
            cell(&r.fd),
            cell(&r.r1),
            cell(&r.tmr_score),
            dfd,
            dr1,
            r.constraint_error,
            r.seam_jerk_ratio
                .map_or("-".to_string(), |x| format!("{x:.2}"))
        );
    }
    let path = args.out.join("editing.json");
    motion_dit::metrics::write_json(&path, &rows).map_err(|e| PipelineError::Write {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    println!("wrote {}", path.display());
    Ok(())
}

fn mean(xs: &[f32]) -> Option<f32> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f32>() / xs.len() as f32)
}

/// The `timeline` row's motions: one per sample, cut out of its timeline.
struct Timelines {
    run: EvalRun,
    /// (jerk within 3 frames of the seams) / (jerk elsewhere), one per timeline with a seam.
    seam_ratios: Vec<f32>,
}

/// Samples every `--timeline-captions` consecutive requests as one timeline (seed of its first
/// request), cuts each segment out ([`Motion::part`]) and scores the segments like any other
/// set of motions, each against its own caption.
fn timelines(
    args: &Args,
    eval: &Evaluation,
    pipeline: &TextToMotion,
    tmr: &Tmr,
    opts: &GenerateOptions,
    cfg: &ScoreConfig,
    on_progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Timelines, PipelineError> {
    let fps = pipeline.model().fps();
    let overlap = ((args.overlap * fps as f64).round() as usize).max(2);
    let n = eval.len();
    let start = std::time::Instant::now();
    let mut parts: Vec<Motion> = Vec::with_capacity(n);
    let mut seam_ratios = Vec::new();
    for group in eval.requests.chunks(args.timeline_captions) {
        let segments: Vec<Segment> = group.iter().map(Segment::from).collect();
        let done = parts.len();
        let motion =
            pipeline.generate_timeline(&segments, group[0].seed, overlap, opts, &mut |p| {
                let frac = p.done as f64 / p.total.max(1) as f64;
                on_progress(
                    "generating",
                    done + (frac * group.len() as f64).floor() as usize,
                    n,
                );
            })?;
        let lens: Vec<usize> = segments.iter().map(|s| s.frames).collect();
        parts.extend(motion.split(&lens)?);
        let seams: Vec<usize> = lens
            .iter()
            .scan(0, |at, f| {
                *at += f;
                Some(*at)
            })
            .take(lens.len() - 1)
            .collect();
        if !seams.is_empty() && motion.frames() >= 8 {
            let (seam, inside) = seam_jerk(&motion.joints, motion.fps, &seams, 3)?;
            seam_ratios.push(seam / inside.max(f32::MIN_POSITIVE));
        }
    }
    let generation_seconds = start.elapsed().as_secs_f64();
    let device = pipeline.model().dit().device().clone();
    let feats: Vec<&Tensor> = parts.iter().map(|m| &m.features).collect();
    let embeddings = evaluate::embed_motions(tmr, &feats, eval.batch_size, &device, &mut |d| {
        on_progress("embedding", d, n)
    })?;
    let metrics = evaluate::score(&eval.real_emb, &embeddings, &eval.text_emb, cfg)?;
    Ok(Timelines {
        run: EvalRun {
            motions: parts,
            embeddings,
            metrics,
            generation_seconds,
        },
        seam_ratios,
    })
}

/// Writes `DIR/test_split.safetensors` (`condition [N, C]`: each request's text condition,
/// `frames [N]` (u32), `real_emb [N, d]`, `text_emb [N, d]`) and `DIR/test_split.json` (the
/// captions, the dataset and the command), for models conditioned on one vector per caption.
fn save_fixture(
    dir: &std::path::Path,
    eval: &Evaluation,
    data: &std::path::Path,
) -> Result<(), PipelineError> {
    let mut conditions = Vec::with_capacity(eval.len());
    for (r, s) in eval.requests.iter().zip(&eval.samples) {
        match &r.text {
            TextInput::Features(t) if t.rank() == 1 => conditions.push(t.clone()),
            _ => {
                return Err(common::option(
                    "--save-fixture",
                    format!(
                        "sample {}: the fixture holds one condition vector per caption; this \
                         model is conditioned on token sequences",
                        s.id
                    ),
                ));
            }
        }
    }
    let frames: Vec<u32> = eval.requests.iter().map(|r| r.frames as u32).collect();
    let n = frames.len();
    let tensors = std::collections::HashMap::from([
        ("condition".to_string(), Tensor::stack(&conditions, 0)?),
        (
            "frames".to_string(),
            Tensor::from_vec(frames, n, &candle::Device::Cpu)?,
        ),
        ("real_emb".to_string(), eval.real_emb.clone()),
        ("text_emb".to_string(), eval.text_emb.clone()),
    ]);
    motion_dit::output::ensure_writable_dir(dir)?;
    let path = dir.join("test_split.safetensors");
    motion_dit::output::write_safetensors(&path, &tensors)?;
    let captions: Vec<&str> = eval.samples.iter().map(|s| s.caption.as_str()).collect();
    let ids: Vec<&str> = eval.samples.iter().map(|s| s.id.as_str()).collect();
    let meta = serde_json::json!({
        "about": "The first N test captions of a dataset as the default model's editing test \
                  uses them: condition = the model's text condition of each caption, frames = \
                  the request's length (the real length capped at the model's maximum), \
                  real_emb / text_emb = TMR embeddings of the real motions and of the captions \
                  by the default evaluator.",
        "dataset": data.display().to_string(),
        "text_features": eval.text_label,
        "command": format!(
            "cargo run --release --example edit_eval -- --samples {n} --save-fixture {}",
            dir.display()
        ),
        "ids": ids,
        "captions": captions,
    });
    motion_dit::metrics::write_json(&dir.join("test_split.json"), &meta).map_err(|e| {
        PipelineError::Write {
            path: dir.join("test_split.json"),
            reason: e.to_string(),
        }
    })?;
    println!("wrote {}", path.display());
    Ok(())
}

fn row(
    name: &str,
    run: &EvalRun,
    vs_free: Option<PairedBounds>,
    err: f32,
    ratio: Option<f32>,
) -> Row {
    let m = &run.metrics;
    let nan = Bounds {
        value: f64::NAN,
        low: f64::NAN,
        high: f64::NAN,
    };
    Row {
        edit: name.to_string(),
        fd: m.fd.into(),
        r1: m
            .retrieval
            .recall_at_k
            .first()
            .map_or(nan, |iv| (*iv).into()),
        tmr_score: m.tmr_score.into(),
        vs_free,
        constraint_error: err,
        seam_jerk_ratio: ratio,
        seconds: run.generation_seconds,
    }
}
