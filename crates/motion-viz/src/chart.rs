//! Line charts for evaluation results: one line per series with markers at the points and
//! translucent interval bands (e.g. 95% confidence intervals), an optional horizontal reference
//! band, linear or log10 axes with "nice" ticks, a legend, and grids of charts
//! ([`render_panels`]). Everything is drawn by this crate (the bitmap font of `font8x8`, no
//! font files), anti-aliased, onto an [`image::RgbImage`]; output is deterministic.
//!
//! ```
//! use motion_viz::chart::{Chart, Point, Scale, Series, default_palette};
//! let palette = default_palette();
//! let mut chart = Chart::new("Sampler quality", "NFE", "FD");
//! chart.x_scale = Scale::Log10;
//! chart.series.push(Series::new("DDIM", palette[0], vec![
//!     Point::with_band(5.0, 0.9, 0.8, 1.0),
//!     Point::with_band(10.0, 0.5, 0.45, 0.55),
//!     Point::with_band(50.0, 0.3, 0.27, 0.33),
//! ]));
//! let img = chart.render(480, 320)?;
//! assert_eq!(img.dimensions(), (480, 320));
//! # Ok::<(), motion_viz::VizError>(())
//! ```
//!
//! Ticks follow the usual 1-2-5 rule for linear axes (Heckbert, "Nice numbers for graph
//! labels", Graphics Gems, 1990) and powers of ten (with 2 and 5 multiples on short ranges) for
//! log10 axes; the count adapts to the axis length so that labels never overlap.

use std::path::Path;

use crate::canvas::Rgb;
use crate::error::{Result, VizError, invalid};
use crate::text::{CELL, blend, draw_text, text_width, wrap};

/// Largest accepted image side in pixels, for one chart and for a whole grid of panels.
pub const MAX_SIDE: u32 = 8192;

/// Opacity of a series' interval band (and of its legend swatch).
pub const BAND_OPACITY: f32 = 0.2;

/// Opacity of the shaded interval of a [`ReferenceBand`].
pub const REFERENCE_OPACITY: f32 = 0.12;

/// Fraction of the data range added on each side of an automatic axis range.
const PADDING: f64 = 0.05;

const WHITE: Rgb = [255, 255, 255];
const TEXT: Rgb = [34, 34, 34];
const AXIS: Rgb = [70, 70, 70];
const GRID: Rgb = [228, 228, 228];
const LEGEND_BORDER: Rgb = [200, 200, 200];

/// How values map to positions along an axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scale {
    /// Position proportional to the value.
    #[default]
    Linear,
    /// Position proportional to `log10(value)`; every value on the axis must be positive.
    Log10,
}

/// One data point, optionally with an interval `band = (low, high)` drawn as a translucent band
/// around the line (the order of the two ends does not matter).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Horizontal position (data units).
    pub x: f64,
    /// Vertical position (data units).
    pub y: f64,
    /// Interval around `y`, e.g. a 95% confidence interval; `None` draws no band here.
    pub band: Option<(f64, f64)>,
}

impl Point {
    /// A point without a band.
    pub fn new(x: f64, y: f64) -> Self {
        Self { x, y, band: None }
    }

    /// A point with the interval `[low, high]` around it.
    pub fn with_band(x: f64, y: f64, low: f64, high: f64) -> Self {
        Self {
            x,
            y,
            band: Some((low, high)),
        }
    }
}

/// Shape of the markers of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Marker {
    /// Filled disc.
    #[default]
    Circle,
    /// Filled axis-aligned square.
    Square,
    /// Filled square rotated by 45 degrees.
    Diamond,
    /// Filled triangle pointing up.
    Triangle,
}

/// One line of a chart: markers at the points, a line joining them in order of `x`, and the
/// points' interval bands (consecutive points that both have a band are joined into one
/// translucent area; an isolated band is drawn as an error bar).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label (an empty name leaves the series out of the legend).
    pub name: String,
    /// Line, marker and band colour.
    pub color: Rgb,
    /// The data; points with a non-finite `x` or `y` are skipped, a band with a non-finite end
    /// is dropped.
    pub points: Vec<Point>,
    /// Marker shape.
    pub marker: Marker,
}

impl Series {
    /// A series with circle markers.
    pub fn new(name: impl Into<String>, color: Rgb, points: Vec<Point>) -> Self {
        Self {
            name: name.into(),
            color,
            points,
            marker: Marker::Circle,
        }
    }

    /// The same series with another marker shape.
    pub fn with_marker(mut self, marker: Marker) -> Self {
        self.marker = marker;
        self
    }
}

/// A horizontal reference: a dashed line at `value` and a lightly shaded band from `low` to
/// `high` across the whole plot (e.g. the confidence interval of a baseline sampler).
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceBand {
    /// Legend label, e.g. `"DDPM-100 (95% CI)"`.
    pub name: String,
    /// Where the dashed line goes (must be finite).
    pub value: f64,
    /// One end of the shaded band (a non-finite end leaves the band out).
    pub low: f64,
    /// The other end of the shaded band.
    pub high: f64,
    /// Line and band colour.
    pub color: Rgb,
}

/// Where the legend goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LegendPosition {
    /// Inside the plot, in the first corner of top right, top left, bottom left, bottom right
    /// where it hides no line, marker or reference line and almost no band; outside on the
    /// right when there is no such corner (or, when the image is too narrow for that, in the
    /// corner that hides the least).
    #[default]
    Auto,
    /// Outside the plot area, to its right.
    Right,
    /// Inside the plot, top right corner.
    TopRight,
    /// Inside the plot, top left corner.
    TopLeft,
    /// Inside the plot, bottom right corner.
    BottomRight,
    /// Inside the plot, bottom left corner.
    BottomLeft,
    /// No legend.
    Hidden,
}

/// A line chart: title, axis labels and scales, series, an optional reference band.
///
/// Axis ranges come from the data (points, bands and the reference band) with 5% padding on
/// each side, unless `x_range` / `y_range` fix them; data outside the range is clipped.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chart {
    /// Title, centred above the plot (wrapped to at most two lines).
    pub title: String,
    /// Label under the horizontal axis.
    pub x_label: String,
    /// Label of the vertical axis, written vertically (bottom to top) left of it.
    pub y_label: String,
    /// Horizontal scale.
    pub x_scale: Scale,
    /// Vertical scale.
    pub y_scale: Scale,
    /// The lines, drawn in order (later ones on top).
    pub series: Vec<Series>,
    /// Optional horizontal reference band.
    pub reference: Option<ReferenceBand>,
    /// Fixed horizontal range `(min, max)` instead of the automatic one.
    pub x_range: Option<(f64, f64)>,
    /// Fixed vertical range `(min, max)` instead of the automatic one.
    pub y_range: Option<(f64, f64)>,
    /// Explicit horizontal tick values (e.g. the evaluated NFEs) instead of automatic ones;
    /// values outside the range are dropped and labels that would overlap are thinned out.
    pub x_ticks: Option<Vec<f64>>,
    /// Explicit vertical tick values instead of automatic ones.
    pub y_ticks: Option<Vec<f64>>,
    /// Legend placement.
    pub legend: LegendPosition,
}

/// Eight well distinguishable colours on white: the first eight of Tableau 10 (the default
/// colour cycle of matplotlib): blue, orange, green, red, purple, brown, pink, grey.
pub fn default_palette() -> [Rgb; 8] {
    [
        [31, 119, 180],
        [255, 127, 14],
        [44, 160, 44],
        [214, 39, 40],
        [148, 103, 189],
        [140, 86, 75],
        [227, 119, 194],
        [127, 127, 127],
    ]
}

impl Chart {
    /// An empty chart with linear axes and an automatic legend.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            ..Self::default()
        }
    }

    /// Renders the chart on a white `width` x `height` image.
    ///
    /// Errors when a side is 0 or above [`MAX_SIDE`], the image is too small for the labels,
    /// no series has a finite point, a value on a log10 axis is not positive
    /// ([`VizError::NonPositiveOnLogAxis`]), the reference value is not finite, or a fixed
    /// range is empty or not finite.
    pub fn render(&self, width: u32, height: u32) -> Result<image::RgbImage> {
        self.render_with_layout(width, height).map(|(img, _)| img)
    }

    /// Renders the chart (see [`Chart::render`]) and writes it as a PNG file (atomically).
    pub fn write_png(&self, path: impl AsRef<Path>, width: u32, height: u32) -> Result<()> {
        crate::output::write_png(path, &self.render(width, height)?)
    }

    fn render_with_layout(&self, width: u32, height: u32) -> Result<(image::RgbImage, Layout)> {
        check_size("chart size", width, height)?;
        let data = Data::new(self)?;
        let metrics = Metrics::new(width, height);
        let entries = legend_entries(self);
        let layout = place(self, &data, &metrics, &entries, width, height)?;
        let mut img = image::RgbImage::from_pixel(width, height, image::Rgb(WHITE));
        draw(&mut img, self, &data, &layout, &entries);
        Ok((img, layout))
    }
}

