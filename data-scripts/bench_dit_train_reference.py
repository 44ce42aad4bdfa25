#!/usr/bin/env python3
"""PyTorch twin of `cargo bench -p dit --bench train`: one training step of each diffusion
transformer at the reference size on the CPU, for comparison on the same machine.

The networks are those of `bench_dit_reference.py` (same module paths and maths; `--check` there
verifies them against the fixtures), in training mode with the reference's stochastic parts at
0.1 (`DitConfig::reference`): dropout on the attention probabilities and on the MLP hidden
layer, stochastic depth on every residual branch (per sample), label dropout on the condition.
One step is what the Rust bench times: `t_idx` uniform in 0..100, gamma from the cosine schedule
(clip_min 1e-9), `x_t = sqrt(g) x0 + sqrt(1 - g) eps`, the MSE against `x0` over all elements,
`backward`, then `torch.optim.AdamW` (lr 1e-4, betas (0.9, 0.95), eps 1e-7, weight decay 0.1,
`foreach` implementation). Batch 8 x 197 frames, samples 3 and 7 padded by 40 frames;
cross-attention with 77 condition tokens. Also times a plain `[1576, 512] x [512, 2048]` matmul
(the first MLP layer's shape) as the ceiling and prints GFLOP/s of the matrix products.

Run (from the repository root; see `bench_dit_reference.py` for the install):

    OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 \
        .venv-bench/bin/python data-scripts/bench_dit_train_reference.py --threads 2 --runs 5
"""

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_dit_reference as ref  # noqa: E402

P = 0.1  # dropout, stochastic depth and label dropout of DitConfig::reference


def drop_path(x, training):
    if not training or P == 0.0:
        return x
    keep = (torch.rand(x.shape[0], *([1] * (x.dim() - 1))) >= P).to(x.dtype)
    return x * keep / (1.0 - P)


def attention(q, k, v, heads, mask, training):
    """Manual attention with dropout on the probabilities (as the Rust training path)."""
    b, nq, d = q.shape
    nk = k.shape[1]
    dh = d // heads
    q = q.view(b, nq, heads, dh).transpose(1, 2)
    k = k.view(b, nk, heads, dh).transpose(1, 2)
    v = v.view(b, nk, heads, dh).transpose(1, 2)
    logits = (q / math.sqrt(dh)) @ k.transpose(-1, -2)
    if mask is not None:
        if mask.dtype == torch.bool:
            logits = logits.masked_fill(~mask, -1e30)
        else:
            logits = logits + mask
    p = F.dropout(torch.softmax(logits, dim=-1), P, training)
    return (p @ v).transpose(1, 2).reshape(b, nq, d)


