//! Fault reporting for dataset folders: every problem found while reading is collected (never a
//! panic, never a silent skip) and reported at once, with counts per kind.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// Which file of a sample a fault concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileKind {
    /// The split file `humanml3d_<split>_split.txt`.
    Split,
    /// `smpl_rifke/<id>.npy`.
    Motion,
    /// `caption_raw/<id>.txt`.
    Captions,
    /// `caption_clip/token/<id>.npy`.
    ClipPooled,
    /// `caption_clip/seq/<id>.npy`.
    ClipTokens,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Split => "split file",
            FileKind::Motion => "motion features",
            FileKind::Captions => "caption text",
            FileKind::ClipPooled => "pooled CLIP features",
            FileKind::ClipTokens => "CLIP token features",
        })
    }
}

/// One problem found in a dataset folder.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// An id listed in a split has none of its files: it is absent from the folder.
    IdAbsent {
        /// The sample id.
        id: String,
    },
    /// A file the sample needs does not exist.
    MissingFile {
        /// The sample id (empty for the split file).
        id: String,
        /// Which file.
        kind: FileKind,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A file exists but cannot be parsed.
    Unreadable {
        /// The sample id.
        id: String,
        /// Which file.
        kind: FileKind,
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// An array has the wrong shape (width other than expected, zero frames, wrong rank).
    WrongShape {
        /// The sample id.
        id: String,
        /// Which file.
        kind: FileKind,
        /// The file.
        path: PathBuf,
        /// The shape found.
        shape: Vec<usize>,
        /// What was expected, in words.
        expected: String,
    },
    /// A feature file holds NaN or infinite values.
    NonFinite {
        /// The sample id.
        id: String,
        /// The file.
        path: PathBuf,
    },
    /// A caption file holds no non-blank line.
    EmptyCaptions {
        /// The sample id.
        id: String,
        /// The file.
        path: PathBuf,
    },
    /// The number of CLIP feature rows does not match the number of caption lines.
    CaptionCountMismatch {
        /// The sample id.
        id: String,
        /// The CLIP file.
        path: PathBuf,
        /// Caption lines in `caption_raw`.
        captions: usize,
        /// Feature entries found.
        features: usize,
    },
    /// An id appears twice in a split file.
    DuplicateId {
        /// The sample id.
        id: String,
    },
}

impl Fault {
    /// A short name of the fault kind, used for the counts.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Fault::IdAbsent { .. } => "id absent",
            Fault::MissingFile { .. } => "missing file",
            Fault::Unreadable { .. } => "unreadable file",
            Fault::WrongShape { .. } => "wrong shape",
            Fault::NonFinite { .. } => "non-finite values",
            Fault::EmptyCaptions { .. } => "empty captions",
            Fault::CaptionCountMismatch { .. } => "caption count mismatch",
            Fault::DuplicateId { .. } => "duplicate id",
        }
    }

    /// The sample id the fault concerns (empty for folder-level faults).
    pub fn id(&self) -> &str {
        match self {
            Fault::IdAbsent { id }
            | Fault::MissingFile { id, .. }
            | Fault::Unreadable { id, .. }
            | Fault::WrongShape { id, .. }
            | Fault::NonFinite { id, .. }
            | Fault::EmptyCaptions { id, .. }
            | Fault::CaptionCountMismatch { id, .. }
            | Fault::DuplicateId { id } => id,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::IdAbsent { id } => write!(f, "{id}: listed in the split but no file exists"),
            Fault::MissingFile { id, kind, path } => {
                write!(f, "{id}: missing {kind} {}", path.display())
            }
            Fault::Unreadable {
                id,
                kind,
                path,
                reason,
            } => write!(f, "{id}: cannot read {kind} {}: {reason}", path.display()),
            Fault::WrongShape {
                id,
                kind,
                path,
                shape,
                expected,
            } => write!(
                f,
                "{id}: {kind} {} has shape {shape:?}, expected {expected}",
                path.display()
            ),
            Fault::NonFinite { id, path } => {
                write!(f, "{id}: {} holds NaN or infinite values", path.display())
            }
            Fault::EmptyCaptions { id, path } => {
                write!(f, "{id}: caption file {} is empty", path.display())
            }
            Fault::CaptionCountMismatch {
                id,
                path,
                captions,
                features,
            } => write!(
                f,
                "{id}: {} holds {features} caption features for {captions} caption lines",
                path.display()
            ),
            Fault::DuplicateId { id } => write!(f, "{id}: listed twice in the split"),
        }
    }
}

/// Every fault found in a dataset folder.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultReport {
    /// The folder that was read.
    pub root: PathBuf,
    /// All faults, in the order found (split order, then file order per sample).
    pub faults: Vec<Fault>,
}

impl FaultReport {
    /// Whether no fault was found.
    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }

    /// Number of faults per kind (see [`Fault::kind_name`]).
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for f in &self.faults {
            *m.entry(f.kind_name()).or_insert(0) += 1;
        }
        m
    }
}

impl fmt::Display for FaultReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = self
            .counts()
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ");
        write!(
            f,
            "{} fault(s) in dataset folder {} ({counts}):",
            self.faults.len(),
            self.root.display()
        )?;
        for fault in &self.faults {
            write!(f, "\n  - {fault}")?;
        }
        Ok(())
    }
}
