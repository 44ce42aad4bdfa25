//! The error type of the pipeline layer.

use std::path::PathBuf;

/// Errors of [`crate::TextToMotion`], [`crate::MotionModel`] and the output writers.
///
/// Every variant names the file, request, flag or value at fault; `Display` gives a one-line
/// message fit for a command line.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A file the pipeline needs does not exist.
    #[error("missing {what} {path}: {hint}")]
    MissingFile {
        /// What the file is (e.g. "checkpoint", "prompts file").
        what: String,
        /// The path that was looked up.
        path: PathBuf,
        /// What to do about it.
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
    /// A file or folder cannot be written.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The offending path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A model folder's `config.json` is malformed or inconsistent.
    #[error("model config {path}: {reason}")]
    Config {
        /// The `config.json`.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A generation request is invalid (empty caption, bad length, wrong feature width, ...).
    #[error("request {index}: {reason}")]
    Request {
        /// Index of the request in the batch given to `generate`.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// An option has a value outside its range (steps, guidance, device, ...).
    #[error("invalid {name}: {reason}")]
    Option {
        /// The option.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Loading or running the diffusion transformer failed.
    #[error(transparent)]
    Dit(Box<dit::DitError>),
    /// A metric could not be computed.
    #[error("{metric}: {source}")]
    Metrics {
        /// Which metric.
        metric: String,
        /// Why.
        #[source]
        source: metrics::MetricsError,
    },
    /// Feature decoding or normalisation failed.
    #[error(transparent)]
    Repr(#[from] motion_repr::ReprError),
    /// A text or TMR encoder failed.
    #[error(transparent)]
    Tmr(#[from] tmr::TmrError),
    /// The body model failed.
    #[error(transparent)]
    Smpl(#[from] smpl::SmplError),
    /// Rendering or video encoding failed.
    #[error(transparent)]
    Viz(#[from] motion_viz::VizError),
    /// An export failed.
    #[error(transparent)]
    Export(#[from] motion_export::ExportError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle::Error),
}

impl From<dit::DitError> for PipelineError {
    fn from(e: dit::DitError) -> Self {
        Self::Dit(Box::new(e))
    }
}

/// Result of the pipeline layer.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

pub(crate) fn read_err(path: impl Into<PathBuf>, reason: impl ToString) -> PipelineError {
    PipelineError::Read {
        path: path.into(),
        reason: reason.to_string(),
    }
}

pub(crate) fn write_err(path: impl Into<PathBuf>, reason: impl ToString) -> PipelineError {
    PipelineError::Write {
        path: path.into(),
        reason: reason.to_string(),
    }
}
