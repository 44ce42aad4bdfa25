//! Properties that hold for any input: FD is a (squared) distance between Gaussians, PRDC of a
//! set against itself is perfect, retrieval of identical embeddings is perfect.

use candle::{Device, Tensor};
use metrics::{Embeddings, PrdcConfig, RecallFormula};
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};

use crate::data;

fn permuted(t: &Tensor, seed: u64) -> anyhow::Result<Tensor> {
    let mut idx: Vec<u32> = (0..t.dims()[0] as u32).collect();
    idx.shuffle(&mut StdRng::seed_from_u64(seed));
    let idx = Tensor::from_vec(idx, t.dims()[0], &Device::Cpu)?;
    Ok(t.index_select(&idx, 0)?)
}

#[test]
fn fd_of_a_set_with_itself_is_zero() -> anyhow::Result<()> {
    let d = data()?;
    assert!(metrics::frechet_distance(&d.real, &d.real)? < 1e-9);
    // Also with a singular covariance (50 rows in 256 dimensions).
    let s = d.fx.f32("singular.real")?;
    assert!(metrics::frechet_distance(&s, &s)? < 1e-9);
    Ok(())
}

#[test]
fn fd_is_symmetric_and_invariant_to_row_order() -> anyhow::Result<()> {
    let d = data()?;
    let fd = metrics::frechet_distance(&d.real, &d.fake)?;
    let swapped = metrics::frechet_distance(&d.fake, &d.real)?;
    assert!((fd - swapped).abs() < 1e-10 * fd, "{fd} vs {swapped}");
    let shuffled = metrics::frechet_distance(&permuted(&d.real, 1)?, &permuted(&d.fake, 2)?)?;
    assert!((fd - shuffled).abs() < 1e-10 * fd, "{fd} vs {shuffled}");
    // Singular case: same properties.
    let (a, b) = (d.fx.f32("singular.real")?, d.fx.f32("singular.fake")?);
    let s = metrics::frechet_distance(&a, &b)?;
    let s_swapped = metrics::frechet_distance(&b, &a)?;
    let s_shuffled = metrics::frechet_distance(&permuted(&a, 3)?, &b)?;
    assert!((s - s_swapped).abs() < 1e-8 * s, "{s} vs {s_swapped}");
    assert!((s - s_shuffled).abs() < 1e-8 * s, "{s} vs {s_shuffled}");
    Ok(())
}

#[test]
fn fd_of_a_translated_set_is_the_squared_shift() -> anyhow::Result<()> {
    // Translating every row by t leaves the covariance alone: FD = |t|^2 (hand-derived).
    let d = data()?;
    let shifted = (&d.real + 0.25)?;
    let fd = metrics::frechet_distance(&d.real, &shifted)?;
    let expected = 256.0 * 0.25f64.powi(2);
    assert!((fd - expected).abs() < 1e-3, "{fd} vs {expected}");
    Ok(())
}

#[test]
fn prdc_of_a_set_with_itself_is_perfect() -> anyhow::Result<()> {
    let d = data()?;
    for recall in [RecallFormula::Corrected, RecallFormula::Reference] {
        let cfg = PrdcConfig {
            recall,
            ..PrdcConfig::default()
        };
        let p = metrics::prdc_with(&d.real, &d.real, &cfg)?;
        assert_eq!(
            (p.precision, p.recall, p.coverage),
            (1.0, 1.0, 1.0),
            "{recall:?}"
        );
        // Every point lies in its own ball and in some neighbours': density >= 1 / k.
        assert!(p.density >= 1.0 / 3.0);
    }
    Ok(())
}

#[test]
fn prdc_with_one_split_is_invariant_to_row_order() -> anyhow::Result<()> {
    let d = data()?;
    let (real, fake) = (d.real.narrow(0, 0, 200)?, d.fake.narrow(0, 0, 200)?);
    let a = metrics::prdc(&real, &fake, 3, 1)?;
    let b = metrics::prdc(&permuted(&real, 4)?, &permuted(&fake, 5)?, 3, 1)?;
    assert!((a.precision - b.precision).abs() < 1e-12);
    assert!((a.recall - b.recall).abs() < 1e-12);
    assert!((a.density - b.density).abs() < 1e-12);
    assert!((a.coverage - b.coverage).abs() < 1e-12);
    Ok(())
}

#[test]
fn retrieval_of_identical_embeddings_is_perfect() -> anyhow::Result<()> {
    let d = data()?;
    let r = metrics::retrieval(&d.text, &d.text, 64, &[1, 2, 3])?;
    assert_eq!(r.recall_at_k, vec![1.0, 1.0, 1.0]);
    // Matched distances are float32 cancellation residues of |x|^2 + |x|^2 - 2 x.x.
    assert!(r.mm_distance < 0.05, "{}", r.mm_distance);
    Ok(())
}

#[test]
fn tmr_score_of_identical_and_opposite_embeddings() -> anyhow::Result<()> {
    let d = data()?;
    assert!((metrics::tmr_score(&d.fake, &d.fake)? - 1.0).abs() < 1e-12);
    assert_eq!(metrics::tmr_score(&d.fake, &d.fake.neg()?)?, 0.0);
    // Positive scaling of a row does not change its cosine (by 2: exact in float32).
    let scaled = (&d.text * 2.0)?;
    let (a, b) = (
        metrics::tmr_score(&d.fake, &d.text)?,
        metrics::tmr_score(&d.fake, &scaled)?,
    );
    assert!((a - b).abs() < 1e-15, "{a} vs {b}");
    Ok(())
}

#[test]
fn diversity_is_seeded_and_close_to_the_expected_pair_distance() -> anyhow::Result<()> {
    let d = data()?;
    let a = metrics::diversity(&d.real, metrics::HUMANML3D_DIVERSITY_PAIRS, 11)?;
    assert_eq!(
        a,
        metrics::diversity(&d.real, metrics::HUMANML3D_DIVERSITY_PAIRS, 11)?
    );
    let b = metrics::diversity(&d.real, metrics::HUMANML3D_DIVERSITY_PAIRS, 12)?;
    assert_ne!(a, b);
    // For two independent draws from one distribution E|x - y|^2 = 2 tr S, and in 256
    // dimensions |x - y| concentrates, so the mean distance is close to sqrt(2 tr S).
    let stats = metrics::GaussianStats::from_embeddings(&Embeddings::from_tensor(&d.real)?)?;
    let trace: f64 = (0..stats.dim())
        .map(|i| stats.cov[i * stats.dim() + i])
        .sum();
    let expected = (2.0 * trace).sqrt();
    assert!((a / expected - 1.0).abs() < 0.05, "{a} vs {expected}");
    Ok(())
}
