//! TMR text-to-motion retrieval encoders (ACTOR-style transformers) and the text encoders
//! that turn captions into features (CLIP ViT-B/32 text transformer, sentence BERT).
//!
//! Papers: Petrovich, Black, Varol, "TMR: Text-to-Motion Retrieval Using Contrastive 3D Human
//! Motion Synthesis" (ICCV 2023); Radford et al., "Learning Transferable Visual Models From
//! Natural Language Supervision" (CLIP, 2021); Reimers and Gurevych, "Sentence-BERT" (2019).
//!
//! - [`ActorEncoder`]: the transformer encoder of TMR (DESIGN §4.5), loadable from the
//!   reference `.pt` state dicts;
//! - [`Tmr`]: motion + text encoders returning the mu embeddings used by the metrics;
//! - [`TextEncoder`]: captions -> [`TextFeatures`], implemented by [`ClipTextEncoder`]
//!   (DESIGN §4.7 features) and [`SentenceEncoder`] (all-MiniLM-L6-v2 style);
//! - [`clip`], [`bert`]: the CLIP text transformer and the BERT encoder on packed token rows;
//! - [`train`]: contrastive TMR training (InfoNCE with text-similarity filtering + KL).
//!
//! The transformers run on the fused CPU kernels of `kernels` (inference kernels for
//! `forward`, differentiable ones for [`ActorEncoder::forward_train`]).
//!
//! # Place in the workspace
//! May use `kernels`, `tensor-io`, `motion-repr` (feature normalisation) and `smpl`. It must never depend on `diffusion`,
//! `dit`, `metrics`, `motion-data` or `motion-viz`.
#![warn(missing_docs)]

mod actor;
pub mod bert;
pub mod clip;
mod error;
mod model;
mod nn;
pub mod text;
pub mod train;

pub use actor::{ActorEncoder, ActorEncoderConfig, sinusoidal_table};
pub use error::{Result, TmrError};
pub use model::{Tmr, TmrConfig, reference_checkpoint_paths};
pub use text::{ClipTextEncoder, Folder, SentenceEncoder, TextEncoder, TextFeatures};
