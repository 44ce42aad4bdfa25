//! Loading + batching a synthetic set: reference folder layout vs packed shards.
//!
//! ```text
//! cargo bench -p motion-data --bench loading -- --warm-up-time 1 --measurement-time 5
//! ```
//!
//! The set (`MOTION_DATA_BENCH_MOTIONS` motions, default 5000, seed 0) is synthesised once into
//! the system temp folder and packed there; later runs reuse it. One iteration = open the train
//! split + one full epoch of training batches (64 x 196 frames, shuffled, random crops and
//! captions) on the CPU. `batching` iterations reuse an opened dataset.

use std::path::PathBuf;

use candle::Device;
use criterion::{Criterion, criterion_group, criterion_main};
use motion_data::synth::synthesize_folder;
use motion_data::{
    BatchConfig, Batcher, FolderDataset, FolderOptions, MotionSource, PackedDataset, Split,
    pack_folder,
};

fn dataset() -> (PathBuf, PathBuf) {
    let n: usize = std::env::var("MOTION_DATA_BENCH_MOTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let root = std::env::temp_dir().join(format!("motion-data-bench-{n}"));
    let folder = root.join("folder");
    let packed = root.join("packed");
    let done = root.join("complete");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&root);
        synthesize_folder(&folder, n, 0, |_| {}).expect("synthesize");
        pack_folder(&folder, &packed).expect("pack");
        std::fs::write(&done, b"ok").expect("marker");
    }
    (folder, packed)
}

fn epoch<S: MotionSource>(data: &S) -> usize {
    let batcher = Batcher::new(data, BatchConfig::train(64, 196, 1), Device::Cpu).expect("batcher");
    let mut frames = 0;
    for b in batcher.epoch(0) {
        frames += b.expect("batch").lengths.iter().sum::<usize>();
    }
    frames
}

fn bench(c: &mut Criterion) {
    let (folder, packed) = dataset();
    let mut g = c.benchmark_group("load_and_epoch");
    g.sample_size(10);
    g.bench_function("folder", |b| {
        b.iter(|| {
            let d = FolderDataset::open(&folder, Split::Train, &FolderOptions::default())
                .expect("open");
            epoch(&d)
        })
    });
    g.bench_function("packed", |b| {
        b.iter(|| {
            let d = PackedDataset::open(&packed, Split::Train).expect("open");
            epoch(&d)
        })
    });
    g.finish();
    let mut g = c.benchmark_group("epoch_only");
    g.sample_size(10);
    let fd = FolderDataset::open(&folder, Split::Train, &FolderOptions::default()).expect("open");
    let pd = PackedDataset::open(&packed, Split::Train).expect("open");
    g.bench_function("folder", |b| b.iter(|| epoch(&fd)));
    g.bench_function("packed", |b| b.iter(|| epoch(&pd)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
