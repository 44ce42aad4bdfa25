//! The WebAssembly generator, run natively: it loads a model folder from memory and makes
//! exactly the motion and the files the native pipeline makes for the same caption, length and
//! seed; bad input is an error naming what is wrong.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use motion_dit::candle::{Device, Tensor};
use motion_dit::dit::{Dit, DitConfig, Variant};
use motion_dit::motion_repr::Normalizer;
use motion_dit::{
    GenerateOptions, ModelConfig, MotionModel, Request, TextEncoderKind, TextEncoderSpec,
    TextToMotion,
};
use motion_web::Generator;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A small random AdaLN model folder conditioned on the 32-d test BERT, written to `dir`.
fn model_folder(dir: &Path) -> Result<()> {
    let mut cfg = DitConfig::reference(Variant::AdaLn);
    (
        cfg.latent_dim,
        cfg.num_layers,
        cfg.num_heads,
        cfg.mlp_multiplier,
    ) = (32, 1, 2, 2);
    (cfg.num_cond_feats, cfg.num_frames, cfg.max_positions) = (32, 40, 64);
    let (_, vars) = Dit::init_random(&cfg, 3, &Device::Cpu)?;
    let weights: HashMap<String, Tensor> = vars
        .data()
        .lock()
        .map_err(|_| "poisoned lock")?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    let d = 205;
    let mean: Vec<f32> = (0..d).map(|i| (i as f32 * 0.37).sin() * 0.1).collect();
    let std: Vec<f32> = (0..d).map(|i| 0.5 + (i % 7) as f32 * 0.05).collect();
    let normalizer = Normalizer::new(
        Tensor::from_vec(mean, d, &Device::Cpu)?,
        Tensor::from_vec(std, d, &Device::Cpu)?,
    )?;
    let mut config = ModelConfig::new(cfg);
    config.text_encoder = Some(TextEncoderSpec::folder(
        TextEncoderKind::Sentence,
        "text_encoder",
    ));
    config.sampling.steps = 4;
    motion_dit::save_model_folder(dir, &config, &weights, &normalizer)?;
    let te = dir.join("text_encoder");
    std::fs::create_dir_all(&te)?;
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(
            repo().join("fixtures/text_encoders/bert").join(f),
            te.join(f),
        )?;
    }
    Ok(())
}

/// Every file under `dir` by its relative name, plus the open body model under `body/`.
fn files_of(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
                out.push((rel, std::fs::read(&path)?));
            }
        }
    }
    let body = repo().join("assets/open_body/smplh_open.npz");
    out.push(("body/smplh_open.npz".into(), std::fs::read(body)?));
    Ok(out)
}

fn scratch(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("motion-web-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn npy_f32(bytes: &[u8]) -> Result<Vec<f32>> {
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let data = &bytes[10 + header_len..];
    Ok(data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[test]
fn the_generator_makes_the_native_pipelines_motion_and_files() -> Result<()> {
    let dir = scratch("same")?;
    model_folder(&dir)?;
    let mut generator = Generator::new();
    for (name, bytes) in files_of(&dir)? {
        generator.add_file(name, bytes);
    }
    generator.load()?;
    assert_eq!(generator.fps(), 20.0);
    assert_eq!(generator.max_seconds(), 2.0);
    let web = generator.generate("a person walks forward", 1.5, 7)?;
    assert_eq!(web.frames(), 30);

    let pipe = TextToMotion::new(MotionModel::from_folder(&dir, &Device::Cpu)?);
    let native = pipe
        .generate_with(
            &[Request::caption("a person walks forward", 30, 7)],
            &GenerateOptions::for_model(pipe.model()),
            &mut |_| {},
        )?
        .remove(0);
    let expected = native.features.flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(
        npy_f32(&web.features_npy())?,
        expected,
        "same features, bit for bit"
    );
    let joints = native.joints.flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(npy_f32(&web.joints_npy())?, joints);
    let body = motion_dit::smpl::BodyModel::from_npz(
        repo().join("assets/open_body/smplh_open.npz"),
        &Device::Cpu,
    )?;
    let params = native.body_params(&body)?;
    let glb = motion_dit::motion_export::glb_bytes(&body, &params, 20.0, &Default::default())?;
    assert_eq!(web.glb(), glb, "the same .glb as generate writes");
    assert!(web.bvh().starts_with("HIERARCHY"));
    assert!(web.text_ms() >= 0.0 && web.sampling_ms() >= 0.0 && web.decode_ms() >= 0.0);

    // Another seed, another motion; the same seed again, the same motion.
    let other = generator.generate("a person walks forward", 1.5, 8)?;
    assert_ne!(other.features_npy(), web.features_npy());
    let again = generator.generate("a person walks forward", 1.5, 7)?;
    assert_eq!(again.features_npy(), web.features_npy());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn bad_files_and_requests_are_errors_naming_the_fault() -> Result<()> {
    let dir = scratch("bad")?;
    model_folder(&dir)?;
    let files = files_of(&dir)?;
    let load_without = |skip: &str| -> String {
        let mut g = Generator::new();
        for (name, bytes) in &files {
            if name != skip {
                g.add_file(name.clone(), bytes.clone());
            }
        }
        g.load().err().map(|e| e.to_string()).unwrap_or_default()
    };
    assert!(load_without("body/smplh_open.npz").contains("body/"));
    assert!(load_without("config.json").contains("config.json"));
    assert!(load_without("model.safetensors").contains("model.safetensors"));
    assert!(load_without("text_encoder/config.json").contains("text_encoder/"));
    let mut corrupt = Generator::new();
    for (name, bytes) in &files {
        let bytes = if name == "stats.safetensors" {
            bytes[..bytes.len() / 2].to_vec()
        } else {
            bytes.clone()
        };
        corrupt.add_file(name.clone(), bytes);
    }
    let e = corrupt
        .load()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("stats.safetensors"), "{e}");

    let mut g = Generator::new();
    assert!(g.generate("a person jumps", 1.0, 0).is_err(), "not loaded");
    for (name, bytes) in files {
        g.add_file(name, bytes);
    }
    g.load()?;
    for (caption, seconds) in [
        ("", 1.0),
        ("  ", 1.0),
        ("a", 0.0),
        ("a", -1.0),
        ("a", f64::NAN),
    ] {
        assert!(
            g.generate(caption, seconds, 0).is_err(),
            "{caption:?} {seconds}"
        );
    }
    let e = g
        .generate("a person jumps", 3.0, 0)
        .err()
        .map(|e| e.to_string());
    assert!(
        e.is_some_and(|e| e.contains("maximum")),
        "longer than the model's 2 s"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
