//! The error type of the `smpl` crate.

use std::path::PathBuf;

/// Errors raised by rotation maths, body-model loading and the body-model forward pass.
#[derive(Debug, thiserror::Error)]
pub enum SmplError {
    /// A tensor argument has the wrong shape.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        /// Which argument or quantity.
        what: String,
        /// The expected shape, in words (`[..., 3, 3]`).
        expected: String,
        /// The shape that was passed.
        got: Vec<usize>,
    },
    /// A body-model file lacks a required array.
    #[error("body model {path}: missing required array {key:?}")]
    MissingArray {
        /// The model file.
        path: PathBuf,
        /// The absent array name.
        key: String,
    },
    /// Two arrays of a body-model file disagree in shape.
    #[error("body model {path}: array {key:?} has shape {got:?} but {expected}")]
    InconsistentShape {
        /// The model file.
        path: PathBuf,
        /// The offending array.
        key: String,
        /// Its shape.
        got: Vec<usize>,
        /// The shape it should have and which other array or rule fixes it.
        expected: String,
    },
    /// A body-model array holds an invalid value (non-finite number, bad parent index...).
    #[error("body model {path}: array {key:?}: {reason}")]
    InvalidArray {
        /// The model file.
        path: PathBuf,
        /// The offending array.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The official `.pkl` model files are Python pickles with chumpy / scipy objects.
    #[error(
        "{path}: .pkl body models cannot be read from Rust; convert it to .npz with \
         `python data-scripts/convert_body_model.py {path} <out.npz>`"
    )]
    PickleModel {
        /// The `.pkl` path.
        path: PathBuf,
    },
    /// The file extension is not one the loader knows.
    #[error("{path}: unsupported body model format (expected .npz or .safetensors)")]
    UnsupportedFormat {
        /// The offending path.
        path: PathBuf,
    },
    /// The file could not be opened or parsed.
    #[error("cannot read body model {path}: {reason}")]
    Read {
        /// The offending file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A body-model input is inconsistent with the model.
    #[error("body params: {0}")]
    Params(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle::Error),
}

/// Result alias of the `smpl` crate.
pub type Result<T, E = SmplError> = std::result::Result<T, E>;

pub(crate) fn shape_err(what: &str, expected: &str, got: &[usize]) -> SmplError {
    SmplError::Shape {
        what: what.to_string(),
        expected: expected.to_string(),
        got: got.to_vec(),
    }
}
