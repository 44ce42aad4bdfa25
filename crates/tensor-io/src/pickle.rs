//! A hardened reader for the pickles this workspace meets: numpy object arrays (`np.save` of an
//! object array) and the `data.pkl` of `torch.save` zip archives (bare tensors, state dicts,
//! Lightning checkpoints).
//!
//! [`unpickle`] runs the subset of the pickle virtual machine those files use (protocols 0-5;
//! see Python's `pickletools` for the opcode table) and returns a tree of [`Value`]s. Nothing is
//! ever executed: globals, calls (`REDUCE`, `NEWOBJ`) and `BUILD`s are recorded as values for
//! the caller to interpret. [`stored_tensor`] and [`read_storage`] interpret a
//! `torch._utils._rebuild_tensor_v2` call and read its bytes from the archive.
//!
//! Crafted input must never panic, abort or allocate far beyond its own size:
//! - every length field is compared with the bytes that remain before anything is sliced or
//!   allocated (no `pos + n` that can overflow);
//! - values are at most [`MAX_DEPTH`] levels deep (dropping or printing a deeper tree would
//!   recurse without bound and overflow the stack);
//! - `GET` / `PUT` / `DUP` copy values, so a few bytes can duplicate a large value; the total
//!   size of the values made and copied is bounded by a budget proportional to the input
//!   ([`copy_budget`]);
//! - tensor shapes, strides, offsets and storage sizes use checked arithmetic and are compared
//!   with the bytes actually stored before a buffer is allocated.
//!
//! `dit` keeps a verbatim copy of this file (it may not depend on this crate); a `dit` test
//! checks that the two stay identical.

use std::collections::HashMap;
use std::io::Read;

use candle::DType;

/// Deepest nesting of containers / calls accepted (real files stay below 10).
pub const MAX_DEPTH: usize = 64;

/// A pickled Python value (the subset numpy and torch files use).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits 64 bits.
    Int(i64),
    /// A float.
    Float(f64),
    /// A text string.
    Str(String),
    /// A byte string (`bytes`, `bytearray`, or a protocol-0 `str`).
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict (insertion order kept; `collections.OrderedDict()` calls become dicts too).
    Dict(Vec<(Value, Value)>),
    /// A global `module.name`, recorded, never resolved.
    Global {
        /// The module.
        module: String,
        /// The attribute.
        name: String,
    },
    /// A call `callable(*args)` (`REDUCE` / `NEWOBJ`), recorded, never run.
    Reduce {
        /// What is called.
        callable: Box<Value>,
        /// The argument tuple.
        args: Box<Value>,
    },
    /// `object.__setstate__(state)` (`BUILD`), recorded, never run.
    Build {
        /// The object.
        object: Box<Value>,
        /// Its state.
        state: Box<Value>,
    },
    /// A persistent id (`BINPERSID`): in torch archives, a storage reference.
    PersId(Box<Value>),
}

impl Value {
    /// A short description for error messages: the kind and size, never the full contents
    /// (a value can be megabytes large).
    pub fn brief(&self) -> String {
        fn cut(s: &str) -> String {
            let mut out: String = s.chars().take(48).collect();
            if out.len() < s.len() {
                out.push_str("...");
            }
            out
        }
        match self {
            Value::None => "None".into(),
            Value::Bool(b) => format!("{b}"),
            Value::Int(i) => format!("int {i}"),
            Value::Float(f) => format!("float {f}"),
            Value::Str(s) => format!("str {:?}", cut(s)),
            Value::Bytes(b) => format!("bytes ({} bytes)", b.len()),
            Value::Tuple(t) => format!("tuple of {} items", t.len()),
            Value::List(l) => format!("list of {} items", l.len()),
            Value::Dict(d) => format!("dict of {} items", d.len()),
            Value::Global { module, name } => format!("global {}.{}", cut(module), cut(name)),
            Value::Reduce { callable, .. } => format!("call of {}", callable.brief_shallow()),
            Value::Build { object, .. } => format!("build of {}", object.brief_shallow()),
            Value::PersId(_) => "persistent id".into(),
        }
    }

    /// As [`Value::brief`], without looking inside calls (bounded recursion).
    fn brief_shallow(&self) -> String {
        match self {
            Value::Reduce { .. } => "a call".into(),
            Value::Build { .. } => "a build".into(),
            other => other.brief(),
        }
    }
}

/// A malformed pickle or tensor record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}")]
pub struct PickleError {
    /// What is wrong, with the byte offset or the field at fault.
    pub reason: String,
}

