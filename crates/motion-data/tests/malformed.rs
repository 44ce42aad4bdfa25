//! Malformed files must give a typed error naming the file and the field at fault, never a
//! panic, an abort or an allocation far above the file size.
//!
//! Seeded mutation campaigns (deterministic: fixed seeds, `rand`'s `StdRng`) over the `.npy`
//! reader, the numpy object-array pickle reader, `read_folder` on a dataset folder and the
//! batcher, plus regression tests of the concrete crashes they replace. This binary installs
//! a counting allocator (see `test_fixtures::mutate`): a case that allocates more than
//! 64 x its input + 64 MiB fails with its description; a single request above 1 GiB is
//! refused, which aborts the binary with Rust's "memory allocation failed" message.

use std::path::{Path, PathBuf};

use motion_data::folder::read_split;
use motion_data::npy::object_array_npy_bytes;
use motion_data::npy::{NpyContent, parse_header, parse_npy};
use motion_data::{
    BatchConfig, Batcher, FEATURE_DIM, MotionSample, Split, TEXT_DIM, TextFeatures, read_folder,
    write_sample, write_split,
};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use test_fixtures::mutate::{
    Campaign, CappedAlloc, Draw, SPECIAL_VALUES, Scratch, measure, mutate_bytes, mutate_npy_header,
    mutate_pickle, mutate_text, npy_header_span, pickle_ops, set_field, tracking,
    truncation_lengths,
};

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc { cap: 1 << 30 };

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/object_arrays")
}

/// A fresh folder under the target's temporary directory, removed on drop.
fn scratch(tag: &str) -> std::io::Result<Scratch> {
    Scratch::new(
        env!("CARGO_TARGET_TMPDIR"),
        &format!("motion-data-malformed-{tag}"),
    )
}

/// The valid object-array files: numpy's own (protocols 2 and 3, float64, Fortran order) and
/// one written by this crate.
fn object_array_files() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for name in [
        "seq_numpy_default.npy",
        "seq_protocol2.npy",
        "seq_float64.npy",
        "seq_fortran.npy",
    ] {
        out.push((name.to_string(), std::fs::read(data_dir().join(name))?));
    }
    let items = vec![vec![0.25f32; 3 * 8], vec![-1.5f32; 8]];
    out.push(("written.npy".into(), object_array_npy_bytes(&items, 8)));
    Ok(out)
}

/// Header + a pickle body: an object-array `.npy`.
fn with_body(file: &[u8], body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let h = parse_header(file, Path::new("base.npy"))?;
    let mut out = file[..h.data_offset].to_vec();
    out.extend_from_slice(body);
    Ok(out)
}

#[test]
fn allocations_are_counted() {
    assert!(tracking(), "the counting allocator must be installed");
}

#[test]
fn pickle_object_arrays_survive_mutations() -> anyhow::Result<()> {
    let name = "m-seq.npy";
    let path = Path::new("caption_clip/seq").join(name);
    let mut campaign =
        Campaign::new("numpy object-array pickle (npy::parse_npy)").errors_must_name(name);
    let mut rng = StdRng::seed_from_u64(0x0b1e_c7a7);
    let mut draw = || rng.next_u64();
    for (base_name, file) in object_array_files()? {
        let offset = parse_header(&file, Path::new(&base_name))?.data_offset;
        let body = &file[offset..];
        // Every located length / integer field set to every special value.
        for op in pickle_ops(body) {
            for field in [op.len, op.int].into_iter().flatten() {
                for v in SPECIAL_VALUES {
                    let mut b = body.to_vec();
                    set_field(&mut b, field, v);
                    let bytes = with_body(&file, &b)?;
                    let what = format!("{base_name}: field at {} set to {v:#x}", field.pos);
                    campaign.case(&what, bytes.len(), || parse_npy(&bytes, &path));
                }
            }
        }
        // Truncations of the pickle.
        for len in truncation_lengths(body.len(), 40) {
            let bytes = with_body(&file, &body[..len])?;
            campaign.case(&format!("{base_name}: cut at {len}"), bytes.len(), || {
                parse_npy(&bytes, &path)
            });
        }
        // Random structure-aware mutations, sometimes two in a row.
        for i in 0..2000 {
            let (mut what, mut b) = mutate_pickle(body, &mut draw);
            if draw.below(4) == 0 {
                let (w2, b2) = mutate_pickle(&b, &mut draw);
                what = format!("{what}; {w2}");
                b = b2;
            }
            let bytes = with_body(&file, &b)?;
            campaign.case(&format!("{base_name} #{i}: {what}"), bytes.len(), || {
                parse_npy(&bytes, &path)
            });
        }
    }
    campaign.finish().map_err(anyhow::Error::msg)?;
    Ok(())
}

