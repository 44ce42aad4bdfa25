//! Sampler sweeps: the same captions and seeds sampled with several samplers and step counts,
//! each scored with the TMR evaluator, so the cost of a sampler (network evaluations, seconds)
//! can be read next to its quality (FD, R@1, TMR-score with intervals).
//!
//! A sweep is a list of [`SweepSetting`]s (`ddpm:100`, `dpm++:10`, `unipc:5:logsnr`, ...) run
//! through one [`crate::evaluate::Evaluation`]; each gives a [`SweepRow`]. The `sampler_sweep`
//! example writes the rows as `sweep.json` (a list of rows), `sweep.csv` and a plot
//! ([`plot_sweep`]); [`fewest_nfe_matching`] picks the cheapest setting whose FD and R@1
//! intervals overlap a baseline's (DDPM with 100 steps, the reference's sampler).
//!
//! NFE counts guided network evaluations: one step of any sampler here is one evaluation of the
//! guided denoiser (conditional and unconditional branch in one batch).

use std::path::Path;
use std::str::FromStr;

use diffusion::{SamplerKind, TimeGrid};
use metrics::Interval;
use serde::{Deserialize, Serialize};

use crate::error::{PipelineError, Result, write_err};
use crate::evaluate::{EvalRun, NamedInterval};
use crate::pipeline::GenerateOptions;

/// One sampler setting of a sweep: sampler, steps and time grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepSetting {
    /// The sampler.
    pub sampler: SamplerKind,
    /// Steps (= guided network evaluations).
    pub steps: usize,
    /// Time grid.
    pub grid: TimeGrid,
}

impl SweepSetting {
    /// A setting on the uniform grid.
    pub fn new(sampler: SamplerKind, steps: usize) -> Self {
        Self {
            sampler,
            steps,
            grid: TimeGrid::Uniform,
        }
    }

    /// The setting on `grid`.
    pub fn on(mut self, grid: TimeGrid) -> Self {
        self.grid = grid;
        self
    }

    /// `opts` with this setting's sampler, steps and grid.
    pub fn apply(&self, opts: &GenerateOptions) -> GenerateOptions {
        GenerateOptions {
            sampler: self.sampler,
            steps: self.steps,
            grid: self.grid,
            ..opts.clone()
        }
    }

    /// The line a setting is drawn on in plots: the sampler, with the grid when not uniform.
    pub fn series(&self) -> String {
        series_name(self.sampler.name(), &self.grid.label())
    }
}

fn series_name(sampler: &str, grid: &str) -> String {
    if grid == "uniform" {
        sampler.to_string()
    } else {
        format!("{sampler} ({grid})")
    }
}

impl std::fmt::Display for SweepSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.sampler, self.steps)?;
        if self.grid != TimeGrid::Uniform {
            write!(f, ":{}", self.grid)?;
        }
        Ok(())
    }
}

impl FromStr for SweepSetting {
    type Err = String;
    /// `SAMPLER:STEPS[:GRID]`, e.g. `ddpm:100`, `dpm++:10`, `unipc:5:logsnr`,
    /// `dpm++:8:power2`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let mut parts = s.trim().splitn(3, ':');
        let sampler: SamplerKind = parts.next().unwrap_or_default().parse()?;
        let steps_text = parts
            .next()
            .ok_or_else(|| format!("{s:?}: expected SAMPLER:STEPS[:GRID], e.g. dpm++:10"))?;
        let steps: usize = steps_text
            .parse()
            .map_err(|_| format!("{s:?}: steps {steps_text:?} is not a whole number"))?;
        if steps == 0 {
            return Err(format!("{s:?}: steps must be at least 1"));
        }
        let grid = match parts.next() {
            Some(g) => g.parse()?,
            None => TimeGrid::Uniform,
        };
        Ok(Self {
            sampler,
            steps,
            grid,
        })
    }
}

