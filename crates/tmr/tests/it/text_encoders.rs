//! CLIP text and sentence-BERT encoders against Hugging Face `transformers` outputs.
//!
//! The models, tokenizers and expected outputs in `fixtures/text_encoders/` were produced by
//! `data-scripts/make_text_encoder_fixtures.py` (small seeded random models).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Result;
use candle::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use test_fixtures::{assert_close, fixtures_dir};
use tmr::text::ClipTextSizes;
use tmr::{ClipTextEncoder, SentenceEncoder, TextEncoder, TmrError};

/// The contract: match `transformers` within 1e-5.
const TOL: f64 = 1e-5;

fn dir() -> PathBuf {
    fixtures_dir().join("text_encoders")
}

fn captions() -> Result<Vec<String>> {
    Ok(serde_json::from_str(&std::fs::read_to_string(
        dir().join("captions.json"),
    )?)?)
}

fn expected() -> Result<HashMap<String, Tensor>> {
    Ok(candle::safetensors::load(
        dir().join("expected.safetensors"),
        &Device::Cpu,
    )?)
}

/// Compares features with the expected ones (which are padded to the tokenizer's max length).
fn check(prefix: &str, enc: &dyn TextEncoder, caps: &[&str]) -> Result<()> {
    let exp = expected()?;
    let f = enc.encode(caps)?;
    let l = f.mask.dim(1)?;
    let e_mask = exp[&format!("{prefix}.mask")].narrow(1, 0, l)?;
    assert_close(&f.mask, &e_mask, 0.0, 0.0, &format!("{prefix} mask"));
    // Everything beyond our batch length is padding in the reference too.
    let rest =
        exp[&format!("{prefix}.mask")].narrow(1, l, exp[&format!("{prefix}.mask")].dim(1)? - l)?;
    assert_eq!(rest.sum_all()?.to_scalar::<f32>()?, 0.0);
    assert_close(
        &f.pooled,
        &exp[&format!("{prefix}.pooled")],
        TOL,
        0.0,
        &format!("{prefix} pooled"),
    );
    let e_tokens = exp[&format!("{prefix}.tokens")].narrow(1, 0, l)?;
    assert_close(&f.tokens, &e_tokens, TOL, 0.0, &format!("{prefix} tokens"));
    Ok(())
}

#[test]
fn clip_tokenizer_matches_transformers_including_truncation_to_77() -> Result<()> {
    let caps = captions()?;
    let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
    let clip = ClipTextEncoder::from_folder(dir().join("clip"), &Device::Cpu)?;
    let ids = clip.tokenize(&caps)?;
    let exp = expected()?;
    let e_ids = exp["clip.input_ids"]
        .to_dtype(DType::I64)?
        .to_vec2::<i64>()?;
    let e_mask = exp["clip.mask"].to_vec2::<f32>()?;
    for (b, row) in ids.iter().enumerate() {
        let n = e_mask[b].iter().filter(|&&m| m > 0.0).count();
        let e: Vec<u32> = e_ids[b][..n].iter().map(|&v| v as u32).collect();
        assert_eq!(row, &e, "caption {b}");
    }
    assert_eq!(
        ids[3].len(),
        77,
        "the long caption is truncated to CLIP's 77 tokens"
    );
    Ok(())
}

#[test]
fn clip_features_match_transformers() -> Result<()> {
    let caps = captions()?;
    let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
    let clip = ClipTextEncoder::from_folder(dir().join("clip"), &Device::Cpu)?;
    check("clip", &clip, &caps)?;
    // A caption's features do not depend on its batch: the short caption alone.
    let alone = clip.encode(&caps[..1])?;
    let exp = expected()?;
    assert_close(
        &alone.pooled,
        &exp["clip.pooled"].i(0..1)?,
        TOL,
        0.0,
        "clip pooled alone",
    );
    Ok(())
}

#[test]
fn clip_weights_load_with_and_without_the_text_model_prefix() -> Result<()> {
    let caps = captions()?;
    let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
    let d = dir().join("clip");
    let tensors = candle::safetensors::load(d.join("model.safetensors"), &Device::Cpu)?;
    assert!(
        tensors.keys().all(|k| !k.starts_with("text_model.")),
        "fixture is saved without the prefix"
    );
    let prefixed: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| (format!("text_model.{k}"), v))
        .collect();
    let sizes = ClipTextSizes::from_file(&d.join("config.json"))?;
    let tok =
        tokenizers::Tokenizer::from_file(d.join("tokenizer.json")).map_err(anyhow::Error::msg)?;
    let vb = VarBuilder::from_tensors(prefixed, DType::F32, &Device::Cpu);
    let clip = ClipTextEncoder::new(&sizes, vb, tok)?;
    check("clip", &clip, &caps)
}

