//! Opt-in bfloat16 products for inference: `act(x W^T + b)` with `W` rounded to bfloat16 once
//! and `x` rounded on every call (round to nearest, ties to even), each product of two bf16
//! values exact in `f32` and the sums accumulated in `f32`, which is what the `vdpbf16ps`
//! instruction computes.
//!
//! Three kernels give these numbers ([`Bf16Kernel`]):
//! - [`Bf16Kernel::Native`]: on CPUs with AVX512-BF16 (AMD Zen 4 / Zen 5, Intel Cooper Lake,
//!   Sapphire Rapids and later), `vdpbf16ps` on the weights packed in pairs of bf16, half the
//!   bytes of `f32` weights and twice the multiply-adds per instruction of `f32` FMA;
//! - [`Bf16Kernel::Emulated`]: elsewhere, `f32` `gemm` on the rounded values: the same result
//!   up to the order of the `f32` additions, at the speed of the `f32` product;
//! - [`Bf16Kernel::Portable`]: the packed layout and the blocking of the native kernel in
//!   portable code, with the native kernel's order of additions. Slow; it exists so that the
//!   packing, the tiling and the edge handling of the native path are tested on every machine.
//!
//! [`Bf16Kernel::auto`] picks the native kernel where the CPU has it and the SIMD level
//! ([`crate::simd`]) is not capped below AVX-512, the emulated one otherwise.
//!
//! The precision is that of bfloat16 inputs: 8 significant bits, a relative rounding error of
//! at most 2^-8 per operand. Attention scores, softmax, LayerNorm and the residual stream stay
//! in `f32`.

use std::sync::OnceLock;

use candle::{CpuStorage, CustomOp1, DType, Device, InplaceOp2, Layout, Result, Shape, Tensor};

use crate::ops::{Activation, OutPtr, contiguous_f32, map_f32, require, run_blocks};
use crate::simd::SimdLevel;

/// Output columns of one packed panel (two AVX-512 registers of `f32`).
const PANEL: usize = 32;
/// Rows of one native micro-tile (12 x 2 accumulator registers).
const TILE_ROWS: usize = 12;
/// Panels computed together over one tile of rows, so that the tile stays in L1 while the
/// panels stream from L2.
const GROUP: usize = 4;

/// `x` rounded to bfloat16 (round to nearest, ties to even; NaN stays NaN), as its bit pattern.
#[inline(always)]
pub fn to_bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        // A quiet NaN of the same sign.
        return ((b >> 16) | 0x0040) as u16;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

/// The `f32` value of a bfloat16 bit pattern (exact).
#[inline(always)]
pub fn bf16_bits_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// `x` rounded to the nearest bfloat16 value, returned as `f32`.
#[inline(always)]
pub fn round_to_bf16(x: f32) -> f32 {
    bf16_bits_to_f32(to_bf16_bits(x))
}

/// Which code computes a bf16 product (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bf16Kernel {
    /// `vdpbf16ps` on packed bf16 pairs (AVX512-BF16 CPUs only).
    Native,
    /// `f32` `gemm` on the rounded values.
    Emulated,
    /// The native kernel's layout and order of additions in portable code (for tests).
    Portable,
}

impl Bf16Kernel {
    /// Whether this CPU has AVX512-BF16 (and AVX-512F), detected once.
    pub fn native_supported() -> bool {
        static NATIVE: OnceLock<bool> = OnceLock::new();
        *NATIVE.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bf16")
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                false
            }
        })
    }

    /// [`Bf16Kernel::Native`] when the CPU supports it and the calling thread's SIMD level
    /// ([`crate::simd::active`]) is AVX-512, else [`Bf16Kernel::Emulated`].
    pub fn auto() -> Bf16Kernel {
        if Self::native_supported() && crate::simd::active() >= SimdLevel::Avx512 {
            Bf16Kernel::Native
        } else {
            Bf16Kernel::Emulated
        }
    }

    /// `native`, `emulated` or `portable`.
    pub fn name(self) -> &'static str {
        match self {
            Bf16Kernel::Native => "native",
            Bf16Kernel::Emulated => "emulated",
            Bf16Kernel::Portable => "portable",
        }
    }
}

impl std::fmt::Display for Bf16Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The weight `W: [out, in]` of a linear layer rounded to bfloat16, with the layouts the
/// kernels read made on first use: bf16 pairs in panels of 32 output columns for the native and
/// portable kernels, the rounded values as an `f32` tensor for the emulated one.
pub struct Bf16Linear {
    out: usize,
    inp: usize,
    /// Row-major `[out, in]` bf16 bit patterns.
    bits: Vec<u16>,
    /// `[ceil(out / 32), ceil(in / 2), 32]` pairs `(W[o][2k], W[o][2k + 1])`, the even
    /// element in the low half; zero-padded.
    panels: OnceLock<Vec<u32>>,
    /// The rounded weights as `f32` `[out, in]` on the CPU.
    wide: OnceLock<Tensor>,
}

