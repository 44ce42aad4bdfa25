//! Backward kernels of `kernels::grad`: every gradient is compared with candle's generic
//! differentiable ops (autograd on the plain path, `f32`), with central finite differences of the
//! plain ops in `f64`, and across the SIMD paths (AVX-512, AVX2, generic; paths above what the CPU
//! has fall back, so every machine checks the paths it can run).

use candle::{DType, Device, Tensor, Var};
use kernels::grad;
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

type OpFn = Box<dyn Fn(&[Tensor]) -> candle::Result<Tensor>>;

/// An operation under test: the fused form and the plain differentiable form of the same maths
/// (the plain one also runs in `f64`).
struct Case {
    name: &'static str,
    inputs: Vec<Tensor>,
    fused: OpFn,
    plain: OpFn,
}

/// Output and input gradients of `sum(f(inputs) * r)`.
fn run(
    f: &dyn Fn(&[Tensor]) -> candle::Result<Tensor>,
    inputs: &[Tensor],
    r_seed: u64,
) -> Res<(Tensor, Vec<Tensor>)> {
    let vars: Vec<Var> = inputs
        .iter()
        .map(Var::from_tensor)
        .collect::<candle::Result<_>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&ts)?;
    let r = randn(out.dims(), r_seed, 1.0)?.to_dtype(out.dtype())?;
    let loss = (&out * &r)?.sum_all()?;
    let grads = loss.backward()?;
    let gs = ts
        .iter()
        .map(|t| {
            grads
                .get(t)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("no gradient"))
        })
        .collect::<Res<Vec<_>>>()?;
    Ok((out, gs))
}

/// Largest `|a - e| / (scale + |e|)` with `scale` the largest `|e|`.
fn rel_diff(a: &Tensor, e: &Tensor) -> Res<f64> {
    let (a, e) = (a.to_dtype(DType::F64)?, e.to_dtype(DType::F64)?);
    let scale = e
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()?
        .max(1e-12);
    let d = (a - &e)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
    Ok(d / scale)
}

