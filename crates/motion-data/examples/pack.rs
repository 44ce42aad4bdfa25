//! Packs a dataset folder (reference layout) into memory-mapped `.safetensors` shards.
//!
//! ```text
//! cargo run --release -p motion-data --example pack -- <folder> <out>
//! ```
//!
//! Reads every split whose `humanml3d_<split>_split.txt` exists, checks every file (all faults
//! are listed at once, and nothing is written for a faulty split), and writes
//! `<out>/<split>.safetensors` + `<out>/<split>.json` per split.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(folder), Some(out)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: pack <folder> <out>");
    };
    let (folder, out) = (PathBuf::from(folder), PathBuf::from(out));
    let start = std::time::Instant::now();
    let written = motion_data::pack_folder(&folder, &out)?;
    for w in &written {
        println!(
            "{}: {} motions{} -> {}",
            w.split,
            w.ids.len(),
            if w.has_text {
                " with CLIP features"
            } else {
                ""
            },
            out.join(&w.shard).display()
        );
    }
    println!("packed in {:.2} s", start.elapsed().as_secs_f32());
    Ok(())
}