impl PickleError {
    fn new(reason: impl Into<String>) -> Self {
        PickleError {
            reason: reason.into(),
        }
    }
}

/// The total size (bytes, approximately) of the values a pickle of `len` bytes may create,
/// copies by `GET` / `PUT` / `DUP` included: 64 bytes per input byte + 64 MiB. Real files
/// stay well below it (torch's pickles, which memoise every object, use about 26 bytes per
/// input byte); crafted ones could otherwise grow without bound (a few bytes per copy of a
/// large value). Memory actually held can exceed the count by the growth slack of vectors
/// (at most about twice).
pub fn copy_budget(len: usize) -> usize {
    len.saturating_mul(64).saturating_add(64 << 20)
}

/// Approximate heap size of one value node (as held on the stack: value, depth, weight).
const NODE: usize = std::mem::size_of::<Node>();

/// A value on the stack or in the memo, with its nesting depth and approximate size.
#[derive(Clone)]
struct Node {
    value: Value,
    depth: usize,
    weight: usize,
}

impl Node {
    fn leaf(value: Value) -> Node {
        let payload = match &value {
            Value::Str(s) => s.len(),
            Value::Bytes(b) => b.len(),
            _ => 0,
        };
        Node {
            value,
            depth: 0,
            weight: NODE + payload,
        }
    }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being run (for messages).
    at: usize,
    stack: Vec<Node>,
    /// Stack lengths at each open `MARK`.
    marks: Vec<usize>,
    memo: HashMap<u64, Node>,
    budget: usize,
}

type R<T> = Result<T, PickleError>;

