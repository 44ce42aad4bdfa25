//! The renderer: camera path, stage, trajectory, caption bar, frames and contact sheets.

use rayon::prelude::*;

use super::motion::{Motion, centroid};
use super::options::{ContactSheetOptions, VideoOptions, VideoStyle};
use crate::camera::{Camera, Projection};
use crate::canvas::Canvas;
use crate::error::{Result, invalid};
use crate::ground::{
    ShadowMap, Stage, Stroke, StrokeMask, draw_ground_dot, draw_ground_path, draw_stage, horizontal,
};
use crate::math::{Vec3, add, dot, scale, sub};
use crate::text::{CELL, draw_text, text_width, wrap};

/// A wrapped caption and its bar.
#[derive(Debug, Clone)]
struct TitleBar {
    lines: Vec<String>,
    scale: f32,
    height: u32,
}

impl TitleBar {
    fn layout(caption: &str, width: u32, scale: f32, max_lines: usize) -> Option<Self> {
        let cell = CELL * scale;
        let pad = (0.6 * cell).round();
        let max_chars = ((width as f32 - 2.0 * pad) / cell).floor().max(1.0) as usize;
        let lines = wrap(caption, max_chars, max_lines.max(1));
        if lines.is_empty() {
            return None;
        }
        let line_h = (1.4 * cell).round();
        let height = (2.0 * pad + (lines.len() - 1) as f32 * line_h + cell).round() as u32;
        Some(Self {
            lines,
            scale,
            height,
        })
    }

    fn draw(&self, img: &mut image::RgbImage, style: &VideoStyle) {
        let cell = CELL * self.scale;
        let pad = (0.6 * cell).round();
        let line_h = (1.4 * cell).round();
        let w = img.width();
        for y in 0..self.height.min(img.height()) {
            for x in 0..w {
                img.put_pixel(x, y, image::Rgb(style.title_background));
            }
        }
        for (i, line) in self.lines.iter().enumerate() {
            let x = ((w as f32 - text_width(line, self.scale)) * 0.5)
                .max(pad)
                .round();
            let y = pad + i as f32 * line_h;
            draw_text(img, line, x, y, self.scale, style.title_text);
        }
    }
}

/// Renders the frames of one motion; everything that depends on the whole motion (camera path,
/// ground height, trajectory, caption layout) is computed once by [`MotionRenderer::new`].
///
/// ```
/// use motion_viz::{Motion, MotionRenderer, PointSequence, VideoOptions};
/// // 4 frames of 2 joints (pelvis, head) moving along +X, as a flat [T * J * 3] buffer.
/// let flat: Vec<f32> = (0..4)
///     .flat_map(|t| [0.2 * t as f32, 0.0, 0.9, 0.2 * t as f32, 0.0, 1.7])
///     .collect();
/// let motion = Motion::skeleton(PointSequence::from_flat(&flat, 4, 2)?, &[[0, 1]])?;
/// let opts = VideoOptions { width: 64, height: 48, ..VideoOptions::z_up() };
/// let renderer = MotionRenderer::new(&motion, &opts)?;
/// let frame = renderer.render_frame(3)?;
/// assert_eq!(frame.dimensions(), (64, 48));
/// # Ok::<(), motion_viz::VizError>(())
/// ```
#[derive(Debug, Clone)]
pub struct MotionRenderer<'a> {
    motion: &'a Motion<'a>,
    opts: VideoOptions,
    up: Vec3,
    e1: Vec3,
    e2: Vec3,
    ground: f32,
    body_size: f32,
    /// Per-frame root on the ground plane (world).
    path: Vec<Vec3>,
    /// Per-frame camera translation (horizontal).
    offsets: Vec<Vec3>,
    /// Camera for an offset of zero.
    base: Camera,
    /// Horizontal centre of the framed region for an offset of zero.
    centre: Vec3,
    fade: (f32, f32),
    title: Option<TitleBar>,
    /// The caption bar, drawn once.
    title_image: Option<image::RgbImage>,
    scene_height: u32,
}

