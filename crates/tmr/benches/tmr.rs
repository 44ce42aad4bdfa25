//! Criterion benches of the TMR hot paths at reference size (random weights):
//! - motion encoder forward, batch 32 x 197 frames (the reference's longest motion), 6 layers;
//! - text encoder forward on CLIP token features, batch 32 x 32 tokens;
//! - CLIP ViT-B/32 text transformer, 32 captions (tokenised with the small fixture tokenizer:
//!   12 to 23 tokens, 488 in all, which `transformers` pads to 32 x 23), and the transformer
//!   alone on 32 sequences of exactly 23 random ids (the PyTorch twin's input, no padding to
//!   skip).
//!
//! Run: `cargo bench -p tmr --bench tmr -- --warm-up-time 1 --measurement-time 10`

use candle::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{Criterion, criterion_group, criterion_main};
use tmr::text::ClipTextSizes;
use tmr::{ActorEncoder, ActorEncoderConfig, ClipTextEncoder, TextEncoder};

fn random(shape: (usize, usize, usize), seed: u64) -> Tensor {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = shape.0 * shape.1 * shape.2;
    let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
}

fn encoders(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut g = c.benchmark_group("tmr");
    g.sample_size(10);
    for (name, cfg, t) in [
        (
            "motion_encoder_b32_t197",
            ActorEncoderConfig::tmr_motion(),
            197,
        ),
        ("text_encoder_b32_l32", ActorEncoderConfig::tmr_text(), 32),
    ] {
        let varmap = VarMap::new();
        let enc = ActorEncoder::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))
            .expect("encoder");
        let x = random((32, t, cfg.nfeats), 1);
        // Realistic padding: lengths spread between t/4 and t.
        let mask: Vec<f32> = (0..32)
            .flat_map(|b| {
                let len = t / 4 + (3 * t / 4) * b / 31;
                (0..t).map(move |i| (i < len) as u8 as f32)
            })
            .collect();
        let mask = Tensor::from_vec(mask, (32, t), &dev).expect("mask");
        g.bench_function(name, |bch| {
            bch.iter(|| enc.forward(&x, &mask).expect("forward"))
        });
    }
    g.finish();
}

fn clip(c: &mut Criterion) {
    let dev = Device::Cpu;
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/text_encoders/clip");
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).expect("tokenizer");
    let varmap = VarMap::new();
    let enc = ClipTextEncoder::new(
        &ClipTextSizes::vit_base_patch32(),
        VarBuilder::from_varmap(&varmap, DType::F32, &dev),
        tok,
    )
    .expect("clip");
    let base = [
        "a person walks forward and then turns around",
        "someone jumps up and down twice",
        "a man is dancing, spinning on the spot with his arms raised",
        "the person sits down on a chair",
    ];
    let caps: Vec<&str> = (0..32).map(|i| base[i % base.len()]).collect();
    let mut g = c.benchmark_group("clip");
    g.sample_size(10);
    g.bench_function("clip_vit_b32_text_32_captions", |b| {
        b.iter(|| enc.encode(&caps).expect("encode"))
    });
    let model = tmr::clip::ClipTextTransformer::new(
        &ClipTextSizes::vit_base_patch32(),
        VarBuilder::from_varmap(&varmap, DType::F32, &dev),
    )
    .expect("clip transformer");
    let ids: Vec<Vec<u32>> = (0..32u32)
        .map(|b| {
            (0..23u32)
                .map(|i| (b * 7919 + i * 104_729) % 49_000)
                .collect()
        })
        .collect();
    g.bench_function("clip_vit_b32_transformer_32x23_ids", |b| {
        b.iter(|| model.forward_packed(&ids).expect("forward"))
    });
    g.finish();
}

criterion_group!(benches, encoders, clip);
criterion_main!(benches);
