//! Differentiable fused kernels for training: the operations of [`crate::ops`] as candle custom
//! ops with a forward AND a backward CPU kernel, so a training step runs a handful of fused
//! passes per layer instead of candle's generic element-wise ops (each a full pass over memory,
//! a fresh allocation and a thread hand-off, forward and backward).
//!
//! Every public function takes the fused path for contiguous-or-not `f32` tensors on the CPU and
//! falls back to the plain differentiable candle ops elsewhere (other devices and dtypes), with
//! the same shape checks either way. Gradients follow the textbook derivations:
//! - LayerNorm (`y = x_hat g + b`, `x_hat = (x - mean) r`, `r = 1 / sqrt(var + eps)`):
//!   `dx = r (dy g - mean(dy g) - x_hat mean(dy g x_hat))`, `dg = sum dy x_hat`, `db = sum dy`;
//!   AdaLN modulation is the same with `g = 1 + scale[b]`, `b = shift[b]` summed per sample.
//! - exact GELU: `d/dx [x Phi(x)] = Phi(x) + x phi(x)`.
//! - attention `O = (P * M) V`, `P = softmax(S)`, `S = Q K^T / sqrt(dh) + bias`, dropout
//!   multipliers `M`: `dV = (P * M)^T dO`, `dP = (dO V^T) * M`,
//!   `dS = P * (dP - rowsum(dP * P))`, `dQ = dS K / sqrt(dh)`, `dK = dS^T Q / sqrt(dh)`.
//!   The forward keeps `P` (`B H Nq Nk` floats per layer, 20 MB at the reference size) instead of
//!   recomputing it in the backward pass (which would cost one more `Q K^T` product and softmax).
//! - linear `y = x W^T + b`: `dx = dy W`, `dW = dy^T x`, `db = sum_rows dy`.

use std::sync::Mutex;

use candle::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, DType, Layout, Result, Shape, Tensor,
};

use crate::attention::{View, exp_f32, softmax_row, view3};
use crate::ops::{
    GatedResidual, GeluErf, GemmLinear, LnAffine, LnModulate, OutPtr, check_linear, contiguous_f32,
    fast_ok, gemm_1t, mean_inv_std, par_rows, require,
};
use crate::simd::on_level;

/// Splits a flat packed buffer into tensors of the given shapes (views, no copy).
fn unpack(packed: &Tensor, shapes: &[&[usize]]) -> Result<Vec<Tensor>> {
    let mut out = Vec::with_capacity(shapes.len());
    let mut at = 0;
    for s in shapes {
        let n: usize = s.iter().product();
        out.push(packed.narrow(0, at, n)?.reshape(*s)?);
        at += n;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// LayerNorm and AdaLN modulation
// ---------------------------------------------------------------------------------------------

/// Backward of `y = x_hat * g[group] + b[group]` over rows of `d`, `rows / groups` consecutive
/// rows per group. Inputs: `x [R, D]`, `gy [R, D]`; `mult [G, D]` is the effective `g` (`w`, or
/// `1 + scale`). Output (flat): `dx [R, D]`, `dg [G, D]`, `db [G, D]`.
struct LnBackward<'a> {
    eps: f32,
    mult: &'a [f32],
    groups: usize,
}

impl CustomOp2 for LnBackward<'_> {
    fn name(&self) -> &'static str {
        "kernels-layer-norm-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "layer_norm backward x")?;
        let gy = contiguous_f32(s2, l2, "layer_norm backward grad")?;
        let (g, mult, eps) = (self.groups, self.mult, self.eps);
        let d = mult.len() / g.max(1);
        if g == 0 || d == 0 || mult.len() != g * d || x.len() != gy.len() || x.len() % (g * d) != 0
        {
            candle::bail!("layer_norm backward: shapes do not fit")
        }
        let rows = x.len() / d;
        let per = rows / g;
        let level = crate::simd::active();
        let mut out = vec![0f32; x.len() + 2 * g * d];
        let (dx, dgb) = out.split_at_mut(x.len());
        // Row statistics, then dx (rows in parallel).
        let mut stats = vec![0f32; 2 * rows];
        par_rows(
            &mut stats,
            2,
            #[inline(always)]
            |r0, st| {
                for (i, s) in st.chunks_exact_mut(2).enumerate() {
                    let r = r0 + i;
                    let (m, inv) = mean_inv_std(&x[r * d..(r + 1) * d], eps);
                    s[0] = m;
                    s[1] = inv;
                }
            },
        );
        let inv_d = 1.0 / d as f32;
        par_rows(
            dx,
            d,
            #[inline(always)]
            |r0, out| {
                for (i, o) in out.chunks_exact_mut(d).enumerate() {
                    let r = r0 + i;
                    let (mean, inv) = (stats[2 * r], stats[2 * r + 1]);
                    let xr = &x[r * d..(r + 1) * d];
                    let gr = &gy[r * d..(r + 1) * d];
                    let mr = &mult[(r / per) * d..(r / per + 1) * d];
                    let (mut a, mut c) = (0f32, 0f32);
                    for ((xv, gv), mv) in xr.iter().zip(gr).zip(mr) {
                        let gm = gv * mv;
                        a += gm;
                        c += gm * (xv - mean) * inv;
                    }
                    let (a, c) = (a * inv_d, c * inv_d);
                    for (((ov, xv), gv), mv) in o.iter_mut().zip(xr).zip(gr).zip(mr) {
                        let xh = (xv - mean) * inv;
                        *ov = inv * (gv * mv - a - xh * c);
                    }
                }
            },
        );
        // Parameter gradients: per group, sums over its rows (columns in parallel).
        let (dg, db) = dgb.split_at_mut(g * d);
        for gi in 0..g {
            let dgr = &mut dg[gi * d..(gi + 1) * d];
            let dbr = &mut db[gi * d..(gi + 1) * d];
            on_level(
                level,
                #[inline(always)]
                || {
                    for r in gi * per..(gi + 1) * per {
                        let (mean, inv) = (stats[2 * r], stats[2 * r + 1]);
                        let xr = &x[r * d..(r + 1) * d];
                        let gr = &gy[r * d..(r + 1) * d];
                        for (((a, b), xv), gv) in dgr.iter_mut().zip(dbr.iter_mut()).zip(xr).zip(gr)
                        {
                            *a += gv * (xv - mean) * inv;
                            *b += gv;
                        }
                    }
                },
            );
        }
        let n = out.len();
        Ok((CpuStorage::F32(out), Shape::from_dims(&[n])))
    }
}

