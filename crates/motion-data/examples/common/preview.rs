//! Stick-figure previews of synthetic motions (shared by the `synthesize` example via
//! `#[path]`): one PNG per motion with a side-view and a rear-view film strip and a top-down
//! map of the pelvis path and the feet (sliding feet show up as smears instead of footprints).

use std::path::Path;

use image::{Rgb, RgbImage};
use motion_data::synth::SynthMotion;

const PANEL: u32 = 160;
const COLS: usize = 8;
const SCALE: f32 = 70.0; // pixels per metre
/// SMPL parents of the 24 joints.
const PARENTS: [i32; 24] = [
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21,
];
const LEFT: [usize; 8] = [1, 4, 7, 10, 13, 16, 18, 20];
const RIGHT: [usize; 8] = [2, 5, 8, 11, 14, 17, 19, 21];

fn line(img: &mut RgbImage, a: (f32, f32), b: (f32, f32), c: Rgb<u8>, width: i32) {
    let steps = ((b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil() as i32).max(1);
    for s in 0..=steps {
        let t = s as f32 / steps as f32;
        let x = (a.0 + (b.0 - a.0) * t).round() as i32;
        let y = (a.1 + (b.1 - a.1) * t).round() as i32;
        for dx in -width / 2..=width / 2 {
            for dy in -width / 2..=width / 2 {
                let (px, py) = (x + dx, y + dy);
                if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                    img.put_pixel(px as u32, py as u32, c);
                }
            }
        }
    }
}

fn colour(j: usize) -> Rgb<u8> {
    if LEFT.contains(&j) || j == 22 {
        Rgb([40, 90, 220])
    } else if RIGHT.contains(&j) || j == 23 {
        Rgb([220, 50, 50])
    } else {
        Rgb([30, 30, 30])
    }
}

/// Draws one frame in a panel whose top-left corner is `(ox, oy)`; `axis` is the world
/// horizontal direction mapped to screen x, `centre` the world point at the panel's centre.
fn draw_pose(
    img: &mut RgbImage,
    joints: &[[f32; 3]; 24],
    ox: u32,
    oy: u32,
    axis: [f32; 2],
    centre: [f32; 2],
) {
    let ground = oy as f32 + PANEL as f32 - 15.0;
    let proj = |p: &[f32; 3]| {
        let h = (p[0] - centre[0]) * axis[0] + (p[1] - centre[1]) * axis[1];
        (
            ox as f32 + PANEL as f32 / 2.0 + h * SCALE,
            ground - p[2] * SCALE,
        )
    };
    line(
        img,
        (ox as f32 + 5.0, ground),
        (ox as f32 + PANEL as f32 - 5.0, ground),
        Rgb([150, 150, 150]),
        1,
    );
    for j in 1..24 {
        let p = PARENTS[j] as usize;
        line(img, proj(&joints[p]), proj(&joints[j]), colour(j), 3);
    }
    let h = proj(&joints[15]);
    line(
        img,
        (h.0 - 4.0, h.1 - 4.0),
        (h.0 + 4.0, h.1 + 4.0),
        Rgb([30, 30, 30]),
        6,
    );
}

/// Writes the preview of `m` to `path`.
pub fn render(m: &SynthMotion, path: &Path) -> anyhow::Result<()> {
    let n = m.frames();
    let w = PANEL * COLS as u32;
    let map = 2 * PANEL;
    let mut img = RgbImage::from_pixel(w, 2 * PANEL + map, Rgb([255, 255, 255]));
    let d = m.params.direction;
    let facing = [d.cos(), d.sin()];
    let left = [-d.sin(), d.cos()];
    for c in 0..COLS {
        let f = c * (n - 1) / (COLS - 1);
        let jt = &m.joints[f];
        let centre = [jt[0][0], jt[0][1]];
        draw_pose(&mut img, jt, c as u32 * PANEL, 0, facing, centre);
        // Rear view: the body's left on screen left.
        draw_pose(
            &mut img,
            jt,
            c as u32 * PANEL,
            PANEL,
            [-left[0], -left[1]],
            centre,
        );
    }
    // Top-down map: pelvis path (green), grounded feet (blue left, red right).
    let (mut lo, mut hi) = ([f32::MAX; 2], [f32::MIN; 2]);
    for jt in &m.joints {
        for k in [0, 10, 11] {
            for a in 0..2 {
                lo[a] = lo[a].min(jt[k][a]);
                hi[a] = hi[a].max(jt[k][a]);
            }
        }
    }
    // At most 1.5 cm per pixel, less when the path would not fit.
    let span = (hi[0] - lo[0]).max(hi[1] - lo[1]).max(1e-3);
    let s = (1.0 / 0.015f32).min(0.9 * map as f32 / span);
    let cx = (lo[0] + hi[0]) / 2.0;
    let cy = (lo[1] + hi[1]) / 2.0;
    let to = |p: &[f32; 3]| {
        (
            w as f32 / 2.0 + (p[0] - cx) * s,
            2.0 * PANEL as f32 + map as f32 / 2.0 - (p[1] - cy) * s,
        )
    };
    for f in 1..n {
        line(
            &mut img,
            to(&m.joints[f - 1][0]),
            to(&m.joints[f][0]),
            Rgb([40, 160, 60]),
            1,
        );
        for (k, c) in [(10usize, Rgb([40, 90, 220])), (11, Rgb([220, 50, 50]))] {
            if m.joints[f][k][2] < 0.07 {
                let p = to(&m.joints[f][k]);
                line(&mut img, p, p, c, 2);
            }
        }
    }
    img.save(path)?;
    Ok(())
}
