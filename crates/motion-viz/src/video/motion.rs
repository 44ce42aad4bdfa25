//! The input of a motion video: per-frame point sequences and the motion (mesh and/or skeleton).

use std::borrow::Cow;

use candle::{DType, Tensor};

use crate::error::{Result, VizError, invalid};
use crate::math::{Vec3, add, scale};

/// Per-frame points of a motion: `T` frames of `N` world points each, stored flat
/// (frame-major), borrowed or owned.
///
/// # Shapes
/// `[T, N, 3]`: point `n` of frame `t` is at index `t * N + n`.
#[derive(Debug, Clone)]
pub struct PointSequence<'a> {
    points: Cow<'a, [Vec3]>,
    frames: usize,
    per_frame: usize,
}

impl<'a> PointSequence<'a> {
    /// Borrows `frames * per_frame` points (frame-major). Errors when the length disagrees or
    /// either count is zero.
    pub fn new(points: &'a [Vec3], frames: usize, per_frame: usize) -> Result<Self> {
        check_counts(points.len(), frames, per_frame, 1)?;
        Ok(Self {
            points: Cow::Borrowed(points),
            frames,
            per_frame,
        })
    }

    /// Borrows a flat `[T * N * 3]` float buffer (e.g. a `[T, V, 3]` array's memory). Errors
    /// when `data.len() != frames * per_frame * 3` or either count is zero.
    pub fn from_flat(data: &'a [f32], frames: usize, per_frame: usize) -> Result<Self> {
        check_counts(data.len(), frames, per_frame, 3)?;
        let (points, _) = data.as_chunks::<3>();
        Ok(Self {
            points: Cow::Borrowed(points),
            frames,
            per_frame,
        })
    }

    /// Copies nested frames (`[T][N]`). Errors on no frames, an empty frame, or frames of
    /// different lengths (naming the first one that differs).
    pub fn from_frames<P: AsRef<[Vec3]>>(frames: &[P]) -> Result<PointSequence<'static>> {
        let first = frames
            .first()
            .ok_or_else(|| invalid("points", "no frames"))?;
        let n = first.as_ref().len();
        let mut flat = Vec::with_capacity(frames.len() * n);
        for (t, f) in frames.iter().enumerate() {
            let f = f.as_ref();
            if f.len() != n {
                return Err(invalid(
                    "points",
                    format!("frame {t} has {} points, frame 0 has {n}", f.len()),
                ));
            }
            flat.extend_from_slice(f);
        }
        check_counts(flat.len(), frames.len(), n, 1)?;
        Ok(PointSequence {
            points: Cow::Owned(flat),
            frames: frames.len(),
            per_frame: n,
        })
    }

    /// Copies a `[T, N, 3]` float tensor (any float dtype, any device), e.g. the `vertices` or
    /// `joints` of `smpl::BodyModel::forward`.
    pub fn from_tensor(t: &Tensor) -> Result<PointSequence<'static>> {
        let dims = t.dims();
        if dims.len() != 3 || dims[2] != 3 {
            return Err(invalid(
                "points tensor",
                format!("shape {dims:?}, expected [T, N, 3]"),
            ));
        }
        let (frames, per_frame) = (dims[0], dims[1]);
        let flat: Vec<f32> = t
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .map_err(|source| VizError::Tensor {
                what: "points",
                source,
            })?;
        check_counts(flat.len(), frames, per_frame, 3)?;
        let (points, _) = flat.as_chunks::<3>();
        Ok(PointSequence {
            points: Cow::Owned(points.to_vec()),
            frames,
            per_frame,
        })
    }

    /// `T`, the number of frames.
    pub fn num_frames(&self) -> usize {
        self.frames
    }

    /// `N`, the number of points in each frame.
    pub fn points_per_frame(&self) -> usize {
        self.per_frame
    }

    /// The `N` points of frame `t` (panics when `t >= T`, like slice indexing).
    pub fn frame(&self, t: usize) -> &[Vec3] {
        &self.points[t * self.per_frame..(t + 1) * self.per_frame]
    }

    /// All `T * N` points, frame-major.
    pub fn points(&self) -> &[Vec3] {
        &self.points
    }

    /// Errors naming the first non-finite point as `what`: frame, index and value.
    fn check_finite(&self, what: &'static str, item: &str) -> Result<()> {
        if let Some((i, p)) = self
            .points
            .iter()
            .enumerate()
            .find(|(_, p)| !p.iter().all(|c| c.is_finite()))
        {
            return Err(invalid(
                what,
                format!(
                    "frame {}, {item} {} is not finite: {p:?}",
                    i / self.per_frame,
                    i % self.per_frame
                ),
            ));
        }
        Ok(())
    }
}

fn check_counts(len: usize, frames: usize, per_frame: usize, width: usize) -> Result<()> {
    if frames == 0 || per_frame == 0 {
        return Err(invalid(
            "points",
            format!("{frames} frames of {per_frame} points: both must be > 0"),
        ));
    }
    let want = frames
        .checked_mul(per_frame)
        .and_then(|n| n.checked_mul(width));
    if want != Some(len) {
        return Err(invalid(
            "points",
            format!("buffer of {len} values, expected {frames} x {per_frame} x {width}"),
        ));
    }
    Ok(())
}

