//! Cameras: a look-at view with an orthographic or a pinhole perspective projection.
//!
//! View space follows the usual graphics convention: `right`, `up` and the viewing direction
//! `forward` form an orthonormal basis built from `eye`, `target` and an up hint. Projections map
//! a point to normalised device coordinates (NDC, x and y in `[-1, 1]` across the image, +y up)
//! plus a depth key that is affine in screen space (so it can be interpolated linearly across a
//! triangle) and grows with distance from the camera.

use crate::error::{Result, invalid};
use crate::math::{Vec3, add, cross, dot, greater, norm, normalize, scale, sub};

/// How view space is flattened onto the image plane.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Projection {
    /// Parallel projection; `half_height` is half the visible height in world units.
    Orthographic {
        /// Half of the visible height (world units).
        half_height: f32,
    },
    /// Pinhole perspective projection.
    Perspective {
        /// Vertical field of view in radians, in `(0, pi)`.
        fov_y: f32,
        /// Points closer than this (world units along the view direction) are not drawn.
        near: f32,
    },
}

/// A point after projection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Projected {
    /// Normalised device coordinates: x, y in `[-1, 1]` inside the image, +y up.
    pub ndc: [f32; 2],
    /// Depth key: affine in screen space, larger = farther.
    pub depth: f32,
}

/// A look-at camera.
///
/// ```
/// use motion_viz::{Camera, Projection};
/// let cam = Camera::look_at([0.0, 0.0, 5.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0],
///     Projection::Orthographic { half_height: 1.0 })?;
/// let p = cam.project([0.5, 0.25, 0.0], 1.0).expect("in front of the camera");
/// assert!((p.ndc[0] - 0.5).abs() < 1e-6 && (p.ndc[1] - 0.25).abs() < 1e-6);
/// # Ok::<(), motion_viz::VizError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Camera {
    eye: Vec3,
    right: Vec3,
    up: Vec3,
    forward: Vec3,
    projection: Projection,
}

impl Camera {
    /// A camera at `eye` looking at `target`, with `up` as the up hint.
    ///
    /// Errors when `eye == target`, when `up` is parallel to the view direction, or when the
    /// projection parameters are out of range.
    pub fn look_at(eye: Vec3, target: Vec3, up: Vec3, projection: Projection) -> Result<Self> {
        let f = sub(target, eye);
        if !greater(norm(f), 1e-9) {
            return Err(invalid(
                "camera",
                format!("eye {eye:?} equals target {target:?}"),
            ));
        }
        let forward = normalize(f);
        let r = cross(forward, up);
        if !greater(norm(r), 1e-6 * norm(up).max(1e-30)) {
            return Err(invalid(
                "camera up",
                format!("{up:?} is parallel to the view direction {forward:?}"),
            ));
        }
        let right = normalize(r);
        let up = cross(right, forward);
        match projection {
            Projection::Orthographic { half_height } if !greater(half_height, 0.0) => {
                return Err(invalid("half_height", format!("{half_height} must be > 0")));
            }
            Projection::Perspective { fov_y, near }
                if !(fov_y > 0.0 && fov_y < std::f32::consts::PI && near > 0.0) =>
            {
                return Err(invalid(
                    "perspective",
                    format!("fov_y {fov_y} must be in (0, pi) and near {near} > 0"),
                ));
            }
            _ => {}
        }
        Ok(Self {
            eye,
            right,
            up,
            forward,
            projection,
        })
    }

    /// A camera looking along `direction` that frames all `points` with a relative `margin`
    /// (0.1 = 10 % free space) on an image of the given `aspect` (width / height).
    ///
    /// For a perspective projection the camera backs off until the front face of the points'
    /// view-space bounding box fills the field of view (so every point is inside). Errors on an empty or non-finite point set.
    pub fn framing(
        points: &[Vec3],
        direction: Vec3,
        up: Vec3,
        projection: Projection,
        aspect: f32,
        margin: f32,
    ) -> Result<Self> {
        if points.is_empty() {
            return Err(invalid("points", "cannot frame an empty point set"));
        }
        if let Some(p) = points.iter().find(|p| !p.iter().all(|c| c.is_finite())) {
            return Err(invalid("points", format!("non-finite point {p:?}")));
        }
        if !greater(aspect, 0.0) {
            return Err(invalid("aspect", format!("{aspect} must be > 0")));
        }
        // Orientation first (eye at the origin), then the view-space bounding box.
        let probe = Self::look_at([0.0; 3], direction, up, projection)?;
        let (mut lo, mut hi) = ([f32::INFINITY; 3], [f32::NEG_INFINITY; 3]);
        for &p in points {
            let v = probe.to_view(p);
            for k in 0..3 {
                lo[k] = lo[k].min(v[k]);
                hi[k] = hi[k].max(v[k]);
            }
        }
        let c = [
            0.5 * (lo[0] + hi[0]),
            0.5 * (lo[1] + hi[1]),
            0.5 * (lo[2] + hi[2]),
        ];
        let centre = add(
            add(scale(probe.right, c[0]), scale(probe.up, c[1])),
            scale(probe.forward, c[2]),
        );
        let half_w = 0.5 * (hi[0] - lo[0]);
        let half_h = 0.5 * (hi[1] - lo[1]);
        let half_d = 0.5 * (hi[2] - lo[2]);
        let m = 1.0 + margin.max(0.0);
        let needed = (half_h.max(half_w / aspect) * m).max(1e-6);
        let (projection, distance) = match projection {
            Projection::Orthographic { .. } => (
                Projection::Orthographic {
                    half_height: needed,
                },
                2.0 * half_d + needed + 1.0,
            ),
            Projection::Perspective { fov_y, near } => {
                // The front face of the box (depth half_d nearer than the centre) projects
                // largest: put it where `needed` just fills the vertical field of view.
                let d = needed / (0.5 * fov_y).tan() + half_d;
                (Projection::Perspective { fov_y, near }, d)
            }
        };
        let dir = normalize(direction);
        Self::look_at(sub(centre, scale(dir, distance)), centre, up, projection)
    }

