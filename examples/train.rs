//! Trains a diffusion transformer (DiT) on a motion dataset: DDPM loss in the x0
//! parametrisation, AdamW + warm-up/cosine learning rate + EMA, resumable checkpoints, and a
//! model folder that `generate` and `motion_dit::MotionModel::from_folder` load.
//!
//! On a fresh clone (the synthetic set has no precomputed CLIP features, so the captions are
//! encoded once at start-up by the small seeded test CLIP; use a real CLIP ViT-B/32 folder for a
//! real model):
//!
//! ```sh
//! cargo run --release -p motion-data --example synthesize -- --out data/synth --motions 400 --seed 0
//! cargo run --release --example train -- --config tiny --data data/synth --out runs/tiny \
//!     --text-encoder fixtures/text_encoders/clip --steps 300 --batch-size 16 --lr 1e-3
//! # interrupted? the same command with --resume continues bit for bit:
//! cargo run --release --example train -- --config tiny --data data/synth --out runs/tiny \
//!     --text-encoder fixtures/text_encoders/clip --steps 300 --batch-size 16 --lr 1e-3 --resume
//! ```
//!
//! (About 3 minutes in the dev profile on 2 busy cores, validation loss 0.31 -> 0.12; the
//! reference's lr 1e-4 is for long runs.)
//!
//! On the reference data (`caption_clip/` features present, so no `--text-encoder`):
//! `--config adaln --data data/humanml3d --out runs/adaln --epochs 1000 --device cuda`.
//!
//! Writes into `--out`:
//! - `checkpoint-<step>.safetensors` + `checkpoint.json`: weights, EMA, AdamW moments, step and
//!   configuration (`diffusion::Trainer`), saved every `--save-every` steps, at each validation
//!   and at the end; the JSON is renamed into place last and names its tensor file, so a run
//!   killed at any moment resumes from the last complete save;
//! - `stats.safetensors`: the normalisation statistics (`mean`, `std`) of the run;
//! - `loss.csv`: `step,epoch,loss,lr,steps_per_s`; `val.csv`: `step,epoch,val_loss,gif`;
//! - `model/`: a model folder (EMA weights, `config.json`, `stats.safetensors` and a copy of
//!   the text encoder in `model/text_encoder/`), rewritten at each validation and at the end;
//! - `samples/step_NNNNNNN.gif`: a motion sampled from `model/` for the first validation
//!   caption, rendered on the open body model, at each validation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use candle::{Device, Tensor};
use clap::Parser;
use diffusion::{
    Conditioning, DdpmLoss, Denoiser, EmaWarmup, LossOutput, SamplerKind, TrainConfig, Trainer,
    WarmupCosine,
};
use dit::{Dit, DitConfig, Variant};
use indicatif::ProgressBar;
use motion_data::{Batch, BatchConfig, Batcher, MAX_TEXT_TOKENS, MotionSource};
use motion_dit::output::FileOptions;
use motion_dit::whitening::TextWhitening;
use motion_dit::{
    GenerateOptions, ModelConfig, MotionModel, Request, TextEncoderKind, TextEncoderSpec,
    TextToMotion, save_model_folder,
};
use motion_repr::Normalizer;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde_json::json;

#[path = "train_support/common.rs"]
mod common;
use common::{CaptionText, CsvLog, Data, DeviceArg, Rate, TrainBatches, say};

