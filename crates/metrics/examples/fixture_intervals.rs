//! Every metric with its 95% bootstrap interval on the reference fixture's 640 x 256 embeddings
//! (the numbers quoted in `docs/metrics.md`).
//!
//! cargo run --release -p metrics --example fixture_intervals [-- RESAMPLES]
//!
//! Prints a table to stdout and writes nothing.

use std::time::Instant;

use metrics::{BootstrapConfig, Embeddings, Interval, PrdcConfig};
use test_fixtures::Fixture;

fn main() -> anyhow::Result<()> {
    let resamples = match std::env::args().nth(1) {
        Some(s) => s.parse()?,
        None => 1000,
    };
    let cfg = BootstrapConfig {
        resamples,
        confidence: 0.95,
        seed: 0,
    };
    let fx = Fixture::load("metrics")?;
    let real = Embeddings::from_tensor(&fx.f32("input.real")?)?;
    let fake = Embeddings::from_tensor(&fx.f32("input.fake")?)?;
    let text = Embeddings::from_tensor(&fx.f32("input.text")?)?;
    println!(
        "fixture metrics: N = {}, D = {}, {resamples} resamples, 95% percentile intervals",
        real.rows(),
        real.dim()
    );
    let show = |name: &str, iv: &Interval, secs: f64| {
        println!(
            "{name:<22} {:>10.4}  [{:>9.4}, {:>9.4}]  ±{:<8.4} ({:>5.1}% of value)  se {:.4}  {secs:.2}s",
            iv.estimate,
            iv.lower,
            iv.upper,
            iv.half_width(),
            100.0 * iv.half_width() / iv.estimate.abs(),
            iv.std_error
        )
    };
    let t = Instant::now();
    let fd = metrics::bootstrap_frechet(&real, &fake, &cfg)?;
    show("fd", &fd, t.elapsed().as_secs_f64());
    for (label, pcfg) in [
        ("", PrdcConfig::default()),
        (" (reference recall)", PrdcConfig::reference()),
    ] {
        let t = Instant::now();
        let p = metrics::bootstrap_prdc(&real, &fake, &pcfg, &cfg)?;
        let s = t.elapsed().as_secs_f64();
        if label.is_empty() {
            show("precision", &p.precision, s);
            show("density", &p.density, s);
            show("coverage", &p.coverage, s);
        }
        show(&format!("recall{label}"), &p.recall, s);
    }
    let t = Instant::now();
    let r = metrics::bootstrap_retrieval(&text, &fake, 64, &[1, 2, 3], &cfg)?;
    let s = t.elapsed().as_secs_f64();
    for (k, iv) in [1, 2, 3].iter().zip(&r.recall_at_k) {
        show(&format!("R@{k}"), iv, s);
    }
    show("mm_distance", &r.mm_distance, s);
    let t = Instant::now();
    let tmr = metrics::bootstrap_tmr_score(&fake, &text, &cfg)?;
    show("tmr_score", &tmr, t.elapsed().as_secs_f64());
    let t = Instant::now();
    let div = metrics::bootstrap_diversity(&fake, metrics::HUMANML3D_DIVERSITY_PAIRS, 0, &cfg)?;
    show("diversity (300 pairs)", &div, t.elapsed().as_secs_f64());
    Ok(())
}
