//! SMPL-RIFKE: 205-d per-frame motion features (encode, decode, mapping to SMPL-H inputs).
//!
//! Petrovich et al., "TMR: Text-to-Motion Retrieval Using Contrastive 3D Human Motion
//! Synthesis", ICCV 2023 (the representation), as used by the reference text-to-motion
//! diffusion transformers; semantics pinned by the `rifke` and `smplh` fixtures.
//!
//! Layout: [`FeatureLayout::SMPL_RIFKE`]. World: right-handed, z up, metres, 20 fps.
//! Per frame `t`, with `(z_t, y_t, x_t)` the Euler `'ZYX'` angles of the root rotation:
//! - `root_z` = pelvis height;
//! - `vel_root_xy_local` = pelvis xy velocity (frame 0: the absolute xy) rotated by `Rz(z_t)^T`;
//! - `vel_angles` = `yaw_t - yaw_{t-1}` (frame 0: `yaw_0`), where `yaw_t` is `z_t` taken through
//!   the quaternion / axis-angle path of [`heading_yaw`]. The reference does NOT unwrap it:
//!   crossing `±π` gives a `∓2π` jump. [`EncodeOptions::unwrap_yaw`] wraps the differences
//!   into `[-π, π)` instead (decoding gives the same rotations either way);
//! - `poses_6d_local` = 6D of `Ry(y_t) Rx(x_t)` (the root without its yaw) and of the 21 local
//!   body rotations;
//! - `joints_local` = joints 1..23 minus the pelvis, xy rotated by `Rz(z_t)^T`, z kept.
//!
//! Decoding integrates `vel_angles` and the velocity with float32 cumulative sums.
//! Computation is float32 on the host (per-frame scalar maths, cumulative sums); results are
//! returned on the input's device.

use candle::{DType, Tensor};
use smpl::rotation::mat3;
use smpl::{BodyModel, BodyParams};

use crate::error::{ReprError, Result, shape_err};
use crate::layout::FeatureLayout;

const L: FeatureLayout = FeatureLayout::SMPL_RIFKE;
const NJ: usize = 24;
const NR: usize = 22;
const D: usize = 205;

/// Options of [`encode_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Wrap yaw differences into `[-π, π)` (the reference does not: default `false`).
    pub unwrap_yaw: bool,
}

/// The heading angle of `Rz(z)` the way the reference computes it: quaternion of `Rz(z)`
/// (`w = ½√max(0, 1+m00+m11+m22)`, `qz = ½√max(0, 1-m00-m11+m22)` signed by `m10 - m01`),
/// then axis-angle (`half = atan2(|qz|, w)`, `yaw = qz / (sin(half) / (2 half))`), float32.
/// Equals `z` wrapped to `[-π, π]` up to ~1e-5 near 0 and `±π`.
pub fn heading_yaw(z: f32) -> f32 {
    let m = mat3::rot_z(z);
    let (m00, m01, m10, m11, m22) = (m[0], m[1], m[3], m[4], m[8]);
    let w = 0.5 * (((1.0 + m00) + m11) + m22).max(0.0).sqrt();
    let qz = (0.5 * (((1.0 - m00) - m11) + m22).max(0.0).sqrt()).copysign(m10 - m01);
    let half = qz.abs().atan2(w);
    let angle = 2.0 * half;
    let k = if angle.abs() < 1e-6 {
        0.5 - angle * angle / 48.0
    } else {
        half.sin() / angle
    };
    qz / k
}

