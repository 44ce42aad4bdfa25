//! Trains the TMR evaluator (motion and text encoders, contrastive InfoNCE + KL; Petrovich et
//! al., ICCV 2023) on a motion dataset and writes it where the reference loader
//! (`tmr::Tmr::from_reference_checkpoints` over `tmr::reference_checkpoint_paths`) finds it.
//!
//! On a fresh clone (the synthetic set has no precomputed CLIP features: its captions are
//! encoded once at start-up by the small seeded test CLIP):
//!
//! ```sh
//! cargo run --release -p motion-data --example synthesize -- --out data/synth --motions 400 --seed 0
//! cargo run --release --example train_tmr -- --config tiny --data data/synth --out runs/tmr \
//!     --text-encoder fixtures/text_encoders/clip --steps 300 --batch-size 32 --lr 1e-3
//! ```
//!
//! (About 40 s in the dev profile on 2 busy cores; validation recall@1 0.33 over 40 pairs,
//! chance 0.025. The reference's lr 1e-4 is for long runs.)
//!
//! On the reference data (`caption_clip/` token features present): `--config reference --data
//! data/humanml3d --out runs/tmr --epochs 100 --device cuda`.
//!
//! Writes into `--out`:
//! - `checkpoints/tmr-motion_encoder.pt`, `checkpoints/tmr-text_encoder.pt`: PyTorch state
//!   dicts with the reference key names (and the same tensors as `.safetensors`);
//! - `checkpoints/tmr_config.json`: the `tmr::TmrConfig` (sizes) needed to load them;
//! - `stats/tmr-rifke-mean.pt`, `stats/tmr-rifke-std.pt`: the motion statistics (stem
//!   `stats/tmr-rifke`, as the reference ships them);
//! - `loss.csv`: `step,epoch,loss,lr,steps_per_s,nce,kl,embedding`; `val.csv`: `step,epoch,r1`.
//!
//! At the end it reloads the files with the reference loader and prints text-to-motion recall@1
//! over the whole validation split (first captions). There is no `--resume`: the TMR trainer's
//! optimiser state is not checkpointed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use candle::{Device, Tensor};
use clap::Parser;
use motion_data::{BatchConfig, Batcher, MotionSource};
use motion_repr::Normalizer;
use tmr::train::{TmrBatch, TmrTrainConfig, TmrTrainer, recall_at_1};
use tmr::{ActorEncoderConfig, Tmr, TmrConfig};

#[path = "train_support/common.rs"]
mod common;
#[path = "train_support/torch_pt.rs"]
mod torch_pt;
use common::{CaptionText, CsvLog, DeviceArg, Rate, TrainBatches, say};

/// Train the TMR motion/text encoders on a motion dataset folder.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Sizes: a preset (reference: the published evaluator, 6 layers of width 256; tiny: 1
    /// layer of width 32, for CI) or a `tmr::TmrConfig` JSON file.
    #[arg(long, value_name = "PRESET|FILE.json", default_value = "reference")]
    config: String,
    /// Dataset: a folder in the reference layout, or packed shards (`<dir>/train.json`).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Output folder (checkpoints/, stats/, loss.csv).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Passes over the train split (ignored when --steps is given).
    #[arg(long, default_value_t = 50)]
    epochs: u64,
    /// Total optimiser steps.
    #[arg(long)]
    steps: Option<u64>,
    /// Motion/caption pairs per batch (the negatives of InfoNCE).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// AdamW learning rate (constant).
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Seed of the initial weights, dropout and the data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A text-encoder folder (CLIP or a sentence encoder such as all-MiniLM-L6-v2) whose token
    /// features are the text input [default: the
    /// dataset's precomputed caption_clip/ features].
    #[arg(long, value_name = "DIR")]
    text_encoder: Option<PathBuf>,
    /// Path stem of mean/std statistics [default: computed over the train split].
    #[arg(long, value_name = "STEM")]
    stats: Option<PathBuf>,
    /// Frames per training window [default: the longest motion of the train split].
    #[arg(long)]
    max_frames: Option<usize>,
    /// Drop negatives whose pooled caption features have `(cos + 1) / 2` above this (TMR: 0.8
    /// on sentence embeddings; off by default, since CLIP features of different captions are
    /// often that similar).
    #[arg(long)]
    filter_threshold: Option<f64>,
    /// Report validation recall@1 every N epochs; 0 = only at the end.
    #[arg(long, default_value_t = 1)]
    val_every: u64,
    /// Device.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
}

fn main() -> ExitCode {
    common::exit_with(run(Args::parse()))
}

