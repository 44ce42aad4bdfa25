//! Malformed body-model files must give a typed error naming the file and the array / field at
//! fault, never a panic, an abort or an allocation far above the file size.
//!
//! Seeded mutation campaigns (`test_fixtures::mutate::SplitMix64`, fixed seeds) over
//! `BodyModel::from_npz` (`.npz`, stored and deflate-compressed, and `.safetensors`) and
//! `BodyModel::from_bytes` (the same files in memory), starting from a tiny 8-vertex, 3-joint
//! model built here so that thousands of cases stay fast, plus a few dozen cases on the
//! reference fixture `smplh/SMPLH_NEUTRAL.npz`. This binary installs a counting allocator
//! (see `test_fixtures::mutate`): a case that allocates more than 64 x its input + 64 MiB fails
//! with its description; a single request above 1 GiB is refused, which aborts the binary with
//! Rust's "memory allocation failed" message (`MUTATE_TRACE=1` prints each case first).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use candle::{Device, Tensor};
use smpl::{BodyModel, SmplError};
use test_fixtures::fixture_path;
use test_fixtures::mutate::{
    Campaign, CappedAlloc, Draw, SAFETENSORS_LEN, SPECIAL_VALUES, Scratch, SplitMix64,
    mutate_bytes, mutate_npy_header, mutate_safetensors, npy_file, set_field, stored_zip, tracking,
    truncation_lengths, zip_fields, zip_members,
};

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc { cap: 1 << 30 };

fn scratch(tag: &str) -> std::io::Result<Scratch> {
    Scratch::new(
        env!("CARGO_TARGET_TMPDIR"),
        &format!("smpl-malformed-{tag}"),
    )
}

/// Vertices and joints of the tiny model.
const V: usize = 8;
const J: usize = 3;

/// One array of the tiny model: name, numpy dtype, shape, little-endian element bytes.
type RawArray = (&'static str, &'static str, Vec<usize>, Vec<u8>);

fn f32s(n: usize, scale: f32) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (((i * 7 % 11) as f32 - 5.0) * scale).to_le_bytes())
        .collect()
}

/// Every array a model file may hold (hands excepted: they need 52 joints), in the official
/// layout and dtypes: `f` int32, `kintree_table` int64 with the root's parent -1, `float32`
/// elsewhere (`J_regressor` as float64, as some exports write it).
fn tiny_arrays() -> Vec<RawArray> {
    let weights: Vec<u8> = (0..V * J)
        .flat_map(|i| (if i % J == (i / J) % J { 1.0f32 } else { 0.0 }).to_le_bytes())
        .collect();
    let regressor: Vec<u8> = (0..J * V)
        .flat_map(|i| (1.0f64 / V as f64 + (i % 3) as f64 * 0.01).to_le_bytes())
        .collect();
    let faces: Vec<u8> = [0i32, 1, 2, 2, 3, 4, 4, 5, 6, 6, 7, 0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let kintree: Vec<u8> = [-1i64, 0, 1, 0, 1, 2]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    vec![
        ("v_template", "<f4", vec![V, 3], f32s(V * 3, 0.1)),
        ("f", "<i4", vec![4, 3], faces),
        ("J_regressor", "<f8", vec![J, V], regressor),
        ("weights", "<f4", vec![V, J], weights),
        ("kintree_table", "<i8", vec![2, J], kintree),
        ("shapedirs", "<f4", vec![V, 3, 2], f32s(V * 3 * 2, 0.01)),
        (
            "posedirs",
            "<f4",
            vec![V, 3, 9 * (J - 1)],
            f32s(V * 3 * 9 * (J - 1), 0.001),
        ),
    ]
}

/// The `.npz` members (`<name>.npy`) of the tiny model.
fn npz_members() -> Vec<(String, Vec<u8>)> {
    tiny_arrays()
        .into_iter()
        .map(|(name, descr, shape, data)| (format!("{name}.npy"), npy_file(descr, &shape, &data)))
        .collect()
}

/// A deflate-compressed zip of `members`, as `np.savez_compressed` writes it.
fn deflated_zip(members: &[(String, Vec<u8>)]) -> anyhow::Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in members {
        zip.start_file(name.as_str(), options)?;
        zip.write_all(data)?;
    }
    Ok(zip.finish()?.into_inner())
}

