//! Packed datasets: one memory-mapped `.safetensors` shard per split plus a JSON side file.
//!
//! `<out>/<split>.safetensors` holds
//!
//! | tensor | dtype | shape | content |
//! | --- | --- | --- | --- |
//! | `features` | F32 | `[total_frames, 205]` | raw SMPL-RIFKE features of every motion, concatenated |
//! | `frame_offsets` | I64 | `[N + 1]` | motion `i` is rows `frame_offsets[i] .. frame_offsets[i+1]` |
//! | `caption_offsets` | I64 | `[N + 1]` | (with text) captions of motion `i` are rows `caption_offsets[i] ..` of the two tensors below |
//! | `text_pooled` | F32 | `[total_captions, 512]` | (with text) pooled CLIP features |
//! | `token_offsets` | I64 | `[total_captions + 1]` | (with text) caption `c` is rows `token_offsets[c] .. token_offsets[c+1]` of `text_tokens` |
//! | `text_tokens` | F32 | `[total_tokens, 512]` | (with text) CLIP token features |
//!
//! and `<out>/<split>.json` holds the ids and caption strings ([`PackIndex`]). Opening a pack
//! maps the shard (no copy); a batch reads only the rows it needs.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

// candle's mapped reader is used (rather than the `safetensors` crate directly) because candle
// pins its own `safetensors` version; dtypes are therefore compared by name.
use candle::safetensors::MmapedSafetensors;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::folder::{FolderDataset, FolderOptions};
use crate::source::{FEATURE_DIM, MotionSource, Split, TEXT_DIM};

/// Format name written into the side file.
pub const PACK_FORMAT: &str = "motion-data-pack";
/// Format version written into the side file.
pub const PACK_VERSION: u32 = 1;

/// The JSON side file of a packed split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackIndex {
    /// Always [`PACK_FORMAT`].
    pub format: String,
    /// [`PACK_VERSION`] at writing time.
    pub version: u32,
    /// The split name.
    pub split: String,
    /// Shard file name, relative to the side file.
    pub shard: String,
    /// Feature width (205).
    pub feature_dim: usize,
    /// Whether CLIP text features are packed.
    pub has_text: bool,
    /// Sample ids, in split order.
    pub ids: Vec<String>,
    /// Captions per sample.
    pub captions: Vec<Vec<String>>,
}

