//! Object arrays: `np.save` writes an object array as a pickle (protocol 2 with numpy 1.x on old
//! files, 3-5 with newer numpy). Each element is itself an array, pickled as
//! `numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')` followed by a `BUILD` with the state
//! `(version, shape, dtype, is_fortran, data)`, where `data` is raw bytes (protocol 3+), a
//! `_codecs.encode(str, 'latin1')` call (protocol 2) or a list of objects (object arrays).
//!
//! The pickle runs on the hardened [`crate::pickle`] machine (length fields checked against the
//! bytes that remain, bounded nesting and memo copies) and the result is interpreted here.
//! Nothing is ever executed: globals are recorded by name and only the numpy / codecs ones above
//! are interpreted; anything else is an error naming the global.

use std::path::Path;

use super::{Dtype, FloatArray, fortran_to_c};
use crate::pickle::{Value, unpickle};
use crate::{ReadError, element_count};

type Result<T> = std::result::Result<T, ReadError>;

fn is_numpy_module(m: &str) -> bool {
    matches!(
        m,
        "numpy.core.multiarray" | "numpy._core.multiarray" | "numpy" | "numpy.core" | "numpy._core"
    )
}

/// An interpreted numpy array: either floats or a list of objects.
enum Array<'v> {
    Float(FloatArray),
    Objects(&'v [Value]),
}

struct Interp<'a> {
    path: &'a Path,
}

