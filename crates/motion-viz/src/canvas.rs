//! The software rasteriser: a colour buffer plus a z-buffer, triangle meshes with flat or smooth
//! Lambert shading, and screen-space capsules for skeletons.
//!
//! Triangles are scan-converted with edge functions over their pixel bounding box (Pineda,
//! "A parallel algorithm for polygon rasterization", SIGGRAPH 1988), sampled at pixel centres;
//! hidden surfaces are removed with a z-buffer (Catmull 1974) whose depth key is affine in screen
//! space for both projections (see [`crate::camera`]). Shading is Lambert's cosine law with a
//! directional light fixed relative to the camera plus an ambient term. Optional supersampling
//! renders at `factor` times the resolution and box-filters down when an image is taken.

use crate::camera::{Camera, Projection};
use crate::error::{Result, invalid};
use crate::math::{Vec3, add, cross, dot, greater, normalize, scale, sub};

/// An 8-bit RGB colour.
pub type Rgb = [u8; 3];

/// How a mesh is shaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shading {
    /// One Lambert intensity per triangle (from its geometric normal).
    Flat,
    /// Per-pixel Lambert with vertex normals (area-weighted face normals) interpolated across
    /// each triangle.
    Smooth,
}

/// Appearance of a mesh.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeshStyle {
    /// Base (albedo) colour.
    pub color: Rgb,
    /// Flat or smooth shading.
    pub shading: Shading,
    /// Ambient fraction in `[0, 1]`: intensity = ambient + (1 - ambient) * max(0, n . l).
    pub ambient: f32,
    /// Direction TOWARDS the light in view space (x right, y up, z along the view direction);
    /// the default comes from the upper left, behind the camera.
    pub light_dir: Vec3,
    /// Skip triangles facing away from the camera (for closed, outward-wound meshes). When false,
    /// back faces are drawn and shaded as if their normal were flipped (two-sided).
    pub cull_backfaces: bool,
}

impl Default for MeshStyle {
    fn default() -> Self {
        Self {
            color: [200, 180, 160],
            shading: Shading::Smooth,
            ambient: 0.25,
            light_dir: [-0.4, 0.6, -1.0],
            cull_backfaces: false,
        }
    }
}

/// Appearance of a skeleton drawn as capsules (bones) and discs (joints).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SkeletonStyle {
    /// Bone colour.
    pub bone_color: Rgb,
    /// Joint colour.
    pub joint_color: Rgb,
    /// Bone radius in output pixels.
    pub bone_radius_px: f32,
    /// Joint disc radius in output pixels (0 draws no joints).
    pub joint_radius_px: f32,
}

impl Default for SkeletonStyle {
    fn default() -> Self {
        Self {
            bone_color: [60, 110, 200],
            joint_color: [230, 80, 60],
            bone_radius_px: 3.0,
            joint_radius_px: 4.0,
        }
    }
}

/// Colour buffer plus z-buffer.
///
/// ```
/// use motion_viz::{Camera, Canvas, MeshStyle, Projection};
/// let mut canvas = Canvas::new(64, 64)?;
/// canvas.clear([255, 255, 255]);
/// let cam = Camera::look_at([0.0, 0.0, 3.0], [0.0; 3], [0.0, 1.0, 0.0],
///     Projection::Orthographic { half_height: 1.0 })?;
/// let verts = [[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.5, 0.0]];
/// canvas.draw_mesh(&cam, &verts, &[[0, 1, 2]], &MeshStyle::default())?;
/// let img = canvas.to_image();
/// assert_ne!(img.get_pixel(32, 32).0, [255, 255, 255]);
/// # Ok::<(), motion_viz::VizError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Canvas {
    width: u32,
    height: u32,
    factor: u32,
    w: usize,
    h: usize,
    color: Vec<Rgb>,
    depth: Vec<f32>,
}

/// A projected vertex in internal pixel coordinates.
#[derive(Debug, Clone, Copy)]
struct ScreenVertex {
    x: f32,
    y: f32,
    z: f32,
}

