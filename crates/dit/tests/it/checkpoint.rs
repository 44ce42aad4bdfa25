//! Loading the reference Lightning checkpoint (`incontext_small.ckpt`) directly, and reporting
//! bad weight files by key name.

use std::collections::HashMap;

use candle::{Device, Tensor};
use diffusion::{Conditioning, Denoiser};
use dit::{Dit, DitConfig, DitError};
use test_fixtures::{Fixture, assert_close, fixture_path};

use crate::{frame_mask, tolerance};

fn incontext_config() -> anyhow::Result<DitConfig> {
    let fx = Fixture::load("dit_incontext")?;
    Ok(serde_json::from_value(fx.json_at("/config")?.clone())?)
}

fn run(net: &Dit, fx: &Fixture) -> anyhow::Result<Tensor> {
    Ok(net.forward(
        &fx.f32("input.x")?,
        &fx.f32("input.gamma")?,
        &Conditioning::Pooled(fx.f32("input.y")?),
        &frame_mask(fx, "input.mask")?,
    )?)
}

#[test]
fn lightning_checkpoint_loads_ema_weights_and_reproduces_out_ema() -> anyhow::Result<()> {
    let fx = Fixture::load("incontext_small_ckpt")?;
    let (atol, rtol) = tolerance(&fx)?;
    let cfg = incontext_config()?;
    let net = Dit::from_checkpoint(fixture_path("incontext_small.ckpt")?, &cfg, &Device::Cpu)?;
    assert_close(
        &run(&net, &fx)?,
        &fx.f32("output.out_ema")?,
        atol,
        rtol,
        "out_ema",
    );
    Ok(())
}

#[test]
fn lightning_checkpoint_online_weights_reproduce_out_online() -> anyhow::Result<()> {
    let fx = Fixture::load("incontext_small_ckpt")?;
    let (atol, rtol) = tolerance(&fx)?;
    let cfg = incontext_config()?;
    let net = Dit::from_checkpoint_with_prefix(
        fixture_path("incontext_small.ckpt")?,
        Some("net."),
        &cfg,
        &Device::Cpu,
    )?;
    assert_close(
        &run(&net, &fx)?,
        &fx.f32("output.out_online")?,
        atol,
        rtol,
        "out_online",
    );
    Ok(())
}

fn temp_file(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("dit-test-{}-{name}", std::process::id()))
}

/// Fixture weights written as `.safetensors` after `edit`, then loaded.
fn load_edited(
    tag: &str,
    edit: impl FnOnce(&mut HashMap<String, Tensor>) -> anyhow::Result<()>,
) -> anyhow::Result<Result<Dit, DitError>> {
    let fx = Fixture::load("dit_incontext")?;
    let mut weights = fx.with_prefix("weights.");
    edit(&mut weights)?;
    let path = temp_file(&format!("{tag}.safetensors"));
    candle::safetensors::save(&weights, &path)?;
    let res = Dit::from_checkpoint(&path, &incontext_config()?, &Device::Cpu);
    std::fs::remove_file(&path)?;
    Ok(res)
}

#[test]
fn safetensors_with_reference_keys_loads() -> anyhow::Result<()> {
    let fx = Fixture::load("dit_incontext")?;
    let (atol, rtol) = tolerance(&fx)?;
    let net = load_edited("ok", |_| Ok(()))?.map_err(anyhow::Error::from)?;
    assert_close(
        &run(&net, &fx)?,
        &fx.f32("output.out")?,
        atol,
        rtol,
        "safetensors",
    );
    Ok(())
}