impl std::fmt::Debug for Bf16Linear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bf16Linear")
            .field("out", &self.out)
            .field("in", &self.inp)
            .finish_non_exhaustive()
    }
}

impl Bf16Linear {
    /// Rounds `w: [out, in]` (any float dtype, any device; read back to the CPU) to bfloat16.
    ///
    /// # Errors
    /// When `w` is not 2-D with both dimensions at least 1.
    pub fn new(w: &Tensor) -> Result<Bf16Linear> {
        let (out, inp) = match w.dims() {
            &[o, i] if o > 0 && i > 0 => (o, i),
            d => candle::bail!("bf16 linear: weight {d:?}, expected [out, in] with out, in >= 1"),
        };
        let values = w
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Bf16Linear {
            out,
            inp,
            bits: values.iter().map(|&v| to_bf16_bits(v)).collect(),
            panels: OnceLock::new(),
            wide: OnceLock::new(),
        })
    }

    /// Builds the layout `kernel` reads now rather than on its first product (the packed
    /// pairs, or the rounded `f32` weights for [`Bf16Kernel::Emulated`]).
    ///
    /// # Errors
    /// Only from building the `f32` tensor.
    pub fn prepare(&self, kernel: Bf16Kernel) -> Result<()> {
        match kernel {
            Bf16Kernel::Emulated => self.weight_f32().map(|_| ()),
            Bf16Kernel::Native | Bf16Kernel::Portable => {
                self.panels();
                Ok(())
            }
        }
    }

    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.out, self.inp)
    }

    /// The rounded weights as an `f32` tensor `[out, in]` on the CPU.
    ///
    /// # Errors
    /// Only from building the tensor.
    pub fn weight_f32(&self) -> Result<Tensor> {
        if let Some(t) = self.wide.get() {
            return Ok(t.clone());
        }
        let values: Vec<f32> = self.bits.iter().map(|&b| bf16_bits_to_f32(b)).collect();
        let t = Tensor::from_vec(values, (self.out, self.inp), &Device::Cpu)?;
        Ok(self.wide.get_or_init(|| t).clone())
    }

    fn panels(&self) -> &[u32] {
        self.panels.get_or_init(|| {
            let k2 = self.inp.div_ceil(2);
            let np = self.out.div_ceil(PANEL);
            let mut p = vec![0u32; np * k2 * PANEL];
            for o in 0..self.out {
                let (panel, lane) = (o / PANEL, o % PANEL);
                let row = &self.bits[o * self.inp..(o + 1) * self.inp];
                for (kp, pair) in row.chunks(2).enumerate() {
                    let lo = u32::from(pair[0]);
                    let hi = pair.get(1).map_or(0, |&h| u32::from(h));
                    p[(panel * k2 + kp) * PANEL + lane] = lo | (hi << 16);
                }
            }
            p
        })
    }

    /// `act(x W^T + b)` with the kernel of [`Bf16Kernel::auto`].
    ///
    /// # Shapes
    /// `x: [N, in]` (CPU `f32`), `b: [out]` -> `[N, out]`; other shapes are errors.
    pub fn forward(&self, x: &Tensor, b: &Tensor, act: Activation) -> Result<Tensor> {
        self.forward_with(Bf16Kernel::auto(), x, b, act, None)
    }

    /// `residual + x W^T + b` (a linear layer closing a residual branch; the residual is not
    /// rounded) with the kernel of [`Bf16Kernel::auto`].
    ///
    /// # Shapes
    /// `x: [N, in]`, `b: [out]`, `residual: [N, out]` -> `[N, out]` (CPU `f32`).
    pub fn forward_residual(&self, x: &Tensor, b: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.forward_with(
            Bf16Kernel::auto(),
            x,
            b,
            Activation::Identity,
            Some(residual),
        )
    }

    /// `act(x W^T + b)`, or `residual + x W^T + b` (then `act` must be
    /// [`Activation::Identity`]), with a chosen kernel.
    ///
    /// # Errors
    /// When the shapes do not fit, a tensor is not a CPU `f32` tensor, an activation comes with
    /// a residual, or `kernel` is [`Bf16Kernel::Native`] on a CPU without AVX512-BF16.
    pub fn forward_with(
        &self,
        kernel: Bf16Kernel,
        x: &Tensor,
        b: &Tensor,
        act: Activation,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let n = match x.dims() {
            &[n, i] if i == self.inp => n,
            d => candle::bail!(
                "bf16 linear: input {d:?} does not fit the weight [{}, {}]",
                self.out,
                self.inp
            ),
        };
        require(b.dims() == [self.out], "bf16 linear", || {
            format!("bias {:?}, expected [{}]", b.dims(), self.out)
        })?;
        if let Some(r) = residual {
            require(r.dims() == [n, self.out], "bf16 linear", || {
                format!("residual {:?}, expected [{n}, {}]", r.dims(), self.out)
            })?;
            require(act == Activation::Identity, "bf16 linear", || {
                format!("a residual closes a linear layer with no activation, not {act:?}")
            })?;
        }
        for (t, what) in [
            (Some(x), "input"),
            (Some(b), "bias"),
            (residual, "residual"),
        ] {
            if let Some(t) = t {
                require(
                    t.dtype() == DType::F32 && t.device().is_cpu(),
                    "bf16 linear",
                    || {
                        format!(
                            "the {what} is {:?} on {:?}; the bf16 kernels take CPU f32 tensors",
                            t.dtype(),
                            t.device().location()
                        )
                    },
                )?;
            }
        }
        require(
            kernel != Bf16Kernel::Native || Bf16Kernel::native_supported(),
            "bf16 linear",
            || "the native kernel needs a CPU with AVX512-BF16".to_string(),
        )?;
        match kernel {
            Bf16Kernel::Emulated => {
                let xr = round_tensor(x)?;
                let w = self.weight_f32()?;
                match residual {
                    None => crate::ops::linear_act(&xr, &w, b, act, true),
                    Some(r) => crate::ops::linear_residual(&xr, &w, b, r, true),
                }
            }
            Bf16Kernel::Native | Bf16Kernel::Portable => {
                // The accumulator starts as `residual + b` (or `b`) and receives the product.
                let acc = match residual {
                    Some(r) => r.broadcast_add(b)?,
                    None => b.broadcast_as((n, self.out))?.contiguous()?,
                };
                // Both are fresh buffers (`broadcast_add` and `contiguous` of a broadcast
                // allocate), so the in-place update is seen by no other tensor.
                acc.inplace_op2(
                    &x.contiguous()?,
                    &PackedAccumulate {
                        w: self,
                        native: kernel == Bf16Kernel::Native,
                        act,
                    },
                )?;
                Ok(acc)
            }
        }
    }
}