/// Renders `panels` in a grid of `columns` columns (row by row), each panel
/// `panel_width` x `panel_height`, on a white background; unused cells of the last row stay
/// white. `columns` above the number of panels is reduced to it.
///
/// Errors on no panels, `columns == 0`, a grid side above [`MAX_SIDE`], or any panel's error
/// (see [`Chart::render`]; invalid-input messages name the panel).
pub fn render_panels(
    panels: &[Chart],
    columns: usize,
    panel_width: u32,
    panel_height: u32,
) -> Result<image::RgbImage> {
    if panels.is_empty() {
        return Err(invalid("panels", "no charts to render"));
    }
    if columns == 0 {
        return Err(invalid("columns", "0 (must be at least 1)"));
    }
    let cols = columns.min(panels.len());
    let rows = panels.len().div_ceil(cols);
    let total_w = cols as u64 * u64::from(panel_width);
    let total_h = rows as u64 * u64::from(panel_height);
    if total_w > u64::from(MAX_SIDE) || total_h > u64::from(MAX_SIDE) {
        return Err(invalid(
            "panel grid size",
            format!(
                "{cols} x {rows} panels of {panel_width}x{panel_height} make {total_w}x{total_h} \
                 (each side must be at most {MAX_SIDE})"
            ),
        ));
    }
    check_size("panel size", panel_width, panel_height)?;
    // Both fit in u32: checked against MAX_SIDE above.
    let mut img = image::RgbImage::from_pixel(total_w as u32, total_h as u32, image::Rgb(WHITE));
    for (i, chart) in panels.iter().enumerate() {
        let panel = chart
            .render(panel_width, panel_height)
            .map_err(|e| match e {
                VizError::InvalidInput { what, detail } => VizError::InvalidInput {
                    what,
                    detail: format!("panel {i} ({:?}): {detail}", chart.title),
                },
                other => other,
            })?;
        let x = (i % cols) as i64 * i64::from(panel_width);
        let y = (i / cols) as i64 * i64::from(panel_height);
        image::imageops::replace(&mut img, &panel, x, y);
    }
    Ok(img)
}

