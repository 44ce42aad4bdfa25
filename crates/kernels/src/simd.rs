//! Which SIMD path the CPU kernels of [`crate::ops`] (and the fused attention behind
//! [`crate::ops::attention`]) take.
//!
//! By default: the best path the CPU has ([`SimdLevel::detected`]). Two caps lower it:
//! - the environment variable `MOTION_DIT_SIMD` (`generic`, `avx2` or `avx512`), read once, for
//!   a whole process (e.g. to measure the AVX2 path on an AVX-512 machine);
//! - [`with_simd`], for the calling thread while a closure runs (the kernels read the level on
//!   the calling thread and hand it to their worker threads), so tests compare every path
//!   against the others in one process without affecting concurrent work.
//!
//! A cap above what the CPU has changes nothing: the kernels never take a path the CPU lacks.
//! The matrix products themselves are `gemm`'s, which picks its own path.

use std::cell::Cell;
use std::sync::OnceLock;

/// A SIMD path, ordered from least to most capable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimdLevel {
    /// Portable scalar code (what LLVM auto-vectorises for the baseline target).
    Generic,
    /// AVX2 with FMA (x86-64).
    Avx2,
    /// AVX-512F (x86-64).
    Avx512,
}

impl SimdLevel {
    /// Every level, least capable first.
    pub const ALL: [SimdLevel; 3] = [SimdLevel::Generic, SimdLevel::Avx2, SimdLevel::Avx512];

    /// The best level this CPU supports (detected once).
    pub fn detected() -> SimdLevel {
        static DETECTED: OnceLock<SimdLevel> = OnceLock::new();
        *DETECTED.get_or_init(detect)
    }

    /// `generic`, `avx2` or `avx512`.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Generic => "generic",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }
}

impl std::fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SimdLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "generic" | "scalar" | "none" => Ok(SimdLevel::Generic),
            "avx2" => Ok(SimdLevel::Avx2),
            "avx512" | "avx-512" | "avx512f" => Ok(SimdLevel::Avx512),
            other => Err(format!(
                "unknown SIMD level {other:?} (expected generic, avx2 or avx512)"
            )),
        }
    }
}

fn detect() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return SimdLevel::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Generic
}

/// The process-wide cap from `MOTION_DIT_SIMD` (none when unset or unparsable).
fn env_cap() -> Option<SimdLevel> {
    static CAP: OnceLock<Option<SimdLevel>> = OnceLock::new();
    *CAP.get_or_init(|| {
        std::env::var("MOTION_DIT_SIMD")
            .ok()
            .and_then(|v| v.parse().ok())
    })
}

thread_local! {
    static THREAD_CAP: Cell<Option<SimdLevel>> = const { Cell::new(None) };
}

/// The level the kernels take now on this thread: the detected level, capped by
/// `MOTION_DIT_SIMD` and by an enclosing [`with_simd`].
pub fn active() -> SimdLevel {
    let mut level = SimdLevel::detected();
    if let Some(cap) = env_cap() {
        level = level.min(cap);
    }
    if let Some(cap) = THREAD_CAP.with(Cell::get) {
        level = level.min(cap);
    }
    level
}

/// Runs `f` with the kernels of this thread capped at `cap` (restored afterwards, also when `f`
/// panics).
pub fn with_simd<R>(cap: SimdLevel, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<SimdLevel>);
    impl Drop for Restore {
        fn drop(&mut self) {
            THREAD_CAP.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(THREAD_CAP.with(|c| c.replace(Some(cap))));
    f()
}

/// Runs `f` in a function compiled for `level` (capped at what the CPU has), so the loops
/// inlined into `f` are vectorised for AVX-512 / AVX2 + FMA or the baseline target. `f` must be
/// a closure marked `#[inline(always)]`: otherwise LLVM may keep it a separate function,
/// compiled for the baseline target.
#[inline(always)]
pub(crate) fn on_level<R>(level: SimdLevel, f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        let level = level.min(SimdLevel::detected());
        if level >= SimdLevel::Avx512 {
            // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (`detected`).
            return unsafe { run_avx512(f) };
        }
        if level >= SimdLevel::Avx2 {
            // SAFETY: the CPU supports AVX2 and FMA (`detected`).
            return unsafe { run_avx2(f) };
        }
    }
    let _ = level;
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_cap_lowers_the_level_and_is_restored() {
        let before = active();
        with_simd(SimdLevel::Generic, || {
            assert_eq!(active(), SimdLevel::Generic);
            with_simd(SimdLevel::Avx512, || {
                assert!(active() <= SimdLevel::detected())
            });
            assert_eq!(active(), SimdLevel::Generic);
        });
        assert_eq!(active(), before);
        assert_eq!("AVX2".parse::<SimdLevel>(), Ok(SimdLevel::Avx2));
        assert!("sse".parse::<SimdLevel>().is_err());
    }
}
