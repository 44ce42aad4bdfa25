//! The text-to-motion pipeline in WebAssembly, for the browser page in `web/`.
//!
//! The page fetches the files of a model folder (the default model's `config.json`,
//! `model.safetensors`, `stats.safetensors`, its text encoder under `text_encoder/`) and a body
//! model under `body/`, hands them to a [`Generator`] with [`Generator::add_file`], and calls
//! [`Generator::load`] once. [`Generator::generate`] then runs exactly the native pipeline
//! ([`motion_dit::TextToMotion`] with the model's own sampler settings, the same seeded noise)
//! and returns a [`GeneratedMotion`] holding the same files `generate` writes: `.glb`, `.bvh`,
//! `.features.npy` and `.joints.npy`.
//!
//! Nothing here is specific to WebAssembly but the bindings: the crate also builds natively,
//! where its tests compare it with the pipeline.
//!
//! ```text
//! wasm32:  cargo build -p motion-web --target wasm32-unknown-unknown --release
//!          wasm-bindgen --target web --out-dir web/dist/pkg target/wasm32-unknown-unknown/release/motion_web.wasm
//! ```
//! (`web/build.sh` does both and assembles the page.)

use std::collections::HashMap;

use motion_dit::candle::Device;
use motion_dit::smpl::BodyModel;
use motion_dit::{GenerateOptions, MotionModel, PipelineError, Request, TextInput, TextToMotion};
use wasm_bindgen::prelude::*;

/// Files whose names start with this are the body model (one `.npz` or `.safetensors`).
pub const BODY_PREFIX: &str = "body/";

/// Milliseconds from a monotonic-enough clock: `Date.now()` in the browser, the system clock
/// natively.
fn now_ms() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        js_sys::Date::now()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }
}

/// An error for JavaScript (an `Error` with this message), and natively a plain message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebError(pub String);

impl std::fmt::Display for WebError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WebError {}

impl From<PipelineError> for WebError {
    fn from(e: PipelineError) -> Self {
        Self(e.to_string())
    }
}

impl From<WebError> for JsValue {
    fn from(e: WebError) -> Self {
        js_sys::Error::new(&e.0).into()
    }
}

fn fail(message: impl Into<String>) -> WebError {
    WebError(message.into())
}

/// The loaded model and body.
struct Loaded {
    pipeline: TextToMotion,
    body: BodyModel,
}

/// Collects the fetched files, loads them once, then generates motions.
#[wasm_bindgen]
#[derive(Default)]
pub struct Generator {
    files: HashMap<String, Vec<u8>>,
    loaded: Option<Loaded>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.files.keys().collect();
        names.sort();
        f.debug_struct("Generator")
            .field("files", &names)
            .field("loaded", &self.loaded.is_some())
            .finish()
    }
}

#[wasm_bindgen]
impl Generator {
    /// An empty generator.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Generator {
        #[cfg(target_arch = "wasm32")]
        console_error_panic_hook::set_once();
        Self::default()
    }

    /// Adds one file by its name relative to the model folder (`config.json`,
    /// `text_encoder/tokenizer.json`, `body/smplh_open.npz`, ...).
    pub fn add_file(&mut self, name: String, bytes: Vec<u8>) {
        self.files.insert(name, bytes);
    }

    /// Loads the model ([`MotionModel::from_memory`]) and the body model from the added files;
    /// the files are released afterwards.
    pub fn load(&mut self) -> Result<(), WebError> {
        let device = Device::Cpu;
        let body_name = self
            .files
            .keys()
            .filter(|k| k.starts_with(BODY_PREFIX))
            .min()
            .cloned()
            .ok_or_else(|| {
                fail(format!(
                    "no body model: add a file named {BODY_PREFIX}<name>.npz (the open body \
                     model, assets/open_body/smplh_open.npz)"
                ))
            })?;
        let body_bytes = self.files.remove(&body_name).unwrap_or_default();
        let body = BodyModel::from_bytes(&body_bytes, &body_name, &device)
            .map_err(|e| fail(format!("{body_name}: {e}")))?;
        let model = MotionModel::from_memory(&self.files, &device)?;
        if model.text_encoder().is_none() {
            return Err(fail(
                "the model files hold no text encoder: add its files under text_encoder/ \
                 (config.json, model.safetensors, tokenizer.json)",
            ));
        }
        self.files.clear();
        self.loaded = Some(Loaded {
            pipeline: TextToMotion::new(model),
            body,
        });
        Ok(())
    }

    /// Frames per second of the model's motions.
    #[wasm_bindgen(getter)]
    pub fn fps(&self) -> f32 {
        self.loaded
            .as_ref()
            .map_or(0.0, |l| l.pipeline.model().fps())
    }

    /// Longest motion the model makes, in seconds.
    #[wasm_bindgen(getter)]
    pub fn max_seconds(&self) -> f32 {
        self.loaded.as_ref().map_or(0.0, |l| {
            l.pipeline.model().max_frames() as f32 / l.pipeline.model().fps()
        })
    }

    /// Generates one motion of `seconds` (rounded to whole frames as `generate --seconds`
    /// does) for `caption` with noise seed `seed`, with the model's sampler settings.
    pub fn generate(
        &self,
        caption: &str,
        seconds: f64,
        seed: u32,
    ) -> Result<GeneratedMotion, WebError> {
        let loaded = self
            .loaded
            .as_ref()
            .ok_or_else(|| fail("the model is not loaded: call load() first"))?;
        let pipeline = &loaded.pipeline;
        let model = pipeline.model();
        if !(seconds.is_finite() && seconds > 0.0) {
            return Err(fail(format!("length {seconds} s must be positive")));
        }
        let frames = ((seconds * model.fps() as f64).round() as usize).max(1);
        if caption.trim().is_empty() {
            return Err(fail("the caption is empty"));
        }
        let t0 = now_ms();
        let (pooled, tokens) = pipeline.encode_caption(caption)?;
        let condition = if model.config().variant.sequential_condition() {
            tokens
        } else {
            pooled
        };
        let t1 = now_ms();
        let request = Request {
            text: TextInput::Features(condition),
            frames,
            seed: u64::from(seed),
            constraint: None,
        };
        let opts = GenerateOptions::for_model(model);
        let mut motion = pipeline
            .generate_with(&[request], &opts, &mut |_| {})?
            .pop()
            .ok_or_else(|| fail("no motion was generated"))?;
        motion.caption = Some(caption.to_string());
        let t2 = now_ms();
        let files = MotionFiles::new(&motion, &loaded.body)?;
        let t3 = now_ms();
        Ok(GeneratedMotion {
            frames: motion.frames(),
            fps: motion.fps,
            files,
            text_ms: t1 - t0,
            sampling_ms: t2 - t1,
            decode_ms: t3 - t2,
        })
    }
}

