//! Every `metric.*` and `singular.*` value of the reference fixture, within the tolerances of
//! `fixtures/metrics.json` (`tolerance_suggestion`): FD rel 1e-4, PRDC exact, R@k exact counts,
//! mm_distance rel 1e-5, tmr_score abs 1e-6, singular FD rel 1e-4.

use metrics::{Embeddings, FrechetAccumulator, PrdcConfig, RecallFormula};

use crate::{data, scalar};

fn assert_rel(actual: f64, expected: f64, rel: f64, what: &str) {
    let err = (actual - expected).abs() / expected.abs();
    assert!(
        err <= rel,
        "{what}: {actual} vs {expected} (rel err {err:e} > {rel:e})"
    );
}

/// PRDC values are means of integer counts over 5 chunks of 128 rows (density also / k = 3),
/// so one count of difference moves a value by at least 1 / (3 * 128 * 5) ~ 5e-4. Comparing
/// within 1e-12 is therefore an exact comparison of the counts; the slack only absorbs the
/// float summation order of the averages.
const COUNTS_EXACT: f64 = 1e-12;

#[test]
fn frechet_distance_matches_reference() -> anyhow::Result<()> {
    let d = data()?;
    let fd = metrics::frechet_distance(&d.real, &d.fake)?;
    assert_rel(fd, scalar(&d.fx, "metric.fd")?, 1e-4, "metric.fd");
    // Our statistics are float64 throughout, like the reference's float64 cross-check: they
    // agree far below the tolerance (observed ~1e-15).
    assert_rel(
        fd,
        scalar(&d.fx, "metric.fd_float64_cov")?,
        1e-9,
        "fd_float64_cov",
    );
    assert_rel(
        fd,
        scalar(&d.fx, "metric.fd_scipy")?,
        1e-4,
        "metric.fd_scipy",
    );
    let swapped = metrics::frechet_distance(&d.fake, &d.real)?;
    assert_rel(
        swapped,
        scalar(&d.fx, "metric.fd_swapped_arguments")?,
        1e-4,
        "swapped",
    );
    Ok(())
}

#[test]
fn accumulator_in_reference_batches_matches_reference() -> anyhow::Result<()> {
    // The reference accumulates 10 batches of 64 rows; do the same, on two "workers" merged.
    let d = data()?;
    let batch = d.fx.json_f64("/inputs_recipe/batch_size")? as usize;
    let real = Embeddings::from_tensor(&d.real)?;
    let fake = Embeddings::from_tensor(&d.fake)?;
    let mut acc_r = FrechetAccumulator::new(real.dim());
    let mut other = FrechetAccumulator::new(real.dim());
    let mut acc_f = FrechetAccumulator::new(fake.dim());
    for (b, start) in (0..real.rows()).step_by(batch).enumerate() {
        let end = (start + batch).min(real.rows());
        let target = if b % 2 == 0 { &mut acc_r } else { &mut other };
        target.add_rows(real.slice_rows(start, end).as_slice())?;
        acc_f.add_tensor(&d.fake.narrow(0, start, end - start)?)?;
    }
    acc_r.merge(&other)?;
    assert_eq!(acc_r.count(), 640);
    let fd = acc_r.stats()?.frechet_distance(&acc_f.stats()?)?;
    assert_rel(fd, scalar(&d.fx, "metric.fd")?, 1e-4, "batched metric.fd");
    let one_shot = metrics::frechet_distance(&d.real, &d.fake)?;
    assert_rel(fd, one_shot, 1e-12, "batched vs one-shot");
    Ok(())
}

#[test]
fn singular_frechet_distance_is_finite_and_matches_reference() -> anyhow::Result<()> {
    // 50 rows in 256 dimensions: both covariances have rank <= 49.
    let d = data()?;
    let real = d.fx.f32("singular.real")?;
    let fake = d.fx.f32("singular.fake")?;
    assert!(real.dims()[0] < real.dims()[1]);
    let fd = metrics::frechet_distance(&real, &fake)?;
    assert!(fd.is_finite());
    assert_rel(fd, scalar(&d.fx, "singular.fd")?, 1e-4, "singular.fd");
    assert_rel(
        fd,
        scalar(&d.fx, "singular.fd_scipy")?,
        1e-4,
        "singular.fd_scipy",
    );
    Ok(())
}

#[test]
fn prdc_matches_reference_counts_with_both_recall_formulas() -> anyhow::Result<()> {
    let d = data()?;
    let chunks =
        d.fx.json_at("/prdc_chunk_sizes")?
            .as_array()
            .map_or(0, Vec::len);
    assert_eq!(chunks, 5);
    let p = metrics::prdc(&d.real, &d.fake, 3, chunks)?;
    let close = |v: f64, key: &str| -> anyhow::Result<()> {
        let e = scalar(&d.fx, key)?;
        assert!((v - e).abs() <= COUNTS_EXACT, "{key}: {v} vs {e}");
        Ok(())
    };
    close(p.precision, "metric.precision")?;
    close(p.recall, "metric.recall_fixed_formula")?;
    close(p.density, "metric.density")?;
    close(p.coverage, "metric.coverage")?;
    // The public `prdc` package (float64 exact distances) agrees with the corrected formula.
    close(p.precision, "metric.prdc_pkg_precision")?;
    close(p.recall, "metric.prdc_pkg_recall")?;
    close(p.density, "metric.prdc_pkg_density")?;
    close(p.coverage, "metric.prdc_pkg_coverage")?;

    let cfg = PrdcConfig::reference();
    assert_eq!(cfg.recall, RecallFormula::Reference);
    let q = metrics::prdc_with(&d.real, &d.fake, &cfg)?;
    close(q.recall, "metric.recall")?;
    // Only recall depends on the formula.
    assert_eq!(
        (q.precision, q.density, q.coverage),
        (p.precision, p.density, p.coverage)
    );
    assert_ne!(q.recall, p.recall);
    Ok(())
}

#[test]
fn retrieval_matches_reference_counts() -> anyhow::Result<()> {
    let d = data()?;
    let batch = d.fx.json_f64("/inputs_recipe/batch_size")? as usize;
    let n = d.real.dims()[0];
    let r = metrics::retrieval(&d.text, &d.fake, batch, &[1, 2, 3])?;
    for (k, &ours) in [1, 2, 3].iter().zip(&r.recall_at_k) {
        // The reference stores count / N computed in float32.
        let expected = d.fx.tensor(&format!("metric.R{k}"))?.to_scalar::<f32>()?;
        let count = (ours * n as f64).round();
        assert_eq!(count, ours * n as f64, "R@{k} is a whole count");
        assert_eq!(count as f32 / n as f32, expected, "R@{k}: {count} hits");
    }
    assert_rel(
        r.mm_distance,
        scalar(&d.fx, "metric.mm_distance")?,
        1e-5,
        "mm_distance",
    );
    Ok(())
}

#[test]
fn tmr_score_matches_reference() -> anyhow::Result<()> {
    let d = data()?;
    let s = metrics::tmr_score(&d.fake, &d.text)?;
    let e = scalar(&d.fx, "metric.tmr_score")?;
    assert!((s - e).abs() <= 1e-6, "tmr_score {s} vs {e}");
    Ok(())
}
