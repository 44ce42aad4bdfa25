//! A fused AdamW update for CPU `f32` parameters: one pass computes the new moments, a second
//! updates the parameter in place, instead of a dozen element-wise tensor ops each allocating a
//! parameter-sized result.
//!
//! The arithmetic is PyTorch's `_single_tensor_adam` order with every scalar rounded to `f32`
//! first, exactly as the tensor-op form computes it (each `x * c` and `x * c + a` is one
//! rounding; no fused multiply-add), so both give bit-identical results:
//! `p *= 1 - lr wd; m += (g - m)(1 - b1); v = v b2 + ((1 - b2) g) g;
//! p += (-step_size m) / (sqrt(v) / bias2_sqrt + eps)`.

use candle::{CpuStorage, CustomOp3, DType, InplaceOp3, Layout, Result, Shape, Tensor};

use crate::ops::contiguous_f32;

/// The scalars of one AdamW step, already in the `f64` form the tensor ops take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    /// `1 - lr * weight_decay`.
    pub decay: f64,
    /// `1 - beta1`.
    pub one_minus_beta1: f64,
    /// `beta2`.
    pub beta2: f64,
    /// `1 - beta2`.
    pub one_minus_beta2: f64,
    /// `sqrt(1 - beta2^t)`.
    pub bias2_sqrt: f64,
    /// `eps`.
    pub eps: f64,
    /// `-lr / (1 - beta1^t)`.
    pub neg_step_size: f64,
}

/// `(g, m, v) -> [m', v']` (flat, `2 n` values).
struct Moments(AdamWStep);

impl CustomOp3 for Moments {
    fn name(&self) -> &'static str {
        "kernels-adamw-moments"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(s1, l1, "adamw gradient")?;
        let m = contiguous_f32(s2, l2, "adamw first moment")?;
        let v = contiguous_f32(s3, l3, "adamw second moment")?;
        let n = g.len();
        if m.len() != n || v.len() != n {
            candle::bail!("adamw: gradient and moments differ in size")
        }
        let c = self.0;
        let (b1c, b2, b2c) = (
            c.one_minus_beta1 as f32,
            c.beta2 as f32,
            c.one_minus_beta2 as f32,
        );
        let mut out = vec![0f32; 2 * n];
        let (mo, vo) = out.split_at_mut(n);
        crate::ops::par_rows(
            mo,
            1,
            #[inline(always)]
            |i0, mo| {
                let k = mo.len();
                for ((o, gv), mv) in mo.iter_mut().zip(&g[i0..i0 + k]).zip(&m[i0..i0 + k]) {
                    *o = mv + (gv - mv) * b1c;
                }
            },
        );
        crate::ops::par_rows(
            vo,
            1,
            #[inline(always)]
            |i0, vo| {
                let k = vo.len();
                for ((o, gv), vv) in vo.iter_mut().zip(&g[i0..i0 + k]).zip(&v[i0..i0 + k]) {
                    *o = vv * b2 + (gv * b2c) * gv;
                }
            },
        );
        Ok((CpuStorage::F32(out), Shape::from_dims(&[2 * n])))
    }
}

/// `p` in place from the new moments.
struct Update(AdamWStep);

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "kernels-adamw-update"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let m = contiguous_f32(s2, l2, "adamw first moment")?;
        let v = contiguous_f32(s3, l3, "adamw second moment")?;
        let p = match (s1, l1.contiguous_offsets()) {
            (CpuStorage::F32(d), Some((a, b))) => &mut d[a..b],
            _ => candle::bail!("adamw: the parameter must be a contiguous f32 tensor"),
        };
        if m.len() != p.len() || v.len() != p.len() {
            candle::bail!("adamw: parameter and moments differ in size")
        }
        let c = self.0;
        let (decay, b2s, eps, step) = (
            c.decay as f32,
            c.bias2_sqrt as f32,
            c.eps as f32,
            c.neg_step_size as f32,
        );
        crate::ops::par_rows(
            p,
            1,
            #[inline(always)]
            |i0, p| {
                let k = p.len();
                for ((pv, mv), vv) in p.iter_mut().zip(&m[i0..i0 + k]).zip(&v[i0..i0 + k]) {
                    let denom = (vv.sqrt() / b2s) * 1.0 + eps;
                    *pv = *pv * decay + (mv * step) / denom;
                }
            },
        );
        Ok(())
    }
}

/// One AdamW update of `param` (in place, as `Var::set` would write it) with gradient `grad`
/// and moments `m`, `v`; returns the new moments `(m', v')`. CPU `f32` tensors of one shape.
///
/// # Errors
/// When a tensor is not a CPU `f32` tensor of `param`'s shape, or `param` is not contiguous.
pub fn adamw_step(
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    step: AdamWStep,
) -> Result<(Tensor, Tensor)> {
    for (what, t) in [
        ("gradient", grad),
        ("first moment", m),
        ("second moment", v),
    ] {
        if t.dims() != param.dims() {
            candle::bail!(
                "adamw: {what} {:?} does not match the parameter {:?}",
                t.dims(),
                param.dims()
            )
        }
    }
    if !crate::ops::fast_ok(param) || [grad, m, v].iter().any(|t| t.dtype() != DType::F32) {
        candle::bail!("adamw_step: CPU f32 tensors only")
    }
    let packed =
        grad.contiguous()?
            .apply_op3_no_bwd(&m.contiguous()?, &v.contiguous()?, &Moments(step))?;
    let n = param.elem_count();
    let m1 = packed.narrow(0, 0, n)?.reshape(param.shape())?;
    let v1 = packed.narrow(0, n, n)?.reshape(param.shape())?;
    param.inplace_op3(&m1, &v1, &Update(step))?;
    Ok((m1, v1))
}