/// The files of one motion, as `generate` writes them.
struct MotionFiles {
    glb: Vec<u8>,
    bvh: String,
    features_npy: Vec<u8>,
    joints_npy: Vec<u8>,
}

impl MotionFiles {
    fn new(motion: &motion_dit::Motion, body: &BodyModel) -> Result<Self, WebError> {
        let export = |e: motion_dit::motion_export::ExportError| fail(e.to_string());
        let params = motion.body_params(body)?;
        let glb =
            motion_dit::motion_export::glb_bytes(body, &params, motion.fps, &Default::default())
                .map_err(export)?;
        let bvh =
            motion_dit::motion_export::bvh_string(body, &params, motion.fps, &Default::default())
                .map_err(export)?;
        let npy = |t: &motion_dit::candle::Tensor| -> Result<Vec<u8>, WebError> {
            let data = t
                .flatten_all()
                .and_then(|x| x.to_vec1::<f32>())
                .map_err(|e| fail(e.to_string()))?;
            motion_dit::motion_export::npy::npy_f32_bytes(&data, t.dims()).map_err(export)
        };
        Ok(Self {
            glb,
            bvh,
            features_npy: npy(&motion.features)?,
            joints_npy: npy(&motion.joints)?,
        })
    }
}

/// One generated motion and its files.
#[wasm_bindgen]
pub struct GeneratedMotion {
    frames: usize,
    fps: f32,
    files: MotionFiles,
    text_ms: f64,
    sampling_ms: f64,
    decode_ms: f64,
}

impl std::fmt::Debug for GeneratedMotion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedMotion")
            .field("frames", &self.frames)
            .field("fps", &self.fps)
            .finish_non_exhaustive()
    }
}

#[wasm_bindgen]
impl GeneratedMotion {
    /// Frames.
    #[wasm_bindgen(getter)]
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Frames per second.
    #[wasm_bindgen(getter)]
    pub fn fps(&self) -> f32 {
        self.fps
    }

    /// Milliseconds spent encoding the caption.
    #[wasm_bindgen(getter)]
    pub fn text_ms(&self) -> f64 {
        self.text_ms
    }

    /// Milliseconds spent sampling (and decoding the features to joints).
    #[wasm_bindgen(getter)]
    pub fn sampling_ms(&self) -> f64 {
        self.sampling_ms
    }

    /// Milliseconds spent posing the body and writing the files.
    #[wasm_bindgen(getter)]
    pub fn decode_ms(&self) -> f64 {
        self.decode_ms
    }

    /// The skinned, animated glTF binary (`NNN.glb` of `generate`).
    pub fn glb(&self) -> Vec<u8> {
        self.files.glb.clone()
    }

    /// The BVH file (`NNN.bvh`).
    pub fn bvh(&self) -> String {
        self.files.bvh.clone()
    }

    /// The raw features `[F, 205]` as `.npy` (`NNN.features.npy`).
    pub fn features_npy(&self) -> Vec<u8> {
        self.files.features_npy.clone()
    }

    /// The joints `[F, 24, 3]` as `.npy` (`NNN.joints.npy`).
    pub fn joints_npy(&self) -> Vec<u8> {
        self.files.joints_npy.clone()
    }
}