/// Gradients of a modulated / affine LayerNorm: `(dx, dg, db)` with `dg`, `db` of shape `[G, D]`.
fn ln_backward(
    x: &Tensor,
    mult: &Tensor,
    groups: usize,
    gy: &Tensor,
    eps: f64,
) -> Result<[Tensor; 3]> {
    let d = x.dim(D::Minus1)?;
    let mult = mult.flatten_all()?.to_vec1::<f32>()?;
    let packed = x.contiguous()?.apply_op2_no_bwd(
        &gy.contiguous()?,
        &LnBackward {
            eps: eps as f32,
            mult: &mult,
            groups,
        },
    )?;
    let [dx, dg, db]: [Tensor; 3] = unpack(&packed, &[x.dims(), &[groups, d], &[groups, d]])?
        .try_into()
        .map_err(|_| candle::Error::Msg("layer_norm backward: unpack".into()))?;
    Ok([dx, dg, db])
}

/// AdaLN modulation `LN(x) * (1 + scale) + shift` with backward.
struct LnModulateGrad {
    eps: f64,
}

impl CustomOp3 for LnModulateGrad {
    fn name(&self) -> &'static str {
        "kernels-ln-modulate-grad"
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
        LnModulate {
            eps: self.eps as f32,
        }
        .cpu_fwd(s1, l1, s2, l2, s3, l3)
    }
    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        _shift: &Tensor,
        _res: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let b = x.dim(0)?;
        let [dx, ds, dsh] = ln_backward(x, &(scale + 1.0)?, b, gy, self.eps)?;
        Ok((Some(dx), Some(ds), Some(dsh)))
    }
}

/// Affine LayerNorm with backward.
struct LnAffineGrad {
    eps: f64,
}

impl CustomOp3 for LnAffineGrad {
    fn name(&self) -> &'static str {
        "kernels-layer-norm-grad"
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
        LnAffine {
            eps: self.eps as f32,
        }
        .cpu_fwd(s1, l1, s2, l2, s3, l3)
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [dx, dw, db] = ln_backward(x, w, 1, gy, self.eps)?;
        Ok((Some(dx), Some(dw.squeeze(0)?), Some(db.squeeze(0)?)))
    }
}

/// Differentiable affine LayerNorm over the last dim: `x: [..., D]`, `weight`, `bias: [D]`.
///
/// # Errors
/// When the shapes do not fit (`D >= 1`).
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let d = x.dims().last().copied().unwrap_or(0);
    require(
        d > 0 && weight.dims() == [d] && bias.dims() == [d],
        "layer_norm",
        || {
            format!(
                "input {:?}, weight {:?}, bias {:?}: expected [..., D] with D >= 1 and [D]",
                x.dims(),
                weight.dims(),
                bias.dims()
            )
        },
    )?;
    if fast_ok(x) && weight.dtype() == DType::F32 && bias.dtype() == DType::F32 {
        x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            LnAffineGrad { eps },
        )
    } else {
        crate::ops::layer_norm(x, Some((weight, bias)), eps, false)
    }
}

/// Differentiable AdaLN modulation `LN(x) * (1 + scale) + shift`: `x: [B, N, D]`,
/// `scale`, `shift: [B, D]`.
///
/// # Errors
/// When the shapes do not fit (`D >= 1`).
pub fn ln_modulate(x: &Tensor, scale: &Tensor, shift: &Tensor, eps: f64) -> Result<Tensor> {
    let fits = match x.dims() {
        &[b, _, d] => d > 0 && scale.dims() == [b, d] && shift.dims() == [b, d],
        _ => false,
    };
    require(fits, "ln_modulate", || {
        format!(
            "x {:?}, scale {:?}, shift {:?}: expected [B, N, D] with D >= 1, [B, D], [B, D]",
            x.dims(),
            scale.dims(),
            shift.dims()
        )
    })?;
    if fast_ok(x) && scale.dtype() == DType::F32 && shift.dtype() == DType::F32 {
        x.contiguous()?.apply_op3(
            &scale.contiguous()?,
            &shift.contiguous()?,
            LnModulateGrad { eps },
        )
    } else {
        crate::ops::ln_modulate(x, scale, shift, eps, false)
    }
}

// ---------------------------------------------------------------------------------------------
// Gated residual
// ---------------------------------------------------------------------------------------------

/// Backward of `h + gate[b] y`: inputs `y [B, N, D]`, `gy [B, N, D]`, the gate `[B, D]` held
/// here; output (flat) `dy [B, N, D]`, `dgate [B, D]`.
struct GatedBackward<'a> {
    gate: &'a [f32],
    batch: usize,
}

impl CustomOp2 for GatedBackward<'_> {
    fn name(&self) -> &'static str {
        "kernels-gated-residual-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = contiguous_f32(s1, l1, "gated_residual backward y")?;
        let gy = contiguous_f32(s2, l2, "gated_residual backward grad")?;
        let (b, gate) = (self.batch, self.gate);
        let d = gate.len() / b.max(1);
        if b == 0 || d == 0 || gate.len() != b * d || y.len() != gy.len() || y.len() % (b * d) != 0
        {
            candle::bail!("gated_residual backward: shapes do not fit")
        }
        let n = y.len() / (b * d);
        let mut out = vec![0f32; y.len() + b * d];
        let (dy, dg) = out.split_at_mut(y.len());
        par_rows(
            dy,
            d,
            #[inline(always)]
            |r0, o| {
                for (i, orow) in o.chunks_exact_mut(d).enumerate() {
                    let r = r0 + i;
                    let gr = &gate[(r / n) * d..(r / n + 1) * d];
                    for ((ov, gv), gyv) in orow.iter_mut().zip(gr).zip(&gy[r * d..(r + 1) * d]) {
                        *ov = gyv * gv;
                    }
                }
            },
        );
        par_rows(
            dg,
            d,
            #[inline(always)]
            |b0, o| {
                for (i, orow) in o.chunks_exact_mut(d).enumerate() {
                    let bi = b0 + i;
                    for r in bi * n..(bi + 1) * n {
                        let (yr, gr) = (&y[r * d..(r + 1) * d], &gy[r * d..(r + 1) * d]);
                        for ((ov, yv), gv) in orow.iter_mut().zip(yr).zip(gr) {
                            *ov += yv * gv;
                        }
                    }
                }
            },
        );
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from_dims(&[len])))
    }
}

struct GatedResidualGrad;

impl CustomOp3 for GatedResidualGrad {
    fn name(&self) -> &'static str {
        "kernels-gated-residual-grad"
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
        GatedResidual.cpu_fwd(s1, l1, s2, l2, s3, l3)
    }
    fn bwd(
        &self,
        _h: &Tensor,
        y: &Tensor,
        gate: &Tensor,
        _res: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let b = gate.dim(0)?;
        let gate_v = gate.flatten_all()?.to_vec1::<f32>()?;
        let packed = y.contiguous()?.apply_op2_no_bwd(
            &gy.contiguous()?,
            &GatedBackward {
                gate: &gate_v,
                batch: b,
            },
        )?;
        let [dy, dg]: [Tensor; 2] = unpack(&packed, &[y.dims(), gate.dims()])?
            .try_into()
            .map_err(|_| candle::Error::Msg("gated_residual backward: unpack".into()))?;
        Ok((Some(gy.clone()), Some(dy), Some(dg)))
    }
}

