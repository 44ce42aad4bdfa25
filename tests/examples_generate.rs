//! The `generate` and `visualize_smpl` examples as a user runs them: every file they promise
//! exists and parses (features and joints `.npy`, BVH, GLB read back with `gltf`, GIF decoded,
//! manifest), and every kind of bad input is a one-line error with a non-zero exit code, no
//! panic and no manifest left behind.

mod common;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use common::{assert_clean_failure, run, scratch, stderr};
use motion_dit::dit::Variant;
use motion_dit::output::Manifest;

/// A model folder with random weights (the outputs only need to be well-formed here) and the
/// 32-d test CLIP as its text encoder, 40 frames at most.
fn tiny_model(dir: &Path) -> Result<()> {
    let cfg = common::tiny_dit_config(Variant::AdaLn, 32);
    common::random_model_folder(dir, cfg, 3, 0.2, 2, &common::flat_normalizer(0.05)?)
}

fn npy_shape(path: &Path) -> Result<Vec<usize>> {
    Ok(motion_dit::motion_data::npy::read_header(path)?.shape)
}

/// Frames and channel count of a BVH file, parsed from its text.
fn bvh_summary(text: &str) -> Result<(usize, usize, usize)> {
    let mut lines = text.lines().map(str::trim);
    let mut channels = 0;
    let mut joints = 0;
    for line in lines.by_ref() {
        if line.starts_with("ROOT") || line.starts_with("JOINT") {
            joints += 1;
        }
        if let Some(rest) = line.strip_prefix("CHANNELS") {
            channels += rest
                .split_whitespace()
                .next()
                .context("CHANNELS count")?
                .parse::<usize>()?;
        }
        if line == "MOTION" {
            break;
        }
    }
    let frames: usize = lines
        .next()
        .and_then(|l| l.strip_prefix("Frames:"))
        .context("Frames: line")?
        .trim()
        .parse()?;
    let _frame_time = lines.next().context("Frame Time: line")?;
    let rows: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), frames, "motion rows");
    for row in &rows {
        assert_eq!(row.split_whitespace().count(), channels, "values per row");
    }
    Ok((frames, joints, channels))
}

#[test]
fn generate_writes_every_file_and_the_manifest_lists_them() -> Result<()> {
    let dir = scratch("generate")?;
    let model = dir.join("model");
    tiny_model(&model)?;
    let out = dir.join("out");
    let prompts = dir.join("prompts.txt");
    std::fs::write(&prompts, "a person jumps in place\n\n  a person kicks  \n")?;
    let res = run(
        "generate",
        &[
            "--checkpoint",
            model.to_str().context("utf8")?,
            "--prompt",
            "a person walks forward",
            "--prompts-file",
            prompts.to_str().context("utf8")?,
            "--frames",
            "12",
            "--sampler",
            "dpm++",
            "--steps",
            "2",
            "--seed",
            "10",
            "--size",
            "64",
            "--out",
            out.to_str().context("utf8")?,
        ],
    )?;
    assert!(res.status.success(), "generate failed: {}", stderr(&res));
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(stdout.contains("manifest.json"), "{stdout}");

    let manifest: Manifest =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json"))?)?;
    assert_eq!(manifest.motions.len(), 3);
    let captions: Vec<&str> = manifest
        .motions
        .iter()
        .map(|m| m.caption.as_str())
        .collect();
    assert_eq!(
        captions,
        [
            "a person walks forward",
            "a person jumps in place",
            "a person kicks"
        ]
    );
    for (i, m) in manifest.motions.iter().enumerate() {
        assert_eq!((m.frames, m.seed, m.steps), (12, 10 + i as u64, 2));
        assert_eq!(m.sampler, "dpm++");
        for kind in ["features", "joints", "bvh", "glb", "gif"] {
            let f = m
                .files
                .get(kind)
                .with_context(|| format!("no {kind} file"))?;
            assert!(out.join(f).is_file(), "{f} missing");
        }
        assert_eq!(npy_shape(&out.join(&m.files["features"]))?, [12, 205]);
        assert_eq!(npy_shape(&out.join(&m.files["joints"]))?, [12, 24, 3]);
        let (frames, joints, channels) =
            bvh_summary(&std::fs::read_to_string(out.join(&m.files["bvh"]))?)?;
        assert_eq!((frames, joints), (12, 22));
        assert_eq!(channels, 6 + 21 * 3);
        let doc = gltf::Gltf::from_slice(&std::fs::read(out.join(&m.files["glb"]))?)?;
        let anim = doc.animations().next().context("no animation")?;
        let keyframes = anim
            .channels()
            .map(|c| c.sampler().input().count())
            .max()
            .context("no channel")?;
        assert_eq!(keyframes, 12);
        assert!(doc.skins().next().is_some(), "no skin");
        let mut decoder = gif::DecodeOptions::new();
        decoder.set_color_output(gif::ColorOutput::RGBA);
        let mut gif = decoder.read_info(std::fs::File::open(out.join(&m.files["gif"]))?)?;
        let mut n = 0;
        while gif.read_next_frame()?.is_some() {
            n += 1;
        }
        assert_eq!(n, 12);
    }
    // No temporary files are left next to the outputs.
    for e in std::fs::read_dir(&out)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp-"), "leftover {name}");
    }
    Ok(())
}

