//! Renders the open SMPL-H-layout body (`assets/open_body/smplh_open.npz`) in its rest pose and
//! three posed frames (arms down, a walking step, a squat) to PNGs.
//!
//! ```text
//! cargo run -p motion-viz --example render_open_body -- [MODEL.npz] [OUT_DIR]
//! ```
//!
//! Defaults: the committed asset and `docs/open_body/`. Writes `rest_pose.png`, `arms_down.png`,
//! `walk_step.png`, `squat.png`: each a front view, a side view (orthographic) and a 3/4
//! perspective view with the skeleton drawn over the mesh; the floor is drawn as a grid, and
//! `hands.png` (the left hand flat and with the authored mean pose). With
//! `OPEN_BODY_GIF=walk.gif` it also writes a one-cycle walking animation there.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle::{DType, Device, Tensor};
use motion_viz::{
    Camera, Canvas, MeshStyle, Projection, Scene, SceneOptions, SkeletonStyle, Vec3,
    bones_from_parents, faces_from_tensor, points_from_tensor,
};

/// Axis-angle to a row-major rotation matrix (the `smpl` crate's scalar rotation maths).
fn rodrigues(aa: [f32; 3]) -> [f32; 9] {
    smpl::rotation::mat3::axis_angle_to_matrix(&aa)
}

fn matmul(a: [f32; 9], b: [f32; 9]) -> [f32; 9] {
    smpl::rotation::mat3::mul(&a, &b)
}

/// A pose: 52 local rotations (SMPL-H order) given as axis-angle; unset joints are identity.
struct Pose {
    name: &'static str,
    rots: Vec<[f32; 9]>,
    relaxed_hands: bool,
}

impl Pose {
    fn new(name: &'static str, relaxed_hands: bool) -> Self {
        Self {
            name,
            rots: vec![rodrigues([0.0; 3]); 52],
            relaxed_hands,
        }
    }

    /// Sets joint `j` to `R = R_k ... R_1` for the axis-angles given in application order.
    fn set(mut self, j: usize, chain: &[[f32; 3]]) -> Self {
        let mut r = rodrigues([0.0; 3]);
        for &aa in chain {
            r = matmul(rodrigues(aa), r);
        }
        self.rots[j] = r;
        self
    }
}

// SMPL-H joint ids used below.
const PELVIS: usize = 0;
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

/// The four poses. Frame: Y up, +Z forward, left = +X. Signs (derived by hand): a rotation
/// about +Z by a negative angle lowers the left arm (+X -> -Y), a positive one the right arm;
/// about +X by a negative angle swings a hanging limb forward (-Y -> +Z); knee flexion is a
/// positive rotation about +X; left elbow flexion (forearm +X -> +Z) is negative about +Y, right
/// elbow positive.
fn poses() -> Vec<Pose> {
    let down = 1.3;
    vec![
        Pose::new("rest_pose", false),
        Pose::new("arms_down", true)
            .set(L_SHOULDER, &[[0.0, 0.0, -down]])
            .set(R_SHOULDER, &[[0.0, 0.0, down]])
            .set(L_ELBOW, &[[0.0, -0.15, 0.0]])
            .set(R_ELBOW, &[[0.0, 0.15, 0.0]]),
        Pose::new("walk_step", true)
            .set(L_HIP, &[[-0.45, 0.0, 0.0]])
            .set(L_KNEE, &[[0.15, 0.0, 0.0]])
            .set(L_ANKLE, &[[0.2, 0.0, 0.0]])
            .set(R_HIP, &[[0.3, 0.0, 0.0]])
            .set(R_KNEE, &[[0.45, 0.0, 0.0]])
            .set(R_ANKLE, &[[-0.15, 0.0, 0.0]])
            .set(L_SHOULDER, &[[0.0, 0.0, -down], [0.35, 0.0, 0.0]])
            .set(R_SHOULDER, &[[0.0, 0.0, down], [-0.35, 0.0, 0.0]])
            .set(L_ELBOW, &[[0.0, -0.25, 0.0]])
            .set(R_ELBOW, &[[0.0, 0.5, 0.0]]),
        Pose::new("squat", true)
            .set(PELVIS, &[[0.45, 0.0, 0.0]])
            .set(SPINE1, &[[0.1, 0.0, 0.0]])
            .set(L_HIP, &[[-2.05, 0.0, 0.0], [0.0, 0.25, 0.0]])
            .set(R_HIP, &[[-2.05, 0.0, 0.0], [0.0, -0.25, 0.0]])
            .set(L_KNEE, &[[2.0, 0.0, 0.0]])
            .set(R_KNEE, &[[2.0, 0.0, 0.0]])
            .set(L_ANKLE, &[[-0.4, 0.0, 0.0]])
            .set(R_ANKLE, &[[-0.4, 0.0, 0.0]])
            .set(L_SHOULDER, &[[0.0, -1.35, 0.0], [0.0, 0.0, -0.2]])
            .set(R_SHOULDER, &[[0.0, 1.35, 0.0], [0.0, 0.0, 0.2]]),
    ]
}