fn cases() -> Res<Vec<Case>> {
    let (b, n, d, nk, heads) = (2, 13, 40, 11, 4);
    let mut cases = vec![Case {
        name: "layer_norm",
        inputs: vec![
            randn(&[b, n, d], 1, 1.5)?.affine(1.0, 0.3)?,
            randn(&[d], 2, 0.3)?.affine(1.0, 1.0)?,
            randn(&[d], 3, 1.0)?,
        ],
        fused: Box::new(|t| grad::layer_norm(&t[0], &t[1], &t[2], 1e-6)),
        plain: Box::new(|t| kernels::ops::layer_norm(&t[0], Some((&t[1], &t[2])), 1e-6, false)),
    }];
    cases.push(Case {
        name: "ln_modulate",
        inputs: vec![
            randn(&[b, n, d], 4, 1.5)?,
            randn(&[b, d], 5, 0.3)?,
            randn(&[b, d], 6, 1.0)?,
        ],
        fused: Box::new(|t| grad::ln_modulate(&t[0], &t[1], &t[2], 1e-6)),
        plain: Box::new(|t| kernels::ops::ln_modulate(&t[0], &t[1], &t[2], 1e-6, false)),
    });
    cases.push(Case {
        name: "gated_residual",
        inputs: vec![
            randn(&[b, n, d], 7, 1.0)?,
            randn(&[b, n, d], 8, 1.0)?,
            randn(&[b, d], 9, 1.0)?,
        ],
        fused: Box::new(|t| grad::gated_residual(&t[0], &t[1], &t[2])),
        plain: Box::new(|t| kernels::ops::gated_residual(&t[0], &t[1], &t[2], false)),
    });
    // Wide inputs (std 3) reach the GELU tails.
    cases.push(Case {
        name: "gelu_erf",
        inputs: vec![randn(&[b * n, d], 10, 3.0)?],
        fused: Box::new(|t| grad::gelu_erf(&t[0])),
        plain: Box::new(|t| t[0].gelu_erf()),
    });
    for gelu in [false, true] {
        cases.push(Case {
            name: if gelu { "linear_gelu" } else { "linear" },
            inputs: vec![
                randn(&[b * n, d], 11, 1.0)?,
                randn(&[3 * d, d], 12, 0.2)?,
                randn(&[3 * d], 13, 1.0)?,
            ],
            fused: Box::new(move |t| grad::linear(&t[0], &t[1], &t[2], gelu)),
            plain: Box::new(move |t| kernels::ops::linear(&t[0], &t[1], &t[2], gelu, false)),
        });
    }
    // GELU and dropout fused into the linear node.
    let keep: Vec<f32> = (0..b * n * 3 * d)
        .map(|i| if i % 5 == 2 { 0.0 } else { 1.0 / 0.8 })
        .collect();
    let k2 = keep.clone();
    cases.push(Case {
        name: "linear_gelu_dropout",
        inputs: vec![
            randn(&[b * n, d], 22, 1.0)?,
            randn(&[3 * d, d], 23, 0.2)?,
            randn(&[3 * d], 24, 1.0)?,
        ],
        fused: Box::new(move |t| {
            grad::linear_gelu_dropout(&t[0], &t[1], &t[2], Some(keep.clone()))
        }),
        plain: Box::new(move |t| {
            let m = Tensor::from_vec(k2.clone(), (b * n, 3 * d), &Device::Cpu)?
                .to_dtype(t[0].dtype())?;
            kernels::ops::linear(&t[0], &t[1], &t[2], true, false)?.mul(&m)
        }),
    });
    // Large enough for the products to be split over threads.
    cases.push(Case {
        name: "linear_threaded",
        inputs: vec![
            randn(&[300, 64], 18, 1.0)?,
            randn(&[160, 64], 19, 0.2)?,
            randn(&[160], 20, 1.0)?,
        ],
        fused: Box::new(|t| grad::linear(&t[0], &t[1], &t[2], false)),
        plain: Box::new(|t| kernels::ops::linear(&t[0], &t[1], &t[2], false, false)),
    });
    for (name, group) in [("mask_mul_elements", 1), ("mask_mul_samples", n * d)] {
        let count = b * n * d / group;
        let mask: Vec<f32> = (0..count)
            .map(|i| if i % 3 == 1 { 0.0 } else { 1.0 / 0.9 })
            .collect();
        let m2 = mask.clone();
        cases.push(Case {
            name,
            inputs: vec![randn(&[b, n, d], 17, 1.0)?],
            fused: Box::new(move |t| grad::mask_mul(&t[0], mask.clone(), group)),
            plain: Box::new(move |t| {
                let m = Tensor::from_vec(m2.clone(), (count, 1), &Device::Cpu)?
                    .to_dtype(t[0].dtype())?;
                t[0].reshape((count, group))?
                    .broadcast_mul(&m)?
                    .reshape(t[0].shape())
            }),
        });
    }
    // Attention on thirds of a packed projection (strided views), with a key mask (the last 4
    // keys of sample 1 excluded, as the models do: finite -1e30 bias) and dropout multipliers.
    let mut kb = vec![0f32; b * nk];
    for j in nk - 4..nk {
        kb[nk + j] = -1e30;
    }
    let key_bias = Tensor::from_vec(kb, (b, nk), &Device::Cpu)?;
    let mut rng = StdRng::seed_from_u64(14);
    let keep: Vec<f32> = (0..b * heads * n * nk)
        .map(|_| {
            let u: f32 = StandardNormal.sample(&mut rng);
            if u < -1.2 { 0.0 } else { 1.0 / 0.9 }
        })
        .collect();
    for (name, bias, keep) in [
        ("attention", None, None),
        ("attention_masked", Some(key_bias.clone()), None),
        ("attention_masked_dropout", Some(key_bias), Some(keep)),
    ] {
        let (b1, k1) = (bias.clone(), keep.clone());
        let (b2, k2) = (bias, keep);
        cases.push(Case {
            name,
            inputs: vec![
                randn(&[b, n, d], 15, 1.0)?,
                randn(&[b, nk, 2 * d], 16, 1.0)?,
            ],
            fused: Box::new(move |t| {
                let kv = &t[1];
                let (k, v) = (kv.narrow(2, 0, d)?, kv.narrow(2, d, d)?);
                grad::attention(&t[0], &k, &v, heads, b1.as_ref(), k1.clone())
            }),
            plain: Box::new(move |t| {
                let kv = &t[1];
                let (k, v) = (kv.narrow(2, 0, d)?, kv.narrow(2, d, d)?);
                let bias = match &b2 {
                    Some(x) => Some(x.to_dtype(t[0].dtype())?),
                    None => None,
                };
                // The plain path of `grad::attention` (taken for non-f32 tensors).
                let keep = k2.clone();
                attention_plain(&t[0], &k, &v, heads, bias.as_ref(), keep)
            }),
        });
    }
    // Self-attention on a packed [q | k | v] projection, masked, with dropout.
    let mut kb = vec![0f32; b * n];
    kb[n - 3..n].fill(-1e30);
    let self_bias = Tensor::from_vec(kb, (b, n), &Device::Cpu)?;
    let keep: Vec<f32> = (0..b * heads * n * n)
        .map(|i| if i % 7 == 3 { 0.0 } else { 1.0 / 0.9 })
        .collect();
    let (b1, k1, b2, k2) = (self_bias.clone(), keep.clone(), self_bias, keep);
    cases.push(Case {
        name: "self_attention_packed",
        inputs: vec![randn(&[b, n, 3 * d], 21, 1.0)?],
        fused: Box::new(move |t| grad::self_attention(&t[0], heads, Some(&b1), Some(k1.clone()))),
        plain: Box::new(move |t| {
            let x = &t[0];
            let bias = b2.to_dtype(x.dtype())?;
            attention_plain(
                &x.narrow(2, 0, d)?,
                &x.narrow(2, d, d)?,
                &x.narrow(2, 2 * d, d)?,
                heads,
                Some(&bias),
                Some(k2.clone()),
            )
        }),
    });
    Ok(cases)
}

