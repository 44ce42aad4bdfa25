//! SMPL-RIFKE encode / decode against the `rifke` fixture, round trips, the SMPL-H mapping
//! against the `smplh` fixture, typed errors.

use candle::{DType, Device, IndexOp, Tensor};
use motion_repr::rifke::{self, EncodeOptions};
use motion_repr::{FeatureLayout, ReprError};
use test_fixtures::{Fixture, assert_close, fixture_path};

// rifke.json tolerance_suggestion: features atol 1e-5, inverse atol 1e-5.
const ATOL: f64 = 1e-5;

#[test]
fn layout_matches_the_reference_offsets() -> anyhow::Result<()> {
    let fx = Fixture::load("rifke")?;
    let l = FeatureLayout::SMPL_RIFKE;
    let entries = fx
        .json_at("/layout_205")?
        .as_array()
        .expect("layout list")
        .clone();
    let ours = l.named_ranges();
    assert_eq!(entries.len(), ours.len());
    for (e, (name, r)) in entries.iter().zip(ours) {
        assert_eq!(e["name"].as_str(), Some(name));
        assert_eq!(e["offset"].as_u64(), Some(r.start as u64), "{name}");
        assert_eq!(e["size"].as_u64(), Some(r.len() as u64), "{name}");
    }
    assert_eq!(l.dim(), 205);
    Ok(())
}

#[test]
fn encode_matches_the_reference_features() -> anyhow::Result<()> {
    let fx = Fixture::load("rifke")?;
    let f = rifke::encode(&fx.f32("input.joints")?, &fx.f32("input.poses")?)?;
    assert_close(&f, &fx.f32("output.features")?, ATOL, 0.0, "features");
    // The yaw path itself, frame by frame.
    let euler = fx.f32("aux.global_euler_zyx")?.to_vec2::<f32>()?;
    let yaw = fx.f32("aux.yaw_axis_angle_z")?.to_vec1::<f32>()?;
    for (e, y) in euler.iter().zip(&yaw) {
        assert!(
            (rifke::heading_yaw(e[0]) - y).abs() < 1e-6,
            "yaw {} vs {y}",
            e[0]
        );
    }
    Ok(())
}

#[test]
fn decode_matches_the_reference_inverse() -> anyhow::Result<()> {
    let fx = Fixture::load("rifke")?;
    let (j, r) = rifke::decode(&fx.f32("output.features")?)?;
    assert_close(
        &j,
        &fx.f32("output.inv_joints")?,
        ATOL,
        0.0,
        "inverse joints",
    );
    assert_close(&r, &fx.f32("output.inv_poses")?, ATOL, 0.0, "inverse poses");
    Ok(())
}

#[test]
fn decoding_the_standardisation_means_matches_the_reference() -> anyhow::Result<()> {
    let fx = Fixture::load("rifke")?;
    let st = Fixture::load("standardization")?;
    for name in ["tmr_rifke_mean", "rifke_mean"] {
        let mean = st.f32(name)?.unsqueeze(0)?;
        let (j, r) = rifke::decode(&mean)?;
        let key = format!("std_mean_frame.{name}");
        assert_close(&j, &fx.f32(&format!("{key}.joints"))?, ATOL, 0.0, &key);
        assert_close(&r, &fx.f32(&format!("{key}.poses"))?, ATOL, 0.0, &key);
    }
    Ok(())
}

