//! A model folder's `config.json` (`MotionModel::from_memory`, with valid weights and
//! statistics of a tiny network).
#![no_main]

use libfuzzer_sys::fuzz_target;
use motion_dit::MotionModel;
use motion_dit::candle::Device;

fuzz_target!(|data: &[u8]| {
    let mut files = motion_dit_fuzz::tiny_model_files().clone();
    files.insert("config.json".to_string(), data.to_vec());
    let _ = MotionModel::from_memory(&files, &Device::Cpu);
});
