//! Numerical building blocks of the transformer, each in two forms: fused CPU kernels for
//! inference (one pass over contiguous `f32` memory, split across threads; no gradient) and
//! plain differentiable candle ops (`fast = false`; candle's fused `layer_norm` /
//! `softmax_last_dim` pass no gradient). [`crate::grad`] has differentiable fused kernels.
//!
//! GELU is the exact erf form of Hendrycks & Gimpel, "Gaussian Error Linear Units (GELUs)"
//! (2016); LayerNorm is Ba et al., "Layer Normalization" (2016). The fast `erf` is a rational
//! minimax approximation on `[-4, 4]` (the form used by Eigen and XLA), accurate to about 1e-7
//! absolute, far below the reference tolerance (checked against `f64` erf in the unit tests).

use candle::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, DType, Layout, Result, Shape, Tensor,
};

use crate::simd::SimdLevel;

/// Raw output pointer shared by worker threads that write disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr<T = f32>(pub(crate) *mut T);
// SAFETY: only dereferenced at disjoint positions by the blocks of one `run_blocks` call,
// which all end before the buffer is used again.
unsafe impl<T> Send for OutPtr<T> {}
unsafe impl<T> Sync for OutPtr<T> {}

impl<T> OutPtr<T> {
    /// Method access so closures capture the whole (Send + Sync) wrapper, not its field.
    pub(crate) fn ptr(&self) -> *mut T {
        self.0
    }
}

/// Elements below which a kernel stays on one thread (waking the pool costs microseconds).
const MIN_PARALLEL_ELEMS: usize = 1 << 15;

/// Runs `f(row_start, dst_chunk)` over `dst` split in whole rows of `row` elements, on up to
/// `candle::utils::get_num_threads()` threads of the shared pool ([`run_blocks`]), each call
/// compiled for the caller's SIMD level ([`crate::simd::active`], read here;
/// [`crate::simd::on_level`]). Mark `f` `#[inline(always)]`: otherwise LLVM may keep it a
/// separate function compiled for the baseline target.
pub(crate) fn par_rows(dst: &mut [f32], row: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let level = crate::simd::active();
    let f = |r0: usize, chunk: &mut [f32]| {
        crate::simd::on_level(
            level,
            #[inline(always)]
            || f(r0, chunk),
        )
    };
    let rows = dst.len().checked_div(row).unwrap_or(0);
    let threads = candle::utils::get_num_threads().max(1).min(rows.max(1));
    if threads <= 1 || dst.len() < MIN_PARALLEL_ELEMS {
        f(0, dst);
        return;
    }
    let per = rows.div_ceil(threads);
    let blocks = rows.div_ceil(per);
    let len = dst.len();
    let base = OutPtr(dst.as_mut_ptr());
    run_blocks(blocks, true, |t| {
        let r0 = t * per;
        let n = (per * row).min(len - r0 * row);
        // SAFETY: block t covers elements r0 * row .. r0 * row + n of `dst`, which lie inside
        // it and are disjoint from every other block's; `dst` is exclusively borrowed for the
        // duration of `run_blocks`, which returns only after every block has finished.
        let chunk = unsafe { std::slice::from_raw_parts_mut(base.ptr().add(r0 * row), n) };
        f(r0, chunk)
    });
}

/// An element-wise map of a contiguous `f32` tensor into a new one: `f(input, output)` on
/// matching chunks, on the pool's threads ([`par_rows`]; mark `f` `#[inline(always)]`).
pub(crate) fn map_f32(
    s: &CpuStorage,
    l: &Layout,
    what: &str,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Result<(CpuStorage, Shape)> {
    let x = contiguous_f32(s, l, what)?;
    let mut dst = vec![0f32; x.len()];
    par_rows(
        &mut dst,
        1,
        #[inline(always)]
        |r0, out| f(&x[r0..r0 + out.len()], out),
    );
    Ok((CpuStorage::F32(dst), l.shape().clone()))
}

pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(d) => d,
        _ => candle::bail!("{what}: expected an f32 tensor"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle::bail!("{what}: input must be contiguous"),
    }
}

/// `erf(x)` for `f32`, max abs error ~1e-7 (rational approximation, clamped to `[-4, 4]`).
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    p *= x;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    // Beyond |x| = 3.9, erf(x) rounds to +-1 in f32; returning it exactly keeps
    // 1 + erf(x) (GELU of large negative inputs) free of the approximant's last-ulp error.
    if x.abs() > 3.9 { x.signum() } else { p / q }
}

