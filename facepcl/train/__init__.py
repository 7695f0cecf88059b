"""PCL pretraining: the paper's three-step recipe, on one CPU or many GPUs.

Install the extra first: ``pip install "facepcl[train]"`` (it adds pyyaml,
which the configs need; the losses and augmentations import without it).
Inference code never imports this package; it imports the library
(:mod:`facepcl.model`, :mod:`facepcl.hub`), never the reverse, and never the
command line.

Entry points:

- ``facepcl train CONFIG [key=value ...]``
- ``torchrun --nproc-per-node N -m facepcl.train CONFIG [key=value ...]``
- :func:`main` with ``[CONFIG, key=value, ...]`` (tests, notebooks).

``CONFIG`` is a YAML file or the name of a bundled one (``pcl``: the paper's
recipe; ``smoke``: a few-minute CPU run; ``check``: does every loss fall?).
See ``docs/training.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> the module that defines it; imported on first use, so that
# ``facepcl.train.losses`` (pure torch) imports without the [train] extra.
_PUBLIC = {
    "DynamicWeightAverage": ".dwa",
    "FaceContrastiveLoss": ".losses",
    "OrthogonalityLoss": ".losses",
    "PoseContrastiveLoss": ".losses",
    "ReconstructionLoss": ".losses",
    "RunConfig": ".config",
    "export_checkpoint": ".checkpoint",
    "load_config": ".config",
    "main": ".run",
}

if TYPE_CHECKING:
    from .checkpoint import export_checkpoint
    from .config import RunConfig, load_config
    from .dwa import DynamicWeightAverage
    from .losses import FaceContrastiveLoss, OrthogonalityLoss, PoseContrastiveLoss, ReconstructionLoss
    from .run import main


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


__all__ = [
    "DynamicWeightAverage",
    "FaceContrastiveLoss",
    "OrthogonalityLoss",
    "PoseContrastiveLoss",
    "ReconstructionLoss",
    "RunConfig",
    "export_checkpoint",
    "load_config",
    "main",
]