/// A copy of `x` (CPU `f32`) with every value rounded to bfloat16.
///
/// # Errors
/// When `x` is not a CPU `f32` tensor.
pub fn round_tensor(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&RoundBf16)
}

/// Rounds every value to bfloat16 (one pass, rows on the pool's threads).
struct RoundBf16;

impl CustomOp1 for RoundBf16 {
    fn name(&self) -> &'static str {
        "kernels-bf16-round"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        map_f32(
            s,
            l,
            "bf16 rounding input",
            #[inline(always)]
            |x, out| {
                for (o, v) in out.iter_mut().zip(x) {
                    *o = round_to_bf16(*v);
                }
            },
        )
    }
}

/// `dst [N, out] += x [N, in] W^T` with the packed kernels, then `act` in place.
struct PackedAccumulate<'a> {
    w: &'a Bf16Linear,
    native: bool,
    act: Activation,
}

impl InplaceOp2 for PackedAccumulate<'_> {
    fn name(&self) -> &'static str {
        "kernels-bf16-linear"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let x = contiguous_f32(s2, l2, "bf16 linear input")?;
        let (n, d_in) = l2.shape().dims2()?;
        let d_out = self.w.out;
        if d_in != self.w.inp || l1.dims() != [n, d_out] {
            candle::bail!(
                "bf16 linear: input {:?}, accumulator {:?} do not fit the weight [{d_out}, {}]",
                l2.dims(),
                l1.dims(),
                self.w.inp
            )
        }
        let dst = match (s1, l1.contiguous_offsets()) {
            (CpuStorage::F32(d), Some((a, b))) => &mut d[a..b],
            _ => candle::bail!("bf16 linear: the accumulator must be a contiguous f32 tensor"),
        };
        let pairs = pack_rows(x, n, d_in);
        packed_product(
            dst,
            &pairs,
            self.w.panels(),
            n,
            d_in.div_ceil(2),
            d_out,
            self.native,
        );
        crate::ops::activate_in_place(dst, self.act);
        Ok(())
    }
}