/// Exact-form GELU `0.5 x (1 + erf(x / sqrt 2))` with the fast erf.
#[inline(always)]
pub fn gelu_erf_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Exact-form GELU over a slice in place, compiled for AVX2 + FMA when `level` allows it
/// (AVX-512 adds nothing here over AVX2).
pub(crate) fn gelu_in_place(xs: &mut [f32], level: SimdLevel) {
    #[cfg(target_arch = "x86_64")]
    {
        if level.min(SimdLevel::detected()) >= SimdLevel::Avx2 {
            // SAFETY: the CPU supports AVX2 and FMA (`detected`).
            unsafe { gelu_in_place_avx2(xs) };
            return;
        }
    }
    let _ = level;
    gelu_in_place_generic(xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_in_place_avx2(xs: &mut [f32]) {
    gelu_in_place_generic(xs)
}

#[inline(always)]
fn gelu_in_place_generic(xs: &mut [f32]) {
    for v in xs.iter_mut() {
        *v = gelu_erf_f32(*v);
    }
}

/// `x sigmoid(1.702 x)` (CLIP's "quick GELU") for one value, with the fast `exp`.
#[inline(always)]
pub fn quick_gelu_f32(x: f32) -> f32 {
    x / (1.0 + crate::attention::exp_f32(-1.702 * x))
}

/// Quick GELU over a slice in place, on 16 / 8 lanes where the CPU allows it.
pub(crate) fn quick_gelu_in_place(xs: &mut [f32], level: SimdLevel) {
    #[cfg(target_arch = "x86_64")]
    {
        let level = level.min(SimdLevel::detected());
        if level >= SimdLevel::Avx512 {
            // SAFETY: the CPU supports AVX-512F (`detected`).
            unsafe { quick_gelu_avx512(xs) };
            return;
        }
        if level >= SimdLevel::Avx2 {
            // SAFETY: the CPU supports AVX2 and FMA (`detected`).
            unsafe { quick_gelu_avx2(xs) };
            return;
        }
    }
    let _ = level;
    for v in xs.iter_mut() {
        *v = quick_gelu_f32(*v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quick_gelu_avx512(xs: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut chunks = xs.chunks_exact_mut(16);
    let k = _mm512_set1_ps(-1.702);
    let one = _mm512_set1_ps(1.0);
    for c in &mut chunks {
        // SAFETY: `c` holds exactly 16 floats.
        unsafe {
            let x = _mm512_loadu_ps(c.as_ptr());
            let e = crate::attention::exp16(_mm512_mul_ps(x, k));
            _mm512_storeu_ps(c.as_mut_ptr(), _mm512_div_ps(x, _mm512_add_ps(one, e)));
        }
    }
    for v in chunks.into_remainder() {
        *v = quick_gelu_f32(*v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quick_gelu_avx2(xs: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut chunks = xs.chunks_exact_mut(8);
    let k = _mm256_set1_ps(-1.702);
    let one = _mm256_set1_ps(1.0);
    for c in &mut chunks {
        // SAFETY: `c` holds exactly 8 floats.
        unsafe {
            let x = _mm256_loadu_ps(c.as_ptr());
            let e = crate::attention::exp8(_mm256_mul_ps(x, k));
            _mm256_storeu_ps(c.as_mut_ptr(), _mm256_div_ps(x, _mm256_add_ps(one, e)));
        }
    }
    for v in chunks.into_remainder() {
        *v = quick_gelu_f32(*v);
    }
}

/// `x + bias` broadcast over rows, optionally followed by the exact-erf GELU, in one pass.
pub(crate) struct BiasAct {
    gelu: bool,
}

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        if self.gelu {
            "kernels-bias-gelu"
        } else {
            "kernels-bias-add"
        }
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let what = self.name();
        let x = contiguous_f32(s1, l1, what)?;
        let b = contiguous_f32(s2, l2, what)?;
        let n = b.len();
        if n == 0 || x.len() % n != 0 {
            candle::bail!("{what}: bias of {n} does not divide {:?}", l1.shape())
        }
        let mut dst = vec![0f32; x.len()];
        let level = crate::simd::active();
        par_rows(
            &mut dst,
            n,
            #[inline(always)]
            |r0, out| {
                let src = &x[r0 * n..r0 * n + out.len()];
                for (o_row, s_row) in out.chunks_exact_mut(n).zip(src.chunks_exact(n)) {
                    for ((o, s), bb) in o_row.iter_mut().zip(s_row).zip(b) {
                        *o = s + bb;
                    }
                    if self.gelu {
                        gelu_in_place(o_row, level);
                    }
                }
            },
        );
        Ok((CpuStorage::F32(dst), l1.shape().clone()))
    }
}

pub(crate) struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "kernels-gelu-erf"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let level = crate::simd::active();
        map_f32(
            s,
            l,
            "gelu_erf",
            #[inline(always)]
            |x, out| {
                out.copy_from_slice(x);
                gelu_in_place(out, level);
            },
        )
    }
}

/// LayerNorm over the last dim followed by a per-sample modulation:
/// `LN(x) * (1 + scale[b]) + shift[b]` (AdaLN), in one pass. `x` is `[B, N, D]`, `scale` and
/// `shift` `[B, D]`.
pub(crate) struct LnModulate {
    pub(crate) eps: f32,
}

impl CustomOp3 for LnModulate {
    fn name(&self) -> &'static str {
        "kernels-ln-modulate"
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
        let x = contiguous_f32(s1, l1, "ln_modulate")?;
        let scale = contiguous_f32(s2, l2, "ln_modulate scale")?;
        let shift = contiguous_f32(s3, l3, "ln_modulate shift")?;
        let (b, n, d) = l1.shape().dims3()?;
        if scale.len() != b * d || shift.len() != b * d {
            candle::bail!("ln_modulate: scale/shift must be [{b}, {d}]")
        }
        // `1 + scale` once per sample, so both LayerNorms share one row kernel.
        let gain: Vec<f32> = scale.iter().map(|c| c + 1.0).collect();
        let dst = ln_rows(x, d, self.eps, |r| {
            let bi = r / n;
            (&gain[bi * d..(bi + 1) * d], &shift[bi * d..(bi + 1) * d])
        });
        Ok((CpuStorage::F32(dst), l1.shape().clone()))
    }
}

/// Affine LayerNorm over the last dim, one pass per row.
pub(crate) struct LnAffine {
    pub(crate) eps: f32,
}

impl CustomOp3 for LnAffine {
    fn name(&self) -> &'static str {
        "kernels-layer-norm"
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
        let x = contiguous_f32(s1, l1, "layer_norm")?;
        let w = contiguous_f32(s2, l2, "layer_norm weight")?;
        let b = contiguous_f32(s3, l3, "layer_norm bias")?;
        let d = w.len();
        if d == 0 || b.len() != d || x.len() % d != 0 {
            candle::bail!("layer_norm: weight/bias of {d} do not fit {:?}", l1.shape())
        }
        let dst = ln_rows(x, d, self.eps, |_| (w, b));
        Ok((CpuStorage::F32(dst), l1.shape().clone()))
    }
}

/// `(x - mean) / sqrt(var + eps) * gain + bias` over rows of `d`, with `params(row)` giving that
/// row's `(gain, bias)`; rows in parallel, compiled for the active SIMD level.
fn ln_rows<'a>(
    x: &[f32],
    d: usize,
    eps: f32,
    params: impl Fn(usize) -> (&'a [f32], &'a [f32]) + Sync,
) -> Vec<f32> {
    let mut dst = vec![0f32; x.len()];
    par_rows(
        &mut dst,
        d,
        #[inline(always)]
        |r0, out| {
            for (i, o_row) in out.chunks_exact_mut(d).enumerate() {
                let r = r0 + i;
                let s_row = &x[r * d..(r + 1) * d];
                let (g, h) = params(r);
                let (mean, inv) = mean_inv_std(s_row, eps);
                for (((o, v), gv), hv) in o_row.iter_mut().zip(s_row).zip(g).zip(h) {
                    *o = (v - mean) * inv * gv + hv;
                }
            }
        },
    );
    dst
}

/// Mean and `1 / sqrt(biased var + eps)` of a row (two passes, `f32` like PyTorch's CPU kernel
/// up to summation order).
#[inline(always)]
pub(crate) fn mean_inv_std(row: &[f32], eps: f32) -> (f32, f32) {
    let d = row.len() as f32;
    let mean = sum_f32(row) / d;
    let mut acc = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let rem = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            let t = c[k] - mean;
            acc[k] += t * t;
        }
    }
    let mut var: f32 = acc.iter().sum();
    for v in rem {
        var += (v - mean) * (v - mean);
    }
    (mean, 1.0 / (var / d + eps).sqrt())
}

