//! Motion videos: a whole motion (per-frame mesh vertices and/or joints) to a sequence of frames
//! people want to watch, and a contact sheet of evenly spaced frames for docs.
//!
//! What a frame shows:
//! - a camera that follows the root (joint 0, or the mesh centroid without joints) with a fixed
//!   orientation and height: the target is the root's horizontal position smoothed by a centred
//!   Gaussian over time, the distance is fitted once to the body's extent around that target
//!   ([`Camera::framing`](crate::Camera::framing) on the body in the target's moving frame),
//!   so long walks stay in frame;
//! - a sky gradient and an infinite ground plane with a grid at the motion's lowest point, fading
//!   into the horizon, with a soft contact shadow under the body (see `ground.rs`);
//! - the root trajectory on the ground: the whole path faint, the path so far strong;
//! - the mesh (smooth Lambert, [`MeshStyle`](crate::MeshStyle)) and/or the skeleton;
//! - the caption as a title bar at the top (an 8x8 bitmap font, scaled, word-wrapped, cut with
//!   an ellipsis), and optionally a frame counter.
//!
//! Frames render in parallel (rayon, one canvas per worker). Encode them with
//! [`write_gif`](crate::write_gif) or [`write_mp4`](crate::write_mp4).
//!
//! ```
//! use motion_viz::{Motion, PointSequence, VideoOptions, render_motion};
//! // Two joints (a "pelvis" and a "head") walking along +X in a Z-up world, 10 frames.
//! let joints: Vec<Vec<[f32; 3]>> = (0..10)
//!     .map(|t| {
//!         let x = 0.1 * t as f32;
//!         vec![[x, 0.0, 0.9], [x, 0.0, 1.7]]
//!     })
//!     .collect();
//! let seq = PointSequence::from_frames(&joints)?;
//! let motion = Motion::skeleton(seq, &[[0, 1]])?;
//! let opts = VideoOptions {
//!     width: 96,
//!     height: 96,
//!     caption: Some("a person walks forward".into()),
//!     ..VideoOptions::z_up()
//! };
//! let frames = render_motion(&motion, &opts)?;
//! assert_eq!(frames.len(), 10);
//! assert_eq!(frames[0].dimensions(), (96, 96));
//! # Ok::<(), motion_viz::VizError>(())
//! ```

mod motion;
mod options;
mod renderer;

pub use motion::{Motion, PointSequence};
pub use options::{ContactSheetOptions, UpAxis, VideoOptions, VideoStyle};
pub use renderer::MotionRenderer;

use crate::error::Result;

/// Renders every frame of `motion` (in parallel). See [`MotionRenderer`].
pub fn render_motion(motion: &Motion<'_>, opts: &VideoOptions) -> Result<Vec<image::RgbImage>> {
    MotionRenderer::new(motion, opts)?.render_all()
}

