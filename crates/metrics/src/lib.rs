//! Evaluation metrics for generated motion, computed on embeddings: Fréchet distance,
//! precision/recall/density/coverage, text-to-motion retrieval (R@k, MM-distance), TMR-score,
//! diversity, and bootstrap confidence intervals.
//!
//! Every metric takes `[rows, dim]` embeddings, as candle tensors (the entry points below) or
//! as [`Embeddings`] wrapping row-major `&[f32]` rows (the `*_rows` functions), and returns
//! plain structs that serialise with serde (JSON) or flatten to CSV rows ([`MetricRow`]).
//!
//! | metric | function | paper |
//! | --- | --- | --- |
//! | Fréchet distance | [`frechet_distance`], [`FrechetAccumulator`] | Heusel et al. 2017 |
//! | precision, recall, density, coverage | [`prdc`], [`prdc_with`] | Kynkäänniemi et al. 2019; Naeem et al. 2020 |
//! | R@k, MM-distance | [`retrieval`] | Guo et al. 2022 |
//! | TMR-score | [`tmr_score`] | Petrovich et al. 2023 |
//! | diversity | [`diversity`] | Guo et al. 2022 |
//! | confidence intervals | [`bootstrap_frechet`], [`bootstrap_prdc`], ... | Efron 1979 |
//!
//! Each value matches the PyTorch reference (fixture `metrics`) within its tolerance; where the
//! reference has a quirk (PRDC recall) the correct formula is the default and the reference's
//! is selectable ([`RecallFormula::Reference`]). `docs/metrics.md` gives the formulas and how
//! wide the confidence intervals are with the reference's 640 samples.
//!
//! ```
//! use candle::{Device, Tensor};
//! let dev = Device::Cpu;
//! let real = Tensor::from_vec((0..64).map(|i| (i % 7) as f32).collect::<Vec<_>>(), (16, 4), &dev)?;
//! let fake = (real.clone() + 0.5)?;
//! // Shifting every row by 0.5 leaves the covariance alone: FD = |mu_r - mu_f|^2 = 4 * 0.5^2.
//! let fd = metrics::frechet_distance(&real, &fake)?;
//! assert!((fd - 1.0).abs() < 1e-9);
//! let p = metrics::prdc(&real, &real, 3, 2)?;
//! assert_eq!((p.precision, p.recall, p.coverage), (1.0, 1.0, 1.0));
//! # Ok::<(), metrics::MetricsError>(())
//! ```
//!
//! # Place in the workspace
//! `metrics` stands alone: it must never depend on another workspace crate. It sees embeddings
//! only, never models or datasets. It never prints and never downloads.
#![warn(missing_docs)]

mod bootstrap;
mod embeddings;
mod error;
mod frechet;
mod linalg;
mod parallel;
mod prdc;
mod report;
mod retrieval;
mod similarity;

pub use bootstrap::{
    BootstrapConfig, Interval, PairedDifference, PrdcIntervals, RetrievalIntervals,
    bootstrap_diversity, bootstrap_frechet, bootstrap_paired_difference, bootstrap_prdc,
    bootstrap_retrieval, bootstrap_tmr_score,
};
pub use embeddings::Embeddings;
pub use error::{MetricsError, Result};
pub use frechet::{
    FrechetAccumulator, GaussianStats, frechet_distance, frechet_distance_from_stats,
    frechet_distance_rows,
};
pub use prdc::{Prdc, PrdcConfig, RecallFormula, prdc, prdc_rows, prdc_with};
pub use report::{MetricRow, to_csv, write_atomic, write_csv, write_json};
pub use retrieval::{REFERENCE_BATCH_SIZE, Retrieval, retrieval, retrieval_rows};
pub use similarity::{
    HUMANML3D_DIVERSITY_PAIRS, diversity, diversity_rows, tmr_score, tmr_score_rows,
};
