//! Numpy object arrays (`caption_clip/seq/*.npy`): the input is the pickle that follows a
//! fixed `|O` header, so that the fuzzer explores the pickle reader.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn header() -> &'static [u8] {
    static H: OnceLock<Vec<u8>> = OnceLock::new();
    H.get_or_init(|| {
        let mut h = "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }".to_string();
        h.push_str(&" ".repeat((64 - (10 + h.len() + 1) % 64) % 64));
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out
    })
}

fuzz_target!(|data: &[u8]| {
    let mut file = header().to_vec();
    file.extend_from_slice(data);
    let _ = motion_dit::motion_data::npy::parse_npy(&file, Path::new("caption_clip/seq/fuzz.npy"));
});