#[test]
fn sentence_encoder_matches_transformers_mean_pooling_and_l2_norm() -> Result<()> {
    let caps = captions()?;
    let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
    let enc = SentenceEncoder::from_folder(dir().join("bert"), &Device::Cpu)?;
    check("bert", &enc, &caps)?;
    let f = enc.encode(&caps)?;
    let norms = f.pooled.sqr()?.sum(1)?.sqrt()?;
    assert_close(
        &norms,
        &Tensor::ones(4, DType::F32, &Device::Cpu)?,
        1e-6,
        0.0,
        "unit norms",
    );
    Ok(())
}

#[test]
fn empty_caption_is_rejected_by_both_encoders() -> Result<()> {
    let clip = ClipTextEncoder::from_folder(dir().join("clip"), &Device::Cpu)?;
    let bert = SentenceEncoder::from_folder(dir().join("bert"), &Device::Cpu)?;
    for enc in [&clip as &dyn TextEncoder, &bert] {
        match enc.encode(&["a person walks", "  "]) {
            Err(TmrError::EmptyCaption { index }) => assert_eq!(index, 1),
            other => panic!("expected EmptyCaption, got {other:?}"),
        }
    }
    Ok(())
}

#[test]
fn missing_tokenizer_file_names_what_to_fetch() -> Result<()> {
    let tmp = std::env::temp_dir().join(format!("tmr-missing-tokenizer-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(dir().join("clip").join(f), tmp.join(f))?;
    }
    let err = ClipTextEncoder::from_folder(&tmp, &Device::Cpu).expect_err("no tokenizer.json");
    match &err {
        TmrError::MissingFile { path, hint } => {
            assert!(path.ends_with("tokenizer.json"));
            assert!(hint.contains("openai/clip-vit-base-patch32"), "{hint}");
            assert!(
                hint.contains("data-scripts/fetch_text_encoders.py"),
                "{hint}"
            );
        }
        other => panic!("expected MissingFile, got {other}"),
    }
    let err = SentenceEncoder::from_folder(&tmp, &Device::Cpu).expect_err("no tokenizer.json");
    assert!(
        matches!(&err, TmrError::MissingFile { path, .. } if path.ends_with("tokenizer.json")),
        "{err}"
    );
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}

/// Manual check against a real all-MiniLM-L6-v2 (gated: needs `TMR_MINILM_DIR` and
/// `TMR_MINILM_EXPECTED`, see `data-scripts/make_text_encoder_fixtures.py --minilm`).
#[test]
fn real_minilm_matches_sentence_transformers_when_available() -> Result<()> {
    let (Some(dir), Some(expected)) = (
        std::env::var_os("TMR_MINILM_DIR"),
        std::env::var_os("TMR_MINILM_EXPECTED"),
    ) else {
        return Ok(());
    };
    let caps = captions()?;
    let caps: Vec<&str> = caps.iter().take(3).map(String::as_str).collect();
    let enc = SentenceEncoder::from_folder(dir, &Device::Cpu)?;
    let f = enc.encode(&caps)?;
    let exp = candle::safetensors::load(expected, &Device::Cpu)?;
    assert_close(
        &f.pooled,
        &exp["pooled"],
        TOL,
        0.0,
        "all-MiniLM-L6-v2 pooled",
    );
    Ok(())
}

#[test]
fn a_caption_encodes_the_same_alone_and_in_a_batch() -> Result<()> {
    // Both encoders run captions packed without padding: a caption's features may not depend
    // on the other captions of its batch.
    let caps = captions()?;
    let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
    let clip = ClipTextEncoder::from_folder(dir().join("clip"), &Device::Cpu)?;
    let bert = SentenceEncoder::from_folder(dir().join("bert"), &Device::Cpu)?;
    for (name, enc) in [("clip", &clip as &dyn TextEncoder), ("bert", &bert)] {
        let batch = enc.encode(&caps)?;
        for (i, cap) in caps.iter().enumerate() {
            let alone = enc.encode(&[cap])?;
            let len = alone.mask.dim(1)?;
            assert_close(
                &alone.pooled.i(0)?,
                &batch.pooled.i(i)?,
                1e-6,
                0.0,
                &format!("{name} pooled {i}"),
            );
            assert_close(
                &alone.tokens.i(0)?,
                &batch.tokens.i(i)?.narrow(0, 0, len)?,
                1e-6,
                0.0,
                &format!("{name} tokens {i}"),
            );
        }
    }
    Ok(())
}
