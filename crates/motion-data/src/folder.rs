//! Reader for the reference dataset folder layout (DESIGN §5):
//!
//! ```text
//! <data>/humanml3d_{train,val,test}_split.txt   sample ids, one per line
//! <data>/smpl_rifke/<id>.npy                    [F, 205] raw features
//! <data>/caption_raw/<id>.txt                   one caption per line
//! <data>/caption_clip/token/<id>.npy            [captions, 512] pooled CLIP features
//! <data>/caption_clip/seq/<id>.npy              object array of [L_i, 512] CLIP token features
//! ```
//!
//! The CLIP folders are optional as a whole (the synthetic set has none); when `caption_clip/`
//! exists, every sample must have both files. All faults of the folder are collected into one
//! [`FaultReport`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::faults::{Fault, FaultReport, FileKind};
use crate::npy::{NpyContent, read_npy};
use crate::source::{
    FEATURE_DIM, MAX_TEXT_TOKENS, MotionSample, MotionSource, Split, TEXT_DIM, TextFeatures,
};

/// What to do when the folder holds faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaultPolicy {
    /// Any fault makes [`FolderDataset::open`] fail with the full report (the default).
    #[default]
    Fail,
    /// Faulty samples are left out; the report stays available from
    /// [`FolderDataset::faults`] so the caller can show it.
    SkipAndReport,
}

/// Options of [`FolderDataset::open`].
#[derive(Debug, Clone, Default)]
pub struct FolderOptions {
    /// Fault policy.
    pub faults: FaultPolicy,
    /// Read only the first `limit` ids of the split (all when `None`).
    pub limit: Option<usize>,
}

/// Paths of one sample's files.
#[derive(Debug, Clone)]
pub struct SamplePaths {
    /// `smpl_rifke/<id>.npy`.
    pub motion: PathBuf,
    /// `caption_raw/<id>.txt`.
    pub captions: PathBuf,
    /// `caption_clip/token/<id>.npy`.
    pub clip_pooled: PathBuf,
    /// `caption_clip/seq/<id>.npy`.
    pub clip_tokens: PathBuf,
}

/// Paths of sample `id` under `root`.
pub fn sample_paths(root: &Path, id: &str) -> SamplePaths {
    SamplePaths {
        motion: root.join("smpl_rifke").join(format!("{id}.npy")),
        captions: root.join("caption_raw").join(format!("{id}.txt")),
        clip_pooled: root
            .join("caption_clip")
            .join("token")
            .join(format!("{id}.npy")),
        clip_tokens: root
            .join("caption_clip")
            .join("seq")
            .join(format!("{id}.npy")),
    }
}

/// Reads a split file into ids (blank lines skipped, whitespace trimmed).
///
/// An id must name a sample inside the folder: one containing `/`, `\`, a NUL byte, or equal
/// to `.` or `..`, is a [`DataError::Split`] naming the file and line (so that a crafted split
/// file cannot make the reader open files outside the dataset).
pub fn read_split(root: &Path, split: Split) -> Result<Vec<String>> {
    let path = root.join(split.file_name());
    let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
    let mut ids = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let id = line.trim();
        if id.is_empty() {
            continue;
        }
        if id.contains(['/', '\\', '\0']) || id == "." || id == ".." {
            return Err(DataError::Split {
                path,
                line: i + 1,
                reason: format!(
                    "id {:?} is a path, not a sample name",
                    id.chars().take(80).collect::<String>()
                ),
            });
        }
        ids.push(id.to_string());
    }
    Ok(ids)
}

/// Parses a caption file: one caption per non-blank line, trimmed.
pub fn parse_captions(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// A split of a reference dataset folder, read into memory.
///
/// ```no_run
/// use motion_data::{FolderDataset, FolderOptions, MotionSource, Split};
/// let data = FolderDataset::open("data/humanml3d", Split::Train, &FolderOptions::default())?;
/// println!("{} motions, first has {} frames", data.len(), data.frames(0));
/// # Ok::<(), motion_data::DataError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FolderDataset {
    root: PathBuf,
    split: Split,
    samples: Vec<MotionSample>,
    has_text: bool,
    faults: FaultReport,
}

