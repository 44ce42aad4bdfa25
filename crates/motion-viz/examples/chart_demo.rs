//! Draws the kind of figure the sampler study produces, from ILLUSTRATIVE (made-up) numbers:
//! two panels, FD (lower is better) and R@1 (higher is better) against the number of network
//! evaluations (log scale), one line per sampler with 95% interval bands, and the interval of
//! a DDPM-100 reference as a shaded band.
//!
//! ```text
//! cargo run --release -p motion-viz --example chart_demo -- OUT.png
//! ```

use anyhow::{Result, bail};
use motion_viz::chart::{
    Chart, Marker, Point, ReferenceBand, Scale, Series, default_palette, render_panels,
};
use motion_viz::write_png;

/// Evaluated NFEs.
const NFE: [f64; 6] = [3.0, 5.0, 10.0, 20.0, 50.0, 100.0];

/// A made-up curve `floor + gain / nfe^rate` with an interval that shrinks as quality settles.
fn curve(floor: f64, gain: f64, rate: f64, spread: f64) -> Vec<Point> {
    NFE.iter()
        .map(|&n| {
            let y = floor + gain / n.powf(rate);
            let half = spread * (0.4 + 0.6 / n.sqrt()) * y.abs();
            Point::with_band(n, y, y - half, y + half)
        })
        .collect()
}

fn chart(title: &str, y_label: &str, curves: [Vec<Point>; 4], reference: (f64, f64, f64)) -> Chart {
    let pal = default_palette();
    let names = ["DDIM", "DPM-Solver++ 2M", "Euler (ODE)", "Heun (ODE)"];
    let markers = [
        Marker::Circle,
        Marker::Square,
        Marker::Diamond,
        Marker::Triangle,
    ];
    let mut c = Chart::new(title, "NFE (network evaluations)", y_label);
    c.x_scale = Scale::Log10;
    c.x_ticks = Some(NFE.to_vec());
    for (i, points) in curves.into_iter().enumerate() {
        c.series
            .push(Series::new(names[i], pal[i], points).with_marker(markers[i]));
    }
    let (value, low, high) = reference;
    c.reference = Some(ReferenceBand {
        name: "DDPM-100 (95% CI)".into(),
        value,
        low,
        high,
        color: [110, 110, 110],
    });
    c
}

fn main() -> Result<()> {
    let Some(out) = std::env::args().nth(1) else {
        bail!("usage: chart_demo OUT.png");
    };
    let fd = chart(
        "FD vs NFE (illustrative data)",
        "FD (lower is better)",
        [
            curve(0.42, 2.6, 1.0, 0.10),
            curve(0.36, 1.9, 1.3, 0.10),
            curve(0.50, 3.4, 0.8, 0.12),
            curve(0.38, 4.5, 1.4, 0.10),
        ],
        (0.40, 0.36, 0.44),
    );
    let r1 = chart(
        "R@1 vs NFE (illustrative data)",
        "R@1 (higher is better)",
        [
            curve(0.52, -0.30, 0.9, 0.04),
            curve(0.53, -0.26, 1.2, 0.04),
            curve(0.50, -0.34, 0.7, 0.05),
            curve(0.53, -0.40, 1.3, 0.04),
        ],
        (0.525, 0.512, 0.538),
    );
    let img = render_panels(&[fd, r1], 2, 720, 480)?;
    write_png(&out, &img)?;
    println!("wrote {out} ({}x{})", img.width(), img.height());
    Ok(())
}