/// Plain candle attention in any float dtype (the reference for the fused kernel).
fn attention_plain(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    bias: Option<&Tensor>,
    keep: Option<Vec<f32>>,
) -> candle::Result<Tensor> {
    let (b, nq, d) = q.dims3()?;
    let nk = k.dim(1)?;
    let dh = d / heads;
    let split = |x: &Tensor, n: usize| -> candle::Result<Tensor> {
        x.contiguous()?
            .reshape((b, n, heads, dh))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * heads, n, dh))
    };
    let (qh, kh, vh) = (split(q, nq)?, split(k, nk)?, split(v, nk)?);
    let mut logits = (qh * (1.0 / (dh as f64).sqrt()))?
        .matmul(&kh.t()?)?
        .reshape((b, heads, nq, nk))?;
    if let Some(bias) = bias {
        logits = logits.broadcast_add(&bias.reshape((b, 1, 1, nk))?)?;
    }
    let mut p = candle_nn::ops::softmax(&logits, candle::D::Minus1)?;
    if let Some(keep) = keep {
        let m = Tensor::from_vec(keep, p.shape(), p.device())?.to_dtype(p.dtype())?;
        p = p.mul(&m)?;
    }
    p.reshape((b * heads, nq, nk))?
        .matmul(&vh)?
        .reshape((b, heads, nq, dh))?
        .transpose(1, 2)?
        .reshape((b, nq, d))
}

#[test]
fn backward_kernels_match_candle_autograd() -> Res<()> {
    for case in cases()? {
        let (out_f, g_f) = run(&*case.fused, &case.inputs, 99)?;
        let (out_p, g_p) = run(&*case.plain, &case.inputs, 99)?;
        let e = rel_diff(&out_f, &out_p)?;
        assert!(e < 2e-5, "{}: forward differs by {e:e}", case.name);
        for (i, (a, p)) in g_f.iter().zip(&g_p).enumerate() {
            assert_eq!(a.dims(), p.dims(), "{}: gradient {i} shape", case.name);
            let e = rel_diff(a, p)?;
            eprintln!("{}: gradient {i} within {e:.1e} of candle's", case.name);
            assert!(e < 5e-5, "{}: gradient {i} differs by {e:e}", case.name);
        }
    }
    Ok(())
}

