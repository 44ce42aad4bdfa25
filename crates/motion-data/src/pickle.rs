//! A minimal pickle reader for numpy object arrays of float arrays.
//!
//! `np.save` writes an object array as a pickle (protocol 2 with numpy 1.x on old files, 3-5 with
//! newer numpy). The reference data's `caption_clip/seq/<id>.npy` are such arrays: one float
//! array `[L_i, 512]` per caption. This module runs the subset of the pickle virtual machine that
//! those files use (see Python's `pickletools` for the opcode table) and interprets the result:
//! `numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')` followed by a `BUILD` with the state
//! `(version, shape, dtype, is_fortran, data)`, where `data` is raw bytes (protocol 3+), a
//! `_codecs.encode(str, 'latin1')` call (protocol 2) or a list of objects (object arrays).
//!
//! Nothing is ever executed: globals are recorded by name and only the numpy / codecs ones above
//! are interpreted; anything else is an error naming the global.

use std::path::Path;

use crate::error::{DataError, Result};
use crate::npy::{FloatArray, float_size, floats_from_bytes, fortran_to_c};

/// A pickled Python value (the subset needed here).
#[derive(Debug, Clone, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    Reduce(Box<Value>, Box<Value>),
    Build(Box<Value>, Box<Value>),
    Mark,
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: std::collections::HashMap<usize, Value>,
    path: &'a Path,
}

impl<'a> Machine<'a> {
    fn err(&self, reason: impl Into<String>) -> DataError {
        DataError::Pickle {
            path: self.path.to_path_buf(),
            reason: format!("{} (at byte {})", reason.into(), self.pos),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.pos + n > self.data.len() {
            return Err(self.err(format!("truncated: wanted {n} more bytes")));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<usize> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as usize)
    }

    fn u32(&mut self) -> Result<usize> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn u64(&mut self) -> Result<usize> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        usize::try_from(u64::from_le_bytes(a)).map_err(|_| self.err("length overflows usize"))
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or_else(|| self.err("unterminated text line"))?;
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(s)
    }

    fn string(&mut self, n: usize) -> Result<String> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("invalid UTF-8 string"))
    }

    fn pop(&mut self) -> Result<Value> {
        self.stack.pop().ok_or_else(|| self.err("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let at = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or_else(|| self.err("no MARK on the stack"))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }

    fn top_mut(&mut self) -> Result<&mut Value> {
        let pos = self.pos;
        let path = self.path.to_path_buf();
        self.stack.last_mut().ok_or(DataError::Pickle {
            path,
            reason: format!("stack underflow (at byte {pos})"),
        })
    }

    fn memo_get(&self, i: usize) -> Result<Value> {
        self.memo
            .get(&i)
            .cloned()
            .ok_or_else(|| self.err(format!("memo entry {i} missing")))
    }

    fn memo_put(&mut self, i: usize) -> Result<()> {
        let v = self
            .stack
            .last()
            .cloned()
            .ok_or_else(|| self.err("stack underflow"))?;
        self.memo.insert(i, v);
        Ok(())
    }

    fn run(mut self) -> Result<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.u64()?; // FRAME
                }
                b'.' => return self.pop(), // STOP
                b'(' => self.stack.push(Value::Mark),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let b = self.take(4)?;
                    self.stack.push(Value::Int(
                        i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64
                    ));
                }
                b'K' => {
                    let v = self.u8()? as i64;
                    self.stack.push(Value::Int(v));
                }
                b'M' => {
                    let v = self.u16()? as i64;
                    self.stack.push(Value::Int(v));
                }
                0x8a => {
                    // LONG1: little-endian two's complement of n bytes.
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err(self.err("LONG1 integer wider than 64 bits"));
                    }
                    let mut v: i64 = 0;
                    for (i, &byte) in b.iter().enumerate() {
                        v |= (byte as i64) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Value::Int(v));
                }
                b'I' => {
                    let s = self.line()?;
                    let v = match s.as_str() {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        _ => Value::Int(
                            s.trim()
                                .parse()
                                .map_err(|_| self.err(format!("bad INT {s:?}")))?,
                        ),
                    };
                    self.stack.push(v);
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.stack.push(Value::Float(f64::from_be_bytes(a)));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.string(n)?;
                    self.stack.push(Value::Str(s));
                }
                b'X' => {
                    let n = self.u32()?;
                    let s = self.string(n)?;
                    self.stack.push(Value::Str(s));
                }
                0x8d => {
                    let n = self.u64()?;
                    let s = self.string(n)?;
                    self.stack.push(Value::Str(s));
                }
                b'C' | b'U' => {
                    // SHORT_BINBYTES / SHORT_BINSTRING
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b'B' | b'T' => {
                    // BINBYTES / BINSTRING
                    let n = self.u32()?;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                0x8e | 0x96 => {
                    // BINBYTES8 / BYTEARRAY8
                    let n = self.u64()?;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85 => {
                    let a = self.pop()?;
                    self.stack.push(Value::Tuple(vec![a]));
                }
                0x86 => {
                    let b = self.pop()?;
                    let a = self.pop()?;
                    self.stack.push(Value::Tuple(vec![a, b]));
                }
                0x87 => {
                    let c = self.pop()?;
                    let b = self.pop()?;
                    let a = self.pop()?;
                    self.stack.push(Value::Tuple(vec![a, b, c]));
                }
                b']' => self.stack.push(Value::List(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items));
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top_mut()? {
                        Value::List(l) => l.push(v),
                        _ => return Err(self.err("APPEND to a non-list")),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top_mut()? {
                        Value::List(l) => l.extend(items),
                        _ => return Err(self.err("APPENDS to a non-list")),
                    }
                }
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let mut pairs = Vec::new();
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    self.stack.push(Value::Dict(pairs));
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top_mut()? {
                        Value::Dict(d) => d.push((k, v)),
                        _ => return Err(self.err("SETITEM on a non-dict")),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let mut it = items.into_iter();
                    let mut pairs = Vec::new();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    match self.top_mut()? {
                        Value::Dict(d) => d.extend(pairs),
                        _ => return Err(self.err("SETITEMS on a non-dict")),
                    }
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(module, name));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                        _ => return Err(self.err("STACK_GLOBAL needs two strings")),
                    }
                }
                b'R' | 0x81 => {
                    // REDUCE / NEWOBJ: recorded, interpreted later.
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.stack
                        .push(Value::Reduce(Box::new(callable), Box::new(args)));
                }
                b'b' => {
                    let state = self.pop()?;
                    let obj = self.pop()?;
                    self.stack
                        .push(Value::Build(Box::new(obj), Box::new(state)));
                }
                0x94 => {
                    let i = self.memo.len();
                    self.memo_put(i)?;
                }
                b'p' => {
                    let s = self.line()?;
                    let i = s
                        .trim()
                        .parse()
                        .map_err(|_| self.err(format!("bad PUT {s:?}")))?;
                    self.memo_put(i)?;
                }
                b'q' => {
                    let i = self.u8()? as usize;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?;
                }
                b'g' => {
                    let s = self.line()?;
                    let i = s
                        .trim()
                        .parse()
                        .map_err(|_| self.err(format!("bad GET {s:?}")))?;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'h' => {
                    let i = self.u8()? as usize;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let i = self.u32()?;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                other => {
                    return Err(self.err(format!("unsupported pickle opcode 0x{other:02x}")));
                }
            }
        }
    }
}

