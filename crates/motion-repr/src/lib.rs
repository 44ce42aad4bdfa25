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
#![warn(missing_docs)]