#[test]
fn a_motion_is_reproduced_alone_from_its_seed() -> Result<()> {
    let dir = scratch("seed")?;
    let model = dir.join("model");
    tiny_model(&model)?;
    let (a, b) = (dir.join("a"), dir.join("b"));
    let m = model.to_str().context("utf8")?;
    let common = [
        "--checkpoint",
        m,
        "--frames",
        "8",
        "--steps",
        "2",
        "--size",
        "32",
    ];
    let res = run(
        "generate",
        &[
            &common[..],
            &[
                "--prompt",
                "a person walks",
                "--prompt",
                "a person sits down",
            ],
            &["--seed", "5", "--out", a.to_str().context("utf8")?],
        ]
        .concat(),
    )?;
    assert!(res.status.success(), "{}", stderr(&res));
    let res = run(
        "generate",
        &[
            &common[..],
            &["--prompt", "a person sits down"],
            &["--seed", "6", "--out", b.to_str().context("utf8")?],
        ]
        .concat(),
    )?;
    assert!(res.status.success(), "{}", stderr(&res));
    // Batched with another motion: equal up to float rounding.
    let read = |p: PathBuf| -> Result<Vec<f32>> {
        match motion_dit::motion_data::npy::read_npy(&p)? {
            motion_dit::motion_data::npy::NpyContent::Float(a) => Ok(a.data),
            _ => bail!("{} is not a float array", p.display()),
        }
    };
    let (x, y) = (
        read(a.join("001.features.npy"))?,
        read(b.join("000.features.npy"))?,
    );
    let scale = y.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = x
        .iter()
        .zip(&y)
        .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
    assert!(
        diff <= 1e-5 * scale,
        "batched vs alone differ by {diff} (scale {scale})"
    );
    // With --batch-size 1, bit for bit.
    let c = dir.join("c");
    let res = run(
        "generate",
        &[
            &common[..],
            &[
                "--prompt",
                "a person walks",
                "--prompt",
                "a person sits down",
            ],
            &[
                "--seed",
                "5",
                "--batch-size",
                "1",
                "--out",
                c.to_str().context("utf8")?,
            ],
        ]
        .concat(),
    )?;
    assert!(res.status.success(), "{}", stderr(&res));
    assert!(
        std::fs::read(c.join("001.features.npy"))? == std::fs::read(b.join("000.features.npy"))?,
        "--batch-size 1 is not bit-identical to sampling alone"
    );
    Ok(())
}

