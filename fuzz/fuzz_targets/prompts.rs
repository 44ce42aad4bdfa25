//! Prompt files (`motion_dit::read_prompts_file`, `generate --prompts`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = motion_dit_fuzz::write_input("prompts", "prompts.txt", data);
    let _ = motion_dit::read_prompts_file(&path);
});