/// Differentiable `h + gate * y` with a per-sample gate: `h`, `y: [B, N, D]`, `gate: [B, D]`.
///
/// # Errors
/// When the shapes do not fit.
pub fn gated_residual(h: &Tensor, y: &Tensor, gate: &Tensor) -> Result<Tensor> {
    let fits = match h.dims() {
        &[b, _, d] => y.dims() == h.dims() && gate.dims() == [b, d] && b * d > 0,
        _ => false,
    };
    require(fits, "gated_residual", || {
        format!(
            "h {:?}, y {:?}, gate {:?}: expected [B, N, D], [B, N, D], [B, D]",
            h.dims(),
            y.dims(),
            gate.dims()
        )
    })?;
    if fast_ok(h) && fast_ok(y) && fast_ok(gate) {
        h.contiguous()?
            .apply_op3(&y.contiguous()?, &gate.contiguous()?, GatedResidualGrad)
    } else {
        crate::ops::gated_residual(h, y, gate, false)
    }
}

// ---------------------------------------------------------------------------------------------
// GELU and linear layers
// ---------------------------------------------------------------------------------------------

/// `d/dx gelu(x) = Phi(x) + x phi(x)` with the fast erf / exp.
#[inline(always)]
pub fn gelu_erf_grad_f32(x: f32) -> f32 {
    let cdf = 0.5 * (1.0 + crate::ops::erf_f32(x * std::f32::consts::FRAC_1_SQRT_2));
    let pdf = exp_f32(-0.5 * x * x) * 0.398_942_3;
    cdf + x * pdf
}

/// `gy * gelu'(x)`, inputs `x`, `gy` of one shape.
struct GeluBackward;

impl CustomOp2 for GeluBackward {
    fn name(&self) -> &'static str {
        "kernels-gelu-erf-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "gelu backward x")?;
        let gy = contiguous_f32(s2, l2, "gelu backward grad")?;
        if x.len() != gy.len() {
            candle::bail!("gelu backward: {:?} vs {:?}", l1.dims(), l2.dims())
        }
        let mut dst = vec![0f32; x.len()];
        par_rows(
            &mut dst,
            1,
            #[inline(always)]
            |r0, out| {
                let (xs, gs) = (&x[r0..r0 + out.len()], &gy[r0..r0 + out.len()]);
                for ((o, xv), gv) in out.iter_mut().zip(xs).zip(gs) {
                    *o = gv * gelu_erf_grad_f32(*xv);
                }
            },
        );
        Ok((CpuStorage::F32(dst), l1.shape().clone()))
    }
}

struct GeluGrad;

impl CustomOp1 for GeluGrad {
    fn name(&self) -> &'static str {
        "kernels-gelu-erf-grad"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        GeluErf.cpu_fwd(s, l)
    }
    fn bwd(&self, x: &Tensor, _res: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            x.contiguous()?
                .apply_op2_no_bwd(&gy.contiguous()?, &GeluBackward)?,
        ))
    }
}

/// Differentiable exact-erf GELU.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if fast_ok(x) {
        x.contiguous()?.apply_op1(GeluGrad)
    } else {
        x.gelu_erf()
    }
}

struct LinearGrad;

impl CustomOp3 for LinearGrad {
    fn name(&self) -> &'static str {
        "kernels-linear-grad"
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
        GemmLinear {
            act: crate::ops::Activation::Identity,
        }
        .cpu_fwd(s1, l1, s2, l2, s3, l3)
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let packed = x.contiguous()?.apply_op3_no_bwd(
            &w.contiguous()?,
            &gy.contiguous()?,
            &LinearBackward,
        )?;
        let [dx, dw, db]: [Tensor; 3] = unpack(&packed, &[x.dims(), w.dims(), &[w.dim(0)?]])?
            .try_into()
            .map_err(|_| candle::Error::Msg("linear backward: unpack".into()))?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Backward of `x W^T + b` from `(x [N, in], W [out, in], dy [N, out])`; output (flat)
/// `dx = dy W [N, in]`, `dW = dy^T x [out, in]`, `db [out]` (column sums of `dy`).
struct LinearBackward;

impl CustomOp3 for LinearBackward {
    fn name(&self) -> &'static str {
        "kernels-linear-bwd"
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
        let x = contiguous_f32(s1, l1, "linear backward x")?;
        let w = contiguous_f32(s2, l2, "linear backward weight")?;
        let gy = contiguous_f32(s3, l3, "linear backward grad")?;
        let (n, d_in) = l1.shape().dims2()?;
        let (d_out, w_in) = l2.shape().dims2()?;
        if w_in != d_in || l3.dims() != [n, d_out] {
            candle::bail!(
                "linear backward: x {:?}, weight {:?}, grad {:?} do not fit",
                l1.dims(),
                l2.dims(),
                l3.dims()
            )
        }
        let len = n * d_in + d_out * d_in + d_out;
        let mut out: Vec<f32> = Vec::with_capacity(len);
        let base = out.spare_capacity_mut().as_mut_ptr().cast::<f32>();
        // dx = dy [n, out] W [out, in]; dW = dy^T [out, n] x [n, in]. Both split by rows over
        // the threads, so the large operand `dy` is packed once in total, `W` / `x` per thread.
        // SAFETY: `base` has room for `len` floats; dx, dW and db are its disjoint ranges
        // [0, n in), [n in, n in + out in), [n in + out in, len). `gemm_split` overwrites every
        // element of its destination (no read of the previous contents) and db is written
        // below, so all `len` floats are initialised before `set_len`.
        unsafe {
            gemm_split(n, d_in, d_out, base, (gy, 1, d_out), (w, 1, d_in));
            gemm_split(
                d_out,
                d_in,
                n,
                base.add(n * d_in),
                (gy, d_out, 1),
                (x, 1, d_in),
            );
            let db = base.add(n * d_in + d_out * d_in);
            let mut sums = vec![0f32; d_out];
            for row in gy.chunks_exact(d_out.max(1)) {
                for (a, v) in sums.iter_mut().zip(row) {
                    *a += v;
                }
            }
            std::ptr::copy_nonoverlapping(sums.as_ptr(), db, d_out);
            out.set_len(len);
        }
        Ok((CpuStorage::F32(out), Shape::from_dims(&[len])))
    }
}