fn packed_err(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Packed {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Streams one tensor's little-endian bytes.
type WriteFn<'a> = Box<dyn Fn(&mut dyn Write) -> std::io::Result<()> + 'a>;

/// A tensor to be written: dtype name, shape, little-endian data produced by a writer callback.
struct Entry<'a> {
    name: &'static str,
    dtype: &'static str,
    shape: Vec<usize>,
    bytes: usize,
    write: WriteFn<'a>,
}

/// Streams a safetensors file (8-byte header length, JSON header padded to 8 bytes, data)
/// without materialising the concatenated tensors.
fn write_safetensors(path: &Path, entries: &[Entry<'_>]) -> Result<()> {
    let mut header = serde_json::Map::new();
    let mut meta = serde_json::Map::new();
    meta.insert("format".into(), PACK_FORMAT.into());
    header.insert("__metadata__".into(), serde_json::Value::Object(meta));
    let mut offset = 0usize;
    for e in entries {
        header.insert(
            e.name.into(),
            serde_json::json!({"dtype": e.dtype, "shape": e.shape, "data_offsets": [offset, offset + e.bytes]}),
        );
        offset += e.bytes;
    }
    let mut text = serde_json::to_string(&serde_json::Value::Object(header))
        .map_err(|e| packed_err(path, e.to_string()))?;
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    tensor_io::atomic::write_with(path, |w| -> std::io::Result<()> {
        w.write_all(&(text.len() as u64).to_le_bytes())?;
        w.write_all(text.as_bytes())?;
        for e in entries {
            (e.write)(w)?;
        }
        Ok(())
    })
    .map_err(|e| DataError::io(path, e.into_error(|e| e)))
}

fn f32_writer<'a>(chunks: Vec<&'a [f32]>) -> WriteFn<'a> {
    Box::new(move |w| {
        let mut buf = Vec::new();
        for c in &chunks {
            buf.clear();
            buf.reserve(c.len() * 4);
            for v in c.iter() {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            w.write_all(&buf)?;
        }
        Ok(())
    })
}

fn i64_writer<'a>(values: Vec<usize>) -> WriteFn<'a> {
    Box::new(move |w| {
        for v in &values {
            w.write_all(&(*v as i64).to_le_bytes())?;
        }
        Ok(())
    })
}

fn offsets(lengths: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut out = vec![0usize];
    for l in lengths {
        let last = *out.last().unwrap_or(&0);
        out.push(last + l);
    }
    out
}

/// Packs one in-memory split into `<out>/<split>.safetensors` + `<out>/<split>.json`.
pub fn pack_dataset(data: &FolderDataset, out: &Path) -> Result<PackIndex> {
    std::fs::create_dir_all(out).map_err(|e| DataError::io(out, e))?;
    let split = data.split().name();
    let samples = data.samples();
    let has_text = data.has_text();
    let frame_offsets = offsets(samples.iter().map(|s| s.frames));
    let mut entries = vec![
        Entry {
            name: "features",
            dtype: "F32",
            shape: vec![frame_offsets[samples.len()], FEATURE_DIM],
            bytes: frame_offsets[samples.len()] * FEATURE_DIM * 4,
            write: f32_writer(samples.iter().map(|s| s.features.as_slice()).collect()),
        },
        Entry {
            name: "frame_offsets",
            dtype: "I64",
            shape: vec![samples.len() + 1],
            bytes: (samples.len() + 1) * 8,
            write: i64_writer(frame_offsets.clone()),
        },
    ];
    if has_text {
        let texts = samples
            .iter()
            .map(|s| {
                s.text
                    .as_ref()
                    .ok_or_else(|| packed_err(out, format!("{} has no CLIP features", s.id)))
            })
            .collect::<Result<Vec<_>>>()?;
        let caption_offsets = offsets(texts.iter().map(|t| t.tokens.len()));
        let n_captions = caption_offsets[samples.len()];
        let token_offsets = offsets(
            texts
                .iter()
                .flat_map(|t| t.tokens.iter().map(|x| x.len() / TEXT_DIM)),
        );
        let n_tokens = token_offsets[n_captions];
        entries.push(Entry {
            name: "caption_offsets",
            dtype: "I64",
            shape: vec![samples.len() + 1],
            bytes: (samples.len() + 1) * 8,
            write: i64_writer(caption_offsets),
        });
        entries.push(Entry {
            name: "text_pooled",
            dtype: "F32",
            shape: vec![n_captions, TEXT_DIM],
            bytes: n_captions * TEXT_DIM * 4,
            write: f32_writer(texts.iter().map(|t| t.pooled.as_slice()).collect()),
        });
        entries.push(Entry {
            name: "token_offsets",
            dtype: "I64",
            shape: vec![n_captions + 1],
            bytes: (n_captions + 1) * 8,
            write: i64_writer(token_offsets),
        });
        entries.push(Entry {
            name: "text_tokens",
            dtype: "F32",
            shape: vec![n_tokens, TEXT_DIM],
            bytes: n_tokens * TEXT_DIM * 4,
            write: f32_writer(
                texts
                    .iter()
                    .flat_map(|t| t.tokens.iter().map(Vec::as_slice))
                    .collect(),
            ),
        });
    }
    let shard = format!("{split}.safetensors");
    write_safetensors(&out.join(&shard), &entries)?;
    let index = PackIndex {
        format: PACK_FORMAT.into(),
        version: PACK_VERSION,
        split: split.into(),
        shard,
        feature_dim: FEATURE_DIM,
        has_text,
        ids: samples.iter().map(|s| s.id.clone()).collect(),
        captions: samples.iter().map(|s| s.captions.clone()).collect(),
    };
    let json = serde_json::to_vec_pretty(&index).map_err(|e| packed_err(out, e.to_string()))?;
    crate::npy::write_atomic(&out.join(format!("{split}.json")), &json)?;
    Ok(index)
}

/// Packs every split of the folder `root` whose split file exists into `out`. Each split is
/// read (and fully checked: any fault aborts with the complete report) before it is written.
/// Returns the indices written.
pub fn pack_folder(root: impl AsRef<Path>, out: impl AsRef<Path>) -> Result<Vec<PackIndex>> {
    let root = root.as_ref();
    let mut written = Vec::new();
    for split in Split::ALL {
        if !root.join(split.file_name()).is_file() {
            continue;
        }
        let data = FolderDataset::open(root, split, &FolderOptions::default())?;
        written.push(pack_dataset(&data, out.as_ref())?);
    }
    if written.is_empty() {
        return Err(packed_err(
            root,
            "no humanml3d_<split>_split.txt file in the folder",
        ));
    }
    Ok(written)
}

/// A packed split, memory-mapped.
///
/// ```no_run
/// use motion_data::{MotionSource, PackedDataset, Split};
/// let data = PackedDataset::open("data/packed", Split::Train)?;
/// println!("{} motions", data.len());
/// # Ok::<(), motion_data::DataError>(())
/// ```
pub struct PackedDataset {
    path: PathBuf,
    index: PackIndex,
    shard: MmapedSafetensors,
    frame_offsets: Vec<usize>,
    caption_offsets: Vec<usize>,
    token_offsets: Vec<usize>,
}

impl std::fmt::Debug for PackedDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedDataset")
            .field("path", &self.path)
            .field("split", &self.index.split)
            .field("len", &self.index.ids.len())
            .field("has_text", &self.index.has_text)
            .finish()
    }
}

