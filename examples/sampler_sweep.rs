//! How many steps does a motion need, and what does each cost? Samples the same captions with
//! the same seeds under several samplers and step counts and scores each setting with the TMR
//! evaluator: FD, R@1 and TMR-score with bootstrap intervals, network evaluations (NFE) and wall
//! time.
//!
//! With the bundled default model and evaluator on the synthetic test split (make it first with
//! `cargo run --release -p motion-data --example synthesize -- --out data/synth3k --motions 3000
//! --seed 1`):
//!
//! ```sh
//! cargo run --release --example sampler_sweep -- --samples 256 --seed 0 --out out/sweep
//! ```
//!
//! The default sweep is DDPM at 100/50/20 steps, DDIM at 50/20/10, DPM-Solver++(2M) at
//! 20/10/5, UniPC and DPM-Solver++(3M) at 10/5 (`motion_dit::sweep::default_settings`);
//! `--settings ddpm:100,unipc:5,dpm++:8:logsnr` replaces it and `--also ...` adds to it
//! (`SAMPLER:STEPS[:GRID]`; samplers ddpm, ddim, dpm++, dpm++3m, unipc; grids uniform, logsnr,
//! power:RHO). Another model, evaluator or split: `--checkpoint`, `--stats`, `--tmr`, `--data`,
//! `--split` as for `evaluate` (reference checkpoints work too).
//!
//! A sweep can be stopped and continued: `--resume` keeps the rows of an earlier run into the
//! same `--out` whose embeddings it saved (`embeddings/*.safetensors`) and samples only the rest.
//!
//! Writes, into `--out`: `sweep.json` (a list of rows `{"sampler", "steps", "nfe", "seconds",
//! "fd": {"value", "low", "high"}, "r1": {...}, "tmr_score": {...}, ...}`, rewritten after
//! every setting), `sweep.csv`, `sweep.png` (quality against NFE, one line per sampler with its
//! interval band, the baseline's interval as a grey band) and `real.json` (the real motions'
//! own scores, the ceiling). Every row after the baseline (`--baseline`, default `ddpm:100`)
//! also holds its paired differences to it (`vs_baseline`: FD, R@1 and TMR-score of the setting
//! minus the baseline's, resampling the same samples from both, which cancels the
//! sample-to-sample spread the two share). Prints a table, the fewest-NFE setting whose FD and
//! R@1 intervals overlap the baseline's, and the fewest-NFE setting that is not measurably worse
//! in the paired comparison.

use std::path::PathBuf;
use std::process::ExitCode;

#[path = "eval_support/common.rs"]
mod common;

use clap::Parser;
use common::{ModelArgs, bar, option};
use motion_dit::evaluate::{ScoreConfig, TmrFiles};
use motion_dit::metrics::{BootstrapConfig, PrdcConfig};
use motion_dit::motion_data::Split;
use motion_dit::sweep::{self, SweepRow, SweepSetting};
use motion_dit::{GenerateOptions, PipelineError};

/// Compare samplers and step counts on one model: quality against network evaluations.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Number of test captions (the first N of the split, in split order).
    #[arg(long, default_value_t = 256)]
    samples: usize,
    /// Base seed: sample i gets seed motion_seed(seed, i) under every setting (also the
    /// bootstrap seed).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder.
    #[arg(long, default_value = "out/sampler_sweep")]
    out: PathBuf,
    /// Dataset folder in the reference layout.
    #[arg(long, value_name = "DIR", default_value = "data/synth3k")]
    data: PathBuf,
    /// Split whose captions are used.
    #[arg(long, default_value = "test")]
    split: String,
    #[command(flatten)]
    model: ModelArgs,
    /// Settings to run, replacing the default sweep: comma-separated SAMPLER:STEPS[:GRID].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    settings: Vec<SweepSetting>,
    /// Settings to run in addition to the default sweep (or to --settings).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    also: Vec<SweepSetting>,
    /// The setting others are compared with (added to the run when missing).
    #[arg(long, default_value = "ddpm:100")]
    baseline: SweepSetting,
    /// Classifier-free guidance weight [default: the model's].
    #[arg(long)]
    guidance: Option<f64>,
    /// Motions per network batch and per retrieval batch (R@1 ranks among this many).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Bootstrap resamples per interval.
    #[arg(long, default_value_t = 1000)]
    resamples: usize,
    /// Confidence of the intervals.
    #[arg(long, default_value_t = 0.95)]
    confidence: f64,
    /// Reuse the rows of an earlier run into the same --out (same data, model, seed and
    /// samples) whose embeddings were saved, sampling only the settings still missing.
    #[arg(long)]
    resume: bool,
    /// Only redraw `--out/sweep.png` from `--out/sweep.json` (no sampling).
    #[arg(long)]
    replot: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
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

