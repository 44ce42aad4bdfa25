//! Malformed model folders and prompt files must give a typed error naming the file and the
//! field at fault, never a panic, an abort or an allocation far above the file size.
//!
//! Seeded mutation campaigns (`test_fixtures::mutate::SplitMix64`, fixed seeds) over
//! `MotionModel::from_folder_without_text_encoder` / `from_folder` on a tiny model folder
//! (`config.json` through `mutate_json`: numbers set to 0, -1, 2^31, 2^63, 2^64 and beyond,
//! wrong types, missing, duplicated and unknown keys, invalid UTF-8, deep nesting; the
//! `.safetensors` weights and statistics through `mutate_safetensors`), and over
//! `read_prompts_file` (`mutate_text`). This binary installs a counting allocator (see
//! `test_fixtures::mutate`): a case that allocates more than 64 x its input + 64 MiB fails with
//! its description; a single request above 1 GiB is refused, which aborts the binary with
//! Rust's "memory allocation failed" message (`MUTATE_TRACE=1` prints each case first).

mod common;

use std::path::Path;

use anyhow::Result;
use candle::Device;
use motion_dit::dit::Variant;
use motion_dit::{MotionModel, read_prompts_file};
use test_fixtures::mutate::{
    Campaign, CappedAlloc, Draw, SAFETENSORS_LEN, SPECIAL_VALUES, Scratch, SplitMix64, mutate_json,
    mutate_safetensors, mutate_text, set_field, tracking, truncation_lengths,
};

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc { cap: 1 << 30 };

fn scratch(tag: &str) -> std::io::Result<Scratch> {
    Scratch::new(
        env!("CARGO_TARGET_TMPDIR"),
        &format!("motion-dit-malformed-{tag}"),
    )
}

/// A tiny model folder (in-context network of width 32, 32-d text condition, the 32-d test
/// CLIP as its text encoder).
fn tiny_folder(dir: &Path) -> Result<()> {
    let cfg = common::tiny_dit_config(Variant::InContext, 32);
    common::random_model_folder(dir, cfg, 5, 1.0, 3, &common::flat_normalizer(1.0)?)
}

/// The folder's files: any error must name one of them.
const FOLDER_FILES: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "stats.safetensors",
    "text_encoder",
];

/// Loads the folder, with its text encoder every `with_text`-th case.
fn load(dir: &Path, with_text: bool) -> motion_dit::Result<MotionModel> {
    if with_text {
        MotionModel::from_folder(dir, &Device::Cpu)
    } else {
        MotionModel::from_folder_without_text_encoder(dir, &Device::Cpu)
    }
}

#[test]
fn allocations_are_counted() {
    assert!(tracking(), "the counting allocator must be installed");
}

#[test]
fn model_folder_config_survives_mutations() -> Result<()> {
    let scratch = scratch("config")?;
    let dir = scratch.path();
    tiny_folder(dir)?;
    load(dir, true)?;
    let path = dir.join("config.json");
    let valid = std::fs::read(&path)?;
    let weights_len = std::fs::metadata(dir.join("model.safetensors"))?.len() as usize;
    let mut campaign = Campaign::new("model folder config.json (MotionModel::from_folder)");
    let mut g = SplitMix64(0xc0f_1650);
    let mut draw = || g.next_u64();
    for i in 0..1500 {
        let (mut what, mut b) = mutate_json(&valid, &mut draw);
        if draw.below(5) == 0 {
            let (w2, b2) = mutate_json(&b, &mut draw);
            what = format!("{what}; {w2}");
            b = b2;
        }
        std::fs::write(&path, &b)?;
        let what = format!("#{i}: {what}");
        let msg = campaign.case(&what, b.len() + weights_len, || load(dir, i % 8 == 0));
        if let Some(msg) = msg
            && !FOLDER_FILES.iter().any(|f| msg.contains(f))
        {
            campaign.fail(format!("{what}: error names no file of the folder: {msg}"));
        }
    }
    for len in truncation_lengths(valid.len(), 30) {
        std::fs::write(&path, &valid[..len])?;
        campaign.case(&format!("cut at {len}"), len + weights_len, || {
            load(dir, false)
        });
    }
    std::fs::write(&path, &valid)?;
    campaign.finish().map_err(anyhow::Error::msg)?;
    Ok(())
}

