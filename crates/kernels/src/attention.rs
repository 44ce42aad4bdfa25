//! Fused multi-head attention for CPU inference (Vaswani et al., "Attention Is All You Need",
//! 2017): for every (sample, head) pair, `S = (Q K^T) / sqrt(dh)`, `P = softmax(S + bias)`,
//! `O = P V` written straight into the heads-merged output. Queries, keys and values are read
//! in place from strided views (e.g. the three thirds of a packed `qkv` projection), so no head
//! split or merge copy is made; (sample, head) pairs run in parallel, each with a
//! single-threaded `gemm` call on its own `[Nq, Nk]` scratch buffer.

use candle::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use crate::ops::{OutPtr, gemm_1t};
use crate::simd::SimdLevel;

/// `exp(x)` for `f32` without libm: `2^n * p(r)` with `x = n ln2 + r`, `|r| <= ln2 / 2`, a
/// degree-6 polynomial (Cephes `expf` coefficients; relative error ~2 ulp); inputs below -87
/// give exactly 0 (masked keys). Scalar form, written so that loops over it can vectorise;
/// `exp16` / `exp8` are the same computation on AVX-512 / AVX2 vectors.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    let x_in = x;
    let x = x.clamp(-87.0, 88.0);
    // Round x / ln2 to the nearest integer with the 1.5 * 2^23 trick (no libm floor).
    let t = x * std::f32::consts::LOG2_E + 12_582_912.0;
    let n = t - 12_582_912.0;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let r2 = r * r;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r2 + r + 1.0;
    // t's low mantissa bits hold 0x40_0000 + n, so 2^n comes from integer ops on its bits
    // (as in `exp16`; no float-to-int conversion, so loops over this function vectorise).
    let pow2 = f32::from_bits(
        t.to_bits()
            .wrapping_add((127 - 0x4B40_0000_i32) as u32)
            .wrapping_shl(23),
    );
    if x_in < -87.0 { 0.0 } else { e * pow2 }
}

/// Softmax of one row in place after adding `bias` (when given), on the SIMD path `level`
/// ([`crate::simd::active`], read by the caller; never above what the CPU has).
#[inline]
pub(crate) fn softmax_row(row: &mut [f32], bias: Option<&[f32]>, level: SimdLevel) {
    #[cfg(target_arch = "x86_64")]
    {
        let level = level.min(SimdLevel::detected());
        if level >= SimdLevel::Avx512 && bias.is_none_or(|b| b.len() >= row.len()) {
            // SAFETY: the CPU supports AVX-512F (`detected`); `bias` (when given) is at least
            // as long as `row`.
            unsafe { softmax_row_avx512(row, bias) };
            return;
        }
        if level >= SimdLevel::Avx2 {
            // SAFETY: the CPU supports AVX2 and FMA (`detected`).
            unsafe { softmax_row_avx2(row, bias) };
            return;
        }
    }
    let _ = level;
    softmax_row_generic(row, bias)
}

/// [`softmax_row`] on 8-lane AVX2 vectors (`exp8`), the scalar `exp_f32` on the tail.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_row_avx2(row: &mut [f32], bias: Option<&[f32]>) {
    use std::arch::x86_64::*;
    if let Some(b) = bias {
        for (v, bb) in row.iter_mut().zip(b) {
            *v += bb;
        }
    }
    let n = row.len();
    let full = n / 8 * 8;
    let p = row.as_mut_ptr();
    // SAFETY (all pointer accesses below): full-width accesses stay below `full <= n`.
    unsafe {
        let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i < full {
            m = _mm256_max_ps(m, _mm256_loadu_ps(p.add(i)));
            i += 8;
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), m);
        let mut max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for &v in &row[full..] {
            max = max.max(v);
        }
        let mx = _mm256_set1_ps(max);
        let mut s = _mm256_setzero_ps();
        let mut i = 0;
        while i < full {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), mx));
            _mm256_storeu_ps(p.add(i), e);
            s = _mm256_add_ps(s, e);
            i += 8;
        }
        _mm256_storeu_ps(lanes.as_mut_ptr(), s);
        let mut sum: f32 = lanes.iter().sum();
        for v in &mut row[full..] {
            let e = exp_f32(*v - max);
            *v = e;
            sum += e;
        }
        let inv = _mm256_set1_ps(1.0 / sum);
        let mut i = 0;
        while i < full {
            _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), inv));
            i += 8;
        }
        let inv = 1.0 / sum;
        for v in &mut row[full..] {
            *v *= inv;
        }
    }
}

