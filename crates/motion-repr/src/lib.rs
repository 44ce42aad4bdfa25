//! Motion representations: the SMPL-RIFKE 205-dimensional per-frame features.
//!
//! Encodes joints and joint rotations into features and decodes them back, exposes the named
//! feature layout, and normalises features with mean/std statistics (`.safetensors`, `.npy` or the
//! reference's `.pt` files).
//!
//! # Place in the workspace
//! Depends on `smpl` only (rotation maths, body-model inputs): `smpl` <- `motion-repr` <-
//! `motion-data`. It must never depend on `diffusion`, `dit`, `tmr`, `metrics`, `motion-data` or
//! `motion-viz`.
//!
//! # Modules
//! - [`layout`]: [`FeatureLayout`], the named ranges of the 205-d vector.
//! - [`rifke`]: [`rifke::encode`] / [`rifke::decode`] (and batched, masked forms), and
//!   [`rifke::to_body_params`], the reference's mapping to SMPL-H inputs.
//! - [`normalize`]: [`Normalizer`] (mean/std from `.pt`, `.npy`, `.safetensors`).
//! - [`torch_pt`]: [`torch_pt::read_single_tensor`] for `torch.save`d bare tensors.
//! - [`pickle`]: the hardened pickle reader behind it (also reads numpy object arrays for
//!   `motion-data`).
//! - [`error`] holds [`ReprError`], the typed error of every fallible function here.
#![warn(missing_docs)]

pub mod error;
pub mod layout;
pub mod normalize;
/// The hardened pickle reader (re-exported from `tensor-io`).
pub use tensor_io::pickle;
pub mod rifke;
pub mod torch_pt;

pub use error::{ReprError, Result};
pub use layout::FeatureLayout;
pub use normalize::Normalizer;
