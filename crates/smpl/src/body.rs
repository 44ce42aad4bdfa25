//! The SMPL / SMPL-H body model: loading and the forward pass (shape blend shapes, joint
//! regression, pose blend shapes, forward kinematics, linear blend skinning).
//!
//! Loper et al., "SMPL: A Skinned Multi-Person Linear Model", SIGGRAPH Asia 2015 (Eqs. 1-10);
//! Romero et al., "Embodied Hands" (SMPL-H), SIGGRAPH Asia 2017. The step order and float32
//! semantics follow the `smplx` package's `lbs` as pinned by the `smplh` fixture.
//!
//! # Performance
//! The pose blend shapes are one `[T, 9 (J-1)] x [9 (J-1), 3V]` matmul. Joints whose rotation
//! is the same in every frame (the mean hand pose of the text-to-motion pipeline) are folded
//! into a single `[1, k] x [k, 3V]` product shared by all frames. Forward kinematics runs on the
//! host (J 4x4 products per frame). On the CPU, skinning uses the sparsity of the skinning
//! weights (a vertex has a handful of non-zero weights) and is spread over the available
//! threads; on other devices it is a `[V, J] x [T, J, 12]` batched matmul.

use std::path::{Path, PathBuf};

use candle::{DType, Device, Storage, Tensor};

use crate::error::{Result, SmplError, shape_err};
use crate::io::{Array, ArrayData, read_npz, read_safetensors};
use crate::rotation::mat3;
use crate::skeleton::{SMPLH_EXTRA_VERTEX_IDS, Skeleton};

/// Vertex count of the SMPL / SMPL-H mesh topology the default extra vertex ids index.
const SMPL_NUM_VERTICES: usize = 6890;

/// Inputs of [`BodyModel::forward`] for `T` frames.
///
/// The rotations are matrices. The joint counts of `body_pose`, `left_hand_pose` and
/// `right_hand_pose` must add up to the model's joints minus the root: SMPL-H takes 21 + 15 + 15;
/// SMPL (24 joints) takes 21 + 1 + 1 (its `left_hand` / `right_hand` joints 22 and 23).
#[derive(Debug, Clone)]
pub struct BodyParams {
    /// Shape coefficients `[B]`, `[1, B]` or `[T, B]` (at most the model's count); `None` = 0.
    pub betas: Option<Tensor>,
    /// Root orientation `[T, 3, 3]`.
    pub global_orient: Tensor,
    /// Body joint rotations (joints 1..21), local, `[T, 21, 3, 3]`.
    pub body_pose: Tensor,
    /// Left-hand finger rotations `[T, 15, 3, 3]` (SMPL: `[T, 1, 3, 3]`).
    pub left_hand_pose: Tensor,
    /// Right-hand finger rotations `[T, 15, 3, 3]` (SMPL: `[T, 1, 3, 3]`).
    pub right_hand_pose: Tensor,
    /// Translation `[T, 3]` added to every vertex and joint.
    pub transl: Tensor,
}

/// Output of [`BodyModel::forward`].
#[derive(Debug, Clone)]
pub struct BodyOutput {
    /// Skinned vertices `[T, V, 3]`.
    pub vertices: Tensor,
    /// Posed joints `[T, J, 3]`, followed by the 21 vertex joints of
    /// [`SMPLH_EXTRA_VERTEX_IDS`] when [`ForwardOptions::extra_vertex_joints`] is set
    /// (`[T, J + 21, 3]`, 73 for SMPL-H, as `smplx` returns them).
    pub joints: Tensor,
}

/// Options of [`BodyModel::forward_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardOptions {
    /// Append the 21 `smplx` vertex joints (nose, eyes, ears, feet, fingertips) to the joints.
    pub extra_vertex_joints: bool,
}

/// Precomputed sparse skinning weights (CSR over vertices) for the CPU kernel.
#[derive(Debug, Clone)]
struct SparseWeights {
    offsets: Vec<usize>,
    joints: Vec<u32>,
    weights: Vec<f32>,
    /// ELL copy: every vertex padded to `ell_width` entries (joint 0, weight 0; adding
    /// `0 * A` leaves the sum unchanged). `ell_width` is 2, 4 or 8, or 0 when a vertex has more
    /// than 8 joints (the CSR arrays are used then).
    ell_width: usize,
    ell_joints: Vec<u32>,
    ell_weights: Vec<f32>,
}

/// Vertices per block of the CPU path (a `[T, 3 * 1024]` pose-offset block stays in L3;
/// 512..2048 measured equal, 256 and a single block ~15-40 % more CPU time).
const VERTEX_BLOCK: usize = 1024;

/// Pose blend shapes `[9 (J - 1), 3V]`, whole (device path) or in vertex blocks of
/// [`VERTEX_BLOCK`] (CPU path: `[9 (J - 1), 3 nb]` each, contiguous).
#[derive(Debug, Clone)]
enum PoseDirs {
    Full(Tensor),
    Blocks(Vec<Tensor>),
}

/// A SMPL-family body model (SMPL, SMPL-H) in the official array layout.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use candle::{DType, Device, Tensor};
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/smplh/SMPLH_NEUTRAL.npz");
/// let model = smpl::BodyModel::from_npz(path, &Device::Cpu)?;
/// let t = 2;
/// let eye = |n: usize| Tensor::eye(3, DType::F32, &Device::Cpu)?.broadcast_as((t, n, 3, 3))?.contiguous();
/// let params = smpl::BodyParams {
///     betas: None,
///     global_orient: eye(1)?.squeeze(1)?,
///     body_pose: eye(21)?,
///     left_hand_pose: eye(15)?,
///     right_hand_pose: eye(15)?,
///     transl: Tensor::zeros((t, 3), DType::F32, &Device::Cpu)?,
/// };
/// let out = model.forward(&params)?;
/// assert_eq!(out.vertices.dims(), &[2, 6890, 3]);
/// assert_eq!(out.joints.dims(), &[2, 52, 3]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BodyModel {
    path: PathBuf,
    device: Device,
    num_vertices: usize,
    num_joints: usize,
    parents: Vec<Option<usize>>,
    v_template: Tensor,
    faces: Tensor,
    j_regressor: Tensor,
    weights: Tensor,
    /// `[B, 3V]` (transposed official `shapedirs [V, 3, B]`).
    shapedirs: Option<Tensor>,
    /// `[B, 3J]`: `J_regressor @ shapedirs` per coefficient.
    joint_shapedirs: Option<Tensor>,
    /// Pose blend shapes, transposed official `posedirs [V, 3, 9 (J - 1)]`.
    posedirs: Option<PoseDirs>,
    /// `J_regressor @ v_template`, `[J, 3]`, on the host.
    rest_joints: Vec<f32>,
    hands_mean: Option<(Tensor, Tensor)>,
    hands_components: Option<(Tensor, Tensor)>,
    /// Vertex ids of the extra vertex joints: the model's `extra_joints_idxs` array when it
    /// has one, else [`SMPLH_EXTRA_VERTEX_IDS`] for the 6890-vertex SMPL mesh.
    extra_vertex_ids: Option<Vec<u32>>,
    sparse: SparseWeights,
}

