//! Integration tests of the `metrics` crate: golden values from the PyTorch reference
//! (fixture `metrics`), properties, typed errors and bootstrap intervals.

mod bootstrap;
mod errors;
mod fixture;
mod properties;

use candle::Tensor;
use test_fixtures::Fixture;

/// The fixture tensors every module uses.
#[allow(missing_debug_implementations)]
pub struct Data {
    pub fx: Fixture,
    pub real: Tensor,
    pub fake: Tensor,
    pub text: Tensor,
}

pub fn data() -> anyhow::Result<Data> {
    let fx = Fixture::load("metrics")?;
    Ok(Data {
        real: fx.f32("input.real")?,
        fake: fx.f32("input.fake")?,
        text: fx.f32("input.text")?,
        fx,
    })
}

/// A 0-dim fixture tensor as `f64` (exact for its float32 / float64 storage).
pub fn scalar(fx: &Fixture, key: &str) -> anyhow::Result<f64> {
    Ok(fx
        .tensor(key)?
        .to_dtype(candle::DType::F64)?
        .to_scalar::<f64>()?)
}