/// The rows of `x: [n, k]` rounded to bf16 and packed in pairs: `[n, ceil(k / 2)]`, the even
/// element in the low half, zero-padded.
fn pack_rows(x: &[f32], n: usize, k: usize) -> Vec<u32> {
    let k2 = k.div_ceil(2);
    let mut out = vec![0u32; n * k2];
    let rows_per = 64usize;
    let base = OutPtr(out.as_mut_ptr());
    run_blocks(n.div_ceil(rows_per), n * k > 1 << 16, |t| {
        let r0 = t * rows_per;
        let rows = rows_per.min(n - r0);
        // SAFETY: block t owns rows r0..r0 + rows of `out` ([n, k2] row-major), disjoint from
        // the other blocks'; `out` outlives `run_blocks`.
        let dst = unsafe { std::slice::from_raw_parts_mut(base.ptr().add(r0 * k2), rows * k2) };
        for (i, drow) in dst.chunks_exact_mut(k2).enumerate() {
            let xrow = &x[(r0 + i) * k..(r0 + i + 1) * k];
            for (d, pair) in drow.iter_mut().zip(xrow.chunks(2)) {
                let lo = u32::from(to_bf16_bits(pair[0]));
                let hi = pair.get(1).map_or(0, |&h| u32::from(to_bf16_bits(h)));
                *d = lo | (hi << 16);
            }
        }
    });
    out
}

/// `dst [n, d_out] += A B^T` for `A`: `[n, k2]` bf16 pairs and `B` packed in panels of 32
/// output columns (`[ceil(d_out / 32), k2, 32]` pairs). Groups of [`GROUP`] panels are the units
/// of work handed to the threads; within a group, each tile of [`TILE_ROWS`] rows runs over
/// every panel of the group.
fn packed_product(
    dst: &mut [f32],
    a: &[u32],
    panels: &[u32],
    n: usize,
    k2: usize,
    d_out: usize,
    native: bool,
) {
    if n == 0 || d_out == 0 {
        return;
    }
    debug_assert!(dst.len() == n * d_out && a.len() == n * k2);
    debug_assert!(panels.len() == d_out.div_ceil(PANEL) * k2 * PANEL);
    let n_panels = d_out.div_ceil(PANEL);
    let groups = n_panels.div_ceil(GROUP);
    let dst_ptr = OutPtr(dst.as_mut_ptr());
    run_blocks(groups, n * d_out * k2 > 1 << 17, |g| {
        let mut row0 = 0;
        while row0 < n {
            let rows = TILE_ROWS.min(n - row0);
            for p in g * GROUP..((g + 1) * GROUP).min(n_panels) {
                let col0 = p * PANEL;
                let cols = PANEL.min(d_out - col0);
                let panel = &panels[p * k2 * PANEL..(p + 1) * k2 * PANEL];
                let a_tile = &a[row0 * k2..(row0 + rows) * k2];
                // SAFETY: this group alone writes columns col0..col0 + cols of rows
                // row0..row0 + rows of `dst` ([n, d_out] row-major); the tile functions write
                // only those elements.
                let out = unsafe { dst_ptr.ptr().add(row0 * d_out + col0) };
                if native {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `native` is only set when the CPU has AVX-512F and AVX512-BF16
                    // (checked by `forward_with`); the tile covers `rows` rows of `a_tile`
                    // and `cols` valid columns of `out` with row stride `d_out`.
                    unsafe {
                        native::tile(a_tile, k2, rows, panel, out, d_out, cols)
                    };
                } else {
                    // SAFETY: as above.
                    unsafe { portable_tile(a_tile, k2, rows, panel, out, d_out, cols) };
                }
            }
            row0 += rows;
        }
    });
}

