//! Which SIMD path the CPU kernels take: re-exported from [`kernels::simd`], where the kernels
//! now live (`MOTION_DIT_SIMD` caps the path for a whole process, [`with_simd`] for a thread).

pub use kernels::simd::*;