/// `dst [m, n] = lhs [m, k] rhs [k, n]` (operands as `(data, column stride, row stride)`),
/// split by output rows over the threads, each a single-threaded `gemm` on its block. Every
/// element of `dst` is written and none is read, so `dst` may be uninitialised.
///
/// # Safety
/// `dst` must be valid for writes of `m n` floats that nothing else accesses meanwhile.
unsafe fn gemm_split(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    let threads = candle::utils::get_num_threads().max(1);
    let per = m.div_ceil(threads).div_ceil(16) * 16;
    let blocks = m.div_ceil(per);
    let dst_ptr = OutPtr(dst);
    let block = |t: usize| {
        let r0 = t * per;
        let rows = per.min(m - r0);
        // SAFETY: dst is [m, n] row-major and this block writes only rows r0..r0 + rows;
        // lhs spans (m - 1) rs + (k - 1) cs < len and rhs (k - 1) rs + (n - 1) cs < len for the
        // callers' contiguous operands; the lhs block starts at row r0.
        unsafe {
            gemm_1t(
                (rows, n, k),
                (dst_ptr.ptr().add(r0 * n), n),
                false,
                (lhs.0.as_ptr().add(r0 * lhs.2), lhs.1, lhs.2),
                (rhs.0.as_ptr(), rhs.1, rhs.2),
                1.0,
            );
        }
    };
    crate::ops::run_blocks(blocks, m * n * k > 1 << 18, block);
}

/// `x * mask[i / group]`: dropout (`group = 1`, element-wise multipliers) or stochastic depth
/// (`group` = elements per sample), with a backward that returns only `dy * mask` (candle's
/// generic product also computes the unused gradient of the constant mask).
struct MaskMul {
    mask: Vec<f32>,
    group: usize,
}

impl MaskMul {
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        let (g, mask) = (self.group.max(1), &self.mask);
        if g == 1 {
            par_rows(
                &mut out,
                1,
                #[inline(always)]
                |i0, o| {
                    for ((ov, xv), m) in o.iter_mut().zip(&x[i0..]).zip(&mask[i0..]) {
                        *ov = xv * m;
                    }
                },
            );
        } else {
            par_rows(
                &mut out,
                g,
                #[inline(always)]
                |r0, o| {
                    for (i, orow) in o.chunks_exact_mut(g).enumerate() {
                        let (m, xrow) = (mask[r0 + i], &x[(r0 + i) * g..(r0 + i + 1) * g]);
                        for (ov, xv) in orow.iter_mut().zip(xrow) {
                            *ov = xv * m;
                        }
                    }
                },
            );
        }
        out
    }
}

impl CustomOp1 for MaskMul {
    fn name(&self) -> &'static str {
        "kernels-mask-mul"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "mask_mul")?;
        if self.mask.len() * self.group.max(1) != x.len() {
            candle::bail!(
                "mask_mul: {} multipliers of {} elements do not cover {:?}",
                self.mask.len(),
                self.group,
                l.dims()
            )
        }
        Ok((CpuStorage::F32(self.apply(x)), l.shape().clone()))
    }
    fn bwd(&self, _x: &Tensor, _res: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        let gy = gy.contiguous()?;
        Ok(Some(gy.apply_op1_no_bwd(&MaskMulNoGrad(self))?))
    }
}

struct MaskMulNoGrad<'a>(&'a MaskMul);

impl CustomOp1 for MaskMulNoGrad<'_> {
    fn name(&self) -> &'static str {
        "kernels-mask-mul-bwd"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.0.cpu_fwd(s, l)
    }
}

/// Elements of a dropout mask drawn from one generator stream ([`dropout_keep`]).
const DROPOUT_BLOCK: usize = 1 << 14;

/// Inverted-dropout multipliers: `n` values, each 0 with probability `p` and `1 / (1 - p)`
/// otherwise, in row-major order; `None` when `p <= 0`. `p >= 1` drops everything.
///
/// One 64-bit key is drawn from `rng` per mask; block `i` of 16 Ki (16,384) elements then
/// comes from stream `i` of a ChaCha8 generator keyed by it (a counter-based scheme, as
/// FlashAttention's Philox dropout), so the blocks are generated in parallel and the mask is a
/// function of the key alone, whatever the number of threads. Each decision compares one 32-bit
/// draw with `p 2^32`, a comparison loop that vectorises.
pub fn dropout_keep(rng: &mut impl rand::RngCore, n: usize, p: f64) -> Option<Vec<f32>> {
    use rand::{Rng, SeedableRng};
    if p <= 0.0 {
        return None;
    }
    let key = rng.next_u64();
    if p >= 1.0 {
        return Some(vec![0f32; n]);
    }
    let keep = (1.0 / (1.0 - p)) as f32;
    // Drop when the draw is below p 2^32 (at most 2^32 - 1 here: p < 1 up to rounding).
    let threshold = (p * 4_294_967_296.0).round().min(u32::MAX as f64) as u32;
    let level = crate::simd::active();
    let mut out = vec![0f32; n];
    let base = OutPtr(out.as_mut_ptr());
    let blocks = n.div_ceil(DROPOUT_BLOCK);
    crate::ops::run_blocks(blocks, n > DROPOUT_BLOCK, |i| {
        let start = i * DROPOUT_BLOCK;
        let len = DROPOUT_BLOCK.min(n - start);
        // SAFETY: block i covers elements start .. start + len of `out` (inside it, disjoint
        // from every other block's); `out` is not touched elsewhere until `run_blocks` returns.
        let chunk = unsafe { std::slice::from_raw_parts_mut(base.ptr().add(start), len) };
        let mut stream = rand_chacha::ChaCha8Rng::seed_from_u64(key);
        stream.set_stream(i as u64);
        let mut draws = [0u32; 512];
        for part in chunk.chunks_mut(draws.len()) {
            let draws = &mut draws[..part.len()];
            stream.fill(draws);
            on_level(
                level,
                #[inline(always)]
                || {
                    for (o, &r) in part.iter_mut().zip(draws.iter()) {
                        *o = if r < threshold { 0.0 } else { keep };
                    }
                },
            );
        }
    });
    Some(out)
}

/// Differentiable `x * mask` with constant multipliers, `mask[i / group]` for element `i` of
/// `x` in row-major order: `group = 1` is an element-wise (dropout) mask, `group = x.elem_count()
/// / B` a per-sample (stochastic depth) factor. The gradient flows to `x` only.
///
/// # Errors
/// When `mask.len() * group` differs from the number of elements of `x`.
pub fn mask_mul(x: &Tensor, mask: Vec<f32>, group: usize) -> Result<Tensor> {
    require(
        group > 0 && mask.len() * group == x.elem_count(),
        "mask_mul",
        || {
            format!(
                "{} multipliers of {group} elements do not cover {:?}",
                mask.len(),
                x.dims()
            )
        },
    )?;
    if fast_ok(x) {
        x.contiguous()?.apply_op1(MaskMul { mask, group })
    } else {
        let m =
            Tensor::from_vec(mask, (x.elem_count() / group, 1), x.device())?.to_dtype(x.dtype())?;
        x.reshape((x.elem_count() / group, group))?
            .broadcast_mul(&m)?
            .reshape(x.shape())
    }
}

