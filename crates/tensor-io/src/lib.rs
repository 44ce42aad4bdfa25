//! Hardened readers of the tensor files this workspace meets, at the bottom of the crate graph
//! so that every crate reading such files shares one implementation:
//!
//! - [`pickle`]: the subset of the pickle machine that numpy object arrays (`np.save` of an
//!   object array) and `torch.save` archives (bare tensors, state dicts, Lightning
//!   checkpoints) use, with every length, shape and size checked against the bytes present
//!   before anything is sliced or allocated. `motion-repr` (torch `.pt` statistics), `dit`
//!   (reference checkpoints) and `motion-data` (caption object arrays) read through it.
//! - [`torch`]: the float tensors of a `torch.save` state dict or Lightning checkpoint
//!   ([`torch::read_state_dict`]), for `dit` (reference checkpoints) and `tmr` (the TMR
//!   encoders).
//!
//! Nothing here prints or touches the network; errors name the file (where one is read), the
//! offset, key or field at fault.

pub mod pickle;
pub mod torch;