def patch_modules():
    """Training-mode forwards for the modules of `bench_dit_reference.py`."""

    def sa_forward(self, x, mask=None):
        q, kk, v = self.qkv(x).chunk(3, dim=-1)
        return self.out(attention(q, kk, v, self.heads, mask, self.training))

    def ca_forward(self, x, cond):
        kk, v = self.kv(cond).chunk(2, dim=-1)
        return self.out(attention(self.q(x), kk, v, self.heads, None, self.training))

    def preln_forward(self, z, mask=None):
        z = z + drop_path(self.sa(self.initial_ln(z), mask), self.training)
        return z + drop_path(self.ffn(self.middle_ln(z)), self.training)

    def adaln_forward(self, h, c, mask):
        shift1, scale1, gate1, shift2, scale2, gate2 = (
            self.adaln_modulation(c).unsqueeze(1).chunk(6, dim=-1))
        a = F.layer_norm(h, (self.d,), eps=1e-6) * (scale1 + 1) + shift1
        h = h + gate1 * drop_path(self.sa(a, mask), self.training)
        b = F.layer_norm(h, (self.d,), eps=1e-6) * (scale2 + 1) + shift2
        return h + gate2 * drop_path(self.ffn(b), self.training)

    def cross_forward(self, h, cond, mask):
        h = h + drop_path(self.ca(self.ca_ln(h), cond), self.training)
        h = h + drop_path(self.sa(self.initial_ln(h), mask), self.training)
        return h + drop_path(self.ffn(self.middle_ln(h)), self.training)

    ref.SelfAttention.forward = sa_forward
    ref.CrossAttention.forward = ca_forward
    ref.PreLNBlock.forward = preln_forward
    ref.AdaLNBlock.forward = adaln_forward
    ref.CrossAttentionBlock.forward = cross_forward
    ref.ffn = lambda d, mult, dropout=P: nn.Sequential(
        nn.Linear(d, mult * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(mult * d, d))


def forward_flops(variant, b=8, f=197, l=77, d=512, hid=2048, layers=8, feats=205, cond_blocks=2):
    """Matrix-product FLOPs of one forward (as `crates/dit/examples/train_timing.rs`)."""
    def block(n):
        return b * (2 * n * d * (4 * d + 2 * hid) + 4 * n * n * d)
    io = 2 * b * f * feats * d * 2
    if variant == "adaln":
        return io + layers * (block(f) + 2 * b * d * 6 * d)
    if variant == "incontext":
        return io + layers * block(f + 2)
    lc = l + 1
    cross = b * (2 * f * d * 2 * d + 2 * lc * d * 2 * d + 4 * f * lc * d)
    return io + cond_blocks * block(lc) + layers * (block(f) + cross)


def cosine_gamma(t, clip_min=1e-9):
    return ref.cosine_gamma(t, clip_min)


def train_step(net, opt, x0, y, padded, gen):
    b = x0.shape[0]
    t_idx = torch.randint(0, 100, (b,), generator=gen)
    g = cosine_gamma(t_idx.to(torch.float32) / 100.0).reshape(b, 1, 1)
    noise = torch.randn(x0.shape, generator=gen)
    x_t = g.sqrt() * x0 + (1 - g).sqrt() * noise
    keep = (torch.rand(b, generator=gen) >= P).to(y.dtype).reshape(b, *([1] * (y.dim() - 1)))
    out = net(g.reshape(b), x_t, y * keep, padded)
    loss = F.mse_loss(out, x0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=5, help="timed steps per variant (default 5)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--variants", nargs="+", choices=ref.VARIANTS, default=list(ref.VARIANTS))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    patch_modules()
    gen = torch.Generator().manual_seed(0)
    load = [os.getloadavg()[0]]
    a = torch.randn(1576, 512)
    w = torch.randn(2048, 512)
    gemm = ref.time_fn(lambda: a @ w.t(), 2, 20)
    gemm_rate = 2 * 1576 * 512 * 2048 / (gemm["median_ms"] / 1e3) / 1e9
    print(f"PyTorch {torch.__version__} CPU, {torch.get_num_threads()} threads")
    print(f"gemm_reference [1576,512]x[512,2048]: {gemm['median_ms']:.2f} ms, "
          f"{gemm_rate:.1f} GFLOP/s", flush=True)
    for variant in args.variants:
        net = ref.reference_net(variant, 1).train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-7,
                                weight_decay=0.1)
        x0, _, y, padded = ref.bench_inputs(variant, 8, 197, gen)
        times = []
        for i in range(args.warmup + args.runs):
            t0 = time.perf_counter()
            train_step(net, opt, x0, y, padded, gen)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        flops = 3 * forward_flops(variant)
        rate = flops / med / 1e9
        print(f"train_step/{variant}: median {med:.3f} s, min {min(times):.3f} s "
              f"({args.runs} runs); {flops / 1e9:.1f} GFLOP, {rate:.1f} GFLOP/s "
              f"({100 * rate / gemm_rate:.0f} % of the gemm)", flush=True)
    load.append(os.getloadavg()[0])
    print(f"1-min load average before/after: {load[0]:.2f} / {load[1]:.2f}")


if __name__ == "__main__":
    main()
