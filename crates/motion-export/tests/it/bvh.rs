//! BVH export: parsed back with the small reader below, forward kinematics on the parsed file
//! must reproduce the body model's posed joints (Y up).

use anyhow::{Context, Result, bail};
use candle::{Device, Tensor};
use motion_export::{BvhOptions, ExportError, LengthUnit, bvh_string, write_bvh};
use smpl::Skeleton;

use crate::common::{
    apply3, files_in, forward_joints_y_up, max_diff, mul3, open_body, random_params, temp_dir,
    workspace, y_up,
};

/// One joint of a parsed BVH hierarchy.
#[derive(Debug)]
struct Joint {
    name: String,
    parent: Option<usize>,
    offset: [f64; 3],
    channels: Vec<String>,
}

/// A parsed BVH file.
#[derive(Debug)]
struct Bvh {
    joints: Vec<Joint>,
    end_sites: usize,
    frames: usize,
    frame_time: f64,
    /// `[frames][channels]`, channels in hierarchy order.
    values: Vec<Vec<f64>>,
}

/// A minimal BVH reader: whitespace tokens, `ROOT` / `JOINT` / `End Site` blocks, then
/// `MOTION`.
fn parse(text: &str) -> Result<Bvh> {
    let mut tok = text.split_whitespace().peekable();
    let mut next = || tok.next().context("unexpected end of file");
    if next()? != "HIERARCHY" {
        bail!("no HIERARCHY");
    }
    let mut joints: Vec<Joint> = Vec::new();
    let mut stack: Vec<Option<usize>> = Vec::new(); // None = an End Site block
    let mut end_sites = 0;
    let num = |s: &str| -> Result<f64> { Ok(s.parse::<f64>()?) };
    loop {
        let t = next()?;
        match t {
            "ROOT" | "JOINT" => {
                let name = next()?.to_string();
                if next()? != "{" {
                    bail!("expected {{ after {name}");
                }
                let parent = stack.iter().rev().find_map(|e| *e);
                if t == "ROOT" && !joints.is_empty() {
                    bail!("second ROOT");
                }
                joints.push(Joint {
                    name,
                    parent,
                    offset: [0.0; 3],
                    channels: Vec::new(),
                });
                stack.push(Some(joints.len() - 1));
            }
            "End" => {
                if next()? != "Site" || next()? != "{" {
                    bail!("bad End Site");
                }
                end_sites += 1;
                stack.push(None);
            }
            "OFFSET" => {
                let o = [num(next()?)?, num(next()?)?, num(next()?)?];
                if let Some(Some(j)) = stack.last() {
                    joints[*j].offset = o;
                }
            }
            "CHANNELS" => {
                let n: usize = next()?.parse()?;
                let Some(Some(j)) = stack.last() else {
                    bail!("CHANNELS outside a joint");
                };
                let j = *j;
                for _ in 0..n {
                    joints[j].channels.push(next()?.to_string());
                }
            }
            "}" => {
                stack.pop().context("unbalanced }")?;
            }
            "MOTION" => break,
            other => bail!("unexpected token {other:?}"),
        }
    }
    if !stack.is_empty() {
        bail!("unclosed block");
    }
    if next()? != "Frames:" {
        bail!("no Frames:");
    }
    let frames: usize = next()?.parse()?;
    if next()? != "Frame" || next()? != "Time:" {
        bail!("no Frame Time:");
    }
    let frame_time = num(next()?)?;
    let nch: usize = joints.iter().map(|j| j.channels.len()).sum();
    let rest: Vec<f64> = tok.map(|s| s.parse::<f64>()).collect::<Result<_, _>>()?;
    if rest.len() != frames * nch {
        bail!("{} values for {frames} frames x {nch} channels", rest.len());
    }
    Ok(Bvh {
        joints,
        end_sites,
        frames,
        frame_time,
        values: rest.chunks(nch.max(1)).map(<[f64]>::to_vec).collect(),
    })
}

