//! Normalizer: the reference statistics from every file format, formulas, typed errors.

use candle::{DType, Device, Tensor};
use motion_repr::{Normalizer, ReprError};
use test_fixtures::{Fixture, assert_close, fixture_path};

#[test]
fn pt_files_hold_exactly_the_safetensors_statistics() -> anyhow::Result<()> {
    let st = Fixture::load("standardization")?;
    for (pt, key) in [("rifke", "rifke"), ("tmr-rifke", "tmr_rifke")] {
        let n = Normalizer::from_files(
            fixture_path(&format!("standardization_{pt}-mean.pt"))?,
            fixture_path(&format!("standardization_{pt}-std.pt"))?,
            &Device::Cpu,
        )?;
        // standardization.json: "stored values, compare exactly".
        assert_close(n.mean(), &st.f32(&format!("{key}_mean"))?, 0.0, 0.0, "mean");
        assert_close(n.std(), &st.f32(&format!("{key}_std"))?, 0.0, 0.0, "std");
        let dir = test_fixtures::fixtures_dir();
        let s = Normalizer::from_stem(&dir, &format!("standardization_{pt}"), &Device::Cpu)?;
        assert_close(s.std(), n.std(), 0.0, 0.0, "from_stem");
        let k = Normalizer::from_safetensors_keys(
            fixture_path("standardization.safetensors")?,
            &format!("{key}_mean"),
            &format!("{key}_std"),
            &Device::Cpu,
        )?;
        assert_close(k.mean(), n.mean(), 0.0, 0.0, "safetensors mean");
    }
    Ok(())
}

fn write_npy(path: &std::path::Path, data: &[f32]) -> anyhow::Result<()> {
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        data.len()
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for x in data {
        out.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(path, out)?;
    Ok(())
}

#[test]
fn npy_and_single_tensor_safetensors_load() -> anyhow::Result<()> {
    let st = Fixture::load("standardization")?;
    let mean = st.f32("tmr_rifke_mean")?;
    let std = st.f32("tmr_rifke_std")?;
    let dir = std::env::temp_dir().join(format!("mr-npy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    write_npy(&dir.join("mean.npy"), &mean.to_vec1::<f32>()?)?;
    write_npy(&dir.join("std.npy"), &std.to_vec1::<f32>()?)?;
    let n = Normalizer::from_files(dir.join("mean.npy"), dir.join("std.npy"), &Device::Cpu)?;
    assert_close(n.std(), &std, 0.0, 0.0, "npy std");
    candle::safetensors::save(
        &[("m".to_string(), mean.clone())].into_iter().collect(),
        dir.join("m.safetensors"),
    )?;
    candle::safetensors::save(
        &[("s".to_string(), std.clone())].into_iter().collect(),
        dir.join("s.safetensors"),
    )?;
    let n = Normalizer::from_files(
        dir.join("m.safetensors"),
        dir.join("s.safetensors"),
        &Device::Cpu,
    )?;
    assert_close(n.mean(), &mean, 0.0, 0.0, "safetensors mean");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn normalise_then_zero_padding_and_invert() -> anyhow::Result<()> {
    let st = Fixture::load("standardization")?;
    let n = Normalizer::from_safetensors_keys(
        fixture_path("standardization.safetensors")?,
        "tmr_rifke_mean",
        "tmr_rifke_std",
        &Device::Cpu,
    )?;
    let x = Tensor::from_vec(
        (0..2 * 3 * 205)
            .map(|i| (i % 17) as f32 * 0.1)
            .collect::<Vec<_>>(),
        (2, 3, 205),
        &Device::Cpu,
    )?;
    let mask = Tensor::new(&[[1u8, 1, 0], [1, 0, 0]], &Device::Cpu)?;
    let y = n.normalize_masked(&x, &mask)?;
    // Formula of standardization.json, element-wise float32: (x - mean) / std.
    let expected = x
        .broadcast_sub(&st.f32("tmr_rifke_mean")?)?
        .broadcast_div(&st.f32("tmr_rifke_std")?)?;
    assert_close(
        &y.narrow(1, 0, 2)?.narrow(0, 0, 1)?,
        &expected.narrow(1, 0, 2)?.narrow(0, 0, 1)?,
        0.0,
        0.0,
        "valid frames",
    );
    // Padded frames are exactly zero after normalisation (not (0 - mean) / std).
    assert_eq!(
        y.narrow(1, 2, 1)?.abs()?.sum_all()?.to_scalar::<f32>()?,
        0.0
    );
    assert_eq!(
        y.narrow(0, 1, 1)?
            .narrow(1, 1, 2)?
            .abs()?
            .sum_all()?
            .to_scalar::<f32>()?,
        0.0
    );
    // The device (tensor-op) path, taken here for float64 input, agrees with the CPU path.
    let y64 = n.normalize_masked(&x.to_dtype(DType::F64)?, &mask)?;
    assert_close(&y64, &y, 1e-5, 1e-6, "tensor-op path");
    let u64 = n.unnormalize(&y64)?;
    assert_close(
        &u64,
        &n.unnormalize(&y)?,
        1e-5,
        1e-6,
        "tensor-op unnormalize",
    );
    let back = n.unnormalize(&n.normalize(&x)?)?;
    assert_close(&back, &x, 1e-5, 1e-6, "unnormalize(normalize(x))");
    Ok(())
}

#[test]
fn bad_statistics_are_rejected() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let ones = Tensor::ones(4, DType::F32, &dev)?;
    let err = Normalizer::new(
        Tensor::new(&[0.0f32, f32::INFINITY, 0.0, 0.0], &dev)?,
        ones.clone(),
    )
    .expect_err("infinite mean");
    assert!(
        matches!(err, ReprError::Stats { .. }) && err.to_string().contains("mean[1]"),
        "{err}"
    );
    let err = Normalizer::new(
        ones.clone(),
        Tensor::new(&[1.0f32, 1.0, f32::NAN, 1.0], &dev)?,
    )
    .expect_err("NaN std");
    assert!(err.to_string().contains("std[2]"), "{err}");
    let err = Normalizer::new(ones.clone(), Tensor::new(&[1.0f32, 1.0, 1.0, 0.0], &dev)?)
        .expect_err("zero std");
    assert!(err.to_string().contains("std[3] is zero"), "{err}");
    let n = Normalizer::new(ones.clone(), ones)?;
    let err = n
        .normalize(&Tensor::zeros((2, 5), DType::F32, &dev)?)
        .expect_err("width 5");
    assert!(
        matches!(
            err,
            ReprError::FeatureWidth {
                expected: 4,
                got: 5,
                ..
            }
        ),
        "{err}"
    );
    let err = Normalizer::from_stem(test_fixtures::fixtures_dir(), "no-such-stats", &dev)
        .expect_err("missing pair");
    assert!(err.to_string().contains("no-such-stats-mean.pt"), "{err}");
    // A state-dict .pt is not a single tensor: the error says so.
    let err = Normalizer::from_files(
        fixture_path("tmr_motion_small.pt")?,
        fixture_path("standardization_rifke-std.pt")?,
        &dev,
    )
    .expect_err("dict pickle");
    assert!(matches!(err, ReprError::Read { .. }), "{err}");
    Ok(())
}