#[test]
fn a_reference_checkpoint_runs_from_text_features() -> Result<()> {
    let dir = scratch("reference")?;
    let feats = dir.join("caption.npy");
    let values: Vec<f32> = (0..5 * 512)
        .map(|i| ((i * 7) % 13) as f32 / 13.0 - 0.5)
        .collect();
    motion_dit::motion_data::npy::write_npy_f32(&feats, &[5, 512], &values)?;
    let out = dir.join("out");
    let res = run(
        "generate",
        &[
            "--checkpoint",
            "fixtures/incontext_small.ckpt",
            "--stats",
            "fixtures/standardization_tmr-rifke",
            "--heads",
            "4",
            "--text-features",
            feats.to_str().context("utf8")?,
            "--seconds",
            "0.5",
            "--steps",
            "2",
            "--size",
            "32",
            "--out",
            out.to_str().context("utf8")?,
        ],
    )?;
    assert!(res.status.success(), "{}", stderr(&res));
    assert_eq!(npy_shape(&out.join("000.features.npy"))?, [10, 205]);
    // The same checkpoint without statistics: the error names the flag.
    let res = run(
        "generate",
        &[
            "--checkpoint",
            "fixtures/incontext_small.ckpt",
            "--text-features",
            feats.to_str().context("utf8")?,
            "--out",
            dir.join("nostats").to_str().context("utf8")?,
        ],
    )?;
    assert_clean_failure(&res, "stats");
    Ok(())
}

#[test]
fn bad_input_fails_cleanly_and_leaves_no_manifest() -> Result<()> {
    let dir = scratch("bad")?;
    let model = dir.join("model");
    tiny_model(&model)?;
    let m = model.to_str().context("utf8")?;
    let wrong_width = dir.join("wide.npy");
    motion_dit::motion_data::npy::write_npy_f32(&wrong_width, &[3, 7], &[0.5; 21])?;
    let blocker = dir.join("a-file");
    std::fs::write(&blocker, "not a folder")?;
    let unwritable = blocker.join("out");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--checkpoint", m, "--prompt", "walk", "--sampler", "euler"],
            "euler",
        ),
        (
            vec!["--checkpoint", "no/such/model.ckpt", "--prompt", "walk"],
            "no/such/model.ckpt",
        ),
        (
            vec!["--checkpoint", m, "--prompts-file", "no/such/prompts.txt"],
            "no/such/prompts.txt",
        ),
        (vec!["--checkpoint", m, "--prompt", "  "], "empty"),
        (
            vec!["--checkpoint", m, "--prompt", "walk", "--frames", "0"],
            "--frames",
        ),
        (
            vec!["--checkpoint", m, "--prompt", "walk", "--frames", "-3"],
            "--frames",
        ),
        (
            vec!["--checkpoint", m, "--prompt", "walk", "--frames", "41"],
            "maximum of 40 frames",
        ),
        (
            vec!["--checkpoint", m, "--prompt", "walk", "--seconds", "0"],
            "--seconds",
        ),
        (
            vec![
                "--checkpoint",
                m,
                "--text-features",
                wrong_width.to_str().context("utf8")?,
            ],
            "[3, 7]",
        ),
        (
            vec!["--checkpoint", m, "--prompt", "walk", "--device", "tpu"],
            "tpu",
        ),
        (vec!["--checkpoint", m], "--prompt"),
    ];
    for (i, (args, needle)) in cases.iter().enumerate() {
        let out = dir.join(format!("out{i}"));
        let mut args = args.clone();
        let o = out.to_str().context("utf8")?;
        args.extend(["--out", o, "--steps", "1", "--size", "32"]);
        let res = run("generate", &args)?;
        assert_clean_failure(&res, needle);
        assert!(
            !out.join("manifest.json").exists(),
            "case {i} left a manifest"
        );
    }
    let res = run(
        "generate",
        &[
            "--checkpoint",
            m,
            "--prompt",
            "walk",
            "--out",
            unwritable.to_str().context("utf8")?,
        ],
    )?;
    assert_clean_failure(&res, "a-file");
    Ok(())
}

