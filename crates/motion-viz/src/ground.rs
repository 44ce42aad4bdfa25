//! The stage of a motion video: a sky gradient, an infinite ground plane with an anti-aliased
//! grid that fades into the horizon, a soft shadow under the body, and polylines drawn flat on
//! the ground (the root trajectory).
//!
//! The ground is ray-cast per pixel instead of rasterised as geometry: a pixel's ray
//! `origin + t * dir` meets the plane `x . up = h` at `t = (h - origin . up) / (dir . up)`, so the
//! plane has no near-plane clipping problems and no edge. Grid lines are anti-aliased
//! analytically: the distance to the nearest line is divided by the screen-space derivative of the
//! plane coordinate (estimated from the neighbouring pixels' hit points), the technique of
//! procedural texture filtering (Ebert et al., "Texturing and Modeling: A Procedural Approach",
//! ch. 2, "antialiasing with fwidth"). The shadow is a blurred height-weighted splat of the body's
//! points on a small grid under it (an "ambient occlusion blob", no light transport).

use crate::camera::{Camera, Projection};
use crate::canvas::{Canvas, Rgb};
use crate::math::{Vec3, add, dot, greater, scale, sub};
use crate::text::blend;

/// Everything the ground pass needs besides the camera.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stage {
    /// World up (unit) and the two horizontal axes, `e1 x e2 = up`.
    pub up: Vec3,
    pub e1: Vec3,
    pub e2: Vec3,
    /// Height of the ground plane along `up`.
    pub height: f32,
    pub sky_top: Rgb,
    pub sky_horizon: Rgb,
    pub ground: Rgb,
    pub grid: Rgb,
    /// Grid spacing (world units).
    pub spacing: f32,
    /// Grid line half-width in output pixels.
    pub line_px: f32,
    /// Horizontal `(u, v)` centre of the lit region; the ground fades into `sky_horizon` between
    /// `fade.0` and `fade.1` world units from it.
    pub centre: [f32; 2],
    pub fade: (f32, f32),
}

impl Stage {
    /// Horizontal plane coordinates of a world point.
    pub fn uv(&self, p: Vec3) -> [f32; 2] {
        [dot(p, self.e1), dot(p, self.e2)]
    }

    /// Fade factor in `[0, 1]` (1 = fully faded) at horizontal distance `d` from the centre.
    pub fn fade_at(&self, uv: [f32; 2]) -> f32 {
        let d = ((uv[0] - self.centre[0]).powi(2) + (uv[1] - self.centre[1]).powi(2)).sqrt();
        smoothstep(self.fade.0, self.fade.1, d)
    }
}