fn hand_mats(aa: &Tensor) -> Result<Vec<[f32; 9]>> {
    let v: Vec<f32> = aa.to_dtype(DType::F32)?.to_vec1()?;
    Ok(v.chunks(3).map(|c| rodrigues([c[0], c[1], c[2]])).collect())
}

fn mats(rots: &[[f32; 9]], n: usize, dev: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(rots.concat(), (1, n, 3, 3), dev)?)
}

fn floor_grid(canvas: &mut Canvas, cam: &Camera, y: f32, centre: Vec3) {
    let (n, step) = (6, 0.25f32);
    let half = n as f32 * step;
    for k in -n..=n {
        let o = k as f32 * step;
        let (x0, z0) = (centre[0] - half, centre[2] - half);
        let (x1, z1) = (centre[0] + half, centre[2] + half);
        let c = [170, 170, 175];
        canvas.draw_segment(cam, [centre[0] + o, y, z0], [centre[0] + o, y, z1], c, 0.6);
        canvas.draw_segment(cam, [x0, y, centre[2] + o], [x1, y, centre[2] + o], c, 0.6);
    }
}

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut args = std::env::args().skip(1);
    let model_path = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("assets/open_body/smplh_open.npz"));
    let out_dir = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("docs/open_body"));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    let dev = Device::Cpu;
    let model = smpl::BodyModel::from_npz(&model_path, &dev)
        .with_context(|| format!("loading {}", model_path.display()))?;
    let faces = faces_from_tensor(model.faces())?;
    let (hl, hr) = model
        .hands_mean()
        .context("the model has no hands_meanl/r")?;
    let (hand_l, hand_r) = (hand_mats(hl)?, hand_mats(hr)?);
    let flat = vec![rodrigues([0.0; 3]); 15];
    let parents: Vec<i64> = smpl::Skeleton::SmplH
        .parents()
        .iter()
        .map(|&p| i64::from(p))
        .collect();
    let bones = bones_from_parents(&parents);

    for pose in poses() {
        let (lh, rh) = if pose.relaxed_hands {
            (&hand_l, &hand_r)
        } else {
            (&flat, &flat)
        };
        let params = smpl::BodyParams {
            betas: None,
            global_orient: mats(&pose.rots[..1], 1, &dev)?.squeeze(1)?,
            body_pose: mats(&pose.rots[1..22], 21, &dev)?,
            left_hand_pose: mats(lh, 15, &dev)?,
            right_hand_pose: mats(rh, 15, &dev)?,
            transl: Tensor::zeros((1, 3), DType::F32, &dev)?,
        };
        let out = model.forward(&params)?;
        let verts = points_from_tensor(&out.vertices.squeeze(0)?)?;
        let joints = points_from_tensor(&out.joints.squeeze(0)?.narrow(0, 0, 52)?)?;
        let floor = verts.iter().map(|v| v[1]).fold(f32::INFINITY, f32::min);
        let centre = [joints[0][0], floor, joints[0][2]];

        let (w, h) = (360u32, 480u32);
        let views: [(Vec3, Projection, bool); 3] = [
            (
                [0.0, 0.0, -1.0],
                Projection::Orthographic { half_height: 1.0 },
                false,
            ),
            (
                [-1.0, 0.0, 0.0],
                Projection::Orthographic { half_height: 1.0 },
                false,
            ),
            (
                [0.6, -0.35, -0.75],
                Projection::Perspective {
                    fov_y: 0.7,
                    near: 0.05,
                },
                true,
            ),
        ];
        let mut sheet = image::RgbImage::new(w * views.len() as u32, h);
        for (i, (dir, proj, skeleton)) in views.into_iter().enumerate() {
            let mut canvas = Canvas::with_supersampling(w, h, 2)?;
            canvas.clear([246, 246, 248]);
            let cam = Camera::framing(&verts, dir, [0.0, 1.0, 0.0], proj, canvas.aspect(), 0.08)?;
            floor_grid(&mut canvas, &cam, floor, centre);
            let style = MeshStyle {
                cull_backfaces: true,
                ..MeshStyle::default()
            };
            canvas.draw_mesh(&cam, &verts, &faces, &style)?;
            if skeleton {
                canvas.clear_depth();
                canvas.draw_skeleton(
                    &cam,
                    &joints,
                    &bones,
                    &SkeletonStyle {
                        bone_radius_px: 1.6,
                        joint_radius_px: 2.4,
                        ..SkeletonStyle::default()
                    },
                )?;
            }
            image::imageops::replace(&mut sheet, &canvas.to_image(), (i as u32 * w) as i64, 0);
        }
        let path = out_dir.join(format!("{}.png", pose.name));
        motion_viz::write_png(&path, &sheet)?;
        println!("wrote {}", path.display());

        if pose.name == "rest_pose" {
            hands_close_up(&model, &faces, &hand_l, &hand_r, &out_dir)?;
        }
    }
    if let Some(gif_path) = std::env::var_os("OPEN_BODY_GIF") {
        walk_gif(&model, &faces, &hand_l, &hand_r, &PathBuf::from(gif_path))?;
    }
    Ok(())
}