impl<'a> Machine<'a> {
    fn err(&self, reason: impl std::fmt::Display) -> PickleError {
        PickleError::new(format!("{reason} (opcode at byte {})", self.at))
    }

    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes; `what` names the field in the error.
    fn take(&mut self, n: usize, what: &str) -> R<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "{what}: needs {n} bytes, only {} remain",
                self.remaining()
            )));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> R<[u8; N]> {
        let b = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> R<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A length field of `width` bytes (1, 2, 4 or 8, little-endian), checked against the
    /// bytes that remain after it.
    fn len(&mut self, width: usize, what: &str) -> R<usize> {
        let v: u64 = match width {
            1 => u64::from(self.u8(what)?),
            2 => u64::from(u16::from_le_bytes(self.array(what)?)),
            4 => u64::from(u32::from_le_bytes(self.array(what)?)),
            _ => u64::from_le_bytes(self.array(what)?),
        };
        match usize::try_from(v) {
            Ok(n) if n <= self.remaining() => Ok(n),
            _ => Err(self.err(format!(
                "{what} length {v} exceeds the {} bytes that remain",
                self.remaining()
            ))),
        }
    }

    fn index(&mut self, width: usize, what: &str) -> R<u64> {
        Ok(match width {
            1 => u64::from(self.u8(what)?),
            _ => u64::from(u32::from_le_bytes(self.array(what)?)),
        })
    }

    fn line(&mut self, what: &str) -> R<&'a str> {
        let rest = &self.data[self.pos.min(self.data.len())..];
        let end = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or_else(|| self.err(format!("{what}: unterminated text line")))?;
        let text = std::str::from_utf8(&rest[..end])
            .map_err(|_| self.err(format!("{what}: invalid UTF-8")))?;
        self.pos += end + 1;
        Ok(text.strip_suffix('\r').unwrap_or(text))
    }

    fn utf8(&self, b: &[u8], what: &str) -> R<String> {
        String::from_utf8(b.to_vec()).map_err(|_| self.err(format!("{what}: invalid UTF-8")))
    }

    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    /// Pushes a new leaf value, charging its size against the budget.
    fn push(&mut self, value: Value) -> R<()> {
        let node = Node::leaf(value);
        self.charge(node.weight)?;
        self.stack.push(node);
        Ok(())
    }

    fn pop(&mut self) -> R<Node> {
        if self.stack.len() <= self.floor() {
            return Err(self.err("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.err("stack underflow"))
    }

    fn pop_mark(&mut self) -> R<Vec<Node>> {
        let at = self.marks.pop().ok_or_else(|| self.err("no MARK open"))?;
        if at > self.stack.len() {
            return Err(self.err("MARK above the stack"));
        }
        Ok(self.stack.split_off(at))
    }

    fn top_mut(&mut self) -> R<&mut Node> {
        if self.stack.len() <= self.floor() {
            return Err(self.err("stack underflow"));
        }
        let at = self.at;
        self.stack
            .last_mut()
            .ok_or_else(|| PickleError::new(format!("stack underflow (opcode at byte {at})")))
    }

    /// A container node built from `children`, checking the depth limit and charging one
    /// node against the budget (the children were charged when they were made).
    fn container(&mut self, children: &[&Node], value: Value) -> R<Node> {
        let depth = 1 + children.iter().map(|c| c.depth).max().unwrap_or(0);
        if depth > MAX_DEPTH {
            return Err(self.err(format!("values nested deeper than {MAX_DEPTH} levels")));
        }
        let weight = children
            .iter()
            .fold(NODE, |w, c| w.saturating_add(c.weight));
        self.charge(NODE)?;
        Ok(Node {
            value,
            depth,
            weight,
        })
    }

    fn seq(&mut self, items: Vec<Node>, list: bool) -> R<Node> {
        let refs: Vec<&Node> = items.iter().collect();
        let probe = self.container(&refs, Value::None)?;
        let values = items.into_iter().map(|n| n.value).collect();
        Ok(Node {
            value: if list {
                Value::List(values)
            } else {
                Value::Tuple(values)
            },
            ..probe
        })
    }

    /// Key / value pairs from alternating items, and the container node they make (its depth
    /// and weight; the value is filled by the caller).
    fn pairs(&mut self, items: Vec<Node>, what: &str) -> R<(Vec<(Value, Value)>, Node)> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err(format!("{what}: odd number of keys and values")));
        }
        let probe = {
            let refs: Vec<&Node> = items.iter().collect();
            self.container(&refs, Value::None)?
        };
        let mut pairs = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter().map(|n| n.value);
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            pairs.push((k, v));
        }
        Ok((pairs, probe))
    }

    /// Charges `weight` bytes (a new value or a copy) against the budget.
    fn charge(&mut self, weight: usize) -> R<()> {
        self.budget = self.budget.checked_sub(weight).ok_or_else(|| {
            self.err(format!(
                "values exceed the size budget of {} bytes for a {}-byte pickle (a value \
                 copied too often?)",
                copy_budget(self.data.len()),
                self.data.len()
            ))
        })?;
        Ok(())
    }

    fn memo_put(&mut self, i: u64) -> R<()> {
        let node = self.top_mut()?.clone();
        self.charge(node.weight)?;
        self.memo.insert(i, node);
        Ok(())
    }

    fn memo_get(&mut self, i: u64) -> R<()> {
        let node = self
            .memo
            .get(&i)
            .cloned()
            .ok_or_else(|| self.err(format!("memo entry {i} missing")))?;
        self.charge(node.weight)?;
        self.stack.push(node);
        Ok(())
    }

    /// An integer of `n` little-endian two's-complement bytes (LONG1 / LONG4).
    fn long(&mut self, n: usize) -> R<i64> {
        let b = self.take(n, "LONG integer")?;
        if n > 8 {
            return Err(self.err(format!("LONG integer of {n} bytes does not fit 64 bits")));
        }
        let mut a = [0u8; 8];
        a[..n].copy_from_slice(b);
        if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
            a[n..].fill(0xff);
        }
        Ok(i64::from_le_bytes(a))
    }

    fn run(mut self) -> R<Value> {
        loop {
            self.at = self.pos;
            let op = self
                .u8("opcode")
                .map_err(|_| self.err("truncated: no STOP"))?;
            match op {
                0x80 => {
                    self.u8("PROTO version")?;
                }
                0x95 => {
                    self.array::<8>("FRAME length")?;
                }
                b'.' => {
                    return Ok(self.pop()?.value);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let node = self.top_mut()?.clone();
                    self.charge(node.weight)?;
                    self.stack.push(node);
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'J' => {
                    let v = i32::from_le_bytes(self.array("BININT")?);
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'K' => {
                    let v = self.u8("BININT1")?;
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.array("BININT2")?);
                    self.push(Value::Int(i64::from(v)))?;
                }
                0x8a => {
                    let n = self.len(1, "LONG1")?;
                    let v = self.long(n)?;
                    self.push(Value::Int(v))?;
                }
                0x8b => {
                    let n = self.len(4, "LONG4")?;
                    let v = self.long(n)?;
                    self.push(Value::Int(v))?;
                }
                b'I' | b'L' => {
                    let s = self.line("INT")?;
                    let v = match s {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        _ => Value::Int(
                            s.trim()
                                .trim_end_matches('L')
                                .parse()
                                .map_err(|_| self.err(format!("bad INT {:?}", brief_str(s))))?,
                        ),
                    };
                    self.push(v)?;
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.array("BINFLOAT")?);
                    self.push(Value::Float(v))?;
                }
                b'F' => {
                    let s = self.line("FLOAT")?;
                    let v = s
                        .trim()
                        .parse()
                        .map_err(|_| self.err(format!("bad FLOAT {:?}", brief_str(s))))?;
                    self.push(Value::Float(v))?;
                }
                0x8c | b'X' | 0x8d => {
                    let (width, what) = match op {
                        0x8c => (1, "SHORT_BINUNICODE"),
                        b'X' => (4, "BINUNICODE"),
                        _ => (8, "BINUNICODE8"),
                    };
                    let n = self.len(width, what)?;
                    let b = self.take(n, what)?;
                    let s = self.utf8(b, what)?;
                    self.push(Value::Str(s))?;
                }
                b'C' | b'U' | b'B' | b'T' | 0x8e | 0x96 => {
                    let (width, what) = match op {
                        b'C' => (1, "SHORT_BINBYTES"),
                        b'U' => (1, "SHORT_BINSTRING"),
                        b'B' => (4, "BINBYTES"),
                        b'T' => (4, "BINSTRING"),
                        0x8e => (8, "BINBYTES8"),
                        _ => (8, "BYTEARRAY8"),
                    };
                    let n = self.len(width, what)?;
                    let b = self.take(n, what)?.to_vec();
                    self.push(Value::Bytes(b))?;
                }
                b')' => self.push(Value::Tuple(Vec::new()))?,
                b't' => {
                    let items = self.pop_mark()?;
                    let node = self.seq(items, false)?;
                    self.stack.push(node);
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let floor = self.floor();
                    if self.stack.len() < floor + n {
                        return Err(self.err(format!("TUPLE{n} needs {n} values")));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    let node = self.seq(items, false)?;
                    self.stack.push(node);
                }
                b']' => self.push(Value::List(Vec::new()))?,
                b'l' => {
                    let items = self.pop_mark()?;
                    let node = self.seq(items, true)?;
                    self.stack.push(node);
                }
                b'a' | b'e' => {
                    let items = if op == b'a' {
                        vec![self.pop()?]
                    } else {
                        self.pop_mark()?
                    };
                    let probe = {
                        let refs: Vec<&Node> = items.iter().collect();
                        self.container(&refs, Value::None)?
                    };
                    let at = self.at;
                    let top = self.top_mut()?;
                    let Value::List(list) = &mut top.value else {
                        let kind = top.value.brief();
                        return Err(PickleError::new(format!(
                            "APPEND to {kind}, not a list (opcode at byte {at})"
                        )));
                    };
                    list.extend(items.into_iter().map(|n| n.value));
                    top.depth = top.depth.max(probe.depth);
                    top.weight = top.weight.saturating_add(probe.weight - NODE);
                }
                b'}' => self.push(Value::Dict(Vec::new()))?,
                b'd' => {
                    let items = self.pop_mark()?;
                    let (pairs, probe) = self.pairs(items, "DICT")?;
                    self.stack.push(Node {
                        value: Value::Dict(pairs),
                        ..probe
                    });
                }
                b's' | b'u' => {
                    let items = if op == b's' {
                        let v = self.pop()?;
                        let k = self.pop()?;
                        vec![k, v]
                    } else {
                        self.pop_mark()?
                    };
                    let (pairs, probe) = self.pairs(items, "SETITEMS")?;
                    let at = self.at;
                    let top = self.top_mut()?;
                    let Value::Dict(dict) = &mut top.value else {
                        let kind = top.value.brief();
                        return Err(PickleError::new(format!(
                            "SETITEM on {kind}, not a dict (opcode at byte {at})"
                        )));
                    };
                    dict.extend(pairs);
                    top.depth = top.depth.max(probe.depth);
                    top.weight = top.weight.saturating_add(probe.weight - NODE);
                }
                b'c' => {
                    let module = self.line("GLOBAL module")?.to_string();
                    let name = self.line("GLOBAL name")?.to_string();
                    self.push(Value::Global { module, name })?;
                }
                0x93 => {
                    let name = self.pop()?.value;
                    let module = self.pop()?.value;
                    match (module, name) {
                        (Value::Str(module), Value::Str(name)) => {
                            self.push(Value::Global { module, name })?
                        }
                        _ => return Err(self.err("STACK_GLOBAL needs two strings")),
                    }
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let node = match &callable.value {
                        // `collections.OrderedDict()` (a state dict): a plain dict, so that the
                        // following SETITEMS can fill it.
                        Value::Global { module, name }
                            if module == "collections"
                                && (name == "OrderedDict" || name == "defaultdict") =>
                        {
                            let node = Node::leaf(Value::Dict(Vec::new()));
                            self.charge(node.weight)?;
                            node
                        }
                        _ => {
                            let probe = self.container(&[&callable, &args], Value::None)?;
                            Node {
                                value: Value::Reduce {
                                    callable: Box::new(callable.value),
                                    args: Box::new(args.value),
                                },
                                ..probe
                            }
                        }
                    };
                    self.stack.push(node);
                }
                b'b' => {
                    let state = self.pop()?;
                    let object = self.pop()?;
                    let probe = self.container(&[&object, &state], Value::None)?;
                    self.stack.push(Node {
                        value: Value::Build {
                            object: Box::new(object.value),
                            state: Box::new(state.value),
                        },
                        ..probe
                    });
                }
                b'Q' => {
                    let id = self.pop()?;
                    let probe = self.container(&[&id], Value::None)?;
                    self.stack.push(Node {
                        value: Value::PersId(Box::new(id.value)),
                        ..probe
                    });
                }
                b'P' => {
                    let id = self.line("PERSID")?.to_string();
                    let id = Node::leaf(Value::Str(id));
                    self.charge(id.weight)?;
                    let probe = self.container(&[&id], Value::None)?;
                    self.stack.push(Node {
                        value: Value::PersId(Box::new(id.value)),
                        ..probe
                    });
                }
                0x94 => {
                    let i = self.memo.len() as u64;
                    self.memo_put(i)?;
                }
                b'q' | b'r' => {
                    let i = self.index(if op == b'q' { 1 } else { 4 }, "PUT index")?;
                    self.memo_put(i)?;
                }
                b'p' => {
                    let s = self.line("PUT")?;
                    let i = s
                        .trim()
                        .parse()
                        .map_err(|_| self.err(format!("bad PUT index {:?}", brief_str(s))))?;
                    self.memo_put(i)?;
                }
                b'h' | b'j' => {
                    let i = self.index(if op == b'h' { 1 } else { 4 }, "GET index")?;
                    self.memo_get(i)?;
                }
                b'g' => {
                    let s = self.line("GET")?;
                    let i = s
                        .trim()
                        .parse()
                        .map_err(|_| self.err(format!("bad GET index {:?}", brief_str(s))))?;
                    self.memo_get(i)?;
                }
                other => {
                    return Err(self.err(format!("unsupported pickle opcode 0x{other:02x}")));
                }
            }
        }
    }
}