impl<'a> MotionRenderer<'a> {
    /// Fits the camera path, ground and caption to `motion`. Errors on invalid options or an
    /// empty motion.
    pub fn new(motion: &'a Motion<'a>, opts: &VideoOptions) -> Result<Self> {
        opts.validate()?;
        let t_len = motion.num_frames();
        if t_len == 0 {
            return Err(invalid("motion", "no frames"));
        }
        let up = opts.up.vector();
        let (e1, e2) = opts.up.horizontal_axes();

        // Ground: the lowest point of the whole motion; body size: the tallest frame.
        let mut ground = f32::INFINITY;
        let mut body_size = 0.0f32;
        for t in 0..t_len {
            let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
            for &p in motion.body(t) {
                let h = dot(p, up);
                lo = lo.min(h);
                hi = hi.max(h);
            }
            ground = ground.min(lo);
            body_size = body_size.max(hi - lo);
        }
        let body_size = body_size.max(0.1);

        let roots: Vec<Vec3> = (0..t_len).map(|t| motion.root(t)).collect();
        let horiz: Vec<Vec3> = roots.iter().map(|&r| horizontal(r, up)).collect();
        let path: Vec<Vec3> = horiz.iter().map(|&h| add(h, scale(up, ground))).collect();
        let offsets = if opts.follow {
            gaussian_smooth(&horiz, opts.follow_smoothing_s * opts.fps)
        } else {
            vec![[0.0; 3]; t_len]
        };

        // Title bar first: it takes its rows from the scene.
        let scale_text = opts.text_scale();
        let title = opts
            .caption
            .as_deref()
            .and_then(|c| TitleBar::layout(c, opts.width, scale_text, opts.caption_max_lines));
        let title_h = title.as_ref().map_or(0, |b| b.height);
        if title_h + 8 > opts.height {
            return Err(invalid(
                "video size",
                format!(
                    "{}x{} leaves no room for the scene under a {title_h}-pixel caption bar",
                    opts.width, opts.height
                ),
            ));
        }
        let scene_height = opts.height - title_h;

        // Camera: fixed orientation, fitted to the body in the moving frame of the offsets.
        let (az, el) = (
            opts.azimuth_deg.to_radians(),
            opts.elevation_deg.to_radians(),
        );
        let towards_eye = add(
            scale(add(scale(e1, az.cos()), scale(e2, az.sin())), el.cos()),
            scale(up, el.sin()),
        );
        let forward = scale(towards_eye, -1.0);
        let total = t_len * motion.body(0).len();
        let stride = total.div_ceil(200_000).max(1);
        let mut rel = Vec::with_capacity(total / stride + t_len);
        for (t, off) in offsets.iter().enumerate() {
            rel.extend(motion.body(t).iter().step_by(stride).map(|&p| sub(p, *off)));
        }
        let aspect = opts.width as f32 / scene_height as f32;
        let base = Camera::framing(
            &rel,
            forward,
            up,
            Projection::Perspective {
                fov_y: opts.fov_y,
                near: 0.01 * body_size,
            },
            aspect,
            opts.margin,
        )?;
        let centre = horizontal(centroid(&rel), up);
        // The lit ground reaches past the camera's foot and the body's whole range of motion.
        let reach = rel
            .iter()
            .map(|&p| {
                let d = sub(horizontal(p, up), centre);
                dot(d, d).sqrt()
            })
            .fold(0.0f32, f32::max);
        let eye_foot = {
            let d = sub(horizontal(base.eye(), up), centre);
            dot(d, d).sqrt()
        };
        let r0 = reach.max(eye_foot) + 0.6 * body_size;
        let fade = (r0, r0 + 2.5 * body_size);

        let title_image = title.as_ref().map(|bar| {
            let mut img = image::RgbImage::new(opts.width, bar.height);
            bar.draw(&mut img, &opts.style);
            img
        });
        Ok(Self {
            title_image,
            motion,
            opts: opts.clone(),
            up,
            e1,
            e2,
            ground,
            body_size,
            path,
            offsets,
            base,
            centre,
            fade,
            title,
            scene_height,
        })
    }

