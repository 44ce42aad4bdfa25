//! Body models for text-to-motion: SMPL (24 joints) and SMPL-H (52 joints).
//!
//! Loads models in the official array layout (`.npz`, `.safetensors`), runs shape blend shapes,
//! joint regression, pose blend shapes, forward kinematics and linear blend skinning on any candle
//! device, and holds the rotation maths (axis-angle, 6D, Euler, quaternions) the rest of the
//! workspace shares.
//!
//! # Place in the workspace
//! `smpl` is the bottom of the geometry stack: `smpl` <- `motion-repr` <- `motion-data`.
//! It must never depend on any other workspace crate (no `motion-repr`, `diffusion`, `dit`,
//! `tmr`, `metrics`, `motion-data` or `motion-viz`).
//!
//! # Modules
//! - [`rotation`]: axis-angle, quaternion, 6D (row convention) and Euler `'ZYX'` conversions,
//!   batched over any leading dims, plus [`rotation::mat3`] for per-frame host maths.
//! - [`skeleton`]: joint names and parents of SMPL (24) and SMPL-H (52).
//! - [`body`]: [`BodyModel`] (`from_npz`, `forward`) with [`BodyParams`] / [`BodyOutput`].
//!   Official `.pkl` files are converted by `data-scripts/convert_body_model.py`.
//! - [`error`]: [`SmplError`], the typed error of every fallible function here.
#![warn(missing_docs)]

pub mod body;
pub mod error;
mod io;
pub mod rotation;
pub mod skeleton;

pub use body::{BodyModel, BodyOutput, BodyParams, ForwardOptions};
pub use error::{Result, SmplError};
pub use skeleton::Skeleton;
