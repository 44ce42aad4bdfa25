//! The body model against the `smplh` fixture, loaders and typed errors.

use candle::{DType, Device, Tensor};
use smpl::{BodyModel, BodyParams, ForwardOptions, SmplError};
use test_fixtures::{Fixture, assert_close, fixture_path};

fn model() -> anyhow::Result<BodyModel> {
    Ok(BodyModel::from_npz(
        fixture_path("smplh/SMPLH_NEUTRAL.npz")?,
        &Device::Cpu,
    )?)
}

/// BodyParams exactly as smplh.json steps (1)-(4) describe them, from the fixture's own
/// intermediates (`model.*_hand_pose_mats`, `output.transl`).
fn fixture_params(fx: &Fixture) -> anyhow::Result<BodyParams> {
    let poses = fx.f32("input.poses")?;
    let t = poses.dims()[0];
    let hand = |k: &str| -> anyhow::Result<Tensor> {
        Ok(fx
            .f32(k)?
            .unsqueeze(0)?
            .broadcast_as((t, 15, 3, 3))?
            .contiguous()?)
    };
    Ok(BodyParams {
        betas: None,
        global_orient: poses.narrow(1, 0, 1)?.squeeze(1)?,
        body_pose: poses.narrow(1, 1, 21)?,
        left_hand_pose: hand("model.left_hand_pose_mats")?,
        right_hand_pose: hand("model.right_hand_pose_mats")?,
        transl: fx.f32("output.transl")?,
    })
}

#[test]
fn smplh_vertices_and_73_joints_match_the_reference() -> anyhow::Result<()> {
    let fx = Fixture::load("smplh")?;
    let atol = fx.json_f64("/tolerance_suggestion/atol")?;
    let model = model()?;
    let origin = model.rest_joints()?;
    assert_close(
        &origin,
        &fx.f32("model.origin")?,
        atol,
        0.0,
        "J_regressor @ v_template",
    );
    let parents: Vec<i64> = model
        .parents()
        .iter()
        .map(|p| p.map_or(-1, |p| p as i64))
        .collect();
    assert_eq!(parents, fx.tensor("model.parents")?.to_vec1::<i64>()?);
    let ids: Vec<i64> = smpl::skeleton::SMPLH_EXTRA_VERTEX_IDS
        .iter()
        .map(|&i| i as i64)
        .collect();
    assert_eq!(ids, fx.tensor("model.extra_joints_idxs")?.to_vec1::<i64>()?);

    let params = fixture_params(&fx)?;
    let out = model.forward_with(
        &params,
        &ForwardOptions {
            extra_vertex_joints: true,
        },
    )?;
    assert_close(
        &out.vertices,
        &fx.f32("output.vertices")?,
        atol,
        0.0,
        "vertices",
    );
    assert_close(
        &out.joints,
        &fx.f32("output.joints")?,
        atol,
        0.0,
        "73 joints",
    );
    let plain = model.forward(&params)?;
    assert_eq!(plain.joints.dims(), &[60, 52, 3]);
    assert_close(
        &plain.joints,
        &fx.f32("output.joints")?.narrow(1, 0, 52)?,
        atol,
        0.0,
        "52 joints",
    );
    Ok(())
}

