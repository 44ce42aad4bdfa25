//! What a motion costs with each sampler and step count: wall time to one guided motion of
//! 5 s (100 frames at 20 fps) through `TextToMotion::generate_with` (latents, every sampler step,
//! un-normalising and decoding), for every setting of the sampler sweep
//! (`motion_dit::sweep::default_settings`: DDPM 100/50/20, DDIM 50/20/10, DPM-Solver++(2M)
//! 20/10/5, UniPC and DPM-Solver++(3M) 10/5), and the cost of one network evaluation (NFE) alone,
//! so sampler overhead and network cost separate:
//!
//! - `samplers/nfe/<model>_b<B>`: one guided denoiser evaluation (conditional and unconditional
//!   branch in one batch of `2B`) of a `[B, 100, 205]` batch;
//! - `samplers/<model>_b1/<sampler>_<steps>`: one motion, every setting;
//! - `samplers/<model>_b32/<sampler>_<steps>`: 32 motions in one batch (criterion reports
//!   motions per second); set `MOTION_DIT_BENCH_B32=1` to run these (a DDPM-100 batch of 32 at
//!   the reference size takes minutes per iteration); without it, time per motion at batch 32 is
//!   `NFE x nfe/<model>_b32 / 32` to within the sampler overhead (under 1 %, see
//!   `crates/diffusion/benches/sampler_step.rs`).
//!
//! Models: `reference` is the reference-size AdaLN DiT (latent 512, 8 layers, 16 heads, random
//! weights, 512-d condition), guidance 3.5 as in the reference; `default` is the bundled default
//! model (`assets/default_model`) with its committed MiniLM embedding of "a person walks
//! forward", also at guidance 3.5 so the two compare.
//!
//! Run: `cargo bench --bench samplers` (about 10 minutes on 2 cores; filter with e.g.
//! `-- default_b1`). `cargo test --benches` runs every benchmark once.

use candle::{DType, Device, Tensor};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use motion_dit::diffusion::{Conditioning, Denoiser, Guided, NoiseSource, SeededNoise};
use motion_dit::dit::{Dit, DitConfig, Variant};
use motion_dit::motion_repr::Normalizer;
use motion_dit::sweep::default_settings;
use motion_dit::{GenerateOptions, MotionModel, Request, TextInput, TextToMotion};

const FRAMES: usize = 100;
const GUIDANCE: f64 = 3.5;

fn reference_model() -> MotionModel {
    let cfg = DitConfig::reference(Variant::AdaLn);
    let (dit, _vars) = Dit::init_random(&cfg, 7, &Device::Cpu).expect("random DiT");
    let d = cfg.num_feats;
    let normalizer = Normalizer::new(
        Tensor::zeros(d, DType::F32, &Device::Cpu).expect("mean"),
        Tensor::full(0.02f32, d, &Device::Cpu).expect("std"),
    )
    .expect("normalizer");
    MotionModel::new(dit, normalizer, None, 20.0, cfg.num_frames).expect("model")
}

fn default_model() -> (MotionModel, Tensor) {
    let model =
        MotionModel::from_folder_without_text_encoder(motion_dit::DEFAULT_MODEL_DIR, &Device::Cpu)
            .expect("default model");
    let features = motion_dit::pipeline::read_text_features(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/default_model/captions/000.npy"),
    )
    .expect("committed embedding");
    (model, features)
}

/// A seeded stand-in text feature of width `c` (the reference model has random weights).
fn stand_in_text(c: usize) -> Tensor {
    let v: Vec<f32> = (0..c)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    Tensor::from_vec(v, c, &Device::Cpu).expect("text")
}

fn requests(text: &Tensor, batch: usize) -> Vec<Request> {
    (0..batch)
        .map(|i| Request {
            text: TextInput::Features(text.clone()),
            frames: FRAMES,
            seed: i as u64,
            constraint: None,
        })
        .collect()
}

fn bench_model(c: &mut Criterion, name: &str, pipe: &TextToMotion, text: &Tensor) {
    let model = pipe.model();
    let cfg = model.config().clone();
    let full_b32 = std::env::var_os("MOTION_DIT_BENCH_B32").is_some();

    // One guided network evaluation.
    let mut group = c.benchmark_group("samplers/nfe");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    for b in [1usize, 32] {
        let x = SeededNoise::new((0..b as u64).collect())
            .next(&[b, FRAMES, cfg.num_feats], &Device::Cpu)
            .expect("x");
        let gamma = Tensor::full(0.5f32, b, &Device::Cpu).expect("gamma");
        let mask = Tensor::ones((b, FRAMES), DType::F32, &Device::Cpu).expect("mask");
        let cond = Conditioning::Pooled(
            text.broadcast_as((b, cfg.num_cond_feats))
                .and_then(|t| t.contiguous())
                .expect("cond"),
        );
        let guided = Guided::new(model.dit(), GUIDANCE);
        group.bench_function(format!("{name}_b{b}"), |bench| {
            bench.iter(|| guided.forward(&x, &gamma, &cond, &mask).expect("forward"))
        });
    }
    group.finish();

    for batch in [1usize, 32] {
        if batch > 1 && !full_b32 {
            continue;
        }
        let reqs = requests(text, batch);
        let mut group = c.benchmark_group(format!("samplers/{name}_b{batch}"));
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .throughput(Throughput::Elements(batch as u64));
        for setting in default_settings() {
            let opts = GenerateOptions {
                guidance: GUIDANCE,
                max_batch: batch,
                ..setting.apply(&GenerateOptions::for_model(model))
            };
            let id = BenchmarkId::new(setting.sampler.name(), setting.steps);
            group.bench_function(id, |bench| {
                bench.iter(|| {
                    pipe.generate_with(&reqs, &opts, &mut |_| {})
                        .expect("generate")
                })
            });
        }
        group.finish();
    }
}

fn bench(c: &mut Criterion) {
    let (model, text) = default_model();
    bench_model(c, "default", &TextToMotion::new(model), &text);
    let model = reference_model();
    let text = stand_in_text(model.config().num_cond_feats);
    bench_model(c, "reference", &TextToMotion::new(model), &text);
}

criterion_group!(benches, bench);
criterion_main!(benches);