struct Loader<'a> {
    path: &'a Path,
    arrays: std::collections::HashMap<String, Array>,
}

impl Loader<'_> {
    fn get(&self, key: &str) -> Option<&Array> {
        self.arrays.get(key)
    }

    fn required(&self, key: &str) -> Result<&Array> {
        self.get(key).ok_or_else(|| SmplError::MissingArray {
            path: self.path.to_path_buf(),
            key: key.to_string(),
        })
    }

    fn inconsistent(&self, key: &str, got: &[usize], expected: String, reason: &str) -> SmplError {
        SmplError::InconsistentShape {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            got: got.to_vec(),
            expected: format!("{expected} ({reason})"),
        }
    }

    fn invalid(&self, key: &str, reason: String) -> SmplError {
        SmplError::InvalidArray {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            reason,
        }
    }

    /// The float data of `key`, checked finite.
    fn floats(&self, key: &str, a: &Array) -> Result<Vec<f32>> {
        match &a.data {
            ArrayData::F32(v) => {
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    return Err(
                        self.invalid(key, format!("non-finite value {} at flat index {i}", v[i]))
                    );
                }
                Ok(v.clone())
            }
            ArrayData::I64(v) => Ok(v.iter().map(|&x| x as f32).collect()),
        }
    }

    fn ints(&self, key: &str, a: &Array) -> Result<Vec<i64>> {
        match &a.data {
            ArrayData::I64(v) => Ok(v.clone()),
            ArrayData::F32(v) => {
                if v.iter().all(|x| x.fract() == 0.0 && x.is_finite()) {
                    Ok(v.iter().map(|&x| x as i64).collect())
                } else {
                    Err(self.invalid(key, "expected integer values".to_string()))
                }
            }
        }
    }
}

impl BodyModel {
    /// Loads a model from `.npz` (official array layout; compressed or not) or `.safetensors`
    /// (same array names). A `.pkl` path is refused with an error naming
    /// `data-scripts/convert_body_model.py`.
    ///
    /// Required arrays: `v_template [V,3]`, `f [F,3]`, `J_regressor [J,V]` (dense),
    /// `weights [V,J]`, `kintree_table [2,J]`. Optional, treated as zeros when absent:
    /// `shapedirs [V,3,B]`, `posedirs [V,3,9(J-1)]`; optional: `hands_mean{l,r} [45]`,
    /// `hands_components{l,r} [N,45]`, `extra_joints_idxs [N]` (vertex ids of the extra
    /// vertex joints, for meshes other than SMPL's 6890-vertex topology). Every shape is
    /// checked against the others and the offending array is named in the error.
    pub fn from_npz(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let arrays = match ext.as_deref() {
            Some("npz") => read_npz(path)?,
            Some("safetensors") => read_safetensors(path)?,
            Some("pkl") => {
                return Err(SmplError::PickleModel {
                    path: path.to_path_buf(),
                });
            }
            _ => {
                if !path.exists() {
                    return Err(SmplError::Read {
                        path: path.to_path_buf(),
                        reason: "file not found".to_string(),
                    });
                }
                return Err(SmplError::UnsupportedFormat {
                    path: path.to_path_buf(),
                });
            }
        };
        Self::from_arrays(Loader { path, arrays }, device)
    }

    /// As [`BodyModel::from_npz`] for the bytes of a file already in memory (e.g. fetched by a
    /// web page): `name` (its file name) chooses the format by its extension and names the
    /// file in errors.
    pub fn from_bytes(bytes: &[u8], name: &str, device: &Device) -> Result<Self> {
        let path = Path::new(name);
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let arrays = match ext.as_deref() {
            Some("npz") => crate::io::read_npz_from(std::io::Cursor::new(bytes), path)?,
            Some("safetensors") => crate::io::read_safetensors_bytes(bytes, path)?,
            _ => {
                return Err(SmplError::UnsupportedFormat {
                    path: path.to_path_buf(),
                });
            }
        };
        Self::from_arrays(Loader { path, arrays }, device)
    }

    /// Loads a model from `.safetensors` (alias of [`BodyModel::from_npz`], which dispatches on
    /// the extension).
    pub fn from_safetensors(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::from_npz(path, device)
    }

