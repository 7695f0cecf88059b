"""The one place where RGB pixels become network input, as the model's config says."""

from __future__ import annotations

import numpy as np
import torch

from .config import PreprocessConfig


def normalize(x: torch.Tensor, preprocess: PreprocessConfig) -> torch.Tensor:
    """Turn RGB images in [0, 1] into the network's input.

    Args:
        x: ``(B, 3, H, W)`` float RGB in [0, 1].
        preprocess: The model's preprocessing: channel order, value range,
            then mean and std (given in the network's channel order).

    Returns:
        ``(B, 3, H, W)`` float network input.
    """
    if preprocess.color_order.upper() == "BGR":
        x = x.flip(1)
    lo, hi = preprocess.value_range
    if (lo, hi) != (0.0, 1.0):
        x = x * (hi - lo) + lo
    if preprocess.mean is not None:
        x = x - torch.tensor(preprocess.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    if preprocess.std is not None:
        x = x / torch.tensor(preprocess.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return x


def crops_to_input(crops: np.ndarray, preprocess: PreprocessConfig, device: torch.device | str,
                   channels_last: bool = False) -> torch.Tensor:
    """uint8 ``(B, S, S, 3)`` RGB crops -> float32 ``(B, 3, S, S)`` network input on ``device``.

    The arithmetic is elementwise in the crops' own (NHWC) memory order, so
    ``channels_last=True`` returns the same values without the final copy
    into NCHW memory (the fast encoder wants channels_last anyway).
    """
    x = torch.from_numpy(np.ascontiguousarray(crops)).to(device).permute(0, 3, 1, 2).float() / 255.0
    return normalize(x, preprocess).contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format)
