//! End to end: DDPM and DDIM sampling with classifier-free guidance (w = 3.5) on the
//! `dit_adaln` network, against every traced step of `sampling.safetensors`.

use candle::Tensor;
use diffusion::{Conditioning, Ddim, Ddpm, Guided, ReplayNoise, Sampler, StepCallback, StepInfo};
use dit::Dit;
use test_fixtures::{Fixture, assert_close};

use crate::{fixture_net, tolerance};

/// Runs the fixture's guided `kind` sampler (`ddpm` or `ddim`, its step count, clip and
/// guidance weight) on `net` from the fixture's latents with its recorded noise, calling
/// `on_step` at every step; returns the fixture and the final sample.
pub(crate) fn sample_fixture(
    kind: &str,
    net: &Dit,
    on_step: &mut StepCallback<'_>,
) -> anyhow::Result<(Fixture, Tensor)> {
    let fx = Fixture::load("sampling")?;
    let w = fx.json_f64("/config/cfg")?;
    let x = fx.f32("input.x")?;
    let cond = Conditioning::Pooled(fx.f32("input.y")?);
    // padding_mask is 1 = VALID: our frame-mask convention already.
    let mask = fx.f32("input.padding_mask")?;
    let steps = fx.json_f64(&format!("/config/{kind}_steps"))? as usize;
    let clip = fx.json_f64(&format!("/config/{kind}_clip_min"))? as f32;
    let sampler: Box<dyn Sampler> = match kind {
        "ddpm" => Box::new(Ddpm::new(steps).with_clip_min(clip)),
        _ => Box::new(Ddim::new(steps).with_clip_min(clip)),
    };
    let noise: Vec<_> = (0..steps)
        .map(|k| fx.f32(&format!("noise.step_{k:02}")))
        .collect::<Result<_, _>>()?;
    let mut noise = ReplayNoise::new(noise);
    let guided = Guided::new(net, w);
    let out = sampler.sample_with_callback(&guided, x, &cond, &mask, &mut noise, on_step)?;
    Ok((fx, out))
}

fn run(kind: &str) -> anyhow::Result<()> {
    let fx = Fixture::load("sampling")?;
    let (net, _) = fixture_net(&Fixture::load("dit_adaln")?)?;
    let (atol, rtol) = tolerance(&fx)?;
    let steps = fx.json_f64(&format!("/config/{kind}_steps"))? as usize;
    let mut checked = 0;
    let mut on_step = |s: &StepInfo<'_>| -> candle::Result<()> {
        let k = s.index;
        let g = fx
            .f32(&format!("trace.{kind}.gamma_{k:02}"))
            .map_err(|e| candle::Error::Msg(e.to_string()))?
            .flatten_all()?
            .to_vec1::<f32>()?[0];
        // The fixture's tolerance (the schedule is the `diffusion` crate's; it agrees with the
        // reference to a few ulps).
        assert!(
            ((s.gamma - g).abs() as f64) <= atol + rtol * g.abs() as f64,
            "{kind} gamma at step {k}: {} vs reference {g}",
            s.gamma
        );
        let get = |what: &str| {
            fx.f32(&format!("trace.{kind}.{what}_{k:02}"))
                .map_err(|e| candle::Error::Msg(e.to_string()))
        };
        assert_close(
            s.x0,
            &get("x0")?,
            atol,
            rtol,
            &format!("{kind} x0 step {k}"),
        );
        assert_close(
            s.x,
            &get("step")?,
            atol,
            rtol,
            &format!("{kind} x step {k}"),
        );
        checked += 1;
        Ok(())
    };
    let (_, out) = sample_fixture(kind, &net, &mut on_step)?;
    assert_eq!(checked, steps);
    assert_close(&out, &fx.f32(&format!("output.{kind}"))?, atol, rtol, kind);
    Ok(())
}

#[test]
fn ddpm_with_guidance_reproduces_every_reference_step() -> anyhow::Result<()> {
    run("ddpm")
}

#[test]
fn ddim_with_guidance_reproduces_every_reference_step() -> anyhow::Result<()> {
    run("ddim")
}
