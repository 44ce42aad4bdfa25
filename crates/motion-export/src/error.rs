//! The error type of the `motion-export` crate.

use std::path::PathBuf;

/// Errors raised while checking a motion or writing an export file.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Writing the export file (or its temporary sibling) failed; no partial file is left.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The destination file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A tensor or slice argument has the wrong shape.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        /// Which argument (`body_pose`, `data`, ...).
        what: String,
        /// The expected shape, in words (`[T, 21, 3, 3]`).
        expected: String,
        /// The shape that was passed.
        got: Vec<usize>,
    },
    /// The body model's skeleton is not one the exporters know (SMPL, 24 joints, or SMPL-H,
    /// 52 joints).
    #[error(
        "body model {path}: {joints} joints is neither SMPL (24) nor SMPL-H (52); \
         the exporters need the named skeleton"
    )]
    UnsupportedSkeleton {
        /// The body-model file.
        path: PathBuf,
        /// Its joint count.
        joints: usize,
    },
    /// A local rotation is not a finite rotation matrix.
    #[error("joint {joint:?} (index {index}), frame {frame}: {reason}")]
    NotARotation {
        /// Name of the joint at fault.
        joint: String,
        /// Its index in the body model.
        index: usize,
        /// The frame at fault.
        frame: usize,
        /// What is wrong (non-finite entry, not orthonormal, reflection).
        reason: String,
    },
    /// A scalar or array argument has an invalid value (non-finite, non-positive, ...).
    #[error("{what}: {reason}")]
    InvalidValue {
        /// Which argument.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The export would exceed a limit of the file format (e.g. 4 GiB for a `.glb`).
    #[error("{what}: {reason}")]
    TooLarge {
        /// Which file or quantity.
        what: String,
        /// The limit that was exceeded.
        reason: String,
    },
    /// Serialising the glTF JSON document failed.
    #[error("cannot serialise the glTF document: {0}")]
    Json(#[from] serde_json::Error),
    /// The body model's forward pass failed (e.g. betas the model cannot take).
    #[error(transparent)]
    Smpl(#[from] smpl::SmplError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle::Error),
}

/// Result alias of the `motion-export` crate.
pub type Result<T, E = ExportError> = std::result::Result<T, E>;

pub(crate) fn shape_err(what: &str, expected: impl Into<String>, got: &[usize]) -> ExportError {
    ExportError::Shape {
        what: what.to_string(),
        expected: expected.into(),
        got: got.to_vec(),
    }
}
