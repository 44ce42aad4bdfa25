//! Rotation maths on candle tensors, batched over any leading dimensions.
//!
//! Conventions (those of the reference fixtures `rifke.json` / `smplh.json`):
//! - matrices act on column vectors (`p' = R p`) and are stored row-major in the last two dims;
//! - axis-angle `[..., 3]`: axis times angle in radians;
//! - quaternions `[..., 4]` are `(w, x, y, z)`, scalar first;
//! - 6D (Zhou et al., "On the Continuity of Rotation Representations in Neural Networks",
//!   CVPR 2019) is the first two ROWS of the matrix, `[R00, R01, R02, R10, R11, R12]`; back to a
//!   matrix by Gram-Schmidt with the results stacked as rows;
//! - Euler `'ZYX'` `[..., 3] = (a0, a1, a2)` means `R = Rz(a0) Ry(a1) Rx(a2)`, extracted as
//!   `a0 = atan2(R10, R00)`, `a1 = asin(-R20)`, `a2 = atan2(R21, R22)`.
//!
//! The axis-angle / quaternion paths follow the formulas of PyTorch3D's `transforms` module
//! (Ravi et al., "Accelerating 3D Deep Learning with PyTorch3D", 2020) in float32 and in the
//! same operation order, because the reference pipeline uses them.
//!
//! The tensor functions compute in float32 on the host (these are small, element-wise
//! transforms; the heavy body-model maths stays on the tensor's device) and return a tensor of
//! the input's dtype on the input's device. The [`mat3`] module exposes the same maths on plain
//! `[f32; 9]` matrices for per-frame host code.

use candle::{DType, Tensor};

use crate::error::{Result, shape_err};

