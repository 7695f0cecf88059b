"""2-D projections of embeddings: PCA (always), t-SNE (scikit-learn) and UMAP (umap-learn) when installed.

Neither scikit-learn nor umap-learn is a dependency of facepcl: they are
imported only when asked for (or, with ``method="auto"``, when present), and
the method actually used is always reported.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np

METHODS = ("auto", "pca", "tsne", "umap")
#: Below this many points the neighbour methods say little; "auto" uses PCA.
MIN_NEIGHBOUR_POINTS = 10
_EXACT_TSNE_MAX = 200  # up to this many points t-SNE computes exact gradients
_PREREDUCE = 50  # t-SNE / UMAP run on the top principal components, the usual practice


@dataclass
class Projection:
    """Points in 2-D and how they were made.

    Attributes:
        coords: ``(N, 2)`` float64 coordinates.
        method: The method used: "pca", "tsne" or "umap".
        axis_labels: Names of the two axes (with explained variance for PCA).
        note: Why "auto" chose this method, or "".
    """

    coords: np.ndarray
    method: str
    axis_labels: tuple[str, str]
    note: str = ""


def available_methods() -> list[str]:
    """The projection methods usable here: "pca" always, "tsne" with scikit-learn, "umap" with umap-learn."""
    out = ["pca"]
    if importlib.util.find_spec("sklearn") is not None:
        out.append("tsne")
    if importlib.util.find_spec("umap") is not None:
        out.append("umap")
    return out


def pca(x: np.ndarray, k: int = 2, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Principal component scores of the rows of ``x``.

    Exact (SVD) for small matrices; for large ones a randomized SVD with
    power iterations (Halko et al., 2011), seeded, so runs repeat exactly.
    Each component's sign is fixed so that its largest-magnitude score is
    positive.

    Args:
        x: ``(N, D)`` data.
        k: Number of components (at most ``min(N, D)``).
        seed: Seed of the randomized SVD.

    Returns:
        ``(scores, explained)``: ``(N, k)`` float64 scores and ``(k,)`` fractions of the total variance.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    k = min(k, n, d)
    xc = x - x.mean(axis=0, keepdims=True)
    total = float((xc ** 2).sum())
    if min(n, d) <= 512:
        u, s, _ = np.linalg.svd(xc, full_matrices=False)
        u, s = u[:, :k], s[:k]
    else:
        u, s = _randomized_svd(xc, k, seed)
    scores = u * s
    flip = np.sign(scores[np.abs(scores).argmax(axis=0), np.arange(k)])
    scores *= np.where(flip == 0, 1.0, flip)
    explained = (s ** 2) / total if total > 0 else np.zeros(k)
    return scores, explained


def _randomized_svd(x: np.ndarray, k: int, seed: int, oversample: int = 10, iterations: int = 5):
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(x @ rng.standard_normal((x.shape[1], k + oversample)))[0]
    for _ in range(iterations):  # power iterations sharpen the spectrum; QR keeps them stable
        q = np.linalg.qr(x.T @ q)[0]
        q = np.linalg.qr(x @ q)[0]
    u_small, s, _ = np.linalg.svd(q.T @ x, full_matrices=False)
    return (q @ u_small)[:, :k], s[:k]


def project_2d(x: np.ndarray, method: str = "auto", *, seed: int = 0, normalize: bool = True,
               perplexity: float | None = None, n_neighbors: int | None = None) -> Projection:
    """Project embeddings to 2-D.

    Args:
        x: ``(N, D)`` embeddings, one row per face.
        method: "pca", "tsne", "umap" or "auto" (t-SNE if scikit-learn is
            installed, else UMAP if umap-learn is, else PCA; PCA for fewer
            than 10 points).
        seed: Random seed (randomized PCA, t-SNE and UMAP initialisation).
        normalize: L2-normalise each row first, so distances follow cosine
            similarity, the way face embeddings are compared.
        perplexity: t-SNE perplexity (default ``min(30, (N - 1) / 3)``).
        n_neighbors: UMAP neighbours (default ``min(15, N - 1)``).

    Returns:
        A :class:`Projection`.

    Raises:
        ImportError: t-SNE or UMAP was asked for but its package is not installed (the message says which).
        ValueError: Unknown method, non-finite values, or too few points for the method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown projection method {method!r}; choose from {', '.join(METHODS)}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"expected an (N, D) matrix with N >= 1 rows, got shape {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} of {len(x)} embeddings hold NaN or inf (first: row {int(bad.argmax())}); "
                         "drop those rows first")
    if normalize:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.maximum(norms, 1e-12)
    n = len(x)
    note = ""
    if method == "auto":
        have = available_methods()
        if n < MIN_NEIGHBOUR_POINTS:
            method, note = "pca", f"PCA: only {n} points (t-SNE and UMAP need at least {MIN_NEIGHBOUR_POINTS})"
        elif "tsne" in have:
            method, note = "tsne", "t-SNE (scikit-learn is installed)"
        elif "umap" in have:
            method, note = "umap", "UMAP (umap-learn is installed)"
        else:
            method, note = "pca", "PCA (install scikit-learn or umap-learn for t-SNE or UMAP)"
    if n == 1:
        return Projection(np.zeros((1, 2)), "pca", ("PC1", "PC2"), note)
    if method == "pca":
        scores, explained = pca(x, 2, seed=seed)
        if scores.shape[1] < 2:
            scores = np.concatenate([scores, np.zeros((n, 2 - scores.shape[1]))], axis=1)
            explained = np.concatenate([explained, np.zeros(2 - len(explained))])
        labels = tuple(f"PC{i + 1} ({100 * e:.1f}% of variance)" for i, e in enumerate(explained[:2]))
        return Projection(scores, "pca", labels, note)
    if n < 4:
        raise ValueError(f"{method} needs at least 4 points, got {n}; use method='pca'")
    reduced = pca(x, min(_PREREDUCE, n, x.shape[1]), seed=seed)[0] if x.shape[1] > _PREREDUCE else x
    if method == "tsne":
        return Projection(_tsne(reduced, seed, perplexity), "tsne", ("t-SNE 1", "t-SNE 2"), note)
    return Projection(_umap(reduced, seed, n_neighbors), "umap", ("UMAP 1", "UMAP 2"), note)


