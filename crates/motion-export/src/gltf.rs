//! Binary glTF 2.0 (`.glb`) export of a posed SMPL / SMPL-H motion: the skinned body mesh, its
//! joint hierarchy and one animation.
//!
//! Format: Khronos Group, "glTF 2.0 Specification" (2021), sections 3.7 (skins), 3.11
//! (animations) and 4 (GLB container). The JSON document is built with the `gltf-json` crate;
//! the GLB container (12-byte header, a `JSON` chunk padded with spaces, a `BIN` chunk padded
//! with zeros) is written here.
//!
//! # What the file holds
//! - **Nodes:** one per joint of the body model, in joint order (node `j` is joint `j`, named
//!   after [`smpl::Skeleton`]), each with its rest translation from its parent (the root: its
//!   rest position) and no rest rotation, so the bind pose is the model's T-pose. With
//!   [`GlbOptions::mesh`] also a node `"body"` holding the mesh and the skin. The scene's roots
//!   are the root joint and the mesh node.
//! - **Mesh** (optional): the rest vertices `v_template` (shaped by the betas when given),
//!   area-weighted vertex normals, the triangles of `faces()` (`u32` indices),
//!   `JOINTS_0` (`u16`) and `WEIGHTS_0` (`f32`) holding each vertex's four largest skinning
//!   weights renormalised to sum 1 (a vertex without weight is bound to the root).
//! - **Skin:** all joints, inverse bind matrices `translation(-J_j)` (rest joints `J`),
//!   skeleton root = the root joint node.
//! - **Animation** `"motion"`: `T` keyframes at times `k / fps` seconds, `LINEAR`
//!   interpolation; a rotation channel (unit quaternion `(x, y, z, w)`, sign-continuous over
//!   the frames so slerp takes the short way) for every joint and a translation channel for the
//!   root.
//!
//! # Axes and units
//! glTF is Y up and in metres. The motion world (SMPL-RIFKE: right-handed, Z up) is turned Y up
//! by the fixed rotation `C: (x, y, z) -> (x, z, -y)` (-90 degrees about X), **baked into the
//! root joint**: its animated rotation is `C @ global_orient` and its animated translation
//! `C @ (transl + J_0)`. No extra parent node is added, and the rest skeleton and mesh stay in
//! the body model's canonical frame (already Y up, facing +Z), so the bind pose is upright.
//! Blender's glTF importer (`+Y Up` on) maps the file back to the Z-up world.
//!
//! # Limits
//! Pose blend shapes (`posedirs`) are not exported: the file holds pure linear blend skinning
//! with at most four influences per vertex, as glTF viewers skin.

use std::path::Path;

use candle::DType;
use gltf_json as json;
use json::accessor::{ComponentType, GenericComponentType, Type};
use json::animation::{Interpolation, Property};
use json::validation::{Checked::Valid, USize64};
use json::{Index, Root};
use smpl::{BodyModel, BodyParams};

use crate::atomic::write_atomic;
use crate::error::{ExportError, Result};
use crate::math;
use crate::pose::{Motion, prepare, shaped_rest};

/// Options of [`write_glb`] / [`glb_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GlbOptions {
    /// Include the skinned body mesh (default `true`); `false` writes the animated skeleton
    /// only (nodes, skin and animation), e.g. for retargeting.
    pub mesh: bool,
}

impl Default for GlbOptions {
    fn default() -> Self {
        Self { mesh: true }
    }
}

