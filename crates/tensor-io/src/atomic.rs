//! Atomic file writes: the bytes go to a new temporary file in the destination's folder, which is
//! flushed to disk and renamed over the destination. Readers (and a process killed at any
//! moment, `kill -9` included) see either the old file or the complete new one; on an error the
//! temporary file is removed.
//!
//! Not `tempfile::NamedTempFile`: it creates owner-only (`0600`) files, and exports should get
//! the permissions any new file gets in their folder.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes the temporary files of concurrent writes from one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Removes the temporary file on drop unless it was renamed into place.
struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: the write already failed and that error is what the caller sees.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Why [`write_with`] failed: creating, syncing or renaming the file, or the caller's `fill`.
#[derive(Debug)]
pub enum WriteError<E> {
    /// An I/O error of the temporary file or the rename.
    Io(io::Error),
    /// The error `fill` returned.
    Fill(E),
}

impl<E> WriteError<E> {
    /// The caller's error type: `fill`'s error as is, an I/O error through `io`.
    pub fn into_error(self, io: impl FnOnce(io::Error) -> E) -> E {
        match self {
            WriteError::Io(e) => io(e),
            WriteError::Fill(e) => e,
        }
    }
}

impl<E> From<io::Error> for WriteError<E> {
    fn from(e: io::Error) -> Self {
        WriteError::Io(e)
    }
}

/// Writes `bytes` to `path` atomically. The destination folder must exist.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, |w| w.write_all(bytes)).map_err(|e| e.into_error(|e| e))
}

/// Runs `fill` on a buffered writer into a temporary file next to `path`, then syncs the file and
/// renames it over `path`. Nothing is left behind when `fill`, the sync or the rename fails.
pub fn write_with<E>(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> Result<(), E>,
) -> Result<(), WriteError<E>> {
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let (tmp, file) = loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut name = std::ffi::OsString::from(".");
        name.push(file_name);
        name.push(format!(".{}-{n}.tmp", process_id()));
        let tmp = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(WriteError::Io(e)),
        }
    };
    let mut guard = TempGuard {
        path: tmp,
        armed: true,
    };
    let mut w = BufWriter::with_capacity(1 << 20, file);
    fill(&mut w).map_err(WriteError::Fill)?;
    let file = w.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()?;
    fs::rename(&guard.path, path)?;
    guard.armed = false;
    sync_dir(dir);
    Ok(())
}

/// The process id (0 on WebAssembly, where `std::process::id` panics and files cannot be
/// written anyway: the create then fails with an I/O error).
fn process_id() -> u32 {
    #[cfg(not(target_family = "wasm"))]
    let id = std::process::id();
    #[cfg(target_family = "wasm")]
    let id = 0;
    id
}

/// Flushes the folder entry of a rename to disk (best effort, Unix only: a power loss right
/// after the rename could otherwise forget it; a killed process cannot).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_nothing() -> io::Result<()> {
        let dir = std::env::temp_dir().join(format!("tensor-io-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let path = dir.join("f.bin");
        write(&path, b"old")?;
        let failed = write_with(&path, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("stop"))
        });
        assert!(matches!(failed, Err(WriteError::Fill(_))));
        assert_eq!(fs::read(&path)?, b"old");
        write(&path, b"new")?;
        assert_eq!(fs::read(&path)?, b"new");
        assert_eq!(fs::read_dir(&dir)?.count(), 1, "no temporary file left");
        fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
