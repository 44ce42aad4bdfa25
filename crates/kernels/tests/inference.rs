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
