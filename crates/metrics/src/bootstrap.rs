//! Confidence intervals for every metric: seeded resampling and the percentile interval
//! (Efron, "Bootstrap Methods: Another Look at the Jackknife", Annals of Statistics 1979;
//! Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13).
//!
//! Mean-like metrics (retrieval, TMR-score, diversity) use the plain bootstrap (resampling with
//! replacement). FD and PRDC, which are not means of per-sample terms, use half-sampling. What
//! is resampled:
//! - **FD**: half-samples (delete-d jackknife with d = N/2; Shao & Wu, "A General Theory for
//!   Jackknife Variance Estimation", Annals of Statistics 1989): `floor(N/2)` rows of `real`
//!   and of `fake` drawn WITHOUT replacement, the distance recomputed, the spread of those
//!   values (scaled by `sqrt(m / (N - m))`, 1 for even N) centred on the full-data estimate.
//!   The plain bootstrap is useless for FD in high dimension: duplicated rows shrink the
//!   covariance rank and inflate FD far beyond its sampling spread (on the fixture, 640 x 256:
//!   resampled FDs 109..116 around an estimate of 66). Half-sampling avoids duplicates; it is
//!   conservative (see `docs/metrics.md`: about 1.8x the true spread in a simulation of the
//!   fixture's recipe), and each resample costs one FD on half the rows.
//! - **PRDC**: half-samples as for FD, PRDC recomputed with the same `k` and splits. Resampling
//!   with replacement would put duplicates at distance 0 and shrink every k-NN radius, and
//!   resampling the per-sample in-ball indicators with the balls held fixed ignores the
//!   variability of the balls (it gave intervals 1.4 to 2 times too narrow in a simulation);
//!   half-sampling matched the spread of fresh draws within about 15% (`docs/metrics.md`).
//! - **Retrieval**: the queries (rank of the own motion and matched distance per text), batch
//!   composition held fixed.
//! - **TMR-score**: the per-row cosine similarities. **Diversity**: the drawn pair distances.
//!
//! Resample `b` draws from its own generator seeded by `(seed, b)`, so a result does not depend
//! on the number of threads. The interval is `[q(a/2), q(1 - a/2)]` of the resampled
//! statistics (for half-samples: after centring and scaling), with linear interpolation between
//! order statistics (numpy's default) and `a = 1 - confidence`; the point estimate is the
//! metric on the full data.

use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::embeddings::{Embeddings, at_least_rows};
use crate::error::{MetricsError, Result};
use crate::frechet::{FrechetAccumulator, frechet_distance_from_stats, frechet_distance_rows};
use crate::parallel;
use crate::prdc::{PrdcConfig, chunk_sizes, prdc_outcome, prdc_rows};
use crate::retrieval::retrieval_outcome;
use crate::similarity::{diversity_distances, row_cosines};

/// Settings of a bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapConfig {
    /// Number of resamples (at least 2; 1000 is customary for 95% intervals).
    pub resamples: usize,
    /// Coverage of the interval, in `(0, 1)`.
    pub confidence: f64,
    /// Seed of the resampling.
    pub seed: u64,
}

impl Default for BootstrapConfig {
    /// 1000 resamples, 95%, seed 0.
    fn default() -> Self {
        Self {
            resamples: 1000,
            confidence: 0.95,
            seed: 0,
        }
    }
}

impl BootstrapConfig {
    fn validate(&self) -> Result<()> {
        if self.resamples < 2 {
            return Err(MetricsError::InvalidArgument {
                name: "resamples",
                value: self.resamples.to_string(),
                why: "a percentile interval needs at least 2 resamples",
            });
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(MetricsError::InvalidArgument {
                name: "confidence",
                value: self.confidence.to_string(),
                why: "must lie strictly between 0 and 1",
            });
        }
        Ok(())
    }

    /// The generator of resample `b`: a function of `(seed, b)` only.
    fn rng(&self, b: usize) -> StdRng {
        StdRng::seed_from_u64(splitmix64(
            self.seed ^ splitmix64((b as u64).wrapping_add(0x5851_f42d_4c95_7f2d)),
        ))
    }
}

