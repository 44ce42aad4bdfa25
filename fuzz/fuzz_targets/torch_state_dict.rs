//! `tensor_io::torch::read_state_dict` (reference checkpoints, TMR encoders, `.pt`
//! statistics) on a `torch.save` archive written to a file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = motion_dit_fuzz::write_input("torch", "fuzz.pt", data);
    let _ = tensor_io::torch::read_state_dict(&path);
});
