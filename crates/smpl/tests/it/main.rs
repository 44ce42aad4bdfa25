//! Integration tests of the `smpl` crate against the PyTorch reference fixtures.

mod body;
mod rotations;
