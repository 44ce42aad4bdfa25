//! Gaussian diffusion in the x0 parametrisation: the `Denoiser` trait, the cosine noise
//! schedule, the DDPM training loss, samplers (DDPM, DDIM and few-step solvers),
//! classifier-free guidance and training utilities (AdamW, learning-rate schedule, EMA,
//! checkpoints).
//!
//! Papers: Ho et al., "Denoising Diffusion Probabilistic Models" (2020); Song et al.,
//! "Denoising Diffusion Implicit Models" (2021); Nichol & Dhariwal, "Improved Denoising
//! Diffusion Probabilistic Models" (2021); Ho & Salimans, "Classifier-Free Diffusion Guidance"
//! (2021); Lu et al., "DPM-Solver++" (2022); Zhao et al., "UniPC" (2023). Each module cites the one it implements.
//!
//! # Place in the workspace
//! `diffusion` <- `dit`. This crate sees networks only through the `Denoiser` trait: it must never
//! depend on `dit`, on a dataset crate (`motion-data`), on a body model (`smpl`, `motion-repr`) or on
//! `tmr`, `metrics` and `motion-viz`. It uses `kernels` (the fused CPU kernels at the bottom of
//! the workspace) for the in-place AdamW update.
#![warn(missing_docs)]

pub mod denoiser;
pub mod error;
pub mod guidance;
pub mod inpaint;
pub mod loss;
pub mod noise;
pub mod optim;
pub mod sampler;
pub mod schedule;
pub mod train;

pub use denoiser::{Conditioning, Denoiser};
pub use error::{DiffusionError, Result};
pub use guidance::{DEFAULT_GUIDANCE_WEIGHT, Guided};
pub use inpaint::{Inpainted, KnownPart};
pub use loss::{DdpmLoss, LossFormula, LossOutput, LossReduction, lengths_to_mask};
pub use noise::{NoiseSource, ReplayNoise, SeededNoise};
pub use optim::{AdamW, AdamWConfig, Ema, EmaWarmup, WarmupCosine, clip_grad_norm, named_vars};
pub use sampler::{
    Ddim, Ddpm, DdpmCoefficients, DpmSolverPp2M, DpmSolverPp3M, Sampler, SamplerKind, StepCallback,
    StepInfo, UniPc, ddim_step, ddpm_step,
};
pub use schedule::{CosineSchedule, DDIM_CLIP_MIN, DDPM_CLIP_MIN, TimeGrid, half_log_snr};
pub use train::{StepStats, TrainConfig, Trainer, verify_checkpoint, write_atomic};
