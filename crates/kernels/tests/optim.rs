//! The fused AdamW update is bit-identical to the same update written as candle tensor ops
//! (PyTorch's operation order, scalars rounded to `f32`).

use candle::{DType, Device, Tensor};
use kernels::optim::{AdamWStep, adamw_step};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

fn randn(n: usize, seed: u64, std: f32) -> anyhow::Result<Tensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            let z: f32 = StandardNormal.sample(&mut rng);
            std * z
        })
        .collect();
    Ok(Tensor::from_vec(v, (n / 10, 10), &Device::Cpu)?)
}

#[test]
fn fused_adamw_is_bit_identical_to_tensor_ops() -> anyhow::Result<()> {
    let n = 70_000; // above the parallel threshold
    let (lr, wd, b1, b2, eps, t) = (3e-4, 0.1, 0.9, 0.95, 1e-7, 3);
    let bias1 = 1.0 - f64::powi(b1, t);
    let bias2_sqrt = (1.0 - f64::powi(b2, t)).sqrt();
    let step = AdamWStep {
        decay: 1.0 - lr * wd,
        one_minus_beta1: 1.0 - b1,
        beta2: b2,
        one_minus_beta2: 1.0 - b2,
        bias2_sqrt,
        eps,
        neg_step_size: -lr / bias1,
    };
    let (p0, g) = (randn(n, 1, 1.0)?, randn(n, 2, 0.1)?);
    let (m0, v0) = (randn(n, 3, 0.01)?, randn(n, 4, 0.001)?.sqr()?);
    // Tensor-op form (as `diffusion::AdamW` off the CPU fast path).
    let p = (&p0 * (1.0 - lr * wd))?;
    let m = (&m0 + ((&g - &m0)? * (1.0 - b1))?)?;
    let v = ((&v0 * b2)? + ((&g * (1.0 - b2))? * &g)?)?;
    let s = Tensor::new(bias2_sqrt, &Device::Cpu)?.to_dtype(DType::F32)?;
    let denom = v.sqrt()?.broadcast_div(&s)?.affine(1.0, eps)?;
    let p = (p + ((&m * (-lr / bias1))? / denom)?)?;
    // Fused, in place on a copy of p0.
    let pf = p0.copy()?;
    let (mf, vf) = adamw_step(&pf, &g, &m0, &v0, step)?;
    for (a, b) in [(&pf, &p), (&mf, &m), (&vf, &v)] {
        let (a, b) = (
            a.flatten_all()?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?,
        );
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| x.to_bits() == y.to_bits() || x == y)
        );
    }
    assert!(adamw_step(&pf, &g.narrow(0, 0, 10)?, &m0, &v0, step).is_err());
    Ok(())
}
