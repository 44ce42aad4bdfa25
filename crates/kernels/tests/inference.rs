//! Inference kernels added for the text and motion encoders: attention over packed
//! variable-length sequences (optionally causal) and the quick-GELU linear epilogue. Each fused
//! result is compared with the plain candle ops in `f64` (the fallback path of the same
//! function) and across the SIMD paths (paths above what the CPU has fall back, so every
//! machine checks the paths it can run).

use candle::{DType, Device, IndexOp, Tensor};
use kernels::ops::{self, Activation};
use kernels::simd::{SimdLevel, with_simd};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

type Res<T> = anyhow::Result<T>;

fn randn(shape: &[usize], seed: u64, std: f32) -> Res<Tensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            let z: f32 = StandardNormal.sample(&mut rng);
            std * z
        })
        .collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Res<f32> {
    let a = a.to_dtype(DType::F32)?;
    let b = b.to_dtype(DType::F32)?;
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

fn offsets(lens: &[usize]) -> Vec<usize> {
    let mut o = vec![0];
    for l in lens {
        o.push(o[o.len() - 1] + l);
    }
    o
}

/// Packed `[N, 3 D]` projection and its q / k / v column blocks (strided views).
fn packed_qkv(n: usize, d: usize, seed: u64) -> Res<(Tensor, Tensor, Tensor)> {
    let qkv = randn(&[n, 3 * d], seed, 1.0)?;
    Ok((
        qkv.narrow(1, 0, d)?,
        qkv.narrow(1, d, d)?,
        qkv.narrow(1, 2 * d, d)?,
    ))
}

#[test]
fn packed_attention_matches_the_padded_kernel_with_a_key_mask() -> Res<()> {
    let (d, heads) = (16, 4);
    let lens = [3, 7, 1, 5];
    let o = offsets(&lens);
    let n = o[lens.len()];
    let (q, k, v) = packed_qkv(n, d, 1)?;
    let packed = ops::packed_attention(&q, &k, &v, heads, &o, &o, false)?;
    // The same sequences padded to 7 with a -1e9 key bias through the padded fused kernel.
    let l = 7;
    for (i, &len) in lens.iter().enumerate() {
        let pad = |x: &Tensor| -> Res<Tensor> {
            let rows = x.narrow(0, o[i], len)?;
            let zeros = Tensor::zeros((l - len, d), DType::F32, &Device::Cpu)?;
            Ok(Tensor::cat(&[&rows, &zeros], 0)?.unsqueeze(0)?)
        };
        let bias: Vec<f32> = (0..l).map(|j| if j < len { 0.0 } else { -1e9 }).collect();
        let bias = Tensor::from_vec(bias, (1, l), &Device::Cpu)?;
        let padded = ops::attention(&pad(&q)?, &pad(&k)?, &pad(&v)?, heads, Some(&bias))?;
        let diff = max_abs_diff(
            &padded.i(0)?.narrow(0, 0, len)?,
            &packed.narrow(0, o[i], len)?,
        )?;
        assert!(diff < 1e-6, "sequence {i}: {diff:e}");
    }
    Ok(())
}

#[test]
fn packed_attention_matches_plain_f64_ops_on_every_simd_path() -> Res<()> {
    let (d, heads) = (32, 4);
    let lens = [5, 19, 2, 33, 1];
    let o = offsets(&lens);
    let n = o[lens.len()];
    let (q, k, v) = packed_qkv(n, d, 2)?;
    // Two queries per sequence against all its keys (the encoders' last layer), plain and causal.
    let q_lens: Vec<usize> = lens.iter().map(|&l| l.min(2)).collect();
    let qo = offsets(&q_lens);
    let q2 = randn(&[qo[lens.len()], d], 3, 1.0)?;
    let f64s = |t: &Tensor| t.to_dtype(DType::F64);
    for causal in [false, true] {
        for (query, q_off) in [(&q, &o), (&q2, &qo)] {
            let plain = ops::packed_attention(
                &f64s(query)?,
                &f64s(&k)?,
                &f64s(&v)?,
                heads,
                q_off,
                &o,
                causal,
            )?;
            let at = |level| {
                with_simd(level, || {
                    ops::packed_attention(query, &k, &v, heads, q_off, &o, causal)
                })
            };
            let generic = at(SimdLevel::Generic)?;
            for level in [SimdLevel::Generic, SimdLevel::Avx2, SimdLevel::Avx512] {
                let fused = at(level)?;
                let diff = max_abs_diff(&fused, &plain)?;
                assert!(diff < 2e-6, "causal {causal}, {level}: {diff:e} from f64");
                let diff = max_abs_diff(&fused, &generic)?;
                assert!(
                    diff < 1e-6,
                    "causal {causal}, {level}: {diff:e} from generic"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn a_causal_first_query_sees_only_the_first_key() -> Res<()> {
    // By hand: query 0 of a causal sequence has one visible key, so its output is value row 0;
    // the last query of a sequence sees every key, as without the mask.
    let (d, heads) = (8, 2);
    let lens = [4, 6];
    let o = offsets(&lens);
    let (q, k, v) = packed_qkv(10, d, 4)?;
    let causal = ops::packed_attention(&q, &k, &v, heads, &o, &o, true)?;
    let full = ops::packed_attention(&q, &k, &v, heads, &o, &o, false)?;
    for (i, &len) in lens.iter().enumerate() {
        let first = causal.i(o[i])?;
        assert!(max_abs_diff(&first, &v.i(o[i])?)? < 1e-6);
        let last = o[i] + len - 1;
        assert!(max_abs_diff(&causal.i(last)?, &full.i(last)?)? < 1e-6);
    }
    Ok(())
}

#[test]
fn packed_attention_rejects_bad_offsets_naming_them() -> Res<()> {
    let (q, k, v) = packed_qkv(6, 8, 5)?;
    let cases: [(&[usize], &[usize], bool, &str); 5] = [
        (&[0, 3, 5], &[0, 3, 6], false, "cumulative"),
        (&[1, 6], &[1, 6], false, "cumulative"),
        (&[0, 4, 3, 6], &[0, 4, 3, 6], false, "cumulative"),
        (&[0, 6, 6], &[0, 6], false, "equally long"),
        (
            &[0, 3, 6],
            &[0, 1, 6],
            true,
            "sequence 0 has 3 queries and 1 keys",
        ),
    ];
    for (qo, ko, causal, want) in cases {
        let err = ops::packed_attention(&q, &k, &v, 2, qo, ko, causal)
            .err()
            .ok_or_else(|| anyhow::anyhow!("{qo:?} / {ko:?} accepted"))?;
        assert!(err.to_string().contains(want), "{qo:?}: {err}");
    }
    // A sequence with queries but no keys.
    let err = ops::packed_attention(&q, &k, &v, 2, &[0, 3, 6], &[0, 0, 6], false)
        .err()
        .ok_or_else(|| anyhow::anyhow!("a sequence without keys was accepted"))?;
    assert!(err.to_string().contains("at least one key"), "{err}");
    // Heads that do not divide the width.
    assert!(ops::packed_attention(&q, &k, &v, 3, &[0, 6], &[0, 6], false).is_err());
    Ok(())
}

#[test]
fn quick_gelu_linear_matches_plain_f64_on_every_simd_path() -> Res<()> {
    // Inputs spread wide enough to reach the exp clamps of both signs.
    let x = randn(&[37, 24], 6, 3.0)?;
    let w = randn(&[40, 24], 7, 1.0)?;
    let b = randn(&[40], 8, 1.0)?;
    let f64s = |t: &Tensor| t.to_dtype(DType::F64);
    let plain = ops::linear_act(
        &f64s(&x)?,
        &f64s(&w)?,
        &f64s(&b)?,
        Activation::QuickGelu,
        true,
    )?;
    // By hand: quick GELU(z) = z / (1 + exp(-1.702 z)) on the f64 pre-activation.
    let z = f64s(&x)?
        .matmul(&f64s(&w)?.t()?)?
        .broadcast_add(&f64s(&b)?)?;
    let by_hand = (&z / ((z.affine(-1.702, 0.0)?.exp()? + 1.0)?))?;
    assert!(max_abs_diff(&plain, &by_hand)? < 1e-9);
    for level in [SimdLevel::Generic, SimdLevel::Avx2, SimdLevel::Avx512] {
        let fused = with_simd(level, || {
            ops::linear_act(&x, &w, &b, Activation::QuickGelu, true)
        })?;
        let scale = by_hand.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()? as f32;
        let diff = max_abs_diff(&fused, &by_hand)?;
        assert!(diff < 2e-6 * scale.max(1.0), "{level}: {diff:e}");
    }
    Ok(())
}

/// `act(residual + xr wr^T + b)` in `f64` from the bf16-rounded `x` and `w`, with
/// `sum |xr wr|` per output (the scale of the accumulation's rounding error).
fn bf16_reference(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    residual: Option<&Tensor>,
    act: Activation,
) -> Res<(Vec<f64>, Vec<f64>)> {
    let (n, k) = x.dims2()?;
    let out = w.dim(0)?;
    let r = |t: &Tensor| -> Res<Vec<f64>> {
        Ok(t.flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(|v| f64::from(bf16::round_to_bf16(v)))
            .collect())
    };
    let (xv, wv) = (r(x)?, r(w)?);
    let bv = b.to_vec1::<f32>()?;
    let rv = match residual {
        Some(t) => t.flatten_all()?.to_vec1::<f32>()?,
        None => vec![0.0; n * out],
    };
    let (mut z, mut scale) = (vec![0f64; n * out], vec![0f64; n * out]);
    for i in 0..n {
        for o in 0..out {
            let (mut s, mut a) = (0f64, 0f64);
            for j in 0..k {
                s += xv[i * k + j] * wv[o * k + j];
                a += (xv[i * k + j] * wv[o * k + j]).abs();
            }
            z[i * out + o] = s + f64::from(bv[o]) + f64::from(rv[i * out + o]);
            scale[i * out + o] = a + z[i * out + o].abs();
        }
    }
    // The activation by the plain candle ops in f64 (exact erf for GELU).
    let y = act
        .apply_plain(&Tensor::from_vec(z, (n, out), &Device::Cpu)?)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    Ok((y, scale))
}

use kernels::bf16::{self, Bf16Kernel, Bf16Linear};

fn bf16_kernels() -> Vec<Bf16Kernel> {
    let mut k = vec![Bf16Kernel::Emulated, Bf16Kernel::Portable];
    if Bf16Kernel::native_supported() {
        k.push(Bf16Kernel::Native);
    }
    k
}

#[test]
fn bf16_linear_matches_f64_on_rounded_operands_for_every_kernel_and_tail() -> Res<()> {
    // Rows around the native tiles (12, 4, 1), depths with an odd tail, outputs around the
    // 32-column panels and the 4-panel groups.
    let shapes = [
        (1, 1, 1),
        (5, 7, 17),
        (13, 64, 33),
        (29, 65, 130),
        (40, 128, 300),
    ];
    let acts = [
        Activation::Identity,
        Activation::GeluErf,
        Activation::QuickGelu,
    ];
    for (si, &(n, k, out)) in shapes.iter().enumerate() {
        let seed = 100 + 10 * si as u64;
        let x = randn(&[n, k], seed, 1.0)?;
        let w = randn(&[out, k], seed + 1, 0.5)?;
        let b = randn(&[out], seed + 2, 0.5)?;
        let res = randn(&[n, out], seed + 3, 1.0)?;
        let lin = Bf16Linear::new(&w)?;
        assert_eq!(lin.dims(), (out, k));
        for (ai, &act) in acts.iter().enumerate() {
            let residual = (ai == 0).then_some(&res);
            let (want, scale) = bf16_reference(&x, &w, &b, residual, act)?;
            for kernel in bf16_kernels() {
                let got = lin
                    .forward_with(kernel, &x, &b, act, residual)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                assert_eq!(got.len(), want.len());
                for (i, ((g, w), s)) in got.iter().zip(&want).zip(&scale).enumerate() {
                    // f32 accumulation of exact products: a few ulps of the absolute sum.
                    let tol = 4e-6 * (1.0 + s);
                    assert!(
                        (f64::from(*g) - w).abs() <= tol,
                        "{kernel} {act:?} [{n}, {k}] x [{out}, {k}] element {i}: {g} vs {w}"
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn bf16_linear_rounds_the_operands_and_agrees_with_f32_to_bf16_precision() -> Res<()> {
    let x = randn(&[24, 96], 200, 1.0)?;
    let w = randn(&[48, 96], 201, 0.3)?;
    let b = randn(&[48], 202, 0.1)?;
    let full = ops::linear_act(&x, &w, &b, Activation::Identity, true)?;
    let half = Bf16Linear::new(&w)?.forward(&x, &b, Activation::Identity)?;
    let diff = max_abs_diff(&full, &half)?;
    // Two operands each off by at most 2^-8 relatively: |error| <= 2^-7 sum |x w| (about 4.8
    // here); the typical error is far smaller, but it is not zero.
    assert!(
        diff > 1e-5,
        "bf16 product equals the f32 one ({diff:e}): nothing was rounded"
    );
    assert!(diff < 0.05, "bf16 product off by {diff:e}");
    // The rounded weights as f32 are the bf16 values.
    let wr = Bf16Linear::new(&w)?
        .weight_f32()?
        .flatten_all()?
        .to_vec1::<f32>()?;
    for (r, v) in wr.iter().zip(w.flatten_all()?.to_vec1::<f32>()?) {
        assert_eq!(r.to_bits() & 0xffff, 0);
        assert!((r - v).abs() <= v.abs() * 2f32.powi(-8));
    }
    Ok(())
}

#[test]
fn bf16_kernel_choice_follows_the_cpu_and_the_simd_cap() -> Res<()> {
    let auto = Bf16Kernel::auto();
    if Bf16Kernel::native_supported() {
        assert_eq!(
            auto == Bf16Kernel::Native,
            SimdLevel::detected() == SimdLevel::Avx512
        );
    } else {
        assert_eq!(auto, Bf16Kernel::Emulated);
    }
    assert_eq!(
        with_simd(SimdLevel::Avx2, Bf16Kernel::auto),
        Bf16Kernel::Emulated
    );
    Ok(())
}

#[test]
fn bf16_linear_rejects_bad_inputs_naming_them() -> Res<()> {
    let w = randn(&[8, 4], 300, 1.0)?;
    let lin = Bf16Linear::new(&w)?;
    let b = randn(&[8], 301, 1.0)?;
    let msg = |r: candle::Result<Tensor>| r.err().map(|e| e.to_string()).unwrap_or_default();
    let e = msg(lin.forward(&randn(&[3, 5], 302, 1.0)?, &b, Activation::Identity));
    assert!(e.contains("[3, 5]") && e.contains("[8, 4]"), "{e}");
    let e = msg(lin.forward(
        &randn(&[3, 4], 303, 1.0)?,
        &randn(&[7], 304, 1.0)?,
        Activation::Identity,
    ));
    assert!(e.contains("bias [7]"), "{e}");
    let e = msg(lin.forward_residual(&randn(&[3, 4], 305, 1.0)?, &b, &randn(&[2, 8], 306, 1.0)?));
    assert!(e.contains("residual [2, 8]"), "{e}");
    let e = msg(lin.forward_with(
        Bf16Kernel::Emulated,
        &randn(&[3, 4], 310, 1.0)?,
        &b,
        Activation::GeluErf,
        Some(&randn(&[3, 8], 311, 1.0)?),
    ));
    assert!(e.contains("no activation") && e.contains("GeluErf"), "{e}");
    let x64 = randn(&[3, 4], 307, 1.0)?.to_dtype(DType::F64)?;
    let e = msg(lin.forward(&x64, &b, Activation::Identity));
    assert!(e.contains("input is F64"), "{e}");
    if !Bf16Kernel::native_supported() {
        let x = randn(&[3, 4], 308, 1.0)?;
        let e = msg(lin.forward_with(Bf16Kernel::Native, &x, &b, Activation::Identity, None));
        assert!(e.contains("AVX512-BF16"), "{e}");
    }
    let e = Bf16Linear::new(&randn(&[8], 309, 1.0)?)
        .err()
        .map(|e| e.to_string());
    assert!(e.unwrap_or_default().contains("[8]"));
    Ok(())
}
