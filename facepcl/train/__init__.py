"""PCL pretraining: the paper's three-step recipe, on one CPU or many GPUs.

Install the extra first: ``pip install "facepcl[train]"``. Inference code
never imports this package; it imports the library (:mod:`facepcl.model`,
:mod:`facepcl.hub`), never the reverse.

Entry points:

- ``facepcl train CONFIG [key=value ...]``
- ``torchrun --nproc-per-node N -m facepcl.train CONFIG [key=value ...]``
- :func:`main` with an argument list (tests, notebooks).

``CONFIG`` is a YAML file or the name of a bundled one (``pcl``: the paper's
recipe; ``smoke``: a few-minute CPU run). See ``docs/training.md``.
"""

from __future__ import annotations

try:
    import yaml  # noqa: F401  (the one dependency the [train] extra adds)
except ImportError as e:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "facepcl.train needs the training extra, which is not installed (missing module: pyyaml). "
        'Install it with: pip install "facepcl[train]"'
    ) from e

from .checkpoint import export_checkpoint
from .config import RunConfig, load_config
from .dwa import DynamicWeightAverage
from .losses import FaceContrastiveLoss, OrthogonalityLoss, PoseContrastiveLoss, ReconstructionLoss
from .run import main

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
