"""Measure the demo model against its random initialisation on held-out frames.

Two questions, asked of the face (F_f), pose (F_p) and trunk (F) embeddings
of a trained model and of the same network at its random initialisation
(``torch.manual_seed(SEED)``, as ``facepcl train`` seeds it):

1. **Mirror test** — how far does mirroring move a face, measured against
   how far another person is? For each held-out video frame x, the cosine
   distance d(x, flip(x)) is compared with d(x, y) for frames y of the other
   identities (training frames). Flipping changes the head pose (yaw and roll
   change sign) but not the person. The score is P(d(x, flip x) > d(x, y)):
   high when the embedding reacts to pose more than to identity, low when it
   ignores pose. PCL wants it higher for F_p than for F_f; an embedding that
   only sees pixels (random weights) finds a mirrored face very close.
2. **Identity under appearance change** — held-out frames, turned gray with
   their contrast and brightness changed (fixed seed), are queries; the
   training frames (colour) of all 12 identities are the gallery. Top-1
   identity accuracy and the AUC of same-person against other-person pairs.
   The man's queries come from ``noface_face.mov``, a video not trained on,
   while his gallery frames come from two other videos. Colour and lighting
   are what a random network matches on; PCL's face branch was trained to be
   invariant to them.
3. **Head-pose probe** — a ridge regression from each embedding to a head
   pose read off the detector's landmarks in the original frame (yaw proxy:
   the nose's offset from the eyes' midpoint over the eye distance; roll: the
   eye line's angle), fitted on the training frames (ridge strength by 5-fold
   cross-validation) and scored by R^2 on the held-out frames. PCL wants F_p
   to carry pose better than F_f.

Run after ``tools/make_demo_dataset.py`` and training::

    python tools/evaluate_demo_model.py facepcl/weights/pcl-demo --json out.json

The numbers go into the model card (``facepcl/weights/pcl-demo/README.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

SEED = 1234
FEATURES = ("face", "pose", "trunk")


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U)."""
    scores = np.concatenate([pos, neg])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos, n_neg = len(pos), len(neg)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _normed(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def load_split(root: Path, split: str) -> list[dict]:
    rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("split") == split and r.get("file")]


def _regray(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gray = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    gray = (gray - gray.mean()) * rng.uniform(0.6, 1.4) + gray.mean() * rng.uniform(0.6, 1.4)
    return np.repeat(gray.clip(0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def embed(model, files: list[Path], flip: bool = False, regray: bool = False) -> dict[str, np.ndarray]:
    from facepcl import FaceEmbedder
    from facepcl.io import load_image

    images = [load_image(f) for f in files]
    if flip:
        images = [np.ascontiguousarray(im[:, ::-1]) for im in images]
    if regray:
        rng = np.random.default_rng(SEED)
        images = [_regray(im, rng) for im in images]
    res = FaceEmbedder(model, detect=False, device="cpu").embed_loaded(images)
    return {k: _normed(getattr(res, k)) for k in FEATURES}


def mirror_test(model, root: Path, train: list[dict], held: list[dict]) -> dict[str, float]:
    frames = [r for r in held if r["video"] != "photo"]
    e = embed(model, [root / r["file"] for r in frames])
    f = embed(model, [root / r["file"] for r in frames], flip=True)
    g = embed(model, [root / r["file"] for r in train])
    ids = np.array([r["identity"] for r in frames])
    g_id = np.array([r["identity"] for r in train])
    out: dict[str, float] = {"frames": len(frames)}
    for k in FEATURES:
        d_flip = 1 - (e[k] * f[k]).sum(1)  # (Q,)
        d_other = 1 - e[k] @ g[k].T  # (Q, G)
        other = ids[:, None] != g_id[None, :]
        out[k] = float((d_flip[:, None] > d_other)[other].mean())
    return out


def retrieval(model, root: Path, train: list[dict], held: list[dict]) -> dict[str, dict]:
    queries = [r for r in held if r["identity"] in {"man", "woman"}]
    g = embed(model, [root / r["file"] for r in train])
    q = embed(model, [root / r["file"] for r in queries], regray=True)
    g_id = np.array([r["identity"] for r in train])
    q_id = np.array([r["identity"] for r in queries])
    out: dict[str, dict] = {}
    for k in FEATURES:
        sim = q[k] @ g[k].T
        top1 = g_id[sim.argmax(1)] == q_id
        same = q_id[:, None] == g_id[None, :]
        per = {who: float(top1[q_id == who].mean()) for who in ("man", "woman")}
        out[k] = {"top1": float(top1.mean()), "top1_by_identity": per, "pair_auc": auc(sim[same], sim[~same])}
    out["queries"] = {who: int((q_id == who).sum()) for who in ("man", "woman")}
    out["gallery"] = len(train)
    return out


def landmark_pose(rows: list[dict]) -> np.ndarray:
    """``(N, 2)`` [yaw proxy, roll in degrees] from the 5 landmarks in the original frame."""
    kps = np.array([r["kps"] for r in rows], np.float64)
    eyes = kps[:, 1] - kps[:, 0]
    dist = np.linalg.norm(eyes, axis=1)
    mid = (kps[:, 0] + kps[:, 1]) / 2
    unit = eyes / dist[:, None]
    yaw = ((kps[:, 2] - mid) * unit).sum(1) / dist  # nose offset along the eye line
    roll = np.degrees(np.arctan2(eyes[:, 1], eyes[:, 0]))
    return np.stack([yaw, roll], axis=1)


def _ridge(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    x1 = np.hstack([x, np.ones((len(x), 1))])
    reg = lam * np.eye(x1.shape[1])
    reg[-1, -1] = 0
    return np.linalg.solve(x1.T @ x1 + reg, x1.T @ y)


def _predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1))]) @ w


