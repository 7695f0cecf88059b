"""RetinaFace detectors by name: their networks (:mod:`._network`), weights, anchors and box decoding.

The weight files are the public RetinaFace ones in the Pytorch_Retinaface
layout (facexlib's release files among them); downloaded files go to
:func:`detector_dir`, never into site-packages.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import torch

from .._utils.atomic import atomic_write
from .._utils.paths import BUNDLED_WEIGHTS, facepcl_home
from ..errors import ModelLoadError
from ._network import RetinaFace

# name -> (backbone, bundled file or None, download URL or None)
DETECTORS: dict[str, tuple[str, str | None, str | None]] = {
    "retinaface_mobile0.25": ("mobile0.25", "retinaface_mobile0.25.safetensors", None),
    "retinaface_resnet50": (
        "resnet50", None, "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth"),
}
# RetinaFace's anchors (Deng et al. 2020; the same for both backbones): per feature stride, two square sizes.
STEPS = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCE = (0.1, 0.2)
# The output heads (ModuleLists, one conv per pyramid level); the fast path keeps them float32.
HEADS = ("ClassHead", "BboxHead", "LandmarkHead")
# The networks were trained on BGR pixels in [0, 255] minus this mean.
BGR_MEAN = (104.0, 117.0, 123.0)


def detector_dir() -> Path:
    """Where downloaded detector weights are kept: ``facepcl_home()/detectors``."""
    return facepcl_home() / "detectors"


def build(name: str, weights: str | os.PathLike | None = None, *, download: bool = True) -> torch.nn.Module:
    """Build a RetinaFace network on the CPU, in eval mode, with its weights loaded strictly.

    Args:
        name: "retinaface_mobile0.25" or "retinaface_resnet50".
        weights: A local ``.safetensors`` or ``.pth`` file (the Pytorch_Retinaface
            keys, as facexlib's files have them; a ``module.`` prefix is removed).
            None: the bundled file (mobile0.25), or facexlib's release file
            downloaded once into :func:`detector_dir` (resnet50).
        download: Allow that download; False raises instead.

    Raises:
        ModelLoadError: Unknown name, missing or unreadable weights, or keys
            that do not match the network.
    """
    if name not in DETECTORS:
        raise ModelLoadError(f"unknown detector {name!r}; choose from {sorted(DETECTORS)}")
    backbone, bundled, url = DETECTORS[name]
    if weights is None:
        weights = BUNDLED_WEIGHTS / bundled if bundled else _download(name, url, download)
    state = _read_state(Path(weights), name)
    net = RetinaFace(backbone)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelLoadError(f"{weights}: the weights do not fit RetinaFace {backbone} "
                             f"({str(e).splitlines()[0]} ...); pass the weights of a {name} detector") from e
    return net.eval()


def _download(name: str, url: str, allowed: bool) -> Path:
    folder = detector_dir()
    target = folder / url.rsplit("/", 1)[-1]
    if target.is_file():
        return target
    if not allowed:
        raise ModelLoadError(f"detector {name}: weights not found at {target} and downloads are off; download "
                             f"{url} there, or pass weights=PATH")
    try:
        atomic_write(target, lambda tmp: torch.hub.download_url_to_file(url, tmp, progress=False))
        return target
    except Exception as e:  # network errors come in many types (URLError, HTTPError, OSError, ...)
        raise ModelLoadError(f"detector {name}: could not download {url} into {folder} ({type(e).__name__}: {e}). "
                             "Without network access, fetch the file elsewhere and pass weights=PATH, or use the "
                             "bundled 'retinaface_mobile0.25'") from e


def _read_state(path: Path, name: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelLoadError(f"detector {name}: weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt files raise many types (SafetensorError, UnpicklingError, EOFError, ...)
        raise ModelLoadError(f"detector {name}: cannot read weights {path} ({type(e).__name__}: {e}); the file is "
                             "corrupt, truncated or not a state dict: delete it and fetch it again") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelLoadError(f"detector {name}: {path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


@functools.lru_cache(maxsize=32)
def priors(height: int, width: int) -> torch.Tensor:
    """Anchors for a ``height x width`` input: ``(A, 4)`` (cx, cy, w, h), relative to the input size.

    Ordered as the heads emit them: per stride, row-major over the feature
    map, then the two sizes.
    """
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES, strict=True):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        cy, cx = torch.meshgrid((torch.arange(fh, dtype=torch.float64) + 0.5) * step / height,
                                (torch.arange(fw, dtype=torch.float64) + 0.5) * step / width, indexing="ij")
        for_sizes = [torch.stack([cx, cy, torch.full_like(cx, s / width), torch.full_like(cy, s / height)], -1)
                     for s in sizes]
        out.append(torch.stack(for_sizes, dim=2).reshape(-1, 4))
    return torch.cat(out).float()


def decode(loc: torch.Tensor, landmarks: torch.Tensor, anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn head outputs into boxes and landmarks, relative to the input size.

    Args:
        loc: ``(..., A, 4)`` box regressions.
        landmarks: ``(..., A, 10)`` landmark regressions.
        anchors: ``(A, 4)`` from :func:`priors`.

    Returns:
        ``boxes (..., A, 4)`` as x1, y1, x2, y2 and ``points (..., A, 5, 2)``.
    """
    centre, wh = anchors[:, :2], anchors[:, 2:]
    c = centre + loc[..., :2] * VARIANCE[0] * wh
    size = wh * torch.exp(loc[..., 2:] * VARIANCE[1])
    boxes = torch.cat([c - size / 2, c + size / 2], dim=-1)
    pts = landmarks.reshape(*landmarks.shape[:-1], 5, 2)
    points = centre[:, None, :] + pts * VARIANCE[0] * wh[:, None, :]
    return boxes, points
