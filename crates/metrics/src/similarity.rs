//! TMR-score and diversity.
//!
//! - TMR-score: mean cosine similarity between generated-motion embeddings and the embeddings
//!   of their texts, floored at 0 (Petrovich et al., "TMR: Text-to-Motion Retrieval Using
//!   Contrastive 3D Human Motion Synthesis", ICCV 2023, <https://arxiv.org/abs/2305.00976>).
//! - Diversity: mean Euclidean distance between randomly drawn pairs of samples, as in the
//!   HumanML3D evaluation protocol (Guo et al., "Generating Diverse and Natural 3D Human Motions
//!   from Text", CVPR 2022): two index sets of `pairs` rows, each drawn without replacement,
//!   paired position by position. Seeded: same seed, same value.

use candle::Tensor;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::embeddings::{Embeddings, at_least_rows, same_dim, same_rows};
use crate::error::{MetricsError, Result};

/// Number of pairs the HumanML3D protocol draws for diversity.
pub const HUMANML3D_DIVERSITY_PAIRS: usize = 300;

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// Cosine similarity of every paired row (float64), after validation.
pub(crate) fn row_cosines(motion: &Embeddings<'_>, text: &Embeddings<'_>) -> Result<Vec<f64>> {
    same_dim(motion, "motion", text, "text")?;
    same_rows(motion, "motion", text, "text")?;
    at_least_rows(motion, "motion", 1, "a mean similarity")?;
    motion.check_finite("motion")?;
    text.check_finite("text")?;
    (0..motion.rows())
        .map(|i| {
            let (m, t) = (motion.row(i), text.row(i));
            let (nm, nt) = (norm(m), norm(t));
            if nm == 0.0 {
                return Err(MetricsError::ZeroNorm {
                    input: "motion",
                    row: i,
                });
            }
            if nt == 0.0 {
                return Err(MetricsError::ZeroNorm {
                    input: "text",
                    row: i,
                });
            }
            let dot: f64 = m
                .iter()
                .zip(t)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            Ok(dot / (nm * nt))
        })
        .collect()
}

/// TMR-score of paired rows: `max(mean_i cos(motion_i, text_i), 0)`.
pub fn tmr_score_rows(motion: &Embeddings<'_>, text: &Embeddings<'_>) -> Result<f64> {
    let c = row_cosines(motion, text)?;
    Ok((c.iter().sum::<f64>() / c.len() as f64).max(0.0))
}

/// TMR-score: mean cosine similarity between each generated motion's embedding and its text's
/// embedding, floored at 0.
///
/// # Shapes
/// `motion: [N, D]`, `text: [N, D]`, row `i` of each describing the same sample; no zero rows.
pub fn tmr_score(motion: &Tensor, text: &Tensor) -> Result<f64> {
    let motion = Embeddings::from_tensor_named(motion, "motion")?;
    let text = Embeddings::from_tensor_named(text, "text")?;
    tmr_score_rows(&motion, &text)
}

/// The `pairs` seeded pair distances diversity averages.
pub(crate) fn diversity_distances(e: &Embeddings<'_>, pairs: usize, seed: u64) -> Result<Vec<f64>> {
    if pairs == 0 {
        return Err(MetricsError::InvalidArgument {
            name: "pairs",
            value: "0".into(),
            why: "diversity needs at least one pair",
        });
    }
    at_least_rows(
        e,
        "embeddings",
        pairs.max(2),
        "drawing `pairs` rows without replacement",
    )?;
    e.check_finite("embeddings")?;
    let mut rng = StdRng::seed_from_u64(seed);
    let first = rand::seq::index::sample(&mut rng, e.rows(), pairs);
    let second = rand::seq::index::sample(&mut rng, e.rows(), pairs);
    Ok(first
        .iter()
        .zip(second.iter())
        .map(|(a, b)| {
            e.row(a)
                .iter()
                .zip(e.row(b))
                .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect())
}

/// Diversity of a set of rows: mean distance over `pairs` seeded random pairs
/// ([`HUMANML3D_DIVERSITY_PAIRS`] in the HumanML3D protocol). Needs `rows >= pairs`.
pub fn diversity_rows(e: &Embeddings<'_>, pairs: usize, seed: u64) -> Result<f64> {
    let d = diversity_distances(e, pairs, seed)?;
    Ok(d.iter().sum::<f64>() / d.len() as f64)
}

/// Diversity of the rows of a tensor (see [`diversity_rows`]).
///
/// # Shapes
/// `embeddings: [N, D]` with `N >= pairs`.
pub fn diversity(embeddings: &Tensor, pairs: usize, seed: u64) -> Result<f64> {
    let e = Embeddings::from_tensor_named(embeddings, "embeddings")?;
    diversity_rows(&e, pairs, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_is_floored_at_zero() -> Result<()> {
        // Hand-computed: rows (1,0)/(1,1) -> 1/sqrt 2; (0,1)/(0,-1) -> -1; mean < 0 -> 0.
        let m = Embeddings::from_vec(vec![1.0, 0.0, 0.0, 1.0], 2)?;
        let t = Embeddings::from_vec(vec![1.0, 1.0, 0.0, -1.0], 2)?;
        assert_eq!(tmr_score_rows(&m, &t)?, 0.0);
        let t2 = Embeddings::from_vec(vec![1.0, 1.0, 0.0, 3.0], 2)?;
        let s = tmr_score_rows(&m, &t2)?;
        assert!((s - (0.5f64.sqrt() + 1.0) / 2.0).abs() < 1e-12, "{s}");
        Ok(())
    }

    #[test]
    fn diversity_pairs_two_independent_draws() -> Result<()> {
        // Rows = the 100 basis vectors of R^100: distinct rows are sqrt 2 apart, so with two
        // independent draws a position pairs a row with itself with probability 1/100 and the
        // expected diversity is sqrt 2 * 0.99 ~ 1.40. Pairing a draw with itself would give 0.
        let n = 100;
        let mut v = vec![0.0f32; n * n];
        for i in 0..n {
            v[i * n + i] = 1.0;
        }
        let e = Embeddings::from_vec(v, n)?;
        let d = diversity_rows(&e, n, 3)?;
        assert!((1.30..=2f64.sqrt()).contains(&d), "{d}");
        // Same seed, same value; another seed, another draw.
        assert_eq!(diversity_rows(&e, n, 3)?, d);
        assert_ne!(
            diversity_distances(&e, n, 4)?,
            diversity_distances(&e, n, 3)?
        );
        assert!(diversity_rows(&e, n + 1, 3).is_err());
        Ok(())
    }
}
