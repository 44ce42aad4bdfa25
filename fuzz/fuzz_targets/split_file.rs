//! Split files: `motion_data::folder::read_split`, then `read_folder` over the ids it lists.
#![no_main]

use libfuzzer_sys::fuzz_target;
use motion_dit::motion_data::folder::read_split;
use motion_dit::motion_data::{Split, read_folder};
use motion_dit_fuzz::with_dataset_file;

fuzz_target!(|data: &[u8]| {
    with_dataset_file("humanml3d_train_split.txt", data, |root| {
        let _ = read_split(root, Split::Train);
        let _ = read_folder(root, Split::Train);
    });
});