fn brief_str(s: &str) -> String {
    s.chars().take(32).collect()
}

/// Runs a pickle and returns the value it stops with.
///
/// # Errors
/// A [`PickleError`] naming the opcode and byte offset at fault: truncation, a length field
/// beyond the data, an unsupported opcode, stack / memo misuse, nesting deeper than
/// [`MAX_DEPTH`], or copies beyond [`copy_budget`].
pub fn unpickle(data: &[u8]) -> Result<Value, PickleError> {
    Machine {
        data,
        pos: 0,
        at: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        budget: copy_budget(data.len()),
    }
    .run()
}

/// A tensor of a `torch.save` archive: a `torch._utils._rebuild_tensor_v2(storage,
/// storage_offset, size, stride, ...)` call whose storage is the persistent id
/// `('storage', torch.<Type>Storage, key, location, numel)`. Every size is validated: the
/// element count fits `usize` and the strided extent lies inside the declared storage.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTensor {
    /// The storage key: its bytes are the archive member `<dir>/<key>` (`<dir>` is the
    /// `data.pkl` path without `.pkl`).
    pub key: String,
    /// The storage class name, e.g. `FloatStorage`.
    pub storage_class: String,
    /// Its element type, when candle has one for it (`None` for `BoolStorage`, ...).
    pub dtype: Option<DType>,
    /// Elements in the storage (the persistent id's `numel`).
    pub storage_len: usize,
    /// First element of the tensor in the storage.
    pub offset: usize,
    /// The tensor shape.
    pub shape: Vec<usize>,
    /// Strides in elements, one per dimension.
    pub stride: Vec<usize>,
    /// Number of elements (the product of `shape`).
    pub elem_count: usize,
    /// One past the last storage element the tensor reads (`offset` when it is empty).
    pub end: usize,
}

