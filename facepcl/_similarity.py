"""Cosine similarity between embeddings: ``facepcl.similarity(a, b)``.

Works on what :func:`facepcl.embed` returns (an
:class:`~facepcl.EmbeddingResult`, one row per face) and on plain arrays
or tensors of embeddings, so comparing two photos is one line::

    sim = facepcl.similarity(facepcl.embed("a.jpg"), facepcl.embed("b.jpg"))   # (faces in a, faces in b)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._constants import FEATURES


def _rows(x: Any, feature: str, name: str) -> np.ndarray | torch.Tensor:
    """``x`` as a 2-D ``(N, D)`` float array or tensor: an EmbeddingResult's ``feature``, or the data itself."""
    if not isinstance(x, (np.ndarray, torch.Tensor, list, tuple)):
        if not hasattr(x, feature):
            raise TypeError(f"{name} must be an EmbeddingResult, a numpy array or a torch tensor of embeddings; "
                            f"got {type(x).__name__}")
        x = getattr(x, feature)
    if isinstance(x, (list, tuple)):
        x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"{name} must hold embeddings as (N, D) or one (D,) vector; got shape {tuple(x.shape)}")
    if isinstance(x, np.ndarray) and not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    if isinstance(x, torch.Tensor) and not x.is_floating_point():
        x = x.float()
    return x


def similarity(a: Any, b: Any, feature: str = "face") -> np.ndarray | torch.Tensor:
    """Cosine similarity of every embedding of ``a`` with every embedding of ``b``.

    Args:
        a: An :class:`~facepcl.EmbeddingResult` (its ``feature`` rows, one per
            face), or embeddings as a numpy array / torch tensor ``(N, D)``
            (or one ``(D,)`` vector).
        b: The same kinds as ``a``, ``(M, D)``.
        feature: Which embedding of an EmbeddingResult: "face" (F_f, who it
            is and the expression, not the pose; the default), "pose" (F_p)
            or "trunk" (F). Ignored for arrays and tensors.

    Returns:
        ``(N, M)`` cosine similarities in [-1, 1]: a torch tensor (on ``a``'s
        device) when both inputs are tensors, else a float32 numpy array. A
        zero vector has similarity 0 with everything.

    Raises:
        ValueError: Unknown ``feature``, or ``a`` and ``b`` of different widths
            (e.g. features of crops of different sizes).
    """
    if feature not in FEATURES:
        raise ValueError(f"feature must be one of {FEATURES}, got {feature!r}")
    x, y = _rows(a, feature, "a"), _rows(b, feature, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"a has {x.shape[1]}-d embeddings but b has {y.shape[1]}-d ones: compare features of the "
                         "same model at the same crop size")
    if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
        x, y = x.float(), y.to(device=x.device, dtype=torch.float32)
        x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        y = y / y.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return x @ y.T
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
    y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)  # float64: exact 1.0 for identical rows
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    return np.clip(x @ y.T, -1.0, 1.0).astype(np.float32)


__all__ = ["similarity"]