/// The sweep of the reference's question (DDPM at 100/50/20 steps, DDIM at 50/20/10,
/// DPM-Solver++(2M) at 20/10/5) plus the few-step solvers added here (UniPC and
/// DPM-Solver++(3M) at 10/5).
pub fn default_settings() -> Vec<SweepSetting> {
    let mut v = Vec::new();
    for (kind, steps) in [
        (SamplerKind::Ddpm, &[100, 50, 20][..]),
        (SamplerKind::Ddim, &[50, 20, 10][..]),
        (SamplerKind::DpmSolverPp2M, &[20, 10, 5][..]),
        (SamplerKind::UniPc, &[10, 5][..]),
        (SamplerKind::DpmSolverPp3M, &[10, 5][..]),
    ] {
        v.extend(steps.iter().map(|&s| SweepSetting::new(kind, s)));
    }
    v
}

/// An estimate and its confidence interval, as `sweep.json` writes it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    /// Point estimate.
    pub value: f64,
    /// Lower end of the interval.
    pub low: f64,
    /// Upper end of the interval.
    pub high: f64,
}

impl Bounds {
    /// Whether the two intervals share a point.
    pub fn overlaps(&self, other: &Bounds) -> bool {
        self.low <= other.high && other.low <= self.high
    }
}

impl From<Interval> for Bounds {
    fn from(iv: Interval) -> Self {
        Self {
            value: iv.estimate,
            low: iv.lower,
            high: iv.upper,
        }
    }
}

/// One row of `sweep.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    /// Sampler name (`ddpm`, `ddim`, `dpm++`, `dpm++3m`, `unipc`).
    pub sampler: String,
    /// Steps.
    pub steps: usize,
    /// Guided network evaluations per motion.
    pub nfe: usize,
    /// Wall-clock seconds to generate all the sweep's motions with this setting (sampling and
    /// decoding, in batches; not embedding or scoring).
    pub seconds: f64,
    /// Fréchet distance to the real motions' embeddings.
    pub fd: Bounds,
    /// R@1 of text-to-motion retrieval within batches.
    pub r1: Bounds,
    /// TMR-score (mean text-motion cosine similarity).
    pub tmr_score: Bounds,
    /// Time grid (`uniform`, `logsnr`, `power2`, ...).
    pub grid: String,
    /// Guidance weight.
    pub guidance: f64,
    /// Motions generated.
    pub motions: usize,
    /// `seconds / motions`.
    pub seconds_per_motion: f64,
    /// Every metric of the evaluation with its interval (FD, TMR-score, PRDC, R@1/2/3,
    /// MM-distance).
    pub metrics: Vec<NamedInterval>,
    /// Paired differences to the sweep's baseline (this row minus the baseline, same captions
    /// and seeds), when one was computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_baseline: Option<PairedBounds>,
}

/// Paired differences of one setting to the baseline (`setting - baseline`) with intervals;
/// see [`metrics::bootstrap_paired_difference`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairedBounds {
    /// FD difference (negative: closer to the real motions than the baseline).
    pub fd: Bounds,
    /// R@1 difference (positive: better retrieval than the baseline).
    pub r1: Bounds,
    /// TMR-score difference.
    pub tmr_score: Bounds,
}

impl PairedBounds {
    /// Neither measurably worse than the baseline: the FD difference could be 0 or below and
    /// the R@1 difference 0 or above (at the intervals' confidence).
    pub fn not_worse(&self) -> bool {
        self.fd.low <= 0.0 && self.r1.high >= 0.0
    }
}

