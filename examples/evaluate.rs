//! The reference's evaluation: motions generated for the captions of a test split, scored with
//! the TMR evaluator against the real motions and the captions (FD, TMR-score, PRDC, R@1/2/3,
//! MM-distance), each with a bootstrap confidence interval, next to the same scores of the real
//! motions themselves (the ceiling).
//!
//! On a fresh clone (a synthetic set, a tiny model and a tiny evaluator; the synthetic set has
//! no precomputed CLIP features, so the small seeded test CLIP encodes the captions):
//!
//! ```sh
//! cargo run --release -p motion-data --example synthesize -- --out data/synth --motions 400 --seed 0
//! cargo run --release --example train -- --config tiny --data data/synth --out runs/tiny \
//!     --text-encoder fixtures/text_encoders/clip --steps 300 --batch-size 16
//! cargo run --release --example train_tmr -- --config tiny --data data/synth --out runs/tmr \
//!     --text-encoder fixtures/text_encoders/clip --steps 300 --batch-size 32
//! cargo run --release --example evaluate -- --data data/synth --checkpoint runs/tiny/model \
//!     --tmr runs/tmr --text-encoder fixtures/text_encoders/clip --batches 1 --batch-size 40 \
//!     --out out/eval
//! ```
//!
//! On the reference data (its `caption_clip/` features condition the model and feed the TMR
//! text encoder; the published evaluator in `data/humanml3d/checkpoints/`; 10 batches of 64
//! test motions, as the reference):
//!
//! ```sh
//! cargo run --release --features cuda --example evaluate -- --data data/humanml3d \
//!     --checkpoint data/humanml3d/checkpoints/adaln.ckpt --stats data/humanml3d/stats/tmr-rifke \
//!     --tmr data/humanml3d --sampler ddpm --steps 100 --device cuda --out out/eval-adaln
//! ```
//!
//! `--tmr DIR` holds `checkpoints/tmr-{motion,text}_encoder.pt` (as `tmr::reference_checkpoint_paths`
//! names them; or the two files directly in `DIR`), optionally `checkpoints/tmr_config.json`
//! (the sizes; absent = the reference evaluator's) and `stats/tmr-rifke-{mean,std}.pt` (the
//! TMR motion statistics; absent = the model's, which the reference shares with TMR;
//! `--tmr-stats STEM` overrides both). The `train_tmr` example writes exactly this layout.
//!
//! Text features: `--text-encoder` (a CLIP or sentence-encoder folder) when given; else the
//! dataset's `caption_clip/` token features; else the model folder's own text encoder. Each
//! sample's FIRST caption is used: its token states feed the TMR text encoder, and condition a
//! sequence-conditioned model; a pooled model (AdaLN) gets the encoder's pooled vector (the
//! end-of-text state for the dataset's CLIP tokens).
//!
//! The default model with its evaluator, on the synthetic test split
//! (`docs/default-model.md`):
//!
//! ```sh
//! cargo run --release --example evaluate -- --data data/synth3k --tmr assets/default_evaluator \
//!     --batches 5 --batch-size 60 --out out/eval-default
//! ```
//! Sample `i` of the split (the first `--batches x --batch-size`, in split order) is generated
//! at its real length with seed `motion_seed(--seed, i)`, whatever the batching.
//!
//! Prints the table on stdout and writes `--out/metrics.json` (settings, and per row every metric
//! with estimate, interval, standard error) and `--out/metrics.csv`
//! (`metric,value,lower,upper,confidence`, metrics named `generated.fd`, `real.fd`, ...).

use std::path::PathBuf;
use std::process::ExitCode;

#[path = "eval_support/common.rs"]
mod common;

use clap::Parser;
use common::{ModelArgs, bar, option};
use motion_dit::diffusion::{SamplerKind, TimeGrid};
use motion_dit::evaluate::{EvalReport, EvalSettings, ScoreConfig, TmrFiles};
use motion_dit::metrics::{BootstrapConfig, PrdcConfig, RecallFormula};
use motion_dit::motion_data::Split;
use motion_dit::{GenerateOptions, PipelineError};