impl FolderDataset {
    /// Reads split `split` of the folder `root`, checking every file.
    ///
    /// # Errors
    /// [`DataError::Faults`] with every fault found (missing files, ids absent, wrong widths,
    /// non-finite values, empty captions, caption / feature count mismatches) under
    /// [`FaultPolicy::Fail`]; [`DataError::Io`] if the split file cannot be read.
    pub fn open(root: impl AsRef<Path>, split: Split, options: &FolderOptions) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let mut report = FaultReport {
            root: root.clone(),
            faults: Vec::new(),
        };
        let split_path = root.join(split.file_name());
        if !split_path.is_file() {
            report.faults.push(Fault::MissingFile {
                id: String::new(),
                kind: FileKind::Split,
                path: split_path,
            });
            return Err(DataError::Faults(report));
        }
        let mut ids = read_split(&root, split)?;
        if let Some(limit) = options.limit {
            ids.truncate(limit);
        }
        let has_text = root.join("caption_clip").is_dir();
        let mut seen = HashSet::new();
        let mut samples = Vec::with_capacity(ids.len());
        for id in ids {
            if !seen.insert(id.clone()) {
                report.faults.push(Fault::DuplicateId { id });
                continue;
            }
            if let Some(s) = read_sample(&root, &id, has_text, &mut report.faults) {
                samples.push(s);
            }
        }
        if !report.is_empty() && options.faults == FaultPolicy::Fail {
            return Err(DataError::Faults(report));
        }
        Ok(FolderDataset {
            root,
            split,
            samples,
            has_text,
            faults: report,
        })
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The split that was read.
    pub fn split(&self) -> Split {
        self.split
    }

    /// The samples, in split order.
    pub fn samples(&self) -> &[MotionSample] {
        &self.samples
    }

    /// Faults found (empty unless opened with [`FaultPolicy::SkipAndReport`]).
    pub fn faults(&self) -> &FaultReport {
        &self.faults
    }
}

/// Reads one sample, pushing every fault found; `None` if the sample is unusable.
fn read_sample(
    root: &Path,
    id: &str,
    has_text: bool,
    faults: &mut Vec<Fault>,
) -> Option<MotionSample> {
    let p = sample_paths(root, id);
    let motion_exists = p.motion.is_file();
    let captions_exist = p.captions.is_file();
    let any_clip = has_text && p.clip_pooled.is_file();
    if !(motion_exists || captions_exist || any_clip) {
        faults.push(Fault::IdAbsent { id: id.to_string() });
        return None;
    }
    let before = faults.len();
    let features = if motion_exists {
        read_motion(id, &p.motion, faults)
    } else {
        faults.push(Fault::MissingFile {
            id: id.to_string(),
            kind: FileKind::Motion,
            path: p.motion.clone(),
        });
        None
    };
    let captions = if captions_exist {
        match std::fs::read_to_string(&p.captions) {
            Ok(text) => {
                let c = parse_captions(&text);
                if c.is_empty() {
                    faults.push(Fault::EmptyCaptions {
                        id: id.to_string(),
                        path: p.captions.clone(),
                    });
                }
                Some(c)
            }
            Err(e) => {
                faults.push(Fault::Unreadable {
                    id: id.to_string(),
                    kind: FileKind::Captions,
                    path: p.captions.clone(),
                    reason: e.to_string(),
                });
                None
            }
        }
    } else {
        faults.push(Fault::MissingFile {
            id: id.to_string(),
            kind: FileKind::Captions,
            path: p.captions.clone(),
        });
        None
    };
    let text = if has_text {
        read_text(id, &p, captions.as_ref().map_or(0, Vec::len), faults)
    } else {
        None
    };
    if faults.len() > before {
        return None;
    }
    let (features, frames) = features?;
    Some(MotionSample {
        id: id.to_string(),
        features,
        frames,
        captions: captions?,
        text,
    })
}

fn read_motion(id: &str, path: &Path, faults: &mut Vec<Fault>) -> Option<(Vec<f32>, usize)> {
    match read_npy(path) {
        Ok(NpyContent::Float(a)) => {
            if a.shape.len() != 2 || a.shape[1] != FEATURE_DIM || a.shape[0] == 0 {
                faults.push(Fault::WrongShape {
                    id: id.to_string(),
                    kind: FileKind::Motion,
                    path: path.to_path_buf(),
                    shape: a.shape,
                    expected: format!("[F >= 1, {FEATURE_DIM}]"),
                });
                return None;
            }
            if a.data.iter().any(|v| !v.is_finite()) {
                faults.push(Fault::NonFinite {
                    id: id.to_string(),
                    path: path.to_path_buf(),
                });
                return None;
            }
            Some((a.data, a.shape[0]))
        }
        Ok(NpyContent::Objects(_)) => {
            faults.push(Fault::Unreadable {
                id: id.to_string(),
                kind: FileKind::Motion,
                path: path.to_path_buf(),
                reason: "an object array, expected a float array".into(),
            });
            None
        }
        Err(e) => {
            faults.push(Fault::Unreadable {
                id: id.to_string(),
                kind: FileKind::Motion,
                path: path.to_path_buf(),
                reason: e.to_string(),
            });
            None
        }
    }
}

