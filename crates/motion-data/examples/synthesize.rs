//! Writes a synthetic motion set in the reference folder layout.
//!
//! ```text
//! cargo run --release -p motion-data --example synthesize -- --out DIR --motions N --seed S \
//!     [--preview PREVIEW_DIR] [--pack PACK_DIR] [--body SMPLH.npz]
//! ```
//!
//! Writes `DIR/humanml3d_{train,val,test}_split.txt` (80/10/10), `DIR/smpl_rifke/<id>.npy`
//! (raw `[F, 205]` SMPL-RIFKE features, 20 fps) and `DIR/caption_raw/<id>.txt` (three captions
//! per motion). CLIP caption features (`caption_clip/`) are not written: they need the CLIP
//! text model. `--preview` also writes one stick-figure PNG per family (the first motion of
//! each); `--pack` packs the folder into memory-mapped shards afterwards; `--body` takes the
//! skeleton (rest joints, sole height) from an SMPL-H-layout body model such as the open body
//! `assets/open_body/smplh_open.npz` instead of the built-in anthropometric one.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use motion_data::synth::{Family, SynthSkeleton, synth_motion, synthesize_folder_with};

#[path = "common/preview.rs"]
mod preview;

#[derive(Parser, Debug)]
#[command(about = "Write a synthetic motion set in the reference folder layout")]
struct Args {
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Number of motions.
    #[arg(long, default_value_t = 1000)]
    motions: usize,
    /// Seed (same seed, same set).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write stick-figure previews (one PNG per family) into this folder.
    #[arg(long)]
    preview: Option<PathBuf>,
    /// Also pack the set into this folder (memory-mapped safetensors shards).
    #[arg(long)]
    pack: Option<PathBuf>,
    /// Take the skeleton from this SMPL-H-layout body model (.npz).
    #[arg(long)]
    body: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bar = indicatif::ProgressBar::new(args.motions as u64);
    let start = std::time::Instant::now();
    let skeleton = match &args.body {
        Some(path) => {
            let body = smpl::BodyModel::from_npz(path, &candle::Device::Cpu)
                .with_context(|| format!("loading {}", path.display()))?;
            SynthSkeleton::from_body_model(&body)?
        }
        None => SynthSkeleton::default(),
    };
    let summary = synthesize_folder_with(&args.out, args.motions, args.seed, &skeleton, |i| {
        bar.set_position(i as u64)
    })
    .with_context(|| format!("writing {}", args.out.display()))?;
    bar.finish_and_clear();
    println!(
        "wrote {} motions ({} frames, {:.1} min at 20 fps) to {} in {:.1} s; splits: {}",
        summary.motions,
        summary.frames,
        summary.frames as f32 / 20.0 / 60.0,
        args.out.display(),
        start.elapsed().as_secs_f32(),
        summary
            .splits
            .iter()
            .map(|(s, n)| format!("{} {n}", s.name()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(dir) = &args.preview {
        std::fs::create_dir_all(dir)?;
        for (i, family) in Family::ALL.iter().enumerate().take(args.motions) {
            let m = synth_motion(args.seed, i, &skeleton);
            let path = dir.join(format!("{i:06}_{}.png", family.name()));
            preview::render(&m, &path)?;
            println!(
                "preview {} ({}): {}",
                path.display(),
                m.captions[0],
                m.frames()
            );
        }
    }
    if let Some(dir) = &args.pack {
        let written = motion_data::pack_folder(&args.out, dir)?;
        for w in written {
            println!(
                "packed {} motions of split {} into {}",
                w.ids.len(),
                w.split,
                dir.join(&w.shard).display()
            );
        }
    }
    Ok(())
}