/// `exp_f32` on 16 lanes (same range reduction and polynomial, evaluated with FMA).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) fn exp16(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let xc = _mm512_max_ps(
        _mm512_min_ps(x, _mm512_set1_ps(88.0)),
        _mm512_set1_ps(-87.0),
    );
    let magic = _mm512_set1_ps(12_582_912.0);
    let t = _mm512_fmadd_ps(xc, _mm512_set1_ps(std::f32::consts::LOG2_E), magic);
    let n = _mm512_sub_ps(t, magic);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), xc);
    let r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.121_944_4e-4), r);
    let r2 = _mm512_mul_ps(r, r);
    let mut p = _mm512_set1_ps(1.987_569_1e-4);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.398_199_9e-3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.333_452e-3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.166_579_6e-2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.666_666_5e-1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5));
    let e = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
    // t's low mantissa bits hold 0x40_0000 + n: 2^n = ((bits(t) - 0x4B40_0000 + 127) << 23).
    let ni = _mm512_add_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(127 - 0x4B40_0000));
    let pow2 = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(ni));
    let keep = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(-87.0));
    _mm512_maskz_mul_ps(keep, e, pow2)
}

/// `exp_f32` on 8 AVX2 lanes (the same computation as `exp16`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) fn exp8(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let xc = _mm256_max_ps(
        _mm256_min_ps(x, _mm256_set1_ps(88.0)),
        _mm256_set1_ps(-87.0),
    );
    let magic = _mm256_set1_ps(12_582_912.0);
    let t = _mm256_fmadd_ps(xc, _mm256_set1_ps(std::f32::consts::LOG2_E), magic);
    let n = _mm256_sub_ps(t, magic);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), xc);
    let r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.121_944_4e-4), r);
    let r2 = _mm256_mul_ps(r, r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.398_199_9e-3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.333_452e-3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.166_579_6e-2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.666_666_5e-1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
    let e = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
    let ni = _mm256_add_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(127 - 0x4B40_0000));
    let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(ni));
    let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(-87.0));
    _mm256_and_ps(_mm256_mul_ps(e, pow2), keep)
}

