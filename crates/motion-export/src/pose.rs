//! Checks the exporter inputs and turns them into host-side, Y-up joint motion.

use candle::{DType, Device, Tensor};
use smpl::{BodyModel, BodyParams, Skeleton};

use crate::error::{ExportError, Result, shape_err};
use crate::math::{self, M3, Z_UP_TO_Y_UP};

/// Tolerance on `|R R^T - I|` for a local rotation (f32 matrices from Gram-Schmidt or
/// axis-angle are orthonormal to ~1e-6).
const ORTHONORMALITY_TOL: f64 = 1e-3;

/// A posed motion on the host, already converted to the Y-up export convention.
#[derive(Debug, Clone)]
pub(crate) struct Motion {
    /// Number of frames `T` (at least 1).
    pub frames: usize,
    /// Frames per second (finite, positive).
    pub fps: f64,
    /// The named skeleton of the body model.
    pub skeleton: Skeleton,
    /// Parent of each joint (`None` for the root), joint order.
    pub parents: Vec<Option<usize>>,
    /// Rest joints `[J]` in the body's canonical frame (Y up, facing +Z), metres, shaped by the
    /// betas when given.
    pub rest_joints: Vec<[f64; 3]>,
    /// Local rotations `[T * J]` (frame-major). The root's is `Z_UP_TO_Y_UP @ global_orient`.
    pub local: Vec<M3>,
    /// Root joint position per frame in the Y-up world, metres:
    /// `Z_UP_TO_Y_UP @ (transl + J_0)`.
    pub root_position: Vec<[f64; 3]>,
}

impl Motion {
    /// Number of joints `J`.
    pub fn num_joints(&self) -> usize {
        self.parents.len()
    }

    /// Local rotation of joint `j` at frame `f`.
    pub fn rotation(&self, f: usize, j: usize) -> &M3 {
        &self.local[f * self.num_joints() + j]
    }

    /// Rest offset of joint `j` from its parent (the rest position for the root), metres.
    pub fn rest_offset(&self, j: usize) -> [f64; 3] {
        let r = self.rest_joints[j];
        match self.parents[j] {
            None => r,
            Some(p) => {
                let q = self.rest_joints[p];
                [r[0] - q[0], r[1] - q[1], r[2] - q[2]]
            }
        }
    }

    /// Joint name.
    pub fn name(&self, j: usize) -> &'static str {
        self.skeleton.names()[j]
    }
}

/// The named skeleton of `body`, or a typed error.
pub(crate) fn skeleton_of(body: &BodyModel) -> Result<Skeleton> {
    body.skeleton()
        .ok_or_else(|| ExportError::UnsupportedSkeleton {
            path: body.path().to_path_buf(),
            joints: body.num_joints(),
        })
}

/// Rest joints `[J, 3]` and rest vertices `[V, 3]` of `body` for `betas` (the official array
/// layout's canonical frame: Y up, metres). `None` gives the template; betas `[B]`, `[1, B]`
/// or `[T, B]` with identical rows give the shaped body (one identity-pose forward pass).
pub(crate) fn shaped_rest(body: &BodyModel, betas: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
    let Some(b) = betas else {
        return Ok((body.rest_joints()?, body.v_template().clone()));
    };
    let b = b.to_dtype(DType::F32)?;
    let row = match b.dims() {
        [n] => b.reshape((1, *n))?,
        [1, _] => b.clone(),
        [t, n] => {
            let rows = b.to_vec2::<f32>()?;
            if let Some(i) = rows.iter().position(|r| r != &rows[0]) {
                return Err(ExportError::InvalidValue {
                    what: "betas".to_string(),
                    reason: format!(
                        "row {i} of the [{t}, {n}] betas differs from row 0; an exported \
                         skeleton has one shape for all frames"
                    ),
                });
            }
            b.narrow(0, 0, 1)?
        }
        d => return Err(shape_err("betas", "[B], [1, B] or [T, B]", d)),
    };
    let dev = body.device();
    let nj = body.num_joints();
    let eye = |n: usize| -> Result<Tensor> {
        Ok(Tensor::eye(3, DType::F32, dev)?
            .broadcast_as((1, n, 3, 3))?
            .contiguous()?)
    };
    let hand = nj.saturating_sub(22) / 2;
    let params = BodyParams {
        betas: Some(row),
        global_orient: eye(1)?.squeeze(1)?,
        body_pose: eye(21)?,
        left_hand_pose: eye(hand)?,
        right_hand_pose: eye(hand)?,
        transl: Tensor::zeros((1, 3), DType::F32, dev)?,
    };
    let out = body.forward(&params)?;
    // With identity rotations, forward kinematics returns the shaped rest joints and skinning
    // returns the shaped template.
    Ok((
        out.joints.narrow(1, 0, nj)?.squeeze(0)?,
        out.vertices.squeeze(0)?,
    ))
}

