//! BVH (Biovision Hierarchy) export of a posed SMPL / SMPL-H motion.
//!
//! Format: M. Meredith and S. Maddock, "Motion Capture File Formats Explained", University of
//! Sheffield, 2001 (the BVH section). A `HIERARCHY` of joints with `OFFSET`s from their parents
//! and `CHANNELS`, then `MOTION` with `Frames:`, `Frame Time:` and one line of channel values
//! per frame, in the order the channels appear in the hierarchy (depth first).
//!
//! # Conventions of the files written here
//! - **Axes: Y up.** The motion world (SMPL-RIFKE: right-handed, Z up) is turned into the Y-up
//!   convention that Blender's BVH importer (default `Forward -Z`, `Up Y`) and most DCC tools
//!   assume by the fixed rotation `(x, y, z) -> (x, z, -y)` (-90 degrees about X), baked into
//!   the root: root rotation `C @ global_orient`, root position `C @ (transl + J_0)` with
//!   `C` that rotation. The rest skeleton (the `OFFSET`s) is the body model's canonical frame,
//!   which is already Y up (facing +Z, left side +X), so the rest pose is an upright T-pose.
//!   Blender's importer with its default axes maps the file back to the Z-up world.
//! - **Units:** [`LengthUnit::Metres`] by default (Blender's importer at its default scale 1.0
//!   then gives a life-size armature; Blender units are metres), or
//!   [`LengthUnit::Centimetres`] (Maya, MotionBuilder, most mocap libraries).
//! - **Root:** `OFFSET 0 0 0` and the absolute root-joint position in its position channels, so
//!   readers that add the root offset and readers that subtract the rest head agree.
//! - **Channels:** root `Xposition Yposition Zposition Zrotation Xrotation Yrotation`, every
//!   other joint `Zrotation Xrotation Yrotation`: Euler angles in degrees with the local
//!   rotation `R = Rz(z) Rx(x) Ry(y)` (matrices in the listed order, acting on column
//!   vectors). Each angle is unwrapped to within 180 degrees of the previous frame's, so curves
//!   do not jump by 360 degrees.
//! - **Joints:** the 22 body joints (pelvis .. right_wrist) by default; with
//!   [`BvhOptions::hands`] also SMPL-H's 30 finger joints (SMPL: its two hand joints). Names
//!   are the [`smpl::Skeleton`] names. Every leaf gets an `End Site` whose offset continues
//!   the leaf's own bone by half its length (decorative: it only sets the last bone's length
//!   in viewers).
//! - **Motion:** `Frames: T`, `Frame Time: 1/fps` seconds; values printed with 6 decimals.
//!
//! Pose blend shapes and the mesh are not part of a BVH; use [`crate::gltf`] for the skinned
//! body.

use std::path::Path;

use smpl::skeleton::NUM_BODY_JOINTS;
use smpl::{BodyModel, BodyParams};

use crate::atomic::write_atomic;
use crate::error::Result;
use crate::math;
use crate::pose::{Motion, prepare};

/// Length unit of BVH offsets and root positions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum LengthUnit {
    /// Metres (the body model's unit; Blender's importer at scale 1.0 gives life size).
    #[default]
    Metres,
    /// Centimetres (Maya, MotionBuilder and most mocap libraries).
    Centimetres,
}

impl LengthUnit {
    /// How many of this unit make one metre (1 or 100).
    pub fn per_metre(self) -> f64 {
        match self {
            Self::Metres => 1.0,
            Self::Centimetres => 100.0,
        }
    }
}

/// Options of [`write_bvh`] / [`bvh_string`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct BvhOptions {
    /// Also export the finger joints (SMPL-H: 2 x 15; SMPL: its 2 hand joints). Default: the
    /// 22 body joints only.
    pub hands: bool,
    /// Unit of `OFFSET`s and root positions. Default: metres.
    pub unit: LengthUnit,
}

/// The BVH text of a posed motion (see the [module docs](self) for axes, units and channels).
///
/// # Shapes
/// `params` for `T >= 1` frames, local rotation matrices: `global_orient [T, 3, 3]`,
/// `body_pose [T, 21, 3, 3]`, `left_hand_pose` / `right_hand_pose [T, 15, 3, 3]` (SMPL:
/// `[T, 1, 3, 3]`), `transl [T, 3]` in metres in the Z-up motion world; `betas` `None` (rest
/// skeleton of the template) or `[B]` / `[1, B]` / `[T, B]` with identical rows. `fps` is the
/// frame rate (frames per second, finite and positive).
///
/// # Errors
/// A typed [`crate::ExportError`] naming the argument, joint and frame at fault: wrong shapes,
/// a non-rotation matrix, a non-finite translation, a bad `fps`, or a body model that is
/// neither SMPL nor SMPL-H.
pub fn bvh_string(
    body: &BodyModel,
    params: &BodyParams,
    fps: f32,
    opts: &BvhOptions,
) -> Result<String> {
    let motion = prepare(body, params, fps)?;
    Ok(render(&motion, opts))
}

