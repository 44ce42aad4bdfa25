//! Integration tests of `motion-export`: each file is read back (a small BVH parser here, the
//! `gltf` crate, `npyz`) and forward kinematics on what was read must reproduce
//! `smpl::BodyModel::forward`.

mod bvh;
mod common;
mod glb;
mod npy;