    /// The projection in use.
    pub fn projection(&self) -> Projection {
        self.projection
    }

    /// The camera position.
    pub fn eye(&self) -> Vec3 {
        self.eye
    }

    /// The unit viewing direction.
    pub fn forward(&self) -> Vec3 {
        self.forward
    }

    /// World point to view space `(right, up, forward distance)`.
    pub fn to_view(&self, p: Vec3) -> Vec3 {
        let d = sub(p, self.eye);
        [dot(d, self.right), dot(d, self.up), dot(d, self.forward)]
    }

    /// World direction to view space (no translation).
    pub fn dir_to_view(&self, d: Vec3) -> Vec3 {
        [dot(d, self.right), dot(d, self.up), dot(d, self.forward)]
    }

    /// View-space direction to world space (no translation).
    pub fn dir_to_world(&self, d: Vec3) -> Vec3 {
        add(
            add(scale(self.right, d[0]), scale(self.up, d[1])),
            scale(self.forward, d[2]),
        )
    }

    /// Projects a world point for an image of the given `aspect` (width / height). Returns
    /// `None` for a perspective camera when the point is closer than the near plane.
    pub fn project(&self, p: Vec3, aspect: f32) -> Option<Projected> {
        let [x, y, z] = self.to_view(p);
        match self.projection {
            Projection::Orthographic { half_height } => Some(Projected {
                ndc: [x / (half_height * aspect), y / half_height],
                depth: z,
            }),
            Projection::Perspective { fov_y, near } => {
                if z < near {
                    return None;
                }
                let t = (0.5 * fov_y).tan();
                Some(Projected {
                    ndc: [x / (z * t * aspect), y / (z * t)],
                    // -1/z is affine in screen space and increases with distance.
                    depth: -1.0 / z,
                })
            }
        }
    }

    /// Unit direction from a world point towards the viewer (used for two-sided shading).
    pub fn towards_viewer(&self, p: Vec3) -> Vec3 {
        match self.projection {
            Projection::Orthographic { .. } => scale(self.forward, -1.0),
            Projection::Perspective { .. } => normalize(sub(self.eye, p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perspective_shrinks_with_distance() -> Result<()> {
        let cam = Camera::look_at(
            [0.0, 0.0, 0.0],
            [0.0, 0.0, -1.0],
            [0.0, 1.0, 0.0],
            Projection::Perspective {
                fov_y: std::f32::consts::FRAC_PI_2,
                near: 0.1,
            },
        )?;
        let near = cam
            .project([1.0, 0.0, -2.0], 1.0)
            .ok_or(invalid("p", "culled"))?;
        let far = cam
            .project([1.0, 0.0, -4.0], 1.0)
            .ok_or(invalid("p", "culled"))?;
        // tan(45 deg) = 1: x / z.
        assert!((near.ndc[0] - 0.5).abs() < 1e-6);
        assert!((far.ndc[0] - 0.25).abs() < 1e-6);
        assert!(near.depth < far.depth);
        assert!(cam.project([0.0, 0.0, 1.0], 1.0).is_none());
        Ok(())
    }

    #[test]
    fn framing_keeps_points_inside() -> Result<()> {
        let pts = [[-1.0, 0.0, 0.0], [1.0, 2.0, 0.5], [0.2, -0.5, -0.3]];
        for projection in [
            Projection::Orthographic { half_height: 1.0 },
            Projection::Perspective {
                fov_y: 0.6,
                near: 0.01,
            },
        ] {
            let cam = Camera::framing(
                &pts,
                [0.0, 0.0, -1.0],
                [0.0, 1.0, 0.0],
                projection,
                1.5,
                0.1,
            )?;
            for p in pts {
                let q = cam.project(p, 1.5).ok_or(invalid("p", "culled"))?;
                assert!(q.ndc[0].abs() <= 1.0 && q.ndc[1].abs() <= 1.0, "{q:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn degenerate_cameras_are_errors() {
        let o = Projection::Orthographic { half_height: 1.0 };
        assert!(Camera::look_at([0.0; 3], [0.0; 3], [0.0, 1.0, 0.0], o).is_err());
        assert!(Camera::look_at([0.0; 3], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], o).is_err());
        let bad = Projection::Orthographic { half_height: 0.0 };
        assert!(Camera::look_at([0.0; 3], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0], bad).is_err());
        assert!(Camera::framing(&[], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0], o, 1.0, 0.1).is_err());
    }
}