/// [`softmax_row`] on 16-lane AVX-512 vectors (masked tail), max / sum reduced across lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_row_avx512(row: &mut [f32], bias: Option<&[f32]>) {
    use std::arch::x86_64::*;
    let n = row.len();
    let p = row.as_mut_ptr();
    let full = n / 16 * 16;
    let tail: __mmask16 = ((1u32 << (n - full)) - 1) as __mmask16;
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    // SAFETY (all pointer reads / writes below): full-width accesses stay below `full <= n`,
    // tail accesses are masked to `n`; `bias` has at least `n` values (caller's contract).
    unsafe {
        let mut m = ninf;
        let mut i = 0;
        while i < full {
            let mut v = _mm512_loadu_ps(p.add(i));
            if let Some(b) = bias {
                v = _mm512_add_ps(v, _mm512_loadu_ps(b.as_ptr().add(i)));
                _mm512_storeu_ps(p.add(i), v);
            }
            m = _mm512_max_ps(m, v);
            i += 16;
        }
        if tail != 0 {
            let mut v = _mm512_mask_loadu_ps(ninf, tail, p.add(full));
            if let Some(b) = bias {
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(tail, b.as_ptr().add(full)));
                _mm512_mask_storeu_ps(p.add(full), tail, v);
            }
            m = _mm512_max_ps(m, v);
        }
        let mx = _mm512_set1_ps(_mm512_reduce_max_ps(m));
        let mut s = _mm512_setzero_ps();
        let mut i = 0;
        while i < full {
            let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(p.add(i)), mx));
            _mm512_storeu_ps(p.add(i), e);
            s = _mm512_add_ps(s, e);
            i += 16;
        }
        if tail != 0 {
            let v = _mm512_maskz_loadu_ps(tail, p.add(full));
            let e = _mm512_maskz_mov_ps(tail, exp16(_mm512_sub_ps(v, mx)));
            _mm512_mask_storeu_ps(p.add(full), tail, e);
            s = _mm512_add_ps(s, e);
        }
        let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(s));
        let mut i = 0;
        while i < full {
            _mm512_storeu_ps(p.add(i), _mm512_mul_ps(_mm512_loadu_ps(p.add(i)), inv));
            i += 16;
        }
        if tail != 0 {
            let v = _mm512_maskz_loadu_ps(tail, p.add(full));
            _mm512_mask_storeu_ps(p.add(full), tail, _mm512_mul_ps(v, inv));
        }
    }
}

/// Eight independent lanes so the reductions vectorise (the order of a float sum is fixed by
/// the code, not by the compiler).
#[inline(always)]
fn softmax_row_generic(row: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for (v, bb) in row.iter_mut().zip(b) {
            *v += bb;
        }
    }
    let mut m8 = [f32::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            m8[k] = if c[k] > m8[k] { c[k] } else { m8[k] };
        }
    }
    let mut max = m8.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &v in chunks.remainder() {
        max = max.max(v);
    }
    let mut s8 = [0f32; 8];
    let mut chunks = row.chunks_exact_mut(8);
    for c in &mut chunks {
        for k in 0..8 {
            let e = exp_f32(c[k] - max);
            c[k] = e;
            s8[k] += e;
        }
    }
    let mut sum: f32 = s8.iter().sum();
    for v in chunks.into_remainder() {
        let e = exp_f32(*v - max);
        *v = e;
        sum += e;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// A `[B, N, W]` strided view with unit last stride.
pub(crate) struct View<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) start: usize,
    pub(crate) batch_stride: usize,
    pub(crate) row_stride: usize,
    pub(crate) dims: (usize, usize, usize),
}

pub(crate) fn view3<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<View<'a>> {
    let data = match s {
        CpuStorage::F32(d) => d.as_slice(),
        _ => candle::bail!("attention {what}: expected f32"),
    };
    let (b, n, w) = l.shape().dims3()?;
    let st = l.stride();
    if w > 1 && st[2] != 1 {
        candle::bail!("attention {what}: last dim must be contiguous, strides {st:?}")
    }
    let start = l.start_offset();
    let end = start + (b.max(1) - 1) * st[0] + (n.max(1) - 1) * st[1] + w;
    if end > data.len() {
        candle::bail!("attention {what}: view out of bounds")
    }
    Ok(View {
        data,
        start,
        batch_stride: st[0],
        row_stride: st[1],
        dims: (b, n, w),
    })
}