/// SplitMix64 finaliser (Steele et al., "Fast Splittable Pseudorandom Number Generators",
/// OOPSLA 2014): decorrelates neighbouring seeds.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A point estimate with its bootstrap percentile interval.
///
/// ```
/// use metrics::Interval;
/// let iv = Interval::from_samples(2.0, vec![1.0, 2.0, 3.0, 4.0, 5.0], 0.5)?;
/// // Quartiles of 1..=5 with linear interpolation: 2 and 4.
/// assert_eq!((iv.lower, iv.upper), (2.0, 4.0));
/// assert_eq!(format!("{iv:.1}"), "2.0 ± 1.0 (50%)");
/// # Ok::<(), metrics::MetricsError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The metric on the full data.
    pub estimate: f64,
    /// Lower end of the percentile interval.
    pub lower: f64,
    /// Upper end of the percentile interval.
    pub upper: f64,
    /// Standard deviation of the resampled statistics.
    pub std_error: f64,
    /// Coverage the interval was built for.
    pub confidence: f64,
    /// Number of resamples.
    pub resamples: usize,
}

impl Interval {
    /// Builds the percentile interval of `samples` around `estimate`.
    pub fn from_samples(estimate: f64, mut samples: Vec<f64>, confidence: f64) -> Result<Self> {
        BootstrapConfig {
            resamples: samples.len(),
            confidence,
            seed: 0,
        }
        .validate()?;
        if let Some(bad) = samples.iter().find(|v| !v.is_finite()) {
            return Err(MetricsError::InvalidArgument {
                name: "samples",
                value: bad.to_string(),
                why: "bootstrap statistics must be finite",
            });
        }
        samples.sort_by(f64::total_cmp);
        let alpha = 1.0 - confidence;
        let n = samples.len() as f64;
        let mean = samples.iter().sum::<f64>() / n;
        let var = samples.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        Ok(Self {
            estimate,
            lower: quantile(&samples, alpha / 2.0),
            upper: quantile(&samples, 1.0 - alpha / 2.0),
            std_error: var.sqrt(),
            confidence,
            resamples: samples.len(),
        })
    }

    /// Half the interval's width: the "± h" of a table.
    pub fn half_width(&self) -> f64 {
        0.5 * (self.upper - self.lower)
    }

    /// Whether `value` lies in `[lower, upper]`.
    pub fn contains(&self, value: f64) -> bool {
        self.lower <= value && value <= self.upper
    }

    /// The interval intersected with the metric's range `[min, max]`: a half-sample interval is
    /// centred on the estimate, so for an estimate at the edge of the range (FD 0 of a set
    /// against itself, precision 1) it reaches past values the metric cannot take. The
    /// intersection covers the true value at least as often, and reads sensibly.
    pub fn within(mut self, min: f64, max: f64) -> Self {
        self.lower = self.lower.clamp(min, max);
        self.upper = self.upper.clamp(min, max);
        self
    }
}

impl fmt::Display for Interval {
    /// `estimate ± half_width (confidence%)`, with the formatter's precision (default 3).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = f.precision().unwrap_or(3);
        write!(
            f,
            "{:.p$} ± {:.p$} ({}%)",
            self.estimate,
            self.half_width(),
            (self.confidence * 100.0 * 1e6).round() / 1e6,
        )
    }
}

/// Quantile `q` of sorted values, linear interpolation between order statistics.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = pos - lo as f64;
    sorted[lo] + frac * (sorted[hi] - sorted[lo])
}

/// `n` indices drawn uniformly with replacement from `0..n`.
fn resample_indices(rng: &mut StdRng, n: usize) -> Vec<usize> {
    (0..n).map(|_| rng.random_range(0..n)).collect()
}

/// Runs `cfg.resamples` resamples of a statistic vector; `draws[b][s]` = statistic `s` of
/// resample `b`.
fn draws<F>(cfg: &BootstrapConfig, stat: F) -> Result<Vec<Vec<f64>>>
where
    F: Fn(&mut StdRng) -> Result<Vec<f64>> + Sync,
{
    cfg.validate()?;
    parallel::map_indices(cfg.resamples, |b| stat(&mut cfg.rng(b)))
        .into_iter()
        .collect()
}