impl StoredTensor {
    /// Whether the elements are stored in C order without gaps.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&d, &s) in self.shape.iter().zip(&self.stride).rev() {
            if d > 1 && s != expected {
                return false;
            }
            // Cannot overflow: the product of the non-zero dimensions was checked.
            expected = expected.saturating_mul(d.max(1));
        }
        true
    }

    /// Bytes per element of the storage type, when known.
    pub fn elem_size(&self) -> Option<usize> {
        self.dtype.map(|d| d.size_in_bytes())
    }
}

/// The candle type of a torch storage class.
fn storage_dtype(class: &str) -> Option<DType> {
    Some(match class {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "ByteStorage" => DType::U8,
        "LongStorage" => DType::I64,
        _ => return None,
    })
}

fn field_usize(v: &Value, what: &str) -> Result<usize, PickleError> {
    match v {
        Value::Int(i) => {
            usize::try_from(*i).map_err(|_| PickleError::new(format!("{what} = {i} is negative")))
        }
        other => Err(PickleError::new(format!(
            "{what} is {}, expected an int",
            other.brief()
        ))),
    }
}

fn field_dims(v: &Value, what: &str) -> Result<Vec<usize>, PickleError> {
    match v {
        Value::Tuple(items) | Value::List(items) => items
            .iter()
            .enumerate()
            .map(|(i, x)| field_usize(x, &format!("{what}[{i}]")))
            .collect(),
        other => Err(PickleError::new(format!(
            "{what} is {}, expected a tuple of ints",
            other.brief()
        ))),
    }
}

