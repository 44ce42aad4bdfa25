//! The three `dit_*` fixtures: conditional and unconditional outputs, the in-context mask
//! quirk and its strict alternative, the sinusoid tables, and padded-frame invariance.

use candle::{D, Tensor};
use diffusion::{Conditioning, Denoiser};
use dit::MaskMode;
use test_fixtures::{Fixture, assert_close};

use crate::{fixture_net, frame_mask, tolerance};

/// The fixture's `input.y` as a pooled or token condition (by its rank).
pub(crate) fn condition(fx: &Fixture) -> anyhow::Result<Conditioning> {
    let y = fx.f32("input.y")?;
    Ok(if y.rank() == 3 {
        Conditioning::Tokens {
            tokens: y,
            mask: None,
        }
    } else {
        Conditioning::Pooled(y)
    })
}

fn check_fixture(name: &str) -> anyhow::Result<()> {
    let fx = Fixture::load(name)?;
    let (net, _) = fixture_net(&fx)?;
    let (atol, rtol) = tolerance(&fx)?;
    let x = fx.f32("input.x")?;
    let gamma = fx.f32("input.gamma")?;
    let mask = frame_mask(&fx, "input.mask")?;
    let cond = condition(&fx)?;
    let out = net.forward(&x, &gamma, &cond, &mask)?;
    assert_close(
        &out,
        &fx.f32("output.out")?,
        atol,
        rtol,
        &format!("{name} out"),
    );
    let out_u = net.forward(&x, &gamma, &cond.null()?, &mask)?;
    assert_close(
        &out_u,
        &fx.f32("output.out_uncond")?,
        atol,
        rtol,
        &format!("{name} out_uncond"),
    );
    Ok(())
}

#[test]
fn incontext_matches_reference_outputs() -> anyhow::Result<()> {
    check_fixture("dit_incontext")
}

#[test]
fn adaln_matches_reference_outputs() -> anyhow::Result<()> {
    check_fixture("dit_adaln")
}

#[test]
fn cross_attention_matches_reference_outputs() -> anyhow::Result<()> {
    check_fixture("dit_cross_attention")
}

#[test]
fn incontext_strict_mode_reproduces_boolean_mask_output() -> anyhow::Result<()> {
    let fx = Fixture::load("dit_incontext")?;
    let (net, _) = fixture_net(&fx)?;
    let net = net.with_mask_mode(MaskMode::Strict);
    let (atol, rtol) = tolerance(&fx)?;
    let out = net.forward(
        &fx.f32("input.x")?,
        &fx.f32("input.gamma")?,
        &condition(&fx)?,
        &frame_mask(&fx, "input.mask")?,
    )?;
    assert_close(
        &out,
        &fx.f32("alt.out_boolean_mask")?,
        atol,
        rtol,
        "strict mode",
    );
    // And the reference output is measurably different (the quirk is real).
    let diff = (&out - fx.f32("output.out")?)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()? as f64;
    assert!(
        diff > 10.0 * atol,
        "quirk effect {diff:e} too small to tell modes apart"
    );
    Ok(())
}

#[test]
fn config_presets_and_serde_names_follow_the_reference() -> anyhow::Result<()> {
    let cfg = dit::DitConfig::reference(dit::Variant::CrossAttention);
    let json = serde_json::to_value(&cfg)?;
    assert_eq!(json["variant"], "cross_attention");
    assert_eq!(json["num_feats"], 205);
    assert_eq!(json["latent_dim"], 512);
    assert_eq!(json["num_layers"], 8);
    assert_eq!(json["num_heads"], 16);
    assert_eq!(json["mlp_multiplier"], 4);
    let back: dit::DitConfig = serde_json::from_value(json)?;
    assert_eq!(back, cfg);
    let fx = Fixture::load("dit_adaln")?;
    let parsed: dit::DitConfig = serde_json::from_value(fx.json_at("/config")?.clone())?;
    assert_eq!(parsed.variant, dit::Variant::AdaLn);
    assert_eq!(parsed.mask_mode, MaskMode::Reference);
    Ok(())
}

/// Our computed sinusoid tables against the stored first rows. We evaluate the exact formula
/// (rounded once to f32, error <= half an ulp <= 6e-8 for |v| <= 1); the fixture measured
/// PyTorch's table to be `observed.pe_rows_vs_float64_formula_maxabs` from the exact formula,
/// so the two differ by at most that gap plus 6e-8.
#[test]
fn computed_position_tables_match_stored_rows() -> anyhow::Result<()> {
    for (name, key) in [
        ("dit_adaln", "pe_rows.model.input_projection.1.pe"),
        (
            "dit_cross_attention",
            "pe_rows.model.cond_positional_embedding.pe",
        ),
    ] {
        let fx = Fixture::load(name)?;
        let rows = fx.f32(key)?.squeeze(0)?;
        let (n, d) = rows.dims2()?;
        let gap = fx.json_f64("/observed/pe_rows_vs_float64_formula_maxabs")?;
        let ours = dit::sinusoid_table(n, d, &candle::Device::Cpu)?;
        let diff = (ours - &rows)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()? as f64;
        let bound = gap + 6e-8;
        assert!(diff <= bound, "{name} {key}: max diff {diff:e} > {bound:e}");
    }
    Ok(())
}