#[inline(always)]
fn sum_f32(row: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let rem = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    acc.iter().sum::<f32>() + rem.iter().sum::<f32>()
}

/// Softmax over the last dim of `[B, H, Nq, Nk]` logits with an additive per-key bias
/// `[B, Nk]` (broadcast over heads and queries), one pass per row.
struct BiasSoftmax {
    heads_x_queries: usize,
}

impl CustomOp2 for BiasSoftmax {
    fn name(&self) -> &'static str {
        "kernels-bias-softmax"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "bias_softmax")?;
        let bias = contiguous_f32(s2, l2, "bias_softmax bias")?;
        let nk = l1.shape().dims().last().copied().unwrap_or(0);
        let hq = self.heads_x_queries;
        if nk == 0 || hq == 0 || x.len() % (nk * hq) != 0 {
            candle::bail!("bias_softmax: bad logits shape {:?}", l1.shape())
        }
        let b = x.len() / (nk * hq);
        if bias.len() != b * nk {
            candle::bail!(
                "bias_softmax: bias has {} values, expected [{b}, {nk}]",
                bias.len()
            )
        }
        let mut dst = vec![0f32; x.len()];
        let level = crate::simd::active();
        par_rows(
            &mut dst,
            nk,
            #[inline(always)]
            |r0, out| {
                for (i, o_row) in out.chunks_exact_mut(nk).enumerate() {
                    let r = r0 + i;
                    let s_row = &x[r * nk..(r + 1) * nk];
                    let bi = r / hq;
                    let b_row = &bias[bi * nk..(bi + 1) * nk];
                    o_row.copy_from_slice(s_row);
                    crate::attention::softmax_row(o_row, Some(b_row), level);
                }
            },
        );
        Ok((CpuStorage::F32(dst), l1.shape().clone()))
    }
}

/// `y = x W^T + b` (optionally followed by exact GELU) in one op: the output is pre-filled
/// with the bias rows and `gemm` accumulates the product into it, so the bias costs no extra
/// pass; GELU runs on the result while it is hot. `x: [N, in]`, `W: [out, in]`, `b: [out]`.
pub(crate) struct GemmLinear {
    pub(crate) act: Activation,
}

impl CustomOp3 for GemmLinear {
    fn name(&self) -> &'static str {
        "kernels-linear"
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
        let x = contiguous_f32(s1, l1, "linear input")?;
        let w = contiguous_f32(s2, l2, "linear weight")?;
        let b = contiguous_f32(s3, l3, "linear bias")?;
        let (n, d_in) = l1.shape().dims2()?;
        let (d_out, w_in) = l2.shape().dims2()?;
        if w_in != d_in || b.len() != d_out {
            candle::bail!(
                "linear: input {:?}, weight {:?}, bias {:?} do not fit",
                l1.dims(),
                l2.dims(),
                l3.dims()
            )
        }
        // The bias rows written once (no zero fill first), then the product accumulated.
        let mut dst = Vec::with_capacity(n * d_out);
        for _ in 0..n {
            dst.extend_from_slice(b);
        }
        gemm_acc(&mut dst, x, w, n, d_in, d_out);
        activate_in_place(&mut dst, self.act);
        Ok((CpuStorage::F32(dst), Shape::from_dims(&[n, d_out])))
    }
}

/// Applies `act` to every element of `dst` in place, on the pool's threads.
pub(crate) fn activate_in_place(dst: &mut [f32], act: Activation) {
    let level = crate::simd::active();
    match act {
        Activation::Identity => {}
        Activation::GeluErf => par_rows(
            dst,
            1,
            #[inline(always)]
            |_, out| gelu_in_place(out, level),
        ),
        Activation::QuickGelu => par_rows(
            dst,
            1,
            #[inline(always)]
            |_, out| quick_gelu_in_place(out, level),
        ),
    }
}

/// Fails with a message naming `op` unless `ok`.
pub(crate) fn require(ok: bool, op: &str, message: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        candle::bail!("{op}: {}", message())
    }
}

