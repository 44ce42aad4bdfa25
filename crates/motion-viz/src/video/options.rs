//! Options of motion videos and contact sheets.

use crate::canvas::{MeshStyle, Rgb, Shading, SkeletonStyle};
use crate::error::{Result, invalid};
use crate::math::Vec3;

/// The world's up axis: the ground is perpendicular to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpAxis {
    /// +Y up: the SMPL body model's own frame (facing +Z).
    Y,
    /// +Z up: the SMPL-RIFKE / AMASS world (metres).
    Z,
}

impl UpAxis {
    /// The unit up vector.
    pub fn vector(self) -> Vec3 {
        match self {
            Self::Y => [0.0, 1.0, 0.0],
            Self::Z => [0.0, 0.0, 1.0],
        }
    }

    /// The horizontal axes `(e1, e2)` with `e1 x e2 = up`: `(X, Y)` for Z up, `(Z, X)` for Y up.
    /// Azimuth 0 of [`VideoOptions::azimuth_deg`] looks back along `e1`, the direction a
    /// canonical SMPL body faces (+Z in its own frame; +X after the usual Y-up to Z-up turn).
    pub fn horizontal_axes(self) -> (Vec3, Vec3) {
        match self {
            Self::Y => ([0.0, 0.0, 1.0], [1.0, 0.0, 0.0]),
            Self::Z => ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]),
        }
    }
}

/// Colours and sizes of a motion video.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoStyle {
    /// Sky colour straight up.
    pub sky_top: Rgb,
    /// Sky colour at the horizon; the ground fades into it far from the body.
    pub sky_horizon: Rgb,
    /// Ground fill colour.
    pub ground: Rgb,
    /// Grid line colour.
    pub grid: Rgb,
    /// Grid spacing in world units (metres in the SMPL-RIFKE world).
    pub grid_spacing: f32,
    /// Darkness of the contact shadow under the body in `[0, 1]` (0 = none).
    pub shadow: f32,
    /// Trajectory colour (the path so far; the whole path is drawn faint in the same colour).
    pub trajectory: Rgb,
    /// Mesh appearance.
    pub mesh: MeshStyle,
    /// Skeleton appearance.
    pub skeleton: SkeletonStyle,
    /// Title bar background.
    pub title_background: Rgb,
    /// Title bar text.
    pub title_text: Rgb,
    /// Frame counter and contact-sheet label text.
    pub label_text: Rgb,
}

impl Default for VideoStyle {
    fn default() -> Self {
        Self {
            sky_top: [196, 210, 228],
            sky_horizon: [236, 238, 242],
            ground: [250, 250, 252],
            grid: [176, 182, 194],
            grid_spacing: 0.5,
            shadow: 0.45,
            trajectory: [222, 88, 44],
            mesh: MeshStyle {
                color: [112, 150, 214],
                shading: Shading::Smooth,
                ambient: 0.32,
                light_dir: [-0.45, 0.75, -0.7],
                cull_backfaces: true,
            },
            // Dark bones read on the light ground and over the blue mesh alike.
            skeleton: SkeletonStyle {
                bone_color: [45, 52, 70],
                joint_color: [235, 90, 50],
                bone_radius_px: 2.5,
                joint_radius_px: 3.0,
            },
            title_background: [34, 38, 48],
            title_text: [245, 245, 245],
            label_text: [70, 76, 90],
        }
    }
}

/// Options of a motion video.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoOptions {
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels (the title bar, if any, is part of it).
    pub height: u32,
    /// Supersampling factor, 1..=8 (2 = 4 samples per pixel).
    pub supersampling: u32,
    /// The world's up axis: [`UpAxis::Z`] for SMPL-RIFKE / AMASS motions.
    pub up: UpAxis,
    /// Frame rate of the motion (sets the follow smoothing in frames and the frame counter's
    /// clock; the writers take their own rate).
    pub fps: f32,
    /// Caption shown as a title bar at the top of every frame.
    pub caption: Option<String>,
    /// Most caption lines; a longer caption is cut with `...`.
    pub caption_max_lines: usize,
    /// Text scale (one font pixel = this many output pixels); `None` picks one from the width.
    pub text_scale: Option<f32>,
    /// Draw `frame/total  time` in the bottom-right corner.
    pub frame_counter: bool,
    /// Draw the root trajectory on the ground.
    pub show_trajectory: bool,
    /// Follow the root with the camera; when false one fixed camera frames the whole motion.
    pub follow: bool,
    /// Standard deviation (seconds) of the Gaussian that smooths the followed root position.
    pub follow_smoothing_s: f32,
    /// Camera azimuth in degrees about the up axis, from the horizontal axis `e1` of
    /// [`UpAxis::horizontal_axes`] towards `e2`: 0 looks at a body facing `e1` from the front,
    /// -90 from its right side.
    pub azimuth_deg: f32,
    /// Camera elevation above the horizon in degrees, in `(-89, 89)`.
    pub elevation_deg: f32,
    /// Vertical field of view of the perspective camera, radians.
    pub fov_y: f32,
    /// Free space around the body (0.1 = 10 %).
    pub margin: f32,
    /// Draw the skeleton over the mesh when both are given.
    pub skeleton_overlay: bool,
    /// Colours and sizes.
    pub style: VideoStyle,
}

