//! Malformed TMR encoder state dicts (torch `.pt`) must give a typed error naming the file and
//! the key / field at fault, never a panic, an abort or an allocation far above the file size.
//!
//! Seeded mutation campaigns (`test_fixtures::mutate::SplitMix64`, fixed seeds) over
//! `Tmr::from_reference_checkpoints`, which reads its `.pt` files through
//! `tensor_io::torch::read_state_dict`: a tiny encoder's state dict built here (so that
//! thousands of cases stay fast) and a few dozen cases on the reference fixture
//! `tmr_motion_small.pt`. Only the motion encoder's file is mutated (the text encoder's stays
//! valid), so every error must name it. This binary installs a counting allocator (see
//! `test_fixtures::mutate`): a case that allocates more than 64 x its input + 64 MiB fails with
//! its description; a single request above 1 GiB is refused, which aborts the binary with
//! Rust's "memory allocation failed" message (`MUTATE_TRACE=1` prints each case first).

use std::path::Path;

use candle::Device;
use test_fixtures::mutate::{
    Campaign, CappedAlloc, Draw, SPECIAL_VALUES, Scratch, SplitMix64, mutate_bytes,
    mutate_torch_members, pickle_fields, set_field, stored_zip, torch_state_dict, tracking,
    truncation_lengths, zip_fields, zip_members,
};
use test_fixtures::{Fixture, fixture_path};
use tmr::{ActorEncoderConfig, Tmr, TmrConfig};

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc { cap: 1 << 30 };

fn scratch(tag: &str) -> std::io::Result<Scratch> {
    Scratch::new(env!("CARGO_TARGET_TMPDIR"), &format!("tmr-malformed-{tag}"))
}

/// A tiny encoder: 4 input features, width 8, one layer.
fn tiny_encoder(nfeats: usize) -> ActorEncoderConfig {
    ActorEncoderConfig {
        nfeats,
        latent_dim: 8,
        ff_size: 16,
        num_layers: 1,
        num_heads: 2,
        dropout: 0.0,
    }
}

fn tiny_config() -> TmrConfig {
    TmrConfig {
        motion: tiny_encoder(4),
        text: tiny_encoder(6),
    }
}

/// The members of a valid state dict for `cfg`, seeded values.
fn state_dict_members(cfg: &ActorEncoderConfig) -> Vec<(String, Vec<u8>)> {
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = cfg
        .state_dict_shapes()
        .into_iter()
        .enumerate()
        .map(|(k, (name, shape))| {
            let n: usize = shape.iter().product();
            let values = (0..n)
                .map(|i| ((i * 13 + k * 7) % 17) as f32 / 17.0 - 0.5)
                .collect();
            (name, shape, values)
        })
        .collect();
    torch_state_dict("archive", &tensors)
}

fn load(motion: &Path, text: &Path, bytes: &[u8], cfg: &TmrConfig) -> anyhow::Result<Tmr> {
    std::fs::write(motion, bytes)?;
    Ok(Tmr::from_reference_checkpoints(
        motion,
        text,
        cfg,
        &Device::Cpu,
    )?)
}

#[test]
fn allocations_are_counted() {
    assert!(tracking(), "the counting allocator must be installed");
}

