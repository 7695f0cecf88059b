"""Metrics of the paper's downstream protocols, in plain numpy.

Every function takes numpy arrays (or anything ``np.asarray`` accepts) and
returns plain Python floats or dicts of floats, so results can be printed,
stored as JSON and compared with hand-computed values in tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POSE_ANGLES = ("yaw", "pitch", "roll")


def accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    """Fraction of exact matches.

    Args:
        pred: ``(N,)`` predicted class indices (or ``(N, C)`` scores; argmax is taken).
        target: ``(N,)`` true class indices.

    Returns:
        Accuracy in [0, 1].
    """
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.ndim == 2:
        pred = pred.argmax(1)
    _same_length(pred, target)
    return float((pred == target).mean()) if len(target) else float("nan")


def per_class_accuracy(pred: np.ndarray, target: np.ndarray, num_classes: int) -> list[float]:
    """Recall of each class (NaN for a class absent from ``target``)."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.ndim == 2:
        pred = pred.argmax(1)
    out = []
    for c in range(num_classes):
        m = target == c
        out.append(float((pred[m] == c).mean()) if m.any() else float("nan"))
    return out


def f1_scores(pred: np.ndarray, target: np.ndarray) -> list[float]:
    """Per-label F1 of a multi-label problem (e.g. action units).

    F1 = 2 TP / (2 TP + FP + FN). A label with no positive in ``target`` and
    none predicted has F1 0 (nothing was detected; this is scikit-learn's
    ``zero_division=0`` convention).

    Args:
        pred: ``(N, K)`` binary predictions (bool or 0/1).
        target: ``(N, K)`` binary ground truth.

    Returns:
        K F1 values in [0, 1].
    """
    pred = np.asarray(pred).astype(bool)
    target = np.asarray(target).astype(bool)
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"f1_scores: pred {pred.shape} and target {target.shape} must both be (N, K)")
    tp = (pred & target).sum(0)
    fp = (pred & ~target).sum(0)
    fn = (~pred & target).sum(0)
    denom = 2 * tp + fp + fn
    return [float(2 * t / d) if d else 0.0 for t, d in zip(tp, denom, strict=True)]


def multilabel_f1(pred: np.ndarray, target: np.ndarray, names: list[str] | None = None) -> dict[str, float]:
    """Per-label F1 and their unweighted mean (the DISFA protocol's "mean F1").

    Returns:
        ``{name: f1, ..., "mean": mean_f1}``; names default to ``"0", "1", ...``.
    """
    scores = f1_scores(pred, target)
    names = names or [str(i) for i in range(len(scores))]
    if len(names) != len(scores):
        raise ValueError(f"multilabel_f1: {len(names)} names for {len(scores)} labels")
    out = dict(zip(names, scores, strict=True))
    out["mean"] = float(np.mean(scores)) if scores else float("nan")
    return out


def pose_mae(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Mean absolute error per angle and their mean, in degrees.

    Args:
        pred: ``(N, 3)`` predicted [yaw, pitch, roll] in degrees.
        target: ``(N, 3)`` true [yaw, pitch, roll] in degrees.

    Returns:
        ``{"yaw": ..., "pitch": ..., "roll": ..., "mean": ...}``.
    """
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape or pred.ndim != 2 or pred.shape[1] != 3:
        raise ValueError(f"pose_mae: pred {pred.shape} and target {target.shape} must both be (N, 3) "
                         "[yaw, pitch, roll] in degrees")
    per = np.abs(pred - target).mean(0)
    out = {a: float(v) for a, v in zip(POSE_ANGLES, per, strict=True)}
    out["mean"] = float(per.mean())
    return out


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """The similarity threshold that maximises accuracy on labelled pairs.

    A pair is called "same" when ``score >= threshold``. Every distinct score
    is a candidate cut (plus one above the largest, which calls every pair
    "different"); of equally good cuts the midpoint between a cut and the
    next lower score is returned, so a threshold found on training folds
    lies between the classes rather than on a training sample.

    Args:
        scores: ``(P,)`` similarities (higher = more alike), e.g. cosine.
        same: ``(P,)`` bool, True for a same-identity pair.

    Returns:
        ``(threshold, accuracy)`` on these pairs.
    """
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same).astype(bool)
    _same_length(scores, same)
    if not len(scores):
        raise ValueError("best_threshold: no pairs")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], same[order]
    # Cutting after position k (k = 0..P) calls the top k pairs "same".
    tp = np.concatenate([[0], np.cumsum(y)])
    fp = np.concatenate([[0], np.cumsum(~y)])
    correct = tp + (len(y) - y.sum() - fp)
    # Only cuts between distinct scores are realisable by a threshold.
    valid = np.ones(len(s) + 1, bool)
    valid[1:-1] = s[:-1] != s[1:]
    k = int(np.flatnonzero(valid)[np.argmax(correct[valid])])
    if k == 0:
        thr = s[0] + 1.0
    elif k == len(s):
        thr = s[-1]
    else:
        thr = (s[k - 1] + s[k]) / 2.0
    return float(thr), float(correct[k] / len(y))


@dataclass
class VerificationResult:
    """10-fold verification accuracy.

    Attributes:
        accuracy: Mean test-fold accuracy in [0, 1].
        std: Standard deviation over folds.
        fold_accuracy: Accuracy on each test fold.
        thresholds: Threshold chosen on the other folds for each test fold.
    """

    accuracy: float
    std: float
    fold_accuracy: list[float]
    thresholds: list[float]


def verification_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> VerificationResult:
    """k-fold verification accuracy, threshold chosen on the training folds.

    For each fold f, the threshold maximising accuracy on all pairs not in f
    (:func:`best_threshold`) is applied to the pairs in f. This is the LFW
    "unrestricted" protocol's evaluation: with LFW's ``pairs.txt`` the folds
    are its 10 sets of 300 matched + 300 mismatched pairs.

    Args:
        scores: ``(P,)`` pair similarities.
        same: ``(P,)`` bool labels.
        folds: ``(P,)`` int fold index of each pair.

    Returns:
        A :class:`VerificationResult`.
    """
    scores, same, folds = np.asarray(scores, np.float64), np.asarray(same).astype(bool), np.asarray(folds)
    _same_length(scores, same)
    _same_length(scores, folds)
    ids = np.unique(folds)
    if len(ids) < 2:
        raise ValueError(f"verification_accuracy: need at least 2 folds, got {len(ids)}")
    accs, thrs = [], []
    for f in ids:
        test = folds == f
        thr, _ = best_threshold(scores[~test], same[~test])
        accs.append(float(((scores[test] >= thr) == same[test]).mean()))
        thrs.append(thr)
    return VerificationResult(float(np.mean(accs)), float(np.std(accs)), accs, thrs)


def _same_length(a: np.ndarray, b: np.ndarray) -> None:
    if len(a) != len(b):
        raise ValueError(f"length mismatch: {len(a)} predictions vs {len(b)} targets")