/// Checks `x: [N, in]`, `w: [out, in]`, `b: [out]` with `in, out >= 1`; returns `out`.
pub(crate) fn check_linear(op: &str, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<usize> {
    let fits = match (x.dims(), w.dims(), b.dims()) {
        (&[_, d_in], &[d_out, w_in], &[b_out]) => {
            d_in == w_in && d_out == b_out && d_in > 0 && d_out > 0
        }
        _ => false,
    };
    require(fits, op, || {
        format!(
            "input {:?}, weight {:?}, bias {:?}: expected [N, in], [out, in], [out] with \
             in, out >= 1",
            x.dims(),
            w.dims(),
            b.dims()
        )
    })?;
    Ok(w.dims()[0])
}

/// `x W^T + b` on 2-D `x: [N, in]` (PyTorch `nn.Linear` layout), optionally followed by exact
/// GELU. The fast CPU path is one fused op; otherwise differentiable candle ops.
///
/// # Errors
/// When the shapes do not fit (`x: [N, in]`, `w: [out, in]`, `b: [out]`, `in, out >= 1`).
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor, gelu: bool, fast: bool) -> Result<Tensor> {
    let act = if gelu {
        Activation::GeluErf
    } else {
        Activation::Identity
    };
    linear_act(x, w, b, act, fast)
}

/// Activation fused into [`linear_act`] as an epilogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// None.
    Identity,
    /// Exact-form GELU `0.5 x (1 + erf(x / sqrt 2))`.
    GeluErf,
    /// The sigmoid approximation of GELU used by OpenAI's CLIP, `x sigmoid(1.702 x)`.
    QuickGelu,
}

impl Activation {
    /// The activation with plain differentiable candle ops.
    pub fn apply_plain(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Identity => Ok(x.clone()),
            Activation::GeluErf => x.gelu_erf(),
            Activation::QuickGelu => x.mul(&candle_nn::ops::sigmoid(&(x * 1.702)?)?),
        }
    }
}

/// `act(x W^T + b)` on 2-D `x: [N, in]` (PyTorch `nn.Linear` layout): one fused op on CPU when
/// `fast` (no gradient), otherwise differentiable candle ops.
///
/// # Errors
/// When the shapes do not fit (`x: [N, in]`, `w: [out, in]`, `b: [out]`, `in, out >= 1`).
pub fn linear_act(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    act: Activation,
    fast: bool,
) -> Result<Tensor> {
    check_linear("linear", x, w, b)?;
    if fast && fast_ok(x) && w.dtype() == DType::F32 {
        x.contiguous()?
            .apply_op3_no_bwd(&w.contiguous()?, &b.contiguous()?, &GemmLinear { act })
    } else {
        act.apply_plain(&x.matmul(&w.t()?)?.broadcast_add(b)?)
    }
}

/// `dst += x W^T` in place (then exact GELU when `gelu`): `dst: [N, out]` (pre-filled by the
/// caller, e.g. with `residual + bias`), `x: [N, in]`, `W: [out, in]`.
struct GemmAccumulate;

impl candle::InplaceOp3 for GemmAccumulate {
    fn name(&self) -> &'static str {
        "kernels-linear-accumulate"
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
        let x = contiguous_f32(s2, l2, "linear input")?;
        let w = contiguous_f32(s3, l3, "linear weight")?;
        let (n, d_in) = l2.shape().dims2()?;
        let (d_out, w_in) = l3.shape().dims2()?;
        if w_in != d_in || l1.dims() != [n, d_out] {
            candle::bail!(
                "linear: input {:?}, weight {:?}, accumulator {:?} do not fit",
                l2.dims(),
                l3.dims(),
                l1.dims()
            )
        }
        let dst = match (s1, l1.contiguous_offsets()) {
            (CpuStorage::F32(d), Some((a, b))) => &mut d[a..b],
            _ => candle::bail!("linear: the accumulator must be a contiguous f32 tensor"),
        };
        gemm_acc(dst, x, w, n, d_in, d_out);
        Ok(())
    }
}

/// `dst [n, d_out] += x [n, d_in] W^T` (`W: [d_out, d_in]` row-major). Large products are
/// split by output columns over the threads, each running a single-threaded `gemm` on its
/// block of `W` rows, so every weight is packed once (with `gemm`'s own split both threads
/// packed the whole weight, which dominated small batches).
fn gemm_acc(dst: &mut [f32], x: &[f32], w: &[f32], n: usize, d_in: usize, d_out: usize) {
    if n == 0 || d_out == 0 {
        return;
    }
    debug_assert!(dst.len() == n * d_out && x.len() == n * d_in && w.len() == d_out * d_in);
    let threads = candle::utils::get_num_threads().max(1);
    // Column blocks stay multiples of 16 (one AVX-512 register of outputs).
    let per = d_out.div_ceil(threads).div_ceil(16) * 16;
    let blocks = d_out.div_ceil(per);
    let dst_ptr = OutPtr(dst.as_mut_ptr());
    let block = |t: usize| {
        let o0 = t * per;
        let cols = per.min(d_out - o0);
        // SAFETY: dst is [n, d_out] row-major and this block writes only its columns
        // o0..o0 + cols (row stride d_out), disjoint from the other blocks'; x is [n, d_in]
        // row-major; rows o0..o0 + cols of W ([d_out, d_in] row-major) are read as W^T
        // ([d_in, cols], column stride d_in, row stride 1); callers check the slice sizes.
        unsafe {
            gemm_1t(
                (n, cols, d_in),
                (dst_ptr.ptr().add(o0), d_out),
                true,
                (x.as_ptr(), 1, d_in),
                (w.as_ptr().add(o0 * d_in), d_in, 1),
                1.0,
            );
        }
    };
    run_blocks(blocks, n * d_out * d_in > 1 << 18, block);
}

