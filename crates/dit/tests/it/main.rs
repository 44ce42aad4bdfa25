//! Integration tests of the `dit` crate against the PyTorch reference fixtures.
//!
//! Every test runs on the small fixture networks (d = 64, 2 layers) and takes well under a
//! second in the dev profile; nothing is gated.

mod bf16;
mod checkpoint;
mod fixtures;
mod kernels;
mod sampling;
mod training;

use std::collections::HashMap;

use candle::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use dit::{Dit, DitConfig};
use test_fixtures::Fixture;

/// The fixture's network (config from its JSON, weights `weights.model.*`).
pub fn fixture_net(fx: &Fixture) -> anyhow::Result<(Dit, DitConfig)> {
    let cfg: DitConfig = serde_json::from_value(fx.json_at("/config")?.clone())?;
    let weights: HashMap<String, Tensor> = fx.with_prefix("weights.");
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    Ok((Dit::new(&cfg, vb)?, cfg))
}

/// The fixture's `input.mask` (1 = PADDED) as our frame mask (1 = valid).
pub fn frame_mask(fx: &Fixture, key: &str) -> anyhow::Result<Tensor> {
    Ok((1.0 - fx.f32(key)?)?)
}

/// `(atol, rtol)` of a fixture's JSON.
pub fn tolerance(fx: &Fixture) -> anyhow::Result<(f64, f64)> {
    Ok((
        fx.json_f64("/tolerance_suggestion/atol")?,
        fx.json_f64("/tolerance_suggestion/rtol")?,
    ))
}