fn smoothstep(a: f32, b: f32, x: f32) -> f32 {
    if b <= a {
        return if x < a { 0.0 } else { 1.0 };
    }
    let t = ((x - a) / (b - a)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// A soft shadow on a small grid of the ground plane.
#[derive(Debug, Clone)]
pub(crate) struct ShadowMap {
    u0: f32,
    v0: f32,
    cell: f32,
    nu: usize,
    nv: usize,
    data: Vec<f32>,
}

impl ShadowMap {
    /// Builds the shadow of `points` (world) over the ground of `stage`; `size` is the body's
    /// height (sets the blur radii), `strength` the darkest darkening in `[0, 1]`.
    pub fn build(points: &[Vec3], stage: &Stage, size: f32, strength: f32) -> Option<Self> {
        if points.is_empty() || !greater(strength, 0.0) {
            return None;
        }
        let (mut lo, mut hi) = ([f32::INFINITY; 2], [f32::NEG_INFINITY; 2]);
        for &p in points {
            let uv = stage.uv(p);
            for k in 0..2 {
                lo[k] = lo[k].min(uv[k]);
                hi[k] = hi[k].max(uv[k]);
            }
        }
        let size = size.max(1e-3);
        let pad = 0.3 * size;
        let cell = ((hi[0] - lo[0]).max(hi[1] - lo[1]) + 2.0 * pad) / 56.0;
        if !(cell > 0.0 && cell.is_finite()) {
            return None;
        }
        let nu = (((hi[0] - lo[0]) + 2.0 * pad) / cell).ceil() as usize + 1;
        let nv = (((hi[1] - lo[1]) + 2.0 * pad) / cell).ceil() as usize + 1;
        let (u0, v0) = (lo[0] - pad, lo[1] - pad);
        let mut occ = vec![0.0f32; nu * nv];
        let mut contact = vec![0.0f32; nu * nv];
        let contact_h = 0.08 * size;
        for &p in points {
            let [u, v] = stage.uv(p);
            let (i, j) = (((u - u0) / cell) as usize, ((v - v0) / cell) as usize);
            if i >= nu || j >= nv {
                continue;
            }
            let k = j * nu + i;
            let h = dot(p, stage.up) - stage.height;
            occ[k] = 1.0;
            contact[k] = contact[k].max((1.0 - h / contact_h).clamp(0.0, 1.0));
        }
        let r_occ = ((0.09 * size) / cell).round().max(1.0) as usize;
        let r_contact = ((0.025 * size) / cell).round().max(1.0) as usize;
        for _ in 0..3 {
            box_blur(&mut occ, nu, nv, r_occ);
            box_blur(&mut contact, nu, nv, r_contact);
        }
        let data = occ
            .iter()
            .zip(&contact)
            .map(|(&o, &c)| (strength * (0.55 * o + 1.1 * c)).min(strength))
            .collect();
        Some(Self {
            u0,
            v0,
            cell,
            nu,
            nv,
            data,
        })
    }

    /// Whether `(u, v)` lies inside the map (outside it the darkening is 0).
    pub fn covers(&self, u: f32, v: f32) -> bool {
        let (x, y) = ((u - self.u0) / self.cell, (v - self.v0) / self.cell);
        x >= 0.5 && y >= 0.5 && x < self.nu as f32 - 0.5 && y < self.nv as f32 - 0.5
    }

    /// Bilinear darkening at plane coordinates `(u, v)` (0 outside the map).
    pub fn sample(&self, u: f32, v: f32) -> f32 {
        let x = (u - self.u0) / self.cell - 0.5;
        let y = (v - self.v0) / self.cell - 0.5;
        if !(x >= 0.0 && y >= 0.0) {
            return 0.0;
        }
        let (i, j) = (x as usize, y as usize);
        if i + 1 >= self.nu || j + 1 >= self.nv {
            return 0.0;
        }
        let (fx, fy) = (x - i as f32, y - j as f32);
        let k = j * self.nu + i;
        let d = &self.data;
        let top = d[k] + (d[k + 1] - d[k]) * fx;
        let bottom = d[k + self.nu] + (d[k + self.nu + 1] - d[k + self.nu]) * fx;
        top + (bottom - top) * fy
    }
}

/// In-place separable box blur of radius `r` (edges clamp to zero outside).
fn box_blur(data: &mut [f32], nu: usize, nv: usize, r: usize) {
    let norm = 1.0 / (2 * r + 1) as f32;
    let mut line = Vec::with_capacity(nu.max(nv));
    for j in 0..nv {
        line.clear();
        line.extend_from_slice(&data[j * nu..(j + 1) * nu]);
        blur_line(&line, r, norm, |i, v| data[j * nu + i] = v);
    }
    for i in 0..nu {
        line.clear();
        line.extend((0..nv).map(|j| data[j * nu + i]));
        blur_line(&line, r, norm, |j, v| data[j * nu + i] = v);
    }
}

fn blur_line(src: &[f32], r: usize, norm: f32, mut out: impl FnMut(usize, f32)) {
    let n = src.len();
    let mut acc: f32 = src.iter().take(r + 1).sum();
    for i in 0..n {
        out(i, acc * norm);
        if i + r + 1 < n {
            acc += src[i + r + 1];
        }
        if i >= r {
            acc -= src[i - r];
        }
    }
}

/// Rays of the camera through internal pixel centres: `origin(x, y)` and `dir(x, y)` are affine
/// in the pixel coordinates for both projections.
struct Rays {
    o0: Vec3,
    ox: Vec3,
    oy: Vec3,
    d0: Vec3,
    dx: Vec3,
    dy: Vec3,
}

impl Rays {
    fn new(cam: &Camera, w: usize, h: usize) -> Self {
        let aspect = w as f32 / h as f32;
        let right = cam.dir_to_world([1.0, 0.0, 0.0]);
        let cup = cam.dir_to_world([0.0, 1.0, 0.0]);
        let fwd = cam.forward();
        // ndc_x = 2 (x + 0.5) / w - 1, ndc_y = 1 - 2 (y + 0.5) / h.
        let (sx, sy) = (2.0 / w as f32, -2.0 / h as f32);
        let (cx, cy) = (1.0 / w as f32 - 1.0, 1.0 - 1.0 / h as f32);
        match cam.projection() {
            Projection::Perspective { fov_y, .. } => {
                let t = (0.5 * fov_y).tan();
                let (kx, ky) = (t * aspect, t);
                Self {
                    o0: cam.eye(),
                    ox: [0.0; 3],
                    oy: [0.0; 3],
                    d0: add(fwd, add(scale(right, cx * kx), scale(cup, cy * ky))),
                    dx: scale(right, sx * kx),
                    dy: scale(cup, sy * ky),
                }
            }
            Projection::Orthographic { half_height } => {
                let (kx, ky) = (half_height * aspect, half_height);
                Self {
                    o0: add(cam.eye(), add(scale(right, cx * kx), scale(cup, cy * ky))),
                    ox: scale(right, sx * kx),
                    oy: scale(cup, sy * ky),
                    d0: fwd,
                    dx: [0.0; 3],
                    dy: [0.0; 3],
                }
            }
        }
    }
}

/// Paints the sky and the ground (grid, fade, shadow) over the whole canvas.
///
/// The stage is smooth (its grid lines are anti-aliased analytically), so it is evaluated once
/// per output pixel and written to all `factor x factor` samples of that pixel; supersampling
/// still smooths the edges of what is drawn over it. Rows are processed as plain `f32` arrays
/// without branches, so the compiler vectorises them.
pub(crate) fn draw_stage(
    canvas: &mut Canvas,
    cam: &Camera,
    stage: &Stage,
    shadow: Option<&ShadowMap>,
) {
    let (w, h) = canvas.internal_size();
    let f = canvas.factor() as usize;
    let (ow, oh) = (w / f, h / f);
    let rays = Rays::new(cam, w, h);
    let up = stage.up;
    // Output pixel X has its centre at internal pixel coordinate X f + (f - 1) / 2 (the rays
    // already add the half pixel).
    let half = (f as f32 - 1.0) * 0.5;
    let ff = f as f32;
    let e = [stage.e1, stage.e2];
    let proj = |v: Vec3| [dot(v, e[0]), dot(v, e[1]), dot(v, up)];
    let (o0, ox, oy) = (proj(rays.o0), proj(rays.ox), proj(rays.oy));
    let (d0, dx, dy) = (proj(rays.d0), proj(rays.dx), proj(rays.dy));
    let ray_len2 = |x: f32, y: f32| {
        let d = add(add(rays.d0, scale(rays.dx, x)), scale(rays.dy, y));
        dot(d, d)
    };
    let mut cur = HitRow::new(ow + 1);
    let mut next = HitRow::new(ow + 1);
    let row_of = |yo: usize, r: &mut HitRow| {
        let y = yo as f32 * ff + half;
        // Per-row constants of the affine ray pieces (plane coordinates u, v and height).
        let (ou, ov, oz) = (o0[0] + oy[0] * y, o0[1] + oy[1] * y, o0[2] + oy[2] * y);
        let (du, dv, dz) = (d0[0] + dy[0] * y, d0[1] + dy[1] * y, d0[2] + dy[2] * y);
        for xo in 0..r.u.len() {
            let x = xo as f32 * ff + half;
            let t = (stage.height - (oz + ox[2] * x)) / (dz + dx[2] * x);
            let hit = t > 0.0 && t < f32::MAX;
            let t = if hit { t } else { 0.0 };
            r.u[xo] = ou + ox[0] * x + t * (du + dx[0] * x);
            r.v[xo] = ov + ox[1] * x + t * (dv + dx[1] * x);
            r.hit[xo] = if hit { 1.0 } else { 0.0 };
            r.dz[xo] = dz + dx[2] * x;
        }
    };
    let rgb = |c: Rgb| c.map(f32::from);
    let (ground, grid, horizon, top) = (
        rgb(stage.ground),
        rgb(stage.grid),
        rgb(stage.sky_horizon),
        rgb(stage.sky_top),
    );
    let spacing = stage.spacing;
    let inv_spacing = 1.0 / spacing;
    let hw = stage.line_px + 0.5;
    let fade_r = stage.fade.0;
    let inv_fade_w = 1.0 / (stage.fade.1 - stage.fade.0).max(1e-6);
    let (cu, cv) = (stage.centre[0], stage.centre[1]);
    let mut line = vec![0.0f32; ow];
    let mut fade = vec![0.0f32; ow];
    let mut dark = vec![0.0f32; ow];
    // One internal row (each output pixel repeated `f` times), copied to the `f` rows.
    let mut out_row: Vec<Rgb> = vec![[0; 3]; w];
    row_of(0, &mut cur);
    let color = canvas.color_mut();
    for yo in 0..oh {
        row_of(yo + 1, &mut next);
        let y = yo as f32 * ff + half;
        // Grid coverage and fade, branch-free over the row.
        for xo in 0..ow {
            let (u, v) = (cur.u[xo], cur.v[xo]);
            // Screen-space derivatives of (u, v) from the right and lower neighbours; where a
            // neighbour misses the plane (at the horizon) the lines are faded out instead.
            let ok = cur.hit[xo + 1] * next.hit[xo];
            let fu = (cur.u[xo + 1] - u).abs() + (next.u[xo] - u).abs();
            let fv = (cur.v[xo + 1] - v).abs() + (next.v[xo] - v).abs();
            let cover = |c: f32, fw: f32| {
                let fw = fw.max(1e-9);
                let d = (c - spacing * round_fast(c * inv_spacing)).abs();
                let cov = (hw - d / fw).clamp(0.0, 1.0);
                // Lines closer than a few pixels apart would alias: fade them out.
                cov * (2.0 - fw * 10.0 * inv_spacing).clamp(0.0, 1.0)
            };
            line[xo] = cover(u, fu).max(cover(v, fv)) * ok;
            let (du, dv) = (u - cu, v - cv);
            fade[xo] = smoothstep01(((du * du + dv * dv).sqrt() - fade_r) * inv_fade_w);
        }
        // Shadow: a lookup only where the map can be non-zero.
        dark.fill(0.0);
        if let Some(sm) = shadow {
            for (((d, &u), &v), &hit) in dark.iter_mut().zip(&cur.u).zip(&cur.v).zip(&cur.hit) {
                if hit != 0.0 && sm.covers(u, v) {
                    *d = sm.sample(u, v);
                }
            }
        }
        for xo in 0..ow {
            let c = if cur.hit[xo] != 0.0 {
                let keep = (1.0 - dark[xo]) * (1.0 - fade[xo]);
                let l = line[xo];
                let fd = fade[xo];
                [0, 1, 2].map(|k| (ground[k] + (grid[k] - ground[k]) * l) * keep + horizon[k] * fd)
            } else {
                // Sky, by the elevation of the ray.
                let x = xo as f32 * ff + half;
                let s = (cur.dz[xo] / ray_len2(x, y).sqrt()).clamp(0.0, 1.0);
                mix(horizon, top, (s * 2.5).min(1.0))
            };
            let px = c.map(|x| (x + 0.5) as u8);
            out_row[xo * f..(xo + 1) * f].fill(px);
        }
        for sy in 0..f {
            color[(yo * f + sy) * w..(yo * f + sy + 1) * w].copy_from_slice(&out_row);
        }
        std::mem::swap(&mut cur, &mut next);
    }
}

/// One row of ray / ground hits as plain arrays.
struct HitRow {
    u: Vec<f32>,
    v: Vec<f32>,
    /// 1 where the ray meets the plane in front of the camera.
    hit: Vec<f32>,
    /// The ray direction's up component (unnormalised), for the sky gradient.
    dz: Vec<f32>,
}

impl HitRow {
    fn new(n: usize) -> Self {
        Self {
            u: vec![0.0; n],
            v: vec![0.0; n],
            hit: vec![0.0; n],
            dz: vec![0.0; n],
        }
    }
}

/// Round to nearest (ties to even) for `|x| < 2^22` by the float-addition trick: vectorises,
/// unlike `f32::round`, which is a libm call on baseline x86-64.
fn round_fast(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    (x + MAGIC) - MAGIC
}

fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

/// Smoothstep on `[0, 1]`.
fn smoothstep01(t: f32) -> f32 {
    let t = t.clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// A coverage mask for drawing translucent strokes without darker overlaps.
#[derive(Debug, Default)]
pub(crate) struct StrokeMask {
    cov: Vec<f32>,
    bbox: Option<[usize; 4]>,
}

impl StrokeMask {
    /// Adds a thick segment between internal pixel positions `a` and `b` with half-width `r`
    /// (internal pixels) and opacity `alpha`.
    fn segment(&mut self, w: usize, h: usize, a: [f32; 2], b: [f32; 2], r: f32, alpha: f32) {
        if self.cov.len() != w * h {
            self.cov = vec![0.0; w * h];
            self.bbox = None;
        }
        if !a.iter().chain(&b).all(|c| c.is_finite()) {
            return;
        }
        let x0 = (a[0].min(b[0]) - r - 1.0).floor().max(0.0) as usize;
        let y0 = (a[1].min(b[1]) - r - 1.0).floor().max(0.0) as usize;
        let x1 = (a[0].max(b[0]) + r + 1.0).ceil().min(w as f32);
        let y1 = (a[1].max(b[1]) + r + 1.0).ceil().min(h as f32);
        if x1 <= 0.0 || y1 <= 0.0 {
            return;
        }
        let (x1, y1) = (x1 as usize, y1 as usize);
        if x0 >= x1 || y0 >= y1 {
            return;
        }
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
                let (ex, ey) = (px - (a[0] + t * dx), py - (a[1] + t * dy));
                let c = (r + 0.5 - (ex * ex + ey * ey).sqrt()).clamp(0.0, 1.0) * alpha;
                let k = y * w + x;
                if c > self.cov[k] {
                    self.cov[k] = c;
                }
            }
        }
        self.bbox = Some(match self.bbox {
            None => [x0, y0, x1, y1],
            Some([a0, b0, a1, b1]) => [a0.min(x0), b0.min(y0), a1.max(x1), b1.max(y1)],
        });
    }

    /// Blends `color` into the canvas by the accumulated coverage and clears the mask.
    fn flush(&mut self, canvas: &mut Canvas, color: Rgb) {
        let (w, _) = canvas.internal_size();
        let Some([x0, y0, x1, y1]) = self.bbox.take() else {
            return;
        };
        let buf = canvas.color_mut();
        for y in y0..y1 {
            for x in x0..x1 {
                let k = y * w + x;
                let c = self.cov[k];
                if c > 0.0 {
                    buf[k] = blend(buf[k], color, c);
                    self.cov[k] = 0.0;
                }
            }
        }
    }
}

/// A flat translucent stroke.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stroke {
    pub color: Rgb,
    /// Half-width in output pixels.
    pub half_width_px: f32,
    /// Opacity in `[0, 1]`.
    pub alpha: f32,
}

