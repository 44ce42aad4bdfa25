//! Small float64 rotation helpers for the exporters (row-major 3x3 matrices acting on column
//! vectors, as in `smpl::rotation`).

/// A row-major 3x3 matrix.
pub(crate) type M3 = [f64; 9];

/// The fixed rotation from the Z-up motion world (SMPL-RIFKE) to the Y-up convention of BVH and
/// glTF: `(x, y, z) -> (x, z, -y)`, i.e. -90 degrees about X. It is the axis change Blender's
/// glTF and BVH importers undo (Blender is Z up), so an import lands in the original world.
pub(crate) const Z_UP_TO_Y_UP: M3 = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0];

/// `a @ b`.
pub(crate) fn mul(a: &M3, b: &M3) -> M3 {
    let mut out = [0.0; 9];
    for i in 0..3 {
        for j in 0..3 {
            out[3 * i + j] = a[3 * i] * b[j] + a[3 * i + 1] * b[3 + j] + a[3 * i + 2] * b[6 + j];
        }
    }
    out
}

/// `r v`.
pub(crate) fn apply(r: &M3, v: &[f64; 3]) -> [f64; 3] {
    [
        r[0] * v[0] + r[1] * v[1] + r[2] * v[2],
        r[3] * v[0] + r[4] * v[1] + r[5] * v[2],
        r[6] * v[0] + r[7] * v[1] + r[8] * v[2],
    ]
}

/// Determinant.
pub(crate) fn det(m: &M3) -> f64 {
    m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6])
        + m[2] * (m[3] * m[7] - m[4] * m[6])
}

/// Largest entry of `|m m^T - I|`.
pub(crate) fn orthonormality_error(m: &M3) -> f64 {
    let mut err = 0.0f64;
    for i in 0..3 {
        for j in 0..3 {
            let d = m[3 * i] * m[3 * j] + m[3 * i + 1] * m[3 * j + 1] + m[3 * i + 2] * m[3 * j + 2];
            let e = if i == j { d - 1.0 } else { d };
            err = err.max(e.abs());
        }
    }
    err
}

/// Unit quaternion `(x, y, z, w)` (glTF order) of a rotation matrix, by Shepperd's method (the
/// best-conditioned of the four candidate formulas), `w >= 0`.
pub(crate) fn quat_xyzw(m: &M3) -> [f64; 4] {
    let (m00, m01, m02) = (m[0], m[1], m[2]);
    let (m10, m11, m12) = (m[3], m[4], m[5]);
    let (m20, m21, m22) = (m[6], m[7], m[8]);
    let tr = m00 + m11 + m22;
    // (w, x, y, z)
    let q = if tr >= m00 && tr >= m11 && tr >= m22 {
        let s = (1.0 + tr).max(0.0).sqrt() * 2.0;
        [0.25 * s, (m21 - m12) / s, (m02 - m20) / s, (m10 - m01) / s]
    } else if m00 >= m11 && m00 >= m22 {
        let s = (1.0 + m00 - m11 - m22).max(0.0).sqrt() * 2.0;
        [(m21 - m12) / s, 0.25 * s, (m01 + m10) / s, (m02 + m20) / s]
    } else if m11 >= m22 {
        let s = (1.0 + m11 - m00 - m22).max(0.0).sqrt() * 2.0;
        [(m02 - m20) / s, (m01 + m10) / s, 0.25 * s, (m12 + m21) / s]
    } else {
        let s = (1.0 + m22 - m00 - m11).max(0.0).sqrt() * 2.0;
        [(m10 - m01) / s, (m02 + m20) / s, (m12 + m21) / s, 0.25 * s]
    };
    let n = q.iter().map(|x| x * x).sum::<f64>().sqrt();
    let sign = if q[0] < 0.0 { -1.0 } else { 1.0 } / n;
    [sign * q[1], sign * q[2], sign * q[3], sign * q[0]]
}

