//! Diffusion transformers (DiT) that denoise motion features: in-context, AdaLN and
//! cross-attention conditioning, loadable from the reference PyTorch checkpoints.
//!
//! # Place in the workspace
//! Depends on `diffusion` (the `Denoiser` trait it implements): `diffusion` <- `dit`. It must never
//! depend on `smpl`, `motion-repr`, `motion-data`, `tmr`, `metrics` or `motion-viz`: the denoiser
//! neither owns a text encoder nor a body model.
#![warn(missing_docs)]
