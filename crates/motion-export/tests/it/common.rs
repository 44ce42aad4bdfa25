//! Shared test helpers: the open body, random poses, Y-up forward kinematics of the model.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smpl::rotation::mat3;
use smpl::{BodyModel, BodyParams};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The open SMPL-H-layout body shipped in `assets/`.
pub fn open_body() -> Result<BodyModel> {
    Ok(BodyModel::from_npz(
        workspace().join("assets/open_body/smplh_open.npz"),
        &Device::Cpu,
    )?)
}

/// `[n * 9]` random rotation matrices (axis-angle with angles up to `max_angle` radians).
fn random_rots(rng: &mut StdRng, n: usize, max_angle: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(9 * n);
    for _ in 0..n {
        let mut axis = [0f32; 3];
        for a in &mut axis {
            *a = rng.random_range(-1.0f32..1.0);
        }
        let norm = axis.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-3);
        let angle = rng.random_range(0.0f32..max_angle);
        let aa = axis.map(|x| x / norm * angle);
        out.extend_from_slice(&mat3::axis_angle_to_matrix(&aa));
    }
    out
}

/// Random params for `t` frames of a model with `hand` finger joints per hand: every joint
/// (root included) rotated by up to ~100 degrees, translations within 1 m.
pub fn random_params(t: usize, hand: usize, seed: u64) -> Result<BodyParams> {
    let mut rng = StdRng::seed_from_u64(seed);
    let dev = &Device::Cpu;
    let transl: Vec<f32> = (0..3 * t).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Ok(BodyParams {
        betas: None,
        global_orient: Tensor::from_vec(random_rots(&mut rng, t, 3.0), (t, 3, 3), dev)?,
        body_pose: Tensor::from_vec(random_rots(&mut rng, 21 * t, 1.7), (t, 21, 3, 3), dev)?,
        left_hand_pose: Tensor::from_vec(
            random_rots(&mut rng, hand * t, 1.7),
            (t, hand, 3, 3),
            dev,
        )?,
        right_hand_pose: Tensor::from_vec(
            random_rots(&mut rng, hand * t, 1.7),
            (t, hand, 3, 3),
            dev,
        )?,
        transl: Tensor::from_vec(transl, (t, 3), dev)?,
    })
}

/// The Z-up -> Y-up axis change the exporters document: `(x, y, z) -> (x, z, -y)`.
pub fn y_up(p: [f64; 3]) -> [f64; 3] {
    [p[0], p[2], -p[1]]
}

/// `body.forward(params)` joints, Y up, `[T][J]`, metres.
pub fn forward_joints_y_up(body: &BodyModel, params: &BodyParams) -> Result<Vec<Vec<[f64; 3]>>> {
    let joints = body.forward(params)?.joints.to_vec3::<f32>()?;
    Ok(joints
        .iter()
        .map(|f| {
            f.iter()
                .map(|p| y_up([f64::from(p[0]), f64::from(p[1]), f64::from(p[2])]))
                .collect()
        })
        .collect())
}

/// Row-major 3x3 product.
pub fn mul3(a: &[f64; 9], b: &[f64; 9]) -> [f64; 9] {
    let mut out = [0.0; 9];
    for i in 0..3 {
        for j in 0..3 {
            out[3 * i + j] = (0..3).map(|k| a[3 * i + k] * b[3 * k + j]).sum();
        }
    }
    out
}

/// `r v`.
pub fn apply3(r: &[f64; 9], v: &[f64; 3]) -> [f64; 3] {
    [
        r[0] * v[0] + r[1] * v[1] + r[2] * v[2],
        r[3] * v[0] + r[4] * v[1] + r[5] * v[2],
        r[6] * v[0] + r[7] * v[1] + r[8] * v[2],
    ]
}

/// Largest coordinate difference.
pub fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// The local rotation matrices `[T][J]` of `params` (row-major, f64), joint order.
pub fn local_rotations(params: &BodyParams) -> Result<Vec<Vec<[f64; 9]>>> {
    let t = params.global_orient.dims()[0];
    let parts = [
        params.global_orient.unsqueeze(1)?,
        params.body_pose.clone(),
        params.left_hand_pose.clone(),
        params.right_hand_pose.clone(),
    ];
    let all = Tensor::cat(&parts, 1)?;
    let nj = all.dims()[1];
    let data = all.flatten_all()?.to_vec1::<f32>()?;
    Ok((0..t)
        .map(|f| {
            (0..nj)
                .map(|j| {
                    let mut m = [0.0; 9];
                    for (k, x) in m.iter_mut().enumerate() {
                        *x = f64::from(data[9 * (f * nj + j) + k]);
                    }
                    m
                })
                .collect()
        })
        .collect())
}

/// A fresh, empty temporary folder for one test.
pub fn temp_dir(name: &str) -> Result<PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("motion-export-test-{}-{name}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The names of the files in `dir`, sorted.
pub fn files_in(dir: &Path) -> Result<Vec<String>> {
    let mut names = std::fs::read_dir(dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}