/// Percentile intervals of bootstrap resamples (with replacement), one per statistic.
fn run<F>(cfg: &BootstrapConfig, estimates: &[f64], stat: F) -> Result<Vec<Interval>>
where
    F: Fn(&mut StdRng) -> Result<Vec<f64>> + Sync,
{
    let draws = draws(cfg, stat)?;
    estimates
        .iter()
        .enumerate()
        .map(|(s, &e)| {
            Interval::from_samples(e, draws.iter().map(|d| d[s]).collect(), cfg.confidence)
        })
        .collect()
}

/// Half-sampling intervals (delete-d jackknife, d = n - m): the spread of the half-sample
/// statistics, scaled by `sqrt(m / (n - m))` and centred on the full-data estimate.
fn run_half<F>(cfg: &BootstrapConfig, n: usize, estimates: &[f64], stat: F) -> Result<Vec<Interval>>
where
    F: Fn(&mut StdRng) -> Result<Vec<f64>> + Sync,
{
    let draws = draws(cfg, stat)?;
    let m = (n / 2) as f64;
    let scale = (m / (n as f64 - m)).sqrt();
    estimates
        .iter()
        .enumerate()
        .map(|(s, &e)| {
            let v: Vec<f64> = draws.iter().map(|d| d[s]).collect();
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let centred = v.iter().map(|x| e + scale * (x - mean)).collect();
            Interval::from_samples(e, centred, cfg.confidence)
        })
        .collect()
}

/// `floor(n / 2)` distinct indices of `0..n`, increasing (row order kept for chunking).
fn half_indices(rng: &mut StdRng, n: usize) -> Vec<usize> {
    let mut idx = rand::seq::index::sample(rng, n, n / 2).into_vec();
    idx.sort_unstable();
    idx
}

fn only(mut v: Vec<Interval>) -> Interval {
    v.swap_remove(0)
}

/// Confidence interval of the Fréchet distance by half-sampling (see the module docs): each
/// resample recomputes FD on `floor(N/2)` rows of `real` and `floor(M/2)` rows of `fake` drawn
/// without replacement. Needs at least 4 rows in each set.
pub fn bootstrap_frechet(
    real: &Embeddings<'_>,
    fake: &Embeddings<'_>,
    cfg: &BootstrapConfig,
) -> Result<Interval> {
    let estimate = frechet_distance_rows(real, fake)?;
    at_least_rows(real, "real", 4, "half-samples of at least 2 rows")?;
    at_least_rows(fake, "fake", 4, "half-samples of at least 2 rows")?;
    let weights = |rng: &mut StdRng, n: usize| {
        let mut w = vec![0.0; n];
        for i in half_indices(rng, n) {
            w[i] = 1.0;
        }
        w
    };
    let stat = |rng: &mut StdRng| {
        let wr = weights(rng, real.rows());
        let wf = weights(rng, fake.rows());
        let mut a = FrechetAccumulator::new(real.dim());
        a.add_weighted(real, Some(&wr));
        let mut b = FrechetAccumulator::new(fake.dim());
        b.add_weighted(fake, Some(&wf));
        Ok(vec![frechet_distance_from_stats(&a.stats()?, &b.stats()?)?])
    };
    // FD is a squared distance: never below 0.
    Ok(only(run_half(cfg, real.rows(), &[estimate], stat)?).within(0.0, f64::INFINITY))
}

/// Intervals of the four PRDC metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrdcIntervals {
    /// Precision.
    pub precision: Interval,
    /// Recall (formula per the config).
    pub recall: Interval,
    /// Density.
    pub density: Interval,
    /// Coverage.
    pub coverage: Interval,
}

