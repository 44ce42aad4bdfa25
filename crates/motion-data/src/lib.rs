//! Motion datasets: the reference (HumanML3D-style) folder reader, packed shards, batching
//! with frame masks, and a procedural synthetic motion set.
//!
//! Data follow the reference pipeline (DESIGN §5): SMPL-RIFKE features (Petrovich et al.,
//! "Multi-Track Timeline Control for Text-Driven 3D Human Motion Generation", CVPR-W 2024, which
//! introduced the 205-d representation) over HumanML3D (Guo et al., "Generating Diverse and
//! Natural 3D Human Motions From Text", CVPR 2022) captions and CLIP text features.
//!
//! - [`FolderDataset`]: reads the reference folder layout, reporting every fault at once
//!   ([`FaultReport`]); the CLIP `seq` object arrays are read by `tensor-io`'s hardened `.npy` reader.
//! - [`PackedDataset`]: memory-mapped `.safetensors` shards plus a JSON side file, built by
//!   [`pack_folder`] (`cargo run --release -p motion-data --example pack -- <folder> <out>`).
//! - [`Batcher`]: crop / pad to a fixed number of frames, frame mask (1 = valid), normalisation,
//!   caption choice, CLIP tokens padded to 77 with a token mask, seeded shuffling.
//! - [`synth`]: procedural motions of 14 families on an SMPL-H-like skeleton, with captions,
//!   written in the reference folder layout by [`synth::synthesize_folder`].
//!
//! # Place in the workspace
//! `tensor-io`, `smpl` <- `motion-repr` <- `motion-data`. It must never depend on `diffusion`, `dit`, `tmr`,
//! `metrics` or `motion-viz`.
#![warn(missing_docs)]

pub mod batch;
pub mod error;
pub mod faults;
pub mod folder;
pub mod npy;
pub mod packed;
pub mod source;
pub mod synth;

pub use batch::{Batch, BatchConfig, BatchIter, BatchMode, Batcher, CaptionMode, TextBatch};
pub use error::{DataError, Result};
pub use faults::{Fault, FaultReport, FileKind};
pub use folder::{
    FaultPolicy, FolderDataset, FolderOptions, read_folder, write_sample, write_split,
};
pub use packed::{PackedDataset, pack_folder};
pub use source::{
    FEATURE_DIM, MAX_TEXT_TOKENS, MotionSample, MotionSource, Split, TEXT_DIM, TextFeatures,
};
