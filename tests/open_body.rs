//! The open SMPL-H-layout body (`assets/open_body/smplh_open.npz`, built by
//! `data-scripts/build_open_body.py` from CC0 MakeHuman assets): it loads with the `smpl` loader,
//! has SMPL-H's skeleton and plausible T-pose proportions, and its joints survive the SMPL-RIFKE
//! round trip.

use anyhow::{Context, Result, ensure};
use candle::{DType, Device, Tensor};

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/open_body/smplh_open.npz"
);

// SMPL-H joint ids.
const PELVIS: usize = 0;
const L_HIP: usize = 1;
const R_HIP: usize = 2;
const SPINE1: usize = 3;
const L_KNEE: usize = 4;
const SPINE2: usize = 6;
const L_ANKLE: usize = 7;
const SPINE3: usize = 9;
const NECK: usize = 12;
const HEAD: usize = 15;
const L_SHOULDER: usize = 16;
const L_ELBOW: usize = 18;
const L_WRIST: usize = 20;

fn load() -> Result<smpl::BodyModel> {
    smpl::BodyModel::from_npz(MODEL, &Device::Cpu).with_context(|| format!("loading {MODEL}"))
}

/// Axis-angle to a row-major rotation matrix (the `smpl` crate's scalar rotation maths).
fn rodrigues(aa: [f32; 3]) -> [f32; 9] {
    smpl::rotation::mat3::axis_angle_to_matrix(&aa)
}

fn matmul(a: &[f32; 9], b: &[f32; 9]) -> [f32; 9] {
    smpl::rotation::mat3::mul(a, b)
}

/// `[T][52]` row-major rotations and `[T][3]` translations to `BodyParams`.
fn params(rots: &[Vec<[f32; 9]>], transl: &[[f32; 3]]) -> Result<smpl::BodyParams> {
    let t = rots.len();
    let dev = Device::Cpu;
    let part = |a: usize, n: usize| -> Result<Tensor> {
        let data: Vec<f32> = rots.iter().flat_map(|r| r[a..a + n].concat()).collect();
        Ok(Tensor::from_vec(data, (t, n, 3, 3), &dev)?)
    };
    Ok(smpl::BodyParams {
        betas: None,
        global_orient: part(0, 1)?.squeeze(1)?,
        body_pose: part(1, 21)?,
        left_hand_pose: part(22, 15)?,
        right_hand_pose: part(37, 15)?,
        transl: Tensor::from_vec(transl.concat(), (t, 3), &dev)?,
    })
}

fn rows(t: &Tensor) -> Result<Vec<[f32; 3]>> {
    let v: Vec<Vec<f32>> = t.to_dtype(DType::F32)?.to_vec2()?;
    Ok(v.into_iter().map(|r| [r[0], r[1], r[2]]).collect())
}

#[test]
fn open_body_loads_with_the_smplh_layout() -> Result<()> {
    let m = load()?;
    assert_eq!(m.num_vertices(), 13380);
    assert_eq!(m.num_joints(), 52);
    assert_eq!(m.faces().dims(), &[26756, 3]);
    // Parents equal SMPL-H's kinematic tree.
    let want: Vec<Option<usize>> = smpl::Skeleton::SmplH
        .parents()
        .iter()
        .map(|&p| usize::try_from(p).ok())
        .collect();
    assert_eq!(m.parents(), want.as_slice());
    // Documented absences: no pose correctives, no shape space; an authored hand mean.
    assert!(!m.has_pose_blend_shapes());
    assert_eq!(m.num_betas(), 0);
    let (l, r) = m.hands_mean().context("hands_meanl/r missing")?;
    assert_eq!((l.dims(), r.dims()), (&[45][..], &[45][..]));
    let l: Vec<f32> = l.to_vec1()?;
    assert!(
        l.iter().any(|x| x.abs() > 0.05),
        "the mean hand pose is not flat"
    );
    Ok(())
}

