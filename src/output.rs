//! Files of a generated motion: raw features and joints (`.npy`), BVH, glTF binary, GIF / MP4,
//! and the `manifest.json` that lists them. Every file is written atomically (a temporary file
//! in the same folder, renamed into place), so a failed run leaves no partial file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, write_err};

/// Writes `bytes` to `path` atomically ([`tensor_io::atomic::write`]: a synced temporary file
/// in the same folder, renamed over it, with the permissions a new file gets there).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    tensor_io::atomic::write(path, bytes).map_err(|e| write_err(path, e))
}

/// Writes `tensors` to the safetensors file `path` atomically, with the permissions a new file
/// gets in its folder.
pub fn write_safetensors(
    path: &Path,
    tensors: &std::collections::HashMap<String, candle::Tensor>,
) -> Result<()> {
    let bytes = tensor_io::safetensors::to_bytes(tensors).map_err(|e| write_err(path, e))?;
    write_atomic(path, &bytes)
}

/// Checks that `dir` exists (creating it) and accepts files, before any work is done.
pub fn ensure_writable_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| write_err(dir, e))?;
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    std::fs::File::create(&probe).map_err(|e| write_err(dir, e))?;
    std::fs::remove_file(&probe).map_err(|e| write_err(&probe, e))?;
    Ok(())
}

/// `manifest.json` of a `generate` run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// One entry per motion, in prompt order.
    pub motions: Vec<ManifestEntry>,
}

/// One motion of a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The caption (or the text-features file it was conditioned on).
    pub caption: String,
    /// Seed of its noise.
    pub seed: u64,
    /// Frames.
    pub frames: usize,
    /// Frames per second.
    pub fps: f32,
    /// Sampler name.
    pub sampler: String,
    /// Denoiser calls.
    pub steps: usize,
    /// Guidance weight.
    pub guidance: f64,
    /// Time grid of the sampler (`uniform`, `logsnr`, `power2`, ...).
    #[serde(default = "uniform_grid")]
    pub grid: String,
    /// Files written, by kind (`features`, `joints`, `bvh`, `glb`, `gif`, `mp4`, ...), relative
    /// to the manifest's folder.
    pub files: std::collections::BTreeMap<String, String>,
}

fn uniform_grid() -> String {
    "uniform".into()
}

impl Manifest {
    /// Writes the manifest to `dir/manifest.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("manifest.json");
        let json = serde_json::to_string_pretty(self).map_err(|e| write_err(&path, e))?;
        write_atomic(&path, json.as_bytes())?;
        Ok(path)
    }
}

/// Which files [`write_motion_files`] writes, and the video size.
#[derive(Debug, Clone, PartialEq)]
pub struct FileOptions {
    /// `<stem>.features.npy` (`[F, 205]`) and `<stem>.joints.npy` (`[F, 24, 3]`).
    pub npy: bool,
    /// `<stem>.bvh`.
    pub bvh: bool,
    /// Finger joints in the BVH too (52 joints instead of 22).
    pub bvh_hands: bool,
    /// `<stem>.glb`.
    pub glb: bool,
    /// `<stem>.gif`.
    pub gif: bool,
    /// `<stem>.mp4`.
    pub mp4: bool,
    /// `<stem>.png`: a contact sheet of evenly spaced frames.
    pub contact_sheet: bool,
    /// Video width and height in pixels.
    pub size: u32,
}

impl Default for FileOptions {
    /// Everything but the MP4 and the contact sheet, 320 x 320 video.
    fn default() -> Self {
        Self {
            npy: true,
            bvh: true,
            bvh_hands: false,
            glb: true,
            gif: true,
            mp4: false,
            contact_sheet: false,
            size: 320,
        }
    }
}

/// Loads the body model at `path`, or the open body model of this package when `None`, on the
/// CPU (exports and the renderer read it there).
pub fn load_body(path: Option<&Path>) -> Result<smpl::BodyModel> {
    let path = path
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(crate::OPEN_BODY_PATH));
    if !path.is_file() {
        return Err(crate::PipelineError::MissingFile {
            what: "body model".into(),
            path,
            hint: "give an .npz / .safetensors body model (official .pkl files convert with \
                   data-scripts/convert_body_model.py)"
                .into(),
        });
    }
    Ok(smpl::BodyModel::from_npz(&path, &candle::Device::Cpu)?)
}

/// The video settings of a motion: `size` x `size` pixels, the motion's frame rate, Z up (the
/// SMPL-RIFKE world), the caption as a title bar, a camera following the pelvis, the root
/// trajectory on a grid ground plane.
/// The camera looks at the body's front-right (35 degrees off its initial facing direction).
/// Frames under 96 pixels get no title bar.
pub fn video_options(motion: &crate::Motion, caption: &str, size: u32) -> motion_viz::VideoOptions {
    let defaults = motion_viz::VideoOptions::z_up();
    motion_viz::VideoOptions {
        width: size,
        height: size,
        fps: motion.fps,
        // Below 96 pixels a title bar would leave too little room for the body.
        caption: (size >= 96 && !caption.trim().is_empty()).then(|| caption.to_string()),
        azimuth_deg: initial_facing_deg(motion)
            .map(|a| a - FRONT_RIGHT_DEG)
            .unwrap_or(defaults.azimuth_deg),
        ..defaults
    }
}

