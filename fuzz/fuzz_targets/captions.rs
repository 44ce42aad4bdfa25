//! Caption files (`caption_raw/<id>.txt`) through `motion_data::read_folder`, and the caption
//! parser on the same text when it is UTF-8.
#![no_main]

use libfuzzer_sys::fuzz_target;
use motion_dit::motion_data::folder::parse_captions;
use motion_dit::motion_data::{Split, read_folder};
use motion_dit_fuzz::with_dataset_file;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_captions(text);
    }
    with_dataset_file("caption_raw/s001.txt", data, |root| {
        let _ = read_folder(root, Split::Train);
    });
});
