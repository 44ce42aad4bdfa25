//! The `tmr` fixture: the reference encoders loaded from their `.pt` state dicts.

use anyhow::Result;
use candle::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use test_fixtures::{Fixture, assert_close, fixture_path};
use tmr::{ActorEncoder, ActorEncoderConfig, Tmr, TmrConfig, TmrError};

fn fixture_config(fx: &Fixture) -> Result<TmrConfig> {
    let get = |k: &str| -> Result<usize> { Ok(fx.json_f64(&format!("/config/{k}"))? as usize) };
    let base = ActorEncoderConfig {
        nfeats: get("motion_nfeats")?,
        latent_dim: get("latent_dim")?,
        ff_size: get("ff_size")?,
        num_layers: get("num_layers")?,
        num_heads: get("num_heads")?,
        ..ActorEncoderConfig::default()
    };
    Ok(TmrConfig {
        text: ActorEncoderConfig {
            nfeats: get("text_nfeats")?,
            ..base.clone()
        },
        motion: base,
    })
}

fn tolerance(fx: &Fixture) -> Result<(f64, f64)> {
    Ok((
        fx.json_f64("/tolerance_suggestion/atol")?,
        fx.json_f64("/tolerance_suggestion/rtol")?,
    ))
}

fn load_tmr(fx: &Fixture) -> Result<Tmr> {
    Ok(Tmr::from_reference_checkpoints(
        fixture_path("tmr_motion_small.pt")?,
        fixture_path("tmr_text_small.pt")?,
        &fixture_config(fx)?,
        &Device::Cpu,
    )?)
}

#[test]
fn reference_checkpoints_give_the_reference_mu_embeddings() -> Result<()> {
    let fx = Fixture::load("tmr")?;
    let (atol, rtol) = tolerance(&fx)?;
    let tmr = load_tmr(&fx)?;
    let mu =
        tmr.encode_normalized_motion(&fx.f32("input.motion_x")?, &fx.tensor("input.motion_mask")?)?;
    assert_close(&mu, &fx.f32("output.motion_mu")?, atol, rtol, "motion mu");
    let mu = tmr.encode_text(&fx.f32("input.text_x")?, &fx.tensor("input.text_mask")?)?;
    assert_close(&mu, &fx.f32("output.text_mu")?, atol, rtol, "text mu");
    Ok(())
}

#[test]
fn actor_encoder_from_pth_matches_both_reference_paths_with_u8_and_f32_masks() -> Result<()> {
    let fx = Fixture::load("tmr")?;
    let (atol, rtol) = tolerance(&fx)?;
    let cfg = fixture_config(&fx)?.motion;
    let vb = VarBuilder::from_pth(
        fixture_path("tmr_motion_small.pt")?,
        DType::F32,
        &Device::Cpu,
    )?;
    let enc = ActorEncoder::new(&cfg, vb)?;
    let x = fx.f32("input.motion_x")?;
    let mask_u8 = fx.tensor("input.motion_mask")?;
    let out_u8 = enc.forward(&x, &mask_u8)?;
    let out_f32 = enc.forward(&x, &mask_u8.to_dtype(DType::F32)?)?;
    assert_eq!(out_u8.dims(), &[4, 2, 256]);
    assert_close(&out_u8, &out_f32, 0.0, 0.0, "u8 vs f32 mask");
    // The reference's full output: only the two token rows are the encoder's output.
    let fused = fx.f32("output.motion_encoded")?;
    let slow = fx.f32("output.motion_encoded_slowpath")?;
    let n = fused.dim(1)?;
    let rows = |t: &Tensor| {
        if n == 2 {
            Ok(t.clone())
        } else {
            t.narrow(1, 0, 2)
        }
    };
    assert_close(
        &out_u8,
        &rows(&fused)?,
        atol,
        rtol,
        "motion encoded (fused path)",
    );
    assert_close(
        &out_u8,
        &rows(&slow)?,
        atol,
        rtol,
        "motion encoded (plain path)",
    );
    Ok(())
}

#[test]
fn padded_positions_do_not_change_the_result_even_if_nan() -> Result<()> {
    let fx = Fixture::load("tmr")?;
    let tmr = load_tmr(&fx)?;
    let x = fx.f32("input.motion_x")?;
    let mask = fx.tensor("input.motion_mask")?;
    let valid = mask
        .to_dtype(DType::F32)?
        .unsqueeze(2)?
        .broadcast_as(x.shape())?;
    let zeroed = (&x * &valid)?;
    let nan = valid
        .ne(0f64)?
        .where_cond(&x, &Tensor::full(f32::NAN, x.shape(), &Device::Cpu)?)?;
    let a = tmr.encode_normalized_motion(&x, &mask)?;
    let b = tmr.encode_normalized_motion(&zeroed, &mask)?;
    let c = tmr.encode_normalized_motion(&nan, &mask)?;
    assert_close(&a, &b, 0.0, 0.0, "garbage vs zero padding");
    assert_close(&a, &c, 0.0, 0.0, "garbage vs NaN padding");
    // And a sample does not depend on its batch neighbours: sample 3 alone, cut to its length.
    let len = mask
        .i(3)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()? as usize;
    let alone = tmr.encode_normalized_motion(
        &x.i(3..4)?.narrow(1, 0, len)?,
        &mask.i(3..4)?.narrow(1, 0, len)?,
    )?;
    assert_close(&alone, &a.i(3..4)?, 1e-5, 1e-5, "sample alone vs in batch");
    // A fully padded sample still has its two token keys: finite output, no NaN.
    let empty = tmr.encode_normalized_motion(
        &x.i(0..1)?,
        &Tensor::zeros((1, x.dim(1)?), DType::U8, &Device::Cpu)?,
    )?;
    let finite = empty
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .all(|v| v.is_finite());
    assert!(finite, "fully padded sample gave non-finite output");
    Ok(())
}

