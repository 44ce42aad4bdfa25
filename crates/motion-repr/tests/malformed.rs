//! Malformed statistics files must give a typed error naming the file and the field at fault,
//! never a panic, an abort or an allocation far above the file size.
//!
//! Seeded mutation campaigns over `Normalizer::from_stem` (its `.pt` reader, `.npy` and
//! `.safetensors`), starting from the reference fixtures `standardization_rifke-{mean,std}.pt`,
//! plus regression tests of tensors whose pickled shape / storage size is huge. The generator
//! is `test_fixtures::mutate::SplitMix64` with fixed seeds (this crate has no `rand`). This
//! binary installs a counting allocator (see `test_fixtures::mutate`): a case that allocates
//! more than 64 x its input + 64 MiB fails with its description; a single request above 1 GiB
//! is refused, which aborts the binary with Rust's "memory allocation failed" message.

use std::path::Path;

use candle::Device;
use motion_repr::Normalizer;
use test_fixtures::fixture_path;
use test_fixtures::mutate::{
    Campaign, CappedAlloc, Draw, SPECIAL_VALUES, Scratch, SplitMix64, measure, mutate_bytes,
    mutate_npy_header, mutate_pickle, mutate_safetensors, set_field, stored_zip, tracking,
    truncation_lengths, zip_fields, zip_members,
};

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc { cap: 1 << 30 };

/// A fresh folder under the target's temporary directory, removed on drop.
fn scratch(tag: &str) -> std::io::Result<Scratch> {
    Scratch::new(
        env!("CARGO_TARGET_TMPDIR"),
        &format!("motion-repr-malformed-{tag}"),
    )
}

/// Runs `from_stem` on `dir` after writing `bytes` as the mean file `<stem>-mean.<ext>`.
fn load(dir: &Path, stem: &str, ext: &str, bytes: &[u8]) -> anyhow::Result<Normalizer> {
    std::fs::write(dir.join(format!("{stem}-mean.{ext}")), bytes)?;
    Ok(Normalizer::from_stem(dir, stem, &Device::Cpu)?)
}

#[test]
fn allocations_are_counted() {
    assert!(tracking(), "the counting allocator must be installed");
}

#[test]
fn torch_statistics_survive_mutations() -> anyhow::Result<()> {
    let scratch = scratch("pt")?;
    let dir = scratch.path();
    let stem = "mstat";
    let mean = std::fs::read(fixture_path("standardization_rifke-mean.pt")?)?;
    std::fs::copy(
        fixture_path("standardization_rifke-std.pt")?,
        dir.join(format!("{stem}-std.pt")),
    )?;
    load(dir, stem, "pt", &mean)?;
    let parts = zip_members(&mean)?;
    let pkl_at = parts
        .iter()
        .position(|(n, _)| n.ends_with("data.pkl"))
        .ok_or_else(|| anyhow::anyhow!("no data.pkl"))?;
    let storage_at = parts
        .iter()
        .position(|(n, _)| n.ends_with("data/0"))
        .ok_or_else(|| anyhow::anyhow!("no data/0"))?;
    // Only the mean file is mutated; every error must name it (the std file is valid).
    let name = format!("{stem}-mean.pt");
    let mut campaign =
        Campaign::new("torch .pt statistics (Normalizer::from_stem)").errors_must_name(&name);
    let mut g = SplitMix64(0x70_7c4d);
    let mut draw = || g.next_u64();
    let fields = zip_fields(&mean);
    // Raw archive bytes: every located zip size / offset / count field at every special value,
    // truncations, random mutations (most end in the zip layer: checksums, headers).
    for &f in &fields {
        for v in SPECIAL_VALUES {
            let mut b = mean.clone();
            set_field(&mut b, f, v);
            campaign.case(&format!("zip field at {} = {v:#x}", f.pos), b.len(), || {
                load(dir, stem, "pt", &b)
            });
        }
    }
    for len in truncation_lengths(mean.len(), 60) {
        let b = &mean[..len];
        campaign.case(&format!("archive cut at {len}"), b.len(), || {
            load(dir, stem, "pt", b)
        });
    }
    for i in 0..600 {
        let (what, b) = mutate_bytes(&mean, &fields, &mut draw);
        campaign.case(&format!("archive #{i}: {what}"), b.len(), || {
            load(dir, stem, "pt", &b)
        });
    }
    // Members re-packed with valid checksums, so the mutation reaches the pickle / tensor
    // reader: the pickle (most cases), the storage bytes, the member names.
    for i in 0..2400 {
        let mut m = parts.clone();
        let what = match draw.below(8) {
            0 => {
                let (w, b) = mutate_bytes(&m[storage_at].1, &[], &mut draw);
                m[storage_at].1 = b;
                format!("storage: {w}")
            }
            1 => {
                let k = draw.below(m.len());
                let (w, b) = mutate_bytes(m[k].0.as_bytes(), &[], &mut draw);
                m[k].0 = String::from_utf8_lossy(&b).into_owned();
                format!("member {k} name: {w}")
            }
            _ => {
                let (mut w, mut b) = mutate_pickle(&m[pkl_at].1, &mut draw);
                if draw.below(4) == 0 {
                    let (w2, b2) = mutate_pickle(&b, &mut draw);
                    w = format!("{w}; {w2}");
                    b = b2;
                }
                m[pkl_at].1 = b;
                format!("data.pkl: {w}")
            }
        };
        let b = stored_zip(&m);
        campaign.case(&format!("#{i}: {what}"), b.len(), || {
            load(dir, stem, "pt", &b)
        });
    }
    let n = campaign.finish().map_err(anyhow::Error::msg)?;
    assert!(n > 3000, "{n} mutations");
    Ok(())
}

