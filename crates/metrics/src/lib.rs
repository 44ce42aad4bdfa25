//! Evaluation metrics for generated motion, computed on embeddings: Fréchet distance,
//! precision/recall/density/coverage, text-to-motion retrieval (R@k, MM-distance), TMR-score,
//! diversity, and bootstrap confidence intervals.
//!
//! # Place in the workspace
//! `metrics` stands alone: it must never depend on another workspace crate. It sees embeddings
//! only, never models or datasets.
#![warn(missing_docs)]