/// `dst = scale * lhs rhs` (`dims = (m, n, k)`: `lhs [m, k]`, `rhs [k, n]`, `dst [m, n]`), or
/// `dst += scale * lhs rhs` when `accumulate`, by one single-threaded `gemm` call. `dst` is
/// `(pointer, row stride)` with unit column stride; each operand is `(pointer, column stride,
/// row stride)`, so a transposed operand is the same memory with the strides swapped.
///
/// # Safety
/// Every element the dimensions and strides address must lie inside its operand's allocation,
/// and nothing else may access the addressed part of `dst` meanwhile.
pub(crate) unsafe fn gemm_1t(
    (m, n, k): (usize, usize, usize),
    dst: (*mut f32, usize),
    accumulate: bool,
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
    scale: f32,
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.0,
            1,
            dst.1 as isize,
            accumulate,
            lhs.0,
            lhs.1 as isize,
            lhs.2 as isize,
            rhs.0,
            rhs.1 as isize,
            rhs.2 as isize,
            if accumulate { 1.0 } else { 0.0 },
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

thread_local! {
    /// Per-thread scratch reused by [`with_scratch`].
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on a zeroed scratch slice of `len` floats owned by this thread and kept between
/// calls, so that per-call scratch (attention scores of every (sample, head) pair) costs no
/// allocation: a fresh buffer above the allocator's mmap threshold is a page-fault and
/// TLB-shootdown round trip on every call. A nested call, or one above 64 MiB, gets a fresh
/// buffer.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    // Buffers above this size (64 MiB) are not kept.
    const KEEP_MAX: usize = 1 << 24;
    if len > KEEP_MAX {
        return f(&mut vec![0f32; len]);
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            buf.resize(len, 0.0);
            f(&mut buf[..])
        }
        Err(_) => f(&mut vec![0f32; len]),
    })
}

thread_local! {
    /// Set while this thread runs blocks of a [`run_blocks`] call (nested calls run inline).
    static IN_BLOCKS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `block(t)` for every `t` in `0..blocks`, each exactly once: on the threads of candle's
/// persistent CPU pool (`candle::utils::barrier_pool`, the caller's thread taking part) when
/// `parallel` and there is more than one block, else in order on the caller's thread. Blocks
/// are handed out through a shared counter, so the pool's size does not matter.
///
/// Sharing candle's pool (rather than spawning threads per call) costs no thread start-up and
/// keeps the pool's workers, which spin for a while after every candle op, busy with this work
/// instead of competing with it for the cores.
pub(crate) fn run_blocks(blocks: usize, parallel: bool, block: impl Fn(usize) + Sync) {
    if blocks <= 1 || !parallel || IN_BLOCKS.with(|f| f.get()) {
        (0..blocks).for_each(block);
        return;
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let run = |_: usize| {
        let was = IN_BLOCKS.with(|f| f.replace(true));
        loop {
            let t = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if t >= blocks {
                break;
            }
            block(t);
        }
        IN_BLOCKS.with(|f| f.set(was));
    };
    candle::utils::barrier_pool().execute(run);
}

/// `residual + x W^T + b` (a linear layer closing a residual branch) with one pass over the
/// output besides the product: `residual + b` is written first and the product accumulated
/// into it. The fast CPU path needs `x: [N, in]`, `residual: [N, out]`; otherwise candle ops.
///
/// # Shapes
/// `x: [N, in]`, `w: [out, in]`, `b: [out]`, `residual: [N, out]` -> `[N, out]`; other shapes
/// are errors.
pub fn linear_residual(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    residual: &Tensor,
    fast: bool,
) -> Result<Tensor> {
    let d_out = check_linear("linear_residual", x, w, b)?;
    require(
        residual.dims() == [x.dims()[0], d_out],
        "linear_residual",
        || {
            format!(
                "residual {:?} does not match the output [{}, {d_out}]",
                residual.dims(),
                x.dims()[0]
            )
        },
    )?;
    if fast && fast_ok(x) && fast_ok(residual) && w.dtype() == DType::F32 {
        let acc = bias_add(residual, b, true)?;
        acc.inplace_op3(&x.contiguous()?, &w.contiguous()?, &GemmAccumulate)?;
        Ok(acc)
    } else {
        residual + linear(x, w, b, false, fast)?
    }
}

/// `h + gate[b] * y` (AdaLN residual), `h`, `y`: `[B, N, D]`, `gate`: `[B, D]`, one pass.
pub(crate) struct GatedResidual;

impl CustomOp3 for GatedResidual {
    fn name(&self) -> &'static str {
        "kernels-gated-residual"
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
        let h = contiguous_f32(s1, l1, "gated_residual h")?;
        let y = contiguous_f32(s2, l2, "gated_residual y")?;
        let g = contiguous_f32(s3, l3, "gated_residual gate")?;
        let (b, n, d) = l1.shape().dims3()?;
        if l2.dims() != l1.dims() || g.len() != b * d {
            candle::bail!(
                "gated_residual: h {:?}, y {:?}, gate {:?} do not fit",
                l1.dims(),
                l2.dims(),
                l3.dims()
            )
        }
        let mut dst = vec![0f32; h.len()];
        par_rows(
            &mut dst,
            d,
            #[inline(always)]
            |r0, out| {
                for (i, o_row) in out.chunks_exact_mut(d).enumerate() {
                    let r = r0 + i;
                    let bi = r / n;
                    let gr = &g[bi * d..(bi + 1) * d];
                    let hr = &h[r * d..(r + 1) * d];
                    let yr = &y[r * d..(r + 1) * d];
                    for (((o, hv), yv), gv) in o_row.iter_mut().zip(hr).zip(yr).zip(gr) {
                        *o = hv + gv * yv;
                    }
                }
            },
        );
        Ok((CpuStorage::F32(dst), l1.shape().clone()))
    }
}

/// `h + gate * y` with a per-sample gate broadcast over tokens.
///
/// # Shapes
/// `h`, `y`: `[B, N, D]`; `gate`: `[B, D]`; returns `[B, N, D]`; other shapes are errors.
pub fn gated_residual(h: &Tensor, y: &Tensor, gate: &Tensor, fast: bool) -> Result<Tensor> {
    let fits = match h.dims() {
        &[b, _, d] => y.dims() == h.dims() && gate.dims() == [b, d],
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
    if fast && fast_ok(h) {
        h.contiguous()?
            .apply_op3_no_bwd(&y.contiguous()?, &gate.contiguous()?, &GatedResidual)
    } else {
        h + y.broadcast_mul(&gate.unsqueeze(1)?)?
    }
}

/// Multi-head attention at inference: `softmax(Q K^T / sqrt(dh) + bias) V` with heads split
/// channel-major. On CPU (`f32`) this is the fused kernel reading `q`, `k`, `v` in place from
/// strided views (last dim contiguous); elsewhere plain candle ops.
///
/// # Shapes
/// `q: [B, Nq, D]`, `k`, `v`: `[B, Nk, D]`, `bias: [B, Nk]` (additive, per key) -> `[B, Nq, D]`,
/// with `heads >= 1` dividing `D` and `Nk >= 1`; other shapes are errors.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let fits = match (q.dims(), k.dims()) {
        (&[b, _, d], &[kb, nk, kd]) => {
            kb == b
                && kd == d
                && nk > 0
                && v.dims() == k.dims()
                && heads > 0
                && d % heads == 0
                && d > 0
                && bias.is_none_or(|t| t.dims() == [b, nk])
        }
        _ => false,
    };
    require(fits, "attention", || {
        format!(
            "q {:?}, k {:?}, v {:?}, {heads} heads, bias {:?}: expected [B, Nq, D], \
             [B, Nk, D], [B, Nk, D] with Nk >= 1 and 1 <= heads dividing D >= 1, bias [B, Nk]",
            q.dims(),
            k.dims(),
            v.dims(),
            bias.map(|t| t.dims().to_vec())
        )
    })?;
    if fast_ok(q) {
        return crate::attention::fused_attention(q, k, v, heads, bias);
    }
    let (b, nq, d) = q.dims3()?;
    let nk = k.dim(1)?;
    let dh = d / heads;
    let split = |x: &Tensor, n: usize| -> Result<Tensor> {
        x.reshape((b, n, heads, dh))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * heads, n, dh))
    };
    let (qh, kh, vh) = (split(q, nq)?, split(k, nk)?, split(v, nk)?);
    let logits = (qh * (1.0 / (dh as f64).sqrt()))?
        .matmul(&kh.t()?)?
        .reshape((b, heads, nq, nk))?;
    attention_softmax(&logits, bias, false)?
        .reshape((b * heads, nq, nk))?
        .matmul(&vh)?
        .reshape((b, heads, nq, dh))?
        .transpose(1, 2)?
        .reshape((b, nq, d))
}

