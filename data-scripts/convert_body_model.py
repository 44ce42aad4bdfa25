#!/usr/bin/env python3
"""Convert an official SMPL / SMPL-H body model ``.pkl`` to ``.npz`` for the Rust loader.

The official model files (SMPL ``basicModel_*.pkl`` / ``SMPL_NEUTRAL.pkl``, SMPL-H
``SMPLH_{NEUTRAL,MALE,FEMALE}.pkl`` / MANO-merged ``model.pkl``) are Python 2 pickles that hold
chumpy arrays and a scipy sparse ``J_regressor``. Rust cannot read them; this script writes the
same arrays as a plain (compressed) numpy ``.npz`` in the official layout, which
``smpl::BodyModel::from_npz`` loads:

    v_template [V,3] f32, f [F,3] int32, J_regressor [J,V] f32 (dense), weights [V,J] f32,
    kintree_table [2,J] int64, shapedirs [V,3,B] f32, posedirs [V,3,9(J-1)] f32,
    and, for SMPL-H, hands_meanl / hands_meanr [45] f32, hands_componentsl / hands_componentsr
    [N,45] f32.

chumpy is NOT needed: the pickle is loaded with a stub for the ``chumpy`` classes (their
``__setstate__`` keeps the stored array ``x``), with ``encoding="latin1"`` for Python 2
pickles. numpy and scipy must be installed (scipy only to unpickle the sparse regressor).

Usage:
    python data-scripts/convert_body_model.py SMPLH_NEUTRAL.pkl SMPLH_NEUTRAL.npz
    python data-scripts/convert_body_model.py --uncompressed model.pkl model.npz
    python data-scripts/convert_body_model.py --list SMPLH_NEUTRAL.pkl   # show arrays only

The output is written atomically (temporary file + rename). Arrays other than the ones listed
above (e.g. ``bs_style``, ``vert_sym_idxs``) are dropped; pass ``--keep-extra`` to keep every
numeric array.
"""

import argparse
import os
import pickle
import sys
import tempfile
import types

import numpy as np

REQUIRED = ["v_template", "f", "J_regressor", "weights", "kintree_table"]
OPTIONAL = [
    "shapedirs",
    "posedirs",
    "hands_meanl",
    "hands_meanr",
    "hands_componentsl",
    "hands_componentsr",
]


def _install_chumpy_stub():
    """Registers fake ``chumpy`` modules so chumpy arrays unpickle to objects holding ``x``."""
    if "chumpy" in sys.modules:
        return

    class Ch(object):
        def __init__(self, *args, **kwargs):
            self.x = args[0] if args else None

        def __setstate__(self, state):
            if isinstance(state, dict):
                self.__dict__.update(state)
            else:
                self.x = state

    names = ["chumpy", "chumpy.ch", "chumpy.ch_ops", "chumpy.reordering", "chumpy.utils",
             "chumpy.logic", "chumpy.linalg"]
    for name in names:
        mod = types.ModuleType(name)
        mod.__getattr__ = lambda attr, _ch=Ch: _ch  # every class name resolves to the stub
        mod.Ch = Ch
        sys.modules[name] = mod


def _to_array(value):
    """chumpy stub / scipy sparse / list -> dense numpy array (or None if not numeric)."""
    if hasattr(value, "x") and not isinstance(value, np.ndarray):
        value = value.x
        if hasattr(value, "x") and not isinstance(value, np.ndarray):
            return _to_array(value)
    if hasattr(value, "toarray"):  # scipy sparse (J_regressor)
        value = value.toarray()
    try:
        arr = np.asarray(value)
    except Exception:
        return None
    if arr.dtype == object or arr.dtype.kind not in "fiub":
        return None
    return arr


def load_pkl(path):
    """Loads an official model pickle into a dict of numpy arrays."""
    _install_chumpy_stub()
    with open(path, "rb") as fh:
        data = pickle.load(fh, encoding="latin1")
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a dict pickle, got {type(data).__name__}")
    out = {}
    for key, value in data.items():
        arr = _to_array(value)
        if arr is not None:
            out[key] = arr
    return out


def to_official_layout(arrays, keep_extra=False):
    """Checks the required arrays and fixes dtypes: float32 geometry, int32 f, int64 kintree."""
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise SystemExit(f"missing required arrays: {missing}; found {sorted(arrays)}")
    out = {}
    keys = REQUIRED + [k for k in OPTIONAL if k in arrays]
    if keep_extra:
        keys += [k for k in arrays if k not in keys]
    for key in keys:
        arr = np.ascontiguousarray(arrays[key])
        if key == "f":
            arr = arr.astype(np.int32)
        elif key == "kintree_table":
            arr = arr.astype(np.int64)
            # The root's parent is stored as uint32 max (4294967295) in the official files.
            arr[0, 0] = -1 if arr[0, 0] > arr.shape[1] else arr[0, 0]
        elif arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
        out[key] = arr
    v, j = out["v_template"].shape[0], out["J_regressor"].shape[0]
    checks = {
        "J_regressor": (j, v),
        "weights": (v, j),
        "kintree_table": (2, j),
    }
    for key, shape in checks.items():
        if out[key].shape != shape:
            raise SystemExit(f"{key} has shape {out[key].shape}, expected {shape}")
    if "posedirs" in out and out["posedirs"].shape != (v, 3, 9 * (j - 1)):
        raise SystemExit(f"posedirs has shape {out['posedirs'].shape}, expected {(v, 3, 9 * (j - 1))}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input", help="official model .pkl")
    ap.add_argument("output", nargs="?", help="output .npz (default: input with .npz)")
    ap.add_argument("--uncompressed", action="store_true", help="np.savez instead of savez_compressed")
    ap.add_argument("--keep-extra", action="store_true", help="keep every numeric array")
    ap.add_argument("--list", action="store_true", help="print the arrays and exit")
    args = ap.parse_args(argv)

    arrays = load_pkl(args.input)
    if args.list:
        for key in sorted(arrays):
            print(f"{key:20s} {str(arrays[key].dtype):8s} {arrays[key].shape}")
        return 0
    out = to_official_layout(arrays, keep_extra=args.keep_extra)
    output = args.output or os.path.splitext(args.input)[0] + ".npz"
    folder = os.path.dirname(os.path.abspath(output))
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=folder)
    os.close(fd)
    try:
        save = np.savez if args.uncompressed else np.savez_compressed
        with open(tmp, "wb") as fh:
            save(fh, **out)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    for key, arr in out.items():
        print(f"{key:20s} {str(arr.dtype):8s} {arr.shape}")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
