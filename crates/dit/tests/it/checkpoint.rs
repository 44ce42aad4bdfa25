//! Loading the reference Lightning checkpoint and reporting bad weights by name.
