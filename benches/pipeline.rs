//! Criterion benches of the whole pipeline, caption to GIF, so its cost is tracked end to end:
//! - `pipeline/generate`: text encoding + 50-step guided DDIM + decoding of one 120-frame
//!   motion with a reference-size AdaLN DiT (latent 512, 8 layers, 16 heads; random weights)
//!   and a small CLIP text encoder (the test fixture; a ViT-B/32 text encoder adds ~20 ms);
//! - `pipeline/files`: that motion on the open body -> BVH + GLB + `.npy` + a 320 x 320 GIF;
//! - `pipeline/caption_to_gif`: both.
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

criterion_group!(benches, bench);
criterion_main!(benches);