/// The tiny model as `.safetensors` (`f` and `kintree_table` as int64).
fn tiny_safetensors(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let mut map = HashMap::new();
    for (name, descr, shape, data) in tiny_arrays() {
        let t = match descr {
            "<f4" => Tensor::from_vec(
                data.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect::<Vec<f32>>(),
                shape,
                &Device::Cpu,
            )?,
            "<f8" => Tensor::from_vec(
                data.chunks_exact(8)
                    .map(|c| {
                        f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                    })
                    .collect::<Vec<f32>>(),
                shape,
                &Device::Cpu,
            )?,
            "<i4" => Tensor::from_vec(
                data.chunks_exact(4)
                    .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                    .collect::<Vec<i64>>(),
                shape,
                &Device::Cpu,
            )?,
            _ => Tensor::from_vec(
                data.chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect::<Vec<i64>>(),
                shape,
                &Device::Cpu,
            )?,
        };
        map.insert(name.to_string(), t);
    }
    let path = dir.join("valid.safetensors");
    candle::safetensors::save(&map, &path)?;
    Ok(std::fs::read(&path)?)
}

/// Loads `bytes` as the file `path` (through the path API), or from memory under its file
/// name (every third case), so that both entry points see every kind of mutation.
fn load(path: &Path, bytes: &[u8], in_memory: bool) -> anyhow::Result<BodyModel> {
    if in_memory {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow::anyhow!("file name"))?;
        return Ok(BodyModel::from_bytes(bytes, name, &Device::Cpu)?);
    }
    std::fs::write(path, bytes)?;
    Ok(BodyModel::from_npz(path, &Device::Cpu)?)
}

/// One member-level mutation of a `.npz`: a member's `.npy` header or data, its name, a
/// member deleted (a missing array) or duplicated (a duplicated key).
fn mutate_npz_members(
    parts: &[(String, Vec<u8>)],
    d: &mut impl Draw,
) -> (String, Vec<(String, Vec<u8>)>) {
    let mut m = parts.to_vec();
    let k = d.below(m.len());
    let what = match d.below(10) {
        0 => {
            let (w, b) = mutate_bytes(&m[k].1, &[], d);
            m[k].1 = b;
            format!("{}: {w}", m[k].0)
        }
        1 => {
            let (w, b) = mutate_bytes(m[k].0.as_bytes(), &[], d);
            let old = std::mem::replace(&mut m[k].0, String::from_utf8_lossy(&b).into_owned());
            format!("member name {old}: {w}")
        }
        2 => {
            let gone = m.remove(k);
            format!("member {} deleted", gone.0)
        }
        3 => {
            // The same name twice: a duplicated key, with another array's contents.
            let other = m[d.below(m.len())].1.clone();
            let name = m[k].0.clone();
            m.push((name.clone(), other));
            format!("member {name} duplicated")
        }
        _ => {
            let (w, b) = mutate_npy_header(&m[k].1, d);
            m[k].1 = b;
            format!("{}: {w}", m[k].0)
        }
    };
    (what, m)
}

#[test]
fn allocations_are_counted() {
    assert!(tracking(), "the counting allocator must be installed");
}

