//! Integration tests of the `tmr` crate (one binary, modules per area).

mod reference;
mod text_encoders;
mod training;
