"""The one place where RGB pixels become network input, as the model's config says.

- :func:`normalize`: float RGB in [0, 1] -> network input (channel order,
  value range, mean, std); every path ends here, training's included;
- :func:`crops_to_input`: uint8 crops at the crop size, batched (the pipeline's
  encoder input; :func:`facepcl.transforms` for one crop);
- :func:`fit_crop`: an already aligned image of another size -> the crop size,
  as the pipeline does with ``detect=False``;
- :func:`to_input`: images of any size resized to a protocol's input size
  (task heads, evaluation features).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .align import full_image_matrix, warp
from .config import PreprocessConfig

INTERPOLATIONS = ("bilinear", "bicubic")


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


def fit_crop(image: np.ndarray, preprocess: PreprocessConfig) -> np.ndarray:
    """An aligned ``(H, W, 3)`` uint8 image -> ``(S, S, 3)`` uint8 at the crop size S, centred and scaled to fit.

    What the pipeline does with an input when ``detect=False`` (a copy when the
    size already matches).
    """
    size = preprocess.crop_size
    if image.shape[:2] == (size, size):
        return np.array(image, copy=True)
    m = full_image_matrix(image.shape[0], image.shape[1], size)
    return warp(image, m, size, interpolation=preprocess.interpolation, border=preprocess.border)


def to_input(images: Sequence[np.ndarray] | torch.Tensor, size: int, interpolation: str,
             preprocess: PreprocessConfig, device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Resize images to ``size x size`` and scale them as the model expects.

    Args:
        images: ``(H, W, 3)`` uint8 RGB arrays (sizes may differ), a uint8
            tensor ``(B, H, W, 3)``, or a float tensor ``(B, 3, H, W)`` of RGB
            in [0, 1] (e.g. aligned crops).
        size: Side of the network input in pixels (100 for expression, 256 for pose).
        interpolation: "bilinear" or "bicubic"; antialiased when shrinking
            (as PIL does), so a 250 px image and its 100 px copy agree.
        preprocess: The model's preprocessing (value range, mean, std).
        device: Where the result goes.
        dtype: Result dtype.

    Returns:
        ``(B, 3, size, size)`` network input; uint8 crops already at ``size``
        give exactly :func:`crops_to_input`'s values.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if isinstance(images, torch.Tensor) and images.dtype == torch.uint8:
        if images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"uint8 tensors must be (B, H, W, 3) RGB, got {tuple(images.shape)}")
        images = list(images.numpy(force=True))
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"tensors must be float (B, 3, H, W) RGB in [0, 1] or uint8 (B, H, W, 3), got "
                             f"{images.dtype} {tuple(images.shape)}")
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