/// The paired differences `run - baseline` of two sets of generated motions (TMR embeddings
/// `[N, d]`, row `i` from sample `i` of `eval`), scored against `eval`'s real motions and
/// captions with `cfg`'s retrieval batch and bootstrap settings.
pub fn paired_to_baseline(
    eval: &crate::evaluate::Evaluation,
    run: &candle::Tensor,
    baseline: &candle::Tensor,
    cfg: &crate::evaluate::ScoreConfig,
) -> Result<PairedBounds> {
    let emb = |t: &candle::Tensor, what: &'static str| {
        metrics::Embeddings::from_tensor(&t.to_dtype(candle::DType::F32)?).map_err(|e| {
            PipelineError::Metrics {
                metric: what.into(),
                source: e,
            }
        })
    };
    let (real, text) = (emb(&eval.real_emb, "real")?, emb(&eval.text_emb, "text")?);
    let (a, b) = (emb(run, "run")?, emb(baseline, "baseline")?);
    let d = metrics::bootstrap_paired_difference(
        &real,
        &text,
        &a,
        &b,
        cfg.retrieval_batch,
        &[1],
        &cfg.bootstrap,
    )
    .map_err(|e| PipelineError::Metrics {
        metric: "paired difference".into(),
        source: e,
    })?;
    let r1 = d
        .recall_at_k
        .first()
        .copied()
        .ok_or_else(|| PipelineError::Option {
            name: "top_k".into(),
            reason: "no R@1 difference".into(),
        })?;
    Ok(PairedBounds {
        fd: d.fd.into(),
        r1: r1.into(),
        tmr_score: d.tmr_score.into(),
    })
}

/// The row with the fewest network evaluations that is not measurably worse than the baseline
/// in the paired comparison ([`PairedBounds::not_worse`]; ties: the faster one).
pub fn fewest_nfe_not_worse(rows: &[SweepRow]) -> Option<&SweepRow> {
    rows.iter()
        .filter(|r| r.vs_baseline.is_some_and(|p| p.not_worse()))
        .min_by(|a, b| {
            a.nfe
                .cmp(&b.nfe)
                .then(a.seconds_per_motion.total_cmp(&b.seconds_per_motion))
        })
}

impl SweepRow {
    /// The row of one evaluation run with `opts`.
    pub fn new(opts: &GenerateOptions, run: &EvalRun) -> Self {
        let m = &run.metrics;
        let motions = run.motions.len();
        let r1 = m.retrieval.recall_at_k.first().map_or(
            Bounds {
                value: f64::NAN,
                low: f64::NAN,
                high: f64::NAN,
            },
            |iv| Bounds::from(*iv),
        );
        Self {
            sampler: opts.sampler.name().to_string(),
            steps: opts.steps,
            nfe: opts.nfe(),
            seconds: run.generation_seconds,
            fd: m.fd.into(),
            r1,
            tmr_score: m.tmr_score.into(),
            grid: opts.grid.label(),
            guidance: opts.guidance,
            motions,
            seconds_per_motion: run.generation_seconds / motions.max(1) as f64,
            metrics: m
                .named()
                .into_iter()
                .map(|(metric, interval)| NamedInterval { metric, interval })
                .collect(),
            vs_baseline: None,
        }
    }

    /// The plot line of this row: the sampler, with the grid when not uniform.
    pub fn series(&self) -> String {
        series_name(&self.sampler, &self.grid)
    }

    /// Whether this row was produced by `setting`.
    pub fn is(&self, setting: &SweepSetting) -> bool {
        self.sampler == setting.sampler.name()
            && self.steps == setting.steps
            && self.grid == setting.grid.label()
    }

    /// `sampler:steps[:grid]`.
    pub fn setting(&self) -> String {
        if self.grid == "uniform" {
            format!("{}:{}", self.sampler, self.steps)
        } else {
            format!("{}:{}:{}", self.sampler, self.steps, self.grid)
        }
    }

    /// Whether this row's FD and R@1 intervals both overlap `baseline`'s.
    pub fn matches(&self, baseline: &SweepRow) -> bool {
        self.fd.overlaps(&baseline.fd) && self.r1.overlaps(&baseline.r1)
    }
}

/// The row with the fewest network evaluations whose FD and R@1 intervals overlap
/// `baseline`'s (ties: the faster one), excluding the baseline itself.
pub fn fewest_nfe_matching<'a>(rows: &'a [SweepRow], baseline: &SweepRow) -> Option<&'a SweepRow> {
    rows.iter()
        .filter(|r| r.setting() != baseline.setting() && r.matches(baseline))
        .min_by(|a, b| {
            a.nfe
                .cmp(&b.nfe)
                .then(a.seconds_per_motion.total_cmp(&b.seconds_per_motion))
        })
}