/// `gelu_erf(x W^T + b)` with backward: the forward keeps the pre-activation `z`, the backward
/// forms `dz = dy gelu'(z)` in one pass and continues as [`LinearGrad`].
struct LinearGeluGrad {
    pre: Mutex<Vec<f32>>,
    /// Dropout multipliers applied after the GELU (`[N, out]`, row-major).
    keep: Option<Vec<f32>>,
}

impl CustomOp3 for LinearGeluGrad {
    fn name(&self) -> &'static str {
        "kernels-linear-gelu-grad"
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
        let (z, shape) = GemmLinear {
            act: crate::ops::Activation::Identity,
        }
        .cpu_fwd(s1, l1, s2, l2, s3, l3)?;
        let CpuStorage::F32(z) = z else {
            candle::bail!("linear_gelu: expected an f32 product")
        };
        let keep = self.keep.as_deref();
        if keep.is_some_and(|k| k.len() != z.len()) {
            candle::bail!("linear_gelu: dropout mask does not fit {:?}", shape.dims())
        }
        let mut out = vec![0f32; z.len()];
        let level = crate::simd::active();
        par_rows(
            &mut out,
            1,
            #[inline(always)]
            |r0, o| {
                o.copy_from_slice(&z[r0..r0 + o.len()]);
                crate::ops::gelu_in_place(o, level);
                if let Some(k) = keep {
                    let k = &k[r0..r0 + o.len()];
                    for (v, m) in o.iter_mut().zip(k) {
                        *v *= m;
                    }
                }
            },
        );
        *self
            .pre
            .lock()
            .map_err(|_| candle::Error::Msg("linear_gelu: saved buffer poisoned".into()))? = z;
        Ok((CpuStorage::F32(out), shape))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let z = self
            .pre
            .lock()
            .map_err(|_| candle::Error::Msg("linear_gelu: saved buffer poisoned".into()))?;
        let gz = gy.contiguous()?.apply_op1_no_bwd(&GeluBackwardSaved {
            z: &z,
            keep: self.keep.as_deref(),
        })?;
        let packed = x
            .contiguous()?
            .apply_op3_no_bwd(&w.contiguous()?, &gz, &LinearBackward)?;
        let [dx, dw, db]: [Tensor; 3] = unpack(&packed, &[x.dims(), w.dims(), &[w.dim(0)?]])?
            .try_into()
            .map_err(|_| candle::Error::Msg("linear backward: unpack".into()))?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// `dy * keep * gelu'(z)` for a saved pre-activation `z` and optional dropout multipliers
/// (input: `dy`).
struct GeluBackwardSaved<'a> {
    z: &'a [f32],
    keep: Option<&'a [f32]>,
}

impl CustomOp1 for GeluBackwardSaved<'_> {
    fn name(&self) -> &'static str {
        "kernels-linear-gelu-bwd"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let gy = contiguous_f32(s, l, "linear_gelu backward grad")?;
        let z = self.z;
        if z.len() != gy.len() || self.keep.is_some_and(|k| k.len() != z.len()) {
            candle::bail!(
                "linear_gelu backward: saved activation does not fit {:?}",
                l.dims()
            )
        }
        let mut dst = vec![0f32; z.len()];
        par_rows(
            &mut dst,
            1,
            #[inline(always)]
            |r0, out| {
                let (zs, gs) = (&z[r0..r0 + out.len()], &gy[r0..r0 + out.len()]);
                for ((o, zv), gv) in out.iter_mut().zip(zs).zip(gs) {
                    *o = gv * gelu_erf_grad_f32(*zv);
                }
                if let Some(k) = self.keep {
                    let k = &k[r0..r0 + out.len()];
                    for (o, m) in out.iter_mut().zip(k) {
                        *o *= m;
                    }
                }
            },
        );
        Ok((CpuStorage::F32(dst), l.shape().clone()))
    }
}

/// Differentiable `x W^T + b` (`x: [N, in]`, `W: [out, in]`, `b: [out]`), followed by exact GELU
/// when `gelu`: one fused op (bias pre-filled, `gemm` accumulating into it, GELU as an epilogue
/// keeping the pre-activation) whose backward is the GELU derivative pass, two products and a
/// column sum.
///
/// # Errors
/// When the shapes do not fit (`in, out >= 1`).
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor, gelu: bool) -> Result<Tensor> {
    if gelu {
        return linear_gelu_dropout(x, w, b, None);
    }
    check_linear("linear", x, w, b)?;
    if fast_ok(x) && fast_ok(w) && fast_ok(b) {
        let (x, w, b) = (x.contiguous()?, w.contiguous()?, b.contiguous()?);
        x.apply_op3(&w, &b, LinearGrad)
    } else {
        crate::ops::linear(x, w, b, false, false)
    }
}

/// Differentiable `gelu_erf(x W^T + b) * keep`: a linear layer, exact GELU and inverted dropout
/// (`keep` from [`dropout_keep`], `[N, out]` row-major; `None`: no dropout) as one graph node,
/// so the dropout costs neither a pass over the activation nor a gradient buffer of its own.
///
/// # Errors
/// When the shapes do not fit (`in, out >= 1`) or `keep` has not `N * out` values.
pub fn linear_gelu_dropout(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    keep: Option<Vec<f32>>,
) -> Result<Tensor> {
    let d_out = check_linear("linear_gelu_dropout", x, w, b)?;
    let n = x.dim(0)?;
    if let Some(k) = &keep {
        require(k.len() == n * d_out, "linear_gelu_dropout", || {
            format!(
                "{} dropout multipliers do not cover the output [{n}, {d_out}]",
                k.len()
            )
        })?;
    }
    if fast_ok(x) && fast_ok(w) && fast_ok(b) {
        let (x, w, b) = (x.contiguous()?, w.contiguous()?, b.contiguous()?);
        return x.apply_op3(
            &w,
            &b,
            LinearGeluGrad {
                pre: Mutex::new(Vec::new()),
                keep,
            },
        );
    }
    let y = crate::ops::linear(x, w, b, true, false)?;
    match keep {
        Some(k) => y.mul(&Tensor::from_vec(k, (n, d_out), x.device())?.to_dtype(y.dtype())?),
        None => Ok(y),
    }
}

// ---------------------------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------------------------

/// Where one of `dq`, `dk`, `dv` goes in the backward output: first element, batch and row
/// strides (the column block of head `h` starts at `h dh`).
#[derive(Clone, Copy)]
struct GradLayout {
    start: usize,
    batch_stride: usize,
    row_stride: usize,
}

