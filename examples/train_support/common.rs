//! Shared pieces of the `train` and `train_tmr` examples: one-line errors, the device, the
//! output folder, the dataset (reference folder or packed shards), the training window and the
//! batches of each step, feature statistics, the text features of every caption (computed
//! once), `loss.csv` and the progress bar.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use candle::{DType, Device, IndexOp, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use motion_data::{
    Batch, BatchConfig, Batcher, DataError, FEATURE_DIM, FolderDataset, FolderOptions,
    MotionSource, PackedDataset, Split, TEXT_DIM,
};
use motion_repr::Normalizer;
use tmr::TextEncoder;

/// Ends `main`: prints an error as ONE line, `error: <context>: <cause>: ...`, exit code 1.
pub fn exit_with(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            let line = chain.join(": ").replace('\n', "; ");
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

/// `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    /// The CPU.
    Cpu,
    /// The first CUDA GPU (needs `--features cuda`).
    Cuda,
}

impl DeviceArg {
    /// The candle device.
    pub fn device(self) -> Result<Device> {
        match self {
            DeviceArg::Cpu => Ok(Device::Cpu),
            DeviceArg::Cuda => Device::new_cuda(0)
                .context("--device cuda (build with `--features cuda` on a machine with a GPU)"),
        }
    }
}

/// Creates `--out` and checks that it accepts files, before any work is done.
pub fn prepare_out(out: &Path) -> Result<()> {
    motion_dit::output::ensure_writable_dir(out).with_context(|| format!("--out {}", out.display()))
}

/// The train and validation splits of a dataset.
pub struct Data {
    /// Training split.
    pub train: Box<dyn MotionSource>,
    /// Validation split (may be empty).
    pub val: Box<dyn MotionSource>,
    /// `"folder"` or `"packed"`.
    pub kind: &'static str,
}

fn data_err(e: DataError) -> anyhow::Error {
    match e {
        // A fault report lists every fault on its own line: keep the count and the first.
        DataError::Faults(r) => {
            let first = r.faults.first().map(|f| f.to_string()).unwrap_or_default();
            let first = first.trim_start_matches(": ");
            anyhow::anyhow!(
                "{} fault(s) in dataset folder {}; first: {first}",
                r.faults.len(),
                r.root.display()
            )
        }
        other => other.into(),
    }
}

/// Opens `--data`: packed shards when `<dir>/train.json` exists, the reference folder
/// layout otherwise; an error when the train split has fewer motions than `batch_size`.
pub fn open_data(dir: &Path, batch_size: usize) -> Result<Data> {
    let ctx = || format!("--data {}", dir.display());
    if !dir.is_dir() {
        bail!(
            "--data {}: no such folder (expected the reference layout: \
             humanml3d_train_split.txt, smpl_rifke/, caption_raw/; make a synthetic one with \
             `cargo run --release -p motion-data --example synthesize -- --out DIR`)",
            dir.display()
        );
    }
    let data = if dir.join("train.json").is_file() {
        let open = |s| {
            PackedDataset::open(dir, s)
                .map_err(data_err)
                .with_context(ctx)
        };
        Data {
            train: Box::new(open(Split::Train)?),
            val: Box::new(open(Split::Val)?),
            kind: "packed",
        }
    } else {
        let open = |s| {
            FolderDataset::open(dir, s, &FolderOptions::default())
                .map_err(data_err)
                .with_context(ctx)
        };
        Data {
            train: Box::new(open(Split::Train)?),
            val: Box::new(open(Split::Val)?),
            kind: "folder",
        }
    };
    if data.train.is_empty() {
        bail!("--data {}: the train split is empty", dir.display());
    }
    if data.train.len() < batch_size {
        bail!(
            "--batch-size {batch_size} is larger than the train split ({} motions)",
            data.train.len()
        );
    }
    Ok(data)
}

