//! Integration tests of `motion-data` (one binary, modules per topic).
// Index loops mirror the [sample][frame][channel] formulas being checked.
#![allow(clippy::needless_range_loop)]

mod batches;
mod faults;
mod object_arrays;
mod packed;
mod synth;
mod util;