/// The `.glb` bytes of a posed motion (see the [module docs](self) for contents and axes).
///
/// # Shapes
/// `params` for `T >= 1` frames, local rotation matrices: `global_orient [T, 3, 3]`,
/// `body_pose [T, 21, 3, 3]`, `left_hand_pose` / `right_hand_pose [T, 15, 3, 3]` (SMPL:
/// `[T, 1, 3, 3]`), `transl [T, 3]` in metres in the Z-up motion world; `betas` `None` (the
/// template body) or `[B]` / `[1, B]` / `[T, B]` with identical rows. `fps` is the frame rate
/// (frames per second, finite and positive); keyframe `k` is at `k / fps` seconds.
///
/// # Errors
/// A typed [`crate::ExportError`] naming the argument, joint and frame at fault (as
/// [`crate::bvh_string`]), or [`crate::ExportError::TooLarge`] past the 4 GiB GLB limit.
pub fn glb_bytes(
    body: &BodyModel,
    params: &BodyParams,
    fps: f32,
    opts: &GlbOptions,
) -> Result<Vec<u8>> {
    let motion = prepare(body, params, fps)?;
    let mut b = Builder::default();
    b.root.asset.generator = Some(format!("motion-export {}", env!("CARGO_PKG_VERSION")));
    b.root.push(json::Buffer {
        byte_length: USize64(0),
        name: None,
        uri: None,
        extensions: None,
        extras: Default::default(),
    });

    let nj = motion.num_joints();
    let mut children = vec![Vec::new(); nj];
    for (j, p) in motion.parents.iter().enumerate() {
        if let Some(p) = p {
            children[*p].push(Index::new(j as u32));
        }
    }
    for (j, ch) in children.into_iter().enumerate() {
        let t = motion.rest_offset(j);
        b.root.push(json::Node {
            name: Some(motion.name(j).to_string()),
            translation: Some([t[0] as f32, t[1] as f32, t[2] as f32]),
            children: (!ch.is_empty()).then_some(ch),
            ..Default::default()
        });
    }
    let mut scene_nodes = vec![Index::new(0)];

    if opts.mesh {
        let node = mesh_and_skin(&mut b, body, params, &motion)?;
        scene_nodes.push(node);
    }
    animation(&mut b, &motion);

    let scene = b.root.push(json::Scene {
        extensions: None,
        extras: Default::default(),
        name: Some("motion".to_string()),
        nodes: scene_nodes,
    });
    b.root.scene = Some(scene);
    while !b.bin.len().is_multiple_of(4) {
        b.bin.push(0);
    }
    b.root.buffers[0].byte_length = USize64::from(b.bin.len());
    let json_bytes = b.root.to_vec()?;
    glb_container(json_bytes, b.bin)
}

/// Writes the `.glb` of a posed motion to `path` atomically (temporary file in the same folder,
/// then rename; on error no partial file is left). Arguments as [`glb_bytes`]; the folder must
/// exist.
pub fn write_glb(
    path: impl AsRef<Path>,
    body: &BodyModel,
    params: &BodyParams,
    fps: f32,
    opts: &GlbOptions,
) -> Result<()> {
    let bytes = glb_bytes(body, params, fps, opts)?;
    write_atomic(path.as_ref(), &bytes)
}

/// The glTF document under construction and its binary buffer.
#[derive(Default)]
struct Builder {
    root: Root,
    bin: Vec<u8>,
}

impl Builder {
    /// Appends `bytes` (4-byte aligned) as a buffer view.
    fn view(
        &mut self,
        bytes: &[u8],
        target: Option<json::buffer::Target>,
    ) -> Index<json::buffer::View> {
        while !self.bin.len().is_multiple_of(4) {
            self.bin.push(0);
        }
        let offset = self.bin.len();
        self.bin.extend_from_slice(bytes);
        self.root.push(json::buffer::View {
            buffer: Index::new(0),
            byte_length: USize64::from(bytes.len()),
            byte_offset: Some(USize64::from(offset)),
            byte_stride: None,
            name: None,
            target: target.map(Valid),
            extensions: None,
            extras: Default::default(),
        })
    }

    /// An accessor over a new view holding `bytes`.
    #[allow(clippy::too_many_arguments)]
    fn accessor(
        &mut self,
        bytes: &[u8],
        count: usize,
        component: ComponentType,
        type_: Type,
        target: Option<json::buffer::Target>,
        bounds: Option<(Vec<f32>, Vec<f32>)>,
    ) -> Index<json::Accessor> {
        let view = self.view(bytes, target);
        let (min, max) = match bounds {
            Some((lo, hi)) => (Some(json::Value::from(lo)), Some(json::Value::from(hi))),
            None => (None, None),
        };
        self.root.push(json::Accessor {
            buffer_view: Some(view),
            byte_offset: None,
            count: USize64::from(count),
            component_type: Valid(GenericComponentType(component)),
            extensions: None,
            extras: Default::default(),
            type_: Valid(type_),
            min,
            max,
            name: None,
            normalized: false,
            sparse: None,
        })
    }

