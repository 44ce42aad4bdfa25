//! `motion-dit`: text-to-human-motion generation with diffusion transformers on candle.
//!
//! This root package re-exports the workspace crates under one name and owns the top-level
//! examples and benches. Each crate is usable on its own:
//!
//! | crate | purpose |
//! | --- | --- |
//! | [`smpl`] | SMPL / SMPL-H body models, skinning, rotation maths, exports |
//! | [`motion_repr`] | SMPL-RIFKE 205-d features, feature layout, normalisation |
//! | [`diffusion`] | `Denoiser` trait, noise schedule, loss, samplers, guidance, training utilities |
//! | [`dit`] | the three diffusion transformers, reference-checkpoint loading |
//! | [`tmr`] | TMR motion/text encoders, CLIP and sentence-BERT text encoders |
//! | [`metrics`] | Fréchet distance, PRDC, retrieval, TMR-score, diversity, intervals |
//! | [`motion_data`] | dataset reader, packed shards, batching, synthetic motions |
//! | [`motion_viz`] | software renderer to PNG / GIF / MP4 |
//!
//! The dependency direction between them is an invariant (see `docs/architecture.md`) and is
//! checked by this package's `dependency_direction` test.
#![warn(missing_docs)]

pub use diffusion;
pub use dit;
pub use metrics;
pub use motion_data;
pub use motion_repr;
pub use motion_viz;
pub use smpl;
pub use tmr;

/// The tensor library every crate of the workspace is built on.
pub use candle;