impl Canvas {
    /// A `width` x `height` canvas without supersampling.
    pub fn new(width: u32, height: u32) -> Result<Self> {
        Self::with_supersampling(width, height, 1)
    }

    /// A canvas rendering internally at `factor` times the resolution (anti-aliasing).
    pub fn with_supersampling(width: u32, height: u32, factor: u32) -> Result<Self> {
        if width == 0 || height == 0 || width > 16384 || height > 16384 {
            return Err(invalid(
                "canvas size",
                format!("{width}x{height} (each side must be in 1..=16384)"),
            ));
        }
        if !(1..=8).contains(&factor) {
            return Err(invalid(
                "supersampling factor",
                format!("{factor} (must be 1..=8)"),
            ));
        }
        let (w, h) = ((width * factor) as usize, (height * factor) as usize);
        Ok(Self {
            width,
            height,
            factor,
            w,
            h,
            color: vec![[0, 0, 0]; w * h],
            depth: vec![f32::INFINITY; w * h],
        })
    }

    /// Output width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Output height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Width / height, the aspect to pass to [`Camera::framing`].
    pub fn aspect(&self) -> f32 {
        self.width as f32 / self.height as f32
    }

    /// Fills the colour buffer and resets the z-buffer.
    pub fn clear(&mut self, color: Rgb) {
        self.color.fill(color);
        self.depth.fill(f32::INFINITY);
    }

    /// Resets only the z-buffer (draw an overlay, e.g. a skeleton over a mesh).
    pub fn clear_depth(&mut self) {
        self.depth.fill(f32::INFINITY);
    }

    /// Internal (supersampled) buffer size in pixels.
    pub(crate) fn internal_size(&self) -> (usize, usize) {
        (self.w, self.h)
    }

    /// The supersampling factor.
    pub(crate) fn factor(&self) -> u32 {
        self.factor
    }

    /// The colour buffer at internal resolution, row-major.
    pub(crate) fn color_mut(&mut self) -> &mut [Rgb] {
        &mut self.color
    }

    /// A world point in internal pixel coordinates `(x, y, depth key)`; `None` behind a
    /// perspective camera's near plane.
    pub(crate) fn screen_point(&self, cam: &Camera, p: Vec3) -> Option<[f32; 3]> {
        self.to_screen(cam, p).map(|s| [s.x, s.y, s.z])
    }

    fn to_screen(&self, cam: &Camera, p: Vec3) -> Option<ScreenVertex> {
        let q = cam.project(p, self.aspect())?;
        Some(ScreenVertex {
            x: (q.ndc[0] + 1.0) * 0.5 * self.w as f32,
            y: (1.0 - q.ndc[1]) * 0.5 * self.h as f32,
            z: q.depth,
        })
    }

