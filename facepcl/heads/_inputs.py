"""Which encoder features a head reads: the choice, checked, and the features selected."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._utils.constants import FEATURES
from ..model import PCLFeatures

__all__ = ["check_features", "select_features"]


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