#[test]
fn npz_body_models_survive_mutations() -> anyhow::Result<()> {
    let scratch = scratch("npz")?;
    let path = scratch.path().join("m-body.npz");
    let parts = npz_members();
    let stored = stored_zip(&parts);
    let deflated = deflated_zip(&parts)?;
    for (b, mem) in [(&stored, false), (&deflated, false), (&stored, true)] {
        let model = load(&path, b, mem).map_err(|e| anyhow::anyhow!("the valid model: {e}"))?;
        anyhow::ensure!(model.num_vertices() == V && model.num_joints() == J);
    }
    let mut campaign = Campaign::new("body model .npz (BodyModel::from_npz, from_bytes)")
        .errors_must_name("m-body.npz");
    let mut g = SplitMix64(0x5_b0d7_a9e2);
    let mut draw = || g.next_u64();
    let mut n = 0usize;
    let mut run = |campaign: &mut Campaign, what: String, b: &[u8]| {
        n += 1;
        campaign.case(&what, b.len(), || load(&path, b, n.is_multiple_of(3)));
    };
    // Every zip size / count / offset field at every special value.
    for f in zip_fields(&stored) {
        for v in SPECIAL_VALUES {
            let mut b = stored.clone();
            set_field(&mut b, f, v);
            run(
                &mut campaign,
                format!("zip field at {} = {v:#x}", f.pos),
                &b,
            );
        }
    }
    for len in truncation_lengths(stored.len(), 80) {
        run(&mut campaign, format!("cut at {len}"), &stored[..len]);
    }
    // Members re-packed with valid checksums: the mutation reaches the `.npy` reader.
    for i in 0..1500 {
        let (mut what, mut m) = mutate_npz_members(&parts, &mut draw);
        if draw.below(5) == 0 {
            let (w2, m2) = mutate_npz_members(&m, &mut draw);
            what = format!("{what}; {w2}");
            m = m2;
        }
        run(&mut campaign, format!("#{i}: {what}"), &stored_zip(&m));
    }
    for i in 0..300 {
        let (what, b) = mutate_bytes(&stored, &zip_fields(&stored), &mut draw);
        run(&mut campaign, format!("archive #{i}: {what}"), &b);
    }
    // Deflate-compressed: member mutations compressed again, then raw bytes of the archive.
    for i in 0..300 {
        let (what, m) = mutate_npz_members(&parts, &mut draw);
        // The zip writer refuses duplicated names (covered by the stored archives above).
        let Ok(b) = deflated_zip(&m) else { continue };
        run(&mut campaign, format!("deflated #{i}: {what}"), &b);
    }
    let zf = zip_fields(&deflated);
    for i in 0..300 {
        let (what, b) = mutate_bytes(&deflated, &zf, &mut draw);
        run(&mut campaign, format!("deflated archive #{i}: {what}"), &b);
    }
    campaign.finish().map_err(anyhow::Error::msg)?;
    Ok(())
}

#[test]
fn safetensors_body_models_survive_mutations() -> anyhow::Result<()> {
    let scratch = scratch("st")?;
    let path = scratch.path().join("m-body.safetensors");
    let valid = tiny_safetensors(scratch.path())?;
    load(&path, &valid, false).map_err(|e| anyhow::anyhow!("the valid model: {e}"))?;
    let mut campaign = Campaign::new("body model .safetensors (BodyModel::from_npz, from_bytes)")
        .errors_must_name("m-body.safetensors");
    let mut g = SplitMix64(0x5afe_b0d7);
    let mut draw = || g.next_u64();
    let mut n = 0usize;
    let mut run = |campaign: &mut Campaign, what: String, b: &[u8]| {
        n += 1;
        campaign.case(&what, b.len(), || load(&path, b, n.is_multiple_of(3)));
    };
    for v in SPECIAL_VALUES {
        let mut b = valid.clone();
        set_field(&mut b, SAFETENSORS_LEN, v);
        run(&mut campaign, format!("header length {v:#x}"), &b);
    }
    for len in truncation_lengths(valid.len(), 60) {
        run(&mut campaign, format!("cut at {len}"), &valid[..len]);
    }
    for i in 0..1500 {
        let (what, b) = mutate_safetensors(&valid, &mut draw);
        run(&mut campaign, format!("#{i}: {what}"), &b);
    }
    for i in 0..300 {
        let (what, b) = mutate_bytes(&valid, &[SAFETENSORS_LEN], &mut draw);
        run(&mut campaign, format!("bytes #{i}: {what}"), &b);
    }
    campaign.finish().map_err(anyhow::Error::msg)?;
    Ok(())
}