fn check_size(what: &'static str, width: u32, height: u32) -> Result<()> {
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(invalid(
            what,
            format!("{width}x{height} (each side must be in 1..={MAX_SIDE})"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Data preparation and axes.

/// A finite point; `band` is `(low, high)` with `low <= high`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Clean {
    x: f64,
    y: f64,
    band: Option<(f64, f64)>,
}

/// The chart's data, cleaned and sorted, with both axes.
#[derive(Debug)]
struct Data {
    /// Per series (same order as the chart's), finite points sorted by `x`.
    points: Vec<Vec<Clean>>,
    /// Reference `(value, optional (low, high))`.
    reference: Option<(f64, Option<(f64, f64)>)>,
    x: Axis,
    y: Axis,
}

/// One axis: its scale and range in data units (`lo < hi`, both positive on a log axis).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Axis {
    scale: Scale,
    lo: f64,
    hi: f64,
}

fn forward(scale: Scale, v: f64) -> f64 {
    match scale {
        Scale::Linear => v,
        Scale::Log10 => v.log10(),
    }
}

fn inverse(scale: Scale, v: f64) -> f64 {
    match scale {
        Scale::Linear => v,
        Scale::Log10 => 10f64.powf(v),
    }
}

impl Axis {
    /// Position of `v` along the axis: 0 at `lo`, 1 at `hi`.
    fn unit(&self, v: f64) -> f64 {
        let (a, b) = (forward(self.scale, self.lo), forward(self.scale, self.hi));
        (forward(self.scale, v) - a) / (b - a)
    }

    /// The automatic range around data spanning `[min, max]`: 5% padding on each side in the
    /// scale's space; a single value gets +-10% (linear, +-1 at 0) or +-0.5 decade (log10).
    fn fit(scale: Scale, min: f64, max: f64) -> Self {
        let (a, b) = (forward(scale, min), forward(scale, max));
        let span = b - a;
        let (lo, hi) = if span > 1e-12 * a.abs().max(b.abs()) && span > 0.0 {
            (a - PADDING * span, b + PADDING * span)
        } else {
            let half = match scale {
                Scale::Log10 => 0.5,
                Scale::Linear if a == 0.0 => 1.0,
                Scale::Linear => 0.1 * a.abs(),
            };
            (a - half, b + half)
        };
        Self {
            scale,
            lo: inverse(scale, lo),
            hi: inverse(scale, hi),
        }
    }
}

fn log_error(scale: Scale, series: &str, axis: &'static str, value: f64) -> Result<()> {
    if scale == Scale::Log10 && value <= 0.0 {
        return Err(VizError::NonPositiveOnLogAxis {
            series: series.to_string(),
            axis,
            value,
        });
    }
    Ok(())
}

fn fixed_range(what: &'static str, scale: Scale, range: (f64, f64)) -> Result<Axis> {
    let (lo, hi) = range;
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(invalid(
            what,
            format!("({lo}, {hi}): must be finite with min < max"),
        ));
    }
    if scale == Scale::Log10 && lo <= 0.0 {
        return Err(invalid(
            what,
            format!("({lo}, {hi}): a log10 axis needs min > 0"),
        ));
    }
    Ok(Axis { scale, lo, hi })
}

impl Data {
    fn new(chart: &Chart) -> Result<Self> {
        let mut points = Vec::with_capacity(chart.series.len());
        let (mut x_min, mut x_max) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut y_min, mut y_max) = (f64::INFINITY, f64::NEG_INFINITY);
        for s in &chart.series {
            let mut clean = Vec::with_capacity(s.points.len());
            for p in &s.points {
                if !(p.x.is_finite() && p.y.is_finite()) {
                    continue;
                }
                log_error(chart.x_scale, &s.name, "x", p.x)?;
                log_error(chart.y_scale, &s.name, "y", p.y)?;
                let band = match p.band {
                    Some((a, b)) if a.is_finite() && b.is_finite() => {
                        let (lo, hi) = (a.min(b), a.max(b));
                        log_error(chart.y_scale, &s.name, "band low", lo)?;
                        Some((lo, hi))
                    }
                    _ => None,
                };
                x_min = x_min.min(p.x);
                x_max = x_max.max(p.x);
                let (lo, hi) = band.unwrap_or((p.y, p.y));
                y_min = y_min.min(lo.min(p.y));
                y_max = y_max.max(hi.max(p.y));
                clean.push(Clean {
                    x: p.x,
                    y: p.y,
                    band,
                });
            }
            clean.sort_by(|a, b| a.x.total_cmp(&b.x));
            points.push(clean);
        }
        let n: usize = points.iter().map(Vec::len).sum();
        if n == 0 {
            return Err(invalid(
                "chart",
                format!(
                    "no finite points to plot ({} series{})",
                    chart.series.len(),
                    if chart.title.is_empty() {
                        String::new()
                    } else {
                        format!(", title {:?}", chart.title)
                    }
                ),
            ));
        }
        let reference = match &chart.reference {
            None => None,
            Some(r) => {
                if !r.value.is_finite() {
                    return Err(invalid(
                        "reference band",
                        format!("{:?}: value {} is not finite", r.name, r.value),
                    ));
                }
                log_error(chart.y_scale, &r.name, "reference", r.value)?;
                let band = if r.low.is_finite() && r.high.is_finite() {
                    let (lo, hi) = (r.low.min(r.high), r.low.max(r.high));
                    log_error(chart.y_scale, &r.name, "reference low", lo)?;
                    Some((lo, hi))
                } else {
                    None
                };
                let (lo, hi) = band.unwrap_or((r.value, r.value));
                y_min = y_min.min(lo.min(r.value));
                y_max = y_max.max(hi.max(r.value));
                Some((r.value, band))
            }
        };
        let x = match chart.x_range {
            Some(r) => fixed_range("x_range", chart.x_scale, r)?,
            None => Axis::fit(chart.x_scale, x_min, x_max),
        };
        let y = match chart.y_range {
            Some(r) => fixed_range("y_range", chart.y_scale, r)?,
            None => Axis::fit(chart.y_scale, y_min, y_max),
        };
        for (name, a) in [("x range", &x), ("y range", &y)] {
            let span = forward(a.scale, a.hi) - forward(a.scale, a.lo);
            if !(a.lo.is_finite() && a.hi.is_finite() && span.is_finite() && span > 0.0) {
                return Err(invalid(
                    "chart",
                    format!("the {name} ({}, {}) cannot be drawn", a.lo, a.hi),
                ));
            }
        }
        Ok(Self {
            points,
            reference,
            x,
            y,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Ticks.

/// A tick value and its label.
#[derive(Debug, Clone, PartialEq)]
struct Tick {
    value: f64,
    label: String,
}

/// `v` with `decimals` decimals, without a minus sign on zero.
fn format_fixed(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    match s.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => s,
    }
}

/// The shortest label of `v` at 10 significant digits: plain for magnitudes in `[1e-4, 1e6)`
/// (`"0.3"`, `"20"`, `"100000"`), otherwise scientific (`"1e6"`, `"2.5e-5"`).
fn format_compact(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v.is_finite() {
            "0".to_string()
        } else {
            v.to_string()
        };
    }
    let rounded: f64 = format!("{v:.9e}").parse().unwrap_or(v);
    if (1e-4..1e6).contains(&rounded.abs()) {
        format!("{rounded}")
    } else {
        format!("{rounded:e}")
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let m = if norm <= 1.0 + 1e-9 {
        1.0
    } else if norm <= 2.0 + 1e-9 {
        2.0
    } else if norm <= 5.0 + 1e-9 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// Multiples of a 1-2-5 step in `[lo, hi]`, about `target` intervals; labels share one number
/// of decimals (scientific notation for huge or tiny steps).
fn linear_ticks(lo: f64, hi: f64, target: usize) -> Vec<Tick> {
    let step = nice_step((hi - lo) / target.max(1) as f64);
    if !(step > 0.0 && step.is_finite()) {
        return Vec::new();
    }
    let k0 = (lo / step - 1e-9).ceil();
    let k1 = (hi / step + 1e-9).floor();
    if !(k1 >= k0 && k1 - k0 <= 1000.0) {
        return Vec::new();
    }
    let decimals = (-(step.log10() + 1e-9).floor()).max(0.0) as usize;
    let scientific = lo.abs().max(hi.abs()) >= 1e6 || step < 1e-4;
    (0..=(k1 - k0) as i64)
        .map(|i| {
            let value = (k0 + i as f64) * step;
            let label = if scientific {
                format_compact(value)
            } else {
                format_fixed(value, decimals)
            };
            Tick { value, label }
        })
        .collect()
}

/// Candidate tick sets of a log axis over `[lo, hi]` (`0 < lo < hi`), coarse to fine: powers
/// of ten every 100, 50, ..., 2, 1 decades, then multiples 1-2-5, 1-2-3-5 and 1..9 of the
/// decades; only sets with at least two ticks.
fn log_tick_sets(lo: f64, hi: f64) -> Vec<Vec<Tick>> {
    let e0 = lo.log10().floor() as i32;
    let e1 = hi.log10().ceil() as i32;
    let inside = |v: f64| v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9);
    let tick = |value: f64| Tick {
        value,
        label: format_compact(value),
    };
    let mut sets: Vec<Vec<Tick>> = Vec::new();
    for stride in [100, 50, 20, 10, 5, 3, 2, 1] {
        let set: Vec<Tick> = (e0..=e1)
            .filter(|e| e.rem_euclid(stride) == 0)
            .map(|e| 10f64.powi(e))
            .filter(|&v| inside(v))
            .map(tick)
            .collect();
        if set.len() >= 2 && !sets.contains(&set) {
            sets.push(set);
        }
    }
    let mantissas: [&[f64]; 3] = [
        &[1.0, 2.0, 5.0],
        &[1.0, 2.0, 3.0, 5.0],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
    ];
    if e1 - e0 <= 12 {
        for ms in mantissas {
            let set: Vec<Tick> = (e0..=e1)
                .flat_map(|e| ms.iter().map(move |m| m * 10f64.powi(e)))
                .filter(|&v| inside(v))
                .map(tick)
                .collect();
            if set.len() >= 2 && !sets.contains(&set) {
                sets.push(set);
            }
        }
    }
    sets
}

/// Which way an axis runs on screen (for label-collision checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Horizontal,
    Vertical,
}

/// Picks the ticks of `axis` drawn `len` pixels long: explicit `values` (thinned so labels do
/// not collide), or automatic ones. Linear: the densest 1-2-5 set with about one tick per
/// `spacing` pixels whose labels do not collide. Log10: the coarsest set with at least four
/// ticks whose labels fit (falling back to linear ticks on ranges under a decade or so).
fn choose_ticks(
    axis: &Axis,
    explicit: Option<&[f64]>,
    dir: Dir,
    len: f32,
    spacing: f32,
    scale: f32,
) -> Vec<Tick> {
    let fits = |ticks: &[Tick]| labels_fit(axis, ticks, dir, len, scale);
    if let Some(values) = explicit {
        let mut vs: Vec<f64> = values
            .iter()
            .copied()
            .filter(|v| v.is_finite() && (axis.scale == Scale::Linear || *v > 0.0))
            .filter(|&v| (-1e-9..=1.0 + 1e-9).contains(&axis.unit(v)))
            .collect();
        vs.sort_by(f64::total_cmp);
        vs.dedup();
        let ticks: Vec<Tick> = vs
            .into_iter()
            .map(|value| Tick {
                value,
                label: format_compact(value),
            })
            .collect();
        return thin(axis, ticks, dir, len, scale);
    }
    let max_count = ((len / spacing).floor() as usize).clamp(2, 10);
    let linear = |target: usize| linear_ticks(axis.lo, axis.hi, target);
    match axis.scale {
        Scale::Linear => {
            for target in (2..=max_count).rev() {
                let t = linear(target);
                if t.len() >= 2 && t.len() <= max_count + 1 && fits(&t) {
                    return t;
                }
            }
        }
        Scale::Log10 => {
            let mut sets = log_tick_sets(axis.lo, axis.hi);
            sets.push(linear(max_count.min(6)));
            let ok: Vec<&Vec<Tick>> = sets
                .iter()
                .filter(|t| t.len() >= 2 && t.len() <= max_count + 1 && fits(t))
                .collect();
            if let Some(t) = ok.iter().find(|t| t.len() >= 4) {
                return (*t).clone();
            }
            if let Some(t) = ok.iter().max_by_key(|t| t.len()) {
                return (*t).clone();
            }
        }
    }
    thin(axis, linear(2), dir, len, scale)
}

/// Whether the labels of `ticks` along an axis `len` pixels long keep clear of each other.
fn labels_fit(axis: &Axis, ticks: &[Tick], dir: Dir, len: f32, scale: f32) -> bool {
    ticks.windows(2).all(|w| {
        let d = ((axis.unit(w[1].value) - axis.unit(w[0].value)) as f32 * len).abs();
        match dir {
            Dir::Horizontal => {
                let need = 0.5 * (text_width(&w[0].label, scale) + text_width(&w[1].label, scale))
                    + 1.5 * CELL * scale;
                d >= need
            }
            Dir::Vertical => d >= 2.2 * CELL * scale,
        }
    })
}

/// Drops ticks whose labels would collide with the previous kept one.
fn thin(axis: &Axis, ticks: Vec<Tick>, dir: Dir, len: f32, scale: f32) -> Vec<Tick> {
    let mut kept: Vec<Tick> = Vec::with_capacity(ticks.len());
    for t in ticks {
        let clear = match kept.last() {
            None => true,
            Some(prev) => labels_fit(axis, &[prev.clone(), t.clone()], dir, len, scale),
        };
        if clear {
            kept.push(t);
        }
    }
    kept
}

// ---------------------------------------------------------------------------------------------
// Layout.

/// A rectangle in pixel coordinates (pixel `(i, j)` covers `[i, i + 1) x [j, j + 1)`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rect {
    x0: f32,
    y0: f32,
    x1: f32,
    y1: f32,
}

impl Rect {
    fn w(&self) -> f32 {
        self.x1 - self.x0
    }

    fn h(&self) -> f32 {
        self.y1 - self.y0
    }
}

/// Sizes derived from the image size: `u` is one "design pixel".
#[derive(Debug, Clone, Copy)]
struct Metrics {
    u: f32,
    /// Text scale of tick labels, axis labels and the legend.
    text: f32,
    /// Text scale of the title.
    title: f32,
    margin: f32,
    tick_len: f32,
    /// Half-width of series lines.
    line_hw: f32,
    /// Marker radius.
    marker_r: f32,
}

impl Metrics {
    fn new(width: u32, height: u32) -> Self {
        let short = width.min(height) as f32;
        let u = (short / 400.0).clamp(0.75, 4.0);
        // Half-integer font scales keep the 8 x 8 glyphs reasonably crisp.
        let text = ((1.25 * u) * 2.0).round().max(2.0) / 2.0;
        let title = ((1.25 * text) * 2.0).round() / 2.0;
        Self {
            u,
            text,
            title,
            margin: (10.0 * u).round(),
            tick_len: (5.0 * u).round().max(3.0),
            line_hw: 1.1 * u,
            marker_r: 3.6 * u,
        }
    }

    fn text_h(&self) -> f32 {
        CELL * self.text
    }
}

/// One legend row.
#[derive(Debug, Clone)]
struct LegendEntry {
    label: String,
    kind: EntryKind,
}

#[derive(Debug, Clone, Copy)]
enum EntryKind {
    Series {
        color: Rgb,
        marker: Marker,
        band: bool,
    },
    Reference {
        color: Rgb,
        band: bool,
    },
}

fn legend_entries(chart: &Chart) -> Vec<LegendEntry> {
    if chart.legend == LegendPosition::Hidden {
        return Vec::new();
    }
    let mut entries: Vec<LegendEntry> = chart
        .series
        .iter()
        .filter(|s| !s.name.trim().is_empty())
        .map(|s| LegendEntry {
            label: s.name.clone(),
            kind: EntryKind::Series {
                color: s.color,
                marker: s.marker,
                band: s
                    .points
                    .iter()
                    .any(|p| p.band.is_some_and(|(a, b)| a.is_finite() && b.is_finite())),
            },
        })
        .collect();
    if let Some(r) = &chart.reference
        && !r.name.trim().is_empty()
    {
        entries.push(LegendEntry {
            label: r.name.clone(),
            kind: EntryKind::Reference {
                color: r.color,
                band: r.low.is_finite() && r.high.is_finite(),
            },
        });
    }
    entries
}

/// Legend box geometry (size only; the position is in [`Layout::legend`]).
#[derive(Debug, Clone)]
struct LegendBox {
    /// Per entry, its label wrapped to one or two lines.
    labels: Vec<Vec<String>>,
    /// Per entry, the top of its row relative to the box top, and the row height.
    rows: Vec<(f32, f32)>,
    w: f32,
    h: f32,
    pad: f32,
    swatch_w: f32,
    gap: f32,
    /// Line pitch of wrapped labels.
    line_h: f32,
}

impl LegendBox {
    /// The legend of `entries` at most `max_w` pixels wide (longer labels wrap to two lines,
    /// then end with `...`).
    fn new(entries: &[LegendEntry], m: &Metrics, max_w: f32) -> Option<Self> {
        if entries.is_empty() {
            return None;
        }
        let pad = (7.0 * m.u).round();
        let swatch_w = (26.0 * m.u).round();
        let gap = (7.0 * m.u).round();
        let row_h = (m.text_h() + 7.0 * m.u)
            .max(2.0 * m.marker_r + 6.0 * m.u)
            .round();
        let line_h = (1.3 * m.text_h()).round();
        let char_w = CELL * m.text;
        let room = max_w - 2.0 * pad - swatch_w - gap;
        let max_chars = ((room / char_w).floor() as usize).max(4);
        let labels: Vec<Vec<String>> = entries
            .iter()
            .map(|e| wrap(&e.label, max_chars, 2))
            .collect();
        let text_w = labels
            .iter()
            .flatten()
            .map(|l| text_width(l, m.text))
            .fold(0.0, f32::max);
        let mut rows = Vec::with_capacity(labels.len());
        let mut y = pad;
        for l in &labels {
            let h = row_h + line_h * (l.len().max(1) - 1) as f32;
            rows.push((y, h));
            y += h;
        }
        Some(Self {
            w: (2.0 * pad + swatch_w + gap + text_w).ceil(),
            h: (y + pad - 2.0 * m.u).ceil(),
            labels,
            rows,
            pad,
            swatch_w,
            gap,
            line_h,
        })
    }
}

/// Where everything goes.
#[derive(Debug, Clone)]
struct Layout {
    m: Metrics,
    plot: Rect,
    x_ticks: Vec<Tick>,
    y_ticks: Vec<Tick>,
    title: Vec<String>,
    title_y: f32,
    x_label: String,
    x_label_y: f32,
    y_label: String,
    y_label_x: f32,
    tick_label_gap: f32,
    legend: Option<(LegendBox, Rect, bool)>,
    x: Axis,
    y: Axis,
}

impl Layout {
    /// Screen position of a data point.
    fn map(&self, x: f64, y: f64) -> [f32; 2] {
        [
            self.plot.x0 + self.x.unit(x) as f32 * self.plot.w(),
            self.plot.y1 - self.y.unit(y) as f32 * self.plot.h(),
        ]
    }

    fn map_y(&self, y: f64) -> f32 {
        self.plot.y1 - self.y.unit(y) as f32 * self.plot.h()
    }
}

/// Where the legend is asked to go in one layout attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    None,
    Outside,
    Inside,
}

