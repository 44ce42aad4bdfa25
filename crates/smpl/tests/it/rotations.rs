//! Rotation maths against the `rifke` probes and round-trip properties.

use candle::{DType, Device, Tensor};
use smpl::rotation::{self, mat3};
use test_fixtures::{Fixture, assert_close};

#[test]
fn euler_and_6d_probes_match_the_reference() -> anyhow::Result<()> {
    let fx = Fixture::load("rifke")?;
    // rifke.json tolerance_suggestion.probe: "atol 1e-6".
    let atol = 1e-6;
    let euler = fx.f32("probe.euler_zyx")?;
    let r = rotation::euler_zyx_to_matrix(&euler)?;
    assert_close(&r, &fx.f32("probe.R")?, atol, 0.0, "Rz Ry Rx");
    let d6 = rotation::matrix_to_rot6d(&fx.f32("probe.R")?)?;
    assert_close(&d6, &fx.f32("probe.rot6d")?, atol, 0.0, "6D of R");
    let back = rotation::rot6d_to_matrix(&fx.f32("probe.rot6d")?)?;
    assert_close(
        &back,
        &fx.f32("probe.rot6d_to_matrix")?,
        atol,
        0.0,
        "6D -> R",
    );
    let e = rotation::matrix_to_euler_zyx(&fx.f32("probe.R")?)?;
    assert_close(&e, &euler, 1e-5, 0.0, "euler of R");
    Ok(())
}

#[test]
fn global_euler_of_the_walk_matches_the_reference() -> anyhow::Result<()> {
    let fx = Fixture::load("rifke")?;
    let root = fx.f32("input.poses")?.narrow(1, 0, 1)?.squeeze(1)?;
    let e = rotation::matrix_to_euler_zyx(&root)?;
    assert_close(
        &e,
        &fx.f32("aux.global_euler_zyx")?,
        1e-6,
        0.0,
        "global euler",
    );
    Ok(())
}

#[test]
fn hand_mean_axis_angle_matches_the_reference_matrices() -> anyhow::Result<()> {
    let fx = Fixture::load("smplh")?;
    let model = smpl::BodyModel::from_npz(
        test_fixtures::fixture_path("smplh/SMPLH_NEUTRAL.npz")?,
        &Device::Cpu,
    )?;
    let (l, r) = model
        .hands_mean()
        .expect("the fixture model has hand means");
    let left = rotation::axis_angle_to_matrix(&l.reshape((15, 3))?)?;
    let right = rotation::axis_angle_to_matrix(&r.reshape((15, 3))?)?;
    assert_close(
        &left,
        &fx.f32("model.left_hand_pose_mats")?,
        1e-6,
        0.0,
        "left hand",
    );
    assert_close(
        &right,
        &fx.f32("model.right_hand_pose_mats")?,
        1e-6,
        0.0,
        "right hand",
    );
    Ok(())
}

/// Deterministic pseudo-random numbers in [-1, 1) (a 64-bit LCG), enough for round trips.
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

#[test]
fn six_d_round_trip_recovers_random_rotations() -> anyhow::Result<()> {
    // Random axis-angles with |angle| < pi * sqrt(3) -> matrices -> 6D -> matrices.
    let aa = Tensor::from_vec(lcg(7, 4 * 50 * 3), (4, 50, 3), &Device::Cpu)?
        .affine(std::f64::consts::PI, 0.0)?;
    let r = rotation::axis_angle_to_matrix(&aa)?;
    let back = rotation::rot6d_to_matrix(&rotation::matrix_to_rot6d(&r)?)?;
    assert_eq!(back.dims(), &[4, 50, 3, 3]);
    assert_close(&back, &r, 2e-6, 0.0, "6D round trip");
    // And a non-orthogonal 6D input becomes a rotation: R R^T = I.
    let d6 = Tensor::from_vec(lcg(8, 30 * 6), (30, 6), &Device::Cpu)?;
    let r = rotation::rot6d_to_matrix(&d6)?;
    let rrt = r.matmul(&r.transpose(1, 2)?)?;
    let eye = Tensor::eye(3, DType::F32, &Device::Cpu)?.broadcast_as((30, 3, 3))?;
    assert_close(&rrt, &eye, 2e-6, 0.0, "Gram-Schmidt output is orthonormal");
    Ok(())
}

#[test]
fn euler_round_trip_away_from_gimbal_lock() -> anyhow::Result<()> {
    // z, x in (-pi, pi), y in (-pi/2, pi/2) scaled to 0.95 to stay off the singularity.
    let raw = lcg(11, 200 * 3);
    let e: Vec<f32> = raw
        .chunks(3)
        .flat_map(|c| {
            [
                c[0] * std::f32::consts::PI * 0.99,
                c[1] * std::f32::consts::FRAC_PI_2 * 0.95,
                c[2] * std::f32::consts::PI * 0.99,
            ]
        })
        .collect();
    let e = Tensor::from_vec(e, (200, 3), &Device::Cpu)?;
    let back = rotation::matrix_to_euler_zyx(&rotation::euler_zyx_to_matrix(&e)?)?;
    assert_close(&back, &e, 2e-5, 0.0, "euler round trip");
    Ok(())
}

#[test]
fn axis_angle_and_quaternion_round_trips() -> anyhow::Result<()> {
    // Angles up to 1.5 sqrt(3) = 2.6 rad (< pi, so the axis-angle is unique).
    let aa = Tensor::from_vec(lcg(3, 100 * 3), (100, 3), &Device::Cpu)?.affine(1.5, 0.0)?;
    let back = rotation::matrix_to_axis_angle(&rotation::axis_angle_to_matrix(&aa)?)?;
    assert_close(&back, &aa, 1e-5, 0.0, "axis-angle round trip");
    let q = rotation::axis_angle_to_quaternion(&aa)?;
    let m1 = rotation::quaternion_to_matrix(&q)?;
    let q2 = rotation::matrix_to_quaternion(&m1)?;
    assert_close(&q2, &q, 2e-6, 0.0, "matrix -> quaternion (w >= 0 here)");
    let q_back = rotation::axis_angle_to_quaternion(&rotation::quaternion_to_axis_angle(&q)?)?;
    assert_close(&q_back, &q, 1e-6, 0.0, "quaternion <-> axis-angle");
    assert_eq!(mat3::IDENTITY, mat3::axis_angle_to_matrix(&[0.0, 0.0, 0.0]));
    Ok(())
}

#[test]
fn half_turns_convert_exactly() {
    // Hand-derived: a half turn about x is diag(1, -1, -1), quaternion (0, 1, 0, 0),
    // axis-angle (pi, 0, 0); the old copysign formula loses the axis sign information here.
    let r = [1.0f32, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0];
    assert_eq!(mat3::matrix_to_quaternion(&r), [0.0, 1.0, 0.0, 0.0]);
    let aa = mat3::matrix_to_axis_angle(&r);
    assert!((aa[0] - std::f32::consts::PI).abs() < 1e-6 && aa[1] == 0.0 && aa[2] == 0.0);
    // Half turn about (1, 1, 0)/sqrt(2): the matrix 2 n n^T - I maps back to +-n pi.
    let n = std::f32::consts::FRAC_1_SQRT_2;
    let r = mat3::axis_angle_to_matrix(&[n * std::f32::consts::PI, n * std::f32::consts::PI, 0.0]);
    let aa = mat3::matrix_to_axis_angle(&r);
    let back = mat3::axis_angle_to_matrix(&aa);
    for (x, y) in back.iter().zip(&r) {
        assert!((x - y).abs() < 1e-6, "{back:?} vs {r:?}");
    }
}