impl Interp<'_> {
    fn err(&self, reason: impl Into<String>) -> ReadError {
        ReadError::new(self.path, format!("object array: {}", reason.into()))
    }

    /// `numpy.dtype(descr, align, copy)` + BUILD state `(3, endian, ...)` -> a descr like `<f4`.
    fn dtype(&self, v: &Value) -> Result<String> {
        let (obj, state) = match v {
            Value::Build { object, state } => (object.as_ref(), Some(state.as_ref())),
            other => (other, None),
        };
        let name = match obj {
            Value::Reduce { callable, args } => match (callable.as_ref(), args.as_ref()) {
                (Value::Global { module, name }, Value::Tuple(a))
                    if is_numpy_module(module) && name == "dtype" =>
                {
                    match a.first() {
                        Some(Value::Str(s)) => s.clone(),
                        _ => return Err(self.err("numpy.dtype without a type string")),
                    }
                }
                _ => {
                    return Err(self.err(format!(
                        "dtype field: expected numpy.dtype, got {}",
                        obj.brief()
                    )));
                }
            },
            other => {
                return Err(self.err(format!(
                    "dtype field: expected a dtype, got {}",
                    other.brief()
                )));
            }
        };
        let endian = match state {
            Some(Value::Tuple(s)) => match s.get(1) {
                Some(Value::Str(e)) => e.clone(),
                _ => "|".to_string(),
            },
            _ => "|".to_string(),
        };
        if name.starts_with('O') {
            return Ok("|O".to_string());
        }
        match endian.as_str() {
            ">" => Ok(format!(">{name}")),
            _ => Ok(format!("<{name}")),
        }
    }

    fn bytes(&self, v: &Value) -> Result<Vec<u8>> {
        match v {
            Value::Bytes(b) => Ok(b.clone()),
            // Protocol 2 pickles `bytes` as `_codecs.encode(text, 'latin1')`.
            Value::Reduce { callable, args } => match (callable.as_ref(), args.as_ref()) {
                (Value::Global { module, name }, Value::Tuple(a))
                    if module == "_codecs" && name == "encode" =>
                {
                    match a.as_slice() {
                        [Value::Str(s), Value::Str(enc)] if enc == "latin1" || enc == "latin-1" => {
                            s.chars()
                                .map(|c| {
                                    u8::try_from(c as u32).map_err(|_| {
                                        self.err("data field: non-latin1 char in bytes")
                                    })
                                })
                                .collect()
                        }
                        [Value::Str(s)] => Ok(s.as_bytes().to_vec()),
                        _ => Err(self.err("data field: unsupported _codecs.encode arguments")),
                    }
                }
                _ => Err(self.err(format!("data field: expected bytes, got a {}", v.brief()))),
            },
            Value::Str(s) => Ok(s.as_bytes().to_vec()),
            other => Err(self.err(format!("data field: expected bytes, got {}", other.brief()))),
        }
    }

    fn array<'v>(&self, v: &'v Value) -> Result<Array<'v>> {
        let Value::Build { object, state } = v else {
            return Err(self.err(format!("expected a numpy array, got {}", v.brief())));
        };
        match object.as_ref() {
            Value::Reduce { callable, .. } => match callable.as_ref() {
                Value::Global { module, name }
                    if is_numpy_module(module) && name == "_reconstruct" => {}
                other => {
                    return Err(self.err(format!("unsupported global {}", other.brief())));
                }
            },
            other => {
                return Err(self.err(format!(
                    "expected ndarray reconstruction, got {}",
                    other.brief()
                )));
            }
        }
        let Value::Tuple(s) = state.as_ref() else {
            return Err(self.err("ndarray state is not a tuple"));
        };
        // (version, shape, dtype, is_fortran, data); version 1 has 5 entries, version 0 has 4.
        let (shape_v, dtype_v, fortran_v, data_v) = match s.as_slice() {
            [_, shape, dtype, fortran, data] => (shape, dtype, fortran, data),
            [shape, dtype, fortran, data] => (shape, dtype, fortran, data),
            _ => return Err(self.err(format!("ndarray state has {} entries", s.len()))),
        };
        let shape = match shape_v {
            Value::Tuple(d) => d
                .iter()
                .enumerate()
                .map(|(i, x)| match x {
                    Value::Int(v) => usize::try_from(*v)
                        .map_err(|_| self.err(format!("shape field: entry {i} is {v}"))),
                    other => Err(self.err(format!("shape field: entry {i} is {}", other.brief()))),
                })
                .collect::<Result<Vec<_>>>()?,
            other => {
                return Err(self.err(format!(
                    "shape field: expected a tuple, got {}",
                    other.brief()
                )));
            }
        };
        let fortran = matches!(fortran_v, Value::Bool(true) | Value::Int(1));
        let descr = self.dtype(dtype_v)?;
        let count = element_count(&shape).ok_or_else(|| {
            self.err(format!("shape field: {shape:?} overflows an element count"))
        })?;
        if descr == "|O" {
            return match data_v {
                Value::List(items) if items.len() == count => Ok(Array::Objects(items)),
                Value::List(items) => Err(self.err(format!(
                    "shape field: object array of shape {shape:?} holds {} items",
                    items.len()
                ))),
                other => Err(self.err(format!(
                    "data field: object array data is {}, not a list",
                    other.brief()
                ))),
            };
        }
        let dtype = Dtype::parse(&descr)
            .filter(|d| d.kind == super::Kind::Float)
            .ok_or_else(|| {
                self.err(format!(
                    "dtype field: unsupported element dtype {descr:?} (expected float16/32/64)"
                ))
            })?;
        let size = dtype.size;
        // Compared with the bytes present before anything sized by the shape is allocated.
        let needed = count.checked_mul(size).ok_or_else(|| {
            self.err(format!(
                "shape field: {shape:?} of {descr} overflows a byte count"
            ))
        })?;
        let raw = self.bytes(data_v)?;
        if raw.len() != needed {
            return Err(self.err(format!(
                "shape field: array of shape {shape:?} and dtype {descr} needs {needed} bytes, \
                 data holds {}",
                raw.len()
            )));
        }
        let mut data = dtype.floats(&raw).unwrap_or_default();
        if fortran {
            data = fortran_to_c(&shape, data);
        }
        Ok(Array::Float(FloatArray { shape, data }))
    }
}