pub(crate) struct FusedAttention {
    pub(crate) heads: usize,
    /// Additive per-key bias `[B, Nk]`, row-major, or empty.
    pub(crate) bias: Vec<f32>,
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "kernels-fused-attention"
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
        let (b, nq, d) = qv.dims;
        let (bk, nk, dk) = kv.dims;
        let (bv, nv, dv) = vv.dims;
        let (q, q0, qbs, qrs) = (qv.data, qv.start, qv.batch_stride, qv.row_stride);
        let (k, k0, kbs, krs) = (kv.data, kv.start, kv.batch_stride, kv.row_stride);
        let (v, v0, vbs, vrs) = (vv.data, vv.start, vv.batch_stride, vv.row_stride);
        let h = self.heads;
        if bk != b || bv != b || nv != nk || dk != d || dv != d || h == 0 || d % h != 0 {
            candle::bail!(
                "attention: q {:?}, k {:?}, v {:?} with {h} heads do not fit",
                lq.dims(),
                lk.dims(),
                lv.dims()
            )
        }
        if !self.bias.is_empty() && self.bias.len() != b * nk {
            candle::bail!(
                "attention: bias has {} values, expected {b} x {nk}",
                self.bias.len()
            )
        }
        let dh = d / h;
        let scale = 1.0 / (dh as f32).sqrt();
        let mut out = vec![0f32; b * nq * d];
        let out_ptr = OutPtr(out.as_mut_ptr());
        let pairs = b * h;
        let threads = candle::utils::get_num_threads().clamp(1, pairs.max(1));
        let level = crate::simd::active();
        let work = |first: usize, step: usize| {
            crate::ops::with_scratch(nq * nk, |s| {
                let mut pair = first;
                while pair < pairs {
                    let (bi, hi) = (pair / h, pair % h);
                    let bias = if self.bias.is_empty() {
                        None
                    } else {
                        Some(&self.bias[bi * nk..(bi + 1) * nk])
                    };
                    // SAFETY: the views were bounds-checked in `view3`; the output block (rows
                    // bi*nq.., columns hi*dh..hi*dh+dh, row stride d) lies inside `out` and no
                    // other pair writes it.
                    unsafe {
                        attend(
                            Pair {
                                q: q[q0 + bi * qbs + hi * dh..].as_ptr(),
                                q_stride: qrs,
                                k: k[k0 + bi * kbs + hi * dh..].as_ptr(),
                                k_stride: krs,
                                v: v[v0 + bi * vbs + hi * dh..].as_ptr(),
                                v_stride: vrs,
                                out: out_ptr.ptr().add(bi * nq * d + hi * dh),
                                out_stride: d,
                                nq,
                                nk,
                                dh,
                            },
                            scale,
                            bias,
                            false,
                            s,
                            level,
                        );
                    }
                    pair += step;
                }
            })
        };
        crate::ops::run_blocks(threads, true, |t| work(t, threads));
        Ok((CpuStorage::F32(out), Shape::from_dims(&[b, nq, d])))
    }
}

/// One (sample or segment, head) pair of an attention call: where its queries, keys, values
/// and output columns start, their row strides, and the sizes.
struct Pair {
    q: *const f32,
    q_stride: usize,
    k: *const f32,
    k_stride: usize,
    v: *const f32,
    v_stride: usize,
    out: *mut f32,
    out_stride: usize,
    nq: usize,
    nk: usize,
    dh: usize,
}

/// Number of keys query row `r` of `nq` may see out of `nk` under a causal mask (the queries
/// are the last `nq` positions of the `nk`): `nk - nq + r + 1`.
#[inline]
pub(crate) fn causal_keys(r: usize, nq: usize, nk: usize) -> usize {
    (nk + r + 1).saturating_sub(nq).min(nk)
}

