//! Motion video throughput: a 197-frame procedural walk of the open body (13,380 vertices,
//! 26,756 triangles, skinned by `smpl::BodyModel::forward` outside the timed loop) rendered at
//! 320 x 320 with the default video options (2 x 2 supersampling, following camera, ground grid,
//! shadow, trajectory, caption) and encoded as a GIF.
//!
//! ```text
//! cargo bench -p motion-viz --bench video -- --warm-up-time 1 --measurement-time 10
//! ```
//!
//! - `gif_197_frames_320`: render all frames (parallel) + write the GIF (global palette,
//!   parallel quantisation and LZW);
//! - `render_197_frames_320` / `gif_encode_197_frames_320`: the two halves;
//! - `gif_crate_from_rgb_speed{10,1}_one_frame_320`: one frame through the gif crate's per-frame
//!   NeuQuant (`Frame::from_rgb_speed`), what `write_gif` did before, for comparison.

#[path = "../examples/common/walk.rs"]
mod walk;

use criterion::{Criterion, criterion_group, criterion_main};
use motion_viz::{
    Motion, MotionRenderer, PointSequence, VideoOptions, bones_from_parents, faces_from_tensor,
};

fn bench(c: &mut Criterion) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../assets/open_body/smplh_open.npz"
    );
    let model = smpl::BodyModel::from_npz(path, &candle::Device::Cpu).expect("open body asset");
    let faces = faces_from_tensor(model.faces()).expect("faces");
    let parents: Vec<i64> = smpl::Skeleton::SmplH
        .parents()
        .iter()
        .map(|&p| i64::from(p))
        .collect();
    let bones = bones_from_parents(&parents);
    let posed = walk::posed_walk(&model, 197, 20.0, 0.6).expect("walk");
    let vertices = PointSequence::from_tensor(&posed.vertices).expect("vertices");
    let joints = PointSequence::from_tensor(&posed.joints).expect("joints");
    let motion = Motion::mesh(vertices, &faces)
        .and_then(|m| m.with_skeleton(joints, &bones))
        .expect("motion");
    let opts = VideoOptions {
        width: 320,
        height: 320,
        caption: Some("a person walks forward along a winding path".into()),
        ..VideoOptions::z_up()
    };
    let out = std::env::temp_dir().join(format!("motion-viz-bench-{}.gif", std::process::id()));

    let mut group = c.benchmark_group("video");
    group.sample_size(10);
    group.bench_function("gif_197_frames_320", |b| {
        b.iter(|| {
            let frames = MotionRenderer::new(&motion, &opts)
                .and_then(|r| r.render_all())
                .expect("render");
            motion_viz::write_gif(&out, &frames, 20.0).expect("gif");
        })
    });
    let renderer = MotionRenderer::new(&motion, &opts).expect("renderer");
    group.bench_function("render_197_frames_320", |b| {
        b.iter(|| renderer.render_all().expect("render"))
    });
    let frames = renderer.render_all().expect("render");
    group.bench_function("gif_encode_197_frames_320", |b| {
        b.iter(|| motion_viz::write_gif(&out, &frames, 20.0).expect("gif"))
    });
    for speed in [10, 1] {
        let img = &frames[frames.len() / 2];
        group.bench_function(
            format!("gif_crate_from_rgb_speed{speed}_one_frame_320"),
            |b| b.iter(|| gif::Frame::from_rgb_speed(320, 320, img.as_raw(), speed)),
        );
    }
    group.finish();
    let _ = std::fs::remove_file(&out);
}

criterion_group!(benches, bench);
criterion_main!(benches);
