#!/usr/bin/env python3
"""Checks the files the README's quickstart command printed: each exists and parses.

Reads the command's stdout on stdin, takes every printed path that exists relative to the
repository root, and checks it by its extension with the standard library only:
  .npy  header, float32 little-endian, data length = product of the shape
  .glb  glTF 2.0 binary: magic, version, total length, a JSON chunk that parses, a BIN chunk
  .bvh  HIERARCHY / MOTION sections, "Frames: N" and N rows of as many numbers as channels
  .gif  GIF89a header, non-zero size, ends with the trailer byte
  .json parses
Fails when the output names no file, or when any named file is missing or malformed.
"""

import ast
import json
import re
import struct
import sys
from pathlib import Path


def check_npy(data: bytes) -> str:
    if data[:6] != b"\x93NUMPY":
        raise ValueError("no NUMPY magic")
    major = data[6]
    if major == 1:
        (hlen,) = struct.unpack("<H", data[8:10])
        start = 10
    else:
        (hlen,) = struct.unpack("<I", data[8:12])
        start = 12
    header = ast.literal_eval(data[start : start + hlen].decode("latin1"))
    if header["descr"] != "<f4" or header["fortran_order"]:
        raise ValueError(f"unexpected header {header}")
    shape = header["shape"]
    count = 1
    for d in shape:
        count *= d
    body = len(data) - start - hlen
    if count == 0 or body != 4 * count:
        raise ValueError(f"shape {shape} but {body} data bytes")
    values = struct.unpack(f"<{count}f", data[start + hlen :])
    if any(v != v or v in (float("inf"), float("-inf")) for v in values):
        raise ValueError("non-finite values")
    return f"float32 {list(shape)}"


def check_glb(data: bytes) -> str:
    magic, version, length = struct.unpack("<4sII", data[:12])
    if magic != b"glTF" or version != 2 or length != len(data):
        raise ValueError(f"bad header {magic!r} v{version} length {length} of {len(data)}")
    clen, ctype = struct.unpack("<I4s", data[12:20])
    if ctype != b"JSON":
        raise ValueError("first chunk is not JSON")
    doc = json.loads(data[20 : 20 + clen])
    rest = data[20 + clen :]
    blen, btype = struct.unpack("<I4s", rest[:8])
    if btype != b"BIN\x00" or blen + 8 > len(rest):
        raise ValueError("no BIN chunk")
    return f"{len(doc.get('meshes', []))} mesh(es), {len(doc.get('animations', []))} animation(s)"


def check_bvh(data: bytes) -> str:
    text = data.decode("ascii")
    if not text.startswith("HIERARCHY") or "MOTION" not in text:
        raise ValueError("no HIERARCHY / MOTION")
    channels = sum(int(n) for n in re.findall(r"CHANNELS\s+(\d+)", text))
    frames = int(re.search(r"Frames:\s*(\d+)", text).group(1))
    motion = text.split("Frame Time:", 1)[1].splitlines()[1:]
    rows = [r for r in motion if r.strip()]
    if frames == 0 or len(rows) != frames:
        raise ValueError(f"Frames: {frames} but {len(rows)} rows")
    for r in rows:
        if len([float(v) for v in r.split()]) != channels:
            raise ValueError(f"a row without {channels} values")
    return f"{frames} frames x {channels} channels"


def check_gif(data: bytes) -> str:
    if data[:6] != b"GIF89a" or data[-1:] != b"\x3b":
        raise ValueError("not a complete GIF89a")
    w, h = struct.unpack("<HH", data[6:10])
    if w == 0 or h == 0:
        raise ValueError("zero size")
    frames = data.count(b"\x21\xf9\x04")  # graphic control extensions, one per frame
    return f"{w}x{h}, {frames} frame(s)"


CHECKS = {".npy": check_npy, ".glb": check_glb, ".bvh": check_bvh, ".gif": check_gif,
          ".json": lambda d: f"{len(json.loads(d))} key(s)"}


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    paths = []
    for token in sys.stdin.read().split():
        p = Path(token.strip("\"',:"))
        if p.suffix in CHECKS and p not in paths:
            paths.append(p)
    if not paths:
        sys.exit("the quickstart printed no file paths")
    bad = 0
    for p in paths:
        full = p if p.is_absolute() else root / p
        try:
            what = CHECKS[p.suffix](full.read_bytes())
            print(f"ok   {p}: {what}")
        except Exception as e:  # any failure is a finding, reported with its file
            bad += 1
            print(f"FAIL {p}: {e}")
    kinds = {p.suffix for p in paths}
    missing = {".npy", ".glb", ".bvh", ".gif"} - kinds
    if missing:
        bad += 1
        print(f"FAIL the quickstart printed no {sorted(missing)} file")
    if bad:
        sys.exit(f"{bad} problem(s)")


if __name__ == "__main__":
    main()