/// The settings to run, baseline first, without duplicates.
fn settings(args: &Args) -> Vec<SweepSetting> {
    let mut list = vec![args.baseline];
    let main = if args.settings.is_empty() {
        sweep::default_settings()
    } else {
        args.settings.clone()
    };
    for s in main.into_iter().chain(args.also.iter().copied()) {
        if !list.contains(&s) {
            list.push(s);
        }
    }
    list
}

fn run(args: &Args) -> Result<(), PipelineError> {
    if args.replot {
        let png = sweep::replot(&args.out)?;
        println!("wrote {}", png.display());
        return Ok(());
    }
    let device = motion_dit::device_from_name(&args.device)?;
    let split = Split::parse(&args.split).ok_or_else(|| {
        option(
            "--split",
            format!("{:?}: expected train, val or test", args.split),
        )
    })?;
    common::check_scoring(args.batch_size, args.resamples, args.confidence)?;
    if !args.data.is_dir() {
        return Err(PipelineError::MissingFile {
            what: "dataset folder".into(),
            path: args.data.clone(),
            hint: "make the synthetic set with `cargo run --release -p motion-data --example \
                   synthesize -- --out data/synth3k --motions 3000 --seed 1`, or pass --data"
                .into(),
        });
    }
    // Checked before anything heavy is read.
    TmrFiles::find(&args.model.tmr)?;
    // Fails early when no model is given and none is bundled.
    args.model.checkpoint()?;
    motion_dit::output::ensure_writable_dir(&args.out)?;
    let score_cfg = ScoreConfig {
        retrieval_batch: args.batch_size,
        prdc: PrdcConfig::default(),
        bootstrap: BootstrapConfig {
            resamples: args.resamples,
            confidence: args.confidence,
            seed: args.seed,
        },
    };

    let (samples, has_text) = common::open_samples(&args.data, split, args.samples)?;
    if samples.len() < args.samples {
        eprintln!(
            "note: the {} split of {} holds {} samples, fewer than --samples {}: using all",
            split.name(),
            args.data.display(),
            samples.len(),
            args.samples
        );
    }
    score_cfg.validate(samples.len())?;
    let text_source = args.model.text_source(&args.data, has_text, &device)?;
    let loaded = args.model.load(&device)?;
    let (pipeline, tmr) = (&loaded.pipeline, &loaded.tmr);
    let base_opts =
        GenerateOptions::for_model(pipeline.model()).with_overrides(None, None, args.guidance);
    let eval = common::prepare(&loaded, samples, &text_source, args.seed, args.batch_size)?;
    let real = eval.real_metrics(&score_cfg)?;
    let real_path = args.out.join("real.json");
    motion_dit::metrics::write_json(&real_path, &real).map_err(|e| PipelineError::Write {
        path: real_path.clone(),
        reason: e.to_string(),
    })?;

    let list = settings(args);
    eprintln!(
        "{} settings x {} motions of the {} split of {} (guidance {}, batches of {})",
        list.len(),
        eval.len(),
        split.name(),
        args.data.display(),
        base_opts.guidance,
        args.batch_size
    );
    let earlier: Vec<SweepRow> = match (args.resume, args.out.join("sweep.json")) {
        (true, p) if p.is_file() => sweep::read_json(&p)?,
        _ => Vec::new(),
    };
    let mut rows: Vec<SweepRow> = Vec::with_capacity(list.len());
    // The baseline (first) run's embeddings, for the paired comparisons.
    let mut baseline_emb: Option<motion_dit::candle::Tensor> = None;
    for (i, setting) in list.iter().enumerate() {
        let opts = setting.apply(&base_opts);
        let reused = earlier
            .iter()
            .find(|r| r.is(setting) && r.guidance == opts.guidance && r.motions == eval.len());
        let (mut row, embeddings) = match (reused, sweep::load_embeddings(&args.out, setting)?) {
            (Some(r), Some(emb)) => {
                let mut r = r.clone();
                r.vs_baseline = None;
                (r, emb)
            }
            _ => {
                let b = bar(
                    eval.len(),
                    "{prefix:>22} {msg:10} {bar:30} {pos}/{len} [{elapsed}]",
                );
                b.set_prefix(format!("[{}/{}] {setting}", i + 1, list.len()));
                let run = eval.run(pipeline, tmr, &opts, &score_cfg, &mut |stage, done, _| {
                    b.set_message(stage.to_string());
                    b.set_position(done as u64);
                })?;
                b.finish_and_clear();
                sweep::save_embeddings(&args.out, setting, &run.embeddings)?;
                (SweepRow::new(&opts, &run), run.embeddings)
            }
        };
        match &baseline_emb {
            None => baseline_emb = Some(embeddings),
            Some(base) => {
                row.vs_baseline = Some(sweep::paired_to_baseline(
                    &eval,
                    &embeddings,
                    base,
                    &score_cfg,
                )?)
            }
        }
        eprintln!(
            "{:<22} NFE {:>3}  {:>7.1} s  FD {:.3} [{:.3}, {:.3}]  R@1 {:.3} [{:.3}, {:.3}]{}",
            row.setting(),
            row.nfe,
            row.seconds,
            row.fd.value,
            row.fd.low,
            row.fd.high,
            row.r1.value,
            row.r1.low,
            row.r1.high,
            row.vs_baseline.map_or(String::new(), |p| format!(
                "  vs baseline: dFD {:+.3} [{:+.3}, {:+.3}]  dR@1 {:+.3} [{:+.3}, {:+.3}]",
                p.fd.value, p.fd.low, p.fd.high, p.r1.value, p.r1.low, p.r1.high
            ))
        );
        rows.push(row);
        sweep::write_json(&args.out, &rows)?;
    }
    let csv = sweep::write_csv(&args.out, &rows)?;
    let baseline = rows.first().cloned();
    let png = args.out.join("sweep.png");
    sweep::plot_sweep(&rows, baseline.as_ref(), &png)?;

    println!(
        "{:<22} {:>4} {:>9} {:>10} {:<24} {:<24} {:<24} {:<27} {:<27}",
        "setting",
        "NFE",
        "seconds",
        "s/motion",
        "FD",
        "R@1",
        "TMR-score",
        "paired dFD",
        "paired dR@1"
    );
    let delta = |b: &sweep::Bounds| format!("{:+.3} [{:+.3}, {:+.3}]", b.value, b.low, b.high);
    let cell = |b: &sweep::Bounds| format!("{:.3} [{:.3}, {:.3}]", b.value, b.low, b.high);
    for r in &rows {
        let (dfd, dr1) = r
            .vs_baseline
            .map_or(("(baseline)".into(), String::new()), |p| {
                (delta(&p.fd), delta(&p.r1))
            });
        println!(
            "{:<22} {:>4} {:>9.1} {:>10.4} {:<24} {:<24} {:<24} {:<27} {:<27}",
            r.setting(),
            r.nfe,
            r.seconds,
            r.seconds_per_motion,
            cell(&r.fd),
            cell(&r.r1),
            cell(&r.tmr_score),
            dfd,
            dr1
        );
    }
    println!(
        "{:<22} {:>4} {:>9} {:>10} {:<24} {:<24} {:<24}",
        "real motions",
        "-",
        "-",
        "-",
        cell(&real.fd.into()),
        real.retrieval
            .recall_at_k
            .first()
            .map_or("-".to_string(), |iv| cell(&(*iv).into())),
        cell(&real.tmr_score.into())
    );
    if let Some(base) = &baseline {
        match sweep::fewest_nfe_matching(&rows, base) {
            Some(best) => println!(
                "fewest NFE with FD and R@1 intervals overlapping {}'s: {} ({} NFE, {:.2}x its \
                 time per motion)",
                base.setting(),
                best.setting(),
                best.nfe,
                best.seconds_per_motion / base.seconds_per_motion
            ),
            None => println!(
                "no setting's FD and R@1 intervals both overlap {}'s",
                base.setting()
            ),
        }
        match sweep::fewest_nfe_not_worse(&rows) {
            Some(best) => println!(
                "fewest NFE not measurably worse than {} in the paired comparison (dFD interval \
                 reaching 0 or below, dR@1 interval reaching 0 or above): {} ({} NFE)",
                base.setting(),
                best.setting(),
                best.nfe
            ),
            None => println!(
                "every setting is measurably worse than {} in the paired comparison",
                base.setting()
            ),
        }
    }
    println!(
        "wrote {}, {}, {} and {}",
        args.out.join("sweep.json").display(),
        csv.display(),
        png.display(),
        real_path.display()
    );
    Ok(())
}