/// The native tile's arithmetic in portable code: for every output, over the pairs in order,
/// `acc += hi(a) hi(b)` then `acc += lo(a) lo(b)` (the order of `vdpbf16ps`), then added to
/// `out`.
///
/// # Safety
/// `out` must be valid for `rows` rows of `cols` elements with row stride `ld`.
unsafe fn portable_tile(
    a: &[u32],
    k2: usize,
    rows: usize,
    panel: &[u32],
    out: *mut f32,
    ld: usize,
    cols: usize,
) {
    let hi = |v: u32| f32::from_bits(v & 0xffff_0000);
    let lo = |v: u32| f32::from_bits(v << 16);
    for r in 0..rows {
        let arow = &a[r * k2..(r + 1) * k2];
        for j in 0..cols {
            let mut acc = 0f32;
            for (kp, &av) in arow.iter().enumerate() {
                let bv = panel[kp * PANEL + j];
                acc += hi(av) * hi(bv);
                acc += lo(av) * lo(bv);
            }
            // SAFETY: (r, j) lies inside the caller's rows x cols block.
            unsafe { *out.add(r * ld + j) += acc };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod native {
    use std::arch::x86_64::*;

    use super::{PANEL, TILE_ROWS};

    /// `out[r][j] += sum_kp dot(a[r][kp], panel[kp][j])` for `rows <= 12` rows and
    /// `cols <= 32` columns, in micro-tiles of 12, 4 and 1 rows.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and AVX512-BF16; `out` must be valid for `rows` rows of
    /// `cols` elements with row stride `ld`; `a` holds `rows` rows of `k2` pairs and `panel`
    /// `k2 * 32` pairs.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn tile(
        a: &[u32],
        k2: usize,
        rows: usize,
        panel: &[u32],
        out: *mut f32,
        ld: usize,
        cols: usize,
    ) {
        debug_assert!(rows <= TILE_ROWS && cols <= PANEL && a.len() >= rows * k2);
        debug_assert!(panel.len() >= k2 * PANEL);
        let mut r = 0;
        // SAFETY (all three calls): rows r..r + R of `a` and `out` exist (r + R <= rows).
        unsafe {
            while r + TILE_ROWS <= rows {
                micro::<TILE_ROWS>(a.as_ptr().add(r * k2), k2, panel, out.add(r * ld), ld, cols);
                r += TILE_ROWS;
            }
            while r + 4 <= rows {
                micro::<4>(a.as_ptr().add(r * k2), k2, panel, out.add(r * ld), ld, cols);
                r += 4;
            }
            while r < rows {
                micro::<1>(a.as_ptr().add(r * k2), k2, panel, out.add(r * ld), ld, cols);
                r += 1;
            }
        }
    }

    /// `R` rows by 32 columns held in `2 R` accumulator registers over the whole depth.
    #[inline(always)]
    unsafe fn micro<const R: usize>(
        a: *const u32,
        k2: usize,
        panel: &[u32],
        out: *mut f32,
        ld: usize,
        cols: usize,
    ) {
        // SAFETY: the caller guarantees AVX-512F / AVX512-BF16 and the extents documented on
        // `tile`; masked loads and stores touch only the first `cols` columns of each row.
        unsafe {
            let mut acc0 = [_mm512_setzero_ps(); R];
            let mut acc1 = [_mm512_setzero_ps(); R];
            let b = panel.as_ptr();
            for kp in 0..k2 {
                let b0: __m512bh =
                    std::mem::transmute(_mm512_loadu_epi32(b.add(kp * PANEL) as *const i32));
                let b1: __m512bh =
                    std::mem::transmute(_mm512_loadu_epi32(b.add(kp * PANEL + 16) as *const i32));
                for r in 0..R {
                    let av: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*a.add(r * k2 + kp) as i32));
                    acc0[r] = _mm512_dpbf16_ps(acc0[r], av, b0);
                    acc1[r] = _mm512_dpbf16_ps(acc1[r], av, b1);
                }
            }
            let m0: __mmask16 = if cols >= 16 {
                0xffff
            } else {
                (1u16 << cols) - 1
            };
            let rest = cols.saturating_sub(16);
            let m1: __mmask16 = if rest >= 16 {
                0xffff
            } else {
                (1u16 << rest) - 1
            };
            for r in 0..R {
                let o = out.add(r * ld);
                let v = _mm512_maskz_loadu_ps(m0, o);
                _mm512_mask_storeu_ps(o, m0, _mm512_add_ps(v, acc0[r]));
                if rest > 0 {
                    let o1 = o.add(16);
                    let v = _mm512_maskz_loadu_ps(m1, o1);
                    _mm512_mask_storeu_ps(o1, m1, _mm512_add_ps(v, acc1[r]));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even() {
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
        assert_eq!(round_to_bf16(1.0 + 2f32.powi(-8)), 1.0);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: to the even one, 1 + 2^-6.
        assert_eq!(
            round_to_bf16(1.0 + 3.0 * 2f32.powi(-8)),
            1.0 + 2f32.powi(-6)
        );
        // Just above the halfway point rounds up.
        assert_eq!(
            round_to_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)),
            1.0 + 2f32.powi(-7)
        );
        assert_eq!(round_to_bf16(-2.5), -2.5);
        assert!(round_to_bf16(f32::NAN).is_nan());
        assert_eq!(round_to_bf16(f32::INFINITY), f32::INFINITY);
        assert_eq!(round_to_bf16(f32::MAX), f32::INFINITY);
    }
}