#[test]
fn t_pose_joints_have_smplh_proportions() -> Result<()> {
    let m = load()?;
    let id = vec![rodrigues([0.0; 3]); 52];
    let out = m.forward(&params(&[id], &[[0.0; 3]])?)?;
    let j = rows(&out.joints.squeeze(0)?.narrow(0, 0, 52)?)?;
    let v = rows(&out.vertices.squeeze(0)?)?;
    // Identity pose = rest: joints equal the regressed rest joints.
    let rest = rows(&m.rest_joints()?)?;
    for (a, b) in j.iter().zip(&rest) {
        for k in 0..3 {
            assert!((a[k] - b[k]).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }
    // SMPL's canonical frame: left side at +X, Y up.
    assert!(
        j[L_HIP][0] > 0.05 && j[R_HIP][0] < -0.05,
        "hips {:?} {:?}",
        j[L_HIP],
        j[R_HIP]
    );
    assert!(j[L_SHOULDER][0] > 0.1 && j[L_WRIST][0] > j[L_ELBOW][0]);
    // The spine chain rises: pelvis < spine1 < spine2 < spine3 < neck < head.
    for w in [PELVIS, SPINE1, SPINE2, SPINE3, NECK, HEAD].windows(2) {
        assert!(
            j[w[0]][1] < j[w[1]][1],
            "joint {} not below joint {}",
            w[0],
            w[1]
        );
    }
    assert!(j[HEAD][1] - j[PELVIS][1] > 0.5, "head above pelvis");
    // Legs hang down: hip > knee > ankle.
    assert!(j[L_HIP][1] > j[L_KNEE][1] && j[L_KNEE][1] > j[L_ANKLE][1]);
    // T-pose: shoulder, elbow and wrist at the same height (arms horizontal).
    for k in [L_ELBOW, L_WRIST] {
        assert!(
            (j[k][1] - j[L_SHOULDER][1]).abs() < 0.01,
            "arm not horizontal at joint {k}"
        );
    }
    // Mirror symmetry of the skeleton: every right joint is its left partner with x negated.
    let pairs: Vec<(usize, usize)> = [
        (1, 2),
        (4, 5),
        (7, 8),
        (10, 11),
        (13, 14),
        (16, 17),
        (18, 19),
        (20, 21),
    ]
    .into_iter()
    .chain((0..15).map(|k| (22 + k, 37 + k)))
    .collect();
    for (l, r) in pairs {
        let d = [j[l][0] + j[r][0], j[l][1] - j[r][1], j[l][2] - j[r][2]];
        assert!(
            d.iter().all(|x| x.abs() < 1e-5),
            "joints {l}/{r} not mirrored: {d:?}"
        );
    }
    // Arm span (fingertip to fingertip) within 10 % of height.
    let ext = |k: usize| {
        let lo = v.iter().map(|p| p[k]).fold(f32::INFINITY, f32::min);
        let hi = v.iter().map(|p| p[k]).fold(f32::NEG_INFINITY, f32::max);
        hi - lo
    };
    let (height, span) = (ext(1), ext(0));
    ensure!(
        (span / height - 1.0).abs() < 0.10,
        "span {span} vs height {height}"
    );
    ensure!((1.4..2.0).contains(&height), "height {height} m");
    // Limb lengths against standard anthropometry (Winter, "Biomechanics and Motor Control of
    // Human Movement", segment lengths as fractions of height: upper arm + forearm 0.332 H,
    // thigh + leg 0.491 H), with a +-25 % band since joint centres are placed differently.
    let dist = |a: usize, b: usize| {
        let d = [j[a][0] - j[b][0], j[a][1] - j[b][1], j[a][2] - j[b][2]];
        (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt()
    };
    let arm = (dist(L_SHOULDER, L_ELBOW) + dist(L_ELBOW, L_WRIST)) / height;
    let leg = (dist(L_HIP, L_KNEE) + dist(L_KNEE, L_ANKLE)) / height;
    ensure!(
        (0.332 * 0.75..0.332 * 1.25).contains(&arm),
        "arm/height {arm}"
    );
    ensure!(
        (0.491 * 0.75..0.491 * 1.25).contains(&leg),
        "leg/height {leg}"
    );
    Ok(())
}

/// A small skinning check: rotating the left elbow by 90 degrees moves the left wrist by the
/// forearm length along the expected direction and leaves the right side alone.
#[test]
fn posing_moves_only_the_posed_chain() -> Result<()> {
    let m = load()?;
    let mut r = vec![rodrigues([0.0; 3]); 52];
    // Left elbow flexion: the forearm (+X) turns forward to +Z = rotation of -90 deg about +Y.
    r[L_ELBOW] = rodrigues([0.0, -std::f32::consts::FRAC_PI_2, 0.0]);
    let rest = rows(&m.rest_joints()?)?;
    let out = m.forward(&params(&[r], &[[0.0; 3]])?)?;
    let j = rows(&out.joints.squeeze(0)?.narrow(0, 0, 52)?)?;
    let fore = rest[L_WRIST][0] - rest[L_ELBOW][0];
    let w = j[L_WRIST];
    assert!((w[0] - rest[L_ELBOW][0]).abs() < 1e-4, "wrist x {w:?}");
    assert!(
        (w[2] - (rest[L_ELBOW][2] + fore)).abs() < 1e-4,
        "wrist z {w:?}"
    );
    for k in [R_HIP, 17, 19, 21, HEAD] {
        // Unaffected joints only see float32 rounding of the kinematic chain.
        let d = (0..3)
            .map(|c| (j[k][c] - rest[k][c]).abs())
            .fold(0.0, f32::max);
        assert!(d < 1e-6, "joint {k} moved by {d}");
    }
    Ok(())
}

/// The extra vertex joints come from the body's own `extra_joints_idxs` (its landmark
/// vertices), not from the SMPL mesh's vertex ids, which would index unrelated vertices here.
#[test]
fn extra_vertex_joints_use_the_bodys_landmark_ids() -> Result<()> {
    let m = load()?;
    let ids = m
        .extra_vertex_ids()
        .context("the open body ships extra_joints_idxs")?
        .to_vec();
    ensure!(
        ids.len() == 21,
        "expected 21 landmark ids, got {}",
        ids.len()
    );
    // assets/open_body/README.md: the first landmark is the nose tip, body vertex 297.
    ensure!(ids[0] == 297, "nose landmark is {}", ids[0]);
    ensure!(
        ids.iter()
            .zip(smpl::skeleton::SMPLH_EXTRA_VERTEX_IDS)
            .any(|(&a, b)| a as usize != b),
        "the SMPL mesh ids must not be used for this body"
    );
    let r = vec![rodrigues([0.0; 3]); 52];
    let out = m.forward_with(
        &params(&[r], &[[0.0; 3]])?,
        &smpl::ForwardOptions {
            extra_vertex_joints: true,
        },
    )?;
    ensure!(out.joints.dims() == [1, 73, 3], "{:?}", out.joints.dims());
    let joints = rows(&out.joints.squeeze(0)?)?;
    let verts = rows(&out.vertices.squeeze(0)?)?;
    for (k, &id) in ids.iter().enumerate() {
        ensure!(
            joints[52 + k] == verts[id as usize],
            "extra joint {k} is not vertex {id}"
        );
    }
    Ok(())
}

/// SMPL-H joints that SMPL-RIFKE keeps: 0..21, left index 1 (22), right index 1 (37).
const RIFKE_JOINTS: [usize; 24] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 37,
];

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok(a.sub(b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// A walking-like motion of this body in the RIFKE world (Z up), encoded to SMPL-RIFKE and
/// decoded back: joints and rotations within 1e-5. Driving the body again with the decoded
/// motion (`to_body_params`) reproduces all 52 joints within 1e-5, which pins the joint order,
/// the parents and the identity rest frames against the representation.
#[test]
fn rifke_round_trip_with_open_body_joints() -> Result<()> {
    let m = load()?;
    let (hl, hr) = m.hands_mean().context("hands mean")?;
    let hand = |aa: &Tensor| -> Result<Vec<[f32; 9]>> {
        let v: Vec<f32> = aa.to_vec1()?;
        Ok(v.chunks(3).map(|c| rodrigues([c[0], c[1], c[2]])).collect())
    };
    let (hand_l, hand_r) = (hand(hl)?, hand(hr)?);
    // Body frame (Y up, facing +Z) to the Z-up world: +90 degrees about X.
    let y_up_to_z_up = rodrigues([std::f32::consts::FRAC_PI_2, 0.0, 0.0]);
    let t_frames = 40;
    let mut rots = Vec::with_capacity(t_frames);
    let mut transl = Vec::with_capacity(t_frames);
    for t in 0..t_frames {
        let ph = t as f32 * 0.3;
        let yaw = -1.0 + 2.5 * t as f32 / t_frames as f32;
        let mut r = vec![rodrigues([0.0; 3]); 52];
        r[0] = matmul(
            &rodrigues([0.0, 0.0, yaw]),
            &matmul(&y_up_to_z_up, &rodrigues([0.1 * ph.sin(), 0.05, 0.0])),
        );
        r[L_HIP] = rodrigues([-0.5 * ph.sin(), 0.0, 0.05]);
        r[R_HIP] = rodrigues([0.5 * ph.sin(), 0.0, -0.05]);
        r[L_KNEE] = rodrigues([0.4 * (1.0 + ph.cos()), 0.0, 0.0]);
        r[5] = rodrigues([0.4 * (1.0 - ph.cos()), 0.0, 0.0]);
        r[SPINE1] = rodrigues([0.05, 0.1 * ph.sin(), 0.0]);
        r[L_SHOULDER] = matmul(
            &rodrigues([0.35 * ph.sin(), 0.0, 0.0]),
            &rodrigues([0.0, 0.0, -1.3]),
        );
        r[17] = matmul(
            &rodrigues([-0.35 * ph.sin(), 0.0, 0.0]),
            &rodrigues([0.0, 0.0, 1.3]),
        );
        r[L_ELBOW] = rodrigues([0.0, -0.3, 0.0]);
        r[19] = rodrigues([0.0, 0.3, 0.0]);
        r[22..37].copy_from_slice(&hand_l);
        r[37..52].copy_from_slice(&hand_r);
        rots.push(r);
        transl.push([
            0.04 * t as f32 * yaw.cos(),
            0.04 * t as f32 * yaw.sin(),
            0.02 * ph.sin(),
        ]);
    }
    let out = m.forward(&params(&rots, &transl)?)?;
    let dev = Device::Cpu;
    let ids = Tensor::from_vec(RIFKE_JOINTS.map(|i| i as u32).to_vec(), 24, &dev)?;
    let joints = out.joints.index_select(&ids, 1)?;
    let rot_data: Vec<f32> = rots.iter().flat_map(|r| r[..22].concat()).collect();
    let rotations = Tensor::from_vec(rot_data, (t_frames, 22, 3, 3), &dev)?;

    let features = motion_repr::rifke::encode(&joints, &rotations)?;
    assert_eq!(features.dims(), &[t_frames, 205]);
    let (j2, r2) = motion_repr::rifke::decode(&features)?;
    let (dj, dr) = (max_abs_diff(&j2, &joints)?, max_abs_diff(&r2, &rotations)?);
    ensure!(dj < 1e-5, "joints round trip off by {dj}");
    ensure!(dr < 1e-5, "rotations round trip off by {dr}");

    let again = m.forward(&motion_repr::rifke::to_body_params(&j2, &r2, &m)?)?;
    let d = max_abs_diff(&again.joints, &out.joints)?;
    ensure!(d < 1e-5, "re-posed joints off by {d}");
    Ok(())
}