/// Train a diffusion transformer on a motion dataset folder.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Network: a preset (incontext, adaln, cross_attention: the reference sizes; tiny: a
    /// seconds-long CI model) or a `dit::DitConfig` JSON file.
    #[arg(long, value_name = "PRESET|FILE.json")]
    config: String,
    /// Dataset: a folder in the reference layout, or packed shards (`<dir>/train.json`).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Output folder (checkpoint, loss.csv, model/, samples/).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Passes over the train split (ignored when --steps is given).
    #[arg(long, default_value_t = 100)]
    epochs: u64,
    /// Total optimiser steps.
    #[arg(long)]
    steps: Option<u64>,
    /// Motions per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Peak learning rate (AdamW, warm-up then cosine to 0).
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Warm-up steps [default: min(5000, steps / 10), the reference's 5000 for long runs].
    #[arg(long)]
    warmup: Option<u64>,
    /// EMA decay per step.
    #[arg(long, default_value_t = 0.9999)]
    ema_beta: f64,
    /// Keep the EMA decay constant from the first step, instead of warming it up as
    /// `ema_pytorch` (the reference's EMA) does by default: copy for 100 steps, then
    /// `min(beta, 1 - (1 + n)^(-2/3))`.
    #[arg(long)]
    no_ema_warmup: bool,
    /// Seed of the initial weights, the data order and every random draw of training.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A text-encoder folder (config.json, model.safetensors, tokenizer.json): CLIP, or a
    /// sentence encoder such as all-MiniLM-L6-v2, told apart by its config.json. It encodes
    /// every distinct caption once at start-up; the model folder names it when it lies in the
    /// text-encoder cache, and holds a copy of it otherwise [default: the dataset's
    /// precomputed caption_clip/ features].
    #[arg(long, value_name = "DIR")]
    text_encoder: Option<PathBuf>,
    /// Whiten the pooled text features while training (AdaLN with --text-encoder): PCA over the
    /// distinct train captions, `P = V diag(1 / sqrt(lambda + EPS * lambda_max)) V^T`, applied
    /// without centring (`y' = P y`, so the all-zero unconditional input stays zero), and folded
    /// into `joint_cond_projection` when the model folder is written (`W' = W P`), which
    /// therefore takes raw encoder features like any other. Sentence embeddings of captions that
    /// differ in one word ("left" / "right" hand) are close (cosine 0.98 for all-MiniLM-L6-v2):
    /// whitening spreads them as far apart as the caption set allows, which the condition layer
    /// otherwise learns slowly.
    #[arg(long, value_name = "EPS")]
    whiten_text: Option<f64>,
    /// Path stem of mean/std statistics (`<STEM>-mean.pt` ...) [default: computed over the
    /// train split].
    #[arg(long, value_name = "STEM")]
    stats: Option<PathBuf>,
    /// Frames per training window [default: the longest motion of the train split].
    #[arg(long)]
    max_frames: Option<usize>,
    /// Continue from `--out/checkpoint` with the statistics of `--out/stats.safetensors` (give
    /// the arguments of the interrupted run).
    #[arg(long)]
    resume: bool,
    /// Validate (model folder, validation loss, sample GIF) every N epochs; 0 = only at the end.
    #[arg(long, default_value_t = 1)]
    val_every: u64,
    /// Save a checkpoint every N steps (and at each validation, at --stop-after and at the
    /// end; 0 = only then).
    #[arg(long, default_value_t = 1000)]
    save_every: u64,
    /// DDIM steps of the validation sample.
    #[arg(long, default_value_t = 50)]
    sample_steps: usize,
    /// Stop after this global step, saving a checkpoint, as an interrupted run would.
    #[arg(long, value_name = "STEP")]
    stop_after: Option<u64>,
    /// Device.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
}

fn main() -> ExitCode {
    common::exit_with(run(Args::parse()))
}

/// `--config`: a preset or a JSON file.
fn dit_config(spec: &str) -> Result<(DitConfig, bool)> {
    let preset = match spec {
        "incontext" => Some(DitConfig::reference(Variant::InContext)),
        "adaln" => Some(DitConfig::reference(Variant::AdaLn)),
        "cross_attention" => Some(DitConfig::reference(Variant::CrossAttention)),
        "tiny" => Some(DitConfig {
            latent_dim: 32,
            num_layers: 1,
            num_heads: 2,
            mlp_multiplier: 2,
            num_cond_blocks: 1,
            ..DitConfig::reference(Variant::AdaLn)
        }),
        _ => None,
    };
    if let Some(cfg) = preset {
        return Ok((cfg, true));
    }
    let path = Path::new(spec);
    if !path.is_file() {
        bail!(
            "--config {spec}: neither a preset (incontext, adaln, cross_attention, tiny) nor an \
             existing JSON file"
        );
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("--config {spec}"))?;
    let cfg: DitConfig =
        serde_json::from_str(&text).with_context(|| format!("--config {spec}: not a DitConfig"))?;
    cfg.validate().with_context(|| format!("--config {spec}"))?;
    Ok((cfg, false))
}

/// Everything a training step and a validation need.
struct Run<'a> {
    args: &'a Args,
    device: Device,
    data: &'a Data,
    train_text: CaptionText<'a>,
    val_text: CaptionText<'a>,
    normalizer: Normalizer,
    model_cfg: ModelConfig,
    loss: DdpmLoss,
    /// The body the validation GIFs are rendered on (the open body model).
    body: smpl::BodyModel,
    /// `--whiten-text`: folded into the written model folder.
    whitening: Option<TextWhitening>,
}

