"""Turning images into encoder input at a protocol's resolution, and selecting features.

One implementation shared by feature caching, fine-tuning and head
prediction, so a head always sees inputs prepared exactly as in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .._constants import FEATURES
from .._preprocess import normalize
from ..config import PreprocessConfig
from ..model import PCLFeatures

INTERPOLATIONS = ("bilinear", "bicubic")


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
    """Resize images to ``size x size`` and scale them as the model expects.

    Args:
        images: ``(H, W, 3)`` uint8 RGB arrays (sizes may differ), or a float
            tensor ``(B, 3, H, W)`` of RGB in [0, 1] (e.g. aligned crops).
        size: Side of the network input in pixels (100 for expression, 256 for pose).
        interpolation: "bilinear" or "bicubic"; antialiased when shrinking
            (as PIL does), so a 250 px image and its 100 px copy agree.
        preprocess: The model's preprocessing (value range, mean, std).
        device: Where the result goes.
        dtype: Result dtype.

    Returns:
        ``(B, 3, size, size)`` network input.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if isinstance(images, torch.Tensor):
        batch = [images[i : i + 1].to(device=device, dtype=torch.float32) for i in range(len(images))]
    else:
        batch = []
        for img in images:
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"expected (H, W, 3) uint8 RGB images, got {img.dtype} {img.shape}")
            # Copied: images may be read-only views of a memory map or an npz array.
            t = torch.from_numpy(np.array(img, copy=True)).to(device).permute(2, 0, 1)[None]
            batch.append(t.to(torch.float32) / 255.0)
    out = []
    for t in batch:
        if t.shape[-2:] != (size, size):
            t = F.interpolate(t, size=(size, size), mode=interpolation, align_corners=False, antialias=True)
            t = t.clamp(0.0, 1.0)  # bicubic overshoots; the network never saw values outside [0, 1]
        out.append(t)
    return normalize(torch.cat(out), preprocess).to(dtype)
