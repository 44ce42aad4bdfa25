//! Numerical building blocks of the transformer: re-exported from [`kernels::ops`] (fused CPU
//! inference kernels with plain differentiable candle fallbacks); the differentiable fused
//! kernels used in training are in [`kernels::grad`].

pub use kernels::ops::*;
