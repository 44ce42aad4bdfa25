//! Typed errors of the renderer and its writers.

use std::path::PathBuf;

/// Everything that can go wrong while rendering or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum VizError {
    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// PNG encoding failed.
    #[error("PNG encoding of {path} failed: {source}")]
    Png {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: image::ImageError,
    },
    /// GIF encoding failed.
    #[error("GIF encoding of {path} failed: {source}")]
    Gif {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: gif::EncodingError,
    },
    /// An argument is out of range or inconsistent (names the argument and the value).
    #[error("invalid {what}: {detail}")]
    InvalidInput {
        /// Which argument.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// H.264 encoding or MP4 muxing failed (the encoder's message).
    #[error("video encoding failed: {detail}")]
    Video {
        /// What the encoder reported.
        detail: String,
    },
    /// The operation needs a cargo feature this build of `motion-viz` was compiled without.
    #[error("{what} needs the `{feature}` cargo feature of motion-viz: {hint}")]
    FeatureDisabled {
        /// The operation asked for.
        what: &'static str,
        /// The missing feature.
        feature: &'static str,
        /// How to turn it on.
        hint: &'static str,
    },
    /// A value that a log10 chart axis cannot show (zero or negative), naming the series.
    #[error(
        "series {series:?}: {axis} = {value} is not positive and cannot be drawn on a log10 axis"
    )]
    NonPositiveOnLogAxis {
        /// The series (or reference band) holding the value.
        series: String,
        /// Which value: `"x"`, `"y"`, `"band low"`, `"reference"` or `"reference low"`.
        axis: &'static str,
        /// The offending value.
        value: f64,
    },
    /// A tensor could not be read (wrong shape, dtype or device failure).
    #[error("tensor {what}: {source}")]
    Tensor {
        /// Which tensor.
        what: &'static str,
        /// The underlying candle error.
        #[source]
        source: candle::Error,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, VizError>;

pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> VizError {
    VizError::InvalidInput {
        what,
        detail: detail.into(),
    }
}