/// The shapes of an attention call: `(b, nq, nk, d, dh)`, checked.
fn attention_dims(
    heads: usize,
    qd: (usize, usize, usize),
    kd: (usize, usize, usize),
    vd: (usize, usize, usize),
    bias: usize,
    keep: usize,
) -> Result<(usize, usize, usize, usize, usize)> {
    let ((b, nq, d), (bk, nk, dk)) = (qd, kd);
    if vd != kd || bk != b || dk != d || heads == 0 || d % heads != 0 || nk == 0 {
        candle::bail!("attention: q {qd:?}, k {kd:?}, v {vd:?} with {heads} heads do not fit")
    }
    if bias != 0 && bias != b * nk {
        candle::bail!("attention: bias has {bias} values, expected {b} x {nk}")
    }
    if keep != 0 && keep != b * heads * nq * nk {
        candle::bail!(
            "attention: dropout mask has {keep} values, expected {b} x {heads} x {nq} x {nk}"
        )
    }
    Ok((b, nq, nk, d, d / heads))
}

/// Runs `work(pair, scratch)` for `pairs` (sample, head) pairs on up to the candle thread count,
/// each thread with its own scratch of `scratch` floats.
fn for_pairs(pairs: usize, scratch: usize, work: impl Fn(usize, &mut [f32]) + Sync) {
    let threads = candle::utils::get_num_threads().clamp(1, pairs.max(1));
    let level = crate::simd::active();
    let run = |first: usize| {
        crate::ops::with_scratch(scratch, |s| {
            // `work` is inlined here by its callers' `#[inline(always)]`, so its loops are
            // compiled for `level` too.
            on_level(
                level,
                #[inline(always)]
                || {
                    let mut pair = first;
                    while pair < pairs {
                        work(pair, s);
                        pair += threads;
                    }
                },
            )
        })
    };
    crate::ops::run_blocks(threads, true, run);
}

/// What the forward keeps for the backward pass.
struct AttentionSaved {
    heads: usize,
    /// Additive per-key bias `[B, Nk]`, or empty.
    bias: Vec<f32>,
    /// Dropout multipliers on the probabilities `[B, H, Nq, Nk]` (0 or `1 / (1 - p)`), or empty.
    keep: Vec<f32>,
    /// Softmax probabilities `[B, H, Nq, Nk]` written by the forward pass.
    probs: Mutex<Vec<f32>>,
}