/// Writes the rows as `sweep.json` (a JSON list) into `dir`, atomically.
pub fn write_json(dir: &Path, rows: &[SweepRow]) -> Result<std::path::PathBuf> {
    let path = dir.join("sweep.json");
    metrics::write_json(&path, rows).map_err(|e| write_err(&path, e))?;
    Ok(path)
}

/// Writes the rows as `sweep.csv` into `dir`, atomically: one line per setting with
/// `sampler,grid,steps,nfe,seconds,seconds_per_motion` and `value,low,high` of FD, R@1 and
/// TMR-score.
pub fn write_csv(dir: &Path, rows: &[SweepRow]) -> Result<std::path::PathBuf> {
    let path = dir.join("sweep.csv");
    let mut out = String::from(
        "sampler,grid,steps,nfe,guidance,motions,seconds,seconds_per_motion,fd,fd_low,fd_high,\
         r1,r1_low,r1_high,tmr_score,tmr_score_low,tmr_score_high,d_fd,d_fd_low,d_fd_high,\
         d_r1,d_r1_low,d_r1_high\n",
    );
    for r in rows {
        let paired = match &r.vs_baseline {
            Some(p) => format!(
                "{:.6},{:.6},{:.6},{:.6},{:.6},{:.6}",
                p.fd.value, p.fd.low, p.fd.high, p.r1.value, p.r1.low, p.r1.high
            ),
            None => ",,,,,".to_string(),
        };
        out.push_str(&format!(
            "{},{},{},{},{},{},{:.3},{:.5},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{paired}\n",
            r.sampler,
            r.grid,
            r.steps,
            r.nfe,
            r.guidance,
            r.motions,
            r.seconds,
            r.seconds_per_motion,
            r.fd.value,
            r.fd.low,
            r.fd.high,
            r.r1.value,
            r.r1.low,
            r.r1.high,
            r.tmr_score.value,
            r.tmr_score.low,
            r.tmr_score.high
        ));
    }
    crate::output::write_atomic(&path, out.as_bytes())?;
    Ok(path)
}

/// File name of a setting's generated-motion embeddings in a sweep folder:
/// `embeddings/<sampler>_<steps>[_<grid>].safetensors` (`+` spelled `p`).
pub fn embeddings_path(dir: &Path, setting: &SweepSetting) -> std::path::PathBuf {
    let mut name = format!(
        "{}_{}",
        setting.sampler.name().replace('+', "p"),
        setting.steps
    );
    if setting.grid != TimeGrid::Uniform {
        name.push('_');
        name.push_str(&setting.grid.label().replace('.', "_"));
    }
    dir.join("embeddings").join(format!("{name}.safetensors"))
}

/// Saves a setting's generated-motion TMR embeddings `[N, d]` into the sweep folder
/// ([`embeddings_path`]), atomically, so a later `--resume` can re-score it without sampling.
pub fn save_embeddings(dir: &Path, setting: &SweepSetting, emb: &candle::Tensor) -> Result<()> {
    let path = embeddings_path(dir, setting);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| write_err(parent, e))?;
    }
    crate::output::write_safetensors(
        &path,
        &std::collections::HashMap::from([("embeddings".to_string(), emb.clone())]),
    )
}

/// Loads the embeddings [`save_embeddings`] wrote, or `None` when the file is absent.
pub fn load_embeddings(dir: &Path, setting: &SweepSetting) -> Result<Option<candle::Tensor>> {
    let path = embeddings_path(dir, setting);
    if !path.is_file() {
        return Ok(None);
    }
    let mut map = tensor_io::safetensors::load(&path, &candle::Device::Cpu)
        .map_err(|e| crate::error::read_err(&path, e.reason))?;
    map.remove("embeddings")
        .map(Some)
        .ok_or_else(|| crate::error::read_err(&path, "no tensor \"embeddings\""))
}