/// A motion to render: a mesh sequence, a skeleton sequence, or both (same frame count).
///
/// With both, the joints give the root the camera follows (joint 0) and the mesh is drawn; the
/// skeleton is drawn too when
/// [`VideoOptions::skeleton_overlay`](super::VideoOptions::skeleton_overlay) is set.
/// Construction validates everything (finite points, indices in range), so rendering fails only
/// on bad options.
#[derive(Debug, Clone)]
pub struct Motion<'a> {
    mesh: Option<(PointSequence<'a>, Cow<'a, [[u32; 3]]>)>,
    skeleton: Option<(PointSequence<'a>, Cow<'a, [[usize; 2]]>)>,
}

impl<'a> Motion<'a> {
    /// A mesh motion: per-frame `vertices` `[T, V]` and triangle `faces` `[F]` (vertex-index
    /// triples). Errors on a non-finite vertex (naming frame and vertex) or a face out of range.
    pub fn mesh(vertices: PointSequence<'a>, faces: &'a [[u32; 3]]) -> Result<Self> {
        vertices.check_finite("vertices", "vertex")?;
        let n = vertices.points_per_frame();
        crate::canvas::check_faces(faces, n)?;
        Ok(Self {
            mesh: Some((vertices, Cow::Borrowed(faces))),
            skeleton: None,
        })
    }

    /// A skeleton motion: per-frame `joints` `[T, J]` (joint 0 = the root) and `bones` `[B]`
    /// (`[parent, child]` index pairs, e.g. from
    /// [`bones_from_parents`](crate::bones_from_parents)).
    /// Errors on a non-finite joint (naming frame and joint) or a bone out of range.
    pub fn skeleton(joints: PointSequence<'a>, bones: &'a [[usize; 2]]) -> Result<Self> {
        joints.check_finite("joints", "joint")?;
        let n = joints.points_per_frame();
        if let Some((i, b)) = bones
            .iter()
            .enumerate()
            .find(|(_, b)| b[0] >= n || b[1] >= n)
        {
            return Err(invalid(
                "bones",
                format!("bone {i} = {b:?} indexes past the {n} joints"),
            ));
        }
        Ok(Self {
            mesh: None,
            skeleton: Some((joints, Cow::Borrowed(bones))),
        })
    }

    /// Adds (or replaces) the skeleton of a mesh motion. Errors as [`Motion::skeleton`], and when
    /// the joints' frame count differs from the mesh's.
    pub fn with_skeleton(self, joints: PointSequence<'a>, bones: &'a [[usize; 2]]) -> Result<Self> {
        let skel = Self::skeleton(joints, bones)?.skeleton;
        if let (Some((v, _)), Some((j, _))) = (&self.mesh, &skel)
            && v.num_frames() != j.num_frames()
        {
            return Err(invalid(
                "joints",
                format!(
                    "{} frames of joints for {} frames of vertices",
                    j.num_frames(),
                    v.num_frames()
                ),
            ));
        }
        Ok(Self {
            mesh: self.mesh,
            skeleton: skel,
        })
    }

    /// `T`, the number of frames.
    pub fn num_frames(&self) -> usize {
        match (&self.mesh, &self.skeleton) {
            (Some((v, _)), _) => v.num_frames(),
            (None, Some((j, _))) => j.num_frames(),
            (None, None) => 0,
        }
    }

    /// The mesh sequence and faces, if any.
    pub fn mesh_frames(&self) -> Option<(&PointSequence<'a>, &[[u32; 3]])> {
        self.mesh.as_ref().map(|(v, f)| (v, f.as_ref()))
    }

    /// The joint sequence and bones, if any.
    pub fn skeleton_frames(&self) -> Option<(&PointSequence<'a>, &[[usize; 2]])> {
        self.skeleton.as_ref().map(|(j, b)| (j, b.as_ref()))
    }

    /// The root of frame `t`: joint 0, or the mesh centroid without joints.
    pub fn root(&self, t: usize) -> Vec3 {
        match (&self.skeleton, &self.mesh) {
            (Some((j, _)), _) => j.frame(t)[0],
            (None, Some((v, _))) => centroid(v.frame(t)),
            (None, None) => [0.0; 3],
        }
    }

    /// The points that define the body's extent in frame `t` (vertices, else joints).
    pub(super) fn body(&self, t: usize) -> &[Vec3] {
        match (&self.mesh, &self.skeleton) {
            (Some((v, _)), _) => v.frame(t),
            (None, Some((j, _))) => j.frame(t),
            (None, None) => &[],
        }
    }
}

pub(super) fn centroid(p: &[Vec3]) -> Vec3 {
    let n = p.len().max(1) as f32;
    scale(p.iter().fold([0.0; 3], |a, &q| add(a, q)), 1.0 / n)
}
