//! Fréchet distance between two sets of embeddings, each summarised by a Gaussian (mean and
//! covariance):
//!
//! `FD = |mu_1 - mu_2|^2 + tr S_1 + tr S_2 - 2 tr sqrt(S_1 S_2)`.
//!
//! Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
//! Equilibrium" (NeurIPS 2017), <https://arxiv.org/abs/1706.08500>; for motion, Guo et al.,
//! "Generating Diverse and Natural 3D Human Motions from Text" (CVPR 2022).
//!
//! # Numerics
//! - Statistics are float64: every batch is centred on a fixed shift (the mean of the first
//!   batch) before its scatter `X_c^T X_c` is formed, so a large common offset cannot cancel
//!   digits away; covariances are unbiased (`n - 1`).
//! - `S_1 S_2` is not symmetric, and a general eigen-solver returns complex eigenvalues for a
//!   singular product (the reference then takes the real part of complex square roots). We use
//!   the symmetric, positive semi-definite form instead: with any factor `F F^T = S_1`,
//!   `F^T S_2 F` is similar to `S_1^1/2 S_2 S_1^1/2`, so
//!   `tr sqrt(S_1 S_2) = sum_i sqrt(max(lambda_i, 0))` over the eigenvalues of the symmetric
//!   matrix `F^T S_2 F` (nalgebra's symmetric eigen-solver). `F` is the Cholesky factor when
//!   `S_1` (or, swapping the roles, `S_2`) is positive definite, and otherwise
//!   `V diag(sqrt(max(mu, 0)))` from the symmetric eigendecomposition `S_1 = V diag(mu) V^T`,
//!   which stays finite and correct when a covariance is singular (fewer samples than
//!   dimensions).
//! - The result is clamped at 0: `FD(x, x)` is 0 up to rounding, never a tiny negative.

use candle::Tensor;
use nalgebra::{Cholesky, DMatrix, SymmetricEigen};
use serde::{Deserialize, Serialize};

use crate::embeddings::{Embeddings, at_least_rows, same_dim};
use crate::error::{MetricsError, Result};
use crate::linalg::{matmul, row_major, row_major_transposed, transposed};
use crate::parallel;

/// Streaming float64 accumulator of the mean and covariance of a set of embeddings.
///
/// Add batches as they come, merge accumulators filled by several workers, then read the
/// [`GaussianStats`]. The result does not depend on how rows were batched or merged beyond
/// float64 rounding.
///
/// ```
/// use metrics::{Embeddings, FrechetAccumulator};
/// let mut real = FrechetAccumulator::new(2);
/// real.add(&Embeddings::new(&[0.0, 0.0, 2.0, 0.0], 2)?)?;
/// let mut other = FrechetAccumulator::new(2);
/// other.add(&Embeddings::new(&[0.0, 2.0, 2.0, 2.0], 2)?)?;
/// real.merge(&other)?;
/// let stats = real.stats()?;
/// assert_eq!(stats.count, 4);
/// assert_eq!(stats.mean, vec![1.0, 1.0]);
/// // Unbiased variances: 4 / 3 on each axis, no correlation.
/// assert!((stats.cov[0] - 4.0 / 3.0).abs() < 1e-12 && stats.cov[1].abs() < 1e-12);
/// assert!(stats.frechet_distance(&stats)? < 1e-12);
/// # Ok::<(), metrics::MetricsError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FrechetAccumulator {
    dim: usize,
    count: f64,
    /// Centre subtracted from every row (mean of the first batch); empty until then.
    shift: Vec<f64>,
    /// Sum of the centred rows.
    sum: Vec<f64>,
    /// Sum of the outer products of the centred rows, `[dim, dim]`.
    scatter: DMatrix<f64>,
}

