//! SMPL-H skinning of 197 frames at V = 6890 with full pose blend shapes (the fixture model).
//!
//! `cargo bench -p smpl --bench skinning -- --warm-up-time 1 --measurement-time 5`
//!
//! Two cases: `mean_hands` is the text-to-motion pipeline (body joints vary per frame, both
//! hands hold the model's mean pose, as `motion_repr::rifke::to_body_params` sets them);
//! `all_joints_vary` gives every one of the 51 non-root joints a different rotation per frame
//! (the full `[197, 459] x [459, 20670]` pose blend-shape matmul).

use candle::{Device, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use smpl::rotation::mat3;
use smpl::{BodyModel, BodyParams};

const T: usize = 197;

fn rotations(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    (0..n)
        .flat_map(|_| mat3::axis_angle_to_matrix(&[0.4 * next(), 0.4 * next(), 0.4 * next()]))
        .collect()
}

fn params(model: &BodyModel, vary_hands: bool) -> candle::Result<BodyParams> {
    let dev = Device::Cpu;
    let hand = |aa: &Tensor, seed: u64| -> candle::Result<Tensor> {
        if vary_hands {
            Tensor::from_vec(rotations(T * 15, seed), (T, 15, 3, 3), &dev)
        } else {
            let m = smpl::rotation::axis_angle_to_matrix(&aa.reshape((15, 3))?)
                .map_err(|e| candle::Error::Msg(e.to_string()))?;
            m.unsqueeze(0)?.broadcast_as((T, 15, 3, 3))?.contiguous()
        }
    };
    let (l, r) = model.hands_mean().expect("fixture model has hand means");
    Ok(BodyParams {
        betas: None,
        global_orient: Tensor::from_vec(rotations(T, 1), (T, 3, 3), &dev)?,
        body_pose: Tensor::from_vec(rotations(T * 21, 2), (T, 21, 3, 3), &dev)?,
        left_hand_pose: hand(l, 3)?,
        right_hand_pose: hand(r, 4)?,
        transl: Tensor::zeros((T, 3), candle::DType::F32, &dev)?,
    })
}

fn bench(c: &mut Criterion) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/smplh/SMPLH_NEUTRAL.npz"
    );
    let model = BodyModel::from_npz(path, &Device::Cpu).expect("fixture model");
    let mut g = c.benchmark_group("smplh_skinning_197x6890");
    g.sample_size(20);
    for (name, vary) in [("mean_hands", false), ("all_joints_vary", true)] {
        let p = params(&model, vary).expect("params");
        g.bench_function(name, |b| b.iter(|| model.forward(&p).expect("forward")));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
