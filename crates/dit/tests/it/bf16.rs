//! Opt-in bfloat16 inference ([`dit::Precision::Bf16`]) against the PyTorch `f32` fixtures: the
//! three variants' outputs and the guided DDPM / DDIM sampling traces stay within a stated
//! relative error of the reference, which is bfloat16's precision, not `f32`'s.
//!
//! The bound: bfloat16 keeps 8 significant bits (unit roundoff `u = 2^-8 = 3.9e-3`). Every
//! product rounds both operands, so a layer's output is off by about `u` relatively (random
//! signs average part of it out), and the errors of the network's ~10 products compound
//! partly; a sampling trace compounds its steps' errors. We state 1 % relative L2 error for one
//! forward pass (about 2.6 `u`) and 2 % for every step of a 10-step guided sampling trace. On
//! their introduction these tests measured 1.5e-3 to 3.2e-3 for the forward passes and 6.5e-3
//! to 6.7e-3 for the traces (each test prints its figures).

use candle::Tensor;
use diffusion::{Denoiser, StepInfo};
use dit::Precision;
use test_fixtures::Fixture;

use crate::fixtures::condition;
use crate::sampling::sample_fixture;
use crate::{fixture_net, frame_mask};

/// Relative L2 error bound of a bf16 forward pass against the `f32` reference (see the module
/// documentation).
const FORWARD_REL_L2: f64 = 0.01;
/// The same for every step of a guided sampling trace.
const TRACE_REL_L2: f64 = 0.02;

fn rel_l2(a: &Tensor, b: &Tensor) -> anyhow::Result<f64> {
    let a = a.to_dtype(candle::DType::F64)?;
    let b = b.to_dtype(candle::DType::F64)?;
    let num = (&a - &b)?.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    let den = b.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    Ok(num / den.max(1e-30))
}

fn forward_within_bound(name: &str) -> anyhow::Result<()> {
    let fx = Fixture::load(name)?;
    let (net, _) = fixture_net(&fx)?;
    let half = net.clone().with_precision(Precision::Bf16)?;
    assert_eq!(half.precision(), Precision::Bf16);
    let x = fx.f32("input.x")?;
    let gamma = fx.f32("input.gamma")?;
    let mask = frame_mask(&fx, "input.mask")?;
    let cond = condition(&fx)?;
    for (c, key) in [
        (cond.clone(), "output.out"),
        (cond.null()?, "output.out_uncond"),
    ] {
        let want = fx.f32(key)?;
        let got = half.forward(&x, &gamma, &c, &mask)?;
        let full = net.forward(&x, &gamma, &c, &mask)?;
        let (e_half, e_full) = (rel_l2(&got, &want)?, rel_l2(&full, &want)?);
        println!("{name} {key}: bf16 relative L2 error {e_half:.2e} (f32: {e_full:.2e})");
        assert!(
            e_half <= FORWARD_REL_L2,
            "{name} {key}: bf16 off by {e_half:.3e}"
        );
        // The products really are rounded: bf16 is far from the f32 result.
        assert!(
            e_half > 20.0 * e_full,
            "{name} {key}: bf16 {e_half:e} vs f32 {e_full:e}"
        );
        // Deterministic.
        let again = half.forward(&x, &gamma, &c, &mask)?;
        assert_eq!(rel_l2(&again, &got)?, 0.0);
    }
    Ok(())
}

#[test]
fn bf16_adaln_forward_is_within_bf16_precision_of_the_reference() -> anyhow::Result<()> {
    forward_within_bound("dit_adaln")
}

#[test]
fn bf16_incontext_forward_is_within_bf16_precision_of_the_reference() -> anyhow::Result<()> {
    forward_within_bound("dit_incontext")
}

#[test]
fn bf16_cross_attention_forward_is_within_bf16_precision_of_the_reference() -> anyhow::Result<()> {
    forward_within_bound("dit_cross_attention")
}

fn sampling_within_bound(kind: &str) -> anyhow::Result<()> {
    let (net, _) = fixture_net(&Fixture::load("dit_adaln")?)?;
    let net = net.with_precision(Precision::Bf16)?;
    let fx = Fixture::load("sampling")?;
    let steps = fx.json_f64(&format!("/config/{kind}_steps"))? as usize;
    let mut worst = (0f64, 0usize);
    let mut on_step = |s: &StepInfo<'_>| -> candle::Result<()> {
        let k = s.index;
        let want = fx
            .f32(&format!("trace.{kind}.step_{k:02}"))
            .map_err(|e| candle::Error::Msg(e.to_string()))?;
        let e = rel_l2(s.x, &want).map_err(|e| candle::Error::Msg(e.to_string()))?;
        if e > worst.0 {
            worst = (e, k);
        }
        Ok(())
    };
    let (_, out) = sample_fixture(kind, &net, &mut on_step)?;
    let e_out = rel_l2(&out, &fx.f32(&format!("output.{kind}"))?)?;
    println!(
        "{kind} with guidance, {steps} steps in bf16: output relative L2 error {e_out:.2e}, \
         worst step {} ({:.2e})",
        worst.1, worst.0
    );
    assert!(e_out <= TRACE_REL_L2, "{kind} output off by {e_out:.3e}");
    assert!(
        worst.0 <= TRACE_REL_L2,
        "{kind} step {} off by {:.3e}",
        worst.1,
        worst.0
    );
    Ok(())
}

#[test]
fn bf16_ddpm_with_guidance_follows_the_reference_trace() -> anyhow::Result<()> {
    sampling_within_bound("ddpm")
}

#[test]
fn bf16_ddim_with_guidance_follows_the_reference_trace() -> anyhow::Result<()> {
    sampling_within_bound("ddim")
}

#[test]
fn precision_parses_and_training_ignores_it() -> anyhow::Result<()> {
    assert_eq!("bf16".parse::<Precision>(), Ok(Precision::Bf16));
    assert_eq!("F32".parse::<Precision>(), Ok(Precision::F32));
    assert!("fp8".parse::<Precision>().is_err_and(|e| e.contains("fp8")));
    let fx = Fixture::load("dit_adaln")?;
    let (net, _) = fixture_net(&fx)?;
    assert_eq!(net.precision(), Precision::F32);
    let half = net.clone().with_precision(Precision::Bf16)?;
    let x = fx.f32("input.x")?;
    let gamma = fx.f32("input.gamma")?;
    let mask = frame_mask(&fx, "input.mask")?;
    let cond = condition(&fx)?;
    // Training mode runs in f32 whatever the inference precision: the same draws, the same
    // numbers.
    let a = net.training(7).forward(&x, &gamma, &cond, &mask)?;
    let b = half.training(7).forward(&x, &gamma, &cond, &mask)?;
    assert_eq!(rel_l2(&a, &b)?, 0.0);
    // And back to f32 inference gives the f32 outputs.
    let back = half.with_precision(Precision::F32)?;
    let f = net.forward(&x, &gamma, &cond, &mask)?;
    assert_eq!(rel_l2(&back.forward(&x, &gamma, &cond, &mask)?, &f)?, 0.0);
    Ok(())
}
