#!/usr/bin/env python3
"""PyTorch reference timings for the shapes of the `tmr` crate's criterion bench.

Times, with random weights at the reference sizes and PyTorch's inference fast paths:
  motion  TMR motion encoder: Linear(205 -> 256), 2 tokens, 6 post-norm TransformerEncoder
          layers (d 256, 4 heads, ff 1024, GELU), key padding mask; batch 32 x 197 frames
          with lengths spread from 49 to 197 (as crates/tmr/benches/tmr.rs)
  text    TMR text encoder: same stack on CLIP token features, batch 32 x 32 tokens
  clip    CLIP ViT-B/32 text transformer (transformers.CLIPTextModel), 32 captions of 23 tokens

Usage (CPU PyTorch and transformers from PyPI):
    pip install torch transformers
    python data-scripts/bench_tmr_reference.py --threads 2            # all three
    python data-scripts/bench_tmr_reference.py motion --runs 20
Compare with `cargo bench -p tmr --bench tmr` on the same machine, one after the other.
"""

import argparse
import os
import time


def build(which, torch):
    nn = torch.nn
    if which in ("motion", "text"):
        nfeats, t = (205, 197) if which == "motion" else (512, 32)
        layer = nn.TransformerEncoderLayer(256, 4, 1024, 0.1, "gelu", batch_first=True)
        enc = nn.TransformerEncoder(layer, 6, enable_nested_tensor=True).eval()
        proj = nn.Linear(nfeats, 256).eval()
        tokens = torch.randn(2, 256)
        x = torch.randn(32, t, nfeats)
        lens = [t // 4 + (3 * t // 4) * b // 31 for b in range(32)]
        mask = torch.tensor([[i < n for i in range(t)] for n in lens])
        pe = torch.randn(t + 2, 256)
        key_pad = ~torch.cat([torch.ones(32, 2, dtype=torch.bool), mask], 1)

        def run():
            z = proj(x)
            seq = torch.cat([tokens[None].expand(32, -1, -1), z], 1) + pe
            return enc(seq, src_key_padding_mask=key_pad)[:, :2]

        return run
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=512, intermediate_size=2048,
                         num_hidden_layers=12, num_attention_heads=8,
                         max_position_embeddings=77, hidden_act="quick_gelu")
    model = CLIPTextModel(cfg).eval()
    ids = torch.randint(0, 49000, (32, 23))
    return lambda: model(input_ids=ids).last_hidden_state


def main():
    ap = argparse.ArgumentParser(description="PyTorch timings for the tmr bench shapes")
    ap.add_argument("which", nargs="*", help="motion | text | clip (default: all three)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    args.which = args.which or ["motion", "text", "clip"]
    bad = [w for w in args.which if w not in ("motion", "text", "clip")]
    if bad:
        ap.error(f"unknown benchmark {bad}: choose from motion, text, clip")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, "
          f"load average {os.getloadavg()[0]:.2f}")
    for which in args.which:
        run = build(which, torch)
        with torch.inference_mode():
            for _ in range(args.warmup):
                run()
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
        times.sort()
        print(f"{which:8s} median {times[len(times) // 2] * 1e3:8.1f} ms   "
              f"min {times[0] * 1e3:8.1f} ms   runs {args.runs}")


if __name__ == "__main__":
    main()