def _tsne(x: np.ndarray, seed: int, perplexity: float | None) -> np.ndarray:
    try:
        from sklearn.manifold import TSNE
    except ImportError as e:
        raise ImportError("t-SNE needs scikit-learn, which is not installed: pip install scikit-learn "
                          "(or use method 'pca')") from e
    n = len(x)
    p = float(perplexity) if perplexity is not None else min(30.0, max(1.0, (n - 1) / 3))
    if not 0 < p < n:
        raise ValueError(f"t-SNE perplexity must be between 0 and the number of points ({n}), got {p}")
    # Exact gradients for small maps: as fast as Barnes-Hut there, and free of its OpenMP start-up, which
    # can take seconds on busy machines.
    method = "exact" if n <= _EXACT_TSNE_MAX else "barnes_hut"
    return TSNE(n_components=2, perplexity=p, init="pca", learning_rate="auto", method=method,
                random_state=seed).fit_transform(x).astype(np.float64)


def _umap(x: np.ndarray, seed: int, n_neighbors: int | None) -> np.ndarray:
    try:
        import umap
    except ImportError as e:
        raise ImportError("UMAP needs umap-learn, which is not installed: pip install umap-learn "
                          "(or use method 'pca')") from e
    k = int(n_neighbors) if n_neighbors is not None else min(15, len(x) - 1)
    if not 2 <= k < len(x):
        raise ValueError(f"UMAP n_neighbors must be between 2 and N - 1 ({len(x) - 1}), got {k}")
    # n_jobs=1: a seeded UMAP runs single-threaded anyway (and says so in a warning otherwise)
    return umap.UMAP(n_components=2, n_neighbors=k, random_state=seed, n_jobs=1).fit_transform(x).astype(np.float64)