/// `--config`: a preset or a JSON file; presets take the text width of the features.
fn tmr_config(spec: &str) -> Result<(TmrConfig, bool)> {
    match spec {
        "reference" => return Ok((TmrConfig::default(), true)),
        "tiny" => {
            let motion = ActorEncoderConfig {
                latent_dim: 32,
                ff_size: 64,
                num_layers: 1,
                num_heads: 2,
                ..ActorEncoderConfig::tmr_motion()
            };
            let text = ActorEncoderConfig {
                nfeats: 512,
                ..motion.clone()
            };
            return Ok((TmrConfig { motion, text }, true));
        }
        _ => {}
    }
    let path = Path::new(spec);
    if !path.is_file() {
        bail!("--config {spec}: neither a preset (reference, tiny) nor an existing JSON file");
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("--config {spec}"))?;
    let cfg =
        serde_json::from_str(&text).with_context(|| format!("--config {spec}: not a TmrConfig"))?;
    Ok((cfg, false))
}

fn run(args: Args) -> Result<()> {
    let device = args.device.device()?;
    let (mut cfg, preset) = tmr_config(&args.config)?;
    if args.batch_size < 2 {
        bail!("--batch-size must be at least 2 (InfoNCE needs negatives)");
    }
    common::prepare_out(&args.out)?;
    let data = common::open_data(&args.data, args.batch_size)?;
    let (train_text, val_text) =
        common::caption_text(&data, args.text_encoder.as_deref(), &device, true)?;
    if preset {
        cfg.text.nfeats = train_text.dim();
    } else if cfg.text.nfeats != train_text.dim() || cfg.motion.nfeats != motion_data::FEATURE_DIM {
        bail!(
            "--config {}: text.nfeats / motion.nfeats are {} / {}, the data gives {} / {}",
            args.config,
            cfg.text.nfeats,
            cfg.motion.nfeats,
            train_text.dim(),
            motion_data::FEATURE_DIM
        );
    }
    let frames = common::window_frames(args.max_frames, data.train.as_ref())?;
    let normalizer = common::stats(args.stats.as_deref(), data.train.as_ref())?;

    let train_src: &dyn MotionSource = data.train.as_ref();
    let mut batches = TrainBatches::new(
        train_src,
        args.batch_size,
        frames,
        args.seed,
        &normalizer,
        &device,
    )?;
    let per_epoch = batches.per_epoch();
    let total = args.steps.unwrap_or(args.epochs * per_epoch);
    let train_cfg = TmrTrainConfig {
        lr: args.lr,
        filter_threshold: args.filter_threshold,
        seed: args.seed,
        ..TmrTrainConfig::default()
    };
    let mut trainer = TmrTrainer::new(&cfg, train_cfg, &device)?;
    let mut loss_log = CsvLog::open(
        &args.out.join("loss.csv"),
        "step,epoch,loss,lr,steps_per_s,nce,kl,embedding",
        None,
    )?;
    let mut val_log = CsvLog::open(&args.out.join("val.csv"), "step,epoch,r1", None)?;
    println!(
        "training TMR (motion {} / text {}-d input, width {}, {} layers) on {} train motions \
         ({} data, {frames} frames), {per_epoch} steps/epoch, {total} steps",
        cfg.motion.nfeats,
        cfg.text.nfeats,
        cfg.motion.latent_dim,
        cfg.motion.num_layers,
        train_src.len(),
        data.kind
    );
    let bar = common::step_bar(total, 0)?;
    let mut rate = Rate::default();
    for step in 0..total {
        let started = std::time::Instant::now();
        let (epoch, batch) = batches.get(step)?;
        let (text, text_mask) =
            train_text.tokens(&batch.indices, &batch.caption_indices, None, &device)?;
        let text_pooled = match args.filter_threshold {
            Some(_) => Some(train_text.pooled(&batch.indices, &batch.caption_indices, &device)?),
            None => None,
        };
        let l = trainer.step(&TmrBatch {
            motion: batch.motion,
            motion_mask: batch.frame_mask,
            text,
            text_mask,
            text_pooled,
        })?;
        let sps = rate.tick(started);
        let n = step + 1;
        loss_log.row(&[
            n.to_string(),
            epoch.to_string(),
            format!("{:.6}", l.total),
            format!("{:e}", args.lr),
            format!("{sps:.3}"),
            format!("{:.6}", l.nce),
            format!("{:.6}", l.kl),
            format!("{:.6}", l.embedding),
        ])?;
        bar.set_position(n);
        bar.set_message(format!(
            "loss {:.4} (nce {:.3}) | {sps:.2} steps/s",
            l.total, l.nce
        ));
        let validate_now = n.is_multiple_of(per_epoch)
            && args.val_every > 0
            && (n / per_epoch).is_multiple_of(args.val_every);
        if validate_now
            && let Some(r1) = val_recall(
                trainer.model(),
                false,
                data.val.as_ref(),
                &val_text,
                frames,
                &normalizer,
                &device,
            )?
        {
            say(
                &bar,
                format!("step {n}: val R@1 {r1:.3} ({} pairs)", data.val.len()),
            );
            let fields = [
                n.to_string(),
                (n / per_epoch).to_string(),
                format!("{r1:.6}"),
            ];
            val_log.row(&fields)?;
        }
    }
    bar.finish();

    let (motion_pt, text_pt) = save(&trainer, &cfg, &normalizer, &args.out)?;
    let stem = args.out.join("stats").join("tmr-rifke");
    let tmr = Tmr::from_reference_checkpoints(&motion_pt, &text_pt, &cfg, &device)
        .context("reloading the evaluator with the reference loader")?
        .with_normalizer(Normalizer::from_stem(
            args.out.join("stats"),
            "tmr-rifke",
            &device,
        )?)?;
    println!(
        "wrote {} and {} (sizes: {}), statistics {}-{{mean,std}}.pt",
        motion_pt.display(),
        text_pt.display(),
        args.out
            .join("checkpoints")
            .join("tmr_config.json")
            .display(),
        stem.display()
    );
    match val_recall(
        &tmr,
        true,
        data.val.as_ref(),
        &val_text,
        frames,
        &normalizer,
        &device,
    )? {
        Some(r1) => println!(
            "val recall@1 (text -> motion, all {} pairs, first captions): {r1:.3} (chance {:.3})",
            data.val.len(),
            1.0 / data.val.len() as f64
        ),
        None => println!("no validation split: recall@1 not computed"),
    }
    Ok(())
}

