//! `motion_data::read_folder` on a two-sample dataset folder, one of its files (chosen by the
//! first input byte: features, pooled CLIP, CLIP tokens, captions, split) replaced by the
//! rest of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use motion_dit::motion_data::{Split, read_folder};
use motion_dit_fuzz::{DATASET_FILES, with_dataset_file};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let file = DATASET_FILES[usize::from(which) % DATASET_FILES.len()];
    with_dataset_file(file, rest, |root| {
        let _ = read_folder(root, Split::Train);
    });
});