/// Renders a contact sheet of `motion`. See [`MotionRenderer::contact_sheet`].
pub fn render_contact_sheet(
    motion: &Motion<'_>,
    opts: &VideoOptions,
    sheet: &ContactSheetOptions,
) -> Result<image::RgbImage> {
    MotionRenderer::new(motion, opts)?.contact_sheet(sheet)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{VizError, invalid};
    use crate::math::Vec3;

    /// A 0.3 x 0.2 x 1.7 m box "body" walking `step` metres per frame along +X (Z up).
    fn box_walk(frames: usize, step: f32) -> (Vec<Vec3>, Vec<[u32; 3]>) {
        let mut v = Vec::with_capacity(frames * 8);
        for t in 0..frames {
            let x0 = step * t as f32;
            for i in 0..8u32 {
                let (x, y, z) = (i & 1, (i >> 1) & 1, (i >> 2) & 1);
                v.push([
                    x0 - 0.15 + 0.3 * x as f32,
                    -0.1 + 0.2 * y as f32,
                    1.7 * z as f32,
                ]);
            }
        }
        let faces = vec![
            [0, 2, 3],
            [0, 3, 1],
            [4, 5, 7],
            [4, 7, 6],
            [0, 1, 5],
            [0, 5, 4],
            [2, 6, 7],
            [2, 7, 3],
            [0, 4, 6],
            [0, 6, 2],
            [1, 3, 7],
            [1, 7, 5],
        ];
        (v, faces)
    }

    fn small(caption: Option<&str>) -> VideoOptions {
        VideoOptions {
            width: 120,
            height: 120,
            supersampling: 1,
            caption: caption.map(str::to_string),
            ..VideoOptions::z_up()
        }
    }

    fn is_orange(p: [u8; 3]) -> bool {
        p[0] as i32 > p[1] as i32 + 50 && p[0] as i32 > p[2] as i32 + 60
    }

    fn is_body(p: [u8; 3]) -> bool {
        p[2] as i32 > p[0] as i32 + 40
    }

    #[test]
    fn follow_camera_keeps_a_long_walk_centred_and_large() -> Result<()> {
        // 20 m in 100 frames: a fixed camera must shrink the body, a following one must not.
        let (v, f) = box_walk(100, 0.2);
        let motion = Motion::mesh(PointSequence::new(&v, 100, 8)?, &f)?;
        let heights = |follow: bool| -> Result<Vec<f32>> {
            let r = MotionRenderer::new(
                &motion,
                &VideoOptions {
                    follow,
                    ..small(None)
                },
            )?;
            (0..100)
                .map(|t| {
                    let cam = r.camera(t)?;
                    let aspect = 120.0 / (120 - r.title_height()) as f32;
                    let p = |z: f32| cam.project([0.2 * t as f32, 0.0, z], aspect);
                    let (Some(foot), Some(head)) = (p(0.0), p(1.7)) else {
                        return Err(invalid("test", "body behind the camera"));
                    };
                    if follow {
                        assert!(foot.ndc[0].abs() < 0.4 && head.ndc[0].abs() < 0.4, "{t}");
                        assert!(foot.ndc[1] > -1.0 && head.ndc[1] < 1.0, "{t}");
                    }
                    Ok(head.ndc[1] - foot.ndc[1])
                })
                .collect()
        };
        let follow = heights(true)?;
        let fixed = heights(false)?;
        let min_follow = follow.iter().copied().fold(f32::INFINITY, f32::min);
        let max_fixed = fixed.iter().copied().fold(0.0f32, f32::max);
        assert!(
            min_follow > 1.0,
            "followed body spans {min_follow} of 2 NDC units"
        );
        assert!(
            max_fixed < 0.6 * min_follow,
            "fixed {max_fixed} vs follow {min_follow}"
        );
        Ok(())
    }

    #[test]
    fn frame_shows_caption_ground_trajectory_and_body() -> Result<()> {
        let (v, f) = box_walk(30, 0.05);
        let motion = Motion::mesh(PointSequence::new(&v, 30, 8)?, &f)?;
        let opts = small(Some("a box walks forward"));
        let r = MotionRenderer::new(&motion, &opts)?;
        let img = r.render_frame(29)?;
        assert_eq!(img.dimensions(), (120, 120));
        // Title bar: background colour with light text pixels in it.
        let bar = r.title_height();
        assert!((10..40).contains(&bar), "bar height {bar}");
        assert_eq!(img.get_pixel(0, 1).0, opts.style.title_background);
        let text = (0..bar)
            .flat_map(|y| (0..120).map(move |x| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0[0] > 150)
            .count();
        assert!(text > 30, "{text} caption pixels");
        let scene: Vec<[u8; 3]> = (bar..120)
            .flat_map(|y| (0..120).map(move |x| (x, y)))
            .map(|(x, y)| img.get_pixel(x, y).0)
            .collect();
        let orange = scene.iter().filter(|p| is_orange(**p)).count();
        let body = scene.iter().filter(|p| is_body(**p)).count();
        assert!(orange > 10, "{orange} trajectory pixels");
        assert!(body > 200, "{body} body pixels");
        // The bottom row is ground: light, not the title or the body.
        let bottom = (0..120).map(|x| img.get_pixel(x, 119).0);
        assert!(bottom.clone().all(|p| p[0] > 150 && !is_body(p)));
        // Grid lines: some bottom-row pixels darker than the ground fill.
        assert!(bottom.clone().any(|p| p[0] < opts.style.ground[0] - 20));

        let off = MotionRenderer::new(
            &motion,
            &VideoOptions {
                show_trajectory: false,
                ..opts.clone()
            },
        )?
        .render_frame(29)?;
        assert_eq!(off.pixels().filter(|p| is_orange(p.0)).count(), 0);
        Ok(())
    }

    #[test]
    fn parallel_rendering_matches_frame_by_frame() -> Result<()> {
        let (v, f) = box_walk(6, 0.1);
        let motion = Motion::mesh(PointSequence::new(&v, 6, 8)?, &f)?;
        let opts = VideoOptions {
            frame_counter: true,
            ..small(Some("x"))
        };
        let r = MotionRenderer::new(&motion, &opts)?;
        let all = r.render_all()?;
        assert_eq!(all.len(), 6);
        for (t, img) in all.iter().enumerate() {
            assert!(*img == r.render_frame(t)?, "frame {t}");
        }
        assert!(r.render_frame(6).is_err());
        Ok(())
    }

    #[test]
    fn contact_sheet_lays_out_cells_under_one_caption() -> Result<()> {
        let (v, f) = box_walk(10, 0.1);
        let motion = Motion::mesh(PointSequence::new(&v, 10, 8)?, &f)?;
        let opts = small(Some("a box walks"));
        let sheet = ContactSheetOptions {
            frames: 4,
            columns: 2,
            gap: 3,
            ..ContactSheetOptions::default()
        };
        let r = MotionRenderer::new(&motion, &opts)?;
        let img = r.contact_sheet(&sheet)?;
        let cell_h = 120 - r.title_height();
        let (w, h) = img.dimensions();
        assert_eq!(w, 2 * 120 + 3 * 3);
        assert!(h > 2 * cell_h + 3 * 3, "sheet {w}x{h}");
        assert_eq!(img.get_pixel(0, 0).0, opts.style.title_background);
        // One row of four when columns = 0; more frames than T are clamped.
        let row = r.contact_sheet(&ContactSheetOptions {
            frames: 50,
            columns: 0,
            ..sheet
        })?;
        assert_eq!(row.width(), 10 * 120 + 11 * 3);
        assert!(
            r.contact_sheet(&ContactSheetOptions { frames: 0, ..sheet })
                .is_err()
        );
        Ok(())
    }

    #[test]
    fn bad_input_is_a_typed_error_naming_the_culprit() -> Result<()> {
        let (mut v, f) = box_walk(4, 0.1);
        v[2 * 8 + 5][1] = f32::NAN;
        let err = Motion::mesh(PointSequence::new(&v, 4, 8)?, &f).expect_err("NaN vertex");
        assert!(
            err.to_string().contains("frame 2, vertex 5"),
            "unexpected message: {err}"
        );
        let (v, f) = box_walk(4, 0.1);
        assert!(PointSequence::new(&v, 5, 8).is_err());
        assert!(PointSequence::from_flat(&[0.0; 10], 1, 3).is_err());
        assert!(PointSequence::new(&v, 0, 8).is_err());
        let ragged = [vec![[0.0; 3]; 2], vec![[0.0; 3]; 3]];
        let err = PointSequence::from_frames(&ragged).expect_err("ragged");
        assert!(err.to_string().contains("frame 1"), "{err}");
        assert!(Motion::mesh(PointSequence::new(&v, 4, 8)?, &[[0, 1, 8]]).is_err());
        // Joints for 3 frames on a 4-frame mesh.
        let joints = vec![[0.0, 0.0, 0.9]; 3];
        let mesh = Motion::mesh(PointSequence::new(&v, 4, 8)?, &f)?;
        let err = mesh
            .with_skeleton(PointSequence::new(&joints, 3, 1)?, &[])
            .expect_err("frame count mismatch");
        assert!(
            err.to_string().contains("3 frames of joints for 4"),
            "{err}"
        );
        let motion = Motion::mesh(PointSequence::new(&v, 4, 8)?, &f)?;
        for bad in [
            VideoOptions {
                width: 0,
                ..small(None)
            },
            VideoOptions {
                supersampling: 0,
                ..small(None)
            },
            VideoOptions {
                fps: 0.0,
                ..small(None)
            },
            VideoOptions {
                elevation_deg: 90.0,
                ..small(None)
            },
            VideoOptions {
                height: 12,
                ..small(Some("a caption far too long for so small a frame"))
            },
        ] {
            assert!(
                matches!(
                    MotionRenderer::new(&motion, &bad),
                    Err(VizError::InvalidInput { .. })
                ),
                "{bad:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn skeleton_only_motion_renders_bones_and_follows_joint_zero() -> Result<()> {
        let frames: Vec<Vec<Vec3>> = (0..8)
            .map(|t| {
                let x = 0.3 * t as f32;
                vec![[x, 0.0, 0.9], [x, 0.0, 1.7], [x, 0.1, 0.0]]
            })
            .collect();
        let seq = PointSequence::from_frames(&frames)?;
        let motion = Motion::skeleton(seq, &[[0, 1], [0, 2]])?;
        let root = motion.root(7);
        assert!((root[0] - 2.1).abs() < 1e-5 && root[2] == 0.9, "{root:?}");
        let img = render_motion(&motion, &small(None))?;
        // Dark bone pixels (the stage is light; no caption or counter here).
        let bones = img[7]
            .pixels()
            .filter(|p| p.0.iter().all(|&c| c < 100))
            .count();
        assert!(bones > 20, "{bones} bone pixels");
        Ok(())
    }
}