impl AttentionSaved {
    fn new(heads: usize, bias: Option<&Tensor>, keep: Option<Vec<f32>>) -> Result<Self> {
        let bias = match bias {
            Some(t) => t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
            None => Vec::new(),
        };
        Ok(Self {
            heads,
            bias,
            keep: keep.unwrap_or_default(),
            probs: Mutex::new(Vec::new()),
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Vec<f32>>> {
        self.probs
            .lock()
            .map_err(|_| candle::Error::Msg("attention: probability buffer poisoned".into()))
    }

    /// Forward on views: `[B, Nq, D]` output, probabilities saved.
    fn forward(&self, qv: &View, kv: &View, vv: &View) -> Result<(Vec<f32>, Shape)> {
        let h = self.heads;
        let (b, nq, nk, d, dh) = attention_dims(
            h,
            qv.dims,
            kv.dims,
            vv.dims,
            self.bias.len(),
            self.keep.len(),
        )?;
        let scale = 1.0 / (dh as f32).sqrt();
        let mut out = vec![0f32; b * nq * d];
        let mut probs = self.lock()?;
        *probs = vec![0f32; b * h * nq * nk];
        let (out_ptr, p_ptr) = (OutPtr(out.as_mut_ptr()), OutPtr(probs.as_mut_ptr()));
        let level = crate::simd::active();
        let keep = &self.keep;
        let scratch = if keep.is_empty() { 0 } else { nq * nk };
        for_pairs(
            b * h,
            scratch,
            #[inline(always)]
            |pair, pm| {
                let (bi, hi) = (pair / h, pair % h);
                let qp = qv.data[qv.start + bi * qv.batch_stride + hi * dh..].as_ptr();
                let kp = kv.data[kv.start + bi * kv.batch_stride + hi * dh..].as_ptr();
                let vp = vv.data[vv.start + bi * vv.batch_stride + hi * dh..].as_ptr();
                // SAFETY: `probs` holds b h nq nk values and this pair owns its nq nk block.
                let p = unsafe {
                    std::slice::from_raw_parts_mut(p_ptr.ptr().add(pair * nq * nk), nq * nk)
                };
                // SAFETY: the views were bounds-checked in `view3` (or built in bounds); `p` holds
                // nq nk values.
                unsafe {
                    gemm_1t(
                        (nq, nk, dh),
                        (p.as_mut_ptr(), nk),
                        false,
                        (qp, 1, qv.row_stride),
                        (kp, kv.row_stride, 1),
                        scale,
                    );
                }
                let bias = (!self.bias.is_empty()).then(|| &self.bias[bi * nk..(bi + 1) * nk]);
                for row in p.chunks_exact_mut(nk) {
                    softmax_row(row, bias, level);
                }
                let lhs: &[f32] = if keep.is_empty() {
                    p
                } else {
                    let kb = &keep[pair * nq * nk..(pair + 1) * nq * nk];
                    for ((m, pv), kv) in pm.iter_mut().zip(p.iter()).zip(kb) {
                        *m = pv * kv;
                    }
                    pm
                };
                // SAFETY: the output block (rows bi nq.., columns hi dh.., row stride d) lies inside
                // `out` and no other pair writes it.
                unsafe {
                    gemm_1t(
                        (nq, dh, nk),
                        (out_ptr.ptr().add(bi * nq * d + hi * dh), d),
                        false,
                        (lhs.as_ptr(), 1, nk),
                        (vp, 1, vv.row_stride),
                        1.0,
                    );
                }
            },
        );
        Ok((out, Shape::from_dims(&[b, nq, d])))
    }

    /// Backward on the forward's views and the output gradient `gy [B, Nq, D]` (contiguous):
    /// writes `dq`, `dk`, `dv` into `out` at the given layouts (every element of those blocks).
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        qv: &View,
        kv: &View,
        vv: &View,
        gy: &[f32],
        out: &mut [f32],
        lq: GradLayout,
        lk: GradLayout,
        lv: GradLayout,
    ) -> Result<()> {
        let h = self.heads;
        let (b, nq, nk, d, dh) = attention_dims(h, qv.dims, kv.dims, vv.dims, 0, self.keep.len())?;
        let probs = self.lock()?;
        let end = |l: GradLayout, n: usize| {
            l.start + (b - 1) * l.batch_stride + (n - 1) * l.row_stride + d
        };
        if b == 0
            || nq == 0
            || probs.len() != b * h * nq * nk
            || gy.len() != b * nq * d
            || end(lq, nq) > out.len()
            || end(lk, nk) > out.len()
            || end(lv, nk) > out.len()
        {
            candle::bail!("attention backward: saved probabilities or gradient do not fit")
        }
        let scale = 1.0 / (dh as f32).sqrt();
        let base = OutPtr(out.as_mut_ptr());
        let keep = &self.keep;
        let level = crate::simd::active();
        let has_keep = !keep.is_empty();
        for_pairs(
            b * h,
            2 * nq * nk,
            #[inline(always)]
            |pair, scratch| {
                let (bi, hi) = (pair / h, pair % h);
                let (pm, dp) = scratch.split_at_mut(nq * nk);
                let p = &probs[pair * nq * nk..(pair + 1) * nq * nk];
                let kb = if has_keep {
                    &keep[pair * nq * nk..(pair + 1) * nq * nk]
                } else {
                    &[][..]
                };
                let lhs: &[f32] = if has_keep {
                    for ((m, pv), kv) in pm.iter_mut().zip(p).zip(kb) {
                        *m = pv * kv;
                    }
                    pm
                } else {
                    p
                };
                let qp = qv.data[qv.start + bi * qv.batch_stride + hi * dh..].as_ptr();
                let kp = kv.data[kv.start + bi * kv.batch_stride + hi * dh..].as_ptr();
                let vp = vv.data[vv.start + bi * vv.batch_stride + hi * dh..].as_ptr();
                let gp = gy[bi * nq * d + hi * dh..].as_ptr();
                let at = |l: GradLayout| (l.start + bi * l.batch_stride + hi * dh, l.row_stride);
                let ((oq, rq), (ok, rk), (ov, rv)) = (at(lq), at(lk), at(lv));
                // SAFETY: every block written below (rows of sample bi, columns of head hi, inside
                // `out` as checked above) belongs to this pair alone; the views are in bounds;
                // scratch blocks hold nq nk values.
                unsafe {
                    // dV = (P M)^T dO: [nk, nq] x [nq, dh].
                    gemm_1t(
                        (nk, dh, nq),
                        (base.ptr().add(ov), rv),
                        false,
                        (lhs.as_ptr(), nk, 1),
                        (gp, 1, d),
                        1.0,
                    );
                    // dP = dO V^T: [nq, dh] x [dh, nk].
                    gemm_1t(
                        (nq, nk, dh),
                        (dp.as_mut_ptr(), nk),
                        false,
                        (gp, 1, d),
                        (vp, vv.row_stride, 1),
                        1.0,
                    );
                }
                on_level(
                    level,
                    #[inline(always)]
                    || {
                        for i in 0..nq {
                            let row = &mut dp[i * nk..(i + 1) * nk];
                            let pr = &p[i * nk..(i + 1) * nk];
                            if has_keep {
                                for (g, kv) in row.iter_mut().zip(&kb[i * nk..(i + 1) * nk]) {
                                    *g *= kv;
                                }
                            }
                            let mut acc = [0f32; 8];
                            let mut rest = 0f32;
                            let (gc, pc) = (row.chunks_exact(8), pr.chunks_exact(8));
                            let (gr, prr) = (gc.remainder(), pc.remainder());
                            for (g8, p8) in gc.zip(pc) {
                                for j in 0..8 {
                                    acc[j] += g8[j] * p8[j];
                                }
                            }
                            for (g, pv) in gr.iter().zip(prr) {
                                rest += g * pv;
                            }
                            let dot = acc.iter().sum::<f32>() + rest;
                            for (g, pv) in row.iter_mut().zip(pr) {
                                *g = pv * (*g - dot) * scale;
                            }
                        }
                    },
                );
                // SAFETY: as above.
                unsafe {
                    // dQ = dS K: [nq, nk] x [nk, dh].
                    gemm_1t(
                        (nq, dh, nk),
                        (base.ptr().add(oq), rq),
                        false,
                        (dp.as_ptr(), 1, nk),
                        (kp, 1, kv.row_stride),
                        1.0,
                    );
                    // dK = dS^T Q: [nk, nq] x [nq, dh].
                    gemm_1t(
                        (nk, dh, nq),
                        (base.ptr().add(ok), rk),
                        false,
                        (dp.as_ptr(), nk, 1),
                        (qp, 1, qv.row_stride),
                        1.0,
                    );
                }
            },
        );
        Ok(())
    }
}

/// Attention on three tensors `q`, `k`, `v` (strided views allowed), with backward.
struct AttentionGrad(AttentionSaved);

impl CustomOp3 for AttentionGrad {
    fn name(&self) -> &'static str {
        "kernels-attention-grad"
    }
    fn cpu_fwd(
        &self,
        sq: &CpuStorage,
        lq: &Layout,
        sk: &CpuStorage,
        lk: &Layout,
        sv: &CpuStorage,
        lv: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (qv, kv, vv) = (
            view3(sq, lq, "q")?,
            view3(sk, lk, "k")?,
            view3(sv, lv, "v")?,
        );
        let (out, shape) = self.0.forward(&qv, &kv, &vv)?;
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let gy = gy.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let back = AttentionBackward {
            saved: &self.0,
            gy: &gy,
        };
        let packed = q.apply_op3_no_bwd(k, v, &back)?;
        let [dq, dk, dv]: [Tensor; 3] = unpack(&packed, &[q.dims(), k.dims(), v.dims()])?
            .try_into()
            .map_err(|_| candle::Error::Msg("attention backward: unpack".into()))?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

/// Backward of [`AttentionGrad`] on the forward's `q`, `k`, `v`; output (flat)
/// `dq [B, Nq, D]`, `dk [B, Nk, D]`, `dv [B, Nk, D]`.
struct AttentionBackward<'a> {
    saved: &'a AttentionSaved,
    gy: &'a [f32],
}

impl CustomOp3 for AttentionBackward<'_> {
    fn name(&self) -> &'static str {
        "kernels-attention-bwd"
    }
    fn cpu_fwd(
        &self,
        sq: &CpuStorage,
        lq: &Layout,
        sk: &CpuStorage,
        lk: &Layout,
        sv: &CpuStorage,
        lv: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (qv, kv, vv) = (
            view3(sq, lq, "q")?,
            view3(sk, lk, "k")?,
            view3(sv, lv, "v")?,
        );
        let ((b, nq, d), (_, nk, _)) = (qv.dims, kv.dims);
        let mut out = vec![0f32; b * nq * d + 2 * b * nk * d];
        let dense = |start: usize, n: usize| GradLayout {
            start,
            batch_stride: n * d,
            row_stride: d,
        };
        let (lq, lk, lv) = (
            dense(0, nq),
            dense(b * nq * d, nk),
            dense(b * nq * d + b * nk * d, nk),
        );
        self.saved
            .backward(&qv, &kv, &vv, self.gy, &mut out, lq, lk, lv)?;
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from_dims(&[len])))
    }
}