/// Angle between the camera and the body's facing direction in [`video_options`].
const FRONT_RIGHT_DEG: f32 = 35.0;

/// The horizontal direction the body faces at frame 0, in degrees from +X towards +Y (the
/// SMPL-RIFKE world, Z up): perpendicular to the hips, `forward = left x up`.
fn initial_facing_deg(motion: &crate::Motion) -> Option<f32> {
    use candle::IndexOp;
    let hips = motion.joints.i((0, 1..3)).ok()?.to_vec2::<f32>().ok()?;
    let (lx, ly) = (hips[0][0] - hips[1][0], hips[0][1] - hips[1][1]);
    // left x (0, 0, 1) = (ly, -lx, 0)
    let (fx, fy) = (ly, -lx);
    (fx.hypot(fy) > 1e-6).then(|| fy.atan2(fx).to_degrees())
}

/// Poses `body` with `motion` and hands the mesh (vertices, faces) and the skeleton (the
/// decoded joints with the SMPL bones) to `f` as a [`motion_viz::Motion`].
fn with_viz_motion<T>(
    motion: &crate::Motion,
    body: &smpl::BodyModel,
    f: impl FnOnce(&motion_viz::Motion<'_>) -> Result<T>,
) -> Result<T> {
    let posed = motion.pose(body)?;
    let faces = motion_viz::faces_from_tensor(body.faces())?;
    let vertices = motion_viz::PointSequence::from_tensor(&posed.vertices)?;
    let viz = motion_viz::Motion::mesh(vertices, &faces)?;
    f(&viz)
}

/// Renders `motion` posed on `body` to video frames, titled with `caption`.
pub fn render_frames(
    motion: &crate::Motion,
    body: &smpl::BodyModel,
    caption: &str,
    size: u32,
) -> Result<Vec<image::RgbImage>> {
    let opts = video_options(motion, caption, size);
    with_viz_motion(motion, body, |m| Ok(motion_viz::render_motion(m, &opts)?))
}

/// Renders a contact sheet of `motion` on `body`: `frames` evenly spaced frames in one row,
/// each `size` pixels square, titled with `caption`.
pub fn render_contact_sheet(
    motion: &crate::Motion,
    body: &smpl::BodyModel,
    caption: &str,
    size: u32,
    frames: usize,
) -> Result<image::RgbImage> {
    let opts = video_options(motion, caption, size);
    let sheet = motion_viz::ContactSheetOptions {
        frames,
        ..Default::default()
    };
    with_viz_motion(motion, body, |m| {
        Ok(motion_viz::render_contact_sheet(m, &opts, &sheet)?)
    })
}

/// Renders `motion` on `body` and writes it as a GIF at the motion's frame rate, titled with
/// its caption.
pub fn write_gif(
    path: impl AsRef<Path>,
    motion: &crate::Motion,
    body: &smpl::BodyModel,
    opts: &FileOptions,
) -> Result<()> {
    let caption = motion.caption.clone().unwrap_or_default();
    let frames = render_frames(motion, body, &caption, opts.size)?;
    motion_viz::write_gif(path, &frames, motion.fps)?;
    Ok(())
}

/// Writes the files of one motion into `dir`, named `<stem>.<kind>.<ext>`, and returns them by
/// kind (`features`, `joints`, `bvh`, `glb`, `gif`, `mp4`, `contact_sheet`), relative to `dir`.
/// `caption` titles the video.
pub fn write_motion_files(
    dir: &Path,
    stem: &str,
    motion: &crate::Motion,
    body: &smpl::BodyModel,
    caption: &str,
    opts: &FileOptions,
) -> Result<std::collections::BTreeMap<String, String>> {
    let mut files = std::collections::BTreeMap::new();
    let mut add = |kind: &str, name: String| {
        files.insert(kind.to_string(), name.clone());
        dir.join(name)
    };
    if opts.npy {
        let p = add("features", format!("{stem}.features.npy"));
        motion_export::write_tensor_npy(&p, &motion.features)?;
        let p = add("joints", format!("{stem}.joints.npy"));
        motion_export::write_tensor_npy(&p, &motion.joints)?;
    }
    let needs_params = opts.bvh || opts.glb;
    if needs_params {
        let params = motion.body_params(body)?;
        if opts.bvh {
            let p = add("bvh", format!("{stem}.bvh"));
            let bvh = motion_export::BvhOptions {
                hands: opts.bvh_hands,
                ..Default::default()
            };
            motion_export::write_bvh(&p, body, &params, motion.fps, &bvh)?;
        }
        if opts.glb {
            let p = add("glb", format!("{stem}.glb"));
            motion_export::write_glb(&p, body, &params, motion.fps, &Default::default())?;
        }
    }
    if opts.gif || opts.mp4 {
        let frames = render_frames(motion, body, caption, opts.size)?;
        if opts.gif {
            let p = add("gif", format!("{stem}.gif"));
            motion_viz::write_gif(&p, &frames, motion.fps)?;
        }
        if opts.mp4 {
            let p = add("mp4", format!("{stem}.mp4"));
            motion_viz::write_mp4(&p, &frames, motion.fps)?;
        }
    }
    if opts.contact_sheet {
        let p = add("contact_sheet", format!("{stem}.png"));
        let sheet = render_contact_sheet(motion, body, caption, opts.size, 6)?;
        motion_viz::write_png(&p, &sheet)?;
    }
    Ok(files)
}