impl FrechetAccumulator {
    /// An empty accumulator for rows of dimension `dim`.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            count: 0.0,
            shift: Vec::new(),
            sum: vec![0.0; dim],
            scatter: DMatrix::zeros(dim, dim),
        }
    }

    /// Row dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of rows added so far.
    pub fn count(&self) -> usize {
        self.count as usize
    }

    /// Adds a batch of rows. Errors on a dimension mismatch or a non-finite value (named
    /// `"batch"`); nothing is added then.
    pub fn add(&mut self, batch: &Embeddings<'_>) -> Result<()> {
        self.add_named(batch, "batch")
    }

    /// Adds a `[rows, dim]` tensor (any float dtype or device).
    pub fn add_tensor(&mut self, batch: &Tensor) -> Result<()> {
        self.add_named(&Embeddings::from_tensor_named(batch, "batch")?, "batch")
    }

    /// Adds row-major `f32` rows (`rows.len()` a multiple of [`Self::dim`]).
    pub fn add_rows(&mut self, rows: &[f32]) -> Result<()> {
        if self.dim == 0 || !rows.len().is_multiple_of(self.dim) {
            return Err(MetricsError::RaggedRows {
                input: "batch",
                len: rows.len(),
                dim: self.dim,
            });
        }
        self.add_named(&Embeddings::new(rows, self.dim)?, "batch")
    }

    fn add_named(&mut self, batch: &Embeddings<'_>, input: &'static str) -> Result<()> {
        if batch.dim() != self.dim {
            return Err(MetricsError::DimensionMismatch {
                left: "accumulator",
                left_dim: self.dim,
                right: input,
                right_dim: batch.dim(),
            });
        }
        batch.check_finite(input)?;
        self.add_weighted(batch, None);
        Ok(())
    }

    /// Adds `batch` (already validated), row `i` counted `weights[i]` times when given.
    pub(crate) fn add_weighted(&mut self, batch: &Embeddings<'_>, weights: Option<&[f64]>) {
        let d = self.dim;
        if batch.rows() == 0 {
            return;
        }
        if self.shift.is_empty() {
            let mut shift = vec![0.0; d];
            for i in 0..batch.rows() {
                for (s, &v) in shift.iter_mut().zip(batch.row(i)) {
                    *s += f64::from(v);
                }
            }
            let n = batch.rows() as f64;
            shift.iter_mut().for_each(|s| *s /= n);
            self.shift = shift;
        }
        // Centred rows scaled by sqrt(weight); zero-weight rows are skipped.
        let mut centred = Vec::with_capacity(batch.rows() * d);
        let mut rows = 0;
        for i in 0..batch.rows() {
            let w = weights.map_or(1.0, |w| w[i]);
            if w == 0.0 {
                continue;
            }
            let sw = w.sqrt();
            for ((s, &v), c) in self.sum.iter_mut().zip(batch.row(i)).zip(&self.shift) {
                let x = f64::from(v) - c;
                *s += w * x;
                centred.push(sw * x);
            }
            self.count += w;
            rows += 1;
        }
        if rows > 0 {
            self.scatter += matmul(
                &row_major_transposed(&centred, rows, d),
                &row_major(&centred, rows, d),
            );
        }
    }

    /// Merges the rows of `other` into `self` (e.g. accumulators filled by several workers).
    pub fn merge(&mut self, other: &FrechetAccumulator) -> Result<()> {
        if other.dim != self.dim {
            return Err(MetricsError::DimensionMismatch {
                left: "accumulator",
                left_dim: self.dim,
                right: "merged accumulator",
                right_dim: other.dim,
            });
        }
        if other.count == 0.0 {
            return Ok(());
        }
        if self.count == 0.0 {
            *self = other.clone();
            return Ok(());
        }
        // Re-centre other's sums from its shift b onto ours a: with delta = b - a,
        // sum (x-a) = s_b + n delta and
        // sum (x-a)(x-a)^T = S_b + s_b delta^T + delta s_b^T + n delta delta^T.
        let delta: Vec<f64> = other
            .shift
            .iter()
            .zip(&self.shift)
            .map(|(b, a)| b - a)
            .collect();
        let n = other.count;
        for i in 0..self.dim {
            for j in 0..self.dim {
                self.scatter[(i, j)] += other.scatter[(i, j)]
                    + other.sum[i] * delta[j]
                    + delta[i] * other.sum[j]
                    + n * delta[i] * delta[j];
            }
        }
        for ((s, o), dl) in self.sum.iter_mut().zip(&other.sum).zip(&delta) {
            *s += o + n * dl;
        }
        self.count += n;
        Ok(())
    }

    /// Mean and unbiased covariance of the rows added so far. Errors with fewer than 2 rows.
    pub fn stats(&self) -> Result<GaussianStats> {
        if self.count < 2.0 {
            return Err(MetricsError::TooFewRows {
                input: "accumulator",
                rows: self.count(),
                needed: 2,
                why: "an unbiased covariance",
            });
        }
        let n = self.count;
        let d = self.dim;
        let mean: Vec<f64> = self
            .shift
            .iter()
            .zip(&self.sum)
            .map(|(c, s)| c + s / n)
            .collect();
        let mut cov = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                // Symmetrised: GEMM rounding may leave the scatter asymmetric in the last bit.
                let s = 0.5 * (self.scatter[(i, j)] + self.scatter[(j, i)]);
                cov[i * d + j] = (s - self.sum[i] * self.sum[j] / n) / (n - 1.0);
            }
        }
        Ok(GaussianStats {
            count: self.count(),
            mean,
            cov,
        })
    }
}