fn run(args: Args) -> Result<()> {
    let device = args.device.device()?;
    let (mut cfg, preset) = dit_config(&args.config)?;
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    common::prepare_out(&args.out)?;
    let checkpoint = args.out.join("checkpoint.json");
    if args.resume && !checkpoint.is_file() {
        bail!(
            "--resume: no checkpoint {} to continue from",
            checkpoint.display()
        );
    }
    if !args.resume && checkpoint.exists() {
        bail!(
            "--out {} already holds a checkpoint: pass --resume to continue it, or choose \
             another --out",
            args.out.display()
        );
    }
    let data = common::open_data(&args.data, args.batch_size)?;
    let keep_tokens = cfg.variant.sequential_condition();
    let (mut train_text, val_text) =
        common::caption_text(&data, args.text_encoder.as_deref(), &device, keep_tokens)?;
    let whitening = match args.whiten_text {
        None => None,
        Some(eps) => {
            // Only the training features: validation runs the written model folder, whose
            // folded weights take raw features.
            let CaptionText::Encoded(train) = &mut train_text else {
                bail!("--whiten-text needs --text-encoder (features encoded at start-up)");
            };
            if cfg.variant != Variant::AdaLn {
                bail!("--whiten-text applies to the pooled condition of the adaln variant");
            }
            let w = TextWhitening::fit(&train.pooled, train.dim, eps)?;
            w.apply(&mut train.pooled);
            Some(w)
        }
    };
    if preset {
        cfg.num_cond_feats = train_text.dim();
    } else if cfg.num_cond_feats != train_text.dim() {
        bail!(
            "--config {}: num_cond_feats is {} but the text features are {}-d",
            args.config,
            cfg.num_cond_feats,
            train_text.dim()
        );
    }
    let frames = common::window_frames(args.max_frames, data.train.as_ref())?;
    cfg.num_frames = frames;

    let stats_path = args.out.join("stats.safetensors");
    let normalizer = if args.resume && stats_path.is_file() {
        Normalizer::from_safetensors_keys(&stats_path, "mean", "std", &Device::Cpu)?
    } else {
        let n = common::stats(args.stats.as_deref(), data.train.as_ref())?;
        let map: HashMap<String, Tensor> = [
            ("mean".to_string(), n.mean().clone()),
            ("std".to_string(), n.std().clone()),
        ]
        .into();
        motion_dit::output::write_safetensors(&stats_path, &map)?;
        n
    };

    let mut model_cfg = ModelConfig::new(cfg.clone());
    model_cfg.max_frames = frames;
    model_cfg.description = format!(
        "{} DiT trained by the train example on {} ({} motions)",
        cfg.variant,
        args.data.display(),
        data.train.len()
    );
    if let Some(dir) = &args.text_encoder {
        model_cfg.text_encoder = Some(text_encoder_spec(
            dir,
            &args.out.join("model").join("text_encoder"),
        )?);
    }
    let run = Run {
        args: &args,
        device,
        data: &data,
        train_text,
        val_text,
        normalizer,
        model_cfg,
        loss: DdpmLoss::default(),
        body: motion_dit::output::load_body(None)?,
        whitening,
    };
    train(&run, &cfg)
}