#[test]
fn npy_and_safetensors_statistics_survive_mutations() -> anyhow::Result<()> {
    let scratch = scratch("npy")?;
    let dir = scratch.path();
    let values: Vec<f32> = (0..205).map(|i| 1.0 + i as f32 * 0.01).collect();
    let mut g = SplitMix64(0x5a_fe7e);
    let mut draw = || g.next_u64();

    // `.npy`: the std file valid, the mean file mutated.
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let mut header = "{'descr': '<f4', 'fortran_order': False, 'shape': (205,), }".to_string();
    header.push_str(&" ".repeat(64 - (10 + header.len() + 1) % 64));
    header.push('\n');
    npy.extend_from_slice(&(header.len() as u16).to_le_bytes());
    npy.extend_from_slice(header.as_bytes());
    for v in &values {
        npy.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(dir.join("nstat-std.npy"), &npy)?;
    load(dir, "nstat", "npy", &npy)?;
    let mut campaign =
        Campaign::new("npy statistics (Normalizer::from_stem)").errors_must_name("nstat-mean.npy");
    for len in truncation_lengths(npy.len(), 40) {
        let b = &npy[..len];
        campaign.case(&format!("cut at {len}"), b.len(), || {
            load(dir, "nstat", "npy", b)
        });
    }
    for i in 0..1500 {
        let (what, b) = if draw.below(3) == 0 {
            mutate_bytes(&npy, &[], &mut draw)
        } else {
            mutate_npy_header(&npy, &mut draw)
        };
        campaign.case(&format!("#{i}: {what}"), b.len(), || {
            load(dir, "nstat", "npy", &b)
        });
    }
    campaign.finish().map_err(anyhow::Error::msg)?;

    // `.safetensors` holding one tensor.
    let t = candle::Tensor::from_vec(values, 205, &Device::Cpu)?;
    let st_path = dir.join("sstat-std.safetensors");
    t.save_safetensors("std", &st_path)?;
    let st = std::fs::read(&st_path)?;
    load(dir, "sstat", "safetensors", &st)?;
    let mut campaign = Campaign::new("safetensors statistics (Normalizer::from_stem)")
        .errors_must_name("sstat-mean.safetensors");
    let fields = [test_fixtures::mutate::Field { pos: 0, width: 8 }];
    for v in SPECIAL_VALUES {
        let mut b = st.clone();
        set_field(&mut b, fields[0], v);
        campaign.case(&format!("header length {v:#x}"), b.len(), || {
            load(dir, "sstat", "safetensors", &b)
        });
    }
    for len in truncation_lengths(st.len(), 40) {
        let b = &st[..len];
        campaign.case(&format!("cut at {len}"), b.len(), || {
            load(dir, "sstat", "safetensors", b)
        });
    }
    for i in 0..1000 {
        let (what, b) = mutate_bytes(&st, &fields, &mut draw);
        campaign.case(&format!("#{i}: {what}"), b.len(), || {
            load(dir, "sstat", "safetensors", &b)
        });
    }
    // The JSON header: shapes, offsets and dtypes set to extreme values, duplicated and
    // deleted entries, wrong JSON types, invalid UTF-8, the length field off by a few bytes.
    for i in 0..600 {
        let (what, b) = mutate_safetensors(&st, &mut draw);
        campaign.case(&format!("header #{i}: {what}"), b.len(), || {
            load(dir, "sstat", "safetensors", &b)
        });
    }
    campaign.finish().map_err(anyhow::Error::msg)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Regression tests: pickled tensors whose shape / storage is huge.

/// `torch.save(tensor)` pickle (protocol 2) of a `_rebuild_tensor_v2` call; every integer is
/// written as an 8-byte LONG1 so that any value fits.
fn tensor_pickle(size: &[u64], stride: &[u64], offset: u64, numel: u64) -> Vec<u8> {
    fn int(p: &mut Vec<u8>, v: u64) {
        p.extend_from_slice(&[0x8a, 8]);
        p.extend_from_slice(&v.to_le_bytes());
    }
    fn text(p: &mut Vec<u8>, s: &str) {
        p.push(b'X');
        p.extend_from_slice(&(s.len() as u32).to_le_bytes());
        p.extend_from_slice(s.as_bytes());
    }
    let mut p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((".to_vec();
    text(&mut p, "storage");
    p.extend_from_slice(b"ctorch\nFloatStorage\n");
    text(&mut p, "0");
    text(&mut p, "cpu");
    int(&mut p, numel);
    p.extend_from_slice(b"tQ");
    int(&mut p, offset);
    p.push(b'(');
    for &d in size {
        int(&mut p, d);
    }
    p.extend_from_slice(b"t(");
    for &s in stride {
        int(&mut p, s);
    }
    p.extend_from_slice(b"t\x89ccollections\nOrderedDict\n)RtR.");
    p
}

fn pt_file(pickle: Vec<u8>, storage: Vec<u8>) -> Vec<u8> {
    stored_zip(&[
        ("stat/data.pkl".to_string(), pickle),
        ("stat/data/0".to_string(), storage),
    ])
}

#[test]
fn huge_pickled_tensor_shapes_are_errors_before_allocation() -> anyhow::Result<()> {
    let scratch = scratch("huge")?;
    let dir = scratch.path();
    std::fs::copy(
        fixture_path("standardization_rifke-std.pt")?,
        dir.join("big-std.pt"),
    )?;
    let storage = vec![0u8; 205 * 4];
    let m = 1u64 << 31;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "size of 2^31 x 2^31 x 2^31 elements",
            tensor_pickle(&[m, m, m], &[m * m, m, 1], 0, 205),
            "size",
        ),
        (
            "size 2^62 (product overflows with the stride)",
            tensor_pickle(&[1 << 62], &[1], 0, 205),
            "storage",
        ),
        (
            "size whose product overflows usize",
            tensor_pickle(&[1 << 40, 1 << 40], &[1, 1], 0, 205),
            "size",
        ),
        (
            "storage numel 2^60 for 820 stored bytes",
            tensor_pickle(&[1 << 30], &[1], 0, 1 << 60),
            "storage record",
        ),
        (
            "storage numel 2^64-1",
            tensor_pickle(&[205], &[1], 0, u64::MAX),
            "storage numel",
        ),
        (
            "storage_offset 2^63",
            tensor_pickle(&[205], &[1], 1 << 63, 205),
            "storage_offset",
        ),
        (
            "zero stride over a huge size",
            tensor_pickle(&[1 << 28], &[0], 0, 205),
            "stride",
        ),
    ];
    for (what, pickle, field) in cases {
        let bytes = pt_file(pickle, storage.clone());
        let (res, usage) = measure(|| load(dir, "big", "pt", &bytes));
        let err = match res {
            Err(e) => e.to_string(),
            Ok(_) => anyhow::bail!("{what}: expected an error"),
        };
        assert!(err.contains("big-mean.pt"), "{what}: {err}");
        assert!(err.contains(field), "{what}: {err}");
        assert!(usage.largest < 1 << 20, "{what}: allocated {usage:?}");
    }
    // The same pickle with a sane shape reads back.
    let ok = pt_file(tensor_pickle(&[205], &[1], 0, 205), storage);
    load(dir, "big", "pt", &ok).map_err(|e| anyhow::anyhow!("valid file: {e}"))?;
    Ok(())
}

#[test]
fn huge_npy_statistics_shape_is_an_error_before_allocation() -> anyhow::Result<()> {
    let scratch = scratch("npy-huge")?;
    let dir = scratch.path();
    let mut header =
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 8), }".to_string();
    header.push('\n');
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    npy.extend_from_slice(&(header.len() as u16).to_le_bytes());
    npy.extend_from_slice(header.as_bytes());
    npy.extend_from_slice(&[0u8; 64]);
    std::fs::write(dir.join("h-std.npy"), &npy)?;
    let (res, usage) = measure(|| load(dir, "h", "npy", &npy));
    let err = match res {
        Err(e) => e.to_string(),
        Ok(_) => anyhow::bail!("expected an error"),
    };
    assert!(
        err.contains("h-mean.npy") && err.contains("'shape'"),
        "{err}"
    );
    assert!(usage.largest < 1 << 20, "allocated {usage:?}");
    Ok(())
}
