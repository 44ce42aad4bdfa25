//! The crate's error type for operations that do I/O (checkpoints) or validate training state.

use std::path::PathBuf;

/// Errors of training utilities and checkpoints. Tensor-level failures are wrapped
/// `candle::Error`s; everything else names the file, key or parameter at fault.
#[derive(Debug, thiserror::Error)]
pub enum DiffusionError {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle::Error),
    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file could not be parsed or written.
    #[error("invalid JSON in {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A checkpoint file is truncated, corrupt, or does not belong to its JSON side file.
    #[error("corrupt checkpoint {path}: {reason}")]
    CorruptCheckpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint does not fit the model: a tensor is missing, unexpected or of the wrong
    /// shape.
    #[error("checkpoint {path} does not fit the model: tensor {key:?} {reason}")]
    CheckpointMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A trainable parameter received no gradient (e.g. a non-differentiable fused op cut the
    /// graph, or the parameter is unused).
    #[error("parameter {name:?} received no gradient")]
    MissingGradient {
        /// The parameter's name in the `VarMap`.
        name: String,
    },
    /// A named parameter does not exist in the `VarMap`.
    #[error("the VarMap has no parameter {name:?}")]
    UnknownParameter {
        /// The missing name.
        name: String,
    },
    /// The loss or the gradient norm is not finite.
    #[error("non-finite {what} at step {step}: {value}")]
    NonFinite {
        /// Which quantity.
        what: &'static str,
        /// The training step.
        step: u64,
        /// Its value.
        value: f64,
    },
}

/// Result alias of this crate's fallible I/O operations.
pub type Result<T> = std::result::Result<T, DiffusionError>;