fn axis_rotation(axis: char, deg: f64) -> Result<[f64; 9]> {
    let (s, c) = deg.to_radians().sin_cos();
    Ok(match axis {
        'X' => [1.0, 0.0, 0.0, 0.0, c, -s, 0.0, s, c],
        'Y' => [c, 0.0, s, 0.0, 1.0, 0.0, -s, 0.0, c],
        'Z' => [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0],
        _ => bail!("bad axis {axis}"),
    })
}

/// World joint positions `[frames][joints]` (hierarchy order) by forward kinematics on the
/// parsed file: local rotation = product of the rotation channels in their listed order.
fn forward_kinematics(bvh: &Bvh) -> Result<Vec<Vec<[f64; 3]>>> {
    let mut out = Vec::with_capacity(bvh.frames);
    for values in &bvh.values {
        let mut k = 0;
        let mut rot: Vec<[f64; 9]> = Vec::with_capacity(bvh.joints.len());
        let mut pos: Vec<[f64; 3]> = Vec::with_capacity(bvh.joints.len());
        for j in &bvh.joints {
            let mut r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
            let mut p = j.offset;
            for ch in &j.channels {
                let v = values[k];
                k += 1;
                let axis = ch.chars().next().context("empty channel")?;
                if ch.ends_with("position") {
                    p[(axis as usize) - ('X' as usize)] += v;
                } else {
                    r = mul3(&r, &axis_rotation(axis, v)?);
                }
            }
            match j.parent {
                None => {
                    rot.push(r);
                    pos.push(p);
                }
                Some(q) => {
                    let a = apply3(&rot[q], &p);
                    pos.push([pos[q][0] + a[0], pos[q][1] + a[1], pos[q][2] + a[2]]);
                    rot.push(mul3(&rot[q], &r));
                }
            }
        }
        out.push(pos);
    }
    Ok(out)
}

/// Asserts that FK on `text` reproduces `expected` (`[T][J]`, metres, Y up) for the joints the
/// file has, in `unit`; returns the largest error in metres.
fn check_fk(text: &str, expected: &[Vec<[f64; 3]>], unit: LengthUnit) -> Result<f64> {
    let bvh = parse(text)?;
    let fk = forward_kinematics(&bvh)?;
    let scale = unit.per_metre();
    let mut worst = 0.0f64;
    for (f, frame) in fk.iter().enumerate() {
        for (k, j) in bvh.joints.iter().enumerate() {
            let idx = Skeleton::SmplH
                .index_of(&j.name)
                .with_context(|| format!("unknown joint {}", j.name))?;
            let e = expected[f][idx].map(|x| x * scale);
            let d = max_diff(&frame[k], &e) / scale;
            worst = worst.max(d);
        }
    }
    Ok(worst)
}

#[test]
fn bvh_forward_kinematics_reproduces_the_body_joints_y_up_in_metres() -> Result<()> {
    let body = open_body()?;
    let params = random_params(6, 15, 7)?;
    let text = bvh_string(&body, &params, 20.0, &BvhOptions::default())?;
    let bvh = parse(&text)?;
    assert_eq!(bvh.frames, 6);
    assert_eq!(bvh.joints.len(), 22);
    assert!((bvh.frame_time - 0.05).abs() < 1e-9, "{}", bvh.frame_time);
    assert_eq!(bvh.joints[0].name, "pelvis");
    assert_eq!(
        bvh.joints[0].channels,
        [
            "Xposition",
            "Yposition",
            "Zposition",
            "Zrotation",
            "Xrotation",
            "Yrotation"
        ]
    );
    assert!(
        bvh.joints[1..]
            .iter()
            .all(|j| j.channels == ["Zrotation", "Xrotation", "Yrotation"])
    );
    let expected = forward_joints_y_up(&body, &params)?;
    let err = check_fk(&text, &expected, LengthUnit::Metres)?;
    assert!(err < 1e-4, "max joint error {err} m");
    Ok(())
}

