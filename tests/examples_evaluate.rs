//! End-to-end check of the `evaluate` example: a tiny synthetic dataset, a tiny DiT trained by
//! the `train` example and a tiny TMR trained by `train_tmr`, then one evaluation batch of 8
//! motions: the table, `metrics.json` and `metrics.csv` hold every metric with an interval for
//! both rows, the real-vs-real row has FD ~ 0, the results do not depend on the batching, and
//! bad input gives a one-line error naming the path, never a panic.
//!
//! The example binaries are run as built in `target/<profile>/examples/`: plain `cargo test`
//! builds them; with a target filter (`cargo test --test examples_evaluate`) build them first
//! with `cargo build --example evaluate --example train --example train_tmr`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail, ensure};
use motion_data::synth::{SynthSkeleton, synth_id, synth_sample};
use motion_data::{FEATURE_DIM, Split, TEXT_DIM, TextFeatures, write_sample, write_split};
use serde_json::Value;

const CLIP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/text_encoders/clip");

/// The ten metrics of each row, in table order.
const METRICS: [&str; 10] = [
    "fd",
    "tmr_score",
    "precision",
    "recall",
    "density",
    "coverage",
    "R@1",
    "R@2",
    "R@3",
    "mm_distance",
];

/// `target/<profile>/examples/<name>`, next to this test binary's `deps/` folder.
fn example(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary has no target/<profile>/deps parent")?;
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        bail!(
            "example binary {} not found: build it with `cargo build --example {name}` (plain \
             `cargo test` builds the examples; `cargo test --test examples_evaluate` does not)",
            path.display()
        );
    }
    Ok(path)
}

/// A fresh scratch folder under cargo's target tmp dir.
fn scratch(name: &str) -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("examples_evaluate-{name}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// 44 synthetic motions cut to 40, 50 or 60 frames (so a batch mixes lengths), split
/// 32 / 4 / 8 (train / val / test) in the reference layout; with `clip_features`, also seeded
/// stand-ins for the `caption_clip/` features (512-d, 3 to 9 tokens per caption).
fn dataset(dir: &Path, clip_features: bool) -> Result<()> {
    let skeleton = SynthSkeleton::default();
    for i in 0..44 {
        let mut s = synth_sample(0, i, &skeleton)?;
        s.frames = s.frames.min(40 + 10 * (i % 3));
        s.features.truncate(s.frames * FEATURE_DIM);
        if clip_features {
            let value = |c: usize, k: usize| ((i * 131 + c * 17 + k * 7) % 23) as f32 / 23.0 - 0.5;
            let tokens: Vec<Vec<f32>> = (0..s.captions.len())
                .map(|c| {
                    (0..(3 + (i + c) % 7) * TEXT_DIM)
                        .map(|k| value(c, k))
                        .collect()
                })
                .collect();
            let pooled = tokens
                .iter()
                .flat_map(|t| t[t.len() - TEXT_DIM..].to_vec())
                .collect();
            s.text = Some(TextFeatures { pooled, tokens });
        }
        write_sample(dir, &s)?;
    }
    let ids = |r: std::ops::Range<usize>| r.map(synth_id).collect::<Vec<_>>();
    write_split(dir, Split::Train, &ids(0..32))?;
    write_split(dir, Split::Val, &ids(32..36))?;
    write_split(dir, Split::Test, &ids(36..44))?;
    Ok(())
}

fn run(bin: &str, args: &[&str]) -> Result<Output> {
    Ok(Command::new(example(bin)?)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()?)
}

fn run_ok(bin: &str, args: &[&str]) -> Result<String> {
    let out = run(bin, args)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{bin} {args:?} failed: {stderr}");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Exit code != 0, exactly one stderr line starting `error:` and naming `needle`, no panic.
fn fails_cleanly(bin: &str, args: &[&str], needle: &str) -> Result<()> {
    let out = run(bin, args)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "{bin} {args:?} succeeded");
    ensure!(
        !stderr.contains("panicked"),
        "{bin} {args:?} panicked: {stderr}"
    );
    ensure!(
        stderr.trim_end().lines().count() == 1 && stderr.starts_with("error: "),
        "{bin} {args:?}: not a one-line error: {stderr:?}"
    );
    ensure!(
        stderr.contains(needle),
        "{bin} {args:?}: {stderr:?} does not name {needle:?}"
    );
    Ok(())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// Trains the tiny model folder (`<dir>/dit/model`) and the tiny TMR (`<dir>/tmr`).
fn train(dir: &Path, data: &Path) -> Result<(PathBuf, PathBuf)> {
    let (dit, tmr) = (dir.join("dit"), dir.join("tmr"));
    run_ok(
        "train",
        &[
            "--config",
            "tiny",
            "--data",
            s(data),
            "--out",
            s(&dit),
            "--text-encoder",
            CLIP,
            "--steps",
            "4",
            "--batch-size",
            "8",
            "--sample-steps",
            "2",
        ],
    )?;
    run_ok(
        "train_tmr",
        &[
            "--config",
            "tiny",
            "--data",
            s(data),
            "--out",
            s(&tmr),
            "--text-encoder",
            CLIP,
            "--steps",
            "4",
            "--batch-size",
            "8",
        ],
    )?;
    Ok((dit.join("model"), tmr))
}

/// `metric -> (estimate, lower, upper)` of one row of `metrics.json`, checking that every
/// metric is there once with a finite interval around its estimate.
fn row(report: &Value, name: &str) -> Result<Vec<(String, f64, f64, f64)>> {
    let items = report[name]
        .as_array()
        .with_context(|| format!("metrics.json has no array {name:?}"))?;
    let got: Vec<&str> = items.iter().filter_map(|v| v["metric"].as_str()).collect();
    ensure!(got == METRICS, "{name} metrics {got:?}");
    items
        .iter()
        .map(|v| {
            let f = |k: &str| {
                v[k].as_f64()
                    .with_context(|| format!("{name} {} has no number {k:?}", v["metric"]))
            };
            let (e, lo, hi) = (f("estimate")?, f("lower")?, f("upper")?);
            ensure!(
                e.is_finite() && lo.is_finite() && hi.is_finite() && lo <= hi,
                "{name} {}: {e} [{lo}, {hi}]",
                v["metric"]
            );
            let resamples = report["settings"]["score"]["bootstrap"]["resamples"].as_f64();
            ensure!(f("confidence")? == 0.95 && Some(f("resamples")?) == resamples);
            Ok((
                v["metric"].as_str().unwrap_or_default().to_string(),
                e,
                lo,
                hi,
            ))
        })
        .collect()
}

fn evaluate_args<'a>(
    data: &'a Path,
    model: &'a Path,
    tmr: &'a Path,
    out: &'a Path,
) -> Vec<&'a str> {
    vec![
        "--data",
        s(data),
        "--checkpoint",
        s(model),
        "--tmr",
        s(tmr),
        "--text-encoder",
        CLIP,
        "--steps",
        "2",
        "--resamples",
        "50",
        "--seed",
        "5",
        "--out",
        s(out),
    ]
}

