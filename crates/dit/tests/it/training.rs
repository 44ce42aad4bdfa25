//! Training mode.