/// Scalar rotation maths on row-major `[f32; 9]` matrices, float32, the reference's op order.
pub mod mat3 {
    /// The 3x3 identity, row-major.
    pub const IDENTITY: [f32; 9] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];

    /// `a @ b` (sums evaluated `k = 0, 1, 2` left to right).
    pub fn mul(a: &[f32; 9], b: &[f32; 9]) -> [f32; 9] {
        let mut out = [0.0f32; 9];
        for i in 0..3 {
            for j in 0..3 {
                out[3 * i + j] =
                    a[3 * i] * b[j] + a[3 * i + 1] * b[3 + j] + a[3 * i + 2] * b[6 + j];
            }
        }
        out
    }

    /// The transpose (= inverse for a rotation).
    pub fn transpose(a: &[f32; 9]) -> [f32; 9] {
        [a[0], a[3], a[6], a[1], a[4], a[7], a[2], a[5], a[8]]
    }

    /// `R v` for a column vector `v`.
    pub fn apply(r: &[f32; 9], v: &[f32; 3]) -> [f32; 3] {
        [
            r[0] * v[0] + r[1] * v[1] + r[2] * v[2],
            r[3] * v[0] + r[4] * v[1] + r[5] * v[2],
            r[6] * v[0] + r[7] * v[1] + r[8] * v[2],
        ]
    }

    /// Elementary rotation about x: `[[1,0,0],[0,c,-s],[0,s,c]]`.
    pub fn rot_x(a: f32) -> [f32; 9] {
        let (s, c) = a.sin_cos();
        [1.0, 0.0, 0.0, 0.0, c, -s, 0.0, s, c]
    }

    /// Elementary rotation about y: `[[c,0,s],[0,1,0],[-s,0,c]]`.
    pub fn rot_y(a: f32) -> [f32; 9] {
        let (s, c) = a.sin_cos();
        [c, 0.0, s, 0.0, 1.0, 0.0, -s, 0.0, c]
    }

    /// Elementary rotation about z: `[[c,-s,0],[s,c,0],[0,0,1]]`.
    pub fn rot_z(a: f32) -> [f32; 9] {
        let (s, c) = a.sin_cos();
        [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0]
    }

    /// `Rz(e[0]) @ Ry(e[1]) @ Rx(e[2])`, products left to right.
    pub fn from_euler_zyx(e: &[f32; 3]) -> [f32; 9] {
        mul(&mul(&rot_z(e[0]), &rot_y(e[1])), &rot_x(e[2]))
    }

    /// Euler `'ZYX'` angles `(z, y, x)`: `atan2(R10, R00)`, `asin(-R20)`, `atan2(R21, R22)`.
    ///
    /// The `asin` argument is clamped to `[-1, 1]` so rounding never yields NaN.
    pub fn to_euler_zyx(r: &[f32; 9]) -> [f32; 3] {
        [
            r[3].atan2(r[0]),
            (-r[6]).clamp(-1.0, 1.0).asin(),
            r[7].atan2(r[8]),
        ]
    }

    /// The first two rows, row-major.
    pub fn to_6d(r: &[f32; 9]) -> [f32; 6] {
        [r[0], r[1], r[2], r[3], r[4], r[5]]
    }

    fn normalize(v: [f32; 3]) -> [f32; 3] {
        let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt().max(1e-12);
        [v[0] / n, v[1] / n, v[2] / n]
    }

    /// Gram-Schmidt: `b1 = a1/|a1|`, `b2 = normalize(a2 - (b1.a2) b1)`, `b3 = b1 x b2`; rows.
    pub fn from_6d(d: &[f32; 6]) -> [f32; 9] {
        let b1 = normalize([d[0], d[1], d[2]]);
        let a2 = [d[3], d[4], d[5]];
        let dot = b1[0] * a2[0] + b1[1] * a2[1] + b1[2] * a2[2];
        let b2 = normalize([
            a2[0] - dot * b1[0],
            a2[1] - dot * b1[1],
            a2[2] - dot * b1[2],
        ]);
        let b3 = [
            b1[1] * b2[2] - b1[2] * b2[1],
            b1[2] * b2[0] - b1[0] * b2[2],
            b1[0] * b2[1] - b1[1] * b2[0],
        ];
        [
            b1[0], b1[1], b1[2], b2[0], b2[1], b2[2], b3[0], b3[1], b3[2],
        ]
    }

    /// `sin(angle/2) / angle`, with the Taylor form `0.5 - angle^2/48` below `1e-6`.
    fn sin_half_over_angle(angle: f32) -> f32 {
        if angle.abs() < 1e-6 {
            0.5 - angle * angle / 48.0
        } else {
            (angle * 0.5).sin() / angle
        }
    }

    /// Axis-angle -> quaternion `(w, x, y, z)`.
    pub fn axis_angle_to_quaternion(aa: &[f32; 3]) -> [f32; 4] {
        let angle = (aa[0] * aa[0] + aa[1] * aa[1] + aa[2] * aa[2]).sqrt();
        let k = sin_half_over_angle(angle);
        [(angle * 0.5).cos(), aa[0] * k, aa[1] * k, aa[2] * k]
    }

    /// Quaternion `(w, x, y, z)` (not necessarily unit) -> matrix with `two_s = 2/|q|^2`.
    pub fn quaternion_to_matrix(q: &[f32; 4]) -> [f32; 9] {
        let [r, i, j, k] = *q;
        let two_s = 2.0 / (r * r + i * i + j * j + k * k);
        [
            1.0 - two_s * (j * j + k * k),
            two_s * (i * j - k * r),
            two_s * (i * k + j * r),
            two_s * (i * j + k * r),
            1.0 - two_s * (i * i + k * k),
            two_s * (j * k - i * r),
            two_s * (i * k - j * r),
            two_s * (j * k + i * r),
            1.0 - two_s * (i * i + j * j),
        ]
    }

    /// Axis-angle -> matrix through the quaternion (the reference's path).
    pub fn axis_angle_to_matrix(aa: &[f32; 3]) -> [f32; 9] {
        quaternion_to_matrix(&axis_angle_to_quaternion(aa))
    }

    /// Matrix -> unit quaternion `(w, x, y, z)` with `w >= 0`, by the best-conditioned of the
    /// four candidates (Shepperd's method, as PyTorch3D's `matrix_to_quaternion`): with
    /// `q_i = sqrt(max(0, 1 ± m00 ± m11 ± m22))`, the candidate of the largest `q_i` is built
    /// from `q_i^2` and the off-diagonal sums / differences, divided by `2 max(q_i, 0.1)`.
    /// Accurate for every rotation, 180-degree turns included.
    pub fn matrix_to_quaternion(m: &[f32; 9]) -> [f32; 4] {
        let (m00, m01, m02) = (m[0], m[1], m[2]);
        let (m10, m11, m12) = (m[3], m[4], m[5]);
        let (m20, m21, m22) = (m[6], m[7], m[8]);
        let q_abs = [
            (((1.0 + m00) + m11) + m22).max(0.0).sqrt(),
            (((1.0 + m00) - m11) - m22).max(0.0).sqrt(),
            (((1.0 - m00) + m11) - m22).max(0.0).sqrt(),
            (((1.0 - m00) - m11) + m22).max(0.0).sqrt(),
        ];
        let mut best = 0;
        for i in 1..4 {
            if q_abs[i] > q_abs[best] {
                best = i;
            }
        }
        let qa = q_abs[best];
        let c = match best {
            0 => [qa * qa, m21 - m12, m02 - m20, m10 - m01],
            1 => [m21 - m12, qa * qa, m10 + m01, m02 + m20],
            2 => [m02 - m20, m10 + m01, qa * qa, m12 + m21],
            _ => [m10 - m01, m20 + m02, m21 + m12, qa * qa],
        };
        let d = 2.0 * qa.max(0.1);
        let q = [c[0] / d, c[1] / d, c[2] / d, c[3] / d];
        if q[0] < 0.0 {
            [-q[0], -q[1], -q[2], -q[3]]
        } else {
            q
        }
    }

    /// Quaternion `(w, x, y, z)` -> axis-angle: `half = atan2(|xyz|, w)`,
    /// `aa = xyz / (sin(half) / (2 half))`.
    pub fn quaternion_to_axis_angle(q: &[f32; 4]) -> [f32; 3] {
        let n = (q[1] * q[1] + q[2] * q[2] + q[3] * q[3]).sqrt();
        let half = n.atan2(q[0]);
        let angle = 2.0 * half;
        let k = sin_half_over_angle(angle);
        [q[1] / k, q[2] / k, q[3] / k]
    }

    /// Matrix -> axis-angle through the quaternion (angle in `[0, π]`).
    pub fn matrix_to_axis_angle(m: &[f32; 9]) -> [f32; 3] {
        quaternion_to_axis_angle(&matrix_to_quaternion(m))
    }

    /// Hamilton product `a * b` of quaternions `(w, x, y, z)`.
    pub fn quaternion_multiply(a: &[f32; 4], b: &[f32; 4]) -> [f32; 4] {
        let [aw, ax, ay, az] = *a;
        let [bw, bx, by, bz] = *b;
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    }
}