/// Reads a `sweep.json` written by [`write_json`].
pub fn read_json(path: &Path) -> Result<Vec<SweepRow>> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::error::read_err(path, e))?;
    serde_json::from_str(&text).map_err(|e| crate::error::read_err(path, e))
}

/// Plots quality against network evaluations (log scale), one line per sampler on the uniform
/// grid with its interval band and one marker shape per other grid (in its sampler's colour,
/// without band, to keep the plot readable), in four panels: FD and R@1 with `baseline`'s
/// interval as a grey band, and, when the rows hold them, the paired differences to the
/// baseline (dFD, dR@1) with a line at 0. Writes a PNG to `path`, atomically.
pub fn plot_sweep(rows: &[SweepRow], baseline: Option<&SweepRow>, path: &Path) -> Result<()> {
    use motion_viz::chart::{Chart, Marker, Point, ReferenceBand, Scale, Series, default_palette};
    if rows.is_empty() {
        return Err(PipelineError::Option {
            name: "sweep".into(),
            reason: "no rows to plot".into(),
        });
    }
    // Colour per sampler, marker per grid.
    let mut samplers: Vec<&str> = Vec::new();
    let mut series: Vec<(String, &str, &str)> = Vec::new(); // (name, sampler, grid)
    for r in rows {
        if !samplers.contains(&r.sampler.as_str()) {
            samplers.push(&r.sampler);
        }
        if !series.iter().any(|(n, ..)| *n == r.series()) {
            series.push((r.series(), &r.sampler, &r.grid));
        }
    }
    series.sort_by_key(|(_, _, g)| *g != "uniform");
    let palette = default_palette();
    let color = |sampler: &str| {
        let i = samplers.iter().position(|s| *s == sampler).unwrap_or(0);
        palette[i % palette.len()]
    };
    let mut grids: Vec<&str> = series
        .iter()
        .map(|(_, _, g)| *g)
        .filter(|g| *g != "uniform")
        .collect();
    grids.dedup();
    let marker = |grid: &str| match grids.iter().position(|g| *g == grid) {
        None => Marker::Circle,
        Some(i) => [Marker::Square, Marker::Triangle, Marker::Diamond][i % 3],
    };
    let mut nfes: Vec<f64> = rows.iter().map(|r| r.nfe as f64).collect();
    nfes.sort_by(f64::total_cmp);
    nfes.dedup();

    type Pick = fn(&SweepRow) -> Option<Bounds>;
    let mut panels: Vec<(&str, &str, Pick, bool)> = vec![
        (
            "FD to the real motions (lower is better)",
            "FD",
            |r| Some(r.fd),
            false,
        ),
        (
            "R@1, text to motion (higher is better)",
            "R@1",
            |r| Some(r.r1),
            false,
        ),
    ];
    if rows.iter().any(|r| r.vs_baseline.is_some()) {
        panels.push((
            "paired dFD to the baseline (below 0: better)",
            "dFD",
            |r| r.vs_baseline.map(|p| p.fd),
            true,
        ));
        panels.push((
            "paired dR@1 to the baseline (above 0: better)",
            "dR@1",
            |r| r.vs_baseline.map(|p| p.r1),
            true,
        ));
    }
    let charts: Vec<Chart> = panels
        .iter()
        .map(|&(title, label, pick, paired)| Chart {
            title: title.to_string(),
            x_label: "NFE (guided)".into(),
            y_label: label.to_string(),
            x_scale: Scale::Log10,
            series: series
                .iter()
                .filter_map(|(name, sampler, grid)| {
                    let uniform = *grid == "uniform";
                    let mut points: Vec<Point> = rows
                        .iter()
                        .filter(|r| &r.series() == name)
                        .filter_map(|r| {
                            let b = pick(r)?;
                            Some(Point {
                                x: r.nfe as f64,
                                y: b.value,
                                band: uniform.then_some((b.low, b.high)),
                            })
                        })
                        .collect();
                    if points.is_empty() {
                        return None;
                    }
                    points.sort_by(|a, b| a.x.total_cmp(&b.x));
                    Some(
                        Series::new(name.clone(), color(sampler), points).with_marker(marker(grid)),
                    )
                })
                .collect(),
            reference: match (paired, baseline) {
                (true, Some(b)) => Some(ReferenceBand {
                    name: format!("{} {} (no difference)", b.sampler, b.steps),
                    value: 0.0,
                    low: 0.0,
                    high: 0.0,
                    color: [90, 90, 90],
                }),
                (false, Some(b)) => pick(b).map(|v| ReferenceBand {
                    name: format!("{} {} interval", b.sampler, b.steps),
                    value: v.value,
                    low: v.low,
                    high: v.high,
                    color: [90, 90, 90],
                }),
                (_, None) => None,
            },
            x_ticks: Some(nfes.clone()),
            ..Chart::default()
        })
        .collect();
    let image =
        motion_viz::chart::render_panels(&charts, 2, 760, 480).map_err(|e| write_err(path, e))?;
    motion_viz::write_png(path, &image).map_err(|e| write_err(path, e))
}

