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

use candle::Tensor;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use motion_dit::diffusion::SamplerKind;
use motion_dit::evaluate::{self, EvalReport, EvalSettings, ScoreConfig, TmrFiles, motion_seed};
use motion_dit::metrics::{BootstrapConfig, PrdcConfig, RecallFormula};
use motion_dit::motion_data::{FolderDataset, FolderOptions, MotionSource, Split};
use motion_dit::{GenerateOptions, MotionModel, PipelineError, Request, TextInput, TextToMotion};

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
    /// A model folder of ours, or a reference `.ckpt` / `.pt` / `.safetensors` (with
    /// --stats). Defaults to the bundled default model, when there is one.
    #[arg(long, value_name = "PATH")]
    checkpoint: Option<PathBuf>,
    /// Path stem of the model's mean/std statistics (`data/stats/tmr-rifke` for
    /// `tmr-rifke-mean.pt` + `tmr-rifke-std.pt`).
    #[arg(long, value_name = "STEM")]
    stats: Option<PathBuf>,
    /// Attention heads of a reference checkpoint (not stored in its weights).
    #[arg(long, default_value_t = 16)]
    heads: usize,
    /// A text-encoder folder (config.json, model.safetensors, tokenizer.json; CLIP or a sentence
    /// encoder) whose features condition the model and feed the TMR text encoder [default: the dataset's
    /// caption_clip/ features, else the model folder's text encoder].
    #[arg(long, value_name = "DIR")]
    text_encoder: Option<PathBuf>,
    /// The TMR evaluator folder (checkpoints/tmr-{motion,text}_encoder.pt, optional
    /// checkpoints/tmr_config.json and stats/tmr-rifke-*), e.g. the `train_tmr` output
    /// [default: the bundled evaluator of the synthetic set, assets/default_evaluator].
    #[arg(long, value_name = "DIR", default_value = motion_dit::DEFAULT_EVALUATOR_DIR)]
    tmr: PathBuf,
    /// Path stem of the TMR motion statistics [default: the TMR folder's, else the model's].
    #[arg(long, value_name = "STEM")]
    tmr_stats: Option<PathBuf>,
    /// Number of batches of test motions.
    #[arg(long, default_value_t = 10)]
    batches: usize,
    /// Motions per batch: the retrieval batch (R@k ranks among this many) and the most
    /// motions sampled at once.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Sampler: ddpm, ddim or dpm++. Default: the model's.
    #[arg(long)]
    sampler: Option<SamplerKind>,
    /// Denoiser calls. Default: the model's.
    #[arg(long)]
    steps: Option<usize>,
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

fn option(name: &str, reason: impl Into<String>) -> PipelineError {
    PipelineError::Option {
        name: name.into(),
        reason: reason.into(),
    }
}

