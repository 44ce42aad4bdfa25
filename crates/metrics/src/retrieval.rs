//! Text-to-motion retrieval inside batches: R@k (R-precision) and MM-distance.
//!
//! Guo et al., "Generating Diverse and Natural 3D Human Motions from Text" (CVPR 2022)
//! introduced the protocol; Petrovich et al., "TMR: Text-to-Motion Retrieval Using Contrastive
//! 3D Human Motion Synthesis" (ICCV 2023) use it with TMR embeddings.
//!
//! Rows are paired: text `i` describes motion `i`. Rows are cut into consecutive batches of
//! `batch_size`; a smaller last batch is kept, its texts ranked among fewer candidates. Within a batch, every text is a query ranked
//! against the batch's motions by the float32 matrix-product Euclidean distance; text `i` counts
//! for R@k when its own motion is among its `k` nearest (ties broken by row order, like a
//! stable sort). R@k = hits / N; MM-distance = mean distance between matched pairs.
//!
//! **R@k depends on the batch size**: ranking among 64 candidates is easier than among 256, so
//! only numbers computed with the same `batch_size` (and the same row order) are comparable.
//! The reference uses 64. MM-distance does not depend on batching.

use candle::Tensor;
use serde::{Deserialize, Serialize};

use crate::embeddings::{Embeddings, at_least_rows, same_dim, same_rows};
use crate::error::{MetricsError, Result};
use crate::linalg::euclidean_distances;

/// Batch size of the reference protocol.
pub const REFERENCE_BATCH_SIZE: usize = 64;

/// Retrieval scores.
///
/// ```
/// use candle::{Device, Tensor};
/// // Three texts, each nearest to its own motion: perfect R@1, matched distances 0.1 each.
/// let motion = Tensor::new(&[[0.0f32, 0.0], [5.0, 0.0], [0.0, 5.0]], &Device::Cpu)?;
/// let text = (&motion + 0.1f64 / 2f64.sqrt())?;
/// let r = metrics::retrieval(&text, &motion, 3, &[1, 2])?;
/// assert_eq!(r.recall_at_k, vec![1.0, 1.0]);
/// // float32 matrix-product distances: |x|^2 ~ 25 cancels down to 0.01, so only ~1e-4 accurate.
/// assert!((r.mm_distance - 0.1).abs() < 1e-3);
/// # Ok::<(), metrics::MetricsError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retrieval {
    /// R@k for every requested `k`, in the order of `top_k`.
    pub recall_at_k: Vec<f64>,
    /// Mean Euclidean distance between each text and its own motion.
    pub mm_distance: f64,
}

/// Per-query outcomes, kept for bootstrap resampling.
#[derive(Debug, Clone)]
pub(crate) struct RetrievalOutcome {
    /// Rank (0 = nearest) of each text's own motion within its batch.
    pub(crate) rank: Vec<usize>,
    /// Distance between each text and its own motion.
    pub(crate) matched: Vec<f64>,
}

impl RetrievalOutcome {
    pub(crate) fn summary(&self, top_k: &[usize]) -> Retrieval {
        let n = self.rank.len() as f64;
        Retrieval {
            recall_at_k: top_k
                .iter()
                .map(|&k| self.rank.iter().filter(|&&r| r < k).count() as f64 / n)
                .collect(),
            mm_distance: self.matched.iter().sum::<f64>() / n,
        }
    }
}

/// Validates the inputs and ranks every query.
pub(crate) fn retrieval_outcome(
    text: &Embeddings<'_>,
    motion: &Embeddings<'_>,
    batch_size: usize,
    top_k: &[usize],
) -> Result<RetrievalOutcome> {
    same_dim(text, "text", motion, "motion")?;
    same_rows(text, "text", motion, "motion")?;
    at_least_rows(text, "text", 2, "ranking needs two candidates")?;
    if batch_size < 2 {
        return Err(MetricsError::InvalidArgument {
            name: "batch_size",
            value: batch_size.to_string(),
            why: "ranking needs at least two candidates per batch",
        });
    }
    for &k in top_k {
        if k == 0 {
            return Err(MetricsError::InvalidArgument {
                name: "top_k",
                value: "0".into(),
                why: "R@k needs k >= 1",
            });
        }
        if k >= batch_size {
            return Err(MetricsError::KTooLarge {
                k,
                size: batch_size,
                what: "retrieval batch",
            });
        }
    }
    text.check_finite("text")?;
    motion.check_finite("motion")?;
    let n = text.rows();
    let mut rank = Vec::with_capacity(n);
    let mut matched = Vec::with_capacity(n);
    for start in (0..n).step_by(batch_size) {
        let end = (start + batch_size).min(n);
        let d = euclidean_distances(
            &text.slice_rows(start, end),
            "text",
            &motion.slice_rows(start, end),
            "motion",
        )?;
        for i in 0..d.rows {
            let row = d.row(i);
            let own = row[i];
            let r = row
                .iter()
                .enumerate()
                .filter(|&(j, &v)| v < own || (v == own && j < i))
                .count();
            rank.push(r);
            matched.push(f64::from(own));
        }
    }
    Ok(RetrievalOutcome { rank, matched })
}

/// Retrieval scores of paired `text` / `motion` rows (see the module docs).
pub fn retrieval_rows(
    text: &Embeddings<'_>,
    motion: &Embeddings<'_>,
    batch_size: usize,
    top_k: &[usize],
) -> Result<Retrieval> {
    Ok(retrieval_outcome(text, motion, batch_size, top_k)?.summary(top_k))
}

/// Text-to-motion R@k (one value per entry of `top_k`, same order) and MM-distance, ranking
/// within consecutive batches of `batch_size` rows (64 in the reference; R@k depends on it).
///
/// # Shapes
/// `text: [N, D]` (the queries), `motion: [N, D]`, row `i` of each describing the same sample;
/// every `k` in `top_k` must be in `1..batch_size`.
pub fn retrieval(
    text: &Tensor,
    motion: &Tensor,
    batch_size: usize,
    top_k: &[usize],
) -> Result<Retrieval> {
    let text = Embeddings::from_tensor_named(text, "text")?;
    let motion = Embeddings::from_tensor_named(motion, "motion")?;
    retrieval_rows(&text, &motion, batch_size, top_k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_count_closer_candidates_in_the_batch_only() -> Result<()> {
        // 1-D, batch 2: batch 0 = texts {0, 10} vs motions {9, 10}: text 0 is nearer motion 0
        // (9 < 10): rank 0; text 10 is nearer motion 1 (0 < 1): rank 0.
        // batch 1 = texts {0, 3} vs motions {2, 0.5}: text 0: own 2, other 0.5 closer -> rank 1;
        // text 3: own 0.5 is 2.5 away, other 2 is 1 away -> rank 1.
        let text = Embeddings::from_vec(vec![0.0, 10.0, 0.0, 3.0], 1)?;
        let motion = Embeddings::from_vec(vec![9.0, 10.0, 2.0, 0.5], 1)?;
        let r = retrieval_rows(&text, &motion, 2, &[1])?;
        assert_eq!(r.recall_at_k, vec![0.5]);
        // Matched distances 9, 0, 2, 2.5 -> mean 13.5 / 4 (the 0 is the 1e-15 floor).
        assert!(
            (r.mm_distance - 13.5 / 4.0).abs() < 1e-5,
            "{}",
            r.mm_distance
        );
        Ok(())
    }
}
