//! The bundled default model follows the text: for four captions, 20 seeds each, sampled with
//! the model's own sampler settings, at least 18 motions of 5 s show what the caption says
//! ([`motion_dit::descriptors::Expectation`] holds the thresholds).
//!
//! The captions' all-MiniLM-L6-v2 embeddings are committed (`fixtures/default_model/`, written
//! by the `encode_text` example with the real encoder), so this test needs no download.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle::{Device, Tensor};
use motion_dit::descriptors::Expectation;
use motion_dit::{GenerateOptions, MotionModel, Request, TextInput, TextToMotion};

const SEEDS: u64 = 20;
const MUST_PASS: usize = 18;

fn embeddings_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/default_model/captions")
}

/// `(caption, embedding file)` from the fixture's `captions.json`.
fn fixture_captions() -> Result<Vec<(String, PathBuf)>> {
    let index = embeddings_dir().join("captions.json");
    let text = std::fs::read_to_string(&index).with_context(|| index.display().to_string())?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let rows = json["captions"]
        .as_array()
        .context("captions.json: no captions")?;
    rows.iter()
        .map(|r| {
            let caption = r["caption"].as_str().context("caption")?.to_string();
            let file = embeddings_dir().join(r["file"].as_str().context("file")?);
            Ok((caption, file))
        })
        .collect()
}

