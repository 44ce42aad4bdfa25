//! SMPL-RIFKE encode / decode throughput (dataset preparation and the generation output path).
//!
//! `cargo bench -p motion-repr --bench rifke -- --warm-up-time 1 --measurement-time 3`
//!
//! `encode_197`: one 197-frame motion; `decode_batch_32x197`: a batch of 32 generated motions
//! of 197 frames (what sampling decodes before skinning); `normalize_32x197`: standardisation
//! with the padding mask.

use candle::{Device, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use motion_repr::Normalizer;
use motion_repr::rifke::{self, EncodeOptions};
use smpl::rotation::mat3;

fn lcg(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let t = 197;
    let joints = Tensor::from_vec(lcg(1, t * 24 * 3), (t, 24, 3), &dev).expect("joints");
    let aa = lcg(2, t * 22 * 3);
    let rots: Vec<f32> = aa
        .chunks(3)
        .flat_map(|a| mat3::axis_angle_to_matrix(&[a[0], a[1], a[2]]))
        .collect();
    let rots = Tensor::from_vec(rots, (t, 22, 3, 3), &dev).expect("rotations");
    let feats = rifke::encode(&joints, &rots).expect("encode");
    let batch = Tensor::stack(&vec![feats.clone(); 32], 0).expect("batch");
    let mask = Tensor::ones((32, t), candle::DType::F32, &dev).expect("mask");
    let stats = Normalizer::new(
        Tensor::from_vec(lcg(3, 205), 205, &dev).expect("mean"),
        Tensor::from_vec(lcg(4, 205), 205, &dev)
            .expect("std")
            .abs()
            .expect("abs"),
    )
    .expect("normalizer");
    let mut g = c.benchmark_group("rifke");
    g.bench_function("encode_197", |b| {
        b.iter(|| rifke::encode_with(&joints, &rots, &EncodeOptions::default()).expect("encode"))
    });
    g.bench_function("decode_batch_32x197", |b| {
        b.iter(|| rifke::decode_batch(&batch, &mask).expect("decode"))
    });
    g.bench_function("normalize_32x197", |b| {
        b.iter(|| stats.normalize_masked(&batch, &mask).expect("normalize"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