/// Lays out the chart, resolving [`LegendPosition::Auto`].
fn place(
    chart: &Chart,
    data: &Data,
    m: &Metrics,
    entries: &[LegendEntry],
    width: u32,
    height: u32,
) -> Result<Layout> {
    let w = width as f32;
    let corners = [
        LegendPosition::TopRight,
        LegendPosition::TopLeft,
        LegendPosition::BottomLeft,
        LegendPosition::BottomRight,
    ];
    let legend_inside = LegendBox::new(entries, m, 0.45 * w);
    match (chart.legend, legend_inside) {
        (LegendPosition::Hidden, _) | (_, None) => {
            layout(chart, data, m, None, Slot::None, width, height)
        }
        (LegendPosition::Right, Some(_)) => {
            let lb = LegendBox::new(entries, m, 0.35 * w);
            layout(chart, data, m, lb, Slot::Outside, width, height)
        }
        (LegendPosition::Auto, Some(lb)) => {
            let mut inside = layout(
                chart,
                data,
                m,
                Some(lb.clone()),
                Slot::Inside,
                width,
                height,
            )?;
            let fits = lb.w <= 0.5 * inside.plot.w() && lb.h <= 0.6 * inside.plot.h();
            // Where it goes if it can go neither in a free corner nor outside.
            let mut best: Option<(usize, f32, Rect)> = None;
            if fits {
                for corner in corners {
                    let r = corner_rect(&inside, &lb, corner);
                    let (hits, band) = overlap(&inside, data, r);
                    if hits == 0 && band <= 0.1 * lb.w * lb.h {
                        inside.legend = Some((lb, r, true));
                        return Ok(inside);
                    }
                    if best.is_none_or(|(h, b, _)| (hits, band) < (h, b)) {
                        best = Some((hits, band, r));
                    }
                }
            }
            let outside = LegendBox::new(entries, m, 0.35 * w);
            match layout(chart, data, m, outside, Slot::Outside, width, height) {
                Ok(l) => Ok(l),
                Err(_) => {
                    let r = best.map_or_else(
                        || corner_rect(&inside, &lb, LegendPosition::TopRight),
                        |(_, _, r)| r,
                    );
                    inside.legend = Some((lb, r, true));
                    Ok(inside)
                }
            }
        }
        (corner, Some(lb)) => {
            let mut l = layout(
                chart,
                data,
                m,
                Some(lb.clone()),
                Slot::Inside,
                width,
                height,
            )?;
            let r = corner_rect(&l, &lb, corner);
            l.legend = Some((lb, r, true));
            Ok(l)
        }
    }
}

/// The legend rectangle in a corner of the plot.
fn corner_rect(l: &Layout, lb: &LegendBox, corner: LegendPosition) -> Rect {
    let inset = (8.0 * l.m.u).round();
    let (left, top) = match corner {
        LegendPosition::TopLeft => (true, true),
        LegendPosition::BottomLeft => (true, false),
        LegendPosition::BottomRight => (false, false),
        _ => (false, true),
    };
    let x0 = if left {
        l.plot.x0 + inset
    } else {
        l.plot.x1 - inset - lb.w
    };
    let y0 = if top {
        l.plot.y0 + inset
    } else {
        l.plot.y1 - inset - lb.h
    };
    Rect {
        x0,
        y0,
        x1: x0 + lb.w,
        y1: y0 + lb.h,
    }
}

/// How much data a legend at `r` would hide: the number of line, marker and reference-line
/// samples inside it (with a margin of a marker radius) and the band area (pixels) under it.
fn overlap(l: &Layout, data: &Data, r: Rect) -> (usize, f32) {
    let pad = l.m.marker_r + l.m.line_hw + 2.0 * l.m.u;
    let inside = |p: [f32; 2]| {
        p[0] >= r.x0 - pad && p[0] <= r.x1 + pad && p[1] >= r.y0 - pad && p[1] <= r.y1 + pad
    };
    let mut hits = 0usize;
    let mut band = 0.0f32;
    for pts in &data.points {
        let screen: Vec<[f32; 2]> = pts.iter().map(|p| l.map(p.x, p.y)).collect();
        hits += screen.iter().filter(|&&p| inside(p)).count();
        for seg in screen.windows(2) {
            let (a, b) = (seg[0], seg[1]);
            let n = ((b[0] - a[0]).hypot(b[1] - a[1]).ceil() as usize).clamp(1, 100_000);
            hits += (0..=n)
                .map(|k| {
                    let t = k as f32 / n as f32;
                    [a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])]
                })
                .filter(|&p| inside(p))
                .count();
        }
        for trap in band_trapezoids(l, pts) {
            let x0 = trap.xa.max(r.x0);
            let x1 = trap.xb.min(r.x1);
            let mut x = x0.floor() + 0.5;
            while x < x1 {
                if x >= x0 {
                    let (top, bot) = trap.at(x);
                    band += (bot.min(r.y1) - top.max(r.y0)).max(0.0);
                }
                x += 1.0;
            }
        }
    }
    if let Some((value, _)) = data.reference {
        let y = l.map_y(value);
        if y >= r.y0 - pad && y <= r.y1 + pad {
            hits += 1;
        }
    }
    (hits, band)
}

/// Lays out title, axes and legend for a legend in `slot`.
fn layout(
    chart: &Chart,
    data: &Data,
    m: &Metrics,
    legend: Option<LegendBox>,
    slot: Slot,
    width: u32,
    height: u32,
) -> Result<Layout> {
    let (w, h) = (width as f32, height as f32);
    let th = m.text_h();
    let char_w = CELL * m.text;
    let title_char_w = CELL * m.title;
    let label_gap = (4.0 * m.u).round();
    let axis_w = m.u.round().max(1.0);

    // Title: up to two lines over the full width.
    let title_chars = (((w - 2.0 * m.margin) / title_char_w).floor() as usize).max(1);
    let title = wrap(&chart.title, title_chars, 2);
    let title_line_h = CELL * m.title * 1.3;
    let title_y = m.margin;
    let top = if title.is_empty() {
        m.margin + 0.5 * th
    } else {
        (m.margin + title_line_h * title.len() as f32 + 6.0 * m.u).round()
    };
    let has_x_label = !chart.x_label.trim().is_empty();
    let x_label_y = h - m.margin - th;
    let bottom = (m.margin
        + if has_x_label { th + 6.0 * m.u } else { 0.0 }
        + th
        + m.tick_len
        + label_gap
        + axis_w)
        .round();
    let plot_h = h - top - bottom;
    let min_plot = 40.0;
    let too_small = |what: &str| {
        invalid(
            "chart size",
            format!("{width}x{height} is too small for the {what} (plot area under 40 px)"),
        )
    };
    if plot_h < min_plot {
        return Err(too_small("title and axis labels"));
    }
    let y_ticks = choose_ticks(
        &data.y,
        chart.y_ticks.as_deref(),
        Dir::Vertical,
        plot_h,
        (55.0 * m.u).max(2.5 * th),
        m.text,
    );
    let y_tick_w = y_ticks
        .iter()
        .map(|t| text_width(&t.label, m.text))
        .fold(0.0, f32::max);
    let has_y_label = !chart.y_label.trim().is_empty();
    let y_label_x = m.margin;
    let left = (m.margin
        + if has_y_label { th + 8.0 * m.u } else { 0.0 }
        + y_tick_w
        + label_gap
        + m.tick_len
        + axis_w)
        .round();
    let right = match (&legend, slot) {
        (Some(lb), Slot::Outside) => (m.margin + lb.w + 10.0 * m.u).round(),
        _ => (m.margin + 2.0 * char_w).round(),
    };
    let plot_w = w - left - right;
    if plot_w < min_plot {
        return Err(too_small("tick labels and legend"));
    }
    let plot = Rect {
        x0: left,
        y0: top,
        x1: left + plot_w,
        y1: top + plot_h,
    };
    let x_ticks = choose_ticks(
        &data.x,
        chart.x_ticks.as_deref(),
        Dir::Horizontal,
        plot_w,
        (80.0 * m.u).max(6.0 * char_w),
        m.text,
    );
    let x_label = wrap(&chart.x_label, ((plot_w / char_w) as usize).max(1), 1)
        .into_iter()
        .next()
        .unwrap_or_default();
    let y_label = wrap(&chart.y_label, ((plot_h / char_w) as usize).max(1), 1)
        .into_iter()
        .next()
        .unwrap_or_default();
    let mut l = Layout {
        m: *m,
        plot,
        x_ticks,
        y_ticks,
        title,
        title_y,
        x_label,
        x_label_y,
        y_label,
        y_label_x,
        tick_label_gap: label_gap,
        legend: None,
        x: data.x,
        y: data.y,
    };
    if let (Some(lb), Slot::Outside) = (legend, slot) {
        let x0 = (plot.x1 + 10.0 * m.u).round();
        let r = Rect {
            x0,
            y0: plot.y0,
            x1: x0 + lb.w,
            y1: plot.y0 + lb.h,
        };
        l.legend = Some((lb, r, false));
    }
    Ok(l)
}

