//! Seeded mutation testing of file readers, on stable Rust without a fuzzing engine.
//!
//! A test starts from valid bytes, derives a few thousand deterministic variants from a seeded
//! generator ([`mutate_bytes`], [`mutate_pickle`], [`mutate_npy_header`] and the field
//! locators [`pickle_ops`], [`zip_fields`]) and runs the reader on each inside a [`Campaign`],
//! which fails on a panic and on an allocation far above the input size.
//!
//! # Catching huge allocations without crashing the test
//! A reader that sizes a buffer from an unchecked header field asks for gigabytes; under an
//! address-space limit that aborts the process (`handle_alloc_error`), which no `catch_unwind`
//! can intercept. The test binary therefore installs [`CappedAlloc`] as its
//! `#[global_allocator]`:
//! - it counts, per thread, the largest single request and the peak of live bytes, which
//!   [`measure`] reads around one case; [`Campaign::case`] then fails the case (with its
//!   description, not a crash) when either exceeds [`alloc_bound`] (64 x the input size +
//!   64 MiB), far above what a valid file needs;
//! - requests above its hard cap (e.g. 1 GiB, above the bound of every input used here)
//!   return null instead of reaching the system: Rust then aborts with "memory allocation of
//!   N bytes failed", a visible failure instead of the machine swapping or the kernel killing
//!   another process. Such a request is always a bug (the bound is lower), so the abort is
//!   only the last line of defence; the recorded counters catch everything below it.
//!
//! Further generators mutate the other formats the workspace reads: [`mutate_safetensors`]
//! (the JSON header of a `.safetensors` file), [`mutate_json`] (configuration files),
//! [`mutate_text`] (split, caption and prompt files); [`zip_members`], [`stored_zip`],
//! [`torch_state_dict`] and [`npy_file`] take valid files apart and build small ones, and
//! [`Scratch`] is a temporary folder for readers that take paths. With `MUTATE_TRACE=1` in the
//! environment each case is printed before it runs ([`trace`]), which names the case that
//! aborted a binary.
//!
//! Counters are thread-local (`const`-initialised `Cell`s, which never allocate), so the
//! harness's parallel tests do not disturb each other; work a reader hands to other threads
//! is not counted (none of the readers tested here does).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Display;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A deterministic 64-bit generator (SplitMix64), for crates without `rand`.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A source of random 64-bit values: any `FnMut() -> u64`, e.g. `|| rng.next_u64()` over a
/// seeded `rand::rngs::StdRng`.
pub trait Draw {
    /// The next value.
    fn next_u64(&mut self) -> u64;

    /// A value in `0..n` (0 when `n == 0`).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// One element of a non-empty slice.
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

impl<F: FnMut() -> u64> Draw for F {
    fn next_u64(&mut self) -> u64 {
        self()
    }
}

// ---------------------------------------------------------------------------------------------
// Allocation accounting.

static REFUSED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add(size as isize);
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

fn note_free(size: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(size as isize)));
}

/// A `#[global_allocator]` for mutation-test binaries: the system allocator, counting per
/// thread, refusing (null) any single request above `cap` bytes (see the module docs).
#[derive(Debug)]
pub struct CappedAlloc {
    /// Largest single request served.
    pub cap: usize,
}

impl CappedAlloc {
    fn refuse(&self, size: usize) -> bool {
        if size > self.cap {
            REFUSED.fetch_max(size, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

// SAFETY: every call is forwarded to `System` with the caller's layout, or answered with null
// (allowed by the `GlobalAlloc` contract); the bookkeeping never allocates.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.refuse(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's (valid, non-zero-size) layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note_alloc(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if self.refuse(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note_alloc(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_free(layout.size());
        // SAFETY: `ptr` was allocated by `System` with this layout (all our blocks are).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if self.refuse(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged; on null the old block stays valid and counted.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note_free(layout.size());
            note_alloc(new_size);
        }
        p
    }
}

/// Memory used by one case on the current thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Largest single allocation request.
    pub largest: usize,
    /// Peak of live bytes above the level at the start.
    pub peak: usize,
}

/// Runs `f`, returning its result and the allocations it made on this thread (all zero when
/// [`CappedAlloc`] is not the global allocator).
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Usage) {
    let base = LIVE.with(Cell::get);
    LARGEST.with(|l| l.set(0));
    PEAK.with(|p| p.set(base));
    let out = f();
    let usage = Usage {
        largest: LARGEST.with(Cell::get),
        peak: (PEAK.with(Cell::get) - base).max(0) as usize,
    };
    (out, usage)
}

/// Whether allocations are being counted (the binary installed [`CappedAlloc`]).
pub fn tracking() -> bool {
    let (v, usage) = measure(|| std::hint::black_box(vec![1u8; 1 << 16]));
    drop(v);
    usage.largest >= 1 << 16
}

/// Largest request [`CappedAlloc`] refused so far in this process (0 if none).
pub fn refused() -> usize {
    REFUSED.load(Ordering::Relaxed)
}

/// The most one case may allocate (largest request and peak live bytes) for an input of
/// `input_len` bytes: 64 x the input + 64 MiB.
pub fn alloc_bound(input_len: usize) -> usize {
    input_len.saturating_mul(64).saturating_add(64 << 20)
}

// ---------------------------------------------------------------------------------------------
// Running cases.

/// Whether `MUTATE_TRACE` is set: [`Campaign::case`] then prints each case's description
/// before running it, so that the case that aborts a binary (a refused allocation, a stack
/// overflow) is the last line printed.
pub fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("MUTATE_TRACE").is_some_and(|v| !v.is_empty()))
}

/// A series of cases for one reader: counts outcomes, records panics, unexpected error
/// messages, allocations above [`alloc_bound`] and cases slower than the time limit.
#[derive(Debug)]
pub struct Campaign {
    name: String,
    /// Text every error message must contain (e.g. the file name), if any.
    must_name: Option<String>,
    tried: usize,
    ok: usize,
    err: usize,
    worst: Usage,
    slowest: std::time::Duration,
    time_limit: std::time::Duration,
    failures: Vec<String>,
}

impl Campaign {
    /// A campaign named `name` (the reader under test).
    pub fn new(name: &str) -> Campaign {
        Campaign {
            name: name.to_string(),
            must_name: None,
            tried: 0,
            ok: 0,
            err: 0,
            worst: Usage {
                largest: 0,
                peak: 0,
            },
            slowest: std::time::Duration::ZERO,
            time_limit: std::time::Duration::from_secs(1),
            failures: Vec::new(),
        }
    }

    /// Sets the longest one case may take (1 s unless set).
    pub fn time_limit(mut self, limit: std::time::Duration) -> Campaign {
        self.time_limit = limit;
        self
    }

    /// Requires every error message to contain `text` (e.g. the file name).
    pub fn errors_must_name(mut self, text: &str) -> Campaign {
        self.must_name = Some(text.to_string());
        self
    }