#[test]
fn missing_key_wrong_shape_and_unused_key_are_named() -> anyhow::Result<()> {
    let err = load_edited("bad", |w| {
        w.remove("model.backbone_module.1.sa.out.bias");
        let qkv = "model.backbone_module.0.sa.qkv.weight";
        let t = w[qkv].narrow(0, 0, 100)?;
        w.insert(qkv.to_string(), t);
        w.insert(
            "model.extra_head.weight".into(),
            Tensor::zeros(3, candle::DType::F32, &Device::Cpu)?,
        );
        Ok(())
    })?
    .expect_err("a bad state dict must not load");
    let msg = err.to_string();
    match &err {
        DitError::KeyMismatch {
            missing,
            wrong_shape,
            unused,
            ..
        } => {
            assert_eq!(missing.len(), 1, "{msg}");
            assert_eq!(wrong_shape.len(), 1, "{msg}");
            assert_eq!(unused, &["model.extra_head.weight".to_string()], "{msg}");
        }
        other => panic!("expected KeyMismatch, got {other}"),
    }
    assert!(msg.contains("model.backbone_module.1.sa.out.bias"), "{msg}");
    assert!(
        msg.contains("model.backbone_module.0.sa.qkv.weight"),
        "{msg}"
    );
    assert!(
        msg.contains("[192, 64]") && msg.contains("[100, 64]"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn wrong_variant_for_the_weights_is_reported() -> anyhow::Result<()> {
    let mut cfg = incontext_config()?;
    cfg.variant = dit::Variant::AdaLn;
    let err = Dit::from_checkpoint(fixture_path("incontext_small.ckpt")?, &cfg, &Device::Cpu)
        .expect_err("in-context weights cannot build an AdaLN net");
    let msg = err.to_string();
    assert!(msg.contains("model.joint_cond_projection.weight"), "{msg}");
    assert!(msg.contains("model.final_norm.weight"), "{msg}");
    Ok(())
}

/// A configuration far larger than the weights (here a 2^32-wide condition, 2^41 floats for one
/// projection) is an error naming the tensor, not an allocation sized from the configuration.
#[test]
fn a_configuration_much_larger_than_the_weights_is_an_error_not_an_allocation() -> anyhow::Result<()>
{
    let mut cfg = incontext_config()?;
    cfg.num_cond_feats = 1 << 32;
    let err = Dit::from_checkpoint(fixture_path("incontext_small.ckpt")?, &cfg, &Device::Cpu)
        .expect_err("a 2^32-wide condition cannot load");
    let msg = err.to_string();
    assert!(
        msg.contains("model.cond_projection.weight: expected [64, 4294967296]"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn torch_files_without_network_weights_are_errors_not_empty_models() -> anyhow::Result<()> {
    let cfg = incontext_config()?;
    // A bare tensor at the top level (candle's reader would return an empty map).
    let err = Dit::from_checkpoint(
        fixture_path("standardization_rifke-mean.pt")?,
        &cfg,
        &Device::Cpu,
    )
    .expect_err("a bare tensor is not a state dict");
    assert!(
        err.to_string().contains("standardization_rifke-mean.pt"),
        "{err}"
    );
    // A state dict of another network.
    let err = Dit::from_checkpoint(fixture_path("tmr_motion_small.pt")?, &cfg, &Device::Cpu)
        .expect_err("a TMR state dict holds no DiT");
    assert!(matches!(err, DitError::NoWeights { .. }), "{err}");
    let err = Dit::from_checkpoint(temp_file("absent.ckpt"), &cfg, &Device::Cpu)
        .expect_err("absent file");
    assert!(err.to_string().contains("absent.ckpt"), "{err}");
    Ok(())
}

#[test]
fn config_is_inferred_from_checkpoint_weights() -> anyhow::Result<()> {
    let fx = Fixture::load("incontext_small_ckpt")?;
    let (atol, rtol) = tolerance(&fx)?;
    let given = incontext_config()?;
    let (net, cfg) = Dit::from_checkpoint_inferred(
        fixture_path("incontext_small.ckpt")?,
        given.num_heads,
        &Device::Cpu,
    )?;
    assert_eq!(cfg.variant, given.variant);
    assert_eq!(
        (cfg.num_feats, cfg.num_cond_feats, cfg.latent_dim),
        (given.num_feats, given.num_cond_feats, given.latent_dim)
    );
    assert_eq!(
        (cfg.mlp_multiplier, cfg.num_layers),
        (given.mlp_multiplier, given.num_layers)
    );
    assert_eq!(cfg.max_positions, 10_000);
    assert_close(
        &run(&net, &fx)?,
        &fx.f32("output.out_ema")?,
        atol,
        rtol,
        "inferred out_ema",
    );
    for name in ["dit_adaln", "dit_cross_attention"] {
        let fx = Fixture::load(name)?;
        let given: DitConfig = serde_json::from_value(fx.json_at("/config")?.clone())?;
        let cfg = DitConfig::infer_from_weights(&fx.with_prefix("weights."), given.num_heads)?;
        assert_eq!(cfg.variant, given.variant, "{name}");
        assert_eq!(cfg.num_layers, given.num_layers, "{name}");
        assert_eq!(cfg.latent_dim, given.latent_dim, "{name}");
        assert_eq!(cfg.num_cond_blocks, given.num_cond_blocks, "{name}");
        assert_eq!(cfg.mlp_multiplier, given.mlp_multiplier, "{name}");
    }
    Ok(())
}