    /// `T`, the number of frames.
    pub fn num_frames(&self) -> usize {
        self.path.len()
    }

    /// Height of the ground plane along the up axis (the motion's lowest point).
    pub fn ground_height(&self) -> f32 {
        self.ground
    }

    /// Height in pixels of the caption bar (0 without a caption).
    pub fn title_height(&self) -> u32 {
        self.title.as_ref().map_or(0, |b| b.height)
    }

    /// The camera of frame `t` (for the scene area below the caption bar, of aspect
    /// `width / (height - title_height)`). Errors when `t >= T`.
    pub fn camera(&self, t: usize) -> Result<Camera> {
        let off = self.offsets.get(t).ok_or_else(|| {
            invalid(
                "frame",
                format!("{t} is past the last frame {}", self.num_frames() - 1),
            )
        })?;
        let eye = add(self.base.eye(), *off);
        Camera::look_at(
            eye,
            add(eye, self.base.forward()),
            self.up,
            self.base.projection(),
        )
    }

    fn canvas(&self) -> Result<Canvas> {
        Canvas::with_supersampling(self.opts.width, self.scene_height, self.opts.supersampling)
    }

    /// Renders frame `t`: caption bar plus scene. Errors when `t >= T`.
    pub fn render_frame(&self, t: usize) -> Result<image::RgbImage> {
        let mut canvas = self.canvas()?;
        let mut mask = StrokeMask::default();
        self.render_into(t, &mut canvas, &mut mask)
    }

    /// Renders every frame, in parallel over rayon's thread pool.
    pub fn render_all(&self) -> Result<Vec<image::RgbImage>> {
        // Validates the canvas size once, so the per-worker constructor cannot fail.
        let proto = self.canvas()?;
        (0..self.num_frames())
            .into_par_iter()
            .map_init(
                || (proto.clone(), StrokeMask::default()),
                |(canvas, mask), t| self.render_into(t, canvas, mask),
            )
            .collect()
    }

    fn render_into(
        &self,
        t: usize,
        canvas: &mut Canvas,
        mask: &mut StrokeMask,
    ) -> Result<image::RgbImage> {
        self.draw_scene(t, canvas, mask)?;
        let o = &self.opts;
        let mut raw = vec![0u8; o.width as usize * o.height as usize * 3];
        let (bar, scene) = raw.split_at_mut(self.title_height() as usize * o.width as usize * 3);
        if let Some(title) = &self.title_image {
            bar.copy_from_slice(title.as_raw());
        }
        canvas.downsample_into(scene);
        let mut img = image::RgbImage::from_raw(o.width, o.height, raw)
            .ok_or_else(|| invalid("video size", "frame buffer size mismatch"))?;
        if o.frame_counter {
            let label = format!("{}/{}  {:.2} s", t + 1, self.num_frames(), t as f32 / o.fps);
            let s = (self.opts.text_scale() * 0.8).max(1.0);
            let x = o.width as f32 - text_width(&label, s) - 4.0 * s;
            let y = o.height as f32 - (CELL + 4.0) * s;
            draw_text(&mut img, &label, x, y, s, o.style.label_text);
        }
        Ok(img)
    }

    /// The scene of frame `t` (no caption), `width x (height - title_height)`.
    fn render_scene(
        &self,
        t: usize,
        canvas: &mut Canvas,
        mask: &mut StrokeMask,
    ) -> Result<image::RgbImage> {
        self.draw_scene(t, canvas, mask)?;
        Ok(canvas.to_image())
    }