fn train(run: &Run, cfg: &DitConfig) -> Result<()> {
    let args = run.args;
    let train_src: &dyn MotionSource = run.data.train.as_ref();
    let bs = args.batch_size;
    let frames = cfg.num_frames;
    let mut batches = TrainBatches::new(
        train_src,
        bs,
        frames,
        args.seed,
        &run.normalizer,
        &run.device,
    )?;
    let per_epoch = batches.per_epoch();
    let total = args.steps.unwrap_or(args.epochs * per_epoch);
    if total == 0 {
        bail!("--steps / --epochs give 0 training steps");
    }
    let (dit, varmap) = Dit::init_random(cfg, args.seed, &run.device)?;
    let info = json!({
        "dit": cfg, "total_steps": total, "batch_size": bs, "max_frames": frames,
        "seed": args.seed, "data": args.data, "text_encoder": args.text_encoder,
    });
    let stem = args.out.join("checkpoint");
    let mut trainer = if args.resume {
        let (trainer, extra) = Trainer::resume(&varmap, &stem)
            .with_context(|| format!("--resume {}", stem.display()))?;
        for key in ["dit", "total_steps", "batch_size", "max_frames", "seed"] {
            if extra.get(key) != info.get(key) {
                bail!(
                    "--resume: this run's {key} ({}) differs from the checkpoint's ({}); resume \
                     with the arguments of the interrupted run",
                    info[key],
                    extra.get(key).unwrap_or(&serde_json::Value::Null)
                );
            }
        }
        trainer
    } else {
        let warmup = args.warmup.unwrap_or((total / 10).min(5000));
        let mut tc = TrainConfig::reference(total);
        tc.adamw.lr = args.lr;
        tc.lr = WarmupCosine {
            warmup_steps: warmup,
            ..WarmupCosine::reference(args.lr, total)
        };
        tc.ema_beta = args.ema_beta;
        tc.ema_warmup = (!args.no_ema_warmup).then(EmaWarmup::ema_pytorch_defaults);
        tc.seed = args.seed;
        Trainer::new(&varmap, tc)?
    };
    let start = trainer.step();
    let keep = args.resume.then_some(start);
    let mut loss_log = CsvLog::open(
        &args.out.join("loss.csv"),
        "step,epoch,loss,lr,steps_per_s",
        keep,
    )?;
    let mut val_log = CsvLog::open(&args.out.join("val.csv"), "step,epoch,val_loss,gif", keep)?;
    println!(
        "training {} DiT ({} parameters) on {} train motions ({} data, {frames} frames), \
         {per_epoch} steps/epoch, steps {start}..{total}",
        cfg.variant,
        varmap
            .all_vars()
            .iter()
            .map(|v| v.elem_count())
            .sum::<usize>(),
        train_src.len(),
        run.data.kind
    );
    let bar = common::step_bar(total, start)?;
    let mut rate = Rate::default();
    while trainer.step() < total {
        let started = std::time::Instant::now();
        let (epoch, batch) = batches.get(trainer.step())?;
        let mut rng = trainer.rng(1);
        let net = |rng: &mut StdRng| dit.training(rng.next_u64());
        let out = batch_loss(run, &run.train_text, cfg, &batch, &mut rng, net)?;
        let s = trainer.train_step(&out.loss)?;
        let sps = rate.tick(started);
        loss_log.row(&[
            s.step.to_string(),
            epoch.to_string(),
            format!("{:.6}", s.loss),
            format!("{:e}", s.lr),
            format!("{sps:.3}"),
        ])?;
        bar.set_position(s.step);
        bar.set_message(format!("loss {:.4} | {sps:.2} steps/s", s.loss));
        let epoch_done = s.step.is_multiple_of(per_epoch);
        let validate_now = s.step == total
            || (epoch_done
                && args.val_every > 0
                && (s.step / per_epoch).is_multiple_of(args.val_every));
        let stop = args.stop_after == Some(s.step);
        let periodic = args.save_every > 0 && s.step.is_multiple_of(args.save_every);
        if validate_now || stop || periodic {
            trainer.save(&stem, &info)?;
        }
        if validate_now {
            let row = validate(run, &trainer, s.step, &bar)?;
            val_log.row(&[
                s.step.to_string(),
                (s.step / per_epoch).to_string(),
                row.0,
                row.1,
            ])?;
        }
        if stop {
            bar.abandon();
            println!(
                "stopped after step {} (--stop-after); continue with --resume",
                s.step
            );
            return Ok(());
        }
    }
    bar.finish();
    println!(
        "done: {total} steps; model folder {}, checkpoint {}, log {}",
        args.out.join("model").display(),
        stem.display(),
        args.out.join("loss.csv").display()
    );
    Ok(())
}

/// The network's condition for caption `captions[b]` of sample `samples[b]`: pooled features,
/// or token features zero-padded to 77 tokens as the reference batches them.
fn condition(
    text: &CaptionText,
    cfg: &DitConfig,
    samples: &[usize],
    captions: &[usize],
    device: &Device,
) -> Result<Conditioning> {
    Ok(if cfg.variant.sequential_condition() {
        let (tokens, mask) = text.tokens(samples, captions, Some(MAX_TEXT_TOKENS), device)?;
        Conditioning::Tokens {
            tokens,
            mask: Some(mask),
        }
    } else {
        Conditioning::Pooled(text.pooled(samples, captions, device)?)
    })
}

/// The DDPM loss of `batch`: the condition of its captions, then `t` and noise drawn from
/// `rng`, then the denoiser `net(rng)` (a training network draws its dropout seed there).
fn batch_loss<N: Denoiser>(
    run: &Run,
    text: &CaptionText,
    cfg: &DitConfig,
    batch: &Batch,
    rng: &mut StdRng,
    net: impl FnOnce(&mut StdRng) -> N,
) -> Result<LossOutput> {
    let cond = condition(
        text,
        cfg,
        &batch.indices,
        &batch.caption_indices,
        &run.device,
    )?;
    let t_idx = run.loss.sample_t_idx(batch.indices.len(), rng);
    let noise = run
        .loss
        .sample_noise(batch.motion.dims(), &run.device, rng)?;
    let net = net(rng);
    Ok(run.loss.compute(
        &net,
        &batch.motion,
        &cond,
        &batch.frame_mask,
        &t_idx,
        &noise,
    )?)
}

