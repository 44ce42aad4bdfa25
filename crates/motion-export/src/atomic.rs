//! Atomic file writes ([`tensor_io::atomic`]): the bytes go to a temporary file in the
//! destination's folder, which is flushed to disk and then renamed over the destination. Readers
//! see either the old file or the complete new one; on any error the temporary file is removed
//! and nothing is left.

use std::path::Path;

use crate::error::{ExportError, Result};

/// Writes `bytes` to `path` atomically (temporary sibling file, `fsync`, rename).
///
/// The destination folder must exist. Errors name `path`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    tensor_io::atomic::write(path, bytes).map_err(|source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    })
}