/// `--max-frames` when given, else the longest motion of the train split; at least 1.
pub fn window_frames(max_frames: Option<usize>, train: &dyn MotionSource) -> Result<usize> {
    let longest = || (0..train.len()).map(|i| train.frames(i)).max().unwrap_or(0);
    let frames = max_frames.unwrap_or_else(longest);
    if frames == 0 {
        bail!("--max-frames must be at least 1");
    }
    Ok(frames)
}

/// The training batches in step order: epoch `e` visits the train split in
/// `Batcher::order(e)`, `batch_size` motions a step (normalised features).
pub struct TrainBatches<'a> {
    batcher: Batcher<'a, dyn MotionSource + 'a>,
    batch_size: usize,
    /// The epoch whose order is cached, and that order.
    order: (u64, Vec<usize>),
}

impl<'a> TrainBatches<'a> {
    /// Batches of `batch_size` windows of `frames` frames of `src`, drawn from `seed`.
    pub fn new(
        src: &'a dyn MotionSource,
        batch_size: usize,
        frames: usize,
        seed: u64,
        normalizer: &Normalizer,
        device: &Device,
    ) -> Result<Self> {
        let config = BatchConfig::train(batch_size, frames, seed);
        let batcher = Batcher::new(src, config, device.clone())?.with_normalizer(normalizer)?;
        Ok(Self {
            batcher,
            batch_size,
            order: (u64::MAX, Vec::new()),
        })
    }

    /// Steps per epoch.
    pub fn per_epoch(&self) -> u64 {
        self.batcher.num_batches() as u64
    }

    /// The epoch of global step `step` and its batch.
    pub fn get(&mut self, step: u64) -> Result<(u64, Batch)> {
        let per_epoch = self.per_epoch();
        let epoch = step / per_epoch;
        if self.order.0 != epoch {
            self.order = (epoch, self.batcher.order(epoch));
        }
        let (k, bs) = ((step % per_epoch) as usize, self.batch_size);
        let batch = self
            .batcher
            .batch(&self.order.1[k * bs..(k + 1) * bs], epoch)?;
        Ok((epoch, batch))
    }
}

/// Calls `f` on every frame (raw features `[205]`) of every motion of `src`.
fn for_each_frame(src: &dyn MotionSource, mut f: impl FnMut(&[f32])) -> Result<()> {
    let mut buf = Vec::new();
    for i in 0..src.len() {
        buf.resize(src.frames(i) * FEATURE_DIM, 0.0);
        src.copy_frames(i, 0, &mut buf)?;
        buf.chunks_exact(FEATURE_DIM).for_each(&mut f);
    }
    Ok(())
}

/// Per-feature mean and (population) standard deviation over every frame of `src` (raw
/// features), in f64, two passes. A feature whose std is below 1e-5 (constant in the data)
/// gets std 1, so it normalises to 0 instead of dividing by ~0.
pub fn feature_stats(src: &dyn MotionSource) -> Result<Normalizer> {
    let (mut sum, mut n) = (vec![0f64; FEATURE_DIM], 0usize);
    for_each_frame(src, |x| {
        sum.iter_mut().zip(x).for_each(|(s, &v)| *s += v as f64);
        n += 1;
    })?;
    let mean: Vec<f64> = sum.iter().map(|s| s / n.max(1) as f64).collect();
    let mut sq = vec![0f64; FEATURE_DIM];
    for_each_frame(src, |x| {
        for ((s, &v), m) in sq.iter_mut().zip(x).zip(&mean) {
            *s += (v as f64 - m).powi(2);
        }
    })?;
    let std: Vec<f32> = sq
        .iter()
        .map(|s| (s / n.max(1) as f64).sqrt())
        .map(|s| if s < 1e-5 { 1.0 } else { s as f32 })
        .collect();
    let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    let t = |v: Vec<f32>| Tensor::from_vec(v, FEATURE_DIM, &Device::Cpu);
    Ok(Normalizer::new(t(mean)?, t(std)?)?)
}

