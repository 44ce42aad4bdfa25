//! Malformed checkpoints must give a typed error naming the file and the key / field at fault,
//! never a panic, an abort or an allocation far above the file size.
//!
//! Seeded mutation campaigns (fixed seeds, `rand`'s `StdRng`) over `Dit::from_checkpoint`:
//! a small Lightning-style checkpoint built here (so that thousands of cases stay fast), the
//! reference fixture `incontext_small.ckpt`, and a `.safetensors` file; plus regression tests
//! of pickled tensors whose shape / storage size is huge. This binary installs a counting
//! allocator (see `test_fixtures::mutate`): a case that allocates more than 64 x its input +
//! 64 MiB fails with its description; a single request above 1 GiB is refused, which aborts
//! the binary with Rust's "memory allocation failed" message.

use std::collections::HashMap;
use std::path::Path;

use candle::{Device, Tensor};
use dit::{Dit, DitConfig, Variant};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use test_fixtures::mutate::{
    Campaign, CappedAlloc, Field, SPECIAL_VALUES, Scratch, measure, mutate_bytes,
    mutate_safetensors, mutate_torch_members, pickle_ops, set_field, stored_zip, tracking,
    truncation_lengths, zip_fields, zip_members,
};
use test_fixtures::{Fixture, fixture_path};

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc { cap: 1 << 30 };

/// A fresh folder under the target's temporary directory, removed on drop.
fn scratch(tag: &str) -> std::io::Result<Scratch> {
    Scratch::new(env!("CARGO_TARGET_TMPDIR"), &format!("dit-malformed-{tag}"))
}

/// A tiny in-context network: small enough that a full load takes well under a millisecond.
fn tiny_config() -> DitConfig {
    let mut cfg = DitConfig::reference(Variant::InContext);
    (
        cfg.latent_dim,
        cfg.num_layers,
        cfg.num_heads,
        cfg.num_cond_feats,
    ) = (16, 1, 2, 8);
    cfg.max_positions = 64;
    cfg
}

/// A protocol-2 pickle writer with torch's layout of tensors (memoised globals).
struct Pickle {
    p: Vec<u8>,
    memo: u32,
    globals: HashMap<String, u32>,
}

impl Pickle {
    fn new() -> Pickle {
        Pickle {
            p: vec![0x80, 2],
            memo: 0,
            globals: HashMap::new(),
        }
    }

    fn put(&mut self) -> u32 {
        self.p.push(b'r');
        self.p.extend_from_slice(&self.memo.to_le_bytes());
        self.memo += 1;
        self.memo - 1
    }

    fn get(&mut self, i: u32) {
        self.p.push(b'j');
        self.p.extend_from_slice(&i.to_le_bytes());
    }

    fn raw(&mut self, b: &[u8]) {
        self.p.extend_from_slice(b);
    }