/// Writes the BVH of a posed motion to `path` atomically (temporary file in the same folder,
/// then rename; on error no partial file is left). Arguments as [`bvh_string`]; the folder
/// must exist.
pub fn write_bvh(
    path: impl AsRef<Path>,
    body: &BodyModel,
    params: &BodyParams,
    fps: f32,
    opts: &BvhOptions,
) -> Result<()> {
    let text = bvh_string(body, params, fps, opts)?;
    write_atomic(path.as_ref(), text.as_bytes())
}

/// Formats one number of the file.
fn num(x: f64) -> String {
    format!("{x:.6}")
}

/// Writes the `HIERARCHY` block of joint `j` and its included descendants, appending the
/// joints to `order` depth first.
fn hierarchy(
    m: &Motion,
    children: &[Vec<usize>],
    scale: f64,
    j: usize,
    depth: usize,
    lines: &mut Vec<String>,
    order: &mut Vec<usize>,
) {
    let pad = "  ".repeat(depth);
    order.push(j);
    if depth == 0 {
        lines.push(format!("ROOT {}", m.name(j)));
    } else {
        lines.push(format!("{pad}JOINT {}", m.name(j)));
    }
    lines.push(format!("{pad}{{"));
    let off = if depth == 0 {
        [0.0; 3]
    } else {
        m.rest_offset(j)
    };
    lines.push(format!(
        "{pad}  OFFSET {} {} {}",
        num(off[0] * scale),
        num(off[1] * scale),
        num(off[2] * scale)
    ));
    if depth == 0 {
        lines.push(format!(
            "{pad}  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation"
        ));
    } else {
        lines.push(format!("{pad}  CHANNELS 3 Zrotation Xrotation Yrotation"));
    }
    if children[j].is_empty() {
        let own = m.rest_offset(j);
        lines.push(format!("{pad}  End Site"));
        lines.push(format!("{pad}  {{"));
        lines.push(format!(
            "{pad}    OFFSET {} {} {}",
            num(0.5 * own[0] * scale),
            num(0.5 * own[1] * scale),
            num(0.5 * own[2] * scale)
        ));
        lines.push(format!("{pad}  }}"));
    }
    for &c in &children[j] {
        hierarchy(m, children, scale, c, depth + 1, lines, order);
    }
    lines.push(format!("{pad}}}"));
}

/// Shifts `angle` (degrees) by a multiple of 360 to within 180 degrees of `prev`.
fn unwrap_deg(angle: f64, prev: f64) -> f64 {
    angle + 360.0 * ((prev - angle) / 360.0).round()
}

fn render(m: &Motion, opts: &BvhOptions) -> String {
    let nj = m.num_joints();
    let included = |j: usize| opts.hands || j < NUM_BODY_JOINTS;
    let mut children = vec![Vec::new(); nj];
    for j in 0..nj {
        if let Some(p) = m.parents[j]
            && included(j)
        {
            children[p].push(j);
        }
    }
    let scale = opts.unit.per_metre();
    let mut lines = vec!["HIERARCHY".to_string()];
    let mut order = Vec::with_capacity(nj);
    hierarchy(m, &children, scale, 0, 0, &mut lines, &mut order);
    lines.push("MOTION".to_string());
    lines.push(format!("Frames: {}", m.frames));
    lines.push(format!("Frame Time: {:.8}", 1.0 / m.fps));
    let mut out = lines.join("\n");
    out.push('\n');

    let mut prev: Vec<[f64; 3]> = vec![[0.0; 3]; nj];
    let mut values: Vec<String> = Vec::with_capacity(3 + 3 * order.len());
    for f in 0..m.frames {
        values.clear();
        let p = m.root_position[f];
        values.extend(p.iter().map(|x| num(x * scale)));
        for &j in &order {
            let e = math::euler_zxy(m.rotation(f, j));
            for (k, a) in e.iter().enumerate() {
                let deg = a.to_degrees();
                let deg = if f == 0 {
                    deg
                } else {
                    unwrap_deg(deg, prev[j][k])
                };
                prev[j][k] = deg;
                values.push(num(deg));
            }
        }
        out.push_str(&values.join(" "));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::unwrap_deg;

    #[test]
    fn unwrapping_keeps_angles_within_half_a_turn_of_the_previous_frame() {
        assert_eq!(unwrap_deg(-179.0, 179.0), 181.0);
        assert_eq!(unwrap_deg(179.0, -179.0), -181.0);
        assert_eq!(unwrap_deg(10.0, 725.0), 730.0);
        assert_eq!(unwrap_deg(10.0, 20.0), 10.0);
    }
}