    /// Draws the scene of frame `t` into `canvas` (of the scene's size).
    fn draw_scene(&self, t: usize, canvas: &mut Canvas, mask: &mut StrokeMask) -> Result<()> {
        let cam = self.camera(t)?;
        let st = &self.opts.style;
        let off = self.offsets[t];
        let c = add(self.centre, off);
        let stage = Stage {
            up: self.up,
            e1: self.e1,
            e2: self.e2,
            height: self.ground,
            sky_top: st.sky_top,
            sky_horizon: st.sky_horizon,
            ground: st.ground,
            grid: st.grid,
            spacing: st.grid_spacing,
            line_px: 0.5,
            centre: [dot(c, self.e1), dot(c, self.e2)],
            fade: self.fade,
        };
        let shadow_pts = self.shadow_points(t);
        let shadow = ShadowMap::build(&shadow_pts, &stage, self.body_size, st.shadow);
        draw_stage(canvas, &cam, &stage, shadow.as_ref());

        if self.opts.show_trajectory && self.path.len() > 1 {
            let faint = Stroke {
                color: st.trajectory,
                half_width_px: 1.0,
                alpha: 0.35,
            };
            let strong = Stroke {
                color: st.trajectory,
                half_width_px: 1.7,
                alpha: 0.95,
            };
            draw_ground_path(canvas, mask, &cam, &stage, &self.path, faint);
            draw_ground_path(canvas, mask, &cam, &stage, &self.path[..=t], strong);
            let start = Stroke {
                half_width_px: 3.2,
                ..strong
            };
            draw_ground_dot(canvas, mask, &cam, self.path[0], start);
        }

        canvas.clear_depth();
        let m = self.motion;
        if let Some((v, f)) = m.mesh_frames() {
            canvas.draw_mesh(&cam, v.frame(t), f, &st.mesh)?;
        }
        if let Some((j, b)) = m.skeleton_frames()
            && (m.mesh_frames().is_none() || self.opts.skeleton_overlay)
        {
            canvas.clear_depth();
            canvas.draw_skeleton(&cam, j.frame(t), b, &st.skeleton)?;
        }
        Ok(())
    }

    /// Points that cast the contact shadow of frame `t`: a subsample of the vertices, or the
    /// joints plus points along the bones.
    fn shadow_points(&self, t: usize) -> Vec<Vec3> {
        let m = self.motion;
        if let Some((v, _)) = m.mesh_frames() {
            let f = v.frame(t);
            let stride = f.len().div_ceil(6000).max(1);
            return f.iter().step_by(stride).copied().collect();
        }
        let Some((j, bones)) = m.skeleton_frames() else {
            return Vec::new();
        };
        let f = j.frame(t);
        let mut out = f.to_vec();
        for &[a, b] in bones {
            for k in 1..8 {
                let s = k as f32 / 8.0;
                out.push(add(scale(f[a], 1.0 - s), scale(f[b], s)));
            }
        }
        out
    }

