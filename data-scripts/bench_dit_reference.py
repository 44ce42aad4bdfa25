#!/usr/bin/env python3
"""PyTorch reference timings of the three diffusion transformers (DiT), CPU, for comparison with
the Rust `dit` crate's criterion figures (`cargo bench -p dit --bench dit`) on the same machine.

The networks are our own PyTorch implementation, written from the specification (the design
document's section 4.3 "Denoiser (DiT)") and, in full detail, the `description` fields of
`fixtures/dit_incontext.json`, `fixtures/dit_adaln.json` and `fixtures/dit_cross_attention.json`:
module paths equal the reference state-dict names (`model.backbone_module.3.sa.qkv.weight`, ...),
the time embedding of `gamma * 1000` is `[cos, sin]` standardised with the UNBIASED std, GELU is
the exact erf form, LayerNorms use eps 1e-6, and the in-context variant reproduces the reference's
additive float token mask (+1 on condition tokens and valid frames, +0 on padded frames, so padded
frames are still attended). Attention runs through `torch.nn.functional.scaled_dot_product_attention`
by default (`--attention manual` uses explicit matmul / softmax instead).

`--check` proves that what is timed is the real architecture: it loads every fixture's
`weights.<key>` (plus the sinusoid `pe` buffers, recomputed and overwritten by the stored
`pe_rows.*`) into the modules with a STRICT state-dict load, runs the fixture inputs (fixture
`input.mask` is 1 = PADDED) and asserts `output.out` / `output.out_uncond` within the JSON's
`tolerance_suggestion`; it also checks the guided DDIM sampler against `fixtures/sampling.json`
(10 DDIM steps with CFG 3.5 on the dit_adaln network) within that file's tolerance.

The default mode times, at the reference size (`DitConfig::reference`: 205 features, 512-d
condition, latent 512, 8 layers, 16 heads, MLP x4; random weights), with `torch.inference_mode()`
and the modules in eval mode, after `--warmup` untimed runs, `--runs` timed runs (median and min):
- `forward/<variant>`: one forward of a batch of 8 x 197 frames, samples 3 and 7 padded to 157
  frames (as the Rust bench); cross-attention with 77 condition tokens of 512 (no condition mask);
- `ddim50_guided/adaln`: a full 50-step (`--ddim-steps`) DDIM sample (eta 0, cosine schedule, clip_min 1e-5) of one
  197-frame motion with classifier-free guidance (one forward of a batch of 2 per step,
  `x0 = u + 3.5 (c - u)`).

Install (CPU-only torch from the PyTorch index, plus safetensors and numpy):

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install -r data-scripts/requirements-bench.txt \
        --extra-index-url https://download.pytorch.org/whl/cpu

Run (from the repository root; 2 threads like the CI machine):

    .venv-bench/bin/python data-scripts/bench_dit_reference.py --check
    OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 \
        .venv-bench/bin/python data-scripts/bench_dit_reference.py --threads 2 --runs 10 \
        [--json target/bench_dit_reference.json]

Add `--only forward` or `--only ddim` to time one group, `--variants adaln` to time one network.

`--only nfe` times what `cargo bench --bench samplers -- nfe/reference` times: one guided network
evaluation (conditional and unconditional branch in one batch of 2B, `x0 = u + 3.5 (c - u)`) of
the reference-size AdaLN DiT on a `[B, 100, 205]` batch (5 s at 20 fps, no padding), B = 1 and 32.
A sampler's time per motion is NFE times this (its own arithmetic is under 1 %).
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file
from torch import nn

VARIANTS = ("adaln", "incontext", "cross_attention")
FIXTURE_FILES = {
    "incontext": "dit_incontext",
    "adaln": "dit_adaln",
    "cross_attention": "dit_cross_attention",
}

# ---------------------------------------------------------------------------------------------
# Modules (names = reference state-dict paths)
# ---------------------------------------------------------------------------------------------

ATTENTION_IMPL = "sdpa"


def sinusoid_table(max_len, d):
    """pe[p, 2i] = sin(p w_i), pe[p, 2i+1] = cos(p w_i), w_i = exp(2i * (-ln(10000) / d)), f32."""
    pos = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    w = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(max_len, d, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(pos * w)
    pe[:, 1::2] = torch.cos(pos * w)
    return pe.unsqueeze(0)


class PositionalEncoding(nn.Module):
    """Adds the first rows of a stored sinusoid buffer `pe` [1, max_len, d]."""

    def __init__(self, d, max_len=10000):
        super().__init__()
        self.register_buffer("pe", sinusoid_table(max_len, d))

    def forward(self, x):
        return x + self.pe[:, : x.shape[1]]


class TimeEmbedding(nn.Module):
    """gamma -> [cos(1000 g f), sin(1000 g f)] standardised (unbiased std) -> MLP, [B, d]."""

    def __init__(self, d):
        super().__init__()
        dt = d // 4
        self.encode_time = nn.Module()
        i = torch.arange(dt // 2, dtype=torch.float32)
        self.encode_time.register_buffer("freqs", torch.pow(torch.tensor(1e-4), 2 * i / dt))
        self.map_time = nn.Sequential(nn.Linear(dt, d), nn.SiLU(), nn.Linear(d, d))

    def forward(self, gamma):
        a = torch.outer(gamma * 1000, self.encode_time.freqs)
        e = torch.cat([torch.cos(a), torch.sin(a)], dim=-1)
        e = (e - e.mean(-1, keepdim=True)) / e.std(-1, keepdim=True)
        return self.map_time(e)


def attention(q, k, v, heads, mask):
    """Multi-head attention on [B, N, d] projections, heads channel-major (h d).

    `mask`: None, a bool [B, 1, 1, Nk] (True = attend) or a float [B, 1, 1, Nk] added to logits.
    """
    b, nq, d = q.shape
    nk = k.shape[1]
    dh = d // heads
    q = q.view(b, nq, heads, dh).transpose(1, 2)
    k = k.view(b, nk, heads, dh).transpose(1, 2)
    v = v.view(b, nk, heads, dh).transpose(1, 2)
    if ATTENTION_IMPL == "sdpa":
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    else:
        logits = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
        if mask is not None:
            if mask.dtype == torch.bool:
                logits = logits.masked_fill(~mask, float("-inf"))
            else:
                logits = logits + mask
        o = torch.softmax(logits, dim=-1) @ v
    return o.transpose(1, 2).reshape(b, nq, d)


class SelfAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x, mask=None):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.out(attention(q, k, v, self.heads, mask))


class CrossAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x, cond):
        k, v = self.kv(cond).chunk(2, dim=-1)
        o = self.out(attention(self.q(x), k, v, self.heads, None))
        # The reference replaces non-finite values of this output by 0.
        return torch.nan_to_num(o, nan=0.0, posinf=0.0, neginf=0.0)


def ffn(d, mult, dropout=0.0):
    # Indices 0 and 3 are the reference's Linear layers (1 = GELU, 2 = dropout).
    return nn.Sequential(
        nn.Linear(d, mult * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(mult * d, d)
    )


def layer_norm(d, affine=True):
    return nn.LayerNorm(d, eps=1e-6, elementwise_affine=affine)


class PreLNBlock(nn.Module):
    """z += SA(LN_a(z)); z += FFN(LN_b(z)) (in-context backbone and the condition encoder)."""

    def __init__(self, d, heads, mult):
        super().__init__()
        self.initial_ln = layer_norm(d)
        self.sa = SelfAttention(d, heads)
        self.middle_ln = layer_norm(d)
        self.ffn = ffn(d, mult)

    def forward(self, z, mask=None):
        z = z + self.sa(self.initial_ln(z), mask)
        return z + self.ffn(self.middle_ln(z))


class AdaLNBlock(nn.Module):
    def __init__(self, d, heads, mult):
        super().__init__()
        self.adaln_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.sa = SelfAttention(d, heads)
        self.ffn = ffn(d, mult)
        self.d = d

    def forward(self, h, c, mask):
        mods = self.adaln_modulation(c).unsqueeze(1).chunk(6, dim=-1)
        shift1, scale1, gate1, shift2, scale2, gate2 = mods
        ln = F.layer_norm
        a = ln(h, (self.d,), eps=1e-6) * (scale1 + 1) + shift1
        h = h + gate1 * self.sa(a, mask)
        b = ln(h, (self.d,), eps=1e-6) * (scale2 + 1) + shift2
        return h + gate2 * self.ffn(b)


class CrossAttentionBlock(nn.Module):
    def __init__(self, d, heads, mult):
        super().__init__()
        self.ca = CrossAttention(d, heads)
        self.ca_ln = layer_norm(d)
        self.initial_ln = layer_norm(d)
        self.sa = SelfAttention(d, heads)
        self.middle_ln = layer_norm(d)
        self.ffn = ffn(d, mult)

    def forward(self, h, cond, mask):
        h = h + self.ca(self.ca_ln(h), cond)
        h = h + self.sa(self.initial_ln(h), mask)
        return h + self.ffn(self.middle_ln(h))


class Denoiser(nn.Module):
    """network(gamma [B], x [B,T,F], y [B,C] or [B,L,C], mask [B,T] bool 1 = PADDED) -> [B,T,F]."""

    def __init__(self, variant, num_feats=205, cond_feats=512, d=512, layers=8, heads=16, mult=4,
                 cond_blocks=2, max_len=10000):
        super().__init__()
        self.variant = variant
        self.input_projection = nn.Sequential(nn.Linear(num_feats, d), PositionalEncoding(d, max_len))
        self.time_embedding = TimeEmbedding(d)
        if variant == "incontext":
            self.cond_projection = nn.Linear(cond_feats, d)
            blocks = [PreLNBlock(d, heads, mult) for _ in range(layers)]
        elif variant == "adaln":
            self.joint_cond_projection = nn.Linear(cond_feats, d)
            blocks = [AdaLNBlock(d, heads, mult) for _ in range(layers)]
        elif variant == "cross_attention":
            self.cond_projection = nn.Linear(cond_feats, d)
            self.cond_positional_embedding = PositionalEncoding(d, max_len)
            self.cond_sa = nn.ModuleList([PreLNBlock(d, heads, mult) for _ in range(cond_blocks)])
            blocks = [CrossAttentionBlock(d, heads, mult) for _ in range(layers)]
        else:
            raise ValueError(f"unknown variant {variant!r}")
        self.backbone_module = nn.ModuleList(blocks)
        if variant == "adaln":
            self.final_linear = nn.Linear(d, num_feats)
            self.final_adaln = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        else:
            self.final_norm = layer_norm(d)
            self.final_linear = nn.Linear(d, num_feats)
        self.d = d

    def forward(self, gamma, x, y, padded):
        valid = ~padded  # [B, T] True = valid frame
        h = self.input_projection(x)
        t = self.time_embedding(gamma)
        if self.variant == "incontext":
            c = self.cond_projection(y)
            z = torch.cat([t.unsqueeze(1), c.unsqueeze(1), h], dim=1)
            # Reference quirk: float ones (condition tokens) ++ bool valid mask -> float mask
            # ADDED to the logits (+1 valid / condition, +0 padded).
            ones = torch.ones(valid.shape[0], 2, dtype=torch.float32, device=x.device)
            m = torch.cat([ones, valid], dim=1)[:, None, None, :]
            for blk in self.backbone_module:
                z = blk(z, m)
            return self.final_linear(self.final_norm(z[:, 2:]))
        mask = valid[:, None, None, :]
        if self.variant == "adaln":
            c = self.joint_cond_projection(y) + t
            for blk in self.backbone_module:
                h = blk(h, c, mask)
            shift, scale = self.final_adaln(c).unsqueeze(1).chunk(2, dim=-1)
            h = F.layer_norm(h, (self.d,), eps=1e-6) * (scale + 1) + shift
            return self.final_linear(h)
        e = torch.cat([t.unsqueeze(1), self.cond_projection(y)], dim=1)
        e = self.cond_positional_embedding(e)
        for blk in self.cond_sa:
            e = blk(e, None)
        for blk in self.backbone_module:
            h = blk(h, e, mask)
        return self.final_linear(self.final_norm(h))


# ---------------------------------------------------------------------------------------------
# Diffusion: cosine schedule, guided DDIM (DESIGN section 4.4, fixtures/sampling.json)
# ---------------------------------------------------------------------------------------------


def cosine_gamma(t, clip_min):
    """gamma(t) in float32, reference operation order; t a float32 tensor."""
    u = t * -1.0
    u = u + 1.0
    u = u * torch.tensor(math.pi, dtype=torch.float32)
    u = u / 2
    c = torch.cos(u)
    c = c * c
    v_end = torch.cos(torch.tensor(0.0, dtype=torch.float32)) ** 2
    v_start = torch.cos(torch.tensor(math.pi, dtype=torch.float32) / 2) ** 2
    g = (v_end - c) / (v_end - v_start)
    return torch.clamp(g, clip_min, 1.0)


def ddim_grid(steps, clip_min):
    k = torch.arange(steps + 1, dtype=torch.float32)
    t = 1.0 - k / torch.tensor(float(steps), dtype=torch.float32)
    return cosine_gamma(t, clip_min)


def guided_x0(net, x, y, padded, g, w):
    b = x.shape[0]
    out = net(
        g.expand(2 * b).contiguous(),
        torch.cat([x, x]),
        torch.cat([y, torch.zeros_like(y)]),
        torch.cat([padded, padded]),
    )
    cond, uncond = out[:b], out[b:]
    return uncond + (cond - uncond) * w


def ddim_sample(net, x, y, padded, steps=50, w=3.5, clip_min=1e-5, trace=None):
    grid = ddim_grid(steps, clip_min)
    for k in range(steps):
        g, gn = grid[k], grid[k + 1]
        x0 = guided_x0(net, x, y, padded, g.reshape(1), w)
        eps = (x - torch.sqrt(g) * x0) / torch.sqrt(1 - g)
        x = torch.sqrt(gn) * x0 + torch.sqrt(1 - gn) * eps
        if trace is not None:
            trace.append((g, x0, x))
    return x


# ---------------------------------------------------------------------------------------------
# --check
# ---------------------------------------------------------------------------------------------


def config_kwargs(cfg):
    return dict(num_feats=cfg["num_feats"], cond_feats=cfg["num_cond_feats"], d=cfg["latent_dim"],
                layers=cfg["num_layers"], heads=cfg["num_heads"], mult=cfg["mlp_multiplier"])


def load_fixture_net(fixtures, variant):
    name = FIXTURE_FILES[variant]
    meta = json.loads((fixtures / f"{name}.json").read_text())
    data = {k: torch.from_numpy(v) for k, v in load_file(str(fixtures / f"{name}.safetensors")).items()}
    net = Denoiser(variant, **config_kwargs(meta["config"])).eval()
    sd = {k[len("weights."):]: v for k, v in data.items() if k.startswith("weights.")}
    for key, info in meta["state_dict"]["buffers_not_stored"].items():
        pe = sinusoid_table(info["full_shape"][1], info["full_shape"][2])
        rows = data[info["stored_as"]]
        pe[:, : rows.shape[1]] = rows
        sd[key] = pe
    expected = {("model." + k) for k in net.state_dict()}
    if set(sd) != expected:
        raise SystemExit(f"{name}: state-dict keys differ: missing {sorted(expected - set(sd))}, "
                         f"unexpected {sorted(set(sd) - expected)}")
    # Module paths carry the reference's `model.` prefix.
    net.load_state_dict({k[len("model."):]: v for k, v in sd.items()}, strict=True)
    return net, meta, data


def assert_close(actual, expected, atol, rtol, what):
    err = (actual - expected).abs()
    bound = atol + rtol * expected.abs()
    ok = bool((err <= bound).all()) and bool(torch.isfinite(actual).all())
    worst = float((err - bound).max())
    print(f"  {what:<42} max|diff| {float(err.max()):.3e}  (atol {atol:g}, rtol {rtol:g})  "
          f"{'ok' if ok else 'FAIL'}")
    if not ok:
        raise SystemExit(f"check failed: {what} exceeds the tolerance by {worst:.3e}")


def run_check(fixtures):
    print(f"check against {fixtures}/ (attention: {ATTENTION_IMPL})")
    for variant in ("incontext", "adaln", "cross_attention"):
        net, meta, data = load_fixture_net(fixtures, variant)
        tol = meta["tolerance_suggestion"]
        padded = data["input.mask"].bool()  # fixture mask: 1 = PADDED frame
        x, g, y = data["input.x"], data["input.gamma"], data["input.y"]
        with torch.inference_mode():
            out = net(g, x, y, padded)
            unc = net(g, x, torch.zeros_like(y), padded)
        print(f"{variant}: {sum(p.numel() for p in net.parameters())} parameters "
              f"(fixture says {meta['num_params']})")
        assert_close(out, data["output.out"], tol["atol"], tol["rtol"], "output.out")
        assert_close(unc, data["output.out_uncond"], tol["atol"], tol["rtol"], "output.out_uncond")
        if "alt.out_boolean_mask" in data:
            d = float((out - data["alt.out_boolean_mask"]).abs().max())
            print(f"  {'(quirk: |out - alt.out_boolean_mask|)':<42} max {d:.3e}  "
                  f"(must exceed atol: {'ok' if d > tol['atol'] else 'FAIL'})")
            if d <= tol["atol"]:
                raise SystemExit("check failed: the additive float-mask quirk is not visible")

    meta = json.loads((fixtures / "sampling.json").read_text())
    s = {k: torch.from_numpy(v) for k, v in load_file(str(fixtures / "sampling.safetensors")).items()}
    cfg = meta["config"]
    net, _, _ = load_fixture_net(fixtures, cfg["network"].removeprefix("dit_"))
    tol = meta["tolerance_suggestion"]
    trace = []
    with torch.inference_mode():
        grid = ddim_grid(cfg["ddim_steps"], cfg["ddim_clip_min"])
        out = ddim_sample(net, s["input.x"], s["input.y"], s["input.net_mask"].bool(),
                          steps=cfg["ddim_steps"], w=cfg["cfg"], clip_min=cfg["ddim_clip_min"],
                          trace=trace)
    print(f"sampling (guided DDIM, {cfg['ddim_steps']} steps, w {cfg['cfg']}, "
          f"clip_min {cfg['ddim_clip_min']:g}, {cfg['network']}):")
    gerr = float((grid - s["schedule.ddim_gammas"].reshape(-1)).abs().max())
    print(f"  {'schedule.ddim_gammas':<42} max|diff| {gerr:.3e}  {'ok' if gerr == 0 else 'FAIL'}")
    if gerr != 0:
        raise SystemExit("check failed: DDIM gamma grid differs from schedule.ddim_gammas")
    assert_close(trace[0][1], s["trace.ddim.x0_00"], tol["atol"], tol["rtol"], "trace.ddim.x0_00")
    assert_close(out, s["output.ddim"], tol["atol"], tol["rtol"], "output.ddim")
    print("check passed")


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


def reference_net(variant, seed):
    torch.manual_seed(seed)
    net = Denoiser(variant)  # DitConfig::reference: 205, 512, D 512, 8 layers, 16 heads, x4
    # Random (non-zero) weights everywhere, as the Rust bench's `init_random`.
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.02)
    return net.eval()


def bench_inputs(variant, b, f, gen, full_length=False):
    x = torch.randn(b, f, 205, generator=gen)
    gamma = torch.full((b,), 0.5)
    if variant == "cross_attention":
        y = torch.randn(b, 77, 512, generator=gen)
    else:
        y = torch.randn(b, 512, generator=gen)
    lengths = [f if (full_length or i % 4 != 3) else f - 40 for i in range(b)]
    padded = torch.arange(f)[None, :] >= torch.tensor(lengths)[:, None]
    return x, gamma, y, padded


def time_fn(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times),
            "runs": runs, "warmup": warmup}


def run_bench(args):
    gen = torch.Generator().manual_seed(0)
    results = {}
    with torch.inference_mode():
        if args.only in (None, "forward"):
            for variant in args.variants:
                net = reference_net(variant, 1)
                x, g, y, padded = bench_inputs(variant, 8, 197, gen)
                results[f"forward/{variant}"] = time_fn(lambda: net(g, x, y, padded),
                                                        args.warmup, args.runs)
                print(f"  forward/{variant}: {results[f'forward/{variant}']['median_ms']:.1f} ms",
                      file=sys.stderr, flush=True)
                if args.bf16 and variant == "adaln":
                    # PyTorch's bf16 CPU inference: autocast runs the linear layers (and the
                    # attention products) on oneDNN's bf16 kernels (AVX512-BF16 / AMX where the
                    # CPU has them); the twin of `forward/adaln_bf16_<kernel>`.
                    name = f"forward/{variant}_bf16_autocast"

                    def run_bf16():
                        with torch.autocast("cpu", dtype=torch.bfloat16):
                            return net(g, x, y, padded)

                    results[name] = time_fn(run_bf16, args.warmup, args.runs)
                    print(f"  {name}: {results[name]['median_ms']:.1f} ms", file=sys.stderr,
                          flush=True)
        if args.only in (None, "nfe"):
            net = reference_net("adaln", 1)
            for b in (1, 32):
                x, _, y, padded = bench_inputs("adaln", b, 100, gen, full_length=True)
                g = torch.full((1,), 0.5)  # guided_x0 expands it to the doubled batch
                name = f"nfe/reference_b{b}"
                results[name] = time_fn(lambda: guided_x0(net, x, y, padded, g, 3.5),
                                        args.warmup, args.runs)
                print(f"  {name}: {results[name]['median_ms']:.1f} ms", file=sys.stderr,
                      flush=True)
        if args.only in (None, "ddim"):
            net = reference_net("adaln", 1)
            x, _, y, padded = bench_inputs("adaln", 1, 197, gen, full_length=True)
            # Warm up with guided forwards (batch 2) rather than whole samples.
            for _ in range(args.warmup):
                guided_x0(net, x, y, padded, torch.full((1,), 0.5), 3.5)
            name = f"ddim{args.ddim_steps}_guided/adaln"
            results[name] = time_fn(
                lambda: ddim_sample(net, x, y, padded, steps=args.ddim_steps, w=3.5,
                                    clip_min=1e-5),
                0, max(1, args.ddim_runs))
    return results


def main():
    global ATTENTION_IMPL
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="verify against the fixtures and exit")
    p.add_argument("--fixtures", type=Path,
                   default=Path(__file__).resolve().parent.parent / "fixtures")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--runs", type=int, default=10, help="timed forward runs (default 10)")
    p.add_argument("--ddim-runs", type=int, default=3, help="timed DDIM samples (default 3)")
    p.add_argument("--ddim-steps", type=int, default=50, help="DDIM steps (default 50)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    p.add_argument("--only", choices=("forward", "ddim", "nfe"), default=None)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--attention", choices=("sdpa", "manual"), default="sdpa",
                   help="scaled_dot_product_attention (default) or explicit matmul/softmax")
    p.add_argument("--bf16", action="store_true",
                   help="also time the AdaLN forward under torch.autocast(bfloat16)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    ATTENTION_IMPL = args.attention
    torch.set_num_threads(args.threads)

    if args.check:
        run_check(args.fixtures)
        return

    load_before = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results = run_bench(args)
    env = {
        "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "attention": ATTENTION_IMPL,
        "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    la = [f"{v:.2f}" for v in (env["load_average_before"] or [])[:1]
          + (env["load_average_after"] or [])[:1]]
    print(f"PyTorch {env['torch']} CPU, {env['threads']} threads, attention {ATTENTION_IMPL}, "
          f"1-min load average before/after {' / '.join(la)} (of {env['cpu_count']} CPUs)")
    print(f"{'bench':<24} {'median ms':>10} {'min ms':>10} {'runs':>5}")
    for name, r in results.items():
        print(f"{name:<24} {r['median_ms']:>10.1f} {r['min_ms']:>10.1f} {r['runs']:>5}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps({"env": env, "results": results}, indent=2) + "\n")
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