/// A one-cycle walk (30 frames at 20 fps) as an animated GIF, rendered through [`Scene`].
fn walk_gif(
    model: &smpl::BodyModel,
    faces: &[[u32; 3]],
    hand_l: &[[f32; 9]],
    hand_r: &[[f32; 9]],
    path: &std::path::Path,
) -> Result<()> {
    let dev = Device::Cpu;
    let n = 30;
    let mut rots = Vec::new();
    let mut transl = Vec::new();
    for t in 0..n {
        let ph = std::f32::consts::TAU * t as f32 / n as f32;
        let (s, c) = ph.sin_cos();
        let pose = Pose::new("walk", true)
            .set(L_HIP, &[[-0.45 * s, 0.0, 0.0]])
            .set(R_HIP, &[[0.45 * s, 0.0, 0.0]])
            .set(L_KNEE, &[[0.35 * (1.0 - c).max(0.0) + 0.05, 0.0, 0.0]])
            .set(R_KNEE, &[[0.35 * (1.0 + c).max(0.0) + 0.05, 0.0, 0.0]])
            .set(L_SHOULDER, &[[0.0, 0.0, -1.3], [0.35 * s, 0.0, 0.0]])
            .set(R_SHOULDER, &[[0.0, 0.0, 1.3], [-0.35 * s, 0.0, 0.0]])
            .set(L_ELBOW, &[[0.0, -0.3, 0.0]])
            .set(R_ELBOW, &[[0.0, 0.3, 0.0]]);
        let mut r = pose.rots;
        r[22..37].copy_from_slice(hand_l);
        r[37..52].copy_from_slice(hand_r);
        rots.push(r);
        transl.push([0.0, 0.01 * (2.0 * ph).cos(), 0.045 * t as f32]);
    }
    let t = rots.len();
    let part = |a: usize, k: usize| -> Result<Tensor> {
        let data: Vec<f32> = rots.iter().flat_map(|r| r[a..a + k].concat()).collect();
        Ok(Tensor::from_vec(data, (t, k, 3, 3), &dev)?)
    };
    let params = smpl::BodyParams {
        betas: None,
        global_orient: part(0, 1)?.squeeze(1)?,
        body_pose: part(1, 21)?,
        left_hand_pose: part(22, 15)?,
        right_hand_pose: part(37, 15)?,
        transl: Tensor::from_vec(transl.concat(), (t, 3), &dev)?,
    };
    let out = model.forward(&params)?;
    let mut frames: Vec<Vec<Vec3>> = Vec::with_capacity(t);
    for i in 0..t {
        frames.push(points_from_tensor(&out.vertices.get(i)?)?);
    }
    let all: Vec<Vec3> = frames.iter().flatten().copied().collect();
    let scene = Scene::fit(
        &all,
        SceneOptions {
            width: 320,
            height: 320,
            ..SceneOptions::default()
        },
    )?;
    let images = frames
        .iter()
        .map(|v| scene.render(Some((v, faces)), None))
        .collect::<motion_viz::Result<Vec<_>>>()?;
    motion_viz::write_gif(path, &images, 20.0)?;
    motion_viz::write_png(path.with_extension("frame0.png"), &images[0])?;
    println!("wrote {}", path.display());
    Ok(())
}