/// `--stats STEM` when given, else statistics computed over the train split.
pub fn stats(stem: Option<&Path>, train: &dyn MotionSource) -> Result<Normalizer> {
    match stem {
        Some(stem) => motion_dit::model::read_stats_stem(stem, &Device::Cpu)
            .with_context(|| format!("--stats {}", stem.display())),
        None => feature_stats(train),
    }
}

/// Text features of every caption of one split, computed by a text encoder: pooled `[C]` per
/// caption and (when kept) tokens `[L, C]`, start of text through end of text.
pub struct CaptionTable {
    /// Feature width `C`.
    pub dim: usize,
    /// Index of the first caption of each sample in `pooled` / `tokens`.
    first: Vec<usize>,
    /// Pooled features, `C` per caption, in sample order.
    pub pooled: Vec<f32>,
    tokens: Vec<Vec<f32>>,
}

/// Where the text features of a split's captions come from.
pub enum CaptionText<'a> {
    /// The dataset's precomputed CLIP features (`caption_clip/`).
    Dataset(&'a dyn MotionSource),
    /// Computed once by a text encoder at start-up.
    Encoded(CaptionTable),
}

/// Encodes every distinct caption of `src` once, in batches of 64, updating `bar`.
pub fn encode_captions(
    src: &dyn MotionSource,
    encoder: &dyn TextEncoder,
    keep_tokens: bool,
    bar: &ProgressBar,
) -> Result<CaptionTable> {
    let dim = encoder.dim();
    // Caption k of the table (sample order) is distinct caption `which[k]`.
    let mut first = Vec::with_capacity(src.len());
    let mut which = Vec::new();
    let mut distinct: Vec<&str> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for i in 0..src.len() {
        first.push(which.len());
        for c in src.captions(i) {
            let next = distinct.len();
            let k = *index.entry(c.as_str()).or_insert(next);
            if k == next {
                distinct.push(c.as_str());
            }
            which.push(k);
        }
    }
    let mut pooled = Vec::with_capacity(distinct.len() * dim);
    let mut tokens = Vec::new();
    for chunk in distinct.chunks(64) {
        let f = encoder
            .encode(chunk)
            .with_context(|| format!("encoding captions (first: {:?})", chunk[0]))?;
        let f_cpu = |t: &Tensor| t.to_device(&Device::Cpu)?.to_dtype(DType::F32);
        pooled.extend(f_cpu(&f.pooled)?.flatten_all()?.to_vec1::<f32>()?);
        if keep_tokens {
            let lengths = f_cpu(&f.mask)?.sum(1)?.to_vec1::<f32>()?;
            let t = f_cpu(&f.tokens)?;
            for (b, l) in lengths.iter().enumerate() {
                let rows = t.i(b)?.narrow(0, 0, *l as usize)?;
                tokens.push(rows.flatten_all()?.to_vec1::<f32>()?);
            }
        }
        bar.inc(chunk.len() as u64);
    }
    let mut table = CaptionTable {
        dim,
        first,
        pooled: Vec::with_capacity(which.len() * dim),
        tokens: Vec::new(),
    };
    for &k in &which {
        table
            .pooled
            .extend_from_slice(&pooled[k * dim..(k + 1) * dim]);
        if keep_tokens {
            table.tokens.push(tokens[k].clone());
        }
    }
    Ok(table)
}