/// Saves both encoders (safetensors by `TmrTrainer::save`, converted to the reference `.pt`
/// state dicts), the sizes and the statistics. Returns the `.pt` paths.
fn save(
    trainer: &TmrTrainer,
    cfg: &TmrConfig,
    normalizer: &Normalizer,
    out: &Path,
) -> Result<(PathBuf, PathBuf)> {
    let (motion_pt, text_pt) = tmr::reference_checkpoint_paths(out);
    let dir = out.join("checkpoints");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (motion_st, text_st) = (
        motion_pt.with_extension("safetensors"),
        text_pt.with_extension("safetensors"),
    );
    trainer.save(&motion_st, &text_st)?;
    for (st, pt) in [(&motion_st, &motion_pt), (&text_st, &text_pt)] {
        let tensors: Vec<(String, Tensor)> = tensor_io::safetensors::load(st, &Device::Cpu)?
            .into_iter()
            .collect();
        torch_pt::write_state_dict(pt, &tensors)?;
    }
    let json = serde_json::to_string_pretty(cfg)?;
    diffusion::write_atomic(&dir.join("tmr_config.json"), json.as_bytes())?;
    let stats = out.join("stats");
    std::fs::create_dir_all(&stats).with_context(|| format!("creating {}", stats.display()))?;
    torch_pt::write_tensor(&stats.join("tmr-rifke-mean.pt"), normalizer.mean())?;
    torch_pt::write_tensor(&stats.join("tmr-rifke-std.pt"), normalizer.std())?;
    Ok((motion_pt, text_pt))
}

/// Text-to-motion recall@1 over the whole validation split (first captions, crops from frame
/// 0). With `raw` the motions go in un-normalised, through the model's own statistics
/// (`Tmr::encode_motion`); otherwise they are normalised with `normalizer` here.
/// `None` when the split is empty.
fn val_recall(
    tmr: &Tmr,
    raw: bool,
    val: &dyn MotionSource,
    text: &CaptionText,
    frames: usize,
    normalizer: &Normalizer,
    device: &Device,
) -> Result<Option<f32>> {
    if val.is_empty() {
        return Ok(None);
    }
    let mut batcher = Batcher::new(val, BatchConfig::eval(64, frames), device.clone())?;
    if !raw {
        batcher = batcher.with_normalizer(normalizer)?;
    }
    let (mut m, mut t) = (Vec::new(), Vec::new());
    for batch in batcher.epoch(0) {
        let batch = batch?;
        m.push(if raw {
            tmr.encode_motion(&batch.motion, &batch.frame_mask)?
        } else {
            tmr.encode_normalized_motion(&batch.motion, &batch.frame_mask)?
        });
        let (tokens, mask) = text.tokens(&batch.indices, &batch.caption_indices, None, device)?;
        t.push(tmr.encode_text(&tokens, &mask)?);
    }
    Ok(Some(recall_at_1(
        &Tensor::cat(&m, 0)?,
        &Tensor::cat(&t, 0)?,
    )?))
}
