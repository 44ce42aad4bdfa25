//! Precision, recall, density and coverage of generated samples against real ones, from
//! k-nearest-neighbour balls.
//!
//! Kynkäänniemi et al., "Improved Precision and Recall Metric for Assessing Generative Models"
//! (NeurIPS 2019), <https://arxiv.org/abs/1904.06991>; Naeem et al., "Reliable Fidelity and
//! Diversity Metrics for Generative Models" (ICML 2020), <https://arxiv.org/abs/2002.09797>.
//!
//! # Definition (as the reference computes it)
//! Rows are cut into `splits` consecutive chunks of `ceil(N / splits)` rows (the last one may be
//! smaller); chunk `c` of `real` is paired with chunk `c` of `fake`. Inside a chunk, with
//! Euclidean distances from the float32 matrix-product form, `rad_r[i]` is the `(k+1)`-th
//! smallest distance from real `i` to the real chunk (the point itself counts) and `rad_f[j]`
//! likewise for fakes. With `D[i, j] = |real_i - fake_j|` and strict `<` everywhere:
//! - precision = mean_j [exists i: D[i,j] < rad_r[i]]
//! - recall    = mean_i [exists j: D[i,j] < rad_f[j]]
//! - density   = (1/k) mean_j #{i: D[i,j] < rad_r[i]}
//! - coverage  = mean_i [min_j D[i,j] < rad_r[i]]
//!
//! and each metric is the unweighted mean of its per-chunk values.
//!
//! # Reference quirk
//! The reference's recall indexes the fake radius with the REAL row index,
//! `mean_i [exists j: D[i,j] < rad_f[i]]`, a broadcasting slip. The correct formula is the
//! default; [`RecallFormula::Reference`] reproduces the published numbers.

use candle::Tensor;
use serde::{Deserialize, Serialize};

use crate::embeddings::{Embeddings, at_least_rows, same_dim};
use crate::error::{MetricsError, Result};
use crate::linalg::{DistanceMatrix, euclidean_distances};
use crate::parallel;

/// Precision, recall, density and coverage (each in `[0, 1]`, density may exceed 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prdc {
    /// Share of fake samples inside some real k-NN ball (fidelity).
    pub precision: f64,
    /// Share of real samples inside some fake k-NN ball (diversity); formula per
    /// [`PrdcConfig::recall`], the correct one by default.
    pub recall: f64,
    /// Mean number of real k-NN balls containing a fake sample, divided by `k`.
    pub density: f64,
    /// Share of real samples whose k-NN ball contains at least one fake sample.
    pub coverage: f64,
}

/// Which recall formula [`prdc_with`] uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecallFormula {
    /// `mean_i [exists j: D[i,j] < rad_f[j]]` (Kynkäänniemi et al.).
    #[default]
    Corrected,
    /// The reference's `mean_i [exists j: D[i,j] < rad_f[i]]` (fake radius indexed by the real
    /// row): reproduces published tables. Needs equal real and fake chunk sizes.
    Reference,
}

/// Settings of [`prdc_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrdcConfig {
    /// Neighbourhood size (`k >= 1`, smaller than every chunk).
    pub k: usize,
    /// Number of consecutive chunks the metrics are averaged over.
    pub splits: usize,
    /// Recall formula.
    pub recall: RecallFormula,
}

impl Default for PrdcConfig {
    /// `k = 3`, 5 splits, corrected recall (the reference's settings, fixed recall).
    fn default() -> Self {
        Self {
            k: 3,
            splits: 5,
            recall: RecallFormula::Corrected,
        }
    }
}

impl PrdcConfig {
    /// The reference exactly: `k = 3`, 5 splits, its recall formula.
    pub fn reference() -> Self {
        Self {
            recall: RecallFormula::Reference,
            ..Self::default()
        }
    }
}

/// Per-sample outcomes of one chunk, kept for bootstrap resampling.
#[derive(Debug, Clone)]
pub(crate) struct SplitOutcome {
    /// Per fake sample: inside some real ball.
    pub(crate) precision: Vec<bool>,
    /// Per fake sample: number of real balls containing it.
    pub(crate) density: Vec<u32>,
    /// Per real sample: recall indicator (formula per config).
    pub(crate) recall: Vec<bool>,
    /// Per real sample: its ball contains a fake sample.
    pub(crate) coverage: Vec<bool>,
}

