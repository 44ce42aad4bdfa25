//! Fused CPU kernels of the transformers, as candle custom ops on contiguous `f32` memory,
//! each picking an AVX-512, AVX2 or portable path at run time ([`simd`]).
//!
//! - [`ops`]: inference kernels (no gradient) with a plain differentiable candle fallback:
//!   linear + bias (+ exact-erf GELU epilogue, + residual), fused multi-head attention with a
//!   per-key bias, LayerNorm, AdaLN modulation, gated residual, bias / position-table adds.
//! - [`grad`]: the same operations as differentiable custom ops (forward and backward kernels)
//!   for training.
//! - [`optim`]: a fused in-place AdamW update.
//! - [`bf16`]: opt-in bfloat16 linear layers for inference (AVX512-BF16 `vdpbf16ps` where the
//!   CPU has it, the same numbers through `f32` `gemm` elsewhere).
//! - [`attention`]: the fused attention itself and the softmax / `exp` it is built on.
//! - [`simd`]: which SIMD path the kernels take (`MOTION_DIT_SIMD`, [`simd::with_simd`]).
//!
//! # Place in the workspace
//! At the bottom: depends on no workspace crate, so that every model crate can use it.
#![warn(missing_docs)]

pub mod attention;
pub mod bf16;
pub mod grad;
pub mod ops;
pub mod optim;
pub mod simd;
