//! Visualisation of motions: a small software renderer from triangle meshes or skeletons to PNG
//! frames and animated GIFs.
//!
//! The renderer works on plain arrays (`[f32; 3]` points, `[u32; 3]` faces), so any mesh can be
//! drawn; [`points_from_tensor`] and [`faces_from_tensor`] bridge from the candle tensors that
//! `smpl::BodyModel::forward` returns. Pieces:
//! - [`Camera`]: look-at view with [`Projection::Orthographic`] or [`Projection::Perspective`],
//!   and [`Camera::framing`] to fit a set of points.
//! - [`Canvas`]: colour buffer + z-buffer; [`Canvas::draw_mesh`] (edge-function rasterisation,
//!   flat or smooth Lambert shading), [`Canvas::draw_skeleton`] (bones as shaded screen-space
//!   capsules, joints as discs), optional supersampling.
//! - [`Scene`]: one camera and floor fitted to a whole sequence, rendering a mesh and/or a
//!   skeleton per frame.
//! - [`MotionRenderer`] / [`render_motion`]: a whole motion to video frames (following camera,
//!   infinite ground with grid and contact shadow, root trajectory, caption title bar), and
//!   [`render_contact_sheet`] for docs.
//! - [`chart`]: line charts of evaluation results ([`Chart`]: series with markers and
//!   translucent confidence bands, a reference band, linear or log10 axes with nice ticks, a
//!   legend; [`render_panels`] for a grid of charts), drawn with the built-in bitmap font.
//! - [`write_png`] / [`write_gif`] / [`write_mp4`]: atomic writers (MP4 = H.264 through the
//!   bundled OpenH264, cargo feature `mp4`, on by default; no ffmpeg needed).
//!
//! References: J. Pineda, "A parallel algorithm for polygon rasterization", SIGGRAPH 1988 (edge
//! functions); E. Catmull, "A subdivision algorithm for computer display of curved surfaces",
//! 1974 (z-buffer); H. Gouraud, "Continuous shading of curved surfaces", 1971 (interpolated
//! shading over vertex normals).
//!
//! # Place in the workspace
//! May use `smpl` and `motion-repr`. It must never depend on `diffusion`, `dit`, `tmr`, `metrics`
//! or `motion-data`. It never prints and never downloads.
#![warn(missing_docs)]

pub mod camera;
pub mod canvas;
pub mod chart;
pub mod error;
mod ground;
mod math;
mod mp4_file;
pub mod output;
pub mod scene;
pub mod tensor;
mod text;
pub mod video;

pub use camera::{Camera, Projected, Projection};
pub use canvas::{
    Canvas, MeshStyle, Rgb, Shading, SkeletonStyle, bones_from_parents, vertex_normals,
};
pub use chart::{
    Chart, LegendPosition, Marker, Point, ReferenceBand, Scale, Series, default_palette,
    render_panels,
};
pub use error::{Result, VizError};
pub use math::Vec3;
pub use mp4_file::{encode_mp4, write_mp4};
pub use output::{write_gif, write_png};
pub use scene::{Scene, SceneOptions};
pub use tensor::{faces_from_tensor, points_from_tensor};
pub use video::{
    ContactSheetOptions, Motion, MotionRenderer, PointSequence, UpAxis, VideoOptions, VideoStyle,
    render_contact_sheet, render_motion,
};
