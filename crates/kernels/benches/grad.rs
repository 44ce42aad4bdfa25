//! Forward and forward + backward of the differentiable kernels at the reference DiT size
//! (8 x 197 tokens, D = 512, 16 heads, MLP 2048), next to the plain candle ops they replace.
//!
//! Run: `cargo bench -p kernels --bench grad -- --warm-up-time 1 --measurement-time 3`.

use candle::{Device, Tensor, Var};
use criterion::{Criterion, criterion_group, criterion_main};
use kernels::grad;

type Op = Box<dyn Fn(&[Tensor]) -> candle::Result<Tensor>>;

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let (b, n, d, h, hid) = (8, 197, 512, 16, 2048);
    let r = |s: &[usize]| Tensor::randn(0f32, 1.0, s, &dev).expect("randn");
    let mut bias = vec![0f32; b * n];
    for j in n - 40..n {
        bias[3 * n + j] = -1e30;
        bias[7 * n + j] = -1e30;
    }
    let bias = Tensor::from_vec(bias, (b, n), &dev).expect("bias");
    let cases: Vec<(&str, Vec<Tensor>, Op, Op)> = vec![
        (
            "attention",
            vec![r(&[b, n, 3 * d])],
            Box::new({
                let bias = bias.clone();
                move |t| {
                    let q = &t[0];
                    grad::attention(
                        &q.narrow(2, 0, d)?,
                        &q.narrow(2, d, d)?,
                        &q.narrow(2, 2 * d, d)?,
                        h,
                        Some(&bias),
                        None,
                    )
                }
            }),
            Box::new({
                let bias = bias.clone();
                move |t| {
                    let split = |x: Tensor| -> candle::Result<Tensor> {
                        x.reshape((b, n, h, d / h))?
                            .transpose(1, 2)?
                            .contiguous()?
                            .reshape((b * h, n, d / h))
                    };
                    let qkv = &t[0];
                    let q = split(qkv.narrow(2, 0, d)?)?;
                    let k = split(qkv.narrow(2, d, d)?)?;
                    let v = split(qkv.narrow(2, 2 * d, d)?)?;
                    let s = ((q * (1.0 / ((d / h) as f64).sqrt()))?.matmul(&k.t()?)?)
                        .reshape((b, h, n, n))?;
                    kernels::ops::attention_softmax(&s, Some(&bias), false)?
                        .reshape((b * h, n, n))?
                        .matmul(&v)?
                        .reshape((b, h, n, d / h))?
                        .transpose(1, 2)?
                        .reshape((b, n, d))
                }
            }),
        ),
        (
            "ln_modulate",
            vec![r(&[b, n, d]), r(&[b, d]), r(&[b, d])],
            Box::new(|t| grad::ln_modulate(&t[0], &t[1], &t[2], 1e-6)),
            Box::new(|t| kernels::ops::ln_modulate(&t[0], &t[1], &t[2], 1e-6, false)),
        ),
        (
            "linear_gelu_fc1",
            vec![r(&[b * n, d]), r(&[hid, d]), r(&[hid])],
            Box::new(|t| grad::linear(&t[0], &t[1], &t[2], true)),
            Box::new(|t| kernels::ops::linear(&t[0], &t[1], &t[2], true, false)),
        ),
        (
            "gated_residual",
            vec![r(&[b, n, d]), r(&[b, n, d]), r(&[b, d])],
            Box::new(|t| grad::gated_residual(&t[0], &t[1], &t[2])),
            Box::new(|t| kernels::ops::gated_residual(&t[0], &t[1], &t[2], false)),
        ),
    ];
    let mut g = c.benchmark_group("grad");
    g.sample_size(10);
    for (name, inputs, fused, plain) in &cases {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(t).expect("var"))
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        for (kind, f) in [("fused", fused), ("candle", plain)] {
            g.bench_function(format!("{name}/{kind}/forward"), |bch| {
                bch.iter(|| f(&ts).expect("forward"))
            });
            g.bench_function(format!("{name}/{kind}/forward_backward"), |bch| {
                bch.iter(|| {
                    f(&ts)
                        .and_then(|y| y.sum_all())
                        .and_then(|l| l.backward())
                        .expect("backward")
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
