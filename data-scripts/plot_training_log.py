#!/usr/bin/env python3
"""Plot the training log of a `train` or `train_tmr` run as a PNG.

Reads `<run>/loss.csv` (step, loss, ...; `train_tmr` adds nce, kl, embedding) and, when present,
`<run>/val.csv` (step, val_loss; `train_tmr`: step, r1), and draws the training loss (raw and smoothed) with the
validation loss on one log-scale chart, the learning rate below it.

Usage (needs `pip install matplotlib`):

    python data-scripts/plot_training_log.py runs/default --out assets/default_model/loss.png
"""

import argparse
import csv
from pathlib import Path


def read_csv(path: Path) -> dict:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    out = {}
    for key in rows[0]:
        try:
            out[key] = [float(r[key]) for r in rows]
        except (TypeError, ValueError):
            continue
    return out


def smooth(values: list, window: int) -> list:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a run folder holding loss.csv")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--title", default=None, help="chart title [default: the run folder name]")
    ap.add_argument("--mark", type=float, default=None, metavar="STEP",
                    help="draw a vertical line at this step (e.g. the snapshot that was kept)")
    ap.add_argument("--mark-label", default="kept snapshot", help="legend text of --mark")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss = read_csv(args.run / "loss.csv")
    if "step" not in loss or "loss" not in loss:
        raise SystemExit(f"{args.run / 'loss.csv'}: no step/loss columns")
    val = read_csv(args.run / "val.csv") if (args.run / "val.csv").is_file() else {}

    fig, (ax, lr_ax) = plt.subplots(
        2, 1, figsize=(8, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    steps = loss["step"]
    window = max(1, len(steps) // 50)
    ax.plot(steps, loss["loss"], color="#9ecae1", linewidth=0.6, label="training loss (per step)")
    ax.plot(steps, smooth(loss["loss"], window), color="#08519c", linewidth=1.5,
            label=f"training loss ({window}-step mean)")
    if "val_loss" in val:
        ax.plot(val["step"], val["val_loss"], "o-", color="#d94801", label="validation loss")
    if args.mark is not None:
        for a in (ax, lr_ax):
            a.axvline(args.mark, color="#238b45", linestyle="--", linewidth=1.2,
                      label=args.mark_label if a is ax else None)
    ax.set_yscale("log")
    ax.set_ylabel("loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left")
    if "r1" in val:  # train_tmr: validation retrieval on a second axis
        r_ax = ax.twinx()
        r_ax.plot(val["step"], val["r1"], "o-", color="#d94801", label="validation R@1")
        r_ax.set_ylabel("validation R@1 (all val pairs)")
        r_ax.set_ylim(bottom=0)
        r_ax.legend(loc="upper right")
    ax.set_title(args.title or args.run.name)
    if "lr" in loss:
        lr_ax.plot(steps, loss["lr"], color="#555555")
        lr_ax.set_ylabel("learning rate")
        lr_ax.grid(True, alpha=0.3)
    lr_ax.set_xlabel("optimiser step")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
