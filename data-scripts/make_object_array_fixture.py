#!/usr/bin/env python3
"""Write the small numpy OBJECT-array fixtures read by `motion-data`'s tests.

The reference data stores per-caption CLIP token features as `caption_clip/seq/<id>.npy`: a numpy
object array (pickled) whose elements are float arrays `[L_i, 512]`. This script writes a few such
files with values given by a closed formula, so the Rust test recomputes the expected numbers:

    value[c][l][k] = float32((c + 1) + l * 0.01 + k * 1e-4)      (computed in float64, then cast)

Files written (into --out, default crates/motion-data/tests/data/object_arrays):
  seq_numpy_default.npy   np.save of an object array (numpy's own pickle protocol), float32 items
  seq_protocol2.npy       same content, pickled with protocol 2 (numpy 1.x era files)
  seq_float64.npy         float64 items, numpy default protocol
  seq_fortran.npy         float32 items stored in Fortran order
  plain_float32.npy       a plain [3, 512] float32 array (the `token` layout), for comparison

Usage: python3 data-scripts/make_object_array_fixture.py [--out DIR]
Requires numpy (any 1.x or 2.x).
"""
import argparse
import os
import pickle

import numpy as np

LENGTHS = [3, 5, 2]
WIDTH = 512


def item(c, length, dtype):
    l = np.arange(length, dtype=np.float64)[:, None]
    k = np.arange(WIDTH, dtype=np.float64)[None, :]
    return ((c + 1) + l * 0.01 + k * 1e-4).astype(dtype)


def object_array(dtype, fortran=False):
    arr = np.empty(len(LENGTHS), dtype=object)
    for c, n in enumerate(LENGTHS):
        a = item(c, n, dtype)
        arr[c] = np.asfortranarray(a) if fortran else a
    return arr


def save_with_protocol(path, arr, protocol):
    # np.save has no protocol argument: write the .npy header with numpy's own helper, then the
    # pickle, exactly as np.save does.
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(arr))
        pickle.dump(arr, f, protocol=protocol)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join("crates", "motion-data", "tests", "data", "object_arrays"))
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    np.save(os.path.join(args.out, "seq_numpy_default.npy"), object_array(np.float32), allow_pickle=True)
    save_with_protocol(os.path.join(args.out, "seq_protocol2.npy"), object_array(np.float32), 2)
    np.save(os.path.join(args.out, "seq_float64.npy"), object_array(np.float64), allow_pickle=True)
    np.save(os.path.join(args.out, "seq_fortran.npy"), object_array(np.float32, fortran=True), allow_pickle=True)
    np.save(os.path.join(args.out, "plain_float32.npy"), item(0, 3, np.float32))
    # Self-check: numpy reads every file back.
    for name in ["seq_numpy_default", "seq_protocol2", "seq_float64", "seq_fortran"]:
        back = np.load(os.path.join(args.out, name + ".npy"), allow_pickle=True)
        assert [x.shape for x in back] == [(n, WIDTH) for n in LENGTHS], name
    print(f"wrote fixtures to {args.out} (numpy {np.__version__})")


if __name__ == "__main__":
    main()
