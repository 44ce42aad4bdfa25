//! Integration tests of `motion-repr` against the PyTorch reference fixtures.

mod normalize;
mod rifke;