/// Deterministic pseudo-random numbers in [-1, 1) (a 64-bit LCG).
fn lcg(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Random valid features: finite values with the 6D slots holding proper rotations.
fn random_features(seed: u64, t: usize) -> anyhow::Result<Tensor> {
    let l = FeatureLayout::SMPL_RIFKE;
    let mut x = lcg(seed, t * 205);
    let aa = lcg(seed + 1, t * 22 * 3);
    for f in 0..t {
        x[f * 205 + l.vel_angles.start] *= 0.3;
        for j in 0..22 {
            let a = &aa[(f * 22 + j) * 3..(f * 22 + j) * 3 + 3];
            // Root 6D must hold a yaw-free rotation Ry Rx (|pitch| < pi/2) to be canonical.
            let r = if j == 0 {
                smpl::rotation::mat3::mul(
                    &smpl::rotation::mat3::rot_y(a[0] * 1.4),
                    &smpl::rotation::mat3::rot_x(a[1] * 3.0),
                )
            } else {
                smpl::rotation::mat3::axis_angle_to_matrix(&[a[0] * 2.0, a[1] * 2.0, a[2] * 2.0])
            };
            x[f * 205 + l.pose_6d(j).start..f * 205 + l.pose_6d(j).end]
                .copy_from_slice(&smpl::rotation::mat3::to_6d(&r));
        }
    }
    Ok(Tensor::from_vec(x, (t, 205), &Device::Cpu)?)
}

#[test]
fn encode_of_decode_is_the_identity() -> anyhow::Result<()> {
    for seed in [1, 2, 3] {
        let f = random_features(seed, 40)?;
        let (j, r) = rifke::decode(&f)?;
        let back = rifke::encode(&j, &r)?;
        let l = FeatureLayout::SMPL_RIFKE;
        let va = l.vel_angles.start;
        // Everything but vel_angles: float32 re-rotation of values in [-1, 1) after cumulative
        // sums over 40 frames, a few 1e-6.
        for (a, b) in [(0, va), (va + 1, 205)] {
            let (x, y) = (back.narrow(1, a, b - a)?, f.narrow(1, a, b - a)?);
            assert_close(&x, &y, 1e-5, 0.0, "encode(decode(f)) without vel_angles");
        }
        // vel_angles is a difference of two yaws taken through the reference's quaternion path,
        // which loses up to 1e-5 rad each near 0 and +-pi (rifke.json observed
        // yaw_quaternion_path_vs_exact_float64_atan2_maxabs = 9.3e-6), plus the float32 drift
        // of the integrated heading (|angle| <= 12 rad, ulp 1e-6): 2 x 1e-5 + 5e-6.
        let (x, y) = (back.narrow(1, va, 1)?, f.narrow(1, va, 1)?);
        assert_close(&x, &y, 2.5e-5, 0.0, "encode(decode(f)) vel_angles");
    }
    Ok(())
}

#[test]
fn yaw_crossing_pi_jumps_by_default_and_unwraps_on_request() -> anyhow::Result<()> {
    // A pure yaw ramp from 3.0 to 3.3 rad: the heading crosses +pi between frames.
    let t = 4;
    let mut rots = Vec::new();
    for f in 0..t {
        let z = 3.0 + 0.1 * f as f32;
        rots.extend_from_slice(&smpl::rotation::mat3::rot_z(z));
        for _ in 1..22 {
            rots.extend_from_slice(&smpl::rotation::mat3::IDENTITY);
        }
    }
    let rots = Tensor::from_vec(rots, (t, 22, 3, 3), &Device::Cpu)?;
    let joints = Tensor::zeros((t, 24, 3), DType::F32, &Device::Cpu)?;
    let l = FeatureLayout::SMPL_RIFKE;
    let va = |f: &Tensor| -> anyhow::Result<Vec<f32>> {
        Ok(f.narrow(1, l.vel_angles.start, 1)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    };
    let raw = va(&rifke::encode(&joints, &rots)?)?;
    let unwrapped = va(&rifke::encode_with(
        &joints,
        &rots,
        &EncodeOptions { unwrap_yaw: true },
    )?)?;
    assert!(
        raw.iter()
            .skip(1)
            .any(|d| (d + std::f32::consts::TAU - 0.1).abs() < 1e-4),
        "{raw:?}"
    );
    for d in &unwrapped[1..] {
        assert!((d - 0.1).abs() < 1e-4, "{unwrapped:?}");
    }
    // Both decode to the same rotations.
    let (_, r1) = rifke::decode(&rifke::encode(&joints, &rots)?)?;
    let (_, r2) = rifke::decode(&rifke::encode_with(
        &joints,
        &rots,
        &EncodeOptions { unwrap_yaw: true },
    )?)?;
    assert_close(
        &r1,
        &r2,
        1e-5,
        0.0,
        "unwrapped decodes to the same rotations",
    );
    assert_close(&r1, &rots, 1e-5, 0.0, "yaw ramp round trip");
    Ok(())
}

#[test]
fn batched_forms_ignore_padding() -> anyhow::Result<()> {
    let fx = Fixture::load("rifke")?;
    let joints = fx.f32("input.joints")?;
    let poses = fx.f32("input.poses")?;
    // Batch of 2: the full walk, and its first 35 frames followed by 25 frames of garbage.
    let garbage_j = Tensor::full(1e3f32, (25, 24, 3), &Device::Cpu)?;
    let garbage_r = Tensor::full(7f32, (25, 22, 3, 3), &Device::Cpu)?;
    let j2 = Tensor::cat(&[&joints.narrow(0, 0, 35)?, &garbage_j], 0)?;
    let r2 = Tensor::cat(&[&poses.narrow(0, 0, 35)?, &garbage_r], 0)?;
    let jb = Tensor::stack(&[&joints, &j2], 0)?;
    let rb = Tensor::stack(&[&poses, &r2], 0)?;
    let mask: Vec<f32> = (0..120)
        .map(|i| if i < 60 || i < 95 { 1.0 } else { 0.0 })
        .collect();
    let mask = Tensor::from_vec(mask, (2, 60), &Device::Cpu)?;
    let fb = rifke::encode_batch(&jb, &rb, &mask, &EncodeOptions::default())?;
    let expected = fx.f32("output.features")?;
    assert_close(&fb.i(0)?, &expected, ATOL, 0.0, "batch item 0");
    assert_close(
        &fb.i(1)?.narrow(0, 0, 35)?,
        &expected.narrow(0, 0, 35)?,
        ATOL,
        0.0,
        "item 1",
    );
    assert_eq!(
        fb.i(1)?
            .narrow(0, 35, 25)?
            .abs()?
            .sum_all()?
            .to_scalar::<f32>()?,
        0.0
    );
    let (jd, rd) = rifke::decode_batch(&fb, &mask)?;
    assert_close(
        &jd.i(1)?.narrow(0, 0, 35)?,
        &fx.f32("output.inv_joints")?.narrow(0, 0, 35)?,
        ATOL,
        0.0,
        "decoded item 1",
    );
    assert_close(
        &rd.i(0)?,
        &fx.f32("output.inv_poses")?,
        ATOL,
        0.0,
        "decoded item 0",
    );
    Ok(())
}

#[test]
fn empty_motions_encode_and_decode_to_empty_tensors() -> anyhow::Result<()> {
    let f = Tensor::zeros((2, 0, 205), DType::F32, &Device::Cpu)?;
    let mask = Tensor::zeros((2, 0), DType::F32, &Device::Cpu)?;
    let (j, r) = rifke::decode_batch(&f, &mask)?;
    assert_eq!(
        (j.dims(), r.dims()),
        (&[2, 0, 24, 3][..], &[2, 0, 22, 3, 3][..])
    );
    let (j, _) = rifke::decode(&Tensor::zeros((0, 205), DType::F32, &Device::Cpu)?)?;
    assert_eq!(j.dims(), &[0, 24, 3]);
    Ok(())
}

#[test]
fn wrong_feature_width_and_nan_are_typed_errors() -> anyhow::Result<()> {
    let x = Tensor::zeros((3, 204), DType::F32, &Device::Cpu)?;
    let err = rifke::decode(&x).expect_err("204 features");
    assert!(
        matches!(
            err,
            ReprError::FeatureWidth {
                expected: 205,
                got: 204,
                ..
            }
        ),
        "{err}"
    );
    let mut v = random_features(9, 3)?.flatten_all()?.to_vec1::<f32>()?;
    v[205 + 17] = f32::NAN;
    let x = Tensor::from_vec(v, (3, 205), &Device::Cpu)?;
    let err = rifke::decode(&x).expect_err("NaN feature");
    assert!(matches!(err, ReprError::NonFinite { .. }), "{err}");
    assert!(err.to_string().contains("frame 1, feature 17"), "{err}");
    let err = rifke::encode(
        &Tensor::zeros((3, 22, 3), DType::F32, &Device::Cpu)?,
        &Tensor::zeros((3, 22, 3, 3), DType::F32, &Device::Cpu)?,
    )
    .expect_err("22 joints");
    assert!(matches!(err, ReprError::Shape { .. }), "{err}");
    Ok(())
}

#[test]
fn smplh_mesh_from_decoded_motion_matches_the_reference() -> anyhow::Result<()> {
    let fx = Fixture::load("smplh")?;
    let atol = fx.json_f64("/tolerance_suggestion/atol")?;
    let body = smpl::BodyModel::from_npz(fixture_path("smplh/SMPLH_NEUTRAL.npz")?, &Device::Cpu)?;
    let params = rifke::to_body_params(&fx.f32("input.joints")?, &fx.f32("input.poses")?, &body)?;
    assert_close(
        &params.transl,
        &fx.f32("output.transl")?,
        atol,
        0.0,
        "transl",
    );
    let left = params.left_hand_pose.i(7)?;
    assert_close(
        &left,
        &fx.f32("model.left_hand_pose_mats")?,
        1e-6,
        0.0,
        "left hand mean",
    );
    let out = body.forward_with(
        &params,
        &smpl::ForwardOptions {
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
    assert_close(&out.joints, &fx.f32("output.joints")?, atol, 0.0, "joints");
    // The reference chain end to end: features -> decode -> body (the smplh inputs are the
    // rifke inverse outputs).
    let rf = Fixture::load("rifke")?;
    let (j, r) = rifke::decode(&rf.f32("output.features")?)?;
    let out2 = body.forward(&rifke::to_body_params(&j, &r, &body)?)?;
    assert_close(
        &out2.vertices,
        &fx.f32("output.vertices")?,
        atol,
        0.0,
        "features -> mesh",
    );
    Ok(())
}