/// Mean and unbiased covariance of a set of embeddings: everything the Fréchet distance needs.
/// Serialisable, so the statistics of a real test set can be computed once and stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GaussianStats {
    /// Number of rows the statistics were computed from.
    pub count: usize,
    /// Mean, `dim` values.
    pub mean: Vec<f64>,
    /// Unbiased covariance, row-major `[dim, dim]` (symmetric).
    pub cov: Vec<f64>,
}

impl GaussianStats {
    /// Statistics of a set of rows (at least 2, all finite).
    pub fn from_embeddings(e: &Embeddings<'_>) -> Result<Self> {
        stats_named(e, "embeddings")
    }

    /// Row dimension.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Fréchet distance to `other` (same dimension).
    pub fn frechet_distance(&self, other: &GaussianStats) -> Result<f64> {
        frechet_distance_from_stats(self, other)
    }

    fn validate(&self, input: &'static str) -> Result<DMatrix<f64>> {
        let d = self.dim();
        if self.cov.len() != d * d {
            return Err(MetricsError::RaggedRows {
                input,
                len: self.cov.len(),
                dim: d,
            });
        }
        if self.count < 2 {
            return Err(MetricsError::TooFewRows {
                input,
                rows: self.count,
                needed: 2,
                why: "an unbiased covariance",
            });
        }
        let bad = |v: &[f64], cols: usize| {
            v.iter()
                .position(|x| !x.is_finite())
                .map(|p| (p, v[p], cols))
        };
        if let Some((p, v, cols)) = bad(&self.mean, d).or_else(|| bad(&self.cov, d)) {
            return Err(MetricsError::NonFinite {
                input,
                row: p / cols,
                col: p % cols,
                value: v as f32,
            });
        }
        Ok(DMatrix::from_row_slice(d, d, &self.cov))
    }
}

fn stats_named(e: &Embeddings<'_>, input: &'static str) -> Result<GaussianStats> {
    at_least_rows(e, input, 2, "an unbiased covariance")?;
    e.check_finite(input)?;
    let mut acc = FrechetAccumulator::new(e.dim());
    acc.add_weighted(e, None);
    acc.stats()
}

/// Fréchet distance between two Gaussians given by their statistics.
pub fn frechet_distance_from_stats(a: &GaussianStats, b: &GaussianStats) -> Result<f64> {
    if a.dim() != b.dim() {
        return Err(MetricsError::DimensionMismatch {
            left: "first statistics",
            left_dim: a.dim(),
            right: "second statistics",
            right_dim: b.dim(),
        });
    }
    let s1 = a.validate("first statistics")?;
    let s2 = b.validate("second statistics")?;
    let mean_term: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y).powi(2))
        .sum();
    let trace_term = s1.trace() + s2.trace();
    let cross = trace_sqrt_product(&s1, &s2, SqrtMethod::Auto)?;
    Ok((mean_term + trace_term - 2.0 * cross).max(0.0))
}