/// Confidence intervals of PRDC by half-sampling (see the module docs): each resample
/// recomputes PRDC, with the same settings, on `floor(N/2)` real and `floor(M/2)` fake rows drawn
/// without replacement (row order kept). The half-size chunks must still hold more than `k`
/// rows.
pub fn bootstrap_prdc(
    real: &Embeddings<'_>,
    fake: &Embeddings<'_>,
    config: &PrdcConfig,
    cfg: &BootstrapConfig,
) -> Result<PrdcIntervals> {
    let p = prdc_rows(real, fake, config)?;
    for (e, input) in [(real, "real half-sample"), (fake, "fake half-sample")] {
        let sizes = chunk_sizes(e.rows() / 2, config.splits, input)?;
        let smallest = sizes.iter().copied().min().unwrap_or(0);
        if config.k >= smallest {
            return Err(MetricsError::KTooLarge {
                k: config.k,
                size: smallest,
                what: if input.starts_with("real") {
                    "real split of a half-sample"
                } else {
                    "fake split of a half-sample"
                },
            });
        }
    }
    let stat = |rng: &mut StdRng| {
        let r = real.select(&half_indices(rng, real.rows()));
        let f = fake.select(&half_indices(rng, fake.rows()));
        let q = prdc_outcome(&r, &f, config)?.summary();
        Ok(vec![q.precision, q.recall, q.density, q.coverage])
    };
    let iv = run_half(
        cfg,
        real.rows(),
        &[p.precision, p.recall, p.density, p.coverage],
        stat,
    )?;
    // Precision, recall and coverage are fractions; density is a non-negative mean count.
    Ok(PrdcIntervals {
        precision: iv[0].within(0.0, 1.0),
        recall: iv[1].within(0.0, 1.0),
        density: iv[2].within(0.0, f64::INFINITY),
        coverage: iv[3].within(0.0, 1.0),
    })
}

/// Intervals of the retrieval scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalIntervals {
    /// One interval per requested `k`, in the order of `top_k`.
    pub recall_at_k: Vec<Interval>,
    /// MM-distance.
    pub mm_distance: Interval,
}

/// Bootstrap intervals of R@k and MM-distance (queries resampled, batches fixed).
pub fn bootstrap_retrieval(
    text: &Embeddings<'_>,
    motion: &Embeddings<'_>,
    batch_size: usize,
    top_k: &[usize],
    cfg: &BootstrapConfig,
) -> Result<RetrievalIntervals> {
    let outcome = retrieval_outcome(text, motion, batch_size, top_k)?;
    let r = outcome.summary(top_k);
    let n = outcome.rank.len();
    let stat = |rng: &mut StdRng| {
        let idx = resample_indices(rng, n);
        let mut v: Vec<f64> = top_k
            .iter()
            .map(|&k| idx.iter().filter(|&&i| outcome.rank[i] < k).count() as f64 / n as f64)
            .collect();
        v.push(idx.iter().map(|&i| outcome.matched[i]).sum::<f64>() / n as f64);
        Ok(v)
    };
    let mut estimates = r.recall_at_k.clone();
    estimates.push(r.mm_distance);
    let mut iv = run(cfg, &estimates, stat)?;
    let mm = iv.pop().ok_or(MetricsError::InvalidArgument {
        name: "top_k",
        value: "[]".into(),
        why: "internal: missing MM-distance interval",
    })?;
    Ok(RetrievalIntervals {
        recall_at_k: iv,
        mm_distance: mm,
    })
}

/// Bootstrap interval of the TMR-score (paired rows resampled).
pub fn bootstrap_tmr_score(
    motion: &Embeddings<'_>,
    text: &Embeddings<'_>,
    cfg: &BootstrapConfig,
) -> Result<Interval> {
    let c = row_cosines(motion, text)?;
    let n = c.len();
    let estimate = (c.iter().sum::<f64>() / n as f64).max(0.0);
    let stat = |rng: &mut StdRng| {
        let s = resample_indices(rng, n).iter().map(|&i| c[i]).sum::<f64>() / n as f64;
        Ok(vec![s.max(0.0)])
    };
    Ok(only(run(cfg, &[estimate], stat)?))
}

/// Bootstrap interval of the diversity (the drawn pairs resampled).
pub fn bootstrap_diversity(
    embeddings: &Embeddings<'_>,
    pairs: usize,
    seed: u64,
    cfg: &BootstrapConfig,
) -> Result<Interval> {
    let d = diversity_distances(embeddings, pairs, seed)?;
    let n = d.len();
    let estimate = d.iter().sum::<f64>() / n as f64;
    let stat = |rng: &mut StdRng| {
        Ok(vec![
            resample_indices(rng, n).iter().map(|&i| d[i]).sum::<f64>() / n as f64,
        ])
    };
    Ok(only(run(cfg, &[estimate], stat)?))
}