/// Re-plots a sweep folder's `sweep.json` (the first row is the baseline) to `sweep.png`.
pub fn replot(dir: &Path) -> Result<std::path::PathBuf> {
    let rows = read_json(&dir.join("sweep.json"))?;
    let png = dir.join("sweep.png");
    plot_sweep(&rows, rows.first(), &png)?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(sampler: &str, steps: usize, fd: (f64, f64), r1: (f64, f64), secs: f64) -> SweepRow {
        let b = |(low, high): (f64, f64)| Bounds {
            value: (low + high) / 2.0,
            low,
            high,
        };
        SweepRow {
            sampler: sampler.into(),
            steps,
            nfe: steps,
            seconds: secs,
            fd: b(fd),
            r1: b(r1),
            tmr_score: b((0.5, 0.6)),
            grid: "uniform".into(),
            guidance: 2.0,
            motions: 10,
            seconds_per_motion: secs / 10.0,
            metrics: Vec::new(),
            vs_baseline: None,
        }
    }

    #[test]
    fn settings_parse_and_print() {
        let s: SweepSetting = "unipc:5:logsnr"
            .parse()
            .unwrap_or(SweepSetting::new(SamplerKind::Ddpm, 1));
        assert_eq!(s.sampler, SamplerKind::UniPc);
        assert_eq!(s.steps, 5);
        assert_eq!(s.grid, TimeGrid::LogSnr);
        assert_eq!(s.to_string(), "unipc:5:logsnr");
        assert_eq!(
            "dpm++:10".parse::<SweepSetting>(),
            Ok(SweepSetting::new(SamplerKind::DpmSolverPp2M, 10))
        );
        for bad in ["ddpm", "ddpm:0", "ddpm:x", "euler:10", "ddim:10:cosine"] {
            assert!(bad.parse::<SweepSetting>().is_err(), "{bad}");
        }
        assert_eq!(default_settings().len(), 13);
        let dir = Path::new("sweep");
        assert_eq!(
            embeddings_path(dir, &"dpm++:5:power1.5".parse().unwrap_or(s)),
            dir.join("embeddings/dpmpp_5_power1_5.safetensors")
        );
    }

    #[test]
    fn the_cheapest_overlapping_setting_is_chosen() {
        let base = row("ddpm", 100, (1.0, 2.0), (0.2, 0.3), 100.0);
        let rows = vec![
            base.clone(),
            row("ddim", 10, (2.5, 3.0), (0.2, 0.3), 10.0), // FD misses
            row("dpm++", 10, (1.5, 2.5), (0.25, 0.35), 11.0),
            row("unipc", 10, (1.5, 2.5), (0.25, 0.35), 9.0),
            row("dpm++", 5, (1.8, 2.2), (0.1, 0.15), 5.0), // R@1 misses
        ];
        let best = fewest_nfe_matching(&rows, &base).map(SweepRow::setting);
        assert_eq!(best.as_deref(), Some("unipc:10"));
        assert!(!rows[1].matches(&base));
        assert!(rows[2].matches(&base));
    }
}