/// The three `[B, N, D]` views of a contiguous packed `[B, N, 3 D]` projection `[q | k | v]`.
fn qkv_views<'a>(s: &'a CpuStorage, l: &Layout) -> Result<[View<'a>; 3]> {
    let data = contiguous_f32(s, l, "self_attention qkv")?;
    let (b, n, d3) = l.shape().dims3()?;
    if d3 % 3 != 0 {
        candle::bail!("self_attention: qkv has {d3} channels, not a multiple of 3")
    }
    let d = d3 / 3;
    let view = |i: usize| View {
        data,
        start: i * d,
        batch_stride: n * d3,
        row_stride: d3,
        dims: (b, n, d),
    };
    Ok([view(0), view(1), view(2)])
}

/// Self-attention on a packed `qkv` projection, with backward writing the packed gradient.
struct SelfAttentionGrad(AttentionSaved);

impl CustomOp1 for SelfAttentionGrad {
    fn name(&self) -> &'static str {
        "kernels-self-attention-grad"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let [qv, kv, vv] = qkv_views(s, l)?;
        let (out, shape) = self.0.forward(&qv, &kv, &vv)?;
        Ok((CpuStorage::F32(out), shape))
    }
    fn bwd(&self, qkv: &Tensor, _res: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        let gy = gy.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let back = SelfAttentionBackward {
            saved: &self.0,
            gy: &gy,
        };
        Ok(Some(qkv.contiguous()?.apply_op1_no_bwd(&back)?))
    }
}

/// Backward of [`SelfAttentionGrad`]: the gradient of the packed `qkv`, `[B, N, 3 D]`.
struct SelfAttentionBackward<'a> {
    saved: &'a AttentionSaved,
    gy: &'a [f32],
}

impl CustomOp1 for SelfAttentionBackward<'_> {
    fn name(&self) -> &'static str {
        "kernels-self-attention-bwd"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let [qv, kv, vv] = qkv_views(s, l)?;
        let (b, n, d) = qv.dims;
        let mut out = vec![0f32; b * n * 3 * d];
        let at = |i: usize| GradLayout {
            start: i * d,
            batch_stride: n * 3 * d,
            row_stride: 3 * d,
        };
        self.saved
            .backward(&qv, &kv, &vv, self.gy, &mut out, at(0), at(1), at(2))?;
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// Differentiable multi-head self-attention on a packed projection `qkv: [B, N, 3 D]`
/// (`[q | k | v]` along the last dim, heads split channel-major inside each third): as
/// [`attention`] on its three thirds, but the backward pass writes the packed gradient directly
/// (no per-third zero padding and summation). Returns `[B, N, D]`.
///
/// # Errors
/// When the shapes do not fit (`3 D` channels, `heads` dividing `D`, bias `[B, N]`, `keep` of
/// `B H N N` values).
pub fn self_attention(
    qkv: &Tensor,
    heads: usize,
    bias: Option<&Tensor>,
    keep: Option<Vec<f32>>,
) -> Result<Tensor> {
    let (b, n, d3) = qkv.dims3()?;
    require(d3 % 3 == 0 && d3 > 0, "self_attention", || {
        format!("qkv {:?}: expected [B, N, 3 D]", qkv.dims())
    })?;
    let d = d3 / 3;
    if !fast_ok(qkv) {
        return attention(
            &qkv.narrow(2, 0, d)?,
            &qkv.narrow(2, d, d)?,
            &qkv.narrow(2, 2 * d, d)?,
            heads,
            bias,
            keep,
        );
    }
    attention_dims(
        heads,
        (b, n, d),
        (b, n, d),
        (b, n, d),
        bias.map_or(0, |t| t.elem_count()),
        keep.as_ref().map_or(0, Vec::len),
    )?;
    require(
        bias.is_none_or(|t| t.dims() == [b, n]),
        "self_attention",
        || {
            format!(
                "bias {:?}: expected [{b}, {n}]",
                bias.map(|t| t.dims().to_vec())
            )
        },
    )?;
    qkv.contiguous()?
        .apply_op1(SelfAttentionGrad(AttentionSaved::new(heads, bias, keep)?))
}

/// Differentiable multi-head attention `softmax(Q K^T / sqrt(dh) + bias) V` with heads split
/// channel-major, optional additive key bias `[B, Nk]` and optional dropout multipliers on the
/// probabilities (`keep`, `[B, H, Nq, Nk]` row-major, each 0 or `1 / (1 - p)`).
///
/// `q: [B, Nq, D]`, `k`, `v: [B, Nk, D]` may be strided views with a contiguous last dim (e.g.
/// thirds of a packed `qkv` projection). Returns `[B, Nq, D]`. The fused path needs CPU `f32`
/// tensors; elsewhere plain candle ops.
///
/// # Errors
/// When the shapes do not fit (`heads >= 1` dividing `D`, `Nk >= 1`, bias `[B, Nk]`, `keep` of
/// `B H Nq Nk` values).
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    bias: Option<&Tensor>,
    keep: Option<Vec<f32>>,
) -> Result<Tensor> {
    let (b, nq, d) = q.dims3()?;
    let (_, nk, _) = k.dims3()?;
    attention_dims(
        heads,
        (b, nq, d),
        k.dims3()?,
        v.dims3()?,
        bias.map_or(0, |t| t.elem_count()),
        keep.as_ref().map_or(0, Vec::len),
    )?;
    require(
        bias.is_none_or(|t| t.dims() == [b, nk]),
        "attention",
        || {
            format!(
                "bias {:?}: expected [{b}, {nk}]",
                bias.map(|t| t.dims().to_vec())
            )
        },
    )?;
    let q_ok = |t: &Tensor| fast_ok(t) && t.dims().last().is_some() && t.stride()[2] == 1;
    if q_ok(q) && q_ok(k) && q_ok(v) {
        return q.apply_op3(k, v, AttentionGrad(AttentionSaved::new(heads, bias, keep)?));
    }
    // Plain differentiable ops.
    let dh = d / heads;
    let split = |x: &Tensor, n: usize| -> Result<Tensor> {
        x.contiguous()?
            .reshape((b, n, heads, dh))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * heads, n, dh))
    };
    let (qh, kh, vh) = (split(q, nq)?, split(k, nk)?, split(v, nk)?);
    let logits = (qh * (1.0 / (dh as f64).sqrt()))?
        .matmul(&kh.t()?)?
        .reshape((b, heads, nq, nk))?;
    let mut p = crate::ops::attention_softmax(&logits, bias, false)?;
    if let Some(keep) = keep {
        p = p.mul(&Tensor::from_vec(keep, p.shape(), p.device())?.to_dtype(p.dtype())?)?;
    }
    p.reshape((b * heads, nq, nk))?
        .matmul(&vh)?
        .reshape((b, heads, nq, dh))?
        .transpose(1, 2)?
        .reshape((b, nq, d))
}
