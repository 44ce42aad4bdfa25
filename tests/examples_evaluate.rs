//! End-to-end check of the `evaluate` example: a tiny synthetic dataset, a tiny DiT trained by
//! the `train` example and a tiny TMR trained by `train_tmr`, then one evaluation batch of 8
//! motions: the table, `metrics.json` and `metrics.csv` hold every metric with an interval for
//! both rows, the real-vs-real row has FD ~ 0, the results do not depend on the batching, and
//! bad input gives a one-line error naming the path, never a panic.
//!
//! The example binaries are run as built in `target/<profile>/examples/`: plain `cargo test`
//! builds them; with a target filter (`cargo test --test examples_evaluate`) build them first
//! with `cargo build --example evaluate --example sampler_sweep --example train --example
//! train_tmr`.

mod common;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use common::{CLIP, StandInClip, fails_cleanly, fixtures, run_ok, s, scratch, train_args};
use motion_data::synth::synth_id;
use motion_data::{FEATURE_DIM, Split, TEXT_DIM, write_split};
use serde_json::Value;

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

/// 44 synthetic motions cut to 40, 50 or 60 frames (so a batch mixes lengths), split
/// 32 / 4 / 8 (train / val / test) in the reference layout; with `clip_features`, also seeded
/// stand-ins for the `caption_clip/` features (512-d, 3 to 9 tokens per caption).
fn dataset(dir: &Path, clip_features: bool) -> Result<()> {
    let clip = clip_features.then_some(StandInClip {
        tokens: |i, c| 3 + (i + c) % 7,
        value: |i, c, k| ((i * 131 + c * 17 + k * 7) % 23) as f32 / 23.0 - 0.5,
    });
    common::write_synth_motions(dir, 44, |i| 40 + 10 * (i % 3), clip)?;
    let ids = |r: std::ops::Range<usize>| r.map(synth_id).collect::<Vec<_>>();
    write_split(dir, Split::Train, &ids(0..32))?;
    write_split(dir, Split::Val, &ids(32..36))?;
    write_split(dir, Split::Test, &ids(36..44))?;
    Ok(())
}

/// Trains the tiny model folder (`<dir>/dit/model`) and the tiny TMR (`<dir>/tmr`).
fn train(dir: &Path, data: &Path) -> Result<(PathBuf, PathBuf)> {
    let (dit, tmr) = (dir.join("dit"), dir.join("tmr"));
    let dit_run = ["--steps", "4", "--batch-size", "8", "--sample-steps", "2"];
    run_ok("train", &train_args("tiny", data, &dit, &dit_run))?;
    let tmr_run = ["--steps", "4", "--batch-size", "8"];
    run_ok("train_tmr", &train_args("tiny", data, &tmr, &tmr_run))?;
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
/// The small reference TMR evaluator of the fixtures in the `train_tmr` layout, with its sizes
/// next to it (it has one layer, the published one six), in `<dir>/tmr`.
fn reference_tmr_folder(dir: &Path) -> Result<PathBuf> {
    let fixtures = fixtures();
    let tmr = dir.join("tmr");
    let (motion_pt, text_pt) = tmr::reference_checkpoint_paths(&tmr);
    std::fs::create_dir_all(motion_pt.parent().context("checkpoints folder")?)?;
    std::fs::copy(fixtures.join("tmr_motion_small.pt"), &motion_pt)?;
    std::fs::copy(fixtures.join("tmr_text_small.pt"), &text_pt)?;
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
    Ok(tmr)
}

/// `sampler_sweep` on a reference checkpoint: one row per setting (baseline first) with the
/// documented keys, the CSV and the plot, and the verdict line; a bad setting is a clean error.
#[test]
fn sampler_sweep_writes_rows_csv_and_plot_for_a_reference_checkpoint() -> Result<()> {
    let dir = scratch("sweep")?;
    let data = dir.join("data");
    dataset(&data, true)?;
    let fixtures = fixtures();
    let tmr = reference_tmr_folder(&dir)?;
    let out = dir.join("sweep");
    let stats = fixtures.join("standardization_tmr-rifke");
    let ckpt = fixtures.join("incontext_small.ckpt");
    let base = [
        "--data",
        s(&data),
        "--checkpoint",
        s(&ckpt),
        "--stats",
        s(&stats),
        "--heads",
        "4",
        "--tmr",
        s(&tmr),
        "--samples",
        "8",
        "--batch-size",
        "8",
        "--resamples",
        "10",
        "--out",
        s(&out),
    ];
    let mut args = base.to_vec();
    args.extend([
        "--settings",
        "ddim:2,dpm++:2,unipc:2:logsnr",
        "--also",
        "dpm++3m:3",
        "--baseline",
        "ddpm:3",
    ]);
    let stdout = run_ok("sampler_sweep", &args)?;
    ensure!(stdout.contains("fewest NFE"), "{stdout}");
    let rows: Value = serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json"))?)?;
    let rows = rows.as_array().context("sweep.json is a list")?;
    let settings: Vec<(String, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["sampler"].as_str().unwrap_or_default().to_string(),
                r["steps"].as_u64().unwrap_or(0),
                r["nfe"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let want = [
        ("ddpm", 3),
        ("ddim", 2),
        ("dpm++", 2),
        ("unipc", 2),
        ("dpm++3m", 3),
    ];
    ensure!(settings.len() == want.len(), "{settings:?}");
    for ((sampler, steps, nfe), (ws, wn)) in settings.iter().zip(want) {
        ensure!(sampler == ws && *steps == wn && *nfe == wn, "{settings:?}");
    }
    ensure!(rows[3]["grid"] == "logsnr", "{}", rows[3]);
    for r in rows {
        ensure!(r["seconds"].as_f64().is_some_and(|t| t > 0.0), "{r}");
        for key in ["fd", "r1", "tmr_score"] {
            let f = |k: &str| r[key][k].as_f64().unwrap_or(f64::NAN);
            let (v, lo, hi) = (f("value"), f("low"), f("high"));
            ensure!(
                lo <= v && v <= hi && lo.is_finite() && hi.is_finite(),
                "{key} of {r}"
            );
        }
    }
    let csv = std::fs::read_to_string(out.join("sweep.csv"))?;
    ensure!(csv.lines().count() == 1 + want.len(), "{csv}");
    ensure!(csv.starts_with("sampler,grid,steps,nfe,"), "{csv}");
    let png = image::open(out.join("sweep.png"))?;
    ensure!(
        png.width() > 1000 && png.height() > 300,
        "{}x{}",
        png.width(),
        png.height()
    );
    ensure!(out.join("real.json").is_file());

    // A bad setting is a usage error naming it; a missing dataset names the folder.
    let mut bad = base.to_vec();
    bad.extend(["--settings", "euler:3"]);
    common::assert_clean_failure(
        &common::run("sampler_sweep", &bad)?,
        "unknown sampler \"euler\"",
    );
    let missing = dir.join("no-such-data");
    let mut bad = base.to_vec();
    bad[1] = s(&missing);
    fails_cleanly("sampler_sweep", &bad, s(&missing))?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn evaluate_runs_a_reference_checkpoint_on_caption_clip_features() -> Result<()> {
    let dir = scratch("reference")?;
    let data = dir.join("data");
    dataset(&data, true)?;
    let fixtures = fixtures();
    let tmr = reference_tmr_folder(&dir)?;
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