/// Applies `f` to every `[IN]`-sized group of the last dims of `x`, producing `[OUT]`.
fn map_last<const IN: usize, const OUT: usize>(
    x: &Tensor,
    in_dims: &[usize],
    out_dims: &[usize],
    what: &str,
    f: impl Fn(&[f32; IN]) -> [f32; OUT],
) -> Result<Tensor> {
    let dims = x.dims();
    let k = in_dims.len();
    if dims.len() < k || dims[dims.len() - k..] != *in_dims {
        return Err(shape_err(what, &format!("[..., {in_dims:?}]"), dims));
    }
    let lead = &dims[..dims.len() - k];
    let data = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut out = Vec::with_capacity(data.len() / IN * OUT);
    for chunk in data.chunks_exact(IN) {
        let mut a = [0.0f32; IN];
        a.copy_from_slice(chunk);
        out.extend_from_slice(&f(&a));
    }
    let mut shape = lead.to_vec();
    shape.extend_from_slice(out_dims);
    let t = Tensor::from_vec(out, shape, x.device())?;
    let dtype = if x.dtype().is_float() {
        x.dtype()
    } else {
        DType::F32
    };
    Ok(t.to_dtype(dtype)?)
}

/// Axis-angle `[..., 3]` -> rotation matrices `[..., 3, 3]` (through the quaternion).
pub fn axis_angle_to_matrix(aa: &Tensor) -> Result<Tensor> {
    map_last::<3, 9>(aa, &[3], &[3, 3], "axis_angle", mat3::axis_angle_to_matrix)
}

/// Rotation matrices `[..., 3, 3]` -> axis-angle `[..., 3]` (through the quaternion).
pub fn matrix_to_axis_angle(m: &Tensor) -> Result<Tensor> {
    map_last::<9, 3>(
        m,
        &[3, 3],
        &[3],
        "rotation matrix",
        mat3::matrix_to_axis_angle,
    )
}

/// Axis-angle `[..., 3]` -> quaternions `[..., 4]` `(w, x, y, z)`.
pub fn axis_angle_to_quaternion(aa: &Tensor) -> Result<Tensor> {
    map_last::<3, 4>(aa, &[3], &[4], "axis_angle", mat3::axis_angle_to_quaternion)
}

/// Quaternions `[..., 4]` `(w, x, y, z)` -> axis-angle `[..., 3]`.
pub fn quaternion_to_axis_angle(q: &Tensor) -> Result<Tensor> {
    map_last::<4, 3>(q, &[4], &[3], "quaternion", mat3::quaternion_to_axis_angle)
}