    /// Runs one case: `f` must return `Ok` or `Err` without panicking, stay under
    /// [`alloc_bound`] of `input_len` and finish within the time limit
    /// ([`Campaign::time_limit`], 1 s by default). `what` describes the mutation for the report. Returns
    /// the error message when `f` returned an error (for further checks, see
    /// [`Campaign::fail`]).
    pub fn case<T, E: Display>(
        &mut self,
        what: &str,
        input_len: usize,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Option<String> {
        let mut message = None;
        self.tried += 1;
        if trace() {
            eprintln!("{} case {}: {what}", self.name, self.tried);
        }
        let start = std::time::Instant::now();
        let (outcome, usage) =
            measure(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        let took = start.elapsed();
        self.slowest = self.slowest.max(took);
        if took > self.time_limit {
            self.failures.push(format!(
                "{what}: took {took:?}, more than {:?}",
                self.time_limit
            ));
        }
        self.worst.largest = self.worst.largest.max(usage.largest);
        self.worst.peak = self.worst.peak.max(usage.peak);
        match outcome {
            Ok(Ok(_)) => self.ok += 1,
            Ok(Err(e)) => {
                self.err += 1;
                let msg = e.to_string();
                if let Some(text) = &self.must_name
                    && !msg.contains(text.as_str())
                {
                    self.failures.push(format!(
                        "{what}: error does not name {text:?}: {}",
                        msg.chars().take(300).collect::<String>()
                    ));
                }
                message = Some(msg);
            }
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                self.failures.push(format!("{what}: PANIC {msg}"));
            }
        }
        let bound = alloc_bound(input_len);
        if usage.largest > bound || usage.peak > bound {
            self.failures.push(format!(
                "{what}: allocated {} bytes at once, {} live at peak, for {input_len} input \
                 bytes (bound {bound})",
                usage.largest, usage.peak
            ));
        }
        message
    }

    /// Records a failure found by the caller's own checks.
    pub fn fail(&mut self, why: String) {
        self.failures.push(why);
    }

    /// Number of cases run so far.
    pub fn tried(&self) -> usize {
        self.tried
    }

    /// Prints the counts (`eprintln`) and returns an error listing the first failures.
    pub fn finish(self) -> Result<usize, String> {
        eprintln!(
            "mutation campaign {}: {} mutations tried ({} Ok, {} Err), largest allocation {} \
             bytes, peak live {} bytes, slowest case {:?}, {} failures",
            self.name,
            self.tried,
            self.ok,
            self.err,
            self.worst.largest,
            self.worst.peak,
            self.slowest,
            self.failures.len()
        );
        if self.failures.is_empty() {
            Ok(self.tried)
        } else {
            let shown: Vec<&str> = self.failures.iter().take(12).map(String::as_str).collect();
            Err(format!(
                "{}: {} of {} mutations failed:\n{}",
                self.name,
                self.failures.len(),
                self.tried,
                shown.join("\n")
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Generic byte mutations.

/// A little-endian integer field located in a file (a length, a count, an offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Byte offset.
    pub pos: usize,
    /// Width in bytes (1, 2, 4 or 8).
    pub width: usize,
}

/// The values a length / shape field is set to: 0, 1, -1 (all ones, i.e. 2^64-1 for 8
/// bytes), 2^31, 2^31-1, 2^32, 2^63, 2^63-1, the width's signed extremes.
pub const SPECIAL_VALUES: [u64; 12] = [
    0,
    1,
    u64::MAX,
    1 << 31,
    (1 << 31) - 1,
    1 << 32,
    1 << 63,
    (1 << 63) - 1,
    0x4000_0000_0000_0000,
    0xffff_ffff,
    0x8000,
    0x7fff,
];

/// Writes the low `f.width` bytes of `v` at `f.pos` (little-endian).
pub fn set_field(bytes: &mut [u8], f: Field, v: u64) {
    let le = v.to_le_bytes();
    if let Some(dst) = bytes.get_mut(f.pos..f.pos + f.width) {
        dst.copy_from_slice(&le[..f.width]);
    }
}

/// NaN / infinity bit patterns (f32 and f64, little-endian).
const FLOAT_PATTERNS: [&[u8]; 6] = [
    &[0x00, 0x00, 0xc0, 0x7f],
    &[0x00, 0x00, 0x80, 0x7f],
    &[0x00, 0x00, 0x80, 0xff],
    &[0, 0, 0, 0, 0, 0, 0xf8, 0x7f],
    &[0, 0, 0, 0, 0, 0, 0xf0, 0x7f],
    &[0, 0, 0, 0, 0, 0, 0xf0, 0xff],
];

const SPECIAL_BYTES: [u8; 8] = [0x00, 0xff, 0x80, 0x7f, b'\n', b'(', b'.', 0xc3];

/// Truncation lengths: every length up to 96 bytes, then `extra` spread over the rest.
pub fn truncation_lengths(len: usize, extra: usize) -> Vec<usize> {
    let mut out: Vec<usize> = (0..len.min(96)).collect();
    if len > 96 {
        for k in 0..extra {
            out.push(96 + (len - 96) * k / extra.max(1));
        }
    }
    out.dedup();
    out
}

/// One random mutation of `base`: bit flips, truncation, a located `field` set to a special
/// value, byte overwrites, deleted / inserted / duplicated chunks, NaN / Inf payloads.
/// Returns a description and the mutated bytes.
pub fn mutate_bytes(base: &[u8], fields: &[Field], d: &mut impl Draw) -> (String, Vec<u8>) {
    let mut b = base.to_vec();
    let n = b.len().max(1);
    let kind = d.below(8);
    let what = match kind {
        0 => {
            let flips = 1 + d.below(4);
            let mut at = Vec::new();
            for _ in 0..flips {
                let i = d.below(n);
                let bit = d.below(8);
                if let Some(x) = b.get_mut(i) {
                    *x ^= 1 << bit;
                }
                at.push(format!("{i}.{bit}"));
            }
            format!("bit flips at {}", at.join(","))
        }
        1 => {
            let len = d.below(n);
            b.truncate(len);
            format!("truncated to {len}")
        }
        2 if !fields.is_empty() => {
            let f = *d.pick(fields);
            let v = *d.pick(&SPECIAL_VALUES);
            set_field(&mut b, f, v);
            format!("field at {} (width {}) set to {v:#x}", f.pos, f.width)
        }
        3 | 2 => {
            let i = d.below(n);
            let v = *d.pick(&SPECIAL_BYTES);
            if let Some(x) = b.get_mut(i) {
                *x = v;
            }
            format!("byte {i} set to {v:#04x}")
        }
        4 => {
            let i = d.below(n);
            let len = (1 + d.below(16)).min(b.len().saturating_sub(i));
            b.drain(i..i + len);
            format!("deleted {len} bytes at {i}")
        }
        5 => {
            let i = d.below(n).min(b.len());
            let len = 1 + d.below(16);
            let fill = *d.pick(&SPECIAL_BYTES);
            b.splice(i..i, std::iter::repeat_n(fill, len));
            format!("inserted {len} x {fill:#04x} at {i}")
        }
        6 => {
            let from = d.below(n).min(b.len());
            let len = (1 + d.below(64)).min(b.len() - from);
            let to = d.below(n).min(b.len());
            let chunk = b[from..from + len].to_vec();
            b.splice(to..to, chunk);
            format!("copied {len} bytes from {from} to {to}")
        }
        _ => {
            let p = *d.pick(&FLOAT_PATTERNS);
            let i = d.below(n) & !3;
            if let Some(dst) = b.get_mut(i..i + p.len()) {
                dst.copy_from_slice(p);
            }
            format!("NaN/Inf pattern {p:02x?} at {i}")
        }
    };
    (what, b)
}

// ---------------------------------------------------------------------------------------------
// Pickle streams.

/// One opcode of a pickle stream with its argument fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickleOp {
    /// Offset of the opcode byte.
    pub pos: usize,
    /// The opcode.
    pub op: u8,
    /// Its length field (strings, bytes, LONG1 / LONG4).
    pub len: Option<Field>,
    /// Its integer argument (BININT*, memo indices).
    pub int: Option<Field>,
    /// Its payload (string / bytes contents, text lines).
    pub payload: Option<Range<usize>>,
    /// Offset after the op and its arguments.
    pub end: usize,
}

/// Splits a pickle stream into opcodes (stops at STOP, at an unknown opcode or at the end).
pub fn pickle_ops(p: &[u8]) -> Vec<PickleOp> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < p.len() {
        let op = p[pos];
        let a = pos + 1;
        let mut rec = PickleOp {
            pos,
            op,
            len: None,
            int: None,
            payload: None,
            end: a,
        };
        let fixed = |w: usize| Field { pos: a, width: w };
        let lenw = match op {
            0x8a | 0x8c | b'C' | b'U' => Some(1),
            b'X' | b'B' | b'T' | 0x8b => Some(4),
            0x8d | 0x8e | 0x96 => Some(8),
            _ => None,
        };
        if let Some(w) = lenw {
            let Some(lb) = p.get(a..a + w) else { break };
            let mut le = [0u8; 8];
            le[..w].copy_from_slice(lb);
            let n = u64::from_le_bytes(le) as usize;
            let start = a + w;
            let Some(end) = start.checked_add(n).filter(|&e| e <= p.len()) else {
                break;
            };
            rec.len = Some(fixed(w));
            rec.payload = Some(start..end);
            rec.end = end;
        } else {
            let w = match op {
                0x80 | b'K' | b'q' | b'h' => 1,
                b'M' => 2,
                b'J' | b'r' | b'j' => 4,
                0x95 | b'G' => 8,
                _ => 0,
            };
            let lines = match op {
                b'c' => 2,
                b'I' | b'L' | b'F' | b'p' | b'g' | b'P' | b'S' | b'V' => 1,
                _ => 0,
            };
            let known = w > 0
                || lines > 0
                || b"(.0 12N)t]l}dasuebRQ".contains(&op)
                || matches!(op, 0x81 | 0x85..=0x89 | 0x8f..=0x94 | 0x97 | 0x98);
            if !known {
                break;
            }
            if w > 0 {
                if a + w > p.len() {
                    break;
                }
                if !matches!(op, 0x80 | 0x95 | b'G') {
                    rec.int = Some(fixed(w));
                }
                rec.end = a + w;
            }
            let mut e = a;
            for _ in 0..lines {
                match p[e.min(p.len())..].iter().position(|&c| c == b'\n') {
                    Some(k) => e += k + 1,
                    None => return out,
                }
            }
            if lines > 0 {
                rec.payload = Some(a..e);
                rec.end = e;
            }
        }
        pos = rec.end;
        out.push(rec);
        if op == b'.' {
            break;
        }
    }
    out
}

/// The length and integer fields of a pickle stream.
pub fn pickle_fields(p: &[u8]) -> Vec<Field> {
    pickle_ops(p)
        .into_iter()
        .flat_map(|o| [o.len, o.int])
        .flatten()
        .collect()
}

/// Opcodes inserted or substituted by [`mutate_pickle`]: every opcode the readers accept,
/// plus a few they do not.
const OPCODES: &[u8] = b"\x80\x95.(012N\x88\x89JKM\x8a\x8bIGF\x8cX\x8dCUBT\x8e\x96)t\x85\x86\x87]lae}dsuc\x93R\x81bQP\x94qrphjg\x8f\x97\xff";

/// Strings that replace a string payload: wrong dtype strings, numpy / torch names in the
/// wrong place, empty and invalid UTF-8.
const STRINGS: &[&[u8]] = &[
    b"f8",
    b"f2",
    b"f4",
    b"O8",
    b"<U4",
    b"i4",
    b"c16",
    b"b1",
    b"zz",
    b"",
    b"V8",
    b">",
    b"<",
    b"|",
    b"latin1",
    b"utf8",
    b"storage",
    b"cpu",
    b"0",
    b"99",
    b"state_dict",
    b"\xff\xfe",
    b"\xc3",
    b"ab\x80cd",
];

/// Globals that replace a `GLOBAL` op.
const GLOBALS: &[(&str, &str)] = &[
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("_codecs", "encode"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch", "FloatStorage"),
    ("torch", "DoubleStorage"),
    ("torch", "HalfStorage"),
    ("torch", "BoolStorage"),
    ("torch", "LongStorage"),
    ("torch", "IntStorage"),
    ("collections", "OrderedDict"),
    ("os", "system"),
];

/// Re-encodes a string / bytes op with a new payload, keeping its opcode (so its length
/// field matches; payloads too long for a 1-byte length are cut).
fn encode_with_payload(op: u8, payload: &[u8], lenw: usize) -> Vec<u8> {
    let max = if lenw == 1 { 255 } else { usize::MAX };
    let payload = &payload[..payload.len().min(max)];
    let mut out = vec![op];
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes()[..lenw]);
    out.extend_from_slice(payload);
    out
}

/// One random structure-aware mutation of a pickle stream: a length or integer field set to a
/// special value, an integer widened to an 8-byte LONG1 (huge shapes), an opcode replaced,
/// a length opcode with a huge length inserted, a string replaced (wrong dtype, invalid
/// UTF-8), a global replaced, NaN / Inf written into a bytes payload, an op deleted or
/// duplicated; or one of [`mutate_bytes`].
pub fn mutate_pickle(p: &[u8], d: &mut impl Draw) -> (String, Vec<u8>) {
    let ops = pickle_ops(p);
    if ops.is_empty() {
        return mutate_bytes(p, &[], d);
    }
    let splice = |o: &PickleOp, with: &[u8]| {
        let mut b = p[..o.pos].to_vec();
        b.extend_from_slice(with);
        b.extend_from_slice(&p[o.end..]);
        b
    };
    let of = |pred: &dyn Fn(&PickleOp) -> bool| ops.iter().filter(|o| pred(o)).collect::<Vec<_>>();
    match d.below(11) {
        0 => {
            let f = of(&|o: &PickleOp| o.len.is_some());
            if f.is_empty() {
                return mutate_bytes(p, &pickle_fields(p), d);
            }
            let o = *d.pick(&f);
            let v = *d.pick(&SPECIAL_VALUES);
            let mut b = p.to_vec();
            if let Some(field) = o.len {
                set_field(&mut b, field, v);
            }
            (
                format!("length of op {:#04x} at {} set to {v:#x}", o.op, o.pos),
                b,
            )
        }
        1 => {
            let f = of(&|o: &PickleOp| o.int.is_some());
            if f.is_empty() {
                return mutate_bytes(p, &pickle_fields(p), d);
            }
            let o = *d.pick(&f);
            let v = *d.pick(&SPECIAL_VALUES);
            let mut b = p.to_vec();
            if let Some(field) = o.int {
                set_field(&mut b, field, v);
            }
            (
                format!("int of op {:#04x} at {} set to {v:#x}", o.op, o.pos),
                b,
            )
        }
        2 => {
            // An int (a shape / offset / numel / memo index) widened to LONG1 or BININT with a
            // huge or negative value.
            let f = of(&|o: &PickleOp| matches!(o.op, b'K' | b'M' | b'J'));
            if f.is_empty() {
                return mutate_bytes(p, &pickle_fields(p), d);
            }
            let o = *d.pick(&f);
            let v = *d.pick(&SPECIAL_VALUES);
            let with: Vec<u8> = if d.below(3) == 0 {
                let mut w = vec![b'J'];
                w.extend_from_slice(&(v as u32).to_le_bytes());
                w
            } else {
                let mut w = vec![0x8a, 8];
                w.extend_from_slice(&v.to_le_bytes());
                w
            };
            (
                format!("int op at {} widened to {:02x?}", o.pos, with),
                splice(o, &with),
            )
        }
        3 => {
            let o = d.pick(&ops);
            let new = *d.pick(OPCODES);
            let mut b = p.to_vec();
            b[o.pos] = new;
            (format!("opcode at {} set to {new:#04x}", o.pos), b)
        }
        4 => {
            // A length opcode with a huge length, inserted before an op.
            let o = d.pick(&ops);
            let (op, w) = *d.pick(&[
                (0x8eu8, 8usize),
                (0x8d, 8),
                (0x96, 8),
                (b'X', 4),
                (b'B', 4),
                (b'T', 4),
                (0x8b, 4),
                (0x8c, 1),
                (b'C', 1),
                (0x8a, 1),
            ]);
            let v = *d.pick(&SPECIAL_VALUES);
            let mut ins = vec![op];
            ins.extend_from_slice(&v.to_le_bytes()[..w]);
            let mut b = p[..o.pos].to_vec();
            b.extend_from_slice(&ins);
            b.extend_from_slice(&p[o.pos..]);
            (
                format!("inserted op {op:#04x} with length {v:#x} at {}", o.pos),
                b,
            )
        }
        5 => {
            let f = of(&|o: &PickleOp| matches!(o.op, b'X' | 0x8c | b'C' | b'B' | b'U' | b'T'));
            if f.is_empty() {
                return mutate_bytes(p, &pickle_fields(p), d);
            }
            let o = *d.pick(&f);
            let s = *d.pick(STRINGS);
            let lenw = o.len.map_or(4, |l| l.width);
            (
                format!(
                    "payload of op at {} set to {:?}",
                    o.pos,
                    String::from_utf8_lossy(s)
                ),
                splice(o, &encode_with_payload(o.op, s, lenw)),
            )
        }
        6 => {
            let f = of(&|o: &PickleOp| o.op == b'c');
            if f.is_empty() {
                return mutate_bytes(p, &pickle_fields(p), d);
            }
            let o = *d.pick(&f);
            let (m, n) = *d.pick(GLOBALS);
            (
                format!("global at {} set to {m}.{n}", o.pos),
                splice(o, format!("c{m}\n{n}\n").as_bytes()),
            )
        }
        7 => {
            let f = of(&|o: &PickleOp| {
                matches!(o.op, b'B' | b'C' | 0x8e | 0x96) && o.payload.is_some()
            });
            if f.is_empty() {
                return mutate_bytes(p, &pickle_fields(p), d);
            }
            let o = *d.pick(&f);
            let r = o.payload.clone().unwrap_or(0..0);
            let pat = *d.pick(&FLOAT_PATTERNS);
            let mut b = p.to_vec();
            let mut at = r.start;
            while at + pat.len() <= r.end {
                if d.below(4) == 0 {
                    b[at..at + pat.len()].copy_from_slice(pat);
                }
                at += pat.len();
            }
            (format!("NaN/Inf {pat:02x?} in the payload at {}", o.pos), b)
        }
        8 => {
            let o = d.pick(&ops);
            (
                format!("deleted op {:#04x} at {}", o.op, o.pos),
                splice(o, &[]),
            )
        }
        9 => {
            let o = d.pick(&ops);
            let mut with = p[o.pos..o.end].to_vec();
            with.extend_from_slice(&p[o.pos..o.end]);
            (
                format!("duplicated op {:#04x} at {}", o.op, o.pos),
                splice(o, &with),
            )
        }
        _ => mutate_bytes(p, &pickle_fields(p), d),
    }
}

// ---------------------------------------------------------------------------------------------
// `.npy` headers.

/// Length of the `.npy` header field and where the header text starts (format 1 or 2/3).
pub fn npy_header_span(b: &[u8]) -> Option<(Field, Range<usize>)> {
    let major = *b.get(6)?;
    let (f, start) = match major {
        1 => (Field { pos: 8, width: 2 }, 10),
        _ => (Field { pos: 8, width: 4 }, 12),
    };
    let mut le = [0u8; 8];
    le[..f.width].copy_from_slice(b.get(f.pos..f.pos + f.width)?);
    let len = u64::from_le_bytes(le) as usize;
    Some((f, start..(start + len).min(b.len())))
}

/// One random mutation of a `.npy` file's header (the shape, dtype, order, header length or
/// version), or of its data (NaN / Inf, truncation via [`mutate_bytes`]).
pub fn mutate_npy_header(b: &[u8], d: &mut impl Draw) -> (String, Vec<u8>) {
    let Some((len_field, text)) = npy_header_span(b) else {
        return mutate_bytes(b, &[], d);
    };
    let header = String::from_utf8_lossy(&b[text.clone()]).into_owned();
    let rebuild = |h: &str| {
        let mut out = b[..text.start].to_vec();
        let width = len_field.width;
        out[len_field.pos..len_field.pos + width]
            .copy_from_slice(&(h.len() as u64).to_le_bytes()[..width]);
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&b[text.end..]);
        out
    };
    const DIMS: &[&str] = &[
        "0",
        "1",
        "-1",
        "18446744073709551615",
        "18446744073709551616",
        "9223372036854775808",
        "4294967296",
        "2147483648",
        "4611686018427387904",
        "512",
        "77",
        "1e3",
        "",
    ];
    const DESCRS: &[&str] = &[
        "<f4", "<f8", "<f2", ">f4", "|O", "O", "<i4", "<U8", "|b1", "f4x", "",
    ];
    match d.below(6) {
        0 => {
            // The shape tuple replaced by 1-4 special dims.
            let Some(at) = header.find("'shape':") else {
                return mutate_bytes(b, &[len_field], d);
            };
            let rest = &header[at..];
            let (Some(open), Some(close)) = (rest.find('('), rest.find(')')) else {
                return mutate_bytes(b, &[len_field], d);
            };
            let n = 1 + d.below(4);
            let dims: Vec<&str> = (0..n).map(|_| *d.pick(DIMS)).collect();
            let shape = format!("({},)", dims.join(", "));
            let h = format!("{}{}{}", &header[..at + open], shape, &rest[close + 1..]);
            (format!("npy shape set to {shape}"), rebuild(&h))
        }
        1 => {
            let Some(at) = header.find("'descr':") else {
                return mutate_bytes(b, &[len_field], d);
            };
            let rest = &header[at + 8..];
            let Some(q1) = rest.find('\'') else {
                return mutate_bytes(b, &[len_field], d);
            };
            let Some(q2) = rest[q1 + 1..].find('\'') else {
                return mutate_bytes(b, &[len_field], d);
            };
            let descr = *d.pick(DESCRS);
            let h = format!(
                "{}'{descr}'{}",
                &header[..at + 8 + q1],
                &rest[q1 + 1 + q2 + 1..]
            );
            (format!("npy descr set to {descr:?}"), rebuild(&h))
        }
        2 => {
            let h = if header.contains("False") {
                header.replacen("False", "True", 1)
            } else {
                header.replacen("True", "False", 1)
            };
            ("npy fortran_order toggled".into(), rebuild(&h))
        }
        3 => {
            let v = *d.pick(&SPECIAL_VALUES);
            let mut out = b.to_vec();
            set_field(&mut out, len_field, v);
            (format!("npy header length set to {v:#x}"), out)
        }
        4 => {
            let mut out = b.to_vec();
            let v = *d.pick(&[0u8, 2, 3, 4, 255]);
            if let Some(x) = out.get_mut(6) {
                *x = v;
            }
            (format!("npy version set to {v}"), out)
        }
        _ => mutate_bytes(b, &[len_field], d),
    }
}

// ---------------------------------------------------------------------------------------------
// Zip archives.

/// The size, count and offset fields of a zip archive's local headers, central directory and
/// end records (found by signature).
pub fn zip_fields(b: &[u8]) -> Vec<Field> {
    let mut out = Vec::new();
    let f = |pos: usize, width: usize| Field { pos, width };
    for i in 0..b.len().saturating_sub(4) {
        match &b[i..i + 4] {
            b"PK\x03\x04" => {
                out.extend([f(i + 18, 4), f(i + 22, 4), f(i + 26, 2), f(i + 28, 2)]);
            }
            b"PK\x01\x02" => out.extend([
                f(i + 20, 4),
                f(i + 24, 4),
                f(i + 28, 2),
                f(i + 30, 2),
                f(i + 32, 2),
                f(i + 42, 4),
            ]),
            b"PK\x05\x06" => out.extend([
                f(i + 8, 2),
                f(i + 10, 2),
                f(i + 12, 4),
                f(i + 16, 4),
                f(i + 20, 2),
            ]),
            b"PK\x06\x06" => out.extend([f(i + 24, 8), f(i + 32, 8), f(i + 40, 8), f(i + 48, 8)]),
            _ => {}
        }
    }
    out.retain(|x| x.pos + x.width <= b.len());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// An uncompressed (stored) zip archive of `members`, as `torch.save` writes them, with valid
/// checksums: a mutated member reaches the reader's parser instead of failing the zip CRC.
pub fn stored_zip(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in members {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let size = data.len() as u32;
        let header = |sig: &[u8], central_entry: bool| {
            let mut h = sig.to_vec();
            if central_entry {
                h.extend_from_slice(&20u16.to_le_bytes()); // made by
            }
            h.extend_from_slice(&20u16.to_le_bytes()); // version needed
            h.extend_from_slice(&0u16.to_le_bytes()); // flags
            h.extend_from_slice(&0u16.to_le_bytes()); // stored
            h.extend_from_slice(&0u32.to_le_bytes()); // time, date
            h.extend_from_slice(&crc.to_le_bytes());
            h.extend_from_slice(&size.to_le_bytes());
            h.extend_from_slice(&size.to_le_bytes());
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // extra
            if central_entry {
                h.extend_from_slice(&0u16.to_le_bytes()); // comment
                h.extend_from_slice(&0u16.to_le_bytes()); // disk
                h.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
                h.extend_from_slice(&0u32.to_le_bytes()); // external attributes
                h.extend_from_slice(&offset.to_le_bytes());
            }
            h.extend_from_slice(name.as_bytes());
            h
        };
        out.extend(header(b"PK\x03\x04", false));
        central.extend(header(b"PK\x01\x02", true));
        out.extend_from_slice(data);
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&0u32.to_le_bytes()); // disks
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// The members of a zip archive (names and uncompressed bytes), in order: the starting point
/// of member-level mutations, which [`stored_zip`] packs again with valid checksums.
pub fn zip_members(bytes: &[u8]) -> zip::result::ZipResult<Vec<(String, Vec<u8>)>> {
    use std::io::Read;
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i)?;
        let mut data = Vec::new();
        f.read_to_end(&mut data)?;
        out.push((f.name().to_string(), data));
    }
    Ok(out)
}

/// The members of a `torch.save` archive of a state dict (an `OrderedDict` of float32
/// tensors, each in its own storage), laid out as PyTorch writes them: `<dir>/data.pkl`
/// (pickle protocol 2, `_rebuild_tensor_v2` records with `BININT` sizes, strides and storage
/// sizes), `<dir>/data/<n>`, `<dir>/byteorder`, `<dir>/version`. Pack them with
/// [`stored_zip`]. The pickle comes first, so that mutations can address it as member 0.
pub fn torch_state_dict(
    dir: &str,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
) -> Vec<(String, Vec<u8>)> {
    fn int(p: &mut Vec<u8>, v: usize) {
        p.push(b'J');
        p.extend_from_slice(&(v as u32).to_le_bytes());
    }
    fn text(p: &mut Vec<u8>, s: &str) {
        p.push(b'X');
        p.extend_from_slice(&(s.len() as u32).to_le_bytes());
        p.extend_from_slice(s.as_bytes());
    }
    let mut p = b"\x80\x02ccollections\nOrderedDict\n)R(".to_vec();
    let mut storages = Vec::new();
    for (k, (name, shape, values)) in tensors.iter().enumerate() {
        text(&mut p, name);
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        text(&mut p, "storage");
        p.extend_from_slice(b"ctorch\nFloatStorage\n");
        text(&mut p, &k.to_string());
        text(&mut p, "cpu");
        int(&mut p, values.len());
        p.extend_from_slice(b"tQ");
        int(&mut p, 0);
        p.push(b'(');
        for &d in shape {
            int(&mut p, d);
        }
        p.extend_from_slice(b"t(");
        let mut stride = 1;
        let mut strides = vec![0; shape.len()];
        for (s, &d) in strides.iter_mut().zip(shape).rev() {
            *s = stride;
            stride *= d;
        }
        for s in strides {
            int(&mut p, s);
        }
        p.extend_from_slice(b"t\x89ccollections\nOrderedDict\n)RtR");
        storages.push(
            values
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        );
    }
    p.extend_from_slice(b"u.");
    let mut out = vec![(format!("{dir}/data.pkl"), p)];
    out.extend(
        storages
            .into_iter()
            .enumerate()
            .map(|(i, s)| (format!("{dir}/data/{i}"), s)),
    );
    out.push((format!("{dir}/byteorder"), b"little".to_vec()));
    out.push((format!("{dir}/version"), b"3\n".to_vec()));
    out
}

/// A `.npy` file (format 1.0) of dtype `descr` (e.g. `<f4`, `<i8`) and `shape` holding the
/// little-endian element bytes `data`, its header padded to 64 bytes as numpy pads it.
pub fn npy_file(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    header.push_str(&" ".repeat((64 - (10 + header.len() + 1) % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

// ---------------------------------------------------------------------------------------------
// JSON (configuration files, `.safetensors` headers).

/// One token of a JSON text, as located by [`json_tokens`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonTok {
    /// `{` or `[`.
    Open,
    /// `}` or `]`.
    Close,
    /// A string used as an object key (followed by `:`).
    Key,
    /// A string value.
    Str,
    /// A number.
    Num,
    /// `true`, `false`, `null` (or any other bare word).
    Word,
}

/// The tokens of a JSON text with their byte ranges (`,` and `:` are skipped). Tolerant: a
/// malformed text gives whatever tokens could be located.
pub fn json_tokens(b: &[u8]) -> Vec<(JsonTok, Range<usize>)> {
    let mut out: Vec<(JsonTok, Range<usize>)> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'{' | b'[' => {
                out.push((JsonTok::Open, i..i + 1));
                i += 1;
            }
            b'}' | b']' => {
                out.push((JsonTok::Close, i..i + 1));
                i += 1;
            }
            b'"' => {
                let start = i;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(b.len());
                let mut j = i;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                let kind = if b.get(j) == Some(&b':') {
                    JsonTok::Key
                } else {
                    JsonTok::Str
                };
                out.push((kind, start..i));
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < b.len() && matches!(b[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                out.push((JsonTok::Num, start..i));
            }
            b'a'..=b'z' | b'A'..=b'Z' => {
                let start = i;
                while i < b.len() && b[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                out.push((JsonTok::Word, start..i));
            }
            _ => i += 1,
        }
    }
    out
}

/// The byte range of the value starting at token `t` (a whole object / array for `Open`).
fn json_value_span(toks: &[(JsonTok, Range<usize>)], t: usize) -> Range<usize> {
    let start = toks[t].1.start;
    if toks[t].0 != JsonTok::Open {
        return toks[t].1.clone();
    }
    let mut depth = 0usize;
    for (kind, r) in &toks[t..] {
        match kind {
            JsonTok::Open => depth += 1,
            JsonTok::Close => {
                depth -= 1;
                if depth == 0 {
                    return start..r.end;
                }
            }
            _ => {}
        }
    }
    start..toks.last().map_or(start, |(_, r)| r.end)
}

/// The byte ranges of the object members `"key": value` of a JSON text (at any depth), each
/// with the range of its value.
pub fn json_members(b: &[u8]) -> Vec<(Range<usize>, Range<usize>)> {
    let toks = json_tokens(b);
    let mut out = Vec::new();
    for (t, (kind, r)) in toks.iter().enumerate() {
        if *kind == JsonTok::Key && t + 1 < toks.len() {
            let v = json_value_span(&toks, t + 1);
            out.push((r.start..v.end, v));
        }
    }
    out
}

/// Numbers that replace a JSON number: signs, zero, the 32 / 64-bit limits and beyond,
/// fractions where integers are expected, overflowing and underflowing exponents.
pub const JSON_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "2147483647",
    "2147483648",
    "4294967296",
    "-2147483649",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "99999999999999999999999999999999999999",
    "1.5",
    "0.5",
    "1e3",
    "1e309",
    "-1e309",
    "1e-400",
    "NaN",
    "Infinity",
    "-Infinity",
    "00",
    "1e",
    "-",
    "0x10",
];

/// Values of other JSON types that replace a value.
const JSON_VALUES: &[&str] = &[
    "null",
    "true",
    "false",
    "[]",
    "{}",
    "\"\"",
    "\"1\"",
    "[1, 2]",
    "[[1]]",
    "{\"a\": 1}",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"../../../../etc/passwd\"",
    "\"/\"",
    "\"F32\"",
    "\"clip\"",
];

/// One random structure-aware mutation of a JSON text: a number set to an extreme or
/// malformed value, a value replaced by one of another type, a member deleted (a missing key),
/// duplicated (a duplicated key) or renamed (an unknown key), a string set to invalid UTF-8
/// or a NUL, deep nesting; or one of [`mutate_bytes`].
pub fn mutate_json(b: &[u8], d: &mut impl Draw) -> (String, Vec<u8>) {
    let toks = json_tokens(b);
    let members = json_members(b);
    let splice = |r: &Range<usize>, with: &[u8]| {
        let mut out = b[..r.start].to_vec();
        out.extend_from_slice(with);
        out.extend_from_slice(&b[r.end..]);
        out
    };
    let of = |k: JsonTok| -> Vec<Range<usize>> {
        toks.iter()
            .filter(|(kind, _)| *kind == k)
            .map(|(_, r)| r.clone())
            .collect()
    };
    match d.below(10) {
        0 | 1 => {
            let nums = of(JsonTok::Num);
            if nums.is_empty() {
                return mutate_bytes(b, &[], d);
            }
            let r = d.pick(&nums).clone();
            let v = *d.pick(JSON_NUMBERS);
            (
                format!("number at {} set to {v}", r.start),
                splice(&r, v.as_bytes()),
            )
        }
        2 => {
            if members.is_empty() {
                return mutate_bytes(b, &[], d);
            }
            let (_, v) = d.pick(&members).clone();
            let with = *d.pick(JSON_VALUES);
            (
                format!("value at {} set to {with}", v.start),
                splice(&v, with.as_bytes()),
            )
        }
        3 => {
            if members.is_empty() {
                return mutate_bytes(b, &[], d);
            }
            let (m, _) = d.pick(&members).clone();
            // Remove the member and one adjacent comma.
            let mut r = m.clone();
            let after = b[r.end..].iter().position(|c| !c.is_ascii_whitespace());
            if let Some(k) = after.filter(|&k| b[r.end + k] == b',') {
                r.end += k + 1;
            } else if let Some(k) = b[..r.start].iter().rposition(|c| !c.is_ascii_whitespace())
                && b[k] == b','
            {
                r.start = k;
            }
            (format!("member at {} deleted", m.start), splice(&r, b""))
        }
        4 => {
            if members.is_empty() {
                return mutate_bytes(b, &[], d);
            }
            let (m, _) = d.pick(&members).clone();
            let mut with = b[m.clone()].to_vec();
            with.extend_from_slice(b", ");
            with.extend_from_slice(&b[m.clone()]);
            (
                format!("member at {} duplicated", m.start),
                splice(&m, &with),
            )
        }
        5 => {
            let keys = of(JsonTok::Key);
            if keys.is_empty() {
                return mutate_bytes(b, &[], d);
            }
            let r = d.pick(&keys).clone();
            let with: &[u8] = d.pick::<&[u8]>(&[
                &b"\"unknown_field\""[..],
                b"\"\"",
                b"\"\xff\xfe\"",
                b"\"a\x00b\"",
            ]);
            (
                format!(
                    "key at {} set to {:?}",
                    r.start,
                    String::from_utf8_lossy(with)
                ),
                splice(&r, with),
            )
        }
        6 => {
            let strs: Vec<Range<usize>> = toks
                .iter()
                .filter(|(k, _)| matches!(k, JsonTok::Str | JsonTok::Key))
                .map(|(_, r)| r.clone())
                .collect();
            if strs.is_empty() {
                return mutate_bytes(b, &[], d);
            }
            let r = d.pick(&strs).clone();
            let inside =
                (r.start + 1).min(r.end)..r.end.saturating_sub(1).max(r.start + 1).min(r.end);
            let at = inside.start + d.below(inside.len() + 1);
            let bad: &[u8] = d.pick::<&[u8]>(&[
                &b"\xff"[..],
                b"\xc3",
                b"\xed\xa0\x80",
                b"\xc0\x80",
                b"\x00",
                b"\"",
                b"\\",
                b"\\u12",
            ]);
            let mut out = b[..at].to_vec();
            out.extend_from_slice(bad);
            out.extend_from_slice(&b[at..]);
            (
                format!("{bad:02x?} inserted in the string at {}", r.start),
                out,
            )
        }
        7 => {
            if members.is_empty() {
                return mutate_bytes(b, &[], d);
            }
            let (_, v) = d.pick(&members).clone();
            let depth = *d.pick(&[100usize, 200, 5000]);
            let mut with = "[".repeat(depth);
            with.push('1');
            with.push_str(&"]".repeat(depth));
            (
                format!("value at {} nested {depth} deep", v.start),
                splice(&v, with.as_bytes()),
            )
        }
        8 => {
            let len = d.below(b.len().max(1));
            (
                format!("truncated to {len}"),
                b[..len.min(b.len())].to_vec(),
            )
        }
        _ => mutate_bytes(b, &[], d),
    }
}

// ---------------------------------------------------------------------------------------------
// `.safetensors` files.

/// The header length field of a `.safetensors` file (8 bytes at 0).
pub const SAFETENSORS_LEN: Field = Field { pos: 0, width: 8 };

/// dtype strings that replace a `.safetensors` tensor's dtype.
const ST_DTYPES: &[&str] = &[
    "F32", "F64", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL",
    "F8_E4M3", "F8_E5M2", "F4", "f32", "", "F32 ", "X",
];

/// One random mutation of a `.safetensors` file, mostly of its JSON header with the length
/// field kept consistent: a shape or offset set to 0, -1, 2^31, 2^63, 2^64-1 and beyond
/// ([`JSON_NUMBERS`]), a dtype replaced, a tensor entry duplicated (a duplicated key) or
/// deleted, wrong JSON types, invalid UTF-8 in a name ([`mutate_json`]); the length field
/// itself set to a special value or off by a few bytes; NaN / Inf in the data
/// ([`mutate_bytes`]).
pub fn mutate_safetensors(b: &[u8], d: &mut impl Draw) -> (String, Vec<u8>) {
    let Some(n) = b
        .get(..8)
        .map(|l| u64::from_le_bytes([l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7]]) as usize)
        .filter(|&n| n <= b.len() - 8)
    else {
        return mutate_bytes(b, &[SAFETENSORS_LEN], d);
    };
    let header = &b[8..8 + n];
    let rebuild = |h: &[u8]| {
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(h);
        out.extend_from_slice(&b[8 + n..]);
        out
    };
    match d.below(8) {
        0 => {
            let v = *d.pick(&SPECIAL_VALUES);
            let mut out = b.to_vec();
            set_field(&mut out, SAFETENSORS_LEN, v);
            (format!("header length set to {v:#x}"), out)
        }
        1 => {
            let delta = *d.pick(&[-8i64, -2, -1, 1, 2, 8, 64]);
            let v = (n as i64 + delta).max(0) as u64;
            let mut out = b.to_vec();
            set_field(&mut out, SAFETENSORS_LEN, v);
            (format!("header length {n} changed by {delta}"), out)
        }
        2 => {
            let strs: Vec<Range<usize>> = json_tokens(header)
                .into_iter()
                .filter(|(k, _)| *k == JsonTok::Str)
                .map(|(_, r)| r)
                .collect();
            if strs.is_empty() {
                return mutate_bytes(b, &[SAFETENSORS_LEN], d);
            }
            let r = d.pick(&strs).clone();
            let dt = *d.pick(ST_DTYPES);
            let mut h = header[..r.start].to_vec();
            h.extend_from_slice(format!("\"{dt}\"").as_bytes());
            h.extend_from_slice(&header[r.end..]);
            (
                format!("header string at {} set to {dt:?}", r.start),
                rebuild(&h),
            )
        }
        3..=6 => {
            let (what, h) = mutate_json(header, d);
            (format!("header: {what}"), rebuild(&h))
        }
        _ => mutate_bytes(b, &[SAFETENSORS_LEN], d),
    }
}

// ---------------------------------------------------------------------------------------------
// Text files (split lists, captions, prompts).

/// One random mutation of a line-oriented text file: invalid UTF-8 (a stray continuation
/// byte, a truncated sequence, an encoded surrogate, an overlong NUL), NUL bytes, CRLF or lone
/// CR line ends, a byte-order mark, a huge line (1 MiB), thousands of lines, blank or empty
/// content, UTF-16, path-like lines; or one of [`mutate_bytes`].
pub fn mutate_text(b: &[u8], d: &mut impl Draw) -> (String, Vec<u8>) {
    let n = b.len();
    let at = d.below(n + 1);
    let insert = |with: &[u8]| {
        let mut out = b[..at].to_vec();
        out.extend_from_slice(with);
        out.extend_from_slice(&b[at..]);
        out
    };
    match d.below(12) {
        0 => {
            let bad: &[u8] = d.pick::<&[u8]>(&[
                &b"\xff"[..],
                b"\x80",
                b"\xc3",
                b"\xe2\x82",
                b"\xed\xa0\x80",
                b"\xc0\x80",
                b"\xf4\x90\x80\x80",
                b"\xfe\xff",
            ]);
            (format!("invalid UTF-8 {bad:02x?} at {at}"), insert(bad))
        }
        1 => (format!("NUL at {at}"), insert(b"\0")),
        2 => {
            let mut out = Vec::with_capacity(2 * n);
            for &c in b {
                if c == b'\n' {
                    out.push(b'\r');
                }
                out.push(c);
            }
            ("CRLF line ends".into(), out)
        }
        3 => (
            "lone CR line ends".into(),
            b.iter()
                .map(|&c| if c == b'\n' { b'\r' } else { c })
                .collect(),
        ),
        4 => {
            let mut out = b"\xef\xbb\xbf".to_vec();
            out.extend_from_slice(b);
            ("byte-order mark".into(), out)
        }
        5 => {
            let len = *d.pick(&[4096usize, 1 << 16, 1 << 20]);
            let fill = *d.pick(&[b'a', b' ', b'\t', 0xe9]);
            let mut line = vec![fill; len];
            line.push(b'\n');
            (
                format!("line of {len} x {fill:#04x} at {at}"),
                insert(&line),
            )
        }
        6 => {
            let count = *d.pick(&[1000usize, 20_000]);
            let line: &[u8] = d.pick::<&[u8]>(&[&b"\n"[..], b" \n", b"x\n", b"\r\n"]);
            (
                format!("{count} x {:?} at {at}", String::from_utf8_lossy(line)),
                insert(&line.repeat(count)),
            )
        }
        7 => {
            let with: &[u8] = d.pick::<&[u8]>(&[&b""[..], b"\n", b"   \n\t\n", b"\0", b"\r\n\r\n"]);
            (format!("content replaced by {with:02x?}"), with.to_vec())
        }
        8 => {
            let mut out = vec![0xff, 0xfe];
            for &c in b {
                out.extend_from_slice(&[c, 0]);
            }
            ("UTF-16LE".into(), out)
        }
        9 => {
            let line: &[u8] = d.pick::<&[u8]>(&[
                &b"../../outside\n"[..],
                b"/absolute/path\n",
                b"a/b\n",
                b".\n",
                b"..\n",
                b"a\\b\n",
                b"\xe2\x80\xae\n",
            ]);
            (
                format!("line {:?} at {at}", String::from_utf8_lossy(line)),
                insert(line),
            )
        }
        _ => mutate_bytes(b, &[], d),
    }
}

// ---------------------------------------------------------------------------------------------
// Scratch folders.

/// A fresh, empty folder `<base>/<tag>-<process id>`, removed with its contents on drop. Tests
/// pass `env!("CARGO_TARGET_TMPDIR")` as `base`, so that nothing lands outside the target
/// folder and parallel test binaries (different process ids) never share a folder.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// Creates (or empties) the folder.
    pub fn new(base: impl AsRef<Path>, tag: &str) -> std::io::Result<Scratch> {
        let p = base.as_ref().join(format!("{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(Scratch(p))
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One member-level mutation of a `torch.save` zip whose first member is `data.pkl`: the
/// pickle (most cases), a storage record, a member name, or a member deleted. `parts` holds at
/// least two members.
pub fn mutate_torch_members(
    parts: &[(String, Vec<u8>)],
    d: &mut impl Draw,
) -> (String, Vec<(String, Vec<u8>)>) {
    let mut m = parts.to_vec();
    let what = match d.below(10) {
        0 | 1 => {
            let k = 1 + d.below(m.len() - 1);
            let (w, b) = mutate_bytes(&m[k].1, &[], d);
            m[k].1 = b;
            format!("member {}: {w}", m[k].0)
        }
        2 => {
            let k = d.below(m.len());
            let (w, b) = mutate_bytes(m[k].0.as_bytes(), &[], d);
            m[k].0 = String::from_utf8_lossy(&b).into_owned();
            format!("member {k} name: {w}")
        }
        3 => {
            let k = 1 + d.below(m.len() - 1);
            let gone = m.remove(k);
            format!("member {} deleted", gone.0)
        }
        _ => {
            let (mut w, mut b) = mutate_pickle(&m[0].1, d);
            if d.below(4) == 0 {
                let (w2, b2) = mutate_pickle(&b, d);
                w = format!("{w}; {w2}");
                b = b2;
            }
            m[0].1 = b;
            format!("data.pkl: {w}")
        }
    };
    (what, m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pickle_ops_cover_a_stream() {
        let p = b"\x80\x02]q\x00(X\x02\x00\x00\x00abK\x05e.";
        let ops = pickle_ops(p);
        assert_eq!(ops.len(), 8);
        assert_eq!(ops.last().map(|o| o.end), Some(p.len()));
        assert_eq!(pickle_fields(p).len(), 3);
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn json_members_span_keys_and_values() {
        let t = br#"{"a": 1, "b": {"c": [1, 2]}, "d": "x"}"#;
        let m = json_members(t);
        let texts: Vec<&[u8]> = m.iter().map(|(r, _)| &t[r.clone()]).collect();
        assert_eq!(
            texts,
            [
                &br#""a": 1"#[..],
                br#""b": {"c": [1, 2]}"#,
                br#""c": [1, 2]"#,
                br#""d": "x""#
            ]
        );
        let mut g = SplitMix64(3);
        let mut draw = || g.next_u64();
        for _ in 0..200 {
            let _ = mutate_json(t, &mut draw);
            let _ = mutate_text(b"a\nb\n", &mut draw);
        }
    }

    #[test]
    fn mutations_are_deterministic() {
        let base: Vec<u8> = (0..200u8).collect();
        let run = || {
            let mut g = SplitMix64(7);
            let mut draw = || g.next_u64();
            (0..50)
                .map(|_| mutate_bytes(&base, &[Field { pos: 4, width: 8 }], &mut draw).1)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