/// Paired differences `a - b` of two candidate sets scored against the same real motions and
/// texts, each with its interval (see [`bootstrap_paired_difference`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedDifference {
    /// `FD(real, a) - FD(real, b)`.
    pub fd: Interval,
    /// `TMR-score(a) - TMR-score(b)` (mean cosines, without the floor at 0).
    pub tmr_score: Interval,
    /// `R@k(a) - R@k(b)` for every requested `k`, in `top_k` order.
    pub recall_at_k: Vec<Interval>,
}

/// Paired comparison of two candidate sets `a` and `b` (e.g. the motions of two samplers from
/// the same captions and seeds): row `i` of `real`, `text`, `a` and `b` all belong to sample
/// `i`, and every resample draws the SAME rows from all four, so the sample-to-sample spread
/// that both sets share cancels and the interval of the difference is far narrower than the two
/// sets' own intervals would suggest.
///
/// FD uses half-sampling, as [`bootstrap_frechet`] (the same `floor(N/2)` rows of all sets per
/// resample); TMR-score and R@k resample queries with replacement, batches fixed as in
/// [`bootstrap_retrieval`]. An interval that excludes 0 means the sets differ on that metric at
/// the configured confidence.
pub fn bootstrap_paired_difference(
    real: &Embeddings<'_>,
    text: &Embeddings<'_>,
    a: &Embeddings<'_>,
    b: &Embeddings<'_>,
    batch_size: usize,
    top_k: &[usize],
    cfg: &BootstrapConfig,
) -> Result<PairedDifference> {
    for (set, name) in [(a, "a"), (b, "b"), (text, "text")] {
        crate::embeddings::same_rows(real, "real", set, name)?;
    }
    at_least_rows(real, "real", 4, "half-samples of at least 2 rows")?;
    let n = real.rows();
    let fd_estimate = frechet_distance_rows(real, a)? - frechet_distance_rows(real, b)?;
    let fd_stat = |rng: &mut StdRng| {
        let mut w = vec![0.0; n];
        for i in half_indices(rng, n) {
            w[i] = 1.0;
        }
        let stats = |e: &Embeddings<'_>| {
            let mut acc = FrechetAccumulator::new(e.dim());
            acc.add_weighted(e, Some(&w));
            acc.stats()
        };
        let r = stats(real)?;
        Ok(vec![
            frechet_distance_from_stats(&r, &stats(a)?)?
                - frechet_distance_from_stats(&r, &stats(b)?)?,
        ])
    };
    let fd = only(run_half(cfg, n, &[fd_estimate], fd_stat)?);

    let (ca, cb) = (row_cosines(a, text)?, row_cosines(b, text)?);
    let diff: Vec<f64> = ca.iter().zip(&cb).map(|(x, y)| x - y).collect();
    let mean = |idx: &mut dyn Iterator<Item = usize>| idx.map(|i| diff[i]).sum::<f64>() / n as f64;
    let tmr_estimate = mean(&mut (0..n));
    let tmr_score = only(run(cfg, &[tmr_estimate], |rng: &mut StdRng| {
        Ok(vec![mean(&mut resample_indices(rng, n).into_iter())])
    })?);

    let (ra, rb) = (
        retrieval_outcome(text, a, batch_size, top_k)?,
        retrieval_outcome(text, b, batch_size, top_k)?,
    );
    let hit_diff = |k: usize, idx: &[usize]| {
        idx.iter()
            .map(|&i| f64::from(u8::from(ra.rank[i] < k)) - f64::from(u8::from(rb.rank[i] < k)))
            .sum::<f64>()
            / n as f64
    };
    let all: Vec<usize> = (0..n).collect();
    let estimates: Vec<f64> = top_k.iter().map(|&k| hit_diff(k, &all)).collect();
    let recall_at_k = run(cfg, &estimates, |rng: &mut StdRng| {
        let idx = resample_indices(rng, n);
        Ok(top_k.iter().map(|&k| hit_diff(k, &idx)).collect())
    })?;
    Ok(PairedDifference {
        fd,
        tmr_score,
        recall_at_k,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, d: usize, shift: f32, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n * d)
            .map(|i| rng.random_range(-1.0f32..1.0) + if i % d == 0 { shift } else { 0.0 })
            .collect()
    }

    #[test]
    fn paired_differences_are_zero_for_equal_sets_and_detect_a_shift() -> Result<()> {
        let (n, d) = (96, 4);
        let real = rows(n, d, 0.0, 1);
        let text = rows(n, d, 0.0, 2);
        // `a` = real + small noise; `b` = a shifted along the first axis.
        let a: Vec<f32> = real
            .iter()
            .zip(rows(n, d, 0.0, 3))
            .map(|(r, e)| r + 0.2 * e)
            .collect();
        let b: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, v)| v + if i % d == 0 { 0.6 } else { 0.0 })
            .collect();
        let e = |v: Vec<f32>| Embeddings::from_vec(v, d);
        let (real, text, a, b) = (e(real)?, e(text)?, e(a)?, e(b)?);
        let cfg = BootstrapConfig {
            resamples: 200,
            ..BootstrapConfig::default()
        };
        let same = bootstrap_paired_difference(&real, &text, &a, &a, 16, &[1, 2], &cfg)?;
        assert_eq!(same.fd.estimate, 0.0);
        assert_eq!((same.fd.lower, same.fd.upper), (0.0, 0.0));
        assert!(
            same.recall_at_k
                .iter()
                .all(|r| r.lower == 0.0 && r.upper == 0.0)
        );
        let ab = bootstrap_paired_difference(&real, &text, &a, &b, 16, &[1], &cfg)?;
        let ba = bootstrap_paired_difference(&real, &text, &b, &a, 16, &[1], &cfg)?;
        // b is further from the real set: FD(a) - FD(b) < 0, clearly (the interval excludes 0),
        // and the comparison is antisymmetric.
        assert!(ab.fd.upper < 0.0, "{:?}", ab.fd);
        assert!((ab.fd.estimate + ba.fd.estimate).abs() < 1e-9);
        assert!((ab.tmr_score.estimate + ba.tmr_score.estimate).abs() < 1e-12);
        // Differences need the same number of rows everywhere.
        let short = Embeddings::new(&[0.0f32; 8], d)?;
        assert!(bootstrap_paired_difference(&real, &text, &a, &short, 16, &[1], &cfg).is_err());
        Ok(())
    }

    #[test]
    fn intervals_stay_within_the_metric_range() -> Result<()> {
        let iv = Interval::from_samples(0.0, vec![-2.0, -1.0, 0.0, 1.0, 2.0], 0.5)?
            .within(0.0, f64::INFINITY);
        assert_eq!((iv.lower, iv.upper), (0.0, 1.0));
        let p = Interval::from_samples(1.0, vec![0.9, 0.95, 1.0, 1.05, 1.1], 0.5)?.within(0.0, 1.0);
        assert_eq!((p.lower, p.upper), (0.95, 1.0));
        assert!(p.contains(p.estimate));
        Ok(())
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        // numpy.quantile([1, 2, 3, 4], 0.1) = 1.3; 0.5 -> 2.5; 1.0 -> 4.
        let s = [1.0, 2.0, 3.0, 4.0];
        assert!((quantile(&s, 0.1) - 1.3).abs() < 1e-12);
        assert_eq!(quantile(&s, 0.5), 2.5);
        assert_eq!(quantile(&s, 1.0), 4.0);
        assert_eq!(quantile(&s, 0.0), 1.0);
    }

    #[test]
    fn resample_streams_depend_on_seed_and_index_only() {
        let cfg = BootstrapConfig::default();
        let a: Vec<usize> = resample_indices(&mut cfg.rng(5), 50);
        assert_eq!(a, resample_indices(&mut cfg.rng(5), 50));
        assert_ne!(a, resample_indices(&mut cfg.rng(6), 50));
    }

    #[test]
    fn bad_settings_are_rejected() {
        let bad = BootstrapConfig {
            resamples: 1,
            ..BootstrapConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = BootstrapConfig {
            confidence: 1.0,
            ..BootstrapConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