/// Interprets `v` as a stored tensor: `Ok(None)` when it is not a tensor rebuild call
/// (`_rebuild_tensor_v2`, possibly wrapped in `_rebuild_parameter` or
/// `_rebuild_from_type_v2`), an error naming the field when it is one but malformed.
pub fn stored_tensor(v: &Value) -> Result<Option<StoredTensor>, PickleError> {
    let Value::Reduce { callable, args } = v else {
        return Ok(None);
    };
    let Value::Global { module, name } = callable.as_ref() else {
        return Ok(None);
    };
    let args = match args.as_ref() {
        Value::Tuple(a) => a.as_slice(),
        _ => &[],
    };
    match (module.as_str(), name.as_str()) {
        // _rebuild_parameter(data, requires_grad, backward_hooks)
        ("torch._utils", "_rebuild_parameter") => match args.first() {
            Some(inner @ Value::Reduce { .. }) => match stored_tensor_inner(inner)? {
                Some(t) => Ok(Some(t)),
                None => Err(PickleError::new(
                    "_rebuild_parameter does not wrap a tensor".to_string(),
                )),
            },
            _ => Err(PickleError::new(
                "_rebuild_parameter without a tensor argument",
            )),
        },
        // _rebuild_from_type_v2(func, new_type, args, state)
        ("torch._tensor", "_rebuild_from_type_v2") => match args {
            [func, _, inner_args, ..] => stored_tensor_inner(&Value::Reduce {
                callable: Box::new(func.clone()),
                args: Box::new(inner_args.clone()),
            }),
            _ => Err(PickleError::new(format!(
                "_rebuild_from_type_v2 takes 4 arguments, got {}",
                args.len()
            ))),
        },
        _ => stored_tensor_inner(v),
    }
}