/// Fréchet distance between the rows of `real` `[N, D]` and `fake` `[M, D]` (see the module
/// docs for the formula and numerics). Both need at least 2 finite rows.
pub fn frechet_distance_rows(real: &Embeddings<'_>, fake: &Embeddings<'_>) -> Result<f64> {
    same_dim(real, "real", fake, "fake")?;
    let (a, b) = parallel::join(|| stats_named(real, "real"), || stats_named(fake, "fake"));
    frechet_distance_from_stats(&a?, &b?)
}

/// Fréchet distance between `real` `[N, D]` and `fake` `[M, D]` tensors (any float dtype,
/// any device; computed on the host in float64).
///
/// # Shapes
/// `real: [N, D]`, `fake: [M, D]` with `N, M >= 2`; `N < D` is fine (singular covariances).
pub fn frechet_distance(real: &Tensor, fake: &Tensor) -> Result<f64> {
    let real = Embeddings::from_tensor_named(real, "real")?;
    let fake = Embeddings::from_tensor_named(fake, "fake")?;
    frechet_distance_rows(&real, &fake)
}

/// How `tr sqrt(S_1 S_2)` factors `S_1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SqrtMethod {
    /// Cholesky of `S_1`, else of `S_2`, else the eigendecomposition of `S_1`.
    Auto,
    /// Always the eigendecomposition of `S_1` (`F = S_1^1/2` up to a rotation).
    #[cfg(test)]
    Eigen,
}

/// `tr sqrt(S_1 S_2)` for symmetric positive semi-definite `S_1`, `S_2` (finite).
pub(crate) fn trace_sqrt_product(
    s1: &DMatrix<f64>,
    s2: &DMatrix<f64>,
    method: SqrtMethod,
) -> Result<f64> {
    let (factor, other) = match method {
        SqrtMethod::Auto => match Cholesky::new(s1.clone()) {
            Some(c) => (c.unpack(), s2),
            None => match Cholesky::new(s2.clone()) {
                Some(c) => (c.unpack(), s1),
                None => (eigen_factor(s1)?, s2),
            },
        },
        #[cfg(test)]
        SqrtMethod::Eigen => (eigen_factor(s1)?, s2),
    };
    // M = F^T S F: symmetric PSD with the eigenvalues of S_1 S_2.
    let sf = matmul(&other.as_view(), &factor.as_view());
    let mut m = matmul(&transposed(&factor), &sf.as_view());
    let n = m.nrows();
    for i in 0..n {
        for j in 0..i {
            let v = 0.5 * (m[(i, j)] + m[(j, i)]);
            m[(i, j)] = v;
            m[(j, i)] = v;
        }
    }
    let eigenvalues = m.symmetric_eigenvalues();
    Ok(eigenvalues.iter().map(|&l| l.max(0.0).sqrt()).sum())
}

