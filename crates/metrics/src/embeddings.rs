//! [`Embeddings`]: a borrowed or owned `[rows, dim]` block of `f32` feature vectors, the one
//! input type every metric works on. Candle tensors of any float dtype and device convert with
//! [`Embeddings::from_tensor`]; plain row-major slices wrap with [`Embeddings::new`] (no copy).

use std::borrow::Cow;

use candle::{DType, Device, Tensor};

use crate::error::{MetricsError, Result};

/// A `[rows, dim]` row-major block of `f32` embeddings (one sample per row).
///
/// ```
/// use metrics::Embeddings;
/// let data = [0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0];
/// let e = Embeddings::new(&data, 3)?;
/// assert_eq!((e.rows(), e.dim()), (2, 3));
/// assert_eq!(e.row(1), &[3.0, 4.0, 5.0]);
/// # Ok::<(), metrics::MetricsError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings<'a> {
    data: Cow<'a, [f32]>,
    rows: usize,
    dim: usize,
}

impl<'a> Embeddings<'a> {
    /// Wraps a row-major slice of `rows * dim` values without copying.
    ///
    /// Errors if `dim` is zero or `data.len()` is not a multiple of `dim`. Finiteness is checked
    /// by each metric, which names the argument at fault.
    pub fn new(data: &'a [f32], dim: usize) -> Result<Self> {
        Self::build(Cow::Borrowed(data), dim, "rows")
    }

    /// Takes ownership of a row-major vector of `rows * dim` values.
    pub fn from_vec(data: Vec<f32>, dim: usize) -> Result<Embeddings<'static>> {
        Embeddings::build(Cow::Owned(data), dim, "rows")
    }

    /// Copies a `[rows, dim]` tensor (any float dtype, any device) to host `f32`.
    pub fn from_tensor(tensor: &Tensor) -> Result<Embeddings<'static>> {
        Embeddings::from_tensor_named(tensor, "tensor")
    }

    pub(crate) fn from_tensor_named(
        tensor: &Tensor,
        input: &'static str,
    ) -> Result<Embeddings<'static>> {
        let &[rows, dim] = tensor.dims() else {
            return Err(MetricsError::NotMatrix {
                input,
                shape: tensor.dims().to_vec(),
            });
        };
        let data = tensor
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Embeddings {
            data: Cow::Owned(data),
            rows,
            dim,
        })
    }

    fn build(data: Cow<'a, [f32]>, dim: usize, input: &'static str) -> Result<Self> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(MetricsError::RaggedRows {
                input,
                len: data.len(),
                dim,
            });
        }
        let rows = data.len() / dim;
        Ok(Self { data, rows, dim })
    }

    /// Number of rows (samples).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Row dimension (features per sample).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The row-major values, `rows * dim` of them.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// Row `i`. Panics if `i >= rows()`, like slice indexing.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Consecutive rows `start..end` as a borrowed block. Panics if out of range.
    pub fn slice_rows(&self, start: usize, end: usize) -> Embeddings<'_> {
        Embeddings {
            data: Cow::Borrowed(&self.data[start * self.dim..end * self.dim]),
            rows: end - start,
            dim: self.dim,
        }
    }

    /// A new block made of the rows at `indices` (repeats allowed), in that order.
    /// Panics if an index is out of range.
    pub fn select(&self, indices: &[usize]) -> Embeddings<'static> {
        let mut data = Vec::with_capacity(indices.len() * self.dim);
        for &i in indices {
            data.extend_from_slice(self.row(i));
        }
        Embeddings {
            data: Cow::Owned(data),
            rows: indices.len(),
            dim: self.dim,
        }
    }

    /// Converts back to a `[rows, dim]` `f32` tensor on `device`.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            self.as_slice(),
            (self.rows, self.dim),
            device,
        )?)
    }

    /// Errors with [`MetricsError::NonFinite`] naming `input`, the row and the column of the
    /// first NaN or infinite value.
    pub(crate) fn check_finite(&self, input: &'static str) -> Result<()> {
        if let Some(pos) = self.data.iter().position(|v| !v.is_finite()) {
            return Err(MetricsError::NonFinite {
                input,
                row: pos / self.dim,
                col: pos % self.dim,
                value: self.data[pos],
            });
        }
        Ok(())
    }
}

/// Checks that `left` and `right` have the same row dimension.
pub(crate) fn same_dim(
    left: &Embeddings<'_>,
    left_name: &'static str,
    right: &Embeddings<'_>,
    right_name: &'static str,
) -> Result<()> {
    if left.dim() != right.dim() {
        return Err(MetricsError::DimensionMismatch {
            left: left_name,
            left_dim: left.dim(),
            right: right_name,
            right_dim: right.dim(),
        });
    }
    Ok(())
}

/// Checks that paired inputs have the same number of rows.
pub(crate) fn same_rows(
    left: &Embeddings<'_>,
    left_name: &'static str,
    right: &Embeddings<'_>,
    right_name: &'static str,
) -> Result<()> {
    if left.rows() != right.rows() {
        return Err(MetricsError::RowCountMismatch {
            left: left_name,
            left_rows: left.rows(),
            right: right_name,
            right_rows: right.rows(),
        });
    }
    Ok(())
}

/// Checks that `e` has at least `needed` rows.
pub(crate) fn at_least_rows(
    e: &Embeddings<'_>,
    input: &'static str,
    needed: usize,
    why: &'static str,
) -> Result<()> {
    if e.rows() < needed {
        return Err(MetricsError::TooFewRows {
            input,
            rows: e.rows(),
            needed,
            why,
        });
    }
    Ok(())
}