#[test]
fn positional_table_matches_the_reference_rows() -> Result<()> {
    let fx = Fixture::load("tmr")?;
    let rows = fx.f32("pe_rows.sequence_pos_encoding.pe")?;
    let rows = if rows.rank() == 3 {
        rows.squeeze(1)?
    } else {
        rows
    };
    let (n, d) = rows.dims2()?;
    let ours = tmr::sinusoidal_table(n, d, &Device::Cpu)?;
    // PyTorch's vectorised expf is off by one ulp from a correctly rounded exp for some w_i
    // (checked in Python: |torch.exp - numpy f32 exp| <= 6e-8); at p ~ 40 that ulp of the
    // argument p * w_i becomes ~2e-6 in sin/cos. 4e-6 covers it; a wrong frequency, row or
    // sin/cos order is off by O(0.1).
    assert_close(&ours, &rows, 4e-6, 0.0, "sinusoidal rows");
    Ok(())
}

#[test]
fn encode_motion_renormalises_raw_features_with_the_tmr_statistics() -> Result<()> {
    let fx = Fixture::load("tmr")?;
    let (atol, rtol) = tolerance(&fx)?;
    // The reference ships the statistics as torch.save'd tensors; read those files.
    let normalizer = motion_repr::Normalizer::from_files(
        fixture_path("standardization_tmr-rifke-mean.pt")?,
        fixture_path("standardization_tmr-rifke-std.pt")?,
        &Device::Cpu,
    )?;
    let (mean, std) = (normalizer.mean().clone(), normalizer.std().clone());
    let tmr = load_tmr(&fx)?.with_normalizer(normalizer)?;
    let x = fx.f32("input.motion_x")?;
    let raw = x.broadcast_mul(&std)?.broadcast_add(&mean)?;
    let mu = tmr.encode_motion(&raw, &fx.tensor("input.motion_mask")?)?;
    // The round trip x -> raw -> normalised moves values by ~1 ulp of |raw|; 1e-4 absolute
    // leaves room for that while a wrong statistic (mean/std swapped, not applied) is off by O(1).
    assert_close(
        &mu,
        &fx.f32("output.motion_mu")?,
        1e-4f64.max(atol),
        rtol,
        "motion mu from raw features",
    );
    Ok(())
}

#[test]
fn wrong_feature_width_is_a_shape_error() -> Result<()> {
    let fx = Fixture::load("tmr")?;
    let tmr = load_tmr(&fx)?;
    let x = Tensor::zeros((2, 5, 200), DType::F32, &Device::Cpu)?;
    let mask = Tensor::ones((2, 5), DType::F32, &Device::Cpu)?;
    match tmr.encode_normalized_motion(&x, &mask) {
        Err(TmrError::Shape { got, .. }) => assert_eq!(got, vec![2, 5, 200]),
        other => panic!("expected a shape error, got {other:?}"),
    }
    assert!(matches!(
        tmr.encode_text(&x, &mask),
        Err(TmrError::Shape { .. })
    ));
    let err = tmr
        .motion
        .forward(&x, &mask)
        .expect_err("ActorEncoder must reject width 200");
    assert!(err.to_string().contains("nfeats = 205"), "{err}");
    let bad_mask = Tensor::ones((2, 4), DType::F32, &Device::Cpu)?;
    let x = Tensor::zeros((2, 5, 205), DType::F32, &Device::Cpu)?;
    assert!(tmr.motion.forward(&x, &bad_mask).is_err());
    // Statistics of the wrong width are rejected.
    let bad = tmr.clone().with_stats(
        Tensor::zeros(200, DType::F32, &Device::Cpu)?,
        Tensor::ones(200, DType::F32, &Device::Cpu)?,
    );
    assert!(matches!(bad, Err(TmrError::Shape { .. })), "{bad:?}");
    // Missing statistics are an error, not an identity normalisation.
    assert!(matches!(
        tmr.encode_motion(&x, &Tensor::ones((2, 5), DType::F32, &Device::Cpu)?),
        Err(TmrError::Config(_))
    ));
    Ok(())
}

#[test]
fn checkpoint_key_mismatch_names_the_missing_keys() -> Result<()> {
    let fx = Fixture::load("tmr")?;
    let mut cfg = fixture_config(&fx)?;
    cfg.motion.num_layers = 2;
    let err = Tmr::from_reference_checkpoints(
        fixture_path("tmr_motion_small.pt")?,
        fixture_path("tmr_text_small.pt")?,
        &cfg,
        &Device::Cpu,
    )
    .expect_err("a 2-layer config must not load a 1-layer checkpoint");
    match err {
        TmrError::Keys {
            missing,
            unexpected,
            ..
        } => {
            assert!(
                missing.contains(&"seqTransEncoder.layers.1.linear1.weight".to_string()),
                "{missing:?}"
            );
            assert!(unexpected.is_empty());
        }
        other => panic!("expected a key error, got {other}"),
    }
    let err = Tmr::from_reference_checkpoints(
        "no/such/motion.pt",
        fixture_path("tmr_text_small.pt")?,
        &fixture_config(&fx)?,
        &Device::Cpu,
    )
    .expect_err("missing file");
    assert!(matches!(err, TmrError::MissingFile { .. }));
    Ok(())
}
