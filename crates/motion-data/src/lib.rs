//! Motion datasets: the reference (HumanML3D-style) folder reader, packed shards, batching
//! with frame masks, and a procedural synthetic motion set.
//!
//! # Place in the workspace
//! `smpl` <- `motion-repr` <- `motion-data`. It must never depend on `diffusion`, `dit`, `tmr`,
//! `metrics` or `motion-viz`.
#![warn(missing_docs)]