fn is_numpy_module(m: &str) -> bool {
    matches!(
        m,
        "numpy.core.multiarray" | "numpy._core.multiarray" | "numpy" | "numpy.core" | "numpy._core"
    )
}

/// An interpreted numpy array: either floats or a list of objects.
enum Array {
    Float(FloatArray),
    Objects(Vec<Value>),
}

struct Interp<'a> {
    path: &'a Path,
}

impl Interp<'_> {
    fn err(&self, reason: impl Into<String>) -> DataError {
        DataError::Pickle {
            path: self.path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// `numpy.dtype(descr, align, copy)` + BUILD state `(3, endian, ...)` -> a descr like `<f4`.
    fn dtype(&self, v: &Value) -> Result<String> {
        let (obj, state) = match v {
            Value::Build(o, s) => (o.as_ref(), Some(s.as_ref())),
            other => (other, None),
        };
        let name = match obj {
            Value::Reduce(callable, args) => match (callable.as_ref(), args.as_ref()) {
                (Value::Global(m, n), Value::Tuple(a)) if is_numpy_module(m) && n == "dtype" => {
                    match a.first() {
                        Some(Value::Str(s)) => s.clone(),
                        _ => return Err(self.err("numpy.dtype without a type string")),
                    }
                }
                _ => return Err(self.err(format!("expected numpy.dtype, got {callable:?}"))),
            },
            other => return Err(self.err(format!("expected a dtype, got {other:?}"))),
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
            ">" => Err(self.err(format!("big-endian dtype >{name} is not supported"))),
            _ => Ok(format!("<{name}")),
        }
    }

    fn bytes(&self, v: &Value) -> Result<Vec<u8>> {
        match v {
            Value::Bytes(b) => Ok(b.clone()),
            // Protocol 2 pickles `bytes` as `_codecs.encode(text, 'latin1')`.
            Value::Reduce(callable, args) => match (callable.as_ref(), args.as_ref()) {
                (Value::Global(m, n), Value::Tuple(a)) if m == "_codecs" && n == "encode" => {
                    match a.as_slice() {
                        [Value::Str(s), Value::Str(enc)] if enc == "latin1" || enc == "latin-1" => {
                            s.chars()
                                .map(|c| {
                                    u8::try_from(c as u32)
                                        .map_err(|_| self.err("non-latin1 char in bytes"))
                                })
                                .collect()
                        }
                        [Value::Str(s)] => Ok(s.as_bytes().to_vec()),
                        _ => Err(self.err("unsupported _codecs.encode arguments")),
                    }
                }
                _ => Err(self.err(format!("expected bytes, got a call of {callable:?}"))),
            },
            Value::Str(s) => Ok(s.as_bytes().to_vec()),
            other => Err(self.err(format!("expected bytes, got {other:?}"))),
        }
    }

    fn array(&self, v: &Value) -> Result<Array> {
        let Value::Build(obj, state) = v else {
            return Err(self.err(format!("expected a numpy array, got {v:?}")));
        };
        match obj.as_ref() {
            Value::Reduce(callable, _) => match callable.as_ref() {
                Value::Global(m, n) if is_numpy_module(m) && n == "_reconstruct" => {}
                other => return Err(self.err(format!("unsupported global {other:?}"))),
            },
            other => {
                return Err(self.err(format!("expected ndarray reconstruction, got {other:?}")));
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
                .map(|x| match x {
                    Value::Int(i) if *i >= 0 => Ok(*i as usize),
                    _ => Err(self.err(format!("bad shape entry {x:?}"))),
                })
                .collect::<Result<Vec<_>>>()?,
            _ => return Err(self.err("ndarray shape is not a tuple")),
        };
        let fortran = matches!(fortran_v, Value::Bool(true) | Value::Int(1));
        let descr = self.dtype(dtype_v)?;
        let count: usize = shape.iter().product();
        if descr == "|O" {
            return match data_v {
                Value::List(items) if items.len() == count => Ok(Array::Objects(items.clone())),
                Value::List(items) => Err(self.err(format!(
                    "object array of shape {shape:?} holds {} items",
                    items.len()
                ))),
                _ => Err(self.err("object array data is not a list")),
            };
        }
        let size = float_size(&descr).ok_or_else(|| {
            self.err(format!(
                "unsupported element dtype {descr:?} (expected float16/32/64)"
            ))
        })?;
        let raw = self.bytes(data_v)?;
        if raw.len() != count * size {
            return Err(self.err(format!(
                "array of shape {shape:?} and dtype {descr} needs {} bytes, has {}",
                count * size,
                raw.len()
            )));
        }
        let mut data = floats_from_bytes(&descr, &raw)
            .ok_or_else(|| self.err(format!("unsupported dtype {descr}")))?;
        if fortran {
            data = fortran_to_c(&shape, data);
        }
        Ok(Array::Float(FloatArray { shape, data }))
    }
}

/// Reads the pickle body of an object-array `.npy` (everything after the header) into its
/// float-array elements (outer array flattened in C order). `path` only names errors.
pub fn read_object_array(pickle: &[u8], path: &Path) -> Result<Vec<FloatArray>> {
    let machine = Machine {
        data: pickle,
        pos: 0,
        stack: Vec::new(),
        memo: Default::default(),
        path,
    };
    let top = machine.run()?;
    let interp = Interp { path };
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

/// Serialises float arrays `[L_i, width]` (row-major `f32`) as a numpy object-array `.npy` file,
/// byte-compatible in structure with `np.save(np.array(items, dtype=object))` under numpy 1.x
/// (pickle protocol 3): `np.load(path, allow_pickle=True)` reads it back.
pub fn object_array_npy_bytes(items: &[Vec<f32>], width: usize) -> Vec<u8> {
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
    let mut header = format!(
        "{{'descr': '|O', 'fortran_order': False, 'shape': ({},), }}",
        items.len()
    );
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + p.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&p);
    out
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
    fn written_object_array_reads_back() {
        let items = vec![vec![1.0f32, 2.0, 3.0, 4.0], vec![-0.5f32, 0.25]];
        let bytes = object_array_npy_bytes(&items, 2);
        match crate::npy::parse_npy(&bytes, Path::new("w.npy")).expect("parse") {
            crate::npy::NpyContent::Objects(a) => {
                assert_eq!(a.len(), 2);
                assert_eq!(a[0].shape, vec![2, 2]);
                assert_eq!(a[1].shape, vec![1, 2]);
                assert_eq!(a[0].data, items[0]);
                assert_eq!(a[1].data, items[1]);
            }
            other => panic!("expected objects, got {other:?}"),
        }
    }

    #[test]
    fn long1_decodes_negative_numbers() {
        // LONG1 with 2 bytes 0xff 0xfe = -257 (two's complement, little-endian), then STOP.
        let m = Machine {
            data: b"\x8a\x02\xff\xfe.",
            pos: 0,
            stack: Vec::new(),
            memo: Default::default(),
            path: Path::new("m"),
        };
        assert_eq!(m.run().expect("run"), Value::Int(-257));
    }
}
