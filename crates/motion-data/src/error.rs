//! The crate's error type.

use std::path::PathBuf;

use crate::faults::FaultReport;

/// Everything that can go wrong while reading, packing, batching or synthesising motion data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A `.npy` file is malformed (its header, or the pickle of an object array) or holds an
    /// unsupported dtype / layout.
    #[error("bad .npy file {path}: {reason}")]
    Npy {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A split file lists an id that cannot name a sample (a path, `.` or `..`, a NUL byte):
    /// sample files are always read inside the dataset folder.
    #[error("bad split file {path}, line {line}: {reason}")]
    Split {
        /// The split file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the id.
        reason: String,
    },
    /// A dataset folder holds faults (missing files, wrong widths, empty captions, ...).
    #[error("{0}")]
    Faults(FaultReport),
    /// A packed dataset (`.safetensors` shard or JSON side file) is malformed.
    #[error("bad packed dataset {path}: {reason}")]
    Packed {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A tensor has the wrong shape.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        /// Which tensor.
        what: String,
        /// The shape that was expected (in words).
        expected: String,
        /// The shape that was found.
        got: Vec<usize>,
    },
    /// Feature encoding or normalisation (`motion-repr`) failed.
    #[error("motion representation: {0}")]
    Repr(#[from] motion_repr::ReprError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle::Error),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, DataError>;