#[test]
fn the_reference_body_model_survives_a_few_mutations() -> anyhow::Result<()> {
    // The 2.2 MB fixture (deflated, 6890 vertices): a few raw-byte mutations and cuts; each
    // load inflates ~40 MB, so the count stays small.
    let scratch = scratch("reference")?;
    let path = scratch.path().join("m-ref.npz");
    let original = std::fs::read(fixture_path("smplh/SMPLH_NEUTRAL.npz")?)?;
    // A whole load inflates and checks ~40 MB (about 60 ms on an idle core): 3 s leaves room
    // for a loaded CI machine.
    let mut campaign = Campaign::new("reference body model .npz (BodyModel::from_npz)")
        .errors_must_name("m-ref.npz")
        .time_limit(std::time::Duration::from_secs(3));
    let mut g = SplitMix64(0x4ef_b0d7);
    let mut draw = || g.next_u64();
    let zf = zip_fields(&original);
    for i in 0..12 {
        let (what, b) = mutate_bytes(&original, &zf, &mut draw);
        campaign.case(&format!("#{i}: {what}"), b.len(), || load(&path, &b, false));
    }
    for f in zf.iter().rev().take(8) {
        let mut b = original.clone();
        let v = *draw.pick(&SPECIAL_VALUES);
        set_field(&mut b, *f, v);
        campaign.case(&format!("zip field at {} = {v:#x}", f.pos), b.len(), || {
            load(&path, &b, false)
        });
    }
    for k in 1..6 {
        let len = original.len() * k / 6;
        campaign.case(&format!("cut at {len}"), len, || {
            load(&path, &original[..len], false)
        });
    }
    campaign.finish().map_err(anyhow::Error::msg)?;
    // The members themselves are readable by the generic zip reader (the campaign's premise).
    anyhow::ensure!(zip_members(&original)?.len() >= 5);
    Ok(())
}

#[test]
fn array_errors_name_the_file_and_the_array() -> anyhow::Result<()> {
    let scratch = scratch("named")?;
    let path = scratch.path().join("named.npz");
    // `weights` with the wrong joint count, `f` with an out-of-range vertex id, a missing
    // `v_template`, a NaN in `shapedirs`.
    let mut parts = npz_members();
    let at = |parts: &[(String, Vec<u8>)], name: &str| parts.iter().position(|(n, _)| n == name);
    let w = at(&parts, "weights.npy").ok_or_else(|| anyhow::anyhow!("weights"))?;
    parts[w].1 = npy_file("<f4", &[V, J + 1], &f32s(V * (J + 1), 0.5));
    let err = load(&path, &stored_zip(&parts), false)
        .err()
        .ok_or_else(|| anyhow::anyhow!("wrong weights accepted"))?;
    let msg = err.to_string();
    assert!(
        msg.contains("named.npz") && msg.contains("\"weights\""),
        "{msg}"
    );
    assert!(matches!(
        err.downcast_ref::<SmplError>(),
        Some(SmplError::InconsistentShape { .. })
    ));

    let mut parts = npz_members();
    let f = at(&parts, "f.npy").ok_or_else(|| anyhow::anyhow!("f"))?;
    let faces: Vec<u8> = [0i32, 1, 99].iter().flat_map(|v| v.to_le_bytes()).collect();
    parts[f].1 = npy_file("<i4", &[1, 3], &faces);
    let msg = load(&path, &stored_zip(&parts), false)
        .err()
        .ok_or_else(|| anyhow::anyhow!("bad face accepted"))?
        .to_string();
    assert!(
        msg.contains("named.npz") && msg.contains("\"f\"") && msg.contains("99"),
        "{msg}"
    );

    let mut parts = npz_members();
    parts.retain(|(n, _)| n != "v_template.npy");
    let msg = load(&path, &stored_zip(&parts), true)
        .err()
        .ok_or_else(|| anyhow::anyhow!("missing v_template accepted"))?
        .to_string();
    assert!(
        msg.contains("named.npz") && msg.contains("v_template"),
        "{msg}"
    );

    let mut parts = npz_members();
    let s = at(&parts, "shapedirs.npy").ok_or_else(|| anyhow::anyhow!("shapedirs"))?;
    let mut data = f32s(V * 3 * 2, 0.01);
    data[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    parts[s].1 = npy_file("<f4", &[V, 3, 2], &data);
    let msg = load(&path, &stored_zip(&parts), false)
        .err()
        .ok_or_else(|| anyhow::anyhow!("NaN accepted"))?
        .to_string();
    assert!(
        msg.contains("named.npz") && msg.contains("\"shapedirs\""),
        "{msg}"
    );
    Ok(())
}