impl PackedDataset {
    /// Opens `<dir>/<split>.json` and memory-maps its shard, validating shapes and offsets.
    pub fn open(dir: impl AsRef<Path>, split: Split) -> Result<Self> {
        let json_path = dir.as_ref().join(format!("{}.json", split.name()));
        let text = std::fs::read(&json_path).map_err(|e| DataError::io(&json_path, e))?;
        let index: PackIndex =
            serde_json::from_slice(&text).map_err(|e| packed_err(&json_path, e.to_string()))?;
        if index.format != PACK_FORMAT || index.version != PACK_VERSION {
            return Err(packed_err(
                &json_path,
                format!(
                    "format {:?} version {}, expected {PACK_FORMAT:?} version {PACK_VERSION}",
                    index.format, index.version
                ),
            ));
        }
        if index.feature_dim != FEATURE_DIM || index.captions.len() != index.ids.len() {
            return Err(packed_err(
                &json_path,
                "feature_dim must be 205 and captions must have one entry per id",
            ));
        }
        let path = dir.as_ref().join(&index.shard);
        if !path.is_file() {
            return Err(DataError::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "shard not found"),
            ));
        }
        // SAFETY: the shard is mapped read-only; like every memory-mapped reader, this relies on
        // the file not being truncated or rewritten while the dataset is open (packs are
        // written atomically to a temporary file and renamed, so `pack` never does that).
        let shard = unsafe { MmapedSafetensors::new(&path) }
            .map_err(|e| packed_err(&path, e.to_string()))?;
        let n = index.ids.len();
        let mut ds = PackedDataset {
            path,
            index,
            shard,
            frame_offsets: Vec::new(),
            caption_offsets: Vec::new(),
            token_offsets: Vec::new(),
        };
        ds.check_f32("features", FEATURE_DIM)?;
        ds.frame_offsets = ds.read_offsets("frame_offsets", n + 1, ds.rows("features")?)?;
        if ds.frame_offsets.windows(2).any(|w| w[1] == w[0]) {
            return Err(packed_err(&ds.path, "a motion has zero frames"));
        }
        if ds.index.has_text {
            ds.check_f32("text_pooled", TEXT_DIM)?;
            ds.check_f32("text_tokens", TEXT_DIM)?;
            let n_captions = ds.rows("text_pooled")?;
            ds.caption_offsets = ds.read_offsets("caption_offsets", n + 1, n_captions)?;
            ds.token_offsets =
                ds.read_offsets("token_offsets", n_captions + 1, ds.rows("text_tokens")?)?;
            for (i, caps) in ds.index.captions.iter().enumerate() {
                if ds.caption_offsets[i + 1] - ds.caption_offsets[i] != caps.len() {
                    return Err(packed_err(
                        &ds.path,
                        format!(
                            "{}: caption features do not match the captions",
                            ds.index.ids[i]
                        ),
                    ));
                }
            }
        }
        Ok(ds)
    }

    /// The JSON side file's content.
    pub fn index(&self) -> &PackIndex {
        &self.index
    }

    fn rows(&self, name: &str) -> Result<usize> {
        let v = self
            .shard
            .get(name)
            .map_err(|e| packed_err(&self.path, e.to_string()))?;
        Ok(v.shape().first().copied().unwrap_or(0))
    }

    fn check_f32(&self, name: &str, width: usize) -> Result<()> {
        let v = self
            .shard
            .get(name)
            .map_err(|e| packed_err(&self.path, format!("tensor {name}: {e}")))?;
        if format!("{:?}", v.dtype()) != "F32" || v.shape().len() != 2 || v.shape()[1] != width {
            return Err(packed_err(
                &self.path,
                format!(
                    "tensor {name} is {:?} {:?}, expected F32 [_, {width}]",
                    v.dtype(),
                    v.shape()
                ),
            ));
        }
        Ok(())
    }

    fn read_offsets(&self, name: &str, len: usize, end: usize) -> Result<Vec<usize>> {
        let v = self
            .shard
            .get(name)
            .map_err(|e| packed_err(&self.path, format!("tensor {name}: {e}")))?;
        if format!("{:?}", v.dtype()) != "I64" || v.shape() != [len] {
            return Err(packed_err(
                &self.path,
                format!(
                    "tensor {name} is {:?} {:?}, expected I64 [{len}]",
                    v.dtype(),
                    v.shape()
                ),
            ));
        }
        let vals: Vec<i64> = v
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        if vals.first() != Some(&0)
            || vals.last().copied() != Some(end as i64)
            || vals.windows(2).any(|w| w[1] < w[0])
        {
            return Err(packed_err(
                &self.path,
                format!("tensor {name} is not a monotone offset table from 0 to {end}"),
            ));
        }
        Ok(vals.into_iter().map(|v| v as usize).collect())
    }

    fn f32_rows(
        &self,
        name: &str,
        rows: std::ops::Range<usize>,
        width: usize,
        out: &mut [f32],
    ) -> Result<()> {
        let v = self
            .shard
            .get(name)
            .map_err(|e| packed_err(&self.path, e.to_string()))?;
        let bytes = v
            .data()
            .get(rows.start * width * 4..rows.end * width * 4)
            .ok_or_else(|| {
                packed_err(&self.path, format!("rows {rows:?} of {name} out of range"))
            })?;
        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(())
    }

    /// Caption strings of every sample, by id (useful for evaluation scripts).
    pub fn captions_by_id(&self) -> HashMap<&str, &[String]> {
        self.index
            .ids
            .iter()
            .map(String::as_str)
            .zip(self.index.captions.iter().map(Vec::as_slice))
            .collect()
    }
}