    fn from_arrays(ld: Loader<'_>, device: &Device) -> Result<Self> {
        let vt = ld.required("v_template")?;
        if vt.shape.len() != 2 || vt.shape[1] != 3 || vt.shape[0] == 0 {
            return Err(ld.inconsistent(
                "v_template",
                &vt.shape,
                "[V, 3]".into(),
                "vertex positions",
            ));
        }
        let v = vt.shape[0];
        let v_template = ld.floats("v_template", vt)?;

        let jr = ld.required("J_regressor")?;
        if jr.shape.len() != 2 || jr.shape[1] != v || jr.shape[0] < 2 {
            return Err(ld.inconsistent(
                "J_regressor",
                &jr.shape,
                format!("[J, {v}]"),
                "dense joint regressor over the v_template vertices",
            ));
        }
        let j = jr.shape[0];
        let j_regressor = ld.floats("J_regressor", jr)?;

        let w = ld.required("weights")?;
        if w.shape != [v, j] {
            return Err(ld.inconsistent(
                "weights",
                &w.shape,
                format!("[{v}, {j}]"),
                "V from v_template, J from J_regressor",
            ));
        }
        let weights = ld.floats("weights", w)?;

        let kt = ld.required("kintree_table")?;
        if kt.shape != [2, j] {
            return Err(ld.inconsistent(
                "kintree_table",
                &kt.shape,
                format!("[2, {j}]"),
                "J from J_regressor",
            ));
        }
        let kt_data = ld.ints("kintree_table", kt)?;
        let mut parents = Vec::with_capacity(j);
        for (i, &p) in kt_data[..j].iter().enumerate() {
            // The root's parent is stored as -1 or as uint32 4294967295.
            let parent = if p < 0 || p == i64::from(u32::MAX) {
                None
            } else {
                Some(p as usize)
            };
            match (i, parent) {
                (0, None) => {}
                (i, Some(p)) if i > 0 && p < i => {}
                _ => {
                    return Err(ld.invalid(
                        "kintree_table",
                        format!("joint {i} has parent {p}; the root must be joint 0 and every parent must precede its child"),
                    ));
                }
            }
            parents.push(parent);
        }

        let f = ld.required("f")?;
        if f.shape.len() != 2 || f.shape[1] != 3 {
            return Err(ld.inconsistent("f", &f.shape, "[F, 3]".into(), "triangle vertex ids"));
        }
        let faces = ld.ints("f", f)?;
        if let Some(bad) = faces.iter().find(|&&x| x < 0 || x as usize >= v) {
            return Err(ld.invalid("f", format!("vertex id {bad} out of range 0..{v}")));
        }
        let faces: Vec<u32> = faces.iter().map(|&x| x as u32).collect();

        let shapedirs = match ld.get("shapedirs") {
            None => None,
            Some(a) => {
                if a.shape.len() != 3 || a.shape[0] != v || a.shape[1] != 3 {
                    return Err(ld.inconsistent(
                        "shapedirs",
                        &a.shape,
                        format!("[{v}, 3, B]"),
                        "V from v_template",
                    ));
                }
                Some((a.shape[2], ld.floats("shapedirs", a)?))
            }
        };
        let pose_dim = 9 * (j - 1);
        let posedirs = match ld.get("posedirs") {
            None => None,
            Some(a) => {
                if a.shape != [v, 3, pose_dim] {
                    return Err(ld.inconsistent(
                        "posedirs",
                        &a.shape,
                        format!("[{v}, 3, {pose_dim}]"),
                        "V from v_template, 9 (J - 1) from J_regressor",
                    ));
                }
                Some(ld.floats("posedirs", a)?)
            }
        };
        let mut hands = Vec::new();
        for key in [
            "hands_meanl",
            "hands_meanr",
            "hands_componentsl",
            "hands_componentsr",
        ] {
            let Some(a) = ld.get(key) else {
                hands.push(None);
                continue;
            };
            let ok = if key.starts_with("hands_mean") {
                a.shape == [45]
            } else {
                a.shape.len() == 2 && a.shape[1] == 45
            };
            if !ok {
                let expected = if key.starts_with("hands_mean") {
                    "[45]"
                } else {
                    "[N, 45]"
                };
                return Err(ld.inconsistent(
                    key,
                    &a.shape,
                    expected.into(),
                    "15 finger joints x 3 (axis-angle)",
                ));
            }
            if j != 52 {
                return Err(ld.inconsistent(
                    key,
                    &a.shape,
                    "absent".into(),
                    "hand arrays need the 52-joint SMPL-H skeleton",
                ));
            }
            hands.push(Some(Tensor::from_vec(
                ld.floats(key, a)?,
                a.shape.clone(),
                device,
            )?));
        }
        let pair = |a: Option<Tensor>,
                    b: Option<Tensor>,
                    ka: &str,
                    kb: &str|
         -> Result<Option<(Tensor, Tensor)>> {
            match (a, b) {
                (Some(a), Some(b)) => Ok(Some((a, b))),
                (None, None) => Ok(None),
                (Some(_), None) => Err(ld.invalid(kb, format!("missing while {ka} is present"))),
                (None, Some(_)) => Err(ld.invalid(ka, format!("missing while {kb} is present"))),
            }
        };
        let mut hands = hands.into_iter();
        let (hml, hmr, hcl, hcr) = (
            hands.next().flatten(),
            hands.next().flatten(),
            hands.next().flatten(),
            hands.next().flatten(),
        );
        let hands_mean = pair(hml, hmr, "hands_meanl", "hands_meanr")?;
        let hands_components = pair(hcl, hcr, "hands_componentsl", "hands_componentsr")?;

        let extra_vertex_ids = match ld.get("extra_joints_idxs") {
            Some(a) => {
                if a.shape.len() != 1 || a.shape[0] == 0 {
                    return Err(ld.inconsistent(
                        "extra_joints_idxs",
                        &a.shape,
                        "[N]".into(),
                        "one vertex id per extra joint",
                    ));
                }
                let ids = ld.ints("extra_joints_idxs", a)?;
                let ids = ids
                    .iter()
                    .map(|&i| u32::try_from(i).ok().filter(|&i| (i as usize) < v))
                    .collect::<Option<Vec<u32>>>()
                    .ok_or_else(|| {
                        ld.invalid(
                            "extra_joints_idxs",
                            format!("vertex ids must lie in 0..{v}, got {ids:?}"),
                        )
                    })?;
                Some(ids)
            }
            None if v == SMPL_NUM_VERTICES => {
                Some(SMPLH_EXTRA_VERTEX_IDS.iter().map(|&i| i as u32).collect())
            }
            None => None,
        };

        // Rest joints, on the host in f64 accumulation-free float32 order k = 0..V.
        let cpu = Device::Cpu;
        let jreg_t = Tensor::from_vec(j_regressor, (j, v), &cpu)?;
        let vt_t = Tensor::from_vec(v_template, (v, 3), &cpu)?;
        let rest_joints = jreg_t.matmul(&vt_t)?.flatten_all()?.to_vec1::<f32>()?;

        let (shapedirs, joint_shapedirs) = match shapedirs {
            None => (None, None),
            Some((b, data)) => {
                let sd = Tensor::from_vec(data, (v, 3 * b), &cpu)?;
                // [J, 3B] -> [J, 3, B] -> [B, J, 3] -> [B, 3J]
                let jsd = jreg_t
                    .matmul(&sd)?
                    .reshape((j, 3, b))?
                    .permute((2, 0, 1))?
                    .reshape((b, 3 * j))?
                    .contiguous()?;
                let sd_t = sd.reshape((3 * v, b))?.t()?.contiguous()?;
                (Some(sd_t.to_device(device)?), Some(jsd.to_device(device)?))
            }
        };
        let posedirs = match posedirs {
            None => None,
            Some(data) => {
                let pd = Tensor::from_vec(data, (3 * v, pose_dim), &cpu)?.t()?;
                if device.is_cpu() {
                    let blocks = (0..v)
                        .step_by(VERTEX_BLOCK)
                        .map(|v0| {
                            let nb = VERTEX_BLOCK.min(v - v0);
                            pd.narrow(1, 3 * v0, 3 * nb)?.contiguous()
                        })
                        .collect::<candle::Result<Vec<_>>>()?;
                    Some(PoseDirs::Blocks(blocks))
                } else {
                    Some(PoseDirs::Full(pd.contiguous()?.to_device(device)?))
                }
            }
        };
        // Sparse skinning weights.
        let mut sparse = SparseWeights {
            offsets: Vec::with_capacity(v + 1),
            joints: Vec::new(),
            weights: Vec::new(),
            ell_width: 0,
            ell_joints: Vec::new(),
            ell_weights: Vec::new(),
        };
        sparse.offsets.push(0);
        for row in weights.chunks_exact(j) {
            for (jj, &x) in row.iter().enumerate() {
                if x != 0.0 {
                    sparse.joints.push(jj as u32);
                    sparse.weights.push(x);
                }
            }
            sparse.offsets.push(sparse.joints.len());
        }
        let max_nnz = sparse
            .offsets
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0);
        sparse.ell_width = match max_nnz {
            0..=2 => 2,
            3..=4 => 4,
            5..=8 => 8,
            _ => 0,
        };
        if sparse.ell_width > 0 {
            let k = sparse.ell_width;
            sparse.ell_joints = vec![0; v * k];
            sparse.ell_weights = vec![0.0; v * k];
            for vi in 0..v {
                let (a, b) = (sparse.offsets[vi], sparse.offsets[vi + 1]);
                sparse.ell_joints[vi * k..vi * k + b - a].copy_from_slice(&sparse.joints[a..b]);
                sparse.ell_weights[vi * k..vi * k + b - a].copy_from_slice(&sparse.weights[a..b]);
            }
        }

