//! Dense kernels shared by the metrics: the matrix-product form of pairwise Euclidean distances
//! (float32, as the reference computes them) and strided views for `nalgebra` products, which
//! run on `matrixmultiply`'s blocked GEMM.

use nalgebra::{DMatrix, DMatrixView, Dyn, RealField, Scalar};

use crate::embeddings::Embeddings;
use crate::error::{MetricsError, Result};

/// Floor applied to squared distances before the square root, as in the reference; a point's
/// distance to itself is therefore a tiny rounding residue (>= 1e-15), never exactly 0.
pub(crate) const MIN_SQUARED_DISTANCE: f32 = 1e-30;

/// A row-major `[rows, cols]` matrix of `f32` distances.
#[derive(Debug, Clone)]
pub(crate) struct DistanceMatrix {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) data: Vec<f32>,
}

impl DistanceMatrix {
    pub(crate) fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    #[cfg(test)]
    pub(crate) fn get(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.cols + j]
    }
}

/// A row-major `[rows, cols]` slice seen as a `nalgebra` matrix (no copy).
pub(crate) fn row_major<T: Scalar>(
    data: &[T],
    rows: usize,
    cols: usize,
) -> DMatrixView<'_, T, Dyn, Dyn> {
    DMatrixView::from_slice_with_strides(data, rows, cols, cols, 1)
}

/// The transpose of a row-major `[rows, cols]` slice, i.e. a `[cols, rows]` view (no copy).
pub(crate) fn row_major_transposed<T: Scalar>(
    data: &[T],
    rows: usize,
    cols: usize,
) -> DMatrixView<'_, T, Dyn, Dyn> {
    DMatrixView::from_slice_with_strides(data, cols, rows, 1, cols)
}

/// The transpose of a column-major `nalgebra` matrix as a view (no copy).
pub(crate) fn transposed(m: &DMatrix<f64>) -> DMatrixView<'_, f64, Dyn, Dyn> {
    DMatrixView::from_slice_with_strides(m.as_slice(), m.ncols(), m.nrows(), m.nrows(), 1)
}

/// `a @ b` for matrix views (`f32` or `f64`), through `matrixmultiply`'s blocked GEMM.
///
/// nalgebra switches to a column-by-column fallback when a dimension is 5 or less, and that
/// fallback misreads views whose row stride is not 1; small products are therefore computed on
/// contiguous copies (cheap at that size).
pub(crate) fn matmul<T: RealField + Copy>(
    a: &DMatrixView<'_, T, Dyn, Dyn>,
    b: &DMatrixView<'_, T, Dyn, Dyn>,
) -> DMatrix<T> {
    const NALGEBRA_SMALL_DIM: usize = 5;
    if a.nrows().min(a.ncols()).min(b.ncols()) <= NALGEBRA_SMALL_DIM {
        return a.clone_owned() * b.clone_owned();
    }
    let mut out = DMatrix::<T>::zeros(a.nrows(), b.ncols());
    out.gemm(T::one(), a, b, T::zero());
    out
}

/// Squared row norms in `f64`, rounded to `f32`; errors if one leaves the `f32` range.
fn squared_norms(e: &Embeddings<'_>, input: &'static str) -> Result<Vec<f32>> {
    (0..e.rows())
        .map(|i| {
            let s: f64 = e.row(i).iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            if s > f64::from(f32::MAX) {
                Err(MetricsError::Overflow {
                    input,
                    row: i,
                    squared_norm: s,
                })
            } else {
                Ok(s as f32)
            }
        })
        .collect()
}

