//! A fixed-camera scene for frame sequences: one camera framing every frame of a motion, an
//! optional floor grid, a mesh and/or a skeleton per frame. What the examples use to turn a
//! motion into GIF frames.

use crate::camera::{Camera, Projection};
use crate::canvas::{Canvas, MeshStyle, Rgb, SkeletonStyle};
use crate::error::{Result, invalid};
use crate::math::{Vec3, add, cross, dot, normalize, scale, sub};

/// Options of a [`Scene`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SceneOptions {
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// Supersampling factor (1 = none).
    pub supersampling: u32,
    /// Background colour.
    pub background: Rgb,
    /// Viewing direction (from the camera into the scene).
    pub view_dir: Vec3,
    /// World up (the floor is perpendicular to it): `[0, 1, 0]` for the SMPL body frame,
    /// `[0, 0, 1]` for the SMPL-RIFKE world.
    pub up: Vec3,
    /// Projection; its size parameter is replaced by the framing.
    pub projection: Projection,
    /// Free space around the framed points (0.1 = 10 %).
    pub margin: f32,
    /// Floor grid colour and spacing in world units; `None` draws no floor.
    pub floor: Option<(Rgb, f32)>,
    /// Mesh appearance.
    pub mesh: MeshStyle,
    /// Skeleton appearance.
    pub skeleton: SkeletonStyle,
    /// Draw the skeleton over the mesh (ignoring the mesh's depth) instead of depth-testing it.
    pub skeleton_on_top: bool,
}

impl Default for SceneOptions {
    fn default() -> Self {
        Self {
            width: 480,
            height: 480,
            supersampling: 2,
            background: [246, 246, 248],
            view_dir: [0.6, -0.35, -0.75],
            up: [0.0, 1.0, 0.0],
            projection: Projection::Perspective {
                fov_y: 0.7,
                near: 0.05,
            },
            margin: 0.08,
            floor: Some(([170, 170, 175], 0.25)),
            mesh: MeshStyle {
                cull_backfaces: true,
                ..MeshStyle::default()
            },
            skeleton: SkeletonStyle::default(),
            skeleton_on_top: true,
        }
    }
}

/// A camera and a floor fitted once to all frames of a sequence.
///
/// ```
/// use motion_viz::{Scene, SceneOptions};
/// let frames = [vec![[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]], vec![[0.5, 0.0, 0.0], [0.5, 1.0, 0.0]]];
/// let all: Vec<[f32; 3]> = frames.iter().flatten().copied().collect();
/// let scene = Scene::fit(&all, SceneOptions { width: 64, height: 64, ..Default::default() })?;
/// let images = frames
///     .iter()
///     .map(|j| scene.render(None, Some((j, &[[0, 1]]))))
///     .collect::<Result<Vec<_>, _>>()?;
/// assert_eq!(images.len(), 2);
/// # Ok::<(), motion_viz::VizError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Scene {
    opts: SceneOptions,
    camera: Camera,
    /// Floor: centre, two in-plane unit axes, half extent.
    floor: Option<(Vec3, Vec3, Vec3, f32)>,
}

impl Scene {
    /// Fits the camera (and the floor) to `points`, typically every vertex or joint of every
    /// frame. Errors on an empty or non-finite point set or invalid options.
    pub fn fit(points: &[Vec3], opts: SceneOptions) -> Result<Self> {
        let aspect = opts.width as f32 / opts.height.max(1) as f32;
        let camera = Camera::framing(
            points,
            opts.view_dir,
            opts.up,
            opts.projection,
            aspect,
            opts.margin,
        )?;
        let floor = match opts.floor {
            None => None,
            Some((_, spacing)) if !(spacing > 0.0 && spacing.is_finite()) => {
                return Err(invalid("floor spacing", format!("{spacing} must be > 0")));
            }
            Some(_) => {
                let up = normalize(opts.up);
                let low = points
                    .iter()
                    .map(|&p| dot(p, up))
                    .fold(f32::INFINITY, f32::min);
                // In-plane axes: any vector not parallel to up, made orthogonal.
                let seed = if up[0].abs() < 0.9 {
                    [1.0, 0.0, 0.0]
                } else {
                    [0.0, 0.0, 1.0]
                };
                let e1 = normalize(sub(seed, scale(up, dot(seed, up))));
                let e2 = cross(up, e1);
                let n = points.len() as f32;
                let mean = points
                    .iter()
                    .fold([0.0; 3], |a, &p| add(a, scale(p, 1.0 / n)));
                let half = points
                    .iter()
                    .map(|&p| {
                        let d = sub(p, mean);
                        dot(d, e1).abs().max(dot(d, e2).abs())
                    })
                    .fold(0.0f32, f32::max)
                    + 0.5;
                let centre = add(sub(mean, scale(up, dot(mean, up))), scale(up, low));
                Some((centre, e1, e2, half))
            }
        };
        Ok(Self {
            opts,
            camera,
            floor,
        })
    }

    /// The fitted camera.
    pub fn camera(&self) -> &Camera {
        &self.camera
    }

    /// Renders one frame: an optional mesh (`vertices [V]`, `faces [F]`) and an optional skeleton
    /// (`joints [J]`, `bones [B]` index pairs).
    ///
    /// # Shapes
    /// `mesh = (vertices [V], faces [F])`, `skeleton = (joints [J], bones [B])`.
    pub fn render(
        &self,
        mesh: Option<(&[Vec3], &[[u32; 3]])>,
        skeleton: Option<(&[Vec3], &[[usize; 2]])>,
    ) -> Result<image::RgbImage> {
        let o = &self.opts;
        let mut canvas = Canvas::with_supersampling(o.width, o.height, o.supersampling)?;
        canvas.clear(o.background);
        if let (Some((centre, e1, e2, half)), Some((color, spacing))) = (self.floor, o.floor) {
            let n = (half / spacing).ceil() as i32;
            let ext = n as f32 * spacing;
            for k in -n..=n {
                let off = k as f32 * spacing;
                for (a, b) in [(e1, e2), (e2, e1)] {
                    let base = add(centre, scale(a, off));
                    let p0 = sub(base, scale(b, ext));
                    let p1 = add(base, scale(b, ext));
                    canvas.draw_segment(&self.camera, p0, p1, color, 0.6);
                }
            }
        }
        if let Some((v, f)) = mesh {
            canvas.draw_mesh(&self.camera, v, f, &o.mesh)?;
        }
        if let Some((j, b)) = skeleton {
            if o.skeleton_on_top {
                canvas.clear_depth();
            }
            canvas.draw_skeleton(&self.camera, j, b, &o.skeleton)?;
        }
        Ok(canvas.to_image())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_is_drawn_under_the_points_and_can_be_turned_off() -> Result<()> {
        let pts = [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
        let base = SceneOptions {
            width: 40,
            height: 40,
            supersampling: 1,
            view_dir: [0.0, -0.5, -1.0],
            ..SceneOptions::default()
        };
        let bg = base.background;
        let with = Scene::fit(&pts, base)?.render(None, None)?;
        let without = Scene::fit(
            &pts,
            SceneOptions {
                floor: None,
                ..base
            },
        )?
        .render(None, None)?;
        assert!(with.pixels().any(|p| p.0 != bg), "no floor drawn");
        assert!(without.pixels().all(|p| p.0 == bg));
        let bad = SceneOptions {
            floor: Some(([0, 0, 0], 0.0)),
            ..base
        };
        assert!(Scene::fit(&pts, bad).is_err());
        Ok(())
    }
}
