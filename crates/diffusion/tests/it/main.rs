//! Integration tests of the `diffusion` crate: golden fixtures of the PyTorch reference
//! (`sampling`, `loss_ddpm`), the analytic Gaussian convergence study and training utilities.

mod analytic;
mod fixtures;
mod train;