#[test]
fn visualize_smpl_renders_a_dataset_sample() -> Result<()> {
    let dir = scratch("visualize")?;
    let data = dir.join("data");
    motion_dit::motion_data::synth::synthesize_folder(&data, 10, 3, |_| {})?;
    let out = dir.join("out");
    let res = run(
        "visualize_smpl",
        &[
            "--data",
            data.to_str().context("utf8")?,
            "--split",
            "train",
            "--index",
            "1",
            "--size",
            "48",
            "--out",
            out.to_str().context("utf8")?,
        ],
    )?;
    assert!(res.status.success(), "{}", stderr(&res));
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(stdout.contains("205 features per frame"), "{stdout}");
    let gifs: Vec<PathBuf> = std::fs::read_dir(&out)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    assert!(
        gifs.iter()
            .any(|p| p.extension().is_some_and(|e| e == "gif")),
        "{gifs:?}"
    );
    let res = run(
        "visualize_smpl",
        &["--data", data.to_str().context("utf8")?, "--index", "999"],
    )?;
    assert_clean_failure(&res, "999");
    let res = run("visualize_smpl", &["--data", "no/such/data"])?;
    assert_clean_failure(&res, "no/such/data");
    Ok(())
}

fn read_features(p: &Path) -> Result<Vec<f32>> {
    match motion_dit::motion_data::npy::read_npy(p)? {
        motion_dit::motion_data::npy::NpyContent::Float(a) => Ok(a.data),
        _ => bail!("{} is not a float array", p.display()),
    }
}