#[test]
fn npy_float_arrays_survive_mutations() -> anyhow::Result<()> {
    let name = "m-plain.npy";
    let path = Path::new("smpl_rifke").join(name);
    let mut campaign = Campaign::new("float .npy (npy::parse_npy)").errors_must_name(name);
    let mut rng = StdRng::seed_from_u64(0x000f_10a7);
    let mut draw = || rng.next_u64();
    let mut bases = vec![std::fs::read(data_dir().join("plain_float32.npy"))?];
    bases.push(motion_data::npy::npy_bytes_f32(
        &[4, FEATURE_DIM],
        &[0.5; 4 * FEATURE_DIM],
    ));
    // A format 2.0 header (4-byte header length).
    let v1 = motion_data::npy::npy_bytes_f32(&[3], &[1.0, 2.0, 3.0]);
    let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
    let hlen = u16::from_le_bytes([v1[8], v1[9]]) as u32;
    v2.extend_from_slice(&hlen.to_le_bytes());
    v2.extend_from_slice(&v1[10..]);
    bases.push(v2);
    for base in &bases {
        if let Some((len_field, _)) = npy_header_span(base) {
            for v in SPECIAL_VALUES {
                let mut b = base.clone();
                set_field(&mut b, len_field, v);
                campaign.case(&format!("header length {v:#x}"), b.len(), || {
                    parse_npy(&b, &path)
                });
            }
        }
        for len in truncation_lengths(base.len(), 40) {
            let b = &base[..len];
            campaign.case(&format!("cut at {len}"), b.len(), || parse_npy(b, &path));
        }
        for i in 0..2000 {
            let (what, b) = if draw.below(3) == 0 {
                mutate_bytes(base, &[], &mut draw)
            } else {
                mutate_npy_header(base, &mut draw)
            };
            campaign.case(&format!("#{i}: {what}"), b.len(), || parse_npy(&b, &path));
        }
    }
    campaign.finish().map_err(anyhow::Error::msg)?;
    Ok(())
}

/// A two-sample dataset with CLIP features.
fn sample(s: usize) -> MotionSample {
    let frames = 3 + s;
    let caps = 1 + s;
    MotionSample {
        id: format!("s{s:03}"),
        features: (0..frames * FEATURE_DIM).map(|i| i as f32 * 0.01).collect(),
        frames,
        captions: (0..caps).map(|c| format!("caption {c} of {s}")).collect(),
        text: Some(TextFeatures {
            pooled: vec![0.5; caps * TEXT_DIM],
            tokens: (0..caps).map(|c| vec![0.25; (2 + c) * TEXT_DIM]).collect(),
        }),
    }
}

