//! Exports of a posed SMPL / SMPL-H motion for users: BVH for animation tools, a skinned and
//! animated binary glTF (`.glb`) for viewers and engines, and `.npy` arrays for Python.
//!
//! Every exporter takes a [`smpl::BodyModel`], [`smpl::BodyParams`] for `T` frames (local
//! rotation matrices, translation in metres in the SMPL-RIFKE world: right-handed, Z up) and
//! the frame rate, and writes its file **atomically**: the bytes go to a temporary file in the
//! destination's folder, which is flushed and renamed over the destination; on any error the
//! temporary file is removed and no partial file is left. Each writer has an in-memory twin
//! ([`bvh_string`], [`glb_bytes`], [`npy::npy_f32_bytes`]).
//!
//! # Conventions
//! - BVH and glTF are **Y up**: the Z-up motion world is rotated by `(x, y, z) -> (x, z, -y)`
//!   (-90 degrees about X), baked into the root joint's rotation and translation. The rest
//!   skeleton and mesh are the body model's canonical frame (Y up, facing +Z), so the bind pose
//!   is an upright T-pose and Blender's importers (default axes) restore the Z-up world.
//! - BVH lengths are metres by default ([`LengthUnit`]), glTF lengths metres; BVH angles are
//!   degrees, channels `Zrotation Xrotation Yrotation` (`R = Rz Rx Ry`).
//! - The posed joints of a file reproduce [`smpl::BodyModel::forward`]'s joints (rotated Y up)
//!   to float precision; the tests check this by forward kinematics on the files read back.
//!
//! # Place in the workspace
//! Depends only on `smpl`; only the root package and examples use it.
//!
//! # Modules
//! - [`bvh`]: [`write_bvh`] / [`bvh_string`] with [`BvhOptions`].
//! - [`gltf`]: [`write_glb`] / [`glb_bytes`] with [`GlbOptions`].
//! - [`npy`]: [`write_npy_f32`], [`write_tensor_npy`].
//! - [`error`]: the crate's error type, [`ExportError`].
//!
//! # Example
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use candle::{DType, Device, Tensor};
//! let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/open_body/smplh_open.npz");
//! let body = smpl::BodyModel::from_npz(path, &Device::Cpu)?;
//! let t = 3;
//! let eye = |n: usize| Tensor::eye(3, DType::F32, &Device::Cpu)?.broadcast_as((t, n, 3, 3))?.contiguous();
//! // Global orientation: the body's Y-up canonical frame stood up in the Z-up world.
//! let up = Tensor::new(&[[1f32, 0., 0.], [0., 0., -1.], [0., 1., 0.]], &Device::Cpu)?;
//! let params = smpl::BodyParams {
//!     betas: None,
//!     global_orient: up.broadcast_as((t, 3, 3))?.contiguous()?,
//!     body_pose: eye(21)?,
//!     left_hand_pose: eye(15)?,
//!     right_hand_pose: eye(15)?,
//!     transl: Tensor::zeros((t, 3), DType::F32, &Device::Cpu)?,
//! };
//! let bvh = motion_export::bvh_string(&body, &params, 20.0, &Default::default())?;
//! assert!(bvh.starts_with("HIERARCHY\nROOT pelvis"));
//! assert!(bvh.contains("Frames: 3\nFrame Time: 0.05000000\n"));
//! let glb = motion_export::glb_bytes(&body, &params, 20.0, &Default::default())?;
//! assert_eq!(&glb[..4], b"glTF");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod atomic;
pub mod bvh;
pub mod error;
pub mod gltf;
mod math;
pub mod npy;
mod pose;

pub use bvh::{BvhOptions, LengthUnit, bvh_string, write_bvh};
pub use error::{ExportError, Result};
pub use gltf::{GlbOptions, glb_bytes, write_glb};
pub use npy::{write_npy_f32, write_tensor_npy};