/// The editing flags as a user runs them: `--prefix` reproduces the prefix's frames, a
/// `--keyframes` file its poses, `--timeline` writes one motion of the summed length; each
/// reports its constraint error or seam jerk; bad files are one-line errors naming them.
#[test]
fn generate_edits_with_a_prefix_keyframes_and_a_timeline() -> Result<()> {
    let dir = scratch("editing")?;
    let model = dir.join("model");
    tiny_model(&model)?;
    let m = model.to_str().context("utf8")?;
    let generate = |extra: &[&str], out: &Path| -> Result<String> {
        let args = [
            &[
                "--checkpoint",
                m,
                "--steps",
                "2",
                "--size",
                "32",
                "--seed",
                "3",
            ][..],
            extra,
            &["--out", out.to_str().context("utf8")?],
        ]
        .concat();
        let res = run("generate", &args)?;
        anyhow::ensure!(res.status.success(), "{args:?}: {}", stderr(&res));
        Ok(String::from_utf8_lossy(&res.stdout).into_owned())
    };
    // A source motion to continue and to take poses from.
    let src = dir.join("src");
    generate(&["--prompt", "a person walks", "--frames", "10"], &src)?;
    let src_feats = src.join("000.features.npy");
    let source = read_features(&src_feats)?;

    let prefix = dir.join("prefix");
    let stdout = generate(
        &[
            "--prompt",
            "a person jumps",
            "--frames",
            "16",
            "--prefix",
            src_feats.to_str().context("utf8")?,
        ],
        &prefix,
    )?;
    assert!(stdout.contains("10 fixed frame(s)"), "{stdout}");
    let got = read_features(&prefix.join("000.features.npy"))?;
    assert_eq!(got.len(), 16 * 205);
    let err = got[..source.len()]
        .iter()
        .zip(&source)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-5, "prefix error {err}");

    let keys = dir.join("keys.json");
    std::fs::write(
        &keys,
        r#"{"keyframes": [{"frame": 0, "motion": "src/000.features.npy", "channels": "all"},
                          {"frame": -1, "motion": "src/000.features.npy", "motion_frame": -1}]}"#,
    )?;
    let kf = dir.join("kf");
    let stdout = generate(
        &[
            "--prompt",
            "a person jumps",
            "--frames",
            "14",
            "--keyframes",
            keys.to_str().context("utf8")?,
        ],
        &kf,
    )?;
    assert!(stdout.contains("2 fixed frame(s)"), "{stdout}");
    let got = read_features(&kf.join("000.features.npy"))?;
    let last_src = &source[9 * 205..];
    let last_got = &got[13 * 205..];
    // The pose channels (not the root's velocity and yaw rate, channels 1..4).
    for c in (0..205).filter(|c| !(1..4).contains(c)) {
        assert!((last_src[c] - last_got[c]).abs() < 1e-5, "channel {c}");
    }

    let path = dir.join("path.csv");
    std::fs::write(&path, "x,y\n0,0\n0.5,0.1\n1.0,0.4\n")?;
    let stdout = generate(
        &[
            "--prompt",
            "a person walks",
            "--frames",
            "12",
            "--trajectory",
            path.to_str().context("utf8")?,
        ],
        &dir.join("path"),
    )?;
    assert!(
        stdout.contains("largest distance of the pelvis from the path"),
        "{stdout}"
    );
    let timeline = dir.join("timeline.json");
    std::fs::write(
        &timeline,
        r#"[{"caption": "a person walks", "seconds": 1.5},
            {"caption": "a person jumps", "seconds": 1.5},
            {"caption": "a person sits down", "seconds": 1.0}]"#,
    )?;
    let tl = dir.join("tl");
    let stdout = generate(
        &[
            "--timeline",
            timeline.to_str().context("utf8")?,
            "--overlap",
            "0.5",
        ],
        &tl,
    )?;
    assert!(stdout.contains("3 segments, 80 frames"), "{stdout}");
    assert!(
        stdout.contains("jerk within 3 frames of the seams"),
        "{stdout}"
    );
    let manifest: Manifest =
        serde_json::from_str(&std::fs::read_to_string(tl.join("manifest.json"))?)?;
    assert_eq!(manifest.motions.len(), 1);
    assert_eq!(manifest.motions[0].frames, 80);
    assert_eq!(
        manifest.motions[0].caption,
        "a person walks | a person jumps | a person sits down"
    );

    // Bad input: a prefix as long as the motion, a keyframe outside it, an empty timeline.
    let bad = dir.join("bad");
    let res = run(
        "generate",
        &[
            "--checkpoint",
            m,
            "--prompt",
            "a person jumps",
            "--frames",
            "10",
            "--prefix",
            src_feats.to_str().context("utf8")?,
            "--out",
            bad.to_str().context("utf8")?,
        ],
    )?;
    assert_clean_failure(&res, "--prefix");
    std::fs::write(
        &keys,
        r#"{"keyframes": [{"frame": 40, "features": [0.0]}]}"#,
    )?;
    let res = run(
        "generate",
        &[
            "--checkpoint",
            m,
            "--prompt",
            "a person jumps",
            "--frames",
            "10",
            "--keyframes",
            keys.to_str().context("utf8")?,
            "--out",
            bad.to_str().context("utf8")?,
        ],
    )?;
    assert_clean_failure(&res, "keys.json");
    std::fs::write(&timeline, "[]")?;
    let res = run(
        "generate",
        &[
            "--checkpoint",
            m,
            "--timeline",
            timeline.to_str().context("utf8")?,
            "--out",
            bad.to_str().context("utf8")?,
        ],
    )?;
    assert_clean_failure(&res, "no segment");
    std::fs::write(&path, "x,y\n0,0\n1,oops\n")?;
    let res = run(
        "generate",
        &[
            "--checkpoint",
            m,
            "--prompt",
            "a person walks",
            "--trajectory",
            path.to_str().context("utf8")?,
            "--out",
            bad.to_str().context("utf8")?,
        ],
    )?;
    assert_clean_failure(&res, "line 3");
    assert!(!bad.join("manifest.json").exists());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