/// Valid-frame outputs must not depend on what the padded frames hold (boolean key masks).
fn padded_frames_do_not_leak(name: &str) -> anyhow::Result<()> {
    let fx = Fixture::load(name)?;
    let (net, _) = fixture_net(&fx)?;
    let x = fx.f32("input.x")?;
    let gamma = fx.f32("input.gamma")?;
    let mask = frame_mask(&fx, "input.mask")?;
    let cond = condition(&fx)?;
    let base = net.forward(&x, &gamma, &cond, &mask)?;
    // Replace every padded frame of x by large different values.
    let noise = (Tensor::randn(0f32, 10.0, x.shape(), x.device())? + 5.0)?;
    let valid3 = mask.unsqueeze(D::Minus1)?.broadcast_as(x.shape())?;
    let x2 = valid3.ge(0.5)?.where_cond(&x, &noise)?;
    let moved = net.forward(&x2, &gamma, &cond, &mask)?;
    let diff = ((base - moved)? * valid3.to_dtype(candle::DType::F32)?)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    assert_eq!(diff, 0.0, "{name}: valid frames moved by {diff:e}");
    // And the padded frames did change x (the test can fail).
    assert!((&x2 - &x)?.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
    Ok(())
}

#[test]
fn adaln_valid_frames_ignore_padded_frames() -> anyhow::Result<()> {
    padded_frames_do_not_leak("dit_adaln")
}

#[test]
fn cross_attention_valid_frames_ignore_padded_frames() -> anyhow::Result<()> {
    padded_frames_do_not_leak("dit_cross_attention")
}

#[test]
fn wrong_condition_kind_is_a_named_error() -> anyhow::Result<()> {
    let fx = Fixture::load("dit_adaln")?;
    let (net, _) = fixture_net(&fx)?;
    let x = fx.f32("input.x")?;
    let tokens = Tensor::zeros((3, 4, 512), candle::DType::F32, x.device())?;
    let err = net
        .forward(
            &x,
            &fx.f32("input.gamma")?,
            &Conditioning::Tokens { tokens, mask: None },
            &frame_mask(&fx, "input.mask")?,
        )
        .expect_err("tokens must be rejected by AdaLN");
    assert!(err.to_string().contains("pooled"), "{err}");
    Ok(())
}

/// Strict mode honours a condition token mask: a sample with padded text tokens gives the same
/// output as the same sample with the padding cut off (derived property; no reference output
/// exists for it). The reference mode attends the padded tokens, so there the outputs differ.
#[test]
fn cross_attention_strict_mode_ignores_masked_condition_tokens() -> anyhow::Result<()> {
    let fx = Fixture::load("dit_cross_attention")?;
    let (net, _) = fixture_net(&fx)?;
    let strict = net.clone().with_mask_mode(MaskMode::Strict);
    let lengths = fx
        .tensor("input.cond_lengths")?
        .to_dtype(candle::DType::I64)?
        .to_vec1::<i64>()?;
    let s = 2; // the sample with the fewest valid tokens (3 of 12)
    let l = lengths[s] as usize;
    let y = fx.f32("input.y")?.narrow(0, s, 1)?;
    let x = fx.f32("input.x")?.narrow(0, s, 1)?;
    let gamma = fx.f32("input.gamma")?.narrow(0, s, 1)?;
    let mask = frame_mask(&fx, "input.mask")?.narrow(0, s, 1)?;
    let lc = y.dim(1)?;
    let tok_mask = Tensor::from_vec(
        (0..lc)
            .map(|i| if i < l { 1f32 } else { 0.0 })
            .collect::<Vec<_>>(),
        (1, lc),
        y.device(),
    )?;
    let padded = Conditioning::Tokens {
        tokens: y.clone(),
        mask: Some(tok_mask),
    };
    let cut = Conditioning::Tokens {
        tokens: y.narrow(1, 0, l)?,
        mask: None,
    };
    let a = strict.forward(&x, &gamma, &padded, &mask)?;
    let b = strict.forward(&x, &gamma, &cut, &mask)?;
    assert_close(&a, &b, 1e-5, 1e-5, "strict masked vs cut tokens");
    let r = net.forward(&x, &gamma, &padded, &mask)?;
    let diff = (&r - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(
        diff > 1e-4,
        "reference mode should attend padded tokens (diff {diff:e})"
    );
    Ok(())
}
