//! Test helpers: scratch folders and a hand-built 3-sample dataset.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use motion_data::{
    FEATURE_DIM, MotionSample, Split, TEXT_DIM, TextFeatures, write_sample, write_split,
};

/// A fresh empty folder under the system temp dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "motion-data-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create scratch dir");
        Scratch(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Feature value of sample `s`, frame `t`, channel `j`: distinct everywhere and exactly
/// representable in f32.
pub fn feat(s: usize, t: usize, j: usize) -> f32 {
    (s * 100_000 + t * 256 + j) as f32 * 0.125
}

/// Token value of sample `s`, caption `c`, token `l`, channel `k`.
pub fn tok(s: usize, c: usize, l: usize, k: usize) -> f32 {
    (s * 1000 + c * 100 + l) as f32 + k as f32 / 1024.0
}

/// (id, frames, captions, tokens per caption) of the hand-built samples.
pub const SAMPLES: [(&str, usize, &[&str], &[usize]); 3] = [
    (
        "a000",
        10,
        &["a person walks", "someone walks forward"],
        &[5, 6],
    ),
    ("b001", 4, &["a person jumps"], &[4]),
    (
        "c002",
        7,
        &["a man sits down", "sitting", "a person sits"],
        &[6, 3, 8],
    ),
];

pub fn sample(s: usize, with_text: bool) -> MotionSample {
    let (id, frames, caps, toks) = SAMPLES[s];
    let features = (0..frames)
        .flat_map(|t| (0..FEATURE_DIM).map(move |j| feat(s, t, j)))
        .collect();
    let text = with_text.then(|| TextFeatures {
        pooled: (0..caps.len())
            .flat_map(|c| (0..TEXT_DIM).map(move |k| -tok(s, c, 0, k)))
            .collect(),
        tokens: toks
            .iter()
            .enumerate()
            .map(|(c, &l)| {
                (0..l)
                    .flat_map(|i| (0..TEXT_DIM).map(move |k| tok(s, c, i, k)))
                    .collect()
            })
            .collect(),
    });
    MotionSample {
        id: id.to_string(),
        features,
        frames,
        captions: caps.iter().map(|c| c.to_string()).collect(),
        text,
    }
}

/// Writes the 3 samples as the train split of `root` (val/test split files empty).
pub fn write_three(root: &Path, with_text: bool) {
    for s in 0..3 {
        write_sample(root, &sample(s, with_text)).expect("write sample");
    }
    let ids: Vec<String> = SAMPLES.iter().map(|s| s.0.to_string()).collect();
    write_split(root, Split::Train, &ids).expect("write split");
}
