#!/usr/bin/env python3
"""Reference timings of the evaluation metrics, numpy/scipy, on the fixture's 640 x 256 data.

Re-implements the PyTorch reference's formulas as `fixtures/metrics.json` describes them
(FD: float32 batch sums of 64 rows accumulated in float64, eigenvalues of the non-symmetric
product cov_r @ cov_f; the textbook scipy `sqrtm` variant; PRDC: k = 3, 5 chunks, float32
matrix-product distances; retrieval: batches of 64), checks every value against the fixture,
then times each metric so the Rust figures (`cargo bench -p metrics`) can be compared on the
same machine.

Usage (2 threads, like the CI machine):

    pip install numpy scipy
    OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 \
        python3 data-scripts/bench_metrics_reference.py [--fixtures fixtures] [--repeat 30]

Prints one line per metric: median and best wall time in milliseconds.
"""

import argparse
import json
import struct
import time
from pathlib import Path

import numpy as np
import scipy.linalg

DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "U8": np.uint8}


def load_safetensors(path):
    """Minimal safetensors reader (8-byte little-endian header size, JSON header, raw data)."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    out = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        arr = np.frombuffer(raw[base + start : base + end], dtype=DTYPES[meta["dtype"]])
        out[key] = arr.reshape(meta["shape"]).copy()
    return out


def fd_reference(real, fake, batch=64):
    """FD as the reference: float32 batch sums into float64 states, general eigen-solver."""

    def stats(x):
        s = np.zeros(x.shape[1])
        ss = np.zeros((x.shape[1], x.shape[1]))
        for i in range(0, len(x), batch):
            b = x[i : i + batch]
            s += b.sum(0, dtype=np.float32).astype(np.float64)
            ss += (b.T @ b).astype(np.float64)
        n = len(x)
        mu = s / n
        cov = (ss - n * np.outer(mu, mu)) / (n - 1)
        return mu, cov

    mu_r, cov_r = stats(real)
    mu_f, cov_f = stats(fake)
    eig = np.linalg.eigvals(cov_r @ cov_f)
    tr_sqrt = np.sqrt(eig.astype(np.complex128)).real.sum()
    return float(((mu_r - mu_f) ** 2).sum() + np.trace(cov_r) + np.trace(cov_f) - 2 * tr_sqrt)


def fd_scipy(real, fake):
    """Textbook FD with scipy.linalg.sqrtm (the common pytorch-fid implementation)."""
    mu_r, mu_f = real.mean(0, dtype=np.float64), fake.mean(0, dtype=np.float64)
    cov_r = np.cov(real.astype(np.float64), rowvar=False)
    cov_f = np.cov(fake.astype(np.float64), rowvar=False)
    covmean = scipy.linalg.sqrtm(cov_r @ cov_f)
    return float(
        ((mu_r - mu_f) ** 2).sum() + np.trace(cov_r) + np.trace(cov_f) - 2 * np.trace(covmean).real
    )


def dist(a, b):
    """float32 Euclidean distances by the matrix-product form of the reference."""
    an = (a * a).sum(1, keepdims=True)
    bn = (b * b).sum(1, keepdims=True)
    one_a = np.ones_like(an)
    one_b = np.ones_like(bn)
    lhs = np.concatenate([-2 * a, an, one_a], 1)
    rhs = np.concatenate([b, one_b, bn], 1)
    d2 = lhs @ rhs.T
    return np.sqrt(np.maximum(d2, np.float32(1e-30)))


def prdc_reference(real, fake, k=3, splits=5, quirk=False):
    size = -(-len(real) // splits)
    vals = np.zeros(4)
    for c in range(splits):
        r = real[c * size : (c + 1) * size]
        f = fake[c * size : (c + 1) * size]
        rad_r = np.partition(dist(r, r), k, axis=1)[:, k]
        rad_f = np.partition(dist(f, f), k, axis=1)[:, k]
        d = dist(r, f)
        inside = d < rad_r[:, None]
        precision = inside.any(0).mean()
        if quirk:
            recall = (d < rad_f[:, None]).any(1).mean()
        else:
            recall = (d < rad_f[None, :]).any(1).mean()
        density = inside.sum(0).mean() / k
        coverage = (d.min(1) < rad_r).mean()
        vals += np.array([precision, recall, density, coverage]) / splits
    return vals


def retrieval_reference(text, motion, batch=64, top_k=(1, 2, 3)):
    hits = np.zeros(len(top_k))
    mm = 0.0
    for i in range(0, len(text), batch):
        d = dist(text[i : i + batch], motion[i : i + batch])
        order = np.argsort(d, axis=1, kind="stable")
        rank = (order == np.arange(len(d))[:, None]).argmax(1)
        hits += [(rank < k).sum() for k in top_k]
        mm += float(np.trace(d))
    return hits / len(text), mm / len(text)


def timed(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * np.median(times), 1e3 * min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", default=str(Path(__file__).resolve().parent.parent / "fixtures"))
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    t = load_safetensors(Path(args.fixtures) / "metrics.safetensors")
    real, fake, text = t["input.real"], t["input.fake"], t["input.text"]

    # Correctness against the stored reference values first.
    fd = fd_reference(real, fake)
    assert abs(fd - float(t["metric.fd"])) <= 1e-4 * abs(float(t["metric.fd"])), fd
    assert abs(fd_scipy(real, fake) - float(t["metric.fd_scipy"])) <= 1e-6 * fd
    p = prdc_reference(real, fake)
    expect = [t[f"metric.{m}"] for m in ("precision", "recall_fixed_formula", "density", "coverage")]
    assert np.allclose(p, np.array(expect, dtype=np.float64), rtol=0, atol=1e-12), (p, expect)
    assert abs(prdc_reference(real, fake, quirk=True)[1] - float(t["metric.recall"])) < 1e-12
    r, mm = retrieval_reference(text, fake)
    assert np.allclose(r, [t["metric.R1"], t["metric.R2"], t["metric.R3"]], atol=1e-6), r
    assert abs(mm - float(t["metric.mm_distance"])) <= 1e-5 * mm
    print("all reference values reproduced")

    for name, fn in [
        ("fd (eigvals of cov_r @ cov_f, as the reference)", lambda: fd_reference(real, fake)),
        ("fd (scipy.linalg.sqrtm)", lambda: fd_scipy(real, fake)),
        ("prdc (k=3, 5 splits)", lambda: prdc_reference(real, fake)),
        ("retrieval (batch 64, R@1/2/3 + mm)", lambda: retrieval_reference(text, fake)),
    ]:
        med, best = timed(fn, args.repeat)
        print(f"{name:50s} median {med:8.2f} ms   best {best:8.2f} ms")


if __name__ == "__main__":
    main()