impl MotionSource for PackedDataset {
    fn len(&self) -> usize {
        self.index.ids.len()
    }

    fn id(&self, i: usize) -> &str {
        &self.index.ids[i]
    }

    fn frames(&self, i: usize) -> usize {
        self.frame_offsets[i + 1] - self.frame_offsets[i]
    }

    fn captions(&self, i: usize) -> &[String] {
        &self.index.captions[i]
    }

    fn copy_frames(&self, i: usize, start: usize, out: &mut [f32]) -> Result<()> {
        let n = out.len() / FEATURE_DIM;
        if start + n > self.frames(i) {
            return Err(DataError::Config(format!(
                "frames {start}..{} out of range for {} ({} frames)",
                start + n,
                self.id(i),
                self.frames(i)
            )));
        }
        let a = self.frame_offsets[i] + start;
        self.f32_rows("features", a..a + n, FEATURE_DIM, out)
    }

    fn has_text(&self) -> bool {
        self.index.has_text
    }

    fn text_tokens(&self, i: usize, c: usize, out: &mut Vec<f32>) -> Result<usize> {
        if !self.index.has_text || c >= self.captions(i).len() {
            return Err(DataError::Config(format!(
                "no CLIP token features for {} caption {c}",
                self.id(i)
            )));
        }
        let k = self.caption_offsets[i] + c;
        let rows = self.token_offsets[k]..self.token_offsets[k + 1];
        let start = out.len();
        out.resize(start + rows.len() * TEXT_DIM, 0.0);
        self.f32_rows("text_tokens", rows.clone(), TEXT_DIM, &mut out[start..])?;
        Ok(rows.len())
    }

    fn text_pooled(&self, i: usize, c: usize, out: &mut Vec<f32>) -> Result<()> {
        if !self.index.has_text || c >= self.captions(i).len() {
            return Err(DataError::Config(format!(
                "no pooled CLIP features for {} caption {c}",
                self.id(i)
            )));
        }
        let k = self.caption_offsets[i] + c;
        let start = out.len();
        out.resize(start + TEXT_DIM, 0.0);
        self.f32_rows("text_pooled", k..k + 1, TEXT_DIM, &mut out[start..])
    }
}