impl Default for VideoOptions {
    /// Same as [`VideoOptions::z_up`].
    fn default() -> Self {
        Self::z_up()
    }
}

impl VideoOptions {
    /// 480 x 480, 2 x 2 supersampling, Z up, 20 fps (the SMPL-RIFKE world), following camera
    /// from the front-right, 20 degrees above the horizon, trajectory on.
    pub fn z_up() -> Self {
        Self {
            width: 480,
            height: 480,
            supersampling: 2,
            up: UpAxis::Z,
            fps: 20.0,
            caption: None,
            caption_max_lines: 3,
            text_scale: None,
            frame_counter: false,
            show_trajectory: true,
            follow: true,
            follow_smoothing_s: 0.5,
            azimuth_deg: -55.0,
            elevation_deg: 20.0,
            fov_y: 0.65,
            margin: 0.12,
            skeleton_overlay: false,
            style: VideoStyle::default(),
        }
    }

    /// [`VideoOptions::z_up`] with Y up (the SMPL body model's own frame).
    pub fn y_up() -> Self {
        Self {
            up: UpAxis::Y,
            ..Self::z_up()
        }
    }

    pub(super) fn validate(&self) -> Result<()> {
        if self.width == 0 || self.height == 0 || self.width > 16384 || self.height > 16384 {
            return Err(invalid(
                "video size",
                format!(
                    "{}x{} (each side must be in 1..=16384)",
                    self.width, self.height
                ),
            ));
        }
        if !(1..=8).contains(&self.supersampling) {
            return Err(invalid(
                "supersampling factor",
                format!("{} (must be 1..=8)", self.supersampling),
            ));
        }
        if !(self.fps > 0.0 && self.fps.is_finite()) {
            return Err(invalid("fps", format!("{} must be > 0", self.fps)));
        }
        if !(self.elevation_deg.abs() < 89.0 && self.azimuth_deg.is_finite()) {
            return Err(invalid(
                "camera angles",
                format!(
                    "azimuth {} must be finite and elevation {} in (-89, 89)",
                    self.azimuth_deg, self.elevation_deg
                ),
            ));
        }
        if !(self.fov_y > 0.0 && self.fov_y < 3.0) {
            return Err(invalid(
                "fov_y",
                format!("{} must be in (0, 3)", self.fov_y),
            ));
        }
        if !(self.follow_smoothing_s >= 0.0 && self.follow_smoothing_s.is_finite()) {
            return Err(invalid(
                "follow_smoothing_s",
                format!("{} must be >= 0", self.follow_smoothing_s),
            ));
        }
        if !(self.style.grid_spacing > 0.0 && self.style.grid_spacing.is_finite()) {
            return Err(invalid(
                "grid spacing",
                format!("{} must be > 0", self.style.grid_spacing),
            ));
        }
        if let Some(s) = self.text_scale
            && !(s > 0.0 && s <= 16.0)
        {
            return Err(invalid("text_scale", format!("{s} must be in (0, 16]")));
        }
        Ok(())
    }

    /// The text scale in use: the option, or one picked from the width (1.25 at 320 pixels).
    pub(super) fn text_scale(&self) -> f32 {
        self.text_scale
            .unwrap_or_else(|| ((self.width as f32 / 256.0) * 4.0).round() / 4.0)
            .max(1.0)
    }
}

/// Layout of a contact sheet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContactSheetOptions {
    /// How many frames, evenly spaced from the first to the last (at most `T`).
    pub frames: usize,
    /// Frames per row; 0 puts them all in one row.
    pub columns: usize,
    /// Space between cells and around the sheet, pixels.
    pub gap: u32,
    /// Sheet background.
    pub background: Rgb,
    /// Write each frame's time (`1.25 s`) in its top-left corner.
    pub time_labels: bool,
}

impl Default for ContactSheetOptions {
    /// 6 frames in one row, 4-pixel white gaps, time labels.
    fn default() -> Self {
        Self {
            frames: 6,
            columns: 0,
            gap: 4,
            background: [255, 255, 255],
            time_labels: true,
        }
    }
}