    fn int(&mut self, v: u64) {
        if v < 1 << 31 {
            self.p.push(b'J');
            self.p.extend_from_slice(&(v as u32).to_le_bytes());
        } else {
            self.p.extend_from_slice(&[0x8a, 8]);
            self.p.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn text(&mut self, s: &str) {
        self.p.push(b'X');
        self.p.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.p.extend_from_slice(s.as_bytes());
    }

    fn global(&mut self, module: &str, name: &str) {
        let key = format!("{module}.{name}");
        match self.globals.get(&key) {
            Some(&i) => self.get(i),
            None => {
                self.raw(format!("c{module}\n{name}\n").as_bytes());
                let i = self.put();
                self.globals.insert(key, i);
            }
        }
    }

    /// `_rebuild_tensor_v2(('storage', torch.<class>, key, 'cpu', numel), offset, size,
    /// stride, False, OrderedDict())`, memoised; returns its memo index.
    fn tensor(&mut self, class: &str, key: &str, numel: u64, size: &[u64], stride: &[u64]) -> u32 {
        self.tensor_at(class, key, numel, 0, size, stride)
    }

    /// As [`Pickle::tensor`], starting at element `offset` of the storage.
    fn tensor_at(
        &mut self,
        class: &str,
        key: &str,
        numel: u64,
        offset: u64,
        size: &[u64],
        stride: &[u64],
    ) -> u32 {
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.raw(b"((");
        self.text("storage");
        self.global("torch", class);
        self.text(key);
        self.text("cpu");
        self.int(numel);
        self.raw(b"tQ");
        self.int(offset);
        self.raw(b"(");
        for &d in size {
            self.int(d);
        }
        self.raw(b"t(");
        for &s in stride {
            self.int(s);
        }
        self.raw(b"t\x89");
        self.global("collections", "OrderedDict");
        self.raw(b")Rt");
        self.raw(b"R");
        self.put()
    }
}

fn c_strides(dims: &[usize]) -> Vec<u64> {
    let mut s = vec![1u64; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1] as u64;
    }
    s
}

/// A Lightning-style checkpoint of `weights` (keys `model.*`): `net.*` (float32, one wrapped
/// in `_rebuild_parameter`), `ema.online_model.*` sharing the `net.*` tensors (memo gets),
/// `ema.ema_model.*` (float64 storages), `ema.initted` (bool) and `ema.step` (int64), an
/// `OrderedDict` state dict with a `_metadata` BUILD, and other top-level entries.
fn lightning_members(weights: &Weights) -> Vec<(String, Vec<u8>)> {
    let mut pk = Pickle::new();
    let mut records = Vec::new();
    pk.raw(b"}");
    pk.put();
    pk.raw(b"(");
    pk.text("state_dict");
    pk.global("collections", "OrderedDict");
    pk.raw(b")R");
    pk.put();
    pk.raw(b"(");
    let mut shared = Vec::new();
    for (k, (name, dims, values)) in weights.iter().enumerate() {
        let size: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        let stride = c_strides(dims);
        let key = records.len().to_string();
        records.push(
            values
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        );
        pk.text(&format!("net.{name}"));
        let m = if k == 0 {
            pk.global("torch._utils", "_rebuild_parameter");
            pk.raw(b"(");
            pk.tensor("FloatStorage", &key, values.len() as u64, &size, &stride);
            pk.raw(b"\x88");
            pk.global("collections", "OrderedDict");
            pk.raw(b")RtR");
            pk.put()
        } else {
            pk.tensor("FloatStorage", &key, values.len() as u64, &size, &stride)
        };
        shared.push((name.clone(), m));
        let key = records.len().to_string();
        records.push(
            values
                .iter()
                .flat_map(|v| (f64::from(*v) + 0.5).to_le_bytes())
                .collect::<Vec<u8>>(),
        );
        pk.text(&format!("ema.ema_model.{name}"));
        pk.tensor("DoubleStorage", &key, values.len() as u64, &size, &stride);
    }
    for (name, m) in shared {
        pk.text(&format!("ema.online_model.{name}"));
        pk.get(m);
    }
    let key = records.len().to_string();
    records.push(vec![1]);
    pk.text("ema.initted");
    pk.tensor("BoolStorage", &key, 1, &[], &[]);
    let key = records.len().to_string();
    records.push(7i64.to_le_bytes().to_vec());
    pk.text("ema.step");
    pk.tensor("LongStorage", &key, 1, &[], &[]);
    pk.raw(b"u}");
    pk.text("_metadata");
    pk.raw(b"}sb");
    pk.text("epoch");
    pk.raw(b"K\x04");
    pk.text("pytorch-lightning_version");
    pk.text("2.4.0");
    pk.raw(b"u.");
    let mut members = vec![("ck/data.pkl".to_string(), pk.p)];
    members.extend(
        records
            .into_iter()
            .enumerate()
            .map(|(i, r)| (format!("ck/data/{i}"), r)),
    );
    members.push(("ck/byteorder".into(), b"little".to_vec()));
    members.push(("ck/version".into(), b"3\n".to_vec()));
    members
}

/// Named tensors: key, shape, row-major values.
type Weights = Vec<(String, Vec<usize>, Vec<f32>)>;

/// The tiny network's seeded weights, in a stable order.
fn tiny_weights() -> anyhow::Result<Weights> {
    let (_, vars) = Dit::init_random(&tiny_config(), 11, &Device::Cpu)?;
    let data = vars
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("varmap lock"))?;
    let mut out = Vec::new();
    for (name, var) in data.iter() {
        let t = var.as_tensor();
        out.push((
            name.clone(),
            t.dims().to_vec(),
            t.flatten_all()?.to_vec1::<f32>()?,
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn load(path: &Path, bytes: &[u8], cfg: &DitConfig) -> anyhow::Result<Dit> {
    std::fs::write(path, bytes)?;
    Ok(Dit::from_checkpoint(path, cfg, &Device::Cpu)?)
}

#[test]
fn allocations_are_counted() {
    assert!(tracking(), "the counting allocator must be installed");
}

#[test]
fn small_checkpoints_survive_mutations() -> anyhow::Result<()> {
    let scratch = scratch("small")?;
    let path = scratch.path().join("m-small.ckpt");
    let cfg = tiny_config();
    let parts = lightning_members(&tiny_weights()?);
    let valid = stored_zip(&parts);
    load(&path, &valid, &cfg).map_err(|e| anyhow::anyhow!("the valid checkpoint: {e}"))?;
    let mut campaign = Campaign::new("small Lightning checkpoint (Dit::from_checkpoint)")
        .errors_must_name("m-small.ckpt");
    let mut rng = StdRng::seed_from_u64(0xc4ec_4b01);
    let mut draw = || rng.next_u64();
    // Every located pickle length / integer field at every special value.
    let pkl = &parts[0].1;
    let fields: Vec<Field> = pickle_ops(pkl)
        .into_iter()
        .flat_map(|o| [o.len, o.int])
        .flatten()
        .collect();
    for (j, &f) in fields.iter().enumerate() {
        // Every fourth field, all values: the stream repeats the same pattern per tensor.
        if j % 4 != 0 {
            continue;
        }
        for v in SPECIAL_VALUES {
            let mut m = parts.clone();
            set_field(&mut m[0].1, f, v);
            let b = stored_zip(&m);
            campaign.case(
                &format!("pickle field at {} = {v:#x}", f.pos),
                b.len(),
                || load(&path, &b, &cfg),
            );
        }
    }
    for len in truncation_lengths(pkl.len(), 100) {
        let mut m = parts.clone();
        m[0].1.truncate(len);
        let b = stored_zip(&m);
        campaign.case(&format!("data.pkl cut at {len}"), b.len(), || {
            load(&path, &b, &cfg)
        });
    }
    for i in 0..2500 {
        let (what, m) = mutate_torch_members(&parts, &mut draw);
        let b = stored_zip(&m);
        campaign.case(&format!("#{i}: {what}"), b.len(), || load(&path, &b, &cfg));
    }
    // Raw archive bytes.
    let zf = zip_fields(&valid);
    for i in 0..400 {
        let (what, b) = mutate_bytes(&valid, &zf, &mut draw);
        campaign.case(&format!("archive #{i}: {what}"), b.len(), || {
            load(&path, &b, &cfg)
        });
    }
    campaign.finish().map_err(anyhow::Error::msg)?;
    Ok(())
}

#[test]
fn reference_checkpoint_survives_mutations() -> anyhow::Result<()> {
    let scratch = scratch("reference")?;
    let path = scratch.path().join("m-ref.ckpt");
    let fx = Fixture::load("dit_incontext")?;
    let cfg: DitConfig = serde_json::from_value(fx.json_at("/config")?.clone())?;
    let original = std::fs::read(fixture_path("incontext_small.ckpt")?)?;
    let mut parts = zip_members(&original)?;
    let pkl_at = parts
        .iter()
        .position(|(n, _)| n.ends_with("data.pkl"))
        .ok_or_else(|| anyhow::anyhow!("no data.pkl"))?;
    parts.swap(0, pkl_at);
    let mut campaign =
        Campaign::new("reference checkpoint (Dit::from_checkpoint)").errors_must_name("m-ref.ckpt");
    let mut rng = StdRng::seed_from_u64(0x4ef_c4e7);
    let mut draw = || rng.next_u64();
    for i in 0..150 {
        let (what, m) = mutate_torch_members(&parts, &mut draw);
        let b = stored_zip(&m);
        campaign.case(&format!("#{i}: {what}"), b.len(), || load(&path, &b, &cfg));
    }
    let zf = zip_fields(&original);
    for i in 0..40 {
        let (what, b) = mutate_bytes(&original, &zf, &mut draw);
        campaign.case(&format!("archive #{i}: {what}"), b.len(), || {
            load(&path, &b, &cfg)
        });
    }
    for len in truncation_lengths(original.len(), 10)
        .into_iter()
        .step_by(8)
    {
        let b = &original[..len];
        campaign.case(&format!("archive cut at {len}"), b.len(), || {
            load(&path, b, &cfg)
        });
    }
    campaign.finish().map_err(anyhow::Error::msg)?;
    Ok(())
}

#[test]
fn safetensors_weights_survive_mutations() -> anyhow::Result<()> {
    let scratch = scratch("st")?;
    let path = scratch.path().join("m-w.safetensors");
    let cfg = tiny_config();
    let mut map = HashMap::new();
    for (name, dims, values) in tiny_weights()? {
        map.insert(
            format!("net.{name}"),
            Tensor::from_vec(values, dims, &Device::Cpu)?,
        );
    }
    candle::safetensors::save(&map, &path)?;
    let valid = std::fs::read(&path)?;
    load(&path, &valid, &cfg)?;
    let mut campaign =
        Campaign::new("safetensors weights (Dit::from_checkpoint, from_safetensors_bytes)")
            .errors_must_name("m-w.safetensors");
    let mut rng = StdRng::seed_from_u64(0x5afe_7e45);
    let mut draw = || rng.next_u64();
    let header = [Field { pos: 0, width: 8 }];
    for v in SPECIAL_VALUES {
        let mut b = valid.clone();
        set_field(&mut b, header[0], v);
        campaign.case(&format!("header length {v:#x}"), b.len(), || {
            load(&path, &b, &cfg)
        });
    }
    for i in 0..600 {
        let (what, b) = mutate_bytes(&valid, &header, &mut draw);
        campaign.case(&format!("#{i}: {what}"), b.len(), || load(&path, &b, &cfg));
    }
    // The JSON header: shapes, offsets and dtypes set to extreme values, duplicated and
    // deleted entries, wrong JSON types, invalid UTF-8, the length field off by a few bytes;
    // every other case in memory (`Dit::from_safetensors_bytes`, the browser's path).
    for i in 0..600 {
        let (what, b) = mutate_safetensors(&valid, &mut draw);
        campaign.case(&format!("header #{i}: {what}"), b.len(), || {
            if i % 2 == 0 {
                load(&path, &b, &cfg)
            } else {
                Ok(Dit::from_safetensors_bytes(
                    &b,
                    "m-w.safetensors",
                    &cfg,
                    &Device::Cpu,
                )?)
            }
        });
    }
    campaign.finish().map_err(anyhow::Error::msg)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Regression tests: pickled tensors whose shape / storage size is huge.

/// A state-dict checkpoint with one tensor `net.model.input_projection.0.weight` described by
/// `size`, `stride` and `numel`, over a 64-byte storage record.
fn one_tensor_ckpt(size: &[u64], stride: &[u64], numel: u64) -> Vec<u8> {
    let mut pk = Pickle::new();
    pk.raw(b"}(");
    pk.text("state_dict");
    pk.raw(b"}(");
    pk.text("net.model.input_projection.0.weight");
    pk.tensor("FloatStorage", "0", numel, size, stride);
    pk.raw(b"uu.");
    stored_zip(&[
        ("ck/data.pkl".to_string(), pk.p),
        ("ck/data/0".to_string(), vec![0u8; 64]),
    ])
}

#[test]
fn huge_pickled_tensor_shapes_are_errors_before_allocation() -> anyhow::Result<()> {
    let scratch = scratch("huge")?;
    let path = scratch.path().join("huge.ckpt");
    let cfg = tiny_config();
    let m = (1u64 << 31) - 1;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "size (2^31-1)^3",
            one_tensor_ckpt(&[m, m, m], &[m * m, m, 1], 16),
            "size",
        ),
        (
            "size 2^20 x 2^20 over a 64-byte record",
            one_tensor_ckpt(&[1 << 20, 1 << 20], &[1 << 20, 1], 1 << 40),
            "tensors read so far",
        ),
        (
            "size 2^20 over a 64-byte record",
            one_tensor_ckpt(&[1 << 20], &[1], 1 << 20),
            "storage record",
        ),
        (
            "storage numel 2^62 (2^64 bytes)",
            one_tensor_ckpt(&[16], &[1], 1 << 62),
            "storage numel",
        ),
        (
            "size beyond the declared storage",
            one_tensor_ckpt(&[1 << 40], &[1], 16),
            "storage",
        ),
        (
            "negative size (2^64-1)",
            one_tensor_ckpt(&[u64::MAX], &[1], 16),
            "size[0]",
        ),
    ];
    for (what, bytes, field) in cases {
        let (res, usage) = measure(|| load(&path, &bytes, &cfg));
        let err = match res {
            Err(e) => e.to_string(),
            Ok(_) => anyhow::bail!("{what}: expected an error"),
        };
        assert!(err.contains("huge.ckpt"), "{what}: {err}");
        assert!(
            err.contains("net.model.input_projection.0.weight") && err.contains(field),
            "{what}: {err}"
        );
        assert!(usage.largest < 1 << 20, "{what}: allocated {usage:?}");
    }
    Ok(())
}

#[test]
fn many_views_of_one_storage_are_bounded() -> anyhow::Result<()> {
    let scratch = scratch("views")?;
    let path = scratch.path().join("views.ckpt");
    // One 1 MiB storage, viewed by 4000 keys at distinct offsets: read naively, 4 GB.
    let numel = 1u64 << 18;
    let len = numel - 4000;
    let mut pk = Pickle::new();
    pk.raw(b"}(");
    for k in 0..4000u64 {
        pk.text(&format!("net.model.v{k}"));
        pk.tensor_at("FloatStorage", "0", numel, k, &[len], &[1]);
    }
    pk.raw(b"u.");
    let bytes = stored_zip(&[
        ("ck/data.pkl".to_string(), pk.p),
        ("ck/data/0".to_string(), vec![0u8; 4 << 18]),
    ]);
    let (res, usage) = measure(|| load(&path, &bytes, &tiny_config()));
    let err = match res {
        Err(e) => e.to_string(),
        Ok(_) => anyhow::bail!("expected an error"),
    };
    assert!(
        err.contains("views.ckpt") && err.contains("tensors read so far"),
        "{err}"
    );
    assert!(
        usage.peak < 64 * bytes.len() + (64 << 20),
        "allocated {usage:?}"
    );
    Ok(())
}

#[test]
fn deeply_nested_or_self_copying_pickles_are_errors() -> anyhow::Result<()> {
    let scratch = scratch("nested")?;
    let path = scratch.path().join("nested.ckpt");
    let cfg = tiny_config();
    // 100 000 nested one-tuples: dropping such a tree recursively would overflow the stack.
    let mut deep = b"\x80\x02]".to_vec();
    deep.extend(std::iter::repeat_n(0x85u8, 100_000));
    deep.push(b'.');
    // A 1 MiB string copied 10 000 times by 2-byte GETs.
    let mut bomb = b"\x80\x02X\x00\x00\x10\x00".to_vec();
    bomb.extend(std::iter::repeat_n(b'a', 1 << 20));
    bomb.extend_from_slice(b"q\x00");
    for _ in 0..10_000 {
        bomb.extend_from_slice(b"h\x00");
    }
    bomb.push(b'.');
    for (what, pkl, needle) in [("deep", deep, "nested"), ("bomb", bomb, "budget")] {
        let bytes = stored_zip(&[("ck/data.pkl".to_string(), pkl)]);
        let (res, usage) = measure(|| load(&path, &bytes, &cfg));
        let err = match res {
            Err(e) => e.to_string(),
            Ok(_) => anyhow::bail!("{what}: expected an error"),
        };
        assert!(
            err.contains("nested.ckpt") && err.contains(needle),
            "{what}: {err}"
        );
        // The reader's budget counts the values it makes (64 bytes per input byte + 64 MiB);
        // vectors' growth slack can add as much again.
        assert!(
            usage.peak < 2 * (64 * bytes.len() + (64 << 20)),
            "{what}: allocated {usage:?}"
        );
    }
    Ok(())
}
