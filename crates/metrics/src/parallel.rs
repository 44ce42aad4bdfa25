//! Minimal scoped parallelism on the standard library: two independent jobs side by side, or a
//! range of independent tasks spread over the available cores. Results never depend on the
//! number of threads (each task is a pure function of its index).

use std::thread;

/// Number of worker threads to use (the machine's available parallelism).
pub(crate) fn threads() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `a` and `b`, on two threads when more than one core is available.
pub(crate) fn join<A, B, FA, FB>(a: FA, b: FB) -> (A, B)
where
    A: Send,
    B: Send,
    FA: FnOnce() -> A + Send,
    FB: FnOnce() -> B + Send,
{
    if threads() < 2 {
        return (a(), b());
    }
    thread::scope(|s| {
        let hb = s.spawn(b);
        let ra = a();
        match hb.join() {
            Ok(rb) => (ra, rb),
            Err(payload) => std::panic::resume_unwind(payload),
        }
    })
}

/// `f(0), f(1), ..., f(n - 1)` computed on up to [`threads`] threads, returned in index order.
pub(crate) fn map_indices<T, F>(n: usize, f: F) -> Vec<T>
where
    T: Send,
    F: Fn(usize) -> T + Sync,
{
    let workers = threads().min(n);
    if workers < 2 {
        return (0..n).map(f).collect();
    }
    let per = n.div_ceil(workers);
    let f = &f;
    thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| s.spawn(move || (w * per..((w + 1) * per).min(n)).map(f).collect::<Vec<T>>()))
            .collect();
        let mut out = Vec::with_capacity(n);
        for h in handles {
            match h.join() {
                Ok(part) => out.extend(part),
                Err(payload) => std::panic::resume_unwind(payload),
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_indices_keeps_index_order() {
        let v = map_indices(37, |i| i * i);
        assert_eq!(v, (0..37).map(|i| i * i).collect::<Vec<_>>());
        assert_eq!(join(|| 1, || "b"), (1, "b"));
    }
}
