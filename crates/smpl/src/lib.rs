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
#![warn(missing_docs)]