impl CaptionText<'_> {
    /// Feature width `C`.
    pub fn dim(&self) -> usize {
        match self {
            CaptionText::Dataset(_) => TEXT_DIM,
            CaptionText::Encoded(t) => t.dim,
        }
    }

    fn pooled_of(&self, i: usize, c: usize, out: &mut Vec<f32>) -> Result<()> {
        match self {
            CaptionText::Dataset(src) => Ok(src.text_pooled(i, c, out)?),
            CaptionText::Encoded(t) => {
                let k = t.first[i] + c;
                out.extend_from_slice(&t.pooled[k * t.dim..(k + 1) * t.dim]);
                Ok(())
            }
        }
    }

    fn tokens_of(&self, i: usize, c: usize, out: &mut Vec<f32>) -> Result<usize> {
        match self {
            CaptionText::Dataset(src) => Ok(src.text_tokens(i, c, out)?),
            CaptionText::Encoded(t) => {
                let rows = t
                    .tokens
                    .get(t.first[i] + c)
                    .context("token features were not kept")?;
                out.extend_from_slice(rows);
                Ok(rows.len() / t.dim)
            }
        }
    }

    /// Pooled features `[B, C]` of caption `captions[b]` of sample `samples[b]`.
    pub fn pooled(&self, samples: &[usize], captions: &[usize], device: &Device) -> Result<Tensor> {
        let mut out = Vec::with_capacity(samples.len() * self.dim());
        for (&i, &c) in samples.iter().zip(captions) {
            self.pooled_of(i, c, &mut out)?;
        }
        Ok(Tensor::from_vec(out, (samples.len(), self.dim()), device)?)
    }

    /// Token features `[B, L, C]`, zero-padded to `pad_to` tokens (or to the longest caption
    /// of the batch), and the token mask `[B, L]` (1 = valid).
    pub fn tokens(
        &self,
        samples: &[usize],
        captions: &[usize],
        pad_to: Option<usize>,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let d = self.dim();
        let mut rows = Vec::with_capacity(samples.len());
        for (&i, &c) in samples.iter().zip(captions) {
            let mut v = Vec::new();
            let l = self.tokens_of(i, c, &mut v)?;
            rows.push((v, l));
        }
        let longest = rows.iter().map(|r| r.1).max().unwrap_or(1);
        let l = pad_to.unwrap_or(longest).max(longest);
        let mut tokens = vec![0f32; samples.len() * l * d];
        let mut mask = vec![0f32; samples.len() * l];
        for (b, (v, n)) in rows.iter().enumerate() {
            tokens[b * l * d..b * l * d + v.len()].copy_from_slice(v);
            mask[b * l..b * l + n].fill(1.0);
        }
        Ok((
            Tensor::from_vec(tokens, (samples.len(), l, d), device)?,
            Tensor::from_vec(mask, (samples.len(), l), device)?,
        ))
    }
}