def _r2(y: np.ndarray, p: np.ndarray) -> float:
    return float(1 - ((y - p) ** 2).sum(0).sum() / ((y - y.mean(0)) ** 2).sum(0).sum())


def pose_probe(model, root: Path, train: list[dict], held: list[dict]) -> dict[str, float]:
    frames = [r for r in held if r["video"] != "photo"]
    xtr = embed(model, [root / r["file"] for r in train])
    xte = embed(model, [root / r["file"] for r in frames])
    ytr, yte = landmark_pose(train), landmark_pose(frames)
    mu, sd = ytr.mean(0), ytr.std(0)
    ytr, yte = (ytr - mu) / sd, (yte - mu) / sd  # both targets count equally in R^2
    folds = np.random.default_rng(SEED).permutation(len(train)) % 5
    out: dict[str, float] = {"train": len(train), "test": len(frames)}
    for k in FEATURES:
        def cv_error(lam: float, k=k) -> float:
            err = 0.0
            for f in range(5):
                w = _ridge(xtr[k][folds != f], ytr[folds != f], lam)
                err += ((_predict(w, xtr[k][folds == f]) - ytr[folds == f]) ** 2).sum()
            return err

        lam = min((0.01, 0.1, 1.0, 10.0), key=cv_error)
        out[k] = _r2(yte, _predict(_ridge(xtr[k], ytr, lam), xte[k]))
    return out


def evaluate(model, data: Path) -> dict:
    train, held = load_split(data, "train"), load_split(data, "heldout")
    return {"mirror": mirror_test(model, data, train, held), "retrieval": retrieval(model, data, train, held),
            "pose_probe_r2": pose_probe(model, data, train, held)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="trained model (folder, name or Hub id)")
    p.add_argument("--data", type=Path, default=None, help="demo data folder (default $FACEPCL_HOME/demo-data)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)

    import facepcl
    from facepcl._paths import facepcl_home

    torch.set_grad_enabled(False)
    data = (args.data or facepcl_home() / "demo-data").expanduser()
    trained = facepcl.load(args.model, device="cpu")
    torch.manual_seed(SEED)
    initial = facepcl.PCLModel(trained.config).eval()
    results = {"trained": evaluate(trained, data), "random_init": evaluate(initial, data),
               "data": str(data), "model": str(args.model), "seed": SEED}
    for name in ("trained", "random_init"):
        r = results[name]
        print(f"{name}:")
        print("  mirror test P(d(x, flip x) > d(x, other person)): "
              + ", ".join(f"{k} {r['mirror'][k]:.3f}" for k in FEATURES) + f"  [{r['mirror']['frames']} frames]")
        print("  identity top-1 (gray, re-lit held-out queries -> training gallery): "
              + ", ".join(f"{k} {r['retrieval'][k]['top1']:.3f}" for k in FEATURES))
        print("  identity top-1, man (unseen video): "
              + ", ".join(f"{k} {r['retrieval'][k]['top1_by_identity']['man']:.3f}" for k in FEATURES))
        print("  same-person pair AUC: " + ", ".join(f"{k} {r['retrieval'][k]['pair_auc']:.3f}" for k in FEATURES))
        print("  head-pose probe R^2 on held-out frames: "
              + ", ".join(f"{k} {r['pose_probe_r2'][k]:.3f}" for k in FEATURES))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
