//! Criterion benches of the whole pipeline, caption to GIF, so its cost is tracked end to end:
//! - `pipeline/generate`: text encoding + 50-step guided DDIM + decoding of one 120-frame
//!   motion with a reference-size AdaLN DiT (latent 512, 8 layers, 16 heads; random weights)
//!   and a small CLIP text encoder (the test fixture; a ViT-B/32 text encoder adds ~20 ms);
//! - `pipeline/files`: that motion on the open body -> BVH + GLB + `.npy` + a 320 x 320 GIF;
//! - `pipeline/caption_to_gif`: both.
//!
//! And with the bundled default model (`assets/default_model`, 5 s = 100 frames, its own sampler
//! settings):
//! - `default_model/sample`: sampling + decoding from the committed MiniLM embedding of "a
//!   person walks forward" (no text encoder needed);
//! - `default_model/caption_to_gif`: caption -> MiniLM -> sampling -> BVH + GLB + `.npy` + GIF,
//!   when all-MiniLM-L6-v2 is in the text-encoder cache (skipped otherwise).
//!
//! Run: `cargo bench --bench pipeline -- --warm-up-time 1 --measurement-time 10`

#[path = "../tests/common/mod.rs"]
mod common;

use candle::Device;
use criterion::{Criterion, criterion_group, criterion_main};
use motion_dit::dit::{DitConfig, Variant};
use motion_dit::output::{FileOptions, write_motion_files};
use motion_dit::{MotionModel, Request, TextToMotion};

fn model_folder() -> std::path::PathBuf {
    let dir = common::scratch("bench").expect("scratch folder");
    let mut cfg = DitConfig::reference(Variant::AdaLn);
    cfg.num_cond_feats = 32;
    let normalizer = common::flat_normalizer(0.02).expect("normalizer");
    common::random_model_folder(&dir, cfg, 1, 1.0, 50, &normalizer).expect("model folder");
    dir
}

fn bench(c: &mut Criterion) {
    let dir = model_folder();
    let pipe = TextToMotion::new(MotionModel::from_folder(&dir, &Device::Cpu).expect("model"));
    let body = motion_dit::output::load_body(None).expect("open body");
    let request = [Request::caption("a person walks in a circle", 120, 7)];
    let out = dir.join("out");
    std::fs::create_dir_all(&out).expect("out");
    let opts = FileOptions::default();

    let mut group = c.benchmark_group("pipeline");
    group.sample_size(10);
    group.bench_function("generate", |b| {
        b.iter(|| pipe.generate(&request).expect("generate"))
    });
    let motion = pipe.generate(&request).expect("generate").remove(0);
    group.bench_function("files", |b| {
        b.iter(|| {
            write_motion_files(&out, "bench", &motion, &body, "a person walks", &opts)
                .expect("files")
        })
    });
    group.bench_function("caption_to_gif", |b| {
        b.iter(|| {
            let m = pipe.generate(&request).expect("generate");
            write_motion_files(&out, "bench", &m[0], &body, "a person walks", &opts).expect("files")
        })
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn bench_default_model(c: &mut Criterion) {
    let device = Device::Cpu;
    let dir = motion_dit::DEFAULT_MODEL_DIR;
    let bare = MotionModel::from_folder_without_text_encoder(dir, &device).expect("default model");
    let frames = (5.0 * bare.fps()).round() as usize;
    let features = motion_dit::pipeline::read_text_features(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/default_model/captions/000.npy"),
    )
    .expect("committed embedding");
    let pipe = TextToMotion::new(bare);
    let request = [Request {
        text: motion_dit::TextInput::Features(features),
        frames,
        seed: 0,
        constraint: None,
    }];
    let mut group = c.benchmark_group("default_model");
    group.sample_size(10);
    group.bench_function("sample", |b| {
        b.iter(|| pipe.generate(&request).expect("generate"))
    });
    if motion_dit::cached_text_encoder(motion_dit::MINILM_NAME).is_ok() {
        let pipe = TextToMotion::new(MotionModel::from_folder(dir, &device).expect("model"));
        let body = motion_dit::output::load_body(None).expect("open body");
        let out = common::scratch("bench-default").expect("scratch folder");
        let opts = FileOptions::default();
        let request = [Request::caption("a person walks forward", frames, 0)];
        group.bench_function("caption_to_gif", |b| {
            b.iter(|| {
                let m = pipe.generate(&request).expect("generate");
                write_motion_files(&out, "bench", &m[0], &body, "a person walks forward", &opts)
                    .expect("files")
            })
        });
        let _ = std::fs::remove_dir_all(&out);
    } else {
        eprintln!(
            "default_model/caption_to_gif skipped: all-MiniLM-L6-v2 is not in the text-encoder \
             cache ({})",
            motion_dit::FETCH_MINILM_HINT
        );
    }
    group.finish();
}

criterion_group!(benches, bench, bench_default_model);
criterion_main!(benches);
