//! What the `evaluate` and `sampler_sweep` examples share: the model and evaluator arguments,
//! progress bars, and preparing an evaluation (caption features, real and text embeddings).

use std::path::{Path, PathBuf};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use motion_dit::candle::Device;
use motion_dit::evaluate::{self, EvalSample, Evaluation, TextSource, TmrFiles};
use motion_dit::motion_data::{FolderDataset, FolderOptions, MotionSource, Split};
use motion_dit::tmr::Tmr;
use motion_dit::{MotionModel, PipelineError, TextToMotion};

/// The model under evaluation and the evaluator.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// A model folder of ours, or a reference `.ckpt` / `.pt` / `.safetensors` (with
    /// --stats) [default: the bundled default model].
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<PathBuf>,
    /// Path stem of the model's mean/std statistics (`data/stats/tmr-rifke` for
    /// `tmr-rifke-mean.pt` + `tmr-rifke-std.pt`).
    #[arg(long, value_name = "STEM")]
    pub stats: Option<PathBuf>,
    /// Attention heads of a reference checkpoint (not stored in its weights).
    #[arg(long, default_value_t = 16)]
    pub heads: usize,
    /// Arithmetic of the model's products: f32, or bf16 (weights rounded to bfloat16 once;
    /// faster on CPUs with AVX512-BF16, the same numbers through f32 elsewhere).
    #[arg(long, default_value = "f32")]
    pub precision: dit::Precision,
    /// A text-encoder folder (config.json, model.safetensors, tokenizer.json; CLIP or a sentence
    /// encoder) whose features condition the model and feed the TMR text encoder [default: the
    /// dataset's caption_clip/ features, else the model folder's text encoder].
    #[arg(long, value_name = "DIR")]
    pub text_encoder: Option<PathBuf>,
    /// The TMR evaluator folder (checkpoints/tmr-{motion,text}_encoder.pt, optional
    /// checkpoints/tmr_config.json and stats/tmr-rifke-*), e.g. the `train_tmr` output
    /// [default: the bundled evaluator of the synthetic set, assets/default_evaluator].
    #[arg(long, value_name = "DIR", default_value = motion_dit::DEFAULT_EVALUATOR_DIR)]
    pub tmr: PathBuf,
    /// Path stem of the TMR motion statistics [default: the TMR folder's, else the model's].
    #[arg(long, value_name = "STEM")]
    pub tmr_stats: Option<PathBuf>,
}

/// A loaded model (as a pipeline), its evaluator and where the evaluator's statistics came from.
pub struct Loaded {
    /// The model.
    pub pipeline: TextToMotion,
    /// The TMR evaluator.
    pub tmr: Tmr,
    /// Where its motion statistics came from (not every example reports it).
    #[allow(dead_code)]
    pub tmr_stats: String,
}

impl ModelArgs {
    /// The model path: `--checkpoint`, else the bundled default model.
    pub fn checkpoint(&self) -> Result<PathBuf, PipelineError> {
        match &self.checkpoint {
            Some(p) => Ok(p.clone()),
            None => motion_dit::default_model_path(),
        }
    }

    /// Where the captions' text features come from ([`TextSource::choose`]) for a dataset
    /// that has (`has_text`) or lacks precomputed `caption_clip/` features.
    pub fn text_source(
        &self,
        data: &Path,
        has_text: bool,
        device: &Device,
    ) -> Result<TextSource, PipelineError> {
        TextSource::choose(
            self.text_encoder.as_deref(),
            data,
            has_text,
            &self.checkpoint()?,
            device,
        )
    }

    /// Loads the model and the evaluator (the TMR files found first, so a missing evaluator
    /// fails before the model is read).
    pub fn load(&self, device: &Device) -> Result<Loaded, PipelineError> {
        let tmr_files = TmrFiles::find(&self.tmr)?;
        let checkpoint = self.checkpoint()?;
        let model = MotionModel::load(&checkpoint, self.stats.as_deref(), self.heads, device)?
            .with_precision(self.precision)?;
        if let Some(note) = self.precision.emulation_note() {
            eprintln!("note: {note}");
        }
        let (tmr, tmr_stats) =
            tmr_files.load(self.tmr_stats.as_deref(), model.normalizer(), device)?;
        Ok(Loaded {
            pipeline: TextToMotion::new(model),
            tmr,
            tmr_stats,
        })
    }
}

/// A progress bar of `len` with an indicatif `template`.
pub fn bar(len: usize, template: &str) -> ProgressBar {
    ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}

/// [`Evaluation::prepare`] with a progress bar.
pub fn prepare(
    loaded: &Loaded,
    samples: Vec<EvalSample>,
    text_source: &TextSource,
    seed: u64,
    batch_size: usize,
) -> Result<Evaluation, PipelineError> {
    let b = bar(samples.len(), "{msg:10} {bar:30} {pos}/{len}");
    let eval = Evaluation::prepare(
        &loaded.pipeline,
        &loaded.tmr,
        samples,
        text_source,
        seed,
        batch_size,
        &mut |stage, done, total| {
            b.set_message(stage.to_string());
            b.set_length(total as u64);
            b.set_position(done as u64);
        },
    )?;
    b.finish_and_clear();
    Ok(eval)
}

/// The first `count` samples of a split of the dataset at `data` (all when it holds fewer),
/// and whether it has precomputed `caption_clip/` features.
pub fn open_samples(
    data: &Path,
    split: Split,
    count: usize,
) -> Result<(Vec<EvalSample>, bool), PipelineError> {
    let dataset = FolderDataset::open(
        data,
        split,
        &FolderOptions {
            limit: Some(count),
            ..FolderOptions::default()
        },
    )
    .map_err(|e| evaluate::data_error(data, e))?;
    Ok((
        evaluate::select_samples(&dataset, count)?,
        dataset.has_text(),
    ))
}

/// A typed error naming a command-line option.
pub fn option(name: &str, reason: impl Into<String>) -> PipelineError {
    PipelineError::Option {
        name: name.into(),
        reason: reason.into(),
    }
}

/// Checks the scoring flags before anything heavy is loaded: `--batch-size` above the largest
/// R@k, at least 2 `--resamples`, a `--confidence` strictly between 0 and 1.
pub fn check_scoring(
    batch_size: usize,
    resamples: usize,
    confidence: f64,
) -> Result<(), PipelineError> {
    let k = evaluate::TOP_K[evaluate::TOP_K.len() - 1];
    if batch_size <= k {
        return Err(option(
            "--batch-size",
            format!("{batch_size} must be above {k}: R@{k} ranks among the batch"),
        ));
    }
    if resamples < 2 {
        return Err(option("--resamples", "must be at least 2"));
    }
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(option("--confidence", "must lie strictly between 0 and 1"));
    }
    Ok(())
}
