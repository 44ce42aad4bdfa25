//! Rendering throughput: the open body (13380 vertices, 26756 triangles) rasterised with smooth
//! Lambert shading, and a 52-joint skeleton.
//!
//! ```text
//! cargo bench -p motion-viz --bench render -- --warm-up-time 1 --measurement-time 3
//! ```

use criterion::{Criterion, criterion_group, criterion_main};
use motion_viz::{
    Camera, Canvas, MeshStyle, Projection, SkeletonStyle, bones_from_parents, faces_from_tensor,
    points_from_tensor,
};

fn bench(c: &mut Criterion) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../assets/open_body/smplh_open.npz"
    );
    let model = smpl::BodyModel::from_npz(path, &candle::Device::Cpu).expect("open body asset");
    let verts = points_from_tensor(model.v_template()).expect("vertices");
    let faces = faces_from_tensor(model.faces()).expect("faces");
    let joints = points_from_tensor(&model.rest_joints().expect("joints")).expect("joints");
    let parents: Vec<i64> = smpl::Skeleton::SmplH
        .parents()
        .iter()
        .map(|&p| i64::from(p))
        .collect();
    let bones = bones_from_parents(&parents);
    for (name, ss) in [("mesh_512x512", 1), ("mesh_512x512_ss2", 2)] {
        let mut canvas = Canvas::with_supersampling(512, 512, ss).expect("canvas");
        let cam = Camera::framing(
            &verts,
            [0.3, -0.2, -1.0],
            [0.0, 1.0, 0.0],
            Projection::Perspective {
                fov_y: 0.7,
                near: 0.05,
            },
            1.0,
            0.05,
        )
        .expect("camera");
        c.bench_function(name, |b| {
            b.iter(|| {
                canvas.clear([255, 255, 255]);
                canvas
                    .draw_mesh(&cam, &verts, &faces, &MeshStyle::default())
                    .expect("draw");
                canvas.to_image()
            })
        });
    }
    let mut canvas = Canvas::new(512, 512).expect("canvas");
    let cam = Camera::framing(
        &joints,
        [0.0, 0.0, -1.0],
        [0.0, 1.0, 0.0],
        Projection::Orthographic { half_height: 1.0 },
        1.0,
        0.05,
    )
    .expect("camera");
    c.bench_function("skeleton_512x512", |b| {
        b.iter(|| {
            canvas.clear([255, 255, 255]);
            canvas
                .draw_skeleton(&cam, &joints, &bones, &SkeletonStyle::default())
                .expect("draw");
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
