//! Visualisation of motions: a software renderer from skinned meshes or skeletons to PNG
//! frames, GIF and MP4.
//!
//! # Place in the workspace
//! May use `smpl` and `motion-repr`. It must never depend on `diffusion`, `dit`, `tmr`, `metrics`
//! or `motion-data`.
#![warn(missing_docs)]