        let nf = faces.len() / 3;
        Ok(Self {
            path: ld.path.to_path_buf(),
            device: device.clone(),
            num_vertices: v,
            num_joints: j,
            parents,
            v_template: vt_t.to_device(device)?,
            faces: Tensor::from_vec(faces, (nf, 3), device)?,
            j_regressor: jreg_t.to_device(device)?,
            weights: Tensor::from_vec(weights, (v, j), device)?,
            shapedirs,
            joint_shapedirs,
            posedirs,
            rest_joints,
            hands_mean,
            hands_components,
            extra_vertex_ids,
            sparse,
        })
    }

    /// The file the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device holding the model's tensors.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Number of vertices `V`.
    pub fn num_vertices(&self) -> usize {
        self.num_vertices
    }

    /// Number of joints `J` (24 for SMPL, 52 for SMPL-H).
    pub fn num_joints(&self) -> usize {
        self.num_joints
    }

    /// The named skeleton, when `J` is 24 or 52.
    pub fn skeleton(&self) -> Option<Skeleton> {
        Skeleton::from_num_joints(self.num_joints)
    }

    /// Parent of each joint (`None` for the root).
    pub fn parents(&self) -> &[Option<usize>] {
        &self.parents
    }

    /// Number of shape coefficients (0 without `shapedirs`).
    pub fn num_betas(&self) -> usize {
        self.shapedirs.as_ref().map_or(0, |s| s.dims()[0])
    }

    /// Whether the model has pose blend shapes (`posedirs`).
    pub fn has_pose_blend_shapes(&self) -> bool {
        // (Full on accelerators, vertex blocks on the CPU.)
        self.posedirs.is_some()
    }

    /// Rest vertices `[V, 3]`.
    pub fn v_template(&self) -> &Tensor {
        &self.v_template
    }

    /// Triangles `[F, 3]` (`u32` vertex ids).
    pub fn faces(&self) -> &Tensor {
        &self.faces
    }

    /// Dense joint regressor `[J, V]`.
    pub fn j_regressor(&self) -> &Tensor {
        &self.j_regressor
    }

    /// Skinning weights `[V, J]`.
    pub fn weights(&self) -> &Tensor {
        &self.weights
    }

    /// Rest joints `J_regressor @ v_template`, `[J, 3]`.
    pub fn rest_joints(&self) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            self.rest_joints.clone(),
            (self.num_joints, 3),
            &self.device,
        )?)
    }

    /// Mean hand poses `(left, right)`, axis-angle `[45]` each, if the model has them.
    pub fn hands_mean(&self) -> Option<(&Tensor, &Tensor)> {
        self.hands_mean.as_ref().map(|(l, r)| (l, r))
    }

    /// Hand PCA bases `(left, right)`, `[N, 45]` each, if the model has them.
    pub fn hands_components(&self) -> Option<(&Tensor, &Tensor)> {
        self.hands_components.as_ref().map(|(l, r)| (l, r))
    }

    /// Runs the model: posed, skinned vertices and posed joints.
    ///
    /// # Shapes
    /// - `params.global_orient` `[T, 3, 3]`, `params.body_pose` `[T, 21, 3, 3]`,
    ///   `params.left_hand_pose` / `right_hand_pose` `[T, 15, 3, 3]` (SMPL: `[T, 1, 3, 3]`),
    ///   `params.transl` `[T, 3]`, `params.betas` `[B]` / `[1, B]` / `[T, B]` or `None`;
    /// - output `vertices` `[T, V, 3]`, `joints` `[T, J, 3]` (52 for SMPL-H).
    pub fn forward(&self, params: &BodyParams) -> Result<BodyOutput> {
        self.forward_with(params, &ForwardOptions::default())
    }

    /// Vertex ids of the extra vertex joints appended by
    /// [`ForwardOptions::extra_vertex_joints`]: the model's `extra_joints_idxs` array, or the
    /// SMPL mesh ids for a 6890-vertex model without one; `None` if the model has neither.
    pub fn extra_vertex_ids(&self) -> Option<&[u32]> {
        self.extra_vertex_ids.as_deref()
    }

    /// [`BodyModel::forward`] with options (e.g. the 21 extra vertex joints: `[T, J + 21, 3]`).
    ///
    /// # Shapes
    /// As [`BodyModel::forward`]; `joints` is `[T, J + 21, 3]` with `extra_vertex_joints`.
    pub fn forward_with(&self, params: &BodyParams, opts: &ForwardOptions) -> Result<BodyOutput> {
        let (t, rots) = self.full_pose(params)?;
        let (nv, nj) = (self.num_vertices, self.num_joints);
        let dev = &self.device;
        let transl = params.transl.to_dtype(DType::F32)?.to_device(dev)?;
        if transl.dims() != [t, 3] {
            return Err(shape_err("transl", &format!("[{t}, 3]"), transl.dims()));
        }
        check_finite("transl", &transl)?;
        if let Some(b) = &params.betas {
            check_finite("betas", b)?;
        }

        // (1) Shape blend shapes and joint regression.
        let (v_shaped, rest_joints) = self.shaped(params.betas.as_ref(), t)?;

        // (2) Pose-feature runs (R - I) of joints 1..J-1 (a single row for joints constant over
        // the frames); the matmul with posedirs happens per vertex block on the CPU.
        let runs = self.pose_runs(&rots, t)?;

        // (3) Forward kinematics on the host.
        let (posed_joints, transforms) = self.kinematics(&rots, &rest_joints, t);

        // (4) Pose blend shapes + linear blend skinning (+ transl).
        let vertices = match &self.posedirs {
            Some(PoseDirs::Full(pd)) => {
                let mut v_posed = v_shaped;
                let mut off: Option<Tensor> = None;
                for (start, feat) in &runs {
                    let term = feat.matmul(&pd.narrow(0, *start, feat.dims()[1])?)?;
                    off = Some(match off {
                        None => term,
                        Some(acc) => acc.broadcast_add(&term)?,
                    });
                }
                if let Some(off) = off {
                    v_posed = v_posed.broadcast_add(&off)?;
                }
                self.skin_tensor(&v_posed, &transforms, t)?
                    .broadcast_add(&transl.unsqueeze(1)?)?
            }
            blocks => {
                let blocks = match blocks {
                    Some(PoseDirs::Blocks(b)) => b.as_slice(),
                    _ => &[],
                };
                let tr = transl.flatten_all()?.to_vec1::<f32>()?;
                self.skin_cpu(&v_shaped, &runs, blocks, &transforms, &tr, t)?
            }
        };
        let mut joints = Tensor::from_vec(posed_joints, (t, nj, 3), dev)?
            .broadcast_add(&transl.unsqueeze(1)?)?;
        if opts.extra_vertex_joints {
            let Some(ids) = &self.extra_vertex_ids else {
                return Err(SmplError::Params(format!(
                    "extra vertex joints: {} has no `extra_joints_idxs` array and its mesh is not \
                     the {SMPL_NUM_VERTICES}-vertex SMPL topology ({nv} vertices)",
                    self.path.display()
                )));
            };
            let ids = Tensor::from_vec(ids.clone(), ids.len(), dev)?;
            let extra = vertices.index_select(&ids, 1)?;
            joints = Tensor::cat(&[&joints, &extra], 1)?;
        }
        Ok(BodyOutput { vertices, joints })
    }

    /// Validates the rotation inputs and returns `T` and the full pose `[T, J, 9]` on the host.
    fn full_pose(&self, p: &BodyParams) -> Result<(usize, Vec<f32>)> {
        let go = p.global_orient.dims();
        if go.len() != 3 || go[1..] != [3, 3] {
            return Err(shape_err("global_orient", "[T, 3, 3]", go));
        }
        let t = go[0];
        let mut parts = vec![
            p.global_orient
                .to_dtype(DType::F32)?
                .to_device(&Device::Cpu)?
                .unsqueeze(1)?,
        ];
        let mut total = 1;
        for (name, x) in [
            ("body_pose", &p.body_pose),
            ("left_hand_pose", &p.left_hand_pose),
            ("right_hand_pose", &p.right_hand_pose),
        ] {
            let d = x.dims();
            if d.len() != 4 || d[0] != t || d[2..] != [3, 3] {
                return Err(shape_err(name, &format!("[{t}, N, 3, 3]"), d));
            }
            total += d[1];
            parts.push(x.to_dtype(DType::F32)?.to_device(&Device::Cpu)?);
        }
        if total != self.num_joints {
            return Err(SmplError::Params(format!(
                "global_orient + body_pose + hand poses give {total} joints, the model has {} \
                 (body_pose {:?}, left_hand_pose {:?}, right_hand_pose {:?})",
                self.num_joints,
                p.body_pose.dims(),
                p.left_hand_pose.dims(),
                p.right_hand_pose.dims()
            )));
        }
        let rots = Tensor::cat(&parts, 1)?.flatten_all()?.to_vec1::<f32>()?;
        if let Some(i) = rots.iter().position(|x| !x.is_finite()) {
            return Err(SmplError::Params(format!(
                "non-finite rotation entry at frame {}, joint {}",
                i / (9 * self.num_joints),
                (i / 9) % self.num_joints
            )));
        }
        Ok((t, rots))
    }

    /// `v_shaped` `[T or 1, 3V]` (device) and rest joints `[T or 1, J, 3]` (host).
    fn shaped(&self, betas: Option<&Tensor>, t: usize) -> Result<(Tensor, Vec<Vec<f32>>)> {
        let nv = self.num_vertices;
        let base = self.v_template.reshape((1, 3 * nv))?;
        let (Some(betas), Some(sd), Some(jsd)) = (betas, &self.shapedirs, &self.joint_shapedirs)
        else {
            if let Some(b) = betas {
                check_betas(b, t, usize::MAX)?;
            }
            return Ok((base, vec![self.rest_joints.clone()]));
        };
        let b2 = check_betas(betas, t, sd.dims()[0])?
            .to_dtype(DType::F32)?
            .to_device(&self.device)?;
        let nb = b2.dims()[1];
        let v_shaped = base.broadcast_add(&b2.matmul(&sd.narrow(0, 0, nb)?)?)?;
        let rest = Tensor::from_vec(
            self.rest_joints.clone(),
            (1, 3 * self.num_joints),
            &self.device,
        )?;
        let joints = rest.broadcast_add(&b2.matmul(&jsd.narrow(0, 0, nb)?)?)?;
        let joints = joints.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
        Ok((v_shaped, joints))
    }

    /// Pose features of runs of consecutive joints that are either all varying or all constant
    /// over the frames: `(first posedirs row, feat [T or 1, 9 k])`, empty without `posedirs`.
    fn pose_runs(&self, rots: &[f32], t: usize) -> Result<Vec<(usize, Tensor)>> {
        if self.posedirs.is_none() || t == 0 {
            return Ok(Vec::new());
        }
        let nj = self.num_joints;
        // Joint j (1..J) is constant when every frame repeats frame 0's rotation.
        let constant: Vec<bool> = (1..nj)
            .map(|j| {
                let first = &rots[9 * j..9 * j + 9];
                (1..t).all(|f| &rots[9 * (f * nj + j)..9 * (f * nj + j) + 9] == first)
            })
            .collect();
        let mut runs = Vec::new();
        let mut start = 0;
        while start < nj - 1 {
            let c = constant[start];
            let mut end = start;
            while end < nj - 1 && constant[end] == c {
                end += 1;
            }
            let rows = if c { 1 } else { t };
            let k = 9 * (end - start);
            let mut feat = Vec::with_capacity(rows * k);
            for f in 0..rows {
                for j in start + 1..end + 1 {
                    let r = &rots[9 * (f * nj + j)..9 * (f * nj + j) + 9];
                    feat.extend(r.iter().zip(&mat3::IDENTITY).map(|(&x, &i)| x - i));
                }
            }
            runs.push((9 * start, Tensor::from_vec(feat, (rows, k), &self.device)?));
            start = end;
        }
        Ok(runs)
    }

    /// Posed joints `[T*J*3]` and skinning transforms `[T, J, 12]` (3x4 row-major) on the host.
    fn kinematics(&self, rots: &[f32], rest: &[Vec<f32>], t: usize) -> (Vec<f32>, Vec<f32>) {
        let nj = self.num_joints;
        let mut joints = vec![0f32; t * nj * 3];
        let mut transforms = vec![0f32; t * nj * 12];
        let mut g_rot = vec![[0f32; 9]; nj];
        let mut g_tr = vec![[0f32; 3]; nj];
        for f in 0..t {
            let jr = if rest.len() == 1 { &rest[0] } else { &rest[f] };
            for j in 0..nj {
                let mut r = [0f32; 9];
                r.copy_from_slice(&rots[9 * (f * nj + j)..9 * (f * nj + j) + 9]);
                let jj = [jr[3 * j], jr[3 * j + 1], jr[3 * j + 2]];
                match self.parents[j] {
                    None => {
                        g_rot[j] = r;
                        g_tr[j] = jj;
                    }
                    Some(p) => {
                        let rel = [
                            jj[0] - jr[3 * p],
                            jj[1] - jr[3 * p + 1],
                            jj[2] - jr[3 * p + 2],
                        ];
                        let pr = g_rot[p];
                        let pt = g_tr[p];
                        g_rot[j] = mat3::mul(&pr, &r);
                        let a = mat3::apply(&pr, &rel);
                        g_tr[j] = [a[0] + pt[0], a[1] + pt[1], a[2] + pt[2]];
                    }
                }
                let gr = g_rot[j];
                let gt = g_tr[j];
                joints[3 * (f * nj + j)..3 * (f * nj + j) + 3].copy_from_slice(&gt);
                let rj = mat3::apply(&gr, &jj);
                let a = &mut transforms[12 * (f * nj + j)..12 * (f * nj + j) + 12];
                for i in 0..3 {
                    a[4 * i..4 * i + 3].copy_from_slice(&gr[3 * i..3 * i + 3]);
                    a[4 * i + 3] = gt[i] - rj[i];
                }
            }
        }
        (joints, transforms)
    }

    /// CPU path: per block of [`VERTEX_BLOCK`] vertices, the pose-offset matmuls of that block
    /// (`[T, 9k] x [9k, 3 nb]`, cache-sized), then sparse-weight skinning of the block for every
    /// frame, fused with `v_shaped + offsets` and the translation; frames are spread over the
    /// available threads.
    ///
    /// `v_shaped` is `[T or 1, 3V]`; `blocks` is empty without pose blend shapes.
    fn skin_cpu(
        &self,
        v_shaped: &Tensor,
        runs: &[(usize, Tensor)],
        blocks: &[Tensor],
        transforms: &[f32],
        transl: &[f32],
        t: usize,
    ) -> Result<Tensor> {
        let nv = self.num_vertices;
        let n3 = 3 * nv;
        let mut out = vec![0f32; t * n3];
        let vs = v_shaped.contiguous()?;
        let vs_rows = vs.dims()[0];
        let (vs_guard, vs_layout) = vs.storage_and_layout();
        let base = cpu_view(&vs_guard, vs_layout)?;
        let threads = num_threads();
        let per = t.div_ceil(threads.clamp(1, t.max(1))).max(1);
        let nblocks = nv.div_ceil(VERTEX_BLOCK);
        for b in 0..nblocks {
            let v0 = b * VERTEX_BLOCK;
            let nb = VERTEX_BLOCK.min(nv - v0);
            let terms: Vec<Tensor> = match blocks.get(b) {
                Some(pdb) => runs
                    .iter()
                    .map(|(start, feat)| feat.matmul(&pdb.narrow(0, *start, feat.dims()[1])?))
                    .collect::<candle::Result<_>>()?,
                None => Vec::new(),
            };
            let guards: Vec<_> = terms.iter().map(|x| x.storage_and_layout()).collect();
            let term_views = guards
                .iter()
                .zip(&terms)
                .map(|((g, l), x)| Ok((cpu_view(g, l)?, x.dims()[0])))
                .collect::<Result<Vec<_>>>()?;
            let job = BlockJob {
                sparse: &self.sparse,
                nj: self.num_joints,
                n3,
                v0,
                nb,
                base: (base, vs_rows),
                terms: &term_views,
                transforms,
                transl,
            };
            // The first chunk runs on this thread, so one chunk spawns nothing (WebAssembly
            // has no threads).
            std::thread::scope(|s| {
                let mut chunks = out.chunks_mut(per * n3).enumerate();
                let first = chunks.next();
                for (ci, chunk) in chunks {
                    let job = &job;
                    s.spawn(move || job.run(ci * per, chunk));
                }
                if let Some((ci, chunk)) = first {
                    job.run(ci * per, chunk);
                }
            });
        }
        drop(vs_guard);
        Ok(Tensor::from_vec(out, (t, nv, 3), &self.device)?)
    }

    /// Device-generic skinning: `[V, J] x [T, J, 12]` then a per-vertex 3x4 product.
    fn skin_tensor(&self, v_posed: &Tensor, transforms: &[f32], t: usize) -> Result<Tensor> {
        let (nv, nj) = (self.num_vertices, self.num_joints);
        let a = Tensor::from_slice(transforms, (t, nj, 12), &self.device)?;
        let m = self
            .weights
            .broadcast_left(t)?
            .matmul(&a)?
            .reshape((t, nv, 3, 4))?;
        let ones = Tensor::ones((t, nv, 1), DType::F32, &self.device)?;
        let v_posed = v_posed.broadcast_as((t, 3 * nv))?.reshape((t, nv, 3))?;
        let vh = Tensor::cat(&[&v_posed, &ones], 2)?.unsqueeze(2)?;
        Ok(m.broadcast_mul(&vh)?.sum(3)?)
    }
}

