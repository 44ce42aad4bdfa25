//! Does a model follow the text? Samples many seeds for captions whose motion can be checked by
//! hand-written descriptors (walk forward, jump in place, wave the right hand, squat), in the
//! training set's phrasing and in paraphrases it never saw, and reports how often each passes.
//!
//! ```sh
//! cargo run --release --example follow_text                       # the default model, 20 seeds
//! cargo run --release --example follow_text -- --checkpoint runs/default/model --seeds 10 \
//!     --sampler ddim --steps 50 --out out/follow_text.json
//! ```
//!
//! The thresholds are those of the default model's acceptance test
//! (`motion_dit::descriptors::Expectation`): 5-second motions; walking carries the pelvis more
//! than 1 m along the initial facing direction; a jump lifts it more than 15 cm above its median
//! height with less than 0.5 m of horizontal travel; waving moves the right wrist more than twice
//! as far as the left; a squat lowers the pelvis by more than 25 cm.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use motion_dit::descriptors::Expectation;
use motion_dit::diffusion::SamplerKind;
use motion_dit::{GenerateOptions, MotionModel, PipelineError, Request, TextToMotion};
use serde_json::json;

/// Captions per expectation: the first in the training set's phrasing, then paraphrases.
const CAPTIONS: &[(Expectation, &[&str])] = &[
    (
        Expectation::WalkForward,
        &[
            "a person walks forward",
            "someone strolls straight ahead",
            "a woman takes a walk, heading forwards",
            "the man is walking ahead at an easy pace",
            "walking forward",
        ],
    ),
    (
        Expectation::JumpInPlace,
        &[
            "a person jumps in place",
            "someone hops up and down on the spot",
            "a man does a few vertical jumps without moving",
            "the woman leaps straight up several times",
            "jumping in place",
        ],
    ),
    (
        Expectation::WaveRightHand,
        &[
            "a person waves the right hand",
            "someone greets a friend by waving their right hand",
            "a man lifts his right arm and waves hello",
            "the woman waves goodbye with her right hand",
            "waving with the right hand",
        ],
    ),
    (
        Expectation::Squat,
        &[
            "a person squats",
            "someone does a deep knee bend and rises again",
            "a man crouches down low and stands back up",
            "the woman performs squats",
            "squatting",
        ],
    ),
];

/// Sample seeds per caption and report how often the motion shows what the caption says.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// A model folder [default: the bundled default model].
    #[arg(long, value_name = "DIR")]
    checkpoint: Option<PathBuf>,
    /// Seeds per caption (0..N).
    #[arg(long, default_value_t = 20)]
    seeds: u64,
    /// Motion length in seconds (the thresholds are meant for 5 s).
    #[arg(long, default_value_t = 5.0)]
    seconds: f32,
    /// Sampler [default: the model's].
    #[arg(long)]
    sampler: Option<SamplerKind>,
    /// Denoiser calls [default: the model's].
    #[arg(long)]
    steps: Option<usize>,
    /// Guidance weight [default: the model's].
    #[arg(long)]
    guidance: Option<f64>,
    /// Only the captions of one expectation: walk, jump, wave or squat.
    #[arg(long)]
    only: Option<String>,
    /// Only the first caption of each expectation (the training phrasing).
    #[arg(long)]
    no_paraphrases: bool,
    /// Print the measured values of every seed.
    #[arg(long)]
    verbose: bool,
    /// Also write the per-caption results as JSON.
    #[arg(long, value_name = "FILE.json")]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), PipelineError> {
    if args.seeds == 0 || args.seconds.is_nan() || args.seconds <= 0.0 {
        return Err(PipelineError::Option {
            name: "--seeds / --seconds".into(),
            reason: "both must be positive".into(),
        });
    }
    let dir = match &args.checkpoint {
        Some(d) => d.clone(),
        None => motion_dit::default_model_path()?,
    };
    let model = MotionModel::from_folder(&dir, &candle::Device::Cpu)?;
    let frames = (args.seconds * model.fps()).round() as usize;
    let mut opts =
        GenerateOptions::for_model(&model).with_overrides(args.sampler, args.steps, args.guidance);
    opts.max_batch = args.seeds as usize;
    let pipe = TextToMotion::new(model);
    println!(
        "{} ({} {} steps, guidance {}), {} seeds of {:.1} s per caption",
        dir.display(),
        opts.sampler,
        opts.steps,
        opts.guidance,
        args.seeds,
        args.seconds
    );
    let selected = |e: &Expectation| match args.only.as_deref() {
        None => true,
        Some(name) => format!("{e:?}")
            .to_lowercase()
            .contains(&name.to_lowercase()),
    };
    if !CAPTIONS.iter().any(|(e, _)| selected(e)) {
        return Err(PipelineError::Option {
            name: "--only".into(),
            reason: "expected walk, jump, wave or squat".into(),
        });
    }
    let mut rows = Vec::new();
    for (expectation, captions) in CAPTIONS.iter().filter(|(e, _)| selected(e)) {
        let count = if args.no_paraphrases {
            1
        } else {
            captions.len()
        };
        for (k, caption) in captions.iter().take(count).enumerate() {
            let requests: Vec<Request> = (0..args.seeds)
                .map(|seed| Request::caption(*caption, frames, seed))
                .collect();
            let motions = pipe.generate_with(&requests, &opts, &mut |_| {})?;
            let report = expectation.check_motions(&motions)?;
            let passed = report.passed;
            let kind = if k == 0 {
                "training phrasing"
            } else {
                "paraphrase"
            };
            println!("{:>3}/{} {caption:?} ({kind})", passed, args.seeds);
            if args.verbose {
                println!("      {}", report.lines.join("\n      "));
            }
            rows.push(json!({
                "expectation": format!("{expectation:?}"),
                "caption": caption,
                "paraphrase": k > 0,
                "passed": passed,
                "seeds": args.seeds,
            }));
        }
    }
    if let Some(path) = &args.out {
        let text = serde_json::to_string_pretty(&json!({
            "model": dir,
            "sampler": opts.sampler.name(),
            "steps": opts.steps,
            "guidance": opts.guidance,
            "seconds": args.seconds,
            "results": rows,
        }))
        .map_err(|e| PipelineError::Write {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        motion_dit::output::write_atomic(path, text.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