/// The directional derivative `<grad, u>` of `L = sum(f(x) r)` from the fused backward against
/// a central finite difference of the plain ops in `f64` (step 1e-4: truncation ~1e-8).
#[test]
fn backward_kernels_match_f64_finite_differences() -> Res<()> {
    for case in cases()? {
        let (out, g) = run(&*case.fused, &case.inputs, 7)?;
        let r = randn(out.dims(), 7, 1.0)?.to_dtype(DType::F64)?;
        let dirs: Vec<Tensor> = case
            .inputs
            .iter()
            .enumerate()
            .map(|(i, t)| randn(t.dims(), 1000 + i as u64, 1.0))
            .collect::<Res<_>>()?;
        let mut analytic = 0f64;
        for (gi, u) in g.iter().zip(&dirs) {
            analytic += (gi.to_dtype(DType::F64)? * u.to_dtype(DType::F64)?)?
                .sum_all()?
                .to_scalar::<f64>()?;
        }
        let eps = 1e-4;
        let loss_at = |s: f64| -> Res<f64> {
            let xs: Vec<Tensor> = case
                .inputs
                .iter()
                .zip(&dirs)
                .map(|(t, u)| Ok((t.to_dtype(DType::F64)? + (u.to_dtype(DType::F64)? * s)?)?))
                .collect::<Res<_>>()?;
            Ok(((case.plain)(&xs)? * &r)?.sum_all()?.to_scalar::<f64>()?)
        };
        let numeric = (loss_at(eps)? - loss_at(-eps)?) / (2.0 * eps);
        let err = (analytic - numeric).abs() / numeric.abs().max(1.0);
        eprintln!(
            "{}: <grad, u> {analytic:.6}, finite difference {numeric:.6}",
            case.name
        );
        assert!(
            err < 1e-4,
            "{}: <grad, u> = {analytic}, finite difference {numeric} (rel. error {err:e})",
            case.name
        );
    }
    Ok(())
}

#[test]
fn every_simd_path_gives_the_same_gradients() -> Res<()> {
    for case in cases()? {
        let at = |level: SimdLevel| with_simd(level, || run(&*case.fused, &case.inputs, 5));
        let (out_g, g_g) = at(SimdLevel::Generic)?;
        for level in [SimdLevel::Avx2, SimdLevel::Avx512] {
            let (out, g) = at(level)?;
            let e = rel_diff(&out, &out_g)?;
            assert!(
                e < 2e-6,
                "{} on {level}: forward differs by {e:e}",
                case.name
            );
            for (i, (a, b)) in g.iter().zip(&g_g).enumerate() {
                let e = rel_diff(a, b)?;
                assert!(
                    e < 2e-5,
                    "{} on {level}: gradient {i} differs by {e:e}",
                    case.name
                );
            }
        }
    }
    Ok(())
}

#[test]
fn shapes_that_do_not_fit_are_errors() -> Res<()> {
    let x = randn(&[2, 3, 8], 1, 1.0)?;
    let w = randn(&[8], 2, 1.0)?;
    assert!(grad::layer_norm(&x, &randn(&[7], 3, 1.0)?, &w, 1e-6).is_err());
    assert!(
        grad::ln_modulate(&x, &randn(&[3, 8], 3, 1.0)?, &randn(&[2, 8], 4, 1.0)?, 1e-6).is_err()
    );
    assert!(grad::gated_residual(&x, &x, &randn(&[2, 7], 5, 1.0)?).is_err());
    let x2 = x.reshape((6, 8))?;
    assert!(grad::linear(&x2, &randn(&[4, 7], 6, 1.0)?, &randn(&[4], 7, 1.0)?, false).is_err());
    assert!(grad::attention(&x, &x, &x, 3, None, None).is_err());
    assert!(grad::attention(&x, &x, &x, 2, Some(&randn(&[2, 4], 8, 1.0)?), None).is_err());
    assert!(grad::attention(&x, &x, &x, 2, None, Some(vec![1.0; 5])).is_err());
    assert!(grad::self_attention(&x, 2, None, None).is_err());
    let qkv = randn(&[2, 3, 24], 9, 1.0)?;
    assert!(grad::self_attention(&qkv, 3, None, None).is_err());
    assert!(grad::self_attention(&qkv, 2, Some(&randn(&[2, 4], 8, 1.0)?), None).is_err());
    let w4 = randn(&[4, 8], 10, 1.0)?;
    let b4 = randn(&[4], 11, 1.0)?;
    let short = grad::linear_gelu_dropout(&x2, &w4, &b4, Some(vec![1.0; 23]));
    assert!(short.is_err_and(|e| e.to_string().contains("23 dropout multipliers")));
    assert!(grad::linear_gelu_dropout(&x2, &w4, &b4, Some(vec![1.0; 24])).is_ok());
    Ok(())
}

