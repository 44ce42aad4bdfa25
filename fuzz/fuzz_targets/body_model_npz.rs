//! `smpl::BodyModel::from_bytes` on an `.npz` body model (the reader behind
//! `BodyModel::from_npz`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use motion_dit::candle::Device;

fuzz_target!(|data: &[u8]| {
    let _ = motion_dit::smpl::BodyModel::from_bytes(data, "fuzz.npz", &Device::Cpu);
});