/// Draws the polyline through `points` (world) as a stroke; each segment's opacity is the
/// stroke's times `1 - fade` at its midpoint. Segments with an end behind a perspective camera's
/// near plane are skipped.
pub(crate) fn draw_ground_path(
    canvas: &mut Canvas,
    mask: &mut StrokeMask,
    cam: &Camera,
    stage: &Stage,
    points: &[Vec3],
    stroke: Stroke,
) {
    let Stroke {
        color,
        half_width_px,
        alpha,
    } = stroke;
    let (w, h) = canvas.internal_size();
    let r = half_width_px * canvas.factor() as f32;
    let screen: Vec<Option<[f32; 3]>> = points
        .iter()
        .map(|&p| canvas.screen_point(cam, p))
        .collect();
    for (k, pair) in screen.windows(2).enumerate() {
        let (Some(a), Some(b)) = (pair[0], pair[1]) else {
            continue;
        };
        let mid = scale(add(points[k], points[k + 1]), 0.5);
        let a_seg = alpha * (1.0 - stage.fade_at(stage.uv(mid)));
        if a_seg > 0.0 {
            mask.segment(w, h, [a[0], a[1]], [b[0], b[1]], r, a_seg);
        }
    }
    if points.len() == 1
        && let Some(a) = screen[0]
    {
        mask.segment(w, h, [a[0], a[1]], [a[0], a[1]], r, alpha);
    }
    mask.flush(canvas, color);
}

