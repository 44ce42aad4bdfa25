//! `.safetensors` readers: network weights (`dit::Dit::from_safetensors_bytes`, a tiny
//! configuration) and normaliser statistics (`Normalizer::from_safetensors_keys`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use motion_dit::candle::Device;
use motion_dit::dit::{Dit, DitConfig};

fuzz_target!(|data: &[u8]| {
    static CFG: OnceLock<DitConfig> = OnceLock::new();
    let cfg = CFG.get_or_init(motion_dit_fuzz::tiny_dit_config);
    let _ = Dit::from_safetensors_bytes(data, "fuzz.safetensors", cfg, &Device::Cpu);
    let path = motion_dit_fuzz::write_input("safetensors", "stats.safetensors", data);
    let _ = motion_dit::motion_repr::Normalizer::from_safetensors_keys(
        &path,
        "mean",
        "std",
        &Device::Cpu,
    );
});
