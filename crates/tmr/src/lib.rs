//! TMR text-to-motion retrieval encoders (ACTOR-style transformers) and the text encoders
//! that turn captions into features (CLIP ViT-B/32 text transformer, sentence BERT).
//!
//! # Place in the workspace
//! May use `motion-repr` (feature normalisation) and `smpl`. It must never depend on `diffusion`,
//! `dit`, `metrics`, `motion-data` or `motion-viz`.
#![warn(missing_docs)]