#[test]
fn bvh_with_hands_has_all_52_joints_and_matches_in_centimetres() -> Result<()> {
    let body = open_body()?;
    let params = random_params(4, 15, 11)?;
    let opts = BvhOptions {
        hands: true,
        unit: LengthUnit::Centimetres,
    };
    let text = bvh_string(&body, &params, 30.0, &opts)?;
    let bvh = parse(&text)?;
    assert_eq!(bvh.joints.len(), 52);
    assert_eq!(bvh.frames, 4);
    assert!((bvh.frame_time - 1.0 / 30.0).abs() < 1e-8);
    // Offsets are centimetres: the left hip sits ~10 cm from the pelvis.
    let hip = &bvh.joints[1];
    assert_eq!(hip.name, "left_hip");
    let len = hip.offset.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!(len > 5.0 && len < 30.0, "hip offset {len} cm");
    let expected = forward_joints_y_up(&body, &params)?;
    let err = check_fk(&text, &expected, LengthUnit::Centimetres)?;
    assert!(err < 1e-4, "max joint error {err} m");
    Ok(())
}

#[test]
fn bvh_leaves_get_end_sites_and_children_follow_the_smpl_h_parents() -> Result<()> {
    let body = open_body()?;
    let params = random_params(2, 15, 3)?;
    for (hands, joints, leaves) in [(false, 22, 5), (true, 52, 13)] {
        let opts = BvhOptions {
            hands,
            ..Default::default()
        };
        let bvh = parse(&bvh_string(&body, &params, 20.0, &opts)?)?;
        assert_eq!(bvh.joints.len(), joints);
        // Body: head, two feet, two wrists; with hands: head, two feet, ten fingertips.
        assert_eq!(bvh.end_sites, leaves);
        for j in &bvh.joints {
            let idx = Skeleton::SmplH.index_of(&j.name).context("joint name")?;
            let parent = j.parent.map(|p| bvh.joints[p].name.as_str());
            let expected = usize::try_from(Skeleton::SmplH.parents()[idx])
                .ok()
                .map(|p| Skeleton::SmplH.names()[p]);
            assert_eq!(parent, expected, "parent of {}", j.name);
        }
    }
    Ok(())
}

#[test]
fn a_body_stood_up_in_the_z_up_world_has_zero_root_angles_and_an_upright_rest_skeleton()
-> Result<()> {
    let body = open_body()?;
    let t = 2;
    let dev = &Device::Cpu;
    let eye = |n: usize| -> Result<Tensor> {
        Ok(Tensor::eye(3, candle::DType::F32, dev)?
            .broadcast_as((t, n, 3, 3))?
            .contiguous()?)
    };
    // Rx(+90 deg): the canonical Y-up body standing in the Z-up world.
    let up = Tensor::new(&[[1f32, 0., 0.], [0., 0., -1.], [0., 1., 0.]], dev)?;
    let params = smpl::BodyParams {
        betas: None,
        global_orient: up.broadcast_as((t, 3, 3))?.contiguous()?,
        body_pose: eye(21)?,
        left_hand_pose: eye(15)?,
        right_hand_pose: eye(15)?,
        transl: Tensor::new(&[[0.5f32, -0.25, 1.0], [1.0, 2.0, 0.0]], dev)?,
    };
    let bvh = parse(&bvh_string(&body, &params, 20.0, &BvhOptions::default())?)?;
    let rest = body.rest_joints()?.to_vec2::<f32>()?;
    for (f, tr) in [[0.5, -0.25, 1.0], [1.0, 2.0, 0.0]].iter().enumerate() {
        let v = &bvh.values[f];
        let p = y_up([
            tr[0] + f64::from(rest[0][0]),
            tr[1] + f64::from(rest[0][1]),
            tr[2] + f64::from(rest[0][2]),
        ]);
        assert!(
            max_diff(&v[..3], &p) < 1e-6,
            "frame {f}: {:?} vs {p:?}",
            &v[..3]
        );
        assert!(v[3..].iter().all(|a| a.abs() < 1e-4), "frame {f}: {v:?}");
    }
    // The head is above the pelvis in the rest skeleton (Y up).
    let head = bvh
        .joints
        .iter()
        .position(|j| j.name == "head")
        .context("head")?;
    let mut y = 0.0;
    let mut j = Some(head);
    while let Some(k) = j {
        y += bvh.joints[k].offset[1];
        j = bvh.joints[k].parent;
    }
    assert!(y > 0.4, "head {y} m above the pelvis");
    Ok(())
}

