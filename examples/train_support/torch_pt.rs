//! A minimal writer of PyTorch `.pt` files (the `torch.save` zip format), so that what the
//! examples train loads with the same readers as the reference artefacts: a state dict
//! (`OrderedDict` name -> float32 tensor, as `tmr-motion_encoder.pt`) or a single tensor (as
//! `tmr-rifke-mean.pt`).
//!
//! Layout (PyTorch's `torch/serialization.py`, format version 3): a stored (uncompressed) zip
//! with `archive/data.pkl` (a protocol-2 pickle whose tensors are
//! `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())` with
//! the storage a persistent id `('storage', torch.FloatStorage, key, 'cpu', numel)`),
//! `archive/byteorder` (`little`), `archive/data/<key>` (raw little-endian float32 storage,
//! 64-byte aligned) and `archive/version` (`3`).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use candle::{DType, Device, Tensor};
use zip::write::SimpleFileOptions;

/// A tensor's float32 data (row-major) and shape.
struct Entry {
    data: Vec<f32>,
    shape: Vec<usize>,
}

fn entry(t: &Tensor) -> Result<Entry> {
    let t = t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    Ok(Entry {
        shape: t.dims().to_vec(),
        data: t.flatten_all()?.to_vec1::<f32>()?,
    })
}

/// Pickle protocol-2 opcodes used here.
mod op {
    pub const PROTO: u8 = 0x80;
    pub const GLOBAL: u8 = b'c';
    pub const MARK: u8 = b'(';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const BINUNICODE: u8 = b'X';
    pub const BININT: u8 = b'J';
    pub const LONG1: u8 = 0x8a;
    pub const BINPERSID: u8 = b'Q';
    pub const NEWFALSE: u8 = 0x89;
    pub const REDUCE: u8 = b'R';
    pub const SETITEMS: u8 = b'u';
    pub const STOP: u8 = b'.';
}

#[derive(Default)]
struct Pickle(Vec<u8>);

impl Pickle {
    fn global(&mut self, module: &str, name: &str) {
        self.0.push(op::GLOBAL);
        self.0
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }

    fn string(&mut self, s: &str) {
        self.0.push(op::BINUNICODE);
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn int(&mut self, v: usize) {
        match i32::try_from(v) {
            Ok(v) => {
                self.0.push(op::BININT);
                self.0.extend_from_slice(&v.to_le_bytes());
            }
            Err(_) => {
                // LONG1: length byte, then little-endian two's complement (9 bytes: sign room).
                self.0.extend_from_slice(&[op::LONG1, 9]);
                self.0.extend_from_slice(&(v as u64).to_le_bytes());
                self.0.push(0);
            }
        }
    }

    fn tuple_of_ints(&mut self, v: &[usize]) {
        if v.is_empty() {
            self.0.push(op::EMPTY_TUPLE);
            return;
        }
        self.0.push(op::MARK);
        for &x in v {
            self.int(x);
        }
        self.0.push(op::TUPLE);
    }

    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.0.extend_from_slice(&[op::EMPTY_TUPLE, op::REDUCE]);
    }

    /// `_rebuild_tensor_v2` of a contiguous float32 tensor stored under `key`.
    fn tensor(&mut self, key: &str, e: &Entry) {
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.0.push(op::MARK);
        self.0.push(op::MARK);
        self.string("storage");
        self.global("torch", "FloatStorage");
        self.string(key);
        self.string("cpu");
        self.int(e.data.len());
        self.0.extend_from_slice(&[op::TUPLE, op::BINPERSID]);
        self.int(0);
        self.tuple_of_ints(&e.shape);
        let mut stride = vec![1usize; e.shape.len()];
        for d in (0..e.shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * e.shape[d + 1];
        }
        self.tuple_of_ints(&stride);
        self.0.push(op::NEWFALSE);
        self.empty_ordered_dict();
        self.0.extend_from_slice(&[op::TUPLE, op::REDUCE]);
    }
}

/// The zip archive bytes of a pickle and its storages.
fn archive(pickle: Vec<u8>, storages: &[&Entry]) -> Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .with_alignment(64);
    zip.start_file("archive/data.pkl", opts)?;
    zip.write_all(&pickle)?;
    zip.start_file("archive/byteorder", opts)?;
    zip.write_all(b"little")?;
    for (k, e) in storages.iter().enumerate() {
        zip.start_file(format!("archive/data/{k}"), opts)?;
        let bytes: Vec<u8> = e.data.iter().flat_map(|x| x.to_le_bytes()).collect();
        zip.write_all(&bytes)?;
    }
    zip.start_file("archive/version", opts)?;
    zip.write_all(b"3\n")?;
    Ok(zip.finish()?.into_inner())
}

/// Writes `tensors` as a PyTorch state dict (`OrderedDict`, keys sorted), atomically.
pub fn write_state_dict(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut sorted: Vec<&(String, Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let entries = sorted
        .iter()
        .map(|(_, t)| entry(t))
        .collect::<Result<Vec<_>>>()?;
    let mut p = Pickle::default();
    p.0.extend_from_slice(&[op::PROTO, 2]);
    p.empty_ordered_dict();
    p.0.push(op::MARK);
    for (k, ((name, _), e)) in sorted.iter().zip(&entries).enumerate() {
        p.string(name);
        p.tensor(&k.to_string(), e);
    }
    p.0.extend_from_slice(&[op::SETITEMS, op::STOP]);
    let bytes = archive(p.0, &entries.iter().collect::<Vec<_>>())?;
    diffusion::write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))
}

/// Writes one tensor as `torch.save(tensor)` does, atomically.
pub fn write_tensor(path: &Path, tensor: &Tensor) -> Result<()> {
    let e = entry(tensor)?;
    let mut p = Pickle::default();
    p.0.extend_from_slice(&[op::PROTO, 2]);
    p.tensor("0", &e);
    p.0.push(op::STOP);
    let bytes = archive(p.0, &[&e])?;
    diffusion::write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))
}
