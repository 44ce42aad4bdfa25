//! A procedural walk of the open body in the SMPL-RIFKE world (Z up, metres), shared by the
//! `render_motion` example and the `video` bench (included with `#[path]`).
//!
//! The body model's own frame is Y up, facing +Z, left +X. The root orientation is
//! `Rz(90 deg + heading) Rx(+90 deg)`: `Rx(+90 deg)` turns Y up into Z up (the body then faces
//! -Y), `Rz(90 deg)` turns it to face +X, and `heading` steers it. Legs swing about the joints'
//! local X axes (a negative angle swings a hanging limb forward), arms hang down and swing
//! against the legs, the pelvis bobs twice per stride, and the root advances along the heading.

use anyhow::{Context, Result};
use candle::{DType, Device, Tensor};
use smpl::rotation::mat3;

const L_HIP: usize = 1;
const R_HIP: usize = 2;
const SPINE1: usize = 3;
const L_KNEE: usize = 4;
const R_KNEE: usize = 5;
const L_ANKLE: usize = 7;
const R_ANKLE: usize = 8;
const L_SHOULDER: usize = 16;
const R_SHOULDER: usize = 17;
const L_ELBOW: usize = 18;
const R_ELBOW: usize = 19;

/// `R = R_k ... R_1` for axis-angles given in application order.
fn chain(aas: &[[f32; 3]]) -> [f32; 9] {
    aas.iter().fold(mat3::IDENTITY, |r, aa| {
        mat3::mul(&mat3::axis_angle_to_matrix(aa), &r)
    })
}

/// A posed walk: vertices `[T, V, 3]`, joints `[T, J, 3]` (SMPL-H: 52), lowest point at z = 0.
pub struct PosedWalk {
    /// Skinned vertices `[T, V, 3]`.
    pub vertices: Tensor,
    /// Posed joints `[T, J, 3]`, joint 0 = pelvis.
    pub joints: Tensor,
}

/// `frames` frames at `fps` of a walk at ~1.2 m/s along +X whose heading sways by `sway`
/// radians (0 = a straight line), skinned with `model` (hands at its mean pose if it has one).
pub fn posed_walk(
    model: &smpl::BodyModel,
    frames: usize,
    fps: f32,
    sway: f32,
) -> Result<PosedWalk> {
    let dev = Device::Cpu;
    let hands: Vec<[f32; 9]> = match model.hands_mean() {
        Some((l, r)) => {
            let mut v = Vec::new();
            for h in [l, r] {
                let aa: Vec<f32> = h.to_dtype(DType::F32)?.to_vec1()?;
                v.extend(
                    aa.chunks(3)
                        .map(|c| mat3::axis_angle_to_matrix(&[c[0], c[1], c[2]])),
                );
            }
            v
        }
        None => vec![mat3::IDENTITY; 30],
    };
    let stride_s = 1.1f32; // one gait cycle (two steps)
    let speed = 1.2f32;
    let (mut x, mut y) = (0.0f32, 0.0f32);
    let mut rots: Vec<[f32; 9]> = Vec::with_capacity(frames * 52);
    let mut transl = Vec::with_capacity(frames * 3);
    for t in 0..frames {
        let time = t as f32 / fps;
        let ph = std::f32::consts::TAU * time / stride_s;
        let (s, c) = ph.sin_cos();
        let heading = sway * (std::f32::consts::TAU * t as f32 / frames.max(1) as f32).sin();
        let mut r = vec![mat3::IDENTITY; 22];
        r[0] = mat3::mul(
            &mat3::rot_z(std::f32::consts::FRAC_PI_2 + heading),
            &mat3::rot_x(std::f32::consts::FRAC_PI_2),
        );
        r[L_HIP] = chain(&[[-0.42 * s, 0.0, 0.0]]);
        r[R_HIP] = chain(&[[0.42 * s, 0.0, 0.0]]);
        // Knees bend while their leg swings forward (hip angle increasing).
        r[L_KNEE] = chain(&[[0.08 + 0.7 * c.max(0.0).powf(1.5), 0.0, 0.0]]);
        r[R_KNEE] = chain(&[[0.08 + 0.7 * (-c).max(0.0).powf(1.5), 0.0, 0.0]]);
        r[L_ANKLE] = chain(&[[0.15 * s, 0.0, 0.0]]);
        r[R_ANKLE] = chain(&[[-0.15 * s, 0.0, 0.0]]);
        r[SPINE1] = chain(&[[0.05, 0.08 * s, 0.0]]);
        r[L_SHOULDER] = chain(&[[0.0, 0.0, -1.25], [0.4 * s, 0.0, 0.0]]);
        r[R_SHOULDER] = chain(&[[0.0, 0.0, 1.25], [-0.4 * s, 0.0, 0.0]]);
        r[L_ELBOW] = chain(&[[0.0, -0.3 - 0.15 * s.max(0.0), 0.0]]);
        r[R_ELBOW] = chain(&[[0.0, 0.3 + 0.15 * (-s).max(0.0), 0.0]]);
        rots.extend_from_slice(&r);
        rots.extend_from_slice(&hands);
        transl.extend_from_slice(&[x, y, 0.02 * (2.0 * ph).cos()]);
        x += speed / fps * heading.cos();
        y += speed / fps * heading.sin();
    }
    let part = |a: usize, k: usize| -> Result<Tensor> {
        let data: Vec<f32> = (0..frames)
            .flat_map(|t| rots[t * 52 + a..t * 52 + a + k].concat())
            .collect();
        Ok(Tensor::from_vec(data, (frames, k, 3, 3), &dev)?)
    };
    let params = smpl::BodyParams {
        betas: None,
        global_orient: part(0, 1)?.squeeze(1)?,
        body_pose: part(1, 21)?,
        left_hand_pose: part(22, 15)?,
        right_hand_pose: part(37, 15)?,
        transl: Tensor::from_vec(transl, (frames, 3), &dev)?,
    };
    let out = model.forward(&params).context("body model forward")?;
    // Stand on z = 0: shift by the lowest vertex of the whole motion.
    let low = out
        .vertices
        .narrow(2, 2, 1)?
        .flatten_all()?
        .min(0)?
        .to_scalar::<f32>()?;
    let shift = Tensor::new(&[0.0f32, 0.0, -low], &dev)?;
    Ok(PosedWalk {
        vertices: out.vertices.broadcast_add(&shift)?,
        joints: out.joints.broadcast_add(&shift)?,
    })
}