/// Evaluate a motion model on a test split with the TMR evaluator.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Dataset folder in the reference layout (split files, smpl_rifke/, caption_raw/).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Split to evaluate on: train, val or test.
    #[arg(long, default_value = "test")]
    split: String,
    #[command(flatten)]
    model: ModelArgs,
    /// Number of batches of test motions.
    #[arg(long, default_value_t = 10)]
    batches: usize,
    /// Motions per batch: the retrieval batch (R@k ranks among this many) and the most
    /// motions sampled at once.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
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
    /// Base seed of the motions (and of the bootstrap).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Bootstrap resamples per interval.
    #[arg(long, default_value_t = 1000)]
    resamples: usize,
    /// Confidence of the intervals.
    #[arg(long, default_value_t = 0.95)]
    confidence: f64,
    /// Use the reference's PRDC recall formula (it indexes the fake radius by the real row)
    /// instead of the corrected one, to compare with published tables.
    #[arg(long)]
    reference_recall: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Output folder for metrics.json and metrics.csv.
    #[arg(long, default_value = "out/evaluate")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.to_string().replace('\n', "; "));
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), PipelineError> {
    let device = motion_dit::device_from_name(&args.device)?;
    // Everything a user can get wrong is checked before anything heavy is loaded.
    let split = Split::parse(&args.split).ok_or_else(|| {
        option(
            "--split",
            format!("{:?}: expected train, val or test", args.split),
        )
    })?;
    if args.batches == 0 {
        return Err(option("--batches", "must be at least 1"));
    }
    let score_cfg = ScoreConfig {
        retrieval_batch: args.batch_size,
        prdc: PrdcConfig {
            recall: if args.reference_recall {
                RecallFormula::Reference
            } else {
                RecallFormula::Corrected
            },
            ..PrdcConfig::default()
        },
        bootstrap: BootstrapConfig {
            resamples: args.resamples,
            confidence: args.confidence,
            seed: args.seed,
        },
    };
    common::check_scoring(args.batch_size, args.resamples, args.confidence)?;
    if !args.data.is_dir() {
        return Err(PipelineError::MissingFile {
            what: "dataset folder".into(),
            path: args.data.clone(),
            hint: "pass --data with a folder in the reference layout (make a synthetic one with \
                   `cargo run --release -p motion-data --example synthesize -- --out DIR`)"
                .into(),
        });
    }
    // Checked before anything heavy is read.
    TmrFiles::find(&args.model.tmr)?;
    let checkpoint = args.model.checkpoint()?;
    motion_dit::output::ensure_writable_dir(&args.out)?;

    let wanted = args.batches.saturating_mul(args.batch_size);
    let (samples, has_text) = common::open_samples(&args.data, split, wanted)?;
    if samples.len() < wanted {
        eprintln!(
            "note: the {} split of {} holds {} samples, fewer than --batches x --batch-size = \
             {wanted}: evaluating all of them",
            split.name(),
            args.data.display(),
            samples.len()
        );
    }
    score_cfg.validate(samples.len()).map_err(|e| match e {
        PipelineError::Option { reason, .. } => option(
            "--data",
            format!(
                "the {} split of {}: {reason}",
                split.name(),
                args.data.display()
            ),
        ),
        other => other,
    })?;

    let text_source = args.model.text_source(&args.data, has_text, &device)?;
    let loaded = args.model.load(&device)?;
    let eval = common::prepare(&loaded, samples, &text_source, args.seed, args.batch_size)?;
    let (pipeline, tmr) = (&loaded.pipeline, &loaded.tmr);
    if eval.capped > 0 {
        let max_frames = pipeline.model().max_frames();
        eprintln!(
            "note: {} real motions are longer than the model's {max_frames} frames: their \
             generated motions are capped at {max_frames}",
            eval.capped
        );
    }
    let mut opts = GenerateOptions::for_model(pipeline.model())
        .with_overrides(args.sampler, args.steps, args.guidance)
        .with_grid(args.grid);
    opts.max_batch = args.batch_size;
    let run_bar = bar(
        eval.len(),
        "{msg:10} {bar:30} {pos}/{len} motions [{elapsed_precise} < {eta_precise}]",
    );
    let run = eval.run(pipeline, tmr, &opts, &score_cfg, &mut |stage, done, _| {
        run_bar.set_message(stage.to_string());
        run_bar.set_position(done as u64);
    })?;
    run_bar.finish_and_clear();
    let n = eval.len();
    let generated_set = run.metrics;
    let real_set = eval.real_metrics(&score_cfg)?;
    let settings = EvalSettings {
        data: args.data.clone(),
        split: split.name().to_string(),
        checkpoint: checkpoint.clone(),
        tmr: args.model.tmr.clone(),
        tmr_stats: loaded.tmr_stats.clone(),
        text_features: eval.text_label.clone(),
        samples: n,
        batch_size: args.batch_size,
        sampler: opts.sampler.name().to_string(),
        steps: opts.steps,
        grid: opts.grid.label(),
        guidance: opts.guidance,
        seed: args.seed,
        capped_lengths: eval.capped,
        score: score_cfg,
    };
    let report = EvalReport::new(settings, &generated_set, &real_set);
    let (json, csv) = report.write(&args.out)?;
    println!(
        "{n} {} motions of {} (retrieval in {} batch(es) of up to {}), {} {} steps, guidance \
         {}, PRDC k = {} over {} split(s)",
        split.name(),
        args.data.display(),
        n.div_ceil(args.batch_size),
        args.batch_size,
        opts.sampler.name(),
        opts.steps,
        opts.guidance,
        report.settings.score.prdc.k,
        report.prdc_splits,
    );
    print!("{}", report.table());
    println!("wrote {} and {}", json.display(), csv.display());
    Ok(())
}
