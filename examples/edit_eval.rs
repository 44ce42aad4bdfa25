//! How well editing keeps quality: each test caption generated freely and under each kind of
//! constraint taken from its real motion, every set scored with the TMR evaluator.
//!
//! - `free`: plain generation (the baseline);
//! - `prefix`: the real motion's first third is given, the rest continued;
//! - `keyframes`: the real first frame (all channels) and last pose are given;
//! - `trajectory`: the real pelvis path is given (facing along it);
//! - `traj-model`: the same path keeping the model's heading.
//!
//! For each: FD, R@1 and TMR-score with intervals, the paired FD / R@1 difference to `free`
//! (same captions and seeds), the largest deviation from the constraint, and the jerk at the
//! seams (where given and free frames meet) against the jerk elsewhere.
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
use motion_dit::candle::IndexOp;
use motion_dit::editing::{Channels, Constraint, Keyframe, Trajectory, seam_jerk};
use motion_dit::evaluate::ScoreConfig;
use motion_dit::motion_data::Split;
use motion_dit::sweep::{self, Bounds, PairedBounds};
use motion_dit::{GenerateOptions, PipelineError, Request};
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
        let ratio = (!ratios.is_empty()).then(|| ratios.iter().sum::<f32>() / ratios.len() as f32);
        rows.push(row(name, &run, Some(paired), err, ratio));
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

fn row(
    name: &str,
    run: &motion_dit::evaluate::EvalRun,
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
