//! Test support for the workspace: locates the golden fixtures produced by the PyTorch
//! reference (the repository's `fixtures/` folder) and loads them.
//!
//! Every fixture `<name>` is a pair `<name>.safetensors` (tensors) + `<name>.json`
//! (semantics, configuration, tolerance). [`Fixture::load`] reads both; [`assert_close`]
//! compares a tensor against the reference with the `atol + rtol * |expected|` rule and
//! reports the worst element on failure.
//!
//! The folder is found from this crate's manifest directory, so tests work on a fresh clone;
//! the environment variable `MOTION_DIT_FIXTURES` overrides it.
//!
//! [`mutate`] holds the seeded mutation testing of file readers (byte, pickle, `.npy` and zip
//! mutations, a counting allocator, a campaign runner) used by the crates' `malformed` tests.
//!
//! # Place in the workspace
//! A development dependency only (`publish = false`); no library crate may depend on it for
//! anything but tests.
#![warn(missing_docs)]

pub mod mutate;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle::{DType, Device, Tensor};

/// Errors raised while locating or reading a fixture.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// The fixture file does not exist.
    #[error("fixture file {path} not found (set MOTION_DIT_FIXTURES to the fixtures folder)")]
    Missing {
        /// The path that was looked up.
        path: PathBuf,
    },
    /// The file exists but could not be read or parsed.
    #[error("cannot read fixture {path}: {reason}")]
    Read {
        /// The offending file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A tensor key is absent from the fixture.
    #[error("fixture {fixture} has no tensor {key:?}")]
    MissingKey {
        /// Fixture name.
        fixture: String,
        /// The key asked for.
        key: String,
    },
    /// A JSON pointer does not resolve to a value of the expected type.
    #[error("fixture {fixture}.json has no {expected} at {pointer:?}")]
    MissingJson {
        /// Fixture name.
        fixture: String,
        /// The JSON pointer asked for.
        pointer: String,
        /// What was expected there.
        expected: &'static str,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle::Error),
}

/// Result alias for fixture access.
pub type Result<T> = std::result::Result<T, FixtureError>;

/// The fixtures folder: `$MOTION_DIT_FIXTURES`, or `fixtures/` at the repository root.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("MOTION_DIT_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures"),
    }
}

/// Path of a file inside the fixtures folder; errors if it does not exist.
pub fn fixture_path(name: &str) -> Result<PathBuf> {
    let path = fixtures_dir().join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(FixtureError::Missing { path })
    }
}

/// Reads every tensor of a fixture `.safetensors` file onto `device`.
pub fn load_safetensors(name: &str, device: &Device) -> Result<HashMap<String, Tensor>> {
    let path = fixture_path(name)?;
    candle::safetensors::load(&path, device).map_err(|e| FixtureError::Read {
        path: path.clone(),
        reason: e.to_string(),
    })
}

/// Reads a fixture `.json` file.
pub fn load_json(name: &str) -> Result<serde_json::Value> {
    let path = fixture_path(name)?;
    let text = std::fs::read_to_string(&path).map_err(|e| FixtureError::Read {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| FixtureError::Read {
        path,
        reason: e.to_string(),
    })
}

/// A golden fixture: the tensors of `<name>.safetensors` and the metadata of `<name>.json`.
#[derive(Debug)]
pub struct Fixture {
    /// Fixture name (file stem).
    pub name: String,
    /// Every tensor of the safetensors file, by key.
    pub tensors: HashMap<String, Tensor>,
    /// The parsed JSON side file.
    pub json: serde_json::Value,
}

impl Fixture {
    /// Loads `<name>.safetensors` and `<name>.json` onto the CPU.
    pub fn load(name: &str) -> Result<Self> {
        Self::load_on(name, &Device::Cpu)
    }

    /// Loads `<name>.safetensors` and `<name>.json` onto `device`.
    pub fn load_on(name: &str, device: &Device) -> Result<Self> {
        Ok(Self {
            name: name.to_string(),
            tensors: load_safetensors(&format!("{name}.safetensors"), device)?,
            json: load_json(&format!("{name}.json"))?,
        })
    }

    /// The tensor stored under `key`.
    pub fn tensor(&self, key: &str) -> Result<Tensor> {
        self.tensors
            .get(key)
            .cloned()
            .ok_or_else(|| FixtureError::MissingKey {
                fixture: self.name.clone(),
                key: key.to_string(),
            })
    }

    /// The tensor stored under `key`, converted to `f32`.
    pub fn f32(&self, key: &str) -> Result<Tensor> {
        Ok(self.tensor(key)?.to_dtype(DType::F32)?)
    }

    /// Every tensor whose key starts with `prefix`, with the prefix stripped.
    pub fn with_prefix(&self, prefix: &str) -> HashMap<String, Tensor> {
        self.tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v.clone())))
            .collect()
    }

    /// The JSON value at a JSON pointer (`"/tolerance_suggestion/atol"`).
    pub fn json_at(&self, pointer: &str) -> Result<&serde_json::Value> {
        self.json
            .pointer(pointer)
            .ok_or_else(|| FixtureError::MissingJson {
                fixture: self.name.clone(),
                pointer: pointer.to_string(),
                expected: "a value",
            })
    }

    /// The number at a JSON pointer.
    pub fn json_f64(&self, pointer: &str) -> Result<f64> {
        self.json_at(pointer)?
            .as_f64()
            .ok_or_else(|| FixtureError::MissingJson {
                fixture: self.name.clone(),
                pointer: pointer.to_string(),
                expected: "a number",
            })
    }
}