/// Dropout masks: the documented counter-based scheme (one key from the caller's generator,
/// block `i` from stream `i` of ChaCha8 keyed by it) re-derived here block by block, so the
/// mask cannot depend on how the blocks were spread over threads; rate and values as asked.
#[test]
fn dropout_masks_follow_the_counter_based_scheme() -> Res<()> {
    use rand::{Rng, RngCore};
    const BLOCK: usize = 1 << 14;
    let (n, p) = (5 * BLOCK + 1234, 0.1);
    let mut rng = StdRng::seed_from_u64(7);
    let mask = grad::dropout_keep(&mut rng, n, p).ok_or_else(|| anyhow::anyhow!("no mask"))?;
    assert_eq!(mask.len(), n);
    let key = StdRng::seed_from_u64(7).next_u64();
    let threshold = (p * 4_294_967_296.0).round() as u64;
    let keep = (1.0 / (1.0 - p)) as f32;
    for (i, block) in mask.chunks(BLOCK).enumerate() {
        let mut stream = rand_chacha::ChaCha8Rng::seed_from_u64(key);
        stream.set_stream(i as u64);
        for (j, &m) in block.iter().enumerate() {
            let r: u32 = stream.random();
            let want = if u64::from(r) < threshold { 0.0 } else { keep };
            assert_eq!(m, want, "block {i}, element {j}");
        }
    }
    let dropped = mask.iter().filter(|&&m| m == 0.0).count() as f64 / n as f64;
    assert!((dropped - p).abs() < 0.005, "dropped fraction {dropped}");
    // The caller's generator advanced by exactly one draw; p = 0 draws nothing.
    let mut after = StdRng::seed_from_u64(7);
    after.next_u64();
    assert_eq!(rng.next_u64(), after.next_u64());
    assert!(grad::dropout_keep(&mut rng, n, 0.0).is_none());
    let all = grad::dropout_keep(&mut rng, 100, 1.0).ok_or_else(|| anyhow::anyhow!("no mask"))?;
    assert!(all.iter().all(|&m| m == 0.0));
    Ok(())
}

/// A sample whose keys are all masked (finite `-1e30` bias, as the models use) averages its
/// values uniformly instead of giving NaN, forward and backward.
#[test]
fn a_fully_masked_row_stays_finite() -> Res<()> {
    let (b, n, d, heads) = (2, 5, 8, 2);
    let mut kb = vec![0f32; b * n];
    kb[n..].fill(-1e30);
    let bias = Tensor::from_vec(kb, (b, n), &Device::Cpu)?;
    let qkv = Var::from_tensor(&randn(&[b, n, 3 * d], 3, 1.0)?)?;
    let out = grad::self_attention(qkv.as_tensor(), heads, Some(&bias), None)?;
    let v = qkv.as_tensor().narrow(2, 2 * d, d)?.get(1)?;
    let mean = v.mean_keepdim(0)?.broadcast_as((n, d))?;
    assert!(rel_diff(&out.get(1)?, &mean)? < 1e-6);
    let g = out.sqr()?.sum_all()?.backward()?;
    let gq = g
        .get(qkv.as_tensor())
        .ok_or_else(|| anyhow::anyhow!("no gradient"))?;
    let total = gq.abs()?.sum_all()?.to_scalar::<f32>()?;
    assert!(total.is_finite() && total > 0.0);
    Ok(())
}
