//! Overhead of one sampler step with the network excluded, at the reference batch shape
//! `[8, 197, 205]` (8 motions of 197 frames). Run:
//! `cargo bench -p diffusion --bench sampler_step -- --warm-up-time 1 --measurement-time 3`

use candle::{DType, Device, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use diffusion::{
    Conditioning, Ddim, Ddpm, Denoiser, DpmSolverPp2M, Guided, NoiseSource, ReplayNoise, Sampler,
    SeededNoise, ddim_step, ddpm_step,
};

const SHAPE: [usize; 3] = [8, 197, 205];

/// A trivial denoiser: predicts `x_t` itself (one cheap copy-free op).
struct Identity;

impl Denoiser for Identity {
    fn forward(
        &self,
        x: &Tensor,
        _g: &Tensor,
        _c: &Conditioning,
        _m: &Tensor,
    ) -> candle::Result<Tensor> {
        Ok(x.clone())
    }
}

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut src = SeededNoise::new((0..SHAPE[0] as u64).collect());
    let x = src.next(&SHAPE, &dev).expect("noise");
    let x0 = src.next(&SHAPE, &dev).expect("noise");
    let z = src.next(&SHAPE, &dev).expect("noise");
    let mask = Tensor::ones((SHAPE[0], SHAPE[1]), DType::F32, &dev).expect("mask");
    let cond = Conditioning::Pooled(Tensor::zeros((SHAPE[0], 512), DType::F32, &dev).expect("y"));
    let (g, gn) = (0.5f32, 0.6545086f32);

    let mut grp = c.benchmark_group("sampler_step_8x197x205");
    grp.sample_size(20);
    grp.bench_function("ddpm_step", |b| {
        b.iter(|| ddpm_step(&x, &x0, g, gn, &z).expect("step"))
    });
    grp.bench_function("ddim_step", |b| {
        b.iter(|| ddim_step(&x, &x0, g, gn).expect("step"))
    });
    grp.bench_function("seeded_noise_draw", |b| {
        b.iter(|| src.next(&SHAPE, &dev).expect("noise"))
    });
    // Whole samplers with 10 steps and the identity denoiser: per step = time / 10.
    grp.bench_function("ddim_10_steps", |b| {
        b.iter(|| {
            Ddim::new(10)
                .sample(
                    &Identity,
                    x.clone(),
                    &cond,
                    &mask,
                    &mut ReplayNoise::new(vec![]),
                )
                .expect("sample")
        })
    });
    grp.bench_function("dpmpp2m_10_steps", |b| {
        b.iter(|| {
            DpmSolverPp2M::new(10)
                .sample(
                    &Identity,
                    x.clone(),
                    &cond,
                    &mask,
                    &mut ReplayNoise::new(vec![]),
                )
                .expect("sample")
        })
    });
    grp.bench_function("ddpm_10_steps_replayed_noise", |b| {
        b.iter(|| {
            let mut n = ReplayNoise::new(vec![z.clone(); 10]);
            Ddpm::new(10)
                .sample(&Identity, x.clone(), &cond, &mask, &mut n)
                .expect("sample")
        })
    });
    grp.bench_function("guided_identity_forward", |b| {
        let gamma = Tensor::full(0.5f32, SHAPE[0], &dev).expect("gamma");
        let guided = Guided::new(&Identity, 3.5);
        b.iter(|| guided.forward(&x, &gamma, &cond, &mask).expect("guided"))
    });
    grp.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
