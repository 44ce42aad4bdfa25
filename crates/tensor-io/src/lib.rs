//! Hardened readers (and the one atomic writer) of the tensor files this workspace meets, at
//! the bottom of the crate graph so that every crate reading such files shares one
//! implementation:
//!
//! - [`npy`]: `.npy` arrays of every numeric dtype numpy writes (either byte order, C or
//!   Fortran order), object arrays of float arrays (`np.save(..., allow_pickle=True)`), and the
//!   one `.npy` writer;
//! - [`npz`]: numpy `.npz` archives (stored or deflated members);
//! - [`safetensors`]: safetensors files as candle tensors or as plain arrays, and atomic writes
//!   of them;
//! - [`pickle`]: the subset of the pickle machine that numpy object arrays and `torch.save`
//!   archives (bare tensors, state dicts, Lightning checkpoints) use;
//! - [`torch`]: the float tensors of a `torch.save` state dict or Lightning checkpoint
//!   ([`torch::read_state_dict`]);
//! - [`atomic`]: writes that leave either the old file or the complete new one.
//!
//! Every length, shape and size read from a file is checked (overflow-checked arithmetic)
//! against the bytes present before anything is sliced or allocated. Nothing here prints or
//! touches the network; errors name the file (where one is read) and the offset, key or field
//! at fault.

use std::path::PathBuf;

pub mod atomic;
pub mod npy;
pub mod npz;
pub mod pickle;
pub mod safetensors;
pub mod torch;

/// Why a file could not be read: the file and what is wrong with it (the key or field at
/// fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read {}: {reason}", path.display())]
pub struct ReadError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

impl ReadError {
    /// An error about `path`.
    pub fn new(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// The number of elements of `shape`, or `None` when the product of its non-zero dimensions
/// overflows `usize` (a shape with a zero dimension and huge others is rejected too: code that
/// computes strides from it would overflow).
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d.max(1)))?;
    Some(shape.iter().product())
}