/// A filled disc at `centre` (world) of the stroke's half-width as radius.
pub(crate) fn draw_ground_dot(
    canvas: &mut Canvas,
    mask: &mut StrokeMask,
    cam: &Camera,
    centre: Vec3,
    stroke: Stroke,
) {
    let (w, h) = canvas.internal_size();
    if let Some(a) = canvas.screen_point(cam, centre) {
        let r = stroke.half_width_px * canvas.factor() as f32;
        mask.segment(w, h, [a[0], a[1]], [a[0], a[1]], r, stroke.alpha);
        mask.flush(canvas, stroke.color);
    }
}

/// The horizontal part of `p` (its component along `up` removed).
pub(crate) fn horizontal(p: Vec3, up: Vec3) -> Vec3 {
    sub(p, scale(up, dot(p, up)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_blur_preserves_mass_away_from_edges() {
        let (nu, nv) = (9, 9);
        let mut d = vec![0.0f32; nu * nv];
        d[4 * nu + 4] = 1.0;
        box_blur(&mut d, nu, nv, 1);
        let sum: f32 = d.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "{sum}");
        assert!((d[4 * nu + 4] - 1.0 / 9.0).abs() < 1e-6);
        assert_eq!(d[0], 0.0);
    }

    #[test]
    fn shadow_is_darkest_under_low_points() {
        let stage = Stage {
            up: [0.0, 0.0, 1.0],
            e1: [1.0, 0.0, 0.0],
            e2: [0.0, 1.0, 0.0],
            height: 0.0,
            sky_top: [0; 3],
            sky_horizon: [0; 3],
            ground: [0; 3],
            grid: [0; 3],
            spacing: 1.0,
            line_px: 0.5,
            centre: [0.0; 2],
            fade: (10.0, 20.0),
        };
        // A "foot" (a 20 x 10 cm patch) touching the ground at x = 0 and a "head" as large at
        // x = 1, 1.7 m up.
        let patch = |x0: f32, z: f32| {
            (0..20).flat_map(move |i| {
                (0..10).map(move |j| [x0 - 0.1 + 0.01 * i as f32, -0.05 + 0.01 * j as f32, z])
            })
        };
        let pts: Vec<Vec3> = patch(0.0, 0.0).chain(patch(1.0, 1.7)).collect();
        let sm = ShadowMap::build(&pts, &stage, 1.7, 0.5).expect("map");
        let foot = sm.sample(0.0, 0.0);
        let head = sm.sample(1.0, 0.0);
        assert!(foot > head && foot > 0.1, "foot {foot}, head {head}");
        assert!(foot <= 0.5 + 1e-6);
        assert_eq!(sm.sample(30.0, 30.0), 0.0);
    }
}