    /// `count` frames evenly spaced from the first to the last, side by side in rows of
    /// `columns`, with the caption once across the top and each frame's time in its corner.
    pub fn contact_sheet(&self, sheet: &ContactSheetOptions) -> Result<image::RgbImage> {
        let t_len = self.num_frames();
        if sheet.frames == 0 {
            return Err(invalid("contact sheet", "frames must be > 0"));
        }
        let n = sheet.frames.min(t_len);
        let cols = if sheet.columns == 0 {
            n
        } else {
            sheet.columns.min(n)
        };
        let rows = n.div_ceil(cols);
        let (cw, ch) = (self.opts.width, self.scene_height);
        let gap = sheet.gap;
        let sheet_w = cols as u32 * cw + (cols as u32 + 1) * gap;
        let s = self.opts.text_scale();
        let bar = self
            .opts
            .caption
            .as_deref()
            .and_then(|c| TitleBar::layout(c, sheet_w, s * 1.25, self.opts.caption_max_lines));
        let bar_h = bar.as_ref().map_or(0, |b| b.height);
        let sheet_h = bar_h + rows as u32 * ch + (rows as u32 + 1) * gap;
        if sheet_w > 65535 || sheet_h > 65535 {
            return Err(invalid(
                "contact sheet",
                format!("{sheet_w}x{sheet_h} is too large"),
            ));
        }
        let indices: Vec<usize> = (0..n)
            .map(|k| {
                if n == 1 {
                    0
                } else {
                    ((k * (t_len - 1)) as f64 / (n - 1) as f64).round() as usize
                }
            })
            .collect();
        let proto = self.canvas()?;
        let cells: Vec<image::RgbImage> = indices
            .par_iter()
            .map_init(
                || (proto.clone(), StrokeMask::default()),
                |(canvas, mask), &t| self.render_scene(t, canvas, mask),
            )
            .collect::<Result<_>>()?;
        let mut img = image::RgbImage::from_pixel(sheet_w, sheet_h, image::Rgb(sheet.background));
        if let Some(b) = &bar {
            b.draw(&mut img, &self.opts.style);
        }
        for (k, (cell, &t)) in cells.iter().zip(&indices).enumerate() {
            let (r, c) = ((k / cols) as u32, (k % cols) as u32);
            let x = gap + c * (cw + gap);
            let y = bar_h + gap + r * (ch + gap);
            image::imageops::replace(&mut img, cell, i64::from(x), i64::from(y));
            if sheet.time_labels {
                let label = format!("{:.2} s", t as f32 / self.opts.fps);
                let ls = (s * 0.9).max(1.0);
                draw_text(
                    &mut img,
                    &label,
                    x as f32 + 4.0 * ls,
                    y as f32 + 4.0 * ls,
                    ls,
                    self.opts.style.label_text,
                );
            }
        }
        Ok(img)
    }
}

/// Centred Gaussian smoothing over time with standard deviation `sigma` frames; `sigma < 0.5`
/// copies. The ends are extended by point reflection (`x[-k] = 2 x[0] - x[k]`), so motion at a
/// constant velocity is left unchanged up to the first and last frame (a plain truncated kernel
/// would pull the target towards the interior, off the body).
fn gaussian_smooth(x: &[Vec3], sigma: f32) -> Vec<Vec3> {
    if sigma.is_nan() || sigma < 0.5 || x.len() < 2 {
        return x.to_vec();
    }
    let r = (3.0 * sigma).ceil() as isize;
    let w: Vec<f32> = (-r..=r)
        .map(|k| (-0.5 * (k as f32 / sigma).powi(2)).exp())
        .collect();
    let sw: f32 = w.iter().sum();
    let n = x.len() as isize;
    let at = |j: isize| -> Vec3 {
        let clamp = |i: isize| x[i.clamp(0, n - 1) as usize];
        if j < 0 {
            sub(scale(x[0], 2.0), clamp(-j))
        } else if j >= n {
            sub(scale(x[(n - 1) as usize], 2.0), clamp(2 * (n - 1) - j))
        } else {
            x[j as usize]
        }
    };
    (0..n)
        .map(|i| {
            let acc = (-r..=r).fold([0.0f32; 3], |acc, k| {
                add(acc, scale(at(i + k), w[(k + r) as usize]))
            });
            scale(acc, 1.0 / sw)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_smoothing_keeps_constant_velocity_up_to_the_ends() {
        let line: Vec<Vec3> = (0..40).map(|t| [t as f32, 2.0, 0.0]).collect();
        let s = gaussian_smooth(&line, 3.0);
        for (t, p) in s.iter().enumerate() {
            assert!((p[0] - t as f32).abs() < 1e-3, "{t}: {p:?}");
            assert!((p[1] - 2.0).abs() < 1e-5);
        }
        assert_eq!(gaussian_smooth(&line, 0.0), line);
        // A stop-and-go path is smoothed: the corner gets rounded.
        let corner: Vec<Vec3> = (0..40).map(|t| [(t.min(20)) as f32, 0.0, 0.0]).collect();
        let s = gaussian_smooth(&corner, 3.0);
        assert!(s[20][0] < 19.5 && s[20][0] > 18.0, "{:?}", s[20]);
    }
}
