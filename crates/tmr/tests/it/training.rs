//! TMR training on synthetic clusters: motion cluster k is paired with text cluster k.