fn stored_tensor_inner(v: &Value) -> Result<Option<StoredTensor>, PickleError> {
    let Value::Reduce { callable, args } = v else {
        return Ok(None);
    };
    match callable.as_ref() {
        Value::Global { module, name }
            if module == "torch._utils" && name == "_rebuild_tensor_v2" => {}
        _ => return Ok(None),
    }
    let args = match args.as_ref() {
        Value::Tuple(a) if a.len() >= 4 => a,
        other => {
            return Err(PickleError::new(format!(
                "_rebuild_tensor_v2 arguments are {}, expected (storage, storage_offset, size, \
                 stride, ...)",
                other.brief()
            )));
        }
    };
    let storage = match &args[0] {
        Value::PersId(id) => match id.as_ref() {
            Value::Tuple(s) if s.len() >= 5 => s,
            other => {
                return Err(PickleError::new(format!(
                    "storage id is {}, expected ('storage', class, key, location, numel)",
                    other.brief()
                )));
            }
        },
        other => {
            return Err(PickleError::new(format!(
                "storage is {}, expected a persistent id",
                other.brief()
            )));
        }
    };
    let storage_class = match &storage[1] {
        Value::Global { name, .. } => name.clone(),
        other => {
            return Err(PickleError::new(format!(
                "storage class is {}, expected a global",
                other.brief()
            )));
        }
    };
    let key = match &storage[2] {
        Value::Str(k) => k.clone(),
        other => {
            return Err(PickleError::new(format!(
                "storage key is {}, expected a string",
                other.brief()
            )));
        }
    };
    let storage_len = field_usize(&storage[4], "storage numel")?;
    let offset = field_usize(&args[1], "storage_offset")?;
    let shape = field_dims(&args[2], "size")?;
    let stride = field_dims(&args[3], "stride")?;
    if stride.len() != shape.len() {
        return Err(PickleError::new(format!(
            "size has {} dimensions but stride has {}",
            shape.len(),
            stride.len()
        )));
    }
    // The product of the non-zero dimensions must fit, so that no product of a subset can
    // overflow anywhere later (candle multiplies shapes unchecked).
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d.max(1)))
        .ok_or_else(|| {
            PickleError::new(format!(
                "size {shape:?} has more elements than fit in memory"
            ))
        })?;
    let elem_count: usize = shape.iter().product();
    let end = if elem_count == 0 {
        offset
    } else {
        // offset + sum((d - 1) * s) + 1, checked.
        shape
            .iter()
            .zip(&stride)
            .try_fold(offset, |acc, (&d, &s)| {
                (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
            })
            .and_then(|last| last.checked_add(1))
            .ok_or_else(|| {
                PickleError::new(format!(
                    "size {shape:?} with stride {stride:?} at storage_offset {offset} overflows"
                ))
            })?
    };
    if end > storage_len {
        return Err(PickleError::new(format!(
            "size {shape:?} with stride {stride:?} at storage_offset {offset} reaches element \
             {end}, but storage {key:?} holds {storage_len} elements"
        )));
    }
    let dtype = storage_dtype(&storage_class);
    if let Some(d) = dtype {
        storage_len.checked_mul(d.size_in_bytes()).ok_or_else(|| {
            PickleError::new(format!(
                "storage numel {storage_len} of {storage_class} overflows a byte count"
            ))
        })?;
    }
    Ok(Some(StoredTensor {
        key,
        storage_class,
        dtype,
        storage_len,
        offset,
        shape,
        stride,
        elem_count,
        end,
    }))
}

/// Reads at most `limit` bytes of `r`, growing the buffer only as bytes arrive: a size
/// declared by a header is never trusted for an allocation.
pub fn read_up_to(r: &mut impl Read, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let mut left = limit;
    while left > 0 {
        // At most the chunk length: the cast cannot truncate.
        let want = left.min(chunk.len() as u64) as usize;
        let n = match r.read(&mut chunk[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.extend_from_slice(&chunk[..n]);
        left -= n as u64;
    }
    Ok(out)
}

/// Opens archive member `name` and returns it with its declared (uncompressed) size, after
/// checking that a compressed member does not claim to expand more than 64-fold (real torch
/// archives store members uncompressed): reads are then bounded by the archive's size.
fn open_member<'z, Z: Read + std::io::Seek>(
    zip: &'z mut zip::ZipArchive<Z>,
    name: &str,
) -> Result<(zip::read::ZipFile<'z, Z>, u64), PickleError> {
    let member = zip
        .by_name(name)
        .map_err(|e| PickleError::new(format!("record {name}: {e}")))?;
    let declared = member.size();
    if member.compression() != zip::CompressionMethod::Stored
        && declared
            > member
                .compressed_size()
                .saturating_mul(64)
                .saturating_add(1 << 20)
    {
        return Err(PickleError::new(format!(
            "record {name} declares {declared} bytes from {} compressed bytes",
            member.compressed_size()
        )));
    }
    Ok((member, declared))
}

/// Reads the whole archive member `name` (e.g. `data.pkl`): at most its declared size, which
/// for a compressed member is at most 64 times its stored bytes.
///
/// # Errors
/// The member is missing, claims an implausible expansion, or cannot be read.
pub fn read_member<Z: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<Z>,
    name: &str,
) -> Result<Vec<u8>, PickleError> {
    let (mut member, declared) = open_member(zip, name)?;
    read_up_to(&mut member, declared).map_err(|e| PickleError::new(format!("record {name}: {e}")))
}