/// `F = V diag(sqrt(max(mu, 0)))` with `S = V diag(mu) V^T`, so that `F F^T = S` (clamping the
/// rounding-level negative eigenvalues of a singular covariance).
fn eigen_factor(s: &DMatrix<f64>) -> Result<DMatrix<f64>> {
    let eig =
        SymmetricEigen::try_new(s.clone(), f64::EPSILON, 0).ok_or(MetricsError::NoConvergence {
            what: "symmetric eigendecomposition of a covariance",
        })?;
    let mut f = eig.eigenvectors;
    for (j, &mu) in eig.eigenvalues.iter().enumerate() {
        let r = mu.max(0.0).sqrt();
        f.column_mut(j).scale_mut(r);
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn random_rows(seed: u64, n: usize, d: usize, offset: f32) -> Embeddings<'static> {
        let mut rng = StdRng::seed_from_u64(seed);
        let v = (0..n * d)
            .map(|i| rng.random::<f32>() * 2.0 - 1.0 + offset + (i % d) as f32 * 0.01)
            .collect();
        Embeddings::from_vec(v, d).expect("whole rows")
    }

    fn cov_of(e: &Embeddings<'_>) -> DMatrix<f64> {
        let s = GaussianStats::from_embeddings(e).expect("valid rows");
        DMatrix::from_row_slice(e.dim(), e.dim(), &s.cov)
    }

    #[test]
    fn cholesky_and_eigen_factorisations_agree() -> Result<()> {
        let s1 = cov_of(&random_rows(1, 80, 16, 0.0));
        let s2 = cov_of(&random_rows(2, 90, 16, 0.3));
        let auto = trace_sqrt_product(&s1, &s2, SqrtMethod::Auto)?;
        let eigen = trace_sqrt_product(&s1, &s2, SqrtMethod::Eigen)?;
        assert!((auto - eigen).abs() < 1e-12 * auto, "{auto} vs {eigen}");
        // Swapping the arguments swaps which factor is used; the trace is the same.
        let swapped = trace_sqrt_product(&s2, &s1, SqrtMethod::Auto)?;
        assert!((auto - swapped).abs() < 1e-12 * auto);
        Ok(())
    }

    #[test]
    fn factorisations_agree_on_ill_conditioned_and_singular_covariances() -> Result<()> {
        // 34 rows in 32 dimensions: positive definite but ill-conditioned (Cholesky path);
        // 20 rows: rank 19 (Cholesky fails, eigendecomposition path). Both must match the
        // eigendecomposition form.
        for n in [34, 20] {
            let s1 = cov_of(&random_rows(5, n, 32, 0.0));
            let s2 = cov_of(&random_rows(6, n, 32, 0.2));
            let auto = trace_sqrt_product(&s1, &s2, SqrtMethod::Auto)?;
            let eigen = trace_sqrt_product(&s1, &s2, SqrtMethod::Eigen)?;
            assert!(auto.is_finite() && auto > 0.0);
            assert!(
                (auto - eigen).abs() < 1e-6 * auto,
                "n {n}: {auto} vs {eigen}"
            );
        }
        Ok(())
    }

    #[test]
    fn trace_sqrt_of_commuting_diagonals_is_sum_of_geometric_means() -> Result<()> {
        // Hand-derived: diag(a) diag(b) has eigenvalues a_i b_i, so tr sqrt = sum sqrt(a_i b_i).
        let a = DMatrix::from_diagonal(&nalgebra::DVector::from_vec(vec![4.0, 9.0, 0.0]));
        let b = DMatrix::from_diagonal(&nalgebra::DVector::from_vec(vec![1.0, 4.0, 5.0]));
        for method in [SqrtMethod::Auto, SqrtMethod::Eigen] {
            let t = trace_sqrt_product(&a, &b, method)?;
            assert!((t - 8.0).abs() < 1e-12, "{method:?}: {t}");
        }
        Ok(())
    }

    #[test]
    fn merge_equals_adding_everything_to_one_accumulator() -> Result<()> {
        let x = random_rows(3, 100, 8, 50.0);
        let mut whole = FrechetAccumulator::new(8);
        whole.add(&x)?;
        let mut a = FrechetAccumulator::new(8);
        a.add(&x.slice_rows(0, 30))?;
        let mut b = FrechetAccumulator::new(8);
        b.add(&x.slice_rows(30, 64))?;
        b.add(&x.slice_rows(64, 100))?;
        a.merge(&b)?;
        let (s, t) = (whole.stats()?, a.stats()?);
        assert_eq!(s.count, t.count);
        for (u, v) in s.mean.iter().zip(&t.mean).chain(s.cov.iter().zip(&t.cov)) {
            assert!((u - v).abs() < 1e-10, "{u} vs {v}");
        }
        Ok(())
    }

    #[test]
    fn shifted_data_keeps_its_covariance() -> Result<()> {
        // A large common offset (1e4) must not cancel digits away: covariance is shift-invariant.
        let x = random_rows(4, 200, 4, 0.0);
        let y = Embeddings::from_vec(x.as_slice().iter().map(|v| v + 1.0e4).collect(), 4)?;
        let (cx, cy) = (cov_of(&x), cov_of(&y));
        // float32 rounding of x + 1e4 moves each value by <= 5e-4; covariances of O(0.3) by less.
        assert!((cx - cy).abs().max() < 2e-3);
        Ok(())
    }
}