    /// Draws a triangle mesh.
    ///
    /// # Shapes
    /// `vertices` `[V]` world points, `faces` `[F]` vertex-index triples (counter-clockwise seen
    /// from outside when `cull_backfaces` is set). Triangles with a vertex behind a perspective
    /// camera's near plane are skipped.
    ///
    /// Errors when a face indexes past `vertices` or a vertex is not finite.
    pub fn draw_mesh(
        &mut self,
        camera: &Camera,
        vertices: &[Vec3],
        faces: &[[u32; 3]],
        style: &MeshStyle,
    ) -> Result<()> {
        if let Some((i, p)) = vertices
            .iter()
            .enumerate()
            .find(|(_, p)| !p.iter().all(|c| c.is_finite()))
        {
            return Err(invalid(
                "vertices",
                format!("vertex {i} is not finite: {p:?}"),
            ));
        }
        let n = vertices.len();
        check_faces(faces, n)?;
        let light = normalize(camera.dir_to_world(style.light_dir));
        let normals = match style.shading {
            Shading::Smooth => Some(vertex_normals(vertices, faces)),
            Shading::Flat => None,
        };
        let screen: Vec<Option<ScreenVertex>> = vertices
            .iter()
            .map(|&p| self.to_screen(camera, p))
            .collect();
        let ambient = style.ambient.clamp(0.0, 1.0);
        for f in faces {
            let [a, b, c] = f.map(|k| k as usize);
            let (Some(sa), Some(sb), Some(sc)) = (screen[a], screen[b], screen[c]) else {
                continue;
            };
            let fnorm = cross(sub(vertices[b], vertices[a]), sub(vertices[c], vertices[a]));
            // Towards the viewer, unnormalised (only the sign matters).
            let view = match camera.projection() {
                Projection::Orthographic { .. } => scale(camera.forward(), -1.0),
                Projection::Perspective { .. } => sub(camera.eye(), vertices[a]),
            };
            let front = dot(fnorm, view) >= 0.0;
            if style.cull_backfaces && !front {
                continue;
            }
            let flip = if front { 1.0 } else { -1.0 };
            match &normals {
                None => {
                    let i = lambert(scale(normalize(fnorm), flip), light, ambient);
                    let col = shade(style.color, i);
                    self.fill_triangle([sa, sb, sc], |_| col);
                }
                Some(vn) => {
                    let ns = [vn[a], vn[b], vn[c]].map(|v| scale(v, flip));
                    let base = style.color;
                    self.fill_triangle([sa, sb, sc], |w| {
                        let nrm = add(
                            add(scale(ns[0], w[0]), scale(ns[1], w[1])),
                            scale(ns[2], w[2]),
                        );
                        shade(base, lambert(normalize(nrm), light, ambient))
                    });
                }
            }
        }
        Ok(())
    }

    /// Scan-converts one triangle; `color` gets the barycentric weights of the pixel centre.
    fn fill_triangle(&mut self, v: [ScreenVertex; 3], mut color: impl FnMut([f32; 3]) -> Rgb) {
        let area = edge(v[0], v[1], v[2].x, v[2].y);
        if !greater(area.abs(), 1e-12) {
            return;
        }
        let inv = 1.0 / area;
        let lo_x = v[0].x.min(v[1].x).min(v[2].x);
        let lo_y = v[0].y.min(v[1].y).min(v[2].y);
        let hi_x = v[0].x.max(v[1].x).max(v[2].x);
        let hi_y = v[0].y.max(v[1].y).max(v[2].y);
        if !(hi_x >= 0.0 && hi_y >= 0.0) {
            return;
        }
        let (xmin, ymin) = (floor_nonneg(lo_x), floor_nonneg(lo_y));
        let xmax = ceil_nonneg(hi_x).min(self.w);
        let ymax = ceil_nonneg(hi_y).min(self.h);
        // Edge k runs from vertex a = k + 1 to b = k + 2:
        // e_k = (b.x - a.x)(py - a.y) - (b.y - a.y)(px - a.x),
        // evaluated exactly so (pixel centres on an edge count as inside); the first product
        // only changes per row.
        let pairs = [(v[1], v[2]), (v[2], v[0]), (v[0], v[1])];
        for y in ymin..ymax {
            let py = y as f32 + 0.5;
            let row = y * self.w;
            let rt = pairs.map(|(a, b)| (b.x - a.x) * (py - a.y));
            for x in xmin..xmax {
                let px = x as f32 + 0.5;
                let e = |k: usize| {
                    let (a, b) = pairs[k];
                    rt[k] - (b.y - a.y) * (px - a.x)
                };
                let w0 = e(0) * inv;
                let w1 = e(1) * inv;
                let w2 = e(2) * inv;
                if w0 < 0.0 || w1 < 0.0 || w2 < 0.0 {
                    continue;
                }
                let z = w0 * v[0].z + w1 * v[1].z + w2 * v[2].z;
                let k = row + x;
                if z < self.depth[k] {
                    self.depth[k] = z;
                    self.color[k] = color([w0, w1, w2]);
                }
            }
        }
    }

