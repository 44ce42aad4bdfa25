//! numpy `.npz` archives: a zip of `.npy` members, stored or deflate-compressed
//! (`np.savez` / `np.savez_compressed`).
//!
//! A member's declared size is checked before anything is allocated: it may not exceed what
//! deflate can expand the member's compressed bytes to (1032:1, the format's maximum ratio), and
//! reading stops at the declared size, so a crafted header cannot make the reader allocate or
//! inflate more than the archive could hold.

use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::path::Path;

use crate::ReadError;
use crate::npy::{Numeric, parse_numeric};

/// deflate's maximum compression ratio (a 258-byte match takes at least 2 bits, about 1032:1);
/// a member claiming more than this times its compressed size is malformed.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// Reads every numeric `.npy` member of the `.npz` file `path`, keyed by member name without
/// `.npy`. Members not ending in `.npy` are skipped.
pub fn read(path: &Path) -> Result<BTreeMap<String, Numeric>, ReadError> {
    let file = std::fs::File::open(path).map_err(|e| ReadError::new(path, e.to_string()))?;
    parse(std::io::BufReader::new(file), path)
}

/// Reads every numeric `.npy` member of an `.npz` archive from `reader`; `path` names it in
/// errors.
pub fn parse(
    reader: impl Read + Seek,
    path: &Path,
) -> Result<BTreeMap<String, Numeric>, ReadError> {
    let err = |reason: String| ReadError::new(path, reason);
    let mut zip =
        zip::ZipArchive::new(reader).map_err(|e| err(format!("not a zip/npz archive: {e}")))?;
    let mut out = BTreeMap::new();
    for i in 0..zip.len() {
        let member = zip
            .by_index(i)
            .map_err(|e| err(format!("member {i}: {e}")))?;
        let name = member.name().to_string();
        let Some(key) = name.strip_suffix(".npy") else {
            continue;
        };
        let declared = member.size();
        let bound = member
            .compressed_size()
            .saturating_mul(MAX_DEFLATE_RATIO)
            .saturating_add(1024);
        if declared > bound {
            return Err(err(format!(
                "member {name}: declared size {declared} exceeds what its {} compressed bytes \
                 can hold",
                member.compressed_size()
            )));
        }
        let declared_len = usize::try_from(declared)
            .map_err(|_| err(format!("member {name}: size {declared} exceeds memory")))?;
        let mut bytes = Vec::with_capacity(declared_len);
        member
            .take(declared)
            .read_to_end(&mut bytes)
            .map_err(|e| err(format!("member {name}: {e}")))?;
        if bytes.len() != declared_len {
            return Err(err(format!(
                "member {name}: holds {} bytes, its header declares {declared}",
                bytes.len()
            )));
        }
        let array = parse_numeric(&bytes, path).map_err(|e| ReadError {
            reason: format!("member {name}: {}", e.reason),
            ..e
        })?;
        if out.insert(key.to_string(), array).is_some() {
            return Err(err(format!("member {name} appears twice")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};

    use super::*;
    use crate::npy::{Array, f32_bytes};

    fn npz(members: &[(&str, Vec<u8>)], method: zip::CompressionMethod) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().compression_method(method);
        for (name, bytes) in members {
            w.start_file(*name, opts).expect("start");
            w.write_all(bytes).expect("write");
        }
        w.finish().expect("finish").into_inner()
    }

    #[test]
    fn stored_and_deflated_members_read_back() -> Result<(), ReadError> {
        let a = f32_bytes(&[2], &[1.0, 2.0]);
        for method in [
            zip::CompressionMethod::Stored,
            zip::CompressionMethod::Deflated,
        ] {
            let bytes = npz(&[("a.npy", a.clone()), ("notes.txt", vec![1])], method);
            let m = parse(Cursor::new(bytes), Path::new("m.npz"))?;
            assert_eq!(m.len(), 1);
            assert_eq!(
                m.get("a"),
                Some(&Numeric::F32(Array {
                    shape: vec![2],
                    data: vec![1.0, 2.0]
                }))
            );
        }
        Ok(())
    }

    #[test]
    fn member_errors_name_the_member() {
        let bytes = npz(
            &[("bad.npy", b"not npy".to_vec())],
            zip::CompressionMethod::Stored,
        );
        let e = parse(Cursor::new(bytes), Path::new("m.npz")).err();
        assert!(e.is_some_and(|e| e.reason.contains("bad.npy") && e.path == Path::new("m.npz")));
    }
}
