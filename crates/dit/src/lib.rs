//! Diffusion transformers (DiT) that denoise motion features: in-context, AdaLN and
//! cross-attention conditioning, loadable from the reference PyTorch checkpoints.
//!
//! Peebles & Xie, "Scalable Diffusion Models with Transformers" (ICCV 2023), adapted to motion
//! sequences; the network predicts clean data `x0` from a noisy input and the noise level
//! `gamma` (see the `diffusion` crate).
//!
//! - [`DitConfig`] / [`Variant`] / [`MaskMode`]: hyper-parameters, serde-compatible with the
//!   reference configuration; [`DitConfig::reference`] is the published size.
//! - [`Dit`]: the network ([`Dit::new`] from a `VarBuilder` holding `model.*`,
//!   [`Dit::from_checkpoint`] for `.ckpt` / `.pt` / `.safetensors`); implements
//!   [`diffusion::Denoiser`]. [`Dit::training`] is its training-mode view;
//!   [`Dit::with_precision`] opts into bfloat16 inference products ([`Precision`]).
//!
//! # Place in the workspace
//! Depends on `diffusion` (the `Denoiser` trait it implements) and `kernels` (the fused CPU
//! kernels, re-exported as [`ops`] and [`simd`]): `diffusion` <- `dit`, `kernels` <- `dit`. It must never
//! depend on `smpl`, `motion-repr`, `motion-data`, `tmr`, `metrics` or `motion-viz`: the denoiser
//! neither owns a text encoder nor a body model.
#![warn(missing_docs)]

mod checkpoint;
mod config;
mod layers;
mod model;
pub mod ops;
pub mod simd;

pub use checkpoint::{CHECKPOINT_PREFIXES, DitError};
pub use config::{DitConfig, MaskMode, Variant};
pub use kernels::bf16::Bf16Kernel;
pub use layers::sinusoid_table;
pub use model::{Dit, Precision, TrainingDit};