#[test]
fn read_folder_survives_malformed_files() -> anyhow::Result<()> {
    let scratch = scratch("folder")?;
    let root = scratch.path();
    let samples = [sample(0), sample(1)];
    for s in &samples {
        write_sample(root, s)?;
    }
    let ids: Vec<String> = samples.iter().map(|s| s.id.clone()).collect();
    write_split(root, Split::Train, &ids)?;
    read_folder(root, Split::Train)?;
    let files: Vec<PathBuf> = vec![
        root.join("smpl_rifke/s001.npy"),
        root.join("caption_clip/token/s001.npy"),
        root.join("caption_clip/seq/s001.npy"),
        root.join("caption_raw/s001.txt"),
        root.join(Split::Train.file_name()),
    ];
    let originals = files
        .iter()
        .map(std::fs::read)
        .collect::<std::io::Result<Vec<_>>>()?;
    let folder_size: usize = originals.iter().map(Vec::len).sum::<usize>() * 2;
    let mut campaign = Campaign::new("dataset folder (read_folder)");
    let mut rng = StdRng::seed_from_u64(0x00f0_1de7);
    let mut draw = || rng.next_u64();
    for i in 0..4000 {
        let k = i % files.len();
        let base = &originals[k];
        let (what, bytes) = match k {
            0 | 1 => mutate_npy_header(base, &mut draw),
            2 if draw.below(2) == 0 => {
                let offset = parse_header(base, &files[k])?.data_offset;
                let (w, body) = mutate_pickle(&base[offset..], &mut draw);
                (w, with_body(base, &body)?)
            }
            2 => mutate_npy_header(base, &mut draw),
            _ => mutate_bytes(base, &[], &mut draw),
        };
        std::fs::write(&files[k], &bytes)?;
        let file_name = files[k]
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let what = format!("{file_name} #{i}: {what}");
        let msg = campaign.case(&what, folder_size + bytes.len(), || {
            read_folder(root, Split::Train)
        });
        // A fault names the sample and its file at fault (a caption file that no longer
        // matches the CLIP files is reported on the CLIP files); a garbled split file names
        // whatever ids it now lists.
        if let Some(msg) = msg {
            let named = msg.contains(&file_name) || msg.contains("s001:");
            if k != 4 && !named {
                campaign.fail(format!("{what}: error does not name the file: {msg}"));
            }
        }
        std::fs::write(&files[k], base)?;
    }
    campaign.finish().map_err(anyhow::Error::msg)?;
    Ok(())
}

#[test]
fn split_and_caption_files_survive_mutations() -> anyhow::Result<()> {
    let scratch = scratch("text")?;
    let root = scratch.path();
    let samples = [sample(0), sample(1)];
    for s in &samples {
        write_sample(root, s)?;
    }
    let ids: Vec<String> = samples.iter().map(|s| s.id.clone()).collect();
    write_split(root, Split::Train, &ids)?;
    read_folder(root, Split::Train)?;
    let split_path = root.join(Split::Train.file_name());
    let caption_path = root.join("caption_raw/s001.txt");
    let split = std::fs::read(&split_path)?;
    let captions = std::fs::read(&caption_path)?;
    let folder_size = 4 * (split.len() + captions.len()) + (64 << 10);
    let mut rng = StdRng::seed_from_u64(0x5e1f_7e47);
    let mut draw = || rng.next_u64();

    // The split file alone (`read_split`: errors name it), then through `read_folder` (a
    // garbled split names whatever ids it now lists).
    let split_name = Split::Train.file_name();
    let mut campaign = Campaign::new("split file (read_split)").errors_must_name(&split_name);
    let mut folder_campaign = Campaign::new("split file (read_folder)");
    for i in 0..800 {
        let (what, bytes) = mutate_text(&split, &mut draw);
        std::fs::write(&split_path, &bytes)?;
        let what = format!("#{i}: {what}");
        let mut bad_ids = None;
        campaign.case(&what, bytes.len(), || {
            let ids = read_split(root, Split::Train)?;
            // Ids are trimmed, non-empty lines.
            if ids.iter().any(|id| id.is_empty() || id.trim() != id) {
                bad_ids = Some(ids);
            }
            Ok::<_, motion_data::DataError>(())
        });
        if let Some(ids) = bad_ids {
            campaign.fail(format!("{what}: untrimmed or empty id in {ids:?}"));
        }
        if i % 2 == 0 {
            folder_campaign.case(&what, folder_size + bytes.len(), || {
                read_folder(root, Split::Train)
            });
        }
    }
    std::fs::write(&split_path, &split)?;
    campaign.finish().map_err(anyhow::Error::msg)?;
    folder_campaign.finish().map_err(anyhow::Error::msg)?;

    // A caption file through `read_folder`: every fault names the file or the sample.
    let mut campaign = Campaign::new("caption file (read_folder)");
    for i in 0..700 {
        let (what, bytes) = mutate_text(&captions, &mut draw);
        std::fs::write(&caption_path, &bytes)?;
        let what = format!("s001.txt #{i}: {what}");
        let msg = campaign.case(&what, folder_size + bytes.len(), || {
            read_folder(root, Split::Train)
        });
        if let Some(msg) = msg
            && !(msg.contains("s001.txt") || msg.contains("s001:"))
        {
            campaign.fail(format!("{what}: error does not name the file: {msg}"));
        }
    }
    std::fs::write(&caption_path, &captions)?;
    campaign.finish().map_err(anyhow::Error::msg)?;
    Ok(())
}