/// Reads the bytes of storage elements `t.offset .. t.end` from the archive member
/// `<dir>/<key>`, after checking that the member is large enough for the whole declared
/// storage.
///
/// # Errors
/// The storage type is unknown, the member is missing, smaller than the declared storage, or
/// shorter than it claims.
pub fn read_storage<Z: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<Z>,
    dir: &str,
    t: &StoredTensor,
) -> Result<Vec<u8>, PickleError> {
    let size = t
        .elem_size()
        .ok_or_else(|| PickleError::new(format!("unsupported storage type {}", t.storage_class)))?;
    let name = format!("{dir}/{}", t.key);
    let bytes_of = |n: usize, what: &str| {
        n.checked_mul(size)
            .ok_or_else(|| PickleError::new(format!("{what} {n} of {} overflows", t.key)))
    };
    let storage_bytes = bytes_of(t.storage_len, "storage numel")?;
    let (start, end) = (bytes_of(t.offset, "offset")?, bytes_of(t.end, "extent")?);
    if start > end || end > storage_bytes {
        return Err(PickleError::new(format!(
            "elements {}..{} lie outside storage {:?} of {} elements",
            t.offset, t.end, t.key, t.storage_len
        )));
    }
    let (mut member, declared) =
        open_member(zip, &name).map_err(|e| PickleError::new(format!("storage {e}")))?;
    if storage_bytes as u64 > declared {
        return Err(PickleError::new(format!(
            "storage record {name} holds {declared} bytes, but its numel {} of {} needs \
             {storage_bytes}",
            t.storage_len, t.storage_class
        )));
    }
    let skipped = std::io::copy(
        &mut member.by_ref().take(start as u64),
        &mut std::io::sink(),
    )
    .map_err(|e| PickleError::new(format!("storage record {name}: {e}")))?;
    let bytes = read_up_to(&mut member, (end - start) as u64)
        .map_err(|e| PickleError::new(format!("storage record {name}: {e}")))?;
    if skipped != start as u64 || bytes.len() != end - start {
        return Err(PickleError::new(format!(
            "storage record {name} is truncated: holds {} of the bytes {start}..{end}",
            skipped as usize + bytes.len()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_length_fields_are_errors() {
        for op in [0x8eu8, 0x8d, 0x96] {
            let mut p = vec![0x80, 4, op];
            p.extend_from_slice(&u64::MAX.to_le_bytes());
            p.extend_from_slice(b"abc.");
            let e = unpickle(&p).expect_err("huge length");
            assert!(e.reason.contains("length"), "{e}");
        }
        let e = unpickle(b"X\xff\xff\xff\xffab.").expect_err("BINUNICODE");
        assert!(e.reason.contains("BINUNICODE"), "{e}");
    }

    #[test]
    fn nesting_is_bounded() {
        let mut p = b"]".to_vec();
        p.extend(std::iter::repeat_n(0x85u8, 10_000));
        p.push(b'.');
        let e = unpickle(&p).expect_err("deep");
        assert!(e.reason.contains("nested"), "{e}");
    }

    #[test]
    fn memo_copies_are_bounded() {
        // A 1 MiB byte string copied by 4-byte GET/POP pairs.
        let mut p = vec![b'B'];
        p.extend_from_slice(&(1u32 << 20).to_le_bytes());
        p.extend(std::iter::repeat_n(0u8, 1 << 20));
        p.extend_from_slice(b"q\x00");
        for _ in 0..100_000 {
            p.extend_from_slice(b"h\x000");
        }
        p.push(b'.');
        let e = unpickle(&p).expect_err("bomb");
        assert!(e.reason.contains("budget"), "{e}");
    }

    #[test]
    fn dup_copies_are_bounded() {
        // A 64 KiB string duplicated by one-byte DUPs: 64 KiB per input byte.
        let mut p = vec![b'X'];
        p.extend_from_slice(&(1u32 << 16).to_le_bytes());
        p.extend(std::iter::repeat_n(b'a', 1 << 16));
        p.extend(std::iter::repeat_n(b'2', 100_000));
        p.push(b'.');
        let e = unpickle(&p).expect_err("dup flood");
        assert!(e.reason.contains("budget"), "{e}");
    }

    #[test]
    fn long_decodes_signed_values() -> Result<(), PickleError> {
        assert_eq!(unpickle(b"\x8a\x02\xff\xfe.")?, Value::Int(-257));
        assert_eq!(unpickle(b"\x8a\x00.")?, Value::Int(0));
        assert!(unpickle(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.").is_err());
        Ok(())
    }
}