/// `out = softmax(scale Q K^T + bias [, causal]) V` for one pair, with the `[nq, nk]` scores in
/// `s` (at least `nq * nk` floats). Masked-out keys (causal) get probability exactly 0.
///
/// # Safety
/// Every pointer of `p` must be valid for the rows and `dh` columns it is read or written at
/// with its stride; no other thread may write the output block; under `causal`, `nk >= nq`.
unsafe fn attend(
    p: Pair,
    scale: f32,
    bias: Option<&[f32]>,
    causal: bool,
    s: &mut [f32],
    level: SimdLevel,
) {
    let Pair {
        q,
        q_stride,
        k,
        k_stride,
        v,
        v_stride,
        out,
        out_stride,
        nq,
        nk,
        dh,
    } = p;
    if nq == 0 {
        return;
    }
    let s = &mut s[..nq * nk];
    // SAFETY: the caller's contract on the pointers; `s` holds nq * nk values.
    unsafe {
        gemm_1t(
            (nq, nk, dh),
            (s.as_mut_ptr(), nk),
            false,
            (q, 1, q_stride),
            (k, k_stride, 1),
            scale,
        );
    }
    for (r, row) in s.chunks_exact_mut(nk).enumerate() {
        if causal {
            let seen = causal_keys(r, nq, nk);
            let (head, tail) = row.split_at_mut(seen);
            softmax_row(head, bias, level);
            tail.fill(0.0);
        } else {
            softmax_row(row, bias, level);
        }
    }
    // SAFETY: as above.
    unsafe {
        gemm_1t(
            (nq, dh, nk),
            (out, out_stride),
            false,
            (s.as_ptr(), 1, nk),
            (v, 1, v_stride),
            1.0,
        );
    }
}

/// A `[N, W]` row view with unit last stride (e.g. a column block of a packed projection).
fn view2<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<(&'a [f32], usize, usize)> {
    let data = match s {
        CpuStorage::F32(d) => d.as_slice(),
        _ => candle::bail!("packed attention {what}: expected f32"),
    };
    let (n, w) = l.shape().dims2()?;
    let st = l.stride();
    if w > 1 && st[1] != 1 {
        candle::bail!("packed attention {what}: last dim must be contiguous, strides {st:?}")
    }
    let start = l.start_offset();
    if n > 0 && start + (n - 1) * st[0] + w > data.len() {
        candle::bail!("packed attention {what}: view out of bounds")
    }
    Ok((&data[start..], st[0], w))
}

/// Attention over variable-length sequences packed row after row (no padding): sequence `i`
/// has query rows `q_offsets[i]..q_offsets[i + 1]` and key / value rows
/// `kv_offsets[i]..kv_offsets[i + 1]`.
pub(crate) struct PackedAttention {
    pub(crate) heads: usize,
    pub(crate) q_offsets: Vec<usize>,
    pub(crate) kv_offsets: Vec<usize>,
    pub(crate) causal: bool,
}

impl CustomOp3 for PackedAttention {
    fn name(&self) -> &'static str {
        "kernels-packed-attention"
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
        let (q, qrs, d) = view2(sq, lq, "q")?;
        let (k, krs, dk) = view2(sk, lk, "k")?;
        let (v, vrs, dv) = view2(sv, lv, "v")?;
        let (nq_all, nk_all) = (lq.dims()[0], lk.dims()[0]);
        let h = self.heads;
        if dk != d || dv != d || lv.dims()[0] != nk_all || h == 0 || d % h != 0 {
            candle::bail!(
                "packed attention: q {:?}, k {:?}, v {:?} with {h} heads do not fit",
                lq.dims(),
                lk.dims(),
                lv.dims()
            )
        }
        check_offsets(
            &self.q_offsets,
            &self.kv_offsets,
            nq_all,
            nk_all,
            self.causal,
        )?;
        let segments = self.q_offsets.len() - 1;
        let dh = d / h;
        let scale = 1.0 / (dh as f32).sqrt();
        let mut out = vec![0f32; nq_all * d];
        let out_ptr = OutPtr(out.as_mut_ptr());
        let scratch = (0..segments)
            .map(|i| {
                (self.q_offsets[i + 1] - self.q_offsets[i])
                    * (self.kv_offsets[i + 1] - self.kv_offsets[i])
            })
            .max()
            .unwrap_or(0);
        let pairs = segments * h;
        let threads = candle::utils::get_num_threads().clamp(1, pairs.max(1));
        let level = crate::simd::active();
        let work = |first: usize| {
            crate::ops::with_scratch(scratch, |s| {
                let mut pair = first;
                while pair < pairs {
                    let (si, hi) = (pair / h, pair % h);
                    let (q_start, k_start) = (self.q_offsets[si], self.kv_offsets[si]);
                    let nq = self.q_offsets[si + 1] - q_start;
                    let nk = self.kv_offsets[si + 1] - k_start;
                    if nq > 0 {
                        // SAFETY: `view2` checked that rows 0..N of every view lie in its data;
                        // `check_offsets` that the segments are in range (and, causal, nk >= nq);
                        // the output block (rows q_start.., columns hi*dh.., stride d) lies in
                        // `out` and belongs to this pair alone.
                        unsafe {
                            attend(
                                Pair {
                                    q: q.as_ptr().add(q_start * qrs + hi * dh),
                                    q_stride: qrs,
                                    k: k.as_ptr().add(k_start * krs + hi * dh),
                                    k_stride: krs,
                                    v: v.as_ptr().add(k_start * vrs + hi * dh),
                                    v_stride: vrs,
                                    out: out_ptr.ptr().add(q_start * d + hi * dh),
                                    out_stride: d,
                                    nq,
                                    nk,
                                    dh,
                                },
                                scale,
                                None,
                                self.causal,
                                s,
                                level,
                            );
                        }
                    }
                    pair += threads;
                }
            })
        };
        crate::ops::run_blocks(threads, pairs > 1, work);
        Ok((CpuStorage::F32(out), Shape::from_dims(&[nq_all, d])))
    }
}