/// Per-sample outcomes of every chunk.
#[derive(Debug, Clone)]
pub(crate) struct PrdcOutcome {
    pub(crate) k: usize,
    pub(crate) splits: Vec<SplitOutcome>,
}

fn mean_bool(v: &[bool]) -> f64 {
    v.iter().filter(|&&b| b).count() as f64 / v.len() as f64
}

impl PrdcOutcome {
    pub(crate) fn summary(&self) -> Prdc {
        let n = self.splits.len() as f64;
        let mut out = Prdc {
            precision: 0.0,
            recall: 0.0,
            density: 0.0,
            coverage: 0.0,
        };
        for s in &self.splits {
            out.precision += mean_bool(&s.precision) / n;
            out.recall += mean_bool(&s.recall) / n;
            let counts: u64 = s.density.iter().map(|&c| u64::from(c)).sum();
            out.density += counts as f64 / (self.k as f64 * s.density.len() as f64) / n;
            out.coverage += mean_bool(&s.coverage) / n;
        }
        out
    }
}

/// Sizes of the consecutive chunks `torch.chunk` makes of `n` rows: `ceil(n / splits)` each,
/// the last one smaller. Errors if that does not give exactly `splits` chunks.
pub(crate) fn chunk_sizes(n: usize, splits: usize, input: &'static str) -> Result<Vec<usize>> {
    if splits == 0 {
        return Err(MetricsError::InvalidArgument {
            name: "splits",
            value: "0".into(),
            why: "at least one split is needed",
        });
    }
    let size = n.div_ceil(splits);
    let mut sizes = Vec::with_capacity(splits);
    let mut left = n;
    while left > 0 {
        let s = size.min(left);
        sizes.push(s);
        left -= s;
    }
    if sizes.len() != splits {
        return Err(MetricsError::TooFewRows {
            input,
            rows: n,
            needed: if n < splits { splits } else { n + 1 },
            why: "consecutive chunks of ceil(rows / splits) rows must make exactly `splits` chunks",
        });
    }
    Ok(sizes)
}

/// The `(k+1)`-th smallest entry of every row (the point itself counts as one neighbour).
fn radii(d: &DistanceMatrix, k: usize) -> Vec<f32> {
    let mut buf = Vec::with_capacity(d.cols);
    (0..d.rows)
        .map(|i| {
            buf.clear();
            buf.extend_from_slice(d.row(i));
            let (_, kth, _) = buf.select_nth_unstable_by(k, f32::total_cmp);
            *kth
        })
        .collect()
}

/// One of the three independent pieces of work of a chunk.
enum Piece {
    /// k-NN radii of the chunk's real or fake rows.
    Radii(Vec<f32>),
    /// Real-to-fake distances of the chunk.
    Cross(DistanceMatrix),
}

/// Combines a chunk's radii and real-to-fake distances into per-sample outcomes.
fn split_outcome(
    rad_r: &[f32],
    rad_f: &[f32],
    d: &DistanceMatrix,
    recall: RecallFormula,
) -> SplitOutcome {
    let (nr, nf) = (d.rows, d.cols);
    let mut precision = vec![false; nf];
    let mut density = vec![0u32; nf];
    let mut recall_v = vec![false; nr];
    let mut coverage = vec![false; nr];
    for i in 0..nr {
        let row = d.row(i);
        let (r, own_f) = (rad_r[i], rad_f.get(i).copied());
        for (j, &dij) in row.iter().enumerate() {
            if dij < r {
                precision[j] = true;
                density[j] += 1;
                coverage[i] = true;
            }
            let hit = match recall {
                RecallFormula::Corrected => dij < rad_f[j],
                RecallFormula::Reference => own_f.is_some_and(|rf| dij < rf),
            };
            recall_v[i] |= hit;
        }
    }
    SplitOutcome {
        precision,
        density,
        recall: recall_v,
        coverage,
    }
}