/// Outcome of comparing two tensors element-wise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Closeness {
    /// Largest `|actual - expected|`.
    pub max_abs: f64,
    /// Flat index of the element with the largest excess over the tolerance.
    pub worst_index: usize,
    /// `|actual - expected| - (atol + rtol |expected|)` at `worst_index` (<= 0 means within).
    pub worst_excess: f64,
    /// Number of elements outside the tolerance (NaN counts as outside).
    pub violations: usize,
}

/// Compares `actual` with `expected` element-wise: `|a - e| <= atol + rtol * |e|`.
///
/// Shapes must match exactly. Computation is in `f64`.
pub fn closeness(actual: &Tensor, expected: &Tensor, atol: f64, rtol: f64) -> Result<Closeness> {
    if actual.dims() != expected.dims() {
        return Err(candle::Error::ShapeMismatchBinaryOp {
            lhs: actual.shape().clone(),
            rhs: expected.shape().clone(),
            op: "closeness",
        }
        .into());
    }
    let a = actual
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let e = expected
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let mut out = Closeness {
        max_abs: 0.0,
        worst_index: 0,
        worst_excess: f64::NEG_INFINITY,
        violations: 0,
    };
    for (i, (x, y)) in a.iter().zip(&e).enumerate() {
        let diff = (x - y).abs();
        let excess = if diff.is_nan() {
            f64::INFINITY
        } else {
            diff - (atol + rtol * y.abs())
        };
        if diff > out.max_abs || diff.is_nan() {
            out.max_abs = if diff.is_nan() { f64::NAN } else { diff };
        }
        if excess > out.worst_excess {
            out.worst_excess = excess;
            out.worst_index = i;
        }
        if excess > 0.0 {
            out.violations += 1;
        }
    }
    Ok(out)
}

/// Panics with a descriptive message unless `actual` matches `expected` within
/// `atol + rtol * |expected|` everywhere. `what` names the quantity in the message.
#[track_caller]
pub fn assert_close(actual: &Tensor, expected: &Tensor, atol: f64, rtol: f64, what: &str) {
    let c = match closeness(actual, expected, atol, rtol) {
        Ok(c) => c,
        Err(e) => panic!("{what}: {e}"),
    };
    if c.violations > 0 {
        let flat = |t: &Tensor| {
            t.to_dtype(DType::F64)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.get(c.worst_index))
                .and_then(|t| t.to_scalar::<f64>())
                .unwrap_or(f64::NAN)
        };
        panic!(
            "{what}: {} of {} elements outside atol {atol:e} + rtol {rtol:e}; max |diff| = {:e}; \
             worst at flat index {} (shape {:?}): actual {} vs expected {}",
            c.violations,
            expected.elem_count(),
            c.max_abs,
            c.worst_index,
            expected.dims(),
            flat(actual),
            flat(expected),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dit_adaln_weights_with_their_pytorch_names() -> Result<()> {
        let fx = Fixture::load("dit_adaln")?;
        let w = fx.tensor("weights.model.input_projection.0.weight")?;
        // Linear(205 -> latent_dim): PyTorch stores [out, in].
        let latent = fx.json_f64("/config/latent_dim")? as usize;
        assert_eq!(w.dims(), &[latent, 205]);
        let x = fx.tensor("input.x")?;
        assert_eq!(x.dims()[2], 205);
        assert!(
            x.to_dtype(DType::F32)?
                .abs()?
                .sum_all()?
                .to_scalar::<f32>()?
                > 0.0
        );
        Ok(())
    }

    #[test]
    fn missing_key_is_named_in_the_error() -> Result<()> {
        let fx = Fixture::load("standardization")?;
        let err = fx.tensor("no.such.key").expect_err("key must be missing");
        assert!(err.to_string().contains("no.such.key"), "{err}");
        Ok(())
    }

    #[test]
    fn closeness_flags_only_elements_beyond_tolerance() -> Result<()> {
        let e = Tensor::new(&[1.0f32, 2.0, 3.0], &Device::Cpu)?;
        let a = Tensor::new(&[1.0f32, 2.5, 3.0], &Device::Cpu)?;
        let c = closeness(&a, &e, 0.1, 0.0)?;
        assert_eq!(c.violations, 1);
        assert_eq!(c.worst_index, 1);
        assert!((c.max_abs - 0.5).abs() < 1e-12);
        assert_eq!(closeness(&a, &e, 0.6, 0.0)?.violations, 0);
        Ok(())
    }
}