#[test]
fn tiny_encoder_state_dicts_survive_mutations() -> anyhow::Result<()> {
    let scratch = scratch("tiny")?;
    let motion = scratch.path().join("m-motion.pt");
    let text = scratch.path().join("text.pt");
    let cfg = tiny_config();
    std::fs::write(&text, stored_zip(&state_dict_members(&cfg.text)))?;
    let parts = state_dict_members(&cfg.motion);
    let valid = stored_zip(&parts);
    load(&motion, &text, &valid, &cfg).map_err(|e| anyhow::anyhow!("the valid files: {e}"))?;
    let mut campaign = Campaign::new("TMR encoder .pt (Tmr::from_reference_checkpoints)")
        .errors_must_name("m-motion.pt");
    let mut g = SplitMix64(0x7_3e4c_0de5);
    let mut draw = || g.next_u64();
    // Every pickle length / integer field (sizes, strides, storage sizes, memo indices) at
    // every special value.
    for f in pickle_fields(&parts[0].1) {
        for v in SPECIAL_VALUES {
            let mut m = parts.clone();
            set_field(&mut m[0].1, f, v);
            let b = stored_zip(&m);
            campaign.case(
                &format!("pickle field at {} = {v:#x}", f.pos),
                b.len(),
                || load(&motion, &text, &b, &cfg),
            );
        }
    }
    for len in truncation_lengths(parts[0].1.len(), 60) {
        let mut m = parts.clone();
        m[0].1.truncate(len);
        let b = stored_zip(&m);
        campaign.case(&format!("data.pkl cut at {len}"), b.len(), || {
            load(&motion, &text, &b, &cfg)
        });
    }
    for i in 0..2000 {
        let (what, m) = mutate_torch_members(&parts, &mut draw);
        let b = stored_zip(&m);
        campaign.case(&format!("#{i}: {what}"), b.len(), || {
            load(&motion, &text, &b, &cfg)
        });
    }
    // Raw archive bytes: zip fields, truncations, random mutations.
    let zf = zip_fields(&valid);
    for &f in zf.iter().step_by(3) {
        let v = *draw.pick(&SPECIAL_VALUES);
        let mut b = valid.clone();
        set_field(&mut b, f, v);
        campaign.case(&format!("zip field at {} = {v:#x}", f.pos), b.len(), || {
            load(&motion, &text, &b, &cfg)
        });
    }
    for len in truncation_lengths(valid.len(), 40) {
        let b = &valid[..len];
        campaign.case(&format!("archive cut at {len}"), b.len(), || {
            load(&motion, &text, b, &cfg)
        });
    }
    for i in 0..300 {
        let (what, b) = mutate_bytes(&valid, &zf, &mut draw);
        campaign.case(&format!("archive #{i}: {what}"), b.len(), || {
            load(&motion, &text, &b, &cfg)
        });
    }
    campaign.finish().map_err(anyhow::Error::msg)?;
    Ok(())
}

#[test]
fn the_reference_encoder_survives_a_few_mutations() -> anyhow::Result<()> {
    let scratch = scratch("reference")?;
    let motion = scratch.path().join("m-ref.pt");
    let fx = Fixture::load("tmr")?;
    let c = fx.json_at("/config")?;
    let num = |k: &str| -> anyhow::Result<usize> {
        c.get(k)
            .and_then(serde_json::Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| anyhow::anyhow!("tmr.json config.{k}"))
    };
    let encoder = |nfeats| -> anyhow::Result<ActorEncoderConfig> {
        Ok(ActorEncoderConfig {
            nfeats,
            latent_dim: num("latent_dim")?,
            ff_size: num("ff_size")?,
            num_layers: num("num_layers")?,
            num_heads: num("num_heads")?,
            dropout: 0.0,
        })
    };
    let cfg = TmrConfig {
        motion: encoder(num("motion_nfeats")?)?,
        text: encoder(num("text_nfeats")?)?,
    };
    let text = fixture_path("tmr_text_small.pt")?;
    let original = std::fs::read(fixture_path("tmr_motion_small.pt")?)?;
    let mut parts = zip_members(&original)?;
    let pkl_at = parts
        .iter()
        .position(|(n, _)| n.ends_with("data.pkl"))
        .ok_or_else(|| anyhow::anyhow!("no data.pkl"))?;
    parts.swap(0, pkl_at);
    let mut campaign = Campaign::new("reference TMR encoder .pt (Tmr::from_reference_checkpoints)")
        .errors_must_name("m-ref.pt");
    let mut g = SplitMix64(0x4ef_7e4c);
    let mut draw = || g.next_u64();
    for i in 0..40 {
        let (what, m) = mutate_torch_members(&parts, &mut draw);
        let b = stored_zip(&m);
        campaign.case(&format!("#{i}: {what}"), b.len(), || {
            load(&motion, &text, &b, &cfg)
        });
    }
    let zf = zip_fields(&original);
    for i in 0..10 {
        let (what, b) = mutate_bytes(&original, &zf, &mut draw);
        campaign.case(&format!("archive #{i}: {what}"), b.len(), || {
            load(&motion, &text, &b, &cfg)
        });
    }
    campaign.finish().map_err(anyhow::Error::msg)?;
    Ok(())
}
