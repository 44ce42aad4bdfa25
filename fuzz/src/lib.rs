//! Shared set-up of the fuzz targets (`fuzz_targets/*.rs`): a per-process scratch folder for
//! loaders that take paths, and small valid files (a tiny network, statistics, a dataset
//! folder) around the one file a target mutates.
//!
//! Every target asserts nothing about the result: libFuzzer reports a panic, an abort, a
//! timeout (`-timeout`, default 1200 s; use e.g. `-timeout=2`) or an allocation above
//! `-rss_limit_mb` / `-malloc_limit_mb` as a crash and saves the input under
//! `fuzz/artifacts/<target>/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use motion_dit::candle::{DType, Device, Tensor};
use motion_dit::dit::{Dit, DitConfig, Variant};
use motion_dit::motion_data::{FEATURE_DIM, MotionSample, Split, TEXT_DIM, TextFeatures};
use motion_dit::{ModelConfig, save_model_folder};

/// A folder under the system's temporary folder, one per process (libFuzzer's `-fork` /
/// `-jobs` workers are processes): `<tmp>/motion-dit-fuzz-<name>-<pid>`.
pub fn scratch(name: &str) -> &'static Path {
    static DIRS: OnceLock<std::sync::Mutex<HashMap<String, &'static Path>>> = OnceLock::new();
    let dirs = DIRS.get_or_init(Default::default);
    let mut dirs = dirs.lock().unwrap_or_else(|e| e.into_inner());
    dirs.entry(name.to_string()).or_insert_with(|| {
        let p = std::env::temp_dir().join(format!("motion-dit-fuzz-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("cannot create the scratch folder");
        Box::leak(p.into_boxed_path())
    })
}

/// Writes `data` to `<scratch(name)>/<file>` and returns the path.
pub fn write_input(name: &str, file: &str, data: &[u8]) -> PathBuf {
    let path = scratch(name).join(file);
    std::fs::write(&path, data).expect("cannot write the input file");
    path
}

/// A tiny in-context network (width 16, one layer, 8-d condition).
pub fn tiny_dit_config() -> DitConfig {
    let mut cfg = DitConfig::reference(Variant::InContext);
    (
        cfg.latent_dim,
        cfg.num_layers,
        cfg.num_heads,
        cfg.num_cond_feats,
    ) = (16, 1, 2, 8);
    cfg.num_frames = 16;
    cfg.max_positions = 64;
    cfg
}

/// The files of a valid tiny model folder (`config.json`, `model.safetensors`,
/// `stats.safetensors`), for `MotionModel::from_memory`.
pub fn tiny_model_files() -> &'static HashMap<String, Vec<u8>> {
    static FILES: OnceLock<HashMap<String, Vec<u8>>> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = scratch("model-folder");
        let cfg = tiny_dit_config();
        let (_, vars) = Dit::init_random(&cfg, 1, &Device::Cpu).expect("init");
        let weights: HashMap<String, Tensor> = vars
            .data()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        let d = cfg.num_feats;
        let normalizer = motion_dit::motion_repr::Normalizer::new(
            Tensor::zeros(d, DType::F32, &Device::Cpu).expect("mean"),
            Tensor::ones(d, DType::F32, &Device::Cpu).expect("std"),
        )
        .expect("normalizer");
        save_model_folder(dir, &ModelConfig::new(cfg), &weights, &normalizer).expect("save");
        ["config.json", "model.safetensors", "stats.safetensors"]
            .iter()
            .map(|f| (f.to_string(), std::fs::read(dir.join(f)).expect("read")))
            .collect()
    })
}

/// A valid two-sample dataset folder with CLIP features, written once per process.
pub fn dataset_folder() -> &'static Path {
    static ROOT: OnceLock<&'static Path> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = scratch("dataset");
        let mut ids = Vec::new();
        for s in 0..2usize {
            let (frames, caps) = (3 + s, 1 + s);
            let sample = MotionSample {
                id: format!("s{s:03}"),
                features: vec![0.5; frames * FEATURE_DIM],
                frames,
                captions: (0..caps).map(|c| format!("caption {c}")).collect(),
                text: Some(TextFeatures {
                    pooled: vec![0.5; caps * TEXT_DIM],
                    tokens: (0..caps).map(|c| vec![0.25; (2 + c) * TEXT_DIM]).collect(),
                }),
            };
            motion_dit::motion_data::write_sample(root, &sample).expect("sample");
            ids.push(sample.id);
        }
        motion_dit::motion_data::write_split(root, Split::Train, &ids).expect("split");
        root
    })
}

/// The files of [`dataset_folder`] a target may replace, relative to its root.
pub const DATASET_FILES: [&str; 5] = [
    "smpl_rifke/s001.npy",
    "caption_clip/token/s001.npy",
    "caption_clip/seq/s001.npy",
    "caption_raw/s001.txt",
    "humanml3d_train_split.txt",
];

/// Runs `f` with `<dataset_folder>/<file>` replaced by `data`, then puts the original back.
pub fn with_dataset_file<T>(file: &str, data: &[u8], f: impl FnOnce(&Path) -> T) -> T {
    static ORIGINALS: OnceLock<HashMap<String, Vec<u8>>> = OnceLock::new();
    let root = dataset_folder();
    let originals = ORIGINALS.get_or_init(|| {
        DATASET_FILES
            .iter()
            .map(|f| (f.to_string(), std::fs::read(root.join(f)).expect("read")))
            .collect()
    });
    let path = root.join(file);
    std::fs::write(&path, data).expect("write");
    let out = f(root);
    if let Some(original) = originals.get(file) {
        std::fs::write(&path, original).expect("restore");
    }
    out
}
