"""Pixels -> encoder input: the one module that turns RGB images into what the network reads.

- :func:`transforms` / :class:`Transform`: one aligned face crop -> ``(3, S, S)``
  float32, exactly as the pipeline prepares it;
- :func:`normalize`: float RGB in [0, 1] -> network input (channel order,
  value range, mean, std); every path ends here, training's included;
- :func:`crops_to_input`: uint8 crops at the crop size, batched (the pipeline's
  encoder input);
- :func:`fit_crop`: an already aligned image of another size -> the crop size,
  as the pipeline does with ``detect=False``;
- :func:`to_input`: images of any size resized to a protocol's input size
  (task heads, evaluation features).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .align import full_image_matrix, warp
from .config import PCLConfig, PreprocessConfig, check_crop_size
from .io import load_image

RESIZE_INTERPOLATIONS = ("bilinear", "bicubic")


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
    if interpolation not in RESIZE_INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {RESIZE_INTERPOLATIONS}, got {interpolation!r}")
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

class Transform:
    """Aligned face crop -> ``(3, S, S)`` float32 encoder input (see :func:`transforms`).

    Attributes:
        preprocess: The preprocessing applied (crop size S, value range, mean, std, channel order).
        train: Whether it was asked for training; it then does exactly the same (see :func:`transforms`).
    """

    def __init__(self, preprocess: PreprocessConfig, train: bool = False) -> None:
        self.preprocess = preprocess
        self.train = bool(train)

    @property
    def size(self) -> int:
        """Crop side S in pixels."""
        return self.preprocess.crop_size

    def __call__(self, image: Any) -> torch.Tensor:
        """One aligned crop -> ``(3, S, S)`` float32 on the CPU.

        Args:
            image: A PIL image, an ``(H, W, 3)`` uint8 RGB array or tensor, or
                a ``(3, H, W)`` uint8 or float tensor of RGB (floats in [0, 1]; anything
                :func:`facepcl.load_image` reads: floats are rounded to 8
                bits, as the pipeline does). Any other size than S is scaled
                to fit S x S, centred, as ``FaceEmbedder(detect=False)`` does.

        Returns:
            ``(3, S, S)`` float32; ``model.encoder(t[None])`` gives what the
            exact pipeline gives for the same crop.
        """
        if isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.ndim == 3 and image.shape[2] == 3:
            image = image.numpy(force=True)  # H x W x 3 (load_image reads tensors as C x H x W)
        return self.batch(fit_crop(load_image(image), self.preprocess)[None])[0]

    def batch(self, crops: np.ndarray, device: torch.device | str = "cpu",
              channels_last: bool = False) -> torch.Tensor:
        """``(B, S, S, 3)`` uint8 RGB crops -> ``(B, 3, S, S)`` float32 on ``device`` (the pipeline's batched path)."""
        crops = np.asarray(crops)
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"crops must be uint8 (B, {self.size}, {self.size}, 3) RGB, got {crops.dtype} "
                             f"{crops.shape}; call the transform on each image to resize it")
        return crops_to_input(crops, self.preprocess, device, channels_last=channels_last)

    def __repr__(self) -> str:
        p = self.preprocess
        return (f"Transform(size={self.size}, color_order={p.color_order!r}, value_range={list(p.value_range)}, "
                f"mean={p.mean}, std={p.std}, train={self.train})")


def transforms(model_or_config: Any, train: bool = False, *, crop_size: int | None = None) -> Transform:
    """The function that turns an aligned face crop into the encoder's input.

    One path for every use: the pipeline (:class:`facepcl.FaceEmbedder`), the
    task heads, evaluation features and training all apply the config's
    :class:`~facepcl.PreprocessConfig` through :mod:`facepcl.transforms`.

    Args:
        model_or_config: A :class:`~facepcl.PCLModel`, a
            :class:`~facepcl.FaceEmbedder` (its crop size), a
            :class:`~facepcl.PCLConfig` or a :class:`~facepcl.PreprocessConfig`.
        train: For training. It adds nothing: PCL's augmentations need
            several views of each frame with per-sample random parameters, so
            they run batched in :func:`facepcl.train.augment.make_inputs`,
            which then applies this same normalisation to every encoder input.
        crop_size: Crop side S (default: the model's or config's).

    Returns:
        A :class:`Transform`: ``t(image)`` -> ``(3, S, S)`` float32 tensor;
        ``t.batch(crops)`` for ``(B, S, S, 3)`` uint8 crops.

    Example:
        >>> t = facepcl.transforms(model)                  # doctest: +SKIP
        >>> feats = model.encoder(t(crop)[None])           # doctest: +SKIP
    """
    pre = getattr(model_or_config, "preprocess", None)  # FaceEmbedder: already at its crop size
    if pre is None:
        config = getattr(model_or_config, "config", model_or_config)
        pre = config.preprocess if isinstance(config, PCLConfig) else config
    if not isinstance(pre, PreprocessConfig):
        raise TypeError(f"transforms() takes a PCLModel, FaceEmbedder, PCLConfig or PreprocessConfig, got "
                        f"{type(model_or_config).__name__}")
    if crop_size is not None and crop_size != pre.crop_size:
        pre = pre.resized(check_crop_size(crop_size))
    return Transform(pre, train=train)