/// `hands.png`: the left hand in the T-pose, flat (rest) and with the relaxed mean pose, seen
/// from the front (fingers along +X, palm down) and from below.
fn hands_close_up(
    model: &smpl::BodyModel,
    faces: &[[u32; 3]],
    hand_l: &[[f32; 9]],
    hand_r: &[[f32; 9]],
    out_dir: &std::path::Path,
) -> Result<()> {
    let dev = Device::Cpu;
    let id = vec![rodrigues([0.0; 3]); 22];
    let flat = vec![rodrigues([0.0; 3]); 15];
    let (w, h) = (360u32, 240u32);
    let mut sheet = image::RgbImage::new(2 * w, 2 * h);
    for (row, (lh, rh)) in [(&flat[..], &flat[..]), (hand_l, hand_r)]
        .into_iter()
        .enumerate()
    {
        let params = smpl::BodyParams {
            betas: None,
            global_orient: mats(&id[..1], 1, &dev)?.squeeze(1)?,
            body_pose: mats(&id[1..22], 21, &dev)?,
            left_hand_pose: mats(lh, 15, &dev)?,
            right_hand_pose: mats(rh, 15, &dev)?,
            transl: Tensor::zeros((1, 3), DType::F32, &dev)?,
        };
        let out = model.forward(&params)?;
        let verts = points_from_tensor(&out.vertices.squeeze(0)?)?;
        let joints = points_from_tensor(&out.joints.squeeze(0)?)?;
        let wrist = joints[20];
        let hand: Vec<Vec3> = verts
            .iter()
            .copied()
            .filter(|v| v[0] > wrist[0] - 0.02)
            .collect();
        for (col, dir) in [[0.0, 0.0, -1.0], [0.0, 1.0, -0.2]].into_iter().enumerate() {
            let mut canvas = Canvas::with_supersampling(w, h, 2)?;
            canvas.clear([246, 246, 248]);
            let up = if col == 0 {
                [0.0, 1.0, 0.0]
            } else {
                [0.0, 0.0, 1.0]
            };
            let proj = Projection::Orthographic { half_height: 1.0 };
            let cam = Camera::framing(&hand, dir, up, proj, canvas.aspect(), 0.08)?;
            canvas.draw_mesh(&cam, &verts, faces, &MeshStyle::default())?;
            let (x, y) = (col as u32 * w, row as u32 * h);
            image::imageops::replace(&mut sheet, &canvas.to_image(), x as i64, y as i64);
        }
    }
    let path = out_dir.join("hands.png");
    motion_viz::write_png(&path, &sheet)?;
    println!("wrote {}", path.display());
    Ok(())
}