/// Euclidean distances between the rows of `a` and the rows of `b`, `[a.rows, b.rows]`, by the
/// reference's matrix-product form: with `an`, `bn` the squared row norms,
/// `d2 = [-2a, an, 1] @ [b, 1, bn]^T` (one float32 GEMM), `dist = sqrt(max(d2, 1e-30))`.
///
/// Using the same form as the reference makes near-ties resolve the same way, so k-NN counts
/// and retrieval ranks match it exactly. Inputs must already be checked finite and of equal
/// dimension.
pub(crate) fn euclidean_distances(
    a: &Embeddings<'_>,
    a_name: &'static str,
    b: &Embeddings<'_>,
    b_name: &'static str,
) -> Result<DistanceMatrix> {
    debug_assert_eq!(a.dim(), b.dim());
    let (na, nb, d) = (a.rows(), b.rows(), a.dim());
    let k = d + 2;
    let an = squared_norms(a, a_name)?;
    let bn = squared_norms(b, b_name)?;
    let mut aug_a = Vec::with_capacity(na * k);
    for (i, &n) in an.iter().enumerate() {
        aug_a.extend(a.row(i).iter().map(|&v| -2.0 * v));
        aug_a.push(n);
        aug_a.push(1.0);
    }
    let mut aug_b = Vec::with_capacity(nb * k);
    for (j, &n) in bn.iter().enumerate() {
        aug_b.extend_from_slice(b.row(j));
        aug_b.push(1.0);
        aug_b.push(n);
    }
    // Column-major [nb, na] of (aug_b @ aug_a^T) is row-major [na, nb] of (aug_a @ aug_b^T).
    let out = matmul(
        &row_major(&aug_b, nb, k),
        &row_major_transposed(&aug_a, na, k),
    );
    let mut data: Vec<f32> = out.data.into();
    finish_distances(&mut data);
    Ok(DistanceMatrix {
        rows: na,
        cols: nb,
        data,
    })
}

fn finish_distances(d2: &mut [f32]) {
    for v in d2 {
        *v = v.max(MIN_SQUARED_DISTANCE).sqrt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_form_distances_match_direct_differences() -> Result<()> {
        let a = Embeddings::from_vec(vec![0.0, 0.0, 3.0, 4.0, 1.0, 1.0], 2)?;
        let b = Embeddings::from_vec(vec![0.0, 0.0, 6.0, 8.0], 2)?;
        let d = euclidean_distances(&a, "a", &b, "b")?;
        assert_eq!((d.rows, d.cols), (3, 2));
        // Hand-computed: |(3,4)| = 5, |(6,8)-(3,4)| = 5, |(1,1)| = sqrt 2, |(5,7)| = sqrt 74.
        let expected = [0.0, 10.0, 5.0, 5.0, 2f32.sqrt(), 74f32.sqrt()];
        for (got, want) in d.data.iter().zip(expected) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
        // The floor: a self-distance is sqrt(1e-30) = 1e-15, not 0.
        assert!((d.get(0, 0) - 1e-15).abs() < 1e-20, "{}", d.get(0, 0));
        Ok(())
    }

    #[test]
    fn overflowing_rows_are_rejected() -> Result<()> {
        let a = Embeddings::from_vec(vec![3e19, 3e19], 2)?;
        let err = euclidean_distances(&a, "real", &a, "real").expect_err("must overflow");
        assert!(matches!(
            err,
            MetricsError::Overflow {
                input: "real",
                row: 0,
                ..
            }
        ));
        Ok(())
    }

    #[test]
    fn small_and_large_strided_products_agree_with_owned_products() {
        for (m, k, n) in [(2, 3, 4), (7, 9, 8), (1, 40, 30)] {
            let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
            let b: Vec<f64> = (0..n * k).map(|i| (i as f64 * 0.11).cos()).collect();
            // a [m, k] row-major, b [n, k] row-major: a @ b^T.
            let got = matmul(&row_major(&a, m, k), &row_major_transposed(&b, n, k));
            let want =
                DMatrix::from_row_slice(m, k, &a) * DMatrix::from_row_slice(n, k, &b).transpose();
            assert!((got - want).abs().max() < 1e-12, "{m}x{k}x{n}");
        }
    }

    #[test]
    fn transposed_view_reads_the_transpose() {
        let m = DMatrix::from_row_slice(2, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let t = transposed(&m);
        assert_eq!(t.shape(), (3, 2));
        assert_eq!(t[(2, 1)], 6.0);
        assert_eq!(t[(0, 1)], 4.0);
        let rm = row_major(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3);
        assert_eq!(rm[(1, 0)], 4.0);
    }
}