/// Multi-head attention at inference over variable-length sequences packed row after row, with
/// no padding (the layout of FlashAttention's "varlen" interface): sequence `i` owns query rows
/// `q_offsets[i]..q_offsets[i + 1]` of `q` and key / value rows
/// `kv_offsets[i]..kv_offsets[i + 1]` of `k` and `v`, and attends to nothing else. Under
/// `causal`, the queries of a sequence are its last positions and query `r` of `nq` sees the
/// first `nk - nq + r + 1` keys (GPT / CLIP-text masking when `nq == nk`). Heads are split
/// channel-major; on CPU (`f32`) the fused kernel reads views in place (e.g. column blocks of
/// one `[N, 3 D]` projection), elsewhere plain candle ops per sequence.
///
/// # Shapes
/// `q: [Nq, D]`, `k`, `v`: `[Nk, D]` -> `[Nq, D]`; offsets: `S + 1` cumulative row counts from 0
/// to `Nq` (resp. `Nk`); `heads` dividing `D`; every sequence with queries has keys (causal: at
/// least as many as queries). Anything else is an error.
pub fn packed_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    q_offsets: &[usize],
    kv_offsets: &[usize],
    causal: bool,
) -> Result<Tensor> {
    let fits = match (q.dims(), k.dims()) {
        (&[_, d], &[_, kd]) => {
            kd == d && v.dims() == k.dims() && heads > 0 && d > 0 && d % heads == 0
        }
        _ => false,
    };
    require(fits, "packed_attention", || {
        format!(
            "q {:?}, k {:?}, v {:?}, {heads} heads: expected [Nq, D], [Nk, D], [Nk, D] with \
             1 <= heads dividing D >= 1",
            q.dims(),
            k.dims(),
            v.dims()
        )
    })?;
    let (nq, d) = q.dims2()?;
    let nk = k.dim(0)?;
    crate::attention::check_offsets(q_offsets, kv_offsets, nq, nk, causal)?;
    if fast_ok(q) && fast_ok(k) && fast_ok(v) {
        return q.apply_op3_no_bwd(
            k,
            v,
            &crate::attention::PackedAttention {
                heads,
                q_offsets: q_offsets.to_vec(),
                kv_offsets: kv_offsets.to_vec(),
                causal,
            },
        );
    }
    let mut parts = Vec::with_capacity(q_offsets.len() - 1);
    for (qw, kw) in q_offsets.windows(2).zip(kv_offsets.windows(2)) {
        let (sq, sk) = (qw[1] - qw[0], kw[1] - kw[0]);
        if sq == 0 {
            continue;
        }
        let qs = q.narrow(0, qw[0], sq)?.unsqueeze(0)?;
        let ks = k.narrow(0, kw[0], sk)?.unsqueeze(0)?;
        let vs = v.narrow(0, kw[0], sk)?.unsqueeze(0)?;
        let out = if causal {
            let dh = d / heads;
            let split = |x: &Tensor, n: usize| -> Result<Tensor> {
                x.reshape((n, heads, dh))?.transpose(0, 1)?.contiguous()
            };
            let logits = (split(&qs.squeeze(0)?, sq)? * (1.0 / (dh as f64).sqrt()))?
                .matmul(&split(&ks.squeeze(0)?, sk)?.t()?)?;
            let mask: Vec<f32> = (0..sq)
                .flat_map(|r| {
                    let seen = crate::attention::causal_keys(r, sq, sk);
                    (0..sk).map(move |j| if j < seen { 0.0 } else { f32::NEG_INFINITY })
                })
                .collect();
            let mask = Tensor::from_vec(mask, (1, sq, sk), q.device())?.to_dtype(q.dtype())?;
            attention_softmax(&logits.broadcast_add(&mask)?.unsqueeze(0)?, None, false)?
                .squeeze(0)?
                .matmul(&split(&vs.squeeze(0)?, sk)?)?
                .transpose(0, 1)?
                .reshape((sq, d))?
        } else {
            attention(&qs, &ks, &vs, heads, None)?.squeeze(0)?
        };
        parts.push(out);
    }
    if parts.is_empty() {
        return Tensor::zeros((0, d), q.dtype(), q.device());
    }
    Tensor::cat(&parts, 0)
}