/// Worker threads of the CPU kernel (queried once: the query reads cgroup files).
fn num_threads() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The contiguous f32 data of a CPU storage.
fn cpu_view<'a>(storage: &'a Storage, layout: &candle::Layout) -> Result<&'a [f32]> {
    let Storage::Cpu(cpu) = storage else {
        return Err(SmplError::Params(
            "CPU skinning got a non-CPU tensor".into(),
        ));
    };
    let (a, b) = layout
        .contiguous_offsets()
        .ok_or_else(|| SmplError::Params("CPU skinning got a non-contiguous tensor".into()))?;
    Ok(&cpu.as_slice::<f32>()?[a..b])
}

/// One vertex block of the CPU skinning kernel.
struct BlockJob<'a> {
    sparse: &'a SparseWeights,
    nj: usize,
    n3: usize,
    v0: usize,
    nb: usize,
    /// `v_shaped` `[T or 1, 3V]` and its row count.
    base: (&'a [f32], usize),
    /// Pose-offset terms `[T or 1, 3 nb]` of this block and their row counts.
    terms: &'a [(&'a [f32], usize)],
    transforms: &'a [f32],
    transl: &'a [f32],
}

impl BlockJob<'_> {
    /// Skins this block for the frames `f0..` whose output rows are `out` (`[n, 3V]`).
    fn run(&self, f0: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                unsafe { self.run_avx2(f0, out) };
                return;
            }
        }
        self.run_generic(f0, out);
    }

    /// The same code compiled with AVX2 enabled (wider vectors; no FMA contraction, so the
    /// results are bit-identical to the generic build).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn run_avx2(&self, f0: usize, out: &mut [f32]) {
        self.run_generic(f0, out);
    }

    #[inline(always)]
    fn run_generic(&self, f0: usize, out: &mut [f32]) {
        let (n3, nj, v0, nb) = (self.n3, self.nj, self.v0, self.nb);
        let mut p = vec![0f32; 3 * nb];
        let mut rows: Vec<&[f32]> = Vec::with_capacity(self.terms.len());
        for (fi, of) in out.chunks_exact_mut(n3).enumerate() {
            let f = f0 + fi;
            let base = &frame_row(self.base, f, n3)[3 * v0..3 * (v0 + nb)];
            rows.clear();
            rows.extend(self.terms.iter().map(|t| frame_row(*t, f, 3 * nb)));
            // v_posed = v_shaped + (sum of the pose offset terms).
            match rows.split_first() {
                None => p.copy_from_slice(base),
                Some((first, rest)) => {
                    p.copy_from_slice(first);
                    for r in rest {
                        for (d, &y) in p.iter_mut().zip(*r) {
                            *d += y;
                        }
                    }
                    for (d, &x) in p.iter_mut().zip(base) {
                        *d += x;
                    }
                }
            }
            let (a, _) = self.transforms[12 * f * nj..12 * (f + 1) * nj].as_chunks::<12>();
            let tr = [
                self.transl[3 * f],
                self.transl[3 * f + 1],
                self.transl[3 * f + 2],
            ];
            let of = &mut of[3 * v0..3 * (v0 + nb)];
            match self.sparse.ell_width {
                2 => self.blend_ell::<2>(a, &p, tr, of),
                4 => self.blend_ell::<4>(a, &p, tr, of),
                8 => self.blend_ell::<8>(a, &p, tr, of),
                _ => self.blend_csr(a, &p, tr, of),
            }
        }
    }

    /// `out_v = (sum_k w_vk A_{j_vk}) [p_v; 1] + transl` with a fixed `K` entries per vertex.
    #[inline(always)]
    fn blend_ell<const K: usize>(&self, a: &[[f32; 12]], p: &[f32], tr: [f32; 3], of: &mut [f32]) {
        let (v0, nb) = (self.v0, self.nb);
        let sp = self.sparse;
        let js = &sp.ell_joints[K * v0..K * (v0 + nb)];
        let ws = &sp.ell_weights[K * v0..K * (v0 + nb)];
        for (((pv, ov), jv), wv) in p
            .chunks_exact(3)
            .zip(of.chunks_exact_mut(3))
            .zip(js.chunks_exact(K))
            .zip(ws.chunks_exact(K))
        {
            let mut m = [0f32; 12];
            for k in 0..K {
                let aj = &a[jv[k] as usize];
                let w = wv[k];
                for e in 0..12 {
                    m[e] += w * aj[e];
                }
            }
            transform(&m, pv, tr, ov);
        }
    }

    /// [`BlockJob::blend_ell`] for vertices with many joints (CSR).
    fn blend_csr(&self, a: &[[f32; 12]], p: &[f32], tr: [f32; 3], of: &mut [f32]) {
        let sp = self.sparse;
        for (i, (pv, ov)) in p.chunks_exact(3).zip(of.chunks_exact_mut(3)).enumerate() {
            let v = self.v0 + i;
            let mut m = [0f32; 12];
            for k in sp.offsets[v]..sp.offsets[v + 1] {
                let aj = &a[sp.joints[k] as usize];
                let w = sp.weights[k];
                for e in 0..12 {
                    m[e] += w * aj[e];
                }
            }
            transform(&m, pv, tr, ov);
        }
    }
}