fn read_text(
    id: &str,
    p: &SamplePaths,
    n_captions: usize,
    faults: &mut Vec<Fault>,
) -> Option<TextFeatures> {
    let mut ok = true;
    let mut push = |f: Fault| {
        faults.push(f);
    };
    let pooled = if !p.clip_pooled.is_file() {
        push(Fault::MissingFile {
            id: id.into(),
            kind: FileKind::ClipPooled,
            path: p.clip_pooled.clone(),
        });
        None
    } else {
        match read_npy(&p.clip_pooled) {
            Ok(NpyContent::Float(a)) => {
                if a.shape.len() != 2 || a.shape[1] != TEXT_DIM {
                    push(Fault::WrongShape {
                        id: id.into(),
                        kind: FileKind::ClipPooled,
                        path: p.clip_pooled.clone(),
                        shape: a.shape,
                        expected: format!("[captions, {TEXT_DIM}]"),
                    });
                    None
                } else if n_captions > 0 && a.shape[0] != n_captions {
                    push(Fault::CaptionCountMismatch {
                        id: id.into(),
                        path: p.clip_pooled.clone(),
                        captions: n_captions,
                        features: a.shape[0],
                    });
                    None
                } else {
                    Some(a.data)
                }
            }
            Ok(NpyContent::Objects(items)) if n_captions > 0 && items.len() != n_captions => {
                push(Fault::CaptionCountMismatch {
                    id: id.into(),
                    path: p.clip_pooled.clone(),
                    captions: n_captions,
                    features: items.len(),
                });
                None
            }
            Ok(NpyContent::Objects(items)) => {
                // Pooled features stored as an object array of [512] vectors.
                if items.iter().all(|a| a.data.len() == TEXT_DIM) {
                    Some(items.into_iter().flat_map(|a| a.data).collect())
                } else {
                    push(Fault::WrongShape {
                        id: id.into(),
                        kind: FileKind::ClipPooled,
                        path: p.clip_pooled.clone(),
                        shape: items.first().map(|a| a.shape.clone()).unwrap_or_default(),
                        expected: format!("[{TEXT_DIM}] per caption"),
                    });
                    None
                }
            }
            Err(e) => {
                push(Fault::Unreadable {
                    id: id.into(),
                    kind: FileKind::ClipPooled,
                    path: p.clip_pooled.clone(),
                    reason: e.to_string(),
                });
                None
            }
        }
    };
    ok &= pooled.is_some();
    let tokens = if !p.clip_tokens.is_file() {
        push(Fault::MissingFile {
            id: id.into(),
            kind: FileKind::ClipTokens,
            path: p.clip_tokens.clone(),
        });
        None
    } else {
        let items = match read_npy(&p.clip_tokens) {
            Ok(NpyContent::Objects(items)) => Some(items),
            // A regular [captions, L, 512] array (all captions padded to one length).
            // The token count must be valid before it is used as a step: with L = 0 the
            // caption count would not be bounded by the data read.
            Ok(NpyContent::Float(a))
                if a.shape.len() == 3
                    && a.shape[2] == TEXT_DIM
                    && (1..=MAX_TEXT_TOKENS).contains(&a.shape[1]) =>
            {
                let step = a.shape[1] * TEXT_DIM;
                Some(
                    a.data
                        .chunks_exact(step)
                        .map(|c| crate::npy::FloatArray {
                            shape: vec![a.shape[1], TEXT_DIM],
                            data: c.to_vec(),
                        })
                        .collect(),
                )
            }
            Ok(NpyContent::Float(a)) => {
                push(Fault::WrongShape {
                    id: id.into(),
                    kind: FileKind::ClipTokens,
                    path: p.clip_tokens.clone(),
                    shape: a.shape,
                    expected: format!(
                        "an object array of [1 <= L <= {MAX_TEXT_TOKENS}, {TEXT_DIM}]"
                    ),
                });
                None
            }
            Err(e) => {
                push(Fault::Unreadable {
                    id: id.into(),
                    kind: FileKind::ClipTokens,
                    path: p.clip_tokens.clone(),
                    reason: e.to_string(),
                });
                None
            }
        };
        items.and_then(|items| {
            if n_captions > 0 && items.len() != n_captions {
                push(Fault::CaptionCountMismatch {
                    id: id.into(),
                    path: p.clip_tokens.clone(),
                    captions: n_captions,
                    features: items.len(),
                });
                return None;
            }
            if let Some(bad) = items.iter().find(|a| {
                a.shape.len() != 2
                    || a.shape[1] != TEXT_DIM
                    || a.shape[0] == 0
                    || a.shape[0] > MAX_TEXT_TOKENS
            }) {
                push(Fault::WrongShape {
                    id: id.into(),
                    kind: FileKind::ClipTokens,
                    path: p.clip_tokens.clone(),
                    shape: bad.shape.clone(),
                    expected: format!("[1 <= L <= {MAX_TEXT_TOKENS}, {TEXT_DIM}] per caption"),
                });
                return None;
            }
            Some(items.into_iter().map(|a| a.data).collect::<Vec<_>>())
        })
    };
    ok &= tokens.is_some();
    if !ok {
        return None;
    }
    Some(TextFeatures {
        pooled: pooled?,
        tokens: tokens?,
    })
}