#[test]
fn the_default_model_follows_the_text() -> Result<()> {
    let device = Device::Cpu;
    let model =
        MotionModel::from_folder_without_text_encoder(motion_dit::DEFAULT_MODEL_DIR, &device)?;
    assert_eq!(model.config().num_cond_feats, 384, "conditioned on MiniLM");
    let frames = (5.0 * model.fps()).round() as usize;
    let pipe = TextToMotion::new(model);
    let expectations = [
        ("a person walks forward", Expectation::WalkForward),
        ("a person jumps in place", Expectation::JumpInPlace),
        ("a person waves the right hand", Expectation::WaveRightHand),
        ("a person squats", Expectation::Squat),
    ];
    let captions = fixture_captions()?;
    let mut failures = Vec::new();
    for (caption, expectation) in expectations {
        let (_, file) = captions
            .iter()
            .find(|(c, _)| c == caption)
            .with_context(|| format!("no committed embedding for {caption:?}"))?;
        let features = motion_dit::pipeline::read_text_features(file)?;
        let requests: Vec<Request> = (0..SEEDS)
            .map(|seed| Request {
                text: TextInput::Features(features.clone()),
                frames,
                seed,
                constraint: None,
            })
            .collect();
        let opts = GenerateOptions {
            max_batch: SEEDS as usize,
            ..GenerateOptions::for_model(pipe.model())
        };
        let motions = pipe.generate_with(&requests, &opts, &mut |_| {})?;
        let report = expectation.check_motions(&motions)?;
        let passed = report.passed;
        println!(
            "{caption:?}: {passed}/{SEEDS}\n  {}",
            report.lines.join("\n  ")
        );
        if passed < MUST_PASS {
            failures.push(format!("{caption:?}: {passed}/{SEEDS} (need {MUST_PASS})"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("; "));
    Ok(())
}

/// Editing with the default model: a 30-second timeline of the four captions (7.5 s each)
/// comes out as one motion whose seams are no jerkier than 1.5x the inside, for three seeds;
/// a continuation reproduces its prefix.
#[test]
fn the_default_model_edits_timelines_and_continuations() -> Result<()> {
    use motion_dit::editing::{Constraint, Segment, seam_jerk};
    let device = Device::Cpu;
    let model =
        MotionModel::from_folder_without_text_encoder(motion_dit::DEFAULT_MODEL_DIR, &device)?;
    let fps = model.fps();
    let pipe = TextToMotion::new(model);
    let opts = GenerateOptions::for_model(pipe.model());
    let captions = fixture_captions()?;
    let features = |caption: &str| -> Result<TextInput> {
        let (_, file) = captions
            .iter()
            .find(|(c, _)| c == caption)
            .with_context(|| format!("no committed embedding for {caption:?}"))?;
        Ok(TextInput::Features(
            motion_dit::pipeline::read_text_features(file)?,
        ))
    };
    let order = [
        "a person walks forward",
        "a person jumps in place",
        "a person waves the right hand",
        "a person squats",
    ];
    let seg_frames = (7.5 * fps).round() as usize;
    let segments = order
        .iter()
        .map(|c| {
            Ok(Segment {
                text: features(c)?,
                frames: seg_frames,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let seams: Vec<usize> = (1..4).map(|k| k * seg_frames).collect();
    for seed in 0..3 {
        let m = pipe.generate_timeline(&segments, seed, fps as usize, &opts, &mut |_| {})?;
        assert_eq!(m.frames(), 4 * seg_frames);
        let (at, inside) = seam_jerk(&m.joints, m.fps, &seams, 3)?;
        eprintln!("timeline seed {seed}: seam jerk {at:.1}, inside {inside:.1} m/s^3");
        assert!(
            at <= 1.5 * inside,
            "seed {seed}: seams {at} vs inside {inside}"
        );
    }

    // Continue 3 s of walking with a jump.
    let walk = pipe.generate(&[Request {
        text: features("a person walks forward")?,
        frames: (3.0 * fps) as usize,
        seed: 1,
        constraint: None,
    }])?;
    let frames = (6.0 * fps) as usize;
    let constraint = Constraint::prefix(&walk[0].features, frames)?;
    let jumps = pipe.generate(&[Request {
        text: features("a person jumps in place")?,
        frames,
        seed: 3,
        constraint: Some(constraint.clone()),
    }])?;
    let err = constraint.max_error(&jumps[0].features)?;
    assert!(err < 1e-5, "prefix error {err}");
    Ok(())
}

/// Editing keeps the default model's motions on the data manifold. For the first 128 captions
/// of the synthetic test split (their text conditions and lengths, and the default evaluator's
/// embeddings of their real motions and of the captions, are committed in
/// `fixtures/default_model/test_split/`, written by `edit_eval --save-fixture`), the motions
/// generated under a prefix, under two keyframes and as 4-caption timelines (each segment cut
/// out and scored against its own caption) have an FD to the real motions inside the 95 %
/// interval of free generation's FD, and the known parts are reproduced; prefix and keyframe
/// motions also keep a TMR-score no lower than free generation's interval (timeline segments
/// score lower: see docs/editing.md). The constraints come from free motions of the same captions
/// with other seeds, so no dataset motion is needed.
#[test]
fn the_default_models_edits_stay_on_the_data_manifold() -> Result<()> {
    use candle::IndexOp;
    use motion_dit::editing::{Channels, Constraint, Keyframe, Segment};
    use motion_dit::evaluate::{self, ScoreConfig, TmrFiles, motion_seed};
    let device = Device::Cpu;
    let model =
        MotionModel::from_folder_without_text_encoder(motion_dit::DEFAULT_MODEL_DIR, &device)?;
    let (tmr, _) = TmrFiles::find(Path::new(motion_dit::DEFAULT_EVALUATOR_DIR))?.load(
        None,
        model.normalizer(),
        &device,
    )?;
    let pipe = TextToMotion::new(model);
    let opts = GenerateOptions::for_model(pipe.model());
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/default_model/test_split/test_split.safetensors");
    let t = candle::safetensors::load(&fixture, &device)?;
    let get = |k: &str| {
        t.get(k)
            .with_context(|| format!("{}: no {k}", fixture.display()))
    };
    let (condition, real_emb, text_emb) = (get("condition")?, get("real_emb")?, get("text_emb")?);
    let frames = get("frames")?.to_vec1::<u32>()?;
    let requests = frames
        .iter()
        .enumerate()
        .map(|(k, &f)| {
            Ok(Request {
                text: TextInput::Features(condition.i(k)?),
                frames: f as usize,
                seed: motion_seed(0, k),
                constraint: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let cfg = ScoreConfig::default();
    let score = |motions: &[motion_dit::Motion]| -> Result<evaluate::MetricSet> {
        let feats: Vec<&Tensor> = motions.iter().map(|m| &m.features).collect();
        let emb = evaluate::embed_motions(&tmr, &feats, 64, &device, &mut |_| {})?;
        Ok(evaluate::score(real_emb, &emb, text_emb, &cfg)?)
    };
    let free = pipe.generate_with(&requests, &opts, &mut |_| {})?;
    let free_scores = score(&free)?;
    let (fd, tmr_score) = (free_scores.fd, free_scores.tmr_score);
    eprintln!(
        "free: FD {:.2} [{:.2}, {:.2}], TMR-score {:.3} [{:.3}, {:.3}]",
        fd.estimate, fd.lower, fd.upper, tmr_score.estimate, tmr_score.lower, tmr_score.upper
    );

    // Prefix (first third) and keyframes (first frame, last pose) of the free motions,
    // generated again with other seeds.
    let mut edits: Vec<(&str, Vec<Request>)> = vec![("prefix", vec![]), ("keyframes", vec![])];
    for (k, (r, m)) in requests.iter().zip(&free).enumerate() {
        let f = r.frames;
        let seeded = |c| Request {
            seed: motion_seed(1, k),
            constraint: Some(c),
            ..r.clone()
        };
        let prefix = Constraint::prefix(&m.features.narrow(0, 0, (f / 3).max(1))?, f)?;
        edits[0].1.push(seeded(prefix));
        let keys = [
            Keyframe {
                frame: 0,
                features: m.features.i(0)?,
                channels: Channels::All,
            },
            Keyframe {
                frame: f - 1,
                features: m.features.i(f - 1)?,
                channels: Channels::Pose,
            },
        ];
        edits[1].1.push(seeded(Constraint::keyframes(f, &keys)?));
    }
    let mut results = Vec::new();
    for (name, edited) in &edits {
        let motions = pipe.generate_with(edited, &opts, &mut |_| {})?;
        for (r, m) in edited.iter().zip(&motions) {
            let c = r.constraint.as_ref().context("constraint")?;
            let err = c.max_error(&m.features)?;
            assert!(err < 1e-5, "{name}: known part off by {err}");
        }
        results.push((*name, score(&motions)?));
    }
    // Timelines of 4 consecutive captions, each segment as long as its request.
    let fps = pipe.model().fps();
    let mut parts = Vec::new();
    for group in requests.chunks(4) {
        let segments: Vec<Segment> = group.iter().map(Segment::from).collect();
        let m =
            pipe.generate_timeline(&segments, group[0].seed, fps as usize, &opts, &mut |_| {})?;
        let lens: Vec<usize> = group.iter().map(|r| r.frames).collect();
        parts.extend(m.split(&lens)?);
    }
    results.push(("timeline segments", score(&parts)?));

    for (name, s) in &results {
        eprintln!(
            "{name}: FD {:.2}, TMR-score {:.3}",
            s.fd.estimate, s.tmr_score.estimate
        );
        assert!(
            s.fd.estimate >= fd.lower && s.fd.estimate <= fd.upper,
            "{name}: FD {} outside free generation's [{}, {}]",
            s.fd.estimate,
            fd.lower,
            fd.upper
        );
        if *name == "timeline segments" {
            continue;
        }
        assert!(
            s.tmr_score.estimate >= tmr_score.lower,
            "{name}: TMR-score {} below free generation's interval [{}, {}]",
            s.tmr_score.estimate,
            tmr_score.lower,
            tmr_score.upper
        );
    }
    Ok(())
}