#[test]
fn safetensors_copy_of_the_model_loads_identically() -> anyhow::Result<()> {
    // Build a .safetensors model (no posedirs / shapedirs / hands) from the npz model.
    let model = model()?;
    let dir = std::env::temp_dir().join(format!("smpl-st-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("model.safetensors");
    let mut kt: Vec<i64> = model
        .parents()
        .iter()
        .map(|p| p.map_or(-1, |p| p as i64))
        .collect();
    kt.extend(0..52i64);
    let kt = Tensor::from_vec(kt, (2, 52), &Device::Cpu)?;
    let tensors = [
        ("v_template", model.v_template().clone()),
        ("f", model.faces().to_dtype(DType::I64)?),
        ("J_regressor", model.j_regressor().clone()),
        ("weights", model.weights().clone()),
        ("kintree_table", kt),
    ];
    candle::safetensors::save(&tensors.iter().cloned().collect(), &path)?;
    let st = BodyModel::from_npz(&path, &Device::Cpu)?;
    std::fs::remove_dir_all(&dir)?;
    assert!(!st.has_pose_blend_shapes());
    assert_eq!(st.num_betas(), 0);
    // Without posedirs, an identity pose gives the template back (blend shapes are zeros).
    let t = 2;
    let eye = |n: usize| -> anyhow::Result<Tensor> {
        Ok(Tensor::eye(3, DType::F32, &Device::Cpu)?
            .broadcast_as((t, n, 3, 3))?
            .contiguous()?)
    };
    let params = BodyParams {
        betas: None,
        global_orient: eye(1)?.squeeze(1)?,
        body_pose: eye(21)?,
        left_hand_pose: eye(15)?,
        right_hand_pose: eye(15)?,
        transl: Tensor::zeros((t, 3), DType::F32, &Device::Cpu)?,
    };
    let out = st.forward(&params)?;
    let expected = model
        .v_template()
        .unsqueeze(0)?
        .broadcast_as((t, 6890, 3))?;
    assert_close(
        &out.vertices,
        &expected,
        1e-5,
        0.0,
        "rest pose without correctives",
    );
    Ok(())
}

#[test]
fn betas_move_the_template_along_shapedirs() -> anyhow::Result<()> {
    let fx = Fixture::load("smplh")?;
    let model = model()?;
    let mut params = fixture_params(&fx)?;
    let base = model.forward(&params)?;
    params.betas = Some(Tensor::zeros(10, DType::F32, &Device::Cpu)?);
    let zero = model.forward(&params)?;
    assert_close(
        &zero.vertices,
        &base.vertices,
        1e-6,
        0.0,
        "zero betas change nothing",
    );
    params.betas = Some(Tensor::new(&[1.0f32, -0.5], &Device::Cpu)?);
    let shaped = model.forward(&params)?;
    let moved = (shaped.vertices - base.vertices)?
        .abs()?
        .max_keepdim(0)?
        .max_keepdim(1)?;
    assert!(moved.flatten_all()?.max(0)?.to_scalar::<f32>()? > 1e-4);
    params.betas = Some(Tensor::zeros(11, DType::F32, &Device::Cpu)?);
    let err = model.forward(&params).expect_err("11 > 10 betas");
    assert!(err.to_string().contains("11 betas"), "{err}");
    Ok(())
}

/// Writes an npz with the fixture arrays, `edit` applied to them.
fn write_npz(
    name: &str,
    edit: impl Fn(&str, &[u8]) -> Option<Vec<u8>>,
) -> anyhow::Result<std::path::PathBuf> {
    use std::io::{Read, Write};
    let src = std::fs::File::open(fixture_path("smplh/SMPLH_NEUTRAL.npz")?)?;
    let mut zin = zip::ZipArchive::new(src)?;
    let dir = std::env::temp_dir().join(format!("smpl-npz-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.npz"));
    let mut zout = zip::ZipWriter::new(std::fs::File::create(&path)?);
    for i in 0..zin.len() {
        let mut m = zin.by_index(i)?;
        let member = m.name().to_string();
        let mut bytes = Vec::new();
        m.read_to_end(&mut bytes)?;
        let key = member.trim_end_matches(".npy");
        if let Some(b) = edit(key, &bytes) {
            zout.start_file(member.as_str(), zip::write::SimpleFileOptions::default())?;
            zout.write_all(&b)?;
        }
    }
    zout.finish()?;
    Ok(path)
}

/// Loads a model written by [`write_npz`] and deletes its temporary folder.
fn load_once(path: &std::path::Path) -> Result<BodyModel, SmplError> {
    let out = BodyModel::from_npz(path, &Device::Cpu);
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    out
}

/// An npy header + data for a float32 array.
fn npy_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_str = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_str}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for x in data {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

#[test]
fn missing_npz_key_is_named() -> anyhow::Result<()> {
    let path = write_npz("missing", |k, b| (k != "weights").then(|| b.to_vec()))?;
    let err = load_once(&path).expect_err("weights removed");
    assert!(
        matches!(&err, SmplError::MissingArray { key, .. } if key == "weights"),
        "{err}"
    );
    assert!(err.to_string().contains("weights"), "{err}");
    Ok(())
}

#[test]
fn absent_correctives_and_hands_load_as_zeros() -> anyhow::Result<()> {
    let path = write_npz("open", |k, b| {
        (!(k.starts_with("posedirs") || k.starts_with("shapedirs") || k.starts_with("hands_")))
            .then(|| b.to_vec())
    })?;
    let m = load_once(&path)?;
    assert!(!m.has_pose_blend_shapes() && m.num_betas() == 0 && m.hands_mean().is_none());
    Ok(())
}

#[test]
fn inconsistent_shapes_name_the_offending_array() -> anyhow::Result<()> {
    // posedirs with 207 (SMPL) instead of 459 (SMPL-H, 52 joints) pose features.
    let path = write_npz("posedirs", |k, b| {
        Some(if k == "posedirs" {
            npy_f32(&[6890, 3, 207], &vec![0.0; 6890 * 3 * 207])
        } else {
            b.to_vec()
        })
    })?;
    let err = load_once(&path).expect_err("posedirs too small");
    assert!(
        matches!(&err, SmplError::InconsistentShape { key, .. } if key == "posedirs"),
        "{err}"
    );
    assert!(err.to_string().contains("459"), "{err}");
    // weights with a wrong vertex count.
    let path = write_npz("weights", |k, b| {
        Some(if k == "weights" {
            npy_f32(&[100, 52], &vec![0.0; 5200])
        } else {
            b.to_vec()
        })
    })?;
    let err = load_once(&path).expect_err("weights of 100 vertices");
    assert!(
        matches!(&err, SmplError::InconsistentShape { key, .. } if key == "weights"),
        "{err}"
    );
    // A NaN in v_template.
    let path = write_npz("nan", |k, b| {
        Some(if k == "v_template" {
            npy_f32(&[6890, 3], &vec![f32::NAN; 6890 * 3])
        } else {
            b.to_vec()
        })
    })?;
    let err = load_once(&path).expect_err("NaN template");
    assert!(
        matches!(&err, SmplError::InvalidArray { key, .. } if key == "v_template"),
        "{err}"
    );
    Ok(())
}

#[test]
fn pkl_path_points_at_the_conversion_script() {
    let err =
        BodyModel::from_npz("models/SMPLH_NEUTRAL.pkl", &Device::Cpu).expect_err("pkl refused");
    assert!(matches!(err, SmplError::PickleModel { .. }));
    assert!(
        err.to_string()
            .contains("data-scripts/convert_body_model.py"),
        "{err}"
    );
}

#[test]
fn wrong_pose_shapes_are_typed_errors() -> anyhow::Result<()> {
    let fx = Fixture::load("smplh")?;
    let model = model()?;
    let mut params = fixture_params(&fx)?;
    params.body_pose = params.body_pose.narrow(1, 0, 20)?;
    let err = model.forward(&params).expect_err("20 body joints");
    assert!(matches!(err, SmplError::Params(_)), "{err}");
    // Zero frames: empty outputs, no panic.
    let p = fixture_params(&fx)?;
    let empty = BodyParams {
        betas: None,
        global_orient: p.global_orient.narrow(0, 0, 0)?,
        body_pose: p.body_pose.narrow(0, 0, 0)?,
        left_hand_pose: p.left_hand_pose.narrow(0, 0, 0)?,
        right_hand_pose: p.right_hand_pose.narrow(0, 0, 0)?,
        transl: p.transl.narrow(0, 0, 0)?,
    };
    let out = model.forward_with(
        &empty,
        &ForwardOptions {
            extra_vertex_joints: true,
        },
    )?;
    assert_eq!(
        (out.vertices.dims(), out.joints.dims()),
        (&[0, 6890, 3][..], &[0, 73, 3][..])
    );
    let mut params = fixture_params(&fx)?;
    params.betas = Some(Tensor::new(&[0.0f32, f32::NAN], &Device::Cpu)?);
    let err = model.forward(&params).expect_err("NaN beta");
    assert!(err.to_string().contains("betas: non-finite"), "{err}");
    let mut params = fixture_params(&fx)?;
    params.transl = params.transl.narrow(0, 0, 5)?;
    let err = model
        .forward(&params)
        .expect_err("5 translations for 60 frames");
    assert!(
        matches!(&err, SmplError::Shape { what, .. } if what == "transl"),
        "{err}"
    );
    Ok(())
}

/// A 24-joint SMPL model derived from the fixture's SMPL-H one: joints 0..21, then
/// `left_hand` = SMPL-H joint 22 and `right_hand` = joint 37 (regressor rows), with the finger
/// skinning weights summed into those two columns; no pose / shape blend shapes.
fn smpl24_from_fixture(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let h = model()?;
    let dev = Device::Cpu;
    let rows = Tensor::new(
        &[
            0u32, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 37,
        ],
        &dev,
    )?;
    let jreg = h.j_regressor().index_select(&rows, 0)?;
    let w = h.weights();
    let weights = Tensor::cat(
        &[
            &w.narrow(1, 0, 22)?,
            &w.narrow(1, 22, 15)?.sum_keepdim(1)?,
            &w.narrow(1, 37, 15)?.sum_keepdim(1)?,
        ],
        1,
    )?;
    let mut kt: Vec<i64> = smpl::skeleton::SMPL_PARENTS
        .iter()
        .map(|&p| p as i64)
        .collect();
    kt.extend(0..24i64);
    let tensors = [
        ("v_template", h.v_template().clone()),
        ("f", h.faces().to_dtype(DType::I64)?),
        ("J_regressor", jreg),
        ("weights", weights),
        ("kintree_table", Tensor::from_vec(kt, (2, 24), &dev)?),
    ];
    let path = dir.join("smpl24.safetensors");
    candle::safetensors::save(&tensors.iter().cloned().collect(), &path)?;
    Ok(path)
}

#[test]
fn smpl_24_joint_model_poses_like_smplh_with_flat_hands() -> anyhow::Result<()> {
    // With identity finger rotations every SMPL-H finger transform equals its wrist transform
    // (A_f = [R_w, t_w - R_w J_w]), and so does SMPL's hand joint with an identity rotation:
    // summing the finger weights into SMPL's hand column gives the same skinned vertices.
    let dir = std::env::temp_dir().join(format!("smpl-24-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let smpl24 = BodyModel::from_npz(smpl24_from_fixture(&dir)?, &Device::Cpu)?;
    std::fs::remove_dir_all(&dir)?;
    assert_eq!(smpl24.skeleton(), Some(smpl::Skeleton::Smpl));
    // The SMPL-H reference without pose blend shapes (so both models have none).
    let smplh = load_once(&write_npz("nopd", |k, b| {
        (k != "posedirs").then(|| b.to_vec())
    })?)?;

    let fx = Fixture::load("smplh")?;
    let poses = fx.f32("input.poses")?.narrow(0, 0, 8)?;
    let t = 8;
    let eye = |n: usize| -> anyhow::Result<Tensor> {
        Ok(Tensor::eye(3, DType::F32, &Device::Cpu)?
            .broadcast_as((t, n, 3, 3))?
            .contiguous()?)
    };
    let transl = fx.f32("output.transl")?.narrow(0, 0, t)?;
    let mut p = BodyParams {
        betas: None,
        global_orient: poses.narrow(1, 0, 1)?.squeeze(1)?,
        body_pose: poses.narrow(1, 1, 21)?,
        left_hand_pose: eye(15)?,
        right_hand_pose: eye(15)?,
        transl,
    };
    let h = smplh.forward(&p)?;
    p.left_hand_pose = eye(1)?;
    p.right_hand_pose = eye(1)?;
    let s = smpl24.forward(&p)?;
    assert_eq!(s.joints.dims(), &[t, 24, 3]);
    assert_close(
        &s.vertices,
        &h.vertices,
        1e-5,
        0.0,
        "SMPL vs SMPL-H vertices",
    );
    assert_close(
        &s.joints.narrow(1, 0, 22)?,
        &h.joints.narrow(1, 0, 22)?,
        1e-5,
        0.0,
        "body joints",
    );
    // Hand poses of the wrong size for SMPL are refused.
    p.left_hand_pose = eye(15)?;
    assert!(matches!(smpl24.forward(&p), Err(SmplError::Params(_))));
    Ok(())
}