/// Reads one split of a folder into memory; shorthand for [`FolderDataset::open`] with the
/// default options.
pub fn read_folder(root: impl AsRef<Path>, split: Split) -> Result<FolderDataset> {
    FolderDataset::open(root, split, &FolderOptions::default())
}

impl MotionSource for FolderDataset {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn id(&self, i: usize) -> &str {
        self.samples.as_slice().id(i)
    }

    fn frames(&self, i: usize) -> usize {
        self.samples.as_slice().frames(i)
    }

    fn captions(&self, i: usize) -> &[String] {
        self.samples.as_slice().captions(i)
    }

    fn copy_frames(&self, i: usize, start: usize, out: &mut [f32]) -> Result<()> {
        self.samples.as_slice().copy_frames(i, start, out)
    }

    fn has_text(&self) -> bool {
        self.has_text
    }

    fn text_tokens(&self, i: usize, c: usize, out: &mut Vec<f32>) -> Result<usize> {
        self.samples.as_slice().text_tokens(i, c, out)
    }

    fn text_pooled(&self, i: usize, c: usize, out: &mut Vec<f32>) -> Result<()> {
        self.samples.as_slice().text_pooled(i, c, out)
    }
}

/// Writes samples in the reference folder layout (motion features, caption text, and the CLIP
/// files when the sample has text features); every file is written atomically.
pub fn write_sample(root: &Path, sample: &MotionSample) -> Result<()> {
    let p = sample_paths(root, &sample.id);
    if sample.features.len() != sample.frames * FEATURE_DIM {
        return Err(DataError::Shape {
            what: format!("features of {}", sample.id),
            expected: format!("[{}, {FEATURE_DIM}]", sample.frames),
            got: vec![sample.features.len()],
        });
    }
    for dir in [p.motion.parent(), p.captions.parent()]
        .into_iter()
        .flatten()
    {
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    }
    crate::npy::write_npy_f32(&p.motion, &[sample.frames, FEATURE_DIM], &sample.features)?;
    let mut text = sample.captions.join("\n");
    text.push('\n');
    crate::npy::write_atomic(&p.captions, text.as_bytes())?;
    if let Some(t) = &sample.text {
        for dir in [p.clip_pooled.parent(), p.clip_tokens.parent()]
            .into_iter()
            .flatten()
        {
            std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        }
        crate::npy::write_npy_f32(
            &p.clip_pooled,
            &[t.pooled.len() / TEXT_DIM, TEXT_DIM],
            &t.pooled,
        )?;
        crate::npy::write_atomic(
            &p.clip_tokens,
            &crate::npy::object_array_npy_bytes(&t.tokens, TEXT_DIM),
        )?;
    }
    Ok(())
}

/// Writes `humanml3d_<split>_split.txt` with one id per line, atomically.
pub fn write_split(root: &Path, split: Split, ids: &[String]) -> Result<()> {
    std::fs::create_dir_all(root).map_err(|e| DataError::io(root, e))?;
    let mut text = ids.join("\n");
    text.push('\n');
    crate::npy::write_atomic(&root.join(split.file_name()), text.as_bytes())
}
