"""Turning images into encoder input at a protocol's resolution, and selecting features.

One implementation shared by feature caching, fine-tuning and head
prediction, so a head always sees inputs prepared exactly as in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .._constants import FEATURES
from .._preprocess import INTERPOLATIONS, to_input
from ..config import PreprocessConfig
from ..model import PCLFeatures

__all__ = ["INTERPOLATIONS", "check_features", "select_features", "to_model_input"]


def check_features(features: str | Sequence[str]) -> tuple[str, ...]:
    """Normalise a feature choice: "trunk", "face+pose", ["face", "pose"], ... -> ordered tuple."""
    if isinstance(features, str):
        features = [f for f in features.replace(",", "+").split("+") if f]
    feats = tuple(features)
    bad = [f for f in feats if f not in FEATURES]
    if bad or not feats or len(set(feats)) != len(feats):
        raise ValueError(f"features {list(feats)} must be distinct names among {list(FEATURES)} "
                         "(e.g. 'trunk', 'face', 'face+pose')")
    return feats


def select_features(feats: PCLFeatures, features: Sequence[str]) -> torch.Tensor:
    """Concatenate the chosen encoder outputs along dim 1: ``(B, len(features) * D)``."""
    parts = [getattr(feats, f) for f in features]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def to_model_input(images: Sequence[np.ndarray] | torch.Tensor, size: int, interpolation: str,
                   preprocess: PreprocessConfig, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Resize images to ``size x size`` and scale them as the model expects: :func:`facepcl._preprocess.to_input`.

    Args:
        images: ``(H, W, 3)`` uint8 RGB arrays (sizes may differ), uint8
            ``(B, H, W, 3)`` or float ``(B, 3, H, W)`` RGB in [0, 1] tensors.
        size: Side of the network input in pixels (100 for expression, 256 for pose).
        interpolation: "bilinear" or "bicubic" (antialiased when shrinking).
        preprocess: The model's preprocessing (value range, mean, std).
        device: Where the result goes.
        dtype: Result dtype.

    Returns:
        ``(B, 3, size, size)`` network input.
    """
    return to_input(images, size, interpolation, preprocess, device, dtype)
