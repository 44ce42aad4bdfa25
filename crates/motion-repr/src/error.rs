//! The error type of the `motion-repr` crate.

use std::path::PathBuf;

/// Errors raised by feature encoding / decoding and normalisation.
#[derive(Debug, thiserror::Error)]
pub enum ReprError {
    /// A tensor argument has the wrong shape.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        /// Which argument.
        what: String,
        /// The expected shape, in words.
        expected: String,
        /// The shape that was passed.
        got: Vec<usize>,
    },
    /// The feature dimension is not the layout's width.
    #[error("{what}: expected {expected} features per frame, got {got} (shape {shape:?})")]
    FeatureWidth {
        /// Which argument.
        what: String,
        /// The layout's width (205).
        expected: usize,
        /// The last dimension that was passed.
        got: usize,
        /// The full shape.
        shape: Vec<usize>,
    },
    /// An input holds NaN or an infinity.
    #[error("{what}: non-finite value {value} at {location}")]
    NonFinite {
        /// Which argument.
        what: String,
        /// Where (frame, feature / joint).
        location: String,
        /// The value found.
        value: f32,
    },
    /// Normalisation statistics are unusable (non-finite mean/std, zero std, wrong size).
    #[error("normalisation statistics {source_name}: {reason}")]
    Stats {
        /// The file or tensor the statistics came from.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// A file could not be read or parsed.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The offending file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A body-model error (boxed: it is large).
    #[error(transparent)]
    Smpl(Box<smpl::SmplError>),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle::Error),
}

impl From<smpl::SmplError> for ReprError {
    fn from(e: smpl::SmplError) -> Self {
        Self::Smpl(Box::new(e))
    }
}

/// Result alias of the `motion-repr` crate.
pub type Result<T, E = ReprError> = std::result::Result<T, E>;

pub(crate) fn shape_err(what: &str, expected: &str, got: &[usize]) -> ReprError {
    ReprError::Shape {
        what: what.to_string(),
        expected: expected.to_string(),
        got: got.to_vec(),
    }
}