/// Whether the fused CPU kernels apply to this tensor.
pub fn fast_ok(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// Checks that `bias` is a non-empty trailing shape of `x`.
fn check_bias(op: &str, x: &Tensor, bias: &Tensor) -> Result<()> {
    let (xd, bd) = (x.dims(), bias.dims());
    require(
        !bd.is_empty() && bd.len() <= xd.len() && xd.ends_with(bd) && bias.elem_count() > 0,
        op,
        || format!("bias {bd:?} is not a non-empty trailing shape of {xd:?}"),
    )
}

/// `x + bias` broadcast over the leading dims (`bias` has the trailing shape of `x`: a `[D]`
/// bias row, or e.g. a `[F, D]` position table for `x: [B, F, D]`). `fast` selects the fused
/// CPU kernel (no gradient).
pub fn bias_add(x: &Tensor, bias: &Tensor, fast: bool) -> Result<Tensor> {
    check_bias("bias_add", x, bias)?;
    if fast && fast_ok(x) {
        x.contiguous()?
            .apply_op2_no_bwd(&bias.contiguous()?, &BiasAct { gelu: false })
    } else {
        x.broadcast_add(bias)
    }
}

/// `gelu_erf(x + bias)` over the last dim.
pub fn bias_gelu(x: &Tensor, bias: &Tensor, fast: bool) -> Result<Tensor> {
    check_bias("bias_gelu", x, bias)?;
    if fast && fast_ok(x) {
        x.contiguous()?
            .apply_op2_no_bwd(&bias.contiguous()?, &BiasAct { gelu: true })
    } else {
        x.broadcast_add(bias)?.gelu_erf()
    }
}

/// Exact-form GELU.
pub fn gelu_erf(x: &Tensor, fast: bool) -> Result<Tensor> {
    if fast && fast_ok(x) {
        x.contiguous()?.apply_op1_no_bwd(&GeluErf)
    } else {
        x.gelu_erf()
    }
}

/// Differentiable LayerNorm without affine parameters: `(x - mean) / sqrt(biased var + eps)`.
pub fn layer_norm_plain(x: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    xc.broadcast_div(&(var + eps)?.sqrt()?)
}

/// LayerNorm over the last dim, affine when `weight`/`bias` are given.
pub fn layer_norm(
    x: &Tensor,
    affine: Option<(&Tensor, &Tensor)>,
    eps: f64,
    fast: bool,
) -> Result<Tensor> {
    let d = x.dims().last().copied().unwrap_or(0);
    require(
        d > 0 && affine.is_none_or(|(w, b)| w.dims() == [d] && b.dims() == [d]),
        "layer_norm",
        || {
            format!(
                "input {:?}, weight / bias {:?}: expected [..., D] with D >= 1 and [D]",
                x.dims(),
                affine.map(|(w, b)| (w.dims().to_vec(), b.dims().to_vec()))
            )
        },
    )?;
    match affine {
        Some((w, b)) if fast && fast_ok(x) => x.contiguous()?.apply_op3_no_bwd(
            &w.contiguous()?,
            &b.contiguous()?,
            &LnAffine { eps: eps as f32 },
        ),
        Some((w, b)) => layer_norm_plain(x, eps)?.broadcast_mul(w)?.broadcast_add(b),
        None if fast && fast_ok(x) => {
            let d = x.dim(D::Minus1)?;
            let ones = Tensor::ones(d, DType::F32, x.device())?;
            let zeros = Tensor::zeros(d, DType::F32, x.device())?;
            x.contiguous()?
                .apply_op3_no_bwd(&ones, &zeros, &LnAffine { eps: eps as f32 })
        }
        None => layer_norm_plain(x, eps),
    }
}

/// AdaLN modulation `LN(x) * (1 + scale) + shift` (LayerNorm without affine parameters),
/// `x: [B, N, D]`, `scale`, `shift: [B, D]`.
pub fn ln_modulate(
    x: &Tensor,
    scale: &Tensor,
    shift: &Tensor,
    eps: f64,
    fast: bool,
) -> Result<Tensor> {
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
    if fast && fast_ok(x) {
        x.contiguous()?.apply_op3_no_bwd(
            &scale.contiguous()?,
            &shift.contiguous()?,
            &LnModulate { eps: eps as f32 },
        )
    } else {
        layer_norm_plain(x, eps)?
            .broadcast_mul(&(scale + 1.0)?.unsqueeze(1)?)?
            .broadcast_add(&shift.unsqueeze(1)?)
    }
}

/// Softmax over the last dim of `[B, H, Nq, Nk]` logits, after adding `bias: [B, Nk]` to every
/// head and query when given.
pub fn attention_softmax(logits: &Tensor, bias: Option<&Tensor>, fast: bool) -> Result<Tensor> {
    let (b, h, nq, nk) = logits.dims4()?;
    require(
        nk > 0 && bias.is_none_or(|t| t.dims() == [b, nk]),
        "attention_softmax",
        || {
            format!(
                "logits {:?}, bias {:?}: expected Nk >= 1 keys and bias [B, Nk]",
                logits.dims(),
                bias.map(|t| t.dims().to_vec())
            )
        },
    )?;
    if fast && fast_ok(logits) {
        match bias {
            Some(bias) => logits.contiguous()?.apply_op2_no_bwd(
                &bias.contiguous()?,
                &BiasSoftmax {
                    heads_x_queries: h * nq,
                },
            ),
            None => candle_nn::ops::softmax_last_dim(&logits.contiguous()?),
        }
    } else {
        let logits = match bias {
            Some(bias) => logits.broadcast_add(&bias.reshape((b, 1, 1, nk))?)?,
            None => logits.clone(),
        };
        candle_nn::ops::softmax(&logits, D::Minus1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::Device;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution, StandardNormal};

    #[test]
    fn fast_erf_is_within_a_few_f32_ulps_of_erf() {
        // Bound: ~5 ulps of f32 near 1 (ulp 6e-8). Reference values:
        // f64 via the identity erf(x) = 2/sqrt(pi) * int_0^x e^-t^2 dt,
        // integrated here with Simpson's rule on a fine grid (error << 1e-9).
        let erf64 = |x: f64| {
            let n = 4000;
            let h = x / n as f64;
            let f = |t: f64| (-t * t).exp();
            let mut s = f(0.0) + f(x);
            for i in 1..n {
                s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
            }
            s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
        };
        let mut worst = 0f64;
        for i in -700..=700 {
            let x = i as f64 / 100.0;
            worst = worst.max((erf_f32(x as f32) as f64 - erf64(x)).abs());
        }
        assert!(worst < 4e-7, "max |erf error| = {worst:e}");
    }

    #[test]
    fn fused_kernels_match_plain_ops() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = StdRng::seed_from_u64(17);
        let mut randn = |shape: &[usize], mean: f32, std: f32| -> Result<Tensor> {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    let z: f32 = StandardNormal.sample(&mut rng);
                    mean + std * z
                })
                .collect();
            Tensor::from_vec(v, shape, &dev)
        };
        // Wide inputs (std 3) reach the GELU tails.
        let x = randn(&[3, 70, 64], 0.3, 3.0)?;
        let b = randn(&[64], 0.0, 1.0)?;
        let w = randn(&[64], 1.0, 0.1)?;
        // Largest |a - e| / (1 + |e|): the fast erf is within 4e-7 absolute, so GELU is within
        // 2e-7 |x| of the exact form.
        let max_diff = |a: &Tensor, e: &Tensor| -> Result<f32> {
            ((a - e)?.abs()? / (e.abs()? + 1.0)?)?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()
        };
        assert!(max_diff(&bias_add(&x, &b, true)?, &bias_add(&x, &b, false)?)? < 1e-6);
        assert!(max_diff(&bias_gelu(&x, &b, true)?, &bias_gelu(&x, &b, false)?)? < 1e-6);
        assert!(max_diff(&gelu_erf(&x, true)?, &gelu_erf(&x, false)?)? < 1e-6);
        let ln_fast = layer_norm(&x, Some((&w, &b)), 1e-6, true)?;
        assert!(max_diff(&ln_fast, &layer_norm(&x, Some((&w, &b)), 1e-6, false)?)? < 1e-5);
        assert!(
            max_diff(
                &layer_norm(&x, None, 1e-6, true)?,
                &layer_norm_plain(&x, 1e-6)?
            )? < 1e-5
        );
        let sc = randn(&[3, 64], 0.0, 1.0)?;
        let sh = randn(&[3, 64], 0.0, 1.0)?;
        let gr = gated_residual(&x, &x, &sc, true)?;
        assert!(max_diff(&gr, &gated_residual(&x, &x, &sc, false)?)? < 1e-6);
        let m_fast = ln_modulate(&x, &sc, &sh, 1e-6, true)?;
        assert!(max_diff(&m_fast, &ln_modulate(&x, &sc, &sh, 1e-6, false)?)? < 1e-5);
        // Residual linear (210 rows, 64 -> 48): the fused op accumulates the product into
        // `residual + b`, the plain path adds the three; both are f32 sums of the same terms.
        let x2 = x.reshape((210, 64))?;
        let wl = randn(&[48, 64], 0.0, 0.2)?;
        let bl = randn(&[48], 0.0, 1.0)?;
        let res = randn(&[210, 48], 0.0, 1.0)?;
        let lr_fast = linear_residual(&x2, &wl, &bl, &res, true)?;
        assert!(max_diff(&lr_fast, &linear_residual(&x2, &wl, &bl, &res, false)?)? < 1e-5);
        let logits = randn(&[3, 4, 70, 70], 0.0, 3.0)?;
        let bias = randn(&[3, 70], 0.0, 1.0)?;
        let s_fast = attention_softmax(&logits, Some(&bias), true)?;
        assert!(max_diff(&s_fast, &attention_softmax(&logits, Some(&bias), false)?)? < 1e-6);
        Ok(())
    }
}