    /// Draws a 3D segment as a shaded screen-space capsule of `radius_px` output pixels,
    /// depth-tested against what is already drawn. Segments crossing a perspective camera's near
    /// plane are skipped.
    pub fn draw_segment(&mut self, camera: &Camera, a: Vec3, b: Vec3, color: Rgb, radius_px: f32) {
        let (Some(sa), Some(sb)) = (self.to_screen(camera, a), self.to_screen(camera, b)) else {
            return;
        };
        let r = radius_px.max(0.0) * self.factor as f32;
        if !greater(r, 0.0) || ![sa.x, sa.y, sb.x, sb.y].iter().all(|c| c.is_finite()) {
            return;
        }
        let xmin = (sa.x.min(sb.x) - r).floor().max(0.0) as usize;
        let ymin = (sa.y.min(sb.y) - r).floor().max(0.0) as usize;
        let xmax = (sa.x.max(sb.x) + r).ceil();
        let ymax = (sa.y.max(sb.y) + r).ceil();
        if xmax < 0.0 || ymax < 0.0 {
            return;
        }
        let xmax = (xmax as usize).min(self.w);
        let ymax = (ymax as usize).min(self.h);
        let (dx, dy) = (sb.x - sa.x, sb.y - sa.y);
        let len2 = dx * dx + dy * dy;
        for y in ymin..ymax {
            let py = y as f32 + 0.5;
            for x in xmin..xmax {
                let px = x as f32 + 0.5;
                let t = if len2 > 0.0 {
                    (((px - sa.x) * dx + (py - sa.y) * dy) / len2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let (ex, ey) = (px - (sa.x + t * dx), py - (sa.y + t * dy));
                let d2 = (ex * ex + ey * ey) / (r * r);
                if d2 > 1.0 {
                    continue;
                }
                let z = sa.z + t * (sb.z - sa.z);
                let k = y * self.w + x;
                if z < self.depth[k] {
                    self.depth[k] = z;
                    // A tube lit from the viewer: brightest along its axis.
                    self.color[k] = shade(color, 0.45 + 0.55 * (1.0 - d2).sqrt());
                }
            }
        }
    }

    /// Draws a skeleton: each `[parent, child]` pair in `bones` as a capsule, each joint as a
    /// disc.
    ///
    /// # Shapes
    /// `joints` `[J]` world points; `bones` `[B]` index pairs into `joints`.
    ///
    /// Errors when a bone indexes past `joints` or a joint is not finite.
    pub fn draw_skeleton(
        &mut self,
        camera: &Camera,
        joints: &[Vec3],
        bones: &[[usize; 2]],
        style: &SkeletonStyle,
    ) -> Result<()> {
        if let Some((i, p)) = joints
            .iter()
            .enumerate()
            .find(|(_, p)| !p.iter().all(|c| c.is_finite()))
        {
            return Err(invalid("joints", format!("joint {i} is not finite: {p:?}")));
        }
        if let Some(b) = bones
            .iter()
            .find(|b| b[0] >= joints.len() || b[1] >= joints.len())
        {
            return Err(invalid(
                "bones",
                format!("bone {b:?} indexes past the {} joints", joints.len()),
            ));
        }
        for &[p, c] in bones {
            self.draw_segment(
                camera,
                joints[p],
                joints[c],
                style.bone_color,
                style.bone_radius_px,
            );
        }
        if style.joint_radius_px > 0.0 {
            for &j in joints {
                self.draw_segment(camera, j, j, style.joint_color, style.joint_radius_px);
            }
        }
        Ok(())
    }

    /// The colour buffer at output resolution (box-filtered when supersampling).
    pub fn to_image(&self) -> image::RgbImage {
        let (ow, oh) = (self.width as usize, self.height as usize);
        let mut raw = vec![0u8; ow * oh * 3];
        self.downsample_into(&mut raw);
        image::RgbImage::from_raw(self.width, self.height, raw)
            .unwrap_or_else(|| image::RgbImage::new(self.width, self.height))
    }

    /// Box-filters the colour buffer into `raw`, `width * height` RGB bytes (row-major).
    pub(crate) fn downsample_into(&self, raw: &mut [u8]) {
        let f = self.factor as usize;
        let ow = self.width as usize;
        if f == 1 {
            raw.copy_from_slice(self.color.as_flattened());
        } else if f == 2 {
            // The common case, on flat bytes: (a + b + c + d + 2) / 4 per channel.
            let src = self.color.as_flattened();
            let stride = self.w * 3;
            for (y, out_row) in raw.chunks_exact_mut(ow * 3).enumerate() {
                let r0 = &src[2 * y * stride..(2 * y + 1) * stride];
                let r1 = &src[(2 * y + 1) * stride..(2 * y + 2) * stride];
                for (x, o) in out_row.chunks_exact_mut(3).enumerate() {
                    let k = 6 * x;
                    for c in 0..3 {
                        let s = u16::from(r0[k + c])
                            + u16::from(r0[k + 3 + c])
                            + u16::from(r1[k + c])
                            + u16::from(r1[k + 3 + c]);
                        o[c] = ((s + 2) >> 2) as u8;
                    }
                }
            }
        } else {
            let n = (f * f) as u32;
            let mut acc = vec![[0u32; 3]; ow];
            for (y, out_row) in raw.chunks_exact_mut(ow * 3).enumerate() {
                acc.fill([0; 3]);
                for sy in 0..f {
                    let row = &self.color[(y * f + sy) * self.w..(y * f + sy + 1) * self.w];
                    for (a, block) in acc.iter_mut().zip(row.chunks_exact(f)) {
                        for c in block {
                            a[0] += u32::from(c[0]);
                            a[1] += u32::from(c[1]);
                            a[2] += u32::from(c[2]);
                        }
                    }
                }
                for (o, a) in out_row.chunks_exact_mut(3).zip(&acc) {
                    o[0] = ((a[0] + n / 2) / n) as u8;
                    o[1] = ((a[1] + n / 2) / n) as u8;
                    o[2] = ((a[2] + n / 2) / n) as u8;
                }
            }
        }
    }

    /// Writes the image as a PNG (atomically: temp file + rename).
    pub fn save_png(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        crate::output::write_png(path, &self.to_image())
    }
}

/// Checks that every face indexes one of `n` vertices; the error names the first bad face.
pub(crate) fn check_faces(faces: &[[u32; 3]], n: usize) -> Result<()> {
    match faces
        .iter()
        .enumerate()
        .find(|(_, f)| f.iter().any(|&k| k as usize >= n))
    {
        Some((i, f)) => Err(invalid(
            "faces",
            format!("face {i} = {f:?} indexes past the {n} vertices"),
        )),
        None => Ok(()),
    }
}

/// Bones `[parent, child]` of a kinematic tree given as a parent list (a negative entry, or one
/// `>= parents.len()` such as SMPL's 4294967295, marks a root).
pub fn bones_from_parents(parents: &[i64]) -> Vec<[usize; 2]> {
    parents
        .iter()
        .enumerate()
        .filter(|&(_, &p)| p >= 0 && (p as usize) < parents.len())
        .map(|(c, &p)| [p as usize, c])
        .collect()
}

/// Area-weighted vertex normals (unit length; zero for unreferenced vertices).
///
/// # Shapes
/// `vertices` `[V]`, `faces` `[F]` (indices must be in range) -> `[V]`.
pub fn vertex_normals(vertices: &[Vec3], faces: &[[u32; 3]]) -> Vec<Vec3> {
    let mut acc = vec![[0.0f32; 3]; vertices.len()];
    for f in faces {
        let [a, b, c] = f.map(|k| k as usize);
        let n = cross(sub(vertices[b], vertices[a]), sub(vertices[c], vertices[a]));
        for k in [a, b, c] {
            acc[k] = add(acc[k], n);
        }
    }
    acc.into_iter().map(normalize).collect()
}

/// `floor(x)` clamped at 0, without a libm call (`f32::floor` is one on baseline x86-64).
fn floor_nonneg(x: f32) -> usize {
    if x > 0.0 { x as usize } else { 0 }
}

/// `ceil(x)` for `x >= 0`, without a libm call.
fn ceil_nonneg(x: f32) -> usize {
    let t = x as usize;
    if (t as f32) < x { t + 1 } else { t }
}

fn edge(a: ScreenVertex, b: ScreenVertex, px: f32, py: f32) -> f32 {
    (b.x - a.x) * (py - a.y) - (b.y - a.y) * (px - a.x)
}

fn lambert(n: Vec3, l: Vec3, ambient: f32) -> f32 {
    ambient + (1.0 - ambient) * dot(n, l).max(0.0)
}

fn shade(c: Rgb, i: f32) -> Rgb {
    // `+ 0.5` then truncation rounds half up for the non-negative values here (`as u8`
    // saturates); `f32::round` is a libm call on baseline x86-64, too slow per pixel.
    c.map(|v| (v as f32 * i + 0.5) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn front_camera() -> Result<Camera> {
        // Looking down -Z at the unit square [-1, 1]^2.
        Camera::look_at(
            [0.0, 0.0, 5.0],
            [0.0; 3],
            [0.0, 1.0, 0.0],
            Projection::Orthographic { half_height: 1.0 },
        )
    }

    #[test]
    fn triangle_covers_exactly_the_expected_pixels() -> Result<()> {
        // Corners (-1,1), (-1,-1), (1,-1) land on pixels (0,0), (0,8), (8,8): the triangle is
        // the part of the image on or below the diagonal y = x. Pixel (x, y) has its centre at
        // (x + 0.5, y + 0.5), so it is covered iff x <= y (centres on the edge count as inside).
        let mut c = Canvas::new(8, 8)?;
        c.clear([0, 0, 0]);
        let v = [[-1.0, 1.0, 0.0], [-1.0, -1.0, 0.0], [1.0, -1.0, 0.0]];
        let style = MeshStyle {
            color: [255, 255, 255],
            shading: Shading::Flat,
            ambient: 1.0,
            ..MeshStyle::default()
        };
        c.draw_mesh(&front_camera()?, &v, &[[0, 1, 2]], &style)?;
        let img = c.to_image();
        for y in 0..8 {
            for x in 0..8 {
                let lit = img.get_pixel(x, y).0 == [255, 255, 255];
                assert_eq!(lit, x <= y, "pixel ({x}, {y})");
            }
        }
        Ok(())
    }

    #[test]
    fn z_buffer_keeps_the_nearer_face_in_either_order() -> Result<()> {
        let cam = front_camera()?;
        let quad = |z: f32| {
            (
                vec![
                    [-1.0, -1.0, z],
                    [1.0, -1.0, z],
                    [1.0, 1.0, z],
                    [-1.0, 1.0, z],
                ],
                vec![[0u32, 1, 2], [0, 2, 3]],
            )
        };
        let style = |color| MeshStyle {
            color,
            shading: Shading::Flat,
            ambient: 1.0,
            ..MeshStyle::default()
        };
        let (near_v, near_f) = quad(0.5);
        let (far_v, far_f) = quad(-0.5);
        for near_first in [true, false] {
            let mut c = Canvas::new(4, 4)?;
            c.clear([0, 0, 0]);
            if near_first {
                c.draw_mesh(&cam, &near_v, &near_f, &style([255, 0, 0]))?;
                c.draw_mesh(&cam, &far_v, &far_f, &style([0, 0, 255]))?;
            } else {
                c.draw_mesh(&cam, &far_v, &far_f, &style([0, 0, 255]))?;
                c.draw_mesh(&cam, &near_v, &near_f, &style([255, 0, 0]))?;
            }
            assert!(c.to_image().pixels().all(|p| p.0 == [255, 0, 0]));
        }
        Ok(())
    }

    #[test]
    fn lambert_shading_darkens_oblique_faces_and_culling_drops_back_faces() -> Result<()> {
        let cam = front_camera()?;
        let facing = [[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, 0.0]];
        let style = MeshStyle {
            color: [200, 200, 200],
            shading: Shading::Flat,
            ambient: 0.0,
            light_dir: [0.0, 0.0, -1.0],
            cull_backfaces: true,
        };
        let mut c = Canvas::new(16, 16)?;
        c.clear([0, 0, 0]);
        c.draw_mesh(&cam, &facing, &[[0, 1, 2]], &style)?;
        assert_eq!(c.to_image().get_pixel(8, 9).0, [200, 200, 200]);
        // Tilted 60 degrees about X: cos 60 = 0.5 of the intensity.
        let (s, co) = (60f32.to_radians().sin(), 60f32.to_radians().cos());
        let tilted = facing.map(|[x, y, _]| [x, y * co, -y * s]);
        c.clear([0, 0, 0]);
        c.draw_mesh(&cam, &tilted, &[[0, 1, 2]], &style)?;
        assert_eq!(c.to_image().get_pixel(8, 8).0, [100, 100, 100]);
        // Clockwise as seen from the camera: culled.
        c.clear([0, 0, 0]);
        c.draw_mesh(&cam, &facing, &[[0, 2, 1]], &style)?;
        assert!(c.to_image().pixels().all(|p| p.0 == [0, 0, 0]));
        Ok(())
    }

    #[test]
    fn skeleton_bone_paints_along_the_segment_only() -> Result<()> {
        let cam = front_camera()?;
        let mut c = Canvas::new(20, 20)?;
        c.clear([0, 0, 0]);
        let joints = [[-0.8, 0.0, 0.0], [0.8, 0.0, 0.0]];
        let style = SkeletonStyle {
            bone_radius_px: 1.5,
            joint_radius_px: 0.0,
            ..SkeletonStyle::default()
        };
        c.draw_skeleton(&cam, &joints, &bones_from_parents(&[-1, 0]), &style)?;
        let img = c.to_image();
        // The bone runs along rows 9/10 (y = 0) from x = 2 to x = 18.
        assert_ne!(img.get_pixel(10, 9).0, [0, 0, 0]);
        assert_ne!(img.get_pixel(3, 10).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(10, 4).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(0, 9).0, [0, 0, 0]);
        assert!(c.draw_skeleton(&cam, &joints, &[[0, 2]], &style).is_err());
        Ok(())
    }

    #[test]
    fn bad_meshes_are_typed_errors() -> Result<()> {
        let cam = front_camera()?;
        let mut c = Canvas::new(4, 4)?;
        let v = [[0.0; 3], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
        let err = c.draw_mesh(&cam, &v, &[[0, 1, 3]], &MeshStyle::default());
        assert!(matches!(
            err,
            Err(crate::VizError::InvalidInput { what: "faces", .. })
        ));
        let nan = [[0.0; 3], [f32::NAN, 0.0, 0.0], [0.0, 1.0, 0.0]];
        assert!(
            c.draw_mesh(&cam, &nan, &[[0, 1, 2]], &MeshStyle::default())
                .is_err()
        );
        assert!(Canvas::new(0, 4).is_err());
        assert!(Canvas::with_supersampling(4, 4, 0).is_err());
        Ok(())
    }

    #[test]
    fn supersampling_averages_edge_pixels() -> Result<()> {
        let mut c = Canvas::with_supersampling(4, 4, 2)?;
        c.clear([0, 0, 0]);
        let v = [[-1.0, 1.0, 0.0], [-1.0, -1.0, 0.0], [1.0, -1.0, 0.0]];
        let style = MeshStyle {
            color: [255, 255, 255],
            shading: Shading::Flat,
            ambient: 1.0,
            ..MeshStyle::default()
        };
        c.draw_mesh(&front_camera()?, &v, &[[0, 1, 2]], &style)?;
        let img = c.to_image();
        // A diagonal pixel has 3 of its 4 sub-samples covered (x <= y at 2x resolution).
        assert_eq!(img.get_pixel(1, 1).0, [191, 191, 191]);
        assert_eq!(img.get_pixel(0, 3).0, [255, 255, 255]);
        assert_eq!(img.get_pixel(3, 0).0, [0, 0, 0]);
        Ok(())
    }
}
