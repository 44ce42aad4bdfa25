//! Error type of the `tmr` crate.

use std::path::PathBuf;

/// Errors raised by the TMR model, the text encoders and TMR training.
#[derive(Debug, thiserror::Error)]
pub enum TmrError {
    /// A tensor operation failed (shape mismatch, unsupported dtype, ...).
    #[error(transparent)]
    Candle(#[from] candle::Error),
    /// Feature statistics or normalisation failed (from `motion-repr`).
    #[error(transparent)]
    Repr(#[from] motion_repr::ReprError),
    /// A file the model needs does not exist.
    #[error("missing file {path}: {hint}")]
    MissingFile {
        /// The path that was looked up.
        path: PathBuf,
        /// What to fetch and where from.
        hint: String,
    },
    /// A file exists but cannot be read or parsed.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The offending file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A checkpoint does not hold the keys the configuration needs, or holds extra ones.
    #[error("checkpoint {path}: missing keys {missing:?}, unexpected keys {unexpected:?}")]
    Keys {
        /// The checkpoint file.
        path: PathBuf,
        /// Keys the model needs that the file lacks.
        missing: Vec<String>,
        /// Keys of the file that the model does not use.
        unexpected: Vec<String>,
    },
    /// A tensor has the wrong shape.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        /// Which tensor.
        what: String,
        /// The expected shape, in words.
        expected: String,
        /// The shape received.
        got: Vec<usize>,
    },
    /// A caption is empty (or only whitespace); it carries no text to encode.
    #[error(
        "caption {index} is empty; give a non-empty caption (use zero features for an unconditional input)"
    )]
    EmptyCaption {
        /// Index of the caption in the batch.
        index: usize,
    },
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A configuration value is invalid or unsupported.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, TmrError>;