/// Reads the pickle body of an object-array `.npy` (everything after the header) into its
/// float-array elements (outer array flattened in C order). `path` only names errors.
pub(crate) fn read_object_array(pickle: &[u8], path: &Path) -> Result<Vec<FloatArray>> {
    let interp = Interp { path };
    let top = unpickle(pickle).map_err(|e| interp.err(e.reason))?;
    match interp.array(&top)? {
        Array::Objects(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match interp.array(v) {
                Ok(Array::Float(a)) => Ok(a),
                Ok(Array::Objects(_)) => Err(interp.err(format!("element {i} is an object array"))),
                Err(e) => Err(e),
            })
            .collect(),
        Array::Float(_) => {
            Err(interp.err("top-level pickle is a float array, not an object array"))
        }
    }
}

/// The pickle (protocol 3) of an object array of float arrays `[L_i, width]`, as numpy 1.x
/// writes it.
pub(crate) fn object_array_pickle(items: &[Vec<f32>], width: usize) -> Vec<u8> {
    fn int(out: &mut Vec<u8>, v: i32) {
        out.push(b'J');
        out.extend_from_slice(&v.to_le_bytes());
    }
    fn unicode(out: &mut Vec<u8>, s: &str) {
        out.push(b'X');
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    // dtype(name, False, True) + BUILD (3, endian, None, None, None, -1, -1, flags); memo 2 holds
    // the `numpy.dtype` global.
    fn dtype(out: &mut Vec<u8>, name: &str, endian: &str, flags: i32) {
        out.extend_from_slice(b"h\x02");
        unicode(out, name);
        out.extend_from_slice(b"\x89\x88\x87R(");
        int(out, 3);
        unicode(out, endian);
        out.extend_from_slice(b"NNN");
        int(out, -1);
        int(out, -1);
        int(out, flags);
        out.extend_from_slice(b"tb");
    }
    // `_reconstruct(ndarray, (0,), b'b')`; memo 0 and 1 hold the two globals.
    fn reconstruct(out: &mut Vec<u8>) {
        out.extend_from_slice(b"h\x00h\x01");
        int(out, 0);
        out.extend_from_slice(b"\x85C\x01b\x87R");
    }
    let mut p = Vec::new();
    p.extend_from_slice(b"\x80\x03");
    p.extend_from_slice(b"cnumpy.core.multiarray\n_reconstruct\nq\x00");
    p.extend_from_slice(b"cnumpy\nndarray\nq\x01");
    p.extend_from_slice(b"cnumpy\ndtype\nq\x02");
    p.push(b'0'); // pop the dtype global (kept in memo 2)
    reconstruct(&mut p);
    p.push(b'(');
    int(&mut p, 1);
    int(&mut p, items.len() as i32);
    p.push(0x85);
    dtype(&mut p, "O8", "|", 63);
    p.extend_from_slice(b"\x89](");
    for item in items {
        reconstruct(&mut p);
        p.push(b'(');
        int(&mut p, 1);
        int(&mut p, (item.len() / width.max(1)) as i32);
        int(&mut p, width as i32);
        p.push(0x86);
        dtype(&mut p, "f4", "<", 0);
        p.push(0x89);
        p.push(b'B');
        p.extend_from_slice(&((item.len() * 4) as u32).to_le_bytes());
        for v in item {
            p.extend_from_slice(&v.to_le_bytes());
        }
        p.extend_from_slice(b"tb");
    }
    p.extend_from_slice(b"etb.");
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_a_typed_error_not_a_panic() {
        for bytes in [&b""[..], b"\x80\x04\x95", b"\xff\xff", b"(t."] {
            assert!(read_object_array(bytes, Path::new("x.npy")).is_err());
        }
    }

    #[test]
    fn written_object_array_reads_back() -> Result<()> {
        let items = vec![vec![1.0f32, 2.0, 3.0, 4.0], vec![-0.5f32, 0.25]];
        let bytes = super::super::object_array_bytes(&items, 2);
        let super::super::NpyContent::Objects(a) = super::super::parse(&bytes, Path::new("w.npy"))?
        else {
            return Err(ReadError::new("w.npy", "expected objects"));
        };
        assert_eq!(a.len(), 2);
        assert_eq!((&a[0].shape, &a[1].shape), (&vec![2, 2], &vec![1, 2]));
        assert_eq!((&a[0].data, &a[1].data), (&items[0], &items[1]));
        Ok(())
    }
}
