//! A dataset sample on the body: prints its number of frames and feature width, then writes a
//! GIF (and, with `--mp4`, an MP4) of the posed mesh with its caption. The reference's first
//! exercise, on any folder in the reference layout.
//!
//! On a fresh clone (the synthetic set stands in for HumanML3D):
//!
//! ```sh
//! cargo run --release -p motion-data --example synthesize -- --out data/synth --motions 200 --seed 0
//! cargo run --release --example visualize_smpl -- --data data/synth --split test --index 0 --out out/vis
//! cargo run --release --example visualize_smpl -- --data data/synth --find "jumps" --contact-sheet --mp4
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use motion_dit::candle::{Device, Tensor};
use motion_dit::motion_data::{FolderDataset, FolderOptions, Split};
use motion_dit::output::{FileOptions, write_motion_files};
use motion_dit::{Motion, model::REFERENCE_FPS};

/// Render one sample of a dataset folder on the body model.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Dataset folder in the reference layout (split files, smpl_rifke/, caption_raw/).
    #[arg(long)]
    data: PathBuf,
    /// Split: train, val or test.
    #[arg(long, default_value = "test")]
    split: String,
    /// Sample id (file stem); overrides --index.
    #[arg(long)]
    id: Option<String>,
    /// Position of the sample in the split.
    #[arg(long, default_value_t = 0)]
    index: usize,
    /// The first sample whose first caption contains this text (overrides --index).
    #[arg(long, value_name = "TEXT")]
    find: Option<String>,
    /// Output folder.
    #[arg(long, default_value = "out/visualize")]
    out: PathBuf,
    /// Also write an MP4.
    #[arg(long)]
    mp4: bool,
    /// Also write a contact sheet (six frames side by side, PNG).
    #[arg(long)]
    contact_sheet: bool,
    /// Body model (default: the open body model).
    #[arg(long)]
    body: Option<PathBuf>,
    /// Video size in pixels (square).
    #[arg(long, default_value_t = 320)]
    size: u32,
    /// Frames per second of the data.
    #[arg(long, default_value_t = REFERENCE_FPS)]
    fps: f32,
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let split = Split::parse(&args.split)
        .with_context(|| format!("unknown split {:?} (train, val or test)", args.split))?;
    let data = FolderDataset::open(&args.data, split, &FolderOptions::default())?;
    let samples = data.samples();
    let sample = match &args.id {
        Some(id) => samples.iter().find(|s| &s.id == id).with_context(|| {
            format!(
                "no sample {id:?} in the {} split of {}",
                args.split,
                args.data.display()
            )
        })?,
        None if args.find.is_some() => {
            let needle = args.find.as_deref().unwrap_or_default();
            samples
                .iter()
                .find(|s| s.captions.first().is_some_and(|c| c.contains(needle)))
                .with_context(|| {
                    format!(
                        "no sample of the {} split of {} has a caption containing {needle:?}",
                        args.split,
                        args.data.display()
                    )
                })?
        }
        None => match samples.get(args.index) {
            Some(s) => s,
            None => bail!(
                "--index {} is out of range: the {} split of {} has {} samples",
                args.index,
                args.split,
                args.data.display(),
                samples.len()
            ),
        },
    };
    let width = sample.features.len() / sample.frames.max(1);
    println!(
        "sample {}: F = {} frames, {} features per frame",
        sample.id, sample.frames, width
    );
    let caption = sample.captions.first().cloned().unwrap_or_default();
    println!("caption: {caption}");
    motion_dit::output::ensure_writable_dir(&args.out)?;
    let features = Tensor::from_vec(
        sample.features.clone(),
        (sample.frames, width),
        &Device::Cpu,
    )?;
    let motion = Motion::from_features(features, args.fps, Some(caption.clone()), 0)?;
    let body = motion_dit::output::load_body(args.body.as_deref())?;
    let opts = FileOptions {
        npy: false,
        bvh: false,
        glb: false,
        mp4: args.mp4,
        contact_sheet: args.contact_sheet,
        size: args.size,
        ..FileOptions::default()
    };
    let files = write_motion_files(&args.out, &sample.id, &motion, &body, &caption, &opts)?;
    for f in files.values() {
        println!("wrote {}", args.out.join(f).display());
    }
    Ok(())
}