fn bar(len: usize, template: &str) -> ProgressBar {
    ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
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
    if args.batch_size <= evaluate::TOP_K[2] {
        return Err(option(
            "--batch-size",
            format!(
                "{} must be above 3: R@3 ranks among the batch",
                args.batch_size
            ),
        ));
    }
    if args.resamples < 2 {
        return Err(option("--resamples", "must be at least 2"));
    }
    if !(args.confidence > 0.0 && args.confidence < 1.0) {
        return Err(option("--confidence", "must lie strictly between 0 and 1"));
    }
    if !args.data.is_dir() {
        return Err(PipelineError::MissingFile {
            what: "dataset folder".into(),
            path: args.data.clone(),
            hint: "pass --data with a folder in the reference layout (make a synthetic one with \
                   `cargo run --release -p motion-data --example synthesize -- --out DIR`)"
                .into(),
        });
    }
    let tmr_files = TmrFiles::find(&args.tmr)?;
    let checkpoint = match &args.checkpoint {
        Some(p) => p.clone(),
        None => motion_dit::default_model_path()?,
    };
    motion_dit::output::ensure_writable_dir(&args.out)?;

    let wanted = args.batches.saturating_mul(args.batch_size);
    let data = FolderDataset::open(
        &args.data,
        split,
        &FolderOptions {
            limit: Some(wanted),
            ..FolderOptions::default()
        },
    )
    .map_err(|e| evaluate::data_error(&args.data, e))?;
    let samples = evaluate::select_samples(&data, wanted)?;
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

    let text_source = evaluate::TextSource::choose(
        args.text_encoder.as_deref(),
        &args.data,
        data.has_text(),
        &checkpoint,
        &device,
    )?;
    let model = MotionModel::load(&checkpoint, args.stats.as_deref(), args.heads, &device)?;
    let (tmr, tmr_stats) =
        tmr_files.load(args.tmr_stats.as_deref(), model.normalizer(), &device)?;
    let pipeline = TextToMotion::new(model);

    let encode_bar = bar(samples.len(), "encoding {bar:30} {pos}/{len} captions");
    let (texts, text_label) = text_source.caption_features(&samples, &pipeline, &mut |d| {
        encode_bar.set_position(d as u64)
    })?;
    encode_bar.finish_and_clear();
    let cond_width = pipeline.model().config().num_cond_feats;
    let sequential = pipeline.model().config().variant.sequential_condition();
    if let Some(t) = texts.first().map(|t| &t.tokens)
        && t.dims()[1] != cond_width
    {
        return Err(option(
            "text features",
            format!(
                "{text_label} gives {}-d token features but the model is conditioned on \
                 {cond_width}-d features",
                t.dims()[1]
            ),
        ));
    }

    // Generation at the real lengths (capped at the model's longest motion).
    let max_frames = pipeline.model().max_frames();
    let requests: Vec<Request> = samples
        .iter()
        .zip(&texts)
        .map(|(s, t)| Request {
            text: TextInput::Features(t.condition(sequential)),
            frames: s.frames().min(max_frames),
            seed: motion_seed(args.seed, s.index),
        })
        .collect();
    let capped = samples.iter().filter(|s| s.frames() > max_frames).count();
    if capped > 0 {
        eprintln!(
            "note: {capped} real motions are longer than the model's {max_frames} frames: \
             their generated motions are capped at {max_frames}"
        );
    }
    let mut opts = GenerateOptions::for_model(pipeline.model()).with_overrides(
        args.sampler,
        args.steps,
        args.guidance,
    );
    opts.max_batch = args.batch_size;
    let gen_bar = bar(
        requests.len(),
        "generating {bar:30} {pos}/{len} motions [{elapsed_precise} < {eta_precise}]",
    );
    let mut generated = Vec::with_capacity(requests.len());
    for chunk in requests.chunks(args.batch_size) {
        let start = generated.len();
        let motions = pipeline.generate_with(chunk, &opts, &mut |p| {
            let frac = p.done as f64 / p.total.max(1) as f64;
            gen_bar.set_position((start as f64 + frac * chunk.len() as f64).floor() as u64);
        })?;
        generated.extend(motions);
        gen_bar.set_position(generated.len() as u64);
    }
    gen_bar.finish_and_clear();

    // TMR embeddings.
    let emb_bar = bar(2 * samples.len(), "embedding {bar:30} {pos}/{len} motions");
    let real_feats: Vec<&Tensor> = samples.iter().map(|s| &s.features).collect();
    let gen_feats: Vec<&Tensor> = generated.iter().map(|m| &m.features).collect();
    let n = samples.len();
    let real_emb =
        evaluate::embed_motions(&tmr, &real_feats, args.batch_size, &device, &mut |d| {
            emb_bar.set_position(d as u64)
        })?;
    let gen_emb = evaluate::embed_motions(&tmr, &gen_feats, args.batch_size, &device, &mut |d| {
        emb_bar.set_position((n + d) as u64)
    })?;
    let token_refs: Vec<&Tensor> = texts.iter().map(|t| &t.tokens).collect();
    let text_emb = evaluate::embed_texts(&tmr, &token_refs, args.batch_size, &device)?;
    emb_bar.finish_and_clear();

    let generated_set = evaluate::score(&real_emb, &gen_emb, &text_emb, &score_cfg)?;
    let real_set = evaluate::score(&real_emb, &real_emb, &text_emb, &score_cfg)?;
    let settings = EvalSettings {
        data: args.data.clone(),
        split: split.name().to_string(),
        checkpoint: checkpoint.clone(),
        tmr: args.tmr.clone(),
        tmr_stats,
        text_features: text_label,
        samples: n,
        batch_size: args.batch_size,
        sampler: opts.sampler.name().to_string(),
        steps: opts.steps,
        guidance: opts.guidance,
        seed: args.seed,
        capped_lengths: capped,
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
