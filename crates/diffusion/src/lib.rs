//! Gaussian diffusion in the x0 parametrisation: the `Denoiser` trait, the cosine noise
//! schedule, the DDPM training loss, samplers (DDPM, DDIM and few-step solvers),
//! classifier-free guidance and training utilities (AdamW, learning-rate schedule, EMA,
//! checkpoints).
//!
//! # Place in the workspace
//! `diffusion` <- `dit`. This crate sees networks only through the `Denoiser` trait: it must never
//! depend on `dit`, on a dataset crate (`motion-data`), on a body model (`smpl`, `motion-repr`) or on
//! `tmr`, `metrics` and `motion-viz`.
#![warn(missing_docs)]

pub mod denoiser;

pub use denoiser::{Conditioning, Denoiser};