/// Host float data of `x` after checking its shape is `expected`.
fn host(what: &str, x: &Tensor, expected: &[usize], words: &str) -> Result<Vec<f32>> {
    if x.dims() != expected {
        return Err(shape_err(what, words, x.dims()));
    }
    Ok(x.to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// Checks `params` against `body` and `fps` and builds the Y-up [`Motion`].
///
/// Shapes: `global_orient [T, 3, 3]`, `body_pose [T, 21, 3, 3]`, `left_hand_pose` /
/// `right_hand_pose [T, H, 3, 3]` with `1 + 21 + 2H = J`, `transl [T, 3]`, `T >= 1`.
pub(crate) fn prepare(body: &BodyModel, params: &BodyParams, fps: f32) -> Result<Motion> {
    let skeleton = skeleton_of(body)?;
    if !(fps.is_finite() && fps > 0.0) {
        return Err(ExportError::InvalidValue {
            what: "fps".to_string(),
            reason: format!("{fps} is not a finite positive frame rate"),
        });
    }
    let nj = skeleton.num_joints();
    let hand = (nj - smpl::skeleton::NUM_BODY_JOINTS) / 2;
    let t = match params.global_orient.dims() {
        [t, 3, 3] if *t > 0 => *t,
        d => return Err(shape_err("global_orient", "[T, 3, 3] with T >= 1", d)),
    };
    let root = host(
        "global_orient",
        &params.global_orient,
        &[t, 3, 3],
        "[T, 3, 3]",
    )?;
    let body_pose = host(
        "body_pose",
        &params.body_pose,
        &[t, 21, 3, 3],
        &format!("[{t}, 21, 3, 3]"),
    )?;
    let hand_words = format!("[{t}, {hand}, 3, 3]");
    let left = host(
        "left_hand_pose",
        &params.left_hand_pose,
        &[t, hand, 3, 3],
        &hand_words,
    )?;
    let right = host(
        "right_hand_pose",
        &params.right_hand_pose,
        &[t, hand, 3, 3],
        &hand_words,
    )?;
    let transl = host("transl", &params.transl, &[t, 3], &format!("[{t}, 3]"))?;
    if let Some(i) = transl.iter().position(|x| !x.is_finite()) {
        return Err(ExportError::InvalidValue {
            what: "transl".to_string(),
            reason: format!("non-finite value {} at frame {}", transl[i], i / 3),
        });
    }

    let (rest_joints, _) = shaped_rest(body, params.betas.as_ref())?;
    let rest: Vec<[f64; 3]> = rest_joints
        .to_dtype(DType::F32)?
        .to_vec2::<f32>()?
        .iter()
        .map(|r| [f64::from(r[0]), f64::from(r[1]), f64::from(r[2])])
        .collect();
    if rest.len() != nj {
        return Err(shape_err(
            "rest joints",
            format!("[{nj}, 3]"),
            &[rest.len(), 3],
        ));
    }

    let mut local = Vec::with_capacity(t * nj);
    let mut root_position = Vec::with_capacity(t);
    for f in 0..t {
        for j in 0..nj {
            let (src, k, n) = match j {
                0 => (&root, 0, 1),
                1..=21 => (&body_pose, j - 1, 21),
                _ if j < 22 + hand => (&left, j - 22, hand),
                _ => (&right, j - 22 - hand, hand),
            };
            let off = 9 * (f * n + k);
            let mut m = [0.0f64; 9];
            for (d, s) in m.iter_mut().zip(&src[off..off + 9]) {
                *d = f64::from(*s);
            }
            check_rotation(&m, skeleton, j, f)?;
            local.push(if j == 0 {
                math::mul(&Z_UP_TO_Y_UP, &m)
            } else {
                m
            });
        }
        let p = [
            f64::from(transl[3 * f]) + rest[0][0],
            f64::from(transl[3 * f + 1]) + rest[0][1],
            f64::from(transl[3 * f + 2]) + rest[0][2],
        ];
        root_position.push(math::apply(&Z_UP_TO_Y_UP, &p));
    }
    Ok(Motion {
        frames: t,
        fps: f64::from(fps),
        skeleton,
        parents: body.parents().to_vec(),
        rest_joints: rest,
        local,
        root_position,
    })
}

fn check_rotation(m: &M3, skeleton: Skeleton, j: usize, f: usize) -> Result<()> {
    let fail = |reason: String| ExportError::NotARotation {
        joint: skeleton.names()[j].to_string(),
        index: j,
        frame: f,
        reason,
    };
    if m.iter().any(|x| !x.is_finite()) {
        return Err(fail(format!("non-finite matrix {m:?}")));
    }
    let err = math::orthonormality_error(m);
    if err > ORTHONORMALITY_TOL {
        return Err(fail(format!(
            "not orthonormal (max |R R^T - I| = {err:.3e} > {ORTHONORMALITY_TOL:e})"
        )));
    }
    if math::det(m) < 0.0 {
        return Err(fail(
            "a reflection (determinant -1), not a rotation".to_string(),
        ));
    }
    Ok(())
}