/// Writes the model folder (EMA weights), loads it back, computes the validation loss (first
/// captions, fixed noise) and samples a GIF for the first validation caption. Returns the
/// `val.csv` fields `val_loss` and `gif`.
fn validate(
    run: &Run,
    trainer: &Trainer,
    step: u64,
    bar: &ProgressBar,
) -> Result<(String, String)> {
    let args = run.args;
    let dir = args.out.join("model");
    let mut weights: HashMap<String, Tensor> = trainer
        .ema()
        .weights()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    if let Some(w) = &run.whitening {
        w.fold(&mut weights, "model.joint_cond_projection.weight")?;
    }
    save_model_folder(&dir, &run.model_cfg, &weights, &run.normalizer)?;
    let model = MotionModel::from_folder(&dir, &run.device)
        .with_context(|| format!("reloading the model folder {}", dir.display()))?;
    let val: &dyn MotionSource = run.data.val.as_ref();
    if val.is_empty() {
        say(
            bar,
            format!(
                "step {step}: model folder {} (no validation split)",
                dir.display()
            ),
        );
        return Ok((String::new(), String::new()));
    }
    let cfg = model.config().clone();
    let batcher = Batcher::new(
        val,
        BatchConfig::eval(args.batch_size, cfg.num_frames),
        run.device.clone(),
    )?
    .with_normalizer(&run.normalizer)?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let (mut sum, mut n) = (0.0, 0);
    for batch in batcher.epoch(0).take(8) {
        let batch = batch?;
        let b = batch.indices.len();
        let out = batch_loss(run, &run.val_text, &cfg, &batch, &mut rng, |_| model.dit())?;
        sum += out.loss.to_scalar::<f32>()? as f64 * b as f64;
        n += b;
    }
    let val_loss = sum / n.max(1) as f64;

    let caption = val.captions(0)[0].clone();
    let frames = val.frames(0).min(model.max_frames());
    let request = if model.text_encoder().is_some() {
        Request::caption(caption.clone(), frames, args.seed)
    } else {
        let (tokens, _) = run.val_text.tokens(&[0], &[0], None, &Device::Cpu)?;
        Request::features(tokens.squeeze(0)?, frames, args.seed)
    };
    let opts = GenerateOptions {
        sampler: SamplerKind::Ddim,
        steps: args.sample_steps,
        ..GenerateOptions::for_model(&model)
    };
    let pipeline = TextToMotion::new(model);
    let motion = pipeline
        .generate_with(&[request], &opts, &mut |_| {})?
        .pop()
        .context("the pipeline returned no motion")?;
    let gif = args.out.join("samples").join(format!("step_{step:07}.gif"));
    std::fs::create_dir_all(args.out.join("samples"))?;
    let files = FileOptions {
        size: 192,
        ..FileOptions::default()
    };
    motion_dit::output::write_gif(&gif, &motion, &run.body, &files)?;
    say(
        bar,
        format!(
            "step {step}: val loss {val_loss:.4}; model folder {}; sample \"{caption}\" -> {}",
            dir.display(),
            gif.display()
        ),
    );
    Ok((format!("{val_loss:.6}"), gif.display().to_string()))
}

/// How a model folder names the text encoder of `--text-encoder DIR`: an encoder of the
/// text-encoder cache is named (the model folder stays small); any other folder is copied to
/// `copy_to`, which the spec then names relative to its model folder.
pub fn text_encoder_spec(dir: &Path, copy_to: &Path) -> Result<TextEncoderSpec> {
    let kind = TextEncoderKind::detect(dir)?;
    if let Some(root) = motion_dit::text_encoder_cache_dir()
        && let (Ok(root), Ok(dir)) = (root.canonicalize(), dir.canonicalize())
        && let Ok(rest) = dir.strip_prefix(&root)
        && rest.components().count() == 1
    {
        return Ok(TextEncoderSpec::cached(
            kind,
            rest.to_string_lossy().into_owned(),
        ));
    }
    copy_folder(dir, copy_to)?;
    let name = copy_to
        .file_name()
        .context("text encoder copy has no name")?;
    Ok(TextEncoderSpec::folder(kind, name))
}

/// Copies the files of `from` (and its sub-folders) into `to`.
pub fn copy_folder(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_folder(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).with_context(|| {
                format!("copying {} to {}", entry.path().display(), target.display())
            })?;
        }
    }
    Ok(())
}