// ---------------------------------------------------------------------------------------------
// Rasterisation.

/// A coverage mask over a clip rectangle; shapes are accumulated, then blended once, so
/// overlapping parts of one stroke do not darken.
#[derive(Debug)]
struct Mask {
    x0: i64,
    y0: i64,
    w: i64,
    h: i64,
    a: Vec<f32>,
}

impl Mask {
    /// A mask over the pixels inside `clip` (rounded to whole pixels).
    fn new(clip: Rect) -> Self {
        let x0 = clip.x0.round() as i64;
        let y0 = clip.y0.round() as i64;
        let w = (clip.x1.round() as i64 - x0).max(0);
        let h = (clip.y1.round() as i64 - y0).max(0);
        Self {
            x0,
            y0,
            w,
            h,
            a: vec![0.0; (w * h) as usize],
        }
    }

    /// The pixel range `[lo, hi)` of the mask along x and y that a box touches.
    fn span(&self, x0: f32, x1: f32, y0: f32, y1: f32) -> (i64, i64, i64, i64) {
        (
            (x0.floor() as i64).max(self.x0),
            (x1.ceil() as i64).min(self.x0 + self.w),
            (y0.floor() as i64).max(self.y0),
            (y1.ceil() as i64).min(self.y0 + self.h),
        )
    }

    fn index(&self, x: i64, y: i64) -> usize {
        ((y - self.y0) * self.w + (x - self.x0)) as usize
    }

    fn max_at(&mut self, x: i64, y: i64, c: f32) {
        let k = self.index(x, y);
        if c > self.a[k] {
            self.a[k] = c;
        }
    }