fn read_host(x: &Tensor) -> Result<Vec<f32>> {
    Ok(x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

fn check_finite(what: &str, data: &[f32], per_frame: usize, unit: &str) -> Result<()> {
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(ReprError::NonFinite {
            what: what.to_string(),
            location: format!("frame {}, {unit} {}", i / per_frame, i % per_frame),
            value: data[i],
        });
    }
    Ok(())
}

/// Rotates `(x, y)` by `Rz(-a)` given `(c, s) = (cos a, sin a)`.
fn to_local(c: f32, s: f32, x: f32, y: f32) -> (f32, f32) {
    (c * x + s * y, -s * x + c * y)
}

/// Rotates `(x, y)` by `Rz(a)`.
fn to_world(c: f32, s: f32, x: f32, y: f32) -> (f32, f32) {
    (c * x - s * y, s * x + c * y)
}

fn encode_frames(joints: &[f32], rots: &[f32], t: usize, opts: &EncodeOptions) -> Vec<f32> {
    let mut out = vec![0f32; t * D];
    let mut prev_yaw = 0f32;
    let mut prev_xy = (0f32, 0f32);
    for f in 0..t {
        let jt = &joints[f * NJ * 3..(f + 1) * NJ * 3];
        let rt = &rots[f * NR * 9..(f + 1) * NR * 9];
        let o = &mut out[f * D..(f + 1) * D];
        let mut root = [0f32; 9];
        root.copy_from_slice(&rt[..9]);
        let [z, y, x] = mat3::to_euler_zyx(&root);
        let (s, c) = z.sin_cos();
        let yaw = heading_yaw(z);

        o[L.root_z.start] = jt[2];
        let (px, py) = (jt[0], jt[1]);
        let (vx, vy) = if f == 0 {
            (px, py)
        } else {
            (px - prev_xy.0, py - prev_xy.1)
        };
        let (lx, ly) = to_local(c, s, vx, vy);
        o[L.vel_root_xy_local.start] = lx;
        o[L.vel_root_xy_local.start + 1] = ly;
        let mut dyaw = if f == 0 { yaw } else { yaw - prev_yaw };
        if opts.unwrap_yaw && f > 0 {
            let two_pi = std::f32::consts::TAU;
            dyaw -= two_pi * ((dyaw + std::f32::consts::PI) / two_pi).floor();
        }
        o[L.vel_angles.start] = dyaw;

        let local_root = mat3::mul(&mat3::rot_y(y), &mat3::rot_x(x));
        o[L.pose_6d(0)].copy_from_slice(&mat3::to_6d(&local_root));
        for j in 1..NR {
            o[L.pose_6d(j)].copy_from_slice(&rt[9 * j..9 * j + 6]);
        }
        for j in 1..NJ {
            let (dx, dy, dz) = (jt[3 * j] - px, jt[3 * j + 1] - py, jt[3 * j + 2] - jt[2]);
            let (lx, ly) = to_local(c, s, dx, dy);
            let r = L.joint_local(j);
            o[r.start] = lx;
            o[r.start + 1] = ly;
            o[r.start + 2] = dz;
        }
        prev_yaw = yaw;
        prev_xy = (px, py);
    }
    out
}

fn decode_frames(feats: &[f32], t: usize) -> (Vec<f32>, Vec<f32>) {
    let mut joints = vec![0f32; t * NJ * 3];
    let mut rots = vec![0f32; t * NR * 9];
    let mut angle = 0f32;
    let mut root_xy = (0f32, 0f32);
    for f in 0..t {
        let o = &feats[f * D..(f + 1) * D];
        let jt = &mut joints[f * NJ * 3..(f + 1) * NJ * 3];
        let rt = &mut rots[f * NR * 9..(f + 1) * NR * 9];
        for j in 0..NR {
            let mut d6 = [0f32; 6];
            d6.copy_from_slice(&o[L.pose_6d(j)]);
            rt[9 * j..9 * j + 9].copy_from_slice(&mat3::from_6d(&d6));
        }
        let mut r0 = [0f32; 9];
        r0.copy_from_slice(&rt[..9]);
        let [_, y, x] = mat3::to_euler_zyx(&r0);
        angle += o[L.vel_angles.start];
        let (s, c) = angle.sin_cos();
        let root = mat3::mul(
            &mat3::mul(&mat3::rot_z(angle), &mat3::rot_y(y)),
            &mat3::rot_x(x),
        );
        rt[..9].copy_from_slice(&root);
        let (vx, vy) = to_world(
            c,
            s,
            o[L.vel_root_xy_local.start],
            o[L.vel_root_xy_local.start + 1],
        );
        root_xy = (root_xy.0 + vx, root_xy.1 + vy);
        let root_z = o[L.root_z.start];
        jt[0] = root_xy.0;
        jt[1] = root_xy.1;
        jt[2] = root_z;
        for j in 1..NJ {
            let r = L.joint_local(j);
            let (wx, wy) = to_world(c, s, o[r.start], o[r.start + 1]);
            jt[3 * j] = wx + root_xy.0;
            jt[3 * j + 1] = wy + root_xy.1;
            jt[3 * j + 2] = o[r.start + 2] + root_z;
        }
    }
    (joints, rots)
}

fn check_motion(joints: &Tensor, rotations: &Tensor, lead: usize) -> Result<Vec<usize>> {
    let jd = joints.dims();
    let rd = rotations.dims();
    if jd.len() != lead + 2 || jd[lead..] != [NJ, 3] {
        return Err(shape_err("joints", "[..., T, 24, 3]", jd));
    }
    if rd.len() != lead + 3 || rd[lead..] != [NR, 3, 3] || rd[..lead] != jd[..lead] {
        return Err(shape_err(
            "rotations",
            &format!("{:?} + [22, 3, 3] (frames of joints)", &jd[..lead]),
            rd,
        ));
    }
    Ok(jd[..lead].to_vec())
}

fn check_features(features: &Tensor, rank: usize) -> Result<()> {
    let d = features.dims();
    if d.len() != rank {
        let exp = if rank == 2 { "[T, 205]" } else { "[B, F, 205]" };
        return Err(shape_err("features", exp, d));
    }
    if d[rank - 1] != D {
        return Err(ReprError::FeatureWidth {
            what: "features".into(),
            expected: D,
            got: d[rank - 1],
            shape: d.to_vec(),
        });
    }
    Ok(())
}

/// Encodes a motion into SMPL-RIFKE features (the reference's behaviour: yaw not unwrapped).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use candle::{DType, Device, Tensor};
/// use motion_repr::{FeatureLayout, rifke};
/// let t = 3;
/// // A pelvis drifting along x at 0.9 m height, every joint at the pelvis, no rotation.
/// let xs: Vec<f32> = (0..t).flat_map(|f| (0..24).flat_map(move |_| [0.1 * f as f32, 0.0, 0.9])).collect();
/// let joints = Tensor::from_vec(xs, (t, 24, 3), &Device::Cpu)?;
/// let rots = Tensor::eye(3, DType::F32, &Device::Cpu)?.broadcast_as((t, 22, 3, 3))?.contiguous()?;
/// let f = rifke::encode(&joints, &rots)?;
/// assert_eq!(f.dims(), &[t, FeatureLayout::SMPL_RIFKE.dim()]);
/// let (j, r) = rifke::decode(&f)?;
/// let err = (j - &joints)?.abs()?.max_keepdim(0)?.max_keepdim(1)?.max_keepdim(2)?;
/// assert!(err.flatten_all()?.to_vec1::<f32>()?[0] < 1e-6);
/// assert_eq!(r.dims(), &[t, 22, 3, 3]);
/// # Ok(()) }
/// ```
///
/// # Shapes
/// `joints [T, 24, 3]` (pelvis first), `rotations [T, 22, 3, 3]` (root global, 1..21 local)
/// -> `[T, 205]`.
pub fn encode(joints: &Tensor, rotations: &Tensor) -> Result<Tensor> {
    encode_with(joints, rotations, &EncodeOptions::default())
}

/// [`encode`] with options.
///
/// # Shapes
/// As [`encode`].
pub fn encode_with(joints: &Tensor, rotations: &Tensor, opts: &EncodeOptions) -> Result<Tensor> {
    let lead = check_motion(joints, rotations, 1)?;
    let t = lead[0];
    let j = read_host(joints)?;
    let r = read_host(rotations)?;
    check_finite("joints", &j, NJ * 3, "coordinate")?;
    check_finite("rotations", &r, NR * 9, "matrix entry")?;
    let out = encode_frames(&j, &r, t, opts);
    Ok(Tensor::from_vec(out, (t, D), joints.device())?)
}

/// Decodes SMPL-RIFKE features into joints and rotations.
///
/// # Shapes
/// `features [T, 205]` -> `(joints [T, 24, 3], rotations [T, 22, 3, 3])`.
pub fn decode(features: &Tensor) -> Result<(Tensor, Tensor)> {
    check_features(features, 2)?;
    let t = features.dims()[0];
    let x = read_host(features)?;
    check_finite("features", &x, D, "feature")?;
    let (j, r) = decode_frames(&x, t);
    let dev = features.device();
    Ok((
        Tensor::from_vec(j, (t, NJ, 3), dev)?,
        Tensor::from_vec(r, (t, NR, 3, 3), dev)?,
    ))
}

/// Valid-frame indices of each sequence of a `[B, F]` mask (non-zero = valid).
fn mask_rows(mask: &Tensor, b: usize, f: usize) -> Result<Vec<Vec<usize>>> {
    if mask.dims() != [b, f] {
        return Err(shape_err("frame_mask", &format!("[{b}, {f}]"), mask.dims()));
    }
    let m = read_host(mask)?;
    Ok(m.chunks_exact(f.max(1))
        .take(b)
        .map(|row| (0..f).filter(|&i| row[i] != 0.0).collect())
        .collect())
}

fn gather(data: &[f32], frames: &[usize], per: usize) -> Vec<f32> {
    frames
        .iter()
        .flat_map(|&i| data[i * per..(i + 1) * per].iter().copied())
        .collect()
}

/// Batched [`encode_with`]: each sequence is encoded over its valid frames (in order);
/// padded frames get zero features.
///
/// # Shapes
/// `joints [B, F, 24, 3]`, `rotations [B, F, 22, 3, 3]`, `frame_mask [B, F]` (1 = valid)
/// -> `[B, F, 205]`.
pub fn encode_batch(
    joints: &Tensor,
    rotations: &Tensor,
    frame_mask: &Tensor,
    opts: &EncodeOptions,
) -> Result<Tensor> {
    let lead = check_motion(joints, rotations, 2)?;
    let (b, f) = (lead[0], lead[1]);
    let rows = mask_rows(frame_mask, b, f)?;
    let j = read_host(joints)?;
    let r = read_host(rotations)?;
    let mut out = vec![0f32; b * f * D];
    for (bi, valid) in rows.iter().enumerate() {
        let js = gather(&j[bi * f * NJ * 3..(bi + 1) * f * NJ * 3], valid, NJ * 3);
        let rs = gather(&r[bi * f * NR * 9..(bi + 1) * f * NR * 9], valid, NR * 9);
        check_finite(&format!("joints[{bi}]"), &js, NJ * 3, "coordinate")?;
        check_finite(&format!("rotations[{bi}]"), &rs, NR * 9, "matrix entry")?;
        let enc = encode_frames(&js, &rs, valid.len(), opts);
        for (k, &fi) in valid.iter().enumerate() {
            let dst = (bi * f + fi) * D;
            out[dst..dst + D].copy_from_slice(&enc[k * D..(k + 1) * D]);
        }
    }
    Ok(Tensor::from_vec(out, (b, f, D), joints.device())?)
}

/// Batched [`decode`]: each sequence is decoded over its valid frames (the cumulative sums
/// skip padding); padded frames get zero joints and identity rotations.
///
/// # Shapes
/// `features [B, F, 205]`, `frame_mask [B, F]` (1 = valid) ->
/// `(joints [B, F, 24, 3], rotations [B, F, 22, 3, 3])`.
pub fn decode_batch(features: &Tensor, frame_mask: &Tensor) -> Result<(Tensor, Tensor)> {
    check_features(features, 3)?;
    let (b, f) = (features.dims()[0], features.dims()[1]);
    let rows = mask_rows(frame_mask, b, f)?;
    let x = read_host(features)?;
    let mut joints = vec![0f32; b * f * NJ * 3];
    let mut rots: Vec<f32> = std::iter::repeat_n(mat3::IDENTITY, b * f * NR)
        .flatten()
        .collect();
    // First check every sequence (typed error naming the first bad one), then decode the
    // sequences in parallel (each is independent: its own cumulative sums).
    for (bi, valid) in rows.iter().enumerate() {
        let xs = gather(&x[bi * f * D..(bi + 1) * f * D], valid, D);
        check_finite(&format!("features[{bi}]"), &xs, D, "feature")?;
    }
    let dev = features.device();
    if b == 0 || f == 0 {
        return Ok((
            Tensor::from_vec(joints, (b, f, NJ, 3), dev)?,
            Tensor::from_vec(rots, (b, f, NR, 3, 3), dev)?,
        ));
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, b.max(1));
    let per = b.div_ceil(threads).max(1);
    let x = &x;
    let rows = &rows;
    // Decodes the sequences of chunk `ci` (`per` sequences) into `jc` / `rc`.
    let work = move |ci: usize, jc: &mut [f32], rc: &mut [f32]| {
        for (k, (jo, ro)) in jc
            .chunks_mut(f * NJ * 3)
            .zip(rc.chunks_mut(f * NR * 9))
            .enumerate()
        {
            let bi = ci * per + k;
            let valid = &rows[bi];
            let xs = gather(&x[bi * f * D..(bi + 1) * f * D], valid, D);
            let (j, r) = decode_frames(&xs, valid.len());
            for (k, &fi) in valid.iter().enumerate() {
                jo[fi * NJ * 3..(fi + 1) * NJ * 3]
                    .copy_from_slice(&j[k * NJ * 3..(k + 1) * NJ * 3]);
                ro[fi * NR * 9..(fi + 1) * NR * 9]
                    .copy_from_slice(&r[k * NR * 9..(k + 1) * NR * 9]);
            }
        }
    };
    // The first chunk runs on this thread, so one chunk spawns nothing (WebAssembly has no
    // threads).
    std::thread::scope(|s| {
        let mut chunks = joints
            .chunks_mut(per * f * NJ * 3)
            .zip(rots.chunks_mut(per * f * NR * 9))
            .enumerate();
        let first = chunks.next();
        for (ci, (jc, rc)) in chunks {
            let work = &work;
            s.spawn(move || work(ci, jc, rc));
        }
        if let Some((ci, (jc, rc))) = first {
            work(ci, jc, rc);
        }
    });
    Ok((
        Tensor::from_vec(joints, (b, f, NJ, 3), dev)?,
        Tensor::from_vec(rots, (b, f, NR, 3, 3), dev)?,
    ))
}

/// The reference's mapping of decoded joints and rotations to SMPL-H inputs (`smplh.json`):
/// `transl_t = joints[t, 0] - (J_regressor @ v_template)[0]`; `global_orient` = rotation 0;
/// `body_pose` = rotations 1..21; both hands = the model's mean hand pose (axis-angle ->
/// matrix), constant over frames (identity when the model has no `hands_mean*`); no betas.
/// For a 24-joint SMPL model the two hand joints get identity rotations.
///
/// # Shapes
/// `joints [T, 24, 3]`, `rotations [T, 22, 3, 3]` -> [`BodyParams`] for `T` frames on the
/// body model's device.
pub fn to_body_params(joints: &Tensor, rotations: &Tensor, body: &BodyModel) -> Result<BodyParams> {
    let lead = check_motion(joints, rotations, 1)?;
    let t = lead[0];
    let dev = body.device();
    let joints = joints.to_dtype(DType::F32)?.to_device(dev)?;
    let rotations = rotations.to_dtype(DType::F32)?.to_device(dev)?;
    let origin = body.rest_joints()?.narrow(0, 0, 1)?;
    let transl = joints.narrow(1, 0, 1)?.squeeze(1)?.broadcast_sub(&origin)?;
    let hand = |aa: Option<&Tensor>, n: usize| -> Result<Tensor> {
        let m = match aa {
            Some(aa) => smpl::rotation::axis_angle_to_matrix(&aa.reshape((n, 3))?)?,
            None => Tensor::eye(3, DType::F32, dev)?
                .unsqueeze(0)?
                .broadcast_as((n, 3, 3))?,
        };
        Ok(m.unsqueeze(0)?.broadcast_as((t, n, 3, 3))?.contiguous()?)
    };
    let n_hand = (body.num_joints() - NR) / 2;
    let (left, right) = match body.hands_mean() {
        Some((l, r)) if n_hand == 15 => (hand(Some(l), 15)?, hand(Some(r), 15)?),
        _ => (hand(None, n_hand)?, hand(None, n_hand)?),
    };
    Ok(BodyParams {
        betas: None,
        global_orient: rotations.narrow(1, 0, 1)?.squeeze(1)?,
        body_pose: rotations.narrow(1, 1, NR - 1)?,
        left_hand_pose: left,
        right_hand_pose: right,
        transl,
    })
}