/// Euler angles `(z, x, y)` in radians with `m = Rz(z) Rx(x) Ry(y)` (BVH channel order
/// `Zrotation Xrotation Yrotation`), `x` in `[-pi/2, pi/2]`. At gimbal lock (`|x| = pi/2`)
/// `y = 0` and `z` takes the whole remaining rotation.
pub(crate) fn euler_zxy(m: &M3) -> [f64; 3] {
    // m = [[cz cy - sz sx sy, -sz cx, cz sy + sz sx cy],
    //      [sz cy + cz sx sy,  cz cx, sz sy - cz sx cy],
    //      [-cx sy,            sx,    cx cy          ]]
    let cx = m[1].hypot(m[4]);
    let x = m[7].atan2(cx);
    if cx > 1e-9 {
        [(-m[1]).atan2(m[4]), x, (-m[6]).atan2(m[8])]
    } else {
        [m[3].atan2(m[0]), x, 0.0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rx(a: f64) -> M3 {
        let (s, c) = a.sin_cos();
        [1.0, 0.0, 0.0, 0.0, c, -s, 0.0, s, c]
    }
    fn ry(a: f64) -> M3 {
        let (s, c) = a.sin_cos();
        [c, 0.0, s, 0.0, 1.0, 0.0, -s, 0.0, c]
    }
    fn rz(a: f64) -> M3 {
        let (s, c) = a.sin_cos();
        [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0]
    }
    fn max_diff(a: &M3, b: &M3) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }
    fn quat_to_matrix(q: &[f64; 4]) -> M3 {
        let [x, y, z, w] = *q;
        [
            1.0 - 2.0 * (y * y + z * z),
            2.0 * (x * y - z * w),
            2.0 * (x * z + y * w),
            2.0 * (x * y + z * w),
            1.0 - 2.0 * (x * x + z * z),
            2.0 * (y * z - x * w),
            2.0 * (x * z - y * w),
            2.0 * (y * z + x * w),
            1.0 - 2.0 * (x * x + y * y),
        ]
    }

    #[test]
    fn euler_zxy_and_quaternion_recompose_the_matrix_including_gimbal_lock_and_half_turns() {
        let angles = [
            [0.3, -0.4, 2.9],
            [-3.0, 1.2, -0.1],
            [0.7, std::f64::consts::FRAC_PI_2, 0.4],
            [0.7, -std::f64::consts::FRAC_PI_2, -1.4],
            [std::f64::consts::PI, 0.0, 0.0],
            [0.0, 0.0, std::f64::consts::PI],
        ];
        for a in angles {
            let m = mul(&mul(&rz(a[0]), &rx(a[1])), &ry(a[2]));
            let e = euler_zxy(&m);
            let back = mul(&mul(&rz(e[0]), &rx(e[1])), &ry(e[2]));
            assert!(max_diff(&m, &back) < 1e-12, "{a:?} -> {e:?}");
            let q = quat_xyzw(&m);
            assert!(q[3] >= 0.0);
            assert!(max_diff(&m, &quat_to_matrix(&q)) < 1e-12, "{a:?} -> {q:?}");
        }
    }

    #[test]
    fn z_up_to_y_up_maps_up_to_up_and_is_a_rotation() {
        assert_eq!(apply(&Z_UP_TO_Y_UP, &[0.0, 0.0, 1.0]), [0.0, 1.0, 0.0]);
        assert_eq!(apply(&Z_UP_TO_Y_UP, &[0.0, 1.0, 0.0]), [0.0, 0.0, -1.0]);
        assert_eq!(det(&Z_UP_TO_Y_UP), 1.0);
        assert_eq!(orthonormality_error(&Z_UP_TO_Y_UP), 0.0);
        assert!(max_diff(&Z_UP_TO_Y_UP, &rx(-std::f64::consts::FRAC_PI_2)) < 1e-15);
    }
}