/// The caption features of `train` and `val`: the dataset's `caption_clip/` features unless a
/// CLIP text-encoder folder is given (`--text-encoder`, loaded on `device`; an explicit encoder
/// wins).
pub fn caption_text<'a>(
    data: &'a Data,
    text_encoder: Option<&Path>,
    device: &Device,
    keep_tokens: bool,
) -> Result<(CaptionText<'a>, CaptionText<'a>)> {
    match self::text_encoder(text_encoder, device)? {
        None => {
            if !data.train.has_text() {
                bail!(
                    "--text-encoder: the dataset has no precomputed caption_clip/ features; pass \
                     a text-encoder folder (CLIP or a sentence encoder such as all-MiniLM-L6-v2, \
                     e.g. --text-encoder fixtures/text_encoders/clip)"
                );
            }
            Ok((
                CaptionText::Dataset(data.train.as_ref()),
                CaptionText::Dataset(data.val.as_ref()),
            ))
        }
        Some(enc) => {
            // Each split encodes its distinct captions once.
            let n: usize = [&data.train, &data.val]
                .iter()
                .map(|s| {
                    (0..s.len())
                        .flat_map(|i| s.captions(i))
                        .collect::<HashSet<_>>()
                        .len()
                })
                .sum();
            let bar = progress(
                n as u64,
                0,
                "{bar:30} {pos}/{len} distinct captions encoded",
            )?;
            let train = encode_captions(data.train.as_ref(), enc.as_ref(), keep_tokens, &bar)?;
            let val = encode_captions(data.val.as_ref(), enc.as_ref(), keep_tokens, &bar)?;
            bar.finish_and_clear();
            Ok((CaptionText::Encoded(train), CaptionText::Encoded(val)))
        }
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(total: u64, start: u64, template: &str) -> Result<ProgressBar> {
    let bar = ProgressBar::new(total);
    bar.set_style(ProgressStyle::with_template(template)?.progress_chars("=> "));
    bar.set_position(start);
    Ok(bar)
}

/// The training progress bar: steps, elapsed / ETA, and a message (loss, steps/s).
pub fn step_bar(total: u64, start: u64) -> Result<ProgressBar> {
    progress(
        total,
        start,
        "{bar:30} {pos}/{len} steps [{elapsed_precise} < {eta_precise}] {msg}",
    )
}

/// Prints a line on stdout without tearing the progress bar.
pub fn say(bar: &ProgressBar, line: impl AsRef<str>) {
    bar.suspend(|| println!("{}", line.as_ref()));
}

/// Training throughput: steps per second of step time (validation and saving excluded).
#[derive(Debug, Default)]
pub struct Rate {
    busy: Duration,
    steps: u64,
}

impl Rate {
    /// Counts one step that started at `start`; returns the mean steps/s so far.
    pub fn tick(&mut self, start: Instant) -> f64 {
        self.busy += start.elapsed();
        self.steps += 1;
        self.steps as f64 / self.busy.as_secs_f64().max(1e-9)
    }
}

/// An append-only CSV log whose first column is the step. Reopening with `keep_until`
/// (a resumed run) drops the rows after that step, which the resumed run writes again.
pub struct CsvLog {
    file: File,
}

impl CsvLog {
    /// Opens (or creates) `path` with `header`; without `keep_until` the file starts empty.
    pub fn open(path: &Path, header: &str, keep_until: Option<u64>) -> Result<Self> {
        let ctx = || format!("writing {}", path.display());
        let mut text = format!("{header}\n");
        if let (Some(step), Ok(old)) = (keep_until, std::fs::read_to_string(path)) {
            for line in old.lines().skip(1) {
                let s: Option<u64> = line.split(',').next().and_then(|s| s.parse().ok());
                if s.is_some_and(|s| s <= step) {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        diffusion::write_atomic(path, text.as_bytes()).with_context(ctx)?;
        let file = File::options().append(true).open(path).with_context(ctx)?;
        Ok(Self { file })
    }

    /// Appends one row and flushes it.
    pub fn row(&mut self, fields: &[String]) -> Result<()> {
        writeln!(self.file, "{}", fields.join(","))?;
        Ok(self.file.flush()?)
    }
}

/// `--text-encoder DIR`: a CLIP or sentence-encoder folder (told apart by its config.json),
/// checked and loaded (`None` without one).
fn text_encoder(
    dir: Option<&Path>,
    device: &Device,
) -> Result<Option<Box<dyn TextEncoder + Send + Sync>>> {
    let Some(dir) = dir else { return Ok(None) };
    let files = ["config.json", "model.safetensors", "tokenizer.json"];
    require_folder("--text-encoder", dir, &files)?;
    let (_, encoder) = motion_dit::open_text_encoder(dir, device)
        .with_context(|| format!("--text-encoder {}", dir.display()))?;
    Ok(Some(encoder))
}

/// Checks that `path` is a folder holding `files`, naming `flag` and the first missing file.
fn require_folder(flag: &str, path: &Path, files: &[&str]) -> Result<()> {
    if !path.is_dir() {
        bail!("{flag} {}: no such folder", path.display());
    }
    let present: HashSet<String> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if let Some(missing) = files.iter().find(|f| !present.contains(**f)) {
        bail!("{flag} {}: missing {missing}", path.display());
    }
    Ok(())
}