#[test]
fn batcher_survives_malformed_samples() -> anyhow::Result<()> {
    let mut campaign = Campaign::new("batcher (Batcher::batch on MotionSample)");
    let mut rng = StdRng::seed_from_u64(0x0ba7_c4e5);
    let mut draw = || rng.next_u64();
    for i in 0..4000 {
        let mut samples = vec![sample(0), sample(1)];
        let s = &mut samples[draw.below(2)];
        let what = match draw.below(7) {
            0 => {
                let n = draw.below(3 * TEXT_DIM);
                if let Some(t) = s.text.as_mut().and_then(|t| t.tokens.first_mut()) {
                    t.resize(n, 1.0);
                }
                format!("token vector of {n} values")
            }
            1 => {
                let n = draw.below(3 * TEXT_DIM);
                if let Some(t) = s.text.as_mut() {
                    t.pooled.resize(n, 1.0);
                }
                format!("pooled vector of {n} values")
            }
            2 => {
                s.frames = *draw.pick(&[0, 1, 100, usize::MAX, usize::MAX / FEATURE_DIM]);
                format!("frames = {}", s.frames)
            }
            3 => {
                let n = draw.below(5 * FEATURE_DIM);
                s.features.resize(n, 0.0);
                format!("features of {n} values")
            }
            4 => {
                s.captions.clear();
                "no caption".into()
            }
            5 => {
                if let Some(t) = s.text.as_mut() {
                    t.tokens.clear();
                }
                "no token features".into()
            }
            _ => {
                let n = 78 * TEXT_DIM + draw.below(TEXT_DIM);
                if let Some(t) = s.text.as_mut().and_then(|t| t.tokens.last_mut()) {
                    t.resize(n, 1.0);
                }
                format!("token vector of {n} values (> 77 tokens)")
            }
        };
        let cfg = if draw.below(2) == 0 {
            BatchConfig::train(2, 1 + draw.below(8), draw.next_u64())
        } else {
            BatchConfig::eval(2, 1 + draw.below(8))
        };
        let epoch = draw.below(3) as u64;
        campaign.case(&format!("#{i}: {what}"), 1 << 20, || {
            Batcher::new(samples.as_slice(), cfg, candle::Device::Cpu)?.batch(&[0, 1], epoch)
        });
    }
    campaign.finish().map_err(anyhow::Error::msg)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Regression tests of the concrete crashes.

/// An object-array `.npy` whose pickle is `body`.
fn npy_with_pickle(body: &[u8]) -> Vec<u8> {
    let mut header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }".to_string();
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(body);
    out
}

#[test]
fn huge_length_opcodes_are_errors_naming_file_and_field() {
    let cases: [(u8, usize, &str); 11] = [
        (0x8e, 8, "BINBYTES8"),
        (0x8d, 8, "BINUNICODE8"),
        (0x96, 8, "BYTEARRAY8"),
        (b'X', 4, "BINUNICODE"),
        (b'B', 4, "BINBYTES"),
        (b'T', 4, "BINSTRING"),
        (0x8b, 4, "LONG4"),
        (0x8c, 1, "SHORT_BINUNICODE"),
        (b'C', 1, "SHORT_BINBYTES"),
        (b'U', 1, "SHORT_BINSTRING"),
        (0x8a, 1, "LONG1"),
    ];
    for (op, width, name) in cases {
        let mut body = vec![0x80, 4, op];
        body.extend_from_slice(&u64::MAX.to_le_bytes()[..width]);
        body.extend_from_slice(b"ab.");
        let bytes = npy_with_pickle(&body);
        let (res, usage) = measure(|| parse_npy(&bytes, Path::new("caption_clip/seq/huge.npy")));
        let err = match res {
            Err(e) => e.to_string(),
            Ok(v) => panic!("{name}: expected an error, got {v:?}"),
        };
        assert!(err.contains("huge.npy"), "{name}: {err}");
        assert!(
            err.contains(name) && err.contains("length"),
            "{name}: {err}"
        );
        assert!(usage.largest < 1 << 20, "{name}: allocated {usage:?}");
    }
}

