//! Renders a procedural walk of the open body (`assets/open_body/smplh_open.npz`) in the
//! SMPL-RIFKE world (Z up, metres) as a video: following camera, grid ground, root trajectory
//! and a caption bar.
//!
//! ```text
//! cargo run --release -p motion-viz --example render_motion -- OUT_DIR [FRAMES] [MODEL.npz]
//! ```
//!
//! Writes `OUT_DIR/walk.gif` (320 x 320), `OUT_DIR/walk.mp4` (480 x 480, H.264),
//! `OUT_DIR/walk_sheet.png` (a contact sheet of 6 frames), `OUT_DIR/walk_frame.png` (the
//! middle frame as rendered) and `OUT_DIR/walk_gif_frame.png` (the same frame decoded back from
//! the GIF, i.e. after its 256-colour palette). FRAMES defaults to 120 (6 s at 20 fps).

#[path = "common/walk.rs"]
mod walk;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use motion_viz::{
    ContactSheetOptions, Motion, MotionRenderer, PointSequence, VideoOptions, bones_from_parents,
    faces_from_tensor,
};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(out_dir) = args.next().map(PathBuf::from) else {
        bail!("usage: render_motion OUT_DIR [FRAMES] [MODEL.npz]");
    };
    let frames: usize = match args.next() {
        Some(s) => s.parse().with_context(|| format!("FRAMES = {s:?}"))?,
        None => 120,
    };
    let model_path = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/open_body/smplh_open.npz")
    });
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    let clock = Instant::now();
    let model = smpl::BodyModel::from_npz(&model_path, &candle::Device::Cpu)
        .with_context(|| format!("loading {}", model_path.display()))?;
    let faces = faces_from_tensor(model.faces())?;
    let parents: Vec<i64> = smpl::Skeleton::SmplH
        .parents()
        .iter()
        .map(|&p| i64::from(p))
        .collect();
    let bones = bones_from_parents(&parents);
    let posed = walk::posed_walk(&model, frames, 20.0, 0.6)?;
    let vertices = PointSequence::from_tensor(&posed.vertices)?;
    let joints = PointSequence::from_tensor(&posed.joints)?;
    println!(
        "posed {frames} frames of {} vertices in {:.2?}",
        vertices.points_per_frame(),
        clock.elapsed()
    );
    let motion = Motion::mesh(vertices, &faces)?.with_skeleton(joints, &bones)?;
    let caption = "a person walks forward, swaying gently left and right along a winding path";

    let gif_opts = VideoOptions {
        width: 320,
        height: 320,
        caption: Some(caption.into()),
        frame_counter: true,
        ..VideoOptions::z_up()
    };
    let clock = Instant::now();
    let renderer = MotionRenderer::new(&motion, &gif_opts)?;
    let images = renderer.render_all()?;
    let rendered = clock.elapsed();
    let gif = out_dir.join("walk.gif");
    motion_viz::write_gif(&gif, &images, 20.0)?;
    println!(
        "wrote {} ({} frames 320x320: render {rendered:.2?}, total {:.2?})",
        gif.display(),
        images.len(),
        clock.elapsed()
    );
    let frame = out_dir.join("walk_frame.png");
    motion_viz::write_png(&frame, &images[images.len() / 2])?;
    println!("wrote {}", frame.display());
    // What the GIF really shows (after its 256-colour palette): decode the same frame back.
    let decoded = gif_frame(&gif, images.len() / 2)?;
    let gif_frame_path = out_dir.join("walk_gif_frame.png");
    motion_viz::write_png(&gif_frame_path, &decoded)?;
    println!("wrote {}", gif_frame_path.display());

    let mp4_opts = VideoOptions {
        width: 480,
        height: 480,
        ..gif_opts.clone()
    };
    let clock = Instant::now();
    let mp4_frames = MotionRenderer::new(&motion, &mp4_opts)?.render_all()?;
    let mp4 = out_dir.join("walk.mp4");
    motion_viz::write_mp4(&mp4, &mp4_frames, 20.0)?;
    println!("wrote {} in {:.2?}", mp4.display(), clock.elapsed());

    let sheet_opts = VideoOptions {
        width: 240,
        height: 300,
        frame_counter: false,
        ..gif_opts
    };
    let sheet = MotionRenderer::new(&motion, &sheet_opts)?.contact_sheet(&ContactSheetOptions {
        frames: 6,
        ..ContactSheetOptions::default()
    })?;
    let sheet_path = out_dir.join("walk_sheet.png");
    motion_viz::write_png(&sheet_path, &sheet)?;
    println!("wrote {}", sheet_path.display());
    Ok(())
}

/// Frame `index` of a GIF as RGB, compositing each frame over the previous one (`write_gif`
/// stores only the changed rectangle of a frame, unchanged pixels transparent).
fn gif_frame(path: &std::path::Path, index: usize) -> Result<image::RgbImage> {
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::RGBA);
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut dec = opts.read_info(std::io::BufReader::new(file))?;
    let mut canvas = image::RgbImage::new(u32::from(dec.width()), u32::from(dec.height()));
    let mut k = 0;
    while let Some(f) = dec.read_next_frame()? {
        let fw = u32::from(f.width);
        for (i, px) in f.buffer.chunks_exact(4).enumerate() {
            if px[3] != 0 {
                let (x, y) = (
                    u32::from(f.left) + i as u32 % fw,
                    u32::from(f.top) + i as u32 / fw,
                );
                canvas.put_pixel(x, y, image::Rgb([px[0], px[1], px[2]]));
            }
        }
        if k == index {
            return Ok(canvas);
        }
        k += 1;
    }
    bail!("{} has only {k} frames", path.display())
}
