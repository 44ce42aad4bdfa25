//! `motion-dit`: text-to-human-motion generation with diffusion transformers on candle.
//!
//! This root package re-exports the workspace crates under one name, holds the pipeline that
//! turns a caption into a moving body ([`TextToMotion`] over a [`MotionModel`]) and the writers
//! of its files ([`output`]), and owns the top-level examples and benches. Each crate is usable
//! on its own:
//!
//! | crate | purpose |
//! | --- | --- |
//! | [`smpl`] | SMPL / SMPL-H body models, skinning, rotation maths |
//! | [`motion_repr`] | SMPL-RIFKE 205-d features, feature layout, normalisation |
//! | [`diffusion`] | `Denoiser` trait, noise schedule, loss, samplers, guidance, training utilities |
//! | [`dit`] | the three diffusion transformers, reference-checkpoint loading |
//! | [`tmr`] | TMR motion/text encoders, CLIP and sentence-BERT text encoders |
//! | [`metrics`] | Fréchet distance, PRDC, retrieval, TMR-score, diversity, intervals |
//! | [`motion_data`] | dataset reader, packed shards, batching, synthetic motions |
//! | [`motion_viz`] | software renderer to PNG / GIF / MP4 |
//! | [`motion_export`] | BVH, glTF binary and `.npy` exports |
//!
//! The dependency direction between them is an invariant (see `docs/architecture.md`) and is
//! checked by this package's `dependency_direction` test.
#![warn(missing_docs)]

pub mod descriptors;
pub mod editing;
pub mod error;
pub mod evaluate;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod sweep;
pub mod whitening;

pub use error::{PipelineError, Result};
pub use model::{
    FETCH_MINILM_HINT, MINILM_NAME, ModelConfig, ModelSource, MotionModel, SamplingDefaults,
    TextEncoderKind, TextEncoderSpec, cached_text_encoder, load_text_encoder, open_text_encoder,
    save_model_folder, text_encoder_cache_dir,
};
pub use pipeline::{GenerateOptions, Motion, Progress, Request, TextInput, TextToMotion};

pub use diffusion;
pub use dit;
pub use metrics;
pub use motion_data;
pub use motion_export;
pub use motion_repr;
pub use motion_viz;
pub use smpl;
pub use tmr;

/// The tensor library every crate of the workspace is built on.
pub use candle;

use std::path::{Path, PathBuf};

/// Folder of the bundled default model, inside this package.
pub const DEFAULT_MODEL_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/default_model");

/// Folder of the bundled TMR evaluator of the synthetic set (the `train_tmr` layout), inside
/// this package.
pub const DEFAULT_EVALUATOR_DIR: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/assets/default_evaluator");

/// The open body model (SMPL-H skeleton over CC0 MakeHuman assets), inside this package.
pub const OPEN_BODY_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/open_body/smplh_open.npz"
);

/// The bundled default model folder, or an error saying what to pass instead when this
/// checkout has none.
pub fn default_model_path() -> Result<PathBuf> {
    let dir = PathBuf::from(DEFAULT_MODEL_DIR);
    if dir.join("config.json").is_file() {
        Ok(dir)
    } else {
        Err(PipelineError::MissingFile {
            what: "default model".into(),
            path: dir,
            hint: "no default model is bundled in this checkout: pass --checkpoint with a model \
                   folder written by the `train` example, or a reference checkpoint with --stats"
                .into(),
        })
    }
}

/// The device called `name`: `cpu`, `cuda` or `cuda:N`.
pub fn device_from_name(name: &str) -> Result<candle::Device> {
    let bad = |reason: String| PipelineError::Option {
        name: "device".into(),
        reason,
    };
    match name {
        "cpu" => Ok(candle::Device::Cpu),
        _ if name == "cuda" || name.starts_with("cuda:") => {
            let ordinal = match name.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .map_err(|_| bad(format!("{name:?}: expected cuda:<ordinal>")))?,
                None => 0,
            };
            if !candle::utils::cuda_is_available() {
                return Err(bad(format!(
                    "{name:?}: this build has no CUDA support (build with --features cuda)"
                )));
            }
            candle::Device::new_cuda(ordinal).map_err(|e| bad(format!("{name:?}: {e}")))
        }
        other => Err(bad(format!(
            "unknown device {other:?} (expected cpu or cuda)"
        ))),
    }
}

/// Reads a prompts file: one caption a line, surrounding blanks trimmed, empty lines skipped.
/// An empty file (no caption) is an error.
pub fn read_prompts_file(path: &Path) -> Result<Vec<String>> {
    if !path.is_file() {
        return Err(PipelineError::MissingFile {
            what: "prompts file".into(),
            path: path.to_path_buf(),
            hint: "give a text file with one caption a line".into(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|e| error::read_err(path, e))?;
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if lines.is_empty() {
        return Err(error::read_err(path, "holds no caption"));
    }
    Ok(lines)
}
