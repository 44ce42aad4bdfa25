//! Captions in, text features out: one `.npy` per caption, for `generate --text-features`, for
//! tests that must not need a text encoder, or to inspect what a model is conditioned on.
//!
//! ```sh
//! # The default model's encoder (all-MiniLM-L6-v2 from the text-encoder cache): pooled [384]
//! cargo run --release --example encode_text -- --prompt "a person walks forward" --out out/text
//! # A CLIP folder, token states [L, 512] (start of text .. end of text)
//! cargo run --release --example encode_text -- --text-encoder models/clip-vit-base-patch32 \
//!     --tokens --prompt "a person walks forward" --out out/text
//! ```
//!
//! Writes `NNN.npy` per caption (float32; `[C]` pooled, or `[L, C]` with `--tokens`) and
//! `captions.json` (`[{"caption": ..., "file": "NNN.npy"}]`, plus the encoder's folder).

use std::path::PathBuf;
use std::process::ExitCode;

use candle::IndexOp;
use clap::Parser;
use motion_dit::PipelineError;
use serde_json::json;

/// Encode captions with a text encoder and write the features as .npy files.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// A caption; repeat for several.
    #[arg(long = "prompt", value_name = "TEXT")]
    prompts: Vec<String>,
    /// A file with one caption a line (blank lines skipped).
    #[arg(long, value_name = "FILE")]
    prompts_file: Option<PathBuf>,
    /// A Hugging Face text-encoder folder (CLIP or sentence encoder, told apart by its
    /// config.json) [default: all-MiniLM-L6-v2 from the text-encoder cache].
    #[arg(long, value_name = "DIR")]
    text_encoder: Option<PathBuf>,
    /// Write the token states `[L, C]` instead of the pooled vector `[C]`.
    #[arg(long)]
    tokens: bool,
    /// Output folder.
    #[arg(long, default_value = "out/text")]
    out: PathBuf,
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), PipelineError> {
    let mut captions = args.prompts.clone();
    if let Some(file) = &args.prompts_file {
        captions.extend(motion_dit::read_prompts_file(file)?);
    }
    if captions.is_empty() {
        return Err(PipelineError::Option {
            name: "--prompt".into(),
            reason: "give at least one --prompt or --prompts-file".into(),
        });
    }
    if let Some(i) = captions.iter().position(|c| c.trim().is_empty()) {
        return Err(PipelineError::Request {
            index: i,
            reason: "the caption is empty".into(),
        });
    }
    let folder = match &args.text_encoder {
        Some(dir) => dir.clone(),
        None => motion_dit::cached_text_encoder(motion_dit::MINILM_NAME)?,
    };
    let device = candle::Device::Cpu;
    let (kind, encoder) = motion_dit::open_text_encoder(&folder, &device)?;
    motion_dit::output::ensure_writable_dir(&args.out)?;
    let mut index = Vec::with_capacity(captions.len());
    for (i, caption) in captions.iter().enumerate() {
        let f = encoder.encode(&[caption.as_str()])?;
        let features = if args.tokens {
            let n = f.mask.i(0)?.sum_all()?.to_scalar::<f32>()? as usize;
            f.tokens.i(0)?.narrow(0, 0, n)?
        } else {
            f.pooled.i(0)?
        };
        let name = format!("{i:03}.npy");
        let path = args.out.join(&name);
        motion_dit::motion_export::write_tensor_npy(&path, &features)?;
        println!("{caption:?}: {:?} -> {}", features.dims(), path.display());
        index.push(json!({ "caption": caption, "file": name }));
    }
    let manifest = json!({
        "text_encoder": folder.file_name().map(|n| n.to_string_lossy().into_owned()),
        "kind": format!("{kind:?}").to_lowercase(),
        "features": if args.tokens { "tokens" } else { "pooled" },
        "captions": index,
    });
    let path = args.out.join("captions.json");
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| PipelineError::Write {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    motion_dit::output::write_atomic(&path, text.as_bytes())?;
    println!("index: {}", path.display());
    Ok(())
}
