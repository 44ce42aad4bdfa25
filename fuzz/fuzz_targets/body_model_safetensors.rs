//! `smpl::BodyModel::from_npz` on a `.safetensors` body model, through a file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use motion_dit::candle::Device;

fuzz_target!(|data: &[u8]| {
    let path = motion_dit_fuzz::write_input("body", "fuzz.safetensors", data);
    let _ = motion_dit::smpl::BodyModel::from_npz(&path, &Device::Cpu);
});