    /// A segment with round caps and half-width `hw` (a disc when `a == b`).
    fn segment(&mut self, a: [f32; 2], b: [f32; 2], hw: f32) {
        if !a.iter().chain(&b).all(|c| c.is_finite()) {
            return;
        }
        let r = hw + 1.0;
        let (x0, x1, y0, y1) = self.span(
            a[0].min(b[0]) - r,
            a[0].max(b[0]) + r,
            a[1].min(b[1]) - r,
            a[1].max(b[1]) + r,
        );
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let len2 = dx * dx + dy * dy;
        for y in y0..y1 {
            let py = y as f32 + 0.5;
            for x in x0..x1 {
                let px = x as f32 + 0.5;
                let t = if len2 > 0.0 {
                    (((px - a[0]) * dx + (py - a[1]) * dy) / len2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let d = (px - a[0] - t * dx).hypot(py - a[1] - t * dy);
                let c = (hw + 0.5 - d).clamp(0.0, 1.0);
                if c > 0.0 {
                    self.max_at(x, y, c);
                }
            }
        }
    }

    /// A filled convex polygon, anti-aliased by 4 x 4 supersampling.
    fn convex(&mut self, pts: &[[f32; 2]]) {
        const SUB: usize = 4;
        if pts.len() < 3 || !pts.iter().flatten().all(|c| c.is_finite()) {
            return;
        }
        let area: f32 = (0..pts.len())
            .map(|i| {
                let (p, q) = (pts[i], pts[(i + 1) % pts.len()]);
                p[0] * q[1] - q[0] * p[1]
            })
            .sum();
        let sign = if area < 0.0 { -1.0 } else { 1.0 };
        let fold =
            |f: fn(f32, f32) -> f32, k: usize, init: f32| pts.iter().map(|p| p[k]).fold(init, f);
        let (x0, x1, y0, y1) = self.span(
            fold(f32::min, 0, f32::INFINITY),
            fold(f32::max, 0, f32::NEG_INFINITY),
            fold(f32::min, 1, f32::INFINITY),
            fold(f32::max, 1, f32::NEG_INFINITY),
        );
        let inside = |x: f32, y: f32| {
            (0..pts.len()).all(|i| {
                let (p, q) = (pts[i], pts[(i + 1) % pts.len()]);
                sign * ((q[0] - p[0]) * (y - p[1]) - (q[1] - p[1]) * (x - p[0])) >= 0.0
            })
        };
        for y in y0..y1 {
            for x in x0..x1 {
                let mut hits = 0;
                for sy in 0..SUB {
                    for sx in 0..SUB {
                        let fx = x as f32 + (sx as f32 + 0.5) / SUB as f32;
                        let fy = y as f32 + (sy as f32 + 0.5) / SUB as f32;
                        if inside(fx, fy) {
                            hits += 1;
                        }
                    }
                }
                if hits > 0 {
                    self.max_at(x, y, hits as f32 / (SUB * SUB) as f32);
                }
            }
        }
    }

    /// Adds the area between two straight edges over `[xa, xb)` (one band trapezoid), by
    /// exact vertical coverage at 4 sub-columns per pixel; adjacent trapezoids tile exactly.
    fn trapezoid(&mut self, t: &Trapezoid) {
        const SUB: usize = 4;
        if t.xb.partial_cmp(&t.xa) != Some(std::cmp::Ordering::Greater) {
            return;
        }
        let (x0, x1, _, _) = self.span(t.xa, t.xb, 0.0, 0.0);
        for x in x0..x1 {
            for k in 0..SUB {
                let sx = x as f32 + (k as f32 + 0.5) / SUB as f32;
                if sx < t.xa || sx >= t.xb {
                    continue;
                }
                let (top, bot) = t.at(sx);
                let (_, _, y0, y1) = self.span(0.0, 0.0, top, bot);
                for y in y0..y1 {
                    let cover = (bot.min(y as f32 + 1.0) - top.max(y as f32)).max(0.0);
                    let i = self.index(x, y);
                    self.a[i] += cover / SUB as f32;
                }
            }
        }
    }

    /// Blends `color` at `opacity` times the coverage into `img`.
    fn composite(&self, img: &mut image::RgbImage, color: Rgb, opacity: f32) {
        let (iw, ih) = (i64::from(img.width()), i64::from(img.height()));
        for y in self.y0.max(0)..(self.y0 + self.h).min(ih) {
            for x in self.x0.max(0)..(self.x0 + self.w).min(iw) {
                let c = self.a[self.index(x, y)];
                if c > 0.0 {
                    let p = img.get_pixel_mut(x as u32, y as u32);
                    p.0 = blend(p.0, color, c.min(1.0) * opacity);
                }
            }
        }
    }
}

/// One piece of a band between two consecutive points, in screen coordinates (`top <= bot`).
#[derive(Debug, Clone, Copy)]
struct Trapezoid {
    xa: f32,
    xb: f32,
    top: (f32, f32),
    bot: (f32, f32),
}

impl Trapezoid {
    /// Top and bottom of the band at `x`.
    fn at(&self, x: f32) -> (f32, f32) {
        let t = ((x - self.xa) / (self.xb - self.xa)).clamp(0.0, 1.0);
        (
            self.top.0 + t * (self.top.1 - self.top.0),
            self.bot.0 + t * (self.bot.1 - self.bot.0),
        )
    }
}

/// The band pieces of one series: between consecutive points that both have a band.
fn band_trapezoids(l: &Layout, pts: &[Clean]) -> Vec<Trapezoid> {
    pts.windows(2)
        .filter_map(|w| {
            let ((la, ha), (lb, hb)) = (w[0].band?, w[1].band?);
            let (xa, xb) = (l.map(w[0].x, 0.0)[0], l.map(w[1].x, 0.0)[0]);
            (xb > xa).then(|| Trapezoid {
                xa,
                xb,
                top: (l.map_y(ha), l.map_y(hb)),
                bot: (l.map_y(la), l.map_y(lb)),
            })
        })
        .collect()
}

/// Fills whole pixels of `[x0, x1) x [y0, y1)` (rounded), blending at `opacity`.
fn fill_rect(img: &mut image::RgbImage, r: Rect, color: Rgb, opacity: f32) {
    let (iw, ih) = (img.width() as f32, img.height() as f32);
    let x0 = r.x0.round().clamp(0.0, iw) as u32;
    let x1 = r.x1.round().clamp(0.0, iw) as u32;
    let y0 = r.y0.round().clamp(0.0, ih) as u32;
    let y1 = r.y1.round().clamp(0.0, ih) as u32;
    for y in y0..y1 {
        for x in x0..x1 {
            let p = img.get_pixel_mut(x, y);
            p.0 = blend(p.0, color, opacity);
        }
    }
}

/// A crisp outline `width` pixels wide just outside `r`.
fn stroke_rect(img: &mut image::RgbImage, r: Rect, color: Rgb, width: f32) {
    let sides = [
        Rect {
            x0: r.x0 - width,
            y0: r.y0 - width,
            x1: r.x1 + width,
            y1: r.y0,
        },
        Rect {
            x0: r.x0 - width,
            y0: r.y1,
            x1: r.x1 + width,
            y1: r.y1 + width,
        },
        Rect {
            x0: r.x0 - width,
            y0: r.y0,
            x1: r.x0,
            y1: r.y1,
        },
        Rect {
            x0: r.x1,
            y0: r.y0,
            x1: r.x1 + width,
            y1: r.y1,
        },
    ];
    for s in sides {
        fill_rect(img, s, color, 1.0);
    }
}

/// Text centred horizontally on `cx` with its top at `y`, on whole pixels.
fn text_centered(img: &mut image::RgbImage, text: &str, cx: f32, y: f32, scale: f32, color: Rgb) {
    let x = (cx - 0.5 * text_width(text, scale)).round();
    draw_text(img, text, x, y.round(), scale, color);
}

/// Text rotated a quarter turn counter-clockwise (reading bottom to top), its left edge at `x`
/// and centred vertically on `cy`.
fn text_vertical(img: &mut image::RgbImage, text: &str, x: f32, cy: f32, scale: f32, color: Rgb) {
    let tw = text_width(text, scale).ceil() as u32 + 2;
    let th = (CELL * scale).ceil() as u32 + 2;
    let mut buf = image::RgbImage::new(tw, th);
    draw_text(&mut buf, text, 1.0, 1.0, scale, WHITE);
    let rot = image::imageops::rotate270(&buf);
    let ox = x.round() as i64 - 1;
    let oy = (cy - 0.5 * tw as f32).round() as i64;
    let (iw, ih) = (i64::from(img.width()), i64::from(img.height()));
    for (rx, ry, p) in rot.enumerate_pixels() {
        let (px, py) = (ox + i64::from(rx), oy + i64::from(ry));
        if p.0[0] > 0 && (0..iw).contains(&px) && (0..ih).contains(&py) {
            let q = img.get_pixel_mut(px as u32, py as u32);
            q.0 = blend(q.0, color, f32::from(p.0[0]) / 255.0);
        }
    }
}

/// Adds a marker of `shape` and radius `r` centred on `c` to `mask`.
fn marker_shape(mask: &mut Mask, shape: Marker, c: [f32; 2], r: f32) {
    let [x, y] = c;
    match shape {
        Marker::Circle => mask.segment(c, c, r),
        Marker::Square => {
            let h = 0.88 * r;
            mask.convex(&[
                [x - h, y - h],
                [x + h, y - h],
                [x + h, y + h],
                [x - h, y + h],
            ]);
        }
        Marker::Diamond => {
            let h = 1.25 * r;
            mask.convex(&[[x, y - h], [x + h, y], [x, y + h], [x - h, y]]);
        }
        Marker::Triangle => {
            let h = 1.3 * r;
            mask.convex(&[
                [x, y - h],
                [x + 0.866 * h, y + 0.5 * h],
                [x - 0.866 * h, y + 0.5 * h],
            ]);
        }
    }
}

/// Draws markers with a thin white halo so they stand out from lines and bands.
fn draw_markers(
    img: &mut image::RgbImage,
    clip: Rect,
    shape: Marker,
    centres: &[[f32; 2]],
    r: f32,
    halo: f32,
    color: Rgb,
) {
    let mut outer = Mask::new(clip);
    let mut inner = Mask::new(clip);
    for &c in centres {
        marker_shape(&mut outer, shape, c, r + halo);
        marker_shape(&mut inner, shape, c, r);
    }
    outer.composite(img, WHITE, 1.0);
    inner.composite(img, color, 1.0);
}

/// Adds a horizontal dashed line from `x0` to `x1` at `y`.
fn dashed(mask: &mut Mask, x0: f32, x1: f32, y: f32, hw: f32, dash: f32, gap: f32) {
    let mut x = x0;
    while x < x1 {
        let end = (x + dash).min(x1);
        mask.segment([x + hw, y], [(end - hw).max(x + hw), y], hw);
        x += dash + gap;
    }
}

fn draw(
    img: &mut image::RgbImage,
    chart: &Chart,
    data: &Data,
    l: &Layout,
    entries: &[LegendEntry],
) {
    let m = &l.m;
    let plot = l.plot;
    let axis_w = m.u.round().max(1.0);
    let grid_w = (0.8 * m.u).round().max(1.0);

    // Grid.
    for t in &l.x_ticks {
        let x = l.map(t.value, 0.0)[0].floor();
        fill_rect(
            img,
            Rect {
                x0: x,
                y0: plot.y0,
                x1: x + grid_w,
                y1: plot.y1,
            },
            GRID,
            1.0,
        );
    }
    for t in &l.y_ticks {
        let y = l.map_y(t.value).floor();
        fill_rect(
            img,
            Rect {
                x0: plot.x0,
                y0: y,
                x1: plot.x1,
                y1: y + grid_w,
            },
            GRID,
            1.0,
        );
    }

    // Reference band, series bands.
    let ref_hw = 0.8 * m.u;
    if let (Some((value, band)), Some(r)) = (data.reference, &chart.reference) {
        if let Some((lo, hi)) = band {
            let mut mask = Mask::new(plot);
            mask.trapezoid(&Trapezoid {
                xa: plot.x0,
                xb: plot.x1,
                top: (l.map_y(hi), l.map_y(hi)),
                bot: (l.map_y(lo), l.map_y(lo)),
            });
            mask.composite(img, r.color, REFERENCE_OPACITY);
        }
        let mut mask = Mask::new(plot);
        let y = l.map_y(value);
        dashed(&mut mask, plot.x0, plot.x1, y, ref_hw, 7.0 * m.u, 4.0 * m.u);
        mask.composite(img, r.color, 0.9);
    }
    for (s, pts) in chart.series.iter().zip(&data.points) {
        let mut mask = Mask::new(plot);
        for t in band_trapezoids(l, pts) {
            mask.trapezoid(&t);
        }
        mask.composite(img, s.color, BAND_OPACITY);
        // Bands of points with no banded neighbour: error bars.
        let mut bars = Mask::new(plot);
        for (i, p) in pts.iter().enumerate() {
            let Some((lo, hi)) = p.band else { continue };
            let joined = |j: Option<usize>| {
                j.and_then(|j| pts.get(j))
                    .is_some_and(|q| q.band.is_some() && q.x != p.x)
            };
            if joined(i.checked_sub(1)) || joined(Some(i + 1)) {
                continue;
            }
            let x = l.map(p.x, 0.0)[0];
            let (top, bot) = (l.map_y(hi), l.map_y(lo));
            let cap = 1.6 * m.marker_r;
            bars.segment([x, top], [x, bot], 0.7 * m.u);
            bars.segment([x - cap, top], [x + cap, top], 0.7 * m.u);
            bars.segment([x - cap, bot], [x + cap, bot], 0.7 * m.u);
        }
        bars.composite(img, s.color, 0.75);
    }

    // Lines, then markers over all lines.
    let screens: Vec<Vec<[f32; 2]>> = data
        .points
        .iter()
        .map(|pts| pts.iter().map(|p| l.map(p.x, p.y)).collect())
        .collect();
    for (s, pts) in chart.series.iter().zip(&screens) {
        let mut mask = Mask::new(plot);
        for w in pts.windows(2) {
            mask.segment(w[0], w[1], m.line_hw);
        }
        mask.composite(img, s.color, 1.0);
    }
    for (s, pts) in chart.series.iter().zip(&screens) {
        draw_markers(img, plot, s.marker, pts, m.marker_r, 1.2 * m.u, s.color);
    }

    // Axes box, ticks, tick labels.
    stroke_rect(img, plot, AXIS, axis_w);
    let th = m.text_h();
    for t in &l.x_ticks {
        let x = l.map(t.value, 0.0)[0].floor();
        let y0 = plot.y1 + axis_w;
        fill_rect(
            img,
            Rect {
                x0: x,
                y0,
                x1: x + axis_w,
                y1: y0 + m.tick_len,
            },
            AXIS,
            1.0,
        );
        let ly = y0 + m.tick_len + l.tick_label_gap;
        text_centered(img, &t.label, x + 0.5 * axis_w, ly, m.text, TEXT);
    }
    for t in &l.y_ticks {
        let y = l.map_y(t.value).floor();
        let x1 = plot.x0 - axis_w;
        fill_rect(
            img,
            Rect {
                x0: x1 - m.tick_len,
                y0: y,
                x1,
                y1: y + axis_w,
            },
            AXIS,
            1.0,
        );
        let tx = x1 - m.tick_len - l.tick_label_gap - text_width(&t.label, m.text);
        let ty = y + 0.5 * axis_w - 0.5 * th;
        draw_text(img, &t.label, tx.round(), ty.round(), m.text, TEXT);
    }

    // Axis labels and title.
    let cx = 0.5 * (plot.x0 + plot.x1);
    if !l.x_label.is_empty() {
        text_centered(img, &l.x_label, cx, l.x_label_y, m.text, TEXT);
    }
    if !l.y_label.is_empty() {
        let cy = 0.5 * (plot.y0 + plot.y1);
        text_vertical(img, &l.y_label, l.y_label_x, cy, m.text, TEXT);
    }
    let w = img.width() as f32;
    for (i, line) in l.title.iter().enumerate() {
        let tw = text_width(line, m.title);
        let x = (cx - 0.5 * tw).clamp(m.margin, (w - m.margin - tw).max(m.margin));
        let y = l.title_y + i as f32 * CELL * m.title * 1.3;
        draw_text(img, line, x.round(), y.round(), m.title, TEXT);
    }

    if let Some((lb, r, inside)) = &l.legend {
        draw_legend(img, lb, *r, *inside, entries, m);
    }
}

fn draw_legend(
    img: &mut image::RgbImage,
    lb: &LegendBox,
    r: Rect,
    inside: bool,
    entries: &[LegendEntry],
    m: &Metrics,
) {
    fill_rect(img, r, WHITE, if inside { 0.9 } else { 1.0 });
    stroke_rect(img, r, LEGEND_BORDER, 1.0);
    let th = m.text_h();
    for ((e, lines), &(row_y, row_h)) in entries.iter().zip(&lb.labels).zip(&lb.rows) {
        let cy = (r.y0 + row_y + 0.5 * row_h - m.u).round();
        let bh = 0.4 * (row_h - lb.line_h * (lines.len().max(1) - 1) as f32);
        let sx0 = r.x0 + lb.pad;
        let sx1 = sx0 + lb.swatch_w;
        let swatch = Rect {
            x0: sx0,
            y0: cy - bh,
            x1: sx1,
            y1: cy + bh,
        };
        let row = Rect {
            x0: sx0 - 2.0 * m.u,
            y0: cy - row_h,
            x1: sx1 + 2.0 * m.u,
            y1: cy + row_h,
        };
        let cyl = cy + 0.5;
        match e.kind {
            EntryKind::Series {
                color,
                marker,
                band,
            } => {
                if band {
                    fill_rect(img, swatch, color, BAND_OPACITY);
                }
                let mut mask = Mask::new(row);
                mask.segment([sx0, cyl], [sx1, cyl], m.line_hw);
                mask.composite(img, color, 1.0);
                let c = [0.5 * (sx0 + sx1), cyl];
                draw_markers(img, row, marker, &[c], m.marker_r, 1.2 * m.u, color);
            }
            EntryKind::Reference { color, band } => {
                if band {
                    fill_rect(img, swatch, color, REFERENCE_OPACITY);
                }
                let mut mask = Mask::new(row);
                let dash = 0.3 * lb.swatch_w;
                dashed(
                    &mut mask,
                    sx0,
                    sx1 + 0.5,
                    cyl,
                    0.8 * m.u,
                    dash,
                    (lb.swatch_w - 3.0 * dash) / 2.0,
                );
                mask.composite(img, color, 0.9);
            }
        }
        let tx = sx1 + lb.gap;
        let text_h = th + lb.line_h * (lines.len().max(1) - 1) as f32;
        for (k, line) in lines.iter().enumerate() {
            let ty = cy - 0.5 * text_h + 0.5 + k as f32 * lb.line_h;
            draw_text(img, line, tx.round(), ty.round(), m.text, TEXT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn labels(ticks: &[Tick]) -> Vec<&str> {
        ticks.iter().map(|t| t.label.as_str()).collect()
    }

    fn values(ticks: &[Tick]) -> Vec<f64> {
        ticks.iter().map(|t| t.value).collect()
    }

    fn axis(scale: Scale, lo: f64, hi: f64) -> Axis {
        Axis { scale, lo, hi }
    }

    #[test]
    fn linear_ticks_are_nice_for_several_ranges() {
        assert_eq!(
            labels(&linear_ticks(0.0, 1.0, 5)),
            ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
        );
        // No float noise such as "0.30000000000000004".
        assert_eq!(
            labels(&linear_ticks(0.27, 0.61, 4)),
            ["0.3", "0.4", "0.5", "0.6"]
        );
        assert_eq!(
            labels(&linear_ticks(0.27, 0.61, 7)),
            ["0.30", "0.35", "0.40", "0.45", "0.50", "0.55", "0.60"]
        );
        assert_eq!(
            labels(&linear_ticks(-3.2, 7.9, 6)),
            ["-2", "0", "2", "4", "6"]
        );
        assert_eq!(
            labels(&linear_ticks(-0.04, 0.04, 4)),
            ["-0.04", "-0.02", "0.00", "0.02", "0.04"]
        );
        assert_eq!(
            labels(&linear_ticks(120.0, 980.0, 5)),
            ["200", "400", "600", "800"]
        );
        assert_eq!(
            labels(&linear_ticks(1.0e6, 3.1e6, 5)),
            ["1e6", "1.5e6", "2e6", "2.5e6", "3e6"]
        );
        assert_eq!(labels(&linear_ticks(0.0, 2e-5, 2)), ["0", "1e-5", "2e-5"]);
        assert_eq!(nice_step(0.13), 0.2);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(1.0), 1.0);
    }

    #[test]
    fn log_ticks_use_decades_then_2_and_5_multiples() {
        let nfe = axis(Scale::Log10, 2.6, 115.0);
        let t = choose_ticks(&nfe, None, Dir::Horizontal, 560.0, 80.0, 1.5);
        assert_eq!(labels(&t), ["5", "10", "20", "50", "100"]);
        let wide = axis(Scale::Log10, 0.5, 2e4);
        let t = choose_ticks(&wide, None, Dir::Horizontal, 560.0, 80.0, 1.5);
        assert_eq!(labels(&t), ["1", "10", "100", "1000", "10000"]);
        let huge = axis(Scale::Log10, 1e-3, 1e9);
        let t = choose_ticks(&huge, None, Dir::Horizontal, 560.0, 80.0, 1.5);
        assert_eq!(labels(&t), ["0.001", "1", "1000", "1e6", "1e9"]);
        // Under a decade: linear ticks at log positions.
        let narrow = axis(Scale::Log10, 40.0, 60.0);
        let t = choose_ticks(&narrow, None, Dir::Horizontal, 560.0, 80.0, 1.5);
        assert_eq!(labels(&t), ["40", "45", "50", "55", "60"]);
        // Short vertical axis: fewer ticks, labels kept apart.
        let t = choose_ticks(&nfe, None, Dir::Vertical, 80.0, 40.0, 1.5);
        assert!(
            t.len() >= 2 && labels_fit(&nfe, &t, Dir::Vertical, 80.0, 1.5),
            "{t:?}"
        );
        assert_eq!(values(&log_tick_sets(0.9, 11.0)[0]), [1.0, 10.0]);
    }

    #[test]
    fn explicit_ticks_are_filtered_and_thinned() {
        let nfe = axis(Scale::Log10, 2.6, 115.0);
        let t = choose_ticks(
            &nfe,
            Some(&[3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0, -1.0, f64::NAN]),
            Dir::Horizontal,
            560.0,
            80.0,
            1.5,
        );
        assert_eq!(labels(&t), ["3", "5", "10", "20", "50", "100"]);
        // 3, 4 and 5 are close on a short log axis: some are dropped, none collide.
        let t = choose_ticks(
            &nfe,
            Some(&[3.0, 4.0, 5.0, 100.0]),
            Dir::Horizontal,
            150.0,
            80.0,
            1.5,
        );
        assert!(labels_fit(&nfe, &t, Dir::Horizontal, 150.0, 1.5));
        assert_eq!(labels(&t).first(), Some(&"3"));
        assert!(t.len() < 4);
    }

    #[test]
    fn labels_are_compact() {
        assert_eq!(format_compact(0.1 + 0.2), "0.3");
        assert_eq!(format_compact(20.0), "20");
        assert_eq!(format_compact(100000.0), "100000");
        assert_eq!(format_compact(1e6), "1e6");
        assert_eq!(format_compact(2.5e-5), "2.5e-5");
        assert_eq!(format_compact(10f64.powi(-3)), "0.001");
        assert_eq!(format_compact(-0.0), "0");
        assert_eq!(format_fixed(-0.0001, 2), "0.00");
        assert_eq!(format_fixed(-1.5, 1), "-1.5");
    }

    #[test]
    fn mapping_is_linear_or_logarithmic() {
        let lin = axis(Scale::Linear, -1.0, 3.0);
        assert_eq!(lin.unit(-1.0), 0.0);
        assert_eq!(lin.unit(1.0), 0.5);
        assert_eq!(lin.unit(3.0), 1.0);
        let log = axis(Scale::Log10, 1.0, 100.0);
        assert!((log.unit(10.0) - 0.5).abs() < 1e-12);
        assert!((log.unit(100.0) - 1.0).abs() < 1e-12);
        // Padding: 5% of the span on each side, in the scale's space.
        let fit = Axis::fit(Scale::Linear, 0.0, 10.0);
        assert!((fit.lo + 0.5).abs() < 1e-12 && (fit.hi - 10.5).abs() < 1e-12);
        let fit = Axis::fit(Scale::Log10, 1.0, 100.0);
        assert!((fit.lo.log10() + 0.1).abs() < 1e-12 && (fit.hi.log10() - 2.1).abs() < 1e-12);
        let single = Axis::fit(Scale::Linear, 0.0, 0.0);
        assert_eq!((single.lo, single.hi), (-1.0, 1.0));
        let single = Axis::fit(Scale::Linear, 5.0, 5.0);
        assert_eq!((single.lo, single.hi), (4.5, 5.5));
    }

    fn demo_chart() -> Chart {
        let pal = default_palette();
        let mut chart = Chart::new("FD vs NFE", "NFE", "FD");
        chart.x_scale = Scale::Log10;
        chart.series.push(Series::new(
            "A",
            pal[0],
            vec![
                Point::with_band(3.0, 2.0, 1.6, 2.4),
                Point::with_band(10.0, 1.0, 0.8, 1.2),
                Point::with_band(100.0, 0.5, 0.4, 0.6),
            ],
        ));
        chart.series.push(
            Series::new(
                "B",
                pal[1],
                vec![Point::new(3.0, 3.0), Point::new(100.0, 1.5)],
            )
            .with_marker(Marker::Square),
        );
        chart.reference = Some(ReferenceBand {
            name: "ref".into(),
            value: 0.3,
            low: 0.25,
            high: 0.35,
            color: [90, 90, 90],
        });
        chart
    }

    #[test]
    fn ranges_include_bands_and_the_reference() -> TestResult {
        let data = Data::new(&demo_chart())?;
        // y data spans 0.25 (reference low) .. 3.0, padded by 5%.
        let span = 3.0 - 0.25;
        assert!((data.y.lo - (0.25 - 0.05 * span)).abs() < 1e-12);
        assert!((data.y.hi - (3.0 + 0.05 * span)).abs() < 1e-12);
        let decades = 100f64.log10() - 3f64.log10();
        assert!((data.x.lo.log10() - (3f64.log10() - 0.05 * decades)).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut chart = demo_chart();
        assert!(matches!(
            chart.render(0, 100),
            Err(VizError::InvalidInput { .. })
        ));
        assert!(matches!(
            chart.render(100, 9000),
            Err(VizError::InvalidInput { .. })
        ));
        assert!(matches!(
            chart.render(30, 20),
            Err(VizError::InvalidInput { .. })
        ));
        assert!(matches!(
            render_panels(&[chart.clone()], 0, 100, 100),
            Err(VizError::InvalidInput { .. })
        ));
        assert!(matches!(
            render_panels(&[], 2, 100, 100),
            Err(VizError::InvalidInput { .. })
        ));
        assert!(matches!(
            render_panels(&[chart.clone(), chart.clone()], 2, 5000, 300),
            Err(VizError::InvalidInput { .. })
        ));

        let empty = Chart::new("empty", "x", "y");
        assert!(matches!(
            empty.render(300, 200),
            Err(VizError::InvalidInput { what: "chart", .. })
        ));
        let mut nan = Chart::new("nan", "x", "y");
        nan.series.push(Series::new(
            "s",
            [0, 0, 0],
            vec![Point::new(f64::NAN, 1.0), Point::new(1.0, f64::INFINITY)],
        ));
        assert!(matches!(
            nan.render(300, 200),
            Err(VizError::InvalidInput { what: "chart", .. })
        ));

        chart.series[1].points.push(Point::new(0.0, 1.0));
        match chart.render(300, 200) {
            Err(VizError::NonPositiveOnLogAxis {
                series,
                axis,
                value,
            }) => {
                assert_eq!((series.as_str(), axis, value), ("B", "x", 0.0));
            }
            other => panic!("expected a log-axis error, got {other:?}"),
        }
        let mut chart = demo_chart();
        chart.x_range = Some((5.0, 5.0));
        assert!(matches!(
            chart.render(300, 200),
            Err(VizError::InvalidInput {
                what: "x_range",
                ..
            })
        ));
        chart.x_range = Some((0.0, 5.0));
        assert!(matches!(
            chart.render(300, 200),
            Err(VizError::InvalidInput {
                what: "x_range",
                ..
            })
        ));
        let mut wide = Chart::new("wide", "x", "y");
        wide.series.push(Series::new(
            "s",
            [0, 0, 0],
            vec![Point::new(-1e308, 0.0), Point::new(1e308, 1.0)],
        ));
        assert!(matches!(
            wide.render(300, 200),
            Err(VizError::InvalidInput { what: "chart", .. })
        ));
        let mut chart = demo_chart();
        chart.reference = Some(ReferenceBand {
            name: "r".into(),
            value: f64::NAN,
            low: 0.0,
            high: 1.0,
            color: [0; 3],
        });
        assert!(matches!(
            chart.render(300, 200),
            Err(VizError::InvalidInput {
                what: "reference band",
                ..
            })
        ));
    }

    #[test]
    fn non_finite_points_are_skipped() -> TestResult {
        let mut chart = demo_chart();
        chart.series[0].points.push(Point::new(f64::NAN, 1.0));
        chart.series[0]
            .points
            .push(Point::with_band(50.0, f64::INFINITY, 0.0, 1.0));
        chart.series[0].points[0].band = Some((f64::NAN, 2.0));
        let data = Data::new(&chart)?;
        assert_eq!(data.points[0].len(), 3);
        assert_eq!(data.points[0][0].band, None);
        assert_eq!(chart.render(320, 240)?.dimensions(), (320, 240));
        Ok(())
    }

    fn count(img: &image::RgbImage, color: Rgb, tol: u8) -> usize {
        img.pixels()
            .filter(|p| p.0.iter().zip(&color).all(|(a, b)| a.abs_diff(*b) <= tol))
            .count()
    }

    #[test]
    fn render_draws_series_bands_and_reference() -> TestResult {
        let chart = demo_chart();
        let (img, l) = chart.render_with_layout(400, 300)?;
        assert_eq!(img.dimensions(), (400, 300));
        for s in &chart.series {
            assert!(
                count(&img, s.color, 0) > 20,
                "series {} colour missing",
                s.name
            );
        }
        // Inside series A's band, halfway between two points and below the line: the band
        // colour blended over white at 20%.
        let band = blend(WHITE, chart.series[0].color, BAND_OPACITY);
        let [x, y] = l.map(30.0f64.sqrt(), 1.3);
        let p = img.get_pixel(x as u32, y as u32).0;
        assert!(
            p.iter().zip(&band).all(|(a, b)| a.abs_diff(*b) <= 2),
            "{p:?} vs {band:?}"
        );
        assert!(count(&img, band, 1) > 100);
        // The reference band, and nothing outside the plot but text, ticks and the legend.
        let reference = blend(WHITE, [90, 90, 90], REFERENCE_OPACITY);
        assert!(count(&img, reference, 1) > 100);
        assert_eq!(img.get_pixel(1, 1).0, WHITE);
        // Deterministic.
        assert_eq!(chart.render(400, 300)?, img);
        Ok(())
    }

    #[test]
    fn legend_avoids_data_or_moves_outside() -> TestResult {
        let legend_of = |c: &Chart, w: u32, h: u32| -> std::result::Result<_, VizError> {
            let (_, l) = c.render_with_layout(w, h)?;
            Ok((l.legend.clone().map(|(_, r, inside)| (r, inside)), l))
        };
        // A falling curve leaves the top right corner free.
        let mut falling = Chart::new("falling", "x", "y");
        falling.series.push(Series::new(
            "down",
            [0, 0, 200],
            (0..10)
                .map(|i| Point::new(i as f64, 1.0 / (1.0 + i as f64)))
                .collect(),
        ));
        let (legend, l) = legend_of(&falling, 400, 300)?;
        let Some((r, true)) = legend else {
            return Err(format!("expected an inside legend, got {legend:?}").into());
        };
        assert!(r.x1 > 0.5 * (l.plot.x0 + l.plot.x1) && r.y0 < 0.5 * (l.plot.y0 + l.plot.y1));
        assert_eq!(overlap(&l, &Data::new(&falling)?, r), (0, 0.0));
        // Lines through all four corners: the legend goes outside, right of the plot.
        let mut cross = Chart::new("cross", "x", "y");
        for (name, a, b) in [("up", 0.0, 1.0), ("down", 1.0, 0.0)] {
            let pts = (0..=10)
                .map(|i| Point::new(f64::from(i), a + (b - a) * f64::from(i) / 10.0))
                .collect();
            cross.series.push(Series::new(name, [200, 0, 0], pts));
        }
        let (legend, l) = legend_of(&cross, 400, 300)?;
        assert!(legend.is_some_and(|(r, inside)| !inside && r.x0 > l.plot.x1 && r.x1 <= 400.0));
        // Too narrow for an outside legend: it stays inside rather than failing.
        let (legend, _) = legend_of(&cross, 160, 240)?;
        assert!(legend.is_some_and(|(_, inside)| inside));
        // Forced outside on the right; hidden.
        let mut right = demo_chart();
        right.legend = LegendPosition::Right;
        let (legend, l) = legend_of(&right, 400, 300)?;
        assert!(legend.is_some_and(|(r, inside)| !inside && r.x0 > l.plot.x1 && r.x1 <= 400.0));
        right.legend = LegendPosition::Hidden;
        assert!(legend_of(&right, 400, 300)?.0.is_none());
        Ok(())
    }

    #[test]
    fn panels_tile_charts_in_a_grid() -> TestResult {
        let a = demo_chart();
        let mut b = demo_chart();
        b.x_scale = Scale::Linear;
        b.title = "linear".into();
        let img = render_panels(&[a.clone(), b.clone(), a.clone()], 2, 200, 150)?;
        assert_eq!(img.dimensions(), (400, 300));
        let first = a.render(200, 150)?;
        assert_eq!(
            image::imageops::crop_imm(&img, 0, 0, 200, 150).to_image(),
            first
        );
        let second = b.render(200, 150)?;
        assert_eq!(
            image::imageops::crop_imm(&img, 200, 0, 200, 150).to_image(),
            second
        );
        // The unused cell stays white.
        assert!(
            image::imageops::crop_imm(&img, 200, 150, 200, 150)
                .to_image()
                .pixels()
                .all(|p| p.0 == WHITE)
        );
        // More columns than panels: one row.
        assert_eq!(render_panels(&[a], 4, 200, 150)?.dimensions(), (200, 150));
        Ok(())
    }

    #[test]
    fn palette_colours_are_distinct() {
        let p = default_palette();
        for i in 0..p.len() {
            for j in i + 1..p.len() {
                let d: u32 = (0..3).map(|k| u32::from(p[i][k].abs_diff(p[j][k]))).sum();
                assert!(d > 60, "{i} and {j} too close");
            }
        }
    }
}