#[test]
fn model_folder_safetensors_survive_mutations() -> Result<()> {
    let scratch = scratch("st")?;
    let dir = scratch.path();
    tiny_folder(dir)?;
    let mut g = SplitMix64(0x5afe_f01d);
    let mut draw = || g.next_u64();
    for (file, count) in [("model.safetensors", 700), ("stats.safetensors", 500)] {
        let path = dir.join(file);
        let valid = std::fs::read(&path)?;
        let mut campaign =
            Campaign::new(&format!("model folder {file} (MotionModel::from_folder)"))
                .errors_must_name(file);
        for v in SPECIAL_VALUES {
            let mut b = valid.clone();
            set_field(&mut b, SAFETENSORS_LEN, v);
            std::fs::write(&path, &b)?;
            campaign.case(&format!("header length {v:#x}"), b.len(), || {
                load(dir, false)
            });
        }
        for i in 0..count {
            let (what, b) = mutate_safetensors(&valid, &mut draw);
            std::fs::write(&path, &b)?;
            campaign.case(&format!("#{i}: {what}"), b.len(), || load(dir, false));
        }
        std::fs::write(&path, &valid)?;
        campaign.finish().map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

#[test]
fn prompt_files_survive_mutations() -> Result<()> {
    let scratch = scratch("prompts")?;
    let path = scratch.path().join("m-prompts.txt");
    let valid = b"a person walks forward\n  a person jumps twice  \n\nsomeone waves\n".to_vec();
    std::fs::write(&path, &valid)?;
    anyhow::ensure!(read_prompts_file(&path)?.len() == 3);
    let mut campaign =
        Campaign::new("prompts file (read_prompts_file)").errors_must_name("m-prompts.txt");
    let mut g = SplitMix64(0x9_7047);
    let mut draw = || g.next_u64();
    for i in 0..800 {
        let (what, b) = mutate_text(&valid, &mut draw);
        std::fs::write(&path, &b)?;
        let what = format!("#{i}: {what}");
        let mut bad = None;
        campaign.case(&what, b.len(), || {
            let prompts = read_prompts_file(&path)?;
            // Captions are trimmed and non-empty.
            if prompts.is_empty() || prompts.iter().any(|p| p.is_empty() || p.trim() != p) {
                bad = Some(prompts);
            }
            Ok::<_, motion_dit::PipelineError>(())
        });
        if let Some(prompts) = bad {
            campaign.fail(format!("{what}: empty or untrimmed prompts {prompts:?}"));
        }
    }
    campaign.finish().map_err(anyhow::Error::msg)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Regression tests of the concrete crashes.

/// A config whose network sizes disagree with its weights file: before, the network was built
/// with zero stand-ins sized from the config for every missing or mis-shaped weight (a 512 GiB
/// request for `num_cond_feats = 2^32`, an abort; found by `model_folder_config_survives_mutations`,
/// case `#4: number at 140 set to 4294967296`), and the position tables were computed for any
/// `max_positions`. The model folder loader now checks `config.json` against the weights file
/// first (errors naming the field), and `Dit::from_checkpoint` refuses a stand-in larger than any
/// stored tensor for every caller.
#[test]
fn huge_network_sizes_in_config_json_are_errors_naming_the_field() -> Result<()> {
    let scratch = scratch("huge")?;
    let dir = scratch.path();
    tiny_folder(dir)?;
    let path = dir.join("config.json");
    let valid: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let cases: [(&str, u64, &str); 8] = [
        ("/dit/num_cond_feats", 1 << 32, "dit.num_cond_feats"),
        ("/dit/num_feats", (1 << 31) - 1, "dit.num_feats"),
        ("/dit/num_layers", 1 << 31, "dit.num_layers"),
        ("/dit/latent_dim", 1 << 31, "dit."),
        ("/dit/mlp_multiplier", u64::MAX, "dit.num_layers"),
        ("/dit/max_positions", 1 << 31, "dit.max_positions"),
        ("/dit/num_frames", u64::MAX, "dit.num_frames"),
        ("/max_frames", 1 << 63, "max_frames"),
    ];
    for (pointer, value, field) in cases {
        let mut cfg = valid.clone();
        *cfg.pointer_mut(pointer)
            .ok_or_else(|| anyhow::anyhow!("no {pointer}"))? = value.into();
        std::fs::write(&path, serde_json::to_vec_pretty(&cfg)?)?;
        for with_text in [false, true] {
            let (res, usage) = test_fixtures::mutate::measure(|| load(dir, with_text));
            let err = res
                .err()
                .ok_or_else(|| anyhow::anyhow!("{pointer} = {value}: expected an error"))?
                .to_string();
            assert!(
                err.contains("config.json") && err.contains(field),
                "{pointer} = {value}: {err}"
            );
            assert!(usage.largest < 1 << 20, "{pointer}: allocated {usage:?}");
        }
    }
    // The same check holds for a folder held in memory.
    let mut cfg = valid.clone();
    *cfg.pointer_mut("/dit/num_cond_feats")
        .ok_or_else(|| anyhow::anyhow!("no num_cond_feats"))? = (1u64 << 32).into();
    let mut files = std::collections::HashMap::new();
    files.insert("config.json".to_string(), serde_json::to_vec(&cfg)?);
    for f in ["model.safetensors", "stats.safetensors"] {
        files.insert(f.to_string(), std::fs::read(dir.join(f))?);
    }
    let err = MotionModel::from_memory(&files, &Device::Cpu)
        .err()
        .ok_or_else(|| anyhow::anyhow!("in memory: expected an error"))?
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("dit.num_cond_feats"),
        "{err}"
    );
    Ok(())
}

/// `weights` or `stats` naming a folder (`"/"`, `"."`): before, the statistics reader's
/// "Is a directory" named neither `config.json` nor the field.
#[test]
fn config_naming_a_folder_as_a_file_is_an_error_naming_the_field() -> Result<()> {
    let scratch = scratch("folder-as-file")?;
    let dir = scratch.path();
    tiny_folder(dir)?;
    let path = dir.join("config.json");
    let valid: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    for (field, value) in [("stats", "/"), ("weights", "."), ("stats", "text_encoder")] {
        let mut cfg = valid.clone();
        cfg[field] = value.into();
        std::fs::write(&path, serde_json::to_vec(&cfg)?)?;
        let err = load(dir, false)
            .err()
            .ok_or_else(|| anyhow::anyhow!("{field} = {value}: expected an error"))?
            .to_string();
        assert!(
            err.contains("config.json") && err.contains(&format!("`{field}`")),
            "{field} = {value}: {err}"
        );
    }
    Ok(())
}