    /// An `f32` accessor of `n`-component elements; `bounds` adds per-component min / max.
    fn f32_accessor(
        &mut self,
        data: &[f32],
        n: usize,
        type_: Type,
        target: Option<json::buffer::Target>,
        bounds: bool,
    ) -> Index<json::Accessor> {
        let count = data.len() / n;
        let bounds = bounds.then(|| {
            let mut lo = vec![f32::INFINITY; n];
            let mut hi = vec![f32::NEG_INFINITY; n];
            for e in data.chunks_exact(n) {
                for k in 0..n {
                    lo[k] = lo[k].min(e[k]);
                    hi[k] = hi[k].max(e[k]);
                }
            }
            (lo, hi)
        });
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.accessor(&bytes, count, ComponentType::F32, type_, target, bounds)
    }
}

/// Adds the mesh, the skin and the node holding both; returns that node.
fn mesh_and_skin(
    b: &mut Builder,
    body: &BodyModel,
    params: &BodyParams,
    motion: &Motion,
) -> Result<Index<json::Node>> {
    let nj = motion.num_joints();
    let (_, verts) = shaped_rest(body, params.betas.as_ref())?;
    let positions = verts
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let nv = positions.len() / 3;
    let faces = body
        .faces()
        .to_dtype(DType::U32)?
        .flatten_all()?
        .to_vec1::<u32>()?;
    if let Some(bad) = faces.iter().find(|&&i| i as usize >= nv) {
        return Err(ExportError::InvalidValue {
            what: format!("faces of body model {}", body.path().display()),
            reason: format!("vertex id {bad} out of range 0..{nv}"),
        });
    }
    let weights = body
        .weights()
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    if weights.len() != nv * nj {
        return Err(crate::error::shape_err(
            "skinning weights",
            format!("[{nv}, {nj}]"),
            body.weights().dims(),
        ));
    }

    let normals = vertex_normals(&positions, &faces);
    let (joints4, weights4) = top4_weights(&weights, nj);

    let array = Some(json::buffer::Target::ArrayBuffer);
    let pos = b.f32_accessor(&positions, 3, Type::Vec3, array, true);
    let nrm = b.f32_accessor(&normals, 3, Type::Vec3, array, false);
    let jbytes: Vec<u8> = joints4.iter().flat_map(|x| x.to_le_bytes()).collect();
    let jnt = b.accessor(&jbytes, nv, ComponentType::U16, Type::Vec4, array, None);
    let wgt = b.f32_accessor(&weights4, 4, Type::Vec4, array, false);
    let ibytes: Vec<u8> = faces.iter().flat_map(|x| x.to_le_bytes()).collect();
    let idx = b.accessor(
        &ibytes,
        faces.len(),
        ComponentType::U32,
        Type::Scalar,
        Some(json::buffer::Target::ElementArrayBuffer),
        None,
    );
    let attributes = [
        (json::mesh::Semantic::Positions, pos),
        (json::mesh::Semantic::Normals, nrm),
        (json::mesh::Semantic::Joints(0), jnt),
        (json::mesh::Semantic::Weights(0), wgt),
    ]
    .into_iter()
    .map(|(s, a)| (Valid(s), a))
    .collect();
    let mesh = b.root.push(json::Mesh {
        extensions: None,
        extras: Default::default(),
        name: Some("body".to_string()),
        primitives: vec![json::mesh::Primitive {
            attributes,
            extensions: None,
            extras: Default::default(),
            indices: Some(idx),
            material: None,
            mode: Valid(json::mesh::Mode::Triangles),
            targets: None,
        }],
        weights: None,
    });

    // Inverse bind matrices (column-major): the bind pose of joint j is translation(J_j).
    let mut ibm = Vec::with_capacity(16 * nj);
    for r in &motion.rest_joints {
        ibm.extend_from_slice(&[1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        ibm.extend_from_slice(&[-r[0] as f32, -r[1] as f32, -r[2] as f32, 1.0]);
    }
    let ibm = b.f32_accessor(&ibm, 16, Type::Mat4, None, false);
    let skin = b.root.push(json::Skin {
        extensions: None,
        extras: Default::default(),
        inverse_bind_matrices: Some(ibm),
        joints: (0..nj as u32).map(Index::new).collect(),
        name: Some(format!("{:?}", motion.skeleton)),
        skeleton: Some(Index::new(0)),
    });
    Ok(b.root.push(json::Node {
        name: Some("body".to_string()),
        mesh: Some(mesh),
        skin: Some(skin),
        ..Default::default()
    }))
}

/// Adds the animation: a rotation channel per joint and the root translation.
fn animation(b: &mut Builder, m: &Motion) {
    let nj = m.num_joints();
    let times: Vec<f32> = (0..m.frames).map(|k| (k as f64 / m.fps) as f32).collect();
    let input = b.f32_accessor(&times, 1, Type::Scalar, None, true);
    let mut samplers = Vec::with_capacity(nj + 1);
    let mut channels = Vec::with_capacity(nj + 1);
    let mut add = |output, node: usize, path: Property| {
        channels.push(json::animation::Channel {
            sampler: Index::new(samplers.len() as u32),
            target: json::animation::Target {
                extensions: None,
                extras: Default::default(),
                node: Index::new(node as u32),
                path: Valid(path),
            },
            extensions: None,
            extras: Default::default(),
        });
        samplers.push(json::animation::Sampler {
            extensions: None,
            extras: Default::default(),
            input,
            interpolation: Valid(Interpolation::Linear),
            output,
        });
    };
    for j in 0..nj {
        let mut quats = Vec::with_capacity(4 * m.frames);
        let mut prev = [0.0f64, 0.0, 0.0, 1.0];
        for f in 0..m.frames {
            let mut q = math::quat_xyzw(m.rotation(f, j));
            let dot: f64 = q.iter().zip(&prev).map(|(a, c)| a * c).sum();
            if f > 0 && dot < 0.0 {
                q = q.map(|x| -x);
            }
            prev = q;
            quats.extend(q.iter().map(|&x| x as f32));
        }
        let output = b.f32_accessor(&quats, 4, Type::Vec4, None, false);
        add(output, j, Property::Rotation);
    }
    let transl: Vec<f32> = m
        .root_position
        .iter()
        .flat_map(|p| p.map(|x| x as f32))
        .collect();
    let output = b.f32_accessor(&transl, 3, Type::Vec3, None, false);
    add(output, 0, Property::Translation);
    b.root.push(json::Animation {
        extensions: None,
        extras: Default::default(),
        channels,
        name: Some("motion".to_string()),
        samplers,
    });
}

/// Area-weighted vertex normals `[V * 3]` (faces counter-clockwise seen from outside); a
/// vertex on no face gets `+Y`.
fn vertex_normals(positions: &[f32], faces: &[u32]) -> Vec<f32> {
    let mut acc = vec![0.0f64; positions.len()];
    let p = |i: u32| {
        let i = 3 * i as usize;
        [
            f64::from(positions[i]),
            f64::from(positions[i + 1]),
            f64::from(positions[i + 2]),
        ]
    };
    for tri in faces.chunks_exact(3) {
        let (a, b, c) = (p(tri[0]), p(tri[1]), p(tri[2]));
        let u = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
        let v = [c[0] - a[0], c[1] - a[1], c[2] - a[2]];
        let n = [
            u[1] * v[2] - u[2] * v[1],
            u[2] * v[0] - u[0] * v[2],
            u[0] * v[1] - u[1] * v[0],
        ];
        for &i in tri {
            for k in 0..3 {
                acc[3 * i as usize + k] += n[k];
            }
        }
    }
    acc.chunks_exact(3)
        .flat_map(|n| {
            let len = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
            if len > 0.0 && len.is_finite() {
                [
                    (n[0] / len) as f32,
                    (n[1] / len) as f32,
                    (n[2] / len) as f32,
                ]
            } else {
                [0.0, 1.0, 0.0]
            }
        })
        .collect()
}

/// The four largest skinning weights of each vertex (ties: lower joint first), renormalised
/// to sum 1: joint ids `[V * 4]` and weights `[V * 4]` (unused slots: joint 0, weight 0). A
/// vertex whose weights are all zero (or negative) is bound to joint 0.
fn top4_weights(weights: &[f32], nj: usize) -> (Vec<u16>, Vec<f32>) {
    let nv = weights.len() / nj.max(1);
    let mut joints = Vec::with_capacity(4 * nv);
    let mut out = Vec::with_capacity(4 * nv);
    let mut row: Vec<(f32, usize)> = Vec::with_capacity(nj);
    for w in weights.chunks_exact(nj) {
        row.clear();
        row.extend(
            w.iter()
                .enumerate()
                .filter(|(_, x)| **x > 0.0)
                .map(|(j, x)| (*x, j)),
        );
        row.sort_by(|a, c| c.0.total_cmp(&a.0).then(a.1.cmp(&c.1)));
        row.truncate(4);
        let sum: f32 = row.iter().map(|e| e.0).sum();
        if row.is_empty() || !sum.is_finite() || sum <= 0.0 {
            joints.extend_from_slice(&[0, 0, 0, 0]);
            out.extend_from_slice(&[1.0, 0.0, 0.0, 0.0]);
            continue;
        }
        for k in 0..4 {
            match row.get(k) {
                Some(&(x, j)) => {
                    joints.push(j as u16);
                    out.push(x / sum);
                }
                None => {
                    joints.push(0);
                    out.push(0.0);
                }
            }
        }
    }
    (joints, out)
}

/// The GLB container: header, `JSON` chunk (space-padded), `BIN` chunk (zero-padded).
fn glb_container(mut json_bytes: Vec<u8>, mut bin: Vec<u8>) -> Result<Vec<u8>> {
    while !json_bytes.len().is_multiple_of(4) {
        json_bytes.push(b' ');
    }
    while !bin.len().is_multiple_of(4) {
        bin.push(0);
    }
    let total = 12 + 8 + json_bytes.len() + 8 + bin.len();
    let too_large = || ExportError::TooLarge {
        what: "glTF binary".to_string(),
        reason: format!("{total} bytes exceed the 4 GiB limit of the GLB container"),
    };
    let total32 = u32::try_from(total).map_err(|_| too_large())?;
    let json_len = u32::try_from(json_bytes.len()).map_err(|_| too_large())?;
    let bin_len = u32::try_from(bin.len()).map_err(|_| too_large())?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(b"glTF");
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&total32.to_le_bytes());
    out.extend_from_slice(&json_len.to_le_bytes());
    out.extend_from_slice(b"JSON");
    out.extend_from_slice(&json_bytes);
    out.extend_from_slice(&bin_len.to_le_bytes());
    out.extend_from_slice(b"BIN\0");
    out.extend_from_slice(&bin);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top4_keeps_the_largest_weights_renormalised_and_binds_empty_rows_to_the_root() {
        let w = [
            0.1, 0.3, 0.05, 0.2, 0.25, 0.1, // 6 influences
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, // none
            0.0, 0.0, 1.0, 0.0, 0.0, 0.0, // one
        ];
        let (j, x) = top4_weights(&w, 6);
        assert_eq!(&j[..4], &[1, 4, 3, 0]);
        let s = 0.3 + 0.25 + 0.2 + 0.1;
        for (a, b) in x[..4].iter().zip([0.3 / s, 0.25 / s, 0.2 / s, 0.1 / s]) {
            assert!((a - b).abs() < 1e-6, "{x:?}");
        }
        assert_eq!(&j[4..8], &[0, 0, 0, 0]);
        assert_eq!(&x[4..8], &[1.0, 0.0, 0.0, 0.0]);
        assert_eq!(&j[8..12], &[2, 0, 0, 0]);
        assert_eq!(&x[8..12], &[1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn glb_container_pads_chunks_to_four_bytes_and_records_the_total_length() -> Result<()> {
        let out = glb_container(b"{}".to_vec(), vec![1, 2, 3, 4, 5])?;
        assert_eq!(&out[..4], b"glTF");
        assert_eq!(out.len(), 12 + 8 + 4 + 8 + 8);
        assert_eq!(
            u32::from_le_bytes([out[8], out[9], out[10], out[11]]) as usize,
            out.len()
        );
        assert_eq!(&out[20..24], b"{}  ");
        assert_eq!(&out[28..32], b"BIN\0");
        assert_eq!(&out[32..], &[1, 2, 3, 4, 5, 0, 0, 0]);
        Ok(())
    }
}