/// Validates the inputs and computes the per-sample outcomes of every chunk.
pub(crate) fn prdc_outcome(
    real: &Embeddings<'_>,
    fake: &Embeddings<'_>,
    config: &PrdcConfig,
) -> Result<PrdcOutcome> {
    same_dim(real, "real", fake, "fake")?;
    if config.k == 0 {
        return Err(MetricsError::InvalidArgument {
            name: "k",
            value: "0".into(),
            why: "the k-NN radius needs k >= 1",
        });
    }
    at_least_rows(real, "real", 2, "k-NN radii")?;
    at_least_rows(fake, "fake", 2, "k-NN radii")?;
    real.check_finite("real")?;
    fake.check_finite("fake")?;
    let real_sizes = chunk_sizes(real.rows(), config.splits, "real")?;
    let fake_sizes = chunk_sizes(fake.rows(), config.splits, "fake")?;
    for (sizes, what) in [(&real_sizes, "real split"), (&fake_sizes, "fake split")] {
        let smallest = sizes.iter().copied().min().unwrap_or(0);
        if config.k >= smallest {
            return Err(MetricsError::KTooLarge {
                k: config.k,
                size: smallest,
                what,
            });
        }
    }
    if config.recall == RecallFormula::Reference && real_sizes != fake_sizes {
        return Err(MetricsError::RowCountMismatch {
            left: "real",
            left_rows: real.rows(),
            right: "fake",
            right_rows: fake.rows(),
        });
    }
    let bounds = |sizes: &[usize]| -> Vec<(usize, usize)> {
        let mut start = 0;
        sizes
            .iter()
            .map(|&s| {
                start += s;
                (start - s, start)
            })
            .collect()
    };
    let (rb, fb) = (bounds(&real_sizes), bounds(&fake_sizes));
    // 3 independent GEMM-sized pieces per chunk (real radii, fake radii, cross distances),
    // spread over the cores as one flat list so the load balances.
    let pieces = parallel::map_indices(3 * config.splits, |t| {
        let (c, kind) = (t / 3, t % 3);
        let real_c = real.slice_rows(rb[c].0, rb[c].1);
        let fake_c = fake.slice_rows(fb[c].0, fb[c].1);
        Ok(match kind {
            0 => Piece::Radii(radii(
                &euclidean_distances(&real_c, "real", &real_c, "real")?,
                config.k,
            )),
            1 => Piece::Radii(radii(
                &euclidean_distances(&fake_c, "fake", &fake_c, "fake")?,
                config.k,
            )),
            _ => Piece::Cross(euclidean_distances(&real_c, "real", &fake_c, "fake")?),
        })
    })
    .into_iter()
    .collect::<Result<Vec<Piece>>>()?;
    let splits = pieces
        .chunks(3)
        .map(|p| match p {
            [Piece::Radii(rad_r), Piece::Radii(rad_f), Piece::Cross(d)] => {
                Ok(split_outcome(rad_r, rad_f, d, config.recall))
            }
            _ => Err(MetricsError::InvalidArgument {
                name: "splits",
                value: config.splits.to_string(),
                why: "internal: chunk pieces out of order",
            }),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(PrdcOutcome {
        k: config.k,
        splits,
    })
}

/// PRDC of `fake` rows against `real` rows with explicit settings.
pub fn prdc_rows(
    real: &Embeddings<'_>,
    fake: &Embeddings<'_>,
    config: &PrdcConfig,
) -> Result<Prdc> {
    Ok(prdc_outcome(real, fake, config)?.summary())
}

/// PRDC of `fake` against `real` tensors with explicit settings (e.g. the reference recall).
///
/// # Shapes
/// `real: [N, D]`, `fake: [M, D]`; every chunk must hold more than `k` rows.
pub fn prdc_with(real: &Tensor, fake: &Tensor, config: &PrdcConfig) -> Result<Prdc> {
    let real = Embeddings::from_tensor_named(real, "real")?;
    let fake = Embeddings::from_tensor_named(fake, "fake")?;
    prdc_rows(&real, &fake, config)
}

/// Precision, recall (correct formula), density and coverage with neighbourhood size `k`,
/// averaged over `splits` consecutive chunks.
///
/// # Shapes
/// `real: [N, D]`, `fake: [M, D]`; every chunk (`ceil(N / splits)` rows, the last maybe fewer)
/// must hold more than `k` rows.
pub fn prdc(real: &Tensor, fake: &Tensor, k: usize, splits: usize) -> Result<Prdc> {
    prdc_with(
        real,
        fake,
        &PrdcConfig {
            k,
            splits,
            recall: RecallFormula::Corrected,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_follow_torch_chunk() -> Result<()> {
        assert_eq!(chunk_sizes(640, 5, "x")?, vec![128; 5]);
        assert_eq!(chunk_sizes(11, 3, "x")?, vec![4, 4, 3]);
        // ceil(6 / 4) = 2 gives only 3 chunks: rejected rather than silently fewer splits.
        assert!(chunk_sizes(6, 4, "x").is_err());
        assert!(chunk_sizes(3, 5, "x").is_err());
        Ok(())
    }

    #[test]
    fn hand_built_one_dimensional_case() -> Result<()> {
        // real = {0, 1, 2, 10}, fake = {0.5, 20, 1.5, 9}, k = 1, one split.
        // Radii (2nd smallest incl. self): real 0->1, 1->1, 2->1, 10->8;
        // fake 0.5->1, 20->11, 1.5->1, 9->7.5.
        // precision: 0.5 (in ball of 0 and 1), 20 (no), 1.5 (1, 2), 9 (10) -> 3/4.
        // density: counts 2, 0, 2, 1 -> 5 / (1 * 4).
        // coverage: 0 (0.5), 1 (0.5), 2 (1.5), 10 (9) -> 1.
        // corrected recall: real 0 near 0.5 (r 1), 1 near 0.5, 2 near 1.5, 10 near 9 (r 7.5) -> 1.
        // reference recall uses rad_f[i] for real i: 0 (r 1: 0.5 ok), 1 (r 11: ok),
        // 2 (r 1: 1.5 ok), 10 (r 7.5: 9 at 1 ok) -> 1; see the next test for a difference.
        let real = Embeddings::from_vec(vec![0.0, 1.0, 2.0, 10.0], 1)?;
        let fake = Embeddings::from_vec(vec![0.5, 20.0, 1.5, 9.0], 1)?;
        let cfg = PrdcConfig {
            k: 1,
            splits: 1,
            recall: RecallFormula::Corrected,
        };
        let p = prdc_rows(&real, &fake, &cfg)?;
        assert_eq!(p.precision, 0.75);
        assert_eq!(p.density, 1.25);
        assert_eq!(p.coverage, 1.0);
        assert_eq!(p.recall, 1.0);
        Ok(())
    }

    #[test]
    fn reference_recall_indexes_fake_radius_by_real_row() -> Result<()> {
        // k = 1, one split, real = {0, 4.8, 5.1}, fake = {5.3, 100, 100.4}.
        // rad_f: 5.3 -> 94.7, 100 -> 0.4, 100.4 -> 0.4.
        // Corrected: every real point is within 94.7 of fake 5.3 -> recall 1.
        // Reference: real 0 uses rad_f[0] = 94.7 (hit); real 4.8 uses rad_f[1] = 0.4 but its
        // nearest fake is 0.5 away (miss); real 5.1 uses rad_f[2] = 0.4, fake 5.3 at 0.2 (hit)
        // -> recall 2/3.
        let real = Embeddings::from_vec(vec![0.0, 4.8, 5.1], 1)?;
        let fake = Embeddings::from_vec(vec![5.3, 100.0, 100.4], 1)?;
        let mut cfg = PrdcConfig {
            k: 1,
            splits: 1,
            recall: RecallFormula::Corrected,
        };
        assert_eq!(prdc_rows(&real, &fake, &cfg)?.recall, 1.0);
        cfg.recall = RecallFormula::Reference;
        let r = prdc_rows(&real, &fake, &cfg)?.recall;
        assert!((r - 2.0 / 3.0).abs() < 1e-15, "{r}");
        Ok(())
    }
}
