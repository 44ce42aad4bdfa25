//! The error type of the crate: every rejected input names the argument, row, column, shape or
//! value at fault.

use std::path::PathBuf;

/// Everything that can go wrong while computing a metric.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A tensor that should hold one embedding per row is not two-dimensional.
    #[error("{input}: expected a 2-D [rows, dim] tensor, got shape {shape:?}")]
    NotMatrix {
        /// Which argument.
        input: &'static str,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A flat `&[f32]` slice is not a whole number of rows.
    #[error("{input}: {len} values do not form whole rows of dimension {dim}")]
    RaggedRows {
        /// Which argument.
        input: &'static str,
        /// Number of values given.
        len: usize,
        /// Row dimension asked for.
        dim: usize,
    },
    /// Two inputs whose rows must live in the same space have different dimensions.
    #[error(
        "dimension mismatch: {left} has dimension {left_dim} but {right} has dimension {right_dim}"
    )]
    DimensionMismatch {
        /// First argument.
        left: &'static str,
        /// Its row dimension.
        left_dim: usize,
        /// Second argument.
        right: &'static str,
        /// Its row dimension.
        right_dim: usize,
    },
    /// Two inputs whose rows are paired (text `i` describes motion `i`) differ in length.
    #[error(
        "row count mismatch: {left} has {left_rows} rows but {right} has {right_rows} (rows are paired)"
    )]
    RowCountMismatch {
        /// First argument.
        left: &'static str,
        /// Its number of rows.
        left_rows: usize,
        /// Second argument.
        right: &'static str,
        /// Its number of rows.
        right_rows: usize,
    },
    /// Too few rows for the statistic (a covariance needs two, a k-NN radius needs `k + 1`).
    #[error("{input}: {rows} rows, at least {needed} needed ({why})")]
    TooFewRows {
        /// Which argument.
        input: &'static str,
        /// Rows given.
        rows: usize,
        /// Rows needed.
        needed: usize,
        /// What needs them.
        why: &'static str,
    },
    /// A value is NaN or infinite.
    #[error("{input}: row {row}, column {col} is not finite ({value})")]
    NonFinite {
        /// Which argument.
        input: &'static str,
        /// Row of the first offending value.
        row: usize,
        /// Column of the first offending value.
        col: usize,
        /// The value itself.
        value: f32,
    },
    /// A row is so large that its squared norm overflows `f32` (distances would be infinite).
    #[error("{input}: row {row} has squared norm {squared_norm:e}, beyond float32 range")]
    Overflow {
        /// Which argument.
        input: &'static str,
        /// Offending row.
        row: usize,
        /// Its squared norm, computed in `f64`.
        squared_norm: f64,
    },
    /// A row has zero length, so its cosine similarity is undefined.
    #[error("{input}: row {row} has zero norm; its cosine similarity is undefined")]
    ZeroNorm {
        /// Which argument.
        input: &'static str,
        /// Offending row.
        row: usize,
    },
    /// A neighbourhood size does not fit in the set it is taken from.
    #[error("k = {k} must be smaller than the {what} size {size}")]
    KTooLarge {
        /// The neighbourhood size asked for.
        k: usize,
        /// The size it must stay below.
        size: usize,
        /// What was split (`"real split"`, `"fake split"`, `"retrieval batch"`).
        what: &'static str,
    },
    /// An argument out of its valid range.
    #[error("invalid argument {name} = {value}: {why}")]
    InvalidArgument {
        /// Parameter name.
        name: &'static str,
        /// The value given, formatted.
        value: String,
        /// Why it is rejected.
        why: &'static str,
    },
    /// A linear-algebra routine did not converge.
    #[error("{what} did not converge")]
    NoConvergence {
        /// Which routine.
        what: &'static str,
    },
    /// Writing a report failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Serialising a report failed.
    #[error("cannot serialise report: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A tensor operation failed (conversion of an input tensor).
    #[error(transparent)]
    Candle(#[from] candle::Error),
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, MetricsError>;