/// Checks cumulative row offsets of the query and key sequences: equally many, from 0,
/// non-decreasing, ending at the row counts; every sequence with queries has keys (causal: at
/// least as many keys as queries).
pub(crate) fn check_offsets(
    q_offsets: &[usize],
    kv_offsets: &[usize],
    nq: usize,
    nk: usize,
    causal: bool,
) -> Result<()> {
    let well_formed = |o: &[usize], n: usize| {
        o.len() >= 2 && o[0] == 0 && o.windows(2).all(|w| w[0] <= w[1]) && o[o.len() - 1] == n
    };
    if q_offsets.len() != kv_offsets.len()
        || !well_formed(q_offsets, nq)
        || !well_formed(kv_offsets, nk)
    {
        candle::bail!(
            "packed attention: offsets {q_offsets:?} (queries, {nq} rows) and {kv_offsets:?} \
             (keys, {nk} rows) must be equally long cumulative row counts from 0 to the row count"
        )
    }
    for (i, (qw, kw)) in q_offsets.windows(2).zip(kv_offsets.windows(2)).enumerate() {
        let (sq, sk) = (qw[1] - qw[0], kw[1] - kw[0]);
        if sq > 0 && (sk == 0 || (causal && sk < sq)) {
            candle::bail!(
                "packed attention: sequence {i} has {sq} queries and {sk} keys (need at least \
                 one key{})",
                if causal {
                    ", and no fewer keys than queries under a causal mask"
                } else {
                    ""
                }
            )
        }
    }
    Ok(())
}

/// Fused inference attention on views `q: [B, Nq, D]`, `k, v: [B, Nk, D]` (last dim
/// contiguous; any batch / row strides), heads split channel-major, optional additive key bias
/// `[B, Nk]`. Returns `[B, Nq, D]`. CPU, `f32`, no gradient.
pub fn fused_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let bias = match bias {
        Some(b) => b.flatten_all()?.to_vec1::<f32>()?,
        None => Vec::new(),
    };
    q.apply_op3_no_bwd(k, v, &FusedAttention { heads, bias })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_within_a_few_ulps() {
        let mut worst = 0f64;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let e = (x as f64).exp();
            worst = worst.max(((exp_f32(x) as f64) - e).abs() / e);
        }
        assert!(worst < 4e-7, "max relative error {worst:e}");
        assert_eq!(exp_f32(-1e30), 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
    }
}