#[test]
fn overflowing_npy_shape_is_an_error_before_allocation() {
    for shape in [
        "(4611686018427387904, 4611686018427387904)",
        "(18446744073709551615, 2)",
        "(1000000000, 205)",
    ] {
        let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0u8; 64]);
        let (res, usage) = measure(|| parse_npy(&bytes, Path::new("smpl_rifke/big.npy")));
        let err = res.expect_err(shape).to_string();
        assert!(err.contains("big.npy") && err.contains("'shape'"), "{err}");
        assert!(usage.largest < 1 << 20, "{shape}: allocated {usage:?}");
    }
}

#[test]
fn overflowing_pickled_array_shape_is_an_error() -> anyhow::Result<()> {
    // The written object array with the first item's row count widened to 2^62 (LONG1).
    let items = vec![vec![1.0f32; 2 * 4]];
    let file = object_array_npy_bytes(&items, 4);
    let offset = parse_header(&file, Path::new("w.npy"))?.data_offset;
    let body = &file[offset..];
    // The item shape is `J <rows> J <width> TUPLE2`: the second-to-last BININT before 0x86.
    let ops = pickle_ops(body);
    let at = ops
        .windows(3)
        .position(|w| w[0].op == b'J' && w[1].op == b'J' && w[2].op == 0x86)
        .ok_or_else(|| anyhow::anyhow!("no item shape in the pickle"))?;
    let rows = &ops[at];
    let mut mutated = body[..rows.pos].to_vec();
    mutated.extend_from_slice(&[0x8a, 8]);
    mutated.extend_from_slice(&(1u64 << 62).to_le_bytes());
    mutated.extend_from_slice(&body[rows.end..]);
    let bytes = with_body(&file, &mutated)?;
    let (res, usage) = measure(|| parse_npy(&bytes, Path::new("caption_clip/seq/rows.npy")));
    let err = res.expect_err("huge rows").to_string();
    assert!(
        err.contains("rows.npy") && err.contains("shape field"),
        "{err}"
    );
    assert!(usage.largest < 1 << 20, "allocated {usage:?}");
    Ok(())
}

#[test]
fn token_vector_not_a_multiple_of_512_is_an_error() -> anyhow::Result<()> {
    let mut samples = vec![sample(0), sample(1)];
    if let Some(t) = samples[1].text.as_mut() {
        t.tokens[0].push(1.0);
    }
    let batcher = Batcher::new(
        samples.as_slice(),
        BatchConfig::eval(2, 4),
        candle::Device::Cpu,
    )?;
    let err = batcher
        .batch(&[0, 1], 0)
        .expect_err("ragged tokens")
        .to_string();
    assert!(
        err.contains("s001") && err.contains("text.tokens[0]"),
        "{err}"
    );
    Ok(())
}

#[test]
fn huge_length_in_a_dataset_folder_is_a_fault_naming_the_file() -> anyhow::Result<()> {
    let scratch = scratch("huge")?;
    let root = scratch.path();
    write_sample(root, &sample(0))?;
    write_split(root, Split::Train, &["s000".to_string()])?;
    let mut body = vec![0x80, 4, 0x8e];
    body.extend_from_slice(&u64::MAX.to_le_bytes());
    body.push(b'.');
    std::fs::write(
        root.join("caption_clip/seq/s000.npy"),
        npy_with_pickle(&body),
    )?;
    let err = read_folder(root, Split::Train)
        .expect_err("fault")
        .to_string();
    assert!(
        err.contains("s000.npy") && err.contains("BINBYTES8"),
        "{err}"
    );
    match parse_npy(&npy_with_pickle(b"\x80\x04."), Path::new("x.npy")) {
        Err(_) => {}
        Ok(NpyContent::Objects(_) | NpyContent::Float(_)) => anyhow::bail!("empty pickle"),
    }
    Ok(())
}