/// `out = M[:, :3] p + M[:, 3] + transl` for a row-major 3x4 `M`.
#[inline(always)]
fn transform(m: &[f32; 12], p: &[f32], tr: [f32; 3], out: &mut [f32]) {
    for c in 0..3 {
        out[c] =
            (m[4 * c] * p[0] + m[4 * c + 1] * p[1] + m[4 * c + 2] * p[2] + m[4 * c + 3]) + tr[c];
    }
}

/// Row `f` of a `[T or 1, n3]` host array (row 0 when it has a single row).
fn frame_row(v: (&[f32], usize), f: usize, n3: usize) -> &[f32] {
    let r = if v.1 == 1 { 0 } else { f };
    &v.0[n3 * r..n3 * (r + 1)]
}

/// A typed error for the first non-finite entry of `x`.
fn check_finite(what: &str, x: &Tensor) -> Result<()> {
    let v = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    match v.iter().position(|e| !e.is_finite()) {
        Some(i) => Err(SmplError::Params(format!(
            "{what}: non-finite value {} at flat index {i}",
            v[i]
        ))),
        None => Ok(()),
    }
}

/// Checks `betas` (`[B]`, `[1, B]` or `[T, B]`, `B <= max_b`) and returns it as 2-D.
fn check_betas(b: &Tensor, t: usize, max_b: usize) -> Result<Tensor> {
    let b2 = match b.dims() {
        [n] => b.reshape((1, *n))?,
        [r, _] if *r == 1 || *r == t => b.clone(),
        d => return Err(shape_err("betas", &format!("[B], [1, B] or [{t}, B]"), d)),
    };
    let nb = b2.dims()[1];
    if nb > max_b {
        return Err(SmplError::Params(format!(
            "{nb} betas given, the model has {max_b} shape coefficients"
        )));
    }
    Ok(b2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_model() -> Result<BodyModel> {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/smplh/SMPLH_NEUTRAL.npz");
        BodyModel::from_npz(path, &Device::Cpu)
    }

    #[test]
    fn tensor_skinning_path_equals_the_sparse_cpu_kernel() -> Result<()> {
        let model = fixture_model()?;
        let t = 3;
        let mut rots = Vec::new();
        for f in 0..t {
            for j in 0..model.num_joints {
                let a = 0.1 * (f + 1) as f32 * ((j % 5) as f32 - 2.0);
                rots.extend_from_slice(&mat3::axis_angle_to_matrix(&[a, 0.5 * a, -a]));
            }
        }
        let (v_shaped, rest) = model.shaped(None, t)?;
        // Joints with j % 5 == 2 keep the identity: several constant / varying runs.
        let runs = model.pose_runs(&rots, t)?;
        assert!(runs.len() > 2, "{} runs", runs.len());
        let Some(PoseDirs::Blocks(blocks)) = &model.posedirs else {
            panic!("CPU models keep posedirs in vertex blocks");
        };
        let full = Tensor::cat(blocks, 1)?;
        let mut v_posed = v_shaped.clone();
        for (start, feat) in &runs {
            v_posed = v_posed.broadcast_add(&feat.matmul(&full.narrow(
                0,
                *start,
                feat.dims()[1],
            )?)?)?;
        }
        let (_, tr) = model.kinematics(&rots, &rest, t);
        let transl = [0.1f32, -0.2, 0.3, 1.0, 2.0, 3.0, -1.0, 0.0, 0.5];
        let a = model.skin_cpu(&v_shaped, &runs, blocks, &tr, &transl, t)?;
        let b = model
            .skin_tensor(&v_posed, &tr, t)?
            .broadcast_add(&Tensor::new(&transl, &Device::Cpu)?.reshape((t, 1, 3))?)?;
        // The CSR kernel (used above 8 joints per vertex) gives bit-identical results: the ELL
        // padding adds exact zeros.
        assert_eq!(
            model.sparse.ell_width, 2,
            "the fixture skins with 2 joints per vertex"
        );
        let mut csr = model.clone();
        csr.sparse.ell_width = 0;
        let c = csr.skin_cpu(&v_shaped, &runs, blocks, &tr, &transl, t)?;
        assert_eq!(
            c.flatten_all()?.to_vec1::<f32>()?,
            a.flatten_all()?.to_vec1::<f32>()?
        );
        let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "max diff {diff}");
        Ok(())
    }
}