/// Quaternions `[..., 4]` `(w, x, y, z)` -> rotation matrices `[..., 3, 3]`.
pub fn quaternion_to_matrix(q: &Tensor) -> Result<Tensor> {
    map_last::<4, 9>(q, &[4], &[3, 3], "quaternion", mat3::quaternion_to_matrix)
}

/// Rotation matrices `[..., 3, 3]` -> quaternions `[..., 4]` `(w, x, y, z)`.
pub fn matrix_to_quaternion(m: &Tensor) -> Result<Tensor> {
    map_last::<9, 4>(
        m,
        &[3, 3],
        &[4],
        "rotation matrix",
        mat3::matrix_to_quaternion,
    )
}

/// Rotation matrices `[..., 3, 3]` -> 6D `[..., 6]` (first two rows).
pub fn matrix_to_rot6d(m: &Tensor) -> Result<Tensor> {
    map_last::<9, 6>(m, &[3, 3], &[6], "rotation matrix", mat3::to_6d)
}

/// 6D `[..., 6]` -> rotation matrices `[..., 3, 3]` (Gram-Schmidt, rows).
pub fn rot6d_to_matrix(d: &Tensor) -> Result<Tensor> {
    map_last::<6, 9>(d, &[6], &[3, 3], "rot6d", mat3::from_6d)
}

/// Euler `'ZYX'` angles `[..., 3]` -> rotation matrices `[..., 3, 3]`.
pub fn euler_zyx_to_matrix(e: &Tensor) -> Result<Tensor> {
    map_last::<3, 9>(e, &[3], &[3, 3], "euler_zyx", mat3::from_euler_zyx)
}

/// Rotation matrices `[..., 3, 3]` -> Euler `'ZYX'` angles `[..., 3]`.
pub fn matrix_to_euler_zyx(m: &Tensor) -> Result<Tensor> {
    map_last::<9, 3>(m, &[3, 3], &[3], "rotation matrix", mat3::to_euler_zyx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::Device;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.flatten_all())
            .and_then(|d| d.max(0))
            .and_then(|d| d.to_scalar::<f32>())
            .unwrap_or(f32::NAN)
    }

    #[test]
    fn quarter_turn_about_z_maps_x_to_y() -> Result<()> {
        // Hand-derived: Rz(pi/2) e_x = e_y.
        let r = mat3::rot_z(std::f32::consts::FRAC_PI_2);
        let v = mat3::apply(&r, &[1.0, 0.0, 0.0]);
        assert!(v[0].abs() < 1e-7 && (v[1] - 1.0).abs() < 1e-7 && v[2].abs() < 1e-7);
        let aa = Tensor::new(&[0.0f32, 0.0, std::f32::consts::FRAC_PI_2], &Device::Cpu)?;
        let m = axis_angle_to_matrix(&aa)?;
        let expected = Tensor::new(&r, &Device::Cpu)?.reshape((3, 3))?;
        assert!(max_abs_diff(&m, &expected) < 1e-6);
        Ok(())
    }

    #[test]
    fn leading_dims_are_kept_and_bad_shapes_rejected() -> Result<()> {
        let aa = Tensor::zeros((2, 5, 3), DType::F32, &Device::Cpu)?;
        assert_eq!(axis_angle_to_matrix(&aa)?.dims(), &[2, 5, 3, 3]);
        let bad = Tensor::zeros((2, 4), DType::F32, &Device::Cpu)?;
        let err = axis_angle_to_matrix(&bad).expect_err("last dim 4 is not axis-angle");
        assert!(err.to_string().contains("[2, 4]"), "{err}");
        Ok(())
    }

    #[test]
    fn quaternion_product_composes_rotations() {
        let a = [0.3f32, -0.2, 0.5];
        let b = [-0.1f32, 0.7, 0.2];
        let qa = mat3::axis_angle_to_quaternion(&a);
        let qb = mat3::axis_angle_to_quaternion(&b);
        let via_q = mat3::quaternion_to_matrix(&mat3::quaternion_multiply(&qa, &qb));
        let via_m = mat3::mul(
            &mat3::axis_angle_to_matrix(&a),
            &mat3::axis_angle_to_matrix(&b),
        );
        for (x, y) in via_q.iter().zip(&via_m) {
            assert!((x - y).abs() < 1e-6, "{via_q:?} vs {via_m:?}");
        }
    }
}
