"""``facepcl.transforms``: an aligned face crop -> the encoder's input, exactly as the pipeline makes it."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._options import check_crop_size
from ._preprocess import crops_to_input, fit_crop
from .config import PCLConfig, PreprocessConfig
from .io import load_image


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
    :class:`~facepcl.PreprocessConfig` through :mod:`facepcl._preprocess`.

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