#[test]
fn evaluate_scores_generated_and_real_motions_with_intervals() -> Result<()> {
    let dir = scratch("run")?;
    let data = dir.join("data");
    dataset(&data, false)?;
    let (model, tmr) = train(&dir, &data)?;

    let out = dir.join("eval");
    let mut args = evaluate_args(&data, &model, &tmr, &out);
    args.extend(["--batches", "1", "--batch-size", "8"]);
    let stdout = run_ok("evaluate", &args)?;
    for label in [
        "FD",
        "TMR-score",
        "precision",
        "coverage",
        "R@3",
        "MM-distance",
    ] {
        ensure!(stdout.contains(label), "table lacks {label}:\n{stdout}");
    }
    ensure!(stdout.contains("8 test motions"), "{stdout}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json"))?)?;
    ensure!(report["settings"]["samples"] == 8, "{}", report["settings"]);
    let generated = row(&report, "generated")?;
    let real = row(&report, "real")?;
    // The ceiling: the real set against itself.
    let (_, fd_real, ..) = real[0];
    ensure!(fd_real.abs() < 1e-6, "FD(real, real) = {fd_real}");
    let get = |r: &[(String, f64, f64, f64)], m: &str| {
        r.iter().find(|x| x.0 == m).map(|x| x.1).unwrap_or(f64::NAN)
    };
    ensure!(get(&real, "coverage") == 1.0 && get(&real, "precision") == 1.0);
    ensure!(get(&generated, "fd") >= 0.0);
    for (m, e, ..) in generated.iter().chain(&real) {
        if m.starts_with("R@") || m == "precision" || m == "recall" || m == "coverage" {
            ensure!((0.0..=1.0).contains(e), "{m} = {e}");
        }
    }

    // metrics.csv: a header and 20 rows, each with its interval.
    let csv = std::fs::read_to_string(out.join("metrics.csv"))?;
    let mut lines = csv.lines();
    ensure!(lines.next() == Some("metric,value,lower,upper,confidence"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    ensure!(rows.len() == 20, "{csv}");
    for (r, name) in rows.iter().zip(
        METRICS
            .iter()
            .map(|m| format!("generated.{m}"))
            .chain(METRICS.iter().map(|m| format!("real.{m}"))),
    ) {
        ensure!(r.len() == 5 && r[0] == name, "row {r:?}, expected {name}");
        for v in &r[1..] {
            let x: f64 = v.parse().with_context(|| format!("row {r:?}"))?;
            ensure!(x.is_finite(), "row {r:?}");
        }
    }

    // Seeds follow the sample, not the batch: two batches of 4 give the same motions, hence
    // the same FD, TMR-score and PRDC (R@k is ranked within the smaller batches, so it differs).
    let out4 = dir.join("eval4");
    let mut args = evaluate_args(&data, &model, &tmr, &out4);
    args.extend(["--batches", "2", "--batch-size", "4"]);
    run_ok("evaluate", &args)?;
    let report4: Value =
        serde_json::from_str(&std::fs::read_to_string(out4.join("metrics.json"))?)?;
    let generated4 = row(&report4, "generated")?;
    for m in [
        "fd",
        "tmr_score",
        "precision",
        "recall",
        "density",
        "coverage",
        "mm_distance",
    ] {
        let (a, b) = (get(&generated, m), get(&generated4, m));
        ensure!(
            (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
            "{m}: {a} with batches of 8, {b} with batches of 4"
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// The reference path: a Lightning `.ckpt` with its statistics, TMR `.pt` state dicts in a
/// folder with their sizes, and the dataset's `caption_clip/` features as the text (no CLIP
/// model involved). No training needed: the fixtures are the small reference artefacts.
#[test]
fn evaluate_runs_a_reference_checkpoint_on_caption_clip_features() -> Result<()> {
    let dir = scratch("reference")?;
    let data = dir.join("data");
    dataset(&data, true)?;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let tmr = dir.join("tmr");
    let (motion_pt, text_pt) = tmr::reference_checkpoint_paths(&tmr);
    std::fs::create_dir_all(motion_pt.parent().context("checkpoints folder")?)?;
    std::fs::copy(fixtures.join("tmr_motion_small.pt"), &motion_pt)?;
    std::fs::copy(fixtures.join("tmr_text_small.pt"), &text_pt)?;
    // The fixture evaluator has one layer (the published one six): its sizes go next to it.
    let layer = |nfeats: usize| tmr::ActorEncoderConfig {
        nfeats,
        num_layers: 1,
        ..tmr::ActorEncoderConfig::tmr_motion()
    };
    let cfg = tmr::TmrConfig {
        motion: layer(FEATURE_DIM),
        text: layer(TEXT_DIM),
    };
    std::fs::write(
        motion_pt.with_file_name("tmr_config.json"),
        serde_json::to_string(&cfg)?,
    )?;
    let out = dir.join("eval");
    let stats = fixtures.join("standardization_tmr-rifke");
    let stdout = run_ok(
        "evaluate",
        &[
            "--data",
            s(&data),
            "--checkpoint",
            s(&fixtures.join("incontext_small.ckpt")),
            "--stats",
            s(&stats),
            "--heads",
            "4",
            "--tmr",
            s(&tmr),
            "--batches",
            "1",
            "--batch-size",
            "8",
            "--steps",
            "2",
            "--sampler",
            "ddpm",
            "--resamples",
            "10",
            "--out",
            s(&out),
        ],
    )?;
    ensure!(stdout.contains("ddpm 2 steps"), "{stdout}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json"))?)?;
    let settings = &report["settings"];
    ensure!(
        settings["text_features"]
            .as_str()
            .is_some_and(|t| t.ends_with("caption_clip")),
        "{settings}"
    );
    ensure!(
        settings["tmr_stats"] == "the motion model's statistics",
        "{settings}"
    );
    let generated = row(&report, "generated")?;
    let real = row(&report, "real")?;
    ensure!(real[0].1.abs() < 1e-6, "FD(real, real) = {}", real[0].1);
    ensure!(
        generated[0].1 > 0.0,
        "FD(generated, real) = {}",
        generated[0].1
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn evaluate_bad_input_fails_with_a_one_line_error_naming_the_path() -> Result<()> {
    let dir = scratch("bad")?;
    let data = dir.join("data");
    dataset(&data, false)?;
    let out = dir.join("out");
    // Checked before any model is loaded: no trained model is needed.
    let model = dir.join("no-model");
    let missing_tmr = dir.join("no-such-tmr");
    let args = evaluate_args(&data, &model, &missing_tmr, &out);
    fails_cleanly("evaluate", &args, s(&missing_tmr))?;

    let empty_tmr = dir.join("empty-tmr");
    std::fs::create_dir_all(&empty_tmr)?;
    let args = evaluate_args(&data, &model, &empty_tmr, &out);
    fails_cleanly("evaluate", &args, "tmr-motion_encoder.pt")?;

    let missing_data = dir.join("no-such-data");
    let args = evaluate_args(&missing_data, &model, &empty_tmr, &out);
    fails_cleanly("evaluate", &args, s(&missing_data))?;

    let mut args = evaluate_args(&data, &model, &empty_tmr, &out);
    args.extend(["--split", "dev"]);
    fails_cleanly("evaluate", &args, "--split")?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
