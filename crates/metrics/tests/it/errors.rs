//! Bad input gets a typed error naming the argument, row, column or size at fault.

use candle::{Device, Tensor};
use metrics::{Embeddings, FrechetAccumulator, MetricsError};

use crate::data;

fn with_value(t: &Tensor, row: usize, col: usize, value: f32) -> anyhow::Result<Tensor> {
    let (n, d) = t.dims2()?;
    let mut v = t.flatten_all()?.to_vec1::<f32>()?;
    v[row * d + col] = value;
    Ok(Tensor::from_vec(v, (n, d), &Device::Cpu)?)
}

#[test]
fn dimension_mismatch_is_reported_by_every_metric() -> anyhow::Result<()> {
    let d = data()?;
    let narrow = d.fake.narrow(1, 0, 128)?;
    let is_mismatch = |e: MetricsError| {
        matches!(
            e,
            MetricsError::DimensionMismatch {
                left_dim: 256,
                right_dim: 128,
                ..
            }
        )
    };
    let fd = metrics::frechet_distance(&d.real, &narrow).expect_err("fd");
    assert!(fd.to_string().contains("fake has dimension 128"), "{fd}");
    assert!(is_mismatch(fd));
    assert!(is_mismatch(
        metrics::prdc(&d.real, &narrow, 3, 5).expect_err("prdc")
    ));
    assert!(is_mismatch(
        metrics::retrieval(&d.text, &narrow, 64, &[1]).expect_err("retrieval")
    ));
    assert!(is_mismatch(
        metrics::tmr_score(&d.real, &narrow).expect_err("tmr")
    ));
    let mut acc = FrechetAccumulator::new(256);
    assert!(is_mismatch(
        acc.add_tensor(&narrow).expect_err("accumulator")
    ));
    Ok(())
}

#[test]
fn fewer_than_two_rows_is_rejected() -> anyhow::Result<()> {
    let d = data()?;
    let one = d.real.narrow(0, 0, 1)?;
    let err = metrics::frechet_distance(&one, &d.fake).expect_err("one row");
    assert!(
        matches!(
            err,
            MetricsError::TooFewRows {
                input: "real",
                rows: 1,
                needed: 2,
                ..
            }
        ),
        "{err}"
    );
    let mut acc = FrechetAccumulator::new(256);
    acc.add_tensor(&one)?;
    assert!(matches!(
        acc.stats(),
        Err(MetricsError::TooFewRows { rows: 1, .. })
    ));
    assert!(matches!(
        metrics::prdc(&d.real, &one, 3, 1),
        Err(MetricsError::TooFewRows { input: "fake", .. })
    ));
    assert!(matches!(
        metrics::retrieval(&one, &one, 64, &[1]),
        Err(MetricsError::TooFewRows { input: "text", .. })
    ));
    Ok(())
}

#[test]
fn non_finite_values_are_located() -> anyhow::Result<()> {
    let d = data()?;
    let nan = with_value(&d.fake, 5, 7, f32::NAN)?;
    let err = metrics::frechet_distance(&d.real, &nan).expect_err("nan");
    assert!(
        matches!(
            err,
            MetricsError::NonFinite {
                input: "fake",
                row: 5,
                col: 7,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("row 5, column 7"), "{err}");
    let inf = with_value(&d.real, 600, 0, f32::INFINITY)?;
    assert!(matches!(
        metrics::prdc(&inf, &d.fake, 3, 5),
        Err(MetricsError::NonFinite {
            input: "real",
            row: 600,
            col: 0,
            ..
        })
    ));
    let neg_inf = with_value(&d.text, 63, 255, f32::NEG_INFINITY)?;
    assert!(matches!(
        metrics::retrieval(&neg_inf, &d.fake, 64, &[1, 2, 3]),
        Err(MetricsError::NonFinite {
            input: "text",
            row: 63,
            col: 255,
            ..
        })
    ));
    assert!(matches!(
        metrics::tmr_score(&nan, &d.text),
        Err(MetricsError::NonFinite {
            input: "motion",
            row: 5,
            ..
        })
    ));
    // A rejected batch leaves the accumulator untouched.
    let mut acc = FrechetAccumulator::new(256);
    acc.add_tensor(&d.real)?;
    assert!(acc.add_tensor(&nan).is_err());
    assert_eq!(acc.count(), 640);
    Ok(())
}

#[test]
fn k_at_least_the_split_size_is_rejected() -> anyhow::Result<()> {
    let d = data()?;
    // 640 rows in 5 splits: 128 per chunk, so k = 127 is the largest valid k.
    assert!(metrics::prdc(&d.real, &d.fake, 127, 5).is_ok());
    let err = metrics::prdc(&d.real, &d.fake, 128, 5).expect_err("k = split size");
    assert!(
        matches!(
            err,
            MetricsError::KTooLarge {
                k: 128,
                size: 128,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        metrics::prdc(&d.real, &d.fake, 0, 5),
        Err(MetricsError::InvalidArgument { name: "k", .. })
    ));
    assert!(matches!(
        metrics::retrieval(&d.text, &d.fake, 64, &[1, 64]),
        Err(MetricsError::KTooLarge {
            k: 64,
            size: 64,
            ..
        })
    ));
    Ok(())
}

#[test]
fn shapes_and_pairing_are_checked() -> anyhow::Result<()> {
    let d = data()?;
    let cube = d.real.reshape((10, 64, 256))?;
    assert!(matches!(
        metrics::frechet_distance(&cube, &d.fake),
        Err(MetricsError::NotMatrix { input: "real", .. })
    ));
    let short = d.fake.narrow(0, 0, 320)?;
    assert!(matches!(
        metrics::retrieval(&d.text, &short, 64, &[1]),
        Err(MetricsError::RowCountMismatch {
            left_rows: 640,
            right_rows: 320,
            ..
        })
    ));
    assert!(matches!(
        metrics::tmr_score(&short, &d.text),
        Err(MetricsError::RowCountMismatch { .. })
    ));
    assert!(matches!(
        Embeddings::new(&[1.0, 2.0, 3.0], 2),
        Err(MetricsError::RaggedRows { len: 3, dim: 2, .. })
    ));
    let zero = Tensor::zeros((4, 256), candle::DType::F32, &Device::Cpu)?;
    assert!(matches!(
        metrics::tmr_score(&zero, &d.text.narrow(0, 0, 4)?),
        Err(MetricsError::ZeroNorm {
            input: "motion",
            row: 0
        })
    ));
    Ok(())
}