#[test]
fn bvh_of_a_shaped_body_follows_the_shaped_skeleton() -> Result<()> {
    let body = smpl::BodyModel::from_npz(
        workspace().join("fixtures/smplh/SMPLH_NEUTRAL.npz"),
        &Device::Cpu,
    )?;
    let nb = body.num_betas().min(10);
    assert!(nb > 0, "the fixture model has shape blend shapes");
    let mut params = random_params(3, 15, 5)?;
    let betas: Vec<f32> = (0..nb).map(|i| 1.5 * ((i as f32) * 0.7).sin()).collect();
    params.betas = Some(Tensor::from_vec(betas, nb, &Device::Cpu)?);
    let text = bvh_string(&body, &params, 20.0, &BvhOptions::default())?;
    let expected = forward_joints_y_up(&body, &params)?;
    let err = check_fk(&text, &expected, LengthUnit::Metres)?;
    assert!(err < 1e-4, "max joint error {err} m");
    // The same motion on the template skeleton is measurably different.
    let mut plain = params.clone();
    plain.betas = None;
    let err_plain = check_fk(
        &bvh_string(&body, &plain, 20.0, &BvhOptions::default())?,
        &expected,
        LengthUnit::Metres,
    )?;
    assert!(err_plain > 1e-3, "betas changed nothing ({err_plain})");
    Ok(())
}

#[test]
fn write_bvh_replaces_the_file_atomically_and_leaves_nothing_on_error() -> Result<()> {
    let body = open_body()?;
    let params = random_params(3, 15, 1)?;
    let dir = temp_dir("bvh")?;
    let path = dir.join("motion.bvh");
    std::fs::write(&path, "old")?;
    write_bvh(&path, &body, &params, 20.0, &BvhOptions::default())?;
    assert_eq!(files_in(&dir)?, ["motion.bvh"]);
    let text = std::fs::read_to_string(&path)?;
    assert_eq!(
        text,
        bvh_string(&body, &params, 20.0, &BvhOptions::default())?
    );

    // Bad input: an error naming the argument, and the old file untouched.
    let mut bad = params.clone();
    bad.body_pose = bad.body_pose.narrow(1, 0, 20)?;
    match write_bvh(&path, &body, &bad, 20.0, &BvhOptions::default()) {
        Err(ExportError::Shape { what, .. }) => assert_eq!(what, "body_pose"),
        other => bail!("expected a shape error, got {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&path)?, text);
    // A missing folder: an I/O error naming the path, no file anywhere.
    let missing = dir.join("no/such/dir/motion.bvh");
    match write_bvh(&missing, &body, &params, 20.0, &BvhOptions::default()) {
        Err(ExportError::Io { path, .. }) => assert_eq!(path, missing),
        other => bail!("expected an I/O error, got {other:?}"),
    }
    assert_eq!(files_in(&dir)?, ["motion.bvh"]);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn bad_rotations_and_frame_rates_are_refused_with_the_joint_and_frame_named() -> Result<()> {
    let body = open_body()?;
    let params = random_params(3, 15, 2)?;
    // Scale joint 5 (right_knee, body_pose index 4) in frame 2 by 2: not a rotation.
    let mut data = params.body_pose.flatten_all()?.to_vec1::<f32>()?;
    for x in &mut data[9 * (2 * 21 + 4)..9 * (2 * 21 + 5)] {
        *x *= 2.0;
    }
    let mut bad = params.clone();
    bad.body_pose = Tensor::from_vec(data, (3, 21, 3, 3), &Device::Cpu)?;
    match bvh_string(&body, &bad, 20.0, &BvhOptions::default()) {
        Err(ExportError::NotARotation {
            joint,
            index,
            frame,
            ..
        }) => {
            assert_eq!((joint.as_str(), index, frame), ("right_knee", 5, 2));
        }
        other => bail!("expected NotARotation, got {other:?}"),
    }
    for fps in [0.0, -20.0, f32::NAN] {
        match bvh_string(&body, &params, fps, &BvhOptions::default()) {
            Err(ExportError::InvalidValue { what, .. }) => assert_eq!(what, "fps"),
            other => bail!("expected an fps error, got {other:?}"),
        }
    }
    Ok(())
}
