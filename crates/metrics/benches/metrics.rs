//! Criterion benches of the metric hot paths at the reference's evaluation size, 640 x 256
//! (the fixture's real / fake / text embeddings).
//!
//! cargo bench -p metrics --bench metrics -- --warm-up-time 1 --measurement-time 3
//!
//! Reference on the same machine (PyTorch / scipy, 2 threads): FD 24 ms, PRDC 8 ms.

use criterion::{Criterion, criterion_group, criterion_main};
use metrics::{Embeddings, GaussianStats, PrdcConfig};
use std::hint::black_box;
use test_fixtures::Fixture;

fn benches(c: &mut Criterion) {
    let fx = Fixture::load("metrics").expect("fixture metrics");
    let real = fx.f32("input.real").expect("input.real");
    let fake = fx.f32("input.fake").expect("input.fake");
    let text = fx.f32("input.text").expect("input.text");

    c.bench_function("fd_640x256", |b| {
        b.iter(|| metrics::frechet_distance(black_box(&real), black_box(&fake)).expect("fd"))
    });
    let er = Embeddings::from_tensor(&real).expect("rows");
    let ef = Embeddings::from_tensor(&fake).expect("rows");
    let (sr, sf) = (
        GaussianStats::from_embeddings(&er).expect("stats"),
        GaussianStats::from_embeddings(&ef).expect("stats"),
    );
    c.bench_function("fd_from_stats_256", |b| {
        b.iter(|| black_box(&sr).frechet_distance(black_box(&sf)).expect("fd"))
    });
    c.bench_function("covariance_640x256", |b| {
        b.iter(|| GaussianStats::from_embeddings(black_box(&er)).expect("stats"))
    });
    c.bench_function("prdc_640x256_k3_5splits", |b| {
        b.iter(|| metrics::prdc(black_box(&real), black_box(&fake), 3, 5).expect("prdc"))
    });
    c.bench_function("prdc_reference_recall_640x256", |b| {
        b.iter(|| {
            metrics::prdc_with(black_box(&real), black_box(&fake), &PrdcConfig::reference())
                .expect("prdc")
        })
    });
    c.bench_function("retrieval_640x256_bs64", |b| {
        b.iter(|| {
            metrics::retrieval(black_box(&text), black_box(&fake), 64, &[1, 2, 3])
                .expect("retrieval")
        })
    });
    c.bench_function("tmr_score_640x256", |b| {
        b.iter(|| metrics::tmr_score(black_box(&fake), black_box(&text)).expect("tmr"))
    });
}

criterion_group!(metrics_benches, benches);
criterion_main!(metrics_benches);
