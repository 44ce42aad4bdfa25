//! The `.npy` reader of dataset features (`motion_data::npy::parse_npy`) and of statistics
//! (`motion_repr::Normalizer::from_stem` with `<stem>-mean.npy`).
#![no_main]

use std::path::Path;
use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use motion_dit::candle::Device;

fuzz_target!(|data: &[u8]| {
    let _ = motion_dit::motion_data::npy::parse_npy(data, Path::new("smpl_rifke/fuzz.npy"));
    static STD: Once = Once::new();
    let dir = motion_dit_fuzz::scratch("npy");
    STD.call_once(|| {
        let std = motion_dit::motion_data::npy::npy_bytes_f32(&[205], &[1.0; 205]);
        std::fs::write(dir.join("fuzz-std.npy"), std).expect("write");
    });
    motion_dit_fuzz::write_input("npy", "fuzz-mean.npy", data);
    let _ = motion_dit::motion_repr::Normalizer::from_stem(dir, "fuzz", &Device::Cpu);
});
